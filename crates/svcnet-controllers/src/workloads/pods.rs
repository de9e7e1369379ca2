//! What the ReplicaSet controller needs to know about pods, as pure functions: which pods count
//! (active), which are ready and available, kube's ranking of which pods to delete first, and the pod
//! a template stamps out.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The annotation that lowers or raises a pod's chance of being deleted on scale-down.
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// A pod counts toward a ReplicaSet unless it is terminal or being deleted (kube's `IsPodActive`).
pub fn is_active(p: &Pod) -> bool {
    let phase = phase(p);
    phase != "Succeeded" && phase != "Failed" && p.metadata.deletion_timestamp.is_none()
}

fn phase(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

fn ready_condition(p: &Pod) -> Option<&k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
}

/// The pod has `Ready=True`.
pub fn is_ready(p: &Pod) -> bool {
    ready_condition(p).is_some_and(|c| c.status == "True")
}

/// Since when the pod has been ready, if it is.
pub fn ready_since(p: &Pod) -> Option<jiff::Timestamp> {
    ready_condition(p)
        .filter(|c| c.status == "True")
        .and_then(|c| c.last_transition_time.as_ref())
        .map(|t| t.0)
}

/// When a ready pod becomes (or became) available: `minReadySeconds` after it turned ready. `None` if
/// it is not ready. kube's `IsPodAvailable`: with `minReadySeconds` 0 a ready pod is available at once.
pub fn available_at(p: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
    if !is_ready(p) {
        return None;
    }
    if min_ready_seconds <= 0 {
        return Some(now);
    }
    // A Ready condition without a transition time never becomes available, as in kube.
    let since = ready_since(p)?;
    since
        .checked_add(jiff::SignedDuration::from_secs(i64::from(min_ready_seconds)))
        .ok()
}

/// Ready for at least `minReadySeconds` at `now`.
pub fn is_available(p: &Pod, min_ready_seconds: i32, now: jiff::Timestamp) -> bool {
    available_at(p, min_ready_seconds, now).is_some_and(|at| at <= now)
}

/// The controller owner reference of an object, if any.
pub fn controller_of(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .as_ref()?
        .iter()
        .find(|r| r.controller == Some(true))
}

/// The owner reference a controller puts on what it creates or adopts.
pub fn controller_ref(api_version: &str, kind: &str, name: &str, uid: &str) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: uid.to_owned(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pod a ReplicaSet creates from its template (kube's `GetPodFromTemplate`): labels, annotations
/// and finalizers of the template, `generateName: <rs>-`, and the controller reference.
pub fn pod_from_template(template: &PodTemplateSpec, rs_name: &str, owner: OwnerReference) -> Pod {
    let tm = template.metadata.clone().unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{rs_name}-")),
            labels: tm.labels,
            annotations: tm.annotations,
            finalizers: tm.finalizers,
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: template.spec.clone(),
        status: None,
    }
}

fn deletion_cost(p: &Pod) -> i32 {
    p.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(POD_DELETION_COST))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn node_of(p: &Pod) -> &str {
    p.spec.as_ref().and_then(|s| s.node_name.as_deref()).unwrap_or("")
}

fn restarts(p: &Pod) -> i32 {
    p.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map(|cs| cs.iter().map(|c| c.restart_count).sum())
        .unwrap_or(0)
}

fn phase_rank(p: &Pod) -> u8 {
    match phase(p) {
        "Pending" | "" => 0,
        "Unknown" => 1,
        "Running" => 2,
        _ => 3,
    }
}

/// kube's `ActivePodsWithRanks.Less`: whether `a` should be deleted before `b`. `rank` is how many
/// related pods share the pod's node (doubled-up pods go first).
fn delete_before(a: &Pod, ra: usize, b: &Pod, rb: usize) -> Ordering {
    // 1. Unassigned < assigned.
    let (na, nb) = (node_of(a).is_empty(), node_of(b).is_empty());
    if na != nb {
        return if na { Ordering::Less } else { Ordering::Greater };
    }
    // 2. Pending < Unknown < Running.
    let c = phase_rank(a).cmp(&phase_rank(b));
    if c != Ordering::Equal {
        return c;
    }
    // 3. Not ready < ready.
    let (ya, yb) = (is_ready(a), is_ready(b));
    if ya != yb {
        return if ya { Ordering::Greater } else { Ordering::Less };
    }
    // 4. Lower deletion cost first.
    let c = deletion_cost(a).cmp(&deletion_cost(b));
    if c != Ordering::Equal {
        return c;
    }
    // 5. More pods of the same set on the node first.
    if ra != rb {
        return rb.cmp(&ra);
    }
    // 6. Ready for less time first (both ready here, or both not).
    if ya {
        let c = cmp_newer_first(ready_since(a), ready_since(b));
        if c != Ordering::Equal {
            return c;
        }
    }
    // 7. More restarts first.
    let c = restarts(b).cmp(&restarts(a));
    if c != Ordering::Equal {
        return c;
    }
    // 8. Newer first (no timestamp counts as newest).
    cmp_newer_first(
        a.metadata.creation_timestamp.as_ref().map(|t| t.0),
        b.metadata.creation_timestamp.as_ref().map(|t| t.0),
    )
}

fn cmp_newer_first(a: Option<jiff::Timestamp>, b: Option<jiff::Timestamp>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => y.cmp(&x),
    }
}

/// Picks the `n` pods of `pods` to delete first. `related` are the active pods of the ReplicaSet and
/// its siblings (same Deployment), used to rank pods doubled up on a node.
pub fn pods_to_delete<'a>(pods: &[&'a Pod], related: &[&Pod], n: usize) -> Vec<&'a Pod> {
    let mut per_node: HashMap<&str, usize> = HashMap::new();
    for p in related {
        let node = node_of(p);
        if !node.is_empty() {
            *per_node.entry(node).or_default() += 1;
        }
    }
    let rank = |p: &Pod| {
        let node = node_of(p);
        if node.is_empty() {
            0
        } else {
            per_node.get(node).copied().unwrap_or(0)
        }
    };
    let mut ranked: Vec<(&Pod, usize)> = pods.iter().map(|p| (*p, rank(p))).collect();
    ranked.sort_by(|(a, ra), (b, rb)| delete_before(a, *ra, b, *rb));
    ranked.into_iter().take(n).map(|(p, _)| p).collect()
}

/// Whether all of `template` labels are on the pod (kube's fully-labeled count).
pub fn fully_labeled(p: &Pod, template_labels: &BTreeMap<String, String>) -> bool {
    let labels = p.metadata.labels.as_ref();
    template_labels
        .iter()
        .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ContainerStatus;
    use serde_json::json;

    fn pod(name: &str, node: &str, phase: &str, ready_at: Option<&str>, created: &str) -> Pod {
        let mut conditions = vec![];
        if let Some(t) = ready_at {
            conditions.push(json!({"type": "Ready", "status": "True", "lastTransitionTime": t}));
        }
        serde_json::from_value(json!({
            "metadata": {"name": name, "creationTimestamp": created},
            "spec": {"containers": [], "nodeName": if node.is_empty() { None } else { Some(node) }},
            "status": {"phase": phase, "conditions": conditions},
        }))
        .unwrap()
    }

    fn names(ps: &[&Pod]) -> Vec<String> {
        ps.iter().map(|p| p.metadata.name.clone().unwrap()).collect()
    }

    #[test]
    fn ranking_prefers_unscheduled_then_not_ready_then_newest() {
        let t0 = "2025-01-01T00:00:00Z";
        let t1 = "2025-01-01T00:01:00Z";
        let running_ready_old = pod("a", "n1", "Running", Some(t0), t0);
        let running_ready_new = pod("b", "n2", "Running", Some(t1), t1);
        let running_not_ready = pod("c", "n1", "Running", None, t0);
        let pending = pod("d", "n1", "Pending", None, t0);
        let unscheduled = pod("e", "", "Pending", None, t0);
        let all = [
            &running_ready_old,
            &running_ready_new,
            &running_not_ready,
            &pending,
            &unscheduled,
        ];
        let order = pods_to_delete(&all, &all, 5);
        assert_eq!(names(&order), ["e", "d", "c", "a", "b"].map(String::from));
        // "a" is doubled up on n1 with c and d; "b" alone on n2, so "a" goes before "b".
        // Without the doubling, the one ready for less time goes first.
        let alone = [&running_ready_old, &running_ready_new];
        assert_eq!(names(&pods_to_delete(&alone, &alone, 1)), ["b"]);
    }

    #[test]
    fn cached_pods_keep_deletion_cost_and_restarts() {
        let t0 = "2025-01-01T00:00:00Z";
        let mut full = Vec::new();
        for (name, cost, restarts) in [("a", None, 0), ("b", Some("-5"), 0), ("c", None, 3)] {
            let mut p = pod(name, "n1", "Running", Some(t0), t0);
            let mut ann = BTreeMap::from([(
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            )]);
            if let Some(c) = cost {
                ann.insert(POD_DELETION_COST.to_string(), c.to_string());
            }
            p.metadata.annotations = Some(ann);
            p.status.as_mut().unwrap().container_statuses = Some(vec![ContainerStatus {
                name: "c".into(),
                image: "img".into(),
                restart_count: restarts,
                ..Default::default()
            }]);
            full.push(p);
        }
        let mut cached = full.clone();
        cached.iter_mut().for_each(crate::trim_shared_pod);
        let f: Vec<&Pod> = full.iter().collect();
        let c: Vec<&Pod> = cached.iter().collect();
        let want = names(&pods_to_delete(&f, &f, 3));
        assert_eq!(want, ["b", "c", "a"].map(String::from));
        assert_eq!(names(&pods_to_delete(&c, &c, 3)), want);
        let ann = cached[1].metadata.annotations.as_ref().unwrap();
        assert_eq!(ann.keys().collect::<Vec<_>>(), [POD_DELETION_COST]);
        assert!(
            cached[2]
                .status
                .as_ref()
                .unwrap()
                .container_statuses
                .as_ref()
                .unwrap()[0]
                .image
                .is_empty()
        );
    }

    #[test]
    fn availability_waits_for_min_ready_seconds() {
        let now: jiff::Timestamp = "2025-01-01T00:00:10Z".parse().unwrap();
        let p = pod(
            "a",
            "",
            "Running",
            Some("2025-01-01T00:00:05Z"),
            "2025-01-01T00:00:00Z",
        );
        assert!(is_available(&p, 0, now));
        assert!(is_available(&p, 5, now));
        assert!(!is_available(&p, 6, now));
        let p = pod("b", "", "Running", None, "2025-01-01T00:00:00Z");
        assert!(!is_available(&p, 0, now));
    }

    #[test]
    fn pods_from_templates_carry_owner_and_generate_name() {
        let t: PodTemplateSpec = serde_json::from_value(json!({
            "metadata": {"labels": {"app": "x"}, "annotations": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}
        }))
        .unwrap();
        let p = pod_from_template(
            &t,
            "web-abc",
            controller_ref("apps/v1", "ReplicaSet", "web-abc", "u1"),
        );
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["metadata"]["generateName"], "web-abc-");
        assert_eq!(v["metadata"]["labels"]["app"], "x");
        assert_eq!(v["metadata"]["ownerReferences"][0]["blockOwnerDeletion"], true);
        assert_eq!(v["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(v["spec"]["containers"][0]["image"], "i");
    }
}
