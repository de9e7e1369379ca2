//! Where `kubectl exec` runs a command: in a running container's environment, as the kubelet asks a
//! container runtime to. For a host-process pod that is the container's network namespace (the pod's
//! exec prefix), its environment variables, its working directory and its user (the `setpriv` words
//! of its `securityContext`), exactly what the container's own process got.

use std::net::IpAddr;
use std::path::PathBuf;

use super::pod::Which;
use super::status::State;
use super::{PodRunner, RunnerError, env, security};

/// How to start a process inside one running container.
#[derive(Clone, Debug)]
pub struct ExecTarget {
    /// The container's environment (without the agent's `PATH` default, added at spawn).
    pub env: Vec<(String, String)>,
    /// The container's working directory.
    pub cwd: PathBuf,
    /// Words to put before the command: the pod's network namespace, then the container's identity.
    pub prefix: Vec<String>,
    /// Only the pod's network-namespace words (port-forward connects from there).
    pub netns_prefix: Vec<String>,
    /// The pod's address.
    pub pod_ip: IpAddr,
    /// The container's process (its network namespace is the pod's).
    pub pid: Option<u32>,
}

impl PodRunner {
    /// The exec target of container `container` of pod `uid`, which must be running (the kubelet's
    /// `container not found` otherwise, as a runtime answers for a container without a live process).
    pub fn exec_target(&self, uid: &str, container: &str) -> Result<ExecTarget, RunnerError> {
        let pod = self.pod(uid)?;
        let name = pod.pod.metadata.name.clone().unwrap_or_default();
        let spec = pod.pod.spec.clone().unwrap_or_default();
        let which = spec
            .containers
            .iter()
            .position(|c| c.name == container)
            .map(Which::Main)
            .or_else(|| {
                spec.init_containers
                    .iter()
                    .flatten()
                    .position(|c| c.name == container)
                    .map(Which::Init)
            })
            .ok_or_else(|| RunnerError::UnknownContainer {
                pod: name.clone(),
                container: container.to_string(),
            })?;
        let running = pod.read(|s| match &s.record(which).state {
            State::Running { container_id, .. } => Some(super::record::pid_of(container_id)),
            _ => None,
        });
        let Some(pid) = running else {
            return Err(RunnerError::NotRunning {
                pod: name,
                container: container.to_string(),
            });
        };
        let c = pod.container(which).cloned().unwrap_or_default();
        // The environment the running instance got; computed afresh only if it is not known.
        let known = pod
            .launched_env
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(container)
            .cloned();
        let env = match known {
            Some(env) => env,
            None => {
                env::launch_spec(&pod.pod, &c, &pod.ctx, pod.objects.as_ref())
                    .map_err(|e| RunnerError::Exec(e.message))?
                    .env
            }
        };
        let identity = security::identity(&pod.pod, &c).map_err(|e| RunnerError::Exec(e.message))?;
        let cwd = c
            .working_dir
            .as_ref()
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| pod.work_dir());
        let mut prefix = pod.ctx.prefix_for(container);
        prefix.extend(identity.setpriv_prefix());
        Ok(ExecTarget {
            env: super::process::base_env(&env),
            cwd,
            prefix,
            netns_prefix: pod.ctx.exec_prefix.clone(),
            pod_ip: pod.ctx.pod_ip,
            pid,
        })
    }
}

impl ExecTarget {
    /// Checks that `program` names an executable as the container would find it (its `PATH`, its working
    /// directory); the error reads as exec's (`ENOENT`, `EACCES`).
    pub fn resolve(&self, program: &str) -> std::io::Result<()> {
        super::process::resolve(program, &self.env, &self.cwd)
    }

    /// A command running `argv` in the container: in a session of its own (so that the whole group can be
    /// killed when the client goes away), with the terminal on its stdin as its controlling terminal when
    /// `ctty` (what a shell needs for job control and `^C`). Killed if dropped while running.
    pub fn command(&self, argv: &[String], ctty: bool) -> tokio::process::Command {
        let (program, args) = argv.split_first().map_or(("", &[][..]), |(p, a)| (p.as_str(), a));
        let tool = super::process::setsid_tool();
        let mut words: Vec<String> = tool.map(str::to_string).into_iter().collect();
        if tool.is_some() && ctty {
            words.push("--ctty".into());
        }
        words.extend(self.prefix.iter().cloned());
        let mut cmd = super::process::prefixed(&words, program, args);
        cmd.env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .kill_on_drop(true);
        if tool.is_none() {
            cmd.process_group(0);
        }
        cmd
    }
}

/// Sends `signal` to the process group of an exec'd process (its PID: it leads its own session).
pub fn kill_exec_group(pid: u32, signal: nix::sys::signal::Signal) {
    super::process::kill_group(pid, signal);
}

/// The exit code Kubernetes reports for an exec'd process: its code, or 128 + the signal that killed it.
pub fn exec_exit_code(status: Option<std::process::ExitStatus>) -> i32 {
    super::process::exit_code(status)
}
