//! The pod runner: runs Kubernetes pods as host processes (each container's `command` + `args` is a
//! process in its own session and process group) and reports their status in Kubernetes' shape, behaving
//! as the kubelet does for init containers, restart policies, crash-loop back-off, probes, lifecycle hooks
//! and graceful termination.
//!
//! svcnet conventions beyond Kubernetes:
//! - every container gets `POD_IP` (the pod's address) and `HOSTNAME` (its hostname: `spec.hostname` or the
//!   pod's name) unless it sets them; its own hostname and `/etc/hosts` come from the agent's exec prefix
//!   (see `crate::pod_identity`);
//! - `PATH` is the agent's own unless the container sets one (there is no image to define it);
//! - containers without `workingDir` run in `root/pods/<uid>/work`, shared by the pod's containers;
//! - `image` is reported back as given and `imageID` is empty; container IDs are `svcnet://<pid>`;
//! - ConfigMap/Secret references are read from an [`ObjectSource`] (the agent's per-object watches): a
//!   missing required one leaves the container waiting with `CreateContainerConfigError` in the
//!   kubelet's words until the source changes; a container without `command` waits with
//!   `RunContainerError`.
//!
//! - `securityContext` is honoured or refused as [`security`] describes (uid, gid, groups, runAsNonRoot,
//!   no-new-privileges and dropped capabilities through `setpriv`).
//!
//! State lives in memory and, for a later agent to adopt the pod, in `root/pods/<uid>/state.json`
//! ([`record`]: pods outlive the agent); logs live under `root/pods/<uid>/logs/<container>/<restart
//! count>.log` (the current and the previous instance are kept), with the times their lines were written
//! beside them ([`timeline`]).

mod container;
mod env;
mod exec;
mod logs;
mod mounts;
mod pod;
mod probe;
mod process;
mod record;
mod security;
mod sources;
mod status;
mod timeline;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::broadcast;

pub use exec::{ExecTarget, exec_exit_code, kill_exec_group};
pub use logs::LogStream;
pub(crate) use logs::safe_component;
#[cfg(test)]
pub(crate) use mounts::unmount_under;
use pod::{Backoff, PodHandle, StopRequest, run_pod};
pub use sources::{Lookup, NoObjects, ObjectData, ObjectKind, ObjectSource};
use status::{ContainerRecord, PodState, State};
pub use timeline::LogOptions;

/// What the agent knows about a pod that the pod spec does not say.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct PodContext {
    /// The pod's address (`status.podIP`); kept across restarts of its containers.
    pub pod_ip: IpAddr,
    /// The node's address (`status.hostIP`).
    pub host_ip: IpAddr,
    /// The node's name (`spec.nodeName` when the pod has none).
    pub node_name: String,
    /// Kubernetes' service environment variables (`<SVC>_SERVICE_HOST`, …) for this pod, computed by the agent
    /// (honouring `enableServiceLinks`). Explicit `env` entries override them.
    pub service_env: Vec<(String, String)>,
    /// Words put before every container command and exec probe/hook, e.g. `ip netns exec <name>` to run them
    /// in the pod's network namespace. Empty in the host pod network. The prefix must exec the command (not
    /// fork it), so that the container's PID and process group stay those of the process the runner started.
    pub exec_prefix: Vec<String>,
    /// Words put after [`Self::exec_prefix`] for one container (by name): the pod's sandbox with that
    /// container's own mounts (its `volumeMounts`). A container without an entry gets none.
    #[serde(default)]
    pub container_prefix: std::collections::BTreeMap<String, Vec<String>>,
}

impl PodContext {
    /// Everything put before `container`'s command (and its exec probes, hooks and `kubectl exec`).
    pub fn prefix_for(&self, container: &str) -> Vec<String> {
        let mut words = self.exec_prefix.clone();
        words.extend(
            self.container_prefix
                .get(container)
                .into_iter()
                .flatten()
                .cloned(),
        );
        words
    }
}

/// Errors of the runner's API.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The pod has no `metadata.uid`.
    #[error("pod {0:?} has no uid")]
    NoUid(String),
    /// `ensure` was called outside a Tokio runtime.
    #[error("the pod runner needs a Tokio runtime")]
    NoRuntime,
    /// The runner does not know this pod.
    #[error("pod {0:?} is not run by this runner")]
    UnknownPod(String),
    /// The pod has no such container.
    #[error("container {container:?} is not valid for pod {pod:?}")]
    UnknownContainer {
        /// The pod's name.
        pod: String,
        /// The container asked for.
        container: String,
    },
    /// The container has no logs yet (kubelet's wording).
    #[error("container {container:?} in pod {pod:?} is waiting to start: {reason}")]
    WaitingToStart {
        /// The pod's name.
        pod: String,
        /// The container.
        container: String,
        /// Why it is waiting.
        reason: String,
    },
    /// `previous` logs were asked for a container that has not been restarted (kubelet's wording).
    #[error("previous terminated container {container:?} in pod {pod:?} not found")]
    NoPrevious {
        /// The pod's name.
        pod: String,
        /// The container.
        container: String,
    },
    /// The container has no running process to exec in (the kubelet's wording).
    #[error("container not found ({container:?})")]
    NotRunning {
        /// The pod's name.
        pod: String,
        /// The container.
        container: String,
    },
    /// The container's environment or identity cannot be computed for an exec.
    #[error("cannot exec in the container: {0}")]
    Exec(String),
    /// The file system failed.
    #[error("pod runner I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs pods as host processes. Cheap to clone: clones share the same pods.
#[derive(Clone)]
pub struct PodRunner {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    backoff: Backoff,
    pods: Mutex<HashMap<String, Arc<PodHandle>>>,
    changes: broadcast::Sender<String>,
    /// Where containers' ConfigMap and Secret references are read; set once by the agent.
    objects: std::sync::OnceLock<Arc<dyn ObjectSource>>,
}

/// The kubelet's crash-loop back-off: 10 s, doubling up to 5 min.
const DEFAULT_BACKOFF: (Duration, Duration) = (Duration::from_secs(10), Duration::from_secs(300));

impl PodRunner {
    /// A runner keeping its pods' files under `root/pods/<uid>/`, with the kubelet's back-off.
    pub fn new(root: PathBuf) -> PodRunner {
        PodRunner::with_backoff(root, DEFAULT_BACKOFF.0, DEFAULT_BACKOFF.1)
    }

    /// A runner with a crash-loop back-off starting at `initial` and capped at `max` (tests use short ones).
    pub fn with_backoff(root: PathBuf, initial: Duration, max: Duration) -> PodRunner {
        // Slow status consumers lag (and should resync everything) rather than hold memory.
        let (changes, _) = broadcast::channel(1024);
        PodRunner {
            inner: Arc::new(Inner {
                root,
                backoff: Backoff {
                    initial,
                    max: max.max(initial),
                },
                pods: Mutex::new(HashMap::new()),
                changes,
                objects: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Reads containers' ConfigMap and Secret references from `objects` (once; before any pod starts).
    /// Without it every such object is missing.
    pub fn set_objects(&self, objects: Arc<dyn ObjectSource>) {
        let _ = self.inner.objects.set(objects);
    }

    fn objects(&self) -> Arc<dyn ObjectSource> {
        self.inner
            .objects
            .get_or_init(|| Arc::new(NoObjects::default()))
            .clone()
    }

    fn pods(&self) -> MutexGuard<'_, HashMap<String, Arc<PodHandle>>> {
        self.inner
            .pods
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn pod(&self, uid: &str) -> Result<Arc<PodHandle>, RunnerError> {
        self.pods()
            .get(uid)
            .cloned()
            .ok_or_else(|| RunnerError::UnknownPod(uid.to_owned()))
    }

    /// Makes the pod run as specified: init containers first, in order, each to completion, then the regular
    /// containers, restarted per `restartPolicy`. Idempotent: a pod (by uid) the runner already knows is left
    /// as it is, including one that was stopped (a uid never runs twice). Must be called within a Tokio runtime.
    /// A pod a previous agent left a record of is adopted instead (see [`Self::adopt`]), with the context
    /// it was started with.
    pub fn ensure(&self, pod: &Pod, ctx: PodContext) -> Result<(), RunnerError> {
        if self.adopt(pod)?.is_none() {
            self.launch(pod, ctx, None)?;
        }
        Ok(())
    }

    /// Adopts the pod from the record a previous agent left in its directory (see [`record`]), unless the
    /// runner knows the pod already: its containers' processes that still run (same PID, same start time,
    /// same boot, in the pod's network namespace) are watched again, with their restart counts, states and
    /// readiness as recorded; those that ended meanwhile are reported as `ContainerStatusUnknown` and
    /// restarted per the restart policy. Returns the context the pod runs with (its IP above all), or
    /// `None` when there is nothing to adopt. Must be called within a Tokio runtime.
    pub fn adopt(&self, pod: &Pod) -> Result<Option<PodContext>, RunnerError> {
        let Some(uid) = pod.metadata.uid.clone().filter(|u| !u.is_empty()) else {
            return Ok(None);
        };
        if self.pods().contains_key(&uid) {
            return Ok(None);
        }
        let dir = self.pod_dir(&uid);
        let Some(mut rec) = record::read(&dir) else {
            return Ok(None);
        };
        let names = |cs: &[k8s_openapi::api::core::v1::Container]| -> Vec<String> {
            cs.iter().map(|c| c.name.clone()).collect()
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let fits = rec.uid == uid
            && rec.init.iter().map(|c| c.name.clone()).collect::<Vec<_>>()
                == names(spec.init_containers.as_deref().unwrap_or_default())
            && rec.main.iter().map(|c| c.name.clone()).collect::<Vec<_>>() == names(&spec.containers);
        if !fits {
            tracing::warn!(pod = %uid, "the pod's record does not match the pod; not adopting it");
            record::remove(&dir);
            return Ok(None);
        }
        if rec.boot_id != record::boot_id() {
            // The machine rebooted: nothing of the record runs, whatever PIDs now exist.
            for c in rec.init.iter_mut().chain(rec.main.iter_mut()) {
                c.proc_start = None;
            }
        }
        // Processes this agent cannot reach in their pod's network namespace (it is gone, or not visible
        // from this agent's mount namespace) could be neither probed nor restarted in place: the pod
        // starts afresh instead, in a namespace set up again.
        let live = rec.live();
        if live.iter().any(|(_, pid)| !record::in_pod_netns(*pid, &rec.ctx)) {
            tracing::warn!(pod = %uid, containers = ?live, "the pod's processes are not in a network namespace this agent can reach; starting the pod again");
            for (_, pid) in &live {
                process::kill_group(*pid, nix::sys::signal::Signal::SIGKILL);
            }
            record::remove(&dir);
            return Ok(None);
        }
        let ctx = rec.ctx.clone();
        let mut state = status::PodState {
            init: rec.init,
            main: rec.main,
            start_time: rec.start_time,
            conditions: Vec::new(),
            stopped: false,
        };
        state.restore_conditions(pod, status::restart_policy(pod));
        tracing::info!(pod = %pod.metadata.name.as_deref().unwrap_or_default(), %uid, "adopting pod a previous agent started");
        self.launch(pod, ctx.clone(), Some(state))?;
        Ok(Some(ctx))
    }

    /// Starts (or, with `restored`, resumes) the pod's supervisor; false when the runner knew the pod.
    fn launch(&self, pod: &Pod, ctx: PodContext, restored: Option<PodState>) -> Result<bool, RunnerError> {
        let uid = pod
            .metadata
            .uid
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| RunnerError::NoUid(pod.metadata.name.clone().unwrap_or_default()))?;
        let handle = {
            let mut pods = self.pods();
            if pods.contains_key(&uid) {
                return Ok(false);
            }
            let runtime = tokio::runtime::Handle::try_current().map_err(|_| RunnerError::NoRuntime)?;
            let dir = self.pod_dir(&uid);
            std::fs::create_dir_all(dir.join("work"))?;
            let handle = Arc::new(PodHandle::new(
                uid.clone(),
                pod.clone(),
                ctx,
                dir,
                &self.inner,
                restored,
                self.objects(),
            ));
            pods.insert(uid.clone(), handle.clone());
            (handle, runtime)
        };
        let (handle, runtime) = handle;
        if !handle.adopted {
            tracing::info!(pod = %handle.display_name(), "starting pod");
        }
        let supervisor = runtime.spawn(run_pod(handle.clone()));
        runtime.spawn(async move {
            // Whether the supervisor ended or panicked, nothing of the pod runs any more.
            if let Err(e) = supervisor.await {
                tracing::error!(pod = %handle.uid, error = %e, "pod supervisor failed");
            }
            handle.done.send_replace(true);
        });
        let _ = self.inner.changes.send(uid);
        Ok(true)
    }

    /// Stops the processes of every pod a previous agent recorded that is not in `live` (uids; the pod was
    /// deleted while no agent ran) and removes its files. Only processes verifiably the record's are
    /// signalled: SIGTERM, up to `grace`, then SIGKILL. Returns the uids of the pods removed.
    pub async fn stop_unadopted(
        &self,
        live: &std::collections::HashSet<String>,
        grace: Duration,
    ) -> Vec<String> {
        let known: Vec<String> = self.pods().keys().cloned().collect();
        let gone: Vec<(PathBuf, record::PodRecord)> = record::all(&self.inner.root)
            .into_iter()
            .filter(|(_, r)| !live.contains(&r.uid) && !known.contains(&r.uid))
            .collect();
        futures::future::join_all(gone.iter().map(|(dir, rec)| async move {
            let running = rec.live();
            if !running.is_empty() {
                tracing::info!(pod = %rec.uid, containers = ?running, "stopping a pod deleted while no agent ran");
            }
            record::stop_processes(rec, grace).await;
            mounts::unmount_under(dir);
            let _ = tokio::fs::remove_dir_all(dir).await;
        }))
        .await;
        gone.into_iter().map(|(_, r)| r.uid).collect()
    }

    /// Terminates the pod gracefully: each running container's preStop hook, SIGTERM to its process group, up
    /// to `grace` (at least 2 s, as on the kubelet) for it to exit, then SIGKILL. Resolves when every process
    /// of the pod has exited. The pod's status stays readable (containers terminated) until [`Self::remove`].
    pub async fn stop(&self, uid: &str, grace: Duration) {
        let Ok(pod) = self.pod(uid) else { return };
        pod.stop.send_if_modified(|req| {
            if req.is_none() {
                *req = Some(StopRequest { grace });
                true
            } else {
                false
            }
        });
        let mut done = pod.done.subscribe();
        let _ = done.wait_for(|d| *d).await;
        pod.update(|s| !std::mem::replace(&mut s.stopped, true));
    }

    /// The directory of the pod `uid`'s files (logs, working directory; the agent's hosts file), removed
    /// with the pod.
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.inner.root.join("pods").join(logs::safe_component(uid))
    }

    /// Stops every pod (see [`Self::stop`]) concurrently and detaches their memory-backed volumes.
    pub async fn stop_all(&self, grace: Duration) {
        let uids: Vec<String> = self.pods().keys().cloned().collect();
        futures::future::join_all(uids.iter().map(|uid| self.stop(uid, grace))).await;
        // The pods are gone for good: so are their memory-backed volumes.
        for uid in &uids {
            mounts::unmount_under(&self.pod_dir(uid));
        }
    }

    /// Stops the pod and forgets it: its status and its files (logs, working directory) are gone.
    pub async fn remove(&self, uid: &str, grace: Duration) -> Result<(), RunnerError> {
        self.stop(uid, grace).await;
        // A pod that never started (its volumes failed) may still have files, a tmpfs even.
        let dir = self
            .pods()
            .remove(uid)
            .map_or_else(|| self.pod_dir(uid), |pod| pod.dir.clone());
        mounts::unmount_under(&dir);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// The pod's status as the kubelet reports it, or `None` for a pod the runner does not know.
    pub fn status(&self, uid: &str) -> Option<PodStatus> {
        let pod = self.pod(uid).ok()?;
        Some(pod.read(|s| status::pod_status(&pod.pod, &pod.ctx, s)))
    }

    /// Receives the uid of a pod whenever its status changes. A receiver that lags should re-read every pod.
    pub fn changes(&self) -> broadcast::Receiver<String> {
        self.inner.changes.subscribe()
    }

    /// The uids of the pods the runner knows and has not been asked to stop (completed pods included).
    pub fn running(&self) -> Vec<String> {
        let mut uids: Vec<String> = self
            .pods()
            .iter()
            .filter(|(_, p)| p.stop.borrow().is_none())
            .map(|(uid, _)| uid.clone())
            .collect();
        uids.sort();
        uids
    }

    /// Which instance's log `previous`/current designates, as the kubelet's `validateContainerLogStatus`.
    fn log_instance(
        &self,
        uid: &str,
        container: &str,
        previous: bool,
    ) -> Result<(Arc<PodHandle>, u32, bool), RunnerError> {
        let pod = self.pod(uid)?;
        let pod_name = pod.pod.metadata.name.clone().unwrap_or_default();
        let found = pod.read(|s| -> Option<ContainerRecord> {
            s.main
                .iter()
                .chain(s.init.iter())
                .find(|c| c.name == container)
                .cloned()
        });
        let Some(record) = found else {
            return Err(RunnerError::UnknownContainer {
                pod: pod_name,
                container: container.to_owned(),
            });
        };
        let running_instance = u32::try_from(record.restart_count).unwrap_or(0);
        let chosen = if previous {
            record
                .last
                .as_ref()
                .map(|t| (t.instance, false))
                .ok_or_else(|| RunnerError::NoPrevious {
                    pod: pod_name.clone(),
                    container: container.to_owned(),
                })?
        } else {
            match (&record.state, &record.last) {
                (State::Running { .. }, _) => (running_instance, true),
                (State::Terminated(t), _) => (t.instance, false),
                (State::Waiting { .. }, Some(t)) => (t.instance, false),
                (State::Waiting { reason, .. }, None) => {
                    return Err(RunnerError::WaitingToStart {
                        pod: pod_name,
                        container: container.to_owned(),
                        reason: reason.clone(),
                    });
                }
            }
        };
        Ok((pod, chosen.0, chosen.1))
    }

    /// Logs of one container: the current instance (the last one when it is not running) or the `previous`
    /// one, optionally only the last `tail` lines.
    pub fn logs(
        &self,
        uid: &str,
        container: &str,
        previous: bool,
        tail: Option<usize>,
    ) -> Result<Vec<u8>, RunnerError> {
        let opts = LogOptions {
            previous,
            tail,
            ..LogOptions::default()
        };
        self.logs_with(uid, container, &opts)
    }

    /// Logs of one container as `opts` say (`PodLogOptions` but `follow` and `limitBytes`).
    pub fn logs_with(&self, uid: &str, container: &str, opts: &LogOptions) -> Result<Vec<u8>, RunnerError> {
        let (pod, instance, _) = self.log_instance(uid, container, opts.previous)?;
        let path = logs::instance_log(&pod.dir, container, instance);
        if !opts.timed() {
            return Ok(logs::read_tail(&path, opts.tail, None)?);
        }
        let all = logs::read_tail(&path, None, None)?;
        Ok(timeline::render(&path, &all, opts))
    }

    /// Follows the current instance's log (like `kubectl logs -f`): the last `tail` lines (all for `None`),
    /// then what it writes until it exits. Must be called within a Tokio runtime.
    pub fn follow_logs(
        &self,
        uid: &str,
        container: &str,
        tail: Option<usize>,
    ) -> Result<LogStream, RunnerError> {
        let opts = LogOptions {
            tail,
            ..LogOptions::default()
        };
        self.follow_logs_with(uid, container, &opts)
    }

    /// Follows the current instance's log as `opts` say (`previous` is not followed): what is there now,
    /// filtered and stamped, then what it writes, stamped with the time it is read.
    pub fn follow_logs_with(
        &self,
        uid: &str,
        container: &str,
        opts: &LogOptions,
    ) -> Result<LogStream, RunnerError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| RunnerError::NoRuntime)?;
        let (pod, instance, running) = self.log_instance(uid, container, false)?;
        let path = logs::instance_log(&pod.dir, container, instance);
        let end = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let initial = if opts.timed() {
            timeline::render(&path, &logs::read_tail(&path, None, Some(end))?, opts)
        } else {
            logs::read_tail(&path, opts.tail, Some(end))?
        };
        // The stamper starts at a line start unless the log so far ends mid-line.
        let stamper = opts
            .timestamps
            .then(|| timeline::Stamper::new(initial.is_empty() || initial.ends_with(b"\n")));
        let name = container.to_owned();
        let alive = move || {
            running
                && pod.read(|s| {
                    s.main.iter().chain(s.init.iter()).any(|c| {
                        c.name == name
                            && matches!(c.state, State::Running { .. })
                            && u32::try_from(c.restart_count).ok() == Some(instance)
                    })
                })
        };
        Ok(logs::follow(&runtime, path, initial, end, alive, stamper))
    }
}
