//! How an endpoint map divides the slots of `numgen random mod SLOTS` among a port's endpoints. Its own
//! module because the ruleset text ([`crate::render`]) and the netlink element encoders
//! ([`crate::netlink`]) both lay the slots out, and neither should depend on the other for that.

/// The number of slots an endpoint-dispatch map divides: rules look up `numgen random mod 65536`.
pub const SLOTS: u32 = 65536;

/// The slot ranges of `n` endpoints: adjacent, together `0..SLOTS`, sizes differing by at most one.
/// More than [`SLOTS`] endpoints get the first [`SLOTS`] ranges (one slot each).
pub fn slot_ranges(n: usize) -> Vec<(u32, u32)> {
    let n = n.min(SLOTS as usize) as u64;
    (0..n)
        .map(|i| {
            let lo = i * u64::from(SLOTS) / n;
            let hi = (i + 1) * u64::from(SLOTS) / n - 1;
            (lo as u32, hi as u32)
        })
        .collect()
}
