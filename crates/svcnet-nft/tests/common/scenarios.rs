//! Traffic scenarios both IP families run the same way (`traffic.rs`, `traffic_ipv6.rs`): only the
//! addresses differ.

use std::sync::Arc;
use std::time::Duration;

use svcnet_dataplane::{Backend, Change, Endpoint, Protocol, ServicePort};

use svcnet_testsupport::lab::Lab;

use super::netns::{NftLab, lab_config};
use super::svc_port;

/// The pods' endpoints of one family: `(pods, the ones local to the node)`.
pub type PodEps = fn(&[usize], &[usize]) -> Vec<Endpoint>;

/// A UDP client keeps one flow to `cip:53`; its endpoint is replaced while the old pod still answers.
/// Only conntrack cleanup moves the flow: without it the old DNAT lives as long as the client sends.
pub fn udp_flow_follows_endpoint_change(lab: &Lab, cip: &str, eps: PodEps) {
    let mut b = lab.backend(lab_config());
    let make = |pod: usize| Arc::new(svc_port("dns", Protocol::Udp, cip, 53, eps(&[pod], &[pod])));
    let v1 = make(0);
    b.sync_all(std::slice::from_ref(&v1)).unwrap();
    let mut client = lab.spawn_client(&["udp", cip, "53", "3"]);
    assert!(client.wait_first_answer(), "the client got no answer");
    std::thread::sleep(Duration::from_millis(1000));
    b.apply(&[Change::Upsert {
        old: Some(v1),
        new: make(1),
    }])
    .unwrap();
    let r = client.finish();
    assert!(r.hits.get("pod0").is_some_and(|&n| n > 10), "{r:?}");
    let tail: Vec<&String> = r.seq.iter().rev().take(20).collect();
    assert!(
        tail.iter().all(|p| *p == "pod1"),
        "flow still goes to the old endpoint: {r:?}"
    );
}

/// Connections to `cip:80` keep succeeding while the endpoint set changes every 100 ms.
pub fn connections_survive_updates(lab: &Lab, cip: &str, eps: PodEps) {
    let mut b = lab.backend(lab_config());
    let make = |pods: &[usize]| Arc::new(svc_port("busy", Protocol::Tcp, cip, 80, eps(pods, &[])));
    let sets: [&[usize]; 4] = [&[0, 1, 2], &[1, 2], &[0, 2], &[0]];
    let mut cur: Arc<ServicePort> = make(sets[0]);
    b.sync_all(std::slice::from_ref(&cur)).unwrap();
    let client = lab.spawn_client(&["load", cip, "80", "3"]);
    for i in 1..=25 {
        std::thread::sleep(Duration::from_millis(100));
        let next = make(sets[i % sets.len()]);
        b.apply(&[Change::Upsert {
            old: Some(cur),
            new: next.clone(),
        }])
        .unwrap();
        cur = next;
    }
    let r = client.finish();
    assert_eq!(r.failed(), 0, "{r:?}");
    assert!(r.ok() > 100, "{r:?}");
    assert_eq!(r.hits.len(), 3, "{r:?}");
}

/// The addresses a scenario needs in one family.
pub struct Addrs {
    /// Three free ClusterIPs.
    pub cluster_ips: [&'static str; 3],
    /// A LoadBalancer IP.
    pub lb_ip: &'static str,
    /// The node's address, as the outside client reaches it.
    pub node: &'static str,
    /// The node's address on the pod bridge.
    pub bridge: &'static str,
    /// The outside client's address, and a second one it can send from.
    pub client: &'static str,
    /// The client's second address.
    pub client2: &'static str,
    /// The prefix length of one address (32 or 128).
    pub host_prefix: u8,
}

/// ClientIP affinity, externalTrafficPolicy Local (client address kept from outside, short-circuit for
/// pods) and loadBalancerSourceRanges.
pub fn affinity_local_policy_source_ranges(lab: &Lab, a: &Addrs, eps: PodEps) {
    let mut b = lab.backend(lab_config());
    let [sticky_ip, local_ip, ranged_ip] = a.cluster_ips;
    let mut sticky = svc_port("sticky", Protocol::Tcp, sticky_ip, 80, eps(&[0, 1, 2], &[]));
    sticky.affinity_timeout = Some(Duration::from_secs(600));
    let mut local = svc_port("local", Protocol::Tcp, local_ip, 80, eps(&[0, 1, 2], &[0]));
    local.node_port = Some(30081);
    local.external_policy_local = true;
    local.external_endpoints = eps(&[0], &[0]);
    let mut ranged = svc_port("ranged", Protocol::Tcp, ranged_ip, 80, eps(&[0, 1, 2], &[]));
    ranged.load_balancer_ips = vec![a.lb_ip.parse().unwrap()];
    ranged.load_balancer_source_ranges = vec![format!("{}/{}", a.client, a.host_prefix).parse().unwrap()];
    b.sync_all(&[Arc::new(sticky), Arc::new(local), Arc::new(ranged)])
        .unwrap();

    // ClientIP affinity: every connection from one client goes to the same pod.
    let r = lab.client_in(&lab.client, &["tcp", sticky_ip, "80", "30", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 1), "{r:?}");

    // externalTrafficPolicy Local from outside: this node's endpoint only, client address kept.
    let r = lab.client_in(&lab.client, &["tcp", a.node, "30081", "30", "2"]);
    assert_eq!(r.hits.get("pod0"), Some(&30), "{r:?}");
    assert_eq!(r.peers, vec![a.client.to_string()], "{r:?}");
    // ... while pods short-circuit to every endpoint.
    let r = lab.client_in(&lab.pods[1], &["tcp", a.bridge, "30081", "60", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");

    // loadBalancerSourceRanges: the allowed address gets through, the other is dropped.
    let r = lab.client_in(&lab.client, &["tcp", a.lb_ip, "80", "10", "2", a.client]);
    assert_eq!(r.ok(), 10, "{r:?}");
    let r = lab.client_in(&lab.client, &["tcp", a.lb_ip, "80", "1", "0.5", a.client2]);
    assert_eq!(r.errors.keys().collect::<Vec<_>>(), vec!["TimeoutError"], "{r:?}");
}
