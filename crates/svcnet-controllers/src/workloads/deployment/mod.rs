//! The Deployment controller (kube's `pkg/controller/deployment`): one sync per queued Deployment
//! claims its ReplicaSets, finds or creates the one for the current template (syncing revisions),
//! then either scales proportionally (a `spec.replicas` change, or paused) or takes one rollout step
//! (RollingUpdate or Recreate), cleans up old ReplicaSets beyond `revisionHistoryLimit` and writes the
//! status. The decisions themselves are in [`super::rollout`].
//!
//! The metadata it reads and stamps (revisions, replica annotations) is in [`meta`]; the status it
//! writes (counts, conditions, progress deadline) in [`status`].

mod meta;
mod status;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, DeleteParams, PostParams};
use kube::core::{Selector, SelectorExt};
use tracing::debug;

use super::pods::{controller_of, controller_ref};
use super::rollout::{self, Params, RsView, reason};
use super::{Ctx, Error, patch_owner_refs, selector_of};
use crate::events::Recorder;
use crate::queue::Key;
use meta::{
    annotation, created, involved, now, replicas_of, revision_of, set_deployment_revision,
    set_new_rs_annotations, set_replicas_annotations, view,
};

/// `source.component` of the Deployment controller's Events.
pub const COMPONENT: &str = "deployment-controller";

struct RsSets {
    all: Vec<ReplicaSet>,
    new: Option<usize>,
}

impl RsSets {
    fn old_indexes(&self) -> Vec<usize> {
        (0..self.all.len()).filter(|i| Some(*i) != self.new).collect()
    }
    fn views(&self) -> Vec<RsView> {
        self.all.iter().map(view).collect()
    }
}

/// The Deployment controller's worker state.
pub(crate) struct DeploymentController {
    ctx: Arc<Ctx>,
    recorder: Recorder,
}

impl DeploymentController {
    pub(crate) fn new(ctx: Arc<Ctx>) -> Self {
        let recorder = Recorder::new(ctx.deploy_client.clone(), COMPONENT);
        Self { ctx, recorder }
    }

    fn rs_api(&self, ns: &str) -> Api<ReplicaSet> {
        Api::namespaced(self.ctx.deploy_client.clone(), ns)
    }

    fn d_api(&self, ns: &str) -> Api<Deployment> {
        Api::namespaced(self.ctx.deploy_client.clone(), ns)
    }

    async fn update_status(&self, d: &mut Deployment) -> Result<(), Error> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let name = d.metadata.name.clone().unwrap_or_default();
        *d = self
            .d_api(&ns)
            .replace_status(&name, &PostParams::default(), d)
            .await?;
        Ok(())
    }

    /// One sync of one Deployment (kube's `syncDeployment`); returns when to look again (progress
    /// deadline checks).
    pub(crate) async fn sync(&mut self, key: &Key) -> Result<Option<Duration>, Error> {
        let Some(d) = self
            .ctx
            .deployments
            .get(&kube::runtime::reflector::ObjectRef::new(&key.name).within(&key.namespace))
        else {
            return Ok(None);
        };
        let mut d: Deployment = (*d).clone();
        let Some(selector) = selector_of(d.spec.as_ref().map(|s| &s.selector))? else {
            self.recorder
                .record(
                    &involved(&d),
                    "Warning",
                    "SelectingAll",
                    "This deployment is selecting all pods. A non-empty selector is required.",
                )
                .await;
            if d.status.as_ref().and_then(|s| s.observed_generation) < d.metadata.generation {
                d.status.get_or_insert_with(Default::default).observed_generation = d.metadata.generation;
                self.update_status(&mut d).await?;
            }
            return Ok(None);
        };
        let mut sets = self.claim_replicasets(&d, &selector, key).await?;

        if d.metadata.deletion_timestamp.is_some() {
            self.find_new(&mut d, &mut sets, false).await?;
            self.sync_status(&mut d, &sets).await?;
            return Ok(None);
        }
        self.check_paused_conditions(&mut d).await?;
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        if paused || self.is_scaling_event(&mut d, &mut sets).await? {
            self.find_new(&mut d, &mut sets, false).await?;
            self.scale(&mut d, &mut sets).await?;
            if paused {
                self.cleanup(&d, &sets).await?;
            }
            self.sync_status(&mut d, &sets).await?;
            return Ok(None);
        }
        if Params::of(&d).rolling {
            self.rollout_rolling(&mut d, &mut sets).await
        } else {
            self.rollout_recreate(&mut d, &mut sets).await
        }
    }

    /// Lists the ReplicaSets in the namespace and claims them: owned ones that match, orphans that
    /// match (adopted), owned ones that stopped matching are released.
    async fn claim_replicasets(
        &self,
        d: &Deployment,
        selector: &Selector,
        key: &Key,
    ) -> Result<RsSets, Error> {
        let uid = d.metadata.uid.clone().unwrap_or_default();
        let deleting = d.metadata.deletion_timestamp.is_some();
        let api = self.rs_api(&key.namespace);
        let mut all = Vec::new();
        for rs in self.ctx.replicasets.state() {
            if rs.metadata.namespace.as_deref() != Some(key.namespace.as_str()) {
                continue;
            }
            let matches = selector.matches(&rs.metadata.labels.clone().unwrap_or_default());
            match controller_of(&rs.metadata) {
                Some(r) if r.uid == uid => {
                    if matches {
                        all.push((*rs).clone());
                    } else if !deleting {
                        let refs = rs
                            .metadata
                            .owner_references
                            .clone()
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|r| r.uid != uid)
                            .collect();
                        patch_owner_refs(&api, &rs.metadata, refs).await?;
                    }
                }
                None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                    let mut refs = rs.metadata.owner_references.clone().unwrap_or_default();
                    refs.push(controller_ref("apps/v1", "Deployment", &key.name, &uid));
                    all.push(patch_owner_refs(&api, &rs.metadata, refs).await?);
                }
                _ => {}
            }
        }
        all.sort_by(|a, b| {
            created(&a.metadata)
                .cmp(&created(&b.metadata))
                .then_with(|| a.metadata.name.cmp(&b.metadata.name))
        });
        let template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let new = all.iter().position(|rs| {
            rs.spec
                .as_ref()
                .and_then(|s| s.template.as_ref())
                .is_some_and(|t| rollout::equal_ignore_hash(t, &template))
        });
        Ok(RsSets { all, new })
    }

    /// kube's `getNewReplicaSet`: syncs the new ReplicaSet's revision (and the Deployment's), or
    /// creates it when `create` is set and it does not exist.
    async fn find_new(&mut self, d: &mut Deployment, sets: &mut RsSets, create: bool) -> Result<(), Error> {
        let ns = d.metadata.namespace.clone().unwrap_or_default();
        let dname = d.metadata.name.clone().unwrap_or_default();
        let max_old = sets
            .old_indexes()
            .iter()
            .map(|i| revision_of(&sets.all[*i]))
            .max()
            .unwrap_or(0);
        let new_revision = max_old + 1;
        let has_deadline = d
            .spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .is_some();
        if let Some(i) = sets.new {
            let mut copy = sets.all[i].clone();
            let annotations_changed = set_new_rs_annotations(d, &mut copy, new_revision, true);
            let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let spec = copy.spec.get_or_insert_with(ReplicaSetSpec::default);
            let min_ready_changed = spec.min_ready_seconds.unwrap_or(0) != min_ready.unwrap_or(0);
            if annotations_changed || min_ready_changed {
                spec.min_ready_seconds = min_ready;
                let name = copy.metadata.name.clone().unwrap_or_default();
                sets.all[i] = self
                    .rs_api(&ns)
                    .replace(&name, &PostParams::default(), &copy)
                    .await?;
                return Ok(());
            }
            let rev = annotation(&copy.metadata, rollout::REVISION)
                .unwrap_or("")
                .to_owned();
            let mut needs_update = set_deployment_revision(d, &rev);
            let st = d.status.get_or_insert_with(Default::default);
            if has_deadline && rollout::get_condition(st, "Progressing").is_none() {
                let msg = format!(
                    "Found new replica set {:?}",
                    copy.metadata.name.as_deref().unwrap_or("")
                );
                rollout::set_condition(
                    st,
                    rollout::condition("Progressing", "True", reason::FOUND_NEW_RS, msg, now()),
                );
                needs_update = true;
            }
            if needs_update {
                self.update_status(d).await?;
            }
            return Ok(());
        }
        if !create {
            return Ok(());
        }
        let spec = d.spec.clone().unwrap_or_default();
        let collision = d.status.as_ref().and_then(|s| s.collision_count);
        let hash = rollout::template_hash(&spec.template, collision);
        let mut template = spec.template.clone();
        template
            .metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(rollout::POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(rollout::POD_TEMPLATE_HASH.into(), hash.clone());
        let name = format!("{dname}-{hash}");
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                owner_references: Some(vec![controller_ref(
                    "apps/v1",
                    "Deployment",
                    &dname,
                    d.metadata.uid.as_deref().unwrap_or(""),
                )]),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(template),
            }),
            status: None,
        };
        let p = Params::of(d);
        let mut views = sets.views();
        views.push(view(&rs));
        let new_view = views.last().cloned().unwrap_or_default();
        let replicas = rollout::new_rs_target(&p, &views, &new_view);
        rs.spec.get_or_insert_with(Default::default).replicas = Some(replicas);
        set_new_rs_annotations(d, &mut rs, new_revision, false);
        let api = self.rs_api(&ns);
        let mut already_exists = false;
        let created_rs = match api.create(&PostParams::default(), &rs).await {
            Ok(c) => {
                if replicas > 0 {
                    let msg = format!("Scaled up replica set {name} from 0 to {replicas}");
                    self.recorder
                        .record(&involved(d), "Normal", "ScalingReplicaSet", &msg)
                        .await;
                }
                c
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // Our cache has not shown it yet, or another object took the name.
                let existing = api.get(&name).await?;
                let ours = controller_of(&existing.metadata)
                    .is_some_and(|r| Some(r.uid.as_str()) == d.metadata.uid.as_deref());
                let same = existing
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| rollout::equal_ignore_hash(t, &spec.template));
                if !(ours && same) {
                    let st = d.status.get_or_insert_with(Default::default);
                    st.collision_count = Some(st.collision_count.unwrap_or(0) + 1);
                    self.update_status(d).await?;
                    return Err(Error::HashCollision(name));
                }
                already_exists = true;
                existing
            }
            Err(e) => return Err(e.into()),
        };
        sets.all.push(created_rs);
        sets.new = Some(sets.all.len() - 1);
        let mut needs_update = set_deployment_revision(d, &new_revision.to_string());
        if !already_exists && has_deadline {
            let msg = format!("Created new replica set {name:?}");
            let st = d.status.get_or_insert_with(Default::default);
            rollout::set_condition(
                st,
                rollout::condition("Progressing", "True", reason::NEW_RS_CREATED, msg, now()),
            );
            needs_update = true;
        }
        if needs_update {
            self.update_status(d).await?;
        }
        Ok(())
    }

    /// kube's `isScalingEvent`: an active ReplicaSet was sized for another `spec.replicas`.
    async fn is_scaling_event(&mut self, d: &mut Deployment, sets: &mut RsSets) -> Result<bool, Error> {
        self.find_new(d, sets, false).await?;
        let replicas = Params::of(d).replicas;
        Ok(sets
            .all
            .iter()
            .filter(|rs| replicas_of(rs) > 0)
            .any(|rs| view(rs).desired.is_some_and(|v| v != replicas)))
    }

    /// Sets a ReplicaSet's size and replica annotations (kube's `scaleReplicaSet`); records the Event
    /// when the size changed.
    async fn scale_rs(
        &mut self,
        d: &Deployment,
        sets: &mut RsSets,
        i: usize,
        size: i32,
    ) -> Result<bool, Error> {
        let p = Params::of(d);
        let mut copy = sets.all[i].clone();
        let from = replicas_of(&copy);
        let size_changed = from != size;
        let ann_changed = set_replicas_annotations(&mut copy, p.replicas, p.replicas + p.max_surge);
        if !size_changed && !ann_changed {
            return Ok(false);
        }
        copy.spec.get_or_insert_with(Default::default).replicas = Some(size);
        let name = copy.metadata.name.clone().unwrap_or_default();
        let ns = copy.metadata.namespace.clone().unwrap_or_default();
        sets.all[i] = self
            .rs_api(&ns)
            .replace(&name, &PostParams::default(), &copy)
            .await?;
        if size_changed {
            let op = if size > from { "up" } else { "down" };
            let msg = format!("Scaled {op} replica set {name} from {from} to {size}");
            self.recorder
                .record(&involved(d), "Normal", "ScalingReplicaSet", &msg)
                .await;
        }
        Ok(size_changed)
    }

    /// kube's `scaleReplicaSetAndRecordEvent`: only when the size changes.
    async fn scale_to(
        &mut self,
        d: &Deployment,
        sets: &mut RsSets,
        i: usize,
        size: i32,
    ) -> Result<bool, Error> {
        if replicas_of(&sets.all[i]) == size {
            return Ok(false);
        }
        self.scale_rs(d, sets, i, size).await
    }

    /// kube's `scale`: a `spec.replicas` change spread over the ReplicaSets.
    async fn scale(&mut self, d: &mut Deployment, sets: &mut RsSets) -> Result<(), Error> {
        let p = Params::of(d);
        let status_replicas = d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0);
        let views = sets.views();
        let single = rollout::active_or_latest(&views, sets.new).is_some();
        for (i, size) in rollout::plan_proportional(&p, &views, sets.new, status_replicas) {
            if single {
                self.scale_to(d, sets, i, size).await?;
            } else {
                self.scale_rs(d, sets, i, size).await?;
            }
        }
        Ok(())
    }

    /// kube's `rolloutRolling`: one step.
    async fn rollout_rolling(
        &mut self,
        d: &mut Deployment,
        sets: &mut RsSets,
    ) -> Result<Option<Duration>, Error> {
        self.find_new(d, sets, true).await?;
        let p = Params::of(d);
        let Some(n) = sets.new else { return Ok(None) };
        let views = sets.views();
        if let Some(target) = rollout::plan_new_rs(&p, &views, &views[n])
            && self.scale_to(d, sets, n, target).await?
        {
            return self.sync_rollout_status(d, sets).await;
        }
        let active_old: Vec<usize> = sets
            .old_indexes()
            .into_iter()
            .filter(|i| replicas_of(&sets.all[*i]) > 0)
            .collect();
        let old_views: Vec<RsView> = active_old.iter().map(|i| view(&sets.all[*i])).collect();
        let plan = rollout::plan_old_scale_down(&p, &old_views, &view(&sets.all[n]));
        if !plan.is_empty() {
            for (j, _from, to) in plan {
                self.scale_to(d, sets, active_old[j], to).await?;
            }
            return self.sync_rollout_status(d, sets).await;
        }
        if rollout::is_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, sets).await?;
        }
        self.sync_rollout_status(d, sets).await
    }

    /// kube's `rolloutRecreate`: old ReplicaSets to 0, wait until their pods are gone, then the new one
    /// to full size.
    async fn rollout_recreate(
        &mut self,
        d: &mut Deployment,
        sets: &mut RsSets,
    ) -> Result<Option<Duration>, Error> {
        self.find_new(d, sets, false).await?;
        let mut scaled_down = false;
        for i in sets.old_indexes() {
            if replicas_of(&sets.all[i]) > 0 {
                scaled_down |= self.scale_to(d, sets, i, 0).await?;
            }
        }
        if scaled_down || self.old_pods_running(sets) {
            return self.sync_rollout_status(d, sets).await;
        }
        if sets.new.is_none() {
            self.find_new(d, sets, true).await?;
        }
        if let Some(n) = sets.new {
            self.scale_to(d, sets, n, Params::of(d).replicas).await?;
        }
        if rollout::is_complete(d, &d.status.clone().unwrap_or_default()) {
            self.cleanup(d, sets).await?;
        }
        self.sync_rollout_status(d, sets).await
    }

    /// Whether any pod of an old ReplicaSet still exists and is not terminal (kube's `oldPodsRunning`).
    fn old_pods_running(&self, sets: &RsSets) -> bool {
        let olds = sets.old_indexes();
        if olds
            .iter()
            .any(|i| sets.all[*i].status.as_ref().is_some_and(|s| s.replicas > 0))
        {
            return true;
        }
        let uids: Vec<&str> = olds
            .iter()
            .filter_map(|i| sets.all[*i].metadata.uid.as_deref())
            .collect();
        self.ctx.pods.state().iter().any(|p: &Arc<Pod>| {
            controller_of(&p.metadata).is_some_and(|r| uids.contains(&r.uid.as_str()))
                && !matches!(
                    p.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                )
        })
    }

    /// kube's `cleanupDeployment`: deletes the oldest revisions beyond `revisionHistoryLimit`, only
    /// ones scaled to zero with no pods left.
    async fn cleanup(&mut self, d: &Deployment, sets: &RsSets) -> Result<(), Error> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else {
            return Ok(());
        };
        let mut cleanable: Vec<&ReplicaSet> = sets
            .old_indexes()
            .into_iter()
            .map(|i| &sets.all[i])
            .filter(|rs| rs.metadata.deletion_timestamp.is_none())
            .collect();
        let diff = cleanable.len() as i64 - i64::from(limit);
        if diff <= 0 {
            return Ok(());
        }
        cleanable.sort_by(|a, b| {
            revision_of(a)
                .cmp(&revision_of(b))
                .then_with(|| created(&a.metadata).cmp(&created(&b.metadata)))
        });
        for rs in cleanable.into_iter().take(diff as usize) {
            let st = rs.status.clone().unwrap_or_default();
            if st.replicas != 0 || replicas_of(rs) != 0 || rs.metadata.generation > st.observed_generation {
                continue;
            }
            let name = rs.metadata.name.clone().unwrap_or_default();
            debug!(rs = %name, "deleting old replica set beyond revisionHistoryLimit");
            match self
                .rs_api(rs.metadata.namespace.as_deref().unwrap_or(""))
                .delete(&name, &DeleteParams::background())
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::status::requeue_stuck;
    use super::*;
    use serde_json::json;

    fn deploy() -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "annotations": {"team": "a", "kubectl.kubernetes.io/last-applied-configuration": "{}",
                         rollout::REVISION: "2"}},
            "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}
        }))
        .unwrap()
    }

    #[test]
    fn new_rs_annotations_copy_and_revision_history_on_rollback() {
        let d = deploy();
        let mut rs = ReplicaSet::default();
        assert!(set_new_rs_annotations(&d, &mut rs, 1, false));
        let ann = rs.metadata.annotations.clone().unwrap();
        assert_eq!(ann.get("team").map(String::as_str), Some("a"));
        assert!(!ann.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert_eq!(ann.get(rollout::REVISION).map(String::as_str), Some("1"));
        assert_eq!(ann.get(rollout::DESIRED_REPLICAS).map(String::as_str), Some("4"));
        assert_eq!(ann.get(rollout::MAX_REPLICAS).map(String::as_str), Some("5"));
        // Nothing new: no change.
        assert!(!set_new_rs_annotations(&d, &mut rs, 1, true));
        // Rolled back to at revision 3: the old revision goes to the history.
        assert!(set_new_rs_annotations(&d, &mut rs, 3, true));
        let ann = rs.metadata.annotations.clone().unwrap();
        assert_eq!(ann.get(rollout::REVISION).map(String::as_str), Some("3"));
        assert_eq!(ann.get(rollout::REVISION_HISTORY).map(String::as_str), Some("1"));
    }

    #[test]
    fn progress_deadline_requeue() {
        let t: jiff::Timestamp = "2025-01-01T00:01:00Z".parse().unwrap();
        let d: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 1},
            "spec": {"replicas": 2, "progressDeadlineSeconds": 600, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}},
            "status": {"conditions": [{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated",
                        "lastUpdateTime": "2025-01-01T00:00:00Z", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}
        }))
        .unwrap();
        let st = d.status.clone().unwrap();
        assert_eq!(requeue_stuck(&d, &st, t), Some(Duration::from_secs(541)));
        assert!(!rollout::timed_out(&d, &st, t));
        assert!(rollout::timed_out(
            &d,
            &st,
            "2025-01-01T00:10:01Z".parse().unwrap()
        ));
    }
}
