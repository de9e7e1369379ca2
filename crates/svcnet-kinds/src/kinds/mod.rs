//! One file per served kind, each holding everything that kind is, and [`KINDS`], the registry.
//!
//! Adding a kind: copy the file of a similar kind, restate the new kind's resource type and field
//! tables, and add one line to [`KINDS`]. Types several kinds embed (ObjectMeta, the pod template)
//! live in [`meta`] and [`pod`] and are reused by reference.

use crate::apply::ApplyKind;
use crate::columns::Column;
use crate::patch::TypeSchema;
use crate::proto;
use crate::resource::{FieldLabel, ResourceType};
use crate::rules::Rules;

pub mod configmap;
pub mod csr;
pub mod daemonset;
pub mod deployment;
pub mod endpoints;
pub mod endpointslice;
pub mod event;
pub mod ipaddress;
pub mod lease;
pub mod meta;
pub mod namespace;
pub mod node;
pub mod pod;
pub mod rbac;
pub mod replicaset;
pub mod secret;
pub mod service;
pub mod serviceaccount;
pub mod servicecidr;
pub mod workload;

/// Everything one resource kind is.
#[derive(Debug)]
pub struct Kind {
    /// Its resource type: names, scope, verbs, subresources, selectable fields.
    pub resource: ResourceType,
    /// Selectable fields (of `resource.field_selectors`) read other than as the scalar at their path.
    pub field_labels: &'static [(&'static str, FieldLabel)],
    /// Its strategic-merge-patch tags (merge keys and strategies).
    pub patch: &'static TypeSchema,
    /// Its server-side apply list and map types.
    pub apply: ApplyKind,
    /// Its protobuf field numbers, for the kinds kubectl sends as protobuf.
    pub proto: Option<&'static [proto::Field]>,
    /// How the API server's generic handlers treat its writes.
    pub rules: Rules,
    /// The columns of its printer (`kubectl get`).
    pub columns: &'static [Column],
}

/// Every kind svcnet serves, in discovery order.
pub static KINDS: &[&Kind] = &[
    &namespace::KIND,
    &service::KIND,
    &endpoints::KIND,
    &pod::KIND,
    &node::KIND,
    &event::KIND,
    &endpointslice::KIND,
    &deployment::KIND,
    &replicaset::KIND,
    &lease::KIND,
    &configmap::KIND,
    &secret::KIND,
    &serviceaccount::KIND,
    &daemonset::KIND,
    &rbac::ROLE,
    &rbac::CLUSTER_ROLE,
    &rbac::ROLE_BINDING,
    &rbac::CLUSTER_ROLE_BINDING,
    &csr::KIND,
    &servicecidr::KIND,
    &ipaddress::KIND,
];

/// The category `all` that `kubectl get all` lists.
pub(crate) const ALL: &[&str] = &["all"];

/// Looks a kind up by `apiVersion` and `kind` as found in an object.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static Kind> {
    let (group, version) = crate::resource::split_api_version(api_version);
    KINDS
        .iter()
        .copied()
        .find(|k| k.resource.group == group && k.resource.version == version && k.resource.kind == kind)
}

/// Looks a kind up by group and kind, whatever the version (as kube's printers are registered).
pub fn by_group_kind(group: &str, kind: &str) -> Option<&'static Kind> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.resource.group == group && k.resource.kind == kind)
}

/// The kind of a resource type.
pub fn of(rt: &ResourceType) -> &'static Kind {
    KINDS
        .iter()
        .copied()
        .find(|k| std::ptr::eq(&k.resource, rt))
        .or_else(|| KINDS.iter().copied().find(|k| k.resource == *rt))
        .expect("every resource type comes from a kind")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_found_by_its_api_version_and_kind() {
        for k in KINDS {
            let rt = &k.resource;
            assert!(std::ptr::eq(by_kind(&rt.api_version(), rt.kind).unwrap(), *k));
            assert!(std::ptr::eq(of(rt), *k));
        }
        assert!(by_kind("apps/v1", "Service").is_none());
    }

    #[test]
    fn every_apply_struct_reference_resolves() {
        use crate::apply::Ty;
        let mut structs = crate::apply::Structs::new();
        for k in KINDS {
            (k.apply.structs)(&mut structs);
        }
        fn check(structs: &crate::apply::Structs, ty: &Ty) {
            match ty {
                Ty::Struct(name) => assert!(structs.contains_key(name), "missing struct {name}"),
                Ty::Map { values, .. } => check(structs, values),
                Ty::List { items, .. } => check(structs, items),
                _ => {}
            }
        }
        for def in structs.values() {
            for (_, ty) in &def.fields {
                check(&structs, ty);
            }
        }
        for k in KINDS {
            assert!(structs.contains_key(k.apply.root), "{}", k.resource.kind);
        }
    }
}
