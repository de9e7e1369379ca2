//! The lab's processes: started detached (a process group of their own, output to a log file, so they
//! outlive the `svcnet lab up` that started them and a Ctrl-C in its terminal), and stopped only after
//! checking they are the lab's own.
//!
//! A PID from the state file may have been reused by the time `down` runs (after a crash, a reboot of the
//! lab): a process is signalled only when its command line names the lab's directory, which every process
//! the lab starts carries (`--data-dir <dir>/…`, `--dir <dir>`). Processes found inside the lab's network
//! namespaces (a `lab exec` still running, a leftover of a crash) are the lab's by construction: nothing
//! else ever enters them.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{LabError, io_err};

/// Starts `cmd` detached from the caller: its own process group, no input, stdout and stderr appended to
/// `log`. Returns its PID.
pub fn spawn_detached(mut cmd: Command, log: &Path) -> Result<u32, LabError> {
    use std::os::unix::process::CommandExt;
    let what = format!("{cmd:?}");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io_err(format!("opening {}", log.display())))?;
    let err = file
        .try_clone()
        .map_err(io_err(format!("opening {}", log.display())))?;
    let child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(err))
        .spawn()
        .map_err(io_err(format!("starting {what}")))?;
    // Not waited for here: once this process exits, the child is reparented and reaped by init. While it
    // runs (`lab up` waits for readiness), an exit shows as a zombie, which `alive` treats as gone.
    let pid = child.id();
    std::mem::forget(child);
    Ok(pid)
}

/// The command line of `pid`, as words, if it exists.
fn cmdline(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect(),
    )
}

/// Whether `pid` runs and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        // The state follows the command name in parentheses, which may itself contain spaces.
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Whether `pid` runs and is the lab's: a word of its command line is `dir` or a path inside it (not
/// merely a name that starts the same: lab `t1` never claims lab `t10`'s processes).
pub fn owned(pid: u32, dir: &Path) -> bool {
    let dir = dir.to_string_lossy();
    let inside = format!("{dir}/");
    alive(pid) && cmdline(pid).is_some_and(|words| words.iter().any(|w| *w == dir || w.starts_with(&inside)))
}

/// Every process that is the lab's by [`owned`] (its command line names `dir`), but this one.
pub fn owned_by(dir: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me && owned(*pid, dir))
        .collect()
}

/// Sends `signal` to `pid` if it is the lab's (see [`owned`]); returns whether it was sent.
pub fn signal_owned(pid: u32, dir: &Path, signal: Signal) -> bool {
    if pid <= 1 || !owned(pid, dir) {
        return false;
    }
    kill(Pid::from_raw(pid as i32), signal).is_ok()
}

/// Waits up to `timeout` until none of `pids` is alive; true when they are all gone.
pub fn wait_gone(pids: &[u32], timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        if pids.iter().all(|p| !alive(*p)) {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the lab's process `pid`: SIGTERM, then SIGKILL after `grace`. Returns when it is gone (or after
/// another second if even SIGKILL did not take it).
pub fn stop_owned(pid: u32, dir: &Path, grace: Duration) {
    if !signal_owned(pid, dir, Signal::SIGTERM) {
        return;
    }
    if !wait_gone(&[pid], grace) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        wait_gone(&[pid], Duration::from_secs(1));
    }
}

/// The PIDs of the processes whose network namespace is one of `netns_paths` (`/run/netns/…`).
pub fn in_namespaces(netns_paths: &[std::path::PathBuf]) -> Vec<u32> {
    let wanted: Vec<(u64, u64)> = netns_paths
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| (m.dev(), m.ino()))
        .collect();
    if wanted.is_empty() {
        return Vec::new();
    }
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|m| wanted.contains(&(m.dev(), m.ino())))
        })
        .collect()
}

/// Kills (SIGKILL) every process inside the namespaces `netns_paths` and waits for them to go.
pub fn kill_in_namespaces(netns_paths: &[std::path::PathBuf]) -> Result<(), LabError> {
    let pids = in_namespaces(netns_paths);
    for pid in &pids {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    if wait_gone(&pids, Duration::from_secs(5)) {
        Ok(())
    } else {
        Err(LabError::Timeout {
            what: format!("processes {pids:?} of the lab's namespaces ending"),
            secs: 5,
            detail: String::new(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_processes_naming_the_dir_are_owned() {
        let dir = std::env::temp_dir().join(format!("svcnet-lab-procs-{}", std::process::id()));
        let child = Command::new("sleep").arg("30").spawn().expect("sleep");
        let pid = child.id();
        assert!(alive(pid));
        // `sleep 30` does not name the directory: never signalled.
        assert!(!owned(pid, &dir));
        assert!(!signal_owned(pid, &dir, Signal::SIGKILL));
        assert!(alive(pid));
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        assert!(!alive(pid));
    }
}
