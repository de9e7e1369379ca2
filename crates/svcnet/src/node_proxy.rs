//! `svcnet node-proxy` (hidden; started by `svcnet up` and `svcnet agent`, see [`crate::proxy_process`]):
//! the node's userspace data plane in a process of its own, so that Service traffic outlives restarts of
//! the process that started it.
//!
//! It runs exactly what `up`/`agent` ran in-process with `--proxy-mode userspace` (the proxier's watches,
//! the userspace backend, kube-proxy's health server, the local routes of `--pod-network netns`), against
//! the API server through the kubeconfig, and keeps serving with what it last knew while the API server
//! is away. Its state directory holds its state file and control socket ([`crate::proxy_control`]).
//!
//! **Upgrade without refusing a connection.** A new process started while another serves the same state
//! directory asks that one for its listening sockets (`handover`), serves them from its first sync on,
//! then tells the old one, which stops accepting and drains its established connections (at most
//! `--drain-seconds`) before it exits; the local routes stay for the new one. Until then the old one
//! applies no change (its backend is held for the handover), so no socket it handed over is closed
//! under the new one.
//!
//! **Stopping.** SIGTERM/SIGINT stop it at once (listeners closed, routes removed). It also stops by itself
//! when its state file no longer names it and no handover is under way: someone removed its data
//! directory, and nothing could adopt it any more.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use ipnet::IpNet;
use prometheus_client::registry::Registry;
use svcnet_dataplane::{Backend, BackendError, Change, ServicePort};
use svcnet_proxy::UserspaceBackend;
use tracing::{info, warn};

use crate::dataplane_args::{self, DataplaneArgs, NodeNet};
use crate::proxy_control::{self as control, State};
use crate::supervise::Supervisor;

/// `svcnet node-proxy`: what `up`/`agent` pass to their proxy process.
#[derive(clap::Args)]
pub struct NodeProxyArgs {
    /// The kubeconfig to reach the API server with.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    #[command(flatten)]
    pub api: crate::api_servers::ApiServersArgs,
    /// The node's name.
    #[arg(long)]
    pub node_name: String,
    /// The node's address.
    #[arg(long)]
    pub node_ip: IpAddr,
    /// The cluster's Service ranges.
    #[arg(long, value_delimiter = ',')]
    pub service_cidr: Vec<IpNet>,
    /// The cluster's pod ranges.
    #[arg(long, value_delimiter = ',')]
    pub cluster_cidr: Vec<IpNet>,
    /// Pods live in network namespaces of their own.
    #[arg(long)]
    pub pods_in_netns: bool,
    /// Where the state file and the control socket live.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// After handing its sockets to a new process, how long established connections may go on.
    #[arg(long, default_value_t = 60)]
    pub drain_seconds: u64,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text")]
    pub log_format: String,
    #[command(flatten)]
    pub dataplane: DataplaneArgs,
}

/// The userspace backend shared between the proxier's runner (which programs it) and the control socket
/// (which hands its sockets over, holding it meanwhile so that nothing changes under the new process).
#[derive(Clone)]
pub struct SharedProxy {
    inner: Arc<Mutex<UserspaceBackend>>,
    /// Set once the backend was programmed the first time.
    synced: tokio::sync::watch::Sender<bool>,
}

impl SharedProxy {
    pub fn new(backend: UserspaceBackend) -> SharedProxy {
        SharedProxy {
            inner: Arc::new(Mutex::new(backend)),
            synced: tokio::sync::watch::Sender::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, UserspaceBackend> {
        // A panic while programming leaves the backend as consistent as any failed sync does.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The backend as a [`Backend`] for the proxier.
    pub fn backend(&self) -> Box<dyn Backend> {
        Box::new(self.clone())
    }
}

impl Backend for SharedProxy {
    fn name(&self) -> &'static str {
        "userspace"
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), BackendError> {
        let r = self.lock().apply(changes);
        self.synced.send_replace(true);
        r
    }

    fn sync_all(&mut self, ports: &[Arc<ServicePort>]) -> Result<(), BackendError> {
        let r = self.lock().sync_all(ports);
        self.synced.send_replace(true);
        r
    }
}

/// The binary and arguments a process runs with (the state file's fingerprint).
pub fn fingerprint(args: &[String]) -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let stamp = std::fs::metadata(&exe)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{}@{stamp} {}", exe.display(), args.join(" ")).replace('\n', " ")
}

/// Asks the process serving `dir` now, if any, for its listening sockets. Returns the connection (kept
/// open until the new process serves them) and the sockets.
fn ask_for_sockets(
    dir: &Path,
) -> Option<(std::os::unix::net::UnixStream, Vec<svcnet_proxy::InheritedSocket>)> {
    let old = State::read(dir).filter(State::alive)?;
    let mut s = control::connect(&control::socket_path(dir), Duration::from_secs(10)).ok()?;
    let got = control::write_message(&mut s, "handover").and_then(|()| control::receive_sockets(&mut s));
    match got {
        Ok(sockets) => {
            info!(
                old_pid = old.pid,
                sockets = sockets.len(),
                "took the listening sockets of the proxy process this one replaces"
            );
            Some((s, sockets))
        }
        Err(e) => {
            warn!(old_pid = old.pid, error = %e, "the running proxy process did not hand its sockets over; binding anew");
            None
        }
    }
}

/// Runs the proxy process until SIGTERM/SIGINT, a failed task, its state file naming another process
/// while no handover is under way, or the end of its drain after a handover.
pub fn run(args: NodeProxyArgs, argv: Vec<String>) -> Result<()> {
    crate::raise_fd_limit(Some("userspace"));
    crate::private_dir(&args.state_dir)?;
    let dir = args.state_dir.canonicalize()?;
    let handover = ask_for_sockets(&dir);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(serve(args, dir, argv, handover))
}

async fn serve(
    args: NodeProxyArgs,
    dir: PathBuf,
    argv: Vec<String>,
    handover: Option<(std::os::unix::net::UnixStream, Vec<svcnet_proxy::InheritedSocket>)>,
) -> Result<()> {
    let mut registry = Registry::default();
    // A balancer of its own over the agent's --api-servers (a free port): this process outlives agents.
    let (client, balancer) = crate::api_servers::connect(
        Some(&args.kubeconfig),
        &args.api,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(&mut registry),
    )
    .await?;
    let (mut old, inherited) = match handover {
        Some((conn, sockets)) => (Some(conn), sockets),
        None => (None, Vec::new()),
    };
    let mut handoff = dataplane_args::Handoff {
        inherited,
        backend: None,
    };
    let mut dataplane = args.dataplane.clone();
    dataplane.proxy_mode = dataplane_args::ProxyMode::Userspace;
    let (routes, task) = dataplane_args::start_with(
        &dataplane,
        client,
        NodeNet {
            name: &args.node_name,
            ip: args.node_ip,
            service_cidrs: &args.service_cidr,
            pod_cidrs: &args.cluster_cidr,
            pods_in_netns: args.pods_in_netns,
        },
        &mut registry,
        Some(&mut handoff),
    )
    .await?;
    let proxy = handoff
        .backend
        .ok_or_else(|| anyhow!("the userspace backend did not start"))?;
    let mut supervisor = Supervisor::new();
    if let Some(task) = task {
        supervisor.watch_spawned("dataplane", task);
    }
    if let Some(b) = balancer {
        b.supervise(&supervisor);
    }
    if let Some(conn) = old.as_mut() {
        // Serve the handed-over sockets from the first sync on, then let the old process go.
        // The old process waits 60 s for the answer; without a first sync by then it keeps serving, and
        // this one goes away rather than take sockets it cannot serve yet.
        let mut synced = proxy.synced.subscribe();
        if tokio::time::timeout(Duration::from_secs(50), synced.wait_for(|s| *s))
            .await
            .is_err()
        {
            return Err(anyhow!(
                "no first sync within 50 s (is the API server reachable?); the running proxy process \
                 keeps serving"
            ));
        }
        let unused = proxy.lock().drop_unused_inherited();
        // A few local messages; the old process answers at once.
        let answer = control::write_message(conn, "taken").and_then(|()| control::read_message(conn));
        info!(unused, answer = ?answer.as_ref().map(String::as_str), "the old proxy process stopped accepting; this one serves the node");
    }
    let me = std::process::id();
    let state = State {
        pid: me,
        start: control::proc_start(me).context("reading this process's start time")?,
        fingerprint: fingerprint(&argv),
    };
    let listener = control::listen(&control::socket_path(&dir))
        .with_context(|| format!("control socket in {}", dir.display()))?;
    state.write(&dir).context("writing the proxy's state file")?;
    let registry = Arc::new(registry);
    let (retired_tx, mut retired) = tokio::sync::watch::channel(false);
    let handed_over = retired.clone();
    {
        let (proxy, registry) = (proxy.clone(), registry.clone());
        std::thread::Builder::new()
            .name("proxy-control".into())
            .spawn(move || control_loop(listener, proxy, registry, retired_tx))?;
    }
    info!(pid = me, dir = %dir.display(), "the node's userspace proxy serves in its own process");
    let mut check = tokio::time::interval(Duration::from_secs(2));
    let outcome = loop {
        tokio::select! {
            _ = crate::shutdown_signal() => {
                info!("userspace proxy process stopping");
                break Ok(());
            }
            stopped = supervisor.failed() => break Err(anyhow!("{} stopped: {}", stopped.name, stopped.reason())),
            _ = retired.wait_for(|r| *r) => {
                // The new process owns the routes, the state file and the control socket now.
                if let Some(r) = routes {
                    r.keep();
                }
                drain(&proxy, Duration::from_secs(args.drain_seconds)).await;
                return Ok(());
            }
            _ = check.tick() => {
                if !*handed_over.borrow() && State::read(&dir).is_none_or(|s| s.pid != me) {
                    warn!(dir = %dir.display(), "the proxy's state file is gone or names another process; stopping");
                    // Without shutdown(2): another process may share the listening sockets.
                    proxy.lock().retire();
                    break Ok(());
                }
            }
        }
    };
    if State::read(&dir).is_some_and(|s| s.pid == me) {
        let _ = std::fs::remove_file(control::state_path(&dir));
        let _ = std::fs::remove_file(control::socket_path(&dir));
    }
    drop(routes);
    outcome
}

/// Waits for the established connections of a retired backend to end, at most `limit`.
async fn drain(proxy: &SharedProxy, limit: Duration) {
    let until = tokio::time::Instant::now() + limit;
    let start = proxy.lock().active_connections();
    info!(
        connections = start,
        "handed over; draining established connections"
    );
    loop {
        let left = proxy.lock().active_connections();
        if left <= 0 {
            info!("drained; exiting");
            return;
        }
        if tokio::time::Instant::now() >= until {
            warn!(
                connections = left,
                "drain time is up; closing the connections left"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Answers the control socket (see [`crate::proxy_control`]), one thread per connection.
fn control_loop(
    listener: std::os::fd::OwnedFd,
    proxy: SharedProxy,
    registry: Arc<Registry>,
    retired: tokio::sync::watch::Sender<bool>,
) {
    loop {
        let mut conn = match control::accept(&listener) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "control socket accept failed");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let (proxy, registry, retired) = (proxy.clone(), registry.clone(), retired.clone());
        let _ = std::thread::Builder::new()
            .name("proxy-control-conn".into())
            .spawn(move || {
                let _ = conn.set_read_timeout(Some(Duration::from_secs(60)));
                if let Err(e) = answer(&mut conn, &proxy, &registry, &retired) {
                    warn!(error = %e, "control request failed");
                }
            });
    }
}

fn answer(
    conn: &mut std::os::unix::net::UnixStream,
    proxy: &SharedProxy,
    registry: &Registry,
    retired: &tokio::sync::watch::Sender<bool>,
) -> Result<()> {
    match control::read_message(conn)?.as_str() {
        "ping" => control::write_message(conn, &format!("ok {}", std::process::id()))?,
        "metrics" => {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry)?;
            control::send_metrics(conn, &text)?;
        }
        "handover" => {
            // Held until the new process serves the sockets (or gives up): nothing closes one meanwhile.
            let mut backend = proxy.lock();
            let sockets = backend.listening_sockets()?;
            info!(
                sockets = sockets.len(),
                "handing the listening sockets to a new proxy process"
            );
            control::send_sockets(conn, &sockets)?;
            drop(sockets);
            match control::read_message(conn) {
                Ok(m) if m == "taken" => {
                    backend.retire();
                    drop(backend);
                    let _ = control::write_message(conn, "bye");
                    retired.send_replace(true);
                }
                other => {
                    warn!(answer = ?other.map_err(|e| e.to_string()), "the new proxy process did not take the sockets; serving on");
                }
            }
        }
        other => control::write_message(conn, &format!("error: unknown request {other:?}"))?,
    }
    Ok(())
}
