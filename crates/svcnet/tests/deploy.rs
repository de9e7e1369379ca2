//! The manifests of `deploy/` (svcnet proxy and svcnet dns for an existing cluster) are objects a
//! Kubernetes API server takes: `kubectl apply --dry-run=server` of each against svcnet's own API server,
//! which serves the kinds they use (ServiceAccount, ConfigMap, the RBAC kinds, DaemonSet, Deployment,
//! Service), validates them and stores nothing; applied for real they print with kube's columns and
//! warn about what svcnet stores but does not act on.

use std::path::Path;

use svcnet_testsupport::Cluster;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn manifest(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn deploy_manifests_validate_on_a_dry_run_and_apply() {
    // kubeadm's Service range, so that the kube-dns Service of deploy/ keeps the ClusterIP it has; no
    // data plane binds it.
    let c = Cluster::start_with(
        SVCNET,
        &[
            "--proxy-mode",
            "none",
            "--no-dns",
            "--service-cidr",
            "10.96.0.0/12",
        ],
    );
    for file in ["svcnet-proxy.yaml", "svcnet-dns.yaml"] {
        let out = c.ok(&["apply", "--dry-run=server", "-f", &manifest(file)]);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.len() >= 4, "{out}");
        assert!(
            lines.iter().all(|l| l.ends_with("(server dry run)")),
            "{file}:\n{out}"
        );
    }
    // What svcnet's process runner could not give these pods is said, as Pod Security admission warns
    // about a template, without refusing the object.
    let out = c.kubectl_v(
        "",
        &["apply", "--dry-run=server", "-f", &manifest("svcnet-dns.yaml")],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "svcnet's process runner would refuse this template's pods: \
             spec.template.spec.containers[0].securityContext.readOnlyRootFilesystem: Forbidden"
        ),
        "{stderr}"
    );
    assert!(
        c.ok(&[
            "get",
            "ds,sa,cm,clusterrole,clusterrolebinding",
            "-A",
            "-l",
            "app.kubernetes.io/name=svcnet-proxy"
        ])
        .trim()
        .is_empty(),
        "a dry run stores nothing"
    );

    // Applied for real: printed with kube's columns; what svcnet does not act on says so.
    let out = c.kubectl_v("", &["apply", "-f", &manifest("svcnet-proxy.yaml")], None);
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Warning: svcnet runs no DaemonSet controller"),
        "{stderr}"
    );
    // RBAC objects are enforced, so they carry no warning any more.
    assert!(!stderr.contains("RBAC"), "{stderr}");
    let ds = c.ok(&["get", "ds", "-n", "kube-system", "svcnet-proxy"]);
    let mut lines = ds.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "DESIRED",
            "CURRENT",
            "READY",
            "UP-TO-DATE",
            "AVAILABLE",
            "NODE",
            "SELECTOR",
            "AGE"
        ]
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        &row[..7],
        ["svcnet-proxy", "0", "0", "0", "0", "0", "kubernetes.io/os=linux"]
    );
    let crb = c.ok(&["get", "clusterrolebinding", "svcnet-proxy", "-o", "wide"]);
    assert!(
        crb.contains("ClusterRole/svcnet-proxy") && crb.contains("kube-system/svcnet-proxy"),
        "{crb}"
    );
    let cm = c.ok(&["get", "cm", "-n", "kube-system", "svcnet-proxy", "--no-headers"]);
    assert_eq!(cm.split_whitespace().nth(1), Some("1"), "{cm}");
    assert!(
        c.ok(&["get", "sa", "-n", "kube-system", "svcnet-proxy", "--no-headers"])
            .starts_with("svcnet-proxy")
    );
    let role = c.get_json(&["clusterrole", "svcnet-proxy"]);
    assert_eq!(role["rules"].as_array().map(Vec::len), Some(3), "{role}");
    // Defaults as kube sets them.
    let ds = c.get_json(&["ds", "-n", "kube-system", "svcnet-proxy"]);
    assert_eq!(ds["spec"]["revisionHistoryLimit"], 10);
    assert_eq!(ds["metadata"]["generation"], 1);

    // A DaemonSet whose selector does not select its template is refused as kube refuses it.
    let bad = c.kubectl_v(
        "",
        &["apply", "--dry-run=server", "-f", "-"],
        Some(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: bad}\nspec:\n  selector:\n    matchLabels: {a: b}\n  \
             template:\n    metadata:\n      labels: {a: c}\n    spec:\n      containers:\n      - {name: c, image: x}\n",
        ),
    );
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("spec.template.metadata.labels")
            && err.contains("`selector` does not match template `labels`"),
        "{err}"
    );
}
