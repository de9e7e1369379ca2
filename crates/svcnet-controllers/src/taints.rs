//! Taints and tolerations, as `k8s.io/api/core/v1`'s helpers and the node lifecycle controller define
//! them: whether a toleration tolerates a taint, which taints a node's Ready condition calls for, and how
//! long a pod may stay on a node with `NoExecute` taints. Pure functions: the node controllers
//! ([`crate::nodes`], [`crate::node_lifecycle`]) and the scheduler read them.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};

/// The taint of a node whose Ready condition is False.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is Unknown (its Lease expired).
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The taint of a cordoned node (`spec.unschedulable`).
pub const UNSCHEDULABLE: &str = "node.kubernetes.io/unschedulable";
/// Pods may not be placed on the node.
pub const NO_SCHEDULE: &str = "NoSchedule";
/// Pods already on the node are evicted unless they tolerate it.
pub const NO_EXECUTE: &str = "NoExecute";

/// `Toleration.ToleratesTaint`: an empty effect or key matches any; the operator `Exists` matches any
/// value, `Equal` (or empty) only the same value.
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    let effect = t.effect.as_deref().unwrap_or("");
    if !effect.is_empty() && effect != taint.effect {
        return false;
    }
    let key = t.key.as_deref().unwrap_or("");
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("") {
        "" | "Equal" => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        "Exists" => true,
        _ => false,
    }
}

/// A pod's tolerations.
pub fn tolerations(pod: &Pod) -> &[Toleration] {
    pod.spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[])
}

/// A node's taints.
pub fn taints(node: &Node) -> &[Taint] {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[])
}

/// The first of `taints` with a scheduling effect (`NoSchedule`, `NoExecute`) that none of
/// `tolerations` tolerates (the scheduler's TaintToleration filter).
pub fn untolerated_for_scheduling<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.effect == NO_SCHEDULE || t.effect == NO_EXECUTE)
        .find(|t| !tolerations.iter().any(|tol| tolerates(tol, t)))
}

/// How long a pod with `tolerations` may stay on a node with the `NoExecute` taints `taints` (the taint
/// eviction controller's `GetMatchingTolerations` and `getMinTolerationTime`): `Some(ZERO)` when a taint
/// is not tolerated (or a toleration that applies allows 0 s or less), `None` when it may stay for good,
/// else the shortest `tolerationSeconds` among the tolerations that apply (the first one tolerating each
/// taint).
pub fn toleration_time(taints: &[&Taint], tolerations: &[Toleration]) -> Option<Duration> {
    if taints.is_empty() {
        return None;
    }
    let mut min: Option<i64> = None;
    for taint in taints {
        let Some(used) = tolerations.iter().find(|t| tolerates(t, taint)) else {
            return Some(Duration::ZERO);
        };
        if let Some(secs) = used.toleration_seconds {
            if secs <= 0 {
                return Some(Duration::ZERO);
            }
            min = Some(min.map_or(secs, |m| m.min(secs)));
        }
    }
    min.map(|s| Duration::from_secs(s as u64))
}

/// The node's Ready condition status (`True`, `False`, `Unknown`), if it has one.
pub fn ready_status(node: &Node) -> Option<&str> {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str())
}

/// The taints the node lifecycle controller keeps on a node (key and effect), from its Ready condition
/// and `spec.unschedulable`: `not-ready` when Ready is False (or missing), `unreachable` when Unknown,
/// each as `NoSchedule` (TaintNodesByCondition) and `NoExecute` (taint-based eviction); `unschedulable`
/// `NoSchedule` when cordoned. `no_execute` is false while every node is down (kube's "master
/// disruption" mode, which evicts nothing: the fault is more likely the control plane's view).
pub fn controller_taints(node: &Node, no_execute: bool) -> Vec<(&'static str, &'static str)> {
    let mut want = Vec::new();
    let condition = match ready_status(node) {
        Some("True") => None,
        Some("Unknown") => Some(UNREACHABLE),
        _ => Some(NOT_READY),
    };
    if let Some(key) = condition {
        want.push((key, NO_SCHEDULE));
        if no_execute {
            want.push((key, NO_EXECUTE));
        }
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        want.push((UNSCHEDULABLE, NO_SCHEDULE));
    }
    want
}

/// Whether a taint is one [`controller_taints`] manages (others, a user's, are never touched).
pub fn is_controller_taint(t: &Taint) -> bool {
    matches!(
        (t.key.as_str(), t.effect.as_str()),
        (NOT_READY | UNREACHABLE, NO_SCHEDULE | NO_EXECUTE) | (UNSCHEDULABLE, NO_SCHEDULE)
    )
}

/// Whether the node's conditions call for a controller `NoExecute` taint it does not carry yet (one
/// that would start evicting its pods).
pub fn needs_new_no_execute(node: &Node) -> bool {
    let wants = controller_taints(node, true)
        .iter()
        .any(|(_, effect)| *effect == NO_EXECUTE);
    let has = taints(node)
        .iter()
        .any(|t| t.effect == NO_EXECUTE && is_controller_taint(t));
    wants && !has
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn taint(key: &str, value: Option<&str>, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            value: value.map(Into::into),
            effect: effect.into(),
            time_added: None,
        }
    }

    fn tol(v: serde_json::Value) -> Toleration {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn tolerations_match_as_kubernetes_matches_them() {
        let t = taint("k", Some("v"), NO_EXECUTE);
        assert!(tolerates(&tol(json!({"key": "k", "operator": "Exists"})), &t));
        assert!(tolerates(&tol(json!({"key": "k", "value": "v"})), &t));
        assert!(tolerates(
            &tol(json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoExecute"})),
            &t
        ));
        assert!(!tolerates(&tol(json!({"key": "k", "value": "w"})), &t));
        assert!(!tolerates(
            &tol(json!({"key": "k", "operator": "Exists", "effect": "NoSchedule"})),
            &t
        ));
        assert!(!tolerates(
            &tol(json!({"key": "other", "operator": "Exists"})),
            &t
        ));
        // An empty key with Exists tolerates everything.
        assert!(tolerates(&tol(json!({"operator": "Exists"})), &t));
        assert!(!tolerates(
            &tol(json!({"key": "k", "operator": "Gt", "value": "v"})),
            &t
        ));
    }

    #[test]
    fn toleration_time_is_the_shortest_that_applies() {
        let unreachable = taint(UNREACHABLE, None, NO_EXECUTE);
        let other = taint("dedicated", Some("x"), NO_EXECUTE);
        let defaults = [
            tol(
                json!({"key": NOT_READY, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
            ),
            tol(
                json!({"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}),
            ),
        ];
        assert_eq!(
            toleration_time(&[&unreachable], &defaults),
            Some(Duration::from_secs(300))
        );
        // A taint nobody tolerates: at once.
        assert_eq!(
            toleration_time(&[&unreachable, &other], &defaults),
            Some(Duration::ZERO)
        );
        assert_eq!(toleration_time(&[&unreachable], &[]), Some(Duration::ZERO));
        // Tolerated without a limit: for good.
        let forever = [tol(json!({"operator": "Exists"}))];
        assert_eq!(toleration_time(&[&unreachable, &other], &forever), None);
        assert_eq!(toleration_time(&[], &defaults), None);
        // The first toleration that applies to each taint counts; 0 or less means at once.
        let short = [
            tol(json!({"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 2})),
            tol(json!({"key": "dedicated", "operator": "Exists", "tolerationSeconds": 10})),
        ];
        assert_eq!(
            toleration_time(&[&unreachable, &other], &short),
            Some(Duration::from_secs(2))
        );
        let zero = [tol(json!({"operator": "Exists", "tolerationSeconds": -1}))];
        assert_eq!(toleration_time(&[&unreachable], &zero), Some(Duration::ZERO));
    }

    #[test]
    fn node_conditions_call_for_kubernetes_taints() {
        let node = |ready: &str, cordoned: bool| -> Node {
            serde_json::from_value(
                json!({"metadata": {"name": "n"}, "spec": {"unschedulable": cordoned},
                "status": {"conditions": [{"type": "Ready", "status": ready}]}}),
            )
            .unwrap()
        };
        assert!(controller_taints(&node("True", false), true).is_empty());
        assert_eq!(
            controller_taints(&node("Unknown", false), true),
            [(UNREACHABLE, NO_SCHEDULE), (UNREACHABLE, NO_EXECUTE)]
        );
        assert_eq!(
            controller_taints(&node("False", true), true),
            [
                (NOT_READY, NO_SCHEDULE),
                (NOT_READY, NO_EXECUTE),
                (UNSCHEDULABLE, NO_SCHEDULE)
            ]
        );
        assert_eq!(
            controller_taints(&node("Unknown", false), false),
            [(UNREACHABLE, NO_SCHEDULE)]
        );
        assert!(is_controller_taint(&taint(UNREACHABLE, None, NO_EXECUTE)));
        assert!(!is_controller_taint(&taint(
            "ToBeDeletedByClusterAutoscaler",
            Some("1"),
            NO_SCHEDULE
        )));
        let taints = [
            taint(UNREACHABLE, None, NO_SCHEDULE),
            taint("a", None, "PreferNoSchedule"),
        ];
        assert_eq!(
            untolerated_for_scheduling(&taints, &[]).map(|t| t.key.as_str()),
            Some(UNREACHABLE)
        );
        let exists = [tol(json!({"key": UNREACHABLE, "operator": "Exists"}))];
        assert!(untolerated_for_scheduling(&taints, &exists).is_none());
    }
}
