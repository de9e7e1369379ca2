//! The pod's record on disk, which lets pods outlive the agent: a later agent on the same node adopts the
//! processes it names instead of starting the pod again.
//!
//! **Why processes survive.** A container is started through `setsid` (see `super::process::spawn`): it
//! leads a session and process group of its own, with no controlling terminal, so neither a signal to the
//! agent's process group (Ctrl-C, `kill -- -PGID`) nor the agent's death reaches it; its output goes to its
//! log file directly, not through a pipe the agent holds. When the agent dies, its containers are
//! re-parented (to init or the nearest subreaper) and keep running. (A service manager that kills the
//! agent's whole cgroup, such as systemd's default `KillMode=control-group`, still takes them: run the
//! agent with `KillMode=process` to keep them.)
//!
//! **What is recorded.** `root/pods/<uid>/state.json` holds the pod's context (IP, host IP, node, service
//! environment, exec prefix — fixed at start, so the adopted processes and later probes see the same) and
//! every container's record (state, restart count, last termination, ready/started), rewritten (to a
//! temporary file, then renamed) on every change, before the status that follows from it is reported. A
//! running container is named by its PID and its process start time (`/proc/<pid>/stat` field 22), and the
//! record by the machine's boot id: a PID reused by another process, or a record from before a reboot,
//! never matches. In the netns pod network the process must also still be in the pod's network namespace.
//! A stopped pod has no record (nothing to adopt).
//!
//! **The limit.** An adopted process is not the agent's child, so its exit status cannot be read: the
//! runner learns that it ended by polling `/proc`, and reports it as the kubelet reports a container it
//! lost track of (`ContainerStatusUnknown`, exit code 137); the restart policy then applies as to any
//! non-zero exit.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use jiff::Timestamp;
use nix::sys::signal::Signal;

use super::PodContext;
use super::process::kill_group;
use super::status::ContainerRecord;

/// The record's file name in the pod's directory.
pub(crate) const FILE: &str = "state.json";

/// How often an adopted process is looked at to learn that it ended.
pub(crate) const POLL: Duration = Duration::from_millis(200);

/// One pod as a later agent needs it to adopt the pod.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct PodRecord {
    pub uid: String,
    /// `/proc/sys/kernel/random/boot_id` when written: after a reboot no process of the record runs.
    pub boot_id: String,
    pub ctx: PodContext,
    pub start_time: Timestamp,
    pub init: Vec<ContainerRecord>,
    pub main: Vec<ContainerRecord>,
}

/// This boot's id (empty where the kernel does not say; then only PID and start time are compared).
pub(crate) fn boot_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    })
}

/// The start time (clock ticks after boot) of the live process `pid`; `None` when there is none, or only
/// its zombie.
pub(crate) fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after its last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Whether `pid` is still the process that started at `ticks`.
pub(crate) fn alive(pid: u32, ticks: u64) -> bool {
    pid > 1 && proc_start(pid) == Some(ticks)
}

/// The PID in a container ID (`svcnet://<pid>`).
pub(crate) fn pid_of(container_id: &str) -> Option<u32> {
    container_id.strip_prefix("svcnet://")?.parse().ok()
}

/// The network namespace the exec prefix runs containers in (`… netns exec <name> …`), if any.
fn netns_of(ctx: &PodContext) -> Option<&str> {
    ctx.exec_prefix
        .windows(3)
        .find(|w| w[0] == "netns" && w[1] == "exec")
        .map(|w| w[2].as_str())
}

/// Whether the process `pid` runs in the pod's network namespace (always true in the host pod network).
pub(crate) fn in_pod_netns(pid: u32, ctx: &PodContext) -> bool {
    let Some(name) = netns_of(ctx) else {
        return true;
    };
    let ino = |p: PathBuf| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
    let theirs = ino(PathBuf::from(format!("/proc/{pid}/ns/net")));
    theirs.is_some() && theirs == ino(Path::new("/run/netns").join(name))
}

impl PodRecord {
    /// The running containers' processes that are verifiably the ones this record started: (name, PID).
    pub(crate) fn live(&self) -> Vec<(String, u32)> {
        if self.boot_id != boot_id() {
            return Vec::new();
        }
        self.init
            .iter()
            .chain(&self.main)
            .filter_map(|c| {
                let super::status::State::Running { container_id, .. } = &c.state else {
                    return None;
                };
                let pid = pid_of(container_id)?;
                alive(pid, c.proc_start?).then(|| (c.name.clone(), pid))
            })
            .collect()
    }
}

/// Writes the record of the pod in `dir` atomically (owner-only: it holds the pod's environment).
pub(crate) fn write(dir: &Path, record: &PodRecord) -> std::io::Result<()> {
    let tmp = dir.join(format!("{FILE}.tmp"));
    let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&json)?;
    drop(f);
    std::fs::rename(&tmp, dir.join(FILE))
}

/// Deletes the record (the pod stopped: nothing to adopt).
pub(crate) fn remove(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(FILE));
}

/// The record in `dir`, if there is a readable one.
pub(crate) fn read(dir: &Path) -> Option<PodRecord> {
    let bytes = std::fs::read(dir.join(FILE)).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "unreadable pod record; its pod is not adopted");
            None
        }
    }
}

/// The records under `root/pods`: (pod directory, record).
pub(crate) fn all(root: &Path) -> Vec<(PathBuf, PodRecord)> {
    let Ok(dir) = std::fs::read_dir(root.join("pods")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let path = e.path();
            read(&path).map(|r| (path, r))
        })
        .collect()
}

/// Stops the record's verified processes: SIGTERM to each group, up to `grace` for them to exit, then
/// SIGKILL. Processes that are not verifiably the record's are never signalled.
pub(crate) async fn stop_processes(record: &PodRecord, grace: Duration) {
    let live = record.live();
    if live.is_empty() {
        return;
    }
    let ticks: Vec<(u32, u64)> = live
        .iter()
        .filter_map(|(_, pid)| Some((*pid, proc_start(*pid)?)))
        .collect();
    for (pid, _) in &ticks {
        kill_group(*pid, Signal::SIGTERM);
    }
    let deadline = tokio::time::Instant::now() + grace;
    while ticks.iter().any(|(p, t)| alive(*p, *t)) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    for (pid, t) in &ticks {
        if alive(*pid, *t) {
            kill_group(*pid, Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let ticks = proc_start(me).expect("own stat");
        assert!(alive(me, ticks));
        assert!(!alive(me, ticks + 1));
        assert!(!alive(1, ticks));
        assert_eq!(pid_of("svcnet://42"), Some(42));
        assert_eq!(pid_of("docker://42"), None);
    }

    #[test]
    fn netns_comes_from_the_exec_prefix() {
        let mut ctx = PodContext {
            pod_ip: "127.0.0.1".parse().unwrap(),
            host_ip: "127.0.0.1".parse().unwrap(),
            node_name: "n".into(),
            service_env: vec![],
            exec_prefix: vec![],
            container_prefix: Default::default(),
        };
        assert_eq!(netns_of(&ctx), None);
        assert!(in_pod_netns(std::process::id(), &ctx));
        ctx.exec_prefix = ["/sbin/ip", "netns", "exec", "svcnet-ab12", "unshare"]
            .map(String::from)
            .to_vec();
        assert_eq!(netns_of(&ctx), Some("svcnet-ab12"));
    }
}
