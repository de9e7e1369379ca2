//! Node failure in a `svcnet lab` (root only), as Kubernetes handles it, with short settings (Leases of
//! 2 s, a 4 s grace period checked every 250 ms): `lab stop-node` makes the node `Ready=Unknown` with
//! the `node.kubernetes.io/unreachable` taints, its pods `Ready=False` and their endpoints not ready;
//! traffic from outside (NodePort) and from another node (ClusterIP) stops reaching it within 5 s; a pod
//! tolerating the taint for 2 s is evicted and replaced on another node, while a pod with admission's
//! default 300 s tolerations stays; the scheduler keeps new pods off the tainted node; and when the
//! node is back its taints go. An agent restart (graceful or a crash), by contrast, leaves the pods and
//! their established connections across nodes (direct and through a ClusterIP) untouched, and the new
//! agent works with the certificate the node joined with, without joining again. Two nodes of
//! one zone dying together get their `NoExecute` taints at the zone's eviction rate.
//!
//! Without root (or without iproute2) the tests say they are skipped and pass.

use std::time::{Duration, Instant};

use serde_json::Value;
use svcnet_testsupport::eventually;
use svcnet_testsupport::multinode::{ECHO_SERVER, Load, MultiNodeLab, python_pod, unix_now};
use svcnet_testsupport::netns::can_run;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(60);

/// How long after a node dies traffic may still go to it (the issue's goal with these settings).
const LEAVE_WITHIN: f64 = 5.0;

/// The short settings: Leases of 2 s (renewed every 500 ms), a grace period of 4 s checked every 250 ms
/// (a node dies up to 500 ms after its last renewal, so its Lease lapses 3.5 to 4 s after: checked every
/// 250 ms, traffic leaves it about 4.3 s after `stop-node` in this test, inside the 5 s goal).
const FAST_FAILURE: &[&str] = &[
    "--control-plane-flag=--node-monitor-grace-period=4s",
    "--control-plane-flag=--node-monitor-period=250ms",
    "--agent-flag=--node-lease-duration-seconds=2",
];

fn skip() -> bool {
    if let Err(why) = can_run() {
        eprintln!("skipped: {why}");
        return true;
    }
    false
}

/// Red: three echo servers that tolerate an unreachable node for 2 s only.
fn red_deployment() -> String {
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "red", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "red"}},
            "template": {
                "metadata": {"labels": {"app": "red"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                        "effect": "NoExecute", "tolerationSeconds": 2}],
                    "containers": [{
                        "name": "main", "image": "python:3",
                        "command": ["python3", "-c", ECHO_SERVER, "$(POD_NAME)", "8080"],
                        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
                    }],
                },
            },
        },
    })
    .to_string()
}

const SERVICE: &str = r#"{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "red", "namespace": "default"},
 "spec": {"type": "NodePort", "selector": {"app": "red"}, "ports": [{"port": 80, "targetPort": 8080}]}}"#;

fn pods(lab: &MultiNodeLab, selector: &str) -> Vec<Value> {
    lab.get_json(&["pods", "-l", selector])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn condition<'a>(obj: &'a Value, kind: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
}

fn is_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c["status"] == "True")
}

/// The node's taints as `key:effect`.
fn taints(lab: &MultiNodeLab, node: &str) -> Vec<String> {
    lab.get_json(&["node", node])["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            format!(
                "{}:{}",
                t["key"].as_str().unwrap_or(""),
                t["effect"].as_str().unwrap_or("")
            )
        })
        .collect()
}

/// Failures of requests that started more than [`LEAVE_WITHIN`] after `stopped`.
fn late_failures(failures: &[(f64, String)], stopped: f64) -> Vec<(f64, String)> {
    failures
        .iter()
        .filter(|(t, _)| *t > stopped + LEAVE_WITHIN)
        .map(|(t, e)| (t - stopped, e.clone()))
        .collect()
}

fn node_failure(proxy_mode: &str) {
    let mut flags = vec!["--proxy-mode", proxy_mode];
    flags.extend_from_slice(FAST_FAILURE);
    let lab = MultiNodeLab::up(SVCNET, 3, &flags);
    lab.apply(&red_deployment());
    lab.apply(SERVICE);
    assert!(
        eventually(WAIT, || {
            let p = pods(&lab, "app=red");
            p.len() == 3 && p.iter().all(is_ready)
        }),
        "red never became ready: {:?}",
        pods(&lab, "app=red")
    );
    // A pod with admission's default tolerations on the node that will die (after Red, so that the
    // scheduler spreads Red one per node).
    lab.apply(&python_pod(
        "keeper",
        "node3",
        ECHO_SERVER,
        &["keeper", "8081"],
        Some(8081),
        &[],
    ));
    let keeper = lab.wait_pod_ready("keeper", WAIT);
    // DefaultTolerationSeconds: kube's two tolerations, 300 s each; Red's own for unreachable stays.
    assert_eq!(
        keeper["spec"]["tolerations"],
        serde_json::json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ])
    );
    let red = pods(&lab, "app=red");
    let tolerations = &red[0]["spec"]["tolerations"];
    assert_eq!(tolerations.as_array().map(Vec::len), Some(2), "{tolerations}");
    assert_eq!(tolerations[0]["tolerationSeconds"], 2);
    assert_eq!(tolerations[1]["key"], "node.kubernetes.io/not-ready");
    let on = |node: &str| -> Vec<String> {
        red.iter()
            .filter(|p| p["spec"]["nodeName"] == node)
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect()
    };
    let doomed = on("node3");
    assert_eq!(
        doomed.len(),
        1,
        "one Red pod per node: {red:?}\n{}\n{}",
        lab.ok(&["get", "events", "-A"]),
        lab.log("control-plane")
    );
    let doomed = doomed[0].clone();
    assert!(taints(&lab, "node3").is_empty(), "{:?}", taints(&lab, "node3"));

    let svc = lab.get_json(&["service", "red"]);
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16;
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    // Traffic while the node dies: the outside client to node1's NodePort, and node2 to the ClusterIP.
    let (client, ok) = Load::start(&lab.netns_of("client"), "172.18.0.11", node_port, 14.0, 50, 1.0);
    assert!(ok, "the client never reached the NodePort");
    let (inside, ok) = Load::start(&lab.netns_of("node2"), &cluster_ip, 80, 14.0, 50, 1.0);
    assert!(ok, "node2 never reached the ClusterIP");
    std::thread::sleep(Duration::from_secs(2));

    let stopped = unix_now();
    let clock = Instant::now();
    let out = lab.lab(&["stop-node", "node3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // From here on nothing can reach node3 (while `stop-node` ran, requests still could).
    let dead = unix_now();

    // NotReady within grace + period (and some slack for a busy machine), with kube's reason and taints.
    assert!(
        eventually(Duration::from_secs(10), || {
            condition(&lab.get_json(&["node", "node3"]), "Ready").is_some_and(|c| c["status"] == "Unknown")
        }),
        "node3 never went NotReady\n{}",
        lab.log("control-plane")
    );
    let went_unknown = clock.elapsed();
    assert!(
        went_unknown <= Duration::from_secs(7),
        "NotReady after {went_unknown:?}"
    );
    let node = lab.get_json(&["node", "node3"]);
    let ready = condition(&node, "Ready").unwrap();
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    assert!(
        eventually(Duration::from_secs(5), || {
            let t = taints(&lab, "node3");
            t.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string())
                && t.contains(&"node.kubernetes.io/unreachable:NoSchedule".to_string())
        }),
        "taints: {:?}",
        taints(&lab, "node3")
    );
    assert!(lab.ok(&["get", "nodes"]).contains("NotReady"));
    let events = lab.ok(&["get", "events", "--field-selector", "involvedObject.name=node3"]);
    assert!(
        events.contains("NodeNotReady") && events.contains("Node node3 status is now: NodeNotReady"),
        "{events}"
    );

    // The keeper (300 s) stays, not ready; its endpoints are not ready.
    assert!(
        eventually(Duration::from_secs(10), || {
            let k = lab.get_json(&["pod", "keeper"]);
            condition(&k, "Ready").is_some_and(|c| c["status"] == "False")
                && k["metadata"]["deletionTimestamp"].is_null()
        }),
        "{}",
        lab.get_json(&["pod", "keeper"])
    );
    // Red's pod there tolerates 2 s: it is evicted (it stays Terminating, its node being unreachable)
    // with kube's DisruptionTarget condition, and a replacement runs on another node.
    assert!(
        eventually(Duration::from_secs(15), || {
            let p = lab.get_json(&["pod", &doomed]);
            !p["metadata"]["deletionTimestamp"].is_null()
        }),
        "{doomed} was not evicted: {}\n{}",
        lab.get_json(&["pod", &doomed]),
        lab.log("control-plane")
    );
    let evicted = lab.get_json(&["pod", &doomed]);
    let why = condition(&evicted, "DisruptionTarget").expect("DisruptionTarget condition");
    assert_eq!(why["reason"], "DeletionByTaintManager", "{why}");
    let events = lab.ok(&[
        "get",
        "events",
        "--field-selector",
        &format!("involvedObject.name={doomed}"),
    ]);
    assert!(events.contains("TaintManagerEviction"), "{events}");
    assert!(
        eventually(WAIT, || {
            let p = pods(&lab, "app=red");
            let live: Vec<&Value> = p
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .collect();
            live.len() == 3
                && live
                    .iter()
                    .all(|p| is_ready(p) && p["spec"]["nodeName"] != "node3")
        }),
        "no replacement on the other nodes: {:?}",
        pods(&lab, "app=red")
    );
    // The terminating pod's endpoint is not ready (nor serving) in the EndpointSlice.
    let slices = lab.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=red"]);
    let endpoints: Vec<&Value> = slices["items"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .collect();
    for e in endpoints.iter().filter(|e| e["nodeName"] == "node3") {
        assert_eq!(e["conditions"]["ready"], false, "{e}");
    }
    assert_eq!(
        endpoints
            .iter()
            .filter(|e| e["conditions"]["ready"] == true)
            .count(),
        3,
        "{slices}"
    );

    // Traffic left the dead node within the window: nothing started later failed, and no answer came
    // from it (it cannot answer: its link is down).
    let outside = client.finish();
    let within = inside.finish();
    for (name, r) in [("client → NodePort", &outside), ("node2 → ClusterIP", &within)] {
        let last_failure = r
            .failures
            .iter()
            .map(|(t, _)| t - stopped)
            .fold(f64::MIN, f64::max);
        eprintln!(
            "{name}: {} requests, {} failed ({} after {LEAVE_WITHIN} s; the last started {last_failure:.2} s after stop-node), answers {:?}",
            r.started,
            r.failures.len(),
            late_failures(&r.failures, stopped).len(),
            r.hits
        );
        assert!(
            late_failures(&r.failures, stopped).is_empty(),
            "{name}: requests failing after {LEAVE_WITHIN} s: {:?}",
            late_failures(&r.failures, stopped)
        );
        assert!(r.last.get(&doomed).is_none_or(|t| *t < dead), "{name}: {r:?}");
        assert!(r.hits.values().sum::<u64>() > r.started / 2, "{name}: {r:?}");
    }

    // The scheduler keeps new pods off the tainted node: one pinned there stays Pending, with kube's
    // reason.
    lab.apply(&python_pod(
        "pinned",
        "node3",
        ECHO_SERVER,
        &["pinned", "8082"],
        None,
        &[],
    ));
    assert!(
        eventually(Duration::from_secs(10), || {
            condition(&lab.get_json(&["pod", "pinned"]), "PodScheduled").is_some_and(|c| {
                c["status"] == "False"
                    && c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("untolerated taint {node.kubernetes.io/unreachable: }"))
            })
        }),
        "{}",
        lab.get_json(&["pod", "pinned"])
    );

    // The node comes back: its taints go, the evicted pod finishes leaving, and the pinned pod runs.
    let out = lab.lab(&["start-node", "node3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        eventually(Duration::from_secs(10), || taints(&lab, "node3").is_empty()),
        "taints left: {:?}",
        taints(&lab, "node3")
    );
    assert!(
        eventually(WAIT, || lab.kubectl(&["get", "pod", &doomed], None).status.code()
            == Some(1)),
        "{doomed} is still there"
    );
    lab.wait_pod_ready("pinned", WAIT);
    lab.wait_pod_ready("keeper", WAIT);
    assert!(lab.down());
}

#[test]
fn a_dead_node_is_tainted_its_pods_evicted_and_traffic_leaves_it_userspace() {
    if skip() {
        return;
    }
    node_failure("userspace");
}

#[test]
fn a_dead_node_is_tainted_its_pods_evicted_and_traffic_leaves_it_nftables() {
    if skip() {
        return;
    }
    node_failure("nftables");
}

/// The issue's chaos run: 1,000 new connections a second from the client to node1's NodePort for 30 s,
/// while node3 (one of Red's three nodes) dies 5 s in. Failed requests are counted and reported, by the
/// second after `stop-node` they started in. The userspace proxy retries a connect that fails on another
/// endpoint, so nothing may fail but the few requests in flight to the dead node as it died (asserted).
/// With nftables a connection DNATed to the dead pod is lost until the node controller's window closes;
/// the load generator takes a core of this machine's two, which stretches that window, so only failures
/// 10 s or more after stop-node are ruled out (a stray few allowed). Bounded: 30,000 requests, each given 2 s.
fn chaos(proxy_mode: &str) {
    let mut flags = vec!["--proxy-mode", proxy_mode];
    flags.extend_from_slice(FAST_FAILURE);
    let lab = MultiNodeLab::up(SVCNET, 3, &flags);
    lab.apply(&red_deployment());
    lab.apply(SERVICE);
    assert!(
        eventually(WAIT, || {
            let p = pods(&lab, "app=red");
            p.len() == 3 && p.iter().all(is_ready)
        }),
        "red never became ready: {:?}",
        pods(&lab, "app=red")
    );
    let node_port = lab.get_json(&["service", "red"])["spec"]["ports"][0]["nodePort"]
        .as_u64()
        .unwrap() as u16;
    let (load, ok) = Load::start(&lab.netns_of("client"), "172.18.0.11", node_port, 30.0, 1000, 2.0);
    assert!(ok, "the client never reached the NodePort");
    let began = unix_now();
    std::thread::sleep(Duration::from_secs(5));
    let stopped = unix_now();
    let out = lab.lab(&["stop-node", "node3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r = load.finish();
    let took = unix_now() - began;
    let answered: u64 = r.hits.values().sum();
    let mut kinds = std::collections::BTreeMap::<&str, u64>::new();
    // Failures by the whole second after stop-node they started in (-1: before it).
    let mut by_second = std::collections::BTreeMap::<i64, u64>::new();
    for (t, k) in &r.failures {
        *kinds.entry(k.as_str()).or_default() += 1;
        *by_second
            .entry((t - stopped).floor().max(-1.0) as i64)
            .or_default() += 1;
    }
    eprintln!(
        "chaos ({proxy_mode}): {} requests in {took:.1} s ({:.0}/s), {answered} answered, {} failed {kinds:?}; failures by second after stop-node: {by_second:?}",
        r.started,
        r.started as f64 / took,
        r.failures.len(),
    );
    if proxy_mode == "nftables" {
        // What is left of connections to the dead pod in node1's connection tracking: a new connection
        // whose (reused) client port matches one of these follows it to the dead pod.
        let dead = lab.exec("node1", &["conntrack", "-L", "-p", "tcp", "--state", "SYN_SENT"]);
        eprintln!(
            "chaos (nftables): {} unanswered TCP conntrack entries on node1 after the run",
            String::from_utf8_lossy(&dead.stdout).lines().count()
        );
    }
    assert_eq!(r.started, 30_000);
    assert_eq!(answered + r.failures.len() as u64, r.started);
    if proxy_mode == "userspace" {
        // A connect that fails is retried on another endpoint, so nothing fails but a request already
        // in flight to the dead node at the moment it died (a reset): started in the second before
        // stop-node or the one after it. How many depends on the latency on this loaded machine (a third
        // of ~1,000 requests a second go to the dead node); nothing may fail that started later.
        let in_flight: u64 = by_second.iter().filter(|(s, _)| **s <= 0).map(|(_, n)| n).sum();
        let other: u64 = by_second.iter().filter(|(s, _)| **s > 0).map(|(_, n)| n).sum();
        assert!(
            other == 0 && in_flight <= 50,
            "with connect retry nothing but requests in flight as the node died may fail: {kinds:?}, {by_second:?}"
        );
    } else {
        // Once the dead node's endpoints stop being used, their never-answered conntrack entries go
        // with them: no new connection may follow one to the dead pod any more. (Before that cleanup,
        // ~11 % of new connections kept failing until the end of the run.) 10 s leaves room for the
        // node controller's window on a loaded machine.
        // A stray timeout of a 2 s request on two loaded cores is not that (about 20,000 requests come
        // after those 10 s; the stale entries failed ~2,000 of them).
        let late: u64 = by_second.range(10..).map(|(_, n)| n).sum();
        assert!(late <= 20, "failures 10 s or more after stop-node: {by_second:?}");
    }
    assert!(lab.down());
}

#[test]
fn chaos_a_thousand_requests_a_second_while_a_node_dies_userspace() {
    if skip() {
        return;
    }
    chaos("userspace");
}

#[test]
fn chaos_a_thousand_requests_a_second_while_a_node_dies_nftables() {
    if skip() {
        return;
    }
    chaos("nftables");
}

/// The PID of node `node`'s `svcnet agent` (the lab records the `unshare` that forked the node's init,
/// whose children are the agent and the pods it adopted).
fn agent_pid(lab: &MultiNodeLab, node: &str) -> i32 {
    let state = lab.state();
    let wrapper = state["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["name"] == node)
        .and_then(|n| n["agentPid"].as_u64())
        .expect("agent pid");
    let children = |pid: u64| -> Vec<u64> {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    };
    let init = children(wrapper)
        .first()
        .copied()
        .expect("the node's init under unshare");
    children(init)
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(b"agent".as_slice()))
        })
        .expect("the agent under the node's init") as i32
}

/// A node that was only cut off (its agent frozen past the grace period, then thawed, as after a network
/// partition) comes back whole: Ready again, taints gone, and its pods, which kept running and which the
/// control plane marked not ready meanwhile, ready again without a restart.
#[test]
fn a_node_cut_off_and_back_has_its_pods_ready_again() {
    if skip() {
        return;
    }
    let lab = MultiNodeLab::up(SVCNET, 2, FAST_FAILURE);
    lab.apply(&python_pod(
        "steady",
        "node2",
        ECHO_SERVER,
        &["steady", "8080"],
        Some(8080),
        &[],
    ));
    let before = lab.wait_pod_ready("steady", WAIT);
    let agent = nix::unistd::Pid::from_raw(agent_pid(&lab, "node2"));
    nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let unready = eventually(Duration::from_secs(15), || {
        condition(&lab.get_json(&["pod", "steady"]), "Ready").is_some_and(|c| c["status"] == "False")
    });
    let tainted = taints(&lab, "node2");
    nix::sys::signal::kill(agent, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert!(unready, "the pod never went unready while its node was cut off");
    assert!(
        tainted.contains(&"node.kubernetes.io/unreachable:NoExecute".to_string()),
        "{tainted:?}"
    );
    assert!(
        eventually(Duration::from_secs(15), || taints(&lab, "node2").is_empty()),
        "taints left: {:?}",
        taints(&lab, "node2")
    );
    let after = lab.wait_pod_ready("steady", Duration::from_secs(15));
    assert_eq!(
        after["status"]["containerStatuses"][0]["restartCount"],
        before["status"]["containerStatuses"][0]["restartCount"],
        "the pod was restarted"
    );
    assert!(lab.down());
}

/// A pod's server that keeps connections: answers every line on port ARGV[2] with `ARGV[1] LINE`.
const LINE_ECHO: &str = r#"
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(16)
print("listening", flush=True)
def serve(c):
    f = c.makefile("rb")
    for line in f:
        try:
            c.sendall(("%s %s" % (name, line.decode())).encode())
        except OSError:
            return
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// A pod that holds one connection to each `IP:PORT` argument for at most 5 minutes, sends a line on each
/// every 200 ms and prints `ok IP:PORT` for each answer, or `broken IP:PORT <exception>` once the
/// connection fails (it is not made again: the test counts on the same connection).
const HOLDER: &str = r#"
import socket, sys, time
conns = {}
for t in sys.argv[1:]:
    ip, port = t.rsplit(":", 1)
    conns[t] = socket.create_connection((ip, int(port)), timeout=5)
    conns[t].settimeout(5)
for _ in range(1500):
    for t, c in list(conns.items()):
        try:
            c.sendall(b"ping\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = c.recv(100)
                if not chunk:
                    raise ConnectionError("closed")
                data += chunk
            print("ok", t, flush=True)
        except Exception as e:
            print("broken", t, type(e).__name__, flush=True)
            del conns[t]
    time.sleep(0.2)
"#;

/// The pod's first container's restart count and container ID.
fn container_identity(pod: &Value) -> (Value, Value) {
    let c = &pod["status"]["containerStatuses"][0];
    (c["restartCount"].clone(), c["containerID"].clone())
}

/// Agent restarts keep what they serve: a pod on node1 holds one TCP connection to a pod on node2
/// directly and one through a ClusterIP, and both keep answering while node1's agent is restarted
/// gracefully (SIGTERM) and node2's is killed (SIGKILL) and started again; the pods are not restarted
/// and the nodes are Ready again.
fn agent_restarts(proxy_mode: &str) {
    let lab = MultiNodeLab::up(SVCNET, 2, &["--proxy-mode", proxy_mode]);
    lab.apply(&python_pod(
        "red",
        "node2",
        LINE_ECHO,
        &["red", "8080"],
        Some(8080),
        &[("app", "red")],
    ));
    lab.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "red", "namespace": "default"},
 "spec": {"selector": {"app": "red"}, "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    );
    let red = lab.wait_pod_ready("red", WAIT);
    let red_ip = red["status"]["podIP"].as_str().unwrap().to_string();
    let cluster_ip = lab.get_json(&["service", "red"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    // The ClusterIP answers before the holder starts (the Service is programmed on node1).
    let via_service = format!("{cluster_ip}:80");
    let direct = format!("{red_ip}:8080");
    lab.apply(&python_pod(
        "holder",
        "node1",
        HOLDER,
        &[&direct, &via_service],
        None,
        &[],
    ));
    let holder = lab.wait_pod_ready("holder", WAIT);
    let oks = |target: &str| {
        let want = format!("ok {target}");
        lab.pod_logs("holder").lines().filter(|l| *l == want).count()
    };
    assert!(
        eventually(WAIT, || oks(&direct) >= 5 && oks(&via_service) >= 5),
        "holder: {}",
        lab.pod_logs("holder")
    );

    let reuses = |node: &str| {
        lab.log(node)
            .matches("using this node's certificate from an earlier join")
            .count()
    };
    for (node, signal) in [("node1", "TERM"), ("node2", "KILL")] {
        let before = (oks(&direct), oks(&via_service));
        let cert = lab.dir().join(node).join("pki/kubelet-client-current.pem");
        let (pem, reused) = (std::fs::read_to_string(&cert).unwrap(), reuses(node));
        let out = lab.lab(&["restart-agent", node, "--signal", signal]);
        assert!(
            out.status.success(),
            "restart-agent {node}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            lab.log(node)
        );
        // The new agent works with the certificate the node joined with (the lab's token is gone).
        assert_eq!(reuses(node), reused + 1, "{}", lab.log(node));
        assert_eq!(
            std::fs::read_to_string(&cert).unwrap(),
            pem,
            "{node} joined again"
        );
        assert_eq!(lab.node_identity(node), format!("system:node:{node}"));
        // Both connections go on answering after the restart (each answers 5 times a second).
        assert!(
            eventually(Duration::from_secs(10), || oks(&direct) >= before.0 + 10
                && oks(&via_service) >= before.1 + 10),
            "after the {signal} restart of {node}: {}",
            lab.pod_logs("holder")
        );
    }
    let log = lab.pod_logs("holder");
    assert!(!log.lines().any(|l| l.starts_with("broken")), "{log}");
    // The pods ran on: same containers, no restart.
    assert_eq!(
        container_identity(&lab.get_json(&["pod", "red"])),
        container_identity(&red)
    );
    assert_eq!(
        container_identity(&lab.get_json(&["pod", "holder"])),
        container_identity(&holder)
    );
    assert!(lab.down());
}

#[test]
fn agent_restarts_keep_pods_and_established_connections_userspace() {
    if skip() {
        return;
    }
    agent_restarts("userspace");
}

#[test]
fn agent_restarts_keep_pods_and_established_connections_nftables() {
    if skip() {
        return;
    }
    agent_restarts("nftables");
}

/// The zone eviction rate (kube's `--node-eviction-rate`): two nodes of one zone die together; both are
/// marked unreachable and tainted `NoSchedule` at once, but the second `NoExecute` taint (which evicts
/// pods) waits for the zone's next token, here one node every 2 s. A node of another zone is unaffected.
#[test]
fn no_execute_taints_in_a_zone_follow_the_eviction_rate() {
    if skip() {
        return;
    }
    let mut flags = FAST_FAILURE.to_vec();
    flags.push("--control-plane-flag=--node-eviction-rate=0.5");
    // Zones cycle a, b, c: node1 and node4 are both in zone-a.
    let lab = MultiNodeLab::up(SVCNET, 4, &flags);
    for node in ["node1", "node4"] {
        let out = lab.lab(&["stop-node", node]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let no_execute_added = |node: &str| -> Option<jiff::Timestamp> {
        lab.get_json(&["node", node])["spec"]["taints"]
            .as_array()?
            .iter()
            .find(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")?["timeAdded"]
            .as_str()?
            .parse()
            .ok()
    };
    let mut added = (None, None);
    assert!(
        eventually(Duration::from_secs(30), || {
            added = (no_execute_added("node1"), no_execute_added("node4"));
            added.0.is_some() && added.1.is_some()
        }),
        "taints: {:?} / {:?}",
        taints(&lab, "node1"),
        taints(&lab, "node4")
    );
    let (a, b) = (added.0.unwrap(), added.1.unwrap());
    let apart = a.duration_since(b).abs();
    assert!(
        apart >= jiff::SignedDuration::from_secs(2),
        "the two NoExecute taints of zone-a were added {apart:?} apart, want at least 2 s"
    );
    // The other zones' nodes stay Ready and untainted.
    for node in ["node2", "node3"] {
        assert!(taints(&lab, node).is_empty(), "{node}: {:?}", taints(&lab, node));
    }
    assert!(lab.down());
}
