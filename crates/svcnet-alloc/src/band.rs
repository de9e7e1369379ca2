//! The two-band bitmap shared by the ClusterIP and NodePort allocators.
//!
//! KEP-3070 (IPs) and KEP-3668 (ports) split a range at an offset: the lower
//! band `0..static_band` is left for user-chosen (static) values as long as
//! possible, and dynamic allocation takes a random free value from the upper
//! band, falling back to the lower band only when the upper one is full. This
//! mirrors kube's `randomScanStrategyWithOffset`.

use crate::bitmap::Bitmap;
use crate::rng::{RandomSource, below};

/// A bitmap of offsets split into a static (lower) and dynamic (upper) band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Banded {
    bits: Bitmap,
    static_band: usize,
}

impl Banded {
    /// `len` offsets, the first `static_band` of them in the static band.
    pub(crate) fn new(len: usize, static_band: usize) -> Self {
        // kube guarantees offset < size; clamp anyway so no input can panic.
        Self {
            bits: Bitmap::new(len),
            static_band: static_band.min(len),
        }
    }

    pub(crate) fn capacity(&self) -> usize {
        self.bits.len()
    }

    pub(crate) fn used(&self) -> usize {
        self.bits.ones()
    }

    pub(crate) fn free(&self) -> usize {
        self.bits.len() - self.bits.ones()
    }

    pub(crate) fn static_band(&self) -> usize {
        self.static_band
    }

    /// Free offsets left in the upper (dynamic) band.
    pub(crate) fn upper_free(&self) -> usize {
        let (lo, hi) = (self.static_band, self.bits.len());
        (hi - lo) - self.bits.ones_in(lo, hi)
    }

    pub(crate) fn has(&self, offset: usize) -> bool {
        self.bits.get(offset)
    }

    /// Takes `offset`; false if it is already taken (callers check bounds).
    pub(crate) fn allocate(&mut self, offset: usize) -> bool {
        self.bits.set(offset)
    }

    /// Takes a random free offset, preferring the upper band.
    pub(crate) fn allocate_next(&mut self, rng: &mut impl RandomSource) -> Option<usize> {
        let len = self.bits.len();
        if self.bits.ones() >= len {
            return None;
        }
        let lo = self.static_band;
        let found = if lo < len {
            let start = lo + below(rng, len - lo);
            self.bits.first_clear_wrapping(lo, len, start)
        } else {
            None
        };
        let found = found.or_else(|| {
            if lo == 0 {
                return None;
            }
            let start = below(rng, lo);
            self.bits.first_clear_wrapping(0, lo, start)
        })?;
        self.bits.set(found);
        Some(found)
    }

    pub(crate) fn release(&mut self, offset: usize) -> bool {
        self.bits.clear(offset)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.bits.iter_ones()
    }
}

/// kube's `calculateRangeOffset`: `min(max(min, size/step), max)`, or 0 when
/// the range has no more than `min` values (too small to split).
pub(crate) fn range_offset(size: u128, min: u128, max: u128, step: u128) -> usize {
    if size <= min {
        return 0;
    }
    // The result is at most `max` (<= 256), so the cast cannot truncate.
    (size / step).clamp(min, max) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn upper_band_first_then_lower() {
        let mut b = Banded::new(20, 16);
        let mut rng = SplitMix64::new(1);
        let mut got: Vec<usize> = (0..4).filter_map(|_| b.allocate_next(&mut rng)).collect();
        got.sort_unstable();
        assert_eq!(got, vec![16, 17, 18, 19]);
        assert_eq!(b.upper_free(), 0);
        let next = b.allocate_next(&mut rng).unwrap();
        assert!(next < 16);
        for _ in 0..15 {
            assert!(b.allocate_next(&mut rng).is_some());
        }
        assert_eq!(b.allocate_next(&mut rng), None);
        assert_eq!(b.free(), 0);
    }

    #[test]
    fn random_start_then_scan_forward_with_wrap() {
        let mut b = Banded::new(10, 0);
        // Start at the last offset; it is free.
        let mut last = || u64::MAX;
        assert_eq!(b.allocate_next(&mut last), Some(9));
        // Start at 9 again; taken, so the scan wraps to 0.
        assert_eq!(b.allocate_next(&mut last), Some(0));
    }

    #[test]
    fn offsets_match_kube() {
        // IP: min 16, max 256, step 16.
        assert_eq!(range_offset(0, 16, 256, 16), 0);
        assert_eq!(range_offset(16, 16, 256, 16), 0);
        assert_eq!(range_offset(32, 16, 256, 16), 16);
        assert_eq!(range_offset(256, 16, 256, 16), 16);
        assert_eq!(range_offset(1024, 16, 256, 16), 64);
        assert_eq!(range_offset(4096, 16, 256, 16), 256);
        assert_eq!(range_offset(u128::MAX, 16, 256, 16), 256);
        // Port: min 16, max 128, step 32.
        assert_eq!(range_offset(2768, 16, 128, 32), 86);
        assert_eq!(range_offset(17, 16, 128, 32), 16);
        assert_eq!(range_offset(65536, 16, 128, 32), 128);
    }
}
