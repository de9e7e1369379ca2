//! ConfigMap (core/v1): configuration data as key/value pairs (a Corefile, a KubeProxyConfiguration).

use super::Kind;
use super::meta::{METADATA_ONLY, OBJECT_META_PROTO};
use crate::apply::{ApplyKind, Structs, granular_map, r, st};
use crate::columns::{AGE, Column, NAME, col};
use crate::proto::{self, Wire, f, p};
use crate::resource::ResourceType;
use crate::rules::Rules;

/// The ConfigMap kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "",
        version: "v1",
        kind: "ConfigMap",
        plural: "configmaps",
        singular: "configmap",
        namespaced: true,
        short_names: &["cm"],
        categories: &[],
        subresources: &[],
        delete_collection: true,
        field_selectors: &[],
    },
    field_labels: &[],
    patch: &METADATA_ONLY,
    apply: ApplyKind {
        root: "ConfigMap",
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
        "ConfigMap",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("data", granular_map()),
            ("binaryData", granular_map()),
        ]),
    );
}

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[NAME, col("Data", "string", DOC_DATA), AGE];

const DOC_DATA: &str = "Data contains the configuration data. Each key must consist of alphanumeric characters, '-', '_' or '.'. Values with non-UTF-8 byte sequences must use the BinaryData field. The keys stored in Data must not overlap with the keys in the BinaryData field, this is enforced during validation process.";

/// `core/v1` `ConfigMap`'s protobuf fields (kubectl 1.33's `create configmap` sends protobuf).
const PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    f(2, "data", Wire::StrMap),
    f(3, "binaryData", Wire::BytesMap),
    p(4, "immutable", Wire::Bool),
];
