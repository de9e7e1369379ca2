//! Pod readiness gates (`spec.readinessGates`), as the kubelet's `GeneratePodReadyCondition` applies
//! them: a pod whose containers are ready is Ready only when every gate's condition, set by some other
//! writer through `pods/status`, is `True` in the pod's status; otherwise Ready is `False` with reason
//! `ReadinessGatesNotReady` and a message naming each gate that holds it back.

use k8s_openapi::api::core::v1::{Pod, PodCondition, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The kubelet's reason for a pod held back by its readiness gates.
pub const READINESS_GATES_NOT_READY: &str = "ReadinessGatesNotReady";

/// Whether the pod has readiness gates (only those pods need their own status watched).
pub fn has_gates(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_some_and(|g| !g.is_empty())
}

/// Why the gates of `pod` keep it from Ready, from the conditions its status shows in the API (the
/// kubelet's messages, joined by ", "), or `None` when every gate's condition is `True`.
pub fn unready_message(pod: &Pod) -> Option<String> {
    let gates = pod.spec.as_ref().and_then(|s| s.readiness_gates.as_ref())?;
    let conditions = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or_default();
    let messages: Vec<String> = gates
        .iter()
        .filter_map(|g| {
            let t = &g.condition_type;
            match conditions.iter().find(|c| &c.type_ == t) {
                None => Some(format!(
                    "corresponding condition of pod readiness gate {} does not exist.",
                    quote(t)
                )),
                Some(c) if c.status != "True" => Some(format!(
                    "the status of pod readiness gate {} is not \"True\", but {}",
                    quote(t),
                    c.status
                )),
                Some(_) => None,
            }
        })
        .collect();
    (!messages.is_empty()).then(|| messages.join(", "))
}

/// Go's `%q` for a condition type (printable ASCII in practice; escapes quotes and backslashes).
fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Applies `api_pod`'s readiness gates to the `status` the runner computed: a Ready condition that the
/// containers made `True` turns `False` while a gate is not `True`. The transition time follows the
/// condition as the API shows it (kept while its status stays, `now` when it flips), so a gate flip
/// moves it and nothing else does. Conditions other writers own are not in `status` and are never
/// touched (the status is written as a strategic merge patch keyed by condition type).
pub fn apply_gates(api_pod: &Pod, status: &mut PodStatus, now: Time) {
    if !has_gates(api_pod) {
        return;
    }
    let Some(ready) = status
        .conditions
        .as_mut()
        .and_then(|cs| cs.iter_mut().find(|c| c.type_ == "Ready"))
    else {
        return;
    };
    if ready.status == "True"
        && let Some(message) = unready_message(api_pod)
    {
        *ready = PodCondition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some(READINESS_GATES_NOT_READY.into()),
            message: Some(message),
            last_transition_time: ready.last_transition_time.clone(),
            ..Default::default()
        };
    }
    let shown = api_pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    ready.last_transition_time = match shown {
        Some(c) if c.status == ready.status => c.last_transition_time.clone(),
        _ => Some(now),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(conditions: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}],
                     "readinessGates": [{"conditionType": "k8s.io/blue-green"}, {"conditionType": "example.com/lb"}]},
            "status": {"conditions": conditions},
        }))
        .unwrap()
    }

    fn ready_status(status: &str) -> PodStatus {
        serde_json::from_value(json!({"conditions": [
            {"type": "ContainersReady", "status": status},
            {"type": "Ready", "status": status, "lastTransitionTime": "2024-01-01T00:00:00Z"},
        ]}))
        .unwrap()
    }

    fn ready(s: &PodStatus) -> &PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap()
    }

    fn now() -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000).unwrap())
    }

    #[test]
    fn gates_hold_ready_back_with_the_kubelets_messages() {
        let p = pod(json!([{"type": "example.com/lb", "status": "False"}]));
        let mut s = ready_status("True");
        apply_gates(&p, &mut s, now());
        let r = ready(&s);
        assert_eq!(r.status, "False");
        assert_eq!(r.reason.as_deref(), Some("ReadinessGatesNotReady"));
        assert_eq!(
            r.message.as_deref(),
            Some(
                "corresponding condition of pod readiness gate \"k8s.io/blue-green\" does not exist., \
                 the status of pod readiness gate \"example.com/lb\" is not \"True\", but False"
            )
        );
        assert_eq!(r.last_transition_time, Some(now()), "Ready flipped");
    }

    #[test]
    fn all_gates_true_leaves_ready_and_keeps_the_shown_transition_time() {
        let shown = json!({"type": "Ready", "status": "True", "lastTransitionTime": "2025-05-05T00:00:00Z"});
        let p = pod(json!([
            {"type": "k8s.io/blue-green", "status": "True"},
            {"type": "example.com/lb", "status": "True"},
            shown,
        ]));
        let mut s = ready_status("True");
        apply_gates(&p, &mut s, now());
        let r = ready(&s);
        assert_eq!((r.status.as_str(), r.reason.as_deref()), ("True", None));
        assert_eq!(
            r.last_transition_time.as_ref().unwrap().0.to_string(),
            "2025-05-05T00:00:00Z"
        );
    }

    #[test]
    fn unready_containers_win_and_pods_without_gates_are_untouched() {
        let p = pod(json!([]));
        let mut s = ready_status("False");
        apply_gates(&p, &mut s, now());
        assert_eq!(ready(&s).status, "False");
        assert_eq!(ready(&s).reason, None, "the containers' reason stays");

        let mut no_gates = p.clone();
        no_gates.spec.as_mut().unwrap().readiness_gates = None;
        let mut s = ready_status("True");
        apply_gates(&no_gates, &mut s, now());
        assert_eq!(ready(&s).status, "True");
        assert!(!has_gates(&no_gates));
    }
}
