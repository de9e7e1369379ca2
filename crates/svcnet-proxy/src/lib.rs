//! svcnet's userspace data plane: an L4 proxy that implements [`svcnet_dataplane::Backend`].
//!
//! Where the nftables backend rewrites packets in the kernel, this backend accepts connections itself:
//! every frontend of a service port (ClusterIP, externalIP, LoadBalancer IP, the NodePort on each
//! configured node address) gets a listening socket, and each accepted connection is joined to an
//! endpoint chosen by the port's balancing algorithm. It needs no privileges when the addresses are local
//! (svcnet's default service range lies in 127.0.0.0/8) and works where nftables is not available.
//!
//! - **Isolation**: the proxy runs on its own multi-thread tokio runtime ([`ProxyConfig::workers`]
//!   threads), so a busy data plane never delays the control plane, and the other way round.
//! - **Control path** ([`UserspaceBackend`]): `apply`/`sync_all` bind listeners synchronously (errors
//!   are reported at once, per port, and retried by the next `sync_all`) and publish each port's endpoint
//!   sets with one atomic pointer swap ([`arc_swap`]); established connections are never touched.
//! - **Hot path**: one lock-free load of the port's view per connection, balancing with atomics only
//!   (least connections by the power of two random choices, round robin, random, Maglev consistent
//!   hashing); bytes are copied through pooled buffers while messages are small and moved with zero-copy
//!   `splice(2)` through a pooled pipe pair once a transfer turns out to be bulk. Session affinity
//!   is the one place that takes a (sharded, short) lock, and only for Services that ask for it.
//! - **TCP**: connect timeout, retry on another endpoint within the same client connection, short back-off
//!   of an endpoint that refused; half-close is passed on; a frontend without endpoints has no
//!   listener, so the kernel refuses its connections (see [`ProxyConfig`] on rejects).
//! - **Client address**: pods reaching a ClusterIP keep their own address as the connection's source
//!   ([`ProxyConfig::client_ip_ranges`]; transparently, with [`TransparentRouting`], when pods are not
//!   local to the node), as kube-proxy's DNAT keeps it.
//! - **UDP**: a flow table per listener (client address → connected socket to the endpoint) with an idle
//!   timeout and a size bound; replies leave from the service address.
//! - **Metrics** ([`ProxyMetrics`]) are registered in a registry the caller passes in; nothing is global.

mod affinity;
mod backend;
mod endpoints;
mod localhost;
mod maglev;
mod metrics;
mod port;
mod relay;
mod source;
mod tcp;
mod transparent;
mod udp;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use ipnet::IpNet;

pub use backend::{InheritedSocket, Unbound, UserspaceBackend};
pub use localhost::LocalhostNodePorts;
pub use metrics::ProxyMetrics;
pub use svcnet_dataplane::Balance;
pub use transparent::{TransparentError, TransparentRouting};

/// How the userspace proxy runs.
///
/// **Rejects.** kube-proxy rejects traffic to a Service without endpoints (TCP clients see `connect()`
/// fail with "connection refused", UDP ones an ICMP port unreachable). The proxy gets the same from the
/// kernel by not listening: a frontend without any endpoint has its listener closed, and opened again by
/// the change that brings an endpoint. Where the listener must stay (the Service has endpoints, but not
/// for this client: a LoadBalancer frontend reached from outside `loadBalancerSourceRanges`, an external
/// frontend whose `externalTrafficPolicy: Local` has no local endpoint, every connect attempt failed),
/// the accepted connection is closed with a TCP reset (`SO_LINGER` 0): the client sees "connection reset"
/// at once instead of a hang. UDP datagrams that cannot be forwarded are dropped.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Worker threads of the proxy's own runtime (`--proxy-workers`, default 2).
    pub workers: usize,
    /// Balancing algorithm for ports whose Service does not pick one (`--proxy-balance`).
    pub balance: Balance,
    /// Addresses the NodePorts listen on (`--node-address`), normally the node's InternalIP(s). Never a
    /// wildcard by default; traffic from these addresses (and from loopback) to an external frontend counts
    /// as coming from this node and uses the internal endpoints, as in kube-proxy.
    pub node_addresses: Vec<IpAddr>,
    /// How long one connect attempt to an endpoint may take.
    pub connect_timeout: Duration,
    /// Endpoints tried for one client connection before it is reset (at least 1).
    pub connect_attempts: usize,
    /// How long an endpoint that failed a connect is skipped by the balancer (unless every endpoint is).
    pub endpoint_backoff: Duration,
    /// A UDP flow without traffic in either direction for this long is forgotten.
    pub udp_idle_timeout: Duration,
    /// Most UDP flows per listener; datagrams of new clients beyond it are dropped.
    pub udp_max_flows: usize,
    /// `listen(2)` backlog of the TCP listeners.
    pub backlog: i32,
    /// Bind with `IP_FREEBIND`, so that a frontend address not (yet) configured on this host can be bound.
    pub freebind: bool,
    /// Move bulk TCP transfers with `splice(2)` (Linux); when false, or when no pipe can be had, they
    /// are copied through userspace like small messages.
    pub splice: bool,
    /// Capacity asked for each splice pipe (rounded up to pages by the kernel, capped by
    /// `/proc/sys/fs/pipe-max-size`; best effort). 256 KiB measured better than the 64 KiB default for
    /// bulk transfers (fewer calls, fewer wake-ups of the receiver).
    pub pipe_size: usize,
    /// Most descriptors the listeners may hold (a TCP listener holds two, a UDP one one), `None` for no
    /// limit of its own. A listener beyond it is not opened and counts as not bound (retried, Warning
    /// Event): the proxy must not take the last descriptors the rest of the process needs to accept API
    /// requests and proxied connections. Set from `RLIMIT_NOFILE` minus a reserve.
    pub listener_fds: Option<usize>,
    /// Clients in these ranges (the cluster's pod CIDRs) reach endpoints through a ClusterIP from their own
    /// address, as through kube-proxy's DNAT: the proxy binds its connection to the client's IP (see
    /// `source.rs`). Everyone else, NodePort and LoadBalancer traffic, and a pod reaching itself get the
    /// proxy's address, except outside clients of `externalTrafficPolicy: Local` Services when
    /// `transparent` is on. Empty (the default): always the proxy's.
    pub client_ip_ranges: Vec<IpNet>,
    /// Bind those connections with `IP_TRANSPARENT`, for clients whose address this node does not own
    /// (pods in their own network namespaces); needs [`TransparentRouting`] in place for the replies.
    pub transparent: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            workers: 2,
            balance: Balance::LeastConn,
            node_addresses: vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
            connect_timeout: Duration::from_secs(1),
            connect_attempts: 3,
            endpoint_backoff: Duration::from_secs(2),
            udp_idle_timeout: Duration::from_secs(30),
            udp_max_flows: 65536,
            backlog: 4096,
            freebind: false,
            splice: true,
            pipe_size: 256 * 1024,
            listener_fds: None,
            client_ip_ranges: Vec::new(),
            transparent: false,
        }
    }
}

impl ProxyConfig {
    /// The defaults, with NodePorts on `node_ip` (the node's InternalIP).
    pub fn for_node(node_ip: IpAddr) -> Self {
        ProxyConfig {
            node_addresses: vec![node_ip],
            ..Default::default()
        }
    }
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Its runtime could not be created.
    #[error("starting the proxy runtime: {0}")]
    Runtime(#[from] std::io::Error),
    /// The configuration cannot work.
    #[error("invalid proxy configuration: {0}")]
    Config(String),
}

/// Milliseconds since the first call: the proxy's clock for back-offs, affinity and UDP idleness (a
/// monotonic `u64` fits in an atomic, an `Instant` does not).
pub(crate) fn now_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    // Offset by one so that 0 can mean "never" in atomics.
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64 + 1
}
