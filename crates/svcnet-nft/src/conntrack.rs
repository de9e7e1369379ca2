//! Stale conntrack entries: UDP as kube-proxy cleans them up, and unanswered TCP ones, which it leaves.
//!
//! UDP has no connection to close: a client that keeps sending to a ClusterIP keeps hitting its conntrack
//! entry, whose DNAT still points at an endpoint that is gone, until the entry times out, which it never
//! does while the client keeps sending. So when a UDP endpoint leaves a port, entries whose original
//! destination is one of the port's frontends and whose reply comes from that endpoint are deleted. And
//! when a UDP port goes from no endpoints to some, entries for its frontends are deleted: they were made
//! while traffic was rejected or not NATed, and would keep new packets from being NATed.
//!
//! TCP goes further than kube-proxy. A connection attempt to an endpoint that died (its node went away)
//! leaves an entry in SYN_SENT, DNATed to the dead pod. A later connection from the same client address
//! and (reused) port to the same frontend matches that entry, is taken for a retransmission and follows
//! the old DNAT to the dead pod, and each such SYN keeps the entry alive: under load a share of new
//! connections keeps failing long after the endpoint stopped being used. So when an endpoint address
//! leaves the addresses a TCP port DNATs to (removed from the slices, or listed but no longer ready or
//! serving, as a dead node's pods stay until the node is deleted), entries through the port's frontends
//! whose reply would come from it and that are still in SYN_SENT (never answered) are deleted. Entries
//! that got a reply (ESTABLISHED and later) are left alone, as Kubernetes keeps a not-ready or removed
//! pod's open connections. The filter is `--state SYN_SENT`, not
//! `--status UNREPLIED`: conntrack-tools 1.4.7 lists by `UNREPLIED` correctly but ignores it in `-D`, which
//! then deletes every matching entry, established ones included (tried in a namespace).
//!
//! The `conntrack` tool (conntrack-tools, which speaks netlink) does the work through a configured command
//! prefix, like `nft`: no netlink crate on crates.io covers conntrack deletion filters safely and
//! completely, and a process per deletion is cheap next to how rarely UDP endpoints go away.

use std::collections::BTreeSet;
use std::net::IpAddr;

use svcnet_dataplane::{Endpoint, Frontend, Protocol, ServicePort};

/// The usable endpoints of a port (internal and external sets), by address.
fn usable(sp: &ServicePort) -> BTreeSet<(IpAddr, u16)> {
    sp.internal_endpoints
        .iter()
        .chain(&sp.external_endpoints)
        .map(|e: &Endpoint| (e.ip, e.port))
        .collect()
}

/// `conntrack -D` arguments for `proto` entries of `family` (the family of that address) addressed to
/// `frontend`: its address and port, or only the port for a NodePort.
fn delete_args(proto: &str, family: &IpAddr, frontend: &Frontend) -> Vec<String> {
    let mut c: Vec<String> = if family.is_ipv6() {
        vec!["-f".into(), "ipv6".into()]
    } else {
        Vec::new()
    };
    c.extend(["-D".into(), "-p".into(), proto.into()]);
    if let Some(ip) = frontend.ip {
        c.extend(["--orig-dst".into(), ip.to_string()]);
    }
    c.extend(["--orig-port-dst".into(), frontend.port.to_string()]);
    c
}

/// The `conntrack` argument lists that clean up after one port changed from `old` to `new` (either may be
/// absent): UDP and TCP ports need cleanup, SCTP none.
pub fn cleanup_commands(old: Option<&ServicePort>, new: Option<&ServicePort>) -> Vec<Vec<String>> {
    let Some(any) = new.or(old) else {
        return Vec::new();
    };
    match any.name.protocol {
        Protocol::Udp => {}
        Protocol::Tcp => return tcp_cleanup_commands(old, new),
        _ => return Vec::new(),
    }
    let mut cmds = Vec::new();
    let old_eps = old.map(usable).unwrap_or_default();
    let new_eps = new.map(usable).unwrap_or_default();
    // Endpoints that went away: entries through any old frontend whose replies come from them.
    if let Some(old) = old {
        let gone = old_eps.difference(&new_eps).map(|(ip, _)| *ip);
        cmds.extend(replies_from("udp", old, gone, &[]));
    }
    // From no endpoints to some: whatever was tracked for the frontends was never NATed.
    if let Some(new) = new
        && old_eps.is_empty()
        && !new_eps.is_empty()
    {
        for f in new.frontends() {
            match f.ip {
                Some(ip) => cmds.push(delete_args("udp", &ip, &f)),
                // A NodePort answers in both families.
                None => {
                    for family in [IpAddr::from([0u8; 4]), IpAddr::from([0u16; 8])] {
                        cmds.push(delete_args("udp", &family, &f));
                    }
                }
            }
        }
    }
    cmds.sort();
    cmds.dedup();
    cmds
}

/// For a TCP port: the never-answered entries (SYN_SENT) through any old frontend toward each endpoint
/// address the port no longer DNATs to.
fn tcp_cleanup_commands(old: Option<&ServicePort>, new: Option<&ServicePort>) -> Vec<Vec<String>> {
    let Some(old) = old else {
        return Vec::new();
    };
    // Leaving the usable set, not only the slices: a dead node's pods stay listed (terminating, not
    // ready) until the node is deleted, and SYNs DNATed to them before they turned unready leave
    // SYN_SENT entries that capture any new connection with the same tuple for two minutes (measured: ~11 %
    // of new connections in the node-failure chaos run). Only never-answered entries go, so a not-ready
    // pod's established connections are kept, as Kubernetes keeps them.
    let addrs = |sp: &ServicePort| -> BTreeSet<IpAddr> { usable(sp).into_iter().map(|(ip, _)| ip).collect() };
    let new_eps = new.map(addrs).unwrap_or_default();
    let old_eps = addrs(old);
    let gone = old_eps.difference(&new_eps).copied();
    let mut cmds = replies_from("tcp", old, gone, &["--state", "SYN_SENT"]);
    cmds.sort();
    cmds.dedup();
    cmds
}

/// `conntrack -D` arguments for `proto` entries through any of `old`'s frontends (of the endpoint's
/// family) whose replies come from an endpoint address in `gone`, with `extra` filters appended.
fn replies_from(
    proto: &str,
    old: &ServicePort,
    gone: impl IntoIterator<Item = IpAddr>,
    extra: &[&str],
) -> Vec<Vec<String>> {
    let mut cmds = Vec::new();
    for ep in gone {
        let same_family = |f: &Frontend| f.ip.is_none_or(|ip| ip.is_ipv6() == ep.is_ipv6());
        for f in old.frontends().filter(same_family) {
            let mut c = delete_args(proto, &ep, &f);
            c.extend(["--reply-src".into(), ep.to_string()]);
            c.extend(extra.iter().map(|s| s.to_string()));
            cmds.push(c);
        }
    }
    cmds
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use svcnet_dataplane::{Endpoint, ServicePortName};

    use super::*;

    fn ep(ip: &str) -> Endpoint {
        Endpoint {
            ip: ip.parse().unwrap(),
            port: 5353,
            ready: true,
            serving: true,
            terminating: false,
            node: None,
            zone: None,
            is_local: false,
            zone_hints: None,
        }
    }

    fn port(protocol: Protocol, eps: &[&str]) -> ServicePort {
        let eps: Vec<Endpoint> = eps.iter().map(|e| ep(e)).collect();
        ServicePort {
            name: ServicePortName {
                namespace: Arc::from("ns"),
                name: Arc::from("dns"),
                port: Arc::from(""),
                protocol,
            },
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            port: 53,
            node_port: Some(30053),
            external_ips: vec![],
            load_balancer_ips: vec![],
            load_balancer_source_ranges: vec![],
            affinity_timeout: None,
            internal_policy_local: false,
            external_policy_local: false,
            health_check_node_port: None,
            balance: None,
            has_endpoints: !eps.is_empty(),
            internal_endpoints: eps.clone(),
            external_endpoints: eps.clone(),
            all_endpoints: eps,
        }
    }

    fn joined(cmds: Vec<Vec<String>>) -> Vec<String> {
        cmds.into_iter().map(|c| c.join(" ")).collect()
    }

    #[test]
    fn endpoint_gone_deletes_its_flows() {
        let old = port(Protocol::Udp, &["10.244.0.1", "10.244.0.2"]);
        let new = port(Protocol::Udp, &["10.244.0.2"]);
        assert_eq!(
            joined(cleanup_commands(Some(&old), Some(&new))),
            vec![
                "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.0.1",
                "-D -p udp --orig-port-dst 30053 --reply-src 10.244.0.1",
            ]
        );
        assert_eq!(cleanup_commands(Some(&old), None).len(), 4);
    }

    #[test]
    fn first_endpoints_delete_unnated_flows() {
        let old = port(Protocol::Udp, &[]);
        let new = port(Protocol::Udp, &["10.244.0.2"]);
        assert_eq!(
            joined(cleanup_commands(Some(&old), Some(&new))),
            vec![
                "-D -p udp --orig-dst 10.96.0.10 --orig-port-dst 53",
                "-D -p udp --orig-port-dst 30053",
                "-f ipv6 -D -p udp --orig-port-dst 30053",
            ]
        );
    }

    #[test]
    fn tcp_removed_endpoint_loses_its_unanswered_flows() {
        let old = port(Protocol::Tcp, &["10.244.0.1", "10.244.0.2", "fd00::1"]);
        let new = port(Protocol::Tcp, &["10.244.0.2"]);
        assert_eq!(
            joined(cleanup_commands(Some(&old), Some(&new))),
            vec![
                "-D -p tcp --orig-dst 10.96.0.10 --orig-port-dst 53 --reply-src 10.244.0.1 --state SYN_SENT",
                "-D -p tcp --orig-port-dst 30053 --reply-src 10.244.0.1 --state SYN_SENT",
                "-f ipv6 -D -p tcp --orig-port-dst 30053 --reply-src fd00::1 --state SYN_SENT",
            ]
        );
        // The whole port going away removes every endpoint; a new port removes none.
        assert_eq!(cleanup_commands(Some(&old), None).len(), 5);
        assert!(cleanup_commands(None, Some(&new)).is_empty());
        // Endpoints that stay, or only appear, need nothing.
        assert!(cleanup_commands(Some(&new), Some(&old)).is_empty());
    }

    #[test]
    fn tcp_unready_endpoint_loses_only_its_unanswered_flows() {
        let old = port(Protocol::Tcp, &["10.244.0.1", "10.244.0.2"]);
        // 10.244.0.1 still listed, but neither ready nor serving (a dead node's pod): no longer usable.
        let mut new = port(Protocol::Tcp, &["10.244.0.2"]);
        let mut unready = ep("10.244.0.1");
        (unready.ready, unready.serving, unready.terminating) = (false, false, true);
        new.all_endpoints.push(unready);
        let cmds = cleanup_commands(Some(&old), Some(&new));
        assert!(!cmds.is_empty());
        for c in &cmds {
            assert!(c.windows(2).any(|w| w == ["--reply-src", "10.244.0.1"]), "{c:?}");
            assert!(c.windows(2).any(|w| w == ["--state", "SYN_SENT"]), "{c:?}");
        }
    }

    #[test]
    fn sctp_needs_nothing() {
        let old = port(Protocol::Sctp, &["10.244.0.1"]);
        assert!(cleanup_commands(Some(&old), None).is_empty());
    }
}
