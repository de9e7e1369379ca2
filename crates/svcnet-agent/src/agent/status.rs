//! The status writer: every change the runner reports goes to the pod's `status`, written only when it
//! changed (or when another writer moved its Ready condition away from the runner's), and tried again
//! shortly when it could not be written. Readiness gates are applied from the
//! pod as the API shows it, and re-evaluated whenever another writer changes a gated pod's status. The
//! status goes out as a strategic merge patch, which merges `conditions` by type: conditions other
//! writers set through `pods/status` (the gates' own) are never overwritten.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::debug;

use super::{listed, readiness};
use crate::runner::PodRunner;

/// Writes the runner's pod statuses to the API as they change, until the runner goes away. `gated`
/// names pods with readiness gates whose object changed in the API (a gate condition may have moved).
pub(super) async fn write_statuses(
    client: Client,
    runner: PodRunner,
    store: Store<Pod>,
    mut gated: mpsc::UnboundedReceiver<String>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut changes = runner.changes();
    let mut gates_open = true;
    let mut written: HashMap<String, serde_json::Value> = HashMap::new();
    // Statuses not written yet (the pod cache was mid-list, the API failed): tried again shortly,
    // since the pod may change no more (a pod without probes changes once, when it starts).
    let mut unwritten: HashSet<String> = HashSet::new();
    let mut retry_at = None;
    loop {
        let uids: Vec<String> = tokio::select! {
            r = changes.recv() => match r {
                Ok(uid) => vec![uid],
                // Changes were lost: every pod's status may be stale.
                Err(RecvError::Lagged(_)) => runner.running(),
                Err(RecvError::Closed) => return,
            },
            uid = gated.recv(), if gates_open => match uid {
                Some(uid) => vec![uid],
                None => {
                    gates_open = false;
                    Vec::new()
                }
            },
            () = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)),
                if retry_at.is_some() => std::mem::take(&mut unwritten).into_iter().collect(),
        };
        for uid in uids {
            if write_status(&client, &runner, &store, &uid, &mut written).await {
                unwritten.remove(&uid);
            } else {
                unwritten.insert(uid);
            }
        }
        retry_at = match (unwritten.is_empty(), retry_at) {
            (true, _) => None,
            (false, Some(at)) if at > tokio::time::Instant::now() => Some(at),
            (false, _) => Some(tokio::time::Instant::now() + STATUS_RETRY),
        };
    }
}

/// How soon a status that could not be written is tried again.
const STATUS_RETRY: Duration = Duration::from_millis(500);

/// Writes the runner's status of pod `uid` to the API if it changed; whether that is done with (written,
/// unchanged, or nothing left to write it to), as opposed to worth another try.
async fn write_status(
    client: &Client,
    runner: &PodRunner,
    store: &Store<Pod>,
    uid: &str,
    written: &mut HashMap<String, serde_json::Value>,
) -> bool {
    let Some(mut status) = runner.status(uid) else {
        written.remove(uid);
        return true;
    };
    // The pod by uid, so a pod deleted and created again under its name never gets the old one's status.
    let Some(pod) = store
        .state()
        .into_iter()
        .find(|p| p.uid().as_deref() == Some(uid))
    else {
        // The agent starts pods from its list as the list comes in, before the cache shows them.
        return listed(store);
    };
    let now = Time(jiff::Timestamp::from_second(jiff::Timestamp::now().as_second()).unwrap_or_default());
    readiness::apply_gates(&pod, &mut status, now);
    let Ok(mut value) = serde_json::to_value(&status) else {
        return true;
    };
    clear_absent_condition_fields(&mut value);
    // Unchanged since the last write, unless another writer moved Ready meanwhile: the node lifecycle
    // controller sets it False while this node's Lease lapses, and once the node is back the pod's own
    // readiness must be written again (the kubelet's status manager reconciles the same way).
    let api_ready = ready_of(pod.status.as_ref());
    let ours = value["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str());
    let moved = api_ready.is_some() && ours.is_some() && api_ready != ours;
    if written.get(uid) == Some(&value) && !moved {
        return true;
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
    let patch = json!({"status": value});
    match api
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&patch),
        )
        .await
    {
        Ok(_) => {
            written.insert(uid.to_string(), value);
            true
        }
        // Deleted meanwhile: nothing to write to.
        Err(kube::Error::Api(e)) if e.code == 404 => true,
        Err(e) => {
            debug!(pod = %pod.name_any(), error = %e, "status write failed; trying again");
            false
        }
    }
}

/// The status of a pod status's Ready condition, if it has one.
pub(super) fn ready_of(status: Option<&k8s_openapi::api::core::v1::PodStatus>) -> Option<&str> {
    status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.as_str())
}

/// A strategic merge patch merges each condition into the one of its type field by field, so a reason
/// or message the condition no longer has must be sent as `null` (deleted), or the old one would stay
/// beside the new status (the kubelet's two-way patch does the same).
fn clear_absent_condition_fields(status: &mut serde_json::Value) {
    let Some(conditions) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) else {
        return;
    };
    for c in conditions.iter_mut().filter_map(|c| c.as_object_mut()) {
        for field in ["reason", "message"] {
            c.entry(field).or_insert(serde_json::Value::Null);
        }
    }
}
