//! One container's life: start an instance, probe it, wait for it to exit or be stopped, and restart it per
//! the pod's restart policy with the kubelet's crash-loop back-off.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use nix::sys::signal::Signal;
use tokio::sync::{mpsc, watch};

use super::env;
use super::logs::instance_log;
use super::pod::{PodHandle, StopRequest, Which};
use super::probe::{Target, probe_loop, run_hook};
use super::process::{Exit, Proc, exit_code, go_duration, kill_group, spawn, terminate};
use super::record;
use super::security;
use super::status::{State, Terminated, restart_policy};
use super::timeline;

/// How a container's loop ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Exited 0 and is not restarted.
    Succeeded,
    /// Exited non-zero and is not restarted.
    Failed,
    /// The pod is being stopped.
    Stopped,
}

/// A probe's (or postStart hook's) request to kill the running instance.
struct KillRequest {
    grace: Duration,
    message: String,
}

/// Waits for the pod's stop request. Returns the request rather than holding the watch lock across awaits.
pub(crate) async fn stop_requested(rx: &mut watch::Receiver<Option<StopRequest>>) -> StopRequest {
    loop {
        if let Some(req) = *rx.borrow_and_update() {
            return req;
        }
        if rx.changed().await.is_err() {
            // The pod handle is gone: nobody can ask any more.
            std::future::pending::<()>().await;
        }
    }
}

/// Runs container `which` of `pod` until it is done (per restart policy) or the pod is stopped.
pub(crate) async fn run_container(pod: Arc<PodHandle>, which: Which) -> Outcome {
    let Some(container) = pod.container(which).cloned() else {
        return Outcome::Failed;
    };
    let mut stop_rx = pod.stop.subscribe();
    let is_init = matches!(which, Which::Init(_));
    let policy = restart_policy(&pod.pod).to_owned();

    let Resume {
        mut instance,
        mut previous,
        mut adopted,
        mut ended,
    } = resume(&pod, which);
    let configured = if adopted.is_some() {
        // A process a previous agent started is supervised whatever its ConfigMaps and Secrets say
        // now (its environment was fixed when it started); its probes and hooks get what can be
        // computed now.
        let identity = security::identity(&pod.pod, &container).unwrap_or_default();
        let spec = env::launch_spec(&pod.pod, &container, &pod.ctx, pod.objects.as_ref())
            .unwrap_or_else(|e| {
                tracing::warn!(pod = %pod.uid, container = %container.name, error = %e.message, "adopted container: its environment cannot be computed now; probes and hooks get the service variables only");
                env::LaunchSpec {
                    program: String::new(),
                    args: Vec::new(),
                    env: pod.ctx.service_env.clone(),
                }
            });
        Some((spec, identity))
    } else {
        configure(&pod, which, &container, &mut stop_rx).await
    };
    let Some((mut spec, identity)) = configured else {
        return Outcome::Stopped;
    };
    let remember = |env: &[(String, String)]| {
        pod.launched_env
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(container.name.clone(), env.to_vec());
    };
    remember(&spec.env);
    let cwd = match container.working_dir.as_ref().filter(|d| !d.is_empty()) {
        Some(dir) => dir.into(),
        None => {
            // The pod's shared work dir, like an emptyDir: writable by whatever user its containers run
            // as (it lies inside the agent's owner-only data dir, so only the pod reaches it).
            if !identity.runs_as_root() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(pod.work_dir(), std::fs::Permissions::from_mode(0o1777));
            }
            pod.work_dir()
        }
    };
    // The identity goes after the pod's prefix (which may need root) and applies to probes and hooks too.
    let mut exec_prefix = pod.ctx.prefix_for(&container.name);
    exec_prefix.extend(identity.setpriv_prefix());
    let mut target = Target {
        pod_ip: pod.ctx.pod_ip.to_string(),
        container: container.clone(),
        env: spec.env.clone(),
        cwd,
        exec_prefix,
    };

    // The kubelet's flowcontrol.Backoff entry for this container: (current delay, last update).
    let mut backoff: Option<(Duration, Instant)> = None;
    let mut first = true;
    loop {
        if stop_rx.borrow().is_some() {
            return Outcome::Stopped;
        }
        // Keep only the current and the previous instance's logs.
        if let Some(old) = instance.checked_sub(2) {
            let old = instance_log(&pod.dir, &container.name, old);
            let _ = std::fs::remove_file(timeline::times_path(&old));
            let _ = std::fs::remove_file(old);
        }
        // Every start but the first reads the container's ConfigMaps and Secrets again, as the kubelet
        // computes a container's environment each time it creates it.
        if !std::mem::replace(&mut first, false) && adopted.is_none() && ended.is_none() {
            let Some((fresh, _)) = configure(&pod, which, &container, &mut stop_rx).await else {
                return Outcome::Stopped;
            };
            target.env = fresh.env.clone();
            remember(&fresh.env);
            spec = fresh;
        }
        let log = instance_log(&pod.dir, &container.name, instance);
        let last = previous.clone();
        let count = i32::try_from(instance).unwrap_or(i32::MAX);
        // An adopted instance keeps its record (start time, readiness) as the previous agent left it.
        let resumed = adopted.take();
        let started = match (ended.take(), resumed) {
            (Some(term), _) => Err(term),
            (None, Some((proc, started_at, container_id))) => Ok((proc, started_at, container_id, true)),
            (None, None) => match spawn(&spec, &target.exec_prefix, &target.cwd, &log) {
                Ok(child) => {
                    let proc = Proc::Child(child);
                    let id = format!("svcnet://{}", proc.pid());
                    Ok((proc, Timestamp::now(), id, false))
                }
                Err(e) => {
                    pod.update(|s| {
                        let r = s.record_mut(which);
                        r.restart_count = count;
                        r.last = last.clone();
                        true
                    });
                    Err(Terminated {
                        exit_code: 128,
                        signal: None,
                        reason: "StartError".into(),
                        message: Some(format!(
                            "failed to start container {:?}: exec {:?}: {e}",
                            container.name, spec.program
                        )),
                        started_at: None,
                        finished_at: Timestamp::now(),
                        container_id: String::new(),
                        instance,
                    })
                }
            },
        };
        let (term, how) = match started {
            Err(term) => (term, None),
            Ok((mut child, started_at, container_id, resumed)) => {
                let pgid = child.pid();
                if !resumed {
                    let ticks = child.start_ticks();
                    pod.update(|s| {
                        let r = s.record_mut(which);
                        r.restart_count = count;
                        r.last = last;
                        r.state = State::Running {
                            started_at,
                            container_id: container_id.clone(),
                        };
                        r.proc_start = ticks;
                        r.ready = false;
                        // Init containers have no probes: started as soon as they run.
                        r.started = is_init;
                        true
                    });
                    tracing::debug!(pod = %pod.uid, container = %container.name, pid = pgid, instance, "container started");
                } else {
                    tracing::info!(pod = %pod.uid, container = %container.name, pid = pgid, instance, "container adopted");
                }
                let times = timeline::Recorder::start(log.clone());
                let (kill_tx, mut kill_rx) = mpsc::channel::<KillRequest>(1);
                let prober = (!is_init).then(|| {
                    tokio::spawn(prober(
                        pod.clone(),
                        which,
                        instance,
                        target.clone(),
                        kill_tx,
                        resumed,
                    ))
                });
                let pre_stop = container
                    .lifecycle
                    .as_ref()
                    .and_then(|l| l.pre_stop.as_ref())
                    .filter(|_| !is_init);
                let (exit, how) = tokio::select! {
                    exit = child.wait() => (exit, None),
                    req = stop_requested(&mut stop_rx) => {
                        (Exit::Status(terminate(&mut child, pgid, req.grace, pre_stop, &target).await), Some(None))
                    }
                    Some(kill) = kill_rx.recv() => {
                        tracing::info!(pod = %pod.uid, container = %container.name, message = %kill.message, "killing container");
                        (Exit::Status(terminate(&mut child, pgid, kill.grace, pre_stop, &target).await), Some(Some(kill.message)))
                    }
                };
                if let Some(prober) = prober {
                    prober.abort();
                }
                // As when a container's init process dies, nothing else of the container survives it.
                kill_group(pgid, Signal::SIGKILL);
                times.finish().await;
                let term = match exit {
                    Exit::Unknown => unknown_exit(instance, Some(started_at), container_id),
                    Exit::Status(status) => {
                        let code = exit_code(Some(status));
                        Terminated {
                            exit_code: code,
                            signal: None,
                            reason: if code == 0 { "Completed" } else { "Error" }.into(),
                            message: how.clone().flatten(),
                            started_at: Some(started_at),
                            finished_at: Timestamp::now(),
                            container_id,
                            instance,
                        }
                    }
                };
                (term, how)
            }
        };
        let stopped = matches!(how, Some(None));
        let success = term.exit_code == 0;
        pod.update(|s| {
            let r = s.record_mut(which);
            r.state = State::Terminated(term.clone());
            r.ready = false;
            r.started = false;
            r.proc_start = None;
            true
        });
        previous = Some(term.clone());
        if stopped || stop_rx.borrow().is_some() {
            return Outcome::Stopped;
        }
        let restart = if is_init {
            !success && policy != "Never"
        } else {
            policy == "Always" || (policy == "OnFailure" && !success)
        };
        if !restart {
            return if success {
                Outcome::Succeeded
            } else {
                Outcome::Failed
            };
        }

        // Crash-loop back-off as the kubelet's doBackOff: the first restart is immediate, later ones wait the
        // current delay, which doubles up to the cap and resets once the container has run for 2 × the cap.
        let finished = Instant::now();
        let max = pod.backoff.max;
        let fresh = |last: Instant| finished.duration_since(last) <= max * 2;
        if let Some((delay, last)) = backoff
            && fresh(last)
            && !delay.is_zero()
        {
            let message = format!(
                "back-off {} restarting failed container={} pod={}",
                go_duration(delay),
                container.name,
                pod.display_name()
            );
            pod.update(|s| {
                let r = s.record_mut(which);
                r.last = Some(term.clone());
                r.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message: Some(message),
                };
                true
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop_requested(&mut stop_rx) => return Outcome::Stopped,
            }
        }
        backoff = Some(match backoff {
            Some((delay, last)) if fresh(last) => ((delay * 2).min(max), finished),
            _ => (pod.backoff.initial.min(max), finished),
        });
        instance = instance.saturating_add(1);
    }
}

/// What to run for the container, and as whom: its environment read from the ConfigMaps and Secrets as
/// they are now. A configuration that cannot be made leaves it waiting with the reason; one an object may
/// cure is tried again on every change of the objects. `None`: the pod was stopped meanwhile.
async fn configure(
    pod: &PodHandle,
    which: Which,
    container: &k8s_openapi::api::core::v1::Container,
    stop_rx: &mut watch::Receiver<Option<StopRequest>>,
) -> Option<(env::LaunchSpec, security::Identity)> {
    loop {
        // Read before computing, so that a change landing meanwhile is not missed.
        let mut changes = pod.objects.changes();
        changes.borrow_and_update();
        let launch = env::launch_spec(&pod.pod, container, &pod.ctx, pod.objects.as_ref())
            .and_then(|spec| Ok((spec, security::identity(&pod.pod, container)?)));
        let e = match launch {
            Ok(launch) => return Some(launch),
            Err(e) => e,
        };
        let message = Some(e.message.clone()).filter(|m| !m.is_empty());
        pod.update(|s| {
            let r = s.record_mut(which);
            let same = matches!(&r.state, State::Waiting { reason, message: m } if reason == e.reason && *m == message);
            r.state = State::Waiting {
                reason: e.reason.into(),
                message: message.clone(),
            };
            !same
        });
        if !e.retry {
            // Nothing the runner learns later can fix this (the spec is immutable): wait to be stopped.
            stop_requested(stop_rx).await;
            return None;
        }
        // A missing ConfigMap or Secret (or key) may appear: try again when an object changes, as the
        // kubelet's sync loop does.
        tokio::select! {
            _ = stop_requested(stop_rx) => return None,
            changed = changes.changed() => {
                if changed.is_err() {
                    stop_requested(stop_rx).await;
                    return None;
                }
            }
        }
    }
}

/// Drives one running instance's postStart hook and probes: `started`, `ready`, and kill requests for failed
/// startup or liveness probes. Aborted when the instance ends.
async fn prober(
    pod: Arc<PodHandle>,
    which: Which,
    instance: u32,
    target: Target,
    kill: mpsc::Sender<KillRequest>,
    resumed: bool,
) {
    let c = &target.container;
    // An adopted instance ran its postStart hook under the previous agent, and passed its startup probe
    // if its record says it started.
    let already_started = resumed && pod.read(|s| s.record(which).started);
    let grace_of = |probe: &k8s_openapi::api::core::v1::Probe| {
        probe
            .termination_grace_period_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or_else(|| pod.grace(), Duration::from_secs)
    };
    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref())
        && !resumed
        && let Err(e) = run_hook(&target, hook).await
    {
        let message = format!("PostStartHook failed: {e}");
        let _ = kill
            .send(KillRequest {
                grace: pod.grace(),
                message,
            })
            .await;
        return;
    }
    if let Some(probe) = c.startup_probe.as_ref().filter(|_| !already_started) {
        let mut ok = false;
        probe_loop(&target, probe, |result| {
            ok = result;
            false
        })
        .await;
        if !ok {
            let message = format!("Container {} failed startup probe, will be restarted", c.name);
            let _ = kill
                .send(KillRequest {
                    grace: grace_of(probe),
                    message,
                })
                .await;
            return;
        }
    }
    let has_readiness = c.readiness_probe.is_some();
    pod.update_instance(which, instance, |r| {
        r.started = true;
        if !has_readiness {
            r.ready = true;
        }
        true
    });
    let readiness = async {
        if let Some(probe) = &c.readiness_probe {
            probe_loop(&target, probe, |result| {
                pod.update_instance(which, instance, |r| {
                    std::mem::replace(&mut r.ready, result) != result
                });
                true
            })
            .await;
        }
    };
    let liveness = async {
        if let Some(probe) = &c.liveness_probe {
            let mut failed = false;
            probe_loop(&target, probe, |result| {
                failed = !result;
                result
            })
            .await;
            if failed {
                let message = format!("Container {} failed liveness probe, will be restarted", c.name);
                let _ = kill
                    .send(KillRequest {
                        grace: grace_of(probe),
                        message,
                    })
                    .await;
            }
        }
    };
    tokio::join!(readiness, liveness);
}

/// Where a container's loop starts: a new pod from instance 0; an adopted one from its record (its
/// running process adopted, or how it ended while no agent watched).
struct Resume {
    instance: u32,
    previous: Option<Terminated>,
    adopted: Option<(Proc, Timestamp, String)>,
    ended: Option<Terminated>,
}

fn resume(pod: &PodHandle, which: Which) -> Resume {
    let mut out = Resume {
        instance: 0,
        previous: None,
        adopted: None,
        ended: None,
    };
    if !pod.adopted {
        return out;
    }
    let r = pod.read(|s| s.record(which).clone());
    out.instance = u32::try_from(r.restart_count).unwrap_or(0);
    out.previous = r.last.clone();
    match &r.state {
        State::Running {
            started_at,
            container_id,
        } => {
            // The runner cleared `proc_start` if the record is from another boot.
            let live = record::pid_of(container_id)
                .zip(r.proc_start)
                .filter(|(pid, ticks)| record::alive(*pid, *ticks));
            // (`PodRunner::adopt` checked the network namespace of every live process.)
            match live {
                Some((pid, ticks)) => {
                    out.adopted = Some((Proc::Adopted { pid, ticks }, *started_at, container_id.clone()));
                }
                None => {
                    out.ended = Some(unknown_exit(
                        out.instance,
                        Some(*started_at),
                        container_id.clone(),
                    ));
                }
            }
        }
        State::Terminated(t) => out.ended = Some(t.clone()),
        // Waiting to be restarted (back-off): the next instance; never started: the first.
        State::Waiting { .. } => {
            if let Some(t) = &r.last {
                out.instance = t.instance.saturating_add(1);
            }
        }
    }
    out
}

/// How a container that ended with no agent to read its exit status is reported, as the kubelet reports
/// a container it lost track of.
fn unknown_exit(instance: u32, started_at: Option<Timestamp>, container_id: String) -> Terminated {
    Terminated {
        exit_code: 137,
        signal: None,
        reason: "ContainerStatusUnknown".into(),
        message: Some(
            "The container ended while svcnet's agent was restarting or after it was adopted; its exit code cannot be known"
                .into(),
        ),
        started_at,
        finished_at: Timestamp::now(),
        container_id,
        instance,
    }
}
