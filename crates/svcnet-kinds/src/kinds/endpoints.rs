//! Endpoints (core/v1): `subsets` and everything below are atomic lists, untagged for patches.

use super::Kind;
use super::meta::METADATA_ONLY;
use crate::apply::{ApplyKind, Structs};
use crate::columns::{AGE, Column, NAME, col};
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
    field_labels: &[],
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
    columns: COLUMNS,
};

fn apply_structs(s: &mut Structs) {
    super::meta::metadata_only_structs("Endpoints", s);
}

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[NAME, col("Endpoints", "string", DOC_ENDPOINTS_SUBSETS), AGE];

const DOC_ENDPOINTS_SUBSETS: &str = "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.";
