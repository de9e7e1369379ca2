//! The node's status endpoints, where kube-proxy has them: the metrics server (`--metrics-listen`, port
//! 10249: `/metrics`, `/healthz` and `/livez` (red once a supervised task stopped, see [`Failed`]),
//! `/proxyMode`) and the health server (`--healthz-listen`, port 10256:
//! `/healthz`, `/livez`, see [`svcnet_proxier::health`]).
//!
//! Both are optional on a shared machine: if the address is taken (another cluster runs there) the node
//! runs without and says so, rather than failing to start.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::registry::Registry;
use svcnet_proxier::health::ProxyHealth;
use svcnet_proxier::http::{not_found, response};
use tokio::net::TcpListener;
use tracing::{info, warn};

/// The supervised task that stopped, once one has: the process is about to exit, and its health
/// endpoints say why until it does (as `svcnet up`'s API server does on `/readyz` and `/livez`).
#[derive(Clone, Default)]
pub(crate) struct Failed(Arc<std::sync::RwLock<Option<String>>>);

impl Failed {
    /// Records that `task` stopped because of `reason`.
    pub fn set(&self, task: &str, reason: &str) {
        if let Ok(mut f) = self.0.write() {
            *f = Some(format!("[-]{task} failed: {reason}"));
        }
    }

    /// The health check's answer: `ok`, or kube's failed-check listing.
    fn answer(&self) -> hyper::Response<Full<Bytes>> {
        match self.0.read().ok().and_then(|f| f.clone()) {
            None => response(200, "text/plain; charset=utf-8", "ok"),
            Some(check) => response(
                500,
                "text/plain; charset=utf-8",
                format!("{check}\nhealthz check failed\n"),
            ),
        }
    }
}

/// What the metrics server answers besides the metrics.
#[derive(Clone)]
pub(crate) struct MetricsServer {
    /// The metrics.
    pub registry: Arc<Registry>,
    /// `/proxyMode`'s answer (kube-proxy's mode name), if this process runs a data plane.
    pub proxy_mode: Option<&'static str>,
    /// What `/healthz` and `/livez` report.
    pub failed: Failed,
    /// The state directory of the node's userspace proxy process, whose metrics `/metrics` appends.
    pub proxy_dir: Option<std::path::PathBuf>,
}

impl MetricsServer {
    fn answer(&self, path: &str) -> hyper::Response<Full<Bytes>> {
        match (path, self.proxy_mode) {
            ("/metrics", _) => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => {
                        self.append_proxy_metrics(&mut body);
                        response(
                            200,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            body,
                        )
                    }
                    Err(e) => response(
                        500,
                        "text/plain; charset=utf-8",
                        format!("encoding metrics: {e}\n"),
                    ),
                }
            }
            ("/healthz" | "/livez", _) => self.failed.answer(),
            ("/proxyMode", Some(mode)) => response(200, "text/plain; charset=utf-8", mode),
            _ => not_found(),
        }
    }

    /// Appends the proxy process's metrics to this process's (one OpenMetrics text: one `# EOF`).
    fn append_proxy_metrics(&self, body: &mut String) {
        let Some(dir) = &self.proxy_dir else { return };
        // A local request with a short timeout; the handler runs on a multi-thread runtime.
        let Some(theirs) = tokio::task::block_in_place(|| crate::proxy_process::metrics_of(dir)) else {
            return;
        };
        if let Some(mine) = body.strip_suffix("# EOF\n") {
            let keep = mine.len();
            body.truncate(keep);
            body.push_str(&theirs);
        }
    }

    /// Serves on `listener` until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        svcnet_proxier::http::serve_paths(listener, move |path| self.answer(path)).await
    }

    /// Binds `addr` and serves there in a task; a taken address is logged, not fatal.
    pub async fn spawn(self, addr: SocketAddr) {
        if let Some(listener) = bind(addr, "metrics").await {
            tokio::spawn(self.serve(listener));
        }
    }
}

/// Binds the kube-proxy health server on `addr` and serves there in a task; a taken address is logged,
/// and tried again every second for two minutes: a userspace proxy process that takes over from another
/// ([`crate::node_proxy`]) gets the port once the old one has drained.
pub(crate) async fn spawn_health(addr: SocketAddr, health: ProxyHealth) {
    if let Some(listener) = bind(addr, "proxy health").await {
        tokio::spawn(svcnet_proxier::health::serve(listener, health));
        return;
    }
    tokio::spawn(async move {
        for _ in 0..120 {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if let Ok(l) = TcpListener::bind(addr).await {
                info!(%addr, "serving proxy health (the address is free now)");
                return svcnet_proxier::health::serve(l, health).await;
            }
        }
    });
}

async fn bind(addr: SocketAddr, what: &str) -> Option<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => {
            info!(addr = %l.local_addr().unwrap_or(addr), "serving {what}");
            Some(l)
        }
        Err(e) => {
            warn!(%addr, error = %e, "no {what} endpoint");
            None
        }
    }
}
