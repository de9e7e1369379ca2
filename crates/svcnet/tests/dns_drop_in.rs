//! `svcnet dns` as a drop-in for CoreDNS: its own process, a kubeconfig and the cluster's Corefile,
//! against `svcnet up --no-dns` (a control plane without DNS):
//!
//! - kubeadm's default Corefile, unchanged, in a network namespace of the test's own (root; the server
//!   takes port 53 and CoreDNS's health, ready and metrics ports there): cluster answers with its `ttl`,
//!   `pods insecure`, reverse answers and `fallthrough` to the upstream of `/etc/resolv.conf`, `cache`'s
//!   TTL cap, `loadbalance`, `/health`, `/ready`, `/metrics`, and `lameduck` on SIGTERM;
//! - on loopback: a Corefile with an unknown plugin is refused naming it and its line, `reload` applies
//!   a changed Corefile and keeps the running one when the change is bad, and `loop` stops a server whose
//!   forwarding leads back to itself with CoreDNS's message.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use svcnet_testsupport::net::free_port;
use svcnet_testsupport::netns::{Netns, can_run, have};
use svcnet_testsupport::process::Process;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(60);

/// kubeadm's default Corefile (cmd/kubeadm/app/phases/addons/dns/manifests.go, 1.31), as the `coredns`
/// ConfigMap of a cluster made by kubeadm holds it (svcnet-dns's parser tests read the same file).
const KUBEADM_COREFILE: &str = include_str!("../../svcnet-dns/src/corefile/kubeadm.Corefile");

/// The upstream resolver of the namespace's `/etc/resolv.conf` ([::1]:53): answers every A question with
/// 192.0.2.99 and every PTR question with `upstream.example.`, both with TTL 3600.
const FAKE_UPSTREAM: &str = r#"
import socket, struct
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.bind(("::1", 53))
while True:
    q, peer = s.recvfrom(4096)
    if len(q) < 12:
        continue
    i = 12
    while q[i] != 0:
        i += q[i] + 1
    qtype = struct.unpack("!H", q[i + 1:i + 3])[0]
    question = q[12:i + 5]
    if qtype == 1:
        rdata = bytes([192, 0, 2, 99])
    elif qtype == 12:
        rdata = b"\x08upstream\x07example\x00"
    else:
        rdata = None
    flags = 0x8180
    header = struct.pack("!HHHHHH", struct.unpack("!H", q[:2])[0], flags, 1, 1 if rdata else 0, 0, 0)
    answer = b""
    if rdata:
        answer = b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 3600, len(rdata)) + rdata
    s.sendto(header + question + answer, peer)
"#;

/// `svcnet dns ARGS` behind `prefix`, once it says it is serving; `Err(status and log)` if it exits first.
fn start_dns(prefix: &[&str], args: &[&str]) -> Result<Process, String> {
    Process::start(SVCNET, prefix, &[&["dns"], args].concat())
}

/// A child process killed by PID when dropped.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/etc/netns/<ns>/resolv.conf`, which `ip netns exec` shows its commands as `/etc/resolv.conf`;
/// removed when dropped.
struct NetnsResolvConf(PathBuf);

impl NetnsResolvConf {
    fn new(ns: &str, text: &str) -> Self {
        let dir = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).expect("/etc/netns");
        std::fs::write(dir.join("resolv.conf"), text).expect("resolv.conf");
        NetnsResolvConf(dir)
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// dig's output for a question to `server` (`ip netns exec` behind `prefix`).
fn dig(prefix: &[&str], server: SocketAddr, args: &[&str]) -> String {
    let mut v: Vec<String> = prefix.iter().map(|s| s.to_string()).collect();
    v.push("dig".into());
    v.push(format!("@{}", server.ip()));
    v.extend([
        "-p".into(),
        server.port().to_string(),
        "+time=2".into(),
        "+tries=1".into(),
    ]);
    v.extend(args.iter().map(|s| s.to_string()));
    let out = Command::new(&v[0])
        .args(&v[1..])
        .output()
        .expect("dig (apt-get install bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The answer section as `(ttl, data)` pairs.
fn answers(prefix: &[&str], server: SocketAddr, args: &[&str]) -> Vec<(u32, String)> {
    let mut a = vec!["+noall", "+answer"];
    a.extend_from_slice(args);
    dig(prefix, server, &a)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(1)?.parse().ok()?, f.get(4)?.to_string()))
        })
        .collect()
}

/// `(status, body)` of an HTTP GET through curl in the namespace behind `prefix`.
fn http(prefix: &[&str], url: &str) -> (u16, String) {
    let mut v: Vec<&str> = prefix.to_vec();
    v.extend(["curl", "-s", "-m", "3", "-w", "\n%{http_code}", url]);
    let out = Command::new(v[0]).args(&v[1..]).output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn kubeadm_corefile_serves_the_cluster_unchanged() {
    if let Err(why) = can_run() {
        eprintln!("skipped: {why}");
        return;
    }
    if !have("dig", "-v") || !have("curl", "--version") || !have("python3", "--version") {
        eprintln!("skipped: needs dig, curl and python3");
        return;
    }
    let ns = Netns::new("corefile");
    let _resolv = NetnsResolvConf::new(&ns.name, "search example.org\nnameserver ::1\n");
    let prefix = ["ip", "netns", "exec", ns.name.as_str()];
    let c = Cluster::start_in_netns(SVCNET, &ns.name, &["--proxy-mode", "none", "--no-dns"]);
    let _upstream = Reaped(
        Command::new("ip")
            .args(["netns", "exec", &ns.name, "python3", "-c", FAKE_UPSTREAM])
            .spawn()
            .expect("fake upstream"),
    );
    // Pods that listen on nothing: in this namespace they share the node's ports with the DNS server.
    c.ok(&[
        "create",
        "deployment",
        "red",
        "--image=busybox",
        "--replicas=3",
        "--",
        "sleep",
        "600",
    ]);
    c.ok(&["expose", "deploy/red", "--port=80"]);
    c.ok(&[
        "expose",
        "deploy/red",
        "--name=red-headless",
        "--port=80",
        "--cluster-ip=None",
    ]);
    let dir = tempfile::tempdir().expect("tempdir");
    assert!(
        eventually(WAIT, || c.ready_pods("app=red").len() == 3),
        "{}",
        c.ok(&["get", "pods", "-o", "wide"])
    );
    let cluster_ip = c.get_json(&["svc", "red"])["spec"]["clusterIP"]
        .as_str()
        .expect("ClusterIP")
        .to_string();
    let corefile = dir.path().join("Corefile");
    std::fs::write(&corefile, KUBEADM_COREFILE).unwrap();
    let kubeconfig = c.kubeconfig().display().to_string();
    let mut dns = start_dns(
        &prefix,
        &[
            "--kubeconfig",
            &kubeconfig,
            "--conf",
            &corefile.display().to_string(),
        ],
    )
    .unwrap_or_else(|log| panic!("svcnet dns did not start:\n{log}"));
    let server: SocketAddr = "127.0.0.1:53".parse().unwrap();

    assert!(
        eventually(WAIT, || http(&prefix, "http://127.0.0.1:8181/ready")
            == (200, "OK".into())),
        "ready: {:?}\n{}",
        http(&prefix, "http://127.0.0.1:8181/ready"),
        dns.log()
    );
    assert_eq!(http(&prefix, "http://127.0.0.1:8080/health"), (200, "OK".into()));

    // The cluster zone with the Corefile's TTL.
    assert_eq!(
        answers(&prefix, server, &["red.default.svc.cluster.local"]),
        vec![(30, cluster_ip.clone())],
        "{}",
        dns.log()
    );
    // `pods insecure`: any dashed address answers.
    assert_eq!(
        answers(&prefix, server, &["1-2-3-4.default.pod.cluster.local"]),
        vec![(30, "1.2.3.4".to_string())]
    );
    // Reverse: cluster addresses from the cluster, others fall through to the upstream.
    assert_eq!(
        answers(&prefix, server, &["-x", &cluster_ip]),
        vec![(30, "red.default.svc.cluster.local.".to_string())]
    );
    assert_eq!(
        answers(&prefix, server, &["-x", "192.0.2.7"]),
        vec![(30, "upstream.example.".to_string())],
        "the upstream's PTR, its TTL capped by `cache 30`"
    );
    // Other names through `forward . /etc/resolv.conf`, TTL capped at 30 by the cache, and cached.
    for _ in 0..2 {
        let a = answers(&prefix, server, &["www.example.com"]);
        assert_eq!(a.len(), 1, "{a:?}\n{}", dns.log());
        assert_eq!(a[0].1, "192.0.2.99");
        assert!(a[0].0 <= 30, "TTL capped by `cache 30`: {a:?}");
    }
    // `loadbalance`: the headless Service's addresses come in rotating order.
    let firsts: std::collections::BTreeSet<String> = (0..6)
        .filter_map(|_| {
            answers(&prefix, server, &["red-headless.default.svc.cluster.local"])
                .first()
                .map(|a| a.1.clone())
        })
        .collect();
    assert!(firsts.len() > 1, "the first address rotates: {firsts:?}");

    let (code, metrics) = http(&prefix, "http://127.0.0.1:9153/metrics");
    assert_eq!(code, 200);
    for name in [
        "coredns_dns_requests_total",
        "coredns_dns_responses_total",
        "coredns_forward_requests_total",
        "coredns_cache_hits_total",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }

    // SIGTERM: not ready at once, DNS goes on for `lameduck 5s`, then a clean exit.
    let t0 = Instant::now();
    dns.signal("-TERM");
    assert!(
        eventually(Duration::from_secs(3), || http(
            &prefix,
            "http://127.0.0.1:8181/ready"
        )
        .0 == 503),
        "not ready while in lameduck"
    );
    assert_eq!(
        answers(&prefix, server, &["red.default.svc.cluster.local"]),
        vec![(30, cluster_ip)],
        "still answering in lameduck"
    );
    let status = dns
        .wait_exit(Duration::from_secs(15))
        .expect("exits after lameduck");
    assert!(status.success(), "{status}\n{}", dns.log());
    assert!(
        t0.elapsed() >= Duration::from_secs(4),
        "exited after {:?}, before lameduck ran out",
        t0.elapsed()
    );
}

/// A Corefile on loopback port `port`.
fn loopback_corefile(port: u16, body: &str) -> String {
    format!(".:{port} {{\n    bind 127.0.0.1\n{body}}}\n")
}

#[test]
fn a_corefile_is_checked_reloaded_and_loops_are_caught() {
    if !have("dig", "-v") {
        eprintln!("skipped: needs dig");
        return;
    }
    let c = Cluster::start_with(
        SVCNET,
        &[
            "--proxy-mode",
            "none",
            "--no-dns",
            "--service-cidr",
            "127.123.0.0/16",
        ],
    );
    c.ok(&["create", "service", "clusterip", "web", "--tcp=80"]);
    let ip = c.get_json(&["svc", "web"])["spec"]["clusterIP"]
        .as_str()
        .expect("ClusterIP")
        .to_string();
    let kubeconfig = c.kubeconfig().display().to_string();
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("Corefile");
    let conf_s = conf.display().to_string();
    let args = ["--kubeconfig", kubeconfig.as_str(), "--conf", conf_s.as_str()];

    // An unknown plugin: refused at start, naming it and its line.
    std::fs::write(
        &conf,
        loopback_corefile(
            free_port("127.0.0.1"),
            "    kubernetes cluster.local\n    rewrite name a b\n",
        ),
    )
    .unwrap();
    let err = start_dns(&[], &args).err().expect("refused");
    assert!(
        err.contains("Corefile:4 - Error during parsing: Unknown directive 'rewrite'"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // `reload`: a changed Corefile applies; a broken one is logged and the running one stays.
    let port = free_port("127.0.0.1");
    let ready = free_port("127.0.0.1");
    let server: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let with_ttl = |ttl: u32| {
        loopback_corefile(
            port,
            &format!(
                "    kubernetes cluster.local {{\n        ttl {ttl}\n    }}\n    ready 127.0.0.1:{ready}\n    \
                 reload 2s 1s\n"
            ),
        )
    };
    std::fs::write(&conf, with_ttl(5)).unwrap();
    let mut dns = start_dns(&[], &args).unwrap_or_else(|l| panic!("{l}"));
    let name = "web.default.svc.cluster.local";
    assert!(
        eventually(WAIT, || answers(&[], server, &[name]) == vec![(5, ip.clone())]),
        "{:?}\n{}",
        answers(&[], server, &[name]),
        dns.log()
    );
    std::fs::write(&conf, with_ttl(9)).unwrap();
    assert!(
        eventually(Duration::from_secs(20), || answers(&[], server, &[name])
            == vec![(9, ip.clone())]),
        "reloaded: {:?}\n{}",
        answers(&[], server, &[name]),
        dns.log()
    );
    std::fs::write(
        &conf,
        with_ttl(9).replace("reload 2s 1s", "reload 2s 1s\n    hosts"),
    )
    .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || dns.log().contains("reload failed")),
        "{}",
        dns.log()
    );
    assert!(dns.running(), "a bad Corefile does not stop the server");
    assert_eq!(answers(&[], server, &[name]), vec![(9, ip.clone())]);
    drop(dns);

    // `loop`: A forwards to B, which forwards back to A.
    let (pa, pb) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let conf_b = dir.path().join("Corefile.b");
    std::fs::write(
        &conf_b,
        loopback_corefile(
            pb,
            &format!("    kubernetes cluster.local\n    forward . 127.0.0.1:{pa}\n"),
        ),
    )
    .unwrap();
    let conf_b_s = conf_b.display().to_string();
    let _b =
        start_dns(&[], &["--kubeconfig", &kubeconfig, "--conf", &conf_b_s]).unwrap_or_else(|l| panic!("{l}"));
    std::fs::write(
        &conf,
        loopback_corefile(
            pa,
            &format!("    kubernetes cluster.local\n    forward . 127.0.0.1:{pb}\n    loop\n"),
        ),
    )
    .unwrap();
    let mut a = start_dns(&[], &args).unwrap_or_else(|l| panic!("{l}"));
    let status = a
        .wait_exit(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("a forwarding loop stops the server\n{}", a.log()));
    assert!(!status.success());
    let log = a.log();
    assert!(
        log.contains(&format!(
            "plugin/loop: Loop (127.0.0.1:{pa} -> :{pa}) detected for zone \".\""
        )),
        "{log}"
    );
}
