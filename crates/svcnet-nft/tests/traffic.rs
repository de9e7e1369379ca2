//! Real traffic through the rules, in network namespaces this test creates (root; skipped otherwise): a
//! node with a bridge, pods running a server that answers with its name and the client address it sees,
//! and an outside client routed through the node. See `svcnet_testsupport::lab` for the lab and its safety rules.

mod common;

use std::sync::Arc;
use std::time::Duration;

use svcnet_dataplane::{Backend, Change, Protocol};

use common::netns::{NftLab, can_run, lab_config};
use common::{scenarios, svc_port};
use svcnet_testsupport::lab::{BRIDGE_IP, CLIENT_IP, CLIENT_IP2, Lab, NODE_IP};

#[test]
fn clusterip_nodeport_reject_hairpin() {
    if !can_run("clusterip_nodeport_reject_hairpin") {
        return;
    }
    let lab = Lab::new(3);
    let mut b = lab.backend(lab_config());
    let mut web = svc_port(
        "web",
        Protocol::Tcp,
        "10.96.0.10",
        80,
        Lab::pod_eps(&[0, 1, 2], &[0, 1, 2]),
    );
    web.node_port = Some(30080);
    let empty = svc_port("empty", Protocol::Tcp, "10.96.0.11", 80, Vec::new());
    let hairpin = svc_port(
        "hairpin",
        Protocol::Tcp,
        "10.96.0.12",
        80,
        Lab::pod_eps(&[0], &[0]),
    );
    b.sync_all(&[Arc::new(web), Arc::new(empty), Arc::new(hairpin)])
        .unwrap();

    // ClusterIP: spread over all three pods, client address kept (pod CIDR traffic is not masqueraded, and
    // the client is routed, so only off-cluster traffic is: the client is off-cluster here).
    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.10", "80", "60", "2"]);
    assert_eq!(r.failed(), 0, "{r:?}");
    assert_eq!(r.hits.len(), 3, "not spread over all pods: {r:?}");

    // From a pod: source kept, except when the pod reaches itself (hairpin: masqueraded to the bridge).
    let r = lab.client_in(&lab.pods[1], &["tcp", "10.96.0.10", "80", "30", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");
    assert_eq!(r.peers, vec![BRIDGE_IP.to_string(), Lab::pod_ip_of(1)], "{r:?}");

    // NodePort on the node's address: masqueraded (externalTrafficPolicy Cluster).
    let r = lab.client_in(&lab.client, &["tcp", NODE_IP, "30080", "60", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");
    assert_eq!(r.peers, vec![BRIDGE_IP.to_string()], "{r:?}");

    // No endpoints: refused at once, not a timeout.
    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.11", "80", "3", "5"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&3), "{r:?}");
    assert!(r.slowest_error < 1.0, "rejection took {} s", r.slowest_error);

    // A port no Service has on a ClusterIP: rejected; an unallocated ClusterIP: dropped.
    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.10", "81", "1", "3"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&1), "{r:?}");
    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.99", "80", "1", "0.5"]);
    assert_eq!(r.errors.keys().collect::<Vec<_>>(), vec!["TimeoutError"], "{r:?}");

    // Hairpin: a pod reaching itself through its Service, masqueraded so the reply comes back via the node.
    let r = lab.client_in(&lab.pods[0], &["tcp", "10.96.0.12", "80", "5", "2"]);
    assert_eq!(r.hits.get("pod0"), Some(&5), "{r:?}");
    assert_eq!(r.peers, vec![BRIDGE_IP.to_string()], "{r:?}");
}

/// NodePorts answer on every local address by default, and only on the listed ones with
/// `nodeport_addresses` (kube-proxy's `--nodeport-addresses`): elsewhere the port is the node's own, closed.
#[test]
fn nodeport_addresses_limit_where_node_ports_answer() {
    if !can_run("nodeport_addresses_limit_where_node_ports_answer") {
        return;
    }
    let lab = Lab::new(1);
    let mut web = svc_port("web", Protocol::Tcp, "10.96.0.15", 80, Lab::pod_eps(&[0], &[0]));
    web.node_port = Some(30081);
    let web = Arc::new(web);
    let mut b = lab.backend(lab_config());
    b.sync_all(std::slice::from_ref(&web)).unwrap();
    for addr in [NODE_IP, BRIDGE_IP] {
        let r = lab.client_in(&lab.client, &["tcp", addr, "30081", "3", "2"]);
        assert_eq!((r.failed(), r.hits.get("pod0")), (0, Some(&3)), "{addr}: {r:?}");
    }

    drop(b);
    let mut cfg = lab_config();
    // Two addresses (the second is no address of the node's): the rules take a set.
    cfg.nodeport_addresses = vec![NODE_IP.parse().unwrap(), "192.168.50.9".parse().unwrap()];
    let mut b = lab.backend(cfg);
    b.sync_all(std::slice::from_ref(&web)).unwrap();
    let r = lab.client_in(&lab.client, &["tcp", NODE_IP, "30081", "3", "2"]);
    assert_eq!((r.failed(), r.hits.get("pod0")), (0, Some(&3)), "{r:?}");
    let r = lab.client_in(&lab.client, &["tcp", BRIDGE_IP, "30081", "3", "2"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&3), "{r:?}");
    // The Service itself is untouched.
    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.15", "80", "3", "2"]);
    assert_eq!(r.failed(), 0, "{r:?}");
}

/// ClientIP affinity, externalTrafficPolicy Local and loadBalancerSourceRanges.
#[test]
fn affinity_local_policy_source_ranges() {
    if !can_run("affinity_local_policy_source_ranges") {
        return;
    }
    let addrs = scenarios::Addrs {
        cluster_ips: ["10.96.0.20", "10.96.0.21", "10.96.0.22"],
        lb_ip: "192.0.2.100",
        node: NODE_IP,
        bridge: BRIDGE_IP,
        client: CLIENT_IP,
        client2: CLIENT_IP2,
        host_prefix: 32,
    };
    scenarios::affinity_local_policy_source_ranges(&Lab::new(3), &addrs, Lab::pod_eps);
}

/// A UDP client's flow follows an endpoint change (stale conntrack entries are deleted).
#[test]
fn udp_conntrack_cleanup() {
    if !can_run("udp_conntrack_cleanup") {
        return;
    }
    scenarios::udp_flow_follows_endpoint_change(&Lab::new(2), "10.96.0.30", Lab::pod_eps);
}

/// Connections keep succeeding while the endpoint set changes every 100 ms.
#[test]
fn update_under_load() {
    if !can_run("update_under_load") {
        return;
    }
    scenarios::connections_survive_updates(&Lab::new(3), "10.96.0.40", Lab::pod_eps);
}

/// An agent restart: a new backend that knows nothing of the kernel's state takes the tables over (reads
/// them back and changes what differs in one transaction), five times under load, once with the
/// endpoints changed while it was down. No connection sees a missing or half-built table.
#[test]
fn restart_without_failed_connections() {
    if !can_run("restart_without_failed_connections") {
        return;
    }
    let lab = Lab::new(3);
    let make = |pods: &[usize]| {
        Arc::new(svc_port(
            "restart",
            Protocol::Tcp,
            "10.96.0.41",
            80,
            Lab::pod_eps(pods, &[]),
        ))
    };
    let mut b = lab.backend(lab_config());
    b.sync_all(&[make(&[0, 1, 2])]).unwrap();
    let client = lab.spawn_client(&["load", "10.96.0.41", "80", "3"]);
    for i in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        drop(b);
        b = lab.backend(lab_config());
        let pods: &[usize] = if i == 2 { &[1, 2] } else { &[0, 1, 2] };
        b.sync_all(&[make(pods)]).unwrap();
        // It took the tables over in place (never deleted nor replaced), writing only what changed.
        let stats = b.takeover().expect("the tables were taken over");
        assert_eq!(stats.elements > 0, i == 2, "restart {i}: {stats:?}");
        // And the restarted backend goes on incrementally.
        b.apply(&[Change::Upsert {
            old: Some(make(pods)),
            new: make(&[0, 1, 2]),
        }])
        .unwrap();
    }
    let r = client.finish();
    assert_eq!(r.failed(), 0, "{r:?}");
    assert!(r.ok() > 100, "{r:?}");
    assert_eq!(r.hits.len(), 3, "{r:?}");
}

/// The endpoint map through the life of a Service: none (refused at once), one, three (spread), back to
/// none; and ClientIP affinity that lets a client go after its timeout.
#[test]
fn endpoint_count_changes_and_affinity_timeout() {
    if !can_run("endpoint_count_changes_and_affinity_timeout") {
        return;
    }
    let lab = Lab::new(3);
    let mut b = lab.backend(lab_config());
    let make = |pods: &[usize]| {
        Arc::new(svc_port(
            "grow",
            Protocol::Tcp,
            "10.96.0.50",
            80,
            Lab::pod_eps(pods, &[]),
        ))
    };
    let mut sticky = svc_port(
        "brief",
        Protocol::Tcp,
        "10.96.0.51",
        80,
        Lab::pod_eps(&[0, 1, 2], &[]),
    );
    sticky.affinity_timeout = Some(Duration::from_secs(1));
    let mut cur = make(&[]);
    b.sync_all(&[cur.clone(), Arc::new(sticky)]).unwrap();
    let mut step = |pods: &[usize]| {
        let next = make(pods);
        b.apply(&[Change::Upsert {
            old: Some(cur.clone()),
            new: next.clone(),
        }])
        .unwrap();
        cur = next;
    };

    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.50", "80", "3", "2"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&3), "{r:?}");
    step(&[1]);
    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.50", "80", "20", "2"]);
    assert_eq!(r.hits.get("pod1"), Some(&20), "{r:?}");
    step(&[0, 1, 2]);
    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.50", "80", "60", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");
    step(&[2, 0]);
    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.50", "80", "40", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 2), "{r:?}");
    assert!(!r.hits.contains_key("pod1"), "{r:?}");
    step(&[]);
    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.50", "80", "3", "2"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&3), "{r:?}");

    // Affinity holds while the client keeps coming, and ends once it has been away longer than the
    // timeout (1 s): over eight returns after 1.5 s away, more than one pod answers (all the same by
    // chance: 3^-7).
    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.51", "80", "20", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 1), "{r:?}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(1500));
        let r = lab.client_in(&lab.client, &["tcp", "10.96.0.51", "80", "1", "2"]);
        assert_eq!(r.failed(), 0, "{r:?}");
        seen.extend(r.hits.into_keys());
    }
    assert!(seen.len() > 1, "affinity outlived its timeout: {seen:?}");
}
