//! A `svcnet agent` (a node joining a cluster) as a process of the test's own: its data directory, its
//! log file, and on drop the agent, every process group it started (its pods) and its userspace proxy
//! process are killed by PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A running node agent.
pub struct Agent {
    child: Option<Child>,
    /// Its pods' process groups, once [`Agent::kill_agent_only`] left them running.
    left: Vec<u32>,
    /// Its `--data-dir`.
    pub dir: PathBuf,
}

impl Agent {
    /// Starts `bin agent --node-name NODE --kubeconfig KUBECONFIG --data-dir DIR` with `args` added; DNS
    /// and metrics on free ports unless `args` say otherwise. Its log goes to `DIR/agent.log`.
    pub fn start(bin: impl AsRef<Path>, kubeconfig: &Path, node: &str, dir: &Path, args: &[&str]) -> Agent {
        std::fs::create_dir_all(dir).expect("agent dir");
        let log = std::fs::File::create(dir.join("agent.log")).expect("agent log");
        let mut cmd = Command::new(bin.as_ref());
        cmd.args(["agent", "--node-name", node]);
        for (flag, value) in [
            ("--dns-listen", "127.0.0.1:0"),
            ("--metrics-listen", "127.0.0.1:0"),
            ("--healthz-listen", "127.0.0.1:0"),
        ] {
            if !args.contains(&flag) {
                cmd.args([flag, value]);
            }
        }
        let child = cmd
            .args(args)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--data-dir")
            .arg(dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn svcnet agent");
        Agent {
            child: Some(child),
            left: Vec::new(),
            dir: dir.to_path_buf(),
        }
    }

    /// Kills only the agent, as a crash would: its pods keep running (until the handle drops).
    pub fn kill_agent_only(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.left = children_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }
}

/// The processes whose parent is `pid`.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // The fields after the parenthesised command: state, ppid, ...
        let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        if after
            .split_whitespace()
            .nth(1)
            .and_then(|x| x.parse::<u32>().ok())
            == Some(pid)
        {
            out.push(p);
        }
    }
    out
}

impl Drop for Agent {
    fn drop(&mut self) {
        let mut groups = std::mem::take(&mut self.left);
        if let Some(mut child) = self.child.take() {
            groups.extend(children_of(child.id()));
            let _ = child.kill();
            let _ = child.wait();
        }
        {
            for g in groups {
                let _ = Command::new("kill")
                    .args(["-s", "KILL", "--", &format!("-{g}")])
                    .stderr(Stdio::null())
                    .status();
            }
        }
        crate::cluster::kill_recorded_proxy(&self.dir.join("proxy"));
    }
}
