//! ReplicaSet (apps/v1).

use super::meta::{CONDITIONS_STATUS, LABEL_SELECTOR_PROTO, OBJECT_META, OBJECT_META_PROTO};
use super::pod::{TEMPLATE_PATCH, TEMPLATE_PROTO};
use super::{ALL, Kind};
use crate::apply::{ApplyKind, Structs, r, st};
use crate::columns::{AGE, Column, DOC_CONTAINERS, DOC_IMAGES, NAME, col, wide};
use crate::patch::{Field, TypeSchema};
use crate::proto::{self, Wire, f, p};
use crate::resource::ResourceType;
use crate::rules::Rules;

/// The ReplicaSet kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "apps",
        version: "v1",
        kind: "ReplicaSet",
        plural: "replicasets",
        singular: "replicaset",
        namespaced: true,
        short_names: &["rs"],
        categories: ALL,
        subresources: &["status", "scale"],
        delete_collection: true,
        field_selectors: &["status.replicas"],
    },
    field_labels: &[],
    patch: &PATCH,
    apply: ApplyKind {
        root: "ReplicaSet",
        always_present: &["spec", "status"],
        structs: apply_structs,
    },
    proto: Some(PROTO),
    rules: Rules {
        tracks_generation: true,
        ..Rules::DEFAULT
    },
    columns: COLUMNS,
};

static SPEC_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.apps.v1.ReplicaSetSpec",
    fields: &[Field::nested("template", &TEMPLATE_PATCH)],
};

static PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.apps.v1.ReplicaSet",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &SPEC_PATCH),
        Field::nested("status", &CONDITIONS_STATUS),
    ],
};

fn apply_structs(s: &mut Structs) {
    super::workload::structs(s);
    s.insert(
        "ReplicaSet",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("spec", r("DeploymentSpec")),
            ("status", r("WorkloadStatus")),
        ]),
    );
}

const SPEC_PROTO: &[proto::Field] = &[
    p(1, "replicas", Wire::Int),
    f(4, "minReadySeconds", Wire::Int),
    f(2, "selector", Wire::Msg(LABEL_SELECTOR_PROTO)),
    f(3, "template", Wire::Msg(TEMPLATE_PROTO)),
];
const PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    f(2, "spec", Wire::Msg(SPEC_PROTO)),
];

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", DOC_RS_SPEC_REPLICAS),
    col("Current", "integer", DOC_RS_STATUS_REPLICAS),
    col("Ready", "integer", DOC_RS_STATUS_READY),
    AGE,
    wide("Containers", "string", DOC_CONTAINERS),
    wide("Images", "string", DOC_IMAGES),
    wide("Selector", "string", DOC_RS_SPEC_SELECTOR),
];

const DOC_RS_SPEC_REPLICAS: &str = "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";

const DOC_RS_SPEC_SELECTOR: &str = "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";

const DOC_RS_STATUS_READY: &str =
    "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.";

const DOC_RS_STATUS_REPLICAS: &str = "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
