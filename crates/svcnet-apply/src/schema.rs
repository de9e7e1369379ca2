//! The schema table server-side apply merges by: every served kind's list, map and struct types, as
//! its definition in `svcnet_kinds` states them, gathered into one lookup table. Kinds not in the
//! table use [`Ty::Deduced`], kube's rule for unknown types.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

pub use svcnet_kinds::apply::{ListKey, ListType, StructDef, Ty};

/// A kind served by svcnet.
#[derive(Debug, Clone)]
pub struct KindDef {
    /// API group (`""` for core).
    pub group: &'static str,
    /// Kind name.
    pub kind: &'static str,
    /// Name of the root struct in the table.
    pub root: &'static str,
    /// Whether the kind has a `status` subresource; then the main resource
    /// ignores `status` and the subresource ignores `spec` (kube's reset
    /// fields).
    pub status_subresource: bool,
    /// Top-level fields Go always serializes (non-pointer structs), which
    /// kube's field tracking therefore never sees appear or vanish.
    pub always_present: &'static [&'static str],
}

/// The schema table.
#[derive(Debug)]
pub struct Schema {
    structs: HashMap<&'static str, StructDef>,
    kinds: Vec<KindDef>,
}

impl Schema {
    fn build() -> Self {
        let mut structs = HashMap::new();
        for k in svcnet_kinds::KINDS {
            (k.apply.structs)(&mut structs);
        }
        let kinds = svcnet_kinds::KINDS
            .iter()
            .map(|k| KindDef {
                group: k.resource.group,
                kind: k.resource.kind,
                root: k.apply.root,
                status_subresource: k.resource.has_subresource("status"),
                always_present: k.apply.always_present,
            })
            .collect();
        Schema { structs, kinds }
    }

    /// The kind for an `apiVersion`/`kind` pair, if svcnet knows it.
    pub fn kind(&self, api_version: &str, kind: &str) -> Option<&KindDef> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        self.kinds.iter().find(|k| k.group == group && k.kind == kind)
    }

    /// The root type for an object of this `apiVersion`/`kind`.
    pub fn root(&self, api_version: &str, kind: &str) -> Ty {
        self.kind(api_version, kind)
            .map_or(Ty::Deduced, |k| Ty::Struct(k.root))
    }

    /// A struct definition by name.
    pub fn get_struct(&self, name: &str) -> Option<&StructDef> {
        self.structs.get(name)
    }
}

/// The global schema table.
pub static SCHEMA: LazyLock<Schema> = LazyLock::new(Schema::build);

/// How a type treats a value at one level (resolved against the table).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resolved<'a> {
    /// Compared and replaced as a whole.
    Leaf,
    /// A granular object. `named` tells whether its keys are struct fields
    /// (owned only as leaves) or map entries (always owned themselves).
    Object { ty: &'a Ty, named: bool },
    /// An associative list (set or keyed).
    List {
        items: &'a Ty,
        keys: Option<&'a [ListKey]>,
    },
}

/// How server-side apply reads a [`Ty`] against the table.
pub(crate) trait TyExt {
    /// Resolves how `value` is handled under this type. A value whose shape
    /// does not fit the type is a leaf.
    fn resolve(&self, value: Option<&Value>) -> Resolved<'_>;
    /// The type of field or entry `key` of this object type.
    fn field(&self, key: &str) -> &Ty;
}

impl TyExt for Ty {
    fn resolve(&self, value: Option<&Value>) -> Resolved<'_> {
        // Absent and null fit any shape; the other side decides.
        let is_obj = |v: Option<&Value>| matches!(v, None | Some(Value::Object(_)) | Some(Value::Null));
        let is_arr = |v: Option<&Value>| matches!(v, None | Some(Value::Array(_)) | Some(Value::Null));
        match self {
            Ty::Scalar => Resolved::Leaf,
            Ty::Struct(name) => match SCHEMA.get_struct(name) {
                Some(def) if def.atomic => Resolved::Leaf,
                _ if is_obj(value) => Resolved::Object {
                    ty: self,
                    named: true,
                },
                _ => Resolved::Leaf,
            },
            Ty::Map { atomic: true, .. } => Resolved::Leaf,
            Ty::Map { .. } if is_obj(value) => Resolved::Object {
                ty: self,
                named: false,
            },
            Ty::List { items, list } if is_arr(value) => match list {
                ListType::Atomic => Resolved::Leaf,
                ListType::Set => Resolved::List { items, keys: None },
                ListType::Map(keys) => Resolved::List {
                    items,
                    keys: Some(keys),
                },
            },
            Ty::Untyped if matches!(value, Some(Value::Object(_))) => Resolved::Object {
                ty: self,
                named: true,
            },
            Ty::Deduced if matches!(value, Some(Value::Object(_))) => Resolved::Object {
                ty: self,
                named: false,
            },
            _ => Resolved::Leaf,
        }
    }

    fn field(&self, key: &str) -> &Ty {
        static UNTYPED: Ty = Ty::Untyped;
        static DEDUCED: Ty = Ty::Deduced;
        match self {
            Ty::Struct(name) => SCHEMA
                .get_struct(name)
                .and_then(|d| d.fields.iter().find(|(n, _)| *n == key).map(|(_, t)| t))
                .unwrap_or(&UNTYPED),
            Ty::Map { values, .. } => values,
            Ty::Deduced => &DEDUCED,
            _ => &UNTYPED,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_struct_reference_resolves() {
        fn check(ty: &Ty) {
            match ty {
                Ty::Struct(name) => assert!(SCHEMA.get_struct(name).is_some(), "missing struct {name}"),
                Ty::Map { values, .. } => check(values),
                Ty::List { items, .. } => check(items),
                _ => {}
            }
        }
        for def in SCHEMA.structs.values() {
            for (_, ty) in &def.fields {
                check(ty);
            }
        }
        for k in &SCHEMA.kinds {
            assert!(SCHEMA.get_struct(k.root).is_some());
        }
    }

    #[test]
    fn lookup_by_group() {
        assert!(SCHEMA.kind("v1", "Service").is_some());
        assert!(SCHEMA.kind("apps/v1", "Service").is_none());
        assert!(SCHEMA.kind("discovery.k8s.io/v1", "EndpointSlice").is_some());
        assert!(matches!(SCHEMA.root("example.com/v1", "Widget"), Ty::Deduced));
    }

    #[test]
    fn service_selector_is_atomic_and_ports_keyed() {
        let spec = Ty::Struct("ServiceSpec");
        assert!(matches!(
            spec.field("selector").resolve(Some(&json!({"a": "b"}))),
            Resolved::Leaf
        ));
        match spec.field("ports").resolve(Some(&json!([]))) {
            Resolved::List { keys: Some(keys), .. } => {
                let names: Vec<_> = keys.iter().map(|k| k.name).collect();
                assert_eq!(names, ["port", "protocol"]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            Ty::Struct("DeploymentSpec")
                .field("selector")
                .resolve(Some(&json!({}))),
            Resolved::Leaf
        ));
    }
}
