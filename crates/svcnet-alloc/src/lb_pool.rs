//! The LoadBalancer ingress address pool (svcnet's own; kube has none).
//!
//! A pool is a list of entries, each a CIDR (`192.0.2.0/28`,
//! `2001:db8::/120`), a first-last range (`192.0.2.10-192.0.2.20`,
//! `2001:db8::10-2001:db8::1f`) or a single address (`192.0.2.7`). Dynamic
//! allocation hands out the lowest free address of the requested family, so
//! assignments are predictable and stable across restarts.
//!
//! Which addresses of an entry are usable:
//!
//! * A **range** (or single address) uses every address in it: whoever wrote
//!   it listed exactly the addresses they own.
//! * A **CIDR** skips its all-zeros host address (the IPv4 network address /
//!   IPv6 subnet-router anycast address) and, for IPv4, its all-ones broadcast
//!   address, the same rule as the ClusterIP allocator; routers and hosts
//!   treat those specially, so handing one to a Service leads to hard-to-debug
//!   breakage. /31 and /32 (IPv4) and /127 and /128 (IPv6) are point-to-point
//!   or single-host networks with no such addresses, so all of them are used.
//!   (MetalLB's `avoidBuggyIPs` goes further and skips every `.0`/`.255`
//!   address; svcnet does not: write a range if you want those.)
//!
//! Entries may not overlap (in their usable addresses) and CIDRs must not
//! have host bits set; both are configuration mistakes worth a clear error.
//!
//! The pool is sized by its allocations, not its address count (a set of the
//! allocated addresses plus the sorted entry bounds), so an IPv6 /64 entry
//! costs no more than a /28.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::addr::{IpFamily, canonical, from_u128, to_u128};
use crate::rebuild::RebuildReport;

/// Errors from building or using an [`LbPool`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PoolError {
    /// A pool entry that is not a CIDR, range or address, or is malformed.
    #[error("invalid load-balancer address pool entry {entry:?}: {reason}")]
    InvalidEntry {
        /// The entry as given.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Two entries share usable addresses.
    #[error("load-balancer address pool entries {first:?} and {second:?} overlap")]
    Overlap {
        /// One entry, as written.
        first: String,
        /// The other entry, as written.
        second: String,
    },
    /// A requested address is not a usable address of any entry.
    #[error("address {ip} is not in the load-balancer address pool")]
    NotInPool {
        /// The requested address.
        ip: IpAddr,
    },
    /// A requested address is already allocated.
    #[error("address {ip} is already in use")]
    InUse {
        /// The requested address.
        ip: IpAddr,
    },
    /// Every address of the requested family is allocated.
    #[error("the load-balancer address pool has no free {family} addresses")]
    Exhausted {
        /// The requested family.
        family: IpFamily,
    },
    /// The pool has no entry of the requested family at all.
    #[error("the load-balancer address pool has no {family} addresses")]
    NoAddresses {
        /// The requested family.
        family: IpFamily,
    },
}

/// One entry of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PoolEntry {
    /// A network; see the module docs for which of its addresses are used.
    Cidr(IpNet),
    /// Every address from `first` to `last`, both included (same family,
    /// `first <= last`).
    Range {
        /// The lowest address.
        first: IpAddr,
        /// The highest address.
        last: IpAddr,
    },
}

impl PoolEntry {
    /// Parses `a.b.c.d/n`, `first-last` or a single address (IPv4 or IPv6;
    /// surrounding whitespace is ignored).
    pub fn parse(text: &str) -> Result<Self, PoolError> {
        let s = text.trim();
        let invalid = |reason: String| PoolError::InvalidEntry {
            entry: text.to_owned(),
            reason,
        };
        if s.contains('/') {
            let net: IpNet = s.parse().map_err(|_| invalid("not a valid CIDR".to_owned()))?;
            if net.trunc() != net {
                return Err(invalid(format!(
                    "host bits are set; the network is {}",
                    net.trunc()
                )));
            }
            return Ok(PoolEntry::Cidr(net));
        }
        let addr = |a: &str| {
            a.trim()
                .parse::<IpAddr>()
                .map_err(|_| invalid(format!("{:?} is not an IP address", a.trim())))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (addr(a)?, addr(b)?),
            None => {
                let ip = addr(s)?;
                (ip, ip)
            }
        };
        if IpFamily::of(first) != IpFamily::of(last) {
            return Err(invalid("the range mixes IPv4 and IPv6 addresses".to_owned()));
        }
        if last < first {
            return Err(invalid(format!(
                "the range ends ({last}) before it starts ({first})"
            )));
        }
        Ok(PoolEntry::Range { first, last })
    }

    /// The entry's IP family.
    pub fn family(&self) -> IpFamily {
        match self {
            PoolEntry::Cidr(net) => IpFamily::of_net(net),
            PoolEntry::Range { first, .. } => IpFamily::of(*first),
        }
    }

    /// Checks an entry built directly (not parsed): same family at both ends
    /// of a range, `first <= last`, and no host bits in a CIDR.
    fn validate(&self) -> Result<(), PoolError> {
        let reason = match *self {
            PoolEntry::Cidr(net) if net.trunc() != net => {
                format!("host bits are set; the network is {}", net.trunc())
            }
            PoolEntry::Range { first, last } if IpFamily::of(first) != IpFamily::of(last) => {
                "the range mixes IPv4 and IPv6 addresses".to_owned()
            }
            PoolEntry::Range { first, last } if last < first => {
                format!("the range ends ({last}) before it starts ({first})")
            }
            _ => return Ok(()),
        };
        Err(PoolError::InvalidEntry {
            entry: self.to_string(),
            reason,
        })
    }

    /// The lowest and highest usable addresses, as integers.
    fn usable_bounds(&self) -> (u128, u128) {
        match *self {
            PoolEntry::Range { first, last } => (to_u128(first), to_u128(last)),
            PoolEntry::Cidr(net) => {
                let net = net.trunc();
                let (lo, hi) = (to_u128(net.network()), to_u128(net.broadcast()));
                let host_bits = net.max_prefix_len() - net.prefix_len();
                match (IpFamily::of_net(&net), host_bits) {
                    // /31, /32, /127, /128: every address.
                    (_, 0 | 1) => (lo, hi),
                    (IpFamily::Ipv4, _) => (lo + 1, hi - 1),
                    (IpFamily::Ipv6, _) => (lo + 1, hi),
                }
            }
        }
    }

    /// The lowest and highest usable addresses of the entry.
    pub fn usable_range(&self) -> (IpAddr, IpAddr) {
        let (lo, hi) = self.usable_bounds();
        let family = self.family();
        // Bounds come from addresses of `family`, so they convert back.
        let conv = |n| from_u128(family, n).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        (conv(lo), conv(hi))
    }
}

impl fmt::Display for PoolEntry {
    /// The CIDR, `first-last`, or the single address.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolEntry::Cidr(net) => write!(f, "{net}"),
            PoolEntry::Range { first, last } if first == last => write!(f, "{first}"),
            PoolEntry::Range { first, last } => write!(f, "{first}-{last}"),
        }
    }
}

impl FromStr for PoolEntry {
    type Err = PoolError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for PoolEntry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PoolEntry {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The usable addresses of one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    family: IpFamily,
    first: u128,
    last: u128,
}

impl Segment {
    fn first_addr(&self) -> IpAddr {
        self.addr(self.first)
    }

    fn last_addr(&self) -> IpAddr {
        self.addr(self.last)
    }

    fn addr(&self, n: u128) -> IpAddr {
        from_u128(self.family, n).unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
    }

    /// Number of addresses, saturating for a whole-IPv6-space range.
    fn size(&self) -> u128 {
        (self.last - self.first).saturating_add(1)
    }
}

/// A pool of LoadBalancer ingress addresses; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbPool {
    entries: Vec<PoolEntry>,
    /// Usable bounds of every entry, sorted (all IPv4 before all IPv6).
    segments: Vec<Segment>,
    allocated: BTreeSet<IpAddr>,
}

impl LbPool {
    /// An empty pool over `entries`; fails if an entry is malformed (see
    /// [`PoolEntry::parse`]) or two entries overlap.
    pub fn new(entries: Vec<PoolEntry>) -> Result<Self, PoolError> {
        for entry in &entries {
            entry.validate()?;
        }
        let mut indexed: Vec<(Segment, usize)> = entries
            .iter()
            .enumerate()
            .map(|(i, e)| {
                let (first, last) = e.usable_bounds();
                (
                    Segment {
                        family: e.family(),
                        first,
                        last,
                    },
                    i,
                )
            })
            .collect();
        indexed.sort_by_key(|(s, _)| (s.family, s.first));
        for pair in indexed.windows(2) {
            let ((a, ai), (b, bi)) = (pair[0], pair[1]);
            if a.family == b.family && b.first <= a.last {
                return Err(PoolError::Overlap {
                    first: entries[ai].to_string(),
                    second: entries[bi].to_string(),
                });
            }
        }
        let segments = indexed.into_iter().map(|(s, _)| s).collect();
        Ok(Self {
            entries,
            segments,
            allocated: BTreeSet::new(),
        })
    }

    /// Parses every entry (see [`PoolEntry::parse`]) and builds the pool.
    pub fn parse<I, S>(entries: I) -> Result<Self, PoolError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let entries = entries
            .into_iter()
            .map(|e| PoolEntry::parse(e.as_ref()))
            .collect::<Result<_, _>>()?;
        Self::new(entries)
    }

    /// A pool over `entries` holding every address of `in_use` (the ingress
    /// addresses stored in Services), for the start-up repair pass. Addresses
    /// outside the pool and repeated addresses are listed in the report.
    pub fn rebuild(
        entries: Vec<PoolEntry>,
        in_use: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(Self, RebuildReport<IpAddr>), PoolError> {
        let mut pool = Self::new(entries)?;
        let mut report = RebuildReport::new();
        for ip in in_use {
            match pool.allocate(ip) {
                Ok(()) => {}
                Err(PoolError::InUse { .. }) => report.duplicates.push(ip),
                Err(_) => report.out_of_range.push(ip),
            }
        }
        Ok((pool, report))
    }

    /// The entries, as given.
    pub fn entries(&self) -> &[PoolEntry] {
        &self.entries
    }

    fn segment_of(&self, ip: IpAddr) -> Option<&Segment> {
        let family = IpFamily::of(ip);
        let n = to_u128(ip);
        let i = self
            .segments
            .partition_point(|s| (s.family, s.last) < (family, n));
        self.segments
            .get(i)
            .filter(|s| s.family == family && s.first <= n)
    }

    /// Whether `ip` is a usable address of the pool (allocated or not).
    pub fn in_pool(&self, ip: IpAddr) -> bool {
        self.segment_of(canonical(ip)).is_some()
    }

    /// Whether `ip` is allocated.
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.allocated.contains(&canonical(ip))
    }

    /// Number of usable addresses of `family` (saturating at `u128::MAX`).
    pub fn capacity(&self, family: IpFamily) -> u128 {
        self.segments
            .iter()
            .filter(|s| s.family == family)
            .fold(0u128, |n, s| n.saturating_add(s.size()))
    }

    /// Number of allocated addresses, both families.
    pub fn used(&self) -> usize {
        self.allocated.len()
    }

    /// Number of allocated addresses of `family`.
    pub fn used_in(&self, family: IpFamily) -> usize {
        self.allocated
            .iter()
            .filter(|ip| IpFamily::of(**ip) == family)
            .count()
    }

    /// Number of free addresses of `family`.
    pub fn free(&self, family: IpFamily) -> u128 {
        self.capacity(family).saturating_sub(self.used_in(family) as u128)
    }

    /// Allocates a specific address.
    pub fn allocate(&mut self, ip: IpAddr) -> Result<(), PoolError> {
        let ip = canonical(ip);
        if self.segment_of(ip).is_none() {
            return Err(PoolError::NotInPool { ip });
        }
        if !self.allocated.insert(ip) {
            return Err(PoolError::InUse { ip });
        }
        Ok(())
    }

    /// Allocates the lowest free address of `family`.
    pub fn allocate_next(&mut self, family: IpFamily) -> Result<IpAddr, PoolError> {
        let mut any = false;
        for seg in self.segments.iter().filter(|s| s.family == family) {
            any = true;
            // Walk the allocated addresses of this segment in order; the first
            // gap is the lowest free address. Cost is linear in the number of
            // allocations in the segment, not in its size.
            let mut candidate = Some(seg.first);
            for taken in self.allocated.range(seg.first_addr()..=seg.last_addr()) {
                match candidate {
                    Some(c) if to_u128(*taken) == c => candidate = c.checked_add(1),
                    _ => break,
                }
            }
            if let Some(c) = candidate.filter(|c| *c <= seg.last) {
                let ip = seg.addr(c);
                self.allocated.insert(ip);
                return Ok(ip);
            }
        }
        Err(if any {
            PoolError::Exhausted { family }
        } else {
            PoolError::NoAddresses { family }
        })
    }

    /// Releases `ip`; returns whether it was allocated.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        self.allocated.remove(&canonical(ip))
    }

    /// Allocated addresses in ascending order (IPv4 first).
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.allocated.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_entries() {
        assert_eq!(
            PoolEntry::parse("192.0.2.0/28").unwrap(),
            PoolEntry::Cidr("192.0.2.0/28".parse().unwrap())
        );
        assert_eq!(
            PoolEntry::parse(" 192.0.2.10 - 192.0.2.20 ").unwrap(),
            PoolEntry::Range {
                first: ip("192.0.2.10"),
                last: ip("192.0.2.20")
            }
        );
        assert_eq!(
            PoolEntry::parse("2001:db8::10-2001:db8::1f").unwrap(),
            PoolEntry::Range {
                first: ip("2001:db8::10"),
                last: ip("2001:db8::1f")
            }
        );
        assert_eq!(
            PoolEntry::parse("198.51.100.7").unwrap(),
            PoolEntry::Range {
                first: ip("198.51.100.7"),
                last: ip("198.51.100.7")
            }
        );
        assert_eq!(
            PoolEntry::parse("2001:db8::/120").unwrap().family(),
            IpFamily::Ipv6
        );
        for text in [
            "192.0.2.0/28",
            "192.0.2.10-192.0.2.20",
            "2001:db8::/120",
            "198.51.100.7",
        ] {
            assert_eq!(PoolEntry::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn bad_entries_have_clear_errors() {
        let err = |s: &str| PoolEntry::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("192.0.2.5/28"),
            "invalid load-balancer address pool entry \"192.0.2.5/28\": host bits are set; the network is 192.0.2.0/28"
        );
        assert_eq!(
            err("192.0.2.0/33"),
            "invalid load-balancer address pool entry \"192.0.2.0/33\": not a valid CIDR"
        );
        assert_eq!(
            err("192.0.2.1-2001:db8::1"),
            "invalid load-balancer address pool entry \"192.0.2.1-2001:db8::1\": the range mixes IPv4 and IPv6 addresses"
        );
        assert_eq!(
            err("192.0.2.20-192.0.2.10"),
            "invalid load-balancer address pool entry \"192.0.2.20-192.0.2.10\": the range ends (192.0.2.10) before it starts (192.0.2.20)"
        );
        assert_eq!(
            err("pool-a"),
            "invalid load-balancer address pool entry \"pool-a\": \"pool\" is not an IP address"
        );
        assert_eq!(
            err(""),
            "invalid load-balancer address pool entry \"\": \"\" is not an IP address"
        );
        assert!(PoolEntry::parse("1.2.3.4-").is_err());
        assert!(PoolEntry::parse("1.2.3.4-5.6.7.8-9.9.9.9").is_err());
    }

    #[test]
    fn cidr_usable_addresses() {
        let cases = [
            ("192.0.2.0/28", "192.0.2.1", "192.0.2.14"),
            ("192.0.2.0/30", "192.0.2.1", "192.0.2.2"),
            ("192.0.2.0/31", "192.0.2.0", "192.0.2.1"),
            ("192.0.2.9/32", "192.0.2.9", "192.0.2.9"),
            ("2001:db8::/120", "2001:db8::1", "2001:db8::ff"),
            ("2001:db8::/127", "2001:db8::", "2001:db8::1"),
            ("2001:db8::5/128", "2001:db8::5", "2001:db8::5"),
            ("192.0.2.0-192.0.2.255", "192.0.2.0", "192.0.2.255"),
        ];
        for (entry, lo, hi) in cases {
            assert_eq!(
                PoolEntry::parse(entry).unwrap().usable_range(),
                (ip(lo), ip(hi)),
                "{entry}"
            );
        }
        let pool = LbPool::parse(["192.0.2.0/28"]).unwrap();
        assert_eq!(pool.capacity(IpFamily::Ipv4), 14);
        assert!(!pool.in_pool(ip("192.0.2.0")));
        assert!(!pool.in_pool(ip("192.0.2.15")));
        assert!(pool.in_pool(ip("192.0.2.14")));
    }

    #[test]
    fn lowest_free_address_per_family() {
        let mut pool = LbPool::parse([
            "192.0.2.10-192.0.2.12",
            "2001:db8::/126",
            "198.51.100.0/31",
            "10.0.0.1",
        ])
        .unwrap();
        assert_eq!(pool.capacity(IpFamily::Ipv4), 6);
        assert_eq!(pool.capacity(IpFamily::Ipv6), 3);
        let v4: Vec<_> = (0..6)
            .map(|_| pool.allocate_next(IpFamily::Ipv4).unwrap())
            .collect();
        assert_eq!(
            v4,
            [
                "10.0.0.1",
                "192.0.2.10",
                "192.0.2.11",
                "192.0.2.12",
                "198.51.100.0",
                "198.51.100.1"
            ]
            .map(ip)
            .to_vec()
        );
        assert_eq!(
            pool.allocate_next(IpFamily::Ipv4).unwrap_err().to_string(),
            "the load-balancer address pool has no free IPv4 addresses"
        );
        assert_eq!(pool.allocate_next(IpFamily::Ipv6), Ok(ip("2001:db8::1")));
        assert!(pool.release(ip("192.0.2.11")));
        assert_eq!(
            pool.allocate_next(IpFamily::Ipv4),
            Ok(ip("192.0.2.11")),
            "gaps are refilled first"
        );
        assert_eq!(pool.used(), 7);
        assert_eq!(pool.used_in(IpFamily::Ipv6), 1);
        assert_eq!(pool.free(IpFamily::Ipv6), 2);
    }

    #[test]
    fn specific_addresses() {
        let mut pool = LbPool::parse(["192.0.2.0/29"]).unwrap();
        pool.allocate(ip("192.0.2.3")).unwrap();
        assert_eq!(
            pool.allocate(ip("192.0.2.3")).unwrap_err().to_string(),
            "address 192.0.2.3 is already in use"
        );
        assert_eq!(
            pool.allocate(ip("192.0.2.7")).unwrap_err().to_string(),
            "address 192.0.2.7 is not in the load-balancer address pool"
        );
        assert_eq!(pool.allocate_next(IpFamily::Ipv4), Ok(ip("192.0.2.1")));
        assert_eq!(pool.allocate_next(IpFamily::Ipv4), Ok(ip("192.0.2.2")));
        assert_eq!(pool.allocate_next(IpFamily::Ipv4), Ok(ip("192.0.2.4")));
        assert!(pool.is_allocated(ip("::ffff:192.0.2.4")));
        assert_eq!(
            pool.allocate_next(IpFamily::Ipv6).unwrap_err().to_string(),
            "the load-balancer address pool has no IPv6 addresses"
        );
        assert!(!pool.release(ip("192.0.2.6")));
        assert_eq!(
            pool.iter().collect::<Vec<_>>(),
            ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"].map(ip)
        );
    }

    #[test]
    fn hand_built_entries_are_validated() {
        let bad = [
            PoolEntry::Range {
                first: ip("192.0.2.9"),
                last: ip("192.0.2.1"),
            },
            PoolEntry::Range {
                first: ip("192.0.2.1"),
                last: ip("2001:db8::1"),
            },
            PoolEntry::Cidr("192.0.2.1/24".parse().unwrap()),
        ];
        for entry in bad {
            assert!(
                matches!(LbPool::new(vec![entry]), Err(PoolError::InvalidEntry { .. })),
                "{entry}"
            );
        }
        assert_eq!(
            LbPool::new(vec![bad[0]]).unwrap_err().to_string(),
            "invalid load-balancer address pool entry \"192.0.2.9-192.0.2.1\": the range ends (192.0.2.1) before it starts (192.0.2.9)"
        );
    }

    #[test]
    fn overlapping_entries_are_rejected() {
        assert_eq!(
            LbPool::parse(["192.0.2.0/28", "192.0.2.10-192.0.2.20"])
                .unwrap_err()
                .to_string(),
            "load-balancer address pool entries \"192.0.2.0/28\" and \"192.0.2.10-192.0.2.20\" overlap"
        );
        assert!(LbPool::parse(["2001:db8::/120", "2001:db8::ff"]).is_err());
        // Unusable network/broadcast addresses do not count as overlap.
        assert!(LbPool::parse(["192.0.2.0/28", "192.0.2.15", "192.0.2.0"]).is_ok());
        assert!(
            LbPool::parse(["192.0.2.0/28", "::ffff:192.0.2.0/124"]).is_ok(),
            "different families"
        );
    }

    #[test]
    fn huge_ranges() {
        let mut pool = LbPool::parse(["2001:db8::/64", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"]);
        assert!(pool.is_err(), "overlap");
        pool = LbPool::parse(["::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]);
        let mut pool = pool.unwrap();
        assert_eq!(pool.capacity(IpFamily::Ipv6), u128::MAX);
        assert_eq!(pool.allocate_next(IpFamily::Ipv6), Ok(ip("::")));
        pool.allocate(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"))
            .unwrap();
        let mut tail = LbPool::parse([
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ])
        .unwrap();
        tail.allocate_next(IpFamily::Ipv6).unwrap();
        tail.allocate_next(IpFamily::Ipv6).unwrap();
        assert!(matches!(
            tail.allocate_next(IpFamily::Ipv6),
            Err(PoolError::Exhausted { .. })
        ));
        let mut v6 = LbPool::parse(["2001:db8::/64"]).unwrap();
        assert_eq!(v6.capacity(IpFamily::Ipv6), (1u128 << 64) - 1);
        assert_eq!(v6.allocate_next(IpFamily::Ipv6), Ok(ip("2001:db8::1")));
    }

    #[test]
    fn rebuild_and_serde() {
        let entries = vec![PoolEntry::parse("192.0.2.0/29").unwrap()];
        let (pool, report) = LbPool::rebuild(
            entries.clone(),
            ["192.0.2.1", "192.0.2.1", "192.0.2.7", "203.0.113.1", "192.0.2.6"].map(ip),
        )
        .unwrap();
        assert_eq!(report.duplicates, vec![ip("192.0.2.1")]);
        assert_eq!(report.out_of_range, vec![ip("192.0.2.7"), ip("203.0.113.1")]);
        let (again, clean) = LbPool::rebuild(entries, pool.iter()).unwrap();
        assert!(clean.is_clean());
        assert_eq!(again, pool);
        let json = serde_json::to_string(pool.entries()).unwrap();
        assert_eq!(json, "[\"192.0.2.0/29\"]");
        let back: Vec<PoolEntry> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pool.entries());
        assert!(serde_json::from_str::<PoolEntry>("\"nope\"").is_err());
    }
}
