//! Lease (coordination.k8s.io/v1): its spec is all scalars.

use super::Kind;
use super::meta::METADATA_ONLY;
use crate::apply::{ApplyKind, Structs};
use crate::columns::{AGE, Column, NAME, col};
use crate::resource::ResourceType;
use crate::rules::{DeleteRules, Rules};

/// The Lease kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
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
    field_labels: &[],
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "Lease",
        always_present: &["spec"],
        structs: apply_structs,
    },
    proto: None,
    rules: Rules {
        create_on_update: true,
        delete: DeleteRules {
            answers_status: true,
            ..DeleteRules::DEFAULT
        },
        ..Rules::DEFAULT
    },
    columns: COLUMNS,
};

fn apply_structs(s: &mut Structs) {
    super::meta::metadata_only_structs("Lease", s);
}

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[NAME, col("Holder", "string", DOC_LEASE_HOLDER), AGE];

const DOC_LEASE_HOLDER: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";
