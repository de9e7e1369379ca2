//! The ReplicaSet controller (kube's `pkg/controller/replicaset`): one sync per queued ReplicaSet
//! claims its pods, creates or deletes pods toward `spec.replicas` (unless earlier creations or
//! deletions are still unobserved, see `Expectations`) and writes the status subresource.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::SelectorExt;
use kube::runtime::reflector::ObjectRef;
use tracing::debug;

use super::pods::{self, controller_of, controller_ref};
use super::{Ctx, Error, patch_owner_refs, selector_of};
use crate::events::{Involved, Recorder};
use crate::queue::Key;

/// `source.component` of the ReplicaSet controller's Events.
pub const COMPONENT: &str = "replicaset-controller";

/// At most this many pods are created or deleted in one sync (kube's `burstReplicas`).
const BURST: usize = 500;

/// How long unobserved creations/deletions block further ones before they are given up on (kube
/// waits 5 minutes; the cache normally catches up in milliseconds, and giving up early only risks a
/// transient extra pod that the next sync removes).
const EXPECTATION_TTL: Duration = Duration::from_secs(60);

/// Pods this controller created or deleted for one ReplicaSet that its pod cache has not shown yet.
/// Until the cache shows them, the pod count it sees is stale and acting on it would over- or
/// under-shoot.
#[derive(Debug)]
struct Expectation {
    created: HashSet<String>,
    /// (name, uid) of deleted pods.
    deleted: HashSet<(String, String)>,
    since: Instant,
}

/// Per-ReplicaSet expectations.
#[derive(Debug, Default)]
struct Expectations(HashMap<Key, Expectation>);

impl Expectations {
    fn satisfied(&mut self, key: &Key, pods: &svcnet_informer::Store<Pod>) -> bool {
        let Some(e) = self.0.get(key) else { return true };
        let seen = |name: &str| pods.get(&ObjectRef::new(name).within(&key.namespace));
        let done = e.created.iter().all(|n| seen(n).is_some())
            && e.deleted.iter().all(|(n, uid)| {
                seen(n).is_none_or(|p| {
                    p.metadata.uid.as_deref() != Some(uid) || p.metadata.deletion_timestamp.is_some()
                })
            });
        if done || e.since.elapsed() > EXPECTATION_TTL {
            self.0.remove(key);
            return true;
        }
        false
    }

    fn expect(&mut self, key: &Key, created: Vec<String>, deleted: Vec<(String, String)>) {
        if created.is_empty() && deleted.is_empty() {
            return;
        }
        self.0.insert(
            key.clone(),
            Expectation {
                created: created.into_iter().collect(),
                deleted: deleted.into_iter().collect(),
                since: Instant::now(),
            },
        );
    }
}

/// The ReplicaSet controller's worker state.
pub(crate) struct RsController {
    ctx: Arc<Ctx>,
    recorder: Recorder,
    expectations: Expectations,
}

fn involved(rs: &ReplicaSet) -> Involved<'_> {
    Involved::of("apps/v1", "ReplicaSet", &rs.metadata)
}

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

impl RsController {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        let recorder = Recorder::new(ctx.client.clone(), COMPONENT);
        Self {
            ctx,
            recorder,
            expectations: Expectations::default(),
        }
    }

    /// One sync of one ReplicaSet; returns when to look again (pods about to become available).
    pub(crate) async fn sync(&mut self, key: &Key) -> Result<Option<Duration>, Error> {
        let Some(rs) = self.ctx.get_rs(&key.namespace, &key.name) else {
            self.expectations.0.remove(key);
            return Ok(None);
        };
        let spec = rs.spec.clone().unwrap_or_default();
        let Some(selector) = selector_of(Some(&spec.selector))? else {
            return Ok(None);
        };
        let needs_sync = self.expectations.satisfied(key, &self.ctx.pods);
        let uid = rs.metadata.uid.clone().unwrap_or_default();
        let deleting = rs.metadata.deletion_timestamp.is_some();
        let api: Api<Pod> = Api::namespaced(self.ctx.client.clone(), &key.namespace);

        // Claim: owned pods that match, adopt matching orphans, release owned pods that stopped matching.
        let mut owned: Vec<Arc<Pod>> = Vec::new();
        for p in self.ctx.pods.state() {
            if p.metadata.namespace.as_deref() != Some(key.namespace.as_str()) || !pods::is_active(&p) {
                continue;
            }
            let matches = selector.matches(&p.metadata.labels.clone().unwrap_or_default());
            match controller_of(&p.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        owned.push(p);
                    } else if !deleting {
                        let refs = p
                            .metadata
                            .owner_references
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|r| r.uid != uid)
                            .collect();
                        match patch_owner_refs(&api, &p.metadata, refs).await {
                            Ok(_) => debug!(rs = %key, pod = ?p.metadata.name, "released pod"),
                            Err(e) => debug!(rs = %key, error = %e, "releasing pod failed"),
                        }
                    }
                }
                None if matches && !deleting => {
                    let mut refs = p.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(controller_ref("apps/v1", "ReplicaSet", &key.name, &uid));
                    match patch_owner_refs(&api, &p.metadata, refs).await {
                        Ok(adopted) => {
                            debug!(rs = %key, pod = ?p.metadata.name, "adopted pod");
                            owned.push(Arc::new(adopted));
                        }
                        Err(e) => debug!(rs = %key, error = %e, "adopting pod failed"),
                    }
                }
                _ => {}
            }
        }

        let mut manage_err = None;
        let mut deleted: HashSet<String> = HashSet::new();
        if needs_sync && !deleting {
            match self.manage(&rs, key, &owned, &api).await {
                Ok(gone) => deleted = gone,
                Err(e) => manage_err = Some(e),
            }
        }
        // The status counts what remains: kube counts the pods it just deleted until the next sync,
        // which lets a Deployment see an old ReplicaSet as more available than it is and scale it
        // down too far.
        owned.retain(|p| p.metadata.uid.as_ref().is_none_or(|u| !deleted.contains(u)));

        // Status.
        let t = now();
        let template_labels = spec
            .template
            .as_ref()
            .and_then(|t| t.metadata.as_ref())
            .and_then(|m| m.labels.clone())
            .unwrap_or_default();
        let min_ready = spec.min_ready_seconds.unwrap_or(0);
        let (mut fully, mut ready, mut available) = (0, 0, 0);
        let mut next_available: Option<jiff::Timestamp> = None;
        for p in &owned {
            if pods::fully_labeled(p, &template_labels) {
                fully += 1;
            }
            if pods::is_ready(p) {
                ready += 1;
                if pods::is_available(p, min_ready, t) {
                    available += 1;
                } else if let Some(at) = pods::available_at(p, min_ready, t) {
                    next_available = Some(next_available.map_or(at, |n| n.min(at)));
                }
            }
        }
        let nz = |v: i32| (v != 0).then_some(v);
        let mut conditions: Vec<ReplicaSetCondition> = rs
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        let failure = conditions.iter().position(|c| c.type_ == "ReplicaFailure");
        match (&manage_err, failure) {
            (Some(Error::CreatePods(msg)), None) => conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some("FailedCreate".into()),
                message: Some(msg.clone()),
                last_transition_time: Some(Time(t)),
            }),
            (None, Some(i)) => {
                conditions.remove(i);
            }
            _ => {}
        }
        let status = ReplicaSetStatus {
            replicas: owned.len() as i32,
            fully_labeled_replicas: nz(fully),
            ready_replicas: nz(ready),
            available_replicas: nz(available),
            observed_generation: rs.metadata.generation,
            conditions: (!conditions.is_empty()).then_some(conditions),
            ..ReplicaSetStatus::default()
        };
        if rs.status.as_ref() != Some(&status) {
            let mut updated = (*rs).clone();
            updated.status = Some(status);
            let rs_api: Api<ReplicaSet> = Api::namespaced(self.ctx.client.clone(), &key.namespace);
            rs_api
                .replace_status(&key.name, &PostParams::default(), &updated)
                .await?;
        }
        if let Some(e) = manage_err {
            return Err(e);
        }
        // Look again when the next ready pod has been ready for minReadySeconds.
        Ok(next_available.map(|at| {
            let wait = at.duration_since(t).unsigned_abs();
            Duration::from_secs(wait.as_secs())
                + Duration::from_nanos(u64::from(wait.subsec_nanos()))
                + Duration::from_millis(50)
        }))
    }

    /// Creates or deletes pods toward `spec.replicas` (kube's `manageReplicas`); returns the uids of
    /// the pods it deleted.
    async fn manage(
        &mut self,
        rs: &ReplicaSet,
        key: &Key,
        owned: &[Arc<Pod>],
        api: &Api<Pod>,
    ) -> Result<HashSet<String>, Error> {
        let spec = rs.spec.clone().unwrap_or_default();
        let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        let have = owned.len();
        if have < want {
            let mut todo = (want - have).min(BURST);
            let Some(template) = spec.template.as_ref() else {
                return Ok(HashSet::new());
            };
            let owner = controller_ref(
                "apps/v1",
                "ReplicaSet",
                &key.name,
                rs.metadata.uid.as_deref().unwrap_or(""),
            );
            let pod = pods::pod_from_template(template, &key.name, owner);
            let mut created = Vec::new();
            let mut failed = None;
            // Slow start, as kube: batches of 1, 2, 4, … so a template the server rejects fails once,
            // not `replicas` times.
            let mut batch = 1;
            while todo > 0 && failed.is_none() {
                let n = batch.min(todo);
                let pp = PostParams::default();
                let results = futures::future::join_all((0..n).map(|_| api.create(&pp, &pod))).await;
                for r in results {
                    match r {
                        Ok(p) => {
                            let name = p.metadata.name.clone().unwrap_or_default();
                            self.recorder
                                .record(
                                    &involved(rs),
                                    "Normal",
                                    "SuccessfulCreate",
                                    &format!("Created pod: {name}"),
                                )
                                .await;
                            created.push(name);
                        }
                        Err(e) => {
                            let msg = format!("Error creating: {e}");
                            self.recorder
                                .record(&involved(rs), "Warning", "FailedCreate", &msg)
                                .await;
                            failed = Some(msg);
                        }
                    }
                }
                todo -= n;
                batch *= 2;
            }
            self.expectations.expect(key, created, vec![]);
            if let Some(msg) = failed {
                return Err(Error::CreatePods(msg));
            }
            Ok(HashSet::new())
        } else if have > want {
            let n = (have - want).min(BURST);
            // Pods of sibling ReplicaSets (same Deployment) count when ranking doubled-up nodes.
            let siblings: HashSet<String> = match controller_of(&rs.metadata) {
                Some(owner) => self
                    .ctx
                    .replicasets
                    .state()
                    .iter()
                    .filter(|s| {
                        s.metadata.namespace == rs.metadata.namespace
                            && controller_of(&s.metadata).is_some_and(|o| o.uid == owner.uid)
                    })
                    .filter_map(|s| s.metadata.uid.clone())
                    .collect(),
                None => rs.metadata.uid.clone().into_iter().collect(),
            };
            let related: Vec<Arc<Pod>> = self
                .ctx
                .pods
                .state()
                .into_iter()
                .filter(|p| {
                    p.metadata.namespace == rs.metadata.namespace
                        && pods::is_active(p)
                        && controller_of(&p.metadata).is_some_and(|o| siblings.contains(&o.uid))
                })
                .collect();
            let owned_refs: Vec<&Pod> = owned.iter().map(|p| p.as_ref()).collect();
            let related_refs: Vec<&Pod> = related.iter().map(|p| p.as_ref()).collect();
            let victims = pods::pods_to_delete(&owned_refs, &related_refs, n);
            let dp = DeleteParams::default();
            let results = futures::future::join_all(
                victims
                    .iter()
                    .map(|p| api.delete(p.metadata.name.as_deref().unwrap_or(""), &dp)),
            )
            .await;
            let mut deleted = Vec::new();
            let mut err = None;
            for (p, r) in victims.iter().zip(results) {
                let name = p.metadata.name.clone().unwrap_or_default();
                match r {
                    Ok(_) => {
                        self.recorder
                            .record(
                                &involved(rs),
                                "Normal",
                                "SuccessfulDelete",
                                &format!("Deleted pod: {name}"),
                            )
                            .await;
                        deleted.push((name, p.metadata.uid.clone().unwrap_or_default()));
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => {
                        self.recorder
                            .record(
                                &involved(rs),
                                "Warning",
                                "FailedDelete",
                                &format!("Error deleting: {e}"),
                            )
                            .await;
                        err = Some(e);
                    }
                }
            }
            let uids = deleted.iter().map(|(_, uid)| uid.clone()).collect();
            self.expectations.expect(key, vec![], deleted);
            if let Some(e) = err {
                return Err(e.into());
            }
            Ok(uids)
        } else {
            Ok(HashSet::new())
        }
    }
}
