//! Tests of the table printers, many against kube's own outputs.

use super::*;
use svcnet_kinds::columns::{DOC_CREATION_TIMESTAMP, DOC_NAME};

fn now() -> Timestamp {
    "2024-05-01T12:00:00Z".parse().unwrap()
}

/// An RFC 3339 time `secs` seconds before [`now`].
fn ago(secs: i64) -> String {
    (now() - SignedDuration::from_secs(secs)).to_string()
}

fn cells(group: &str, kind: &str, obj: &Value) -> Vec<Value> {
    row_cells(group, kind, obj, now())
}

fn strs(cells: &[Value]) -> Vec<String> {
    cells
        .iter()
        .map(|c| c.as_str().map(str::to_string).unwrap_or_else(|| c.to_string()))
        .collect()
}

fn names(group: &str, kind: &str) -> Vec<(String, i64)> {
    column_definitions(group, kind)
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_string(),
                c["priority"].as_i64().unwrap(),
            )
        })
        .collect()
}

// ---- human_duration ----------------------------------------------------------------------------

fn hd(secs: i64) -> String {
    human_duration(SignedDuration::from_secs(secs))
}

#[test]
fn human_duration_seconds_and_skew() {
    assert_eq!(hd(0), "0s");
    assert_eq!(hd(5), "5s");
    assert_eq!(hd(119), "119s");
    assert_eq!(human_duration(SignedDuration::from_millis(-1999)), "0s");
    assert_eq!(hd(-1), "0s");
    assert_eq!(hd(-2), "<invalid>");
    assert_eq!(human_duration(SignedDuration::from_millis(119_999)), "119s");
}

#[test]
fn human_duration_minutes() {
    assert_eq!(hd(120), "2m");
    assert_eq!(hd(182), "3m2s");
    assert_eq!(hd(599), "9m59s");
    assert_eq!(hd(600), "10m");
    assert_eq!(hd(601), "10m");
    assert_eq!(hd(3 * 3600 - 1), "179m");
}

#[test]
fn human_duration_hours_days_years() {
    assert_eq!(hd(3 * 3600), "3h");
    assert_eq!(hd(3 * 3600 + 60 * 5), "3h5m");
    assert_eq!(hd(8 * 3600 - 1), "7h59m");
    assert_eq!(hd(8 * 3600), "8h");
    assert_eq!(hd(48 * 3600 - 1), "47h");
    assert_eq!(hd(48 * 3600), "2d");
    assert_eq!(hd(51 * 3600), "2d3h");
    assert_eq!(hd(8 * 86400 - 1), "7d23h");
    assert_eq!(hd(8 * 86400), "8d");
    assert_eq!(hd(2 * 365 * 86400 - 1), "729d");
    assert_eq!(hd(2 * 365 * 86400), "2y");
    assert_eq!(hd(2 * 365 * 86400 + 12 * 86400), "2y12d");
    assert_eq!(hd(8 * 365 * 86400 - 1), "7y364d");
    assert_eq!(hd(8 * 365 * 86400), "8y");
    assert_eq!(hd(100 * 365 * 86400), "100y");
}

#[test]
fn human_duration_saturates_like_go() {
    assert_eq!(human_duration(SignedDuration::MAX), "292y");
    assert_eq!(human_duration(SignedDuration::MIN), "<invalid>");
}

#[test]
fn translate_timestamp_since_unknown_and_known() {
    assert_eq!(translate_timestamp_since(None, now()), "<unknown>");
    assert_eq!(
        translate_timestamp_since(Some(now() - SignedDuration::from_secs(65)), now()),
        "65s"
    );
    // A creation time in the future beyond the skew tolerance.
    assert_eq!(
        translate_timestamp_since(Some(now() + SignedDuration::from_secs(10)), now()),
        "<invalid>"
    );
}

#[test]
fn go_zero_time_is_unset() {
    let obj = json!({"metadata": {"name": "x", "creationTimestamp": "0001-01-01T00:00:00Z"}});
    assert_eq!(strs(&cells("", "Namespace", &obj))[2], "<unknown>");
    let obj = json!({"metadata": {"name": "x", "creationTimestamp": "garbage"}});
    assert_eq!(strs(&cells("", "Namespace", &obj))[2], "<unknown>");
}

// ---- IncludeObject ----------------------------------------------------------------------------

#[test]
fn include_object_parsing() {
    assert_eq!(IncludeObject::default(), IncludeObject::Metadata);
    assert_eq!(IncludeObject::from_query(""), Some(IncludeObject::Metadata));
    assert_eq!(
        IncludeObject::from_query("Metadata"),
        Some(IncludeObject::Metadata)
    );
    assert_eq!(IncludeObject::from_query("None"), Some(IncludeObject::None));
    assert_eq!(IncludeObject::from_query("Object"), Some(IncludeObject::Object));
    assert_eq!(IncludeObject::from_query("metadata"), None);
}

// ---- column definitions -----------------------------------------------------------------------

#[test]
fn column_definition_shape() {
    let cols = column_definitions("", "Service");
    assert_eq!(
        cols[0],
        json!({"name": "Name", "type": "string", "format": "name", "description": DOC_NAME, "priority": 0})
    );
    let keys: Vec<&String> = cols[1].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["name", "type", "format", "description", "priority"]);
    assert_eq!(cols[5]["description"], DOC_CREATION_TIMESTAMP);
    assert!(DOC_CREATION_TIMESTAMP.contains("UTC.\n\nPopulated"));
}

#[test]
fn columns_of_each_kind() {
    let n = |v: &[(&str, i64)]| v.iter().map(|(a, b)| (a.to_string(), *b)).collect::<Vec<_>>();
    assert_eq!(
        names("", "Namespace"),
        n(&[("Name", 0), ("Status", 0), ("Age", 0)])
    );
    assert_eq!(
        names("", "Service"),
        n(&[
            ("Name", 0),
            ("Type", 0),
            ("Cluster-IP", 0),
            ("External-IP", 0),
            ("Port(s)", 0),
            ("Age", 0),
            ("Selector", 1)
        ])
    );
    assert_eq!(
        names("", "Endpoints"),
        n(&[("Name", 0), ("Endpoints", 0), ("Age", 0)])
    );
    assert_eq!(
        names("", "Pod"),
        n(&[
            ("Name", 0),
            ("Ready", 0),
            ("Status", 0),
            ("Restarts", 0),
            ("Age", 0),
            ("IP", 1),
            ("Node", 1),
            ("Nominated Node", 1),
            ("Readiness Gates", 1)
        ])
    );
    assert_eq!(
        names("", "Node"),
        n(&[
            ("Name", 0),
            ("Status", 0),
            ("Roles", 0),
            ("Age", 0),
            ("Version", 0),
            ("Internal-IP", 1),
            ("External-IP", 1),
            ("OS-Image", 1),
            ("Kernel-Version", 1),
            ("Container-Runtime", 1)
        ])
    );
    assert_eq!(
        names("", "Event"),
        n(&[
            ("Last Seen", 0),
            ("Type", 0),
            ("Reason", 0),
            ("Object", 0),
            ("Subobject", 1),
            ("Source", 1),
            ("Message", 0),
            ("First Seen", 1),
            ("Count", 1),
            ("Name", 1)
        ])
    );
    assert_eq!(names("events.k8s.io", "Event"), names("", "Event"));
    assert_eq!(
        names("discovery.k8s.io", "EndpointSlice"),
        n(&[
            ("Name", 0),
            ("AddressType", 0),
            ("Ports", 0),
            ("Endpoints", 0),
            ("Age", 0)
        ])
    );
    assert_eq!(
        names("coordination.k8s.io", "Lease"),
        n(&[("Name", 0), ("Holder", 0), ("Age", 0)])
    );
    assert_eq!(
        names("apps", "Deployment"),
        n(&[
            ("Name", 0),
            ("Ready", 0),
            ("Up-to-date", 0),
            ("Available", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1)
        ])
    );
    assert_eq!(
        names("apps", "ReplicaSet"),
        n(&[
            ("Name", 0),
            ("Desired", 0),
            ("Current", 0),
            ("Ready", 0),
            ("Age", 0),
            ("Containers", 1),
            ("Images", 1),
            ("Selector", 1)
        ])
    );
    assert_eq!(names("", "ResourceQuota"), n(&[("Name", 0), ("Created At", 0)]));
    assert_eq!(
        names("", "Secret"),
        n(&[("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)])
    );
    // The group matters: a Deployment in another group has no printer.
    assert_eq!(
        names("example.com", "Deployment"),
        n(&[("Name", 0), ("Created At", 0)])
    );
}

#[test]
fn column_types_match_kube() {
    let types = |g, k| {
        column_definitions(g, k)
            .iter()
            .map(|c| c["type"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        types("apps", "ReplicaSet")[1..4],
        ["integer", "integer", "integer"]
    );
    assert_eq!(types("", "Pod")[3], "string");
    assert_eq!(types("", "ResourceQuota")[1], "date");
    let event = column_definitions("", "Event");
    assert_eq!(event[9]["format"], "name");
    assert_eq!(event[9]["priority"], 1);
}

#[test]
fn cells_match_column_count_for_every_kind_even_on_empty_objects() {
    let kinds = [
        ("", "Namespace"),
        ("", "Service"),
        ("", "Endpoints"),
        ("", "Pod"),
        ("", "Node"),
        ("", "Event"),
        ("events.k8s.io", "Event"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("coordination.k8s.io", "Lease"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("", "ResourceQuota"),
    ];
    let odd = [
        json!({}),
        json!(null),
        json!(42),
        json!({"metadata": 1, "spec": "x", "status": []}),
    ];
    for (group, kind) in kinds {
        for obj in &odd {
            assert_eq!(
                cells(group, kind, obj).len(),
                column_definitions(group, kind).len(),
                "{group}/{kind} {obj}"
            );
        }
    }
}

#[test]
fn mistyped_nested_fields_never_panic() {
    let odd = json!({
        "metadata": {"name": 5, "creationTimestamp": 7, "labels": ["x"], "deletionTimestamp": "soon"},
        "spec": {"containers": "x", "initContainers": [1, null, {"name": 2, "restartPolicy": true}],
                 "ports": [null, 1, {"port": "80", "nodePort": -5}], "selector": {"matchLabels": [1],
                 "matchExpressions": [null, {"key": 1}]}, "replicas": "3", "externalIPs": [1],
                 "readinessGates": [{}], "template": {"spec": {"containers": [null, {"image": 1}]}},
                 "clusterIPs": [null], "type": 1, "unschedulable": "yes", "holderIdentity": {}},
        "status": {"conditions": [null, {"type": 1}], "containerStatuses": [null, {"state": "x",
                   "lastState": {"terminated": "y"}, "restartCount": 1e300}],
                   "initContainerStatuses": [{"state": {"terminated": {"exitCode": "1"}}}, 3],
                   "loadBalancer": {"ingress": [1, {"ip": 2}]}, "podIPs": [3], "addresses": [null],
                   "nodeInfo": 1, "phase": ["Running"]},
        "subsets": [null, {"addresses": [null], "ports": [1]}],
        "ports": [null, {"port": null, "name": 3}], "endpoints": [{"addresses": [1, null]}],
        "involvedObject": "pod", "series": {"count": "2"}, "source": []
    });
    for (group, kind) in [
        ("", "Namespace"),
        ("", "Service"),
        ("", "Endpoints"),
        ("", "Pod"),
        ("", "Node"),
        ("", "Event"),
        ("events.k8s.io", "Event"),
        ("discovery.k8s.io", "EndpointSlice"),
        ("coordination.k8s.io", "Lease"),
        ("apps", "Deployment"),
        ("apps", "ReplicaSet"),
        ("", "ResourceQuota"),
    ] {
        let t = table(group, kind, &[&odd], IncludeObject::Metadata, now());
        assert_eq!(
            t["rows"][0]["cells"].as_array().unwrap().len(),
            column_definitions(group, kind).len(),
            "{group}/{kind}"
        );
    }
}

// ---- default table ----------------------------------------------------------------------------

#[test]
fn default_table_cells() {
    let obj = json!({"metadata": {"name": "cm", "creationTimestamp": "2024-01-02T03:04:05.678Z"}});
    assert_eq!(
        cells("", "ResourceQuota", &obj),
        vec![json!("cm"), json!("2024-01-02T03:04:05Z")]
    );
    let obj = json!({"metadata": {"name": "cm", "creationTimestamp": "2024-01-02T05:04:05+02:00"}});
    assert_eq!(strs(&cells("", "ResourceQuota", &obj))[1], "2024-01-02T03:04:05Z");
    let obj = json!({"metadata": {"name": "cm"}});
    assert_eq!(strs(&cells("", "ResourceQuota", &obj))[1], "0001-01-01T00:00:00Z");
}

// ---- Namespace ----------------------------------------------------------------------------------

#[test]
fn namespace_row() {
    let obj = json!({"metadata": {"name": "default", "creationTimestamp": ago(300)}, "status": {"phase": "Active"}});
    assert_eq!(strs(&cells("", "Namespace", &obj)), ["default", "Active", "5m"]);
    let obj = json!({"metadata": {"name": "gone", "creationTimestamp": ago(3600 * 50)}, "status": {"phase": "Terminating"}});
    assert_eq!(
        strs(&cells("", "Namespace", &obj)),
        ["gone", "Terminating", "2d2h"]
    );
    // Decoding defaults the phase.
    let obj = json!({"metadata": {"name": "new"}});
    assert_eq!(
        strs(&cells("", "Namespace", &obj)),
        ["new", "Active", "<unknown>"]
    );
}

// ---- Service ------------------------------------------------------------------------------------

fn svc(spec: Value, status: Value) -> Value {
    json!({"metadata": {"name": "web", "creationTimestamp": ago(90)}, "spec": spec, "status": status})
}

#[test]
fn service_cluster_ip() {
    let s = svc(
        json!({"type": "ClusterIP", "clusterIP": "10.0.0.10", "clusterIPs": ["10.0.0.10", "fd00::10"],
                   "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}],
                   "selector": {"app": "web", "tier": "fe"}}),
        json!({}),
    );
    assert_eq!(
        strs(&cells("", "Service", &s)),
        [
            "web",
            "ClusterIP",
            "10.0.0.10",
            "<none>",
            "80/TCP,53/UDP",
            "90s",
            "app=web,tier=fe"
        ]
    );
}

#[test]
fn service_headless_no_ports_no_selector() {
    let s = svc(
        json!({"type": "ClusterIP", "clusterIP": "None", "clusterIPs": ["None"]}),
        json!({}),
    );
    assert_eq!(
        strs(&cells("", "Service", &s)),
        ["web", "ClusterIP", "None", "<none>", "<none>", "90s", "<none>"]
    );
}

#[test]
fn service_external_ips_on_cluster_ip_and_node_port() {
    let s = svc(
        json!({"type": "NodePort", "clusterIPs": ["10.0.0.11"], "externalIPs": ["1.2.3.4", "5.6.7.8"],
                   "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}, {"port": 443, "protocol": "TCP"}]}),
        json!({}),
    );
    assert_eq!(
        strs(&cells("", "Service", &s))[1..5],
        ["NodePort", "10.0.0.11", "1.2.3.4,5.6.7.8", "80:30080/TCP,443/TCP"]
    );
    let s = svc(
        json!({"type": "NodePort", "clusterIPs": ["10.0.0.11"]}),
        json!({}),
    );
    assert_eq!(strs(&cells("", "Service", &s))[3], "<none>");
    let s = svc(
        json!({"type": "ClusterIP", "clusterIPs": ["10.0.0.11"], "externalIPs": ["9.9.9.9"]}),
        json!({}),
    );
    assert_eq!(strs(&cells("", "Service", &s))[3], "9.9.9.9");
}

#[test]
fn service_load_balancer() {
    let pending = svc(
        json!({"type": "LoadBalancer", "clusterIPs": ["10.0.0.12"], "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}),
        json!({"loadBalancer": {}}),
    );
    assert_eq!(
        strs(&cells("", "Service", &pending))[3..5],
        ["<pending>", "443:31443/TCP"]
    );

    // Ingress IPs (or hostnames when no IP) are deduplicated and sorted, then spec.externalIPs
    // follow; the server never clips them.
    let ready = svc(
        json!({"type": "LoadBalancer", "clusterIPs": ["10.0.0.12"], "externalIPs": ["7.7.7.7"]}),
        json!({"loadBalancer": {"ingress": [
            {"ip": "203.0.113.20"}, {"hostname": "lb.example.com"}, {"ip": "203.0.113.10", "hostname": "x"},
            {"ip": "203.0.113.20"}, {}
        ]}}),
    );
    assert_eq!(
        strs(&cells("", "Service", &ready))[3],
        "203.0.113.10,203.0.113.20,lb.example.com,7.7.7.7"
    );
    let only_external = svc(
        json!({"type": "LoadBalancer", "externalIPs": ["7.7.7.7"]}),
        json!({}),
    );
    assert_eq!(strs(&cells("", "Service", &only_external))[3], "7.7.7.7");
}

#[test]
fn service_external_name() {
    let s = svc(
        json!({"type": "ExternalName", "externalName": "db.example.com"}),
        json!({}),
    );
    assert_eq!(
        strs(&cells("", "Service", &s)),
        [
            "web",
            "ExternalName",
            "<none>",
            "db.example.com",
            "<none>",
            "90s",
            "<none>"
        ]
    );
}

#[test]
fn service_unknown_type_and_defaults() {
    let s = svc(json!({"type": "Weird", "clusterIPs": ["10.0.0.1"]}), json!({}));
    assert_eq!(
        strs(&cells("", "Service", &s))[1..4],
        ["Weird", "10.0.0.1", "<unknown>"]
    );
    // Unset type and protocol read as their defaults; clusterIP stands in for clusterIPs.
    let s = svc(
        json!({"clusterIP": "10.0.0.2", "ports": [{"port": 8080}]}),
        json!({}),
    );
    assert_eq!(
        strs(&cells("", "Service", &s))[1..5],
        ["ClusterIP", "10.0.0.2", "<none>", "8080/TCP"]
    );
    let s = svc(
        json!({"type": "ClusterIP", "ports": [{"port": 132, "protocol": "SCTP", "nodePort": 0}]}),
        json!({}),
    );
    assert_eq!(strs(&cells("", "Service", &s))[4], "132/SCTP");
}

#[test]
fn service_selector_is_sorted_by_pair() {
    let s = svc(json!({"selector": {"a=b": "x", "a": "y", "a-b": "z"}}), json!({}));
    assert_eq!(strs(&cells("", "Service", &s))[6], "a-b=z,a=b=x,a=y");
}

// ---- Endpoints ----------------------------------------------------------------------------------

fn eps(subsets: Value) -> Value {
    json!({"metadata": {"name": "web", "creationTimestamp": ago(10)}, "subsets": subsets})
}

#[test]
fn endpoints_none_and_empty() {
    assert_eq!(
        strs(&cells("", "Endpoints", &eps(json!([])))),
        ["web", "<none>", "10s"]
    );
    assert_eq!(strs(&cells("", "Endpoints", &eps(json!(null))))[1], "<none>");
    // Subsets without ready addresses print as an empty string.
    let not_ready = eps(json!([{"notReadyAddresses": [{"ip": "10.1.0.1"}], "ports": [{"port": 80}]}]));
    assert_eq!(strs(&cells("", "Endpoints", &not_ready))[1], "");
}

#[test]
fn endpoints_with_ports_and_ipv6() {
    let e = eps(json!([{"addresses": [{"ip": "10.1.0.1"}, {"ip": "fd00::1"}], "ports": [{"port": 8080}]}]));
    assert_eq!(
        strs(&cells("", "Endpoints", &e))[1],
        "10.1.0.1:8080,[fd00::1]:8080"
    );
}

#[test]
fn endpoints_headless_without_ports() {
    let e = eps(json!([{"addresses": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}]}]));
    assert_eq!(strs(&cells("", "Endpoints", &e))[1], "10.1.0.1,10.1.0.2");
}

#[test]
fn endpoints_truncation() {
    let exactly_three = eps(
        json!([{"addresses": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}, {"ip": "10.1.0.3"}],
                                        "ports": [{"port": 80}]}]),
    );
    assert_eq!(
        strs(&cells("", "Endpoints", &exactly_three))[1],
        "10.1.0.1:80,10.1.0.2:80,10.1.0.3:80"
    );
    // 2 addresses x 2 ports + 3 headless addresses = 7 entries.
    let many = eps(json!([
        {"addresses": [{"ip": "10.1.0.1"}, {"ip": "10.1.0.2"}], "ports": [{"port": 80}, {"port": 443}]},
        {"addresses": [{"ip": "10.1.0.3"}, {"ip": "10.1.0.4"}, {"ip": "10.1.0.5"}]}
    ]));
    assert_eq!(
        strs(&cells("", "Endpoints", &many))[1],
        "10.1.0.1:80,10.1.0.2:80,10.1.0.1:443 + 4 more..."
    );
}

// ---- EndpointSlice ------------------------------------------------------------------------------

fn slice(ports: Value, endpoints: Value) -> Value {
    json!({"metadata": {"name": "web-abc", "creationTimestamp": ago(130)}, "addressType": "IPv4",
               "ports": ports, "endpoints": endpoints})
}

#[test]
fn endpoint_slice_rows() {
    let s = slice(
        json!([{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "metrics"}, {}]),
        json!([{"addresses": ["10.1.0.1"]}, {"addresses": ["10.1.0.2", "10.1.0.3"]}]),
    );
    assert_eq!(
        strs(&cells("discovery.k8s.io", "EndpointSlice", &s)),
        [
            "web-abc",
            "IPv4",
            "80,metrics,*",
            "10.1.0.1,10.1.0.2,10.1.0.3",
            "2m10s"
        ]
    );
    let empty = slice(json!(null), json!([]));
    assert_eq!(
        strs(&cells("discovery.k8s.io", "EndpointSlice", &empty))[2..4],
        ["<unset>", "<unset>"]
    );
    let many = slice(
        json!([{"port": 1}, {"port": 2}, {"port": 3}, {"port": 4}, {"port": 5}]),
        json!([{"addresses": ["a", "b"]}, {"addresses": ["c", "d"]}]),
    );
    assert_eq!(
        strs(&cells("discovery.k8s.io", "EndpointSlice", &many))[2..4],
        ["1,2,3 + 2 more...", "a,b,c + 1 more..."]
    );
}

// ---- Lease --------------------------------------------------------------------------------------

#[test]
fn lease_rows() {
    let l = json!({"metadata": {"name": "node-1", "creationTimestamp": ago(86400 * 3)}, "spec": {"holderIdentity": "node-1"}});
    assert_eq!(
        strs(&cells("coordination.k8s.io", "Lease", &l)),
        ["node-1", "node-1", "3d"]
    );
    let l = json!({"metadata": {"name": "free", "creationTimestamp": ago(1)}, "spec": {}});
    assert_eq!(
        strs(&cells("coordination.k8s.io", "Lease", &l)),
        ["free", "", "1s"]
    );
}

// ---- Deployment and ReplicaSet ------------------------------------------------------------------

#[test]
fn deployment_rows() {
    let d = json!({
        "metadata": {"name": "web", "creationTimestamp": ago(600)},
        "spec": {"replicas": 3,
                 "selector": {"matchLabels": {"app": "web"},
                              "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]},
                                                   {"key": "canary", "operator": "DoesNotExist"}]},
                 "template": {"spec": {"containers": [{"name": "app", "image": "nginx:1.27"},
                                                       {"name": "sidecar", "image": "envoy:1"}]}}},
        "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}
    });
    let c = cells("apps", "Deployment", &d);
    assert_eq!(c[2], json!(3));
    assert_eq!(c[3], json!(2));
    assert_eq!(
        strs(&c),
        [
            "web",
            "2/3",
            "3",
            "2",
            "10m",
            "app,sidecar",
            "nginx:1.27,envoy:1",
            "app=web,!canary,tier in (be,fe)"
        ]
    );
    // No status yet, replicas defaulted, empty selector prints as "".
    let d = json!({"metadata": {"name": "new"}, "spec": {"selector": {}}});
    assert_eq!(
        strs(&cells("apps", "Deployment", &d)),
        ["new", "0/1", "0", "0", "<unknown>", "", "", ""]
    );
    let bad = json!({"metadata": {"name": "bad"}, "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}});
    assert_eq!(strs(&cells("apps", "Deployment", &bad))[7], "<invalid>");
}

#[test]
fn replica_set_rows() {
    let rs = json!({
        "metadata": {"name": "web-5d8f", "creationTimestamp": ago(7200)},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"pod-template-hash": "5d8f", "app": "web"}},
                 "template": {"spec": {"containers": [{"name": "app", "image": "nginx"}]}}},
        "status": {"replicas": 2, "readyReplicas": 1}
    });
    let c = cells("apps", "ReplicaSet", &rs);
    assert_eq!(c[1..4], [json!(2), json!(2), json!(1)]);
    assert_eq!(
        strs(&c),
        [
            "web-5d8f",
            "2",
            "2",
            "1",
            "120m",
            "app",
            "nginx",
            "app=web,pod-template-hash=5d8f"
        ]
    );
    let scaled_down = json!({"metadata": {"name": "old"}, "spec": {"replicas": 0}});
    let c = cells("apps", "ReplicaSet", &scaled_down);
    assert_eq!(c[1..4], [json!(0), json!(0), json!(0)]);
    assert_eq!(strs(&c)[7], "<none>");
    let bad = json!({"metadata": {"name": "bad"}, "spec": {"selector": {"matchLabels": {"bad key": "v"}}}});
    assert_eq!(strs(&cells("apps", "ReplicaSet", &bad))[7], "<error>");
}

#[test]
fn label_selector_rendering() {
    let ok = |v: Value| label_selector_string(Some(&v));
    assert_eq!(label_selector_string(None), Ok(String::new()));
    assert_eq!(ok(json!({"matchLabels": {}})), Ok(String::new()));
    assert_eq!(
        ok(json!({"matchExpressions": [
            {"key": "b", "operator": "NotIn", "values": ["y", "x", "x"]},
            {"key": "a", "operator": "Exists"},
            {"key": "c", "operator": "In", "values": ["only"]}
        ]})),
        Ok("a,b notin (x,x,y),c in (only)".to_string())
    );
    // Requirements on one key keep their order: match labels first.
    assert_eq!(
        ok(json!({"matchLabels": {"k": "v"}, "matchExpressions": [{"key": "k", "operator": "Exists"}]})),
        Ok("k=v,k".to_string())
    );
    assert_eq!(
        ok(json!({"matchLabels": {"example.com/app": "web"}})),
        Ok("example.com/app=web".to_string())
    );
    for bad in [
        json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}),
        json!({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}),
        json!({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1"]}]}),
        json!({"matchLabels": {"a": "bad value"}}),
        json!({"matchLabels": {"Example.com/a": "v"}}),
        json!({"matchLabels": {"/a": "v"}}),
        json!({"matchLabels": {"a/b/c": "v"}}),
        json!({"matchLabels": {"-a": "v"}}),
        json!({"matchLabels": {"a": 1}}),
    ] {
        assert_eq!(ok(bad.clone()), Err(()), "{bad}");
    }
    assert!(is_valid_label_value(""));
    assert!(!is_valid_label_value(&"a".repeat(64)));
    assert!(is_qualified_name(&format!(
        "{}/{}",
        "a".repeat(253),
        "b".repeat(63)
    )));
}

// ---- Node ---------------------------------------------------------------------------------------

#[test]
fn node_rows() {
    let n = json!({
        "metadata": {"name": "node-1", "creationTimestamp": ago(86400 * 10),
                     "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "x",
                                "kubernetes.io/role": "master", "node-role.kubernetes.io/worker": "true"}},
        "spec": {"unschedulable": true},
        "status": {
            "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
            "addresses": [{"type": "Hostname", "address": "node-1"}, {"type": "InternalIP", "address": "192.168.1.10"},
                          {"type": "InternalIP", "address": "192.168.1.11"}],
            "nodeInfo": {"kubeletVersion": "v1.33.1", "osImage": "Debian GNU/Linux 12 (bookworm)",
                         "kernelVersion": "6.1.0-18-amd64", "containerRuntimeVersion": "containerd://1.7.13"}
        }
    });
    assert_eq!(
        strs(&cells("", "Node", &n)),
        [
            "node-1",
            "Ready,SchedulingDisabled",
            "control-plane,master,worker",
            "10d",
            "v1.33.1",
            "192.168.1.10",
            "<none>",
            "Debian GNU/Linux 12 (bookworm)",
            "6.1.0-18-amd64",
            "containerd://1.7.13"
        ]
    );
}

#[test]
fn node_not_ready_and_unknown() {
    let n = json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}],
                       "addresses": [{"type": "ExternalIP", "address": "203.0.113.5"}]}});
    assert_eq!(
        strs(&cells("", "Node", &n)),
        [
            "n",
            "NotReady",
            "<none>",
            "<unknown>",
            "",
            "<none>",
            "203.0.113.5",
            "<unknown>",
            "<unknown>",
            "<unknown>"
        ]
    );
    let n = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
    assert_eq!(strs(&cells("", "Node", &n))[1], "Unknown,SchedulingDisabled");
    // The last Ready condition wins.
    let n = json!({"metadata": {"name": "n"}, "status": {"conditions": [
            {"type": "Ready", "status": "True"}, {"type": "Ready", "status": "False"}]}});
    assert_eq!(strs(&cells("", "Node", &n))[1], "NotReady");
}

// ---- Event --------------------------------------------------------------------------------------

#[test]
fn event_rows() {
    let e = json!({
        "metadata": {"name": "web-1.17c1", "creationTimestamp": ago(400)},
        "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{app}"},
        "reason": "Pulled", "type": "Normal", "message": "  Successfully pulled image\n",
        "source": {"component": "kubelet", "host": "node-1"},
        "firstTimestamp": ago(400), "lastTimestamp": ago(65), "count": 4
    });
    let c = cells("", "Event", &e);
    assert_eq!(c[8], json!(4));
    assert_eq!(
        strs(&c),
        [
            "65s",
            "Normal",
            "Pulled",
            "pod/web-1",
            "spec.containers{app}",
            "kubelet, node-1",
            "Successfully pulled image",
            "6m40s",
            "4",
            "web-1.17c1"
        ]
    );
}

#[test]
fn event_new_style_fields() {
    // No first/last timestamps: eventTime stands in; no count means 1; reporting* replace source.
    let e = json!({
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Node"},
        "eventTime": "2024-05-01T11:59:00.000000Z",
        "reportingController": "svcnet-controller", "reportingInstance": "ctl-0",
        "type": "Warning", "reason": "Boom", "message": "x"
    });
    assert_eq!(
        strs(&cells("", "Event", &e)),
        [
            "60s",
            "Warning",
            "Boom",
            "node",
            "",
            "svcnet-controller, ctl-0",
            "x",
            "60s",
            "1",
            "e"
        ]
    );
    // Ages truncate: 59.9 s is "59s".
    let e = json!({"metadata": {"name": "e"}, "eventTime": "2024-05-01T11:59:00.123456Z"});
    assert_eq!(strs(&cells("", "Event", &e))[0], "59s");
    // A series overrides last seen and count.
    let e = json!({
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Service", "name": "web"},
        "firstTimestamp": ago(1000), "lastTimestamp": ago(900), "count": 2,
        "series": {"count": 17, "lastObservedTime": ago(3)},
        "source": {"component": "svcnet"}
    });
    let c = strs(&cells("", "Event", &e));
    assert_eq!(
        [&c[0], &c[3], &c[5], &c[7], &c[8]],
        ["3s", "service/web", "svcnet", "16m", "17"]
    );
    // Nothing set at all.
    assert_eq!(
        strs(&cells("", "Event", &json!({"metadata": {"name": "e"}}))),
        ["<unknown>", "", "", "", "", "", "", "<unknown>", "1", "e"]
    );
}

#[test]
fn events_k8s_io_event_uses_its_field_names() {
    let e = json!({
        "metadata": {"name": "e2"},
        "regarding": {"kind": "Pod", "name": "p", "fieldPath": "spec.containers{c}"},
        "note": "hello ", "reason": "Started", "type": "Normal",
        "deprecatedSource": {"component": "kubelet"}, "reportingInstance": "node-2",
        "deprecatedFirstTimestamp": ago(200), "deprecatedLastTimestamp": ago(100), "deprecatedCount": 3
    });
    assert_eq!(
        strs(&cells("events.k8s.io", "Event", &e)),
        [
            "100s",
            "Normal",
            "Started",
            "pod/p",
            "spec.containers{c}",
            "kubelet, node-2",
            "hello",
            "3m20s",
            "3",
            "e2"
        ]
    );
}

// ---- Pod ----------------------------------------------------------------------------------------

fn pod(spec: Value, status: Value) -> Value {
    json!({"metadata": {"name": "p", "creationTimestamp": ago(3600)}, "spec": spec, "status": status})
}

fn one_container() -> Value {
    json!({"containers": [{"name": "app", "image": "nginx"}]})
}

/// READY, STATUS and RESTARTS of a pod.
fn prs(p: &Value) -> [String; 3] {
    let c = strs(&cells("", "Pod", p));
    [c[1].clone(), c[2].clone(), c[3].clone()]
}

#[test]
fn pod_running() {
    let p = pod(
        json!({"containers": [{"name": "app"}, {"name": "log"}], "nodeName": "node-1"}),
        json!({"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}, {"ip": "fd00::5"}],
        "conditions": [{"type": "Ready", "status": "True"}],
        "containerStatuses": [
            {"name": "app", "ready": true, "restartCount": 0, "state": {"running": {"startedAt": ago(3000)}}},
            {"name": "log", "ready": true, "restartCount": 0, "state": {"running": {}}}
        ]}),
    );
    assert_eq!(
        strs(&cells("", "Pod", &p)),
        [
            "p", "2/2", "Running", "0", "60m", "10.1.0.5", "node-1", "<none>", "<none>"
        ]
    );
}

#[test]
fn pod_pending_and_scheduling_gated() {
    let p = pod(one_container(), json!({"phase": "Pending"}));
    assert_eq!(
        strs(&cells("", "Pod", &p)),
        [
            "p", "0/1", "Pending", "0", "60m", "<none>", "<none>", "<none>", "<none>"
        ]
    );
    let gated = pod(
        one_container(),
        json!({"phase": "Pending", "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
    );
    assert_eq!(prs(&gated)[1], "SchedulingGated");
}

#[test]
fn pod_status_reason_overrides_phase() {
    let p = pod(one_container(), json!({"phase": "Failed", "reason": "Evicted"}));
    assert_eq!(prs(&p), ["0/1", "Evicted", "0"]);
}

#[test]
fn pod_waiting_reasons() {
    for why in [
        "ContainerCreating",
        "ImagePullBackOff",
        "ErrImagePull",
        "CrashLoopBackOff",
        "CreateContainerConfigError",
    ] {
        let p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": why}}}]}),
        );
        assert_eq!(prs(&p)[1], why);
    }
}

#[test]
fn pod_crash_loop_with_restarts_ago() {
    let p = pod(
        one_container(),
        json!({"phase": "Running", "containerStatuses": [{
            "name": "app", "restartCount": 5, "ready": false,
            "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(300)}}
        }]}),
    );
    assert_eq!(prs(&p), ["0/1", "CrashLoopBackOff", "5 (5m ago)"]);
    // Restarts without a recorded termination time print as a bare number.
    let p = pod(
        one_container(),
        json!({"phase": "Running", "containerStatuses": [{"name": "app", "restartCount": 2, "ready": true, "state": {"running": {}}}]}),
    );
    assert_eq!(prs(&p), ["1/1", "Running", "2"]);
}

#[test]
fn pod_completed_and_terminated_reasons() {
    let done = pod(
        one_container(),
        json!({"phase": "Succeeded", "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
    );
    assert_eq!(prs(&done), ["0/1", "Completed", "0"]);
    let err = pod(
        one_container(),
        json!({"phase": "Failed", "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
    );
    assert_eq!(prs(&err)[1], "OOMKilled");
    let signal = pod(
        one_container(),
        json!({"phase": "Failed", "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
    );
    assert_eq!(prs(&signal)[1], "Signal:9");
    let exit = pod(
        one_container(),
        json!({"phase": "Failed", "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 3}}}]}),
    );
    assert_eq!(prs(&exit)[1], "ExitCode:3");
}

#[test]
fn pod_first_container_reason_wins() {
    let p = pod(
        json!({"containers": [{"name": "a"}, {"name": "b"}]}),
        json!({"phase": "Running", "containerStatuses": [
            {"name": "a", "state": {"waiting": {"reason": "ImagePullBackOff"}}},
            {"name": "b", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}
        ]}),
    );
    assert_eq!(prs(&p)[1], "ImagePullBackOff");
}

#[test]
fn pod_completed_with_running_sidecar_container() {
    let statuses = json!([
        {"name": "main", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
        {"name": "side", "ready": true, "state": {"running": {}}}
    ]);
    let ready = pod(
        json!({"containers": [{"name": "main"}, {"name": "side"}]}),
        json!({"phase": "Running", "containerStatuses": statuses, "conditions": [{"type": "Ready", "status": "True"}]}),
    );
    assert_eq!(prs(&ready)[0..2], ["1/2", "Running"]);
    let not_ready = pod(
        json!({"containers": [{"name": "main"}, {"name": "side"}]}),
        json!({"phase": "Running", "containerStatuses": statuses}),
    );
    assert_eq!(prs(&not_ready)[1], "NotReady");
}

#[test]
fn pod_init_container_progress() {
    let spec = json!({"initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "app"}]});
    let p = pod(
        spec.clone(),
        json!({"phase": "Pending", "initContainerStatuses": [
                {"name": "i1", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                {"name": "i2", "state": {"running": {}}}
            ], "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "PodInitializing"}}}]}),
    );
    assert_eq!(prs(&p), ["0/1", "Init:1/2", "0"]);
    let waiting_pod_initializing = pod(
        spec.clone(),
        json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "i1", "state": {"waiting": {"reason": "PodInitializing"}}}
        ]}),
    );
    assert_eq!(prs(&waiting_pod_initializing)[1], "Init:0/2");
}

#[test]
fn pod_init_container_failures() {
    let spec = json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "app"}]});
    let crash = pod(
        spec.clone(),
        json!({"phase": "Pending", "initContainerStatuses": [{
            "name": "i1", "restartCount": 3, "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(30)}}
        }]}),
    );
    assert_eq!(prs(&crash), ["0/1", "Init:CrashLoopBackOff", "3 (30s ago)"]);
    let error = pod(
        spec.clone(),
        json!({"phase": "Pending", "initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 1, "reason": "Error"}}}]}),
    );
    assert_eq!(prs(&error)[1], "Init:Error");
    let signal = pod(
        spec.clone(),
        json!({"phase": "Pending", "initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 2, "signal": 15}}}]}),
    );
    assert_eq!(prs(&signal)[1], "Init:Signal:15");
    let exit = pod(
        spec,
        json!({"phase": "Pending", "initContainerStatuses": [{"name": "i1", "state": {"terminated": {"exitCode": 2}}}]}),
    );
    assert_eq!(prs(&exit)[1], "Init:ExitCode:2");
}

#[test]
fn pod_initialized_condition_lets_main_containers_count() {
    // Once Initialized, main containers are counted (and their reasons would win), but with none
    // of them reporting a reason the init container's reason stays, as in kube.
    let p = pod(
        json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "app"}]}),
        json!({"phase": "Running",
                   "conditions": [{"type": "Initialized", "status": "True"}],
                   "initContainerStatuses": [{"name": "i1", "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
                   "containerStatuses": [{"name": "app", "restartCount": 1, "ready": true, "state": {"running": {}}}]}),
    );
    // Restarts count only the main containers (and sidecars) once initialized.
    assert_eq!(prs(&p), ["1/1", "Init:CrashLoopBackOff", "1"]);
    let p = pod(
        json!({"initContainers": [{"name": "i1"}], "containers": [{"name": "app"}]}),
        json!({"phase": "Running",
                   "conditions": [{"type": "Initialized", "status": "True"}],
                   "initContainerStatuses": [{"name": "i1", "state": {"waiting": {"reason": "CrashLoopBackOff"}}}],
                   "containerStatuses": [{"name": "app", "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
    );
    assert_eq!(prs(&p)[1], "ContainerCreating");
}

#[test]
fn pod_sidecar_init_containers() {
    let spec = json!({
        "initContainers": [{"name": "setup"}, {"name": "proxy", "restartPolicy": "Always"}],
        "containers": [{"name": "app"}]
    });
    let p = pod(
        spec.clone(),
        json!({"phase": "Running",
                   "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}],
                   "initContainerStatuses": [
                       {"name": "setup", "restartCount": 7, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
                        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(50)}}},
                       {"name": "proxy", "restartCount": 2, "started": true, "ready": true, "state": {"running": {}},
                        "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(200)}}}
                   ],
                   "containerStatuses": [{"name": "app", "restartCount": 1, "ready": true, "state": {"running": {}},
                                           "lastState": {"terminated": {"exitCode": 1, "finishedAt": ago(100)}}}]}),
    );
    // Regular init container restarts (and their times) are dropped once initialized.
    assert_eq!(prs(&p), ["2/2", "Running", "3 (100s ago)"]);
    // A sidecar that has not started yet blocks initialization.
    let starting = pod(
        spec,
        json!({"phase": "Pending", "initContainerStatuses": [
            {"name": "setup", "state": {"terminated": {"exitCode": 0}}},
            {"name": "proxy", "started": false, "state": {"running": {}}}
        ]}),
    );
    assert_eq!(prs(&starting)[0..2], ["0/2", "Init:1/2"]);
}

#[test]
fn pod_terminating_and_unknown() {
    let mut p = pod(
        one_container(),
        json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": true, "state": {"running": {}}}]}),
    );
    p["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(prs(&p)[1], "Terminating");
    let mut lost = pod(one_container(), json!({"phase": "Running", "reason": "NodeLost"}));
    lost["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(prs(&lost)[1], "Unknown");
    // Terminal pods keep their status while being deleted.
    let mut done = pod(
        one_container(),
        json!({"phase": "Succeeded", "containerStatuses": [{"name": "app", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
    );
    done["metadata"]["deletionTimestamp"] = json!(ago(5));
    assert_eq!(prs(&done)[1], "Completed");
}

#[test]
fn pod_wide_columns() {
    let p = pod(
        json!({"containers": [{"name": "app"}], "nodeName": "node-2",
                   "readinessGates": [{"conditionType": "example.com/lb"}, {"conditionType": "example.com/fw"}]}),
        json!({"phase": "Running", "podIPs": [{"ip": "fd00::7"}], "nominatedNodeName": "node-3",
                   "conditions": [{"type": "example.com/lb", "status": "True"}, {"type": "example.com/fw", "status": "False"}]}),
    );
    assert_eq!(
        strs(&cells("", "Pod", &p))[5..],
        ["fd00::7", "node-2", "node-3", "1/2"]
    );
    // status.podIP wins over podIPs when they disagree.
    let p = pod(
        one_container(),
        json!({"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.2"}]}),
    );
    assert_eq!(strs(&cells("", "Pod", &p))[5], "10.0.0.1");
}

#[test]
fn pod_row_conditions() {
    let ok = pod(one_container(), json!({"phase": "Succeeded"}));
    assert_eq!(
        row_conditions("", "Pod", &ok),
        vec![
            json!({"type": "Completed", "status": "True", "reason": "Succeeded", "message": "The pod has completed successfully."})
        ]
    );
    let failed = pod(one_container(), json!({"phase": "Failed"}));
    assert_eq!(
        row_conditions("", "Pod", &failed)[0]["message"],
        "The pod failed."
    );
    assert!(row_conditions("", "Pod", &pod(one_container(), json!({"phase": "Running"}))).is_empty());
    assert!(row_conditions("apps", "ReplicaSet", &ok).is_empty());
}

// ---- Table --------------------------------------------------------------------------------------

#[test]
fn table_with_metadata_objects() {
    let ns = json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "default", "uid": "u-1", "resourceVersion": "12", "namespace": "",
                     "creationTimestamp": ago(60), "labels": {"kubernetes.io/metadata.name": "default"},
                     "annotations": {}, "generation": 0, "somethingUnknown": true},
        "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}
    });
    let t = table("", "Namespace", &[&ns], IncludeObject::Metadata, now());
    let keys: Vec<&String> = t.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        ["kind", "apiVersion", "metadata", "columnDefinitions", "rows"]
    );
    assert_eq!(t["kind"], "Table");
    assert_eq!(t["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(t["metadata"], json!({}));
    assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 3);
    let row = &t["rows"][0];
    assert_eq!(row["cells"], json!(["default", "Active", "60s"]));
    assert!(row.get("conditions").is_none());
    assert_eq!(
        row["object"],
        json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": {
            "name": "default", "uid": "u-1", "resourceVersion": "12", "creationTimestamp": ago(60),
            "labels": {"kubernetes.io/metadata.name": "default"}
        }})
    );
    let meta_keys: Vec<&String> = row["object"]["metadata"].as_object().unwrap().keys().collect();
    assert_eq!(
        meta_keys,
        ["name", "uid", "resourceVersion", "creationTimestamp", "labels"]
    );
}

#[test]
fn partial_metadata_keeps_pointer_fields_and_null_creation() {
    let obj = json!({"metadata": {"name": "x", "deletionGracePeriodSeconds": 0, "deletionTimestamp": ago(1),
                                      "finalizers": ["a"], "ownerReferences": []}});
    assert_eq!(
        partial_object_metadata(&obj)["metadata"],
        json!({"name": "x", "creationTimestamp": null, "deletionTimestamp": ago(1),
                   "deletionGracePeriodSeconds": 0, "finalizers": ["a"]})
    );
    assert_eq!(
        partial_object_metadata(&json!(7))["metadata"],
        json!({"creationTimestamp": null})
    );
}

#[test]
fn table_include_none_and_object() {
    let p = pod(one_container(), json!({"phase": "Succeeded"}));
    let t = table("", "Pod", &[&p], IncludeObject::None, now());
    let row = t["rows"][0].as_object().unwrap();
    assert_eq!(row.keys().collect::<Vec<_>>(), ["cells", "conditions", "object"]);
    assert_eq!(row["object"], Value::Null);
    assert_eq!(row["conditions"][0]["reason"], "Succeeded");
    let t = table("", "Pod", &[&p], IncludeObject::Object, now());
    assert_eq!(t["rows"][0]["object"], p);
}

#[test]
fn table_empty_lists() {
    let t = table("", "Service", &[], IncludeObject::Metadata, now());
    assert_eq!(t["rows"], json!([]));
    assert_eq!(t["columnDefinitions"].as_array().unwrap().len(), 7);
    // The default convertor leaves rows nil.
    let t = table("", "ResourceQuota", &[], IncludeObject::Metadata, now());
    assert_eq!(t["rows"], Value::Null);
    let cm = json!({"metadata": {"name": "c", "creationTimestamp": "2024-01-01T00:00:00Z"}});
    let t = table("", "ResourceQuota", &[&cm, &cm], IncludeObject::Metadata, now());
    assert_eq!(t["rows"][1]["cells"], json!(["c", "2024-01-01T00:00:00Z"]));
}

#[test]
fn service_cidrs_and_ip_addresses_print_as_kubes() {
    assert_eq!(
        names("networking.k8s.io", "IPAddress"),
        [("Name".to_string(), 0), ("ParentRef".to_string(), 0)]
    );
    let cidr = json!({"metadata": {"name": "kubernetes", "creationTimestamp": ago(30)},
        "spec": {"cidrs": ["10.96.0.0/12", "fd00::/108"]}});
    assert_eq!(
        strs(&cells("networking.k8s.io", "ServiceCIDR", &cidr)),
        ["kubernetes", "10.96.0.0/12,fd00::/108", "30s"]
    );
    let ip = |parent: Value| json!({"metadata": {"name": "10.96.0.1"}, "spec": {"parentRef": parent}});
    let service = ip(json!({"group": "", "resource": "services", "namespace": "default", "name": "web"}));
    assert_eq!(
        strs(&cells("networking.k8s.io", "IPAddress", &service)),
        ["10.96.0.1", "services/default/web"]
    );
    let gateway = ip(json!({"group": "gateway.networking.k8s.io", "resource": "Gateways", "name": "gw"}));
    assert_eq!(
        strs(&cells("networking.k8s.io", "IPAddress", &gateway)),
        ["10.96.0.1", "gateways.gateway.networking.k8s.io/gw"]
    );
    assert_eq!(
        strs(&cells("networking.k8s.io", "IPAddress", &ip(Value::Null))),
        ["10.96.0.1", "<none>"]
    );
}
