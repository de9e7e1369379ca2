//! Injected randomness for dynamic allocation.
//!
//! kube-apiserver seeds a `math/rand` source from the clock; svcnet keeps the
//! allocators deterministic by taking the random source as a parameter.

/// A source of uniformly distributed 64-bit values.
///
/// Implemented by [`SplitMix64`] and by any `FnMut() -> u64` closure (handy in
/// tests to force a particular starting point).
pub trait RandomSource {
    /// Returns the next 64 random bits.
    fn next_u64(&mut self) -> u64;
}

impl<F: FnMut() -> u64> RandomSource for F {
    fn next_u64(&mut self) -> u64 {
        self()
    }
}

/// A tiny, fast, seedable PRNG (Steele, Lea and Flood's SplitMix64).
///
/// Not cryptographic; the allocators only need an unpredictable-enough
/// starting point so that concurrent API servers rarely collide.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// Creates a generator from a seed; equal seeds give equal sequences.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }
}

impl RandomSource for SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

/// Returns a value in `0..n` (`n > 0`), using Lemire's multiply-shift so no
/// division is needed; the bias for the small `n` used here is negligible.
pub(crate) fn below(rng: &mut impl RandomSource, n: usize) -> usize {
    debug_assert!(n > 0);
    let wide = u128::from(rng.next_u64()) * (n as u128);
    // The product is < n * 2^64, so the high half is < n and fits a usize.
    (wide >> 64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic() {
        let mut a = SplitMix64::new(42);
        let mut b = SplitMix64::new(42);
        for _ in 0..10 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(SplitMix64::new(1).next_u64(), SplitMix64::new(2).next_u64());
    }

    #[test]
    fn below_stays_in_bounds() {
        let mut rng = SplitMix64::new(7);
        for n in 1..200 {
            for _ in 0..20 {
                assert!(below(&mut rng, n) < n);
            }
        }
        let mut max = || u64::MAX;
        assert_eq!(below(&mut max, 10), 9);
        let mut zero = || 0u64;
        assert_eq!(below(&mut zero, 10), 0);
    }
}
