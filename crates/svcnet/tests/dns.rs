//! The cluster DNS server inside `svcnet up`, queried with `dig` (UDP and TCP) and with a small
//! hickory-proto client: the specification's example records built from real Services and pods, the
//! NXDOMAIN/NODATA cases, case-insensitivity, forwarding through a local stub upstream (with TCP
//! fallback when it truncates), truncation for large answers, and answers following API changes. The
//! specification suite also runs through `svcnet dns`, CoreDNS's drop-in, as a process of its own.
//! Everything listens on 127.0.0.1 with ephemeral ports.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use svcnet_testsupport::net::{free_port, http_get};
use svcnet_testsupport::process::Process;
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(40);

/// A stub upstream resolver on 127.0.0.1 (UDP and TCP on one port). Every A question gets 192.0.2.53,
/// except `tc.example.` whose UDP answer is truncated (30 addresses over TCP) and `nx.example.` which
/// does not exist. Counts the queries it gets.
struct Stub {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
}

fn stub_answer(req: &Message, tcp: bool) -> Message {
    let mut m = Message::response(req.metadata.id, OpCode::Query);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.recursion_available = true;
    m.add_queries(req.queries.iter().cloned());
    let Some(q) = req.queries.first() else {
        return m;
    };
    let name = q.name().to_ascii().to_ascii_lowercase();
    if name == "nx.example." {
        m.metadata.response_code = ResponseCode::NXDomain;
        let soa = SOA::new(
            Name::from_str("ns.example.").unwrap(),
            Name::from_str("h.example.").unwrap(),
            1,
            1,
            1,
            1,
            30,
        );
        m.add_authority(Record::from_rdata(
            Name::from_str("example.").unwrap(),
            30,
            RData::SOA(soa),
        ));
        return m;
    }
    if q.query_type() != RecordType::A {
        return m;
    }
    if name == "tc.example." {
        if !tcp {
            m.metadata.truncation = true;
            return m;
        }
        for i in 1..=30u8 {
            m.add_answer(Record::from_rdata(
                q.name().clone(),
                60,
                RData::A(A::new(192, 0, 2, i)),
            ));
        }
        return m;
    }
    m.add_answer(Record::from_rdata(
        q.name().clone(),
        60,
        RData::A(A::new(192, 0, 2, 53)),
    ));
    m
}

impl Stub {
    fn start() -> Stub {
        // The UDP socket picks a port and TCP must get the same one; it may be taken for TCP (another
        // test's connection, say), so try again with another port, as the DNS server itself does.
        let (udp, addr, tcp) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
                let addr = udp.local_addr().unwrap();
                let tcp = std::net::TcpListener::bind(addr).ok()?;
                Some((udp, addr, tcp))
            })
            .expect("a port free for both UDP and TCP");
        let queries = Arc::new(AtomicUsize::new(0));
        let n = queries.clone();
        // Detached threads: they end with the test process.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok((len, peer)) = udp.recv_from(&mut buf) {
                n.fetch_add(1, Ordering::SeqCst);
                if let Ok(req) = Message::from_vec(&buf[..len]) {
                    let _ = udp.send_to(&stub_answer(&req, false).to_vec().unwrap(), peer);
                }
            }
        });
        let n = queries.clone();
        std::thread::spawn(move || {
            for mut s in tcp.incoming().flatten() {
                n.fetch_add(1, Ordering::SeqCst);
                let mut len = [0u8; 2];
                if s.read_exact(&mut len).is_err() {
                    continue;
                }
                let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
                if s.read_exact(&mut body).is_err() {
                    continue;
                }
                if let Ok(req) = Message::from_vec(&body) {
                    let out = stub_answer(&req, true).to_vec().unwrap();
                    let _ = s.write_all(&(out.len() as u16).to_be_bytes());
                    let _ = s.write_all(&out);
                }
            }
        });
        Stub { addr, queries }
    }

    fn count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

/// The DNS server's address, from `<data-dir>/dns-address`.
fn dns_addr(c: &Cluster) -> SocketAddr {
    let path = c.dir.join("dns-address");
    let mut text = String::new();
    assert!(
        eventually(WAIT, || {
            text = std::fs::read_to_string(&path).unwrap_or_default();
            !text.trim().is_empty()
        }),
        "no dns-address\n{}",
        c.log()
    );
    text.lines().next().unwrap().trim().parse().unwrap()
}

fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", addr.ip()))
        .arg("-p")
        .arg(addr.port().to_string())
        .args(["+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("dig (apt-get install bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `dig +short`, sorted.
fn short(addr: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+short"];
    a.extend_from_slice(args);
    let mut v: Vec<String> = dig(addr, &a).lines().map(|l| l.trim().to_string()).collect();
    v.sort();
    v
}

/// The answer section as `name ttl class type data` lines (dig's tabs normalised).
fn answer_lines(addr: SocketAddr, args: &[&str]) -> Vec<String> {
    let mut a = vec!["+noall", "+answer"];
    a.extend_from_slice(args);
    dig(addr, &a)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect()
}

/// (status, answer count, authority count) of a query.
fn status(addr: SocketAddr, args: &[&str]) -> (String, usize, usize) {
    let out = dig(addr, args);
    let st = out
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("?")
        .to_string();
    let count = |what: &str| {
        out.split(&format!("{what}: "))
            .nth(1)
            .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(99)
    };
    (st, count("ANSWER"), count("AUTHORITY"))
}

fn apply(c: &Cluster, yaml: &str) {
    c.ok_v("1.33", &["apply", "-f", "-"], Some(yaml));
}

fn pet(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: pets}}\nspec:\n  hostname: {name}\n  subdomain: headless\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: busybox\n    command: [\"sh\", \"-c\", \"exec sleep 3600\"]\n    readinessProbe:\n      exec: {{command: [\"true\"]}}\n      periodSeconds: 1\n"
    )
}

fn pod_ip(c: &Cluster, name: &str) -> String {
    let mut ip = String::new();
    assert!(eventually(WAIT, || {
        let p = c.get_json(&["pod", name]);
        ip = p["status"]["podIP"].as_str().unwrap_or("").to_owned();
        !ip.is_empty()
    }));
    ip
}

/// One question with the hickory client, over UDP or (on an open connection) TCP.
fn ask(addr: SocketAddr, name: &str, t: RecordType, tcp: Option<&mut TcpStream>) -> Message {
    let mut q = Message::query();
    q.metadata.recursion_desired = true;
    q.add_query(Query::query(Name::from_str(name).unwrap(), t));
    let bytes = q.to_vec().unwrap();
    let resp = match tcp {
        Some(s) => {
            s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
            s.write_all(&bytes).unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut body).unwrap();
            body
        }
        None => {
            let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            sock.send_to(&bytes, addr).unwrap();
            let mut buf = [0u8; 4096];
            let (n, _) = sock.recv_from(&mut buf).unwrap();
            buf[..n].to_vec()
        }
    };
    let m = Message::from_vec(&resp).unwrap();
    assert_eq!(m.metadata.id, q.metadata.id);
    assert_eq!(m.metadata.message_type, MessageType::Response);
    m
}

#[test]
fn spec_records_forwarding_and_updates() {
    let stub = Stub::start();
    let up = stub.addr.to_string();
    let c = Cluster::start_with(SVCNET, &["--dns-listen", "127.0.0.1:0", "--dns-upstream", &up]);
    let dns = dns_addr(&c);
    // The CoreDNS-named metrics on the API server's /metrics.
    spec_suite(&c, &stub, dns, &|| c.ok(&["get", "--raw", "/metrics"]));
}

/// The same suite through `svcnet dns`, CoreDNS's drop-in, as a process of its own beside a control
/// plane without DNS, configured by a Corefile that says what `svcnet up`'s DNS does by default.
#[test]
fn spec_records_forwarding_and_updates_through_svcnet_dns() {
    let stub = Stub::start();
    let c = Cluster::start_with(SVCNET, &["--no-dns", "--proxy-mode", "none"]);
    let (port, prometheus) = (free_port("127.0.0.1"), free_port("127.0.0.1"));
    let dir = tempfile::tempdir().expect("tempdir");
    let corefile = dir.path().join("Corefile");
    std::fs::write(
        &corefile,
        format!(
            ".:{port} {{\n    bind 127.0.0.1\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {{\n        \
             pods verified\n        fallthrough in-addr.arpa ip6.arpa\n        ttl 5\n    }}\n    \
             prometheus 127.0.0.1:{prometheus}\n    forward . {}\n    cache\n}}\n",
            stub.addr
        ),
    )
    .unwrap();
    let kubeconfig = c.kubeconfig().display().to_string();
    let conf = corefile.display().to_string();
    let server = Process::start(
        SVCNET,
        &[],
        &["dns", "--kubeconfig", &kubeconfig, "--conf", &conf],
    )
    .unwrap_or_else(|log| panic!("svcnet dns did not start:\n{log}"));
    let dns: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    spec_suite(&c, &stub, dns, &|| {
        http_get(format!("127.0.0.1:{prometheus}").parse().unwrap(), "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default()
    });
    drop(server);
}

/// The specification's records, forwarding and updates, asked of the DNS server at `dns` serving
/// cluster `c` and forwarding to `stub`; `metrics` reads its Prometheus metrics.
fn spec_suite(c: &Cluster, stub: &Stub, dns: SocketAddr, metrics: &dyn Fn() -> String) {
    // The specification's example objects: kubernetes.default (built in), a headless Service with
    // two named pets, an ExternalName Service `foo` → www.example.com.
    apply(
        c,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: headless\nspec:\n  clusterIP: None\n  selector: {app: pets}\n  ports:\n  - {name: https, port: 443}\n",
    );
    apply(
        c,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: foo\nspec:\n  type: ExternalName\n  externalName: www.example.com\n",
    );
    apply(
        c,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: alias\nspec:\n  type: ExternalName\n  externalName: kubernetes.default.svc.cluster.local\n",
    );
    for p in ["my-pet", "my-pet-2"] {
        apply(c, &pet(p));
    }
    let pet_ip = pod_ip(c, "my-pet");
    let pet2_ip = pod_ip(c, "my-pet-2");
    let kubernetes_ip = c.get_json(&["svc", "kubernetes"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();

    // 2.3.1 A, over UDP and TCP.
    assert_eq!(
        short(dns, &["kubernetes.default.svc.cluster.local"]),
        std::slice::from_ref(&kubernetes_ip)
    );
    assert_eq!(
        short(dns, &["+tcp", "kubernetes.default.svc.cluster.local"]),
        std::slice::from_ref(&kubernetes_ip)
    );
    assert_eq!(
        answer_lines(dns, &["kubernetes.default.svc.cluster.local", "A"]),
        [format!(
            "kubernetes.default.svc.cluster.local. 5 IN A {kubernetes_ip}"
        )]
    );
    // 2.3.2 SRV with the A record in the additional section.
    let srv = answer_lines(
        dns,
        &[
            "+additional",
            "_https._tcp.kubernetes.default.svc.cluster.local",
            "SRV",
        ],
    );
    assert_eq!(
        srv,
        [
            "_https._tcp.kubernetes.default.svc.cluster.local. 5 IN SRV 0 100 443 kubernetes.default.svc.cluster.local."
                .to_string(),
            format!("kubernetes.default.svc.cluster.local. 5 IN A {kubernetes_ip}")
        ]
    );
    // 2.3.3 PTR.
    assert_eq!(
        short(dns, &["-x", &kubernetes_ip]),
        ["kubernetes.default.svc.cluster.local."]
    );

    // 2.4 headless: once both pets are ready.
    let mut want = vec![pet_ip.clone(), pet2_ip.clone()];
    want.sort();
    assert!(
        eventually(WAIT, || short(dns, &["headless.default.svc.cluster.local"])
            == want),
        "{:?}\n{}",
        short(dns, &["headless.default.svc.cluster.local"]),
        c.log()
    );
    assert_eq!(
        short(dns, &["my-pet.headless.default.svc.cluster.local"]),
        std::slice::from_ref(&pet_ip)
    );
    assert_eq!(
        short(
            dns,
            &["+tcp", "_https._tcp.headless.default.svc.cluster.local", "SRV"]
        ),
        [
            "0 50 443 my-pet-2.headless.default.svc.cluster.local.",
            "0 50 443 my-pet.headless.default.svc.cluster.local."
        ]
    );
    assert_eq!(
        short(dns, &["-x", &pet_ip]),
        ["my-pet.headless.default.svc.cluster.local."]
    );
    // 2.5 ExternalName: the CNAME and the upstream's answer for its target.
    assert_eq!(
        answer_lines(dns, &["foo.default.svc.cluster.local"]),
        [
            "foo.default.svc.cluster.local. 5 IN CNAME www.example.com.",
            "www.example.com. 60 IN A 192.0.2.53"
        ]
    );
    // Inside the zone it is chased in the same answer.
    assert_eq!(
        answer_lines(dns, &["alias.default.svc.cluster.local"]),
        [
            "alias.default.svc.cluster.local. 5 IN CNAME kubernetes.default.svc.cluster.local.".to_string(),
            format!("kubernetes.default.svc.cluster.local. 5 IN A {kubernetes_ip}")
        ]
    );
    // 2.6 pod records (verified: the pod exists in that namespace).
    let dashed = pet_ip.replace('.', "-");
    assert_eq!(
        short(dns, &[&format!("{dashed}.default.pod.cluster.local")]),
        std::slice::from_ref(&pet_ip)
    );
    assert_eq!(
        status(dns, &[&format!("{dashed}.kube-system.pod.cluster.local")]).0,
        "NXDOMAIN"
    );
    // Schema version.
    assert_eq!(short(dns, &["dns-version.cluster.local", "TXT"]), ["\"1.1.0\""]);

    // NXDOMAIN vs NODATA (NOERROR, no answer, the SOA in authority).
    for (args, want) in [
        (vec!["nope.default.svc.cluster.local"], "NXDOMAIN"),
        (vec!["web.nope.svc.cluster.local"], "NXDOMAIN"),
        (vec!["x.cluster.local"], "NXDOMAIN"),
        (vec!["kubernetes.default.svc.cluster.local", "AAAA"], "NOERROR"),
        (vec!["kubernetes.default.svc.cluster.local", "MX"], "NOERROR"),
        (vec!["default.svc.cluster.local"], "NOERROR"),
        (vec!["svc.cluster.local"], "NOERROR"),
        (vec!["cluster.local"], "NOERROR"),
    ] {
        let (st, an, au) = status(dns, &args);
        assert_eq!((st.as_str(), an, au), (want, 0, 1), "{args:?}");
    }
    let soa = dig(dns, &["+noall", "+authority", "nope.default.svc.cluster.local"]);
    let soa = soa.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        soa.starts_with("cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. ")
            && soa.ends_with(" 7200 1800 86400 5"),
        "{soa}"
    );
    // Apex SOA and NS.
    assert_eq!(
        answer_lines(dns, &["cluster.local", "NS"]),
        ["cluster.local. 5 IN NS ns.dns.cluster.local."]
    );
    assert_eq!(answer_lines(dns, &["cluster.local", "SOA"]).len(), 1);
    // Case-insensitive, and the answer echoes the question's case.
    assert_eq!(
        answer_lines(dns, &["KuberNetes.DEFAULT.svc.Cluster.Local"]),
        [format!(
            "KuberNetes.DEFAULT.svc.Cluster.Local. 5 IN A {kubernetes_ip}"
        )]
    );

    // The hickory client: UDP, then several questions on one TCP connection.
    let m = ask(dns, "kubernetes.default.svc.cluster.local.", RecordType::A, None);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers[0].data.to_string(), kubernetes_ip);
    let mut conn = TcpStream::connect(dns).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for _ in 0..3 {
        let m = ask(
            dns,
            "my-pet.headless.default.svc.cluster.local.",
            RecordType::A,
            Some(&mut conn),
        );
        assert_eq!(m.answers[0].data.to_string(), pet_ip);
        let m = ask(
            dns,
            "nope.default.svc.cluster.local.",
            RecordType::A,
            Some(&mut conn),
        );
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    }

    // Forwarding: answered by the stub, then from the cache (TTL going down, no new upstream query).
    assert_eq!(short(dns, &["example.org"]), ["192.0.2.53"]);
    let n = stub.count();
    std::thread::sleep(Duration::from_millis(1100));
    let again = answer_lines(dns, &["example.org"]);
    assert_eq!(stub.count(), n, "served from the cache");
    let ttl: u32 = again[0].split(' ').nth(1).unwrap().parse().unwrap();
    assert!(ttl < 60, "{again:?}");
    assert_eq!(status(dns, &["nx.example"]).0, "NXDOMAIN");
    // The stub truncates `tc.example.` over UDP: the server asks again over TCP.
    assert_eq!(short(dns, &["tc.example"]).len(), 30);
    // Reverse names we hold nothing for go upstream too (the stub has no PTR: empty NOERROR).
    assert_eq!(status(dns, &["-x", "192.0.2.99"]).0, "NOERROR");

    // Event-driven: a new Service answers, a deleted pet disappears, a deleted Service is NXDOMAIN.
    apply(
        c,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: later\nspec:\n  ports:\n  - {name: http, port: 80}\n",
    );
    let later_ip = c.get_json(&["svc", "later"])["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(eventually(Duration::from_secs(5), || short(
        dns,
        &["later.default.svc.cluster.local"]
    ) == [later_ip.clone()]));
    c.ok(&["delete", "pod", "my-pet-2", "--wait=false"]);
    assert!(eventually(WAIT, || short(
        dns,
        &["headless.default.svc.cluster.local"]
    ) == std::slice::from_ref(&pet_ip)));
    c.ok(&["delete", "svc", "later"]);
    assert!(eventually(Duration::from_secs(5), || status(
        dns,
        &["later.default.svc.cluster.local"]
    )
    .0 == "NXDOMAIN"));

    let metrics = metrics();
    assert!(metrics.contains("coredns_dns_requests_total{"), "{metrics}");
    assert!(metrics.contains("coredns_cache_hits_total"), "{metrics}");
    assert!(metrics.contains("coredns_forward_requests_total"), "{metrics}");
}

#[test]
fn large_answers_truncate_over_udp_and_complete_over_tcp() {
    let stub = Stub::start();
    let up = stub.addr.to_string();
    let c = Cluster::start_with(
        SVCNET,
        &[
            "--dns-listen",
            "127.0.0.1:0",
            "--dns-upstream",
            &up,
            "--dns-pods",
            "insecure",
        ],
    );
    let dns = dns_addr(&c);
    // A headless Service with 200 endpoints, from a hand-written EndpointSlice (no pods needed).
    apply(
        &c,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: many\nspec:\n  clusterIP: None\n  ports:\n  - {name: http, port: 80}\n",
    );
    let eps: String = (0..200)
        .map(|i| {
            format!(
                "- addresses: [\"10.7.0.{}\"]\n  conditions: {{ready: true}}\n",
                i + 1
            )
        })
        .collect();
    apply(
        &c,
        &format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: many-1\n  labels:\n    kubernetes.io/service-name: many\naddressType: IPv4\nports:\n- {{name: http, port: 80, protocol: TCP}}\nendpoints:\n{eps}"
        ),
    );
    assert!(
        eventually(WAIT, || short(dns, &["+tcp", "many.default.svc.cluster.local"])
            .len()
            == 200),
        "{}",
        c.log()
    );
    // Plain UDP without EDNS: TC and what fits in 512 bytes.
    let udp = dig(dns, &["+noedns", "+ignore", "many.default.svc.cluster.local"]);
    assert!(udp.contains("flags: qr aa tc rd"), "{udp}");
    let size: usize = udp
        .split("MSG SIZE  rcvd: ")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(9999);
    assert!(size <= 512, "{udp}");
    // dig retries over TCP on TC by itself and gets all of it.
    assert_eq!(
        short(dns, &["+noedns", "many.default.svc.cluster.local"]).len(),
        200
    );
    // EDNS with a 4096-byte buffer: 200 A records (16 bytes each) fit, and the OPT is echoed.
    let big = dig(
        dns,
        &["+bufsize=4096", "+ignore", "many.default.svc.cluster.local"],
    );
    assert!(big.contains("ANSWER: 200"), "{big}");
    assert!(big.contains("udp: 4096"), "{big}");
    // SRV over TCP: 200 records and their addresses.
    let srv = dig(dns, &["+tcp", "_http._tcp.many.default.svc.cluster.local", "SRV"]);
    assert!(srv.contains("ANSWER: 200"), "{srv}");
    // Insecure pod records answer any well-formed address in an existing namespace.
    assert_eq!(short(dns, &["10-9-8-7.default.pod.cluster.local"]), ["10.9.8.7"]);
    // AXFR is refused, ANY gets RFC 8482's HINFO.
    assert!(dig(dns, &["cluster.local", "AXFR"]).contains("Transfer failed"));
    assert!(
        dig(
            dns,
            &["+noall", "+answer", "many.default.svc.cluster.local", "ANY"]
        )
        .contains("HINFO")
    );
}

/// Two clusters on one machine with the default DNS address: the second finds the port taken and takes a
/// free one, so both answer, each with its own Services.
#[test]
fn a_second_cluster_gets_dns_of_its_own() {
    let a = Cluster::start(SVCNET);
    let b = Cluster::start(SVCNET);
    let (da, db) = (dns_addr(&a), dns_addr(&b));
    assert_ne!(da, db, "two clusters, two DNS servers");
    for (c, addr) in [(&a, da), (&b, db)] {
        let ip = c.get_json(&["svc", "kubernetes"])["spec"]["clusterIP"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            eventually(WAIT, || short(addr, &["kubernetes.default.svc.cluster.local"])
                == [ip.clone()]),
            "{addr} answers for its cluster\n{}",
            c.log()
        );
    }
    let only_b = "apiVersion: v1\nkind: Service\nmetadata: {name: only-b}\nspec:\n  ports: [{port: 80}]\n";
    apply(&b, only_b);
    assert!(eventually(WAIT, || !short(
        db,
        &["only-b.default.svc.cluster.local"]
    )
    .is_empty()));
    assert_eq!(
        status(da, &["only-b.default.svc.cluster.local"]).0,
        "NXDOMAIN",
        "the first cluster does not know the second's Services"
    );
}
