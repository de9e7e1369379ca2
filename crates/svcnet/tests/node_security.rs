//! What a node keeps to itself, through a real `svcnet up` and real kubectl: the data dir, keys, store
//! and pod logs are owner-only; the agent's container-log endpoint answers only the API server; `kubectl
//! logs` options are honoured or refused clearly; a pod's `securityContext` is honoured (`id` in its log
//! shows the uid) or refused with Kubernetes' words; logs written to a file carry no colour codes.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn pod(name: &str, pod_sc: &str, command: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n  \
         securityContext: {pod_sc}\n  containers:\n  - name: main\n    image: busybox\n    \
         command: [\"sh\", \"-c\", {command:?}]\n"
    )
}

fn wait_phase(c: &Cluster, name: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let ok = eventually(Duration::from_secs(30), || {
        last = c.get_json(&["pod", name]);
        cond(&last)
    });
    assert!(ok, "pod {name}: {last}\n{}", c.log());
    last
}

/// `GET path` on the agent's own endpoint (plain HTTP) with an optional `Authorization` header: the
/// status line and body.
fn agent_get(addr: &str, path: &str, auth: Option<&str>) -> (String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n{auth}\r\n").as_bytes())
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

#[test]
fn private_files_plain_logs_and_guarded_container_logs() {
    let c = Cluster::start(SVCNET);
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some(&pod(
            "talker",
            "{}",
            "for i in 1 2 3 4 5; do echo line-$i; done; sleep 2; echo late-1; echo late-2; exec sleep 1000",
        )),
    );
    wait_phase(&c, "talker", |p| p["status"]["phase"] == "Running");
    assert!(eventually(Duration::from_secs(20), || c
        .ok(&["logs", "talker"])
        .contains("late-2")));

    // Owner-only: data dir, pki, the store, every pod log.
    assert_eq!(mode(&c.dir), 0o700);
    assert_eq!(mode(&c.dir.join("pki")), 0o700);
    assert_eq!(mode(&c.dir.join("store.redb")), 0o600);
    let uid = c.get_json(&["pod", "talker"])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let log = c.dir.join(format!("agent/pods/{uid}/logs/main/0.log"));
    assert_eq!(mode(&log), 0o600);
    // The server's log goes to a file here: no ANSI colour codes in it.
    let server_log = c.log();
    assert!(server_log.contains("svcnet is up"));
    assert!(!server_log.contains('\u{1b}'), "colour codes in a file log");

    // kubectl logs options, as the kubelet honours them.
    assert_eq!(c.ok(&["logs", "talker", "--tail=2"]), "late-1\nlate-2\n");
    assert_eq!(c.ok(&["logs", "talker", "--limit-bytes=9"]), "line-1\nli");
    assert_eq!(c.ok(&["logs", "talker", "--tail=1", "--limit-bytes=4"]), "late");
    // --timestamps: every line carries the time it was written (RFC 3339), the late ones 2 s later.
    let stamped = c.ok(&["logs", "talker", "--timestamps"]);
    let times: Vec<(jiff::Timestamp, &str)> = stamped
        .lines()
        .map(|l| {
            let (t, rest) = l.split_once(' ').unwrap_or_else(|| panic!("{stamped}"));
            (t.parse().unwrap_or_else(|e| panic!("{t}: {e}")), rest)
        })
        .collect();
    let texts: Vec<&str> = times.iter().map(|(_, l)| *l).collect();
    assert_eq!(
        texts,
        [
            "line-1", "line-2", "line-3", "line-4", "line-5", "late-1", "late-2"
        ]
    );
    let gap = times[5].0.duration_since(times[4].0);
    assert!(
        gap >= jiff::SignedDuration::from_millis(1800) && gap < jiff::SignedDuration::from_secs(4),
        "{stamped}"
    );
    let started = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    assert!(
        times[0].0 > started && times[6].0 <= jiff::Timestamp::now(),
        "{stamped}"
    );
    // --since-time (whole seconds on the wire) at the late lines' second: only they are newer.
    let since_time = jiff::Timestamp::from_second(times[5].0.as_second())
        .unwrap()
        .to_string();
    assert_eq!(
        c.ok(&["logs", "talker", &format!("--since-time={since_time}")]),
        "late-1\nlate-2\n"
    );
    assert_eq!(c.ok(&["logs", "talker", "--since=1h"]).lines().count(), 7);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(c.ok(&["logs", "talker", "--since=1s"]), "");
    assert_eq!(
        c.ok(&["logs", "talker", "--since=1h", "--tail=1", "--timestamps"]),
        format!("{} late-2\n", times[6].0)
    );
    let (_, raw) = {
        let out = c.kubectl_v(
            "1.33",
            &[
                "get",
                "--raw",
                "/api/v1/namespaces/default/pods/talker/log?limitBytes=0",
            ],
            None,
        );
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert!(
        raw.contains("limitBytes: Invalid value: 0: must be greater than 0"),
        "{raw}"
    );

    // The agent's endpoint itself answers nobody without the credential the API server holds.
    let node = c.get_json(&["nodes"])["items"][0].clone();
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"]
        .as_i64()
        .unwrap();
    let ip = node["status"]["addresses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["type"] == "InternalIP")
        .unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let addr = format!("{ip}:{port}");
    let path = "/containerLogs/default/talker/main";
    let (status, body) = agent_get(&addr, path, None);
    assert!(status.contains(" 401 "), "{status} {body}");
    assert!(!body.contains("line-1"));
    let (status, _) = agent_get(&addr, path, Some("Bearer wrong"));
    assert!(status.contains(" 401 "), "{status}");
    // The cluster token itself is not the log credential either: only the derived one is.
    let token = std::fs::read_to_string(c.dir.join("pki/token")).unwrap();
    let (status, _) = agent_get(&addr, path, Some(&format!("Bearer {}", token.trim())));
    assert!(status.contains(" 401 "), "{status}");
    let (status, _) = agent_get(&addr, "/healthz", None);
    assert!(status.contains(" 200 "), "{status}");
}

#[test]
fn security_context_is_honoured_or_refused() {
    let root = svcnet_testsupport::netns::is_root();
    let c = Cluster::start(SVCNET);
    // Refused at admission, with kube-apiserver's words where it has them.
    let err = c.fail_v(
        "1.33",
        &["apply", "-f", "-"],
        Some(&format!(
            "{}    securityContext: {{privileged: true, capabilities: {{add: [NET_ADMIN]}}, readOnlyRootFilesystem: true}}\n",
            pod("priv", "{}", "sleep 1000")
        )),
    );
    assert!(
        err.contains(
            "spec.containers[0].securityContext.privileged: Forbidden: disallowed by cluster policy"
        ),
        "{err}"
    );
    assert!(
        err.contains("securityContext.capabilities.add: Forbidden"),
        "{err}"
    );
    assert!(
        err.contains("securityContext.readOnlyRootFilesystem: Forbidden"),
        "{err}"
    );

    // Confinement a host process cannot get is accepted (manifests for real nodes carry it) but named.
    let out = c.kubectl_v(
        "1.33",
        &["apply", "-f", "-"],
        Some(&pod(
            "confined",
            "{seccompProfile: {type: RuntimeDefault}}",
            "exec sleep 1000",
        )),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "Warning: spec.securityContext.seccompProfile.type: RuntimeDefault is not applied: svcnet's process \
             runner runs containers as host processes without one"
        ),
        "{stderr}"
    );
    wait_phase(&c, "confined", |p| p["status"]["phase"] == "Running");

    if root {
        c.ok_v(
            "1.33",
            &["apply", "-f", "-"],
            Some(&pod(
                "nobody",
                "{runAsUser: 65534, runAsGroup: 65534, runAsNonRoot: true}",
                "id; exec sleep 1000",
            )),
        );
        wait_phase(&c, "nobody", |p| p["status"]["phase"] == "Running");
        let mut logs = String::new();
        assert!(eventually(Duration::from_secs(20), || {
            logs = c.ok(&["logs", "nobody"]);
            logs.contains("uid=")
        }));
        assert!(logs.starts_with("uid=65534("), "{logs}");
        assert!(logs.contains("gid=65534("), "{logs}");

        // runAsNonRoot with nothing but root to run as: the kubelet's refusal, on the pod's status.
        c.ok_v(
            "1.33",
            &["apply", "-f", "-"],
            Some(&pod("rooty", "{runAsNonRoot: true}", "sleep 1000")),
        );
        let p = wait_phase(&c, "rooty", |p| {
            p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError"
        });
        let uid = p["metadata"]["uid"].as_str().unwrap();
        assert_eq!(
            p["status"]["containerStatuses"][0]["state"]["waiting"]["message"],
            format!(
                "container has runAsNonRoot and image will run as root (pod: \"rooty_default({uid})\", container: main)"
            )
        );
    } else {
        eprintln!("skipped the uid part: switching users needs root");
    }
}
