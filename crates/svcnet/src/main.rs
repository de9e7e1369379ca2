//! The `svcnet` command.
//!
//! `svcnet up` starts a one-node control plane: the embedded store, the API server over HTTPS, and the
//! bootstrap objects every cluster has; it writes a kubeconfig for kubectl. Later components (controllers,
//! the node agent with DNS and the data plane) are started by `up` as they land, each talking to the API
//! server like any other client.
//!
//! Every long-running loop either command starts runs under a [`supervise::Supervisor`]: when one stops,
//! the command logs it, turns its health red and shuts down with an error.

mod api_servers;
mod audit_args;
mod backup_cmd;
mod controller_identity;
mod dataplane_args;
mod dns_args;
mod dns_cmd;
mod join;
mod kube_proxy_config;
mod lab_cmd;
mod lb_args;
mod leader;
mod listener_events;
mod node_args;
mod node_identity;
mod node_proxy;
mod proxy_cluster;
mod proxy_cmd;
mod proxy_control;
mod proxy_process;
mod reloading;
mod status;
mod store_args;
mod supervise;
mod token_cmd;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use clap::{Parser, Subcommand};
use ipnet::IpNet;
use supervise::Supervisor;
use svcnet_agent::agent::PodNetwork;
use svcnet_alloc::PortRange;
use svcnet_apiserver::hooks::{KindHooks, ServiceNetConfig};
use svcnet_apiserver::{ApiServer, Config, pki};
use tokio::net::TcpListener;
use tracing::info;

/// Kubernetes Service networking that runs on its own.
#[derive(Parser)]
#[command(name = "svcnet", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process, so the size of its largest variant (`up`'s many flags) costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Start a one-node cluster and write DIR/kubeconfig.
    // Boxed, as the agent's: the two largest sets of flags.
    Up(Box<UpArgs>),
    /// Run a node agent that joins a cluster (the kubelet's job: runs the pods bound to this node).
    Agent(Box<AgentArgs>),
    /// Run only the node's data plane: kube-proxy's job against an API server (`--kubeconfig`, or in a
    /// pod), or the userspace proxy for the Services of a YAML file (`--manifests`).
    Proxy(proxy_cmd::ProxyArgs),
    /// Run only the cluster DNS server against an API server (`--kubeconfig`, or in a pod), configured
    /// by a CoreDNS Corefile (`--conf`): CoreDNS's job.
    Dns(dns_cmd::DnsCmdArgs),
    /// Back up the embedded store of a cluster to FILE (consistent while `svcnet up` runs).
    Backup(backup_cmd::BackupArgs),
    /// Restore the embedded store of a stopped cluster from a backup FILE.
    Restore(backup_cmd::BackupArgs),
    /// Move a stopped one-node cluster's embedded store into etcd (`--etcd-servers`), keeping UIDs,
    /// allocations and the order of resourceVersions.
    Migrate(backup_cmd::MigrateArgs),
    /// A multi-node cluster on this machine, built from network namespaces (root): `lab up`, `lab down`,
    /// `lab exec`, `lab status`, `lab stop-node`, `lab start-node`, `lab restart-agent`.
    Lab(lab_cmd::LabArgs),
    /// The node's userspace proxy in a process of its own, as `up` and `agent` start it (internal).
    #[command(hide = true)]
    NodeProxy(node_proxy::NodeProxyArgs),
    /// Bootstrap tokens for joining nodes: `token create` (as `kubeadm token create`).
    Token(token_cmd::TokenArgs),
}

#[derive(Parser)]
struct UpArgs {
    /// Where state lives: the store, certificates, the kubeconfig.
    #[arg(long, default_value = "./svcnet-data")]
    data_dir: PathBuf,
    /// Address the API server listens on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    api_listen: SocketAddr,
    /// Service ClusterIP range(s), comma-separated: one per IP family, primary first. The default lies
    /// inside 127.0.0.0/8 so that it works without root; give e.g. 10.96.0.0/12 for the kernel data plane.
    #[arg(long, default_value = "127.96.0.0/12", value_delimiter = ',')]
    service_cidr: Vec<IpNet>,
    /// NodePort range.
    #[arg(long, default_value = "30000-32767")]
    service_node_port_range: String,
    /// How often the allocation repair loop runs even without changes (it also runs on every change to
    /// Services, IPAddresses and ServiceCIDRs). Go duration.
    #[arg(long, default_value = "3m", value_parser = store_args::parse_duration)]
    allocation_repair_period: std::time::Duration,
    /// How long an IPAddress or NodePort that no Service holds is left before the repair loop releases
    /// it (kube-apiserver's 60 s: a request may have allocated it and not yet written its Service).
    #[arg(long, default_value = "60s", value_parser = store_args::parse_duration)]
    allocation_leak_grace_period: std::time::Duration,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Serve the node's metrics on http://ADDR/metrics, with kube-proxy's `/healthz` and `/proxyMode`
    /// (kube-proxy's default address; the API server serves the same metrics at /metrics). If it is taken
    /// svcnet runs without.
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_listen: SocketAddr,
    /// LoadBalancer address pool entry (CIDR, first-last range or address; repeatable). With at least one,
    /// the LoadBalancer IPAM controller runs and gives `type: LoadBalancer` Services ingress addresses.
    #[arg(long = "lb-pool", value_name = "ENTRY")]
    lb_pool: Vec<String>,
    /// The `spec.loadBalancerClass` the LoadBalancer IPAM serves (Services without a class too).
    #[arg(long, default_value = svcnet_controllers::lb_ipam::DEFAULT_LB_CLASS)]
    lb_class: String,
    /// Pod address range; each node gets a block of it. The default lies inside 127.0.0.0/8 (the loopback
    /// twin of flannel's 10.244.0.0/16) so pods work without root in the host pod network.
    #[arg(long, default_value = "127.244.0.0/16")]
    cluster_cidr: IpNet,
    /// Prefix length of each node's pod block.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// Name of the local node (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// Most endpoints in one EndpointSlice.
    #[arg(long, default_value_t = 100)]
    max_endpoints_per_slice: usize,
    /// Do not run a node agent (pods) or cluster DNS inside `up`; the data plane still runs unless
    /// `--proxy-mode none`.
    #[arg(long)]
    no_agent: bool,
    /// Stop the local node's pods (and their network namespaces) when `svcnet up` exits. By default they
    /// keep running, and the next `svcnet up` on this data directory adopts them: a restart does not
    /// interrupt the Services they serve.
    #[arg(long)]
    stop_pods_on_exit: bool,
    #[command(flatten)]
    lifecycle: node_args::NodeLifecycleArgs,
    /// Pod network of the local node: `host` (pods bind their own loopback address; no root needed) or
    /// `netns` (root: a network namespace per pod on a node bridge; give a real --cluster-cidr such as
    /// 10.244.0.0/16).
    #[arg(long, default_value = "host")]
    pod_network: PodNetwork,
    /// With `--pod-network netns`: how pods reach pods on other nodes (`svcnet agent`s joining this
    /// cluster). `host-gw` (the default): one route per remote node, its pod block via its InternalIP (the
    /// nodes share a subnet); `vxlan`: flannel's VXLAN overlay (VNI 1, UDP 8472).
    #[arg(long)]
    overlay: Option<svcnet_podnet::Overlay>,
    /// Reach node agents (`kubectl logs`) through the HTTP CONNECT proxy on this Unix socket, as
    /// kube-apiserver's egress selector does (`HTTPConnect` over `UDS`): for node addresses this
    /// machine's network cannot route to (`svcnet lab` uses it).
    #[arg(long, value_name = "PATH")]
    kubelet_egress_uds: Option<PathBuf>,
    /// Run only the control plane (API server and controllers), no node: no node agent, cluster DNS or
    /// data plane. With `--etcd-servers`, any number of such instances serve one cluster.
    #[arg(long)]
    control_plane_only: bool,
    #[command(flatten)]
    store: store_args::StoreArgs,
    #[command(flatten)]
    leader: leader::LeaderArgs,
    /// Bearer tokens of further users, in kube-apiserver's CSV format: `token,user,uid,"group1,group2"`.
    #[arg(long, value_name = "FILE")]
    token_auth_file: Option<PathBuf>,
    // Boxed: the audit flags would make `up`'s arguments the one large variant of `Command`.
    #[command(flatten)]
    audit: Box<audit_args::AuditArgs>,
    /// The longest validity of the certificates the cluster CA signs for CertificateSigningRequests
    /// (kube-controller-manager's flag): a number with `s`, `m` or `h`.
    #[arg(long, default_value = "8760h0m0s", value_parser = dataplane_args::parse_duration)]
    cluster_signing_duration: std::time::Duration,
    #[command(flatten)]
    dataplane: dataplane_args::DataplaneArgs,
    #[command(flatten)]
    dns: dns_args::DnsArgs,
    #[command(flatten)]
    lb: lb_args::LbAnnounceArgs,
}

/// `svcnet agent`: a node agent joining a cluster, with a bootstrap token (`--server`, `--token`,
/// `--ca-cert-hash`: it gets a certificate of its own) or through a kubeconfig.
#[derive(Parser)]
struct AgentArgs {
    /// The kubeconfig to reach the API server with, instead of joining with a token.
    #[arg(long, conflicts_with = "server")]
    kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    join: join::JoinArgs,
    #[command(flatten)]
    api: api_servers::ApiServersArgs,
    /// This node's name (default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// This node's InternalIP.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: std::net::IpAddr,
    /// Where pod state and logs live.
    #[arg(long, default_value = "./svcnet-agent")]
    data_dir: PathBuf,
    /// Labels to add to the Node when it registers (the kubelet's flag): `key=value` pairs,
    /// comma-separated, e.g. `topology.kubernetes.io/zone=zone-a`.
    #[arg(long, value_delimiter = ',', value_parser = parse_label)]
    node_labels: Vec<(String, String)>,
    /// Address of the agent's endpoint (container logs); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Duration of the node's Lease in seconds; it is renewed every quarter of it (the kubelet's flag).
    #[arg(long, default_value_t = 40)]
    node_lease_duration_seconds: u64,
    /// Pod network: `host` (pods bind their own loopback address; no root needed) or `netns` (root: a
    /// network namespace per pod on a node bridge; the cluster's pod CIDR must be a real range).
    #[arg(long, default_value = "host")]
    pod_network: PodNetwork,
    /// The cluster's Service ClusterIP range(s); with the netns pod network the userspace proxy makes them
    /// local to the node so that pods reach ClusterIPs.
    #[arg(long, value_delimiter = ',')]
    service_cidr: Vec<IpNet>,
    /// The cluster's pod range(s) (the nftables data plane's local-traffic detector; with the netns pod
    /// network, what pod traffic is not masqueraded to).
    #[arg(long, value_delimiter = ',')]
    cluster_cidr: Vec<IpNet>,
    /// With `--pod-network netns`: how pods reach pods on other nodes. `host-gw` (the default): one route
    /// per remote node, its pod block via its InternalIP (the nodes share a subnet); `vxlan`: flannel's
    /// VXLAN overlay (VNI 1, UDP 8472), the VTEP MAC published on the Node.
    #[arg(long)]
    overlay: Option<svcnet_podnet::Overlay>,
    #[command(flatten)]
    dataplane: dataplane_args::DataplaneArgs,
    #[command(flatten)]
    dns: dns_args::DnsArgs,
    #[command(flatten)]
    lb: lb_args::LbAnnounceArgs,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text")]
    log_format: String,
    /// Stop this node's pods (and their network namespaces) when the agent exits. By default they keep
    /// running, and the next agent on this data directory adopts them.
    #[arg(long)]
    stop_pods_on_exit: bool,
    /// Serve Prometheus metrics (the data plane's and DNS's, named like kube-proxy's and CoreDNS's) on
    /// http://ADDR/metrics; kube-proxy's default address. If it is taken the agent runs without.
    #[arg(long, default_value = "127.0.0.1:10249")]
    metrics_listen: SocketAddr,
}

/// One `key=value` of `--node-labels`.
fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("invalid label {text:?}: want key=value")),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_lowercase())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into())
}

/// A client for the kubeconfig's current context (certificate files followed, see [`reloading`]).
async fn kube_client(kubeconfig: &std::path::Path) -> Result<kube::Client> {
    reloading::client(kubeconfig).await
}

fn agent_config(
    name: String,
    ip: std::net::IpAddr,
    root: PathBuf,
    listen: SocketAddr,
    lease: std::time::Duration,
    pod_network: PodNetwork,
    api_token: Option<String>,
) -> svcnet_agent::agent::AgentConfig {
    svcnet_agent::agent::AgentConfig {
        node_name: name,
        node_ip: ip,
        root,
        listen,
        labels: Default::default(),
        lease_duration: lease,
        pod_network,
        api_token,
        pod_mtu: None,
        cluster_ca: None,
    }
}

/// The CA of the kubeconfig's current cluster (PEM), if it names one: pods get it as their service
/// account's `ca.crt`.
fn kubeconfig_ca(path: &std::path::Path) -> Option<String> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read_from(path).ok()?;
    let context = kc.current_context.as_deref()?;
    let cluster = kc
        .contexts
        .iter()
        .find(|c| c.name == context)?
        .context
        .as_ref()?
        .cluster
        .clone();
    let cluster = kc.clusters.iter().find(|c| c.name == cluster)?.cluster.as_ref()?;
    match (
        &cluster.certificate_authority_data,
        &cluster.certificate_authority,
    ) {
        (Some(data), _) => base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok()),
        (None, Some(file)) => std::fs::read_to_string(file).ok(),
        (None, None) => None,
    }
}

/// The bearer token of the kubeconfig's current user, if it has one: the agent derives its container-log
/// credential from it.
fn kubeconfig_token(path: &std::path::Path) -> Option<String> {
    let kc = kube::config::Kubeconfig::read_from(path).ok()?;
    let context = kc.current_context.as_deref()?;
    let user = kc
        .contexts
        .iter()
        .find(|c| c.name == context)?
        .context
        .as_ref()?
        .user
        .clone()?;
    let auth = kc
        .auth_infos
        .iter()
        .find(|a| a.name == user)?
        .auth_info
        .as_ref()?;
    match (&auth.token, &auth.token_file) {
        (Some(t), _) => {
            use secrecy::ExposeSecret;
            Some(t.expose_secret().to_string())
        }
        (None, Some(file)) => std::fs::read_to_string(file).ok().map(|t| t.trim().to_string()),
        (None, None) => None,
    }
}

/// `--overlay` means something only with the netns pod network: refused otherwise, not ignored. A
/// VXLAN tunnel needs a node address other nodes can send to: loopback is refused.
fn check_overlay(
    pod_network: PodNetwork,
    overlay: Option<svcnet_podnet::Overlay>,
    node_ip: std::net::IpAddr,
) -> Result<()> {
    if let Some(o) = overlay
        && pod_network != PodNetwork::Netns
    {
        bail!("--overlay {o} needs --pod-network netns (the host pod network has no routes between nodes)");
    }
    if overlay == Some(svcnet_podnet::Overlay::Vxlan) && node_ip.is_loopback() {
        bail!(
            "--overlay vxlan needs a node address other nodes can reach, not the loopback address {node_ip} \
             (give --node-ip; for svcnet up, --api-listen)"
        );
    }
    Ok(())
}

/// The pods' MTU: under `--overlay vxlan`, the tunnel's (50 below the link holding the node's address).
async fn pod_mtu(overlay: Option<svcnet_podnet::Overlay>, node_ip: std::net::IpAddr) -> Result<Option<u32>> {
    match (overlay, node_ip) {
        (Some(svcnet_podnet::Overlay::Vxlan), std::net::IpAddr::V4(ip)) => Ok(Some(
            svcnet_podnet::vxlan::pod_mtu(ip)
                .await
                .context("finding the MTU for pods under --overlay vxlan")?,
        )),
        _ => Ok(None),
    }
}

/// With the netns pod network, the pod network across nodes ([`svcnet_podnet`]): routes to the other
/// nodes' pod blocks and the masquerade of pod traffic leaving the cluster's pod range.
fn spawn_pod_network(
    supervisor: &mut Supervisor,
    client: &kube::Client,
    pod_network: PodNetwork,
    overlay: Option<svcnet_podnet::Overlay>,
    node_name: &str,
    cluster_cidrs: &[IpNet],
) {
    if pod_network != PodNetwork::Netns {
        return;
    }
    if cluster_cidrs.is_empty() {
        tracing::warn!("no --cluster-cidr: pod traffic leaving the node is not masqueraded");
    }
    let cfg = svcnet_podnet::PodNetConfig {
        node_name: node_name.to_string(),
        cluster_cidrs: cluster_cidrs.to_vec(),
        overlay: overlay.unwrap_or_default(),
        resync: std::time::Duration::from_secs(10),
    };
    let client = client.clone();
    supervisor.spawn("pod-network", async move {
        svcnet_podnet::run(client, cfg).await?;
        Ok(())
    });
}

async fn agent(args: AgentArgs) -> Result<()> {
    check_overlay(args.pod_network, args.overlay, args.node_ip)?;
    args.lb.check()?;
    node_args::check_lease_duration(args.node_lease_duration_seconds)?;
    private_dir(&args.data_dir)?;
    let node_name = args.node_name.clone().unwrap_or_else(hostname);
    // With a token the node gets its own certificate and kubeconfig, and keeps them fresh.
    let (kubeconfig, joined) = match &args.kubeconfig {
        Some(k) => (k.clone(), false),
        None => (
            join::node_kubeconfig(&args.data_dir, &node_name, &args.join).await?,
            true,
        ),
    };
    let mut registry = prometheus_client::registry::Registry::default();
    // Straight to the server or through the balancer, re-reading the node's certificate when rotation
    // renews it.
    let (client, balancer) = api_servers::connect(
        Some(&kubeconfig),
        &args.api,
        AGENT_API_LB_LISTEN,
        Some(&mut registry),
    )
    .await?;
    let mut supervisor = Supervisor::new();
    if let Some(b) = balancer {
        // kubectl on this node gets the same failover as the agent: one address, every server. A
        // joined node's own kubeconfig is DIR/kubeconfig itself; it keeps naming the server the node
        // joined (a restart, or one without --api-servers, reads it), and the balancer's goes beside it.
        let from = kubeconfig.clone();
        let kubeconfig = api_servers::balancer_kubeconfig_path(&args.data_dir, &from);
        api_servers::write_kubeconfig_via(&from, &b.url(), &kubeconfig)?;
        info!(listen = %b.addr, kubeconfig = %kubeconfig.display(), "API servers reached through the local balancer");
        b.supervise(&supervisor);
    }
    if joined {
        let (dir, node) = (args.data_dir.clone(), node_name.clone());
        // Asked for through the agent's own client: with --api-servers, whichever server is up.
        supervisor.spawn(
            "certificate-rotation",
            join::rotate(join::NodeFiles::joined(&dir), node, client.clone()),
        );
    }
    let dataplane = proxy_process::start_node_dataplane(
        &args.dataplane,
        client.clone(),
        dataplane_args::NodeNet {
            name: &node_name,
            ip: args.node_ip,
            service_cidrs: &args.service_cidr,
            pod_cidrs: &args.cluster_cidr,
            pods_in_netns: args.pod_network == PodNetwork::Netns,
        },
        &mut registry,
        proxy_process::Detached {
            kubeconfig: &kubeconfig,
            api_servers: &args.api.api_servers,
            state_dir: args.data_dir.join("proxy"),
            log_format: &args.log_format,
        },
        &supervisor,
    )
    .await?;
    let dns = args.dns.spawn(
        client.clone(),
        &args.data_dir,
        svcnet_dns::Metrics::new(&mut registry),
        node_name.clone(),
        args.pod_network == PodNetwork::Netns,
    );
    if let Some(task) = dns {
        supervisor.watch_spawned("dns", task);
    }
    args.lb.spawn(
        &supervisor,
        &client,
        &node_name,
        args.node_ip,
        true,
        &mut registry,
    )?;
    let failed = status::Failed::default();
    status::MetricsServer {
        registry: std::sync::Arc::new(registry),
        proxy_mode: args.dataplane.proxy_mode.name(),
        failed: failed.clone(),
        proxy_dir: dataplane.proxy_dir(),
    }
    .spawn(args.metrics_listen)
    .await;
    spawn_pod_network(
        &mut supervisor,
        &client,
        args.pod_network,
        args.overlay,
        &node_name,
        &args.cluster_cidr,
    );
    let mut cfg = agent_config(
        node_name,
        args.node_ip,
        args.data_dir.canonicalize()?,
        args.listen,
        std::time::Duration::from_secs(args.node_lease_duration_seconds),
        args.pod_network,
        kubeconfig_token(&kubeconfig),
    );
    cfg.labels.extend(args.node_labels);
    cfg.cluster_ca = kubeconfig_ca(&kubeconfig);
    cfg.pod_mtu = pod_mtu(args.overlay, args.node_ip).await?;
    let (agent_stop, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let (agent_done_tx, agent_done) = tokio::sync::oneshot::channel::<()>();
    let stop_pods = args.stop_pods_on_exit;
    supervisor.spawn("node-agent", async move {
        let stop = async {
            let _ = agent_stopped.await;
        };
        let result = svcnet_agent::agent::run_until(client, cfg, stop, stop_pods).await;
        let _ = agent_done_tx.send(());
        Ok(result?)
    });
    let outcome = tokio::select! {
        stopped = supervisor.failed() => {
            // Red health first, so a probe sees why before the process goes.
            failed.set(stopped.name, &stopped.reason());
            tokio::time::sleep(FAILED_HEALTH_GRACE).await;
            Err(anyhow!("{} stopped: {}", stopped.name, stopped.reason()))
        }
        _ = shutdown_signal() => Ok(()),
    };
    if stop_pods {
        info!("agent shutting down; stopping this node's pods");
    } else {
        info!("agent shutting down; pods keep running and the next agent adopts them");
    }
    let _ = agent_stop.send(());
    let _ = tokio::time::timeout(std::time::Duration::from_secs(15), agent_done).await;
    if stop_pods {
        dataplane.stop().await;
    }
    outcome
}

/// Where `svcnet agent --api-servers` listens for its own components and kubectl by default (k3s'
/// agent load balancer's port).
const AGENT_API_LB_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 6444);

/// How long `svcnet up` and `svcnet agent` keep answering their failed health checks after a supervised task stopped,
/// before it shuts down: long enough for a probe to read why (kube-apiserver's
/// `--shutdown-delay-duration` serves the same purpose on SIGTERM).
const FAILED_HEALTH_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn init_logging(format: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only help a human at a terminal; in a file or a journal they are noise.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        // A log that cannot be written (its file on a full disk) must not take the process down:
        // tracing-subscriber reports such errors with `eprintln!`, which panics when stderr fails too.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Descriptors kept aside for everything but the userspace proxy's listeners: API connections, proxied
/// connections, the store, watches, pods' pipes. Half the limit when the limit is small.
const FD_RESERVE: u64 = 1024;

/// How many descriptors the userspace proxy's listeners may hold under the current soft open-file limit
/// (see `svcnet_proxy::ProxyConfig::listener_fds`); `None` when the limit cannot be read.
pub(crate) fn listener_fd_budget() -> Option<usize> {
    let (soft, _) = svcnet_accept::nofile_limit().ok()?;
    usize::try_from(soft.saturating_sub(FD_RESERVE.min(soft / 2))).ok()
}

/// Raises the soft open-file limit to the hard one and says what it allows: every TCP frontend of the
/// userspace proxy holds two descriptors (the listener and the duplicate that closes it at once), every
/// UDP frontend one. Nothing here is fatal: a process that cannot raise its limit runs with what it has.
fn raise_fd_limit(mode: Option<&'static str>) {
    match svcnet_accept::raise_nofile_limit() {
        Ok((soft, hard)) => {
            if mode == Some("userspace") {
                let ports = listener_fd_budget().unwrap_or(0) / 2;
                info!(
                    soft,
                    hard,
                    tcp_service_ports = ports,
                    "open-file limit raised; the userspace proxy can listen for about {ports} TCP service \
                     ports (two descriptors each; the rest is kept for connections); Services beyond that \
                     get a Warning Event and are retried until descriptors free up"
                );
            } else {
                info!(soft, hard, "open-file limit raised");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Creates `dir` (and its parents) and makes it owner-only (0700): it holds the store, the cluster's keys
/// and token and the pods' logs, none of which other local users may read. An existing directory is
/// tightened too, so an old 0755 data dir gets fixed on the next start.
fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("making {} owner-only", dir.display()))
}

async fn up(args: UpArgs) -> Result<()> {
    args.lifecycle.check()?;
    args.leader.check()?;
    private_dir(&args.data_dir)?;
    let data_dir = args.data_dir.canonicalize()?;
    let node_ports: PortRange = args
        .service_node_port_range
        .parse()
        .map_err(|e| anyhow::anyhow!("--service-node-port-range: {e}"))?;
    for cidr in &args.service_cidr {
        svcnet_alloc::validate_service_cidr_flag(cidr, "--service-cidr").map_err(anyhow::Error::msg)?;
    }
    let hooks = KindHooks::with_services(ServiceNetConfig {
        service_cidrs: args.service_cidr.clone(),
        node_port_range: node_ports,
    })
    .map_err(|e| anyhow::anyhow!("--service-cidr: {e}"))?;
    check_overlay(args.pod_network, args.overlay, args.api_listen.ip())?;
    args.lb.check()?;
    if args.pod_network == PodNetwork::Netns && args.cluster_cidr.network().is_loopback() {
        bail!(
            "--pod-network netns needs a real --cluster-cidr (e.g. 10.244.0.0/16), not the loopback range {}",
            args.cluster_cidr
        );
    }
    let Some(first) = args.service_cidr.first() else {
        bail!("--service-cidr needs at least one range");
    };
    let kubernetes_ip = svcnet_alloc::nth_address(first, 1).context("service CIDR too small")?;
    let lb_pool = (!args.lb_pool.is_empty())
        .then(|| svcnet_alloc::LbPool::parse(&args.lb_pool))
        .transpose()
        .map_err(|e| anyhow::anyhow!("--lb-pool: {e}"))?;

    let creds = pki::load_or_create(&data_dir, &[args.api_listen.ip(), kubernetes_ip])?;
    let tls = pki::server_config(&creds)?;
    let token_file = match &args.token_auth_file {
        Some(p) => svcnet_apiserver::authn::read_token_file(p).context("--token-auth-file")?,
        None => Default::default(),
    };
    let sa_signer = svcnet_apiserver::satoken::Signer::load_or_create(&data_dir)?;
    let auditor = args.audit.auditor()?;
    let listener = TcpListener::bind(args.api_listen).await.map_err(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (another cluster on this machine? It needs its own --api-listen, --service-cidr and \
             --nodeport-address: see the README)"
        } else {
            ""
        };
        anyhow::Error::new(e).context(format!("listening on {}{hint}", args.api_listen))
    })?;
    let addr = listener.local_addr()?;
    // While the store cannot be opened (etcd not up yet) the address answers probes: live, not ready.
    let store = {
        let opening = args.store.open(&data_dir);
        tokio::pin!(opening);
        let waiting = format!("waiting for the store to open ({})", args.store.describe());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let answer = svcnet_apiserver::starting::serve_while(&listener, tls.clone(), waiting, async {
            let _ = done_rx.await;
        });
        tokio::pin!(answer);
        let store = tokio::select! {
            s = &mut opening => s,
            _ = &mut answer => unreachable!("answers until told to stop"),
        };
        let _ = done_tx.send(());
        answer.await;
        store?
    };

    let server = ApiServer::new(
        store.clone(),
        Config {
            listen: addr,
            token: creds.token.clone(),
            token_file,
            sa_signer: Some(Arc::new(sa_signer)),
            client_verifier: Some(pki::client_verifier(&creds)?),
            hooks: hooks.clone(),
        },
    )
    .await?;
    if let Some(path) = &args.kubelet_egress_uds {
        server.set_kubelet_egress(path.clone());
    }
    if let Some(auditor) = auditor {
        server.set_audit(auditor);
    }
    // Every address and port a stored Service holds is made allocated in the store before anything
    // new is allocated (data written before IPAddresses existed, or migrated).
    server
        .adopt_allocations()
        .await
        .map_err(|e| anyhow::anyhow!("adopting stored allocations: {e}"))?;
    server
        .bootstrap(addr)
        .await
        .map_err(|e| anyhow::anyhow!("bootstrap: {e}"))?;
    // Several API servers may share an etcd: the `kubernetes` endpoints list every live one.
    let endpoints = args
        .store
        .etcd()
        .then(|| leader::identity(&data_dir).map(|id| server.spawn_endpoint_reconciler(id, addr)))
        .transpose()?;

    let kubeconfig = data_dir.join("kubeconfig");
    pki::write_kubeconfig(&kubeconfig, &format!("https://{addr}"), &creds)?;
    server.set_ready();
    // Like every controller, the ones below are API clients: they know the server only by the kubeconfig.
    let client = kube_client(&kubeconfig).await?;
    let mut supervisor = Supervisor::new();
    // Served from here on: the controllers' identities below are made through the API.
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let serve = server.clone().serve(listener, tls, async {
        let _ = serving_stopped.await;
    });
    supervisor.spawn("apiserver", async move {
        serve.await;
        Ok(())
    });
    // What joining nodes discover the cluster by (kubeadm init's cluster-info), once the server serves.
    let (info_client, info_ca) = (client.clone(), creds.ca_pem.clone());
    supervisor.spawn("cluster-info", async move {
        let server = format!("https://{addr}");
        while let Err(e) = join::publish_cluster_info(&info_client, &server, &info_ca).await {
            tracing::debug!(error = %e, "publishing kube-public/cluster-info; retrying");
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        std::future::pending().await
    });
    // The store heals a failed disk by itself (see `svcnet_store::redb`); only a store that cannot go on
    // without a reload stops the process, so that whoever runs it restarts it on a fresh snapshot.
    if !args.store.etcd() {
        let (dir, store) = (data_dir.clone(), store.clone());
        supervisor.spawn(
            "backup-socket",
            async move { backup_cmd::serve(&dir, store).await },
        );
    }
    supervisor.spawn("storage", async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if let svcnet_store::Health::Failed(reason) = store.health() {
                bail!("{reason}");
            }
        }
    });
    // The controllers run as themselves, not as the admin (see `controller_identity`).
    let identities = controller_identity::start(&data_dir, &format!("https://{addr}"), &creds).await?;
    supervisor.spawn("controller-tokens", identities.renew);
    let (manager, clients) = (identities.manager, identities.clients);
    // On a shared store each controller runs only where its Lease is held (see `leader`); the
    // controller manager campaigns for all of them.
    let elector = leader::Elector::new(
        args.store.etcd() && args.leader.leader_elect,
        &manager,
        || leader::identity(&data_dir),
        &args.leader,
    )?;
    // The API server's own controllers (kube-controller-manager's namespace and garbage collector
    // controllers), gated like the others.
    for (name, lease, start) in [
        (
            "namespace-controller",
            "svcnet-namespace-controller",
            ApiServer::spawn_namespace_finalizer as fn(&Arc<ApiServer>),
        ),
        (
            "garbage-collector",
            "svcnet-garbage-collector",
            ApiServer::spawn_garbage_collector,
        ),
    ] {
        let (gate, server) = (elector.gate(&supervisor, lease), server.clone());
        // The loops run as their own tasks; this one only holds their place until they start.
        supervisor.spawn(name, async move {
            leader::wait(gate).await;
            start(&server);
            std::future::pending().await
        });
    }
    // kube-controller-manager's csrapproving, csrsigning and bootstrapsigner controllers.
    let ca_key = data_dir.join("pki").join("ca.key");
    let signer = svcnet_controllers::certificates::SignerConfig {
        ca_cert_pem: creds.ca_pem.clone(),
        ca_key_pem: std::fs::read_to_string(&ca_key)
            .with_context(|| format!("reading {}", ca_key.display()))?,
        max_duration: args.cluster_signing_duration,
    };
    let certificates = svcnet_controllers::certificates::run_certificate_controllers(
        clients.get(svcnet_controllers::identity::CERTIFICATE),
        signer,
    );
    elector.spawn_elected(
        &supervisor,
        "certificate-controllers",
        "svcnet-certificate-controllers",
        certificates,
    );
    let bootstrap_signer = svcnet_controllers::bootstrap_signer::run_bootstrap_signer(
        clients.get(svcnet_controllers::identity::BOOTSTRAP_SIGNER),
    );
    elector.spawn_elected(
        &supervisor,
        "bootstrap-signer",
        "svcnet-bootstrap-signer",
        bootstrap_signer,
    );
    // The allocation repair and ServiceCIDR loops (kube-apiserver's repair controllers,
    // kube-controller-manager's servicecidrs controller), gated like the others.
    let repair = svcnet_apiserver::repair::RepairConfig {
        period: args.allocation_repair_period,
        leak_grace: args.allocation_leak_grace_period,
    };
    let (gate, repair_server) = (
        elector.gate(&supervisor, "svcnet-allocation-repair"),
        server.clone(),
    );
    supervisor.spawn("allocation-repair", async move {
        leader::wait(gate).await;
        repair_server.spawn_allocation_repair(repair);
        std::future::pending().await
    });
    let informers = svcnet_controllers::SharedInformers::start(&manager);
    let nodes = svcnet_controllers::nodes::run_node_controllers(
        clients.clone(),
        informers.clone(),
        svcnet_controllers::nodes::NodeControllersConfig {
            cluster_cidr: args.cluster_cidr,
            node_mask: args.node_cidr_mask_size,
            grace: args.lifecycle.node_monitor_grace_period,
            monitor_period: args.lifecycle.node_monitor_period,
            eviction: args.lifecycle.eviction(),
        },
    );
    elector.spawn_elected(&supervisor, "node-controllers", "svcnet-node-controller", nodes);
    let accounts = svcnet_controllers::serviceaccounts::run_service_account_controller(
        clients.get(svcnet_controllers::identity::SERVICE_ACCOUNT),
        informers.clone(),
    );
    elector.spawn_elected(
        &supervisor,
        "serviceaccount-controller",
        "svcnet-serviceaccount-controller",
        accounts,
    );
    let aggregation = svcnet_controllers::clusterrole_aggregation::run_clusterrole_aggregation_controller(
        clients.get(svcnet_controllers::identity::CLUSTERROLE_AGGREGATION),
        manager.clone(),
    );
    elector.spawn_elected(
        &supervisor,
        "clusterrole-aggregation-controller",
        "svcnet-clusterrole-aggregation-controller",
        aggregation,
    );
    let root_ca = svcnet_controllers::root_ca::run_root_ca_cert_publisher(
        clients.get(svcnet_controllers::identity::ROOT_CA_CERT_PUBLISHER),
        informers.clone(),
        creds.ca_pem.clone(),
    );
    elector.spawn_elected(
        &supervisor,
        "root-ca-cert-publisher",
        "svcnet-root-ca-cert-publisher",
        root_ca,
    );
    let workloads = svcnet_controllers::run_workload_controllers(clients.clone(), informers.clone());
    elector.spawn_elected(
        &supervisor,
        "workload-controllers",
        "svcnet-workload-controller",
        workloads,
    );
    let mut registry = prometheus_client::registry::Registry::default();
    let es_metrics = svcnet_controllers::endpointslice::EndpointSliceMetrics::new(&mut registry);
    let node_name = args.node_name.clone().unwrap_or_else(hostname);
    // The node's parts run as the node, with its own certificate, as a joined node's do (see
    // `node_identity`); renewed while `up` runs as a joined node's is. With no node part at all
    // (`--control-plane-only`, or `--no-agent --proxy-mode none`) no node credential is minted.
    let no_agent = args.no_agent || args.control_plane_only;
    let node_parts = !no_agent || args.dataplane.proxy_mode != dataplane_args::ProxyMode::None;
    let node = if args.control_plane_only || !node_parts {
        None
    } else {
        let files = node_identity::ensure(
            &data_dir,
            &node_name,
            &format!("https://{addr}"),
            &creds,
            args.cluster_signing_duration,
        )?;
        let node_client = kube_client(&files.kubeconfig).await?;
        supervisor.spawn(
            "certificate-rotation",
            join::rotate(files.clone(), node_name.clone(), node_client.clone()),
        );
        Some((files.kubeconfig, node_client))
    };
    // The node's data plane is an API client of its own, like kube-proxy beside the kubelet: it runs
    // with or without the local agent (`--proxy-mode none` turns it off).
    let dataplane = match &node {
        // No node here: no data plane either.
        None => proxy_process::NodeDataplane::InProcess { _routes: None },
        Some((node_kubeconfig, node_client)) => {
            proxy_process::start_node_dataplane(
                &args.dataplane,
                node_client.clone(),
                dataplane_args::NodeNet {
                    name: &node_name,
                    ip: addr.ip(),
                    service_cidrs: &args.service_cidr,
                    pod_cidrs: std::slice::from_ref(&args.cluster_cidr),
                    pods_in_netns: args.pod_network == PodNetwork::Netns,
                },
                &mut registry,
                proxy_process::Detached {
                    kubeconfig: node_kubeconfig,
                    api_servers: &[],
                    state_dir: data_dir.join("proxy"),
                    log_format: &args.log_format,
                },
                &supervisor,
            )
            .await?
        }
    };
    // The cluster DNS server runs where a node agent runs; its metrics join the shared registry.
    let agent_node = node.as_ref().filter(|_| !no_agent).map(|(_, c)| c.clone());
    if let Some(node_client) = &agent_node {
        let dns = args.dns.spawn(
            node_client.clone(),
            &data_dir,
            svcnet_dns::Metrics::new(&mut registry),
            node_name.clone(),
            args.pod_network == PodNetwork::Netns,
        );
        if let Some(task) = dns {
            supervisor.watch_spawned("dns", task);
        }
        // The node announces LoadBalancer IPs as `svcnet agent` does.
        args.lb.spawn(
            &supervisor,
            node_client,
            &node_name,
            addr.ip(),
            args.pod_network == PodNetwork::Netns,
            &mut registry,
        )?;
    }
    let registry = Arc::new(registry);
    let failed = status::Failed::default();
    status::MetricsServer {
        registry: registry.clone(),
        proxy_mode: args.dataplane.proxy_mode.name(),
        failed: failed.clone(),
        proxy_dir: dataplane.proxy_dir(),
    }
    .spawn(args.metrics_listen)
    .await;
    let shared = registry.clone();
    server.metrics.add_extra(Box::new(move || {
        svcnet_controllers::endpointslice::metrics_text(&shared)
    }));
    let slices = svcnet_controllers::endpointslice::run_endpointslice_controllers(
        clients.clone(),
        informers.clone(),
        svcnet_controllers::endpointslice::EndpointSliceConfig {
            max_endpoints_per_slice: args.max_endpoints_per_slice.max(1),
            metrics: es_metrics,
            ..Default::default()
        },
    );
    elector.spawn_elected(
        &supervisor,
        "endpointslice-controllers",
        "svcnet-endpointslice-controller",
        slices,
    );
    // With --stop-pods-on-exit the local node goes away with `up`: on shutdown its agent stops the pods
    // before the process exits. Without, the pods keep running for the next `up` to adopt.
    let (agent_stop, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    // Resolves once the agent has stopped its pods (or has ended otherwise).
    let (agent_done_tx, agent_done) = tokio::sync::oneshot::channel::<()>();
    let agent_runs = agent_node.is_some();
    if let Some(node_client) = agent_node {
        spawn_pod_network(
            &mut supervisor,
            &node_client,
            args.pod_network,
            args.overlay,
            &node_name,
            std::slice::from_ref(&args.cluster_cidr),
        );
        let mut cfg = agent_config(
            node_name.clone(),
            addr.ip(),
            data_dir.join("agent"),
            SocketAddr::new(addr.ip(), 0),
            (args.lifecycle.node_monitor_grace_period).max(std::time::Duration::from_secs(4)),
            args.pod_network,
            Some(creds.token.clone()),
        );
        cfg.cluster_ca = Some(creds.ca_pem.clone());
        cfg.pod_mtu = pod_mtu(args.overlay, addr.ip()).await?;
        let stop_pods = args.stop_pods_on_exit;
        supervisor.spawn("node-agent", async move {
            let stop = async {
                let _ = agent_stopped.await;
            };
            let result = svcnet_agent::agent::run_until(node_client, cfg, stop, stop_pods).await;
            let _ = agent_done_tx.send(());
            Ok(result?)
        });
    }
    if let Some(pool) = lb_pool {
        let ipam = svcnet_controllers::LbIpamConfig {
            pool,
            class: args.lb_class.clone(),
        };
        let (client, services) = (
            clients.get(svcnet_controllers::identity::LB_IPAM),
            informers.services.clone(),
        );
        let lb_ipam = svcnet_controllers::run_lb_ipam(client, services, ipam);
        elector.spawn_elected(&supervisor, "lb-ipam", "svcnet-lb-ipam", lb_ipam);
    }
    info!(api = %addr, data_dir = %data_dir.display(), "svcnet is up");
    println!(
        "svcnet is up: export KUBECONFIG={} (then: kubectl get services -A)",
        kubeconfig.display()
    );
    let outcome = tokio::select! {
        _ = shutdown_signal() => Ok(()),
        stopped = supervisor.failed() => {
            // Probes see the task's failure (e.g. kubectl get --raw /readyz) until the shutdown below.
            server.fail_check(stopped.name, &stopped.reason());
            failed.set(stopped.name, &stopped.reason());
            tokio::time::sleep(FAILED_HEALTH_GRACE).await;
            Err(anyhow!("{} stopped: {}", stopped.name, stopped.reason()))
        }
    };
    // The same shutdown as on SIGTERM.
    if args.stop_pods_on_exit {
        info!("stopping the local node's pods");
    } else if agent_runs {
        info!("the local node's pods keep running; the next `svcnet up` adopts them");
    }
    let _ = agent_stop.send(());
    if agent_runs {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(15), agent_done).await;
    }
    if args.stop_pods_on_exit {
        dataplane.stop().await;
    }
    if let Some(e) = endpoints {
        e.withdraw().await;
    }
    let _ = stop_serving.send(());
    info!("shutting down");
    outcome
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Up(args) => {
            init_logging(&args.log_format);
            raise_fd_limit(args.dataplane.proxy_mode.name());
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(up(*args))
        }
        Command::Agent(args) => {
            init_logging(&args.log_format);
            raise_fd_limit(args.dataplane.proxy_mode.name());
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(agent(*args))
        }
        Command::Proxy(args) => {
            init_logging(&args.log_format);
            proxy_cmd::run(args)
        }
        Command::Dns(args) => {
            init_logging(&args.log_format);
            raise_fd_limit(None);
            let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            rt.block_on(dns_cmd::run(args))
        }
        Command::Backup(args) => {
            init_logging("text");
            tokio::runtime::Runtime::new()?.block_on(backup_cmd::run_backup(args))
        }
        Command::Restore(args) => {
            init_logging("text");
            tokio::runtime::Runtime::new()?.block_on(backup_cmd::run_restore(args))
        }
        Command::Migrate(args) => {
            init_logging("text");
            tokio::runtime::Runtime::new()?.block_on(backup_cmd::run_migrate(args))
        }
        Command::NodeProxy(args) => {
            init_logging(&args.log_format);
            node_proxy::run(args, std::env::args().skip(1).collect())
        }
        Command::Token(args) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(token_cmd::run(args))
        }
        Command::Lab(args) => {
            init_logging("text");
            let code = lab_cmd::run(args)?;
            if code != 0 {
                std::process::exit(code);
            }
            Ok(())
        }
    }
}
