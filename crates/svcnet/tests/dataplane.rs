//! The data plane end to end, through `svcnet up` with the default userspace proxy: real pods (processes),
//! real Services, real TCP and UDP through the proxy's listeners.
//!
//! - the seed scenario from `examples/seed/`: Blue's calls spread over the Red pods, traffic moves off a
//!   deleted pod and onto new ones when Red scales, the NodePort and the LoadBalancer IP answer from the host;
//! - port mappings (named and numbered target ports, several ports), reject without endpoints, session
//!   affinity, UDP (externalIPs may not be loopback addresses, so they are tested in network namespaces);
//! - chaos: 1,000 requests/s through a Service while Red pods are deleted every 2 seconds for 30 seconds,
//!   with zero failed requests.
//!
//! Each test gives its cluster a service range and node address of its own inside 127.0.0.0/8, so parallel
//! clusters never share a listening address. Port 80 listeners need root; without it the tests say so and
//! pass.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use svcnet_testsupport::cluster::write_file;
use svcnet_testsupport::netns::is_root;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(60);

/// A cluster whose service range, node address and LoadBalancer pool are this test's own.
fn cluster(slot: u8) -> Cluster {
    Cluster::start_with(
        SVCNET,
        &[
            "--service-cidr",
            &format!("127.{}.0.0/16", 100 + slot),
            "--nodeport-address",
            &format!("127.90.{slot}.1"),
            "--lb-pool",
            &format!("127.91.{slot}.0/24"),
            "--dns-listen",
            "127.0.0.1:0",
        ],
    )
}

/// `dig +short` against `server`, retried until the answer is non-empty.
fn dig(server: &str, port: &str, name: &str, ty: &str) -> String {
    let mut answer = String::new();
    eventually(WAIT, || {
        let out = std::process::Command::new("dig")
            .args([
                &format!("@{server}"),
                "-p",
                port,
                "+short",
                "+time=1",
                "+tries=1",
                name,
                ty,
            ])
            .output()
            .expect("dig (bind9-dnsutils)");
        answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        out.status.success() && !answer.is_empty() && !answer.starts_with(";;")
    });
    answer
}

fn examples() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/seed")
}

/// One HTTP/1.0 GET on a new connection; the body.
fn http_get(addr: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    match out.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.") && head.contains(" 200 ") => Ok(body.to_string()),
        _ => Err(std::io::Error::other(format!("bad answer: {out:?}"))),
    }
}

fn cluster_ip(c: &Cluster, svc: &str) -> String {
    c.get_json(&["svc", svc])["spec"]["clusterIP"]
        .as_str()
        .expect("a ClusterIP")
        .to_string()
}

fn ready_pods(c: &Cluster, app: &str) -> Vec<String> {
    c.ready_pods(&format!("app={app}"))
}

fn wait_ready(c: &Cluster, app: &str, n: usize) {
    assert!(
        eventually(WAIT, || ready_pods(c, app).len() == n),
        "{n} ready {app} pods: {:?}\n{}",
        ready_pods(c, app),
        c.ok(&["get", "pods", "-o", "wide"])
    );
}

/// The Red pod names in Blue's log lines after line `from`.
fn red_answers(c: &Cluster, from: usize) -> (Vec<String>, usize) {
    let logs = c.ok(&["logs", "deploy/blue"]);
    let lines: Vec<&str> = logs.lines().collect();
    let names = lines
        .iter()
        .skip(from)
        .filter_map(|l| l.strip_prefix("red "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    (names, lines.len())
}

#[test]
fn seed_scenario() {
    if !is_root() {
        eprintln!("skipped: port 80 listeners need root");
        return;
    }
    let c = cluster(1);
    let dir = examples();
    for f in ["red.yaml", "blue.yaml", "backend.yaml"] {
        c.ok(&["apply", "-f", dir.join(f).to_str().unwrap()]);
    }
    wait_ready(&c, "red", 3);

    // Blue's calls spread over the Red pods.
    let mut seen = BTreeSet::new();
    assert!(
        eventually(WAIT, || {
            seen.extend(red_answers(&c, 0).0);
            seen.len() >= 2
        }),
        "Blue reaches several Red pods: {seen:?}\n{}",
        c.ok(&["logs", "deploy/blue"])
    );

    // Delete a Red pod: traffic moves to the others and to its replacement.
    let victim = ready_pods(&c, "red")[0].clone();
    c.ok(&["delete", "pod", &victim, "--wait=false"]);
    assert!(
        eventually(WAIT, || !ready_pods(&c, "red").contains(&victim)
            && ready_pods(&c, "red").len() == 3),
        "Red is back to three pods"
    );
    // Calls that started before the pod left may still land on it while it drains; after that, never.
    std::thread::sleep(Duration::from_secs(3));
    let (_, mark) = red_answers(&c, 0);
    let mut after = BTreeSet::new();
    assert!(
        eventually(WAIT, || {
            after.extend(red_answers(&c, mark).0);
            after.len() >= 2
        }),
        "calls after the deletion: {after:?}"
    );
    assert!(
        !after.contains(&victim),
        "{victim} was deleted but still answers: {after:?}"
    );

    // Scale Red to 10: the calls spread over the new pods too.
    c.ok(&["scale", "deploy/red", "--replicas=10"]);
    wait_ready(&c, "red", 10);
    let (_, mark) = red_answers(&c, 0);
    let mut spread = BTreeSet::new();
    assert!(
        eventually(WAIT, || {
            spread.extend(red_answers(&c, mark).0);
            spread.len() >= 5
        }),
        "Blue's calls spread over the 10 Red pods: {spread:?}"
    );

    // The host reaches the seed's backend by ClusterIP, NodePort and LoadBalancer IP.
    wait_ready(&c, "backend-app", 2);
    let clusterip: SocketAddr = format!("{}:80", cluster_ip(&c, "backend")).parse().unwrap();
    let nodeport: SocketAddr = "127.90.1.1:32000".parse().unwrap();
    let mut lb = String::new();
    assert!(
        eventually(WAIT, || {
            lb = c.get_json(&["svc", "backend-lb"])["status"]["loadBalancer"]["ingress"][0]["ip"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            !lb.is_empty()
        }),
        "backend-lb gets an address"
    );
    let lb: SocketAddr = format!("{lb}:80").parse().unwrap();

    // Cluster DNS, directly and through the kube-dns ClusterIP (the node's DNS is kube-dns' endpoint):
    // names resolve to ClusterIPs, and the ExternalName Service is a CNAME.
    let dns = std::fs::read_to_string(c.dir.join("dns-address")).expect("dns-address");
    let (dns_ip, dns_port) = dns.lines().next().unwrap().rsplit_once(':').unwrap();
    assert_eq!(
        dig(dns_ip, dns_port, "backend.default.svc.cluster.local", "A"),
        cluster_ip(&c, "backend")
    );
    let kube_dns = c.get_json(&["svc", "kube-dns", "-n", "kube-system"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        dig(&kube_dns, "53", "red.default.svc.cluster.local", "A"),
        cluster_ip(&c, "red")
    );
    assert_eq!(
        dig(&kube_dns, "53", "my-db.default.svc.cluster.local", "CNAME"),
        "db.example.com."
    );
    for addr in [clusterip, nodeport, lb] {
        let mut last = None;
        assert!(
            eventually(WAIT, || {
                last = Some(http_get(addr, Duration::from_secs(2)));
                matches!(&last, Some(Ok(b)) if b.starts_with("backend "))
            }),
            "{addr}: {last:?}"
        );
    }
}

/// A small app answering TCP (HTTP) and UDP with its pod name, on named ports.
const ECHO_APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 3
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      containers:
      - name: echo
        image: python:3
        command: ["python3", "-u", "-c"]
        args:
        - |
          import http.server, os, socket, threading
          name, ip = os.environ["HOSTNAME"], os.environ["POD_IP"]
          def udp():
              s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
              s.bind((ip, 9053))
              while True:
                  data, peer = s.recvfrom(2048)
                  s.sendto(name.encode() + b" " + data, peer)
          threading.Thread(target=udp, daemon=True).start()
          class H(http.server.BaseHTTPRequestHandler):
              def do_GET(self):
                  body = name.encode()
                  self.send_response(200)
                  self.send_header("Content-Length", str(len(body)))
                  self.end_headers()
                  self.wfile.write(body)
              def log_message(self, *a):
                  pass
          http.server.ThreadingHTTPServer((ip, 8080), H).serve_forever()
        ports:
        - {name: web, containerPort: 8080}
        - {name: dns, containerPort: 9053, protocol: UDP}
        readinessProbe:
          tcpSocket: {port: web}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: echo}
spec:
  selector: {app: echo}
  ports:
  - {name: http, port: 80, targetPort: web}
  - {name: alt, port: 8081, targetPort: 8080}
  - {name: dns, port: 53, targetPort: dns, protocol: UDP}
---
apiVersion: v1
kind: Service
metadata: {name: echo-sticky}
spec:
  selector: {app: echo}
  sessionAffinity: ClientIP
  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}
  ports:
  - {port: 80, targetPort: web}
---
apiVersion: v1
kind: Service
metadata: {name: nothing}
spec:
  selector: {app: nobody}
  ports:
  - {port: 80, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata: {name: echo-local}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: echo}
  ports:
  - {port: 8082, targetPort: 8080}
"#;

fn spread(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        match http_get(addr, Duration::from_secs(2)) {
            Ok(body) => *seen.entry(body).or_insert(0) += 1,
            Err(e) => *seen.entry(format!("error: {e}")).or_insert(0) += 1,
        }
    }
    seen
}

#[test]
fn service_types_ports_affinity_reject_and_udp() {
    if !is_root() {
        eprintln!("skipped: port 80 listeners need root");
        return;
    }
    let c = cluster(2);
    let f = write_file(&c.dir, "echo.yaml", ECHO_APP);
    c.ok(&["apply", "-f", &f]);
    wait_ready(&c, "echo", 3);
    let ip = cluster_ip(&c, "echo");
    let http: SocketAddr = format!("{ip}:80").parse().unwrap();
    let alt: SocketAddr = format!("{ip}:8081").parse().unwrap();

    // Named targetPort (web) and numbered (8080) both reach the pods, spread over all three.
    for addr in [http, alt] {
        let mut seen = BTreeMap::new();
        assert!(
            eventually(WAIT, || {
                seen = spread(addr, 30);
                seen.len() == 3 && seen.keys().all(|k| k.starts_with("echo-"))
            }),
            "{addr} spreads over three pods: {seen:?}"
        );
    }

    // ClientIP affinity: one client, one pod.
    let sticky: SocketAddr = format!("{}:80", cluster_ip(&c, "echo-sticky")).parse().unwrap();
    let mut seen = BTreeMap::new();
    assert!(
        eventually(WAIT, || {
            seen = spread(sticky, 20);
            seen.len() == 1 && seen.keys().all(|k| k.starts_with("echo-"))
        }),
        "affinity pins the client: {seen:?}"
    );

    // No endpoints: refused at once, not a hang.
    let nothing: SocketAddr = format!("{}:80", cluster_ip(&c, "nothing")).parse().unwrap();
    assert!(
        eventually(WAIT, || {
            let t = Instant::now();
            http_get(nothing, Duration::from_secs(5)).is_err() && t.elapsed() < Duration::from_secs(1)
        }),
        "a Service without endpoints rejects at once"
    );

    // UDP through the ClusterIP: answers come back from the service address, from the pods.
    let dns: SocketAddr = format!("{ip}:53").parse().unwrap();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut answer = String::new();
    assert!(
        eventually(WAIT, || {
            if sock.send_to(b"ping", dns).is_err() {
                return false;
            }
            let mut buf = [0u8; 2048];
            match sock.recv_from(&mut buf) {
                Ok((n, from)) => {
                    answer = String::from_utf8_lossy(&buf[..n]).to_string();
                    from == dns && answer.ends_with(" ping") && answer.starts_with("echo-")
                }
                Err(_) => false,
            }
        }),
        "UDP answer via {dns}: {answer:?}"
    );

    // healthCheckNodePort (externalTrafficPolicy Local): 200 with the node's endpoint count, as kube-proxy
    // answers the cloud load balancer.
    let hc = c.ok(&[
        "get",
        "svc",
        "echo-local",
        "-o",
        "jsonpath={.spec.healthCheckNodePort}",
    ]);
    let hc: SocketAddr = format!("127.90.2.1:{}", hc.trim()).parse().unwrap();
    let mut body = String::new();
    assert!(
        eventually(WAIT, || {
            body = http_get(hc, Duration::from_secs(2)).unwrap_or_default();
            body.contains("\"localEndpoints\":3")
        }),
        "health check with three local endpoints: {body:?}"
    );

    // Scaling to zero empties the Service: new connections are refused at once.
    c.ok(&["scale", "deploy/echo", "--replicas=0"]);
    assert!(
        eventually(WAIT, || {
            let t = Instant::now();
            http_get(http, Duration::from_secs(5)).is_err() && t.elapsed() < Duration::from_secs(1)
        }),
        "refused after scaling to zero"
    );
    // ... and 503 without one, so the load balancer stops sending here.
    assert!(
        eventually(WAIT, || {
            body = http_get(hc, Duration::from_secs(2)).unwrap_or_else(|e| e.to_string());
            // The error quotes the answer with escapes.
            body.contains(" 503 ") && body.contains(r#"localEndpoints\":0"#)
        }),
        "health check without local endpoints: {body:?}"
    );
}

/// 1,000 requests/s through a Service for 30 s while a Red pod is deleted every 2 s: zero failures.
#[test]
fn chaos_zero_failed_requests() {
    if !is_root() {
        eprintln!("skipped: port 80 listeners need root");
        return;
    }
    let c = cluster(3);
    c.ok(&["apply", "-f", examples().join("red.yaml").to_str().unwrap()]);
    c.ok(&["scale", "deploy/red", "--replicas=4"]);
    wait_ready(&c, "red", 4);
    let addr: SocketAddr = format!("{}:80", cluster_ip(&c, "red")).parse().unwrap();
    assert!(
        eventually(WAIT, || http_get(addr, Duration::from_secs(2)).is_ok()),
        "Red answers"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let errors = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    const CLIENTS: u64 = 8;
    const RATE: u64 = 1000;
    const DURATION: Duration = Duration::from_secs(30);
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (stop, ok, failed, errors) = (stop.clone(), ok.clone(), failed.clone(), errors.clone());
            std::thread::spawn(move || {
                // Each client paces itself to RATE / CLIENTS requests per second.
                let interval = Duration::from_micros(1_000_000 * CLIENTS / RATE);
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) && start.elapsed() < DURATION + Duration::from_secs(5) {
                    match http_get(addr, Duration::from_secs(5)) {
                        Ok(b) if b.starts_with("red ") => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            errors
                                .lock()
                                .unwrap()
                                .push(format!("{:?} {other:?}", start.elapsed()));
                        }
                    }
                    next += interval;
                    if let Some(d) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(d);
                    }
                }
            })
        })
        .collect();
    // The deletions go through the API directly: kubectl's start-up is too slow on a loaded 2-core machine
    // to keep a 2-second beat.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deleted = rt.block_on(async {
        let pods: Api<Pod> = Api::default_namespaced(c.client().await);
        let mut deleted = 0;
        let mut tick = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(2),
            Duration::from_secs(2),
        );
        while start.elapsed() < DURATION {
            tick.tick().await;
            let list = pods
                .list(&ListParams::default().labels("app=red"))
                .await
                .expect("list pods");
            let victim = list.items.iter().find(|p| {
                p.metadata.deletion_timestamp.is_none()
                    && p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            });
            if let Some(name) = victim.and_then(|p| p.metadata.name.clone()) {
                pods.delete(&name, &DeleteParams::default())
                    .await
                    .expect("delete pod");
                deleted += 1;
            }
        }
        deleted
    });
    let secs = start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.join().unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "chaos: {ok} requests answered ({:.0}/s), {failed} failed, {deleted} pods deleted",
        ok as f64 / secs
    );
    assert!(deleted >= 12, "a pod was deleted every 2 s: {deleted}");
    assert_eq!(failed, 0, "failed requests: {:?}", &errors.lock().unwrap()[..]);
    assert!(ok as f64 / secs > 500.0, "the load ran: {ok} in {secs:.1}s");
}
