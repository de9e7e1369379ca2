//! IPAddress (networking.k8s.io/v1): one allocated ClusterIP (KEP-1880, GA in 1.33). Its name is the
//! address in canonical form, so the store's "create if absent" is what makes an address taken: two
//! API servers can never hand out one address. `spec.parentRef` names the Service holding it.

use super::Kind;
use super::meta::METADATA_ONLY;
use crate::apply::{ApplyKind, Structs, r, st};
use crate::columns::{Column, NAME, col};
use crate::resource::ResourceType;
use crate::rules::{NameRule, Rules};

/// The label saying who manages an IPAddress (kube's `LabelManagedBy`).
pub const LABEL_MANAGED_BY: &str = "ipaddress.kubernetes.io/managed-by";
/// The value of [`LABEL_MANAGED_BY`] for addresses the Service allocator made (kube's
/// `ipallocator.ControllerName`).
pub const MANAGED_BY_ALLOCATOR: &str = "ipallocator.k8s.io";
/// The label holding the address's family, `IPv4` or `IPv6` (kube's `LabelIPAddressFamily`).
pub const LABEL_IP_FAMILY: &str = "ipaddress.kubernetes.io/ip-family";

/// The IPAddress kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        kind: "IPAddress",
        plural: "ipaddresses",
        singular: "ipaddress",
        namespaced: false,
        short_names: &["ip"],
        categories: &[],
        subresources: &[],
        delete_collection: true,
        field_selectors: &[],
    },
    field_labels: &[],
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "IPAddress",
        always_present: &["spec"],
        structs: apply_structs,
    },
    proto: None,
    rules: Rules {
        name: NameRule::IpAddress,
        ..Rules::DEFAULT
    },
    columns: COLUMNS,
};

fn apply_structs(s: &mut Structs) {
    super::meta::structs(s);
    // A struct of scalars, each owned on its own.
    s.insert("ParentReference", st(vec![]));
    s.insert("IPAddressSpec", st(vec![("parentRef", r("ParentReference"))]));
    s.insert(
        "IPAddress",
        st(vec![("metadata", r("ObjectMeta")), ("spec", r("IPAddressSpec"))]),
    );
}

/// The columns of kube's printer for this kind (`printIPAddress`: kube defines no Age column for it).
const COLUMNS: &[Column] = &[NAME, col("ParentRef", "string", DOC_PARENT_REF)];

const DOC_PARENT_REF: &str = "ParentRef references the resource that an IPAddress is attached to. An IPAddress must reference a parent object.";
