//! Stale UDP conntrack entries, as kube-proxy cleans them up.
//!
//! UDP has no connection to close: a client that keeps sending to a ClusterIP keeps hitting its conntrack
//! entry, whose DNAT still points at an endpoint that is gone, until the entry times out, which it never
//! does while the client keeps sending. So when a UDP endpoint leaves a port, entries whose original
//! destination is one of the port's frontends and whose reply comes from that endpoint are deleted. And
//! when a UDP port goes from no endpoints to some, entries for its frontends are deleted: they were made
//! while traffic was rejected or not NATed, and would keep new packets from being NATed.
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

/// `conntrack -D` arguments for UDP entries of `family` (the family of that address) addressed to
/// `frontend`: its address and port, or only the port for a NodePort.
fn delete_args(family: &IpAddr, frontend: &Frontend) -> Vec<String> {
    let mut c: Vec<String> = if family.is_ipv6() {
        vec!["-f".into(), "ipv6".into()]
    } else {
        Vec::new()
    };
    c.extend(["-D", "-p", "udp"].map(String::from));
    if let Some(ip) = frontend.ip {
        c.extend(["--orig-dst".into(), ip.to_string()]);
    }
    c.extend(["--orig-port-dst".into(), frontend.port.to_string()]);
    c
}

/// The `conntrack` argument lists that clean up after one port changed from `old` to `new` (either may be
/// absent). Only UDP ports need cleanup.
pub fn cleanup_commands(old: Option<&ServicePort>, new: Option<&ServicePort>) -> Vec<Vec<String>> {
    let Some(any) = new.or(old) else {
        return Vec::new();
    };
    if any.name.protocol != Protocol::Udp {
        return Vec::new();
    }
    let mut cmds = Vec::new();
    let old_eps = old.map(usable).unwrap_or_default();
    let new_eps = new.map(usable).unwrap_or_default();
    // Endpoints that went away: entries through any old frontend whose replies come from them.
    if let Some(old) = old {
        for (ep, _) in old_eps.difference(&new_eps) {
            let same_family = |f: &Frontend| f.ip.is_none_or(|ip| ip.is_ipv6() == ep.is_ipv6());
            for f in old.frontends().filter(same_family) {
                let mut c = delete_args(ep, &f);
                c.extend(["--reply-src".into(), ep.to_string()]);
                cmds.push(c);
            }
        }
    }
    // From no endpoints to some: whatever was tracked for the frontends was never NATed.
    if let Some(new) = new
        && old_eps.is_empty()
        && !new_eps.is_empty()
    {
        for f in new.frontends() {
            match f.ip {
                Some(ip) => cmds.push(delete_args(&ip, &f)),
                // A NodePort answers in both families.
                None => {
                    for family in [IpAddr::from([0u8; 4]), IpAddr::from([0u16; 8])] {
                        cmds.push(delete_args(&family, &f));
                    }
                }
            }
        }
    }
    cmds.sort();
    cmds.dedup();
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
    fn tcp_needs_nothing() {
        let old = port(Protocol::Tcp, &["10.244.0.1"]);
        assert!(cleanup_commands(Some(&old), None).is_empty());
    }
}
