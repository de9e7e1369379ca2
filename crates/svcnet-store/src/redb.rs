//! The embedded backend: one redb file, one writer thread with group commit.
//!
//! Every write is fsynced before it is acknowledged (redb's immediate durability), so `kill -9` at any
//! moment loses nothing that a client was told succeeded. One fsync per write would cap throughput at the
//! disk's sync rate, so the writer thread drains whatever requests are queued and commits them in one
//! transaction (group commit): under load many writes share one fsync, and a lone write still commits at
//! once. The same thread also registers feeds, which is what makes a snapshot and its feed gap-free: no
//! write can slip between the snapshot read and the feed registration.
//!
//! **Faults heal.** After an I/O error (a full disk, say) redb refuses every later transaction with
//! "Previous I/O error occurred. Please close and re-open the database." until it is reopened. So the
//! writer drops the database at the first such error, answers writes at once with the cause (out of
//! space or not) while it is faulted, and tries to reopen the file with back-off (250 ms doubling to
//! 2 s): once that works (redb repairs the file if the failed commit left it dirty, which itself needs
//! the space back) writes go on where they stopped. A failed commit changes nothing: it published no
//! event and its revision is given back, and redb's commit is atomic, so the file holds the last
//! acknowledged state. [`RedbStore::health`] says what is wrong meanwhile (the API server's `/readyz`).

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info, warn};

use crate::{
    Event, Feed, Health, KeyValue, Revision, Snapshot, Store, StoreError, TxnOutcome, Write, WriteOutcome,
};

/// key → (create revision, modification revision, value)
pub(crate) const OBJECTS: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("objects");
/// name → number; holds the current revision under `revision`.
pub(crate) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(crate) const REVISION_KEY: &str = "revision";
/// Scratch space for the write probe a reopen makes before it declares the store healthy.
const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("probe");
/// As large as a big object: a probe that fits in pages freed by earlier commits proves little.
const PROBE_SIZE: usize = 256 * 1024;
/// Upper bound on writes folded into one commit, so one commit's latency stays bounded.
const MAX_BATCH: usize = 1024;
/// First and longest wait between attempts to reopen a faulted database.
const REOPEN_FIRST: Duration = Duration::from_millis(250);
const REOPEN_MAX: Duration = Duration::from_secs(2);

enum Request {
    Write(Vec<Write>, Reply),
    Subscribe(String, oneshot::Sender<Result<(Snapshot, Feed), StoreError>>),
    Get(String, oneshot::Sender<Result<Option<KeyValue>, StoreError>>),
}

/// Opens the database file; called again for every reopen after a fault.
type Opener = Box<dyn Fn() -> Result<Database, DatabaseError> + Send>;

/// The embedded store. Cloning is not needed: share it behind an `Arc`.
pub struct RedbStore {
    tx: std_mpsc::Sender<Request>,
    health: Arc<Mutex<Health>>,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// Any redb error as the one error type, so that it can be classified.
fn db_err<E: Into<redb::Error>>(e: E) -> redb::Error {
    e.into()
}

/// Whether an I/O error means the disk (or a quota, or a file size limit) is full.
fn is_no_space(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc_consts::ENOSPC | libc_consts::EDQUOT | libc_consts::EFBIG)
    ) || e.kind() == std::io::ErrorKind::StorageFull
}

/// The three errno values that mean "full", without a libc dependency for three numbers (Linux values).
mod libc_consts {
    pub const EFBIG: i32 = 27;
    pub const ENOSPC: i32 = 28;
    pub const EDQUOT: i32 = 122;
}

/// What a failed commit means for the database handle.
enum Failure {
    /// The storage failed (I/O, corruption): redb must be reopened before it writes again.
    Storage { no_space: bool },
    /// Only this batch failed (e.g. a value too large); the database is fine.
    Batch,
}

fn classify(e: &redb::Error) -> Failure {
    match e {
        redb::Error::Io(io) => Failure::Storage {
            no_space: is_no_space(io),
        },
        redb::Error::PreviousIo | redb::Error::Corrupted(_) | redb::Error::DatabaseClosed => {
            Failure::Storage { no_space: false }
        }
        _ => Failure::Batch,
    }
}

/// Makes the database file owner-only (0600), creating it empty if missing (redb initialises an empty
/// file): it holds every object, Secrets-like data included.
fn private_file(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

impl RedbStore {
    /// Opens (or creates) the database file at `path` (owner-only) and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        private_file(path).map_err(|e| StoreError::Backend(format!("{}: {e}", path.display())))?;
        let owned = path.to_path_buf();
        Self::open_with(path.to_path_buf(), Box::new(move || Database::create(&owned)))
    }

    /// Opens the store with `opener` (called again for each reopen); `path` names it in logs and errors.
    fn open_with(path: PathBuf, opener: Opener) -> Result<Self, StoreError> {
        let db = opener().map_err(backend)?;
        let revision = init_tables(&db).map_err(backend)?;
        info!(path = %path.display(), revision, "opened embedded store");
        let health = Arc::new(Mutex::new(Health::Ok));
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer {
            path,
            opener,
            db: Some(db),
            revision,
            feeds: Vec::new(),
            fault: None,
            health: health.clone(),
        };
        thread::Builder::new()
            .name("svcnet-store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(backend)?;
        Ok(RedbStore { tx, health })
    }

    fn send(&self, req: Request) -> Result<(), StoreError> {
        self.tx.send(req).map_err(|_| StoreError::Closed)
    }
}

/// Makes sure both tables exist (so readers never see "table does not exist") and reads the revision.
fn init_tables(db: &Database) -> Result<Revision, redb::Error> {
    let txn = db.begin_write().map_err(db_err)?;
    let rev = {
        let _ = txn.open_table(OBJECTS).map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        meta.get(REVISION_KEY)
            .map_err(db_err)?
            .map(|v| v.value())
            .unwrap_or(0)
    };
    txn.commit().map_err(db_err)?;
    Ok(rev)
}

/// Writes and removes a large scratch value, each in a durable commit.
fn probe(db: &Database) -> Result<(), redb::Error> {
    let filler = vec![0u8; PROBE_SIZE];
    for insert in [true, false] {
        let txn = db.begin_write().map_err(db_err)?;
        {
            let mut table = txn.open_table(PROBE).map_err(db_err)?;
            if insert {
                table.insert("probe", filler.as_slice()).map_err(db_err)?;
            } else {
                table.remove("probe").map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)?;
    }
    Ok(())
}

/// Where the outcome of a queued write goes: a single write's caller, or a transaction's.
enum Reply {
    One(oneshot::Sender<Result<WriteOutcome, StoreError>>),
    All(oneshot::Sender<Result<TxnOutcome, StoreError>>),
}

impl Reply {
    fn send(self, outcome: Result<TxnOutcome, StoreError>) {
        match self {
            Reply::All(tx) => {
                let _ = tx.send(outcome);
            }
            Reply::One(tx) => {
                let _ = tx.send(outcome.map(|o| match o {
                    TxnOutcome::Committed { revision, mut prevs } => WriteOutcome::Committed {
                        revision,
                        prev: prevs.pop().flatten(),
                    },
                    TxnOutcome::PreconditionFailed { current, .. } => {
                        WriteOutcome::PreconditionFailed { current }
                    }
                }));
            }
        }
    }
}

impl Store for RedbStore {
    fn write(&self, write: Write) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.send(Request::Write(vec![write], Reply::One(tx)))?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn write_all(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            crate::check_txn(&writes)?;
            let (tx, rx) = oneshot::channel();
            self.send(Request::Write(writes, Reply::All(tx)))?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn snapshot_and_watch(&self, prefix: &str) -> BoxFuture<'_, Result<(Snapshot, Feed), StoreError>> {
        let prefix = prefix.to_string();
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.send(Request::Subscribe(prefix, tx))?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, StoreError>> {
        let key = key.to_string();
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.send(Request::Get(key, tx))?;
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn health(&self) -> Health {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The writer's state while its database is closed after a storage error.
struct Fault {
    /// What failed, as the first failing commit said.
    cause: String,
    no_space: bool,
    /// When the fault began.
    since: jiff::Timestamp,
    next_attempt: Instant,
    delay: Duration,
}

impl Fault {
    /// The error a request gets while the store is faulted.
    fn error(&self) -> StoreError {
        let message = format!(
            "storage has been failing since {}: {}; writes resume once it can write again",
            self.since.round(jiff::Unit::Second).unwrap_or(self.since),
            self.cause
        );
        if self.no_space {
            StoreError::NoSpace(message)
        } else {
            StoreError::Backend(message)
        }
    }
}

struct Writer {
    path: PathBuf,
    opener: Opener,
    /// `None` while faulted: redb must be reopened after an I/O error.
    db: Option<Database>,
    revision: Revision,
    feeds: Vec<(String, mpsc::UnboundedSender<Vec<Event>>)>,
    fault: Option<Fault>,
    health: Arc<Mutex<Health>>,
}

/// One queued request: a single write or a transaction, each committing at a revision of its own.
type Pending = (Vec<Write>, Reply);

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<Request>) {
        let mut writes: Vec<Pending> = Vec::new();
        loop {
            // While faulted, wake up for the next reopen attempt even if nobody writes.
            let first = match self.fault.as_ref().map(|f| f.next_attempt) {
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(r) => r,
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {
                        self.heal();
                        continue;
                    }
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break,
                },
            };
            let mut next = Some(first);
            while let Some(req) = next.take() {
                match req {
                    Request::Write(w, reply) => writes.push((w, reply)),
                    // Reads and subscriptions see every write queued before them, so commit those first.
                    Request::Subscribe(prefix, reply) => {
                        self.commit(&mut writes);
                        let _ = reply.send(self.subscribe(prefix));
                    }
                    Request::Get(key, reply) => {
                        self.commit(&mut writes);
                        let _ = reply.send(self.read_key(&key));
                    }
                }
                if writes.len() < MAX_BATCH {
                    next = rx.try_recv().ok();
                }
            }
            self.commit(&mut writes);
        }
        debug!("store writer stopped");
    }

    /// The open database, after a reopen attempt if one is due; the fault's error if there is none.
    fn db(&mut self) -> Result<&Database, StoreError> {
        if self
            .fault
            .as_ref()
            .is_some_and(|f| Instant::now() >= f.next_attempt)
        {
            self.heal();
        }
        match (&self.db, &self.fault) {
            (Some(db), None) => Ok(db),
            (_, Some(f)) => Err(f.error()),
            (None, None) => Err(StoreError::Closed),
        }
    }

    /// Records a storage failure: closes the database and schedules the first reopen.
    fn poison(&mut self, cause: String, no_space: bool) {
        // Dropping redb's handle releases its file lock; its own close may fail too, which is expected.
        self.db = None;
        if self.fault.is_none() {
            error!(path = %self.path.display(), error = %cause, no_space, "storage failed; writes are refused until it can be reopened");
            self.fault = Some(Fault {
                cause,
                no_space,
                since: jiff::Timestamp::now(),
                next_attempt: Instant::now() + REOPEN_FIRST,
                delay: REOPEN_FIRST,
            });
        }
        self.report();
    }

    /// One attempt to reopen the database after a fault.
    fn heal(&mut self) {
        let Some(fault) = self.fault.as_mut() else { return };
        match (self.opener)().map_err(db_err).and_then(|db| {
            let rev = init_tables(&db)?;
            // Opening needs no new space (a commit with nothing in it neither): only a write that
            // allocates shows that writes can succeed again.
            probe(&db)?;
            Ok((db, rev))
        }) {
            Ok((db, stored)) if stored == self.revision => {
                info!(path = %self.path.display(), revision = stored, "storage reopened; writes resume");
                self.db = Some(db);
                self.fault = None;
            }
            Ok((_, stored)) => {
                // A commit reported as failed did land: the feed missed it, so the cache above would be
                // wrong. Only a restart (a fresh snapshot) can put that right; stay closed and say so.
                error!(
                    stored,
                    expected = self.revision,
                    "storage holds a revision the change feed never sent"
                );
                fault.cause = format!(
                    "the store file holds revision {stored} but revision {} was the last acknowledged; \
                     restart svcnet to reload it",
                    self.revision
                );
                fault.next_attempt = Instant::now() + Duration::from_secs(3600);
                *self.health.lock().unwrap_or_else(|e| e.into_inner()) = Health::Failed(fault.cause.clone());
                return;
            }
            Err(e) => {
                debug!(error = %e, "storage still cannot be reopened");
                if let redb::Error::Io(io) = &e
                    && is_no_space(io)
                {
                    fault.no_space = true;
                }
                fault.delay = (fault.delay * 2).min(REOPEN_MAX);
                fault.next_attempt = Instant::now() + fault.delay;
            }
        }
        self.report();
    }

    /// Publishes the writer's state for [`Store::health`].
    fn report(&self) {
        let health = match &self.fault {
            None => Health::Ok,
            Some(f) => Health::Degraded(match f.error() {
                StoreError::NoSpace(m) | StoreError::Backend(m) => m,
                other => other.to_string(),
            }),
        };
        *self.health.lock().unwrap_or_else(|e| e.into_inner()) = health;
    }

    fn read_key(&mut self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(backend)?;
        let table = txn.open_table(OBJECTS).map_err(backend)?;
        let v = table.get(key).map_err(backend)?;
        Ok(v.map(|g| {
            let (c, m, val) = g.value();
            KeyValue {
                key: key.to_string(),
                value: Bytes::copy_from_slice(val),
                create_revision: c,
                mod_revision: m,
            }
        }))
    }

    fn subscribe(&mut self, prefix: String) -> Result<(Snapshot, Feed), StoreError> {
        let db = self.db()?;
        let txn = db.begin_read().map_err(backend)?;
        let table = txn.open_table(OBJECTS).map_err(backend)?;
        let mut items = Vec::new();
        for entry in table.range(prefix.as_str()..).map_err(backend)? {
            let (k, v) = entry.map_err(backend)?;
            let key = k.value();
            if !key.starts_with(prefix.as_str()) {
                break;
            }
            let (c, m, val) = v.value();
            items.push(KeyValue {
                key: key.to_string(),
                value: Bytes::copy_from_slice(val),
                create_revision: c,
                mod_revision: m,
            });
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.feeds.push((prefix, tx));
        Ok((
            Snapshot {
                revision: self.revision,
                items,
            },
            rx,
        ))
    }

    /// Applies the queued writes in one transaction, fsyncs once, then answers each and feeds the events.
    fn commit(&mut self, writes: &mut Vec<Pending>) {
        if writes.is_empty() {
            return;
        }
        let batch = std::mem::take(writes);
        if let Err(e) = self.db() {
            for (_, reply) in batch {
                reply.send(Err(e.clone()));
            }
            return;
        }
        let start_revision = self.revision;
        match self.apply(&batch) {
            Ok((outcomes, events)) => {
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    reply.send(Ok(outcome));
                }
                if !events.is_empty() {
                    self.publish(events);
                }
            }
            Err(e) => {
                // Nothing of the batch is visible: no event went out, and the revisions are given back.
                self.revision = start_revision;
                let cause = format!("writing {}: {e}", self.path.display());
                let err = match classify(&e) {
                    Failure::Storage { no_space } => {
                        self.poison(cause.clone(), no_space);
                        if no_space {
                            StoreError::NoSpace(cause)
                        } else {
                            StoreError::Backend(cause)
                        }
                    }
                    Failure::Batch => {
                        warn!(error = %e, writes = batch.len(), "store commit failed");
                        StoreError::Backend(cause)
                    }
                };
                for (_, reply) in batch {
                    reply.send(Err(err.clone()));
                }
            }
        }
    }

    /// Applies each queued request in turn inside one redb transaction: a request whose
    /// preconditions all hold takes the next revision for all of its keys; one that fails writes
    /// nothing and takes no revision.
    fn apply(&mut self, batch: &[Pending]) -> Result<(Vec<TxnOutcome>, Vec<Event>), redb::Error> {
        let Some(db) = self.db.as_ref() else {
            return Err(redb::Error::DatabaseClosed);
        };
        let txn = db.begin_write().map_err(db_err)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        {
            let mut table = txn.open_table(OBJECTS).map_err(db_err)?;
            'requests: for (writes, _) in batch {
                // Each key's state as the writes before this request in the batch left it.
                let mut currents = Vec::with_capacity(writes.len());
                for (index, write) in writes.iter().enumerate() {
                    let key = write.key();
                    let current = table.get(key).map_err(db_err)?.map(|g| {
                        let (c, m, val) = g.value();
                        KeyValue {
                            key: key.to_string(),
                            value: Bytes::copy_from_slice(val),
                            create_revision: c,
                            mod_revision: m,
                        }
                    });
                    if !write.holds(current.as_ref()) {
                        outcomes.push(TxnOutcome::PreconditionFailed { index, current });
                        continue 'requests;
                    }
                    currents.push(current);
                }
                let revision = self.revision + 1;
                self.revision = revision;
                for (write, current) in writes.iter().zip(&currents) {
                    let key = write.key();
                    match write {
                        Write::Put { value, .. } => {
                            let create = current.as_ref().map_or(revision, |kv| kv.create_revision);
                            table
                                .insert(key, (create, revision, value.as_ref()))
                                .map_err(db_err)?;
                            events.push(Event::Put {
                                kv: KeyValue {
                                    key: key.to_string(),
                                    value: value.clone(),
                                    create_revision: create,
                                    mod_revision: revision,
                                },
                                prev: current.clone(),
                            });
                        }
                        Write::Delete { .. } => {
                            table.remove(key).map_err(db_err)?;
                            if let Some(prev) = current.clone() {
                                events.push(Event::Delete { prev, revision });
                            }
                        }
                    }
                }
                outcomes.push(TxnOutcome::Committed {
                    revision,
                    prevs: currents,
                });
            }
            let mut meta = txn.open_table(META).map_err(db_err)?;
            meta.insert(REVISION_KEY, self.revision).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        Ok((outcomes, events))
    }

    fn publish(&mut self, events: Vec<Event>) {
        self.feeds.retain(|(prefix, tx)| {
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| e.key().is_some_and(|k| k.starts_with(prefix.as_str())))
                .cloned()
                .collect();
            mine.is_empty() || tx.send(mine).is_ok()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Precondition;
    use std::sync::Arc;

    fn put(key: &str, v: &str, precondition: Precondition) -> Write {
        Write::Put {
            key: key.into(),
            value: Bytes::copy_from_slice(v.as_bytes()),
            precondition,
        }
    }

    /// A fresh store in a temporary directory (kept alive with it).
    fn fresh() -> (tempfile::TempDir, Arc<dyn Store>) {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("db")).unwrap();
        (dir, Arc::new(store))
    }

    #[tokio::test]
    async fn conformance_conditional_writes() {
        let (_dir, store) = fresh();
        crate::conformance::conditional_writes(store).await;
    }

    #[tokio::test]
    async fn conformance_snapshot_then_feed_has_no_gap() {
        let (_dir, store) = fresh();
        crate::conformance::snapshot_then_feed_has_no_gap(store).await;
    }

    #[tokio::test]
    async fn conformance_concurrent_writes() {
        let (_dir, store) = fresh();
        crate::conformance::concurrent_writes(store).await;
    }

    #[tokio::test]
    async fn conformance_transactions() {
        let (_dir, store) = fresh();
        crate::conformance::transactions(store).await;
    }

    #[tokio::test]
    async fn conformance_concurrent_transactions() {
        let (_dir, store) = fresh();
        crate::conformance::concurrent_transactions(store).await;
    }

    #[tokio::test]
    async fn conformance_current_revision() {
        let (_dir, store) = fresh();
        crate::conformance::current_revision_covers_acknowledged_writes(store).await;
    }

    #[tokio::test]
    async fn concurrent_writes_group_commit_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        {
            let store = Arc::new(RedbStore::open(&path).unwrap());
            let mut tasks = Vec::new();
            for i in 0..200 {
                let s = store.clone();
                tasks.push(tokio::spawn(async move {
                    s.write(put(&format!("/k/{i:03}"), "v", Precondition::Absent))
                        .await
                        .unwrap()
                }));
            }
            let mut revs = Vec::new();
            for t in tasks {
                if let WriteOutcome::Committed { revision, .. } = t.await.unwrap() {
                    revs.push(revision);
                }
            }
            revs.sort();
            assert_eq!(revs, (1..=200).collect::<Vec<_>>());
        }
        // The writer thread exits when the store is dropped; give it a moment to release the file.
        let mut reopened = None;
        for _ in 0..50 {
            match RedbStore::open(&path) {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        }
        let store = reopened.expect("reopen");
        let (snap, _feed) = store.snapshot_and_watch("/k/").await.unwrap();
        assert_eq!(snap.items.len(), 200);
        assert_eq!(snap.revision, 200);
        let r = store.write(put("/k/new", "v", Precondition::None)).await.unwrap();
        assert!(matches!(r, WriteOutcome::Committed { revision: 201, .. }));
    }

    /// A file that can be made "full": writes and growth fail with ENOSPC while the flag is set, as on
    /// a full disk.
    #[derive(Debug)]
    struct Fillable {
        inner: redb::backends::FileBackend,
        full: Arc<std::sync::atomic::AtomicBool>,
    }

    impl Fillable {
        fn check(&self) -> std::io::Result<()> {
            if self.full.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(std::io::Error::from_raw_os_error(libc_consts::ENOSPC));
            }
            Ok(())
        }
    }

    impl redb::StorageBackend for Fillable {
        fn len(&self) -> std::io::Result<u64> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.check()?;
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.inner.write(offset, data)
        }
        fn close(&self) -> std::io::Result<()> {
            self.inner.close()
        }
    }

    fn fillable(path: &Path, full: &Arc<std::sync::atomic::AtomicBool>) -> RedbStore {
        let (path, full) = (path.to_path_buf(), full.clone());
        let p = path.clone();
        RedbStore::open_with(
            path,
            Box::new(move || {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&p)?;
                let backend = Fillable {
                    inner: redb::backends::FileBackend::new(file)?,
                    full: full.clone(),
                };
                Database::builder().create_with_backend(backend)
            }),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn full_disk_refuses_writes_then_heals_without_losing_anything() {
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        let full = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store = fillable(&path, &full);
        let (_, mut feed) = store.snapshot_and_watch("/k/").await.unwrap();
        for i in 0..3 {
            store
                .write(put(&format!("/k/{i}"), "v", Precondition::Absent))
                .await
                .unwrap();
        }
        assert_eq!(store.health(), Health::Ok);

        full.store(true, Ordering::SeqCst);
        let first = store.write(put("/k/lost", "v", Precondition::Absent)).await;
        assert!(
            matches!(first, Err(StoreError::NoSpace(ref m)) if m.contains("No space left")),
            "{first:?}"
        );
        // redb would now say "Previous I/O error" for ever; the store keeps saying what is wrong.
        let again = store.write(put("/k/lost2", "v", Precondition::Absent)).await;
        assert!(
            matches!(again, Err(StoreError::NoSpace(ref m)) if m.contains("No space left")),
            "{again:?}"
        );
        assert!(matches!(store.health(), Health::Degraded(ref m) if m.contains("No space left")));
        // Reopening works on a full disk; the store is not healthy again until a write could succeed.
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(matches!(store.health(), Health::Degraded(ref m) if m.contains("No space left")));

        full.store(false, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(10);
        let revision = loop {
            match store.write(put("/k/after", "v", Precondition::Absent)).await {
                Ok(WriteOutcome::Committed { revision, .. }) => break revision,
                Ok(other) => panic!("{other:?}"),
                Err(e) => {
                    assert!(Instant::now() < deadline, "store did not heal: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        };
        // The failed writes took no revision and sent no event.
        assert_eq!(revision, 4);
        assert_eq!(store.health(), Health::Ok);
        let mut seen = Vec::new();
        while seen.len() < 4 {
            seen.extend(feed.recv().await.unwrap());
        }
        let keys: Vec<&str> = seen.iter().filter_map(Event::key).collect();
        assert_eq!(keys, ["/k/0", "/k/1", "/k/2", "/k/after"]);
        drop(store);

        let mut reopened = None;
        for _ in 0..50 {
            match RedbStore::open(&path) {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        let store = reopened.expect("reopen");
        let (snap, _) = store.snapshot_and_watch("/k/").await.unwrap();
        let keys: Vec<&str> = snap.items.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["/k/0", "/k/1", "/k/2", "/k/after"]);
        assert_eq!(snap.revision, 4);
    }

    #[tokio::test]
    async fn store_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        std::fs::write(&path, b"").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let _store = RedbStore::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
