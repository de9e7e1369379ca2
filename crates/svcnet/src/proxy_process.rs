//! The node's userspace proxy as a process of its own, started or adopted by `svcnet up` and `svcnet
//! agent` (`--proxy-mode userspace`), so that restarting them (SIGTERM or SIGKILL) neither drops an
//! established connection nor refuses a new one through a ClusterIP or NodePort.
//!
//! `up`/`agent` look at the proxy's state directory (`<data dir>/proxy`, see [`crate::proxy_control`]):
//! a process that still runs (same PID and start time), answers on its control socket and runs the same
//! binary with the same arguments is **adopted** as it is; it never stopped serving. Otherwise a new
//! `svcnet node-proxy` ([`crate::node_proxy`]) is started in its own session (so that no signal to the
//! starter's group reaches it), with the starter's stderr as its log; if an older one still serves (an
//! upgraded binary, changed flags), the new one takes its listening sockets over and the old one drains.
//! The starter watches the process (a supervised task, `userspace-proxy`) and starts it again if it dies.
//! Its metrics are served on the starter's `--metrics-listen` beside the starter's own.
//!
//! With `--stop-pods-on-exit` the process is stopped (SIGTERM, verified by start time) when `up`/`agent`
//! exits; otherwise it keeps serving for the next one to adopt. Other proxy modes run in-process as
//! before (nftables rules stay in the kernel anyway).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus_client::registry::Registry;
use tracing::{info, warn};

use crate::dataplane_args::{self, DataplaneArgs, LocalRoutes, NodeNet, ProxyMode};
use crate::proxy_control::{self as control, State};
use crate::supervise::Supervisor;

/// Where the proxy process of `up`/`agent` keeps its state, and what it logs like.
pub struct Detached<'a> {
    /// The kubeconfig the process reaches the API server with.
    pub kubeconfig: &'a Path,
    /// The agent's `--api-servers`: the process runs a balancer of its own over them, so that it keeps
    /// its API connection while the agent restarts.
    pub api_servers: &'a [http::Uri],
    /// Its state directory.
    pub state_dir: PathBuf,
    /// Its log format.
    pub log_format: &'a str,
}

/// The node's data plane as `up`/`agent` run it; hold it until they exit.
pub enum NodeDataplane {
    /// In this process (nftables, or none), with the local routes it added (removed on drop).
    InProcess { _routes: Option<LocalRoutes> },
    /// The userspace proxy process.
    Process(Arc<ProxyProcess>),
}

impl NodeDataplane {
    /// The proxy process's state directory, whose metrics join the starter's.
    pub fn proxy_dir(&self) -> Option<PathBuf> {
        match self {
            NodeDataplane::Process(p) => Some(p.dir.clone()),
            NodeDataplane::InProcess { .. } => None,
        }
    }

    /// Stops the proxy process, if there is one (`--stop-pods-on-exit`).
    pub async fn stop(&self) {
        if let NodeDataplane::Process(p) = self {
            let p = p.clone();
            let _ = tokio::task::spawn_blocking(move || p.stop()).await;
        }
    }
}

/// Starts the node's data plane: the userspace proxy as a process of its own (adopting a running one),
/// any other mode in this process as [`dataplane_args::start`] does. Its task goes to `supervisor`.
pub async fn start_node_dataplane(
    args: &DataplaneArgs,
    client: kube::Client,
    node: NodeNet<'_>,
    registry: &mut Registry,
    detached: Detached<'_>,
    supervisor: &Supervisor,
) -> Result<NodeDataplane> {
    if args.proxy_mode != ProxyMode::Userspace {
        // A userspace proxy a previous svcnet left running would serve beside (or instead of) this mode.
        if let Some(s) = State::read(&detached.state_dir).filter(State::alive) {
            info!(
                pid = s.pid,
                "stopping the userspace proxy process a previous svcnet left running (another --proxy-mode now)"
            );
            let old = ProxyProcess {
                dir: detached.state_dir.clone(),
                argv: Vec::new(),
                current: Mutex::new(Current {
                    pid: s.pid,
                    start: Some(s.start),
                    child: None,
                }),
                stopping: AtomicBool::new(true),
                last_spawn: Mutex::new(None),
            };
            tokio::task::spawn_blocking(move || old.stop()).await?;
        }
        let (routes, task) = dataplane_args::start(args, client, node, registry).await?;
        if let Some(task) = task {
            supervisor.watch_spawned("dataplane", task);
        }
        return Ok(NodeDataplane::InProcess { _routes: routes });
    }
    let argv = node_proxy_args(args, &node, &detached)?;
    let dir = detached.state_dir;
    crate::private_dir(&dir)?;
    let process =
        Arc::new(tokio::task::spawn_blocking(move || ProxyProcess::start_or_adopt(dir, argv)).await??);
    let watched = process.clone();
    supervisor.spawn("userspace-proxy", async move {
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let p = watched.clone();
            tokio::task::spawn_blocking(move || p.keep_running()).await??;
        }
    });
    Ok(NodeDataplane::Process(process))
}

/// The arguments of `svcnet node-proxy` for this node.
fn node_proxy_args(args: &DataplaneArgs, node: &NodeNet<'_>, d: &Detached<'_>) -> Result<Vec<String>> {
    let kubeconfig = d
        .kubeconfig
        .canonicalize()
        .with_context(|| format!("kubeconfig {}", d.kubeconfig.display()))?;
    let mut v: Vec<String> = vec!["node-proxy".into()];
    let mut add = |k: &str, val: String| {
        v.push(k.into());
        v.push(val);
    };
    add("--kubeconfig", kubeconfig.display().to_string());
    if !d.api_servers.is_empty() {
        let urls: Vec<String> = d.api_servers.iter().map(|u| u.to_string()).collect();
        add("--api-servers", urls.join(","));
    }
    add("--node-name", node.name.to_string());
    add("--node-ip", node.ip.to_string());
    add("--state-dir", d.state_dir.display().to_string());
    add("--log-format", d.log_format.to_string());
    add("--proxy-threads", args.proxy_threads.to_string());
    add("--proxy-balancing", args.proxy_balancing.to_string());
    add("--proxy-resync-seconds", args.proxy_resync_seconds.to_string());
    add("--healthz-listen", args.healthz_listen.to_string());
    for a in &args.nodeport_addresses {
        add("--nodeport-address", a.to_string());
    }
    let join = |c: &[ipnet::IpNet]| c.iter().map(|c| c.to_string()).collect::<Vec<_>>().join(",");
    if !node.service_cidrs.is_empty() {
        add("--service-cidr", join(node.service_cidrs));
    }
    if !node.pod_cidrs.is_empty() {
        add("--cluster-cidr", join(node.pod_cidrs));
    }
    if node.pods_in_netns {
        v.push("--pods-in-netns".into());
    }
    Ok(v)
}

/// The process serving the node now.
struct Current {
    pid: u32,
    start: Option<u64>,
    /// Set when this process started it (to reap it); `None` when adopted.
    child: Option<Child>,
}

/// The userspace proxy process of this node.
pub struct ProxyProcess {
    dir: PathBuf,
    argv: Vec<String>,
    current: Mutex<Current>,
    stopping: AtomicBool,
    /// When it was last started again after it ended.
    last_spawn: Mutex<Option<std::time::Instant>>,
}

/// How often a proxy process that keeps ending is started again.
const RESPAWN_EVERY: Duration = Duration::from_secs(5);

/// `setsid` from util-linux, so the process gets a session of its own.
fn setsid_tool() -> Option<&'static str> {
    [
        "/usr/bin/setsid",
        "/bin/setsid",
        "/usr/sbin/setsid",
        "/sbin/setsid",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
}

impl ProxyProcess {
    fn start_or_adopt(dir: PathBuf, argv: Vec<String>) -> Result<ProxyProcess> {
        let fingerprint = crate::node_proxy::fingerprint(&argv);
        if let Some(s) = State::read(&dir).filter(State::alive) {
            if control::ping(&dir) == Some(s.pid) {
                if s.fingerprint == fingerprint {
                    info!(
                        pid = s.pid,
                        "adopted the node's userspace proxy process a previous svcnet left running"
                    );
                    return Ok(ProxyProcess {
                        dir,
                        argv,
                        current: Mutex::new(Current {
                            pid: s.pid,
                            start: Some(s.start),
                            child: None,
                        }),
                        stopping: AtomicBool::new(false),
                        last_spawn: Mutex::new(None),
                    });
                }
                info!(
                    pid = s.pid,
                    "the running userspace proxy process has another binary or other flags; a new one takes \
                     its listening sockets over"
                );
            } else {
                warn!(
                    pid = s.pid,
                    "the recorded userspace proxy process does not answer; killing it"
                );
                signal(s.pid, Some(s.start), rustix::process::Signal::KILL);
            }
        }
        let current = spawn(&argv)?;
        Ok(ProxyProcess {
            dir,
            argv,
            current: Mutex::new(current),
            stopping: AtomicBool::new(false),
            last_spawn: Mutex::new(None),
        })
    }

    /// Starts the process again if it is gone (unless it is being stopped).
    fn keep_running(&self) -> Result<()> {
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if self.stopping.load(Ordering::Relaxed) {
            return Ok(());
        }
        let gone = match cur.child.as_mut() {
            Some(child) => child.try_wait()?.map(|status| status.to_string()),
            None => (cur.start.is_none() || control::proc_start(cur.pid) != cur.start)
                .then(|| "it is gone".to_string()),
        };
        let Some(why) = gone else { return Ok(()) };
        // Replaced by a newer process (which took its sockets over): follow that one.
        if let Some(s) = State::read(&self.dir).filter(|s| s.pid != cur.pid && s.alive())
            && control::ping(&self.dir) == Some(s.pid)
        {
            info!(
                old = cur.pid,
                pid = s.pid,
                "the node's userspace proxy process was replaced; following the new one"
            );
            *cur = Current {
                pid: s.pid,
                start: Some(s.start),
                child: None,
            };
            return Ok(());
        }
        // One that cannot start at all (say its control socket cannot be bound) is tried every
        // RESPAWN_EVERY, not every second: two log lines per try.
        let mut last = self.last_spawn.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_some_and(|t| t.elapsed() < RESPAWN_EVERY) {
            return Ok(());
        }
        *last = Some(std::time::Instant::now());
        warn!(pid = cur.pid, status = %why, "the node's userspace proxy process ended; starting it again");
        *cur = spawn(&self.argv)?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after 10 s.
    fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        info!(pid = cur.pid, "stopping the node's userspace proxy process");
        signal(cur.pid, cur.start, rustix::process::Signal::TERM);
        let until = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let gone = match cur.child.as_mut() {
                Some(c) => !matches!(c.try_wait(), Ok(None)),
                None => cur.start.is_none() || control::proc_start(cur.pid) != cur.start,
            };
            if gone {
                return;
            }
            if std::time::Instant::now() >= until {
                warn!(
                    pid = cur.pid,
                    "the userspace proxy process did not stop in 10 s; killing it"
                );
                signal(cur.pid, cur.start, rustix::process::Signal::KILL);
                if let Some(c) = cur.child.as_mut() {
                    let _ = c.wait();
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Sends `sig` to `pid` if it is still the process that started at `start`.
fn signal(pid: u32, start: Option<u64>, sig: rustix::process::Signal) {
    if start.is_none() || control::proc_start(pid) != start {
        return;
    }
    if let Some(pid) = i32::try_from(pid).ok().and_then(rustix::process::Pid::from_raw) {
        let _ = rustix::process::kill_process(pid, sig);
    }
}

/// Starts `svcnet node-proxy` in a session of its own, logging to this process's stderr.
fn spawn(argv: &[String]) -> Result<Current> {
    let exe = std::env::current_exe().context("finding the svcnet binary")?;
    // `setsid` execs svcnet (it forks only when started as a group leader, which this child is not),
    // so the PID is svcnet's.
    let mut cmd = match setsid_tool() {
        Some(tool) => {
            let mut c = Command::new(tool);
            c.arg(&exe);
            c
        }
        None => {
            use std::os::unix::process::CommandExt;
            let mut c = Command::new(&exe);
            c.process_group(0);
            c
        }
    };
    let child = cmd
        .args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting the userspace proxy process")?;
    // The start time stays across `setsid`'s exec: it names this process from its fork on.
    let pid = child.id();
    info!(pid, "started the node's userspace proxy process");
    Ok(Current {
        pid,
        start: control::proc_start(pid),
        child: Some(child),
    })
}

/// The proxy process's metrics, to append to the starter's (`None` if it does not answer).
pub fn metrics_of(dir: &Path) -> Option<String> {
    control::metrics(dir).ok()
}
