//! The cluster zone's data: what Services, EndpointSlices, Namespaces and Pods say, kept in the shape
//! the lookup needs and published as immutable snapshots.
//!
//! Readers never take a lock on the hot path: each serving task holds a [`ZoneReader`] that caches the
//! current snapshot and only re-reads it when a generation counter moves. The single writer
//! ([`ZoneWriter`], fed by the watchers) changes a private copy whose maps are split into shards behind
//! `Arc`s; a change clones only the shards it touches (copy-on-write), so one Service's update costs
//! that Service's records, never a rebuild of the zone.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Shards per map: enough that a copy-on-write clone of one shard stays small at 100k objects.
const SHARDS: usize = 256;

/// A port of a Service or an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSpec {
    /// The port's name (empty when unnamed).
    pub name: String,
    /// `TCP`, `UDP` or `SCTP`.
    pub protocol: String,
    /// The port number; -1 when an EndpointSlice port has none.
    pub port: i32,
}

/// How a Service is reached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceKind {
    /// A virtual IP per family (`spec.clusterIPs`).
    ClusterIp(Vec<IpAddr>),
    /// `clusterIP: None`: the endpoints are the answer.
    Headless,
    /// `type: ExternalName`: a CNAME to this name.
    ExternalName(String),
}

/// A Service as the zone needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIP, headless or ExternalName.
    pub kind: ServiceKind,
    /// `spec.ports`.
    pub ports: Vec<PortSpec>,
}

/// One ready endpoint address of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// The address.
    pub ip: IpAddr,
    /// `hostname`, when the pod named one and its subdomain is the Service.
    pub hostname: Option<String>,
}

/// An EndpointSlice as the zone needs it: only ready endpoints (unknown readiness counts as ready).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceSpec {
    /// Namespace.
    pub namespace: String,
    /// The slice's own name.
    pub name: String,
    /// The Service it belongs to (`kubernetes.io/service-name`).
    pub service: String,
    /// The slice's ports.
    pub ports: Vec<PortSpec>,
    /// Ready endpoints, one entry per address.
    pub endpoints: Vec<EndpointSpec>,
}

/// A port as stored.
#[derive(Debug)]
pub(crate) struct Port {
    pub name: Box<str>,
    pub protocol: Box<str>,
    pub port: i32,
}

impl From<&PortSpec> for Port {
    fn from(p: &PortSpec) -> Self {
        Port {
            name: p.name.as_str().into(),
            protocol: p.protocol.as_str().into(),
            port: p.port,
        }
    }
}

/// A Service as stored.
#[derive(Debug)]
pub(crate) enum Kind {
    ClusterIp(Box<[IpAddr]>),
    Headless,
    ExternalName(Box<str>),
}

#[derive(Debug)]
pub(crate) struct Svc {
    pub kind: Kind,
    pub ports: Box<[Port]>,
}

#[derive(Debug)]
pub(crate) struct Endpoint {
    pub ip: IpAddr,
    pub hostname: Option<Box<str>>,
}

#[derive(Debug)]
pub(crate) struct Slice {
    pub name: Box<str>,
    pub ports: Box<[Port]>,
    pub endpoints: Box<[Endpoint]>,
}

/// Everything under `<name>.<namespace>`: the Service (if it exists) and its slices (which may arrive
/// before it).
#[derive(Debug)]
pub(crate) struct Entry {
    /// `<name>.<namespace>`, exactly the labels a query carries before `.svc.<zone>`.
    pub key: Arc<str>,
    name_len: usize,
    pub svc: Option<Arc<Svc>>,
    pub slices: Box<[Arc<Slice>]>,
}

impl Entry {
    pub fn name(&self) -> &str {
        &self.key[..self.name_len]
    }
    pub fn namespace(&self) -> &str {
        &self.key[self.name_len + 1..]
    }
    fn endpoint_ips(&self) -> HashSet<IpAddr> {
        self.slices
            .iter()
            .flat_map(|s| s.endpoints.iter().map(|e| e.ip))
            .collect()
    }
    fn cluster_ips(&self) -> &[IpAddr] {
        match self.svc.as_deref().map(|s| &s.kind) {
            Some(Kind::ClusterIp(ips)) => ips,
            _ => &[],
        }
    }
}

/// A map split into shards behind `Arc`s: cloning it is `SHARDS` reference counts; writing clones one
/// shard at most.
pub(crate) struct Sharded<K, V> {
    hasher: RandomState,
    shards: Vec<Arc<HashMap<K, V>>>,
}

impl<K, V> Clone for Sharded<K, V> {
    fn clone(&self) -> Self {
        Sharded {
            hasher: self.hasher.clone(),
            shards: self.shards.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Sharded<K, V> {
    fn new() -> Self {
        Sharded {
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::new())).collect(),
        }
    }

    fn shard<Q: Hash + ?Sized>(&self, k: &Q) -> usize {
        (self.hasher.hash_one(k) as usize) % SHARDS
    }

    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.shards[self.shard(k)].get(k)
    }

    fn shard_mut<Q: Hash + ?Sized>(&mut self, k: &Q) -> &mut HashMap<K, V> {
        let i = self.shard(k);
        Arc::make_mut(&mut self.shards[i])
    }

    fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }
}

/// A map by address, one sharded map per family so IPv4 keys take 4 bytes, not 16.
pub(crate) struct IpIndex<V> {
    v4: Sharded<u32, V>,
    v6: Sharded<u128, V>,
}

impl<V> Clone for IpIndex<V> {
    fn clone(&self) -> Self {
        IpIndex {
            v4: self.v4.clone(),
            v6: self.v6.clone(),
        }
    }
}

impl<V: Clone> IpIndex<V> {
    fn new() -> Self {
        IpIndex {
            v4: Sharded::new(),
            v6: Sharded::new(),
        }
    }

    pub fn get(&self, ip: IpAddr) -> Option<&V> {
        match ip {
            IpAddr::V4(v4) => self.v4.get(&u32::from(v4)),
            IpAddr::V6(v6) => self.v6.get(&u128::from(v6)),
        }
    }

    /// Replaces the value at `ip` by `f(old)` (None: removed).
    fn update(&mut self, ip: IpAddr, f: impl FnOnce(Option<V>) -> Option<V>) {
        match ip {
            IpAddr::V4(v4) => {
                let k = u32::from(v4);
                let shard = self.v4.shard_mut(&k);
                if let Some(v) = f(shard.remove(&k)) {
                    shard.insert(k, v);
                }
            }
            IpAddr::V6(v6) => {
                let k = u128::from(v6);
                let shard = self.v6.shard_mut(&k);
                if let Some(v) = f(shard.remove(&k)) {
                    shard.insert(k, v);
                }
            }
        }
    }
}

/// The Services an endpoint address belongs to; almost always one.
#[derive(Clone, Debug)]
pub(crate) enum Owners {
    One(Arc<str>),
    Many(Box<[Arc<str>]>),
}

impl Owners {
    pub fn as_slice(&self) -> &[Arc<str>] {
        match self {
            Owners::One(k) => std::slice::from_ref(k),
            Owners::Many(ks) => ks,
        }
    }
}

/// Pods using an address, by namespace id and count; almost always one pod.
#[derive(Clone, Debug)]
pub(crate) enum PodNs {
    One(u32, u32),
    Many(Box<[(u32, u32)]>),
}

/// One published state of the zone.
#[derive(Clone)]
pub struct Snapshot {
    /// Every watch has listed once: until then cluster names get SERVFAIL.
    pub(crate) synced: bool,
    /// The SOA serial: the Unix time of the last change.
    pub(crate) serial: u32,
    pub(crate) entries: Sharded<Arc<str>, Arc<Entry>>,
    /// ClusterIP → the Service's key (ClusterIPs are unique).
    pub(crate) cluster_ips: IpIndex<Arc<str>>,
    /// Endpoint address → the keys of the Services it backs.
    pub(crate) endpoint_ips: IpIndex<Owners>,
    pub(crate) namespaces: Arc<HashSet<Box<str>>>,
    /// Namespace name → the id the pod index uses.
    pub(crate) ns_ids: Arc<HashMap<Box<str>, u32>>,
    pub(crate) pods: IpIndex<PodNs>,
}

impl Snapshot {
    fn new() -> Self {
        Snapshot {
            synced: false,
            serial: now_serial(),
            entries: Sharded::new(),
            cluster_ips: IpIndex::new(),
            endpoint_ips: IpIndex::new(),
            namespaces: Arc::default(),
            ns_ids: Arc::default(),
            pods: IpIndex::new(),
        }
    }

    /// Whether a pod with address `ip` exists in namespace `ns`.
    pub fn pod_exists(&self, ip: IpAddr, ns: &str) -> bool {
        let Some(&id) = self.ns_ids.get(ns) else {
            return false;
        };
        match self.pods.get(ip) {
            Some(PodNs::One(n, _)) => *n == id,
            Some(PodNs::Many(list)) => list.iter().any(|(n, _)| *n == id),
            None => false,
        }
    }

    /// Number of Services.
    pub fn service_count(&self) -> usize {
        self.entries.iter().filter(|(_, e)| e.svc.is_some()).count()
    }
}

/// A Pod's identity in the zone's bookkeeping.
pub fn pod_id(namespace: &str, name: &str) -> u64 {
    use std::hash::Hasher;
    // Fixed keys: the id must be the same for the watcher's bookkeeping and the writer's.
    let mut h = std::hash::DefaultHasher::new();
    namespace.hash(&mut h);
    name.hash(&mut h);
    h.finish()
}

fn now_serial() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as u32)
        .unwrap_or(1)
}

struct Shared {
    current: RwLock<Arc<Snapshot>>,
    generation: AtomicU64,
}

/// A serving task's view of the zone: the latest snapshot, refreshed only when it changed.
pub struct ZoneReader {
    shared: Arc<Shared>,
    cached: Arc<Snapshot>,
    generation: u64,
}

impl Clone for ZoneReader {
    fn clone(&self) -> Self {
        ZoneReader {
            shared: self.shared.clone(),
            cached: self.cached.clone(),
            generation: self.generation,
        }
    }
}

impl ZoneReader {
    /// The current snapshot. The fast path is one atomic load.
    pub fn load(&mut self) -> &Arc<Snapshot> {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.cached = self
                .shared
                .current
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            self.generation = g;
        }
        &self.cached
    }
}

/// Pod bookkeeping the writer alone needs: which addresses a pod holds, to undo them later.
#[derive(Clone, PartialEq, Eq)]
struct PodRec {
    ns: u32,
    v4: Option<std::net::Ipv4Addr>,
    /// Boxed: rare, and 8 bytes instead of 17 for every IPv4-only pod.
    v6: Option<Box<std::net::Ipv6Addr>>,
}

impl PodRec {
    fn ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.v4
            .map(IpAddr::V4)
            .into_iter()
            .chain(self.v6.as_deref().map(|v6| IpAddr::V6(*v6)))
    }
}

/// The zone's single writer. Changes accumulate in a private copy; [`ZoneWriter::publish`] makes them
/// visible to every reader at once.
pub struct ZoneWriter {
    shared: Arc<Shared>,
    next: Snapshot,
    dirty: bool,
    /// EndpointSlice (`namespace/name`) → the entry key it was filed under.
    slice_owner: HashMap<String, Arc<str>>,
    /// Pod (hash of `namespace/name`, see [`pod_id`]) → its addresses. A hash, not the name, keeps this
    /// map small at 100k pods; two pods colliding in 64 bits is not a practical concern.
    pods: HashMap<u64, PodRec>,
    ns_names: Vec<Arc<str>>,
}

impl Default for ZoneWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ZoneWriter {
    /// An empty, unsynced zone.
    pub fn new() -> Self {
        let snap = Snapshot::new();
        ZoneWriter {
            shared: Arc::new(Shared {
                current: RwLock::new(Arc::new(snap.clone())),
                generation: AtomicU64::new(1),
            }),
            next: snap,
            dirty: false,
            slice_owner: HashMap::new(),
            pods: HashMap::new(),
            ns_names: Vec::new(),
        }
    }

    /// A reader for a serving task.
    pub fn reader(&self) -> ZoneReader {
        let cached = self
            .shared
            .current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        ZoneReader {
            shared: self.shared.clone(),
            cached,
            generation: self.shared.generation.load(Ordering::Acquire),
        }
    }

    /// Makes the changes so far visible to readers (no-op when nothing changed).
    pub fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        self.next.serial = now_serial().max(self.next.serial.wrapping_add(1));
        let snap = Arc::new(self.next.clone());
        *self.shared.current.write().unwrap_or_else(|e| e.into_inner()) = snap;
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// Every watch has listed: from now on cluster names are answered from the data.
    pub fn mark_synced(&mut self) {
        if !self.next.synced {
            self.next.synced = true;
            self.dirty = true;
        }
    }

    /// Whether [`ZoneWriter::mark_synced`] was called.
    pub fn is_synced(&self) -> bool {
        self.next.synced
    }

    fn key(namespace: &str, name: &str) -> Arc<str> {
        format!("{name}.{namespace}").into()
    }

    /// Replaces the entry at `key` (None removes it) and keeps the reverse indexes in step.
    fn put_entry(&mut self, key: &Arc<str>, new: Option<Entry>) {
        let old = self.next.entries.get(&**key).cloned();
        let (old_cips, old_eps) = match &old {
            Some(e) => (e.cluster_ips().to_vec(), e.endpoint_ips()),
            None => (Vec::new(), HashSet::new()),
        };
        let (new_cips, new_eps) = match &new {
            Some(e) => (e.cluster_ips().to_vec(), e.endpoint_ips()),
            None => (Vec::new(), HashSet::new()),
        };
        for ip in old_cips.iter().filter(|ip| !new_cips.contains(ip)) {
            // Only if it is still ours: another Service may have taken the address since.
            self.next.cluster_ips.update(*ip, |o| o.filter(|o| **o != **key));
        }
        for ip in new_cips.iter().filter(|ip| !old_cips.contains(ip)) {
            self.next.cluster_ips.update(*ip, |_| Some(key.clone()));
        }
        for ip in old_eps.difference(&new_eps) {
            self.next.endpoint_ips.update(*ip, |o| {
                let rest: Vec<Arc<str>> = o?.as_slice().iter().filter(|o| ***o != **key).cloned().collect();
                match rest.len() {
                    0 => None,
                    1 => Some(Owners::One(rest[0].clone())),
                    _ => Some(Owners::Many(rest.into())),
                }
            });
        }
        for ip in new_eps.difference(&old_eps) {
            self.next.endpoint_ips.update(*ip, |o| {
                Some(match o {
                    None => Owners::One(key.clone()),
                    Some(o) => {
                        let mut v = o.as_slice().to_vec();
                        v.push(key.clone());
                        Owners::Many(v.into())
                    }
                })
            });
        }
        let shard = self.next.entries.shard_mut(&**key);
        match new {
            Some(e) => {
                shard.insert(key.clone(), Arc::new(e));
            }
            None => {
                shard.remove(&**key);
            }
        }
        self.dirty = true;
    }

    fn existing_key(&self, namespace: &str, name: &str) -> Arc<str> {
        let key = Self::key(namespace, name);
        match self.next.entries.get(&*key) {
            Some(e) => e.key.clone(),
            None => key,
        }
    }

    /// Adds or replaces a Service.
    pub fn apply_service(&mut self, spec: &ServiceSpec) {
        let key = self.existing_key(&spec.namespace, &spec.name);
        let kind = match &spec.kind {
            ServiceKind::ClusterIp(ips) => Kind::ClusterIp(ips.clone().into()),
            ServiceKind::Headless => Kind::Headless,
            ServiceKind::ExternalName(n) => {
                Kind::ExternalName(n.trim_end_matches('.').to_ascii_lowercase().into())
            }
        };
        let svc = Arc::new(Svc {
            kind,
            ports: spec.ports.iter().map(Port::from).collect(),
        });
        let slices = self
            .next
            .entries
            .get(&*key)
            .map(|e| e.slices.clone())
            .unwrap_or_default();
        let entry = Entry {
            key: key.clone(),
            name_len: spec.name.len(),
            svc: Some(svc),
            slices,
        };
        self.put_entry(&key, Some(entry));
    }

    /// Removes a Service (its slices stay until they are deleted too).
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let key = self.existing_key(namespace, name);
        let Some(old) = self.next.entries.get(&*key).cloned() else {
            return;
        };
        let new = (!old.slices.is_empty()).then(|| Entry {
            key: key.clone(),
            name_len: name.len(),
            svc: None,
            slices: old.slices.clone(),
        });
        self.put_entry(&key, new);
    }

    /// Adds or replaces an EndpointSlice.
    pub fn apply_slice(&mut self, spec: &SliceSpec) {
        let id = format!("{}/{}", spec.namespace, spec.name);
        if let Some(prev) = self.slice_owner.get(&id).cloned()
            && *prev != *Self::key(&spec.namespace, &spec.service)
        {
            self.remove_slice_from(&prev, &spec.name);
        }
        let key = self.existing_key(&spec.namespace, &spec.service);
        let slice = Arc::new(Slice {
            name: spec.name.as_str().into(),
            ports: spec.ports.iter().map(Port::from).collect(),
            endpoints: spec
                .endpoints
                .iter()
                .map(|e| Endpoint {
                    ip: e.ip,
                    hostname: e
                        .hostname
                        .as_deref()
                        .filter(|h| !h.is_empty())
                        .map(|h| h.to_ascii_lowercase().into()),
                })
                .collect(),
        });
        let (svc, mut slices) = match self.next.entries.get(&*key) {
            Some(e) => (e.svc.clone(), e.slices.to_vec()),
            None => (None, Vec::new()),
        };
        slices.retain(|s| *s.name != *spec.name);
        slices.push(slice);
        let entry = Entry {
            key: key.clone(),
            name_len: spec.service.len(),
            svc,
            slices: slices.into(),
        };
        self.slice_owner.insert(id, key.clone());
        self.put_entry(&key, Some(entry));
    }

    fn remove_slice_from(&mut self, key: &Arc<str>, slice: &str) {
        let Some(e) = self.next.entries.get(&**key).cloned() else {
            return;
        };
        let slices: Vec<Arc<Slice>> = e.slices.iter().filter(|s| *s.name != *slice).cloned().collect();
        let new = (e.svc.is_some() || !slices.is_empty()).then(|| Entry {
            key: key.clone(),
            name_len: e.name_len,
            svc: e.svc.clone(),
            slices: slices.into(),
        });
        self.put_entry(key, new);
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        if let Some(key) = self.slice_owner.remove(&format!("{namespace}/{name}")) {
            self.remove_slice_from(&key, name);
        }
    }

    /// A Namespace exists.
    pub fn apply_namespace(&mut self, name: &str) {
        if !self.next.namespaces.contains(name) {
            Arc::make_mut(&mut self.next.namespaces).insert(name.into());
            self.dirty = true;
        }
    }

    /// A Namespace is gone.
    pub fn delete_namespace(&mut self, name: &str) {
        if self.next.namespaces.contains(name) {
            Arc::make_mut(&mut self.next.namespaces).remove(name);
            self.dirty = true;
        }
    }

    fn ns_id(&mut self, ns: &str) -> u32 {
        if let Some(id) = self.next.ns_ids.get(ns) {
            return *id;
        }
        let id = self.ns_names.len() as u32;
        self.ns_names.push(ns.into());
        Arc::make_mut(&mut self.next.ns_ids).insert(ns.into(), id);
        id
    }

    fn pod_ip(&mut self, ip: IpAddr, ns: u32, add: bool) {
        self.next.pods.update(ip, |old| {
            let mut list: Vec<(u32, u32)> = match old {
                None => Vec::new(),
                Some(PodNs::One(n, c)) => vec![(n, c)],
                Some(PodNs::Many(l)) => l.into_vec(),
            };
            match list.iter_mut().position(|(n, _)| *n == ns) {
                Some(i) if add => list[i].1 += 1,
                Some(i) => {
                    list[i].1 -= 1;
                    if list[i].1 == 0 {
                        list.swap_remove(i);
                    }
                }
                None if add => list.push((ns, 1)),
                None => {}
            }
            match list.len() {
                0 => None,
                1 => Some(PodNs::One(list[0].0, list[0].1)),
                _ => Some(PodNs::Many(list.into())),
            }
        });
        self.dirty = true;
    }

    /// A Pod with these addresses (at most one per family is kept; empty while it has none).
    pub fn apply_pod(&mut self, namespace: &str, name: &str, ips: &[IpAddr]) {
        let id = pod_id(namespace, name);
        let ns = self.ns_id(namespace);
        let rec = PodRec {
            ns,
            v4: ips.iter().find_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                _ => None,
            }),
            v6: ips.iter().find_map(|ip| match ip {
                IpAddr::V6(v6) => Some(Box::new(*v6)),
                _ => None,
            }),
        };
        if let Some(old) = self.pods.get(&id).cloned() {
            if old == rec {
                return;
            }
            for ip in old.ips() {
                self.pod_ip(ip, old.ns, false);
            }
        }
        for ip in rec.ips().collect::<Vec<_>>() {
            self.pod_ip(ip, ns, true);
        }
        self.pods.insert(id, rec);
    }

    /// A Pod is gone.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        self.delete_pod_id(pod_id(namespace, name));
    }

    /// A Pod is gone, by [`pod_id`].
    pub fn delete_pod_id(&mut self, id: u64) {
        if let Some(old) = self.pods.remove(&id) {
            for ip in old.ips() {
                self.pod_ip(ip, old.ns, false);
            }
        }
    }

    /// Keys (`namespace/name`) of every Service held, for a re-list to drop the ones that vanished.
    pub fn service_ids(&self) -> Vec<String> {
        self.next
            .entries
            .iter()
            .filter(|(_, e)| e.svc.is_some())
            .map(|(_, e)| format!("{}/{}", e.namespace(), e.name()))
            .collect()
    }

    /// Keys (`namespace/name`) of every EndpointSlice held.
    pub fn slice_ids(&self) -> Vec<String> {
        self.slice_owner.keys().cloned().collect()
    }

    /// Names of every Namespace held.
    pub fn namespace_ids(&self) -> Vec<String> {
        self.next.namespaces.iter().map(|n| n.to_string()).collect()
    }

    /// Ids ([`pod_id`]) of every Pod held.
    pub fn pod_ids(&self) -> Vec<u64> {
        self.pods.keys().copied().collect()
    }

    /// Rough count of services, slices, pods held (for logs).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.next.service_count(), self.slice_owner.len(), self.pods.len())
    }
}
