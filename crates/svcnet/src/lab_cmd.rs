//! `svcnet lab`: the command line of [`svcnet_lab`], a multi-node cluster on one machine built from
//! network namespaces (root only).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use svcnet_lab::lab::{self, DEFAULT_ROOT};
use svcnet_lab::{Lab, LabConfig, Overlay};

/// `svcnet lab …`.
#[derive(Parser)]
pub struct LabArgs {
    #[command(subcommand)]
    command: LabCommand,
}

/// Flags every lab command shares.
#[derive(Parser, Clone)]
struct Which {
    /// The lab's name (its namespaces are `svl-NAME-…`).
    #[arg(long, default_value = "svcnet")]
    name: String,
    /// The directory labs live in (state, kubeconfig, logs, node data).
    #[arg(long, env = "SVCNET_LAB_ROOT", default_value = DEFAULT_ROOT)]
    root: PathBuf,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Create a lab: an underlay bridge, one namespace per node running `svcnet agent`, a `client`
    /// namespace, and the control plane on the host's 127.0.0.1. Returns once every node is Ready.
    Up(UpArgs),
    /// Remove a lab: its processes, namespaces and directory.
    Down(Which),
    /// Show a lab's nodes and processes.
    Status(Which),
    /// Run a command inside a node or the client (`svcnet lab exec node1 -- ip route`).
    Exec {
        #[command(flatten)]
        which: Which,
        /// A node's name or `client`.
        member: String,
        /// The command and its arguments.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Simulate a node dying: its agent and pods are killed and its underlay link goes down.
    StopNode {
        #[command(flatten)]
        which: Which,
        /// The node.
        node: String,
    },
    /// Bring a stopped node back: link up, agent started; returns once it is Ready.
    StartNode {
        #[command(flatten)]
        which: Which,
        /// The node.
        node: String,
        /// How long to wait for the node to be Ready (seconds).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Restart a node's agent alone, as an upgrade or a crash of a kubelet does: its pods, data plane and
    /// routes stay; returns once the new agent runs and the node is Ready.
    RestartAgent {
        #[command(flatten)]
        which: Which,
        /// The node.
        node: String,
        /// `TERM` (a graceful stop, the default) or `KILL` (a crash).
        #[arg(long, default_value = "TERM", value_parser = ["TERM", "KILL"])]
        signal: String,
        /// How long to wait for the node to be Ready again (seconds).
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// (internal) The init of a node's PID namespace: runs and restarts the node's agent.
    #[command(hide = true)]
    NodeInit {
        /// The agent's command line.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// (internal) The API forwarder of a lab: listeners in the nodes' namespaces relaying to the host.
    #[command(hide = true)]
    Forward {
        /// The lab's directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

#[derive(Parser)]
struct UpArgs {
    #[command(flatten)]
    which: Which,
    /// How many nodes.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// The nodes' data plane: `userspace` or `nftables`.
    #[arg(long, default_value = "userspace")]
    proxy_mode: String,
    /// How pods reach pods on other nodes: `host-gw` or `vxlan`.
    #[arg(long, default_value = "host-gw")]
    overlay: String,
    /// How long to wait for the control plane and every node (seconds).
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Extra flag for the control plane's `svcnet up` (repeatable), e.g. `--control-plane-flag=--node-monitor-grace-period=4`.
    #[arg(long = "control-plane-flag", allow_hyphen_values = true)]
    control_plane_flags: Vec<String>,
    /// Extra flag for every node's `svcnet agent` (repeatable), e.g. `--agent-flag=--node-lease-duration-seconds=4`.
    #[arg(long = "agent-flag", allow_hyphen_values = true)]
    agent_flags: Vec<String>,
}

fn svcnet_binary() -> Result<PathBuf> {
    std::env::current_exe().context("finding the svcnet binary")
}

fn need_root() -> Result<()> {
    if !nix_is_root() {
        bail!("svcnet lab needs root (it creates network namespaces)");
    }
    Ok(())
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs `svcnet lab …`; returns the exit code (`exec` passes its command's on).
pub fn run(args: LabArgs) -> Result<i32> {
    match args.command {
        LabCommand::Up(up) => {
            need_root()?;
            let overlay: Overlay = up.overlay.parse()?;
            let cfg = LabConfig {
                name: up.which.name.clone(),
                nodes: up.nodes,
                proxy_mode: up.proxy_mode,
                overlay,
                root: up.which.root.clone(),
                svcnet: svcnet_binary()?,
                control_plane_flags: up.control_plane_flags,
                agent_flags: up.agent_flags,
                timeout: Duration::from_secs(up.timeout.max(1)),
            };
            let started = std::time::Instant::now();
            let lab = Lab::up(&cfg)?;
            let s = &lab.state;
            let name = &s.name;
            let flag = if name == "svcnet" {
                String::new()
            } else {
                format!(" --name {name}")
            };
            println!(
                "lab {name} is up in {:.1} s: {} nodes ({}, {}), API https://{}",
                started.elapsed().as_secs_f64(),
                s.nodes.len(),
                s.proxy_mode,
                s.overlay,
                lab.api()?
            );
            println!("  export KUBECONFIG={}", s.kubeconfig().display());
            println!("  kubectl get nodes -o wide");
            println!(
                "  svcnet lab exec{flag} client -- curl http://{}:NODEPORT/",
                s.nodes[0].ip
            );
            println!(
                "  kubectl expose deployment NAME --type=LoadBalancer --port 80   # EXTERNAL-IP from {}, announced by ARP",
                svcnet_lab::topology::LB_POOL
            );
            println!("  svcnet lab stop-node{flag} {}", s.nodes[s.nodes.len() - 1].name);
            println!("  svcnet lab down{flag}");
            Ok(0)
        }
        LabCommand::Down(which) => {
            need_root()?;
            if lab::down(&which.root, &which.name)? {
                println!("lab {} removed", which.name);
            } else {
                println!("no lab {} here", which.name);
            }
            Ok(0)
        }
        LabCommand::Status(which) => {
            let lab = Lab::open(&which.root, &which.name, svcnet_binary()?)?;
            println!("{}", lab.status());
            Ok(0)
        }
        LabCommand::Exec {
            which,
            member,
            command,
        } => {
            need_root()?;
            let lab = Lab::open(&which.root, &which.name, svcnet_binary()?)?;
            let status = lab
                .exec_command(&member, &command)?
                .status()
                .with_context(|| format!("running {command:?} in {member}"))?;
            // A command killed by a signal exits as a shell reports it: 128 + the signal.
            use std::os::unix::process::ExitStatusExt;
            Ok(status
                .code()
                .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
        }
        LabCommand::StopNode { which, node } => {
            need_root()?;
            let mut lab = Lab::open(&which.root, &which.name, svcnet_binary()?)?;
            lab.stop_node(&node)?;
            println!("node {node} stopped (agent and pods killed, link down)");
            Ok(0)
        }
        LabCommand::StartNode { which, node, timeout } => {
            need_root()?;
            let mut lab = Lab::open(&which.root, &which.name, svcnet_binary()?)?;
            lab.start_node(&node, Duration::from_secs(timeout.max(1)))?;
            println!("node {node} is Ready");
            Ok(0)
        }
        LabCommand::RestartAgent {
            which,
            node,
            signal,
            timeout,
        } => {
            need_root()?;
            let lab = Lab::open(&which.root, &which.name, svcnet_binary()?)?;
            let signal = if signal == "KILL" {
                nix::sys::signal::Signal::SIGKILL
            } else {
                nix::sys::signal::Signal::SIGTERM
            };
            lab.restart_agent(&node, signal, Duration::from_secs(timeout.max(1)))?;
            println!("the agent of {node} restarted; the node is Ready");
            Ok(0)
        }
        LabCommand::NodeInit { command } => Ok(svcnet_lab::init::run(&command)?),
        LabCommand::Forward { dir } => {
            let dir = dir.canonicalize().context("the lab's directory")?;
            let name = dir
                .file_name()
                .and_then(|n| n.to_str())
                .context("the lab's directory has no name")?
                .to_string();
            let root = dir.parent().context("the lab's directory has no parent")?;
            let lab = Lab::open(root, &name, svcnet_binary()?)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            rt.block_on(svcnet_lab::forward::run(
                lab.forwarded_namespaces(),
                lab.api()?,
                lab.egress(),
            ))?;
            Ok(0)
        }
    }
}
