//! The node agent: the kubelet's job for svcnet. It registers the node, keeps its Lease fresh, watches
//! the pods bound to it and hands them to the [`crate::runner::PodRunner`], writes their
//! status back whenever it changes, finishes graceful deletions, and serves container logs.
//!
//! Everything it knows comes from the Kubernetes API (watch), so the same agent works against any API
//! server. Pod IPs come from the node's `spec.podCIDR`. In the host pod network ([`PodNetwork::Host`]) that
//! lies inside 127.0.0.0/8 by default: each pod binds its own loopback address, told to it as `POD_IP`. In
//! the netns pod network ([`PodNetwork::Netns`], root) each pod gets its own network namespace on the node
//! bridge (see [`crate::netns`]), and the bridge's gateway address is never a pod's.
//!
//! At start it adopts the pods a previous agent left running (their records on disk, checked against the
//! processes), stops the recorded pods the API no longer has, and only then follows the pod watch.
//!
//! This module starts the parts and wires them together: the pod loop (`pod_sync`), the status writer
//! (`status`), the logs server (`logs`), the environment a pod learns from the Services (`pod_env`), and
//! each pod's ServiceAccount token (`sa_token`), the ConfigMaps and Secrets pods use (`objects`, one
//! watch per object) and their volumes (`volumes`), and the Events it records (`events`).

mod events;
mod logs;
mod objects;
mod pod_env;
mod pod_sync;
mod readiness;
mod sa_token;
mod status;
mod stream;
mod volumes;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::Client;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use svcnet_alloc::ClusterIpAllocator;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tracing::info;

pub use pod_env::service_env;
use pod_sync::PodSync;
pub use sa_token::{SERVICE_ACCOUNT_DIR_ENV, SERVICE_ACCOUNT_MOUNT};
pub use volumes::{VOLUME_ENV_PREFIX, env_name as volume_env_name};

use crate::netns::{self, NetnsError, PodNet};
use crate::node::{self, NodeConfig};
use crate::pod_identity::Sandbox;
use crate::podip::PodIps;
use crate::runner::PodRunner;

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
    /// The cluster's bearer token (from the agent's kubeconfig). The container-log endpoint answers only
    /// requests carrying the credential derived from it ([`logs_credential`]), which the API server
    /// presents when it proxies `pods/log`. `None` (a kubeconfig without a token, such as a joined
    /// node's own): the credential is checked with a TokenReview instead.
    pub api_token: Option<String>,
    /// With the netns pod network, the MTU of the pods' interfaces: the overlay's (a VXLAN device's),
    /// so that pods never send what the tunnel cannot carry, as flannel does. `None`: the kernel's default.
    pub pod_mtu: Option<u32>,
    /// The cluster CA (PEM), given to pods as their service account's `ca.crt`.
    pub cluster_ca: Option<String>,
}

pub use logs::credential as logs_credential;
pub use stream::MAX_SESSIONS as MAX_STREAMING_SESSIONS;

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

/// Runs the agent until `shutdown` resolves; then, if `stop_pods_on_exit`, stops every pod it runs (and
/// tears their network namespaces down) before returning. Otherwise the pods keep running and the next
/// agent on the same `root` adopts them (see [`crate::runner::PodRunner::adopt`]).
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
/// agent on this node adopts them, or stops those deleted meanwhile.
pub async fn run(client: Client, cfg: AgentConfig) -> Result<(), AgentError> {
    let podnet = pod_net(&cfg)?;
    run_with(client, cfg.clone(), PodRunner::new(cfg.root), podnet).await
}

fn pod_net(cfg: &AgentConfig) -> Result<Option<Arc<PodNet>>, AgentError> {
    Ok(match cfg.pod_network {
        PodNetwork::Host => None,
        PodNetwork::Netns => Some(Arc::new(PodNet::new(&cfg.root)?.with_mtu(cfg.pod_mtu))),
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
    // Without the cluster token (a node with its own certificate) the API server's credential is
    // checked by a TokenReview, as a kubelet's webhook authentication does.
    let check = match cfg.api_token.as_deref() {
        Some(token) => logs::Check::Local(logs::credential(token).into()),
        None => logs::Check::Review {
            client: client.clone(),
            cache: Default::default(),
        },
    };
    tokio::spawn(logs::serve_logs(
        listener,
        runner.clone(),
        pod_store.clone(),
        check,
    ));

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
    let (gated_tx, gated_rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(status::write_statuses(
        client.clone(),
        runner.clone(),
        pod_store.clone(),
        gated_rx,
    ));

    // Pods' ServiceAccount tokens, renewed before they expire.
    let (tokens, token_renewals) = sa_token::Tokens::new(client.clone(), cfg.cluster_ca.clone());
    tokio::spawn(tokens.clone().refresh_loop(pod_store.clone()));
    let sandbox = tokio::task::spawn_blocking(Sandbox::detect)
        .await
        .unwrap_or_else(|_| Sandbox::none());
    // Kubernetes' path for the token exists only in a pod's own mount namespace, which needs the sandbox.
    let sa_mount = sandbox.works().then(sa_token::mount_point).flatten();
    // The ConfigMaps and Secrets the pods use, each watched by name; the runner reads containers'
    // references from them.
    let (objects, object_changes) = objects::Objects::new(client.clone());
    runner.set_objects(Arc::new(objects.clone()));

    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let list_params = kube::api::ListParams::default().fields(&format!("spec.nodeName={}", cfg.node_name));
    let mut sync = PodSync {
        cfg,
        client: client.clone(),
        runner,
        ips,
        addresses,
        podnet,
        pod_cidr,
        pods: pod_store,
        services: svc_store.clone(),
        netns_ready: HashSet::new(),
        stopping: HashSet::new(),
        waiting: HashSet::new(),
        retry: HashMap::new(),
        sandbox,
        tokens,
        sa_mount,
        objects,
        object_changes: Some(object_changes),
        token_renewals: Some(token_renewals),
        mount_reported: HashMap::new(),
        gated: gated_tx,
    };
    // Adopt what a previous agent left running before anything else: the pods keep serving meanwhile.
    // Without a list (the API failed) the pods are adopted one by one as their events come.
    match Api::<Pod>::all(client.clone()).list(&list_params).await {
        Ok(list) => sync.start(&list.items).await,
        Err(e) => {
            tracing::warn!(error = %e, "could not list this node's pods at start; adopting them as they come")
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
    sync.run(pod_stream).await;
    Ok(())
}

/// Whether `store` holds a complete list: kube's reflector holds a (re)list back until it ends, and until
/// then an object missing from the cache is not an object that is gone.
fn listed<K: kube::Resource + Clone + 'static>(store: &Store<K>) -> bool
where
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    store.wait_until_ready().now_or_never().is_some()
}
