//! kube-apiserver's lease endpoint reconciler (`--endpoint-reconciler-type=lease`): the `kubernetes`
//! Service's endpoints list every live API server of the cluster, not the last one started.
//!
//! Each API server keeps a Lease `kube-system/apiserver-<identity>` (labelled
//! `apiserver.kubernetes.io/identity: kube-apiserver`, as kube-apiserver's identity Leases are) renewed
//! every [`RENEW_EVERY`] for [`LEASE_DURATION`] (kube's master lease TTL), with the address it serves on
//! in the annotation [`ADDRESS_ANNOTATION`] (kube keeps that address as the key of its `masterleases`
//! entry). After each renewal it writes the `default/kubernetes` Endpoints (one subset per port) and
//! EndpointSlice from the unexpired Leases; a server that dies drops out once its Lease expires.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tracing::warn;

use crate::ApiServer;

/// How long an API server's Lease holds without renewal (kube-apiserver's master lease TTL).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often each API server renews its Lease and reconciles the endpoints.
pub const RENEW_EVERY: Duration = Duration::from_secs(5);
/// The label kube-apiserver's identity Leases carry.
pub const IDENTITY_LABEL: &str = "apiserver.kubernetes.io/identity";
/// The annotation naming the address (`IP:port`) an API server serves on.
pub const ADDRESS_ANNOTATION: &str = "svcnet.io/apiserver-address";

/// The Lease name for an API server identity: `apiserver-` and the identity in DNS-label characters.
pub fn lease_name(identity: &str) -> String {
    let id: String = identity
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("apiserver-{}", id.trim_matches(|c| c == '-' || c == '.'))
}

/// The addresses of the API server Leases in `leases` that have not expired at `now` (pure).
pub fn live_addresses(leases: &[Arc<Value>], now: jiff::Timestamp) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = leases
        .iter()
        .filter(|l| {
            l.pointer(&format!("/metadata/labels/{}", IDENTITY_LABEL.replace('/', "~1")))
                .is_some()
        })
        .filter(|l| {
            let renewed = l
                .pointer("/spec/renewTime")
                .and_then(Value::as_str)
                .and_then(|t| t.parse::<jiff::Timestamp>().ok());
            let secs = l
                .pointer("/spec/leaseDurationSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0);
            renewed.is_some_and(|r| r + jiff::SignedDuration::from_secs(secs) > now)
        })
        .filter_map(|l| {
            l.pointer(&format!(
                "/metadata/annotations/{}",
                ADDRESS_ANNOTATION.replace('/', "~1")
            ))?
            .as_str()?
            .parse()
            .ok()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The `kubernetes` Endpoints' subsets for `addrs` (one per port, addresses sorted) and the
/// EndpointSlice's endpoints and port: those of the first address's port (a slice has one port list;
/// API servers of one cluster normally share their port).
pub fn endpoints_for(addrs: &[SocketAddr]) -> (Value, Value, u16) {
    let mut by_port: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    for a in addrs {
        by_port.entry(a.port()).or_default().push(a.ip().to_string());
    }
    let subsets: Vec<Value> = by_port
        .iter()
        .map(|(port, ips)| {
            json!({"addresses": ips.iter().map(|ip| json!({"ip": ip})).collect::<Vec<_>>(),
                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]})
        })
        .collect();
    let port = addrs.first().map_or(443, SocketAddr::port);
    let endpoints: Vec<Value> = by_port
        .get(&port)
        .into_iter()
        .flatten()
        .map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}}))
        .collect();
    (Value::Array(subsets), Value::Array(endpoints), port)
}

/// A server's running reconciler (see [`ApiServer::spawn_endpoint_reconciler`]).
pub struct EndpointReconciler {
    task: tokio::task::JoinHandle<()>,
    server: Arc<ApiServer>,
    name: String,
    identity: String,
    addr: SocketAddr,
}

impl EndpointReconciler {
    /// On shutdown (kube-apiserver's `RemoveEndpoints`): stops renewing, expires this server's Lease
    /// and takes its address out of the `kubernetes` endpoints at once, instead of after the Lease
    /// duration.
    pub async fn withdraw(self) {
        self.task.abort();
        let expired =
            jiff::Timestamp::now() - jiff::SignedDuration::from_secs(LEASE_DURATION.as_secs() as i64 + 1);
        if let Err(e) = self
            .server
            .reconcile_apiserver_endpoints(&self.name, &self.identity, self.addr, expired)
            .await
        {
            warn!(lease = %self.name, error = %e, "taking this API server out of the kubernetes endpoints");
        }
    }
}

impl ApiServer {
    /// Renews this server's Lease and rewrites the `kubernetes` endpoints from the live Leases every
    /// [`RENEW_EVERY`] until [`EndpointReconciler::withdraw`]. The first round runs at once.
    pub fn spawn_endpoint_reconciler(
        self: &Arc<Self>,
        identity: String,
        addr: SocketAddr,
    ) -> EndpointReconciler {
        let name = lease_name(&identity);
        let (server, n, id) = (self.clone(), name.clone(), identity.clone());
        let task = tokio::spawn(async move {
            loop {
                let now = jiff::Timestamp::now();
                if let Err(e) = server.reconcile_apiserver_endpoints(&n, &id, addr, now).await {
                    warn!(lease = %n, error = %e, "renewing this API server's Lease or the kubernetes endpoints");
                }
                tokio::time::sleep(RENEW_EVERY).await;
            }
        });
        EndpointReconciler {
            task,
            server: self.clone(),
            name,
            identity,
            addr,
        }
    }

    /// Writes this server's Lease as renewed at `renewed` and the endpoints from the Leases live now
    /// (this server's among them unless `renewed` is long past).
    async fn reconcile_apiserver_endpoints(
        &self,
        name: &str,
        identity: &str,
        addr: SocketAddr,
        renewed: jiff::Timestamp,
    ) -> Result<(), crate::errors::ApiError> {
        let leases = crate::bootstrap::rt("leases", "coordination.k8s.io");
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-system",
                "labels": {IDENTITY_LABEL: "kube-apiserver"},
                "annotations": {ADDRESS_ANNOTATION: addr.to_string()}},
            "spec": {"holderIdentity": identity,
                "leaseDurationSeconds": LEASE_DURATION.as_secs(),
                "renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()}});
        self.put_internal(leases, Some("kube-system"), name, lease)
            .await?;
        let addrs = live_addresses(
            &self.cached_list(leases, Some("kube-system")),
            jiff::Timestamp::now(),
        );
        self.publish_apiserver_endpoints(&addrs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(addr: &str, renewed: &str, secs: i64) -> Arc<Value> {
        Arc::new(json!({"metadata": {"labels": {IDENTITY_LABEL: "kube-apiserver"},
            "annotations": {ADDRESS_ANNOTATION: addr}},
            "spec": {"renewTime": renewed, "leaseDurationSeconds": secs}}))
    }

    #[test]
    fn only_unexpired_leases_count() {
        let now: jiff::Timestamp = "2026-01-01T00:00:20Z".parse().unwrap();
        let leases = [
            lease("127.0.0.1:6443", "2026-01-01T00:00:10.000000Z", 15),
            lease("127.0.0.2:6443", "2026-01-01T00:00:01.000000Z", 15),
            lease("127.0.0.3:7443", "2026-01-01T00:00:19.500000Z", 15),
            Arc::new(
                json!({"metadata": {"annotations": {ADDRESS_ANNOTATION: "127.0.0.4:1"}},
                "spec": {"renewTime": "2026-01-01T00:00:19Z", "leaseDurationSeconds": 15}}),
            ),
        ];
        let live = live_addresses(&leases, now);
        assert_eq!(
            live,
            [
                "127.0.0.1:6443".parse().unwrap(),
                "127.0.0.3:7443".parse().unwrap()
            ]
        );
        let (subsets, endpoints, port) = endpoints_for(&live);
        assert_eq!(port, 6443);
        assert_eq!(subsets.as_array().unwrap().len(), 2);
        assert_eq!(subsets[1]["addresses"][0]["ip"], "127.0.0.3");
        assert_eq!(
            endpoints,
            json!([{"addresses": ["127.0.0.1"], "conditions": {"ready": true}}])
        );
    }

    #[test]
    fn lease_names() {
        assert_eq!(lease_name("Node-1_00ab"), "apiserver-node-1-00ab");
    }
}
