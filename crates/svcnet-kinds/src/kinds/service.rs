//! Service (core/v1).

use super::meta::{CONDITIONS_STATUS, OBJECT_META, OBJECT_META_PROTO};
use super::{ALL, Kind};
use crate::apply::{ApplyKind, Structs, atomic_map, conditions, port_list, r, st};
use crate::columns::{AGE, Column, NAME, col, wide};
use crate::patch::{Field, TypeSchema};
use crate::proto::{self, Wire, f, p};
use crate::resource::ResourceType;
use crate::rules::{NameRule, Rules};

/// The Service kind.
pub static KIND: Kind = Kind {
    resource: ResourceType {
        group: "",
        version: "v1",
        kind: "Service",
        plural: "services",
        singular: "service",
        namespaced: true,
        short_names: &["svc"],
        categories: ALL,
        subresources: &["status"],
        delete_collection: true,
        field_selectors: &["spec.clusterIP", "spec.type"],
    },
    field_labels: &[],
    patch: &PATCH,
    apply: ApplyKind {
        root: "Service",
        always_present: &["spec", "status"],
        structs: apply_structs,
    },
    proto: Some(PROTO),
    rules: Rules {
        name: NameRule::Dns1035Label,
        ..Rules::DEFAULT
    },
    columns: COLUMNS,
};

static SPEC_PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.ServiceSpec",
    fields: &[Field::merge("ports", "port")],
};

static PATCH: TypeSchema = TypeSchema {
    name: "io.k8s.api.core.v1.Service",
    fields: &[
        Field::nested("metadata", &OBJECT_META),
        Field::nested("spec", &SPEC_PATCH),
        Field::nested("status", &CONDITIONS_STATUS),
    ],
};

fn apply_structs(s: &mut Structs) {
    super::meta::structs(s);
    s.insert(
        "Service",
        st(vec![
            ("metadata", r("ObjectMeta")),
            ("spec", r("ServiceSpec")),
            ("status", r("ServiceStatus")),
        ]),
    );
    s.insert(
        "ServiceSpec",
        st(vec![("ports", port_list("port")), ("selector", atomic_map())]),
    );
    s.insert("ServiceStatus", st(vec![("conditions", conditions())]));
}

const PORT_PROTO: &[proto::Field] = &[
    f(1, "name", Wire::Str),
    f(2, "protocol", Wire::Str),
    f(6, "appProtocol", Wire::Str),
    f(3, "port", Wire::Int),
    f(4, "targetPort", Wire::IntOrString),
    f(5, "nodePort", Wire::Int),
];
const CLIENT_IP_CONFIG_PROTO: &[proto::Field] = &[p(1, "timeoutSeconds", Wire::Int)];
const SESSION_AFFINITY_CONFIG_PROTO: &[proto::Field] = &[f(1, "clientIP", Wire::Msg(CLIENT_IP_CONFIG_PROTO))];
const SPEC_PROTO: &[proto::Field] = &[
    proto::r(1, "ports", Wire::Msg(PORT_PROTO)),
    f(2, "selector", Wire::StrMap),
    f(3, "clusterIP", Wire::Str),
    proto::r(18, "clusterIPs", Wire::Str),
    f(4, "type", Wire::Str),
    proto::r(5, "externalIPs", Wire::Str),
    f(7, "sessionAffinity", Wire::Str),
    f(8, "loadBalancerIP", Wire::Str),
    proto::r(9, "loadBalancerSourceRanges", Wire::Str),
    f(10, "externalName", Wire::Str),
    f(11, "externalTrafficPolicy", Wire::Str),
    f(12, "healthCheckNodePort", Wire::Int),
    f(13, "publishNotReadyAddresses", Wire::Bool),
    f(
        14,
        "sessionAffinityConfig",
        Wire::Msg(SESSION_AFFINITY_CONFIG_PROTO),
    ),
    proto::r(19, "ipFamilies", Wire::Str),
    p(17, "ipFamilyPolicy", Wire::Str),
    p(20, "allocateLoadBalancerNodePorts", Wire::Bool),
    p(21, "loadBalancerClass", Wire::Str),
    p(22, "internalTrafficPolicy", Wire::Str),
    p(23, "trafficDistribution", Wire::Str),
];
const PROTO: &[proto::Field] = &[
    f(1, "metadata", Wire::Msg(OBJECT_META_PROTO)),
    f(2, "spec", Wire::Msg(SPEC_PROTO)),
];

/// The columns of kube's printer for this kind (`pkg/printers/internalversion`).
const COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", DOC_SVC_TYPE),
    col("Cluster-IP", "string", DOC_SVC_CLUSTER_IP),
    col("External-IP", "string", DOC_SVC_EXTERNAL_IPS),
    col("Port(s)", "string", DOC_SVC_PORTS),
    AGE,
    wide("Selector", "string", DOC_SVC_SELECTOR),
];

const DOC_SVC_CLUSTER_IP: &str = "clusterIP is the IP address of the service and is usually assigned randomly. If an address is specified manually, is in-range (as per system configuration), and is not in use, it will be allocated to the service; otherwise creation of the service will fail. This field may not be changed through updates unless the type field is also being changed to ExternalName (which requires this field to be blank) or the type field is being changed from ExternalName (in which case this field may optionally be specified, as describe above).  Valid values are \"None\", empty string (\"\"), or a valid IP address. Setting this to \"None\" makes a \"headless service\" (no virtual IP), which is useful when direct endpoint connections are preferred and proxying is not required.  Only applies to types ClusterIP, NodePort, and LoadBalancer. If this field is specified when creating a Service of type ExternalName, creation will fail. This field will be wiped when updating a Service to type ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";

const DOC_SVC_EXTERNAL_IPS: &str = "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service.  These IPs are not managed by Kubernetes.  The user is responsible for ensuring that traffic arrives at a node with this IP.  A common example is external load-balancers that are not part of the Kubernetes system.";

const DOC_SVC_PORTS: &str = "The list of ports that are exposed by this service. More info: https://kubernetes.io/docs/concepts/services-networking/service/#virtual-ips-and-service-proxies";

const DOC_SVC_SELECTOR: &str = "Route service traffic to pods with label keys and values matching this selector. If empty or not present, the service is assumed to have an external process managing its endpoints, which Kubernetes will not modify. Only applies to types ClusterIP, NodePort, and LoadBalancer. Ignored if type is ExternalName. More info: https://kubernetes.io/docs/concepts/services-networking/service/";

const DOC_SVC_TYPE: &str = "type determines how the Service is exposed. Defaults to ClusterIP. Valid options are ExternalName, ClusterIP, NodePort, and LoadBalancer. \"ClusterIP\" allocates a cluster-internal IP address for load-balancing to endpoints. Endpoints are determined by the selector or if that is not specified, by manual construction of an Endpoints object or EndpointSlice objects. If clusterIP is \"None\", no virtual IP is allocated and the endpoints are published as a set of endpoints rather than a virtual IP. \"NodePort\" builds on ClusterIP and allocates a port on every node which routes to the same endpoints as the clusterIP. \"LoadBalancer\" builds on NodePort and creates an external load-balancer (if supported in the current cloud) which routes to the same endpoints as the clusterIP. \"ExternalName\" aliases this service to the specified externalName. Several other fields do not apply to ExternalName services. More info: https://kubernetes.io/docs/concepts/services-networking/service/#publishing-services-service-types";
