//! The informer driven by hand-fed watcher events, as kube's watcher would send them.

use std::sync::Arc;

use futures::FutureExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::watcher::Event as W;

use super::*;

fn pod(name: &str, rv: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"namespace": "default", "name": name, "resourceVersion": rv,
            "managedFields": [{"manager": "kubectl"}]},
    }))
    .unwrap()
}

/// What a subscription has waiting, as (kind, name, resourceVersion, old resourceVersion).
fn drain(s: &mut Subscription<Pod>) -> Vec<String> {
    let rv = |p: &Pod| p.metadata.resource_version.clone().unwrap_or_default();
    let name = |p: &Pod| p.metadata.name.clone().unwrap_or_default();
    std::iter::from_fn(|| s.try_recv())
        .map(|e| match e {
            Event::Apply { obj, old } => {
                format!(
                    "apply {} {}{}",
                    name(&obj),
                    rv(&obj),
                    old.map(|o| format!(" (was {})", rv(&o))).unwrap_or_default()
                )
            }
            Event::Delete(o) => format!("delete {} {}", name(&o), rv(&o)),
            Event::Listed => "listed".into(),
        })
        .collect()
}

fn names(s: &Store<Pod>) -> Vec<String> {
    let mut v: Vec<String> = s
        .state()
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    v.sort();
    v
}

fn trimmed() -> Informer<Pod> {
    Informer::new(|p: &mut Pod| p.metadata.managed_fields = None)
}

#[test]
fn the_list_appears_whole_and_only_when_complete() {
    let inf = trimmed();
    let store = inf.store();
    let mut sub = inf.subscribe();
    inf.handle(W::Init);
    inf.handle(W::InitApply(pod("a", "1")));
    inf.handle(W::InitApply(pod("b", "2")));
    assert!(!store.is_synced() && store.is_empty(), "nothing shows mid-list");
    assert!(drain(&mut sub).is_empty(), "no events mid-list");
    assert!(store.wait_until_synced().now_or_never().is_none());
    inf.handle(W::InitDone);
    assert!(store.is_synced());
    assert!(store.wait_until_synced().now_or_never().is_some());
    assert_eq!(names(&store), ["a", "b"]);
    let mut evs = drain(&mut sub);
    assert_eq!(evs.pop().as_deref(), Some("listed"));
    evs.sort();
    assert_eq!(evs, ["apply a 1", "apply b 2"]);
    let a = store.get_named("default", "a").unwrap();
    assert!(a.metadata.managed_fields.is_none(), "trimmed before caching");
}

#[test]
fn watch_events_carry_the_old_object_and_the_last_copy() {
    let inf = trimmed();
    let store = inf.store();
    for e in [W::Init, W::InitApply(pod("a", "1")), W::InitDone] {
        inf.handle(e);
    }
    let mut sub = inf.subscribe();
    assert_eq!(
        drain(&mut sub),
        ["apply a 1", "listed"],
        "a late subscriber is replayed the store"
    );
    inf.handle(W::Apply(pod("a", "2")));
    inf.handle(W::Apply(pod("c", "3")));
    inf.handle(W::Delete(pod("a", "4")));
    assert_eq!(drain(&mut sub), ["apply a 2 (was 1)", "apply c 3", "delete a 4"]);
    assert_eq!(names(&store), ["c"]);
}

#[test]
fn a_relist_deletes_what_vanished_and_keeps_the_old_view_until_done() {
    let inf = trimmed();
    let store = inf.store();
    let mut sub = inf.subscribe();
    for e in [
        W::Init,
        W::InitApply(pod("a", "1")),
        W::InitApply(pod("b", "1")),
        W::InitDone,
    ] {
        inf.handle(e);
    }
    drain(&mut sub);
    // The watch broke; the relist no longer has `a`.
    inf.handle(W::Init);
    inf.handle(W::InitApply(pod("b", "5")));
    inf.handle(W::InitApply(pod("d", "6")));
    assert_eq!(
        names(&store),
        ["a", "b"],
        "the old view stays until the relist is complete"
    );
    assert!(store.is_synced(), "still synced during a relist");
    assert!(drain(&mut sub).is_empty());
    inf.handle(W::InitDone);
    assert_eq!(names(&store), ["b", "d"]);
    let evs = drain(&mut sub);
    assert_eq!(evs[0], "delete a 1", "deletions first, with the last cached copy");
    let mut applies = evs[1..3].to_vec();
    applies.sort();
    assert_eq!(applies, ["apply b 5 (was 1)", "apply d 6"]);
    assert_eq!(evs[3], "listed");
}

#[test]
fn every_subscriber_gets_every_event_and_dropped_ones_are_forgotten() {
    let inf = trimmed();
    let mut one = inf.subscribe();
    let two = inf.subscribe();
    drop(two);
    for e in [W::Init, W::InitDone, W::Apply(pod("a", "1"))] {
        inf.handle(e);
    }
    let mut three = inf.subscribe();
    assert_eq!(drain(&mut one), ["listed", "apply a 1"]);
    assert_eq!(drain(&mut three), ["apply a 1", "listed"]);
    assert_eq!(inf.lock().subscribers.len(), 2);
}

#[tokio::test]
async fn run_feeds_a_stream_and_subscriptions_end_with_the_informer() {
    let inf = trimmed();
    let store = inf.store();
    let mut sub = inf.subscribe();
    let events = futures::stream::iter([
        Ok(W::Init),
        Ok(W::InitApply(pod("a", "1"))),
        Ok(W::InitDone),
        Ok(W::Apply(pod("b", "2"))),
    ]);
    inf.run(events).await;
    store.wait_until_synced().await;
    assert_eq!(names(&store), ["a", "b"]);
    drop(inf);
    let mut got = Vec::new();
    while let Some(e) = sub.recv().await {
        got.push(e.object().map(|o| o.metadata.name.clone().unwrap()));
    }
    assert_eq!(got, [Some("a".into()), None, Some("b".into())]);
    assert!(Arc::strong_count(&store.get_named("default", "a").unwrap()) >= 1);
}
