//! Helpers shared by the nftables integration tests: service ports from YAML manifests through the real
//! model, the configuration the golden files are rendered with, golden-file comparison, and (`netns`)
//! what these tests add to the shared namespace harness of `svcnet_testsupport`.

#![allow(dead_code)]

pub mod netns;
pub mod scenarios;

use std::path::PathBuf;
use std::sync::Arc;

use svcnet_dataplane::manifests::Manifests;
use svcnet_dataplane::{Model, ModelConfig, ServicePort};
use svcnet_nft::NftConfig;

/// The node the manifests' `nodeName: node-a` endpoints are local to.
pub const NODE: &str = "node-a";

/// Ports of the Services and EndpointSlices in `yaml`, as the model computes them for [`NODE`].
pub fn ports_from_yaml(yaml: &str) -> Vec<Arc<ServicePort>> {
    let m = Manifests::parse(yaml).expect("manifests parse");
    let mut model = Model::new(ModelConfig {
        node_name: NODE.into(),
        ..Default::default()
    });
    m.load_into(&mut model);
    model.take_changes();
    model.ports().cloned().collect()
}

/// The configuration of the golden files.
pub fn golden_config() -> NftConfig {
    NftConfig {
        pod_cidrs: vec![
            "10.244.0.0/16".parse().unwrap(),
            "fd00:10:244::/56".parse().unwrap(),
        ],
        service_cidrs: vec![
            "10.96.0.0/16".parse().unwrap(),
            "fd00:10:96::/112".parse().unwrap(),
        ],
        node_ips: vec!["192.168.50.1".parse().unwrap()],
        ..Default::default()
    }
}

/// The path of a file under `tests/golden`.
pub fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Compares `actual` with the golden file `name`; `UPDATE_GOLDEN=1` rewrites the file instead.
pub fn check_golden(name: &str, actual: &str) {
    let path = golden_path(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1 to create it)", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the rendered ruleset at line {} (UPDATE_GOLDEN=1 rewrites it):\n--- expected\n{}\n--- actual\n{}",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("<end>"),
            actual.lines().nth(first).unwrap_or("<end>")
        );
    }
}

use std::net::IpAddr;

use svcnet_dataplane::{Endpoint, Protocol, ServicePortName};

/// A ready endpoint.
pub fn ep(ip: &str, port: u16, local: bool) -> Endpoint {
    Endpoint {
        ip: ip.parse().unwrap(),
        port,
        ready: true,
        serving: true,
        terminating: false,
        node: Some(if local { NODE } else { "node-b" }.into()),
        zone: None,
        is_local: local,
        zone_hints: None,
    }
}

/// A ClusterIP service port whose internal and external endpoints are both `eps`.
pub fn svc_port(name: &str, proto: Protocol, cluster_ip: &str, port: u16, eps: Vec<Endpoint>) -> ServicePort {
    ServicePort {
        name: ServicePortName {
            namespace: "default".into(),
            name: name.into(),
            port: "".into(),
            protocol: proto,
        },
        cluster_ips: vec![cluster_ip.parse::<IpAddr>().unwrap()],
        port,
        node_port: None,
        external_ips: Vec::new(),
        load_balancer_ips: Vec::new(),
        load_balancer_source_ranges: Vec::new(),
        affinity_timeout: None,
        internal_policy_local: false,
        external_policy_local: false,
        health_check_node_port: None,
        balance: None,
        has_endpoints: !eps.is_empty(),
        internal_endpoints: eps.clone(),
        external_endpoints: eps.clone(),
        all_endpoints: eps,
    }
}
