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
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
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

/// A port as stored. Names and protocols are interned by the writer: a handful of distinct strings
/// ("http", "TCP") shared by every Service instead of two allocations per port.
#[derive(Debug)]
pub(crate) struct Port {
    pub name: Arc<str>,
    pub protocol: Arc<str>,
    pub port: i32,
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

/// One endpoint of a stored slice, as the lookup reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Endpoint<'a> {
    pub ip: IpAddr,
    pub hostname: Option<&'a str>,
}

/// A slice's addresses: 4 bytes each when all are IPv4 (every `addressType: IPv4` slice), instead of
/// the 17 of an `IpAddr`.
#[derive(Debug)]
enum Addrs {
    V4(Box<[Ipv4Addr]>),
    Any(Box<[IpAddr]>),
}

#[derive(Debug)]
pub(crate) struct Slice {
    pub name: Box<str>,
    pub ports: Box<[Port]>,
    addrs: Addrs,
    /// Parallel to `addrs`; empty (no allocation) when no endpoint has a hostname, the common case.
    hostnames: Box<[Option<Box<str>>]>,
}

impl Slice {
    fn len(&self) -> usize {
        match &self.addrs {
            Addrs::V4(a) => a.len(),
            Addrs::Any(a) => a.len(),
        }
    }

    fn ip(&self, i: usize) -> IpAddr {
        match &self.addrs {
            Addrs::V4(a) => IpAddr::V4(a[i]),
            Addrs::Any(a) => a[i],
        }
    }

    /// The ready endpoints, in the slice's order.
    pub fn endpoints(&self) -> impl Iterator<Item = Endpoint<'_>> + '_ {
        (0..self.len()).map(move |i| Endpoint {
            ip: self.ip(i),
            hostname: self.hostnames.get(i).and_then(|h| h.as_deref()),
        })
    }
}

/// Everything under `<name>.<namespace>`: the Service (if it exists) and its slices (which may arrive
/// before it).
#[derive(Debug)]
pub(crate) struct Entry {
    /// `<name>.<namespace>`, exactly the labels a query carries before `.svc.<zone>`.
    pub key: Arc<str>,
    name_len: u32,
    /// The entry's number in the address indexes ([`Snapshot::by_id`]); reused after removal.
    id: u32,
    pub svc: Option<Arc<Svc>>,
    pub slices: Box<[Arc<Slice>]>,
}

impl Entry {
    pub fn name(&self) -> &str {
        &self.key[..self.name_len as usize]
    }
    pub fn namespace(&self) -> &str {
        &self.key[self.name_len as usize + 1..]
    }
    fn endpoint_ips(&self) -> HashSet<IpAddr> {
        self.slices
            .iter()
            .flat_map(|s| s.endpoints().map(|e| e.ip))
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

/// Entries per chunk of [`IdTable`].
const ID_CHUNK: usize = 256;

/// Entries by their numeric id: fixed-size chunks behind `Arc`s, indexed directly (no hashing);
/// cloning it is one reference count per chunk, writing clones one chunk at most. Ids are reused, so
/// the table stays dense.
#[derive(Clone, Default)]
pub(crate) struct IdTable {
    chunks: Vec<Arc<[Option<Arc<Entry>>; ID_CHUNK]>>,
}

impl IdTable {
    pub fn get(&self, id: u32) -> Option<&Arc<Entry>> {
        let id = id as usize;
        self.chunks.get(id / ID_CHUNK)?[id % ID_CHUNK].as_ref()
    }

    fn set(&mut self, id: u32, e: Option<Arc<Entry>>) {
        let id = id as usize;
        while self.chunks.len() <= id / ID_CHUNK {
            self.chunks.push(Arc::new(std::array::from_fn(|_| None)));
        }
        Arc::make_mut(&mut self.chunks[id / ID_CHUNK])[id % ID_CHUNK] = e;
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

/// A multimap by address where almost every address has one value: the first value sits inline in
/// a small slot (`first`), the rare others in a side index (`rest`), so the common case pays neither
/// an enum tag nor a heap pointer.
pub(crate) struct IpMulti<V> {
    first: IpIndex<V>,
    rest: IpIndex<Box<[V]>>,
}

impl<V> Clone for IpMulti<V> {
    fn clone(&self) -> Self {
        IpMulti {
            first: self.first.clone(),
            rest: self.rest.clone(),
        }
    }
}

impl<V: Copy> IpMulti<V> {
    fn new() -> Self {
        IpMulti {
            first: IpIndex::new(),
            rest: IpIndex::new(),
        }
    }

    /// Every value at `ip`, first in. The side index is only consulted when the caller reads past
    /// the first value (`any` on a one-value address costs one lookup).
    pub fn get(&self, ip: IpAddr) -> impl Iterator<Item = V> + '_ {
        let first = self.first.get(ip).copied();
        let rest = first
            .map(|_| ())
            .into_iter()
            .flat_map(move |()| self.rest.get(ip).into_iter().flat_map(|r| r.iter().copied()));
        first.into_iter().chain(rest)
    }

    /// Edits the values at `ip` as a list (emptied: the address is removed).
    fn update(&mut self, ip: IpAddr, f: impl FnOnce(&mut Vec<V>)) {
        let mut list: Vec<V> = self.get(ip).collect();
        let had_rest = list.len() > 1;
        f(&mut list);
        self.first.update(ip, |_| list.first().copied());
        if had_rest || list.len() > 1 {
            self.rest
                .update(ip, |_| (list.len() > 1).then(|| list[1..].into()));
        }
    }
}

/// One published state of the zone.
#[derive(Clone)]
pub struct Snapshot {
    /// Every watch has listed once: until then cluster names get SERVFAIL.
    pub(crate) synced: bool,
    /// The SOA serial: the Unix time of the last change.
    pub(crate) serial: u32,
    pub(crate) entries: Sharded<Arc<str>, Arc<Entry>>,
    /// The same entries by their numeric id: the address indexes hold 4-byte ids, not names.
    pub(crate) by_id: IdTable,
    /// ClusterIP → the Service's key (ClusterIPs are unique). The name itself, not an id: only one per
    /// Service, and a ClusterIP PTR then needs no second lookup.
    pub(crate) cluster_ips: IpIndex<Arc<str>>,
    /// Endpoint address → the entry ids of the Services it backs.
    pub(crate) endpoint_ips: IpMulti<u32>,
    pub(crate) namespaces: Arc<HashSet<Box<str>>>,
    /// Namespace name → the id the pod index uses.
    pub(crate) ns_ids: Arc<HashMap<Box<str>, u32>>,
    /// Pod address → (namespace id, number of pods of that namespace using it).
    pub(crate) pods: IpMulti<(u32, u32)>,
}

impl Snapshot {
    fn new() -> Self {
        Snapshot {
            synced: false,
            serial: now_serial(),
            entries: Sharded::new(),
            by_id: IdTable::default(),
            cluster_ips: IpIndex::new(),
            endpoint_ips: IpMulti::new(),
            namespaces: Arc::default(),
            ns_ids: Arc::default(),
            pods: IpMulti::new(),
        }
    }

    /// Whether a pod with address `ip` exists in namespace `ns`.
    pub fn pod_exists(&self, ip: IpAddr, ns: &str) -> bool {
        let Some(&id) = self.ns_ids.get(ns) else {
            return false;
        };
        self.pods.get(ip).any(|(n, _)| n == id)
    }

    /// The entry with this id.
    pub(crate) fn entry_by_id(&self, id: u32) -> Option<&Arc<Entry>> {
        self.by_id.get(id)
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

/// Pod bookkeeping the writer alone needs: which addresses a pod holds, to undo them later. Packed
/// into 8 bytes: namespace id (bits 0..31), whether it has an IPv4 address (bit 31), the IPv4 address
/// (bits 32..64). A pod's IPv6 address, rarer, is kept in a separate map.
#[derive(Clone, Copy, PartialEq, Eq)]
struct PodRec(u64);

impl PodRec {
    const HAS_V4: u64 = 1 << 31;

    fn new(ns: u32, v4: Option<Ipv4Addr>) -> Self {
        let ns = u64::from(ns) & (Self::HAS_V4 - 1);
        PodRec(match v4 {
            Some(v4) => ns | Self::HAS_V4 | u64::from(u32::from(v4)) << 32,
            None => ns,
        })
    }

    fn ns(self) -> u32 {
        (self.0 & (Self::HAS_V4 - 1)) as u32
    }

    fn v4(self) -> Option<Ipv4Addr> {
        (self.0 & Self::HAS_V4 != 0).then(|| Ipv4Addr::from((self.0 >> 32) as u32))
    }
}

/// The zone's single writer. Changes accumulate in a private copy; [`ZoneWriter::publish`] makes them
/// visible to every reader at once.
pub struct ZoneWriter {
    shared: Arc<Shared>,
    next: Snapshot,
    dirty: bool,
    /// EndpointSlice (`namespace/name`) → the id of the entry it was filed under.
    slice_owner: HashMap<Box<str>, u32>,
    /// Pod (hash of `namespace/name`, see [`pod_id`]) → its namespace and IPv4 address. A hash, not the
    /// name, keeps this map small at 100k pods; two pods colliding in 64 bits is not a practical concern.
    pods: HashMap<u64, PodRec>,
    /// The IPv6 address of the pods that have one.
    pods_v6: HashMap<u64, Ipv6Addr>,
    ns_names: Vec<Arc<str>>,
    /// Entry ids: the next never used, and those freed by removed entries.
    next_id: u32,
    free_ids: Vec<u32>,
    /// Port names and protocols in use (see [`Port`]); unused ones are dropped as the set grows.
    interned: HashSet<Arc<str>>,
    prune_at: usize,
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
            pods_v6: HashMap::new(),
            ns_names: Vec::new(),
            next_id: 0,
            free_ids: Vec::new(),
            interned: HashSet::new(),
            prune_at: 64,
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

    /// The shared copy of `s`.
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.interned.get(s) {
            return a.clone();
        }
        if self.interned.len() >= self.prune_at {
            // Only this set holds them: no Service or slice uses them any more.
            self.interned.retain(|a| Arc::strong_count(a) > 1);
            self.prune_at = (self.interned.len() * 2).max(64);
        }
        let a: Arc<str> = s.into();
        self.interned.insert(a.clone());
        a
    }

    fn ports(&mut self, ports: &[PortSpec]) -> Box<[Port]> {
        ports
            .iter()
            .map(|p| Port {
                name: self.intern(&p.name),
                protocol: self.intern(&p.protocol),
                port: p.port,
            })
            .collect()
    }

    /// Replaces the entry at `key` (None removes it) and keeps the id and address indexes in step.
    fn put_entry(&mut self, key: &Arc<str>, mut new: Option<Entry>) {
        let old = self.next.entries.get(&**key).cloned();
        let id = match (&old, &new) {
            (Some(o), _) => o.id,
            (None, Some(_)) => self.free_ids.pop().unwrap_or_else(|| {
                self.next_id += 1;
                self.next_id - 1
            }),
            (None, None) => return,
        };
        if let Some(n) = &mut new {
            n.id = id;
        }
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
            self.next
                .endpoint_ips
                .update(*ip, |owners| owners.retain(|o| *o != id));
        }
        for ip in new_eps.difference(&old_eps) {
            self.next.endpoint_ips.update(*ip, |owners| owners.push(id));
        }
        let shard = self.next.entries.shard_mut(&**key);
        let by_id = match new {
            Some(e) => {
                let e = Arc::new(e);
                shard.insert(key.clone(), e.clone());
                Some(e)
            }
            None => {
                shard.remove(&**key);
                self.free_ids.push(id);
                None
            }
        };
        self.next.by_id.set(id, by_id);
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
            ports: self.ports(&spec.ports),
        });
        let slices = self
            .next
            .entries
            .get(&*key)
            .map(|e| e.slices.clone())
            .unwrap_or_default();
        let entry = Entry {
            key: key.clone(),
            name_len: spec.name.len() as u32,
            id: 0, // set by put_entry
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
            name_len: old.name_len,
            id: old.id,
            svc: None,
            slices: old.slices.clone(),
        });
        self.put_entry(&key, new);
    }

    fn slice(&mut self, spec: &SliceSpec) -> Slice {
        let eps = &spec.endpoints;
        let addrs = if eps.iter().all(|e| e.ip.is_ipv4()) {
            Addrs::V4(
                eps.iter()
                    .filter_map(|e| match e.ip {
                        IpAddr::V4(v4) => Some(v4),
                        IpAddr::V6(_) => None,
                    })
                    .collect(),
            )
        } else {
            Addrs::Any(eps.iter().map(|e| e.ip).collect())
        };
        let hostname = |e: &EndpointSpec| {
            e.hostname
                .as_deref()
                .filter(|h| !h.is_empty())
                .map(|h| h.to_ascii_lowercase().into_boxed_str())
        };
        let hostnames = if eps.iter().any(|e| hostname(e).is_some()) {
            eps.iter().map(hostname).collect()
        } else {
            Box::default()
        };
        Slice {
            name: spec.name.as_str().into(),
            ports: self.ports(&spec.ports),
            addrs,
            hostnames,
        }
    }

    /// Adds or replaces an EndpointSlice.
    pub fn apply_slice(&mut self, spec: &SliceSpec) {
        let id = format!("{}/{}", spec.namespace, spec.name);
        if let Some(prev) = self.slice_owner.get(&*id).and_then(|o| self.next.entry_by_id(*o))
            && *prev.key != *Self::key(&spec.namespace, &spec.service)
        {
            let prev = prev.key.clone();
            self.remove_slice_from(&prev, &spec.name);
        }
        let key = self.existing_key(&spec.namespace, &spec.service);
        let slice = Arc::new(self.slice(spec));
        let (svc, mut slices) = match self.next.entries.get(&*key) {
            Some(e) => (e.svc.clone(), e.slices.to_vec()),
            None => (None, Vec::new()),
        };
        slices.retain(|s| *s.name != *spec.name);
        slices.push(slice);
        let entry = Entry {
            key: key.clone(),
            name_len: spec.service.len() as u32,
            id: 0, // set by put_entry
            svc,
            slices: slices.into(),
        };
        self.put_entry(&key, Some(entry));
        if let Some(e) = self.next.entries.get(&*key) {
            self.slice_owner.insert(id.into(), e.id);
        }
    }

    fn remove_slice_from(&mut self, key: &Arc<str>, slice: &str) {
        let Some(e) = self.next.entries.get(&**key).cloned() else {
            return;
        };
        let slices: Vec<Arc<Slice>> = e.slices.iter().filter(|s| *s.name != *slice).cloned().collect();
        let new = (e.svc.is_some() || !slices.is_empty()).then(|| Entry {
            key: key.clone(),
            name_len: e.name_len,
            id: e.id,
            svc: e.svc.clone(),
            slices: slices.into(),
        });
        self.put_entry(key, new);
    }

    /// Removes an EndpointSlice.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        let owner = self.slice_owner.remove(&*format!("{namespace}/{name}"));
        if let Some(key) = owner
            .and_then(|o| self.next.entry_by_id(o))
            .map(|e| e.key.clone())
        {
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
        self.next
            .pods
            .update(ip, |list| match list.iter().position(|(n, _)| *n == ns) {
                Some(i) if add => list[i].1 += 1,
                Some(i) => {
                    list[i].1 -= 1;
                    if list[i].1 == 0 {
                        list.remove(i);
                    }
                }
                None if add => list.push((ns, 1)),
                None => {}
            });
        self.dirty = true;
    }

    fn pod_ips(rec: PodRec, v6: Option<Ipv6Addr>) -> impl Iterator<Item = IpAddr> {
        rec.v4().map(IpAddr::V4).into_iter().chain(v6.map(IpAddr::V6))
    }

    /// A Pod with these addresses (at most one per family is kept; empty while it has none).
    pub fn apply_pod(&mut self, namespace: &str, name: &str, ips: &[IpAddr]) {
        let id = pod_id(namespace, name);
        let ns = self.ns_id(namespace);
        let v4 = ips.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            _ => None,
        });
        let v6 = ips.iter().find_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            _ => None,
        });
        let rec = PodRec::new(ns, v4);
        if let Some(old) = self.pods.get(&id).copied() {
            let old_v6 = self.pods_v6.get(&id).copied();
            if old == rec && old_v6 == v6 {
                return;
            }
            for ip in Self::pod_ips(old, old_v6) {
                self.pod_ip(ip, old.ns(), false);
            }
        }
        for ip in Self::pod_ips(rec, v6) {
            self.pod_ip(ip, ns, true);
        }
        self.pods.insert(id, rec);
        match v6 {
            Some(v6) => self.pods_v6.insert(id, v6),
            None => self.pods_v6.remove(&id),
        };
    }

    /// A Pod is gone.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) {
        self.delete_pod_id(pod_id(namespace, name));
    }

    /// A Pod is gone, by [`pod_id`].
    pub fn delete_pod_id(&mut self, id: u64) {
        if let Some(old) = self.pods.remove(&id) {
            let old_v6 = self.pods_v6.remove(&id);
            for ip in Self::pod_ips(old, old_v6) {
                self.pod_ip(ip, old.ns(), false);
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
        self.slice_owner.keys().map(|k| k.to_string()).collect()
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
