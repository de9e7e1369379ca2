//! Bodies without `kind`/`apiVersion`, as kube-apiserver takes them: create and update default them
//! from the URL, server-side apply does not. Driven by the official Python client (`kubernetes` on
//! PyPI, installed by `scripts/test.sh`), by kubectl's raw verbs and by kube-rs.

use std::process::Command;

use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use svcnet_testsupport::Cluster;
use svcnet_testsupport::cluster::write_file;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

/// Whether `python3` can import the official client; says why not when it cannot.
fn python_client() -> bool {
    match Command::new("python3").args(["-c", "import kubernetes"]).output() {
        Err(e) => {
            eprintln!("SKIP: python3 is not available ({e}); scripts/test.sh installs it");
            false
        }
        Ok(out) => {
            assert!(
                out.status.success(),
                "python3 is here but the `kubernetes` package is not (scripts/test.sh runs `pip install kubernetes`): {}",
                String::from_utf8_lossy(&out.stderr)
            );
            true
        }
    }
}

#[test]
fn python_client_objects_without_kind() {
    if !python_client() {
        return;
    }
    let c = Cluster::start(SVCNET);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/objects_without_kind.py"
    );
    let out = Command::new("python3")
        .arg(script)
        .arg(c.kubeconfig())
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("python client: ok"),
        "python client script failed:\nstdout:\n{stdout}\nstderr:\n{}\nserver log tail:\n{}",
        String::from_utf8_lossy(&out.stderr),
        svcnet_testsupport::cluster::tail(&c.log(), 20)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bodies_without_kind_create_update_and_apply() {
    let c = Cluster::start(SVCNET);
    // kubectl's raw create and replace send the file as it is: no kind, no apiVersion.
    let body =
        json!({"metadata": {"name": "raw"}, "spec": {"ports": [{"port": 80}], "selector": {"app": "raw"}}});
    let file = write_file(&c.dir, "raw.json", &body.to_string());
    let created: serde_json::Value = serde_json::from_str(&c.ok(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/services",
        "-f",
        &file,
    ]))
    .unwrap();
    assert_eq!(
        (&created["kind"], &created["apiVersion"]),
        (&json!("Service"), &json!("v1"))
    );
    let mut put = created.clone();
    put.as_object_mut().unwrap().remove("kind");
    put.as_object_mut().unwrap().remove("apiVersion");
    put["spec"]["ports"][0]["targetPort"] = json!(8080);
    let file = write_file(&c.dir, "put.json", &put.to_string());
    let replaced: serde_json::Value = serde_json::from_str(&c.ok(&[
        "replace",
        "--raw",
        "/api/v1/namespaces/default/services/raw",
        "-f",
        &file,
    ]))
    .unwrap();
    assert_eq!(replaced["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(replaced["kind"], "Service");

    // Another kind on the endpoint: kube-apiserver's decoder cannot convert it.
    let file = write_file(
        &c.dir,
        "pod.json",
        r#"{"kind": "Pod", "metadata": {"name": "p"}}"#,
    );
    let err = c.fail_v(
        svcnet_testsupport::kubectl::NEWEST,
        &[
            "create",
            "--raw",
            "/api/v1/namespaces/default/services",
            "-f",
            &file,
        ],
        None,
    );
    assert!(
        err.contains(r#"Error from server (BadRequest): Pod in version "v1" cannot be handled as a Service: converting (v1.Pod) to (core.Service): unknown conversion"#),
        "{err}"
    );

    // Server-side apply is not defaulted: kube's field manager refuses a patch without apiVersion.
    let api: Api<Service> = Api::namespaced(c.client().await, "default");
    let pp = PatchParams::apply("test");
    let err = api
        .patch(
            "raw",
            &pp,
            &Patch::Apply(json!({"kind": "Service", "metadata": {"name": "raw"}})),
        )
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 400);
            assert_eq!(
                s.message,
                "Incorrect version specified in apply patch. Specified patch version: , expected: v1"
            );
        }
        other => panic!("{other:?}"),
    }
    let applied = api
        .patch(
            "raw",
            &pp,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "raw", "labels": {"applied": "yes"}}})),
        )
        .await
        .unwrap();
    assert_eq!(applied.metadata.labels.unwrap()["applied"], "yes");
}

/// Port-forward as client libraries speak it (the kubelet's channel protocol over WebSocket, not
/// kubectl's SPDY): the Python client forwards two ports in one session, one served and one where
/// nothing listens; the first carries an HTTP exchange, the second reports the kubelet's error.
#[test]
fn python_client_port_forward() {
    if !python_client() {
        return;
    }
    let c = Cluster::start(SVCNET);
    let port = svcnet_testsupport::net::free_port("127.0.0.1");
    let closed = svcnet_testsupport::net::free_port("127.0.0.1");
    let site = c.dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("hello.txt"), "hello through the python client\n").unwrap();
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: python:3\n    workingDir: {}\n    command: [sh, -c, \"exec python3 -m http.server {port} --bind $POD_IP\"]\n    readinessProbe:\n      tcpSocket: {{port: {port}}}\n      periodSeconds: 1\n",
        site.display()
    );
    c.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["apply", "-f", "-"],
        Some(&yaml),
    );
    assert!(
        svcnet_testsupport::eventually(std::time::Duration::from_secs(60), || c.get_json(&["pod", "web"])
            ["status"]["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|x| x["type"] == "Ready" && x["status"] == "True"))),
        "the web pod never became ready"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/port_forward.py");
    let out = Command::new("timeout")
        .args(["60", "python3", script])
        .arg(c.kubeconfig())
        .args(["default", "web", &port.to_string(), &closed.to_string()])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let why = format!(
        "stdout:\n{stdout}\nstderr:\n{}\nserver log tail:\n{}",
        String::from_utf8_lossy(&out.stderr),
        svcnet_testsupport::cluster::tail(&c.log(), 20)
    );
    assert!(
        out.status.success() && stdout.contains("python port-forward: done"),
        "{why}"
    );
    assert!(
        stdout.contains("answer: HTTP/1.0 200 OK | hello through the python client"),
        "{why}"
    );
    assert!(stdout.contains("error on the open port: None"), "{why}");
    assert!(
        stdout.contains(&format!(
            "error on the closed port: error forwarding port {closed} to pod default/web"
        )) && stdout.contains("connection refused"),
        "{why}"
    );
}
