//! Schema metadata for the kinds svcnet serves: which lists are associative
//! (and their keys), sets or atomic, which maps and structs are atomic, taken
//! from the markers of Kubernetes' Go types (`+listType`, `+listMapKey`,
//! `+mapType`, `+structType`, and `patchStrategy=merge`/`patchMergeKey`,
//! which server-side apply also reads as associative keys).
//!
//! Only fields that matter to merging are listed: a field a struct does not
//! list is [`Ty::Untyped`] (objects granular with named fields, lists
//! atomic), which is exactly right for scalars, atomic lists and plain
//! nested structs. Maps with arbitrary keys (`labels`, `resources.limits`)
//! must be listed, because their entries are owned individually. Kinds not
//! in the table use [`Ty::Deduced`], kube's rule for unknown types.
//!
//! Adding a kind: describe its interesting structs with [`st`] and register
//! it in `Schema::build` with a [`KindDef`].

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::Value;

/// The type of a field.
#[derive(Debug, Clone)]
pub enum Ty {
    /// A scalar (string, number, bool).
    Scalar,
    /// A struct from the table, by name.
    Struct(&'static str),
    /// A map with arbitrary string keys.
    Map {
        /// Type of the values.
        values: Box<Ty>,
        /// `+mapType=atomic`: owned and replaced as a whole.
        atomic: bool,
    },
    /// A list.
    List {
        /// Type of the items.
        items: Box<Ty>,
        /// How items are identified.
        list: ListType,
    },
    /// A field a known struct does not describe: objects are granular with
    /// named fields, lists atomic.
    Untyped,
    /// Kube's deduced type for unknown kinds: objects granular, their
    /// entries map entries, lists atomic.
    Deduced,
}

/// How a list's items are identified.
#[derive(Debug, Clone)]
pub enum ListType {
    /// `+listType=atomic` (the default): the list is one value.
    Atomic,
    /// `+listType=set`: items are scalars, identified by value.
    Set,
    /// `+listType=map`: items are objects identified by their key fields.
    Map(Vec<ListKey>),
}

/// A key field of an associative list.
#[derive(Debug, Clone)]
pub struct ListKey {
    /// Field name.
    pub name: &'static str,
    /// Default used when an item omits the field (OpenAPI `default`).
    pub default: Option<Value>,
}

/// A struct's interesting fields.
#[derive(Debug, Clone, Default)]
pub struct StructDef {
    /// Fields that are not plain `Untyped`.
    pub fields: Vec<(&'static str, Ty)>,
    /// `+structType=atomic`.
    pub atomic: bool,
}

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

/// Builds a struct definition.
pub fn st(fields: Vec<(&'static str, Ty)>) -> StructDef {
    StructDef {
        fields,
        atomic: false,
    }
}

fn atomic_struct() -> StructDef {
    StructDef {
        fields: Vec::new(),
        atomic: true,
    }
}

fn r(name: &'static str) -> Ty {
    Ty::Struct(name)
}

fn granular_map() -> Ty {
    Ty::Map {
        values: Box::new(Ty::Scalar),
        atomic: false,
    }
}

fn atomic_map() -> Ty {
    Ty::Map {
        values: Box::new(Ty::Scalar),
        atomic: true,
    }
}

fn set() -> Ty {
    Ty::List {
        items: Box::new(Ty::Scalar),
        list: ListType::Set,
    }
}

fn list_map(items: Ty, keys: &[&'static str]) -> Ty {
    let keys = keys.iter().map(|name| ListKey { name, default: None }).collect();
    Ty::List {
        items: Box::new(items),
        list: ListType::Map(keys),
    }
}

// Port lists whose `protocol` key defaults to TCP in the OpenAPI schema.
fn port_list(port_field: &'static str) -> Ty {
    let keys = vec![
        ListKey {
            name: port_field,
            default: None,
        },
        ListKey {
            name: "protocol",
            default: Some(Value::String("TCP".into())),
        },
    ];
    Ty::List {
        items: Box::new(Ty::Untyped),
        list: ListType::Map(keys),
    }
}

fn conditions() -> Ty {
    list_map(Ty::Untyped, &["type"])
}

impl Schema {
    fn build() -> Self {
        let mut s: HashMap<&'static str, StructDef> = HashMap::new();

        // meta/v1
        s.insert(
            "ObjectMeta",
            st(vec![
                ("labels", granular_map()),
                ("annotations", granular_map()),
                ("finalizers", set()),
                ("ownerReferences", list_map(Ty::Untyped, &["uid"])),
            ]),
        );
        s.insert("LabelSelector", atomic_struct());
        s.insert("ObjectReference", atomic_struct());
        s.insert("LocalObjectReference", atomic_struct());
        s.insert("NodeSelector", atomic_struct());
        s.insert("KeySelector", atomic_struct());

        // core/v1 Service
        s.insert(
            "Service",
            st(vec![
                ("metadata", r("ObjectMeta")),
                ("spec", r("ServiceSpec")),
                ("status", r("ServiceStatus")),
            ]),
        );
        s.insert(
            "ServiceSpec",
            st(vec![("ports", port_list("port")), ("selector", atomic_map())]),
        );
        s.insert("ServiceStatus", st(vec![("conditions", conditions())]));

        // core/v1 Endpoints (subsets and everything below are atomic lists)
        s.insert("Endpoints", st(vec![("metadata", r("ObjectMeta"))]));

        // core/v1 Namespace
        s.insert(
            "Namespace",
            st(vec![
                ("metadata", r("ObjectMeta")),
                ("status", r("NamespaceStatus")),
            ]),
        );
        s.insert("NamespaceStatus", st(vec![("conditions", conditions())]));

        // core/v1 Node
        s.insert(
            "Node",
            st(vec![
                ("metadata", r("ObjectMeta")),
                ("spec", r("NodeSpec")),
                ("status", r("NodeStatus")),
            ]),
        );
        s.insert("NodeSpec", st(vec![("podCIDRs", set())]));
        s.insert(
            "NodeStatus",
            st(vec![
                ("addresses", list_map(Ty::Untyped, &["type"])),
                ("conditions", conditions()),
                ("capacity", granular_map()),
                ("allocatable", granular_map()),
            ]),
        );

        // core/v1 Event
        s.insert(
            "Event",
            st(vec![
                ("metadata", r("ObjectMeta")),
                ("involvedObject", r("ObjectReference")),
                ("related", r("ObjectReference")),
            ]),
        );

        // core/v1 Pod
        s.insert(
            "Pod",
            st(vec![
                ("metadata", r("ObjectMeta")),
                ("spec", r("PodSpec")),
                ("status", r("PodStatus")),
            ]),
        );
        s.insert(
            "PodTemplateSpec",
            st(vec![("metadata", r("ObjectMeta")), ("spec", r("PodSpec"))]),
        );
        s.insert(
            "PodSpec",
            st(vec![
                ("containers", list_map(r("Container"), &["name"])),
                ("initContainers", list_map(r("Container"), &["name"])),
                ("ephemeralContainers", list_map(r("Container"), &["name"])),
                ("volumes", list_map(r("Volume"), &["name"])),
                ("imagePullSecrets", list_map(r("LocalObjectReference"), &["name"])),
                ("hostAliases", list_map(Ty::Untyped, &["ip"])),
                ("nodeSelector", atomic_map()),
                ("overhead", granular_map()),
                ("resourceClaims", list_map(Ty::Untyped, &["name"])),
                ("schedulingGates", list_map(Ty::Untyped, &["name"])),
                (
                    "topologySpreadConstraints",
                    list_map(
                        r("TopologySpreadConstraint"),
                        &["topologyKey", "whenUnsatisfiable"],
                    ),
                ),
                ("affinity", r("Affinity")),
            ]),
        );
        s.insert(
            "TopologySpreadConstraint",
            st(vec![("labelSelector", r("LabelSelector"))]),
        );
        s.insert("Affinity", st(vec![("nodeAffinity", r("NodeAffinity"))]));
        s.insert(
            "NodeAffinity",
            st(vec![(
                "requiredDuringSchedulingIgnoredDuringExecution",
                r("NodeSelector"),
            )]),
        );
        s.insert(
            "Container",
            st(vec![
                ("ports", port_list("containerPort")),
                ("env", list_map(r("EnvVar"), &["name"])),
                ("volumeMounts", list_map(Ty::Untyped, &["mountPath"])),
                ("volumeDevices", list_map(Ty::Untyped, &["devicePath"])),
                ("resources", r("ResourceRequirements")),
            ]),
        );
        s.insert("EnvVar", st(vec![("valueFrom", r("EnvVarSource"))]));
        s.insert(
            "EnvVarSource",
            st(vec![
                ("configMapKeyRef", r("KeySelector")),
                ("secretKeyRef", r("KeySelector")),
                ("fieldRef", r("KeySelector")),
                ("resourceFieldRef", r("KeySelector")),
            ]),
        );
        s.insert(
            "ResourceRequirements",
            st(vec![
                ("limits", granular_map()),
                ("requests", granular_map()),
                ("claims", list_map(Ty::Untyped, &["name"])),
            ]),
        );
        s.insert(
            "Volume",
            st(vec![
                ("persistentVolumeClaim", Ty::Untyped),
                ("csi", r("CSIVolumeSource")),
            ]),
        );
        s.insert(
            "CSIVolumeSource",
            st(vec![
                ("volumeAttributes", granular_map()),
                ("nodePublishSecretRef", r("LocalObjectReference")),
            ]),
        );
        s.insert(
            "PodStatus",
            st(vec![
                ("conditions", conditions()),
                ("podIPs", list_map(Ty::Untyped, &["ip"])),
                ("hostIPs", list_map(Ty::Untyped, &["ip"])),
                ("resourceClaimStatuses", list_map(Ty::Untyped, &["name"])),
            ]),
        );

        // discovery.k8s.io/v1 EndpointSlice (endpoints and ports are atomic)
        s.insert("EndpointSlice", st(vec![("metadata", r("ObjectMeta"))]));

        // coordination.k8s.io/v1 Lease (spec is all scalars)
        s.insert("Lease", st(vec![("metadata", r("ObjectMeta"))]));

        // apps/v1
        s.insert(
            "Deployment",
            st(vec![
                ("metadata", r("ObjectMeta")),
                ("spec", r("DeploymentSpec")),
                ("status", r("WorkloadStatus")),
            ]),
        );
        s.insert(
            "ReplicaSet",
            st(vec![
                ("metadata", r("ObjectMeta")),
                ("spec", r("DeploymentSpec")),
                ("status", r("WorkloadStatus")),
            ]),
        );
        s.insert(
            "DeploymentSpec",
            st(vec![
                ("selector", r("LabelSelector")),
                ("template", r("PodTemplateSpec")),
            ]),
        );
        s.insert("WorkloadStatus", st(vec![("conditions", conditions())]));

        let kinds = vec![
            KindDef {
                group: "",
                kind: "Service",
                root: "Service",
                status_subresource: true,
                always_present: &["spec", "status"],
            },
            KindDef {
                group: "",
                kind: "Endpoints",
                root: "Endpoints",
                status_subresource: false,
                always_present: &[],
            },
            KindDef {
                group: "",
                kind: "Namespace",
                root: "Namespace",
                status_subresource: true,
                always_present: &["spec", "status"],
            },
            KindDef {
                group: "",
                kind: "Node",
                root: "Node",
                status_subresource: true,
                always_present: &["spec", "status"],
            },
            KindDef {
                group: "",
                kind: "Event",
                root: "Event",
                status_subresource: false,
                always_present: &["involvedObject", "source"],
            },
            KindDef {
                group: "",
                kind: "Pod",
                root: "Pod",
                status_subresource: true,
                always_present: &["spec", "status"],
            },
            KindDef {
                group: "discovery.k8s.io",
                kind: "EndpointSlice",
                root: "EndpointSlice",
                status_subresource: false,
                always_present: &[],
            },
            KindDef {
                group: "coordination.k8s.io",
                kind: "Lease",
                root: "Lease",
                status_subresource: false,
                always_present: &["spec"],
            },
            KindDef {
                group: "apps",
                kind: "Deployment",
                root: "Deployment",
                status_subresource: true,
                always_present: &["spec", "status"],
            },
            KindDef {
                group: "apps",
                kind: "ReplicaSet",
                root: "ReplicaSet",
                status_subresource: true,
                always_present: &["spec", "status"],
            },
        ];
        Schema { structs: s, kinds }
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

impl Ty {
    /// Resolves how `value` is handled under this type. A value whose shape
    /// does not fit the type is a leaf.
    pub(crate) fn resolve(&self, value: Option<&Value>) -> Resolved<'_> {
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

    /// The type of field or entry `key` of this object type.
    pub(crate) fn field(&self, key: &str) -> &Ty {
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
