//! Pod traffic leaving the cluster's pod range is masqueraded to the node's address, so pods reach the
//! node's network (which has no route back to pod blocks); pod-to-pod traffic never is, so a receiver
//! sees the sender's pod IP (the Kubernetes network model). One nftables table of its own,
//! `ip svcnet-podnet`, replaced whole in one `nft -f` transaction at start (the rule does not change
//! while the agent runs; routes, which do, go over netlink).

use std::io::Write;
use std::process::{Command, Stdio};

use ipnet::IpNet;

use crate::PodNetError;

/// The nftables table.
pub const TABLE: &str = "svcnet-podnet";

/// The ruleset for the cluster's IPv4 pod ranges (none: an empty table).
pub fn ruleset(cluster_cidrs: &[IpNet]) -> String {
    let v4: Vec<String> = cluster_cidrs
        .iter()
        .filter(|c| matches!(c, IpNet::V4(_)))
        .map(|c| c.trunc().to_string())
        .collect();
    let mut rules = String::new();
    if !v4.is_empty() {
        let set = format!("{{ {} }}", v4.join(", "));
        rules = format!("\t\tip saddr {set} ip daddr != {set} masquerade\n");
    }
    // Declaring the table first makes the delete succeed when it does not exist yet.
    format!(
        "table ip {TABLE} {{}}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n\tchain postrouting {{\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n{rules}\t}}\n}}\n"
    )
}

/// Installs [`ruleset`] in this network namespace.
pub fn apply(cluster_cidrs: &[IpNet]) -> Result<(), PodNetError> {
    let text = ruleset(cluster_cidrs);
    let fail = |stderr: String| PodNetError::Nft { stderr };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("running nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masquerades_only_what_leaves_the_pod_range() {
        let text = ruleset(&["10.244.0.0/16".parse().unwrap(), "fd00::/64".parse().unwrap()]);
        assert!(
            text.contains("ip saddr { 10.244.0.0/16 } ip daddr != { 10.244.0.0/16 } masquerade"),
            "{text}"
        );
        assert!(!text.contains("fd00"));
        assert!(!ruleset(&[]).contains("masquerade"));
    }
}
