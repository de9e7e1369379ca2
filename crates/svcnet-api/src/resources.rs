//! The registry of resource types svcnet serves: group, version, kind, names, scope, verbs, subresources
//! and the field selectors each kind supports.
//!
//! Everything the API server does generically (routing, discovery, OpenAPI, storage keys, watch) reads
//! this table, so serving a new kind is one more entry here plus, where the kind has its own semantics,
//! a strategy in the API server.

/// One served resource type (a "GVR" with what discovery says about it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core ("legacy") group.
    pub group: &'static str,
    /// API version within the group.
    pub version: &'static str,
    /// Kind of a single object, e.g. `Service`.
    pub kind: &'static str,
    /// Plural resource name used in URLs, e.g. `services`.
    pub plural: &'static str,
    /// Singular name, e.g. `service`.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts, e.g. `svc`.
    pub short_names: &'static [&'static str],
    /// Categories such as `all`.
    pub categories: &'static [&'static str],
    /// Subresources served, e.g. `status`.
    pub subresources: &'static [&'static str],
    /// Whether `deletecollection` is served.
    pub delete_collection: bool,
    /// Field selector paths supported besides `metadata.name` and `metadata.namespace`.
    pub field_selectors: &'static [&'static str],
}

const ALL: &[&str] = &["all"];

/// Every resource type svcnet serves, in discovery order.
pub static RESOURCES: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &["status", "finalize"],
        delete_collection: false,
        field_selectors: &["status.phase"],
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: ALL,
        subresources: &["status"],
        delete_collection: true,
        field_selectors: &["spec.clusterIP", "spec.type"],
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Endpoints",
        plural: "endpoints",
        singular: "endpoints",
        namespaced: true,
        short_names: &["ep"],
        categories: &[],
        subresources: &[],
        delete_collection: true,
        field_selectors: &[],
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        subresources: &["status", "binding", "log"],
        delete_collection: true,
        field_selectors: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &["status"],
        delete_collection: true,
        field_selectors: &["spec.unschedulable"],
    },
    ResourceType {
        group: "",
        version: "v1",
        kind: "Event",
        plural: "events",
        singular: "event",
        namespaced: true,
        short_names: &["ev"],
        categories: &[],
        subresources: &[],
        delete_collection: true,
        field_selectors: &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        ],
    },
    ResourceType {
        group: "discovery.k8s.io",
        version: "v1",
        kind: "EndpointSlice",
        plural: "endpointslices",
        singular: "endpointslice",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        delete_collection: true,
        field_selectors: &["addressType"],
    },
    ResourceType {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: ALL,
        subresources: &["status", "scale"],
        delete_collection: true,
        field_selectors: &[],
    },
    ResourceType {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: ALL,
        subresources: &["status", "scale"],
        delete_collection: true,
        field_selectors: &["status.replicas"],
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        kind: "Lease",
        plural: "leases",
        singular: "lease",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        delete_collection: true,
        field_selectors: &[],
    },
];

impl ResourceType {
    /// `apiVersion` as objects carry it: `v1` for core, `group/version` otherwise.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind of a list of these objects, e.g. `ServiceList`.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// `resource.group` as Kubernetes names it in errors (`services`, `endpointslices.discovery.k8s.io`).
    pub fn qualified_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// The URL prefix of this resource's group version: `/api/v1` or `/apis/<group>/<version>`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}", self.version)
        } else {
            format!("/apis/{}/{}", self.group, self.version)
        }
    }

    /// Whether the subresource is served.
    pub fn has_subresource(&self, sub: &str) -> bool {
        self.subresources.contains(&sub)
    }

    /// Whether a field selector path is supported for this kind.
    pub fn supports_field(&self, path: &str) -> bool {
        path == "metadata.name"
            || (self.namespaced && path == "metadata.namespace")
            || self.field_selectors.contains(&path)
    }

    /// The verbs discovery advertises.
    pub fn verbs(&self) -> Vec<&'static str> {
        let mut v = vec!["create", "delete"];
        if self.delete_collection {
            v.push("deletecollection");
        }
        v.extend(["get", "list", "patch", "update", "watch"]);
        v
    }
}

/// Looks a resource up by group, version and plural name.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by `apiVersion` and `kind` as found in an object.
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    let (group, version) = split_api_version(api_version);
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.kind == kind)
}

/// Splits `group/version` (or a bare core `version`) into its parts.
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// The API groups served, in discovery order, each with its versions.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut out: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for r in RESOURCES {
        match out.iter_mut().find(|(g, _)| *g == r.group) {
            Some((_, versions)) => {
                if !versions.contains(&r.version) {
                    versions.push(r.version);
                }
            }
            None => out.push((r.group, vec![r.version])),
        }
    }
    out
}

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
