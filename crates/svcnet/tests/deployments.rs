//! The ReplicaSet and Deployment controllers end to end against a real `svcnet up`: creation,
//! scaling, pod replacement, a rolling update that never drops below the minimum availability, a
//! rollback that reuses the old ReplicaSet, `kubectl rollout status`, and cascading deletion.
//!
//! `svcnet up` does not run the workload controllers yet, so the test runs them in-process against
//! the cluster. The cluster runs without its node agent (`--no-agent`) and the test plays the kubelet:
//! it marks the pods the controllers created `Running` and `Ready` through the `pods/status`
//! subresource, which is exactly what the agent does, but step by step under the test's control.

use std::collections::BTreeSet;
use std::future::Future;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use serde_json::json;
use svcnet_testsupport::Cluster;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

/// Runs kubectl without stalling the runtime's other workers (the controllers run on them).
fn kubectl(c: &Cluster, args: &[&str]) -> String {
    tokio::task::block_in_place(|| c.ok(args))
}

/// Polls `f` until it holds; panics with `what` after `timeout`.
async fn until<F, Fut>(what: &str, timeout: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Pods of the Deployment that are not being deleted.
async fn active_pods(pods: &Api<Pod>, app: &str) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn replicasets(rss: &Api<ReplicaSet>, app: &str) -> Vec<ReplicaSet> {
    let mut v = rss
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list replicasets")
        .items;
    v.sort_by(|a, b| {
        a.metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
    v
}

/// What the kubelet reports once a pod's containers run and pass their readiness probe. Returns the
/// API error, if any (a pod already scaled away is fine).
async fn kubelet_mark_ready(pods: &Api<Pod>, p: &Pod, ip: u8) -> Option<String> {
    let now = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let patch = json!({"status": {
        "phase": "Running",
        "podIP": format!("10.244.0.{ip}"),
        "startTime": now,
        "conditions": [
            {"type": "Initialized", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
        ],
    }});
    let name = p.metadata.name.clone().unwrap();
    match pods
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(p) => Some(format!(
            "ok rv {:?} ready {}",
            p.metadata.resource_version,
            is_ready(&p)
        )),
        Err(e) => Some(e.to_string()),
    }
}

/// Marks every active pod of the app ready.
async fn kubelet_all_ready(pods: &Api<Pod>, app: &str) {
    for (i, p) in active_pods(pods, app).await.iter().enumerate() {
        if !is_ready(p) {
            kubelet_mark_ready(pods, p, (i % 250) as u8 + 2).await;
        }
    }
}

fn replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn revision(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<String> {
    meta.annotations
        .as_ref()?
        .get("deployment.kubernetes.io/revision")
        .cloned()
}

/// The Deployment has observed its spec and has `n` updated, available replicas and no others.
fn rolled_out(d: &Deployment, n: i32) -> bool {
    let st = d.status.clone().unwrap_or_default();
    st.observed_generation >= d.metadata.generation
        && st.updated_replicas.unwrap_or(0) == n
        && st.replicas.unwrap_or(0) == n
        && st.available_replicas.unwrap_or(0) == n
}

async fn wait_rolled_out(deploys: &Api<Deployment>, pods: &Api<Pod>, name: &str, n: i32) {
    until(
        &format!("{name} rolled out at {n}"),
        Duration::from_secs(60),
        || async {
            kubelet_all_ready(pods, name).await;
            let d = deploys.get(name).await.unwrap();
            // The status may still describe the pods before the last change: also look at the pods.
            let active = active_pods(pods, name).await;
            rolled_out(&d, n) && active.len() == n as usize && active.iter().all(is_ready)
        },
    )
    .await;
}

/// Plays the kubelet through a rollout, one pod turning ready at a time, and returns the fewest ready
/// pods and the lowest `status.availableReplicas` seen on the way.
async fn drive_rollout(
    deploys: &Api<Deployment>,
    rss: &Api<ReplicaSet>,
    pods: &Api<Pod>,
    name: &str,
    n: i32,
) -> (usize, i32) {
    let (mut min_ready, mut min_available) = (usize::MAX, i32::MAX);
    let start = Instant::now();
    let mut ip = 100u8;
    // What was seen at every step, for the failure message.
    let mut trace = Vec::new();
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "rollout did not finish: {trace:#?}"
        );
        let active = active_pods(pods, name).await;
        let ready = active.iter().filter(|p| is_ready(p)).count();
        min_ready = min_ready.min(ready);
        let d = deploys.get(name).await.unwrap();
        let available = d.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
        min_available = min_available.min(available);
        let sets = replicasets(rss, name).await;
        let detail: Vec<String> = active
            .iter()
            .map(|p| {
                format!(
                    "{}{} rv {:?}",
                    p.metadata.name.as_deref().unwrap_or(""),
                    if is_ready(p) { "+" } else { "-" },
                    p.metadata.resource_version,
                )
            })
            .collect();
        trace.push(format!(
            "ready {ready} of {} pods {detail:?}, status available {available}, sets {:?}",
            active.len(),
            sets.iter()
                .map(|rs| (rs.metadata.name.clone().unwrap(), replicas(rs)))
                .collect::<Vec<_>>()
        ));
        assert!(ready >= n as usize, "ready pods dropped below {n}: {trace:#?}");
        let done = rolled_out(&d, n)
            && sets.iter().filter(|rs| replicas(rs) > 0).count() == 1
            && active.len() == n as usize;
        if done {
            return (min_ready, min_available);
        }
        if let Some(p) = active.iter().find(|p| !is_ready(p)) {
            ip = ip.wrapping_add(1).max(2);
            let err = kubelet_mark_ready(pods, p, ip).await;
            trace.push(format!(
                "kubelet: {} ready ({err:?})",
                p.metadata.name.as_deref().unwrap_or("")
            ));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// The ReplicaSet of that name among `sets`.
fn by_name<'a>(sets: &'a [ReplicaSet], name: &str) -> &'a ReplicaSet {
    sets.iter()
        .find(|rs| rs.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no ReplicaSet {name}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deployment_lifecycle() {
    // Control plane only: the test is the kubelet, and a real agent would report its own pod status.
    let c = Cluster::start_with(SVCNET, &["--no-agent"]);
    let client = c.client().await;
    // The workload controllers are the ones `svcnet up` runs, as API clients.
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let rss: Api<ReplicaSet> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");

    // Create: one ReplicaSet named after the template hash, three pods it controls.
    kubectl(
        &c,
        &["create", "deployment", "web", "--image=nginx:1", "--replicas=3"],
    );
    until("3 pods", Duration::from_secs(30), || async {
        active_pods(&pods, "web").await.len() == 3
    })
    .await;
    let sets = replicasets(&rss, "web").await;
    assert_eq!(sets.len(), 1);
    let rs1 = sets[0].clone();
    let rs1_name = rs1.metadata.name.clone().unwrap();
    let hash = rs1.metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    assert_eq!(rs1_name, format!("web-{hash}"));
    assert!(hash.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    assert_eq!(
        rs1.spec.as_ref().unwrap().selector.match_labels.as_ref().unwrap()["pod-template-hash"],
        hash
    );
    let rs_owner = &rs1.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (rs_owner.kind.as_str(), rs_owner.name.as_str()),
        ("Deployment", "web")
    );
    assert_eq!(rs_owner.controller, Some(true));
    assert_eq!(rs_owner.block_owner_deletion, Some(true));
    assert_eq!(revision(&rs1.metadata).as_deref(), Some("1"));
    for p in active_pods(&pods, "web").await {
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "ReplicaSet");
        assert_eq!(owner.uid, rs1.metadata.uid.clone().unwrap());
        assert_eq!(owner.controller, Some(true));
        assert_eq!(owner.block_owner_deletion, Some(true));
        assert_eq!(p.metadata.labels.as_ref().unwrap()["pod-template-hash"], hash);
        assert!(p.metadata.name.unwrap().starts_with(&format!("{rs1_name}-")));
    }
    wait_rolled_out(&deploys, &pods, "web", 3).await;
    let out = kubectl(&c, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );
    let d = deploys.get("web").await.unwrap();
    assert_eq!(revision(&d.metadata).as_deref(), Some("1"));
    let conds = d.status.unwrap().conditions.unwrap();
    let avail = conds.iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(
        (avail.status.as_str(), avail.reason.as_deref()),
        ("True", Some("MinimumReplicasAvailable"))
    );
    let prog = conds.iter().find(|c| c.type_ == "Progressing").unwrap();
    assert_eq!(prog.reason.as_deref(), Some("NewReplicaSetAvailable"));
    assert_eq!(
        prog.message.as_deref(),
        Some(format!("ReplicaSet \"{rs1_name}\" has successfully progressed.").as_str())
    );
    let rs1_now = rss.get(&rs1_name).await.unwrap();
    let st = rs1_now.status.unwrap();
    assert_eq!(
        (
            st.replicas,
            st.fully_labeled_replicas,
            st.ready_replicas,
            st.available_replicas
        ),
        (3, Some(3), Some(3), Some(3))
    );
    assert_eq!(st.observed_generation, rs1_now.metadata.generation);

    // Scale 3 → 10 → 1 with kubectl (the scale subresource).
    kubectl(&c, &["scale", "deployment/web", "--replicas=10"]);
    wait_rolled_out(&deploys, &pods, "web", 10).await;
    assert_eq!(replicasets(&rss, "web").await.len(), 1);
    kubectl(&c, &["scale", "deployment/web", "--replicas=1"]);
    wait_rolled_out(&deploys, &pods, "web", 1).await;
    kubectl(&c, &["scale", "deployment/web", "--replicas=3"]);
    wait_rolled_out(&deploys, &pods, "web", 3).await;

    // A deleted pod is replaced.
    let victim = active_pods(&pods, "web").await[0].metadata.name.clone().unwrap();
    pods.delete(&victim, &DeleteParams::default()).await.unwrap();
    until("pod replaced", Duration::from_secs(30), || async {
        let ps = active_pods(&pods, "web").await;
        ps.len() == 3 && ps.iter().all(|p| p.metadata.name.as_deref() != Some(&victim))
    })
    .await;
    wait_rolled_out(&deploys, &pods, "web", 3).await;

    // Rolling update: maxSurge 25% → 1, maxUnavailable 25% → 0 of 3, so 3 pods stay ready throughout.
    kubectl(&c, &["set", "image", "deployment/web", "*=nginx:2"]);
    let (min_ready, min_available) = drive_rollout(&deploys, &rss, &pods, "web", 3).await;
    assert!(min_ready >= 3, "ready pods dropped to {min_ready}");
    assert!(min_available >= 3, "availableReplicas dropped to {min_available}");
    let sets = replicasets(&rss, "web").await;
    assert_eq!(sets.len(), 2);
    let rs2 = sets
        .iter()
        .find(|rs| rs.metadata.name.as_deref() != Some(rs1_name.as_str()))
        .unwrap();
    let rs2_name = rs2.metadata.name.clone().unwrap();
    assert_eq!(replicas(by_name(&sets, &rs1_name)), 0);
    assert_eq!(replicas(rs2), 3);
    assert_eq!(revision(&rs2.metadata).as_deref(), Some("2"));
    assert_eq!(
        revision(&deploys.get("web").await.unwrap().metadata).as_deref(),
        Some("2")
    );
    for p in active_pods(&pods, "web").await {
        assert_eq!(p.spec.unwrap().containers[0].image.as_deref(), Some("nginx:2"));
    }

    // kubectl rollout undo restores the template of revision 1: the old ReplicaSet is reused as
    // revision 3.
    let out = kubectl(&c, &["rollout", "undo", "deployment/web"]);
    assert!(out.contains("rolled back"), "{out}");
    let (min_ready, _) = drive_rollout(&deploys, &rss, &pods, "web", 3).await;
    assert!(min_ready >= 3, "ready pods dropped to {min_ready} on undo");
    let sets = replicasets(&rss, "web").await;
    assert_eq!(sets.len(), 2, "no new ReplicaSet on rollback");
    assert_eq!(replicas(by_name(&sets, &rs1_name)), 3);
    assert_eq!(replicas(by_name(&sets, &rs2_name)), 0);
    assert_eq!(
        revision(&by_name(&sets, &rs1_name).metadata).as_deref(),
        Some("3")
    );
    assert_eq!(
        revision(&deploys.get("web").await.unwrap().metadata).as_deref(),
        Some("3")
    );
    let out = kubectl(&c, &["rollout", "status", "deployment/web", "--timeout=60s"]);
    assert!(
        out.contains("deployment \"web\" successfully rolled out"),
        "{out}"
    );

    // kubectl rollout restart changes the template (an annotation): a new revision rolls out.
    kubectl(&c, &["rollout", "restart", "deployment/web"]);
    drive_rollout(&deploys, &rss, &pods, "web", 3).await;
    assert_eq!(replicasets(&rss, "web").await.len(), 3);
    assert_eq!(
        revision(&deploys.get("web").await.unwrap().metadata).as_deref(),
        Some("4")
    );

    // Events as kube records them.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let messages: BTreeSet<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| Some(format!("{} {}", e.reason?, e.message?)))
        .collect();
    let expected = format!("ScalingReplicaSet Scaled up replica set {rs1_name} from 0 to 3");
    assert!(messages.contains(&expected), "{messages:#?}");
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with(&format!("SuccessfulCreate Created pod: {rs1_name}-"))),
        "{messages:#?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("SuccessfulDelete Deleted pod: ")),
        "{messages:#?}"
    );
    assert!(
        messages.contains(&format!(
            "ScalingReplicaSet Scaled down replica set {rs1_name} from 3 to 2"
        )),
        "{messages:#?}"
    );

    // Deleting the Deployment removes its ReplicaSets and pods (garbage collection).
    kubectl(&c, &["delete", "deployment", "web"]);
    until("ReplicaSets and pods gone", Duration::from_secs(60), || async {
        replicasets(&rss, "web").await.is_empty() && active_pods(&pods, "web").await.is_empty()
    })
    .await;
}
