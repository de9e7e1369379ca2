//! Makes the node's own DNS server the endpoint of `kube-system/kube-dns`.
//!
//! In Kubernetes, kube-dns' endpoints are CoreDNS pods. svcnet's DNS runs inside every node agent instead,
//! so each node publishes an EndpointSlice of its own naming its DNS listener (managed by `svcnet-agent`,
//! the label node agents have always written, which the EndpointSlice controller leaves alone). Pods then reach cluster DNS through the kube-dns
//! ClusterIP like any Service, through the data plane (userspace proxy or nftables DNAT); with several
//! nodes, every node's DNS is an endpoint, and all of them answer alike.

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tracing::{info, warn};

/// The managed-by label value of the slices node agents write.
pub const MANAGED_BY: &str = "svcnet-agent";

/// The slice a node's agent publishes for kube-dns: its name and body.
pub fn kube_dns_slice(node: &str, dns: SocketAddr) -> (String, serde_json::Value) {
    let name = format!("kube-dns-{node}");
    let body = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "labels": {
                "kubernetes.io/service-name": "kube-dns",
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
        },
        "addressType": if dns.is_ipv6() { "IPv6" } else { "IPv4" },
        "endpoints": [{
            "addresses": [dns.ip().to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
            "nodeName": node,
        }],
        "ports": [
            {"name": "dns", "port": dns.port(), "protocol": "UDP"},
            {"name": "dns-tcp", "port": dns.port(), "protocol": "TCP"},
        ],
    });
    (name, body)
}

/// Publishes (server-side apply) the node's DNS endpoint for kube-dns, retrying until the API takes it.
pub async fn publish(client: Client, node: String, dns: SocketAddr) {
    let api: Api<EndpointSlice> = Api::namespaced(client, "kube-system");
    let (name, body) = kube_dns_slice(&node, dns);
    let params = PatchParams::apply(MANAGED_BY).force();
    let mut delay = Duration::from_millis(200);
    loop {
        match api.patch(&name, &params, &Patch::Apply(&body)).await {
            Ok(_) => {
                info!(slice = %name, endpoint = %dns, "kube-dns endpoint published: this node's DNS");
                return;
            }
            Err(e) => {
                warn!(error = %e, "publishing the kube-dns endpoint failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slice_names_the_node_and_both_protocols() {
        let (name, body) = kube_dns_slice("n1", "10.244.0.1:53".parse().unwrap());
        assert_eq!(name, "kube-dns-n1");
        let s: EndpointSlice = serde_json::from_value(body).unwrap();
        assert_eq!(s.address_type, "IPv4");
        assert_eq!(s.endpoints[0].node_name.as_deref(), Some("n1"));
        let ports: Vec<_> = s
            .ports
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p.name.clone().unwrap(),
                    p.protocol.clone().unwrap(),
                    p.port.unwrap(),
                )
            })
            .collect();
        assert_eq!(
            ports,
            [
                ("dns".into(), "UDP".into(), 53),
                ("dns-tcp".into(), "TCP".into(), 53)
            ]
        );
    }
}
