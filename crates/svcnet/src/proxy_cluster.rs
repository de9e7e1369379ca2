//! `svcnet proxy --kubeconfig FILE` (or, in a pod, the in-cluster service account): the node's data plane
//! alone against any Kubernetes API server, as a drop-in for kube-proxy. Nothing else starts: no API
//! server, no kubelet, no DNS.
//!
//! It takes kube-proxy's flags where they overlap and its `--config` file (see [`crate::kube_proxy_config`]);
//! a flag given on the command line wins over the file, and the file over the defaults, which are
//! kube-proxy's (metrics on 127.0.0.1:10249, health on 0.0.0.0:10256) except the mode: svcnet's kernel
//! data plane is nftables. Before it programs anything it looks for kube-proxy's own rules on the node
//! and refuses to start beside them, saying how to remove them, since two proxies would program every
//! Service twice. `--cleanup` removes svcnet's tables and exits, as `kube-proxy --cleanup` does.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, FromArgMatches};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use tracing::{info, warn};

use crate::dataplane_args::{self, DataplaneArgs, NodeNet, ProxyMode, parse_duration};
use crate::kube_proxy_config::{self, FileConfig};
use crate::status;
use crate::supervise::Supervisor;

/// kube-proxy's flags, as `svcnet proxy` takes them when it runs against an API server.
#[derive(Debug, Default, Args)]
pub struct KubeProxyFlags {
    /// The kubeconfig to reach the API server with (default: the pod's service account, when run in a
    /// pod).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub api: crate::api_servers::ApiServersArgs,
    /// A KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1, as kubeadm writes it). Flags
    /// given on the command line win over it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The node's name, if not the hostname.
    #[arg(long)]
    pub hostname_override: Option<String>,
    /// The node's IP (default: the Node object's InternalIP).
    #[arg(long)]
    pub bind_address: Option<IpAddr>,
    /// The cluster's pod range(s): traffic from them is inside the cluster (not masqueraded).
    #[arg(long, value_delimiter = ',')]
    pub cluster_cidr: Vec<IpNet>,
    /// Where NodePorts answer: CIDRs whose local addresses count, or `primary` (the node IP). Default:
    /// every local address.
    #[arg(long, value_delimiter = ',')]
    pub nodeport_addresses: Vec<String>,
    /// kube-proxy's health server (`/healthz`, `/livez`) [default: 0.0.0.0:10256].
    #[arg(long)]
    pub healthz_bind_address: Option<SocketAddr>,
    /// The data plane: `nftables` (default) or `userspace`.
    #[arg(long, value_enum)]
    pub proxy_mode: Option<ProxyMode>,
    /// Masquerade all traffic to ClusterIPs.
    #[arg(long)]
    pub masquerade_all: bool,
    /// Conntrack table entries per CPU core (0 leaves the limit alone) [default: 32768].
    #[arg(long)]
    pub conntrack_max_per_core: Option<u64>,
    /// The smallest conntrack table [default: 131072].
    #[arg(long)]
    pub conntrack_min: Option<u64>,
    /// Idle timeout of established TCP flows [default: 24h0m0s].
    #[arg(long, value_parser = parse_duration)]
    pub conntrack_tcp_timeout_established: Option<Duration>,
    /// Timeout of TCP flows in CLOSE_WAIT [default: 1h0m0s].
    #[arg(long, value_parser = parse_duration)]
    pub conntrack_tcp_timeout_close_wait: Option<Duration>,
    /// Accept TCP packets outside the window.
    #[arg(long)]
    pub conntrack_tcp_be_liberal: bool,
    /// Timeout of one-way UDP flows (0 leaves it alone).
    #[arg(long, value_parser = parse_duration)]
    pub conntrack_udp_timeout: Option<Duration>,
    /// Timeout of two-way UDP flows (0 leaves it alone).
    #[arg(long, value_parser = parse_duration)]
    pub conntrack_udp_timeout_stream: Option<Duration>,
    /// Remove svcnet's nftables tables and exit.
    #[arg(long)]
    pub cleanup: bool,
}

/// The settings after flags, file and defaults are merged.
struct Settings {
    kubeconfig: Option<PathBuf>,
    node_name: String,
    bind_address: Option<IpAddr>,
    nodeport_addresses: Vec<String>,
    pod_cidrs: Vec<IpNet>,
    metrics: SocketAddr,
    dataplane: DataplaneArgs,
    oom_score_adj: Option<i64>,
}

/// kube-proxy's defaults for what the dataplane flags do not set the same way.
const DEFAULT_METRICS: &str = "127.0.0.1:10249";
const DEFAULT_HEALTHZ: &str = "0.0.0.0:10256";

fn settings(flags: &KubeProxyFlags, metrics_flag: Option<SocketAddr>, common: Common) -> Result<Settings> {
    let file = match &flags.config {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
            let cfg = kube_proxy_config::parse(&text)
                .map_err(|e| anyhow!("{}: invalid KubeProxyConfiguration:\n{e}", path.display()))?;
            for w in &cfg.warnings {
                warn!(file = %path.display(), "{w}");
            }
            cfg
        }
        None => FileConfig::default(),
    };
    // Every dataplane flag at its default, then kube-proxy's values over them.
    let cmd = DataplaneArgs::augment_args(clap::Command::new("defaults"));
    let mut d = DataplaneArgs::from_arg_matches(&cmd.get_matches_from(["defaults"]))?;
    d.proxy_mode = flags
        .proxy_mode
        .or(file.mode.as_deref().map(|m| match m {
            "userspace" => ProxyMode::Userspace,
            _ => ProxyMode::Nftables,
        }))
        .unwrap_or(ProxyMode::Nftables);
    d.proxy_threads = common.workers;
    d.proxy_balancing = common.balance;
    d.healthz_listen = flags
        .healthz_bind_address
        .or(file.healthz_bind_address)
        .unwrap_or_else(|| DEFAULT_HEALTHZ.parse().expect("valid default"));
    d.masquerade_all = flags.masquerade_all || file.masquerade_all.unwrap_or(false);
    if let Some(p) = file.sync_period.filter(|p| !p.is_zero()) {
        d.proxy_resync_seconds = p.as_secs().max(1);
    }
    if let Some(l) = file.localhost_nodeports {
        d.localhost_nodeports = l;
    }
    let ct = &file.conntrack;
    d.conntrack_max_per_core = flags
        .conntrack_max_per_core
        .or(ct.max_per_core)
        .unwrap_or(d.conntrack_max_per_core);
    d.conntrack_min = flags.conntrack_min.or(ct.min).unwrap_or(d.conntrack_min);
    let pick =
        |flag: Option<Duration>, file: Option<Duration>, default: Duration| flag.or(file).unwrap_or(default);
    d.conntrack_tcp_timeout_established = pick(
        flags.conntrack_tcp_timeout_established,
        ct.tcp_established_timeout,
        d.conntrack_tcp_timeout_established,
    );
    d.conntrack_tcp_timeout_close_wait = pick(
        flags.conntrack_tcp_timeout_close_wait,
        ct.tcp_close_wait_timeout,
        d.conntrack_tcp_timeout_close_wait,
    );
    d.conntrack_tcp_be_liberal = flags.conntrack_tcp_be_liberal || ct.tcp_be_liberal.unwrap_or(false);
    d.conntrack_udp_timeout = pick(
        flags.conntrack_udp_timeout,
        ct.udp_timeout,
        d.conntrack_udp_timeout,
    );
    d.conntrack_udp_timeout_stream = pick(
        flags.conntrack_udp_timeout_stream,
        ct.udp_stream_timeout,
        d.conntrack_udp_timeout_stream,
    );
    let node_name = flags
        .hostname_override
        .clone()
        .or(file.hostname_override)
        .map(|h| h.to_lowercase())
        .unwrap_or_else(crate::hostname);
    let cluster_cidrs = if flags.cluster_cidr.is_empty() {
        file.cluster_cidrs.unwrap_or_default()
    } else {
        flags.cluster_cidr.clone()
    };
    Ok(Settings {
        kubeconfig: flags.kubeconfig.clone().or(file.kubeconfig),
        node_name,
        bind_address: flags.bind_address.or(file.bind_address),
        nodeport_addresses: if flags.nodeport_addresses.is_empty() {
            file.nodeport_addresses.unwrap_or_default()
        } else {
            flags.nodeport_addresses.clone()
        },
        metrics: metrics_flag
            .or(file.metrics_bind_address)
            .unwrap_or_else(|| DEFAULT_METRICS.parse().expect("valid default")),
        pod_cidrs: cluster_cidrs,
        dataplane: d,
        oom_score_adj: file.oom_score_adj,
    })
}

/// What the manifests mode and this mode share on the command line.
pub struct Common {
    pub workers: usize,
    pub balance: svcnet_dataplane::Balance,
}

/// The node's IP as kube-proxy finds it: the Node object's InternalIP (then ExternalIP), waiting a little
/// for the Node to appear; loopback if there is none, with a warning, as kube-proxy does.
async fn node_ip(client: &kube::Client, node: &str) -> IpAddr {
    let nodes: kube::Api<Node> = kube::Api::all(client.clone());
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(n)) = nodes.get_opt(node).await {
            let addrs = n.status.and_then(|s| s.addresses).unwrap_or_default();
            let pick = |t: &str| {
                addrs
                    .iter()
                    .filter(|a| a.type_ == t)
                    .find_map(|a| a.address.parse::<IpAddr>().ok())
            };
            if let Some(ip) = pick("InternalIP").or_else(|| pick("ExternalIP")) {
                return ip;
            }
        }
        if tokio::time::Instant::now() >= until {
            warn!(
                node,
                "cannot determine this node's IP from its Node object; assuming 127.0.0.1 (use --bind-address)"
            );
            return IpAddr::from([127, 0, 0, 1]);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// kube-proxy's `--nodeport-addresses`: the local addresses inside the CIDRs, and the node IP for `primary`.
fn nodeport_addresses(wanted: &[String], node_ip: IpAddr) -> Result<Vec<IpAddr>> {
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let cidrs: Vec<IpNet> = wanted
        .iter()
        .filter(|w| *w != "primary")
        .map(|w| {
            w.parse()
                .map_err(|_| anyhow!("--nodeport-addresses: {w:?} is neither a CIDR nor \"primary\""))
        })
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    if wanted.iter().any(|w| w == "primary") {
        out.push(node_ip);
    }
    for ifa in nix::ifaddrs::getifaddrs().context("listing local addresses")? {
        let Some(addr) = ifa.address else { continue };
        let ip = if let Some(v4) = addr.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if cidrs.iter().any(|c| c.contains(&ip)) && !out.contains(&ip) {
            out.push(ip);
        }
    }
    if out.is_empty() {
        bail!(
            "--nodeport-addresses {}: no local address matches",
            wanted.join(",")
        );
    }
    Ok(out)
}

/// kube-proxy's rules on this node, if any: its nftables tables, or its iptables chains.
fn kube_proxy_rules() -> Option<String> {
    let run = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    let mut found = Vec::new();
    if let Some(tables) = run("nft", &["list", "tables"]) {
        for fam in ["ip", "ip6"] {
            if tables
                .lines()
                .any(|l| l.trim() == format!("table {fam} kube-proxy"))
            {
                found.push(format!("the nftables table `{fam} kube-proxy`"));
            }
        }
    }
    if let Some(nat) = run("iptables-save", &["-t", "nat"])
        && nat.lines().any(|l| l.starts_with(":KUBE-SERVICES"))
    {
        found.push("the iptables chain KUBE-SERVICES".into());
    }
    (!found.is_empty()).then(|| found.join(" and "))
}

/// Runs the data plane against the API server until SIGINT/SIGTERM.
pub async fn run(flags: KubeProxyFlags, metrics_flag: Option<SocketAddr>, common: Common) -> Result<()> {
    let s = settings(&flags, metrics_flag, common)?;
    if flags.cleanup {
        let mut nft = svcnet_nft::NftBackend::new(svcnet_nft::NftConfig::default());
        nft.cleanup().context("removing svcnet's nftables tables")?;
        println!("svcnet proxy: removed svcnet's nftables tables");
        return Ok(());
    }
    if s.dataplane.proxy_mode == ProxyMode::Nftables
        && let Some(found) = kube_proxy_rules()
    {
        bail!(
            "kube-proxy's rules are on this node ({found}): stop kube-proxy (delete its DaemonSet), then remove \
             its rules with `kube-proxy --cleanup` (or `nft delete table ip kube-proxy; nft delete table ip6 \
             kube-proxy`, and `iptables-save | grep -v KUBE | iptables-restore` for the iptables mode) before \
             starting svcnet proxy; two proxies would program every Service twice"
        );
    }
    if let Some(adj) = s.oom_score_adj
        && let Err(e) = std::fs::write("/proc/self/oom_score_adj", adj.to_string())
    {
        warn!(oom_score_adj = adj, error = %e, "cannot set the OOM score adjustment");
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let (client, balancer) = crate::api_servers::connect(
        s.kubeconfig.as_deref(),
        &flags.api,
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Some(&mut registry),
    )
    .await?;
    let ip = match s.bind_address {
        Some(ip) => ip,
        None => node_ip(&client, &s.node_name).await,
    };
    let mut dataplane = s.dataplane;
    dataplane.nodeport_addresses = nodeport_addresses(&s.nodeport_addresses, ip)?;
    info!(node = %s.node_name, %ip, mode = ?dataplane.proxy_mode, "svcnet proxy starting");
    let (_routes, task) = dataplane_args::start(
        &dataplane,
        client,
        NodeNet {
            name: &s.node_name,
            ip,
            service_cidrs: &[],
            pod_cidrs: &s.pod_cidrs,
            pods_in_netns: false,
        },
        &mut registry,
    )
    .await?;
    let mut supervisor = Supervisor::new();
    if let Some(task) = task {
        supervisor.watch_spawned("dataplane", task);
    }
    if let Some(b) = balancer {
        b.supervise(&supervisor);
    }
    let failed = status::Failed::default();
    status::MetricsServer {
        registry: std::sync::Arc::new(registry),
        proxy_mode: dataplane.proxy_mode.name(),
        failed: failed.clone(),
        proxy_dir: None,
    }
    .spawn(s.metrics)
    .await;
    println!(
        "svcnet proxy: serving the cluster's Services as node {} ({ip})",
        s.node_name
    );
    tokio::select! {
        stopped = supervisor.failed() => {
            failed.set(stopped.name, &stopped.reason());
            tokio::time::sleep(crate::FAILED_HEALTH_GRACE).await;
            Err(anyhow!("{} stopped: {}", stopped.name, stopped.reason()))
        }
        _ = crate::shutdown_signal() => {
            info!("svcnet proxy stopping; the rules stay in place for the next start");
            Ok(())
        }
    }
}
