//! A real `svcnet up` for a test, driven with real kubectl.
//!
//! Every cluster gets its own data directory and an ephemeral loopback port, so tests run in parallel
//! and never touch anything outside 127.0.0.1. The process is stopped by PID when the handle drops. It runs
//! with `--stop-pods-on-exit` (its pods stop with it) unless started with [`Cluster::start_keeping_pods`],
//! whose pods outlive svcnet as a user's do and are killed on drop from the agent's records.
//!
//! The binary under test is an argument because only the `svcnet` crate's own integration tests can name
//! it; such a test file starts with
//!
//! ```ignore
//! use svcnet_testsupport::Cluster;
//!
//! /// The binary under test.
//! const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");
//!
//! #[test]
//! fn services_list() {
//!     let c = Cluster::start(SVCNET);
//!     assert!(c.ok(&["get", "services"]).contains("kubernetes"));
//! }
//! ```

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use crate::kubectl::{NEWEST, kubectl_path};

/// A running `svcnet up`.
pub struct Cluster {
    /// The `svcnet` binary (re)started by this handle.
    bin: PathBuf,
    child: Option<Child>,
    /// The data directory (kept across restarts).
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    /// The address the API server listens on.
    pub addr: String,
    extra: Vec<String>,
    /// Words run before `svcnet` and kubectl, e.g. `ip netns exec <node>` (empty: run directly).
    prefix: Vec<String>,
    /// Whether the node's pods outlive `svcnet up` (its default). Otherwise (the harness's default, so that
    /// no test leaves processes behind) it runs with `--stop-pods-on-exit`.
    keep_pods: bool,
}

impl Cluster {
    /// Starts a fresh cluster of the `svcnet` binary `bin` with default flags.
    pub fn start(bin: impl AsRef<Path>) -> Cluster {
        Self::start_with(bin, &[])
    }

    /// Starts a fresh cluster of `bin` with extra `svcnet up` flags.
    pub fn start_with(bin: impl AsRef<Path>, extra: &[&str]) -> Cluster {
        Self::start_behind(bin.as_ref(), &[], extra)
    }

    /// Starts a fresh cluster of `bin` inside the network namespace `netns` (`ip netns exec <netns> svcnet
    /// up …`); kubectl runs there too. The caller owns the namespace (see [`crate::netns::Namespaces`]).
    pub fn start_in_netns(bin: impl AsRef<Path>, netns: &str, extra: &[&str]) -> Cluster {
        Self::start_behind(bin.as_ref(), &["ip", "netns", "exec", netns], extra)
    }

    /// [`Cluster::start_in_netns`] with the API server on `listen` (`IP:0`, an address of the
    /// namespace's), which is then also the node's address.
    pub fn start_in_netns_at(bin: impl AsRef<Path>, netns: &str, listen: &str, extra: &[&str]) -> Cluster {
        Self::start_in(
            tempfile::tempdir().expect("tempdir"),
            bin.as_ref(),
            &["ip", "netns", "exec", netns],
            extra,
            false,
            listen,
        )
    }

    /// Starts a fresh cluster whose processes (svcnet, kubectl) run behind the command `prefix`, e.g.
    /// `prlimit --nofile=1024:2048 --` (`svcnet` must be exec'd, so that signals reach it).
    pub fn start_behind(bin: &Path, prefix: &[&str], extra: &[&str]) -> Cluster {
        Self::start_full(bin, prefix, extra, false)
    }

    /// Starts a fresh cluster of `bin` whose pods outlive `svcnet up` (no `--stop-pods-on-exit`), as a
    /// user's does. When the handle drops, the pods the node recorded are killed (verified by PID and start
    /// time), after svcnet.
    pub fn start_keeping_pods(bin: impl AsRef<Path>, extra: &[&str]) -> Cluster {
        Self::start_full(bin.as_ref(), &[], extra, true)
    }

    /// Starts another control-plane instance of `first`'s cluster (the two share a store through `extra`,
    /// e.g. `--control-plane-only --etcd-servers URL`). It gets `first`'s CA and token before it starts,
    /// as kubeadm copies them to every control-plane node, so one kubeconfig works against every instance.
    pub fn start_joining(bin: impl AsRef<Path>, first: &Cluster, extra: &[&str]) -> Cluster {
        let tmp = tempfile::tempdir().expect("tempdir");
        let pki = tmp.path().join("pki");
        std::fs::create_dir_all(&pki).expect("pki dir");
        // One CA, ServiceAccount signing key and token for all, as kubeadm copies them between
        // control-plane nodes (a token one server issued is good on every one).
        for f in ["ca.crt", "ca.key", "sa.key", "token"] {
            std::fs::copy(first.dir.join("pki").join(f), pki.join(f)).expect("copy the CA, key and token");
        }
        Self::start_in(tmp, bin.as_ref(), &[], extra, false, "127.0.0.1:0")
    }

    fn start_full(bin: &Path, prefix: &[&str], extra: &[&str], keep_pods: bool) -> Cluster {
        Self::start_in(
            tempfile::tempdir().expect("tempdir"),
            bin,
            prefix,
            extra,
            keep_pods,
            "127.0.0.1:0",
        )
    }

    fn start_in(
        tmp: tempfile::TempDir,
        bin: &Path,
        prefix: &[&str],
        extra: &[&str],
        keep_pods: bool,
        listen: &str,
    ) -> Cluster {
        let dir = tmp.path().to_path_buf();
        let mut c = Cluster {
            bin: bin.to_path_buf(),
            child: None,
            dir,
            _tmp: Some(tmp),
            addr: String::new(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            prefix: prefix.iter().map(|s| s.to_string()).collect(),
            keep_pods,
        };
        c.launch(listen);
        c
    }

    /// Whether the next [`Self::restart`] keeps pods running when svcnet exits (`false`: it passes
    /// `--stop-pods-on-exit`).
    pub fn set_keep_pods(&mut self, keep: bool) {
        self.keep_pods = keep;
    }

    /// A command for `program`, behind the cluster's prefix.
    fn command(&self, program: impl AsRef<OsStr>) -> Command {
        match self.prefix.split_first() {
            None => Command::new(program),
            Some((first, rest)) => {
                let mut cmd = Command::new(first);
                cmd.args(rest).arg(program);
                cmd
            }
        }
    }

    fn launch(&mut self, listen: &str) {
        // `ip netns exec` execs svcnet, so the child's PID is svcnet's (signals in `stop` reach it).
        let mut child = self
            .command(&self.bin)
            .arg("up")
            .arg("--data-dir")
            .arg(&self.dir)
            .arg("--api-listen")
            .arg(listen)
            .args((!self.keep_pods).then_some("--stop-pods-on-exit"))
            .args(&self.extra)
            // `SVCNET_TEST_LOG` turns on more of the server's log when a test is being investigated.
            .env(
                "RUST_LOG",
                std::env::var("SVCNET_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("svcnet.log"))
                    .expect("log file"),
            ))
            .spawn()
            .expect("spawn svcnet");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read the ready line");
        assert!(
            line.contains("svcnet is up"),
            "unexpected first line: {line:?}\nlog:\n{}",
            self.log()
        );
        self.child = Some(child);
        let kubeconfig = std::fs::read_to_string(self.kubeconfig()).expect("kubeconfig");
        self.addr = kubeconfig
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: https://"))
            .expect("server line")
            .to_string();
    }

    /// The kubeconfig path.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("svcnet.log")).unwrap_or_default()
    }

    /// The server process ID.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Stops the server with a signal and restarts it on the same data directory and address.
    pub fn restart(&mut self, signal: &str) {
        self.stop(signal);
        let addr = self.addr.clone();
        self.launch(&addr);
    }

    /// Starts the server again after [`Self::stop`], on the same data directory and address.
    pub fn start_again(&mut self) {
        let addr = self.addr.clone();
        self.launch(&addr);
    }

    /// Replaces the extra `svcnet up` flags the next [`Self::restart`] starts with.
    pub fn set_flags(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| s.to_string()).collect();
    }

    /// Stops the server with `signal` (`TERM` or `KILL`) and waits for it to exit.
    pub fn stop(&mut self, signal: &str) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .arg(format!("-{signal}"))
                .arg(child.id().to_string())
                .status();
            let _ = child.wait();
        }
    }

    /// Runs kubectl `version` with `args` (and `stdin`, if any), returning its output.
    pub fn kubectl_v(&self, version: &str, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_env(version, args, stdin, &[])
    }

    /// Runs kubectl `version` with extra environment variables: the one kubectl runner; every other
    /// kubectl helper goes through it. Each version gets its own discovery cache in the data directory.
    pub fn kubectl_env(
        &self,
        version: &str,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Output {
        let mut cmd = self.command(kubectl_path(version));
        cmd.args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .env("KUBECACHEDIR", self.dir.join(format!("kcache-{version}")))
            .env("HOME", &self.dir)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn kubectl");
        if let Some(input) = stdin {
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(input.as_bytes())
                .expect("write stdin");
        }
        child.wait_with_output().expect("kubectl output")
    }

    /// Runs the newest kubectl and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.ok_v(NEWEST, args, None)
    }

    /// Runs kubectl `version`, asserts success, returns stdout.
    pub fn ok_v(&self, version: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_v(version, args, stdin);
        assert!(
            out.status.success(),
            "kubectl {version} {args:?} failed:\nstdout: {}\nstderr: {}\nserver log tail:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 20)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl `version`, asserts failure, returns stderr.
    pub fn fail_v(&self, version: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_v(version, args, stdin);
        assert!(
            !out.status.success(),
            "kubectl {version} {args:?} unexpectedly succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A kube-rs client for the cluster, from its kubeconfig (feature `kube`).
    #[cfg(feature = "kube")]
    pub async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.kubeconfig()).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
        kube::Client::try_from(cfg).expect("client")
    }

    /// Names of the pods matching `selector` that are Ready and not being deleted.
    pub fn ready_pods(&self, selector: &str) -> Vec<String> {
        let pods = self.get_json(&["pods", "-l", selector]);
        pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
            .map(|p| p["metadata"]["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// Reads objects with `kubectl get ARGS -o json` (newest kubectl).
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl JSON")
    }

    /// Who holds the controller Lease `kube-system/NAME` (empty while it does not exist yet: a
    /// controller that has not started leading is no failure, and callers poll).
    pub fn lease_holder(&self, name: &str) -> String {
        let out = self.kubectl_v(
            NEWEST,
            &["get", "lease", "-n", "kube-system", name, "-o", "json"],
            None,
        );
        let lease: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        lease["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// When node `name` last renewed its Lease in `kube-node-lease`, in Unix seconds (0 while it has none).
    pub fn node_lease_renewed(&self, name: &str) -> i64 {
        self.get_json(&["lease", "-n", "kube-node-lease", name])["spec"]["renewTime"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(0, |t| t.as_second())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop("TERM");
        if self.keep_pods {
            kill_recorded_pods(&self.dir.join("agent"));
        }
        // `svcnet up --stop-pods-on-exit` stops its userspace proxy process itself; this covers a cluster
        // that keeps it, or a svcnet that did not get to.
        kill_recorded_proxy(&self.dir.join("proxy"));
    }
}

/// The node's userspace proxy process recorded in the state directory `dir` (`<data dir>/proxy`), if it
/// still runs (PID and start time as recorded).
pub fn recorded_proxy_process(dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join("state")).ok()?;
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix(' ')?.parse::<u64>().ok())
    };
    let pid = u32::try_from(field("pid")?).ok()?;
    (pid > 1 && proc_start(pid) == field("start")).then_some(pid)
}

/// Kills the userspace proxy process recorded in `dir` (a test's own, verified by PID and start time).
pub fn kill_recorded_proxy(dir: &Path) {
    if let Some(pid) = recorded_proxy_process(dir) {
        let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
    }
}

/// The container processes the node agent with data directory `root` recorded as running (see the
/// agent's `runner::record`) and that still run: the PIDs whose start time matches the record.
pub fn recorded_pod_processes(root: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root.join("pods"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(entry.path().join("state.json")) else {
            continue;
        };
        let Ok(rec) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        for c in ["init", "main"]
            .iter()
            .flat_map(|k| rec[*k].as_array().cloned().unwrap_or_default())
        {
            let pid = c["state"]["Running"]["container_id"]
                .as_str()
                .and_then(|id| id.strip_prefix("svcnet://"))
                .and_then(|p| p.parse::<u32>().ok());
            if let (Some(pid), Some(ticks)) = (pid, c["proc_start"].as_u64())
                && pid > 1
                && proc_start(pid) == Some(ticks)
            {
                out.push(pid);
            }
        }
    }
    out
}

/// A live process's start time in clock ticks after boot (`/proc/<pid>/stat` field 22).
pub fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Kills the process groups of the pods the agent with data directory `root` recorded (a test's own
/// pods, verified by PID and start time).
pub fn kill_recorded_pods(root: &Path) {
    for pid in recorded_pod_processes(root) {
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pid}")])
            .status();
    }
}

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Writes `contents` to `dir/name` and returns the path as a string.
pub fn write_file(dir: &Path, name: &str, contents: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write file");
    p.to_string_lossy().into_owned()
}
