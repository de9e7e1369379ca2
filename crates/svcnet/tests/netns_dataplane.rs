//! The seed scenario in the netns pod network, on both data planes (root only): `svcnet up` runs inside a
//! network namespace of the test's own (the "node"), each pod in its own namespace below it, and Blue calls
//! `http://red` by its DNS name — through cluster DNS on the kube-dns ClusterIP and the data plane
//! (userspace proxy, or nftables DNAT in the kernel). The node reaches the Service by ClusterIP and the
//! NodePort on its pod-network address. A third test runs nftables with pods on the node's loopback
//! (`--pod-network host`, svcnet's default address plan) in a namespace of its own.
//!
//! Without root, iproute2 or (for the kernel data plane) nft, the tests say they are skipped and pass.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;
use svcnet_testsupport::netns::{Namespaces, POD_NETWORK_FLAGS, can_run, command_in};
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(90);

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed")
}

fn ready(c: &Cluster, app: &str) -> usize {
    c.ready_pods(&format!("app={app}")).len()
}

/// `curl` from the node's namespace; the body, or None.
fn curl_in(netns: &str, url: &str) -> Option<String> {
    let out = command_in(netns, "curl")
        .args(["-sS", "--max-time", "3", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Why the test cannot run here (not root, no iproute2, or no nft for the kernel data plane), if so.
fn cannot_run(mode: &str) -> Option<String> {
    if let Err(why) = can_run() {
        return Some(why.to_string());
    }
    if mode == "nftables" && Command::new("nft").arg("--version").output().is_err() {
        return Some("the nftables data plane needs nft".into());
    }
    None
}

/// Applies the seed scenario's Red and Blue and waits until their pods are ready.
fn start_seed(c: &Cluster) {
    let dir = examples();
    for f in ["red.yaml", "blue.yaml"] {
        c.ok(&["apply", "-f", dir.join(f).to_str().unwrap()]);
    }
    assert!(
        eventually(WAIT, || ready(c, "red") == 3 && ready(c, "blue") == 1),
        "pods ready:\n{}\n{}",
        c.ok(&["get", "pods", "-o", "wide"]),
        c.log()
    );
}

/// Blue's calls spread over the Red pods; returns Blue's log.
fn assert_blue_reaches_red(c: &Cluster, how: &str) -> String {
    let mut seen = BTreeSet::new();
    let mut logs = String::new();
    let ok = eventually(WAIT, || {
        logs = c.ok(&["logs", "deploy/blue"]);
        seen.extend(
            logs.lines()
                .filter_map(|l| l.strip_prefix("red "))
                .filter_map(|l| l.split_whitespace().next().map(str::to_string)),
        );
        seen.len() >= 2
    });
    assert!(
        ok,
        "Blue reaches Red by name ({how}): {seen:?}\n{logs}\n{}",
        c.log()
    );
    logs
}

/// Red's ClusterIP.
fn red_cluster_ip(c: &Cluster) -> String {
    c.get_json(&["svc", "red"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Exposes Red as a NodePort Service `red-np` and returns the NodePort.
fn expose_node_port(c: &Cluster) -> i64 {
    c.ok(&[
        "expose",
        "deploy/red",
        "--name",
        "red-np",
        "--type",
        "NodePort",
        "--port",
        "80",
        "--target-port",
        "8080",
    ]);
    c.get_json(&["svc", "red-np"])["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .unwrap()
}

/// Asserts that `url` answers from a Red pod, seen from `netns`.
fn assert_red_at(netns: &str, url: &str, what: &str) {
    assert!(
        eventually(WAIT, || curl_in(netns, url)
            .is_some_and(|b| b.starts_with("red "))),
        "{what}: {url}"
    );
}

fn seed_in_netns(mode: &str) {
    if let Some(why) = cannot_run(mode) {
        println!("skipped: {why}");
        return;
    }
    let ns = Namespaces::create();
    let mut flags = POD_NETWORK_FLAGS.to_vec();
    // NodePorts on the node's pod-network address and on loopback (kube-proxy's --nodeport-addresses:
    // localhost NodePorts only when loopback is listed).
    flags.extend([
        "--proxy-mode",
        mode,
        "--nodeport-address",
        "10.244.0.1",
        "--nodeport-address",
        "127.0.0.1",
    ]);
    // kube-proxy's --masquerade-all: the scenario must work with every ClusterIP connection SNATed too.
    if mode == "nftables" {
        flags.push("--masquerade-all");
    }
    let c = Cluster::start_in_netns(SVCNET, &ns.node.name, &flags);
    start_seed(&c);
    let logs = assert_blue_reaches_red(&c, mode);
    // In its own namespace Blue has the cluster's resolv.conf and calls Red by name.
    assert!(logs.contains("blue calls http://red/"), "Blue used DNS: {logs}");

    // The node reaches Red by ClusterIP.
    let ip = red_cluster_ip(&c);
    assert_red_at(
        &ns.node.name,
        &format!("http://{ip}/"),
        &format!("node -> ClusterIP ({mode})"),
    );
    if mode == "nftables" {
        let rules = command_in(&ns.node.name, "nft")
            .args(["list", "table", "ip", "svcnet"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let masq_all = format!("ip daddr {ip} tcp dport 80 jump mark-for-masquerade");
        assert!(
            rules.lines().any(|l| l.trim() == masq_all),
            "--masquerade-all: {masq_all:?} in\n{rules}"
        );
    }

    // A NodePort answers on the node's pod-network address.
    let np = expose_node_port(&c);
    let what = format!("node address -> NodePort ({mode})");
    assert_red_at(&ns.node.name, &format!("http://10.244.0.1:{np}/"), &what);
    // nftables cannot DNAT loopback traffic; a small proxy answers the node's localhost NodePorts, as
    // iptables-mode kube-proxy does (the userspace proxy simply listens there too).
    assert_red_at(
        &ns.node.name,
        &format!("http://127.0.0.1:{np}/"),
        &format!("localhost -> NodePort ({mode})"),
    );

    // kube-proxy's status URLs, on kube-proxy's ports (the namespace has them to itself).
    assert_eq!(
        curl_in(&ns.node.name, "http://127.0.0.1:10249/proxyMode").as_deref(),
        Some(mode)
    );
    let health = curl_in(&ns.node.name, "http://127.0.0.1:10256/healthz").unwrap_or_default();
    assert!(
        health.contains("\"lastUpdated\"") && health.contains("\"nodeEligible\": true"),
        "{health}"
    );
    let metrics = curl_in(&ns.node.name, "http://127.0.0.1:10249/metrics").unwrap_or_default();
    assert!(
        metrics.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds"),
        "{metrics}"
    );

    // nftables mode makes kube-proxy's conntrack timeouts in the node's namespace (the userspace proxy
    // tracks nothing and leaves them as they are).
    let close_wait = command_in(&ns.node.name, "cat")
        .arg("/proc/sys/net/netfilter/nf_conntrack_tcp_timeout_close_wait")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if mode == "nftables" {
        assert_eq!(close_wait, "3600", "{}", c.log());
    } else {
        assert_ne!(close_wait, "3600");
    }
    drop(c);
    drop(ns);
}

#[test]
fn seed_scenario_in_netns_userspace() {
    seed_in_netns("userspace");
}

#[test]
fn seed_scenario_in_netns_nftables() {
    seed_in_netns("nftables");
}

/// nftables with svcnet's rootless address plan (`--pod-network host`: loopback service and pod ranges),
/// inside a namespace of the test's own: connections that the rules mark for masquerade (from the node's
/// 127.0.0.1, which is outside the pod range) leave through loopback, where masquerading would drop them.
#[test]
fn seed_scenario_with_host_pods_on_nftables() {
    if let Some(why) = cannot_run("nftables") {
        println!("skipped: {why}");
        return;
    }
    let ns = Namespaces::create();
    let c = Cluster::start_in_netns(SVCNET, &ns.node.name, &["--proxy-mode", "nftables"]);
    start_seed(&c);
    assert_blue_reaches_red(&c, "nftables, host pods");
    let ip = red_cluster_ip(&c);
    assert_red_at(
        &ns.node.name,
        &format!("http://{ip}/"),
        "node (127.0.0.1, masqueraded) -> ClusterIP",
    );
    // The node's address is 127.0.0.1 here: its NodePorts are the loopback proxy's.
    let np = expose_node_port(&c);
    assert_red_at(
        &ns.node.name,
        &format!("http://127.0.0.1:{np}/"),
        "node -> NodePort",
    );
    drop(c);
    drop(ns);
}

/// `nft` in the node's namespace; stdout, or None when it failed.
fn nft_in(netns: &str, args: &[&str]) -> Option<String> {
    let out = command_in(netns, "nft").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One sample of the node's metrics: the value of the line that starts with `prefix`.
fn node_metric(netns: &str, prefix: &str) -> Option<f64> {
    curl_in(netns, "http://127.0.0.1:10249/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
}

/// A real nftables failure heals by itself: another process takes svcnet's table (an nftables `owner`
/// table, which nobody else may change while its owner's socket is open), so every sync fails with
/// EPERM while the cluster changes under it. kube-proxy's answer is a retry after back-off as a full
/// sync; here, once the owner goes away, traffic must be right again within 2 s, and the metrics must
/// show the failures and the retries.
#[test]
fn nftables_sync_failures_heal_within_seconds() {
    if let Some(why) = cannot_run("nftables") {
        println!("skipped: {why}");
        return;
    }
    let ns = Namespaces::create();
    let c = Cluster::start_in_netns(SVCNET, &ns.node.name, &["--proxy-mode", "nftables"]);
    c.ok(&["apply", "-f", examples().join("red.yaml").to_str().unwrap()]);
    assert!(eventually(WAIT, || ready(&c, "red") == 3), "{}", c.log());
    let ip = red_cluster_ip(&c);
    assert_red_at(&ns.node.name, &format!("http://{ip}/"), "before the fault");

    // The fault: the table is deleted and taken by an owner that holds it until it exits.
    assert!(nft_in(&ns.node.name, &["delete", "table", "ip", "svcnet"]).is_some());
    let mut owner = command_in(&ns.node.name, "nft")
        .arg("-i")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nft -i");
    {
        use std::io::Write;
        let stdin = owner.stdin.as_mut().unwrap();
        writeln!(stdin, "add table ip svcnet {{ flags owner; }}").unwrap();
        stdin.flush().unwrap();
    }
    assert!(
        eventually(Duration::from_secs(10), || nft_in(
            &ns.node.name,
            &["list", "table", "ip", "svcnet"]
        )
        .is_some_and(|t| t.contains("owner"))),
        "the owner table is in place"
    );
    let errors_before = node_metric(&ns.node.name, "kubeproxy_sync_proxy_rules_errors_total ").unwrap_or(0.0);
    // The cluster changes while the data plane cannot be programmed: a Service appears.
    c.ok(&[
        "expose",
        "deploy/red",
        "--name",
        "red2",
        "--port",
        "80",
        "--target-port",
        "8080",
    ]);
    let ip2 = c.get_json(&["svc", "red2"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        eventually(Duration::from_secs(30), || node_metric(
            &ns.node.name,
            "svcnet_proxier_sync_retries_total "
        )
        .is_some_and(|r| r >= 2.0)),
        "syncs fail and are retried while the table is taken:\n{}",
        c.log()
    );
    // The fault is real: the live table is the owner's, empty of svcnet's rules. (A failing full sync
    // may serve traffic from its standby copy for a moment: that is how a replacement stays atomic.)
    let live = nft_in(&ns.node.name, &["list", "table", "ip", "svcnet"]).unwrap_or_default();
    assert!(live.contains("owner") && !live.contains(&ip2), "{live}");

    // The fault clears: the owner exits and its table goes with it.
    let _ = owner.kill();
    let _ = owner.wait();
    let cleared = std::time::Instant::now();
    let healed = eventually(Duration::from_secs(2), || {
        [&ip, &ip2]
            .iter()
            .all(|ip| curl_in(&ns.node.name, &format!("http://{ip}/")).is_some_and(|b| b.starts_with("red ")))
    });
    assert!(
        healed,
        "traffic right within 2 s of the fault clearing (waited {:?}):\n{}",
        cleared.elapsed(),
        c.log()
    );
    let errors = node_metric(&ns.node.name, "kubeproxy_sync_proxy_rules_errors_total ").unwrap_or(0.0);
    assert!(errors > errors_before, "failures counted: {errors}");
    assert!(
        node_metric(
            &ns.node.name,
            "svcnet_proxier_full_syncs_total{reason=\"retry\"} "
        )
        .is_some_and(|n| n >= 2.0)
    );
    // Traffic may come back first from the standby copy of the table; the retry that makes the live
    // table svcnet's again follows within the back-off's 1 s maximum.
    assert!(
        eventually(Duration::from_secs(5), || c
            .log()
            .contains("data plane sync recovered")),
        "the retry succeeds after the fault clears (waited {:?}):\n{}",
        cleared.elapsed(),
        c.log()
    );
    // Nothing is left behind: the standby copy a failed replacement made is gone.
    assert!(
        eventually(Duration::from_secs(5), || nft_in(
            &ns.node.name,
            &["list", "tables"]
        )
        .is_some_and(|t| !t.contains("standby"))),
        "{}",
        nft_in(&ns.node.name, &["list", "tables"]).unwrap_or_default()
    );
    drop(c);
    drop(ns);
}
