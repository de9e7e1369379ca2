//! The lab's life: `up` (clean leftovers of the same name, make the namespaces, start the control plane,
//! the API forwarder and one agent per node, wait until every node is Ready), `down`, `stop_node` /
//! `start_node`, `status` and `exec`. See the crate's documentation for the picture.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Secret};
use kube::api::Api;
use nix::sys::signal::Signal;
use tracing::info;

use crate::state::{JoinCommand, LabState, NodeState};
use crate::topology::{self, Member};
use crate::{LabError, forward, io_err, procs};

/// The pod range of every lab (flannel's), cut into one /24 per node.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The Service range of every lab.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The zone label the nodes carry.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
/// Where labs live unless told otherwise (tmpfs: a reboot clears it along with the namespaces).
pub const DEFAULT_ROOT: &str = "/run/svcnet-lab";

/// How pods on different nodes reach each other (`--overlay`): the agents' own setting, one home.
pub use svcnet_podnet::Overlay;

/// What `lab up` makes.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// The lab's name (namespaces are `svl-<name>-…`).
    pub name: String,
    /// How many nodes.
    pub nodes: usize,
    /// The nodes' `--proxy-mode`: `userspace` or `nftables`.
    pub proxy_mode: String,
    /// How pods reach pods on other nodes.
    pub overlay: Overlay,
    /// The directory labs live in; this one's is `<root>/<name>`.
    pub root: PathBuf,
    /// The `svcnet` binary the lab runs (the control plane, the forwarder, the agents).
    pub svcnet: PathBuf,
    /// Extra `svcnet up` flags for the control plane (e.g. `--node-monitor-grace-period 4`).
    pub control_plane_flags: Vec<String>,
    /// Extra `svcnet agent` flags for every node (e.g. `--node-lease-duration-seconds 4`).
    pub agent_flags: Vec<String>,
    /// How long `up` waits for the control plane and for every node to be Ready.
    pub timeout: Duration,
}

/// A lab that exists (its state file was read or just written).
#[derive(Debug, Clone)]
pub struct Lab {
    /// What the lab is.
    pub state: LabState,
    svcnet: PathBuf,
}

/// The directory of lab `name` under `root`.
pub fn dir_of(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

fn check_name(name: &str) -> Result<(), LabError> {
    if topology::valid_name(name) {
        Ok(())
    } else {
        Err(LabError::BadName(name.to_string()))
    }
}

/// The last `n` lines of a log file, as an error's detail; when the process ended with an error and a
/// backtrace longer than that, the error's own lines come first (the backtrace alone says nothing).
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    let error = lines[..from]
        .iter()
        .rposition(|l| l.starts_with("Error:"))
        .map(|at| {
            let end = lines[at..from]
                .iter()
                .position(|l| l.trim().is_empty() || l.starts_with("Stack backtrace:"))
                .map_or(from, |i| at + i);
            format!("{}\n…\n", lines[at..end.min(at + 10)].join("\n"))
        })
        .unwrap_or_default();
    let tail = lines[from..].join("\n");
    format!("\n{} (last lines):\n{error}{tail}", path.display())
}

/// Polls `f` every 20 ms until it gives a value or `timeout` passes.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Lab {
    /// Reads the lab `name` under `root`.
    pub fn open(root: &Path, name: &str, svcnet: PathBuf) -> Result<Lab, LabError> {
        check_name(name)?;
        let state = LabState::load(name, &dir_of(root, name))?;
        Ok(Lab { state, svcnet })
    }

    /// Brings a lab up and returns once every node is Ready. Leftovers of a lab of the same name (a
    /// crash, a machine that kept namespaces) are removed first. On failure, whatever was started is
    /// stopped and removed again; the logs stay in the lab's directory.
    pub fn up(cfg: &LabConfig) -> Result<Lab, LabError> {
        check_name(&cfg.name)?;
        if cfg.nodes == 0 || cfg.nodes > topology::MAX_NODES {
            return Err(LabError::BadOption(format!(
                "--nodes {}: a lab has 1 to {} nodes",
                cfg.nodes,
                topology::MAX_NODES
            )));
        }
        if !matches!(cfg.proxy_mode.as_str(), "userspace" | "nftables") {
            return Err(LabError::BadOption(format!(
                "unknown proxy mode {:?}: use userspace or nftables",
                cfg.proxy_mode
            )));
        }
        let dir = dir_of(&cfg.root, &cfg.name);
        let cleaned = down(&cfg.root, &cfg.name)?;
        if cleaned {
            info!(lab = %cfg.name, "removed the leftovers of an earlier lab of the same name");
        }
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        // Absolute, so every process's command line names it the same way (see `procs::owned`).
        let dir = dir
            .canonicalize()
            .map_err(io_err(format!("resolving {}", dir.display())))?;
        let nodes: Vec<NodeState> = (1..=cfg.nodes)
            .map(|i| {
                let name = topology::node_name(i);
                NodeState {
                    netns: topology::netns(&cfg.name, &name),
                    port: name.clone(),
                    ip: topology::node_ip(i),
                    zone: topology::zone(i),
                    name,
                    agent_pid: None,
                }
            })
            .collect();
        let mut lab = Lab {
            state: LabState {
                name: cfg.name.clone(),
                dir,
                proxy_mode: cfg.proxy_mode.clone(),
                overlay: cfg.overlay.to_string(),
                api: None,
                underlay: topology::netns(&cfg.name, "underlay"),
                client: topology::netns(&cfg.name, "client"),
                nodes,
                control_plane_pid: None,
                forwarder_pid: None,
                agent_flags: cfg.agent_flags.clone(),
                join: None,
            },
            svcnet: cfg.svcnet.clone(),
        };
        // Saved before anything is made: a failure half-way leaves a lab that `down` can remove.
        lab.state.save()?;
        match lab.bring_up(cfg) {
            Ok(()) => Ok(lab),
            Err(e) => {
                let _ = lab.teardown(false);
                Err(e)
            }
        }
    }

    fn bring_up(&mut self, cfg: &LabConfig) -> Result<(), LabError> {
        let start = Instant::now();
        let mut members: Vec<Member> = self
            .state
            .nodes
            .iter()
            .map(|n| Member {
                netns: n.netns.clone(),
                port: n.port.clone(),
                ip: n.ip,
            })
            .collect();
        members.push(Member {
            netns: self.state.client.clone(),
            port: "client".into(),
            ip: topology::CLIENT_IP,
        });
        topology::create(&self.state.underlay, &members)?;
        info!(elapsed = ?start.elapsed(), "lab namespaces made");

        self.start_control_plane(cfg)?;
        info!(elapsed = ?start.elapsed(), api = ?self.state.api, "control plane up");
        self.state.save()?;
        self.start_forwarder(cfg.timeout)?;
        self.state.save()?;
        self.state.join = Some(self.create_join_token()?);
        self.state.save()?;
        for i in 0..self.state.nodes.len() {
            let pid = self.spawn_agent(i)?;
            self.state.nodes[i].agent_pid = Some(pid);
        }
        self.state.save()?;
        let names: Vec<String> = self.state.nodes.iter().map(|n| n.name.clone()).collect();
        self.wait_ready(&names, None, cfg.timeout)?;
        info!(elapsed = ?start.elapsed(), "every node is Ready");
        // Every node has its own certificate now: the token has done its work and opens nothing more.
        self.delete_join_token()?;
        Ok(())
    }

    /// A bootstrap token for the nodes of `up`, made the way an admin makes one (`svcnet token create
    /// --print-join-command`, with the admin's kubeconfig, here on the host). Its server is the one
    /// the admin's kubeconfig names, `https://127.0.0.1:PORT`, which in each node's namespace is the
    /// forwarder. It lives an hour at most, and [`Self::delete_join_token`] ends it sooner.
    fn create_join_token(&self) -> Result<JoinCommand, LabError> {
        let out = Command::new(&self.svcnet)
            .args(["token", "create", "--print-join-command", "--ttl", "1h"])
            .arg("--kubeconfig")
            .arg(self.state.kubeconfig())
            .arg("--description")
            .arg(format!("svcnet lab {}: joins its nodes", self.state.name))
            .output()
            .map_err(io_err("running svcnet token create"))?;
        let printed = String::from_utf8_lossy(&out.stdout);
        match JoinCommand::parse(&printed) {
            Some(join) if out.status.success() => Ok(join),
            _ => Err(LabError::Command {
                command: "svcnet token create --print-join-command".into(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
        }
    }

    /// Deletes the join token's Secret: from then on no one joins with it (a node started again uses
    /// its certificate).
    fn delete_join_token(&self) -> Result<(), LabError> {
        let Some(join) = &self.state.join else {
            return Ok(());
        };
        let name = format!("bootstrap-token-{}", join.token_id());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("starting a runtime"))?;
        rt.block_on(async {
            let secrets: Api<Secret> =
                Api::namespaced(client(&self.state.kubeconfig()).await?, "kube-system");
            match secrets.delete(&name, &Default::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
                Err(e) => Err(e.into()),
            }
        })
    }

    fn control_plane_dir(&self) -> PathBuf {
        self.state.dir.join("control-plane")
    }

    fn start_control_plane(&mut self, cfg: &LabConfig) -> Result<(), LabError> {
        let data = self.control_plane_dir();
        let log = self.state.dir.join("control-plane.log");
        let mut cmd = Command::new(&self.svcnet);
        // No node and no data plane here: this is the host's namespace, which the lab leaves alone.
        cmd.arg("up")
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--no-agent",
                "--proxy-mode",
                "none",
            ])
            .args(["--metrics-listen", "127.0.0.1:0"])
            // `kubectl logs`: node addresses exist only in the lab; the forwarder tunnels to them.
            .arg("--kubelet-egress-uds")
            .arg(self.egress_socket())
            .args(["--service-cidr", SERVICE_CIDR, "--cluster-cidr", CLUSTER_CIDR])
            // LoadBalancer Services get addresses on the underlay; the nodes' agents announce them.
            .args(["--lb-pool", topology::LB_POOL])
            .args(&cfg.control_plane_flags)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        let pid = procs::spawn_detached(cmd, &log)?;
        self.state.control_plane_pid = Some(pid);
        let up = poll(cfg.timeout, || {
            if !procs::alive(pid) {
                return Some(false);
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("svcnet is up").then_some(true)
        });
        if up != Some(true) {
            return Err(LabError::Timeout {
                what: "the control plane starting".into(),
                secs: cfg.timeout.as_secs(),
                detail: log_tail(&log, 20),
            });
        }
        let kubeconfig = std::fs::read_to_string(data.join("kubeconfig"))
            .map_err(io_err("reading the control plane's kubeconfig"))?;
        let addr: SocketAddr = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: https://"))
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| LabError::Kubeconfig("no `server: https://ADDR` line".into()))?;
        let path = self.state.kubeconfig();
        std::fs::write(&path, kubeconfig).map_err(io_err(format!("writing {}", path.display())))?;
        self.state.api = Some(addr);
        Ok(())
    }

    fn start_forwarder(&mut self, timeout: Duration) -> Result<(), LabError> {
        let log = self.state.dir.join("forwarder.log");
        let mut cmd = Command::new(&self.svcnet);
        cmd.args(["lab", "forward", "--dir"]).arg(&self.state.dir);
        let pid = procs::spawn_detached(cmd, &log)?;
        self.state.forwarder_pid = Some(pid);
        let ready = poll(timeout, || {
            if !procs::alive(pid) {
                return Some(false);
            }
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains(forward::READY_LINE).then_some(true)
        });
        if ready == Some(true) {
            Ok(())
        } else {
            Err(LabError::Timeout {
                what: "the API forwarder starting".into(),
                secs: timeout.as_secs(),
                detail: log_tail(&log, 20),
            })
        }
    }

    /// The namespaces the forwarder listens in (every node's).
    pub fn forwarded_namespaces(&self) -> Vec<PathBuf> {
        self.state
            .nodes
            .iter()
            .map(|n| topology::netns_path(&n.netns))
            .collect()
    }

    /// The API server's tunnels to the node agents (see [`forward`]).
    pub fn egress(&self) -> forward::Egress {
        forward::Egress {
            socket: self.egress_socket(),
            nodes: self
                .state
                .nodes
                .iter()
                .map(|n| (n.ip, topology::netns_path(&n.netns)))
                .collect(),
        }
    }

    fn egress_socket(&self) -> PathBuf {
        self.state.dir.join("egress.sock")
    }

    /// The API server's address on the host.
    pub fn api(&self) -> Result<SocketAddr, LabError> {
        self.state
            .api
            .ok_or_else(|| LabError::Kubeconfig("the lab has no API server yet".into()))
    }

    /// Node `i`'s agent, started detached inside its namespace and a PID namespace of its own, under
    /// [`crate::init`] as that namespace's init: when the namespace dies (`stop-node`, `down`) the kernel
    /// kills the node's pods too, and their network namespaces, mounted only in its mount namespace, go
    /// with them; when only the agent exits, the init starts it again and the pods run on. Returns the
    /// PID of the `unshare` that holds the namespace (the node's "machine").
    ///
    /// The agent joins as a kubeadm worker does ([`JoinCommand`]): the first time with the token, it
    /// gets its own certificate (`system:node:<name>`) into its data directory, `<dir>/<node>`; every
    /// later start (the init's restarts, `start-node`) finds that certificate and uses it. The admin's
    /// kubeconfig is never given to a node.
    fn spawn_agent(&self, i: usize) -> Result<u32, LabError> {
        let node = &self.state.nodes[i];
        let join = self
            .state
            .join
            .as_ref()
            .ok_or_else(|| {
                LabError::BadOption(format!(
                    "lab {:?} has no join command in its state (an older svcnet made it): run `svcnet lab up` again",
                    self.state.name
                ))
            })?;
        let data = self.state.dir.join(&node.name);
        std::fs::create_dir_all(&data).map_err(io_err(format!("creating {}", data.display())))?;
        let log = self.state.dir.join(format!("{}.log", node.name));
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &node.netns])
            .args(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
            .arg(&self.svcnet)
            .args(["lab", "node-init", "--"])
            .arg(&self.svcnet)
            .arg("agent")
            .args(join.args())
            .arg("--data-dir")
            .arg(&data)
            .args(["--node-name", &node.name, "--node-ip", &node.ip.to_string()])
            // The kubelet's port on the node's address, where the API server's tunnels arrive.
            .args(["--listen", &format!("{}:10250", node.ip)])
            .args(["--pod-network", "netns", "--proxy-mode", &self.state.proxy_mode])
            .args(["--overlay", &self.state.overlay])
            .args(["--service-cidr", SERVICE_CIDR, "--cluster-cidr", CLUSTER_CIDR])
            .args(["--node-labels", &format!("{ZONE_LABEL}={}", node.zone)])
            .args(&self.state.agent_flags)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        procs::spawn_detached(cmd, &log)
    }

    /// Waits until each of `names` is a Node with a pod CIDR and Ready=True, reported (heartbeat) no
    /// earlier than `since` when given: a node that comes back must be reported by its new agent, not
    /// still look Ready from before it died.
    fn wait_ready(
        &self,
        names: &[String],
        since: Option<std::time::SystemTime>,
        timeout: Duration,
    ) -> Result<(), LabError> {
        // Heartbeat times have whole seconds.
        let since = since.map(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io_err("starting a runtime"))?;
        let kubeconfig = self.state.kubeconfig();
        let agents: Vec<(String, Option<u32>)> = self
            .state
            .nodes
            .iter()
            .filter(|n| names.contains(&n.name))
            .map(|n| (n.name.clone(), n.agent_pid))
            .collect();
        rt.block_on(async {
            let client = client(&kubeconfig).await?;
            let nodes: Api<Node> = Api::all(client);
            let start = Instant::now();
            loop {
                // An agent that exited will not become Ready: say so at once, with its log.
                for (name, pid) in &agents {
                    if pid.is_some_and(|p| !procs::alive(p)) {
                        return Err(LabError::Command {
                            command: format!("svcnet agent ({name})"),
                            stderr: format!(
                                "exited{}",
                                log_tail(&self.state.dir.join(format!("{name}.log")), 20)
                            ),
                        });
                    }
                }
                if let Ok(list) = nodes.list(&Default::default()).await {
                    let ready = |n: &Node| {
                        let status = n.status.as_ref();
                        n.spec.as_ref().and_then(|s| s.pod_cidr.as_ref()).is_some()
                            && status.and_then(|s| s.conditions.as_ref()).is_some_and(|c| {
                                c.iter().any(|c| {
                                    let fresh = since.is_none_or(|s| {
                                        c.last_heartbeat_time
                                            .as_ref()
                                            .is_some_and(|t| t.0.as_second() >= s)
                                    });
                                    c.type_ == "Ready" && c.status == "True" && fresh
                                })
                            })
                    };
                    let done = names.iter().all(|want| {
                        list.items
                            .iter()
                            .any(|n| n.metadata.name.as_deref() == Some(want) && ready(n))
                    });
                    if done {
                        return Ok(());
                    }
                }
                if start.elapsed() >= timeout {
                    let detail = names
                        .iter()
                        .map(|n| log_tail(&self.state.dir.join(format!("{n}.log")), 8))
                        .collect::<String>();
                    return Err(LabError::Timeout {
                        what: format!("nodes {} Ready", names.join(", ")),
                        secs: timeout.as_secs(),
                        detail,
                    });
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    /// Kills node `name`'s agent (and with it its pods) and pulls its underlay cable: the machine died.
    pub fn stop_node(&mut self, name: &str) -> Result<(), LabError> {
        let i = self.index(name)?;
        let node = self.state.nodes[i].clone();
        if let Some(pid) = node.agent_pid {
            procs::signal_owned(pid, &self.state.dir, Signal::SIGKILL);
        }
        // Anything else still in the node (a `lab exec`): the machine is off.
        procs::kill_in_namespaces(&[topology::netns_path(&node.netns)])?;
        topology::set_port(&self.state.underlay, &node.port, false)?;
        remove_pod_netns_leftovers(&self.state.dir.join(&node.name));
        self.state.nodes[i].agent_pid = None;
        self.state.save()
    }

    /// Plugs node `name` back in and starts its agent again; returns once the node is Ready.
    pub fn start_node(&mut self, name: &str, timeout: Duration) -> Result<(), LabError> {
        let i = self.index(name)?;
        if self.state.nodes[i]
            .agent_pid
            .is_some_and(|p| procs::owned(p, &self.state.dir))
        {
            return Err(LabError::BadOption(format!("node {name} is running")));
        }
        topology::set_port(&self.state.underlay, &self.state.nodes[i].port, true)?;
        let started = std::time::SystemTime::now();
        let pid = self.spawn_agent(i)?;
        self.state.nodes[i].agent_pid = Some(pid);
        self.state.save()?;
        self.wait_ready(&[name.to_string()], Some(started), timeout)
    }

    /// Restarts node `name`'s agent alone, as an upgrade or a crash of a kubelet does: `signal` (SIGTERM
    /// for a graceful stop, SIGKILL for a crash) to the agent, which the node's init starts again; the
    /// pods, the data plane and the node's routes stay. Returns once the new agent runs and the node is
    /// Ready again.
    pub fn restart_agent(&self, name: &str, signal: Signal, timeout: Duration) -> Result<(), LabError> {
        let i = self.index(name)?;
        let stopped = || LabError::BadOption(format!("node {name} is stopped"));
        let machine = self.state.nodes[i]
            .agent_pid
            .filter(|p| procs::owned(*p, &self.state.dir))
            .ok_or_else(stopped)?;
        let init = first_child(machine).ok_or_else(stopped)?;
        let old = agent_of(init).ok_or_else(|| {
            LabError::BadOption(format!("node {name} has no agent running (it is restarting)"))
        })?;
        let log = self.state.dir.join(format!("{name}.log"));
        let starts = || {
            std::fs::read_to_string(&log)
                .map(|l| l.matches("node agent running").count())
                .unwrap_or(0)
        };
        let before = starts();
        let killed = std::time::SystemTime::now();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), signal)
            .map_err(|e| io_err(format!("signalling agent {old}"))(e.into()))?;
        let restarted = poll(timeout, || {
            (starts() > before && agent_of(init).is_some_and(|p| p != old)).then_some(())
        });
        if restarted.is_none() {
            return Err(LabError::Timeout {
                what: format!("the agent of {name} to start again"),
                secs: timeout.as_secs(),
                detail: log_tail(&log, 20),
            });
        }
        self.wait_ready(&[name.to_string()], Some(killed), timeout)
    }

    fn index(&self, name: &str) -> Result<usize, LabError> {
        self.state
            .nodes
            .iter()
            .position(|n| n.name == name)
            .ok_or_else(|| self.state.unknown(name))
    }

    /// A command that runs `argv` inside a node or the client, as `docker exec` does for a kind node,
    /// with `KUBECONFIG` set to the lab's. In a running node it enters the agent's network, mount and
    /// PID namespaces (so `ps` shows the node's processes and `ip netns exec svcnet-…` reaches its pods);
    /// otherwise the member's network namespace.
    pub fn exec_command(&self, member: &str, argv: &[String]) -> Result<Command, LabError> {
        let netns = self.state.netns_of(member)?;
        let agent = self
            .state
            .nodes
            .iter()
            .find(|n| n.name == member)
            .and_then(|n| n.agent_pid)
            .filter(|p| procs::owned(*p, &self.state.dir))
            .and_then(first_child);
        let mut cmd = match agent {
            Some(init) => {
                let mut c = Command::new("nsenter");
                c.args(["--target", &init.to_string(), "--net", "--mount", "--pid", "--"]);
                c
            }
            None => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", netns]);
                c
            }
        };
        cmd.args(argv).env("KUBECONFIG", self.state.kubeconfig());
        Ok(cmd)
    }

    /// What `lab status` shows.
    pub fn status(&self) -> Status {
        let alive = |pid: Option<u32>| pid.is_some_and(|p| procs::owned(p, &self.state.dir));
        Status {
            name: self.state.name.clone(),
            kubeconfig: self.state.kubeconfig(),
            api: self.state.api,
            proxy_mode: self.state.proxy_mode.clone(),
            overlay: self.state.overlay.clone(),
            control_plane: alive(self.state.control_plane_pid),
            forwarder: alive(self.state.forwarder_pid),
            nodes: self
                .state
                .nodes
                .iter()
                .map(|n| NodeStatus {
                    name: n.name.clone(),
                    ip: n.ip.to_string(),
                    zone: n.zone.clone(),
                    agent: alive(n.agent_pid),
                    link_up: topology::port_up(&self.state.underlay, &n.port),
                })
                .collect(),
        }
    }

    /// Stops every process of the lab, deletes its namespaces, and (if `remove_dir`) its directory.
    fn teardown(&self, remove_dir: bool) -> Result<(), LabError> {
        teardown(&self.state.name, Some(&self.state), &self.state.dir, remove_dir)
    }
}

/// The children of `pid`.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// The first child of `pid` (the init that `unshare --fork` started in a node's PID namespace).
fn first_child(pid: u32) -> Option<u32> {
    children(pid).into_iter().next()
}

/// The `svcnet agent` among the children of a node's init (the rest are pods it adopted).
fn agent_of(init: u32) -> Option<u32> {
    children(init).into_iter().find(|p| {
        procs::alive(*p)
            && std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(b"agent"))
    })
}

/// Removes what a killed agent leaves of its pods' network namespaces in the host's view: the empty
/// `/run/netns/svcnet-…` files (their mounts lived in the agent's mount namespace) and `/etc/netns/…`
/// files, for the namespaces its records (`<node dir>/netns/`) name.
fn remove_pod_netns_leftovers(node_dir: &Path) {
    let Ok(records) = std::fs::read_dir(node_dir.join("netns")) else {
        return;
    };
    for record in records.flatten() {
        let Some(name) = record.file_name().to_str().map(str::to_string) else {
            continue;
        };
        // Only the agent's own naming: `svcnet-` and eight hex digits.
        let ours = name
            .strip_prefix("svcnet-")
            .is_some_and(|id| id.len() == 8 && id.chars().all(|c| c.is_ascii_hexdigit()));
        if !ours {
            continue;
        }
        let _ = std::fs::remove_file(topology::netns_path(&name));
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&name));
        let _ = std::fs::remove_file(record.path());
    }
}

/// Removes the lab `name` under `root`: its processes, namespaces and directory. Returns whether there
/// was anything to remove. Works from the state file when there is one, and from the namespace prefix
/// alone when not (a crash before it was written).
pub fn down(root: &Path, name: &str) -> Result<bool, LabError> {
    check_name(name)?;
    let dir = dir_of(root, name);
    let dir = dir.canonicalize().unwrap_or(dir);
    let state = LabState::load(name, &dir).ok();
    let found = state.is_some() || dir.exists() || !topology::existing(&topology::prefix(name)).is_empty();
    if found {
        teardown(name, state.as_ref(), &dir, true)?;
    }
    Ok(found)
}

fn teardown(name: &str, state: Option<&LabState>, dir: &Path, remove_dir: bool) -> Result<(), LabError> {
    if let Some(state) = state {
        // Agents first (their pods die with them), then the forwarder, then the control plane, so that no
        // agent spends its last moments retrying a vanished API server.
        let agents: Vec<u32> = state.nodes.iter().filter_map(|n| n.agent_pid).collect();
        for pid in &agents {
            procs::signal_owned(*pid, dir, Signal::SIGKILL);
        }
        procs::wait_gone(&agents, Duration::from_secs(5));
        if let Some(pid) = state.forwarder_pid {
            procs::stop_owned(pid, dir, Duration::from_secs(1));
        }
        if let Some(pid) = state.control_plane_pid {
            procs::stop_owned(pid, dir, Duration::from_secs(5));
        }
    }
    // Whatever else names the lab's directory (a state file lost in a crash leaves no PIDs to go by).
    let strays = procs::owned_by(dir);
    for pid in &strays {
        procs::signal_owned(*pid, dir, Signal::SIGKILL);
    }
    procs::wait_gone(&strays, Duration::from_secs(5));
    let namespaces = topology::existing(&topology::prefix(name));
    let paths: Vec<PathBuf> = namespaces.iter().map(|n| topology::netns_path(n)).collect();
    procs::kill_in_namespaces(&paths)?;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().is_dir() {
                remove_pod_netns_leftovers(&e.path());
            }
        }
    }
    for ns in &namespaces {
        topology::delete(ns)?;
    }
    if remove_dir && dir.exists() {
        std::fs::remove_dir_all(dir).map_err(io_err(format!("removing {}", dir.display())))?;
    }
    Ok(())
}

/// A kube client from a kubeconfig file.
pub async fn client(kubeconfig: &Path) -> Result<kube::Client, LabError> {
    let kc =
        kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| LabError::Kubeconfig(e.to_string()))?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| LabError::Kubeconfig(e.to_string()))?;
    Ok(kube::Client::try_from(cfg)?)
}

/// A lab's state as `lab status` prints it.
#[derive(Debug, Clone)]
pub struct Status {
    /// The lab.
    pub name: String,
    /// Its kubeconfig.
    pub kubeconfig: PathBuf,
    /// The API server's address.
    pub api: Option<SocketAddr>,
    /// The nodes' proxy mode.
    pub proxy_mode: String,
    /// The overlay.
    pub overlay: String,
    /// Whether the control plane runs.
    pub control_plane: bool,
    /// Whether the API forwarder runs.
    pub forwarder: bool,
    /// The nodes.
    pub nodes: Vec<NodeStatus>,
}

/// One node in [`Status`].
#[derive(Debug, Clone)]
pub struct NodeStatus {
    /// Its name.
    pub name: String,
    /// Its underlay address.
    pub ip: String,
    /// Its zone.
    pub zone: String,
    /// Whether its agent runs.
    pub agent: bool,
    /// Whether its underlay port is up.
    pub link_up: bool,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let run = |b: bool| if b { "running" } else { "stopped" };
        writeln!(
            f,
            "lab {}: proxy-mode {}, overlay {}",
            self.name, self.proxy_mode, self.overlay
        )?;
        let api = self.api.map(|a| a.to_string()).unwrap_or_else(|| "-".into());
        writeln!(
            f,
            "control plane: {} (https://{api}), API forwarder: {}",
            run(self.control_plane),
            run(self.forwarder)
        )?;
        writeln!(f, "KUBECONFIG={}", self.kubeconfig.display())?;
        writeln!(f, "{:<10} {:<14} {:<8} {:<8} LINK", "NODE", "IP", "ZONE", "AGENT")?;
        for n in &self.nodes {
            writeln!(
                f,
                "{:<10} {:<14} {:<8} {:<8} {}",
                n.name,
                n.ip,
                n.zone,
                run(n.agent),
                if n.link_up { "up" } else { "down" }
            )?;
        }
        write!(f, "{:<10} {:<14}", "client", topology::CLIENT_IP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_tail_keeps_the_error_above_a_long_backtrace() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("node1.log");
        let mut text =
            String::from("starting\nError: joining the cluster: Unauthorized\n\nStack backtrace:\n");
        for i in 0..40 {
            text.push_str(&format!("  {i}: frame\n"));
        }
        std::fs::write(&log, text).unwrap();
        let tail = log_tail(&log, 5);
        assert!(
            tail.contains("Error: joining the cluster: Unauthorized"),
            "{tail}"
        );
        assert!(tail.ends_with("  39: frame"), "{tail}");
        assert!(!tail.contains("Stack backtrace"), "{tail}");
        std::fs::write(&log, "one\ntwo\n").unwrap();
        assert!(log_tail(&log, 5).ends_with("(last lines):\none\ntwo"));
    }
}
