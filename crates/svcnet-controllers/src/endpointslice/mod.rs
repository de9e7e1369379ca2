//! The EndpointSlice controller, the legacy Endpoints controller and the EndpointSlice mirroring
//! controller of kube-controller-manager, as kube-rs clients.
//!
//! * **EndpointSlices** ([`reconciler`]): every Service with a selector gets EndpointSlices labelled
//!   `kubernetes.io/service-name` and `endpointslice.kubernetes.io/managed-by:
//!   endpointslice-controller.k8s.io`, owned by the Service (so the garbage collector removes them with
//!   it), one address type per IP family, at most [`EndpointSliceConfig::max_endpoints_per_slice`]
//!   endpoints each, and one slice group per distinct set of resolved ports (a named `targetPort` is
//!   looked up per pod). Endpoints carry `ready`/`serving`/`terminating`, `nodeName`, `zone`,
//!   `hostname` and a `targetRef` to the pod. Packing follows kube's reconciler: endpoints stay where
//!   they are, only slices whose endpoints changed are rewritten, new endpoints go first into slices
//!   that are written anyway, then into the unchanged slice that ends closest to full, then into new
//!   slices; emptied slices are deleted (or recycled for a create); a Service without endpoints keeps
//!   one empty placeholder slice per family.
//! * **Endpoints** ([`endpoints`]): the core/v1 Endpoints of every selector Service, repacked like
//!   kube's `RepackSubsets`, truncated to 1000 addresses with `endpoints.kubernetes.io/over-capacity:
//!   truncated`, and deleted with the Service.
//! * **Mirroring** ([`mirroring`]): the user-written Endpoints of a Service *without* a selector are
//!   copied to slices managed by `endpointslicemirroring-controller.k8s.io` (owned by the Endpoints),
//!   unless labelled `endpointslice.kubernetes.io/skip-mirror: "true"` (as the API server's own
//!   `default/kubernetes` Endpoints are) or a leader-election lock.
//!
//! **Event driven.** One informer each on Services, Pods, Nodes (those three shared with the other
//! controllers, [`crate::SharedInformers`]), EndpointSlices and Endpoints feeds an in-memory cache with
//! the indexes the controllers need (holding the informers' `Arc`s, not copies) (pods by namespace and node, slices by owning
//! Service) and three de-duplicating work queues, one per controller, each with one worker. A pod event
//! queues only the Services whose selector matches the pod's old or new labels, and only when
//! something an endpoint shows changed; a node event queues the Services of its pods when its zone
//! changes or it appears or vanishes; a slice event queues its Service unless it is the echo of this
//! controller's own write. Nothing is re-listed or polled on a timer.
//!
//! **Stale caches.** The cache lags behind the controller's own writes, so, like kube's
//! `EndpointSliceTracker`, the controller remembers the resourceVersion of every slice it wrote and
//! every slice it deleted, and does not sync a Service until its cache has caught up (otherwise a
//! second sync right after a create would create the slice again). The Endpoints controller does the
//! same for the Endpoints it writes (kube's `staleEndpointsTracker`). Updates are conditional on the
//! resourceVersion they were computed from; a conflict is retried with backoff on fresh data.
//!
//! **Metrics** ([`EndpointSliceMetrics`]): register them in a `prometheus_client` registry with
//! [`EndpointSliceMetrics::new`], pass them in [`EndpointSliceConfig::metrics`], and serve
//! [`metrics_text`] of that registry on `/metrics`, e.g. in `svcnet up`:
//!
//! ```no_run
//! # async fn f(client: kube::Client) {
//! use std::sync::{Arc, Mutex};
//! use prometheus_client::registry::Registry;
//! use svcnet_controllers::endpointslice::*;
//! let mut registry = Registry::default();
//! let cfg = EndpointSliceConfig {
//!     metrics: EndpointSliceMetrics::new(&mut registry),
//!     ..EndpointSliceConfig::default()
//! };
//! let registry = Arc::new(Mutex::new(registry));
//! // The /metrics handler answers `metrics_text(&registry.lock().unwrap())`.
//! let informers = svcnet_controllers::SharedInformers::start(&client);
//! tokio::spawn(run_endpointslice_controllers(client, informers, cfg));
//! # }
//! ```

pub mod endpoints;
mod metrics;
pub mod mirroring;
pub mod reconciler;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Endpoints, Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use svcnet_informer::{Event, Informer, Subscription};
use thiserror::Error;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::SharedInformers;
pub use crate::queue::Key;
use crate::queue::WorkQueue;
pub use metrics::{EndpointSliceMetrics, OperationLabels, ResultLabels, metrics_text};
use reconciler::{CONTROLLER_NAME, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_ZONE, NodeZones, Plan};

/// Configuration of [`run_endpointslice_controllers`].
#[derive(Debug, Clone)]
pub struct EndpointSliceConfig {
    /// Most endpoints in one EndpointSlice (`--max-endpoints-per-slice`, kube's default 100).
    pub max_endpoints_per_slice: usize,
    /// Most addresses mirrored per Endpoints subset (`--mirroring-max-endpoints-per-subset`, 1000).
    pub mirroring_max_endpoints_per_subset: usize,
    /// Where the controllers count their work.
    pub metrics: EndpointSliceMetrics,
}

impl Default for EndpointSliceConfig {
    fn default() -> Self {
        Self {
            max_endpoints_per_slice: 100,
            mirroring_max_endpoints_per_subset: 1000,
            metrics: EndpointSliceMetrics::default(),
        }
    }
}

/// Why one sync failed (it is retried with backoff).
#[derive(Debug, Error)]
pub enum Error {
    /// An API call failed (a conflict means the decision was made on stale data).
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The cache has not yet shown this controller's own latest writes for the Service.
    #[error("the EndpointSlice cache is older than this controller's own writes")]
    Stale,
    /// Selected pods name nodes that do not exist; they were left out, and the sync is retried.
    #[error("pods on unknown nodes were skipped: {0:?}")]
    MissingNodes(Vec<String>),
}

/// Runs the EndpointSlice, Endpoints and EndpointSlice mirroring controllers until the returned
/// future is dropped. API errors are retried (watches with backoff, syncs with per-Service backoff).
/// Services, Pods and Nodes come from the process's shared informers; EndpointSlices and Endpoints have
/// informers of their own.
pub async fn run_endpointslice_controllers(
    client: Client,
    informers: SharedInformers,
    cfg: EndpointSliceConfig,
) {
    let slices = Informer::<EndpointSlice>::new(crate::trim_managed_fields);
    let endpoints = Informer::<Endpoints>::new(crate::trim_managed_fields);
    slices.spawn(Api::all(client.clone()));
    endpoints.spawn(Api::all(client.clone()));
    let (synced_tx, synced_rx) = watch::channel(0u8);
    let shared = Arc::new(Shared {
        cache: Mutex::new(Cache::default()),
        slices_q: WorkQueue::default(),
        endpoints_q: WorkQueue::default(),
        mirror_q: WorkQueue::default(),
        synced: synced_tx,
    });
    info!(
        max_endpoints_per_slice = cfg.max_endpoints_per_slice,
        "EndpointSlice controllers started"
    );
    let ctl = Arc::new(Controllers {
        client: client.clone(),
        cfg,
        shared: shared.clone(),
    });
    // Everything runs inside this one future, so dropping it stops the own watches and workers alike.
    tokio::join!(
        follow(informers.services.subscribe(), shared.clone(), 1),
        follow(informers.pods.subscribe(), shared.clone(), 2),
        follow(informers.nodes.subscribe(), shared.clone(), 4),
        follow(slices.subscribe(), shared.clone(), 8),
        follow(endpoints.subscribe(), shared.clone(), ENDPOINTS_BIT),
        worker(synced_rx.clone(), shared.slices_q.clone(), "endpointslice", {
            let ctl = ctl.clone();
            move |k| {
                let ctl = ctl.clone();
                async move { ctl.sync_slices(&k).await }
            }
        }),
        worker(synced_rx.clone(), shared.endpoints_q.clone(), "endpoints", {
            let ctl = ctl.clone();
            move |k| {
                let ctl = ctl.clone();
                async move { ctl.sync_endpoints(&k).await }
            }
        }),
        worker(synced_rx, shared.mirror_q.clone(), "endpointslicemirroring", {
            let ctl = ctl.clone();
            move |k| {
                let ctl = ctl.clone();
                async move { ctl.sync_mirroring(&k).await }
            }
        }),
    );
}

const ALL_SYNCED: u8 = 31;
/// The Endpoints informer's bit in [`Shared::synced`].
const ENDPOINTS_BIT: u8 = 16;

/// Whether an Endpoints object is a leader-election lock, which no controller touches.
fn is_leader_lock(ep: &Endpoints) -> bool {
    ep.metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(endpoints::ANNOTATION_LEADER))
}

struct Shared {
    cache: Mutex<Cache>,
    slices_q: WorkQueue,
    endpoints_q: WorkQueue,
    mirror_q: WorkQueue,
    /// Bit per kind whose first list this cache has taken in; workers start when all have.
    synced: watch::Sender<u8>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What a controller expects the cache to show of a slice it wrote.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// At least this resourceVersion.
    Version(u64),
    /// Gone.
    Deleted,
}

/// The (managed-by, Service) a slice belongs to.
type Owner = (String, Key);

fn version(meta: &kube::api::ObjectMeta) -> u64 {
    meta.resource_version
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn key_of(meta: &kube::api::ObjectMeta) -> Key {
    Key::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn slice_owner(s: &EndpointSlice) -> Option<Owner> {
    let labels = s.metadata.labels.as_ref()?;
    let svc = labels.get(LABEL_SERVICE_NAME)?;
    let by = labels.get(LABEL_MANAGED_BY)?;
    Some((
        by.clone(),
        Key::new(s.metadata.namespace.clone().unwrap_or_default(), svc.clone()),
    ))
}

/// A Service's selector, if it has a non-empty one (an empty map is dropped by kube-apiserver's
/// storage, so it means "no selector" there too).
fn selector(svc: &Service) -> Option<&std::collections::BTreeMap<String, String>> {
    svc.spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .filter(|s| !s.is_empty())
}

fn selects(svc: &Service, pod: &Pod) -> bool {
    let Some(sel) = selector(svc) else {
        return false;
    };
    let labels = pod.metadata.labels.as_ref();
    sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

/// The parts of a pod that any endpoint or Endpoints address shows (kube's `podEndpointsChanged`
/// plus labels): a pod update that changes none of them queues nothing.
fn pod_projection(p: &Pod) -> impl PartialEq + use<> {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    (
        p.metadata.labels.clone(),
        p.metadata.deletion_timestamp.is_some(),
        p.metadata.uid.clone(),
        reconciler::pod_ips(p),
        status.and_then(|s| s.phase.clone()),
        reconciler::pod_ready(p),
        reconciler::pod_trigger_time(p),
        spec.map(|s| {
            (
                s.node_name.clone(),
                s.hostname.clone(),
                s.subdomain.clone(),
                s.containers.iter().map(|c| c.ports.clone()).collect::<Vec<_>>(),
                s.init_containers
                    .iter()
                    .flatten()
                    .map(|c| (c.restart_policy.clone(), c.ports.clone()))
                    .collect::<Vec<_>>(),
            )
        }),
    )
}

fn node_zone(n: &Node) -> Option<String> {
    n.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_ZONE))
        .cloned()
}

/// Per-Service memory of the pod trigger times already reflected (kube's `TriggerTimeTracker`).
#[derive(Default)]
struct TriggerTracker {
    seen: HashMap<Key, HashMap<String, Option<jiff::Timestamp>>>,
}

impl TriggerTracker {
    /// The earliest change not yet reflected: a pod's readiness change, or the Service's creation
    /// on its first sync.
    fn compute(&mut self, svc: &Service, key: &Key, pods: &[Arc<Pod>]) -> Option<jiff::Timestamp> {
        let first = !self.seen.contains_key(key);
        let old = self.seen.remove(key).unwrap_or_default();
        let mut min: Option<jiff::Timestamp> = None;
        let mut now = HashMap::new();
        for p in pods {
            let name = p.metadata.name.clone().unwrap_or_default();
            let t = reconciler::pod_trigger_time(p);
            if old.get(&name) != Some(&t)
                && let Some(t) = t
            {
                min = Some(min.map_or(t, |m| m.min(t)));
            }
            now.insert(name, t);
        }
        if first && let Some(c) = svc.metadata.creation_timestamp.as_ref() {
            min = Some(min.map_or(c.0, |m| m.min(c.0)));
        }
        self.seen.insert(key.clone(), now);
        min
    }
}

#[derive(Default)]
struct Cache {
    services: HashMap<Key, Arc<Service>>,
    services_by_ns: HashMap<String, BTreeSet<String>>,
    pods: HashMap<Key, Arc<Pod>>,
    pods_by_ns: HashMap<String, BTreeSet<String>>,
    /// (namespace, label key, label value) → pod names: a Service's pods are found from its selector's
    /// smallest label set instead of scanning the namespace (which cost a third of the server's CPU at
    /// 10,000 pods in the benchmark).
    pods_by_label: HashMap<(String, String, String), BTreeSet<String>>,
    pods_by_node: HashMap<String, BTreeSet<Key>>,
    nodes: NodeZones,
    slices: HashMap<Key, Arc<EndpointSlice>>,
    slices_by_owner: HashMap<Owner, BTreeSet<String>>,
    endpoints: HashMap<Key, Arc<Endpoints>>,
    expectations: HashMap<Owner, HashMap<String, Expect>>,
    /// The Endpoints this controller wrote or deleted that the cache has not caught up with yet (kube's
    /// `staleEndpointsTracker`): a sync on the older copy would only be refused with a conflict.
    endpoints_expected: HashMap<Key, Expect>,
    /// Endpoints to delete if no Service of their name exists when synced: those of a Service just
    /// deleted, and every one of the first list (kube's `checkLeftoverEndpoints`, once at start-up).
    /// Any other Endpoints without a Service is user-managed and left alone, as in Kubernetes.
    endpoints_orphan_check: HashSet<Key>,
    slice_triggers: TriggerTracker,
    endpoints_triggers: TriggerTracker,
}

impl Cache {
    fn matching_services(&self, pod: &Pod) -> BTreeSet<Key> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        self.services_by_ns
            .get(&ns)
            .into_iter()
            .flatten()
            .map(|n| Key::new(ns.clone(), n.clone()))
            .filter(|k| self.services.get(k).is_some_and(|s| selects(s, pod)))
            .collect()
    }

    fn selected_pods(&self, svc: &Service) -> Vec<Arc<Pod>> {
        let ns = svc.metadata.namespace.clone().unwrap_or_default();
        let Some(sel) = selector(svc) else {
            return Vec::new();
        };
        let empty = BTreeSet::new();
        let smallest = sel
            .iter()
            .map(|(k, v)| {
                self.pods_by_label
                    .get(&(ns.clone(), k.clone(), v.clone()))
                    .unwrap_or(&empty)
            })
            .min_by_key(|set| set.len())
            .unwrap_or(&empty);
        smallest
            .iter()
            .filter_map(|n| self.pods.get(&Key::new(ns.clone(), n.clone())))
            .filter(|p| selects(svc, p))
            .cloned()
            .collect()
    }

    fn index_labels(&mut self, pod: &Pod, add: bool) {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let name = pod.metadata.name.clone().unwrap_or_default();
        for (k, v) in pod.metadata.labels.iter().flatten() {
            let key = (ns.clone(), k.clone(), v.clone());
            if add {
                self.pods_by_label.entry(key).or_default().insert(name.clone());
            } else if let Some(set) = self.pods_by_label.get_mut(&key) {
                set.remove(&name);
                if set.is_empty() {
                    self.pods_by_label.remove(&key);
                }
            }
        }
    }

    fn owned_slices(&self, owner: &Owner) -> Vec<EndpointSlice> {
        self.slices_by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|n| self.slices.get(&Key::new(owner.1.namespace.clone(), n.clone())))
            .map(|s| (**s).clone())
            .collect()
    }

    /// Whether the cache still lags behind a write of ours for `owner`; forgets met expectations.
    fn stale(&mut self, owner: &Owner) -> bool {
        let Some(exp) = self.expectations.get_mut(owner) else {
            return false;
        };
        let ns = owner.1.namespace.clone();
        let slices = &self.slices;
        exp.retain(|name, e| {
            let cached = slices.get(&Key::new(ns.clone(), name.clone()));
            match (e, cached) {
                (Expect::Version(_), None) => true,
                (Expect::Version(v), Some(s)) => version(&s.metadata) < *v,
                (Expect::Deleted, c) => c.is_some(),
            }
        });
        let stale = !exp.is_empty();
        if !stale {
            self.expectations.remove(owner);
        }
        stale
    }

    /// Whether the cache still lags behind a write of ours to the Endpoints `key`; forgets a met
    /// expectation.
    fn endpoints_stale(&mut self, key: &Key) -> bool {
        let Some(e) = self.endpoints_expected.get(key) else {
            return false;
        };
        let cached = self.endpoints.get(key);
        let stale = match (e, cached) {
            (Expect::Version(_), None) => true,
            (Expect::Version(v), Some(ep)) => version(&ep.metadata) < *v,
            (Expect::Deleted, c) => c.is_some(),
        };
        if !stale {
            self.endpoints_expected.remove(key);
        }
        stale
    }
}

/// One kind of object the cache indexes: how an informer's object enters and leaves the cache, and
/// what it queues.
trait Indexed: svcnet_informer::Object {
    fn key(&self) -> Key {
        key_of(self.meta())
    }
    fn apply(sh: &Shared, c: &mut Cache, obj: Arc<Self>);
    fn delete(sh: &Shared, c: &mut Cache, obj: &Self);
}

impl Indexed for Service {
    fn apply(sh: &Shared, c: &mut Cache, obj: Arc<Self>) {
        let k = obj.key();
        if c.services.get(&k).is_some_and(|old| **old == *obj) {
            return;
        }
        c.services_by_ns
            .entry(k.namespace.clone())
            .or_default()
            .insert(k.name.clone());
        c.services.insert(k.clone(), obj);
        sh.slices_q.add(k.clone());
        sh.endpoints_q.add(k.clone());
        sh.mirror_q.add(k);
    }
    fn delete(sh: &Shared, c: &mut Cache, obj: &Self) {
        let k = obj.key();
        c.services.remove(&k);
        if let Some(s) = c.services_by_ns.get_mut(&k.namespace) {
            s.remove(&k.name);
        }
        c.endpoints_orphan_check.insert(k.clone());
        sh.slices_q.add(k.clone());
        sh.endpoints_q.add(k.clone());
        sh.mirror_q.add(k);
    }
}

fn pod_node(p: &Pod) -> String {
    p.spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .unwrap_or_default()
}

/// What [`pod_projection`] and the reconcilers read of a pod is kept by [`crate::trim_shared_pod`].
impl Indexed for Pod {
    fn apply(sh: &Shared, c: &mut Cache, obj: Arc<Self>) {
        let k = obj.key();
        let mut queue = c.matching_services(&obj);
        if let Some(old) = c.pods.get(&k).cloned() {
            if pod_projection(&old) == pod_projection(&obj) {
                c.pods.insert(k, obj);
                return;
            }
            queue.extend(c.matching_services(&old));
            if let Some(s) = c.pods_by_node.get_mut(&pod_node(&old)) {
                s.remove(&k);
            }
            c.index_labels(&old, false);
        }
        c.index_labels(&obj, true);
        c.pods_by_ns
            .entry(k.namespace.clone())
            .or_default()
            .insert(k.name.clone());
        c.pods_by_node
            .entry(pod_node(&obj))
            .or_default()
            .insert(k.clone());
        c.pods.insert(k, obj);
        for s in queue {
            sh.slices_q.add(s.clone());
            sh.endpoints_q.add(s);
        }
    }
    fn delete(sh: &Shared, c: &mut Cache, obj: &Self) {
        let k = obj.key();
        let mut queue = c.matching_services(obj);
        if let Some(old) = c.pods.remove(&k) {
            queue.extend(c.matching_services(&old));
            if let Some(s) = c.pods_by_node.get_mut(&pod_node(&old)) {
                s.remove(&k);
            }
            c.index_labels(&old, false);
        }
        if let Some(s) = c.pods_by_ns.get_mut(&k.namespace) {
            s.remove(&k.name);
        }
        for s in queue {
            sh.slices_q.add(s.clone());
            sh.endpoints_q.add(s);
        }
    }
}

fn queue_services_on_node(sh: &Shared, c: &Cache, node: &str) {
    let mut queue = BTreeSet::new();
    for pk in c.pods_by_node.get(node).into_iter().flatten() {
        if let Some(p) = c.pods.get(pk) {
            queue.extend(c.matching_services(p));
        }
    }
    for s in queue {
        sh.slices_q.add(s);
    }
}

impl Indexed for Node {
    fn apply(sh: &Shared, c: &mut Cache, obj: Arc<Self>) {
        let k = obj.key();
        let zone = node_zone(&obj);
        let changed = c.nodes.get(&k.name) != Some(&zone);
        c.nodes.insert(k.name.clone(), zone);
        if changed {
            queue_services_on_node(sh, c, &k.name);
        }
    }
    fn delete(sh: &Shared, c: &mut Cache, obj: &Self) {
        let k = obj.key();
        c.nodes.remove(&k.name);
        queue_services_on_node(sh, c, &k.name);
    }
}

fn queue_owner(sh: &Shared, owner: &Owner) {
    match owner.0.as_str() {
        CONTROLLER_NAME => sh.slices_q.add(owner.1.clone()),
        mirroring::MIRROR_CONTROLLER_NAME => sh.mirror_q.add(owner.1.clone()),
        _ => {}
    }
}

impl Indexed for EndpointSlice {
    fn apply(sh: &Shared, c: &mut Cache, obj: Arc<Self>) {
        let k = obj.key();
        let new_owner = slice_owner(&obj);
        let old_owner = c.slices.get(&k).and_then(|s| slice_owner(s));
        if let Some(o) = &old_owner
            && old_owner != new_owner
        {
            if let Some(s) = c.slices_by_owner.get_mut(o) {
                s.remove(&k.name);
            }
            queue_owner(sh, o);
        }
        let v = version(&obj.metadata);
        c.slices.insert(k.clone(), obj);
        let Some(o) = new_owner else {
            return;
        };
        c.slices_by_owner
            .entry(o.clone())
            .or_default()
            .insert(k.name.clone());
        // The echo of our own write needs no sync; anything else (a user's edit) does.
        let ours = c
            .expectations
            .get(&o)
            .and_then(|e| e.get(&k.name))
            .is_some_and(|e| matches!(e, Expect::Version(w) if v <= *w));
        if ours {
            if let Some(e) = c.expectations.get_mut(&o) {
                e.remove(&k.name);
            }
        } else {
            queue_owner(sh, &o);
        }
    }
    fn delete(sh: &Shared, c: &mut Cache, obj: &Self) {
        let k = obj.key();
        let cached_owner = c.slices.remove(&k).and_then(|s| slice_owner(&s));
        for o in cached_owner.into_iter().chain(slice_owner(obj)) {
            if let Some(s) = c.slices_by_owner.get_mut(&o) {
                s.remove(&k.name);
            }
            let expected = c
                .expectations
                .get_mut(&o)
                .and_then(|e| e.remove(&k.name))
                .is_some_and(|e| e == Expect::Deleted);
            if !expected {
                queue_owner(sh, &o);
            }
        }
    }
}

impl Indexed for Endpoints {
    fn apply(sh: &Shared, c: &mut Cache, obj: Arc<Self>) {
        let k = obj.key();
        // The first list: Endpoints whose Service went away while no controller ran are leftovers
        // (kube's `checkLeftoverEndpoints`; leader-election locks never are).
        let first_list = *sh.synced.borrow() & ENDPOINTS_BIT == 0;
        if first_list && !is_leader_lock(&obj) {
            c.endpoints_orphan_check.insert(k.clone());
        }
        c.endpoints.insert(k.clone(), obj);
        sh.mirror_q.add(k.clone());
        // Also heals edits of controller-managed Endpoints (a sync without a selector Service and no
        // orphan check does nothing).
        sh.endpoints_q.add(k);
    }
    fn delete(sh: &Shared, c: &mut Cache, obj: &Self) {
        let k = obj.key();
        c.endpoints.remove(&k);
        sh.mirror_q.add(k.clone());
        sh.endpoints_q.add(k);
    }
}

/// Most events taken into the cache under one lock (a list arrives as a burst).
const BATCH: usize = 1024;

/// Feeds one informer's events into the cache until it ends. A relist's deletions of vanished objects
/// come as events like any other; its `Listed` marks the kind's cache complete.
async fn follow<K: Indexed>(mut events: Subscription<K>, shared: Arc<Shared>, bit: u8) {
    while let Some(first) = events.recv().await {
        let mut listed = false;
        {
            let mut c = shared.lock();
            let mut next = Some(first);
            let mut n = 0;
            while let Some(ev) = next.take() {
                match ev {
                    Event::Apply { obj, .. } => K::apply(&shared, &mut c, obj),
                    Event::Delete(obj) => K::delete(&shared, &mut c, &obj),
                    Event::Listed => listed = true,
                }
                n += 1;
                if n < BATCH {
                    next = events.try_recv();
                }
            }
        }
        if listed {
            shared.synced.send_modify(|b| *b |= bit);
            debug!(kind = %K::kind(&()), "list complete");
        }
    }
}

/// Takes keys off `queue` one at a time (so a key is never synced twice at once) and retries failures
/// with per-key exponential backoff.
async fn worker<F, Fut>(mut synced: watch::Receiver<u8>, queue: WorkQueue, name: &'static str, sync: F)
where
    F: Fn(Key) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    // Like kube's WaitForCacheSync: acting on a partial cache would delete what is merely unseen.
    if synced.wait_for(|b| *b == ALL_SYNCED).await.is_err() {
        return;
    }
    let mut failures: HashMap<Key, u32> = HashMap::new();
    loop {
        let key = queue.next().await;
        match sync(key.clone()).await {
            Ok(()) => {
                failures.remove(&key);
            }
            Err(e) => {
                let n = failures.entry(key.clone()).or_insert(0);
                *n += 1;
                let delay = match e {
                    // The watch is about to deliver our write; look again shortly.
                    Error::Stale => Duration::from_millis(20 << (*n).min(6)),
                    _ => Duration::from_millis(250 << (*n).min(7)),
                };
                if matches!(e, Error::Stale) {
                    debug!(controller = name, service = %key, "cache stale; retrying");
                } else {
                    warn!(controller = name, service = %key, error = %e, retry_in = ?delay, "sync failed");
                }
                queue.add_after(key, delay);
            }
        }
    }
}

struct Controllers {
    client: Client,
    cfg: EndpointSliceConfig,
    shared: Arc<Shared>,
}

fn is_api(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl Controllers {
    async fn sync_slices(&self, key: &Key) -> Result<(), Error> {
        let started = Instant::now();
        let res = self.sync_slices_inner(key).await;
        let m = &self.cfg.metrics;
        m.sync_duration.observe(started.elapsed().as_secs_f64());
        m.sync(match &res {
            Ok(()) => "success",
            Err(Error::Stale) => "stale",
            Err(_) => "error",
        });
        res
    }

    async fn sync_slices_inner(&self, key: &Key) -> Result<(), Error> {
        let owner: Owner = (CONTROLLER_NAME.to_owned(), key.clone());
        let (svc, pods, existing, nodes, trigger) = {
            let mut c = self.shared.lock();
            let Some(svc) = c.services.get(key).cloned() else {
                // The garbage collector deletes the slices through their ownerReferences.
                c.slice_triggers.seen.remove(key);
                return Ok(());
            };
            let external = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
            if external || selector(&svc).is_none() {
                // Selector-less Services get user-managed (or mirrored) slices.
                return Ok(());
            }
            if c.stale(&owner) {
                return Err(Error::Stale);
            }
            let pods = c.selected_pods(&svc);
            let existing = c.owned_slices(&owner);
            let nodes: NodeZones = pods
                .iter()
                .map(|p| pod_node(p))
                .filter_map(|n| c.nodes.get(&n).map(|z| (n, z.clone())))
                .collect();
            let trigger = c.slice_triggers.compute(&svc, key, &pods);
            (svc, pods, existing, nodes, trigger)
        };
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        let plan = reconciler::reconcile(
            &svc,
            &reconciler::Inputs {
                pods: &pod_refs,
                nodes: &nodes,
                existing: &existing,
                max_endpoints: self.cfg.max_endpoints_per_slice,
                trigger_time: trigger,
            },
        );
        let m = &self.cfg.metrics;
        m.added_per_sync.observe(plan.added as f64);
        m.removed_per_sync.observe(plan.removed as f64);
        let wrote = !plan.is_empty();
        let terminating = svc.metadata.deletion_timestamp.is_some();
        let missing = plan.missing_nodes.clone();
        self.execute(&owner, plan, terminating, &m.changes).await?;
        if wrote && let Some(t) = trigger {
            let lag = jiff::Timestamp::now().duration_since(t);
            m.ready_to_slice.observe(lag.as_secs_f64().max(0.0));
        }
        if !missing.is_empty() {
            return Err(Error::MissingNodes(missing));
        }
        Ok(())
    }

    /// Carries out a plan, recording what the cache must show before the next sync of `owner`.
    async fn execute(
        &self,
        owner: &Owner,
        plan: Plan,
        owner_terminating: bool,
        changes: &prometheus_client::metrics::family::Family<
            OperationLabels,
            prometheus_client::metrics::counter::Counter,
        >,
    ) -> Result<(), Error> {
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), &owner.1.namespace);
        let pp = PostParams::default();
        let expect = |name: Option<String>, e: Expect| {
            if let Some(name) = name {
                self.shared
                    .lock()
                    .expectations
                    .entry(owner.clone())
                    .or_default()
                    .insert(name, e);
            }
        };
        for s in plan.update {
            let name = s.metadata.name.clone().unwrap_or_default();
            let done = api.replace(&name, &pp, &s).await?;
            debug!(service = %owner.1, slice = %name, endpoints = done.endpoints.len(), "EndpointSlice updated");
            expect(
                done.metadata.name.clone(),
                Expect::Version(version(&done.metadata)),
            );
            EndpointSliceMetrics::change(changes, "update");
        }
        // Creating while the owner is being deleted would race the garbage collector.
        if !owner_terminating {
            for s in plan.create {
                match api.create(&pp, &s).await {
                    Ok(done) => {
                        debug!(service = %owner.1, slice = ?done.metadata.name, endpoints = done.endpoints.len(), "EndpointSlice created");
                        expect(
                            done.metadata.name.clone(),
                            Expect::Version(version(&done.metadata)),
                        );
                        EndpointSliceMetrics::change(changes, "create");
                    }
                    // A terminating namespace refuses creates until it is gone; nothing to do.
                    Err(e) if is_api(&e, 403) => {
                        debug!(service = %owner.1, error = %e, "EndpointSlice create refused");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        for s in plan.delete {
            let name = s.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {
                    expect(Some(name), Expect::Deleted);
                    EndpointSliceMetrics::change(changes, "delete");
                }
                Err(e) if is_api(&e, 404) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    async fn sync_endpoints(&self, key: &Key) -> Result<(), Error> {
        let api: Api<Endpoints> = Api::namespaced(self.client.clone(), &key.namespace);
        let changes = &self.cfg.metrics.endpoints_changes;
        let snapshot = {
            let mut c = self.shared.lock();
            if c.endpoints_stale(key) {
                return Err(Error::Stale);
            }
            let current = c.endpoints.get(key).cloned();
            let orphan_check = c.endpoints_orphan_check.remove(key);
            match c.services.get(key).cloned() {
                // No Service and no reason to look: user-managed Endpoints, left alone.
                None if !orphan_check => return Ok(()),
                None => {
                    c.endpoints_triggers.seen.remove(key);
                    Err(current)
                }
                Some(svc) if selector(&svc).is_none() => return Ok(()),
                Some(svc) => {
                    let pods = c.selected_pods(&svc);
                    let trigger = c.endpoints_triggers.compute(&svc, key, &pods);
                    Ok((svc, pods, current, trigger))
                }
            }
        };
        let (svc, pods, current, trigger) = match snapshot {
            Ok(s) => s,
            Err(current) => {
                // The Service was deleted (or is gone at start-up): so are its Endpoints, whoever
                // wrote them, except leader-election locks. Deleted by name even when the cache has
                // not shown them yet, as kube does.
                if current.as_deref().is_some_and(is_leader_lock) {
                    return Ok(());
                }
                match api.delete(&key.name, &DeleteParams::default()).await {
                    Ok(_) => {
                        EndpointSliceMetrics::change(changes, "delete");
                        if current.is_some() {
                            self.expect_endpoints(key, Expect::Deleted);
                        }
                    }
                    Err(e) if is_api(&e, 404) => {}
                    Err(e) => {
                        // Tried again with the queue's back-off: the reason to look must survive.
                        self.shared.lock().endpoints_orphan_check.insert(key.clone());
                        return Err(e.into());
                    }
                }
                return Ok(());
            }
        };
        let pod_refs: Vec<&Pod> = pods.iter().map(|p| &**p).collect();
        let Some(want) = endpoints::desired_endpoints(&svc, &pod_refs, current.as_deref(), trigger) else {
            return Ok(());
        };
        let pp = PostParams::default();
        let written = if current.is_some() {
            let done = api.replace(&key.name, &pp, &want).await?;
            EndpointSliceMetrics::change(changes, "update");
            done
        } else {
            let done = api.create(&pp, &want).await?;
            EndpointSliceMetrics::change(changes, "create");
            done
        };
        self.expect_endpoints(key, Expect::Version(version(&written.metadata)));
        debug!(service = %key, "Endpoints written");
        Ok(())
    }

    fn expect_endpoints(&self, key: &Key, e: Expect) {
        self.shared.lock().endpoints_expected.insert(key.clone(), e);
    }

    async fn sync_mirroring(&self, key: &Key) -> Result<(), Error> {
        let owner: Owner = (mirroring::MIRROR_CONTROLLER_NAME.to_owned(), key.clone());
        let changes = &self.cfg.metrics.mirroring_changes;
        let (ep, existing) = {
            let mut c = self.shared.lock();
            let existing = c.owned_slices(&owner);
            let svc = c.services.get(key);
            let ep = c.endpoints.get(key).cloned();
            let mirror = svc.is_some_and(|s| selector(s).is_none())
                && ep.as_deref().is_some_and(mirroring::should_mirror);
            if mirror && c.stale(&owner) {
                return Err(Error::Stale);
            }
            (ep.filter(|_| mirror), existing)
        };
        let Some(ep) = ep else {
            // Not (or no longer) mirrored: the Service got a selector, or the Endpoints went away or
            // were marked skip-mirror.
            let plan = Plan {
                delete: existing,
                ..Plan::default()
            };
            return self.execute(&owner, plan, false, changes).await;
        };
        let (plan, invalid, too_many) =
            mirroring::reconcile(&ep, &existing, self.cfg.mirroring_max_endpoints_per_subset);
        if plan.is_empty() {
            return Ok(());
        }
        let terminating = ep.metadata.deletion_timestamp.is_some();
        self.execute(&owner, plan, terminating, changes).await?;
        if invalid > 0 || too_many > 0 {
            self.warn_mirroring(&ep, invalid, too_many).await;
        }
        Ok(())
    }

    /// kube's mirroring Events about addresses it could not mirror.
    async fn warn_mirroring(&self, ep: &Endpoints, invalid: usize, too_many: usize) {
        let mut rec = crate::events::Recorder::new(self.client.clone(), "endpointslice-mirroring-controller");
        let about = crate::events::Involved::of("v1", "Endpoints", &ep.metadata);
        if invalid > 0 {
            let msg = format!("Skipped {invalid} invalid IP addresses when mirroring to EndpointSlices");
            rec.record(&about, "Warning", "InvalidIPAddress", &msg).await;
        }
        if too_many > 0 {
            let msg = format!(
                "A max of {} addresses can be mirrored to EndpointSlices per Endpoints subset. {too_many} addresses were skipped",
                self.cfg.mirroring_max_endpoints_per_subset
            );
            rec.record(&about, "Warning", "TooManyAddressesToMirror", &msg)
                .await;
        }
    }
}

#[cfg(test)]
mod tests;
