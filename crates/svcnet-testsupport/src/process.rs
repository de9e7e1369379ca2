//! A svcnet command other than `up` (`svcnet proxy`, `svcnet dns`) as a process of its own, the way a
//! cluster admin runs it beside a control plane: started (behind a command prefix such as
//! `ip netns exec NS`), awaited until it prints its serving line, logged to a file, and stopped by PID.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A running svcnet command; killed by PID when dropped.
pub struct Process {
    child: Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    /// Runs `bin ARGS` behind `prefix` and waits for its first line on stdout, which must say it is
    /// `serving`. `Err` holds its exit status and log when it stops first.
    pub fn start(bin: impl AsRef<Path>, prefix: &[&str], args: &[&str]) -> Result<Process, String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("process.log");
        let mut cmd = match prefix.split_first() {
            None => Command::new(bin.as_ref()),
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(bin.as_ref());
                c
            }
        };
        let mut child = cmd
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn the svcnet command");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line);
        if line.contains("serving") {
            return Ok(Process {
                child,
                log,
                _dir: dir,
            });
        }
        let status = child.wait().expect("wait");
        Err(format!(
            "{status}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        ))
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log (stderr) so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }

    /// Sends `sig` (`-TERM`, `-KILL`) to it.
    pub fn signal(&self, sig: &str) {
        let _ = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// Its exit status, waiting at most `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, then its exit status (within 10 s).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.signal("-TERM");
        self.wait_exit(Duration::from_secs(10))
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
