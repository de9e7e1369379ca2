//! Service (core/v1).

use super::meta::{CONDITIONS_STATUS, OBJECT_META, OBJECT_META_PROTO};
use super::{ALL, Kind};
use crate::apply::{ApplyKind, Structs, atomic_map, conditions, port_list, r, st};
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
