//! Pods get an identity as on Kubernetes: their ServiceAccount's token, bound to the pod, with the
//! cluster CA and namespace, where in-cluster client configuration finds them
//! (`/var/run/secrets/kubernetes.io/serviceaccount/` in the pod's mount namespace; the host directory is
//! named by `SVCNET_SERVICE_ACCOUNT_DIR`), and `KUBERNETES_SERVICE_HOST/PORT`.
//!
//! A pod runs the official Python client's `load_incluster_config()` and lists Services through the
//! `kubernetes` Service's ClusterIP (the userspace proxy): allowed by its RoleBinding, 403 once the
//! binding is gone; its token, read from the node, is 401 once the pod is deleted.
//! `automountServiceAccountToken: false` gives a pod nothing. Mounting needs root: without it the test
//! says it is skipped.

use std::process::Command;
use std::time::Duration;

use svcnet_testsupport::netns::is_root;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

/// The pod's program: bounded, 400 rounds 0.3 s apart, each loading the in-cluster configuration afresh
/// (so a renewed token is read) and listing the namespace's Services.
const PROGRAM: &str = r#"
import os, time
from kubernetes import client, config
from kubernetes.client.rest import ApiException
print("dir", os.environ.get("SVCNET_SERVICE_ACCOUNT_DIR"), flush=True)
print("server", os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT"), flush=True)
for _ in range(400):
    try:
        config.load_incluster_config()
        items = client.CoreV1Api().list_namespaced_service("team-a").items
        print("ok", len(items), flush=True)
    except ApiException as e:
        print("status", e.status, flush=True)
    except Exception as e:
        print("err", type(e).__name__, str(e)[:300], flush=True)
    time.sleep(0.3)
"#;

fn setup() -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: team-a}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: reader, namespace: team-a}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: list-services, namespace: team-a}}
rules:
- {{apiGroups: [""], resources: [services], verbs: [list]}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: reader, namespace: team-a}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: list-services}}
subjects: [{{kind: ServiceAccount, name: reader}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: reader, namespace: team-a}}
spec:
  serviceAccountName: reader
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: python:3
    command: ["python3", "-c", {PROGRAM:?}]
---
apiVersion: v1
kind: Pod
metadata: {{name: anonymous, namespace: team-a}}
spec:
  serviceAccountName: reader
  automountServiceAccountToken: false
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "test -e /var/run/secrets/kubernetes.io/serviceaccount/token && echo token || echo none; echo env=${{SVCNET_SERVICE_ACCOUNT_DIR:-unset}}; sleep 120"]
"#
    )
}

fn logs(c: &Cluster, pod: &str) -> String {
    let out = c.kubectl_v("", &["logs", "-n", "team-a", pod], None);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_pod_uses_its_service_account_token_in_cluster() {
    if !is_root() {
        eprintln!("SKIP: mounting the token where Kubernetes puts it needs root");
        return;
    }
    if !Command::new("python3")
        .args(["-c", "import kubernetes"])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("SKIP: the `kubernetes` Python package is not installed (scripts/test.sh installs it)");
        return;
    }
    let c = Cluster::start(SVCNET);
    c.ok_v("", &["apply", "-f", "-"], Some(&setup()));

    // In-cluster configuration works: the token, CA and server come from where Kubernetes puts them.
    assert!(
        eventually(Duration::from_secs(60), || logs(&c, "reader")
            .lines()
            .any(|l| l.starts_with("ok "))),
        "{}\n{}",
        logs(&c, "reader"),
        svcnet_testsupport::cluster::tail(&c.log(), 40)
    );
    let log = logs(&c, "reader");
    let dir = log
        .lines()
        .find_map(|l| l.strip_prefix("dir "))
        .filter(|d| *d != "None")
        .unwrap_or_else(|| panic!("no service account directory: {log}"))
        .to_string();
    let kubernetes_ip = c.ok(&[
        "get",
        "service",
        "kubernetes",
        "-n",
        "default",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert!(log.contains(&format!("server {kubernetes_ip} 443")), "{log}");
    let dir = std::path::Path::new(&dir);
    assert_eq!(std::fs::read_to_string(dir.join("namespace")).unwrap(), "team-a");
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        std::fs::read_to_string(c.dir.join("pki/ca.crt")).unwrap()
    );
    let token = std::fs::read_to_string(dir.join("token")).unwrap();
    let bearer = format!("Authorization: Bearer {token}");
    let list = "/api/v1/namespaces/team-a/services";
    assert_eq!(c.curl(&["-H", &bearer], list).0, 200);
    // It is the ServiceAccount's identity, nothing more: other namespaces are forbidden.
    assert_eq!(
        c.curl(&["-H", &bearer], "/api/v1/namespaces/default/services").0,
        403
    );

    // The pod that wants no token gets none (neither file nor variable).
    assert!(
        eventually(Duration::from_secs(30), || logs(&c, "anonymous")
            .contains("env=unset")),
        "{}",
        logs(&c, "anonymous")
    );
    assert!(
        logs(&c, "anonymous").starts_with("none\n"),
        "{}",
        logs(&c, "anonymous")
    );

    // A pod of a ServiceAccount that does not exist waits for it, with the kubelet's event, and starts
    // once it exists.
    let orphan = "apiVersion: v1\nkind: Pod\nmetadata: {name: orphan, namespace: team-a}\nspec:\n  serviceAccountName: later\n  terminationGracePeriodSeconds: 1\n  containers:\n  - {name: main, image: busybox, command: [sh, -c, 'cat \"$SVCNET_SERVICE_ACCOUNT_DIR/namespace\"; echo; sleep 120']}\n";
    c.ok_v("", &["apply", "-f", "-"], Some(orphan));
    let event = "FailedMount";
    assert!(
        eventually(Duration::from_secs(30), || c
            .ok(&[
                "get",
                "events",
                "-n",
                "team-a",
                "--field-selector",
                "involvedObject.name=orphan"
            ])
            .contains(event)),
        "{}",
        c.ok(&["get", "events", "-n", "team-a"])
    );
    let events = c.ok(&[
        "get",
        "events",
        "-n",
        "team-a",
        "--field-selector",
        "involvedObject.name=orphan",
    ]);
    assert!(
        events.contains(r#"failed to fetch token: serviceaccounts "later" not found"#),
        "{events}"
    );
    c.ok(&["create", "serviceaccount", "later", "-n", "team-a"]);
    assert!(
        eventually(Duration::from_secs(60), || logs(&c, "orphan")
            .starts_with("team-a")),
        "{}",
        logs(&c, "orphan")
    );

    // Without its binding the pod is forbidden.
    c.ok(&["delete", "rolebinding", "reader", "-n", "team-a"]);
    assert!(
        eventually(Duration::from_secs(30), || logs(&c, "reader")
            .lines()
            .any(|l| l == "status 403")),
        "{}",
        logs(&c, "reader")
    );
    assert_eq!(c.curl(&["-H", &bearer], list).0, 403);

    // Deleting the pod ends its token.
    c.ok(&["delete", "pod", "reader", "-n", "team-a", "--wait=true"]);
    let (code, body) = c.curl(&["-H", &bearer], list);
    assert_eq!(code, 401, "{body}");
}

/// A pod's own projected ServiceAccount token (kube's "should mount projected service account token"):
/// the volume holds a token for the source's audience and lifetime, bound to the pod, which a
/// TokenReview for that audience accepts and the API server itself (another audience) does not; the
/// API server defaults the lifetime and refuses one under ten minutes, in kube's words.
#[test]
fn projected_service_account_tokens_carry_their_audience() {
    use base64::Engine;
    use serde_json::Value;
    let c = Cluster::start(SVCNET);
    c.ok(&["create", "serviceaccount", "robot"]);
    let pod = r#"
apiVersion: v1
kind: Pod
metadata: {name: vault-client}
spec:
  serviceAccountName: robot
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: [sh, -c, 'echo "token $(cat "$SVCNET_VOLUME_VAULT_TOKEN/vault/token")"; echo "default $(cat "$SVCNET_VOLUME_VAULT_TOKEN/plain")"; sleep 120']
  volumes:
  - name: vault-token
    projected:
      sources:
      - serviceAccountToken: {path: vault/token, audience: vault, expirationSeconds: 7200}
      - serviceAccountToken: {path: plain}
"#;
    c.ok_v("", &["apply", "-f", "-"], Some(pod));
    let logs = || {
        let out = c.kubectl_v("", &["logs", "vault-client"], None);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let token_of = |prefix: &str| {
        logs()
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .filter(|t| t.starts_with("ey"))
            .map(str::to_string)
    };
    assert!(
        eventually(Duration::from_secs(60), || token_of("token ").is_some()),
        "{}\n{}",
        logs(),
        svcnet_testsupport::cluster::tail(&c.log(), 40)
    );
    let (vault, plain) = (token_of("token ").unwrap(), token_of("default ").unwrap());
    let claims = |t: &str| -> Value {
        let part = t.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    let v = claims(&vault);
    assert_eq!(v["aud"], serde_json::json!(["vault"]), "{v}");
    assert_eq!(
        v["exp"].as_i64().unwrap() - v["iat"].as_i64().unwrap(),
        7200,
        "{v}"
    );
    assert_eq!(v["kubernetes.io"]["pod"]["name"], "vault-client", "{v}");
    assert_eq!(v["kubernetes.io"]["serviceaccount"]["name"], "robot", "{v}");
    let p = claims(&plain);
    assert_eq!(
        p["exp"].as_i64().unwrap() - p["iat"].as_i64().unwrap(),
        3600,
        "{p}"
    );
    assert_ne!(p["aud"], serde_json::json!(["vault"]), "{p}");
    let spec = c.get_json(&["pod", "vault-client"]);
    assert_eq!(spec["spec"]["volumes"][0]["projected"]["defaultMode"], 420);
    assert_eq!(
        spec["spec"]["volumes"][0]["projected"]["sources"][1]["serviceAccountToken"]["expirationSeconds"],
        3600
    );

    // The audience decides who accepts it: a TokenReview for `vault` does, the API server does not.
    let review = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "spec": {"token": vault, "audiences": ["vault"]},
    });
    let answer: Value = serde_json::from_str(&c.ok_v(
        "",
        &["create", "-f", "-", "-o", "json"],
        Some(&review.to_string()),
    ))
    .unwrap();
    assert_eq!(answer["status"]["authenticated"], true, "{answer}");
    assert_eq!(
        answer["status"]["user"]["username"],
        "system:serviceaccount:default:robot"
    );
    let kubeconfig = svcnet_testsupport::users::kubeconfig(
        &c,
        "vault",
        svcnet_testsupport::users::Credential::Token(&vault),
    );
    let out = c.kubectl_as(&kubeconfig, &["auth", "whoami"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unauthorized"),
        "{out:?}"
    );

    let short = pod
        .replace("name: vault-client", "name: short")
        .replace("expirationSeconds: 7200", "expirationSeconds: 300");
    let err = c.fail_v("", &["apply", "-f", "-"], Some(&short));
    assert!(
        err.contains("spec.volumes[0].projected.sources[0].serviceAccountToken.expirationSeconds: Invalid value: 300: may not specify a duration less than 10 minutes"),
        "{err}"
    );
}
