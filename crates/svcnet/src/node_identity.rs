//! Who the node of `svcnet up` is to the API server: not the admin, but `system:node:<name>` (group
//! `system:nodes`), as `kubeadm init` gives the control-plane machine's kubelet a client certificate of
//! its own in `/etc/kubernetes/kubelet.conf`.
//!
//! `up` keeps that certificate in `DIR/pki/kubelet-client-current.pem` and a kubeconfig naming it in
//! `DIR/node.conf` ([`crate::join::NodeFiles::control_plane`]); every node part it runs (the agent, the
//! proxier and the node's userspace proxy process, cluster DNS and its publisher, the pod network, the
//! LoadBalancer announcer) is a client of that kubeconfig, so the Node authorizer, NodeRestriction and
//! RBAC judge them exactly as a joined node's parts ([`crate::join`]). The admin's `DIR/kubeconfig`
//! stays the user's.
//!
//! A certificate from an earlier start is kept while it is this node's (its name, this CA's signature)
//! and before its renewal time (80 % of its lifetime, [`crate::join::renewal_at`]); otherwise `up` signs
//! a new one with the CA key, as kubeadm does at `init`. While `up` runs, [`crate::join::rotate`] renews
//! it through a CertificateSigningRequest sent as the node itself, as a joined node's is.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use svcnet_apiserver::pki::{self, Credentials};
use tracing::info;

use crate::join::{self, NodeFiles};

/// The group every node's certificate names (kube's `system:nodes`).
const NODES_GROUP: &str = "system:nodes";

/// The user a node named `node` is.
pub fn node_user(node: &str) -> String {
    format!("system:node:{node}")
}

/// Makes sure the node `node` of `up` has its credential: the certificate kept if it is still good (see
/// the module), else a new one valid for `lifetime`; `DIR/node.conf` is written each time, naming
/// `server` (an `https://` URL) and the cluster CA.
pub fn ensure(
    data_dir: &Path,
    node: &str,
    server: &str,
    creds: &Credentials,
    lifetime: Duration,
) -> Result<NodeFiles> {
    let files = NodeFiles::control_plane(data_dir);
    let user = node_user(node);
    let now = jiff::Timestamp::now().as_second();
    let kept = std::fs::read_to_string(&files.cert)
        .ok()
        .filter(|pem| reusable(pem, &creds.ca_pem, &user, now));
    let (cert_pem, key_pem) = match kept {
        Some(pem) => {
            info!(user = %user, cert = %files.cert.display(), "the node keeps its certificate");
            crate::reloading::split_pem(&pem)
        }
        None => {
            let made = pki::client_certificate(data_dir, &user, &[NODES_GROUP], Some(lifetime))?;
            info!(user = %user, lifetime_s = lifetime.as_secs(), cert = %files.cert.display(), "made the node's certificate");
            made
        }
    };
    join::write_credentials(&files, server, &creds.ca_pem, &cert_pem, &key_pem)?;
    Ok(files)
}

/// Whether the certificate at the head of `pem` can stay this node's: issued to `user` in
/// `system:nodes`, signed by the CA `ca_pem`, valid now and not yet due for renewal.
fn reusable(pem: &str, ca_pem: &str, user: &str, now: i64) -> bool {
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
        return false;
    };
    let Ok(cert) = block.parse_x509() else {
        return false;
    };
    let Ok((_, ca_block)) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()) else {
        return false;
    };
    let Ok(ca) = ca_block.parse_x509() else {
        return false;
    };
    let subject = cert.subject();
    let cn = subject.iter_common_name().next().and_then(|a| a.as_str().ok());
    let in_nodes = subject
        .iter_organization()
        .any(|o| o.as_str().ok() == Some(NODES_GROUP));
    let (not_before, not_after) = (
        cert.validity().not_before.timestamp(),
        cert.validity().not_after.timestamp(),
    );
    cn == Some(user)
        && in_nodes
        && cert.verify_signature(Some(ca.public_key())).is_ok()
        && not_before <= now
        && now < join::renewal_at(not_before, not_after)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA in a fresh directory, as `up` keeps it.
    fn ca() -> (tempfile::TempDir, Credentials) {
        let dir = tempfile::tempdir().unwrap();
        let creds = pki::load_or_create(dir.path(), &[]).unwrap();
        (dir, creds)
    }

    #[test]
    fn a_fresh_certificate_of_this_node_and_ca_is_kept() {
        let (dir, creds) = ca();
        let life = Duration::from_secs(1000);
        let (cert, key) =
            pki::client_certificate(dir.path(), "system:node:n1", &[NODES_GROUP], Some(life)).unwrap();
        let pem = format!("{cert}{key}");
        let now = jiff::Timestamp::now().as_second();
        assert!(reusable(&pem, &creds.ca_pem, "system:node:n1", now));
        // Another node's name (the node was renamed), or past 80 % of its lifetime: made anew.
        assert!(!reusable(&pem, &creds.ca_pem, "system:node:n2", now));
        assert!(!reusable(&pem, &creds.ca_pem, "system:node:n1", now + 900));
        let (c, k) = crate::reloading::split_pem(&pem);
        assert_eq!((c.trim(), k.trim()), (cert.trim(), key.trim()));
        // Signed by another CA (the data directory got a new one): made anew.
        let (_other, other) = ca();
        assert!(!reusable(&pem, &other.ca_pem, "system:node:n1", now));
        // Not in system:nodes: not a node's credential.
        let (plain, key) = pki::client_certificate(dir.path(), "system:node:n1", &[], Some(life)).unwrap();
        assert!(!reusable(
            &format!("{plain}{key}"),
            &creds.ca_pem,
            "system:node:n1",
            now
        ));
        assert!(!reusable("garbage", &creds.ca_pem, "system:node:n1", now));
    }
}
