//! One pod under the runner: its shared record, the channels that stop it, and its supervisor task (init
//! containers in order, each to completion, then the regular containers side by side).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::{broadcast, watch};

use super::PodContext;
use super::container::{Outcome, run_container};
use super::record;
use super::status::{ContainerRecord, PodState, State, restart_policy};

/// Which container of the pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Which {
    Init(usize),
    Main(usize),
}

/// A request to stop the pod gracefully.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StopRequest {
    pub grace: Duration,
}

/// Back-off configuration: the kubelet's is 10 s doubling to 5 min.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

/// Everything about one pod the runner shares between its tasks and its API.
pub(crate) struct PodHandle {
    pub uid: String,
    pub pod: Pod,
    pub ctx: PodContext,
    /// `root/pods/<uid>`: logs and the containers' default working directory.
    pub dir: PathBuf,
    pub backoff: Backoff,
    /// The pod was adopted from a previous agent's record: its containers resume from their records.
    pub adopted: bool,
    state: Mutex<PodState>,
    changes: broadcast::Sender<String>,
    /// Set once, by `stop`.
    pub stop: watch::Sender<Option<StopRequest>>,
    /// True once the supervisor task has ended (no process of the pod is left).
    pub done: watch::Sender<bool>,
    /// Where the containers' ConfigMap and Secret references are read.
    pub objects: std::sync::Arc<dyn super::ObjectSource>,
    /// Each container's environment as its running instance got it (`kubectl exec` gets the same).
    pub launched_env: Mutex<std::collections::HashMap<String, Vec<(String, String)>>>,
}

fn containers(pod: &Pod) -> (&[Container], &[Container]) {
    match pod.spec.as_ref() {
        Some(spec) => (
            spec.init_containers.as_deref().unwrap_or_default(),
            &spec.containers,
        ),
        None => (&[], &[]),
    }
}

impl PodHandle {
    pub fn new(
        uid: String,
        pod: Pod,
        ctx: PodContext,
        dir: PathBuf,
        runner: &super::Inner,
        restored: Option<PodState>,
        objects: std::sync::Arc<dyn super::ObjectSource>,
    ) -> PodHandle {
        let (backoff, changes) = (runner.backoff, runner.changes.clone());
        let adopted = restored.is_some();
        let state = restored.unwrap_or_else(|| Self::fresh(&pod));
        let handle = PodHandle {
            uid,
            pod,
            ctx,
            dir,
            backoff,
            adopted,
            state: Mutex::new(state),
            changes,
            stop: watch::Sender::new(None),
            done: watch::Sender::new(false),
            objects,
            launched_env: Mutex::default(),
        };
        // The record goes to disk before anything of the pod runs.
        handle.persist(&handle.lock());
        handle
    }

    /// The record of a pod that has not started yet.
    fn fresh(pod: &Pod) -> PodState {
        let (init, main) = containers(pod);
        let image = |c: &Container| c.image.clone().unwrap_or_default();
        let main_reason = if init.is_empty() {
            "ContainerCreating"
        } else {
            "PodInitializing"
        };
        let mut state = PodState {
            init: init
                .iter()
                .map(|c| ContainerRecord::new(&c.name, &image(c), "PodInitializing"))
                .collect(),
            main: main
                .iter()
                .map(|c| ContainerRecord::new(&c.name, &image(c), main_reason))
                .collect(),
            start_time: Timestamp::now(),
            conditions: Vec::new(),
            stopped: false,
        };
        state.refresh_conditions(restart_policy(pod), Timestamp::now());
        state
    }

    fn lock(&self) -> MutexGuard<'_, PodState> {
        // A panic elsewhere must not take the status down with it: the record stays consistent per update.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the record.
    pub fn read<R>(&self, f: impl FnOnce(&PodState) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the record; `f` says whether it changed anything. Conditions are recomputed and watchers of
    /// `changes` notified when the status changed.
    pub fn update(&self, f: impl FnOnce(&mut PodState) -> bool) {
        let changed = {
            let mut state = self.lock();
            let changed = f(&mut state);
            let conditions = state.refresh_conditions(restart_policy(&self.pod), Timestamp::now());
            // Under the lock, so records reach the disk in the order of the changes, and before the
            // status they lead to is reported. Unchanged probe results write nothing.
            if changed || conditions {
                self.persist(&state);
            }
            changed || conditions
        };
        if changed {
            // Nobody listening is fine.
            let _ = self.changes.send(self.uid.clone());
        }
    }

    /// Writes the pod's record for a later agent to adopt (see `super::record`); a stopped pod has none.
    fn persist(&self, state: &PodState) {
        if state.stopped {
            record::remove(&self.dir);
            return;
        }
        let rec = record::PodRecord {
            uid: self.uid.clone(),
            boot_id: record::boot_id().to_string(),
            ctx: self.ctx.clone(),
            start_time: state.start_time,
            init: state.init.clone(),
            main: state.main.clone(),
        };
        if let Err(e) = record::write(&self.dir, &rec) {
            tracing::warn!(pod = %self.uid, error = %e, "could not write the pod's record: a restarted agent will not adopt it");
        }
    }

    /// Changes a container's record only while `instance` is the instance running (probe results of an
    /// instance that has ended must not touch its successor).
    pub fn update_instance(&self, which: Which, instance: u32, f: impl FnOnce(&mut ContainerRecord) -> bool) {
        self.update(|s| {
            let r = s.record_mut(which);
            if matches!(r.state, State::Running { .. })
                && r.restart_count == i32::try_from(instance).unwrap_or(-1)
            {
                f(r)
            } else {
                false
            }
        });
    }

    pub fn container(&self, which: Which) -> Option<&Container> {
        let (init, main) = containers(&self.pod);
        match which {
            Which::Init(i) => init.get(i),
            Which::Main(i) => main.get(i),
        }
    }

    /// Where containers without `workingDir` run: shared by the pod's containers, like a scratch volume.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// The pod's termination grace period (default 30 s), used for probe-triggered kills.
    pub fn grace(&self) -> Duration {
        let secs = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds)
            .unwrap_or(30);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }

    /// `name_namespace(uid)`, as the kubelet's `format.Pod` writes a pod in messages.
    pub fn display_name(&self) -> String {
        let meta = &self.pod.metadata;
        format!(
            "{}_{}({})",
            meta.name.as_deref().unwrap_or(""),
            meta.namespace.as_deref().unwrap_or("default"),
            self.uid
        )
    }
}

impl PodState {
    pub(crate) fn record(&self, which: Which) -> &ContainerRecord {
        match which {
            Which::Init(i) => &self.init[i],
            Which::Main(i) => &self.main[i],
        }
    }

    pub(crate) fn record_mut(&mut self, which: Which) -> &mut ContainerRecord {
        // `which` always comes from the pod's own spec, which the record was built from.
        match which {
            Which::Init(i) => &mut self.init[i],
            Which::Main(i) => &mut self.main[i],
        }
    }
}

/// The pod's supervisor: init containers in order, each to completion, then all regular containers.
pub(crate) async fn run_pod(pod: Arc<PodHandle>) {
    let (init, main) = containers(&pod.pod);
    let (n_init, n_main) = (init.len(), main.len());
    for i in 0..n_init {
        if run_container(pod.clone(), Which::Init(i)).await != Outcome::Succeeded {
            // Failed under restartPolicy Never, or stopped: the regular containers never start.
            return;
        }
    }
    if n_init > 0 {
        pod.update(|s| {
            for r in &mut s.main {
                if matches!(&r.state, State::Waiting { reason, .. } if reason == "PodInitializing") {
                    r.state = State::Waiting {
                        reason: "ContainerCreating".into(),
                        message: None,
                    };
                }
            }
            true
        });
    }
    futures::future::join_all((0..n_main).map(|i| run_container(pod.clone(), Which::Main(i)))).await;
}
