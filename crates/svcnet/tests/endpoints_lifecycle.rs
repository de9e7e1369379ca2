//! User-managed Endpoints, as Kubernetes' endpoints controller treats them: Endpoints named like no
//! Service are left alone (the Conformance test "should test the lifecycle of an Endpoint", driven with
//! kubectl and kube-rs), and only at start-up are Endpoints without a Service removed as leftovers
//! (kube's `checkLeftoverEndpoints`), leader-election locks excepted.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Endpoints;
use kube::api::{Api, DeleteParams, ListParams, PostParams, WatchEvent, WatchParams};
use serde_json::Value;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(30);
const LABEL: &str = "test-endpoint-static=true";

/// The next watch event's type and the Endpoints it carries (bookmarks skipped), within 10 s.
async fn next_event(
    stream: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<Endpoints>>> + Unpin),
) -> (&'static str, Endpoints) {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(WatchEvent::Added(e)))) => return ("ADDED", e),
            Ok(Some(Ok(WatchEvent::Modified(e)))) => return ("MODIFIED", e),
            Ok(Some(Ok(WatchEvent::Deleted(e)))) => return ("DELETED", e),
            Ok(Some(Ok(WatchEvent::Bookmark(_)))) => {}
            other => panic!("watch: {other:?}"),
        }
    }
}

fn exists(c: &Cluster, name: &str) -> bool {
    c.kubectl_v("1.33", &["get", "endpoints", name], None)
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_lifecycle_conformance() {
    let c = Cluster::start(SVCNET);
    let api: Api<Endpoints> = Api::namespaced(c.client().await, "default");
    let rv = api
        .list(&ListParams::default().labels(LABEL))
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut watch = api
        .watch(&WatchParams::default().labels(LABEL), &rv)
        .await
        .unwrap()
        .boxed();

    // Create an Endpoints named like no Service.
    c.ok_v(
        "1.33",
        &["create", "-f", "-"],
        Some("apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: testservice\n  labels: {test-endpoint-static: \"true\"}\nsubsets:\n- addresses: [{ip: 10.0.0.24}]\n  ports: [{name: http, port: 80, protocol: TCP}]\n"),
    );
    let (t, _) = next_event(&mut watch).await;
    assert_eq!(t, "ADDED");
    let all: Value =
        serde_json::from_str(&c.ok(&["get", "endpoints", "-A", "-l", LABEL, "-o", "json"])).unwrap();
    assert_eq!(all["items"].as_array().map(Vec::len), Some(1), "{all:#}");
    // The old controller deleted such Endpoints within a second; Kubernetes' leaves them alone.
    assert!(
        !eventually(Duration::from_secs(3), || !exists(&c, "testservice")),
        "user-managed Endpoints were deleted:\n{}",
        svcnet_testsupport::cluster::tail(&c.log(), 20)
    );

    // Update.
    let mut ep = api.get("testservice").await.unwrap();
    ep.metadata
        .labels
        .get_or_insert_default()
        .insert("test-service".into(), "updated".into());
    api.replace("testservice", &PostParams::default(), &ep)
        .await
        .unwrap();
    let (t, e) = next_event(&mut watch).await;
    assert_eq!(t, "MODIFIED");
    assert_eq!(e.metadata.labels.unwrap()["test-service"], "updated");

    // Patch labels and subsets (a strategic merge patch, as the conformance test sends).
    c.ok(&[
        "patch",
        "endpoints",
        "testservice",
        "-p",
        r#"{"metadata":{"labels":{"test-service":"patched"}},"subsets":[{"addresses":[{"ip":"10.0.0.25"}],"ports":[{"name":"http-test","port":8080,"protocol":"TCP"}]}]}"#,
    ]);
    let (t, _) = next_event(&mut watch).await;
    assert_eq!(t, "MODIFIED");
    let got = c.get_json(&["endpoints", "testservice"]);
    assert_eq!(got["metadata"]["labels"]["test-service"], "patched");
    assert_eq!(got["subsets"][0]["addresses"][0]["ip"], "10.0.0.25");
    assert_eq!(got["subsets"][0]["ports"][0]["port"], 8080);
    // Nobody mirrors Endpoints without a Service.
    let slices = c.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=testservice"]);
    assert_eq!(slices["items"].as_array().map(Vec::len), Some(0), "{slices:#}");

    // Delete the collection by label.
    api.delete_collection(&DeleteParams::default(), &ListParams::default().labels(LABEL))
        .await
        .unwrap();
    let (t, e) = next_event(&mut watch).await;
    assert_eq!((t, e.metadata.name.as_deref()), ("DELETED", Some("testservice")));
    let left = api.list(&ListParams::default().labels(LABEL)).await.unwrap();
    assert!(left.items.is_empty());
}

#[test]
fn leftover_endpoints_are_removed_once_at_start_up() {
    let mut c = Cluster::start(SVCNET);
    c.ok_v(
        "1.33",
        &["apply", "-f", "-"],
        Some(concat!(
            // A selector Service: its Endpoints are the controller's.
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {app: web}\n  ports: [{port: 80}]\n---\n",
            // A Service without a selector and its user-written Endpoints.
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: ext\nspec:\n  ports: [{port: 80}]\n---\n",
            "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: ext\nsubsets:\n- addresses: [{ip: 10.0.0.1}]\n  ports: [{port: 80}]\n---\n",
            // Endpoints of no Service, and a leader-election lock.
            "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: orphan\nsubsets:\n- addresses: [{ip: 10.0.0.2}]\n  ports: [{port: 80}]\n---\n",
            "apiVersion: v1\nkind: Endpoints\nmetadata:\n  name: lock\n  annotations: {control-plane.alpha.kubernetes.io/leader: '{}'}\n",
        )),
    );
    let managed = |c: &Cluster| {
        c.get_json(&["endpoints", "web"])["metadata"]["labels"]["endpoints.kubernetes.io/managed-by"]
            == "endpoint-controller"
    };
    assert!(
        eventually(WAIT, || exists(&c, "web") && managed(&c)),
        "web's Endpoints"
    );
    // While running, Endpoints without a Service stay.
    assert!(!eventually(Duration::from_secs(2), || !exists(&c, "orphan")));

    c.restart("TERM");
    assert!(
        eventually(WAIT, || !exists(&c, "orphan")),
        "the leftover Endpoints survived a restart:\n{}",
        svcnet_testsupport::cluster::tail(&c.log(), 20)
    );
    for kept in ["lock", "ext", "web"] {
        assert!(exists(&c, kept), "{kept} was deleted");
    }
    assert_eq!(
        c.get_json(&["endpoints", "ext"])["subsets"][0]["addresses"][0]["ip"],
        "10.0.0.1"
    );
}
