//! `kubectl exec`, `cp` and `port-forward` through the API server to the node agent, with kubectl 1.33
//! (WebSocket; port-forward as SPDY tunnelled through WebSocket) and kubectl 1.27 (SPDY): output and
//! exit codes, stdin, the container's environment, working directory and container choice, files
//! copied both ways, and real TCP (HTTP and a 10 MiB body) through a forwarded local port to a pod, a
//! Deployment and a Service.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use svcnet_testsupport::kubectl::{KUBECTLS, kubectl_path};
use svcnet_testsupport::net::free_port;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn running(c: &Cluster, pod: &str) {
    assert!(
        eventually(
            Duration::from_secs(60),
            || c.get_json(&["pod", pod])["status"]["phase"] == "Running"
        ),
        "pod {pod} never ran"
    );
}

/// A pod with two long-running containers, each with its own environment and working directory.
fn two_container_pod(c: &Cluster, work: &str) {
    let yaml = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: box\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    command: [sleep, \"600\"]\n    workingDir: {work}\n    env: [{{name: WHO, value: main-container}}]\n  - name: second\n    image: busybox\n    command: [sleep, \"600\"]\n    env: [{{name: WHO, value: second-container}}]\n  - name: nobody\n    image: busybox\n    command: [sleep, \"600\"]\n    securityContext: {{runAsUser: 65534, runAsGroup: 65534}}\n"
    );
    c.ok_v("1.33", &["apply", "-f", "-"], Some(&yaml));
    running(c, "box");
}

#[test]
fn exec_runs_in_the_container_with_its_exit_code_and_stdin() {
    let c = Cluster::start(SVCNET);
    let work = c.dir.join("work-main");
    std::fs::create_dir_all(&work).unwrap();
    two_container_pod(&c, &work.display().to_string());
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: done\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: busybox\n    command: [\"true\"]\n"),
    );
    assert!(
        eventually(Duration::from_secs(60), || c.get_json(&["pod", "done"])["status"]
            ["phase"]
            == "Succeeded"),
        "the pod never completed"
    );
    for v in KUBECTLS {
        // Output on both streams, and the environment and working directory of the chosen container.
        let out = c.kubectl_v(
            v,
            &[
                "exec",
                "box",
                "-c",
                "main",
                "--",
                "sh",
                "-c",
                "echo $WHO in $(pwd); echo oops >&2",
            ],
            None,
        );
        assert!(
            out.status.success(),
            "kubectl {v}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("main-container in {}", work.display()),
            "kubectl {v}"
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("oops"),
            "kubectl {v}"
        );
        let out = c.ok_v(
            v,
            &[
                "exec",
                "box",
                "-c",
                "second",
                "--",
                "sh",
                "-c",
                "echo $WHO $POD_IP",
            ],
            None,
        );
        let ip = c.get_json(&["pod", "box"])["status"]["podIP"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(out.trim(), format!("second-container {ip}"), "kubectl {v}");

        // The container's user.
        let out = c.ok_v(v, &["exec", "box", "-c", "nobody", "--", "id", "-u"], None);
        assert_eq!(out.trim(), "65534", "kubectl {v}");

        // The command's exit code is kubectl's.
        let out = c.kubectl_v(
            v,
            &["exec", "box", "-c", "main", "--", "sh", "-c", "exit 7"],
            None,
        );
        assert_eq!(out.status.code(), Some(7), "kubectl {v}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("command terminated with exit code 7"),
            "kubectl {v}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // A program that does not exist: 127, with a message.
        let out = c.kubectl_v(
            v,
            &["exec", "box", "-c", "main", "--", "no-such-program-xyz"],
            None,
        );
        assert_eq!(out.status.code(), Some(127), "kubectl {v}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no-such-program-xyz"),
            "kubectl {v}: {}",
            String::from_utf8_lossy(&out.stderr)
        );

        // Stdin is piped through and its end reaches the command (`wc` prints only at EOF).
        let input: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let out = c.ok_v(
            v,
            &["exec", "-i", "box", "-c", "main", "--", "wc", "-c"],
            Some(&input),
        );
        assert_eq!(out.trim(), input.len().to_string(), "kubectl {v}");
        let out = c.ok_v(
            v,
            &["exec", "-i", "box", "-c", "main", "--", "cat"],
            Some("hello\nworld\n"),
        );
        assert_eq!(out, "hello\nworld\n", "kubectl {v}");

        // Bad input: kube-apiserver's messages.
        let err = c.fail_v(v, &["exec", "box", "-c", "nope", "--", "true"], None);
        assert!(
            err.contains("container nope is not valid for pod box") || err.contains("nope"),
            "{err}"
        );
        let err = c.fail_v(v, &["exec", "ghost", "--", "true"], None);
        assert!(err.contains(r#"pods "ghost" not found"#), "{err}");
        // A completed pod: kube-apiserver's refusal.
        let err = c.fail_v(v, &["exec", "done", "--", "true"], None);
        assert!(
            err.contains("cannot exec into a container in a completed pod; current phase is Succeeded"),
            "kubectl {v}: {err}"
        );
        // Attaching to stdin is refused with a reason: containers' stdin is /dev/null.
        let err = c.fail_v(v, &["attach", "-i", "box", "-c", "main"], Some(""));
        assert!(err.contains("has no stdin to attach to"), "kubectl {v}: {err}");
    }
    // kubectl 1.33 spoke WebSocket (it falls back to SPDY silently when an upgrade fails), 1.27 SPDY.
    let log = c.log();
    for (transport, protocol) in [("websocket", "v5.channel.k8s.io"), ("spdy", "v4.channel.k8s.io")] {
        assert!(
            log.lines().any(|l| l.contains("streaming session")
                && l.contains(&format!("transport=\"{transport}\""))
                && l.contains(protocol)),
            "no {transport} exec session in the log"
        );
    }
    // Without an upgrade (or over HTTP/2, which cannot switch protocols): a 400 Status.
    let token = std::fs::read_to_string(c.dir.join("pki/token")).unwrap();
    for http in ["--http1.1", "--http2"] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "20", http, "-X", "POST", "--cacert"])
            .arg(c.dir.join("pki/ca.crt"))
            .args(["-H", &format!("Authorization: Bearer {}", token.trim())])
            .arg(format!(
                "https://{}/api/v1/namespaces/default/pods/box/exec?container=main&command=true&stdout=true",
                c.addr
            ))
            .output()
            .expect("curl");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            body.contains(r#""kind":"Status""#)
                && body.contains("Upgrade request required")
                && body.contains(r#""code":400"#),
            "{http}: {body}"
        );
    }
    // Discovery lists the streaming subresources, as kube-apiserver does.
    let v1 = c.ok(&["get", "--raw", "/api/v1"]);
    for sub in ["pods/exec", "pods/attach", "pods/portforward"] {
        assert!(v1.contains(&format!("\"{sub}\"")), "{sub} not in discovery");
    }
}

/// Whether `pid` is a live process (not gone, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[test]
fn a_terminal_attach_and_a_client_that_goes_away() {
    let c = Cluster::start(SVCNET);
    let work = c.dir.join("work-main");
    std::fs::create_dir_all(&work).unwrap();
    two_container_pod(&c, &work.display().to_string());
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Pod\nmetadata:\n  name: ticker\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    command: [sh, -c, \"i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done\"]\n"),
    );
    running(&c, "ticker");
    for v in KUBECTLS {
        // `kubectl attach` follows the container's output from now on.
        let mut child = Command::new(kubectl_path(v))
            .args(["attach", "ticker"])
            .env("KUBECONFIG", c.kubeconfig())
            .env("HOME", &c.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl attach");
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let ticks: Vec<String> = (0..3)
            .filter_map(|_| rx.recv_timeout(Duration::from_secs(20)).ok())
            .collect();
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(ticks.len(), 3, "kubectl {v}: {ticks:?}");
        assert!(
            ticks.iter().all(|t| t.starts_with("tick ")),
            "kubectl {v}: {ticks:?}"
        );

        // `-it` under a terminal (`script` gives kubectl one): the command gets a terminal of the
        // client's size as its controlling terminal, and its exit code comes back.
        let kubectl = kubectl_path(v).display().to_string();
        let line = format!(
            "stty cols 123 rows 45; {kubectl} exec -it box -c main -- sh -c 'tty; stty size; exit 4'"
        );
        let out = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("KUBECONFIG", c.kubeconfig())
            .env("HOME", &c.dir)
            .stdin(Stdio::null())
            .output()
            .expect("script (util-linux)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("/dev/pts/"), "kubectl {v}: {text}");
        assert!(text.contains("45 123"), "kubectl {v}: {text}");
        assert_eq!(out.status.code(), Some(4), "kubectl {v}: {text}");

        // A client that disconnects mid-stream takes its command with it.
        let pidfile = c.dir.join(format!("exec-{v}.pid"));
        let mut child = Command::new(kubectl_path(v))
            .args(["exec", "box", "-c", "main", "--", "sh", "-c"])
            .arg(format!("echo $$ > {}; exec sleep 300", pidfile.display()))
            .env("KUBECONFIG", c.kubeconfig())
            .env("HOME", &c.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl exec");
        let mut pid = 0u32;
        assert!(
            eventually(Duration::from_secs(20), || {
                pid = std::fs::read_to_string(&pidfile)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                pid > 0 && alive(pid)
            }),
            "kubectl {v}: the exec'd command never started"
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(
            eventually(Duration::from_secs(15), || !alive(pid)),
            "kubectl {v}: the command (pid {pid}) outlived its client"
        );
    }
}

#[test]
fn cp_copies_files_both_ways() {
    let c = Cluster::start(SVCNET);
    let work = c.dir.join("work-main");
    std::fs::create_dir_all(&work).unwrap();
    two_container_pod(&c, &work.display().to_string());
    for v in KUBECTLS {
        // Into the pod (pods see the host's file system).
        let local = c.dir.join(format!("upload-{v}.txt"));
        let body: String = (0..5_000)
            .map(|i| format!("row {i} from kubectl {v}\n"))
            .collect();
        std::fs::write(&local, &body).unwrap();
        let remote = work.join(format!("in-{v}.txt"));
        c.ok_v(
            v,
            &[
                "cp",
                "-c",
                "main",
                &local.display().to_string(),
                &format!("box:{}", remote.display()),
            ],
            None,
        );
        assert_eq!(std::fs::read_to_string(&remote).unwrap(), body, "kubectl {v}");
        // And out of it.
        let back = c.dir.join(format!("download-{v}.txt"));
        c.ok_v(
            v,
            &[
                "cp",
                "-c",
                "main",
                &format!("box:{}", remote.display()),
                &back.display().to_string(),
            ],
            None,
        );
        assert_eq!(std::fs::read_to_string(&back).unwrap(), body, "kubectl {v}");
    }
}

/// A running `kubectl port-forward`, stopped (by its PID) when dropped.
struct Forward {
    child: Child,
    port: u16,
}

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn port_forward(c: &Cluster, v: &str, target: &str, remote: u16) -> Forward {
    let mut cmd = Command::new(kubectl_path(v));
    cmd.stderr(Stdio::null());
    port_forward_with(cmd, c, v, target, remote)
}

/// [`port_forward`] with kubectl started by `cmd` (inside a network namespace, say).
fn port_forward_with(mut cmd: Command, c: &Cluster, v: &str, target: &str, remote: u16) -> Forward {
    let mut child = cmd
        .args([
            "port-forward",
            target,
            &format!(":{remote}"),
            "--address",
            "127.0.0.1",
        ])
        .env("KUBECONFIG", c.kubeconfig())
        .env("HOME", &c.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    // `Forwarding from 127.0.0.1:43215 -> 8080`
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = lines.next().and_then(Result::ok).unwrap_or_default();
    let port = line
        .split("127.0.0.1:")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("kubectl {v} port-forward {target}: {line:?}"));
    // Keep reading its output so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Forward { child, port }
}

/// A plain HTTP/1.0 GET through the forwarded port: status line and body.
fn get(port: u16, path: &str) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the forwarded port");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: pod\r\n\r\n").unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read the answer");
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer")
        + 4;
    let head = String::from_utf8_lossy(&all[..split]).into_owned();
    (
        head.lines().next().unwrap_or_default().to_string(),
        all[split..].to_vec(),
    )
}

#[test]
fn port_forward_carries_http_and_a_large_body_to_pods_deployments_and_services() {
    let c = Cluster::start(SVCNET);
    let port = free_port("127.0.0.1");
    let site = c.dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("hello.txt"), "hello through port-forward\n").unwrap();
    // 10 MiB that is not all the same byte.
    let big: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(site.join("big.bin"), &big).unwrap();
    let yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 1\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: web}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        image: python:3\n        workingDir: {}\n        command: [sh, -c, \"exec python3 -m http.server {port} --bind $POD_IP\"]\n        readinessProbe:\n          tcpSocket: {{port: {port}}}\n          periodSeconds: 1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {{app: web}}\n  ports:\n  - port: 80\n    targetPort: {port}\n",
        site.display()
    );
    c.ok_v("1.33", &["apply", "-f", "-"], Some(&yaml));
    assert!(
        eventually(Duration::from_secs(60), || c.ready_pods("app=web").len() == 1),
        "the web pod never became ready"
    );
    let pod = c.ready_pods("app=web")[0].clone();
    for v in KUBECTLS {
        for (target, remote) in [
            (format!("pod/{pod}"), port),
            ("deploy/web".to_string(), port),
            ("svc/web".to_string(), 80),
        ] {
            let fwd = port_forward(&c, v, &target, remote);
            let (status, body) = get(fwd.port, "/hello.txt");
            assert!(status.contains("200"), "kubectl {v} {target}: {status}");
            assert_eq!(body, b"hello through port-forward\n", "kubectl {v} {target}");
            // Several connections through one session, one of them large.
            let started = Instant::now();
            let (status, body) = get(fwd.port, "/big.bin");
            assert!(status.contains("200"), "kubectl {v} {target}: {status}");
            assert!(
                body == big,
                "kubectl {v} {target}: {} bytes, not the 10 MiB",
                body.len()
            );
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{:?}",
                started.elapsed()
            );
            let (status, _) = get(fwd.port, "/missing");
            assert!(status.contains("404"), "kubectl {v} {target}: {status}");
        }
    }
    // A port nothing listens on: the forwarded connection closes and kubectl says why.
    let closed = free_port("127.0.0.1");
    for v in KUBECTLS {
        let errors = c.dir.join(format!("port-forward-{v}.err"));
        let mut cmd = Command::new(kubectl_path(v));
        cmd.stderr(std::fs::File::create(&errors).unwrap());
        let mut fwd = port_forward_with(cmd, &c, v, &format!("pod/{pod}"), closed);
        let mut s = TcpStream::connect(("127.0.0.1", fwd.port)).expect("connect to the forwarded port");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(got.is_empty(), "kubectl {v}: {got:?}");
        assert!(
            eventually(Duration::from_secs(10), || std::fs::read_to_string(&errors)
                .unwrap_or_default()
                .contains("connection refused")),
            "kubectl {v}: {}",
            std::fs::read_to_string(&errors).unwrap_or_default()
        );
        let _ = fwd.child.kill();
    }
    // 1.33 tunnelled SPDY through WebSocket; 1.27 spoke SPDY.
    let log = c.log();
    for transport in ["websocket", "spdy"] {
        assert!(
            log.lines().any(|l| l.contains("streaming session")
                && l.contains("PortForward")
                && l.contains(&format!("transport=\"{transport}\""))),
            "no {transport} port-forward session in the log"
        );
    }
}

/// In the netns pod network, exec runs inside the pod's own network namespace (and UTS namespace), and
/// port-forward reaches the pod's address on the node's bridge. Root only: skipped (and passing)
/// otherwise.
#[test]
fn exec_and_port_forward_in_the_netns_pod_network() {
    use svcnet_testsupport::netns::{Namespaces, POD_NETWORK_FLAGS, can_run, command_in};
    if let Err(why) = can_run() {
        println!("skipped: {why} (the netns pod network creates network namespaces)");
        return;
    }
    let ns = Namespaces::create();
    // Declared after `ns`, so dropped first: svcnet stops before the guard removes what is left.
    let c = Cluster::start_in_netns(SVCNET, &ns.node.name, &POD_NETWORK_FLAGS);
    let yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {app: web}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: python:3\n    command: [sh, -c, \"cd $(mktemp -d) && echo inside > id && (python3 -m http.server 8081 --bind 127.0.0.1 &) && exec python3 -m http.server 8080\"]\n    readinessProbe:\n      exec: {command: [python3, -c, \"import socket; [socket.create_connection(('127.0.0.1', p)) for p in (8080, 8081)]\"]}\n      periodSeconds: 1\n";
    c.ok_v("1.33", &["apply", "-f", "-"], Some(yaml));
    assert!(
        eventually(Duration::from_secs(60), || c
            .ready_pods("app=web")
            .contains(&"web".to_string())),
        "the pod never became ready"
    );
    let ip = c.get_json(&["pod", "web"])["status"]["podIP"]
        .as_str()
        .unwrap()
        .to_string();
    for v in KUBECTLS {
        let out = c.ok_v(
            v,
            &[
                "exec",
                "web",
                "--",
                "sh",
                "-c",
                "ip -o -4 addr show dev eth0; hostname",
            ],
            None,
        );
        assert!(out.contains(&format!("inet {ip}/")), "kubectl {v}: {out}");
        assert!(out.lines().any(|l| l.trim() == "web"), "kubectl {v}: {out}");
        // The pod's address, and (as a container runtime forwards) localhost inside the pod.
        for port in [8080, 8081] {
            let kubectl = kubectl_path(v).display().to_string();
            let mut cmd = command_in(&ns.node.name, &kubectl);
            cmd.stderr(Stdio::null());
            let fwd = port_forward_with(cmd, &c, v, "pod/web", port);
            let out = command_in(&ns.node.name, "curl")
                .args(["-sS", "--max-time", "20"])
                .arg(format!("http://127.0.0.1:{}/id", fwd.port))
                .output()
                .expect("curl");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                "inside\n",
                "kubectl {v} :{port}: {out:?}"
            );
        }
    }
}

/// Sends a SPDY exec upgrade straight to the node agent (as the API server does) and returns the
/// connection with the status code of its answer.
fn agent_upgrade(agent: &str, credential: &str) -> (TcpStream, u16) {
    let mut s = TcpStream::connect(agent).expect("connect to the agent");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "POST /exec/default/box/main?command=sleep&command=1&stdout=true HTTP/1.1\r\nHost: {agent}\r\nAuthorization: Bearer {credential}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && s.read(&mut byte).unwrap_or(0) == 1 {
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (s, code)
}

/// The agent runs at most `MAX_SESSIONS` streaming sessions: one more is refused with 429 (not queued,
/// not crashed), and a slot frees as soon as a client goes away.
#[test]
fn streaming_sessions_are_bounded() {
    let c = Cluster::start(SVCNET);
    let work = c.dir.join("work-main");
    std::fs::create_dir_all(&work).unwrap();
    two_container_pod(&c, &work.display().to_string());
    let node_name = c.get_json(&["pod", "box"])["spec"]["nodeName"]
        .as_str()
        .unwrap()
        .to_string();
    let node = c.get_json(&["node", &node_name]);
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .unwrap();
    let ip = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .and_then(|a| a["address"].as_str())
        .unwrap()
        .to_string();
    assert!(
        ip.starts_with("127."),
        "the agent listens on loopback in this cluster: {ip}"
    );
    let agent = format!("{ip}:{port}");
    let token = std::fs::read_to_string(c.dir.join("pki/token")).unwrap();
    let credential = svcnet_agent::agent::logs_credential(token.trim());
    // Without the credential the API server holds, the agent serves nothing.
    assert_eq!(agent_upgrade(&agent, "not-the-credential").1, 401);
    let max = svcnet_agent::agent::MAX_STREAMING_SESSIONS;
    // Sessions that never open their streams hold their slot (up to the stream-creation timeout).
    let mut held: Vec<TcpStream> = (0..max)
        .map(|i| {
            let (s, code) = agent_upgrade(&agent, &credential);
            assert_eq!(code, 101, "session {i}");
            s
        })
        .collect();
    let (mut s, code) = agent_upgrade(&agent, &credential);
    assert_eq!(code, 429);
    // The connection stays open after the answer: read what arrives within a second.
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let mut body = Vec::new();
    let _ = s.read_to_end(&mut body);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("too many streaming sessions"), "{body}");
    // A client that leaves frees its slot.
    drop(held.pop());
    assert!(
        eventually(Duration::from_secs(10), || agent_upgrade(&agent, &credential).1
            == 101),
        "no slot came free"
    );
    drop(held);
    // And kubectl works again once the others are gone.
    assert!(eventually(Duration::from_secs(10), || c
        .kubectl_v("1.33", &["exec", "box", "-c", "main", "--", "true"], None)
        .status
        .success()));
}
