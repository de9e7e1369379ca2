//! `svcnet lab`: a whole multi-node cluster on one machine, built from network namespaces (root only), as
//! kind builds one from containers.
//!
//! A lab named `N` is:
//! - an underlay network: the bridge `br0` in a namespace of its own (`svl-N-underlay`), one port per node
//!   and one for the client, addresses from [`topology::UNDERLAY`] that exist only inside the lab;
//! - one namespace per node (`svl-N-node1`, …) running `svcnet agent --pod-network netns` with a zone label,
//!   inside a PID namespace of its own (`unshare --pid --kill-child`) whose init ([`init`]) supervises the
//!   agent: an agent restart (`restart-agent`) leaves the pods running as on a real node, while killing the
//!   namespace (`stop-node`) kills them as a machine dying does, and the node's pod network namespaces go
//!   with its mount namespace;
//! - `svl-N-client`, a machine outside the cluster on the underlay;
//! - the control plane (`svcnet up --no-agent --proxy-mode none`) in the machine's own namespace on
//!   127.0.0.1, so kubectl on the host uses the kubeconfig the lab writes;
//! - the API forwarder ([`forward`]): a listener on 127.0.0.1 *inside each node's namespace*, on the API
//!   server's port, relaying to the host's 127.0.0.1. Nodes and host reach one address with one server
//!   certificate, and the root namespace gets no route, link, rule or address: all it ever sees is loopback.
//! - the nodes' credentials: each agent joins as a kubeadm worker does, with a bootstrap token the lab
//!   makes (`svcnet token create --print-join-command`) and deletes once every node is Ready, and works
//!   as `system:node:<name>` with the certificate it got, kept in its data directory; the admin's
//!   kubeconfig (`<dir>/kubeconfig`, for kubectl on the host) is never given to a node.
//!
//! The processes are detached from the `svcnet lab up` that starts them; what a lab is lives in its state
//! directory ([`state`]), which `down`, `status`, `exec`, `stop-node`/`start-node` and `restart-agent`
//! read. Every process the lab signals is checked first to be the lab's own (its command line names the lab's directory), and every
//! namespace it deletes carries the lab's prefix.

pub mod forward;
pub mod init;
pub mod lab;
pub mod procs;
pub mod state;
pub mod topology;

use std::path::PathBuf;

pub use lab::{Lab, LabConfig, Overlay};

/// Errors of the lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The lab's name cannot name namespaces and links.
    #[error("invalid lab name {0:?}: use 1 to 20 lowercase letters, digits and '-', starting with a letter")]
    BadName(String),
    /// A bad option value.
    #[error("{0}")]
    BadOption(String),
    /// No lab of that name.
    #[error("no lab named {name:?} (no {path})")]
    NotFound {
        /// The lab's name.
        name: String,
        /// Its state file.
        path: PathBuf,
    },
    /// No node (or client) of that name in the lab.
    #[error("lab {lab:?} has no node {node:?} (it has: {known})")]
    UnknownNode {
        /// The lab.
        lab: String,
        /// The name asked for.
        node: String,
        /// The names it has.
        known: String,
    },
    /// A command failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it said.
        stderr: String,
    },
    /// A file or system call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        source: std::io::Error,
    },
    /// Something did not happen in time.
    #[error("{what} not within {secs} s{detail}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long.
        secs: u64,
        /// More context (a log's tail), starting with a newline when present.
        detail: String,
    },
    /// The API server refused or failed a request.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// The kubeconfig the control plane wrote could not be used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(String),
    /// The state file is not readable.
    #[error("state file {path}: {source}")]
    State {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
}

/// An [`LabError::Io`] maker for `map_err`.
pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}
