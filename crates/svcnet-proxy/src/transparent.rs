//! The kernel side of transparent connects: replies to a connection the proxy made from a pod's address
//! (`IP_TRANSPARENT`, see [`crate::source`]) are addressed to that pod, which this node does not own, so
//! routing would forward them to the pod. The classic transparent-proxy recipe delivers them to the proxy
//! instead: an nftables rule marks packets that belong to a transparent socket of this node (`socket
//! transparent 1`), and a policy rule sends marked packets to a routing table where every address is
//! local.
//!
//! Everything is made in the network namespace the process runs in (the node's), and removed when the
//! [`TransparentRouting`] drops: the table `ip svcnet-transparent`, the rule `fwmark MARK/MARK lookup
//! TABLE` and that table's one route. The mark bit is apart from kube-proxy's (0x4000, 0x8000).

use std::io::Write;
use std::process::{Command, Stdio};

use tracing::{info, warn};

/// The fwmark bit of packets that belong to a transparent socket.
pub const MARK: u32 = 0x0020_0000;
/// The routing table that makes every address local, and the priority of the rule that uses it.
pub const TABLE: u32 = 7117;
/// The nftables table holding the marking rule.
const NFT_TABLE: &str = "svcnet-transparent";

/// Why transparent connects cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransparentError {
    /// A command could not run or failed.
    #[error("transparent connects: `{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Its error output, or why it did not run.
        message: String,
    },
}

/// The marking rule, policy rule and local route of transparent connects; removed on drop.
#[derive(Debug)]
pub struct TransparentRouting {
    _private: (),
}

fn run(args: &[&str], stdin: Option<&str>) -> Result<(), TransparentError> {
    let err = |message: String| TransparentError::Command {
        command: args.join(" "),
        message,
    };
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(e.to_string()))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        input.write_all(text.as_bytes()).map_err(|e| err(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| err(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(err(String::from_utf8_lossy(&out.stderr).trim().to_string()))
    }
}

/// `ip rule del` until no such rule is left (an earlier run may have left one; never more than a few).
fn delete_rules() {
    let (mark, table) = (format!("{MARK:#x}/{MARK:#x}"), TABLE.to_string());
    for _ in 0..8 {
        if run(&["ip", "rule", "del", "fwmark", &mark, "lookup", &table], None).is_err() {
            break;
        }
    }
}

impl TransparentRouting {
    /// Sets it up in this network namespace (root; needs `nft` and iproute2's `ip`). Idempotent: what an
    /// earlier run left is replaced.
    pub fn install() -> Result<TransparentRouting, TransparentError> {
        let ruleset = format!(
            "table ip {NFT_TABLE} {{}}\ndelete table ip {NFT_TABLE}\n\
             table ip {NFT_TABLE} {{\n  chain prerouting {{\n    \
             type filter hook prerouting priority mangle; policy accept;\n    \
             socket transparent 1 meta mark set meta mark or {MARK:#x}\n  }}\n}}\n"
        );
        run(&["nft", "-f", "-"], Some(&ruleset))?;
        let routing = TransparentRouting { _private: () };
        let (mark, table) = (format!("{MARK:#x}/{MARK:#x}"), TABLE.to_string());
        delete_rules();
        run(
            &[
                "ip", "rule", "add", "fwmark", &mark, "lookup", &table, "priority", &table,
            ],
            None,
        )?;
        run(
            &[
                "ip",
                "route",
                "replace",
                "local",
                "0.0.0.0/0",
                "dev",
                "lo",
                "table",
                &table,
            ],
            None,
        )?;
        info!(mark = %format!("{MARK:#x}"), table = TABLE, "transparent connects set up");
        Ok(routing)
    }
}

impl Drop for TransparentRouting {
    fn drop(&mut self) {
        delete_rules();
        let table = TABLE.to_string();
        let _ = run(&["ip", "route", "flush", "table", &table], None);
        if let Err(e) = run(&["nft", "delete", "table", "ip", NFT_TABLE], None) {
            warn!(error = %e, "could not remove the transparent-connect rules");
        }
    }
}
