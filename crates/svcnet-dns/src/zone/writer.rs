//! The zone's single writer: applies what the watchers report to a private copy of the snapshot and
//! publishes it.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::{
    Addrs, EndpointSpec, Entry, Kind, Port, PortSpec, ServiceKind, ServiceSpec, Shared, Slice, SliceSpec,
    Snapshot, Svc, ZoneReader, now_serial, pod_id,
};

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

    /// Keys (`namespace/name`) of every Service held (what tests compare a relist's outcome with).
    #[cfg(test)]
    pub(crate) fn service_ids(&self) -> Vec<String> {
        self.next
            .entries
            .iter()
            .filter(|(_, e)| e.svc.is_some())
            .map(|(_, e)| format!("{}/{}", e.namespace(), e.name()))
            .collect()
    }

    /// Rough count of services, slices, pods held (for logs).
    pub fn counts(&self) -> (usize, usize, usize) {
        (self.next.service_count(), self.slice_owner.len(), self.pods.len())
    }
}
