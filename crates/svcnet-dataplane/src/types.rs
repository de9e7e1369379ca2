//! The model's output: one [`ServicePort`] per (Service, port, protocol) with its frontends and its endpoints
//! already chosen the way kube-proxy chooses them, and the [`Change`]s a backend applies.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;

/// A shared, cheaply cloned name (namespace, service, port).
pub type Name = Arc<str>;

/// The annotation that picks a Service's balancing algorithm (values: see [`Balance`]).
pub const BALANCE_ANNOTATION: &str = "svcnet.io/balance";

/// A transport protocol of a service port.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// Kubernetes' spelling (`TCP`, `UDP`, `SCTP`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// Parses Kubernetes' spelling; an absent protocol is TCP, as the API defaults it.
    pub fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// Lower-case name, as nftables and DNS SRV names spell it (`tcp`, `udp`, `sctp`).
    pub fn lower(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// kube-proxy's `ServicePortName`: which port of which Service, the key of everything in the data plane.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServicePortName {
    /// The Service's namespace.
    pub namespace: Name,
    /// The Service's name.
    pub name: Name,
    /// The port's name (empty for the single unnamed port).
    pub port: Name,
    /// The port's protocol.
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    /// `ns/name:port` as kube-proxy logs it (`ns/name` for an unnamed port).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.port.is_empty() {
            write!(f, "{}/{}", self.namespace, self.name)
        } else {
            write!(f, "{}/{}:{}", self.namespace, self.name, self.port)
        }
    }
}

/// One endpoint of a service port, with its EndpointSlice conditions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// The endpoint's address.
    pub ip: IpAddr,
    /// The port traffic goes to (the slice's port for this service port: the resolved targetPort).
    pub port: u16,
    /// `conditions.ready` (absent means ready).
    pub ready: bool,
    /// `conditions.serving` (absent means the same as ready).
    pub serving: bool,
    /// `conditions.terminating` (absent means not terminating).
    pub terminating: bool,
    /// The node the endpoint runs on.
    pub node: Option<Name>,
    /// The endpoint's zone.
    pub zone: Option<Name>,
    /// Whether the endpoint runs on this node.
    pub is_local: bool,
    /// Zone hints (`hints.forZones`); `None` when the endpoint has no hints at all.
    pub zone_hints: Option<Vec<Name>>,
}

impl Endpoint {
    /// Where to connect: `ip:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }
}

/// How a service port spreads connections over its endpoints (`svcnet.io/balance` annotation, or the
/// backend's default).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Balance {
    /// Least connections by the power of two random choices (`least-conn`).
    LeastConn,
    /// Round robin (`round-robin`).
    RoundRobin,
    /// Uniformly random (`random`).
    Random,
    /// Consistent hashing on the client IP with a Maglev table (`maglev`).
    Maglev,
}

/// An unknown balancing algorithm name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown balancing algorithm {0:?}: use least-conn, round-robin, random or maglev")]
pub struct UnknownBalance(pub String);

impl std::str::FromStr for Balance {
    type Err = UnknownBalance;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "least-conn" | "leastconn" | "p2c" => Ok(Balance::LeastConn),
            "round-robin" | "roundrobin" | "rr" => Ok(Balance::RoundRobin),
            "random" => Ok(Balance::Random),
            "maglev" | "consistent-hash" => Ok(Balance::Maglev),
            other => Err(UnknownBalance(other.to_string())),
        }
    }
}

impl fmt::Display for Balance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Balance::LeastConn => "least-conn",
            Balance::RoundRobin => "round-robin",
            Balance::Random => "random",
            Balance::Maglev => "maglev",
        })
    }
}

/// Which kind of address a frontend is; decides internal versus external traffic policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FrontendKind {
    /// A ClusterIP: internal traffic.
    ClusterIp,
    /// A `spec.externalIPs` address: external traffic.
    ExternalIp,
    /// A LoadBalancer ingress address: external traffic.
    LoadBalancer,
    /// The NodePort on the node's own addresses: external traffic (the address is the backend's to choose).
    NodePort,
}

impl FrontendKind {
    /// Whether traffic to this frontend counts as external (kube-proxy: NodePort, externalIPs, LB IPs).
    pub fn is_external(self) -> bool {
        !matches!(self, FrontendKind::ClusterIp)
    }
}

/// One address a service port is reachable at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    /// What kind of address.
    pub kind: FrontendKind,
    /// The address; `None` for [`FrontendKind::NodePort`] (every node address).
    pub ip: Option<IpAddr>,
    /// The port.
    pub port: u16,
}

/// A service port as the data plane programs it: frontends, settings and the endpoint sets to use.
///
/// The endpoint sets are already resolved as kube-proxy's `CategorizeEndpoints` does: ready endpoints,
/// else serving-and-terminating ones; traffic policy `Local` keeps only this node's; topology hints apply
/// when every ready endpoint has them and one matches this node's zone. Endpoints of both IP families may
/// appear; a backend that needs one family filters with [`ServicePort::internal_for`]/[`ServicePort::external_for`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// Which port of which Service.
    pub name: ServicePortName,
    /// The Service's ClusterIPs (`spec.clusterIPs`), primary first.
    pub cluster_ips: Vec<IpAddr>,
    /// The service port (`spec.ports[].port`).
    pub port: u16,
    /// The NodePort, for NodePort and LoadBalancer Services that have one.
    pub node_port: Option<u16>,
    /// `spec.externalIPs`.
    pub external_ips: Vec<IpAddr>,
    /// LoadBalancer ingress IPs from `status.loadBalancer.ingress` (those with `ipMode` VIP or unset).
    pub load_balancer_ips: Vec<IpAddr>,
    /// `spec.loadBalancerSourceRanges` (empty: everyone).
    pub load_balancer_source_ranges: Vec<IpNet>,
    /// ClientIP session affinity and its timeout; `None` without affinity.
    pub affinity_timeout: Option<Duration>,
    /// `internalTrafficPolicy: Local`.
    pub internal_policy_local: bool,
    /// `externalTrafficPolicy: Local` on an externally reachable Service.
    pub external_policy_local: bool,
    /// `spec.healthCheckNodePort` (LoadBalancer with externalTrafficPolicy Local).
    pub health_check_node_port: Option<u16>,
    /// The balancing algorithm the Service asks for (`svcnet.io/balance`); `None`: the backend's default.
    pub balance: Option<Balance>,
    /// Endpoints for internal traffic (to a ClusterIP), and for external traffic that starts on this node.
    pub internal_endpoints: Vec<Endpoint>,
    /// Endpoints for external traffic (NodePort, externalIPs, LoadBalancer IPs).
    pub external_endpoints: Vec<Endpoint>,
    /// Whether any endpoint anywhere can take traffic; without one, traffic is rejected rather than dropped
    /// (kube-proxy rejects a Service with no endpoints and drops traffic a Local policy leaves nowhere to go).
    pub has_endpoints: bool,
    /// Every endpoint the slices list for this port, usable or not (stale-conntrack cleanup, visibility).
    pub all_endpoints: Vec<Endpoint>,
}

impl ServicePort {
    /// kube-proxy's `ExternallyAccessible`: a NodePort, externalIPs or LoadBalancer IPs.
    pub fn externally_accessible(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty() || !self.load_balancer_ips.is_empty()
    }

    /// Every frontend of this port, ClusterIPs first.
    pub fn frontends(&self) -> impl Iterator<Item = Frontend> + '_ {
        let ip = |kind, port| {
            move |ip: &IpAddr| Frontend {
                kind,
                ip: Some(*ip),
                port,
            }
        };
        self.cluster_ips
            .iter()
            .map(ip(FrontendKind::ClusterIp, self.port))
            .chain(
                self.external_ips
                    .iter()
                    .map(ip(FrontendKind::ExternalIp, self.port)),
            )
            .chain(
                self.load_balancer_ips
                    .iter()
                    .map(ip(FrontendKind::LoadBalancer, self.port)),
            )
            .chain(self.node_port.map(|port| Frontend {
                kind: FrontendKind::NodePort,
                ip: None,
                port,
            }))
    }

    /// The endpoints traffic to `frontend` uses (internal or external set).
    pub fn endpoints_for(&self, kind: FrontendKind) -> &[Endpoint] {
        if kind.is_external() {
            &self.external_endpoints
        } else {
            &self.internal_endpoints
        }
    }

    /// Internal endpoints of one IP family (`v6` false: IPv4).
    pub fn internal_for(&self, v6: bool) -> impl Iterator<Item = &Endpoint> {
        self.internal_endpoints
            .iter()
            .filter(move |e| e.ip.is_ipv6() == v6)
    }

    /// External endpoints of one IP family (`v6` false: IPv4).
    pub fn external_for(&self, v6: bool) -> impl Iterator<Item = &Endpoint> {
        self.external_endpoints
            .iter()
            .filter(move |e| e.ip.is_ipv6() == v6)
    }
}

/// One change to the table of service ports. Carries the previous value so that a backend can touch only
/// what differs without keeping its own copy.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A service port appeared (`old` is `None`) or changed.
    Upsert {
        /// The port before, if it existed.
        old: Option<Arc<ServicePort>>,
        /// The port now.
        new: Arc<ServicePort>,
    },
    /// A service port went away.
    Remove(Arc<ServicePort>),
}

impl Change {
    /// The port this change is about.
    pub fn name(&self) -> &ServicePortName {
        match self {
            Change::Upsert { new, .. } => &new.name,
            Change::Remove(old) => &old.name,
        }
    }
}

/// What a data-plane backend failed to do.
#[derive(Debug, thiserror::Error)]
#[error("{backend} backend: {message}")]
pub struct BackendError {
    /// The backend's name.
    pub backend: &'static str,
    /// What went wrong.
    pub message: String,
}

/// A data plane: programs service ports. nftables and the userspace proxy are two implementations.
///
/// Calls come from one task, in order: [`Backend::sync_all`] first (and now and then again, to repair any
/// drift), [`Backend::apply`] with each batch of changes in between.
pub trait Backend: Send {
    /// A short name for logs and metrics (`userspace`, `nftables`).
    fn name(&self) -> &'static str;

    /// Applies one batch of changes. Only the ports in `changes` changed; everything else stays as it is.
    fn apply(&mut self, changes: &[Change]) -> Result<(), BackendError>;

    /// Makes the data plane exactly `ports` (start-up and periodic resync); anything else it programs goes.
    fn sync_all(&mut self, ports: &[Arc<ServicePort>]) -> Result<(), BackendError>;
}
