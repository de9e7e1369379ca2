//! A real `svcnet lab` for a test (root only): a multi-node cluster of network namespaces made by the
//! binary under test, driven with real kubectl on the host and real commands inside its nodes and client.
//!
//! Each lab gets a random name (`t` and six hex digits, so its namespaces are `svl-t…-…`) and a temporary
//! root directory, so tests run in parallel; `Drop` (also on panic) runs `svcnet lab down`, which stops
//! the lab's processes and deletes its namespaces.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::kubectl::{NEWEST, kubectl_path};
use crate::netns::command_in;

/// A pod's (or the client's) server: answers every TCP connection on port ARGV[2] with `ARGV[1] PEER-IP`
/// and prints `listening` once it listens.
pub const ECHO_SERVER: &str = r#"
import socket, sys
name, port = sys.argv[1], int(sys.argv[2])
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(128)
print("listening", flush=True)
while True:
    c, a = s.accept()
    try:
        c.sendall(("%s %s\n" % (name, a[0])).encode())
    except OSError:
        pass
    c.close()
"#;

/// A pod that calls: connects to every `IP:PORT` argument twice a second (for at most 5 minutes) and
/// prints `answer IP:PORT <what ECHO_SERVER said>` or `error IP:PORT <exception>`.
pub const CALLER: &str = r#"
import socket, sys, time
for _ in range(600):
    for t in sys.argv[1:]:
        ip, port = t.rsplit(":", 1)
        try:
            s = socket.create_connection((ip, int(port)), timeout=2)
            print("answer", t, s.recv(200).decode().strip(), flush=True)
            s.close()
        except Exception as e:
            print("error", t, type(e).__name__, flush=True)
    time.sleep(0.5)
"#;

/// A bounded load generator: `IP PORT SECONDS RATE TIMEOUT` opens RATE new TCP connections a second to
/// `IP:PORT` for SECONDS (each given TIMEOUT seconds to connect and answer; at most 1,000 open at once),
/// prints `answered` on its own line at the first answer, then one JSON object: how many were started,
/// answers by pod, each failure as `[unix start time, exception]`, and each pod's last answer (unix
/// start time of the request).
pub const LOADER: &str = r#"
import asyncio, json, sys, time
ip, port, seconds, rate, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
hits, failures, last, started = {}, [], {}, 0
first = True
async def one(sem):
    global first
    t = time.time()
    try:
        async with sem:
            r, w = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
            try:
                data = await asyncio.wait_for(r.readline(), timeout)
            finally:
                w.close()
        pod = data.decode().split()[0]
        hits[pod] = hits.get(pod, 0) + 1
        last[pod] = max(last.get(pod, 0), t)
        if first:
            first = False
            print("answered", flush=True)
    except Exception as e:
        failures.append([t, type(e).__name__])
async def main():
    global started
    sem = asyncio.Semaphore(1000)
    tasks = []
    t0 = time.monotonic()
    total = int(seconds * rate)
    while started < total:
        due = t0 + started / rate
        now = time.monotonic()
        if due > now:
            await asyncio.sleep(due - now)
        tasks.append(asyncio.ensure_future(one(sem)))
        started += 1
    await asyncio.gather(*tasks)
asyncio.run(main())
if first:
    print("no answer", flush=True)
print(json.dumps({"started": started, "hits": hits, "failures": failures, "last": last}))
"#;

/// What a [`LOADER`] run saw.
#[derive(Debug, Default)]
pub struct LoadResult {
    /// Requests started.
    pub started: u64,
    /// Answers by pod name.
    pub hits: std::collections::BTreeMap<String, u64>,
    /// Failed requests: when each started (Unix seconds) and what the exception was.
    pub failures: Vec<(f64, String)>,
    /// When the last request each pod answered started (Unix seconds).
    pub last: std::collections::BTreeMap<String, f64>,
}

/// A [`LOADER`] running in a namespace; killed by its PID if dropped unfinished.
pub struct Load {
    child: Option<std::process::Child>,
}

impl Load {
    /// Starts the loader in `netns` against `ip:port` and waits for its first answer (false if it ended
    /// without one).
    pub fn start(netns: &str, ip: &str, port: u16, seconds: f64, rate: u32, timeout: f64) -> (Load, bool) {
        use std::io::Read;
        let mut child = command_in(netns, "timeout")
            .args(["300", "python3", "-c", LOADER, ip, &port.to_string()])
            .args([seconds.to_string(), rate.to_string(), timeout.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the loader");
        let mut line = Vec::new();
        if let Some(out) = child.stdout.as_mut() {
            let mut byte = [0u8; 1];
            while out.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
                line.push(byte[0]);
            }
        }
        (Load { child: Some(child) }, line == b"answered")
    }

    /// Waits for the loader to finish and parses its report.
    pub fn finish(mut self) -> LoadResult {
        let child = self.child.take().expect("running");
        let out = child.wait_with_output().expect("loader output");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("loader output {text:?}: {e}"));
        let map_u = |k: &str| {
            v[k].as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                .collect()
        };
        LoadResult {
            started: v["started"].as_u64().unwrap_or(0),
            hits: map_u("hits"),
            failures: v["failures"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| {
                    (
                        f[0].as_f64().unwrap_or(0.0),
                        f[1].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect(),
            last: v["last"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.clone(), v.as_f64().unwrap_or(0.0)))
                .collect(),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Now, in Unix seconds (what [`LoadResult`]'s times are compared with).
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A pod manifest (JSON) in `default` on `node` running `python3 -c SCRIPT ARGS…`, with `labels`; with
/// `port`, ready once it accepts TCP connections there.
pub fn python_pod(
    name: &str,
    node: &str,
    script: &str,
    args: &[&str],
    port: Option<u16>,
    labels: &[(&str, &str)],
) -> String {
    let mut command = vec!["python3", "-c", script];
    command.extend_from_slice(args);
    let mut container = serde_json::json!({"name": "main", "image": "python:3", "command": command});
    if let Some(port) = port {
        container["readinessProbe"] = serde_json::json!({"tcpSocket": {"port": port}, "periodSeconds": 1});
    }
    let labels: serde_json::Map<String, serde_json::Value> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [container],
        },
    })
    .to_string()
}

/// From inside network namespace `netns`: one TCP connection to `ip:port` and what the server said
/// (`error …` if none).
pub fn ask_from(netns: &str, ip: &str, port: u16) -> String {
    let script = "import socket,sys\ntry:\n    s=socket.create_connection((sys.argv[1],int(sys.argv[2])),timeout=2)\n    print(s.recv(200).decode().strip())\nexcept OSError as e:\n    print('error', e)\n";
    command_in(netns, "python3")
        .args(["-c", script, ip, &port.to_string()])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// A process a test started; killed by its PID when dropped.
pub struct Proc(pub std::process::Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running lab.
pub struct MultiNodeLab {
    bin: PathBuf,
    /// The lab's name.
    pub name: String,
    root: tempfile::TempDir,
    /// How long `svcnet lab up` took.
    pub up_time: Duration,
}

/// What the machine's own network namespace looks like: names of namespaces, links, routes, rules and
/// the nftables ruleset. Compared before and after a lab, it shows that the lab left nothing behind and
/// never touched the host's network.
#[derive(Debug, PartialEq, Eq)]
pub struct HostNet {
    /// `ip netns list` (names only).
    pub netns: Vec<String>,
    /// Link names.
    pub links: Vec<String>,
    /// `ip route show table all`.
    pub routes: String,
    /// `ip rule`.
    pub rules: String,
    /// `nft list ruleset` (empty when nft is missing).
    pub nft: String,
}

fn stdout(args: &[&str]) -> String {
    Command::new(args[0])
        .args(&args[1..])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

impl HostNet {
    /// Reads the host's network state now, ignoring what belongs to other tests running at the same
    /// time: namespaces not of a lab (`svl-…`), and pod veths/namespaces of other clusters. Only
    /// meaningful as a comparison on a machine where nothing else changes the root namespace.
    pub fn now() -> HostNet {
        let netns = stdout(&["ip", "netns", "list"])
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|n| n.starts_with("svl-"))
            .collect();
        let mut links: Vec<String> = stdout(&["ip", "-o", "link"])
            .lines()
            .filter_map(|l| l.split(':').nth(1).map(|n| n.trim().to_string()))
            .collect();
        links.sort();
        HostNet {
            netns,
            links,
            routes: stdout(&["ip", "route", "show", "table", "all"]),
            rules: stdout(&["ip", "rule"]),
            nft: stdout(&["nft", "list", "ruleset"]),
        }
    }

    /// The `svl-` namespaces of lab `name`.
    pub fn lab_namespaces(&self, name: &str) -> Vec<&String> {
        let prefix = format!("svl-{name}-");
        self.netns.iter().filter(|n| n.starts_with(&prefix)).collect()
    }
}

impl MultiNodeLab {
    /// `svcnet lab up --nodes N` with `extra` flags; panics with the command's output if it fails.
    pub fn up(bin: impl AsRef<Path>, nodes: usize, extra: &[&str]) -> MultiNodeLab {
        let seed = {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish() as u32
        };
        let name = format!("t{:06x}", seed & 0xff_ffff);
        let root = tempfile::tempdir().expect("tempdir");
        let mut lab = MultiNodeLab {
            bin: bin.as_ref().to_path_buf(),
            name,
            root,
            up_time: Duration::ZERO,
        };
        let start = Instant::now();
        let nodes = nodes.to_string();
        let mut args = vec!["up", "--nodes", &nodes];
        args.extend_from_slice(extra);
        let out = lab.lab(&args);
        lab.up_time = start.elapsed();
        assert!(
            out.status.success(),
            "svcnet lab up failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        lab
    }

    /// Runs `svcnet lab COMMAND --name NAME --root ROOT REST…` for `args` = `[COMMAND, REST…]`.
    pub fn lab(&self, args: &[&str]) -> Output {
        let (command, rest) = args.split_first().expect("a lab command");
        Command::new(&self.bin)
            .args(["lab", command, "--name", &self.name])
            .arg("--root")
            .arg(self.root.path())
            .args(rest)
            .stdin(Stdio::null())
            .output()
            .expect("run svcnet lab")
    }

    /// The lab's directory.
    pub fn dir(&self) -> PathBuf {
        self.root.path().join(&self.name)
    }

    /// The lab's root (what `--root` gets).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// The kubeconfig the lab wrote.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir().join("kubeconfig")
    }

    /// The lab's state file, parsed.
    pub fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir().join("lab.json")).expect("lab.json");
        serde_json::from_str(&text).expect("lab.json is JSON")
    }

    /// Runs the newest kubectl on the host against the lab, as the admin.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.kubectl_with(&self.kubeconfig(), args, stdin)
    }

    /// The kubeconfig node `node` joined with: its own certificate, in its data directory.
    pub fn node_kubeconfig(&self, node: &str) -> PathBuf {
        self.dir().join(node).join("kubeconfig")
    }

    /// Who node `node`'s credential is (`kubectl auth whoami` with its kubeconfig).
    pub fn node_identity(&self, node: &str) -> String {
        let out = self.kubectl_with(
            &self.node_kubeconfig(node),
            &["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"],
            None,
        );
        assert!(
            out.status.success(),
            "kubectl auth whoami as {node}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the newest kubectl on the host against the lab with `kubeconfig`.
    pub fn kubectl_with(&self, kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = Command::new(kubectl_path(NEWEST))
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("KUBECACHEDIR", self.root.path().join("kcache"))
            .env("HOME", self.root.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kubectl");
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

    /// kubectl, asserting success; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args, None);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply -f -` of `yaml`, asserting success.
    pub fn apply(&self, yaml: &str) {
        let out = self.kubectl(&["apply", "-f", "-"], Some(yaml));
        assert!(
            out.status.success(),
            "kubectl apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["get"];
        a.extend_from_slice(args);
        a.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl JSON")
    }

    /// Waits up to `timeout` until pod `default/NAME` is Ready and returns it; panics with the pod and
    /// the node logs if it never is.
    pub fn wait_pod_ready(&self, name: &str, timeout: Duration) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        let ready = crate::eventually(timeout, || {
            let out = self.kubectl(&["get", "pod", name, "-o", "json"], None);
            last = serde_json::from_slice(&out.stdout).unwrap_or_default();
            last["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        assert!(ready, "pod {name} never became Ready: {last}");
        last
    }

    /// `kubectl logs NAME` of a pod in `default` ("" while there is none): through the API server and
    /// the lab's tunnel to the pod's node agent.
    pub fn pod_logs(&self, name: &str) -> String {
        String::from_utf8_lossy(&self.kubectl(&["logs", name], None).stdout).into_owned()
    }

    /// The network namespace of a node or of `client`, from the state file.
    pub fn netns_of(&self, member: &str) -> String {
        let state = self.state();
        if member == "client" {
            return state["client"].as_str().expect("client netns").to_string();
        }
        state["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"] == member)
            .and_then(|n| n["netns"].as_str())
            .unwrap_or_else(|| panic!("the lab has no node {member}"))
            .to_string()
    }

    /// `svcnet lab exec MEMBER -- ARGS` (unchecked).
    pub fn exec(&self, member: &str, args: &[&str]) -> Output {
        let mut a = vec!["exec", member, "--"];
        a.extend_from_slice(args);
        self.lab(&a)
    }

    /// [`Self::exec`], asserting success; its stdout.
    pub fn exec_ok(&self, member: &str, args: &[&str]) -> String {
        let out = self.exec(member, args);
        assert!(
            out.status.success(),
            "lab exec {member} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A node's (or the client's) log file in the lab's directory.
    pub fn log(&self, member: &str) -> String {
        std::fs::read_to_string(self.dir().join(format!("{member}.log"))).unwrap_or_default()
    }

    /// `svcnet lab down`; true when it succeeded. [`Drop`] does the same.
    pub fn down(&self) -> bool {
        self.lab(&["down"]).status.success()
    }
}

impl Drop for MultiNodeLab {
    fn drop(&mut self) {
        let out = self.lab(&["down"]);
        if !out.status.success() {
            eprintln!(
                "svcnet lab down {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
