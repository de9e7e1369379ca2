//! A fixed-size bitmap with a running count of set bits.
//!
//! One bit per offset keeps a /12 IPv4 service range (~1M addresses) at
//! 128 KiB, and the word-at-a-time scans keep "find a free offset" cheap.

const WORD: usize = 64;

/// Fixed-length bit set; bit `i` set means offset `i` is allocated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Bitmap {
    words: Vec<u64>,
    len: usize,
    ones: usize,
}

impl Bitmap {
    /// An all-clear bitmap of `len` bits.
    pub(crate) fn new(len: usize) -> Self {
        Self {
            words: vec![0; len.div_ceil(WORD)],
            len,
            ones: 0,
        }
    }

    /// Number of bits.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Number of set bits.
    pub(crate) fn ones(&self) -> usize {
        self.ones
    }

    /// Whether bit `i` is set; false for `i >= len`.
    pub(crate) fn get(&self, i: usize) -> bool {
        i < self.len && self.words[i / WORD] & (1 << (i % WORD)) != 0
    }

    /// Sets bit `i`; returns false if it was already set or is out of range.
    pub(crate) fn set(&mut self, i: usize) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.words[i / WORD] |= 1 << (i % WORD);
        self.ones += 1;
        true
    }

    /// Clears bit `i`; returns false if it was already clear or is out of range.
    pub(crate) fn clear(&mut self, i: usize) -> bool {
        if !self.get(i) {
            return false;
        }
        self.words[i / WORD] &= !(1 << (i % WORD));
        self.ones -= 1;
        true
    }

    /// The lowest clear bit in `lo..hi`, if any.
    pub(crate) fn first_clear_in(&self, lo: usize, hi: usize) -> Option<usize> {
        let hi = hi.min(self.len);
        if lo >= hi {
            return None;
        }
        let (first_word, last_word) = (lo / WORD, (hi - 1) / WORD);
        for w in first_word..=last_word {
            let mut free = !self.words[w];
            if w == first_word {
                // Ignore bits below `lo`.
                free &= u64::MAX << (lo % WORD);
            }
            if w == last_word {
                // Ignore bits at or above `hi`.
                let keep = hi - w * WORD;
                if keep < WORD {
                    free &= (1u64 << keep) - 1;
                }
            }
            if free != 0 {
                return Some(w * WORD + free.trailing_zeros() as usize);
            }
        }
        None
    }

    /// The first clear bit scanning `start..hi` then wrapping to `lo..start`,
    /// like kube's random-scan strategy (`start` must be in `lo..hi`).
    pub(crate) fn first_clear_wrapping(&self, lo: usize, hi: usize, start: usize) -> Option<usize> {
        self.first_clear_in(start, hi)
            .or_else(|| self.first_clear_in(lo, start))
    }

    /// Number of set bits in `lo..hi`.
    pub(crate) fn ones_in(&self, lo: usize, hi: usize) -> usize {
        // Only used for band accounting, so a simple per-word mask is enough.
        let hi = hi.min(self.len);
        if lo >= hi {
            return 0;
        }
        let (first_word, last_word) = (lo / WORD, (hi - 1) / WORD);
        let mut n = 0;
        for w in first_word..=last_word {
            let mut bits = self.words[w];
            if w == first_word {
                bits &= u64::MAX << (lo % WORD);
            }
            if w == last_word {
                let keep = hi - w * WORD;
                if keep < WORD {
                    bits &= (1u64 << keep) - 1;
                }
            }
            n += bits.count_ones() as usize;
        }
        n
    }

    /// Set bits in ascending order.
    pub(crate) fn iter_ones(&self) -> impl Iterator<Item = usize> + '_ {
        self.words.iter().enumerate().flat_map(|(w, &word)| {
            let mut rest = word;
            std::iter::from_fn(move || {
                if rest == 0 {
                    return None;
                }
                let bit = rest.trailing_zeros() as usize;
                rest &= rest - 1;
                Some(w * WORD + bit)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_clear_count() {
        let mut b = Bitmap::new(130);
        assert_eq!(b.len(), 130);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(129));
        assert!(!b.set(130), "out of range");
        assert_eq!(b.ones(), 2);
        assert!(b.clear(0));
        assert!(!b.clear(0));
        assert!(!b.clear(500));
        assert_eq!(b.ones(), 1);
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![129]);
    }

    #[test]
    fn scans_respect_bounds() {
        let mut b = Bitmap::new(200);
        for i in 0..200 {
            if i != 3 && i != 70 && i != 199 {
                b.set(i);
            }
        }
        assert_eq!(b.first_clear_in(0, 200), Some(3));
        assert_eq!(b.first_clear_in(4, 200), Some(70));
        assert_eq!(b.first_clear_in(4, 70), None);
        assert_eq!(b.first_clear_in(71, 199), None);
        assert_eq!(b.first_clear_in(71, 1000), Some(199));
        assert_eq!(b.first_clear_wrapping(10, 100, 71), Some(70));
        assert_eq!(b.first_clear_wrapping(0, 200, 100), Some(199));
        assert_eq!(b.ones_in(0, 200), 197);
        assert_eq!(b.ones_in(0, 4), 3);
        assert_eq!(b.ones_in(64, 128), 63);
        assert_eq!(b.iter_ones().count(), 197);
    }

    #[test]
    fn empty_bitmap() {
        let b = Bitmap::new(0);
        assert_eq!(b.first_clear_in(0, 0), None);
        assert_eq!(b.iter_ones().count(), 0);
        assert!(!b.get(0));
    }
}
