//! The node agent inside `svcnet up`, with real processes and real kubectl: the node registers with a
//! pod CIDR and a Lease, pods are scheduled and run on their own loopback IPs, probes drive readiness,
//! a killed process restarts in place, deletion is graceful, and `kubectl logs` reads through the API.

use std::time::Duration;

use serde_json::Value;
use svcnet_testsupport::agent::Agent;
use svcnet_testsupport::kubectl::{KUBECTLS, kubectl_path};
use svcnet_testsupport::net::free_port;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn pod_yaml(name: &str, extra_labels: &str, command: &str, probe: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n    app: {name}\n{extra_labels}spec:\n  terminationGracePeriodSeconds: 5\n  containers:\n  - name: main\n    image: python:3\n    command: [\"sh\", \"-c\", {command:?}]\n    ports: [{{containerPort: 8080, name: http}}]\n{probe}"
    )
}

fn wait_running(c: &Cluster, name: &str) -> Value {
    let mut last = Value::Null;
    let ok = eventually(Duration::from_secs(30), || {
        last = c.get_json(&["pod", name]);
        last["status"]["phase"] == "Running" && last["status"]["podIP"].is_string()
    });
    assert!(ok, "pod {name} never ran: {last}\n{}", c.log());
    last
}

/// Creates the pod `name` (no extra labels) and waits until it runs; the pod as the API shows it.
fn run_pod(c: &Cluster, name: &str, command: &str, probe: &str) -> Value {
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some(&pod_yaml(name, "", command, probe)),
    );
    wait_running(c, name)
}

fn http_ok(ip: &str, port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 12 && buf[..n].starts_with(b"HTTP/1.0 200"))
}

/// The body of `GET path` (HTTP/1.0) from `ip:port`.
fn http_body(ip: &str, port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("{ip}:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .unwrap_or_else(|e| panic!("{ip}:{port}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

#[test]
fn node_registers_and_pods_run_on_their_own_ips() {
    let c = Cluster::start(SVCNET);
    // `svcnet up` is up before its agent has registered the Node: wait for it and its pod CIDR.
    let mut nodes = Value::Null;
    assert!(eventually(Duration::from_secs(10), || {
        nodes = c.get_json(&["nodes"]);
        nodes["items"][0]["spec"]["podCIDR"].as_str() == Some("127.244.0.0/24")
            && nodes["items"][0]["status"]["conditions"].is_array()
    }));
    let node = &nodes["items"][0];
    assert!(
        node["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    );
    let name = node["metadata"]["name"].as_str().unwrap().to_string();
    let lease = c.get_json(&["lease", &name, "-n", "kube-node-lease"]);
    assert_eq!(lease["spec"]["holderIdentity"], name.as_str());
    let table = c.ok(&["get", "nodes", "-o", "wide"]);
    assert!(table.contains("Ready") && table.contains("127.0.0.1"), "{table}");

    let port = free_port("127.0.0.1");
    let cmd = format!(
        "echo serving on $POD_IP $KUBERNETES_SERVICE_HOST; exec python3 -m http.server {port} --bind $POD_IP"
    );
    let probe = format!("    readinessProbe:\n      tcpSocket: {{port: {port}}}\n      periodSeconds: 1\n");
    let p = run_pod(&c, "web", &cmd, &probe);
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    assert!(ip.starts_with("127.244.0."), "{ip}");
    assert_eq!(p["spec"]["nodeName"], name.as_str());
    assert!(eventually(Duration::from_secs(20), || c
        .get_json(&["pod", "web"])["status"]["containerStatuses"][0]["ready"]
        == true));
    assert!(
        eventually(Duration::from_secs(10), || http_ok(&ip, port)),
        "pod does not answer on its IP"
    );
    let events = c.ok(&["get", "events", "--field-selector", "involvedObject.name=web"]);
    assert!(events.contains("Scheduled"), "{events}");

    // kubectl logs, through the API server's proxy to the agent, with both kubectl versions.
    for v in KUBECTLS {
        let logs = c.ok_v(v, &["logs", "web"], None);
        assert!(
            logs.contains(&format!("serving on {ip} 127.96.0.1")),
            "kubectl {v} logs: {logs}"
        );
        let tail = c.ok_v(v, &["logs", "web", "--tail=1"], None);
        assert_eq!(tail.lines().count(), 1, "{tail}");
    }

    // kill -9 the process: it restarts in place, same pod, same IP, restart count 1.
    let cid = p["status"]["containerStatuses"][0]["containerID"]
        .as_str()
        .unwrap()
        .to_string();
    let pid = cid.trim_start_matches("svcnet://").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-9", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(eventually(Duration::from_secs(30), || {
        let p = c.get_json(&["pod", "web"]);
        p["status"]["containerStatuses"][0]["restartCount"] == 1
            && p["status"]["containerStatuses"][0]["ready"] == true
    }));
    let p = c.get_json(&["pod", "web"]);
    assert_eq!(p["status"]["podIP"], ip.as_str());
    assert_eq!(
        p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        137
    );
    assert!(eventually(Duration::from_secs(10), || http_ok(&ip, port)));
    let previous = c.ok(&["logs", "web", "--previous"]);
    assert!(previous.contains("serving on"), "{previous}");
    let table = c.ok(&["get", "pod", "web"]);
    assert!(table.contains("1 (") && table.contains("Running"), "{table}");

    // Deletion is graceful: the process gets SIGTERM, then the pod is gone.
    c.ok(&["delete", "pod", "web", "--timeout=30s"]);
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || eventually(Duration::from_secs(5), || !http_ok(&ip, port))
    );
    let err = c.fail_v("1.33", &["get", "pod", "web"], None);
    assert!(err.contains("not found"), "{err}");
}

#[test]
fn graceful_termination_and_readiness() {
    let c = Cluster::start(SVCNET);
    // A process that traps SIGTERM and says so: deletion must give it the chance.
    let cmd = "trap 'echo got-term; exit 0' TERM; echo started; while true; do sleep 0.1; done";
    run_pod(&c, "trap", cmd, "");
    let mut follower = std::process::Command::new(kubectl_path("1.33"))
        .args(["logs", "-f", "trap"])
        .env("KUBECONFIG", c.kubeconfig())
        .env("KUBECACHEDIR", c.dir.join("kcache-follow"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(800));
    c.ok(&["delete", "pod", "trap", "--timeout=30s"]);
    // The stream ends by itself when the container exits; give it a bounded moment to do so.
    for _ in 0..50 {
        if follower.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = follower.kill();
    let out = follower.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("started") && text.contains("got-term"),
        "followed log: {text}"
    );

    // Readiness follows the probe: a file the probe checks comes and goes.
    let flag = c.dir.join("ready-flag");
    let probe = format!(
        "    readinessProbe:\n      exec: {{command: [\"test\", \"-f\", {:?}]}}\n      periodSeconds: 1\n      failureThreshold: 1\n",
        flag.display().to_string()
    );
    run_pod(&c, "gate", "sleep 300", &probe);
    let ready = |want: bool| {
        eventually(Duration::from_secs(20), || {
            let p = c.get_json(&["pod", "gate"]);
            p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|x| x["type"] == "Ready" && x["status"] == if want { "True" } else { "False" })
            })
        })
    };
    assert!(ready(false));
    std::fs::write(&flag, "").unwrap();
    assert!(ready(true));
    std::fs::remove_file(&flag).unwrap();
    assert!(ready(false));
    c.ok(&["delete", "pod", "gate", "--grace-period=1", "--timeout=30s"]);
}

/// A pod in its grace period stays in the API, whatever is written to it, until its node has stopped it and
/// deletes it; a finalizer then holds it until removed, as in Kubernetes.
#[test]
fn a_terminating_pod_stays_until_its_node_deletes_it() {
    let c = Cluster::start(SVCNET);
    let slow = "trap 'sleep 3; exit 0' TERM; while true; do sleep 0.1; done";
    run_pod(&c, "slow", slow, "");
    c.ok(&["delete", "pod", "slow", "--wait=false"]);
    // A write during the grace period (the node writes status too) does not finish the deletion.
    c.ok(&["label", "pod", "slow", "during=termination"]);
    let p = c.get_json(&["pod", "slow"]);
    assert!(p["metadata"]["deletionTimestamp"].is_string(), "{p}");
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 5, "{p}");
    assert_eq!(p["metadata"]["labels"]["during"], "termination");
    std::thread::sleep(Duration::from_secs(1));
    assert!(c.get_json(&["pod", "slow"])["metadata"]["deletionTimestamp"].is_string());
    // Gone once the process has exited and the node deleted it.
    assert!(eventually(Duration::from_secs(20), || !c
        .kubectl_v("1.33", &["get", "pod", "slow"], None)
        .status
        .success()));

    // With a finalizer: the node's final delete ends the grace period; the finalizer keeps the pod.
    let held = pod_yaml("held", "", "sleep 300", "").replacen(
        "metadata:\n",
        "metadata:\n  finalizers: [example.com/hold]\n",
        1,
    );
    c.ok_v("1.33", &["apply", "-f", "-"], Some(&held));
    wait_running(&c, "held");
    c.ok(&["delete", "pod", "held", "--wait=false"]);
    let mut p = Value::Null;
    assert!(
        eventually(Duration::from_secs(20), || {
            p = c.get_json(&["pod", "held"]);
            p["metadata"]["deletionGracePeriodSeconds"] == 0
        }),
        "the node's final delete: {p}"
    );
    c.ok(&[
        "patch",
        "pod",
        "held",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    assert!(eventually(Duration::from_secs(10), || !c
        .kubectl_v("1.33", &["get", "pod", "held"], None)
        .status
        .success()));
}

#[test]
fn unschedulable_pods_stay_pending_with_a_reason() {
    let c = Cluster::start(SVCNET);
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: picky\nspec:\n  nodeSelector:\n    disk: ssd\n  containers:\n  - name: c\n    image: x\n    command: [sleep, \"60\"]\n";
    c.ok_v("1.33", &["apply", "-f", "-"], Some(pod));
    assert!(eventually(Duration::from_secs(15), || {
        c.ok(&["get", "events", "--field-selector", "involvedObject.name=picky"])
            .contains("didn't match Pod's node affinity/selector")
    }));
    assert_eq!(c.get_json(&["pod", "picky"])["status"]["phase"], "Pending");
    // Labelling the node makes it fit: the scheduler reacts to the node change.
    let node = c.get_json(&["nodes"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok(&["label", "node", &node, "disk=ssd"]);
    wait_running(&c, "picky");
    // A container without a command cannot run as a host process: a clear waiting reason, no crash.
    let nocmd = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nocmd\nspec:\n  containers:\n  - name: c\n    image: nginx\n";
    c.ok_v("1.33", &["apply", "-f", "-"], Some(nocmd));
    assert!(eventually(Duration::from_secs(15), || {
        let p = c.get_json(&["pod", "nocmd"]);
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("command"))
    }));
    c.ok(&[
        "delete",
        "pod",
        "picky",
        "nocmd",
        "--grace-period=1",
        "--timeout=30s",
    ]);
}

#[test]
fn restarts_of_the_node_leave_no_stray_processes() {
    let mut c = Cluster::start(SVCNET);
    let port = free_port("127.0.0.1");
    let cmd = format!("exec python3 -m http.server {port} --bind $POD_IP");
    let p = run_pod(&c, "keep", &cmd, "");
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    let pid = |p: &Value| {
        p["status"]["containerStatuses"][0]["containerID"]
            .as_str()
            .unwrap_or("")
            .trim_start_matches("svcnet://")
            .to_string()
    };
    let first = pid(&p);
    assert!(eventually(Duration::from_secs(10), || http_ok(&ip, port)));

    // A graceful stop of `svcnet up --stop-pods-on-exit` (the harness's default) stops the node's pods;
    // the restarted node runs them again.
    c.restart("TERM");
    assert!(
        !std::path::Path::new(&format!("/proc/{first}")).exists(),
        "pod process outlived svcnet up"
    );
    assert!(eventually(Duration::from_secs(30), || {
        let p = c.get_json(&["pod", "keep"]);
        let now = pid(&p);
        !now.is_empty() && now != first && std::path::Path::new(&format!("/proc/{now}")).exists()
    }));
    assert!(eventually(Duration::from_secs(10), || http_ok(&ip, port)));

    // kill -9 leaves the process behind; the next agent adopts it from its record (same process).
    let orphan = pid(&c.get_json(&["pod", "keep"]));
    c.restart("KILL");
    assert!(eventually(Duration::from_secs(30), || c
        .log()
        .contains("adopted pods a previous agent left running")));
    assert_eq!(pid(&c.get_json(&["pod", "keep"])), orphan);
    assert!(std::path::Path::new(&format!("/proc/{orphan}")).exists());
    assert!(
        eventually(Duration::from_secs(10), || http_ok(&ip, port)),
        "the adopted pod serves on its IP"
    );
    c.ok(&["delete", "pod", "keep", "--grace-period=1", "--timeout=30s"]);
}

/// Two clusters on one host with the same pod range (as two `svcnet up` with the defaults have): in the
/// host pod network every pod binds its address in the host's namespace, so the agents must never give
/// two pods one address. Each cluster fills half of a 14-address range with servers on the same port;
/// every pod runs without a restart, and each address answers for its own cluster.
#[test]
fn two_clusters_on_one_host_never_share_a_pod_address() {
    let flags = ["--cluster-cidr", "127.245.0.0/24", "--node-cidr-mask-size", "28"];
    let clusters = [
        ("a", Cluster::start_with(SVCNET, &flags)),
        ("b", Cluster::start_with(SVCNET, &flags)),
    ];
    for (name, c) in &clusters {
        let deploy = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 7\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: web\n        image: python:3\n        command: [\"sh\", \"-c\", \"cd $(mktemp -d) && echo {name} > id && exec python3 -m http.server 8080 --bind $POD_IP\"]\n        readinessProbe:\n          httpGet: {{path: /id, port: 8080}}\n          periodSeconds: 1\n"
        );
        c.ok_v("1.33", &["apply", "-f", "-"], Some(&deploy));
    }
    let mut all = std::collections::HashMap::new();
    for (name, c) in &clusters {
        let out = c.ok(&["rollout", "status", "deployment/web", "--timeout=90s"]);
        assert!(out.contains("successfully rolled out"), "{name}: {out}");
        let pods = c.get_json(&["pods", "-l", "app=web"]);
        let items = pods["items"].as_array().unwrap();
        assert_eq!(items.len(), 7, "{name}: {pods}");
        for p in items {
            let ip = p["status"]["podIP"].as_str().unwrap().to_string();
            assert_eq!(
                p["status"]["containerStatuses"][0]["restartCount"], 0,
                "{name}: {p}"
            );
            if let Some(other) = all.insert(ip.clone(), *name) {
                panic!("{ip} given to a pod of cluster {other} and of cluster {name}");
            }
        }
    }
    for (ip, name) in &all {
        let body = http_body(ip, 8080, "/id");
        assert_eq!(body.trim(), *name, "{ip}");
    }
    // What a second cluster does need, its own API address, is said when it is missing.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_svcnet"))
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .args(["--api-listen", &clusters[0].1.addr])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("another cluster on this machine? It needs its own --api-listen"),
        "{err}"
    );
}

#[test]
fn a_deployment_of_real_processes_serves_and_heals() {
    let c = Cluster::start(SVCNET);
    let port = free_port("127.0.0.1");
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: red\nspec:\n  replicas: 3\n  selector:\n    matchLabels:\n      app: red\n  template:\n    metadata:\n      labels:\n        app: red\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: red\n        image: python:3\n        command: [\"sh\", \"-c\", \"exec python3 -m http.server {port} --bind $POD_IP\"]\n        readinessProbe:\n          tcpSocket: {{port: {port}}}\n          periodSeconds: 1\n"
    );
    c.ok_v("1.33", &["apply", "-f", "-"], Some(&deploy));
    let out = c.ok(&["rollout", "status", "deployment/red", "--timeout=60s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = |c: &Cluster| -> Vec<(String, String)> {
        c.get_json(&["pods", "-l", "app=red"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_string(),
                    p["status"]["podIP"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let first = pods(&c);
    assert_eq!(first.len(), 3);
    for (_, ip) in &first {
        assert!(
            eventually(Duration::from_secs(10), || http_ok(ip, port)),
            "pod {ip} does not serve"
        );
    }
    let table = c.ok(&["get", "deploy", "red"]);
    assert!(table.contains("3/3"), "{table}");

    // A deleted pod is replaced by a new pod with a new name and a new IP.
    let (victim, victim_ip) = first[0].clone();
    c.ok(&["delete", "pod", &victim, "--timeout=30s"]);
    assert!(eventually(Duration::from_secs(30), || {
        let now = pods(&c);
        now.len() == 3 && now.iter().all(|(n, ip)| *n != victim && !ip.is_empty())
    }));
    assert!(
        c.ok(&["rollout", "status", "deployment/red", "--timeout=60s"])
            .contains("successfully rolled out")
    );
    let now = pods(&c);
    let (_, new_ip) = now
        .iter()
        .find(|(n, _)| !first.iter().any(|(f, _)| f == n))
        .unwrap();
    assert_ne!(*new_ip, victim_ip);
    assert!(eventually(Duration::from_secs(10), || http_ok(new_ip, port)));

    // Scale 3 → 6 → 1 with real processes.
    c.ok(&["scale", "deploy", "red", "--replicas=6"]);
    assert!(
        c.ok(&["rollout", "status", "deployment/red", "--timeout=60s"])
            .contains("successfully rolled out")
    );
    assert_eq!(pods(&c).len(), 6);
    c.ok(&["scale", "deploy", "red", "--replicas=1"]);
    assert!(eventually(Duration::from_secs(30), || pods(&c).len() == 1));
    c.ok(&["delete", "deploy", "red", "--timeout=30s"]);
    assert!(eventually(Duration::from_secs(30), || c
        .get_json(&["pods", "-l", "app=red"])["items"]
        .as_array()
        .unwrap()
        .is_empty()));
}

#[test]
fn a_second_node_joins_goes_not_ready_and_its_pods_move() {
    let c = Cluster::start_with(SVCNET, &["--node-monitor-grace-period", "4"]);
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (metrics, healthz) = (free(), free());
    let (mut agent_b, bdir) = start_agent(
        &c,
        "node-b",
        &[
            "--node-lease-duration-seconds",
            "4",
            "--metrics-listen",
            &metrics.to_string(),
            "--healthz-listen",
            &healthz.to_string(),
        ],
    );
    let ready = |node: &str, want: &str| node_ready(&c, node, want);
    assert!(eventually(Duration::from_secs(20), || ready("node-b", "True")));
    // The agent's own metrics endpoint, kube-proxy's and CoreDNS's names (CoreDNS's once a query came).
    let mut text = String::new();
    assert!(
        eventually(Duration::from_secs(20), || {
            let dns = std::fs::read_to_string(bdir.join("dns-address")).unwrap_or_default();
            if let Ok(dns) = dns.trim().parse::<std::net::SocketAddr>() {
                let _ = std::process::Command::new("dig")
                    .args([&format!("@{}", dns.ip()), "-p", &dns.port().to_string()])
                    .args(["+tries=1", "+time=1", "kubernetes.default.svc.cluster.local"])
                    .output();
            }
            text = metrics_text(metrics);
            text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds")
                && text.contains("coredns_dns_requests_total")
        }),
        "agent metrics: {text}"
    );
    for name in [
        "kubeproxy_sync_proxy_rules_endpoint_changes_total",
        "kubeproxy_sync_proxy_rules_service_changes_pending",
        "kubeproxy_sync_proxy_rules_no_local_endpoints_total{traffic_policy=\"internal\"}",
    ] {
        assert!(text.contains(name), "{name} in {text}");
    }
    // kube-proxy's URLs, as the e2e "should check kube-proxy urls" reads them.
    let mode = http_get(metrics, "/proxyMode");
    assert!(
        mode.starts_with("HTTP/1.1 200") && mode.ends_with("userspace"),
        "{mode}"
    );
    assert!(http_get(metrics, "/healthz").starts_with("HTTP/1.1 200"));
    let health = http_get(healthz, "/healthz");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    assert!(
        health.contains("application/json") && health.contains("\"lastUpdated\""),
        "{health}"
    );
    assert!(health.contains("\"nodeEligible\": true"), "{health}");
    // A node the cluster autoscaler is about to delete fails /healthz (load balancers drain it) but stays
    // live.
    let taint = [
        "taint",
        "node",
        "node-b",
        "ToBeDeletedByClusterAutoscaler=1:NoSchedule",
    ];
    c.ok(&taint);
    assert!(
        eventually(Duration::from_secs(10), || {
            http_get(healthz, "/healthz").starts_with("HTTP/1.1 503")
        }),
        "{}",
        http_get(healthz, "/healthz")
    );
    assert!(http_get(healthz, "/healthz").contains("\"nodeEligible\": false"));
    assert!(http_get(healthz, "/livez").starts_with("HTTP/1.1 200"));
    c.ok(&["taint", "node", "node-b", "ToBeDeletedByClusterAutoscaler-"]);
    assert!(eventually(Duration::from_secs(10), || {
        http_get(healthz, "/healthz").starts_with("HTTP/1.1 200")
    }));
    assert!(metrics_text(metrics).contains("kubeproxy_proxy_healthz_total{code=\"503\"}"));
    assert!(eventually(Duration::from_secs(10), || c
        .get_json(&["node", "node-b"])["spec"]["podCIDR"]
        .is_string()));
    let nodes = c.get_json(&["nodes"]);
    let cidrs: std::collections::BTreeSet<String> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["spec"]["podCIDR"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(cidrs.len(), 2, "each node has its own pod block: {cidrs:?}");

    // Pods spread over both nodes (fewest pods first).
    let deploy = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: spread\nspec:\n  replicas: 4\n  selector:\n    matchLabels:\n      app: spread\n  template:\n    metadata:\n      labels:\n        app: spread\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: x\n        command: [sleep, \"300\"]\n";
    c.ok_v("1.33", &["apply", "-f", "-"], Some(deploy));
    assert!(
        c.ok(&["rollout", "status", "deployment/spread", "--timeout=60s"])
            .contains("successfully rolled out")
    );
    let on_b = |c: &Cluster| -> Vec<Value> {
        c.get_json(&["pods", "-l", "app=spread"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["spec"]["nodeName"] == "node-b")
            .cloned()
            .collect()
    };
    let b_pods = on_b(&c);
    assert_eq!(b_pods.len(), 2, "two of four pods on node-b");
    let orphans: Vec<String> = b_pods
        .iter()
        .filter_map(|p| p["status"]["containerStatuses"][0]["containerID"].as_str())
        .map(|id| id.trim_start_matches("svcnet://").to_string())
        .collect();

    // The agent dies: its Lease expires, the node goes NotReady and its pods unready.
    agent_b.kill_agent_only();
    assert!(
        eventually(Duration::from_secs(30), || ready("node-b", "Unknown")),
        "node-b never went NotReady"
    );
    assert!(c.ok(&["get", "nodes"]).contains("NotReady"));
    assert!(eventually(Duration::from_secs(10), || {
        on_b(&c).iter().all(|p| {
            p["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|x| x["type"] == "Ready" && x["status"] == "False"))
        })
    }));

    // The node is gone for good: its pods are deleted and replaced on the node that is left.
    c.ok(&["delete", "node", "node-b"]);
    assert!(eventually(Duration::from_secs(60), || {
        let pods = c.get_json(&["pods", "-l", "app=spread"]);
        let items = pods["items"].as_array().unwrap();
        items.len() == 4
            && items
                .iter()
                .all(|p| p["spec"]["nodeName"] != "node-b" && p["status"]["phase"] == "Running")
    }));
    c.ok(&["delete", "deploy", "spread", "--timeout=30s"]);
    // The dead agent's processes are ours (this test started that agent): the guard stops them.
    assert!(!orphans.is_empty());
    drop(agent_b);
    assert!(eventually(Duration::from_secs(5), || {
        orphans.iter().all(|pid| {
            // Gone, or a zombie waiting for init to reap it.
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| {
                    s.rsplit_once(')')
                        .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
                })
                .unwrap_or(true)
        })
    }));
}

/// Starts `svcnet agent` for the node `node` of `c` (data in a directory of its own, DNS on a free port)
/// with `args` added; the agent and that directory.
/// Whether the node `name` exists and its Ready condition is `want`. Listed rather than got by name, since
/// an agent just started may not have registered its node yet.
fn node_ready(c: &Cluster, name: &str, want: &str) -> bool {
    c.get_json(&["nodes"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|n| n["metadata"]["name"] == name)
        .flat_map(|n| n["status"]["conditions"].as_array().into_iter().flatten())
        .any(|x| x["type"] == "Ready" && x["status"] == want)
}

fn start_agent(c: &Cluster, node: &str, args: &[&str]) -> (Agent, std::path::PathBuf) {
    let dir = c.dir.join(node);
    (Agent::start(SVCNET, &c.kubeconfig(), node, &dir, args), dir)
}

/// A pod bound to a node that has no pod CIDR yet waits for one, and starts as soon as the node gets it,
/// with no further change to the pod. (The agent learns the CIDR and the pods from two watches; when the
/// pods came first, as they may after a restart, the pods used to wait for an event that never came.)
/// The node IPAM, out of blocks, says so on the node, and gives it the block a deleted node frees.
#[test]
fn a_pod_waiting_for_its_node_s_pod_cidr_starts_when_the_cidr_arrives() {
    // Two /28 blocks in the cluster range: the first node takes one, node-x the other, node-b none.
    let c = Cluster::start_with(
        SVCNET,
        &["--cluster-cidr", "127.246.0.0/27", "--node-cidr-mask-size", "28"],
    );
    let cidr_of = |node: &str| c.get_json(&["node", node])["spec"]["podCIDR"].clone();
    assert!(eventually(Duration::from_secs(20), || {
        c.get_json(&["nodes"])["items"][0]["spec"]["podCIDR"] == "127.246.0.0/28"
    }));
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-x\n"),
    );
    assert!(eventually(Duration::from_secs(10), || cidr_of("node-x") == "127.246.0.16/28"));
    let (_agent, _) = start_agent(&c, "node-b", &[]);
    assert!(eventually(Duration::from_secs(20), || node_ready(
        &c, "node-b", "True"
    )));
    // As kube-controller-manager's node IPAM says it (an Event on the Node, in `default`).
    assert!(eventually(Duration::from_secs(10), || {
        node_events(&c, "node-b").contains("CIDRNotAvailable")
    }));
    assert!(cidr_of("node-b").is_null());
    let port = free_port("127.0.0.1");
    let pod = pod_yaml(
        "late",
        "",
        &format!("exec python3 -m http.server {port} --bind $POD_IP"),
        "",
    )
    .replace("spec:\n", "spec:\n  nodeName: node-b\n");
    c.ok_v("1.33", &["apply", "-f", "-"], Some(&pod));
    std::thread::sleep(Duration::from_secs(2));
    let p = c.get_json(&["pod", "late"]);
    assert!(
        p["status"]["podIP"].is_null(),
        "no address without a pod CIDR: {p}"
    );

    // node-x goes away: its block goes to node-b, and the pod starts on an address in it.
    c.ok(&["delete", "node", "node-x"]);
    assert!(eventually(Duration::from_secs(10), || cidr_of("node-b") == "127.246.0.16/28"));
    let p = wait_running(&c, "late");
    let ip = p["status"]["podIP"].as_str().unwrap().to_string();
    assert!(
        ip.starts_with("127.246.0.") && ip.rsplit('.').next().unwrap().parse::<u8>().unwrap() >= 16,
        "{p}"
    );
    assert!(eventually(Duration::from_secs(10), || http_ok(&ip, port)));
    c.ok(&["delete", "pod", "late", "--grace-period=1", "--timeout=30s"]);
}

/// `kubectl get events` about the node `name` (cluster-scoped objects' Events live in `default`).
fn node_events(c: &Cluster, name: &str) -> String {
    c.ok(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        &format!("involvedObject.name={name}"),
    ])
}

/// Node IPAM decides from the whole list of nodes, so a node already waiting for a block when the
/// controllers start (it is in their initial list, not a later event) gets one as soon as one is free: here
/// the cluster range grows across a restart. No other event about that node follows to rescue it.
#[test]
fn a_node_listed_without_a_block_at_start_up_gets_one() {
    let mut c = Cluster::start_with(
        SVCNET,
        &["--cluster-cidr", "127.247.0.0/28", "--node-cidr-mask-size", "28"],
    );
    let cidr_of = |c: &Cluster, node: &str| c.get_json(&["node", node])["spec"]["podCIDR"].clone();
    assert!(eventually(Duration::from_secs(20), || {
        c.get_json(&["nodes"])["items"][0]["spec"]["podCIDR"] == "127.247.0.0/28"
    }));
    let local = c.get_json(&["nodes"])["items"][0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-w\n"),
    );
    // Seen, and left waiting: the range has one block.
    assert!(eventually(Duration::from_secs(10), || {
        node_events(&c, "node-w").contains("CIDRNotAvailable")
    }));
    assert!(cidr_of(&c, "node-w").is_null());

    c.set_flags(&["--cluster-cidr", "127.247.0.0/27", "--node-cidr-mask-size", "28"]);
    c.restart("TERM");
    assert!(
        eventually(Duration::from_secs(10), || cidr_of(&c, "node-w")
            == "127.247.0.16/28"),
        "node-w: {}\n{}",
        c.get_json(&["node", "node-w"]),
        c.log()
    );
    assert_eq!(cidr_of(&c, &local), "127.247.0.0/28");
}

/// An agent that starts with pods already bound to its node (and its node already given a pod block)
/// starts them while its pod list is still arriving. Pods without probes change status once, when they
/// start: that one status must reach the API even though the agent's pod cache was not complete yet. And
/// the agent reads the Services before it starts any pod, since their environment is fixed at start.
#[test]
fn pods_waiting_for_their_agent_all_report_running() {
    let c = Cluster::start(SVCNET);
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: node-l\n"),
    );
    assert!(eventually(Duration::from_secs(10), || {
        c.get_json(&["node", "node-l"])["spec"]["podCIDR"].is_string()
    }));
    const PODS: usize = 40;
    let pods: String = (0..PODS)
        .map(|i| {
            pod_yaml(
                &format!("early-{i}"),
                "",
                "echo kubernetes=$KUBERNETES_SERVICE_HOST; exec sleep 600",
                "",
            )
            .replace("spec:\n", "spec:\n  nodeName: node-l\n")
            .replace(
                "terminationGracePeriodSeconds: 5",
                "terminationGracePeriodSeconds: 1",
            )
        })
        .collect::<Vec<_>>()
        .join("---\n");
    c.ok_v("1.33", &["apply", "-f", "-"], Some(&pods));
    let (_agent, _) = start_agent(&c, "node-l", &[]);
    let running = || {
        c.get_json(&["pods"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["status"]["phase"] == "Running" && p["status"]["podIP"].is_string())
            .count()
    };
    assert!(
        eventually(Duration::from_secs(30), || running() == PODS),
        "{} of {PODS} pods report Running:\n{}",
        running(),
        c.ok(&["get", "pods", "-o", "wide"])
    );
    let kubernetes = c.get_json(&["svc", "kubernetes"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    for i in [0, PODS / 2, PODS - 1] {
        let name = format!("early-{i}");
        assert!(
            eventually(Duration::from_secs(10), || c
                .ok(&["logs", &name])
                .contains(&format!("kubernetes={kubernetes}\n"))),
            "{name}: {}",
            c.ok(&["logs", &name])
        );
    }
    c.ok(&["delete", "pods", "--all", "--grace-period=1", "--timeout=60s"]);
}

#[test]
fn rolling_update_of_real_processes_keeps_enough_ready() {
    let c = Cluster::start(SVCNET);
    let port = free_port("127.0.0.1");
    let deploy = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: roll\nspec:\n  replicas: 3\n  selector:\n    matchLabels:\n      app: roll\n  template:\n    metadata:\n      labels:\n        app: roll\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: c\n        image: python:3\n        env: [{{name: VERSION, value: \"1\"}}]\n        command: [\"sh\", \"-c\", \"sleep 1; exec python3 -m http.server {port} --bind $POD_IP\"]\n        readinessProbe:\n          tcpSocket: {{port: {port}}}\n          periodSeconds: 1\n"
    );
    c.ok_v("1.33", &["apply", "-f", "-"], Some(&deploy));
    assert!(
        c.ok(&["rollout", "status", "deployment/roll", "--timeout=60s"])
            .contains("successfully rolled out")
    );
    let ready_count = |c: &Cluster| -> usize {
        c.get_json(&["pods", "-l", "app=roll"])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|cs| cs.iter().any(|x| x["type"] == "Ready" && x["status"] == "True"))
            })
            .count()
    };
    c.ok(&["set", "env", "deployment/roll", "VERSION=2"]);
    // Watch readiness through the whole rollout (bounded: at most 60 s).
    let start = std::time::Instant::now();
    let mut min_ready = usize::MAX;
    loop {
        min_ready = min_ready.min(ready_count(&c));
        let d = c.get_json(&["deploy", "roll"]);
        let done = d["status"]["updatedReplicas"] == 3
            && d["status"]["replicas"] == 3
            && d["status"]["availableReplicas"] == 3
            && d["status"]["observedGeneration"] == d["metadata"]["generation"];
        if done || start.elapsed() > Duration::from_secs(60) {
            assert!(done, "rollout did not finish: {}", d["status"]);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        min_ready >= 3,
        "fewer than replicas - maxUnavailable (3) ready during the rollout: {min_ready}"
    );
    let rs = c.get_json(&["rs", "-l", "app=roll"]);
    let sizes: Vec<i64> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["spec"]["replicas"].as_i64().unwrap())
        .collect();
    assert_eq!(sizes.iter().sum::<i64>(), 3, "{sizes:?}");
    assert!(c.ok(&["rollout", "history", "deployment/roll"]).contains('2'));
    c.ok(&["rollout", "undo", "deployment/roll"]);
    assert!(
        c.ok(&["rollout", "status", "deployment/roll", "--timeout=60s"])
            .contains("successfully rolled out")
    );
    let env = c.get_json(&["deploy", "roll"])["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"]
        .clone();
    assert_eq!(env, "1");
    c.ok(&["delete", "deploy", "roll", "--timeout=30s"]);
}

/// `GET /metrics` from `addr`: the body, or empty on any error.
fn metrics_text(addr: std::net::SocketAddr) -> String {
    http_get(addr, "/metrics")
}

/// The whole HTTP/1.1 response (head and body) to `GET path`, or "" if the server is not there.
fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes());
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
