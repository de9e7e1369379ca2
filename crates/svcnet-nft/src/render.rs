//! The ruleset as text: what each service port becomes in nftables, the full ruleset for a resync and the
//! minimal transaction for a batch of changes. Pure functions, so golden tests pin the exact output.
//!
//! The layout follows kube-proxy's nftables mode. One table per IP family holds
//!
//! - base chains on the netfilter hooks (`nat-prerouting`/`nat-output` jump to `services`,
//!   `nat-postrouting` masquerades what `mark-for-masquerade` marked and hairpin traffic, `filter-*`
//!   reject and drop);
//! - verdict maps keyed by `address . protocol . port` (`service-ips`, `firewall-ips`) or `protocol .
//!   port` (`service-nodeports`), so the cost of finding a service does not grow with the number of
//!   services, and plain sets of the same keys for frontends without endpoints (`no-endpoint-*`,
//!   rejected) or without endpoints their traffic policy allows (`no-local-endpoint-*`, dropped);
//! - per service port: `service-…` (internal endpoints), `external-…` (NodePort/externalIP/LB traffic and
//!   the externalTrafficPolicy), `local-…`/`cluster-…` (the external endpoints when the two policies
//!   differ) and `firewall-…` (loadBalancerSourceRanges).
//!
//! One deliberate difference: kube-proxy DNATs in one chain per endpoint, chosen by `numgen random mod N
//! vmap { … }`. Here a chain DNATs with `numgen random mod 65536` through an interval map that gives each
//! endpoint an equal share of the slots (see `dispatch`), so that endpoints are map elements only: an
//! endpoint change rewrites no rule, which with 10,000 Services is the difference between 0.2 s and a
//! fraction of a millisecond (the kernel re-validates the whole table whenever a transaction adds a
//! jump, goto or NAT rule). Services with ClientIP affinity keep kube-proxy's per-endpoint chains with
//! timed sets.
//!
//! Every object a port owns carries the port's name, so an incremental change replaces exactly one port's
//! objects.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use svcnet_dataplane::{Change, Endpoint, Protocol, ServicePort, ServicePortName};

use crate::NftConfig;
use crate::netlink::{self, SLOTS};

/// The packet mark bit that asks `nat-postrouting` to masquerade (kube-proxy's default, bit 14).
pub const MASQUERADE_MARK: u32 = 0x4000;
/// Longest name nftables accepts for a chain or set, minus room for our longest prefix (`endpoint-`, …).
const NAME_BASE_MAX: usize = 256 - 24;

/// An IP family: each has its own table (`ip svcnet`, `ip6 svcnet`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4: table family `ip`.
    V4,
    /// IPv6: table family `ip6`.
    V6,
}

impl Family {
    /// The nftables table family keyword (`ip`, `ip6`); also the payload protocol in rules.
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv6() { Family::V6 } else { Family::V4 }
    }

    fn has(self, ip: &IpAddr) -> bool {
        Family::of(ip) == self
    }

    fn net_has(self, net: &IpNet) -> bool {
        self.has(&net.addr())
    }

    fn v6(self) -> bool {
        self == Family::V6
    }
}

/// The families the configuration programs, in table order.
pub(crate) fn families(cfg: &NftConfig) -> Vec<Family> {
    let mut f = vec![Family::V4];
    if cfg.ipv6 {
        f.push(Family::V6);
    }
    f
}

/// kube-proxy's `hashAndTruncate`: a short hash in front keeps names unique when they must be cut, and
/// makes names that differ in one digit easy to tell apart. FNV-1a, not kube-proxy's SHA-256: the names
/// are ours alone, and only stability matters.
fn hash_name(name: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = String::with_capacity(name.len() + 9);
    for i in 0..8 {
        out.push(ALPHABET[((h >> (59 - 5 * i)) & 31) as usize] as char);
    }
    out.push('-');
    out.push_str(name);
    if out.len() > NAME_BASE_MAX {
        out.truncate(NAME_BASE_MAX - 3);
        out.push_str("...");
    }
    out
}

/// `HASH-ns/name/proto/port`: namespace, Service and port names are `[a-z0-9-]`, so `/` separates them
/// unambiguously and they can go into nftables names as they are.
fn port_base(name: &ServicePortName) -> String {
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

fn external_chain(name: &ServicePortName) -> String {
    format!("external-{}", port_base(name))
}

fn firewall_chain(name: &ServicePortName) -> String {
    format!("firewall-{}", port_base(name))
}

fn affinity_set(name: &ServicePortName, ep: &Endpoint) -> String {
    format!("affinity-{}", endpoint_base(name, ep))
}

/// Verdict maps: where a frontend's traffic goes. Their elements change only with a Service's spec.
const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const FIREWALL_IPS: &str = "firewall-ips";
/// Plain sets whose members follow the endpoints: frontends without any endpoint (rejected), and frontends
/// whose traffic policy leaves no endpoint for them (dropped, as kube-proxy does).
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const NO_LOCAL_SERVICES: &str = "no-local-endpoint-services";
const NO_LOCAL_NODEPORTS: &str = "no-local-endpoint-nodeports";
/// Shared sets, counted by [`Programmed`]: every ClusterIP, and `ip . ip` for every endpoint address
/// (DNATed traffic whose source is its destination is hairpin traffic and must be masqueraded).
const CLUSTER_IPS: &str = "cluster-ips";
const HAIRPIN: &str = "hairpin";
const POD_CIDRS: &str = "pod-cidrs";
const REJECT_CHAIN: &str = "reject-chain";
const MARK_MASQ: &str = "mark-for-masquerade";

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

/// The slot ranges of `n` endpoints: adjacent, together `0..SLOTS`, sizes differing by at most one.
/// More than [`SLOTS`] endpoints get the first [`SLOTS`] ranges (one slot each).
pub fn slot_ranges(n: usize) -> Vec<(u32, u32)> {
    let n = n.min(SLOTS as usize) as u64;
    (0..n)
        .map(|i| {
            let lo = i * u64::from(SLOTS) / n;
            let hi = (i + 1) * u64::from(SLOTS) / n - 1;
            (lo as u32, hi as u32)
        })
        .collect()
}

/// The elements of an endpoint map for `eps`, in order.
fn slot_elements(proto: Protocol, eps: &[&Endpoint]) -> BTreeSet<Elem> {
    slot_ranges(eps.len())
        .into_iter()
        .zip(eps)
        .map(|((lo, hi), ep)| Elem::Slots(proto, lo, hi, ep.ip, ep.port))
        .collect()
}

/// A set or map declaration: `(is a map, body)`.
type Decl = (bool, String);

/// Everything one service port owns in one family's table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PortObjects {
    /// Set or map name → the elements this port owns in it.
    pub elements: BTreeMap<String, BTreeSet<Elem>>,
    /// Sets and maps of this port (endpoint maps, affinity sets) → declaration.
    pub sets: BTreeMap<String, Decl>,
    /// Chain name → rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
}

impl PortObjects {
    fn add(&mut self, set: &str, e: Elem) {
        self.elements.entry(set.to_string()).or_default().insert(e);
    }
}

/// How rules name the pod CIDRs of a family: the prefix itself, or the `pod-cidrs` set when there are
/// several (an inline `{ … }` would be an anonymous set per rule, which nft 1.0.x handles slowly).
fn pod_match(pod_cidrs: &[&IpNet]) -> String {
    if pod_cidrs.len() == 1 {
        pod_cidrs[0].to_string()
    } else {
        format!("@{POD_CIDRS}")
    }
}

fn ip_list(nets: &[&IpNet]) -> String {
    if nets.len() == 1 {
        nets[0].to_string()
    } else {
        let v: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
        format!("{{ {} }}", v.join(", "))
    }
}

fn dnat_target(ep: &Endpoint) -> String {
    match ep.ip {
        IpAddr::V4(ip) => format!("{ip}:{}", ep.port),
        IpAddr::V6(ip) => format!("[{ip}]:{}", ep.port),
    }
}

/// Whether the port has any usable endpoint of this family (kube-proxy runs one proxier per family, so a
/// family without endpoints rejects even if the other family has some).
fn family_has_endpoints(sp: &ServicePort, fam: Family) -> bool {
    if !sp.has_endpoints {
        return false;
    }
    if sp.all_endpoints.is_empty() {
        // Nothing to tell families apart with: trust the model.
        return true;
    }
    sp.all_endpoints
        .iter()
        .any(|e| fam.has(&e.ip) && (e.ready || e.serving))
}

/// Whether the port exists at all in this family's table: kube-proxy's per-family proxier only sees a
/// Service through a ClusterIP of its family.
fn in_family(sp: &ServicePort, fam: Family) -> bool {
    if sp.cluster_ips.is_empty() {
        sp.external_ips
            .iter()
            .chain(&sp.load_balancer_ips)
            .any(|ip| fam.has(ip))
    } else {
        sp.cluster_ips.iter().any(|ip| fam.has(ip))
    }
}

/// The endpoint sets a port's chains can pick from in one family: (internal, external), each empty when
/// no chain uses it.
fn endpoint_sets(sp: &ServicePort, fam: Family) -> (Vec<&Endpoint>, Vec<&Endpoint>) {
    if !in_family(sp, fam) || !family_has_endpoints(sp, fam) {
        return (Vec::new(), Vec::new());
    }
    (
        sp.internal_for(fam.v6()).collect(),
        sp.external_for(fam.v6()).collect(),
    )
}

/// The addresses of the endpoints a port's chains can pick (its `hairpin` elements), in all families.
fn hairpin_ips(sp: &ServicePort) -> BTreeSet<IpAddr> {
    let mut out = BTreeSet::new();
    for fam in [Family::V4, Family::V6] {
        let (internal, external) = endpoint_sets(sp, fam);
        out.extend(internal.iter().chain(&external).map(|e| e.ip));
    }
    out
}

/// The rules (and objects) that send a chain's traffic to one of `eps`.
///
/// Without session affinity the rule is one `dnat … to numgen random mod 65536 map @MAP` whose map gives
/// each endpoint an equal share of the slots (kube-proxy writes `numgen random mod N vmap { … }` into
/// per-endpoint chains instead). The rule does not depend on the endpoints, so an endpoint change is only
/// map elements: no rule is rewritten, nft need not read the ruleset back, and the kernel need not
/// re-validate the table (which adding jump, goto or NAT rules costs with thousands of chains). An empty
/// map makes the rule fail to match; the no-endpoint sets have rejected or dropped such traffic before.
///
/// The key is `meta l4proto . numgen …`, not the slot alone, because a concatenated interval key makes the
/// kernel keep the map as a pipapo set, which swaps in a new copy at commit. A single-field interval map
/// is an rbtree, where a lookup during an update can land on an element the transaction has just added
/// and miss (measured: about one new connection in 20,000 was refused or lost while endpoints changed).
///
/// With ClientIP affinity it is kube-proxy's layout: a rule per endpoint sends clients found in the
/// endpoint's timed set to its chain, then a `numgen random mod k 0 goto …` ladder picks one (uniform, like
/// iptables mode's `statistic` rules; inline vmaps are quadratic in nft 1.0.x). Endpoint changes of these
/// Services rewrite chains.
fn dispatch(
    sp: &ServicePort,
    eps: &[&Endpoint],
    map: String,
    fam: Family,
    rules: &mut Vec<String>,
    o: &mut PortObjects,
) {
    let name = &sp.name;
    let ipx = fam.nft();
    let proto = name.protocol.lower();
    let Some(timeout) = sp.affinity_timeout else {
        o.sets.insert(
            map.clone(),
            (
                true,
                // The protocol must match the rule's (nft checks), though the data type is the same.
                format!(
                    "typeof meta l4proto . numgen random mod {SLOTS} : {ipx} daddr . {proto} dport; \
                     flags interval;"
                ),
            ),
        );
        rules.push(format!(
            "meta l4proto {proto} dnat {ipx} to meta l4proto . numgen random mod {SLOTS} map @{map}"
        ));
        if !eps.is_empty() {
            o.elements.insert(map, slot_elements(name.protocol, eps));
        }
        return;
    };
    for ep in eps {
        rules.push(format!(
            "{ipx} saddr @{} goto {}",
            affinity_set(name, ep),
            endpoint_chain(name, ep)
        ));
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let target = format!("goto {}", endpoint_chain(name, ep));
        match n - i {
            1 => rules.push(target),
            left => rules.push(format!("numgen random mod {left} 0 {target}")),
        }
    }
    for ep in eps {
        let set = affinity_set(name, ep);
        o.sets.insert(
            set.clone(),
            (
                false,
                format!(
                    "type {}; flags dynamic,timeout; timeout {}s;",
                    fam.addr_type(),
                    timeout.as_secs().max(1)
                ),
            ),
        );
        o.chains.insert(
            endpoint_chain(name, ep),
            vec![
                format!("update @{set} {{ {ipx} saddr }}"),
                format!("meta l4proto {proto} dnat to {}", dnat_target(ep)),
            ],
        );
    }
}

/// What one service port becomes in one family's table (see the module docs for the layout). Chains,
/// declarations and verdict-map elements depend only on the Service's spec; endpoints only change the
/// endpoint maps' elements and the no-endpoint sets' members (and, with affinity, the chains).
pub(crate) fn port_objects(sp: &ServicePort, fam: Family, cfg: &NftConfig) -> PortObjects {
    let mut o = PortObjects::default();
    if !in_family(sp, fam) {
        return o;
    }
    let name = &sp.name;
    let proto = name.protocol;
    let ipx = fam.nft();
    let (internal, external) = endpoint_sets(sp, fam);
    let has_eps = family_has_endpoints(sp, fam);
    let base = port_base(name);
    let svc_chain = service_chain(name);
    let ext_chain = external_chain(name);
    let pod_cidrs: Vec<&IpNet> = cfg.pod_cidrs.iter().filter(|n| fam.net_has(n)).collect();
    // No endpoints at all: reject (the client learns at once); endpoints exist but the traffic policy
    // leaves none for this traffic: drop, as kube-proxy does.
    let (no_svc, no_np) = if has_eps {
        (NO_LOCAL_SERVICES, NO_LOCAL_NODEPORTS)
    } else {
        (NO_ENDPOINT_SERVICES, NO_ENDPOINT_NODEPORTS)
    };
    let key = |ip: &IpAddr| Key::Frontend(*ip, proto, sp.port);

    let cluster_ips: Vec<&IpAddr> = sp.cluster_ips.iter().filter(|ip| fam.has(ip)).collect();
    let external_ips: Vec<&IpAddr> = sp.external_ips.iter().filter(|ip| fam.has(ip)).collect();
    let lb_ips: Vec<&IpAddr> = sp.load_balancer_ips.iter().filter(|ip| fam.has(ip)).collect();
    let externally_accessible = sp.node_port.is_some() || !external_ips.is_empty() || !lb_ips.is_empty();
    // Internal and external traffic pick from the same endpoints exactly when both policies are the same
    // (the model's CategorizeEndpoints), and then share the service chain.
    let shared = sp.internal_policy_local == sp.external_policy_local;
    let ext_policy_chain = if shared {
        svc_chain.clone()
    } else if sp.external_policy_local {
        format!("local-{base}")
    } else {
        format!("cluster-{base}")
    };

    for cip in &cluster_ips {
        o.add(SERVICE_IPS, Elem::Goto(key(cip), svc_chain.clone()));
        if internal.is_empty() {
            o.add(no_svc, Elem::Member(key(cip)));
        }
    }
    for ip in external_ips.iter().chain(&lb_ips) {
        o.add(SERVICE_IPS, Elem::Goto(key(ip), ext_chain.clone()));
        if external.is_empty() {
            o.add(no_svc, Elem::Member(key(ip)));
        }
    }
    if let Some(np) = sp.node_port {
        let k = Key::NodePort(proto, np);
        o.add(SERVICE_NODEPORTS, Elem::Goto(k.clone(), ext_chain.clone()));
        if external.is_empty() {
            o.add(no_np, Elem::Member(k));
        }
    }

    // loadBalancerSourceRanges: LB traffic from elsewhere is dropped before DNAT (NodePorts are exempt,
    // as in kube-proxy).
    let ranges: Vec<&IpNet> = sp
        .load_balancer_source_ranges
        .iter()
        .filter(|n| fam.net_has(n))
        .collect();
    if !lb_ips.is_empty() && !ranges.is_empty() {
        let fw = firewall_chain(name);
        let mut sources: Vec<String> = ranges.iter().map(|n| n.to_string()).collect();
        // A node may reach its own LB VIP with the VIP as source address; let that through when the
        // node itself is allowed.
        if cfg
            .node_ips
            .iter()
            .any(|ip| ranges.iter().any(|n| n.contains(ip)))
        {
            sources.extend(lb_ips.iter().map(|ip| ip.to_string()));
        }
        // One rule per allowed source rather than `!= { … }`: no anonymous set per Service.
        let mut rules: Vec<String> = sources
            .iter()
            .map(|s| format!("{ipx} saddr {s} return"))
            .collect();
        rules.push("drop".to_string());
        o.chains.insert(fw.clone(), rules);
        for ip in &lb_ips {
            o.add(FIREWALL_IPS, Elem::Goto(key(ip), fw.clone()));
        }
    }

    let mut rules = Vec::new();
    for cip in &cluster_ips {
        let m = format!("{ipx} daddr {cip} {} dport {}", proto.lower(), sp.port);
        if cfg.masquerade_all {
            rules.push(format!("{m} jump {MARK_MASQ}"));
        } else if !pod_cidrs.is_empty() {
            // Off-cluster clients routed to a ClusterIP: the endpoint may answer via another node.
            rules.push(format!(
                "{m} {ipx} saddr != {} jump {MARK_MASQ}",
                pod_match(&pod_cidrs)
            ));
        }
    }
    dispatch(
        sp,
        &internal,
        format!("endpoints-{base}"),
        fam,
        &mut rules,
        &mut o,
    );
    o.chains.insert(svc_chain.clone(), rules);

    if externally_accessible {
        let mut rules = Vec::new();
        if !sp.external_policy_local {
            // The endpoint may be on another node: masquerade so replies come back through us.
            rules.push(format!("jump {MARK_MASQ}"));
        } else {
            // Pods and the node itself are "inside": traffic policy does not apply to them (it simulates
            // going out to the load balancer and coming back).
            if !pod_cidrs.is_empty() {
                rules.push(format!(
                    "{ipx} saddr {} goto {svc_chain} comment \"short-circuit pod traffic\"",
                    pod_match(&pod_cidrs)
                ));
            }
            rules.push(format!(
                "fib saddr type local jump {MARK_MASQ} comment \"masquerade local traffic\""
            ));
            rules.push(format!(
                "fib saddr type local goto {svc_chain} comment \"short-circuit local traffic\""
            ));
        }
        rules.push(format!("goto {ext_policy_chain}"));
        o.chains.insert(ext_chain, rules);
        if !shared {
            let mut rules = Vec::new();
            dispatch(
                sp,
                &external,
                format!(
                    "{}-endpoints-{base}",
                    if sp.external_policy_local {
                        "local"
                    } else {
                        "cluster"
                    }
                ),
                fam,
                &mut rules,
                &mut o,
            );
            o.chains.insert(ext_policy_chain, rules);
        }
    }
    o
}

/// The IPs of a port that go into the `cluster-ips` set (shared by all ports of a Service, so counted).
fn cluster_ips_of(sp: &ServicePort, fam: Family) -> impl Iterator<Item = &IpAddr> {
    sp.cluster_ips.iter().filter(move |ip| fam.has(ip))
}

fn base_chains(fam: Family, cfg: &NftConfig, out: &mut String) {
    let ipx = fam.nft();
    let no_localhost = match fam {
        Family::V4 => "ip daddr != 127.0.0.0/8",
        Family::V6 => "ip6 daddr != ::1",
    };
    let from_localhost = match fam {
        Family::V4 => "ip saddr 127.0.0.0/8",
        Family::V6 => "ip6 saddr ::1",
    };
    // Filter chains run just before DNAT (priority dstnat - 10) so they see the service address.
    let base: [(&str, &str, &str, i32, &[&str]); 8] = [
        (
            "filter-prerouting",
            "filter",
            "prerouting",
            -110,
            &["ct state new jump firewall-check"],
        ),
        (
            "filter-input",
            "filter",
            "input",
            -110,
            &["ct state new jump service-endpoints-check"],
        ),
        (
            "filter-forward",
            "filter",
            "forward",
            -110,
            &[
                "ct state new jump service-endpoints-check",
                "ct state new jump cluster-ips-check",
            ],
        ),
        (
            "filter-output",
            "filter",
            "output",
            -110,
            &[
                "ct state new jump service-endpoints-check",
                "ct state new jump firewall-check",
            ],
        ),
        // After DNAT: whatever still goes to a ClusterIP went to a port no Service has.
        (
            "filter-output-post-dnat",
            "filter",
            "output",
            -90,
            &["ct state new jump cluster-ips-check"],
        ),
        ("nat-prerouting", "nat", "prerouting", -100, &["jump services"]),
        ("nat-output", "nat", "output", -100, &["jump services"]),
        (
            "nat-postrouting",
            "nat",
            "postrouting",
            100,
            &["jump masquerading"],
        ),
    ];
    for (name, ty, hook, prio, rules) in base {
        let _ = writeln!(out, "\tchain {name} {{");
        let _ = writeln!(out, "\t\ttype {ty} hook {hook} priority {prio}; policy accept;");
        for r in rules {
            let _ = writeln!(out, "\t\t{r}");
        }
        out.push_str("\t}\n");
    }
    let svc_cidrs: Vec<&IpNet> = cfg.service_cidrs.iter().filter(|n| fam.net_has(n)).collect();
    // A TCP reset rather than kube-proxy's plain `reject`: an ICMP port-unreachable that arrives while
    // `connect()` holds the socket is dropped (Linux counts it as TcpExtLockDroppedIcmps), so the refusal
    // would only come with the SYN's retry a second later.
    let mut cluster_check = vec![format!(
        "{ipx} daddr @{CLUSTER_IPS} goto {REJECT_CHAIN} comment \"reject traffic to invalid ports of ClusterIPs\""
    )];
    if !svc_cidrs.is_empty() {
        cluster_check.push(format!(
            "{ipx} daddr {} drop comment \"drop traffic to unallocated ClusterIPs\"",
            ip_list(&svc_cidrs)
        ));
    }
    let mark = format!("{MASQUERADE_MARK:#x}");
    let frontend = format!("{ipx} daddr . meta l4proto . th dport");
    // NodePorts answer on every local address but loopback (which nftables cannot DNAT; the localhost
    // proxy serves it), or, as kube-proxy's `--nodeport-addresses`, only on the addresses given: none at
    // all in a family the list leaves out.
    let listed: Vec<String> = cfg
        .nodeport_addresses
        .iter()
        .filter(|a| fam.has(a) && !a.is_loopback())
        .map(IpAddr::to_string)
        .collect();
    let nodeport = match listed.as_slice() {
        _ if cfg.nodeport_addresses.is_empty() => Some(format!(
            "fib daddr type local {no_localhost} meta l4proto . th dport"
        )),
        [] => None,
        [one] => Some(format!("{ipx} daddr {one} meta l4proto . th dport")),
        many => Some(format!(
            "{ipx} daddr {{ {} }} meta l4proto . th dport",
            many.join(", ")
        )),
    };
    let nodeport_rule = |rest: String| nodeport.as_ref().map(|np| format!("{np} {rest}"));
    let plain: Vec<(&str, Vec<String>)> = vec![
        (
            "services",
            std::iter::once(format!("{frontend} vmap @{SERVICE_IPS}"))
                .chain(nodeport_rule(format!("vmap @{SERVICE_NODEPORTS}")))
                .collect(),
        ),
        (
            "service-endpoints-check",
            [
                format!("{frontend} @{NO_ENDPOINT_SERVICES} goto {REJECT_CHAIN}"),
                format!("{frontend} @{NO_LOCAL_SERVICES} drop"),
            ]
            .into_iter()
            .chain(nodeport_rule(format!(
                "@{NO_ENDPOINT_NODEPORTS} goto {REJECT_CHAIN}"
            )))
            .chain(nodeport_rule(format!("@{NO_LOCAL_NODEPORTS} drop")))
            .collect(),
        ),
        ("cluster-ips-check", cluster_check),
        ("firewall-check", vec![format!("{frontend} vmap @{FIREWALL_IPS}")]),
        (
            REJECT_CHAIN,
            vec![
                "meta l4proto tcp reject with tcp reset".to_string(),
                "reject".to_string(),
            ],
        ),
        (MARK_MASQ, vec![format!("meta mark set meta mark | {mark}")]),
        (
            "masquerading",
            vec![
                format!(
                    "ct status dnat {ipx} saddr . {ipx} daddr @{HAIRPIN} jump {MARK_MASQ} comment \"hairpin\""
                ),
                format!("meta mark & {mark} == 0 return"),
                format!("meta mark set meta mark ^ {mark}"),
                // Masquerading a loopback source on `lo` fails when the namespace has no address of
                // universe scope: the kernel drops the packet ("lo ate my IP address"). With loopback
                // service and pod ranges (svcnet's rootless defaults) every such connection would vanish;
                // it needs no SNAT, since the reply comes back through the same conntrack entry. Only
                // loopback sources skip it: other traffic on `lo` (a node address reaching itself through
                // a Service, as hairpin) keeps its masquerade, without which new connections ran at half
                // the rate in the scale benchmark (`examples/scale.rs`).
                format!("oif \"lo\" {from_localhost} return"),
                "masquerade fully-random".to_string(),
            ],
        ),
    ];
    for (name, rules) in plain {
        write_chain(out, name, &rules);
    }
}

fn write_chain(out: &mut String, name: &str, rules: &[String]) {
    let _ = writeln!(out, "\tchain {name} {{");
    for r in rules {
        let _ = writeln!(out, "\t\t{r}");
    }
    out.push_str("\t}\n");
}

/// The declaration of a table-wide set or map.
fn shared_decl(fam: Family, name: &str) -> Decl {
    let a = fam.addr_type();
    match name {
        SERVICE_NODEPORTS => (true, "type inet_proto . inet_service : verdict;".into()),
        SERVICE_IPS | FIREWALL_IPS => (true, format!("type {a} . inet_proto . inet_service : verdict;")),
        NO_ENDPOINT_NODEPORTS | NO_LOCAL_NODEPORTS => (false, "type inet_proto . inet_service;".into()),
        CLUSTER_IPS => (false, format!("type {a};")),
        HAIRPIN => (false, format!("type {a} . {a};")),
        _ => (false, format!("type {a} . inet_proto . inet_service;")),
    }
}

/// The timeout of an affinity set's declaration (`type …; flags dynamic,timeout; timeout 600s;`), in
/// seconds.
fn affinity_timeout_of(decl: &Decl) -> Option<u64> {
    let (_, rest) = decl.1.split_once("; timeout ")?;
    rest.strip_suffix("s;")?.parse().ok()
}

/// The table-wide sets and maps, in the order they are declared.
const SHARED: [&str; 9] = [
    CLUSTER_IPS,
    HAIRPIN,
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    FIREWALL_IPS,
    NO_ENDPOINT_SERVICES,
    NO_ENDPOINT_NODEPORTS,
    NO_LOCAL_SERVICES,
    NO_LOCAL_NODEPORTS,
];

fn write_set(out: &mut String, name: &str, decl: &Decl, elements: Option<&BTreeSet<Elem>>, raw: &[String]) {
    let kind = if decl.0 { "map" } else { "set" };
    let _ = writeln!(out, "\t{kind} {name} {{\n\t\t{}", decl.1.replace("; ", ";\n\t\t"));
    let mut v: Vec<String> = elements.into_iter().flatten().map(Elem::text).collect();
    v.extend_from_slice(raw);
    if !v.is_empty() {
        let _ = writeln!(out, "\t\telements = {{\n\t\t\t{}\n\t\t}}", v.join(",\n\t\t\t"));
    }
    out.push_str("\t}\n");
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

/// The whole ruleset for `ports`, as one transaction that replaces both tables atomically: `add table`
/// (so that the `delete` cannot fail), `delete table` (which also removes anything stale), then the tables
/// as they should be. The kernel swaps old for new at commit, so no packet sees a half-built table.
pub fn render_full(ports: &[Arc<ServicePort>], cfg: &NftConfig) -> String {
    render_full_keeping(ports, cfg, &AffinityEntries::new())
}

/// [`render_full`], with `kept` affinity entries written into the affinity sets that still exist with
/// their remaining time (at most the set's timeout).
pub fn render_full_keeping(ports: &[Arc<ServicePort>], cfg: &NftConfig, kept: &AffinityEntries) -> String {
    let mut sorted: Vec<&Arc<ServicePort>> = ports.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for fam in families(cfg) {
        let t = &cfg.table;
        let ipx = fam.nft();
        let _ = writeln!(
            out,
            "add table {ipx} {t}\ndelete table {ipx} {t}\ntable {ipx} {t} {{"
        );
        let _ = writeln!(out, "\tcomment \"svcnet service proxy rules\"");
        let mut elements: BTreeMap<String, BTreeSet<Elem>> = BTreeMap::new();
        let mut sets = BTreeMap::new();
        let mut chains = Vec::new();
        for sp in &sorted {
            let o = port_objects(sp, fam, cfg);
            for (set, els) in o.elements {
                elements.entry(set).or_default().extend(els);
            }
            sets.extend(o.sets);
            chains.extend(o.chains);
            let shared = elements.entry(CLUSTER_IPS.to_string()).or_default();
            shared.extend(cluster_ips_of(sp, fam).map(|ip| Elem::Addr(*ip)));
            let hairpin = elements.entry(HAIRPIN.to_string()).or_default();
            hairpin.extend(
                hairpin_ips(sp)
                    .into_iter()
                    .filter(|ip| fam.has(ip))
                    .map(Elem::Pair),
            );
        }
        let pod_cidrs: Vec<String> = cfg
            .pod_cidrs
            .iter()
            .filter(|n| fam.net_has(n))
            .map(|n| n.to_string())
            .collect();
        if pod_cidrs.len() > 1 {
            let _ = writeln!(
                out,
                "\tset {POD_CIDRS} {{\n\t\ttype {}; flags interval;\n\t\telements = {{ {} }}\n\t}}",
                fam.addr_type(),
                pod_cidrs.join(", ")
            );
        }
        for name in SHARED {
            write_set(&mut out, name, &shared_decl(fam, name), elements.get(name), &[]);
        }
        for (name, decl) in &sets {
            let timeout = affinity_timeout_of(decl);
            let raw: Vec<String> = match (timeout, kept.get(&(fam, name.clone()))) {
                (Some(t), Some(entries)) => entries
                    .iter()
                    .filter(|(ip, left)| fam.has(ip) && *left > 0)
                    .map(|(ip, left)| format!("{ip} timeout {t}s expires {}s", (*left).min(t)))
                    .collect(),
                _ => Vec::new(),
            };
            write_set(&mut out, name, decl, elements.get(name), &raw);
        }
        base_chains(fam, cfg, &mut out);
        for (name, rules) in &chains {
            write_chain(&mut out, name, rules);
        }
        out.push_str("}\n");
    }
    out
}

/// What the backend has programmed: the ports, and how many ports use each ClusterIP and each endpoint
/// address (the `cluster-ips` and `hairpin` sets are shared, so an address leaves them only with its last
/// user).
#[derive(Debug, Default, Clone)]
pub struct Programmed {
    ports: BTreeMap<ServicePortName, Arc<ServicePort>>,
    cluster_ip_refs: HashMap<IpAddr, usize>,
    hairpin_refs: HashMap<IpAddr, usize>,
}

impl Programmed {
    /// Nothing programmed.
    pub fn new() -> Programmed {
        Programmed::default()
    }

    /// Whether exactly `ports` are programmed, as they are.
    pub fn same_ports(&self, ports: &[Arc<ServicePort>]) -> bool {
        self.ports.len() == ports.len()
            && ports.iter().all(|p| {
                self.ports
                    .get(&p.name)
                    .is_some_and(|q| Arc::ptr_eq(p, q) || p == q)
            })
    }

    /// The state after a full sync of `ports`.
    pub fn from_ports(ports: &[Arc<ServicePort>]) -> Programmed {
        let mut p = Programmed::new();
        for sp in ports {
            p.insert(sp.clone());
        }
        p
    }

    /// The programmed ports, by name.
    pub fn ports(&self) -> impl Iterator<Item = &Arc<ServicePort>> {
        self.ports.values()
    }

    /// The programmed port of that name.
    pub fn get(&self, name: &ServicePortName) -> Option<&Arc<ServicePort>> {
        self.ports.get(name)
    }

    /// How many ports are programmed.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// Whether nothing is programmed.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }

    fn insert(&mut self, sp: Arc<ServicePort>) {
        if let Some(old) = self.ports.insert(sp.name.clone(), sp.clone()) {
            self.unref(&old);
        }
        for ip in &sp.cluster_ips {
            *self.cluster_ip_refs.entry(*ip).or_default() += 1;
        }
        for ip in hairpin_ips(&sp) {
            *self.hairpin_refs.entry(ip).or_default() += 1;
        }
    }

    fn remove(&mut self, name: &ServicePortName) {
        if let Some(old) = self.ports.remove(name) {
            self.unref(&old);
        }
    }

    fn unref(&mut self, old: &ServicePort) {
        fn dec(refs: &mut HashMap<IpAddr, usize>, ip: &IpAddr) {
            if let Some(n) = refs.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    refs.remove(ip);
                }
            }
        }
        for ip in &old.cluster_ips {
            dec(&mut self.cluster_ip_refs, ip);
        }
        for ip in hairpin_ips(old) {
            dec(&mut self.hairpin_refs, &ip);
        }
    }

    /// Records a batch of changes (after its transaction succeeded).
    pub fn commit(&mut self, changes: &[Change]) {
        for c in changes {
            match c {
                Change::Upsert { new, .. } => self.insert(new.clone()),
                Change::Remove(old) => self.remove(&old.name),
            }
        }
    }
}

/// Per port in a batch: what is programmed now and what should be (first `old`, last `new`, so repeated
/// changes of one port in one batch collapse into one replacement).
fn coalesce<'a>(
    prev: &'a Programmed,
    changes: &'a [Change],
) -> BTreeMap<&'a ServicePortName, (Option<&'a ServicePort>, Option<&'a ServicePort>)> {
    let mut out: BTreeMap<&ServicePortName, (Option<&ServicePort>, Option<&ServicePort>)> = BTreeMap::new();
    for c in changes {
        let name = c.name();
        // What the backend has programmed is the truth, whatever `old` the change carries: after a failed
        // transaction the two can differ.
        let entry = out
            .entry(name)
            .or_insert_with(|| (prev.get(name).map(|p| &**p), None));
        entry.1 = match c {
            Change::Upsert { new, .. } => Some(&**new),
            Change::Remove(_) => None,
        };
    }
    out
}

/// One element added to or deleted from a set or map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElementOp {
    /// The family whose table holds the set.
    pub family: Family,
    /// The set or map.
    pub set: String,
    /// Add (true) or delete (false).
    pub add: bool,
    /// The element.
    pub elem: Elem,
}

/// An incremental change of the tables, in three steps: `script` (an `nft -f` transaction declaring
/// sets and writing chains), `elements` (one netlink batch, deletions first), `after` (an `nft -f`
/// transaction flushing the chains the elements no longer lead to). An endpoint change of a Service
/// without affinity is elements only. Deleting objects is left to the caller ([`Transaction::stale`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Declarations and chain bodies, before the elements that lead to them; empty when none.
    pub script: String,
    /// Element deletions, then additions.
    pub elements: Vec<ElementOp>,
    /// `flush chain` of chains nothing leads to any more, after the elements; empty when none.
    pub after: String,
    /// Objects nothing uses any more, as `chain|set|map FAMILY TABLE NAME` (`delete {id}` removes one).
    pub stale: Vec<String>,
    /// Objects (re)created by `script`: no longer stale if they were.
    pub revived: Vec<String>,
    /// Whether `script` makes nft 1.0.x read the whole ruleset anyway (`delete set`), so deleting stale
    /// objects in the same transaction costs little extra.
    pub loads_cache: bool,
}

impl Transaction {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.script.is_empty() && self.elements.is_empty() && self.after.is_empty()
    }

    /// The elements as `nft` commands (for review, tests, and when netlink is unavailable).
    pub fn element_script(&self, table: &str) -> String {
        let mut out = String::new();
        for op in &self.elements {
            let verb = if op.add { "add" } else { "delete" };
            let text = if op.add {
                op.elem.text()
            } else {
                op.elem.key_text()
            };
            let _ = writeln!(
                out,
                "{verb} element {} {table} {} {{ {text} }}",
                op.family.nft(),
                op.set
            );
        }
        out
    }

    /// The elements as one netlink batch: deletions, then additions, one message per set for each (the
    /// kernel finds a message's set by walking the table's list of sets, so with 10,000 Services every
    /// message costs tens of microseconds).
    pub fn batch(&self, table: &str) -> netlink::Batch {
        let mut b = netlink::Batch::new();
        for add in [false, true] {
            let mut groups: BTreeMap<(Family, &str), Vec<netlink::Element>> = BTreeMap::new();
            for op in self.elements.iter().filter(|op| op.add == add) {
                groups
                    .entry((op.family, op.set.as_str()))
                    .or_default()
                    .push(op.elem.netlink());
            }
            for ((family, set), els) in groups {
                if add {
                    b.add(family, table, set, els);
                } else {
                    b.delete(family, table, set, els);
                }
            }
        }
        b
    }
}

/// The whole incremental change as one `nft -f` script: [`render_changes_deferred`]'s steps with the
/// elements as nft commands and the stale objects deleted at the end.
pub fn render_changes(prev: &Programmed, changes: &[Change], cfg: &NftConfig) -> String {
    let t = render_changes_deferred(prev, changes, cfg);
    let mut out = t.script.clone();
    out.push_str(&t.element_script(&cfg.table));
    out.push_str(&t.after);
    out.push_str(&delete_script(&t.stale));
    out
}

/// `delete` commands for stale objects: chains first (their rules may name the sets).
pub fn delete_script<'a>(ids: impl IntoIterator<Item = &'a String>) -> String {
    let mut ids: Vec<&String> = ids.into_iter().collect();
    ids.sort_by_key(|id| (!id.starts_with("chain "), id.as_str()));
    ids.iter().map(|id| format!("delete {id}\n")).collect()
}

/// The change that takes the tables from `prev` to `prev` + `changes`, touching only the changed ports'
/// elements, chains and sets (see [`Transaction`]). The scripts use only commands nft 1.0.x runs without
/// reading the ruleset back first (`add chain NAME { rules }`, `add set`/`add map` declarations, `flush
/// chain`): `add rule`, `delete chain` and `delete element` make it load every object of every table
/// (seconds with 100,000 endpoints). Every set a rewritten rule names is declared again (a no-op in the
/// kernel) so that nft knows it.
pub fn render_changes_deferred(prev: &Programmed, changes: &[Change], cfg: &NftConfig) -> Transaction {
    let batch = coalesce(prev, changes);
    let mut tx = Transaction::default();
    let mut deletes = Vec::new();
    let mut adds = Vec::new();
    for fam in families(cfg) {
        let t = format!("{} {}", fam.nft(), cfg.table);
        let mut flush = Vec::new();
        let mut del_sets = Vec::new();
        let mut add_sets: BTreeMap<String, Decl> = BTreeMap::new();
        let mut add_chains = Vec::new();
        let mut bodies = Vec::new();
        let mut gone = Vec::new();
        let mut ip_delta: BTreeMap<IpAddr, i64> = BTreeMap::new();
        let mut hairpin_delta: BTreeMap<IpAddr, i64> = BTreeMap::new();
        let mut rewrites = false;
        let op = |set: &str, add: bool, elem: Elem| ElementOp {
            family: fam,
            set: set.to_string(),
            add,
            elem,
        };
        for (old, new) in batch.values() {
            let o = old.map(|p| port_objects(p, fam, cfg)).unwrap_or_default();
            let n = new.map(|p| port_objects(p, fam, cfg)).unwrap_or_default();
            for ip in old.iter().flat_map(|p| cluster_ips_of(p, fam)) {
                *ip_delta.entry(*ip).or_default() -= 1;
            }
            for ip in new.iter().flat_map(|p| cluster_ips_of(p, fam)) {
                *ip_delta.entry(*ip).or_default() += 1;
            }
            for ip in old.iter().flat_map(|p| hairpin_ips(p)) {
                *hairpin_delta.entry(ip).or_default() -= 1;
            }
            for ip in new.iter().flat_map(|p| hairpin_ips(p)) {
                *hairpin_delta.entry(ip).or_default() += 1;
            }
            let empty = BTreeSet::new();
            for (set, els) in &o.elements {
                let keep = n.elements.get(set).unwrap_or(&empty);
                deletes.extend(els.difference(keep).map(|e| op(set, false, e.clone())));
            }
            for (set, els) in &n.elements {
                let had = o.elements.get(set).unwrap_or(&empty);
                adds.extend(els.difference(had).map(|e| op(set, true, e.clone())));
            }
            // A set whose declaration changed (affinity timeout) is recreated; every chain of the port is
            // then rewritten, since rules that use a set hold on to it.
            let sets_changed = o
                .sets
                .iter()
                .any(|(s, decl)| n.sets.get(s).is_some_and(|d| d != decl));
            for (name, old_rules) in &o.chains {
                match n.chains.get(name) {
                    Some(r) if r == old_rules && !sets_changed => {}
                    Some(_) => flush.push(format!("flush chain {t} {name}")),
                    None => {
                        gone.push(format!("flush chain {t} {name}"));
                        tx.stale.push(format!("chain {t} {name}"));
                    }
                }
            }
            for (name, decl) in &o.sets {
                let kind = if decl.0 { "map" } else { "set" };
                match n.sets.get(name) {
                    Some(d) if d == decl => {}
                    Some(_) => del_sets.push(format!("delete {kind} {t} {name}")),
                    // Its elements are deleted above, so a port that comes back finds it empty.
                    None => tx.stale.push(format!("{kind} {t} {name}")),
                }
            }
            let mut port_rewrites = false;
            for (name, new_rules) in &n.chains {
                let same = o.chains.get(name) == Some(new_rules) && !sets_changed;
                if same {
                    continue;
                }
                port_rewrites = true;
                if !o.chains.contains_key(name) {
                    add_chains.push(format!("add chain {t} {name}"));
                    tx.revived.push(format!("chain {t} {name}"));
                }
                if !new_rules.is_empty() {
                    debug_assert!(new_rules.iter().all(|r| !r.contains(';')), "{new_rules:?}");
                    bodies.push(format!("add chain {t} {name} {{ {}; }}", new_rules.join("; ")));
                }
            }
            // New sets, and the unchanged ones the rewritten rules name (nft must know them).
            for (name, decl) in &n.sets {
                if port_rewrites || o.sets.get(name) != Some(decl) {
                    add_sets.insert(name.clone(), decl.clone());
                    if o.sets.get(name) != Some(decl) {
                        tx.revived
                            .push(format!("{} {t} {name}", if decl.0 { "map" } else { "set" }));
                    }
                }
            }
            rewrites |= port_rewrites;
        }
        let pod_cidrs = cfg.pod_cidrs.iter().filter(|n| fam.net_has(n)).count();
        if rewrites && pod_cidrs > 1 {
            add_sets.insert(
                POD_CIDRS.to_string(),
                (false, format!("type {}; flags interval;", fam.addr_type())),
            );
        }
        for (set, delta, refs, elem) in [
            (
                CLUSTER_IPS,
                ip_delta,
                &prev.cluster_ip_refs,
                Elem::Addr as fn(IpAddr) -> Elem,
            ),
            (HAIRPIN, hairpin_delta, &prev.hairpin_refs, Elem::Pair),
        ] {
            for (ip, delta) in delta {
                if !fam.has(&ip) {
                    continue;
                }
                let before = refs.get(&ip).copied().unwrap_or(0) as i64;
                let after = before + delta;
                if before > 0 && after <= 0 {
                    deletes.push(op(set, false, elem(ip)));
                } else if before <= 0 && after > 0 {
                    adds.push(op(set, true, elem(ip)));
                }
            }
        }
        tx.loads_cache |= !del_sets.is_empty();
        let add_sets = add_sets.iter().map(|(name, (map, body))| {
            format!("add {} {t} {name} {{ {body} }}", if *map { "map" } else { "set" })
        });
        let script: Vec<String> = flush
            .into_iter()
            .chain(del_sets)
            .chain(add_sets)
            .chain(add_chains)
            .chain(bodies)
            .collect();
        for line in script {
            tx.script.push_str(&line);
            tx.script.push('\n');
        }
        for line in gone {
            tx.after.push_str(&line);
            tx.after.push('\n');
        }
    }
    tx.elements = deletes;
    tx.elements.extend(adds);
    tx
}
