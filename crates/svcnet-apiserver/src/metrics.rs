//! Request metrics in Prometheus text format, named like kube-apiserver's where they overlap.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    verb: String,
    resource: String,
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerbLabels {
    verb: String,
    resource: String,
}

/// Renders another component's metrics (OpenMetrics text) for the same endpoint.
pub type ExtraMetrics = Box<dyn Fn() -> String + Send + Sync>;

/// The API server's metrics registry.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Metrics of components running in the same process (controllers), served on the same `/metrics`.
    extra: Mutex<Vec<ExtraMetrics>>,
    requests: Family<RequestLabels, Counter>,
    durations: Family<VerbLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        let durations = Family::<VerbLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        let mut registry = Registry::default();
        registry.register(
            "apiserver_request",
            "Counter of apiserver requests broken out by verb, resource and HTTP response code",
            requests.clone(),
        );
        registry.register(
            "apiserver_request_duration_seconds",
            "Response latency distribution in seconds for each verb and resource",
            durations.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            extra: Mutex::new(Vec::new()),
            requests,
            durations,
        }
    }
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, method: &str, resource: &str, code: u16, elapsed: Duration) {
        let verb = method.to_ascii_uppercase();
        self.requests
            .get_or_create(&RequestLabels {
                verb: verb.clone(),
                resource: resource.to_string(),
                code: code.to_string(),
            })
            .inc();
        self.durations
            .get_or_create(&VerbLabels {
                verb,
                resource: resource.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Registers a further metric of the API server (the audit log's, say).
    pub fn register(&self, name: &str, help: &str, metric: impl prometheus_client::registry::Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(name, help, metric);
    }

    /// Adds another component's metrics to this endpoint.
    pub fn add_extra(&self, render: ExtraMetrics) {
        self.extra.lock().unwrap_or_else(|e| e.into_inner()).push(render);
    }

    /// The metrics in OpenMetrics text format: ours, then every extra component's, one `# EOF` at the end.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        let mut body: String = out
            .lines()
            .filter(|l| *l != "# EOF")
            .map(|l| format!("{l}\n"))
            .collect();
        for render in self.extra.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            body.extend(
                render()
                    .lines()
                    .filter(|l| *l != "# EOF")
                    .map(|l| format!("{l}\n")),
            );
        }
        body.push_str("# EOF\n");
        body
    }
}

/// Labels of the ClusterIP allocation counters: the range and whether the address was asked for
/// (`static`) or chosen (`dynamic`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CidrScope {
    /// The service CIDR.
    pub cidr: String,
    /// `static` or `dynamic`.
    pub scope: String,
}

/// Labels of the NodePort allocation counters.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Scope {
    /// `static` or `dynamic`.
    pub scope: String,
}

/// Labels of the repair counters: what the repair loop found (kube's `leak`, `repair`, `outOfRange`,
/// `duplicate`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorType {
    /// The kind of problem.
    pub r#type: String,
}

/// kube-apiserver's allocator and repair metrics, under its names (`kube_apiserver_clusterip_allocator_*`,
/// `kube_apiserver_nodeport_allocator_*`, `kube_apiserver_clusterip_repair_*`,
/// `kube_apiserver_nodeport_repair_*`). The allocated and available gauges are computed when scraped
/// (`Ipam::gauges`).
#[derive(Clone, Default)]
pub struct AllocationMetrics {
    /// ClusterIPs allocated.
    pub ip_allocations: Family<CidrScope, Counter>,
    /// ClusterIP allocations that failed.
    pub ip_allocation_errors: Family<CidrScope, Counter>,
    /// NodePorts allocated.
    pub port_allocations: Family<Scope, Counter>,
    /// NodePort allocations that failed.
    pub port_allocation_errors: Family<Scope, Counter>,
    /// Problems the repair loop found with ClusterIPs.
    pub ip_repair_errors: Family<ErrorType, Counter>,
    /// Problems the repair loop found with NodePorts.
    pub port_repair_errors: Family<ErrorType, Counter>,
    /// Repair passes that failed.
    pub repair_reconcile_errors: Counter,
}

impl AllocationMetrics {
    /// Counts a repair finding of `type_` for ClusterIPs (`ip`) or NodePorts.
    pub fn repair(&self, ip: bool, type_: &str, n: usize) {
        let family = if ip {
            &self.ip_repair_errors
        } else {
            &self.port_repair_errors
        };
        family
            .get_or_create(&ErrorType {
                r#type: type_.to_string(),
            })
            .inc_by(n as u64);
    }
}

impl Metrics {
    /// Registers the allocator metrics on this endpoint and returns their handles.
    pub fn register_allocation(&self) -> AllocationMetrics {
        let m = AllocationMetrics::default();
        let mut reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        reg.register(
            "kube_apiserver_clusterip_allocator_allocation",
            "Number of Cluster IPs allocations",
            m.ip_allocations.clone(),
        );
        reg.register(
            "kube_apiserver_clusterip_allocator_allocation_errors",
            "Number of errors trying to allocate Cluster IPs",
            m.ip_allocation_errors.clone(),
        );
        reg.register(
            "kube_apiserver_nodeport_allocator_allocation",
            "Number of NodePort allocations",
            m.port_allocations.clone(),
        );
        reg.register(
            "kube_apiserver_nodeport_allocator_allocation_errors",
            "Number of errors trying to allocate NodePort",
            m.port_allocation_errors.clone(),
        );
        reg.register(
            "kube_apiserver_clusterip_repair_ip_errors",
            "Number of errors detected on clusterips by the repair loop broken down by type of error: leak, repair, full, outOfRange, duplicate, unknown, invalid",
            m.ip_repair_errors.clone(),
        );
        reg.register(
            "kube_apiserver_nodeport_repair_port_errors",
            "Number of errors detected on ports by the repair loop broken down by type of error: leak, repair, full, outOfRange, duplicate, unknown",
            m.port_repair_errors.clone(),
        );
        reg.register(
            "kube_apiserver_clusterip_repair_reconcile_errors",
            "Number of reconciliation failures on the clusterip repair reconcile loop",
            m.repair_reconcile_errors.clone(),
        );
        m
    }
}
