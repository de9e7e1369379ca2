//! Scale benchmark of the nftables backend, run as root:
//!
//! ```sh
//! cargo run --release -p svcnet-nft --example scale -- [--services 10,1000,10000] [--endpoints 10]
//!     [--updates 50] [--dur 5] [--lat-dur 3] [--conns 64] [--rounds 3] [--no-traffic]
//! ```
//!
//! For each Service count it creates a network namespace (`svcnet-nft-<random>-bench`) and re-runs
//! itself inside it (`ip netns exec`), so that every `nft`, `wrk` and socket of the measurement lives in
//! the namespace and nothing touches the machine's own network. Inside: a veth interface holds the
//! backends' address (10.0.0.1) and the route for the Service range, and three small HTTP servers (std
//! threads in this process) serve a 64-byte body on 10.0.0.1:18081-18083. Service 0 (ClusterIP
//! 10.96.0.1:80) has those three as endpoints; every other Service has `--endpoints` made-up ones.
//!
//! Measured: (a) the cold sync (`sync_all` into an empty namespace; median of three), how long after it
//! starts an endpoint change that arrived meanwhile is live, and restarts (a new backend's `sync_all`
//! takes the tables over: unchanged, and with 1% of the Services changed), each with the CPU time it cost
//! (this process and its `nft` children), (b) one-endpoint update (`apply` of one changed port:
//! render + `nft -f -`), (c) with `wrk` (Debian package `wrk`, pinned to CPU 0; servers on CPU 1):
//! keepalive and new-connection throughput and 1-connection latency direct to a backend, through a single
//! hand-written nft DNAT rule in a table of its own (as `/work/shared/bench/l4/run.sh` does) and through
//! the ClusterIP, alternating for `--rounds` rounds so that load from elsewhere hits all three alike. Every load run is bounded by `wrk -d` and `timeout`; the
//! namespace is deleted at the end, also on failure.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use svcnet_dataplane::{Backend, Change, Endpoint, Protocol, ServicePort, ServicePortName};
use svcnet_nft::{NftBackend, NftConfig, render_changes_deferred};

struct Args {
    services: Vec<usize>,
    endpoints: usize,
    updates: usize,
    dur: u32,
    lat_dur: u32,
    conns: u32,
    rounds: u32,
    traffic: bool,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> (Args, Option<String>) {
    let mut a = Args {
        services: vec![10, 1000, 10000],
        endpoints: 10,
        updates: 50,
        dur: 5,
        lat_dur: 3,
        conns: 64,
        rounds: 3,
        traffic: true,
    };
    let mut inner = None;
    while let Some(k) = it.next() {
        let mut v = || it.next().expect("missing value");
        match k.as_str() {
            "--services" => a.services = v().split(',').map(|s| s.parse().unwrap()).collect(),
            "--endpoints" => a.endpoints = v().parse().unwrap(),
            "--updates" => a.updates = v().parse().unwrap(),
            "--dur" => a.dur = v().parse().unwrap(),
            "--lat-dur" => a.lat_dur = v().parse().unwrap(),
            "--conns" => a.conns = v().parse().unwrap(),
            "--rounds" => a.rounds = v().parse().unwrap(),
            "--no-traffic" => a.traffic = false,
            "--inner" => inner = Some(v()),
            other => panic!("unknown argument {other}"),
        }
    }
    (a, inner)
}

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn main() {
    let (args, inner) = parse_args(std::env::args().skip(1));
    match inner.as_deref() {
        Some(mode) if mode.starts_with("dump:") => {
            // The full ruleset for N Services, for looking at nft by hand.
            let n: usize = mode[5..].parse().unwrap();
            let ports: Vec<_> = (0..n)
                .map(|i| service(i, fake_eps(i, args.endpoints, 0)))
                .collect();
            print!("{}", svcnet_nft::render_full(&ports, &NftConfig::default()));
        }
        Some(mode) => inner_main(&args, mode),
        None => outer_main(&args),
    }
}

/// Deletes the namespace when dropped (also on panic).
struct Ns(String);
impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn outer_main(args: &Args) {
    let me = std::env::current_exe().unwrap();
    let pass = |extra: &[String]| -> Vec<String> {
        let mut v = vec![
            "--endpoints".into(),
            args.endpoints.to_string(),
            "--updates".into(),
            args.updates.to_string(),
            "--dur".into(),
            args.dur.to_string(),
            "--lat-dur".into(),
            args.lat_dur.to_string(),
            "--conns".into(),
            args.conns.to_string(),
            "--rounds".into(),
            args.rounds.to_string(),
        ];
        if !args.traffic {
            v.push("--no-traffic".into());
        }
        v.extend_from_slice(extra);
        v
    };
    let modes: Vec<String> = args.services.iter().map(|n| n.to_string()).collect();
    println!(
        "| services | endpoints | cold sync | change live after start | takeover | takeover, 1% changed | \
         endpoint moved p50 / p99 | endpoint added/removed p50 / p99 | render only p50 | target | \
         keepalive req/s (÷ direct) | new conn/s (÷ direct) | 1-conn p50 (÷ direct) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|");
    for mode in modes {
        let ns = Ns(format!("svcnet-nft-{:08x}-bench", rand::random::<u32>()));
        sh(&["ip", "netns", "add", &ns.0]);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &ns.0, "timeout", "900"]).arg(&me);
        cmd.args(pass(&[
            "--services".into(),
            "1".into(),
            "--inner".into(),
            mode.clone(),
        ]));
        let status = cmd.stdin(Stdio::null()).status().unwrap();
        if !status.success() {
            eprintln!("run {mode} failed: {status}");
        }
    }
}

fn ep(ip: std::net::Ipv4Addr, port: u16) -> Endpoint {
    Endpoint {
        ip: ip.into(),
        port,
        ready: true,
        serving: true,
        terminating: false,
        node: None,
        zone: None,
        is_local: false,
        zone_hints: None,
    }
}

fn service(i: usize, eps: Vec<Endpoint>) -> Arc<ServicePort> {
    let cip = std::net::Ipv4Addr::from(u32::from(std::net::Ipv4Addr::new(10, 96, 0, 1)) + i as u32);
    Arc::new(ServicePort {
        name: ServicePortName {
            namespace: "bench".into(),
            name: format!("svc-{i}").into(),
            port: "http".into(),
            protocol: Protocol::Tcp,
        },
        cluster_ips: vec![cip.into()],
        port: 80,
        node_port: None,
        external_ips: vec![],
        load_balancer_ips: vec![],
        load_balancer_source_ranges: vec![],
        affinity_timeout: None,
        internal_policy_local: false,
        external_policy_local: false,
        health_check_node_port: None,
        balance: None,
        has_endpoints: true,
        internal_endpoints: eps.clone(),
        external_endpoints: eps.clone(),
        all_endpoints: eps,
    })
}

fn fake_eps(i: usize, n: usize, generation: u32) -> Vec<Endpoint> {
    (0..n)
        .map(|j| {
            let base = u32::from(std::net::Ipv4Addr::new(10, 128, 0, 0)) + (i * n + j) as u32;
            // Later generations move endpoint 0 elsewhere (the one-endpoint update).
            let ip = if j == 0 { base + (generation << 22) } else { base };
            ep(ip.into(), 8080)
        })
        .collect()
}

/// A tiny keep-alive HTTP/1.1 server: every request gets a 64-byte body.
fn http_server(port: u16) {
    let l = TcpListener::bind(("10.0.0.1", port)).unwrap();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            std::thread::spawn(move || serve(c));
        }
    });
}

fn serve(c: TcpStream) {
    let _ = c.set_nodelay(true);
    let mut w = c.try_clone().unwrap();
    let mut r = BufReader::new(c);
    let body = "x".repeat(63) + "\n";
    loop {
        let mut close = false;
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.to_ascii_lowercase().starts_with("connection: close") {
                close = true;
            }
            if h == "\r\n" {
                break;
            }
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/plain\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        if w.write_all(resp.as_bytes()).is_err() || close {
            return;
        }
    }
}

/// Runs wrk (bounded), returns (req/s, p50 µs).
fn wrk(url: &str, conns: u32, dur: u32, close: bool) -> (f64, f64) {
    let d = format!("{dur}s");
    let c = format!("-c{conns}");
    let lim = (dur + 20).to_string();
    let mut a = vec![
        "timeout",
        &lim,
        "taskset",
        "-c",
        "0",
        "wrk",
        "-t1",
        &c,
        "-d",
        &d,
        "--timeout",
        "5s",
        "--latency",
    ];
    if close {
        a.extend(["-H", "Connection: close"]);
    }
    a.push(url);
    let out = sh(&a);
    let rps = out
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let errors = out
        .lines()
        .find(|l| l.contains("Socket errors") || l.contains("Non-2xx"));
    if let Some(e) = errors {
        eprintln!("wrk {url}: {e}");
    }
    let p50 = out
        .lines()
        .find(|l| l.trim_start().starts_with("50%"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(parse_dur_us)
        .unwrap_or(0.0);
    (rps, p50)
}

fn parse_dur_us(s: &str) -> f64 {
    let (num, mul) = if let Some(v) = s.strip_suffix("us") {
        (v, 1.0)
    } else if let Some(v) = s.strip_suffix("ms") {
        (v, 1000.0)
    } else if let Some(v) = s.strip_suffix('s') {
        (v, 1e6)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().unwrap_or(0.0) * mul
}

fn traffic(args: &Args, url: &str) -> (f64, f64, f64) {
    let (ka, _) = wrk(url, args.conns, args.dur, false);
    let (close, _) = wrk(url, args.conns, args.dur, true);
    let (_, p50) = wrk(url, 1, args.lat_dur, false);
    (ka, close, p50)
}

/// CPU time of this process and of the children it has waited for (the `nft` runs), in ms: on a
/// shared machine the wall times depend on everyone's load, the CPU times much less.
fn cpu_ms() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    // After the command name in parentheses: state is field 3; utime, stime, cutime, cstime are 14-17.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse::<u64>().unwrap())
        .sum();
    // /proc reports in USER_HZ, which is 100 on every Linux.
    ticks as f64 * 10.0
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn inner_main(args: &Args, mode: &str) {
    sh(&["ip", "link", "set", "lo", "up"]);
    // Many short connections in a row (the `Connection: close` runs): all ports, and reuse of TIME_WAIT.
    sh(&["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65535"]);
    sh(&["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"]);
    // A veth pair (this kernel may lack the dummy driver) holds the backends' address.
    sh(&[
        "ip", "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1",
    ]);
    sh(&["ip", "addr", "add", "10.0.0.1/32", "dev", "dummy0"]);
    sh(&["ip", "link", "set", "dummy1", "up"]);
    sh(&["ip", "link", "set", "dummy0", "up"]);
    // Output routing needs a route before nat-output can DNAT; after DNAT the packet is rerouted locally.
    sh(&["ip", "route", "add", "10.96.0.0/16", "dev", "dummy0"]);
    sh(&["ip", "route", "add", "10.99.0.0/16", "dev", "dummy0"]);
    for p in [18081, 18082, 18083] {
        http_server(p);
    }
    // Backends (this process) on CPU 1, wrk on CPU 0; without traffic, `nft` may use both.
    if args.traffic {
        let pid = std::process::id().to_string();
        let _ = Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &pid])
            .stdout(Stdio::null())
            .status();
    }
    // The reference: one hand-written DNAT rule in a table of its own (as /work/shared/bench/l4/run.sh).
    let script = "table ip l4bench {\n\tchain out {\n\t\ttype nat hook output priority -100; policy accept;\n\t\t\
        ip daddr 10.99.0.1 tcp dport 80 dnat ip addr . port to numgen random mod 3 map { 0 : 10.0.0.1 . 18081, \
        1 : 10.0.0.1 . 18082, 2 : 10.0.0.1 . 18083 }\n\t}\n}\n";
    let mut c = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success());
    let n: usize = mode.parse().unwrap();
    let cfg = NftConfig {
        // The client (10.0.0.1) counts as a pod, so ClusterIP traffic is DNATed only, as pod traffic is and
        // as the hand-written rule does; node-to-ClusterIP traffic would also be masqueraded.
        pod_cidrs: vec!["10.0.0.0/8".parse().unwrap()],
        service_cidrs: vec!["10.96.0.0/16".parse().unwrap()],
        ..Default::default()
    };
    let mut b = NftBackend::new(cfg.clone());
    let backends = vec![
        ep([10, 0, 0, 1].into(), 18081),
        ep([10, 0, 0, 1].into(), 18082),
        ep([10, 0, 0, 1].into(), 18083),
    ];
    let mut ports: Vec<Arc<ServicePort>> = vec![service(0, backends)];
    ports.extend((1..n).map(|i| service(i, fake_eps(i, args.endpoints, 0))));
    let endpoints: usize = ports.iter().map(|p| p.internal_endpoints.len()).sum();
    // Cold starts into a namespace without tables (three, the median reported; the tables deleted in
    // between), the last with an endpoint change that arrives just as it starts (the worst case for
    // change → rule live: it waits for the whole load).
    let (mut cold, mut cold_cpu) = (Vec::new(), Vec::new());
    for round in 0..3 {
        if round > 0 {
            b.cleanup().unwrap();
            b = NftBackend::new(cfg.clone());
        }
        let (t, c) = (Instant::now(), cpu_ms());
        b.sync_all(&ports).unwrap();
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
        cold_cpu.push(cpu_ms() - c);
        assert_eq!(b.takeover(), None, "a cold start takes nothing over");
    }
    let t = Instant::now();
    let last_cold_ms = cold[cold.len() - 1];
    let cold_ms = percentile(&mut cold, 0.5);
    let cold_cpu_ms = percentile(&mut cold_cpu, 0.5);
    let moved = if n > 1 {
        service(1, fake_eps(1, args.endpoints, 1))
    } else {
        ports[0].clone()
    };
    b.apply(&[Change::Upsert {
        old: Some(ports[n.min(2) - 1].clone()),
        new: moved.clone(),
    }])
    .unwrap();
    let change_live_ms = last_cold_ms + t.elapsed().as_secs_f64() * 1000.0;
    if n > 1 {
        ports[1] = moved;
    }
    // Restarts: a backend of its own each time, as after a process restart, takes the tables over.
    let (mut full, mut full_cpu) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        b = NftBackend::new(cfg.clone());
        let (t, c) = (Instant::now(), cpu_ms());
        b.sync_all(&ports).unwrap();
        full.push(t.elapsed().as_secs_f64() * 1000.0);
        full_cpu.push(cpu_ms() - c);
        let stats = b.takeover().expect("the tables were taken over");
        assert_eq!(stats, Default::default(), "an unchanged takeover changes nothing");
    }
    let full_ms = percentile(&mut full, 0.5);
    let full_cpu_ms = percentile(&mut full_cpu, 0.5);
    // A restart after 1% of the Services got other endpoints meanwhile.
    let changed: Vec<usize> = (1..n).step_by(100).collect();
    for &i in &changed {
        ports[i] = service(i, fake_eps(i, args.endpoints, 2));
    }
    b = NftBackend::new(cfg.clone());
    let (t, c) = (Instant::now(), cpu_ms());
    b.sync_all(&ports).unwrap();
    let changed_ms = t.elapsed().as_secs_f64() * 1000.0;
    let changed_cpu_ms = cpu_ms() - c;
    eprintln!(
        "{n} services: cold {cold_ms:.0} ms (CPU {cold_cpu_ms:.0} ms), change live {change_live_ms:.0} ms \
         after start, takeover unchanged {full_ms:.0} ms (CPU {full_cpu_ms:.0} ms), takeover with {} changed \
         {changed_ms:.0} ms (CPU {changed_cpu_ms:.0} ms; {:?})",
        changed.len(),
        b.takeover()
    );
    // The hourly resync of the same backend, with nothing else writing.
    let t = Instant::now();
    b.sync_all(&ports).unwrap();
    eprintln!(
        "{n} services: periodic resync with nothing changed: {:.2} ms",
        t.elapsed().as_secs_f64() * 1000.0
    );
    // One-endpoint updates on random Services: the whole backend path (render + `nft -f -`), and the
    // rendering alone on the same change.
    let mut apply_ms = Vec::new();
    let mut scale_ms = Vec::new();
    let mut render_ms = Vec::new();
    let mut generation = vec![0u32; n];
    let mut shrunk = vec![false; n];
    for k in 0..args.updates {
        let i = if n > 1 {
            1 + rand::random::<u32>() as usize % (n - 1)
        } else {
            0
        };
        // Every other update changes the number of endpoints instead (one endpoint leaves or comes back,
        // as a readiness flip does).
        let count_change = k % 2 == 1 && i != 0;
        if count_change {
            shrunk[i] = !shrunk[i];
        } else {
            generation[i] = (generation[i] + 1) % 3;
        }
        let new = if i == 0 {
            ports[0].clone()
        } else {
            let mut eps = fake_eps(i, args.endpoints, generation[i]);
            if shrunk[i] {
                eps.pop();
            }
            service(i, eps)
        };
        let change = [Change::Upsert {
            old: Some(ports[i].clone()),
            new: new.clone(),
        }];
        let t = Instant::now();
        let text = render_changes_deferred(b.programmed(), &change, &cfg);
        render_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(text);
        let t = Instant::now();
        b.apply(&change).unwrap();
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        if count_change {
            scale_ms.push(ms);
        } else {
            apply_ms.push(ms);
        }
        ports[i] = new;
    }
    let a50 = percentile(&mut apply_ms, 0.5);
    let a99 = percentile(&mut apply_ms, 0.99);
    let s50 = percentile(&mut scale_ms, 0.5);
    let s99 = percentile(&mut scale_ms, 0.99);
    let r50 = percentile(&mut render_ms, 0.5);
    // Services without affinity leave nothing stale on endpoint changes; check that it stays so.
    let stale = b.stale_objects().count();
    assert_eq!(stale, 0, "endpoint updates left stale objects");
    if let Some(m) = b
        .metrics_text()
        .lines()
        .find(|l| l.contains("sync_failures_total"))
    {
        assert!(m.ends_with(" 0"), "an incremental change failed: {m}");
    }
    if let Ok(secs) = std::env::var("SCALE_HOLD_SECS") {
        // Keep the namespace, rules and servers for poking at by hand (`ip netns exec … wrk …`).
        eprintln!("holding for {secs} s");
        std::thread::sleep(std::time::Duration::from_secs(secs.parse().unwrap_or(60)));
    }
    let row = format!(
        "| {n} | {endpoints} | {cold_ms:.0} ms (CPU {cold_cpu_ms:.0}) | {change_live_ms:.0} ms | {full_ms:.0} ms (CPU \
         {full_cpu_ms:.0}) | {changed_ms:.0} ms (CPU {changed_cpu_ms:.0}) | \
         {a50:.2} / {a99:.2} ms | {s50:.2} / {s99:.2} ms | {r50:.3} ms |"
    );
    if !args.traffic {
        println!("{row} - | - | - | - |");
        return;
    }
    let mut s = String::new();
    TcpStream::connect("10.96.0.1:80")
        .and_then(|mut c| {
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            c.read_to_string(&mut s)
        })
        .expect("ClusterIP answers");
    // Targets alternate, round after round, so that load from elsewhere on the machine hits them alike;
    // the medians are reported.
    let targets = [
        ("direct", "http://10.0.0.1:18081/"),
        ("one nft DNAT rule", "http://10.99.0.1:80/"),
        ("ClusterIP", "http://10.96.0.1:80/"),
    ];
    let mut res: Vec<[Vec<f64>; 3]> = vec![Default::default(), Default::default(), Default::default()];
    for (_, url) in &targets {
        let _ = wrk(url, args.conns, 1, false); // warm-up
    }
    for round in 0..args.rounds as usize {
        // Each round starts with another target: `Connection: close` runs leave TIME_WAIT sockets and
        // conntrack entries behind that slow down whichever target comes next.
        for t in (0..targets.len()).map(|k| (k + round) % targets.len()) {
            let url = targets[t].1;
            let (ka, close, p50) = traffic(args, url);
            res[t][0].push(ka);
            res[t][1].push(close);
            res[t][2].push(p50);
        }
    }
    // Ratios within each round (same moment, same background load), then their median: on a shared
    // machine these are far steadier than the absolute figures.
    let ratio = |t: usize, k: usize, base: usize| -> f64 {
        let mut r: Vec<f64> = (0..res[t][k].len())
            .map(|i| {
                if res[base][k][i] > 0.0 {
                    res[t][k][i] / res[base][k][i]
                } else {
                    0.0
                }
            })
            .collect();
        percentile(&mut r, 0.5)
    };
    let ratios: Vec<[f64; 3]> = (0..3)
        .map(|t| [ratio(t, 0, 0), ratio(t, 1, 0), ratio(t, 2, 0)])
        .collect();
    for (t, (name, _)) in targets.iter().enumerate() {
        let [ka, close, p50] = &mut res[t];
        let r = ratios[t];
        println!(
            "{} {name} | {:.0} ({:.2}) | {:.0} ({:.2}) | {:.0} µs ({:.2}) |",
            if t == 0 {
                row.clone()
            } else {
                format!("| {n} | | | | | | | | |")
            },
            percentile(ka, 0.5),
            r[0],
            percentile(close, 0.5),
            r[1],
            percentile(p50, 0.5),
            r[2]
        );
    }
}
