//! The ruleset as text: what each service port becomes in nftables, the full ruleset for a resync and the
//! minimal transaction for a batch of changes. Pure functions, so golden tests pin the exact output.
//!
//! The layout follows kube-proxy's nftables mode. One table per IP family holds
//!
//! - base chains on the netfilter hooks (`nat-prerouting`/`nat-output` jump to `services`,
//!   `nat-postrouting` masquerades what `mark-for-masquerade` marked, `filter-*` reject and drop);
//! - verdict maps keyed by `address . protocol . port` (`service-ips`, `no-endpoint-services`,
//!   `firewall-ips`) or `protocol . port` (`service-nodeports`, `no-endpoint-nodeports`), so the cost of
//!   finding a service does not grow with the number of services;
//! - per service port: `service-…` (internal endpoints), `external-…` (NodePort/externalIP/LB traffic and
//!   the externalTrafficPolicy), `local-…` (the external endpoint set when it differs from the internal
//!   one), `firewall-…` (loadBalancerSourceRanges) and one `endpoint-…` chain per endpoint doing the DNAT,
//!   with `affinity-…` timed sets for ClientIP session affinity.
//!
//! One deliberate difference: a service chain picks its endpoint with a ladder of `numgen random mod k 0
//! goto …` rules, not kube-proxy's `numgen random mod N vmap { … }`, because nft 1.0.x (Debian 12) loads
//! thousands of anonymous vmaps in quadratic time; for the same reason no per-Service rule has an inline
//! `{ … }` set.
//!
//! Every object a port owns carries the port's name, so an incremental transaction can replace exactly
//! one port's objects: elements are deleted before the chains they point at, chains are flushed before
//! the chains and sets their rules reference are deleted, and new chains exist before rules jump to them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use svcnet_dataplane::{Change, Endpoint, ServicePort, ServicePortName};

use crate::NftConfig;

/// The packet mark bit that asks `nat-postrouting` to masquerade (kube-proxy's default, bit 14).
pub const MASQUERADE_MARK: u32 = 0x4000;
/// Longest name nftables accepts for a chain or set, minus room for our longest prefix (`endpoint-`, …).
const NAME_BASE_MAX: usize = 256 - 16;

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

/// Map names, and the element keys that live in them.
const SERVICE_IPS: &str = "service-ips";
const SERVICE_NODEPORTS: &str = "service-nodeports";
const NO_ENDPOINT_SERVICES: &str = "no-endpoint-services";
const NO_ENDPOINT_NODEPORTS: &str = "no-endpoint-nodeports";
const FIREWALL_IPS: &str = "firewall-ips";
const CLUSTER_IPS: &str = "cluster-ips";
const POD_CIDRS: &str = "pod-cidrs";
const REJECT_CHAIN: &str = "reject-chain";
const MARK_MASQ: &str = "mark-for-masquerade";

/// Everything one service port owns in one family's table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PortObjects {
    /// (map, key) → verdict.
    pub elements: BTreeMap<(&'static str, String), String>,
    /// Affinity set name → its declaration body.
    pub sets: BTreeMap<String, String>,
    /// Chain name → rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
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

/// The rules that send a chain's traffic to one of `eps`: affinity hits first, then a random (or
/// round-robin) pick.
fn dispatch_rules(sp: &ServicePort, eps: &[&Endpoint], fam: Family, rules: &mut Vec<String>) {
    let name = &sp.name;
    if sp.affinity_timeout.is_some() {
        for ep in eps {
            rules.push(format!(
                "{} saddr @{} goto {}",
                fam.nft(),
                affinity_set(name, ep),
                endpoint_chain(name, ep)
            ));
        }
    }
    // Endpoint i of n is taken with probability 1/(n-i) among those left, which is uniform overall: the
    // iptables mode's `statistic` ladder. kube-proxy's nftables mode writes `numgen random mod N vmap
    // { … }` instead, but every such vmap is an anonymous set, and nft 1.0.x handles many of them in
    // quadratic time (measured: 211 s to load 10,000 Services, versus about 10 s like this). The ladder
    // costs a few rules per new connection (established traffic never reaches these chains).
    // `svcnet.io/balance` is not honoured here: random is what kube-proxy does, and the others need
    // per-connection state that nftables does not keep.
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let target = format!("goto {}", endpoint_chain(name, ep));
        match n - i {
            1 => rules.push(target),
            left => rules.push(format!("numgen random mod {left} 0 {target}")),
        }
    }
}

/// What one service port becomes in one family's table (see the module docs for the layout).
pub(crate) fn port_objects(sp: &ServicePort, fam: Family, cfg: &NftConfig) -> PortObjects {
    let mut o = PortObjects::default();
    if !in_family(sp, fam) {
        return o;
    }
    let name = &sp.name;
    let proto = name.protocol.lower();
    let ipx = fam.nft();
    let internal: Vec<&Endpoint> = sp.internal_for(fam.v6()).collect();
    let external: Vec<&Endpoint> = sp.external_for(fam.v6()).collect();
    let has_eps = family_has_endpoints(sp, fam);
    let has_internal = has_eps && !internal.is_empty();
    let has_external = has_eps && !external.is_empty();
    let svc_chain = service_chain(name);
    let ext_chain = external_chain(name);
    let pod_cidrs: Vec<&IpNet> = cfg.pod_cidrs.iter().filter(|n| fam.net_has(n)).collect();
    // No endpoints at all: reject (the client learns at once); endpoints exist but the traffic policy
    // leaves none for this traffic: drop, as kube-proxy does.
    let no_eps_verdict = if has_eps {
        "drop".to_string()
    } else {
        format!("goto {REJECT_CHAIN}")
    };
    let key = |ip: &IpAddr, port: u16| format!("{ip} . {proto} . {port}");

    let external_ips: Vec<&IpAddr> = sp.external_ips.iter().filter(|ip| fam.has(ip)).collect();
    let lb_ips: Vec<&IpAddr> = sp.load_balancer_ips.iter().filter(|ip| fam.has(ip)).collect();
    let externally_accessible = sp.node_port.is_some() || !external_ips.is_empty() || !lb_ips.is_empty();
    let uses_external_chain = has_eps && externally_accessible;

    // The chain external traffic ends in: the internal chain when both sets are the same, else its own.
    let ext_policy_chain = if external == internal {
        svc_chain.clone()
    } else if sp.external_policy_local {
        format!("local-{}", port_base(name))
    } else {
        format!("cluster-{}", port_base(name))
    };

    for cip in sp.cluster_ips.iter().filter(|ip| fam.has(ip)) {
        if has_internal {
            o.elements
                .insert((SERVICE_IPS, key(cip, sp.port)), format!("goto {svc_chain}"));
        } else {
            o.elements
                .insert((NO_ENDPOINT_SERVICES, key(cip, sp.port)), no_eps_verdict.clone());
        }
    }
    let ext_verdict = format!("goto {ext_chain}");
    for ip in external_ips.iter().chain(&lb_ips) {
        if has_eps {
            o.elements
                .insert((SERVICE_IPS, key(ip, sp.port)), ext_verdict.clone());
        }
        if !has_external {
            o.elements
                .insert((NO_ENDPOINT_SERVICES, key(ip, sp.port)), no_eps_verdict.clone());
        }
    }
    if let Some(np) = sp.node_port {
        let k = format!("{proto} . {np}");
        if has_eps {
            o.elements
                .insert((SERVICE_NODEPORTS, k.clone()), ext_verdict.clone());
        }
        if !has_external {
            o.elements
                .insert((NO_ENDPOINT_NODEPORTS, k), no_eps_verdict.clone());
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
            o.elements
                .insert((FIREWALL_IPS, key(ip, sp.port)), format!("goto {fw}"));
        }
    }

    if has_internal {
        let mut rules = Vec::new();
        for cip in sp.cluster_ips.iter().filter(|ip| fam.has(ip)) {
            let m = format!("{ipx} daddr {cip} {proto} dport {}", sp.port);
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
        dispatch_rules(sp, &internal, fam, &mut rules);
        o.chains.insert(svc_chain.clone(), rules);
    }

    if uses_external_chain {
        let mut rules = Vec::new();
        if !sp.external_policy_local {
            // The endpoint may be on another node: masquerade so replies come back through us.
            rules.push(format!("jump {MARK_MASQ}"));
        } else if has_internal {
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
        if has_external {
            rules.push(format!("goto {ext_policy_chain}"));
        }
        o.chains.insert(ext_chain, rules);
        if has_external && ext_policy_chain != svc_chain {
            let mut rules = Vec::new();
            dispatch_rules(sp, &external, fam, &mut rules);
            o.chains.insert(ext_policy_chain, rules);
        }
    }

    // Endpoint chains for every endpoint some chain above can pick.
    let mut seen = BTreeSet::new();
    let reachable = internal
        .iter()
        .filter(|_| has_internal)
        .chain(external.iter().filter(|_| has_external));
    for ep in reachable {
        if !seen.insert((ep.ip, ep.port)) {
            continue;
        }
        let mut rules = vec![format!("{ipx} saddr {} jump {MARK_MASQ}", ep.ip)];
        if let Some(t) = sp.affinity_timeout {
            let set = affinity_set(name, ep);
            o.sets.insert(
                set.clone(),
                format!(
                    "type {}; flags dynamic,timeout; timeout {}s;",
                    fam.addr_type(),
                    t.as_secs().max(1)
                ),
            );
            rules.push(format!("update @{set} {{ {ipx} saddr }}"));
        }
        rules.push(format!("meta l4proto {proto} dnat to {}", dnat_target(ep)));
        o.chains.insert(endpoint_chain(name, ep), rules);
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
    let mut cluster_check = vec![format!(
        "{ipx} daddr @{CLUSTER_IPS} reject comment \"reject traffic to invalid ports of ClusterIPs\""
    )];
    if !svc_cidrs.is_empty() {
        cluster_check.push(format!(
            "{ipx} daddr {} drop comment \"drop traffic to unallocated ClusterIPs\"",
            ip_list(&svc_cidrs)
        ));
    }
    let mark = format!("{MASQUERADE_MARK:#x}");
    let plain: Vec<(&str, Vec<String>)> = vec![
        (
            "services",
            vec![
                format!("{ipx} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}"),
                format!(
                    "fib daddr type local {no_localhost} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}"
                ),
            ],
        ),
        (
            "service-endpoints-check",
            vec![
                format!("{ipx} daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}"),
                format!(
                    "fib daddr type local {no_localhost} meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}"
                ),
            ],
        ),
        ("cluster-ips-check", cluster_check),
        (
            "firewall-check",
            vec![format!(
                "{ipx} daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}"
            )],
        ),
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
                format!("meta mark & {mark} == 0 return"),
                format!("meta mark set meta mark ^ {mark}"),
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

fn map_decl(fam: Family, name: &str) -> String {
    let key = match name {
        SERVICE_NODEPORTS | NO_ENDPOINT_NODEPORTS => "inet_proto . inet_service".to_string(),
        _ => format!("{} . inet_proto . inet_service", fam.addr_type()),
    };
    format!("type {key} : verdict")
}

const MAPS: [&str; 5] = [
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    NO_ENDPOINT_SERVICES,
    NO_ENDPOINT_NODEPORTS,
    FIREWALL_IPS,
];

/// The whole ruleset for `ports`, as one transaction that replaces both tables atomically: `add table`
/// (so that the `delete` cannot fail), `delete table` (which also removes anything stale), then the tables
/// as they should be. The kernel swaps old for new at commit, so no packet sees a half-built table.
pub fn render_full(ports: &[Arc<ServicePort>], cfg: &NftConfig) -> String {
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
        let mut elements: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut sets = BTreeMap::new();
        let mut chains = Vec::new();
        let mut cluster_ips = BTreeSet::new();
        for sp in &sorted {
            let o = port_objects(sp, fam, cfg);
            for ((map, k), v) in o.elements {
                elements.entry(map).or_default().push(format!("{k} : {v}"));
            }
            sets.extend(o.sets);
            chains.extend(o.chains);
            cluster_ips.extend(cluster_ips_of(sp, fam).copied());
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
        let _ = writeln!(out, "\tset {CLUSTER_IPS} {{\n\t\ttype {}", fam.addr_type());
        if !cluster_ips.is_empty() {
            let v: Vec<String> = cluster_ips.iter().map(|ip| ip.to_string()).collect();
            let _ = writeln!(out, "\t\telements = {{ {} }}", v.join(", "));
        }
        out.push_str("\t}\n");
        for map in MAPS {
            let _ = writeln!(out, "\tmap {map} {{\n\t\t{}", map_decl(fam, map));
            if let Some(els) = elements.get(map) {
                let _ = writeln!(out, "\t\telements = {{\n\t\t\t{}\n\t\t}}", els.join(",\n\t\t\t"));
            }
            out.push_str("\t}\n");
        }
        for (name, body) in &sets {
            let _ = writeln!(out, "\tset {name} {{ {body} }}");
        }
        base_chains(fam, cfg, &mut out);
        for (name, rules) in &chains {
            write_chain(&mut out, name, rules);
        }
        out.push_str("}\n");
    }
    out
}

/// What the backend has programmed: the ports, and how many ports use each ClusterIP (the `cluster-ips`
/// set is shared by all ports of a Service, so an address leaves it only with its last port).
#[derive(Debug, Default, Clone)]
pub struct Programmed {
    ports: BTreeMap<ServicePortName, Arc<ServicePort>>,
    cluster_ip_refs: HashMap<IpAddr, usize>,
}

impl Programmed {
    /// Nothing programmed.
    pub fn new() -> Programmed {
        Programmed::default()
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
    }

    fn remove(&mut self, name: &ServicePortName) {
        if let Some(old) = self.ports.remove(name) {
            self.unref(&old);
        }
    }

    fn unref(&mut self, old: &ServicePort) {
        for ip in &old.cluster_ips {
            if let Some(n) = self.cluster_ip_refs.get_mut(ip) {
                *n -= 1;
                if *n == 0 {
                    self.cluster_ip_refs.remove(ip);
                }
            }
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

/// The transaction that takes the tables from `prev` to `prev` + `changes`, touching only the changed
/// ports' elements, chains and sets, with the chains it leaves unused deleted at the end (see
/// [`render_changes_deferred`] for the form the backend sends). An empty string means nothing to do.
pub fn render_changes(prev: &Programmed, changes: &[Change], cfg: &NftConfig) -> String {
    let mut t = render_changes_deferred(prev, changes, cfg);
    for id in &t.stale_chains {
        let _ = writeln!(t.script, "delete chain {id}");
    }
    t.script
}

/// An incremental transaction whose chain deletions are left to the caller.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// The `nft -f` script; empty when there is nothing to do.
    pub script: String,
    /// Chains the script flushes and nothing refers to any more, as `FAMILY TABLE NAME`
    /// (`delete chain {id}` removes one).
    pub stale_chains: Vec<String>,
    /// Chains the script creates, as `FAMILY TABLE NAME`: no longer stale if they were.
    pub new_chains: Vec<String>,
    /// Whether the script has commands that make nft 1.0.x load its whole cache anyway (`delete
    /// element`, `delete set`), so deleting stale chains in the same transaction costs nothing extra.
    pub loads_cache: bool,
}

/// The transaction that takes the tables from `prev` to `prev` + `changes`, touching only the changed
/// ports' elements, chains and sets, written with the commands nft 1.0.x can run without reading the
/// ruleset back first. `add rule`, `add element`, `delete chain` and `delete element` make nft load every
/// chain of every table into its cache (0.25 s with 110,000 chains), while `add chain NAME { rules }`,
/// `add map NAME { …; elements = { … } }`, `add set` and `flush chain` do not: rules are written as chain
/// bodies, elements as map declarations, and every set those rules name is declared again (unchanged,
/// so a no-op in the kernel) so that nft knows it. Chains that become unused are only flushed and
/// reported in [`Transaction::stale_chains`]; deleting them later is the caller's business.
///
/// Order inside one family's table: delete elements, flush rewritten and doomed chains, delete doomed
/// sets, (re)declare sets, add new chains (empty, so rules can jump to any of them), write chain bodies,
/// add elements.
pub fn render_changes_deferred(prev: &Programmed, changes: &[Change], cfg: &NftConfig) -> Transaction {
    let batch = coalesce(prev, changes);
    let mut tx = Transaction::default();
    let out = &mut tx.script;
    for fam in families(cfg) {
        let t = format!("{} {}", fam.nft(), cfg.table);
        let mut del_elements = Vec::new();
        let mut add_elements: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        let mut flush = Vec::new();
        let mut del_sets = Vec::new();
        let mut add_sets: BTreeMap<String, String> = BTreeMap::new();
        let mut add_chains = Vec::new();
        let mut bodies = Vec::new();
        let mut ip_delta: BTreeMap<IpAddr, i64> = BTreeMap::new();
        let mut rewrites = false;
        for (old, new) in batch.values() {
            let o = old.map(|p| port_objects(p, fam, cfg)).unwrap_or_default();
            let n = new.map(|p| port_objects(p, fam, cfg)).unwrap_or_default();
            for ip in old.iter().flat_map(|p| cluster_ips_of(p, fam)) {
                *ip_delta.entry(*ip).or_default() -= 1;
            }
            for ip in new.iter().flat_map(|p| cluster_ips_of(p, fam)) {
                *ip_delta.entry(*ip).or_default() += 1;
            }
            for ((map, k), v) in &o.elements {
                if n.elements.get(&(*map, k.clone())) != Some(v) {
                    del_elements.push(format!("delete element {t} {map} {{ {k} }}"));
                }
            }
            for ((map, k), v) in &n.elements {
                if o.elements.get(&(*map, k.clone())) != Some(v) {
                    add_elements.entry(map).or_default().push(format!("{k} : {v}"));
                }
            }
            // A set whose declaration changed (affinity timeout) is recreated; every chain of the port is
            // then rewritten, since rules that use a set hold on to it.
            let sets_changed = o
                .sets
                .iter()
                .any(|(s, body)| n.sets.get(s).is_some_and(|b| b != body));
            for (name, old_rules) in &o.chains {
                match n.chains.get(name) {
                    Some(r) if r == old_rules && !sets_changed => {}
                    Some(_) => flush.push(format!("flush chain {t} {name}")),
                    None => {
                        flush.push(format!("flush chain {t} {name}"));
                        tx.stale_chains.push(format!("{t} {name}"));
                    }
                }
            }
            for (name, body) in &o.sets {
                match n.sets.get(name) {
                    Some(b) if b == body => {}
                    _ => del_sets.push(format!("delete set {t} {name}")),
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
                    tx.new_chains.push(format!("{t} {name}"));
                }
                if !new_rules.is_empty() {
                    debug_assert!(new_rules.iter().all(|r| !r.contains(';')), "{new_rules:?}");
                    bodies.push(format!("add chain {t} {name} {{ {}; }}", new_rules.join("; ")));
                }
            }
            // New sets, and the unchanged ones the rewritten rules name (nft must know them).
            for (name, body) in &n.sets {
                if port_rewrites || o.sets.get(name) != Some(body) {
                    add_sets.insert(name.clone(), body.clone());
                }
            }
            rewrites |= port_rewrites;
        }
        let pod_cidrs = cfg.pod_cidrs.iter().filter(|n| fam.net_has(n)).count();
        if rewrites && pod_cidrs > 1 {
            add_sets.insert(
                POD_CIDRS.to_string(),
                format!("type {}; flags interval;", fam.addr_type()),
            );
        }
        let mut cluster_ips = Vec::new();
        for (ip, delta) in ip_delta {
            let before = prev.cluster_ip_refs.get(&ip).copied().unwrap_or(0) as i64;
            let after = before + delta;
            if before > 0 && after <= 0 {
                del_elements.push(format!("delete element {t} {CLUSTER_IPS} {{ {ip} }}"));
            } else if before <= 0 && after > 0 {
                cluster_ips.push(ip.to_string());
            }
        }
        tx.loads_cache |= !del_elements.is_empty() || !del_sets.is_empty();
        let add_sets: Vec<String> = add_sets
            .iter()
            .map(|(name, body)| format!("add set {t} {name} {{ {body} }}"))
            .collect();
        let mut elements: Vec<String> = add_elements
            .iter()
            .map(|(map, els)| {
                format!(
                    "add map {t} {map} {{ {}; elements = {{ {} }} }}",
                    map_decl(fam, map),
                    els.join(", ")
                )
            })
            .collect();
        if !cluster_ips.is_empty() {
            elements.push(format!(
                "add set {t} {CLUSTER_IPS} {{ type {}; elements = {{ {} }} }}",
                fam.addr_type(),
                cluster_ips.join(", ")
            ));
        }
        for part in [
            del_elements,
            flush,
            del_sets,
            add_sets,
            add_chains,
            bodies,
            elements,
        ]
        .iter()
        {
            for line in part {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    tx
}
