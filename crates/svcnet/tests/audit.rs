//! The audit log as kube-apiserver writes it, through the real binary, real kubectl and curl: a policy
//! with several rules logs each request at the level and stages its first matching rule gives (parsed
//! from the JSON lines), a 403 with the decision `forbid`, a 401 at `ResponseStarted`, a watch with
//! `ResponseStarted`, the `Audit-Id` header, an impersonated request with both users; the file
//! rotates by size and keeps the backups asked for; a bad policy stops the start-up with its error; a
//! log that fails (`/dev/full`) costs events, not requests, and is reported once; a stuck one (a pipe
//! nobody reads) delays one request by the 5 s bound and loses nothing; `-` writes to stdout.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use svcnet_testsupport::Cluster;
use svcnet_testsupport::users;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
# Discovery: nothing.
- level: None
  nonResourceURLs: ["/api", "/api/*", "/apis", "/apis/*", "/openapi/*"]
# The admin's traffic (the test's own setup, the control plane's cluster-info): nothing.
- level: None
  users: [svcnet-admin]
# One ConfigMap by name: everything, from the response on.
- level: RequestResponse
  resources: [{group: "", resources: [configmaps], resourceNames: [settings]}]
  omitStages: [RequestReceived]
# Lists of ConfigMaps: the response too, without managed fields.
- level: RequestResponse
  verbs: [list]
  resources: [{group: "", resources: [configmaps]}]
  omitManagedFields: true
# Other ConfigMap requests: the request body.
- level: Request
  resources: [{group: "", resources: [configmaps]}]
# Everything else: metadata.
- level: Metadata
"#;

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: team-a}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: writers, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: edit}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: writer}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: viewers, namespace: team-a}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: view}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: viewer}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: impersonate-viewer}
rules:
- {apiGroups: [""], resources: [users], resourceNames: [viewer], verbs: [impersonate]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: boss-impersonates-viewer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: impersonate-viewer}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: boss}]
"#;

/// Reads every event of the audit log files in `dir` (the current file and rotated ones).
fn events_in(dir: &Path) -> Vec<Value> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("audit"))
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The events of `user`'s requests to `uri_part` (a part of the request URI), waiting up to 10 s for
/// at least `min` of them.
fn events_of(dir: &Path, user: &str, uri_part: &str, min: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found: Vec<Value> = events_in(dir)
            .into_iter()
            .filter(|e| e["user"]["username"] == user)
            .filter(|e| e["requestURI"].as_str().unwrap().contains(uri_part))
            .collect();
        if found.len() >= min || Instant::now() > deadline {
            return found;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stages(events: &[Value]) -> Vec<&str> {
    events.iter().map(|e| e["stage"].as_str().unwrap()).collect()
}

/// The checks every event passes: kube's envelope, UTC micro-second times, the source address.
fn check_envelope(e: &Value) {
    assert_eq!(e["kind"], "Event", "{e}");
    assert_eq!(e["apiVersion"], "audit.k8s.io/v1", "{e}");
    assert_eq!(e["auditID"].as_str().unwrap().len(), 36, "{e}");
    assert_eq!(e["sourceIPs"], serde_json::json!(["127.0.0.1"]), "{e}");
    let received = e["requestReceivedTimestamp"].as_str().unwrap();
    let stage = e["stageTimestamp"].as_str().unwrap();
    for t in [received, stage] {
        assert!(
            t.len() == 27 && t.ends_with('Z') && t.as_bytes()[19] == b'.',
            "{t}"
        );
    }
    assert!(received <= stage, "{e}");
}

struct Setup {
    c: Cluster,
    logs: tempfile::TempDir,
    writer: PathBuf,
    viewer: PathBuf,
    boss: PathBuf,
}

/// A cluster auditing to `DIR/audit.log` (or to `log`) with [`POLICY`] and the users of [`SETUP`].
fn start(log: Option<&str>, extra: &[&str]) -> Setup {
    let logs = tempfile::tempdir().unwrap();
    let policy = logs.path().join("policy.yaml");
    std::fs::write(&policy, POLICY).unwrap();
    let default_log = logs.path().join("audit.log");
    let log = log.unwrap_or(default_log.to_str().unwrap());
    let mut flags = vec![
        "--audit-policy-file",
        policy.to_str().unwrap(),
        "--audit-log-path",
        log,
    ];
    flags.extend_from_slice(extra);
    let w = users::control_plane_with_users(
        SVCNET,
        &[
            ("writer", "writer-token"),
            ("viewer", "viewer-token"),
            ("boss", "boss-token"),
        ],
        SETUP,
        &flags,
    );
    let [writer, viewer, boss] = <[PathBuf; 3]>::try_from(w.kubeconfigs).expect("three users");
    Setup {
        c: w.c,
        logs,
        writer,
        viewer,
        boss,
    }
}

fn ok_as(c: &Cluster, kc: &Path, args: &[&str]) -> String {
    let out = c.kubectl_as(kc, args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn each_request_at_its_rules_level_and_stages() {
    let s = start(None, &[]);
    let (c, dir) = (&s.c, s.logs.path());

    // Create: the Request rule (the name is not in the URL, so the resourceNames rule does not match,
    // as on kube); both stages; the body without the response; the name from the body.
    // (A manifest: kubectl sends `create configmap` as protobuf, which svcnet does not take for
    // ConfigMaps.)
    let settings = dir.join("settings.yaml");
    std::fs::write(
        &settings,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: team-a}\ndata: {a: \"1\"}\n",
    )
    .unwrap();
    ok_as(c, &s.writer, &["create", "-f", settings.to_str().unwrap()]);
    let ev = events_of(dir, "writer", "/api/v1/namespaces/team-a/configmaps?", 2);
    assert_eq!(stages(&ev), ["RequestReceived", "ResponseComplete"], "{ev:?}");
    let (received, done) = (&ev[0], &ev[1]);
    for e in &ev {
        check_envelope(e);
        assert_eq!(e["level"], "Request", "{e}");
        assert_eq!(e["verb"], "create", "{e}");
        assert!(e["userAgent"].as_str().unwrap().starts_with("kubectl"), "{e}");
        assert_eq!(e["user"]["groups"], serde_json::json!(["system:authenticated"]));
        assert_eq!(e["user"]["uid"], "1", "{e}");
    }
    assert_eq!(received["auditID"], done["auditID"]);
    assert_eq!(
        received["requestReceivedTimestamp"],
        done["requestReceivedTimestamp"]
    );
    // Nothing decided or answered yet when the request is received.
    assert!(received.get("annotations").is_none(), "{received}");
    assert!(received.get("responseStatus").is_none(), "{received}");
    assert!(received.get("requestObject").is_none(), "{received}");
    assert_eq!(
        done["objectRef"],
        serde_json::json!({"resource": "configmaps", "namespace": "team-a", "name": "settings", "apiVersion": "v1"})
    );
    assert_eq!(
        done["responseStatus"],
        serde_json::json!({"metadata": {}, "code": 201})
    );
    assert_eq!(done["requestObject"]["data"]["a"], "1", "{done}");
    assert!(done.get("responseObject").is_none(), "{done}");
    assert_eq!(done["annotations"]["authorization.k8s.io/decision"], "allow");
    assert_eq!(
        done["annotations"]["authorization.k8s.io/reason"],
        r#"RBAC: allowed by RoleBinding "writers/team-a" of ClusterRole "edit" to User "writer""#
    );

    // Get by name: the RequestResponse rule, RequestReceived omitted; the response has its managed
    // fields (this rule keeps them).
    ok_as(
        c,
        &s.writer,
        &["get", "configmap", "settings", "-n", "team-a", "-o", "json"],
    );
    let ev = events_of(dir, "writer", "/configmaps/settings", 1);
    assert_eq!(stages(&ev), ["ResponseComplete"], "{ev:?}");
    assert_eq!(ev[0]["level"], "RequestResponse");
    assert_eq!(ev[0]["verb"], "get");
    let obj = &ev[0]["responseObject"];
    assert_eq!(obj["metadata"]["name"], "settings", "{obj}");
    assert_eq!(obj["data"]["a"], "1");
    assert!(obj["metadata"]["managedFields"].is_array(), "{obj}");

    // A list: its own rule, without managed fields.
    ok_as(c, &s.writer, &["get", "configmaps", "-n", "team-a", "-o", "json"]);
    let ev = events_of(dir, "writer", "/api/v1/namespaces/team-a/configmaps?limit", 2);
    assert_eq!(stages(&ev), ["RequestReceived", "ResponseComplete"], "{ev:?}");
    let items = ev[1]["responseObject"]["items"].as_array().unwrap();
    assert!(
        items.iter().any(|i| i["metadata"]["name"] == "settings"),
        "{items:?}"
    );
    assert!(
        items.iter().all(|i| i["metadata"].get("managedFields").is_none()),
        "{items:?}"
    );

    // A forbidden request: Metadata, the decision forbid, kube's Forbidden as the response status.
    let out = c.kubectl_as(&s.viewer, &["get", "services", "-n", "default"]);
    assert!(!out.status.success());
    let ev = events_of(dir, "viewer", "/api/v1/namespaces/default/services", 2);
    assert_eq!(stages(&ev), ["RequestReceived", "ResponseComplete"], "{ev:?}");
    let done = &ev[1];
    check_envelope(done);
    assert_eq!(done["level"], "Metadata");
    assert_eq!(done["verb"], "list");
    assert!(done.get("requestObject").is_none() && done.get("responseObject").is_none());
    assert_eq!(
        done["annotations"]["authorization.k8s.io/decision"], "forbid",
        "{done}"
    );
    assert_eq!(done["annotations"]["authorization.k8s.io/reason"], "", "{done}");
    let status = &done["responseStatus"];
    assert_eq!(status["code"], 403, "{status}");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(
        status["message"],
        r#"services is forbidden: User "viewer" cannot list resource "services" in API group "" in the namespace "default""#
    );

    // A watch is long-running: ResponseStarted when the stream starts, ResponseComplete when it ends.
    let (code, _) = s.c.curl(
        &["-H", "Authorization: Bearer viewer-token"],
        "/api/v1/namespaces/team-a/services?watch=true&timeoutSeconds=1",
    );
    assert_eq!(code, 200);
    let ev = events_of(dir, "viewer", "services?watch=true", 3);
    assert_eq!(
        stages(&ev),
        ["RequestReceived", "ResponseStarted", "ResponseComplete"],
        "{ev:?}"
    );
    assert!(ev.iter().all(|e| e["verb"] == "watch"));
    assert_eq!(ev[2]["responseStatus"]["code"], 200);
    assert!(ev[1]["stageTimestamp"].as_str() < ev[2]["stageTimestamp"].as_str());

    // A credential nobody issued: only ResponseStarted, no user, kube's message.
    let (code, _) =
        s.c.curl(&["-H", "Authorization: Bearer forged"], "/api/v1/namespaces");
    assert_eq!(code, 401);
    let ev: Vec<Value> = events_in(dir)
        .into_iter()
        .filter(|e| e["requestURI"] == "/api/v1/namespaces")
        .collect();
    assert_eq!(stages(&ev), ["ResponseStarted"], "{ev:?}");
    assert_eq!(ev[0]["user"], serde_json::json!({}));
    assert_eq!(
        ev[0]["responseStatus"],
        serde_json::json!({"metadata": {}, "message": "Authentication failed, attempted: bearer", "code": 401})
    );

    // The client's Audit-ID is kept and echoed; without one the server's is sent back.
    let headers = dir.join("headers.txt");
    let h = headers.to_str().unwrap();
    let (code, _) = s.c.curl(
        &[
            "-H",
            "Authorization: Bearer viewer-token",
            "-H",
            "Audit-ID: my-audit-id-1",
            "-D",
            h,
        ],
        "/api/v1/namespaces/team-a/services",
    );
    assert_eq!(code, 200);
    let head = std::fs::read_to_string(&headers).unwrap().to_ascii_lowercase();
    assert!(head.contains("audit-id: my-audit-id-1"), "{head}");
    let ev = events_of(dir, "viewer", "/api/v1/namespaces/team-a/services", 2);
    assert!(
        ev.iter().filter(|e| e["auditID"] == "my-audit-id-1").count() == 2,
        "{ev:?}"
    );
    let (_, _) = s.c.curl(&["-D", h], "/version");
    let head = std::fs::read_to_string(&headers).unwrap().to_ascii_lowercase();
    let id = head
        .lines()
        .find_map(|l| l.strip_prefix("audit-id: "))
        .expect("an Audit-Id header")
        .trim()
        .to_string();
    // /version without a credential is the anonymous user's, at the catch-all rule.
    let ev: Vec<Value> = events_in(dir)
        .into_iter()
        .filter(|e| e["auditID"] == id.as_str())
        .collect();
    assert_eq!(stages(&ev), ["RequestReceived", "ResponseComplete"], "{ev:?}");
    assert_eq!(ev[1]["user"]["username"], "system:anonymous");
    assert_eq!(ev[1]["verb"], "get");
    assert!(ev[1].get("objectRef").is_none());

    // Impersonation: the event's user is who sent it, impersonatedUser whom it acts as; the policy
    // matched the real user.
    ok_as(c, &s.boss, &["get", "services", "-n", "team-a", "--as", "viewer"]);
    let ev = events_of(dir, "boss", "/api/v1/namespaces/team-a/services", 2);
    assert_eq!(stages(&ev), ["RequestReceived", "ResponseComplete"], "{ev:?}");
    assert_eq!(ev[1]["impersonatedUser"]["username"], "viewer", "{}", ev[1]);
    assert_eq!(
        ev[1]["impersonatedUser"]["groups"],
        serde_json::json!(["system:authenticated"])
    );
    assert!(ev[0].get("impersonatedUser").is_none(), "{}", ev[0]);
    assert_eq!(
        ev[1]["annotations"]["authorization.k8s.io/reason"],
        r#"RBAC: allowed by RoleBinding "viewers/team-a" of ClusterRole "view" to User "viewer""#
    );

    // Every event is one JSON line; the admin's traffic is at level None.
    let all = events_in(dir);
    assert!(all.iter().all(|e| e["user"]["username"] != "svcnet-admin"));
    assert!(all.iter().all(|e| e["level"] != "None"));

    // kube's audit metrics.
    let metrics = c.ok(&["get", "--raw", "/metrics"]);
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
    };
    assert!(value("apiserver_audit_event_total ") >= all.len() as f64);
    assert_eq!(value("apiserver_audit_error_total{plugin=\"log\"} "), 0.0);
    assert!(value("apiserver_audit_level_total{level=\"Metadata\"} ") >= 1.0);
}

#[test]
fn the_log_rotates_by_size_and_keeps_the_backups_asked_for() {
    let s = start(None, &["--audit-log-maxsize", "1", "--audit-log-maxbackup", "2"]);
    let (c, dir) = (&s.c, s.logs.path());
    // A ConfigMap of 300 KB; each list of it logs it whole (RequestResponse): four lists pass 1 MB.
    let big = "x".repeat(300 * 1024);
    let manifest = dir.join("big.yaml");
    std::fs::write(
        &manifest,
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: big, namespace: team-a}}\ndata: {{v: {big}}}\n"),
    )
    .unwrap();
    ok_as(c, &s.writer, &["create", "-f", manifest.to_str().unwrap()]);
    for _ in 0..10 {
        ok_as(c, &s.writer, &["get", "configmaps", "-n", "team-a", "-o", "name"]);
    }
    let names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit"))
        .collect();
    // The current file and exactly two backups named as lumberjack names them.
    assert_eq!(names.len(), 3, "{names:?}");
    for n in names.iter().filter(|n| *n != "audit.log") {
        let stamp = n
            .strip_prefix("audit-")
            .and_then(|r| r.strip_suffix(".log"))
            .unwrap_or_else(|| panic!("{n}"));
        assert_eq!(stamp.len(), "2006-01-02T15-04-05.000".len(), "{n}");
    }
    for n in &names {
        let size = std::fs::metadata(dir.join(n)).unwrap().len();
        assert!(size <= 1024 * 1024, "{n}: {size}");
    }
    // Every line of every file is a whole event.
    let lists = events_in(dir)
        .into_iter()
        .filter(|e| e["verb"] == "list" && e["stage"] == "ResponseComplete")
        .count();
    assert!(lists >= 2, "{lists}");
}

#[test]
fn a_bad_policy_or_an_unsupported_flag_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |flags: &[&str]| -> String {
        let data = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new(SVCNET)
            .args(["up", "--data-dir"])
            .arg(data.path())
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--proxy-mode",
                "none",
                "--no-dns",
                "--no-agent",
            ])
            .args(flags)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("svcnet up {flags:?} kept running");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let policy = dir.path().join("policy.yaml");
    let log = dir.path().join("audit.log");
    let (p, l) = (policy.to_str().unwrap(), log.to_str().unwrap());
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  userGroup: [dev]\n",
    )
    .unwrap();
    let err = run(&["--audit-policy-file", p, "--audit-log-path", l]);
    assert!(
        err.contains("--audit-policy-file") && err.contains("unknown field `userGroup`"),
        "{err}"
    );
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Everything\n",
    )
    .unwrap();
    let err = run(&["--audit-policy-file", p, "--audit-log-path", l]);
    assert!(
        err.contains(r#"rules[0].level: Unsupported value: "Everything": supported values: "None", "Metadata", "Request", "RequestResponse""#),
        "{err}"
    );
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: [{level: None}]\n",
    )
    .unwrap();
    let err = run(&[
        "--audit-policy-file",
        p,
        "--audit-log-path",
        l,
        "--audit-log-compress",
    ]);
    assert!(err.contains("--audit-log-compress is not supported"), "{err}");
    let err = run(&[
        "--audit-policy-file",
        p,
        "--audit-log-path",
        "/nonexistent-dir/audit.log",
    ]);
    assert!(
        err.contains("opening the audit log /nonexistent-dir/audit.log"),
        "{err}"
    );
}

#[test]
fn a_log_that_cannot_be_written_loses_events_not_requests_and_says_so_once() {
    // Every write to /dev/full fails with ENOSPC, as on a full disk.
    let s = start(Some("/dev/full"), &[]);
    let c = &s.c;
    for i in 0..20 {
        ok_as(c, &s.viewer, &["get", "services", "-n", "team-a"]);
        if i == 0 {
            // The writer reports the first failure while requests go on.
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let metrics = c.ok(&["get", "--raw", "/metrics"]);
    let errors: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("apiserver_audit_error_total{plugin=\"log\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    // Two events per request (RequestReceived, ResponseComplete), and the setup's.
    assert!(errors >= 40.0, "{errors}");
    let log = c.log();
    let reports = log
        .lines()
        .filter(|l| l.contains("audit log: cannot write events"))
        .collect::<Vec<_>>();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].contains("No space left on device"), "{}", reports[0]);
    assert!(std::path::Path::new("/dev/full").exists());
}

#[test]
fn a_stuck_log_delays_one_request_then_none_and_loses_nothing() {
    use std::io::Read;
    use std::sync::{Arc, Mutex, mpsc};
    // A pipe whose reader reads nothing until told: once its 64 KiB are full the writer blocks, as on
    // a hung disk.
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("audit.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let (go, wait) = mpsc::channel::<()>();
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let (path, sink) = (fifo.clone(), seen.clone());
    // Opening blocks until svcnet opens the pipe to write; reading ends when svcnet exits.
    std::thread::spawn(move || {
        let mut f = std::fs::File::open(path).unwrap();
        let _ = wait.recv();
        let mut buf = vec![0; 65536];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    let s = start(Some(fifo.to_str().unwrap()), &[]);
    let c = &s.c;
    let auth = ["-H", "Authorization: Bearer viewer-token"];
    let mut slow = Vec::new();
    for i in 0..100 {
        let t = Instant::now();
        let (code, body) = c.curl(&auth, "/api/v1/namespaces/team-a/services");
        assert_eq!(code, 200, "{body}");
        if t.elapsed() >= Duration::from_secs(2) {
            slow.push((i, t.elapsed()));
        }
    }
    // One request waited the 5 s bound; after it nobody waits for the stuck writer.
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert!(slow[0].1 < Duration::from_secs(8), "{slow:?}");
    let log = c.log();
    assert_eq!(log.matches("the writer did not keep up").count(), 1, "{log}");

    // Reading again: the queued events arrive, and requests are waited for again.
    go.send(()).unwrap();
    let (code, _) = c.curl(
        &[auth[0], auth[1], "-H", "Audit-ID: after-the-drain"],
        "/api/v1/namespaces/team-a/services",
    );
    assert_eq!(code, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    let text = loop {
        let text = String::from_utf8_lossy(&seen.lock().unwrap()).into_owned();
        if text.matches("after-the-drain").count() >= 2 || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(text.matches("after-the-drain").count(), 2);
    // Nothing was lost: every request's two events, in order.
    let events: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let viewer = events
        .iter()
        .filter(|e| e["user"]["username"] == "viewer")
        .count();
    assert_eq!(viewer, 2 * 101);
    let metrics = c.ok(&["get", "--raw", "/metrics"]);
    assert!(
        metrics.contains("apiserver_audit_error_total{plugin=\"log\"} 0\n"),
        "{metrics}"
    );
}

#[test]
fn events_go_to_stdout_with_a_dash() {
    /// Stops the svcnet it holds, by its PID, whatever happens in the test.
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let policy = dir.path().join("policy.yaml");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n  nonResourceURLs: [/version]\n",
    )
    .unwrap();
    let out = dir.path().join("stdout.txt");
    let _svcnet = Kill(
        std::process::Command::new(SVCNET)
            .args(["up", "--data-dir"])
            .arg(&data)
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--proxy-mode",
                "none",
                "--no-dns",
                "--no-agent",
            ])
            .args(["--audit-log-path", "-", "--audit-policy-file"])
            .arg(&policy)
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = || std::fs::read_to_string(&out).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stdout().contains("svcnet is up") {
        assert!(Instant::now() < deadline, "svcnet did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let kubeconfig = std::fs::read_to_string(data.join("kubeconfig")).unwrap();
    let addr = kubeconfig
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: https://"))
        .unwrap()
        .to_string();
    let curl = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-H",
            "Audit-ID: to-stdout",
            "--cacert",
        ])
        .arg(data.join("pki/ca.crt"))
        .arg(format!("https://{addr}/version"))
        .status()
        .unwrap();
    assert!(curl.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let events = loop {
        let events: Vec<Value> = stdout()
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &Value| e["auditID"] == "to-stdout")
            .collect();
        if events.len() >= 2 || Instant::now() > deadline {
            break events;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        stages(&events),
        ["RequestReceived", "ResponseComplete"],
        "{}",
        stdout()
    );
    assert_eq!(events[1]["responseStatus"]["code"], 200);
}
