//! A `svcnet agent` (a node joining a [`crate::Cluster`]) as a process of its own, with its log in a
//! file. On drop (also when a test fails) the agent, its userspace proxy process and its pods are killed:
//! processes the test started, found by PID and start time in the agent's data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::cluster::{kill_recorded_pods, kill_recorded_proxy};

/// A running node agent.
pub struct NodeAgent {
    child: Option<Child>,
    /// Its data directory.
    pub dir: PathBuf,
    log: PathBuf,
}

impl NodeAgent {
    /// Runs `bin agent ARGS --data-dir DIR` (`args` without the data directory), logging to `DIR.log`.
    pub fn start(bin: impl AsRef<Path>, dir: &Path, args: &[&str]) -> NodeAgent {
        std::fs::create_dir_all(dir).expect("agent data dir");
        let log = dir.with_extension("log");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("agent log");
        let child = Command::new(bin.as_ref())
            .arg("agent")
            .args(args)
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn svcnet agent");
        NodeAgent {
            child: Some(child),
            dir: dir.to_path_buf(),
            log,
        }
    }

    /// Its log so far (every run in this data directory).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its exit status if it has ended, waiting at most `limit`.
    pub fn exited_within(&mut self, limit: std::time::Duration) -> Option<std::process::ExitStatus> {
        let child = self.child.as_mut()?;
        let t0 = std::time::Instant::now();
        while t0.elapsed() < limit {
            if let Ok(Some(s)) = child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Kills the agent alone (its pods and proxy keep running, as after a crash).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        self.kill();
        kill_recorded_pods(&self.dir);
        kill_recorded_proxy(&self.dir.join("proxy"));
    }
}
