//! `svcnet dns --kubeconfig FILE --conf Corefile`: the cluster DNS server alone against any Kubernetes
//! API server, as a drop-in for CoreDNS, configured by the Corefile the cluster already has (the subset
//! [`svcnet_dns::corefile`] understands). Besides DNS it serves what CoreDNS's plugins serve: `health`
//! (`/health`, with `lameduck`), `ready` (`/ready`), `prometheus` (`/metrics`), and it honours `reload`
//! (the Corefile is re-read on its interval; a bad one is logged and the running configuration stays)
//! and `loop` (a forwarding loop back to this server stops it, as CoreDNS does).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use prometheus_client::registry::Registry;
use svcnet_dns::corefile::Plan;
use svcnet_proxier::http::{not_found, response, serve_paths};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

/// `svcnet dns`'s flags.
#[derive(clap::Args, Debug)]
pub struct DnsCmdArgs {
    /// The kubeconfig to reach the API server with (default: the Corefile's `kubernetes { kubeconfig }`,
    /// else the pod's service account, when run in a pod).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    api: crate::api_servers::ApiServersArgs,
    /// The Corefile (CoreDNS's `-conf`).
    #[arg(long = "conf", value_name = "FILE", default_value = "Corefile")]
    conf: PathBuf,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

/// What the status endpoints read.
#[derive(Default)]
struct State {
    /// Told to stop: `/ready` says so while `lameduck` runs out.
    stopping: AtomicBool,
}

/// One running configuration: the DNS server and its plugins' HTTP servers.
struct Instance {
    tasks: Vec<JoinHandle<()>>,
    /// Ends with the DNS server (it stops only if every watch ends or a listener fails).
    server: JoinHandle<Result<(), svcnet_dns::DnsError>>,
    /// Set when `loop` found a loop.
    loop_probe: Option<Arc<svcnet_dns::server::LoopProbe>>,
    /// The address the loop probe was sent to.
    probe_target: Option<SocketAddr>,
}

impl Instance {
    /// Stops everything and waits until the sockets are closed, so that a new instance can bind them.
    async fn stop(self) {
        self.server.abort();
        let _ = self.server.await;
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
    }
}

fn read_plan(path: &Path) -> Result<(String, Plan)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading the Corefile {}", path.display()))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let plan = Plan::from_corefile(&text, &name, &|f| std::fs::read_to_string(f))?;
    Ok((text, plan))
}

/// Runs the DNS server until SIGINT/SIGTERM (then `lameduck`), a loop is found, or it fails.
pub async fn run(args: DnsCmdArgs) -> Result<()> {
    let (mut text, mut plan) = read_plan(&args.conf)?;
    let kubeconfig = args.kubeconfig.clone().or_else(|| plan.kubeconfig.clone());
    let mut registry = Registry::default();
    let (client, mut balancer) = crate::api_servers::connect(
        kubeconfig.as_deref(),
        &args.api,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(&mut registry),
    )
    .await?;
    let metrics = svcnet_dns::Metrics::new(&mut registry);
    let registry = Arc::new(registry);
    let state = Arc::new(State::default());
    let mut inst = start(&plan, &client, &metrics, &registry, &state).await?;
    info!(conf = %args.conf.display(), listen = ?plan.dns.listen, "svcnet dns serving");
    println!("svcnet dns: serving the cluster's DNS on {:?}", plan.dns.listen);
    loop {
        let reload = plan.reload.clone();
        let tick = async {
            match &reload {
                Some(r) => {
                    let jitter = r.jitter.mul_f64(rand::random::<f64>());
                    tokio::time::sleep(r.interval + jitter).await
                }
                None => std::future::pending().await,
            }
        };
        let looped = async {
            match &inst.loop_probe {
                Some(p) => p.detected.notified().await,
                None => std::future::pending().await,
            }
        };
        let balancer_stopped = async {
            match balancer.as_mut() {
                Some(b) => b.stopped().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            e = balancer_stopped => {
                inst.stop().await;
                bail!("the API server balancer stopped: {e}");
            }
            _ = crate::shutdown_signal() => {
                state.stopping.store(true, Ordering::Relaxed);
                if let Some(h) = plan.health.as_ref().filter(|h| !h.lameduck.is_zero()) {
                    info!("Going into lameduck mode for {:?}", h.lameduck);
                    tokio::time::sleep(h.lameduck).await;
                }
                inst.stop().await;
                return Ok(());
            }
            _ = looped => {
                let probe = inst.loop_probe.clone().map(|p| p.name.clone()).unwrap_or_default();
                let target = inst.probe_target.map(|a| a.to_string()).unwrap_or_default();
                let port = plan.dns.listen.first().map(|a| a.port()).unwrap_or(53);
                inst.stop().await;
                bail!(
                    "plugin/loop: Loop ({target} -> :{port}) detected for zone \".\", see \
                     https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO {probe}.\""
                );
            }
            ended = &mut inst.server => {
                let why = match ended {
                    Ok(Ok(())) => "every watch of the API server ended".to_string(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                for t in std::mem::take(&mut inst.tasks) {
                    t.abort();
                }
                bail!("cluster DNS server stopped: {why}");
            }
            _ = tick => {
                let new_text = match std::fs::read_to_string(&args.conf) {
                    Ok(t) => t,
                    Err(e) => {
                        warn!(conf = %args.conf.display(), error = %e, "Corefile reload: cannot read the file");
                        metrics.reload_failed();
                        continue;
                    }
                };
                if new_text == text {
                    continue;
                }
                info!("Reloading");
                let new_plan = match read_plan(&args.conf) {
                    Ok((_, p)) => p,
                    Err(e) => {
                        error!("Corefile changed but reload failed: {e:#}");
                        metrics.reload_failed();
                        // Not retried until the file changes again.
                        text = new_text;
                        continue;
                    }
                };
                inst.stop().await;
                match start(&new_plan, &client, &metrics, &registry, &state).await {
                    Ok(i) => {
                        inst = i;
                        plan = new_plan;
                        info!(listen = ?plan.dns.listen, "Reloading complete");
                    }
                    Err(e) => {
                        error!("reloaded Corefile cannot be served, keeping the previous one: {e:#}");
                        metrics.reload_failed();
                        inst = start(&plan, &client, &metrics, &registry, &state).await?;
                    }
                }
                text = new_text;
            }
        }
    }
}

async fn bind_http(addr: SocketAddr, what: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("plugin/{what}: listening on {addr}"))
}

/// Starts a configuration: binds everything first (so a reload that cannot bind changes nothing), then
/// serves.
async fn start(
    plan: &Plan,
    client: &kube::Client,
    metrics: &svcnet_dns::Metrics,
    registry: &Arc<Registry>,
    state: &Arc<State>,
) -> Result<Instance> {
    // The previous configuration's listeners close as their tasks wind down: a reload on the same
    // addresses waits a moment for them.
    let mut tries = 0;
    let server = loop {
        match svcnet_dns::DnsServer::bind(plan.dns.clone(), metrics.clone()).await {
            Ok(s) => break s,
            Err(svcnet_dns::DnsError::Bind { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && tries < 20 =>
            {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(anyhow!("listening for DNS: {e}")),
        }
    };
    let health = match &plan.health {
        Some(h) => Some(bind_http(h.addr, "health").await?),
        None => None,
    };
    let ready = match plan.ready {
        Some(a) => Some(bind_http(a, "ready").await?),
        None => None,
    };
    let prometheus = match plan.prometheus {
        Some(a) => Some(bind_http(a, "prometheus").await?),
        None => None,
    };
    let reader = server.zone_reader();
    let loop_probe = plan.loop_detect.then(|| server.arm_loop_probe());
    let probe_target = server.local_addrs().first().map(|a| {
        let ip = match a.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        SocketAddr::new(ip, a.port())
    });
    let mut tasks = Vec::new();
    if let Some(l) = health {
        tasks.push(tokio::spawn(serve_paths(l, |path| match path {
            // CoreDNS's health plugin answers OK while the process runs, lameduck included.
            "/health" => response(200, "text/plain; charset=utf-8", "OK"),
            _ => not_found(),
        })));
    }
    if let Some(l) = ready {
        let state = state.clone();
        tasks.push(tokio::spawn(serve_paths(l, move |path| {
            if path != "/ready" {
                return not_found();
            }
            let synced = reader.clone().load().synced();
            if synced && !state.stopping.load(Ordering::Relaxed) {
                response(200, "text/plain; charset=utf-8", "OK")
            } else {
                // CoreDNS names the plugins that are not ready.
                response(503, "text/plain; charset=utf-8", "kubernetes")
            }
        })));
    }
    if let Some(l) = prometheus {
        let registry = registry.clone();
        tasks.push(tokio::spawn(serve_paths(l, move |path| match path {
            "/metrics" => response(
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                svcnet_dns::metrics_text(&registry),
            ),
            _ => not_found(),
        })));
    }
    if let (Some(probe), Some(target)) = (&loop_probe, probe_target) {
        tasks.push(tokio::spawn(send_loop_probe(probe.clone(), target)));
    }
    let client = client.clone();
    let server = tokio::spawn(async move { server.serve(client).await });
    Ok(Instance {
        tasks,
        server,
        loop_probe,
        probe_target,
    })
}

/// Sends the loop probe to this server until an answer comes back (CoreDNS's `loop`: every 0.5 s for up
/// to 30 s). In a loop the question comes back to the server again and again instead.
async fn send_loop_probe(probe: Arc<svcnet_dns::server::LoopProbe>, target: SocketAddr) {
    let Ok(name) = Name::from_ascii(format!("{}.", probe.name)) else {
        return;
    };
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(name, RecordType::HINFO));
    let Ok(pkt) = q.to_vec() else { return };
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    };
    let Ok(sock) = tokio::net::UdpSocket::bind(local).await else {
        return;
    };
    let mut buf = [0u8; 512];
    for _ in 0..60 {
        if sock.send_to(&pkt, target).await.is_ok()
            && let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), sock.recv(&mut buf)).await
            && let Ok(m) = Message::from_vec(&buf[..n])
            && m.metadata.response_code != hickory_proto::op::ResponseCode::ServFail
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
