//! What a pod sees of Service traffic and of itself, as Kubernetes' e2e suite asserts it, on both data
//! planes and both pod networks:
//!
//! - the backend sees the client pod's own IP through a ClusterIP, TCP and UDP (`service.go`: "should preserve source
//!   pod IP for traffic thru service cluster IP"; for nftables this proves pod traffic is not
//!   masqueraded);
//! - a Service without endpoints refuses `connect()` with ECONNREFUSED, and accepts once an endpoint is
//!   ready ("should be rejected when no endpoints exist");
//! - a pod reaches itself through its own Service ("should allow pods to hairpin back to themselves
//!   through services");
//! - `hostname` and `getent hosts $(hostname)` inside the pod answer with its hostname and the kubelet's
//!   hosts entry, `hostAliases` included (`dns.go`: "should provide DNS for pods for Hostname").
//!
//! Every pod runs one small Python program: a server on 8080, TCP and UDP, answering each connection or
//! datagram with `<HOSTNAME> <peer IP>`, and a bounded client loop that connects to each target Service
//! from the pod's own address (sends a datagram for `udp…` labels) and logs `<label> ok <answer>` or
//! `<label> err <errno>`. The test reads the logs with kubectl.
//! Without root (netns pod network, nftables) the tests say they are skipped and pass.

use std::time::{Duration, Instant};

use serde_json::json;
use svcnet_testsupport::netns::{Namespaces, POD_NETWORK_FLAGS, can_run, is_root};
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(90);

/// The pods' program. Arguments: `LABEL=IP:PORT` targets. Bounded: 1200 rounds of at most one connect per
/// target (2 s timeout each), 0.3 s apart.
const PROGRAM: &str = r#"
import errno, os, socket, subprocess, sys, threading, time
me, ip = os.environ.get("HOSTNAME", "?"), os.environ["POD_IP"]
def serve():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((ip, 8080))
    s.listen(64)
    while True:
        c, a = s.accept()
        try:
            c.sendall(("%s %s\n" % (me, a[0])).encode())
        except OSError:
            pass
        c.close()
def serve_udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((ip, 8080))
    while True:
        _, a = u.recvfrom(200)
        u.sendto(("%s %s\n" % (me, a[0])).encode(), a)
threading.Thread(target=serve, daemon=True).start()
threading.Thread(target=serve_udp, daemon=True).start()
def getent(name):
    out = subprocess.run(["getent", "hosts", name], capture_output=True, text=True).stdout
    return " ".join(out.split())
print("hostname", socket.gethostname(), flush=True)
print("getent", getent(socket.gethostname()), flush=True)
print("alias", getent("foo.remote"), flush=True)
targets = [t.split("=", 1) for t in sys.argv[1:]]
for _ in range(1200):
    for label, addr in targets:
        host, port = addr.rsplit(":", 1)
        try:
            if label.startswith("udp"):
                c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                c.bind((ip, 0))
                c.settimeout(2)
                c.sendto(b"x", (host, int(port)))
            else:
                c = socket.create_connection((host, int(port)), timeout=2, source_address=(ip, 0))
                c.settimeout(2)
            print(label, "ok", c.recv(200).decode().strip(), flush=True)
            c.close()
        except OSError as e:
            print(label, "err", errno.errorcode.get(e.errno, type(e).__name__), flush=True)
    time.sleep(0.3)
"#;

/// A pod running [`PROGRAM`] against `targets`, labelled `app=<app>`; `extra` is merged into its spec.
fn pod(name: &str, app: &str, targets: &[String], extra: serde_json::Value) -> serde_json::Value {
    let mut args = vec![json!("-c"), json!(PROGRAM)];
    args.extend(targets.iter().map(|t| json!(t)));
    let mut spec = json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "main", "image": "python", "command": ["python3"], "args": args}],
    });
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        spec.extend(extra.clone());
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}}, "spec": spec})
}

/// A ClusterIP Service `name` on port 80, TCP and UDP, for the pods `app=<app>`, port 8080.
fn service(name: &str, app: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
    "spec": {"selector": {"app": app}, "ports": [
        {"name": "tcp", "port": 80, "targetPort": 8080},
        {"name": "udp", "port": 80, "targetPort": 8080, "protocol": "UDP"},
    ]}})
}

fn apply(c: &Cluster, obj: &serde_json::Value) {
    c.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["apply", "-f", "-"],
        Some(&obj.to_string()),
    );
}

fn cluster_ip(c: &Cluster, svc: &str) -> String {
    c.get_json(&["svc", svc])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string()
}

fn pod_ip(c: &Cluster, pod: &str) -> String {
    let mut ip = String::new();
    let ok = eventually(WAIT, || {
        ip = c.get_json(&["pod", pod])["status"]["podIP"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        !ip.is_empty()
    });
    assert!(ok, "{pod} has an IP:\n{}", c.log());
    ip
}

fn logs(c: &Cluster, pod: &str) -> String {
    let out = c.kubectl_v(svcnet_testsupport::kubectl::NEWEST, &["logs", pod], None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The answers logged for `label`, in order.
fn answers(log: &str, label: &str) -> Vec<String> {
    let prefix = format!("{label} ");
    log.lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
        .collect()
}

/// The first line of `log` starting with `key `, without it.
fn line(log: &str, key: &str) -> Option<String> {
    let prefix = format!("{key} ");
    log.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(str::to_string)
}

/// Waits until `pod`'s log satisfies `f`; returns the log.
fn wait_log(c: &Cluster, pod: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
    let mut log = String::new();
    let ok = eventually(WAIT, || {
        log = logs(c, pod);
        f(&log)
    });
    assert!(ok, "{what}:\n{log}\n{}", tail(&c.log(), 40));
    log
}

fn tail(s: &str, n: usize) -> String {
    svcnet_testsupport::cluster::tail(s, n)
}

/// The scenario; `sandbox`: whether pods get their own hostname and hosts file here (root).
fn scenario(c: &Cluster, what: &str, sandbox: bool) {
    for (svc, app) in [("srv", "srv"), ("cli", "client"), ("empty", "late")] {
        apply(c, &service(svc, app));
    }
    let target = |label: &str, svc: &str| format!("{label}={}:80", cluster_ip(c, svc));
    let targets = [
        target("srv", "srv"),
        target("udpsrv", "srv"),
        target("self", "cli"),
        target("empty", "empty"),
    ];
    apply(c, &pod("srv-a", "srv", &[], json!({})));
    apply(
        c,
        &pod(
            "client",
            "client",
            &targets,
            json!({"hostname": "cli", "subdomain": "grp",
                   "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.remote", "bar.remote"]}]}),
        ),
    );
    let client_ip = pod_ip(c, "client");

    // Source IP: the backend sees the client pod's own address, every time.
    let log = wait_log(c, "client", "srv answers", |l| {
        answers(l, "srv").iter().filter(|a| a.starts_with("ok ")).count() >= 5
    });
    let ok: Vec<_> = answers(&log, "srv")
        .into_iter()
        .filter(|a| a.starts_with("ok "))
        .collect();
    let want = format!("ok srv-a {client_ip}");
    assert!(
        ok.iter().all(|a| *a == want),
        "{what}: the backend must see the client pod's IP {client_ip}: {ok:?}"
    );

    // UDP too.
    let log = wait_log(c, "client", "udp srv answers", |l| {
        answers(l, "udpsrv")
            .iter()
            .filter(|a| a.starts_with("ok "))
            .count()
            >= 3
    });
    let ok: Vec<_> = answers(&log, "udpsrv")
        .into_iter()
        .filter(|a| a.starts_with("ok "))
        .collect();
    assert!(
        ok.iter().all(|a| *a == want),
        "{what}: the UDP backend must see the client pod's IP {client_ip}: {ok:?}"
    );

    // Hairpin: the pod reaches itself through its own Service.
    wait_log(
        c,
        "client",
        &format!("{what}: hairpin through the Service"),
        |l| answers(l, "self").iter().any(|a| a.starts_with("ok cli ")),
    );

    // No endpoints: connect() refused (never accepted then reset), until an endpoint is ready.
    let log = wait_log(c, "client", "empty refused", |l| answers(l, "empty").len() >= 3);
    let empty = answers(&log, "empty");
    assert!(
        empty.iter().all(|a| a == "err ECONNREFUSED"),
        "{what}: connect() to a Service without endpoints must be refused: {empty:?}"
    );
    apply(c, &pod("late", "late", &[], json!({})));
    assert!(
        eventually(WAIT, || c.ready_pods("app=late").len() == 1),
        "late ready:\n{}",
        c.log()
    );
    let ready_at = Instant::now();
    let log = wait_log(c, "client", "empty answers once late is ready", |l| {
        answers(l, "empty").iter().any(|a| a.starts_with("ok late "))
    });
    assert!(
        ready_at.elapsed() < Duration::from_secs(15),
        "{what}: the Service answered {:?} after its endpoint was ready: {:?}\n{}",
        ready_at.elapsed(),
        answers(&log, "empty"),
        tail(&c.log(), 60)
    );
    let after: Vec<_> = answers(&log, "empty")
        .into_iter()
        .skip_while(|a| !a.starts_with("ok "))
        .collect();
    assert!(
        after.iter().all(|a| a.starts_with("ok late ")),
        "{what}: once answering, always: {after:?}"
    );

    // The pod's own name.
    let log = logs(c, "client");
    if sandbox {
        assert_eq!(line(&log, "hostname").as_deref(), Some("cli"), "{what}:\n{log}");
        assert_eq!(
            line(&log, "getent").as_deref(),
            Some(format!("{client_ip} cli.grp.default.svc.cluster.local cli").as_str()),
            "{what}: getent hosts $(hostname)\n{log}"
        );
        assert_eq!(
            line(&log, "alias").as_deref(),
            Some("10.1.2.3 foo.remote bar.remote"),
            "{what}: hostAliases\n{log}"
        );
    }
    // HOSTNAME names the pod everywhere (the server answers with it).
    assert!(log.contains("self ok cli "), "{log}");
}

/// Flags for a host-pod-network cluster whose ranges are this test's own.
const HOST_FLAGS: [&str; 6] = [
    "--service-cidr",
    "127.120.0.0/16",
    "--cluster-cidr",
    "127.121.0.0/16",
    "--dns-listen",
    "127.0.0.1:0",
];

#[test]
fn host_pods_on_the_userspace_proxy() {
    let c = Cluster::start_with(SVCNET, &HOST_FLAGS);
    scenario(&c, "host pods, userspace", is_root());
}

fn cannot_run(mode: &str) -> Option<String> {
    if let Err(why) = can_run() {
        return Some(why);
    }
    if mode == "nftables"
        && std::process::Command::new("nft")
            .arg("--version")
            .output()
            .is_err()
    {
        return Some("the nftables data plane needs nft".into());
    }
    None
}

#[test]
fn host_pods_on_nftables() {
    if let Some(why) = cannot_run("nftables") {
        println!("skipped: {why}");
        return;
    }
    let ns = Namespaces::create();
    let c = Cluster::start_in_netns(SVCNET, &ns.node.name, &["--proxy-mode", "nftables"]);
    scenario(&c, "host pods, nftables", true);
    drop(c);
    drop(ns);
}

fn netns_pods(mode: &str) {
    if let Some(why) = cannot_run(mode) {
        println!("skipped: {why}");
        return;
    }
    let ns = Namespaces::create();
    let mut flags = POD_NETWORK_FLAGS.to_vec();
    flags.extend(["--proxy-mode", mode]);
    let c = Cluster::start_in_netns(SVCNET, &ns.node.name, &flags);
    scenario(&c, &format!("netns pods, {mode}"), true);
    drop(c);
    drop(ns);
}

#[test]
fn netns_pods_on_the_userspace_proxy() {
    netns_pods("userspace");
}

#[test]
fn netns_pods_on_nftables() {
    netns_pods("nftables");
}
