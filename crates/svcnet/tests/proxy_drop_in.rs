//! `svcnet proxy` as a drop-in for kube-proxy: its own process, nothing but a kubeconfig (or kube-proxy's
//! `--config` file) to reach the API server, against `svcnet up --proxy-mode none` (a control plane and a
//! kubelet, no data plane):
//!
//! - userspace mode on the host's loopback: Services answer only once the proxy runs, follow scaling, and
//!   kube-proxy's health and metrics endpoints answer on kube-proxy's flags;
//! - kubeadm's KubeProxyConfiguration works unchanged (only the addresses a test must own changed), and
//!   a file with unsupported or unknown fields is refused naming every one;
//! - nftables mode in a network namespace of the test's own (root): it refuses to start beside
//!   kube-proxy's table, serves the ClusterIP, leaves its rules in place when stopped (traffic goes on)
//!   and `--cleanup` removes them.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use svcnet_testsupport::net::{free_port, http_get};
use svcnet_testsupport::netns::{Namespaces, can_run, command_in, have};
use svcnet_testsupport::process::Process;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(60);

fn red_yaml() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/seed/red.yaml")
        .display()
        .to_string()
}

/// The pod name in a Red answer (`red <pod> <ip>`).
fn red_pod(body: &str) -> Option<String> {
    body.strip_prefix("red ")?
        .split_whitespace()
        .next()
        .map(str::to_string)
}

/// `svcnet proxy ARGS` behind `prefix` (e.g. `ip netns exec NS`), once it says it is serving; `Err(log)` if
/// it exits first.
fn start_proxy(prefix: &[&str], args: &[&str]) -> Result<Process, String> {
    Process::start(SVCNET, prefix, &[&["proxy"], args].concat())
}

fn node_name(c: &Cluster) -> String {
    c.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"])
}

fn start_red(c: &Cluster) -> String {
    c.ok(&["apply", "-f", &red_yaml()]);
    assert!(
        eventually(WAIT, || c.ready_pods("app=red").len() == 3),
        "{}",
        c.ok(&["get", "pods", "-o", "wide"])
    );
    c.get_json(&["svc", "red"])["spec"]["clusterIP"]
        .as_str()
        .expect("ClusterIP")
        .to_string()
}

/// A cluster with no data plane of its own inside a fresh node namespace, and the seed's Red behind the
/// ClusterIP it returns: where the nftables `svcnet proxy` tests run it. `None` (said why) where they
/// cannot run: not root, or without `nft` or another `tools`.
fn nft_node_with_red(tools: &[&str]) -> Option<(Namespaces, Cluster, String)> {
    if let Err(why) = can_run() {
        println!("skipped: {why}");
        return None;
    }
    if let Some(tool) = ["nft"].iter().chain(tools).find(|t| !have(t, "--version")) {
        println!("skipped: no {tool}");
        return None;
    }
    let ns = Namespaces::create();
    let c = Cluster::start_in_netns(
        SVCNET,
        &ns.node.name,
        &["--proxy-mode", "none", "--dns-listen", "127.0.0.1:0"],
    );
    let ip = start_red(&c);
    Some((ns, c, ip))
}

#[test]
fn userspace_proxy_serves_a_cluster_through_its_kubeconfig() {
    let c = Cluster::start_with(
        SVCNET,
        &[
            "--proxy-mode",
            "none",
            "--service-cidr",
            "127.121.0.0/16",
            "--dns-listen",
            "127.0.0.1:0",
        ],
    );
    let ip = start_red(&c);
    let addr: SocketAddr = format!("{ip}:80").parse().unwrap();
    assert!(
        http_get(addr, "/").is_err(),
        "nothing serves the ClusterIP before the proxy runs"
    );
    let (health, metrics) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let kubeconfig = c.kubeconfig().display().to_string();
    let node = node_name(&c);
    let mut proxy = start_proxy(
        &[],
        &[
            "--kubeconfig",
            &kubeconfig,
            "--proxy-mode",
            "userspace",
            "--hostname-override",
            &node,
            "--healthz-bind-address",
            &format!("127.0.0.1:{health}"),
            "--metrics-bind-address",
            &format!("127.0.0.1:{metrics}"),
        ],
    )
    .unwrap_or_else(|log| panic!("svcnet proxy did not start:\n{log}"));
    let mut seen = std::collections::BTreeSet::new();
    assert!(
        eventually(WAIT, || {
            if let Ok((200, body)) = http_get(addr, "/") {
                seen.extend(red_pod(&body));
            }
            seen.len() == 3
        }),
        "answers from all three Red pods through the proxy: {seen:?}\n{}",
        proxy.log()
    );
    // It follows the cluster: scaled to one pod, only that pod answers.
    c.ok(&["scale", "deploy/red", "--replicas", "1"]);
    assert!(
        eventually(WAIT, || {
            let names: std::collections::BTreeSet<_> = (0..10)
                .filter_map(|_| http_get(addr, "/").ok())
                .filter_map(|(_, b)| red_pod(&b))
                .collect();
            names.len() == 1
        }),
        "only the remaining pod answers\n{}",
        proxy.log()
    );
    let health_addr: SocketAddr = format!("127.0.0.1:{health}").parse().unwrap();
    assert!(eventually(WAIT, || http_get(health_addr, "/healthz")
        .is_ok_and(|(code, _)| code == 200)));
    let (code, body) =
        http_get(format!("127.0.0.1:{metrics}").parse().unwrap(), "/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("kubeproxy_sync_proxy_rules_duration_seconds"),
        "{body}"
    );
    let status = proxy.stop().expect("svcnet proxy exits on SIGTERM");
    assert!(status.success(), "{status}\n{}", proxy.log());
}

/// kubeadm's KubeProxyConfiguration (1.30, `kubectl -n kube-system get cm kube-proxy`), the same file the
/// parser's unit tests read, with the values a test must own: the kubeconfig, the node's name, the
/// endpoints' addresses, the cluster range and the mode.
fn kubeadm_config(kubeconfig: &str, node: &str, health: u16, metrics: u16, mode: &str) -> String {
    let mut text = include_str!("../src/kubeadm-kube-proxy.conf").to_owned();
    for (line, value) in [
        ("  kubeconfig: ", kubeconfig.to_owned()),
        ("clusterCIDR: ", "127.244.0.0/16".to_owned()),
        ("healthzBindAddress: ", format!("127.0.0.1:{health}")),
        ("hostnameOverride: ", node.to_owned()),
        ("metricsBindAddress: ", format!("127.0.0.1:{metrics}")),
        ("mode: ", format!("\"{mode}\"")),
        ("oomScoreAdj: ", "500".to_owned()),
    ] {
        let at = text
            .find(&format!("\n{line}"))
            .unwrap_or_else(|| panic!("kubeadm's file has a line {line:?}"))
            + 1;
        let end = at + text[at..].find('\n').expect("a whole line");
        text.replace_range(at..end, &format!("{line}{value}"));
    }
    text
}

#[test]
fn kubeadms_kube_proxy_configuration_works_and_bad_fields_are_named() {
    // Refused before anything starts: every unsupported or unknown field named at once.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\nmode: ipvs\n\
         ipvs: {scheduler: rr}\nfrobnicate: true\n",
    )
    .unwrap();
    let out = Command::new(SVCNET)
        .args(["proxy", "--config", bad.to_str().unwrap()])
        .output()
        .expect("svcnet proxy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for want in [
        "invalid KubeProxyConfiguration",
        "mode: mode \"ipvs\" is not supported",
        "ipvs: not supported",
        "frobnicate: unknown field",
    ] {
        assert!(err.contains(want), "{want:?} missing from:\n{err}");
    }

    let c = Cluster::start_with(
        SVCNET,
        &[
            "--proxy-mode",
            "none",
            "--service-cidr",
            "127.122.0.0/16",
            "--dns-listen",
            "127.0.0.1:0",
        ],
    );
    let ip = start_red(&c);
    let (health, metrics) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let file = dir.path().join("config.conf");
    let kubeconfig = c.kubeconfig().display().to_string();
    std::fs::write(
        &file,
        kubeadm_config(&kubeconfig, &node_name(&c), health, metrics, "userspace"),
    )
    .unwrap();
    let proxy = start_proxy(&[], &["--config", file.to_str().unwrap()])
        .unwrap_or_else(|log| panic!("svcnet proxy --config did not start:\n{log}"));
    let addr: SocketAddr = format!("{ip}:80").parse().unwrap();
    assert!(
        eventually(WAIT, || http_get(addr, "/")
            .is_ok_and(|(code, b)| code == 200 && red_pod(&b).is_some())),
        "the ClusterIP answers\n{}",
        proxy.log()
    );
    let health_addr: SocketAddr = format!("127.0.0.1:{health}").parse().unwrap();
    assert!(eventually(WAIT, || http_get(health_addr, "/healthz")
        .is_ok_and(|(code, _)| code == 200)));
    let (code, _) =
        http_get(format!("127.0.0.1:{metrics}").parse().unwrap(), "/proxyMode").expect("proxyMode");
    assert_eq!(code, 200);
    let adj = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", proxy.pid())).unwrap_or_default();
    assert_eq!(adj.trim(), "500", "oomScoreAdj is honoured");
    assert!(
        !proxy.log().contains("WARN"),
        "kubeadm's file gives no warning:\n{}",
        proxy.log()
    );
}

#[test]
fn nftables_proxy_refuses_kube_proxys_rules_keeps_its_own_across_restarts_and_cleans_up() {
    let Some((ns, c, ip)) = nft_node_with_red(&[]) else {
        return;
    };
    let netns = ns.node.name.clone();
    let kubeconfig = c.kubeconfig().display().to_string();
    let node = node_name(&c);
    let prefix = ["ip", "netns", "exec", netns.as_str()];
    let args = [
        "--kubeconfig",
        &kubeconfig,
        "--hostname-override",
        &node,
        "--cluster-cidr",
        "127.244.0.0/16",
    ];
    let nft = |a: &[&str]| {
        let out = command_in(&netns, "nft").args(a).output().expect("nft");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let curl = || {
        let out = command_in(&netns, "curl")
            .args(["-sS", "--max-time", "2", &format!("http://{ip}/")])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).starts_with("red ")
    };

    // kube-proxy's table on the node: svcnet proxy says what to do instead of programming twice.
    nft(&["add", "table", "ip", "kube-proxy"]);
    let log = start_proxy(&prefix, &args)
        .err()
        .expect("svcnet proxy must refuse to start beside kube-proxy's rules");
    assert!(
        log.contains("kube-proxy's rules are on this node") && log.contains("kube-proxy --cleanup"),
        "{log}"
    );
    assert!(!nft(&["list", "tables"]).contains("svcnet"), "nothing programmed");
    nft(&["delete", "table", "ip", "kube-proxy"]);

    let mut proxy =
        start_proxy(&prefix, &args).unwrap_or_else(|log| panic!("svcnet proxy did not start:\n{log}"));
    assert!(
        eventually(WAIT, curl),
        "ClusterIP through nftables\n{}",
        proxy.log()
    );
    let status = proxy.stop().expect("exits on SIGTERM");
    assert!(status.success(), "{status}\n{}", proxy.log());
    // Stopped, its rules stay in the kernel: the Service keeps answering, as after a kube-proxy restart.
    assert!(curl(), "traffic goes on while the proxy is down");

    let out = command_in(&netns, SVCNET)
        .args(["proxy", "--cleanup"])
        .output()
        .expect("cleanup");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let tables = nft(&["list", "tables"]);
    assert!(
        !tables.contains("svcnet"),
        "--cleanup leaves no svcnet table: {tables}"
    );
    drop(c);
    drop(ns);
}

/// `kill -9` of `svcnet proxy` in nftables mode under a request loop, then a new one: its rules stay in the
/// kernel meanwhile, and the new process takes its table over (reads it back, changes nothing since
/// nothing changed) instead of deleting and loading it again. No request fails at any point, and the
/// table keeps its kernel handle (it was never recreated).
#[test]
fn nftables_proxy_killed_and_restarted_takes_its_table_over_without_a_failed_request() {
    let Some((ns, c, ip)) = nft_node_with_red(&["curl"]) else {
        return;
    };
    let netns = ns.node.name.clone();
    let kubeconfig = c.kubeconfig().display().to_string();
    let node = node_name(&c);
    let prefix = ["ip", "netns", "exec", netns.as_str()];
    let args = [
        "--kubeconfig",
        &kubeconfig,
        "--hostname-override",
        &node,
        "--proxy-mode",
        "nftables",
        "--cluster-cidr",
        "127.244.0.0/16",
    ];
    let handle = || {
        let out = command_in(&netns, "nft")
            .args(["-a", "list", "table", "ip", "svcnet"])
            .output()
            .expect("nft");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.lines()
            .next()
            .and_then(|l| l.split_once("# handle "))
            .map(|(_, h)| h.trim().to_string())
    };
    let first =
        start_proxy(&prefix, &args).unwrap_or_else(|log| panic!("svcnet proxy did not start:\n{log}"));
    let url = format!("http://{ip}/");
    let curl_ok = || {
        command_in(&netns, "curl")
            .args(["-sS", "--max-time", "2", &url])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).starts_with("red "))
    };
    assert!(
        eventually(WAIT, curl_ok),
        "ClusterIP through nftables\n{}",
        first.log()
    );
    let before = handle().expect("svcnet's table");

    // A request loop in the node's namespace, bounded in time: each request is a new connection.
    let script = format!(
        "end=$(($(date +%s) + 10)); ok=0; fail=0; \
         while [ $(date +%s) -lt $end ]; do \
           if curl -sS --max-time 2 {url} 2>/dev/null | grep -q '^red '; then ok=$((ok+1)); else fail=$((fail+1)); fi; \
         done; echo $ok $fail"
    );
    let load = command_in(&netns, "sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("request loop");
    std::thread::sleep(Duration::from_secs(2));
    let mut first = first;
    first.signal("-KILL");
    assert!(first.wait_exit(Duration::from_secs(10)).is_some(), "killed");
    std::thread::sleep(Duration::from_secs(1));
    let second =
        start_proxy(&prefix, &args).unwrap_or_else(|log| panic!("svcnet proxy did not restart:\n{log}"));
    assert!(
        eventually(WAIT, || second.log().contains("nftables tables taken over")),
        "the restarted proxy takes its table over\n{}",
        second.log()
    );
    let out = load.wait_with_output().expect("request loop");
    let counts = String::from_utf8_lossy(&out.stdout).into_owned();
    let (ok, fail): (u64, u64) = counts
        .split_once(' ')
        .and_then(|(a, b)| Some((a.trim().parse().ok()?, b.trim().parse().ok()?)))
        .unwrap_or_else(|| panic!("request loop said {counts:?}"));
    assert_eq!(fail, 0, "{ok} requests answered, {fail} failed\n{}", second.log());
    assert!(ok >= 20, "{ok} requests in 10 s");
    assert_eq!(
        handle().as_deref(),
        Some(before.as_str()),
        "the table was not recreated"
    );
    assert!(
        second.log().contains("sets=0 chains=0 elements=0"),
        "nothing had changed, so nothing was written\n{}",
        second.log()
    );
    drop(second);
    drop(c);
    drop(ns);
}
