//! The behaviour every [`Store`] backend must show, as one suite each backend's tests run against a fresh
//! store of their own (the embedded one in `redb`'s unit tests, etcd in `svcnet-store-etcd`'s).
//!
//! Revisions are compared relative to each other, never as absolute numbers: a fresh redb starts at 0, a
//! fresh etcd at 1, and both only promise a global, strictly increasing revision. Each check panics with
//! what differed; it is compiled for this crate's tests and behind the `conformance` feature for other
//! crates' tests.

use std::sync::Arc;

use bytes::Bytes;

use crate::{
    Event, Feed, KeyValue, Precondition, Revision, Store, StoreError, TxnOutcome, Write, WriteOutcome,
};

fn put(key: &str, v: &str, precondition: Precondition) -> Write {
    Write::Put {
        key: key.into(),
        value: Bytes::copy_from_slice(v.as_bytes()),
        precondition,
    }
}

fn delete(key: &str, precondition: Precondition) -> Write {
    Write::Delete {
        key: key.into(),
        precondition,
    }
}

async fn committed(store: &dyn Store, w: Write) -> (Revision, Option<KeyValue>) {
    match store.write(w.clone()).await {
        Ok(WriteOutcome::Committed { revision, prev }) => (revision, prev),
        other => panic!("{w:?} should commit, got {other:?}"),
    }
}

async fn refused(store: &dyn Store, w: Write) -> Option<KeyValue> {
    match store.write(w.clone()).await {
        Ok(WriteOutcome::PreconditionFailed { current }) => current,
        other => panic!("{w:?} should fail its precondition, got {other:?}"),
    }
}

async fn txn_committed(store: &dyn Store, ws: Vec<Write>) -> (Revision, Vec<Option<KeyValue>>) {
    match store.write_all(ws.clone()).await {
        Ok(TxnOutcome::Committed { revision, prevs }) => (revision, prevs),
        other => panic!("{ws:?} should commit, got {other:?}"),
    }
}

async fn txn_refused(store: &dyn Store, ws: Vec<Write>) -> (usize, Option<KeyValue>) {
    match store.write_all(ws.clone()).await {
        Ok(TxnOutcome::PreconditionFailed { index, current }) => (index, current),
        other => panic!("{ws:?} should fail a precondition, got {other:?}"),
    }
}

/// The next batch of the feed that holds changes (progress notifications skipped), within 10 s.
async fn next_batch(feed: &mut Feed) -> Vec<Event> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, feed.recv()).await {
            Ok(Some(batch)) => {
                let batch: Vec<Event> = batch
                    .into_iter()
                    .filter(|e| !matches!(e, Event::Progress { .. }))
                    .collect();
                if !batch.is_empty() {
                    return batch;
                }
            }
            Ok(None) => panic!("feed ended"),
            Err(_) => panic!("no change within 10 s"),
        }
    }
}

/// Reads the feed until `n` changes (progress notifications skipped) have arrived, within 10 s.
async fn changes(feed: &mut Feed, n: usize) -> Vec<Event> {
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while seen.len() < n {
        match tokio::time::timeout_at(deadline, feed.recv()).await {
            Ok(Some(batch)) => {
                seen.extend(batch.into_iter().filter(|e| !matches!(e, Event::Progress { .. })))
            }
            Ok(None) => panic!("feed ended after {} of {n} changes: {seen:?}", seen.len()),
            Err(_) => panic!("only {} of {n} changes within 10 s: {seen:?}", seen.len()),
        }
    }
    seen
}

/// Creates, optimistic updates, `Exists`, deletes: each precondition holds or refuses exactly as
/// documented, revisions grow, and the key's create/mod revisions and previous state are reported.
pub async fn conditional_writes(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let (r1, prev) = committed(s, put("/cw/1", "x", Precondition::Absent)).await;
    assert_eq!(prev, None);
    let current = refused(s, put("/cw/1", "y", Precondition::Absent)).await;
    assert_eq!(current.map(|kv| kv.mod_revision), Some(r1));
    refused(s, put("/cw/1", "y", Precondition::ModRevision(r1 + 1000))).await;
    let (r2, prev) = committed(s, put("/cw/1", "y", Precondition::ModRevision(r1))).await;
    assert!(r2 > r1, "{r2} > {r1}");
    let prev = prev.expect("an update reports the state before it");
    assert_eq!((&prev.value[..], prev.mod_revision), (&b"x"[..], r1));
    let kv = s.get("/cw/1").await.unwrap().expect("stored");
    assert_eq!(
        (
            kv.key.as_str(),
            kv.create_revision,
            kv.mod_revision,
            &kv.value[..]
        ),
        ("/cw/1", r1, r2, &b"y"[..])
    );
    assert_eq!(refused(s, put("/cw/2", "x", Precondition::Exists)).await, None);
    let (r3, _) = committed(s, put("/cw/1", "z", Precondition::Exists)).await;
    assert!(r3 > r2);
    refused(s, delete("/cw/1", Precondition::ModRevision(r2))).await;
    let (r4, prev) = committed(s, delete("/cw/1", Precondition::ModRevision(r3))).await;
    assert!(r4 > r3);
    assert_eq!(prev.map(|kv| kv.value), Some(Bytes::from_static(b"z")));
    assert!(s.get("/cw/1").await.unwrap().is_none());
    // A delete of a missing key has nothing to do, whatever the precondition, and takes no revision.
    assert_eq!(refused(s, delete("/cw/1", Precondition::None)).await, None);
    let (r5, _) = committed(s, put("/cw/3", "x", Precondition::None)).await;
    assert_eq!(r5, r4 + 1, "a refused write takes no revision");
}

/// A snapshot holds exactly the prefix's keys at one revision, and its feed continues with every later
/// change under the prefix (and nothing else), in revision order, with the previous state.
pub async fn snapshot_then_feed_has_no_gap(store: Arc<dyn Store>) {
    let s = store.as_ref();
    committed(s, put("/sf/a/1", "x", Precondition::None)).await;
    let (before, _) = committed(s, put("/sf/b/1", "x", Precondition::None)).await;
    let (snap, mut feed) = s.snapshot_and_watch("/sf/a/").await.unwrap();
    assert_eq!(snap.revision, before, "the snapshot is at the latest revision");
    let keys: Vec<&str> = snap.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/sf/a/1"]);
    let (r2, _) = committed(s, put("/sf/a/2", "x", Precondition::None)).await;
    committed(s, put("/sf/b/2", "x", Precondition::None)).await;
    let (r3, _) = committed(s, put("/sf/a/1", "y", Precondition::Exists)).await;
    let (r4, _) = committed(s, delete("/sf/a/2", Precondition::None)).await;
    let seen = changes(&mut feed, 3).await;
    let got: Vec<(Revision, Option<&str>)> = seen.iter().map(|e| (e.revision(), e.key())).collect();
    assert_eq!(
        got,
        [
            (r2, Some("/sf/a/2")),
            (r3, Some("/sf/a/1")),
            (r4, Some("/sf/a/2"))
        ]
    );
    match &seen[1] {
        Event::Put { kv, prev } => {
            assert_eq!(&kv.value[..], b"y");
            assert_eq!(prev.as_ref().map(|p| &p.value[..]), Some(&b"x"[..]));
        }
        other => panic!("an update is a put: {other:?}"),
    }
    match &seen[2] {
        Event::Delete { prev, revision } => {
            assert_eq!((prev.mod_revision, *revision), (r2, r4));
        }
        other => panic!("a delete: {other:?}"),
    }
}

/// Concurrent creates all commit, each at its own revision; concurrent updates of one key at the same
/// revision: exactly one wins.
pub async fn concurrent_writes(store: Arc<dyn Store>) {
    let (_, mut feed) = store.snapshot_and_watch("/cc/").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            committed(
                s.as_ref(),
                put(&format!("/cc/k{i:03}"), "v", Precondition::Absent),
            )
            .await
            .0
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.unwrap());
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 200, "every create has its own revision");
    let seen = changes(&mut feed, 200).await;
    let fed: Vec<Revision> = seen.iter().map(Event::revision).collect();
    assert_eq!(fed, revs, "the feed has every create once, in revision order");
    let (snap, _) = store.snapshot_and_watch("/cc/").await.unwrap();
    assert_eq!(snap.items.len(), 200);

    let base = store.get("/cc/k000").await.unwrap().unwrap().mod_revision;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.write(put("/cc/k000", &format!("w{i}"), Precondition::ModRevision(base)))
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), WriteOutcome::Committed { .. }) {
            won += 1;
        }
    }
    assert_eq!(won, 1, "optimistic concurrency lets exactly one writer win");
}

/// A store shared by several processes reports a current revision at least as new as every acknowledged
/// write; one with a single writer may say `None`.
pub async fn current_revision_covers_acknowledged_writes(store: Arc<dyn Store>) {
    let (r, _) = committed(store.as_ref(), put("/cr/1", "x", Precondition::None)).await;
    if let Some(current) = store.current_revision().await.unwrap() {
        assert!(current >= r, "current revision {current} < acknowledged {r}");
    }
}

/// Several keys in one transaction: all commit at one revision (each key's `mod_revision`), the feed
/// brings their events in one batch at that revision, a snapshot shows them all; a failed precondition
/// names the write and its key's state, writes nothing and takes no revision; one key twice or no write
/// at all is refused before anything is tried.
pub async fn transactions(store: Arc<dyn Store>) {
    let s = store.as_ref();
    let (_, mut feed) = s.snapshot_and_watch("/tx/").await.unwrap();
    let (r0, _) = committed(s, put("/tx/a", "a0", Precondition::Absent)).await;
    next_batch(&mut feed).await;

    let (r1, prevs) = txn_committed(
        s,
        vec![
            put("/tx/ip", "ip", Precondition::Absent),
            put("/tx/svc", "svc", Precondition::Absent),
            put("/tx/a", "a1", Precondition::ModRevision(r0)),
        ],
    )
    .await;
    assert_eq!(r1, r0 + 1, "one transaction is one revision");
    assert_eq!(prevs.len(), 3);
    assert_eq!((&prevs[0], &prevs[1]), (&None, &None));
    assert_eq!(
        prevs[2].as_ref().map(|kv| (&kv.value[..], kv.mod_revision)),
        Some((&b"a0"[..], r0))
    );
    for (key, create) in [("/tx/ip", r1), ("/tx/svc", r1), ("/tx/a", r0)] {
        let kv = s.get(key).await.unwrap().expect("stored");
        assert_eq!((kv.create_revision, kv.mod_revision), (create, r1), "{key}");
    }
    let batch = next_batch(&mut feed).await;
    let got: Vec<(Revision, Option<&str>)> = batch.iter().map(|e| (e.revision(), e.key())).collect();
    assert_eq!(
        got,
        [(r1, Some("/tx/ip")), (r1, Some("/tx/svc")), (r1, Some("/tx/a"))],
        "one transaction's events come together, at its revision"
    );
    let (snap, mut feed2) = s.snapshot_and_watch("/tx/").await.unwrap();
    assert_eq!(snap.revision, r1);
    let at: Vec<(&str, Revision)> = snap
        .items
        .iter()
        .map(|kv| (kv.key.as_str(), kv.mod_revision))
        .collect();
    assert_eq!(at, [("/tx/a", r1), ("/tx/ip", r1), ("/tx/svc", r1)]);

    // The second write's key exists: nothing is written, the refusal names it with its state.
    let (index, current) = txn_refused(
        s,
        vec![
            put("/tx/new", "x", Precondition::Absent),
            put("/tx/ip", "taken", Precondition::Absent),
            put("/tx/a", "a2", Precondition::None),
        ],
    )
    .await;
    assert_eq!(index, 1);
    let current = current.expect("the key that exists");
    assert_eq!((&current.value[..], current.mod_revision), (&b"ip"[..], r1));
    assert!(s.get("/tx/new").await.unwrap().is_none(), "nothing was written");
    assert_eq!(&s.get("/tx/a").await.unwrap().unwrap().value[..], b"a1");
    let (index, current) = txn_refused(
        s,
        vec![
            put("/tx/svc", "svc2", Precondition::ModRevision(r0)),
            put("/tx/new", "x", Precondition::Absent),
        ],
    )
    .await;
    assert_eq!((index, current.map(|kv| kv.mod_revision)), (0, Some(r1)));
    let (index, current) = txn_refused(
        s,
        vec![
            put("/tx/new", "x", Precondition::Absent),
            delete("/tx/gone", Precondition::None),
        ],
    )
    .await;
    assert_eq!(
        (index, current),
        (1, None),
        "a delete of a missing key is refused"
    );
    assert!(s.get("/tx/new").await.unwrap().is_none());

    // Deletes and puts together; the refused transactions took no revision.
    let (r2, prevs) = txn_committed(
        s,
        vec![
            delete("/tx/ip", Precondition::ModRevision(r1)),
            put("/tx/svc", "svc2", Precondition::ModRevision(r1)),
        ],
    )
    .await;
    assert_eq!(r2, r1 + 1, "a refused transaction takes no revision");
    assert!(
        prevs
            .iter()
            .all(|p| p.as_ref().is_some_and(|kv| kv.mod_revision == r1))
    );
    for feed in [&mut feed, &mut feed2] {
        let batch = next_batch(feed).await;
        match &batch[..] {
            [
                Event::Delete { prev, revision },
                Event::Put { kv, prev: Some(old) },
            ] => {
                assert_eq!((prev.key.as_str(), *revision), ("/tx/ip", r2));
                assert_eq!(
                    (kv.key.as_str(), kv.mod_revision, old.mod_revision),
                    ("/tx/svc", r2, r1)
                );
            }
            other => panic!("a delete and a put at {r2}: {other:?}"),
        }
    }

    for ws in [
        vec![],
        vec![
            put("/tx/d", "1", Precondition::None),
            put("/tx/d", "2", Precondition::None),
        ],
    ] {
        match s.write_all(ws.clone()).await {
            Err(StoreError::Invalid(_)) => {}
            other => panic!("{ws:?} should be refused as a transaction, got {other:?}"),
        }
    }
    assert!(s.get("/tx/d").await.unwrap().is_none());
}

/// Concurrent transactions that each claim one shared key and a key of their own (two API servers
/// taking one address for two Services): exactly one commits, and no loser's own key is written.
/// Concurrent transactions on distinct keys each get a revision of their own, in the feed in order.
pub async fn concurrent_transactions(store: Arc<dyn Store>) {
    let (_, mut feed) = store.snapshot_and_watch("/ct/").await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.write_all(vec![
                put("/ct/ip/1", &format!("svc{i}"), Precondition::Absent),
                put(&format!("/ct/svc/{i:02}"), "x", Precondition::Absent),
            ])
            .await
            .unwrap()
        }));
    }
    let mut won = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            TxnOutcome::Committed { revision, .. } => won.push((i, revision)),
            TxnOutcome::PreconditionFailed { index, current } => {
                assert_eq!(index, 0);
                assert!(current.is_some());
            }
        }
    }
    assert_eq!(
        won.len(),
        1,
        "one shared key: exactly one transaction wins: {won:?}"
    );
    let (winner, revision) = won[0];
    let (snap, _) = store.snapshot_and_watch("/ct/").await.unwrap();
    let at: Vec<(String, Revision)> = snap
        .items
        .iter()
        .map(|kv| (kv.key.clone(), kv.mod_revision))
        .collect();
    assert_eq!(
        at,
        [
            ("/ct/ip/1".to_string(), revision),
            (format!("/ct/svc/{winner:02}"), revision)
        ]
    );
    next_batch(&mut feed).await;

    let mut tasks = Vec::new();
    for i in 0..50 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            txn_committed(
                s.as_ref(),
                vec![
                    put(&format!("/ct/a/{i:02}"), "x", Precondition::Absent),
                    put(&format!("/ct/b/{i:02}"), "x", Precondition::Absent),
                ],
            )
            .await
            .0
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.push(t.await.unwrap());
    }
    revs.sort();
    revs.dedup();
    assert_eq!(revs.len(), 50, "every transaction has its own revision");
    let seen = changes(&mut feed, 100).await;
    let fed: Vec<Revision> = seen.iter().map(Event::revision).collect();
    let expected: Vec<Revision> = revs.iter().flat_map(|r| [*r, *r]).collect();
    assert_eq!(
        fed, expected,
        "the feed has both keys of every transaction, in revision order"
    );
    for pair in seen.chunks(2) {
        let (a, b) = (pair[0].key().unwrap(), pair[1].key().unwrap());
        assert_eq!(a.replace("/ct/a/", ""), b.replace("/ct/b/", ""), "{a} and {b}");
    }
}
