//! Shared informers: "list, then watch, and drop what a relist no longer shows", written once for every
//! API client in svcnet (controllers, cluster DNS, the proxier), in the spirit of kube-runtime's reflector
//! and client-go's shared informers.
//!
//! An [`Informer`] runs **one watcher per resource** (kube's [`watcher`] with its default backoff) and
//! keeps **one cache** of it, a [`Store`]: a single writer (the informer) and many readers sharing
//! `Arc<K>`. Several parts of a process share one informer: each calls [`Informer::subscribe`] and gets
//! its own [`Subscription`], a stream of [`Event`]s, so one Pod watch feeds every controller that reads
//! pods (kube-controller-manager's `SharedInformerFactory`).
//!
//! **"The list is complete" is explicit.** A (re)list is buffered and swapped into the store whole when
//! it ends, as kube's `reflector::store::Writer` does: a reader never sees a half-listed cache. Until the
//! first list is in, the store is empty and [`Store::is_synced`] is false ([`Store::wait_until_synced`]
//! waits for it); subscribers get nothing before it. At the end of every (re)list, subscribers get
//! [`Event::Delete`] for each cached object the list no longer has (with the last object known), then
//! [`Event::Apply`] for every listed object (with the object it replaces, if any), then one
//! [`Event::Listed`]. Between lists, each watch event becomes one `Apply` or `Delete`. A subscriber that
//! counts `Listed` events, or checks [`Store::is_synced`] of each store it reads, knows when its caches
//! are complete; one that acts only after its own first `Listed` never acts on a partial view.
//!
//! **Ordering.** An event is sent after the store shows it, so a subscriber that reads the store on an
//! event sees at least that state. Each subscription receives every event in order, unbounded (no event
//! is ever dropped for a slow reader). A subscription taken late first gets the current store contents
//! as `Apply` events and, if the store is synced, one `Listed`: every subscriber sees the same history
//! from its start.
//!
//! **Memory.** [`Informer::new`] takes a trim function, applied to each object as it arrives, so the
//! one cache keeps only the fields its readers read (e.g. no `managedFields`, no container images).
//!
//! ```no_run
//! # async fn f(client: kube::Client) {
//! use k8s_openapi::api::core::v1::{Pod, Service};
//! use svcnet_informer::{Event, Informer};
//! let pods = Informer::<Pod>::new(|p| p.metadata.managed_fields = None);
//! let services = Informer::<Service>::new(|_| {});
//! // Subscribe before or after starting: a late subscriber is replayed the store.
//! let mut pod_events = pods.subscribe();
//! let mut svc_events = services.subscribe();
//! pods.spawn(kube::Api::all(client.clone()));
//! services.spawn(kube::Api::all(client));
//! use futures::StreamExt;
//! let mut listed = (false, false);
//! loop {
//!     tokio::select! {
//!         Some(e) = pod_events.next() => match e {
//!             Event::Apply { obj, old } => { /* obj changed, old was cached before */ }
//!             Event::Delete(obj) => { /* gone (also: vanished from a relist) */ }
//!             Event::Listed => listed.0 = true,
//!         },
//!         Some(e) = svc_events.next() => if let Event::Listed = e { listed.1 = true },
//!     }
//!     if listed == (true, true) { /* both initial lists are in: act */ }
//! }
//! # }
//! ```

pub mod queue;

use std::collections::HashMap;
use std::fmt::Debug;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

pub use kube::runtime::reflector::ObjectRef;
pub use queue::{Key, WorkQueue};

/// What an informer can cache: a typed Kubernetes object.
pub trait Object:
    Resource<DynamicType = ()> + Clone + Debug + k8s_openapi::serde::de::DeserializeOwned + Send + Sync + 'static
{
}

impl<K> Object for K where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// One change an informer's subscribers see (after the [`Store`] shows it).
#[derive(Debug)]
pub enum Event<K> {
    /// An object was added or changed: a watch event, or an object of a (re)list that just completed.
    Apply {
        /// The object now cached.
        obj: Arc<K>,
        /// The object it replaced in the cache, if it was cached (the same `Arc` a subscriber saw before;
        /// during a relist, possibly equal to `obj`).
        old: Option<Arc<K>>,
    },
    /// An object is gone: deleted (the watch's last copy of it), or missing from a (re)list that just
    /// completed (the last cached copy).
    Delete(Arc<K>),
    /// A (re)list completed: the store equals it, and every `Apply`/`Delete` it caused came before this.
    /// The first one means the initial list is in.
    Listed,
}

impl<K> Clone for Event<K> {
    fn clone(&self) -> Self {
        match self {
            Event::Apply { obj, old } => Event::Apply {
                obj: obj.clone(),
                old: old.clone(),
            },
            Event::Delete(o) => Event::Delete(o.clone()),
            Event::Listed => Event::Listed,
        }
    }
}

impl<K> Event<K> {
    /// The object an `Apply` or `Delete` is about.
    pub fn object(&self) -> Option<&Arc<K>> {
        match self {
            Event::Apply { obj, .. } | Event::Delete(obj) => Some(obj),
            Event::Listed => None,
        }
    }
}

type Map<K> = HashMap<ObjectRef<K>, Arc<K>>;

struct StoreInner<K: Object> {
    map: RwLock<Map<K>>,
    synced: watch::Sender<bool>,
}

/// The read side of an informer's cache: every object of the last complete list plus the watch events
/// since. Cheap to clone (shared); reads take a short read lock and hand out `Arc`s.
pub struct Store<K: Object> {
    inner: Arc<StoreInner<K>>,
}

impl<K: Object> Clone for Store<K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<K: Object> Store<K> {
    fn new() -> Self {
        Self {
            inner: Arc::new(StoreInner {
                map: RwLock::new(HashMap::new()),
                synced: watch::Sender::new(false),
            }),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Map<K>> {
        self.inner.map.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached object `r` names.
    pub fn get(&self, r: &ObjectRef<K>) -> Option<Arc<K>> {
        self.read().get(r).cloned()
    }

    /// The cached object `namespace/name` (`namespace` empty for a cluster-scoped kind).
    pub fn get_named(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        let r = ObjectRef::new(name);
        let r = if namespace.is_empty() {
            r
        } else {
            r.within(namespace)
        };
        self.get(&r)
    }

    /// Every cached object, in no particular order.
    pub fn state(&self) -> Vec<Arc<K>> {
        self.read().values().cloned().collect()
    }

    /// How many objects are cached.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }

    /// Whether the first list is complete (it stays true across later relists, whose results are
    /// swapped in whole).
    pub fn is_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Waits until the first list is complete (kube's `WaitForCacheSync`). Never returns if the
    /// informer is never run.
    pub async fn wait_until_synced(&self) {
        let mut rx = self.inner.synced.subscribe();
        // The sender lives as long as the store, so this only ends by seeing `true`.
        let _ = rx.wait_for(|s| *s).await;
    }
}

struct WriterState<K> {
    /// The objects of the (re)list under way, swapped into the store at its end.
    relist: Option<Vec<Arc<K>>>,
    subscribers: Vec<mpsc::UnboundedSender<Event<K>>>,
}

type Trim<K> = Box<dyn Fn(&mut K) + Send + Sync>;

struct Shared<K: Object> {
    store: Store<K>,
    trim: Trim<K>,
    state: Mutex<WriterState<K>>,
}

/// Aborts the watch task when the last [`Informer`] handle goes.
struct TaskGuard(Mutex<Option<tokio::task::AbortHandle>>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        if let Some(h) = self.0.lock().unwrap_or_else(|e| e.into_inner()).take() {
            h.abort();
        }
    }
}

/// One resource's watch, cache and event fan-out. Cheap to clone (shared); the watch started by
/// [`Informer::spawn`] stops when the last clone is dropped.
pub struct Informer<K: Object> {
    shared: Arc<Shared<K>>,
    task: Arc<TaskGuard>,
}

impl<K: Object> Clone for Informer<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            task: self.task.clone(),
        }
    }
}

impl<K: Object> Informer<K> {
    /// An informer that is not running yet; `trim` cuts each object down as it arrives, before it is
    /// cached (drop what no reader reads: every object of the kind is kept).
    pub fn new(trim: impl Fn(&mut K) + Send + Sync + 'static) -> Self {
        Self {
            shared: Arc::new(Shared {
                store: Store::new(),
                trim: Box::new(trim),
                state: Mutex::new(WriterState {
                    relist: None,
                    subscribers: Vec::new(),
                }),
            }),
            task: Arc::new(TaskGuard(Mutex::new(None))),
        }
    }

    /// The cache (readers only).
    pub fn store(&self) -> Store<K> {
        self.shared.store.clone()
    }

    /// A new stream of this informer's events. It starts with the current store as `Apply` events
    /// (and `Listed` if the store is synced), so subscribing before or after [`Informer::spawn`] is the
    /// same. Dropping the subscription unsubscribes.
    pub fn subscribe(&self) -> Subscription<K> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut st = self.lock();
        // Under the writer's lock, so no event falls between the replay and the subscription.
        for obj in self.shared.store.state() {
            let _ = tx.send(Event::Apply { obj, old: None });
        }
        if self.shared.store.is_synced() {
            let _ = tx.send(Event::Listed);
        }
        st.subscribers.push(tx);
        Subscription { rx }
    }

    /// Starts watching `api` (every object it reaches, [`watcher::Config::default`]) on a task of its
    /// own, unless this informer already runs. The task ends when the last clone of this informer is
    /// dropped.
    pub fn spawn(&self, api: Api<K>) {
        self.spawn_with(api, watcher::Config::default());
    }

    /// [`Informer::spawn`] with a watcher configuration (label or field selectors, …).
    pub fn spawn_with(&self, api: Api<K>, cfg: watcher::Config) {
        let mut task = self.task.0.lock().unwrap_or_else(|e| e.into_inner());
        if task.is_some() {
            return;
        }
        let this = Informer {
            shared: self.shared.clone(),
            // The task must not keep itself alive.
            task: Arc::new(TaskGuard(Mutex::new(None))),
        };
        let stream = watcher::watcher(api, cfg).default_backoff();
        *task = Some(tokio::spawn(async move { this.run(stream).await }).abort_handle());
    }

    /// Feeds the informer from `events` (a watcher's stream, or a test's) until it ends. Errors are
    /// logged: kube's watcher retries by itself (with backoff) and relists when it must.
    pub async fn run<S>(&self, events: S)
    where
        S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send,
    {
        let mut events = std::pin::pin!(events);
        while let Some(ev) = events.next().await {
            match ev {
                Ok(ev) => self.handle(ev),
                Err(e) => warn!(kind = %K::kind(&()), error = %e, "watch failed; retrying"),
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, WriterState<K>> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies one watcher event: the informer's only writer. Public so tests can drive an informer
    /// without an API server.
    pub fn handle(&self, ev: watcher::Event<K>) {
        let sh = &*self.shared;
        let mut st = self.lock();
        let write = || sh.store.inner.map.write().unwrap_or_else(|e| e.into_inner());
        match ev {
            watcher::Event::Init => st.relist = Some(Vec::new()),
            watcher::Event::InitApply(mut o) => {
                (sh.trim)(&mut o);
                st.relist.get_or_insert_with(Vec::new).push(Arc::new(o));
            }
            watcher::Event::InitDone => {
                let listed = st.relist.take().unwrap_or_default();
                let new: Map<K> = listed
                    .into_iter()
                    .map(|o| (ObjectRef::from_obj(&*o), o))
                    .collect();
                let mut old = std::mem::replace(&mut *write(), new.clone());
                let mut out = Vec::with_capacity(old.len() + new.len() + 1);
                for (r, o) in &old {
                    if !new.contains_key(r) {
                        out.push(Event::Delete(o.clone()));
                    }
                }
                for (r, o) in new {
                    out.push(Event::Apply {
                        obj: o,
                        old: old.remove(&r),
                    });
                }
                out.push(Event::Listed);
                sh.store.inner.synced.send_replace(true);
                debug!(kind = %K::kind(&()), objects = out.len() - 1, "list complete");
                for e in out {
                    broadcast(&mut st.subscribers, e);
                }
            }
            watcher::Event::Apply(mut o) => {
                (sh.trim)(&mut o);
                let obj = Arc::new(o);
                let old = write().insert(ObjectRef::from_obj(&*obj), obj.clone());
                broadcast(&mut st.subscribers, Event::Apply { obj, old });
            }
            watcher::Event::Delete(mut o) => {
                (sh.trim)(&mut o);
                write().remove(&ObjectRef::from_obj(&o));
                broadcast(&mut st.subscribers, Event::Delete(Arc::new(o)));
            }
        }
    }
}

fn broadcast<K>(subs: &mut Vec<mpsc::UnboundedSender<Event<K>>>, e: Event<K>) {
    // A closed subscription (its reader dropped) is forgotten on the next event.
    subs.retain(|s| s.send(e.clone()).is_ok());
}

/// One subscriber's stream of an informer's [`Event`]s (see the crate docs for their order).
pub struct Subscription<K> {
    rx: mpsc::UnboundedReceiver<Event<K>>,
}

impl<K> Subscription<K> {
    /// The next event; `None` once the informer is gone.
    pub async fn recv(&mut self) -> Option<Event<K>> {
        self.rx.recv().await
    }

    /// The next event if one is waiting (to apply a burst together).
    pub fn try_recv(&mut self) -> Option<Event<K>> {
        self.rx.try_recv().ok()
    }
}

impl<K> Stream for Subscription<K> {
    type Item = Event<K>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event<K>>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests;
