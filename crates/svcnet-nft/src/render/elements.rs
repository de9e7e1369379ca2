//! Set and map elements: the frontend keys, the elements of the verdict maps, the no-endpoint, ClusterIP
//! and hairpin sets and the endpoint maps, both as nft writes them and as the kernel stores them (for
//! the netlink batch), and the ClientIP-affinity entries read back from the kernel.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

use svcnet_dataplane::{Endpoint, Protocol};

use crate::family::Family;
use crate::netlink;
use crate::slots::slot_ranges;

/// A frontend key: `address . protocol . port`, or `protocol . port` for NodePorts.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    /// A ClusterIP, external IP or load-balancer IP with its port.
    Frontend(IpAddr, Protocol, u16),
    /// A NodePort.
    NodePort(Protocol, u16),
}

fn proto_number(p: Protocol) -> u8 {
    match p {
        Protocol::Tcp => 6,
        Protocol::Udp => 17,
        Protocol::Sctp => 132,
    }
}

impl Key {
    fn text(&self) -> String {
        match self {
            Key::Frontend(ip, p, port) => format!("{ip} . {} . {port}", p.lower()),
            Key::NodePort(p, port) => format!("{} . {port}", p.lower()),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Key::Frontend(ip, p, port) => netlink::addr_proto_port(*ip, proto_number(*p), *port),
            Key::NodePort(p, port) => netlink::proto_port(proto_number(*p), *port),
        }
    }
}

/// One element of a map or set.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Elem {
    /// A verdict-map element: frontend → `goto CHAIN`.
    Goto(Key, String),
    /// A member of a plain frontend set.
    Member(Key),
    /// An address (`cluster-ips`).
    Addr(IpAddr),
    /// `ip . ip` (`hairpin`).
    Pair(IpAddr),
    /// `protocol . first..=last` (`numgen` slots) of an endpoint map → one endpoint.
    Slots(Protocol, u32, u32, IpAddr, u16),
}

impl Elem {
    /// The element's key as nft writes it (what a deletion names).
    pub fn key_text(&self) -> String {
        match self {
            Elem::Goto(k, _) | Elem::Member(k) => k.text(),
            Elem::Addr(ip) => ip.to_string(),
            Elem::Pair(ip) => format!("{ip} . {ip}"),
            Elem::Slots(proto, first, last, ..) => format!("{} . {first}-{last}", proto.lower()),
        }
    }

    /// The element as nft writes it.
    pub fn text(&self) -> String {
        match self {
            Elem::Goto(_, chain) => format!("{} : goto {chain}", self.key_text()),
            Elem::Slots(.., ip, port) => format!("{} : {ip} . {port}", self.key_text()),
            _ => self.key_text(),
        }
    }

    /// The element as the kernel stores it.
    pub fn netlink(&self) -> netlink::Element {
        let plain = |key: Vec<u8>, data: Option<netlink::ElementData>| netlink::Element {
            key,
            key_end: None,
            data,
            interval_end: false,
        };
        match self {
            Elem::Goto(k, chain) => plain(k.bytes(), Some(netlink::ElementData::Goto(chain.clone()))),
            Elem::Member(k) => plain(k.bytes(), None),
            Elem::Addr(ip) => plain(netlink::addr(*ip), None),
            Elem::Pair(ip) => plain(netlink::addr_pair(*ip, *ip), None),
            Elem::Slots(proto, first, last, ip, port) => netlink::slot_range(
                proto_number(*proto),
                *first,
                *last,
                netlink::addr_port(*ip, *port),
            ),
        }
    }
}

/// The elements of an endpoint map for `eps`, in order, `offset` up in the map's slot space.
pub(super) fn slot_elements(proto: Protocol, offset: u32, eps: &[&Endpoint]) -> BTreeSet<Elem> {
    slot_ranges(eps.len())
        .into_iter()
        .zip(eps)
        .map(|((lo, hi), ep)| Elem::Slots(proto, offset + lo, offset + hi, ep.ip, ep.port))
        .collect()
}

/// Client addresses in ClientIP-affinity sets, with the seconds each has left: (family, set name) →
/// (address, seconds). A full sync carries them into the new tables, so that clients keep their
/// endpoints across a restart or a periodic resync, as they do with kube-proxy.
pub type AffinityEntries = HashMap<(Family, String), Vec<(IpAddr, u64)>>;

/// The affinity entries in `nft -j list sets FAMILY` output that belong to `table`.
pub fn parse_affinity_entries(fam: Family, table: &str, json: &serde_json::Value) -> AffinityEntries {
    let mut out = AffinityEntries::new();
    let items = json["nftables"].as_array().map(Vec::as_slice).unwrap_or_default();
    for set in items.iter().filter_map(|i| i.get("set")) {
        let Some(name) = set["name"].as_str().filter(|n| n.starts_with("affinity-")) else {
            continue;
        };
        if set["table"].as_str() != Some(table) {
            continue;
        }
        let entries = set["elem"].as_array().map(Vec::as_slice).unwrap_or_default();
        let kept: Vec<(IpAddr, u64)> = entries
            .iter()
            .filter_map(|e| {
                let e = &e["elem"];
                let ip = e["val"].as_str()?.parse().ok()?;
                Some((ip, e["expires"].as_u64()?))
            })
            .collect();
        if !kept.is_empty() {
            out.insert((fam, name.to_string()), kept);
        }
    }
    out
}
