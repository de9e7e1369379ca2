//! The registry of resource types svcnet serves, as the kinds' definitions in `svcnet_kinds` state
//! them: group, version, kind, names, scope, verbs, subresources and supported field selectors.
//!
//! Everything the API server does generically (routing, discovery, OpenAPI, storage keys, watch) reads
//! these; serving a new kind is one new file in `svcnet_kinds::kinds` plus one registry line.

pub use svcnet_kinds::resource::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups() {
        let svc = lookup("", "v1", "services").unwrap();
        assert_eq!(svc.kind, "Service");
        assert_eq!(svc.api_version(), "v1");
        assert_eq!(svc.list_kind(), "ServiceList");
        let es = lookup_kind("discovery.k8s.io/v1", "EndpointSlice").unwrap();
        assert_eq!(es.qualified_resource(), "endpointslices.discovery.k8s.io");
        assert_eq!(es.group_version_path(), "/apis/discovery.k8s.io/v1");
        assert!(lookup("", "v1", "widgets").is_none());
    }

    #[test]
    fn field_support() {
        let pods = lookup("", "v1", "pods").unwrap();
        assert!(pods.supports_field("spec.nodeName"));
        assert!(pods.supports_field("metadata.namespace"));
        assert!(!pods.supports_field("spec.foo"));
        let ns = lookup("", "v1", "namespaces").unwrap();
        assert!(!ns.supports_field("metadata.namespace"));
    }

    #[test]
    fn core_group_first() {
        let g = groups();
        assert_eq!(g[0], ("", vec!["v1"]));
        assert!(g.iter().any(|(g, _)| *g == "discovery.k8s.io"));
    }
}
