//! Strategic-merge-patch metadata lookups: each served kind's patch tags (a static [`TypeSchema`]
//! tree restating the Go struct tags) live with the kind's definition in `svcnet_kinds`; this module
//! finds them by `apiVersion`/`kind` and walks them by field path.

pub use svcnet_kinds::patch::{Field, FieldMeta, PatchStrategy, TypeSchema};

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

/// The schema of (`api_version`, `kind`), or `None` for kinds without
/// built-in metadata (CRDs and anything svcnet does not serve).
pub fn schema_for(api_version: &str, kind: &str) -> Option<&'static TypeSchema> {
    svcnet_kinds::kinds::by_kind(api_version, kind).map(|k| k.patch)
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
            ("v1", "Secret"),
            ("discovery.k8s.io/v1", "EndpointSlice"),
            ("coordination.k8s.io/v1", "Lease"),
            ("apps/v1", "Deployment"),
            ("apps/v1", "ReplicaSet"),
        ] {
            assert!(schema_for(av, k).is_some(), "{av} {k}");
        }
        assert!(schema_for("v1", "ResourceQuota").is_none());
        assert!(schema_for("apps/v1beta1", "Deployment").is_none());
        assert!(schema_for("example.com/v1", "Widget").is_none());
    }

    #[test]
    fn object_meta_tags_apply_to_every_kind() {
        for k in svcnet_kinds::KINDS {
            let (av, kind) = (k.resource.api_version(), k.resource.kind);
            assert_eq!(
                field_meta(&av, kind, &["metadata", "finalizers"]),
                FieldMeta {
                    strategy: PatchStrategy::Merge,
                    merge_key: None,
                    retain_keys: false
                },
                "{kind}"
            );
            assert_eq!(
                field_meta(&av, kind, &["metadata", "ownerReferences"]),
                merge_by("uid")
            );
            assert_eq!(
                field_meta(&av, kind, &["metadata", "managedFields"]),
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
