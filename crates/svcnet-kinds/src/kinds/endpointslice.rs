//! EndpointSlice (discovery.k8s.io/v1): `endpoints` and `ports` are atomic, untagged for patches.

use super::Kind;
use super::meta::METADATA_ONLY;
use crate::apply::{ApplyKind, Structs};
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
};

fn apply_structs(s: &mut Structs) {
    super::meta::metadata_only_structs("EndpointSlice", s);
}
