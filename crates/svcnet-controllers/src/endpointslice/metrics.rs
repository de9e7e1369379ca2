//! Prometheus metrics of the EndpointSlice controllers, named like kube-controller-manager's.
//!
//! prometheus-client's OpenMetrics text encoding appends `_total` to counters, so kube's
//! `endpoint_slice_controller_changes` is exposed as `endpoint_slice_controller_changes_total`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `operation` label of the change counters: `create`, `update` or `delete`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    /// `create`, `update` or `delete`.
    pub operation: String,
}

/// `result` label of the sync counter: `success`, `error` or `stale`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `success`, `error` or `stale`.
    pub result: String,
}

/// The controllers' metrics. Cheap to clone (the metrics are shared handles).
#[derive(Clone, Debug)]
pub struct EndpointSliceMetrics {
    /// `endpoint_slice_controller_changes{operation}`: slice writes.
    pub changes: Family<OperationLabels, Counter>,
    /// `endpoint_slice_controller_syncs{result}`: Service syncs.
    pub syncs: Family<ResultLabels, Counter>,
    /// `endpoint_slice_controller_sync_duration_seconds`: one Service sync, writes included.
    pub sync_duration: Histogram,
    /// `endpoint_slice_controller_endpoints_added_per_sync`.
    pub added_per_sync: Histogram,
    /// `endpoint_slice_controller_endpoints_removed_per_sync`.
    pub removed_per_sync: Histogram,
    /// `endpoint_slice_controller_ready_to_slice_latency_seconds`: from a pod's readiness change
    /// (its Ready condition's lastTransitionTime) to the slice write that reflects it.
    pub ready_to_slice: Histogram,
    /// `endpoint_slice_mirroring_controller_changes{operation}`: mirrored slice writes.
    pub mirroring_changes: Family<OperationLabels, Counter>,
    /// `endpoints_controller_changes{operation}`: legacy Endpoints writes.
    pub endpoints_changes: Family<OperationLabels, Counter>,
}

impl Default for EndpointSliceMetrics {
    /// Metrics registered nowhere (counted, never exposed).
    fn default() -> Self {
        Self {
            changes: Family::default(),
            syncs: Family::default(),
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            added_per_sync: Histogram::new(exponential_buckets(2.0, 2.0, 15)),
            removed_per_sync: Histogram::new(exponential_buckets(2.0, 2.0, 15)),
            ready_to_slice: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            mirroring_changes: Family::default(),
            endpoints_changes: Family::default(),
        }
    }
}

impl EndpointSliceMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "endpoint_slice_controller_changes",
            "Number of EndpointSlice changes",
            m.changes.clone(),
        );
        registry.register(
            "endpoint_slice_controller_syncs",
            "Number of EndpointSlice syncs",
            m.syncs.clone(),
        );
        registry.register(
            "endpoint_slice_controller_sync_duration_seconds",
            "Duration of one Service sync of the EndpointSlice controller",
            m.sync_duration.clone(),
        );
        registry.register(
            "endpoint_slice_controller_endpoints_added_per_sync",
            "Number of endpoints added on each Service sync",
            m.added_per_sync.clone(),
        );
        registry.register(
            "endpoint_slice_controller_endpoints_removed_per_sync",
            "Number of endpoints removed on each Service sync",
            m.removed_per_sync.clone(),
        );
        registry.register(
            "endpoint_slice_controller_ready_to_slice_latency_seconds",
            "Time from a pod readiness change to the EndpointSlice write reflecting it",
            m.ready_to_slice.clone(),
        );
        registry.register(
            "endpoint_slice_mirroring_controller_changes",
            "Number of mirrored EndpointSlice changes",
            m.mirroring_changes.clone(),
        );
        registry.register(
            "endpoints_controller_changes",
            "Number of legacy Endpoints changes",
            m.endpoints_changes.clone(),
        );
        m
    }

    pub(crate) fn change(family: &Family<OperationLabels, Counter>, op: &str) {
        family
            .get_or_create(&OperationLabels {
                operation: op.to_owned(),
            })
            .inc();
    }

    pub(crate) fn sync(&self, result: &str) {
        self.syncs
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc();
    }
}

/// The Prometheus text encoding of `registry`, what a `/metrics` handler serves (content type
/// `application/openmetrics-text; version=1.0.0; charset=utf-8`).
pub fn metrics_text(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
