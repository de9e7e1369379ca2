//! Property tests: random sequences of allocate / allocate-specific / release
//! / rebuild against a simple model, for all three allocators.
//!
//! Invariants checked after every step: no value is handed out twice,
//! nothing leaks (`used + free == capacity`, and the allocated set equals the
//! model), rebuilding from the in-use list reproduces the same state, and
//! dynamic allocation never takes from the static band while the dynamic band
//! has room.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::IpNet;
use proptest::prelude::*;
use svcnet_alloc::{
    ClusterIpAllocator, ClusterIpError, IpFamily, LbPool, NodePortAllocator, NodePortError, PoolEntry,
    PoolError, PortRange, SplitMix64, nth_address,
};

#[derive(Debug, Clone)]
enum Op {
    /// Dynamic allocation with a fresh random source seeded from this value.
    Next(u64),
    /// Allocate the value at this index (may be outside the range).
    Specific(u32),
    /// Release the value at this index (may be free or outside the range).
    Release(u32),
    /// Replace the allocator by one rebuilt from its own in-use list.
    Rebuild,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => any::<u64>().prop_map(Op::Next),
        3 => any::<u32>().prop_map(Op::Specific),
        2 => any::<u32>().prop_map(Op::Release),
        1 => Just(Op::Rebuild),
    ]
}

fn cidr() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        Just("10.0.0.0/30"),
        Just("10.0.0.0/28"),
        Just("10.0.0.0/27"),
        Just("10.0.0.0/26"),
        Just("172.16.0.0/24"),
        Just("10.0.0.0/31"),
        Just("fd00::/126"),
        Just("fd00::/124"),
        Just("fd00::/123"),
        Just("fd00:1::/120"),
    ]
    .prop_map(|s| s.parse().unwrap())
}

fn check_cluster_ip(a: &ClusterIpAllocator, model: &BTreeSet<IpAddr>) {
    assert_eq!(a.used() + a.free(), a.capacity());
    assert_eq!(a.used(), model.len());
    assert_eq!(a.iter().collect::<BTreeSet<_>>(), *model);
    assert!(a.iter().all(|ip| a.in_range(ip) && a.is_allocated(ip)));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn cluster_ip_sequences(cidr in cidr(), ops in prop::collection::vec(op(), 1..120)) {
        let mut a = ClusterIpAllocator::new(cidr).unwrap();
        let mut model = BTreeSet::new();
        let host_span = 1u128 << (cidr.max_prefix_len() - cidr.prefix_len());
        // Index into the CIDR plus a few addresses beyond it.
        let pick = |i: u32| {
            let idx = u128::from(i) % (host_span + 4);
            nth_address(&cidr, idx).or_else(|| {
                // Past the end of the CIDR: the next network's first addresses.
                let last = nth_address(&cidr, host_span - 1)?;
                let step = idx - host_span + 1;
                match last {
                    IpAddr::V4(v4) => u32::from(v4).checked_add(step as u32).map(|n| IpAddr::V4(n.into())),
                    IpAddr::V6(v6) => u128::from(v6).checked_add(step).map(|n| IpAddr::V6(n.into())),
                }
            })
        };
        for op in ops {
            match op {
                Op::Next(seed) => {
                    let static_used = model.iter().filter(|ip| a.in_static_band(**ip)).count();
                    let dynamic_room = a.capacity() - a.static_band_size() > model.len() - static_used;
                    prop_assert_eq!(a.dynamic_band_free() > 0, dynamic_room);
                    match a.allocate_next(&mut SplitMix64::new(seed)) {
                        Ok(ip) => {
                            prop_assert!(a.in_range(ip));
                            prop_assert!(model.insert(ip), "duplicate {}", ip);
                            if dynamic_room {
                                prop_assert!(!a.in_static_band(ip), "{} from the static band", ip);
                            }
                        }
                        Err(e) => {
                            prop_assert_eq!(e, ClusterIpError::Full);
                            prop_assert_eq!(model.len(), a.capacity());
                        }
                    }
                }
                Op::Specific(i) => {
                    let Some(ip) = pick(i) else { continue };
                    match a.allocate(ip) {
                        Ok(()) => prop_assert!(model.insert(ip)),
                        Err(ClusterIpError::Allocated) => prop_assert!(model.contains(&ip)),
                        Err(ClusterIpError::NotInRange { .. }) => prop_assert!(!a.in_range(ip)),
                        Err(ClusterIpError::Full) => prop_assert!(false, "Full from a specific allocation"),
                    }
                }
                Op::Release(i) => {
                    let Some(ip) = pick(i) else { continue };
                    prop_assert_eq!(a.release(ip), model.remove(&ip));
                }
                Op::Rebuild => {
                    let (b, report) = ClusterIpAllocator::rebuild(cidr, a.iter()).unwrap();
                    prop_assert!(report.is_clean());
                    prop_assert_eq!(&b, &a);
                    a = b;
                }
            }
            check_cluster_ip(&a, &model);
        }
    }

    #[test]
    fn node_port_sequences(
        first in 0u16..=65535,
        len in 1u32..300,
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let last = (u32::from(first) + len - 1).min(65535) as u16;
        let range = PortRange::new(first, last).unwrap();
        let mut a = NodePortAllocator::new(range);
        let mut model = BTreeSet::new();
        // Ports in the range plus a few either side (and negative ones).
        let pick = |i: u32| i32::from(first) - 3 + (i % (range.size() as u32 + 6)) as i32;
        for op in ops {
            match op {
                Op::Next(seed) => {
                    let static_used = model.iter().filter(|p| a.in_static_band(**p)).count();
                    let dynamic_room = a.capacity() - a.static_band_size() > model.len() - static_used;
                    prop_assert_eq!(a.dynamic_band_free() > 0, dynamic_room);
                    match a.allocate_next(&mut SplitMix64::new(seed)) {
                        Ok(p) => {
                            prop_assert!(range.contains(p));
                            prop_assert!(model.insert(p), "duplicate {}", p);
                            if dynamic_room {
                                prop_assert!(!a.in_static_band(p), "{} from the static band", p);
                            }
                        }
                        Err(e) => {
                            prop_assert_eq!(e, NodePortError::Full);
                            prop_assert_eq!(model.len(), a.capacity());
                        }
                    }
                }
                Op::Specific(i) => {
                    let p = pick(i);
                    match a.allocate(p) {
                        Ok(()) => prop_assert!(model.insert(p)),
                        Err(NodePortError::Allocated) => prop_assert!(model.contains(&p)),
                        Err(NodePortError::NotInRange { valid_ports }) => {
                            prop_assert_eq!(valid_ports, range);
                            prop_assert!(!range.contains(p));
                        }
                        Err(NodePortError::Full) => prop_assert!(false, "Full from a specific allocation"),
                    }
                }
                Op::Release(i) => {
                    let p = pick(i);
                    prop_assert_eq!(a.release(p), model.remove(&p));
                }
                Op::Rebuild => {
                    let (b, report) = NodePortAllocator::rebuild(range, a.iter());
                    prop_assert!(report.is_clean());
                    prop_assert_eq!(&b, &a);
                    a = b;
                }
            }
            prop_assert_eq!(a.used() + a.free(), a.capacity());
            prop_assert_eq!(a.iter().collect::<BTreeSet<_>>(), model.clone());
        }
    }

    #[test]
    fn lb_pool_sequences(
        entry_set in prop::sample::subsequence(
            vec![
                "192.0.2.0/29",
                "192.0.2.16-192.0.2.20",
                "192.0.2.30",
                "198.51.100.0/31",
                "2001:db8::/125",
                "2001:db8::100-2001:db8::104",
                "2001:db8::200/128",
            ],
            0..=7,
        ),
        ops in prop::collection::vec((op(), any::<bool>()), 1..120),
    ) {
        let entries: Vec<PoolEntry> = entry_set.iter().map(|e| e.parse().unwrap()).collect();
        let mut pool = LbPool::new(entries.clone()).unwrap();
        // Every usable address, by brute force (the pools are tiny).
        let mut usable = BTreeSet::new();
        for e in &entries {
            let (lo, hi) = e.usable_range();
            let mut ip = lo;
            loop {
                usable.insert(ip);
                if ip == hi {
                    break;
                }
                ip = match ip {
                    IpAddr::V4(v) => IpAddr::V4((u32::from(v) + 1).into()),
                    IpAddr::V6(v) => IpAddr::V6((u128::from(v) + 1).into()),
                };
            }
        }
        // Candidates: every usable address plus some that are not.
        let mut candidates: Vec<IpAddr> = usable.iter().copied().collect();
        candidates.extend(["192.0.2.7", "192.0.2.15", "203.0.113.9", "2001:db8::", "2001:db8::105"]
            .map(|s| s.parse::<IpAddr>().unwrap()));
        let mut model = BTreeSet::new();
        for (op, v6) in ops {
            let family = if v6 { IpFamily::Ipv6 } else { IpFamily::Ipv4 };
            match op {
                Op::Next(_) => {
                    let want = usable.iter().find(|ip| IpFamily::of(**ip) == family && !model.contains(*ip));
                    match (pool.allocate_next(family), want) {
                        (Ok(ip), Some(w)) => {
                            prop_assert_eq!(ip, *w, "not the lowest free address");
                            prop_assert!(model.insert(ip));
                        }
                        (Err(PoolError::Exhausted { .. } | PoolError::NoAddresses { .. }), None) => {}
                        (got, want) => prop_assert!(false, "got {:?}, want {:?}", got, want),
                    }
                }
                Op::Specific(i) => {
                    let ip = candidates[i as usize % candidates.len()];
                    match pool.allocate(ip) {
                        Ok(()) => prop_assert!(model.insert(ip)),
                        Err(PoolError::InUse { .. }) => prop_assert!(model.contains(&ip)),
                        Err(PoolError::NotInPool { .. }) => prop_assert!(!usable.contains(&ip)),
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                }
                Op::Release(i) => {
                    let ip = candidates[i as usize % candidates.len()];
                    prop_assert_eq!(pool.release(ip), model.remove(&ip));
                }
                Op::Rebuild => {
                    let (b, report) = LbPool::rebuild(entries.clone(), pool.iter()).unwrap();
                    prop_assert!(report.is_clean());
                    prop_assert_eq!(&b, &pool);
                    pool = b;
                }
            }
            for fam in [IpFamily::Ipv4, IpFamily::Ipv6] {
                let cap = usable.iter().filter(|ip| IpFamily::of(**ip) == fam).count() as u128;
                prop_assert_eq!(pool.capacity(fam), cap);
                prop_assert_eq!(pool.used_in(fam) as u128 + pool.free(fam), cap);
            }
            prop_assert_eq!(pool.iter().collect::<BTreeSet<_>>(), model.clone());
        }
    }

    #[test]
    fn rebuild_reports_exactly_the_bad_values(
        cidr in cidr(),
        picks in prop::collection::vec(any::<u16>(), 0..60),
    ) {
        let span = 1u128 << (cidr.max_prefix_len() - cidr.prefix_len());
        let ips: Vec<IpAddr> = picks.iter().filter_map(|p| nth_address(&cidr, u128::from(*p) % span)).collect();
        let (a, report) = ClusterIpAllocator::rebuild(cidr, ips.iter().copied()).unwrap();
        let mut seen = BTreeSet::new();
        let (mut dups, mut out) = (Vec::new(), Vec::new());
        for ip in &ips {
            if !a.in_range(*ip) {
                out.push(*ip);
            } else if !seen.insert(*ip) {
                dups.push(*ip);
            }
        }
        prop_assert_eq!(report.out_of_range, out);
        prop_assert_eq!(report.duplicates, dups);
        prop_assert_eq!(a.iter().collect::<BTreeSet<_>>(), seen);
    }

    #[test]
    fn any_network_and_address_is_handled(
        v6 in any::<bool>(),
        bits in any::<u128>(),
        len in 0u8..=128,
        probe in any::<u128>(),
        seed in any::<u64>(),
    ) {
        let (cidr, probe) = if v6 {
            (
                IpNet::new(IpAddr::V6(bits.into()), len).unwrap(),
                IpAddr::V6(probe.into()),
            )
        } else {
            (
                IpNet::new(IpAddr::V4((bits as u32).into()), len % 33).unwrap(),
                IpAddr::V4((probe as u32).into()),
            )
        };
        match ClusterIpAllocator::new(cidr) {
            Ok(mut a) => {
                let _ = a.allocate(probe);
                let _ = a.allocate_next(&mut SplitMix64::new(seed));
                prop_assert_eq!(a.used() + a.free(), a.capacity());
                prop_assert!(a.iter().all(|ip| cidr.trunc().contains(&ip)));
                prop_assert!(a.release(probe) || !a.is_allocated(probe));
            }
            Err(_) => prop_assert!(!v6 && len % 33 < 12),
        }
    }

    #[test]
    fn parsing_never_panics(s in "\\PC{0,40}") {
        let _ = PortRange::parse(&s);
        let _ = PoolEntry::parse(&s);
        let _ = LbPool::parse(s.split(','));
    }

    #[test]
    fn port_range_text_round_trips(first in 0u16..=65535, last in 0u16..=65535) {
        if let Some(r) = PortRange::new(first, last) {
            prop_assert_eq!(PortRange::parse(&r.to_string()).unwrap(), r);
        } else {
            let text = format!("{first}-{last}");
            prop_assert!(PortRange::parse(&text).is_err());
        }
    }
}
