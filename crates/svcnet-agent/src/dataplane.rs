//! The node's data-plane control loop (kube-proxy's job): watch Services, EndpointSlices and this Node,
//! feed the [`Model`], and hand each batch of changes to a [`Backend`].
//!
//! Nothing polls: every watch event marks its Service dirty, and as soon as the event stream is idle for a
//! moment (or a batch has waited [`MAX_BATCH_DELAY`]) the dirty Services are recomputed and the diff is
//! applied. The backend runs on its own thread, so a slow `nft` transaction never stalls the watches; while
//! it works, new events pile up in the model and go out as the next, coalesced batch. Nothing is applied
//! before the first full list of both kinds, so a starting agent never programs a half-known cluster.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::{Duration, Instant, SystemTime};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use svcnet_dataplane::{Backend, Change, Model, ModelConfig, ServicePort};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::proxyhealth::ProxyHealth;

/// How long a batch may wait for the event stream to go quiet before it is applied anyway.
pub const MAX_BATCH_DELAY: Duration = Duration::from_millis(20);
/// How long the stream must be quiet before a batch goes out.
const QUIET: Duration = Duration::from_millis(2);

/// Settings of the data-plane loop.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// This node's name (endpoints on it are local).
    pub node_name: String,
    /// Services the data plane leaves alone (namespace, name).
    pub ignore: Vec<(String, String)>,
    /// How often the whole table is handed to the backend again, repairing any drift (kube-proxy: 1 h).
    pub resync_period: Duration,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PolicyLabel {
    traffic_policy: &'static str,
}

/// kube-proxy's sync metrics, under kube-proxy's names.
#[derive(Clone)]
pub struct DataplaneMetrics {
    sync_duration: Histogram,
    programming_duration: Histogram,
    event_to_programmed: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    last_queued: Gauge<f64, AtomicU64>,
    service_changes: Counter,
    endpoint_changes: Counter,
    service_pending: Gauge<i64, AtomicI64>,
    endpoint_pending: Gauge<i64, AtomicI64>,
    no_local_endpoints: Family<PolicyLabel, Gauge<i64, AtomicI64>>,
    sync_failures: Counter,
    ports: Gauge<i64, AtomicI64>,
    endpoints: Gauge<i64, AtomicI64>,
}

impl DataplaneMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &mut Registry) -> DataplaneMetrics {
        let buckets = || prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 18);
        let m = DataplaneMetrics {
            sync_duration: Histogram::new(buckets()),
            programming_duration: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 18,
            )),
            event_to_programmed: Histogram::new(buckets()),
            last_sync: Gauge::default(),
            last_queued: Gauge::default(),
            service_changes: Counter::default(),
            endpoint_changes: Counter::default(),
            service_pending: Gauge::default(),
            endpoint_pending: Gauge::default(),
            no_local_endpoints: Family::default(),
            sync_failures: Counter::default(),
            ports: Gauge::default(),
            endpoints: Gauge::default(),
        };
        registry.register(
            "kubeproxy_sync_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds",
            m.sync_duration.clone(),
        );
        registry.register(
            "kubeproxy_network_programming_duration_seconds",
            "In Cluster Network Programming Latency in seconds",
            m.programming_duration.clone(),
        );
        registry.register(
            "svcnet_dataplane_event_to_programmed_seconds",
            "From the first watch event of a batch to the backend having applied it",
            m.event_to_programmed.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
            "The last time proxy rules were successfully synced",
            m.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued",
            m.last_queued.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes",
            "Cumulative proxy rules Service changes",
            m.service_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_service_changes_pending",
            "Pending proxy rules Service changes",
            m.service_pending.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes",
            "Cumulative proxy rules EndpointSlice changes",
            m.endpoint_changes.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_endpoint_changes_pending",
            "Pending proxy rules EndpointSlice changes",
            m.endpoint_pending.clone(),
        );
        registry.register(
            // A gauge, named `_total` by kube-proxy.
            "kubeproxy_sync_proxy_rules_no_local_endpoints_total",
            "Number of service ports with a Local traffic policy and no local endpoints",
            m.no_local_endpoints.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_errors",
            "Backend syncs that failed",
            m.sync_failures.clone(),
        );
        registry.register(
            "svcnet_dataplane_service_ports",
            "Service ports programmed on this node",
            m.ports.clone(),
        );
        registry.register(
            "svcnet_dataplane_endpoints",
            "Endpoints programmed on this node (internal sets)",
            m.endpoints.clone(),
        );
        m
    }

    /// Counts a watch event that carries an object in `total` and, until the backend has handled it,
    /// in `pending`.
    fn queued(&self, total: &Counter, pending: &Gauge<i64, AtomicI64>) {
        total.inc();
        pending.inc();
        self.last_queued.set(unix_seconds(SystemTime::now()));
    }

    /// Sets the gauges that sum over all ports (endpoints, Local policies without local endpoints) from
    /// scratch, as a full sync does.
    fn count_all(&self, ports: &[Arc<ServicePort>]) {
        let t = ports.iter().fold([0; 3], |t, p| add(t, port_counts(p), 1));
        self.set_counts(t, false);
    }

    /// Moves those gauges by what `changes` changed, so that one endpoint costs O(1), not O(services).
    fn count_changes(&self, changes: &[Change]) {
        let mut d = [0; 3];
        for c in changes {
            match c {
                Change::Upsert { old, new } => {
                    if let Some(old) = old {
                        d = add(d, port_counts(old), -1);
                    }
                    d = add(d, port_counts(new), 1);
                }
                Change::Remove(old) => d = add(d, port_counts(old), -1),
            }
        }
        self.set_counts(d, true);
    }

    fn set_counts(&self, [endpoints, internal, external]: [i64; 3], delta: bool) {
        let policy = |p| {
            self.no_local_endpoints
                .get_or_create(&PolicyLabel { traffic_policy: p })
                .clone()
        };
        for (g, v) in [
            (self.endpoints.clone(), endpoints),
            (policy("internal"), internal),
            (policy("external"), external),
        ] {
            if delta {
                g.inc_by(v);
            } else {
                g.set(v);
            }
        }
    }
}

/// What one port adds to the summed gauges: its endpoints, and whether each of its Local policies has
/// endpoints elsewhere but none on this node (kube-proxy's `no_local_endpoints_total`).
fn port_counts(p: &ServicePort) -> [i64; 3] {
    let internal = p.internal_policy_local && p.has_endpoints && p.internal_endpoints.is_empty();
    let external = p.externally_accessible()
        && p.external_policy_local
        && p.has_endpoints
        && p.external_endpoints.is_empty();
    [
        p.internal_endpoints.len() as i64,
        internal as i64,
        external as i64,
    ]
}

fn add(a: [i64; 3], b: [i64; 3], sign: i64) -> [i64; 3] {
    [a[0] + sign * b[0], a[1] + sign * b[1], a[2] + sign * b[2]]
}

/// Watch events received but not yet programmed, by kind.
#[derive(Default, Clone, Copy)]
struct Pending {
    services: i64,
    slices: i64,
}

/// One unit of work for the backend thread.
enum Work {
    All(Vec<Arc<ServicePort>>, Pending),
    /// Changes, the trigger times behind them, when the first event of the batch arrived, and the watch
    /// events they answer.
    Changes(Vec<Change>, Vec<SystemTime>, Option<Instant>, Pending),
}

// Events are moved once from the watch to the model; boxing them would only add an allocation.
#[allow(clippy::large_enum_variant)]
enum Input {
    Service(Event<Service>),
    Slice(Event<EndpointSlice>),
    Node(Event<Node>),
}

/// Runs the loop until the watches end (they retry forever, so: until the task is dropped).
pub async fn run(
    client: Client,
    cfg: DataplaneConfig,
    backend: Box<dyn Backend>,
    metrics: DataplaneMetrics,
    health: ProxyHealth,
) {
    let services = watcher::watcher(Api::<Service>::all(client.clone()), watcher::Config::default());
    let slices = watcher::watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default(),
    );
    let node = watcher::watcher(
        Api::<Node>::all(client),
        watcher::Config::default().fields(&format!("metadata.name={}", cfg.node_name)),
    );
    let inputs = futures::stream::select_all([
        retrying(services).map(Input::Service).boxed(),
        retrying(slices).map(Input::Slice).boxed(),
        retrying(node).map(Input::Node).boxed(),
    ]);
    drive(inputs, cfg, backend, metrics, health).await;
}

/// The watch stream with errors logged and dropped (kube's watcher retries by itself, with back-off).
fn retrying<K: Clone + std::fmt::Debug + Send + 'static>(
    s: impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static,
) -> impl Stream<Item = Event<K>> + Send {
    use kube::runtime::WatchStreamExt;
    s.default_backoff().filter_map(|r| async move {
        match r {
            Ok(e) => Some(e),
            Err(e) => {
                warn!(error = %e, "data plane watch failed; retrying");
                None
            }
        }
    })
}

/// Tracks one kind's relists: which objects the last full list had, so that the ones missing from a relist
/// are deleted from the model.
#[derive(Default)]
struct Relist {
    known: HashSet<(String, String)>,
    fresh: Option<HashSet<(String, String)>>,
    synced: bool,
}

impl Relist {
    fn key<K: ResourceExt>(o: &K) -> (String, String) {
        (o.namespace().unwrap_or_default(), o.name_any())
    }

    /// Handles one event; returns the objects to upsert and the keys to delete.
    fn on<K: ResourceExt + Clone>(&mut self, e: Event<K>) -> (Vec<K>, Vec<(String, String)>) {
        match e {
            Event::Init => {
                self.fresh = Some(HashSet::new());
                (vec![], vec![])
            }
            Event::InitApply(o) => {
                self.fresh.get_or_insert_default().insert(Self::key(&o));
                (vec![o], vec![])
            }
            Event::InitDone => {
                self.synced = true;
                let fresh = self.fresh.take().unwrap_or_default();
                let gone = self.known.difference(&fresh).cloned().collect();
                self.known = fresh;
                (vec![], gone)
            }
            Event::Apply(o) => {
                self.known.insert(Self::key(&o));
                (vec![o], vec![])
            }
            Event::Delete(o) => {
                let k = Self::key(&o);
                self.known.remove(&k);
                (vec![], vec![k])
            }
        }
    }
}

async fn drive(
    mut inputs: impl Stream<Item = Input> + Unpin,
    cfg: DataplaneConfig,
    backend: Box<dyn Backend>,
    metrics: DataplaneMetrics,
    health: ProxyHealth,
) {
    let mut model = Model::new(ModelConfig {
        node_name: cfg.node_name.clone(),
        node_zone: None,
        ignore: cfg.ignore.clone(),
    });
    let (work_tx, work_rx) = mpsc::unbounded_channel::<Work>();
    let worker = {
        let (metrics, health) = (metrics.clone(), health.clone());
        std::thread::Builder::new()
            .name("dataplane-backend".into())
            .spawn(move || backend_thread(backend, work_rx, metrics, health))
            .expect("spawn the data-plane backend thread")
    };
    let (mut svc_list, mut slice_list) = (Relist::default(), Relist::default());
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
                        let (up, del) = svc_list.on(e);
                        up.iter().for_each(|s| model.upsert_service(s));
                        del.iter().for_each(|(ns, n)| model.delete_service(ns, n));
                    }
                    Input::Slice(e) => {
                        if has_object(&e) {
                            pending.slices += 1;
                            metrics.queued(&metrics.endpoint_changes, &metrics.endpoint_pending);
                        }
                        let (up, del) = slice_list.on(e);
                        up.iter().for_each(|s| model.upsert_slice(s));
                        del.iter().for_each(|(ns, n)| model.delete_slice(ns, n));
                    }
                    Input::Node(Event::Apply(n) | Event::InitApply(n)) => {
                        health.sync_node(&n);
                        model.set_node_zone(n.labels().get("topology.kubernetes.io/zone").cloned());
                    }
                    Input::Node(Event::Delete(_)) => health.node_deleted(),
                    Input::Node(_) => {}
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
        if !(svc_list.synced && slice_list.synced) {
            // The model keeps what came in; the first full sync takes it all once both lists are done.
            batch_since = None;
            continue;
        }
        let out = model.take_changes();
        let first_event = batch_since.take();
        let answered = std::mem::take(&mut pending);
        if !started || last_full.elapsed() >= cfg.resync_period {
            started = true;
            last_full = Instant::now();
            let all: Vec<_> = model.ports().cloned().collect();
            info!(ports = all.len(), "data plane: full sync");
            metrics.count_all(&all);
            let _ = work_tx.send(Work::All(all, answered));
            if !out.trigger_times.is_empty() {
                let _ = work_tx.send(Work::Changes(vec![], out.trigger_times, None, Pending::default()));
            }
        } else if first_event.is_some() || !out.changes.is_empty() || !out.trigger_times.is_empty() {
            // Sent even when the model found nothing to change, so that the backend thread reports the
            // queued events as handled (health, pending counts).
            debug!(changes = out.changes.len(), "data plane: incremental sync");
            metrics.count_changes(&out.changes);
            let _ = work_tx.send(Work::Changes(
                out.changes,
                out.trigger_times,
                first_event,
                answered,
            ));
        } else {
            // Events that changed nothing (a relist, say) are handled as they arrive.
            metrics.service_pending.dec_by(answered.services);
            metrics.endpoint_pending.dec_by(answered.slices);
        }
        metrics.ports.set(model.port_count() as i64);
    }
    drop(work_tx);
    let _ = tokio::task::spawn_blocking(move || worker.join()).await;
}

/// `t` as seconds since the Unix epoch (kube-proxy's timestamp gauges).
fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Whether a watch event carries an object (a change kube-proxy would count), not a relist marker.
fn has_object<K>(e: &Event<K>) -> bool {
    matches!(e, Event::Apply(_) | Event::InitApply(_) | Event::Delete(_))
}

fn backend_thread(
    mut backend: Box<dyn Backend>,
    mut rx: mpsc::UnboundedReceiver<Work>,
    m: DataplaneMetrics,
    health: ProxyHealth,
) {
    while let Some(work) = rx.blocking_recv() {
        let started = Instant::now();
        let (result, triggers, first_event, answered) = match work {
            Work::All(all, answered) => (Some(backend.sync_all(&all)), vec![], None, answered),
            Work::Changes(changes, triggers, first_event, answered) => {
                let r = (!changes.is_empty()).then(|| backend.apply(&changes));
                (r, triggers, first_event.filter(|_| !changes.is_empty()), answered)
            }
        };
        m.service_pending.dec_by(answered.services);
        m.endpoint_pending.dec_by(answered.slices);
        // This node's share of network programming latency, at sub-second precision (the trigger times
        // behind `programming_duration` come from whole-second API timestamps).
        if let Some(t) = first_event {
            m.event_to_programmed.observe(t.elapsed().as_secs_f64());
        }
        if result.is_some() {
            m.sync_duration.observe(started.elapsed().as_secs_f64());
        }
        match result.unwrap_or(Ok(())) {
            Ok(()) => {
                health.updated();
                let now = SystemTime::now();
                m.last_sync.set(unix_seconds(now));
                for t in triggers {
                    if let Ok(d) = now.duration_since(t) {
                        m.programming_duration.observe(d.as_secs_f64());
                    }
                }
            }
            Err(e) => {
                m.sync_failures.inc();
                warn!(backend = backend.name(), error = %e, "data plane sync failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

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
        let cfg = DataplaneConfig {
            node_name: "n1".into(),
            ignore: vec![],
            resync_period: Duration::from_secs(3600),
        };
        let mut registry = Registry::default();
        let metrics = DataplaneMetrics::new(&mut registry);
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
        send(Input::Service(Event::Init));
        send(Input::Service(Event::InitApply(svc("a"))));
        send(Input::Service(Event::InitDone));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            log.lock().unwrap().is_empty(),
            "nothing before the slices are listed"
        );
        send(Input::Slice(Event::Init));
        send(Input::Slice(Event::InitDone));
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(Input::Service(Event::Apply(svc("b"))));
        tokio::time::sleep(Duration::from_millis(50)).await;
        send(Input::Service(Event::Init));
        send(Input::Service(Event::InitApply(svc("b"))));
        send(Input::Service(Event::InitDone));
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(tx);
        task.await.unwrap();
        assert_eq!(*log.lock().unwrap(), ["all 1", "up default/b 0", "rm default/a"]);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "kubeproxy_sync_proxy_rules_service_changes_total 3",
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
        send(Input::Service(Event::Init));
        send(Input::Service(Event::InitApply(local)));
        send(Input::Service(Event::InitDone));
        send(Input::Slice(Event::Init));
        send(Input::Slice(Event::InitApply(slice("local", "n2", "10.0.0.2"))));
        send(Input::Slice(Event::InitDone));
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
        send(Input::Slice(Event::Apply(slice("local", "n1", "10.0.0.1"))));
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
