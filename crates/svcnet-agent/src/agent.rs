//! The node agent: the kubelet's job for svcnet. It registers the node, keeps its Lease fresh, watches
//! the pods bound to it and hands them to the [`crate::runner::PodRunner`], writes their
//! status back whenever it changes, finishes graceful deletions, and serves container logs.
//!
//! Everything it knows comes from the Kubernetes API (watch), so the same agent works against any API
//! server. Pod IPs come from the node's `spec.podCIDR`. In the host pod network ([`PodNetwork::Host`]) that
//! lies inside 127.0.0.0/8 by default: each pod binds its own loopback address, told to it as `POD_IP`. In
//! the netns pod network ([`PodNetwork::Netns`], root) each pod gets its own network namespace on the node
//! bridge (see [`crate::netns`]), and the bridge's gateway address is never a pod's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde_json::json;
use svcnet_alloc::ClusterIpAllocator;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::netns::{self, NetnsError, PodNet, PodNetSpec};
use crate::node::{self, NodeConfig};
use crate::podip::PodIps;
use crate::runner::{PodContext, PodRunner};

/// How long a deleted pod's logs stay readable on the node.
const LOG_RETENTION: Duration = Duration::from_secs(60);

/// Settings of the agent.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This node.
    pub node_name: String,
    /// The node's InternalIP.
    pub node_ip: IpAddr,
    /// Where pod state and logs live.
    pub root: PathBuf,
    /// Where the agent's own endpoint (container logs) listens; port 0 picks one.
    pub listen: SocketAddr,
    /// Labels to put on the Node.
    pub labels: BTreeMap<String, String>,
    /// The node Lease's duration; it is renewed every quarter of it, as the kubelet does.
    pub lease_duration: Duration,
    /// How pods are networked.
    pub pod_network: PodNetwork,
}

/// How pods are networked (`--pod-network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PodNetwork {
    /// Pods share the node's network namespace and bind their own (loopback) pod IP; no root needed.
    #[default]
    Host,
    /// Each pod gets its own network namespace on the node bridge (root); see [`crate::netns`].
    Netns,
}

/// An unknown `--pod-network` value.
#[derive(Debug, thiserror::Error)]
#[error("unknown pod network {0:?}: use `host` or `netns`")]
pub struct UnknownPodNetwork(String);

impl std::str::FromStr for PodNetwork {
    type Err = UnknownPodNetwork;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host" => Ok(PodNetwork::Host),
            "netns" => Ok(PodNetwork::Netns),
            other => Err(UnknownPodNetwork(other.to_string())),
        }
    }
}

impl std::fmt::Display for PodNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PodNetwork::Host => "host",
            PodNetwork::Netns => "netns",
        })
    }
}

/// Errors that stop the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Talking to the API failed at start-up.
    #[error(transparent)]
    Node(#[from] node::NodeError),
    /// The agent's endpoint could not listen.
    #[error("agent endpoint: {0}")]
    Listen(std::io::Error),
    /// The netns pod network could not be set up.
    #[error("pod network: {0}")]
    Netns(#[from] NetnsError),
}

/// Kubernetes' service environment variables for a pod in `namespace` (`getServiceEnvVarMap`): every
/// Service of the namespace (when `enable_links`) and `default/kubernetes` (always), with a ClusterIP.
pub fn service_env(services: &[Arc<Service>], namespace: &str, enable_links: bool) -> Vec<(String, String)> {
    let mut out = BTreeMap::new();
    for svc in services {
        let ns = svc.namespace().unwrap_or_default();
        let name = svc.name_any();
        let is_master = ns == "default" && name == "kubernetes";
        if !(is_master || (enable_links && ns == namespace)) {
            continue;
        }
        let Some(spec) = svc.spec.as_ref() else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let Some(ports) = spec.ports.as_ref().filter(|p| !p.is_empty()) else {
            continue;
        };
        let prefix = name.to_uppercase().replace('-', "_");
        let host = if ip.contains(':') {
            format!("[{ip}]")
        } else {
            ip.to_string()
        };
        out.insert(format!("{prefix}_SERVICE_HOST"), ip.to_string());
        out.insert(format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string());
        let first_proto = ports[0].protocol.as_deref().unwrap_or("TCP").to_lowercase();
        out.insert(
            format!("{prefix}_PORT"),
            format!("{first_proto}://{host}:{}", ports[0].port),
        );
        for p in ports {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.insert(
                    format!("{prefix}_SERVICE_PORT_{}", pn.to_uppercase().replace('-', "_")),
                    p.port.to_string(),
                );
            }
            let base = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.insert(
                base.clone(),
                format!("{}://{host}:{}", proto.to_lowercase(), p.port),
            );
            out.insert(format!("{base}_PROTO"), proto.to_lowercase());
            out.insert(format!("{base}_PORT"), p.port.to_string());
            out.insert(format!("{base}_ADDR"), ip.to_string());
        }
    }
    out.into_iter().collect()
}

/// Whether `pid` is a container process a previous run of this agent started for the pod at `pod_ip`:
/// the leader of its own process group, with that pod's `POD_IP` in its environment. Anything else is
/// not ours and is never touched.
fn leftover_container(pid: i32, pod_ip: &str) -> bool {
    let pgid_ok =
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).is_ok_and(|g| g.as_raw() == pid);
    let env_ok = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|e| {
            e.split(|b| *b == 0)
                .any(|kv| kv == format!("POD_IP={pod_ip}").as_bytes())
        })
        .unwrap_or(false);
    pgid_ok && env_ok
}

/// A previous run's processes cannot be adopted (their pipes and waits belonged to it): stop them so the
/// pod restarts cleanly under this agent, and say so on the pod, as the issue allows.
async fn stop_leftovers(client: &Client, pods: &[Pod]) {
    use nix::sys::signal::{Signal, killpg};
    for pod in pods {
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let Some(ip) = status.pod_ip.as_deref() else {
            continue;
        };
        let mut stopped = Vec::new();
        for cs in status.container_statuses.iter().flatten() {
            let Some(pid) = cs
                .container_id
                .as_deref()
                .and_then(|c| c.strip_prefix("svcnet://"))
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if pid <= 1 || !leftover_container(pid, ip) {
                continue;
            }
            let group = nix::unistd::Pid::from_raw(pid);
            let _ = killpg(group, Signal::SIGTERM);
            for _ in 0..20 {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = killpg(group, Signal::SIGKILL);
            stopped.push(cs.name.clone());
        }
        if stopped.is_empty() {
            continue;
        }
        warn!(pod = %pod.name_any(), containers = ?stopped, "stopped containers a previous agent left running; restarting them");
        let ns = pod.namespace().unwrap_or_default();
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.{:x}", pod.name_any(), jiff::Timestamp::now().as_nanosecond()), "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "namespace": ns, "uid": pod.uid()},
            "reason": "Killing", "type": "Normal",
            "message": format!("svcnet agent restarted and cannot adopt running containers {stopped:?}; restarting them"),
            "source": {"component": "svcnet-agent"},
            "firstTimestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "lastTimestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "count": 1,
        });
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
        if let Ok(ev) = serde_json::from_value(event)
            && let Err(e) = events.create(&Default::default(), &ev).await
        {
            warn!(pod = %pod.name_any(), error = %e, "could not record the restart event");
        }
    }
}

/// Runs the agent until `shutdown` resolves; then, if `stop_pods_on_exit`, stops every pod it runs
/// (`svcnet up`: the node goes away with the process) before returning.
pub async fn run_until(
    client: Client,
    cfg: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
    stop_pods_on_exit: bool,
) -> Result<(), AgentError> {
    let runner = PodRunner::new(cfg.root.clone());
    let podnet = pod_net(&cfg)?;
    let result = tokio::select! {
        r = run_with(client, cfg, runner.clone(), podnet.clone()) => r,
        _ = shutdown => Ok(()),
    };
    if stop_pods_on_exit {
        info!("stopping every pod on this node");
        runner.stop_all(Duration::from_secs(5)).await;
        if let Some(podnet) = podnet {
            podnet.teardown_all().await;
        }
    }
    result
}

/// Runs the agent until the future is dropped. Pods (and their network namespaces) outlive it; the next
/// agent on this node re-uses or cleans them up.
pub async fn run(client: Client, cfg: AgentConfig) -> Result<(), AgentError> {
    let podnet = pod_net(&cfg)?;
    run_with(client, cfg.clone(), PodRunner::new(cfg.root), podnet).await
}

fn pod_net(cfg: &AgentConfig) -> Result<Option<Arc<PodNet>>, AgentError> {
    Ok(match cfg.pod_network {
        PodNetwork::Host => None,
        PodNetwork::Netns => Some(Arc::new(PodNet::new(&cfg.root)?)),
    })
}

/// Waits for the control plane to give this node a pod CIDR (the node's pod network needs it first).
async fn wait_pod_cidr(client: &Client, name: &str) -> IpNet {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        if let Ok(Some(n)) = nodes.get_opt(name).await
            && let Some(cidr) = n
                .spec
                .as_ref()
                .and_then(|s| s.pod_cidr.as_ref())
                .and_then(|c| c.parse::<IpNet>().ok())
        {
            return cidr;
        }
        if !std::mem::replace(&mut logged, true) {
            info!("waiting for this node's pod CIDR");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The ClusterIP of `kube-system/kube-dns`, the pods' nameserver.
fn cluster_dns(services: &[Arc<Service>]) -> Option<IpAddr> {
    services
        .iter()
        .find(|s| s.namespace().as_deref() == Some("kube-system") && s.name_any() == "kube-dns")
        .and_then(|s| s.spec.as_ref()?.cluster_ip.as_ref()?.parse().ok())
}

async fn run_with(
    client: Client,
    cfg: AgentConfig,
    runner: PodRunner,
    podnet: Option<Arc<PodNet>>,
) -> Result<(), AgentError> {
    let pods_api: Api<Pod> = Api::all(client.clone());
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (svc_store, svc_writer) = reflector::store::<Service>();

    // The agent endpoint first: its port goes into the Node object.
    let listener = TcpListener::bind(cfg.listen).await.map_err(AgentError::Listen)?;
    let port = listener.local_addr().map_err(AgentError::Listen)?.port();
    tokio::spawn(serve_logs(listener, runner.clone(), pod_store.clone()));

    let node_cfg = NodeConfig {
        name: cfg.node_name.clone(),
        internal_ip: cfg.node_ip,
        labels: cfg.labels.clone(),
        heartbeat: cfg.lease_duration / 4,
        lease_duration: cfg.lease_duration,
        agent_port: port,
    };
    node::register(&client, &node_cfg, true).await?;
    tokio::spawn(node::heartbeat(client.clone(), node_cfg.clone()));
    info!(node = %cfg.node_name, port, "node agent running");

    let ips = Arc::new(Mutex::new(PodIps::default()));
    let addresses = Arc::new(Notify::new());
    // The netns pod network needs its bridge before any pod: set the node up as soon as the CIDR arrives,
    // and only then hand out pod IPs (never the gateway's).
    let mut pod_cidr = None;
    if let Some(podnet) = &podnet {
        let cidr = wait_pod_cidr(&client, &cfg.node_name).await;
        podnet.setup_node(&cidr).await?;
        let gw = netns::gateway(&cidr)?;
        let mut g = ips.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(a) = ClusterIpAllocator::new(cidr) {
            g.set_range(a, Some(gw));
        }
        pod_cidr = Some(cidr);
        info!(%cidr, gateway = %gw, bridge = netns::BRIDGE, "pod network (netns) ready");
    }
    // The pod CIDR arrives from the control plane's node IPAM; watch our Node for it.
    {
        let nodes: Api<Node> = Api::all(client.clone());
        let (ips, addresses) = (ips.clone(), addresses.clone());
        let name = cfg.node_name.clone();
        tokio::spawn(async move {
            let wc = watcher::Config::default().fields(&format!("metadata.name={name}"));
            let stream = watcher(nodes, wc).default_backoff().applied_objects();
            futures::pin_mut!(stream);
            while let Some(Ok(n)) = stream.next().await {
                let cidr = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.pod_cidr.as_ref())
                    .and_then(|c| c.parse::<IpNet>().ok());
                let mut g = ips.lock().unwrap_or_else(|e| e.into_inner());
                if let (Some(cidr), false) = (cidr, g.has_range())
                    && let Ok(a) = ClusterIpAllocator::new(cidr)
                {
                    info!(%cidr, "pod CIDR assigned");
                    g.set_range(a, None);
                    addresses.notify_one();
                }
            }
        });
    }

    let svc_stream = reflector::reflector(
        svc_writer,
        // Nothing here reads managedFields; the cache need not keep them (as the kubelet's informers).
        watcher(Api::<Service>::all(client.clone()), watcher::Config::default())
            .modify(|s| s.metadata.managed_fields = None),
    )
    .default_backoff()
    .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(svc_stream);
        while svc_stream.next().await.is_some() {}
    });

    // Status writer: every runner change goes to pods/status, event-driven.
    {
        let runner = runner.clone();
        let client = client.clone();
        let store = pod_store.clone();
        tokio::spawn(async move {
            use tokio::sync::broadcast::error::RecvError;
            let mut changes = runner.changes();
            let mut written: HashMap<String, serde_json::Value> = HashMap::new();
            // Statuses not written yet (the pod cache was mid-list, the API failed): tried again shortly,
            // since the pod may change no more (a pod without probes changes once, when it starts).
            let mut unwritten: HashSet<String> = HashSet::new();
            let mut retry_at = None;
            loop {
                let uids: Vec<String> = tokio::select! {
                    r = changes.recv() => match r {
                        Ok(uid) => vec![uid],
                        // Changes were lost: every pod's status may be stale.
                        Err(RecvError::Lagged(_)) => runner.running(),
                        Err(RecvError::Closed) => return,
                    },
                    () = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)),
                        if retry_at.is_some() => std::mem::take(&mut unwritten).into_iter().collect(),
                };
                for uid in uids {
                    if write_status(&client, &runner, &store, &uid, &mut written).await {
                        unwritten.remove(&uid);
                    } else {
                        unwritten.insert(uid);
                    }
                }
                retry_at = match (unwritten.is_empty(), retry_at) {
                    (true, _) => None,
                    (false, Some(at)) if at > tokio::time::Instant::now() => Some(at),
                    (false, _) => Some(tokio::time::Instant::now() + STATUS_RETRY),
                };
            }
        });
    }

    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    if let Ok(list) = Api::<Pod>::all(client.clone())
        .list(&kube::api::ListParams::default().fields(&format!("spec.nodeName={}", cfg.node_name)))
        .await
    {
        stop_leftovers(&client, &list.items).await;
        // Only with a complete list: a namespace is deleted when its pod is known to be gone.
        if let Some(podnet) = &podnet {
            let live: HashSet<String> = list.items.iter().filter_map(|p| p.uid()).collect();
            podnet.teardown_gone(&live).await;
        }
    }
    // Know the Services before the first pod starts: their environment variables (`WEB_SERVICE_HOST`, …)
    // are fixed at start, and so is the resolv.conf naming kube-dns. The kubelet likewise starts no pod
    // before it has read the Services once.
    let _ = tokio::time::timeout(Duration::from_secs(10), svc_store.wait_until_ready()).await;
    let pod_stream = reflector::reflector(
        pod_writer,
        watcher(pods_api, wc).modify(|p| p.metadata.managed_fields = None),
    )
    .default_backoff()
    .touched_objects();
    futures::pin_mut!(pod_stream);
    let mut sync = PodSync {
        cfg,
        client,
        runner,
        ips,
        addresses,
        podnet,
        pod_cidr,
        pods: pod_store,
        services: svc_store,
        netns_ready: HashSet::new(),
        stopping: HashSet::new(),
        waiting: HashSet::new(),
        retry: HashMap::new(),
    };
    loop {
        let next_retry = sync.retry.values().map(|r| r.at).min();
        tokio::select! {
            ev = pod_stream.next() => match ev {
                Some(Ok(pod)) => sync.pod(&pod).await,
                Some(Err(_)) => {}
                None => break,
            },
            // Pods without an address got no event of their own when the pod CIDR arrived or an address
            // came free: start them now, from the cache.
            () = sync.addresses.notified(), if !sync.waiting.is_empty() => {
                let waiting = std::mem::take(&mut sync.waiting);
                let (pods, listed) = (sync.pods.state(), listed(&sync.pods));
                for uid in waiting {
                    match pods.iter().find(|p| p.uid().as_deref() == Some(uid.as_str())) {
                        // Still without an address, it goes back into the set.
                        Some(pod) => sync.pod(pod).await,
                        // Mid-(re)list the cache is not to be trusted about what is gone.
                        None if !listed => {
                            sync.waiting.insert(uid);
                        }
                        None => {}
                    }
                }
            }
            // Pods whose start failed for a reason that may pass get no event when it does: try them again.
            () = tokio::time::sleep_until(next_retry.unwrap_or_else(tokio::time::Instant::now)),
                if next_retry.is_some() => sync.retry_due().await,
        }
    }
    Ok(())
}

/// The pod loop's state: what it needs to start, stop and network the node's pods.
struct PodSync {
    cfg: AgentConfig,
    client: Client,
    runner: PodRunner,
    ips: Arc<Mutex<PodIps>>,
    /// Told when pods may get an address they could not get before (the pod CIDR arrived, an address was
    /// released).
    addresses: Arc<Notify>,
    podnet: Option<Arc<PodNet>>,
    pod_cidr: Option<IpNet>,
    pods: Store<Pod>,
    services: Store<Service>,
    /// Pods whose network namespace is set up.
    netns_ready: HashSet<String>,
    /// Pods being stopped.
    stopping: HashSet<String>,
    /// Pods that could not get an address yet, started once [`Self::addresses`] says one may be free.
    waiting: HashSet<String>,
    /// Pods whose start failed (their network namespace, their directory), tried again with backoff.
    retry: HashMap<String, Retry>,
}

/// When to try a failed pod again, and how often it failed so far.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: tokio::time::Instant,
    failures: u32,
}

/// The wait before the next try after `failures` failed ones: doubling from 1 s up to 30 s, the kubelet's
/// image-pull and sandbox backoff shape, so a lasting failure costs little and a passing one is short.
fn retry_delay(failures: u32) -> Duration {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);
    FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(MAX)
}

impl PodSync {
    /// Schedules another try for the pod `uid`, whose start just failed.
    fn failed(&mut self, uid: String) {
        let failures = self.retry.get(&uid).map_or(0, |r| r.failures) + 1;
        let delay = retry_delay(failures);
        debug!(%uid, failures, ?delay, "pod start failed; trying again later");
        self.retry.insert(
            uid,
            Retry {
                at: tokio::time::Instant::now() + delay,
                failures,
            },
        );
    }

    /// Tries again the pods whose retry time came; those gone from the store are forgotten.
    async fn retry_due(&mut self) {
        let now = tokio::time::Instant::now();
        let due: HashSet<String> = self
            .retry
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(uid, _)| uid.clone())
            .collect();
        let (pods, listed) = (self.pods.state(), listed(&self.pods));
        for uid in &due {
            // Pushed back first, so that a try ending neither in a start nor in a failure (the pod now
            // waits for an address; the cache is mid-list) cannot spin.
            if let Some(r) = self.retry.get_mut(uid) {
                r.at = now + retry_delay(r.failures + 1);
            }
            match pods.iter().find(|p| p.uid().as_deref() == Some(uid.as_str())) {
                // Still failing reschedules it with a longer wait; starting removes it.
                Some(pod) => self.pod(pod).await,
                None if listed => {
                    self.retry.remove(uid);
                }
                None => {}
            }
        }
    }

    /// Brings the node in line with one pod's latest state (and stops pods that left the store).
    async fn pod(&mut self, pod: &Pod) {
        let Some(uid) = pod.uid() else { return };
        let ns = pod.namespace().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            self.waiting.remove(&uid);
            self.retry.remove(&uid);
            if self.stopping.insert(uid.clone()) {
                let grace = Duration::from_secs(
                    pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64,
                );
                self.netns_ready.remove(&uid);
                let (runner, client, ips, addresses, name, podnet) = (
                    self.runner.clone(),
                    self.client.clone(),
                    self.ips.clone(),
                    self.addresses.clone(),
                    pod.name_any(),
                    self.podnet.clone(),
                );
                tokio::spawn(async move {
                    runner.stop(&uid, grace).await;
                    let api: Api<Pod> = Api::namespaced(client, &ns);
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(uid.clone()),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    if let Err(e) = api.delete(&name, &dp).await {
                        debug!(pod = %name, error = %e, "final delete failed (already gone?)");
                    }
                    // The namespace before the address: the IP is free only once nothing holds it.
                    if let Some(podnet) = podnet {
                        podnet.teardown_pod(&uid).await;
                    }
                    release_ip(&ips, &addresses, &uid);
                    // Keep the pod's files a while, as the kubelet keeps dead containers' logs: a
                    // `kubectl logs -f` still reading must get the last lines.
                    tokio::time::sleep(LOG_RETENTION).await;
                    let _ = runner.remove(&uid, Duration::from_secs(0)).await;
                });
            }
            return;
        }
        // A pod that was deleted outright (not gracefully) disappears from the store: stop what is left. Only
        // once the store holds the initial list: until then (kube's reflector buffers it) it is empty, and
        // every pod started from that list would look deleted.
        let listed = listed(&self.pods);
        for running in self.runner.running().into_iter().filter(|_| listed) {
            if self
                .pods
                .state()
                .iter()
                .all(|p| p.uid().as_deref() != Some(running.as_str()))
                && self.stopping.insert(running.clone())
            {
                let (runner, ips, addresses, podnet) = (
                    self.runner.clone(),
                    self.ips.clone(),
                    self.addresses.clone(),
                    self.podnet.clone(),
                );
                self.netns_ready.remove(&running);
                tokio::spawn(async move {
                    let _ = runner.remove(&running, Duration::from_secs(2)).await;
                    if let Some(podnet) = podnet {
                        podnet.teardown_pod(&running).await;
                    }
                    release_ip(&ips, &addresses, &running);
                });
            }
        }
        let Some(pod_ip) = pod_ip(&self.ips, pod) else {
            debug!(pod = %pod.name_any(), "no pod address yet (no pod CIDR, or none free); the pod starts when one is");
            self.waiting.insert(uid);
            return;
        };
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let mut exec_prefix = Vec::new();
        if let (Some(podnet), Some(cidr)) = (self.podnet.clone(), self.pod_cidr) {
            // Once per pod: the runner ignores pods it already runs, and so does this.
            if !self.netns_ready.contains(&uid) {
                let spec = pod.spec.as_ref();
                let resolv = netns::resolv_conf(
                    &ns,
                    netns::CLUSTER_DOMAIN,
                    cluster_dns(&self.services.state()),
                    spec.and_then(|s| s.dns_policy.as_deref()),
                    spec.and_then(|s| s.dns_config.as_ref()),
                );
                let net = PodNetSpec {
                    uid: &uid,
                    ip: pod_ip,
                    cidr,
                    resolv_conf: resolv,
                };
                match podnet.setup_pod(&net).await {
                    Ok(name) => {
                        info!(pod = %pod.name_any(), netns = %name, ip = %pod_ip, "pod network namespace ready");
                        self.netns_ready.insert(uid.clone());
                    }
                    Err(e) => {
                        // The pod does not start without its network. The node side may be what broke
                        // (someone deleted the bridge): set it up again, then try the pod again later.
                        warn!(pod = %pod.name_any(), error = %e, "could not set up the pod's network namespace");
                        if let Err(e) = podnet.setup_node(&cidr).await {
                            warn!(error = %e, "could not set up the node's pod network again");
                        }
                        self.failed(uid);
                        return;
                    }
                }
            }
            exec_prefix = podnet.exec_prefix(&uid);
        }
        let ctx = PodContext {
            pod_ip,
            host_ip: self.cfg.node_ip,
            node_name: self.cfg.node_name.clone(),
            service_env: service_env(&self.services.state(), &ns, links),
            exec_prefix,
        };
        match self.runner.ensure(pod, ctx) {
            Ok(()) => {
                self.retry.remove(&uid);
            }
            Err(e) => {
                warn!(pod = %pod.name_any(), error = %e, "could not start pod");
                self.failed(uid);
            }
        }
    }
}

/// Whether `store` holds a complete list: kube's reflector holds a (re)list back until it ends, and until
/// then an object missing from the cache is not an object that is gone.
fn listed<K: kube::Resource + Clone + 'static>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.wait_until_ready().now_or_never().is_some()
}

/// Gives the pod `uid`'s address back, and tells the pod loop one may be free.
fn release_ip(ips: &Mutex<PodIps>, addresses: &Notify, uid: &str) {
    ips.lock().unwrap_or_else(|e| e.into_inner()).release(uid);
    addresses.notify_one();
}

/// The pod's IP: the one it already has (assigned earlier, or in its status), else a new one.
fn pod_ip(ips: &Mutex<PodIps>, pod: &Pod) -> Option<IpAddr> {
    let existing = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_ref())
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    ips.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&pod.uid()?, existing)
}

/// How soon a status that could not be written is tried again.
const STATUS_RETRY: Duration = Duration::from_millis(500);

/// Writes the runner's status of pod `uid` to the API if it changed; whether that is done with (written,
/// unchanged, or nothing left to write it to), as opposed to worth another try.
async fn write_status(
    client: &Client,
    runner: &PodRunner,
    store: &Store<Pod>,
    uid: &str,
    written: &mut HashMap<String, serde_json::Value>,
) -> bool {
    let Some(status) = runner.status(uid) else {
        written.remove(uid);
        return true;
    };
    // The pod by uid, so a pod deleted and created again under its name never gets the old one's status.
    let Some(pod) = store
        .state()
        .into_iter()
        .find(|p| p.uid().as_deref() == Some(uid))
    else {
        // The agent starts pods from its list as the list comes in, before the cache shows them.
        return listed(store);
    };
    let Ok(value) = serde_json::to_value(&status) else {
        return true;
    };
    if written.get(uid) == Some(&value) {
        return true;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let patch = json!({"status": value});
    match api
        .patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            written.insert(uid.to_string(), value);
            true
        }
        // Deleted meanwhile: nothing to write to.
        Err(kube::Error::Api(e)) if e.code == 404 => true,
        Err(e) => {
            debug!(pod = %pod.name_any(), error = %e, "status write failed; trying again");
            false
        }
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn text(code: u16, s: String) -> hyper::Response<Body> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(s)).map_err(|n| match n {}).boxed());
    *r.status_mut() = hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
    r
}

/// Serves `/containerLogs/{ns}/{pod}/{container}` (the kubelet's path) and `/healthz`.
async fn serve_logs(listener: TcpListener, runner: PodRunner, pods: Store<Pod>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let (runner, pods) = (runner.clone(), pods.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let (runner, pods) = (runner.clone(), pods.clone());
                async move { Ok::<_, Infallible>(handle_log_request(&runner, &pods, &req)) }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn handle_log_request(
    runner: &PodRunner,
    pods: &Store<Pod>,
    req: &hyper::Request<hyper::body::Incoming>,
) -> hyper::Response<Body> {
    let path = req.uri().path();
    if path == "/healthz" {
        return text(200, "ok".into());
    }
    let parts: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(|p| {
            form_urlencoded::parse(format!("x={p}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect();
    let [first, ns, name, container] = parts.as_slice() else {
        return text(404, "not found".into());
    };
    if first != "containerLogs" {
        return text(404, "not found".into());
    }
    let query: HashMap<String, String> = req
        .uri()
        .query()
        .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    let Some(uid) = pods
        .state()
        .iter()
        .find(|p| p.namespace().as_deref() == Some(ns.as_str()) && p.name_any() == *name)
        .and_then(|p| p.uid())
    else {
        return text(404, format!("pod {ns}/{name} is not on this node"));
    };
    let flag = |k: &str| query.get(k).is_some_and(|v| v == "true" || v == "1");
    let tail = query.get("tailLines").and_then(|v| v.parse::<usize>().ok());
    if flag("follow") && !flag("previous") {
        return match runner.follow_logs(&uid, container, tail) {
            Ok(stream) => {
                let body = StreamBody::new(stream.map(|b| Ok::<_, Infallible>(Frame::data(b))));
                hyper::Response::new(BodyExt::boxed(body))
            }
            Err(e) => text(400, e.to_string()),
        };
    }
    match runner.logs(&uid, container, flag("previous"), tail) {
        Ok(bytes) => hyper::Response::new(Full::new(Bytes::from(bytes)).map_err(|n| match n {}).boxed()),
        Err(e) => text(400, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": ports}}))
            .unwrap(),
        )
    }

    #[test]
    fn failed_pods_are_retried_soon_then_at_most_every_30_s() {
        let waits: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(30));
    }

    #[test]
    fn service_environment_like_the_kubelet() {
        let services = vec![
            svc(
                "default",
                "kubernetes",
                "10.96.0.1",
                json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
            ),
            svc(
                "app",
                "red-svc",
                "10.96.0.20",
                json!([{"name": "http", "port": 80, "protocol": "TCP"}]),
            ),
            svc("app", "headless", "None", json!([{"port": 80}])),
            svc("other", "blue", "10.96.0.30", json!([{"port": 80}])),
        ];
        let env: BTreeMap<String, String> = service_env(&services, "app", true).into_iter().collect();
        assert_eq!(env["RED_SVC_SERVICE_HOST"], "10.96.0.20");
        assert_eq!(env["RED_SVC_SERVICE_PORT"], "80");
        assert_eq!(env["RED_SVC_SERVICE_PORT_HTTP"], "80");
        assert_eq!(env["RED_SVC_PORT"], "tcp://10.96.0.20:80");
        assert_eq!(env["RED_SVC_PORT_80_TCP_ADDR"], "10.96.0.20");
        assert_eq!(env["KUBERNETES_SERVICE_HOST"], "10.96.0.1");
        assert!(
            !env.keys()
                .any(|k| k.starts_with("BLUE_") || k.starts_with("HEADLESS_"))
        );
        let env: BTreeMap<String, String> = service_env(&services, "app", false).into_iter().collect();
        assert!(env.contains_key("KUBERNETES_SERVICE_HOST") && !env.contains_key("RED_SVC_SERVICE_HOST"));
    }
}
