//! `svcnet-bench lab` (root): the multi-node lab as its users see it. Times `svcnet lab up` (every node
//! Ready) for a few node counts, and measures pod-to-pod traffic across nodes over each overlay
//! (`host-gw`, `vxlan`): bulk throughput of one TCP connection, request/answer round trips on one
//! connection and new connections, between a pod on node1 and a pod on node2; then, for each data plane,
//! the same through the pod's ClusterIP against the direct path, in one lab. The traffic runs in Python in real pods (the
//! sender inside the pod's network namespace through `svcnet lab exec`), so the figures compare the
//! overlays with each other rather than giving the kernel's ceiling. Every lab is deleted at the end,
//! also on failure; every loop is bounded.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;

use crate::session::{median_of, ms, percentile, row, table_header};

/// Target time for `lab up` of 3 nodes (printed, not asserted).
const TARGET_UP_3: &str = "≤ 10 s";
/// Target vxlan bulk throughput relative to host-gw (printed, not asserted).
const TARGET_VXLAN_RATIO: &str = "≥ 0.7×";

/// `svcnet-bench lab`.
#[derive(Args)]
pub(crate) struct LabArgs {
    /// Node counts whose `lab up` is timed.
    #[arg(long, value_delimiter = ',', default_value = "3,10")]
    nodes: Vec<usize>,
    /// Rounds of each measurement; the median is printed.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// MiB per bulk transfer.
    #[arg(long, default_value_t = 64)]
    mib: usize,
    /// Round trips per latency run.
    #[arg(long, default_value_t = 2000)]
    round_trips: usize,
    /// Which measurements: `up`, `overlays`, `failure`, `clusterip` (comma-separated; default all).
    #[arg(long, value_delimiter = ',', default_value = "up,overlays,failure,clusterip")]
    parts: Vec<String>,
    /// New connections a second to a NodePort while a node is stopped (the node-failure measurement).
    #[arg(long, default_value_t = 200)]
    failover_rate: u32,
}

/// The pod on node2: counts what a connection on 9000 sends and answers with the count; echoes every
/// byte on 9001.
const SINK: &str = r#"
import socket, threading
def serve(port, handle):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(16)
    while True:
        c, _ = s.accept()
        threading.Thread(target=handle, args=(c,), daemon=True).start()
def count(c):
    n = 0
    while True:
        d = c.recv(1 << 20)
        if not d:
            break
        n += len(d)
    c.sendall(str(n).encode())
    c.close()
def echo(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    while True:
        d = c.recv(64)
        if not d:
            break
        c.sendall(d)
    c.close()
threading.Thread(target=serve, args=(9001, echo), daemon=True).start()
serve(9000, count)
"#;

/// Run inside the pod on node1: `IP MIB ROUNDS ROUND_TRIPS`; prints JSON with each bulk run's Gbit/s,
/// every round trip's microseconds on one connection, and new connections (one round trip each) per
/// second over ROUND_TRIPS connections (at most 20 s).
const CLIENT: &str = r#"
import json, socket, sys, time
ip, mib, rounds, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
buf = b"x" * (1 << 20)
bulk = []
for _ in range(rounds):
    s = socket.create_connection((ip, 9000), timeout=30)
    t = time.monotonic()
    for _ in range(mib):
        s.sendall(buf)
    s.shutdown(socket.SHUT_WR)
    got = int(s.recv(100).decode())
    dt = time.monotonic() - t
    s.close()
    if got != mib << 20:
        raise SystemExit("sent %d bytes, the sink counted %d" % (mib << 20, got))
    bulk.append(got * 8 / dt / 1e9)
s = socket.create_connection((ip, 9001), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtt = []
for _ in range(n):
    t = time.monotonic_ns()
    s.sendall(b"p")
    if s.recv(1) != b"p":
        raise SystemExit("the echo server closed")
    rtt.append((time.monotonic_ns() - t) / 1000.0)
s.close()
t = time.monotonic()
conns = 0
while conns < n and time.monotonic() - t < 20:
    c = socket.create_connection((ip, 9001), timeout=5)
    c.sendall(b"p")
    c.recv(1)
    c.close()
    conns += 1
print(json.dumps({"bulk_gbps": bulk, "rtt_us": rtt, "conns_per_s": conns / (time.monotonic() - t)}))
"#;

/// A lab of the benchmark's own; `svcnet lab down` on drop.
struct BenchLab<'a> {
    svcnet: &'a Path,
    root: &'a Path,
    name: String,
}

impl BenchLab<'_> {
    fn lab(&self, command: &str, rest: &[&str]) -> Result<Output> {
        Command::new(self.svcnet)
            .args(["lab", command, "--name", &self.name])
            .arg("--root")
            .arg(self.root)
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running svcnet lab {command}"))
    }

    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", self.root.join(&self.name).join("kubeconfig"))
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "kubectl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for BenchLab<'_> {
    fn drop(&mut self) {
        let _ = self.lab("down", &[]);
    }
}

/// Brings a lab up; how long `svcnet lab up` took.
fn up<'a>(svcnet: &'a Path, root: &'a Path, name: &str, args: &[&str]) -> Result<(BenchLab<'a>, Duration)> {
    let lab = BenchLab {
        svcnet,
        root,
        name: name.to_string(),
    };
    let start = Instant::now();
    let out = lab.lab("up", args)?;
    let took = start.elapsed();
    if !out.status.success() {
        bail!(
            "svcnet lab up {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok((lab, took))
}

fn pod(name: &str, node: &str, command: &[&str]) -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "python:3", "command": command}],
        },
    })
    .to_string()
}

/// One overlay's pod-to-pod figures.
struct Traffic {
    bulk_gbps: Vec<f64>,
    rtt: Vec<Duration>,
    conns_per_s: f64,
}

/// A 2-node lab with the sink pod on node2 (behind the Service `sink`) and a pod on node1 to send from.
struct TrafficLab<'a> {
    lab: BenchLab<'a>,
    netns: String,
    sink_ip: String,
    cluster_ip: String,
}

fn traffic_lab<'a>(svcnet: &'a Path, root: &'a Path, name: &str, flags: &[&str]) -> Result<TrafficLab<'a>> {
    let mut up_flags = vec!["--nodes", "2"];
    up_flags.extend_from_slice(flags);
    let (lab, _) = up(svcnet, root, name, &up_flags)?;
    let mut sink =
        serde_json::from_str::<serde_json::Value>(&pod("sink", "node2", &["python3", "-c", SINK]))?;
    sink["metadata"]["labels"] = serde_json::json!({"app": "sink"});
    lab.kubectl(&["apply", "-f", "-"], Some(&sink.to_string()))?;
    lab.kubectl(
        &["apply", "-f", "-"],
        Some(&pod("runner", "node1", &["sleep", "3600"])),
    )?;
    let service = serde_json::json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "sink", "namespace": "default"},
        "spec": {"selector": {"app": "sink"}, "ports": [
            {"name": "bulk", "port": 9000}, {"name": "echo", "port": 9001}]},
    });
    lab.kubectl(&["apply", "-f", "-"], Some(&service.to_string()))?;
    lab.kubectl(
        &[
            "wait",
            "--for=condition=Ready",
            "pod/sink",
            "pod/runner",
            "--timeout=60s",
        ],
        None,
    )?;
    let sink_ip = lab.kubectl(&["get", "pod", "sink", "-o", "jsonpath={.status.podIP}"], None)?;
    let cluster_ip = lab.kubectl(
        &["get", "service", "sink", "-o", "jsonpath={.spec.clusterIP}"],
        None,
    )?;
    let uid = lab.kubectl(&["get", "pod", "runner", "-o", "jsonpath={.metadata.uid}"], None)?;
    // The agent names a pod's network namespace after the first 8 hex digits of its uid.
    let netns = format!("svcnet-{}", uid.get(..8).context("a pod uid")?);
    Ok(TrafficLab {
        lab,
        netns,
        sink_ip,
        cluster_ip,
    })
}

/// The client run from the pod on node1 to `ip` (the sink's pod IP or the Service's ClusterIP).
fn traffic(t: &TrafficLab, ip: &str, args: &LabArgs) -> Result<Traffic> {
    let (lab, netns) = (&t.lab, &t.netns);
    let rounds = args.rounds.max(1).to_string();
    let (mib, trips) = (args.mib.max(1).to_string(), args.round_trips.max(1).to_string());
    // The sink (no probe) and the Service's data plane need a moment after the pod is Ready: retried for
    // up to 10 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let out = loop {
        let out = lab.lab(
            "exec",
            &[
                "node1", "--", "ip", "netns", "exec", netns, "python3", "-c", CLIENT, ip, &mib, &rounds,
                &trips,
            ],
        )?;
        if out.status.success() || Instant::now() >= deadline {
            break out;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    if !out.status.success() {
        bail!(
            "the traffic run failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("the traffic run's JSON")?;
    let nums = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_f64())
            .collect()
    };
    Ok(Traffic {
        bulk_gbps: nums("bulk_gbps"),
        rtt: nums("rtt_us")
            .into_iter()
            .map(|us| Duration::from_nanos((us * 1000.0) as u64))
            .collect(),
        conns_per_s: v["conns_per_s"].as_f64().unwrap_or(0.0),
    })
}

fn print_traffic(what: &str, t: &Traffic, args: &LabArgs) {
    let mut rtt = t.rtt.clone();
    rtt.sort();
    row(
        &format!("{what}: one connection, {} MiB (median)", args.mib),
        &format!("{:.2} Gbit/s", median(&t.bulk_gbps)),
        "—",
    );
    row(
        &format!("{what}: round trip on one connection, p50 / p99"),
        &format!("{} / {}", us(percentile(&rtt, 50.0)), us(percentile(&rtt, 99.0))),
        "—",
    );
    row(
        &format!("{what}: new connections, one round trip each"),
        &format!("{:.0} /s", t.conns_per_s),
        "—",
    );
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

fn us(d: Duration) -> String {
    format!("{:.0} µs", d.as_secs_f64() * 1e6)
}

/// Runs the lab benchmark and prints its table.
pub(crate) fn run(args: LabArgs, svcnet: &Path) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        bail!("svcnet-bench lab needs root (it builds network namespaces)");
    }
    let root_dir = tempfile::tempdir().context("a directory for the labs")?;
    let root: PathBuf = root_dir.path().to_path_buf();
    for p in &args.parts {
        if !["up", "overlays", "failure", "clusterip"].contains(&p.as_str()) {
            bail!("unknown part {p:?}: use up, overlays, failure or clusterip");
        }
    }
    let part = |p: &str| args.parts.iter().any(|x| x == p);
    table_header();
    for &n in args.nodes.iter().filter(|_| part("up")) {
        let mut times = Vec::new();
        for _ in 0..args.rounds.max(1) {
            let (lab, took) = up(svcnet, &root, "bench-up", &["--nodes", &n.to_string()])?;
            drop(lab);
            times.push(took);
        }
        let target = if n == 3 { TARGET_UP_3 } else { "—" };
        row(
            &format!("`lab up`, {n} nodes, every node Ready (median)"),
            &ms(median_of(&times)),
            target,
        );
    }
    let mut bulk = Vec::new();
    for overlay in ["host-gw", "vxlan"].into_iter().filter(|_| part("overlays")) {
        let lab = traffic_lab(
            svcnet,
            &root,
            &format!("bench-{overlay}"),
            &["--overlay", overlay],
        )?;
        let t = traffic(&lab, &lab.sink_ip, &args)?;
        drop(lab);
        let gbps = median(&t.bulk_gbps);
        bulk.push(gbps);
        print_traffic(&format!("pod → pod across nodes, {overlay}"), &t, &args);
    }
    if bulk.len() == 2 && bulk[0] > 0.0 {
        row(
            "vxlan bulk throughput relative to host-gw",
            &format!("{:.2}×", bulk[1] / bulk[0]),
            TARGET_VXLAN_RATIO,
        );
    }
    for mode in ["nftables", "userspace"].into_iter().filter(|_| part("failure")) {
        node_failure(svcnet, &root, mode, &args)?;
    }
    // The ClusterIP path against the direct one, in the same lab, for each data plane.
    for mode in ["nftables", "userspace"]
        .into_iter()
        .filter(|_| part("clusterip"))
    {
        let lab = traffic_lab(svcnet, &root, &format!("bench-{mode}"), &["--proxy-mode", mode])?;
        let direct = traffic(&lab, &lab.sink_ip, &args)?;
        let service = traffic(&lab, &lab.cluster_ip, &args)?;
        drop(lab);
        print_traffic(&format!("{mode}: pod → pod across nodes, direct"), &direct, &args);
        print_traffic(
            &format!("{mode}: pod → ClusterIP → pod across nodes"),
            &service,
            &args,
        );
        let p50 = |t: &Traffic| {
            let mut r = t.rtt.clone();
            r.sort();
            percentile(&r, 50.0).as_secs_f64()
        };
        let ratio = |a: f64, b: f64| {
            if b > 0.0 {
                format!("{:.2}×", a / b)
            } else {
                "—".into()
            }
        };
        let target = if mode == "nftables" {
            "≥ 0.9× (keepalive)"
        } else {
            "—"
        };
        row(
            &format!("{mode}: ClusterIP / direct — bulk, round trips per second, new connections"),
            &format!(
                "{} / {} / {}",
                ratio(median(&service.bulk_gbps), median(&direct.bulk_gbps)),
                ratio(p50(&direct), p50(&service)),
                ratio(service.conns_per_s, direct.conns_per_s)
            ),
            target,
        );
    }
    Ok(())
}

/// The lab tests' short node-failure settings: Leases of 2 s, a grace period of 4 s checked every 250 ms
/// (kube-controller-manager's defaults are 40 s and 5 s, the kubelet's Lease 40 s).
const FAST_FAILURE: &[&str] = &[
    "--control-plane-flag=--node-monitor-grace-period=4s",
    "--control-plane-flag=--node-monitor-period=250ms",
    "--agent-flag=--node-lease-duration-seconds=2",
];

/// Unix seconds, the clock the load generator stamps its requests with.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// How long traffic still goes to a node after it dies: a 3-node lab with the short settings, echo pods
/// on node2 and node3 behind a NodePort, the outside client opening `--failover-rate` connections a
/// second to node1's NodePort while `lab stop-node node3` kills node3 five seconds in. Prints when node3's
/// endpoint turned not ready in the EndpointSlice, the last failed request (a request sent to the dead
/// node; the userspace proxy retries those on another endpoint, so its clients see none) and how many
/// failed.
fn node_failure(svcnet: &Path, root: &Path, mode: &str, args: &LabArgs) -> Result<()> {
    let mut flags = vec!["--nodes", "3", "--proxy-mode", mode];
    flags.extend_from_slice(FAST_FAILURE);
    let (lab, _) = up(svcnet, root, &format!("bench-fail-{mode}"), &flags)?;
    for (name, node) in [("red-2", "node2"), ("red-3", "node3")] {
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": {"app": "red"}},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "image": "python:3",
                    "command": ["python3", "-c", svcnet_testsupport::multinode::ECHO_SERVER, name, "8080"],
                    "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}}],
            },
        });
        lab.kubectl(&["apply", "-f", "-"], Some(&manifest.to_string()))?;
    }
    let service = r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "red", "namespace": "default"},
 "spec": {"type": "NodePort", "selector": {"app": "red"}, "ports": [{"port": 80, "targetPort": 8080}]}}"#;
    lab.kubectl(&["apply", "-f", "-"], Some(service))?;
    lab.kubectl(
        &[
            "wait",
            "--for=condition=Ready",
            "pod/red-2",
            "pod/red-3",
            "--timeout=60s",
        ],
        None,
    )?;
    let node_port = lab
        .kubectl(
            &[
                "get",
                "service",
                "red",
                "-o",
                "jsonpath={.spec.ports[0].nodePort}",
            ],
            None,
        )?
        .trim()
        .to_string();
    let seconds = 20.0;
    let mut loader = Command::new(lab.svcnet)
        .args(["lab", "exec", "--name", &lab.name])
        .arg("--root")
        .arg(lab.root)
        .args(["client", "--", "timeout", "120", "python3", "-c"])
        .arg(svcnet_testsupport::multinode::LOADER)
        .args(["172.18.0.11", &node_port, &seconds.to_string()])
        .args([args.failover_rate.to_string(), "2".to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the load generator in the client")?;
    std::thread::sleep(Duration::from_secs(5));
    let stopped = unix_now();
    let out = lab.lab("stop-node", &["node3"])?;
    if !out.status.success() {
        let _ = loader.kill();
        let _ = loader.wait();
        bail!(
            "lab stop-node node3: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    // When the EndpointSlice says node3's endpoint is not ready (from then on no data plane picks it).
    let mut not_ready = None;
    while not_ready.is_none() && unix_now() - stopped < seconds {
        let slices = lab.kubectl(
            &[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=red",
                "-o",
                "json",
            ],
            None,
        )?;
        let v: serde_json::Value = serde_json::from_str(&slices).unwrap_or_default();
        let gone = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["targetRef"]["name"] == "red-3")
            .all(|e| e["conditions"]["ready"] == false);
        if gone {
            not_ready = Some(unix_now() - stopped);
        } else {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let out = loader.wait_with_output().context("the load generator")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let report: serde_json::Value = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .with_context(|| format!("the load generator's report: {text:?}"))?;
    let started = report["started"].as_u64().unwrap_or(0);
    let failures: Vec<f64> = report["failures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f[0].as_f64())
        .collect();
    let last_failure = failures
        .iter()
        .copied()
        .fold(None, |m: Option<f64>, t| Some(m.map_or(t, |m| m.max(t))));
    let secs = |t: Option<f64>| t.map_or("—".to_string(), |t| format!("{t:.2} s"));
    row(
        &format!("{mode}: `lab stop-node` → the dead node's endpoint not ready (lease 2 s, grace 4 s)"),
        &secs(not_ready),
        "≤ 5 s",
    );
    row(
        &format!(
            "{mode}: `lab stop-node` → last request sent to the dead node; failed of started ({} req/s)",
            args.failover_rate
        ),
        &format!(
            "{}; {} of {started}",
            secs(last_failure.map(|t| t - stopped)),
            failures.len()
        ),
        "—",
    );
    drop(lab);
    Ok(())
}
