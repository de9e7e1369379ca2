//! svcnet's pod network across nodes (`--pod-network netns`): every pod reaches every pod on any node by
//! its IP, without NAT, as the Kubernetes network model asks. Each node's agent programs its own network
//! namespace from the watched Nodes (their `spec.podCIDR` and InternalIP, through `svcnet-informer`):
//!
//! - `host-gw` ([`Overlay::HostGw`], flannel's host-gw): one route per remote node, its pod block via its
//!   node address, over netlink ([`routes`]); the nodes must share a subnet;
//! - pod traffic leaving the cluster's pod range is masqueraded to the node's address ([`masq`]).
//!
//! Routes are reconciled, not appended ([`routes`]): on every Node event (a deleted node's route goes
//! as soon as its deletion is seen) and every `resync` (repairing what someone else removed), the
//! node's routes with svcnet's route protocol are made exactly the wanted set; nothing is deleted before
//! the first complete list of Nodes, and routes of other owners are never touched.

pub mod masq;
pub mod peers;
pub mod routes;

use std::collections::BTreeMap;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use svcnet_informer::{Event, Informer};
use tracing::{info, warn};

/// How pods reach pods on other nodes (`--overlay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlay {
    /// One route per remote node via its node address (flannel's host-gw).
    #[default]
    HostGw,
}

/// An unknown `--overlay` value.
#[derive(Debug, thiserror::Error)]
#[error("unknown overlay {0:?}: use host-gw")]
pub struct UnknownOverlay(String);

impl std::str::FromStr for Overlay {
    type Err = UnknownOverlay;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host-gw" => Ok(Overlay::HostGw),
            other => Err(UnknownOverlay(other.to_string())),
        }
    }
}

impl std::fmt::Display for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overlay::HostGw => "host-gw",
        })
    }
}

/// Errors of the pod network.
#[derive(Debug, thiserror::Error)]
pub enum PodNetError {
    /// A netlink socket could not be opened.
    #[error("netlink socket: {0}")]
    Socket(#[from] std::io::Error),
    /// The kernel refused a netlink request.
    #[error("netlink: {0}")]
    Netlink(#[from] rtnetlink::Error),
    /// `nft` failed.
    #[error("nft: {stderr}")]
    Nft {
        /// What it said.
        stderr: String,
    },
    /// The Node watch ended.
    #[error("the Node watch ended")]
    WatchEnded,
}

/// What the pod network of one node needs.
#[derive(Debug, Clone)]
pub struct PodNetConfig {
    /// This node's name (its own block needs no route).
    pub node_name: String,
    /// The cluster's pod ranges (what is not masqueraded).
    pub cluster_cidrs: Vec<IpNet>,
    /// How pods reach other nodes.
    pub overlay: Overlay,
    /// How often routes are reconciled without a Node event.
    pub resync: Duration,
}

/// The routes `host-gw` wants: each remote node's pod block via its address.
pub fn host_gw_routes(nodes: &[std::sync::Arc<Node>], me: &str) -> BTreeMap<Ipv4Net, routes::Want> {
    peers::peers(nodes.iter().map(|n| n.as_ref()), me)
        .into_iter()
        .map(|(cidr, p)| {
            (
                cidr,
                routes::Want {
                    gateway: p.node_ip,
                    oif: None,
                    onlink: false,
                },
            )
        })
        .collect()
}

/// Runs the node's pod network until the future is dropped (or the Node watch ends).
pub async fn run(client: kube::Client, cfg: PodNetConfig) -> Result<(), PodNetError> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    tokio::spawn(connection);
    let cidrs = cfg.cluster_cidrs.clone();
    tokio::task::spawn_blocking(move || masq::apply(&cidrs))
        .await
        .map_err(|e| PodNetError::Nft {
            stderr: e.to_string(),
        })??;
    // Nothing here reads more than names, addresses, pod blocks and annotations.
    let informer = Informer::<Node>::new(|n| {
        n.metadata.managed_fields = None;
        if let Some(s) = n.status.as_mut() {
            s.images = None;
            s.conditions = None;
        }
    });
    let mut events = informer.subscribe();
    informer.spawn(Api::all(client));
    let store = informer.store();
    info!(node = %cfg.node_name, overlay = %cfg.overlay, "pod network across nodes starting");
    let mut tick = tokio::time::interval(cfg.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listed = false;
    let mut last: Option<BTreeMap<Ipv4Net, routes::Want>> = None;
    loop {
        let resync = tokio::select! {
            e = events.recv() => match e {
                None => return Err(PodNetError::WatchEnded),
                Some(Event::Listed) => { listed = true; false }
                Some(_) => false,
            },
            _ = tick.tick() => true,
        };
        // Events that arrived together make one reconcile.
        while let Some(e) = events.try_recv() {
            if matches!(e, Event::Listed) {
                listed = true;
            }
        }
        if !listed {
            continue;
        }
        let want = host_gw_routes(&store.state(), &cfg.node_name);
        if !resync && last.as_ref() == Some(&want) {
            continue;
        }
        match routes::reconcile(&handle, &want).await {
            Ok(changes) => {
                if changes != routes::Changes::default() {
                    info!(
                        added = changes.added,
                        deleted = changes.deleted,
                        routes = want.len(),
                        "pod-network routes reconciled"
                    );
                }
                last = Some(want);
            }
            Err(e) => {
                // Tried again soon (or on the next event), not only at the next resync.
                warn!(error = %e, "reconciling pod-network routes failed; retrying");
                last = None;
                tick.reset_after(Duration::from_millis(500));
            }
        }
    }
}
