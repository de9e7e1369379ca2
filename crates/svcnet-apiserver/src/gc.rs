//! The garbage collector: ownerReferences and deletion propagation, as kube-controller-manager's
//! garbage collector implements them.
//!
//! - Background: an object all of whose owners are gone is deleted.
//! - Foreground: an owner marked with the `foregroundDeletion` finalizer has its dependents deleted
//!   first; when none are left the finalizer is removed and the owner goes.
//! - Orphan: an owner marked with the `orphan` finalizer has its ownerReference removed from every
//!   dependent; then the finalizer is removed and the owner goes, the dependents stay.
//!
//! It wakes only on changes that can matter (deletions, objects being deleted, objects with owners), so
//! ordinary writes cost it nothing.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, warn};

use crate::ApiServer;
use crate::cache::EventType;
use crate::handlers::WriteCtx;
use crate::request::{Params, ResourceRoute, parse_key};

const MANAGER: &str = "svcnet-garbage-collector";
const FOREGROUND: &str = "foregroundDeletion";
const ORPHAN: &str = "orphan";

fn uid(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/uid").and_then(Value::as_str)
}

fn owner_uids(obj: &Value) -> Vec<&str> {
    obj.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default()
}

fn has_finalizer(obj: &Value, f: &str) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == f))
}

fn matters(obj: &Value) -> bool {
    obj.pointer("/metadata/ownerReferences").is_some() || obj.pointer("/metadata/deletionTimestamp").is_some()
}

impl ApiServer {
    /// Starts the garbage collector.
    pub fn spawn_garbage_collector(self: &Arc<Self>) {
        let server = self.clone();
        tokio::spawn(async move {
            let (_, _, mut events) = server.cache.watch_from_now("/");
            let mut dirty = true;
            loop {
                if dirty {
                    dirty = false;
                    if let Err(e) = server.collect().await {
                        warn!(error = %e, "garbage collection pass failed; will retry");
                        dirty = true;
                    }
                }
                let wait = if dirty {
                    Duration::from_millis(500)
                } else {
                    Duration::from_secs(60)
                };
                tokio::select! {
                    ev = events.recv() => match ev {
                        Ok(ev) => {
                            dirty |= ev.kind == EventType::Deleted
                                || matters(&ev.object)
                                || ev.prev.as_ref().is_some_and(|p| matters(p));
                        }
                        Err(RecvError::Lagged(_)) => dirty = true,
                        Err(RecvError::Closed) => return,
                    },
                    _ = tokio::time::sleep(wait) => dirty = true,
                }
            }
        });
    }

    async fn collect(&self) -> Result<(), crate::errors::ApiError> {
        let (all, _) = self.cache.list("/", None);
        let by_uid: HashMap<&str, &Value> = all
            .iter()
            .filter_map(|c| uid(&c.object).map(|u| (u, c.object.as_ref())))
            .collect();
        let mut dependents: HashMap<&str, Vec<&crate::cache::Cached>> = HashMap::new();
        for c in &all {
            for o in owner_uids(&c.object) {
                dependents.entry(o).or_default().push(c);
            }
        }
        let params = Params::default();
        let mut handled: HashSet<String> = HashSet::new();
        for c in &all {
            let obj = c.object.as_ref();
            let owners = owner_uids(obj);
            // Background: every owner is gone.
            if !owners.is_empty()
                && owners.iter().all(|o| !by_uid.contains_key(o))
                && obj.pointer("/metadata/deletionTimestamp").is_none()
            {
                self.gc_delete(&c.key, &params).await?;
                handled.insert(c.key.to_string());
                continue;
            }
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                continue;
            }
            let Some(my_uid) = uid(obj) else { continue };
            let deps = dependents.get(my_uid).cloned().unwrap_or_default();
            if has_finalizer(obj, ORPHAN) {
                for d in &deps {
                    let mut v = (*d.object).clone();
                    if let Some(refs) = v
                        .pointer_mut("/metadata/ownerReferences")
                        .and_then(Value::as_array_mut)
                    {
                        refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(my_uid));
                    }
                    self.gc_update(&d.key, v, &params).await?;
                }
                self.remove_finalizer(&c.key, obj, ORPHAN, &params).await?;
            } else if has_finalizer(obj, FOREGROUND) {
                let live: Vec<_> = deps
                    .iter()
                    .filter(|d| !handled.contains(d.key.as_ref()))
                    .collect();
                if live.is_empty() {
                    self.remove_finalizer(&c.key, obj, FOREGROUND, &params).await?;
                } else {
                    for d in live {
                        if d.object.pointer("/metadata/deletionTimestamp").is_none() {
                            self.gc_delete(&d.key, &params).await?;
                        }
                    }
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
        let route = ResourceRoute {
            rt,
            namespace: ns,
            name: Some(name),
            subresource: None,
            watch_path: false,
        };
        let ctx = WriteCtx {
            route: &route,
            params,
            manager: Some(MANAGER.into()),
            dry_run: false,
        };
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
        let route = ResourceRoute {
            rt,
            namespace: ns,
            name: Some(name),
            subresource: None,
            watch_path: false,
        };
        let ctx = WriteCtx {
            route: &route,
            params,
            manager: Some(MANAGER.into()),
            dry_run: false,
        };
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
