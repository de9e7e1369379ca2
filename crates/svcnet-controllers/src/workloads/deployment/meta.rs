//! What the Deployment controller reads from and stamps on object metadata: revisions, the replica
//! annotations kube's rollout keeps on ReplicaSets, and the numbers a ReplicaSet contributes to the
//! rollout arithmetic.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::super::rollout::{self, Params, RsView};
use crate::events::Involved;

pub(super) fn now() -> jiff::Timestamp {
    let t = jiff::Timestamp::now();
    // Conditions carry second precision on the wire; keep them so in memory too, so an unchanged
    // status compares equal to what was stored.
    t.round(jiff::Unit::Second).unwrap_or(t)
}

pub(super) fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub(super) fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations.as_ref()?.get(key).map(String::as_str)
}

pub(super) fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, rollout::REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

pub(super) fn created(meta: &ObjectMeta) -> Option<jiff::Timestamp> {
    meta.creation_timestamp.as_ref().map(|t| t.0)
}

/// The numbers of a ReplicaSet the rollout arithmetic uses.
pub(super) fn view(rs: &ReplicaSet) -> RsView {
    let st = rs.status.as_ref();
    RsView {
        name: rs.metadata.name.clone().unwrap_or_default(),
        created: created(&rs.metadata),
        replicas: replicas_of(rs),
        actual: st.map(|s| s.replicas).unwrap_or(0),
        ready: st.and_then(|s| s.ready_replicas).unwrap_or(0),
        available: st.and_then(|s| s.available_replicas).unwrap_or(0),
        max_replicas: annotation(&rs.metadata, rollout::MAX_REPLICAS).and_then(|v| v.parse().ok()),
        desired: annotation(&rs.metadata, rollout::DESIRED_REPLICAS).and_then(|v| v.parse().ok()),
    }
}

pub(super) fn involved(d: &Deployment) -> Involved<'_> {
    Involved::of("apps/v1", "Deployment", &d.metadata)
}

/// kube's `SetNewReplicaSetAnnotations`: copies the Deployment's annotations, raises the revision
/// (remembering the old one in the revision history: a rollback), and on a new ReplicaSet stamps the
/// replica annotations. Returns whether anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, exists: bool) -> bool {
    let p = Params::of(d);
    let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if rollout::SKIPPED_ANNOTATIONS.contains(&k.as_str()) {
            continue;
        }
        if ann.get(k) != Some(v) {
            ann.insert(k.clone(), v.clone());
            changed = true;
        }
    }
    let old = ann.get(rollout::REVISION).cloned();
    let old_num: i64 = match old.as_deref() {
        None | Some("") => 0,
        Some(s) => match s.parse() {
            Ok(n) => n,
            Err(_) => return false,
        },
    };
    if old_num < new_revision {
        ann.insert(rollout::REVISION.into(), new_revision.to_string());
        changed = true;
        if let Some(old) = old.filter(|o| !o.is_empty()) {
            let history = match ann.get(rollout::REVISION_HISTORY).filter(|h| !h.is_empty()) {
                Some(h) => format!("{h},{old}"),
                None => old,
            };
            ann.insert(rollout::REVISION_HISTORY.into(), history);
        }
    }
    if !exists && set_replicas_annotations(rs, p.replicas, p.replicas + p.max_surge) {
        changed = true;
    }
    changed
}

/// kube's `SetReplicasAnnotations`: `desired-replicas` and `max-replicas`.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let ann = rs.metadata.annotations.get_or_insert_with(BTreeMap::new);
    let mut changed = false;
    for (k, v) in [(rollout::DESIRED_REPLICAS, desired), (rollout::MAX_REPLICAS, max)] {
        let v = v.to_string();
        if ann.get(k) != Some(&v) {
            ann.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

/// The Deployment's ReplicaSets: the new one (template equal to the Deployment's) if it exists, and
/// the others, each list oldest first.
/// kube's `SetDeploymentRevision`.
pub(super) fn set_deployment_revision(d: &mut Deployment, revision: &str) -> bool {
    let ann = d.metadata.annotations.get_or_insert_with(BTreeMap::new);
    if ann.get(rollout::REVISION).map(String::as_str) == Some(revision) {
        return false;
    }
    ann.insert(rollout::REVISION.into(), revision.to_owned());
    true
}
