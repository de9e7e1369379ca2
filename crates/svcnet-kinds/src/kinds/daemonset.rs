//! DaemonSet (apps/v1). Stored, validated and served (so that node-agent manifests apply and dry-run);
//! svcnet runs no DaemonSet controller, so their pods are not created, and every write says so.

use super::meta::{CONDITIONS_STATUS, OBJECT_META};
use super::pod::TEMPLATE_PATCH;
use super::{ALL, Kind};
use crate::apply::{ApplyKind, Structs, r, st};
use crate::columns::{AGE, Column, DOC_CONTAINERS, DOC_IMAGES, NAME, col, wide};
use crate::patch::{Field, TypeSchema};
use crate::resource::ResourceType;
use crate::rules::Rules;

/// The DaemonSet kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "apps",
        version: "v1",
        kind: "DaemonSet",
        plural: "daemonsets",
        singular: "daemonset",
        namespaced: true,
        short_names: &["ds"],
        categories: ALL,
        subresources: &["status"],
        delete_collection: true,
        field_selectors: &[],
    },
    field_labels: &[],
    patch: &PATCH,
    apply: ApplyKind {
        root: "DaemonSet",
        always_present: &["spec", "status"],
        structs: apply_structs,
    },
    proto: None,
    rules: Rules {
        tracks_generation: true,
        write_warning: Some(
            "svcnet runs no DaemonSet controller: this DaemonSet is stored, but its pods are not created",
        ),
        ..Rules::DEFAULT
    },
    columns: COLUMNS,
};

static SPEC_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.apps.v1.DaemonSetSpec",
    fields: &[
        Field::nested("template", &TEMPLATE_PATCH),
        Field::retain_keys("updateStrategy"),
    ],
};

static PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.apps.v1.DaemonSet",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &SPEC_PATCH),
        Field::nested("status", &CONDITIONS_STATUS),
    ],
};

fn apply_structs(s: &mut Structs) {
    super::workload::structs(s);
    s.insert(
        "DaemonSet",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("spec", r("DeploymentSpec")),
            ("status", r("WorkloadStatus")),
        ]),
    );
}

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", DOC_DESIRED),
    col("Current", "integer", DOC_CURRENT),
    col("Ready", "integer", DOC_READY),
    col("Up-to-date", "integer", DOC_UPDATED),
    col("Available", "integer", DOC_AVAILABLE),
    col("Node Selector", "string", DOC_NODE_SELECTOR),
    AGE,
    wide("Containers", "string", DOC_CONTAINERS),
    wide("Images", "string", DOC_IMAGES),
    wide("Selector", "string", DOC_SELECTOR),
];

const DOC_DESIRED: &str = "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod).";
const DOC_CURRENT: &str =
    "The number of nodes that are running at least one daemon pod and are supposed to run the daemon pod.";
const DOC_READY: &str = "numberReady is the number of nodes that should be running the daemon pod and have one or more of the daemon pod running with a Ready Condition.";
const DOC_UPDATED: &str = "The total number of nodes that are running updated daemon pod";
const DOC_AVAILABLE: &str = "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available (ready for at least spec.minReadySeconds)";
const DOC_NODE_SELECTOR: &str = "NodeSelector is a selector which must be true for the pod to fit on a node. Selector which must match a node's labels for the pod to be scheduled on that node.";
const DOC_SELECTOR: &str = "A label query over pods that are managed by the daemon set. Must match in order to be controlled. It must match the pod template's labels.";
