//! Strategic-merge-patch metadata for the kinds svcnet serves.
//!
//! apimachinery reads `patchStrategy` / `patchMergeKey` from Go struct tags by
//! reflection. We have no Go structs, so this module restates those tags as a
//! static tree: a [`TypeSchema`] lists only the fields that carry a tag or
//! lead to a type that does; every other field gets the default behaviour
//! (maps merge recursively, lists are replaced whole). The tags were taken
//! from `k8s.io/api` (core/v1, apps/v1, discovery/v1, coordination/v1) and
//! `k8s.io/apimachinery` (meta/v1 ObjectMeta).
//!
//! Adding a kind means writing the statics for the types on the path to its
//! tagged fields (often just reusing [`OBJECT_META`], [`POD_TEMPLATE_SPEC`],
//! ...) and one line in [`KINDS`].

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

/// The metadata and value schema of field `name` of `schema`: defaults when
/// either is unknown, which makes every list below an unknown type atomic.
pub(crate) fn lookup_field(
    schema: Option<&'static TypeSchema>,
    name: &str,
) -> (FieldMeta, Option<&'static TypeSchema>) {
    match schema.and_then(|s| s.field(name)) {
        Some(f) => (f.meta, f.schema),
        None => (FieldMeta::default(), None),
    }
}

/// A kind with strategic-merge-patch metadata.
#[derive(Debug)]
pub struct KindSchema {
    /// `apiVersion` as it appears in objects (`v1`, `apps/v1`, ...).
    pub api_version: &'static str,
    /// `kind`.
    pub kind: &'static str,
    /// The schema of the whole object.
    pub schema: &'static TypeSchema,
}

/// The schema of (`api_version`, `kind`), or `None` for kinds without
/// built-in metadata (CRDs and anything svcnet does not serve).
pub fn schema_for(api_version: &str, kind: &str) -> Option<&'static TypeSchema> {
    KINDS
        .iter()
        .find(|k| k.api_version == api_version && k.kind == kind)
        .map(|k| k.schema)
}

/// The patch metadata of the field at `path` (JSON field names from the
/// object root; list items are stepped through implicitly, so a container's
/// env is `["spec", "containers", "env"]`). Unknown kinds, unknown fields and
/// the empty path give the default metadata (atomic lists, merged maps).
pub fn field_meta(api_version: &str, kind: &str, path: &[&str]) -> FieldMeta {
    let mut schema = schema_for(api_version, kind);
    let mut meta = FieldMeta::default();
    for segment in path {
        let Some(field) = schema.and_then(|s| s.field(segment)) else {
            return FieldMeta::default();
        };
        meta = field.meta;
        schema = field.schema;
    }
    meta
}

// ---- meta/v1 -------------------------------------------------------------

/// `metav1.ObjectMeta`.
pub static OBJECT_META: TypeSchema = TypeSchema {
    name: "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    fields: &[
        Field::merge("ownerReferences", "uid"),
        Field::merge_set("finalizers"),
        Field::atomic("managedFields"),
    ],
};

/// Types whose only tagged field is `conditions`, merged by `type`
/// (Namespace, Service, Deployment and ReplicaSet status).
static CONDITIONS_STATUS: TypeSchema = TypeSchema {
    name: "status",
    fields: &[Field::merge("conditions", "type")],
};

/// Kinds whose only tagged fields live in `metadata`.
static METADATA_ONLY: TypeSchema = TypeSchema {
    name: "object",
    fields: &[Field::nested("metadata", &OBJECT_META)],
};

// ---- core/v1 pods ----------------------------------------------------------

/// `core/v1.Container`.
pub static CONTAINER: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.Container",
    fields: &[
        Field::merge("ports", "containerPort"),
        Field::merge("env", "name"),
        Field::merge("volumeMounts", "mountPath"),
        Field::merge("volumeDevices", "devicePath"),
    ],
};

/// `core/v1.EphemeralContainer` (its inlined `EphemeralContainerCommon`).
pub static EPHEMERAL_CONTAINER: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.EphemeralContainer",
    fields: &[
        Field::merge("ports", "containerPort"),
        Field::merge("env", "name"),
        Field::merge("volumeMounts", "mountPath"),
        Field::merge("volumeDevices", "devicePath"),
    ],
};

/// `core/v1.PodSpec`.
pub static POD_SPEC: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.PodSpec",
    fields: &[
        Field::merge_retain_keys("volumes", "name"),
        Field::merge("initContainers", "name").of(&CONTAINER),
        Field::merge("containers", "name").of(&CONTAINER),
        Field::merge("ephemeralContainers", "name").of(&EPHEMERAL_CONTAINER),
        Field::merge("imagePullSecrets", "name"),
        Field::merge("hostAliases", "ip"),
        Field::merge("topologySpreadConstraints", "topologyKey"),
        Field::merge("schedulingGates", "name"),
        Field::merge_retain_keys("resourceClaims", "name"),
        Field::merge("evictionResponders", "name"),
    ],
};

/// `core/v1.NodeAllocatableResourceClaimStatus`.
static NODE_ALLOCATABLE_RESOURCE_CLAIM_STATUS: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.NodeAllocatableResourceClaimStatus",
    fields: &[Field::merge("mapping", "name"), Field::merge("overhead", "name")],
};

/// `core/v1.PodStatus`. `containerStatuses` and friends are atomic, so the
/// tags inside `ContainerStatus` never apply and are not listed.
pub static POD_STATUS: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.PodStatus",
    fields: &[
        Field::merge("conditions", "type"),
        Field::merge("hostIPs", "ip"),
        Field::merge("podIPs", "ip"),
        Field::merge_retain_keys("resourceClaimStatuses", "name"),
        Field::merge("nodeAllocatableResourceClaimStatuses", "resourceClaimName")
            .of(&NODE_ALLOCATABLE_RESOURCE_CLAIM_STATUS),
    ],
};

/// `core/v1.PodTemplateSpec`, reused by every workload kind.
pub static POD_TEMPLATE_SPEC: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.PodTemplateSpec",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &POD_SPEC),
    ],
};

static POD: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.Pod",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &POD_SPEC),
        Field::nested("status", &POD_STATUS),
    ],
};

// ---- core/v1 services, namespaces, nodes ----------------------------------

static SERVICE_SPEC: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.ServiceSpec",
    fields: &[Field::merge("ports", "port")],
};

static SERVICE: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.Service",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &SERVICE_SPEC),
        Field::nested("status", &CONDITIONS_STATUS),
    ],
};

/// `spec.finalizers` of a Namespace is atomic (no tag), unlike
/// `metadata.finalizers`.
static NAMESPACE: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.Namespace",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::atomic("spec"),
        Field::nested("status", &CONDITIONS_STATUS),
    ],
};

static NODE_SPEC: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.NodeSpec",
    fields: &[Field::merge_set("podCIDRs")],
};

static NODE_STATUS: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.NodeStatus",
    fields: &[
        Field::merge("conditions", "type"),
        Field::merge("addresses", "type"),
    ],
};

static NODE: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.Node",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &NODE_SPEC),
        Field::nested("status", &NODE_STATUS),
    ],
};

// ---- apps/v1 ---------------------------------------------------------------

static DEPLOYMENT_SPEC: TypeSchema = TypeSchema {
    name: "io.k8s.api.apps.v1.DeploymentSpec",
    fields: &[
        Field::nested("template", &POD_TEMPLATE_SPEC),
        Field::retain_keys("strategy"),
    ],
};

static DEPLOYMENT: TypeSchema = TypeSchema {
    name: "io.k8s.api.apps.v1.Deployment",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &DEPLOYMENT_SPEC),
        Field::nested("status", &CONDITIONS_STATUS),
    ],
};

static REPLICA_SET_SPEC: TypeSchema = TypeSchema {
    name: "io.k8s.api.apps.v1.ReplicaSetSpec",
    fields: &[Field::nested("template", &POD_TEMPLATE_SPEC)],
};

static REPLICA_SET: TypeSchema = TypeSchema {
    name: "io.k8s.api.apps.v1.ReplicaSet",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &REPLICA_SET_SPEC),
        Field::nested("status", &CONDITIONS_STATUS),
    ],
};

/// Every kind with built-in strategic-merge-patch metadata.
pub static KINDS: &[KindSchema] = &[
    KindSchema {
        api_version: "v1",
        kind: "Namespace",
        schema: &NAMESPACE,
    },
    KindSchema {
        api_version: "v1",
        kind: "Service",
        schema: &SERVICE,
    },
    // Endpoints `subsets` and Event have no tagged lists.
    KindSchema {
        api_version: "v1",
        kind: "Endpoints",
        schema: &METADATA_ONLY,
    },
    KindSchema {
        api_version: "v1",
        kind: "Pod",
        schema: &POD,
    },
    KindSchema {
        api_version: "v1",
        kind: "Node",
        schema: &NODE,
    },
    KindSchema {
        api_version: "v1",
        kind: "Event",
        schema: &METADATA_ONLY,
    },
    // EndpointSlice `endpoints`/`ports` and Lease have no tagged lists.
    KindSchema {
        api_version: "discovery.k8s.io/v1",
        kind: "EndpointSlice",
        schema: &METADATA_ONLY,
    },
    KindSchema {
        api_version: "coordination.k8s.io/v1",
        kind: "Lease",
        schema: &METADATA_ONLY,
    },
    KindSchema {
        api_version: "apps/v1",
        kind: "Deployment",
        schema: &DEPLOYMENT,
    },
    KindSchema {
        api_version: "apps/v1",
        kind: "ReplicaSet",
        schema: &REPLICA_SET,
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    fn merge_by(key: &'static str) -> FieldMeta {
        FieldMeta {
            strategy: PatchStrategy::Merge,
            merge_key: Some(key),
            retain_keys: false,
        }
    }

    #[test]
    fn every_served_kind_is_registered() {
        for (av, k) in [
            ("v1", "Namespace"),
            ("v1", "Service"),
            ("v1", "Endpoints"),
            ("v1", "Pod"),
            ("v1", "Node"),
            ("v1", "Event"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            ("coordination.k8s.io/v1", "Lease"),
            ("apps/v1", "Deployment"),
            ("apps/v1", "ReplicaSet"),
        ] {
            assert!(schema_for(av, k).is_some(), "{av} {k}");
        }
        assert!(schema_for("v1", "ConfigMap").is_none());
        assert!(schema_for("apps/v1beta1", "Deployment").is_none());
        assert!(schema_for("example.com/v1", "Widget").is_none());
    }

    #[test]
    fn object_meta_tags_apply_to_every_kind() {
        for k in KINDS {
            assert_eq!(
                field_meta(k.api_version, k.kind, &["metadata", "finalizers"]),
                FieldMeta {
                    strategy: PatchStrategy::Merge,
                    merge_key: None,
                    retain_keys: false
                },
                "{}",
                k.kind
            );
            assert_eq!(
                field_meta(k.api_version, k.kind, &["metadata", "ownerReferences"]),
                merge_by("uid")
            );
            assert_eq!(
                field_meta(k.api_version, k.kind, &["metadata", "managedFields"]),
                FieldMeta::default()
            );
        }
    }

    #[test]
    fn service_and_namespace() {
        assert_eq!(field_meta("v1", "Service", &["spec", "ports"]), merge_by("port"));
        assert_eq!(
            field_meta("v1", "Service", &["status", "conditions"]),
            merge_by("type")
        );
        assert_eq!(
            field_meta("v1", "Service", &["status", "loadBalancer", "ingress"]),
            FieldMeta::default()
        );
        assert_eq!(
            field_meta("v1", "Namespace", &["spec", "finalizers"]),
            FieldMeta::default()
        );
        assert_eq!(
            field_meta("v1", "Namespace", &["status", "conditions"]),
            merge_by("type")
        );
    }

    #[test]
    fn pod_spec_and_containers() {
        let p = |path: &[&str]| field_meta("v1", "Pod", path);
        assert_eq!(p(&["spec", "containers"]), merge_by("name"));
        assert_eq!(p(&["spec", "initContainers"]), merge_by("name"));
        assert_eq!(p(&["spec", "ephemeralContainers"]), merge_by("name"));
        assert_eq!(
            p(&["spec", "volumes"]),
            FieldMeta {
                strategy: PatchStrategy::Merge,
                merge_key: Some("name"),
                retain_keys: true
            }
        );
        assert_eq!(p(&["spec", "containers", "env"]), merge_by("name"));
        assert_eq!(p(&["spec", "containers", "ports"]), merge_by("containerPort"));
        assert_eq!(p(&["spec", "containers", "volumeMounts"]), merge_by("mountPath"));
        assert_eq!(
            p(&["spec", "ephemeralContainers", "volumeDevices"]),
            merge_by("devicePath")
        );
        assert_eq!(p(&["spec", "imagePullSecrets"]), merge_by("name"));
        assert_eq!(p(&["spec", "hostAliases"]), merge_by("ip"));
        assert_eq!(p(&["spec", "topologySpreadConstraints"]), merge_by("topologyKey"));
        assert_eq!(p(&["spec", "tolerations"]), FieldMeta::default());
        assert_eq!(p(&["spec", "containers", "args"]), FieldMeta::default());
    }

    #[test]
    fn pod_and_node_status() {
        let p = |path: &[&str]| field_meta("v1", "Pod", path);
        assert_eq!(p(&["status", "conditions"]), merge_by("type"));
        assert_eq!(p(&["status", "podIPs"]), merge_by("ip"));
        assert_eq!(p(&["status", "hostIPs"]), merge_by("ip"));
        assert_eq!(p(&["status", "containerStatuses"]), FieldMeta::default());
        let n = |path: &[&str]| field_meta("v1", "Node", path);
        assert_eq!(n(&["status", "conditions"]), merge_by("type"));
        assert_eq!(n(&["status", "addresses"]), merge_by("type"));
        assert_eq!(n(&["spec", "podCIDRs"]).strategy, PatchStrategy::Merge);
        assert_eq!(n(&["spec", "taints"]), FieldMeta::default());
    }

    #[test]
    fn workloads_reuse_pod_template() {
        for kind in ["Deployment", "ReplicaSet"] {
            let w = |path: &[&str]| field_meta("apps/v1", kind, path);
            assert_eq!(
                w(&["spec", "template", "spec", "containers", "env"]),
                merge_by("name")
            );
            assert_eq!(
                w(&["spec", "template", "metadata", "finalizers"]).strategy,
                PatchStrategy::Merge
            );
            assert_eq!(w(&["status", "conditions"]), merge_by("type"));
        }
        assert!(field_meta("apps/v1", "Deployment", &["spec", "strategy"]).retain_keys);
    }

    #[test]
    fn unknown_kinds_and_paths_are_default() {
        assert_eq!(
            field_meta("example.com/v1", "Widget", &["spec", "items"]),
            FieldMeta::default()
        );
        assert_eq!(field_meta("v1", "Pod", &[]), FieldMeta::default());
        assert_eq!(
            field_meta("v1", "Pod", &["spec", "nope", "containers"]),
            FieldMeta::default()
        );
        assert_eq!(
            field_meta("discovery.k8s.io/v1", "EndpointSlice", &["endpoints"]),
            FieldMeta::default()
        );
    }
}
