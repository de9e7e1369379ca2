//! The store conformance suite (`svcnet_store::conformance`, the one the embedded store passes) against a
//! real etcd, plus what only etcd has: keys under the prefix, compaction, and a feed that survives an etcd
//! restart.

use std::sync::Arc;
use std::time::Duration;

use svcnet_store::{Event, Health, Precondition, Store, Write, WriteOutcome, conformance};
use svcnet_store_etcd::{ConnectError, EtcdConfig, EtcdStore};
use svcnet_testsupport::etcd::Etcd;

async fn store_on(etcd: &Etcd, tweak: impl FnOnce(&mut EtcdConfig)) -> Arc<dyn Store> {
    let mut config = EtcdConfig::new(vec![etcd.url()]);
    tweak(&mut config);
    Arc::new(EtcdStore::connect(config).await.expect("connect"))
}

#[tokio::test]
async fn conformance_conditional_writes() {
    let etcd = Etcd::start();
    conformance::conditional_writes(store_on(&etcd, |_| {}).await).await;
}

#[tokio::test]
async fn conformance_snapshot_then_feed_has_no_gap() {
    let etcd = Etcd::start();
    conformance::snapshot_then_feed_has_no_gap(store_on(&etcd, |_| {}).await).await;
}

#[tokio::test]
async fn conformance_concurrent_writes() {
    let etcd = Etcd::start();
    conformance::concurrent_writes(store_on(&etcd, |_| {}).await).await;
}

#[tokio::test]
async fn conformance_transactions() {
    let etcd = Etcd::start();
    conformance::transactions(store_on(&etcd, |_| {}).await).await;
}

#[tokio::test]
async fn conformance_concurrent_transactions() {
    let etcd = Etcd::start();
    conformance::concurrent_transactions(store_on(&etcd, |_| {}).await).await;
}

#[tokio::test]
async fn conformance_current_revision() {
    let etcd = Etcd::start();
    conformance::current_revision_covers_acknowledged_writes(store_on(&etcd, |_| {}).await).await;
}

fn put(key: &str, v: &str) -> Write {
    Write::Put {
        key: key.into(),
        value: bytes::Bytes::copy_from_slice(v.as_bytes()),
        precondition: Precondition::None,
    }
}

/// Keys live under `--etcd-prefix` in etcd itself, and a store with another prefix sees none of them.
#[tokio::test]
async fn keys_live_under_the_prefix() {
    let etcd = Etcd::start();
    let a = store_on(&etcd, |c| c.prefix = "/registry".into()).await;
    let b = store_on(&etcd, |c| c.prefix = "/other/".into()).await;
    a.write(put("/core/x", "1")).await.unwrap();
    let out = etcd.etcdctl(&["get", "--prefix", "/registry/", "--keys-only"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "/registry/core/x");
    assert!(b.get("/core/x").await.unwrap().is_none());
    let (snap, _) = b.snapshot_and_watch("/").await.unwrap();
    assert!(snap.items.is_empty());
}

/// A quiet feed still advances: writes under another prefix show up as progress notifications once a
/// reader asks for the current revision, so a consistent read does not wait for an unrelated write.
#[tokio::test]
async fn quiet_feed_advances_with_progress_notifications() {
    let etcd = Etcd::start();
    let a = store_on(&etcd, |c| c.prefix = "/registry".into()).await;
    let b = store_on(&etcd, |c| c.prefix = "/other".into()).await;
    let (_, mut feed) = a.snapshot_and_watch("/").await.unwrap();
    let WriteOutcome::Committed { revision, .. } = b.write(put("/x", "1")).await.unwrap() else {
        panic!("committed")
    };
    let current = a.current_revision().await.unwrap().unwrap();
    assert!(current >= revision);
    let reached = tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(batch) = feed.recv().await {
            for e in batch {
                assert!(
                    matches!(e, Event::Progress { .. }),
                    "nothing under /registry changed: {e:?}"
                );
                if e.revision() >= current {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "no progress notification reached revision {current}"
    );
}

/// Compaction runs on its interval, coordinated through kube-apiserver's `compact_rev_key`, and keeps
/// one interval of history: a revision from two rounds ago is gone from etcd.
// Multi-threaded: `eventually` sleeps on the test's thread while the store's tasks run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_runs_on_its_interval() {
    let etcd = Etcd::start();
    let s = store_on(&etcd, |c| c.compaction_interval = Duration::from_millis(500)).await;
    let WriteOutcome::Committed { revision: old, .. } = s.write(put("/k", "1")).await.unwrap() else {
        panic!("committed")
    };
    s.write(put("/k", "2")).await.unwrap();
    let compacted = svcnet_testsupport::eventually(Duration::from_secs(10), || {
        let out = etcd.etcdctl(&["get", "/registry/k", &format!("--rev={old}")]);
        String::from_utf8_lossy(&out.stderr).contains("compacted")
    });
    assert!(compacted, "revision {old} was never compacted");
    let key = etcd.etcdctl(&["get", "compact_rev_key", "--print-value-only"]);
    let at: u64 = String::from_utf8_lossy(&key.stdout)
        .trim()
        .parse()
        .expect("a revision");
    assert!(at >= old);
    assert_eq!(s.get("/k").await.unwrap().unwrap().value, "2");
}

/// etcd down: health says why, writes fail with the cause instead of hanging; etcd back: health is ok
/// again, writes go on, and the feed delivers what was written meanwhile without a gap.
// Multi-threaded: `eventually` sleeps on the test's thread while the store's tasks run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_degrades_then_heals_without_a_gap() {
    let mut etcd = Etcd::start();
    let s = store_on(&etcd, |_| {}).await;
    let (_, mut feed) = s.snapshot_and_watch("/o/").await.unwrap();
    s.write(put("/o/1", "x")).await.unwrap();
    etcd.kill();
    let degraded = svcnet_testsupport::eventually(
        Duration::from_secs(10),
        || matches!(s.health(), Health::Degraded(ref m) if m.contains(&etcd.url())),
    );
    assert!(degraded, "{:?}", s.health());
    let t0 = std::time::Instant::now();
    let err = s.write(put("/o/lost", "x")).await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(12), "{:?}", t0.elapsed());
    assert!(err.to_string().contains("etcd"), "{err}");
    etcd.start_again();
    let healed = svcnet_testsupport::eventually(Duration::from_secs(10), || s.health() == Health::Ok);
    assert!(healed, "{:?}", s.health());
    s.write(put("/o/2", "x")).await.unwrap();
    let mut keys = Vec::new();
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        while keys.len() < 2 {
            let batch = feed.recv().await.expect("the feed goes on");
            keys.extend(batch.iter().filter_map(|e| e.key().map(str::to_string)));
        }
    })
    .await;
    assert!(got.is_ok(), "{keys:?}");
    assert_eq!(keys, ["/o/1", "/o/2"]);
}

/// Bad settings are refused with the flag's name; an etcd that is not there is reported by URL.
#[tokio::test]
async fn bad_settings_and_unreachable_etcd() {
    let err = EtcdStore::connect(EtcdConfig::new(vec![])).await.err().unwrap();
    assert!(matches!(err, ConnectError::Config(_)));
    assert_eq!(err.to_string(), "--etcd-servers needs at least one URL");
    let err = EtcdStore::connect(EtcdConfig::new(vec!["127.0.0.1:2379".into()]))
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("not an http:// or https:// URL"));
    let port = svcnet_testsupport::net::free_port("127.0.0.1");
    let url = format!("http://127.0.0.1:{port}");
    let err = EtcdStore::connect(EtcdConfig::new(vec![url.clone()]))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ConnectError::Unreachable(_)), "{err:?}");
    let err = err.to_string();
    assert!(err.contains(&url), "{err}");
}

/// `--etcd-cafile/--etcd-certfile/--etcd-keyfile`: an etcd that serves only TLS and requires a client
/// certificate is reached with them, and refuses a client without one.
#[tokio::test]
async fn tls_with_a_client_certificate() {
    let etcd = Etcd::start_tls();
    let tls = etcd.tls.clone().unwrap();
    let mut config = EtcdConfig::new(vec![etcd.url()]);
    config.ca_file = Some(tls.ca.clone());
    config.cert_file = Some(tls.client_cert.clone());
    config.key_file = Some(tls.client_key.clone());
    let store = EtcdStore::connect(config.clone())
        .await
        .expect("connect over TLS");
    store.write(put("/tls/1", "x")).await.unwrap();
    assert_eq!(store.get("/tls/1").await.unwrap().unwrap().value, "x");
    let out = etcd.etcdctl(&["get", "/registry/tls/1", "--print-value-only"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "x");

    config.cert_file = None;
    config.key_file = None;
    let refused = EtcdStore::connect(config.clone()).await;
    assert!(
        matches!(refused, Err(ConnectError::Unreachable(_))),
        "no client certificate, no access"
    );
    config.cert_file = Some(tls.client_cert.clone());
    let half = EtcdStore::connect(config).await.err().unwrap();
    assert_eq!(half.to_string(), "--etcd-certfile and --etcd-keyfile go together");
}

/// The feed's watch is cut off from etcd while etcd compacts past the feed's next revision: the feed
/// cannot go on without a gap, so it ends and the store reports `Failed` with kube's
/// `too old resource version` (the API server then restarts on a fresh snapshot) instead of skipping
/// changes silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_that_fell_behind_compaction_fails_loudly() {
    let etcd = Etcd::start();
    let relay =
        svcnet_testsupport::net::Relay::start(format!("127.0.0.1:{}", etcd.client_port).parse().unwrap());
    let direct = store_on(&etcd, |_| {}).await;
    let mut config = EtcdConfig::new(vec![format!("http://{}", relay.addr)]);
    config.compaction_interval = Duration::ZERO;
    let s: Arc<dyn Store> = Arc::new(EtcdStore::connect(config).await.expect("connect"));
    let (_, mut feed) = s.snapshot_and_watch("/c/").await.unwrap();
    s.write(put("/c/1", "x")).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), feed.recv()).await;
    let first: Vec<String> = first
        .expect("the first change in time")
        .expect("the feed goes on")
        .iter()
        .filter_map(|e| e.key().map(str::to_string))
        .collect();
    assert_eq!(first, ["/c/1"]);
    relay.cut();
    let mut last = 0;
    for i in 2..5 {
        if let WriteOutcome::Committed { revision, .. } =
            direct.write(put(&format!("/c/{i}"), "x")).await.unwrap()
        {
            last = revision;
        }
    }
    let out = etcd.etcdctl(&["compact", &last.to_string()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    relay.restore();
    let failed = svcnet_testsupport::eventually(
        Duration::from_secs(15),
        || matches!(s.health(), Health::Failed(ref m) if m.contains("too old resource version")),
    );
    assert!(failed, "{:?}", s.health());
    // The feed ends rather than going on past a gap.
    let mut after = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), feed.recv()).await {
            Ok(Some(batch)) => after.extend(batch.iter().filter_map(|e| e.key().map(str::to_string))),
            Ok(None) => break,
            Err(_) => panic!("the feed neither ended nor went on"),
        }
    }
    assert!(after.is_empty(), "{after:?}");
}

/// Objects near etcd's 1.5 MiB request limit: a snapshot page of several of them passes gRPC's 4 MiB
/// default response size, and still loads.
#[tokio::test]
async fn large_objects_load_in_a_snapshot() {
    let etcd = Etcd::start();
    let s = store_on(&etcd, |_| {}).await;
    let big = "x".repeat(1_200_000);
    for i in 0..5 {
        s.write(put(&format!("/big/{i}"), &big)).await.unwrap();
    }
    let (snap, _) = s.snapshot_and_watch("/big/").await.unwrap();
    assert_eq!(snap.items.len(), 5);
    assert!(snap.items.iter().all(|kv| kv.value.len() == big.len()));
}

/// A value over etcd's request limit is refused as too large, naming the key.
#[tokio::test]
async fn a_value_over_etcds_limit_is_too_large() {
    let etcd = Etcd::start();
    let s = store_on(&etcd, |_| {}).await;
    let err = s.write(put("/huge", &"x".repeat(2_000_000))).await.unwrap_err();
    assert!(
        matches!(err, svcnet_store::StoreError::TooLarge(ref m) if m.contains("/huge")),
        "{err:?}"
    );
    assert!(s.get("/huge").await.unwrap().is_none());
}
