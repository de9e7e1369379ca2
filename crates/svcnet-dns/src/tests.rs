//! Unit tests: the zone and lookup (every record type, the NXDOMAIN/NODATA matrix, case, PTR, SRV,
//! ExternalName, pods, sync, incremental updates) through the real packet path, checked by decoding the
//! answers with hickory-proto; plus wire robustness (EDNS, truncation, malformed input).

use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use proptest::prelude::*;

use crate::lookup::{PodsMode, ZoneConfig};
use crate::metrics::Metrics;
use crate::server::{Handler, Step};
use crate::zone::{EndpointSpec, PortSpec, ServiceKind, ServiceSpec, SliceSpec, ZoneReader, ZoneWriter};

fn port(name: &str, proto: &str, port: i32) -> PortSpec {
    PortSpec {
        name: name.into(),
        protocol: proto.into(),
        port,
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn svc(ns: &str, name: &str, kind: ServiceKind, ports: Vec<PortSpec>) -> ServiceSpec {
    ServiceSpec {
        namespace: ns.into(),
        name: name.into(),
        kind,
        ports,
    }
}

fn slice(
    ns: &str,
    name: &str,
    service: &str,
    ports: Vec<PortSpec>,
    eps: &[(&str, Option<&str>)],
) -> SliceSpec {
    SliceSpec {
        namespace: ns.into(),
        name: name.into(),
        service: service.into(),
        ports,
        endpoints: eps
            .iter()
            .map(|(a, h)| EndpointSpec {
                ip: ip(a),
                hostname: h.map(String::from),
            })
            .collect(),
    }
}

/// The example cluster of the tests.
fn populate(w: &mut ZoneWriter) {
    for ns in ["default", "ns", "kube-system"] {
        w.apply_namespace(ns);
    }
    w.apply_service(&svc(
        "default",
        "kubernetes",
        ServiceKind::ClusterIp(vec![ip("10.96.0.1")]),
        vec![port("https", "TCP", 443)],
    ));
    w.apply_service(&svc(
        "ns",
        "web",
        ServiceKind::ClusterIp(vec![ip("10.0.0.10"), ip("fd00::10")]),
        vec![port("http", "TCP", 80), port("dns", "UDP", 53)],
    ));
    w.apply_slice(&slice(
        "ns",
        "web-abc",
        "web",
        vec![port("http", "TCP", 8080)],
        &[("10.1.1.1", None)],
    ));
    w.apply_service(&svc(
        "ns",
        "hl",
        ServiceKind::Headless,
        vec![port("http", "TCP", 80)],
    ));
    w.apply_slice(&slice(
        "ns",
        "hl-1",
        "hl",
        vec![port("http", "TCP", 8080)],
        &[("10.1.0.1", Some("pet-0")), ("10.1.0.2", None)],
    ));
    w.apply_service(&svc("ns", "empty", ServiceKind::Headless, vec![]));
    w.apply_service(&svc(
        "ns",
        "ext",
        ServiceKind::ExternalName("web.ns.svc.cluster.local".into()),
        vec![],
    ));
    w.apply_service(&svc(
        "ns",
        "ext2",
        ServiceKind::ExternalName("ext.ns.svc.cluster.local".into()),
        vec![],
    ));
    w.apply_service(&svc(
        "ns",
        "outside",
        ServiceKind::ExternalName("example.com".into()),
        vec![],
    ));
    w.apply_service(&svc(
        "ns",
        "loop",
        ServiceKind::ExternalName("loop.ns.svc.cluster.local".into()),
        vec![],
    ));
    w.apply_pod("ns", "p1", &[ip("10.2.0.5")]);
    w.apply_pod("ns", "p6", &[ip("fd00::5")]);
    w.mark_synced();
    w.publish();
}

struct Fx {
    w: ZoneWriter,
    r: ZoneReader,
    h: Handler,
}

fn fixture_with(pods: PodsMode) -> Fx {
    let mut w = ZoneWriter::new();
    populate(&mut w);
    let r = w.reader();
    let h = Handler::new(
        ZoneConfig {
            zone: "cluster.local".into(),
            ttl: 5,
            pods,
            ns_addrs: vec![ip("127.0.0.1")],
            reverse: true,
            fallthrough_reverse: true,
            fallthrough_zone: false,
        },
        Vec::new(),
        Vec::new(),
        100,
        Metrics::default(),
    );
    Fx { w, r, h }
}

fn fixture() -> Fx {
    fixture_with(PodsMode::Verified)
}

/// A query written byte by byte (hickory lowers names when it encodes).
fn raw_query(name: &str, qtype: u16) -> Vec<u8> {
    let mut v = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.') {
        v.push(l.len() as u8);
        v.extend_from_slice(l.as_bytes());
    }
    v.push(0);
    v.extend_from_slice(&qtype.to_be_bytes());
    v.extend_from_slice(&[0, 1]);
    v
}

fn query_bytes(name: &str, t: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_str(name).unwrap(), t));
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

impl Fx {
    fn raw(&mut self, pkt: &[u8], tcp: bool) -> (Step, Vec<u8>) {
        let mut out = Vec::new();
        let snap = self.r.load().clone();
        let step = self.h.local(&snap, pkt, ip("127.0.0.1"), tcp, &mut out);
        (step, out)
    }

    fn ask_opts(&mut self, name: &str, t: RecordType, edns: Option<u16>, tcp: bool) -> (Message, usize) {
        let (step, out) = self.raw(&query_bytes(name, t, edns), tcp);
        assert!(matches!(step, Step::Reply { .. }), "{name} {t}: {step:?}");
        (Message::from_vec(&out).expect("decodable answer"), out.len())
    }

    fn ask(&mut self, name: &str, t: RecordType) -> Message {
        self.ask_opts(name, t, None, false).0
    }
}

fn answers(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| format!("{} {} {} {}", r.name, r.ttl, r.record_type(), r.data))
        .collect()
}

fn rdata(m: &Message) -> Vec<String> {
    m.answers.iter().map(|r| r.data.to_string()).collect()
}

fn is_nodata(m: &Message) -> bool {
    m.metadata.response_code == ResponseCode::NoError && m.answers.is_empty() && has_soa(m)
}

fn is_nxdomain(m: &Message) -> bool {
    m.metadata.response_code == ResponseCode::NXDomain && m.answers.is_empty() && has_soa(m)
}

fn has_soa(m: &Message) -> bool {
    matches!(m.authorities.as_slice(), [r] if matches!(&r.data, RData::SOA(_)))
}

#[test]
fn cluster_ip_a_and_aaaa() {
    let mut f = fixture();
    let m = f.ask("web.ns.svc.cluster.local.", RecordType::A);
    assert_eq!(answers(&m), ["web.ns.svc.cluster.local. 5 A 10.0.0.10"]);
    assert!(m.metadata.authoritative);
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    let m = f.ask("web.ns.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(answers(&m), ["web.ns.svc.cluster.local. 5 AAAA fd00::10"]);
    let m = f.ask("kubernetes.default.svc.cluster.local.", RecordType::AAAA);
    assert!(is_nodata(&m), "{m:?}");
}

#[test]
fn headless_services_answer_ready_endpoints_or_nxdomain() {
    let mut f = fixture();
    let mut got = rdata(&f.ask("hl.ns.svc.cluster.local.", RecordType::A));
    got.sort();
    assert_eq!(got, ["10.1.0.1", "10.1.0.2"]);
    assert!(is_nodata(&f.ask("hl.ns.svc.cluster.local.", RecordType::AAAA)));
    // No ready endpoints: NXDOMAIN, as CoreDNS.
    assert!(is_nxdomain(&f.ask("empty.ns.svc.cluster.local.", RecordType::A)));
    // Endpoint names: the hostname, else the address with dashes; for ClusterIP Services too (CoreDNS).
    assert_eq!(
        rdata(&f.ask("pet-0.hl.ns.svc.cluster.local.", RecordType::A)),
        ["10.1.0.1"]
    );
    assert_eq!(
        rdata(&f.ask("10-1-0-2.hl.ns.svc.cluster.local.", RecordType::A)),
        ["10.1.0.2"]
    );
    assert!(is_nxdomain(
        &f.ask("10-1-0-1.hl.ns.svc.cluster.local.", RecordType::A)
    ));
    assert!(is_nxdomain(
        &f.ask("nope.hl.ns.svc.cluster.local.", RecordType::A)
    ));
    assert_eq!(
        rdata(&f.ask("10-1-1-1.web.ns.svc.cluster.local.", RecordType::A)),
        ["10.1.1.1"]
    );
}

#[test]
fn srv_records_with_coredns_weights_and_additional_addresses() {
    let mut f = fixture();
    let m = f.ask("_http._tcp.web.ns.svc.cluster.local.", RecordType::SRV);
    // Two hits (one per ClusterIP family): weight 100/2; one SRV, both addresses in additional.
    assert_eq!(
        answers(&m),
        ["_http._tcp.web.ns.svc.cluster.local. 5 SRV 0 50 80 web.ns.svc.cluster.local."]
    );
    let mut extra: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    extra.sort();
    assert_eq!(
        extra,
        [
            "web.ns.svc.cluster.local. 10.0.0.10",
            "web.ns.svc.cluster.local. fd00::10"
        ]
    );
    // Protocol must match; underscores are optional; case does not matter.
    assert!(is_nxdomain(
        &f.ask("_http._udp.web.ns.svc.cluster.local.", RecordType::SRV)
    ));
    assert_eq!(
        rdata(&f.ask("_DNS._UDP.web.ns.svc.cluster.local.", RecordType::SRV)),
        ["0 50 53 web.ns.svc.cluster.local."]
    );
    // Without port and protocol: every port.
    let mut all = rdata(&f.ask("web.ns.svc.cluster.local.", RecordType::SRV));
    all.sort();
    assert_eq!(
        all,
        [
            "0 25 53 web.ns.svc.cluster.local.",
            "0 25 80 web.ns.svc.cluster.local."
        ]
    );
    // Headless: one SRV per endpoint, the endpoint port, hostname or dashed address as target.
    let m = f.ask("_http._tcp.hl.ns.svc.cluster.local.", RecordType::SRV);
    let mut got = rdata(&m);
    got.sort();
    assert_eq!(
        got,
        [
            "0 50 8080 10-1-0-2.hl.ns.svc.cluster.local.",
            "0 50 8080 pet-0.hl.ns.svc.cluster.local."
        ]
    );
    let mut extra: Vec<String> = m
        .additionals
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect();
    extra.sort();
    assert_eq!(
        extra,
        [
            "10-1-0-2.hl.ns.svc.cluster.local. 10.1.0.2",
            "pet-0.hl.ns.svc.cluster.local. 10.1.0.1"
        ]
    );
    // ExternalName has no SRV: NODATA.
    assert!(is_nodata(&f.ask("ext.ns.svc.cluster.local.", RecordType::SRV)));
}

#[test]
fn ptr_for_cluster_ips_and_endpoints_v4_and_v6() {
    let mut f = fixture();
    let m = f.ask("10.0.0.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        answers(&m),
        ["10.0.0.10.in-addr.arpa. 5 PTR web.ns.svc.cluster.local."]
    );
    assert!(m.metadata.authoritative);
    let v6 = "0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.";
    assert_eq!(rdata(&f.ask(v6, RecordType::PTR)), ["web.ns.svc.cluster.local."]);
    assert_eq!(
        rdata(&f.ask("1.0.1.10.in-addr.arpa.", RecordType::PTR)),
        ["pet-0.hl.ns.svc.cluster.local."]
    );
    assert_eq!(
        rdata(&f.ask("2.0.1.10.in-addr.arpa.", RecordType::PTR)),
        ["10-1-0-2.hl.ns.svc.cluster.local."]
    );
    // Unknown addresses and partial reverse names are not ours: upstream.
    for n in [
        "9.9.9.10.in-addr.arpa.",
        "10.in-addr.arpa.",
        "1.0.1.10.in-addr.arpa.",
    ] {
        let t = if n.starts_with("1.0.1") {
            RecordType::A
        } else {
            RecordType::PTR
        };
        let (step, _) = f.raw(&query_bytes(n, t, None), false);
        assert!(
            matches!(step, Step::Upstream { ref chain, .. } if chain.is_empty()),
            "{n}: {step:?}"
        );
    }
}

#[test]
fn external_name_is_a_cname_chased_inside_the_zone() {
    let mut f = fixture();
    let m = f.ask("ext.ns.svc.cluster.local.", RecordType::A);
    assert_eq!(
        answers(&m),
        [
            "ext.ns.svc.cluster.local. 5 CNAME web.ns.svc.cluster.local.",
            "web.ns.svc.cluster.local. 5 A 10.0.0.10"
        ]
    );
    let m = f.ask("ext2.ns.svc.cluster.local.", RecordType::AAAA);
    assert_eq!(
        answers(&m),
        [
            "ext2.ns.svc.cluster.local. 5 CNAME ext.ns.svc.cluster.local.",
            "ext.ns.svc.cluster.local. 5 CNAME web.ns.svc.cluster.local.",
            "web.ns.svc.cluster.local. 5 AAAA fd00::10"
        ]
    );
    assert_eq!(
        answers(&f.ask("outside.ns.svc.cluster.local.", RecordType::CNAME)),
        ["outside.ns.svc.cluster.local. 5 CNAME example.com."]
    );
    // Outside the zone the target is resolved upstream.
    let (step, _) = f.raw(
        &query_bytes("outside.ns.svc.cluster.local.", RecordType::A, None),
        false,
    );
    assert!(matches!(step, Step::Upstream { ref chain, .. } if chain == &["example.com".to_string()]));
    // A CNAME to itself is dropped: NODATA.
    assert!(is_nodata(&f.ask("loop.ns.svc.cluster.local.", RecordType::A)));
    // ClusterIP Services are not CNAMEs.
    assert!(is_nodata(&f.ask("web.ns.svc.cluster.local.", RecordType::CNAME)));
    assert!(is_nxdomain(
        &f.ask("nope.ns.svc.cluster.local.", RecordType::CNAME)
    ));
}

#[test]
fn nxdomain_and_nodata_as_coredns() {
    let mut f = fixture();
    let nodata = [
        ("cluster.local.", RecordType::A),
        ("svc.cluster.local.", RecordType::A),
        ("pod.cluster.local.", RecordType::A),
        ("ns.svc.cluster.local.", RecordType::A),
        ("ns.svc.cluster.local.", RecordType::SRV),
        ("web.ns.svc.cluster.local.", RecordType::MX),
        ("web.ns.svc.cluster.local.", RecordType::TXT),
        ("web.ns.svc.cluster.local.", RecordType::PTR),
        ("web.ns.svc.cluster.local.", RecordType::CAA),
        ("web.ns.svc.cluster.local.", RecordType::NS),
        ("web.ns.svc.cluster.local.", RecordType::SOA),
        // CoreDNS quirks: TXT and non-apex SOA are NODATA whatever the name.
        ("nope.ns.svc.cluster.local.", RecordType::TXT),
        ("nope.ns.svc.cluster.local.", RecordType::SOA),
    ];
    for (n, t) in nodata {
        let m = f.ask(n, t);
        assert!(is_nodata(&m), "{n} {t}: {m:?}");
    }
    let nx = [
        ("nope.svc.cluster.local.", RecordType::A),
        ("web.nope.svc.cluster.local.", RecordType::A),
        ("nope.ns.svc.cluster.local.", RecordType::A),
        ("nope.ns.svc.cluster.local.", RecordType::AAAA),
        ("nope.ns.svc.cluster.local.", RecordType::MX),
        ("nope.ns.svc.cluster.local.", RecordType::CAA),
        ("foo.cluster.local.", RecordType::A),
        ("dns-version.cluster.local.", RecordType::A),
        ("a.b.c.web.ns.svc.cluster.local.", RecordType::A),
        ("x.y.z.cluster.local.", RecordType::A),
    ];
    for (n, t) in nx {
        let m = f.ask(n, t);
        assert!(is_nxdomain(&m), "{n} {t}: {m:?}");
    }
    // The SOA of negative answers: CoreDNS's fields.
    let m = f.ask("nope.ns.svc.cluster.local.", RecordType::A);
    let soa = &m.authorities[0];
    assert_eq!(soa.name.to_string(), "cluster.local.");
    assert_eq!(soa.ttl, 5);
    let RData::SOA(s) = &soa.data else { panic!() };
    assert_eq!(s.mname.to_string(), "ns.dns.cluster.local.");
    assert_eq!(s.rname.to_string(), "hostmaster.cluster.local.");
    assert_eq!((s.refresh, s.retry, s.expire, s.minimum), (7200, 1800, 86400, 5));
    assert!(s.serial > 0);
}

#[test]
fn apex_soa_ns_and_dns_version() {
    let mut f = fixture();
    let m = f.ask("cluster.local.", RecordType::SOA);
    assert_eq!(m.answers.len(), 1);
    assert!(matches!(m.answers[0].data, RData::SOA(_)));
    let m = f.ask("cluster.local.", RecordType::NS);
    assert_eq!(answers(&m), ["cluster.local. 5 NS ns.dns.cluster.local."]);
    assert_eq!(
        m.additionals[0].to_string().split_whitespace().last(),
        Some("127.0.0.1")
    );
    assert_eq!(
        rdata(&f.ask("ns.dns.cluster.local.", RecordType::A)),
        ["127.0.0.1"]
    );
    let m = f.ask("dns-version.cluster.local.", RecordType::TXT);
    assert_eq!(answers(&m), ["dns-version.cluster.local. 28800 TXT 1.1.0"]);
}

#[test]
fn names_are_case_insensitive_and_answers_echo_the_question() {
    let mut f = fixture();
    let (_, out) = f.raw(&raw_query("WEB.Ns.SVC.Cluster.LOCAL", 1), false);
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(m.answers.len(), 1);
    // The owner is a pointer to the question, which is echoed byte for byte.
    assert!(out.windows(3).filter(|w| *w == b"WEB").count() == 1);
    assert_eq!(&out[out.len() - 16..out.len() - 14], &[0xC0, 12]);
    let (_, out) = f.raw(&raw_query("Nope.NS.svc.CLUSTER.local", 1), false);
    let m = Message::from_vec(&out).unwrap();
    assert!(is_nxdomain(&m));
    // The SOA's owner points into the question's zone labels: `CLUSTER.local`, as asked.
    assert!(out.windows(7).filter(|w| *w == b"CLUSTER").count() == 1);
}

#[test]
fn pod_records_per_mode() {
    let mut f = fixture_with(PodsMode::Verified);
    assert_eq!(
        rdata(&f.ask("10-2-0-5.ns.pod.cluster.local.", RecordType::A)),
        ["10.2.0.5"]
    );
    assert_eq!(
        rdata(&f.ask("fd00--5.ns.pod.cluster.local.", RecordType::AAAA)),
        ["fd00::5"]
    );
    assert!(is_nodata(
        &f.ask("10-2-0-5.ns.pod.cluster.local.", RecordType::AAAA)
    ));
    // Wrong namespace, unknown address, not an address.
    assert!(is_nxdomain(
        &f.ask("10-2-0-5.default.pod.cluster.local.", RecordType::A)
    ));
    assert!(is_nxdomain(
        &f.ask("10-2-0-6.ns.pod.cluster.local.", RecordType::A)
    ));
    assert!(is_nxdomain(&f.ask("hello.ns.pod.cluster.local.", RecordType::A)));
    assert!(is_nodata(&f.ask("ns.pod.cluster.local.", RecordType::A)));
    // The pod goes away.
    f.w.delete_pod("ns", "p1");
    f.w.publish();
    assert!(is_nxdomain(
        &f.ask("10-2-0-5.ns.pod.cluster.local.", RecordType::A)
    ));

    let mut f = fixture_with(PodsMode::Insecure);
    assert_eq!(
        rdata(&f.ask("10-9-9-9.ns.pod.cluster.local.", RecordType::A)),
        ["10.9.9.9"]
    );
    assert!(is_nxdomain(
        &f.ask("10-9-9-9.nope.pod.cluster.local.", RecordType::A)
    ));

    let mut f = fixture_with(PodsMode::Disabled);
    assert!(is_nxdomain(
        &f.ask("10-2-0-5.ns.pod.cluster.local.", RecordType::A)
    ));
}

#[test]
fn servfail_until_the_first_sync() {
    let mut w = ZoneWriter::new();
    let mut f = fixture();
    f.r = w.reader();
    let m = f.ask("web.ns.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    assert!(m.answers.is_empty());
    // Data arrives but nothing is served from it before the sync completes.
    populate_unsynced(&mut w);
    w.publish();
    let m = f.ask("web.ns.svc.cluster.local.", RecordType::A);
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
    w.mark_synced();
    w.publish();
    assert_eq!(
        rdata(&f.ask("web.ns.svc.cluster.local.", RecordType::A)),
        ["10.0.0.10"]
    );
}

fn populate_unsynced(w: &mut ZoneWriter) {
    w.apply_namespace("ns");
    w.apply_service(&svc(
        "ns",
        "web",
        ServiceKind::ClusterIp(vec![ip("10.0.0.10")]),
        vec![port("http", "TCP", 80)],
    ));
}

#[test]
fn incremental_updates_show_in_the_next_answer() {
    let mut f = fixture();
    let before = f.r.load().clone();
    f.w.apply_service(&svc(
        "ns",
        "web",
        ServiceKind::ClusterIp(vec![ip("10.0.0.11")]),
        vec![port("http", "TCP", 80)],
    ));
    f.w.publish();
    assert_eq!(
        rdata(&f.ask("web.ns.svc.cluster.local.", RecordType::A)),
        ["10.0.0.11"]
    );
    // Only the touched shards were copied: an unrelated Service's entry is the same allocation.
    let after = f.r.load().clone();
    let k = |s: &crate::zone::Snapshot| {
        std::sync::Arc::as_ptr(s.entries.get("kubernetes.default").expect("entry")) as usize
    };
    assert_eq!(k(&before), k(&after));
    // The old ClusterIP's PTR went with it, the new one is there.
    let (step, _) = f.raw(
        &query_bytes("10.0.0.10.in-addr.arpa.", RecordType::PTR, None),
        false,
    );
    assert!(matches!(step, Step::Upstream { .. }));
    assert_eq!(
        rdata(&f.ask("11.0.0.10.in-addr.arpa.", RecordType::PTR)),
        ["web.ns.svc.cluster.local."]
    );
    // Endpoints change: only the new set answers.
    f.w.apply_slice(&slice(
        "ns",
        "hl-1",
        "hl",
        vec![port("http", "TCP", 8080)],
        &[("10.1.0.3", None)],
    ));
    f.w.publish();
    assert_eq!(
        rdata(&f.ask("hl.ns.svc.cluster.local.", RecordType::A)),
        ["10.1.0.3"]
    );
    let (step, _) = f.raw(
        &query_bytes("1.0.1.10.in-addr.arpa.", RecordType::PTR, None),
        false,
    );
    assert!(matches!(step, Step::Upstream { .. }));
    f.w.delete_slice("ns", "hl-1");
    f.w.publish();
    assert!(is_nxdomain(&f.ask("hl.ns.svc.cluster.local.", RecordType::A)));
    f.w.delete_service("ns", "web");
    f.w.publish();
    assert!(is_nxdomain(&f.ask("web.ns.svc.cluster.local.", RecordType::A)));
    f.w.delete_namespace("ns");
    f.w.publish();
    assert!(is_nxdomain(&f.ask("ns.svc.cluster.local.", RecordType::A)));
}

/// The compact indexes (numeric entry ids, first-value-inline address maps, packed pod records) through
/// the cases that leave them shared or reused: an address backing two Services, an entry id freed and
/// handed to a new Service, a slice moving between Services, a mixed-family slice, a pod address shared
/// by two namespaces and a dual-stack pod.
#[test]
fn shared_addresses_and_reused_ids_stay_consistent() {
    let mut f = fixture();
    let ptr = |f: &mut Fx, n: &str| {
        let mut v = rdata(&f.ask(n, RecordType::PTR));
        v.sort();
        v
    };
    // 10.1.1.1 already backs web; let a second Service share it.
    f.w.apply_service(&svc("ns", "twin", ServiceKind::Headless, vec![]));
    f.w.apply_slice(&slice("ns", "twin-1", "twin", vec![], &[("10.1.1.1", Some("T"))]));
    f.w.publish();
    assert_eq!(
        ptr(&mut f, "1.1.1.10.in-addr.arpa."),
        [
            "10-1-1-1.web.ns.svc.cluster.local.",
            "t.twin.ns.svc.cluster.local."
        ]
    );
    // The first owner goes: the second is promoted.
    f.w.delete_slice("ns", "web-abc");
    f.w.publish();
    assert_eq!(
        ptr(&mut f, "1.1.1.10.in-addr.arpa."),
        ["t.twin.ns.svc.cluster.local."]
    );
    // Remove twin entirely (its id is freed), then a new Service takes that id.
    f.w.delete_slice("ns", "twin-1");
    f.w.delete_service("ns", "twin");
    f.w.apply_service(&svc(
        "default",
        "fresh",
        ServiceKind::ClusterIp(vec![ip("10.0.0.99")]),
        vec![],
    ));
    f.w.publish();
    let (step, _) = f.raw(
        &query_bytes("1.1.1.10.in-addr.arpa.", RecordType::PTR, None),
        false,
    );
    assert!(matches!(step, Step::Upstream { .. }), "{step:?}");
    assert_eq!(
        ptr(&mut f, "99.0.0.10.in-addr.arpa."),
        ["fresh.default.svc.cluster.local."]
    );
    assert_eq!(
        ptr(&mut f, "10.0.0.10.in-addr.arpa."),
        ["web.ns.svc.cluster.local."]
    );
    // A slice moves to another Service, with both families in it.
    f.w.apply_slice(&slice(
        "ns",
        "hl-1",
        "web",
        vec![port("http", "TCP", 8080)],
        &[("10.1.0.1", Some("pet-0")), ("fd00::1:2", None)],
    ));
    f.w.publish();
    assert!(is_nxdomain(&f.ask("hl.ns.svc.cluster.local.", RecordType::A)));
    assert_eq!(
        ptr(&mut f, "1.0.1.10.in-addr.arpa."),
        ["pet-0.web.ns.svc.cluster.local."]
    );
    assert_eq!(
        rdata(&f.ask("fd00--1-2.web.ns.svc.cluster.local.", RecordType::AAAA)),
        ["fd00::1:2"]
    );
    f.w.delete_slice("ns", "hl-1");
    f.w.publish();
    assert!(is_nxdomain(
        &f.ask("pet-0.web.ns.svc.cluster.local.", RecordType::A)
    ));
    // Pods: one address in two namespaces, then a dual-stack pod changing addresses.
    f.w.apply_pod("default", "q", &[ip("10.2.0.5")]);
    f.w.apply_pod("ns", "d", &[ip("10.2.0.7"), ip("fd00::7")]);
    f.w.publish();
    for n in ["10-2-0-5.ns", "10-2-0-5.default", "10-2-0-7.ns"] {
        assert!(
            !f.ask(&format!("{n}.pod.cluster.local."), RecordType::A)
                .answers
                .is_empty(),
            "{n}"
        );
    }
    assert!(
        !f.ask("fd00--7.ns.pod.cluster.local.", RecordType::AAAA)
            .answers
            .is_empty()
    );
    f.w.delete_pod("ns", "p1");
    f.w.apply_pod("ns", "d", &[ip("10.2.0.8")]);
    f.w.publish();
    assert!(is_nxdomain(
        &f.ask("10-2-0-5.ns.pod.cluster.local.", RecordType::A)
    ));
    assert!(
        !f.ask("10-2-0-5.default.pod.cluster.local.", RecordType::A)
            .answers
            .is_empty()
    );
    assert!(is_nxdomain(
        &f.ask("10-2-0-7.ns.pod.cluster.local.", RecordType::A)
    ));
    assert!(is_nxdomain(
        &f.ask("fd00--7.ns.pod.cluster.local.", RecordType::AAAA)
    ));
    assert!(
        !f.ask("10-2-0-8.ns.pod.cluster.local.", RecordType::A)
            .answers
            .is_empty()
    );
}

fn big_headless(f: &mut Fx, n: usize) {
    let eps: Vec<String> = (0..n)
        .map(|i| format!("10.5.{}.{}", i / 250, i % 250 + 1))
        .collect();
    let eps: Vec<(&str, Option<&str>)> = eps.iter().map(|s| (s.as_str(), None)).collect();
    f.w.apply_service(&svc(
        "ns",
        "big",
        ServiceKind::Headless,
        vec![port("http", "TCP", 80)],
    ));
    f.w.apply_slice(&slice("ns", "big-1", "big", vec![port("http", "TCP", 80)], &eps));
    f.w.publish();
}

#[test]
fn truncation_keeps_what_fits_and_sets_tc() {
    let mut f = fixture();
    big_headless(&mut f, 100);
    let (m, len) = f.ask_opts("big.ns.svc.cluster.local.", RecordType::A, None, false);
    assert!(m.metadata.truncation);
    assert!(len <= 512, "{len}");
    assert!(!m.answers.is_empty() && m.answers.len() < 100);
    // EDNS raises the limit (and the OPT is echoed).
    let (m, len) = f.ask_opts("big.ns.svc.cluster.local.", RecordType::A, Some(4096), false);
    assert!(!m.metadata.truncation && len <= 4096);
    assert_eq!(m.answers.len(), 100);
    assert_eq!(m.edns.as_ref().map(|e| e.max_payload()), Some(4096));
    // A tiny advertised size still gets 512.
    let (m, len) = f.ask_opts("big.ns.svc.cluster.local.", RecordType::A, Some(100), false);
    assert!(m.metadata.truncation && len <= 512 && len > 400);
    // TCP: everything.
    big_headless(&mut f, 1000);
    let (m, _) = f.ask_opts("big.ns.svc.cluster.local.", RecordType::A, None, true);
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 1000);
    // SRV over UDP: additional records are dropped first, without TC when every SRV fits.
    let (m, _) = f.ask_opts(
        "_http._tcp.hl.ns.svc.cluster.local.",
        RecordType::SRV,
        None,
        false,
    );
    assert!(!m.metadata.truncation);
}

#[test]
fn opcodes_types_and_malformed_packets() {
    let mut f = fixture();
    // Garbage shorter than a header: dropped.
    assert_eq!(f.raw(&[1, 2, 3], false).0, Step::Drop);
    // A response is never answered (no reflection loops).
    let mut resp = query_bytes("web.ns.svc.cluster.local.", RecordType::A, None);
    resp[2] |= 0x80;
    assert_eq!(f.raw(&resp, false).0, Step::Drop);
    // A header and a broken question: FORMERR.
    let mut bad = query_bytes("web.ns.svc.cluster.local.", RecordType::A, None);
    bad.truncate(20);
    let (step, out) = f.raw(&bad, false);
    assert!(matches!(step, Step::Reply { rcode: 1, .. }));
    let m = Message::from_vec(&out).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // Two questions: FORMERR.
    let mut two = query_bytes("web.ns.svc.cluster.local.", RecordType::A, None);
    two[5] = 2;
    assert!(matches!(f.raw(&two, false).0, Step::Reply { rcode: 1, .. }));
    // UPDATE (opcode 5): NOTIMP.
    let mut upd = query_bytes("web.ns.svc.cluster.local.", RecordType::A, None);
    upd[2] |= 5 << 3;
    let (_, out) = f.raw(&upd, false);
    assert_eq!(
        Message::from_vec(&out).unwrap().metadata.response_code,
        ResponseCode::NotImp
    );
    // AXFR/IXFR: REFUSED.
    assert_eq!(
        f.ask("cluster.local.", RecordType::AXFR).metadata.response_code,
        ResponseCode::Refused
    );
    assert_eq!(
        f.ask("cluster.local.", RecordType::IXFR).metadata.response_code,
        ResponseCode::Refused
    );
    // ANY: RFC 8482 HINFO (CoreDNS's `any` plugin).
    let m = f.ask("web.ns.svc.cluster.local.", RecordType::ANY);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.answers[0].record_type(), RecordType::HINFO);
    // EDNS version 1: BADVERS.
    let mut m = Message::query();
    m.add_query(Query::query(
        Name::from_str("web.ns.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    let mut e = Edns::new();
    e.set_version(1);
    m.set_edns(e);
    let (step, out) = f.raw(&m.to_vec().unwrap(), false);
    assert!(matches!(step, Step::Reply { rcode: 16, .. }), "{step:?}");
    assert_eq!(
        u16::from(Message::from_vec(&out).unwrap().metadata.response_code),
        16
    );
}

#[test]
fn clients_outside_the_allow_list_are_refused() {
    let mut f = fixture();
    f.h = Handler::new(
        f.h.cfg.clone(),
        vec!["10.0.0.0/8".parse().unwrap()],
        Vec::new(),
        10,
        Metrics::default(),
    );
    let q = query_bytes("web.ns.svc.cluster.local.", RecordType::A, None);
    let snap = f.r.load().clone();
    let mut out = Vec::new();
    let step = f.h.local(&snap, &q, ip("127.0.0.1"), false, &mut out);
    assert!(matches!(step, Step::Reply { rcode: 5, .. }));
    assert_eq!(
        Message::from_vec(&out).unwrap().metadata.response_code,
        ResponseCode::Refused
    );
    let step =
        f.h.local(&snap, &q, IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)), false, &mut out);
    assert!(matches!(step, Step::Reply { rcode: 0, .. }));
}

#[test]
fn resolv_conf_parsing_skips_ourselves() {
    let text = "# c\nsearch x\nnameserver 127.0.0.1\nnameserver 10.0.0.2\nnameserver ::1\n";
    let ours: Vec<std::net::SocketAddr> = vec!["127.0.0.1:53".parse().unwrap()];
    let got = crate::resolv_conf_upstreams(text, &ours);
    assert_eq!(
        got,
        [
            "10.0.0.2:53".parse().unwrap(),
            "[::1]:53".parse::<std::net::SocketAddr>().unwrap()
        ]
    );
}

/// A seeded generator of packets: valid queries for zone names and then mutated.
fn seeds() -> Vec<Vec<u8>> {
    let mut v = Vec::new();
    for (n, t) in [
        ("web.ns.svc.cluster.local.", RecordType::A),
        ("_http._tcp.hl.ns.svc.cluster.local.", RecordType::SRV),
        ("ext2.ns.svc.cluster.local.", RecordType::AAAA),
        ("10.0.0.10.in-addr.arpa.", RecordType::PTR),
        ("10-2-0-5.ns.pod.cluster.local.", RecordType::A),
        ("cluster.local.", RecordType::NS),
        ("example.com.", RecordType::A),
    ] {
        v.push(query_bytes(n, t, None));
        v.push(query_bytes(n, t, Some(1232)));
    }
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, .. ProptestConfig::default() })]

    /// Whatever arrives, the query path neither panics nor answers with something undecodable or
    /// oversized.
    #[test]
    fn random_and_mutated_packets_never_panic(
        seed in 0usize..14,
        flips in proptest::collection::vec((0usize..600, any::<u8>()), 0..8),
        cut in 0usize..600,
        junk in proptest::collection::vec(any::<u8>(), 0..64),
        tcp in any::<bool>(),
    ) {
        let mut f = fixture();
        let mut pkt = seeds()[seed].clone();
        for (i, b) in flips {
            if !pkt.is_empty() {
                let i = i % pkt.len();
                pkt[i] = b;
            }
        }
        if cut < pkt.len() {
            pkt.truncate(cut.max(1));
        }
        pkt.extend_from_slice(&junk);
        let (step, out) = f.raw(&pkt, tcp);
        if let Step::Reply { .. } = step {
            let max = if tcp { 65535 } else { 4096 };
            prop_assert!(out.len() <= max);
            prop_assert!(out.len() >= 12);
            prop_assert_eq!(&out[..2], &pkt[..2]);
        }
        // Pure garbage too.
        let (step, out) = f.raw(&junk, tcp);
        if let Step::Reply { .. } = step {
            prop_assert!(out.len() >= 12);
        }
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The memory figure of BENCHMARKS.md: RSS growth of the process while the zone holds 10,000
/// Services (each with a 10-endpoint slice, so 100,000 endpoints) and 100,000 pods (verified mode),
/// writer bookkeeping included. Run with
/// `cargo test --release -p svcnet-dns --lib zone_memory -- --ignored --nocapture`.
#[test]
#[ignore]
fn zone_memory_10k_services_100k_pods() {
    let before = rss_kib();
    let mut w = ZoneWriter::new();
    for n in 0..100 {
        w.apply_namespace(&format!("ns-{n}"));
    }
    for i in 0..10_000u32 {
        let ns = format!("ns-{}", i % 100);
        let name = format!("svc-{i}");
        let cip = IpAddr::V4(Ipv4Addr::from(0x0A60_0000 + i));
        w.apply_service(&svc(
            &ns,
            &name,
            ServiceKind::ClusterIp(vec![cip]),
            vec![port("http", "TCP", 80)],
        ));
        let endpoints = (0..10u32)
            .map(|j| EndpointSpec {
                ip: IpAddr::V4(Ipv4Addr::from(0x0AF4_0000 + i * 10 + j)),
                hostname: None,
            })
            .collect();
        w.apply_slice(&SliceSpec {
            namespace: ns.clone(),
            name: format!("{name}-abcde"),
            service: name.clone(),
            ports: vec![port("http", "TCP", 8080)],
            endpoints,
        });
        for j in 0..10u32 {
            w.apply_pod(
                &ns,
                &format!("{name}-pod-{j}"),
                &[IpAddr::V4(Ipv4Addr::from(0x0AF4_0000 + i * 10 + j))],
            );
        }
    }
    w.mark_synced();
    w.publish();
    let after = rss_kib();
    let mb = (after - before) as f64 / 1024.0;
    let budget = (10_000.0 + 100_000.0) / 10_000.0 + 10.0;
    println!(
        "zone memory: {mb:.1} MB for 10,000 services + 100,000 endpoints + 100,000 pods (budget {budget} MB)"
    );
    let mut r = w.reader();
    assert_eq!(r.load().service_count(), 10_000);
}

/// Lookup cost on the zone of `zone_memory_10k_services_100k_pods` (1,000 ClusterIP Services get a
/// second, headless twin so endpoint scans are timed too): ns per query through the whole packet path
/// (parse, lookup, encode). Run with
/// `cargo test --release -p svcnet-dns --lib lookup_timing -- --ignored --nocapture`.
#[test]
#[ignore]
fn lookup_timing_10k_services_100k_pods() {
    let mut w = ZoneWriter::new();
    for n in 0..100 {
        w.apply_namespace(&format!("ns-{n}"));
    }
    for i in 0..10_000u32 {
        let ns = format!("ns-{}", i % 100);
        let name = format!("svc-{i}");
        let kind = if i % 10 == 0 {
            ServiceKind::Headless
        } else {
            ServiceKind::ClusterIp(vec![IpAddr::V4(Ipv4Addr::from(0x0A60_0000 + i))])
        };
        w.apply_service(&svc(&ns, &name, kind, vec![port("http", "TCP", 80)]));
        let endpoints = (0..10u32)
            .map(|j| EndpointSpec {
                ip: IpAddr::V4(Ipv4Addr::from(0x0AF4_0000 + i * 10 + j)),
                hostname: None,
            })
            .collect();
        w.apply_slice(&SliceSpec {
            namespace: ns.clone(),
            name: format!("{name}-abcde"),
            service: name.clone(),
            ports: vec![port("http", "TCP", 8080)],
            endpoints,
        });
        for j in 0..10u32 {
            let ip = IpAddr::V4(Ipv4Addr::from(0x0AF4_0000 + i * 10 + j));
            w.apply_pod(&ns, &format!("{name}-pod-{j}"), &[ip]);
        }
    }
    w.mark_synced();
    w.publish();
    let mut r = w.reader();
    let h = Handler::new(
        ZoneConfig {
            zone: "cluster.local".into(),
            ttl: 5,
            pods: PodsMode::Verified,
            ns_addrs: vec![ip("127.0.0.1")],
            reverse: true,
            fallthrough_reverse: true,
            fallthrough_zone: false,
        },
        Vec::new(),
        Vec::new(),
        100,
        Metrics::default(),
    );
    let snap = r.load().clone();
    type Question = Box<dyn Fn(u32) -> (String, RecordType)>;
    let kinds: [(&str, Question); 5] = [
        (
            "A ClusterIP",
            Box::new(|i| {
                (
                    format!("svc-{}.ns-{}.svc.cluster.local.", i * 10 + 1, (i * 10 + 1) % 100),
                    RecordType::A,
                )
            }),
        ),
        (
            "A headless (10 endpoints)",
            Box::new(|i| {
                (
                    format!("svc-{}.ns-{}.svc.cluster.local.", i * 10, (i * 10) % 100),
                    RecordType::A,
                )
            }),
        ),
        (
            "PTR ClusterIP",
            Box::new(|i| {
                (
                    format!("{}.{}.96.10.in-addr.arpa.", (i * 10 + 1) & 255, (i * 10 + 1) >> 8),
                    RecordType::PTR,
                )
            }),
        ),
        (
            "PTR endpoint",
            Box::new(|i| {
                (
                    {
                        let o = (0x0AF4_0000u32 + i * 97).to_be_bytes();
                        format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
                    },
                    RecordType::PTR,
                )
            }),
        ),
        (
            "A pod (verified)",
            Box::new(|i| {
                let a = 0x0AF4_0000u32 + i * 97;
                let o = a.to_be_bytes();
                (
                    format!(
                        "{}-{}-{}-{}.ns-{}.pod.cluster.local.",
                        o[0],
                        o[1],
                        o[2],
                        o[3],
                        (i * 97 / 10) % 100
                    ),
                    RecordType::A,
                )
            }),
        ),
    ];
    let mut out = Vec::with_capacity(4096);
    for (label, q) in &kinds {
        let pkts: Vec<Vec<u8>> = (0..1000)
            .map(|i| {
                let (n, t) = q(i);
                query_bytes(&n, t, None)
            })
            .collect();
        for p in &pkts {
            let step = h.local(&snap, p, ip("127.0.0.1"), false, &mut out);
            assert!(matches!(step, Step::Reply { rcode: 0, .. }), "{label}: {step:?}");
            assert!(out.len() > 12 + p.len() - 12, "{label}: no answer");
        }
        let rounds = 200;
        let t = std::time::Instant::now();
        for _ in 0..rounds {
            for p in &pkts {
                std::hint::black_box(h.local(&snap, p, ip("127.0.0.1"), false, &mut out));
            }
        }
        let ns = t.elapsed().as_nanos() as f64 / (rounds * pkts.len()) as f64;
        println!("{label}: {ns:.0} ns/query");
    }
}
