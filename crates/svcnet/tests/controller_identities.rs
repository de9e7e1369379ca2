//! Every controller of `svcnet up` runs as its own identity, as kube-controller-manager with
//! `--use-service-account-credentials` (real binary, real kubectl, the audit log): the writes a
//! user's Service, Endpoints and Deployment lead to are logged under the ServiceAccount of the
//! controller that made them, never the admin's; RBAC gives each one kube's role and nothing more
//! (`kubectl auth can-i --as`); the controllers' tokens are the API server's own ServiceAccount tokens.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use svcnet_testsupport::Cluster;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

/// Every write at Metadata level, reads not at all.
const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  verbs: [get, list, watch]
- level: Metadata
"#;

fn sa(name: &str) -> String {
    format!("system:serviceaccount:kube-system:{name}")
}

/// The users of the `verb` requests of `resource` (e.g. `endpointslices`) in namespace `ns` that got
/// a 2xx, waiting up to 20 s until `want` is among them.
fn writers(log: &Path, verb: &str, resource: &str, ns: &str, want: &str) -> Vec<String> {
    writers_within(log, verb, resource, ns, want, Duration::from_secs(20))
}

/// [`writers`], waiting up to `wait`.
fn writers_within(
    log: &Path,
    verb: &str,
    resource: &str,
    ns: &str,
    want: &str,
    wait: Duration,
) -> Vec<String> {
    let deadline = Instant::now() + wait;
    loop {
        let users: Vec<String> = std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["stage"] == "ResponseComplete" && e["verb"] == verb)
            .filter(|e| e["objectRef"]["namespace"] == ns)
            .filter(|e| e["objectRef"]["resource"] == resource && e["objectRef"]["subresource"].is_null())
            .filter(|e| {
                e["responseStatus"]["code"]
                    .as_i64()
                    .is_some_and(|c| (200..300).contains(&c))
            })
            .map(|e| e["user"]["username"].as_str().unwrap_or("").to_string())
            .collect();
        if users.iter().any(|u| u == want) || Instant::now() > deadline {
            return users;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn can_i(c: &Cluster, user: &str, args: &[&str]) -> String {
    let mut all = vec!["auth", "can-i", "--as", user];
    all.extend_from_slice(args);
    let out = c.kubectl_v(svcnet_testsupport::kubectl::NEWEST, &all, None);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn controllers_write_as_their_service_accounts() {
    let logs = tempfile::tempdir().unwrap();
    let policy = svcnet_testsupport::cluster::write_file(logs.path(), "policy.yaml", POLICY);
    let log = logs.path().join("audit.log");
    let c = Cluster::start_with(
        SVCNET,
        &[
            "--control-plane-only",
            "--audit-policy-file",
            &policy,
            "--audit-log-path",
            log.to_str().unwrap(),
        ],
    );
    c.ok(&["create", "namespace", "team-a"]);
    c.ok(&["create", "namespace", "team-b"]);
    // A selector Service: the EndpointSlice and Endpoints controllers write for it.
    c.ok(&[
        "-n",
        "team-a",
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp",
        "80:8080",
    ]);
    // A Service without a selector and its Endpoints: the mirroring controller writes a slice.
    c.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["apply", "-f", "-"],
        Some(
            r#"
apiVersion: v1
kind: Service
metadata: {name: external, namespace: team-a}
spec: {ports: [{port: 80}]}
---
apiVersion: v1
kind: Endpoints
metadata: {name: external, namespace: team-a}
subsets: [{addresses: [{ip: 10.1.2.3}], ports: [{port: 80}]}]
"#,
        ),
    );
    // A Deployment: its controller makes a ReplicaSet, whose controller makes the pod.
    c.ok(&[
        "-n",
        "team-a",
        "create",
        "deployment",
        "app",
        "--image",
        "sleep",
        "--",
        "sleep",
        "60",
    ]);

    // (user_made: whether the test itself also made objects of the kind: the Endpoints.)
    for (verb, resource, who, user_made) in [
        ("create", "endpointslices", "endpointslice-controller", false),
        (
            "create",
            "endpointslices",
            "endpointslicemirroring-controller",
            false,
        ),
        ("create", "endpoints", "endpoint-controller", true),
        ("create", "replicasets", "deployment-controller", false),
        ("create", "pods", "replicaset-controller", false),
        ("create", "serviceaccounts", "service-account-controller", false),
    ] {
        let users = writers(&log, verb, resource, "team-a", &sa(who));
        assert!(
            users.contains(&sa(who)),
            "{verb} {resource} in team-a by {}: got {users:?}",
            sa(who)
        );
        assert!(
            user_made || !users.iter().any(|u| u == "svcnet-admin"),
            "the admin's credential wrote {resource}: {users:?}"
        );
    }
    // The user's own writes are the admin's, as sent.
    assert!(
        writers(&log, "create", "services", "team-a", "svcnet-admin").contains(&"svcnet-admin".to_string())
    );
    // Leader election is off on the embedded store; the controller manager made the ServiceAccounts.
    let users = writers(
        &log,
        "create",
        "serviceaccounts",
        "kube-system",
        "system:kube-controller-manager",
    );
    assert!(
        users.iter().any(|u| u == "system:kube-controller-manager"),
        "{users:?}"
    );

    // RBAC: kube's roles, nothing more.
    let es = sa("endpointslice-controller");
    assert_eq!(can_i(&c, &es, &["create", "services", "-n", "team-a"]), "no");
    assert_eq!(
        can_i(&c, &es, &["create", "endpointslices", "-n", "team-a"]),
        "yes"
    );
    assert_eq!(can_i(&c, &es, &["patch", "endpointslices", "-n", "team-a"]), "no");
    assert_eq!(can_i(&c, &es, &["create", "endpoints", "-n", "team-a"]), "no");
    assert_eq!(
        can_i(
            &c,
            &sa("endpoint-controller"),
            &["update", "endpoints", "-n", "team-a"]
        ),
        "yes"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("endpoint-controller"),
            &["create", "endpointslices", "-n", "team-a"]
        ),
        "no"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("replicaset-controller"),
            &["create", "pods", "-n", "team-a"]
        ),
        "yes"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("replicaset-controller"),
            &["create", "deployments", "-n", "team-a"]
        ),
        "no"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("deployment-controller"),
            &["create", "pods", "-n", "team-a"]
        ),
        "no"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("node-controller"),
            &["get", "secrets", "-n", "kube-system"]
        ),
        "no"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("node-controller"),
            &["update", "endpointslices", "-n", "kube-system"]
        ),
        "yes"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("node-controller"),
            &["update", "endpointslices", "-n", "team-a"]
        ),
        "no"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("service-account-controller"),
            &["delete", "serviceaccounts", "-n", "team-a"]
        ),
        "no"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("svcnet-lb-ipam-controller"),
            &["update", "services", "--subresource", "status", "-n", "team-a"]
        ),
        "yes"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("svcnet-lb-ipam-controller"),
            &["update", "services", "-n", "team-a"]
        ),
        "no"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("certificate-controller"),
            &[
                "update",
                "certificatesigningrequests",
                "--subresource",
                "approval"
            ]
        ),
        "yes"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("certificate-controller"),
            &["create", "certificatesigningrequests"]
        ),
        "no"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("bootstrap-signer"),
            &["update", "configmaps/cluster-info", "-n", "kube-public"]
        ),
        "yes"
    );
    assert_eq!(
        can_i(
            &c,
            &sa("bootstrap-signer"),
            &["update", "configmaps/other", "-n", "kube-public"]
        ),
        "no"
    );
    assert_eq!(
        can_i(
            &c,
            "system:kube-scheduler",
            &["create", "pods", "--subresource", "binding", "-n", "team-a"]
        ),
        "yes"
    );
    assert_eq!(
        can_i(&c, "system:kube-scheduler", &["create", "pods", "-n", "team-a"]),
        "no"
    );
    let kcm = "system:kube-controller-manager";
    assert_eq!(can_i(&c, kcm, &["watch", "secrets", "-A"]), "yes");
    assert_eq!(can_i(&c, kcm, &["create", "services", "-n", "team-a"]), "no");
    assert_eq!(
        can_i(
            &c,
            kcm,
            &[
                "update",
                "leases/svcnet-endpointslice-controller",
                "-n",
                "kube-system"
            ]
        ),
        "yes"
    );
    assert_eq!(
        can_i(&c, kcm, &["update", "leases/other", "-n", "kube-system"]),
        "no"
    );

    // The tokens are ServiceAccount tokens of the API server's (kubectl presents one as it is).
    let token = std::fs::read_to_string(c.dir.join("controllers/endpointslice-controller.token")).unwrap();
    let out = c.kubectl_v(
        svcnet_testsupport::kubectl::NEWEST,
        &[
            "--token",
            token.trim(),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        es,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.kubectl_v(
        svcnet_testsupport::kubectl::NEWEST,
        &[
            "--token",
            token.trim(),
            "-n",
            "team-a",
            "create",
            "service",
            "clusterip",
            "x",
            "--tcp",
            "80",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "User \"{es}\" cannot create resource \"services\" in API group \"\" in the namespace \"team-a\""
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Deleting a controller's ServiceAccount revokes its token; the controller manager makes both again
    // and the controller writes again once its client re-reads the token file (within a minute).
    let first_uid =
        c.get_json(&["sa", "-n", "kube-system", "endpointslice-controller"])["metadata"]["uid"].clone();
    c.ok(&["-n", "kube-system", "delete", "sa", "endpointslice-controller"]);
    let out = c.kubectl_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["--token", token.trim(), "auth", "whoami"],
        None,
    );
    assert!(
        !out.status.success(),
        "the deleted ServiceAccount's token still works"
    );
    c.ok(&[
        "-n",
        "team-b",
        "create",
        "service",
        "clusterip",
        "later",
        "--tcp",
        "80",
    ]);
    let users = writers_within(
        &log,
        "create",
        "endpointslices",
        "team-b",
        &es,
        Duration::from_secs(120),
    );
    assert!(users.contains(&es), "{users:?}\n{}", c.log());
    let uid = c.get_json(&["sa", "-n", "kube-system", "endpointslice-controller"])["metadata"]["uid"].clone();
    assert_ne!(uid, first_uid);
}

/// On etcd, with leader election: the controller manager campaigns as itself (the election Leases are
/// written by `system:kube-controller-manager`, which may touch only those), and the elected
/// controllers still write as their ServiceAccounts.
#[test]
fn leader_election_runs_as_the_controller_manager() {
    let etcd = svcnet_testsupport::etcd::Etcd::start();
    let logs = tempfile::tempdir().unwrap();
    let policy = svcnet_testsupport::cluster::write_file(logs.path(), "policy.yaml", POLICY);
    let log = logs.path().join("audit.log");
    let url = etcd.url();
    let c = Cluster::start_with(
        SVCNET,
        &[
            "--control-plane-only",
            "--etcd-servers",
            &url,
            "--audit-policy-file",
            &policy,
            "--audit-log-path",
            log.to_str().unwrap(),
        ],
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.lease_holder("svcnet-endpointslice-controller").is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(!c.lease_holder("svcnet-endpointslice-controller").is_empty());
    let kcm = "system:kube-controller-manager";
    let users = writers(&log, "update", "leases", "kube-system", kcm);
    assert!(users.iter().any(|u| u == kcm), "{users:?}");
    assert!(users.iter().all(|u| u == kcm), "{users:?}");
    c.ok(&["create", "namespace", "team-a"]);
    c.ok(&[
        "-n",
        "team-a",
        "create",
        "service",
        "clusterip",
        "web",
        "--tcp",
        "80",
    ]);
    let slices = writers(
        &log,
        "create",
        "endpointslices",
        "team-a",
        &sa("endpointslice-controller"),
    );
    assert!(slices.contains(&sa("endpointslice-controller")), "{slices:?}");
}
