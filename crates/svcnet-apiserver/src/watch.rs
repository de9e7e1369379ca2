//! Watch: a stream of JSON events, one per line, with kube-apiserver's semantics for `resourceVersion`
//! (unset/`0`: the current state as ADDED events first; exact: every change after it, or a 410 ERROR
//! event when it is older than the cache's history), `sendInitialEvents` with the initial-events-end
//! bookmark, periodic bookmarks, `timeoutSeconds`, and selector transitions (an object that stops
//! matching is seen as DELETED, one that starts matching as ADDED).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use svcnet_api::resources::ResourceType;
use svcnet_api::selector::{FieldSelector, LabelSelector};
use tokio::sync::{broadcast, mpsc};
use tracing::debug;

use crate::ApiServer;
use crate::cache::{CacheEvent, Cached, EventType, WatchStart, watch_line, watch_line_raw};
use crate::errors::ApiError;
use crate::handlers::selectors;
use crate::request::{Params, Representation, ResourceRoute};
use crate::tables;

/// Where a watch begins.
enum Start {
    /// The current objects as ADDED events (and, for `sendInitialEvents`, the end-of-initial bookmark).
    Initial {
        objects: Vec<Cached>,
        revision: u64,
        initial_end: bool,
    },
    /// Every event after the requested revision (the second field) that the history holds.
    Events(Vec<Arc<CacheEvent>>, u64),
    /// The requested revision is older than the cache's history.
    TooOld { requested: u64, oldest: u64 },
}

/// How often an idle watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

struct Watcher {
    rt: &'static ResourceType,
    prefix: String,
    labels: LabelSelector,
    fields: FieldSelector,
    repr: Representation,
    params: Params,
    sent_columns: bool,
    tx: mpsc::Sender<Bytes>,
}

impl Watcher {
    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches_object(obj) && self.fields.matches(self.rt, obj)
    }

    /// One event line for an object, from its cached encoding (decoded only for tables and metadata).
    fn encode(&mut self, kind: &str, json: &[u8]) -> Bytes {
        // The cache made the encoding from a Value: decoding it cannot fail.
        let decode = || serde_json::from_slice::<Value>(json).unwrap_or(Value::Null);
        match self.repr {
            Representation::Object => watch_line_raw(kind, json),
            Representation::Table => {
                let obj = &decode();
                let rev = obj
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let mut t = tables::table(self.rt, &[obj], &self.params, rev, None);
                // Columns go with the first event only; kubectl reuses them for the rest.
                if self.sent_columns {
                    t["columnDefinitions"] = json!([]);
                }
                self.sent_columns = true;
                watch_line(kind, &t)
            }
            Representation::Metadata => watch_line(kind, &tables::partial_metadata(&decode())),
        }
    }

    /// Sends one cache event through the selector transitions; false when the client has gone.
    async fn deliver(&mut self, ev: &CacheEvent) -> bool {
        if !ev.key.starts_with(self.prefix.as_str()) {
            return true;
        }
        let now = self.matches(&ev.view);
        let before = ev.prev.as_ref().is_some_and(|p| self.matches(p));
        let line = match ev.kind {
            EventType::Deleted if before => self.encode_event(ev, "DELETED"),
            EventType::Deleted => return true,
            EventType::Added if now => self.encode_event(ev, "ADDED"),
            EventType::Added => return true,
            EventType::Modified => match (before, now) {
                (true, true) => self.encode_event(ev, "MODIFIED"),
                (false, true) => self.encode(EventType::Added.as_str(), &ev.json),
                (true, false) => {
                    // Leaving the selected set looks like a delete of the object as it now is.
                    self.encode(EventType::Deleted.as_str(), &ev.json)
                }
                (false, false) => return true,
            },
        };
        self.tx.send(line).await.is_ok()
    }

    fn encode_event(&mut self, ev: &CacheEvent, kind: &str) -> Bytes {
        if self.repr == Representation::Object {
            ev.line()
        } else {
            self.encode(kind, &ev.json)
        }
    }

    fn bookmark(&self, revision: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": revision.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.rt.kind, "apiVersion": self.rt.api_version(), "metadata": meta});
        watch_line("BOOKMARK", &obj)
    }
}

impl ApiServer {
    /// Starts a watch; the returned channel yields the encoded lines until the watch ends.
    pub fn watch(
        self: &Arc<Self>,
        route: &ResourceRoute,
        params: &Params,
        repr: Representation,
    ) -> Result<mpsc::Receiver<Bytes>, ApiError> {
        let rt = route.rt;
        let (labels, mut fields) = selectors(rt, params)?;
        if let Some(name) = &route.name {
            fields.terms.push(svcnet_api::selector::FieldTerm {
                field: "metadata.name".into(),
                value: name.clone(),
                negated: false,
            });
        }
        let send_initial = params.get("sendInitialEvents").map(|v| v == "true");
        let bookmarks = params.flag("allowWatchBookmarks");
        if send_initial.is_some() {
            if params.get("resourceVersionMatch") != Some("NotOlderThan") {
                return Err(ApiError::invalid(
                    "ListOptions",
                    "meta.k8s.io",
                    "",
                    &[svcnet_api::field::FieldError::forbidden(
                        "sendInitialEvents",
                        "sendInitialEvents is forbidden for watch unless resourceVersionMatch is set to NotOlderThan",
                    )],
                ));
            }
            if send_initial == Some(true) && !bookmarks {
                return Err(ApiError::invalid(
                    "ListOptions",
                    "meta.k8s.io",
                    "",
                    &[svcnet_api::field::FieldError::forbidden(
                        "allowWatchBookmarks",
                        "allowWatchBookmarks required when sendInitialEvents is true",
                    )],
                ));
            }
        }
        let timeout = match params.int("timeoutSeconds")? {
            Some(t) if t > 0 => Duration::from_secs(t as u64),
            // kube-apiserver closes watches after a randomized 30-60 minutes so clients rebalance.
            _ => Duration::from_secs(1800 + rand::random_range(0..1800)),
        };
        let rv = params.get("resourceVersion");
        let (tx, rx) = mpsc::channel::<Bytes>(256);
        let mut w = Watcher {
            rt,
            prefix: route.collection_prefix(),
            labels,
            fields,
            repr,
            params: params.clone(),
            sent_columns: false,
            tx,
        };
        // Decide the starting point now, under the cache's lock, so nothing is missed.
        let (start, mut sub) = match (send_initial, rv) {
            (Some(true), _) | (None, None | Some("0")) => {
                let (items, revision, sub) = self.cache.watch_from_now(&w.prefix);
                let objects = items;
                let initial_end = send_initial == Some(true);
                (
                    Start::Initial {
                        objects,
                        revision,
                        initial_end,
                    },
                    sub,
                )
            }
            (_, rv) => {
                let rev: u64 = match rv {
                    None | Some("0") => self.cache.revision(),
                    Some(s) => s
                        .parse()
                        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
                };
                match self.cache.watch_from(rev) {
                    (WatchStart::Events(evs), sub) => (Start::Events(evs, rev), sub),
                    (WatchStart::TooOld { oldest }, sub) => (
                        Start::TooOld {
                            requested: rev,
                            oldest,
                        },
                        sub,
                    ),
                }
            }
        };
        let server = self.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            // The revision this watch starts after: the client has every event up to it. The writes of
            // one store transaction share a revision (a Service and its IPAddress), so later events are
            // compared with this, never with the revision of the event before them.
            let after = match start {
                Start::TooOld { requested, oldest } => {
                    let status =
                        ApiError::gone(format!("too old resource version: {requested} ({oldest})")).status();
                    let _ = w.tx.send(watch_line("ERROR", &status)).await;
                    return;
                }
                Start::Initial {
                    objects,
                    revision,
                    initial_end,
                } => {
                    for o in objects {
                        if w.matches(&o.view) {
                            let line = w.encode("ADDED", &o.json);
                            if w.tx.send(line).await.is_err() {
                                return;
                            }
                        }
                    }
                    if initial_end {
                        let b = w.bookmark(revision, true);
                        if w.tx.send(b).await.is_err() {
                            return;
                        }
                    }
                    revision
                }
                Start::Events(evs, from) => {
                    for ev in evs {
                        if !w.deliver(&ev).await {
                            return;
                        }
                    }
                    from
                }
            };
            let mut tick = tokio::time::interval(BOOKMARK_EVERY);
            tick.tick().await;
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    _ = w.tx.closed() => break,
                    _ = tick.tick(), if bookmarks => {
                        // A bookmark promises every event up to its revision. The cache sends each event
                        // under its write lock before it moves its revision on, so once the revision is
                        // read, an empty receiver means this watch has delivered everything up to it;
                        // with events still queued the bookmark waits for the next tick.
                        let rev = server.cache.revision();
                        if !sub.is_empty() { continue; }
                        let b = w.bookmark(rev.max(after), false);
                        if w.tx.send(b).await.is_err() { break; }
                    }
                    ev = sub.recv() => match ev {
                        Ok(ev) => {
                            // Live events up to the starting revision are not news: a server whose cache
                            // is still behind a revision another server handed out would otherwise repeat
                            // them.
                            if ev.revision <= after { continue; }
                            if !w.deliver(&ev).await { break; }
                        }
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            // Too slow to keep up: end the watch; the client resumes from its last version.
                            debug!(missed = n, "watcher lagged; closing");
                            break;
                        }
                        Err(broadcast::error::RecvError::Closed) => break,
                    }
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hooks::KindHooks;
    use crate::request::object_key;
    use svcnet_api::resources;
    use svcnet_store::redb::RedbStore;
    use svcnet_store::{Precondition, Store, Write, WriteOutcome};

    async fn server() -> (tempfile::TempDir, Arc<ApiServer>) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("db")).unwrap());
        let config = crate::Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            token: "t".into(),
            token_file: Default::default(),
            sa_signer: None,
            client_verifier: None,
            hooks: KindHooks::none(),
        };
        (dir, ApiServer::new(store, config).await.unwrap())
    }

    fn put(rt: &ResourceType, ns: Option<&str>, name: &str) -> Write {
        let obj = json!({"apiVersion": rt.api_version(), "kind": rt.kind,
            "metadata": {"name": name, "namespace": ns}});
        Write::Put {
            key: object_key(rt, ns, name),
            value: Bytes::from(serde_json::to_vec(&obj).unwrap()),
            precondition: Precondition::Absent,
        }
    }

    /// The next line of a watch as (type, resourceVersion), within 10 s.
    async fn next(rx: &mut mpsc::Receiver<Bytes>) -> (String, u64) {
        let line = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("a watch event within 10 s")
            .expect("the watch goes on");
        let v: Value = serde_json::from_slice(&line).unwrap();
        let rv = v
            .pointer("/object/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
            .unwrap();
        (v["type"].as_str().unwrap().to_string(), rv)
    }

    /// A Service written in one transaction with an IPAddress (which sorts, and is sent, before it):
    /// a watch of Services gets the Service, though the event before it had the same revision.
    #[tokio::test]
    async fn a_watch_gets_the_second_key_of_a_transaction() {
        let (_dir, server) = server().await;
        let svc_rt = resources::lookup("", "v1", "services").unwrap();
        let ip_rt = resources::lookup("networking.k8s.io", "v1", "ipaddresses").unwrap();
        let from = server.cache.revision();
        let route = crate::request::ResourceRoute::object(svc_rt, None, None);
        let params = Params::parse(Some(&format!("resourceVersion={from}")));
        let mut rx = server.watch(&route, &params, Representation::Object).unwrap();
        let outcome = server
            .store
            .write_all(vec![
                put(ip_rt, None, "10.0.0.1"),
                put(svc_rt, Some("default"), "web"),
            ])
            .await
            .unwrap();
        let svcnet_store::TxnOutcome::Committed { revision, .. } = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(next(&mut rx).await, ("ADDED".to_string(), revision));
    }

    /// A bookmark never promises a revision whose events the watch has yet to send: writes pile up
    /// behind a client that does not read while the bookmark timer comes due, then every event after a
    /// bookmark is newer than it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bookmark_never_overtakes_queued_events() {
        let (_dir, server) = server().await;
        let rt = resources::lookup("", "v1", "configmaps").unwrap();
        let from = server.cache.revision();
        let route = crate::request::ResourceRoute::object(rt, None, None);
        let params = Params::parse(Some(&format!("resourceVersion={from}&allowWatchBookmarks=true")));
        let mut rx = server.watch(&route, &params, Representation::Object).unwrap();
        // More than the 256 lines the watch buffers: the rest wait in its cache receiver.
        const N: usize = 400;
        let mut tasks = Vec::new();
        for i in 0..N {
            let store = server.store.clone();
            let w = put(rt, Some("default"), &format!("cm{i:03}"));
            tasks.push(tokio::spawn(async move { store.write(w).await.unwrap() }));
        }
        let mut last = 0;
        for t in tasks {
            let WriteOutcome::Committed { revision, .. } = t.await.unwrap() else {
                panic!("a create of a fresh key commits")
            };
            last = last.max(revision);
        }
        server.cache.wait_for(last).await;
        tokio::time::sleep(BOOKMARK_EVERY + Duration::from_millis(500)).await;
        let (mut events, mut bookmark) = (0, 0);
        while events < N {
            let (kind, rv) = next(&mut rx).await;
            if kind == "BOOKMARK" {
                bookmark = rv;
                continue;
            }
            assert_eq!(kind, "ADDED");
            assert!(rv > bookmark, "event at {rv} after a bookmark at {bookmark}");
            events += 1;
        }
    }
}
