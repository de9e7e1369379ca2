//! The node's data plane as the command line sets it up (`--proxy-mode` and friends), shared by `svcnet up`
//! and `svcnet agent`: which backend, how it is configured, and the loop that feeds it.

use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ipnet::IpNet;
use prometheus_client::registry::Registry;
use svcnet_dataplane::{Backend, Balance};
use svcnet_proxier::{DEFAULT_HEALTH_TIMEOUT, ProxierConfig, ProxierMetrics, ProxyHealth};
use tracing::{info, warn};

/// Which data plane the node runs (`--proxy-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyMode {
    /// A userspace L4 proxy (no root needed when service addresses are local, as the default range is).
    Userspace,
    /// nftables in the kernel (root).
    Nftables,
    /// No data plane on this node.
    None,
}

/// Data-plane flags.
#[derive(Debug, Clone, clap::Args)]
pub struct DataplaneArgs {
    /// The data plane: `userspace` (default; no root needed), `nftables` (root) or `none`.
    #[arg(long, value_enum, default_value = "userspace")]
    pub proxy_mode: ProxyMode,
    /// Worker threads of the userspace proxy.
    #[arg(long = "proxy-threads", default_value_t = 2)]
    pub proxy_threads: usize,
    /// Default balancing of the userspace proxy: least-conn, round-robin, random or maglev (a Service can
    /// choose its own with the `svcnet.io/balance` annotation).
    #[arg(long = "proxy-balancing", default_value = "least-conn")]
    pub proxy_balancing: Balance,
    /// Addresses NodePorts answer on (repeatable; kube-proxy's `--nodeport-addresses`, as single
    /// addresses). Default: the node's address (userspace), every local address (nftables).
    #[arg(long = "nodeport-address")]
    pub nodeport_addresses: Vec<IpAddr>,
    /// How often the whole ruleset is programmed again, repairing drift (seconds).
    #[arg(long, default_value_t = 3600)]
    pub proxy_resync_seconds: u64,
    /// kube-proxy's health server (`/healthz`, `/livez`; kube-proxy's `--healthz-bind-address`). kube-proxy
    /// listens on 0.0.0.0:10256 for load balancers' checks; svcnet stays on loopback unless told. If the
    /// address is taken the node runs without.
    #[arg(long, default_value = "127.0.0.1:10256")]
    pub healthz_listen: std::net::SocketAddr,
    /// nftables mode: also answer NodePorts on the node's loopback addresses (127.0.0.1, ::1), TCP and
    /// UDP, through a small userspace proxy, since nftables cannot DNAT loopback traffic (kube-proxy's
    /// `--iptables-localhost-nodeports`; its nftables mode has lately done the same, for TCP).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub localhost_nodeports: bool,
    /// nftables mode: masquerade all traffic to ClusterIPs, not only traffic from outside the cluster's
    /// pod range (kube-proxy's `--masquerade-all`).
    #[arg(long)]
    pub masquerade_all: bool,
    /// nftables mode: conntrack table entries per CPU core; 0 leaves `nf_conntrack_max` alone (it is
    /// only ever raised, and only the machine's first network namespace can change it).
    #[arg(long, default_value_t = 32768)]
    pub conntrack_max_per_core: u64,
    /// nftables mode: the smallest conntrack table, whatever the number of cores.
    #[arg(long, default_value_t = 131072)]
    pub conntrack_min: u64,
    /// nftables mode: idle timeout of established TCP flows (`nf_conntrack_tcp_timeout_established`,
    /// a Go duration such as `24h0m0s`; 0 leaves it alone).
    #[arg(long, default_value = "24h0m0s", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_established: Duration,
    /// nftables mode: timeout of TCP flows in CLOSE_WAIT (`nf_conntrack_tcp_timeout_close_wait`).
    #[arg(long, default_value = "1h0m0s", value_parser = parse_duration)]
    pub conntrack_tcp_timeout_close_wait: Duration,
    /// nftables mode: let conntrack accept TCP packets outside the window (`nf_conntrack_tcp_be_liberal`).
    #[arg(long)]
    pub conntrack_tcp_be_liberal: bool,
    /// nftables mode: timeout of one-way UDP flows (`nf_conntrack_udp_timeout`; 0 leaves it alone).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub conntrack_udp_timeout: Duration,
    /// nftables mode: timeout of two-way UDP flows (`nf_conntrack_udp_timeout_stream`; 0 leaves it alone).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub conntrack_udp_timeout_stream: Duration,
}

impl DataplaneArgs {
    /// The conntrack settings the flags ask for.
    fn conntrack(&self) -> svcnet_nft::sysctl::ConntrackSysctls {
        svcnet_nft::sysctl::ConntrackSysctls {
            max_per_core: self.conntrack_max_per_core,
            min: self.conntrack_min,
            tcp_established_timeout: self.conntrack_tcp_timeout_established,
            tcp_close_wait_timeout: self.conntrack_tcp_timeout_close_wait,
            tcp_be_liberal: self.conntrack_tcp_be_liberal,
            udp_timeout: self.conntrack_udp_timeout,
            udp_stream_timeout: self.conntrack_udp_timeout_stream,
        }
    }
}

/// A duration as Go writes it and kube-proxy's flags take it: `1h0m0s`, `90s`, `1.5h`, `250ms`, `0`.
/// jiff's "friendly" format reads all of these but Go's unitless `0`; negative durations are refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &dyn std::fmt::Display| {
        format!("invalid duration {text:?} ({why}; examples: 1h0m0s, 90s, 250ms)")
    };
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let d: jiff::SignedDuration = text.parse().map_err(|e| bad(&e))?;
    Duration::try_from(d).map_err(|_| bad(&"negative"))
}

impl ProxyMode {
    /// kube-proxy's name for the mode (`/proxyMode`), if there is a data plane.
    pub fn name(self) -> Option<&'static str> {
        match self {
            ProxyMode::Userspace => Some("userspace"),
            ProxyMode::Nftables => Some("nftables"),
            ProxyMode::None => None,
        }
    }
}

/// What the data plane needs to know about the node it runs on.
pub struct NodeNet<'a> {
    /// The node's name.
    pub name: &'a str,
    /// The node's address.
    pub ip: IpAddr,
    /// The service ClusterIP ranges, if known.
    pub service_cidrs: &'a [IpNet],
    /// The cluster's pod range(s) (nftables' local-traffic detector).
    pub pod_cidrs: &'a [IpNet],
    /// Whether pods live in their own network namespaces (then service addresses must be made local).
    pub pods_in_netns: bool,
}

/// What the node's proxy process ([`crate::node_proxy`]) adds to starting the userspace data plane.
pub struct Handoff {
    /// Listening sockets handed over by the process it replaces.
    pub inherited: Vec<svcnet_proxy::InheritedSocket>,
    /// Set to the backend, shared with the control socket for the next handover.
    pub backend: Option<crate::node_proxy::SharedProxy>,
}

/// Starts the node's data plane (if any) as a task, and its health server; its metrics go into `registry`.
/// Returns the local routes it added (removed when dropped) and the data plane's task, for its supervisor.
pub async fn start(
    args: &DataplaneArgs,
    client: kube::Client,
    node: NodeNet<'_>,
    registry: &mut Registry,
) -> Result<(Option<LocalRoutes>, Option<tokio::task::JoinHandle<()>>)> {
    start_with(args, client, node, registry, None).await
}

/// [`start`], for the proxy process: with the sockets its predecessor handed over, sharing the backend.
pub async fn start_with(
    args: &DataplaneArgs,
    client: kube::Client,
    node: NodeNet<'_>,
    registry: &mut Registry,
    handoff: Option<&mut Handoff>,
) -> Result<(Option<LocalRoutes>, Option<tokio::task::JoinHandle<()>>)> {
    let mut transparent = None;
    let backend: Box<dyn Backend> = match args.proxy_mode {
        ProxyMode::None => return Ok((None, None)),
        ProxyMode::Userspace => {
            let mut cfg = svcnet_proxy::ProxyConfig::for_node(node.ip);
            cfg.workers = args.proxy_threads.max(1);
            cfg.balance = args.proxy_balancing;
            if !args.nodeport_addresses.is_empty() {
                cfg.node_addresses = args.nodeport_addresses.clone();
            }
            // Pod-network addresses (the bridge's) appear only once the node's pod CIDR is known.
            cfg.freebind = node.pods_in_netns;
            cfg.listener_fds = crate::listener_fd_budget();
            // Pods reach ClusterIPs from their own address, as through kube-proxy's DNAT. Pods in their own
            // namespaces have addresses the node does not own: transparent connects, with their routing.
            cfg.client_ip_ranges = node.pod_cidrs.to_vec();
            if node.pods_in_netns {
                match svcnet_proxy::TransparentRouting::install() {
                    Ok(t) => {
                        cfg.transparent = true;
                        transparent = Some(t);
                    }
                    Err(e) => {
                        warn!(error = %e, "pods' ClusterIP connections will come from the node's address");
                        cfg.client_ip_ranges.clear();
                    }
                }
            }
            let mut proxy =
                svcnet_proxy::UserspaceBackend::new(cfg, registry).context("starting the userspace proxy")?;
            // Best effort, ends with the proxy: a Service it cannot listen for gets a Warning Event.
            tokio::spawn(crate::listener_events::run(client.clone(), proxy.unbound()));
            match handoff {
                Some(h) => {
                    proxy.inherit(std::mem::take(&mut h.inherited));
                    let shared = crate::node_proxy::SharedProxy::new(proxy);
                    h.backend = Some(shared.clone());
                    shared.backend()
                }
                None => Box::new(proxy),
            }
        }
        ProxyMode::Nftables => {
            let mut node_ips = vec![node.ip];
            node_ips.extend(args.nodeport_addresses.iter().copied());
            let cfg = svcnet_nft::NftConfig {
                pod_cidrs: node.pod_cidrs.to_vec(),
                service_cidrs: node.service_cidrs.to_vec(),
                node_ips,
                nodeport_addresses: args.nodeport_addresses.clone(),
                masquerade_all: args.masquerade_all,
                conntrack: Some(args.conntrack()),
                ..Default::default()
            };
            let backend = svcnet_nft::NftBackend::new(cfg);
            backend.metrics().register(registry);
            // Loopback NodePorts only where NodePorts answer on loopback: everywhere, or a listed address.
            let on_loopback =
                args.nodeport_addresses.is_empty() || args.nodeport_addresses.iter().any(IpAddr::is_loopback);
            if args.localhost_nodeports && on_loopback {
                let both = svcnet_proxy::LocalhostNodePorts::new(backend, registry)
                    .context("starting the localhost NodePort proxy")?;
                Box::new(both)
            } else {
                Box::new(backend)
            }
        }
    };
    // Pods in their own namespaces reach ClusterIPs through the node: the userspace proxy listens on them,
    // so the node must treat the service range as its own (a `local` route, as kube-proxy's IPVS mode
    // binds every ClusterIP on a dummy device). With nftables the same route gives the node's own
    // connections a way out before the output hook rewrites them (a node whose only routes are its pod
    // network would otherwise answer "network unreachable"). Loopback ranges are local already.
    let routes = if node.pods_in_netns {
        let mut routes = LocalRoutes::add(node.service_cidrs)?;
        routes.transparent = transparent;
        Some(routes)
    } else {
        None
    };
    let metrics = ProxierMetrics::new(registry);
    let health = ProxyHealth::new(DEFAULT_HEALTH_TIMEOUT, registry);
    crate::status::spawn_health(args.healthz_listen, health.clone()).await;
    // healthCheckNodePort servers answer on the node's addresses, whatever the backend.
    let mut health_ips = vec![node.ip];
    health_ips.extend(args.nodeport_addresses.iter().copied());
    let cfg = ProxierConfig {
        resync_period: Duration::from_secs(args.proxy_resync_seconds.max(10)),
        service_health: Some(health_ips),
        ..ProxierConfig::new(node.name)
    };
    info!(mode = ?args.proxy_mode, "starting the data plane");
    let task = tokio::spawn(svcnet_proxier::run(client, cfg, backend, metrics, health));
    Ok((routes, Some(task)))
}

/// `ip route <verb> local <cidr> dev lo table local`.
fn local_route(verb: &str, cidr: &IpNet) -> std::io::Result<std::process::Output> {
    let cidr = cidr.to_string();
    Command::new("ip")
        .args(["route", verb, "local", &cidr, "dev", "lo", "table", "local"])
        .output()
}

/// `local` routes this process added for service ranges (and the userspace proxy's transparent-connect
/// routing, if any); removed on drop.
pub struct LocalRoutes {
    cidrs: Vec<IpNet>,
    transparent: Option<svcnet_proxy::TransparentRouting>,
}

impl LocalRoutes {
    fn add(cidrs: &[IpNet]) -> Result<LocalRoutes> {
        let mut added = Vec::new();
        for cidr in cidrs.iter().filter(|c| !c.network().is_loopback()) {
            let out = local_route("replace", cidr).context("running ip")?;
            if !out.status.success() {
                bail!(
                    "making the service range {cidr} local: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            added.push(*cidr);
        }
        Ok(LocalRoutes {
            cidrs: added,
            transparent: None,
        })
    }
}

impl LocalRoutes {
    /// Leaves the routes (and the transparent-connect routing) in place for the proxy process that took
    /// over from this one.
    pub fn keep(mut self) {
        self.cidrs.clear();
        std::mem::forget(self.transparent.take());
    }
}

impl Drop for LocalRoutes {
    fn drop(&mut self) {
        for cidr in &self.cidrs {
            let out = local_route("del", cidr);
            if !matches!(out, Ok(ref o) if o.status.success()) {
                warn!(%cidr, "could not remove the local route of the service range");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn go_durations() {
        let secs = |t: &str| parse_duration(t).map(|d| d.as_secs_f64());
        assert_eq!(secs("1h0m0s"), Ok(3600.0));
        assert_eq!(secs("24h0m0s"), Ok(86400.0));
        assert_eq!(secs("1.5h"), Ok(5400.0));
        assert_eq!(secs("90s"), Ok(90.0));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(secs("0"), Ok(0.0));
        assert_eq!(secs("0s"), Ok(0.0));
        for bad in ["", "1", "h", "1x", "-1s", "1h-2m", "1..5s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
