//! `svcnet proxy`: the data plane on its own. With `--kubeconfig` (or in a pod) it serves a cluster's
//! Services as kube-proxy does ([`crate::proxy_cluster`]); with `--manifests FILE` the userspace proxy
//! serves a YAML file of Services and EndpointSlices instead of an API server (an L4 balancer in one
//! command; the proxy benchmark).
//!
//! The file goes through the same service model as the node agent's watches (`svcnet_dataplane::Model`),
//! so readiness, traffic policies and named target ports behave exactly as in a cluster. SIGHUP re-reads
//! the file and applies only what changed; SIGINT/SIGTERM stop.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Parser;
use prometheus_client::registry::Registry;
use svcnet_dataplane::manifests::Manifests;
use svcnet_dataplane::{Backend, Balance, Model, ModelConfig};
use svcnet_proxy::{ProxyConfig, UserspaceBackend};
use tracing::{info, warn};

/// `svcnet proxy`: serve a cluster's Services (kube-proxy's job), or those of a manifests file.
#[derive(Parser)]
pub struct ProxyArgs {
    /// YAML file of Services and EndpointSlices to serve with the userspace proxy, instead of an API
    /// server (documents separated by `---`; `List`s allowed).
    #[arg(long, conflicts_with_all = ["kubeconfig", "config", "cleanup"])]
    manifests: Option<PathBuf>,
    #[command(flatten)]
    kube: crate::proxy_cluster::KubeProxyFlags,
    /// Worker threads of the proxy.
    #[arg(long, default_value_t = 2)]
    proxy_workers: usize,
    /// Balancing algorithm: least-conn, round-robin, random or maglev (a Service's `svcnet.io/balance`
    /// annotation overrides it).
    #[arg(long, default_value = "least-conn")]
    proxy_balance: Balance,
    /// Address the NodePorts listen on (repeatable). Clients from these addresses count as this node.
    #[arg(long = "node-address", default_value = "127.0.0.1")]
    node_address: Vec<IpAddr>,
    /// This node's name (endpoints with this nodeName are local; default: the hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// Copy bulk TCP transfers through userspace instead of moving them with splice(2).
    #[arg(long)]
    no_splice: bool,
    /// Serve Prometheus metrics on http://ADDR/metrics (kube-proxy's `--metrics-bind-address`; against an
    /// API server the default is kube-proxy's 127.0.0.1:10249).
    #[arg(long, alias = "metrics-bind-address")]
    metrics_listen: Option<SocketAddr>,
    /// Log format: `text` or `json`.
    #[arg(long, default_value = "text")]
    pub log_format: String,
}

fn load(path: &Path) -> Result<Manifests> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Manifests::parse(&text).with_context(|| format!("{}", path.display()))
}

/// Runs the proxy until SIGINT/SIGTERM: against the API server, or from the manifests file.
pub fn run(args: ProxyArgs) -> Result<()> {
    // From a manifests file it is the userspace proxy; against an API server the mode is in its
    // configuration, read later.
    super::raise_fd_limit(args.manifests.is_some().then_some("userspace"));
    let Some(path) = args.manifests.clone() else {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
        let common = crate::proxy_cluster::Common {
            workers: args.proxy_workers,
            balance: args.proxy_balance,
        };
        return rt.block_on(crate::proxy_cluster::run(args.kube, args.metrics_listen, common));
    };
    let manifests = load(&path)?;
    let mut registry = Registry::default();
    let config = ProxyConfig {
        workers: args.proxy_workers,
        balance: args.proxy_balance,
        node_addresses: args.node_address.clone(),
        splice: !args.no_splice,
        listener_fds: super::listener_fd_budget(),
        ..Default::default()
    };
    let mut backend = UserspaceBackend::new(config, &mut registry)?;
    let registry = Arc::new(registry);
    let mut model = Model::new(ModelConfig {
        node_name: args.node_name.clone().unwrap_or_else(super::hostname),
        ..Default::default()
    });
    manifests.load_into(&mut model);
    model.take_changes();
    let ports: Vec<_> = model.ports().cloned().collect();
    if let Err(e) = backend.sync_all(&ports) {
        warn!(error = %e, "some listeners are not open");
    }
    // The control side needs little: signals and the metrics endpoint, on one thread. Connections are
    // served by the backend's own runtime.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        // SIGHUP's default action ends the process, so the handler must be in place before we announce
        // that we serve: a caller may reload the moment it reads that line.
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        println!(
            "svcnet proxy: serving {} service ports on {} listeners",
            backend.port_count(),
            backend.listener_count()
        );
        if let Some(addr) = args.metrics_listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("--metrics-listen {addr}"))?;
            info!(addr = %listener.local_addr()?, "serving metrics");
            let server = crate::status::MetricsServer {
                registry: registry.clone(),
                proxy_mode: Some("userspace"),
                failed: Default::default(),
                proxy_dir: None,
            };
            tokio::spawn(server.serve(listener));
        }
        let stop = super::shutdown_signal();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                _ = hup.recv() => match load(&path) {
                    Ok(m) => {
                        model.clear_inputs();
                        m.load_into(&mut model);
                        let changes = model.take_changes();
                        if let Err(e) = backend.apply(&changes.changes) {
                            warn!(error = %e, "reload: some listeners are not open");
                        }
                        info!(changes = changes.changes.len(), ports = backend.port_count(), "reloaded");
                    }
                    Err(e) => warn!(error = format!("{e:#}"), "reload failed; keeping the current services"),
                },
            }
        }
        info!("svcnet proxy stopping");
        anyhow::Ok(())
    })?;
    drop(backend);
    Ok(())
}
