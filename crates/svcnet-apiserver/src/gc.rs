//! The garbage collector: ownerReferences and deletion propagation, as kube-controller-manager's
//! garbage collector implements them.
//!
//! - Background: an object all of whose owners are gone is deleted.
//! - Foreground: an owner marked with the `foregroundDeletion` finalizer has its dependents deleted
//!   first; when none are left the finalizer is removed and the owner goes.
//! - Orphan: an owner marked with the `orphan` finalizer has its ownerReference removed from every
//!   dependent; then the finalizer is removed and the owner goes, the dependents stay.
//!
//! Like kube's collector it keeps a graph (uid → object, owner → dependents) updated from the watch, and
//! each event checks only the objects it concerns: a deleted owner's dependents, an object whose owners
//! may be missing, an owner being deleted. The cost of a write is independent of the cluster's size
//! (the benchmark showed a full pass per write costing half the server's CPU at 10,000 pods). A full
//! pass runs at start and once a minute as a safety net.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

use crate::ApiServer;
use crate::cache::{Cached, EventType};
use crate::handlers::WriteCtx;
use crate::request::{Params, ResourceRoute, parse_key};

const MANAGER: &str = "svcnet-garbage-collector";
const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";
/// How often everything is re-checked, in case an event was missed (a lagging watch).
const FULL_PASS_EVERY: Duration = Duration::from_secs(60);

fn uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/uid").and_then(Value::as_str)
}

fn owner_uids(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn has_finalizer(obj: &Value, f: &str) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == f))
}

fn deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some()
}

/// The ownership graph. Every operation is O(the object's own references), never O(cluster).
#[derive(Default)]
struct Graph {
    /// uid → storage key.
    by_uid: HashMap<String, Arc<str>>,
    /// storage key → uid.
    uid_of: HashMap<Arc<str>, String>,
    /// storage key → owner uids.
    owners: HashMap<Arc<str>, Vec<String>>,
    /// owner uid → dependents' keys.
    dependents: HashMap<String, HashSet<Arc<str>>>,
}

impl Graph {
    fn insert(&mut self, key: &Arc<str>, obj: &Value) {
        self.remove(key);
        if let Some(u) = uid(obj) {
            self.by_uid.insert(u.to_string(), key.clone());
            self.uid_of.insert(key.clone(), u.to_string());
        }
        let owners = owner_uids(obj);
        for o in &owners {
            self.dependents.entry(o.clone()).or_default().insert(key.clone());
        }
        if !owners.is_empty() {
            self.owners.insert(key.clone(), owners);
        }
    }

    fn remove(&mut self, key: &Arc<str>) {
        if let Some(owners) = self.owners.remove(key) {
            for o in owners {
                if let Some(set) = self.dependents.get_mut(&o) {
                    set.remove(key);
                    if set.is_empty() {
                        self.dependents.remove(&o);
                    }
                }
            }
        }
        if let Some(u) = self.uid_of.remove(key)
            && self.by_uid.get(&u) == Some(key)
        {
            self.by_uid.remove(&u);
        }
    }
}

impl ApiServer {
    /// Starts the garbage collector.
    pub fn spawn_garbage_collector(self: &Arc<Self>) {
        let server = self.clone();
        tokio::spawn(async move {
            let (items, _, mut events) = server.cache.watch_from_now("/");
            let mut graph = Graph::default();
            for c in &items {
                graph.insert(&c.key, &c.view);
            }
            let mut todo: HashSet<Arc<str>> = items
                .iter()
                .filter(|c| graph.owners.contains_key(&c.key) || deleting(&c.view))
                .map(|c| c.key.clone())
                .collect();
            drop(items);
            let mut full_pass = tokio::time::interval(FULL_PASS_EVERY);
            full_pass.tick().await;
            loop {
                if !todo.is_empty() {
                    let batch: Vec<Arc<str>> = todo.drain().collect();
                    for key in batch {
                        if let Err(e) = server.check(&graph, &key).await {
                            warn!(%key, error = %e, "garbage collection failed; will retry");
                            todo.insert(key);
                        }
                    }
                }
                let retry = !todo.is_empty();
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(ev) => match ev.kind {
                            EventType::Deleted => {
                                let gone_uid = uid(&ev.view).map(str::to_string);
                                let owners = graph.owners.get(&ev.key).cloned().unwrap_or_default();
                                graph.remove(&ev.key);
                                // Its dependents may now be orphans; an owner waiting in the foreground for
                                // its dependents may now be free to go.
                                if let Some(u) = gone_uid
                                    && let Some(deps) = graph.dependents.get(&u)
                                {
                                    todo.extend(deps.iter().cloned());
                                }
                                for o in owners {
                                    if let Some(k) = graph.by_uid.get(&o) {
                                        todo.insert(k.clone());
                                    }
                                }
                            }
                            EventType::Added | EventType::Modified => {
                                graph.insert(&ev.key, &ev.view);
                                if graph.owners.contains_key(&ev.key)
                                    || has_finalizer(&ev.view, FOREGROUND)
                                    || has_finalizer(&ev.view, ORPHAN)
                                {
                                    todo.insert(ev.key.clone());
                                }
                            }
                        },
                        Err(RecvError::Lagged(_)) => {
                            // Events were missed: rebuild the graph from the cache and check everything.
                            let (all, _) = server.cache.list("/", None);
                            graph = Graph::default();
                            for c in &all {
                                graph.insert(&c.key, &c.view);
                            }
                            todo.extend(all.iter().filter(|c| graph.owners.contains_key(&c.key) || deleting(&c.view)).map(|c| c.key.clone()));
                        }
                        Err(RecvError::Closed) => return,
                    },
                    _ = full_pass.tick() => {
                        let (all, _) = server.cache.list("/", None);
                        todo.extend(all.iter().filter(|c| graph.owners.contains_key(&c.key) || deleting(&c.view)).map(|c| c.key.clone()));
                    }
                    _ = tokio::time::sleep(Duration::from_millis(500)), if retry => {}
                }
            }
        });
    }

    /// Applies the collector's rules to one object.
    async fn check(&self, graph: &Graph, key: &Arc<str>) -> Result<(), crate::errors::ApiError> {
        let Some(c) = self.cache.get(key) else {
            return Ok(());
        };
        // The view has what the rules read; writes start from the whole object.
        let obj = c.view.as_ref();
        let params = Params::default();
        let owners = owner_uids(obj);
        // Background: every owner is gone.
        if !owners.is_empty() && owners.iter().all(|o| !graph.by_uid.contains_key(o)) && !deleting(obj) {
            return self.gc_delete(key, &params).await;
        }
        if !deleting(obj) {
            return Ok(());
        }
        let Some(my_uid) = uid(obj) else { return Ok(()) };
        let deps: Vec<Cached> = graph
            .dependents
            .get(my_uid)
            .map(|set| set.iter().filter_map(|k| self.cache.get(k)).collect())
            .unwrap_or_default();
        if has_finalizer(obj, ORPHAN) {
            for d in &deps {
                let mut v = d.object();
                if let Some(refs) = v
                    .pointer_mut("/metadata/ownerReferences")
                    .and_then(Value::as_array_mut)
                {
                    refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(my_uid));
                }
                self.gc_update(&d.key, v, &params).await?;
            }
            self.remove_finalizer(key, &c.object(), ORPHAN, &params).await?;
        } else if has_finalizer(obj, FOREGROUND) {
            if deps.is_empty() {
                self.remove_finalizer(key, &c.object(), FOREGROUND, &params)
                    .await?;
            } else {
                for d in deps.iter().filter(|d| !deleting(&d.view)) {
                    self.gc_delete(&d.key, &params).await?;
                }
            }
        }
        Ok(())
    }

    async fn gc_delete(&self, key: &str, params: &Params) -> Result<(), crate::errors::ApiError> {
        let Some((rt, ns, name)) = parse_key(key) else {
            return Ok(());
        };
        debug!(kind = rt.kind, %key, "garbage collecting");
        let route = ResourceRoute::object(rt, ns, Some(name));
        let ctx = WriteCtx::internal(&route, params, MANAGER);
        match self.delete(&ctx, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn gc_update(&self, key: &str, obj: Value, params: &Params) -> Result<(), crate::errors::ApiError> {
        let Some((rt, ns, name)) = parse_key(key) else {
            return Ok(());
        };
        let route = ResourceRoute::object(rt, ns, Some(name));
        let ctx = WriteCtx::internal(&route, params, MANAGER);
        let mut obj = obj;
        // Unconditional: the collector re-reads and retries on conflict inside update.
        if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
        }
        match self.update(&ctx, obj).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn remove_finalizer(
        &self,
        key: &str,
        obj: &Value,
        finalizer: &str,
        params: &Params,
    ) -> Result<(), crate::errors::ApiError> {
        let mut v = obj.clone();
        if let Some(f) = v
            .pointer_mut("/metadata/finalizers")
            .and_then(Value::as_array_mut)
        {
            f.retain(|x| x != finalizer);
        }
        self.gc_update(key, v, params).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn graph_tracks_owners_and_dependents() {
        let mut g = Graph::default();
        let owner: Arc<str> = "/core/services/ns/s".into();
        let dep: Arc<str> = "/discovery.k8s.io/endpointslices/ns/s-1".into();
        g.insert(&owner, &json!({"metadata": {"uid": "u1"}}));
        g.insert(
            &dep,
            &json!({"metadata": {"uid": "u2", "ownerReferences": [{"uid": "u1"}]}}),
        );
        assert!(g.dependents["u1"].contains(&dep));
        // An update that drops the owner reference leaves no stale edge.
        g.insert(&dep, &json!({"metadata": {"uid": "u2"}}));
        assert!(!g.dependents.contains_key("u1"));
        g.insert(
            &dep,
            &json!({"metadata": {"uid": "u2", "ownerReferences": [{"uid": "u1"}]}}),
        );
        g.remove(&owner);
        assert!(!g.by_uid.contains_key("u1"));
        assert!(
            g.dependents.contains_key("u1"),
            "dependents of a deleted owner stay findable"
        );
        g.remove(&dep);
        assert!(g.dependents.is_empty() && g.owners.is_empty() && g.by_uid.is_empty() && g.uid_of.is_empty());
    }
}
