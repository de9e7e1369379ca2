//! Node (core/v1).

use super::Kind;
use super::meta::OBJECT_META;
use crate::apply::{ApplyKind, Structs, Ty, conditions, granular_map, list_map, r, set, st};
use crate::columns::{AGE, Column, NAME, col, wide};
use crate::patch::{Field, TypeSchema};
use crate::resource::{FieldLabel, ResourceType};
use crate::rules::Rules;

/// The Node kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "",
        version: "v1",
        kind: "Node",
        plural: "nodes",
        singular: "node",
        namespaced: false,
        short_names: &["no"],
        categories: &[],
        subresources: &["status"],
        delete_collection: true,
        field_selectors: &["spec.unschedulable"],
    },
    field_labels: &[("spec.unschedulable", FieldLabel::BoolOrFalse)],
    patch: &PATCH,
    apply: ApplyKind {
        root: "Node",
        always_present: &["spec", "status"],
        structs: apply_structs,
    },
    proto: None,
    rules: Rules::DEFAULT,
    columns: COLUMNS,
};

static SPEC_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.NodeSpec",
    fields: &[Field::merge_set("podCIDRs")],
};

static STATUS_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.NodeStatus",
    fields: &[
        Field::merge("conditions", "type"),
        Field::merge("addresses", "type"),
    ],
};

static PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.Node",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &SPEC_PATCH),
        Field::nested("status", &STATUS_PATCH),
    ],
};

fn apply_structs(s: &mut Structs) {
    super::meta::structs(s);
    s.insert(
        "Node",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("spec", r("NodeSpec")),
            ("status", r("NodeStatus")),
        ]),
    );
    s.insert("NodeSpec", st(vec![("podCIDRs", set())]));
    s.insert(
        "NodeStatus",
        st(vec![
            ("addresses", list_map(Ty::Untyped, &["type"])),
            ("conditions", conditions()),
            ("capacity", granular_map()),
            ("allocatable", granular_map()),
        ]),
    );
}

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", DOC_KUBELET_VERSION),
    wide("Internal-IP", "string", DOC_NODE_ADDRESSES),
    wide("External-IP", "string", DOC_NODE_ADDRESSES),
    wide("OS-Image", "string", DOC_OS_IMAGE),
    wide("Kernel-Version", "string", DOC_KERNEL_VERSION),
    wide("Container-Runtime", "string", DOC_CONTAINER_RUNTIME_VERSION),
];

const DOC_CONTAINER_RUNTIME_VERSION: &str =
    "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";

const DOC_KERNEL_VERSION: &str =
    "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";

const DOC_KUBELET_VERSION: &str = "Kubelet Version reported by the node.";

const DOC_NODE_ADDRESSES: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";

const DOC_OS_IMAGE: &str =
    "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
