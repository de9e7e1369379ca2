//! What the cluster says about one Service: its LoadBalancer IPs, and the nodes that may announce them.
//! Pure functions over watched objects.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Kubernetes' label that keeps a node out of every external load balancer's pool.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";

/// The ingress addresses (IPv4 and IPv6) of a `type: LoadBalancer` Service (empty for any other
/// Service).
pub fn lb_ips(svc: &Service) -> BTreeSet<IpAddr> {
    let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    if !is_lb {
        return BTreeSet::new();
    }
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.as_deref()?.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect()
}

/// Whether the Service sends external traffic only to endpoints on the node it arrives at.
pub fn local_policy(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.external_traffic_policy.as_deref())
        == Some("Local")
}

/// Whether `node` may announce: Ready, not being deleted, not excluded from load balancers.
pub fn node_eligible(node: &Node) -> bool {
    let excluded = node
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(EXCLUDE_LABEL));
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready && !excluded && node.metadata.deletion_timestamp.is_none()
}

/// The nodes with a ready endpoint of Service `namespace/name` (`externalTrafficPolicy: Local`), from
/// its EndpointSlices.
pub fn nodes_with_ready_endpoints<'a>(
    namespace: &str,
    name: &str,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> BTreeSet<String> {
    slices
        .into_iter()
        .filter(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("kubernetes.io/service-name"))
                    .map(String::as_str)
                    == Some(name)
        })
        .flat_map(|s| s.endpoints.iter())
        // An unset `ready` means ready (the EndpointSlice API's rule).
        .filter(|e| e.conditions.as_ref().and_then(|c| c.ready) != Some(false))
        .filter_map(|e| e.node_name.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_load_balancer_services_have_ips() {
        let svc: Service = serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
            "status": {"loadBalancer": {"ingress": [{"ip": "172.18.0.224"}, {"ip": "fd00::1"}, {"hostname": "x"}]}}
        }))
        .unwrap();
        assert_eq!(
            lb_ips(&svc).into_iter().collect::<Vec<_>>(),
            [
                "172.18.0.224".parse::<IpAddr>().unwrap(),
                "fd00::1".parse().unwrap()
            ]
        );
        assert!(local_policy(&svc));
        let mut cluster_ip = svc.clone();
        cluster_ip.spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        assert!(lb_ips(&cluster_ip).is_empty());
    }

    #[test]
    fn ready_nodes_not_excluded() {
        let node = |labels: serde_json::Value, ready: &str| -> Node {
            serde_json::from_value(json!({
                "metadata": {"name": "n", "labels": labels},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}
            }))
            .unwrap()
        };
        assert!(node_eligible(&node(json!({}), "True")));
        assert!(!node_eligible(&node(json!({}), "Unknown")));
        assert!(!node_eligible(&node(json!({EXCLUDE_LABEL: ""}), "True")));
    }

    #[test]
    fn local_endpoints_by_node() {
        let slice: EndpointSlice = serde_json::from_value(json!({
            "metadata": {"name": "web-abc", "namespace": "default", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                {"addresses": ["10.244.1.2"], "nodeName": "node1"},
                {"addresses": ["10.244.2.2"], "nodeName": "node2", "conditions": {"ready": false}},
                {"addresses": ["10.244.3.2"], "nodeName": "node3", "conditions": {"ready": true}}
            ]
        }))
        .unwrap();
        let got = nodes_with_ready_endpoints("default", "web", [&slice]);
        assert_eq!(got.into_iter().collect::<Vec<_>>(), ["node1", "node3"]);
        assert!(nodes_with_ready_endpoints("other", "web", [&slice]).is_empty());
    }
}
