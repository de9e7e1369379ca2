//! The backend through its library API: changes built by the real service model from manifests text,
//! applied to a `UserspaceBackend`, traffic from real sockets on 127.x addresses.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::time::Duration;

use prometheus_client::registry::Registry;
use svcnet_dataplane::manifests::Manifests;
use svcnet_dataplane::{Backend, Balance, Model, ModelConfig};
use svcnet_proxy::{ProxyConfig, UserspaceBackend};
use svcnet_testsupport::net::*;

/// A backend plus the model feeding it.
struct Proxy {
    backend: UserspaceBackend,
    model: Model,
    registry: Registry,
}

impl Proxy {
    fn new(node: &str, balance: Balance) -> Proxy {
        let mut registry = Registry::default();
        let backend = UserspaceBackend::new(
            ProxyConfig {
                workers: 1,
                balance,
                node_addresses: vec![ip(node)],
                udp_idle_timeout: Duration::from_secs(5),
                ..Default::default()
            },
            &mut registry,
        )
        .expect("backend");
        Proxy {
            backend,
            model: Model::new(ModelConfig {
                node_name: "node-a".into(),
                ..Default::default()
            }),
            registry,
        }
    }

    /// Replaces every object with those of `yaml` and applies the resulting changes.
    fn load(&mut self, yaml: &str) {
        self.model.clear_inputs();
        Manifests::parse(yaml)
            .expect("manifests")
            .load_into(&mut self.model);
        let changes = self.model.take_changes();
        self.backend.apply(&changes.changes).expect("apply");
    }

    fn metrics(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry).unwrap();
        s
    }

    fn metric(&self, line_start: &str) -> f64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }
}

#[test]
fn round_robin_spreads_evenly_and_least_conn_uses_everything() {
    let eps = [
        tcp_server("127.31.0.2", "a"),
        tcp_server("127.31.0.3", "b"),
        tcp_server("127.31.0.4", "c"),
    ];
    let mut p = Proxy::new("127.31.0.250", Balance::RoundRobin);
    let yaml = service("web", "127.31.0.1", 8000, "8080", "TCP", "") + &slices("web", "p", "TCP", &eps);
    p.load(&yaml);
    let vip: SocketAddr = "127.31.0.1:8000".parse().unwrap();
    let got = count((0..30).map(|_| who(ip("127.31.0.9"), vip)));
    assert_eq!(
        got,
        HashMap::from([("a".into(), 10), ("b".into(), 10), ("c".into(), 10)])
    );
    assert_eq!(
        p.metric("svcnet_proxy_connections_total{service=\"default/web\""),
        30.0
    );
    assert!(
        p.metrics().contains(
            "svcnet_proxy_endpoint_selections_total{service=\"default/web:p\",endpoint=\"127.31.0.2:"
        )
    );

    // Least connections (the annotation overrides the default): with two endpoints both choices see
    // both, so connections held open alternate strictly.
    let svc = service("web", "127.31.0.1", 8000, "8080", "TCP", "");
    let annotated = svc.replacen(
        "metadata: {name: web,",
        "metadata: {annotations: {svcnet.io/balance: least-conn}, name: web,",
        1,
    ) + &slices("web", "p", "TCP", &eps[..2]);
    p.load(&annotated);
    // Let the proxy finish closing the connections above, which still count as active until then.
    std::thread::sleep(Duration::from_millis(300));
    let held: Vec<_> = (0..6).map(|_| hello(ip("127.31.0.9"), vip).unwrap()).collect();
    let got = count(held.iter().map(|(_, n)| n.clone()));
    assert_eq!(
        got,
        HashMap::from([("a".into(), 3), ("b".into(), 3)]),
        "held connections alternate"
    );
}

/// `connect()` to a frontend without endpoints fails with ECONNREFUSED (kube-proxy's reject), for the
/// ClusterIP and the NodePort alike, and succeeds as soon as an endpoint is applied; removing the
/// endpoint refuses again, without touching the connection already established.
#[test]
fn no_endpoints_refuses_the_connect_until_an_endpoint_appears() {
    let mut p = Proxy::new("127.31.1.250", Balance::LeastConn);
    let node_port = free_port("127.31.1.250");
    let svc = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: empty, namespace: default}}\nspec:\n  type: NodePort\n  \
         clusterIP: 127.31.1.1\n  ports: [{{name: p, port: 8000, targetPort: 8080, nodePort: {node_port}}}]\n---\n"
    );
    p.load(&svc);
    let vip: SocketAddr = "127.31.1.1:8000".parse().unwrap();
    let np = SocketAddr::new(ip("127.31.1.250"), node_port);
    for addr in [vip, np] {
        for _ in 0..3 {
            let e = connect_from(ip("127.31.1.9"), addr).expect_err("refused");
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{addr}");
        }
    }
    assert_eq!(p.backend.port_count(), 1);
    assert_eq!(p.backend.listener_count(), 0, "nothing listens without endpoints");

    let eps = [tcp_server("127.31.1.2", "a")];
    p.load(&(svc.clone() + &slices("empty", "p", "TCP", &eps)));
    assert_eq!(who(ip("127.31.1.9"), vip), "a");
    assert_eq!(who(ip("127.31.1.9"), np), "a");
    let (mut kept, _) = hello(ip("127.31.1.9"), vip).unwrap();

    p.load(&svc);
    let e = connect_from(ip("127.31.1.9"), vip).expect_err("refused again");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
    assert_eq!(echo(&mut kept, "still there"), "still there");

    p.load("");
    assert_eq!(p.backend.port_count(), 0);
    let e = connect_from(ip("127.31.1.9"), vip).expect_err("listener closed");
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
fn a_dead_endpoint_is_retried_elsewhere_without_client_failures() {
    let live = [tcp_server("127.31.2.2", "a"), tcp_server("127.31.2.3", "b")];
    let dead: SocketAddr = format!("127.31.2.4:{}", free_port("127.31.2.4")).parse().unwrap();
    let mut p = Proxy::new("127.31.2.250", Balance::RoundRobin);
    p.load(
        &(service("web", "127.31.2.1", 8000, "8080", "TCP", "")
            + &slices("web", "p", "TCP", &[live[0], live[1], dead])),
    );
    let vip: SocketAddr = "127.31.2.1:8000".parse().unwrap();
    let got = count((0..30).map(|_| who(ip("127.31.2.9"), vip)));
    assert_eq!(
        got.values().sum::<usize>(),
        30,
        "every connection served: {got:?}"
    );
    assert!(got.contains_key("a") && got.contains_key("b"), "{got:?}");
    // The dead endpoint was tried once, then backed off (not once per round).
    let retries = p.metric("svcnet_proxy_retries_total{service=\"default/web\"");
    assert!((1.0..=2.0).contains(&retries), "retries {retries}");
}

#[test]
fn client_ip_affinity_pins_each_client() {
    let eps = [
        tcp_server("127.31.3.2", "a"),
        tcp_server("127.31.3.3", "b"),
        tcp_server("127.31.3.4", "c"),
    ];
    let mut p = Proxy::new("127.31.3.250", Balance::RoundRobin);
    let extra = "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n";
    p.load(
        &(service("sticky", "127.31.3.1", 8000, "8080", "TCP", extra) + &slices("sticky", "p", "TCP", &eps)),
    );
    let vip: SocketAddr = "127.31.3.1:8000".parse().unwrap();
    let mut firsts = vec![];
    for c in 10..16 {
        let client = ip(&format!("127.31.3.{c}"));
        let first = who(client, vip);
        for _ in 0..5 {
            assert_eq!(who(client, vip), first, "client {client} pinned");
        }
        firsts.push(first);
    }
    assert!(count(firsts).len() > 1, "different clients still spread");
}

#[test]
fn maglev_maps_a_client_to_the_same_endpoint() {
    let eps = [
        tcp_server("127.31.4.2", "a"),
        tcp_server("127.31.4.3", "b"),
        tcp_server("127.31.4.4", "c"),
    ];
    let mut p = Proxy::new("127.31.4.250", Balance::Maglev);
    p.load(&(service("hash", "127.31.4.1", 8000, "8080", "TCP", "") + &slices("hash", "p", "TCP", &eps)));
    let vip: SocketAddr = "127.31.4.1:8000".parse().unwrap();
    let mut seen = vec![];
    for c in 10..40 {
        let client = ip(&format!("127.31.4.{c}"));
        let first = who(client, vip);
        assert_eq!(who(client, vip), first);
        seen.push(first);
    }
    assert_eq!(count(seen).len(), 3, "30 clients reach all three endpoints");
}

#[test]
fn endpoint_changes_keep_established_connections() {
    let a = tcp_server("127.31.5.2", "a");
    let b = tcp_server("127.31.5.3", "b");
    let mut p = Proxy::new("127.31.5.250", Balance::RoundRobin);
    let svc = service("web", "127.31.5.1", 8000, "8080", "TCP", "");
    p.load(&(svc.clone() + &slices("web", "p", "TCP", &[a])));
    let vip: SocketAddr = "127.31.5.1:8000".parse().unwrap();
    let (mut conn, name) = hello(ip("127.31.5.9"), vip).unwrap();
    assert_eq!(name, "a");
    assert_eq!(echo(&mut conn, "one"), "one");
    // a leaves, b arrives: the open connection to a goes on; new ones go to b.
    p.load(&(svc + &slices("web", "p", "TCP", &[b])));
    assert_eq!(echo(&mut conn, "two"), "two");
    for _ in 0..5 {
        assert_eq!(who(ip("127.31.5.9"), vip), "b");
    }
    assert_eq!(echo(&mut conn, "three"), "three");
    assert!(
        !p.metrics().contains("endpoint=\"127.31.5.2:"),
        "a's selection counter went with it"
    );
}

#[test]
fn load_balancer_source_ranges_admit_only_their_clients() {
    let eps = [tcp_server("127.31.6.2", "a")];
    let mut p = Proxy::new("127.31.6.250", Balance::RoundRobin);
    let extra = "  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  \
                 loadBalancerSourceRanges: [127.31.6.64/26]\nstatus: {loadBalancer: {ingress: [{ip: 127.31.6.100}]}}\n";
    p.load(&(service("lb", "127.31.6.1", 8000, "8080", "TCP", extra) + &slices("lb", "p", "TCP", &eps)));
    let lb: SocketAddr = "127.31.6.100:8000".parse().unwrap();
    assert_eq!(who(ip("127.31.6.70"), lb), "a");
    assert!(refused(ip("127.31.6.10"), lb), "outside the ranges");
    // The ClusterIP is not subject to the ranges.
    assert_eq!(who(ip("127.31.6.10"), "127.31.6.1:8000".parse().unwrap()), "a");
    assert_eq!(p.metric("svcnet_proxy_rejects_total{service=\"default/lb\",port=\"p\",protocol=\"TCP\",reason=\"source_range\"}"), 1.0);
}

#[test]
fn node_ports_listen_on_the_node_addresses() {
    let eps = [tcp_server("127.31.7.2", "a")];
    let mut p = Proxy::new("127.31.7.250", Balance::RoundRobin);
    let node_port = free_port("127.31.7.250");
    let yaml = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: np, namespace: default}}\nspec:\n  type: NodePort\n  \
         clusterIP: 127.31.7.1\n  ports: [{{name: p, port: 8000, targetPort: 8080, nodePort: {node_port}}}]\n---\n"
    ) + &slices("np", "p", "TCP", &eps);
    p.load(&yaml);
    assert_eq!(
        who(ip("127.31.7.9"), SocketAddr::new(ip("127.31.7.250"), node_port)),
        "a"
    );
    assert_eq!(p.backend.listener_count(), 2, "ClusterIP + one node address");
}

#[test]
fn large_transfers_arrive_intact_and_half_close_is_passed_on() {
    let eps = [tcp_server("127.31.8.2", "a")];
    let mut p = Proxy::new("127.31.8.250", Balance::RoundRobin);
    p.load(&(service("bulk", "127.31.8.1", 8000, "8080", "TCP", "") + &slices("bulk", "p", "TCP", &eps)));
    let (conn, name) = hello(ip("127.31.8.9"), "127.31.8.1:8000".parse().unwrap()).unwrap();
    assert_eq!(name, "a");
    let mut s = conn.into_inner();
    let mut r = s.try_clone().unwrap();
    const LEN: usize = 10 << 20;
    let data: Vec<u8> = (0..LEN)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let sum = fnv(&data);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::with_capacity(LEN);
        r.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        r.read_to_end(&mut got).map(|_| got)
    });
    s.write_all(&data).unwrap();
    // Half-close: the echo server sees EOF only through the proxy's shutdown, and then closes its side,
    // which ends our read_to_end.
    s.shutdown(Shutdown::Write).unwrap();
    let got = reader.join().unwrap().expect("read everything back");
    assert_eq!(got.len(), LEN);
    assert_eq!(fnv(&got), sum);
    let bytes_in = p.metric(
        "svcnet_proxy_bytes_total{service=\"default/bulk\",port=\"p\",protocol=\"TCP\",direction=\"in\"}",
    );
    assert_eq!(bytes_in, LEN as f64);
}

fn fnv(d: &[u8]) -> u64 {
    d.iter().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x100000001b3)
    })
}

#[test]
fn udp_flows_answer_from_the_service_address() {
    let eps = [udp_server("127.31.9.2", "a"), udp_server("127.31.9.3", "b")];
    let mut p = Proxy::new("127.31.9.250", Balance::RoundRobin);
    p.load(&(service("dns", "127.31.9.1", 5300, "5353", "UDP", "") + &slices("dns", "p", "UDP", &eps)));
    let vip: SocketAddr = "127.31.9.1:5300".parse().unwrap();
    let mut names = vec![];
    for c in 10..14 {
        let s = UdpSocket::bind((format!("127.31.9.{c}"), 0)).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut first = None;
        for i in 0..3 {
            s.send_to(format!("q{i}").as_bytes(), vip).unwrap();
            let mut buf = [0u8; 100];
            let (n, from) = s.recv_from(&mut buf).unwrap();
            assert_eq!(from, vip, "reply from the service address");
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            let (name, q) = text.split_once(':').unwrap();
            assert_eq!(q, format!("q{i}"));
            // One flow per client: every datagram of a client goes to the same endpoint.
            assert_eq!(*first.get_or_insert(name.to_string()), name);
        }
        names.extend(first);
    }
    assert_eq!(count(names).len(), 2, "clients spread over both endpoints");
    assert_eq!(
        p.metric("svcnet_proxy_active_connections{service=\"default/dns\""),
        4.0
    );
}

#[test]
fn a_failed_bind_is_reported_and_the_rest_applied() {
    // Something else holds the second Service's address.
    let _squatter = std::net::TcpListener::bind("127.31.10.2:8000").unwrap();
    let eps = [tcp_server("127.31.10.5", "a")];
    let mut p = Proxy::new("127.31.10.250", Balance::RoundRobin);
    let unbound = p.backend.unbound();
    let yaml = service("ok", "127.31.10.1", 8000, "8080", "TCP", "")
        + &slices("ok", "p", "TCP", &eps)
        + &service("clash", "127.31.10.2", 8000, "8080", "TCP", "")
        + &slices("clash", "p", "TCP", &eps);
    Manifests::parse(&yaml).unwrap().load_into(&mut p.model);
    let changes = p.model.take_changes();
    let err = p
        .backend
        .apply(&changes.changes)
        .expect_err("the clash is reported");
    assert!(err.to_string().contains("default/clash"), "{err}");
    assert_eq!(who(ip("127.31.10.9"), "127.31.10.1:8000".parse().unwrap()), "a");
    assert_eq!(
        p.metric("svcnet_proxy_bind_errors_total{service=\"default/clash\""),
        1.0
    );
    // The port without a listener is published (for a Warning Event on its Service) and counted.
    let now = unbound.borrow().clone();
    let names: Vec<String> = now.keys().map(ToString::to_string).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("default/clash"), "{names:?}");
    let error = now.values().next().unwrap();
    assert!(
        error.starts_with("cannot listen on 127.31.10.2:8000/tcp: ") && error.contains("in use"),
        "{error}"
    );
    assert_eq!(p.metric("svcnet_proxy_unbound_listeners "), 1.0);
    // Once the address is free, the next full sync binds it.
    drop(_squatter);
    let ports: Vec<_> = p.model.ports().cloned().collect();
    p.backend.sync_all(&ports).expect("sync binds it now");
    assert_eq!(p.backend.listener_count(), 2);
    assert!(unbound.borrow().is_empty());
    assert_eq!(p.metric("svcnet_proxy_unbound_listeners "), 0.0);
}

#[test]
fn listeners_stay_within_their_descriptor_budget_and_bind_once_it_frees() {
    let mut registry = Registry::default();
    // Room for two TCP listeners (two descriptors each).
    let config = ProxyConfig {
        workers: 1,
        listener_fds: Some(4),
        ..ProxyConfig::for_node(ip("127.31.12.250"))
    };
    let mut backend = UserspaceBackend::new(config, &mut registry).unwrap();
    let unbound = backend.unbound();
    let mut model = Model::new(ModelConfig::default());
    // Each Service has an endpoint: a frontend without one has no listener anyway.
    let eps = [tcp_server("127.31.12.5", "a")];
    let one = |name: &str, last: u8| {
        service(name, &format!("127.31.12.{last}"), 8000, "8080", "TCP", "") + &slices(name, "p", "TCP", &eps)
    };
    let yaml = |names: &[&str]| -> String { names.iter().zip(1..).map(|(n, last)| one(n, last)).collect() };
    Manifests::parse(&yaml(&["a", "b", "c"]))
        .unwrap()
        .load_into(&mut model);
    let err = backend
        .apply(&model.take_changes().changes)
        .expect_err("the third is over budget");
    assert!(err.to_string().contains("out of file descriptors"), "{err}");
    assert_eq!(backend.listener_count(), 2);
    let names: Vec<String> = unbound.borrow().keys().map(ToString::to_string).collect();
    assert_eq!(names, ["default/c:p"]);
    let refused =
        |i: u8| connect_from(ip("127.31.12.9"), format!("127.31.12.{i}:8000").parse().unwrap()).is_err();
    assert!(refused(3), "no listener for the Service over budget");
    assert!(!refused(1) && !refused(2));

    // Deleting a Service frees its descriptors; the next full sync binds the one left out.
    model.clear_inputs();
    Manifests::parse(&(one("b", 2) + &one("c", 3)))
        .unwrap()
        .load_into(&mut model);
    model.take_changes();
    let ports: Vec<_> = model.ports().cloned().collect();
    backend.sync_all(&ports).expect("everything fits now");
    assert_eq!(backend.listener_count(), 2);
    assert!(unbound.borrow().is_empty());
    assert!(!refused(3) && refused(1));
}

/// The node agent drives the backend from async code: creating, applying and dropping it there must work
/// with either runtime flavour (one worker: current-thread on its own thread; more: multi-thread).
#[tokio::test]
async fn lives_inside_another_runtime() {
    let eps = [tcp_server("127.31.11.2", "a")];
    for (i, workers) in [1, 2].into_iter().enumerate() {
        let mut registry = Registry::default();
        let config = ProxyConfig {
            workers,
            ..ProxyConfig::for_node(ip("127.31.11.250"))
        };
        let mut backend = UserspaceBackend::new(config, &mut registry).unwrap();
        let mut model = Model::new(ModelConfig::default());
        let vip = format!("127.31.11.{}", 10 + i);
        Manifests::parse(&(service("web", &vip, 8000, "8080", "TCP", "") + &slices("web", "p", "TCP", &eps)))
            .unwrap()
            .load_into(&mut model);
        backend.apply(&model.take_changes().changes).unwrap();
        let addr: SocketAddr = format!("{vip}:8000").parse().unwrap();
        let name = tokio::task::spawn_blocking(move || who(ip("127.31.11.9"), addr))
            .await
            .unwrap();
        assert_eq!(name, "a");
        drop(backend);
        assert!(
            connect_from(ip("127.31.11.9"), addr).is_err(),
            "dropping the backend closes its listeners"
        );
    }
}

/// A TCP server on `ip` that answers each connection with the address of its peer, and a UDP server on
/// the same port that answers each datagram so; returns the address.
fn peer_servers(ip: &str) -> SocketAddr {
    let l = std::net::TcpListener::bind((ip, 0)).unwrap();
    let tcp = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let peer = s.peer_addr().unwrap().ip();
            let _ = s.write_all(format!("{peer}\n").as_bytes());
        }
    });
    let u = UdpSocket::bind((ip, tcp.port())).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((_, from)) = u.recv_from(&mut buf) {
            let _ = u.send_to(format!("{}\n", from.ip()).as_bytes(), from);
        }
    });
    tcp
}

/// What the endpoint sees as the client of a UDP datagram sent from `src` to `dst`.
fn udp_peer(src: &str, dst: SocketAddr) -> String {
    let s = UdpSocket::bind((src, 0)).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.send_to(b"x", dst).unwrap();
    let mut buf = [0u8; 64];
    let n = s.recv(&mut buf).unwrap();
    String::from_utf8_lossy(&buf[..n]).trim().to_string()
}

/// Clients in `client_ip_ranges` (pods) reach a ClusterIP's endpoint from their own address, TCP and UDP;
/// everyone else, the NodePort, and a pod reaching itself come from the proxy's.
#[test]
fn pods_keep_their_address_through_cluster_ips() {
    let tcp_ep = peer_servers("127.31.12.2");
    let mut p = {
        let mut registry = Registry::default();
        let backend = UserspaceBackend::new(
            ProxyConfig {
                workers: 1,
                node_addresses: vec![ip("127.31.12.250")],
                client_ip_ranges: vec!["127.31.12.0/25".parse().unwrap()],
                ..Default::default()
            },
            &mut registry,
        )
        .unwrap();
        Proxy {
            backend,
            model: Model::new(ModelConfig::default()),
            registry,
        }
    };
    let node_port = free_port("127.31.12.250");
    let svc = |name: &str, proto: &str, cluster_ip: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  type: NodePort\n  \
             clusterIP: {cluster_ip}\n  ports: [{{name: p, port: 8000, protocol: {proto}, targetPort: {}, nodePort: {node_port}}}]\n---\n",
            tcp_ep.port()
        ) + &slices(name, "p", proto, &[tcp_ep])
    };
    p.load(&(svc("web", "TCP", "127.31.12.1") + &svc("dns", "UDP", "127.31.12.3")));
    let vip: SocketAddr = "127.31.12.1:8000".parse().unwrap();
    let np = SocketAddr::new(ip("127.31.12.250"), node_port);
    for _ in 0..3 {
        assert_eq!(
            who(ip("127.31.12.9"), vip),
            "127.31.12.9",
            "a pod keeps its address"
        );
        assert_eq!(who(ip("127.31.12.10"), vip), "127.31.12.10");
    }
    let proxy_side = who(ip("127.31.12.200"), vip);
    assert_ne!(proxy_side, "127.31.12.200", "not a pod: the proxy's address");
    assert_ne!(
        who(ip("127.31.12.9"), np),
        "127.31.12.9",
        "NodePorts are not kept"
    );
    assert_ne!(
        who(ip("127.31.12.2"), vip),
        "127.31.12.2",
        "hairpin: the proxy's address"
    );
    let udp_vip: SocketAddr = "127.31.12.3:8000".parse().unwrap();
    assert_eq!(udp_peer("127.31.12.9", udp_vip), "127.31.12.9", "UDP too");
    assert_ne!(udp_peer("127.31.12.200", udp_vip), "127.31.12.200");
}

/// The proxy-process upgrade at the library level: a second backend takes the first one's listening
/// sockets (TCP and UDP) and serves them; the first retires without stopping them listening, and its
/// established connection goes on; no connect is refused at any moment.
#[test]
fn listening_sockets_pass_to_another_backend_and_the_old_one_retires() {
    let a = tcp_server("127.31.20.2", "a");
    let u = udp_server("127.31.20.3", "u");
    let yaml = service("web", "127.31.20.1", 8000, "8080", "TCP", "")
        + &slices("web", "p", "TCP", &[a])
        + &service("dns", "127.31.20.1", 5300, "5353", "UDP", "")
        + &slices("dns", "p", "UDP", &[u]);
    let mut old = Proxy::new("127.31.20.250", Balance::RoundRobin);
    old.load(&yaml);
    let vip: SocketAddr = "127.31.20.1:8000".parse().unwrap();
    let (mut conn, name) = hello(ip("127.31.20.9"), vip).unwrap();
    assert_eq!(name, "a");

    let sockets = old.backend.listening_sockets().unwrap();
    assert_eq!(sockets.len(), 2, "{sockets:?}");
    let mut new = Proxy::new("127.31.20.250", Balance::RoundRobin);
    new.backend.inherit(sockets);
    new.load(&yaml);
    assert_eq!(new.backend.drop_unused_inherited(), 0, "every socket served");
    assert_eq!(new.backend.listener_count(), 2);
    old.backend.retire();
    assert_eq!(old.backend.listener_count(), 0);
    // Changes after retiring are ignored: the old backend never binds again.
    old.load(&yaml);
    assert_eq!(old.backend.listener_count(), 0);
    for _ in 0..20 {
        assert!(
            !refused(ip("127.31.20.9"), vip),
            "a connect was refused after the handover"
        );
        assert_eq!(who(ip("127.31.20.9"), vip), "a");
    }
    assert_eq!(
        old.backend.active_connections(),
        1,
        "the old connection is still open"
    );
    assert_eq!(echo(&mut conn, "still here"), "still here");
    drop(conn);
    let s = UdpSocket::bind("127.31.20.10:0").unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s.send_to(b"q", "127.31.20.1:5300").unwrap();
    let mut buf = [0u8; 100];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"u:q", "UDP served by the new backend");
}
