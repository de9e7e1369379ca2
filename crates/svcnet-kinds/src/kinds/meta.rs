//! Types every kind embeds (meta/v1 `ObjectMeta`, `LabelSelector`, references) and the tables of kinds
//! whose only interesting fields are in their metadata.

use crate::apply::{Structs, Ty, atomic_struct, granular_map, list_map, set, st};
use crate::patch::{Field, TypeSchema};
use crate::proto::{self, Wire, f, p, r};

/// `metav1.ObjectMeta`'s patch tags.
pub static OBJECT_META: TypeSchema = TypeSchema {
    name: "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta",
    fields: &[
        Field::merge("ownerReferences", "uid"),
        Field::merge_set("finalizers"),
        Field::atomic("managedFields"),
    ],
};

/// Types whose only tagged field is `conditions`, merged by `type`
/// (Namespace, Service, Deployment and ReplicaSet status).
pub static CONDITIONS_STATUS: TypeSchema = TypeSchema {
    name: "status",
    fields: &[Field::merge("conditions", "type")],
};

/// The patch tags of kinds whose only tagged fields live in `metadata`.
pub static METADATA_ONLY: TypeSchema = TypeSchema {
    name: "object",
    fields: &[Field::nested("metadata", &OBJECT_META)],
};

/// The meta/v1 structs of server-side apply's table.
pub fn structs(s: &mut Structs) {
    s.insert(
        "ObjectMeta",
        st(vec![
            ("labels", granular_map()),
            ("annotations", granular_map()),
            ("finalizers", set()),
            ("ownerReferences", list_map(Ty::Untyped, &["uid"])),
        ]),
    );
    s.insert("LabelSelector", atomic_struct());
    s.insert("ObjectReference", atomic_struct());
    s.insert("LocalObjectReference", atomic_struct());
    s.insert("NodeSelector", atomic_struct());
    s.insert("KeySelector", atomic_struct());
}

/// Server-side apply's structs of a kind with nothing but metadata worth listing (`root` names it).
pub fn metadata_only_structs(root: &'static str, s: &mut Structs) {
    structs(s);
    s.insert(root, st(vec![("metadata", crate::apply::r("ObjectMeta"))]));
}

const OWNER_REFERENCE: &[proto::Field] = &[
    f(5, "apiVersion", Wire::Str),
    f(1, "kind", Wire::Str),
    f(3, "name", Wire::Str),
    f(4, "uid", Wire::Str),
    p(6, "controller", Wire::Bool),
    p(7, "blockOwnerDeletion", Wire::Bool),
];

/// `metav1.ObjectMeta`'s protobuf fields.
pub const OBJECT_META_PROTO: &[proto::Field] = &[
    f(1, "name", Wire::Str),
    f(2, "generateName", Wire::Str),
    f(3, "namespace", Wire::Str),
    f(5, "uid", Wire::Str),
    f(6, "resourceVersion", Wire::Str),
    f(7, "generation", Wire::Int),
    f(8, "creationTimestamp", Wire::Time),
    f(9, "deletionTimestamp", Wire::Time),
    p(10, "deletionGracePeriodSeconds", Wire::Int),
    f(11, "labels", Wire::StrMap),
    f(12, "annotations", Wire::StrMap),
    r(13, "ownerReferences", Wire::Msg(OWNER_REFERENCE)),
    r(14, "finalizers", Wire::Str),
];

/// `metav1.DeleteOptions`' protobuf fields: kubectl's typed deletes (`kubectl drain` deleting pods)
/// send the options as protobuf.
pub const DELETE_OPTIONS_PROTO: &[proto::Field] = &[
    p(1, "gracePeriodSeconds", Wire::Int),
    f(
        2,
        "preconditions",
        Wire::Msg(&[p(1, "uid", Wire::Str), p(2, "resourceVersion", Wire::Str)]),
    ),
    p(3, "orphanDependents", Wire::Bool),
    p(4, "propagationPolicy", Wire::Str),
    r(5, "dryRun", Wire::Str),
    p(6, "ignoreStoreReadErrorWithClusterBreakingPotential", Wire::Bool),
];

const LABEL_SELECTOR_REQUIREMENT: &[proto::Field] = &[
    f(1, "key", Wire::Str),
    f(2, "operator", Wire::Str),
    r(3, "values", Wire::Str),
];

/// `metav1.LabelSelector`'s protobuf fields.
pub const LABEL_SELECTOR_PROTO: &[proto::Field] = &[
    f(1, "matchLabels", Wire::StrMap),
    r(2, "matchExpressions", Wire::Msg(LABEL_SELECTOR_REQUIREMENT)),
];
