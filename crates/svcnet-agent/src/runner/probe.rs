//! Probe and lifecycle-hook actions (`httpGet`, `tcpSocket`, `exec`, `sleep`) and the probe loops that drive a
//! running container's `started` and `ready` and ask for its restart, with the kubelet's timing semantics.

use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::process::kill_group;

/// What a probe or hook needs to know about its container.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub pod_ip: String,
    pub container: Container,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    /// The pod's exec prefix (its network namespace), for exec actions.
    pub exec_prefix: Vec<String>,
}

impl Target {
    /// A port given by number or by the name of one of the container's ports.
    fn port(&self, port: &IntOrString) -> Result<u16, String> {
        match port {
            IntOrString::Int(n) => u16::try_from(*n)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("invalid port {n}")),
            IntOrString::String(name) => {
                if let Ok(n) = name.parse::<u16>() {
                    return Ok(n);
                }
                self.container
                    .ports
                    .iter()
                    .flatten()
                    .find(|p| p.name.as_deref() == Some(name.as_str()))
                    .and_then(|p| u16::try_from(p.container_port).ok())
                    .ok_or_else(|| {
                        format!(
                            "couldn't find port {name:?} in container {:?}",
                            self.container.name
                        )
                    })
            }
        }
    }
}

/// A minimal HTTP/1.1 GET as the kubelet's prober sends it; success is a status in 200..400.
pub(crate) async fn http_get(
    target: &Target,
    action: &HTTPGetAction,
    timeout: Duration,
) -> Result<(), String> {
    let scheme = action.scheme.as_deref().unwrap_or("HTTP");
    if !scheme.eq_ignore_ascii_case("HTTP") {
        return Err(format!("scheme {scheme} is not supported by svcnet's prober"));
    }
    let port = target.port(&action.port)?;
    let host = action
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| target.pod_ip.clone());
    let mut path = action.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let bad = |s: &str| s.chars().any(|c| c.is_control() || c == ' ');
    if bad(&path) {
        return Err(format!("invalid path {path:?}"));
    }
    let host_port = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let headers: Vec<(String, String)> = action
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    if headers
        .iter()
        .any(|(n, v)| bad(n) || v.chars().any(char::is_control))
    {
        return Err("invalid header".into());
    }
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut request = format!("GET {path} HTTP/1.1\r\n");
    if !has("Host") {
        request.push_str(&format!("Host: {host_port}\r\n"));
    }
    if !has("User-Agent") {
        request.push_str("User-Agent: kube-probe/1.33\r\n");
    }
    if !has("Accept") {
        request.push_str("Accept: */*\r\n");
    }
    for (name, value) in &headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("Connection: close\r\n\r\n");

    let exchange = async {
        let mut stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("dial tcp {host_port}: {e}"))?;
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(256);
        let mut chunk = [0u8; 512];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 4096 {
            let n = stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let line = String::from_utf8_lossy(&buf);
        let code: u16 = line
            .strip_prefix("HTTP/1.")
            .and_then(|rest| rest.get(2..5))
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| "malformed HTTP response".to_owned())?;
        if (200..400).contains(&code) {
            Ok(())
        } else {
            Err(format!("HTTP probe failed with statuscode: {code}"))
        }
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| format!("Get \"http://{host_port}{path}\": timeout"))?
}

async fn tcp_connect(host: &str, port: u16, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Err(format!("dial tcp {host}:{port}: i/o timeout")),
    }
}

/// Runs `command` with the container's environment; exit 0 is success. On timeout its process group is killed.
pub(crate) async fn exec(target: &Target, command: &[String], timeout: Duration) -> Result<(), String> {
    let Some((program, args)) = command.split_first() else {
        return Err("exec: empty command".into());
    };
    // Exec actions run where the container runs (its network namespace); httpGet and tcpSocket run from the
    // node and reach the pod IP, as the kubelet's prober does.
    let mut cmd = super::process::prefixed(&target.exec_prefix, program, args);
    cmd.env_clear()
        .envs(super::process::base_env(&target.env))
        .current_dir(&target.cwd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| format!("exec {program:?}: {e}"))?;
    let pgid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(format!("command {command:?} exited with {status}")),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => {
            if let Some(pgid) = pgid {
                kill_group(pgid, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
            Err(format!("command {command:?} timed out"))
        }
    }
}

/// One probe attempt.
pub(crate) async fn probe_once(target: &Target, probe: &Probe) -> Result<(), String> {
    let timeout = Duration::from_secs(u64::try_from(probe.timeout_seconds.unwrap_or(1).max(1)).unwrap_or(1));
    if let Some(action) = &probe.http_get {
        http_get(target, action, timeout).await
    } else if let Some(action) = &probe.tcp_socket {
        let port = target.port(&action.port)?;
        let host = action
            .host
            .clone()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| target.pod_ip.clone());
        tcp_connect(&host, port, timeout).await
    } else if let Some(action) = &probe.exec {
        exec(target, action.command.as_deref().unwrap_or_default(), timeout).await
    } else if probe.grpc.is_some() {
        Err("grpc probes are not supported by svcnet's prober".into())
    } else {
        Err("probe has no action".into())
    }
}

/// Runs a lifecycle hook (`postStart`/`preStop`). `tcpSocket` is accepted and ignored, as by the kubelet.
pub(crate) async fn run_hook(target: &Target, hook: &LifecycleHandler) -> Result<(), String> {
    // Hooks have no timeout of their own: the caller bounds them (the grace period for preStop).
    let long = Duration::from_secs(3600);
    if let Some(action) = &hook.exec {
        exec(target, action.command.as_deref().unwrap_or_default(), long).await
    } else if let Some(action) = &hook.http_get {
        http_get(target, action, long).await
    } else if let Some(action) = &hook.sleep {
        tokio::time::sleep(Duration::from_secs(u64::try_from(action.seconds).unwrap_or(0))).await;
        Ok(())
    } else {
        Ok(())
    }
}

/// The probe's timing fields with the API server's defaults.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(probe: &Probe) -> Timing {
        let secs = |v: Option<i32>, default: i32, min: i32| {
            Duration::from_secs(u64::try_from(v.unwrap_or(default).max(min)).unwrap_or(0))
        };
        let count = |v: Option<i32>, default: i32| u32::try_from(v.unwrap_or(default).max(1)).unwrap_or(1);
        Timing {
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            success_threshold: count(probe.success_threshold, 1),
            failure_threshold: count(probe.failure_threshold, 3),
        }
    }
}

/// Runs `probe` every period after its initial delay, calling `on_result` with the thresholded result each time
/// it is (re)established; returns when `on_result` returns `false`.
pub(crate) async fn probe_loop(target: &Target, probe: &Probe, mut on_result: impl FnMut(bool) -> bool) {
    let timing = Timing::of(probe);
    tokio::time::sleep(timing.initial_delay).await;
    let (mut successes, mut failures) = (0u32, 0u32);
    let mut interval = tokio::time::interval(timing.period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match probe_once(target, probe).await {
            Ok(()) => {
                failures = 0;
                successes = successes.saturating_add(1);
                if successes >= timing.success_threshold && !on_result(true) {
                    return;
                }
            }
            Err(message) => {
                tracing::debug!(container = %target.container.name, %message, "probe failed");
                successes = 0;
                failures = failures.saturating_add(1);
                if failures >= timing.failure_threshold && !on_result(false) {
                    return;
                }
            }
        }
    }
}
