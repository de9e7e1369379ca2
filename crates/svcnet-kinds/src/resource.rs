//! A kind's resource type: group, version, kind, names, scope, verbs, subresources and the field
//! selectors it supports, and the lookups over every served kind.
//!
//! Everything the API server does generically (routing, discovery, OpenAPI, storage keys, watch) reads
//! these; each kind's value is in its file under [`crate::kinds`].

use crate::kinds::KINDS;

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

/// How a selectable field's value is read when it is not simply the scalar at its path (kube's
/// field-label conversion functions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldLabel {
    /// A boolean, `false` when absent.
    BoolOrFalse,
    /// The string at another JSON pointer (an Event's `source` is `source.component`).
    At(&'static str),
}

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

/// Every served resource type, in discovery order.
pub fn all() -> impl Iterator<Item = &'static ResourceType> {
    KINDS.iter().map(|k| &k.resource)
}

/// Looks a resource up by group, version and plural name.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    all().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Looks a resource up by `apiVersion` and `kind` as found in an object.
pub fn lookup_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    let (group, version) = split_api_version(api_version);
    all().find(|r| r.group == group && r.version == version && r.kind == kind)
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
    for r in all() {
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
