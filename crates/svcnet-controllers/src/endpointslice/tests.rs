//! Unit tests of the pure reconcilers (`cargo test -p svcnet-controllers endpointslice`).

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use super::endpoints::{ANNOTATION_OVER_CAPACITY, desired_endpoints};
use super::reconciler::*;
use super::{mirroring, pod_projection};

fn svc(extra: serde_json::Value) -> Service {
    let mut v = json!({
        "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid", "labels": {"team": "a"}},
        "spec": {"selector": {"app": "web"}, "clusterIP": "127.96.0.5", "ipFamilies": ["IPv4"],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn pod(i: usize, ready: bool, extra: serde_json::Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": format!("p{i}"), "namespace": "default", "uid": format!("uid-{i}"),
                     "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 8080}]}]},
        "status": {"phase": "Running", "podIP": ip(i), "podIPs": [{"ip": ip(i)}],
                   "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn ip(i: usize) -> String {
    format!("127.244.{}.{}", i / 250, i % 250 + 1)
}

fn nodes() -> NodeZones {
    HashMap::from([("n1".to_owned(), Some("zone-a".to_owned()))])
}

fn plan(svc: &Service, pods: &[Pod], existing: &[EndpointSlice], max: usize) -> Plan {
    let refs: Vec<&Pod> = pods.iter().collect();
    let nodes = nodes();
    reconcile(
        svc,
        &Inputs {
            pods: &refs,
            nodes: &nodes,
            existing,
            max_endpoints: max,
            trigger_time: None,
            zone_ratios: None,
            had_auto_hints: false,
        },
    )
}

/// Applies a plan as the API server would: names for creates, bumped resourceVersions.
fn apply(existing: &[EndpointSlice], p: &Plan, counter: &mut u32) -> Vec<EndpointSlice> {
    let mut out: Vec<EndpointSlice> = existing
        .iter()
        .filter(|s| {
            !p.delete.iter().any(|d| d.metadata.name == s.metadata.name)
                && !p.update.iter().any(|u| u.metadata.name == s.metadata.name)
        })
        .cloned()
        .collect();
    for u in &p.update {
        let mut u = u.clone();
        *counter += 1;
        u.metadata.resource_version = Some(counter.to_string());
        out.push(u);
    }
    for c in &p.create {
        let mut c = c.clone();
        *counter += 1;
        c.metadata.name = Some(format!("web-{counter}"));
        c.metadata.resource_version = Some(counter.to_string());
        out.push(c);
    }
    out
}

fn all_endpoints(slices: &[EndpointSlice]) -> usize {
    slices.iter().map(|s| s.endpoints.len()).sum()
}

#[test]
fn endpointslice_desired_endpoint_fields() {
    let s = svc(json!({}));
    let pods = vec![pod(0, true, json!({}))];
    let p = plan(&s, &pods, &[], 100);
    assert_eq!(p.create.len(), 1);
    let slice = &p.create[0];
    assert_eq!(slice.address_type, "IPv4");
    assert_eq!(slice.metadata.generate_name.as_deref(), Some("web-"));
    let labels = slice.metadata.labels.clone().unwrap();
    assert_eq!(labels[LABEL_SERVICE_NAME], "web");
    assert_eq!(labels[LABEL_MANAGED_BY], CONTROLLER_NAME);
    assert_eq!(labels["team"], "a");
    let owner = &slice.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Service", "svc-uid"));
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
    let port = &slice.ports.as_ref().unwrap()[0];
    assert_eq!((port.name.as_deref(), port.port), (Some("http"), Some(8080)));
    let ep = &slice.endpoints[0];
    assert_eq!(ep.addresses, vec![ip(0)]);
    let c = ep.conditions.clone().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(true), Some(true), Some(false))
    );
    assert_eq!(ep.node_name.as_deref(), Some("n1"));
    assert_eq!(ep.zone.as_deref(), Some("zone-a"));
    let tr = ep.target_ref.as_ref().unwrap();
    assert_eq!(tr.kind.as_deref(), Some("Pod"));
    assert_eq!(tr.name.as_deref(), Some("p0"));
    assert_eq!(tr.uid.as_deref(), Some("uid-0"));
    assert_eq!(ep.hostname, None);
}

#[test]
fn endpointslice_hostname_only_when_subdomain_is_the_service() {
    let s = svc(json!({}));
    let named = pod(0, true, json!({"spec": {"hostname": "h0", "subdomain": "web"}}));
    let other = pod(1, true, json!({"spec": {"hostname": "h1", "subdomain": "other"}}));
    let p = plan(&s, &[named, other], &[], 100);
    let eps = &p.create[0].endpoints;
    let host = |n: &str| {
        eps.iter()
            .find(|e| e.target_ref.as_ref().unwrap().name.as_deref() == Some(n))
            .unwrap()
            .hostname
            .clone()
    };
    assert_eq!(host("p0").as_deref(), Some("h0"));
    assert_eq!(host("p1"), None);
}

#[test]
fn endpointslice_no_change_means_no_writes() {
    let s = svc(json!({}));
    let pods: Vec<Pod> = (0..150).map(|i| pod(i, i % 3 != 0, json!({}))).collect();
    let mut rv = 0;
    let first = plan(&s, &pods, &[], 100);
    assert_eq!(first.create.len(), 2);
    let slices = apply(&[], &first, &mut rv);
    let again = plan(&s, &pods, &slices, 100);
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn endpointslice_one_pod_change_rewrites_one_slice() {
    let s = svc(json!({}));
    let mut pods: Vec<Pod> = (0..250).map(|i| pod(i, true, json!({}))).collect();
    let mut rv = 0;
    let slices = apply(&[], &plan(&s, &pods, &[], 100), &mut rv);
    assert_eq!(slices.len(), 3);
    pods[42] = pod(42, false, json!({}));
    let p = plan(&s, &pods, &slices, 100);
    assert!(p.create.is_empty() && p.delete.is_empty());
    assert_eq!(p.update.len(), 1);
    let changed = &p.update[0];
    let ep = changed
        .endpoints
        .iter()
        .find(|e| e.addresses[0] == ip(42))
        .unwrap();
    assert_eq!(ep.conditions.clone().unwrap().ready, Some(false));
    // Same endpoints, same slice: only the one endpoint's condition differs.
    let before = slices
        .iter()
        .find(|s| s.metadata.name == changed.metadata.name)
        .unwrap();
    assert_eq!(before.endpoints.len(), changed.endpoints.len());

    // A pod removed: only its slice is rewritten.
    pods.remove(7);
    let slices2 = apply(&slices, &p, &mut rv);
    let p = plan(&s, &pods, &slices2, 100);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
}

#[test]
fn endpointslice_packing_into_slices_of_100() {
    let s = svc(json!({}));
    let pods: Vec<Pod> = (0..250).map(|i| pod(i, true, json!({}))).collect();
    let p = plan(&s, &pods, &[], 100);
    let mut sizes: Vec<usize> = p.create.iter().map(|s| s.endpoints.len()).collect();
    sizes.sort();
    assert_eq!(sizes, vec![50, 100, 100]);

    // New endpoints go into the unchanged slice that ends closest to full, not a new slice.
    let mut rv = 0;
    let slices = apply(&[], &p, &mut rv);
    let more: Vec<Pod> = (0..270).map(|i| pod(i, true, json!({}))).collect();
    let p = plan(&s, &more, &slices, 100);
    assert!(p.create.is_empty());
    assert_eq!(p.update.len(), 1);
    assert_eq!(p.update[0].endpoints.len(), 70);

    // Shrinking to nothing deletes all but one slice... and leaves a placeholder.
    let slices = apply(&slices, &p, &mut rv);
    let p = plan(&s, &[], &slices, 100);
    assert_eq!(p.update.len() + p.create.len(), 1, "{p:?}");
    assert_eq!(p.delete.len(), 2);
    let slices = apply(&slices, &p, &mut rv);
    assert_eq!(all_endpoints(&slices), 0);
    assert!(plan(&s, &[], &slices, 100).is_empty());
}

#[test]
fn endpointslice_placeholder_for_a_service_without_pods() {
    let s = svc(json!({}));
    let p = plan(&s, &[], &[], 100);
    assert_eq!(p.create.len(), 1);
    assert!(p.create[0].endpoints.is_empty());
    assert_eq!(p.create[0].ports.as_deref(), Some(&[][..]));
    let mut rv = 0;
    let slices = apply(&[], &p, &mut rv);
    assert!(plan(&s, &[], &slices, 100).is_empty());
    // The first pod reuses the placeholder's name instead of delete + create.
    let p = plan(&s, &[pod(1, true, json!({}))], &slices, 100);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (0, 1, 0));
    assert_eq!(p.update[0].metadata.name, slices[0].metadata.name);
}

#[test]
fn endpointslice_named_ports_with_different_numbers_split_slices() {
    let s = svc(
        json!({"spec": {"ports": [{"name": "http", "port": 80, "targetPort": "web", "protocol": "TCP"}]}}),
    );
    let with = |i: usize, n: i32| {
        pod(
            i,
            true,
            json!({"spec": {"containers": [{"name": "c", "ports": [{"name": "web", "containerPort": n}]}]}}),
        )
    };
    let lacking = pod(9, true, json!({"spec": {"containers": [{"name": "c"}]}}));
    let p = plan(
        &s,
        &[with(0, 8080), with(1, 8080), with(2, 9090), lacking],
        &[],
        100,
    );
    let mut got: Vec<(Vec<Option<i32>>, usize)> = p
        .create
        .iter()
        .map(|s| {
            (
                s.ports.iter().flatten().map(|p| p.port).collect(),
                s.endpoints.len(),
            )
        })
        .collect();
    got.sort();
    // As in kube, a pod without the named port still appears, in a slice without that port.
    assert_eq!(
        got,
        vec![(vec![], 1), (vec![Some(8080)], 2), (vec![Some(9090)], 1)]
    );
}

#[test]
fn endpointslice_publish_not_ready_and_readiness() {
    let pods = vec![pod(0, false, json!({})), pod(1, true, json!({}))];
    let p = plan(&svc(json!({})), &pods, &[], 100);
    let ready: Vec<_> = p.create[0]
        .endpoints
        .iter()
        .map(|e| e.conditions.clone().unwrap().ready)
        .collect();
    assert_eq!(ready, vec![Some(false), Some(true)]);
    let p = plan(
        &svc(json!({"spec": {"publishNotReadyAddresses": true}})),
        &pods,
        &[],
        100,
    );
    for e in &p.create[0].endpoints {
        assert_eq!(e.conditions.clone().unwrap().ready, Some(true));
    }
    let c = p.create[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!(c.serving, Some(false), "serving is the pod's own readiness");
}

#[test]
fn endpointslice_terminating_pods_are_serving_and_terminating() {
    let term = pod(
        0,
        true,
        json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
    );
    let p = plan(&svc(json!({})), std::slice::from_ref(&term), &[], 100);
    let c = p.create[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(false), Some(true), Some(true))
    );
    let p = plan(
        &svc(json!({"spec": {"publishNotReadyAddresses": true}})),
        &[term],
        &[],
        100,
    );
    let c = p.create[0].endpoints[0].conditions.clone().unwrap();
    assert_eq!(
        (c.ready, c.serving, c.terminating),
        (Some(true), Some(true), Some(true))
    );
}

#[test]
fn endpointslice_skips_pods_without_ip_terminal_or_on_unknown_nodes() {
    let no_ip = pod(0, false, json!({"status": {"podIP": null, "podIPs": null}}));
    let done = pod(1, true, json!({"status": {"phase": "Succeeded"}}));
    let lost = pod(2, true, json!({"spec": {"nodeName": "gone"}}));
    let fine = pod(3, true, json!({}));
    let p = plan(&svc(json!({})), &[no_ip, done, lost.clone(), fine], &[], 100);
    assert_eq!(p.create[0].endpoints.len(), 1);
    assert_eq!(p.missing_nodes, vec!["gone".to_owned()]);
    // Unless every address is to be published.
    let p = plan(
        &svc(json!({"spec": {"publishNotReadyAddresses": true}})),
        &[lost],
        &[],
        100,
    );
    assert_eq!(p.create[0].endpoints.len(), 1);
    assert!(p.missing_nodes.is_empty());
}

#[test]
fn endpointslice_dual_stack_and_foreign_slices() {
    let s = svc(json!({"spec": {"ipFamilies": ["IPv4", "IPv6"]}}));
    let p6 = pod(
        0,
        true,
        json!({"status": {"podIPs": [{"ip": ip(0)}, {"ip": "fd00::1"}]}}),
    );
    let p = plan(&s, &[p6], &[], 100);
    let mut types: Vec<&str> = p.create.iter().map(|s| s.address_type.as_str()).collect();
    types.sort();
    assert_eq!(types, vec!["IPv4", "IPv6"]);
    let v6 = p.create.iter().find(|s| s.address_type == "IPv6").unwrap();
    assert_eq!(v6.endpoints[0].addresses, vec!["fd00::1".to_owned()]);

    // A slice owned by an older Service of the same name is deleted, not reused.
    let mut old = new_slice(&svc(json!({"metadata": {"uid": "older"}})), vec![], "IPv4");
    old.metadata.name = Some("web-old".into());
    let p = plan(&svc(json!({})), &[pod(0, true, json!({}))], &[old], 100);
    assert_eq!((p.create.len(), p.update.len(), p.delete.len()), (1, 0, 1));
}

#[test]
fn endpointslice_label_change_updates_without_endpoint_change() {
    let s = svc(json!({}));
    let pods = vec![pod(0, true, json!({}))];
    let mut rv = 0;
    let slices = apply(&[], &plan(&s, &pods, &[], 100), &mut rv);
    let s2 = svc(json!({"metadata": {"labels": {"team": "b"}}}));
    let p = plan(&s2, &pods, &slices, 100);
    assert_eq!(p.update.len(), 1);
    assert_eq!(p.update[0].metadata.labels.as_ref().unwrap()["team"], "b");
}

#[test]
fn endpoints_subsets_readiness_and_no_rewrite() {
    let s = svc(json!({}));
    let pods = [
        pod(0, true, json!({})),
        pod(1, false, json!({})),
        pod(
            2,
            true,
            json!({"metadata": {"deletionTimestamp": "2024-01-01T00:00:00Z"}}),
        ),
    ];
    let refs: Vec<&Pod> = pods.iter().collect();
    let ep = desired_endpoints(&s, &refs, None, None).unwrap();
    let subsets = ep.subsets.clone().unwrap();
    assert_eq!(subsets.len(), 1);
    let ss = &subsets[0];
    assert_eq!(ss.addresses.as_ref().unwrap().len(), 1);
    assert_eq!(
        ss.not_ready_addresses.as_ref().unwrap().len(),
        1,
        "terminating pods are left out"
    );
    assert_eq!(ss.ports.as_ref().unwrap()[0].port, 8080);
    assert_eq!(ep.metadata.labels.as_ref().unwrap()["team"], "a");
    assert_eq!(
        ep.metadata.labels.as_ref().unwrap()["endpoints.kubernetes.io/managed-by"],
        "endpoint-controller"
    );
    assert!(desired_endpoints(&s, &refs, Some(&ep), None).is_none());
    // Endpoints written before the label existed get it on the next sync.
    let mut unlabelled = ep.clone();
    unlabelled
        .metadata
        .labels
        .as_mut()
        .unwrap()
        .remove("endpoints.kubernetes.io/managed-by");
    assert!(desired_endpoints(&s, &refs, Some(&unlabelled), None).is_some());
}

#[test]
fn endpoints_truncated_at_1000() {
    let s = svc(json!({}));
    let pods: Vec<Pod> = (0..1200).map(|i| pod(i, i < 1100, json!({}))).collect();
    let refs: Vec<&Pod> = pods.iter().collect();
    let ep = desired_endpoints(&s, &refs, None, None).unwrap();
    let ss = &ep.subsets.as_ref().unwrap()[0];
    assert_eq!(ss.addresses.as_ref().unwrap().len(), 1000);
    assert!(ss.not_ready_addresses.is_none(), "ready addresses win");
    assert_eq!(
        ep.metadata.annotations.as_ref().unwrap()[ANNOTATION_OVER_CAPACITY],
        "truncated"
    );
    // Stable when over capacity: no rewrite on every sync.
    assert!(desired_endpoints(&s, &refs, Some(&ep), None).is_none());
    // Back under capacity: the annotation goes.
    let ep2 = desired_endpoints(&s, &refs[..10], Some(&ep), None).unwrap();
    assert!(
        ep2.metadata
            .annotations
            .is_none_or(|a| !a.contains_key(ANNOTATION_OVER_CAPACITY))
    );

    // Not-ready addresses fill only the room the ready ones leave.
    let pods: Vec<Pod> = (0..1200).map(|i| pod(i, i < 900, json!({}))).collect();
    let refs: Vec<&Pod> = pods.iter().collect();
    let ep = desired_endpoints(&s, &refs, None, None).unwrap();
    let ss = &ep.subsets.as_ref().unwrap()[0];
    assert_eq!(ss.addresses.as_ref().unwrap().len(), 900);
    assert_eq!(ss.not_ready_addresses.as_ref().unwrap().len(), 100);
}

#[test]
fn endpoints_repack_groups_ports_by_address_set() {
    let s = svc(json!({"spec": {"ports": [
        {"name": "a", "port": 80, "targetPort": 8080, "protocol": "TCP"},
        {"name": "b", "port": 81, "targetPort": "extra", "protocol": "TCP"}]}}));
    let both = pod(
        0,
        true,
        json!({"spec": {"containers": [{"name": "c", "ports": [{"name": "extra", "containerPort": 9000}]}]}}),
    );
    let one = pod(1, true, json!({}));
    let ep = desired_endpoints(&s, &[&both, &one], None, None).unwrap();
    let subsets = ep.subsets.unwrap();
    // Port a is offered by both pods, port b by one: two subsets, as kube's RepackSubsets makes.
    assert_eq!(subsets.len(), 2);
    let sizes: Vec<usize> = subsets
        .iter()
        .map(|s| s.addresses.as_ref().unwrap().len())
        .collect();
    assert!(sizes.contains(&2) && sizes.contains(&1));
}

fn user_endpoints(labels: serde_json::Value) -> Endpoints {
    serde_json::from_value(json!({
        "metadata": {"name": "ext", "namespace": "default", "uid": "ep-uid", "labels": labels,
                     "annotations": {"note": "x", "kubectl.kubernetes.io/last-applied-configuration": "{}"}},
        "subsets": [{"addresses": [{"ip": "127.0.0.9"}, {"ip": "not-an-ip"}],
                     "notReadyAddresses": [{"ip": "127.0.0.10"}],
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}]
    }))
    .unwrap()
}

#[test]
fn endpointslice_mirroring_copies_user_endpoints() {
    let ep = user_endpoints(json!({"env": "prod"}));
    assert!(mirroring::should_mirror(&ep));
    assert!(!mirroring::should_mirror(&user_endpoints(
        json!({"endpointslice.kubernetes.io/skip-mirror": "true"})
    )));
    let (p, invalid, _) = mirroring::reconcile(&ep, &[], 1000);
    assert_eq!(invalid, 1);
    assert_eq!(p.create.len(), 1);
    let s = &p.create[0];
    let labels = s.metadata.labels.as_ref().unwrap();
    assert_eq!(labels[LABEL_MANAGED_BY], mirroring::MIRROR_CONTROLLER_NAME);
    assert_eq!(labels[LABEL_SERVICE_NAME], "ext");
    assert_eq!(labels["env"], "prod");
    let ann = s.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann.len(), 1, "last-applied is not copied: {ann:?}");
    assert_eq!(s.metadata.owner_references.as_ref().unwrap()[0].kind, "Endpoints");
    let ready: Vec<(String, Option<bool>)> = s
        .endpoints
        .iter()
        .map(|e| (e.addresses[0].clone(), e.conditions.clone().unwrap().ready))
        .collect();
    assert_eq!(
        ready,
        vec![
            ("127.0.0.10".into(), Some(false)),
            ("127.0.0.9".into(), Some(true))
        ]
    );
    // Mirrored once, nothing to do the second time.
    let mut made = s.clone();
    made.metadata.name = Some("ext-abc".into());
    made.metadata.resource_version = Some("5".into());
    let (p, _, _) = mirroring::reconcile(&ep, std::slice::from_ref(&made), 1000);
    assert!(p.is_empty(), "{p:?}");
    // Addresses beyond the per-subset limit are skipped.
    let (p, _, skipped) = mirroring::reconcile(&ep, &[], 1);
    assert_eq!(p.create[0].endpoints.len(), 1);
    assert_eq!(skipped, 2);
}

#[test]
fn endpointslice_pod_projection_ignores_irrelevant_changes() {
    let a = pod(0, true, json!({}));
    let mut b = a.clone();
    b.metadata.resource_version = Some("99".into());
    b.metadata.annotations = Some([("x".to_owned(), "y".to_owned())].into());
    assert!(pod_projection(&a) == pod_projection(&b));
    let c = pod(0, false, json!({}));
    assert!(pod_projection(&a) != pod_projection(&c));
}

#[test]
fn endpointslice_cached_pods_keep_what_endpoints_show() {
    let full = pod(
        0,
        true,
        json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{...}"}},
            "spec": {"hostname": "h", "subdomain": "web",
                "containers": [{"name": "c", "image": "i", "command": ["serve"], "env": [{"name": "A", "value": "1"}],
                    "ports": [{"name": "http", "containerPort": 8080}]}],
                "initContainers": [{"name": "side", "image": "i", "restartPolicy": "Always",
                    "ports": [{"name": "metrics", "containerPort": 9090}]}],
                "volumes": [{"name": "v", "emptyDir": {}}]},
            "status": {"containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 0}]}
        }),
    );
    let mut cached = full.clone();
    crate::trim_shared_pod(&mut cached);
    assert!(pod_projection(&full) == pod_projection(&cached));
    let named = |name: &str| {
        serde_json::from_value::<k8s_openapi::api::core::v1::ServicePort>(
            json!({"port": 80, "targetPort": name}),
        )
        .unwrap()
    };
    for name in ["http", "metrics", "none"] {
        assert_eq!(
            find_port(&cached, &named(name)),
            find_port(&full, &named(name)),
            "{name}"
        );
    }
    assert_eq!(find_port(&cached, &named("metrics")), Some(9090));
    let spec = cached.spec.as_ref().unwrap();
    assert!(spec.containers[0].image.is_none() && spec.containers[0].env.is_none() && spec.volumes.is_none());
    assert!(cached.metadata.annotations.is_none());
    let statuses = cached
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap();
    assert!(statuses[0].image.is_empty());
}

#[test]
fn endpointslice_prefer_close_hints_each_endpoint_for_its_zone() {
    let hints = |s: &Service| {
        let p = plan(s, &[pod(0, true, json!({}))], &[], 100);
        p.create[0].endpoints[0].hints.clone()
    };
    // No trafficDistribution: no hints.
    assert_eq!(hints(&svc(json!({}))), None);
    // PreferClose: the endpoint's own zone (kube's preferCloseHeuristic).
    let close = svc(json!({"spec": {"trafficDistribution": "PreferClose"}}));
    let h = hints(&close).expect("hints");
    let zones: Vec<String> = h.for_zones.unwrap().into_iter().map(|z| z.name).collect();
    assert_eq!(zones, ["zone-a"]);
    // An endpoint without a zone gets none.
    assert_eq!(zone_hints(&close, None), None);
    // The topology-mode annotation takes precedence: without node information it gives no hints.
    let auto = svc(
        json!({"metadata": {"annotations": {"service.kubernetes.io/topology-mode": "Auto"}},
                          "spec": {"trafficDistribution": "PreferClose"}}),
    );
    assert_eq!(hints(&auto), None);
}

/// `topology-mode: Auto`: pods `zones[i]` on node `n<zone>`, ratios as given, existing slices.
fn auto_plan(
    svc: &Service,
    zones: &[Option<&str>],
    ratios: Option<&[(&str, f64)]>,
    existing: &[EndpointSlice],
    had_auto_hints: bool,
) -> Plan {
    let pods: Vec<Pod> = zones
        .iter()
        .enumerate()
        .map(|(i, z)| {
            pod(
                i,
                true,
                json!({"spec": {"nodeName": format!("n-{}", z.unwrap_or("none"))}}),
            )
        })
        .collect();
    let refs: Vec<&Pod> = pods.iter().collect();
    let nodes: NodeZones = zones
        .iter()
        .map(|z| (format!("n-{}", z.unwrap_or("none")), z.map(str::to_owned)))
        .collect();
    let ratios: Option<super::topology::ZoneRatios> =
        ratios.map(|r| r.iter().map(|(z, v)| (z.to_string(), *v)).collect());
    reconcile(
        svc,
        &Inputs {
            pods: &refs,
            nodes: &nodes,
            existing,
            max_endpoints: 100,
            trigger_time: None,
            zone_ratios: ratios.as_ref(),
            had_auto_hints,
        },
    )
}

fn auto_svc() -> Service {
    svc(json!({"metadata": {"annotations": {"service.kubernetes.io/topology-mode": "Auto"}}}))
}

/// Hints per zone across the slices, and the hints of the endpoints that sit in `zone`.
fn hint_counts(slices: &[EndpointSlice]) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for ep in slices.iter().flat_map(|s| &s.endpoints) {
        for z in ep.hints.iter().flat_map(|h| h.for_zones.iter().flatten()) {
            *out.entry(z.name.clone()).or_default() += 1;
        }
    }
    out
}

fn event_messages(p: &Plan) -> Vec<String> {
    p.events
        .iter()
        .map(|e| format!("{} {}: {}", e.type_, e.reason, e.message))
        .collect()
}

#[test]
fn endpointslice_auto_hints_follow_each_zones_cpu_share() {
    let a = Some("zone-a");
    let b = Some("zone-b");
    // Equal CPU, four endpoints in a and two in b: one of a's serves b (kube's redistribution).
    let p = auto_plan(
        &auto_svc(),
        &[a, a, a, a, b, b],
        Some(&[("zone-a", 0.5), ("zone-b", 0.5)]),
        &[],
        false,
    );
    assert!(p.auto_hints);
    assert_eq!(
        hint_counts(&p.create),
        [("zone-a".into(), 3), ("zone-b".into(), 3)].into()
    );
    // Endpoints in b keep their own zone; only a's give.
    for ep in p.create.iter().flat_map(|s| &s.endpoints) {
        if ep.zone.as_deref() == Some("zone-b") {
            assert_eq!(
                ep.hints.as_ref().unwrap().for_zones.as_ref().unwrap()[0].name,
                "zone-b"
            );
        }
    }
    assert_eq!(
        event_messages(&p),
        ["Normal TopologyAwareHintsEnabled: Topology Aware Hints has been enabled, addressType: IPv4"]
    );
    // Shares 3:1 over eight endpoints spread 4/4: b gives two to a.
    let p = auto_plan(
        &auto_svc(),
        &[a, a, a, a, b, b, b, b],
        Some(&[("zone-a", 0.75), ("zone-b", 0.25)]),
        &[],
        false,
    );
    assert_eq!(
        hint_counts(&p.create),
        [("zone-a".into(), 6), ("zone-b".into(), 2)].into()
    );

    // Synced again with the same inputs: nothing is written, and no second "enabled" Event.
    let mut counter = 0;
    let existing = apply(&[], &p, &mut counter);
    let again = auto_plan(
        &auto_svc(),
        &[a, a, a, a, b, b, b, b],
        Some(&[("zone-a", 0.75), ("zone-b", 0.25)]),
        &existing,
        true,
    );
    assert!(again.is_empty(), "{again:?}");
    assert!(again.auto_hints && again.events.is_empty());
    // Shares that move a little leave hints that still fit alone.
    let nudged = auto_plan(
        &auto_svc(),
        &[a, a, a, a, b, b, b, b],
        Some(&[("zone-a", 0.7), ("zone-b", 0.3)]),
        &existing,
        true,
    );
    assert!(nudged.is_empty(), "{nudged:?}");
    // Shares that turn around rewrite them: b now gets six.
    let turned = auto_plan(
        &auto_svc(),
        &[a, a, a, a, b, b, b, b],
        Some(&[("zone-a", 0.25), ("zone-b", 0.75)]),
        &existing,
        true,
    );
    let after = apply(&existing, &turned, &mut counter);
    assert_eq!(
        hint_counts(&after),
        [("zone-a".into(), 2), ("zone-b".into(), 6)].into()
    );

    // The annotation removed: hints go, with kube's Event.
    let off = auto_plan(
        &svc(json!({})),
        &[a, a, a, a, b, b, b, b],
        Some(&[("zone-a", 0.25), ("zone-b", 0.75)]),
        &after,
        true,
    );
    assert!(!off.auto_hints);
    assert!(hint_counts(&apply(&after, &off, &mut counter)).is_empty());
    assert_eq!(
        event_messages(&off),
        ["Warning TopologyAwareHintsDisabled: Topology Aware Hints has been disabled, addressType: IPv4"]
    );
}

#[test]
fn endpointslice_auto_hints_safeguards_withhold_hints_with_kubes_events() {
    let (a, b, c) = (Some("zone-a"), Some("zone-b"), Some("zone-c"));
    let two = [("zone-a", 0.5), ("zone-b", 0.5)];
    type Case<'a> = (&'a [Option<&'a str>], Option<&'a [(&'a str, f64)]>, &'a str);
    let cases: [Case; 4] = [
        (
            &[a, b],
            None,
            "Insufficient Node information: allocatable CPU or zone not specified on one or more nodes",
        ),
        (
            &[a, b],
            Some(&[("zone-a", 0.4), ("zone-b", 0.3), ("zone-c", 0.3)]),
            "Insufficient number of endpoints (2 endpoints, 3 zones)",
        ),
        (
            &[a, a, b],
            Some(&two),
            "Unable to allocate minimum required endpoints to each zone without exceeding overload threshold (3 endpoints, 2 zones)",
        ),
        (
            &[a, b, None, c],
            Some(&two),
            "One or more endpoints do not have a zone specified",
        ),
    ];
    for (zones, ratios, message) in cases {
        let p = auto_plan(&auto_svc(), zones, ratios, &[], false);
        assert!(!p.auto_hints, "{message}");
        assert!(hint_counts(&p.create).is_empty(), "{message}: {:?}", p.create);
        assert_eq!(
            event_messages(&p),
            [format!(
                "Warning TopologyAwareHintsDisabled: {message}, addressType: IPv4"
            )]
        );
    }
    // Slices that had hints lose them when a safeguard trips.
    let mut counter = 0;
    let hinted = auto_plan(&auto_svc(), &[a, a, b, b], Some(&two), &[], false);
    assert!(hinted.auto_hints);
    let existing = apply(&[], &hinted, &mut counter);
    let lost = auto_plan(&auto_svc(), &[a, a, b, b], None, &existing, true);
    assert_eq!(lost.update.len(), 1);
    assert!(hint_counts(&apply(&existing, &lost, &mut counter)).is_empty());
}

#[test]
fn endpointslice_zone_shares_count_ready_workers_with_zone_and_cpu() {
    use super::topology::{NodeCapacity, milli_value, zone_ratios};
    let node = |zone: Option<&str>, cpu: &str, ready: bool, labels: serde_json::Value| {
        let mut l = labels;
        if let Some(z) = zone {
            l[LABEL_ZONE] = json!(z);
        }
        let n: k8s_openapi::api::core::v1::Node = serde_json::from_value(json!({
            "metadata": {"name": "n", "labels": l},
            "status": {"allocatable": {"cpu": cpu},
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap();
        NodeCapacity::of(&n)
    };
    let nodes = [
        node(Some("zone-a"), "2", true, json!({})),
        node(Some("zone-a"), "1500m", true, json!({})),
        node(Some("zone-b"), "3500m", true, json!({})),
        // Not counted: not ready, or a control-plane node (even without a zone).
        node(Some("zone-c"), "8", false, json!({})),
        node(
            None,
            "8",
            true,
            json!({"node-role.kubernetes.io/control-plane": ""}),
        ),
    ];
    let r = zone_ratios(&nodes).unwrap();
    assert_eq!(r.keys().collect::<Vec<_>>(), ["zone-a", "zone-b"]);
    assert!((r["zone-a"] - 0.5).abs() < 1e-9 && (r["zone-b"] - 0.5).abs() < 1e-9);
    // One counted node without a zone, or without CPU, withholds every share; so does a single zone.
    let mut missing = nodes.to_vec();
    missing.push(node(None, "1", true, json!({})));
    assert_eq!(zone_ratios(&missing), None);
    let mut no_cpu = nodes.to_vec();
    no_cpu.push(node(Some("zone-b"), "0", true, json!({})));
    assert_eq!(zone_ratios(&no_cpu), None);
    assert_eq!(zone_ratios(&nodes[..2]), None);
    // Quantities as apimachinery reads them (rounded up to a thousandth).
    for (q, m) in [
        ("2", 2000),
        ("1500m", 1500),
        ("0.5", 500),
        ("1k", 1_000_000),
        ("1Ki", 1_024_000),
        ("1e3", 1_000_000),
        ("0.0001", 1),
    ] {
        assert_eq!(milli_value(q), Some(m), "{q}");
    }
    assert_eq!(milli_value("lots"), None);
}

#[test]
fn endpointslice_pod_finds_its_services_through_the_selector_index() {
    use super::Key;
    use super::cache::Cache;
    use super::selects;
    let mut c = Cache::default();
    // Selectors of one and two terms over three label keys, in two namespaces.
    let mut services = Vec::new();
    for (i, sel) in [
        json!({"app": "a"}),
        json!({"app": "a", "tier": "x"}),
        json!({"tier": "x"}),
        json!({"app": "b", "zone": "1"}),
        json!({"zone": "1"}),
    ]
    .into_iter()
    .enumerate()
    {
        for ns in ["default", "other"] {
            let mut s = svc(json!({"metadata": {"name": format!("s{i}"), "namespace": ns}}));
            s.spec.as_mut().unwrap().selector = Some(serde_json::from_value(sel.clone()).unwrap());
            services.push(s);
        }
    }
    // A Service without a selector selects nothing and is not indexed.
    let mut bare = svc(json!({"metadata": {"name": "bare"}}));
    bare.spec.as_mut().unwrap().selector = None;
    services.push(bare);
    for s in &services {
        let k = Key::new(
            s.metadata.namespace.clone().unwrap(),
            s.metadata.name.clone().unwrap(),
        );
        c.index_service(s, true);
        c.services.insert(k, std::sync::Arc::new(s.clone()));
    }
    let brute = |c: &Cache, p: &Pod| -> std::collections::BTreeSet<Key> {
        c.services
            .iter()
            .filter(|(k, s)| Some(&k.namespace) == p.metadata.namespace.as_ref() && selects(s, p))
            .map(|(k, _)| k.clone())
            .collect()
    };
    let label_sets = [
        json!({"app": "a"}),
        json!({"app": "a", "tier": "x"}),
        json!({"app": "b", "tier": "x", "zone": "1"}),
        json!({"zone": "2"}),
        json!({}),
    ];
    for (i, labels) in label_sets.iter().enumerate() {
        for ns in ["default", "other"] {
            let mut p = pod(i, true, json!({"metadata": {"namespace": ns}}));
            p.metadata.labels = Some(serde_json::from_value(labels.clone()).unwrap());
            assert_eq!(c.matching_services(&p), brute(&c, &p), "{ns} {labels}");
        }
    }
    // A selector change moves the Service in the index: old labels no longer find it, new ones do.
    let k = Key::new("default", "s0");
    let old = c.services[&k].clone();
    let mut new = (*old).clone();
    new.spec.as_mut().unwrap().selector = Some([("app".to_owned(), "z".to_owned())].into());
    c.index_service(&old, false);
    c.index_service(&new, true);
    c.services.insert(k.clone(), std::sync::Arc::new(new));
    let mut pa = pod(0, true, json!({}));
    pa.metadata.labels = Some([("app".to_owned(), "a".to_owned())].into());
    assert!(!c.matching_services(&pa).contains(&k));
    pa.metadata.labels = Some([("app".to_owned(), "z".to_owned())].into());
    assert_eq!(c.matching_services(&pa), [k].into());
}
