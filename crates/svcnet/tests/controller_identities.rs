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
        ("create", "configmaps", "root-ca-cert-publisher", false),
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

/// Every request the audit log holds (all stages but `RequestReceived`, reads included).
const POLICY_ALL: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
"#;

/// The users of the 2xx `verb` requests of `resource` (with `subresource`, `None` for none) in
/// namespace `ns` (`None`: any) the log holds now: completed ones, or for watches started ones.
fn users_now(
    log: &Path,
    verb: &str,
    resource: &str,
    subresource: Option<&str>,
    ns: Option<&str>,
) -> Vec<String> {
    // A watch is logged when it starts (and when it ends, which the node's do not yet).
    let stage = if verb == "watch" {
        "ResponseStarted"
    } else {
        "ResponseComplete"
    };
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["stage"] == stage && e["verb"] == verb)
        .filter(|e| ns.is_none_or(|ns| e["objectRef"]["namespace"] == ns))
        .filter(|e| e["objectRef"]["resource"] == resource)
        .filter(|e| e["objectRef"]["subresource"].as_str() == subresource)
        .filter(|e| {
            e["responseStatus"]["code"]
                .as_i64()
                .is_some_and(|c| (200..300).contains(&c))
        })
        .map(|e| e["user"]["username"].as_str().unwrap_or("").to_string())
        .collect()
}

/// [`users_now`], waiting up to 30 s until `want` is among them.
fn users_of(
    log: &Path,
    verb: &str,
    resource: &str,
    subresource: Option<&str>,
    ns: Option<&str>,
    want: &str,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let users = users_now(log, verb, resource, subresource, ns);
        if users.iter().any(|u| u == want) || Instant::now() > deadline {
            return users;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The node of `svcnet up` runs as `system:node:<name>` with a certificate of its own in
/// `DIR/node.conf`, as kubeadm's control-plane kubelet: its Node, its Lease, its pods' status, its
/// proxier's and DNS's watches are all the node's (the audit log says so), none the admin's; RBAC and
/// the Node authorizer keep it from creating Services; a restart keeps the certificate.
#[test]
fn the_node_of_up_runs_as_itself() {
    let logs = tempfile::tempdir().unwrap();
    let policy = svcnet_testsupport::cluster::write_file(logs.path(), "policy.yaml", POLICY_ALL);
    let log = logs.path().join("audit.log");
    let mut c = Cluster::start_keeping_pods(
        SVCNET,
        &[
            "--node-name",
            "cp1",
            "--audit-policy-file",
            &policy,
            "--audit-log-path",
            log.to_str().unwrap(),
        ],
    );
    let node = "system:node:cp1";
    // The node's kubeconfig: owner-only, naming the node's certificate; the admin's stays the admin's.
    let conf = c.dir.join("node.conf");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&conf).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", conf.display());
    }
    let out = c.kubectl_v(
        svcnet_testsupport::kubectl::NEWEST,
        &[
            "--kubeconfig",
            conf.to_str().unwrap(),
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username} {.status.userInfo.groups}",
        ],
        None,
    );
    let whoami = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        whoami.starts_with(&format!("{node} ")) && whoami.contains("system:nodes"),
        "{whoami} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = c.kubectl_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
        None,
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "svcnet-admin");

    // A pod on the node, Ready: the agent wrote its status.
    c.ok(&[
        "run",
        "p1",
        "--image",
        "sleep",
        "--labels",
        "app=p1",
        "--command",
        "--",
        "sleep",
        "300",
    ]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.ready_pods("app=p1").is_empty() {
        assert!(Instant::now() < deadline, "p1 not ready\n{}", c.log());
        std::thread::sleep(Duration::from_millis(300));
    }
    // The node's writes: its Node, its Lease, its pod's status.
    for (verb, resource, sub, ns) in [
        ("create", "nodes", None, None),
        ("patch", "nodes", Some("status"), None),
        ("patch", "leases", None, Some("kube-node-lease")),
        ("patch", "pods", Some("status"), Some("default")),
    ] {
        let users = users_of(&log, verb, resource, sub, ns, node);
        assert!(
            users.iter().any(|u| u == node),
            "{verb} {resource}/{sub:?} by {node}: {users:?}"
        );
        assert!(
            !users.iter().any(|u| u == "svcnet-admin"),
            "the admin's credential did {verb} {resource}/{sub:?}: {users:?}"
        );
    }
    // Its readers: the proxier (the userspace proxy process) and DNS watch Services and
    // EndpointSlices as the node; the admin watches nothing (the test's kubectl never does).
    for resource in ["services", "endpointslices"] {
        let users = users_of(&log, "watch", resource, None, None, node);
        assert!(users.iter().any(|u| u == node), "watch {resource}: {users:?}");
    }
    let admin_watches = users_now(&log, "watch", "pods", None, None);
    assert!(
        !admin_watches.iter().any(|u| u == "svcnet-admin"),
        "{admin_watches:?}"
    );

    // Only what a node may do.
    let as_node = |args: &[&str]| {
        let mut all = vec!["auth", "can-i", "--as", node, "--as-group", "system:nodes"];
        all.extend_from_slice(args);
        let out = c.kubectl_v(svcnet_testsupport::kubectl::NEWEST, &all, None);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(as_node(&["create", "services"]), "no");
    // (with the Node authorizer's reason after the "no")
    assert!(as_node(&["delete", "nodes/other"]).starts_with("no"));
    assert!(as_node(&["get", "secrets", "-n", "kube-system"]).starts_with("no"));
    assert_eq!(as_node(&["list", "endpointslices", "-A"]), "yes");
    let out = c.kubectl_v(
        svcnet_testsupport::kubectl::NEWEST,
        &[
            "--kubeconfig",
            conf.to_str().unwrap(),
            "create",
            "service",
            "clusterip",
            "x",
            "--tcp",
            "80",
        ],
        None,
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "User \"{node}\" cannot create resource \"services\" in API group \"\" in the namespace \"default\""
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A restart keeps the node's certificate (still valid and far from its renewal) and the pod.
    let cert = c.dir.join("pki/kubelet-client-current.pem");
    let before = std::fs::read_to_string(&cert).unwrap();
    let renewals = || {
        users_now(&log, "patch", "leases", None, Some("kube-node-lease"))
            .iter()
            .filter(|u| *u == node)
            .count()
    };
    c.set_keep_pods(false);
    c.restart("TERM");
    let renewed = renewals();
    assert_eq!(std::fs::read_to_string(&cert).unwrap(), before);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The restarted node renews its Lease as itself, and has adopted its pod.
        if renewals() > renewed && !c.ready_pods("app=p1").is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "{}", c.log());
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// (not before, not after) of the first certificate in a PEM file.
fn cert_validity(pem: &str) -> (i64, i64) {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let cert = block.parse_x509().unwrap();
    (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    )
}

/// The node of `svcnet up` renews its certificate before it expires, as a joined node does: a CSR
/// sent as the node, approved as `selfnodeclient`, and every node part keeps working on the new one
/// after the first has expired (its Lease is renewed, a new pod gets its status written).
#[test]
fn the_node_of_up_renews_its_certificate() {
    let c = Cluster::start_with(
        SVCNET,
        &["--node-name", "cp2", "--cluster-signing-duration", "30s"],
    );
    let pem_path = c.dir.join("pki/kubelet-client-current.pem");
    let (not_before, first_expiry) = cert_validity(&std::fs::read_to_string(&pem_path).unwrap());
    assert!(
        first_expiry - not_before <= 40,
        "the first certificate is bounded by --cluster-signing-duration: {not_before}..{first_expiry}"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let csrs = c.get_json(&["csr"]);
        let renewed = csrs["items"].as_array().into_iter().flatten().any(|x| {
            x["spec"]["username"] == "system:node:cp2"
                && x["status"]["certificate"].is_string()
                && x["status"]["conditions"][0]["message"]
                    == "Auto approving self kubelet client certificate after SubjectAccessReview."
        });
        let replaced = std::fs::read_to_string(&pem_path).is_ok_and(|p| cert_validity(&p).1 > first_expiry);
        if renewed && replaced {
            break;
        }
        assert!(Instant::now() < deadline, "no renewal: {csrs}\n{}", c.log());
        std::thread::sleep(Duration::from_millis(500));
    }
    let now = || jiff::Timestamp::now().as_second();
    while now() < first_expiry + 3 {
        std::thread::sleep(Duration::from_millis(500));
    }
    c.ok(&[
        "run",
        "late",
        "--image",
        "sleep",
        "--labels",
        "app=late",
        "--command",
        "--",
        "sleep",
        "300",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.ready_pods("app=late").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no status for a pod after the first certificate expired\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    while now() < first_expiry + 12 {
        std::thread::sleep(Duration::from_millis(500));
    }
    let renewed = c.node_lease_renewed("cp2");
    assert!(
        renewed > first_expiry,
        "the Lease was last renewed at {renewed}, before the first certificate expired at {first_expiry}\n{}",
        c.log()
    );
}

/// With no node part to run (`--no-agent --proxy-mode none`) `up` mints no node credential: nothing
/// would use it, and a credential nobody needs is one more to leak. With a data plane but no agent the
/// proxier still needs it.
#[test]
fn up_without_node_parts_has_no_node_credential() {
    let c = Cluster::start_with(SVCNET, &["--no-agent", "--proxy-mode", "none"]);
    c.ok(&["get", "services"]);
    assert!(!c.dir.join("node.conf").exists(), "{}", c.log());
    assert!(!c.dir.join("pki/kubelet-client-current.pem").exists());
    drop(c);
    let c = Cluster::start_with(SVCNET, &["--no-agent"]);
    c.ok(&["get", "services"]);
    assert!(c.dir.join("node.conf").exists(), "{}", c.log());
}
