//! The Deployment controller's arithmetic, pure and testable: `maxSurge`/`maxUnavailable`
//! resolution, the pod-template hash, one rolling-update step, proportional scaling and the
//! Deployment's status and conditions. It works on [`RsView`]s, the few numbers of a ReplicaSet that
//! matter, and follows kube's `pkg/controller/deployment` (`rolling.go`, `sync.go`, `progress.go`,
//! `util/deployment_util.go`).

use std::cmp::Ordering;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The label a Deployment adds to its ReplicaSets (selector, template, labels) to keep them apart.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The rollout revision of a ReplicaSet and of its Deployment.
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Revisions a ReplicaSet had before it was rolled back to.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// The Deployment's `spec.replicas` when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` when the ReplicaSet was last scaled (proportional scaling's base).
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

/// Deployment annotations that are not copied onto its ReplicaSets.
pub const SKIPPED_ANNOTATIONS: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Progressing reasons and the Available ones, as kube names them.
pub mod reason {
    /// A new ReplicaSet was created for a new template.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// An existing ReplicaSet matches the template.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// The rollout made progress.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// The rollout is complete.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// No progress within `progressDeadlineSeconds`.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// `spec.paused` was set.
    pub const PAUSED: &str = "DeploymentPaused";
    /// `spec.paused` was cleared.
    pub const RESUMED: &str = "DeploymentResumed";
    /// At least `replicas - maxUnavailable` pods are available.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Fewer than `replicas - maxUnavailable` pods are available.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
}

/// A malformed `maxSurge`/`maxUnavailable` (validation normally rejects these).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid value for IntOrString: {0:?}")]
pub struct BadIntOrString(pub String);

/// kube's `GetScaledValueFromIntOrPercent`: an int as is, `N%` of `total` rounded up or down.
pub fn scaled_value(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, BadIntOrString> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| BadIntOrString(s.clone()))?;
            let prod = pct * i64::from(total);
            let v = if round_up {
                (prod + 99).div_euclid(100)
            } else {
                prod.div_euclid(100)
            };
            i32::try_from(v).map_err(|_| BadIntOrString(s.clone()))
        }
    }
}

/// kube's `ResolveFenceposts`: `(maxSurge, maxUnavailable)` for `desired` replicas. Surge rounds up,
/// unavailable rounds down, and if both come out 0 unavailable becomes 1 so a rollout can proceed.
pub fn resolve_fenceposts(
    surge: Option<&IntOrString>,
    unavailable: Option<&IntOrString>,
    desired: i32,
) -> Result<(i32, i32), BadIntOrString> {
    let zero = IntOrString::Int(0);
    let s = scaled_value(surge.unwrap_or(&zero), desired, true)?;
    let u = scaled_value(unavailable.unwrap_or(&zero), desired, false)?;
    if s == 0 && u == 0 { Ok((0, 1)) } else { Ok((s, u)) }
}

/// The parameters of a Deployment that the arithmetic needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// `spec.replicas`.
    pub replicas: i32,
    /// `RollingUpdate` (else `Recreate`).
    pub rolling: bool,
    /// Resolved `maxSurge` (0 for Recreate).
    pub max_surge: i32,
    /// Resolved `maxUnavailable`, capped at `replicas` (kube's `MaxUnavailable`); 0 for Recreate.
    pub max_unavailable: i32,
}

impl Params {
    /// Reads a Deployment; malformed surge/unavailable values count as 0, as kube's helpers do.
    pub fn of(d: &Deployment) -> Self {
        let spec = d.spec.as_ref();
        let replicas = spec.and_then(|s| s.replicas).unwrap_or(1);
        let strategy = spec.and_then(|s| s.strategy.as_ref());
        let rolling = strategy
            .and_then(|s| s.type_.as_deref())
            .is_none_or(|t| t == "RollingUpdate");
        let (mut max_surge, mut max_unavailable) = (0, 0);
        if rolling {
            let ru = strategy.and_then(|s| s.rolling_update.as_ref());
            let pct25 = IntOrString::String("25%".into());
            let surge = ru.and_then(|r| r.max_surge.as_ref()).unwrap_or(&pct25);
            let unav = ru.and_then(|r| r.max_unavailable.as_ref()).unwrap_or(&pct25);
            if let Ok((s, u)) = resolve_fenceposts(Some(surge), Some(unav), replicas) {
                max_surge = s;
                max_unavailable = if replicas == 0 { 0 } else { u.min(replicas) };
            }
        }
        Self {
            replicas,
            rolling,
            max_surge,
            max_unavailable,
        }
    }
}

/// FNV-1a, 32 bits.
pub fn fnv32a(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// apimachinery's `rand.SafeEncodeString`: every character mapped onto an alphabet without vowels
/// (no accidental words) and without look-alike characters.
pub fn safe_encode(s: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// The `pod-template-hash` of a template: FNV-32a over its canonical JSON (k8s-openapi serializes
/// fields in a fixed order and maps sorted) plus the collision count, safe-encoded like kube's
/// `ComputeHash`. Any change to the template changes it; the same template always gives the same hash.
pub fn template_hash(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut bytes = serde_json::to_vec(template).unwrap_or_default();
    if let Some(c) = collision_count {
        bytes.extend_from_slice(&c.to_le_bytes());
    }
    safe_encode(&fnv32a(&bytes).to_string())
}

/// Whether two templates are equal apart from the `pod-template-hash` label (kube's `EqualIgnoreHash`).
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(m) = t.metadata.as_mut()
            && let Some(l) = m.labels.as_mut()
        {
            l.remove(POD_TEMPLATE_HASH);
            if l.is_empty() {
                m.labels = None;
            }
        }
        serde_json::to_value(t).unwrap_or_default()
    };
    strip(a) == strip(b)
}

/// The numbers of one ReplicaSet the rollout decisions are made from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RsView {
    /// Its name.
    pub name: String,
    /// `metadata.creationTimestamp` (ordering; `None` sorts first).
    pub created: Option<jiff::Timestamp>,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.replicas` (pods that exist).
    pub actual: i32,
    /// `status.readyReplicas`.
    pub ready: i32,
    /// `status.availableReplicas`.
    pub available: i32,
    /// The `max-replicas` annotation.
    pub max_replicas: Option<i32>,
    /// The `desired-replicas` annotation.
    pub desired: Option<i32>,
}

fn by_created(a: &RsView, b: &RsView) -> Ordering {
    a.created.cmp(&b.created).then_with(|| a.name.cmp(&b.name))
}

/// One change of a ReplicaSet's size: (index into the list it was planned on, from, to).
pub type Scale = (usize, i32, i32);

/// `NewRSNewReplicas`: the size the new ReplicaSet may grow to now. For a rolling update it is capped
/// so that all ReplicaSets together hold at most `replicas + maxSurge` pods; Recreate scales at once.
pub fn new_rs_target(p: &Params, all: &[RsView], new: &RsView) -> i32 {
    if !p.rolling {
        return p.replicas;
    }
    let current: i32 = all.iter().map(|r| r.replicas).sum();
    let max_total = p.replicas + p.max_surge;
    if current >= max_total {
        return new.replicas;
    }
    let up = (max_total - current).min(p.replicas - new.replicas).max(0);
    new.replicas + up
}

/// `reconcileNewReplicaSet`: the new ReplicaSet's next size, if it changes.
pub fn plan_new_rs(p: &Params, all: &[RsView], new: &RsView) -> Option<i32> {
    match new.replicas.cmp(&p.replicas) {
        Ordering::Equal => None,
        Ordering::Greater => Some(p.replicas),
        Ordering::Less => Some(new_rs_target(p, all, new)).filter(|t| *t != new.replicas),
    }
}

/// `reconcileOldReplicaSets`: scale-downs of the old ReplicaSets, in order. First unhealthy pods of
/// old sets go (they do not lower availability), then available ones, but only as far as keeps
/// `replicas - maxUnavailable` pods available; the new set's unavailable pods are held against it so a
/// broken new template cannot eat into the old set's capacity.
///
/// Unlike kube, a set never counts as more available than it is sized for: right after a scale-down
/// its status may still count the pods being removed, and trusting that would scale down too far.
pub fn plan_old_scale_down(p: &Params, old: &[RsView], new: &RsView) -> Vec<Scale> {
    let cap = |r: &RsView| RsView {
        available: r.available.min(r.replicas.max(0)),
        ..r.clone()
    };
    let new = &cap(new);
    let mut old: Vec<(usize, RsView)> = old.iter().map(cap).enumerate().collect();
    old.sort_by(|(_, a), (_, b)| by_created(a, b));
    let old_count: i32 = old.iter().map(|(_, r)| r.replicas).sum();
    if old_count == 0 {
        return vec![];
    }
    let all_count = old_count + new.replicas;
    let min_available = p.replicas - p.max_unavailable;
    let new_unavailable = new.replicas - new.available;
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return vec![];
    }
    let mut plan = Vec::new();
    // Clean up unhealthy replicas first.
    let mut cleaned = 0;
    for (i, rs) in old.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        if rs.replicas == 0 || rs.replicas == rs.available {
            continue;
        }
        let n = (max_scaled_down - cleaned).min(rs.replicas - rs.available);
        plan.push((*i, rs.replicas, rs.replicas - n));
        rs.replicas -= n;
        cleaned += n;
    }
    // Then scale down, keeping the minimum available.
    let available: i32 = old.iter().map(|(_, r)| r.available).sum::<i32>() + new.available;
    if available <= min_available {
        return plan;
    }
    let total = available - min_available;
    let mut done = 0;
    for (i, rs) in old.iter_mut() {
        if done >= total {
            break;
        }
        if rs.replicas == 0 {
            continue;
        }
        let n = rs.replicas.min(total - done);
        plan.push((*i, rs.replicas, rs.replicas - n));
        rs.replicas -= n;
        done += n;
    }
    plan
}

/// kube's `FindActiveOrLatest`: with at most one ReplicaSet holding pods, the one to give all replicas
/// to (the active one, else the new one, else the newest old one). `None` with several active.
/// Indexes are into `all`; `new` is the index of the new ReplicaSet, if any.
pub fn active_or_latest(all: &[RsView], new: Option<usize>) -> Option<usize> {
    let active: Vec<usize> = (0..all.len()).filter(|i| all[*i].replicas > 0).collect();
    match active.len() {
        0 => new.or_else(|| {
            (0..all.len())
                .filter(|i| Some(*i) != new)
                .max_by(|a, b| by_created(&all[*a], &all[*b]))
        }),
        1 => Some(active[0]),
        _ => None,
    }
}

/// kube's `IsSaturated`: the new ReplicaSet holds every replica, all available.
pub fn is_saturated(p: &Params, new: &RsView) -> bool {
    new.desired == Some(p.replicas) && new.replicas == p.replicas && new.available == p.replicas
}

/// kube's `scale` for a Deployment whose `spec.replicas` changed while several ReplicaSets hold pods:
/// returns the new size of every active ReplicaSet (index into `all`). Each gets a share of the change
/// proportional to its size (relative to the `max-replicas` it was sized for), the rounding leftover
/// goes to the largest; with the new set saturated, old ones go to 0.
pub fn plan_proportional(
    p: &Params,
    all: &[RsView],
    new: Option<usize>,
    status_replicas: i32,
) -> Vec<(usize, i32)> {
    if let Some(i) = active_or_latest(all, new) {
        return if all[i].replicas == p.replicas {
            vec![]
        } else {
            vec![(i, p.replicas)]
        };
    }
    if let Some(n) = new
        && is_saturated(p, &all[n])
    {
        return (0..all.len())
            .filter(|i| *i != n && all[*i].replicas > 0)
            .map(|i| (i, 0))
            .collect();
    }
    if !p.rolling {
        return vec![];
    }
    let mut active: Vec<usize> = (0..all.len()).filter(|i| all[*i].replicas > 0).collect();
    let current: i32 = active.iter().map(|i| all[*i].replicas).sum();
    let allowed = if p.replicas > 0 {
        p.replicas + p.max_surge
    } else {
        0
    };
    let to_add = allowed - current;
    match to_add.cmp(&0) {
        // Biggest first; ties: newer first when growing, older first when shrinking.
        Ordering::Greater => active.sort_by(|a, b| {
            all[*b]
                .replicas
                .cmp(&all[*a].replicas)
                .then_with(|| by_created(&all[*b], &all[*a]))
        }),
        Ordering::Less => active.sort_by(|a, b| {
            all[*b]
                .replicas
                .cmp(&all[*a].replicas)
                .then_with(|| by_created(&all[*a], &all[*b]))
        }),
        Ordering::Equal => {}
    }
    let mut added = 0;
    let mut sizes: Vec<(usize, i32)> = Vec::new();
    for &i in &active {
        let rs = &all[i];
        let share = if to_add == 0 || to_add == added {
            0
        } else {
            let fraction = if p.replicas == 0 {
                -rs.replicas
            } else {
                let base = rs.max_replicas.unwrap_or(status_replicas);
                if base == 0 {
                    0
                } else {
                    let size = f64::from(rs.replicas) * f64::from(p.replicas + p.max_surge) / f64::from(base);
                    size.round() as i32 - rs.replicas
                }
            };
            let allowed = to_add - added;
            if to_add > 0 {
                fraction.min(allowed)
            } else {
                fraction.max(allowed)
            }
        };
        added += share;
        sizes.push((i, rs.replicas + share));
    }
    if let Some(first) = sizes.first_mut()
        && to_add != 0
    {
        first.1 = (first.1 + to_add - added).max(0);
    }
    sizes
}

/// kube's `DeploymentComplete`: every replica updated and available, and the spec observed.
pub fn is_complete(d: &Deployment, st: &DeploymentStatus) -> bool {
    let replicas = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    st.updated_replicas.unwrap_or(0) == replicas
        && st.replicas.unwrap_or(0) == replicas
        && st.available_replicas.unwrap_or(0) == replicas
        && st.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// kube's `DeploymentProgressing`: more updated, ready or available pods, or fewer old ones.
pub fn is_progressing(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// A condition stamped `now`.
pub fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// The condition of a type.
pub fn get_condition<'a>(st: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    st.conditions.as_ref()?.iter().find(|c| c.type_ == type_)
}

/// kube's `SetDeploymentCondition`: same status and reason is no change; same status keeps the
/// transition time.
pub fn set_condition(st: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get_condition(st, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(st, &c.type_.clone());
    st.conditions.get_or_insert_with(Vec::new).push(c);
}

/// Drops the condition of a type.
pub fn remove_condition(st: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = st.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
        if cs.is_empty() {
            st.conditions = None;
        }
    }
}

fn nonzero(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

/// kube's `calculateStatus`: counts summed over the ReplicaSets and the `Available` condition.
/// Zero counts other than `replicas` are left out, as kube's `omitempty` does.
pub fn calculate_status(
    d: &Deployment,
    all: &[RsView],
    new: Option<&RsView>,
    now: jiff::Timestamp,
) -> DeploymentStatus {
    let p = Params::of(d);
    let available: i32 = all.iter().map(|r| r.available).sum();
    let total: i32 = all.iter().map(|r| r.replicas).sum();
    let prev = d.status.clone().unwrap_or_default();
    let mut st = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nonzero(all.iter().map(|r| r.actual).sum()),
        updated_replicas: nonzero(new.map(|r| r.actual).unwrap_or(0)),
        ready_replicas: nonzero(all.iter().map(|r| r.ready).sum()),
        available_replicas: nonzero(available),
        unavailable_replicas: nonzero((total - available).max(0)),
        collision_count: prev.collision_count,
        conditions: prev.conditions.clone(),
        ..DeploymentStatus::default()
    };
    if available >= p.replicas - p.max_unavailable {
        set_condition(
            &mut st,
            condition(
                "Available",
                "True",
                reason::MIN_AVAILABLE,
                "Deployment has minimum availability.".into(),
                now,
            ),
        );
    } else {
        set_condition(
            &mut st,
            condition(
                "Available",
                "False",
                reason::MIN_UNAVAILABLE,
                "Deployment does not have minimum availability.".into(),
                now,
            ),
        );
    }
    st
}

/// kube's `DeploymentTimedOut`: no progress within the deadline since the condition's last update.
pub fn timed_out(d: &Deployment, st: &DeploymentStatus, now: jiff::Timestamp) -> bool {
    let Some(deadline) = d.spec.as_ref().and_then(|s| s.progress_deadline_seconds) else {
        return false;
    };
    let Some(c) = get_condition(st, "Progressing") else {
        return false;
    };
    match c.reason.as_deref() {
        Some(reason::NEW_RS_AVAILABLE) => false,
        Some(reason::TIMED_OUT) => true,
        _ => c.last_update_time.as_ref().is_some_and(|t| {
            t.0.checked_add(jiff::SignedDuration::from_secs(i64::from(deadline)))
                .is_ok_and(|at| at < now)
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ios(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn fenceposts_round_surge_up_and_unavailable_down() {
        assert_eq!(
            resolve_fenceposts(Some(&ios("25%")), Some(&ios("25%")), 3),
            Ok((1, 0))
        );
        assert_eq!(
            resolve_fenceposts(Some(&ios("25%")), Some(&ios("25%")), 10),
            Ok((3, 2))
        );
        assert_eq!(
            resolve_fenceposts(Some(&ios("0%")), Some(&ios("10%")), 5),
            Ok((0, 1))
        );
        assert_eq!(
            resolve_fenceposts(Some(&IntOrString::Int(2)), Some(&IntOrString::Int(0)), 5),
            Ok((2, 0))
        );
        assert_eq!(
            resolve_fenceposts(Some(&ios("0%")), Some(&ios("0%")), 5),
            Ok((0, 1))
        );
        assert!(resolve_fenceposts(Some(&ios("x")), None, 5).is_err());
    }

    fn deploy(replicas: i32, strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "strategy": strategy,
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}
        }))
        .unwrap()
    }

    #[test]
    fn params_cap_unavailable_and_zero_for_recreate() {
        let p = Params::of(&deploy(
            3,
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": 5}}),
        ));
        assert_eq!((p.max_surge, p.max_unavailable), (0, 3));
        let p = Params::of(&deploy(4, json!({"type": "Recreate"})));
        assert!(!p.rolling);
        assert_eq!((p.max_surge, p.max_unavailable), (0, 0));
        // Defaults: 25% / 25%.
        let p = Params::of(&deploy(4, json!({})));
        assert_eq!((p.max_surge, p.max_unavailable), (1, 1));
    }

    #[test]
    fn hash_is_stable_alphanumeric_and_template_sensitive() {
        let t1: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "a"}},
            "spec": {"containers": [{"name": "c", "image": "i:1"}]}}))
        .unwrap();
        let mut t2 = t1.clone();
        t2.spec.as_mut().unwrap().containers[0].image = Some("i:2".into());
        let h1 = template_hash(&t1, None);
        assert_eq!(h1, template_hash(&t1.clone(), None));
        assert_ne!(h1, template_hash(&t2, None));
        assert_ne!(h1, template_hash(&t1, Some(1)));
        assert!(!h1.is_empty() && h1.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
        assert_eq!(fnv32a(b""), 0x811c_9dc5);
        assert_eq!(fnv32a(b"a"), 0xe40c_292c);
        assert_eq!(safe_encode("0123"), "4567");
        // The hash label does not make templates different.
        let mut t3 = t1.clone();
        t3.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(POD_TEMPLATE_HASH.into(), h1);
        assert!(equal_ignore_hash(&t1, &t3));
        assert!(!equal_ignore_hash(&t1, &t2));
    }

    fn rs(name: &str, created: &str, replicas: i32, available: i32) -> RsView {
        RsView {
            name: name.into(),
            created: Some(created.parse().unwrap()),
            replicas,
            actual: replicas,
            ready: available,
            available,
            max_replicas: None,
            desired: None,
        }
    }

    /// Simulates a rollout where every pod becomes available as soon as it exists, one controller
    /// step at a time, and checks the invariants at every step.
    #[test]
    fn rolling_update_steps_keep_availability_and_surge() {
        for (replicas, surge, unav) in [
            (3, "25%", "25%"),
            (10, "25%", "25%"),
            (5, "0", "1"),
            (4, "2", "0"),
            (1, "1", "0"),
        ] {
            let parse = |s: &str| s.parse::<i32>().map(IntOrString::Int).unwrap_or_else(|_| ios(s));
            let d = deploy(
                replicas,
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": parse(surge), "maxUnavailable": parse(unav)}}),
            );
            let p = Params::of(&d);
            let mut old = vec![rs("old", "2025-01-01T00:00:00Z", replicas, replicas)];
            let mut new = rs("new", "2025-01-02T00:00:00Z", 0, 0);
            for step in 0..100 {
                let all: Vec<RsView> = old.iter().cloned().chain([new.clone()]).collect();
                if let Some(t) = plan_new_rs(&p, &all, &new) {
                    new.replicas = t;
                } else {
                    let plan = plan_old_scale_down(&p, &old, &new);
                    if plan.is_empty() {
                        // Pods come up: the new ones become available.
                        if new.available == new.replicas {
                            break;
                        }
                        new.available = new.replicas;
                    }
                    for (i, from, to) in plan {
                        assert_eq!(old[i].replicas, from);
                        old[i].replicas = to;
                        old[i].available = old[i].available.min(to);
                    }
                }
                let total: i32 = old.iter().map(|r| r.replicas).sum::<i32>() + new.replicas;
                let avail: i32 = old.iter().map(|r| r.available).sum::<i32>() + new.available;
                assert!(total <= replicas + p.max_surge, "surge exceeded at step {step}");
                assert!(
                    avail >= replicas - p.max_unavailable,
                    "availability dropped at step {step}: {avail}"
                );
            }
            assert_eq!(new.replicas, replicas, "{replicas} {surge} {unav}");
            assert_eq!(new.available, replicas);
            assert_eq!(old[0].replicas, 0);
        }
    }

    #[test]
    fn unhealthy_old_pods_go_first() {
        let p = Params {
            replicas: 4,
            rolling: true,
            max_surge: 1,
            max_unavailable: 1,
        };
        // Old set has 4 pods of which 2 are unavailable; new set has 1, not yet available.
        let old = vec![rs("old", "2025-01-01T00:00:00Z", 4, 2)];
        let new = rs("new", "2025-01-02T00:00:00Z", 1, 0);
        // maxScaledDown = 5 - 3 - 1 = 1: one unhealthy pod cleaned up, no healthy one touched.
        assert_eq!(plan_old_scale_down(&p, &old, &new), vec![(0, 4, 3)]);
        // Old set just scaled 3 → 2 whose status still counts 3 available; the new set has 2 of 2.
        // Only 2 + 2 = 4 are really available, so only one more may go (not two).
        let p = Params {
            replicas: 3,
            rolling: true,
            max_surge: 1,
            max_unavailable: 0,
        };
        let old = vec![rs("old", "2025-01-01T00:00:00Z", 2, 3)];
        let new = rs("new", "2025-01-02T00:00:00Z", 2, 2);
        assert_eq!(plan_old_scale_down(&p, &old, &new), vec![(0, 2, 1)]);
    }

    #[test]
    fn proportional_scaling_splits_by_size() {
        // 10 replicas, surge 3: old 8 + new 5 = 13 (sized for max 13). Scale to 20 (surge 5): 25 allowed.
        let mut old = rs("old", "2025-01-01T00:00:00Z", 8, 8);
        old.max_replicas = Some(13);
        let mut new = rs("new", "2025-01-02T00:00:00Z", 5, 0);
        new.max_replicas = Some(13);
        let p = Params {
            replicas: 20,
            rolling: true,
            max_surge: 5,
            max_unavailable: 5,
        };
        let sizes = plan_proportional(&p, &[old.clone(), new.clone()], Some(1), 13);
        let total: i32 = sizes.iter().map(|(_, s)| s).sum();
        assert_eq!(total, 25);
        assert_eq!(sizes, vec![(0, 15), (1, 10)]);
        // One active set takes everything.
        let lone = rs("new", "2025-01-02T00:00:00Z", 3, 3);
        let p = Params {
            replicas: 10,
            rolling: true,
            max_surge: 3,
            max_unavailable: 2,
        };
        assert_eq!(
            plan_proportional(&p, &[rs("old", "2025-01-01T00:00:00Z", 0, 0), lone], Some(1), 3),
            vec![(1, 10)]
        );
        // Scaling down to 1 from 10 with two active sets.
        let p = Params {
            replicas: 1,
            rolling: true,
            max_surge: 1,
            max_unavailable: 0,
        };
        let sizes = plan_proportional(&p, &[old, new], Some(1), 13);
        assert_eq!(sizes.iter().map(|(_, s)| s).sum::<i32>(), 2);
    }

    #[test]
    fn status_and_available_condition() {
        let d = deploy(3, json!({}));
        let now: jiff::Timestamp = "2025-01-01T00:00:00Z".parse().unwrap();
        let new = rs("new", "2025-01-02T00:00:00Z", 3, 2);
        let st = calculate_status(&d, std::slice::from_ref(&new), Some(&new), now);
        assert_eq!(st.replicas, Some(3));
        assert_eq!(st.updated_replicas, Some(3));
        assert_eq!(st.available_replicas, Some(2));
        assert_eq!(st.unavailable_replicas, Some(1));
        let c = get_condition(&st, "Available").unwrap();
        // maxUnavailable of 3 at 25% is 0, so 2 of 3 is not enough.
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("MinimumReplicasUnavailable"))
        );
        assert!(!is_complete(&d, &st));
    }
}
