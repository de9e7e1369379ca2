//! `svcnet-bench endpoints`: how quickly a pod's readiness change reaches an EndpointSlice watcher.
//!
//! It starts `svcnet up --no-agent` and plays the kubelet itself, so 10,000 pods cost objects, not
//! processes: one Node (`bench-node`, Ready, its Lease renewed every few seconds so the node lifecycle
//! controller leaves it alone), S Services with selectors and S×P Pods created already bound to the
//! node (the scheduler is not on the path), then each pod's status written as Running with a unique IP
//! from 127.244.0.0/16 and Ready. Once every Service has P ready endpoints, a watch on all
//! EndpointSlices is opened and random pods' readiness is flipped one at a time; the latency of a flip
//! is from just before its `pods/status` write is sent to the arrival of the first EndpointSlice event
//! showing that pod's IP with the new `conditions.ready`. That path is the write, the pod watch to the
//! controllers, the EndpointSlice controller's sync and slice write, and the slice watch back out. The
//! controllers run inside the server process, so its CPU time covers them.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use clap::Args;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2::SendRequest;
use serde_json::{Value, json};

mod report;

use super::NS;
use crate::session::{Client, Server, Session, cpu_seconds, ms, percentile, timed_out};
use report::{Converge, FlipFigures, Report, SetupFigures, metric_rows, print_table};

/// Target p99 of readiness flip to EndpointSlice event on the reference 2-core machine (printed, not
/// asserted).
const TARGET_P99_MS: f64 = 20.0;
/// The Node every pod is bound to.
const NODE: &str = "bench-node";
/// The label that ties a Service's selector to its pods.
const SVC_LABEL: &str = "svcnet-bench-svc";
/// How often the node's Lease is renewed (the node lifecycle controller's grace is 40 s).
const LEASE_RENEW: Duration = Duration::from_secs(5);
/// How long after the last flip the watcher may still deliver events before the phase ends.
const DRAIN: Duration = Duration::from_secs(10);

#[derive(Args, Clone)]
pub(super) struct EndpointsArgs {
    /// How many Services (each with a selector) to create (services × pods-per-service at most 65,000:
    /// the pods' addresses come from one /16).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=65000))]
    services: u32,
    /// Pods per Service (bound to bench-node, with unique IPs from 127.244.0.0/16).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=100))]
    pods_per_service: u32,
    /// Readiness flips of random pods, made one at a time.
    #[arg(long, default_value_t = 500)]
    flips: u32,
    /// Pause between one flip's status write being answered and the next flip, in milliseconds.
    #[arg(long, default_value_t = 10)]
    flip_interval_ms: u64,
    /// Requests in flight at once while creating objects and writing the initial pod statuses.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: u32,
    /// HTTP/2 connections the setup requests are spread over.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    connections: u32,
    /// Seed of the random choice of pods to flip (the same seed flips the same pods).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Overall limit for the whole run, in seconds; the server is stopped when it is reached.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// The server's data plane (`svcnet up --proxy-mode`). `nftables` programs rules, so it is refused
    /// outside a network namespace of its own: run the bench under `ip netns exec`.
    #[arg(long, default_value = "userspace", value_parser = ["userspace", "nftables", "none"])]
    proxy_mode: String,
    /// Run the data plane as `svcnet proxy --kubeconfig` (kube-proxy's drop-in, a process of its own
    /// against `svcnet up --proxy-mode none`) instead of inside `svcnet up`; its metrics are read from
    /// its own `/metrics`.
    #[arg(long)]
    separate_proxy: bool,
}

/// `svcnet proxy --kubeconfig` as its own process, and the address of its metrics.
struct Proxy {
    child: tokio::process::Child,
    metrics: std::net::SocketAddr,
}

impl Proxy {
    async fn start(svcnet: &Path, dir: &Path, mode: &str) -> Result<Proxy> {
        let free = || -> Result<u16> { Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()) };
        let (metrics, health) = (free()?, free()?);
        let mut child = tokio::process::Command::new(svcnet)
            .arg("proxy")
            .arg("--kubeconfig")
            .arg(dir.join("kubeconfig"))
            .args(["--proxy-mode", mode, "--hostname-override", NODE])
            .args(["--metrics-bind-address", &format!("127.0.0.1:{metrics}")])
            .args(["--healthz-bind-address", &format!("127.0.0.1:{health}")])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(dir.join("proxy.log"))?)
            .kill_on_drop(true)
            .spawn()
            .context("starting svcnet proxy")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
        match tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await {
            Ok(Ok(Some(l))) if l.contains("serving") => {}
            _ => {
                let log = std::fs::read_to_string(dir.join("proxy.log")).unwrap_or_default();
                bail!("svcnet proxy did not start; its log:\n{log}");
            }
        }
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        println!(
            "data plane: svcnet proxy pid {:?}, metrics on {metrics}",
            child.id()
        );
        Ok(Proxy {
            child,
            metrics: ([127, 0, 0, 1], metrics).into(),
        })
    }

    /// The text of its `/metrics` (plain HTTP/1.0).
    async fn metrics_text(&self) -> Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.metrics).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n").await?;
        let mut out = String::new();
        s.read_to_string(&mut out).await?;
        Ok(out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default())
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = rustix::process::kill_process(
                rustix::process::Pid::from_raw(pid as i32).expect("a child's pid is positive"),
                rustix::process::Signal::TERM,
            );
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }
}

/// Whether this process runs in a network namespace made with `ip netns add` (one of `/run/netns/*`),
/// not the machine's own. (init's namespace, `/proc/1/ns/net`, is not readable in every container.)
fn in_own_netns() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(mine) = std::fs::metadata("/proc/self/ns/net") else {
        return false;
    };
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return false;
    };
    dir.flatten()
        .any(|e| std::fs::metadata(e.path()).is_ok_and(|m| m.dev() == mine.dev() && m.ino() == mine.ino()))
}

/// Runs `svcnet-bench endpoints` against the `svcnet` binary `svcnet`.
pub(super) async fn run(args: EndpointsArgs, svcnet: &Path) -> Result<()> {
    if args.proxy_mode == "nftables" && !in_own_netns() {
        bail!(
            "--proxy-mode nftables programs this network namespace's rules: run the bench inside one of its \
             own (ip netns add NS; ip netns exec NS sh -c 'ip link set lo up; svcnet-bench endpoints …')"
        );
    }
    if u64::from(args.services) * u64::from(args.pods_per_service) > 65_000 {
        bail!(
            "--services × --pods-per-service must be at most 65,000: the pods' addresses come from one /16"
        );
    }
    let server_mode = if args.separate_proxy {
        "none"
    } else {
        args.proxy_mode.as_str()
    };
    let session = Session::start(svcnet, args.timeout, &["--no-agent", "--proxy-mode", server_mode]).await?;
    let proxy = if args.separate_proxy && args.proxy_mode != "none" {
        Some(Proxy::start(svcnet, session.dir.path(), &args.proxy_mode).await?)
    } else {
        None
    };
    let mut report = Report::default();
    let outcome = tokio::time::timeout_at(
        session.deadline.into(),
        phases(&session.server, proxy.as_ref(), &args, &mut report),
    )
    .await;
    if let Some(p) = proxy {
        p.stop().await;
    }
    if report.mem_end.is_none() {
        report.mem_end = session.server.mem();
    }
    session.finish().await?;
    print_table(&args, &report);
    timed_out(outcome, args.timeout)
}

async fn phases(
    server: &Server,
    proxy: Option<&Proxy>,
    args: &EndpointsArgs,
    report: &mut Report,
) -> Result<()> {
    let c = &server.client;
    let (s, p) = (args.services as usize, args.pods_per_service as usize);
    let n = s * p;
    let mut conns = Vec::new();
    for _ in 0..args.connections {
        conns.push(c.connect().await?);
    }

    // 1. The node, Ready, with a Lease renewed in the background for the rest of the run.
    register_node(c, &mut conns[0]).await?;
    renew_lease(c, &mut conns[0]).await?;
    let _lease = {
        let (c, mut send) = (c.clone(), conns[0].clone());
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(LEASE_RENEW).await;
                if let Err(e) = renew_lease(&c, &mut send).await {
                    println!("  lease renewal failed: {e:#}");
                }
            }
        }))
    };
    println!("node {NODE} registered (Ready, Lease renewed every {LEASE_RENEW:?})");

    // 2. Services, then pods bound to the node.
    println!(
        "creating {s} Services and {n} Pods, {} requests in flight over {} HTTP/2 connections ...",
        args.concurrency, args.connections
    );
    let conc = args.concurrency as usize;
    let start = Instant::now();
    let (svc_ok, mut failed) = c
        .concurrently(&conns, conc, s, StatusCode::CREATED, |c, i| {
            c.request(
                Method::POST,
                &format!("/api/v1/namespaces/{NS}/services"),
                Some("application/json"),
                service_json(i),
            )
        })
        .await?;
    let (pod_ok, f) = c
        .concurrently(&conns, conc, n, StatusCode::CREATED, move |c, i| {
            c.request(
                Method::POST,
                &format!("/api/v1/namespaces/{NS}/pods"),
                Some("application/json"),
                pod_json(i / p, i % p),
            )
        })
        .await?;
    failed.extend(f);
    let create_wall = start.elapsed();
    println!(
        "created {} Services and {} Pods ({} failed) in {:.2} s",
        svc_ok.len(),
        pod_ok.len(),
        failed.len(),
        create_wall.as_secs_f64()
    );

    // 3. Every pod Running, with its IP, and Ready.
    println!("writing {n} pod statuses (Running, podIP, Ready) ...");
    let status_start = Instant::now();
    let (status_ok, status_failed) = c
        .concurrently(&conns, conc, n, StatusCode::OK, move |c, i| {
            status_request(c, &pod_name(i / p, i % p), &pod_ip(i), true)
        })
        .await?;
    let status_wall = status_start.elapsed();
    let status_done = Instant::now();
    println!(
        "wrote {} pod statuses ({} failed) in {:.2} s",
        status_ok.len(),
        status_failed.len(),
        status_wall.as_secs_f64()
    );
    let first_failure = failed.first().or(status_failed.first()).cloned();
    if let Some(f) = &first_failure {
        println!("  first failure: {f}");
    }
    report.setup = Some(SetupFigures {
        services_ok: svc_ok.len(),
        pods_ok: pod_ok.len(),
        create_failed: failed.len(),
        create_wall,
        status_ok: status_ok.len(),
        status_failed: status_failed.len(),
        status_wall,
        first_failure,
    });

    // 4. Initial convergence: poll the slices until every Service shows P ready endpoints.
    println!("waiting for every Service to have an EndpointSlice with {p} ready endpoints ...");
    let mut last_print = Instant::now();
    let (list_rv, slices) = loop {
        let (rv, ready, slices) = ready_services(c, &mut conns[0], p).await?;
        if ready >= s {
            break (rv, slices);
        }
        if last_print.elapsed() >= Duration::from_secs(5) {
            println!("  {ready} of {s} Services converged ...");
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let conv = Converge {
        since_first_status: status_start.elapsed(),
        since_last_status: status_done.elapsed(),
        slices,
    };
    println!(
        "converged: {slices} EndpointSlices, {:.2} s after the first status write ({:.2} s after the last)",
        conv.since_first_status.as_secs_f64(),
        conv.since_last_status.as_secs_f64()
    );
    report.converge = Some(conv);

    // 5. Flips, watched.
    if args.flips > 0 {
        let before_text = scrape_text(c, &mut conns[0]).await.unwrap_or_default();
        let before = metric_values(&before_text);
        let dp_before = match proxy {
            Some(p) => p.metrics_text().await.unwrap_or_default(),
            None => before_text.clone(),
        };
        report.flips = Some(flips(server, args, &mut conns[0], &list_rv).await?);
        // The data plane programs the flips a moment after the slices change.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after_text = scrape_text(c, &mut conns[0]).await?;
        let after = metric_values(&after_text);
        let dp_after = match proxy {
            Some(p) => p.metrics_text().await?,
            None => after_text.clone(),
        };
        for (name, what) in [
            (
                "svcnet_dataplane_event_to_programmed_seconds",
                "slice watch event → data plane programmed",
            ),
            (
                "kubeproxy_sync_proxy_rules_duration_seconds",
                "data plane sync (the backend's apply)",
            ),
        ] {
            if let Some((n, p50, p99)) = bucket_quantiles(&dp_before, &dp_after, name) {
                println!(
                    "{what}: {n} batches, p50 <= {} p99 <= {} (histogram bucket bounds)",
                    ms(p50),
                    ms(p99)
                );
            }
        }
        report.metrics = after
            .into_iter()
            .map(|(k, v)| {
                let d = before.get(&k).map(|b| v - b);
                (k, v, d)
            })
            .collect();
    } else {
        report.metrics = scrape_metrics(c, &mut conns[0])
            .await?
            .into_iter()
            .map(|(k, v)| (k, v, None))
            .collect();
    }
    for (k, v) in metric_rows(&report.metrics) {
        println!("  {k}: {v}");
    }
    report.mem_end = server.mem();
    if let Some(m) = report.mem_end {
        println!("memory at end: {}", m.show());
    }
    Ok(())
}

/// A flip awaiting its EndpointSlice event, keyed by the pod's IP.
struct Pending {
    want_ready: bool,
    sent: Instant,
}

/// What the flipper and the watcher share.
#[derive(Default)]
struct Shared {
    pending: HashMap<String, Pending>,
    latencies: Vec<Duration>,
    slice_events: usize,
}

/// Opens the slice watch from `list_rv`, flips random pods one at a time and collects when each flip's
/// slice event arrived.
async fn flips(
    server: &Server,
    args: &EndpointsArgs,
    send: &mut SendRequest<Full<Bytes>>,
    list_rv: &str,
) -> Result<FlipFigures> {
    let c = &server.client;
    let (p, n) = (
        args.pods_per_service as usize,
        (args.services * args.pods_per_service) as usize,
    );
    let m = args.flips as usize;
    let path = format!("/apis/discovery.k8s.io/v1/endpointslices?watch=true&resourceVersion={list_rv}");
    let (watch_send, body) = c.open_watch(&path).await?;
    let shared = Arc::new(Mutex::new(Shared::default()));
    let watcher = AbortOnDrop(tokio::spawn(watch_slices(body, shared.clone())));
    println!(
        "watching EndpointSlices from resourceVersion {list_rv}; flipping {m} random pods' readiness, {} ms apart ...",
        args.flip_interval_ms
    );

    let mut rng = SplitMix(args.seed);
    let mut ready = vec![true; n];
    let mut write_lat = Vec::with_capacity(m);
    let (cpu0, bench0) = (server.cpu_seconds(), cpu_seconds("self"));
    let start = Instant::now();
    for _ in 0..m {
        // A pod whose previous flip has not been seen yet is skipped, so that an event can only match the
        // flip it reflects.
        let i = loop {
            let i = (rng.next() % n as u64) as usize;
            if !shared.lock().unwrap().pending.contains_key(&pod_ip(i)) {
                break i;
            }
        };
        let (ip, want) = (pod_ip(i), !ready[i]);
        ready[i] = want;
        let req = status_request(c, &pod_name(i / p, i % p), &ip, want);
        let t = Instant::now();
        shared.lock().unwrap().pending.insert(
            ip,
            Pending {
                want_ready: want,
                sent: t,
            },
        );
        let (code, resp) = c.send(send, req).await?;
        write_lat.push(t.elapsed());
        if code != StatusCode::OK {
            println!(
                "  status write answered {code}: {}",
                String::from_utf8_lossy(&resp)
            );
        }
        tokio::time::sleep(Duration::from_millis(args.flip_interval_ms)).await;
    }
    // Give the last events a bounded time to arrive.
    let drain_by = Instant::now() + DRAIN;
    while Instant::now() < drain_by && !shared.lock().unwrap().pending.is_empty() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let wall = start.elapsed();
    let (server_cpu, bench_cpu) = (server.cpu_seconds() - cpu0, cpu_seconds("self") - bench0);
    drop(watcher);
    drop(watch_send);

    let (mut lat, slice_events) = {
        let sh = shared.lock().unwrap();
        (sh.latencies.clone(), sh.slice_events)
    };
    lat.sort();
    write_lat.sort();
    let f = FlipFigures {
        flips: m,
        observed: lat.len(),
        p50: percentile(&lat, 50.0),
        p99: percentile(&lat, 99.0),
        max: lat.last().copied().unwrap_or_default(),
        write_p50: percentile(&write_lat, 50.0),
        write_p99: percentile(&write_lat, 99.0),
        slice_events,
        server_cpu,
        bench_cpu,
        wall,
    };
    println!(
        "flips: {} of {m} observed; flip to slice event p50 {} p99 {} max {} (target p99 <= {TARGET_P99_MS:.0} ms); \
         status write p50 {} p99 {}; {} slice events; server CPU {:.2} s over {:.2} s",
        f.observed,
        ms(f.p50),
        ms(f.p99),
        ms(f.max),
        ms(f.write_p50),
        ms(f.write_p99),
        f.slice_events,
        f.server_cpu,
        f.wall.as_secs_f64()
    );
    Ok(f)
}

/// Reads the slice watch line by line; a line that mentions the IP of a pending flip is decoded, and the
/// flip is done when the endpoint with that IP shows the new readiness.
async fn watch_slices(mut body: hyper::body::Incoming, shared: Arc<Mutex<Shared>>) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(Ok(frame)) = body.frame().await {
        // The arrival time of the frame that completes a line is when that event was received.
        let now = Instant::now();
        let Ok(data) = frame.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line = &buf[..nl];
            let mut sh = shared.lock().unwrap();
            sh.slice_events += 1;
            // A byte search first: only lines naming a pending pod's IP are worth decoding.
            let mentioned = sh
                .pending
                .keys()
                .any(|ip| contains(line, format!("\"{ip}\"").as_bytes()));
            if mentioned && let Ok(ev) = serde_json::from_slice::<Value>(line) {
                for (ip, ready) in endpoint_readiness(&ev) {
                    if let Some(pd) = sh.pending.get(&ip)
                        && pd.want_ready == ready
                    {
                        let lat = now.saturating_duration_since(pd.sent);
                        sh.pending.remove(&ip);
                        sh.latencies.push(lat);
                    }
                }
            }
            drop(sh);
            buf.drain(..=nl);
        }
    }
}

/// The (address, ready) pairs of an ADDED or MODIFIED EndpointSlice watch event; an endpoint without a
/// `ready` condition counts as ready, as the API documents.
fn endpoint_readiness(ev: &Value) -> Vec<(String, bool)> {
    if !matches!(ev["type"].as_str(), Some("ADDED" | "MODIFIED")) {
        return Vec::new();
    }
    let mut out = Vec::new();
    for e in ev["object"]["endpoints"].as_array().into_iter().flatten() {
        let ready = e["conditions"]["ready"].as_bool().unwrap_or(true);
        for a in e["addresses"].as_array().into_iter().flatten() {
            if let Some(a) = a.as_str() {
                out.push((a.to_string(), ready));
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Lists all EndpointSlices; returns the list's resourceVersion, how many bench Services have `p` ready
/// endpoints over their slices, and how many slices there are.
async fn ready_services(
    c: &Client,
    send: &mut SendRequest<Full<Bytes>>,
    p: usize,
) -> Result<(String, usize, usize)> {
    let req = c.request(
        Method::GET,
        "/apis/discovery.k8s.io/v1/endpointslices",
        None,
        Bytes::new(),
    );
    let (code, body) = c.send(send, req).await?;
    if code != StatusCode::OK {
        bail!(
            "listing EndpointSlices answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let list: Value = serde_json::from_slice(&body).context("decoding the EndpointSlice list")?;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .context("the list has no resourceVersion")?
        .to_string();
    let items = list["items"].as_array().map_or(&[][..], Vec::as_slice);
    let mut ready: HashMap<&str, usize> = HashMap::new();
    for slice in items {
        let Some(svc) = slice["metadata"]["labels"]["kubernetes.io/service-name"].as_str() else {
            continue;
        };
        if !svc.starts_with("bench-svc-") {
            continue;
        }
        let n = slice["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["conditions"]["ready"].as_bool().unwrap_or(true))
            .count();
        *ready.entry(svc).or_default() += n;
    }
    let done = ready.values().filter(|&&n| n == p).count();
    Ok((rv, done, items.len()))
}

/// The EndpointSlice controllers' series on `/metrics` (histogram buckets left out), by name and labels.
async fn scrape_metrics(c: &Client, send: &mut SendRequest<Full<Bytes>>) -> Result<BTreeMap<String, f64>> {
    Ok(metric_values(&scrape_text(c, send).await?))
}

/// The text of `/metrics`.
async fn scrape_text(c: &Client, send: &mut SendRequest<Full<Bytes>>) -> Result<String> {
    let req = c.request(Method::GET, "/metrics", None, Bytes::new());
    let (code, body) = c.send(send, req).await?;
    if code != StatusCode::OK {
        bail!("/metrics answered {code}");
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The count, p50 and p99 of what histogram `name` observed between two scrapes, as the upper bounds of the
/// buckets they fall in (label sets summed).
fn bucket_quantiles(before: &str, after: &str, name: &str) -> Option<(u64, Duration, Duration)> {
    let buckets = |text: &str| {
        let mut m: BTreeMap<u64, f64> = BTreeMap::new();
        let prefix = format!("{name}_bucket{{");
        for l in text.lines().filter(|l| l.starts_with(&prefix)) {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            let v: f64 = l.rsplit_once(' ')?.1.parse().ok()?;
            *m.entry(le.to_bits()).or_default() += v;
        }
        Some(m)
    };
    let (b, a) = (buckets(before).unwrap_or_default(), buckets(after)?);
    let mut delta: Vec<(f64, f64)> = a
        .iter()
        .map(|(le, v)| (f64::from_bits(*le), v - b.get(le).copied().unwrap_or(0.0)))
        .collect();
    delta.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = delta.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let q = |q: f64| {
        delta
            .iter()
            .find(|(_, c)| *c >= q * total)
            .map(|(le, _)| Duration::from_secs_f64(le.min(3600.0)))
    };
    Some((total as u64, q(0.5)?, q(0.99)?))
}

/// The EndpointSlice controllers' series in a `/metrics` text (histogram buckets left out).
fn metric_values(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| {
            (l.starts_with("endpoint_slice_controller_") || l.starts_with("endpoints_controller_"))
                && !l.contains("_bucket")
        })
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// Creates `bench-node` and reports it Ready through `nodes/status`, as a kubelet registering would.
async fn register_node(c: &Client, send: &mut SendRequest<Full<Bytes>>) -> Result<()> {
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE, "kubernetes.io/os": "linux"}},
    });
    let req = c.request(
        Method::POST,
        "/api/v1/nodes",
        Some("application/json"),
        Bytes::from(node.to_string()),
    );
    let (code, body) = c.send(send, req).await?;
    if code != StatusCode::CREATED {
        bail!(
            "creating the node answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    let now = jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": NODE}],
        "conditions": [{
            "type": "Ready", "status": "True", "reason": "KubeletReady",
            "message": "svcnet-bench endpoints plays the kubelet",
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        }],
    }});
    let req = c.request(
        Method::PATCH,
        &format!("/api/v1/nodes/{NODE}/status"),
        Some("application/merge-patch+json"),
        Bytes::from(status.to_string()),
    );
    let (code, body) = c.send(send, req).await?;
    if code != StatusCode::OK {
        bail!(
            "writing the node status answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// Renews the node's Lease in `kube-node-lease` by server-side apply, as the kubelet's heartbeat does.
async fn renew_lease(c: &Client, send: &mut SendRequest<Full<Bytes>>) -> Result<()> {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": NODE, "namespace": "kube-node-lease"},
        "spec": {
            "holderIdentity": NODE,
            "leaseDurationSeconds": 40,
            "renewTime": jiff::Timestamp::now().round(jiff::Unit::Microsecond)?.to_string(),
        },
    });
    let req = c.request(
        Method::PATCH,
        &format!(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{NODE}?fieldManager=svcnet-bench&force=true"
        ),
        Some("application/apply-patch+yaml"),
        Bytes::from(lease.to_string()),
    );
    let (code, body) = c.send(send, req).await?;
    if !matches!(code, StatusCode::OK | StatusCode::CREATED) {
        bail!(
            "renewing the lease answered {code}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}

/// A `pods/status` merge patch as the kubelet would write it: Running, the pod's IP, and Ready and
/// ContainersReady set to `ready` (the conditions list is replaced whole, as merge patch does with lists).
fn status_request(c: &Client, name: &str, ip: &str, ready: bool) -> http::Request<Full<Bytes>> {
    let s = if ready { "True" } else { "False" };
    // Written with sub-second precision for the controller's ready-to-slice histogram, which is computed
    // from it; a server that keeps whole seconds (as metav1.Time serializes) makes that histogram coarse.
    let now = jiff::Timestamp::now().to_string();
    let body = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "conditions": [
            {"type": "Ready", "status": s, "lastTransitionTime": now},
            {"type": "ContainersReady", "status": s, "lastTransitionTime": now},
        ],
    }});
    c.request(
        Method::PATCH,
        &format!("/api/v1/namespaces/{NS}/pods/{name}/status"),
        Some("application/merge-patch+json"),
        Bytes::from(body.to_string()),
    )
}

fn svc_name(s: usize) -> String {
    format!("bench-svc-{s:04}")
}

fn pod_name(s: usize, p: usize) -> String {
    format!("bench-svc-{s:04}-{p:02}")
}

/// The unique address of pod number `i` (counting all pods): 127.244.0.1 onwards.
fn pod_ip(i: usize) -> String {
    let k = i + 1;
    format!("127.244.{}.{}", (k >> 8) & 0xff, k & 0xff)
}

fn service_json(s: usize) -> Bytes {
    Bytes::from(
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc_name(s)},
            "spec": {
                "type": "ClusterIP",
                "selector": {SVC_LABEL: svc_name(s)},
                "ports": [{"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}],
            },
        })
        .to_string(),
    )
}

fn pod_json(s: usize, p: usize) -> Bytes {
    Bytes::from(
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name(s, p), "labels": {SVC_LABEL: svc_name(s)}},
            "spec": {
                "nodeName": NODE,
                "containers": [{"name": "app", "image": "svcnet-bench", "ports": [{"containerPort": 8080}]}],
            },
        })
        .to_string(),
    )
}

/// A small deterministic PRNG (SplitMix64) for choosing pods; statistical quality is not a concern here.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Aborts a background task when the phase that started it ends, also by `--timeout`.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_endpoint_readiness_from_a_slice_event() {
        let ev: Value = serde_json::from_str(
            r#"{"type":"MODIFIED","object":{"endpoints":[
                {"addresses":["127.244.0.1"],"conditions":{"ready":false}},
                {"addresses":["127.244.0.2"],"conditions":{}}]}}"#,
        )
        .unwrap();
        assert_eq!(
            endpoint_readiness(&ev),
            vec![("127.244.0.1".into(), false), ("127.244.0.2".into(), true)]
        );
        let deleted = json!({"type": "DELETED", "object": ev["object"]});
        assert!(endpoint_readiness(&deleted).is_empty());
    }

    #[test]
    fn pod_ips_are_unique_and_in_range() {
        assert_eq!(pod_ip(0), "127.244.0.1");
        assert_eq!(pod_ip(255), "127.244.1.0");
        let ips: std::collections::HashSet<String> = (0..60_000).map(pod_ip).collect();
        assert_eq!(ips.len(), 60_000);
    }
}
