//! `svcnet-bench ...`: benchmarks of a real `svcnet up` as clients see it.
//!
//! They live outside the `svcnet` binary so that production builds do not carry them. Each benchmark
//! starts `svcnet up` as a child process (the `svcnet` binary next to this one in `target/`, or
//! `--svcnet PATH`) in a fresh temporary data directory ([`Session`]), then drives it over HTTPS/HTTP2 with the bearer token from the kubeconfig
//! ([`Client`]), exactly as kubectl or a kube-rs controller would, and prints a markdown table. They
//! measure and print; they never assert. The targets are printed next to the figures for comparison
//! only. Every phase is bounded, and the whole run by `--timeout`.
//!
//! * `svcnet-bench api` (this file): concurrent Service creates, full JSON lists, and many watches
//!   receiving a stream of label patches.
//! * `svcnet-bench endpoints` ([`endpoints`]): pod readiness flips to EndpointSlice watch events, through
//!   the EndpointSlice controller.
//! * `svcnet-bench lab` ([`lab`], root): `svcnet lab up` times and pod-to-pod traffic across nodes over
//!   each overlay.

mod endpoints;
mod lab;
mod session;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use tokio::sync::watch;

use session::{
    Client, Mem, Server, Session, cpu_seconds, median_of, ms, percentile, row, table_header, timed_out,
};

/// Target create throughput on the reference 2-core machine (printed, not asserted).
const TARGET_CREATES_PER_SEC: f64 = 2000.0;
/// Target time for listing 10,000 Services (printed, not asserted).
const TARGET_LIST_MS: f64 = 200.0;
/// The namespace everything is created in.
const NS: &str = "default";
/// The label whose value carries a change's sequence number, so a watcher can tell which change an event
/// belongs to without decoding the object.
const SEQ_LABEL: &str = "bench-seq";

/// Benchmarks of a fresh `svcnet up`: they measure and print, never assert.
#[derive(Parser)]
#[command(name = "svcnet-bench", version, about)]
struct BenchArgs {
    #[command(subcommand)]
    which: Which,
    /// The `svcnet` binary to benchmark (default: the one next to this binary, e.g. in target/release).
    #[arg(long, global = true, value_name = "PATH")]
    svcnet: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Which {
    /// Benchmark the API server: concurrent creates, full lists, watch fan-out, memory.
    Api(ApiArgs),
    /// Benchmark the EndpointSlice controller: pod readiness flip to EndpointSlice watch event.
    Endpoints(endpoints::EndpointsArgs),
    /// Benchmark `svcnet lab` (root): `lab up` time, pod-to-pod traffic across nodes over each overlay.
    Lab(lab::LabArgs),
}

#[derive(Args, Clone)]
struct ApiArgs {
    /// How many Services to create.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    services: u32,
    /// Create requests in flight at once.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// HTTP/2 connections the create requests are spread over (at most 200 streams each).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// How many times the full list is fetched.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    lists: u32,
    /// Concurrent watches, each on its own connection (like independent node agents).
    #[arg(long, default_value_t = 100)]
    watchers: u32,
    /// Label patches made one at a time while the watches are open.
    #[arg(long, default_value_t = 200)]
    changes: u32,
    /// Pause between two changes, in milliseconds.
    #[arg(long, default_value_t = 5)]
    change_interval_ms: u64,
    /// Overall limit for the whole run, in seconds; the server is stopped when it is reached.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Run everything a second time on etcd at this URL (`svcnet up --etcd-servers`, a fresh
    /// `--etcd-prefix` per run) and print etcd's figures as ratios to the embedded store's.
    #[arg(long, value_name = "URL")]
    etcd_servers: Option<String>,
    /// Create the Services without a selector: no controller then writes an EndpointSlice and an
    /// Endpoints object per Service, so the server's CPU is the API server's alone (what the figures
    /// recorded before those controllers existed measured).
    #[arg(long)]
    without_selector: bool,
    /// Start `svcnet up --no-agent --no-dns --proxy-mode none`: the API server and controllers without
    /// the node's data plane (one userspace listener per ClusterIP) and cluster DNS following every create.
    #[arg(long)]
    api_only: bool,
}

fn main() -> Result<()> {
    let args = BenchArgs::parse();
    let svcnet = svcnet_binary(args.svcnet)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match args.which {
        Which::Api(a) => rt.block_on(api(a, &svcnet)),
        Which::Endpoints(a) => rt.block_on(endpoints::run(a, &svcnet)),
        Which::Lab(a) => lab::run(a, &svcnet),
    }
}

/// The `svcnet` binary to start: `--svcnet PATH`, or the one beside this binary (`cargo build -p svcnet
/// -p svcnet-bench` puts both in the same `target/` directory).
fn svcnet_binary(flag: Option<PathBuf>) -> Result<PathBuf> {
    let path = match flag {
        Some(p) => p,
        None => std::env::current_exe()
            .context("finding this binary")?
            .with_file_name("svcnet"),
    };
    if !path.is_file() {
        bail!(
            "no svcnet binary at {} (build it with `cargo build --release -p svcnet`, or pass --svcnet PATH)",
            path.display()
        );
    }
    Ok(path)
}

/// What has been measured so far; filled phase by phase so a timeout still reports what it got.
#[derive(Default)]
struct Report {
    creates: Option<CreateFigures>,
    list: Option<ListFigures>,
    fanout: Option<FanoutFigures>,
    mem_after_creates: Option<Mem>,
    mem_after_lists: Option<Mem>,
    mem_end: Option<Mem>,
}

struct CreateFigures {
    ok: usize,
    failed: usize,
    wall: Duration,
    p50: Duration,
    p99: Duration,
    server_cpu: f64,
    bench_cpu: f64,
}

struct ListFigures {
    times: Vec<Duration>,
    median: Duration,
    headers_median: Duration,
    server_cpu_ms: f64,
    items: usize,
    bytes: usize,
}

struct FanoutFigures {
    watchers: usize,
    changes: usize,
    received: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    patch_p50: Duration,
    server_cpu: f64,
    wall: Duration,
}

async fn api(args: ApiArgs, svcnet: &Path) -> Result<()> {
    let base: &[&str] = if args.api_only {
        &["--no-agent", "--no-dns", "--proxy-mode", "none"]
    } else {
        &[]
    };
    let Some(url) = args.etcd_servers.clone() else {
        return api_once(&args, svcnet, base).await.map(drop);
    };
    println!("== embedded store (redb)");
    let redb = api_once(&args, svcnet, base).await?;
    // A prefix of its own, so that a reused etcd holds nothing of an earlier run under it.
    let prefix = format!(
        "/svcnet-bench-{}-{}",
        std::process::id(),
        jiff::Timestamp::now().as_second()
    );
    println!("\n== etcd at {url} (prefix {prefix})");
    let mut extra = base.to_vec();
    extra.extend(["--etcd-servers", url.as_str(), "--etcd-prefix", prefix.as_str()]);
    let etcd = api_once(&args, svcnet, &extra).await?;
    print_ratios(&redb, &etcd);
    Ok(())
}

/// etcd's figures beside the embedded store's, with kube-apiserver's published scalability SLOs.
fn print_ratios(redb: &Report, etcd: &Report) {
    let creates = |r: &Report| r.creates.as_ref().map(|c| c.ok as f64 / c.wall.as_secs_f64());
    let create_p99 = |r: &Report| r.creates.as_ref().map(|c| c.p99.as_secs_f64() * 1000.0);
    let list = |r: &Report| r.list.as_ref().map(|l| l.median.as_secs_f64() * 1000.0);
    let fanout = |r: &Report| r.fanout.as_ref().map(|f| f.p99.as_secs_f64() * 1000.0);
    println!();
    println!("| measure | redb | etcd | etcd / redb | Kubernetes SLO |");
    println!("|---|---|---|---|---|");
    for (name, unit, f, slo) in [
        ("creates", "/s", &creates as &dyn Fn(&Report) -> Option<f64>, ""),
        ("create p99", " ms", &create_p99, "mutating API call p99 ≤ 1 s"),
        ("list, median", " ms", &list, "list p99 ≤ 30 s"),
        ("watch fan-out p99", " ms", &fanout, ""),
    ] {
        let (a, b) = (f(redb), f(etcd));
        let show = |v: Option<f64>| v.map_or("not measured".to_string(), |v| format!("{v:.1}{unit}"));
        let ratio = a
            .zip(b)
            .filter(|(a, _)| *a > 0.0)
            .map_or("-".to_string(), |(a, b)| format!("{:.2}", b / a));
        println!("| {name} | {} | {} | {ratio} | {slo} |", show(a), show(b));
    }
}

/// One run of every phase on a fresh `svcnet up` with `extra` flags; prints its table.
async fn api_once(args: &ApiArgs, svcnet: &Path, extra: &[&str]) -> Result<Report> {
    let session = Session::start(svcnet, args.timeout, extra).await?;
    let mut report = Report::default();
    let outcome = tokio::time::timeout_at(
        session.deadline.into(),
        phases(&session.server, args, &mut report),
    )
    .await;
    if report.mem_end.is_none() {
        report.mem_end = session.server.mem();
        if let Some(m) = report.mem_end {
            println!("memory at end: {}", m.show());
        }
    }
    session.finish().await?;
    print_table(args, &report);
    timed_out(outcome, args.timeout)?;
    Ok(report)
}

async fn phases(server: &Server, args: &ApiArgs, report: &mut Report) -> Result<()> {
    let c = &server.client;
    let n = args.services as usize;
    let mut conns = Vec::new();
    for _ in 0..args.connections {
        conns.push(c.connect().await?);
    }

    // 1. Creates.
    println!(
        "creating {n} Services, {} requests in flight over {} HTTP/2 connections ...",
        args.concurrency, args.connections
    );
    let (server_cpu0, bench_cpu0) = (server.cpu_seconds(), cpu_seconds("self"));
    let start = Instant::now();
    let selector = !args.without_selector;
    let (mut lat, failed) = c
        .concurrently(
            &conns,
            args.concurrency as usize,
            n,
            StatusCode::CREATED,
            move |c, i| {
                c.request(
                    Method::POST,
                    &format!("/api/v1/namespaces/{NS}/services"),
                    Some("application/json"),
                    service_json(i, selector),
                )
            },
        )
        .await?;
    let wall = start.elapsed();
    let (server_cpu, bench_cpu) = (
        server.cpu_seconds() - server_cpu0,
        cpu_seconds("self") - bench_cpu0,
    );
    lat.sort();
    let f = CreateFigures {
        ok: lat.len(),
        failed: failed.len(),
        wall,
        p50: percentile(&lat, 50.0),
        p99: percentile(&lat, 99.0),
        server_cpu,
        bench_cpu,
    };
    println!(
        "creates: {} ok, {} failed in {:.2} s = {:.0} creates/s (target >= {TARGET_CREATES_PER_SEC:.0}); \
         latency p50 {} p99 {}; CPU: server {:.2} s, bench client {:.2} s",
        f.ok,
        f.failed,
        wall.as_secs_f64(),
        f.ok as f64 / wall.as_secs_f64(),
        ms(f.p50),
        ms(f.p99),
        f.server_cpu,
        f.bench_cpu
    );
    if let Some(first) = failed.first() {
        println!("  first failure: {first}");
    }
    report.creates = Some(f);
    report.mem_after_creates = server.mem();
    if let Some(m) = report.mem_after_creates {
        println!("memory after creates: {}", m.show());
    }

    // 2. Lists.
    let list_path = format!("/api/v1/namespaces/{NS}/services");
    let mut times = Vec::new();
    let mut headers_at = Vec::new();
    let mut last = Bytes::new();
    let cpu0 = server.cpu_seconds();
    for i in 0..args.lists {
        let req = c.request(Method::GET, &list_path, None, Bytes::new());
        let t = Instant::now();
        conns[0].ready().await?;
        let resp = conns[0].send_request(req).await?;
        // The server builds the whole body before it answers, so the time to the headers is its work
        // and the rest is the transfer.
        let headers = t.elapsed();
        let code = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let took = t.elapsed();
        if code != StatusCode::OK {
            bail!("list answered {code}: {}", String::from_utf8_lossy(&body));
        }
        println!(
            "list {}: {} (headers after {}; {} bytes)",
            i + 1,
            ms(took),
            ms(headers),
            body.len()
        );
        times.push(took);
        headers_at.push(headers);
        last = body;
    }
    let list_cpu = (server.cpu_seconds() - cpu0) / f64::from(args.lists);
    let list: serde_json::Value = serde_json::from_slice(&last).context("decoding the list")?;
    let items = list["items"].as_array().map_or(0, Vec::len);
    let list_rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("the list has no resourceVersion")?
        .to_string();
    let median = median_of(&times);
    let headers_median = median_of(&headers_at);
    println!(
        "list: {items} items, {:.1} MiB, median {} (headers after {}), server CPU {:.0} ms per list \
         (target <= {TARGET_LIST_MS:.0} ms for 10,000)",
        last.len() as f64 / 1048576.0,
        ms(median),
        ms(headers_median),
        list_cpu * 1000.0
    );
    report.list = Some(ListFigures {
        times,
        median,
        headers_median,
        server_cpu_ms: list_cpu * 1000.0,
        items,
        bytes: last.len(),
    });
    drop(last);
    drop(list);
    report.mem_after_lists = server.mem();
    if let Some(m) = report.mem_after_lists {
        println!("memory after lists: {}", m.show());
    }

    // 3. Watch fan-out.
    if args.watchers > 0 && args.changes > 0 {
        report.fanout = Some(fanout(server, args, &mut conns[0], &list_rv).await?);
    }

    report.mem_end = server.mem();
    if let Some(m) = report.mem_end {
        println!("memory at end: {}", m.show());
    }
    Ok(())
}

/// Opens the watches from `list_rv`, makes the changes one at a time and collects when each watcher saw
/// each change.
async fn fanout(
    server: &Server,
    args: &ApiArgs,
    send: &mut SendRequest<Full<Bytes>>,
    list_rv: &str,
) -> Result<FanoutFigures> {
    let c = &server.client;
    let (w, m) = (args.watchers as usize, args.changes as usize);
    println!("opening {w} watches from resourceVersion {list_rv} ...");
    let (stop_tx, stop_rx) = watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<()>>(w);
    let mut tasks = Vec::new();
    for _ in 0..w {
        let c = c.clone();
        let path = format!("/api/v1/namespaces/{NS}/services?watch=true&resourceVersion={list_rv}");
        let ready = ready_tx.clone();
        let stop = stop_rx.clone();
        tasks.push(tokio::spawn(
            async move { watcher(c, path, m, ready, stop).await },
        ));
    }
    drop(ready_tx);
    // Changes start only once every watch has its response headers, i.e. is registered with the server.
    let mut open = 0;
    let ready_by = tokio::time::Instant::now() + Duration::from_secs(30);
    while open < w {
        match tokio::time::timeout_at(ready_by, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => open += 1,
            Ok(Some(Err(e))) => println!("  a watch failed to open: {e:#}"),
            Ok(None) | Err(_) => break,
        }
    }
    println!(
        "{open} of {w} watches open; making {m} label patches {} ms apart ...",
        args.change_interval_ms
    );

    let cpu0 = server.cpu_seconds();
    let start = Instant::now();
    let mut sent = Vec::with_capacity(m);
    let mut patch_lat = Vec::with_capacity(m);
    for seq in 0..m {
        let name = format!("bench-{:05}", seq % args.services as usize);
        let body = format!(r#"{{"metadata":{{"labels":{{"{SEQ_LABEL}":"{seq}"}}}}}}"#);
        let req = c.request(
            Method::PATCH,
            &format!("/api/v1/namespaces/{NS}/services/{name}"),
            Some("application/merge-patch+json"),
            Bytes::from(body),
        );
        let t = Instant::now();
        sent.push(t);
        let (code, resp) = c.send(send, req).await?;
        patch_lat.push(t.elapsed());
        if code != StatusCode::OK {
            println!(
                "  patch {seq} answered {code}: {}",
                String::from_utf8_lossy(&resp)
            );
        }
        tokio::time::sleep(Duration::from_millis(args.change_interval_ms)).await;
    }
    // Give the stragglers a bounded time to receive the last events, then stop the rest.
    let drain_by = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut results = Vec::new();
    let mut stopped = false;
    for t in tasks {
        let mut t = t;
        let r = if stopped {
            t.await?
        } else {
            match tokio::time::timeout_at(drain_by, &mut t).await {
                Ok(r) => r?,
                Err(_) => {
                    stop_tx.send_replace(true);
                    stopped = true;
                    t.await?
                }
            }
        };
        results.push(r);
    }
    stop_tx.send_replace(true);
    let wall = start.elapsed();
    let server_cpu = server.cpu_seconds() - cpu0;

    let mut lat = Vec::with_capacity(w * m);
    for got in results.iter().flatten() {
        for &(seq, at) in got {
            lat.push(at.saturating_duration_since(sent[seq]));
        }
    }
    lat.sort();
    patch_lat.sort();
    let f = FanoutFigures {
        watchers: w,
        changes: m,
        received: lat.len(),
        p50: percentile(&lat, 50.0),
        p99: percentile(&lat, 99.0),
        max: lat.last().copied().unwrap_or_default(),
        patch_p50: percentile(&patch_lat, 50.0),
        server_cpu,
        wall,
    };
    println!(
        "watch fan-out: {} of {} events received; latency p50 {} p99 {} max {}; patch p50 {}; \
         server CPU {:.2} s over {:.2} s",
        f.received,
        w * m,
        ms(f.p50),
        ms(f.p99),
        ms(f.max),
        ms(f.patch_p50),
        f.server_cpu,
        f.wall.as_secs_f64()
    );
    for e in results.iter().filter_map(|r| r.as_ref().err()).take(1) {
        println!("  a watcher ended with: {e:#}");
    }
    Ok(f)
}

/// One watch on its own connection: reports when it is open, then records for each change (by the
/// sequence number in its label) when the line carrying it arrived, until it has all `m` or is stopped.
async fn watcher(
    c: Client,
    path: String,
    m: usize,
    ready: tokio::sync::mpsc::Sender<Result<()>>,
    mut stop: watch::Receiver<bool>,
) -> Result<Vec<(usize, Instant)>> {
    let opened = c.open_watch(&path).await;
    let (_send, mut body) = match opened {
        Ok(x) => {
            let _ = ready.send(Ok(())).await;
            x
        }
        Err(e) => {
            let _ = ready.send(Err(anyhow!("{e:#}"))).await;
            return Err(e);
        }
    };
    drop(ready);
    let mut seen = vec![false; m];
    let mut got = Vec::with_capacity(m);
    let mut buf: Vec<u8> = Vec::new();
    let needle = format!("\"{SEQ_LABEL}\":\"");
    while got.len() < m {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Some(frame) = frame else { break };
        // The arrival time of the frame that completes a line is when that event was received.
        let now = Instant::now();
        let Ok(data) = frame?.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            if let Some(seq) = find_seq(&buf[..nl], needle.as_bytes())
                && seq < m
                && !seen[seq]
            {
                seen[seq] = true;
                got.push((seq, now));
            }
            buf.drain(..=nl);
        }
    }
    Ok(got)
}

/// The sequence number in a watch line, found by its label without decoding the JSON (100 watchers
/// decoding every object would make the client, on the same cores, the thing being measured).
fn find_seq(line: &[u8], needle: &[u8]) -> Option<usize> {
    let at = line.windows(needle.len()).position(|w| w == needle)? + needle.len();
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&line[at..at + digits]).ok()?.parse().ok()
}

fn service_json(i: usize, selector: bool) -> Bytes {
    let selector = if selector {
        r#""selector":{"app":"svcnet-bench"},"#
    } else {
        ""
    };
    Bytes::from(format!(
        r#"{{"apiVersion":"v1","kind":"Service","metadata":{{"name":"bench-{i:05}","labels":{{"app":"svcnet-bench"}}}},"spec":{{"type":"ClusterIP",{selector}"ports":[{{"name":"http","protocol":"TCP","port":80,"targetPort":8080}}]}}}}"#
    ))
}

fn print_table(args: &ApiArgs, r: &Report) {
    let na = || "not measured".to_string();
    println!();
    println!(
        "Command: `svcnet-bench api --services {} --concurrency {} --connections {} --watchers {} --changes {} \
         --change-interval-ms {}{}{}`",
        args.services,
        args.concurrency,
        args.connections,
        args.watchers,
        args.changes,
        args.change_interval_ms,
        if args.without_selector {
            " --without-selector"
        } else {
            ""
        },
        if args.api_only { " --api-only" } else { "" }
    );
    println!();
    table_header();
    let (rate, lat) = match &r.creates {
        Some(c) => (
            format!(
                "{:.0} creates/s ({} ok, {} failed, {:.2} s; server CPU {:.1} s, bench client CPU {:.1} s)",
                c.ok as f64 / c.wall.as_secs_f64(),
                c.ok,
                c.failed,
                c.wall.as_secs_f64(),
                c.server_cpu,
                c.bench_cpu
            ),
            format!("{} / {}", ms(c.p50), ms(c.p99)),
        ),
        None => (na(), na()),
    };
    println!(
        "| create {} Services, {} in flight over {} HTTP/2 connections | {rate} | ≥ {TARGET_CREATES_PER_SEC:.0} creates/s |",
        args.services, args.concurrency, args.connections
    );
    println!("| create latency p50 / p99 | {lat} | |");
    match &r.list {
        Some(l) => {
            let all: Vec<String> = l
                .times
                .iter()
                .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
                .collect();
            println!(
                "| list {} Services (JSON, {:.1} MiB), median of {} | {} (runs: {} ms; headers after {}; \
                 server CPU {:.0} ms per list) | ≤ {TARGET_LIST_MS:.0} ms for 10,000 |",
                l.items,
                l.bytes as f64 / 1048576.0,
                l.times.len(),
                ms(l.median),
                all.join(", "),
                ms(l.headers_median),
                l.server_cpu_ms
            );
        }
        None => println!("| list | {} | ≤ {TARGET_LIST_MS:.0} ms for 10,000 |", na()),
    }
    match &r.fanout {
        Some(f) => {
            println!(
                "| watch fan-out latency p50 / p99 / max ({} watchers × {} changes) | {} / {} / {} | |",
                f.watchers,
                f.changes,
                ms(f.p50),
                ms(f.p99),
                ms(f.max)
            );
            println!(
                "| watch events received | {} of {} | |",
                f.received,
                f.watchers * f.changes
            );
            println!(
                "| patch latency p50 (during fan-out) | {} (server CPU {:.1} s over {:.1} s) | |",
                ms(f.patch_p50),
                f.server_cpu,
                f.wall.as_secs_f64()
            );
        }
        None => println!("| watch fan-out | {} | |", na()),
    }
    let mem = |m: Option<Mem>| m.map_or_else(na, |m| m.show());
    row("server memory after creates", &mem(r.mem_after_creates), "");
    row("server memory after lists", &mem(r.mem_after_lists), "");
    row("server memory at end", &mem(r.mem_end), "");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sequence_label() {
        let needle = format!("\"{SEQ_LABEL}\":\"");
        let line = br#"{"type":"MODIFIED","object":{"metadata":{"labels":{"app":"x","bench-seq":"17"}}}}"#;
        assert_eq!(find_seq(line, needle.as_bytes()), Some(17));
        assert_eq!(find_seq(b"{}", needle.as_bytes()), None);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&v, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&[], 50.0), Duration::ZERO);
    }
}
