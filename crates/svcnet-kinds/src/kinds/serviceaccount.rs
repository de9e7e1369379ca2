//! ServiceAccount (core/v1): an identity for processes in pods. Its `token` subresource is the
//! TokenRequest API (`kubectl create token`), served by the API server's `satoken` module.

use super::Kind;
use super::meta::{METADATA_ONLY, OBJECT_META_PROTO};
use crate::apply::{ApplyKind, Structs, list_map, r, st};
use crate::columns::{AGE, Column, NAME, col};
use crate::proto::{self, Wire, f, p, r as rep};
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
        subresources: &["token"],
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
    proto: Some(PROTO),
    rules: Rules::DEFAULT,
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

const OBJECT_REFERENCE: &[proto::Field] = &[
    f(1, "kind", Wire::Str),
    f(2, "namespace", Wire::Str),
    f(3, "name", Wire::Str),
    f(4, "uid", Wire::Str),
    f(5, "apiVersion", Wire::Str),
    f(6, "resourceVersion", Wire::Str),
    f(7, "fieldPath", Wire::Str),
];

/// `core/v1` ServiceAccount's protobuf fields (`kubectl create serviceaccount` sends protobuf).
const PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    rep(2, "secrets", Wire::Msg(OBJECT_REFERENCE)),
    rep(3, "imagePullSecrets", Wire::Msg(&[f(1, "name", Wire::Str)])),
    p(4, "automountServiceAccountToken", Wire::Bool),
];
