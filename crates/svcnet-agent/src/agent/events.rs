//! Events the agent records on pods, as the kubelet's recorder does (`FailedMount`,
//! `InvalidEnvironmentVariableNames`, …), written through the node's own client.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tracing::debug;

/// Records a Warning Event `reason` with `message` on `pod`. A failure is logged, never fatal.
pub(super) async fn warn(client: &Client, pod: &Pod, reason: &str, message: &str) {
    let ns = pod.namespace().unwrap_or_default();
    let now = jiff::Timestamp::now();
    let stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let event = serde_json::json!({
        "metadata": {"name": format!("{}.{:x}", pod.name_any(), now.as_nanosecond()), "namespace": ns},
        "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "namespace": ns, "uid": pod.uid()},
        "reason": reason, "type": "Warning", "message": message,
        "source": {"component": "svcnet-agent"},
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    });
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    if let Ok(ev) = serde_json::from_value(event)
        && let Err(e) = events.create(&PostParams::default(), &ev).await
    {
        debug!(pod = %pod.name_any(), reason, error = %e, "could not record the event");
    }
}
