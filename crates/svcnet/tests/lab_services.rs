//! Services across nodes in a `svcnet lab` (root only), on both backends: a pod on node1 reaches a
//! ClusterIP whose endpoints are pods on node2 and node3, and so do the nodes themselves; the endpoint sees
//! the calling pod's IP on both (nftables DNATs only; the userspace proxy connects transparently). The
//! Service's NodePort answers the outside client on every node's address, from endpoints on any node, with
//! the client's address replaced (SNAT, externalTrafficPolicy Cluster). Under externalTrafficPolicy Local
//! only the node with a ready endpoint answers the NodePort (on both backends the endpoint sees the
//! client's own address), and the health check node port answers 200 there and 503 on the others, with kube-proxy's
//! JSON body. Under internalTrafficPolicy Local a pod reaches only its own node's endpoint, and none from a
//! node without one. ClusterIP and NodePort run over both overlays (host-gw and vxlan). With
//! `trafficDistribution: PreferClose` the EndpointSlice controller hints each endpoint for its zone and
//! pods prefer their own zone's endpoints; with `topology-mode: Auto` it hints them by each zone's share
//! of CPU, or not at all when a safeguard says so.
//!
//! Without root (or without iproute2) the tests say they are skipped and pass.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use svcnet_testsupport::eventually;
use svcnet_testsupport::multinode::{CALLER, ECHO_SERVER, MultiNodeLab, ask_from, python_pod};
use svcnet_testsupport::netns::{can_run, command_in};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(60);

fn skip() -> bool {
    if let Err(why) = can_run() {
        eprintln!("skipped: {why}");
        return true;
    }
    false
}

const SERVICE: &str = r#"{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "red", "namespace": "default"},
 "spec": {"type": "NodePort", "selector": {"app": "red"}, "ports": [{"port": 80, "targetPort": 8080}]}}"#;

/// The pods that answered in `lines` for `target`, and the peers they saw.
fn answers(log: &str, target: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let prefix = format!("answer {target} ");
    let (mut pods, mut peers) = (BTreeSet::new(), BTreeSet::new());
    for l in log.lines() {
        if let Some(rest) = l.strip_prefix(&prefix) {
            let mut w = rest.split_whitespace();
            if let (Some(pod), Some(peer)) = (w.next(), w.next()) {
                pods.insert(pod.to_string());
                peers.insert(peer.to_string());
            }
        }
    }
    (pods, peers)
}

/// From inside `netns`, connects to `ip:port` until every one of `want` answered (at most `timeout`);
/// the pods seen.
fn reached_from(netns: &str, ip: &str, port: u16, want: &[&str], timeout: Duration) -> BTreeSet<String> {
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    while start.elapsed() < timeout && !want.iter().all(|w| seen.contains(*w)) {
        let answer = ask_from(netns, ip, port);
        if let Some(pod) = answer.split_whitespace().next().filter(|p| p.starts_with("red-")) {
            seen.insert(pod.to_string());
        }
    }
    seen
}

/// An echo pod `red-N` labelled `app=red` on each `nodeN` of `nodes`.
fn red_pods_on(lab: &MultiNodeLab, nodes: &[&str]) {
    for node in nodes {
        let name = format!("red-{}", &node[4..]);
        lab.apply(&python_pod(
            &name,
            node,
            ECHO_SERVER,
            &[&name, "8080"],
            Some(8080),
            &[("app", "red")],
        ));
    }
}

fn cluster_ip_across_nodes(proxy_mode: &str, overlay: &str) {
    let lab = MultiNodeLab::up(SVCNET, 3, &["--proxy-mode", proxy_mode, "--overlay", overlay]);
    red_pods_on(&lab, &["node2", "node3"]);
    lab.apply(SERVICE);
    for name in ["red-2", "red-3"] {
        lab.wait_pod_ready(name, WAIT);
    }
    let svc = lab.get_json(&["service", "red"]);
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let target = format!("{cluster_ip}:80");
    lab.apply(&python_pod("blue", "node1", CALLER, &[&target], None, &[]));
    let blue = lab.wait_pod_ready("blue", WAIT);
    let blue_ip = blue["status"]["podIP"].as_str().unwrap().to_string();

    // Pod on node1 → ClusterIP → pods on node2 and node3.
    let both: BTreeSet<String> = ["red-2".to_string(), "red-3".to_string()].into();
    assert!(
        eventually(WAIT, || answers(&lab.pod_logs("blue"), &target).0 == both),
        "blue did not reach both endpoints through {target}: {}\nnode1: {}",
        lab.pod_logs("blue"),
        lab.log("node1")
    );
    let (_, peers) = answers(&lab.pod_logs("blue"), &target);
    // Both data planes hand the calling pod's own address to the endpoint (the userspace proxy connects
    // from it transparently), across nodes and over either overlay.
    assert_eq!(peers, BTreeSet::from([blue_ip]), "{}", lab.pod_logs("blue"));

    // Every node reaches the ClusterIP too, endpoints elsewhere included (node2's own pod and node3's).
    for node in ["node1", "node2", "node3"] {
        let netns = lab.netns_of(node);
        let seen = reached_from(
            &netns,
            &cluster_ip,
            80,
            &["red-2", "red-3"],
            Duration::from_secs(20),
        );
        assert_eq!(seen, both, "{node} through {target}\n{}", lab.log(node));
    }

    // The NodePort answers from the client (outside the cluster) on every node's address and forwards to
    // endpoints on other nodes; under externalTrafficPolicy Cluster the endpoint never sees the client
    // (replies must return through the node the client called).
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
    let client = lab.netns_of("client");
    for node_ip in ["172.18.0.11", "172.18.0.12", "172.18.0.13"] {
        let start = Instant::now();
        let mut seen = BTreeSet::new();
        let mut last = String::new();
        while start.elapsed() < Duration::from_secs(20) && seen != both {
            last = ask_from(&client, node_ip, node_port);
            let mut w = last.split_whitespace();
            if let (Some(pod), Some(peer)) = (w.next(), w.next())
                && pod.starts_with("red-")
            {
                assert_ne!(peer, "172.18.0.2", "{node_ip}:{node_port} did not SNAT");
                seen.insert(pod.to_string());
            }
        }
        assert_eq!(seen, both, "{node_ip}:{node_port}: last answer {last:?}");
    }
    assert!(lab.down());
}

/// From inside `netns`: GET `url`, its status and body (status 0 when there was no answer).
fn http_from(netns: &str, url: &str) -> (u16, String) {
    let script = "import sys, urllib.request, urllib.error\ntry:\n    r = urllib.request.urlopen(sys.argv[1], timeout=2)\n    print(r.status, r.read().decode())\nexcept urllib.error.HTTPError as e:\n    print(e.code, e.read().decode())\nexcept OSError:\n    print(0)\n";
    let out = command_in(netns, "python3")
        .args(["-c", script, url])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (code, body) = text.split_once(' ').unwrap_or((&text, ""));
    (code.parse().unwrap_or(0), body.to_string())
}

/// `externalTrafficPolicy: Local` across nodes: only the node with a ready local endpoint answers on the
/// NodePort, and the health check node port says so on every node (200 there, 503 elsewhere, with
/// kube-proxy's JSON body). With nftables the endpoint sees the client's own address.
fn external_traffic_policy_local(proxy_mode: &str) {
    let lab = MultiNodeLab::up(SVCNET, 3, &["--proxy-mode", proxy_mode]);
    lab.apply(&python_pod(
        "red-2",
        "node2",
        ECHO_SERVER,
        &["red-2", "8080"],
        Some(8080),
        &[("app", "red")],
    ));
    lab.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "red", "namespace": "default"},
 "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "red"},
  "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    );
    lab.wait_pod_ready("red-2", WAIT);
    let svc = lab.get_json(&["service", "red"]);
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
    let health = svc["spec"]["healthCheckNodePort"]
        .as_u64()
        .expect("healthCheckNodePort");
    let client = lab.netns_of("client");

    let mut last = String::new();
    assert!(
        eventually(WAIT, || {
            last = ask_from(&client, "172.18.0.12", node_port);
            last.starts_with("red-2 ")
        }),
        "node2:{node_port} (the endpoint's node) did not answer: {last:?}\n{}",
        lab.log("node2")
    );
    // Both backends keep the outside client's address (nftables by not NATing the source, the
    // userspace proxy by a transparent connect from it).
    assert_eq!(
        last, "red-2 172.18.0.2",
        "the client's address did not reach the pod"
    );
    for node_ip in ["172.18.0.11", "172.18.0.13"] {
        let answer = ask_from(&client, node_ip, node_port);
        assert!(
            answer.starts_with("error"),
            "{node_ip} has no local endpoint but answered: {answer}"
        );
    }
    let body = |local: u64| serde_json::json!({"service": {"namespace": "default", "name": "red"}, "localEndpoints": local});
    for (node_ip, code, local) in [
        ("172.18.0.11", 503, 0),
        ("172.18.0.12", 200, 1),
        ("172.18.0.13", 503, 0),
    ] {
        let url = format!("http://{node_ip}:{health}/");
        let mut got = (0, String::new());
        let ok = eventually(Duration::from_secs(10), || {
            got = http_from(&client, &url);
            let json: serde_json::Value = serde_json::from_str(&got.1).unwrap_or_default();
            got.0 == code && json["service"] == body(local)["service"] && json["localEndpoints"] == local
        });
        assert!(ok, "{url}: {got:?}, want {code} with localEndpoints {local}");
    }
    assert!(lab.down());
}

#[test]
fn external_traffic_policy_local_across_nodes_nftables() {
    if skip() {
        return;
    }
    external_traffic_policy_local("nftables");
}

#[test]
fn external_traffic_policy_local_across_nodes_userspace() {
    if skip() {
        return;
    }
    external_traffic_policy_local("userspace");
}

/// `internalTrafficPolicy: Local` across nodes: a pod reaches the ClusterIP only through an endpoint on
/// its own node; a pod on a node without one gets no answer (never one from another node).
fn internal_traffic_policy_local(proxy_mode: &str) {
    let lab = MultiNodeLab::up(SVCNET, 3, &["--proxy-mode", proxy_mode]);
    red_pods_on(&lab, &["node2", "node3"]);
    lab.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "red", "namespace": "default"},
 "spec": {"internalTrafficPolicy": "Local", "selector": {"app": "red"},
  "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    );
    for name in ["red-2", "red-3"] {
        lab.wait_pod_ready(name, WAIT);
    }
    let cluster_ip = lab.get_json(&["service", "red"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let target = format!("{cluster_ip}:80");
    for node in ["node1", "node2"] {
        let name = format!("blue-{}", &node[4..]);
        lab.apply(&python_pod(&name, node, CALLER, &[&target], None, &[]));
    }
    // blue-2 gets red-2, its node's endpoint, and only it.
    assert!(
        eventually(WAIT, || answers(&lab.pod_logs("blue-2"), &target).0.len() == 1
            && lab
                .pod_logs("blue-2")
                .lines()
                .filter(|l| l.starts_with("answer"))
                .count()
                >= 5),
        "blue-2: {}",
        lab.pod_logs("blue-2")
    );
    let log2 = lab.pod_logs("blue-2");
    assert_eq!(
        answers(&log2, &target).0,
        BTreeSet::from(["red-2".to_string()]),
        "{log2}"
    );
    // blue-1's node has no endpoint: its calls fail, none reaches node2 or node3.
    assert!(
        eventually(WAIT, || lab
            .pod_logs("blue-1")
            .lines()
            .filter(|l| l.starts_with("error"))
            .count()
            >= 3),
        "blue-1: {}",
        lab.pod_logs("blue-1")
    );
    let log1 = lab.pod_logs("blue-1");
    assert!(answers(&log1, &target).0.is_empty(), "{log1}");
    assert!(lab.down());
}

#[test]
fn internal_traffic_policy_local_across_nodes_nftables() {
    if skip() {
        return;
    }
    internal_traffic_policy_local("nftables");
}

#[test]
fn internal_traffic_policy_local_across_nodes_userspace() {
    if skip() {
        return;
    }
    internal_traffic_policy_local("userspace");
}

/// `trafficDistribution: PreferClose` across zones: the EndpointSlice controller hints each endpoint for
/// its node's zone, and a pod in a zone with an endpoint reaches only that one, while a pod in a zone
/// without any reaches them all (kube-proxy's fallback).
fn prefer_close(proxy_mode: &str) {
    let lab = MultiNodeLab::up(SVCNET, 3, &["--proxy-mode", proxy_mode]);
    red_pods_on(&lab, &["node2", "node3"]);
    lab.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "red", "namespace": "default"},
 "spec": {"trafficDistribution": "PreferClose", "selector": {"app": "red"},
  "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    );
    for name in ["red-2", "red-3"] {
        lab.wait_pod_ready(name, WAIT);
    }
    // Each endpoint is hinted for its own zone (node2 is zone-b, node3 zone-c).
    let want = zone_hints(&[("zone-b", "zone-b"), ("zone-c", "zone-c")]);
    let mut hints = BTreeSet::new();
    let ok = eventually(WAIT, || {
        hints = slice_hints(&lab, "red");
        hints == want
    });
    assert!(ok, "{hints:?}");
    let cluster_ip = lab.get_json(&["service", "red"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let target = format!("{cluster_ip}:80");
    for node in ["node1", "node2"] {
        let name = format!("blue-{}", &node[4..]);
        lab.apply(&python_pod(&name, node, CALLER, &[&target], None, &[]));
    }
    // blue-1's zone has no endpoint: it reaches both; blue-2 reaches only zone-b's.
    let both: BTreeSet<String> = ["red-2".to_string(), "red-3".to_string()].into();
    assert!(
        eventually(WAIT, || answers(&lab.pod_logs("blue-1"), &target).0 == both),
        "blue-1: {}",
        lab.pod_logs("blue-1")
    );
    assert!(
        eventually(WAIT, || lab
            .pod_logs("blue-2")
            .lines()
            .filter(|l| l.starts_with("answer"))
            .count()
            >= 10),
        "blue-2: {}",
        lab.pod_logs("blue-2")
    );
    let log2 = lab.pod_logs("blue-2");
    assert_eq!(
        answers(&log2, &target).0,
        BTreeSet::from(["red-2".to_string()]),
        "{log2}"
    );
    assert!(lab.down());
}

/// "zone hints" of each endpoint of the Service's slices, as [`zone_hints`] spells them.
fn slice_hints(lab: &MultiNodeLab, service: &str) -> BTreeSet<String> {
    let slices = lab.get_json(&[
        "endpointslices",
        "-l",
        &format!("kubernetes.io/service-name={service}"),
    ]);
    slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .map(|e| format!("{} {}", e["zone"], e["hints"]["forZones"]))
        .collect()
}

/// Endpoints by (zone, hinted zone).
fn zone_hints(pairs: &[(&str, &str)]) -> BTreeSet<String> {
    pairs
        .iter()
        .map(|(zone, hint)| format!(r#""{zone}" [{{"name":"{hint}"}}]"#))
        .collect()
}

/// The reason and message of each Event about the Service.
fn service_events(lab: &MultiNodeLab, service: &str) -> Vec<String> {
    let events = lab.get_json(&[
        "events",
        "--field-selector",
        &format!("involvedObject.name={service}"),
    ]);
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{} {}",
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// `service.kubernetes.io/topology-mode: Auto` (kube's e2e "Topology Hints"): with one endpoint per zone
/// and equal CPU in each, the EndpointSlice controller hints every endpoint for its own zone and records
/// that hints are enabled, and a pod reaches only its own zone's endpoint. With fewer endpoints than
/// zones the safeguard takes the hints away again, with kube's Event, and traffic goes everywhere.
#[test]
fn topology_mode_auto_across_zones_nftables() {
    if skip() {
        return;
    }
    let lab = MultiNodeLab::up(SVCNET, 3, &["--proxy-mode", "nftables"]);
    red_pods_on(&lab, &["node1", "node2", "node3"]);
    lab.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "red", "namespace": "default",
  "annotations": {"service.kubernetes.io/topology-mode": "Auto"}},
 "spec": {"selector": {"app": "red"}, "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    );
    for name in ["red-1", "red-2", "red-3"] {
        lab.wait_pod_ready(name, WAIT);
    }
    let want = zone_hints(&[("zone-a", "zone-a"), ("zone-b", "zone-b"), ("zone-c", "zone-c")]);
    let mut hints = BTreeSet::new();
    assert!(
        eventually(WAIT, || {
            hints = slice_hints(&lab, "red");
            hints == want
        }),
        "{hints:?}"
    );
    let enabled = "TopologyAwareHintsEnabled Topology Aware Hints has been enabled, addressType: IPv4";
    assert!(
        eventually(WAIT, || service_events(&lab, "red").iter().any(|e| e == enabled)),
        "{:?}",
        service_events(&lab, "red")
    );

    let cluster_ip = lab.get_json(&["service", "red"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let target = format!("{cluster_ip}:80");
    lab.apply(&python_pod("blue-2", "node2", CALLER, &[&target], None, &[]));
    let count = |log: &str| log.lines().filter(|l| l.starts_with("answer")).count();
    assert!(
        eventually(WAIT, || count(&lab.pod_logs("blue-2")) >= 10),
        "blue-2: {}",
        lab.pod_logs("blue-2")
    );
    let log = lab.pod_logs("blue-2");
    assert_eq!(
        answers(&log, &target).0,
        BTreeSet::from(["red-2".to_string()]),
        "{log}"
    );

    // Two endpoints for three zones: no hints, kube's Warning, and blue-2 reaches both that are left.
    lab.ok(&["delete", "pod", "red-3", "--wait=false"]);
    assert!(
        eventually(WAIT, || slice_hints(&lab, "red")
            == BTreeSet::from([
                r#""zone-a" null"#.to_string(),
                r#""zone-b" null"#.to_string()
            ])),
        "{:?}",
        slice_hints(&lab, "red")
    );
    let disabled = "TopologyAwareHintsDisabled Insufficient number of endpoints (2 endpoints, 3 zones), addressType: IPv4";
    assert!(
        eventually(WAIT, || service_events(&lab, "red").iter().any(|e| e == disabled)),
        "{:?}",
        service_events(&lab, "red")
    );
    let both: BTreeSet<String> = ["red-1".to_string(), "red-2".to_string()].into();
    let seen_before = log.lines().count();
    assert!(
        eventually(WAIT, || {
            let log = lab.pod_logs("blue-2");
            let later: String = log.lines().skip(seen_before).map(|l| format!("{l}\n")).collect();
            answers(&later, &target).0 == both
        }),
        "blue-2: {}",
        lab.pod_logs("blue-2")
    );
    assert!(lab.down());
}

#[test]
fn prefer_close_across_zones_nftables() {
    if skip() {
        return;
    }
    prefer_close("nftables");
}

#[test]
fn prefer_close_across_zones_userspace() {
    if skip() {
        return;
    }
    prefer_close("userspace");
}

#[test]
fn cluster_ip_and_node_port_across_nodes_userspace() {
    if skip() {
        return;
    }
    cluster_ip_across_nodes("userspace", "host-gw");
}

#[test]
fn cluster_ip_and_node_port_across_nodes_nftables() {
    if skip() {
        return;
    }
    cluster_ip_across_nodes("nftables", "host-gw");
}

#[test]
fn cluster_ip_and_node_port_across_nodes_userspace_vxlan() {
    if skip() {
        return;
    }
    cluster_ip_across_nodes("userspace", "vxlan");
}

#[test]
fn cluster_ip_and_node_port_across_nodes_nftables_vxlan() {
    if skip() {
        return;
    }
    cluster_ip_across_nodes("nftables", "vxlan");
}
