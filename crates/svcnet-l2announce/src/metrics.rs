//! What the announcer did, for Prometheus: Leases held, acquisitions (first announcement or takeover)
//! with how long the IPs went unannounced before a takeover, releases, losses, ARP and NDP replies,
//! gratuitous ARPs and unsolicited neighbour advertisements sent.

use std::sync::atomic::AtomicI64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The announcer's metrics (`svcnet_l2announce_*`).
#[derive(Clone)]
pub struct Metrics {
    pub(crate) held: Gauge<i64, AtomicI64>,
    pub(crate) announced_ips: Gauge<i64, AtomicI64>,
    pub(crate) acquisitions: Counter,
    pub(crate) takeovers: Counter,
    pub(crate) takeover_seconds: Histogram,
    pub(crate) releases: Counter,
    pub(crate) losses: Counter,
    pub(crate) arp_replies: Counter,
    pub(crate) gratuitous: Counter,
    pub(crate) ndp_replies: Counter,
    pub(crate) unsolicited_nas: Counter,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            held: Gauge::default(),
            announced_ips: Gauge::default(),
            acquisitions: Counter::default(),
            takeovers: Counter::default(),
            // 50 ms to about 100 s.
            takeover_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 12)),
            releases: Counter::default(),
            losses: Counter::default(),
            arp_replies: Counter::default(),
            gratuitous: Counter::default(),
            ndp_replies: Counter::default(),
            unsolicited_nas: Counter::default(),
        };
        let r = registry.sub_registry_with_prefix("svcnet_l2announce");
        r.register(
            "leases_held",
            "LoadBalancer Service Leases this node holds",
            m.held.clone(),
        );
        r.register(
            "announced_ips",
            "LoadBalancer IPs this node answers ARP or NDP for",
            m.announced_ips.clone(),
        );
        r.register(
            "acquisitions",
            "Leases this node acquired (a new Service's, or a takeover)",
            m.acquisitions.clone(),
        );
        r.register(
            "takeovers",
            "Leases this node took over from another node whose Lease expired",
            m.takeovers.clone(),
        );
        r.register(
            "takeover_seconds",
            "Takeovers: time from the previous holder's last renewal (as this node saw it) to this node announcing",
            m.takeover_seconds.clone(),
        );
        r.register(
            "releases",
            "Leases this node gave up (no longer eligible)",
            m.releases.clone(),
        );
        r.register(
            "losses",
            "Leases this node lost (renewal failed past the renew deadline, or taken)",
            m.losses.clone(),
        );
        r.register(
            "arp_replies",
            "ARP replies sent for held LoadBalancer IPs",
            m.arp_replies.clone(),
        );
        r.register(
            "gratuitous_arps",
            "Gratuitous ARPs sent on takeover",
            m.gratuitous.clone(),
        );
        r.register(
            "neighbor_advertisements",
            "Neighbour advertisements sent in answer to solicitations for held LoadBalancer IPv6 IPs",
            m.ndp_replies.clone(),
        );
        r.register(
            "unsolicited_neighbor_advertisements",
            "Unsolicited neighbour advertisements sent on takeover (the IPv6 gratuitous ARP)",
            m.unsolicited_nas.clone(),
        );
        m
    }
}
