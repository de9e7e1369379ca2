//! Fuzz target: arbitrary bytes into the DNS server's query path (parse, lookup, answer), over UDP and
//! TCP limits, against a small zone with every kind of record. It must never panic, and every answer
//! must carry the query's id. Run with `cargo +nightly fuzz run query` from `crates/svcnet-dns/fuzz`;
//! see `README.md` there for the last run's result.

#![no_main]

use std::cell::RefCell;
use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use svcnet_dns::server::{Handler, Step};
use svcnet_dns::zone::{EndpointSpec, PortSpec, ServiceKind, ServiceSpec, SliceSpec};
use svcnet_dns::{Metrics, PodsMode, ZoneConfig, ZoneReader, ZoneWriter};

fn port(name: &str, port: i32) -> PortSpec {
    PortSpec {
        name: name.into(),
        protocol: "TCP".into(),
        port,
    }
}

fn setup() -> (ZoneWriter, ZoneReader, Handler) {
    let mut w = ZoneWriter::new();
    w.apply_namespace("ns");
    let svc = |name: &str, kind| ServiceSpec {
        namespace: "ns".into(),
        name: name.into(),
        kind,
        ports: vec![port("http", 80)],
    };
    w.apply_service(&svc(
        "web",
        ServiceKind::ClusterIp(vec!["10.0.0.1".parse().unwrap(), "fd00::1".parse().unwrap()]),
    ));
    w.apply_service(&svc("hl", ServiceKind::Headless));
    w.apply_service(&svc("ext", ServiceKind::ExternalName("web.ns.svc.cluster.local".into())));
    w.apply_service(&svc("out", ServiceKind::ExternalName("example.com".into())));
    w.apply_slice(&SliceSpec {
        namespace: "ns".into(),
        name: "hl-1".into(),
        service: "hl".into(),
        ports: vec![port("http", 8080)],
        endpoints: (1..=60u8)
            .map(|i| EndpointSpec {
                ip: IpAddr::from([10, 1, 0, i]),
                hostname: (i % 2 == 0).then(|| format!("h{i}")),
            })
            .collect(),
    });
    w.apply_pod("ns", "p", &["10.2.0.1".parse().unwrap()]);
    w.mark_synced();
    w.publish();
    let r = w.reader();
    let h = Handler::new(
        ZoneConfig {
            zone: "cluster.local".into(),
            ttl: 5,
            pods: PodsMode::Verified,
            ns_addrs: vec!["127.0.0.1".parse().unwrap()],
            reverse: true,
            fallthrough_reverse: true,
            fallthrough_zone: false,
        },
        Vec::new(),
        Vec::new(),
        10,
        Metrics::default(),
    );
    (w, r, h)
}

thread_local! {
    static FX: RefCell<(ZoneWriter, ZoneReader, Handler)> = RefCell::new(setup());
}

fuzz_target!(|data: &[u8]| {
    FX.with(|fx| {
        let (_, r, h) = &mut *fx.borrow_mut();
        let snap = r.load().clone();
        let mut out = Vec::new();
        for tcp in [false, true] {
            if let Step::Reply { .. } = h.local(&snap, data, "127.0.0.1".parse().unwrap(), tcp, &mut out) {
                assert!(out.len() >= 12 && out[..2] == data[..2]);
                assert!(tcp || out.len() <= 4096);
            }
        }
    });
});
