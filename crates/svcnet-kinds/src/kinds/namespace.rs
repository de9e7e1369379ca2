//! Namespace (core/v1).

use super::Kind;
use super::meta::{CONDITIONS_STATUS, OBJECT_META, OBJECT_META_PROTO};
use crate::apply::{ApplyKind, Structs, conditions, r, st};
use crate::columns::{AGE, Column, NAME, col};
use crate::patch::{Field, TypeSchema};
use crate::proto::{self, Wire, f};
use crate::resource::ResourceType;
use crate::rules::{DeleteRules, NameRule, Rules};

/// The Namespace kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "",
        version: "v1",
        kind: "Namespace",
        plural: "namespaces",
        singular: "namespace",
        namespaced: false,
        short_names: &["ns"],
        categories: &[],
        subresources: &["status", "finalize"],
        delete_collection: false,
        field_selectors: &["status.phase"],
    },
    field_labels: &[],
    patch: &PATCH,
    apply: ApplyKind {
        root: "Namespace",
        always_present: &["spec", "status"],
        structs: apply_structs,
    },
    proto: Some(PROTO),
    rules: Rules {
        name: NameRule::Namespace,
        delete: DeleteRules {
            protected_names: &["default", "kube-system", "kube-public"],
            always_marks: true,
            marked_phase: Some("Terminating"),
            ..DeleteRules::DEFAULT
        },
        ..Rules::DEFAULT
    },
    columns: COLUMNS,
};

/// `spec.finalizers` of a Namespace is atomic (no tag), unlike `metadata.finalizers`.
static PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.Namespace",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::atomic("spec"),
        Field::nested("status", &CONDITIONS_STATUS),
    ],
};

fn apply_structs(s: &mut Structs) {
    super::meta::structs(s);
    s.insert(
        "Namespace",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("status", r("NamespaceStatus")),
        ]),
    );
    s.insert("NamespaceStatus", st(vec![("conditions", conditions())]));
}

const SPEC_PROTO: &[proto::Field] = &[proto::r(1, "finalizers", Wire::Str)];
const PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    f(2, "spec", Wire::Msg(SPEC_PROTO)),
];

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[NAME, col("Status", "string", "The status of the namespace"), AGE];
