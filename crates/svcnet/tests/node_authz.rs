//! The Node authorizer and NodeRestriction admission through real kubectl with a node's own client
//! certificate (`CN=system:node:node1, O=system:nodes`, signed by the cluster CA): what a kubelet needs is
//! allowed (read services, nodes, pods; the secret its pod uses; its own Node, Lease, pods' status; a
//! token for its pod's ServiceAccount; CSRs), everything else gets kube's Forbidden word for word
//! (another node's objects, other pods' secrets and status, creating Services or ordinary pods).

use std::path::Path;

use svcnet_testsupport::Cluster;
use svcnet_testsupport::users::{self, Credential};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const SETUP: &str = r#"
apiVersion: v1
kind: Node
metadata: {name: node1}
---
apiVersion: v1
kind: Node
metadata: {name: node2}
---
apiVersion: v1
kind: Namespace
metadata: {name: kube-node-lease}
---
apiVersion: coordination.k8s.io/v1
kind: Lease
metadata: {name: node2, namespace: kube-node-lease}
spec: {holderIdentity: node2}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: robot, namespace: default}
---
apiVersion: v1
kind: Secret
metadata: {name: mine-secret, namespace: default}
stringData: {a: "1"}
---
apiVersion: v1
kind: Secret
metadata: {name: theirs-secret, namespace: default}
stringData: {a: "1"}
---
apiVersion: v1
kind: Pod
metadata: {name: mine, namespace: default}
spec:
  nodeName: node1
  serviceAccountName: robot
  containers:
  - name: main
    image: busybox
    envFrom: [{secretRef: {name: mine-secret}}]
---
apiVersion: v1
kind: Pod
metadata: {name: theirs, namespace: default}
spec:
  nodeName: node2
  containers:
  - name: main
    image: busybox
    envFrom: [{secretRef: {name: theirs-secret}}]
"#;

fn run(c: &Cluster, kc: &Path, args: &[&str]) -> (bool, String) {
    let out = c.kubectl_as(kc, args);
    let text = if out.status.success() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    (out.status.success(), text.trim().to_string())
}

#[track_caller]
fn allowed(c: &Cluster, kc: &Path, args: &[&str]) -> String {
    let (ok, text) = run(c, kc, args);
    assert!(ok, "kubectl {args:?} as node1: {text}");
    text
}

#[track_caller]
fn forbidden(c: &Cluster, kc: &Path, args: &[&str], message: &str) {
    refused(c, kc, args, &format!("Error from server (Forbidden): {message}"));
}

/// kubectl fails with exactly `output` on stderr.
#[track_caller]
fn refused(c: &Cluster, kc: &Path, args: &[&str], output: &str) {
    let (ok, text) = run(c, kc, args);
    assert!(!ok, "kubectl {args:?} as node1 succeeded: {text}");
    assert_eq!(text, output, "kubectl {args:?}");
}

/// `kubectl auth can-i ARGS` as node1: its answer line (`yes`, `no`, or `no - REASON`).
fn can_i(c: &Cluster, kc: &Path, args: &[&str]) -> String {
    let mut a = vec!["auth", "can-i"];
    a.extend_from_slice(args);
    let out = c.kubectl_as(kc, &a);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A merge PATCH to `path` with node1's certificate, as a kubelet sends it: (status, body).
fn patch_as_node(c: &Cluster, cert: &users::ClientCert, path: &str, body: &str) -> (u16, String) {
    let cert_file = c.dir.join("node1.crt");
    let key_file = c.dir.join("node1.key");
    std::fs::write(&cert_file, &cert.cert_pem).unwrap();
    std::fs::write(&key_file, &cert.key_pem).unwrap();
    c.curl(
        &[
            "--cert",
            cert_file.to_str().unwrap(),
            "--key",
            key_file.to_str().unwrap(),
            "-X",
            "PATCH",
            "-H",
            "Content-Type: application/merge-patch+json",
            "--data",
            body,
        ],
        path,
    )
}

#[test]
fn a_node_may_touch_only_what_its_pods_need() {
    let c = Cluster::start_with(SVCNET, &["--proxy-mode", "none", "--no-dns", "--no-agent"]);
    c.ok_v("", &["apply", "-f", "-"], Some(SETUP));
    let cert = users::cluster_cert(&c, "system:node:node1", &["system:nodes"]);
    let kc = users::kubeconfig(&c, "node1", Credential::Cert(&cert));
    let kc = kc.as_path();
    let mine_uid = c.ok(&["get", "pod", "mine", "-o", "jsonpath={.metadata.uid}"]);

    // What a kubelet reads.
    allowed(&c, kc, &["get", "services", "-A"]);
    allowed(&c, kc, &["get", "nodes"]);
    allowed(&c, kc, &["get", "pods", "-A"]);
    assert_eq!(
        allowed(
            &c,
            kc,
            &["get", "secret", "mine-secret", "-o", "jsonpath={.data.a}"]
        ),
        "MQ=="
    );
    // A kubelet asks for its certificate's renewal itself.
    assert_eq!(can_i(&c, kc, &["create", "certificatesigningrequests"]), "yes");
    // A kubelet watches one secret by name.
    assert_eq!(
        allowed(
            &c,
            kc,
            &[
                "get",
                "secrets",
                "--field-selector=metadata.name=mine-secret",
                "-o",
                "name"
            ]
        ),
        "secret/mine-secret"
    );
    forbidden(
        &c,
        kc,
        &["get", "secrets", "--field-selector=metadata.name=theirs-secret"],
        r#"secrets "theirs-secret" is forbidden: User "system:node:node1" cannot list resource "secrets" in API group "" in the namespace "default": no relationship found between node 'node1' and this object"#,
    );
    assert_eq!(can_i(&c, kc, &["get", "secrets/mine-secret"]), "yes");
    assert_eq!(
        can_i(&c, kc, &["get", "secrets/theirs-secret"]),
        "no - no relationship found between node 'node1' and this object"
    );
    assert_eq!(can_i(&c, kc, &["create", "services"]), "no");

    // What a kubelet writes: its Node, its Lease, its pods' status, a token for its pod.
    allowed(
        &c,
        kc,
        &["label", "node", "node1", "kubernetes.io/hostname=node1", "team=a"],
    );
    // kubectl reads nodes/status before patching it, which kube's node rules do not allow; a kubelet
    // patches directly.
    forbidden(
        &c,
        kc,
        &[
            "patch",
            "node",
            "node1",
            "--subresource=status",
            "--type=merge",
            "-p",
            "{}",
        ],
        r#"nodes "node1" is forbidden: User "system:node:node1" cannot get resource "nodes/status" in API group "" at the cluster scope"#,
    );
    let (code, body) = patch_as_node(
        &c,
        &cert,
        "/api/v1/nodes/node1/status",
        r#"{"status":{"capacity":{"pods":"10"}}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let lease = c.dir.join("lease-node1.yaml");
    std::fs::write(
        &lease,
        "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {name: node1, namespace: kube-node-lease}\nspec: {holderIdentity: node1}\n",
    )
    .unwrap();
    allowed(&c, kc, &["create", "-f", lease.to_str().unwrap()]);
    allowed(
        &c,
        kc,
        &["annotate", "lease", "node1", "-n", "kube-node-lease", "a=b"],
    );
    let (code, body) = patch_as_node(
        &c,
        &cert,
        "/api/v1/namespaces/default/pods/mine/status",
        r#"{"status":{"message":"from node1"}}"#,
    );
    assert_eq!(code, 200, "{body}");
    let token = allowed(
        &c,
        kc,
        &[
            "create",
            "token",
            "robot",
            "--bound-object-kind=Pod",
            "--bound-object-name=mine",
            &format!("--bound-object-uid={mine_uid}"),
        ],
    );
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");

    // Denied by the Node authorizer (and RBAC), with its reasons.
    forbidden(
        &c,
        kc,
        &["get", "secret", "theirs-secret"],
        r#"secrets "theirs-secret" is forbidden: User "system:node:node1" cannot get resource "secrets" in API group "" in the namespace "default": no relationship found between node 'node1' and this object"#,
    );
    forbidden(
        &c,
        kc,
        &["get", "secrets"],
        r#"secrets is forbidden: User "system:node:node1" cannot list resource "secrets" in API group "" in the namespace "default": No Object name found"#,
    );
    refused(
        &c,
        kc,
        &["create", "service", "clusterip", "x", "--tcp=80"],
        r#"error: failed to create ClusterIP service: services is forbidden: User "system:node:node1" cannot create resource "services" in API group "" in the namespace "default""#,
    );
    forbidden(
        &c,
        kc,
        &["annotate", "lease", "node2", "-n", "kube-node-lease", "a=b"],
        r#"leases.coordination.k8s.io "node2" is forbidden: User "system:node:node1" cannot get resource "leases" in API group "coordination.k8s.io" in the namespace "kube-node-lease": can only access node lease with the same name as the requesting node"#,
    );
    forbidden(
        &c,
        kc,
        &["delete", "node", "node2"],
        r#"nodes "node2" is forbidden: User "system:node:node1" cannot delete resource "nodes" in API group "" at the cluster scope"#,
    );

    // Denied by NodeRestriction.
    forbidden(
        &c,
        kc,
        &["label", "node", "node2", "team=a"],
        r#"nodes "node2" is forbidden: node "node1" is not allowed to modify node "node2""#,
    );
    forbidden(
        &c,
        kc,
        &[
            "label",
            "node",
            "node1",
            "node-restriction.kubernetes.io/pci=true",
        ],
        r#"nodes "node1" is forbidden: is not allowed to modify labels: node-restriction.kubernetes.io/pci"#,
    );
    forbidden(
        &c,
        kc,
        &["taint", "node", "node1", "k=v:NoSchedule"],
        r#"nodes "node1" is forbidden: node "node1" is not allowed to modify taints"#,
    );
    let (code, body) = patch_as_node(
        &c,
        &cert,
        "/api/v1/namespaces/default/pods/theirs/status",
        r#"{"status":{"message":"from node1"}}"#,
    );
    assert_eq!(code, 403, "{body}");
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["message"],
        r#"pods "theirs" is forbidden: node "node1" can only update pod status for pods with spec.nodeName set to itself"#
    );
    forbidden(
        &c,
        kc,
        &["delete", "pod", "theirs", "--wait=false"],
        r#"pods "Unknown" is forbidden: node "node1" can only delete pods with spec.nodeName set to itself"#,
    );
    forbidden(
        &c,
        kc,
        &[
            "run",
            "sneaky",
            "--image=busybox",
            "--overrides",
            r#"{"spec":{"nodeName":"node1"}}"#,
        ],
        r#"pods "sneaky" is forbidden: pod does not have "kubernetes.io/config.mirror" annotation, node "node1" can only create mirror pods"#,
    );
    refused(
        &c,
        kc,
        &[
            "create",
            "token",
            "default",
            "--bound-object-kind=Pod",
            "--bound-object-name=theirs",
            "--bound-object-uid=x",
        ],
        r#"error: failed to create token: serviceaccounts "default" is forbidden: User "system:node:node1" cannot create resource "serviceaccounts/token" in API group "" in the namespace "default": no relationship found between node 'node1' and this object"#,
    );
    let theirs_uid = c.ok(&["get", "pod", "theirs", "-o", "jsonpath={.metadata.uid}"]);
    refused(
        &c,
        kc,
        &[
            "create",
            "token",
            "robot",
            "--bound-object-kind=Pod",
            "--bound-object-name=theirs",
            &format!("--bound-object-uid={theirs_uid}"),
        ],
        r#"error: failed to create token: serviceaccounts "Unknown" is forbidden: node requested token bound to a pod scheduled on a different node"#,
    );

    // Nothing denied was written.
    let node2 = c.get_json(&["node", "node2"]);
    assert!(node2.pointer("/metadata/labels/team").is_none(), "{node2}");
    assert!(
        c.get_json(&["pod", "theirs"])
            .pointer("/status/message")
            .is_none()
    );
    assert_eq!(c.ok(&["get", "pod", "theirs", "-o", "name"]).trim(), "pod/theirs");
    // The admin is not a node: NodeRestriction leaves it alone.
    c.ok(&[
        "label",
        "node",
        "node2",
        "node-restriction.kubernetes.io/pci=true",
    ]);
}
