//! Pod (core/v1), and the pod template every workload kind embeds.

use super::meta::{OBJECT_META, OBJECT_META_PROTO};
use super::{ALL, Kind};
use crate::apply::{
    ApplyKind, Structs, Ty, atomic_map, conditions, granular_map, list_map, port_list, r, st,
};
use crate::columns::{AGE, Column, NAME, col, wide};
use crate::patch::{Field, TypeSchema};
use crate::proto::{self, Wire, f, p};
use crate::resource::{FieldLabel, ResourceType};
use crate::rules::{DeleteRules, Rules};

/// The Pod kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "",
        version: "v1",
        kind: "Pod",
        plural: "pods",
        singular: "pod",
        namespaced: true,
        short_names: &["po"],
        categories: ALL,
        // `exec`, `attach` and `portforward` are routed (kubectl finds them in discovery, as on
        // kube-apiserver) but answered with a Status saying the process runner cannot serve them.
        subresources: &["status", "binding", "log", "exec", "attach", "portforward"],
        delete_collection: true,
        field_selectors: &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        ],
    },
    field_labels: &[
        ("spec.hostNetwork", FieldLabel::BoolOrFalse),
        ("status.podIPs", FieldLabel::At("/status/podIPs/0/ip")),
    ],
    patch: &PATCH,
    apply: ApplyKind {
        root: "Pod",
        always_present: &["spec", "status"],
        structs: apply_structs,
    },
    proto: Some(PROTO),
    rules: Rules {
        delete: DeleteRules {
            grace_period: true,
            ..DeleteRules::DEFAULT
        },
        ..Rules::DEFAULT
    },
    columns: COLUMNS,
};

/// `core/v1.Container`'s patch tags.
pub static CONTAINER_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.Container",
    fields: &[
        Field::merge("ports", "containerPort"),
        Field::merge("env", "name"),
        Field::merge("volumeMounts", "mountPath"),
        Field::merge("volumeDevices", "devicePath"),
    ],
};

/// `core/v1.EphemeralContainer`'s patch tags (its inlined `EphemeralContainerCommon`).
pub static EPHEMERAL_CONTAINER_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.EphemeralContainer",
    fields: &[
        Field::merge("ports", "containerPort"),
        Field::merge("env", "name"),
        Field::merge("volumeMounts", "mountPath"),
        Field::merge("volumeDevices", "devicePath"),
    ],
};

/// `core/v1.PodSpec`'s patch tags.
pub static SPEC_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.PodSpec",
    fields: &[
        Field::merge_retain_keys("volumes", "name"),
        Field::merge("initContainers", "name").of(&CONTAINER_PATCH),
        Field::merge("containers", "name").of(&CONTAINER_PATCH),
        Field::merge("ephemeralContainers", "name").of(&EPHEMERAL_CONTAINER_PATCH),
        Field::merge("imagePullSecrets", "name"),
        Field::merge("hostAliases", "ip"),
        Field::merge("topologySpreadConstraints", "topologyKey"),
        Field::merge("schedulingGates", "name"),
        Field::merge_retain_keys("resourceClaims", "name"),
        Field::merge("evictionResponders", "name"),
    ],
};

/// `core/v1.NodeAllocatableResourceClaimStatus`.
static NODE_ALLOCATABLE_RESOURCE_CLAIM_STATUS_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.NodeAllocatableResourceClaimStatus",
    fields: &[Field::merge("mapping", "name"), Field::merge("overhead", "name")],
};

/// `core/v1.PodStatus`'s patch tags. `containerStatuses` and friends are atomic, so the tags inside
/// `ContainerStatus` never apply and are not listed.
pub static STATUS_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.PodStatus",
    fields: &[
        Field::merge("conditions", "type"),
        Field::merge("hostIPs", "ip"),
        Field::merge("podIPs", "ip"),
        Field::merge_retain_keys("resourceClaimStatuses", "name"),
        Field::merge("nodeAllocatableResourceClaimStatuses", "resourceClaimName")
            .of(&NODE_ALLOCATABLE_RESOURCE_CLAIM_STATUS_PATCH),
    ],
};

/// `core/v1.PodTemplateSpec`'s patch tags, reused by every workload kind.
pub static TEMPLATE_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.PodTemplateSpec",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &SPEC_PATCH),
    ],
};

static PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.Pod",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &SPEC_PATCH),
        Field::nested("status", &STATUS_PATCH),
    ],
};

fn apply_structs(s: &mut Structs) {
    template_structs(s);
    s.insert(
        "Pod",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("spec", r("PodSpec")),
            ("status", r("PodStatus")),
        ]),
    );
    s.insert(
        "PodStatus",
        st(vec![
            ("conditions", conditions()),
            ("podIPs", list_map(Ty::Untyped, &["ip"])),
            ("hostIPs", list_map(Ty::Untyped, &["ip"])),
            ("resourceClaimStatuses", list_map(Ty::Untyped, &["name"])),
        ]),
    );
}

/// Server-side apply's structs of `PodTemplateSpec` and everything below it.
pub fn template_structs(s: &mut Structs) {
    super::meta::structs(s);
    s.insert(
        "PodTemplateSpec",
        st(vec![("metadata", r("ObjectMeta")), ("spec", r("PodSpec"))]),
    );
    s.insert(
        "PodSpec",
        st(vec![
            ("containers", list_map(r("Container"), &["name"])),
            ("initContainers", list_map(r("Container"), &["name"])),
            ("ephemeralContainers", list_map(r("Container"), &["name"])),
            ("volumes", list_map(r("Volume"), &["name"])),
            ("imagePullSecrets", list_map(r("LocalObjectReference"), &["name"])),
            ("hostAliases", list_map(Ty::Untyped, &["ip"])),
            ("nodeSelector", atomic_map()),
            ("overhead", granular_map()),
            ("resourceClaims", list_map(Ty::Untyped, &["name"])),
            ("schedulingGates", list_map(Ty::Untyped, &["name"])),
            (
                "topologySpreadConstraints",
                list_map(
                    r("TopologySpreadConstraint"),
                    &["topologyKey", "whenUnsatisfiable"],
                ),
            ),
            ("affinity", r("Affinity")),
        ]),
    );
    s.insert(
        "TopologySpreadConstraint",
        st(vec![("labelSelector", r("LabelSelector"))]),
    );
    s.insert("Affinity", st(vec![("nodeAffinity", r("NodeAffinity"))]));
    s.insert(
        "NodeAffinity",
        st(vec![(
            "requiredDuringSchedulingIgnoredDuringExecution",
            r("NodeSelector"),
        )]),
    );
    s.insert(
        "Container",
        st(vec![
            ("ports", port_list("containerPort")),
            ("env", list_map(r("EnvVar"), &["name"])),
            ("volumeMounts", list_map(Ty::Untyped, &["mountPath"])),
            ("volumeDevices", list_map(Ty::Untyped, &["devicePath"])),
            ("resources", r("ResourceRequirements")),
        ]),
    );
    s.insert("EnvVar", st(vec![("valueFrom", r("EnvVarSource"))]));
    s.insert(
        "EnvVarSource",
        st(vec![
            ("configMapKeyRef", r("KeySelector")),
            ("secretKeyRef", r("KeySelector")),
            ("fieldRef", r("KeySelector")),
            ("resourceFieldRef", r("KeySelector")),
        ]),
    );
    s.insert(
        "ResourceRequirements",
        st(vec![
            ("limits", granular_map()),
            ("requests", granular_map()),
            ("claims", list_map(Ty::Untyped, &["name"])),
        ]),
    );
    s.insert(
        "Volume",
        st(vec![
            ("persistentVolumeClaim", Ty::Untyped),
            ("csi", r("CSIVolumeSource")),
        ]),
    );
    s.insert(
        "CSIVolumeSource",
        st(vec![
            ("volumeAttributes", granular_map()),
            ("nodePublishSecretRef", r("LocalObjectReference")),
        ]),
    );
}

const CONTAINER_PORT_PROTO: &[proto::Field] = &[
    f(1, "name", Wire::Str),
    f(2, "hostPort", Wire::Int),
    f(3, "containerPort", Wire::Int),
    f(4, "protocol", Wire::Str),
    f(5, "hostIP", Wire::Str),
];
const ENV_VAR_PROTO: &[proto::Field] = &[f(1, "name", Wire::Str), p(2, "value", Wire::Str)];
const RESOURCES_PROTO: &[proto::Field] = &[
    f(1, "limits", Wire::QuantityMap),
    f(2, "requests", Wire::QuantityMap),
];
const CONTAINER_PROTO: &[proto::Field] = &[
    f(1, "name", Wire::Str),
    f(2, "image", Wire::Str),
    proto::r(3, "command", Wire::Str),
    proto::r(4, "args", Wire::Str),
    f(5, "workingDir", Wire::Str),
    proto::r(6, "ports", Wire::Msg(CONTAINER_PORT_PROTO)),
    proto::r(7, "env", Wire::Msg(ENV_VAR_PROTO)),
    f(8, "resources", Wire::Msg(RESOURCES_PROTO)),
    f(13, "terminationMessagePath", Wire::Str),
    f(20, "terminationMessagePolicy", Wire::Str),
    f(14, "imagePullPolicy", Wire::Str),
    f(16, "stdin", Wire::Bool),
    f(17, "stdinOnce", Wire::Bool),
    f(18, "tty", Wire::Bool),
];
const TOLERATION_PROTO: &[proto::Field] = &[
    f(1, "key", Wire::Str),
    f(2, "operator", Wire::Str),
    f(3, "value", Wire::Str),
    f(4, "effect", Wire::Str),
    p(5, "tolerationSeconds", Wire::Int),
];
const SPEC_PROTO: &[proto::Field] = &[
    proto::r(20, "initContainers", Wire::Msg(CONTAINER_PROTO)),
    proto::r(2, "containers", Wire::Msg(CONTAINER_PROTO)),
    f(3, "restartPolicy", Wire::Str),
    p(4, "terminationGracePeriodSeconds", Wire::Int),
    p(5, "activeDeadlineSeconds", Wire::Int),
    f(6, "dnsPolicy", Wire::Str),
    f(7, "nodeSelector", Wire::StrMap),
    f(8, "serviceAccountName", Wire::Str),
    f(10, "nodeName", Wire::Str),
    f(11, "hostNetwork", Wire::Bool),
    f(16, "hostname", Wire::Str),
    f(17, "subdomain", Wire::Str),
    f(19, "schedulerName", Wire::Str),
    proto::r(22, "tolerations", Wire::Msg(TOLERATION_PROTO)),
    p(25, "priority", Wire::Int),
    p(30, "enableServiceLinks", Wire::Bool),
];
const PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    f(2, "spec", Wire::Msg(SPEC_PROTO)),
];

/// `core/v1.PodTemplateSpec`'s protobuf fields.
pub const TEMPLATE_PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    f(2, "spec", Wire::Msg(SPEC_PROTO)),
];

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[
    NAME,
    col(
        "Ready",
        "string",
        "The aggregate readiness state of this pod for accepting traffic.",
    ),
    col(
        "Status",
        "string",
        "The aggregate status of the containers in this pod.",
    ),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide("IP", "string", DOC_POD_IP),
    wide("Node", "string", DOC_NODE_NAME),
    wide("Nominated Node", "string", DOC_NOMINATED_NODE_NAME),
    wide("Readiness Gates", "string", DOC_READINESS_GATES),
];

const DOC_NODE_NAME: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";

const DOC_NOMINATED_NODE_NAME: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";

const DOC_POD_IP: &str =
    "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";

const DOC_READINESS_GATES: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";
