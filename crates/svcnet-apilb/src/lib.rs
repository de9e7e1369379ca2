//! The node's way to several API servers: a TCP balancer on loopback that every API client of the
//! node reaches the control plane through (`svcnet agent --api-servers`, `svcnet proxy`, `svcnet dns`).
//!
//! **Why a local balancer, not a multi-server client.** kube-rs' `Client` (and client-go's) talks to
//! one URL; every node component of svcnet is a plain kube-rs client so that it works unchanged
//! against a real kube-apiserver, and kubectl is one too. Putting the failover under all of them at the
//! TCP level (as RKE2/k3s agents do with their load balancer on 127.0.0.1:6444) gives one home for it:
//! the components keep their one-URL clients, kube-runtime's watcher does what it already does when a
//! connection drops (re-watch from the last resourceVersion; relist on 410 Gone), and the kubeconfig
//! written for kubectl on the node names one address that keeps working while any one server is down.
//!
//! **TLS passes through.** The balancer never terminates TLS: clients dial `https://127.0.0.1:PORT` and
//! talk to the API server end to end, so the servers' certificates must be valid for 127.0.0.1 (svcnet's
//! always are; k3s adds 127.0.0.1 to its serving certificates for the same reason) and client
//! certificates keep working.
//!
//! **Health.** Each server's `/readyz` is checked every [`Config::check_interval`] (a public path on
//! kube-apiserver and svcnet) with the node's own credentials and CA. Connections go to one current
//! server while it is healthy ([`select`]); when two checks in a row or a dial to it fail, new connections go to
//! the next healthy one, and every open connection to the failed server is closed, so that watches
//! move at once instead of hanging on a server that stopped serving (an API server that lost etcd
//! still accepts connections, but its watches no longer advance).

pub mod select;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use select::Selector;

/// Failed `/readyz` checks in a row that make a healthy server unhealthy.
const FAILED_CHECKS: u32 = 2;
/// How long a dial to a server may take before the next one is tried.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Errors of the balancer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No server was given.
    #[error("no API server address given")]
    NoServers,
    /// A server address is not an `https://host:port` URL.
    #[error("{0:?} is not an https://HOST[:PORT] URL of an API server")]
    BadServer(String),
    /// The listening address could not be bound.
    #[error("listening on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A health-check client could not be built from the credentials given.
    #[error("client for {server}: {source}")]
    Client {
        /// The server.
        server: String,
        /// Why.
        source: kube::Error,
    },
    /// The listening socket failed.
    #[error("accepting on {addr}: {source}")]
    Accept {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Parses one `--api-servers` entry: an `https://HOST[:PORT]` URL (port 443 when none is given), no
/// path.
pub fn parse_server(text: &str) -> Result<http::Uri, Error> {
    let bad = || Error::BadServer(text.to_string());
    let uri: http::Uri = text.parse().map_err(|_| bad())?;
    let path_ok = matches!(uri.path(), "" | "/") && uri.query().is_none();
    if uri.scheme_str() != Some("https") || uri.host().is_none_or(str::is_empty) || !path_ok {
        return Err(bad());
    }
    Ok(uri)
}

/// What to balance.
pub struct Config {
    /// Where to listen (loopback; port 0 picks one).
    pub listen: SocketAddr,
    /// The API servers (`https://` URLs, see [`parse_server`]), in order of preference.
    pub servers: Vec<http::Uri>,
    /// The credentials and CA the health checks use (the node's kubeconfig); its URL is replaced by
    /// each server's.
    pub client: kube::Config,
    /// How often each server's `/readyz` is checked.
    pub check_interval: Duration,
}

/// The balancer's metrics (registered by [`Metrics::new`]; a `Default` one counts without exporting).
#[derive(Clone, Default)]
pub struct Metrics {
    healthy: Family<ServerLabel, Gauge>,
    connections: Family<ServerLabel, Counter>,
    dial_failures: Family<ServerLabel, Counter>,
    switches: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    server: String,
}

impl Metrics {
    /// Registers `svcnet_apilb_*` in `registry`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics::default();
        let r = registry.sub_registry_with_prefix("svcnet_apilb");
        r.register(
            "server_healthy",
            "Whether the API server's /readyz answered ok at the last check (1) or not (0)",
            m.healthy.clone(),
        );
        r.register(
            "connections",
            "Connections relayed to each API server",
            m.connections.clone(),
        );
        r.register(
            "dial_failures",
            "Connections to an API server that could not be made",
            m.dial_failures.clone(),
        );
        r.register(
            "switches",
            "Times the current API server changed because it failed",
            m.switches.clone(),
        );
        m
    }
}

struct Server {
    /// `host:port`, what is dialled.
    authority: String,
    /// The health-check client.
    client: kube::Client,
    /// Bumped to close every open connection to this server.
    generation: watch::Sender<u64>,
}

struct Shared {
    servers: Vec<Server>,
    selector: Mutex<Selector>,
    metrics: Metrics,
}

impl Shared {
    fn label(&self, i: usize) -> ServerLabel {
        ServerLabel {
            server: self.servers[i].authority.clone(),
        }
    }

    /// Records server `i`'s health; a server that turns unhealthy loses its open connections.
    fn mark(&self, i: usize, healthy: bool, why: &str) {
        let (was, switch) = {
            let mut s = self.selector.lock().unwrap_or_else(|e| e.into_inner());
            (s.is_healthy(i), s.set_health(i, healthy))
        };
        self.metrics
            .healthy
            .get_or_create(&self.label(i))
            .set(i64::from(healthy));
        let server = &self.servers[i].authority;
        if was && !healthy {
            warn!(%server, reason = why, "API server unhealthy; closing its connections");
            self.servers[i].generation.send_modify(|g| *g += 1);
        } else if !was && healthy {
            info!(%server, "API server healthy again");
        }
        if let Some(sw) = switch {
            self.metrics.switches.inc();
            info!(
                from = %self.servers[sw.from].authority,
                to = %self.servers[sw.to].authority,
                "API server connections switch over"
            );
        }
    }
}

/// A running balancer.
pub struct ApiLb {
    listener: TcpListener,
    addr: SocketAddr,
    shared: Arc<Shared>,
    check_interval: Duration,
}

impl ApiLb {
    /// Builds a health-check client per server, checks each once, and binds the listening address;
    /// nothing is relayed before [`ApiLb::run`].
    pub async fn bind(cfg: Config, metrics: Metrics) -> Result<ApiLb, Error> {
        if cfg.servers.is_empty() {
            return Err(Error::NoServers);
        }
        let mut servers = Vec::new();
        for uri in &cfg.servers {
            let authority = format!(
                "{}:{}",
                uri.host().unwrap_or_default(),
                uri.port_u16().unwrap_or(443)
            );
            let mut client_cfg = cfg.client.clone();
            client_cfg.cluster_url = uri.clone();
            let client = kube::Client::try_from(client_cfg).map_err(|source| Error::Client {
                server: uri.to_string(),
                source,
            })?;
            servers.push(Server {
                authority,
                client,
                generation: watch::channel(0).0,
            });
        }
        // One round of checks before the first connection, so that a server already known to be down
        // or not ready (waiting for etcd, say) never gets the node's first requests.
        let mut first = tokio::task::JoinSet::new();
        for (i, s) in servers.iter().enumerate() {
            let client = s.client.clone();
            let timeout = cfg.check_interval.max(Duration::from_secs(1));
            first.spawn(async move { (i, ready(&client, timeout).await) });
        }
        let mut selector = Selector::new(servers.len());
        while let Some(Ok((i, outcome))) = first.join_next().await {
            if let Err(why) = &outcome {
                warn!(server = %servers[i].authority, reason = %why, "API server not ready at start");
            }
            selector.set_health(i, outcome.is_ok());
            metrics
                .healthy
                .get_or_create(&ServerLabel {
                    server: servers[i].authority.clone(),
                })
                .set(i64::from(outcome.is_ok()));
        }
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| Error::Bind {
                addr: cfg.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: cfg.listen,
            source,
        })?;
        Ok(ApiLb {
            listener,
            addr,
            shared: Arc::new(Shared {
                selector: Mutex::new(selector),
                servers,
                metrics,
            }),
            check_interval: cfg.check_interval,
        })
    }

    /// The address clients dial.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL clients use (`https://` the local address).
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// Relays connections and checks the servers until the listening socket fails.
    pub async fn run(self) -> Result<(), Error> {
        info!(
            listen = %self.addr,
            servers = ?self.shared.servers.iter().map(|s| s.authority.as_str()).collect::<Vec<_>>(),
            "API server balancer up"
        );
        for i in 0..self.shared.servers.len() {
            tokio::spawn(check_loop(self.shared.clone(), i, self.check_interval));
        }
        let mut acceptor = svcnet_accept::Acceptor::new(self.listener, "API server balancer");
        loop {
            let (conn, _) = acceptor.accept().await.map_err(|source| Error::Accept {
                addr: self.addr,
                source,
            })?;
            tokio::spawn(relay(self.shared.clone(), conn));
        }
    }
}

/// Checks server `i`'s `/readyz` forever. A healthy server is marked failed after
/// [`FAILED_CHECKS`] failed checks in a row (a dial that fails marks it at once): one slow answer on a
/// loaded machine should not move every watch of the node.
async fn check_loop(shared: Arc<Shared>, i: usize, interval: Duration) {
    let client = shared.servers[i].client.clone();
    let timeout = interval.max(Duration::from_secs(1));
    let mut failed = 0;
    loop {
        tokio::time::sleep(interval).await;
        match ready(&client, timeout).await {
            Ok(()) => {
                failed = 0;
                shared.mark(i, true, "");
            }
            Err(why) => {
                failed += 1;
                if failed >= FAILED_CHECKS {
                    shared.mark(i, false, &why);
                }
            }
        }
    }
}

/// One check of a server's `/readyz`.
async fn ready(client: &kube::Client, timeout: Duration) -> Result<(), String> {
    let req = http::Request::get("/readyz")
        .body(Vec::new())
        .expect("static request");
    match tokio::time::timeout(timeout, client.request_text(req)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("/readyz did not answer within {timeout:?}")),
    }
}

/// One client connection: dial the first server that answers, then copy both ways until either side
/// closes or the server is found unhealthy.
async fn relay(shared: Arc<Shared>, mut inbound: TcpStream) {
    let candidates = shared
        .selector
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .candidates();
    for i in candidates {
        let server = &shared.servers[i];
        // Subscribed before the dial: a failure found meanwhile closes this connection too.
        let mut generation = server.generation.subscribe();
        let dialled = tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(&server.authority)).await;
        let mut upstream = match dialled {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                shared.metrics.dial_failures.get_or_create(&shared.label(i)).inc();
                shared.mark(i, false, &format!("dial: {e}"));
                continue;
            }
            Err(_) => {
                shared.metrics.dial_failures.get_or_create(&shared.label(i)).inc();
                shared.mark(i, false, "dial timed out");
                continue;
            }
        };
        if let Some(sw) = shared
            .selector
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .connected(i)
        {
            shared.metrics.switches.inc();
            info!(from = %shared.servers[sw.from].authority, to = %server.authority,
                "API server connections switch over");
        }
        shared.metrics.connections.get_or_create(&shared.label(i)).inc();
        let _ = inbound.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        tokio::select! {
            r = tokio::io::copy_bidirectional(&mut inbound, &mut upstream) => {
                debug!(server = %server.authority, result = ?r, "connection ended");
            }
            _ = generation.changed() => {
                debug!(server = %server.authority, "connection closed: server unhealthy");
            }
        }
        return;
    }
    warn!("no API server could be reached; connection refused");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls() {
        assert_eq!(
            parse_server("https://127.0.0.1:6443").unwrap().port_u16(),
            Some(6443)
        );
        assert!(parse_server("https://cp.example:6443/").is_ok());
        for bad in [
            "127.0.0.1:6443",
            "http://127.0.0.1:6443",
            "https://a:1/api",
            "https://",
            "",
        ] {
            let e = parse_server(bad).unwrap_err().to_string();
            assert!(e.contains("is not an https://HOST[:PORT] URL"), "{bad}: {e}");
        }
    }
}
