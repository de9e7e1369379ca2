//! The API's semantics below kubectl, through raw HTTP requests with kube-rs: watch bookmarks,
//! `sendInitialEvents`, expired versions, dry runs, deletecollection, generateName, field-validation
//! warnings, body limits, garbage bodies, and garbage collection of dependents. The core watch and write
//! semantics run against both stores: the embedded one and etcd (`--etcd-servers`).

use std::time::Duration;

use futures::{AsyncBufReadExt, TryStreamExt};
use serde_json::{Value, json};
use svcnet_testsupport::Cluster;
use svcnet_testsupport::etcd::Etcd;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

/// Sends a request and returns (status, JSON body or Null, Warning headers).
async fn send(
    client: &kube::Client,
    method: &str,
    path: &str,
    ct: &str,
    body: Vec<u8>,
) -> (u16, Value, Vec<String>) {
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", ct)
        .body(body)
        .unwrap();
    let resp = client.send(req.map(kube::client::Body::from)).await.unwrap();
    let status = resp.status().as_u16();
    let warnings = resp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| v.to_str().unwrap_or_default().to_string())
        .collect();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        warnings,
    )
}

fn svc(name: &str) -> Vec<u8> {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"t": "api"}},
        "spec": {"ports": [{"port": 80}]}})
    .to_string()
    .into_bytes()
}

const SVCS: &str = "/api/v1/namespaces/default/services";

/// Reads watch lines until `n` arrive or `secs` pass.
async fn watch_lines(client: &kube::Client, path: &str, n: usize, secs: u64) -> Vec<Value> {
    let req = http::Request::get(path).body(Vec::new()).unwrap();
    let lines = client.request_stream(req).await.unwrap().lines();
    futures::pin_mut!(lines);
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while out.len() < n {
        match tokio::time::timeout_at(deadline, lines.try_next()).await {
            Ok(Ok(Some(l))) => out.push(serde_json::from_str(&l).unwrap()),
            _ => break,
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_semantics() {
    watch_semantics_on(Cluster::start(SVCNET)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_semantics_on_etcd() {
    let etcd = Etcd::start();
    watch_semantics_on(Cluster::start_with(SVCNET, &["--etcd-servers", &etcd.url()])).await;
}

async fn watch_semantics_on(c: Cluster) {
    let k = c.client().await;
    for i in 0..3 {
        assert_eq!(
            send(&k, "POST", SVCS, "application/json", svc(&format!("w{i}")))
                .await
                .0,
            201
        );
    }
    // sendInitialEvents: the current objects, then a bookmark that marks their end.
    let evs = watch_lines(
        &k,
        &format!("{SVCS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&labelSelector=t%3Dapi"),
        4,
        10,
    )
    .await;
    let types: Vec<&str> = evs.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["ADDED", "ADDED", "ADDED", "BOOKMARK"]);
    assert_eq!(
        evs[3]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert_eq!(evs[3]["object"]["kind"], "Service");
    assert_eq!(evs[3]["object"]["apiVersion"], "v1");
    // sendInitialEvents without NotOlderThan is invalid, as in Kubernetes.
    let (code, _, _) = send(
        &k,
        "GET",
        &format!("{SVCS}?watch=true&sendInitialEvents=true"),
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 422);

    // Periodic bookmarks on an idle watch that asked for them.
    let rv = send(&k, "GET", SVCS, "application/json", vec![]).await.1["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let evs = watch_lines(
        &k,
        &format!("{SVCS}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true"),
        1,
        12,
    )
    .await;
    assert_eq!(evs.first().map(|e| e["type"].clone()), Some(json!("BOOKMARK")));

    // timeoutSeconds ends the stream by itself.
    let start = std::time::Instant::now();
    let evs = watch_lines(
        &k,
        &format!("{SVCS}?watch=true&resourceVersion={rv}&timeoutSeconds=1"),
        100,
        10,
    )
    .await;
    assert!(evs.is_empty());
    assert!(start.elapsed() < Duration::from_secs(5));

    // A selector transition: leaving the selected set is seen as DELETED.
    let stream_path = format!("{SVCS}?watch=true&resourceVersion={rv}&labelSelector=t%3Dapi");
    let kk = k.clone();
    let watcher = tokio::spawn(async move { watch_lines(&kk, &stream_path, 1, 10).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let patch = br#"{"metadata":{"labels":{"t":"gone"}}}"#.to_vec();
    assert_eq!(
        send(
            &k,
            "PATCH",
            &format!("{SVCS}/w0"),
            "application/merge-patch+json",
            patch
        )
        .await
        .0,
        200
    );
    let evs = watcher.await.unwrap();
    assert_eq!(evs[0]["type"], "DELETED");
    assert_eq!(evs[0]["object"]["metadata"]["name"], "w0");

    // After a restart the history is gone: an old version gets 410 Expired.
    let mut c = c;
    c.restart("TERM");
    let k = c.client().await;
    send(&k, "POST", SVCS, "application/json", svc("after")).await;
    let evs = watch_lines(&k, &format!("{SVCS}?watch=true&resourceVersion=1"), 1, 10).await;
    assert_eq!(evs[0]["type"], "ERROR");
    assert_eq!(evs[0]["object"]["code"], 410);
    assert_eq!(evs[0]["object"]["reason"], "Expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_semantics() {
    write_semantics_on(Cluster::start(SVCNET)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_semantics_on_etcd() {
    let etcd = Etcd::start();
    write_semantics_on(Cluster::start_with(SVCNET, &["--etcd-servers", &etcd.url()])).await;
}

async fn write_semantics_on(c: Cluster) {
    let k = c.client().await;
    // dryRun=All answers as a create would but stores nothing.
    let (code, body, _) = send(
        &k,
        "POST",
        &format!("{SVCS}?dryRun=All"),
        "application/json",
        svc("dry"),
    )
    .await;
    assert_eq!(code, 201);
    assert!(body["spec"]["clusterIP"].as_str().is_some());
    assert_eq!(
        send(&k, "GET", &format!("{SVCS}/dry"), "application/json", vec![])
            .await
            .0,
        404
    );
    // generateName.
    let generate = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"generateName": "gen-"}, "spec": {"ports": [{"port": 80}]}});
    let (code, body, _) = send(
        &k,
        "POST",
        SVCS,
        "application/json",
        generate.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 201);
    let name = body["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    // fieldValidation=Warn drops unknown fields and says so in a Warning header.
    let unknown = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "warned"}, "spec": {"bogus": 1, "ports": [{"port": 80}]}});
    let (code, body, warnings) = send(
        &k,
        "POST",
        &format!("{SVCS}?fieldValidation=Warn"),
        "application/json",
        unknown.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 201);
    assert!(body["spec"].get("bogus").is_none());
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("unknown field \\\"spec.bogus\\\"") || w.contains("spec.bogus")),
        "{warnings:?}"
    );
    let (code, body, _) = send(
        &k,
        "POST",
        &format!("{SVCS}?fieldValidation=Strict"),
        "application/json",
        unknown.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(
        body["message"],
        "strict decoding error: unknown field \"spec.bogus\""
    );
    // Garbage, wrong kinds and huge bodies are clean errors.
    let (code, body, _) = send(&k, "POST", SVCS, "application/json", b"\x00\xffnot json".to_vec()).await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["kind"], "Status");
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}});
    assert_eq!(
        send(&k, "POST", SVCS, "application/json", pod.to_string().into_bytes())
            .await
            .0,
        400
    );
    let huge = vec![b' '; 4 * 1024 * 1024];
    let (code, body, _) = send(&k, "POST", SVCS, "application/json", huge).await;
    assert_eq!(code, 413, "{body}");
    // The store is intact after all that.
    let (code, list, _) = send(&k, "GET", SVCS, "application/json", vec![]).await;
    assert_eq!(code, 200);
    assert!(list["items"].as_array().unwrap().len() >= 3);
    // deletecollection with a selector.
    for i in 0..3 {
        send(&k, "POST", SVCS, "application/json", svc(&format!("dc{i}"))).await;
    }
    let (code, deleted, _) = send(
        &k,
        "DELETE",
        &format!("{SVCS}?labelSelector=t%3Dapi"),
        "application/json",
        vec![],
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(deleted["items"].as_array().unwrap().len(), 3);
    // Delete preconditions.
    let (_, w, _) = send(&k, "GET", &format!("{SVCS}/warned"), "application/json", vec![]).await;
    let bad = json!({"preconditions": {"uid": "00000000-0000-0000-0000-000000000000"}});
    let (code, body, _) = send(
        &k,
        "DELETE",
        &format!("{SVCS}/warned"),
        "application/json",
        bad.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 409);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Precondition failed: UID in precondition")
    );
    let good = json!({"preconditions": {"uid": w["metadata"]["uid"]}});
    assert_eq!(
        send(
            &k,
            "DELETE",
            &format!("{SVCS}/warned"),
            "application/json",
            good.to_string().into_bytes()
        )
        .await
        .0,
        200
    );
    // Optimistic concurrency: a create of an existing name, and an update from a stale resourceVersion,
    // are conflicts in Kubernetes' words; an update from the current one goes through.
    let (code, created, _) = send(&k, "POST", SVCS, "application/json", svc("cf")).await;
    assert_eq!(code, 201);
    let (code, body, _) = send(&k, "POST", SVCS, "application/json", svc("cf")).await;
    assert_eq!((code, body["reason"].as_str()), (409, Some("AlreadyExists")));
    let mut update = created.clone();
    update["metadata"]["labels"]["v"] = json!("1");
    let (code, updated, _) = send(
        &k,
        "PUT",
        &format!("{SVCS}/cf"),
        "application/json",
        update.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 200, "{updated}");
    let (old, new) = (
        created["metadata"]["resourceVersion"].as_str().unwrap(),
        updated["metadata"]["resourceVersion"].as_str().unwrap(),
    );
    assert!(new.parse::<u64>().unwrap() > old.parse::<u64>().unwrap());
    update["metadata"]["labels"]["v"] = json!("2");
    let (code, body, _) = send(
        &k,
        "PUT",
        &format!("{SVCS}/cf"),
        "application/json",
        update.to_string().into_bytes(),
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(
        body["message"],
        "Operation cannot be fulfilled on services \"cf\": the object has been modified; please apply your changes to the latest version and try again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_collection_follows_propagation_policy() {
    let c = Cluster::start(SVCNET);
    let k = c.client().await;
    let slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices";
    let mk_owner = |name: &str| svc(name);
    let dependent = |name: &str, owner: &Value| {
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "Service",
                "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"], "blockOwnerDeletion": true, "controller": true}]},
            "addressType": "IPv4", "endpoints": [], "ports": []})
        .to_string()
        .into_bytes()
    };
    for (policy, survives) in [("Background", false), ("Foreground", false), ("Orphan", true)] {
        let owner_name = format!("own-{}", policy.to_lowercase());
        let (_, owner, _) = send(&k, "POST", SVCS, "application/json", mk_owner(&owner_name)).await;
        let dep = format!("dep-{}", policy.to_lowercase());
        assert_eq!(
            send(&k, "POST", slices, "application/json", dependent(&dep, &owner))
                .await
                .0,
            201
        );
        let opts = json!({"propagationPolicy": policy}).to_string().into_bytes();
        let (code, _, _) = send(
            &k,
            "DELETE",
            &format!("{SVCS}/{owner_name}"),
            "application/json",
            opts,
        )
        .await;
        assert!(code == 200 || code == 202, "{policy}: {code}");
        let mut done = false;
        for _ in 0..100 {
            let owner_gone = send(
                &k,
                "GET",
                &format!("{SVCS}/{owner_name}"),
                "application/json",
                vec![],
            )
            .await
            .0 == 404;
            let (dep_code, dep_obj, _) =
                send(&k, "GET", &format!("{slices}/{dep}"), "application/json", vec![]).await;
            let ok = if survives {
                owner_gone
                    && dep_code == 200
                    && dep_obj["metadata"]
                        .get("ownerReferences")
                        .is_none_or(|r| r.as_array().is_none_or(|a| a.is_empty()))
            } else {
                owner_gone && dep_code == 404
            };
            if ok {
                done = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(done, "{policy} propagation did not complete");
    }
}
