//! The pod loop: brings the node in line with the pods bound to it. It starts pods (with an address and,
//! in the netns pod network, a network namespace), stops deleted ones and finishes their graceful
//! deletion, tries failed starts again with backoff, and at start-up adopts what a previous agent left
//! running (see `crate::runner`'s `record`) before reconciling the rest.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use super::pod_env::{cluster_dns, service_env};
use super::{AgentConfig, listed};
use crate::netns::{self, PodNet, PodNetSpec};
use crate::pod_identity::{self, BindMount, Sandbox};
use crate::podip::PodIps;
use crate::runner::{PodContext, PodRunner};

/// How long a deleted pod's logs stay readable on the node.
const LOG_RETENTION: Duration = Duration::from_secs(60);

/// Whether `pid` is a container process a previous run of this agent started for the pod at `pod_ip`:
/// the leader of its own process group, with that pod's `POD_IP` in its environment. Anything else is
/// not ours and is never touched.
fn leftover_container(pid: i32, pod_ip: &str) -> bool {
    let pgid_ok =
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid))).is_ok_and(|g| g.as_raw() == pid);
    let env_ok = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|e| {
            e.split(|b| *b == 0)
                .any(|kv| kv == format!("POD_IP={pod_ip}").as_bytes())
        })
        .unwrap_or(false);
    pgid_ok && env_ok
}

/// Processes of a previous run that left no record to adopt them by (an agent from before records, or a
/// record that did not match): stop them so the pod restarts cleanly under this agent, and say so on the
/// pod.
pub(super) async fn stop_leftovers(client: &Client, pods: &[Pod]) {
    use nix::sys::signal::{Signal, killpg};
    for pod in pods {
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        let Some(ip) = status.pod_ip.as_deref() else {
            continue;
        };
        let mut stopped = Vec::new();
        for cs in status.container_statuses.iter().flatten() {
            let Some(pid) = cs
                .container_id
                .as_deref()
                .and_then(|c| c.strip_prefix("svcnet://"))
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if pid <= 1 || !leftover_container(pid, ip) {
                continue;
            }
            let group = nix::unistd::Pid::from_raw(pid);
            let _ = killpg(group, Signal::SIGTERM);
            for _ in 0..20 {
                if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = killpg(group, Signal::SIGKILL);
            stopped.push(cs.name.clone());
        }
        if stopped.is_empty() {
            continue;
        }
        warn!(pod = %pod.name_any(), containers = ?stopped, "stopped containers a previous agent left running; restarting them");
        let ns = pod.namespace().unwrap_or_default();
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": format!("{}.{:x}", pod.name_any(), jiff::Timestamp::now().as_nanosecond()), "namespace": ns},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": pod.name_any(), "namespace": ns, "uid": pod.uid()},
            "reason": "Killing", "type": "Normal",
            "message": format!("svcnet agent restarted and cannot adopt running containers {stopped:?}; restarting them"),
            "source": {"component": "svcnet-agent"},
            "firstTimestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "lastTimestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "count": 1,
        });
        let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), &ns);
        if let Ok(ev) = serde_json::from_value(event)
            && let Err(e) = events.create(&Default::default(), &ev).await
        {
            warn!(pod = %pod.name_any(), error = %e, "could not record the restart event");
        }
    }
}

/// The pod loop's state: what it needs to start, stop and network the node's pods.
pub(super) struct PodSync {
    pub(super) cfg: AgentConfig,
    pub(super) client: Client,
    pub(super) runner: PodRunner,
    pub(super) ips: Arc<Mutex<PodIps>>,
    /// Told when pods may get an address they could not get before (the pod CIDR arrived, an address was
    /// released).
    pub(super) addresses: Arc<Notify>,
    pub(super) podnet: Option<Arc<PodNet>>,
    pub(super) pod_cidr: Option<IpNet>,
    pub(super) pods: Store<Pod>,
    pub(super) services: Store<Service>,
    /// Pods whose network namespace is set up.
    pub(super) netns_ready: HashSet<String>,
    /// Pods being stopped.
    pub(super) stopping: HashSet<String>,
    /// Pods that could not get an address yet, started once [`Self::addresses`] says one may be free.
    pub(super) waiting: HashSet<String>,
    /// Pods whose start failed (their network namespace, their directory), tried again with backoff.
    pub(super) retry: HashMap<String, Retry>,
    /// Gives pods their own hostname and `/etc/hosts`, where it works.
    pub(super) sandbox: Sandbox,
    /// The pods' ServiceAccount tokens.
    pub(super) tokens: super::sa_token::Tokens,
    /// Where pods' mount namespaces show their token directory (Kubernetes' path), if they can.
    pub(super) sa_mount: Option<&'static str>,
    /// The ConfigMaps and Secrets the pods use (their containers' environment, their volumes).
    pub(super) objects: super::objects::Objects,
    /// The objects that changed (taken by [`Self::run`]): their pods' volumes are written again, and
    /// pods that waited for them start.
    pub(super) object_changes: Option<tokio::sync::mpsc::UnboundedReceiver<super::objects::Key>>,
    /// Pods whose projected service account tokens were renewed (taken by [`Self::run`]): their
    /// volumes are written again.
    pub(super) token_renewals: Option<tokio::sync::mpsc::UnboundedReceiver<String>>,
    /// Volume failures already told in an Event, per pod (once until the message changes).
    pub(super) mount_reported: HashMap<String, String>,
    /// Tells the status writer about every event of a pod with readiness gates (another writer may
    /// have changed a gate's condition, which moves the pod's Ready) and of a pod whose Ready another
    /// writer changed (the node lifecycle controller, while this node's Lease lapsed).
    pub(super) gated: tokio::sync::mpsc::UnboundedSender<String>,
}

/// When to try a failed pod again, and how often it failed so far.
#[derive(Debug, Clone, Copy)]
pub(super) struct Retry {
    at: tokio::time::Instant,
    failures: u32,
}

/// The wait before the next try after `failures` failed ones: doubling from 1 s up to 30 s, the kubelet's
/// image-pull and sandbox backoff shape, so a lasting failure costs little and a passing one is short.
fn retry_delay(failures: u32) -> Duration {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(30);
    FIRST
        .saturating_mul(1 << failures.saturating_sub(1).min(5))
        .min(MAX)
}

impl PodSync {
    /// Whether the API shows the pod's Ready condition other than the runner has it (both having one).
    fn ready_moved(&self, pod: &Pod) -> bool {
        let Some(ours) = pod.uid().and_then(|uid| self.runner.status(&uid)) else {
            return false;
        };
        let (api, ours) = (
            super::status::ready_of(pod.status.as_ref()),
            super::status::ready_of(Some(&ours)),
        );
        api.is_some() && ours.is_some() && api != ours
    }

    /// The pod loop: every pod event, pods that may now get an address, and due retries, until the
    /// pod watch ends.
    pub(super) async fn run(mut self, pod_stream: impl Stream<Item = Result<Pod, watcher::Error>>) {
        futures::pin_mut!(pod_stream);
        let mut object_changes = self.object_changes.take();
        let mut token_renewals = self.token_renewals.take();
        loop {
            let next_retry = self.retry.values().map(|r| r.at).min();
            tokio::select! {
                // A ConfigMap or Secret a pod uses changed: its volumes follow, and a pod that waited
                // for it starts.
                Some(key) = async { object_changes.as_mut()?.recv().await }, if object_changes.is_some() => {
                    let uids = self.objects.pods_of(&key);
                    let pods = self.pods.state();
                    for pod in pods.iter().filter(|p| p.uid().is_some_and(|u| uids.contains(&u))) {
                        self.pod(pod).await;
                    }
                }
                // A projected token was renewed: the pod's volume gets it.
                Some(uid) = async { token_renewals.as_mut()?.recv().await }, if token_renewals.is_some() => {
                    let pods = self.pods.state();
                    if let Some(pod) = pods.iter().find(|p| p.uid().as_deref() == Some(uid.as_str())) {
                        self.pod(pod).await;
                    }
                }
                ev = pod_stream.next() => match ev {
                    Some(Ok(pod)) => {
                        if (super::readiness::has_gates(&pod) || self.ready_moved(&pod))
                            && let Some(uid) = pod.uid()
                        {
                            let _ = self.gated.send(uid);
                        }
                        self.pod(&pod).await
                    }
                    Some(Err(_)) => {}
                    None => break,
                },
                // Pods without an address got no event of their own when the pod CIDR arrived or an address
                // came free: start them now, from the cache.
                () = self.addresses.notified(), if !self.waiting.is_empty() => {
                    let waiting = std::mem::take(&mut self.waiting);
                    let (pods, listed) = (self.pods.state(), listed(&self.pods));
                    for uid in waiting {
                        match pods.iter().find(|p| p.uid().as_deref() == Some(uid.as_str())) {
                            // Still without an address, it goes back into the set.
                            Some(pod) => self.pod(pod).await,
                            // Mid-(re)list the cache is not to be trusted about what is gone.
                            None if !listed => {
                                self.waiting.insert(uid);
                            }
                            None => {}
                        }
                    }
                }
                // Pods whose start failed for a reason that may pass get no event when it does: try them again.
                () = tokio::time::sleep_until(next_retry.unwrap_or_else(tokio::time::Instant::now)),
                    if next_retry.is_some() => self.retry_due().await,
            }
        }
    }

    /// Schedules another try for the pod `uid`, whose start just failed.
    fn failed(&mut self, uid: String) {
        let failures = self.retry.get(&uid).map_or(0, |r| r.failures) + 1;
        let delay = retry_delay(failures);
        debug!(%uid, failures, ?delay, "pod start failed; trying again later");
        self.retry.insert(
            uid,
            Retry {
                at: tokio::time::Instant::now() + delay,
                failures,
            },
        );
    }

    /// Tries again the pods whose retry time came; those gone from the store are forgotten.
    async fn retry_due(&mut self) {
        let now = tokio::time::Instant::now();
        let due: HashSet<String> = self
            .retry
            .iter()
            .filter(|(_, r)| r.at <= now)
            .map(|(uid, _)| uid.clone())
            .collect();
        let (pods, listed) = (self.pods.state(), listed(&self.pods));
        for uid in &due {
            // Pushed back first, so that a try ending neither in a start nor in a failure (the pod now
            // waits for an address; the cache is mid-list) cannot spin.
            if let Some(r) = self.retry.get_mut(uid) {
                r.at = now + retry_delay(r.failures + 1);
            }
            match pods.iter().find(|p| p.uid().as_deref() == Some(uid.as_str())) {
                // Still failing reschedules it with a longer wait; starting removes it.
                Some(pod) => self.pod(pod).await,
                None if listed => {
                    self.retry.remove(uid);
                }
                None => {}
            }
        }
    }

    /// Adopts the pod if a previous agent left it running (see [`PodRunner::adopt`]): it keeps its
    /// address. Whether it was adopted.
    pub(super) fn adopt(&mut self, pod: &Pod) -> bool {
        let Some(uid) = pod.uid() else { return false };
        // An adopted pod's containers read their ConfigMaps and Secrets as they resume.
        if pod.metadata.deletion_timestamp.is_none() {
            self.objects.register(pod);
        }
        match self.runner.adopt(pod) {
            Ok(Some(ctx)) => {
                self.ips
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .adopt(&uid, ctx.pod_ip);
                // Its network namespace is left to `pod`: `setup_pod` re-uses an intact one (and repairs
                // what an agent repairs on every start, e.g. the bridge port's hairpin flag).
                self.waiting.remove(&uid);
                self.retry.remove(&uid);
                true
            }
            Ok(None) => false,
            Err(e) => {
                warn!(pod = %pod.name_any(), error = %e, "could not adopt pod");
                false
            }
        }
    }

    /// At start-up, before any pod event: adopts the listed pods a previous agent left running, stops the
    /// recorded pods that were deleted meanwhile, and cleans up what cannot be adopted. Only then does the
    /// pod loop reconcile the rest (start what is missing, stop what is being deleted).
    pub(super) async fn start(&mut self, listed: &[Pod]) {
        let adopted: HashSet<String> = listed
            .iter()
            .filter(|p| self.adopt(p))
            .filter_map(|p| p.uid())
            .collect();
        if !adopted.is_empty() {
            info!(pods = adopted.len(), "adopted pods a previous agent left running");
        }
        let live: HashSet<String> = listed.iter().filter_map(|p| p.uid()).collect();
        let gone = self.runner.stop_unadopted(&live, Duration::from_secs(2)).await;
        if !gone.is_empty() {
            info!(pods = gone.len(), "stopped pods deleted while no agent ran");
        }
        let rest: Vec<Pod> = listed
            .iter()
            .filter(|p| p.uid().is_none_or(|u| !adopted.contains(&u)))
            .cloned()
            .collect();
        stop_leftovers(&self.client, &rest).await;
        // Only with a complete list: a namespace is deleted when its pod is known to be gone.
        if let Some(podnet) = &self.podnet {
            podnet.teardown_gone(&live).await;
        }
    }

    /// Shows a pod whose volumes keep it from starting as the kubelet shows it: each container waiting,
    /// `ContainerCreating` (init containers first, the others `PodInitializing`), or
    /// `CreateContainerConfigError` with the message when a container's mounts cannot be made. Written
    /// once per state, and only while the runner has no status of its own for the pod.
    async fn show_blocked(&self, pod: &Pod, e: &super::volumes::VolumeError) {
        let Some(uid) = pod.uid() else { return };
        if self.runner.status(&uid).is_some() {
            return;
        }
        let (reason, message) = match e {
            super::volumes::VolumeError::Container(m) => ("CreateContainerConfigError", Some(m.clone())),
            _ => ("ContainerCreating", None),
        };
        let spec = pod.spec.clone().unwrap_or_default();
        let inits = spec.init_containers.unwrap_or_default();
        let waiting = |c: &k8s_openapi::api::core::v1::Container, reason: &str, message: Option<&String>| {
            let mut w = json!({"reason": reason});
            if let Some(m) = message {
                w["message"] = json!(m);
            }
            json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                "ready": false, "restartCount": 0, "started": false, "state": {"waiting": w}})
        };
        let mut status = json!({"phase": "Pending", "hostIP": self.cfg.node_ip.to_string(),
            "hostIPs": [{"ip": self.cfg.node_ip.to_string()}]});
        let main_reason = if inits.is_empty() {
            reason
        } else {
            "PodInitializing"
        };
        let main_message = if inits.is_empty() { message.as_ref() } else { None };
        status["containerStatuses"] = spec
            .containers
            .iter()
            .map(|c| waiting(c, main_reason, main_message))
            .collect();
        if !inits.is_empty() {
            status["initContainerStatuses"] = inits
                .iter()
                .map(|c| waiting(c, reason, message.as_ref()))
                .collect();
        }
        // Already shown so: nothing to write.
        let shown = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first());
        let same = shown.is_some_and(|cs| {
            let w = cs.state.as_ref().and_then(|s| s.waiting.as_ref());
            w.and_then(|w| w.reason.as_deref()) == Some(main_reason)
                && w.and_then(|w| w.message.as_ref()) == main_message
        });
        if same {
            return;
        }
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let patch = json!({"status": status});
        if let Err(e) = api
            .patch_status(
                &pod.name_any(),
                &Default::default(),
                &kube::api::Patch::Strategic(&patch),
            )
            .await
        {
            debug!(pod = %pod.name_any(), error = %e, "could not show the pod waiting for its volumes");
        }
    }

    /// Brings the node in line with one pod's latest state (and stops pods that left the store).
    async fn pod(&mut self, pod: &Pod) {
        let Some(uid) = pod.uid() else { return };
        let ns = pod.namespace().unwrap_or_default();
        // A pod a previous agent left running is adopted before anything else is decided about it.
        self.adopt(pod);
        if pod.metadata.deletion_timestamp.is_some() {
            self.waiting.remove(&uid);
            self.retry.remove(&uid);
            self.objects.forget(&uid);
            self.mount_reported.remove(&uid);
            if self.stopping.insert(uid.clone()) {
                let grace = Duration::from_secs(
                    pod.metadata.deletion_grace_period_seconds.unwrap_or(30).max(0) as u64,
                );
                self.netns_ready.remove(&uid);
                let (runner, client, ips, addresses, name, podnet) = (
                    self.runner.clone(),
                    self.client.clone(),
                    self.ips.clone(),
                    self.addresses.clone(),
                    pod.name_any(),
                    self.podnet.clone(),
                );
                tokio::spawn(async move {
                    runner.stop(&uid, grace).await;
                    let api: Api<Pod> = Api::namespaced(client, &ns);
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(uid.clone()),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    if let Err(e) = api.delete(&name, &dp).await {
                        debug!(pod = %name, error = %e, "final delete failed (already gone?)");
                    }
                    // The namespace before the address: the IP is free only once nothing holds it.
                    if let Some(podnet) = podnet {
                        podnet.teardown_pod(&uid).await;
                    }
                    release_ip(&ips, &addresses, &uid);
                    // Keep the pod's files a while, as the kubelet keeps dead containers' logs: a
                    // `kubectl logs -f` still reading must get the last lines.
                    tokio::time::sleep(LOG_RETENTION).await;
                    let _ = runner.remove(&uid, Duration::from_secs(0)).await;
                });
            }
            return;
        }
        // A pod that was deleted outright (not gracefully) disappears from the store: stop what is left. Only
        // once the store holds the initial list: until then (kube's reflector buffers it) it is empty, and
        // every pod started from that list would look deleted.
        let listed = listed(&self.pods);
        if listed {
            let live: HashSet<String> = self.pods.state().iter().filter_map(|p| p.uid()).collect();
            self.objects.retain(&live);
            self.mount_reported.retain(|uid, _| live.contains(uid));
        }
        for running in self.runner.running().into_iter().filter(|_| listed) {
            if self
                .pods
                .state()
                .iter()
                .all(|p| p.uid().as_deref() != Some(running.as_str()))
                && self.stopping.insert(running.clone())
            {
                let (runner, ips, addresses, podnet) = (
                    self.runner.clone(),
                    self.ips.clone(),
                    self.addresses.clone(),
                    self.podnet.clone(),
                );
                self.netns_ready.remove(&running);
                self.objects.forget(&running);
                self.mount_reported.remove(&running);
                tokio::spawn(async move {
                    let _ = runner.remove(&running, Duration::from_secs(2)).await;
                    if let Some(podnet) = podnet {
                        podnet.teardown_pod(&running).await;
                    }
                    release_ip(&ips, &addresses, &running);
                });
            }
        }
        let Some(pod_ip) = pod_ip(&self.ips, pod) else {
            debug!(pod = %pod.name_any(), "no pod address yet (no pod CIDR, or none free); the pod starts when one is");
            self.waiting.insert(uid);
            return;
        };
        let links = pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        let mut exec_prefix = Vec::new();
        let base_mounts: Vec<BindMount>;
        // The pod's identity first: its containers start with their token in place, as the kubelet's
        // volumes are mounted before any container starts.
        let sa_dir = match self
            .tokens
            .ensure(pod, self.runner.pod_dir(&uid).join("serviceaccount"))
            .await
        {
            Ok(dir) => dir,
            Err(e) => {
                warn!(pod = %pod.name_any(), error = %e, "could not give the pod its service account token");
                self.tokens.report(pod, &e).await;
                self.failed(uid);
                return;
            }
        };
        // The tokens its own projected volumes ask for, requested once and then renewed.
        let projected = match self.tokens.ensure_projected(pod).await {
            Ok(tokens) => tokens,
            Err(e) => {
                warn!(pod = %pod.name_any(), error = %e, "could not get the pod's projected service account token");
                self.tokens.report(pod, &e).await;
                self.failed(uid);
                return;
            }
        };
        // Then its volumes, each written (again, when its ConfigMap or Secret changed, or a token was
        // renewed) before anything of the pod starts; a pod whose volumes cannot be set up does not start.
        let volumes = match super::volumes::setup(
            pod,
            &self.runner.pod_dir(&uid),
            &self.objects,
            sa_dir.as_deref(),
            &projected,
        )
        .and_then(|v| {
            if self.sandbox.works() {
                for mounts in v.mounts.values() {
                    super::volumes::make_mount_points(mounts).map_err(|e| {
                        super::volumes::VolumeError::Container(format!("creating a mount point: {e}"))
                    })?;
                }
            }
            Ok(v)
        }) {
            Ok(v) => {
                self.mount_reported.remove(&uid);
                v
            }
            Err(e) => {
                self.show_blocked(pod, &e).await;
                if let Some(reason) = e.reason() {
                    let message = e.to_string();
                    warn!(pod = %pod.name_any(), error = %message, "cannot set up the pod's volumes");
                    if self.mount_reported.get(&uid) != Some(&message) {
                        super::events::warn(&self.client, pod, reason, &message).await;
                        self.mount_reported.insert(uid.clone(), message);
                    }
                    self.failed(uid);
                } else {
                    debug!(pod = %pod.name_any(), error = %e, "the pod waits for a ConfigMap or Secret to be read");
                }
                return;
            }
        };
        let sa_mounts: Vec<BindMount> = sa_dir
            .as_deref()
            .zip(self.sa_mount)
            .map(|(dir, path)| BindMount {
                read_only: true,
                ..BindMount::new(dir, path)
            })
            .into_iter()
            .collect();
        // The pod's own name, as the kubelet gives it (its hosts file names it; it is its hostname).
        let (host, domain) = pod_identity::hostname(pod, netns::CLUSTER_DOMAIN);
        let uts_name = pod_identity::uts_hostname(pod, netns::CLUSTER_DOMAIN);
        let aliases = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_aliases.clone())
            .unwrap_or_default();
        let hosts = pod_identity::hosts_file(&[pod_ip], &host, domain.as_deref(), &aliases);
        if let (Some(podnet), Some(cidr)) = (self.podnet.clone(), self.pod_cidr) {
            // Once per pod: the runner ignores pods it already runs, and so does this.
            if !self.netns_ready.contains(&uid) {
                let spec = pod.spec.as_ref();
                let resolv = netns::resolv_conf(
                    &ns,
                    netns::CLUSTER_DOMAIN,
                    cluster_dns(&self.services.state()),
                    spec.and_then(|s| s.dns_policy.as_deref()),
                    spec.and_then(|s| s.dns_config.as_ref()),
                );
                let net = PodNetSpec {
                    uid: &uid,
                    ip: pod_ip,
                    cidr,
                    resolv_conf: resolv,
                    hosts: hosts.clone(),
                };
                match podnet.setup_pod(&net).await {
                    Ok(name) => {
                        info!(pod = %pod.name_any(), netns = %name, ip = %pod_ip, "pod network namespace ready");
                        self.netns_ready.insert(uid.clone());
                    }
                    Err(e) => {
                        // The pod does not start without its network. The node side may be what broke
                        // (someone deleted the bridge): set it up again, then try the pod again later.
                        warn!(pod = %pod.name_any(), error = %e, "could not set up the pod's network namespace");
                        if let Err(e) = podnet.setup_node(&cidr).await {
                            warn!(error = %e, "could not set up the node's pod network again");
                        }
                        self.failed(uid);
                        return;
                    }
                }
            }
            exec_prefix = podnet.exec_prefix(&uid);
            // `ip netns exec` bind-mounts the pod's hosts file; only the hostname is left to do.
            base_mounts = sa_mounts;
        } else {
            // The host pod network: the pod's hosts file is bind-mounted by the sandbox, as the kubelet's
            // `etc-hosts` in the pod's directory.
            let dir = self.runner.pod_dir(&uid);
            let file = dir.join("etc-hosts");
            // Written only when it differs: running containers have this very file mounted, and a rewrite
            // in place could show them half a file.
            let unchanged = std::fs::read_to_string(&file).is_ok_and(|old| old == hosts);
            let written = if unchanged {
                Ok(())
            } else {
                std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&file, &hosts))
            };
            match written {
                Ok(()) => {
                    base_mounts = std::iter::once(BindMount::new(&file, "/etc/hosts"))
                        .chain(sa_mounts)
                        .collect();
                }
                Err(e) => {
                    warn!(pod = %pod.name_any(), error = %e, "could not write the pod's hosts file");
                    self.failed(uid);
                    return;
                }
            }
        }
        let mut env = service_env(&self.services.state(), &ns, links);
        // Beside the service variables (which hold KUBERNETES_SERVICE_HOST/PORT): where the token is.
        if let Some(dir) = &sa_dir {
            env.push((
                super::SERVICE_ACCOUNT_DIR_ENV.into(),
                dir.to_string_lossy().into_owned(),
            ));
        }
        // And where each volume is, for containers that cannot see it at its mountPath (no root).
        for (name, dir) in &volumes.dirs {
            env.push((super::volumes::env_name(name), dir.to_string_lossy().into_owned()));
        }
        // Each container's own mount namespace: the pod's files, then its volumeMounts in order.
        let container_prefix = volumes
            .mounts
            .iter()
            .map(|(name, mounts)| {
                let mut all = base_mounts.clone();
                all.extend(mounts.iter().cloned());
                (name.clone(), self.sandbox.prefix(&uts_name, &all))
            })
            .collect();
        let ctx = PodContext {
            pod_ip,
            host_ip: self.cfg.node_ip,
            node_name: self.cfg.node_name.clone(),
            service_env: env,
            exec_prefix,
            container_prefix,
        };
        match self.runner.ensure(pod, ctx) {
            Ok(()) => {
                self.retry.remove(&uid);
            }
            Err(e) => {
                warn!(pod = %pod.name_any(), error = %e, "could not start pod");
                self.failed(uid);
            }
        }
    }
}

/// Gives the pod `uid`'s address back, and tells the pod loop one may be free.
fn release_ip(ips: &Mutex<PodIps>, addresses: &Notify, uid: &str) {
    ips.lock().unwrap_or_else(|e| e.into_inner()).release(uid);
    addresses.notify_one();
}

/// The pod's IP: the one it already has (assigned earlier, or in its status), else a new one.
fn pod_ip(ips: &Mutex<PodIps>, pod: &Pod) -> Option<IpAddr> {
    let existing = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_ref())
        .and_then(|ip| ip.parse::<IpAddr>().ok());
    ips.lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&pod.uid()?, existing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_pods_are_retried_soon_then_at_most_every_30_s() {
        let waits: Vec<u64> = (1..=8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_delay(u32::MAX), Duration::from_secs(30));
    }
}
