//! LoadBalancer IPs reachable from outside the cluster in a `svcnet lab` (root only), on both backends:
//! the lab's control plane hands out addresses from the underlay (`--lb-pool`), one node per Service
//! holds its Lease and answers ARP for the address, and the client (a machine on the same segment)
//! reaches the EXTERNAL-IP with nothing else installed.
//!
//! The test makes node3 ineligible (Kubernetes' `exclude-from-external-load-balancers` label) and puts
//! both endpoints there, so whichever of node1/node2 holds the Lease can be stopped without taking an
//! endpoint with it. It checks: exactly one MAC answers ARP for the IP (a probe in the client sends a
//! request and collects every reply), and it is the holder's; the client's neighbour entry names it; an
//! Event on the Service and its `svcnet.io/lb-announcing-node` annotation name the holder, and `kubectl
//! describe svc` shows both; after `lab stop-node <holder>` the other node takes the Lease,
//! the client's neighbour entry changes (gratuitous ARP) and requests succeed again within the failover
//! goal (the measured gap is printed); the old holder, started again, stays silent; deleting the Service
//! stops the answers.
//!
//! Sharing (both backends): two Services with one `svcnet.io/allow-shared-ip` key, DNS on 53/TCP and
//! 53/UDP, get one address and both answer the client; a third whose port clashes gets an
//! `AllocationFailed` Event and no address; one Lease (the group's) elects one node, which alone answers
//! ARP; stopping it moves both Services; deleting the first Service hands its place to the waiting one
//! and the address stays answered.
//!
//! The nodes announce with their own credentials (`system:node:<name>`, joined with a bootstrap token):
//! a node's attempt to write the holder's Lease naming a third node is Forbidden.
//!
//! Every frame stays inside the lab's namespaces. Without root (or without iproute2) the tests say they
//! are skipped and pass.

use std::time::{Duration, Instant};

use svcnet_testsupport::eventually;
use svcnet_testsupport::multinode::{ECHO_SERVER, MultiNodeLab, ask_from, python_pod};
use svcnet_testsupport::netns::{can_run, command_in};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(60);
/// The failover goal with the default Lease settings (2 s Lease, 500 ms retry).
const FAILOVER_GOAL: Duration = Duration::from_secs(3);
/// What the assert allows on top: a loaded 2-core machine running several labs.
const MARGIN: Duration = Duration::from_secs(3);

fn skip() -> bool {
    if let Err(why) = can_run() {
        eprintln!("skipped: {why}");
        return true;
    }
    false
}

/// Connects to ARGV[1]:ARGV[2] every 10 ms for ARGV[3] seconds (each attempt at most 200 ms) and prints
/// `ok T` or `fail T` per attempt, T in Unix seconds.
const REQUESTS: &str = r#"
import socket, sys, time
ip, port, end = sys.argv[1], int(sys.argv[2]), time.time() + float(sys.argv[3])
while time.time() < end:
    t = time.time()
    try:
        s = socket.create_connection((ip, port), timeout=0.2)
        ok = s.recv(200).startswith(b"red-")
        s.close()
    except OSError:
        ok = False
    print("ok" if ok else "fail", "%.3f" % t, flush=True)
    time.sleep(0.01)
"#;

const SERVICE: &str = r#"{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "red", "namespace": "default"},
 "spec": {"type": "LoadBalancer", "selector": {"app": "red"}, "ports": [{"port": 80, "targetPort": 8080}]}}"#;

/// The MACs that answer ARP for `vip` on the client's segment (sorted, space-separated).
fn arp_answers(lab: &MultiNodeLab, vip: &str) -> String {
    svcnet_testsupport::neighbours::answers(&lab.netns_of("client"), vip, "172.18.0.2")
}

fn mac_of(lab: &MultiNodeLab, node: &str) -> String {
    lab.exec_ok(node, &["cat", "/sys/class/net/eth0/address"])
        .trim()
        .to_string()
}

/// The client's neighbour entry for `ip` (`… lladdr MAC STATE`), empty if none.
fn neighbour(lab: &MultiNodeLab, ip: &str) -> String {
    let out = command_in(&lab.netns_of("client"), "ip")
        .args(["neigh", "show", ip])
        .output()
        .expect("ip neigh");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn holder(lab: &MultiNodeLab) -> Option<String> {
    let out = lab.kubectl(&["get", "lease", "svcnet-lb-red", "-o", "json"], None);
    let lease: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// The node the Service's annotation names as announcing it.
fn annotated(lab: &MultiNodeLab, service: &str) -> Option<String> {
    let svc = lab.get_json(&["service", service]);
    svc["metadata"]["annotations"]["svcnet.io/lb-announcing-node"]
        .as_str()
        .map(str::to_string)
}

/// The messages of the Service's `nodeAssigned` Events.
fn assigned_events(lab: &MultiNodeLab) -> Vec<String> {
    let events = lab.get_json(&["events"]);
    events["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == "red" && e["reason"] == "nodeAssigned")
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

fn announce_and_fail_over(proxy_mode: &str) {
    let lab = MultiNodeLab::up(SVCNET, 3, &["--proxy-mode", proxy_mode]);
    lab.ok(&[
        "label",
        "node",
        "node3",
        "node.kubernetes.io/exclude-from-external-load-balancers=",
    ]);
    for name in ["red-a", "red-b"] {
        lab.apply(&python_pod(
            name,
            "node3",
            ECHO_SERVER,
            &[name, "8080"],
            Some(8080),
            &[("app", "red")],
        ));
    }
    lab.apply(SERVICE);
    for name in ["red-a", "red-b"] {
        lab.wait_pod_ready(name, WAIT);
    }
    let mut vip = String::new();
    assert!(
        eventually(WAIT, || {
            let svc = lab.get_json(&["service", "red"]);
            vip = svc["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .unwrap_or("")
                .to_string();
            !vip.is_empty()
        }),
        "no EXTERNAL-IP"
    );
    assert!(vip.starts_with("172.18.0."), "{vip} is not from the lab's pool");
    let mut first = None;
    assert!(
        eventually(WAIT, || {
            first = holder(&lab);
            first.is_some()
        }),
        "no node took the Lease\nnode1: {}\nnode2: {}",
        lab.log("node1"),
        lab.log("node2")
    );
    let first = first.unwrap();
    assert!(
        ["node1", "node2"].contains(&first.as_str()),
        "ineligible node3 holds it: {first}"
    );
    let other = if first == "node1" { "node2" } else { "node1" };

    // From the client: the EXTERNAL-IP answers, from both endpoints on node3.
    let client = lab.netns_of("client");
    let mut last = String::new();
    assert!(
        eventually(WAIT, || {
            last = ask_from(&client, &vip, 80);
            last.starts_with("red-")
        }),
        "the client did not reach {vip}: {last:?}\n{first}: {}",
        lab.log(&first)
    );
    // Exactly one node answers ARP for it: the holder.
    let first_mac = mac_of(&lab, &first);
    assert_eq!(arp_answers(&lab, &vip), first_mac, "ARP answers for {vip}");
    let neigh = neighbour(&lab, &vip);
    assert!(
        neigh.contains(&first_mac),
        "client's neighbour entry {neigh:?}, want {first_mac}"
    );
    assert!(
        eventually(Duration::from_secs(10), || assigned_events(&lab)
            .iter()
            .any(|m| m.contains(&vip) && m.contains(&format!("{first:?}")))),
        "no nodeAssigned Event naming {first}: {:?}",
        assigned_events(&lab)
    );
    assert!(
        eventually(Duration::from_secs(10), || annotated(&lab, "red").as_deref()
            == Some(first.as_str())),
        "the Service's annotation does not name {first}: {:?}",
        annotated(&lab, "red")
    );
    // The holder announced as itself: a lab node joined with a token and has only its own certificate,
    // and NodeRestriction lets a node write an announcement Lease only to hold it itself (or release
    // its own), so node3 cannot hand the holder's Lease to another node.
    assert_eq!(lab.node_identity(&first), format!("system:node:{first}"));
    let out = lab.kubectl_with(
        &lab.node_kubeconfig("node3"),
        &[
            "patch",
            "lease",
            "svcnet-lb-red",
            "--type=merge",
            "-p",
            &format!(r#"{{"spec":{{"holderIdentity":"{other}"}}}}"#),
        ],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
    assert!(
        !out.status.success() && err.contains("forbidden"),
        "node3 gave {first}'s Lease to {other}: {err}"
    );
    assert_eq!(holder(&lab).as_deref(), Some(first.as_str()));
    // What a user sees: the annotation and the Event in `kubectl describe`.
    let described = lab.ok(&["describe", "service", "red"]);
    assert!(
        described.contains(&format!("svcnet.io/lb-announcing-node: {first}"))
            && described
                .lines()
                .any(|l| l.contains("nodeAssigned") && l.contains(&format!("{first:?}"))),
        "kubectl describe does not show {first} announcing:\n{described}"
    );

    // The holder dies; the client keeps asking every 10 ms.
    let probe = command_in(&client, "python3")
        .args(["-c", REQUESTS, &vip, "80", "12"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let probe = svcnet_testsupport::multinode::Proc(probe);
    std::thread::sleep(Duration::from_millis(500));
    let stopped_at = Instant::now();
    let out = lab.lab(&["stop-node", &first]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut now_holder = None;
    assert!(
        eventually(Duration::from_secs(15), || {
            now_holder = holder(&lab);
            now_holder.as_deref() == Some(other)
        }),
        "{other} did not take over from {first}: holder {now_holder:?}\n{other}: {}",
        lab.log(other)
    );
    let lease_moved = stopped_at.elapsed();
    let mut probe = probe;
    let output = probe.0.wait_with_output_ref();
    let gap = outage(&output);
    eprintln!(
        "{proxy_mode}: failover: Lease moved within {:.2} s of stop-node; the client's requests failed for {:.2} s",
        lease_moved.as_secs_f64(),
        gap.as_secs_f64()
    );
    assert!(
        gap > Duration::ZERO && gap <= FAILOVER_GOAL + MARGIN,
        "the client's outage was {gap:?} (goal {FAILOVER_GOAL:?})\n{other}: {}",
        lab.log(other)
    );
    let other_mac = mac_of(&lab, other);
    let neigh = neighbour(&lab, &vip);
    assert!(
        neigh.contains(&other_mac) && !neigh.contains(&first_mac),
        "client's neighbour entry {neigh:?}, want {other_mac} (gratuitous ARP)"
    );
    assert_eq!(
        arp_answers(&lab, &vip),
        other_mac,
        "ARP answers for {vip} after failover"
    );
    last = ask_from(&client, &vip, 80);
    assert!(last.starts_with("red-"), "after failover: {last:?}");
    assert!(
        eventually(Duration::from_secs(10), || assigned_events(&lab).iter().any(
            |m| m.contains(&format!("{other:?}")) && m.contains(&format!("took over from {first}"))
        )),
        "no nodeAssigned Event for the takeover: {:?}",
        assigned_events(&lab)
    );
    assert!(
        eventually(Duration::from_secs(10), || annotated(&lab, "red").as_deref()
            == Some(other)),
        "the Service's annotation does not name {other} after the takeover: {:?}",
        annotated(&lab, "red")
    );

    // The new holder's metrics count the takeover and how long the IP went unannounced.
    let metrics = lab.exec_ok(other, &["curl", "-s", "http://127.0.0.1:10249/metrics"]);
    for want in [
        "svcnet_l2announce_takeovers_total 1",
        "svcnet_l2announce_takeover_seconds_count 1",
        "svcnet_l2announce_leases_held 1",
        "svcnet_l2announce_announced_ips 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == want),
            "{other}'s metrics lack {want:?}:\n{metrics}"
        );
    }
    let took: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("svcnet_l2announce_takeover_seconds_sum "))
        .and_then(|v| v.parse().ok())
        .expect("takeover_seconds_sum");
    eprintln!("{proxy_mode}: {other} measured its takeover at {took:.2} s after {first}'s last renewal");
    assert!(
        took > 0.0 && took <= (FAILOVER_GOAL + MARGIN).as_secs_f64(),
        "{took}"
    );

    // The old holder comes back: it stays silent (the routes its killed agent left, which would make
    // its kernel answer ARP, are removed) and the Lease stays where it is.
    let out = lab.lab(&["start-node", &first]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        arp_answers(&lab, &vip),
        other_mac,
        "ARP answers for {vip} after {first} came back"
    );
    assert_eq!(holder(&lab).as_deref(), Some(other));
    assert_eq!(annotated(&lab, "red").as_deref(), Some(other));

    // Deleting the Service stops the answers at once.
    lab.ok(&["delete", "service", "red"]);
    assert!(
        eventually(Duration::from_secs(5), || arp_answers(&lab, &vip).is_empty()),
        "{vip} still answered after its Service was deleted"
    );
    assert!(lab.down());
}

trait WaitOutput {
    fn wait_with_output_ref(&mut self) -> String;
}

impl WaitOutput for std::process::Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let mut text = String::new();
        if let Some(mut out) = self.stdout.take() {
            let _ = out.read_to_string(&mut text);
        }
        let _ = self.wait();
        text
    }
}

/// From the probe's lines: the time between the last success before the first failure and the first
/// success after it (zero if nothing failed or nothing succeeded again).
fn outage(lines: &str) -> Duration {
    let attempts: Vec<(bool, f64)> = lines
        .lines()
        .filter_map(|l| {
            let (what, t) = l.split_once(' ')?;
            Some((what == "ok", t.parse().ok()?))
        })
        .collect();
    let Some(first_fail) = attempts.iter().position(|(ok, _)| !ok) else {
        return Duration::ZERO;
    };
    let before = attempts[..first_fail]
        .iter()
        .rev()
        .find(|(ok, _)| *ok)
        .map(|a| a.1);
    let after = attempts[first_fail..].iter().find(|(ok, _)| *ok).map(|a| a.1);
    match (before, after) {
        (Some(b), Some(a)) => Duration::from_secs_f64(a - b),
        _ => Duration::ZERO,
    }
}

#[test]
fn load_balancer_ip_announced_and_failed_over_nftables() {
    if skip() {
        return;
    }
    announce_and_fail_over("nftables");
}

#[test]
fn load_balancer_ip_announced_and_failed_over_userspace() {
    if skip() {
        return;
    }
    announce_and_fail_over("userspace");
}

/// The holder of every announcement Lease in `default`, by Lease name.
fn holders(lab: &MultiNodeLab) -> std::collections::BTreeMap<String, String> {
    let leases = lab.get_json(&["leases"]);
    leases["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            Some((
                l["metadata"]["name"].as_str()?.to_string(),
                l["spec"]["holderIdentity"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Services spread over the nodes as rendezvous hashing orders them; under externalTrafficPolicy Local
/// only the node with the endpoint announces, and stops when the endpoint goes.
#[test]
fn load_balancer_ips_spread_and_follow_local_endpoints() {
    if skip() {
        return;
    }
    let lab = MultiNodeLab::up(SVCNET, 3, &["--proxy-mode", "nftables"]);
    let nodes = ["node1", "node2", "node3"];
    let names: Vec<String> = (0..6).map(|i| format!("spread-{i}")).collect();
    let preferred: Vec<&str> = names
        .iter()
        .map(|n| svcnet_l2announce::rank::order("default", n, nodes)[0])
        .collect();
    let distinct: std::collections::BTreeSet<&&str> = preferred.iter().collect();
    assert!(
        distinct.len() >= 2,
        "the test's names all hash to one node: {preferred:?}"
    );
    for name in &names {
        lab.apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "{name}", "namespace": "default"}},
 "spec": {{"type": "LoadBalancer", "ports": [{{"port": 80}}]}}}}"#
        ));
    }
    let want: std::collections::BTreeMap<String, String> = names
        .iter()
        .zip(&preferred)
        .map(|(n, p)| (format!("svcnet-lb-{n}"), p.to_string()))
        .collect();
    let mut got = Default::default();
    assert!(
        eventually(WAIT, || {
            got = holders(&lab);
            want.iter().all(|(k, _)| got.contains_key(k))
        }),
        "not every Service got a holder: {got:?}"
    );
    let got: std::collections::BTreeMap<String, String> =
        got.into_iter().filter(|(k, _)| want.contains_key(k)).collect();
    assert_eq!(got, want, "holders, against rendezvous hashing's first choice");

    // externalTrafficPolicy Local: the endpoint is on node2, so node2 announces whatever the hash says.
    lab.apply(&python_pod(
        "lw",
        "node2",
        ECHO_SERVER,
        &["red-lw", "8080"],
        Some(8080),
        &[("app", "lw")],
    ));
    lab.apply(
        r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lw", "namespace": "default"},
 "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "selector": {"app": "lw"},
  "ports": [{"port": 80, "targetPort": 8080}]}}"#,
    );
    lab.wait_pod_ready("lw", WAIT);
    let mut vip = String::new();
    assert!(eventually(WAIT, || {
        vip = lab.get_json(&["service", "lw"])["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .unwrap_or("")
            .to_string();
        !vip.is_empty()
    }));
    assert!(
        eventually(WAIT, || holders(&lab).get("svcnet-lb-lw").map(String::as_str)
            == Some("node2")),
        "node2 (the only node with an endpoint) does not hold lw: {:?}",
        holders(&lab)
    );
    let client = lab.netns_of("client");
    let mut last = String::new();
    assert!(
        eventually(WAIT, || {
            last = ask_from(&client, &vip, 80);
            last.starts_with("red-lw ")
        }),
        "{vip}: {last:?}"
    );
    // The policy keeps the client's address.
    assert_eq!(last, "red-lw 172.18.0.2");
    assert_eq!(arp_answers(&lab, &vip), mac_of(&lab, "node2"));
    assert!(
        eventually(Duration::from_secs(10), || annotated(&lab, "lw").as_deref()
            == Some("node2")),
        "lw's annotation: {:?}",
        annotated(&lab, "lw")
    );
    // The last local endpoint goes: node2 releases and nobody else may announce.
    lab.ok(&["delete", "pod", "lw", "--wait=false"]);
    assert!(
        eventually(Duration::from_secs(15), || arp_answers(&lab, &vip).is_empty()),
        "{vip} still answered without a local endpoint"
    );
    assert!(!holders(&lab).contains_key("svcnet-lb-lw"), "{:?}", holders(&lab));
    // Nobody announces, and the Service no longer says node2 does.
    assert!(
        eventually(Duration::from_secs(10), || annotated(&lab, "lw").is_none()),
        "lw's annotation still names {:?} without a local endpoint",
        annotated(&lab, "lw")
    );
    assert!(lab.down());
}

/// The number of failed attempts in the probe's lines.
fn failures(lines: &str) -> usize {
    lines.lines().filter(|l| l.starts_with("fail ")).count()
}

/// Nearest-rank percentile `p` (0–100) of sorted `v`.
fn percentile(v: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

/// The failover benchmark of issue 16: `SVCNET_FAILOVER_REPS` (default 20) times, stop the announcing
/// node while the client connects every 10 ms, and measure the client's gap (last success before the
/// first failure to the first success after it) and its failed attempts; the stopped node is started
/// again (and waited for) before the next round, which stops the other node. nftables backend; Lease
/// settings `SVCNET_FAILOVER_LEASE=DURATION/RENEW_DEADLINE/RETRY` (default the agent's, `2s/1s/500ms`).
/// Prints p50/p99/max; asserts only that every round recovered.
/// Run: `cargo test -p svcnet --test lab_lb failover_benchmark -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark (about 3 minutes): run with --ignored"]
fn failover_benchmark() {
    if skip() {
        return;
    }
    let reps: usize = std::env::var("SVCNET_FAILOVER_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let lease = std::env::var("SVCNET_FAILOVER_LEASE").unwrap_or_else(|_| "2s/1s/500ms".into());
    let [duration, deadline, retry] = lease.split('/').collect::<Vec<_>>()[..] else {
        panic!("SVCNET_FAILOVER_LEASE={lease}: want DURATION/RENEW_DEADLINE/RETRY");
    };
    let flags = [
        format!("--agent-flag=--lb-lease-duration={duration}"),
        format!("--agent-flag=--lb-renew-deadline={deadline}"),
        format!("--agent-flag=--lb-retry-period={retry}"),
    ];
    let mut args = vec!["--proxy-mode", "nftables"];
    args.extend(flags.iter().map(String::as_str));
    let lab = MultiNodeLab::up(SVCNET, 3, &args);
    lab.ok(&[
        "label",
        "node",
        "node3",
        "node.kubernetes.io/exclude-from-external-load-balancers=",
    ]);
    lab.apply(&python_pod(
        "red-a",
        "node3",
        ECHO_SERVER,
        &["red-a", "8080"],
        Some(8080),
        &[("app", "red")],
    ));
    lab.apply(SERVICE);
    lab.wait_pod_ready("red-a", WAIT);
    let mut vip = String::new();
    assert!(eventually(WAIT, || {
        vip = lab.get_json(&["service", "red"])["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .unwrap_or("")
            .to_string();
        !vip.is_empty()
    }));
    let client = lab.netns_of("client");
    assert!(
        eventually(WAIT, || ask_from(&client, &vip, 80).starts_with("red-")),
        "the client did not reach {vip}"
    );
    let (mut gaps, mut failed) = (Vec::new(), Vec::new());
    for round in 0..reps {
        let mut first = None;
        assert!(eventually(WAIT, || {
            first = holder(&lab);
            first.is_some()
        }));
        let first = first.unwrap();
        let other = if first == "node1" { "node2" } else { "node1" };
        let probe = command_in(&client, "python3")
            .args(["-c", REQUESTS, &vip, "80", "6"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3");
        let mut probe = svcnet_testsupport::multinode::Proc(probe);
        std::thread::sleep(Duration::from_millis(500));
        let out = lab.lab(&["stop-node", &first]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(
            eventually(Duration::from_secs(15), || holder(&lab).as_deref() == Some(other)),
            "round {round}: {other} did not take over from {first}"
        );
        let output = probe.0.wait_with_output_ref();
        let gap = outage(&output);
        assert!(
            gap > Duration::ZERO,
            "round {round}: no outage measured (or no recovery):\n{output}"
        );
        eprintln!(
            "round {round}: {first} -> {other}: gap {:.3} s, {} failed requests",
            gap.as_secs_f64(),
            failures(&output)
        );
        gaps.push(gap.as_secs_f64());
        failed.push(failures(&output));
        let out = lab.lab(&["start-node", &first]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // The restarted agent's watches must be synced before it is the only candidate left.
        std::thread::sleep(Duration::from_secs(2));
    }
    gaps.sort_by(f64::total_cmp);
    println!(
        "failover, {reps} rounds, Lease {duration} / renew deadline {deadline} / retry {retry}, nftables: gap p50 {:.3} s, p99 {:.3} s, max {:.3} s; failed requests total {} (max {} per round)",
        percentile(&gaps, 50.0),
        percentile(&gaps, 99.0),
        gaps[gaps.len() - 1],
        failed.iter().sum::<usize>(),
        failed.iter().max().unwrap_or(&0)
    );
    assert!(lab.down());
}

/// `--lb-node-selector`: only nodes whose labels match announce, whatever rendezvous hashing prefers;
/// relabelling moves the IPs at once (the old holder releases); a malformed selector is refused.
#[test]
fn load_balancer_ips_only_from_selected_nodes() {
    if skip() {
        return;
    }
    let out = std::process::Command::new(SVCNET)
        .args(["agent", "--lb-node-selector", "edge in (yes"])
        .output()
        .expect("svcnet agent");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("invalid label selector"),
        "a malformed --lb-node-selector: {stderr}"
    );

    let lab = MultiNodeLab::up(
        SVCNET,
        3,
        &[
            "--proxy-mode",
            "nftables",
            "--agent-flag=--lb-node-selector=lab.svcnet.io/edge=yes",
        ],
    );
    lab.ok(&["label", "node", "node3", "lab.svcnet.io/edge=yes"]);
    let names = ["sel-0", "sel-1", "sel-2"];
    for name in names {
        lab.apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "{name}", "namespace": "default"}},
 "spec": {{"type": "LoadBalancer", "ports": [{{"port": 80}}]}}}}"#
        ));
    }
    let all_on = |node: &str| {
        let h = holders(&lab);
        names
            .iter()
            .all(|n| h.get(&format!("svcnet-lb-{n}")).map(String::as_str) == Some(node))
    };
    assert!(
        eventually(WAIT, || all_on("node3")),
        "not every Service is held by node3, the only selected node: {:?}",
        holders(&lab)
    );
    let mut vip = String::new();
    assert!(eventually(WAIT, || {
        vip = lab.get_json(&["service", "sel-0"])["status"]["loadBalancer"]["ingress"][0]["ip"]
            .as_str()
            .unwrap_or("")
            .to_string();
        !vip.is_empty()
    }));
    assert!(
        eventually(Duration::from_secs(10), || arp_answers(&lab, &vip)
            == mac_of(&lab, "node3")),
        "ARP answers for {vip}: {}",
        arp_answers(&lab, &vip)
    );

    lab.ok(&["label", "node", "node1", "lab.svcnet.io/edge=yes"]);
    lab.ok(&["label", "node", "node3", "lab.svcnet.io/edge-"]);
    assert!(
        eventually(Duration::from_secs(15), || all_on("node1")),
        "the Services did not move to node1: {:?}",
        holders(&lab)
    );
    assert!(
        eventually(Duration::from_secs(10), || arp_answers(&lab, &vip)
            == mac_of(&lab, "node1")),
        "ARP answers for {vip} after relabelling: {}",
        arp_answers(&lab, &vip)
    );
    assert!(
        eventually(Duration::from_secs(10), || annotated(&lab, "sel-0").as_deref()
            == Some("node1")),
        "sel-0's annotation after relabelling: {:?}",
        annotated(&lab, "sel-0")
    );
    // A Service that stops being a LoadBalancer is no longer announced, nor said to be.
    lab.ok(&[
        "patch",
        "service",
        "sel-0",
        "--type=merge",
        "-p",
        r#"{"spec": {"type": "ClusterIP"}}"#,
    ]);
    assert!(
        eventually(Duration::from_secs(10), || annotated(&lab, "sel-0").is_none()
            && arp_answers(&lab, &vip).is_empty()),
        "sel-0 as ClusterIP: annotation {:?}, ARP answers {:?}",
        annotated(&lab, "sel-0"),
        arp_answers(&lab, &vip)
    );
    assert!(lab.down());
}

/// A pod's server on TCP and UDP port ARGV[2] at once: each TCP connection and each UDP datagram gets
/// `ARGV[1]/tcp PEER-IP` or `ARGV[1]/udp PEER-IP`.
const TCP_UDP_SERVER: &str = r#"
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", port))
def udp():
    while True:
        data, peer = u.recvfrom(2048)
        u.sendto(("%s/udp %s" % (name, peer[0])).encode(), peer)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(128)
while True:
    c, a = s.accept()
    try:
        c.sendall(("%s/tcp %s\n" % (name, a[0])).encode())
    except OSError:
        pass
    c.close()
"#;

/// From inside `netns`: one UDP datagram to `ip:port` and the answer (`error …` if none in 2 s).
fn ask_udp_from(netns: &str, ip: &str, port: u16) -> String {
    let script = "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(2)\ntry:\n    s.sendto(b'hi',(sys.argv[1],int(sys.argv[2])))\n    print(s.recv(200).decode().strip())\nexcept OSError as e:\n    print('error', e)\n";
    command_in(netns, "python3")
        .args(["-c", script, ip, &port.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A LoadBalancer Service `name` on port 53/`protocol` (to the pods' 8080) with sharing key `key`.
fn shared_service(name: &str, protocol: &str, key: &str) -> String {
    format!(
        r#"{{"apiVersion": "v1", "kind": "Service",
 "metadata": {{"name": "{name}", "namespace": "default", "annotations": {{"svcnet.io/allow-shared-ip": "{key}"}}}},
 "spec": {{"type": "LoadBalancer", "selector": {{"app": "dns"}},
  "ports": [{{"port": 53, "targetPort": 8080, "protocol": "{protocol}"}}]}}}}"#
    )
}

fn ingress_ip(lab: &MultiNodeLab, service: &str) -> String {
    lab.get_json(&["service", service])["status"]["loadBalancer"]["ingress"][0]["ip"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// The messages of `service`'s Events with `reason`.
fn events_of(lab: &MultiNodeLab, service: &str, reason: &str) -> Vec<String> {
    lab.get_json(&["events"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["involvedObject"]["name"] == service && e["reason"] == reason)
        .filter_map(|e| e["message"].as_str().map(str::to_string))
        .collect()
}

/// Issue 16's item 4: two Services with the same `svcnet.io/allow-shared-ip` (DNS on TCP and on UDP)
/// get one address; a third whose port clashes is refused with an Event and stays pending; one Lease
/// (the group's, named after its first Service) elects one node for the address, which alone answers
/// ARP for it; from the client both protocols answer; stopping that node moves both Services at once.
fn shared_ip_tcp_and_udp(proxy_mode: &str) {
    // The eligible nodes are node1 and node2; rendezvous hashing says which takes dns-tcp's address.
    let pair = ["node1", "node2"];
    let predicted = svcnet_l2announce::rank::order("default", "dns-tcp", pair)[0];
    // The clashing Service later leads the group under a Lease of its own: named so that hashing
    // prefers the node that will have lost the address by then, so that only the rule "the node that
    // answers already goes first" keeps the address where it is.
    let clash = (0..50)
        .map(|i| format!("dns-clash{i}"))
        .find(|n| svcnet_l2announce::rank::order("default", n, pair)[0] == predicted)
        .expect("a name that hashes to the first holder");
    let lab = MultiNodeLab::up(SVCNET, 3, &["--proxy-mode", proxy_mode]);
    lab.ok(&[
        "label",
        "node",
        "node3",
        "node.kubernetes.io/exclude-from-external-load-balancers=",
    ]);
    lab.apply(&python_pod(
        "dns-a",
        "node3",
        TCP_UDP_SERVER,
        &["dns-a", "8080"],
        Some(8080),
        &[("app", "dns")],
    ));
    lab.apply(&shared_service("dns-tcp", "TCP", "dns"));
    lab.apply(&shared_service("dns-udp", "UDP", "dns"));
    lab.wait_pod_ready("dns-a", WAIT);
    let mut vip = String::new();
    assert!(
        eventually(WAIT, || {
            vip = ingress_ip(&lab, "dns-tcp");
            !vip.is_empty() && ingress_ip(&lab, "dns-udp") == vip
        }),
        "dns-tcp {vip:?} and dns-udp {:?} do not share an address",
        ingress_ip(&lab, "dns-udp")
    );
    // A third Service of the key on 53/TCP clashes: refused, in words that name the holder and the port.
    lab.apply(&shared_service(&clash, "TCP", "dns"));
    assert!(
        eventually(Duration::from_secs(15), || events_of(
            &lab,
            &clash,
            "AllocationFailed"
        )
        .iter()
        .any(|m| m.contains(&vip)
            && m.contains("default/dns-tcp")
            && m.contains("53/TCP"))),
        "no AllocationFailed Event for the clash: {:?}",
        events_of(&lab, &clash, "AllocationFailed")
    );
    assert_eq!(
        ingress_ip(&lab, &clash),
        "",
        "the clashing Service got an address"
    );

    // One Lease for the address: the group's, named after its first Service.
    let mut holder = None;
    assert!(
        eventually(WAIT, || {
            holder = holders(&lab).get("svcnet-lb-dns-tcp").cloned();
            holder.is_some()
        }),
        "no holder for the shared address: {:?}",
        holders(&lab)
    );
    let first = holder.unwrap();
    assert_eq!(
        first, predicted,
        "dns-tcp's holder against rendezvous hashing's first choice"
    );
    assert!(["node1", "node2"].contains(&first.as_str()), "{first}");
    assert!(
        !holders(&lab).contains_key("svcnet-lb-dns-udp"),
        "a second Lease elects for the same address: {:?}",
        holders(&lab)
    );
    let other = if first == "node1" { "node2" } else { "node1" };
    let client = lab.netns_of("client");
    let mut last = String::new();
    assert!(
        eventually(WAIT, || {
            last = ask_from(&client, &vip, 53);
            last == "dns-a/tcp 172.18.0.2" || last.starts_with("dns-a/tcp ")
        }),
        "TCP to {vip}:53: {last:?}"
    );
    assert!(
        eventually(WAIT, || {
            last = ask_udp_from(&client, &vip, 53);
            last.starts_with("dns-a/udp ")
        }),
        "UDP to {vip}:53: {last:?}"
    );
    assert_eq!(
        arp_answers(&lab, &vip),
        mac_of(&lab, &first),
        "ARP answers for {vip}"
    );
    for svc in ["dns-tcp", "dns-udp"] {
        assert!(
            eventually(Duration::from_secs(10), || annotated(&lab, svc).as_deref()
                == Some(first.as_str())),
            "{svc}'s announcing node: {:?}, want {first}",
            annotated(&lab, svc)
        );
    }
    assert!(
        eventually(Duration::from_secs(10), || events_of(
            &lab,
            "dns-udp",
            "nodeAssigned"
        )
        .iter()
        .any(
            |m| m.contains(&format!("{first:?}")) && m.contains("shared with default/dns-tcp")
        )),
        "dns-udp's nodeAssigned Events: {:?}",
        events_of(&lab, "dns-udp", "nodeAssigned")
    );

    // The holder dies: both Services move together.
    let out = lab.lab(&["stop-node", &first]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        eventually(Duration::from_secs(15), || holders(&lab)
            .get("svcnet-lb-dns-tcp")
            .map(String::as_str)
            == Some(other)),
        "{other} did not take the shared address over: {:?}",
        holders(&lab)
    );
    assert!(
        eventually(Duration::from_secs(10), || ask_from(&client, &vip, 53)
            .starts_with("dns-a/tcp ")
            && ask_udp_from(&client, &vip, 53).starts_with("dns-a/udp ")),
        "after failover: TCP {:?}, UDP {:?}",
        ask_from(&client, &vip, 53),
        ask_udp_from(&client, &vip, 53)
    );
    assert_eq!(
        arp_answers(&lab, &vip),
        mac_of(&lab, other),
        "ARP answers after failover"
    );
    assert!(
        neighbour(&lab, &vip).contains(&mac_of(&lab, other)),
        "client's neighbour entry {:?}",
        neighbour(&lab, &vip)
    );
    for svc in ["dns-tcp", "dns-udp"] {
        assert!(
            eventually(Duration::from_secs(10), || annotated(&lab, svc).as_deref()
                == Some(other)),
            "{svc}'s announcing node after failover: {:?}",
            annotated(&lab, svc)
        );
    }

    // dns-tcp goes: the address stays with dns-udp, dns-clash takes dns-tcp's place on it, and the
    // group (now led by dns-clash, under a new Lease) is still answered for by the same node, though
    // the old holder is back and may be the new Lease's first choice by hash.
    let out = lab.lab(&["start-node", &first]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The restarted agent's watches must be synced before the new Lease appears.
    std::thread::sleep(Duration::from_secs(2));
    lab.ok(&["delete", "service", "dns-tcp"]);
    assert!(
        eventually(WAIT, || ingress_ip(&lab, &clash) == vip),
        "dns-clash did not get {vip} once dns-tcp was gone: {:?}",
        ingress_ip(&lab, &clash)
    );
    assert_eq!(ingress_ip(&lab, "dns-udp"), vip);
    assert!(
        eventually(WAIT, || ask_from(&client, &vip, 53).starts_with("dns-a/tcp ")
            && ask_udp_from(&client, &vip, 53).starts_with("dns-a/udp ")),
        "after the group changed: TCP {:?}, UDP {:?}",
        ask_from(&client, &vip, 53),
        ask_udp_from(&client, &vip, 53)
    );
    assert_eq!(
        arp_answers(&lab, &vip),
        mac_of(&lab, other),
        "ARP answers after the group changed"
    );
    assert!(
        eventually(Duration::from_secs(10), || holders(&lab)
            .get(&format!("svcnet-lb-{clash}"))
            .map(String::as_str)
            == Some(other)),
        "the group's new Lease: {:?}, want {other}",
        holders(&lab)
    );
    assert!(lab.down());
}

#[test]
fn shared_ip_tcp_and_udp_nftables() {
    if skip() {
        return;
    }
    shared_ip_tcp_and_udp("nftables");
}

#[test]
fn shared_ip_tcp_and_udp_userspace() {
    if skip() {
        return;
    }
    shared_ip_tcp_and_udp("userspace");
}
