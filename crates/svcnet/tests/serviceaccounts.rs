//! The service-account controller, as kube-controller-manager's: every namespace has a `default`
//! ServiceAccount, new namespaces get one, and a deleted one comes back.

use std::time::Duration;

use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(20);

fn default_sa_uid(c: &Cluster, ns: &str) -> Option<String> {
    let out = c.kubectl_v(
        "",
        &["get", "sa", "default", "-n", ns, "-o", "jsonpath={.metadata.uid}"],
        None,
    );
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !uid.is_empty()).then_some(uid)
}

#[test]
fn every_namespace_has_a_default_service_account() {
    let c = Cluster::start_with(SVCNET, &["--proxy-mode", "none", "--no-dns"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(
            eventually(WAIT, || default_sa_uid(&c, ns).is_some()),
            "{ns}: {}",
            c.ok(&["get", "sa", "-A"])
        );
    }
    c.ok(&["create", "namespace", "team-a"]);
    assert!(eventually(WAIT, || default_sa_uid(&c, "team-a").is_some()));
    let first = default_sa_uid(&c, "team-a").unwrap();
    c.ok(&["delete", "sa", "default", "-n", "team-a"]);
    assert!(
        eventually(WAIT, || default_sa_uid(&c, "team-a").is_some_and(|u| u != first)),
        "a deleted default ServiceAccount comes back"
    );
    let row = c.ok(&["get", "sa", "default", "-n", "team-a", "--no-headers"]);
    assert_eq!(
        row.split_whitespace().take(2).collect::<Vec<_>>(),
        ["default", "0"]
    );
}
