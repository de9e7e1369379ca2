//! What a lab is, written to `<dir>/lab.json` when it comes up and read by every later `svcnet lab`
//! command: its options, the API server's address, its nodes, and the PIDs of the processes it started.
//! Written beside and renamed, so a reader never sees half a file.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{LabError, io_err};

/// A lab, as its state file holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabState {
    /// The lab's name.
    pub name: String,
    /// Its directory (state file, kubeconfig, logs, each node's data).
    pub dir: PathBuf,
    /// `--proxy-mode` of the nodes.
    pub proxy_mode: String,
    /// `--overlay` of the nodes.
    pub overlay: String,
    /// The API server's address on the host's loopback (and on each node's, through the forwarder).
    pub api: Option<SocketAddr>,
    /// The underlay's namespace.
    pub underlay: String,
    /// The client's namespace.
    pub client: String,
    /// The nodes.
    pub nodes: Vec<NodeState>,
    /// The control plane's PID.
    pub control_plane_pid: Option<u32>,
    /// The API forwarder's PID.
    pub forwarder_pid: Option<u32>,
    /// Extra `svcnet agent` flags every node starts with.
    #[serde(default)]
    pub agent_flags: Vec<String>,
    /// How the nodes join (`svcnet token create --print-join-command`'s), once the control plane runs.
    #[serde(default)]
    pub join: Option<JoinCommand>,
}

/// What a node joins with, as `kubeadm join` does: `svcnet agent --server … --token … --ca-cert-hash …`.
/// The token is deleted once every node of `up` has joined; a node started again later uses the
/// certificate it got then (the token stays on its agent's command line only because the flags say
/// "this node joins", which is what keeps its certificate renewed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JoinCommand {
    /// The API server (`https://127.0.0.1:PORT`: in a node's namespace, the forwarder).
    pub server: String,
    /// The bootstrap token, `ID.SECRET`.
    pub token: String,
    /// The hash of the cluster CA's public key (`sha256:…`).
    pub ca_cert_hash: String,
}

impl JoinCommand {
    /// Reads the command `svcnet token create --print-join-command` prints.
    pub fn parse(printed: &str) -> Option<JoinCommand> {
        let words: Vec<&str> = printed.split_whitespace().collect();
        let flag = |name: &str| {
            let i = words.iter().position(|w| *w == name)?;
            words.get(i + 1).map(|v| v.to_string())
        };
        (words.get(1) == Some(&"agent")).then_some(())?;
        Some(JoinCommand {
            server: flag("--server")?,
            token: flag("--token")?,
            ca_cert_hash: flag("--ca-cert-hash")?,
        })
    }

    /// The token's ID (the Secret is `kube-system/bootstrap-token-<ID>`).
    pub fn token_id(&self) -> &str {
        self.token.split('.').next().unwrap_or_default()
    }

    /// The agent's flags.
    pub fn args(&self) -> [&str; 6] {
        [
            "--server",
            &self.server,
            "--token",
            &self.token,
            "--ca-cert-hash",
            &self.ca_cert_hash,
        ]
    }
}

/// One node of a lab.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeState {
    /// The Node's name.
    pub name: String,
    /// Its underlay address (its InternalIP).
    pub ip: Ipv4Addr,
    /// Its `topology.kubernetes.io/zone`.
    pub zone: String,
    /// Its namespace.
    pub netns: String,
    /// Its port on the underlay bridge.
    pub port: String,
    /// Its agent's PID (that of the `unshare` that holds the node's PID namespace), while it runs.
    pub agent_pid: Option<u32>,
}

impl LabState {
    /// The state file of the lab in `dir`.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("lab.json")
    }

    /// The admin's kubeconfig, for kubectl on the host (never given to a node's agent).
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// Reads the state of the lab `name` in `dir`.
    pub fn load(name: &str, dir: &Path) -> Result<LabState, LabError> {
        let path = Self::file(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LabError::NotFound {
                    name: name.to_string(),
                    path,
                });
            }
            Err(e) => return Err(io_err(format!("reading {}", path.display()))(e)),
        };
        serde_json::from_str(&text).map_err(|source| LabError::State { path, source })
    }

    /// Writes the state file.
    pub fn save(&self) -> Result<(), LabError> {
        let path = Self::file(&self.dir);
        let tmp = self.dir.join(".lab.json.tmp");
        let text = serde_json::to_string_pretty(self).map_err(|source| LabError::State {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&tmp, text).map_err(io_err(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, &path).map_err(io_err(format!("writing {}", path.display())))
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Result<&NodeState, LabError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| self.unknown(name))
    }

    /// The error for a member name the lab does not have.
    pub fn unknown(&self, name: &str) -> LabError {
        let mut known: Vec<&str> = self.nodes.iter().map(|n| n.name.as_str()).collect();
        known.push("client");
        LabError::UnknownNode {
            lab: self.name.clone(),
            node: name.to_string(),
            known: known.join(", "),
        }
    }

    /// The namespace of a node or of `client`.
    pub fn netns_of(&self, member: &str) -> Result<&str, LabError> {
        if member == "client" {
            return Ok(&self.client);
        }
        self.node(member).map(|n| n.netns.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_commands_are_read_as_printed() {
        let j = JoinCommand::parse(
            "svcnet agent --server https://127.0.0.1:6443 --token abcdef.0123456789abcdef --ca-cert-hash sha256:00ff\n",
        )
        .unwrap();
        assert_eq!(j.server, "https://127.0.0.1:6443");
        assert_eq!(j.token_id(), "abcdef");
        assert_eq!(j.ca_cert_hash, "sha256:00ff");
        assert!(JoinCommand::parse("svcnet agent --server https://x --token t").is_none());
        assert!(JoinCommand::parse("abcdef.0123456789abcdef").is_none());
    }
}
