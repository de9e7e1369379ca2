//! svcnet's pod network across nodes (`--pod-network netns`): every pod reaches every pod on any node by
//! its IP, without NAT, as the Kubernetes network model asks. Each node's agent programs its own network
//! namespace from the watched Nodes (their `spec.podCIDR` and InternalIP, through `svcnet-informer`):
//!
//! - `host-gw` ([`Overlay::HostGw`], flannel's host-gw): one route per remote node, its pod block via its
//!   node address, over netlink ([`routes`]); the nodes must share a subnet;
//! - `vxlan` ([`Overlay::Vxlan`], flannel's vxlan): a VXLAN device with a neighbour entry, an FDB entry and
//!   an on-link route per remote node, the VTEP's MAC published on the node's own Node object ([`vxlan`]);
//! - pod traffic leaving the cluster's pod range is masqueraded to the node's address ([`masq`]).
//!
//! Routes are reconciled, not appended ([`routes`]): on every Node event (a deleted node's route goes
//! as soon as its deletion is seen) and every `resync` (repairing what someone else removed), the
//! node's routes with svcnet's route protocol are made exactly the wanted set; nothing is deleted before
//! the first complete list of Nodes, and routes of other owners are never touched.

pub mod masq;
pub mod peers;
pub mod routes;
pub mod vxlan;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net};
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use svcnet_informer::{Event, Informer};
use tracing::{info, warn};

/// How pods reach pods on other nodes (`--overlay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overlay {
    /// One route per remote node via its node address (flannel's host-gw).
    #[default]
    HostGw,
    /// A VXLAN device with a neighbour, an FDB entry and a route per remote node (flannel's vxlan).
    Vxlan,
}

/// An unknown `--overlay` value.
#[derive(Debug, thiserror::Error)]
#[error("unknown overlay {0:?}: use host-gw or vxlan")]
pub struct UnknownOverlay(String);

impl std::str::FromStr for Overlay {
    type Err = UnknownOverlay;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "host-gw" => Ok(Overlay::HostGw),
            "vxlan" => Ok(Overlay::Vxlan),
            other => Err(UnknownOverlay(other.to_string())),
        }
    }
}

impl std::fmt::Display for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overlay::HostGw => "host-gw",
            Overlay::Vxlan => "vxlan",
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
    /// No interface holds the node's address (the VXLAN device's uplink).
    #[error("no interface of this node holds its InternalIP {0} (the VXLAN uplink)")]
    NoUplink(std::net::Ipv4Addr),
    /// The VXLAN device vanished while it was being set up.
    #[error("the VXLAN device {} disappeared while being set up", vxlan::DEVICE)]
    NoDevice,
    /// Publishing the VTEP's MAC on the Node failed.
    #[error("publishing the VTEP on the Node: {0}")]
    Publish(#[from] kube::Error),
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
pub fn host_gw_routes(peers: &BTreeMap<Ipv4Net, peers::Peer>) -> BTreeMap<Ipv4Net, routes::Want> {
    peers
        .iter()
        .map(|(cidr, p)| {
            (
                *cidr,
                routes::Want {
                    gateway: p.node_ip,
                    oif: None,
                    onlink: false,
                },
            )
        })
        .collect()
}

/// What one node's pod network depends on, from the Node cache: a reconcile runs when it changes (or at
/// a resync), not on every heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Inputs {
    /// This node's pod block and InternalIP, once it has both.
    me: Option<(Ipv4Net, Ipv4Addr)>,
    /// The VTEP MAC this node's Node object publishes.
    published: Option<[u8; 6]>,
    /// The remote nodes.
    peers: BTreeMap<Ipv4Net, peers::Peer>,
}

fn inputs(nodes: &[Arc<Node>], me: &str) -> Inputs {
    let own = nodes.iter().find(|n| n.metadata.name.as_deref() == Some(me));
    Inputs {
        me: own.and_then(|n| Some((peers::pod_cidr(n)?, peers::internal_ip(n)?))),
        published: own.and_then(|n| peers::vtep_mac(n)),
        peers: peers::peers(nodes.iter().map(|n| n.as_ref()), me),
    }
}

/// Publishes this node's VTEP on its Node object, in flannel's annotations.
async fn publish(nodes: &Api<Node>, me: &str, ip: Ipv4Addr, mac: &[u8; 6]) -> Result<(), PodNetError> {
    let data = serde_json::json!({"VNI": vxlan::VNI, "VtepMAC": peers::format_mac(mac)}).to_string();
    let patch = serde_json::json!({"metadata": {"annotations": {
        peers::BACKEND_TYPE: "vxlan",
        peers::BACKEND_DATA: data,
        peers::PUBLIC_IP: ip.to_string(),
    }}});
    nodes
        .patch(me, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    info!(node = me, vtep_mac = %peers::format_mac(mac), "published the VTEP on the Node");
    Ok(())
}

/// One reconcile of everything the overlay programs; what it changed.
async fn apply(
    handle: &rtnetlink::Handle,
    nodes: &Api<Node>,
    cfg: &PodNetConfig,
    inputs: &Inputs,
) -> Result<routes::Changes, PodNetError> {
    match cfg.overlay {
        Overlay::HostGw => {
            vxlan::remove(handle).await?;
            let want = host_gw_routes(&inputs.peers);
            routes::reconcile(handle, &want).await
        }
        Overlay::Vxlan => {
            // The device needs this node's block and address: nothing to do before the Node has both.
            let Some((block, ip)) = inputs.me else {
                return Ok(routes::Changes::default());
            };
            let vtep = vxlan::ensure(handle, ip, block).await?;
            if inputs.published != Some(vtep.mac) {
                publish(nodes, &cfg.node_name, ip, &vtep.mac).await?;
            }
            let mut changes = vxlan::reconcile_neighbours(handle, &vtep, &inputs.peers).await?;
            changes.add(routes::reconcile(handle, &vxlan::routes(&vtep, &inputs.peers)).await?);
            Ok(changes)
        }
    }
}

/// The first retry after a failed reconcile; it doubles up to the resync period.
const RETRY_MIN: Duration = Duration::from_millis(500);

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
    let nodes: Api<Node> = Api::all(client);
    informer.spawn(nodes.clone());
    let store = informer.store();
    info!(node = %cfg.node_name, overlay = %cfg.overlay, "pod network across nodes starting");
    let mut tick = tokio::time::interval(cfg.resync);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut listed = false;
    let mut last: Option<Inputs> = None;
    // After a failure the next try comes sooner than the resync, backing off so that a lasting fault
    // (a node address no route can use) is not retried and logged twice a second.
    let mut retry = RETRY_MIN;
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
        // Nothing is deleted before the first complete list: a partial view would drop live routes.
        if !listed {
            continue;
        }
        let now = inputs(&store.state(), &cfg.node_name);
        if !resync && last.as_ref() == Some(&now) {
            continue;
        }
        let failed = match apply(&handle, &nodes, &cfg, &now).await {
            Ok(changes) => {
                if changes.added + changes.deleted > 0 {
                    info!(
                        added = changes.added,
                        deleted = changes.deleted,
                        peers = now.peers.len(),
                        "pod network reconciled"
                    );
                }
                changes.failed > 0
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?retry, "reconciling the pod network failed");
                true
            }
        };
        // Unchanged inputs do not try again: after a failure the timer does, sooner than the resync, so
        // that a burst of unrelated Node updates cannot turn one fault into a burst of retries.
        last = Some(now);
        if failed {
            tick.reset_after(retry);
            retry = (retry * 2).min(cfg.resync.max(RETRY_MIN));
        } else {
            retry = RETRY_MIN;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cidr: &str, ip: &str, mac: Option<&str>) -> Arc<Node> {
        let mut v = json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
        if let Some(mac) = mac {
            v["metadata"]["annotations"] =
                json!({peers::BACKEND_DATA: json!({"VNI": 1, "VtepMAC": mac}).to_string()});
        }
        Arc::new(serde_json::from_value(v).unwrap())
    }

    #[test]
    fn host_gw_routes_each_block_via_its_node() {
        let nodes = [
            node("n1", "10.244.0.0/24", "172.18.0.11", None),
            node("n2", "10.244.1.0/24", "172.18.0.12", None),
        ];
        let i = inputs(&nodes, "n1");
        assert_eq!(
            i.me,
            Some(("10.244.0.0/24".parse().unwrap(), Ipv4Addr::new(172, 18, 0, 11)))
        );
        assert_eq!(i.published, None);
        let want: Vec<_> = host_gw_routes(&i.peers).into_iter().collect();
        let gw = Ipv4Addr::new(172, 18, 0, 12);
        assert_eq!(
            want,
            [(
                "10.244.1.0/24".parse().unwrap(),
                routes::Want {
                    gateway: gw,
                    oif: None,
                    onlink: false
                }
            )]
        );
    }

    #[test]
    fn vxlan_routes_only_peers_with_a_vtep_on_link() {
        let nodes = [
            node("n1", "10.244.0.0/24", "172.18.0.11", Some("0a:00:00:00:00:01")),
            node("n2", "10.244.1.0/24", "172.18.0.12", Some("0a:00:00:00:00:02")),
            node("n3", "10.244.2.0/24", "172.18.0.13", None),
        ];
        let i = inputs(&nodes, "n1");
        assert_eq!(i.published, Some([10, 0, 0, 0, 0, 1]));
        let vtep = vxlan::Vtep {
            index: 7,
            mac: [10, 0, 0, 0, 0, 1],
        };
        // n3 has published no VTEP yet: no neighbour entry could resolve a route to it.
        let want: Vec<_> = vxlan::routes(&vtep, &i.peers).into_iter().collect();
        let gw = Ipv4Addr::new(10, 244, 1, 0);
        assert_eq!(
            want,
            [(
                "10.244.1.0/24".parse().unwrap(),
                routes::Want {
                    gateway: gw,
                    oif: Some(7),
                    onlink: true
                }
            )]
        );
        // The same Nodes are the same inputs (no reconcile); a newly published VTEP is a change.
        assert_eq!(inputs(&nodes, "n1"), i);
        let mut later = nodes.to_vec();
        later[2] = node("n3", "10.244.2.0/24", "172.18.0.13", Some("0a:00:00:00:00:03"));
        assert_ne!(inputs(&later, "n1"), i);
    }
}
