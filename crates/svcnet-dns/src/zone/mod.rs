//! The cluster zone's data: what Services, EndpointSlices, Namespaces and Pods say, kept in the shape
//! the lookup needs and published as immutable snapshots.
//!
//! Readers never take a lock on the hot path: each serving task holds a [`ZoneReader`] that caches the
//! current snapshot and only re-reads it when a generation counter moves. The single writer
//! ([`ZoneWriter`], fed by the watchers) changes a private copy whose maps are split into shards behind
//! `Arc`s; a change clones only the shards it touches (copy-on-write), so one Service's update costs
//! that Service's records, never a rebuild of the zone.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

mod shards;
mod writer;

use shards::{IdTable, IpIndex, IpMulti, Sharded};
pub use writer::ZoneWriter;

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
    #[cfg(test)]
    pub fn name(&self) -> &str {
        &self.key[..self.name_len as usize]
    }
    #[cfg(test)]
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

    /// Whether the first complete list of the cluster's objects is in.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// How many Services the zone holds.
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
