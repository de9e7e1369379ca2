//! A `svcnet agent` (a node joining a [`crate::Cluster`]) as a process of the test's own: its data
//! directory, its log file, and on drop (also when a test fails) the agent, every process group it
//! started (its pods), the pods it recorded in its data directory and its userspace proxy process are
//! killed: processes the test started, found by PID (and start time) in the agent's data directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::cluster::{kill_recorded_pods, kill_recorded_proxy};

/// A running node agent.
pub struct Agent {
    child: Option<Child>,
    /// Its pods' process groups, once [`Agent::kill_agent_only`] left them running.
    left: Vec<u32>,
    /// Its `--data-dir`.
    pub dir: PathBuf,
    log: PathBuf,
    /// How it was started, for [`Agent::restart`].
    bin: PathBuf,
    args: Vec<String>,
}

impl Agent {
    /// Starts `bin agent --node-name NODE --kubeconfig KUBECONFIG --data-dir DIR` with `args` added; DNS
    /// and metrics on free ports unless `args` say otherwise. Its log goes to `DIR/agent.log`.
    pub fn start(bin: impl AsRef<Path>, kubeconfig: &Path, node: &str, dir: &Path, args: &[&str]) -> Agent {
        let kubeconfig = kubeconfig.to_string_lossy().into_owned();
        let mut full: Vec<&str> = vec!["--node-name", node];
        for (flag, value) in [
            ("--dns-listen", "127.0.0.1:0"),
            ("--metrics-listen", "127.0.0.1:0"),
            ("--healthz-listen", "127.0.0.1:0"),
        ] {
            if !args.contains(&flag) {
                full.extend([flag, value]);
            }
        }
        full.extend_from_slice(args);
        full.extend(["--kubeconfig", &kubeconfig]);
        Self::spawn(bin.as_ref(), dir, &full, dir.join("agent.log"))
    }

    /// Runs `bin agent ARGS --data-dir DIR` exactly as given (a node joining with a token, say), logging
    /// beside the data directory to `DIR.log`, so that the directory holds only what the agent wrote.
    pub fn start_with(bin: impl AsRef<Path>, dir: &Path, args: &[&str]) -> Agent {
        Self::spawn(bin.as_ref(), dir, args, dir.with_extension("log"))
    }

    fn spawn(bin: &Path, dir: &Path, args: &[&str], log: PathBuf) -> Agent {
        std::fs::create_dir_all(dir).expect("agent data dir");
        let mut agent = Agent {
            child: None,
            left: Vec::new(),
            dir: dir.to_path_buf(),
            log,
            bin: bin.to_path_buf(),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        agent.child = Some(agent.run());
        agent
    }

    fn run(&self) -> Child {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("agent log");
        Command::new(&self.bin)
            .arg("agent")
            .args(&self.args)
            .arg("--data-dir")
            .arg(&self.dir)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("spawn svcnet agent")
    }

    /// Sends the agent `signal` (`TERM`, `KILL`) and waits for it to exit; its pods and proxy process
    /// are left to the next agent on this data directory (or to the drop).
    pub fn stop(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args([format!("-{signal}"), child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }

    /// Stops the agent with `signal` and starts another with the same flags on the same data directory.
    pub fn restart(&mut self, signal: &str) {
        self.stop(signal);
        self.child = Some(self.run());
    }

    /// Kills only the agent, as a crash would: its pods and proxy keep running (until the handle drops).
    pub fn kill_agent_only(&mut self) {
        if let Some(mut child) = self.child.take() {
            self.left = children_of(child.id());
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Its log so far (every run with this log file).
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
        for g in groups {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{g}")])
                .stderr(Stdio::null())
                .status();
        }
        kill_recorded_pods(&self.dir);
        kill_recorded_proxy(&self.dir.join("proxy"));
    }
}
