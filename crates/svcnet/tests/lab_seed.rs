//! The seed scenario across nodes (`examples/multinode/`, root only), as the README walks through it in
//! a `svcnet lab`: node 1 is tainted for Blue, Blue is pinned there, the scheduler spreads Red's three
//! pods over nodes 2 and 3, and Blue's calls to `http://red` (cluster DNS, then the Service) reach Red
//! pods on both other nodes; the seed's `backend` Services answer the outside client on the NodePort of
//! every node and on the LoadBalancer IP; and when a Red node dies, Blue's calls move to the Red pods
//! that are left.
//!
//! Without root (or without iproute2) the tests say they are skipped and pass.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::Value;
use svcnet_testsupport::eventually;
use svcnet_testsupport::multinode::MultiNodeLab;
use svcnet_testsupport::netns::{can_run, command_in};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(90);

fn skip() -> bool {
    if let Err(why) = can_run() {
        eprintln!("skipped: {why}");
        return true;
    }
    false
}

fn example(path: &str) -> String {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// From inside `netns`: GET `url`'s body ("" when there was no answer).
fn get_from(netns: &str, url: &str) -> String {
    let script = "import sys, urllib.request\ntry:\n    print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode().strip())\nexcept Exception:\n    pass\n";
    command_in(netns, "python3")
        .args(["-c", script, url])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Pod name → node name of the pods with `selector`, and whether each is ready.
fn placed(lab: &MultiNodeLab, selector: &str) -> BTreeMap<String, (String, bool)> {
    lab.get_json(&["pods", "-l", selector])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                (p["spec"]["nodeName"].as_str().unwrap_or("").to_string(), ready),
            )
        })
        .collect()
}

/// Blue's calls in the order of its log: the Red pod that answered (`red <pod> <ip>`), or `failed`
/// (`blue: <url> failed: <why>`).
fn answers(log: &str) -> Vec<String> {
    log.lines()
        .filter_map(|l| match l.strip_prefix("red ") {
            Some(rest) => rest.split_whitespace().next().map(String::from),
            None => l.starts_with("blue: ").then(|| "failed".to_string()),
        })
        .collect()
}

fn seed_across_nodes(proxy_mode: &str) {
    let lab = MultiNodeLab::up(
        SVCNET,
        3,
        &[
            "--proxy-mode",
            proxy_mode,
            "--control-plane-flag=--node-monitor-grace-period=4s",
            "--control-plane-flag=--node-monitor-period=500ms",
            "--agent-flag=--node-lease-duration-seconds=2",
        ],
    );
    lab.ok(&["taint", "node", "node1", "svcnet.io/dedicated=blue:NoSchedule"]);
    lab.apply(&example("multinode/red.yaml"));
    lab.apply(&example("multinode/blue.yaml"));
    lab.apply(&example("seed/backend.yaml"));

    // Red spreads over nodes 2 and 3; Blue runs on node 1.
    let mut red = BTreeMap::new();
    assert!(
        eventually(WAIT, || {
            red = placed(&lab, "app=red");
            red.len() == 3 && red.values().all(|(_, ready)| *ready)
        }),
        "Red never became ready: {red:?}"
    );
    let nodes: BTreeSet<&str> = red.values().map(|(n, _)| n.as_str()).collect();
    assert_eq!(nodes, BTreeSet::from(["node2", "node3"]), "{red:?}");
    let mut blue = BTreeMap::new();
    assert!(
        eventually(WAIT, || {
            blue = placed(&lab, "app=blue");
            blue.len() == 1 && blue.values().all(|(_, ready)| *ready)
        }),
        "Blue never became ready: {blue:?}"
    );
    let (blue_pod, (blue_node, _)) = blue.into_iter().next().unwrap();
    assert_eq!(blue_node, "node1");

    // Blue's log shows answers from Red pods on both other nodes.
    let all: BTreeSet<String> = red.keys().cloned().collect();
    let mut log = String::new();
    assert!(
        eventually(WAIT, || {
            log = lab.pod_logs(&blue_pod);
            all.iter().all(|p| answers(&log).contains(p))
        }),
        "Blue did not reach every Red pod: {log}"
    );

    // The backend Services: the NodePort answers the outside client on every node, the LoadBalancer IP
    // too (from the lab's pool on the underlay).
    let client = lab.netns_of("client");
    for node_ip in ["172.18.0.11", "172.18.0.12", "172.18.0.13"] {
        let url = format!("http://{node_ip}:32000/");
        let mut body = String::new();
        assert!(
            eventually(Duration::from_secs(30), || {
                body = get_from(&client, &url);
                body.starts_with("backend backend-app-")
            }),
            "{url}: {body:?}"
        );
    }
    let mut lb = Value::Null;
    assert!(
        eventually(Duration::from_secs(30), || {
            lb = lab.get_json(&["service", "backend-lb"])["status"]["loadBalancer"]["ingress"][0]["ip"]
                .clone();
            lb.is_string()
        }),
        "backend-lb got no address"
    );
    let url = format!("http://{}/", lb.as_str().unwrap());
    let mut body = String::new();
    assert!(
        eventually(Duration::from_secs(30), || {
            body = get_from(&client, &url);
            body.starts_with("backend backend-app-")
        }),
        "{url}: {body:?}"
    );

    // A Red node dies: Blue's calls move to the Red pods that are left, within the node controller's
    // grace period and a little more: no call fails any more, none goes to the dead node's pods.
    let dead: BTreeSet<String> = red
        .iter()
        .filter(|(_, (n, _))| n == "node3")
        .map(|(p, _)| p.clone())
        .collect();
    let out = lab.lab(&["stop-node", "node3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let before = answers(&lab.pod_logs(&blue_pod)).len();
    assert!(
        eventually(Duration::from_secs(20), || {
            let seen = answers(&lab.pod_logs(&blue_pod));
            // At least ten calls since, the last ten all answered by pods on the live node.
            seen.len() >= before + 10
                && seen[seen.len() - 10..]
                    .iter()
                    .all(|p| all.contains(p) && !dead.contains(p))
        }),
        "Blue still calls {dead:?}: {}",
        lab.pod_logs(&blue_pod)
    );
    assert!(lab.down());
}

#[test]
fn the_seed_scenario_across_nodes_userspace() {
    if skip() {
        return;
    }
    seed_across_nodes("userspace");
}

#[test]
fn the_seed_scenario_across_nodes_nftables() {
    if skip() {
        return;
    }
    seed_across_nodes("nftables");
}
