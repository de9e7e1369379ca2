//! The copy-on-write containers a snapshot is made of: maps split into shards behind `Arc`s, an id table
//! in chunks, and address indexes, so that cloning a snapshot costs reference counts and a change clones
//! only the part it touches.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;
use std::sync::Arc;

use super::Entry;

/// Shards per map: enough that a copy-on-write clone of one shard stays small at 100k objects.
const SHARDS: usize = 256;

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
    pub(super) fn new() -> Self {
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

    pub(super) fn shard_mut<Q: Hash + ?Sized>(&mut self, k: &Q) -> &mut HashMap<K, V> {
        let i = self.shard(k);
        Arc::make_mut(&mut self.shards[i])
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
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

    pub(super) fn set(&mut self, id: u32, e: Option<Arc<Entry>>) {
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
    pub(super) fn new() -> Self {
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
    pub(super) fn update(&mut self, ip: IpAddr, f: impl FnOnce(Option<V>) -> Option<V>) {
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
    pub(super) fn new() -> Self {
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
    pub(super) fn update(&mut self, ip: IpAddr, f: impl FnOnce(&mut Vec<V>)) {
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
