//! The cluster DNS server's flags, shared by `svcnet up` and `svcnet agent` (the DNS server runs where
//! the node agent runs).

use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use ipnet::IpNet;
use svcnet_dns::{DnsConfig, PodsMode};

/// Cluster DNS flags.
#[derive(clap::Args, Clone, Debug)]
pub struct DnsArgs {
    /// Address the cluster DNS server listens on, UDP and TCP (repeatable; port 0 picks one, written to
    /// DATA-DIR/dns-address). Binding e.g. 10.96.0.10:53 needs root. If the default is taken (another
    /// cluster on this machine has it), a free port on 127.0.0.1.
    #[arg(long = "dns-listen", value_name = "ADDR", default_values_t = [default_listen()])]
    pub dns_listen: Vec<SocketAddr>,
    /// The cluster domain.
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// TTL of cluster DNS answers (seconds).
    #[arg(long, default_value_t = 5)]
    pub dns_ttl: u32,
    /// Pod records (`a-b-c-d.<ns>.pod.<zone>`): `disabled`, `insecure` or `verified`.
    #[arg(long, default_value = "verified")]
    pub dns_pods: PodsMode,
    /// Upstream resolver for names outside the cluster (repeatable; default: /etc/resolv.conf's
    /// nameservers). `IP` or `IP:PORT`.
    #[arg(long = "dns-upstream", value_name = "ADDR", value_parser = parse_upstream)]
    pub dns_upstream: Vec<SocketAddr>,
    /// Clients allowed to query (repeatable CIDR; default: everyone who reaches a listen address).
    #[arg(long = "dns-allow-cidr", value_name = "CIDR")]
    pub dns_allow_cidr: Vec<IpNet>,
    /// Do not run the cluster DNS server.
    #[arg(long)]
    pub no_dns: bool,
}

fn parse_upstream(s: &str) -> Result<SocketAddr, String> {
    s.parse::<SocketAddr>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| format!("{s:?}: expected IP or IP:PORT"))
}

impl DnsArgs {
    /// The server's configuration, writing the bound addresses to `data_dir/dns-address`.
    pub fn config(&self, data_dir: &Path) -> DnsConfig {
        DnsConfig {
            listen: self.dns_listen.clone(),
            cluster_domain: self.cluster_domain.clone(),
            ttl: self.dns_ttl,
            pods: self.dns_pods,
            upstreams: self.dns_upstream.clone(),
            allow: self.dns_allow_cidr.clone(),
            address_file: Some(data_dir.join("dns-address")),
            ..DnsConfig::default()
        }
    }

    /// Starts the DNS server in the background unless `--no-dns`, and publishes it as this node's
    /// endpoint of `kube-system/kube-dns`, so that pods reach it through the kube-dns ClusterIP. With pods
    /// in their own network namespaces it also listens on the node's pod-network gateway (the address pods
    /// can reach, also by kernel DNAT), once the node has its pod CIDR, and that is the published endpoint.
    /// A failure to bind (say, the port is taken) is logged and leaves the rest running. Returns the
    /// server's task, for its supervisor; it ends only if the server stops.
    pub fn spawn(
        &self,
        client: kube::Client,
        data_dir: &Path,
        metrics: svcnet_dns::Metrics,
        node: String,
        pods_in_netns: bool,
    ) -> Option<tokio::task::JoinHandle<anyhow::Result<()>>> {
        if self.no_dns {
            return None;
        }
        let mut cfg = self.config(data_dir);
        let default_listen = self.dns_listen == [default_listen()];
        Some(tokio::spawn(async move {
            let gateway = if pods_in_netns {
                Some(wait_for_gateway(&client, &node).await)
            } else {
                None
            };
            if let Some(gw) = gateway {
                let port = cfg.listen.first().map(|a| a.port()).filter(|p| *p != 0);
                cfg.listen.push(SocketAddr::new(gw, port.unwrap_or(DEFAULT_PORT)));
            }
            let mut bound = svcnet_dns::DnsServer::bind(cfg.clone(), metrics.clone()).await;
            // The default port belongs to the first cluster on a machine; another one (a second `svcnet
            // up`, a test) takes a free port instead, which it publishes as its kube-dns endpoint and in
            // DATA-DIR/dns-address, rather than running without DNS.
            if let Err(svcnet_dns::DnsError::Bind { addr, source }) = &bound
                && source.kind() == std::io::ErrorKind::AddrInUse
                && addr.port() == DEFAULT_PORT
                && default_listen
            {
                let taken = *addr;
                tracing::warn!(%taken, "the default cluster DNS port is taken; listening on a free port");
                for a in cfg.listen.iter_mut().filter(|a| **a == taken) {
                    a.set_port(0);
                }
                bound = svcnet_dns::DnsServer::bind(cfg, metrics).await;
            }
            let server = match bound {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cluster DNS server not running");
                    // Running on without DNS is the documented answer to this failure: the task stays,
                    // so that its supervisor does not take it for a server that stopped.
                    return std::future::pending().await;
                }
            };
            let endpoint = match gateway {
                Some(_) => server.local_addrs().last().copied(),
                None => server.local_addrs().first().copied(),
            };
            if let Some(endpoint) = endpoint {
                tokio::spawn(svcnet_dns::publish::publish(client.clone(), node, endpoint));
            }
            server
                .serve(client)
                .await
                .map_err(|e| anyhow::anyhow!("cluster DNS server stopped: {e}"))
        }))
    }
}

/// The port the DNS server takes on the pod-network gateway when `--dns-listen` leaves it to the system,
/// and on loopback by default.
const DEFAULT_PORT: u16 = 10053;

/// `--dns-listen`'s default.
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT))
}

/// The node's pod-network gateway, once the control plane has given the node a pod CIDR and the agent has
/// put the gateway on the node bridge (start-up only: a short poll, logged while it waits).
async fn wait_for_gateway(client: &kube::Client, node: &str) -> IpAddr {
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
    let mut logged = false;
    loop {
        let cidr = nodes
            .get_opt(node)
            .await
            .ok()
            .flatten()
            .and_then(|n| n.spec?.pod_cidr)
            .and_then(|c| c.parse::<IpNet>().ok());
        if let Some(gw) = cidr.and_then(|c| svcnet_agent::netns::gateway(&c).ok()) {
            // Bindable means the agent has configured the bridge.
            if std::net::UdpSocket::bind(SocketAddr::new(gw, 0)).is_ok() {
                return gw;
            }
        }
        if !logged {
            tracing::info!(node, "cluster DNS waits for the node's pod network");
            logged = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
