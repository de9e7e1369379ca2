//! EndpointSlice (discovery.k8s.io/v1): `endpoints` and `ports` are atomic, untagged for patches.

use super::Kind;
use super::meta::METADATA_ONLY;
use crate::apply::{ApplyKind, Structs};
use crate::columns::{AGE, Column, NAME, col};
use crate::resource::ResourceType;
use crate::rules::Rules;

/// The EndpointSlice kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
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
    field_labels: &[],
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "EndpointSlice",
        always_present: &[],
        structs: apply_structs,
    },
    proto: None,
    rules: Rules {
        create_on_update: true,
        ..Rules::DEFAULT
    },
    columns: COLUMNS,
};

fn apply_structs(s: &mut Structs) {
    super::meta::metadata_only_structs("EndpointSlice", s);
}

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[
    NAME,
    col("AddressType", "string", DOC_SLICE_ADDRESS_TYPE),
    col("Ports", "string", DOC_SLICE_PORTS),
    col("Endpoints", "string", DOC_SLICE_ENDPOINTS),
    AGE,
];

const DOC_SLICE_ADDRESS_TYPE: &str = "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name.";

const DOC_SLICE_ENDPOINTS: &str = "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.";

const DOC_SLICE_PORTS: &str = "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. When ports is empty, it indicates that there are no defined ports. When a port is defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 ports.";
