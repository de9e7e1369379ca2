//! L2 announcement from the all-in-one `svcnet up` (root only), over IPv4 and IPv6, on the interfaces
//! `--lb-interfaces` names and no other.
//!
//! The test builds its own small network: `svcnet up --pod-network netns` runs in a node namespace with
//! three veth links, `eth0`, `eth1` and `eth2`, each to a client namespace of its own (`a`, `b`, `c`, a
//! segment each, all with the same dual-stack subnet 172.31.0.0/24 and fd31::/64), and is told
//! `--lb-interfaces eth0,eth2`. A dual-stack LoadBalancer Service asks for 172.31.0.200 and fd31::200.
//! It checks: the node holds the Service's Lease; on taking it, it sends a gratuitous ARP and an
//! unsolicited neighbour advertisement (a capture in `a` sees both, to all nodes, Override set, the
//! advertisement from the link's link-local address) which
//! replace the stale neighbour entries `a` had for both addresses with the node's MAC; ARP requests and
//! neighbour solicitations are answered on eth0 and eth2 with each link's own MAC and never on eth1;
//! `a`'s TCP connections to both addresses are refused by the node's kernel (they are local there);
//! deleting the Service stops every answer and removes the node's local
//! routes for them. A second test leaves `--lb-interfaces` out: `up --pod-network netns` with its API
//! (and so its node address) on eth0 announces there by default, and not on eth1. A third makes the
//! client deaf to the takeover's first announcements (nftables on its ingress) and checks that a later
//! one still moves its entries. A fourth starts the agent while the node's link has no link-local
//! address and checks that the advertisements come from the one the link has when they are sent.
//!
//! The clients' links have IPv6 configured before anything is announced (as a client that talked to
//! a previous holder has): on a veth just come up it can take the kernel a second or more, and until
//! then an advertisement to all nodes has no route there and is dropped.
//!
//! Every frame stays inside the namespaces the test creates. Without root (or without iproute2 or
//! python3; the third also nft) a test says it is skipped and passes.

use std::time::Duration;

use svcnet_testsupport::neighbours::{Capture, answers};
use svcnet_testsupport::netns::{Namespaces, Netns, can_run, command_in, have};
use svcnet_testsupport::{Cluster, eventually};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(60);
const VIP4: &str = "172.31.0.200";
const VIP6: &str = "fd31::200";
/// The clients' own addresses (each client is alone on its segment with the node).
const CLIENT4: &str = "172.31.0.2";
const CLIENT6: &str = "fd31::2";
/// A MAC nobody has: the clients' stale neighbour entries point there before the announcement.
const STALE_MAC: &str = "02:00:00:00:00:99";

const SERVICE: &str = r#"{"apiVersion": "v1", "kind": "Service",
 "metadata": {"name": "edge", "namespace": "default",
  "annotations": {"svcnet.io/load-balancer-ips": "172.31.0.200,fd31::200"}},
 "spec": {"type": "LoadBalancer", "ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv4", "IPv6"],
  "ports": [{"port": 80}]}}"#;

fn mac(ns: &Netns, dev: &str) -> String {
    ns.exec(&["cat", &format!("/sys/class/net/{dev}/address")])
        .trim()
        .to_string()
}

/// The IPv6 link-local address of `dev` in `ns`.
fn link_local(ns: &Netns, dev: &str) -> String {
    let out = ns.exec(&["ip", "-6", "-o", "addr", "show", "dev", dev, "scope", "link"]);
    let addr = out.split_whitespace().skip_while(|w| *w != "inet6").nth(1);
    addr.and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string()
}

/// `ip neigh show IP` in `ns`: `… lladdr MAC STATE`, or empty.
fn neighbour(ns: &Netns, ip: &str) -> String {
    ns.exec(&["ip", "neigh", "show", ip]).trim().to_string()
}

fn holder(c: &Cluster) -> Option<String> {
    let out = c.kubectl_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["get", "lease", "svcnet-lb-edge", "-o", "json"],
        None,
    );
    let lease: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_string)
}

/// The node's namespace with `n` veth links `eth0…`, each to a client namespace of its own (eth0 there,
/// 172.31.0.2/24 and fd31::2/64); the node has 172.31.0.1/24 and fd31::1/64 on eth0 only. Also the
/// node's MAC on each link.
fn network(n: usize) -> (Namespaces, Vec<Netns>, Vec<String>) {
    let ns = Namespaces::create();
    let node = &ns.node;
    node.no_dad();
    let clients: Vec<Netns> = (0..n).map(|i| Netns::new(&format!("cl{i}"))).collect();
    for (i, client) in clients.iter().enumerate() {
        client.no_dad();
        // Made in the node's namespace, the peer moved straight into the client's.
        node.ip(&[
            "link",
            "add",
            &format!("eth{i}"),
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &client.name,
        ]);
        node.ip(&["link", "set", &format!("eth{i}"), "up"]);
        client.ip(&["addr", "add", &format!("{CLIENT4}/24"), "dev", "eth0"]);
        client.addr6(&format!("{CLIENT6}/64"), "eth0");
        client.ip(&["link", "set", "eth0", "up"]);
    }
    // The node's address on eth0 only: the segment it routes replies to.
    node.ip(&["addr", "add", "172.31.0.1/24", "dev", "eth0"]);
    node.addr6("fd31::1/64", "eth0");
    // Every link's IPv6 configured, as on a client that talked to a previous holder: until the kernel
    // has seen a new veth up, multicast to it has no route and the takeover's advertisements would only
    // be heard from the second one on.
    for (i, client) in clients.iter().enumerate() {
        node.wait_ipv6_ready(&format!("eth{i}"));
        client.wait_ipv6_ready("eth0");
    }
    let macs: Vec<String> = (0..n).map(|i| mac(node, &format!("eth{i}"))).collect();
    (ns, clients, macs)
}

fn skip() -> bool {
    if let Err(why) = can_run() {
        eprintln!("skipped: {why}");
        return true;
    }
    if !have("python3", "--version") {
        eprintln!("skipped: needs python3");
        return true;
    }
    false
}

/// `svcnet up` as node `edge-node` in the node namespace `netns`, dual-stack, no data plane, LoadBalancer
/// pools of both families, announcing on `interfaces`.
fn start_edge(netns: &str, interfaces: &str) -> Cluster {
    Cluster::start_in_netns(
        SVCNET,
        netns,
        &[
            "--node-name",
            "edge-node",
            "--pod-network",
            "netns",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--service-cidr",
            "10.96.0.0/12,fd96::/112",
            "--proxy-mode",
            "none",
            "--lb-pool",
            "172.31.0.200-172.31.0.210",
            "--lb-pool",
            "fd31::200-fd31::20f",
            "--lb-interfaces",
            interfaces,
        ],
    )
}

#[test]
fn up_announces_ipv4_and_ipv6_on_the_lb_interfaces_only() {
    if skip() {
        return;
    }
    let (ns, clients, macs) = network(3);
    let node = &ns.node;
    let (a, b, c3) = (&clients[0], &clients[1], &clients[2]);

    let c = start_edge(&node.name, "eth0,eth2");
    // Stale entries for both addresses, as a client that talked to a previous holder has.
    for ip in [VIP4, VIP6] {
        a.ip(&[
            "neigh", "replace", ip, "lladdr", STALE_MAC, "dev", "eth0", "nud", "stale",
        ]);
    }
    let capture = Capture::start(&a.name);
    c.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["apply", "-f", "-"],
        Some(SERVICE),
    );
    let mut ingress = serde_json::Value::Null;
    assert!(
        eventually(WAIT, || {
            ingress = c.get_json(&["service", "edge"])["status"]["loadBalancer"]["ingress"].clone();
            ingress.as_array().is_some_and(|l| l.len() == 2)
        }),
        "no dual-stack EXTERNAL-IP: {ingress}\n{}",
        c.log()
    );
    assert_eq!(ingress[0]["ip"], VIP4);
    assert_eq!(ingress[1]["ip"], VIP6);
    assert!(
        eventually(WAIT, || holder(&c).as_deref() == Some("edge-node")),
        "svcnet up's node did not take the Lease: {:?}\n{}",
        holder(&c),
        c.log()
    );

    // The takeover's gratuitous ARP and unsolicited advertisement moved the client's stale entries.
    assert!(
        eventually(Duration::from_secs(5), || neighbour(a, VIP4).contains(&macs[0])
            && neighbour(a, VIP6).contains(&macs[0])),
        "the client's entries were not updated: {:?} / {:?} (want {})",
        neighbour(a, VIP4),
        neighbour(a, VIP6),
        macs[0]
    );
    let seen = capture.finish();
    assert!(
        seen.iter().any(|l| *l == format!("garp {VIP4} {}", macs[0])),
        "no gratuitous ARP for {VIP4} from {}: {seen:?}",
        macs[0]
    );
    // To all nodes, Override set (0x20), not Solicited, from the link's link-local address.
    let source = link_local(node, "eth0");
    assert!(
        seen.iter()
            .any(|l| *l == format!("na {VIP6} {} 20 ff02::1 {source}", macs[0])),
        "no unsolicited neighbour advertisement for {VIP6} from {} ({source}): {seen:?}",
        macs[0]
    );

    // Answers on eth0 and eth2, each with its own MAC; none on eth1.
    assert_eq!(answers(&a.name, VIP4, CLIENT4), macs[0], "ARP on eth0");
    assert_eq!(answers(&a.name, VIP6, CLIENT6), macs[0], "NDP on eth0");
    assert_eq!(answers(&c3.name, VIP4, CLIENT4), macs[2], "ARP on eth2");
    assert_eq!(answers(&c3.name, VIP6, CLIENT6), macs[2], "NDP on eth2");
    assert_eq!(
        answers(&b.name, VIP4, CLIENT4),
        "",
        "ARP on eth1, not in --lb-interfaces"
    );
    assert_eq!(
        answers(&b.name, VIP6, CLIENT6),
        "",
        "NDP on eth1, not in --lb-interfaces"
    );
    // The node takes both addresses' traffic as its own: with no listener (no data plane here) its
    // kernel refuses the connection, where a foreign address would time out.
    for ip in [VIP4, VIP6] {
        let script = "import socket,sys\ntry:\n    socket.create_connection((sys.argv[1], 80), timeout=3)\n    print('connected')\nexcept OSError as e:\n    print(type(e).__name__)\n";
        let out = command_in(&a.name, "python3")
            .args(["-c", script, ip])
            .output()
            .expect("python3");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ConnectionRefusedError",
            "TCP to {ip}:80"
        );
    }
    let metrics = node.exec(&["curl", "-s", "http://127.0.0.1:10249/metrics"]);
    for want in [
        "svcnet_l2announce_leases_held 1",
        "svcnet_l2announce_announced_ips 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == want),
            "the node's metrics lack {want:?}:\n{metrics}"
        );
    }
    for counter in [
        "svcnet_l2announce_neighbor_advertisements_total",
        "svcnet_l2announce_unsolicited_neighbor_advertisements_total",
    ] {
        let n: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{counter} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        assert!(n > 0, "{counter} is {n}:\n{metrics}");
    }

    // The Service goes: no answers, no local routes.
    c.ok(&["delete", "service", "edge"]);
    assert!(
        eventually(Duration::from_secs(10), || answers(&a.name, VIP4, CLIENT4)
            .is_empty()
            && answers(&a.name, VIP6, CLIENT6).is_empty()),
        "still answered after the Service was deleted"
    );
    for family in ["-4", "-6"] {
        let routes = node.exec(&["ip", family, "route", "show", "table", "local", "proto", "116"]);
        assert!(routes.trim().is_empty(), "local routes left: {routes}");
    }
}

/// Without `--lb-interfaces`, `svcnet up --pod-network netns` announces on the interface that carries
/// its node address (`--api-listen`), like `svcnet agent` with its `--node-ip`, and on no other.
#[test]
fn up_with_the_netns_pod_network_announces_on_its_node_address_interface() {
    if skip() {
        return;
    }
    let (ns, clients, macs) = network(2);
    let c = Cluster::start_in_netns_at(
        SVCNET,
        &ns.node.name,
        "172.31.0.1:0",
        &[
            "--node-name",
            "edge-node",
            "--pod-network",
            "netns",
            "--cluster-cidr",
            "10.244.0.0/16",
            "--service-cidr",
            "10.96.0.0/12",
            "--proxy-mode",
            "none",
            "--lb-pool",
            "172.31.0.200-172.31.0.210",
        ],
    );
    c.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["create", "service", "loadbalancer", "edge", "--tcp=80:80"],
        None,
    );
    assert!(
        eventually(WAIT, || holder(&c).as_deref() == Some("edge-node")),
        "svcnet up's node did not take the Lease: {:?}\n{}",
        holder(&c),
        c.log()
    );
    assert!(
        eventually(Duration::from_secs(10), || answers(
            &clients[0].name,
            VIP4,
            CLIENT4
        ) == macs[0]),
        "ARP for {VIP4} on eth0: {:?}",
        answers(&clients[0].name, VIP4, CLIENT4)
    );
    assert_eq!(answers(&clients[1].name, VIP4, CLIENT4), "", "ARP on eth1");
}

/// The client's ingress drops ARP requests (a gratuitous ARP is one) and neighbour advertisements
/// while it is loaded, counting them.
const MUTE: &str = r#"table netdev svcnet-test-mute {
  chain ingress {
    type filter hook ingress device "eth0" priority 0; policy accept;
    arp operation request counter drop
    icmpv6 type nd-neighbor-advert counter drop
  }
}"#;

/// A client that cannot hear a takeover's first gratuitous ARP and unsolicited neighbour advertisement
/// (here its ingress drops them for a while; a link just come up, whose IPv6 the kernel has not
/// configured yet, or a switch still learning does the same) is still moved by a later one: the new
/// holder repeats them a second apart for seconds rather than in one burst.
#[test]
fn a_client_that_misses_the_first_announcements_is_moved_by_a_later_one() {
    if skip() {
        return;
    }
    if !have("nft", "--version") {
        eprintln!("skipped: needs nft");
        return;
    }
    let (ns, clients, macs) = network(1);
    let a = &clients[0];
    let c = start_edge(&ns.node.name, "eth0");
    for ip in [VIP4, VIP6] {
        a.ip(&[
            "neigh", "replace", ip, "lladdr", STALE_MAC, "dev", "eth0", "nud", "stale",
        ]);
    }
    a.exec_with_input(&["nft", "-f", "-"], Some(MUTE));
    c.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["apply", "-f", "-"],
        Some(SERVICE),
    );
    // Both counters move: the takeover's first announcements were sent, and lost.
    let dropped = || {
        let rules = a.exec(&["nft", "list", "table", "netdev", "svcnet-test-mute"]);
        let counted = |what: &str| {
            rules
                .lines()
                .any(|l| l.contains(what) && !l.contains("counter packets 0 "))
        };
        counted("arp operation request") && counted("nd-neighbor-advert")
    };
    assert!(
        eventually(WAIT, dropped),
        "no announcement reached the client: {}\n{}",
        a.exec(&["nft", "list", "table", "netdev", "svcnet-test-mute"]),
        c.log()
    );
    // Deaf for half a second more: a burst sent at the takeover is over by then.
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        neighbour(a, VIP4).contains(STALE_MAC) && neighbour(a, VIP6).contains(STALE_MAC),
        "an entry moved while nothing could reach it: {:?} / {:?}",
        neighbour(a, VIP4),
        neighbour(a, VIP6)
    );
    a.exec(&["nft", "delete", "table", "netdev", "svcnet-test-mute"]);
    assert!(
        eventually(Duration::from_secs(5), || neighbour(a, VIP4).contains(&macs[0])
            && neighbour(a, VIP6).contains(&macs[0])),
        "no later announcement moved the client's entries: {:?} / {:?} (want {})",
        neighbour(a, VIP4),
        neighbour(a, VIP6),
        macs[0]
    );
}

/// The unsolicited advertisements come from the link-local address the interface has when they are
/// sent (RFC 4861: one of the interface's own addresses), even when it had none yet when the agent
/// started, rather than from the announced address itself.
#[test]
fn advertisements_come_from_the_link_local_address_the_link_has_when_sent() {
    if skip() {
        return;
    }
    let (ns, clients, macs) = network(1);
    let (node, a) = (&ns.node, &clients[0]);
    // No link-local address while the agent starts.
    node.ip(&["-6", "addr", "flush", "dev", "eth0", "scope", "link"]);
    let c = start_edge(&node.name, "eth0");
    assert!(
        eventually(WAIT, || c.log().contains("answering ARP and NDP")),
        "the responder did not start:\n{}",
        c.log()
    );
    node.addr6("fe80::1/64", "eth0");
    a.ip(&[
        "neigh", "replace", VIP6, "lladdr", STALE_MAC, "dev", "eth0", "nud", "stale",
    ]);
    let capture = Capture::start(&a.name);
    c.ok_v(
        svcnet_testsupport::kubectl::NEWEST,
        &["apply", "-f", "-"],
        Some(SERVICE),
    );
    assert!(
        eventually(WAIT, || neighbour(a, VIP6).contains(&macs[0])),
        "the client's entry was not updated: {:?} (want {})\n{}",
        neighbour(a, VIP6),
        macs[0],
        c.log()
    );
    let seen = capture.finish();
    let nas: Vec<&String> = seen
        .iter()
        .filter(|l| l.starts_with(&format!("na {VIP6} ")))
        .collect();
    assert!(
        !nas.is_empty()
            && nas
                .iter()
                .all(|l| **l == format!("na {VIP6} {} 20 ff02::1 fe80::1", macs[0])),
        "want every advertisement from fe80::1: {seen:?}"
    );
}
