//! Nodes and where pods go: three small control loops of kube-controller-manager and kube-scheduler.
//!
//! * **Node IPAM**: every Node gets a `spec.podCIDR` carved from `--cluster-cidr` (one `/mask` block per
//!   node), as the node IPAM controller's range allocator hands them out.
//! * **Node lifecycle** ([`crate::node_lifecycle`]): lease expiry, the taints conditions call for,
//!   and taint-based eviction; pods bound to a Node that no longer exists are deleted (kube's pod garbage
//!   collector), so their controllers replace them.
//! * **Scheduler**: a pod with no `spec.nodeName` (and the default scheduler) is bound to a Ready,
//!   schedulable node whose labels match its `nodeSelector` and whose `NoSchedule`/`NoExecute` taints it
//!   tolerates, fewest pods first; with no such node it stays Pending with
//!   `PodScheduled=False`/`Unschedulable` and a `FailedScheduling` Event.
//!
//! All three react to watch events; lease expiry is checked every `--node-monitor-period` because it
//! is, by nature, the absence of an event, and evictions wake when the next toleration runs out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use ipnet::IpNet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;
use tracing::{debug, info, warn};

use svcnet_informer::{Informer, Store};

use crate::SharedInformers;
use crate::events::{Involved, Recorder};
use crate::node_lifecycle::Lifecycle;
use crate::taints;

/// Settings of the node controllers.
#[derive(Debug, Clone)]
pub struct NodeControllersConfig {
    /// The cluster's pod address range (`--cluster-cidr`).
    pub cluster_cidr: IpNet,
    /// The prefix length of each node's block (`--node-cidr-mask-size`, 24 by default).
    pub node_mask: u8,
    /// How long a node may go without renewing its Lease before it is NotReady (40 s in Kubernetes).
    pub grace: Duration,
    /// How often leases are checked (`--node-monitor-period`, 5 s in Kubernetes).
    pub monitor_period: Duration,
    /// How fast nodes of a zone may be tainted `NoExecute` (kube's eviction rate flags).
    pub eviction: crate::disruption::EvictionRates,
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

fn pod_active(p: &Pod) -> bool {
    let phase = p
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("Pending");
    phase != "Succeeded" && phase != "Failed"
}

fn now() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default()
}

/// The active pods bound to each node (counted once per scheduling pass, not once per pod and node: with
/// thousands of pods created at once that would be quadratic).
pub fn node_load(pods: &[Arc<Pod>]) -> HashMap<String, usize> {
    let mut load: HashMap<String, usize> = HashMap::new();
    for p in pods.iter().filter(|p| pod_active(p)) {
        if let Some(n) = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .filter(|n| !n.is_empty())
        {
            *load.entry(n.to_string()).or_default() += 1;
        }
    }
    load
}

/// Picks a node for `pod` among `nodes`, or explains why none fits (kube-scheduler's message form: each
/// node counted under the first filter it fails, in kube's filter order, the reasons sorted).
/// `load` counts each node's active pods ([`node_load`]), including those this pass already placed.
pub fn pick_node(pod: &Pod, nodes: &[Arc<Node>], load: &HashMap<String, usize>) -> Result<String, String> {
    let selector: BTreeMap<String, String> = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_selector.clone())
        .unwrap_or_default();
    let tolerations = taints::tolerations(pod);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut candidates = Vec::new();
    // What a cordoned node and one not Ready stand for, whether or not the lifecycle controller has
    // tainted them yet.
    let cordon = k8s_openapi::api::core::v1::Taint {
        key: taints::UNSCHEDULABLE.into(),
        effect: taints::NO_SCHEDULE.into(),
        ..Default::default()
    };
    let not_ready = k8s_openapi::api::core::v1::Taint {
        key: taints::NOT_READY.into(),
        effect: taints::NO_SCHEDULE.into(),
        ..Default::default()
    };
    for n in nodes {
        let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
        let reason = if cordoned && !tolerations.iter().any(|t| taints::tolerates(t, &cordon)) {
            Some("node(s) were unschedulable".to_string())
        } else if let Some(t) = taints::untolerated_for_scheduling(taints::taints(n), tolerations) {
            Some(format!(
                "node(s) had untolerated taint {{{}: {}}}",
                t.key,
                t.value.as_deref().unwrap_or("")
            ))
        } else if !node_ready(n) && !tolerations.iter().any(|t| taints::tolerates(t, &not_ready)) {
            // A node that is not Ready before the lifecycle controller tainted it (kube's kubelet
            // registers with this taint).
            Some(format!(
                "node(s) had untolerated taint {{{}: }}",
                taints::NOT_READY
            ))
        } else if !selector.iter().all(|(k, v)| n.labels().get(k) == Some(v)) {
            Some("node(s) didn't match Pod's node affinity/selector".to_string())
        } else {
            None
        };
        match reason {
            Some(r) => *reasons.entry(r).or_default() += 1,
            None => {
                let name = n.name_any();
                candidates.push((load.get(&name).copied().unwrap_or(0), name));
            }
        }
    }
    candidates.sort();
    if let Some((_, name)) = candidates.into_iter().next() {
        return Ok(name);
    }
    let mut reasons: Vec<String> = reasons.into_iter().map(|(r, n)| format!("{n} {r}")).collect();
    reasons.sort();
    let mut msg = format!("0/{} nodes are available", nodes.len());
    if !reasons.is_empty() {
        msg.push_str(": ");
        msg.push_str(&reasons.join(", "));
    }
    msg.push('.');
    Err(msg)
}

/// Hands out node pod CIDRs: the first block of `cluster` not in `used`.
pub fn next_pod_cidr(cluster: &IpNet, mask: u8, used: &HashSet<IpNet>) -> Option<IpNet> {
    cluster.subnets(mask).ok()?.find(|s| !used.contains(s))
}

/// Runs the three node loops until dropped. Nodes and pods come from the process's shared informers
/// (their caches are complete once [`svcnet_informer::Store::is_synced`]); Leases have an informer of
/// their own.
///
/// The node loops write as [`crate::identity::NODE`], the scheduler as [`crate::identity::SCHEDULER`];
/// node Leases are watched through the shared informers' client (kube's node-controller role may not
/// list them: its lifecycle controller reads them from the shared informer factory).
pub async fn run_node_controllers(
    clients: crate::Clients,
    informers: SharedInformers,
    cfg: NodeControllersConfig,
) {
    let client = clients.get(crate::identity::NODE);
    let scheduler = clients.get(crate::identity::SCHEDULER);
    let leases = Informer::<Lease>::new(crate::trim_managed_fields);
    leases.spawn(Api::namespaced(informers.watcher_or(&client), "kube-node-lease"));
    let node_store = informers.nodes.store();
    let pod_store = informers.pods.store();
    let lease_store = leases.store();
    let mut node_events = informers.nodes.subscribe();
    let mut pod_events = informers.pods.subscribe();
    let wake = Arc::new(Notify::new());

    let w = wake.clone();
    let ipam_client = client.clone();
    let ipam_cfg = cfg.clone();
    let ipam_nodes = node_store.clone();
    tokio::spawn(async move {
        // Blocks this loop handed out, by node.
        let mut assigned: HashMap<String, IpNet> = HashMap::new();
        // The node IPAM's name in Events, as kube-controller-manager's range allocator signs them.
        let mut recorder = Recorder::new(ipam_client.clone(), "cidrAllocator");
        // Nodes told that no block is left (once each).
        let mut starved: HashSet<String> = HashSet::new();
        while node_events.next().await.is_some() {
            w.notify_one();
            // Blocks are handed out only from a complete cache: the informer swaps a (re)list in whole
            // and sends no event before the first one is in, so a block is never chosen from a partial
            // view (where it could be one a node not yet seen already has). Every event (a new node, a
            // deletion freeing a block, a list) looks at every node still without a block, those waiting
            // included: nodes are few and their events rare, and a node that missed its turn gets no
            // event of its own later (agents renew Leases, not Nodes). A burst (a list) is one look.
            while node_events.try_recv().is_some() {}
            if !ipam_nodes.is_synced() {
                continue;
            }
            let nodes = ipam_nodes.state();
            let pod_cidr = |n: &Node| n.spec.as_ref().and_then(|s| s.pod_cidr.clone());
            // Blocks handed out stay remembered only until the cache shows them (or the node is gone:
            // a node of the same name created again is a new node and needs a block of its own).
            assigned.retain(|name, _| {
                nodes
                    .iter()
                    .any(|n| n.name_any() == *name && pod_cidr(n).is_none())
            });
            let mut used: HashSet<IpNet> = nodes
                .iter()
                .filter_map(|n| pod_cidr(n)?.parse().ok())
                .chain(assigned.values().copied())
                .collect();
            let todo: Vec<Arc<Node>> = nodes
                .into_iter()
                .filter(|n| pod_cidr(n).is_none() && !assigned.contains_key(&n.name_any()))
                .collect();
            starved.retain(|n| todo.iter().any(|t| t.name_any() == *n));
            for node in todo {
                let name = node.name_any();
                match assign_pod_cidr(&ipam_client, &ipam_cfg, &name, &used).await {
                    Assignment::Given(cidr) => {
                        used.insert(cidr);
                        assigned.insert(name.clone(), cidr);
                        starved.remove(&name);
                    }
                    Assignment::Failed => {
                        starved.remove(&name);
                    }
                    Assignment::NoneLeft => {
                        if starved.insert(name.clone()) {
                            warn!(node = %name, cluster_cidr = %ipam_cfg.cluster_cidr, "no pod CIDR left for node");
                            let about = Involved::of("v1", "Node", &node.metadata);
                            let msg = format!("Node {name} status is now: CIDRNotAvailable");
                            recorder.record(&about, "Normal", "CIDRNotAvailable", &msg).await;
                        }
                    }
                }
            }
        }
    });
    let w = wake.clone();
    let known_nodes = node_store.clone();
    tokio::spawn(async move {
        while let Some(event) = pod_events.next().await {
            if wakes_node_loop(&event, &known_nodes) {
                w.notify_one();
            }
        }
    });

    let mut recorder = Recorder::new(scheduler.clone(), "default-scheduler");
    let mut reported: HashMap<String, String> = HashMap::new();
    let mut lifecycle = Lifecycle::new(client.clone(), cfg.grace, cfg.eviction);
    let mut tick = tokio::time::interval(cfg.monitor_period.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // When the next toleration of a pod on a NoExecute-tainted node runs out.
    let mut next_eviction: Option<tokio::time::Instant> = None;
    loop {
        let eviction_due = async move {
            match next_eviction {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = wake.notified() => {}
            _ = eviction_due => {}
            _ = tick.tick() => {
                // Only from complete caches: a node whose Lease is not listed yet would look expired.
                if node_store.is_synced() && lease_store.is_synced() && pod_store.is_synced() {
                    lifecycle.monitor(&node_store, &lease_store, &pod_store).await;
                }
            }
        }
        node_store.wait_until_synced().await;
        pod_store.wait_until_synced().await;
        schedule(&scheduler, &node_store, &pod_store, &mut recorder, &mut reported).await;
        collect_orphans(&client, &node_store, &pod_store).await;
        next_eviction = lifecycle.evict(&node_store, &pod_store).await;
    }
}

/// Whether a pod event can give the scheduler, the orphan collector or the eviction work: a pod waiting
/// for a node, a pod bound to a node that does not exist or carries a `NoExecute` taint, a deletion
/// (capacity freed for waiting pods), a list. Status writes of pods on healthy nodes, which are nearly
/// all pod events, do not wake the loop: each pass reads every pod, so waking on them made a burst of N
/// pod events cost N × N.
fn wakes_node_loop(event: &svcnet_informer::Event<Pod>, nodes: &Store<Node>) -> bool {
    match event {
        svcnet_informer::Event::Apply { obj, .. } => {
            match obj.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
                None | Some("") => true,
                Some(node) => nodes
                    .get_named("", node)
                    .is_none_or(|n| taints::taints(&n).iter().any(|t| t.effect == taints::NO_EXECUTE)),
            }
        }
        svcnet_informer::Event::Delete(_) | svcnet_informer::Event::Listed => true,
    }
}

/// What giving a node a pod block came to.
enum Assignment {
    /// The node has this block now.
    Given(IpNet),
    /// Every block of the cluster range is in use.
    NoneLeft,
    /// The API refused the write (tried again on the next node event).
    Failed,
}

/// Gives the node `name` the first block of the cluster range not in `used`.
async fn assign_pod_cidr(
    client: &Client,
    cfg: &NodeControllersConfig,
    name: &str,
    used: &HashSet<IpNet>,
) -> Assignment {
    let Some(cidr) = next_pod_cidr(&cfg.cluster_cidr, cfg.node_mask, used) else {
        debug!(node = %name, cluster_cidr = %cfg.cluster_cidr, "no pod CIDR left for node");
        return Assignment::NoneLeft;
    };
    let api: Api<Node> = Api::all(client.clone());
    let patch = json!({"spec": {"podCIDR": cidr.to_string(), "podCIDRs": [cidr.to_string()]}});
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {
            info!(node = %name, %cidr, "assigned pod CIDR");
            Assignment::Given(cidr)
        }
        Err(e) => {
            warn!(node = %name, error = %e, "assigning pod CIDR failed");
            Assignment::Failed
        }
    }
}

async fn schedule(
    client: &Client,
    nodes: &Store<Node>,
    pods: &Store<Pod>,
    recorder: &mut Recorder,
    reported: &mut HashMap<String, String>,
) {
    let all_pods = pods.state();
    let waiting = |pod: &Pod| {
        pod.spec.as_ref().is_some_and(|spec| {
            spec.node_name.as_deref().is_none_or(|n| n.is_empty())
                && pod.metadata.deletion_timestamp.is_none()
                && spec
                    .scheduler_name
                    .as_deref()
                    .is_none_or(|s| s == "default-scheduler")
        })
    };
    // Most passes (every pod status write wakes one) find nothing to place: counting every node's pods
    // then would make a burst of N pod events cost N × N.
    if !all_pods.iter().any(|p| waiting(p)) {
        return;
    }
    let all_nodes = nodes.state();
    let mut load = node_load(&all_pods);
    for pod in all_pods.iter() {
        if !waiting(pod) {
            continue;
        }
        let ns = pod.namespace().unwrap_or_default();
        let name = pod.name_any();
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let involved = Involved::of("v1", "Pod", &pod.metadata);
        match pick_node(pod, &all_nodes, &load) {
            Ok(node) => {
                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name},
                    "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                match api
                    .create_subresource::<serde_json::Value, serde_json::Value>(
                        "binding",
                        &name,
                        &PostParams::default(),
                        &binding,
                    )
                    .await
                {
                    Ok(_) => {
                        // The snapshot cannot show this binding yet.
                        *load.entry(node.clone()).or_default() += 1;
                        reported.remove(&format!("{ns}/{name}"));
                        let cond = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": now()}]}});
                        let _ = api
                            .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&cond))
                            .await;
                        recorder
                            .record(
                                &involved,
                                "Normal",
                                "Scheduled",
                                &format!("Successfully assigned {ns}/{name} to {node}"),
                            )
                            .await;
                    }
                    Err(e) => debug!(pod = %name, error = %e, "binding failed; will retry"),
                }
            }
            Err(msg) => {
                let key = format!("{ns}/{name}");
                if reported.get(&key) == Some(&msg) {
                    continue;
                }
                let cond = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False",
                    "reason": "Unschedulable", "message": msg, "lastTransitionTime": now()}]}});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Strategic(&cond))
                    .await;
                recorder
                    .record(&involved, "Warning", "FailedScheduling", &msg)
                    .await;
                reported.insert(key, msg);
            }
        }
    }
}

async fn collect_orphans(client: &Client, nodes: &Store<Node>, pods: &Store<Pod>) {
    let names: HashSet<String> = nodes.state().iter().map(|n| n.name_any()).collect();
    for pod in pods.state() {
        let Some(node) = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .filter(|n| !n.is_empty())
        else {
            continue;
        };
        if names.contains(&node) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        info!(pod = %pod.name_any(), %node, "pod bound to a node that no longer exists; deleting");
        // Forced, as kube's pod garbage collector does: no node is left to finish a graceful delete.
        let force = DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::background()
        };
        let _ = api.delete(&pod.name_any(), &force).await;
    }
}

/// Whether an address belongs to a node's pod CIDR (helper for agents and tests).
pub fn in_cidr(cidr: &str, ip: IpAddr) -> bool {
    cidr.parse::<IpNet>().is_ok_and(|c| c.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: bool, labels: &[(&str, &str)]) -> Arc<Node> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name,
                "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
                "status": {"conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}}))
            .unwrap(),
        )
    }

    fn pod(name: &str, node: Option<&str>, selector: &[(&str, &str)]) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default"},
                "spec": {"nodeName": node, "containers": [],
                    "nodeSelector": selector.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()}}))
            .unwrap(),
        )
    }

    #[test]
    fn fewest_pods_first_and_selector_respected() {
        let nodes = vec![
            node("a", true, &[("zone", "x")]),
            node("b", true, &[("zone", "y")]),
            node("c", false, &[]),
        ];
        let pods = vec![pod("p1", Some("a"), &[]), pod("p2", Some("a"), &[])];
        let mut load = node_load(&pods);
        assert_eq!(load, [("a".to_string(), 2)].into());
        assert_eq!(pick_node(&pod("new", None, &[]), &nodes, &load).unwrap(), "b");
        assert_eq!(
            pick_node(&pod("new", None, &[("zone", "x")]), &nodes, &load).unwrap(),
            "a"
        );
        let err = pick_node(&pod("new", None, &[("zone", "z")]), &nodes, &load).unwrap_err();
        // Placements made earlier in the same pass count: b now carries as much as a.
        load.insert("b".to_string(), 2);
        assert_eq!(pick_node(&pod("new", None, &[]), &nodes, &load).unwrap(), "a");
        assert_eq!(
            err,
            "0/3 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, 2 node(s) didn't match Pod's node affinity/selector."
        );
    }

    #[test]
    fn taints_keep_pods_away_unless_tolerated() {
        let mut tainted: Node = (*node("a", true, &[])).clone();
        tainted.spec = Some(
            serde_json::from_value(json!({"taints": [
            {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
            {"key": "soft", "effect": "PreferNoSchedule"}]}))
            .unwrap(),
        );
        let mut cordoned: Node = (*node("b", true, &[])).clone();
        cordoned.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
        let nodes = vec![Arc::new(tainted), Arc::new(cordoned)];
        let load = HashMap::new();
        let err = pick_node(&pod("p", None, &[]), &nodes, &load).unwrap_err();
        assert_eq!(
            err,
            "0/2 nodes are available: 1 node(s) had untolerated taint {node.kubernetes.io/unreachable: }, 1 node(s) were unschedulable."
        );
        let mut tolerant = (*pod("p", None, &[])).clone();
        tolerant.spec.as_mut().unwrap().tolerations = Some(vec![
            serde_json::from_value(json!({"key": "node.kubernetes.io/unreachable", "operator": "Exists"}))
                .unwrap(),
        ]);
        assert_eq!(pick_node(&tolerant, &nodes, &load).unwrap(), "a");
    }

    #[test]
    fn the_cached_pod_keeps_what_scheduling_reads() {
        let mut p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1", "labels": {"app": "x"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"nodeSelector": {"zone": "x"}, "schedulerName": "default-scheduler",
                "containers": [{"name": "c", "image": "i", "command": ["sleep", "1d"]}],
                "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true,
                    "restartCount": 0}]}
        }))
        .unwrap();
        crate::trim_shared_pod(&mut p);
        assert_eq!(p.metadata.uid.as_deref(), Some("u1"));
        assert_eq!(p.labels().get("app").map(String::as_str), Some("x"));
        assert!(p.metadata.annotations.is_none() && p.metadata.managed_fields.is_none());
        let spec = p.spec.as_ref().unwrap();
        assert!(
            spec.containers[0].image.is_none()
                && spec.containers[0].command.is_none()
                && spec.volumes.is_none()
        );
        assert_eq!(
            spec.node_selector,
            Some([("zone".to_string(), "x".to_string())].into())
        );
        let status = p.status.as_ref().unwrap();
        assert!(status.container_statuses.as_ref().unwrap()[0].image_id.is_empty());
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.conditions.as_ref().map(Vec::len), Some(1));
        let nodes = vec![node("a", true, &[("zone", "x")]), node("b", true, &[])];
        assert_eq!(pick_node(&p, &nodes, &HashMap::new()).unwrap(), "a");
    }

    #[test]
    fn pod_cidrs_are_handed_out_in_order() {
        let cluster: IpNet = "127.244.0.0/16".parse().unwrap();
        let mut used = HashSet::new();
        let a = next_pod_cidr(&cluster, 24, &used).unwrap();
        assert_eq!(a.to_string(), "127.244.0.0/24");
        used.insert(a);
        assert_eq!(
            next_pod_cidr(&cluster, 24, &used).unwrap().to_string(),
            "127.244.1.0/24"
        );
        assert!(in_cidr("127.244.1.0/24", "127.244.1.9".parse().unwrap()));
    }
}
