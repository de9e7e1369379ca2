//! Column definitions of kube's printers: names, types, and the descriptions kube takes from the
//! API types' `SwaggerDoc()` strings.

// ---------------------------------------------------------------------------------------------------
// Column descriptions. These are the `SwaggerDoc()` strings kube puts in `description` (from
// k8s.io/api and k8s.io/apimachinery v0.33 `types_swagger_doc_generated.go`, including the types kube
// quotes even where newer API versions exist, e.g. extensions/v1beta1 for ReplicaSet and Deployment).
// ---------------------------------------------------------------------------------------------------

pub(super) const DOC_NAME: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
pub(super) const DOC_CREATION_TIMESTAMP: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
pub(super) const DOC_POD_IP: &str =
    "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated.";
pub(super) const DOC_NOMINATED_NODE_NAME: &str = "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods. This field does not guarantee that the pod will be scheduled on this node. Scheduler may decide to place the pod elsewhere if other nodes become available sooner. Scheduler may also decide to give the resources on this node to a higher priority pod that is created after preemption. As a result, this field may be different than PodSpec.nodeName when the pod is scheduled.";
pub(super) const DOC_NODE_NAME: &str = "NodeName indicates in which node this pod is scheduled. If empty, this pod is a candidate for scheduling by the scheduler defined in schedulerName. Once this field is set, the kubelet for this node becomes responsible for the lifecycle of this pod. This field should not be used to express a desire for the pod to be scheduled on a specific node. https://kubernetes.io/docs/concepts/scheduling-eviction/assign-pod-node/#nodename";
pub(super) const DOC_READINESS_GATES: &str = "If specified, all readiness gates will be evaluated for pod readiness. A pod is ready when all its containers are ready AND all conditions specified in the readiness gates have status equal to \"True\" More info: https://git.k8s.io/enhancements/keps/sig-network/580-pod-readiness-gates";
pub(super) const DOC_RS_SPEC_REPLICAS: &str = "Replicas is the number of desired pods. This is a pointer to distinguish between explicit zero and unspecified. Defaults to 1. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
pub(super) const DOC_RS_SPEC_SELECTOR: &str = "Selector is a label query over pods that should match the replica count. If the selector is empty, it is defaulted to the labels present on the pod template. Label keys and values that must match in order to be controlled by this replica set. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors";
pub(super) const DOC_RS_STATUS_REPLICAS: &str = "Replicas is the most recently observed number of non-terminating pods. More info: https://kubernetes.io/docs/concepts/workloads/controllers/replicaset";
pub(super) const DOC_RS_STATUS_READY: &str =
    "The number of non-terminating pods targeted by this ReplicaSet with a Ready Condition.";
pub(super) const DOC_SVC_TYPE: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
pub(super) const DOC_SVC_CLUSTER_IP: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
pub(super) const DOC_SVC_EXTERNAL_IPS: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";
pub(super) const DOC_SVC_PORTS: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";
pub(super) const DOC_SVC_SELECTOR: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";
pub(super) const DOC_ENDPOINTS_SUBSETS: &str = "The set of all endpoints is the union of all subsets. Addresses are placed into subsets according to the IPs they share. A single address with multiple ports, some of which are ready and some of which are not (because they come from different containers) will result in the address being displayed in different subsets for the different ports. No address will appear in both Addresses and NotReadyAddresses in the same subset. Sets of addresses and ports that comprise a service.";
pub(super) const DOC_KUBELET_VERSION: &str = "Kubelet Version reported by the node.";
pub(super) const DOC_OS_IMAGE: &str =
    "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy)).";
pub(super) const DOC_KERNEL_VERSION: &str =
    "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64).";
pub(super) const DOC_CONTAINER_RUNTIME_VERSION: &str =
    "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2).";
pub(super) const DOC_NODE_ADDRESSES: &str = "List of addresses reachable to the node. Queried from cloud provider, if available. More info: https://kubernetes.io/docs/reference/node/node-status/#addresses Note: This field is declared as mergeable, but the merge key is not sufficiently unique, which can cause data corruption when it is merged. Callers should instead use a full-replacement patch. See https://pr.k8s.io/79391 for an example. Consumers should assume that addresses can change during the lifetime of a Node. However, there are some exceptions where this may not be possible, such as Pods that inherit a Node's address in its own status or consumers of the downward API (status.hostIP).";
pub(super) const DOC_EVENT_LAST_TIMESTAMP: &str =
    "The time at which the most recent occurrence of this event was recorded.";
pub(super) const DOC_EVENT_TYPE: &str =
    "Type of this event (Normal, Warning), new types could be added in the future";
pub(super) const DOC_EVENT_REASON: &str = "This should be a short, machine understandable string that gives the reason for the transition into the object's current status.";
pub(super) const DOC_EVENT_INVOLVED_OBJECT: &str = "The object that this event is about.";
pub(super) const DOC_EVENT_FIELD_PATH: &str = "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]. For example, if the object reference is to a container within a pod, this would take on a value like: \"spec.containers{name}\" (where \"name\" refers to the name of the container that triggered the event) or if no container name is specified \"spec.containers[2]\" (container with index 2 in this pod). This syntax is chosen only to have some well-defined way of referencing a part of an object.";
pub(super) const DOC_EVENT_SOURCE: &str =
    "The component reporting this event. Should be a short machine understandable string.";
pub(super) const DOC_EVENT_MESSAGE: &str = "A human-readable description of the status of this operation.";
pub(super) const DOC_EVENT_FIRST_TIMESTAMP: &str =
    "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)";
pub(super) const DOC_EVENT_COUNT: &str = "The number of times this event has occurred.";
pub(super) const DOC_DEPLOY_UPDATED: &str =
    "Total number of non-terminating pods targeted by this deployment that have the desired template spec.";
pub(super) const DOC_DEPLOY_AVAILABLE: &str = "Total number of available non-terminating pods (ready for at least minReadySeconds) targeted by this deployment.";
pub(super) const DOC_DEPLOY_SELECTOR: &str = "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.";
pub(super) const DOC_LEASE_HOLDER: &str = "holderIdentity contains the identity of the holder of a current lease. If Coordinated Leader Election is used, the holder identity must be equal to the elected LeaseCandidate.metadata.name field.";
pub(super) const DOC_SLICE_ADDRESS_TYPE: &str = "addressType specifies the type of address carried by this EndpointSlice. All addresses in this slice must be the same type. This field is immutable after creation. The following address types are currently supported: * IPv4: Represents an IPv4 Address. * IPv6: Represents an IPv6 Address. * FQDN: Represents a Fully Qualified Domain Name.";
pub(super) const DOC_SLICE_PORTS: &str = "ports specifies the list of network ports exposed by each endpoint in this slice. Each port must have a unique name. When ports is empty, it indicates that there are no defined ports. When a port is defined with a nil port value, it indicates \"all ports\". Each slice may include a maximum of 100 ports.";
pub(super) const DOC_SLICE_ENDPOINTS: &str = "endpoints is a list of unique endpoints in this slice. Each slice may include a maximum of 1000 endpoints.";
pub(super) const DOC_CONTAINERS: &str = "Names of each container in the template.";
pub(super) const DOC_IMAGES: &str = "Images referenced by each container in the template.";
pub(super) const DOC_READY_PODS: &str = "Number of the pod with ready state";

/// One `TableColumnDefinition`.
pub(super) struct Column {
    pub(super) name: &'static str,
    pub(super) ty: &'static str,
    pub(super) format: &'static str,
    pub(super) description: &'static str,
    pub(super) priority: i32,
}

/// A column shown by default.
pub(super) const fn col(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 0,
    }
}

/// A column kubectl shows only with `-o wide`.
pub(super) const fn wide(name: &'static str, ty: &'static str, description: &'static str) -> Column {
    Column {
        name,
        ty,
        format: "",
        description,
        priority: 1,
    }
}

/// The `Name` column every printer starts with; `format: name` tells clients it identifies the row.
pub(super) const NAME: Column = Column {
    name: "Name",
    ty: "string",
    format: "name",
    description: DOC_NAME,
    priority: 0,
};
pub(super) const AGE: Column = col("Age", "string", DOC_CREATION_TIMESTAMP);

pub(super) const NAMESPACE_COLUMNS: &[Column] =
    &[NAME, col("Status", "string", "The status of the namespace"), AGE];

pub(super) const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", DOC_SVC_TYPE),
    col("Cluster-IP", "string", DOC_SVC_CLUSTER_IP),
    col("External-IP", "string", DOC_SVC_EXTERNAL_IPS),
    col("Port(s)", "string", DOC_SVC_PORTS),
    AGE,
    wide("Selector", "string", DOC_SVC_SELECTOR),
];

pub(super) const ENDPOINTS_COLUMNS: &[Column] =
    &[NAME, col("Endpoints", "string", DOC_ENDPOINTS_SUBSETS), AGE];

pub(super) const POD_COLUMNS: &[Column] = &[
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

pub(super) const NODE_COLUMNS: &[Column] = &[
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

pub(super) const EVENT_COLUMNS: &[Column] = &[
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

pub(super) const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col("AddressType", "string", DOC_SLICE_ADDRESS_TYPE),
    col("Ports", "string", DOC_SLICE_PORTS),
    col("Endpoints", "string", DOC_SLICE_ENDPOINTS),
    AGE,
];

pub(super) const LEASE_COLUMNS: &[Column] = &[NAME, col("Holder", "string", DOC_LEASE_HOLDER), AGE];

pub(super) const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", DOC_READY_PODS),
    col("Up-to-date", "string", DOC_DEPLOY_UPDATED),
    col("Available", "string", DOC_DEPLOY_AVAILABLE),
    AGE,
    wide("Containers", "string", DOC_CONTAINERS),
    wide("Images", "string", DOC_IMAGES),
    wide("Selector", "string", DOC_DEPLOY_SELECTOR),
];

pub(super) const REPLICA_SET_COLUMNS: &[Column] = &[
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
pub(super) const DEFAULT_COLUMNS: &[Column] = &[NAME, col("Created At", "date", DOC_CREATION_TIMESTAMP)];
