//! Strategic-merge-patch metadata: apimachinery reads `patchStrategy` / `patchMergeKey` from Go struct
//! tags by reflection; we have no Go structs, so each kind restates those tags as a static tree. A
//! [`TypeSchema`] lists only the fields that carry a tag or lead to a type that does; every other field
//! gets the default behaviour (maps merge recursively, lists are replaced whole). The tags were taken
//! from `k8s.io/api` (core/v1, apps/v1, discovery/v1, coordination/v1) and `k8s.io/apimachinery`
//! (meta/v1 ObjectMeta). `svcnet-patch` applies them.

/// The `patchStrategy` of a field, apart from `retainKeys`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PatchStrategy {
    /// No tag: maps are merged key by key, lists are replaced whole (atomic).
    #[default]
    Default,
    /// `patchStrategy:"merge"`: lists of objects are merged item by item
    /// using the merge key, lists of primitives are merged as ordered sets.
    Merge,
    /// `patchStrategy:"replace"`: even a map is replaced whole.
    Replace,
}

/// Patch metadata of one field: its Go struct tag restated.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldMeta {
    /// How the field is combined with the patch.
    pub strategy: PatchStrategy,
    /// `patchMergeKey`: the item field that identifies list items.
    pub merge_key: Option<&'static str>,
    /// The tag includes `retainKeys`. Only clients read this (to decide when
    /// to send `$retainKeys`); the server honours `$retainKeys` wherever it
    /// appears, as apimachinery does.
    pub retain_keys: bool,
}

/// One field of a [`TypeSchema`].
#[derive(Debug)]
pub struct Field {
    /// The JSON field name.
    pub name: &'static str,
    /// The field's patch metadata.
    pub meta: FieldMeta,
    /// The schema of the field's value, or of its items for a list; `None`
    /// when nothing below the field carries patch metadata.
    pub schema: Option<&'static TypeSchema>,
}

impl Field {
    /// A field without patch tags whose value has tagged fields below it.
    pub const fn nested(name: &'static str, schema: &'static TypeSchema) -> Field {
        Field {
            name,
            meta: FieldMeta {
                strategy: PatchStrategy::Default,
                merge_key: None,
                retain_keys: false,
            },
            schema: Some(schema),
        }
    }

    /// An explicitly atomic field (no tag); listed for documentation only.
    pub const fn atomic(name: &'static str) -> Field {
        Field {
            name,
            meta: FieldMeta {
                strategy: PatchStrategy::Default,
                merge_key: None,
                retain_keys: false,
            },
            schema: None,
        }
    }

    /// `patchStrategy:"merge" patchMergeKey:"<key>"` on a list of objects.
    pub const fn merge(name: &'static str, key: &'static str) -> Field {
        Field {
            name,
            meta: FieldMeta {
                strategy: PatchStrategy::Merge,
                merge_key: Some(key),
                retain_keys: false,
            },
            schema: None,
        }
    }

    /// `patchStrategy:"merge,retainKeys" patchMergeKey:"<key>"`.
    pub const fn merge_retain_keys(name: &'static str, key: &'static str) -> Field {
        Field {
            name,
            meta: FieldMeta {
                strategy: PatchStrategy::Merge,
                merge_key: Some(key),
                retain_keys: true,
            },
            schema: None,
        }
    }

    /// `patchStrategy:"merge"` without a merge key: a list of primitives
    /// merged as an ordered set (e.g. `metadata.finalizers`).
    pub const fn merge_set(name: &'static str) -> Field {
        Field {
            name,
            meta: FieldMeta {
                strategy: PatchStrategy::Merge,
                merge_key: None,
                retain_keys: false,
            },
            schema: None,
        }
    }

    /// `patchStrategy:"retainKeys"` on a struct (e.g. Deployment
    /// `spec.strategy`).
    pub const fn retain_keys(name: &'static str) -> Field {
        Field {
            name,
            meta: FieldMeta {
                strategy: PatchStrategy::Default,
                merge_key: None,
                retain_keys: true,
            },
            schema: None,
        }
    }

    /// The same field, with `schema` describing its value (or list items).
    pub const fn of(self, schema: &'static TypeSchema) -> Field {
        Field {
            schema: Some(schema),
            ..self
        }
    }
}

/// The patch-relevant fields of one API type.
#[derive(Debug)]
pub struct TypeSchema {
    /// The OpenAPI name of the type, used in error texts.
    pub name: &'static str,
    /// Fields with patch metadata, or leading to types that have some.
    pub fields: &'static [Field],
}

impl TypeSchema {
    /// The field named `name`, if it carries or leads to patch metadata.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}
