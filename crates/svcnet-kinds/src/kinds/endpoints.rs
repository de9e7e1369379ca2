//! Endpoints (core/v1): `subsets` and everything below are atomic lists, untagged for patches.

use super::Kind;
use super::meta::METADATA_ONLY;
use crate::apply::{ApplyKind, Structs};
use crate::resource::ResourceType;
use crate::rules::Rules;

/// The Endpoints kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
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
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "Endpoints",
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
    super::meta::metadata_only_structs("Endpoints", s);
}
