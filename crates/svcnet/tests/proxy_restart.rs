//! Service traffic outlives svcnet (issue 20, item 2, userspace backend): the node's userspace proxy runs
//! in a process of its own that `svcnet up` adopts after a restart, so a bounded load of new connections
//! (through a ClusterIP and a NodePort) and a few long-lived connections see no failure while `svcnet
//! up` is stopped with SIGTERM and with SIGKILL and started again; and a second proxy process takes the
//! first one's listening sockets over (SCM_RIGHTS) while the first drains, refusing nothing.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use svcnet_testsupport::agent::Agent;
use svcnet_testsupport::cluster::recorded_proxy_process;
use svcnet_testsupport::net::free_port;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(60);

/// A Deployment of `replicas` line-echo servers on `port` behind a NodePort Service `echo` (port 80).
fn echo_manifest(port: u16, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: echo
spec:
  replicas: {replicas}
  selector:
    matchLabels:
      app: echo
  template:
    metadata:
      labels:
        app: echo
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: echo
        image: python:3
        command:
        - python3
        - -c
        - |
          import os, socketserver
          class H(socketserver.StreamRequestHandler):
              def handle(self):
                  for line in self.rfile:
                      self.wfile.write(line)
                      self.wfile.flush()
          socketserver.ThreadingTCPServer.allow_reuse_address = True
          socketserver.ThreadingTCPServer.daemon_threads = True
          socketserver.ThreadingTCPServer((os.environ["POD_IP"], {port}), H).serve_forever()
        readinessProbe:
          tcpSocket: {{port: {port}}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: echo
spec:
  type: NodePort
  selector:
    app: echo
  ports:
  - port: 80
    targetPort: {port}
"#
    )
}

/// One request on a new connection: a line out, the same line back.
fn echo_once(addr: &str) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
        .map_err(|e| format!("connect: {e}"))?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    s.write_all(b"ping\n").map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    BufReader::new(&s)
        .read_line(&mut line)
        .map_err(|e| format!("read: {e}"))?;
    if line == "ping\n" {
        Ok(())
    } else {
        Err(format!("answer {line:?}"))
    }
}

/// What a load run saw.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    failed: AtomicU64,
    /// The first few failures, for the assertion message.
    errors: Mutex<Vec<String>>,
}

impl Counts {
    fn fail(&self, what: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut e = self.errors.lock().unwrap();
        if e.len() < 10 {
            e.push(what);
        }
    }
}

/// Load against `targets` until `stop`: `threads` threads of new connections (one request each, every
/// 15 ms per thread, at most 60 s and 8,000 requests per thread), and one long-lived connection per
/// target sending a line every 100 ms. Returns (new connections, long-lived connections) counts.
/// The request count only shows that the load ran: on a loaded 2-core machine a thread manages far
/// fewer than one request per 15 ms, so the tests ask for a few hundred at most.
struct Load {
    stop: Arc<AtomicBool>,
    new_conns: Arc<Counts>,
    long_lived: Arc<Counts>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(targets: &[String], threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (new_conns, long_lived) = (Arc::new(Counts::default()), Arc::new(Counts::default()));
        let mut handles = Vec::new();
        for t in 0..threads {
            let (stop, counts, targets) = (stop.clone(), new_conns.clone(), targets.to_vec());
            handles.push(std::thread::spawn(move || {
                let start = Instant::now();
                let mut i = t;
                while !stop.load(Ordering::Relaxed)
                    && i < 8_000 * threads
                    && start.elapsed() < Duration::from_secs(60)
                {
                    let target = &targets[i % targets.len()];
                    counts.sent.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = echo_once(target) {
                        counts.fail(format!("{target}: {e}"));
                    }
                    i += threads;
                    std::thread::sleep(Duration::from_millis(15));
                }
            }));
        }
        for target in targets {
            let (stop, counts, target) = (stop.clone(), long_lived.clone(), target.clone());
            handles.push(std::thread::spawn(move || {
                let start = Instant::now();
                counts.sent.fetch_add(1, Ordering::Relaxed);
                let s = match TcpStream::connect(&target) {
                    Ok(s) => s,
                    Err(e) => return counts.fail(format!("{target}: connect: {e}")),
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(3)));
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut writer = s;
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(60) {
                    let msg = format!("line {n}\n");
                    let mut line = String::new();
                    let r = writer
                        .write_all(msg.as_bytes())
                        .and_then(|()| reader.read_line(&mut line));
                    if r.is_err() || line != msg {
                        return counts.fail(format!(
                            "{target}: long-lived connection lost after {n} lines: {r:?} {line:?}"
                        ));
                    }
                    n += 1;
                    std::thread::sleep(Duration::from_millis(100));
                }
            }));
        }
        Load {
            stop,
            new_conns,
            long_lived,
            threads: handles,
        }
    }

    /// Stops the load and returns (sent, failed, first errors) for new and for long-lived connections.
    fn finish(self) -> [(u64, u64, Vec<String>); 2] {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        [&self.new_conns, &self.long_lived].map(|c| {
            (
                c.sent.load(Ordering::Relaxed),
                c.failed.load(Ordering::Relaxed),
                c.errors.lock().unwrap().clone(),
            )
        })
    }
}

/// Starts the echo Service with `replicas` pods and waits until its ClusterIP and NodePort answer; returns
/// the two targets.
fn echo_service(c: &Cluster, replicas: u32) -> Vec<String> {
    let port = free_port("127.0.0.1");
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some(&echo_manifest(port, replicas)),
    );
    assert!(
        eventually(WAIT, || c.ready_pods("app=echo").len() == replicas as usize),
        "echo pods never ready\n{}",
        c.log()
    );
    let svc = c.get_json(&["service", "echo"]);
    let cluster_ip = svc["spec"]["clusterIP"].as_str().unwrap().to_string();
    let node_port = svc["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    let targets = vec![format!("{cluster_ip}:80"), format!("127.0.0.1:{node_port}")];
    for t in &targets {
        assert!(
            eventually(WAIT, || echo_once(t).is_ok()),
            "{t} never answered\n{}",
            c.log()
        );
    }
    targets
}

fn proxy_pid(c: &Cluster) -> u32 {
    recorded_proxy_process(&c.dir.join("proxy")).expect("a running proxy process recorded")
}

fn adoptions(c: &Cluster) -> usize {
    c.log()
        .matches("adopted the node's userspace proxy process")
        .count()
}

#[test]
fn userspace_traffic_survives_svcnet_restarts() {
    let mut c = Cluster::start_keeping_pods(SVCNET, &[]);
    let targets = echo_service(&c, 3);
    let proxy = proxy_pid(&c);
    let load = Load::start(&targets, 3);
    std::thread::sleep(Duration::from_secs(3));

    c.restart("TERM");
    assert!(
        eventually(WAIT, || adoptions(&c) == 1),
        "no adoption after SIGTERM\n{}",
        c.log()
    );
    std::thread::sleep(Duration::from_secs(4));

    c.stop("KILL");
    std::thread::sleep(Duration::from_secs(1));
    c.start_again();
    assert!(
        eventually(WAIT, || adoptions(&c) == 2),
        "no adoption after SIGKILL\n{}",
        c.log()
    );
    std::thread::sleep(Duration::from_secs(4));
    let [(sent, failed, errors), (long, lost, long_errors)] = load.finish();
    eprintln!(
        "restarts under load: {failed} of {sent} new connections failed, {lost} of {long} long-lived lost"
    );
    assert!(sent > 200, "the load ran ({sent} requests)");
    assert_eq!(failed, 0, "new connections failed: {errors:?}");
    assert_eq!(lost, 0, "long-lived connections lost: {long_errors:?}");
    assert_eq!(proxy_pid(&c), proxy, "the same proxy process served throughout");

    // With --stop-pods-on-exit the proxy process stops with svcnet, and nothing answers any more.
    c.set_keep_pods(false);
    c.restart("TERM");
    assert!(eventually(WAIT, || adoptions(&c) == 3), "{}", c.log());
    // Fully started (a SIGTERM before svcnet's signal handler is in place ends it without any cleanup).
    c.ok(&["get", "nodes"]);
    c.stop("TERM");
    assert!(
        eventually(Duration::from_secs(10), || {
            svcnet_testsupport::cluster::proc_start(proxy).is_none()
        }),
        "the proxy process outlived svcnet up --stop-pods-on-exit\n{}",
        svcnet_testsupport::cluster::tail(&c.log(), 30)
    );
    assert!(echo_once(&targets[0]).is_err(), "the ClusterIP still answers");
}

#[test]
fn a_new_proxy_process_takes_the_sockets_over() {
    let c = Cluster::start(SVCNET);
    let targets = echo_service(&c, 2);
    let old = proxy_pid(&c);
    let cmdline = std::fs::read(format!("/proc/{old}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let load = Load::start(&targets, 3);
    std::thread::sleep(Duration::from_secs(2));

    // A second process on the same state directory: the upgrade path of the proxy itself.
    let log = std::fs::File::create(c.dir.join("proxy2.log")).unwrap();
    let mut second = std::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let new = second.id();
    let log2 = || std::fs::read_to_string(c.dir.join("proxy2.log")).unwrap_or_default();
    assert!(
        eventually(WAIT, || recorded_proxy_process(&c.dir.join("proxy")) == Some(new)),
        "the second process never took over\n{}",
        log2()
    );
    assert!(log2().contains("took the listening sockets"), "{}", log2());
    std::thread::sleep(Duration::from_secs(3));
    // The old process still carries the long-lived connections (it drains); new ones go to the new one.
    assert!(
        svcnet_testsupport::cluster::proc_start(old).is_some(),
        "the old process did not drain"
    );
    let [(sent, failed, errors), (long, lost, long_errors)] = load.finish();
    eprintln!(
        "handover under load: {failed} of {sent} new connections failed, {lost} of {long} long-lived lost"
    );
    assert!(sent > 100, "the load ran ({sent} requests)");
    assert_eq!(failed, 0, "new connections failed: {errors:?}");
    assert_eq!(lost, 0, "long-lived connections lost: {long_errors:?}");
    // Its connections closed, the old process exits; svcnet up follows the new one.
    assert!(
        eventually(Duration::from_secs(10), || {
            svcnet_testsupport::cluster::proc_start(old).is_none()
        }),
        "the old proxy process did not exit after draining\n{}",
        c.log()
    );
    assert!(
        eventually(Duration::from_secs(10), || c
            .log()
            .contains("was replaced; following the new one")),
        "{}",
        c.log()
    );
    for t in &targets {
        echo_once(t).unwrap_or_else(|e| panic!("{t} after the handover: {e}"));
    }
    // `svcnet up --stop-pods-on-exit` (the harness's) stops the process it follows now.
    drop(c);
    let _ = second.wait();
}

/// A `svcnet agent` (userspace proxy) as node `node-b` of `c` with the data directory `dir`: on drop it
/// is killed, and so are its pods and its proxy process (verified by PID and start time).
fn start_agent(c: &Cluster, dir: &std::path::Path) -> Agent {
    let args = [
        "--service-cidr",
        "127.96.0.0/12",
        "--cluster-cidr",
        "127.244.0.0/16",
    ];
    Agent::start(SVCNET, &c.kubeconfig(), "node-b", dir, &args)
}

/// The same through `svcnet agent`: its proxy process is adopted across SIGTERM and SIGKILL restarts.
#[test]
fn userspace_traffic_survives_svcnet_agent_restarts() {
    // The control plane alone: the agent's node is the only one, and the only data plane.
    let c = Cluster::start_with(SVCNET, &["--no-agent", "--proxy-mode", "none"]);
    let dir = c.dir.join("node-b");
    std::fs::create_dir_all(&dir).unwrap();
    let mut agent = start_agent(&c, &dir);
    let targets = echo_service(&c, 2);
    let proxy = recorded_proxy_process(&dir.join("proxy")).expect("the agent's proxy process");
    let adopted = |a: &Agent| {
        a.log()
            .matches("adopted the node's userspace proxy process")
            .count()
    };
    let load = Load::start(&targets, 2);
    std::thread::sleep(Duration::from_secs(2));
    for (n, signal) in [(1, "TERM"), (2, "KILL")] {
        agent.restart(signal);
        assert!(
            eventually(WAIT, || adopted(&agent) == n),
            "no adoption after SIG{signal}\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    let [(sent, failed, errors), (long, lost, long_errors)] = load.finish();
    eprintln!(
        "agent restarts under load: {failed} of {sent} new connections failed, {lost} of {long} long-lived lost"
    );
    assert!(sent > 100, "the load ran ({sent} requests)");
    assert_eq!(failed, 0, "new connections failed: {errors:?}");
    assert_eq!(lost, 0, "long-lived connections lost: {long_errors:?}");
    assert_eq!(
        recorded_proxy_process(&dir.join("proxy")),
        Some(proxy),
        "the same proxy process served throughout"
    );
}

/// A svcnet started with another `--proxy-mode` stops the userspace proxy process a previous one left.
#[test]
fn another_proxy_mode_stops_the_left_proxy_process() {
    let mut c = Cluster::start_keeping_pods(SVCNET, &[]);
    assert!(
        eventually(WAIT, || recorded_proxy_process(&c.dir.join("proxy")).is_some()),
        "{}",
        c.log()
    );
    let pid = proxy_pid(&c);
    c.set_flags(&["--proxy-mode", "none"]);
    c.restart("KILL");
    assert!(
        eventually(Duration::from_secs(15), || {
            svcnet_testsupport::cluster::proc_start(pid).is_none()
        }),
        "the left proxy process still runs\n{}",
        c.log()
    );
    assert!(c.log().contains("another --proxy-mode now"), "{}", c.log());
}

/// A proxy process that dies is started again by the svcnet that watches it.
#[test]
fn a_killed_proxy_process_is_started_again() {
    let c = Cluster::start(SVCNET);
    assert!(
        eventually(WAIT, || recorded_proxy_process(&c.dir.join("proxy")).is_some()),
        "{}",
        c.log()
    );
    let old = proxy_pid(&c);
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &old.to_string()])
        .status();
    assert!(
        eventually(WAIT, || recorded_proxy_process(&c.dir.join("proxy"))
            .is_some_and(|p| p != old)),
        "no new proxy process\n{}",
        c.log()
    );
    assert!(c.log().contains("ended; starting it again"), "{}", c.log());
    // The API server's own Service (kubernetes, 443 on the range's first address) is served again.
    let kubernetes = c.get_json(&["service", "kubernetes"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        eventually(WAIT, || TcpStream::connect(format!("{kubernetes}:443")).is_ok()),
        "{}",
        c.log()
    );
}
