//! ServiceAccount (core/v1): an identity for processes in pods. Stored and served; svcnet issues no
//! tokens for it yet (every write carries a warning saying so).

use super::Kind;
use super::meta::METADATA_ONLY;
use crate::apply::{ApplyKind, Structs, list_map, r, st};
use crate::columns::{AGE, Column, NAME, col};
use crate::resource::ResourceType;
use crate::rules::Rules;

/// The ServiceAccount kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "",
        version: "v1",
        kind: "ServiceAccount",
        plural: "serviceaccounts",
        singular: "serviceaccount",
        namespaced: true,
        short_names: &["sa"],
        categories: &[],
        subresources: &[],
        delete_collection: true,
        field_selectors: &[],
    },
    field_labels: &[],
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "ServiceAccount",
        always_present: &[],
        structs: apply_structs,
    },
    proto: None,
    rules: Rules {
        write_warning: Some(super::NO_AUTHZ_WARNING),
        ..Rules::DEFAULT
    },
    columns: COLUMNS,
};

fn apply_structs(s: &mut Structs) {
    super::meta::structs(s);
    s.insert(
        "ServiceAccount",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("secrets", list_map(crate::apply::Ty::Untyped, &["name"])),
        ]),
    );
}

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[NAME, col("Secrets", "string", DOC_SECRETS), AGE];

const DOC_SECRETS: &str = "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use.";
