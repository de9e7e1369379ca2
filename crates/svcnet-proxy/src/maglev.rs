//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table filled from each endpoint's
//! own permutation, so that a client IP maps to the same endpoint on every node and removing one endpoint
//! moves (almost) only the clients that were on it.

use std::net::{IpAddr, SocketAddr};

/// Table size for small endpoint sets: prime, and ≥ 100× the endpoints Maglev wants for even spread.
const SMALL: usize = 4093;
/// Table size otherwise (prime).
const LARGE: usize = 65537;
/// Up to this many endpoints the small table keeps the spread within a few percent.
const SMALL_MAX_ENDPOINTS: usize = 40;

/// A Maglev lookup table over the endpoints of one set (entries are indices into the set).
#[derive(Debug)]
pub(crate) struct Maglev {
    table: Box<[u32]>,
}

impl Maglev {
    /// Builds the table for `endpoints` (in set order); `None` for an empty set.
    pub(crate) fn new(endpoints: &[SocketAddr]) -> Option<Maglev> {
        let n = endpoints.len();
        if n == 0 {
            return None;
        }
        let m = if n <= SMALL_MAX_ENDPOINTS { SMALL } else { LARGE };
        let perms: Vec<(u64, u64)> = endpoints
            .iter()
            .map(|e| {
                let offset = hash_addr(e, 0x5ca1_ab1e) % m as u64;
                let skip = hash_addr(e, 0x0dd_ba11) % (m as u64 - 1) + 1;
                (offset, skip)
            })
            .collect();
        let mut next = vec![0u64; n];
        let mut table = vec![u32::MAX; m].into_boxed_slice();
        let mut filled = 0;
        'fill: loop {
            for i in 0..n {
                let (offset, skip) = perms[i];
                let mut c = ((offset + next[i] * skip) % m as u64) as usize;
                while table[c] != u32::MAX {
                    next[i] += 1;
                    c = ((offset + next[i] * skip) % m as u64) as usize;
                }
                table[c] = i as u32;
                next[i] += 1;
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Some(Maglev { table })
    }

    /// The table size.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// The endpoint index at table position `pos` (taken modulo the size).
    pub(crate) fn at(&self, pos: usize) -> usize {
        self.table[pos % self.table.len()] as usize
    }

    /// The table position of a client address.
    pub(crate) fn position(&self, client: IpAddr) -> usize {
        (hash_ip(client) % self.table.len() as u64) as usize
    }
}

/// A stable hash of an endpoint (the same on every node and every run, unlike `std`'s `RandomState`).
fn hash_addr(addr: &SocketAddr, seed: u64) -> u64 {
    let mut h = fnv1a(seed, &ip_bytes(addr.ip()));
    h = fnv1a(h, &addr.port().to_be_bytes());
    mix(h)
}

/// A stable hash of a client address.
pub(crate) fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => mix(u32::from(v4) as u64),
        IpAddr::V6(v6) => {
            let x = u128::from(v6);
            mix((x as u64) ^ mix((x >> 64) as u64))
        }
    }
}

fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// splitmix64's finaliser: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eps(n: usize) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| format!("10.0.{}.{}:8080", i / 250, i % 250 + 1).parse().unwrap())
            .collect()
    }

    fn clients() -> impl Iterator<Item = IpAddr> {
        (0..20_000u32).map(|i| IpAddr::V4((0x0a80_0000 + i * 7).into()))
    }

    #[test]
    fn spreads_evenly_and_is_stable() {
        let e = eps(5);
        let a = Maglev::new(&e).unwrap();
        let b = Maglev::new(&e).unwrap();
        assert_eq!(a.table, b.table, "same endpoints, same table");
        let mut counts = [0usize; 5];
        for slot in a.table.iter() {
            counts[*slot as usize] += 1;
        }
        let ideal = SMALL / 5;
        for c in counts {
            assert!(c.abs_diff(ideal) * 100 / ideal <= 3, "uneven: {counts:?}");
        }
    }

    #[test]
    fn removing_one_endpoint_moves_little_else() {
        let e = eps(10);
        let before = Maglev::new(&e).unwrap();
        let gone = e[3];
        let rest: Vec<_> = e.iter().copied().filter(|a| *a != gone).collect();
        let after = Maglev::new(&rest).unwrap();
        let (mut kept, mut stayed) = (0, 0);
        for c in clients() {
            let was = e[before.at(before.position(c))];
            let now = rest[after.at(after.position(c))];
            if was != gone {
                kept += 1;
                if was == now {
                    stayed += 1;
                }
            }
        }
        // Maglev's bound: a few percent of the clients of surviving endpoints move.
        assert!(stayed * 100 / kept >= 90, "{stayed} of {kept} stayed");
    }

    #[test]
    fn large_sets_use_the_large_table() {
        assert_eq!(Maglev::new(&eps(100)).unwrap().len(), LARGE);
        assert!(Maglev::new(&[]).is_none());
    }
}
