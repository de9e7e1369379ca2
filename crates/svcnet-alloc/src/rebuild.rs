//! The outcome of rebuilding an allocator from the values stored in Services.

/// What a `rebuild` constructor could not take over from the in-use list.
///
/// The repair pass logs these (see [`crate::messages`] for kube's texts); the
/// rebuilt allocator holds every other value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RebuildReport<T> {
    /// Values outside the allocator's valid range, in input order.
    pub out_of_range: Vec<T>,
    /// Second and later occurrences of a value already taken, in input order.
    pub duplicates: Vec<T>,
}

impl<T> RebuildReport<T> {
    pub(crate) fn new() -> Self {
        Self {
            out_of_range: Vec::new(),
            duplicates: Vec::new(),
        }
    }

    /// True when every value was taken over exactly once.
    pub fn is_clean(&self) -> bool {
        self.out_of_range.is_empty() && self.duplicates.is_empty()
    }
}

impl<T> Default for RebuildReport<T> {
    fn default() -> Self {
        Self::new()
    }
}
