//! Tests of apply and update tracking, following kube-apiserver's behaviour.

use serde_json::{Value, json};

use super::*;

const T0: &str = "2024-01-01T00:00:00Z";
const T1: &str = "2024-01-01T00:01:00Z";
const T2: &str = "2024-01-01T00:02:00Z";

fn opts<'a>(manager: &'a str, now: &'a str) -> ApplyOptions<'a> {
    ApplyOptions {
        manager,
        force: false,
        subresource: None,
        now,
    }
}

fn entry<'a>(obj: &'a Value, manager: &str) -> &'a Value {
    obj["metadata"]["managedFields"]
        .as_array()
        .and_then(|l| l.iter().find(|e| e["manager"] == manager))
        .unwrap_or_else(|| panic!("no entry for {manager} in {obj:#}"))
}

fn has_entry(obj: &Value, manager: &str) -> bool {
    obj["metadata"]["managedFields"]
        .as_array()
        .is_some_and(|l| l.iter().any(|e| e["manager"] == manager))
}

fn fields(obj: &Value, manager: &str) -> String {
    serde_json::to_string(&entry(obj, manager)["fieldsV1"]).unwrap()
}

fn service(target_port: i64) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"port": 80, "protocol": "TCP", "targetPort": target_port}]
        }
    })
}

fn conflicts(err: ApplyError) -> Vec<Conflict> {
    match err {
        ApplyError::Conflicts(c) => c,
        other => panic!("expected conflicts, got {other:?}"),
    }
}

#[test]
fn apply_create_records_apply_entry() {
    let out = apply(None, &service(8080), &opts("kubectl", T0)).unwrap();
    assert_eq!(out["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(out["metadata"]["name"], "web");
    let e = entry(&out, "kubectl");
    assert_eq!(e["operation"], "Apply");
    assert_eq!(e["apiVersion"], "v1");
    assert_eq!(e["time"], T0);
    assert_eq!(e["fieldsType"], "FieldsV1");
    assert!(e.get("subresource").is_none());
    assert_eq!(
        fields(&out, "kubectl"),
        r#"{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{},"f:protocol":{},"f:targetPort":{}}},"f:selector":{}}}"#
    );
    // Entry keys in kube's order.
    let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "manager",
            "operation",
            "apiVersion",
            "time",
            "fieldsType",
            "fieldsV1"
        ]
    );
}

#[test]
fn reapply_unchanged_keeps_time_and_object() {
    let live = apply(None, &service(8080), &opts("kubectl", T0)).unwrap();
    let again = apply(Some(&live), &service(8080), &opts("kubectl", T1)).unwrap();
    assert_eq!(again, live);
    assert_eq!(entry(&again, "kubectl")["time"], T0);
}

#[test]
fn reapply_changed_updates_time() {
    let live = apply(None, &service(8080), &opts("kubectl", T0)).unwrap();
    let again = apply(Some(&live), &service(9090), &opts("kubectl", T1)).unwrap();
    assert_eq!(again["spec"]["ports"][0]["targetPort"], 9090);
    assert_eq!(entry(&again, "kubectl")["time"], T1);
}

#[test]
fn removing_a_field_from_config_removes_it() {
    let live = apply(None, &service(8080), &opts("kubectl", T0)).unwrap();
    let mut cfg = service(8080);
    cfg["metadata"].as_object_mut().unwrap().remove("labels");
    cfg["spec"]["ports"][0]
        .as_object_mut()
        .unwrap()
        .remove("targetPort");
    let out = apply(Some(&live), &cfg, &opts("kubectl", T1)).unwrap();
    assert!(out["metadata"].get("labels").is_none(), "{out:#}");
    assert!(out["spec"]["ports"][0].get("targetPort").is_none());
    assert_eq!(out["spec"]["ports"][0]["port"], 80);
    assert!(!fields(&out, "kubectl").contains("targetPort"));
    assert!(!fields(&out, "kubectl").contains("f:labels"));
}

#[test]
fn removing_a_field_owned_by_another_manager_keeps_it() {
    let live = apply(None, &service(8080), &opts("a", T0)).unwrap();
    let live = apply(Some(&live), &service(8080), &opts("b", T1)).unwrap();
    let mut cfg = service(8080);
    cfg["metadata"].as_object_mut().unwrap().remove("labels");
    let out = apply(Some(&live), &cfg, &opts("a", T2)).unwrap();
    assert_eq!(out["metadata"]["labels"]["app"], "web");
    assert!(fields(&out, "b").contains("f:labels"));
    assert!(!fields(&out, "a").contains("f:labels"));
}

#[test]
fn removing_a_list_item_removes_it() {
    let mut cfg = service(8080);
    cfg["spec"]["ports"]
        .as_array_mut()
        .unwrap()
        .push(json!({"port": 443, "targetPort": 8443}));
    let live = apply(None, &cfg, &opts("kubectl", T0)).unwrap();
    assert_eq!(live["spec"]["ports"].as_array().unwrap().len(), 2);
    let out = apply(Some(&live), &service(8080), &opts("kubectl", T1)).unwrap();
    assert_eq!(
        out["spec"]["ports"],
        json!([{"port": 80, "protocol": "TCP", "targetPort": 8080}])
    );
    assert!(!fields(&out, "kubectl").contains("443"));
}

#[test]
fn shared_ownership_with_same_value() {
    let live = apply(None, &service(8080), &opts("a", T0)).unwrap();
    let out = apply(Some(&live), &service(8080), &opts("b", T1)).unwrap();
    assert_eq!(fields(&out, "a"), fields(&out, "b"));
    // The object did not change, so kube does not stamp b's entry.
    assert!(entry(&out, "b").get("time").is_none());
    assert_eq!(entry(&out, "a")["time"], T0);
}

#[test]
fn conflict_then_force() {
    let live = apply(None, &service(8080), &opts("a", T0)).unwrap();
    let err = apply(Some(&live), &service(9090), &opts("b", T1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "a": .spec.ports[port=80,protocol="TCP"].targetPort"#
    );
    let forced = apply(
        Some(&live),
        &service(9090),
        &ApplyOptions {
            force: true,
            ..opts("b", T1)
        },
    )
    .unwrap();
    assert_eq!(forced["spec"]["ports"][0]["targetPort"], 9090);
    assert!(!fields(&forced, "a").contains("targetPort"));
    assert!(fields(&forced, "a").contains("f:port"));
    assert!(fields(&forced, "b").contains("targetPort"));
    assert_eq!(entry(&forced, "b")["time"], T1);
    assert_eq!(entry(&forced, "a")["time"], T0);
}

#[test]
fn client_side_apply_update_then_apply_conflict() {
    let created = track_update(None, &service(8080), "kubectl-client-side-apply", None, T0);
    let e = entry(&created, "kubectl-client-side-apply");
    assert_eq!(e["operation"], "Update");
    assert_eq!(e["time"], T0);
    assert_eq!(
        fields(&created, "kubectl-client-side-apply"),
        r#"{"f:metadata":{"f:labels":{".":{},"f:app":{}}},"f:spec":{"f:ports":{".":{},"k:{\"port\":80,\"protocol\":\"TCP\"}":{".":{},"f:port":{},"f:protocol":{},"f:targetPort":{}}},"f:selector":{}}}"#
    );
    let err = apply(Some(&created), &service(9090), &opts("kubectl", T1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "kubectl-client-side-apply" using v1: .spec.ports[port=80,protocol="TCP"].targetPort"#
    );
    assert_eq!(
        err.causes(),
        vec![(
            r#".spec.ports[port=80,protocol="TCP"].targetPort"#.to_string(),
            r#"conflict with "kubectl-client-side-apply" using v1"#.to_string()
        )]
    );
    // Applying the same values shares ownership without a conflict.
    let shared = apply(Some(&created), &service(8080), &opts("kubectl", T1)).unwrap();
    assert!(has_entry(&shared, "kubectl-client-side-apply"));
    assert!(fields(&shared, "kubectl").contains("targetPort"));
}

#[test]
fn multiple_conflicts_message() {
    let live = apply(None, &service(8080), &opts("a", T0)).unwrap();
    let mut cfg = service(9090);
    cfg["spec"]["selector"] = json!({"app": "other"});
    let cs = conflicts(apply(Some(&live), &cfg, &opts("b", T1)).unwrap_err());
    let msg = ApplyError::Conflicts(cs.clone()).to_string();
    assert_eq!(
        msg,
        "Apply failed with 2 conflicts: conflicts with \"a\":\n- .spec.ports[port=80,protocol=\"TCP\"].targetPort\n- .spec.selector"
    );
    assert_eq!(cs.len(), 2);
}

#[test]
fn associative_merge_of_service_ports() {
    let live = apply(None, &service(8080), &opts("a", T0)).unwrap();
    let cfg = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"port": 443, "targetPort": 8443}]}
    });
    let out = apply(Some(&live), &cfg, &opts("b", T1)).unwrap();
    assert_eq!(
        out["spec"]["ports"],
        json!([{"port": 80, "protocol": "TCP", "targetPort": 8080}, {"port": 443, "targetPort": 8443}])
    );
    assert!(fields(&out, "b").contains(r#"k:{\"port\":443,\"protocol\":\"TCP\"}"#));
    // Same port, different protocol, is a different item.
    let udp = json!({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80, "protocol": "UDP", "targetPort": 53}]}
    });
    let out = apply(Some(&out), &udp, &opts("c", T2)).unwrap();
    assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 3);
}

fn pod(containers: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": containers}})
}

#[test]
fn associative_merge_of_pod_containers() {
    let live = apply(
        None,
        &pod(json!([{"name": "app", "image": "app:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]}])),
        &opts("a", T0),
    )
    .unwrap();
    assert_eq!(
        fields(&live, "a"),
        r#"{"f:spec":{"f:containers":{"k:{\"name\":\"app\"}":{".":{},"f:env":{"k:{\"name\":\"A\"}":{".":{},"f:name":{},"f:value":{}}},"f:image":{},"f:name":{},"f:ports":{"k:{\"containerPort\":80,\"protocol\":\"TCP\"}":{".":{},"f:containerPort":{}}}}}}}"#
    );
    let out = apply(
        Some(&live),
        &pod(json!([{"name": "sidecar", "image": "side:1"}, {"name": "app", "env": [{"name": "B", "value": "2"}]}])),
        &opts("b", T1),
    )
    .unwrap();
    let containers = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    assert_eq!(containers[0]["name"], "sidecar");
    assert_eq!(containers[1]["image"], "app:1");
    assert_eq!(
        containers[1]["env"],
        json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}])
    );
}

#[test]
fn atomic_selector_is_replaced_and_owned_whole() {
    let live = apply(None, &service(8080), &opts("a", T0)).unwrap();
    let mut cfg = service(8080);
    cfg["spec"]["selector"] = json!({"tier": "front"});
    let out = apply(Some(&live), &cfg, &opts("a", T1)).unwrap();
    assert_eq!(out["spec"]["selector"], json!({"tier": "front"}));
    assert!(fields(&out, "a").contains(r#""f:selector":{}"#));
    // Another manager setting one key conflicts on the whole selector.
    let other = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"}, "spec": {"selector": {"tier": "front", "x": "y"}}});
    let cs = conflicts(apply(Some(&out), &other, &opts("b", T2)).unwrap_err());
    assert_eq!(cs[0].field, ".spec.selector");
}

#[test]
fn granular_labels_merge() {
    let live = apply(None, &service(8080), &opts("a", T0)).unwrap();
    let cfg =
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"team": "x"}}});
    let out = apply(Some(&live), &cfg, &opts("b", T1)).unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"app": "web", "team": "x"}));
    assert_eq!(fields(&out, "b"), r#"{"f:metadata":{"f:labels":{"f:team":{}}}}"#);
}

#[test]
fn finalizers_merge_as_a_set() {
    let mk = |f: Value| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns", "finalizers": f}});
    let live = apply(None, &mk(json!(["a"])), &opts("x", T0)).unwrap();
    let out = apply(Some(&live), &mk(json!(["b"])), &opts("y", T1)).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
    assert_eq!(
        fields(&out, "y"),
        r#"{"f:metadata":{"f:finalizers":{"v:\"b\"":{}}}}"#
    );
}

#[test]
fn rejects_bad_type_and_managed_fields() {
    let mut cfg = service(1);
    cfg.as_object_mut().unwrap().remove("kind");
    assert_eq!(
        apply(None, &cfg, &opts("a", T0)).unwrap_err().to_string(),
        "invalid object type: /v1, Kind="
    );
    let live = apply(None, &service(1), &opts("a", T0)).unwrap();
    let mut other = service(1);
    other["kind"] = json!("Pod");
    let err = apply(Some(&live), &other, &opts("a", T0)).unwrap_err();
    assert_eq!(err.to_string(), "invalid object type: /v1, Kind=Pod");
    assert_eq!(err.code(), 400);
    let mut dep = service(1);
    dep["apiVersion"] = json!("apps/v1");
    assert_eq!(
        apply(Some(&live), &dep, &opts("a", T0)).unwrap_err().to_string(),
        "invalid object type: apps/v1, Kind=Service"
    );
    let mut mf = service(1);
    mf["metadata"]["managedFields"] = json!([]);
    assert_eq!(
        apply(None, &mf, &opts("a", T0)).unwrap_err().to_string(),
        "metadata.managedFields must be nil"
    );
    assert!(apply(None, &json!([1]), &opts("a", T0)).is_err());
    assert!(apply(None, &json!(null), &opts("a", T0)).is_err());
}

#[test]
fn ignores_server_metadata_and_status() {
    let live = track_update(None, &service(1), "creator", None, T0);
    let mut live = live;
    live["metadata"]["uid"] = json!("u-1");
    live["metadata"]["resourceVersion"] = json!("5");
    live["metadata"]["creationTimestamp"] = json!(T0);
    let mut cfg = service(1);
    cfg["metadata"]["uid"] = json!("other");
    cfg["metadata"]["resourceVersion"] = json!("999");
    cfg["metadata"]["creationTimestamp"] = json!("1999-01-01T00:00:00Z");
    cfg["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}});
    let out = apply(Some(&live), &cfg, &opts("a", T1)).unwrap();
    assert_eq!(out["metadata"]["uid"], "u-1");
    assert_eq!(out["metadata"]["resourceVersion"], "5");
    assert_eq!(out["metadata"]["creationTimestamp"], T0);
    assert!(out.get("status").is_none());
    let f = fields(&out, "a");
    assert!(
        !f.contains("status") && !f.contains("f:uid") && !f.contains("f:name"),
        "{f}"
    );
}

#[test]
fn status_subresource_apply() {
    let live = apply(None, &service(1), &opts("a", T0)).unwrap();
    let mut cfg = service(2);
    cfg["status"] = json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}});
    let o = ApplyOptions {
        subresource: Some("status"),
        ..opts("lb-controller", T1)
    };
    let out = apply(Some(&live), &cfg, &o).unwrap();
    assert_eq!(
        out["spec"]["ports"][0]["targetPort"], 1,
        "spec is ignored on status"
    );
    assert_eq!(out["status"]["loadBalancer"]["ingress"][0]["ip"], "1.2.3.4");
    let e = entry(&out, "lb-controller");
    assert_eq!(e["subresource"], "status");
    let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "manager",
            "operation",
            "apiVersion",
            "time",
            "fieldsType",
            "fieldsV1",
            "subresource"
        ]
    );
    assert!(fields(&out, "lb-controller").contains("f:status"));
    assert!(
        fields(&out, "lb-controller").contains("f:labels"),
        "metadata is still applied"
    );
}

#[test]
fn apply_rejects_duplicate_keys_with_kube_text() {
    let mut cfg = service(1);
    cfg["spec"]["ports"] = json!([{"port": 80}, {"port": 80}]);
    let err = apply(None, &cfg, &opts("a", T0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"failed to create typed patch object (default/web; /v1, Kind=Service): .spec.ports: duplicate entries for key [port=80,protocol="TCP"]"#
    );
}

#[test]
fn apply_with_undecodable_live_managed_fields_fails() {
    let mut live = service(1);
    live["metadata"]["managedFields"] =
        json!([{"manager": "x", "operation": "Bogus", "apiVersion": "v1", "fieldsType": "FieldsV1"}]);
    let err = apply(Some(&live), &service(1), &opts("a", T0)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to decode managed fields: operation must be `Apply` or `Update`"
    );
}

#[test]
fn unknown_kind_uses_deduced_types() {
    let cr = |items: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"items": items, "size": 1}});
    let live = apply(None, &cr(json!([1, 2])), &opts("a", T0)).unwrap();
    assert_eq!(
        fields(&live, "a"),
        r#"{"f:spec":{".":{},"f:items":{},"f:size":{}}}"#
    );
    let out = apply(Some(&live), &cr(json!([3])), &opts("a", T1)).unwrap();
    assert_eq!(out["spec"]["items"], json!([3]), "lists are atomic");
}

#[test]
fn update_takes_changed_fields_from_others() {
    let created = track_update(None, &service(8080), "kubectl-client-side-apply", None, T0);
    let mut edited = created.clone();
    edited["spec"]["ports"][0]["targetPort"] = json!(9090);
    edited["metadata"]["labels"]["env"] = json!("prod");
    let out = track_update(Some(&created), &edited, "kubectl-edit", None, T1);
    assert_eq!(
        fields(&out, "kubectl-edit"),
        r#"{"f:metadata":{"f:labels":{"f:env":{}}},"f:spec":{"f:ports":{"k:{\"port\":80,\"protocol\":\"TCP\"}":{"f:targetPort":{}}}}}"#
    );
    assert_eq!(entry(&out, "kubectl-edit")["time"], T1);
    assert!(!fields(&out, "kubectl-client-side-apply").contains("targetPort"));
    assert_eq!(
        entry(&out, "kubectl-client-side-apply")["time"],
        T0,
        "only the writer's time changes"
    );
    // The update entries are sorted by time.
    let names: Vec<&str> = out["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["manager"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["kubectl-client-side-apply", "kubectl-edit"]);
}

#[test]
fn update_without_changes_keeps_everything() {
    let created = track_update(None, &service(8080), "creator", None, T0);
    let same = track_update(Some(&created), &created, "kubectl-label", None, T1);
    assert_eq!(same, created);
    assert!(!has_entry(&same, "kubectl-label"));
}

#[test]
fn update_drops_entries_left_empty_and_removed_fields() {
    let created = track_update(None, &service(8080), "creator", None, T0);
    let mut labelled = created.clone();
    labelled["metadata"]["labels"]["team"] = json!("x");
    let labelled = track_update(Some(&created), &labelled, "kubectl-label", None, T1);
    assert!(has_entry(&labelled, "kubectl-label"));
    let mut unlabelled = labelled.clone();
    unlabelled["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("team");
    let out = track_update(Some(&labelled), &unlabelled, "kubectl-label", None, T2);
    assert!(!has_entry(&out, "kubectl-label"), "{out:#}");
    assert_eq!(entry(&out, "creator")["time"], T0);
}

#[test]
fn update_reset_and_request_managed_fields() {
    let created = track_update(None, &service(8080), "creator", None, T0);
    // A request carrying an empty list resets managedFields.
    let mut reset = created.clone();
    reset["metadata"]["managedFields"] = json!([]);
    let out = track_update(Some(&created), &reset, "kubectl", None, T1);
    assert!(out["metadata"].get("managedFields").is_none(), "{out:#}");
    // A request without managedFields keeps the live ones.
    let mut stripped = created.clone();
    stripped["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    let out = track_update(Some(&created), &stripped, "kubectl", None, T1);
    assert_eq!(
        out["metadata"]["managedFields"],
        created["metadata"]["managedFields"]
    );
}

#[test]
fn update_on_status_subresource() {
    let created = track_update(None, &service(8080), "creator", None, T0);
    let mut with_status = created.clone();
    with_status["status"] = json!({"loadBalancer": {"ingress": [{"ip": "10.0.0.1"}]}});
    let out = track_update(Some(&created), &with_status, "lb", Some("status"), T1);
    let e = entry(&out, "lb");
    assert_eq!(e["subresource"], "status");
    // Kube would not list `.status.loadBalancer` itself (Go always
    // serializes that non-pointer struct); only top-level structs are
    // normalized here.
    assert_eq!(
        fields(&out, "lb"),
        r#"{"f:status":{"f:loadBalancer":{".":{},"f:ingress":{}}}}"#
    );
}

#[test]
fn update_create_of_unknown_kind_owns_spec_itself() {
    let cr = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": 1}});
    let out = track_update(None, &cr, "", None, T0);
    assert_eq!(fields(&out, "unknown"), r#"{"f:spec":{".":{},"f:size":{}}}"#);
}

#[test]
fn apply_after_update_then_update_by_applier_fields() {
    // An applier and an updater: the updater changing an applied field
    // takes it over; the applier re-applying conflicts.
    let live = apply(None, &service(8080), &opts("kubectl", T0)).unwrap();
    let mut edited = live.clone();
    edited["spec"]["ports"][0]["targetPort"] = json!(7070);
    let edited = track_update(Some(&live), &edited, "kubectl-edit", None, T1);
    assert!(!fields(&edited, "kubectl").contains("targetPort"));
    let err = apply(Some(&edited), &service(8080), &opts("kubectl", T2)).unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"Apply failed with 1 conflict: conflict with "kubectl-edit" using v1: .spec.ports[port=80,protocol="TCP"].targetPort"#
    );
}

#[test]
fn deployment_selector_is_atomic_struct() {
    let dep = |labels: Value| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
        })
    };
    let live = apply(None, &dep(json!({"app": "d"})), &opts("a", T0)).unwrap();
    assert_eq!(
        fields(&live, "a"),
        r#"{"f:spec":{"f:selector":{},"f:template":{"f:metadata":{"f:labels":{"f:app":{}}},"f:spec":{"f:containers":{"k:{\"name\":\"c\"}":{".":{},"f:image":{},"f:name":{}}}}}}}"#
    );
    let out = apply(Some(&live), &dep(json!({"tier": "x"})), &opts("a", T1)).unwrap();
    assert_eq!(out["spec"]["selector"], json!({"matchLabels": {"tier": "x"}}));
}

#[test]
fn no_panic_on_odd_inputs() {
    let odd = [
        json!({"apiVersion": "v1", "kind": "Service", "metadata": null, "spec": "x"}),
        json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": "nope", "selector": [1]}}),
        json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [1, null, {"port": 1}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "spec": {"containers": [{"name": {"x": 1}}]}}),
    ];
    for v in &odd {
        let _ = apply(None, v, &opts("a", T0));
        let _ = track_update(None, v, "a", None, T0);
        let live = track_update(None, &service(1), "a", None, T0);
        let _ = apply(Some(&live), v, &opts("b", T0));
        let _ = track_update(Some(&live), v, "b", None, T1);
        let _ = track_update(Some(v), &live, "b", None, T1);
    }
    assert_eq!(track_update(None, &json!(3), "a", None, T0), json!(3));
}
