//! The pod runner against real processes (`sh`, `sleep`, `python3`), on 127.0.0.1 only.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use serde_json::{Value, json};
use svcnet_agent::runner::{PodContext, PodRunner, RunnerError};
use svcnet_testsupport::net::free_port;

/// Generous: the tests must pass on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(60);

fn ctx() -> PodContext {
    PodContext {
        pod_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        node_name: "node-1".into(),
        service_env: vec![("WEB_SERVICE_HOST".into(), "127.96.0.20".into())],
        exec_prefix: Vec::new(),
        container_prefix: Default::default(),
    }
}

fn pod(name: &str, spec: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}"), "labels": {"app": "demo"}},
        "spec": spec,
    }))
    .expect("valid pod")
}

fn runner(root: &Path) -> Cleanup {
    Cleanup(PodRunner::with_backoff(
        root.to_path_buf(),
        Duration::from_secs(2),
        Duration::from_secs(4),
    ))
}

/// The runner under test; if a test fails before stopping its pods, their process groups are killed on drop
/// so that no process outlives the test.
struct Cleanup(PodRunner);

impl std::ops::Deref for Cleanup {
    type Target = PodRunner;
    fn deref(&self) -> &PodRunner {
        &self.0
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for uid in self.0.running() {
            let Some(status) = self.0.status(&uid) else {
                continue;
            };
            let all = status
                .init_container_statuses
                .iter()
                .flatten()
                .chain(status.container_statuses.iter().flatten());
            for c in all {
                let running = c.state.as_ref().is_some_and(|s| s.running.is_some());
                let pgid = c
                    .container_id
                    .as_deref()
                    .and_then(|id| id.strip_prefix("svcnet://")?.parse::<i32>().ok());
                if let (true, Some(pgid)) = (running, pgid)
                    && pgid > 1
                {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pgid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
    }
}

/// Waits (event-driven, with a slow poll as a safety net) until `cond` holds for the pod's status.
async fn wait_status(
    runner: &PodRunner,
    uid: &str,
    what: &str,
    cond: impl Fn(&PodStatus) -> bool,
) -> PodStatus {
    let mut changes = runner.changes();
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = runner.status(uid)
            && cond(&status)
        {
            return status;
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; status: {:#?}", runner.status(uid));
        }
        let _ = tokio::time::timeout(Duration::from_millis(200), changes.recv()).await;
    }
}

fn container<'a>(status: &'a PodStatus, name: &str) -> &'a ContainerStatus {
    status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == name)
        .expect("container status")
}

fn condition(status: &PodStatus, type_: &str) -> String {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
        .map(|c| c.status.clone())
        .unwrap_or_default()
}

fn phase(status: &PodStatus) -> &str {
    status.phase.as_deref().unwrap_or("")
}

fn waiting_reason(c: &ContainerStatus) -> Option<&str> {
    c.state.as_ref()?.waiting.as_ref()?.reason.as_deref()
}

fn exit_code(c: &ContainerStatus) -> Option<i32> {
    Some(c.state.as_ref()?.terminated.as_ref()?.exit_code)
}

async fn wait_file(path: &Path, contains: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(contains) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {contains:?} in {}: {text:?}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serving_pod_runs_and_becomes_ready() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let port = free_port("127.0.0.1");
    let p = pod(
        "web",
        json!({"containers": [{
            "name": "web", "image": "python:3",
            "command": ["python3", "-m", "http.server", "--bind", "127.0.0.1", port.to_string()],
            "ports": [{"name": "http", "containerPort": port}],
            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
            "livenessProbe": {"httpGet": {"port": port, "path": "/"}, "periodSeconds": 1, "timeoutSeconds": 5},
        }]}),
    );
    runner.ensure(&p, ctx()).unwrap();
    assert_eq!(runner.running(), vec!["uid-web".to_owned()]);
    let s = wait_status(&runner, "uid-web", "ready", |s| condition(s, "Ready") == "True").await;
    assert_eq!(phase(&s), "Running");
    let c = container(&s, "web");
    assert!(c.ready && c.started == Some(true) && c.restart_count == 0);
    assert_eq!(c.image, "python:3");
    assert_eq!(condition(&s, "ContainersReady"), "True");
    assert_eq!(condition(&s, "Initialized"), "True");
    assert_eq!(condition(&s, "PodScheduled"), "True");
    assert_eq!(s.pod_ip.as_deref(), Some("127.0.0.1"));
    assert!(s.start_time.is_some());
    // Idempotent: ensuring again changes nothing.
    let id = c.container_id.clone();
    runner.ensure(&p, ctx()).unwrap();
    assert_eq!(
        container(&runner.status("uid-web").unwrap(), "web").container_id,
        id
    );
    let started = Instant::now();
    runner.stop("uid-web", Duration::from_secs(10)).await;
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "python exits on SIGTERM"
    );
    assert!(runner.running().is_empty());
    let s = runner.status("uid-web").unwrap();
    assert_eq!(exit_code(container(&s, "web")), Some(143));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_http_probe_flips_ready() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let port = free_port("127.0.0.1");
    let served = tempfile::tempdir().unwrap();
    let p = pod(
        "flip",
        json!({"containers": [{
            "name": "web",
            "command": ["python3", "-m", "http.server", "--bind", "127.0.0.1", port.to_string()],
            "workingDir": served.path(),
            "readinessProbe": {"httpGet": {"port": port, "path": "healthz"}, "periodSeconds": 1, "failureThreshold": 1},
        }]}),
    );
    runner.ensure(&p, ctx()).unwrap();
    let s = wait_status(&runner, "uid-flip", "running", |s| {
        container(s, "web")
            .state
            .as_ref()
            .is_some_and(|st| st.running.is_some())
    })
    .await;
    assert!(!container(&s, "web").ready);
    // Give the probe a few periods of 404 first.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = runner.status("uid-flip").unwrap();
    assert!(!container(&s, "web").ready);
    assert_eq!(condition(&s, "Ready"), "False");
    assert_eq!(phase(&s), "Running");
    std::fs::write(served.path().join("healthz"), "ok").unwrap();
    wait_status(&runner, "uid-flip", "ready", |s| {
        container(s, "web").ready && condition(s, "Ready") == "True"
    })
    .await;
    std::fs::remove_file(served.path().join("healthz")).unwrap();
    let s = wait_status(&runner, "uid-flip", "unready", |s| !container(s, "web").ready).await;
    assert_eq!(condition(&s, "ContainersReady"), "False");
    assert_eq!(container(&s, "web").restart_count, 0);
    runner.stop_all(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_failure_restarts_in_place() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let p = pod(
        "live",
        json!({"containers": [{
            "name": "app",
            "command": ["sh", "-c", "touch alive; echo started; exec sleep 1000"],
            "livenessProbe": {"exec": {"command": ["test", "-f", "alive"]}, "initialDelaySeconds": 1, "periodSeconds": 1,
                              "failureThreshold": 1, "terminationGracePeriodSeconds": 1},
        }]}),
    );
    runner.ensure(&p, ctx()).unwrap();
    wait_status(&runner, "uid-live", "ready", |s| container(s, "app").ready).await;
    wait_file(&root.path().join("pods/uid-live/logs/app/0.log"), "started").await;
    let work = root.path().join("pods/uid-live/work");
    std::fs::remove_file(work.join("alive")).unwrap();
    let s = wait_status(&runner, "uid-live", "restart", |s| {
        let c = container(s, "app");
        c.restart_count >= 1 && c.ready
    })
    .await;
    let c = container(&s, "app");
    let last = c
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .expect("last state");
    assert_eq!(last.exit_code, 143, "sleep dies of SIGTERM");
    assert_eq!(last.reason.as_deref(), Some("Error"));
    assert_eq!(phase(&s), "Running");
    assert_eq!(s.pod_ip.as_deref(), Some("127.0.0.1"));
    // The new instance recreated the file: it stays healthy.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        container(&runner.status("uid-live").unwrap(), "app").restart_count,
        1
    );
    assert_eq!(runner.logs("uid-live", "app", false, None).unwrap(), b"started\n");
    runner.stop_all(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashing_container_backs_off() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let p = pod(
        "crash",
        json!({"containers": [{"name": "c", "command": ["sh", "-c", "echo boom; exit 3"]}]}),
    );
    runner.ensure(&p, ctx()).unwrap();
    let s = wait_status(&runner, "uid-crash", "CrashLoopBackOff", |s| {
        waiting_reason(container(s, "c")) == Some("CrashLoopBackOff")
    })
    .await;
    let c = container(&s, "c");
    let message = c
        .state
        .as_ref()
        .unwrap()
        .waiting
        .as_ref()
        .unwrap()
        .message
        .clone()
        .unwrap();
    assert_eq!(
        message,
        "back-off 2s restarting failed container=c pod=crash_default(uid-crash)"
    );
    assert_eq!(
        c.restart_count, 1,
        "the first restart is immediate, the second waits"
    );
    let last = c.last_state.as_ref().and_then(|l| l.terminated.as_ref()).unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (3, Some("Error")));
    assert_eq!(phase(&s), "Running");
    assert_eq!(condition(&s, "Ready"), "False");
    // The back-off doubles: next time it reads 4s (the cap).
    wait_status(&runner, "uid-crash", "longer back-off", |s| {
        let c = container(s, "c");
        c.state
            .as_ref()
            .and_then(|st| st.waiting.as_ref())
            .and_then(|w| w.message.as_deref())
            == Some("back-off 4s restarting failed container=c pod=crash_default(uid-crash)")
    })
    .await;
    assert_eq!(runner.logs("uid-crash", "c", false, None).unwrap(), b"boom\n");
    // Stopping during back-off is immediate.
    let started = Instant::now();
    runner.stop("uid-crash", Duration::from_secs(30)).await;
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_policy_never_ends_in_succeeded_or_failed() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let ok = pod(
        "ok",
        json!({"restartPolicy": "Never", "containers": [{"name": "c", "command": ["true"]}]}),
    );
    let bad = pod(
        "bad",
        json!({"restartPolicy": "Never", "containers": [
            {"name": "a", "command": ["sh", "-c", "exit 7"]},
            {"name": "b", "command": ["true"]},
        ]}),
    );
    let missing = pod(
        "missing",
        json!({"restartPolicy": "OnFailure", "containers": [{"name": "c", "command": ["/nonexistent/bin"]}]}),
    );
    runner.ensure(&ok, ctx()).unwrap();
    runner.ensure(&bad, ctx()).unwrap();
    runner.ensure(&missing, ctx()).unwrap();
    let s = wait_status(&runner, "uid-ok", "Succeeded", |s| phase(s) == "Succeeded").await;
    let t = container(&s, "c")
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    assert!(t.started_at.is_some() && t.finished_at.is_some());
    assert_eq!(condition(&s, "Ready"), "False");
    let s = wait_status(&runner, "uid-bad", "Failed", |s| phase(s) == "Failed").await;
    assert_eq!(exit_code(container(&s, "a")), Some(7));
    assert_eq!(exit_code(container(&s, "b")), Some(0));
    assert_eq!(container(&s, "a").restart_count, 0);
    // A program that cannot start is a StartError, restarted under OnFailure.
    let s = wait_status(&runner, "uid-missing", "start error", |s| {
        let c = container(s, "c");
        c.last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .and_then(|t| t.reason.as_deref())
            == Some("StartError")
    })
    .await;
    assert_eq!(phase(&s), "Running");
    runner.stop_all(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_containers_run_first_in_order() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let p = pod(
        "init",
        json!({
            "initContainers": [
                {"name": "one", "command": ["sh", "-c", "sleep 2; echo first > order"]},
                {"name": "two", "command": ["sh", "-c", "echo second >> order"]},
            ],
            "containers": [{"name": "main", "command": ["sh", "-c", "cat order; exec sleep 1000"]}],
        }),
    );
    runner.ensure(&p, ctx()).unwrap();
    let s = runner.status("uid-init").unwrap();
    assert_eq!(phase(&s), "Pending");
    assert_eq!(condition(&s, "Initialized"), "False");
    assert_eq!(waiting_reason(container(&s, "main")), Some("PodInitializing"));
    let s = wait_status(&runner, "uid-init", "running", |s| {
        phase(s) == "Running" && container(s, "main").ready
    })
    .await;
    assert_eq!(condition(&s, "Initialized"), "True");
    let inits = s.init_container_statuses.as_ref().unwrap();
    assert_eq!(inits.len(), 2);
    assert!(inits.iter().all(|c| exit_code(c) == Some(0)));
    let log_path = root.path().join("pods/uid-init/logs/main/0.log");
    wait_file(&log_path, "second").await;
    assert_eq!(
        runner.logs("uid-init", "main", false, None).unwrap(),
        b"first\nsecond\n"
    );
    runner.stop_all(Duration::from_secs(5)).await;

    // A failing init container under Never fails the pod; the regular container never starts.
    let p = pod(
        "init-fail",
        json!({"restartPolicy": "Never", "initContainers": [{"name": "one", "command": ["false"]}],
               "containers": [{"name": "main", "command": ["sleep", "1000"]}]}),
    );
    runner.ensure(&p, ctx()).unwrap();
    let s = wait_status(&runner, "uid-init-fail", "Failed", |s| phase(s) == "Failed").await;
    assert_eq!(waiting_reason(container(&s, "main")), Some("PodInitializing"));
    runner.stop_all(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_expansion_and_downward_api() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let p = pod(
        "envy",
        json!({"restartPolicy": "Never", "serviceAccountName": "robot", "containers": [{
            "name": "c",
            "command": ["sh", "-c"],
            "args": ["echo $POD_IP $MY_NAME $MY_NS $MY_UID $NODE $SA $HOST_IP $APP; echo $COMBINED; echo $ESCAPED; echo $UNKNOWN; echo $WEB_SERVICE_HOST $FROM_SVC; echo arg=$(MY_NAME)"],
            "env": [
                {"name": "MY_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "MY_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "MY_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}},
                {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "COMBINED", "value": "$(MY_NAME).$(MY_NS):$(POD_IP)"},
                {"name": "ESCAPED", "value": "$$(MY_NAME)"},
                {"name": "UNKNOWN", "value": "$(NOPE)-$(LATER)"},
                {"name": "FROM_SVC", "value": "svc=$(WEB_SERVICE_HOST)"},
                {"name": "LATER", "value": "later"},
            ],
        }]}),
    );
    runner.ensure(&p, ctx()).unwrap();
    wait_status(&runner, "uid-envy", "Succeeded", |s| phase(s) == "Succeeded").await;
    let logs = String::from_utf8(runner.logs("uid-envy", "c", false, None).unwrap()).unwrap();
    assert_eq!(
        logs,
        "127.0.0.1 envy default uid-envy node-1 robot 127.0.0.1 demo\n\
         envy.default:127.0.0.1\n\
         $(MY_NAME)\n\
         $(NOPE)-$(LATER)\n\
         127.96.0.20 svc=127.96.0.20\n\
         arg=envy\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_current_previous_and_tail() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let script = "n=$(cat count 2>/dev/null || echo 0); n=$((n+1)); echo $n > count; \
                  echo start-$n; echo a; echo b; [ $n -ge 2 ] && exec sleep 1000; exit 1";
    let p = pod(
        "logs",
        json!({"containers": [{"name": "c", "command": ["sh", "-c", script]}]}),
    );
    match runner.logs("uid-logs", "c", false, None) {
        Err(RunnerError::UnknownPod(_)) => {}
        other => panic!("unexpected {other:?}"),
    }
    runner.ensure(&p, ctx()).unwrap();
    wait_status(&runner, "uid-logs", "second instance", |s| {
        let c = container(s, "c");
        c.restart_count == 1 && c.ready
    })
    .await;
    let log_path = root.path().join("pods/uid-logs/logs/c/1.log");
    wait_file(&log_path, "b\n").await;
    assert_eq!(
        runner.logs("uid-logs", "c", false, None).unwrap(),
        b"start-2\na\nb\n"
    );
    assert_eq!(
        runner.logs("uid-logs", "c", true, None).unwrap(),
        b"start-1\na\nb\n"
    );
    assert_eq!(runner.logs("uid-logs", "c", false, Some(2)).unwrap(), b"a\nb\n");
    assert_eq!(runner.logs("uid-logs", "c", true, Some(1)).unwrap(), b"b\n");
    assert!(matches!(
        runner.logs("uid-logs", "nope", false, None),
        Err(RunnerError::UnknownContainer { .. })
    ));
    runner.remove("uid-logs", Duration::from_secs(5)).await.unwrap();
    assert!(runner.status("uid-logs").is_none());
    assert!(!root.path().join("pods/uid-logs").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_until_exit() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let p = pod(
        "follow",
        json!({"restartPolicy": "Never", "containers": [{"name": "c", "command": ["sh", "-c", "echo one; sleep 1; echo two; sleep 1; echo three"]}]}),
    );
    runner.ensure(&p, ctx()).unwrap();
    wait_status(&runner, "uid-follow", "running", |s| {
        container(s, "c").started == Some(true)
    })
    .await;
    let stream = runner.follow_logs("uid-follow", "c", None).unwrap();
    let collected = tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("stream ends when the container exits");
    let text: Vec<u8> = collected.concat();
    assert_eq!(text, b"one\ntwo\nthree\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_sigterm_first_and_runs_pre_stop() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let p = pod(
        "term",
        json!({"containers": [{
            "name": "c",
            "command": ["sh", "-c", "trap 'echo got-term; exit 0' TERM; echo up; while true; do sleep 0.1; done"],
            "lifecycle": {"preStop": {"exec": {"command": ["sh", "-c", "echo pre-stop > pre-stop.txt"]}}},
        }]}),
    );
    runner.ensure(&p, ctx()).unwrap();
    let s = wait_status(&runner, "uid-term", "ready", |s| container(s, "c").ready).await;
    let pid: u32 = container(&s, "c")
        .container_id
        .as_deref()
        .unwrap()
        .trim_start_matches("svcnet://")
        .parse()
        .unwrap();
    wait_file(&root.path().join("pods/uid-term/logs/c/0.log"), "up").await;
    let started = Instant::now();
    runner.stop("uid-term", Duration::from_secs(20)).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "exited on SIGTERM, not SIGKILL"
    );
    // The whole process group gets SIGTERM: `sh` may also report its `sleep` child as "Terminated".
    let logs = String::from_utf8(runner.logs("uid-term", "c", false, None).unwrap()).unwrap();
    assert!(
        logs.starts_with("up\n") && logs.ends_with("got-term\n"),
        "{logs:?}"
    );
    assert_eq!(
        std::fs::read_to_string(root.path().join("pods/uid-term/work/pre-stop.txt")).unwrap(),
        "pre-stop\n"
    );
    let s = runner.status("uid-term").unwrap();
    let t = container(&s, "c")
        .state
        .as_ref()
        .unwrap()
        .terminated
        .clone()
        .unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is gone"
    );
    // Stopped pods stay stopped.
    runner.ensure(&p, ctx()).unwrap();
    assert!(runner.running().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_kills_after_grace() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let p = pod(
        "stubborn",
        json!({"containers": [{"name": "c", "command": ["sh", "-c", "trap '' TERM; echo up; while true; do sleep 0.1; done"]}]}),
    );
    runner.ensure(&p, ctx()).unwrap();
    let s = wait_status(&runner, "uid-stubborn", "ready", |s| container(s, "c").ready).await;
    let pid: u32 = container(&s, "c")
        .container_id
        .as_deref()
        .unwrap()
        .trim_start_matches("svcnet://")
        .parse()
        .unwrap();
    wait_file(&root.path().join("pods/uid-stubborn/logs/c/0.log"), "up").await;
    let started = Instant::now();
    // The kubelet's minimum grace is 2 s.
    runner.stop("uid-stubborn", Duration::from_secs(1)).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(1900),
        "waited out the grace period, took {took:?}"
    );
    assert!(took < Duration::from_secs(30));
    let s = runner.status("uid-stubborn").unwrap();
    assert_eq!(exit_code(container(&s, "c")), Some(137));
    assert!(!Path::new(&format!("/proc/{pid}")).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrunnable_specs_never_crash() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let p = pod(
        "odd",
        json!({"containers": [
            {"name": "nocmd", "image": "nginx"},
            {"name": "cm", "command": ["true"], "envFrom": [{"configMapRef": {"name": "settings"}}]},
            {"name": "field", "command": ["true"], "env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]},
        ]}),
    );
    runner.ensure(&p, ctx()).unwrap();
    let s = wait_status(&runner, "uid-odd", "config errors", |s| {
        waiting_reason(container(s, "cm")) == Some("CreateContainerConfigError")
            && waiting_reason(container(s, "nocmd")) == Some("RunContainerError")
            && waiting_reason(container(s, "field")) == Some("CreateContainerConfigError")
    })
    .await;
    let w = container(&s, "nocmd")
        .state
        .as_ref()
        .unwrap()
        .waiting
        .clone()
        .unwrap();
    assert_eq!(
        w.message.as_deref(),
        Some("svcnet runs host processes: container \"nocmd\" has no command")
    );
    assert_eq!(phase(&s), "Pending");
    assert!(matches!(
        runner.logs("uid-odd", "nocmd", false, None),
        Err(RunnerError::WaitingToStart { .. })
    ));
    assert!(matches!(
        runner.logs("uid-odd", "nocmd", true, None),
        Err(RunnerError::NoPrevious { .. })
    ));
    // A pod without spec has no containers: nothing runs, nothing breaks.
    let empty: Pod =
        serde_json::from_value(json!({"metadata": {"name": "empty", "uid": "uid-empty"}})).unwrap();
    runner.ensure(&empty, ctx()).unwrap();
    assert_eq!(phase(&runner.status("uid-empty").unwrap()), "Pending");
    // A pod without uid is an error, not a panic.
    let mut nouid = p.clone();
    nouid.metadata.uid = None;
    assert!(matches!(runner.ensure(&nouid, ctx()), Err(RunnerError::NoUid(_))));
    runner.stop_all(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_probe_gates_started_and_ready() {
    let root = tempfile::tempdir().unwrap();
    let runner = runner(root.path());
    let p = pod(
        "slow",
        json!({"containers": [{
            "name": "c",
            "command": ["sh", "-c", "echo up; exec sleep 1000"],
            "startupProbe": {"exec": {"command": ["test", "-f", "started-flag"]}, "periodSeconds": 1, "failureThreshold": 120},
        }]}),
    );
    runner.ensure(&p, ctx()).unwrap();
    wait_status(&runner, "uid-slow", "running", |s| {
        container(s, "c")
            .state
            .as_ref()
            .is_some_and(|st| st.running.is_some())
    })
    .await;
    wait_file(&root.path().join("pods/uid-slow/logs/c/0.log"), "up").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = runner.status("uid-slow").unwrap();
    assert_eq!(container(&s, "c").started, Some(false));
    assert!(!container(&s, "c").ready);
    assert_eq!(phase(&s), "Running");
    std::fs::write(root.path().join("pods/uid-slow/work/started-flag"), "").unwrap();
    let s = wait_status(&runner, "uid-slow", "started", |s| container(s, "c").ready).await;
    assert_eq!(container(&s, "c").started, Some(true));
    assert_eq!(container(&s, "c").restart_count, 0);
    runner.stop_all(Duration::from_secs(5)).await;
}

/// The container ID's PID of container `name`.
fn pid_of(status: &PodStatus, name: &str) -> u32 {
    container(status, name)
        .container_id
        .as_deref()
        .and_then(|id| id.strip_prefix("svcnet://"))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Starts `pod` under a runner on a runtime of its own, waits until it runs, then drops that runtime (as
/// when the agent dies): the pod's processes keep running. Returns the container `c`'s PID.
fn run_then_lose_the_runner(root: &Path, pod: &Pod) -> u32 {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    let pid = rt.block_on(async {
        let first = PodRunner::new(root.to_path_buf());
        first.ensure(pod, ctx()).unwrap();
        let s = wait_status(&first, &uid, "running", |s| {
            container(s, "c")
                .state
                .as_ref()
                .is_some_and(|st| st.running.is_some())
        })
        .await;
        pid_of(&s, "c")
    });
    drop(rt);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the pod died with its runner"
    );
    pid
}

/// A runner adopts the pods a previous one (an agent that died) recorded: the same process, restart count
/// and readiness; it notices when that process ends (reported as ContainerStatusUnknown, since the exit
/// status of a process that is not its child cannot be read) and restarts it per the restart policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runner_adopts_the_pods_a_previous_one_left_running() {
    let root = tempfile::tempdir().unwrap();
    let p = pod(
        "adopted",
        json!({"containers": [{"name": "c", "command": ["sh", "-c", "exec sleep 1000"]}]}),
    );
    let root_path = root.path().to_path_buf();
    let p2 = p.clone();
    let pid = tokio::task::spawn_blocking(move || run_then_lose_the_runner(&root_path, &p2))
        .await
        .unwrap();

    let runner = runner(root.path());
    let ctx = runner.adopt(&p).unwrap().expect("a record to adopt");
    assert_eq!(ctx.pod_ip, IpAddr::V4(Ipv4Addr::LOCALHOST));
    // Adopted once: a second call (and `ensure`) leave it as it is.
    assert!(runner.adopt(&p).unwrap().is_none());
    runner.ensure(&p, ctx).unwrap();
    let s = wait_status(&runner, "uid-adopted", "adopted and ready", |s| {
        condition(s, "Ready") == "True"
    })
    .await;
    assert_eq!(pid_of(&s, "c"), pid, "the same process");
    assert_eq!(container(&s, "c").restart_count, 0);

    // The adopted process ends: noticed, reported as unknown, restarted in place.
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    let s = wait_status(
        &runner,
        "uid-adopted",
        "restarted after the adopted process ended",
        |s| {
            let c = container(s, "c");
            c.restart_count == 1 && c.state.as_ref().is_some_and(|st| st.running.is_some())
        },
    )
    .await;
    let last = container(&s, "c").last_state.clone().unwrap().terminated.unwrap();
    assert_eq!(
        (last.reason.as_deref(), last.exit_code),
        (Some("ContainerStatusUnknown"), 137)
    );
    assert_ne!(pid_of(&s, "c"), pid);
    runner.stop_all(Duration::from_secs(5)).await;
    // A stopped pod leaves nothing to adopt.
    assert!(!root.path().join("pods/uid-adopted/state.json").exists());
}

/// A record whose process start time does not match the running PID (the PID was reused) adopts nothing:
/// that process is never touched, and the container starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_pid_is_not_adopted() {
    let root = tempfile::tempdir().unwrap();
    let p = pod(
        "reused",
        json!({"containers": [{"name": "c", "command": ["sh", "-c", "exec sleep 1000"]}]}),
    );
    let root_path = root.path().to_path_buf();
    let p2 = p.clone();
    let pid = tokio::task::spawn_blocking(move || run_then_lose_the_runner(&root_path, &p2))
        .await
        .unwrap();
    let file = root.path().join("pods/uid-reused/state.json");
    let mut rec: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let ticks = rec["main"][0]["proc_start"].as_u64().unwrap();
    rec["main"][0]["proc_start"] = json!(ticks + 1);
    std::fs::write(&file, serde_json::to_vec(&rec).unwrap()).unwrap();

    let runner = runner(root.path());
    runner.adopt(&p).unwrap().expect("a record to adopt");
    let s = wait_status(&runner, "uid-reused", "started again", |s| {
        let c = container(s, "c");
        c.restart_count == 1 && c.state.as_ref().is_some_and(|st| st.running.is_some())
    })
    .await;
    assert_ne!(pid_of(&s, "c"), pid);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "a process the record does not verifiably name was signalled"
    );
    let _ = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    runner.stop_all(Duration::from_secs(5)).await;
}
