//! The embedded backend: one redb file, one writer thread with group commit.
//!
//! Every write is fsynced before it is acknowledged (redb's immediate durability), so `kill -9` at any
//! moment loses nothing that a client was told succeeded. One fsync per write would cap throughput at the
//! disk's sync rate, so the writer thread drains whatever requests are queued and commits them in one
//! transaction (group commit): under load many writes share one fsync, and a lone write still commits at
//! once. The same thread also registers feeds, which is what makes a snapshot and its feed gap-free: no
//! write can slip between the snapshot read and the feed registration.

use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::thread;

use bytes::Bytes;
use futures::future::BoxFuture;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, info};

use crate::{
    Event, Feed, KeyValue, Precondition, Revision, Snapshot, Store, StoreError, Write, WriteOutcome,
};

/// key → (create revision, modification revision, value)
const OBJECTS: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("objects");
/// name → number; holds the current revision under `revision`.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";
/// Upper bound on writes folded into one commit, so one commit's latency stays bounded.
const MAX_BATCH: usize = 1024;

enum Request {
    Write(Write, oneshot::Sender<Result<WriteOutcome, StoreError>>),
    Subscribe(String, oneshot::Sender<Result<(Snapshot, Feed), StoreError>>),
    Get(String, oneshot::Sender<Result<Option<KeyValue>, StoreError>>),
}

/// The embedded store. Cloning is not needed: share it behind an `Arc`.
pub struct RedbStore {
    tx: std_mpsc::Sender<Request>,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl RedbStore {
    /// Opens (or creates) the database file at `path` and starts the writer thread.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(backend)?;
        // Make sure both tables exist so readers never see "table does not exist".
        let revision = {
            let txn = db.begin_write().map_err(backend)?;
            let rev = {
                let _ = txn.open_table(OBJECTS).map_err(backend)?;
                let meta = txn.open_table(META).map_err(backend)?;
                meta.get(REVISION_KEY)
                    .map_err(backend)?
                    .map(|v| v.value())
                    .unwrap_or(0)
            };
            txn.commit().map_err(backend)?;
            rev
        };
        info!(path = %path.display(), revision, "opened embedded store");
        let (tx, rx) = std_mpsc::channel();
        thread::Builder::new()
            .name("svcnet-store-writer".into())
            .spawn(move || {
                Writer {
                    db,
                    revision,
                    feeds: Vec::new(),
                }
                .run(rx)
            })
            .map_err(backend)?;
        Ok(RedbStore { tx })
    }

    fn send(&self, req: Request) -> Result<(), StoreError> {
        self.tx.send(req).map_err(|_| StoreError::Closed)
    }
}

impl Store for RedbStore {
    fn write(&self, write: Write) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            self.send(Request::Write(write, tx))?;
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
}

struct Writer {
    db: Database,
    revision: Revision,
    feeds: Vec<(String, mpsc::UnboundedSender<Vec<Event>>)>,
}

type Pending = (Write, oneshot::Sender<Result<WriteOutcome, StoreError>>);

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<Request>) {
        let mut writes: Vec<Pending> = Vec::new();
        while let Ok(first) = rx.recv() {
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

    fn read_key(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let txn = self.db.begin_read().map_err(backend)?;
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
        let txn = self.db.begin_read().map_err(backend)?;
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
        let start_revision = self.revision;
        match self.apply(&batch) {
            Ok((outcomes, events)) => {
                for ((_, reply), outcome) in batch.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
                if !events.is_empty() {
                    self.publish(events);
                }
            }
            Err(e) => {
                error!(error = %e, writes = batch.len(), "store commit failed");
                self.revision = start_revision;
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
    }

    fn apply(&mut self, batch: &[Pending]) -> Result<(Vec<WriteOutcome>, Vec<Event>), StoreError> {
        let txn = self.db.begin_write().map_err(backend)?;
        let mut outcomes = Vec::with_capacity(batch.len());
        let mut events = Vec::new();
        {
            let mut table = txn.open_table(OBJECTS).map_err(backend)?;
            for (write, _) in batch {
                let key = match write {
                    Write::Put { key, .. } | Write::Delete { key, .. } => key.as_str(),
                };
                let current = table.get(key).map_err(backend)?.map(|g| {
                    let (c, m, val) = g.value();
                    KeyValue {
                        key: key.to_string(),
                        value: Bytes::copy_from_slice(val),
                        create_revision: c,
                        mod_revision: m,
                    }
                });
                let precondition = match write {
                    Write::Put { precondition, .. } | Write::Delete { precondition, .. } => *precondition,
                };
                let holds = match precondition {
                    Precondition::None => true,
                    Precondition::Absent => current.is_none(),
                    Precondition::Exists => current.is_some(),
                    Precondition::ModRevision(r) => current.as_ref().is_some_and(|kv| kv.mod_revision == r),
                };
                // A delete of a missing key has nothing to do, whatever the precondition.
                let is_noop_delete = matches!(write, Write::Delete { .. }) && current.is_none();
                if !holds || is_noop_delete {
                    outcomes.push(WriteOutcome::PreconditionFailed { current });
                    continue;
                }
                let revision = self.revision + 1;
                self.revision = revision;
                match write {
                    Write::Put { value, .. } => {
                        let create = current.as_ref().map_or(revision, |kv| kv.create_revision);
                        table
                            .insert(key, (create, revision, value.as_ref()))
                            .map_err(backend)?;
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
                        table.remove(key).map_err(backend)?;
                        if let Some(prev) = current.clone() {
                            events.push(Event::Delete { prev, revision });
                        }
                    }
                }
                outcomes.push(WriteOutcome::Committed {
                    revision,
                    prev: current,
                });
            }
            let mut meta = txn.open_table(META).map_err(backend)?;
            meta.insert(REVISION_KEY, self.revision).map_err(backend)?;
        }
        txn.commit().map_err(backend)?;
        Ok((outcomes, events))
    }

    fn publish(&mut self, events: Vec<Event>) {
        self.feeds.retain(|(prefix, tx)| {
            let mine: Vec<Event> = events
                .iter()
                .filter(|e| e.key().starts_with(prefix.as_str()))
                .cloned()
                .collect();
            mine.is_empty() || tx.send(mine).is_ok()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn put(key: &str, v: &str, precondition: Precondition) -> Write {
        Write::Put {
            key: key.into(),
            value: Bytes::copy_from_slice(v.as_bytes()),
            precondition,
        }
    }

    #[tokio::test]
    async fn conditional_writes_and_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let store = RedbStore::open(&dir.path().join("db")).unwrap();
        let r1 = store.write(put("/a/1", "x", Precondition::Absent)).await.unwrap();
        assert!(matches!(
            r1,
            WriteOutcome::Committed {
                revision: 1,
                prev: None
            }
        ));
        let again = store.write(put("/a/1", "y", Precondition::Absent)).await.unwrap();
        assert!(matches!(
            again,
            WriteOutcome::PreconditionFailed { current: Some(_) }
        ));
        let stale = store
            .write(put("/a/1", "y", Precondition::ModRevision(7)))
            .await
            .unwrap();
        assert!(matches!(stale, WriteOutcome::PreconditionFailed { .. }));
        let ok = store
            .write(put("/a/1", "y", Precondition::ModRevision(1)))
            .await
            .unwrap();
        assert!(matches!(ok, WriteOutcome::Committed { revision: 2, .. }));
        let kv = store.get("/a/1").await.unwrap().unwrap();
        assert_eq!(
            (kv.create_revision, kv.mod_revision, &kv.value[..]),
            (1, 2, &b"y"[..])
        );
        let del = store
            .write(Write::Delete {
                key: "/a/1".into(),
                precondition: Precondition::None,
            })
            .await
            .unwrap();
        assert!(matches!(del, WriteOutcome::Committed { revision: 3, .. }));
        assert!(store.get("/a/1").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn snapshot_then_feed_has_no_gap() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(RedbStore::open(&dir.path().join("db")).unwrap());
        store.write(put("/a/1", "x", Precondition::None)).await.unwrap();
        store.write(put("/b/1", "x", Precondition::None)).await.unwrap();
        let (snap, mut feed) = store.snapshot_and_watch("/a/").await.unwrap();
        assert_eq!(snap.revision, 2);
        assert_eq!(snap.items.len(), 1);
        store.write(put("/a/2", "x", Precondition::None)).await.unwrap();
        store.write(put("/b/2", "x", Precondition::None)).await.unwrap();
        store.write(put("/a/3", "x", Precondition::None)).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 2 {
            seen.extend(feed.recv().await.unwrap());
        }
        let revs: Vec<u64> = seen.iter().map(Event::revision).collect();
        assert_eq!(revs, vec![3, 5]);
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
}
