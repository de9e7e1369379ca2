//! Table-driven tests for Service defaulting and validation. The cases follow the shape of kube's
//! `TestValidateServiceCreate`/`TestValidateServiceUpdate`/`TestSetDefaultService`, rewritten: each case
//! mutates a valid Service and states the exact `path: message` lines kube-apiserver prints.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;

use super::*;
use crate::field::FieldError;

const V4: ServiceConfig = ServiceConfig {
    primary_family: IpFamily::IPv4,
    secondary_family: None,
};
const DUAL: ServiceConfig = ServiceConfig {
    primary_family: IpFamily::IPv4,
    secondary_family: Some(IpFamily::IPv6),
};
const DUAL6: ServiceConfig = ServiceConfig {
    primary_family: IpFamily::IPv6,
    secondary_family: Some(IpFamily::IPv4),
};

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const KEY_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";
const CIDR_MSG: &str = "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)";

/// A Service as a user would POST it: name, namespace, a selector and one port.
fn base() -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "abc123", "namespace": "default", "resourceVersion": "1"},
        "spec": {"selector": {"app": "web"}, "ports": [{"name": "p", "port": 8675}]}
    }))
    .expect("valid Service JSON")
}

fn sp(svc: &mut Service) -> &mut ServiceSpec {
    svc.spec.get_or_insert_with(ServiceSpec::default)
}

fn port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: (!name.is_empty()).then(|| name.to_string()),
        port,
        ..Default::default()
    }
}

fn strs(v: &[&str]) -> Option<Vec<String>> {
    Some(v.iter().map(|s| s.to_string()).collect())
}

fn some(s: &str) -> Option<String> {
    Some(s.to_string())
}

/// Stands in for the allocator, which runs between defaulting and validation in kube: cluster IPs per
/// family, node ports and the health-check node port. Like kube, it allocates nothing when IP-family
/// defaulting failed (the request is rejected before allocation).
fn allocate(svc: &mut Service, old: Option<&Service>, cfg: &ServiceConfig) {
    let old_spec = old.map(|o| spec_of(o).into_owned());
    if !super::validate::ip_family_errors(svc, old_spec.as_ref(), cfg).is_empty() {
        return;
    }
    let spec = sp(svc);
    let t = spec.type_.clone().unwrap_or_default();
    if t != "ExternalName" && !is_headless(spec) {
        let fams = spec.ip_families.clone().unwrap_or_default();
        let ips = spec.cluster_ips.get_or_insert_with(Vec::new);
        for (i, f) in fams.iter().enumerate() {
            if i >= ips.len() {
                ips.push(if f == "IPv4" { "10.0.0.10" } else { "2001:db8::a" }.to_string());
            }
        }
        if spec.cluster_ip.as_deref().unwrap_or("").is_empty() {
            spec.cluster_ip = ips.first().cloned();
        }
    }
    let alloc_np =
        t == "NodePort" || (t == "LoadBalancer" && spec.allocate_load_balancer_node_ports == Some(true));
    if alloc_np {
        for (i, p) in spec.ports.iter_mut().flatten().enumerate() {
            if p.node_port.unwrap_or(0) == 0 {
                p.node_port = Some(30000 + i as i32);
            }
        }
    }
    if needs_health_check(spec) && spec.health_check_node_port.unwrap_or(0) == 0 {
        spec.health_check_node_port = Some(32000);
    }
}

fn rendered(errs: &[FieldError]) -> Vec<String> {
    errs.iter().map(|e| e.to_string()).collect()
}

/// Builds the base, applies `tweak` to the request, then defaults, allocates and validates like a create.
fn create_errors(tweak: fn(&mut Service), cfg: &ServiceConfig) -> Vec<String> {
    let mut svc = base();
    tweak(&mut svc);
    set_defaults(&mut svc, cfg);
    allocate(&mut svc, None, cfg);
    rendered(&validate_create(&svc, cfg))
}

type Case = (&'static str, fn(&mut Service), Vec<String>);

fn expect(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn run_create_cases(cases: Vec<Case>, cfg: &ServiceConfig) {
    let mut failures = Vec::new();
    for (name, tweak, want) in cases {
        let got = create_errors(tweak, cfg);
        if got != want {
            failures.push(format!("case {name:?}:\n  got:  {got:#?}\n  want: {want:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn create_valid_services() {
    let cases: Vec<Case> = vec![
        ("default ClusterIP", |_| {}, vec![]),
        (
            "explicit cluster IP",
            |s| sp(s).cluster_ip = some("10.0.0.5"),
            vec![],
        ),
        (
            "cluster IP with leading zeros is tolerated",
            |s| sp(s).cluster_ip = some("010.000.000.005"),
            vec![],
        ),
        ("headless", |s| sp(s).cluster_ip = some("None"), vec![]),
        (
            "headless without ports",
            |s| {
                sp(s).cluster_ip = some("None");
                sp(s).ports = None;
            },
            vec![],
        ),
        (
            "headless without selector",
            |s| {
                sp(s).cluster_ip = some("None");
                sp(s).selector = None;
            },
            vec![],
        ),
        (
            "ExternalName",
            |s| {
                sp(s).type_ = some("ExternalName");
                sp(s).external_name = some("foo.bar.example.com");
                sp(s).ports = None;
            },
            vec![],
        ),
        (
            "ExternalName with trailing dot",
            |s| {
                sp(s).type_ = some("ExternalName");
                sp(s).external_name = some("foo.bar.example.com.");
            },
            vec![],
        ),
        (
            "ExternalName that looks like an IP (kube only warns)",
            |s| {
                sp(s).type_ = some("ExternalName");
                sp(s).external_name = some("1.2.3.4");
            },
            vec![],
        ),
        (
            "NodePort with requested node port",
            |s| {
                sp(s).type_ = some("NodePort");
                sp(s).ports.as_mut().unwrap()[0].node_port = Some(30001);
            },
            vec![],
        ),
        ("LoadBalancer", |s| sp(s).type_ = some("LoadBalancer"), vec![]),
        (
            "LoadBalancer without node ports",
            |s| {
                sp(s).type_ = some("LoadBalancer");
                sp(s).allocate_load_balancer_node_ports = Some(false);
            },
            vec![],
        ),
        (
            "LoadBalancer with Local traffic policy",
            |s| {
                sp(s).type_ = some("LoadBalancer");
                sp(s).external_traffic_policy = some("Local");
            },
            vec![],
        ),
        (
            "LoadBalancer with class and source ranges",
            |s| {
                sp(s).type_ = some("LoadBalancer");
                sp(s).load_balancer_class = some("example.com/internal-vip");
                sp(s).load_balancer_source_ranges = strs(&[" 10.0.0.0/8 ", "2001:db8::/32"]);
            },
            vec![],
        ),
        (
            "LoadBalancer with source-range annotation",
            |s| {
                sp(s).type_ = some("LoadBalancer");
                s.metadata.annotations = Some(
                    [(
                        "service.beta.kubernetes.io/load-balancer-source-ranges".to_string(),
                        "10.0.0.0/8, 192.168.0.0/16".to_string(),
                    )]
                    .into(),
                );
            },
            vec![],
        ),
        (
            "ClientIP affinity",
            |s| sp(s).session_affinity = some("ClientIP"),
            vec![],
        ),
        (
            "ClientIP affinity with max timeout",
            |s| {
                sp(s).session_affinity = some("ClientIP");
                sp(s).session_affinity_config = Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
                    client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig {
                        timeout_seconds: Some(86400),
                    }),
                });
            },
            vec![],
        ),
        (
            "external IPs on ClusterIP",
            |s| sp(s).external_ips = strs(&["1.2.3.4", "2001:db8::1"]),
            vec![],
        ),
        (
            "named target port",
            |s| sp(s).ports.as_mut().unwrap()[0].target_port = Some(IntOrString::String("http".into())),
            vec![],
        ),
        (
            "several named ports",
            |s| sp(s).ports = Some(vec![port("a", 80), port("b", 81)]),
            vec![],
        ),
        (
            "same port on two protocols",
            |s| {
                let mut udp = port("dns-udp", 53);
                udp.protocol = some("UDP");
                sp(s).ports = Some(vec![port("dns-tcp", 53), udp]);
            },
            vec![],
        ),
        (
            "SCTP port",
            |s| sp(s).ports.as_mut().unwrap()[0].protocol = some("SCTP"),
            vec![],
        ),
        (
            "appProtocol",
            |s| sp(s).ports.as_mut().unwrap()[0].app_protocol = some("kubernetes.io/h2c"),
            vec![],
        ),
        (
            "trafficDistribution",
            |s| sp(s).traffic_distribution = some("PreferClose"),
            vec![],
        ),
        (
            "internal traffic policy Local",
            |s| sp(s).internal_traffic_policy = some("Local"),
            vec![],
        ),
        (
            "matching topology annotations",
            |s| {
                s.metadata.annotations = Some(
                    [
                        (
                            "service.kubernetes.io/topology-aware-hints".to_string(),
                            "Auto".to_string(),
                        ),
                        (
                            "service.kubernetes.io/topology-mode".to_string(),
                            "Auto".to_string(),
                        ),
                    ]
                    .into(),
                );
            },
            vec![],
        ),
        (
            "explicit SingleStack IPv4",
            |s| {
                sp(s).ip_family_policy = some("SingleStack");
                sp(s).ip_families = strs(&["IPv4"]);
            },
            vec![],
        ),
        (
            "headless selectorless RequireDualStack on a single-stack cluster",
            |s| {
                sp(s).cluster_ip = some("None");
                sp(s).selector = None;
                sp(s).ip_family_policy = some("RequireDualStack");
            },
            vec![],
        ),
        (
            "PreferDualStack on a single-stack cluster",
            |s| sp(s).ip_family_policy = some("PreferDualStack"),
            vec![],
        ),
    ];
    run_create_cases(cases, &V4);
}

#[test]
fn create_invalid_metadata_and_ports() {
    let cases: Vec<Case> = vec![
        (
            "missing name",
            |s| s.metadata.name = None,
            expect(&["metadata.name: Required value: name or generateName is required"]),
        ),
        (
            "name not DNS-1035",
            |s| s.metadata.name = some("1abc"),
            vec![format!("metadata.name: Invalid value: \"1abc\": {DNS1035_MSG}")],
        ),
        (
            "name with underscore",
            |s| s.metadata.name = some("Foo_bar"),
            vec![format!(
                "metadata.name: Invalid value: \"Foo_bar\": {DNS1035_MSG}"
            )],
        ),
        (
            "missing namespace",
            |s| s.metadata.namespace = None,
            expect(&["metadata.namespace: Required value"]),
        ),
        (
            "bad label",
            |s| s.metadata.labels = Some([("-x".to_string(), "y".to_string())].into()),
            vec![format!("metadata.labels: Invalid value: \"-x\": {KEY_NAME_MSG}")],
        ),
        (
            "mismatched topology annotations",
            |s| {
                s.metadata.annotations = Some(
                    [
                        (
                            "service.kubernetes.io/topology-aware-hints".to_string(),
                            "Auto".to_string(),
                        ),
                        (
                            "service.kubernetes.io/topology-mode".to_string(),
                            "Other".to_string(),
                        ),
                    ]
                    .into(),
                );
            },
            expect(&[
                "metadata.annotations[service.kubernetes.io/topology-mode]: Invalid value: \"Other\": must match annotations[service.kubernetes.io/topology-aware-hints] when both are specified",
            ]),
        ),
        (
            "no ports",
            |s| sp(s).ports = None,
            expect(&["spec.ports: Required value"]),
        ),
        (
            "empty ports",
            |s| sp(s).ports = Some(vec![]),
            expect(&["spec.ports: Required value"]),
        ),
        (
            "second port without name",
            |s| sp(s).ports = Some(vec![port("a", 80), port("", 81)]),
            expect(&["spec.ports[1].name: Required value"]),
        ),
        (
            "single port may be unnamed",
            |s| sp(s).ports = Some(vec![port("", 80)]),
            vec![],
        ),
        (
            "bad port name",
            |s| sp(s).ports = Some(vec![port("Bad_Name", 80)]),
            vec![format!(
                "spec.ports[0].name: Invalid value: \"Bad_Name\": {LABEL_MSG}"
            )],
        ),
        (
            "duplicate port name",
            |s| sp(s).ports = Some(vec![port("a", 80), port("a", 81)]),
            expect(&["spec.ports[1].name: Duplicate value: \"a\""]),
        ),
        (
            "port 0",
            |s| sp(s).ports = Some(vec![port("a", 0)]),
            expect(&[
                "spec.ports[0].port: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            ]),
        ),
        (
            "port too large with valid target",
            |s| {
                let mut p = port("a", 65536);
                p.target_port = Some(IntOrString::Int(80));
                sp(s).ports = Some(vec![p]);
            },
            expect(&["spec.ports[0].port: Invalid value: 65536: must be between 1 and 65535, inclusive"]),
        ),
        (
            "bad protocol",
            |s| sp(s).ports.as_mut().unwrap()[0].protocol = some("HTTP"),
            expect(&[
                "spec.ports[0].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
            ]),
        ),
        (
            "target port out of range",
            |s| sp(s).ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(65536)),
            expect(&[
                "spec.ports[0].targetPort: Invalid value: 65536: must be between 1 and 65535, inclusive",
            ]),
        ),
        (
            "negative target port",
            |s| sp(s).ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(-1)),
            expect(&["spec.ports[0].targetPort: Invalid value: -1: must be between 1 and 65535, inclusive"]),
        ),
        (
            "bad named target port",
            |s| sp(s).ports.as_mut().unwrap()[0].target_port = Some(IntOrString::String("Bad Name!".into())),
            expect(&[
                "spec.ports[0].targetPort: Invalid value: \"Bad Name!\": must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
            ]),
        ),
        (
            "numeric named target port",
            |s| sp(s).ports.as_mut().unwrap()[0].target_port = Some(IntOrString::String("1234".into())),
            expect(&[
                "spec.ports[0].targetPort: Invalid value: \"1234\": must contain at least one letter (a-z)",
            ]),
        ),
        (
            "target port name too long",
            |s| {
                sp(s).ports.as_mut().unwrap()[0].target_port =
                    Some(IntOrString::String("abcdefghijklmnop".into()))
            },
            expect(&[
                "spec.ports[0].targetPort: Invalid value: \"abcdefghijklmnop\": must be no more than 15 bytes",
            ]),
        ),
        (
            "bad appProtocol",
            |s| sp(s).ports.as_mut().unwrap()[0].app_protocol = some("-h2c"),
            vec![format!(
                "spec.ports[0].appProtocol: Invalid value: \"-h2c\": {KEY_NAME_MSG}"
            )],
        ),
        (
            "duplicate protocol and port",
            |s| sp(s).ports = Some(vec![port("a", 80), port("b", 80)]),
            expect(&[
                "spec.ports[1]: Duplicate value: core.ServicePort{Name:\"\", Protocol:\"TCP\", AppProtocol:(*string)(nil), Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:\"\"}, NodePort:0}",
            ]),
        ),
        (
            "duplicate node port",
            |s| {
                sp(s).type_ = some("NodePort");
                let mut a = port("a", 80);
                a.node_port = Some(30001);
                let mut b = port("b", 81);
                b.node_port = Some(30001);
                sp(s).ports = Some(vec![a, b]);
            },
            expect(&["spec.ports[1].nodePort: Duplicate value: 30001"]),
        ),
        (
            "same node port on two protocols",
            |s| {
                sp(s).type_ = some("NodePort");
                let mut a = port("a", 53);
                a.node_port = Some(30053);
                let mut b = port("b", 53);
                b.node_port = Some(30053);
                b.protocol = some("UDP");
                sp(s).ports = Some(vec![a, b]);
            },
            vec![],
        ),
        (
            "node port on ClusterIP",
            |s| sp(s).ports.as_mut().unwrap()[0].node_port = Some(30001),
            expect(&["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]),
        ),
        (
            "bad selector",
            |s| sp(s).selector = Some([("app".to_string(), "-web".to_string())].into()),
            expect(&[
                "spec.selector: Invalid value: \"-web\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
            ]),
        ),
    ];
    run_create_cases(cases, &V4);
}

#[test]
fn create_invalid_types_and_policies() {
    let cases: Vec<Case> = vec![
        ("unknown type", |s| sp(s).type_ = some("Foo"), expect(&["spec.type: Unsupported value: \"Foo\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""])),
        ("headless LoadBalancer", |s| {
            sp(s).type_ = some("LoadBalancer");
            sp(s).cluster_ip = some("None");
        }, expect(&["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for LoadBalancer services"])),
        ("headless NodePort", |s| {
            sp(s).type_ = some("NodePort");
            sp(s).cluster_ip = some("None");
        }, expect(&["spec.clusterIPs[0]: Invalid value: \"None\": may not be set to 'None' for NodePort services"])),
        ("ExternalName without name", |s| sp(s).type_ = some("ExternalName"), expect(&["spec.externalName: Required value"])),
        ("ExternalName that is only a dot", |s| {
            sp(s).type_ = some("ExternalName");
            sp(s).external_name = some(".");
        }, expect(&["spec.externalName: Required value"])),
        ("ExternalName not a subdomain", |s| {
            sp(s).type_ = some("ExternalName");
            sp(s).external_name = some("Foo.com");
        }, vec![format!("spec.externalName: Invalid value: \"Foo.com\": {SUBDOMAIN_MSG}")]),
        ("ExternalName with cluster IP", |s| {
            sp(s).type_ = some("ExternalName");
            sp(s).external_name = some("foo.com");
            sp(s).cluster_ip = some("10.0.0.1");
        }, expect(&["spec.clusterIPs: Forbidden: may not be set for ExternalName services"])),
        ("ExternalName with families and policy", |s| {
            sp(s).type_ = some("ExternalName");
            sp(s).external_name = some("foo.com");
            sp(s).ip_families = strs(&["IPv4"]);
            sp(s).ip_family_policy = some("SingleStack");
        }, expect(&[
            "spec.ipFamilies: Forbidden: may not be set for ExternalName services",
            "spec.ipFamilyPolicy: Forbidden: may not be set for ExternalName services",
        ])),
        ("unknown session affinity", |s| sp(s).session_affinity = some("Foo"), expect(&["spec.sessionAffinity: Unsupported value: \"Foo\": supported values: \"ClientIP\", \"None\""])),
        ("ClientIP timeout 0", |s| {
            sp(s).session_affinity = some("ClientIP");
            sp(s).session_affinity_config = Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
                client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig { timeout_seconds: Some(0) }),
            });
        }, expect(&["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less than 86400"])),
        ("ClientIP timeout over a day", |s| {
            sp(s).session_affinity = some("ClientIP");
            sp(s).session_affinity_config = Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
                client_ip: Some(k8s_openapi::api::core::v1::ClientIPConfig { timeout_seconds: Some(86401) }),
            });
        }, expect(&["spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 86401: must be greater than 0 and less than 86400"])),
        ("invalid external IP", |s| sp(s).external_ips = strs(&["1.2.3"]), vec![format!("spec.externalIPs[0]: Invalid value: \"1.2.3\": {IP_MSG}")]),
        ("loopback external IP", |s| sp(s).external_ips = strs(&["1.2.3.4", "127.0.0.1"]), expect(&["spec.externalIPs[1]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"])),
        ("unspecified external IP", |s| sp(s).external_ips = strs(&["0.0.0.0"]), expect(&["spec.externalIPs[0]: Invalid value: \"0.0.0.0\": may not be unspecified (0.0.0.0)"])),
        ("link-local external IP", |s| sp(s).external_ips = strs(&["169.254.169.254"]), expect(&["spec.externalIPs[0]: Invalid value: \"169.254.169.254\": may not be in the link-local range (169.254.0.0/16, fe80::/10)"])),
        ("source ranges on ClusterIP", |s| sp(s).load_balancer_source_ranges = strs(&["10.0.0.0/8"]), expect(&["spec.LoadBalancerSourceRanges: Forbidden: may only be used when `type` is 'LoadBalancer'"])),
        ("invalid source range", |s| {
            sp(s).type_ = some("LoadBalancer");
            sp(s).load_balancer_source_ranges = strs(&["10.0.0.0/8", "10.0.0.0"]);
        }, vec![format!("spec.LoadBalancerSourceRanges[1]: Invalid value: \"10.0.0.0\": {CIDR_MSG}")]),
        ("source-range annotation on ClusterIP and invalid", |s| {
            s.metadata.annotations = Some(
                [("service.beta.kubernetes.io/load-balancer-source-ranges".to_string(), "10.0.0.0/8,foo".to_string())].into(),
            );
        }, vec![
            "metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]: Forbidden: may only be used when `type` is 'LoadBalancer'".to_string(),
            format!("metadata.annotations[service.beta.kubernetes.io/load-balancer-source-ranges]: Invalid value: \"foo\": {CIDR_MSG}"),
        ]),
        ("allocateLoadBalancerNodePorts on ClusterIP", |s| sp(s).allocate_load_balancer_node_ports = Some(true), expect(&["spec.allocateLoadBalancerNodePorts: Forbidden: may only be used when `type` is 'LoadBalancer'"])),
        ("loadBalancerClass on ClusterIP", |s| sp(s).load_balancer_class = some("example.com/lb"), expect(&["spec.loadBalancerClass: Forbidden: may only be used when `type` is 'LoadBalancer'"])),
        ("bad loadBalancerClass", |s| {
            sp(s).type_ = some("LoadBalancer");
            sp(s).load_balancer_class = some("Bad Class");
        }, vec![format!("spec.loadBalancerClass: Invalid value: \"Bad Class\": {KEY_NAME_MSG}")]),
        ("externalTrafficPolicy on internal ClusterIP", |s| sp(s).external_traffic_policy = some("Cluster"), expect(&["spec.externalTrafficPolicy: Invalid value: \"Cluster\": may only be set for externally-accessible services"])),
        ("externalTrafficPolicy on ExternalName", |s| {
            sp(s).type_ = some("ExternalName");
            sp(s).external_name = some("foo.com");
            sp(s).external_traffic_policy = some("Local");
        }, expect(&["spec.externalTrafficPolicy: Invalid value: \"Local\": may only be set for externally-accessible services"])),
        ("unknown externalTrafficPolicy", |s| {
            sp(s).type_ = some("NodePort");
            sp(s).external_traffic_policy = some("Foo");
        }, expect(&["spec.externalTrafficPolicy: Unsupported value: \"Foo\": supported values: \"Cluster\", \"Local\""])),
        ("healthCheckNodePort on NodePort", |s| {
            sp(s).type_ = some("NodePort");
            sp(s).health_check_node_port = Some(31000);
        }, expect(&["spec.healthCheckNodePort: Invalid value: 31000: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"])),
        ("healthCheckNodePort out of range", |s| {
            sp(s).type_ = some("LoadBalancer");
            sp(s).external_traffic_policy = some("Local");
            sp(s).health_check_node_port = Some(65536);
        }, expect(&["spec.healthCheckNodePort: Invalid value: 65536: must be between 1 and 65535, inclusive"])),
        ("unknown internalTrafficPolicy", |s| sp(s).internal_traffic_policy = some("Foo"), expect(&["spec.internalTrafficPolicy: Unsupported value: \"Foo\": supported values: \"Cluster\", \"Local\""])),
        ("unknown trafficDistribution", |s| sp(s).traffic_distribution = some("PreferSomewhere"), expect(&["spec.trafficDistribution: Unsupported value: \"PreferSomewhere\": supported values: \"PreferClose\""])),
    ];
    run_create_cases(cases, &V4);
}

#[test]
fn create_invalid_cluster_ips_and_families() {
    let cases: Vec<Case> = vec![
        (
            "invalid cluster IP",
            |s| sp(s).cluster_ip = some("invalid"),
            vec![format!(
                "spec.clusterIPs[0]: Invalid value: \"invalid\": {IP_MSG}"
            )],
        ),
        (
            "clusterIPs not matching clusterIP",
            |s| {
                sp(s).cluster_ip = some("10.0.0.1");
                sp(s).cluster_ips = strs(&["10.0.0.2"]);
            },
            expect(&[
                "spec.clusterIPs: Invalid value: []string{\"10.0.0.2\"}: first value must match `clusterIP`",
            ]),
        ),
        (
            "clusterIPs without clusterIP",
            |s| sp(s).cluster_ips = strs(&["10.0.0.2"]),
            expect(&[
                "spec.clusterIPs: Invalid value: []string{\"10.0.0.2\"}: must be empty when `clusterIP` is not specified",
            ]),
        ),
        (
            "None not alone",
            |s| {
                sp(s).cluster_ip = some("None");
                sp(s).cluster_ips = strs(&["None", "10.0.0.1"]);
            },
            expect(&[
                "spec.clusterIPs: Invalid value: []string{\"None\", \"10.0.0.1\"}: 'None' must be the first and only value",
            ]),
        ),
        (
            "unknown family",
            |s| sp(s).ip_families = strs(&["IPv5"]),
            expect(&[
                "spec.ipFamilies[0]: Unsupported value: \"IPv5\": supported values: \"IPv4\", \"IPv6\"",
            ]),
        ),
        (
            "duplicate family",
            |s| {
                sp(s).ip_family_policy = some("PreferDualStack");
                sp(s).ip_families = strs(&["IPv4", "IPv4"]);
            },
            expect(&["spec.ipFamilies[1]: Duplicate value: \"IPv4\""]),
        ),
        (
            "unknown policy",
            |s| sp(s).ip_family_policy = some("Foo"),
            expect(&[
                "spec.ipFamilyPolicy: Unsupported value: \"Foo\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\"",
            ]),
        ),
        (
            "RequireDualStack on single-stack cluster",
            |s| sp(s).ip_family_policy = some("RequireDualStack"),
            expect(&[
                "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
            ]),
        ),
        (
            "headless with selector RequireDualStack on single-stack cluster",
            |s| {
                sp(s).cluster_ip = some("None");
                sp(s).ip_family_policy = some("RequireDualStack");
            },
            expect(&[
                "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
            ]),
        ),
        (
            "family not configured",
            |s| sp(s).ip_families = strs(&["IPv6"]),
            expect(&["spec.ipFamilies[0]: Invalid value: \"IPv6\": not configured on this cluster"]),
        ),
        (
            "cluster IP of unconfigured family",
            |s| sp(s).cluster_ip = some("2001:db8::1"),
            expect(&[
                "spec.clusterIPs[0]: Invalid value: []string{\"2001:db8::1\"}: IPv6 is not configured on this cluster",
            ]),
        ),
        (
            "SingleStack with two families",
            |s| {
                sp(s).ip_family_policy = some("SingleStack");
                sp(s).ip_families = strs(&["IPv4", "IPv6"]);
            },
            expect(&[
                "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple IP families are specified",
            ]),
        ),
        (
            "errors from the allocator hide later validation errors",
            |s| {
                s.metadata.name = some("1bad");
                sp(s).ip_family_policy = some("RequireDualStack");
            },
            expect(&[
                "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services",
            ]),
        ),
    ];
    run_create_cases(cases, &V4);

    let dual_cases: Vec<Case> = vec![
        (
            "dual-stack cluster IPs",
            |s| {
                sp(s).ip_family_policy = some("RequireDualStack");
                sp(s).cluster_ip = some("10.0.0.1");
                sp(s).cluster_ips = strs(&["10.0.0.1", "2001:db8::1"]);
            },
            vec![],
        ),
        (
            "RequireDualStack allocates both",
            |s| sp(s).ip_family_policy = some("RequireDualStack"),
            vec![],
        ),
        (
            "two IPs of one family",
            |s| {
                sp(s).ip_family_policy = some("RequireDualStack");
                sp(s).cluster_ip = some("10.0.0.1");
                sp(s).cluster_ips = strs(&["10.0.0.1", "10.0.0.2"]);
            },
            expect(&[
                "spec.clusterIPs: Invalid value: []string{\"10.0.0.1\", \"10.0.0.2\"}: may specify no more than one IP for each IP family",
            ]),
        ),
        (
            "three cluster IPs",
            |s| {
                sp(s).ip_family_policy = some("RequireDualStack");
                sp(s).cluster_ip = some("10.0.0.1");
                sp(s).cluster_ips = strs(&["10.0.0.1", "2001:db8::1", "10.0.0.2"]);
            },
            expect(&[
                "spec.clusterIPs: Invalid value: []string{\"10.0.0.1\", \"2001:db8::1\", \"10.0.0.2\"}: may only hold up to 2 values",
            ]),
        ),
        (
            "SingleStack with two cluster IPs",
            |s| {
                sp(s).ip_family_policy = some("SingleStack");
                sp(s).cluster_ip = some("10.0.0.1");
                sp(s).cluster_ips = strs(&["10.0.0.1", "2001:db8::1"]);
            },
            expect(&[
                "spec.ipFamilyPolicy: Invalid value: \"SingleStack\": must be 'RequireDualStack' or 'PreferDualStack' when multiple cluster IPs are specified",
            ]),
        ),
        (
            "families not matching cluster IPs",
            |s| {
                sp(s).ip_family_policy = some("RequireDualStack");
                sp(s).ip_families = strs(&["IPv6", "IPv4"]);
                sp(s).cluster_ip = some("10.0.0.1");
                sp(s).cluster_ips = strs(&["10.0.0.1", "2001:db8::1"]);
            },
            expect(&[
                "spec.clusterIPs[0]: Invalid value: \"10.0.0.1\": expected an IPv6 value as indicated by `ipFamilies[0]`",
                "spec.clusterIPs[1]: Invalid value: \"2001:db8::1\": expected an IPv4 value as indicated by `ipFamilies[1]`",
            ]),
        ),
    ];
    run_create_cases(dual_cases, &DUAL);
}

#[test]
fn validation_without_defaults_reports_required_fields() {
    // A Service that skipped defaulting shows which fields kube relies on the defaulter for.
    let mut svc = base();
    sp(&mut svc).type_ = some("LoadBalancer");
    sp(&mut svc).external_traffic_policy = some("Local");
    let got = rendered(&validate_create(&svc, &V4));
    assert_eq!(
        got,
        expect(&[
            "spec.ports[0].protocol: Required value",
            "spec.ports[0].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
            "spec.sessionAffinity: Required value",
            "allocateLoadBalancerNodePorts: Required value",
            "spec.healthCheckNodePort: Required value",
            "spec.internalTrafficPolicy: Required value",
        ])
    );
    let mut svc = base();
    set_defaults(&mut svc, &V4);
    sp(&mut svc).session_affinity_config = Some(Default::default());
    assert_eq!(
        rendered(&validate_create(&svc, &V4)),
        expect(&["spec.sessionAffinityConfig: Forbidden: must not be set when session affinity is None"])
    );
    sp(&mut svc).session_affinity = some("ClientIP");
    assert_eq!(
        rendered(&validate_create(&svc, &V4)),
        expect(&[
            "spec.sessionAffinityConfig.clientIP: Required value: when session affinity type is ClientIP"
        ])
    );
    sp(&mut svc).session_affinity_config = None;
    assert_eq!(
        rendered(&validate_create(&svc, &V4)),
        expect(&["spec.sessionAffinityConfig: Required value: when session affinity type is ClientIP"])
    );
    sp(&mut svc).session_affinity_config = Some(k8s_openapi::api::core::v1::SessionAffinityConfig {
        client_ip: Some(Default::default()),
    });
    assert_eq!(
        rendered(&validate_create(&svc, &V4)),
        expect(&[
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Required value: when session affinity type is ClientIP"
        ])
    );
    let mut svc = base();
    sp(&mut svc).type_ = None;
    sp(&mut svc).session_affinity = some("None");
    sp(&mut svc).ports.as_mut().unwrap()[0].protocol = some("TCP");
    sp(&mut svc).ports.as_mut().unwrap()[0].target_port = Some(IntOrString::Int(80));
    assert_eq!(
        rendered(&validate_create(&svc, &V4)),
        expect(&["spec.type: Required value"])
    );
}

fn defaulted(json: serde_json::Value, cfg: &ServiceConfig) -> serde_json::Value {
    let mut svc: Service = serde_json::from_value(json).expect("valid Service JSON");
    set_defaults(&mut svc, cfg);
    let mut v = serde_json::to_value(&svc).expect("serializable");
    if let Some(obj) = v.as_object_mut() {
        obj.remove("apiVersion");
        obj.remove("kind");
    }
    v
}

#[test]
fn create_defaults_table() {
    let meta = json!({"name": "s", "namespace": "default"});
    let cases: Vec<(&str, serde_json::Value, ServiceConfig, serde_json::Value)> = vec![
        (
            "minimal service",
            json!({"metadata": meta, "spec": {"selector": {"a": "b"}, "ports": [{"port": 80}]}}),
            V4,
            json!({"metadata": meta, "spec": {
                "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "selector": {"a": "b"},
                "sessionAffinity": "None", "type": "ClusterIP"}, "status": {"loadBalancer": {}}}),
        ),
        (
            "named and empty target ports, UDP kept",
            json!({"metadata": meta, "spec": {"ports": [
                {"name": "a", "port": 80, "targetPort": "http"},
                {"name": "b", "port": 81, "targetPort": ""},
                {"name": "c", "port": 82, "targetPort": 0, "protocol": "UDP"}]}}),
            V4,
            json!({"metadata": meta, "spec": {
                "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "ports": [
                    {"name": "a", "port": 80, "protocol": "TCP", "targetPort": "http"},
                    {"name": "b", "port": 81, "protocol": "TCP", "targetPort": 81},
                    {"name": "c", "port": 82, "protocol": "UDP", "targetPort": 82}],
                "sessionAffinity": "None", "type": "ClusterIP"}, "status": {"loadBalancer": {}}}),
        ),
        (
            "ClientIP affinity gets the default timeout",
            json!({"metadata": meta, "spec": {"sessionAffinity": "ClientIP", "clusterIP": "10.0.0.7"}}),
            V4,
            json!({"metadata": meta, "spec": {
                "clusterIP": "10.0.0.7", "clusterIPs": ["10.0.0.7"],
                "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 10800}},
                "type": "ClusterIP"}, "status": {"loadBalancer": {}}}),
        ),
        (
            "None affinity drops its config; NodePort gets Cluster traffic policy",
            json!({"metadata": meta, "spec": {"type": "NodePort", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 5}}}}),
            V4,
            json!({"metadata": meta, "spec": {
                "externalTrafficPolicy": "Cluster",
                "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "sessionAffinity": "None", "type": "NodePort"}, "status": {"loadBalancer": {}}}),
        ),
        (
            "LoadBalancer on a dual-stack cluster with PreferDualStack",
            json!({"metadata": meta, "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "PreferDualStack"}}),
            DUAL,
            json!({"metadata": meta, "spec": {
                "allocateLoadBalancerNodePorts": true, "externalTrafficPolicy": "Cluster",
                "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack",
                "sessionAffinity": "None", "type": "LoadBalancer"}, "status": {"loadBalancer": {}}}),
        ),
        (
            "RequireDualStack on an IPv6-primary cluster",
            json!({"metadata": meta, "spec": {"ipFamilyPolicy": "RequireDualStack"}}),
            DUAL6,
            json!({"metadata": meta, "spec": {
                "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv6", "IPv4"], "ipFamilyPolicy": "RequireDualStack",
                "sessionAffinity": "None", "type": "ClusterIP"}, "status": {"loadBalancer": {}}}),
        ),
        (
            "external IPs make a ClusterIP externally accessible; family inferred from the cluster IP",
            json!({"metadata": meta, "spec": {"externalIPs": ["1.2.3.4"], "clusterIP": "2001:db8::5"}}),
            DUAL,
            json!({"metadata": meta, "spec": {
                "clusterIP": "2001:db8::5", "clusterIPs": ["2001:db8::5"], "externalIPs": ["1.2.3.4"],
                "externalTrafficPolicy": "Cluster",
                "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                "sessionAffinity": "None", "type": "ClusterIP"}, "status": {"loadBalancer": {}}}),
        ),
        (
            "headless without selector becomes dual-stack even on a single-stack cluster",
            json!({"metadata": meta, "spec": {"clusterIP": "None"}}),
            V4,
            json!({"metadata": meta, "spec": {
                "clusterIP": "None", "clusterIPs": ["None"],
                "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack",
                "sessionAffinity": "None", "type": "ClusterIP"}, "status": {"loadBalancer": {}}}),
        ),
        (
            "headless with selector stays single-stack",
            json!({"metadata": meta, "spec": {"clusterIP": "None", "selector": {"a": "b"}}}),
            DUAL,
            json!({"metadata": meta, "spec": {
                "clusterIP": "None", "clusterIPs": ["None"],
                "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "selector": {"a": "b"}, "sessionAffinity": "None", "type": "ClusterIP"}, "status": {"loadBalancer": {}}}),
        ),
        (
            "ExternalName gets no traffic policy or families",
            json!({"metadata": meta, "spec": {"type": "ExternalName", "externalName": "foo.com"}}),
            DUAL,
            json!({"metadata": meta, "spec": {
                "externalName": "foo.com", "sessionAffinity": "None", "type": "ExternalName"}, "status": {"loadBalancer": {}}}),
        ),
        (
            "failing family defaulting leaves the fields for validation to report",
            json!({"metadata": meta, "spec": {"ipFamilyPolicy": "RequireDualStack"}}),
            V4,
            json!({"metadata": meta, "spec": {
                "internalTrafficPolicy": "Cluster", "ipFamilyPolicy": "RequireDualStack",
                "sessionAffinity": "None", "type": "ClusterIP"}, "status": {"loadBalancer": {}}}),
        ),
        (
            "status is reset on create",
            json!({"metadata": meta, "spec": {}, "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}),
            V4,
            json!({"metadata": meta, "spec": {
                "internalTrafficPolicy": "Cluster", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                "sessionAffinity": "None", "type": "ClusterIP"}, "status": {"loadBalancer": {}}}),
        ),
    ];
    for (name, input, cfg, want) in cases {
        assert_eq!(defaulted(input, &cfg), want, "case {name:?}");
    }
}

#[test]
fn object_defaults_set_load_balancer_ip_mode() {
    let mut svc: Service = serde_json::from_value(json!({
        "metadata": {"name": "s"},
        "spec": {"type": "LoadBalancer"},
        "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"hostname": "lb.example.com"}, {"ip": "1.2.3.5", "ipMode": "Proxy"}]}}
    }))
    .expect("valid");
    set_object_defaults(&mut svc);
    let v = serde_json::to_value(&svc).expect("serializable");
    assert_eq!(
        v["status"],
        json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "VIP"}, {"hostname": "lb.example.com"}, {"ip": "1.2.3.5", "ipMode": "Proxy"}]}})
    );
    // ClientIP with a timeout keeps it.
    let mut svc: Service = serde_json::from_value(json!({"spec": {"sessionAffinity": "ClientIP",
        "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}}))
    .expect("valid");
    set_object_defaults(&mut svc);
    assert_eq!(
        svc.spec
            .and_then(|s| s.session_affinity_config)
            .and_then(|c| c.client_ip)
            .and_then(|c| c.timeout_seconds),
        Some(60)
    );
}

/// A stored Service: created, defaulted and allocated.
fn stored(tweak: fn(&mut Service), cfg: &ServiceConfig) -> Service {
    let mut svc = base();
    tweak(&mut svc);
    set_defaults(&mut svc, cfg);
    allocate(&mut svc, None, cfg);
    assert!(
        validate_create(&svc, cfg).is_empty(),
        "stored object must be valid: {:?}",
        rendered(&validate_create(&svc, cfg))
    );
    svc
}

/// Applies an update the way kube-apiserver does and returns the updated object and its errors.
fn update(old: &Service, tweak: fn(&mut Service), cfg: &ServiceConfig) -> (Service, Vec<String>) {
    let mut new = old.clone();
    tweak(&mut new);
    set_defaults_update(&mut new, old, cfg);
    allocate(&mut new, Some(old), cfg);
    let errs = rendered(&validate_update(&new, old, cfg));
    (new, errs)
}

type UpdateCase = (
    &'static str,
    fn(&mut Service),
    fn(&mut Service),
    ServiceConfig,
    Vec<String>,
);

#[test]
fn update_validation_table() {
    let cases: Vec<UpdateCase> = vec![
        ("no change", |_| {}, |_| {}, V4, vec![]),
        (
            "re-sent original YAML without allocated values",
            |_| {},
            |s| {
                let spec = sp(s);
                spec.cluster_ip = None;
                spec.cluster_ips = None;
                spec.ip_families = None;
                spec.ip_family_policy = None;
            },
            V4,
            vec![],
        ),
        (
            "missing resourceVersion",
            |_| {},
            |s| s.metadata.resource_version = None,
            V4,
            expect(&["metadata.resourceVersion: Invalid value: \"\": must be specified for an update"]),
        ),
        (
            "renaming",
            |_| {},
            |s| s.metadata.name = some("other"),
            V4,
            expect(&["metadata.name: Invalid value: \"other\": field is immutable"]),
        ),
        // kube's normalizeClusterIPs does not sync the plural here (its "same clusterIPs" test also compares
        // the singular), so the allocator's pre-validation reports the mismatch.
        (
            "changing only clusterIP",
            |_| {},
            |s| sp(s).cluster_ip = some("10.0.0.11"),
            V4,
            expect(&[
                "spec.clusterIPs: Invalid value: []string{\"10.0.0.10\"}: first value must match `clusterIP`",
            ]),
        ),
        (
            "changing both cluster IP fields",
            |_| {},
            |s| {
                sp(s).cluster_ip = some("10.0.0.11");
                sp(s).cluster_ips = strs(&["10.0.0.11"]);
            },
            V4,
            expect(&["spec.clusterIPs[0]: Invalid value: []string{\"10.0.0.11\"}: may not change once set"]),
        ),
        (
            "ClusterIP to headless",
            |_| {},
            |s| {
                sp(s).cluster_ip = some("None");
                sp(s).cluster_ips = strs(&["None"]);
            },
            V4,
            expect(&["spec.clusterIPs[0]: Invalid value: []string{\"None\"}: may not change once set"]),
        ),
        (
            "ClusterIP to ExternalName with copied fields",
            |_| {},
            |s| {
                sp(s).type_ = some("ExternalName");
                sp(s).external_name = some("foo.example.com");
            },
            V4,
            vec![],
        ),
        (
            "ExternalName to ClusterIP",
            |s| {
                sp(s).type_ = some("ExternalName");
                sp(s).external_name = some("foo.example.com");
            },
            |s| {
                sp(s).type_ = some("ClusterIP");
                sp(s).external_name = None;
            },
            V4,
            vec![],
        ),
        (
            "ClusterIP to NodePort to ClusterIP round trip clears node ports",
            |_| {},
            |s| sp(s).type_ = some("NodePort"),
            V4,
            vec![],
        ),
        (
            "NodePort to ClusterIP",
            |s| sp(s).type_ = some("NodePort"),
            |s| sp(s).type_ = some("ClusterIP"),
            V4,
            vec![],
        ),
        (
            "NodePort to ClusterIP adding a node port",
            |s| sp(s).type_ = some("NodePort"),
            |s| {
                sp(s).type_ = some("ClusterIP");
                sp(s).ports.as_mut().unwrap()[0].node_port = Some(31999);
            },
            V4,
            expect(&["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]),
        ),
        (
            "LoadBalancer to ClusterIP",
            |s| {
                sp(s).type_ = some("LoadBalancer");
                sp(s).load_balancer_class = some("example.com/a");
                sp(s).external_traffic_policy = some("Local");
            },
            |s| sp(s).type_ = some("ClusterIP"),
            V4,
            vec![],
        ),
        (
            "changing loadBalancerClass",
            |s| {
                sp(s).type_ = some("LoadBalancer");
                sp(s).load_balancer_class = some("example.com/a");
            },
            |s| sp(s).load_balancer_class = some("example.com/b"),
            V4,
            expect(&["spec.loadBalancerClass: Invalid value: \"example.com/b\": may not change once set"]),
        ),
        (
            "adding loadBalancerClass",
            |s| sp(s).type_ = some("LoadBalancer"),
            |s| sp(s).load_balancer_class = some("example.com/b"),
            V4,
            expect(&["spec.loadBalancerClass: Invalid value: \"example.com/b\": may not change once set"]),
        ),
        (
            "ClusterIP to LoadBalancer with a class",
            |_| {},
            |s| {
                sp(s).type_ = some("LoadBalancer");
                sp(s).load_balancer_class = some("example.com/b");
            },
            V4,
            vec![],
        ),
        (
            "changing healthCheckNodePort",
            |s| {
                sp(s).type_ = some("LoadBalancer");
                sp(s).external_traffic_policy = some("Local");
            },
            |s| sp(s).health_check_node_port = Some(32001),
            V4,
            expect(&["spec.healthCheckNodePort: Forbidden: field is immutable"]),
        ),
        (
            "changing the primary family",
            |_| {},
            |s| sp(s).ip_families = strs(&["IPv6"]),
            DUAL,
            expect(&[
                "spec.clusterIPs[0]: Invalid value: \"10.0.0.10\": expected an IPv6 value as indicated by `ipFamilies[0]`",
            ]),
        ),
        (
            "upgrade to dual-stack",
            |_| {},
            |s| sp(s).ip_family_policy = some("PreferDualStack"),
            DUAL,
            vec![],
        ),
        (
            "downgrade to single-stack",
            |s| sp(s).ip_family_policy = some("RequireDualStack"),
            |s| sp(s).ip_family_policy = some("SingleStack"),
            DUAL,
            vec![],
        ),
        (
            "dropping the secondary IP without SingleStack",
            |s| sp(s).ip_family_policy = some("RequireDualStack"),
            |s| {
                sp(s).cluster_ips.as_mut().unwrap().truncate(1);
            },
            DUAL,
            expect(&[
                "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": must be 'SingleStack' to release the secondary cluster IP",
            ]),
        ),
        (
            "dropping the secondary family without SingleStack",
            |s| sp(s).ip_family_policy = some("RequireDualStack"),
            |s| {
                sp(s).ip_families.as_mut().unwrap().truncate(1);
            },
            DUAL,
            expect(&[
                "spec.ipFamilyPolicy: Invalid value: \"RequireDualStack\": must be 'SingleStack' to release the secondary IP family",
            ]),
        ),
        (
            "PreferDualStack stays as it is on a cluster that lost dual-stack",
            |s| sp(s).ip_family_policy = some("PreferDualStack"),
            |s| {
                s.metadata.labels = Some([("x".to_string(), "y".to_string())].into());
            },
            V4,
            vec![],
        ),
    ];
    let mut failures = Vec::new();
    for (name, before, change, cfg, want) in cases {
        let old = stored(
            before,
            &if name.contains("lost dual-stack") {
                DUAL
            } else {
                cfg
            },
        );
        let (_, got) = update(&old, change, &cfg);
        if got != want {
            failures.push(format!("case {name:?}:\n  got:  {got:#?}\n  want: {want:#?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn update_defaults_drop_type_dependent_fields() {
    // NodePort -> ClusterIP: node ports and the external traffic policy go.
    let old = stored(|s| sp(s).type_ = some("NodePort"), &V4);
    assert_eq!(
        old.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].node_port,
        Some(30000)
    );
    let (new, errs) = update(&old, |s| sp(s).type_ = some("ClusterIP"), &V4);
    assert!(errs.is_empty(), "{errs:?}");
    let spec = new.spec.unwrap();
    assert_eq!(spec.ports.unwrap()[0].node_port, None);
    assert_eq!(spec.external_traffic_policy, None);

    // ClusterIP -> ExternalName: cluster IPs, families and policy go.
    let old = stored(|_| {}, &V4);
    let (new, errs) = update(
        &old,
        |s| {
            sp(s).type_ = some("ExternalName");
            sp(s).external_name = some("foo.example.com");
        },
        &V4,
    );
    assert!(errs.is_empty(), "{errs:?}");
    let spec = new.spec.unwrap();
    assert_eq!(
        (
            spec.cluster_ip,
            spec.cluster_ips,
            spec.ip_families,
            spec.ip_family_policy
        ),
        (None, None, None, None)
    );
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));

    // LoadBalancer -> ClusterIP: LB-only fields and the LB status go, the health-check port too.
    let mut old = stored(
        |s| {
            sp(s).type_ = some("LoadBalancer");
            sp(s).load_balancer_class = some("example.com/a");
            sp(s).external_traffic_policy = some("Local");
        },
        &V4,
    );
    old.status =
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "VIP"}]}}))
            .expect("status");
    let (new, errs) = update(&old, |s| sp(s).type_ = some("ClusterIP"), &V4);
    assert!(errs.is_empty(), "{errs:?}");
    let spec = new.spec.clone().unwrap();
    assert_eq!(spec.allocate_load_balancer_node_ports, None);
    assert_eq!(spec.load_balancer_class, None);
    assert_eq!(spec.health_check_node_port, None);
    assert_eq!(spec.external_traffic_policy, None);
    assert_eq!(
        serde_json::to_value(&new.status).expect("json"),
        json!({"loadBalancer": {}})
    );

    // Staying a LoadBalancer keeps the stored status whatever the client sent.
    let (new, _) = update(&old, |s| s.status = None, &V4);
    assert_eq!(new.status, old.status);
}

#[test]
fn update_defaults_patch_and_normalize() {
    // Omitted node ports and cluster IPs come back from the stored object.
    let old = stored(
        |s| {
            sp(s).type_ = some("NodePort");
            sp(s).ports = Some(vec![port("a", 80), port("b", 81)]);
        },
        &V4,
    );
    let (new, errs) = update(
        &old,
        |s| {
            let spec = sp(s);
            spec.cluster_ip = None;
            spec.cluster_ips = None;
            for p in spec.ports.iter_mut().flatten() {
                p.node_port = None;
            }
        },
        &V4,
    );
    assert!(errs.is_empty(), "{errs:?}");
    let spec = new.spec.unwrap();
    assert_eq!(spec.cluster_ips, strs(&["10.0.0.10"]));
    let nps: Vec<Option<i32>> = spec.ports.unwrap().iter().map(|p| p.node_port).collect();
    assert_eq!(nps, vec![Some(30000), Some(30001)]);

    // An old client that only knows clusterIP keeps the stored clusterIPs.
    let old = stored(|s| sp(s).ip_family_policy = some("RequireDualStack"), &DUAL);
    let (new, errs) = update(&old, |s| sp(s).cluster_ips = None, &DUAL);
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(new.spec.unwrap().cluster_ips, strs(&["10.0.0.10", "2001:db8::a"]));

    // Downgrading with SingleStack trims the secondary IP and family.
    let (new, errs) = update(&old, |s| sp(s).ip_family_policy = some("SingleStack"), &DUAL);
    assert!(errs.is_empty(), "{errs:?}");
    let spec = new.spec.unwrap();
    assert_eq!(spec.cluster_ips, strs(&["10.0.0.10"]));
    assert_eq!(spec.ip_families, strs(&["IPv4"]));

    // Upgrading to PreferDualStack adds the secondary family (the allocator adds the IP).
    let old = stored(|_| {}, &DUAL);
    let mut new = old.clone();
    sp(&mut new).ip_family_policy = some("PreferDualStack");
    set_defaults_update(&mut new, &old, &DUAL);
    let spec = new.spec.unwrap();
    assert_eq!(spec.ip_families, strs(&["IPv4", "IPv6"]));
    assert_eq!(spec.cluster_ips, strs(&["10.0.0.10"]));

    // Omitting the policy on update keeps the stored one.
    let old = stored(|s| sp(s).ip_family_policy = some("PreferDualStack"), &DUAL);
    let mut new = old.clone();
    sp(&mut new).ip_family_policy = None;
    set_defaults_update(&mut new, &old, &DUAL);
    assert_eq!(
        new.spec.unwrap().ip_family_policy.as_deref(),
        Some("PreferDualStack")
    );
}

#[test]
fn status_update_table() {
    type StatusCase = (&'static str, fn(&mut Service), serde_json::Value, Vec<String>);
    let cases: Vec<StatusCase> = vec![
        (
            "valid ingress",
            |s| sp(s).type_ = some("LoadBalancer"),
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "VIP"}, {"hostname": "lb.example.com"}]}}),
            vec![],
        ),
        (
            "ingress defaults its ipMode",
            |s| sp(s).type_ = some("LoadBalancer"),
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}),
            vec![],
        ),
        (
            "ingress on a ClusterIP",
            |_| {},
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}),
            expect(&[
                "status.loadBalancer.ingress: Forbidden: may only be used when `spec.type` is 'LoadBalancer'",
            ]),
        ),
        (
            "bad ingress IP",
            |s| sp(s).type_ = some("LoadBalancer"),
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3", "ipMode": "VIP"}]}}),
            vec![format!(
                "status.loadBalancer.ingress[0].ip: Invalid value: \"1.2.3\": {IP_MSG}"
            )],
        ),
        (
            "ipMode without ip",
            |s| sp(s).type_ = some("LoadBalancer"),
            json!({"loadBalancer": {"ingress": [{"hostname": "a.com", "ipMode": "VIP"}]}}),
            expect(&[
                "status.loadBalancer.ingress[0].ipMode: Forbidden: may not be specified when `ip` is not set",
            ]),
        ),
        (
            "unknown ipMode",
            |s| sp(s).type_ = some("LoadBalancer"),
            json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4", "ipMode": "Foo"}]}}),
            expect(&[
                "status.loadBalancer.ingress[0].ipMode: Unsupported value: \"Foo\": supported values: \"Proxy\", \"VIP\"",
            ]),
        ),
        (
            "hostname that is an IP",
            |s| sp(s).type_ = some("LoadBalancer"),
            json!({"loadBalancer": {"ingress": [{"hostname": "1.2.3.4"}]}}),
            expect(&[
                "status.loadBalancer.ingress[0].hostname: Invalid value: \"1.2.3.4\": must be a DNS name, not an IP address",
            ]),
        ),
        (
            "hostname not a DNS name",
            |s| sp(s).type_ = some("LoadBalancer"),
            json!({"loadBalancer": {"ingress": [{"hostname": "Foo_bar"}]}}),
            vec![format!(
                "status.loadBalancer.ingress[0].hostname: Invalid value: \"Foo_bar\": {SUBDOMAIN_MSG}"
            )],
        ),
    ];
    for (name, before, status, want) in cases {
        let old = stored(before, &V4);
        let mut new = old.clone();
        new.status = serde_json::from_value(status).expect("status");
        // A status update may not change the spec.
        sp(&mut new).type_ = some("NodePort");
        set_status_update_defaults(&mut new, &old);
        assert_eq!(new.spec, old.spec, "case {name:?}");
        assert_eq!(
            rendered(&validate_status_update(&new, &old)),
            want,
            "case {name:?}"
        );
    }
    // Without defaulting, an ingress IP needs an ipMode.
    let old = stored(|s| sp(s).type_ = some("LoadBalancer"), &V4);
    let mut new = old.clone();
    new.status =
        serde_json::from_value(json!({"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}})).expect("status");
    assert_eq!(
        rendered(&validate_status_update(&new, &old)),
        expect(&[
            "status.loadBalancer.ingress[0].ipMode: Required value: must be specified when `ip` is set"
        ])
    );
}

#[test]
fn config_from_cidrs() {
    let v4: ipnet::IpNet = "10.96.0.0/12".parse().expect("cidr");
    let v6: ipnet::IpNet = "fd00::/108".parse().expect("cidr");
    assert_eq!(ServiceConfig::from_service_cidrs(&[]), None);
    assert_eq!(ServiceConfig::from_service_cidrs(&[v4]), Some(V4));
    assert_eq!(ServiceConfig::from_service_cidrs(&[v4, v6]), Some(DUAL));
    assert_eq!(ServiceConfig::from_service_cidrs(&[v6, v4]), Some(DUAL6));
    assert_eq!(ServiceConfig::default(), V4);
    assert!(DUAL.is_dual_stack() && !V4.is_dual_stack());
    assert_eq!(
        IpFamily::of("::ffff:1.2.3.4".parse().expect("ip")),
        IpFamily::IPv4
    );
}

#[test]
fn no_panics_on_degenerate_input() {
    let mut svc = Service::default();
    set_defaults(&mut svc, &V4);
    let _ = validate_create(&svc, &V4);
    let _ = validate_update(&svc, &Service::default(), &V4);
    let _ = validate_status_update(&Service::default(), &Service::default());
    let mut svc = Service::default();
    set_defaults_update(&mut svc, &Service::default(), &DUAL);
    set_status_update_defaults(&mut svc, &Service::default());
    let errs = rendered(&validate_create(&Service::default(), &V4));
    assert!(
        errs.contains(&"spec.ports: Required value".to_string()),
        "{errs:?}"
    );
}
