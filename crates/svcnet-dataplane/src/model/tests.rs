//! The model's rules (kube-proxy's endpoint selection) and its central property: incremental output applied
//! in order always equals a full recomputation.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use super::*;
use crate::types::{Change, FrontendKind};

fn svc(ns: &str, name: &str, extra: serde_json::Value) -> Service {
    let mut v = json!({
        "metadata": {"namespace": ns, "name": name},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.5", "clusterIPs": ["10.96.0.5"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).expect("service")
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

type OwnedEp = (
    String,
    bool,
    bool,
    bool,
    &'static str,
    Option<&'static [&'static str]>,
);

/// An endpoint: (ip, ready, serving, terminating, node, zone hints).
type Ep<'a> = (&'a str, bool, bool, bool, &'a str, Option<&'a [&'a str]>);

fn slice(ns: &str, svc: &str, name: &str, port: i32, eps: &[Ep]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, ready, serving, terminating, node, hints)| {
            let mut e = json!({
                "addresses": [ip],
                "conditions": {"ready": ready, "serving": serving, "terminating": terminating},
                "nodeName": node,
            });
            if let Some(h) = hints {
                e["hints"] = json!({"forZones": h.iter().map(|z| json!({"name": z})).collect::<Vec<_>>()});
            }
            e
        })
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": endpoints,
    }))
    .expect("slice")
}

fn model() -> Model {
    Model::new(ModelConfig {
        node_name: "n1".into(),
        node_zone: Some("z1".into()),
        ignore: vec![],
    })
}

fn only_port(m: &mut Model) -> Arc<ServicePort> {
    m.take_changes();
    let ports: Vec<_> = m.ports().cloned().collect();
    assert_eq!(ports.len(), 1, "{ports:#?}");
    ports[0].clone()
}

fn ips(eps: &[Endpoint]) -> Vec<String> {
    eps.iter().map(|e| e.addr().to_string()).collect()
}

#[test]
fn cluster_ip_uses_ready_endpoints_with_the_slice_port() {
    let mut m = model();
    m.upsert_service(&svc("default", "web", json!({})));
    m.upsert_slice(&slice(
        "default",
        "web",
        "web-1",
        8080,
        &[
            ("10.0.0.2", true, true, false, "n1", None),
            ("10.0.0.1", true, true, false, "n2", None),
            ("10.0.0.3", false, false, false, "n2", None),
        ],
    ));
    let p = only_port(&mut m);
    assert_eq!(p.name.to_string(), "default/web:http");
    assert_eq!(ips(&p.internal_endpoints), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    assert!(p.external_endpoints.is_empty(), "not externally accessible");
    assert_eq!(p.all_endpoints.len(), 3);
    assert!(p.has_endpoints);
    let fronts: Vec<_> = p.frontends().collect();
    assert_eq!(fronts.len(), 1);
    assert_eq!(fronts[0].kind, FrontendKind::ClusterIp);
}

#[test]
fn terminating_fallback_only_when_nothing_is_ready() {
    let mut m = model();
    m.upsert_service(&svc("default", "web", json!({})));
    m.upsert_slice(&slice(
        "default",
        "web",
        "web-1",
        8080,
        &[
            ("10.0.0.1", false, true, true, "n2", None),
            ("10.0.0.2", false, false, true, "n2", None),
        ],
    ));
    let p = only_port(&mut m);
    assert_eq!(ips(&p.internal_endpoints), ["10.0.0.1:8080"]);
    assert!(p.has_endpoints);
    // A ready endpoint appears: the terminating one is no longer used.
    m.upsert_slice(&slice(
        "default",
        "web",
        "web-2",
        8080,
        &[("10.0.0.9", true, true, false, "n2", None)],
    ));
    let p = only_port(&mut m);
    assert_eq!(ips(&p.internal_endpoints), ["10.0.0.9:8080"]);
}

#[test]
fn no_endpoints_means_reject() {
    let mut m = model();
    m.upsert_service(&svc("default", "web", json!({})));
    let p = only_port(&mut m);
    assert!(!p.has_endpoints);
    assert!(p.internal_endpoints.is_empty());
}

#[test]
fn internal_traffic_policy_local_keeps_this_nodes_endpoints() {
    let mut m = model();
    m.upsert_service(&svc(
        "default",
        "web",
        json!({"spec": {"internalTrafficPolicy": "Local"}}),
    ));
    m.upsert_slice(&slice(
        "default",
        "web",
        "web-1",
        8080,
        &[("10.0.0.1", true, true, false, "n2", None)],
    ));
    let p = only_port(&mut m);
    // Endpoints exist elsewhere, none here: drop (has_endpoints) rather than reject.
    assert!(p.internal_endpoints.is_empty());
    assert!(p.has_endpoints);
    m.upsert_slice(&slice(
        "default",
        "web",
        "web-2",
        8080,
        &[("10.0.0.2", true, true, false, "n1", None)],
    ));
    let p = only_port(&mut m);
    assert_eq!(ips(&p.internal_endpoints), ["10.0.0.2:8080"]);
}

#[test]
fn external_traffic_policy_local_applies_to_external_frontends_only() {
    let mut m = model();
    m.upsert_service(&svc(
        "default",
        "web",
        json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 32100,
                        "ports": [{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30080}],
                        "loadBalancerSourceRanges": ["192.168.0.0/16"]},
               "status": {"loadBalancer": {"ingress": [{"ip": "172.18.0.10"}, {"ip": "172.18.0.11", "ipMode": "Proxy"}]}}}),
    ));
    m.upsert_slice(&slice(
        "default",
        "web",
        "web-1",
        8080,
        &[
            ("10.0.0.1", true, true, false, "n2", None),
            ("10.0.0.2", true, true, false, "n1", None),
        ],
    ));
    let p = only_port(&mut m);
    assert!(p.external_policy_local);
    assert_eq!(p.node_port, Some(30080));
    assert_eq!(p.health_check_node_port, Some(32100));
    assert_eq!(p.load_balancer_ips, ["172.18.0.10".parse::<IpAddr>().unwrap()]);
    assert_eq!(p.load_balancer_source_ranges.len(), 1);
    assert_eq!(ips(&p.internal_endpoints), ["10.0.0.1:8080", "10.0.0.2:8080"]);
    assert_eq!(ips(&p.external_endpoints), ["10.0.0.2:8080"]);
    assert_eq!(ips(p.endpoints_for(FrontendKind::NodePort)), ["10.0.0.2:8080"]);
    assert_eq!(p.frontends().count(), 3);
}

#[test]
fn external_policy_local_is_ignored_on_cluster_ip_services() {
    let mut m = model();
    m.upsert_service(&svc(
        "default",
        "web",
        json!({"spec": {"externalTrafficPolicy": "Local", "externalIPs": ["192.0.2.1"]}}),
    ));
    m.upsert_slice(&slice(
        "default",
        "web",
        "web-1",
        8080,
        &[("10.0.0.1", true, true, false, "n2", None)],
    ));
    let p = only_port(&mut m);
    assert!(!p.external_policy_local);
    assert_eq!(ips(&p.external_endpoints), ["10.0.0.1:8080"]);
}

#[test]
fn topology_hints_apply_only_when_every_ready_endpoint_has_them() {
    let mut m = model();
    m.upsert_service(&svc(
        "default",
        "web",
        json!({"spec": {"trafficDistribution": "PreferClose"}}),
    ));
    m.upsert_slice(&slice(
        "default",
        "web",
        "web-1",
        8080,
        &[
            ("10.0.0.1", true, true, false, "n2", Some(&["z1"])),
            ("10.0.0.2", true, true, false, "n3", Some(&["z2"])),
        ],
    ));
    let p = only_port(&mut m);
    assert_eq!(ips(&p.internal_endpoints), ["10.0.0.1:8080"]);
    // One ready endpoint without hints: hints are ignored.
    m.upsert_slice(&slice(
        "default",
        "web",
        "web-2",
        8080,
        &[("10.0.0.3", true, true, false, "n3", None)],
    ));
    let p = only_port(&mut m);
    assert_eq!(ips(&p.internal_endpoints).len(), 3);
    // Without trafficDistribution or the topology annotation, hints are ignored too.
    let mut m = model();
    m.upsert_service(&svc("default", "web", json!({})));
    m.upsert_slice(&slice(
        "default",
        "web",
        "web-1",
        8080,
        &[
            ("10.0.0.1", true, true, false, "n2", Some(&["z1"])),
            ("10.0.0.2", true, true, false, "n3", Some(&["z2"])),
        ],
    ));
    assert_eq!(only_port(&mut m).internal_endpoints.len(), 2);
}

#[test]
fn skipped_services() {
    let mut m = Model::new(ModelConfig {
        node_name: "n1".into(),
        node_zone: None,
        ignore: vec![("kube-system".into(), "kube-dns".into())],
    });
    m.upsert_service(&svc(
        "default",
        "headless",
        json!({"spec": {"clusterIP": "None", "clusterIPs": ["None"]}}),
    ));
    m.upsert_service(&svc(
        "default",
        "ext",
        json!({"spec": {"type": "ExternalName", "externalName": "example.com"}}),
    ));
    m.upsert_service(&svc(
        "default",
        "other",
        json!({"metadata": {"labels": {SERVICE_PROXY_NAME_LABEL: "foo"}}}),
    ));
    m.upsert_service(&svc(
        "default",
        "labelled-headless",
        json!({"metadata": {"labels": {HEADLESS_LABEL: ""}}}),
    ));
    m.upsert_service(&svc("kube-system", "kube-dns", json!({})));
    assert!(m.take_changes().changes.is_empty());

    // Taking a label off makes the Service one of ours (e2e "should implement service.kubernetes.io/...").
    m.upsert_service(&svc("default", "labelled-headless", json!({})));
    m.upsert_service(&svc(
        "default",
        "other",
        json!({"metadata": {"labels": {"app": "x"}}}),
    ));
    let names: Vec<String> = m
        .take_changes()
        .changes
        .iter()
        .map(|c| c.name().to_string())
        .collect();
    assert_eq!(names, ["default/labelled-headless:http", "default/other:http"]);
    m.upsert_service(&svc(
        "default",
        "other",
        json!({"metadata": {"labels": {SERVICE_PROXY_NAME_LABEL: "foo"}}}),
    ));
    assert!(matches!(m.take_changes().changes.as_slice(), [Change::Remove(_)]));
}

#[test]
fn affinity_and_balance_annotation() {
    let mut m = model();
    m.upsert_service(&svc(
        "default",
        "web",
        json!({"metadata": {"annotations": {"svcnet.io/balance": "maglev"}},
               "spec": {"sessionAffinity": "ClientIP"}}),
    ));
    let p = only_port(&mut m);
    assert_eq!(p.affinity_timeout, Some(Duration::from_secs(10800)));
    assert_eq!(p.balance, Some(crate::Balance::Maglev));
    m.upsert_service(&svc(
        "default",
        "web",
        json!({"spec": {"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}}),
    ));
    assert_eq!(only_port(&mut m).affinity_timeout, Some(Duration::from_secs(5)));
}

#[test]
fn changes_are_minimal() {
    let mut m = model();
    m.upsert_service(&svc("default", "a", json!({})));
    m.upsert_service(&svc("default", "b", json!({})));
    assert_eq!(m.take_changes().changes.len(), 2);
    // An identical update reports nothing.
    m.upsert_service(&svc("default", "a", json!({})));
    assert!(m.take_changes().changes.is_empty());
    // A slice for `a` changes `a` only, and the change carries the old value.
    m.upsert_slice(&slice(
        "default",
        "a",
        "a-1",
        8080,
        &[("10.0.0.1", true, true, false, "n2", None)],
    ));
    let out = m.take_changes().changes;
    assert_eq!(out.len(), 1);
    match &out[0] {
        Change::Upsert { old: Some(old), new } => {
            assert_eq!(&*old.name.name, "a");
            assert!(old.internal_endpoints.is_empty());
            assert_eq!(new.internal_endpoints.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    m.delete_service("default", "a");
    let out = m.take_changes().changes;
    assert!(matches!(&out[..], [Change::Remove(p)] if &*p.name.name == "a"));
}

#[test]
fn trigger_times_are_reported_once() {
    let mut m = model();
    m.upsert_service(&svc("default", "a", json!({})));
    let mut s = slice("default", "a", "a-1", 8080, &[]);
    s.metadata.annotations = Some(
        [(
            TRIGGER_TIME_ANNOTATION.to_string(),
            "2026-01-02T03:04:05Z".to_string(),
        )]
        .into_iter()
        .collect(),
    );
    m.upsert_slice(&s);
    assert_eq!(m.take_changes().trigger_times.len(), 1);
    assert!(m.take_changes().trigger_times.is_empty());
}

/// The central property: a random sequence of events, with changes taken at random points and applied to a
/// replica, always leaves the replica equal to a full recomputation from the same inputs.
#[test]
fn incremental_equals_full_recomputation() {
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut m = model();
        let mut replica: BTreeMap<ServicePortName, Arc<ServicePort>> = BTreeMap::new();
        let names = ["a", "b", "c", "d"];
        let nodes = ["n1", "n2"];
        for step in 0..300 {
            let svc_name = names[rng.random_range(0..names.len())];
            match rng.random_range(0..10) {
                0 => m.delete_service("default", svc_name),
                1 | 2 => {
                    let mut spec =
                        json!({"internalTrafficPolicy": if rng.random_bool(0.3) {"Local"} else {"Cluster"}});
                    if rng.random_bool(0.4) {
                        spec["type"] = json!("NodePort");
                        spec["externalTrafficPolicy"] =
                            json!(if rng.random_bool(0.5) { "Local" } else { "Cluster" });
                        spec["ports"] = json!([{"name": "http", "port": 80, "protocol": "TCP", "nodePort": 30000 + rng.random_range(0..5)},
                                               {"name": "dns", "port": 53, "protocol": "UDP", "nodePort": 30100}]);
                    }
                    if rng.random_bool(0.2) {
                        spec["clusterIP"] = json!("None");
                        spec["clusterIPs"] = json!(["None"]);
                    }
                    m.upsert_service(&svc("default", svc_name, json!({"spec": spec})));
                }
                3 => m.delete_slice("default", &format!("{svc_name}-{}", rng.random_range(0..2))),
                4 => m.set_node_zone(if rng.random_bool(0.5) {
                    Some("z1".into())
                } else {
                    None
                }),
                _ => {
                    let n = rng.random_range(0..4);
                    let eps: Vec<OwnedEp> = (0..n)
                        .map(|_| {
                            (
                                format!("10.0.0.{}", rng.random_range(1..6)),
                                rng.random_bool(0.6),
                                rng.random_bool(0.5),
                                rng.random_bool(0.3),
                                nodes[rng.random_range(0..2)],
                                None,
                            )
                        })
                        .collect();
                    let eps: Vec<Ep> = eps
                        .iter()
                        .map(|(ip, a, b, c, d, e)| (ip.as_str(), *a, *b, *c, *d, *e))
                        .collect();
                    let idx = rng.random_range(0..2);
                    // Sometimes a slice moves to another Service (label change).
                    let owner = if rng.random_bool(0.1) {
                        names[rng.random_range(0..names.len())]
                    } else {
                        svc_name
                    };
                    m.upsert_slice(&slice(
                        "default",
                        owner,
                        &format!("{svc_name}-{idx}"),
                        8080 + idx,
                        &eps,
                    ));
                }
            }
            if rng.random_bool(0.3) || step == 299 {
                for c in m.take_changes().changes {
                    match c {
                        Change::Upsert { old, new } => {
                            assert_eq!(
                                replica.get(&new.name).cloned(),
                                old,
                                "seed {seed} step {step}: old value"
                            );
                            replica.insert(new.name.clone(), new);
                        }
                        Change::Remove(old) => {
                            assert_eq!(
                                replica.remove(&old.name).as_ref(),
                                Some(&old),
                                "seed {seed} step {step}"
                            );
                        }
                    }
                }
                let full = m.compute_all();
                let got: BTreeMap<_, _> = replica.iter().map(|(k, v)| (k.clone(), (**v).clone())).collect();
                assert_eq!(got, full, "seed {seed} step {step}");
                assert_eq!(m.port_count(), full.len());
            }
        }
    }
}
