//! Secret (core/v1): small confidential data, e.g. the bootstrap tokens nodes join with
//! (`kube-system/bootstrap-token-<id>`, type `bootstrap.kubernetes.io/token`).

use super::Kind;
use super::meta::{METADATA_ONLY, OBJECT_META_PROTO};
use crate::apply::{ApplyKind, Structs, granular_map, r, st};
use crate::columns::{AGE, Column, NAME, col};
use crate::proto::{self, Wire, f, p};
use crate::resource::ResourceType;
use crate::rules::Rules;

/// The Secret kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "",
        version: "v1",
        kind: "Secret",
        plural: "secrets",
        singular: "secret",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        delete_collection: true,
        field_selectors: &["type"],
    },
    field_labels: &[],
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "Secret",
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
        "Secret",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("data", granular_map()),
            ("stringData", granular_map()),
        ]),
    );
}

/// The columns of kube's printer for this kind (`printSecret`).
const COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", DOC_TYPE),
    col("Data", "string", DOC_DATA),
    AGE,
];

const DOC_TYPE: &str = "Used to facilitate programmatic handling of secret data. More info: https://kubernetes.io/docs/concepts/configuration/secret/#secret-types";
const DOC_DATA: &str = "Data contains the secret data. Each key must consist of alphanumeric characters, '-', '_' or '.'. The serialized form of the secret data is a base64 encoded string, representing the arbitrary (possibly non-string) data value here. Described in https://tools.ietf.org/html/rfc4648#section-4";

/// `core/v1` `Secret`'s protobuf fields (kubectl 1.33's `create secret` sends protobuf).
const PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    f(2, "data", Wire::BytesMap),
    f(3, "type", Wire::Str),
    f(4, "stringData", Wire::StrMap),
    p(5, "immutable", Wire::Bool),
];
