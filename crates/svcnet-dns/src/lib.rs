//! svcnet's cluster DNS server: Kubernetes DNS-based service discovery (specification schema 1.1.0,
//! the job of CoreDNS's `kubernetes` plugin) for the cluster zone, and a caching, coalescing forwarder
//! for every other name.
//!
//! * [`zone`]: the data, as lock-free snapshots updated incrementally by one writer.
//! * [`lookup`]: the records, NXDOMAIN/NODATA decisions and CoreDNS's quirks.
//! * [`wire`]: the query parser and the hand-written answer encoder of the hot path.
//! * [`forward`]: upstreams, cache, coalescing (hickory-proto messages).
//! * [`server`]: UDP and TCP listeners and the allow-list.
//! * [`watch`]: kube-rs watchers feeding the zone.
//! * [`metrics`]: CoreDNS-named Prometheus metrics.
//! * [`publish`]: makes the node's DNS server an endpoint of `kube-system/kube-dns`.
//!
//! [`run`] is the whole server for a node agent: bind, write the bound addresses to a file, watch, serve.

pub mod corefile;
pub mod forward;
pub mod lookup;
pub mod metrics;
pub mod publish;
pub mod server;
pub mod watch;
pub mod wire;
pub mod zone;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;
use tracing::info;

pub use lookup::{PodsMode, ZoneConfig};
pub use metrics::{Metrics, metrics_text};
pub use zone::{ZoneReader, ZoneWriter};

/// Errors starting the DNS server.
#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    /// A listen address could not be bound.
    #[error("binding {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The address file could not be written.
    #[error("writing {path}: {source}")]
    AddressFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No listen address was given.
    #[error("no listen address")]
    NoListen,
}

/// The DNS server's settings.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Addresses to serve UDP and TCP on (port 0 picks one, the same for both).
    pub listen: Vec<SocketAddr>,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// TTL of cluster answers.
    pub ttl: u32,
    /// Pod records.
    pub pods: PodsMode,
    /// Upstream resolvers; empty means the nameservers of /etc/resolv.conf.
    pub upstreams: Vec<SocketAddr>,
    /// Clients allowed (empty: everyone who reaches a listen address).
    pub allow: Vec<IpNet>,
    /// Where to write the bound addresses, one `ip:port` per line.
    pub address_file: Option<PathBuf>,
    /// Most answers the forwarder caches.
    pub cache_size: usize,
    /// Most TCP connections at once.
    pub max_tcp_connections: usize,
    /// Names outside the cluster zone go to the upstreams (CoreDNS's `forward`); without, SERVFAIL.
    pub forward: bool,
    /// PTR questions for cluster addresses are answered (`kubernetes … in-addr.arpa ip6.arpa`).
    pub reverse: bool,
    /// Zones whose NXDOMAIN answers go on to the upstreams (`kubernetes { fallthrough ZONES }`).
    pub fallthrough: Vec<String>,
    /// Most upstream queries in flight; more are REFUSED (`forward { max_concurrent N }`).
    pub max_concurrent: Option<usize>,
    /// What the forwarder caches for how long (`cache`).
    pub cache: forward::CachePolicy,
    /// Rotate the address records of every answer (`loadbalance`).
    pub loadbalance: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            listen: vec![SocketAddr::from(([127, 0, 0, 1], 10053))],
            cluster_domain: "cluster.local".into(),
            ttl: 5,
            pods: PodsMode::Verified,
            upstreams: Vec::new(),
            allow: Vec::new(),
            address_file: None,
            cache_size: 10_000,
            max_tcp_connections: 256,
            forward: true,
            reverse: true,
            fallthrough: vec!["in-addr.arpa".into(), "ip6.arpa".into()],
            max_concurrent: None,
            cache: forward::CachePolicy::default(),
            loadbalance: false,
        }
    }
}

/// The nameservers of a resolv.conf text, minus any that would be ourselves.
pub fn resolv_conf_upstreams(text: &str, ours: &[SocketAddr]) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        // A scoped IPv6 address (fe80::1%eth0) is not supported by SocketAddr parsing: skipped.
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .filter(|up| {
            !ours
                .iter()
                .any(|o| *o == *up || (o.port() == 53 && o.ip().is_unspecified() && up.ip().is_loopback()))
        })
        .collect()
}

/// A bound, not yet serving DNS server.
pub struct DnsServer {
    udp: Vec<(Arc<UdpSocket>, TcpListener)>,
    addrs: Vec<SocketAddr>,
    handler: Arc<server::Handler>,
    writer: ZoneWriter,
    max_tcp: usize,
    address_file: Option<PathBuf>,
    watch_pods: bool,
}

async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsError> {
    let err = |source| DnsError::Bind { addr, source };
    // With port 0, UDP picks the port and TCP must get the same one; retry if TCP's is taken.
    for _ in 0..20 {
        let udp = UdpSocket::bind(addr).await.map_err(err)?;
        let bound = udp.local_addr().map_err(err)?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() != 0 => return Err(err(e)),
            Err(_) => continue,
        }
    }
    Err(err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        "no port free for both UDP and TCP",
    )))
}

impl DnsServer {
    /// Binds every listen address (UDP and TCP) and prepares the handler.
    pub async fn bind(cfg: DnsConfig, metrics: Metrics) -> Result<DnsServer, DnsError> {
        if cfg.listen.is_empty() {
            return Err(DnsError::NoListen);
        }
        let mut udp = Vec::new();
        let mut addrs = Vec::new();
        for addr in &cfg.listen {
            let (u, t) = bind_pair(*addr).await?;
            addrs.push(
                u.local_addr()
                    .map_err(|source| DnsError::Bind { addr: *addr, source })?,
            );
            udp.push((Arc::new(u), t));
        }
        let upstreams = if !cfg.forward {
            Vec::new()
        } else if cfg.upstreams.is_empty() {
            let text = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
            resolv_conf_upstreams(&text, &addrs)
        } else {
            cfg.upstreams
                .iter()
                .filter(|u| !addrs.contains(u))
                .copied()
                .collect()
        };
        let mut ns_addrs: Vec<IpAddr> = addrs
            .iter()
            .map(|a| a.ip())
            .filter(|ip| !ip.is_unspecified())
            .collect();
        ns_addrs.dedup();
        let zone = cfg.cluster_domain.trim_end_matches('.').to_ascii_lowercase();
        let falls = |z: &str| cfg.fallthrough.iter().any(|f| f == z || f == ".");
        let zone_cfg = ZoneConfig {
            ttl: cfg.ttl,
            pods: cfg.pods,
            ns_addrs,
            reverse: cfg.reverse,
            fallthrough_reverse: falls("in-addr.arpa") || falls("ip6.arpa"),
            fallthrough_zone: falls(&zone),
            zone,
        };
        info!(upstreams = ?upstreams, zone = %zone_cfg.zone, "cluster DNS configured");
        let forwarder = forward::Forwarder::with_policy(
            upstreams,
            cfg.cache_size,
            cfg.cache.clone(),
            cfg.max_concurrent,
            metrics.clone(),
        );
        let handler = Arc::new(
            server::Handler::with_forwarder(zone_cfg, cfg.allow.clone(), forwarder, metrics)
                .loadbalance(cfg.loadbalance),
        );
        Ok(DnsServer {
            udp,
            addrs,
            handler,
            writer: ZoneWriter::new(),
            max_tcp: cfg.max_tcp_connections.max(1),
            address_file: cfg.address_file,
            watch_pods: cfg.pods == PodsMode::Verified,
        })
    }

    /// The bound addresses (ports resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// A reader of the zone this server will answer from (`load().synced` says whether the first
    /// complete list of the cluster's objects is in: readiness).
    pub fn zone_reader(&self) -> ZoneReader {
        self.writer.reader()
    }

    /// Arms CoreDNS's loop detection: returns the probe whose question the caller sends this server.
    pub fn arm_loop_probe(&self) -> Arc<server::LoopProbe> {
        self.handler.arm_loop_probe(Arc::new(server::LoopProbe::new()))
    }

    /// Starts the listeners; returns the zone's writer (for the caller to feed) and the tasks.
    pub fn start(self) -> Result<(ZoneWriter, Vec<JoinHandle<()>>), DnsError> {
        if let Some(path) = &self.address_file {
            let text: String = self.addrs.iter().map(|a| format!("{a}\n")).collect();
            // Written whole then renamed, so a reader never sees half a line.
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, text)
                .and_then(|_| std::fs::rename(&tmp, path))
                .map_err(|source| DnsError::AddressFile {
                    path: path.clone(),
                    source,
                })?;
        }
        let mut tasks = Vec::new();
        for (udp, tcp) in self.udp {
            let addr = udp.local_addr().ok();
            let label: Arc<str> = match addr {
                Some(a) => format!("dns://{a}").into(),
                None => "dns://".into(),
            };
            info!(addr = ?addr, "cluster DNS listening (UDP and TCP)");
            tasks.push(tokio::spawn(server::serve_udp(
                udp,
                self.handler.clone(),
                self.writer.reader(),
                label.clone(),
            )));
            tasks.push(tokio::spawn(server::serve_tcp(
                tcp,
                self.handler.clone(),
                self.writer.reader(),
                label,
                self.max_tcp,
            )));
        }
        Ok((self.writer, tasks))
    }
}

/// The whole server: bind `cfg.listen`, write the address file, watch the API through `client`, serve.
/// Returns only on a startup error (or if every watch ends).
pub async fn run(client: kube::Client, cfg: DnsConfig, metrics: Metrics) -> Result<(), DnsError> {
    DnsServer::bind(cfg, metrics).await?.serve(client).await
}

impl DnsServer {
    /// Serves from a bound server: writes the address file, watches the API through `client`, answers.
    /// Returns only on a startup error (or if every watch ends).
    pub async fn serve(self, client: kube::Client) -> Result<(), DnsError> {
        let watch_pods = self.watch_pods;
        let (writer, tasks) = self.start()?;
        // The listeners stop with this future, also when it is dropped (a reload stops a server so).
        let _listeners = AbortOnDrop(tasks);
        watch::run_watchers(client, writer, watch_pods).await;
        Ok(())
    }
}

/// Aborts its tasks when dropped.
struct AbortOnDrop(Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests;
