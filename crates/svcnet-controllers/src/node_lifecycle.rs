//! Node lifecycle, as kube-controller-manager's node lifecycle and taint eviction controllers run it.
//!
//! * **Monitor** (every `--node-monitor-period`): a node whose Lease in `kube-node-lease` was not renewed
//!   within `--node-monitor-grace-period` gets `Ready=Unknown` ("NodeStatusUnknown", "Kubelet stopped
//!   posting node status."), a `NodeNotReady` Event, and its pods `Ready=False`, so their endpoints leave
//!   every data plane at once instead of when each connection times out.
//! * **Taints**: the Ready condition is mirrored into taints, `node.kubernetes.io/unreachable` (Unknown)
//!   or `…/not-ready` (False), each `NoSchedule` (the scheduler keeps new pods away) and `NoExecute`
//!   (pods already there are evicted), plus `…/unschedulable:NoSchedule` for a cordoned node; they go
//!   when the node is Ready again. New `NoExecute` taints are rate limited per zone by the zone's state
//!   ([`crate::disruption`]: `--node-eviction-rate`, none in a small zone that lost most of its nodes),
//!   and while every zone is down nothing gets one (kube's "master disruption" mode: then the control
//!   plane's view is the likelier fault).
//! * **Node agents' own endpoints** (each agent's cluster DNS, published for `kube-system/kube-dns` in
//!   a slice managed by `svcnet-agent`; in Kubernetes those would be CoreDNS pods, marked not ready with
//!   the rest): ready only while their node is Ready, so DNS queries stop going to a dead node.
//! * **Eviction**: a pod on a node with `NoExecute` taints is deleted once its tolerations run out
//!   (the shortest `tolerationSeconds` that applies, counted from when the controller first saw it
//!   tainted; at once without a toleration), after a `DisruptionTarget` condition says why, so its
//!   ReplicaSet replaces it elsewhere. Admission gives every pod 300 s tolerations for both taints.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use svcnet_informer::Store;

use crate::disruption::{EvictionRates, Zones, zone_key};
use crate::events::{Involved, Recorder};
use crate::taints::{self, NO_EXECUTE};

/// The label naming who manages an EndpointSlice.
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// The manager of the slices node agents publish for themselves (`svcnet_dns::publish`).
const AGENT_MANAGER: &str = "svcnet-agent";

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// A pod the eviction pass is counting down for.
struct Countdown {
    namespace: String,
    name: String,
    /// When the controller first saw the pod on a `NoExecute`-tainted node.
    since: Instant,
    /// The pod was deleted (waiting for the cache to show it).
    deleted: bool,
}

/// The node lifecycle and taint eviction controllers' state.
pub(crate) struct Lifecycle {
    client: Client,
    grace: Duration,
    node_events: Recorder,
    pod_events: Recorder,
    countdowns: HashMap<String, Countdown>,
    rates: EvictionRates,
    zones: Zones,
    /// Every zone was down at the last pass (logged once per episode).
    all_down: bool,
}

impl Lifecycle {
    pub(crate) fn new(client: Client, grace: Duration, rates: EvictionRates) -> Self {
        Self {
            node_events: Recorder::new(client.clone(), "node-controller"),
            pod_events: Recorder::new(client.clone(), "taint-eviction-controller"),
            client,
            grace,
            countdowns: HashMap::new(),
            rates,
            zones: Zones::default(),
            all_down: false,
        }
    }

    /// One monitor pass: lease expiry, then the taints every node's conditions call for.
    pub(crate) async fn monitor(&mut self, nodes: &Store<Node>, leases: &Store<Lease>, pods: &Store<Pod>) {
        let at = jiff::Timestamp::now();
        let grace = jiff::SignedDuration::try_from(self.grace).unwrap_or_default();
        let renewals: HashMap<String, jiff::Timestamp> = leases
            .state()
            .iter()
            .filter_map(|l| Some((l.name_any(), l.spec.as_ref()?.renew_time.as_ref()?.0)))
            .collect();
        let mut current: Vec<Arc<Node>> = Vec::new();
        for node in nodes.state() {
            let name = node.name_any();
            let (expired, never) = match renewals.get(&name) {
                Some(t) => (at.duration_since(*t) > grace, false),
                // Never renewed: judged by the node's age, so a node that is registering is not condemned.
                None => (
                    node.metadata
                        .creation_timestamp
                        .as_ref()
                        .is_some_and(|c| at.duration_since(c.0) > grace),
                    true,
                ),
            };
            if !expired || taints::ready_status(&node) == Some("Unknown") {
                current.push(node);
                continue;
            }
            current.push(self.mark_unknown(&node, never, pods).await.unwrap_or(node));
        }
        // Zones judged by how many of their nodes are Ready; every zone down: the fault is more likely
        // ours than theirs, and nothing is evicted.
        let keys: Vec<(String, bool)> = current
            .iter()
            .map(|n| (zone_key(n), taints::ready_status(n) == Some("True")))
            .collect();
        let clock = std::time::Instant::now();
        let judgement = self
            .zones
            .judge(keys.iter().map(|(z, r)| (z.as_str(), *r)), &self.rates, clock);
        for (zone, state) in &judgement.changed {
            info!(zone = %zone.replace('\0', ""), %state, "zone state changed");
        }
        if judgement.all_down != self.all_down {
            if judgement.all_down {
                warn!(
                    "every node is not Ready: entering master disruption mode (no NoExecute taints, no evictions)"
                );
            } else {
                info!("a node is Ready again: leaving master disruption mode");
            }
            self.all_down = judgement.all_down;
        }
        for (node, (zone, _)) in current.iter().zip(&keys) {
            // A node's first NoExecute taint waits for its zone's rate; swapping one for the other
            // (unreachable ↔ not-ready) does not.
            let mut no_execute = !judgement.all_down;
            if no_execute && taints::needs_new_no_execute(node) && !self.zones.admit(zone, clock) {
                debug!(node = %node.name_any(), "NoExecute taint waits for the zone's eviction rate");
                no_execute = false;
            }
            self.reconcile_taints(node, no_execute).await;
        }
        self.agent_endpoints(&current).await;
    }

    /// Makes the endpoints node agents publish for themselves ready exactly while their node is Ready.
    async fn agent_endpoints(&self, nodes: &[Arc<Node>]) {
        let ready: HashMap<String, bool> = nodes
            .iter()
            .map(|n| (n.name_any(), taints::ready_status(n) == Some("True")))
            .collect();
        let api: Api<EndpointSlice> = Api::namespaced(self.client.clone(), "kube-system");
        let params = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={AGENT_MANAGER}"));
        let slices = match api.list(&params).await {
            Ok(l) => l.items,
            Err(e) => {
                debug!(error = %e, "listing node agents' EndpointSlices failed");
                return;
            }
        };
        for mut slice in slices {
            let mut changed = false;
            for e in &mut slice.endpoints {
                let Some(want) = e.node_name.as_ref().and_then(|n| ready.get(n)).copied() else {
                    continue;
                };
                let c = e.conditions.get_or_insert_with(Default::default);
                if c.ready != Some(want) || c.serving != Some(want) {
                    c.ready = Some(want);
                    c.serving = Some(want);
                    changed = true;
                }
            }
            if !changed {
                continue;
            }
            let name = slice.name_any();
            slice.metadata.managed_fields = None;
            match api.replace(&name, &PostParams::default(), &slice).await {
                Ok(_) => info!(slice = %name, "node agent's endpoints follow their node's readiness"),
                Err(e) => debug!(slice = %name, error = %e, "updating a node agent's EndpointSlice failed"),
            }
        }
    }

    /// Sets the node's Ready condition (and any other) to Unknown and its pods' Ready to False.
    async fn mark_unknown(&mut self, node: &Node, never: bool, pods: &Store<Pod>) -> Option<Arc<Node>> {
        let name = node.name_any();
        info!(node = %name, "node lease expired; marking NotReady");
        let ts = now();
        let (reason, message) = if never {
            ("NodeStatusNeverUpdated", "Kubelet never posted node status.")
        } else {
            ("NodeStatusUnknown", "Kubelet stopped posting node status.")
        };
        // Every condition the node reported, Ready first; lastHeartbeatTime stays the last real one.
        let mut types: Vec<String> = vec!["Ready".into()];
        for c in node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .into_iter()
            .flatten()
        {
            if !types.contains(&c.type_) {
                types.push(c.type_.clone());
            }
        }
        let conditions: Vec<serde_json::Value> = types
            .iter()
            .map(|t| {
                json!({"type": t, "status": "Unknown", "reason": reason, "message": message,
                "lastTransitionTime": ts})
            })
            .collect();
        let patch = json!({"status": {"conditions": conditions}});
        let api: Api<Node> = Api::all(self.client.clone());
        let updated = match api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch))
            .await
        {
            Ok(n) => n,
            Err(e) => {
                warn!(node = %name, error = %e, "marking node NotReady failed");
                return None;
            }
        };
        let msg = format!("Node {name} status is now: NodeNotReady");
        self.node_events
            .record(
                &Involved::of("v1", "Node", &node.metadata),
                "Normal",
                "NodeNotReady",
                &msg,
            )
            .await;
        for pod in pods
            .state()
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
        {
            let pods_api: Api<Pod> =
                Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
            let patch = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": ts}]}});
            if let Err(e) = pods_api
                .patch_status(
                    &pod.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                debug!(pod = %pod.name_any(), error = %e, "marking pod unready failed");
            }
        }
        Some(Arc::new(updated))
    }

    /// Gives the node the controller taints its conditions call for and removes the others it had,
    /// leaving everyone else's taints alone. Written with the node's resourceVersion: a concurrent
    /// change (`kubectl taint`) makes it fail, and the next pass tries again.
    async fn reconcile_taints(&mut self, node: &Node, no_execute: bool) {
        let want: BTreeSet<(&str, &str)> = taints::controller_taints(node, no_execute).into_iter().collect();
        let have: BTreeSet<(&str, &str)> = taints::taints(node)
            .iter()
            .filter(|t| taints::is_controller_taint(t))
            .map(|t| (t.key.as_str(), t.effect.as_str()))
            .collect();
        if want == have {
            return;
        }
        let name = node.name_any();
        let api: Api<Node> = Api::all(self.client.clone());
        let mut fresh = match api.get(&name).await {
            Ok(n) => n,
            Err(e) => {
                debug!(node = %name, error = %e, "reading node for its taints failed");
                return;
            }
        };
        let now = Time(jiff::Timestamp::now());
        let spec = fresh.spec.get_or_insert_with(Default::default);
        let mut list: Vec<Taint> = spec
            .taints
            .take()
            .unwrap_or_default()
            .into_iter()
            .filter(|t| {
                !taints::is_controller_taint(t) || want.contains(&(t.key.as_str(), t.effect.as_str()))
            })
            .collect();
        for (key, effect) in &want {
            if !list.iter().any(|t| t.key == *key && t.effect == *effect) {
                list.push(Taint {
                    key: key.to_string(),
                    value: None,
                    effect: effect.to_string(),
                    time_added: Some(now.clone()),
                });
            }
        }
        spec.taints = (!list.is_empty()).then_some(list);
        match api.replace(&name, &PostParams::default(), &fresh).await {
            Ok(_) => info!(node = %name, taints = ?want, "node taints updated"),
            Err(e) => debug!(node = %name, error = %e, "updating node taints failed; next pass retries"),
        }
    }

    /// One eviction pass; returns when the next countdown ends, if any runs.
    pub(crate) async fn evict(&mut self, nodes: &Store<Node>, pods: &Store<Pod>) -> Option<Instant> {
        let tainted: HashMap<String, Vec<Taint>> = nodes
            .state()
            .iter()
            .filter_map(|n| {
                let t: Vec<Taint> = taints::taints(n)
                    .iter()
                    .filter(|t| t.effect == NO_EXECUTE)
                    .cloned()
                    .collect();
                (!t.is_empty()).then(|| (n.name_any(), t))
            })
            .collect();
        if tainted.is_empty() && self.countdowns.is_empty() {
            return None;
        }
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        let mut counting: HashSet<String> = HashSet::new();
        let mut due = Vec::new();
        for pod in pods.state() {
            if pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let Some(node_taints) = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .and_then(|n| tainted.get(n))
            else {
                continue;
            };
            let refs: Vec<&Taint> = node_taints.iter().collect();
            let Some(time) = taints::toleration_time(&refs, taints::tolerations(&pod)) else {
                continue;
            };
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            counting.insert(uid.clone());
            let c = self.countdowns.entry(uid.clone()).or_insert_with(|| Countdown {
                namespace: pod.namespace().unwrap_or_default(),
                name: pod.name_any(),
                since: now,
                deleted: false,
            });
            if c.deleted {
                continue;
            }
            let at = c.since + time;
            if at <= now {
                due.push((uid, pod));
            } else {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        // Countdowns of pods no longer on a tainted node (or tolerating it for good now) end quietly
        // if the pod is gone, with an Event if it stays.
        let ended: Vec<String> = self
            .countdowns
            .keys()
            .filter(|k| !counting.contains(*k))
            .cloned()
            .collect();
        for uid in ended {
            let Some(c) = self.countdowns.remove(&uid) else {
                continue;
            };
            if let Some(pod) = pods.get_named(&c.namespace, &c.name).filter(|p| {
                !c.deleted
                    && p.metadata.uid.as_deref() == Some(uid.as_str())
                    && p.metadata.deletion_timestamp.is_none()
            }) {
                let msg = format!("Cancelling deletion of Pod {}/{}", c.namespace, c.name);
                let about = Involved::of("v1", "Pod", &pod.metadata);
                self.pod_events
                    .record(&about, "Normal", "TaintManagerEviction", &msg)
                    .await;
            }
        }
        for (uid, pod) in due {
            if self.delete(&uid, &pod).await
                && let Some(c) = self.countdowns.get_mut(&uid)
            {
                c.deleted = true;
            }
        }
        next
    }

    /// Deletes a pod whose tolerations ran out, saying why first (kube's `DisruptionTarget` condition).
    async fn delete(&mut self, uid: &str, pod: &Pod) -> bool {
        let (ns, name) = (pod.namespace().unwrap_or_default(), pod.name_any());
        info!(pod = %format!("{ns}/{name}"), "evicting pod from a NoExecute-tainted node");
        let about = Involved::of("v1", "Pod", &pod.metadata);
        let msg = format!("Marking for deletion Pod {ns}/{name}");
        self.pod_events
            .record(&about, "Normal", "TaintManagerEviction", &msg)
            .await;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let cond = json!({"status": {"conditions": [{"type": "DisruptionTarget", "status": "True",
            "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint",
            "lastTransitionTime": now()}]}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&cond))
            .await
        {
            debug!(pod = %name, error = %e, "adding the DisruptionTarget condition failed");
        }
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        match api.delete(&name, &params).await {
            Ok(_) => true,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => true,
            Err(e) => {
                warn!(pod = %name, error = %e, "evicting pod failed; retrying");
                false
            }
        }
    }
}
