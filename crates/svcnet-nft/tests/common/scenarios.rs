//! Traffic scenarios both IP families run the same way (`traffic.rs`, `traffic_ipv6.rs`): only the
//! addresses differ.

use std::sync::Arc;
use std::time::Duration;

use svcnet_dataplane::{Backend, Change, Endpoint, Protocol, ServicePort};

use super::netns::{Lab, lab_config};
use super::svc_port;

/// The pods' endpoints of one family: `(pods, the ones local to the node)`.
pub type PodEps = fn(&[usize], &[usize]) -> Vec<Endpoint>;

/// A UDP client keeps one flow to `cip:53`; its endpoint is replaced while the old pod still answers.
/// Only conntrack cleanup moves the flow: without it the old DNAT lives as long as the client sends.
pub fn udp_flow_follows_endpoint_change(lab: &Lab, cip: &str, eps: PodEps) {
    let mut b = lab.backend(lab_config());
    let make = |pod: usize| Arc::new(svc_port("dns", Protocol::Udp, cip, 53, eps(&[pod], &[pod])));
    let v1 = make(0);
    b.sync_all(std::slice::from_ref(&v1)).unwrap();
    let client = lab.spawn_client(&["udp", cip, "53", "3"]);
    std::thread::sleep(Duration::from_millis(1000));
    b.apply(&[Change::Upsert {
        old: Some(v1),
        new: make(1),
    }])
    .unwrap();
    let r = client.finish();
    assert!(r.hits.get("pod0").is_some_and(|&n| n > 10), "{r:?}");
    let tail: Vec<&String> = r.seq.iter().rev().take(20).collect();
    assert!(
        tail.iter().all(|p| *p == "pod1"),
        "flow still goes to the old endpoint: {r:?}"
    );
}

/// Connections to `cip:80` keep succeeding while the endpoint set changes every 100 ms.
pub fn connections_survive_updates(lab: &Lab, cip: &str, eps: PodEps) {
    let mut b = lab.backend(lab_config());
    let make = |pods: &[usize]| Arc::new(svc_port("busy", Protocol::Tcp, cip, 80, eps(pods, &[])));
    let sets: [&[usize]; 4] = [&[0, 1, 2], &[1, 2], &[0, 2], &[0]];
    let mut cur: Arc<ServicePort> = make(sets[0]);
    b.sync_all(std::slice::from_ref(&cur)).unwrap();
    let client = lab.spawn_client(&["load", cip, "80", "3"]);
    for i in 1..=25 {
        std::thread::sleep(Duration::from_millis(100));
        let next = make(sets[i % sets.len()]);
        b.apply(&[Change::Upsert {
            old: Some(cur),
            new: next.clone(),
        }])
        .unwrap();
        cur = next;
    }
    let r = client.finish();
    assert_eq!(r.failed(), 0, "{r:?}");
    assert!(r.ok() > 100, "{r:?}");
    assert_eq!(r.hits.len(), 3, "{r:?}");
}
