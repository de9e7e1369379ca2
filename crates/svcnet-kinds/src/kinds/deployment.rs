//! Deployment (apps/v1).

use super::meta::{CONDITIONS_STATUS, LABEL_SELECTOR_PROTO, OBJECT_META, OBJECT_META_PROTO};
use super::pod::{TEMPLATE_PATCH, TEMPLATE_PROTO};
use super::{ALL, Kind};
use crate::apply::{ApplyKind, Structs, r, st};
use crate::columns::{AGE, Column, DOC_CONTAINERS, DOC_IMAGES, NAME, col, wide};
use crate::patch::{Field, TypeSchema};
use crate::proto::{self, Wire, f, p};
use crate::resource::ResourceType;
use crate::rules::Rules;

/// The Deployment kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "apps",
        version: "v1",
        kind: "Deployment",
        plural: "deployments",
        singular: "deployment",
        namespaced: true,
        short_names: &["deploy"],
        categories: ALL,
        subresources: &["status", "scale"],
        delete_collection: true,
        field_selectors: &[],
    },
    field_labels: &[],
    patch: &PATCH,
    apply: ApplyKind {
        root: "Deployment",
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
    name: "io.k8s.api.apps.v1.DeploymentSpec",
    fields: &[
        Field::nested("template", &TEMPLATE_PATCH),
        Field::retain_keys("strategy"),
    ],
};

static PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.apps.v1.Deployment",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &SPEC_PATCH),
        Field::nested("status", &CONDITIONS_STATUS),
    ],
};

fn apply_structs(s: &mut Structs) {
    super::workload::structs(s);
    s.insert(
        "Deployment",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("spec", r("DeploymentSpec")),
            ("status", r("WorkloadStatus")),
        ]),
    );
}

const ROLLING_UPDATE_PROTO: &[proto::Field] = &[
    p(1, "maxUnavailable", Wire::IntOrString),
    p(2, "maxSurge", Wire::IntOrString),
];
const STRATEGY_PROTO: &[proto::Field] = &[
    f(1, "type", Wire::Str),
    f(2, "rollingUpdate", Wire::Msg(ROLLING_UPDATE_PROTO)),
];
const SPEC_PROTO: &[proto::Field] = &[
    p(1, "replicas", Wire::Int),
    f(2, "selector", Wire::Msg(LABEL_SELECTOR_PROTO)),
    f(3, "template", Wire::Msg(TEMPLATE_PROTO)),
    f(4, "strategy", Wire::Msg(STRATEGY_PROTO)),
    f(5, "minReadySeconds", Wire::Int),
    p(6, "revisionHistoryLimit", Wire::Int),
    f(7, "paused", Wire::Bool),
    p(9, "progressDeadlineSeconds", Wire::Int),
];
const PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    f(2, "spec", Wire::Msg(SPEC_PROTO)),
];

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", DOC_READY_PODS),
    col("Up-to-date", "string", DOC_DEPLOY_UPDATED),
    col("Available", "string", DOC_DEPLOY_AVAILABLE),
    AGE,
    wide("Containers", "string", DOC_CONTAINERS),
    wide("Images", "string", DOC_IMAGES),
    wide("Selector", "string", DOC_DEPLOY_SELECTOR),
];

const DOC_DEPLOY_AVAILABLE: &str = "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.";

const DOC_DEPLOY_SELECTOR: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.";

const DOC_DEPLOY_UPDATED: &str =
    "Total number of non-terminating pods targeted by this deployment that have the desired template spec.";

const DOC_READY_PODS: &str = "Number of the pod with ready state";
