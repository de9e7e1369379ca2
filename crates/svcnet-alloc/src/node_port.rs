//! NodePort allocation out of a `--service-node-port-range`.
//!
//! Mirrors kube-apiserver's `pkg/registry/core/service/portallocator` and the
//! range syntax of apimachinery's `net.PortRange`: `"30000-32767"` (inclusive)
//! or a single port `"30000"`. kube does not accept the `"30000+767"` form
//! (it is a TODO in `PortRange.Set`), so neither does svcnet.
//!
//! KEP-3668: the lowest `min(max(16, size/32), 128)` ports (none when the
//! range has 16 ports or fewer) form the static band, which dynamic
//! allocation only uses once the rest of the range is full. For the default
//! range that is 30000-30085 (86 ports).

use std::fmt;
use std::num::IntErrorKind;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::band::{Banded, range_offset};
use crate::rebuild::RebuildReport;
use crate::rng::RandomSource;

/// kube-apiserver's default `--service-node-port-range`.
pub const DEFAULT_NODE_PORT_RANGE: &str = "30000-32767";

/// Errors parsing a port range; `Display` is apimachinery's text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PortRangeError {
    /// Empty (or all-space) input. kube treats this as an empty range; an
    /// allocator over no ports is useless, so svcnet rejects it.
    #[error("port range must not be empty")]
    Empty,
    /// A bound is not an integer. `reason` is Go's `strconv.Atoi` error text
    /// (plus kube's hint for input without a hyphen).
    #[error("unable to parse port range: {value}: {reason}")]
    Syntax {
        /// The (trimmed) input.
        value: String,
        /// Why a bound did not parse.
        reason: String,
    },
    /// A single port above 65535.
    #[error("the port range should between 0 and 65535")]
    SinglePortOutOfRange,
    /// A bound above 65535.
    #[error("the port range cannot be greater than 65535: {value}")]
    TooLarge {
        /// The (trimmed) input.
        value: String,
    },
    /// The end is below the start.
    #[error("end port cannot be less than start port: {value}")]
    Descending {
        /// The (trimmed) input.
        value: String,
    },
}

/// An inclusive range of ports, like apimachinery's `net.PortRange`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    first: u16,
    last: u16,
}

/// Go's `strconv.Atoi` on a 64-bit platform, with its error text.
fn go_atoi(s: &str) -> Result<i64, String> {
    s.parse::<i64>().map_err(|e| {
        let why = match e.kind() {
            IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => "value out of range",
            _ => "invalid syntax",
        };
        format!("strconv.Atoi: parsing {s:?}: {why}")
    })
}

impl PortRange {
    /// The range `first..=last`; `None` if `last < first`.
    pub fn new(first: u16, last: u16) -> Option<Self> {
        (first <= last).then_some(Self { first, last })
    }

    /// Parses `"min-max"` or a single port, as kube's `ParsePortRange`
    /// (surrounding whitespace is ignored).
    pub fn parse(value: &str) -> Result<Self, PortRangeError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(PortRangeError::Empty);
        }
        let Some((low, high)) = value.split_once('-') else {
            let single = go_atoi(value).map_err(|reason| PortRangeError::Syntax {
                value: value.to_owned(),
                reason: format!("{reason}, expected hyphen in port range or a single port number"),
            })?;
            let port = u16::try_from(single).map_err(|_| PortRangeError::SinglePortOutOfRange)?;
            return Ok(Self {
                first: port,
                last: port,
            });
        };
        let syntax = |reason| PortRangeError::Syntax {
            value: value.to_owned(),
            reason,
        };
        let low = go_atoi(low).map_err(syntax)?;
        let high = go_atoi(high).map_err(syntax)?;
        if low > 65535 || high > 65535 {
            return Err(PortRangeError::TooLarge {
                value: value.to_owned(),
            });
        }
        if high < low {
            return Err(PortRangeError::Descending {
                value: value.to_owned(),
            });
        }
        // `low` cannot be negative: a leading '-' is taken as the separator,
        // leaving an empty (invalid) low bound. So both now fit a u16.
        match (u16::try_from(low), u16::try_from(high)) {
            (Ok(first), Ok(last)) => Ok(Self { first, last }),
            _ => Err(PortRangeError::Descending {
                value: value.to_owned(),
            }),
        }
    }

    /// The lowest port.
    pub fn first(&self) -> u16 {
        self.first
    }

    /// The highest port.
    pub fn last(&self) -> u16 {
        self.last
    }

    /// Number of ports (1..=65536).
    pub fn size(&self) -> usize {
        usize::from(self.last - self.first) + 1
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: i32) -> bool {
        port >= i32::from(self.first) && port <= i32::from(self.last)
    }
}

impl Default for PortRange {
    /// `30000-32767`.
    fn default() -> Self {
        Self {
            first: 30000,
            last: 32767,
        }
    }
}

impl fmt::Display for PortRange {
    /// `first-last`, as kube prints it (also for a single port).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Errors from NodePort allocation; `Display` is kube's text, verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NodePortError {
    /// The port is outside the range (kube's `ErrNotInRange`).
    #[error("provided port is not in the valid range. The range of valid ports is {valid_ports}")]
    NotInRange {
        /// The configured range.
        valid_ports: PortRange,
    },
    /// The port is already taken (kube's `ErrAllocated`).
    #[error("provided port is already allocated")]
    Allocated,
    /// No free port is left (kube's `ErrFull`).
    #[error("range is full")]
    Full,
}

/// Size of the KEP-3668 static band for a port range (kube's
/// `calculateRangeOffset`): 0 for ranges of 16 ports or fewer, otherwise
/// `min(max(16, size/32), 128)`.
pub fn node_port_static_band_size(range: &PortRange) -> usize {
    range_offset(range.size() as u128, 16, 128, 32)
}

/// Allocates NodePorts out of a [`PortRange`].
///
/// Ports are `i32` like the API's `nodePort` field, so any stored value can
/// be handed in (values outside the range are "not in the valid range").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodePortAllocator {
    range: PortRange,
    core: Banded,
}

impl NodePortAllocator {
    /// An empty allocator for `range`.
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            core: Banded::new(range.size(), node_port_static_band_size(&range)),
        }
    }

    /// An allocator for `range` holding every port of `in_use` (the NodePorts
    /// and health-check NodePorts stored in Services), for the start-up
    /// repair pass. Out-of-range and repeated ports are listed in the report.
    pub fn rebuild(range: PortRange, in_use: impl IntoIterator<Item = i32>) -> (Self, RebuildReport<i32>) {
        let mut alloc = Self::new(range);
        let mut report = RebuildReport::new();
        for port in in_use {
            match alloc.allocate(port) {
                Ok(()) => {}
                Err(NodePortError::Allocated) => report.duplicates.push(port),
                Err(_) => report.out_of_range.push(port),
            }
        }
        (alloc, report)
    }

    /// The port range.
    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Number of ports in the range.
    pub fn capacity(&self) -> usize {
        self.core.capacity()
    }

    /// Number of allocated ports.
    pub fn used(&self) -> usize {
        self.core.used()
    }

    /// Number of free ports (`capacity() - used()`).
    pub fn free(&self) -> usize {
        self.core.free()
    }

    /// Number of ports in the KEP-3668 static (lower) band.
    pub fn static_band_size(&self) -> usize {
        self.core.static_band()
    }

    /// Free ports left in the dynamic (upper) band; dynamic allocation only
    /// falls back to the static band when this is 0.
    pub fn dynamic_band_free(&self) -> usize {
        self.core.upper_free()
    }

    fn offset_of(&self, port: i32) -> Option<usize> {
        if !self.range.contains(port) {
            return None;
        }
        usize::try_from(port - i32::from(self.range.first)).ok()
    }

    fn port_at(&self, offset: usize) -> i32 {
        // offset < size <= 65536, so this stays within 0..=65535.
        i32::from(self.range.first) + offset as i32
    }

    /// Whether `port` lies in the static (lower) band.
    pub fn in_static_band(&self, port: i32) -> bool {
        self.offset_of(port).is_some_and(|o| o < self.static_band_size())
    }

    /// Whether `port` is allocated (kube's `Has`).
    pub fn is_allocated(&self, port: i32) -> bool {
        self.offset_of(port).is_some_and(|o| self.core.has(o))
    }

    /// Allocates a specific (user-chosen) port, from either band.
    pub fn allocate(&mut self, port: i32) -> Result<(), NodePortError> {
        let Some(off) = self.offset_of(port) else {
            return Err(NodePortError::NotInRange {
                valid_ports: self.range,
            });
        };
        if self.core.allocate(off) {
            Ok(())
        } else {
            Err(NodePortError::Allocated)
        }
    }

    /// Allocates a random free port: a random start in the dynamic band then
    /// a forward scan (wrapping within the band); the static band is scanned
    /// the same way only if the dynamic band is full.
    pub fn allocate_next(&mut self, rng: &mut impl RandomSource) -> Result<i32, NodePortError> {
        self.core
            .allocate_next(rng)
            .map(|o| self.port_at(o))
            .ok_or(NodePortError::Full)
    }

    /// Releases `port`; returns whether it was allocated. Releasing a free or
    /// out-of-range port is a no-op, as in kube.
    pub fn release(&mut self, port: i32) -> bool {
        self.offset_of(port).is_some_and(|o| self.core.release(o))
    }

    /// Allocated ports in ascending order.
    pub fn iter(&self) -> impl Iterator<Item = i32> + '_ {
        self.core.iter().map(|o| self.port_at(o))
    }

    /// The allocations as a bitmap of bytes (bit `i % 8` of byte `i / 8` is the range's `i`-th port), as
    /// kept in storage (kube's RangeAllocation `data`) so that every API server shares one view.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.capacity().div_ceil(8)];
        for o in self.core.iter() {
            out[o / 8] |= 1 << (o % 8);
        }
        out
    }

    /// The allocator [`NodePortAllocator::to_bytes`] wrote for `stored_range`, moved onto `range` (a
    /// restart may have changed `--service-node-port-range`; ports outside the new range are dropped).
    pub fn from_bytes(range: PortRange, stored_range: PortRange, bytes: &[u8]) -> Self {
        let first = i32::from(stored_range.first);
        let ports = (0..stored_range.size())
            .filter(|o| bytes.get(o / 8).is_some_and(|b| b & (1 << (o % 8)) != 0))
            .map(|o| first + o as i32);
        Self::rebuild(range, ports).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn bytes_round_trip_and_move_to_a_new_range() {
        let mut a = NodePortAllocator::new(range("30000-30100"));
        for p in [30000, 30007, 30008, 30100] {
            a.allocate(p).unwrap();
        }
        let bytes = a.to_bytes();
        assert_eq!(bytes.len(), 13);
        let b = NodePortAllocator::from_bytes(a.range(), a.range(), &bytes);
        assert_eq!(a, b);
        let moved = NodePortAllocator::from_bytes(range("30005-30200"), a.range(), &bytes);
        assert_eq!(moved.iter().collect::<Vec<_>>(), [30007, 30008, 30100]);
    }

    fn range(s: &str) -> PortRange {
        s.parse().unwrap()
    }

    #[test]
    fn parses_like_apimachinery() {
        let r = range(DEFAULT_NODE_PORT_RANGE);
        assert_eq!((r.first(), r.last(), r.size()), (30000, 32767, 2768));
        assert_eq!(r, PortRange::default());
        assert_eq!(r.to_string(), "30000-32767");
        assert_eq!(range(" 30000-30000 ").size(), 1);
        let single = range("30080");
        assert_eq!((single.first(), single.last()), (30080, 30080));
        assert_eq!(single.to_string(), "30080-30080");
        assert_eq!(range("0-65535").size(), 65536);
        assert_eq!(range("+1-+2").size(), 2, "Go's Atoi accepts a leading plus");
    }

    #[test]
    fn parse_errors_are_apimachinerys() {
        let err = |s: &str| PortRange::parse(s).unwrap_err().to_string();
        assert_eq!(
            err("30000+767"),
            "unable to parse port range: 30000+767: strconv.Atoi: parsing \"30000+767\": invalid syntax, \
             expected hyphen in port range or a single port number"
        );
        assert_eq!(
            err("a-10"),
            "unable to parse port range: a-10: strconv.Atoi: parsing \"a\": invalid syntax"
        );
        assert_eq!(
            err("-5"),
            "unable to parse port range: -5: strconv.Atoi: parsing \"\": invalid syntax"
        );
        assert_eq!(
            err("1-99999999999999999999"),
            "unable to parse port range: 1-99999999999999999999: strconv.Atoi: parsing \"99999999999999999999\": value out of range"
        );
        assert_eq!(err("70000"), "the port range should between 0 and 65535");
        assert_eq!(
            err("30000-70000"),
            "the port range cannot be greater than 65535: 30000-70000"
        );
        assert_eq!(
            err("32767-30000"),
            "end port cannot be less than start port: 32767-30000"
        );
        assert_eq!(err("5--3"), "end port cannot be less than start port: 5--3");
        assert_eq!(err("  "), "port range must not be empty");
        assert_eq!(
            err("30000 - 32767"),
            "unable to parse port range: 30000 - 32767: strconv.Atoi: parsing \"30000 \": invalid syntax"
        );
    }

    #[test]
    fn serde_as_string() {
        let r = range("30000-32767");
        assert_eq!(serde_json::to_string(&r).unwrap(), "\"30000-32767\"");
        assert_eq!(
            serde_json::from_str::<PortRange>("\"100-200\"").unwrap(),
            range("100-200")
        );
        assert!(serde_json::from_str::<PortRange>("\"200-100\"").is_err());
    }

    #[test]
    fn static_band_sizes() {
        let cases = [
            ("30000-32767", 86),
            ("30000-30015", 0),
            ("30000-30016", 16),
            ("30000-30511", 16),
            ("30000-30543", 17),
            ("20000-32767", 128),
            ("1-65535", 128),
            ("30000", 0),
        ];
        for (r, want) in cases {
            assert_eq!(NodePortAllocator::new(range(r)).static_band_size(), want, "{r}");
        }
    }

    #[test]
    fn error_texts_are_kubes() {
        let mut a = NodePortAllocator::new(PortRange::default());
        a.allocate(30080).unwrap();
        assert_eq!(
            a.allocate(30080).unwrap_err().to_string(),
            "provided port is already allocated"
        );
        for bad in [29999, 32768, 0, -1, 80, i32::MAX] {
            assert_eq!(
                a.allocate(bad).unwrap_err().to_string(),
                "provided port is not in the valid range. The range of valid ports is 30000-32767"
            );
        }
        let mut one = NodePortAllocator::new(range("30000"));
        let mut rng = SplitMix64::new(1);
        assert_eq!(one.allocate_next(&mut rng), Ok(30000));
        assert_eq!(
            one.allocate_next(&mut rng).unwrap_err().to_string(),
            "range is full"
        );
    }

    #[test]
    fn dynamic_prefers_upper_band() {
        let mut a = NodePortAllocator::new(range("30000-30099")); // band 30000-30015
        let mut rng = SplitMix64::new(11);
        for _ in 0..84 {
            let p = a.allocate_next(&mut rng).unwrap();
            assert!(p >= 30016, "{p}");
        }
        assert_eq!(a.dynamic_band_free(), 0);
        let p = a.allocate_next(&mut rng).unwrap();
        assert!(a.in_static_band(p));
        while a.allocate_next(&mut rng).is_ok() {}
        assert_eq!(a.used(), 100);
        assert_eq!(a.free(), 0);
    }

    #[test]
    fn random_start_is_from_the_injected_source() {
        let mut a = NodePortAllocator::new(PortRange::default());
        let mut zero = || 0u64;
        assert_eq!(a.allocate_next(&mut zero), Ok(30086));
        let mut top = || u64::MAX;
        assert_eq!(a.allocate_next(&mut top), Ok(32767));
        assert_eq!(
            a.allocate_next(&mut top),
            Ok(30087),
            "wraps within the dynamic band"
        );
    }

    #[test]
    fn release_iter_rebuild() {
        let mut a = NodePortAllocator::new(PortRange::default());
        a.allocate(32767).unwrap();
        a.allocate(30000).unwrap();
        assert!(a.is_allocated(30000));
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![30000, 32767]);
        assert!(a.release(30000));
        assert!(!a.release(30000));
        assert!(!a.release(80));
        assert_eq!(a.used(), 1);
        let (b, report) = NodePortAllocator::rebuild(PortRange::default(), [32767, 30001, 30001, 80, 40000]);
        assert_eq!(report.duplicates, vec![30001]);
        assert_eq!(report.out_of_range, vec![80, 40000]);
        assert_eq!(b.used(), 2);
        let (c, clean) = NodePortAllocator::rebuild(b.range(), b.iter());
        assert!(clean.is_clean());
        assert_eq!(b, c);
    }

    #[test]
    fn whole_port_space() {
        let mut a = NodePortAllocator::new(range("0-65535"));
        assert_eq!(a.capacity(), 65536);
        a.allocate(65535).unwrap();
        a.allocate(0).unwrap();
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![0, 65535]);
        assert!(a.allocate(65536).is_err());
    }
}
