//! Server-side table printing: the `meta.k8s.io/v1` `Table` objects that `kubectl get` asks for.
//!
//! `kubectl get` sends `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` and prints whatever columns
//! the server returns, so the text users see is decided here, not in kubectl. This module reproduces
//! kube-apiserver's printers (`pkg/printers/internalversion/printers.go` and the helpers it calls:
//! `duration.HumanDuration`, `labels.FormatLabels`, `metav1.FormatLabelSelector`, ...) for the kinds svcnet
//! serves, and the generic convertor (`registry/rest/table.go`) for every other kind.
//!
//! Objects are read as the JSON the API stores (`serde_json::Value`), never deserialized into typed
//! structs: a missing or oddly typed field yields the same text kube would print for an unset field
//! instead of an error, so a table can always be produced.
//!
//! Two server-side facts shape the API:
//! - kube-apiserver always generates the *wide* table (`GenerateOptions{Wide: true}`); kubectl hides the
//!   `priority: 1` columns unless `-o wide`. So [`row_cells`] always returns every column, and
//!   load-balancer addresses are never clipped (clipping only happens for non-wide output).
//! - kube decodes stored objects with defaulting before printing, so the few defaults that show up in
//!   cells (Service `type` and port `protocol`, Deployment/ReplicaSet `replicas`, Namespace `phase`) are
//!   applied here when the stored JSON lacks them.

use std::collections::{BTreeSet, HashMap};

use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value, json};

/// Which object each table row carries, the `includeObject` query parameter of a Table request
/// (`metav1.IncludeObjectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum IncludeObject {
    /// `None`: rows carry `"object": null`.
    None,
    /// `Metadata` (the default): rows carry a `meta.k8s.io/v1` `PartialObjectMetadata`.
    #[default]
    Metadata,
    /// `Object`: rows carry the whole object.
    Object,
}

impl IncludeObject {
    /// Parses the `includeObject` query value as kube does: empty means `Metadata`; an unknown value
    /// gives `None` (kube answers 400 `unrecognized includeObject value: "<value>"`).
    pub fn from_query(value: &str) -> Option<IncludeObject> {
        match value {
            "" | "Metadata" => Some(IncludeObject::Metadata),
            "None" => Some(IncludeObject::None),
            "Object" => Some(IncludeObject::Object),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Column descriptions. These are the `SwaggerDoc()` strings kube puts in `description` (from
// k8s.io/api and k8s.io/apimachinery v0.33 `types_swagger_doc_generated.go`, including the types kube
// quotes even where newer API versions exist, e.g. extensions/v1beta1 for ReplicaSet and Deployment).
// ---------------------------------------------------------------------------------------------------

const DOC_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const DOC_CREATION_TIMESTAMP: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const DOC_POD_IP: &str =
    "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";
const DOC_NOMINATED_NODE_NAME: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";
const DOC_NODE_NAME: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";
const DOC_READINESS_GATES: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";
const DOC_RS_SPEC_REPLICAS: &str = "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const DOC_RS_SPEC_SELECTOR: &str = "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
const DOC_RS_STATUS_REPLICAS: &str = "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
const DOC_RS_STATUS_READY: &str =
    "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.";
const DOC_SVC_TYPE: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
const DOC_SVC_CLUSTER_IP: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const DOC_SVC_EXTERNAL_IPS: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";
const DOC_SVC_PORTS: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
const DOC_SVC_SELECTOR: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";
const DOC_ENDPOINTS_SUBSETS: &str = "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.";
const DOC_KUBELET_VERSION: &str = "Kubelet Version reported by the node.";
const DOC_OS_IMAGE: &str =
    "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
const DOC_KERNEL_VERSION: &str =
    "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";
const DOC_CONTAINER_RUNTIME_VERSION: &str =
    "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";
const DOC_NODE_ADDRESSES: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
const DOC_EVENT_LAST_TIMESTAMP: &str =
    "The time at which the most recent occurrence of this event was recorded.";
const DOC_EVENT_TYPE: &str = "Type of this event (Normal, Warning), new types could be added in the future";
const DOC_EVENT_REASON: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";
const DOC_EVENT_INVOLVED_OBJECT: &str = "The object that this event is about.";
const DOC_EVENT_FIELD_PATH: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
const DOC_EVENT_SOURCE: &str =
    "The component reporting this event. Should be a short machine understandable string.";
const DOC_EVENT_MESSAGE: &str = "A human-readable description of the status of this operation.";
const DOC_EVENT_FIRST_TIMESTAMP: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
const DOC_EVENT_COUNT: &str = "The number of times this event has occurred.";
const DOC_DEPLOY_UPDATED: &str =
    "Total number of non-terminating pods targeted by this deployment that have the desired template spec.";
const DOC_DEPLOY_AVAILABLE: &str = "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.";
const DOC_DEPLOY_SELECTOR: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.";
const DOC_LEASE_HOLDER: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";
const DOC_SLICE_ADDRESS_TYPE: &str = "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name.";
const DOC_SLICE_PORTS: &str = "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. When ports is empty, it indicates that there are no defined ports. When a port is defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 ports.";
const DOC_SLICE_ENDPOINTS: &str = "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.";
const DOC_CONTAINERS: &str = "Names of each container in the template.";
const DOC_IMAGES: &str = "Images referenced by each container in the template.";
const DOC_READY_PODS: &str = "Number of the pod with ready state";

/// One `TableColumnDefinition`.
struct Column {
    name: &'static str,
    ty: &'static str,
    format: &'static str,
    description: &'static str,
    priority: i32,
}

/// A column shown by default.
const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

/// A column kubectl shows only with `-o wide`.
const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 1,
    }
}

/// The `Name` column every printer starts with; `format: name` tells clients it identifies the row.
const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    description: DOC_NAME,
    priority: 0,
};
const AGE: Column = col("Age", "string", DOC_CREATION_TIMESTAMP);

const NAMESPACE_COLUMNS: &[Column] = &[NAME, col("Status", "string", "The status of the namespace"), AGE];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", DOC_SVC_TYPE),
    col("Cluster-IP", "string", DOC_SVC_CLUSTER_IP),
    col("External-IP", "string", DOC_SVC_EXTERNAL_IPS),
    col("Port(s)", "string", DOC_SVC_PORTS),
    AGE,
    wide("Selector", "string", DOC_SVC_SELECTOR),
];

const ENDPOINTS_COLUMNS: &[Column] = &[NAME, col("Endpoints", "string", DOC_ENDPOINTS_SUBSETS), AGE];

const POD_COLUMNS: &[Column] = &[
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

const NODE_COLUMNS: &[Column] = &[
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

const EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "string", DOC_EVENT_LAST_TIMESTAMP),
    col("Type", "string", DOC_EVENT_TYPE),
    col("Reason", "string", DOC_EVENT_REASON),
    col("Object", "string", DOC_EVENT_INVOLVED_OBJECT),
    wide("Subobject", "string", DOC_EVENT_FIELD_PATH),
    wide("Source", "string", DOC_EVENT_SOURCE),
    col("Message", "string", DOC_EVENT_MESSAGE),
    wide("First Seen", "string", DOC_EVENT_FIRST_TIMESTAMP),
    wide("Count", "string", DOC_EVENT_COUNT),
    Column {
        name: "Name",
        ty: "string",
        format: "name",
        description: DOC_NAME,
        priority: 1,
    },
];

const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col("AddressType", "string", DOC_SLICE_ADDRESS_TYPE),
    col("Ports", "string", DOC_SLICE_PORTS),
    col("Endpoints", "string", DOC_SLICE_ENDPOINTS),
    AGE,
];

const LEASE_COLUMNS: &[Column] = &[NAME, col("Holder", "string", DOC_LEASE_HOLDER), AGE];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", DOC_READY_PODS),
    col("Up-to-date", "string", DOC_DEPLOY_UPDATED),
    col("Available", "string", DOC_DEPLOY_AVAILABLE),
    AGE,
    wide("Containers", "string", DOC_CONTAINERS),
    wide("Images", "string", DOC_IMAGES),
    wide("Selector", "string", DOC_DEPLOY_SELECTOR),
];

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", DOC_RS_SPEC_REPLICAS),
    col("Current", "integer", DOC_RS_STATUS_REPLICAS),
    col("Ready", "integer", DOC_RS_STATUS_READY),
    AGE,
    wide("Containers", "string", DOC_CONTAINERS),
    wide("Images", "string", DOC_IMAGES),
    wide("Selector", "string", DOC_RS_SPEC_SELECTOR),
];

/// kube's default table convertor (`rest.NewDefaultTableConvertor`), used for kinds without a printer.
const DEFAULT_COLUMNS: &[Column] = &[NAME, col("Created At", "date", DOC_CREATION_TIMESTAMP)];

/// The printer kube registers for a group and kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Printer {
    Namespace,
    Service,
    Endpoints,
    Pod,
    Node,
    Event,
    /// `events.k8s.io` Events: kube prints them with the core Event printer (both share one internal
    /// type), so only the field names differ.
    EventsV1Event,
    EndpointSlice,
    Lease,
    Deployment,
    ReplicaSet,
    Default,
}

fn printer(group: &str, kind: &str) -> Printer {
    match (group, kind) {
        ("", "Namespace") => Printer::Namespace,
        ("", "Service") => Printer::Service,
        ("", "Endpoints") => Printer::Endpoints,
        ("", "Pod") => Printer::Pod,
        ("", "Node") => Printer::Node,
        ("", "Event") => Printer::Event,
        ("events.k8s.io", "Event") => Printer::EventsV1Event,
        ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
        ("coordination.k8s.io", "Lease") => Printer::Lease,
        ("apps", "Deployment") => Printer::Deployment,
        ("apps", "ReplicaSet") => Printer::ReplicaSet,
        _ => Printer::Default,
    }
}

impl Printer {
    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Namespace => NAMESPACE_COLUMNS,
            Printer::Service => SERVICE_COLUMNS,
            Printer::Endpoints => ENDPOINTS_COLUMNS,
            Printer::Pod => POD_COLUMNS,
            Printer::Node => NODE_COLUMNS,
            Printer::Event | Printer::EventsV1Event => EVENT_COLUMNS,
            Printer::EndpointSlice => ENDPOINT_SLICE_COLUMNS,
            Printer::Lease => LEASE_COLUMNS,
            Printer::Deployment => DEPLOYMENT_COLUMNS,
            Printer::ReplicaSet => REPLICA_SET_COLUMNS,
            Printer::Default => DEFAULT_COLUMNS,
        }
    }
}

/// Column definitions (name, type, format, description, priority) as `meta.k8s.io/v1`
/// `TableColumnDefinition` JSON, in kube's order. Wide-only columns have `priority: 1`. Kinds without a
/// kube printer get the default convertor's `Name` and `Created At` columns.
pub fn column_definitions(group: &str, kind: &str) -> Vec<Value> {
    printer(group, kind)
        .columns()
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.ty,
                "format": c.format,
                "description": c.description,
                "priority": c.priority,
            })
        })
        .collect()
}

/// One row's cells, in column order (always including the wide columns, as kube-apiserver does);
/// `now` is the server's current time, from which ages are computed.
pub fn row_cells(group: &str, kind: &str, obj: &Value, now: Timestamp) -> Vec<Value> {
    match printer(group, kind) {
        Printer::Namespace => namespace_cells(obj, now),
        Printer::Service => service_cells(obj, now),
        Printer::Endpoints => endpoints_cells(obj, now),
        Printer::Pod => pod_cells(obj, now),
        Printer::Node => node_cells(obj, now),
        Printer::Event => event_cells(&EventFields::CORE, obj, now),
        Printer::EventsV1Event => event_cells(&EventFields::EVENTS_V1, obj, now),
        Printer::EndpointSlice => endpoint_slice_cells(obj, now),
        Printer::Lease => lease_cells(obj, now),
        Printer::Deployment => deployment_cells(obj, now),
        Printer::ReplicaSet => replica_set_cells(obj, now),
        Printer::Default => default_cells(obj),
    }
}

/// A row's `conditions` (`TableRowCondition` JSON). Only Pods have any: a `Completed` condition once
/// the pod Succeeded or Failed, which clients may use to de-emphasize the row.
pub fn row_conditions(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    if printer(group, kind) != Printer::Pod {
        return Vec::new();
    }
    let (reason, message) = match str_at(obj, &["status", "phase"]) {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return Vec::new(),
    };
    vec![json!({"type": "Completed", "status": "True", "reason": reason, "message": message})]
}

/// The whole `meta.k8s.io/v1` `Table` for `objects`: `columnDefinitions` and one row per object with
/// `cells`, `conditions` (when there are any) and `object` as `include_object` asks.
///
/// `metadata` is left as `{}` for the caller to fill (`resourceVersion`, `continue`). Like kube, an
/// empty list of a printed kind gives `"rows": []` while the default convertor gives `"rows": null`.
pub fn table(
    group: &str,
    kind: &str,
    objects: &[&Value],
    include_object: IncludeObject,
    now: Timestamp,
) -> Value {
    let rows = if objects.is_empty() && printer(group, kind) == Printer::Default {
        Value::Null
    } else {
        Value::Array(
            objects
                .iter()
                .map(|obj| {
                    let mut row = Map::new();
                    row.insert("cells".into(), Value::Array(row_cells(group, kind, obj, now)));
                    let conditions = row_conditions(group, kind, obj);
                    if !conditions.is_empty() {
                        row.insert("conditions".into(), Value::Array(conditions));
                    }
                    let object = match include_object {
                        IncludeObject::None => Value::Null,
                        IncludeObject::Metadata => partial_object_metadata(obj),
                        IncludeObject::Object => (*obj).clone(),
                    };
                    row.insert("object".into(), object);
                    Value::Object(row)
                })
                .collect(),
        )
    };
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": column_definitions(group, kind),
        "rows": rows,
    })
}

/// `ObjectMeta` fields in Go struct order with whether they are `omitempty`; kube re-encodes metadata
/// through this struct, so unknown fields vanish and empty ones are dropped (except
/// `creationTimestamp`, which Go always writes, as `null` when unset).
const OBJECT_META_FIELDS: &[(&str, bool)] = &[
    ("name", true),
    ("generateName", true),
    ("namespace", true),
    ("selfLink", true),
    ("uid", true),
    ("resourceVersion", true),
    ("generation", true),
    ("creationTimestamp", false),
    ("deletionTimestamp", true),
    ("deletionGracePeriodSeconds", true),
    ("labels", true),
    ("annotations", true),
    ("ownerReferences", true),
    ("finalizers", true),
    ("managedFields", true),
];

/// The `PartialObjectMetadata` kube puts in a row by default (`meta.AsPartialObjectMetadata`).
fn partial_object_metadata(obj: &Value) -> Value {
    let mut metadata = Map::new();
    let source = obj.get("metadata").and_then(Value::as_object);
    for &(field, omit_empty) in OBJECT_META_FIELDS {
        let value = source.and_then(|m| m.get(field)).cloned().unwrap_or(Value::Null);
        // Pointer fields (deletionTimestamp, deletionGracePeriodSeconds) are omitted only when nil;
        // value fields also when they hold their zero value.
        let pointer = matches!(field, "deletionTimestamp" | "deletionGracePeriodSeconds");
        let empty = match &value {
            Value::Null => true,
            Value::String(s) => s.is_empty() && !pointer,
            Value::Number(n) => n.as_f64() == Some(0.0) && !pointer,
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            Value::Bool(_) => false,
        };
        if omit_empty && empty {
            continue;
        }
        metadata.insert(field.into(), value);
    }
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
    })
}

// ---------------------------------------------------------------------------------------------------
// Durations and timestamps.
// ---------------------------------------------------------------------------------------------------

/// kube's `duration.HumanDuration`: a short text with about two significant units ("5s", "3m2s", "2d3h",
/// "4y12d"). Up to 2 s in the past counts as "0s" (tolerated clock skew); further in the past gives
/// `"<invalid>"`. Durations beyond Go's `time.Duration` range saturate to it, as Go's `time.Since` does.
pub fn human_duration(d: SignedDuration) -> String {
    // Go computes in int64 nanoseconds; saturate the same way.
    let nanos = d.as_nanos().clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    const SECOND: i64 = 1_000_000_000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;
    // `int(d.Seconds())` truncates toward zero, as integer division does.
    let seconds = nanos / SECOND;
    if seconds < -1 {
        return "<invalid>".to_string();
    } else if seconds < 0 {
        return "0s".to_string();
    } else if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = nanos / MINUTE;
    if minutes < 10 {
        let s = seconds % 60;
        if s == 0 {
            return format!("{minutes}m");
        }
        return format!("{minutes}m{s}s");
    } else if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = nanos / HOUR;
    if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            return format!("{hours}h");
        }
        format!("{hours}h{m}m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            return format!("{}d", hours / 24);
        }
        format!("{}d{}h", hours / 24, h)
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        if dy == 0 {
            return format!("{}y", hours / 24 / 365);
        }
        format!("{}y{}d", hours / 24 / 365, dy)
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// kube's `translateTimestampSince`: the age of `timestamp` at `now`, or `"<unknown>"` for an unset
/// (zero) timestamp.
pub fn translate_timestamp_since(timestamp: Option<Timestamp>, now: Timestamp) -> String {
    match timestamp {
        None => "<unknown>".to_string(),
        Some(t) => human_duration(now.duration_since(t)),
    }
}

/// Go's zero `time.Time` (0001-01-01T00:00:00Z), which `metav1.Time` treats as unset.
const GO_ZERO_TIME_SECONDS: i64 = -62_135_596_800;

/// Parses a `metav1.Time`/`MicroTime` field; `None` when unset, zero or unparsable (all of which kube
/// prints as an unset time).
fn time_at(v: &Value, path: &[&str]) -> Option<Timestamp> {
    let t: Timestamp = str_at(v, path).parse().ok()?;
    if t.as_second() == GO_ZERO_TIME_SECONDS && t.subsec_nanosecond() == 0 {
        return None;
    }
    Some(t)
}

fn age(obj: &Value, now: Timestamp) -> Value {
    Value::String(translate_timestamp_since(
        time_at(obj, &["metadata", "creationTimestamp"]),
        now,
    ))
}

// ---------------------------------------------------------------------------------------------------
// JSON access helpers: absent, null and mistyped fields all read as Go's zero value.
// ---------------------------------------------------------------------------------------------------

fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for key in path {
        cur = cur.get(key)?;
    }
    if cur.is_null() { None } else { Some(cur) }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> &'a str {
    at(v, path).and_then(Value::as_str).unwrap_or("")
}

fn arr_at<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn int_at(v: &Value, path: &[&str]) -> Option<i64> {
    let value = at(v, path)?;
    value
        .as_i64()
        .or_else(|| value.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
}

fn bool_at(v: &Value, path: &[&str]) -> Option<bool> {
    at(v, path).and_then(Value::as_bool)
}

fn name(obj: &Value) -> Value {
    Value::String(str_at(obj, &["metadata", "name"]).to_string())
}

fn or_placeholder(s: &str, placeholder: &str) -> String {
    if s.is_empty() {
        placeholder.to_string()
    } else {
        s.to_string()
    }
}

// ---------------------------------------------------------------------------------------------------
// Label helpers (`labels.FormatLabels`, `metav1.LabelSelectorAsSelector`).
// ---------------------------------------------------------------------------------------------------

/// `labels.FormatLabels`: sorted `k=v` pairs joined by commas, or "<none>".
fn format_labels(map: Option<&Value>) -> String {
    let mut pairs: Vec<String> = map
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect()
        })
        .unwrap_or_default();
    pairs.sort();
    if pairs.is_empty() {
        "<none>".to_string()
    } else {
        pairs.join(",")
    }
}

/// `metav1.LabelSelectorAsSelector(sel).String()`; `Err` where kube's conversion fails (invalid keys,
/// values or operators). A nil or empty selector prints as "".
fn label_selector_string(selector: Option<&Value>) -> Result<String, ()> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else {
        return Ok(String::new());
    };
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    let expressions = arr_at(selector, &["matchExpressions"]);
    if match_labels.map_or(0, Map::len) + expressions.len() == 0 {
        return Ok(String::new());
    }
    // (key, rendered requirement); kube sorts requirements by key only.
    let mut requirements: Vec<(String, String)> = Vec::new();
    for (key, value) in match_labels.into_iter().flatten() {
        let value = value.as_str().ok_or(())?;
        if !is_qualified_name(key) || !is_valid_label_value(value) {
            return Err(());
        }
        requirements.push((key.clone(), format!("{key}={value}")));
    }
    for expr in expressions {
        let key = str_at(expr, &["key"]);
        if !is_qualified_name(key) {
            return Err(());
        }
        let mut values = Vec::new();
        for v in arr_at(expr, &["values"]) {
            let v = v.as_str().ok_or(())?;
            if !is_valid_label_value(v) {
                return Err(());
            }
            values.push(v);
        }
        let rendered = match str_at(expr, &["operator"]) {
            op @ ("In" | "NotIn") => {
                if values.is_empty() {
                    return Err(());
                }
                let word = if op == "In" { "in" } else { "notin" };
                // More than one value prints sorted (without deduplication), like kube's safeSort.
                values.sort_unstable();
                format!("{key} {word} ({})", values.join(","))
            }
            "Exists" if values.is_empty() => key.to_string(),
            "DoesNotExist" if values.is_empty() => format!("!{key}"),
            _ => return Err(()),
        };
        requirements.push((key.to_string(), rendered));
    }
    // Go's sort.Sort is an insertion sort (stable) for the handful of requirements a selector has.
    requirements.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(requirements
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join(","))
}

/// `metav1.FormatLabelSelector`: "<none>" for an empty selector and "<error>" for an invalid one.
fn format_label_selector(selector: Option<&Value>) -> String {
    match label_selector_string(selector) {
        Err(()) => "<error>".to_string(),
        Ok(s) if s.is_empty() => "<none>".to_string(),
        Ok(s) => s,
    }
}

/// `validation.IsQualifiedName`: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters matching `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn is_qualified_name(value: &str) -> bool {
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if !is_dns1123_subdomain(prefix) {
                return false;
            }
            *name
        }
        _ => return false,
    };
    !name.is_empty() && name.len() <= 63 && is_qualified_name_part(name)
}

fn is_qualified_name_part(s: &str) -> bool {
    let bytes = s.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    first.is_ascii_alphanumeric()
        && last.is_ascii_alphanumeric()
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `validation.IsValidLabelValue`: empty, or at most 63 characters shaped like a qualified name part.
fn is_valid_label_value(value: &str) -> bool {
    value.is_empty() || (value.len() <= 63 && is_qualified_name_part(value))
}

/// `validation.IsDNS1123Subdomain`: at most 253 characters of dot-separated lowercase RFC 1123 labels.
fn is_dns1123_subdomain(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 253
        && value.split('.').all(|label| {
            let b = label.as_bytes();
            match (b.first(), b.last()) {
                (Some(f), Some(l)) => {
                    (f.is_ascii_lowercase() || f.is_ascii_digit())
                        && (l.is_ascii_lowercase() || l.is_ascii_digit())
                        && b.iter()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                }
                _ => false,
            }
        })
}

/// `layoutContainerCells`: container names and images, each joined by commas.
fn container_cells(containers: &[Value]) -> (String, String) {
    let names: Vec<&str> = containers.iter().map(|c| str_at(c, &["name"])).collect();
    let images: Vec<&str> = containers.iter().map(|c| str_at(c, &["image"])).collect();
    (names.join(","), images.join(","))
}

/// Go's `net.JoinHostPort`: IPv6 hosts get brackets.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// `listWithMoreString`: the first entries, "+ N more..." when truncated, "<unset>" when empty.
fn list_with_more(list: &[String], more: bool, count: usize, max: usize) -> String {
    let joined = list.join(",");
    if more {
        return format!("{joined} + {} more...", count - max);
    }
    if joined.is_empty() {
        "<unset>".to_string()
    } else {
        joined
    }
}

// ---------------------------------------------------------------------------------------------------
// Printers.
// ---------------------------------------------------------------------------------------------------

fn default_cells(obj: &Value) -> Vec<Value> {
    // Go formats the zero time too, so an unset creationTimestamp prints as year 1. `{:.0}` is RFC 3339
    // in UTC without fractional seconds, Go's `time.RFC3339` layout.
    let created = time_at(obj, &["metadata", "creationTimestamp"])
        .unwrap_or_else(|| Timestamp::from_second(GO_ZERO_TIME_SECONDS).unwrap_or(Timestamp::UNIX_EPOCH));
    vec![name(obj), Value::String(format!("{created:.0}"))]
}

fn namespace_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // Decoding defaults an unset phase to Active.
    let phase = or_placeholder(str_at(obj, &["status", "phase"]), "Active");
    vec![name(obj), Value::String(phase), age(obj, now)]
}

fn service_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // Decoding defaults an unset type to ClusterIP.
    let svc_type = or_placeholder(str_at(obj, &["spec", "type"]), "ClusterIP");
    // kube reads spec.clusterIPs[0]; storage keeps clusterIP and clusterIPs in step, so fall back to
    // clusterIP for objects written without the plural field.
    let cluster_ip = arr_at(obj, &["spec", "clusterIPs"])
        .first()
        .and_then(Value::as_str)
        .unwrap_or_else(|| str_at(obj, &["spec", "clusterIP"]));
    let ports: Vec<String> = arr_at(obj, &["spec", "ports"])
        .iter()
        .map(|p| {
            let port = int_at(p, &["port"]).unwrap_or(0);
            let protocol = or_placeholder(str_at(p, &["protocol"]), "TCP");
            match int_at(p, &["nodePort"]).unwrap_or(0) {
                node_port if node_port > 0 => format!("{port}:{node_port}/{protocol}"),
                _ => format!("{port}/{protocol}"),
            }
        })
        .collect();
    vec![
        name(obj),
        Value::String(svc_type.clone()),
        Value::String(or_placeholder(cluster_ip, "<none>")),
        Value::String(service_external_ip(obj, &svc_type)),
        Value::String(or_placeholder(&ports.join(","), "<none>")),
        age(obj, now),
        Value::String(format_labels(at(obj, &["spec", "selector"]))),
    ]
}

/// `getServiceExternalIP` for wide output (the server always prints wide, so nothing is clipped).
fn service_external_ip(obj: &Value, svc_type: &str) -> String {
    let external_ips: Vec<&str> = arr_at(obj, &["spec", "externalIPs"])
        .iter()
        .map(|v| v.as_str().unwrap_or(""))
        .collect();
    match svc_type {
        "ClusterIP" | "NodePort" => {
            if external_ips.is_empty() {
                "<none>".to_string()
            } else {
                external_ips.join(",")
            }
        }
        "LoadBalancer" => {
            // loadBalancerStatusStringer: the set of ingress IPs (or hostnames), sorted.
            let ingress: BTreeSet<&str> = arr_at(obj, &["status", "loadBalancer", "ingress"])
                .iter()
                .filter_map(|i| {
                    let ip = str_at(i, &["ip"]);
                    let hostname = str_at(i, &["hostname"]);
                    if !ip.is_empty() {
                        Some(ip)
                    } else if !hostname.is_empty() {
                        Some(hostname)
                    } else {
                        None
                    }
                })
                .collect();
            let mut all: Vec<&str> = ingress.into_iter().collect();
            all.extend(external_ips);
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => str_at(obj, &["spec", "externalName"]).to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn endpoints_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(obj), Value::String(format_endpoints(obj)), age(obj, now)]
}

/// `formatEndpoints` with all ports: up to three `ip:port`s, then "+ N more...".
fn format_endpoints(obj: &Value) -> String {
    let subsets = arr_at(obj, &["subsets"]);
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    const MAX: usize = 3;
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for subset in subsets {
        let addresses = arr_at(subset, &["addresses"]);
        let ports = arr_at(subset, &["ports"]);
        if ports.is_empty() {
            // Headless services may have no ports: list bare IPs.
            count += addresses.len();
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(address, &["ip"]).to_string());
            }
            continue;
        }
        for port in ports {
            count += addresses.len();
            let port = int_at(port, &["port"]).unwrap_or(0);
            for address in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(address, &["ip"]), port));
            }
        }
    }
    let joined = list.join(",");
    if more {
        format!("{joined} + {} more...", count - MAX)
    } else {
        joined
    }
}

fn endpoint_slice_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    const MAX: usize = 3;
    // formatDiscoveryPorts: the port number, else its name, else "*" (all ports).
    let ports = arr_at(obj, &["ports"]);
    let port_list: Vec<String> = ports
        .iter()
        .take(MAX)
        .map(|p| match (int_at(p, &["port"]), at(p, &["name"])) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name.as_str().unwrap_or("").to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    let ports_text = list_with_more(&port_list, ports.len() > MAX, ports.len(), MAX);
    // formatDiscoveryEndpoints: all addresses of all endpoints.
    let addresses: Vec<&Value> = arr_at(obj, &["endpoints"])
        .iter()
        .flat_map(|e| arr_at(e, &["addresses"]))
        .collect();
    let address_list: Vec<String> = addresses
        .iter()
        .take(MAX)
        .map(|a| a.as_str().unwrap_or("").to_string())
        .collect();
    let endpoints_text = list_with_more(&address_list, addresses.len() > MAX, addresses.len(), MAX);
    vec![
        name(obj),
        Value::String(str_at(obj, &["addressType"]).to_string()),
        Value::String(ports_text),
        Value::String(endpoints_text),
        age(obj, now),
    ]
}

fn lease_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(obj),
        Value::String(str_at(obj, &["spec", "holderIdentity"]).to_string()),
        age(obj, now),
    ]
}

fn deployment_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // Decoding defaults an unset replicas to 1.
    let desired = int_at(obj, &["spec", "replicas"]).unwrap_or(1);
    let ready = int_at(obj, &["status", "readyReplicas"]).unwrap_or(0);
    let updated = int_at(obj, &["status", "updatedReplicas"]).unwrap_or(0);
    let available = int_at(obj, &["status", "availableReplicas"]).unwrap_or(0);
    let (containers, images) = container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]));
    // Unlike ReplicaSet, the Deployment printer shows an empty selector as "" and an invalid one as
    // "<invalid>".
    let selector =
        label_selector_string(at(obj, &["spec", "selector"])).unwrap_or_else(|()| "<invalid>".into());
    vec![
        name(obj),
        Value::String(format!("{ready}/{desired}")),
        json!(updated),
        json!(available),
        age(obj, now),
        Value::String(containers),
        Value::String(images),
        Value::String(selector),
    ]
}

fn replica_set_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // Decoding defaults an unset replicas to 1.
    let desired = int_at(obj, &["spec", "replicas"]).unwrap_or(1);
    let current = int_at(obj, &["status", "replicas"]).unwrap_or(0);
    let ready = int_at(obj, &["status", "readyReplicas"]).unwrap_or(0);
    let (containers, images) = container_cells(arr_at(obj, &["spec", "template", "spec", "containers"]));
    vec![
        name(obj),
        json!(desired),
        json!(current),
        json!(ready),
        age(obj, now),
        Value::String(containers),
        Value::String(images),
        Value::String(format_label_selector(at(obj, &["spec", "selector"]))),
    ]
}

fn node_cells(obj: &Value, now: Timestamp) -> Vec<Value> {
    // Only the Ready condition counts; with several, the last one wins (kube builds a map).
    let ready = arr_at(obj, &["status", "conditions"])
        .iter()
        .rev()
        .find(|c| str_at(c, &["type"]) == "Ready")
        .map(|c| str_at(c, &["status"]) == "True");
    let mut status = vec![match ready {
        Some(true) => "Ready",
        Some(false) => "NotReady",
        None => "Unknown",
    }];
    if bool_at(obj, &["spec", "unschedulable"]).unwrap_or(false) {
        status.push("SchedulingDisabled");
    }
    let mut roles = BTreeSet::new();
    if let Some(labels) = at(obj, &["metadata", "labels"]).and_then(Value::as_object) {
        for (key, value) in labels {
            if let Some(role) = key.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if key == "kubernetes.io/role" {
                let value = value.as_str().unwrap_or("");
                if !value.is_empty() {
                    roles.insert(value.to_string());
                }
            }
        }
    }
    let roles = or_placeholder(&roles.into_iter().collect::<Vec<_>>().join(","), "<none>");
    let address = |kind: &str| {
        arr_at(obj, &["status", "addresses"])
            .iter()
            .find(|a| str_at(a, &["type"]) == kind)
            .map(|a| str_at(a, &["address"]).to_string())
            .unwrap_or_else(|| "<none>".to_string())
    };
    let info = |field: &str| or_placeholder(str_at(obj, &["status", "nodeInfo", field]), "<unknown>");
    vec![
        name(obj),
        Value::String(status.join(",")),
        Value::String(roles),
        age(obj, now),
        Value::String(str_at(obj, &["status", "nodeInfo", "kubeletVersion"]).to_string()),
        Value::String(address("InternalIP")),
        Value::String(address("ExternalIP")),
        Value::String(info("osImage")),
        Value::String(info("kernelVersion")),
        Value::String(info("containerRuntimeVersion")),
    ]
}

/// Where the Event printer's inputs live: core/v1 and events.k8s.io/v1 name them differently.
struct EventFields {
    involved_object: &'static str,
    message: &'static str,
    source: &'static str,
    first_timestamp: &'static str,
    last_timestamp: &'static str,
    count: &'static str,
}

impl EventFields {
    const CORE: EventFields = EventFields {
        involved_object: "involvedObject",
        message: "message",
        source: "source",
        first_timestamp: "firstTimestamp",
        last_timestamp: "lastTimestamp",
        count: "count",
    };
    const EVENTS_V1: EventFields = EventFields {
        involved_object: "regarding",
        message: "note",
        source: "deprecatedSource",
        first_timestamp: "deprecatedFirstTimestamp",
        last_timestamp: "deprecatedLastTimestamp",
        count: "deprecatedCount",
    };
}

fn event_cells(f: &EventFields, obj: &Value, now: Timestamp) -> Vec<Value> {
    let first_seen = match time_at(obj, &[f.first_timestamp]) {
        Some(t) => translate_timestamp_since(Some(t), now),
        None => translate_timestamp_since(time_at(obj, &["eventTime"]), now),
    };
    let mut last_seen = match time_at(obj, &[f.last_timestamp]) {
        Some(t) => translate_timestamp_since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = int_at(obj, &[f.count]).unwrap_or(0);
    if at(obj, &["series"]).is_some() {
        last_seen = translate_timestamp_since(time_at(obj, &["series", "lastObservedTime"]), now);
        count = int_at(obj, &["series", "count"]).unwrap_or(0);
    } else if count == 0 {
        // Singleton events of the new API carry no count.
        count = 1;
    }
    let kind = str_at(obj, &[f.involved_object, "kind"]).to_lowercase();
    let involved_name = str_at(obj, &[f.involved_object, "name"]);
    let target = if involved_name.is_empty() {
        kind
    } else {
        format!("{kind}/{involved_name}")
    };
    // formatEventSource: component (or reportingController), then ", host" (or reportingInstance).
    let first_non_empty = |a: &'static str, b: &'static str| {
        let v = str_at(obj, &[f.source, a]);
        if v.is_empty() { str_at(obj, &[b]) } else { v }
    };
    let component = first_non_empty("component", "reportingController");
    let instance = first_non_empty("host", "reportingInstance");
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };
    vec![
        Value::String(last_seen),
        Value::String(str_at(obj, &["type"]).to_string()),
        Value::String(str_at(obj, &["reason"]).to_string()),
        Value::String(target),
        Value::String(str_at(obj, &[f.involved_object, "fieldPath"]).to_string()),
        Value::String(source),
        Value::String(str_at(obj, &[f.message]).trim().to_string()),
        Value::String(first_seen),
        json!(count),
        name(obj),
    ]
}

/// True when a container state (`state`/`lastState`) has the given member set, e.g. `terminated`.
fn state<'a>(container: &'a Value, which: &str, member: &str) -> Option<&'a Value> {
    at(container, &[which, member]).filter(|v| v.is_object())
}

fn pod_condition_true(pod: &Value, condition_type: &str) -> bool {
    arr_at(pod, &["status", "conditions"])
        .iter()
        .any(|c| str_at(c, &["type"]) == condition_type && str_at(c, &["status"]) == "True")
}

fn pod_cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let init_specs = arr_at(pod, &["spec", "initContainers"]);
    let mut total_containers = arr_at(pod, &["spec", "containers"]).len();
    let mut ready_containers = 0usize;
    let mut restarts: i64 = 0;
    let mut restartable_init_restarts: i64 = 0;
    // None stands for Go's zero time, which every real time is after.
    let mut last_restart: Option<Timestamp> = None;
    let mut last_restartable_init_restart: Option<Timestamp> = None;

    let phase = str_at(pod, &["status", "phase"]);
    let status_reason = str_at(pod, &["status", "reason"]);
    let mut reason = if status_reason.is_empty() {
        phase.to_string()
    } else {
        status_reason.to_string()
    };

    let conditions = arr_at(pod, &["status", "conditions"]);
    if conditions
        .iter()
        .any(|c| str_at(c, &["type"]) == "PodScheduled" && str_at(c, &["reason"]) == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    // Sidecars (init containers with restartPolicy Always) count as regular containers. By name, the
    // last spec entry wins, as in kube's map.
    let mut restartable: HashMap<&str, bool> = HashMap::new();
    for spec in init_specs {
        let always = str_at(spec, &["restartPolicy"]) == "Always";
        restartable.insert(str_at(spec, &["name"]), always);
        if always {
            total_containers += 1;
        }
    }

    let mut initializing = false;
    for (i, container) in arr_at(pod, &["status", "initContainerStatuses"])
        .iter()
        .enumerate()
    {
        let restart_count = int_at(container, &["restartCount"]).unwrap_or(0);
        restarts += restart_count;
        let finished = state(container, "lastState", "terminated").and_then(|t| time_at(t, &["finishedAt"]));
        last_restart = last_restart.max(finished);
        let is_restartable = restartable
            .get(str_at(container, &["name"]))
            .copied()
            .unwrap_or(false);
        if is_restartable {
            restartable_init_restarts += restart_count;
            last_restartable_init_restart = last_restartable_init_restart.max(finished);
        }
        let terminated = state(container, "state", "terminated");
        if terminated.is_some_and(|t| int_at(t, &["exitCode"]).unwrap_or(0) == 0) {
            continue;
        }
        if is_restartable && bool_at(container, &["started"]) == Some(true) {
            if bool_at(container, &["ready"]).unwrap_or(false) {
                ready_containers += 1;
            }
            continue;
        }
        let waiting_reason = state(container, "state", "waiting")
            .map(|w| str_at(w, &["reason"]))
            .unwrap_or("");
        reason = if let Some(t) = terminated {
            // Initialization failed.
            let term_reason = str_at(t, &["reason"]);
            if !term_reason.is_empty() {
                format!("Init:{term_reason}")
            } else if int_at(t, &["signal"]).unwrap_or(0) != 0 {
                format!("Init:Signal:{}", int_at(t, &["signal"]).unwrap_or(0))
            } else {
                format!("Init:ExitCode:{}", int_at(t, &["exitCode"]).unwrap_or(0))
            }
        } else if !waiting_reason.is_empty() && waiting_reason != "PodInitializing" {
            format!("Init:{waiting_reason}")
        } else {
            format!("Init:{i}/{}", init_specs.len())
        };
        initializing = true;
        break;
    }

    // kube's isPodInitializedConditionTrue looks at the first Initialized condition only.
    let initialized = conditions
        .iter()
        .find(|c| str_at(c, &["type"]) == "Initialized")
        .is_some_and(|c| str_at(c, &["status"]) == "True");
    if !initializing || initialized {
        restarts = restartable_init_restarts;
        last_restart = last_restartable_init_restart;
        let mut has_running = false;
        // Walk backwards so that the first container's reason is the one left standing.
        for container in arr_at(pod, &["status", "containerStatuses"]).iter().rev() {
            restarts += int_at(container, &["restartCount"]).unwrap_or(0);
            let finished =
                state(container, "lastState", "terminated").and_then(|t| time_at(t, &["finishedAt"]));
            last_restart = last_restart.max(finished);
            let waiting_reason = state(container, "state", "waiting")
                .map(|w| str_at(w, &["reason"]))
                .unwrap_or("");
            let terminated = state(container, "state", "terminated");
            if !waiting_reason.is_empty() {
                reason = waiting_reason.to_string();
            } else if let Some(t) = terminated {
                let term_reason = str_at(t, &["reason"]);
                reason = if !term_reason.is_empty() {
                    term_reason.to_string()
                } else if int_at(t, &["signal"]).unwrap_or(0) != 0 {
                    format!("Signal:{}", int_at(t, &["signal"]).unwrap_or(0))
                } else {
                    format!("ExitCode:{}", int_at(t, &["exitCode"]).unwrap_or(0))
                };
            } else if bool_at(container, &["ready"]).unwrap_or(false)
                && state(container, "state", "running").is_some()
            {
                has_running = true;
                ready_containers += 1;
            }
        }
        // A pod whose main container completed while a sidecar still runs is not "Completed".
        if reason == "Completed" && has_running {
            reason = if pod_condition_true(pod, "Ready") {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }

    if at(pod, &["metadata", "deletionTimestamp"]).is_some() {
        if status_reason == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Failed" && phase != "Succeeded" {
            reason = "Terminating".to_string();
        }
    }

    let restarts_text = match last_restart {
        Some(t) if restarts != 0 => format!("{restarts} ({} ago)", translate_timestamp_since(Some(t), now)),
        _ => restarts.to_string(),
    };

    // The v1 -> internal conversion makes status.podIP authoritative over status.podIPs.
    let pod_ip = str_at(pod, &["status", "podIP"]);
    let pod_ip = if pod_ip.is_empty() {
        arr_at(pod, &["status", "podIPs"])
            .first()
            .map(|p| str_at(p, &["ip"]))
            .unwrap_or("")
    } else {
        pod_ip
    };
    let gates = arr_at(pod, &["spec", "readinessGates"]);
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let true_conditions = gates
            .iter()
            .filter(|gate| {
                let wanted = str_at(gate, &["conditionType"]);
                // Only the first condition of that type counts.
                conditions
                    .iter()
                    .find(|c| str_at(c, &["type"]) == wanted)
                    .is_some_and(|c| str_at(c, &["status"]) == "True")
            })
            .count();
        format!("{true_conditions}/{}", gates.len())
    };

    vec![
        name(pod),
        Value::String(format!("{ready_containers}/{total_containers}")),
        Value::String(reason),
        Value::String(restarts_text),
        age(pod, now),
        Value::String(or_placeholder(pod_ip, "<none>")),
        Value::String(or_placeholder(str_at(pod, &["spec", "nodeName"]), "<none>")),
        Value::String(or_placeholder(
            str_at(pod, &["status", "nominatedNodeName"]),
            "<none>",
        )),
        Value::String(readiness_gates),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> Timestamp {
        "2024-05-01T12:00:00Z".parse().unwrap()
    }

    /// An RFC 3339 time `secs` seconds before [`now`].
    fn ago(secs: i64) -> String {
        (now() - SignedDuration::from_secs(secs)).to_string()
    }

    fn cells(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
        row_cells(group, kind, obj, now())
    }

    fn strs(cells: &[Value]) -> Vec<String> {
        cells
            .iter()
            .map(|c| c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string()))
            .collect()
    }

    fn names(group: &str, kind: &str) -> Vec<(String, i64)> {
        column_definitions(group, kind)
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["priority"].as_i64().unwrap(),
                )
            })
            .collect()
    }

    // ---- human_duration ----------------------------------------------------------------------------

    fn hd(secs: i64) -> String {
        human_duration(SignedDuration::from_secs(secs))
    }

    #[test]
    fn human_duration_seconds_and_skew() {
        assert_eq!(hd(0), "0s");
        assert_eq!(hd(5), "5s");
        assert_eq!(hd(119), "119s");
        assert_eq!(human_duration(SignedDuration::from_millis(-1999)), "0s");
        assert_eq!(hd(-1), "0s");
        assert_eq!(hd(-2), "<invalid>");
        assert_eq!(human_duration(SignedDuration::from_millis(119_999)), "119s");
    }

    #[test]
    fn human_duration_minutes() {
        assert_eq!(hd(120), "2m");
        assert_eq!(hd(182), "3m2s");
        assert_eq!(hd(599), "9m59s");
        assert_eq!(hd(600), "10m");
        assert_eq!(hd(601), "10m");
        assert_eq!(hd(3 * 3600 - 1), "179m");
    }

    #[test]
    fn human_duration_hours_days_years() {
        assert_eq!(hd(3 * 3600), "3h");
        assert_eq!(hd(3 * 3600 + 60 * 5), "3h5m");
        assert_eq!(hd(8 * 3600 - 1), "7h59m");
        assert_eq!(hd(8 * 3600), "8h");
        assert_eq!(hd(48 * 3600 - 1), "47h");
        assert_eq!(hd(48 * 3600), "2d");
        assert_eq!(hd(51 * 3600), "2d3h");
        assert_eq!(hd(8 * 86400 - 1), "7d23h");
        assert_eq!(hd(8 * 86400), "8d");
        assert_eq!(hd(2 * 365 * 86400 - 1), "729d");
        assert_eq!(hd(2 * 365 * 86400), "2y");
        assert_eq!(hd(2 * 365 * 86400 + 12 * 86400), "2y12d");
        assert_eq!(hd(8 * 365 * 86400 - 1), "7y364d");
        assert_eq!(hd(8 * 365 * 86400), "8y");
        assert_eq!(hd(100 * 365 * 86400), "100y");
    }

    #[test]
    fn human_duration_saturates_like_go() {
        assert_eq!(human_duration(SignedDuration::MAX), "292y");
        assert_eq!(human_duration(SignedDuration::MIN), "<invalid>");
    }

    #[test]
    fn translate_timestamp_since_unknown_and_known() {
        assert_eq!(translate_timestamp_since(None, now()), "<unknown>");
        assert_eq!(
            translate_timestamp_since(Some(now() - SignedDuration::from_secs(65)), now()),
            "65s"
        );
        // A creation time in the future beyond the skew tolerance.
        assert_eq!(
            translate_timestamp_since(Some(now() + SignedDuration::from_secs(10)), now()),
            "<invalid>"
        );
    }

    #[test]
    fn go_zero_time_is_unset() {
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "0001-01-01T00:00:00Z"}});
        assert_eq!(strs(&cells("", "Namespace", &obj))[2], "<unknown>");
        let obj = json!({"metadata": {"name": "x", "creationTimestamp": "garbage"}});
        assert_eq!(strs(&cells("", "Namespace", &obj))[2], "<unknown>");
    }

    // ---- IncludeObject ----------------------------------------------------------------------------

    #[test]
    fn include_object_parsing() {
        assert_eq!(IncludeObject::default(), IncludeObject::Metadata);
        assert_eq!(IncludeObject::from_query(""), Some(IncludeObject::Metadata));
        assert_eq!(
            IncludeObject::from_query("Metadata"),
            Some(IncludeObject::Metadata)
        );
        assert_eq!(IncludeObject::from_query("None"), Some(IncludeObject::None));
        assert_eq!(IncludeObject::from_query("Object"), Some(IncludeObject::Object));
        assert_eq!(IncludeObject::from_query("metadata"), None);
    }

    // ---- column definitions -----------------------------------------------------------------------

    #[test]
    fn column_definition_shape() {
        let cols = column_definitions("", "Service");
        assert_eq!(
            cols[0],
            json!({"name": "Name", "type": "string", "format": "name", "description": DOC_NAME, "priority": 0})
        );
        let keys: Vec<&String> = cols[1].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "type", "format", "description", "priority"]);
        assert_eq!(cols[5]["description"], DOC_CREATION_TIMESTAMP);
        assert!(DOC_CREATION_TIMESTAMP.contains("UTC.\n\nPopulated"));
    }

    #[test]
    fn columns_of_each_kind() {
        let n = |v: &[(&str, i64)]| v.iter().map(|(a, b)| (a.to_string(), *b)).collect::<Vec<_>>();
        assert_eq!(
            names("", "Namespace"),
            n(&[("Name", 0), ("Status", 0), ("Age", 0)])
        );
        assert_eq!(
            names("", "Service"),
            n(&[
                ("Name", 0),
                ("Type", 0),
                ("Cluster-IP", 0),
                ("External-IP", 0),
                ("Port(s)", 0),
                ("Age", 0),
                ("Selector", 1)
            ])
        );
        assert_eq!(
            names("", "Endpoints"),
            n(&[("Name", 0), ("Endpoints", 0), ("Age", 0)])
        );
        assert_eq!(
            names("", "Pod"),
            n(&[
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1)
            ])
        );
        assert_eq!(
            names("", "Node"),
            n(&[
                ("Name", 0),
                ("Status", 0),
                ("Roles", 0),
                ("Age", 0),
                ("Version", 0),
                ("Internal-IP", 1),
                ("External-IP", 1),
                ("OS-Image", 1),
                ("Kernel-Version", 1),
                ("Container-Runtime", 1)
            ])
        );
        assert_eq!(
            names("", "Event"),
            n(&[
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1)
            ])
        );
        assert_eq!(names("events.k8s.io", "Event"), names("", "Event"));
        assert_eq!(
            names("discovery.k8s.io", "EndpointSlice"),
            n(&[
                ("Name", 0),
                ("AddressType", 0),
                ("Ports", 0),
                ("Endpoints", 0),
                ("Age", 0)
            ])
        );
        assert_eq!(
            names("coordination.k8s.io", "Lease"),
            n(&[("Name", 0), ("Holder", 0), ("Age", 0)])
        );
        assert_eq!(
            names("apps", "Deployment"),
            n(&[
                ("Name", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1)
            ])
        );
        assert_eq!(
            names("apps", "ReplicaSet"),
            n(&[
                ("Name", 0),
                ("Desired", 0),
                ("Current", 0),
                ("Ready", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1)
            ])
        );
        assert_eq!(names("", "ConfigMap"), n(&[("Name", 0), ("Created At", 0)]));
        // The group matters: a Deployment in another group has no printer.
        assert_eq!(
            names("example.com", "Deployment"),
            n(&[("Name", 0), ("Created At", 0)])
        );
    }

    #[test]
    fn column_types_match_kube() {
        let types = |g, k| {
            column_definitions(g, k)
                .iter()
                .map(|c| c["type"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            types("apps", "ReplicaSet")[1..4],
            ["integer", "integer", "integer"]
        );
        assert_eq!(types("", "Pod")[3], "string");
        assert_eq!(types("", "ConfigMap")[1], "date");
        let event = column_definitions("", "Event");
        assert_eq!(event[9]["format"], "name");
        assert_eq!(event[9]["priority"], 1);
    }

    #[test]
    fn cells_match_column_count_for_every_kind_even_on_empty_objects() {
        let kinds = [
            ("", "Namespace"),
            ("", "Service"),
            ("", "Endpoints"),
            ("", "Pod"),
            ("", "Node"),
            ("", "Event"),
            ("events.k8s.io", "Event"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("coordination.k8s.io", "Lease"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("", "Secret"),
        ];
        let odd = [
            json!({}),
            json!(null),
            json!(42),
            json!({"metadata": 1, "spec": "x", "status": []}),
        ];
        for (group, kind) in kinds {
            for obj in &odd {
                assert_eq!(
                    cells(group, kind, obj).len(),
                    column_definitions(group, kind).len(),
                    "{group}/{kind} {obj}"
                );
            }
        }
    }

    #[test]
    fn mistyped_nested_fields_never_panic() {
        let odd = json!({
            "metadata": {"name": 5, "creationTimestamp": 7, "labels": ["x"], "deletionTimestamp": "soon"},
            "spec": {"containers": "x", "initContainers": [1, null, {"name": 2, "restartPolicy": true}],
                     "ports": [null, 1, {"port": "80", "nodePort": -5}], "selector": {"matchLabels": [1],
                     "matchExpressions": [null, {"key": 1}]}, "replicas": "3", "externalIPs": [1],
                     "readinessGates": [{}], "template": {"spec": {"containers": [null, {"image": 1}]}},
                     "clusterIPs": [null], "type": 1, "unschedulable": "yes", "holderIdentity": {}},
            "status": {"conditions": [null, {"type": 1}], "containerStatuses": [null, {"state": "x",
                       "lastState": {"terminated": "y"}, "restartCount": 1e300}],
                       "initContainerStatuses": [{"state": {"terminated": {"exitCode": "1"}}}, 3],
                       "loadBalancer": {"ingress": [1, {"ip": 2}]}, "podIPs": [3], "addresses": [null],
                       "nodeInfo": 1, "phase": ["Running"]},
            "subsets": [null, {"addresses": [null], "ports": [1]}],
            "ports": [null, {"port": null, "name": 3}], "endpoints": [{"addresses": [1, null]}],
            "involvedObject": "pod", "series": {"count": "2"}, "source": []
        });
        for (group, kind) in [
            ("", "Namespace"),
            ("", "Service"),
            ("", "Endpoints"),
            ("", "Pod"),
            ("", "Node"),
            ("", "Event"),
            ("events.k8s.io", "Event"),
            ("discovery.k8s.io", "EndpointSlice"),
            ("coordination.k8s.io", "Lease"),
            ("apps", "Deployment"),
            ("apps", "ReplicaSet"),
            ("", "ConfigMap"),
        ] {
            let t = table(group, kind, &[&odd], IncludeObject::Metadata, now());
            assert_eq!(
                t["rows"][0]["cells"].as_array().unwrap().len(),
                column_definitions(group, kind).len(),
                "{group}/{kind}"
            );
        }
    }

    // ---- default table ----------------------------------------------------------------------------

    #[test]
    fn default_table_cells() {
        let obj = json!({"metadata": {"name": "cm", "creationTimestamp": "2024-01-02T03:04:05.678Z"}});
        assert_eq!(
            cells("", "ConfigMap", &obj),
            vec![json!("cm"), json!("2024-01-02T03:04:05Z")]
        );
        let obj = json!({"metadata": {"name": "cm", "creationTimestamp": "2024-01-02T05:04:05+02:00"}});
        assert_eq!(strs(&cells("", "ConfigMap", &obj))[1], "2024-01-02T03:04:05Z");
        let obj = json!({"metadata": {"name": "cm"}});
        assert_eq!(strs(&cells("", "ConfigMap", &obj))[1], "0001-01-01T00:00:00Z");
    }

    // ---- Namespace ----------------------------------------------------------------------------------

    #[test]
    fn namespace_row() {
        let obj = json!({"metadata": {"name": "default", "creationTimestamp": ago(300)}, "status": {"phase": "Active"}});
        assert_eq!(strs(&cells("", "Namespace", &obj)), ["default", "Active", "5m"]);
        let obj = json!({"metadata": {"name": "gone", "creationTimestamp": ago(3600 * 50)}, "status": {"phase": "Terminating"}});
        assert_eq!(
            strs(&cells("", "Namespace", &obj)),
            ["gone", "Terminating", "2d2h"]
        );
        // Decoding defaults the phase.
        let obj = json!({"metadata": {"name": "new"}});
        assert_eq!(
            strs(&cells("", "Namespace", &obj)),
            ["new", "Active", "<unknown>"]
        );
    }

    // ---- Service ------------------------------------------------------------------------------------

    fn svc(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": ago(90)}, "spec": spec, "status": status})
    }

    #[test]
    fn service_cluster_ip() {
        let s = svc(
            json!({"type": "ClusterIP", "clusterIP": "10.0.0.10", "clusterIPs": ["10.0.0.10", "fd00::10"],
                   "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                   "selector": {"app": "web", "tier": "fe"}}),
            json!({}),
        );
        assert_eq!(
            strs(&cells("", "Service", &s)),
            [
                "web",
                "ClusterIP",
                "10.0.0.10",
                "<none>",
                "80/TCP,53/UDP",
                "90s",
                "app=web,tier=fe"
            ]
        );
    }

    #[test]
    fn service_headless_no_ports_no_selector() {
        let s = svc(
            json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}),
            json!({}),
        );
        assert_eq!(
            strs(&cells("", "Service", &s)),
            ["web", "ClusterIP", "None", "<none>", "<none>", "90s", "<none>"]
        );
    }

    #[test]
    fn service_external_ips_on_cluster_ip_and_node_port() {
        let s = svc(
            json!({"type": "NodePort", "clusterIPs": ["10.0.0.11"], "externalIPs": ["1.2.3.4", "5.6.7.8"],
                   "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]}),
            json!({}),
        );
        assert_eq!(
            strs(&cells("", "Service", &s))[1..5],
            ["NodePort", "10.0.0.11", "1.2.3.4,5.6.7.8", "80:30080/TCP,443/TCP"]
        );
        let s = svc(
            json!({"type": "NodePort", "clusterIPs": ["10.0.0.11"]}),
            json!({}),
        );
        assert_eq!(strs(&cells("", "Service", &s))[3], "<none>");
        let s = svc(
            json!({"type": "ClusterIP", "clusterIPs": ["10.0.0.11"], "externalIPs": ["9.9.9.9"]}),
            json!({}),
        );
        assert_eq!(strs(&cells("", "Service", &s))[3], "9.9.9.9");
    }

    #[test]
    fn service_load_balancer() {
        let pending = svc(
            json!({"type": "LoadBalancer", "clusterIPs": ["10.0.0.12"], "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}),
            json!({"loadBalancer": {}}),
        );
        assert_eq!(
            strs(&cells("", "Service", &pending))[3..5],
            ["<pending>", "443:31443/TCP"]
        );

        // Ingress IPs (or hostnames when no IP) are deduplicated and sorted, then spec.externalIPs
        // follow; the server never clips them.
        let ready = svc(
            json!({"type": "LoadBalancer", "clusterIPs": ["10.0.0.12"], "externalIPs": ["7.7.7.7"]}),
            json!({"loadBalancer": {"ingress": [
                {"ip": "203.0.113.20"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.10", "hostname": "x"},
                {"ip": "203.0.113.20"}, {}
            ]}}),
        );
        assert_eq!(
            strs(&cells("", "Service", &ready))[3],
            "203.0.113.10,203.0.113.20,lb.example.com,7.7.7.7"
        );
        let only_external = svc(
            json!({"type": "LoadBalancer", "externalIPs": ["7.7.7.7"]}),
            json!({}),
        );
        assert_eq!(strs(&cells("", "Service", &only_external))[3], "7.7.7.7");
    }

    #[test]
    fn service_external_name() {
        let s = svc(
            json!({"type": "ExternalName", "externalName": "db.example.com"}),
            json!({}),
        );
        assert_eq!(
            strs(&cells("", "Service", &s)),
            [
                "web",
                "ExternalName",
                "<none>",
                "db.example.com",
                "<none>",
                "90s",
                "<none>"
            ]
        );
    }

    #[test]
    fn service_unknown_type_and_defaults() {
        let s = svc(json!({"type": "Weird", "clusterIPs": ["10.0.0.1"]}), json!({}));
        assert_eq!(
            strs(&cells("", "Service", &s))[1..4],
            ["Weird", "10.0.0.1", "<unknown>"]
        );
        // Unset type and protocol read as their defaults; clusterIP stands in for clusterIPs.
        let s = svc(
            json!({"clusterIP": "10.0.0.2", "ports": [{"port": 8080}]}),
            json!({}),
        );
        assert_eq!(
            strs(&cells("", "Service", &s))[1..5],
            ["ClusterIP", "10.0.0.2", "<none>", "8080/TCP"]
        );
        let s = svc(
            json!({"type": "ClusterIP", "ports": [{"port": 132, "protocol": "SCTP", "nodePort": 0}]}),
            json!({}),
        );
        assert_eq!(strs(&cells("", "Service", &s))[4], "132/SCTP");
    }

    #[test]
    fn service_selector_is_sorted_by_pair() {
        let s = svc(json!({"selector": {"a=b": "x", "a": "y", "a-b": "z"}}), json!({}));
        assert_eq!(strs(&cells("", "Service", &s))[6], "a-b=z,a=b=x,a=y");
    }

    // ---- Endpoints ----------------------------------------------------------------------------------

    fn eps(subsets: Value) -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": ago(10)}, "subsets": subsets})
    }

    #[test]
    fn endpoints_none_and_empty() {
        assert_eq!(
            strs(&cells("", "Endpoints", &eps(json!([])))),
            ["web", "<none>", "10s"]
        );
        assert_eq!(strs(&cells("", "Endpoints", &eps(json!(null))))[1], "<none>");
        // Subsets without ready addresses print as an empty string.
        let not_ready = eps(json!([{"notReadyAddresses": [{"ip": "10.1.0.1"}], "ports": [{"port": 80}]}]));
        assert_eq!(strs(&cells("", "Endpoints", &not_ready))[1], "");
    }

    #[test]
    fn endpoints_with_ports_and_ipv6() {
        let e =
            eps(json!([{"addresses": [{"ip": "10.1.0.1"}, {"ip": "fd00::1"}], "ports": [{"port": 8080}]}]));
        assert_eq!(
            strs(&cells("", "Endpoints", &e))[1],
            "10.1.0.1:8080,[fd00::1]:8080"
        );
    }

    #[test]
    fn endpoints_headless_without_ports() {
        let e = eps(json!([{"addresses": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}]}]));
        assert_eq!(strs(&cells("", "Endpoints", &e))[1], "10.1.0.1,10.1.0.2");
    }

    #[test]
    fn endpoints_truncation() {
        let exactly_three = eps(
            json!([{"addresses": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}, {"ip": "10.1.0.3"}],
                                        "ports": [{"port": 80}]}]),
        );
        assert_eq!(
            strs(&cells("", "Endpoints", &exactly_three))[1],
            "10.1.0.1:80,10.1.0.2:80,10.1.0.3:80"
        );
        // 2 addresses x 2 ports + 3 headless addresses = 7 entries.
        let many = eps(json!([
            {"addresses": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
            {"addresses": [{"ip": "10.1.0.3"}, {"ip": "10.1.0.4"}, {"ip": "10.1.0.5"}]}
        ]));
        assert_eq!(
            strs(&cells("", "Endpoints", &many))[1],
            "10.1.0.1:80,10.1.0.2:80,10.1.0.1:443 + 4 more..."
        );
    }

    // ---- EndpointSlice ------------------------------------------------------------------------------

    fn slice(ports: Value, endpoints: Value) -> Value {
        json!({"metadata": {"name": "web-abc", "creationTimestamp": ago(130)}, "addressType": "IPv4",
               "ports": ports, "endpoints": endpoints})
    }

    #[test]
    fn endpoint_slice_rows() {
        let s = slice(
            json!([{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "metrics"}, {}]),
            json!([{"addresses": ["10.1.0.1"]}, {"addresses": ["10.1.0.2", "10.1.0.3"]}]),
        );
        assert_eq!(
            strs(&cells("discovery.k8s.io", "EndpointSlice", &s)),
            [
                "web-abc",
                "IPv4",
                "80,metrics,*",
                "10.1.0.1,10.1.0.2,10.1.0.3",
                "2m10s"
            ]
        );
        let empty = slice(json!(null), json!([]));
        assert_eq!(
            strs(&cells("discovery.k8s.io", "EndpointSlice", &empty))[2..4],
            ["<unset>", "<unset>"]
        );
        let many = slice(
            json!([{"port": 1}, {"port": 2}, {"port": 3}, {"port": 4}, {"port": 5}]),
            json!([{"addresses": ["a", "b"]}, {"addresses": ["c", "d"]}]),
        );
        assert_eq!(
            strs(&cells("discovery.k8s.io", "EndpointSlice", &many))[2..4],
            ["1,2,3 + 2 more...", "a,b,c + 1 more..."]
        );
    }

    // ---- Lease --------------------------------------------------------------------------------------

    #[test]
    fn lease_rows() {
        let l = json!({"metadata": {"name": "node-1", "creationTimestamp": ago(86400 * 3)}, "spec": {"holderIdentity": "node-1"}});
        assert_eq!(
            strs(&cells("coordination.k8s.io", "Lease", &l)),
            ["node-1", "node-1", "3d"]
        );
        let l = json!({"metadata": {"name": "free", "creationTimestamp": ago(1)}, "spec": {}});
        assert_eq!(
            strs(&cells("coordination.k8s.io", "Lease", &l)),
            ["free", "", "1s"]
        );
    }

    // ---- Deployment and ReplicaSet ------------------------------------------------------------------

    #[test]
    fn deployment_rows() {
        let d = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(600)},
            "spec": {"replicas": 3,
                     "selector": {"matchLabels": {"app": "web"},
                                  "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]},
                                                       {"key": "canary", "operator": "DoesNotExist"}]},
                     "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"},
                                                           {"name": "sidecar", "image": "envoy:1"}]}}},
            "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
        });
        let c = cells("apps", "Deployment", &d);
        assert_eq!(c[2], json!(3));
        assert_eq!(c[3], json!(2));
        assert_eq!(
            strs(&c),
            [
                "web",
                "2/3",
                "3",
                "2",
                "10m",
                "app,sidecar",
                "nginx:1.27,envoy:1",
                "app=web,!canary,tier in (be,fe)"
            ]
        );
        // No status yet, replicas defaulted, empty selector prints as "".
        let d = json!({"metadata": {"name": "new"}, "spec": {"selector": {}}});
        assert_eq!(
            strs(&cells("apps", "Deployment", &d)),
            ["new", "0/1", "0", "0", "<unknown>", "", "", ""]
        );
        let bad = json!({"metadata": {"name": "bad"}, "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}});
        assert_eq!(strs(&cells("apps", "Deployment", &bad))[7], "<invalid>");
    }

    #[test]
    fn replica_set_rows() {
        let rs = json!({
            "metadata": {"name": "web-5d8f", "creationTimestamp": ago(7200)},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"pod-template-hash": "5d8f", "app": "web"}},
                     "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1}
        });
        let c = cells("apps", "ReplicaSet", &rs);
        assert_eq!(c[1..4], [json!(2), json!(2), json!(1)]);
        assert_eq!(
            strs(&c),
            [
                "web-5d8f",
                "2",
                "2",
                "1",
                "120m",
                "app",
                "nginx",
                "app=web,pod-template-hash=5d8f"
            ]
        );
        let scaled_down = json!({"metadata": {"name": "old"}, "spec": {"replicas": 0}});
        let c = cells("apps", "ReplicaSet", &scaled_down);
        assert_eq!(c[1..4], [json!(0), json!(0), json!(0)]);
        assert_eq!(strs(&c)[7], "<none>");
        let bad =
            json!({"metadata": {"name": "bad"}, "spec": {"selector": {"matchLabels": {"bad key": "v"}}}});
        assert_eq!(strs(&cells("apps", "ReplicaSet", &bad))[7], "<error>");
    }

    #[test]
    fn label_selector_rendering() {
        let ok = |v: Value| label_selector_string(Some(&v));
        assert_eq!(label_selector_string(None), Ok(String::new()));
        assert_eq!(ok(json!({"matchLabels": {}})), Ok(String::new()));
        assert_eq!(
            ok(json!({"matchExpressions": [
                {"key": "b", "operator": "NotIn", "values": ["y", "x", "x"]},
                {"key": "a", "operator": "Exists"},
                {"key": "c", "operator": "In", "values": ["only"]}
            ]})),
            Ok("a,b notin (x,x,y),c in (only)".to_string())
        );
        // Requirements on one key keep their order: match labels first.
        assert_eq!(
            ok(json!({"matchLabels": {"k": "v"}, "matchExpressions": [{"key": "k", "operator": "Exists"}]})),
            Ok("k=v,k".to_string())
        );
        assert_eq!(
            ok(json!({"matchLabels": {"example.com/app": "web"}})),
            Ok("example.com/app=web".to_string())
        );
        for bad in [
            json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
            json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
            json!({"matchLabels": {"a": "bad value"}}),
            json!({"matchLabels": {"Example.com/a": "v"}}),
            json!({"matchLabels": {"/a": "v"}}),
            json!({"matchLabels": {"a/b/c": "v"}}),
            json!({"matchLabels": {"-a": "v"}}),
            json!({"matchLabels": {"a": 1}}),
        ] {
            assert_eq!(ok(bad.clone()), Err(()), "{bad}");
        }
        assert!(is_valid_label_value(""));
        assert!(!is_valid_label_value(&"a".repeat(64)));
        assert!(is_qualified_name(&format!(
            "{}/{}",
            "a".repeat(253),
            "b".repeat(63)
        )));
    }

    // ---- Node ---------------------------------------------------------------------------------------

    #[test]
    fn node_rows() {
        let n = json!({
            "metadata": {"name": "node-1", "creationTimestamp": ago(86400 * 10),
                         "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "x",
                                    "kubernetes.io/role": "master", "node-role.kubernetes.io/worker": "true"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "node-1"}, {"type": "InternalIP", "address": "192.168.1.10"},
                              {"type": "InternalIP", "address": "192.168.1.11"}],
                "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "containerd://1.7.13"}
            }
        });
        assert_eq!(
            strs(&cells("", "Node", &n)),
            [
                "node-1",
                "Ready,SchedulingDisabled",
                "control-plane,master,worker",
                "10d",
                "v1.33.1",
                "192.168.1.10",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.1.0-18-amd64",
                "containerd://1.7.13"
            ]
        );
    }

    #[test]
    fn node_not_ready_and_unknown() {
        let n = json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}],
                       "addresses": [{"type": "ExternalIP", "address": "203.0.113.5"}]}});
        assert_eq!(
            strs(&cells("", "Node", &n)),
            [
                "n",
                "NotReady",
                "<none>",
                "<unknown>",
                "",
                "<none>",
                "203.0.113.5",
                "<unknown>",
                "<unknown>",
                "<unknown>"
            ]
        );
        let n = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
        assert_eq!(strs(&cells("", "Node", &n))[1], "Unknown,SchedulingDisabled");
        // The last Ready condition wins.
        let n = json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Ready", "status": "False"}]}});
        assert_eq!(strs(&cells("", "Node", &n))[1], "NotReady");
    }

    // ---- Event --------------------------------------------------------------------------------------

    #[test]
    fn event_rows() {
        let e = json!({
            "metadata": {"name": "web-1.17c1", "creationTimestamp": ago(400)},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
            "reason": "Pulled", "type": "Normal", "message": "  Successfully pulled image\n",
            "source": {"component": "kubelet", "host": "node-1"},
            "firstTimestamp": ago(400), "lastTimestamp": ago(65), "count": 4
        });
        let c = cells("", "Event", &e);
        assert_eq!(c[8], json!(4));
        assert_eq!(
            strs(&c),
            [
                "65s",
                "Normal",
                "Pulled",
                "pod/web-1",
                "spec.containers{app}",
                "kubelet, node-1",
                "Successfully pulled image",
                "6m40s",
                "4",
                "web-1.17c1"
            ]
        );
    }

    #[test]
    fn event_new_style_fields() {
        // No first/last timestamps: eventTime stands in; no count means 1; reporting* replace source.
        let e = json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Node"},
            "eventTime": "2024-05-01T11:59:00.000000Z",
            "reportingController": "svcnet-controller", "reportingInstance": "ctl-0",
            "type": "Warning", "reason": "Boom", "message": "x"
        });
        assert_eq!(
            strs(&cells("", "Event", &e)),
            [
                "60s",
                "Warning",
                "Boom",
                "node",
                "",
                "svcnet-controller, ctl-0",
                "x",
                "60s",
                "1",
                "e"
            ]
        );
        // Ages truncate: 59.9 s is "59s".
        let e = json!({"metadata": {"name": "e"}, "eventTime": "2024-05-01T11:59:00.123456Z"});
        assert_eq!(strs(&cells("", "Event", &e))[0], "59s");
        // A series overrides last seen and count.
        let e = json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Service", "name": "web"},
            "firstTimestamp": ago(1000), "lastTimestamp": ago(900), "count": 2,
            "series": {"count": 17, "lastObservedTime": ago(3)},
            "source": {"component": "svcnet"}
        });
        let c = strs(&cells("", "Event", &e));
        assert_eq!(
            [&c[0], &c[3], &c[5], &c[7], &c[8]],
            ["3s", "service/web", "svcnet", "16m", "17"]
        );
        // Nothing set at all.
        assert_eq!(
            strs(&cells("", "Event", &json!({"metadata": {"name": "e"}}))),
            ["<unknown>", "", "", "", "", "", "", "<unknown>", "1", "e"]
        );
    }

    #[test]
    fn events_k8s_io_event_uses_its_field_names() {
        let e = json!({
            "metadata": {"name": "e2"},
            "regarding": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{c}"},
            "note": "hello ", "reason": "Started", "type": "Normal",
            "deprecatedSource": {"component": "kubelet"}, "reportingInstance": "node-2",
            "deprecatedFirstTimestamp": ago(200), "deprecatedLastTimestamp": ago(100), "deprecatedCount": 3
        });
        assert_eq!(
            strs(&cells("events.k8s.io", "Event", &e)),
            [
                "100s",
                "Normal",
                "Started",
                "pod/p",
                "spec.containers{c}",
                "kubelet, node-2",
                "hello",
                "3m20s",
                "3",
                "e2"
            ]
        );
    }

    // ---- Pod ----------------------------------------------------------------------------------------

    fn pod(spec: Value, status: Value) -> Value {
        json!({"metadata": {"name": "p", "creationTimestamp": ago(3600)}, "spec": spec, "status": status})
    }

    fn one_container() -> Value {
        json!({"containers": [{"name": "app", "image": "nginx"}]})
    }

    /// READY, STATUS and RESTARTS of a pod.
    fn prs(p: &Value) -> [String; 3] {
        let c = strs(&cells("", "Pod", p));
        [c[1].clone(), c[2].clone(), c[3].clone()]
    }

    #[test]
    fn pod_running() {
        let p = pod(
            json!({"containers": [{"name": "app"}, {"name": "log"}], "nodeName": "node-1"}),
            json!({"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}],
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": ago(3000)}}},
                {"name": "log", "ready": true, "restartCount": 0, "state": {"running": {}}}
            ]}),
        );
        assert_eq!(
            strs(&cells("", "Pod", &p)),
            [
                "p", "2/2", "Running", "0", "60m", "10.1.0.5", "node-1", "<none>", "<none>"
            ]
        );
    }

    #[test]
    fn pod_pending_and_scheduling_gated() {
        let p = pod(one_container(), json!({"phase": "Pending"}));
        assert_eq!(
            strs(&cells("", "Pod", &p)),
            [
                "p", "0/1", "Pending", "0", "60m", "<none>", "<none>", "<none>", "<none>"
            ]
        );
        let gated = pod(
            one_container(),
            json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
        );
        assert_eq!(prs(&gated)[1], "SchedulingGated");
    }

    #[test]
    fn pod_status_reason_overrides_phase() {
        let p = pod(one_container(), json!({"phase": "Failed", "reason": "Evicted"}));
        assert_eq!(prs(&p), ["0/1", "Evicted", "0"]);
    }

    #[test]
    fn pod_waiting_reasons() {
        for why in [
            "ContainerCreating",
            "ImagePullBackOff",
            "ErrImagePull",
            "CrashLoopBackOff",
            "CreateContainerConfigError",
        ] {
            let p = pod(
                one_container(),
                json!({"phase": "Running", "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": why}}}]}),
            );
            assert_eq!(prs(&p)[1], why);
        }
    }

    #[test]
    fn pod_crash_loop_with_restarts_ago() {
        let p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [{
                "name": "app", "restartCount": 5, "ready": false,
                "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}
            }]}),
        );
        assert_eq!(prs(&p), ["0/1", "CrashLoopBackOff", "5 (5m ago)"]);
        // Restarts without a recorded termination time print as a bare number.
        let p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [{"name": "app", "restartCount": 2, "ready": true, "state": {"running": {}}}]}),
        );
        assert_eq!(prs(&p), ["1/1", "Running", "2"]);
    }

    #[test]
    fn pod_completed_and_terminated_reasons() {
        let done = pod(
            one_container(),
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        assert_eq!(prs(&done), ["0/1", "Completed", "0"]);
        let err = pod(
            one_container(),
            json!({"phase": "Failed", "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
        );
        assert_eq!(prs(&err)[1], "OOMKilled");
        let signal = pod(
            one_container(),
            json!({"phase": "Failed", "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
        );
        assert_eq!(prs(&signal)[1], "Signal:9");
        let exit = pod(
            one_container(),
            json!({"phase": "Failed", "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 3}}}]}),
        );
        assert_eq!(prs(&exit)[1], "ExitCode:3");
    }

    #[test]
    fn pod_first_container_reason_wins() {
        let p = pod(
            json!({"containers": [{"name": "a"}, {"name": "b"}]}),
            json!({"phase": "Running", "containerStatuses": [
                {"name": "a", "state": {"waiting": {"reason": "ImagePullBackOff"}}},
                {"name": "b", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
            ]}),
        );
        assert_eq!(prs(&p)[1], "ImagePullBackOff");
    }

    #[test]
    fn pod_completed_with_running_sidecar_container() {
        let statuses = json!([
            {"name": "main", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
            {"name": "side", "ready": true, "state": {"running": {}}}
        ]);
        let ready = pod(
            json!({"containers": [{"name": "main"}, {"name": "side"}]}),
            json!({"phase": "Running", "containerStatuses": statuses, "conditions": [{"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(prs(&ready)[0..2], ["1/2", "Running"]);
        let not_ready = pod(
            json!({"containers": [{"name": "main"}, {"name": "side"}]}),
            json!({"phase": "Running", "containerStatuses": statuses}),
        );
        assert_eq!(prs(&not_ready)[1], "NotReady");
    }

    #[test]
    fn pod_init_container_progress() {
        let spec =
            json!({"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "app"}]});
        let p = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "i2", "state": {"running": {}}}
            ], "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
        );
        assert_eq!(prs(&p), ["0/1", "Init:1/2", "0"]);
        let waiting_pod_initializing = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"waiting": {"reason": "PodInitializing"}}}
            ]}),
        );
        assert_eq!(prs(&waiting_pod_initializing)[1], "Init:0/2");
    }

    #[test]
    fn pod_init_container_failures() {
        let spec = json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "app"}]});
        let crash = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [{
                "name": "i1", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}
            }]}),
        );
        assert_eq!(prs(&crash), ["0/1", "Init:CrashLoopBackOff", "3 (30s ago)"]);
        let error = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
        );
        assert_eq!(prs(&error)[1], "Init:Error");
        let signal = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 2, "signal": 15}}}]}),
        );
        assert_eq!(prs(&signal)[1], "Init:Signal:15");
        let exit = pod(
            spec,
            json!({"phase": "Pending", "initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 2}}}]}),
        );
        assert_eq!(prs(&exit)[1], "Init:ExitCode:2");
    }

    #[test]
    fn pod_initialized_condition_lets_main_containers_count() {
        // Once Initialized, main containers are counted (and their reasons would win), but with none
        // of them reporting a reason the init container's reason stays, as in kube.
        let p = pod(
            json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "app"}]}),
            json!({"phase": "Running",
                   "conditions": [{"type": "Initialized", "status": "True"}],
                   "initContainerStatuses": [{"name": "i1", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
                   "containerStatuses": [{"name": "app", "restartCount": 1, "ready": true, "state": {"running": {}}}]}),
        );
        // Restarts count only the main containers (and sidecars) once initialized.
        assert_eq!(prs(&p), ["1/1", "Init:CrashLoopBackOff", "1"]);
        let p = pod(
            json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "app"}]}),
            json!({"phase": "Running",
                   "conditions": [{"type": "Initialized", "status": "True"}],
                   "initContainerStatuses": [{"name": "i1", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
                   "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
        );
        assert_eq!(prs(&p)[1], "ContainerCreating");
    }

    #[test]
    fn pod_sidecar_init_containers() {
        let spec = json!({
            "initContainers": [{"name": "setup"}, {"name": "proxy", "restartPolicy": "Always"}],
            "containers": [{"name": "app"}]
        });
        let p = pod(
            spec.clone(),
            json!({"phase": "Running",
                   "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                   "initContainerStatuses": [
                       {"name": "setup", "restartCount": 7, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(50)}}},
                       {"name": "proxy", "restartCount": 2, "started": true, "ready": true, "state": {"running": {}},
                        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(200)}}}
                   ],
                   "containerStatuses": [{"name": "app", "restartCount": 1, "ready": true, "state": {"running": {}},
                                           "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(100)}}}]}),
        );
        // Regular init container restarts (and their times) are dropped once initialized.
        assert_eq!(prs(&p), ["2/2", "Running", "3 (100s ago)"]);
        // A sidecar that has not started yet blocks initialization.
        let starting = pod(
            spec,
            json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "setup", "state": {"terminated": {"exitCode": 0}}},
                {"name": "proxy", "started": false, "state": {"running": {}}}
            ]}),
        );
        assert_eq!(prs(&starting)[0..2], ["0/2", "Init:1/2"]);
    }

    #[test]
    fn pod_terminating_and_unknown() {
        let mut p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}]}),
        );
        p["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(prs(&p)[1], "Terminating");
        let mut lost = pod(one_container(), json!({"phase": "Running", "reason": "NodeLost"}));
        lost["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(prs(&lost)[1], "Unknown");
        // Terminal pods keep their status while being deleted.
        let mut done = pod(
            one_container(),
            json!({"phase": "Succeeded", "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
        );
        done["metadata"]["deletionTimestamp"] = json!(ago(5));
        assert_eq!(prs(&done)[1], "Completed");
    }

    #[test]
    fn pod_wide_columns() {
        let p = pod(
            json!({"containers": [{"name": "app"}], "nodeName": "node-2",
                   "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/fw"}]}),
            json!({"phase": "Running", "podIPs": [{"ip": "fd00::7"}], "nominatedNodeName": "node-3",
                   "conditions": [{"type": "example.com/lb", "status": "True"}, {"type": "example.com/fw", "status": "False"}]}),
        );
        assert_eq!(
            strs(&cells("", "Pod", &p))[5..],
            ["fd00::7", "node-2", "node-3", "1/2"]
        );
        // status.podIP wins over podIPs when they disagree.
        let p = pod(
            one_container(),
            json!({"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.2"}]}),
        );
        assert_eq!(strs(&cells("", "Pod", &p))[5], "10.0.0.1");
    }

    #[test]
    fn pod_row_conditions() {
        let ok = pod(one_container(), json!({"phase": "Succeeded"}));
        assert_eq!(
            row_conditions("", "Pod", &ok),
            vec![
                json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."})
            ]
        );
        let failed = pod(one_container(), json!({"phase": "Failed"}));
        assert_eq!(
            row_conditions("", "Pod", &failed)[0]["message"],
            "The pod failed."
        );
        assert!(row_conditions("", "Pod", &pod(one_container(), json!({"phase": "Running"}))).is_empty());
        assert!(row_conditions("apps", "ReplicaSet", &ok).is_empty());
    }

    // ---- Table --------------------------------------------------------------------------------------

    #[test]
    fn table_with_metadata_objects() {
        let ns = json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "default", "uid": "u-1", "resourceVersion": "12", "namespace": "",
                         "creationTimestamp": ago(60), "labels": {"kubernetes.io/metadata.name": "default"},
                         "annotations": {}, "generation": 0, "somethingUnknown": true},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
        });
        let t = table("", "Namespace", &[&ns], IncludeObject::Metadata, now());
        let keys: Vec<&String> = t.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["kind", "apiVersion", "metadata", "columnDefinitions", "rows"]
        );
        assert_eq!(t["kind"], "Table");
        assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
        assert_eq!(t["metadata"], json!({}));
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 3);
        let row = &t["rows"][0];
        assert_eq!(row["cells"], json!(["default", "Active", "60s"]));
        assert!(row.get("conditions").is_none());
        assert_eq!(
            row["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {
                "name": "default", "uid": "u-1", "resourceVersion": "12", "creationTimestamp": ago(60),
                "labels": {"kubernetes.io/metadata.name": "default"}
            }})
        );
        let meta_keys: Vec<&String> = row["object"]["metadata"].as_object().unwrap().keys().collect();
        assert_eq!(
            meta_keys,
            ["name", "uid", "resourceVersion", "creationTimestamp", "labels"]
        );
    }

    #[test]
    fn partial_metadata_keeps_pointer_fields_and_null_creation() {
        let obj = json!({"metadata": {"name": "x", "deletionGracePeriodSeconds": 0, "deletionTimestamp": ago(1),
                                      "finalizers": ["a"], "ownerReferences": []}});
        assert_eq!(
            partial_object_metadata(&obj)["metadata"],
            json!({"name": "x", "creationTimestamp": null, "deletionTimestamp": ago(1),
                   "deletionGracePeriodSeconds": 0, "finalizers": ["a"]})
        );
        assert_eq!(
            partial_object_metadata(&json!(7))["metadata"],
            json!({"creationTimestamp": null})
        );
    }

    #[test]
    fn table_include_none_and_object() {
        let p = pod(one_container(), json!({"phase": "Succeeded"}));
        let t = table("", "Pod", &[&p], IncludeObject::None, now());
        let row = t["rows"][0].as_object().unwrap();
        assert_eq!(row.keys().collect::<Vec<_>>(), ["cells", "conditions", "object"]);
        assert_eq!(row["object"], Value::Null);
        assert_eq!(row["conditions"][0]["reason"], "Succeeded");
        let t = table("", "Pod", &[&p], IncludeObject::Object, now());
        assert_eq!(t["rows"][0]["object"], p);
    }

    #[test]
    fn table_empty_lists() {
        let t = table("", "Service", &[], IncludeObject::Metadata, now());
        assert_eq!(t["rows"], json!([]));
        assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 7);
        // The default convertor leaves rows nil.
        let t = table("", "ConfigMap", &[], IncludeObject::Metadata, now());
        assert_eq!(t["rows"], Value::Null);
        let cm = json!({"metadata": {"name": "c", "creationTimestamp": "2024-01-01T00:00:00Z"}});
        let t = table("", "ConfigMap", &[&cm, &cm], IncludeObject::Metadata, now());
        assert_eq!(t["rows"][1]["cells"], json!(["c", "2024-01-01T00:00:00Z"]));
    }
}
