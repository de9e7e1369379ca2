//! The ruleset as text: what each service port becomes in one family's table ([`port_objects`]), the
//! table-wide chains, sets and maps, and the whole ruleset a full sync writes ([`render_full`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use svcnet_dataplane::{Endpoint, ServicePort};

use super::elements::{AffinityEntries, Elem, Key, slot_elements};
use super::names::{
    CLUSTER_IPS, FIREWALL_IPS, HAIRPIN, MARK_MASQ, NO_ENDPOINT_NODEPORTS, NO_ENDPOINT_SERVICES,
    NO_LOCAL_NODEPORTS, NO_LOCAL_SERVICES, POD_CIDRS, PORTS_PER_MAP, REJECT_CHAIN, SERVICE_IPS,
    SERVICE_NODEPORTS, affinity_set, endpoint_chain, endpoint_map, external_chain, firewall_chain, port_base,
    service_chain,
};
use super::transaction::{ElementOp, Programmed};
use crate::NftConfig;
use crate::family::Family;
use crate::slots::SLOTS;

/// The packet mark bit that asks `nat-postrouting` to masquerade (kube-proxy's default, bit 14).
pub const MASQUERADE_MARK: u32 = 0x4000;

/// The families the configuration programs, in table order.
pub(crate) fn families(cfg: &NftConfig) -> Vec<Family> {
    let mut f = vec![Family::V4];
    if cfg.ipv6 {
        f.push(Family::V6);
    }
    f
}

/// A set or map declaration: `(is a map, body)`.
pub(super) type Decl = (bool, String);

/// Everything one service port owns in one family's table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct PortObjects {
    /// Set or map name → the elements this port owns in it.
    pub elements: BTreeMap<String, BTreeSet<Elem>>,
    /// Sets and maps of this port (endpoint maps, affinity sets) → declaration.
    pub sets: BTreeMap<String, Decl>,
    /// Chain name → rules, in order.
    pub chains: BTreeMap<String, Vec<String>>,
    /// Maps shared with other ports (the endpoint maps of the port's group) → declaration: declared
    /// wherever a rule names them, never deleted with the port.
    pub shared_maps: BTreeMap<String, Decl>,
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
pub(super) fn hairpin_ips(sp: &ServicePort) -> BTreeSet<IpAddr> {
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
    external: bool,
    id: u32,
    fam: Family,
    rules: &mut Vec<String>,
    o: &mut PortObjects,
) {
    let name = &sp.name;
    let ipx = fam.nft();
    let proto = name.protocol.lower();
    let Some(timeout) = sp.affinity_timeout else {
        let map = endpoint_map(name.protocol, external, id);
        let offset = slot_offset(id);
        o.shared_maps.insert(
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
        // nft prints no `offset 0`; written the same way, a rule read back compares equal.
        let offset = if offset == 0 {
            String::new()
        } else {
            format!(" offset {offset}")
        };
        rules.push(format!(
            "meta l4proto {proto} dnat {ipx} to meta l4proto . numgen random mod {SLOTS}{offset} map @{map}"
        ));
        if !eps.is_empty() {
            o.elements
                .entry(map)
                .or_default()
                .extend(slot_elements(name.protocol, slot_offset(id), eps));
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
/// Where port `id`'s ranges start in its endpoint map's slot space.
pub(super) fn slot_offset(id: u32) -> u32 {
    (id % PORTS_PER_MAP) * SLOTS
}

/// `id` is the port's place in the endpoint maps ([`Programmed`](super::Programmed) hands them out).
pub(crate) fn port_objects(sp: &ServicePort, id: u32, fam: Family, cfg: &NftConfig) -> PortObjects {
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
    dispatch(sp, &internal, false, id, fam, &mut rules, &mut o);
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
            dispatch(sp, &external, true, id, fam, &mut rules, &mut o);
            o.chains.insert(ext_policy_chain, rules);
        }
    }
    for rules in o.chains.values_mut() {
        sign(rules);
    }
    o
}

/// What marks the comment of a chain's last rule as carrying the digest of the chain's lines.
const DIGEST_TAG: &str = "svcnet:";

/// Signs a chain: its last rule's comment gets the digest of all its lines (a base chain's `type …`
/// statement and the rules), added to the comment the rule has, if any. A takeover reads the chains back
/// through netlink, where rules are expressions, not text: the comment, with the number of rules, says
/// whether a chain is still what this rendering writes, without turning every rule back into text
/// (which made `nft list table` cost a second of CPU at 10,000 Services).
pub(super) fn sign(lines: &mut [String]) {
    let Some(last) = lines.iter().rposition(|l| !l.starts_with("type ")) else {
        return;
    };
    let digest = super::names::base32(super::names::fnv1a(lines.join("\n").as_bytes()), 12);
    let rule = &mut lines[last];
    match rule.strip_suffix('"').filter(|r| r.contains(" comment \"")) {
        Some(open) => *rule = format!("{open} {DIGEST_TAG}{digest}\""),
        None => rule.push_str(&format!(" comment \"{DIGEST_TAG}{digest}\"")),
    }
}

/// The comment of a rule as the renderer writes it (`… comment "TEXT"` at the end).
pub(crate) fn comment_of_rule(rule: &str) -> Option<&str> {
    let (_, c) = rule.rsplit_once(" comment \"")?;
    c.strip_suffix('"')
}

/// The IPs of a port that go into the `cluster-ips` set (shared by all ports of a Service, so counted).
pub(super) fn cluster_ips_of(sp: &ServicePort, fam: Family) -> impl Iterator<Item = &IpAddr> {
    sp.cluster_ips.iter().filter(move |ip| fam.has(ip))
}

/// The table-wide chains, base chains first (their first line the `type … hook …` statement), signed.
fn base_chains(fam: Family, cfg: &NftConfig) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
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
    // Priorities, like every rule here, are written as nft prints them, so that a table read back
    // (a takeover) compares equal to the rendering.
    let base: [(&str, &str, &str, &str, &[&str]); 8] = [
        (
            "filter-prerouting",
            "filter",
            "prerouting",
            "dstnat - 10",
            &["ct state new jump firewall-check"],
        ),
        (
            "filter-input",
            "filter",
            "input",
            "-110",
            &["ct state new jump service-endpoints-check"],
        ),
        (
            "filter-forward",
            "filter",
            "forward",
            "-110",
            &[
                "ct state new jump service-endpoints-check",
                "ct state new jump cluster-ips-check",
            ],
        ),
        (
            "filter-output",
            "filter",
            "output",
            "-110",
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
            "-90",
            &["ct state new jump cluster-ips-check"],
        ),
        (
            "nat-prerouting",
            "nat",
            "prerouting",
            "dstnat",
            &["jump services"],
        ),
        ("nat-output", "nat", "output", "-100", &["jump services"]),
        (
            "nat-postrouting",
            "nat",
            "postrouting",
            "srcnat",
            &["jump masquerading"],
        ),
    ];
    for (name, ty, hook, prio, rules) in base {
        let mut lines = vec![format!("type {ty} hook {hook} priority {prio}; policy accept;")];
        lines.extend(rules.iter().map(|r| r.to_string()));
        sign(&mut lines);
        out.push((name.to_string(), lines));
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
    let mark = format!("{MASQUERADE_MARK:#010x}");
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
            vec!["reject with tcp reset".to_string(), "reject".to_string()],
        ),
        (MARK_MASQ, vec![format!("meta mark set meta mark | {mark}")]),
        (
            "masquerading",
            vec![
                format!(
                    "ct status dnat {ipx} saddr . {ipx} daddr @{HAIRPIN} jump {MARK_MASQ} comment \"hairpin\""
                ),
                format!("meta mark & {mark} == 0x00000000 return"),
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
    for (name, mut rules) in plain {
        sign(&mut rules);
        out.push((name.to_string(), rules));
    }
    out
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

fn write_set(out: &mut String, name: &str, set: &SetSpec) {
    let kind = if set.decl.0 { "map" } else { "set" };
    let _ = writeln!(
        out,
        "\t{kind} {name} {{\n\t\t{}",
        set.decl.1.replace("; ", ";\n\t\t")
    );
    let v = set.element_texts();
    if !v.is_empty() {
        let _ = writeln!(out, "\t\telements = {{\n\t\t\t{}\n\t\t}}", v.join(",\n\t\t\t"));
    }
    out.push_str("\t}\n");
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
    render_programmed(&Programmed::from_ports(ports), cfg, kept)
}

/// A set or map as one family's table should hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SetSpec {
    /// Map or set, and the declaration.
    pub decl: Decl,
    /// Its elements.
    pub elements: BTreeSet<Elem>,
    /// Elements written as text only (the pod CIDRs, affinity entries carried over).
    pub raw: Vec<String>,
}

impl SetSpec {
    /// Whether its elements are runtime state (ClientIP affinity entries), not ours to compare.
    pub fn dynamic(&self) -> bool {
        self.decl.1.contains("flags dynamic")
    }

    /// Its elements as nft writes them.
    pub fn element_texts(&self) -> Vec<String> {
        let mut v: Vec<String> = self.elements.iter().map(Elem::text).collect();
        v.extend_from_slice(&self.raw);
        v
    }
}

/// One family's table as it should be: its sets and chains, in the order the ruleset writes them. A
/// base chain's first line is its `type … hook …` statement; every chain is signed ([`sign`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct TableSpec {
    pub sets: Vec<(String, SetSpec)>,
    pub chains: Vec<(String, Vec<String>)>,
}

/// What `prog` makes of one family's table, each port at the place in the endpoint maps `prog` gave it,
/// with `kept` affinity entries in the affinity sets that still exist (with their remaining time, at
/// most the set's timeout).
pub(crate) fn table_spec(
    prog: &Programmed,
    cfg: &NftConfig,
    fam: Family,
    kept: &AffinityEntries,
) -> TableSpec {
    let mut elements: BTreeMap<String, BTreeSet<Elem>> = BTreeMap::new();
    let mut sets = BTreeMap::new();
    let mut shared_maps = BTreeMap::new();
    let mut port_chains = Vec::new();
    for (sp, id) in prog.ports_with_ids() {
        let o = port_objects(sp, id, fam, cfg);
        for (set, els) in o.elements {
            elements.entry(set).or_default().extend(els);
        }
        sets.extend(o.sets);
        shared_maps.extend(o.shared_maps);
        port_chains.extend(o.chains);
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
    let mut spec = TableSpec::default();
    let mut take = |name: &str| elements.remove(name).unwrap_or_default();
    let pod_cidrs: Vec<String> = cfg
        .pod_cidrs
        .iter()
        .filter(|n| fam.net_has(n))
        .map(|n| n.to_string())
        .collect();
    if pod_cidrs.len() > 1 {
        spec.sets.push((
            POD_CIDRS.to_string(),
            SetSpec {
                decl: (false, format!("type {}; flags interval;", fam.addr_type())),
                elements: BTreeSet::new(),
                raw: pod_cidrs,
            },
        ));
    }
    for name in SHARED {
        let elements = take(name);
        spec.sets.push((
            name.to_string(),
            SetSpec {
                decl: shared_decl(fam, name),
                elements,
                raw: Vec::new(),
            },
        ));
    }
    for (name, decl) in shared_maps {
        let elements = take(&name);
        spec.sets.push((
            name,
            SetSpec {
                decl,
                elements,
                raw: Vec::new(),
            },
        ));
    }
    for (name, decl) in sets {
        let timeout = affinity_timeout_of(&decl);
        let raw: Vec<String> = match (timeout, kept.get(&(fam, name.clone()))) {
            (Some(t), Some(entries)) => entries
                .iter()
                .filter(|(ip, left)| fam.has(ip) && *left > 0)
                .map(|(ip, left)| format!("{ip} timeout {t}s expires {}s", (*left).min(t)))
                .collect(),
            _ => Vec::new(),
        };
        let elements = take(&name);
        spec.sets.push((name, SetSpec { decl, elements, raw }));
    }
    spec.chains = base_chains(fam, cfg);
    spec.chains.extend(port_chains);
    spec
}

/// [`render_full_keeping`] of what `prog` holds, each port at the place in the endpoint maps `prog` gave
/// it (a takeover keeps the places the tables already have).
pub fn render_programmed(prog: &Programmed, cfg: &NftConfig, kept: &AffinityEntries) -> String {
    render_tables(prog, cfg, kept, None)
}

/// The tables for `ports` as a first load: [`render_full`]'s script with the sets and maps declared but
/// their elements left out, and those elements, to be sent in one netlink batch after it. nft spends
/// more on tens of thousands of elements than on all the rules (0.5 of 0.87 s of CPU at 10,000
/// Services); the batch costs the kernel's part only. For tables that do not exist yet: until the
/// elements follow, the new tables send no traffic anywhere, as before they existed.
pub fn render_cold(ports: &[Arc<ServicePort>], cfg: &NftConfig) -> (String, Vec<ElementOp>) {
    let mut elements = Vec::new();
    let script = render_tables(
        &Programmed::from_ports(ports),
        cfg,
        &AffinityEntries::new(),
        Some(&mut elements),
    );
    (script, elements)
}

/// The ruleset text; with `apart`, the elements that netlink can carry go there instead of into the
/// text.
fn render_tables(
    prog: &Programmed,
    cfg: &NftConfig,
    kept: &AffinityEntries,
    mut apart: Option<&mut Vec<ElementOp>>,
) -> String {
    let mut out = String::new();
    for fam in families(cfg) {
        let t = &cfg.table;
        let ipx = fam.nft();
        let _ = writeln!(
            out,
            "add table {ipx} {t}\ndelete table {ipx} {t}\ntable {ipx} {t} {{"
        );
        let _ = writeln!(out, "\tcomment \"svcnet service proxy rules\"");
        let spec = table_spec(prog, cfg, fam, kept);
        for (name, mut set) in spec.sets {
            if let Some(ops) = apart.as_deref_mut() {
                ops.extend(
                    std::mem::take(&mut set.elements)
                        .into_iter()
                        .map(|elem| ElementOp {
                            family: fam,
                            set: name.clone(),
                            add: true,
                            elem,
                        }),
                );
            }
            write_set(&mut out, &name, &set);
        }
        for (name, lines) in &spec.chains {
            write_chain(&mut out, name, lines);
        }
        out.push_str("}\n");
    }
    out
}
