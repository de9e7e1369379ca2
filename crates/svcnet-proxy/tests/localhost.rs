//! `LocalhostNodePorts` beside another backend (here a second userspace proxy standing in for the kernel
//! rules, which need a namespace of their own; `svcnet`'s netns tests run it with nftables): NodePorts
//! answer on 127.0.0.1, ClusterIPs are left to the inner backend, and a NodePort that goes away stops
//! answering on loopback.

use std::net::SocketAddr;

use prometheus_client::registry::Registry;
use svcnet_dataplane::manifests::Manifests;
use svcnet_dataplane::{Backend, Model, ModelConfig};
use svcnet_proxy::{LocalhostNodePorts, ProxyConfig, UserspaceBackend};
use svcnet_testsupport::net::*;

fn changes(model: &mut Model, yaml: &str) -> Vec<svcnet_dataplane::Change> {
    model.clear_inputs();
    Manifests::parse(yaml).expect("manifests").load_into(model);
    model.take_changes().changes
}

fn metrics(registry: &Registry) -> String {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text
}

#[test]
fn node_ports_answer_on_loopback_and_stop_when_they_go() {
    let eps = [tcp_server("127.31.9.2", "a")];
    let inner = UserspaceBackend::new(
        ProxyConfig {
            workers: 1,
            node_addresses: vec![ip("127.31.9.250")],
            ..Default::default()
        },
        &mut Registry::default(),
    )
    .expect("inner backend");
    let mut registry = Registry::default();
    let mut b = LocalhostNodePorts::new(inner, &mut registry).expect("localhost proxy");
    let mut model = Model::new(ModelConfig {
        node_name: "node-a".into(),
        ..Default::default()
    });
    let np = free_port("127.0.0.1");
    let plain_port = free_port("127.0.0.1");
    let node_port_svc = |kind: &str, node_port: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: np, namespace: default}}\nspec:\n  type: {kind}\n  \
             clusterIP: 127.31.9.1\n  ports: [{{name: p, port: 8000, targetPort: 8080{node_port}}}]\n---\n"
        ) + &slices("np", "p", "TCP", &eps)
    };
    // A ClusterIP Service on a port number that is free on loopback: it must not appear there.
    let plain =
        service("plain", "127.31.9.3", plain_port, "8080", "TCP", "") + &slices("plain", "p", "TCP", &eps);
    let with_np = node_port_svc("NodePort", &format!(", nodePort: {np}")) + &plain;
    b.apply(&changes(&mut model, &with_np)).expect("apply");

    let lo = ip("127.0.0.1");
    let client = ip("127.31.9.9");
    let cluster_ip: SocketAddr = "127.31.9.1:8000".parse().unwrap();
    assert_eq!(who(lo, SocketAddr::new(lo, np)), "a", "NodePort on loopback");
    assert_eq!(who(client, SocketAddr::new(ip("127.31.9.250"), np)), "a");
    assert_eq!(who(client, cluster_ip), "a");
    // The inner backend keeps its frontends: two ClusterIPs and the NodePort on the node address.
    assert_eq!(b.inner().listener_count(), 3);
    let lo_plain = SocketAddr::new(lo, plain_port);
    assert!(
        refused(lo, lo_plain),
        "a ClusterIP port is not opened on loopback"
    );
    let text = metrics(&registry);
    let counted = "svcnet_proxy_connections_total{frontends=\"localhost_nodeport\",service=\"default/np\"";
    assert!(text.lines().any(|l| l.starts_with(counted)), "{text}");
    assert!(!text.contains("default/plain"), "{text}");

    // The Service becomes ClusterIP: its NodePort goes from loopback too.
    let without = node_port_svc("ClusterIP", "") + &plain;
    b.apply(&changes(&mut model, &without)).expect("apply");
    assert!(
        refused(lo, SocketAddr::new(lo, np)),
        "NodePort closed on loopback"
    );
    assert_eq!(who(client, cluster_ip), "a");

    // A full sync brings it back, and removing the Service closes it again.
    let _ = changes(&mut model, &with_np);
    let all: Vec<_> = model.ports().cloned().collect();
    b.sync_all(&all).expect("sync");
    assert_eq!(
        who(lo, SocketAddr::new(lo, np)),
        "a",
        "NodePort back after a full sync"
    );
    b.apply(&changes(&mut model, &plain)).expect("apply");
    assert!(
        refused(lo, SocketAddr::new(lo, np)),
        "NodePort closed after its Service went"
    );
}
