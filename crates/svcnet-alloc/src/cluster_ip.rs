//! Service ClusterIP allocation out of one service CIDR.
//!
//! Mirrors kube-apiserver's bitmap allocator
//! (`pkg/registry/core/service/ipallocator/bitmap.go`):
//!
//! * The network address (offset 0; for IPv6 the subnet-router anycast
//!   address) is never handed out, and for IPv4 neither is the broadcast
//!   address. IPv6 has no broadcast, so its last address *is* usable.
//! * The bitmap covers at most [`MAX_IPV6_RANGE_SIZE`] (65536) addresses of an
//!   IPv6 CIDR, i.e. offsets 1..=65535 from the network address; anything
//!   above is "not in the valid range" exactly as in kube.
//! * /31 and /32 (IPv4) and /127 and /128 (IPv6) have no usable addresses.
//! * KEP-3070: the lowest `min(max(16, size/16), 256)` usable addresses (none
//!   when the CIDR has 16 addresses or fewer, where `size` is the full CIDR
//!   size before any cap) form the static band, which dynamic allocation only
//!   uses once the rest of the range is full.

use std::net::IpAddr;

use ipnet::IpNet;
use thiserror::Error;

use crate::addr::{IpFamily, canonical, from_u128, to_u128};
use crate::band::{Banded, range_offset};
use crate::rebuild::RebuildReport;
use crate::rng::RandomSource;

/// Largest IPv6 range kube's bitmap allocator tracks (the bitmap is capped at
/// 64Ki bits; minus the network address this leaves 65535 usable addresses).
pub const MAX_IPV6_RANGE_SIZE: u32 = 65536;

/// kube-apiserver refuses a `--service-cluster-ip-range` with more host bits
/// than this (`maxCIDRBits`): /12 for IPv4, /108 for IPv6.
pub const MAX_SERVICE_CIDR_HOST_BITS: u8 = 20;

/// Errors from ClusterIP allocation; `Display` is kube's text, verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ClusterIpError {
    /// The address is outside the usable part of the service CIDR (kube's
    /// `ErrNotInRange`).
    #[error("the provided IP ({ip}) is not in the valid range. The range of valid IPs is {valid_range}")]
    NotInRange {
        /// The requested address.
        ip: IpAddr,
        /// The service CIDR, printed in its canonical (masked) form.
        valid_range: IpNet,
    },
    /// The address is already taken (kube's `ErrAllocated`).
    #[error("provided IP is already allocated")]
    Allocated,
    /// No free address is left (kube's `ErrFull`).
    #[error("range is full")]
    Full,
}

/// Errors building a [`ClusterIpAllocator`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CidrError {
    /// An IPv4 CIDR with more than [`MAX_SERVICE_CIDR_HOST_BITS`] host bits;
    /// its bitmap would be unreasonably large. (IPv6 CIDRs are never too
    /// large: their bitmap is capped at [`MAX_IPV6_RANGE_SIZE`].)
    #[error(
        "service CIDR {cidr} is too large; for {address_bits}-bit addresses, the mask must be >= {min_prefix_len}"
    )]
    TooLarge {
        /// The rejected CIDR.
        cidr: IpNet,
        /// 32 or 128.
        address_bits: u8,
        /// The shortest accepted prefix length.
        min_prefix_len: u8,
    },
}

/// kube-apiserver's start-up check on a service CIDR flag: at most
/// [`MAX_SERVICE_CIDR_HOST_BITS`] host bits, for either family. `flag` is the
/// name kube prints, e.g. `--service-cluster-ip-range` or
/// `--service-cluster-ip-range[1]`; the error is kube's text.
///
/// ```
/// # use svcnet_alloc::validate_service_cidr_flag;
/// let err = validate_service_cidr_flag(&"10.0.0.0/8".parse().unwrap(), "--service-cluster-ip-range");
/// assert_eq!(
///     err.unwrap_err(),
///     "specified --service-cluster-ip-range is too large; for 32-bit addresses, the mask must be >= 12"
/// );
/// ```
pub fn validate_service_cidr_flag(cidr: &IpNet, flag: &str) -> Result<(), String> {
    let bits = cidr.max_prefix_len();
    if bits - cidr.prefix_len() > MAX_SERVICE_CIDR_HOST_BITS {
        return Err(format!(
            "specified {flag} is too large; for {bits}-bit addresses, the mask must be >= {}",
            bits - MAX_SERVICE_CIDR_HOST_BITS
        ));
    }
    Ok(())
}

/// kube's `netutils.RangeSize`: the CIDR size, 0 for /31, /32, /127, /128.
fn kube_range_size(net: &IpNet) -> u128 {
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    match host_bits {
        0 | 1 => 0,
        // Saturate a /0 IPv6 range; only comparisons with small numbers follow.
        128 => u128::MAX,
        n => 1u128 << n,
    }
}

/// The usable addresses of a (masked) CIDR: neither the network nor, for IPv4, the broadcast address;
/// an IPv6 range capped at [`MAX_IPV6_RANGE_SIZE`].
fn usable_size(net: &IpNet) -> usize {
    let size = kube_range_size(net);
    let usable = match IpFamily::of_net(net) {
        IpFamily::Ipv4 => size.saturating_sub(2),
        // Only the network (subnet-router anycast) address is reserved, after capping.
        IpFamily::Ipv6 => size.min(u128::from(MAX_IPV6_RANGE_SIZE)).saturating_sub(1),
    };
    usize::try_from(usable).unwrap_or(usize::MAX)
}

/// The usable addresses of one service CIDR and its KEP-3070 bands, without a bitmap: what an allocator
/// needs whose allocations live elsewhere (kube's `ipallocator.Allocator` keeps them as IPAddress
/// objects). [`ClusterIpRange::scan`] yields candidates in the order kube tries them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterIpRange {
    cidr: IpNet,
    family: IpFamily,
    /// Integer value of the address at offset 0 (network address + 1).
    base: u128,
    usable: usize,
    static_band: usize,
}

impl ClusterIpRange {
    /// The range of `cidr` (host bits masked off). Any size is accepted: nothing is allocated per address.
    pub fn new(cidr: IpNet) -> Self {
        let net = cidr.trunc();
        let usable = usable_size(&net);
        Self {
            cidr: net,
            family: IpFamily::of_net(&net),
            base: to_u128(net.network()).saturating_add(1),
            usable,
            static_band: range_offset(kube_range_size(&net), 16, 256, 16).min(usable),
        }
    }

    /// The CIDR (masked).
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The CIDR's family.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// Number of usable addresses.
    pub fn capacity(&self) -> usize {
        self.usable
    }

    /// Whether `ip` is a usable address of the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        IpFamily::of(ip) == self.family
            && to_u128(ip)
                .checked_sub(self.base)
                .is_some_and(|off| off < self.usable as u128)
    }

    fn addr_at(&self, offset: usize) -> Option<IpAddr> {
        from_u128(self.family, self.base.checked_add(offset as u128)?)
    }

    /// Every usable address once, in kube's order for a dynamic allocation: from a random start in the
    /// dynamic (upper) band forward, wrapping within it, then the static (lower) band the same way.
    /// The starting points come from `seed` (a fresh random value per allocation), so the iterator
    /// borrows nothing but the range.
    pub fn scan(&self, seed: u64) -> impl Iterator<Item = IpAddr> + '_ {
        let rng = &mut crate::rng::SplitMix64::new(seed);
        let (lo, len) = (self.static_band, self.usable);
        let upper_start = if len > lo {
            lo + crate::rng::below(rng, len - lo)
        } else {
            lo
        };
        let lower_start = if lo > 0 { crate::rng::below(rng, lo) } else { 0 };
        let upper = (upper_start..len).chain(lo..upper_start);
        let lower = (lower_start..lo).chain(0..lower_start);
        upper.chain(lower).filter_map(|o| self.addr_at(o))
    }
}

/// Size of the KEP-3070 static band for a service CIDR (kube's
/// `calculateRangeOffset`): 0 for CIDRs of 16 addresses or fewer, otherwise
/// `min(max(16, size/16), 256)`.
pub fn cluster_ip_static_band_size(cidr: &IpNet) -> usize {
    range_offset(kube_range_size(&cidr.trunc()), 16, 256, 16)
}

/// Allocates Service ClusterIPs out of one service CIDR.
///
/// Internally a bitmap over the usable addresses: offset `i` is the address
/// `network + 1 + i`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterIpAllocator {
    cidr: IpNet,
    family: IpFamily,
    /// Integer value of the address at offset 0 (network address + 1).
    base: u128,
    core: Banded,
}

impl ClusterIpAllocator {
    /// An empty allocator for `cidr` (host bits, if any, are masked off as
    /// kube's sloppy CIDR parsing does).
    pub fn new(cidr: IpNet) -> Result<Self, CidrError> {
        let net = cidr.trunc();
        let family = IpFamily::of_net(&net);
        let host_bits = net.max_prefix_len() - net.prefix_len();
        if family == IpFamily::Ipv4 && host_bits > MAX_SERVICE_CIDR_HOST_BITS {
            return Err(CidrError::TooLarge {
                cidr: net,
                address_bits: 32,
                min_prefix_len: 32 - MAX_SERVICE_CIDR_HOST_BITS,
            });
        }
        let size = kube_range_size(&net);
        // At most 2^20 (IPv4) or 2^16 (IPv6), so it fits a usize.
        let usable = usable_size(&net);
        let static_band = range_offset(size, 16, 256, 16);
        Ok(Self {
            cidr: net,
            family,
            // Saturates only for the all-ones IPv6 /128, which has no usable
            // addresses anyway.
            base: to_u128(net.network()).saturating_add(1),
            core: Banded::new(usable, static_band),
        })
    }

    /// An allocator for `cidr` holding every address of `in_use` (the
    /// ClusterIPs stored in Services), for the start-up repair pass. Addresses
    /// outside the usable range and repeated addresses are not taken but
    /// listed in the report.
    pub fn rebuild(
        cidr: IpNet,
        in_use: impl IntoIterator<Item = IpAddr>,
    ) -> Result<(Self, RebuildReport<IpAddr>), CidrError> {
        let mut alloc = Self::new(cidr)?;
        let mut report = RebuildReport::new();
        for ip in in_use {
            match alloc.allocate(ip) {
                Ok(()) => {}
                Err(ClusterIpError::Allocated) => report.duplicates.push(ip),
                Err(_) => report.out_of_range.push(ip),
            }
        }
        Ok((alloc, report))
    }

    /// The service CIDR (masked).
    pub fn cidr(&self) -> IpNet {
        self.cidr
    }

    /// The CIDR's IP family.
    pub fn family(&self) -> IpFamily {
        self.family
    }

    /// Number of usable addresses.
    pub fn capacity(&self) -> usize {
        self.core.capacity()
    }

    /// Number of allocated addresses.
    pub fn used(&self) -> usize {
        self.core.used()
    }

    /// Number of free addresses (`capacity() - used()`).
    pub fn free(&self) -> usize {
        self.core.free()
    }

    /// Number of addresses in the KEP-3070 static (lower) band.
    pub fn static_band_size(&self) -> usize {
        self.core.static_band()
    }

    /// Free addresses left in the dynamic (upper) band; dynamic allocation
    /// only falls back to the static band when this is 0.
    pub fn dynamic_band_free(&self) -> usize {
        self.core.upper_free()
    }

    /// The lowest usable address, if any.
    pub fn first_address(&self) -> Option<IpAddr> {
        (self.capacity() > 0).then(|| self.addr_at(0)).flatten()
    }

    /// The highest usable address, if any.
    pub fn last_address(&self) -> Option<IpAddr> {
        self.capacity().checked_sub(1).and_then(|o| self.addr_at(o))
    }

    fn addr_at(&self, offset: usize) -> Option<IpAddr> {
        from_u128(self.family, self.base.checked_add(offset as u128)?)
    }

    fn offset_of(&self, ip: IpAddr) -> Option<usize> {
        let ip = canonical(ip);
        if IpFamily::of(ip) != self.family {
            return None;
        }
        let off = to_u128(ip).checked_sub(self.base)?;
        let off = usize::try_from(off).ok()?;
        (off < self.capacity()).then_some(off)
    }

    /// Whether `ip` is a usable address of the range (allocated or not).
    pub fn in_range(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some()
    }

    /// Whether `ip` lies in the static (lower) band.
    pub fn in_static_band(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some_and(|o| o < self.static_band_size())
    }

    /// Whether `ip` is allocated (kube's `Has`).
    pub fn is_allocated(&self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some_and(|o| self.core.has(o))
    }

    /// Allocates a specific (user-chosen) address, from either band.
    pub fn allocate(&mut self, ip: IpAddr) -> Result<(), ClusterIpError> {
        let Some(off) = self.offset_of(ip) else {
            return Err(ClusterIpError::NotInRange {
                ip: canonical(ip),
                valid_range: self.cidr,
            });
        };
        if self.core.allocate(off) {
            Ok(())
        } else {
            Err(ClusterIpError::Allocated)
        }
    }

    /// Allocates a random free address: a random start in the dynamic band
    /// then a forward scan (wrapping within the band); the static band is
    /// scanned the same way only if the dynamic band is full.
    pub fn allocate_next(&mut self, rng: &mut impl RandomSource) -> Result<IpAddr, ClusterIpError> {
        let off = self.core.allocate_next(rng).ok_or(ClusterIpError::Full)?;
        // Offsets are always within the family's address space.
        self.addr_at(off).ok_or(ClusterIpError::Full)
    }

    /// Releases `ip`; returns whether it was allocated. Releasing a free or
    /// out-of-range address is a no-op, as in kube.
    pub fn release(&mut self, ip: IpAddr) -> bool {
        self.offset_of(ip).is_some_and(|o| self.core.release(o))
    }

    /// Allocated addresses in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.core.iter().filter_map(|o| self.addr_at(o))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn range_scan_visits_every_usable_address_once_upper_band_first() {
        let r = ClusterIpRange::new("10.0.0.0/26".parse().unwrap());
        assert_eq!(r.capacity(), 62);
        let order: Vec<IpAddr> = r.scan(7).collect();
        assert_eq!(order.len(), 62);
        let mut sorted = order.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 62);
        // The static band is the lowest 16 addresses (.1 to .16): they come last.
        let static_band: Vec<IpAddr> = (1..=16).map(|n| ip(&format!("10.0.0.{n}"))).collect();
        assert!(order[46..].iter().all(|a| static_band.contains(a)), "{order:?}");
        assert!(r.contains(ip("10.0.0.62")) && !r.contains(ip("10.0.0.63")) && !r.contains(ip("10.0.0.0")));
        // Agrees with the bitmap allocator on what is usable.
        let a = ClusterIpAllocator::new("10.0.0.0/26".parse().unwrap()).unwrap();
        assert_eq!(a.capacity(), r.capacity());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn alloc(s: &str) -> ClusterIpAllocator {
        ClusterIpAllocator::new(s.parse().unwrap()).unwrap()
    }

    #[test]
    fn ipv4_reserves_network_and_broadcast() {
        let mut a = alloc("192.168.1.0/24");
        assert_eq!(a.capacity(), 254);
        assert_eq!(a.first_address(), Some(ip("192.168.1.1")));
        assert_eq!(a.last_address(), Some(ip("192.168.1.254")));
        for bad in ["192.168.1.0", "192.168.1.255", "192.168.2.1", "fd00::1"] {
            assert!(!a.in_range(ip(bad)));
            let err = a.allocate(ip(bad)).unwrap_err();
            assert!(matches!(err, ClusterIpError::NotInRange { .. }), "{bad}");
        }
        a.allocate(ip("192.168.1.254")).unwrap();
        a.allocate(ip("192.168.1.1")).unwrap();
        assert_eq!(a.used(), 2);
    }

    #[test]
    fn ipv6_reserves_only_the_subnet_router_anycast_address() {
        let mut a = alloc("2001:db8::/126");
        assert_eq!(a.capacity(), 3);
        assert!(!a.in_range(ip("2001:db8::")));
        a.allocate(ip("2001:db8::3")).unwrap(); // last address is usable in IPv6
        assert_eq!(a.last_address(), Some(ip("2001:db8::3")));
    }

    #[test]
    fn ipv6_bitmap_is_capped_at_65536() {
        let a = alloc("fd00::/64");
        assert_eq!(a.capacity(), 65535);
        assert_eq!(a.last_address(), Some(ip("fd00::ffff")));
        assert!(!a.in_range(ip("fd00::1:0")));
        assert_eq!(a.static_band_size(), 256);
        let b = alloc("fd00::/112");
        assert_eq!(b.capacity(), 65535);
        let c = alloc("fd00::/108");
        assert_eq!(c.capacity(), 65535);
        assert_eq!(c.static_band_size(), 256);
        assert!(alloc("::/0").capacity() == 65535);
    }

    #[test]
    fn tiny_ranges_have_nothing_usable() {
        for cidr in ["10.0.0.0/31", "10.0.0.0/32", "fd00::/127", "fd00::/128"] {
            let mut a = alloc(cidr);
            assert_eq!(a.capacity(), 0, "{cidr}");
            assert_eq!(a.first_address(), None);
            assert_eq!(a.last_address(), None);
            assert_eq!(
                a.allocate_next(&mut SplitMix64::new(1)),
                Err(ClusterIpError::Full)
            );
        }
        assert_eq!(alloc("10.0.0.0/30").capacity(), 2);
    }

    #[test]
    fn static_band_sizes() {
        let cases = [
            ("10.0.0.0/28", 0),
            ("10.0.0.0/27", 16),
            ("10.0.0.0/24", 16),
            ("10.0.0.0/22", 64),
            ("10.0.0.0/20", 256),
            ("10.96.0.0/12", 256),
            ("fd00::/124", 0),
            ("fd00::/123", 16),
            ("fd00::/112", 256),
            ("10.0.0.0/31", 0),
        ];
        for (cidr, want) in cases {
            assert_eq!(alloc(cidr).static_band_size(), want, "{cidr}");
            assert_eq!(
                cluster_ip_static_band_size(&cidr.parse().unwrap()),
                want,
                "{cidr}"
            );
        }
    }

    #[test]
    fn error_texts_are_kubes() {
        let mut a = alloc("10.0.0.0/24");
        a.allocate(ip("10.0.0.10")).unwrap();
        assert_eq!(
            a.allocate(ip("10.0.0.10")).unwrap_err().to_string(),
            "provided IP is already allocated"
        );
        assert_eq!(
            a.allocate(ip("10.0.1.10")).unwrap_err().to_string(),
            "the provided IP (10.0.1.10) is not in the valid range. The range of valid IPs is 10.0.0.0/24"
        );
        let mut b = alloc("10.0.0.0/30");
        let mut rng = SplitMix64::new(3);
        b.allocate_next(&mut rng).unwrap();
        b.allocate_next(&mut rng).unwrap();
        assert_eq!(
            b.allocate_next(&mut rng).unwrap_err().to_string(),
            "range is full"
        );
        let c = alloc("fd00:10:96::/112");
        let mut c2 = c.clone();
        assert_eq!(
            c2.allocate(ip("fd00:10:97::1")).unwrap_err().to_string(),
            "the provided IP (fd00:10:97::1) is not in the valid range. The range of valid IPs is fd00:10:96::/112"
        );
    }

    #[test]
    fn extreme_networks_do_not_overflow() {
        let mut a = alloc("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128");
        assert_eq!(a.capacity(), 0);
        assert!(!a.in_range(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(a.allocate_next(&mut SplitMix64::new(0)).is_err());
        let mut b = alloc("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ff00/120");
        b.allocate(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")).unwrap();
        assert_eq!(b.iter().count(), 1);
        let c = alloc("255.255.255.0/24");
        assert_eq!(c.last_address(), Some(ip("255.255.255.254")));
    }

    #[test]
    fn host_bits_are_masked() {
        let a = alloc("10.0.0.77/24");
        assert_eq!(a.cidr().to_string(), "10.0.0.0/24");
    }

    #[test]
    fn too_large_ipv4_is_rejected() {
        let err = ClusterIpAllocator::new("10.0.0.0/11".parse().unwrap()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "service CIDR 10.0.0.0/11 is too large; for 32-bit addresses, the mask must be >= 12"
        );
        let big = alloc("10.96.0.0/12");
        assert_eq!(big.capacity(), (1 << 20) - 2);
        assert_eq!(
            validate_service_cidr_flag(&"fd00::/64".parse().unwrap(), "--service-cluster-ip-range[1]")
                .unwrap_err(),
            "specified --service-cluster-ip-range[1] is too large; for 128-bit addresses, the mask must be >= 108"
        );
        assert!(validate_service_cidr_flag(&"fd00::/108".parse().unwrap(), "x").is_ok());
        assert!(validate_service_cidr_flag(&"10.96.0.0/12".parse().unwrap(), "x").is_ok());
    }

    #[test]
    fn dynamic_prefers_upper_band_and_falls_back() {
        let mut a = alloc("10.0.0.0/27"); // 30 usable, static band .1-.16
        let mut rng = SplitMix64::new(9);
        for _ in 0..14 {
            let got = a.allocate_next(&mut rng).unwrap();
            assert!(
                !a.in_static_band(got),
                "{got} taken from the static band too early"
            );
        }
        assert_eq!(a.dynamic_band_free(), 0);
        let got = a.allocate_next(&mut rng).unwrap();
        assert!(a.in_static_band(got));
        for _ in 0..15 {
            a.allocate_next(&mut rng).unwrap();
        }
        assert_eq!(a.free(), 0);
        assert_eq!(a.allocate_next(&mut rng), Err(ClusterIpError::Full));
    }

    #[test]
    fn static_allocation_may_use_either_band() {
        let mut a = alloc("10.0.0.0/24");
        a.allocate(ip("10.0.0.1")).unwrap();
        a.allocate(ip("10.0.0.10")).unwrap();
        a.allocate(ip("10.0.0.200")).unwrap();
        assert!(a.in_static_band(ip("10.0.0.16")));
        assert!(!a.in_static_band(ip("10.0.0.17")));
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            vec![ip("10.0.0.1"), ip("10.0.0.10"), ip("10.0.0.200")]
        );
    }

    #[test]
    fn random_start_is_from_the_injected_source() {
        let mut a = alloc("10.0.0.0/24"); // dynamic band: offsets 16..254 = .17-.254
        let mut zero = || 0u64;
        assert_eq!(a.allocate_next(&mut zero), Ok(ip("10.0.0.17")));
        assert_eq!(a.allocate_next(&mut zero), Ok(ip("10.0.0.18")));
        let mut top = || u64::MAX;
        assert_eq!(a.allocate_next(&mut top), Ok(ip("10.0.0.254")));
        // Start at .254 again: taken, scan wraps to the start of the band.
        assert_eq!(a.allocate_next(&mut top), Ok(ip("10.0.0.19")));
    }

    #[test]
    fn release_and_has() {
        let mut a = alloc("10.0.0.0/24");
        a.allocate(ip("10.0.0.5")).unwrap();
        assert!(a.is_allocated(ip("10.0.0.5")));
        assert!(!a.is_allocated(ip("10.0.0.6")));
        assert!(a.release(ip("10.0.0.5")));
        assert!(!a.release(ip("10.0.0.5")), "double release is a no-op");
        assert!(!a.release(ip("192.0.2.1")), "out of range release is a no-op");
        assert!(!a.release(ip("10.0.0.0")));
        assert_eq!(a.used(), 0);
        assert_eq!(a.free(), 254);
    }

    #[test]
    fn mapped_ipv4_is_treated_as_ipv4() {
        let mut a = alloc("10.0.0.0/24");
        a.allocate(ip("::ffff:10.0.0.9")).unwrap();
        assert!(a.is_allocated(ip("10.0.0.9")));
    }

    #[test]
    fn rebuild_reports_problems() {
        let in_use = [
            "10.0.0.1",
            "10.0.0.10",
            "10.0.0.10",
            "10.0.1.1",
            "10.0.0.255",
            "fd00::1",
            "10.0.0.77",
        ];
        let (a, report) =
            ClusterIpAllocator::rebuild("10.0.0.0/24".parse().unwrap(), in_use.iter().map(|s| ip(s)))
                .unwrap();
        assert_eq!(a.used(), 3);
        assert_eq!(report.duplicates, vec![ip("10.0.0.10")]);
        assert_eq!(
            report.out_of_range,
            vec![ip("10.0.1.1"), ip("10.0.0.255"), ip("fd00::1")]
        );
        assert!(!report.is_clean());
        let (b, clean) = ClusterIpAllocator::rebuild(a.cidr(), a.iter()).unwrap();
        assert!(clean.is_clean());
        assert_eq!(a, b);
    }

    #[test]
    fn well_known_addresses() {
        let cidr: IpNet = "10.96.0.0/12".parse().unwrap();
        let mut a = ClusterIpAllocator::new(cidr).unwrap();
        let kubernetes = crate::nth_address(&cidr, 1).unwrap();
        let dns = crate::nth_address(&cidr, 10).unwrap();
        a.allocate(kubernetes).unwrap();
        a.allocate(dns).unwrap();
        assert!(a.in_static_band(kubernetes) && a.in_static_band(dns));
        assert_eq!(
            a.iter().collect::<Vec<_>>(),
            vec![ip("10.96.0.1"), ip("10.96.0.10")]
        );
    }

    #[test]
    fn large_range_fills_without_duplicates() {
        let mut a = alloc("10.0.0.0/20"); // 4094 usable
        let mut rng = SplitMix64::new(5);
        let mut seen = std::collections::HashSet::new();
        while let Ok(got) = a.allocate_next(&mut rng) {
            assert!(seen.insert(got));
        }
        assert_eq!(seen.len(), 4094);
        assert_eq!(a.free(), 0);
    }
}
