//! The netlink element writer against a real kernel, inside network namespaces of the test's own (root
//! and `nft` needed; skipped otherwise). Every check compares what the writer programmed with what `nft`
//! itself programs for the same elements, as `nft -j list` shows both; and what the reader dumps with what
//! `nft` wrote.

mod common;

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use common::netns::can_run;
use serde_json::{Value, json};
use svcnet_nft::Family;
use svcnet_nft::netlink::{
    Batch, Element, ElementData, NetlinkError, SLOTS, Writer, addr, addr_pair, addr_port, addr_proto_port,
    proto_port, slot_ranges,
};
use svcnet_testsupport::netns::Netns;

const TCP: u8 = 6;
const UDP: u8 = 17;
const ENOENT: i32 = 2;

/// The sets and maps under test; each `X2` is filled by `nft` to compare with `X` filled by the writer.
const RULESET: &str = r#"
table ip t {
  map eps { typeof meta l4proto . numgen random mod 65536 : ip daddr . tcp dport; flags interval; }
  map eps2 { typeof meta l4proto . numgen random mod 65536 : ip daddr . tcp dport; flags interval; }
  map vm { type ipv4_addr . inet_proto . inet_service : verdict; }
  map vm2 { type ipv4_addr . inet_proto . inet_service : verdict; }
  set s { type ipv4_addr . ipv4_addr; }
  set s2 { type ipv4_addr . ipv4_addr; }
  set pp { type inet_proto . inet_service; }
  set pp2 { type inet_proto . inet_service; }
  chain c { }
  chain d { }
}
table ip6 t {
  map eps { typeof meta l4proto . numgen random mod 65536 : ip6 daddr . tcp dport; flags interval; }
  map eps2 { typeof meta l4proto . numgen random mod 65536 : ip6 daddr . tcp dport; flags interval; }
  map vm { type ipv6_addr . inet_proto . inet_service : verdict; }
  map vm2 { type ipv6_addr . inet_proto . inet_service : verdict; }
  set s { type ipv6_addr . ipv6_addr; }
  set s2 { type ipv6_addr . ipv6_addr; }
  chain c { }
}
"#;

/// A network namespace with [`RULESET`] loaded; deleted on drop (also on panic).
struct Ns(Netns);

impl Ns {
    fn new() -> Ns {
        let ns = Ns(Netns::new("nl"));
        ns.nft_script(RULESET);
        ns
    }

    fn path(&self) -> PathBuf {
        self.0.path()
    }

    fn writer(&self) -> Writer {
        Writer::open(Some(&self.path())).expect("open netlink socket in the namespace")
    }

    fn nft_script(&self, script: &str) {
        self.0.exec_with_input(&["nft", "-f", "-"], Some(script));
    }

    /// The elements of `family t name` as nft lists them (JSON), sorted.
    fn elems(&self, family: &str, name: &str) -> Vec<Value> {
        let kind = if name.starts_with("eps") || name.starts_with("vm") {
            "map"
        } else {
            "set"
        };
        let out = self.0.exec(&["nft", "-j", "list", kind, family, "t", name]);
        let v: Value = serde_json::from_str(&out).unwrap();
        let obj = v["nftables"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|o| o.get(kind))
            .unwrap_or_else(|| panic!("no {kind} in {out}"));
        let mut elems = obj["elem"].as_array().cloned().unwrap_or_default();
        elems.sort_by_key(|e| e.to_string());
        elems
    }

    /// Asserts that `name` (written by netlink) and `name2` (written by nft) hold the same elements, and
    /// returns them.
    fn same(&self, family: &str, name: &str) -> Vec<Value> {
        let ours = self.elems(family, name);
        let nfts = self.elems(family, &format!("{name}2"));
        assert_eq!(
            ours, nfts,
            "{family} t {name} (netlink) differs from {name}2 (nft)"
        );
        ours
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn targets(list: &[(&str, u16)]) -> Vec<Vec<u8>> {
    list.iter().map(|(a, p)| addr_port(ip(a), *p)).collect()
}

/// The JSON `nft -j list map` prints for the range element `tcp . FIRST-LAST : IP . PORT`.
fn range(first: u32, last: u32, ip: &str, port: u16) -> Value {
    json!([{"concat": ["tcp", {"range": [first, last]}]}, {"concat": [ip, port]}])
}

/// `elements` without their data, as a delete may send them.
fn keys_only(elements: &[Element]) -> Vec<Element> {
    elements
        .iter()
        .map(|e| Element {
            data: None,
            ..e.clone()
        })
        .collect()
}

#[test]
fn interval_map_ranges_match_nft() {
    if !can_run("interval_map_ranges_match_nft") {
        return;
    }
    let ns = Ns::new();
    let mut w = ns.writer();

    let first = slot_ranges(
        TCP,
        &targets(&[("10.0.0.1", 80), ("10.0.0.2", 80), ("10.0.0.3", 8080)]),
    );
    assert_eq!(first.len(), 3);
    let mut b = Batch::new();
    b.add(Family::V4, "t", "eps", first.clone());
    assert_eq!(b.len(), 3);
    w.commit(&b).unwrap();
    ns.nft_script(
        "add element ip t eps2 { tcp . 0-21844 : 10.0.0.1 . 80, tcp . 21845-43689 : 10.0.0.2 . 80, \
         tcp . 43690-65535 : 10.0.0.3 . 8080 }",
    );
    let got = ns.same("ip", "eps");
    assert_eq!(
        got,
        [
            range(0, 21844, "10.0.0.1", 80),
            range(21845, 43689, "10.0.0.2", 80),
            range(43690, 65535, "10.0.0.3", 8080),
        ]
    );

    // One batch: the old ranges go, two new ones come (the first starts where the old first did).
    let second = slot_ranges(TCP, &targets(&[("10.0.0.4", 443), ("10.0.0.5", 443)]));
    let mut b = Batch::new();
    b.delete(Family::V4, "t", "eps", keys_only(&first));
    b.add(Family::V4, "t", "eps", second.clone());
    assert_eq!(b.len(), 5);
    w.commit(&b).unwrap();
    ns.nft_script(
        "flush map ip t eps2\n\
         add element ip t eps2 { tcp . 0-32767 : 10.0.0.4 . 443, tcp . 32768-65535 : 10.0.0.5 . 443 }",
    );
    let got = ns.same("ip", "eps");
    assert_eq!(
        got,
        [
            range(0, 32767, "10.0.0.4", 443),
            range(32768, 65535, "10.0.0.5", 443)
        ]
    );

    // Deleting with the data still attached works too (the kernel finds elements by key).
    let mut b = Batch::new();
    b.delete(Family::V4, "t", "eps", second);
    w.commit(&b).unwrap();
    assert!(ns.elems("ip", "eps").is_empty());
}

/// 1 target → 2 targets → 1 target, each in one batch: the deleted and the added ranges start at the same
/// key (`tcp . 0`) but end differently, so the kernel must retire the old element and insert the new one
/// in the same transaction.
#[test]
fn ranges_with_the_same_first_key_replace_in_one_batch() {
    if !can_run("ranges_with_the_same_first_key_replace_in_one_batch") {
        return;
    }
    let ns = Ns::new();
    let mut w = ns.writer();
    let one = slot_ranges(TCP, &targets(&[("10.0.0.1", 80)]));
    let two = slot_ranges(TCP, &targets(&[("10.0.0.1", 80), ("10.0.0.2", 80)]));
    assert_eq!(one[0].key, two[0].key);
    assert_ne!(one[0].key_end, two[0].key_end);

    let mut b = Batch::new();
    b.add(Family::V4, "t", "eps", one.clone());
    w.commit(&b).unwrap();
    ns.nft_script("add element ip t eps2 { tcp . 0-65535 : 10.0.0.1 . 80 }");
    assert_eq!(ns.same("ip", "eps"), [range(0, 65535, "10.0.0.1", 80)]);

    let mut b = Batch::new();
    b.delete(Family::V4, "t", "eps", keys_only(&one));
    b.add(Family::V4, "t", "eps", two.clone());
    w.commit(&b).unwrap();
    ns.nft_script(
        "delete element ip t eps2 { tcp . 0-65535 }\n\
         add element ip t eps2 { tcp . 0-32767 : 10.0.0.1 . 80, tcp . 32768-65535 : 10.0.0.2 . 80 }",
    );
    assert_eq!(
        ns.same("ip", "eps"),
        [
            range(0, 32767, "10.0.0.1", 80),
            range(32768, 65535, "10.0.0.2", 80)
        ]
    );

    let mut b = Batch::new();
    b.delete(Family::V4, "t", "eps", two);
    b.add(Family::V4, "t", "eps", one);
    w.commit(&b).unwrap();
    ns.nft_script(
        "delete element ip t eps2 { tcp . 0-32767, tcp . 32768-65535 }\n\
         add element ip t eps2 { tcp . 0-65535 : 10.0.0.1 . 80 }",
    );
    assert_eq!(ns.same("ip", "eps"), [range(0, 65535, "10.0.0.1", 80)]);
}

#[test]
fn verdict_maps_and_concatenated_sets_match_nft() {
    if !can_run("verdict_maps_and_concatenated_sets_match_nft") {
        return;
    }
    let ns = Ns::new();
    let mut w = ns.writer();
    let vm = vec![
        Element::map(
            addr_proto_port(ip("10.96.0.1"), TCP, 80),
            ElementData::Goto("c".into()),
        ),
        Element::map(
            addr_proto_port(ip("10.96.0.2"), UDP, 53),
            ElementData::Jump("d".into()),
        ),
        Element::map(addr_proto_port(ip("10.96.0.3"), TCP, 443), ElementData::Drop),
        Element::map(addr_proto_port(ip("10.96.0.4"), TCP, 8443), ElementData::Accept),
    ];
    let s = vec![
        Element::key(addr_pair(ip("10.0.0.1"), ip("10.0.0.1"))),
        Element::key(addr_pair(ip("10.0.0.2"), ip("192.168.1.2"))),
    ];
    let pp = vec![
        Element::key(proto_port(TCP, 30000)),
        Element::key(proto_port(UDP, 31000)),
    ];
    let mut b = Batch::new();
    b.add(Family::V4, "t", "vm", vm.clone());
    b.add(Family::V4, "t", "s", s.clone());
    b.add(Family::V4, "t", "pp", pp.clone());
    w.commit(&b).unwrap();
    ns.nft_script(
        "add element ip t vm2 { 10.96.0.1 . tcp . 80 : goto c, 10.96.0.2 . udp . 53 : jump d, \
         10.96.0.3 . tcp . 443 : drop, 10.96.0.4 . tcp . 8443 : accept }\n\
         add element ip t s2 { 10.0.0.1 . 10.0.0.1, 10.0.0.2 . 192.168.1.2 }\n\
         add element ip t pp2 { tcp . 30000, udp . 31000 }\n",
    );
    let got = ns.same("ip", "vm");
    assert_eq!(got.len(), 4);
    assert!(got.contains(&json!([{"concat": ["10.96.0.1", "tcp", 80]}, {"goto": {"target": "c"}}])));
    assert_eq!(ns.same("ip", "s").len(), 2);
    assert_eq!(
        ns.same("ip", "pp"),
        [
            json!({"concat": ["tcp", 30000]}),
            json!({"concat": ["udp", 31000]})
        ]
    );

    // Adding what is there already is fine (NLM_F_CREATE without NLM_F_EXCL, as `nft add element`).
    w.commit(&b).unwrap();
    assert_eq!(ns.elems("ip", "vm").len(), 4);

    let mut b = Batch::new();
    b.delete(
        Family::V4,
        "t",
        "vm",
        vm[..2].iter().map(|e| Element::key(e.key.clone())).collect(),
    );
    b.delete(Family::V4, "t", "s", s);
    b.delete(Family::V4, "t", "pp", pp);
    w.commit(&b).unwrap();
    ns.nft_script(
        "delete element ip t vm2 { 10.96.0.1 . tcp . 80, 10.96.0.2 . udp . 53 }\n\
         flush set ip t s2\nflush set ip t pp2\n",
    );
    assert_eq!(ns.same("ip", "vm").len(), 2);
    assert!(ns.elems("ip", "s").is_empty());
    assert!(ns.elems("ip", "pp").is_empty());
}

#[test]
fn ipv6_elements_match_nft() {
    if !can_run("ipv6_elements_match_nft") {
        return;
    }
    let ns = Ns::new();
    let mut w = ns.writer();
    let mut b = Batch::new();
    b.add(
        Family::V6,
        "t",
        "eps",
        slot_ranges(TCP, &targets(&[("fd00:10:244::1", 80), ("fd00:10:244::2", 8080)])),
    );
    b.add(
        Family::V6,
        "t",
        "vm",
        vec![Element::map(
            addr_proto_port(ip("fd00:10:96::1"), TCP, 80),
            ElementData::Goto("c".into()),
        )],
    );
    b.add(
        Family::V6,
        "t",
        "s",
        vec![Element::key(addr_pair(ip("fd00::1"), ip("fd00::2")))],
    );
    w.commit(&b).unwrap();
    ns.nft_script(
        "add element ip6 t eps2 { tcp . 0-32767 : fd00:10:244::1 . 80, tcp . 32768-65535 : fd00:10:244::2 . 8080 }\n\
         add element ip6 t vm2 { fd00:10:96::1 . tcp . 80 : goto c }\n\
         add element ip6 t s2 { fd00::1 . fd00::2 }\n",
    );
    assert_eq!(
        ns.same("ip6", "eps"),
        [
            range(0, 32767, "fd00:10:244::1", 80),
            range(32768, 65535, "fd00:10:244::2", 8080)
        ]
    );
    assert_eq!(ns.same("ip6", "vm").len(), 1);
    assert_eq!(ns.same("ip6", "s").len(), 1);
    assert_eq!(addr(ip("fd00::1")).len(), 16);
    // The ip table's sets of the same names are untouched.
    assert!(ns.elems("ip", "eps").is_empty());
}

#[test]
fn a_failing_batch_changes_nothing() {
    if !can_run("a_failing_batch_changes_nothing") {
        return;
    }
    let ns = Ns::new();
    let mut w = ns.writer();
    let mut b = Batch::new();
    b.add(Family::V4, "t", "pp", vec![Element::key(proto_port(TCP, 1))]);
    b.add(
        Family::V4,
        "t",
        "eps",
        slot_ranges(TCP, &targets(&[("10.0.0.1", 80)])),
    );
    w.commit(&b).unwrap();
    let pp_before = ns.elems("ip", "pp");
    let eps_before = ns.elems("ip", "eps");

    // A valid add, then a delete of an element that is not there: ENOENT, and the add did not happen.
    let mut b = Batch::new();
    b.add(Family::V4, "t", "pp", vec![Element::key(proto_port(TCP, 1234))]);
    b.delete(
        Family::V4,
        "t",
        "eps",
        slot_ranges(TCP, &targets(&[("10.0.0.1", 80)])),
    );
    b.add(
        Family::V4,
        "t",
        "eps",
        slot_ranges(TCP, &targets(&[("10.0.0.2", 80), ("10.0.0.3", 80)])),
    );
    b.delete(Family::V4, "t", "pp", vec![Element::key(proto_port(UDP, 9999))]);
    b.add(Family::V4, "t", "pp", vec![Element::key(proto_port(TCP, 5678))]);
    let err = w.commit(&b).unwrap_err();
    eprintln!("failing batch: {err}");
    match &err {
        NetlinkError::Kernel {
            op,
            set,
            errno,
            message,
        } => {
            assert_eq!(*errno, ENOENT);
            assert_eq!(op, "delete element");
            assert_eq!(set, "ip t pp");
            assert!(!message.is_empty());
        }
        other => panic!("expected a kernel error, got {other:?}"),
    }
    assert_eq!(ns.elems("ip", "pp"), pp_before);
    assert_eq!(ns.elems("ip", "eps"), eps_before);

    // A set or a chain that does not exist.
    let mut b = Batch::new();
    b.add(
        Family::V4,
        "t",
        "nosuchset",
        vec![Element::key(proto_port(TCP, 1))],
    );
    let err = w.commit(&b).unwrap_err();
    assert!(matches!(&err, NetlinkError::Kernel { errno: ENOENT, set, .. } if set == "ip t nosuchset"));
    let mut b = Batch::new();
    b.add(
        Family::V4,
        "t",
        "vm",
        vec![Element::map(
            addr_proto_port(ip("10.96.0.1"), TCP, 80),
            ElementData::Goto("nosuchchain".into()),
        )],
    );
    let err = w.commit(&b).unwrap_err();
    assert!(
        matches!(&err, NetlinkError::Kernel { errno: ENOENT, .. }),
        "{err}"
    );
    // A key of the wrong length.
    let mut b = Batch::new();
    b.add(Family::V4, "t", "pp", vec![Element::key(vec![1, 2, 3])]);
    let err = w.commit(&b).unwrap_err();
    eprintln!("wrong key length: {err}");
    assert!(matches!(&err, NetlinkError::Kernel { .. }), "{err}");

    // The writer is still good after failures.
    let mut b = Batch::new();
    b.add(Family::V4, "t", "pp", vec![Element::key(proto_port(TCP, 4321))]);
    w.commit(&b).unwrap();
    assert_eq!(ns.elems("ip", "pp").len(), pp_before.len() + 1);
}

#[test]
fn large_batches() {
    if !can_run("large_batches") {
        return;
    }
    let ns = Ns::new();
    let mut w = ns.writer();
    let elems: Vec<Element> = (0..5000u32)
        .map(|i| {
            Element::key(addr_pair(
                ip("10.0.0.1"),
                IpAddr::from((0x0a01_0000u32 + i).to_be_bytes()),
            ))
        })
        .collect();
    let mut b = Batch::new();
    b.add(Family::V4, "t", "s", elems.clone());
    let start = Instant::now();
    w.commit(&b).unwrap();
    eprintln!("5,000-element add: {:?}", start.elapsed());
    let got = ns.elems("ip", "s");
    assert_eq!(got.len(), 5000);
    assert!(got.contains(&json!({"concat": ["10.0.0.1", "10.1.19.135"]}))); // 0x0a01_0000 + 4999

    // 5,000 map elements with verdicts and a large batch over many sets.
    let vm: Vec<Element> = (0..5000u32)
        .map(|i| {
            Element::map(
                addr_proto_port(IpAddr::from((0x0a60_0000u32 + i).to_be_bytes()), TCP, 80),
                ElementData::Goto("c".into()),
            )
        })
        .collect();
    let mut b = Batch::new();
    b.delete(Family::V4, "t", "s", elems);
    for chunk in vm.chunks(10) {
        b.add(Family::V4, "t", "vm", chunk.to_vec());
    }
    let start = Instant::now();
    w.commit(&b).unwrap();
    eprintln!("5,000 deletes + 500 messages of 10 adds: {:?}", start.elapsed());
    assert!(ns.elems("ip", "s").is_empty());
    assert_eq!(ns.elems("ip", "vm").len(), 5000);
}

#[test]
fn replace_latency() {
    if !can_run("replace_latency") {
        return;
    }
    let ns = Ns::new();
    let mut w = ns.writer();
    let mut current = slot_ranges(TCP, &targets(&[("10.0.0.1", 80)]));
    let mut b = Batch::new();
    b.add(Family::V4, "t", "eps", current.clone());
    w.commit(&b).unwrap();
    let mut times = Vec::new();
    for i in 0..200u32 {
        let next = slot_ranges(
            TCP,
            &[addr_port(IpAddr::from((0x0a00_0100u32 + i).to_be_bytes()), 80)],
        );
        let mut b = Batch::new();
        b.delete(Family::V4, "t", "eps", current);
        b.add(Family::V4, "t", "eps", next.clone());
        let start = Instant::now();
        w.commit(&b).unwrap();
        times.push(start.elapsed());
        current = next;
    }
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    eprintln!(
        "single-range replace commit over netlink: p50 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.99),
        times.last().unwrap()
    );
    assert_eq!(ns.elems("ip", "eps"), [range(0, SLOTS - 1, "10.0.1.199", 80)]);
    // For comparison: the same replace through `nft -f` (informational).
    let start = Instant::now();
    for i in 0..20 {
        ns.nft_script(&format!(
            "delete element ip t eps {{ tcp . 0-65535 }}\nadd element ip t eps {{ tcp . 0-65535 : 10.0.2.{i} . 80 }}\n"
        ));
    }
    eprintln!(
        "same through `ip netns exec nft -f`: {:?} each",
        start.elapsed() / 20
    );
}

#[test]
fn open_leaves_the_callers_namespace_alone() {
    if !can_run("open_leaves_the_callers_namespace_alone") {
        return;
    }
    let before = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let ns = Ns::new();
    let mut w = ns.writer();
    assert_eq!(std::fs::read_link("/proc/thread-self/ns/net").unwrap(), before);
    w.commit(&Batch::new()).unwrap();
    let err = Writer::open(Some(&PathBuf::from("/run/netns/svcnet-nl-does-not-exist"))).unwrap_err();
    assert!(matches!(err, NetlinkError::Netns { .. }), "{err}");
    // The current namespace's socket opens too (nothing is sent on it).
    Writer::open(None).unwrap();
}

/// The ruleset generation counts every committed transaction in the namespace, ours (a netlink batch)
/// and anyone else's (`nft`), and nothing else: a failed transaction and a read leave it alone.
#[test]
fn generation_counts_every_commit_in_the_namespace() {
    if !can_run("generation_counts_every_commit_in_the_namespace") {
        return;
    }
    let ns = Ns::new();
    let mut w = ns.writer();
    let g0 = w.generation().unwrap();
    assert_eq!(w.generation().unwrap(), g0, "reading changes nothing");
    let mut b = Batch::new();
    b.add(
        Family::V4,
        "t",
        "s",
        vec![Element::key(addr_pair(ip("10.0.0.1"), ip("10.0.0.1")))],
    );
    w.commit(&b).unwrap();
    assert_eq!(w.generation().unwrap(), g0.wrapping_add(1), "our batch");
    ns.nft_script("add chain ip t e\n");
    assert_eq!(
        w.generation().unwrap(),
        g0.wrapping_add(2),
        "someone else's transaction"
    );
    let mut bad = Batch::new();
    bad.add(
        Family::V4,
        "t",
        "nosuchset",
        vec![Element::key(addr(ip("10.0.0.1")))],
    );
    assert!(w.commit(&bad).is_err());
    assert_eq!(
        w.generation().unwrap(),
        g0.wrapping_add(2),
        "a failed batch commits nothing"
    );
    // Another namespace's commits are not counted here.
    let other = Ns::new();
    other.nft_script("add chain ip t e\n");
    assert_eq!(w.generation().unwrap(), g0.wrapping_add(2));
}

/// Reading back (what a takeover compares): the elements `nft` wrote come back as the bytes the writer
/// encodes for them; tables, chains with their hooks, and rules with their comment, the sets they look
/// up and their `numgen` offset come back as `nft` made them; a set that does not exist is the kernel's
/// ENOENT.
#[test]
fn tables_read_back_as_nft_wrote_them() {
    if !can_run("tables_read_back_as_nft_wrote_them") {
        return;
    }
    let ns = Ns::new();
    ns.nft_script(
        "add element ip t eps2 { tcp . 0-32767 : 10.0.0.1 . 80, tcp . 32768-65535 : 10.0.0.2 . 8080 }\n\
         add element ip t vm2 { 10.96.0.1 . tcp . 80 : goto c, 10.96.0.2 . udp . 53 : jump d }\n\
         add element ip t s2 { 10.0.0.1 . 10.0.0.1 }\n\
         add chain ip t nat-out { type nat hook output priority -100; policy accept; }\n\
         add rule ip t c meta l4proto tcp dnat ip to meta l4proto . numgen random mod 65536 offset 131072 map @eps2 comment \"svcnet:ABC\"\n\
         add rule ip t d ip daddr . meta l4proto . th dport vmap @vm2\n\
         add rule ip t d ip saddr . ip daddr @s2 accept\n\
         add rule ip t nat-out jump c\n",
    );
    let mut w = ns.writer();
    let sorted = |mut v: Vec<Element>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(w.elements(Family::V4, "t", "eps2").unwrap()),
        sorted(slot_ranges(
            TCP,
            &targets(&[("10.0.0.1", 80), ("10.0.0.2", 8080)])
        ))
    );
    assert_eq!(
        sorted(w.elements(Family::V4, "t", "vm2").unwrap()),
        sorted(vec![
            Element::map(
                addr_proto_port(ip("10.96.0.1"), TCP, 80),
                ElementData::Goto("c".into())
            ),
            Element::map(
                addr_proto_port(ip("10.96.0.2"), UDP, 53),
                ElementData::Jump("d".into())
            ),
        ])
    );
    assert_eq!(
        w.elements(Family::V4, "t", "s2").unwrap(),
        [Element::key(addr_pair(ip("10.0.0.1"), ip("10.0.0.1")))]
    );
    assert!(w.elements(Family::V4, "t", "s").unwrap().is_empty());
    match w.elements(Family::V4, "t", "nonesuch") {
        Err(NetlinkError::Kernel { errno, .. }) => assert_eq!(errno, ENOENT),
        other => panic!("{other:?}"),
    }

    assert!(w.tables(Family::V4).unwrap().contains(&"t".to_string()));
    assert!(w.tables(Family::V6).unwrap().contains(&"t".to_string()));
    let chains = w.chains(Family::V4, "t").unwrap();
    let names: Vec<&str> = chains.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let hook = |name: &str| chains.iter().find(|c| c.name == name).unwrap().hook.clone();
    assert_eq!(hook("c"), None);
    let nat = hook("nat-out").expect("a base chain");
    assert_eq!(
        (nat.chain_type.as_str(), nat.hook, nat.priority, nat.policy),
        ("nat", 3, -100, 1)
    );

    let rules = w.rules(Family::V4, "t").unwrap();
    let of = |chain: &str| rules.iter().filter(|r| r.chain == chain).collect::<Vec<_>>();
    let c = of("c");
    assert_eq!(c.len(), 1);
    assert_eq!(c[0].comment.as_deref(), Some("svcnet:ABC"));
    assert_eq!(c[0].lookups, ["eps2"]);
    assert_eq!(c[0].numgen_offset, Some(2 * SLOTS));
    let d = of("d");
    assert_eq!(d.len(), 2);
    assert_eq!(d[0].lookups, ["vm2"]);
    assert_eq!(d[1].lookups, ["s2"]);
    assert!(d.iter().all(|r| r.comment.is_none() && r.numgen_offset.is_none()));
    assert_eq!(of("nat-out").len(), 1);
    // The other family's table is not in this one's dump.
    assert!(w.rules(Family::V6, "t").unwrap().is_empty());
}
