//! A Rust client (kube-rs) against `svcnet up`: list, watch, and a reflector that keeps its store in
//! sync across an API server restart; plus durability when the server is killed mid-write.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn svc(name: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "labels": {"suite": "client"}},
        "spec": {"ports": [{"port": 80}], "selector": {"app": name}}
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_watch_and_reflector_across_restart() {
    let mut c = Cluster::start(SVCNET);
    let api: Api<Service> = Api::namespaced(c.client().await, "default");
    for i in 0..5 {
        api.create(&PostParams::default(), &svc(&format!("c{i}")))
            .await
            .unwrap();
    }
    let list = api
        .list(&ListParams::default().labels("suite=client"))
        .await
        .unwrap();
    assert_eq!(list.items.len(), 5);
    let rv = list.metadata.resource_version.clone().unwrap();

    // Paginated list: 5 items in pages of 2.
    let page = api
        .list(&ListParams::default().labels("suite=client").limit(2))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().expect("continue token");
    let page2 = api
        .list(
            &ListParams::default()
                .labels("suite=client")
                .limit(2)
                .continue_token(&token),
        )
        .await
        .unwrap();
    assert_eq!(page2.items.len(), 2);
    assert_ne!(page.items[0].metadata.name, page2.items[0].metadata.name);

    // A watch from the list's version sees exactly what happens after it.
    let mut stream = api
        .watch(&WatchParams::default().labels("suite=client"), &rv)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &svc("c5")).await.unwrap();
    api.delete("c0", &Default::default()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Ok(Some(Ok(WatchEvent::Added(s)))) => seen.push(format!("ADDED {}", s.metadata.name.unwrap())),
            Ok(Some(Ok(WatchEvent::Deleted(s)))) => {
                seen.push(format!("DELETED {}", s.metadata.name.unwrap()))
            }
            Ok(Some(Ok(_))) => {}
            other => panic!("watch ended early: {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED c5", "DELETED c0"]);

    // A reflector keeps a store in sync, across a restart of the API server.
    let (reader, writer) = reflector::store::<Service>();
    let cfg = watcher::Config::default().labels("suite=client");
    let rf = reflector(writer, watcher(api.clone(), cfg)).applied_objects();
    let names = Arc::new(Mutex::new(BTreeSet::new()));
    let handle = tokio::spawn(async move {
        futures::pin_mut!(rf);
        while let Some(_ev) = rf.next().await {}
    });
    let current = || {
        reader
            .state()
            .iter()
            .filter_map(|s| s.metadata.name.clone())
            .collect::<BTreeSet<_>>()
    };
    let want: BTreeSet<String> = (1..=5).map(|i| format!("c{i}")).collect();
    assert!(
        wait_async(Duration::from_secs(10), || current() == want).await,
        "reflector before restart: {:?}",
        current()
    );
    c.restart("TERM");
    let api2: Api<Service> = Api::namespaced(c.client().await, "default");
    api2.create(&PostParams::default(), &svc("after-restart"))
        .await
        .unwrap();
    api2.delete("c1", &Default::default()).await.unwrap();
    let mut want2 = want.clone();
    want2.insert("after-restart".into());
    want2.remove("c1");
    assert!(
        wait_async(Duration::from_secs(30), || current() == want2).await,
        "reflector after restart: {:?}\nserver log:\n{}",
        current(),
        c.log()
    );
    names.lock().unwrap().extend(current());
    handle.abort();
}

async fn wait_async(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_objects_and_version_order() {
    let mut c = Cluster::start(SVCNET);
    let api: Api<Service> = Api::namespaced(c.client().await, "default");
    let mut last_rv = 0u64;
    for i in 0..10 {
        let s = api
            .create(&PostParams::default(), &svc(&format!("r{i}")))
            .await
            .unwrap();
        let rv: u64 = s.metadata.resource_version.unwrap().parse().unwrap();
        assert!(rv > last_rv, "resourceVersions increase");
        last_rv = rv;
    }
    let before = api.list(&ListParams::default()).await.unwrap();
    c.restart("TERM");
    let api: Api<Service> = Api::namespaced(c.client().await, "default");
    let after = api.list(&ListParams::default()).await.unwrap();
    let key = |l: &kube::core::ObjectList<Service>| {
        l.items
            .iter()
            .map(|s| {
                (
                    s.metadata.name.clone(),
                    s.metadata.uid.clone(),
                    s.metadata.resource_version.clone(),
                    s.spec.as_ref().and_then(|s| s.cluster_ip.clone()),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&before), key(&after));
    let s = api.create(&PostParams::default(), &svc("later")).await.unwrap();
    let rv: u64 = s.metadata.resource_version.unwrap().parse().unwrap();
    assert!(
        rv > last_rv,
        "versions keep increasing after a restart: {rv} <= {last_rv}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_no_acknowledged_write() {
    let mut c = Cluster::start(SVCNET);
    let client = c.client().await;
    let acked = Arc::new(Mutex::new(Vec::<(String, String)>::new()));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let api: Api<Service> = Api::namespaced(client.clone(), "default");
        let acked = acked.clone();
        tasks.push(tokio::spawn(async move {
            // Bounded: at most 200 writes per task; the kill ends it sooner.
            for i in 0..200 {
                match api
                    .create(&PostParams::default(), &svc(&format!("k{w}-{i}")))
                    .await
                {
                    Ok(s) => acked
                        .lock()
                        .unwrap()
                        .push((s.metadata.name.unwrap(), s.spec.unwrap().cluster_ip.unwrap())),
                    Err(_) => return,
                }
            }
        }));
    }
    // Let writes flow, then kill the server without warning.
    assert!(eventually(Duration::from_secs(20), || acked
        .lock()
        .unwrap()
        .len()
        >= 100));
    c.stop("KILL");
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    c.restart("TERM");
    let api: Api<Service> = Api::namespaced(c.client().await, "default");
    let stored = api.list(&ListParams::default()).await.unwrap();
    let by_name: std::collections::BTreeMap<String, String> = stored
        .items
        .iter()
        .map(|s| {
            (
                s.metadata.name.clone().unwrap(),
                s.spec.as_ref().unwrap().cluster_ip.clone().unwrap(),
            )
        })
        .collect();
    for (name, ip) in &acked {
        assert_eq!(
            by_name.get(name),
            Some(ip),
            "acknowledged {name} lost or changed after kill -9"
        );
    }
    // No ClusterIP is held twice after the crash and repair.
    let ips: BTreeSet<&String> = by_name.values().collect();
    assert_eq!(ips.len(), by_name.len());
    // And new allocations after the restart do not collide with the stored ones.
    let s = api
        .create(&PostParams::default(), &svc("post-crash"))
        .await
        .unwrap();
    let ip = s.spec.unwrap().cluster_ip.unwrap();
    assert!(!by_name.values().any(|v| *v == ip));
}
