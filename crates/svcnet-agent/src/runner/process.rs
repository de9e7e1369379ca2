//! Host processes: starting a container instance in its own session and process group with its output in
//! its log file, watching one a previous agent started (adopted), signalling the group, graceful
//! termination (preStop, SIGTERM, grace, SIGKILL) and exit codes.

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

/// Checks that `program` names an executable file: a path (relative to `cwd`), or a name found on the
/// container's `PATH`. The error reads as the one exec gives (`ENOENT`, `EACCES`).
pub(crate) fn resolve(program: &str, env: &[(String, String)], cwd: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = cwd.join(program);
        if executable(&path) {
            return Ok(());
        }
        let errno = if path.exists() { 13 } else { 2 };
        return Err(std::io::Error::from_raw_os_error(errno));
    }
    let path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    if std::env::split_paths(path).any(|d| executable(&d.join(program))) {
        Ok(())
    } else {
        Err(std::io::Error::from_raw_os_error(2))
    }
}

/// `setsid`, where util-linux has it.
pub(crate) fn setsid_tool() -> Option<&'static str> {
    static TOOL: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    TOOL.get_or_init(|| {
        let found = [
            "/usr/bin/setsid",
            "/bin/setsid",
            "/usr/sbin/setsid",
            "/sbin/setsid",
        ]
        .iter()
        .find(|p| Path::new(p).is_file())
        .map(|p| p.to_string());
        if found.is_none() {
            tracing::warn!("no `setsid` (util-linux): containers get their own process group only");
        }
        found
    })
    .as_deref()
}

/// A container process: one this agent started (its child), or one a previous agent started and this one
/// adopted (see `super::record`), which it can signal but not wait for.
pub(crate) enum Proc {
    Child(Child),
    Adopted { pid: u32, ticks: u64 },
}

/// How a process ended, as far as the runner can tell.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Exit {
    Status(ExitStatus),
    /// An adopted process ended on its own: its exit status went to its new parent.
    Unknown,
}

impl Proc {
    /// The PID, which is also its process group's ID.
    pub(crate) fn pid(&self) -> u32 {
        match self {
            Proc::Child(c) => c.id().unwrap_or(0),
            Proc::Adopted { pid, .. } => *pid,
        }
    }

    /// Resolves when the process has ended.
    pub(crate) async fn wait(&mut self) -> Exit {
        match self {
            Proc::Child(c) => c.wait().await.map_or(Exit::Unknown, Exit::Status),
            Proc::Adopted { pid, ticks } => {
                while super::record::alive(*pid, *ticks) {
                    tokio::time::sleep(super::record::POLL).await;
                }
                Exit::Unknown
            }
        }
    }

    /// Its start time in clock ticks (see `super::record`), read while it is known to be ours.
    pub(crate) fn start_ticks(&self) -> Option<u64> {
        match self {
            Proc::Child(_) => super::record::proc_start(self.pid()),
            Proc::Adopted { ticks, .. } => Some(*ticks),
        }
    }
}

/// Starts one container instance: its own session and process group (so signals reach its children, and
/// neither signals to the agent's group nor the agent's exit reach it), stdin from /dev/null, stdout and
/// stderr appended to `log`. The process is not killed when the runner is dropped.
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
    // Behind a prefix the spawn itself succeeds whatever the program: find it first, so that a missing
    // one is a StartError as with a runtime, not an exit of the prefix.
    resolve(&spec.program, &base_env(&spec.env), cwd)?;
    // `setsid` execs the rest (it forks only when started as a group leader, which this child is not), so
    // the PID stays the container's; it leads its own session and process group.
    let mut words: Vec<String> = setsid_tool().map(str::to_string).into_iter().collect();
    words.extend(prefix.iter().cloned());
    let mut cmd = prefixed(&words, &spec.program, &spec.args);
    cmd.env_clear()
        .envs(base_env(&spec.env))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(false);
    if setsid_tool().is_none() {
        cmd.process_group(0);
    }
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
/// An adopted process's status is unknown: it is reported as the signal that stopped it.
pub(crate) async fn terminate(
    child: &mut Proc,
    pgid: u32,
    grace: Duration,
    pre_stop: Option<&LifecycleHandler>,
    target: &Target,
) -> ExitStatus {
    use std::os::unix::process::ExitStatusExt;
    let by = |exit: Exit, signal: Signal| match exit {
        Exit::Status(s) => s,
        // A raw wait status below 128 is "killed by that signal".
        Exit::Unknown => ExitStatus::from_raw(signal as i32),
    };
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
            exit = child.wait() => {
                // Ended before any signal: by itself.
                if let Exit::Status(s) = exit {
                    return s;
                }
                return by(exit, Signal::SIGTERM);
            }
        }
    }
    let remaining = grace.saturating_sub(start.elapsed()).max(MIN_GRACE);
    kill_group(pgid, Signal::SIGTERM);
    if let Ok(exit) = tokio::time::timeout(remaining, child.wait()).await {
        return by(exit, Signal::SIGTERM);
    }
    kill_group(pgid, Signal::SIGKILL);
    // Unreaped after SIGKILL: report what SIGKILL would give.
    let exit = tokio::time::timeout(KILL_WAIT, child.wait())
        .await
        .unwrap_or(Exit::Unknown);
    by(exit, Signal::SIGKILL)
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
