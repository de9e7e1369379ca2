//! The watch cache: every object kept in memory and updated from the store's change feed.
//!
//! Like kube-apiserver's cacher, it serves gets, lists and watches without touching storage, which is what
//! makes a 10,000-item list and a hundred watchers cheap. One task (the feeder) is its only writer; it
//! applies each committed change, appends it to a bounded history that watches resume from, and
//! broadcasts it. A write request waits until the cache has caught up with its revision before it
//! answers, so a client always reads its own writes.
//!
//! **What is kept.** Each object's JSON encoding, which gets, lists and watches send as it is, and a
//! small decoded *view* of it: `apiVersion`, `kind`, the metadata without `managedFields` and
//! `annotations`, and the fields its kind can be selected by. The view is what selectors, watch filters
//! and the garbage collector read; whatever needs the whole object (a write's old state, a table) decodes
//! the encoding ([`Cached::object`]). A decoded Pod took about 11 KiB, most of the server's memory at
//! 10,000 Pods; its view is a fraction of that.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;
use serde_json::{Map, Value};
use svcnet_api::resources::lookup_kind;
use svcnet_store::{Event, KeyValue, Revision, Store, StoreError};
use tokio::sync::{broadcast, watch};
use tracing::{error, warn};

/// At most this many past events are kept for watches to resume from (kube's watch cache grows to
/// 100 × 1024 per resource).
const HISTORY: usize = 100_000;
/// Past events are kept this long even beyond [`HISTORY_MIN`] (kube's watch cache sizes itself to hold
/// 75 s of events): long enough for any watcher to reconnect after a dropped connection.
const HISTORY_FRESH: std::time::Duration = std::time::Duration::from_secs(75);
/// At least this many past events are kept, however old. Older ones go: each holds a version of an object
/// that may no longer exist anywhere else, so a history of 100,000 events after a burst of writes would
/// pin 100,000 object versions (over a gigabyte at 60,000 pods) for as long as the cluster is quiet.
/// A watcher asking for a revision that is gone gets 410 Gone and relists, as with kube.
const HISTORY_MIN: usize = 2_000;
/// How far a slow watcher may fall behind before it is cut off and must re-watch.
const BROADCAST_CAPACITY: usize = 65_536;

/// An object as the cache holds it, with `metadata.resourceVersion` filled in.
#[derive(Debug, Clone)]
pub struct Cached {
    /// The storage key.
    pub key: Arc<str>,
    /// The modification revision.
    pub revision: Revision,
    /// What selectors and the garbage collector read of the object (see the module docs).
    pub view: Arc<Value>,
    /// The object's JSON encoding, made once when it was stored: lists and gets send these bytes
    /// instead of copying and re-serializing the object for every reader, as kube's cacher does.
    pub json: Bytes,
}

impl Cached {
    /// The whole object, decoded from its encoding.
    pub fn object(&self) -> Value {
        decode_json(&self.json)
    }
}

fn encode(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

/// Decodes an encoding this cache made from a `Value`, which cannot fail; `Null` if it ever did.
fn decode_json(json: &[u8]) -> Value {
    serde_json::from_slice(json).unwrap_or(Value::Null)
}

/// The decoded part of an object the cache keeps: `apiVersion`, `kind`, the metadata without
/// `managedFields` and `annotations`, and each field path its kind can be selected by. An object of a
/// kind this server does not know is kept whole.
pub fn view_of(obj: &Value) -> Value {
    let rt = obj
        .get("apiVersion")
        .and_then(Value::as_str)
        .zip(obj.get("kind").and_then(Value::as_str))
        .and_then(|(a, k)| lookup_kind(a, k));
    let Some(rt) = rt else {
        return obj.clone();
    };
    let mut view = Map::new();
    for k in ["apiVersion", "kind"] {
        if let Some(v) = obj.get(k) {
            view.insert(k.into(), v.clone());
        }
    }
    if let Some(m) = obj.get("metadata").and_then(Value::as_object) {
        let meta = m
            .iter()
            .filter(|(k, _)| *k != "managedFields" && *k != "annotations")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        view.insert("metadata".into(), Value::Object(meta));
    }
    let mut view = Value::Object(view);
    for path in rt.field_selectors {
        // `source` (Events) and `status.podIPs` (Pods) are read below these paths; the whole value is kept.
        let segments: Vec<&str> = path.split('.').collect();
        let pointer = format!("/{}", segments.join("/"));
        if let Some(v) = obj.pointer(&pointer) {
            set_at(&mut view, &segments, v.clone());
        }
    }
    view
}

/// Puts `value` at `path` in `obj`, making the objects on the way.
fn set_at(obj: &mut Value, path: &[&str], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut cur = obj;
    for p in parents {
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        cur = map
            .entry(p.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if let Some(map) = cur.as_object_mut() {
        map.insert(last.to_string(), value);
    }
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Created.
    Added,
    /// Updated.
    Modified,
    /// Deleted.
    Deleted,
}

impl EventType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, shared by every watcher.
#[derive(Debug)]
pub struct CacheEvent {
    /// The revision of the change.
    pub revision: Revision,
    /// The storage key.
    pub key: Arc<str>,
    /// What happened.
    pub kind: EventType,
    /// The view of the object after the change (for deletes: of its last state, at the delete's
    /// revision).
    pub view: Arc<Value>,
    /// The view of the object before the change, so a watcher with a selector can see an object leave
    /// its view.
    pub prev: Option<Arc<Value>>,
    /// The encoding of the object after the change (for deletes: of its last state, at the delete's
    /// revision).
    pub json: Bytes,
    /// The serialized plain watch line, built by the first watcher that needs it.
    line: OnceLock<Bytes>,
    /// When the cache received it (how long it stays in the history).
    arrived: std::time::Instant,
}

impl CacheEvent {
    /// The event as one JSON line of a plain watch stream: `{"type":"ADDED","object":{...}}\n`.
    pub fn line(&self) -> Bytes {
        self.line
            .get_or_init(|| watch_line_raw(self.kind.as_str(), &self.json))
            .clone()
    }

    /// The whole object, decoded from its encoding.
    pub fn object(&self) -> Value {
        decode_json(&self.json)
    }
}

/// Builds one watch event line around an object's existing encoding.
pub fn watch_line_raw(kind: &str, json: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(json.len() + 32);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    buf.extend_from_slice(json);
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

/// Serializes one watch event line.
pub fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"{\"type\":\"");
    buf.extend_from_slice(kind.as_bytes());
    buf.extend_from_slice(b"\",\"object\":");
    // Serializing a Value cannot fail.
    let _ = serde_json::to_writer(&mut buf, object);
    buf.extend_from_slice(b"}\n");
    Bytes::from(buf)
}

struct State {
    objects: BTreeMap<Arc<str>, Cached>,
    history: VecDeque<Arc<CacheEvent>>,
    revision: Revision,
    /// The oldest revision a watch may start after and still see every event.
    oldest: Revision,
}

/// The cache. Share it behind an `Arc`.
pub struct Cache {
    state: RwLock<State>,
    events: broadcast::Sender<Arc<CacheEvent>>,
    revision: watch::Sender<Revision>,
}

/// Where a new watch starts.
pub enum WatchStart {
    /// Events after this revision, from history.
    Events(Vec<Arc<CacheEvent>>),
    /// The requested revision is older than history: the client must relist (410).
    TooOld {
        /// The oldest revision still available.
        oldest: Revision,
    },
}

/// Decodes a stored value and stamps its resourceVersion.
fn decode(kv: &KeyValue, revision: Revision) -> Option<Value> {
    match serde_json::from_slice::<Value>(&kv.value) {
        Ok(mut v) => {
            if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
            }
            Some(v)
        }
        Err(e) => {
            // Only API servers write storage, so this means corruption; skip the object, keep serving.
            error!(key = %kv.key, error = %e, "undecodable object in storage");
            None
        }
    }
}

impl State {
    /// Drops the oldest events beyond [`HISTORY`], and those older than [`HISTORY_FRESH`] beyond
    /// [`HISTORY_MIN`].
    fn trim_history(&mut self, now: std::time::Instant) {
        while self.history.len() > HISTORY_MIN
            && (self.history.len() > HISTORY
                || self
                    .history
                    .front()
                    .is_some_and(|e| now.duration_since(e.arrived) > HISTORY_FRESH))
        {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest = dropped.revision;
            }
        }
    }
}

impl Cache {
    /// Loads everything under `prefix` from the store and starts the feeder task.
    pub async fn start(store: Arc<dyn Store>, prefix: &str) -> Result<Arc<Cache>, StoreError> {
        let (snapshot, mut feed) = store.snapshot_and_watch(prefix).await?;
        let mut objects = BTreeMap::new();
        for kv in &snapshot.items {
            if let Some(v) = decode(kv, kv.mod_revision) {
                let key: Arc<str> = kv.key.as_str().into();
                objects.insert(
                    key.clone(),
                    Cached {
                        key,
                        revision: kv.mod_revision,
                        json: encode(&v),
                        view: Arc::new(view_of(&v)),
                    },
                );
            }
        }
        let (events, _) = broadcast::channel(BROADCAST_CAPACITY);
        let (revision, _) = watch::channel(snapshot.revision);
        let cache = Arc::new(Cache {
            state: RwLock::new(State {
                objects,
                history: VecDeque::new(),
                revision: snapshot.revision,
                oldest: snapshot.revision,
            }),
            events,
            revision,
        });
        let feeder = cache.clone();
        tokio::spawn(async move {
            while let Some(batch) = feed.recv().await {
                feeder.apply(batch);
            }
            warn!("store change feed ended");
        });
        Ok(cache)
    }

    fn apply(&self, batch: Vec<Event>) {
        let mut last = 0;
        let now = std::time::Instant::now();
        {
            let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
            for ev in batch {
                let revision = ev.revision();
                last = revision;
                let (key, kind, view, prev, json) = match &ev {
                    // Nothing of ours changed up to there (another cluster's keys, etcd's compaction
                    // bookkeeping): a consistent read waiting for that revision may go ahead.
                    Event::Progress { .. } => {
                        st.revision = st.revision.max(revision);
                        continue;
                    }
                    Event::Put { kv, prev } => {
                        let Some(v) = decode(kv, revision) else { continue };
                        let key: Arc<str> = kv.key.as_str().into();
                        let json = encode(&v);
                        let view = Arc::new(view_of(&v));
                        let old = st.objects.insert(
                            key.clone(),
                            Cached {
                                key: key.clone(),
                                revision,
                                view: view.clone(),
                                json: json.clone(),
                            },
                        );
                        let kind = if prev.is_some() {
                            EventType::Modified
                        } else {
                            EventType::Added
                        };
                        (key, kind, view, old.map(|c| c.view), json)
                    }
                    Event::Delete { prev, .. } => {
                        let Some(old) = st.objects.remove(prev.key.as_str()) else {
                            continue;
                        };
                        // kube reports a deleted object at the revision of the delete.
                        let stamp = |mut v: Value| {
                            if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
                                meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
                            }
                            v
                        };
                        let json = encode(&stamp(old.object()));
                        let view = Arc::new(stamp((*old.view).clone()));
                        let key: Arc<str> = prev.key.as_str().into();
                        (key, EventType::Deleted, view, Some(old.view), json)
                    }
                };
                let ce = Arc::new(CacheEvent {
                    revision,
                    key,
                    kind,
                    view,
                    prev,
                    json,
                    line: OnceLock::new(),
                    arrived: now,
                });
                st.history.push_back(ce.clone());
                st.trim_history(now);
                st.revision = revision;
                // Sent under the lock so a watch registering under the read lock sees no gap.
                let _ = self.events.send(ce);
            }
        }
        if last > 0 {
            self.revision.send_replace(last);
        }
    }

    /// Waits until the cache reflects `revision` (read-your-writes for the request that wrote it).
    pub async fn wait_for(&self, revision: Revision) {
        let mut rx = self.revision.subscribe();
        let _ = rx.wait_for(|r| *r >= revision).await;
    }

    /// The latest revision the cache reflects.
    pub fn revision(&self) -> Revision {
        self.state.read().unwrap_or_else(|e| e.into_inner()).revision
    }

    /// One object by key.
    pub fn get(&self, key: &str) -> Option<Cached> {
        self.state
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .objects
            .get(key)
            .cloned()
    }

    /// Every object whose key starts with `prefix` and sorts after `start_after`, with the revision of
    /// the view.
    pub fn list(&self, prefix: &str, start_after: Option<&str>) -> (Vec<Cached>, Revision) {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let from: &str = match start_after {
            Some(k) if k >= prefix => k,
            _ => prefix,
        };
        let items = st
            .objects
            .range::<str, _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| start_after.is_none_or(|s| k.as_ref() > s))
            .map(|(_, c)| c.clone())
            .collect();
        (items, st.revision)
    }

    /// Starts a watch: the current objects under `prefix` (for an initial listing) and the live feed,
    /// taken atomically so nothing is missed or repeated.
    pub fn watch_from_now(
        &self,
        prefix: &str,
    ) -> (Vec<Cached>, Revision, broadcast::Receiver<Arc<CacheEvent>>) {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let rx = self.events.subscribe();
        let items = st
            .objects
            .range::<str, _>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, c)| c.clone())
            .collect();
        (items, st.revision, rx)
    }

    /// Starts a watch after `revision`: the history since then and the live feed.
    pub fn watch_from(&self, revision: Revision) -> (WatchStart, broadcast::Receiver<Arc<CacheEvent>>) {
        let st = self.state.read().unwrap_or_else(|e| e.into_inner());
        let rx = self.events.subscribe();
        if revision < st.oldest {
            return (WatchStart::TooOld { oldest: st.oldest }, rx);
        }
        // History is ordered by revision: find the first event after `revision`.
        let start = st.history.partition_point(|e| e.revision <= revision);
        let events = st.history.iter().skip(start).cloned().collect();
        (WatchStart::Events(events), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn event(revision: Revision, arrived: Instant) -> Arc<CacheEvent> {
        Arc::new(CacheEvent {
            revision,
            key: "k".into(),
            kind: EventType::Modified,
            view: Arc::new(Value::Null),
            prev: None,
            json: Bytes::new(),
            line: OnceLock::new(),
            arrived,
        })
    }

    /// A view keeps what selectors and the garbage collector read, and nothing of the rest.
    #[test]
    fn views_keep_what_selectors_read() {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                "labels": {"app": "web"}, "annotations": {"big": "x"}, "finalizers": ["f"],
                "ownerReferences": [{"uid": "o"}], "deletionTimestamp": "2026-01-01T00:00:00Z",
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "i"}], "hostNetwork": true},
            "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}], "conditions": []},
        });
        let view = view_of(&pod);
        assert_eq!(
            view,
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": "p", "namespace": "ns", "uid": "u", "resourceVersion": "7",
                    "labels": {"app": "web"}, "finalizers": ["f"], "ownerReferences": [{"uid": "o"}],
                    "deletionTimestamp": "2026-01-01T00:00:00Z"},
                "spec": {"nodeName": "n1", "hostNetwork": true},
                "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.1"}]},
            })
        );
        let rt = svcnet_api::resources::lookup_kind("v1", "Pod").unwrap();
        for field in rt.field_selectors {
            assert_eq!(
                svcnet_api::selector::field_value(rt, &view, field),
                svcnet_api::selector::field_value(rt, &pod, field),
                "{field}"
            );
        }
        let event = serde_json::json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "source": {"component": "kubelet"},
            "reason": "Started", "message": "long text"});
        let view = view_of(&event);
        assert_eq!(
            svcnet_api::selector::field_value(lookup_kind("v1", "Event").unwrap(), &view, "source"),
            "kubelet"
        );
        assert_eq!(view["involvedObject"]["name"], "p");
        assert!(view.get("message").is_none());
        // A kind this server does not serve is kept whole.
        let other = serde_json::json!({"apiVersion": "x/v1", "kind": "Thing", "spec": {"a": 1}});
        assert_eq!(view_of(&other), other);
    }

    /// The keys of one transaction share a revision: a watch from before it gets all of them, one from
    /// it gets none, and the cache moves to that revision once, with all of them applied.
    #[tokio::test]
    async fn a_transaction_is_one_revision_in_the_history() {
        use svcnet_store::{Precondition, TxnOutcome, Write};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> =
            Arc::new(svcnet_store::redb::RedbStore::open(&dir.path().join("db")).unwrap());
        let cache = Cache::start(store.clone(), "/").await.unwrap();
        let put = |key: &str| Write::Put {
            key: key.into(),
            value: Bytes::from_static(br#"{"metadata":{"name":"x"}}"#),
            precondition: Precondition::Absent,
        };
        let TxnOutcome::Committed { revision, .. } =
            store.write_all(vec![put("/a/1"), put("/b/1")]).await.unwrap()
        else {
            panic!("fresh keys commit")
        };
        cache.wait_for(revision).await;
        assert!(cache.get("/a/1").is_some() && cache.get("/b/1").is_some());
        let keys = |from| match cache.watch_from(from).0 {
            WatchStart::Events(evs) => evs
                .iter()
                .map(|e| (e.revision, e.key.to_string()))
                .collect::<Vec<_>>(),
            WatchStart::TooOld { oldest } => panic!("too old: {oldest}"),
        };
        assert_eq!(
            keys(revision - 1),
            [(revision, "/a/1".to_string()), (revision, "/b/1".to_string())]
        );
        assert!(keys(revision).is_empty());
    }

    /// Old events go once there are more than the minimum; recent ones stay up to the maximum.
    #[test]
    fn history_keeps_recent_events_and_a_minimum() {
        let mut st = State {
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            revision: 0,
            oldest: 0,
        };
        let old = Instant::now();
        let start = old + HISTORY_FRESH + Duration::from_secs(1);
        for r in 1..=(HISTORY_MIN as Revision + 10) {
            st.history.push_back(event(r, old));
            st.trim_history(start);
        }
        assert_eq!(
            st.history.len(),
            HISTORY_MIN,
            "stale events beyond the minimum go"
        );
        assert_eq!(st.oldest, 10);
        assert_eq!(st.history.front().unwrap().revision, 11);
        let first_fresh = HISTORY_MIN as Revision + 11;
        for r in first_fresh..first_fresh + 3 * HISTORY_MIN as Revision {
            st.history.push_back(event(r, start));
            st.trim_history(start);
        }
        assert_eq!(st.history.len(), 3 * HISTORY_MIN, "fresh events all stay");
        assert_eq!(st.history.front().unwrap().revision, first_fresh);
        assert_eq!(st.oldest, first_fresh - 1);
    }
}
