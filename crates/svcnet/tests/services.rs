//! Service semantics through kubectl: the built-in Services, ClusterIP and NodePort allocation with
//! Kubernetes' messages, release on delete, every type transition, dual-stack, and a full range.

use serde_json::Value;
use svcnet_testsupport::Cluster;

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

fn svc_yaml(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

fn create(c: &Cluster, name: &str, spec: &str) -> Value {
    c.ok_v("1.33", &["create", "-f", "-"], Some(&svc_yaml(name, spec)));
    c.get_json(&["svc", name])
}

fn create_err(c: &Cluster, name: &str, spec: &str) -> String {
    c.fail_v("1.33", &["create", "-f", "-"], Some(&svc_yaml(name, spec)))
}

#[test]
fn built_in_services() {
    let c = Cluster::start(SVCNET);
    let k = c.get_json(&["svc", "kubernetes", "-n", "default"]);
    assert_eq!(k["spec"]["clusterIP"], "127.96.0.1");
    assert_eq!(k["spec"]["ports"][0]["port"], 443);
    let ep = c.get_json(&["endpoints", "kubernetes", "-n", "default"]);
    let port = c.addr.rsplit(':').next().unwrap().parse::<i64>().unwrap();
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "127.0.0.1");
    assert_eq!(ep["subsets"][0]["ports"][0]["port"], port);
    let dns = c.get_json(&["svc", "kube-dns", "-n", "kube-system"]);
    assert_eq!(dns["spec"]["clusterIP"], "127.96.0.10");
    let ports: Vec<(String, i64, String)> = dns["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["port"].as_i64().unwrap(),
                p["protocol"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [
            ("dns".into(), 53, "UDP".into()),
            ("dns-tcp".into(), 53, "TCP".into()),
            ("metrics".into(), 9153, "TCP".into())
        ]
    );
}

#[test]
fn defaults_match_kubernetes() {
    let c = Cluster::start(SVCNET);
    let s = create(&c, "d", "  ports:\n  - port: 80\n");
    let spec = &s["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["ports"][0]["protocol"], "TCP");
    assert_eq!(spec["ports"][0]["targetPort"], 80);
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["ipFamilies"], serde_json::json!(["IPv4"]));
    assert_eq!(spec["clusterIPs"][0], spec["clusterIP"]);
    let lb = create(
        &c,
        "lb",
        "  type: LoadBalancer\n  externalTrafficPolicy: Local\n  ports:\n  - port: 80\n",
    );
    assert_eq!(lb["spec"]["allocateLoadBalancerNodePorts"], true);
    assert!(
        lb["spec"]["ports"][0]["nodePort"]
            .as_i64()
            .is_some_and(|p| (30000..=32767).contains(&p))
    );
    assert!(
        lb["spec"]["healthCheckNodePort"]
            .as_i64()
            .is_some_and(|p| (30000..=32767).contains(&p))
    );
    let aff = create(&c, "aff", "  sessionAffinity: ClientIP\n  ports:\n  - port: 80\n");
    assert_eq!(
        aff["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"],
        10800
    );
    let np = create(&c, "np", "  type: NodePort\n  ports:\n  - port: 80\n");
    assert_eq!(np["spec"]["externalTrafficPolicy"], "Cluster");
}

#[test]
fn node_ports_collide_range_and_release() {
    let c = Cluster::start(SVCNET);
    create(
        &c,
        "a",
        "  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 32000\n",
    );
    let err = create_err(
        &c,
        "b",
        "  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 32000\n",
    );
    assert!(
        err.contains("spec.ports[0].nodePort: Invalid value: 32000: provided port is already allocated"),
        "{err}"
    );
    let err = create_err(
        &c,
        "b",
        "  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 40000\n",
    );
    assert!(
        err.contains("provided port is not in the valid range. The range of valid ports is 30000-32767"),
        "{err}"
    );
    let err = create_err(&c, "b", "  ports:\n  - port: 80\n    nodePort: 30500\n");
    assert!(
        err.contains("may not be used when `type` is 'ClusterIP'") || err.contains("nodePort"),
        "{err}"
    );
    // The same port for TCP and UDP in one Service is fine.
    let both = create(
        &c,
        "both",
        "  type: NodePort\n  ports:\n  - name: t\n    port: 53\n    protocol: TCP\n    nodePort: 31053\n  - name: u\n    port: 53\n    protocol: UDP\n    nodePort: 31053\n",
    );
    assert_eq!(both["spec"]["ports"][1]["nodePort"], 31053);
    // Deleting releases the port for others.
    c.ok(&["delete", "svc", "a"]);
    create(
        &c,
        "b",
        "  type: NodePort\n  ports:\n  - port: 80\n    nodePort: 32000\n",
    );
}

#[test]
fn cluster_ips_requested_and_released() {
    let c = Cluster::start(SVCNET);
    let s = create(&c, "fixed", "  clusterIP: 127.96.0.50\n  ports:\n  - port: 80\n");
    assert_eq!(s["spec"]["clusterIP"], "127.96.0.50");
    let err = create_err(&c, "again", "  clusterIP: 127.96.0.50\n  ports:\n  - port: 80\n");
    assert!(
        err.contains("failed to allocate IP 127.96.0.50: provided IP is already allocated"),
        "{err}"
    );
    let err = create_err(&c, "outside", "  clusterIP: 10.0.0.5\n  ports:\n  - port: 80\n");
    assert!(err.contains("is not in the valid range"), "{err}");
    c.ok(&["delete", "svc", "fixed"]);
    create(&c, "again", "  clusterIP: 127.96.0.50\n  ports:\n  - port: 80\n");
    // Dynamic allocation avoids the static band at the bottom of the range (KEP-3070).
    let d = create(&c, "dyn", "  ports:\n  - port: 80\n");
    let ip: std::net::Ipv4Addr = d["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
    assert!(
        u32::from(ip) - u32::from(std::net::Ipv4Addr::new(127, 96, 0, 0)) > 256,
        "{ip}"
    );
    // clusterIP is immutable.
    let err = c.fail_v(
        "1.33",
        &[
            "patch",
            "svc",
            "dyn",
            "-p",
            r#"{"spec":{"clusterIP":"127.96.0.77","clusterIPs":["127.96.0.77"]}}"#,
        ],
        None,
    );
    assert!(
        err.contains("field is immutable") || err.contains("may not change once set"),
        "{err}"
    );
}

#[test]
fn every_type_transition() {
    let c = Cluster::start(SVCNET);
    create(&c, "t", "  ports:\n  - port: 80\n");
    // ClusterIP -> NodePort allocates a node port.
    c.ok(&["patch", "svc", "t", "-p", r#"{"spec":{"type":"NodePort"}}"#]);
    let s = c.get_json(&["svc", "t"]);
    let np = s["spec"]["ports"][0]["nodePort"]
        .as_i64()
        .expect("node port allocated");
    // NodePort -> LoadBalancer keeps it.
    c.ok(&["patch", "svc", "t", "-p", r#"{"spec":{"type":"LoadBalancer"}}"#]);
    assert_eq!(c.get_json(&["svc", "t"])["spec"]["ports"][0]["nodePort"], np);
    // LoadBalancer -> ClusterIP drops and releases it: another Service can take it.
    c.ok(&["patch", "svc", "t", "--type=json", "-p", r#"[{"op":"replace","path":"/spec/type","value":"ClusterIP"},{"op":"remove","path":"/spec/ports/0/nodePort"}]"#]);
    let s = c.get_json(&["svc", "t"]);
    assert!(s["spec"]["ports"][0].get("nodePort").is_none());
    create(
        &c,
        "taker",
        &format!("  type: NodePort\n  ports:\n  - port: 80\n    nodePort: {np}\n"),
    );
    // ClusterIP -> ExternalName releases the ClusterIP.
    let ip = s["spec"]["clusterIP"].as_str().unwrap().to_string();
    c.ok(&["patch", "svc", "t", "--type=merge", "-p", r#"{"spec":{"type":"ExternalName","externalName":"db.example.com","clusterIP":null,"clusterIPs":null,"ipFamilies":null,"ipFamilyPolicy":null}}"#]);
    let s = c.get_json(&["svc", "t"]);
    assert!(s["spec"].get("clusterIP").is_none(), "{s}");
    create(
        &c,
        "ipthief",
        &format!("  clusterIP: {ip}\n  ports:\n  - port: 80\n"),
    );
    // ExternalName -> ClusterIP allocates a new one.
    c.ok(&[
        "patch",
        "svc",
        "t",
        "--type=merge",
        "-p",
        r#"{"spec":{"type":"ClusterIP","externalName":null}}"#,
    ]);
    let s = c.get_json(&["svc", "t"]);
    assert!(
        s["spec"]["clusterIP"]
            .as_str()
            .is_some_and(|v| v.starts_with("127.") && v != ip),
        "{s}"
    );
    // Headless Services get no IP.
    let h = create(&c, "headless", "  clusterIP: None\n  selector:\n    app: x\n");
    assert_eq!(h["spec"]["clusterIP"], "None");
    let table = c.ok(&["get", "svc", "headless"]);
    assert!(table.contains("None"), "{table}");
}

#[test]
fn dual_stack_families() {
    let c = Cluster::start_with(SVCNET, &["--service-cidr", "127.96.0.0/16,fd00:96::/112"]);
    let s = create(
        &c,
        "pd",
        "  ipFamilyPolicy: PreferDualStack\n  ports:\n  - port: 80\n",
    );
    assert_eq!(s["spec"]["ipFamilies"], serde_json::json!(["IPv4", "IPv6"]));
    let ips = s["spec"]["clusterIPs"].as_array().unwrap();
    assert_eq!(ips.len(), 2);
    assert!(ips[1].as_str().unwrap().starts_with("fd00:96::"));
    let v6 = create(&c, "v6", "  ipFamilies: [IPv6]\n  ports:\n  - port: 80\n");
    assert!(v6["spec"]["clusterIP"].as_str().unwrap().contains(':'));
    // One default ServiceCIDR for both families, and an IPAddress per address, labelled by family.
    let cidr = c.get_json(&["servicecidr", "kubernetes"]);
    assert_eq!(
        cidr["spec"]["cidrs"],
        serde_json::json!(["127.96.0.0/16", "fd00:96::/112"])
    );
    for (ip, family) in [(&ips[0], "IPv4"), (&ips[1], "IPv6")] {
        let addr = c.get_json(&["ipaddress", ip.as_str().unwrap()]);
        assert_eq!(
            addr["metadata"]["labels"]["ipaddress.kubernetes.io/ip-family"],
            family
        );
        assert_eq!(addr["spec"]["parentRef"]["name"], "pd");
    }
    let single = Cluster::start(SVCNET);
    let err = single.fail_v(
        "1.33",
        &["create", "-f", "-"],
        Some(&svc_yaml(
            "rd",
            "  ipFamilyPolicy: RequireDualStack\n  ports:\n  - port: 80\n",
        )),
    );
    assert!(err.contains("dual-stack"), "{err}");
}

#[test]
fn a_full_range_says_so() {
    // A /28 has 14 usable addresses; the bootstrap Services take two of them.
    let c = Cluster::start_with(SVCNET, &["--service-cidr", "127.96.0.0/28"]);
    let mut full = None;
    for i in 0..20 {
        let out = c.kubectl_v(
            "1.33",
            &["create", "-f", "-"],
            Some(&svc_yaml(&format!("f{i}"), "  ports:\n  - port: 80\n")),
        );
        if !out.status.success() {
            full = Some((i, String::from_utf8_lossy(&out.stderr).into_owned()));
            break;
        }
    }
    let (i, err) = full.expect("the range fills up");
    assert_eq!(i, 12, "{err}");
    assert!(err.contains("range is full"), "{err}");
    c.ok(&["delete", "svc", "f0"]);
    create(&c, "fits-again", "  ports:\n  - port: 80\n");
}
