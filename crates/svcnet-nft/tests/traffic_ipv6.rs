//! Real IPv6 traffic through the `ip6 svcnet` table, in network namespaces this test creates (root;
//! skipped otherwise): the dual-stack lab of `svcnet_testsupport::lab` (pods `fd00:10:244::1x` on the node's
//! bridge `fd00:10:244::1`, an outside client `fd00:192:168::2` routed through the node
//! `fd00:192:168::1`, Services in `fd00:10:96::/112`). See `svcnet_testsupport::netns` for its safety rules.

mod common;

use std::sync::Arc;
use std::time::Duration;

use svcnet_dataplane::{Backend, Change, Protocol};

use common::netns::{NftLab, can_run, lab_config};
use common::{scenarios, svc_port};
use svcnet_testsupport::lab::{BRIDGE_IP, BRIDGE_IP6, CLIENT_IP6, CLIENT_IP6_2, Lab, NODE_IP, NODE_IP6};

#[test]
fn clusterip_nodeport_reject_hairpin_v6() {
    if !can_run("clusterip_nodeport_reject_hairpin_v6") {
        return;
    }
    let lab = Lab::new(3);
    let mut b = lab.backend(lab_config());
    let mut web = svc_port(
        "web",
        Protocol::Tcp,
        "fd00:10:96::10",
        80,
        Lab::pod_eps6(&[0, 1, 2], &[0, 1, 2]),
    );
    web.node_port = Some(30080);
    let empty = svc_port("empty", Protocol::Tcp, "fd00:10:96::11", 80, Vec::new());
    let hairpin = svc_port(
        "hairpin",
        Protocol::Tcp,
        "fd00:10:96::12",
        80,
        Lab::pod_eps6(&[0], &[0]),
    );
    b.sync_all(&[Arc::new(web), Arc::new(empty), Arc::new(hairpin)])
        .unwrap();

    // ClusterIP from outside: spread over all three pods; the client is off-cluster (not in the pod
    // CIDR), so it is masqueraded to the bridge's address.
    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::10", "80", "60", "2"]);
    assert_eq!(r.failed(), 0, "{r:?}");
    assert_eq!(r.hits.len(), 3, "not spread over all pods: {r:?}");
    assert_eq!(r.peers, vec![BRIDGE_IP6.to_string()], "{r:?}");

    // From a pod: source kept, except when the pod reaches itself (hairpin: masqueraded to the bridge).
    let r = lab.client_in(&lab.pods[1], &["tcp", "fd00:10:96::10", "80", "30", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");
    assert_eq!(r.peers, vec![BRIDGE_IP6.to_string(), Lab::pod_ip6_of(1)], "{r:?}");

    // NodePort on the node's IPv6 address: masqueraded (externalTrafficPolicy Cluster).
    let r = lab.client_in(&lab.client, &["tcp", NODE_IP6, "30080", "60", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");
    assert_eq!(r.peers, vec![BRIDGE_IP6.to_string()], "{r:?}");
    // ... and on the bridge's IPv6 address, from a pod.
    let r = lab.client_in(&lab.pods[2], &["tcp", BRIDGE_IP6, "30080", "30", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");
    // The Service is IPv6 only: the node's IPv4 address has no such NodePort.
    let r = lab.client_in(&lab.client, &["tcp", NODE_IP, "30080", "1", "1"]);
    assert_eq!(r.ok(), 0, "{r:?}");

    // No endpoints: refused at once, not a timeout.
    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::11", "80", "3", "5"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&3), "{r:?}");
    assert!(r.slowest_error < 1.0, "rejection took {} s", r.slowest_error);

    // A port no Service has on a ClusterIP: rejected at once (a TCP reset: an ICMPv6 port unreachable
    // reaching the client's TCP while connect() still owns the socket would only set a soft error,
    // `nstat` TcpExtLockDroppedIcmps, and the refusal would wait for the SYN's retry); an unallocated
    // ClusterIP: dropped.
    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::10", "81", "1", "5"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&1), "{r:?}");
    assert!(r.slowest_error < 1.0, "rejection took {} s", r.slowest_error);
    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::99", "80", "1", "0.5"]);
    assert_eq!(r.errors.keys().collect::<Vec<_>>(), vec!["TimeoutError"], "{r:?}");

    // The same from a pod, and the pod's next connections to the ClusterIP work at once (no ICMPv6
    // redirect has made it on-link).
    let r = lab.client_in(&lab.pods[1], &["tcp", "fd00:10:96::11", "80", "3", "5"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&3), "{r:?}");
    assert!(r.slowest_error < 1.0, "rejection took {} s", r.slowest_error);
    let r = lab.client_in(&lab.pods[1], &["tcp", "fd00:10:96::10", "81", "2", "5"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&2), "{r:?}");
    assert!(r.slowest_error < 1.0, "rejection took {} s", r.slowest_error);
    let r = lab.client_in(&lab.pods[1], &["tcp", "fd00:10:96::10", "80", "10", "1"]);
    assert_eq!((r.failed(), r.ok()), (0, 10), "{r:?}");

    // Hairpin: a pod reaching itself through its Service, masqueraded so the reply comes back via the node.
    let r = lab.client_in(&lab.pods[0], &["tcp", "fd00:10:96::12", "80", "5", "2"]);
    assert_eq!(r.hits.get("pod0"), Some(&5), "{r:?}");
    assert_eq!(r.peers, vec![BRIDGE_IP6.to_string()], "{r:?}");
}

/// The endpoint map of an IPv6 Service through `apply`: three pods, one, none (refused), two.
#[test]
fn endpoint_change_is_live_v6() {
    if !can_run("endpoint_change_is_live_v6") {
        return;
    }
    let lab = Lab::new(3);
    let mut b = lab.backend(lab_config());
    let make = |pods: &[usize]| {
        Arc::new(svc_port(
            "moving",
            Protocol::Tcp,
            "fd00:10:96::20",
            80,
            Lab::pod_eps6(pods, &[]),
        ))
    };
    let mut cur = make(&[0, 1, 2]);
    b.sync_all(std::slice::from_ref(&cur)).unwrap();
    let mut step = |pods: &[usize]| {
        let next = make(pods);
        b.apply(&[Change::Upsert {
            old: Some(cur.clone()),
            new: next.clone(),
        }])
        .unwrap();
        cur = next;
    };

    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::20", "80", "60", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");
    step(&[2]);
    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::20", "80", "20", "2"]);
    assert_eq!(r.hits.get("pod2"), Some(&20), "{r:?}");
    step(&[]);
    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::20", "80", "3", "2"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&3), "{r:?}");
    assert!(r.slowest_error < 1.0, "rejection took {} s", r.slowest_error);
    step(&[0, 1]);
    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::20", "80", "40", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 2), "{r:?}");
    assert!(!r.hits.contains_key("pod2"), "{r:?}");
}

/// A dual-stack Service: each family's ClusterIP (and the NodePort on each family's node address) reaches
/// that family's endpoints. When one family loses its endpoints, only that family rejects.
#[test]
fn dual_stack_service() {
    if !can_run("dual_stack_service") {
        return;
    }
    let lab = Lab::new(3);
    let mut b = lab.backend(lab_config());
    let make = |v4: &[usize], v6: &[usize]| {
        let mut eps = Lab::pod_eps(v4, &[]);
        eps.extend(Lab::pod_eps6(v6, &[]));
        let mut sp = svc_port("dual", Protocol::Tcp, "10.96.0.60", 80, eps);
        sp.cluster_ips = vec!["10.96.0.60".parse().unwrap(), "fd00:10:96::60".parse().unwrap()];
        sp.node_port = Some(30090);
        Arc::new(sp)
    };
    let cur = make(&[0, 1, 2], &[0, 1, 2]);
    b.sync_all(std::slice::from_ref(&cur)).unwrap();

    for ip in ["10.96.0.60", "fd00:10:96::60"] {
        let r = lab.client_in(&lab.client, &["tcp", ip, "80", "60", "2"]);
        assert_eq!((r.failed(), r.hits.len()), (0, 3), "{ip}: {r:?}");
    }
    for ip in [NODE_IP, NODE_IP6] {
        let r = lab.client_in(&lab.client, &["tcp", ip, "30090", "60", "2"]);
        assert_eq!((r.failed(), r.hits.len()), (0, 3), "{ip}: {r:?}");
    }
    // From a pod, each family keeps the pod's own address of that family (or the bridge's, on hairpin).
    let r = lab.client_in(&lab.pods[1], &["tcp", "10.96.0.60", "80", "30", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");
    assert_eq!(r.peers, vec![BRIDGE_IP.to_string(), Lab::pod_ip_of(1)], "{r:?}");
    let r = lab.client_in(&lab.pods[1], &["tcp", "fd00:10:96::60", "80", "30", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");
    assert_eq!(r.peers, vec![BRIDGE_IP6.to_string(), Lab::pod_ip6_of(1)], "{r:?}");

    // The IPv6 endpoints go (kube-proxy runs a proxier per family): IPv6 rejects, IPv4 goes on.
    let next = make(&[0, 1, 2], &[]);
    b.apply(&[Change::Upsert {
        old: Some(cur),
        new: next.clone(),
    }])
    .unwrap();
    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::60", "80", "3", "2"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&3), "{r:?}");
    let r = lab.client_in(&lab.client, &["tcp", NODE_IP6, "30090", "3", "2"]);
    assert_eq!(r.errors.get("ConnectionRefusedError"), Some(&3), "{r:?}");
    let r = lab.client_in(&lab.client, &["tcp", "10.96.0.60", "80", "30", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");
    let r = lab.client_in(&lab.client, &["tcp", NODE_IP, "30090", "30", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 3), "{r:?}");

    // And back: a later endpoint only on pod 1 for IPv6.
    b.apply(&[Change::Upsert {
        old: Some(next),
        new: make(&[0, 1, 2], &[1]),
    }])
    .unwrap();
    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::60", "80", "20", "2"]);
    assert_eq!(r.hits.get("pod1"), Some(&20), "{r:?}");
}

/// ClientIP affinity, externalTrafficPolicy Local and loadBalancerSourceRanges over IPv6.
#[test]
fn affinity_local_policy_source_ranges_v6() {
    if !can_run("affinity_local_policy_source_ranges_v6") {
        return;
    }
    let addrs = scenarios::Addrs {
        cluster_ips: ["fd00:10:96::30", "fd00:10:96::31", "fd00:10:96::32"],
        lb_ip: "2001:db8::100",
        node: NODE_IP6,
        bridge: BRIDGE_IP6,
        client: CLIENT_IP6,
        client2: CLIENT_IP6_2,
        host_prefix: 128,
    };
    scenarios::affinity_local_policy_source_ranges(&Lab::new(3), &addrs, Lab::pod_eps6);
}

/// A UDP client's IPv6 flow follows an endpoint change (`conntrack -f ipv6` cleanup).
#[test]
fn udp_conntrack_cleanup_v6() {
    if !can_run("udp_conntrack_cleanup_v6") {
        return;
    }
    scenarios::udp_flow_follows_endpoint_change(&Lab::new(2), "fd00:10:96::53", Lab::pod_eps6);
}

/// IPv6 connections keep succeeding while the endpoint set changes every 100 ms (element changes over
/// netlink with IPv6 keys and data).
#[test]
fn update_under_load_v6() {
    if !can_run("update_under_load_v6") {
        return;
    }
    scenarios::connections_survive_updates(&Lab::new(3), "fd00:10:96::40", Lab::pod_eps6);
}

/// Agent restarts (a new backend, one full sync) under IPv6 load: no connection fails, and a client with
/// ClientIP affinity keeps its pod (the `ip6` affinity sets' entries are carried into the new table).
#[test]
fn restart_keeps_connections_and_affinity_v6() {
    if !can_run("restart_keeps_connections_and_affinity_v6") {
        return;
    }
    let lab = Lab::new(3);
    let busy = Arc::new(svc_port(
        "restart",
        Protocol::Tcp,
        "fd00:10:96::41",
        80,
        Lab::pod_eps6(&[0, 1, 2], &[]),
    ));
    let mut sticky = svc_port(
        "sticky",
        Protocol::Tcp,
        "fd00:10:96::42",
        80,
        Lab::pod_eps6(&[0, 1, 2], &[]),
    );
    sticky.affinity_timeout = Some(Duration::from_secs(600));
    let ports = [busy, Arc::new(sticky)];
    let mut b = lab.backend(lab_config());
    b.sync_all(&ports).unwrap();
    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::42", "80", "10", "2"]);
    assert_eq!((r.failed(), r.hits.len()), (0, 1), "{r:?}");
    let pod = r.hits.keys().next().unwrap().clone();
    let client = lab.spawn_client(&["load", "fd00:10:96::41", "80", "3"]);
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(400));
        drop(b);
        b = lab.backend(lab_config());
        b.sync_all(&ports).unwrap();
    }
    let r = client.finish();
    assert_eq!(r.failed(), 0, "{r:?}");
    assert!(r.ok() > 100, "{r:?}");
    assert_eq!(r.hits.len(), 3, "{r:?}");
    let r = lab.client_in(&lab.client, &["tcp", "fd00:10:96::42", "80", "10", "2"]);
    assert_eq!(
        r.hits.get(&pod),
        Some(&10),
        "affinity lost across restarts: {r:?}"
    );
}
