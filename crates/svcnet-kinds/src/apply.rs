//! Server-side apply's schema vocabulary: which lists are associative (and their keys), sets or
//! atomic, which maps and structs are atomic, restated from the markers of Kubernetes' Go types
//! (`+listType`, `+listMapKey`, `+mapType`, `+structType`, and `patchStrategy=merge`/`patchMergeKey`,
//! which server-side apply also reads as associative keys). Each kind registers its structs in
//! [`Structs`]; `svcnet-apply` merges by them.
//!
//! Only fields that matter to merging are listed: a field a struct does not list is [`Ty::Untyped`]
//! (objects granular with named fields, lists atomic), which is exactly right for scalars, atomic lists
//! and plain nested structs. Maps with arbitrary keys (`labels`, `resources.limits`) must be listed,
//! because their entries are owned individually.

use std::collections::HashMap;

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

/// Server-side apply's view of one kind.
#[derive(Debug, Clone, Copy)]
pub struct ApplyKind {
    /// Name of the root struct in the table.
    pub root: &'static str,
    /// Top-level fields Go always serializes (non-pointer structs), which kube's field tracking
    /// therefore never sees appear or vanish.
    pub always_present: &'static [&'static str],
    /// Adds the structs this kind's objects use to the table.
    pub structs: fn(&mut Structs),
}

/// The struct table, by struct name.
pub type Structs = HashMap<&'static str, StructDef>;

/// Builds a struct definition.
pub fn st(fields: Vec<(&'static str, Ty)>) -> StructDef {
    StructDef {
        fields,
        atomic: false,
    }
}

/// `+structType=atomic`: owned and replaced as a whole.
pub fn atomic_struct() -> StructDef {
    StructDef {
        fields: Vec::new(),
        atomic: true,
    }
}

/// A reference to a struct of the table, by name.
pub fn r(name: &'static str) -> Ty {
    Ty::Struct(name)
}

/// A map of scalars whose entries are owned one by one.
pub fn granular_map() -> Ty {
    Ty::Map {
        values: Box::new(Ty::Scalar),
        atomic: false,
    }
}

/// `+mapType=atomic` of scalars.
pub fn atomic_map() -> Ty {
    Ty::Map {
        values: Box::new(Ty::Scalar),
        atomic: true,
    }
}

/// `+listType=set` of scalars.
pub fn set() -> Ty {
    Ty::List {
        items: Box::new(Ty::Scalar),
        list: ListType::Set,
    }
}

/// `+listType=map` keyed by `keys`.
pub fn list_map(items: Ty, keys: &[&'static str]) -> Ty {
    let keys = keys.iter().map(|name| ListKey { name, default: None }).collect();
    Ty::List {
        items: Box::new(items),
        list: ListType::Map(keys),
    }
}

/// A port list keyed by `port_field` and `protocol`, whose `protocol` defaults to TCP in the OpenAPI
/// schema.
pub fn port_list(port_field: &'static str) -> Ty {
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

/// Status conditions, keyed by `type`.
pub fn conditions() -> Ty {
    list_map(Ty::Untyped, &["type"])
}
