//! Pod readiness gates end to end: the node agent keeps a pod with `spec.readinessGates` Ready=False
//! (the kubelet's reason and messages) until another writer sets every gate's condition True through
//! `pods/status` (`kubectl patch --subresource=status`), never overwrites that condition, and the pod
//! moves in and out of its Service's ready endpoints as the gate flips.

use std::time::Duration;

use serde_json::Value;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(40);
const GATE: &str = "k8s.io/blue-green";

fn condition(pod: &Value, type_: &str) -> Option<Value> {
    pod["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
        .cloned()
}

/// The `ready` condition of the pod's endpoint in the Service's slices, if it has one.
fn endpoint_ready(c: &Cluster) -> Option<bool> {
    let slices = c.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=gated"]);
    slices["items"]
        .as_array()?
        .iter()
        .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
        .find(|e| e["targetRef"]["name"] == "gated")
        .and_then(|e| e["conditions"]["ready"].as_bool())
}

fn set_gate(c: &Cluster, status: &str) {
    let patch = format!(r#"{{"status":{{"conditions":[{{"type":"{GATE}","status":"{status}"}}]}}}}"#);
    c.ok(&["patch", "pod", "gated", "--subresource=status", "-p", &patch]);
}

/// Waits until the pod's Ready condition is `status` (with `reason`/`message`) and its endpoint's
/// `ready` is `endpoint`; returns the pod.
fn wait_ready(
    c: &Cluster,
    status: &str,
    reason: Option<&str>,
    message: Option<&str>,
    endpoint: bool,
) -> Value {
    let mut pod = Value::Null;
    let mut ep = None;
    let ok = eventually(WAIT, || {
        pod = c.get_json(&["pod", "gated"]);
        ep = endpoint_ready(c);
        let Some(r) = condition(&pod, "Ready") else {
            return false;
        };
        r["status"] == status
            && r["reason"].as_str() == reason
            && r["message"].as_str() == message
            && ep == Some(endpoint)
    });
    assert!(
        ok,
        "want Ready={status} ({reason:?}: {message:?}), endpoint ready {endpoint}; got endpoint {ep:?}, pod status:\n{:#}\nlog:\n{}",
        pod["status"],
        svcnet_testsupport::cluster::tail(&c.log(), 30)
    );
    pod
}

#[test]
fn readiness_gate_moves_the_pod_in_and_out_of_endpoints() {
    let c = Cluster::start(SVCNET);
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some(&format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: gated\nspec:\n  selector: {{app: gated}}\n  ports: [{{port: 80, targetPort: 8080}}]\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata:\n  name: gated\n  labels: {{app: gated}}\nspec:\n  terminationGracePeriodSeconds: 1\n  readinessGates:\n  - conditionType: {GATE}\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, \"300\"]\n"
        )),
    );

    // Containers ready, the gate's condition absent: not Ready, not a ready endpoint.
    let pod = wait_ready(
        &c,
        "False",
        Some("ReadinessGatesNotReady"),
        Some(&format!(
            "corresponding condition of pod readiness gate \"{GATE}\" does not exist."
        )),
        false,
    );
    assert_eq!(condition(&pod, "ContainersReady").unwrap()["status"], "True");
    let wide = c.ok(&["get", "pod", "gated", "-o", "wide"]);
    assert!(wide.contains("0/1"), "{wide}");

    // The gate opens: Ready, a ready endpoint; the agent keeps the other writer's condition.
    set_gate(&c, "True");
    wait_ready(&c, "True", None, None, true);
    std::thread::sleep(Duration::from_secs(2));
    let pod = c.get_json(&["pod", "gated"]);
    assert_eq!(
        condition(&pod, GATE).map(|g| g["status"].clone()),
        Some("True".into()),
        "{:#}",
        pod["status"]
    );
    assert_eq!(condition(&pod, "Ready").unwrap()["status"], "True");
    let wide = c.ok(&["get", "pod", "gated", "-o", "wide"]);
    assert!(wide.contains("1/1"), "{wide}");

    // The gate closes again: out of the ready endpoints.
    set_gate(&c, "False");
    wait_ready(
        &c,
        "False",
        Some("ReadinessGatesNotReady"),
        Some(&format!(
            "the status of pod readiness gate \"{GATE}\" is not \"True\", but False"
        )),
        false,
    );
}
