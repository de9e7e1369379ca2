//! Prometheus metrics named as CoreDNS names them, so existing dashboards and alerts work:
//! `coredns_dns_requests_total`, `coredns_dns_responses_total`, `coredns_dns_request_duration_seconds`,
//! `coredns_cache_*` and `coredns_forward_*`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    server: Arc<str>,
    zone: Arc<str>,
    proto: &'static str,
    family: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResponseLabels {
    server: Arc<str>,
    zone: Arc<str>,
    rcode: &'static str,
    plugin: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DurationLabels {
    server: Arc<str>,
    zone: Arc<str>,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    server: &'static str,
    r#type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToLabels {
    to: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ToRcodeLabels {
    to: String,
    rcode: &'static str,
}

/// The DNS server's metrics; cheap to clone (every field is shared).
#[derive(Clone)]
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    responses: Family<ResponseLabels, Counter>,
    duration: Family<DurationLabels, Histogram>,
    cache_hits: Family<CacheLabels, Counter>,
    cache_misses: Family<CacheLabels, Counter>,
    cache_entries: Family<CacheLabels, Gauge>,
    forward_requests: Family<ToLabels, Counter>,
    forward_responses: Family<ToRcodeLabels, Counter>,
    forward_duration: Family<ToRcodeLabels, Histogram>,
    forward_rejects: Counter,
    reload_failed: Counter,
}

fn duration_histogram() -> Histogram {
    // CoreDNS's buckets: 0.25 ms doubling up to ~8 s.
    Histogram::new(exponential_buckets(0.00025, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Family::default(),
            responses: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_entries: Family::default(),
            forward_requests: Family::default(),
            forward_responses: Family::default(),
            forward_duration: Family::new_with_constructor(duration_histogram),
            forward_rejects: Counter::default(),
            reload_failed: Counter::default(),
        }
    }
}

/// The type label CoreDNS uses (uncommon types are "other").
pub fn type_label(t: u16) -> &'static str {
    match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        35 => "NAPTR",
        64 => "SVCB",
        65 => "HTTPS",
        252 => "AXFR",
        251 => "IXFR",
        255 => "ANY",
        _ => "other",
    }
}

/// The rcode label.
pub fn rcode_label(r: u16) -> &'static str {
    match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        16 => "BADVERS",
        _ => "other",
    }
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The cluster zone.
    Kubernetes,
    /// An upstream (or the cache of its answers).
    Forward,
    /// Refused, malformed or otherwise answered by the server itself.
    Server,
}

impl Metrics {
    /// Metrics registered in `registry`.
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics::default();
        registry.register(
            "coredns_dns_requests",
            "Counter of DNS requests made per zone, protocol and family.",
            m.requests.clone(),
        );
        registry.register(
            "coredns_dns_responses",
            "Counter of response status codes.",
            m.responses.clone(),
        );
        registry.register(
            "coredns_dns_request_duration_seconds",
            "Histogram of the time (in seconds) each request took per zone.",
            m.duration.clone(),
        );
        registry.register(
            "coredns_cache_hits",
            "The count of cache hits.",
            m.cache_hits.clone(),
        );
        registry.register(
            "coredns_cache_misses",
            "The count of cache misses.",
            m.cache_misses.clone(),
        );
        registry.register(
            "coredns_cache_entries",
            "The number of elements in the cache.",
            m.cache_entries.clone(),
        );
        registry.register(
            "coredns_forward_requests",
            "Counter of requests made per upstream.",
            m.forward_requests.clone(),
        );
        registry.register(
            "coredns_forward_responses",
            "Counter of responses received per upstream.",
            m.forward_responses.clone(),
        );
        registry.register(
            "coredns_forward_request_duration_seconds",
            "Histogram of the time each request took.",
            m.forward_duration.clone(),
        );
        registry.register(
            "coredns_forward_max_concurrent_rejects",
            "Counter of the number of queries rejected because the concurrent queries were at maximum.",
            m.forward_rejects.clone(),
        );
        registry.register(
            "coredns_reload_failed",
            "Counter of the number of failed reload attempts.",
            m.reload_failed.clone(),
        );
        m
    }

    pub(crate) fn max_concurrent_reject(&self) {
        self.forward_rejects.inc();
    }

    /// Counts a Corefile reload that failed (the running configuration stays).
    pub fn reload_failed(&self) {
        self.reload_failed.inc();
    }

    /// Counts one answered request.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &self,
        server: &Arc<str>,
        zone: &Arc<str>,
        tcp: bool,
        v6: bool,
        qtype: u16,
        rcode: u16,
        source: Source,
        took: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                server: server.clone(),
                zone: zone.clone(),
                proto: if tcp { "tcp" } else { "udp" },
                family: if v6 { "2" } else { "1" },
                r#type: type_label(qtype),
            })
            .inc();
        self.responses
            .get_or_create(&ResponseLabels {
                server: server.clone(),
                zone: zone.clone(),
                rcode: rcode_label(rcode),
                plugin: match source {
                    Source::Kubernetes => "kubernetes",
                    Source::Forward => "forward",
                    Source::Server => "",
                },
            })
            .inc();
        self.duration
            .get_or_create(&DurationLabels {
                server: server.clone(),
                zone: zone.clone(),
                r#type: type_label(qtype),
            })
            .observe(took.as_secs_f64());
    }

    pub(crate) fn cache_hit(&self, denial: bool) {
        self.cache_hits
            .get_or_create(&CacheLabels {
                server: "dns",
                r#type: if denial { "denial" } else { "success" },
            })
            .inc();
    }

    pub(crate) fn cache_miss(&self) {
        self.cache_misses
            .get_or_create(&CacheLabels {
                server: "dns",
                r#type: "all",
            })
            .inc();
    }

    pub(crate) fn cache_entries(&self, n: usize) {
        self.cache_entries
            .get_or_create(&CacheLabels {
                server: "dns",
                r#type: "all",
            })
            .set(n as i64);
    }

    pub(crate) fn forward_request(&self, to: &SocketAddr) {
        self.forward_requests
            .get_or_create(&ToLabels { to: to.to_string() })
            .inc();
    }

    pub(crate) fn forward_response(&self, to: &SocketAddr, rcode: ResponseCode, took: Duration) {
        let labels = ToRcodeLabels {
            to: to.to_string(),
            rcode: rcode_label(u16::from(rcode)),
        };
        self.forward_responses.get_or_create(&labels).inc();
        self.forward_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

/// The registry's metrics in the Prometheus text format (for the API server's `/metrics`).
pub fn metrics_text(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}
