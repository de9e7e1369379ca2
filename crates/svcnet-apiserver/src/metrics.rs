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
