//! The proxier's watch loop (kube-proxy's change tracking): follow Services, EndpointSlices and this Node
//! through [`svcnet_informer`] (list, watch, and deletions of what a relist no longer shows), feed the
//! [`Model`], and hand each batch of changes to the [`runner`](crate::runner), which programs a
//! [`Backend`].
//!
//! Nothing polls: every watch event marks its Service dirty, and as soon as the event stream is idle for a
//! moment (or a batch has waited [`MAX_BATCH_DELAY`]) the dirty Services are recomputed and the diff is
//! handed over. The backend runs on the runner's thread, so a slow `nft` transaction never stalls the
//! watches; while it works, new events pile up in the model and go out as the next, coalesced batch.
//! Nothing is applied before the first full list of both kinds, so a starting node never programs a
//! half-known cluster.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use svcnet_dataplane::{Backend, Model, ModelConfig};
use svcnet_informer::{Event, Informer};
use tracing::{debug, error, info};

use crate::health::ProxyHealth;
use crate::metrics::ProxierMetrics;
use crate::runner::{Pending, RetryPolicy, Work};

/// How long a batch may wait for the event stream to go quiet before it is applied anyway.
pub const MAX_BATCH_DELAY: Duration = Duration::from_millis(20);
/// How long the stream must be quiet before a batch goes out.
const QUIET: Duration = Duration::from_millis(2);

/// Settings of the proxier.
#[derive(Debug, Clone)]
pub struct ProxierConfig {
    /// This node's name (endpoints on it are local).
    pub node_name: String,
    /// Services the data plane leaves alone (namespace, name).
    pub ignore: Vec<(String, String)>,
    /// How often the whole table is handed to the backend again, repairing any drift (kube-proxy: 1 h).
    pub resync_period: Duration,
    /// When a failed sync is tried again.
    pub retry: RetryPolicy,
    /// Where `healthCheckNodePort` servers listen: the node's addresses (every address when empty), or
    /// `None` to serve none.
    pub service_health: Option<Vec<IpAddr>>,
}

impl ProxierConfig {
    /// The defaults for node `node_name`: hourly resync, the default retry policy, health check servers
    /// on every address.
    pub fn new(node_name: impl Into<String>) -> ProxierConfig {
        ProxierConfig {
            node_name: node_name.into(),
            ignore: vec![],
            resync_period: Duration::from_secs(3600),
            retry: RetryPolicy::default(),
            service_health: Some(vec![]),
        }
    }
}

/// One informer event, of one of the three kinds the loop follows.
enum Input {
    Service(Event<Service>),
    Slice(Event<EndpointSlice>),
    Node(Event<Node>),
}

/// Drops what no part of the proxier reads before an object is cached (the model keeps its own view).
fn trim<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// Runs the loop until the watches end (they retry forever, so: until the task is dropped).
pub async fn run(
    client: Client,
    cfg: ProxierConfig,
    backend: Box<dyn Backend>,
    metrics: ProxierMetrics,
    health: ProxyHealth,
) {
    let services = Informer::<Service>::new(trim);
    let slices = Informer::<EndpointSlice>::new(trim);
    let node = Informer::<Node>::new(trim);
    let inputs = futures::stream::select_all([
        services.subscribe().map(Input::Service).boxed(),
        slices.subscribe().map(Input::Slice).boxed(),
        node.subscribe().map(Input::Node).boxed(),
    ]);
    services.spawn(Api::all(client.clone()));
    slices.spawn(Api::all(client.clone()));
    node.spawn_with(
        Api::all(client),
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name)),
    );
    // The informers live until the loop ends: their watches stop when they are dropped.
    drive(inputs, cfg, backend, metrics, health).await;
}

async fn drive(
    mut inputs: impl Stream<Item = Input> + Unpin,
    cfg: ProxierConfig,
    backend: Box<dyn Backend>,
    metrics: ProxierMetrics,
    health: ProxyHealth,
) {
    let mut model = Model::new(ModelConfig {
        node_name: cfg.node_name.clone(),
        node_zone: None,
        ignore: cfg.ignore.clone(),
    });
    let started_runner = crate::runner::start(crate::runner::Runner::new(
        backend,
        metrics.clone(),
        health.clone(),
        cfg.service_health.as_deref(),
        cfg.retry,
    ));
    let (work_tx, worker) = match started_runner {
        Ok(r) => r,
        Err(e) => {
            error!(error = %e, "cannot start the proxier's runner thread");
            return;
        }
    };
    // Whether each kind's initial list is in (the informer says so with its first `Listed`).
    let (mut services_listed, mut slices_listed) = (false, false);
    let mut started = false;
    let mut batch_since: Option<Instant> = None;
    let mut last_full = Instant::now();
    let mut pending = Pending::default();
    loop {
        let timeout = match batch_since {
            Some(t) => QUIET.min(MAX_BATCH_DELAY.saturating_sub(t.elapsed())),
            None => cfg
                .resync_period
                .saturating_sub(last_full.elapsed())
                .max(Duration::from_millis(1)),
        };
        match tokio::time::timeout(timeout, inputs.next()).await {
            Ok(Some(input)) => {
                match input {
                    Input::Service(e) => {
                        if has_object(&e) {
                            pending.services += 1;
                            metrics.queued(&metrics.service_changes, &metrics.service_pending);
                        }
                        match e {
                            Event::Apply { obj, .. } => model.upsert_service(&obj),
                            Event::Delete(obj) => {
                                model.delete_service(&obj.namespace().unwrap_or_default(), &obj.name_any())
                            }
                            Event::Listed => services_listed = true,
                        }
                    }
                    Input::Slice(e) => {
                        if has_object(&e) {
                            pending.slices += 1;
                            metrics.queued(&metrics.endpoint_changes, &metrics.endpoint_pending);
                        }
                        match e {
                            Event::Apply { obj, .. } => model.upsert_slice(&obj),
                            Event::Delete(obj) => {
                                model.delete_slice(&obj.namespace().unwrap_or_default(), &obj.name_any())
                            }
                            Event::Listed => slices_listed = true,
                        }
                    }
                    Input::Node(Event::Apply { obj: n, .. }) => {
                        health.sync_node(&n);
                        model.set_node_zone(n.labels().get("topology.kubernetes.io/zone").cloned());
                    }
                    Input::Node(Event::Delete(_)) => health.node_deleted(),
                    Input::Node(Event::Listed) => {}
                }
                if model.is_dirty() && batch_since.is_none() {
                    batch_since = Some(Instant::now());
                    health.queued();
                }
                if batch_since.is_some_and(|t| t.elapsed() < MAX_BATCH_DELAY) {
                    continue;
                }
            }
            Ok(None) => break,
            Err(_) => {}
        }
        if !(services_listed && slices_listed) {
            // The model keeps what came in; the first full sync takes it all once both lists are done.
            batch_since = None;
            continue;
        }
        let out = model.take_changes();
        let first_event = batch_since.take();
        let answered = std::mem::take(&mut pending);
        if !started || last_full.elapsed() >= cfg.resync_period {
            last_full = Instant::now();
            let all: Vec<_> = model.ports().cloned().collect();
            info!(ports = all.len(), "data plane: full sync");
            metrics.count_all(&all);
            let reason = if started { "resync" } else { "start" };
            started = true;
            let _ = work_tx.send(Work::All {
                ports: all,
                reason,
                triggers: out.trigger_times,
                answered,
            });
        } else if first_event.is_some() || !out.changes.is_empty() || !out.trigger_times.is_empty() {
            // Sent even when the model found nothing to change, so that the backend thread reports the
            // queued events as handled (health, pending counts).
            debug!(changes = out.changes.len(), "data plane: incremental sync");
            metrics.count_changes(&out.changes);
            let _ = work_tx.send(Work::Changes {
                changes: out.changes,
                triggers: out.trigger_times,
                first_event,
                answered,
            });
        } else {
            // Events that changed nothing (a relist, say) are handled as they arrive.
            metrics.handled(answered);
        }
        metrics.ports.set(model.port_count() as i64);
    }
    drop(work_tx);
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
}

/// Whether an informer event carries an object (a change kube-proxy would count), not a list marker.
fn has_object<K>(e: &Event<K>) -> bool {
    !matches!(e, Event::Listed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::registry::Registry;
    use std::sync::Arc;
    use std::sync::Mutex;
    use svcnet_dataplane::{Change, ServicePort};

    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Backend for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }
        fn apply(&mut self, changes: &[Change]) -> Result<(), svcnet_dataplane::BackendError> {
            let mut log = self.0.lock().unwrap();
            for c in changes {
                log.push(match c {
                    Change::Upsert { new, .. } => format!("up {} {}", new.name, new.internal_endpoints.len()),
                    Change::Remove(old) => format!("rm {}", old.name),
                });
            }
            Ok(())
        }
        fn sync_all(&mut self, ports: &[Arc<ServicePort>]) -> Result<(), svcnet_dataplane::BackendError> {
            self.0.lock().unwrap().push(format!("all {}", ports.len()));
            Ok(())
        }
    }

    /// An informer's event for an object (not cached before).
    fn apply<K>(obj: K) -> Event<K> {
        Event::Apply {
            obj: Arc::new(obj),
            old: None,
        }
    }

    fn svc(name: &str) -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": name},
            "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80}]}
        }))
        .unwrap()
    }

    /// The loop on node `n1` with a recording backend: its input, its metrics, its task.
    fn start(
        log: Arc<Mutex<Vec<String>>>,
    ) -> (
        futures::channel::mpsc::UnboundedSender<Input>,
        Registry,
        tokio::task::JoinHandle<()>,
    ) {
        let (tx, rx) = futures::channel::mpsc::unbounded();
        let cfg = ProxierConfig {
            service_health: None,
            ..ProxierConfig::new("n1")
        };
        let mut registry = Registry::default();
        let metrics = ProxierMetrics::new(&mut registry);
        let health = ProxyHealth::new(Duration::from_secs(60), &mut registry);
        let task = tokio::spawn(drive(rx, cfg, Box::new(Recorder(log)), metrics, health));
        (tx, registry, task)
    }

    /// The loop waits for both initial lists, starts with one full sync, then sends increments, and a relist
    /// that misses an object deletes it.
    #[tokio::test]
    async fn full_sync_after_both_lists_then_increments() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, registry, task) = start(log.clone());
        let send = |i: Input| tx.unbounded_send(i).unwrap();
        send(Input::Service(apply(svc("a"))));
        send(Input::Service(Event::Listed));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            log.lock().unwrap().is_empty(),
            "nothing before the slices are listed"
        );
        send(Input::Slice(Event::Listed));
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(Input::Service(apply(svc("b"))));
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A relist that no longer has `a`: the informer says it is gone, then re-applies `b`.
        send(Input::Service(Event::Delete(Arc::new(svc("a")))));
        send(Input::Service(apply(svc("b"))));
        send(Input::Service(Event::Listed));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(tx);
        task.await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["all 1", "up default/b 0", "rm default/a"]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "kubeproxy_sync_proxy_rules_service_changes_total 4",
            "kubeproxy_sync_proxy_rules_service_changes_pending 0",
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending 0",
            "svcnet_dataplane_service_ports 1",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in\n{text}");
        }
    }

    fn slice(svc: &str, node: &str, ip: &str) -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"namespace": "default", "name": format!("{svc}-{node}"),
                "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "ports": [{"port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": true}}]
        }))
        .unwrap()
    }

    /// The summed gauges follow each change without a recount: a Local policy with endpoints only on other
    /// nodes is counted, and stops being counted when a local endpoint appears.
    #[tokio::test]
    async fn no_local_endpoints_follow_changes() {
        let (tx, registry, task) = start(Arc::new(Mutex::new(Vec::new())));
        let send = |i: Input| tx.unbounded_send(i).unwrap();
        let mut local: Service = svc("local");
        let spec = local.spec.as_mut().unwrap();
        spec.internal_traffic_policy = Some("Local".into());
        spec.type_ = Some("NodePort".into());
        spec.external_traffic_policy = Some("Local".into());
        spec.ports.as_mut().unwrap()[0].node_port = Some(30080);
        send(Input::Service(apply(local)));
        send(Input::Service(Event::Listed));
        send(Input::Slice(apply(slice("local", "n2", "10.0.0.2"))));
        send(Input::Slice(Event::Listed));
        let metric = |name: &str| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
                .unwrap_or_else(|| panic!("{name} in\n{text}"))
        };
        let no_local = |p: &str| {
            metric(&format!(
                "kubeproxy_sync_proxy_rules_no_local_endpoints_total{{traffic_policy=\"{p}\"}}"
            ))
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            (no_local("internal"), no_local("external")),
            ("1".into(), "1".into())
        );
        assert_eq!(metric("svcnet_dataplane_endpoints "), "0");
        send(Input::Slice(apply(slice("local", "n1", "10.0.0.1"))));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            (no_local("internal"), no_local("external")),
            ("0".into(), "0".into())
        );
        assert_eq!(metric("svcnet_dataplane_endpoints "), "1");
        assert_eq!(metric("kubeproxy_sync_proxy_rules_endpoint_changes_total "), "2");
        drop(tx);
        task.await.unwrap();
    }
}
