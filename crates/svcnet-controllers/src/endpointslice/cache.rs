//! The controllers' shared cache: the informers' objects indexed as the controllers read them (pods by
//! namespace and node, slices by owning Service), and how each kind's events update it and queue the
//! Services they touch.

use super::topology::{NodeCapacity, ZoneRatios, hints_enabled, zone_ratios};
use super::*;

pub(super) fn node_zone(n: &Node) -> Option<String> {
    n.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_ZONE))
        .cloned()
}

/// Per-Service memory of the pod trigger times already reflected (kube's `TriggerTimeTracker`).
#[derive(Default)]
pub(super) struct TriggerTracker {
    pub(super) seen: HashMap<Key, HashMap<String, Option<jiff::Timestamp>>>,
}

impl TriggerTracker {
    /// The earliest change not yet reflected: a pod's readiness change, or the Service's creation
    /// on its first sync.
    pub(super) fn compute(&mut self, svc: &Service, key: &Key, pods: &[Arc<Pod>]) -> Option<jiff::Timestamp> {
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
pub(super) struct Cache {
    pub(super) services: HashMap<Key, Arc<Service>>,
    /// (namespace, label key, label value) of each Service's first selector term → Service names: a
    /// pod's Services are found from its own labels instead of matching every Service of the namespace
    /// (10,000 Services × 20,000 pod events made that the server's hottest loop).
    pub(super) services_by_anchor: HashMap<(String, String, String), BTreeSet<String>>,
    pub(super) pods: HashMap<Key, Arc<Pod>>,
    pub(super) pods_by_ns: HashMap<String, BTreeSet<String>>,
    /// (namespace, label key, label value) → pod names: a Service's pods are found from its selector's
    /// smallest label set instead of scanning the namespace (which cost a third of the server's CPU at
    /// 10,000 pods in the benchmark).
    pub(super) pods_by_label: HashMap<(String, String, String), BTreeSet<String>>,
    pub(super) pods_by_node: HashMap<String, BTreeSet<Key>>,
    pub(super) nodes: NodeZones,
    /// What `topology-mode: Auto` reads of each node, and the zone shares made of it.
    pub(super) node_capacity: HashMap<String, NodeCapacity>,
    pub(super) zone_ratios: Option<ZoneRatios>,
    /// Services whose endpoints carry `topology-mode: Auto` hints (kube's `hintsPopulatedByService`).
    pub(super) auto_hints: HashSet<Key>,
    pub(super) slices: HashMap<Key, Arc<EndpointSlice>>,
    pub(super) slices_by_owner: HashMap<Owner, BTreeSet<String>>,
    pub(super) endpoints: HashMap<Key, Arc<Endpoints>>,
    pub(super) expectations: HashMap<Owner, HashMap<String, Expect>>,
    /// The Endpoints this controller wrote or deleted that the cache has not caught up with yet (kube's
    /// `staleEndpointsTracker`): a sync on the older copy would only be refused with a conflict.
    pub(super) endpoints_expected: HashMap<Key, Expect>,
    /// Endpoints to delete if no Service of their name exists when synced: those of a Service just
    /// deleted, and every one of the first list (kube's `checkLeftoverEndpoints`, once at start-up).
    /// Any other Endpoints without a Service is user-managed and left alone, as in Kubernetes.
    pub(super) endpoints_orphan_check: HashSet<Key>,
    pub(super) slice_triggers: TriggerTracker,
    pub(super) endpoints_triggers: TriggerTracker,
}

impl Cache {
    pub(super) fn matching_services(&self, pod: &Pod) -> BTreeSet<Key> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        // A Service selects the pod only if the pod carries its anchor term, so the candidates are
        // the Services anchored on one of the pod's labels.
        pod.metadata
            .labels
            .iter()
            .flatten()
            .filter_map(|(k, v)| self.services_by_anchor.get(&(ns.clone(), k.clone(), v.clone())))
            .flatten()
            .map(|n| Key::new(ns.clone(), n.clone()))
            .filter(|k| self.services.get(k).is_some_and(|s| selects(s, pod)))
            .collect()
    }

    /// The index key of a Service's selector (its first term; selectors are sorted maps), if it selects
    /// anything.
    fn anchor(svc: &Service) -> Option<(String, String, String)> {
        let (k, v) = selector(svc)?.iter().next()?;
        Some((
            svc.metadata.namespace.clone().unwrap_or_default(),
            k.clone(),
            v.clone(),
        ))
    }

    /// Puts `svc` into the Service index (`add`) or takes it out.
    pub(super) fn index_service(&mut self, svc: &Service, add: bool) {
        let Some(anchor) = Self::anchor(svc) else {
            return;
        };
        let name = svc.metadata.name.clone().unwrap_or_default();
        if add {
            self.services_by_anchor.entry(anchor).or_default().insert(name);
        } else if let Some(set) = self.services_by_anchor.get_mut(&anchor) {
            set.remove(&name);
            if set.is_empty() {
                self.services_by_anchor.remove(&anchor);
            }
        }
    }

    pub(super) fn selected_pods(&self, svc: &Service) -> Vec<Arc<Pod>> {
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

    pub(super) fn index_labels(&mut self, pod: &Pod, add: bool) {
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

    pub(super) fn owned_slices(&self, owner: &Owner) -> Vec<EndpointSlice> {
        self.slices_by_owner
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|n| self.slices.get(&Key::new(owner.1.namespace.clone(), n.clone())))
            .map(|s| (**s).clone())
            .collect()
    }

    /// Whether the cache still lags behind a write of ours for `owner`; forgets met expectations.
    pub(super) fn stale(&mut self, owner: &Owner) -> bool {
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
    pub(super) fn endpoints_stale(&mut self, key: &Key) -> bool {
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
pub(super) trait Indexed: svcnet_informer::Object {
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
        if let Some(old) = c.services.get(&k).cloned() {
            c.index_service(&old, false);
        }
        c.index_service(&obj, true);
        c.services.insert(k.clone(), obj);
        sh.slices_q.add(k.clone());
        sh.endpoints_q.add(k.clone());
        sh.mirror_q.add(k);
    }
    fn delete(sh: &Shared, c: &mut Cache, obj: &Self) {
        let k = obj.key();
        if let Some(old) = c.services.remove(&k) {
            c.index_service(&old, false);
        }
        c.endpoints_orphan_check.insert(k.clone());
        sh.slices_q.add(k.clone());
        sh.endpoints_q.add(k.clone());
        sh.mirror_q.add(k);
    }
}

pub(super) fn pod_node(p: &Pod) -> String {
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

pub(super) fn queue_services_on_node(sh: &Shared, c: &Cache, node: &str) {
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
        let capacity = NodeCapacity::of(&obj);
        if c.node_capacity.get(&k.name) != Some(&capacity) {
            c.node_capacity.insert(k.name, capacity);
            refresh_zone_ratios(sh, c);
        }
    }
    fn delete(sh: &Shared, c: &mut Cache, obj: &Self) {
        let k = obj.key();
        c.nodes.remove(&k.name);
        queue_services_on_node(sh, c, &k.name);
        if c.node_capacity.remove(&k.name).is_some() {
            refresh_zone_ratios(sh, c);
        }
    }
}

/// Recomputes the zones' CPU shares; when they change, every Service that asks for `topology-mode: Auto`
/// hints is synced again (kube's `checkNodeTopologyDistribution`, which resyncs the overloaded ones:
/// the reconcile keeps hints that still fit, so resyncing all of them churns nothing more).
fn refresh_zone_ratios(sh: &Shared, c: &mut Cache) {
    let ratios = zone_ratios(c.node_capacity.values());
    if ratios == c.zone_ratios {
        return;
    }
    c.zone_ratios = ratios;
    for (k, svc) in &c.services {
        if hints_enabled(svc.metadata.annotations.as_ref()) || c.auto_hints.contains(k) {
            sh.slices_q.add(k.clone());
        }
    }
}

pub(super) fn queue_owner(sh: &Shared, owner: &Owner) {
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
