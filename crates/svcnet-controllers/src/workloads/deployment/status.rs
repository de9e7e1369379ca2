//! The status half of the Deployment controller: paused/resumed conditions, counts, `Available` and
//! the `Progressing` estimate with its deadline.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus};

use super::super::rollout::{self, reason};
use super::meta::now;
use super::{DeploymentController, Error, RsSets};

impl DeploymentController {
    /// kube's `checkPausedConditions`.
    pub(super) async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<(), Error> {
        if d.spec
            .as_ref()
            .and_then(|s| s.progress_deadline_seconds)
            .is_none()
        {
            return Ok(());
        }
        let paused = d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false);
        let st = d.status.get_or_insert_with(Default::default);
        let cond = rollout::get_condition(st, "Progressing");
        if cond.is_some_and(|c| c.reason.as_deref() == Some(reason::TIMED_OUT)) {
            return Ok(());
        }
        let paused_cond = cond.is_some_and(|c| c.reason.as_deref() == Some(reason::PAUSED));
        let c = if paused && !paused_cond {
            rollout::condition(
                "Progressing",
                "Unknown",
                reason::PAUSED,
                "Deployment is paused".into(),
                now(),
            )
        } else if !paused && paused_cond {
            rollout::condition(
                "Progressing",
                "Unknown",
                reason::RESUMED,
                "Deployment is resumed".into(),
                now(),
            )
        } else {
            return Ok(());
        };
        rollout::set_condition(st, c);
        self.update_status(d).await
    }

    /// kube's `syncDeploymentStatus`: counts and `Available`, no progress estimate.
    pub(super) async fn sync_status(&self, d: &mut Deployment, sets: &RsSets) -> Result<(), Error> {
        let views = sets.views();
        let st = rollout::calculate_status(d, &views, sets.new.map(|i| &views[i]), now());
        if d.status.as_ref() != Some(&st) {
            d.status = Some(st);
            self.update_status(d).await?;
        }
        Ok(())
    }

    /// kube's `syncRolloutStatus`: counts, `Available`, and the `Progressing` estimate.
    pub(super) async fn sync_rollout_status(
        &self,
        d: &mut Deployment,
        sets: &RsSets,
    ) -> Result<Option<Duration>, Error> {
        let t = now();
        let views = sets.views();
        let new_view = sets.new.map(|i| &views[i]);
        let mut st = rollout::calculate_status(d, &views, new_view, t);
        let deadline = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds);
        if deadline.is_none() {
            rollout::remove_condition(&mut st, "Progressing");
        }
        let old = d.status.clone().unwrap_or_default();
        let current = rollout::get_condition(&old, "Progressing").cloned();
        let complete_before = st.replicas == st.updated_replicas
            && current
                .as_ref()
                .is_some_and(|c| c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE));
        let rs_name = new_view.map(|v| v.name.clone());
        let describe = |what: &str| match &rs_name {
            Some(n) => format!("ReplicaSet {n:?} {what}"),
            None => format!("Deployment {:?} {what}", d.metadata.name.as_deref().unwrap_or("")),
        };
        if deadline.is_some() && !complete_before {
            if rollout::is_complete(d, &st) {
                rollout::set_condition(
                    &mut st,
                    rollout::condition(
                        "Progressing",
                        "True",
                        reason::NEW_RS_AVAILABLE,
                        describe("has successfully progressed."),
                        t,
                    ),
                );
            } else if rollout::is_progressing(&old, &st) {
                let mut c = rollout::condition(
                    "Progressing",
                    "True",
                    reason::RS_UPDATED,
                    describe("is progressing."),
                    t,
                );
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    rollout::remove_condition(&mut st, "Progressing");
                }
                rollout::set_condition(&mut st, c);
            } else if rollout::timed_out(d, &st, t) {
                rollout::set_condition(
                    &mut st,
                    rollout::condition(
                        "Progressing",
                        "False",
                        reason::TIMED_OUT,
                        describe("has timed out progressing."),
                        t,
                    ),
                );
            }
        }
        // Failures of the ReplicaSets (the new one's first) surface on the Deployment.
        let failure = new_view
            .and_then(|_| sets.new.map(|i| &sets.all[i]))
            .into_iter()
            .chain(sets.all.iter())
            .find_map(|rs| {
                rs.status
                    .as_ref()?
                    .conditions
                    .as_ref()?
                    .iter()
                    .find(|c| c.type_ == "ReplicaFailure")
                    .cloned()
            });
        match failure {
            Some(f) => {
                let mut c = rollout::condition(
                    "ReplicaFailure",
                    &f.status,
                    f.reason.as_deref().unwrap_or(""),
                    f.message.unwrap_or_default(),
                    t,
                );
                if let Some(lt) = f.last_transition_time {
                    c.last_transition_time = Some(lt.clone());
                    c.last_update_time = Some(lt);
                }
                rollout::set_condition(&mut st, c);
            }
            None => rollout::remove_condition(&mut st, "ReplicaFailure"),
        }
        if d.status.as_ref() == Some(&st) {
            return Ok(requeue_stuck(d, &st, t));
        }
        d.status = Some(st);
        self.update_status(d).await?;
        Ok(None)
    }
}

/// kube's `requeueStuckDeployment`: when a rollout in progress should be checked against its
/// deadline.
pub(super) fn requeue_stuck(d: &Deployment, st: &DeploymentStatus, t: jiff::Timestamp) -> Option<Duration> {
    let deadline = d.spec.as_ref()?.progress_deadline_seconds?;
    let cur = rollout::get_condition(d.status.as_ref()?, "Progressing")?;
    if rollout::is_complete(d, st) || cur.reason.as_deref() == Some(reason::TIMED_OUT) {
        return None;
    }
    let at = cur
        .last_update_time
        .as_ref()?
        .0
        .checked_add(jiff::SignedDuration::from_secs(i64::from(deadline)))
        .ok()?;
    let after = at.duration_since(t);
    if after < jiff::SignedDuration::from_secs(1) {
        return Some(Duration::from_secs(1));
    }
    Some(after.unsigned_abs() + Duration::from_secs(1))
}
