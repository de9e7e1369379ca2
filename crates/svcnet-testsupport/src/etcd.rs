//! A real etcd (Debian's `etcd-server`) for a test: one member on free loopback ports with a temporary
//! data directory, stopped by PID when the handle drops. It can be stopped and started again on the same
//! ports and data (an etcd outage), or started on a port chosen before (a server that comes up late).

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::net::{free_port, http_get};

/// A running single-member etcd.
pub struct Etcd {
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// The client port on 127.0.0.1.
    pub client_port: u16,
    peer_port: u16,
}

impl Etcd {
    /// Starts a fresh etcd on free ports and waits until it is healthy.
    pub fn start() -> Etcd {
        Self::start_on(free_port("127.0.0.1"))
    }

    /// Starts a fresh etcd whose clients reach it on `client_port`.
    pub fn start_on(client_port: u16) -> Etcd {
        assert!(
            which("etcd"),
            "etcd is not installed: apt-get install etcd-server (scripts/test.sh does)"
        );
        let mut e = Etcd {
            child: None,
            dir: tempfile::tempdir().expect("tempdir"),
            client_port,
            peer_port: free_port("127.0.0.1"),
        };
        e.start_again();
        e
    }

    /// The client URL, for `--etcd-servers`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Its PID (while it runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// (Re)starts the member on its ports and data directory and waits until it answers `/health`.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "etcd already runs");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("etcd log");
        let child = Command::new("etcd")
            .args(["--name", "m0", "--data-dir"])
            .arg(self.dir.path().join("data"))
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("m0={peer}")])
            .args(["--initial-cluster-state", "new"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.client_port).parse().unwrap();
        let healthy = crate::eventually(Duration::from_secs(20), || {
            http_get(addr, "/health").is_ok_and(|(code, body)| code == 200 && body.contains("true"))
        });
        assert!(healthy, "etcd did not become healthy:\n{}", self.log());
    }

    /// Kills the member (SIGKILL by PID) and waits for it; its data stays for [`Self::start_again`].
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `etcdctl` against it (API v3).
    pub fn etcdctl(&self, args: &[&str]) -> Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.url())
            .args(args)
            .output()
            .expect("run etcdctl")
    }
}

fn which(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}
