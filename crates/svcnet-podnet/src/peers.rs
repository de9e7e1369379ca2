//! The remote nodes a node must reach pods on, from the watched Node objects (pure: no I/O), and the
//! flannel annotations a node publishes about itself.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use k8s_openapi::api::core::v1::Node;

/// flannel's annotation naming the node's backend (`vxlan`, `host-gw`).
pub const BACKEND_TYPE: &str = "flannel.alpha.coreos.com/backend-type";
/// flannel's annotation with the backend's data: for vxlan `{"VNI":1,"VtepMAC":"aa:bb:…"}`.
pub const BACKEND_DATA: &str = "flannel.alpha.coreos.com/backend-data";
/// flannel's annotation with the node's underlay address.
pub const PUBLIC_IP: &str = "flannel.alpha.coreos.com/public-ip";

/// A remote node as the pod network sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The Node's name.
    pub name: String,
    /// Its pod block (`spec.podCIDR`).
    pub pod_cidr: Ipv4Net,
    /// Its InternalIP.
    pub node_ip: Ipv4Addr,
    /// Its VXLAN tunnel endpoint's MAC (from [`BACKEND_DATA`]), if it published one.
    pub vtep_mac: Option<[u8; 6]>,
}

/// The node's InternalIP (IPv4), as the kubelet reports it.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| match a.address.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) => Some(v4),
            _ => None,
        })
}

/// The node's IPv4 pod block.
pub fn pod_cidr(node: &Node) -> Option<Ipv4Net> {
    node.spec.as_ref()?.pod_cidr.as_ref()?.parse().ok()
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Formats a MAC as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The VTEP MAC a node published in flannel's [`BACKEND_DATA`] annotation.
pub fn vtep_mac(node: &Node) -> Option<[u8; 6]> {
    let data = node.metadata.annotations.as_ref()?.get(BACKEND_DATA)?;
    let v: serde_json::Value = serde_json::from_str(data).ok()?;
    parse_mac(v.get("VtepMAC")?.as_str()?)
}

/// Every node but `me` that has a pod block and an IPv4 InternalIP, by pod block. Nodes being deleted
/// still count until they are gone (their pods may still be running). Two nodes claiming one block (the
/// IPAM never does that) keep the first by name, so every node picks the same one; a block overlapping
/// `me`'s own is never a peer's (its pods are on this node's bridge).
pub fn peers<'a>(nodes: impl IntoIterator<Item = &'a Node>, me: &str) -> BTreeMap<Ipv4Net, Peer> {
    let nodes: Vec<&Node> = nodes.into_iter().collect();
    let mine = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(me))
        .and_then(|n| pod_cidr(n));
    let mut all: Vec<Peer> = nodes
        .into_iter()
        .filter_map(|n| {
            let name = n.metadata.name.clone()?;
            (name != me).then_some(())?;
            let block = pod_cidr(n)?;
            mine.is_none_or(|m| !m.contains(&block) && !block.contains(&m))
                .then_some(())?;
            Some(Peer {
                pod_cidr: block,
                node_ip: internal_ip(n)?,
                vtep_mac: vtep_mac(n),
                name,
            })
        })
        .collect();
    all.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = BTreeMap::new();
    for p in all {
        out.entry(p.pod_cidr).or_insert(p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: Option<&str>, ip: Option<&str>, mac: Option<&str>) -> Node {
        let mut v = json!({"metadata": {"name": name}, "spec": {}, "status": {"addresses": []}});
        if let Some(c) = cidr {
            v["spec"]["podCIDR"] = json!(c);
        }
        if let Some(ip) = ip {
            v["status"]["addresses"] =
                json!([{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]);
        }
        if let Some(mac) = mac {
            v["metadata"]["annotations"] =
                json!({BACKEND_DATA: json!({"VNI": 1, "VtepMAC": mac}).to_string()});
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn peers_are_the_other_nodes_with_a_block_and_an_address() {
        let nodes = [
            node("n1", Some("10.244.0.0/24"), Some("172.18.0.11"), None),
            node(
                "n2",
                Some("10.244.1.0/24"),
                Some("172.18.0.12"),
                Some("0a:00:00:00:00:02"),
            ),
            node("n3", None, Some("172.18.0.13"), None),
            node("n4", Some("10.244.3.0/24"), None, None),
            node("n5", Some("10.244.4.0/24"), Some("fd00::5"), None),
            node("n6", Some("10.244.1.0/24"), Some("172.18.0.16"), None),
        ];
        let p = peers(&nodes, "n1");
        assert_eq!(p.len(), 1, "{p:?}");
        let n2 = &p[&"10.244.1.0/24".parse().unwrap()];
        assert_eq!(n2.name, "n2", "the first by name keeps a doubly claimed block");
        assert_eq!(n2.node_ip, Ipv4Addr::new(172, 18, 0, 12));
        assert_eq!(n2.vtep_mac, Some([10, 0, 0, 0, 0, 2]));
        // n6 claims n2's own block: from n2's side it is no peer.
        let p = peers(&nodes, "n2");
        assert_eq!(
            p.keys().map(|k| k.to_string()).collect::<Vec<_>>(),
            ["10.244.0.0/24"]
        );
    }

    #[test]
    fn macs_round_trip() {
        let mac = parse_mac("de:ad:BE:ef:00:01").unwrap();
        assert_eq!(format_mac(&mac), "de:ad:be:ef:00:01");
        for bad in ["", "de:ad:be:ef:00", "de:ad:be:ef:00:01:02", "zz:ad:be:ef:00:01"] {
            assert!(parse_mac(bad).is_none(), "{bad}");
        }
    }
}
