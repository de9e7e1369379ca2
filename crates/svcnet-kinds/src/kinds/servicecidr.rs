//! ServiceCIDR (networking.k8s.io/v1): a range ClusterIPs are allocated from (KEP-1880, GA in 1.33).
//! The API server creates the default one, `kubernetes`, from `--service-cidr`; more can be added at
//! run time to grow the ranges. Deletion waits on the finalizer [`FINALIZER`] while IPAddresses in it
//! are in use.

use super::Kind;
use super::meta::{CONDITIONS_STATUS, OBJECT_META};
use crate::apply::{ApplyKind, Structs, conditions, r, st};
use crate::columns::{AGE, Column, NAME, col};
use crate::patch::{Field, TypeSchema};
use crate::resource::ResourceType;
use crate::rules::Rules;

/// The finalizer that keeps a ServiceCIDR while addresses allocated from it exist (kube's
/// `ServiceCIDRProtectionFinalizer`).
pub const FINALIZER: &str = "networking.k8s.io/service-cidr-finalizer";

/// The name of the ServiceCIDR made from the API server's flags (kube's `DefaultServiceCIDRName`).
pub const DEFAULT_NAME: &str = "kubernetes";

/// The ServiceCIDR kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        kind: "ServiceCIDR",
        plural: "servicecidrs",
        singular: "servicecidr",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &["status"],
        delete_collection: true,
        field_selectors: &[],
    },
    field_labels: &[],
    patch: &PATCH,
    apply: ApplyKind {
        root: "ServiceCIDR",
        always_present: &["spec", "status"],
        structs: apply_structs,
    },
    proto: None,
    rules: Rules::DEFAULT,
    columns: COLUMNS,
};

static PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.networking.v1.ServiceCIDR",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("status", &CONDITIONS_STATUS),
    ],
};

fn apply_structs(s: &mut Structs) {
    super::meta::structs(s);
    // `cidrs` is an atomic list, which is what an untyped field is.
    s.insert("ServiceCIDRSpec", st(vec![]));
    s.insert("ServiceCIDRStatus", st(vec![("conditions", conditions())]));
    s.insert(
        "ServiceCIDR",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("spec", r("ServiceCIDRSpec")),
            ("status", r("ServiceCIDRStatus")),
        ]),
    );
}

/// The columns of kube's printer for this kind (`printServiceCIDR`).
const COLUMNS: &[Column] = &[NAME, col("CIDRs", "string", DOC_CIDRS), AGE];

const DOC_CIDRS: &str = "CIDRs defines the IP blocks in CIDR notation (e.g. \"192.168.0.0/24\" or \"2001:db8::/64\") from which to assign service cluster IPs. Max of two CIDRs is allowed, one of each IP family. This field is immutable.";
