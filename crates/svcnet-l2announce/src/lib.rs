//! L2 announcement of LoadBalancer IPs: what MetalLB's layer-2 mode, kube-vip and Cilium's L2
//! announcements do, built into the node agent (`svcnet agent`).
//!
//! svcnet's LB IPAM (`--lb-pool`) gives a `type: LoadBalancer` Service an ingress IP; this crate makes one
//! node per IP answer ARP (IPv4) or NDP (IPv6) for it on the node's underlay interfaces, so that machines
//! on that network segment reach the IP with no other software:
//!
//! - [`announcer`]: the election, one `coordination.k8s.io/v1` Lease per Service, or per group of
//!   Services sharing an address ([`group`]) (holder = node), with
//!   client-go's leader-election rules and short defaults (Lease 2 s, renew deadline 1 s, retry 500 ms)
//!   so that a node's death moves its IPs in under 3 s; rendezvous hashing ([`rank`]) spreads Services
//!   over the eligible nodes; an Event on the Service names each new holder, and the holder keeps the
//!   annotation `svcnet.io/lb-announcing-node` on the Service naming itself;
//! - [`responder`]: an AF_PACKET socket per interface (`--lb-interfaces`; ARP requests and neighbour
//!   solicitations only, by BPF) answering for the held IPs, and gratuitous ARP / unsolicited
//!   neighbour advertisements on takeover so clients switch at once;
//! - [`local_route`]: the holder's kernel takes the IP's traffic as its own (the userspace proxy listens
//!   on it);
//! - [`arp`], [`ndp`], [`eligible`], [`group`], [`rank`]: pure parts.

pub mod announcer;
pub mod arp;
pub mod eligible;
pub mod group;
pub mod local_route;
pub mod metrics;
pub mod ndp;
pub mod rank;
pub mod responder;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tracing::{info, warn};

pub use announcer::{NODE_ANNOTATION, lease_name};
pub use metrics::Metrics;
pub use svcnet_api::selector::LabelSelector;

/// The label every announcement Lease carries (the announcers watch only these).
pub const LEASE_LABEL: (&str, &str) = ("app.kubernetes.io/managed-by", MANAGER);
/// The component name on Leases and Events.
pub const MANAGER: &str = "svcnet-l2announce";
/// How often the announcer looks at every Service. Short: failover waits for it after the Lease expires.
const TICK: Duration = Duration::from_millis(100);

/// Settings of one node's announcer.
#[derive(Debug, Clone)]
pub struct L2Config {
    /// This node's name (the Leases' holder identity).
    pub node_name: String,
    /// The interfaces to answer ARP and NDP on (at least one).
    pub interfaces: Vec<String>,
    /// How long a Lease is valid after its last renewal, as other nodes see it (whole seconds).
    pub lease_duration: Duration,
    /// How long the holder keeps announcing while its renewals fail.
    pub renew_deadline: Duration,
    /// How often the holder renews and candidates retry.
    pub retry_period: Duration,
    /// Whether to give held IPs a `local` route (see [`local_route`]).
    pub local_routes: bool,
    /// Only nodes whose labels match may announce (empty: every node). Every node's agent must be
    /// given the same selector: each ranks the candidates by it.
    pub node_selector: LabelSelector,
}

impl L2Config {
    /// client-go's rules for the three durations, in its words.
    pub fn validate(&self) -> Result<(), L2Error> {
        let bad = |m: &str| Err(L2Error::Config(m.to_string()));
        if self.lease_duration < Duration::from_secs(1) || self.lease_duration.subsec_nanos() != 0 {
            return bad("the lease duration must be a whole number of seconds, at least 1");
        }
        if self.lease_duration <= self.renew_deadline {
            return bad("leaseDuration must be greater than renewDeadline");
        }
        // client-go: renewDeadline must be greater than retryPeriod*JitterFactor (1.2).
        if self.renew_deadline.as_secs_f64() <= self.retry_period.as_secs_f64() * 1.2 {
            return bad("renewDeadline must be greater than retryPeriod*JitterFactor (1.2)");
        }
        if self.interfaces.iter().any(|i| i.is_empty()) {
            return bad("an interface name is empty");
        }
        if self.retry_period < Duration::from_millis(100) {
            return bad("retryPeriod must be at least 100ms");
        }
        Ok(())
    }
}

/// Errors that stop the announcer.
#[derive(Debug, thiserror::Error)]
pub enum L2Error {
    /// Bad settings.
    #[error("L2 announcement: {0}")]
    Config(String),
    /// The ARP responder could not start.
    #[error(transparent)]
    Responder(#[from] responder::ResponderError),
    /// No netlink socket for the local routes.
    #[error("netlink: {0}")]
    Netlink(std::io::Error),
}

/// Where the kernel reads `arp_ignore` for every interface (the larger of it and the interface's own
/// is used).
const ARP_IGNORE: &str = "/proc/sys/net/ipv4/conf/all/arp_ignore";

/// Makes this node's kernel answer ARP only for addresses configured on the interface the request
/// came in on (`arp_ignore = 1`, kube-proxy's `strictARP`, which MetalLB asks IPVS users to set for
/// the same reason). Without it, the holder's `local` routes ([`local_route`]) make the kernel answer
/// ARP for its LoadBalancer IPs on every interface, also those `--lb-interfaces` leaves out; with it,
/// only the responders answer, on the chosen interfaces. Addresses configured on an interface are
/// answered for there as before. A node where it cannot be set (read-only /proc) says so and goes on.
fn strict_arp() {
    match std::fs::read_to_string(ARP_IGNORE) {
        Ok(v) if v.trim().parse::<u8>().is_ok_and(|v| v >= 1) => {}
        _ => match std::fs::write(ARP_IGNORE, "1") {
            Ok(()) => info!(
                "set net.ipv4.conf.all.arp_ignore=1: only the announcing interfaces answer ARP for LoadBalancer IPs"
            ),
            Err(e) => {
                warn!(error = %e, "could not set net.ipv4.conf.all.arp_ignore=1: the kernel may answer ARP for held LoadBalancer IPs on every interface")
            }
        },
    }
}

/// A store of `K` kept by a watch that runs (with back-off) for the life of the process.
fn watched<K>(api: Api<K>, wc: watcher::Config) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store::<K>();
    let stream = reflector::reflector(
        writer,
        watcher(api, wc).modify(|o| o.meta_mut().managed_fields = None),
    )
    .default_backoff()
    .touched_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while stream.next().await.is_some() {}
    });
    store
}

/// Runs this node's announcer until the future is dropped.
pub async fn run(client: kube::Client, cfg: L2Config, metrics: Metrics) -> Result<(), L2Error> {
    cfg.validate()?;
    if cfg.interfaces.is_empty() {
        return Err(L2Error::Config("no interface to announce on".into()));
    }
    let mut responders = Vec::new();
    for interface in &cfg.interfaces {
        responders.push(Arc::new(responder::Responder::open(interface, metrics.clone())?));
    }
    strict_arp();
    let routes = if cfg.local_routes {
        let routes = local_route::LocalRoutes::new().map_err(L2Error::Netlink)?;
        // A killed agent's routes would make this node's kernel answer ARP for IPs another node holds.
        match routes.remove_all().await {
            Ok(0) => {}
            Ok(n) => info!(
                routes = n,
                "removed LoadBalancer IP routes left by an earlier agent"
            ),
            Err(e) => warn!(error = %e, "could not list this node's LoadBalancer IP routes"),
        }
        Some(routes)
    } else {
        None
    };
    let label = format!("{}={}", LEASE_LABEL.0, LEASE_LABEL.1);
    let stores = announcer::Stores {
        services: watched(Api::<Service>::all(client.clone()), watcher::Config::default()),
        nodes: watched(Api::<Node>::all(client.clone()), watcher::Config::default()),
        slices: watched(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        ),
        leases: watched(
            Api::<Lease>::all(client.clone()),
            watcher::Config::default().labels(&label),
        ),
    };
    // Nothing is decided on half a picture: a Lease missing from an unfinished list is not a free one.
    let _ = stores.services.wait_until_ready().await;
    let _ = stores.nodes.wait_until_ready().await;
    let _ = stores.slices.wait_until_ready().await;
    let _ = stores.leases.wait_until_ready().await;
    info!(
        interfaces = %cfg.interfaces.join(","),
        lease = ?cfg.lease_duration,
        renew_deadline = ?cfg.renew_deadline,
        retry = ?cfg.retry_period,
        "L2 announcement of LoadBalancer IPs running"
    );
    let mut announcer = announcer::Announcer::new(cfg, client, responders, routes, stores, metrics);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        announcer.tick().await;
    }
}
