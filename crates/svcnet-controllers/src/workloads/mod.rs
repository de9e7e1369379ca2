//! The ReplicaSet and Deployment controllers of kube-controller-manager, as kube-rs clients.
//!
//! * **ReplicaSet** ([`replicaset`]): keeps `spec.replicas` active pods that match the selector and
//!   are controlled by the ReplicaSet: creates them from the template, adopts matching orphans,
//!   releases owned pods that stopped matching, deletes the surplus in kube's order (unscheduled,
//!   pending, not ready, … newest first), and reports `replicas`, `fullyLabeledReplicas`,
//!   `readyReplicas`, `availableReplicas` (ready for `minReadySeconds`) and `observedGeneration`.
//! * **Deployment** ([`deployment`], arithmetic in [`rollout`]): one ReplicaSet per pod template,
//!   `<deployment>-<pod-template-hash>`, with revisions, RollingUpdate (`maxSurge`/`maxUnavailable`)
//!   and Recreate, `paused`, proportional scaling, `revisionHistoryLimit`, and the status and
//!   conditions `kubectl rollout status` reads.
//!
//! Both are event-driven: one informer each on Deployments, ReplicaSets and (shared with the other
//! controllers) Pods feeds two de-duplicating work queues. A pod event queues its controlling ReplicaSet (an orphan: the
//! ReplicaSets whose selector matches it; a deleted pod also the ReplicaSet's Deployment, for
//! Recreate), a ReplicaSet event queues itself and its Deployment, a Deployment event queues itself.
//! Timers re-queue only what waits on time: pods becoming available after `minReadySeconds`, progress
//! deadlines, and retries after errors. Each controller has one worker, so a key is never synced twice
//! at once.
//!
//! The caches lag behind the controllers' own writes. As in kube, the ReplicaSet controller keeps
//! *expectations* (pods it created or deleted that its cache has not shown yet) and does not create or
//! delete more pods until they are met; every other write is conditional on the resourceVersion it was
//! computed from, so a decision made on stale data fails with a conflict and is retried on fresh data.

pub mod deployment;
pub mod pods;
pub mod replicaset;
pub mod rollout;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams};
use kube::core::{Selector, SelectorExt};
use kube::{Client, Resource};
use serde_json::json;
use svcnet_informer::{Event, Informer, ObjectRef, Store};
use thiserror::Error;
use tracing::{debug, warn};

use crate::SharedInformers;
use crate::queue::{Key, WorkQueue};

/// Why one sync of a ReplicaSet or Deployment failed (it is retried with backoff).
#[derive(Debug, Error)]
pub enum Error {
    /// An API call failed (a conflict means the decision was made on stale data).
    #[error("API request failed: {0}")]
    Kube(#[from] kube::Error),
    /// The object's label selector cannot be evaluated.
    #[error("invalid label selector: {0}")]
    Selector(String),
    /// A ReplicaSet named like the new one exists but is not this Deployment's; the collision count
    /// was bumped so the next attempt picks another name.
    #[error("hash collision: replica set {0} exists with another template or owner")]
    HashCollision(String),
    /// Creating pods failed.
    #[error("creating pods failed: {0}")]
    CreatePods(String),
}

impl Error {
    fn is_conflict(&self) -> bool {
        matches!(self, Error::Kube(kube::Error::Api(s)) if s.code == 409)
    }
}

/// The watched state both controllers read, and their queues.
pub(crate) struct Ctx {
    /// The ReplicaSet controller's client ([`crate::identity::REPLICASET`]).
    pub client: Client,
    /// The Deployment controller's client ([`crate::identity::DEPLOYMENT`]).
    pub deploy_client: Client,
    pub deployments: Store<Deployment>,
    pub replicasets: Store<ReplicaSet>,
    pub pods: Store<Pod>,
    pub rs_queue: WorkQueue,
    pub deploy_queue: WorkQueue,
}

impl Ctx {
    fn get_rs(&self, ns: &str, name: &str) -> Option<Arc<ReplicaSet>> {
        self.replicasets.get(&ObjectRef::new(name).within(ns))
    }
}

/// Converts a label selector; an empty one selects nothing here, as controllers treat it.
pub(crate) fn selector_of(sel: Option<&LabelSelector>) -> Result<Option<Selector>, Error> {
    let Some(sel) = sel else { return Ok(None) };
    let s: Selector = sel
        .clone()
        .try_into()
        .map_err(|e| Error::Selector(format!("{e}")))?;
    Ok((!s.selects_all()).then_some(s))
}

fn labels_of(meta: &ObjectMeta) -> std::collections::BTreeMap<String, String> {
    meta.labels.clone().unwrap_or_default()
}

/// Writes an object's owner references (adoption or release) with a merge patch, conditional on the
/// object's uid and resourceVersion so that it never lands on a recreated or changed object.
pub(crate) async fn patch_owner_refs<K>(
    api: &Api<K>,
    meta: &ObjectMeta,
    refs: Vec<OwnerReference>,
) -> Result<K, Error>
where
    K: Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    let refs = if refs.is_empty() { json!(null) } else { json!(refs) };
    let patch = json!({"metadata": {
        "ownerReferences": refs,
        "uid": meta.uid,
        "resourceVersion": meta.resource_version,
    }});
    let name = meta.name.clone().unwrap_or_default();
    Ok(api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?)
}

/// The first retry delay after a failed sync; it doubles per consecutive failure up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(20);
const MAX_RETRY: Duration = Duration::from_secs(10);

fn retry_delay(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1u32 << failures.min(12))
        .min(MAX_RETRY)
}

/// Runs the ReplicaSet and Deployment controllers until the future is dropped. Pods come from the
/// process's shared informer; Deployments and ReplicaSets have informers of their own.
/// Each writes as itself ([`crate::identity::REPLICASET`], [`crate::identity::DEPLOYMENT`]); the
/// Deployment controller's role may list both kinds, so the two informers watch through it.
pub async fn run_workload_controllers(clients: crate::Clients, informers: SharedInformers) {
    let client = clients.get(crate::identity::REPLICASET);
    let deploy_client = clients.get(crate::identity::DEPLOYMENT);
    let deployments = Informer::<Deployment>::new(crate::trim_managed_fields);
    let replicasets = Informer::<ReplicaSet>::new(crate::trim_managed_fields);
    deployments.spawn(Api::all(deploy_client.clone()));
    replicasets.spawn(Api::all(deploy_client.clone()));
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        deploy_client,
        deployments: deployments.store(),
        replicasets: replicasets.store(),
        pods: informers.pods.store(),
        rs_queue: WorkQueue::default(),
        deploy_queue: WorkQueue::default(),
    });

    let c = ctx.clone();
    let deploy_watch = deployments.subscribe().for_each(move |ev| {
        if let Event::Apply { obj: d, .. } | Event::Delete(d) = &ev {
            c.deploy_queue.add(key_of(&d.metadata));
        }
        futures::future::ready(())
    });
    let c = ctx.clone();
    let rs_watch = replicasets.subscribe().for_each(move |ev| {
        if let Event::Apply { obj: rs, .. } | Event::Delete(rs) = &ev {
            on_replicaset(&c, rs);
        }
        futures::future::ready(())
    });
    let c = ctx.clone();
    let pod_watch = informers.pods.subscribe().for_each(move |ev| {
        match &ev {
            Event::Apply { obj: p, .. } => on_pod(&c, p, false),
            Event::Delete(p) => on_pod(&c, p, true),
            Event::Listed => {}
        }
        futures::future::ready(())
    });

    let rs_worker = {
        let ctx = ctx.clone();
        async move {
            wait_ready(&ctx).await;
            let mut ctl = replicaset::RsController::new(ctx.clone());
            let mut failures: HashMap<Key, u32> = HashMap::new();
            loop {
                let key = ctx.rs_queue.next().await;
                let res = ctl.sync(&key).await;
                handle_result(&ctx.rs_queue, "replicaset", key, res, &mut failures);
            }
        }
    };
    let deploy_worker = {
        let ctx = ctx.clone();
        async move {
            wait_ready(&ctx).await;
            let mut ctl = deployment::DeploymentController::new(ctx.clone());
            let mut failures: HashMap<Key, u32> = HashMap::new();
            loop {
                let key = ctx.deploy_queue.next().await;
                let res = ctl.sync(&key).await;
                handle_result(&ctx.deploy_queue, "deployment", key, res, &mut failures);
            }
        }
    };
    futures::join!(deploy_watch, rs_watch, pod_watch, rs_worker, deploy_worker);
}

async fn wait_ready(ctx: &Ctx) {
    ctx.deployments.wait_until_synced().await;
    ctx.replicasets.wait_until_synced().await;
    ctx.pods.wait_until_synced().await;
}

fn handle_result(
    queue: &WorkQueue,
    what: &str,
    key: Key,
    res: Result<Option<Duration>, Error>,
    failures: &mut HashMap<Key, u32>,
) {
    match res {
        Ok(requeue) => {
            failures.remove(&key);
            if let Some(after) = requeue {
                queue.add_after(key, after);
            }
        }
        Err(e) => {
            let n = failures.entry(key.clone()).or_insert(0);
            *n += 1;
            let delay = retry_delay(*n);
            if e.is_conflict() {
                debug!(%key, error = %e, "{what} sync hit a conflict; retrying on fresh data");
            } else {
                warn!(%key, error = %e, retry_in = ?delay, "{what} sync failed");
            }
            queue.add_after(key, delay);
        }
    }
}

fn key_of(meta: &ObjectMeta) -> Key {
    Key::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

fn on_replicaset(ctx: &Ctx, rs: &ReplicaSet) {
    let key = key_of(&rs.metadata);
    ctx.rs_queue.add(key.clone());
    match pods::controller_of(&rs.metadata) {
        Some(r) if r.kind == "Deployment" => ctx.deploy_queue.add(Key::new(key.namespace, r.name.clone())),
        Some(_) => {}
        None => {
            // An orphan: every Deployment that could adopt it.
            let labels = labels_of(&rs.metadata);
            for d in ctx.deployments.state() {
                if d.metadata.namespace.as_deref() == Some(key.namespace.as_str())
                    && let Ok(Some(sel)) = selector_of(d.spec.as_ref().map(|s| &s.selector))
                    && sel.matches(&labels)
                {
                    ctx.deploy_queue.add(key_of(&d.metadata));
                }
            }
        }
    }
}

fn on_pod(ctx: &Ctx, pod: &Pod, deleted: bool) {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    match pods::controller_of(&pod.metadata) {
        Some(r) if r.kind == "ReplicaSet" => {
            ctx.rs_queue.add(Key::new(ns.clone(), r.name.clone()));
            // Recreate waits for the old pods to be gone: tell the Deployment.
            if deleted
                && let Some(rs) = ctx.get_rs(&ns, &r.name)
                && let Some(d) = pods::controller_of(&rs.metadata)
                && d.kind == "Deployment"
            {
                ctx.deploy_queue.add(Key::new(ns, d.name.clone()));
            }
        }
        Some(_) => {}
        None if !deleted && pods::is_active(pod) => {
            let labels = labels_of(&pod.metadata);
            for rs in ctx.replicasets.state() {
                if rs.metadata.namespace.as_deref() == Some(ns.as_str())
                    && let Ok(Some(sel)) = selector_of(rs.spec.as_ref().map(|s| &s.selector))
                    && sel.matches(&labels)
                {
                    ctx.rs_queue.add(key_of(&rs.metadata));
                }
            }
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_cap() {
        assert_eq!(retry_delay(1), Duration::from_millis(40));
        assert!(retry_delay(5) > retry_delay(4));
        assert_eq!(retry_delay(40), MAX_RETRY);
    }
}
