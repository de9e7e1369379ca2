//! The names of the objects in the tables: the table-wide sets, maps and chains, and the per-port and
//! per-endpoint chains and sets, whose names carry the port's (and endpoint's) identity so that an
//! incremental change can replace exactly one port's objects.

use svcnet_dataplane::{Endpoint, Protocol, ServicePortName};

/// Longest name nftables accepts for a chain or set, minus room for our longest prefix (`endpoint-`, …).
const NAME_BASE_MAX: usize = 256 - 24;

/// kube-proxy's `hashAndTruncate`: a short hash in front keeps names unique when they must be cut, and
/// makes names that differ in one digit easy to tell apart. FNV-1a, not kube-proxy's SHA-256: the names
/// are ours alone, and only stability matters.
fn hash_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 9);
    out.push_str(&base32(fnv1a(name.as_bytes()), 8));
    out.push('-');
    out.push_str(name);
    if out.len() > NAME_BASE_MAX {
        out.truncate(NAME_BASE_MAX - 3);
        out.push_str("...");
    }
    out
}

/// FNV-1a, 64 bits.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The first `n` (at most 12) base32 digits of `h`, most significant first.
pub(super) fn base32(h: u64, n: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..n.min(12))
        .map(|i| ALPHABET[((h >> (59 - 5 * i)) & 31) as usize] as char)
        .collect()
}

/// `HASH-ns/name/proto/port`: namespace, Service and port names are `[a-z0-9-]`, so `/` separates them
/// unambiguously and they can go into nftables names as they are.
pub(super) fn port_base(name: &ServicePortName) -> String {
    hash_name(&format!(
        "{}/{}/{}/{}",
        name.namespace,
        name.name,
        name.protocol.lower(),
        name.port
    ))
}

/// `HASH-ns/name/proto/port__ip/port`; IPv6 colons become dots (colons are not allowed in names).
fn endpoint_base(name: &ServicePortName, ep: &Endpoint) -> String {
    let ip = ep.ip.to_string().replace(':', ".");
    hash_name(&format!(
        "{}/{}/{}/{}__{}/{}",
        name.namespace,
        name.name,
        name.protocol.lower(),
        name.port,
        ip,
        ep.port
    ))
}

/// The chain where ClusterIP traffic of a port chooses among its internal endpoints.
pub fn service_chain(name: &ServicePortName) -> String {
    format!("service-{}", port_base(name))
}

/// The chain one endpoint's traffic goes through (masquerade mark on hairpin, affinity, DNAT).
pub fn endpoint_chain(name: &ServicePortName, ep: &Endpoint) -> String {
    format!("endpoint-{}", endpoint_base(name, ep))
}

pub(super) fn external_chain(name: &ServicePortName) -> String {
    format!("external-{}", port_base(name))
}

pub(super) fn firewall_chain(name: &ServicePortName) -> String {
    format!("firewall-{}", port_base(name))
}

/// How many service ports share one endpoint map (see [`endpoint_map`]).
pub const PORTS_PER_MAP: u32 = 32;

/// The endpoint map that port `id`'s internal (`external` false) or external endpoints are in: one map per
/// protocol and group of [`PORTS_PER_MAP`] ports, the port's ranges at its own offset in the slot space.
/// A map per port made a full load quadratic (the kernel finds a set by name in a linear list, for
/// every rule and element message that names it: 12 s at 10,000 Services); a single map for all would
/// make every endpoint change copy a pipapo set of tens of thousands of ranges.
pub(super) fn endpoint_map(protocol: Protocol, external: bool, id: u32) -> String {
    format!(
        "{}endpoints-{}-{}",
        if external { "external-" } else { "" },
        protocol.lower(),
        id / PORTS_PER_MAP
    )
}

pub(super) fn affinity_set(name: &ServicePortName, ep: &Endpoint) -> String {
    format!("affinity-{}", endpoint_base(name, ep))
}

/// Verdict maps: where a frontend's traffic goes. Their elements change only with a Service's spec.
pub(super) const SERVICE_IPS: &str = "service-ips";
pub(super) const SERVICE_NODEPORTS: &str = "service-nodeports";
pub(super) const FIREWALL_IPS: &str = "firewall-ips";
/// Plain sets whose members follow the endpoints: frontends without any endpoint (rejected), and frontends
/// whose traffic policy leaves no endpoint for them (dropped, as kube-proxy does).
pub(super) const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
pub(super) const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
pub(super) const NO_LOCAL_SERVICES: &str = "no-local-endpoint-services";
pub(super) const NO_LOCAL_NODEPORTS: &str = "no-local-endpoint-nodeports";
/// Shared sets, counted by [`Programmed`](super::Programmed): every ClusterIP, and `ip . ip` for every endpoint address
/// (DNATed traffic whose source is its destination is hairpin traffic and must be masqueraded).
pub(super) const CLUSTER_IPS: &str = "cluster-ips";
pub(super) const HAIRPIN: &str = "hairpin";
pub(super) const POD_CIDRS: &str = "pod-cidrs";
pub(super) const REJECT_CHAIN: &str = "reject-chain";
pub(super) const MARK_MASQ: &str = "mark-for-masquerade";
