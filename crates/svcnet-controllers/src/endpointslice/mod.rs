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
//! tokio::spawn(run_endpointslice_controllers(svcnet_controllers::Clients::single(client), informers, cfg));
//! # }
//! ```

mod cache;
pub mod endpoints;
mod metrics;
pub mod mirroring;
pub mod reconciler;
mod sync;
pub mod topology;

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
use cache::{Cache, Indexed};
pub use metrics::{EndpointSliceMetrics, OperationLabels, ResultLabels, metrics_text};
use reconciler::{CONTROLLER_NAME, LABEL_MANAGED_BY, LABEL_SERVICE_NAME, LABEL_ZONE, NodeZones, Plan};
use sync::Controllers;

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
///
/// Each writes as itself ([`crate::identity::ENDPOINTSLICE`], [`crate::identity::ENDPOINT`],
/// [`crate::identity::ENDPOINTSLICE_MIRRORING`]); the mirroring controller's role may list both
/// EndpointSlices and Endpoints, so the two informers watch through it.
pub async fn run_endpointslice_controllers(
    clients: crate::Clients,
    informers: SharedInformers,
    cfg: EndpointSliceConfig,
) {
    let client = clients.get(crate::identity::ENDPOINTSLICE);
    let mirroring_client = clients.get(crate::identity::ENDPOINTSLICE_MIRRORING);
    let slices = Informer::<EndpointSlice>::new(crate::trim_managed_fields);
    let endpoints = Informer::<Endpoints>::new(crate::trim_managed_fields);
    slices.spawn(Api::all(mirroring_client.clone()));
    endpoints.spawn(Api::all(mirroring_client.clone()));
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
        client,
        endpoints_client: clients.get(crate::identity::ENDPOINT),
        mirroring_client,
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

#[cfg(test)]
mod tests;
