//! `sessionAffinity: ClientIP`: which endpoint each client IP was last sent to, and when.
//!
//! The map is sharded by client IP so that connections from different clients rarely meet on a lock; a
//! lookup holds one shard for a hash-map access. Expired entries are removed when looked up, and a shard
//! is swept whenever it has doubled since its last sweep, so the map stays bounded by the clients seen
//! within one timeout.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use crate::maglev::hash_ip;

const SHARDS: usize = 16;

#[derive(Debug, Default)]
struct Shard {
    /// Client IP → (endpoint, `now_ms()` of last use).
    map: HashMap<IpAddr, (SocketAddr, u64)>,
    /// Size after the last sweep.
    swept_len: usize,
}

/// The affinity table of one service port.
#[derive(Debug, Default)]
pub(crate) struct Affinity {
    shards: [Mutex<Shard>; SHARDS],
}

impl Affinity {
    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, Shard> {
        let i = (hash_ip(ip) % SHARDS as u64) as usize;
        // A poisoned shard only means a panic elsewhere mid-insert; the map itself is still valid.
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The endpoint `client` is pinned to, if used within `timeout_ms`; refreshes its time.
    pub(crate) fn get(&self, client: IpAddr, timeout_ms: u64, now: u64) -> Option<SocketAddr> {
        let mut shard = self.shard(client);
        match shard.map.get_mut(&client) {
            Some((ep, used)) if now.saturating_sub(*used) <= timeout_ms => {
                *used = now;
                Some(*ep)
            }
            Some(_) => {
                shard.map.remove(&client);
                None
            }
            None => None,
        }
    }

    /// Pins `client` to `ep` from `now`.
    pub(crate) fn set(&self, client: IpAddr, ep: SocketAddr, timeout_ms: u64, now: u64) {
        let mut shard = self.shard(client);
        shard.map.insert(client, (ep, now));
        if shard.map.len() > 2 * shard.swept_len.max(512) {
            shard
                .map
                .retain(|_, (_, used)| now.saturating_sub(*used) <= timeout_ms);
            shard.swept_len = shard.map.len();
        }
    }

    /// Forgets `client`'s pin (its endpoint went away or failed).
    pub(crate) fn forget(&self, client: IpAddr) {
        self.shard(client).map.remove(&client);
    }

    /// Entries held (for tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap().map.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_until_the_timeout_then_forgets() {
        let a = Affinity::default();
        let c: IpAddr = "10.0.0.1".parse().unwrap();
        let ep: SocketAddr = "10.1.0.1:80".parse().unwrap();
        assert_eq!(a.get(c, 1000, 1), None);
        a.set(c, ep, 1000, 1);
        assert_eq!(a.get(c, 1000, 900), Some(ep));
        // Use refreshes the time: 900 + 1000 is still within.
        assert_eq!(a.get(c, 1000, 1800), Some(ep));
        assert_eq!(a.get(c, 1000, 2801), None, "expired");
        assert_eq!(a.len(), 0, "expired entries are removed when seen");
        a.set(c, ep, 1000, 3000);
        a.forget(c);
        assert_eq!(a.get(c, 1000, 3001), None);
    }

    #[test]
    fn expired_entries_are_swept_as_the_table_grows() {
        let a = Affinity::default();
        let ep: SocketAddr = "10.1.0.1:80".parse().unwrap();
        for i in 0..20_000u32 {
            a.set(IpAddr::V4(i.into()), ep, 10, i as u64 * 10);
        }
        assert!(a.len() < 20_000 / 2, "{}", a.len());
    }
}
