//! The workload API through kubectl: Deployments and ReplicaSets (defaults, validation, generation,
//! the scale subresource), Pods (defaults, validation) and pod binding.

use serde_json::json;
use svcnet_testsupport::kubectl::KUBECTLS;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

#[test]
fn deployments_create_scale_and_validate() {
    let c = Cluster::start(SVCNET);
    for v in KUBECTLS {
        let name = format!("red{}", v.replace('.', ""));
        c.ok_v(
            v,
            &[
                "create",
                "deployment",
                &name,
                "--image=python:3",
                "--replicas=2",
                "--port=8080",
                "--",
                "python3",
                "-m",
                "http.server",
                "8080",
            ],
            None,
        );
        let d = c.get_json(&["deploy", &name]);
        assert_eq!(d["spec"]["replicas"], 2);
        assert_eq!(d["metadata"]["generation"], 1);
        assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], name.as_str());
        assert_eq!(d["spec"]["strategy"]["type"], "RollingUpdate");
        assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], "25%");
        let c0 = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c0["command"], json!(["python3", "-m", "http.server", "8080"]));
        assert_eq!(c0["ports"][0]["containerPort"], 8080);
        assert_eq!(c0["ports"][0]["protocol"], "TCP");
        assert_eq!(d["spec"]["template"]["spec"]["restartPolicy"], "Always");
        // kubectl scale goes through the scale subresource; spec changes bump the generation.
        assert!(
            c.ok_v(v, &["scale", "deploy", &name, "--replicas=5"], None)
                .contains("scaled")
        );
        let d = c.get_json(&["deploy", &name]);
        assert_eq!(d["spec"]["replicas"], 5);
        assert_eq!(d["metadata"]["generation"], 2);
        let scale: serde_json::Value = serde_json::from_str(&c.ok(&[
            "get",
            "--raw",
            &format!("/apis/apps/v1/namespaces/default/deployments/{name}/scale"),
        ]))
        .unwrap();
        assert_eq!(scale["kind"], "Scale");
        assert_eq!(scale["spec"]["replicas"], 5);
        assert_eq!(scale["status"]["selector"], format!("app={name}"));
        // A label change is not a spec change.
        c.ok_v(v, &["label", "deploy", &name, "x=y"], None);
        assert_eq!(c.get_json(&["deploy", &name])["metadata"]["generation"], 2);
        let table = c.ok_v(v, &["get", "deploy", &name, "-o", "wide"], None);
        let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "NAME",
                "READY",
                "UP-TO-DATE",
                "AVAILABLE",
                "AGE",
                "CONTAINERS",
                "IMAGES",
                "SELECTOR"
            ]
        );
    }
    // Validation with Kubernetes' messages.
    let bad = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\nspec:\n  selector:\n    matchLabels:\n      app: a\n  template:\n    metadata:\n      labels:\n        app: b\n    spec:\n      containers:\n      - name: c\n";
    let err = c.fail_v("1.33", &["apply", "-f", "-"], Some(bad));
    assert!(err.contains("spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`"), "{err}");
    assert!(
        err.contains("spec.template.spec.containers[0].image: Required value"),
        "{err}"
    );
    let err = c.fail_v("1.33", &["scale", "deploy", "red133", "--replicas=-1"], None);
    assert!(err.contains("replicas"), "{err}");
    // The selector is immutable.
    let err = c.fail_v("1.33", &["patch", "deploy", "red133", "--type=merge", "-p", r#"{"spec":{"selector":{"matchLabels":{"app":"other"}},"template":{"metadata":{"labels":{"app":"other"}}}}}"#], None);
    assert!(err.contains("field is immutable"), "{err}");
}

#[test]
fn pods_default_validate_and_bind() {
    // Control plane only: with no agent there is no Ready node, so the pod stays unscheduled.
    let c = Cluster::start_with(SVCNET, &["--no-agent"]);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p1\n  labels:\n    app: red\nspec:\n  containers:\n  - name: c\n    image: python:3.12\n    command: [python3, -m, http.server]\n";
    c.ok_v("1.33", &["apply", "-f", "-"], Some(pod));
    let p = c.get_json(&["pod", "p1"]);
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(p["spec"]["restartPolicy"], "Always");
    assert_eq!(p["spec"]["dnsPolicy"], "ClusterFirst");
    assert_eq!(p["spec"]["terminationGracePeriodSeconds"], 30);
    assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    let table = c.ok(&["get", "pods"]);
    assert!(table.lines().nth(1).unwrap().contains("Pending"), "{table}");
    // The scheduler says why it cannot place the pod, as kube-scheduler does.
    assert!(eventually(std::time::Duration::from_secs(10), || {
        let p = c.get_json(&["pod", "p1"]);
        p["status"]["conditions"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "PodScheduled" && c["reason"] == "Unschedulable")
        })
    }));
    let events = c.ok(&["get", "events", "--field-selector", "involvedObject.name=p1"]);
    assert!(
        events.contains("FailedScheduling") && events.contains("0/0 nodes are available"),
        "{events}"
    );
    // A Node that never reports Ready: the scheduler leaves it alone, but a binding may name it.
    c.ok_v(
        "1.33",
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n"),
    );
    let err = c.fail_v("1.33", &["run", "nocmd", "--image="], None);
    assert!(!err.is_empty());
    let bad = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p2\nspec:\n  containers: []\n";
    let err = c.fail_v("1.33", &["apply", "-f", "-"], Some(bad));
    assert!(err.contains("spec.containers: Required value"), "{err}");
    // Binding assigns a node once.
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"}, "target": {"kind": "Node", "name": "n1"}});
    std::fs::write(c.dir.join("binding.json"), binding.to_string()).unwrap();
    let status = post_binding(&c);
    assert_eq!(status["status"], "Success", "{status}");
    assert_eq!(c.get_json(&["pod", "p1"])["spec"]["nodeName"], "n1");
    let status = post_binding(&c);
    assert_eq!(status["code"], 409, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("is already assigned to node \"n1\"")
    );
}

/// POSTs `binding.json` to `pods/p1/binding` with curl, as a scheduler would, and returns the Status.
fn post_binding(c: &Cluster) -> serde_json::Value {
    let out = std::process::Command::new("curl")
        .args(["-sk", "-X", "POST", "-H", "Content-Type: application/json"])
        .arg("-H")
        .arg(format!("Authorization: Bearer {}", token(c)))
        .arg("--data-binary")
        .arg(format!("@{}", c.dir.join("binding.json").display()))
        .arg(format!(
            "https://{}/api/v1/namespaces/default/pods/p1/binding",
            c.addr
        ))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn token(c: &Cluster) -> String {
    std::fs::read_to_string(c.dir.join("pki/token"))
        .unwrap()
        .trim()
        .to_string()
}
