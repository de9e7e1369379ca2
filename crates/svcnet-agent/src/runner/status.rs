//! The runner's record of a pod and how it becomes a Kubernetes `PodStatus`: phase, conditions and container
//! statuses computed as the kubelet computes them (`pkg/kubelet/kubelet_pods.go` `getPhase`,
//! `pkg/kubelet/status/generate.go`).

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting, ContainerStatus,
    HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::PodContext;

/// How a container instance ended.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: Option<String>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Timestamp,
    pub container_id: String,
    /// Which instance (restart count at its start) this was: names its log file.
    pub instance: u32,
}

/// A container's current state.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: Timestamp,
        container_id: String,
    },
    Terminated(Terminated),
}

/// Everything the runner knows about one container.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct ContainerRecord {
    pub name: String,
    pub image: String,
    pub state: State,
    pub last: Option<Terminated>,
    pub restart_count: i32,
    pub ready: bool,
    pub started: bool,
    /// While running: the process's start time in clock ticks after boot (`/proc/<pid>/stat` field 22),
    /// which with the PID names the process unambiguously for a later agent (see `super::record`).
    #[serde(default)]
    pub proc_start: Option<u64>,
}

impl ContainerRecord {
    pub fn new(name: &str, image: &str, reason: &str) -> ContainerRecord {
        ContainerRecord {
            name: name.to_owned(),
            image: image.to_owned(),
            state: State::Waiting {
                reason: reason.to_owned(),
                message: None,
            },
            last: None,
            restart_count: 0,
            ready: false,
            started: false,
            proc_start: None,
        }
    }

    /// Stopped as `getPhase` counts it: terminated, or waiting to restart after a termination.
    fn exit_code(&self) -> Option<i32> {
        match &self.state {
            State::Terminated(t) => Some(t.exit_code),
            State::Waiting { .. } => self.last.as_ref().map(|t| t.exit_code),
            State::Running { .. } => None,
        }
    }

    fn is_running(&self) -> bool {
        matches!(self.state, State::Running { .. })
    }
}

/// One condition the runner owns, with the time its status last changed.
#[derive(Clone, Debug)]
pub(crate) struct ConditionRecord {
    pub type_: &'static str,
    pub status: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub since: Timestamp,
}

/// The runner's record of a pod.
#[derive(Clone, Debug)]
pub(crate) struct PodState {
    pub init: Vec<ContainerRecord>,
    pub main: Vec<ContainerRecord>,
    pub start_time: Timestamp,
    pub conditions: Vec<ConditionRecord>,
    /// `stop` was called: the sandbox is gone and nothing restarts.
    pub stopped: bool,
}

impl PodState {
    /// The pod's phase, as `getPhase` computes it (sidecar init containers are not supported).
    pub fn phase(&self, restart_policy: &str) -> &'static str {
        let mut pending_init = 0;
        let mut failed_init = 0;
        for c in &self.init {
            match (&c.state, &c.last) {
                (State::Running { .. }, _) => pending_init += 1,
                (State::Terminated(t), _) if t.exit_code == 0 => {}
                (State::Terminated(_), _) => failed_init += 1,
                (State::Waiting { .. }, Some(t)) if t.exit_code == 0 => {}
                (State::Waiting { .. }, Some(_)) => failed_init += 1,
                (State::Waiting { .. }, None) => pending_init += 1,
            }
        }
        if failed_init > 0 && restart_policy == "Never" {
            return "Failed";
        }
        let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for c in &self.main {
            if c.is_running() {
                running += 1;
            } else if let Some(code) = c.exit_code() {
                stopped += 1;
                if code == 0 {
                    succeeded += 1;
                }
            } else {
                waiting += 1;
            }
        }
        let any_main_started = self
            .main
            .iter()
            .any(|c| c.is_running() || c.exit_code().is_some());
        if (pending_init > 0 && !any_main_started) || failed_init > 0 || waiting > 0 {
            return "Pending";
        }
        if running > 0 {
            return "Running";
        }
        if stopped > 0 {
            if self.stopped {
                // Terminal: nothing restarts whatever the policy.
                return if stopped == succeeded {
                    "Succeeded"
                } else {
                    "Failed"
                };
            }
            if restart_policy == "Always" {
                return "Running";
            }
            if stopped == succeeded {
                return "Succeeded";
            }
            if restart_policy == "Never" {
                return "Failed";
            }
            return "Running";
        }
        "Pending"
    }

    /// The conditions the kubelet owns, as `generate.go` computes them: (type, status, reason, message).
    fn desired_conditions(&self, phase: &str) -> Vec<(&'static str, bool, Option<String>, Option<String>)> {
        let list = |names: Vec<&str>| format!("[{}]", names.join(" "));
        let mut out = Vec::with_capacity(4);
        out.push(("PodReadyToStartContainers", !self.stopped, None, None));

        let incomplete: Vec<&str> = self
            .init
            .iter()
            .filter(|c| !matches!(&c.state, State::Terminated(t) if t.exit_code == 0))
            .map(|c| c.name.as_str())
            .collect();
        let main_started = self
            .main
            .iter()
            .any(|c| c.is_running() || c.exit_code().is_some());
        if incomplete.is_empty() {
            let reason = (phase == "Succeeded" && !self.init.is_empty()).then(|| "PodCompleted".to_owned());
            out.push(("Initialized", true, reason, None));
        } else if main_started {
            out.push(("Initialized", true, None, None));
        } else {
            out.push((
                "Initialized",
                false,
                Some("ContainersNotInitialized".into()),
                Some(format!("containers with incomplete status: {}", list(incomplete))),
            ));
        }

        let unready: Vec<&str> = self
            .main
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect();
        let (ready, reason, message) = if phase == "Succeeded" {
            (false, Some("PodCompleted".to_owned()), None)
        } else if !unready.is_empty() {
            (
                false,
                Some("ContainersNotReady".to_owned()),
                Some(format!("containers with unready status: {}", list(unready))),
            )
        } else {
            (true, None, None)
        };
        out.push(("ContainersReady", ready, reason.clone(), message.clone()));
        out.push(("Ready", ready, reason, message));
        out
    }

    /// Computes the conditions of an adopted pod, keeping the transition times the API shows for those
    /// whose status is unchanged (an agent restart is no transition).
    pub fn restore_conditions(&mut self, pod: &Pod, restart_policy: &str) {
        self.refresh_conditions(restart_policy, Timestamp::now());
        let shown = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default();
        for c in &mut self.conditions {
            if let Some(Time(since)) = shown
                .iter()
                .find(|o| o.type_ == c.type_ && (o.status == "True") == c.status)
                .and_then(|o| o.last_transition_time.clone())
            {
                c.since = since;
            }
        }
    }

    /// Recomputes the conditions, moving `lastTransitionTime` only where a status flips. Returns whether
    /// anything changed.
    pub fn refresh_conditions(&mut self, restart_policy: &str, now: Timestamp) -> bool {
        let phase = self.phase(restart_policy);
        let desired = self.desired_conditions(phase);
        let mut changed = false;
        for (type_, status, reason, message) in desired {
            match self.conditions.iter_mut().find(|c| c.type_ == type_) {
                Some(c) => {
                    if c.status != status {
                        c.status = status;
                        c.since = now;
                        changed = true;
                    }
                    if c.reason != reason || c.message != message {
                        c.reason = reason;
                        c.message = message;
                        changed = true;
                    }
                }
                None => {
                    self.conditions.push(ConditionRecord {
                        type_,
                        status,
                        reason,
                        message,
                        since: now,
                    });
                    changed = true;
                }
            }
        }
        changed
    }
}

/// Kubernetes times have second precision.
fn k8s_time(ts: Timestamp) -> Time {
    Time(Timestamp::from_second(ts.as_second()).unwrap_or(ts))
}

fn terminated_state(t: &Terminated) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: Some(t.container_id.clone()).filter(|s| !s.is_empty()),
            exit_code: t.exit_code,
            finished_at: Some(k8s_time(t.finished_at)),
            message: t.message.clone(),
            reason: Some(t.reason.clone()),
            signal: t.signal,
            started_at: t.started_at.map(k8s_time),
        }),
        ..Default::default()
    }
}

fn container_status(c: &ContainerRecord) -> ContainerStatus {
    let (state, container_id) = match &c.state {
        State::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            None,
        ),
        State::Running {
            started_at,
            container_id,
        } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(k8s_time(*started_at)),
                }),
                ..Default::default()
            },
            Some(container_id.clone()),
        ),
        State::Terminated(t) => (terminated_state(t), Some(t.container_id.clone())),
    };
    let running = c.is_running();
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: String::new(),
        container_id: container_id.filter(|s| !s.is_empty()),
        state: Some(state),
        last_state: Some(c.last.as_ref().map(terminated_state).unwrap_or_default()),
        ready: running && c.ready,
        restart_count: c.restart_count,
        started: Some(running && c.started),
        ..Default::default()
    }
}

/// The QoS class the API server would have set: taken from the pod when present, computed otherwise.
fn qos_class(pod: &Pod) -> String {
    if let Some(qos) = pod.status.as_ref().and_then(|s| s.qos_class.clone()) {
        return qos;
    }
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort".into();
    };
    let containers: Vec<_> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    let any = containers.iter().any(|c| {
        c.resources.as_ref().is_some_and(|r| {
            r.requests.as_ref().is_some_and(|m| !m.is_empty())
                || r.limits.as_ref().is_some_and(|m| !m.is_empty())
        })
    });
    if !any {
        return "BestEffort".into();
    }
    let guaranteed = containers.iter().all(|c| {
        let Some(r) = c.resources.as_ref() else {
            return false;
        };
        let Some(limits) = r.limits.as_ref() else {
            return false;
        };
        ["cpu", "memory"].iter().all(|k| {
            let Some(limit) = limits.get(*k) else { return false };
            r.requests
                .as_ref()
                .and_then(|req| req.get(*k))
                .is_none_or(|req| req == limit)
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }.into()
}

/// Builds the Kubernetes status of `pod` from the runner's record.
pub(crate) fn pod_status(pod: &Pod, ctx: &PodContext, state: &PodState) -> PodStatus {
    let restart_policy = restart_policy(pod);
    let phase = state.phase(restart_policy);
    let mut conditions: Vec<PodCondition> = Vec::with_capacity(5);
    // PodScheduled belongs to the scheduler: keep its record when the pod has one.
    let scheduled = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled").cloned())
        .unwrap_or_else(|| PodCondition {
            type_: "PodScheduled".into(),
            status: "True".into(),
            last_transition_time: Some(k8s_time(state.start_time)),
            ..Default::default()
        });
    for c in &state.conditions {
        conditions.push(PodCondition {
            type_: c.type_.into(),
            status: if c.status { "True" } else { "False" }.into(),
            reason: c.reason.clone(),
            message: c.message.clone(),
            last_transition_time: Some(k8s_time(c.since)),
            ..Default::default()
        });
    }
    conditions.push(scheduled);
    let pod_ip = ctx.pod_ip.to_string();
    let host_ip = ctx.host_ip.to_string();
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        host_ip: Some(host_ip.clone()),
        host_ips: Some(vec![HostIP { ip: host_ip }]),
        pod_ip: Some(pod_ip.clone()),
        pod_ips: Some(vec![PodIP { ip: pod_ip }]),
        start_time: Some(k8s_time(state.start_time)),
        qos_class: Some(qos_class(pod)),
        init_container_statuses: (!state.init.is_empty())
            .then(|| state.init.iter().map(container_status).collect()),
        container_statuses: Some(state.main.iter().map(container_status).collect()),
        ..Default::default()
    }
}

/// The pod's restart policy, defaulted as the API server defaults it.
pub(crate) fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: None,
            started_at: None,
            finished_at: Timestamp::UNIX_EPOCH,
            container_id: String::new(),
            instance: 0,
        }
    }

    fn record(state: State, last: Option<Terminated>) -> ContainerRecord {
        ContainerRecord {
            last,
            state,
            ..ContainerRecord::new("c", "", "")
        }
    }

    fn pod_state(init: Vec<ContainerRecord>, main: Vec<ContainerRecord>) -> PodState {
        PodState {
            init,
            main,
            start_time: Timestamp::UNIX_EPOCH,
            conditions: vec![],
            stopped: false,
        }
    }

    fn running() -> State {
        State::Running {
            started_at: Timestamp::UNIX_EPOCH,
            container_id: String::new(),
        }
    }

    fn waiting(reason: &str) -> State {
        State::Waiting {
            reason: reason.into(),
            message: None,
        }
    }

    #[test]
    fn phase_follows_get_phase() {
        let p = pod_state(vec![], vec![record(waiting("ContainerCreating"), None)]);
        assert_eq!(p.phase("Always"), "Pending");
        let p = pod_state(vec![], vec![record(running(), None)]);
        assert_eq!(p.phase("Always"), "Running");
        // CrashLoopBackOff counts as stopped, and restarts: Running.
        let p = pod_state(vec![], vec![record(waiting("CrashLoopBackOff"), Some(term(1)))]);
        assert_eq!(p.phase("Always"), "Running");
        assert_eq!(p.phase("OnFailure"), "Running");
        let p = pod_state(vec![], vec![record(State::Terminated(term(0)), None)]);
        assert_eq!(p.phase("Never"), "Succeeded");
        assert_eq!(p.phase("OnFailure"), "Succeeded");
        assert_eq!(p.phase("Always"), "Running");
        let p = pod_state(
            vec![],
            vec![
                record(State::Terminated(term(2)), None),
                record(State::Terminated(term(0)), None),
            ],
        );
        assert_eq!(p.phase("Never"), "Failed");
        // Init containers.
        let p = pod_state(
            vec![record(running(), None)],
            vec![record(waiting("PodInitializing"), None)],
        );
        assert_eq!(p.phase("Always"), "Pending");
        let p = pod_state(
            vec![record(State::Terminated(term(1)), None)],
            vec![record(waiting("PodInitializing"), None)],
        );
        assert_eq!(p.phase("Never"), "Failed");
        assert_eq!(p.phase("Always"), "Pending");
    }

    #[test]
    fn conditions_move_only_on_flips() {
        let mut p = pod_state(vec![], vec![record(waiting("ContainerCreating"), None)]);
        let t0 = Timestamp::from_second(100).unwrap();
        let t1 = Timestamp::from_second(200).unwrap();
        assert!(p.refresh_conditions("Always", t0));
        let ready = p.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(!ready.status);
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [c]")
        );
        assert!(!p.refresh_conditions("Always", t1));
        p.main[0].state = running();
        p.main[0].ready = true;
        assert!(p.refresh_conditions("Always", t1));
        let ready = p.conditions.iter().find(|c| c.type_ == "Ready").unwrap();
        assert!(ready.status && ready.since == t1 && ready.reason.is_none());
        let init = p.conditions.iter().find(|c| c.type_ == "Initialized").unwrap();
        assert_eq!(init.since, t0);
    }
}
