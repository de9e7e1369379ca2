//! `svcnet proxy --manifests FILE`: the real binary, real sockets on 127.x addresses (each test its own),
//! small std-thread backends that answer with their identity.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use svcnet_testsupport::net::{self, TIMEOUT, count, free_port, slices, tcp_server, udp_server};

/// A running `svcnet proxy`, stopped (by its PID) when dropped.
struct Proxy {
    child: Child,
    manifests: tempfile::NamedTempFile,
}

impl Proxy {
    fn start(yaml: &str, args: &[&str]) -> Proxy {
        let mut manifests = tempfile::NamedTempFile::new().unwrap();
        manifests.write_all(yaml.as_bytes()).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_svcnet"))
            .arg("proxy")
            .arg("--manifests")
            .arg(manifests.path())
            .args(["--proxy-workers", "1"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start svcnet proxy");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("svcnet proxy says it is serving");
        assert!(line.starts_with("svcnet proxy: serving "), "{line}");
        Proxy { child, manifests }
    }

    /// Rewrites the manifests file and tells the proxy to re-read it.
    fn reload(&mut self, yaml: &str) {
        std::fs::write(self.manifests.path(), yaml).unwrap();
        let st = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Which server answers a fresh connection to `addr`.
fn who(addr: &str) -> String {
    net::who(None, addr.parse().unwrap())
}

/// Whether a fresh connection to `addr` is turned away promptly.
fn refused(addr: &str) -> bool {
    net::refused(None, addr.parse().unwrap())
}

#[test]
fn named_and_numbered_ports_balance_and_empty_services_refuse() {
    let web = [
        tcp_server("127.32.0.2", "web-a"),
        tcp_server("127.32.0.3", "web-b"),
    ];
    let admin = [tcp_server("127.32.0.4", "admin")];
    let yaml =
        "apiVersion: v1\nkind: Service\nmetadata: {name: app}\nspec:\n  clusterIP: 127.32.0.1\n  ports:\n  \
         - {name: http, port: 8000, targetPort: web}\n  - {name: admin, port: 9000, targetPort: 9999}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: empty}\nspec:\n  clusterIP: 127.32.0.10\n  \
         ports: [{port: 8000}]\n---\n"
            .to_string()
            + &slices("app", "http", "TCP", &web)
            + &slices("app", "admin", "TCP", &admin);
    let _p = Proxy::start(&yaml, &["--proxy-balance", "round-robin"]);
    let got = count((0..20).map(|_| who("127.32.0.1:8000")));
    assert_eq!(got, HashMap::from([("web-a".into(), 10), ("web-b".into(), 10)]));
    assert_eq!(who("127.32.0.1:9000"), "admin");
    for _ in 0..3 {
        assert!(refused("127.32.0.10:8000"), "no endpoints: refused at once");
    }
}

#[test]
fn a_listed_endpoint_with_nothing_listening_costs_no_client_failure() {
    let live = tcp_server("127.32.1.2", "live");
    let dead: SocketAddr = format!("127.32.1.3:{}", free_port("127.32.1.3")).parse().unwrap();
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: 127.32.1.1\n  \
                ports: [{name: http, port: 8000}]\n---\n"
        .to_string()
        + &slices("web", "http", "TCP", &[dead, live]);
    let _p = Proxy::start(&yaml, &[]);
    for _ in 0..20 {
        assert_eq!(who("127.32.1.1:8000"), "live");
    }
}

#[test]
fn udp_replies_come_from_the_service_address() {
    let eps = [udp_server("127.32.2.2", "a")];
    let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: dns}\nspec:\n  clusterIP: 127.32.2.1\n  \
                ports: [{name: dns, port: 5300, protocol: UDP}]\n---\n"
        .to_string()
        + &slices("dns", "dns", "UDP", &eps);
    let _p = Proxy::start(&yaml, &[]);
    let s = UdpSocket::bind("127.32.2.9:0").unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let vip: SocketAddr = "127.32.2.1:5300".parse().unwrap();
    for i in 0..3 {
        s.send_to(format!("ping{i}").as_bytes(), vip).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).unwrap();
        assert_eq!(from, vip);
        assert_eq!(&buf[..n], format!("a:ping{i}").as_bytes());
    }
}

#[test]
fn sighup_applies_the_edited_file_and_metrics_are_served() {
    let a = tcp_server("127.32.3.2", "a");
    let b = tcp_server("127.32.3.3", "b");
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  clusterIP: 127.32.3.1\n  \
               ports: [{name: http, port: 8000}]\n---\n";
    let metrics_port = free_port("127.32.3.1");
    let metrics = format!("127.32.3.1:{metrics_port}");
    let mut p = Proxy::start(
        &(svc.to_string() + &slices("web", "http", "TCP", &[a])),
        &["--metrics-listen", &metrics],
    );
    assert_eq!(who("127.32.3.1:8000"), "a");
    // An established connection survives the reload.
    let mut kept = BufReader::new(TcpStream::connect("127.32.3.1:8000").unwrap());
    kept.get_ref().set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut line = String::new();
    kept.read_line(&mut line).unwrap();
    assert_eq!(line, "a\n");

    p.reload(&(svc.to_string() + &slices("web", "http", "TCP", &[b])));
    let deadline = Instant::now() + Duration::from_secs(10);
    while who("127.32.3.1:8000") != "b" {
        assert!(Instant::now() < deadline, "reload applied");
        std::thread::sleep(Duration::from_millis(50));
    }
    kept.get_mut().write_all(b"still here\n").unwrap();
    line.clear();
    kept.read_line(&mut line).unwrap();
    assert_eq!(line, "still here\n");

    let mut m = TcpStream::connect(&metrics).unwrap();
    m.set_read_timeout(Some(TIMEOUT)).unwrap();
    m.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut text = String::new();
    m.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(
        text.contains(
            "svcnet_proxy_connections_total{service=\"default/web\",port=\"http\",protocol=\"TCP\"}"
        ),
        "{text}"
    );
}
