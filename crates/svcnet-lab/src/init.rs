//! The init of a lab node's PID namespace: it starts the node's `svcnet agent` and starts it again when
//! it exits, as systemd supervises a kubelet, and reaps every orphan (pods whose agent went away are
//! reparented to it).
//!
//! Before it, the agent itself was the namespace's init, so any agent exit killed the node's pods with
//! it: an agent restart could not be tried in the lab the way it happens on a real node, where the
//! kubelet restarts and the containers run on. Now only the machine dying (`stop-node`, which kills the
//! namespace) takes the pods; `restart-agent` restarts just the agent.
//!
//! An agent that fails within its first two seconds of the first start ends the init with its exit
//! code (a bad flag must fail `lab up` at once, not loop); later exits are restarted after a delay that
//! doubles while the agent keeps dying young (200 ms up to 10 s), so a crash loop does not flood the log.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::{LabError, io_err};

/// How long the first agent must run before an exit is restarted rather than passed on.
const FIRST_START_GRACE: Duration = Duration::from_secs(2);
/// The restart delay after an agent that ran long enough, and the most it grows to.
const RESTART_DELAY: Duration = Duration::from_millis(200);
const MAX_RESTART_DELAY: Duration = Duration::from_secs(10);

/// Runs `argv` (the agent's command line) under supervision; returns only when the first start failed,
/// with its exit code.
pub fn run(argv: &[String]) -> Result<i32, LabError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| LabError::BadOption("node-init needs the agent's command line".into()))?;
    let mut first = true;
    let mut delay = RESTART_DELAY;
    loop {
        let started = Instant::now();
        let child = Command::new(program)
            .args(args)
            .spawn()
            .map_err(io_err(format!("starting {program}")))?;
        let pid = Pid::from_raw(child.id() as i32);
        // Reaped below with every orphan, not through `Child`.
        drop(child);
        let code = reap_until(pid);
        let ran = started.elapsed();
        if first && ran < FIRST_START_GRACE {
            return Ok(code);
        }
        first = false;
        delay = if ran < MAX_RESTART_DELAY {
            (delay * 2).min(MAX_RESTART_DELAY)
        } else {
            RESTART_DELAY
        };
        info!(exit = code, ran = ?ran, restart_in = ?delay, "svcnet agent exited; starting it again");
        std::thread::sleep(delay);
    }
}

/// Reaps children until `agent` exits; its exit code (128 + signal when killed).
fn reap_until(agent: Pid) -> i32 {
    loop {
        match waitpid(None, None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => return code,
            Ok(WaitStatus::Signaled(pid, signal, _)) if pid == agent => return 128 + signal as i32,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => {
                // No child at all: the agent is gone without a status we saw.
                warn!(error = %e, "waiting for the agent");
                return 1;
            }
        }
    }
}
