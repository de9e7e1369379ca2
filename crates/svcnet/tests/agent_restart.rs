//! Pods outlive svcnet (issue 20, item 1): a Deployment of real processes behind a Service keeps running
//! while `svcnet up` is killed (SIGKILL) or stopped (SIGTERM) and started again on the same data directory;
//! the new agent adopts the processes (same PIDs, same IPs, same restart counts, Ready again), stops a pod
//! deleted while no agent ran, starts its replacement, and with `--stop-pods-on-exit` stops them all.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use svcnet_testsupport::agent::Agent;
use svcnet_testsupport::cluster::recorded_pod_processes;
use svcnet_testsupport::net::free_port;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(60);

fn http_ok(addr: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 12 && buf[..n].starts_with(b"HTTP/1.0 200"))
}

/// One pod of the Deployment as the API shows it.
#[derive(Debug, Clone, PartialEq)]
struct PodView {
    pid: u32,
    ip: String,
    restarts: i64,
    ready: bool,
}

/// The Deployment's pods that are not being deleted, by name.
fn pods(c: &Cluster) -> BTreeMap<String, PodView> {
    c.get_json(&["pods", "-l", "app=web"])["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let cs = &p["status"]["containerStatuses"][0];
            let view = PodView {
                pid: cs["containerID"]
                    .as_str()
                    .and_then(|id| id.strip_prefix("svcnet://"))
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(0),
                ip: p["status"]["podIP"].as_str().unwrap_or("").to_string(),
                restarts: cs["restartCount"].as_i64().unwrap_or(-1),
                ready: p["status"]["conditions"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True"),
            };
            (p["metadata"]["name"].as_str().unwrap_or("").to_string(), view)
        })
        .collect()
}

/// How many times an agent of `c` adopted pods so far (its log spans restarts).
fn adoptions(c: &Cluster) -> usize {
    c.log()
        .matches("adopted pods a previous agent left running")
        .count()
}

fn alive(pid: u32) -> bool {
    svcnet_testsupport::cluster::proc_start(pid).is_some()
}

/// Waits until the Deployment has 3 Ready pods, each with a running process; returns them.
fn three_ready(c: &Cluster, what: &str) -> BTreeMap<String, PodView> {
    let mut last = BTreeMap::new();
    let ok = eventually(WAIT, || {
        last = pods(c);
        last.len() == 3 && last.values().all(|p| p.ready && p.pid > 1 && alive(p.pid))
    });
    assert!(ok, "{what}: pods never all ready: {last:?}\n{}", c.log());
    last
}

/// Counts failed requests to `targets` in a loop (bounded: at most `limit`, one every 20 ms) until
/// `stop` is set.
fn request_loop(targets: Vec<String>, stop: Arc<AtomicBool>, failed: Arc<AtomicU64>, limit: u64) -> u64 {
    let start = Instant::now();
    let mut sent = 0;
    while !stop.load(Ordering::Relaxed) && sent < limit && start.elapsed() < Duration::from_secs(120) {
        let target = &targets[sent as usize % targets.len()];
        if !http_ok(target) {
            failed.fetch_add(1, Ordering::Relaxed);
        }
        sent += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    sent
}

#[test]
fn pods_outlive_svcnet_and_are_adopted() {
    let mut c = Cluster::start_keeping_pods(SVCNET, &[]);
    let port = free_port("127.0.0.1");
    let manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n  selector:\n    matchLabels:\n      app: web\n  template:\n    metadata:\n      labels:\n        app: web\n    spec:\n      terminationGracePeriodSeconds: 2\n      containers:\n      - name: web\n        image: python:3\n        command: [\"sh\", \"-c\", \"exec python3 -m http.server {port} --bind $POD_IP\"]\n        readinessProbe:\n          tcpSocket: {{port: {port}}}\n          periodSeconds: 1\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: {port}\n"
    );
    c.ok_v("1.33", &["apply", "-f", "-"], Some(&manifest));
    let before = three_ready(&c, "first start");
    let cluster_ip = c.get_json(&["service", "web"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    let service = format!("{cluster_ip}:80");
    assert!(eventually(WAIT, || http_ok(&service)), "Service never served");
    let recorded = recorded_pod_processes(&c.dir.join("agent"));
    let mut pids: Vec<u32> = before.values().map(|p| p.pid).collect();
    pids.sort();
    let mut rec_sorted = recorded.clone();
    rec_sorted.sort();
    assert_eq!(rec_sorted, pids, "the agent's records name the running processes");

    // SIGKILL: nothing of svcnet runs, the pods do; the next svcnet adopts them as they are.
    c.stop("KILL");
    assert!(before.values().all(|p| alive(p.pid)), "pods died with svcnet");
    for p in before.values() {
        assert!(http_ok(&format!("{}:{port}", p.ip)), "{p:?} stopped serving");
    }
    c.start_again();
    // The API still shows what the killed agent wrote: wait for the new agent to have adopted them.
    assert!(
        eventually(WAIT, || adoptions(&c) == 1),
        "no adoption\n{}",
        c.log()
    );
    let after = three_ready(&c, "after SIGKILL");
    assert_eq!(
        after, before,
        "same pods, PIDs, IPs and restart counts after SIGKILL"
    );
    assert!(
        eventually(WAIT, || http_ok(&service)),
        "Service does not serve after SIGKILL"
    );

    // The adopted processes are watched: one that dies is noticed (its exit code is unknown: it is not
    // the agent's child) and restarted in place, as any container.
    let (crashed, crashed_view) = before.iter().last().map(|(n, v)| (n.clone(), v.clone())).unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{}", crashed_view.pid)])
        .status();
    let mut last = serde_json::Value::Null;
    assert!(
        eventually(WAIT, || {
            last = c.get_json(&["pod", &crashed]);
            let cs = &last["status"]["containerStatuses"][0];
            cs["restartCount"] == 1
                && cs["lastState"]["terminated"]["reason"] == "ContainerStatusUnknown"
                && cs["ready"] == true
        }),
        "the adopted container's death went unnoticed: {last}"
    );
    let before = three_ready(&c, "after the crash");
    assert_eq!(
        before[&crashed].ip, crashed_view.ip,
        "restarted in place keeps its IP"
    );
    assert_ne!(before[&crashed].pid, crashed_view.pid);

    // A pod deleted while no agent runs (svcnet up without its agent) is stopped by the next agent,
    // which adopts the others and starts the replacement.
    c.set_flags(&["--no-agent"]);
    c.restart("TERM");
    let (victim, victim_view) = before.iter().next().map(|(n, v)| (n.clone(), v.clone())).unwrap();
    c.ok(&["delete", "pod", &victim, "--force", "--grace-period=0"]);
    assert!(
        alive(victim_view.pid),
        "nothing stopped the deleted pod's process yet"
    );
    c.set_flags(&[]);
    c.restart("TERM");
    assert!(
        eventually(WAIT, || adoptions(&c) == 2),
        "no adoption\n{}",
        c.log()
    );
    assert!(
        eventually(WAIT, || !alive(victim_view.pid)),
        "the process of the pod deleted while no agent ran still runs\n{}",
        c.log()
    );
    let now = three_ready(&c, "after the deletion");
    for (name, view) in before.iter().filter(|(n, _)| **n != victim) {
        assert_eq!(now.get(name), Some(view), "{name} was not adopted as it was");
    }
    assert!(!now.contains_key(&victim));

    // SIGTERM under a bounded request loop: the pods (reached on their own IPs) never stop serving, and
    // neither does the Service: its userspace proxy is a process of its own that the next svcnet adopts
    // (more load, SIGKILL and the NodePort in tests/proxy_restart.rs).
    let before = now;
    let stop = Arc::new(AtomicBool::new(false));
    let (pod_failed, svc_failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let pod_targets: Vec<String> = before.values().map(|p| format!("{}:{port}", p.ip)).collect();
    let loops = [
        (pod_targets, pod_failed.clone()),
        (vec![service.clone()], svc_failed.clone()),
    ]
    .map(|(targets, failed)| {
        let stop = stop.clone();
        std::thread::spawn(move || request_loop(targets, stop, failed, 5_000))
    });
    std::thread::sleep(Duration::from_millis(500));
    c.restart("TERM");
    assert!(
        eventually(WAIT, || adoptions(&c) == 3),
        "no adoption\n{}",
        c.log()
    );
    let after = three_ready(&c, "after SIGTERM");
    assert!(
        eventually(WAIT, || http_ok(&service)),
        "Service does not serve after SIGTERM"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let [pod_sent, svc_sent] = loops.map(|t| t.join().unwrap());
    let (pod_failed, svc_failed) = (
        pod_failed.load(Ordering::Relaxed),
        svc_failed.load(Ordering::Relaxed),
    );
    eprintln!(
        "SIGTERM restart: {pod_failed} of {pod_sent} requests to pod IPs failed, {svc_failed} of {svc_sent} to the ClusterIP"
    );
    assert_eq!(
        after, before,
        "same pods, PIDs, IPs and restart counts after SIGTERM"
    );
    assert_eq!(pod_failed, 0, "the pods stopped serving during the restart");
    assert_eq!(svc_failed, 0, "the ClusterIP stopped serving during the restart");

    // --stop-pods-on-exit keeps the old behaviour: the node's pods stop with svcnet.
    c.set_keep_pods(false);
    c.restart("TERM");
    assert!(
        eventually(WAIT, || adoptions(&c) == 4),
        "no adoption\n{}",
        c.log()
    );
    three_ready(&c, "with --stop-pods-on-exit");
    let pids: Vec<u32> = pods(&c).values().map(|p| p.pid).collect();
    assert!(pids.iter().all(|p| alive(*p)));
    c.stop("TERM");
    assert!(
        eventually(Duration::from_secs(10), || !pids.iter().any(|p| alive(*p))),
        "pods outlived svcnet up --stop-pods-on-exit"
    );
    assert!(recorded_pod_processes(&c.dir.join("agent")).is_empty());
    // Drop kills anything recorded that still runs, should an assertion above have failed.
    c.set_keep_pods(true);
}

/// A `svcnet agent` as node `node-b` of `c` with the data directory `dir` (no data plane): on drop it
/// is killed, and so are the pods it recorded, also when the test fails.
fn start_agent(c: &Cluster, dir: &std::path::Path, extra: &[&str]) -> Agent {
    let mut args = vec!["--proxy-mode", "none"];
    args.extend_from_slice(extra);
    Agent::start(SVCNET, &c.kubeconfig(), "node-b", dir, &args)
}

/// `svcnet agent` keeps its pods across a SIGTERM restart (adopted by the next agent on its data
/// directory), and stops them on exit with `--stop-pods-on-exit`.
#[test]
fn svcnet_agent_pods_outlive_it_unless_asked() {
    let c = Cluster::start(SVCNET);
    let dir = c.dir.join("node-b");
    std::fs::create_dir_all(&dir).unwrap();
    let mut agent = start_agent(&c, &dir, &[]);
    let port = free_port("127.0.0.1");
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: b\nspec:\n  nodeName: node-b\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: b\n    image: python:3\n    command: [\"sh\", \"-c\", \"exec python3 -m http.server {port} --bind $POD_IP\"]\n    readinessProbe:\n      tcpSocket: {{port: {port}}}\n      periodSeconds: 1\n"
    );
    c.ok_v("1.33", &["apply", "-f", "-"], Some(&pod));
    let view = |c: &Cluster| {
        let p = c.get_json(&["pod", "b"]);
        let cs = &p["status"]["containerStatuses"][0];
        (
            cs["containerID"]
                .as_str()
                .and_then(|id| id.strip_prefix("svcnet://"))
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(0),
            cs["restartCount"].as_i64().unwrap_or(-1),
            cs["ready"] == true,
        )
    };
    let mut first = (0, 0, false);
    assert!(
        eventually(WAIT, || {
            first = view(&c);
            first.2 && alive(first.0)
        }),
        "pod never ready: {first:?}\n{}",
        agent.log()
    );

    agent.stop("TERM");
    assert!(alive(first.0), "the pod died with `svcnet agent`");
    let mut agent = start_agent(&c, &dir, &["--stop-pods-on-exit"]);
    assert!(
        eventually(WAIT, || agent
            .log()
            .contains("adopted pods a previous agent left running")),
        "{}",
        agent.log()
    );
    assert_eq!(view(&c), first, "same process, restart count and readiness");

    agent.stop("TERM");
    assert!(
        eventually(Duration::from_secs(10), || !alive(first.0)),
        "the pod outlived `svcnet agent --stop-pods-on-exit`"
    );
}
