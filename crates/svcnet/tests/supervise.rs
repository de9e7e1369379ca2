//! Supervised tasks in `svcnet up`: when a long-running loop stops (an error or a panic), `/readyz` and
//! `/livez` turn red naming it, the error is logged with the task's name, and the process exits non-zero.
//!
//! The test hook `SVCNET_TEST_FAIL_TASK=<task>[:panic]` (read only by the binary's supervisor) makes the
//! named loop fail a second after it starts.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A `svcnet up` started with the test hook; killed by PID if the test ends before it exits.
struct Up {
    child: Child,
    dir: tempfile::TempDir,
}

impl Up {
    /// Starts `svcnet up` with `SVCNET_TEST_FAIL_TASK=fail` and waits for its ready line.
    fn start(fail: &str) -> Up {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = std::fs::File::create(dir.path().join("svcnet.log")).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_svcnet"))
            .arg("up")
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--api-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env("SVCNET_TEST_FAIL_TASK", fail)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn svcnet");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the ready line");
        let up = Up { child, dir };
        assert!(
            line.contains("svcnet is up"),
            "unexpected first line {line:?}\n{}",
            up.log()
        );
        up
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("svcnet.log")).unwrap_or_default()
    }

    async fn client(&self) -> kube::Client {
        let kc = kube::config::Kubeconfig::read_from(self.dir.path().join("kubeconfig")).expect("kubeconfig");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .expect("config");
        kube::Client::try_from(cfg).expect("client")
    }

    /// The exit status, waiting at most `limit`.
    async fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path`: `Ok(body)` for 200, `Err((code, body))` otherwise, `None` if there was no answer.
async fn get(client: &kube::Client, path: &str) -> Option<Result<String, (u16, String)>> {
    let req = http::Request::get(path).body(Vec::new()).expect("request");
    match client.request_text(req).await {
        Ok(body) => Some(Ok(body)),
        Err(kube::Error::Api(s)) => Some(Err((s.code, s.message))),
        Err(_) => None,
    }
}

/// Starts `svcnet up` with `task` made to fail (`:panic` to panic) and checks that the failure shows on
/// `/readyz` and `/livez`, in the log, and in the exit status.
async fn failure_is_noticed(task: &str, hook: &str) {
    let mut up = Up::start(hook);
    let client = up.client().await;
    let want = format!("[-]{task} failed: ");
    let (mut readyz, mut livez) = (None, None);
    let until = Instant::now() + Duration::from_secs(60);
    while (readyz.is_none() || livez.is_none()) && Instant::now() < until {
        for (path, seen) in [("/readyz", &mut readyz), ("/livez", &mut livez)] {
            if seen.is_none()
                && let Some(Err((code, body))) = get(&client, path).await
            {
                *seen = Some((code, body));
            }
        }
        if up.child.try_wait().expect("try_wait").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let status = up.exit_within(Duration::from_secs(60)).await;
    let log = up.log();
    for (path, seen) in [("/readyz", &readyz), ("/livez", &livez)] {
        let Some((code, body)) = seen else {
            panic!("{path} never turned red before the exit ({status:?})\nlog:\n{log}");
        };
        assert_eq!(*code, 500, "{path}: {body}");
        assert!(body.contains(&want), "{path} does not name {task}: {body:?}");
    }
    let status = status.unwrap_or_else(|| panic!("svcnet up did not exit after {task} failed\nlog:\n{log}"));
    assert!(
        !status.success(),
        "svcnet up exited with {status} after {task} failed"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("a supervised task stopped") && l.contains(task)),
        "no error log naming {task}:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_loop_turns_health_red_and_exits() {
    failure_is_noticed("workload-controllers", "workload-controllers").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_panicked_loop_turns_health_red_and_exits() {
    failure_is_noticed("endpointslice-controllers", "endpointslice-controllers:panic").await;
}

/// `svcnet agent`: when its node-agent loop fails, its `/healthz` and `/livez` (on the metrics address,
/// where kube-proxy's are) turn red naming the loop before the process exits non-zero.
#[tokio::test(flavor = "multi_thread")]
async fn a_failed_agent_loop_turns_its_health_red_and_exits() {
    let cluster = svcnet_testsupport::cluster::Cluster::start(env!("CARGO_BIN_EXE_svcnet"));
    let dir = tempfile::tempdir().expect("tempdir");
    let port = svcnet_testsupport::net::free_port("127.0.0.1");
    let log_path = dir.path().join("agent.log");
    let mut agent = Command::new(env!("CARGO_BIN_EXE_svcnet"))
        .arg("agent")
        .arg("--kubeconfig")
        .arg(cluster.kubeconfig())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--node-name", "failing-node", "--proxy-mode", "none"])
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "info")
        .env("SVCNET_TEST_FAIL_TASK", "node-agent")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("spawn svcnet agent");
    let http = http_get(port);
    let (mut healthz, mut livez, mut green) = (None, None, false);
    let until = Instant::now() + Duration::from_secs(60);
    while (healthz.is_none() || livez.is_none()) && Instant::now() < until {
        for (path, seen) in [("/healthz", &mut healthz), ("/livez", &mut livez)] {
            match http(path) {
                Some((200, _)) => green = true,
                Some((code, body)) if seen.is_none() => *seen = Some((code, body)),
                _ => {}
            }
        }
        if agent.try_wait().expect("try_wait").is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = agent.try_wait().expect("try_wait") {
            break Some(s);
        }
        if Instant::now() >= until {
            let _ = agent.kill();
            let _ = agent.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let log = std::fs::read_to_string(&log_path).unwrap_or_default();
    assert!(
        green,
        "the agent's /healthz never answered ok before the failure\nlog:\n{log}"
    );
    for (path, seen) in [("/healthz", &healthz), ("/livez", &livez)] {
        let Some((code, body)) = seen else {
            panic!("{path} never turned red before the exit ({status:?})\nlog:\n{log}");
        };
        assert_eq!(*code, 500, "{path}: {body}");
        assert!(
            body.contains("[-]node-agent failed: "),
            "{path} does not name the loop: {body:?}"
        );
    }
    let status =
        status.unwrap_or_else(|| panic!("svcnet agent did not exit after its loop failed\nlog:\n{log}"));
    assert_eq!(status.code(), Some(1), "exit status {status}\nlog:\n{log}");
}

/// A plain HTTP/1.0 GET on 127.0.0.1:`port`: `(status, body)`, or `None` when nothing answers.
fn http_get(port: u16) -> impl Fn(&str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    move |path| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        let code = out.split_whitespace().nth(1)?.parse().ok()?;
        let body = out
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Some((code, body))
    }
}
