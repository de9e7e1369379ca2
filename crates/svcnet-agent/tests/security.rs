//! `securityContext` on the pod runner, against real processes: the user, groups, no-new-privileges and
//! capability bounding set a container runs with, and the kubelet's refusals. Switching users needs
//! root; without it the tests say so and pass.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ContainerStatus, Pod, PodStatus};
use serde_json::{Value, json};
use svcnet_agent::runner::{PodContext, PodRunner};

const WAIT: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    svcnet_testsupport::netns::is_root()
}

fn ctx() -> PodContext {
    PodContext {
        pod_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        host_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        node_name: "node-1".into(),
        service_env: vec![],
        exec_prefix: Vec::new(),
        container_prefix: Default::default(),
    }
}

fn pod(name: &str, spec: Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": spec,
    }))
    .expect("valid pod")
}

/// The runner under test; stops (SIGKILLs) whatever it still runs when dropped.
struct Runner(PodRunner, tokio::runtime::Handle);

impl Drop for Runner {
    fn drop(&mut self) {
        let runner = self.0.clone();
        let uids = runner.running();
        // Stopping needs the runtime; a zero grace period still gives SIGTERM its 2 s minimum.
        let _ = std::thread::spawn({
            let handle = self.1.clone();
            move || {
                handle.block_on(async {
                    for uid in uids {
                        runner.stop(&uid, Duration::ZERO).await;
                    }
                })
            }
        })
        .join();
    }
}

fn runner(root: &Path) -> Runner {
    Runner(
        PodRunner::with_backoff(root.to_path_buf(), Duration::from_secs(2), Duration::from_secs(4)),
        tokio::runtime::Handle::current(),
    )
}

async fn wait_status(
    runner: &PodRunner,
    uid: &str,
    what: &str,
    cond: impl Fn(&PodStatus) -> bool,
) -> PodStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = runner.status(uid)
            && cond(&status)
        {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; status: {:#?}",
            runner.status(uid)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn container(status: &PodStatus) -> &ContainerStatus {
    &status.container_statuses.as_ref().expect("container statuses")[0]
}

fn waiting(status: &PodStatus) -> Option<(String, String)> {
    let w = container(status).state.as_ref()?.waiting.as_ref()?;
    Some((w.reason.clone()?, w.message.clone().unwrap_or_default()))
}

async fn log_containing(runner: &PodRunner, uid: &str, text: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let log = runner
            .logs(uid, "c", false, None)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        if log.contains(text) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {text:?} in the log: {log:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_user_and_groups_are_the_process_identity() {
    if !is_root() {
        eprintln!("skipped: switching users needs root");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = runner(root.path());
    let script = "id; touch mine; stat -c owner=%u mine; exec sleep 1000";
    let p = pod(
        "nobody",
        json!({
            "securityContext": {"runAsUser": 65534, "runAsGroup": 65534, "supplementalGroups": [4242], "runAsNonRoot": true},
            "containers": [{"name": "c", "command": ["sh", "-c", script]}],
        }),
    );
    r.0.ensure(&p, ctx()).unwrap();
    let log = log_containing(&r.0, "uid-nobody", "owner=").await;
    let id_line = log.lines().next().unwrap_or_default();
    assert!(id_line.starts_with("uid=65534("), "{log}");
    assert!(id_line.contains(" gid=65534("), "{log}");
    assert!(id_line.contains("groups=") && id_line.contains("4242"), "{log}");
    assert!(
        !id_line.contains("groups=0("),
        "root's groups must be gone: {log}"
    );
    // The pod's work dir is writable by the container's user, and what it writes is its own.
    assert!(log.contains("owner=65534"), "{log}");
    // The log file is the node's, readable by its owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(root.path().join("pods/uid-nobody/logs/c/0.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_new_privileges_and_dropped_capabilities() {
    if !is_root() {
        eprintln!("skipped: needs root to have capabilities to drop");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = runner(root.path());
    let p = pod(
        "locked",
        json!({"containers": [{
            "name": "c",
            "command": ["sh", "-c", "grep -E '^(NoNewPrivs|CapBnd|CapEff)' /proc/self/status; echo done; exec sleep 1000"],
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["NET_RAW", "SYS_ADMIN"]}},
        }]}),
    );
    r.0.ensure(&p, ctx()).unwrap();
    let log = log_containing(&r.0, "uid-locked", "done").await;
    let field = |name: &str| -> String {
        log.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| panic!("{name} missing: {log}"))
    };
    assert_eq!(field("NoNewPrivs:"), "1");
    let bounding = u64::from_str_radix(&field("CapBnd:"), 16).unwrap();
    const NET_RAW: u64 = 1 << 13;
    const SYS_ADMIN: u64 = 1 << 21;
    const NET_ADMIN: u64 = 1 << 12;
    assert_eq!(bounding & (NET_RAW | SYS_ADMIN), 0, "{log}");
    assert_ne!(bounding & NET_ADMIN, 0, "only what was named is dropped: {log}");
    let effective = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    assert_eq!(effective & (NET_RAW | SYS_ADMIN), 0, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_use_the_kubelets_words() {
    let root = tempfile::tempdir().unwrap();
    let r = runner(root.path());
    let cases = [
        (
            "rootuser",
            json!({"runAsNonRoot": true, "runAsUser": 0}),
            json!({}),
            "container's runAsUser breaks non-root policy (pod: \"rootuser_default(uid-rootuser)\", container: c)",
        ),
        (
            "privileged",
            json!({}),
            json!({"privileged": true}),
            "privileged is not supported by svcnet's process runner (pod: \"privileged_default(uid-privileged)\", container: c)",
        ),
        (
            "addcaps",
            json!({}),
            json!({"capabilities": {"add": ["NET_ADMIN"]}}),
            "capabilities.add is not supported by svcnet's process runner (pod: \"addcaps_default(uid-addcaps)\", container: c)",
        ),
    ];
    let mut all: Vec<(&str, &str)> = cases.iter().map(|(n, _, _, m)| (*n, *m)).collect();
    for (name, pod_sc, sc, _) in &cases {
        let p = pod(
            name,
            json!({"securityContext": pod_sc, "containers": [{"name": "c", "command": ["sleep", "1000"], "securityContext": sc}]}),
        );
        r.0.ensure(&p, ctx()).unwrap();
    }
    // Running as root (the agent's own user) with runAsNonRoot and no runAsUser.
    let implicit = "container has runAsNonRoot and image will run as root (pod: \"implicit_default(uid-implicit)\", container: c)";
    if is_root() {
        let p = pod(
            "implicit",
            json!({"securityContext": {"runAsNonRoot": true}, "containers": [{"name": "c", "command": ["sleep", "1000"]}]}),
        );
        r.0.ensure(&p, ctx()).unwrap();
        all.push(("implicit", implicit));
    }
    for (name, message) in all {
        let uid = format!("uid-{name}");
        let s = wait_status(&r.0, &uid, "a config error", |s| {
            waiting(s).is_some_and(|(reason, _)| reason == "CreateContainerConfigError")
        })
        .await;
        assert_eq!(waiting(&s).unwrap().1, message);
        assert!(
            container(&s).container_id.is_none(),
            "{name} must not have started"
        );
    }
}
