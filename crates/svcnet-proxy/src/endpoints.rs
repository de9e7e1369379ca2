//! Endpoint sets and the balancers that pick from them.
//!
//! An [`EndpointSet`] is immutable once published; what changes per connection lives in atomics of the
//! shared [`EpState`]s (active connections, back-off deadline), which survive set swaps for endpoints
//! that stay, so least-connections and back-off keep their memory across endpoint updates.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use prometheus_client::metrics::counter::Counter;
use svcnet_dataplane::Balance;

use crate::maglev::Maglev;

/// One endpoint of a port and its live state.
#[derive(Debug)]
pub(crate) struct EpState {
    /// Where to connect.
    pub(crate) addr: SocketAddr,
    /// Connections open (or being opened) to it through this port.
    active: AtomicUsize,
    /// `now_ms()` until which the balancer skips it; 0: not backed off.
    backoff_until: AtomicU64,
    /// `svcnet_proxy_endpoint_selections_total` for it.
    pub(crate) selections: Counter,
    /// The address is this node's own (its replies to a transparent connection would never reach the
    /// proxy: see [`crate::source`]). Only known when transparent connects are on; false otherwise.
    pub(crate) local: bool,
}

impl EpState {
    pub(crate) fn new(addr: SocketAddr, selections: Counter) -> EpState {
        EpState {
            addr,
            active: AtomicUsize::new(0),
            backoff_until: AtomicU64::new(0),
            selections,
            local: false,
        }
    }

    pub(crate) fn active(&self) -> usize {
        self.active.load(Relaxed)
    }

    fn backed_off(&self, now: u64) -> bool {
        self.backoff_until.load(Relaxed) > now
    }

    /// Skips this endpoint for `ms` from `now` (a connect to it failed).
    pub(crate) fn back_off(&self, now: u64, ms: u64) {
        self.backoff_until.store(now + ms, Relaxed);
    }

    /// Counts a connection until the guard drops.
    pub(crate) fn hold(self: &Arc<Self>) -> ActiveGuard {
        self.active.fetch_add(1, Relaxed);
        ActiveGuard(self.clone())
    }
}

/// One connection counted in [`EpState`]'s active count.
pub(crate) struct ActiveGuard(Arc<EpState>);

impl ActiveGuard {
    pub(crate) fn endpoint(&self) -> &Arc<EpState> {
        &self.0
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Relaxed);
    }
}

/// Endpoints already tried for one client connection (a connect retry never goes back to them).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Tried {
    idx: [u32; 8],
    n: usize,
}

impl Tried {
    pub(crate) fn add(&mut self, i: usize) {
        if self.n < self.idx.len() {
            self.idx[self.n] = i as u32;
            self.n += 1;
        }
    }

    fn contains(&self, i: usize) -> bool {
        self.idx[..self.n].contains(&(i as u32))
    }
}

/// An immutable set of endpoints with what its balancer needs (round-robin cursor, Maglev table).
#[derive(Debug)]
pub(crate) struct EndpointSet {
    eps: Vec<Arc<EpState>>,
    maglev: Option<Maglev>,
    rr: AtomicUsize,
}

impl EndpointSet {
    /// A set; the Maglev table is built only when `balance` needs it.
    pub(crate) fn new(eps: Vec<Arc<EpState>>, balance: Balance) -> EndpointSet {
        let maglev = if balance == Balance::Maglev {
            Maglev::new(&eps.iter().map(|e| e.addr).collect::<Vec<_>>())
        } else {
            None
        };
        EndpointSet {
            eps,
            maglev,
            rr: AtomicUsize::new(0),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.eps.is_empty()
    }

    pub(crate) fn get(&self, i: usize) -> &Arc<EpState> {
        &self.eps[i]
    }

    /// The addresses, in set order.
    pub(crate) fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.eps.iter().map(|e| e.addr)
    }

    /// Whether the set was built for `balance` (only Maglev needs anything built).
    pub(crate) fn suits(&self, balance: Balance) -> bool {
        (balance == Balance::Maglev) == self.maglev.is_some() || self.eps.is_empty()
    }

    /// The index of `addr`, if it is in the set.
    pub(crate) fn index_of(&self, addr: SocketAddr) -> Option<usize> {
        self.eps.iter().position(|e| e.addr == addr)
    }

    /// Whether index `i` may be used now (not tried; not backed off unless `ignore_backoff`).
    pub(crate) fn usable(&self, i: usize, tried: &Tried, now: u64, ignore_backoff: bool) -> bool {
        !tried.contains(i) && (ignore_backoff || !self.eps[i].backed_off(now))
    }

    /// Picks an endpoint index for `client`, skipping `tried` ones and backed-off ones unless every
    /// remaining one is backed off. `None`: nothing left to try.
    pub(crate) fn pick(&self, balance: Balance, client: IpAddr, tried: &Tried, now: u64) -> Option<usize> {
        if self.eps.is_empty() {
            return None;
        }
        self.pick_with(balance, client, tried, now, false)
            .or_else(|| self.pick_with(balance, client, tried, now, true))
    }

    fn pick_with(
        &self,
        balance: Balance,
        client: IpAddr,
        tried: &Tried,
        now: u64,
        ign: bool,
    ) -> Option<usize> {
        let n = self.eps.len();
        let ok = |i: usize| self.usable(i, tried, now, ign);
        match balance {
            Balance::RoundRobin => {
                let start = self.rr.fetch_add(1, Relaxed);
                (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
            }
            Balance::Random => {
                let start = random_below(n);
                (0..n).map(|k| (start + k) % n).find(|&i| ok(i))
            }
            Balance::LeastConn => {
                if n == 1 {
                    return ok(0).then_some(0);
                }
                let a = random_below(n);
                let mut b = random_below(n - 1);
                if b >= a {
                    b += 1;
                }
                match (ok(a), ok(b)) {
                    (true, true) => Some(if self.eps[b].active() < self.eps[a].active() {
                        b
                    } else {
                        a
                    }),
                    (true, false) => Some(a),
                    (false, true) => Some(b),
                    // Both unusable (rare: retries or back-offs): the least loaded of what is left.
                    (false, false) => (0..n).filter(|&i| ok(i)).min_by_key(|&i| self.eps[i].active()),
                }
            }
            Balance::Maglev => {
                let table = self.maglev.as_ref()?;
                // Walk the table from the client's slot: the first usable entry is the endpoint the
                // table would give if the unusable ones were gone, which keeps the mapping consistent.
                if !(0..n).any(ok) {
                    return None;
                }
                let pos = table.position(client);
                (0..table.len()).map(|k| table.at(pos + k)).find(|&i| ok(i))
            }
        }
    }
}

thread_local! {
    // xorshift64*: the balancer's randomness needs speed, not quality or unpredictability.
    static RNG: Cell<u64> = Cell::new(rand::random::<u64>() | 1);
}

/// A random number in `0..n` (`n` > 0).
fn random_below(n: usize) -> usize {
    RNG.with(|c| {
        let mut x = c.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        c.set(x);
        (((x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) * n as u64) >> 32) as usize
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(n: usize, balance: Balance) -> EndpointSet {
        let eps = (0..n)
            .map(|i| {
                Arc::new(EpState::new(
                    format!("127.0.0.1:{}", 9000 + i).parse().unwrap(),
                    Counter::default(),
                ))
            })
            .collect();
        EndpointSet::new(eps, balance)
    }

    const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 1, 2, 3));

    #[test]
    fn round_robin_goes_in_order() {
        let s = set(3, Balance::RoundRobin);
        let picks: Vec<_> = (0..6)
            .map(|_| s.pick(Balance::RoundRobin, CLIENT, &Tried::default(), 1).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn least_conn_prefers_fewer_connections() {
        let s = set(2, Balance::LeastConn);
        let _busy: Vec<_> = (0..5).map(|_| s.get(0).hold()).collect();
        for _ in 0..100 {
            assert_eq!(s.pick(Balance::LeastConn, CLIENT, &Tried::default(), 1), Some(1));
        }
        // With many endpoints, the loaded one is picked much less than its fair share.
        let s = set(4, Balance::LeastConn);
        let _busy: Vec<_> = (0..5).map(|_| s.get(2).hold()).collect();
        let hits = (0..4000)
            .filter(|_| s.pick(Balance::LeastConn, CLIENT, &Tried::default(), 1) == Some(2))
            .count();
        assert!(
            hits == 0,
            "a loaded endpoint only wins ties it cannot have: {hits}"
        );
    }

    #[test]
    fn random_covers_everything() {
        let s = set(4, Balance::Random);
        let mut seen = [0; 4];
        for _ in 0..4000 {
            seen[s.pick(Balance::Random, CLIENT, &Tried::default(), 1).unwrap()] += 1;
        }
        assert!(seen.iter().all(|&c| c > 800), "{seen:?}");
    }

    #[test]
    fn backed_off_endpoints_are_skipped_unless_all_are() {
        for balance in [
            Balance::LeastConn,
            Balance::RoundRobin,
            Balance::Random,
            Balance::Maglev,
        ] {
            let s = set(3, balance);
            s.get(0).back_off(100, 1000);
            s.get(1).back_off(100, 1000);
            for _ in 0..50 {
                assert_eq!(
                    s.pick(balance, CLIENT, &Tried::default(), 200),
                    Some(2),
                    "{balance}"
                );
            }
            // After the back-off, 0 and 1 come back.
            let seen: std::collections::HashSet<_> = (0..200)
                .map(|i| {
                    s.pick(balance, IpAddr::V4((i as u32).into()), &Tried::default(), 2000)
                        .unwrap()
                })
                .collect();
            assert_eq!(seen.len(), 3, "{balance}");
            // All backed off: still picks (a backed-off endpoint beats no endpoint).
            s.get(2).back_off(100, 1000);
            assert!(
                s.pick(balance, CLIENT, &Tried::default(), 200).is_some(),
                "{balance}"
            );
        }
    }

    #[test]
    fn tried_endpoints_are_never_picked_again() {
        for balance in [
            Balance::LeastConn,
            Balance::RoundRobin,
            Balance::Random,
            Balance::Maglev,
        ] {
            let s = set(3, balance);
            let mut tried = Tried::default();
            let mut got = vec![];
            while let Some(i) = s.pick(balance, CLIENT, &tried, 1) {
                tried.add(i);
                got.push(i);
            }
            got.sort();
            assert_eq!(got, [0, 1, 2], "{balance}");
        }
    }

    #[test]
    fn maglev_pins_a_client_and_moves_it_only_when_its_endpoint_fails() {
        let s = set(5, Balance::Maglev);
        let first = s.pick(Balance::Maglev, CLIENT, &Tried::default(), 1).unwrap();
        for _ in 0..20 {
            assert_eq!(s.pick(Balance::Maglev, CLIENT, &Tried::default(), 1), Some(first));
        }
        s.get(first).back_off(1, 1000);
        let other = s.pick(Balance::Maglev, CLIENT, &Tried::default(), 2).unwrap();
        assert_ne!(other, first);
        assert_eq!(
            s.pick(Balance::Maglev, CLIENT, &Tried::default(), 5000),
            Some(first)
        );
    }

    #[test]
    fn random_below_stays_in_range() {
        for n in [1, 2, 3, 7, 1000] {
            assert!((0..1000).all(|_| random_below(n) < n));
        }
    }
}
