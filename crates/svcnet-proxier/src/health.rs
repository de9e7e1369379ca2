//! kube-proxy's health server (`--healthz-bind-address`, port 10256): `/healthz` tells a load balancer
//! whether to send traffic to this node, `/livez` whether the data plane keeps up at all.
//!
//! The data plane is unhealthy when a change it has been told about waits longer than a timeout to be
//! programmed; `/healthz` is also unhealthy while the Node is being deleted or carries the cluster
//! autoscaler's `ToBeDeletedByClusterAutoscaler` taint, so that load balancers drain it first. The answers
//! are kube-proxy's JSON bodies and status codes, and each is counted in `kubeproxy_proxy_healthz_total` /
//! `kubeproxy_proxy_livez_total` by code.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use k8s_openapi::api::core::v1::Node;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// The taint the cluster autoscaler puts on a node it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

/// How long a queued change may wait before the data plane counts as unhealthy: kube-proxy uses twice its
/// sync period, 2 × 30 s.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: String,
}

#[derive(Debug)]
struct State {
    last_updated: Option<SystemTime>,
    /// When the oldest change not yet programmed arrived.
    oldest_pending: Option<Instant>,
    node_eligible: bool,
}

/// The data plane's health, shared by its control loop (which reports) and the HTTP server (which asks).
#[derive(Clone, Debug)]
pub struct ProxyHealth {
    state: Arc<Mutex<State>>,
    timeout: Duration,
    healthz_total: Family<CodeLabel, Counter>,
    livez_total: Family<CodeLabel, Counter>,
}

/// One answer of the health server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthAnswer {
    /// 200 or 503.
    pub status: u16,
    /// kube-proxy's JSON body.
    pub body: String,
}

impl ProxyHealth {
    /// A healthy server (a starting proxy is healthy until a change waits too long); its counters go into
    /// `registry`.
    pub fn new(timeout: Duration, registry: &mut Registry) -> ProxyHealth {
        let h = ProxyHealth {
            state: Arc::new(Mutex::new(State {
                last_updated: None,
                oldest_pending: None,
                node_eligible: true,
            })),
            timeout,
            healthz_total: Family::default(),
            livez_total: Family::default(),
        };
        registry.register(
            "kubeproxy_proxy_healthz",
            "Cumulative proxy healthz HTTP status",
            h.healthz_total.clone(),
        );
        registry.register(
            "kubeproxy_proxy_livez",
            "Cumulative proxy livez HTTP status",
            h.livez_total.clone(),
        );
        h
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it: every write is one field.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A change arrived that the backend has not programmed yet.
    pub fn queued(&self) {
        let mut s = self.lock();
        s.oldest_pending.get_or_insert_with(Instant::now);
    }

    /// The backend programmed everything queued so far.
    pub fn updated(&self) {
        let mut s = self.lock();
        s.oldest_pending = None;
        s.last_updated = Some(SystemTime::now());
    }

    /// Follows this node's object: a node being deleted, or tainted for deletion, is not eligible for
    /// load-balancer traffic.
    pub fn sync_node(&self, node: &Node) {
        let eligible = node.metadata.deletion_timestamp.is_none()
            && !node
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
        self.lock().node_eligible = eligible;
    }

    /// This node's object was deleted.
    pub fn node_deleted(&self) {
        self.lock().node_eligible = false;
    }

    /// Whether the data plane keeps up, and when it last programmed a change.
    fn healthy(&self) -> (bool, Option<SystemTime>, bool) {
        let s = self.lock();
        let late = s.oldest_pending.is_some_and(|t| t.elapsed() >= self.timeout);
        (!late, s.last_updated, s.node_eligible)
    }

    /// `GET /healthz`.
    pub fn healthz(&self) -> HealthAnswer {
        let (healthy, last, eligible) = self.healthy();
        answer(&self.healthz_total, healthy && eligible, last, Some(eligible))
    }

    /// `GET /livez`: as `/healthz`, without the node's eligibility.
    pub fn livez(&self) -> HealthAnswer {
        let (healthy, last, _) = self.healthy();
        answer(&self.livez_total, healthy, last, None)
    }
}

/// kube-proxy's answer, counted by code: `{"lastUpdated": …,"currentTime": …}`, with `"nodeEligible"` for
/// `/healthz`.
fn answer(
    counter: &Family<CodeLabel, Counter>,
    healthy: bool,
    last: Option<SystemTime>,
    eligible: Option<bool>,
) -> HealthAnswer {
    let (status, last) = answer_times(healthy, last);
    counter
        .get_or_create(&CodeLabel {
            code: status.to_string(),
        })
        .inc();
    let mut body = format!(
        "{{\"lastUpdated\": {},\"currentTime\": {}",
        json_time(last),
        json_time(Some(SystemTime::now()))
    );
    if let Some(e) = eligible {
        body.push_str(&format!(", \"nodeEligible\": {e}"));
    }
    body.push('}');
    HealthAnswer { status, body }
}

/// A healthy answer reports "now" as its last update, as kube-proxy does for compatibility with releases
/// that refreshed the time on every idle sync.
fn answer_times(healthy: bool, last: Option<SystemTime>) -> (u16, Option<SystemTime>) {
    if healthy {
        (200, Some(SystemTime::now()))
    } else {
        (503, last)
    }
}

fn json_time(t: Option<SystemTime>) -> String {
    let t = t
        .and_then(|t| jiff::Timestamp::try_from(t).ok())
        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    serde_json::Value::String(t.to_string()).to_string()
}

/// Serves `/healthz` and `/livez` on `listener` until the task is dropped; any other path is a 404.
pub async fn serve(listener: TcpListener, health: ProxyHealth) {
    crate::http::serve_paths(listener, move |path| {
        let answer = match path {
            "/healthz" => Some(health.healthz()),
            "/livez" => Some(health.livez()),
            _ => None,
        };
        let Some(a) = answer else {
            return crate::http::not_found();
        };
        let mut r = crate::http::response(a.status, "application/json", a.body);
        r.headers_mut().insert(
            "X-Content-Type-Options",
            hyper::header::HeaderValue::from_static("nosniff"),
        );
        r
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn late_changes_and_doomed_nodes_are_unhealthy() {
        let h = ProxyHealth::new(Duration::from_millis(30), &mut Registry::default());
        let a = h.healthz();
        assert_eq!(a.status, 200, "a starting proxy is healthy");
        assert!(a.body.contains("\"nodeEligible\": true"), "{}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert!(
            v["lastUpdated"]
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .is_ok()
        );

        h.queued();
        assert_eq!(h.healthz().status, 200, "a change is pending but not late");
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(h.healthz().status, 503);
        assert_eq!(h.livez().status, 503);
        h.updated();
        assert_eq!(h.livez().status, 200);

        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "spec": {"taints": [{"key": TO_BE_DELETED_TAINT, "effect": "NoSchedule"}]}
        }))
        .unwrap();
        h.sync_node(&node);
        let a = h.healthz();
        assert_eq!(a.status, 503);
        assert!(a.body.contains("\"nodeEligible\": false"), "{}", a.body);
        assert_eq!(h.livez().status, 200, "livez ignores the node");
        h.sync_node(&serde_json::from_value(serde_json::json!({"metadata": {"name": "n1"}})).unwrap());
        assert_eq!(h.healthz().status, 200);
        h.node_deleted();
        assert_eq!(h.healthz().status, 503);
    }
}
