//! The proxier's sync metrics, under kube-proxy's names where kube-proxy has the same metric.
//!
//! The watch loop counts what it queues; the [`runner`](crate::runner) counts what it programs, what failed
//! and what it retried. Gauges that sum over all ports (endpoints, Local policies without local
//! endpoints) move by each change's difference, so one endpoint change costs O(1), not O(services).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use svcnet_dataplane::{Change, ServicePort};

use crate::runner::Pending;

/// Why the runner handed the backend the whole table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    /// `start`, `resync` (the periodic one) or `retry` (after a failed sync).
    pub(crate) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PolicyLabel {
    traffic_policy: &'static str,
}

/// kube-proxy's sync metrics, under kube-proxy's names.
#[derive(Clone)]
pub struct ProxierMetrics {
    pub(crate) sync_duration: Histogram,
    pub(crate) programming_duration: Histogram,
    pub(crate) event_to_programmed: Histogram,
    pub(crate) last_sync: Gauge<f64, AtomicU64>,
    pub(crate) last_queued: Gauge<f64, AtomicU64>,
    pub(crate) service_changes: Counter,
    pub(crate) endpoint_changes: Counter,
    pub(crate) service_pending: Gauge<i64, AtomicI64>,
    pub(crate) endpoint_pending: Gauge<i64, AtomicI64>,
    pub(crate) no_local_endpoints: Family<PolicyLabel, Gauge<i64, AtomicI64>>,
    pub(crate) sync_failures: Counter,
    pub(crate) sync_retries: Counter,
    pub(crate) full_syncs: Family<ReasonLabel, Counter>,
    pub(crate) ports: Gauge<i64, AtomicI64>,
    pub(crate) endpoints: Gauge<i64, AtomicI64>,
}

impl ProxierMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &mut Registry) -> ProxierMetrics {
        let buckets = || prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18);
        let m = ProxierMetrics {
            sync_duration: Histogram::new(buckets()),
            programming_duration: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 18,
            )),
            event_to_programmed: Histogram::new(buckets()),
            last_sync: Gauge::default(),
            last_queued: Gauge::default(),
            service_changes: Counter::default(),
            endpoint_changes: Counter::default(),
            service_pending: Gauge::default(),
            endpoint_pending: Gauge::default(),
            no_local_endpoints: Family::default(),
            sync_failures: Counter::default(),
            sync_retries: Counter::default(),
            full_syncs: Family::default(),
            ports: Gauge::default(),
            endpoints: Gauge::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.programming_duration.clone(),
        );
        registry.register(
            "svcnet_dataplane_event_to_programmed_seconds",
            "From the first watch event of a batch to the backend having applied it",
            m.event_to_programmed.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules EndpointSlice changes",
            m.endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules EndpointSlice changes",
            m.endpoint_pending.clone(),
        );
        registry.register(
            // A gauge, named `_total` by kube-proxy.
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of service ports with a Local traffic policy and no local endpoints",
            m.no_local_endpoints.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_errors",
            "Backend syncs that failed",
            m.sync_failures.clone(),
        );
        registry.register(
            "svcnet_proxier_sync_retries",
            "Syncs retried after a failed one (each retry is a full sync)",
            m.sync_retries.clone(),
        );
        registry.register(
            "svcnet_proxier_full_syncs",
            "Full syncs handed to the backend, by reason: start, resync (periodic) or retry (after a failure)",
            m.full_syncs.clone(),
        );
        registry.register(
            "svcnet_dataplane_service_ports",
            "Service ports programmed on this node",
            m.ports.clone(),
        );
        registry.register(
            "svcnet_dataplane_endpoints",
            "Endpoints programmed on this node (internal sets)",
            m.endpoints.clone(),
        );
        m
    }

    /// Counts a watch event that carries an object in `total` and, until the backend has handled it,
    /// in `pending`.
    pub(crate) fn queued(&self, total: &Counter, pending: &Gauge<i64, AtomicI64>) {
        total.inc();
        pending.inc();
        self.last_queued.set(unix_seconds(SystemTime::now()));
    }

    /// The watch events in `p` are handled (programmed, or found to change nothing): no longer pending.
    pub(crate) fn handled(&self, p: Pending) {
        self.service_pending.dec_by(p.services);
        self.endpoint_pending.dec_by(p.slices);
    }

    /// Sets the gauges that sum over all ports (endpoints, Local policies without local endpoints) from
    /// scratch, as a full sync does.
    pub(crate) fn count_all(&self, ports: &[Arc<ServicePort>]) {
        let t = ports.iter().fold([0; 3], |t, p| add(t, port_counts(p), 1));
        self.set_counts(t, false);
    }

    /// Moves those gauges by what `changes` changed, so that one endpoint costs O(1), not O(services).
    pub(crate) fn count_changes(&self, changes: &[Change]) {
        let mut d = [0; 3];
        for c in changes {
            match c {
                Change::Upsert { old, new } => {
                    if let Some(old) = old {
                        d = add(d, port_counts(old), -1);
                    }
                    d = add(d, port_counts(new), 1);
                }
                Change::Remove(old) => d = add(d, port_counts(old), -1),
            }
        }
        self.set_counts(d, true);
    }

    fn set_counts(&self, [endpoints, internal, external]: [i64; 3], delta: bool) {
        let policy = |p| {
            self.no_local_endpoints
                .get_or_create(&PolicyLabel { traffic_policy: p })
                .clone()
        };
        for (g, v) in [
            (self.endpoints.clone(), endpoints),
            (policy("internal"), internal),
            (policy("external"), external),
        ] {
            if delta {
                g.inc_by(v);
            } else {
                g.set(v);
            }
        }
    }
}

/// What one port adds to the summed gauges: its endpoints, and whether each of its Local policies has
/// endpoints elsewhere but none on this node (kube-proxy's `no_local_endpoints_total`).
fn port_counts(p: &ServicePort) -> [i64; 3] {
    let internal = p.internal_policy_local && p.has_endpoints && p.internal_endpoints.is_empty();
    let external = p.externally_accessible()
        && p.external_policy_local
        && p.has_endpoints
        && p.external_endpoints.is_empty();
    [
        p.internal_endpoints.len() as i64,
        internal as i64,
        external as i64,
    ]
}

fn add(a: [i64; 3], b: [i64; 3], sign: i64) -> [i64; 3] {
    [a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2]]
}

/// `t` as seconds since the Unix epoch (kube-proxy's timestamp gauges).
pub(crate) fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
