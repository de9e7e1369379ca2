//! Host processes: starting a container instance in its own process group with its output in its log file,
//! signalling the group, graceful termination (preStop, SIGTERM, grace, SIGKILL) and exit codes.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::LifecycleHandler;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use super::env::LaunchSpec;
use super::probe::{Target, run_hook};

/// The kubelet never gives a container less than this between SIGTERM and SIGKILL.
const MIN_GRACE: Duration = Duration::from_secs(2);

/// How long to wait for a SIGKILLed process to be reaped before giving up on it.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// Sends `signal` to the process group `pgid`. A group that is already gone is not an error.
pub(crate) fn kill_group(pgid: u32, signal: Signal) {
    // Never signal group 0 (ours) or 1: a pgid comes from a child we started, so it is > 1.
    if let Ok(pgid) = i32::try_from(pgid)
        && pgid > 1
    {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

/// The environment a container process gets: its own variables, and a `PATH` (an image would define one) taken
/// from the agent when the pod sets none, so that `sh`, `python3`, … are found as on the host.
pub(crate) fn base_env(env: &[(String, String)]) -> Vec<(String, String)> {
    let mut out = env.to_vec();
    if !out.iter().any(|(k, _)| k == "PATH") {
        let path = std::env::var("PATH")
            .unwrap_or_else(|_| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
        out.insert(0, ("PATH".into(), path));
    }
    out
}

/// A command for `program args…` behind the pod's exec prefix (see [`PodContext::exec_prefix`]): with a
/// prefix `[p, q…]` the process started is `p q… program args…`, which execs into the program.
///
/// [`PodContext::exec_prefix`]: super::PodContext::exec_prefix
pub(crate) fn prefixed(prefix: &[String], program: &str, args: &[String]) -> Command {
    match prefix.split_first() {
        None => {
            let mut cmd = Command::new(program);
            cmd.args(args);
            cmd
        }
        Some((first, rest)) => {
            let mut cmd = Command::new(first);
            cmd.args(rest).arg(program).args(args);
            cmd
        }
    }
}

/// Starts one container instance: its own process group (so signals reach its children), stdin from
/// /dev/null, stdout and stderr appended to `log`. The process is not killed when the runner is dropped.
pub(crate) fn spawn(spec: &LaunchSpec, prefix: &[String], cwd: &Path, log: &Path) -> std::io::Result<Child> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Owner-only: a container's output may hold anything it printed, secrets included.
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)?;
    let err = out.try_clone()?;
    let mut cmd = prefixed(prefix, &spec.program, &spec.args);
    cmd.env_clear()
        .envs(base_env(&spec.env))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn()
}

/// The exit code Kubernetes reports: the process's code, or 128 + signal number when a signal killed it.
pub(crate) fn exit_code(status: Option<ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Some(s) => s
            .code()
            .or_else(|| s.signal().map(|sig| 128 + sig))
            .unwrap_or(128),
        // Unreaped after SIGKILL: report what SIGKILL would give.
        None => 137,
    }
}

/// Stops a running instance as the kubelet's `killContainer` does: run `pre_stop` (bounded by the grace
/// period), SIGTERM the process group, wait out the rest of the grace period (at least 2 s), then SIGKILL.
pub(crate) async fn terminate(
    child: &mut Child,
    pgid: u32,
    grace: Duration,
    pre_stop: Option<&LifecycleHandler>,
    target: &Target,
) -> Option<ExitStatus> {
    let start = Instant::now();
    if let Some(hook) = pre_stop {
        tokio::select! {
            result = tokio::time::timeout(grace, run_hook(target, hook)) => {
                match result {
                    Ok(Err(message)) => tracing::info!(container = %target.container.name, %message, "preStop hook failed"),
                    Err(_) => tracing::info!(container = %target.container.name, "preStop hook did not finish within the grace period"),
                    Ok(Ok(())) => {}
                }
            }
            status = child.wait() => {
                if let Ok(status) = status {
                    return Some(status);
                }
            }
        }
    }
    let remaining = grace.saturating_sub(start.elapsed()).max(MIN_GRACE);
    kill_group(pgid, Signal::SIGTERM);
    if let Ok(Ok(status)) = tokio::time::timeout(remaining, child.wait()).await {
        return Some(status);
    }
    kill_group(pgid, Signal::SIGKILL);
    tokio::time::timeout(KILL_WAIT, child.wait())
        .await
        .ok()
        .and_then(Result::ok)
}

/// Formats a duration as Go's `time.Duration.String` does (`10s`, `1m20s`, `5m0s`, `500ms`), for messages that
/// must read as the kubelet's.
pub(crate) fn go_duration(d: Duration) -> String {
    fn frac(n: u128, unit: u128, width: usize) -> String {
        let (whole, rem) = (n / unit, n % unit);
        if rem == 0 {
            whole.to_string()
        } else {
            let digits = format!("{rem:0width$}");
            format!("{whole}.{}", digits.trim_end_matches('0'))
        }
    }
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    if nanos < 1_000_000 {
        return format!("{}µs", frac(nanos, 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", frac(nanos, 1_000_000, 6));
    }
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&frac(
        u128::from(s) * 1_000_000_000 + u128::from(d.subsec_nanos()),
        1_000_000_000,
        9,
    ));
    out.push('s');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go() {
        let cases = [
            (Duration::from_secs(10), "10s"),
            (Duration::from_secs(80), "1m20s"),
            (Duration::from_secs(300), "5m0s"),
            (Duration::from_secs(3600), "1h0m0s"),
            (Duration::from_millis(500), "500ms"),
            (Duration::from_millis(1500), "1.5s"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::ZERO, "0s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want);
        }
    }
}
