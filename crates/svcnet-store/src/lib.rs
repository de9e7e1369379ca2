//! Durable storage for API objects.
//!
//! The API server sees storage the way kube-apiserver sees etcd: a flat, ordered key space of opaque
//! values, one global monotonic revision that every write increments, conditional writes (compare the
//! key's modification revision, then put or delete), and a change feed that starts exactly where a
//! consistent snapshot ends. [`Store`] is that contract; [`redb::RedbStore`] is the embedded backend used
//! by default, and `svcnet-store-etcd` implements the same trait on etcd for a highly available control
//! plane. [`conformance`] is the one suite of behaviour both must show.
//!
//! Storage knows nothing about Kubernetes objects: resourceVersions, watch caches and selectors live in
//! the API server, which keeps this crate small and the backends interchangeable.

pub mod backup;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod redb;

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

/// A global, monotonic revision; every committed write gets the next one.
pub type Revision = u64;

/// A stored key with its value and revisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key, e.g. `/core/services/default/backend`.
    pub key: String,
    /// The stored bytes (JSON, for the API server).
    pub value: Bytes,
    /// The revision at which the key was created.
    pub create_revision: Revision,
    /// The revision of the last write to the key.
    pub mod_revision: Revision,
}

/// A committed change, delivered on the change feed in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A key was created or updated.
    Put {
        /// The new state.
        kv: KeyValue,
        /// The state before, if the key existed.
        prev: Option<KeyValue>,
    },
    /// A key was deleted.
    Delete {
        /// The state before the delete.
        prev: KeyValue,
        /// The revision of the delete.
        revision: Revision,
    },
    /// Nothing under the feed's prefix changed up to `revision` beyond what the feed already sent (etcd's
    /// progress notification): a reader may count itself current up to there. A store with one writer and
    /// no other key space never needs to send it.
    Progress {
        /// The revision the feed is complete up to.
        revision: Revision,
    },
}

impl Event {
    /// The revision this change was committed at.
    pub fn revision(&self) -> Revision {
        match self {
            Event::Put { kv, .. } => kv.mod_revision,
            Event::Delete { revision, .. } | Event::Progress { revision } => *revision,
        }
    }

    /// The key this change is about (`None` for a progress notification).
    pub fn key(&self) -> Option<&str> {
        match self {
            Event::Put { kv, .. } => Some(&kv.key),
            Event::Delete { prev, .. } => Some(&prev.key),
            Event::Progress { .. } => None,
        }
    }
}

/// What must hold for a conditional write to go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// Nothing: the write always goes ahead.
    None,
    /// The key must not exist (create).
    Absent,
    /// The key must exist with exactly this modification revision (optimistic concurrency).
    ModRevision(Revision),
    /// The key must exist, whatever its revision.
    Exists,
}

/// One conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create or replace a key.
    Put {
        /// The key.
        key: String,
        /// The new value.
        value: Bytes,
        /// What must hold first.
        precondition: Precondition,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: String,
        /// What must hold first.
        precondition: Precondition,
    },
}

/// The result of a conditional write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write committed durably at `revision`.
    Committed {
        /// The revision it committed at.
        revision: Revision,
        /// The key's state before the write.
        prev: Option<KeyValue>,
    },
    /// The precondition did not hold; nothing was written.
    PreconditionFailed {
        /// The key's current state.
        current: Option<KeyValue>,
    },
}

/// The result of an atomic write of several keys ([`Store::write_all`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOutcome {
    /// Every write committed durably at the one `revision` (each key's new `mod_revision`).
    Committed {
        /// The revision they all committed at.
        revision: Revision,
        /// Each key's state before the write, in the order of the writes.
        prevs: Vec<Option<KeyValue>>,
    },
    /// The precondition of write `index` did not hold (the first such in the order given); nothing was
    /// written.
    PreconditionFailed {
        /// Which write's precondition failed.
        index: usize,
        /// That key's current state.
        current: Option<KeyValue>,
    },
}

impl Write {
    /// The key written.
    pub fn key(&self) -> &str {
        match self {
            Write::Put { key, .. } | Write::Delete { key, .. } => key,
        }
    }

    /// What must hold first.
    pub fn precondition(&self) -> Precondition {
        match self {
            Write::Put { precondition, .. } | Write::Delete { precondition, .. } => *precondition,
        }
    }

    /// Whether this write may go ahead over the key's `current` state: its precondition holds, and a
    /// delete has a key to delete (a delete of a missing key has nothing to do, whatever the
    /// precondition, and counts as refused).
    pub fn holds(&self, current: Option<&KeyValue>) -> bool {
        let holds = match self.precondition() {
            Precondition::None => true,
            Precondition::Absent => current.is_none(),
            Precondition::Exists => current.is_some(),
            Precondition::ModRevision(r) => current.is_some_and(|kv| kv.mod_revision == r),
        };
        holds && !(matches!(self, Write::Delete { .. }) && current.is_none())
    }
}

/// Why a set of writes cannot be one transaction, before anything is tried.
pub fn check_txn(writes: &[Write]) -> Result<(), StoreError> {
    if writes.is_empty() {
        return Err(StoreError::Invalid(
            "a transaction needs at least one write".into(),
        ));
    }
    let mut keys: Vec<&str> = writes.iter().map(Write::key).collect();
    keys.sort_unstable();
    if let Some(w) = keys.windows(2).find(|w| w[0] == w[1]) {
        // etcd's own words for the same refusal.
        return Err(StoreError::Invalid(format!(
            "etcdserver: duplicate key given in txn request: {}",
            w[0]
        )));
    }
    Ok(())
}

/// A consistent view of every key under a prefix, at one revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The revision the snapshot reflects; the feed continues with the first revision after it.
    pub revision: Revision,
    /// The keys, in key order.
    pub items: Vec<KeyValue>,
}

/// A change feed: batches of events in revision order, with no gap after the snapshot it was opened
/// with. The writes of one [`Store::write_all`] share a revision: their events come one after another,
/// in one batch, so a reader never sees part of a revision; every other event has a revision of its own.
/// It ends (returns `None`) when the store shuts down.
pub type Feed = mpsc::UnboundedReceiver<Vec<Event>>;

/// Errors from a storage backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, lost connection); the write may not have happened.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The backend is out of space (disk, quota); nothing was written. Writes resume once space is freed.
    #[error("storage is out of space: {0}")]
    NoSpace(String),
    /// The backend refuses a value this large (etcd's `--max-request-bytes`); nothing was written.
    #[error("{0}")]
    TooLarge(String),
    /// The backend did not answer in time (etcd unreachable or without a leader); the write may or may
    /// not have happened.
    #[error("storage did not answer in time: {0}")]
    Timeout(String),
    /// The request cannot be a transaction (no writes, one key twice); nothing was written.
    #[error("{0}")]
    Invalid(String),
    /// The store has shut down.
    #[error("storage is shutting down")]
    Closed,
}

/// How a backend is doing, for readiness checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Reads and writes work.
    Ok,
    /// Writes fail for now (the reason says why); the backend is healing itself.
    Degraded(String),
    /// The backend cannot go on without a restart (the reason says why).
    Failed(String),
}

/// A key-value store with conditional writes and a gap-free change feed: the contract the API server
/// needs from etcd, and what the embedded backend provides.
pub trait Store: Send + Sync + 'static {
    /// Performs one conditional write. It returns only after the write is durable, so an acknowledged
    /// write survives a crash.
    fn write(&self, write: Write) -> BoxFuture<'_, Result<WriteOutcome, StoreError>>;

    /// Performs several conditional writes as one transaction (etcd's `Txn`): either every
    /// precondition holds and all of them commit at one revision, durably, or nothing is written and
    /// the outcome names the first write whose precondition failed, with its key's current state. A key
    /// may appear once; [`check_txn`] says what is refused.
    fn write_all(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<TxnOutcome, StoreError>>;

    /// Reads every key under `prefix` at one revision and opens a feed of every change under the prefix
    /// committed after that revision.
    fn snapshot_and_watch(&self, prefix: &str) -> BoxFuture<'_, Result<(Snapshot, Feed), StoreError>>;

    /// Reads one key at the latest revision.
    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, StoreError>>;

    /// Whether the backend can write now; a backend that cannot tell says [`Health::Ok`].
    fn health(&self) -> Health {
        Health::Ok
    }

    /// The store's current revision, for a reader that must see every write acknowledged before it
    /// asked (kube-apiserver's consistent read from its cache): it waits until its feed reached this
    /// revision. A backend whose only writer is this process (every write waits for the feed) answers
    /// `None`: its feed is already current. A backend shared by several processes answers the revision
    /// and makes its feeds send a [`Event::Progress`] soon, so that a quiet feed reaches it too.
    fn current_revision(&self) -> BoxFuture<'_, Result<Option<Revision>, StoreError>> {
        Box::pin(async { Ok(None) })
    }
}
