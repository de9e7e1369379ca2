//! The proxy's Prometheus metrics.
//!
//! Families are registered once in the caller's registry; each service port resolves its own handles
//! ([`PortMetrics`]) when it is created, so the hot path increments plain atomics and never looks a label
//! set up. Label sets of a removed port or endpoint are removed from the families, so cardinality follows
//! what is programmed now: `endpoint_selections_total` is per (service port, endpoint) and bounded by the
//! endpoints that currently exist.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use svcnet_dataplane::ServicePortName;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PortLabels {
    service: String,
    port: String,
    protocol: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirLabels {
    service: String,
    port: String,
    protocol: String,
    /// `in`: client to endpoint; `out`: endpoint to client.
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    service: String,
    port: String,
    protocol: String,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    /// `namespace/name:port` (kube-proxy's service port name).
    service: String,
    endpoint: String,
}

/// Why a connection (or UDP datagram) was refused.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Reject {
    /// The port has no usable endpoint for this frontend.
    NoEndpoints,
    /// A LoadBalancer frontend reached from outside `loadBalancerSourceRanges`.
    SourceRange,
    /// Every connect attempt failed.
    ConnectFailed,
    /// The UDP flow table is full.
    FlowTableFull,
}

impl Reject {
    const ALL: [Reject; 4] = [
        Reject::NoEndpoints,
        Reject::SourceRange,
        Reject::ConnectFailed,
        Reject::FlowTableFull,
    ];

    fn label(self) -> &'static str {
        match self {
            Reject::NoEndpoints => "no_endpoints",
            Reject::SourceRange => "source_range",
            Reject::ConnectFailed => "connect_failed",
            Reject::FlowTableFull => "flow_table_full",
        }
    }
}

/// The userspace proxy's metric families. Cheap to clone (handles).
#[derive(Clone, Debug, Default)]
pub struct ProxyMetrics {
    connections: Family<PortLabels, Counter>,
    active: Family<PortLabels, Gauge>,
    bytes: Family<DirLabels, Counter>,
    selections: Family<EndpointLabels, Counter>,
    retries: Family<PortLabels, Counter>,
    rejects: Family<ReasonLabels, Counter>,
    bind_errors: Family<PortLabels, Counter>,
    /// Frontends without a listener now, over all ports.
    pub(crate) unbound: Gauge,
}

impl ProxyMetrics {
    /// Creates the families and registers them in `registry` (names start with `svcnet_proxy_`).
    pub fn new(registry: &mut Registry) -> ProxyMetrics {
        let m = ProxyMetrics::default();
        registry.register(
            "svcnet_proxy_connections",
            "Client connections (TCP) and flows (UDP) accepted, per service port",
            m.connections.clone(),
        );
        registry.register(
            "svcnet_proxy_active_connections",
            "Client connections (TCP) and flows (UDP) open now, per service port",
            m.active.clone(),
        );
        registry.register(
            "svcnet_proxy_bytes",
            "Bytes proxied, per service port and direction (in: client to endpoint, out: endpoint to client)",
            m.bytes.clone(),
        );
        registry.register(
            "svcnet_proxy_endpoint_selections",
            "Times the balancer picked an endpoint, per service port and endpoint",
            m.selections.clone(),
        );
        registry.register(
            "svcnet_proxy_retries",
            "Failed connect attempts to endpoints, per service port (the client connection goes on to \
             another endpoint while attempts and endpoints are left)",
            m.retries.clone(),
        );
        registry.register(
            "svcnet_proxy_rejects",
            "Connections reset or datagrams dropped, per service port and reason \
             (no_endpoints, source_range, connect_failed, flow_table_full)",
            m.rejects.clone(),
        );
        registry.register(
            "svcnet_proxy_bind_errors",
            "Listeners of a service port that could not be bound (retried at the next full sync)",
            m.bind_errors.clone(),
        );
        registry.register(
            "svcnet_proxy_unbound_listeners",
            "Frontends of programmed service ports that have no listener now because binding failed (e.g. \
             out of file descriptors); retried until they bind, and their Services get a Warning Event",
            m.unbound.clone(),
        );
        m
    }

    fn labels(name: &ServicePortName) -> PortLabels {
        PortLabels {
            service: format!("{}/{}", name.namespace, name.name),
            port: name.port.to_string(),
            protocol: name.protocol.as_str().to_string(),
        }
    }

    /// The handles of one service port.
    pub(crate) fn port(&self, name: &ServicePortName) -> PortMetrics {
        let l = Self::labels(name);
        let dir = |direction| DirLabels {
            service: l.service.clone(),
            port: l.port.clone(),
            protocol: l.protocol.clone(),
            direction,
        };
        let reason = |r: Reject| ReasonLabels {
            service: l.service.clone(),
            port: l.port.clone(),
            protocol: l.protocol.clone(),
            reason: r.label(),
        };
        PortMetrics {
            connections: get(&self.connections, &l),
            active: get(&self.active, &l),
            bytes_in: get(&self.bytes, &dir("in")),
            bytes_out: get(&self.bytes, &dir("out")),
            retries: get(&self.retries, &l),
            rejects: Reject::ALL.map(|r| get(&self.rejects, &reason(r))),
            bind_errors: get(&self.bind_errors, &l),
            service: name.to_string(),
        }
    }

    /// Drops the label sets of a removed service port.
    pub(crate) fn remove_port(&self, name: &ServicePortName) {
        let l = Self::labels(name);
        for direction in ["in", "out"] {
            self.bytes.remove(&DirLabels {
                service: l.service.clone(),
                port: l.port.clone(),
                protocol: l.protocol.clone(),
                direction,
            });
        }
        for r in Reject::ALL {
            self.rejects.remove(&ReasonLabels {
                service: l.service.clone(),
                port: l.port.clone(),
                protocol: l.protocol.clone(),
                reason: r.label(),
            });
        }
        self.connections.remove(&l);
        self.active.remove(&l);
        self.retries.remove(&l);
        self.bind_errors.remove(&l);
    }

    /// The selection counter of one endpoint of a port.
    pub(crate) fn endpoint(&self, port: &PortMetrics, endpoint: std::net::SocketAddr) -> Counter {
        get(
            &self.selections,
            &EndpointLabels {
                service: port.service.clone(),
                endpoint: endpoint.to_string(),
            },
        )
    }

    /// Drops the selection counter of an endpoint that left a port.
    pub(crate) fn remove_endpoint(&self, port: &PortMetrics, endpoint: std::net::SocketAddr) {
        self.selections.remove(&EndpointLabels {
            service: port.service.clone(),
            endpoint: endpoint.to_string(),
        });
    }
}

/// A family member's handle. A function of its own so that the family's read guard is released here: in
/// a larger expression the temporary would live to its end and deadlock the next `get_or_create`.
fn get<L, M>(family: &Family<L, M>, labels: &L) -> M
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone,
{
    family.get_or_create(labels).clone()
}

/// The metric handles of one service port (resolved once; incrementing is an atomic add).
#[derive(Clone, Debug)]
pub(crate) struct PortMetrics {
    pub(crate) connections: Counter,
    pub(crate) active: Gauge,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) retries: Counter,
    rejects: [Counter; 4],
    pub(crate) bind_errors: Counter,
    /// `namespace/name:port`, the `service` label of the endpoint selections.
    pub(crate) service: String,
}

impl PortMetrics {
    pub(crate) fn reject(&self, why: Reject) {
        self.rejects[why as usize].inc();
    }
}
