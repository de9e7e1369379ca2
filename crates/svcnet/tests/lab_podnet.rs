//! The pod network across nodes in a `svcnet lab` (root only). With the default `--overlay host-gw`: a
//! pod on node1 reaches a pod on node2 by its IP and the receiver sees the sender's pod IP (no NAT), while
//! pod traffic to a machine outside the cluster is masqueraded to the node's address; each node holds
//! exactly one route per remote node; a deleted Node's route goes within 1 s; an agent restart leaves no
//! stale or duplicate route; one of its routes deleted by someone else comes back at the next resync;
//! routes added by anyone else survive all of it. With `--overlay vxlan`:
//! flannel's device and per-node route, neighbour and FDB entries, the VTEP MAC published on the Node,
//! pod to pod through the tunnel, a deleted Node's entries gone within 1 s, a restart that keeps all.
//!
//! Without root (or without iproute2) the tests say they are skipped and pass.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use svcnet_testsupport::eventually;
use svcnet_testsupport::multinode::{CALLER, ECHO_SERVER, HostNet, MultiNodeLab, Proc, ask_from, python_pod};
use svcnet_testsupport::netns::{can_run, command_in};

/// The binary under test.
const SVCNET: &str = env!("CARGO_BIN_EXE_svcnet");

const WAIT: Duration = Duration::from_secs(60);

/// svcnet's route protocol (`svcnet_podnet::routes::ROUTE_PROTOCOL`).
const PROTO: &str = "115";

fn skip() -> bool {
    if let Err(why) = can_run() {
        eprintln!("skipped: {why}");
        return true;
    }
    false
}

/// The routes with svcnet's protocol in a namespace, as `(destination, gateway)`, sorted; a duplicate
/// (the same prefix in another metric) shows twice.
fn our_routes(netns: &str) -> Vec<(String, String)> {
    let out = command_in(netns, "ip")
        .args(["-4", "route", "show", "proto", PROTO])
        .output()
        .expect("ip route");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut routes: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let via = words.iter().position(|w| *w == "via")?;
            Some((words[0].to_string(), words.get(via + 1)?.to_string()))
        })
        .collect();
    routes.sort();
    routes
}

/// Runs `ip ARGS` in a namespace, asserting success.
fn ip_in(netns: &str, args: &[&str]) {
    let out = command_in(netns, "ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?} in {netns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `(name, InternalIP, podCIDR)` of every Node.
fn nodes(lab: &MultiNodeLab) -> Vec<(String, String, String)> {
    lab.get_json(&["nodes"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (
                s(&n["metadata"]["name"]),
                s(&n["status"]["addresses"][0]["address"]),
                s(&n["spec"]["podCIDR"]),
            )
        })
        .collect()
}

/// The routes node `me` should hold: every other node's block via its address.
fn wanted(all: &[(String, String, String)], me: &str) -> Vec<(String, String)> {
    let mut w: Vec<(String, String)> = all
        .iter()
        .filter(|(name, _, _)| name != me)
        .map(|(_, ip, cidr)| (cidr.clone(), ip.clone()))
        .collect();
    w.sort();
    w
}

#[test]
fn pods_reach_pods_on_other_nodes_and_routes_are_reconciled() {
    if skip() {
        return;
    }
    let lab = MultiNodeLab::up(SVCNET, 3, &[]);
    let all = nodes(&lab);
    assert_eq!(all.len(), 3, "{all:?}");
    let ns1 = lab.netns_of("node1");
    let ns2 = lab.netns_of("node2");
    let client_ns = lab.netns_of("client");

    // One route per remote node on every node, each via the node's underlay address.
    for (name, _, _) in &all {
        let netns = lab.netns_of(name);
        let want = wanted(&all, name);
        assert!(
            eventually(Duration::from_secs(5), || our_routes(&netns) == want),
            "{name}: {:?}, want {want:?}\n{}",
            our_routes(&netns),
            lab.log(name)
        );
    }
    // A route someone else added (another protocol) on node1; svcnet never touches it.
    ip_in(
        &ns1,
        &[
            "route",
            "add",
            "10.250.0.0/24",
            "via",
            "172.18.0.12",
            "proto",
            "static",
        ],
    );
    let foreign = || {
        let out = command_in(&ns1, "ip")
            .args(["-4", "route", "show", "10.250.0.0/24"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("via 172.18.0.12")
    };

    // A Node on a subnet no node shares: host-gw cannot route to it. The others' routes stay, and the
    // failure is retried with back-off, not logged twice a second.
    lab.apply(
        r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "far"},
 "spec": {"podCIDR": "10.244.200.0/24", "podCIDRs": ["10.244.200.0/24"]}}"#,
    );
    lab.ok(&[
        "patch",
        "node",
        "far",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status": {"addresses": [{"type": "InternalIP", "address": "192.168.77.5"}]}}"#,
    ]);
    let complaint = "host-gw cannot route to it";
    assert!(
        eventually(Duration::from_secs(5), || lab.log("node1").contains(complaint)),
        "{}",
        lab.log("node1")
    );
    std::thread::sleep(Duration::from_secs(3));
    let complaints = lab.log("node1").matches(complaint).count();
    assert!(complaints <= 5, "{complaints} complaints in 3 s");
    assert_eq!(our_routes(&ns1), wanted(&all, "node1"));
    lab.ok(&["delete", "node", "far"]);

    // A machine outside the cluster (the client), with no route to the pod range.
    let mut outside = Proc(
        command_in(&client_ns, "python3")
            .args(["-u", "-c", ECHO_SERVER, "outside", "9000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    {
        use std::io::Read;
        let mut line = [0u8; 9];
        outside
            .0
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut line)
            .expect("outside server");
    }

    // Red on node2, Blue on node1 calling Red by pod IP and the outside machine.
    lab.apply(&python_pod(
        "red",
        "node2",
        ECHO_SERVER,
        &["red", "8080"],
        Some(8080),
        &[],
    ));
    let red = lab.wait_pod_ready("red", WAIT);
    assert_eq!(red["spec"]["nodeName"], "node2");
    let red_ip = red["status"]["podIP"].as_str().unwrap().to_string();
    let red_target = format!("{red_ip}:8080");
    lab.apply(&python_pod(
        "blue",
        "node1",
        CALLER,
        &[&red_target, "172.18.0.2:9000"],
        None,
        &[],
    ));
    let blue = lab.wait_pod_ready("blue", WAIT);
    let blue_ip = blue["status"]["podIP"].as_str().unwrap().to_string();
    let node1_block = &all.iter().find(|n| n.0 == "node1").unwrap().2;
    let block: ipnet::Ipv4Net = node1_block.parse().unwrap();
    assert!(
        block.contains(&blue_ip.parse::<std::net::Ipv4Addr>().unwrap()),
        "blue {blue_ip} not in node1's block {node1_block}"
    );
    // Pod to pod across nodes without NAT: Red sees Blue's pod IP.
    let to_red = format!("answer {red_target} red {blue_ip}\n");
    // Pod to outside: masqueraded to node1's address (the client has no route back to pods).
    let to_outside = "answer 172.18.0.2:9000 outside 172.18.0.11\n";
    assert!(
        eventually(WAIT, || {
            let logs = lab.pod_logs("blue");
            logs.contains(&to_red) && logs.contains(to_outside)
        }),
        "blue's log: {}\nnode1: {}",
        lab.pod_logs("blue"),
        lab.log("node1")
    );
    // Nothing was answered with a rewritten source.
    let logs = lab.pod_logs("blue");
    assert!(
        logs.lines()
            .filter(|l| l.starts_with(&format!("answer {red_target}")))
            .all(|l| l.ends_with(&format!("red {blue_ip}"))),
        "{logs}"
    );

    // A deleted Node's route goes from every node within 1 s.
    let out = lab.lab(&["stop-node", "node3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let node3_block = all.iter().find(|n| n.0 == "node3").unwrap().2.clone();
    lab.ok(&["delete", "node", "node3"]);
    let deleted = Instant::now();
    let gone = |netns: &str| !our_routes(netns).iter().any(|(dst, _)| *dst == node3_block);
    while !(gone(&ns1) && gone(&ns2)) && deleted.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = deleted.elapsed();
    assert!(
        gone(&ns1) && gone(&ns2),
        "node3's route outlived its Node by {took:?}: node1 {:?}, node2 {:?}",
        our_routes(&ns1),
        our_routes(&ns2)
    );
    let rest: Vec<_> = all.iter().filter(|n| n.0 != "node3").cloned().collect();
    assert_eq!(our_routes(&ns1), wanted(&rest, "node1"));
    assert_eq!(our_routes(&ns2), wanted(&rest, "node2"));
    assert!(foreign(), "a route svcnet does not own was removed");

    // Someone deletes one of svcnet's routes: the next resync (every 10 s) puts it back.
    let node2_route = wanted(&rest, "node1")
        .into_iter()
        .find(|(_, via)| via == "172.18.0.12")
        .unwrap();
    ip_in(&ns1, &["route", "del", &node2_route.0]);
    assert!(!our_routes(&ns1).contains(&node2_route));
    assert!(
        eventually(Duration::from_secs(15), || our_routes(&ns1)
            == wanted(&rest, "node1")),
        "node1 did not repair its route: {:?}",
        our_routes(&ns1)
    );

    // node1's agent dies; meanwhile its table gets what a crash could leave: a route to a block no
    // node has, a route to node2's block via the wrong node, and the right one again in another metric.
    let out = lab.lab(&["stop-node", "node1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let node2_block = all.iter().find(|n| n.0 == "node2").unwrap().2.clone();
    ip_in(
        &ns1,
        &[
            "route",
            "add",
            "10.244.99.0/24",
            "via",
            "172.18.0.12",
            "proto",
            PROTO,
        ],
    );
    ip_in(
        &ns1,
        &[
            "route",
            "replace",
            &node2_block,
            "via",
            "172.18.0.13",
            "proto",
            PROTO,
        ],
    );
    ip_in(
        &ns1,
        &[
            "route",
            "add",
            &node2_block,
            "via",
            "172.18.0.12",
            "proto",
            PROTO,
            "metric",
            "50",
        ],
    );
    assert_eq!(our_routes(&ns1).len(), 3);
    let out = lab.lab(&["start-node", "node1"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = wanted(&rest, "node1");
    assert!(
        eventually(Duration::from_secs(5), || our_routes(&ns1) == want),
        "after the restart node1 has {:?}, want {want:?}\n{}",
        our_routes(&ns1),
        lab.log("node1")
    );
    assert!(foreign(), "a route svcnet does not own was removed on restart");
    // And it stays that way (no second reconcile adds anything back).
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(our_routes(&ns1), want);
    // node1 reaches Red over the route it kept (its own address is the source: node, not pod).
    let answer = ask_from(&ns1, &red_ip, 8080);
    assert_eq!(answer, "red 172.18.0.11");
    drop(outside);
    assert!(lab.down());
}

#[test]
fn bad_overlay_flags_are_refused() {
    let out = std::process::Command::new(SVCNET)
        .args(["agent", "--kubeconfig", "/nonexistent", "--overlay", "host-gw"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--overlay host-gw needs --pod-network netns"),
        "{err}"
    );
    let out = std::process::Command::new(SVCNET)
        .args([
            "agent",
            "--kubeconfig",
            "/nonexistent",
            "--pod-network",
            "netns",
            "--overlay",
            "bgp",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown overlay \"bgp\""), "{err}");
    let out = std::process::Command::new(SVCNET)
        .args([
            "agent",
            "--kubeconfig",
            "/nonexistent",
            "--pod-network",
            "netns",
            "--overlay",
            "vxlan",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "--overlay vxlan needs a node address other nodes can reach, not the loopback address 127.0.0.1"
        ),
        "{err}"
    );
}

/// `CMD ARGS…` in a namespace, asserting success; its stdout.
fn out_in(netns: &str, args: &[&str]) -> String {
    let out = command_in(netns, args[0]).args(&args[1..]).output().expect("run");
    assert!(
        out.status.success(),
        "{args:?} in {netns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The first address of a pod block (the remote VTEP's address on the overlay).
fn first_address(block: &str) -> String {
    block.split('/').next().unwrap().to_string()
}

/// What node `me` should hold over vxlan: every other node's block via the block's first address.
fn wanted_vxlan(all: &[(String, String, String)], me: &str) -> Vec<(String, String)> {
    let mut w: Vec<(String, String)> = all
        .iter()
        .filter(|(name, _, _)| name != me)
        .map(|(_, _, cidr)| (cidr.clone(), first_address(cidr)))
        .collect();
    w.sort();
    w
}

/// A node's neighbour entries and FDB entries on the VXLAN device, as sorted `(address, MAC)` and
/// `(MAC, destination)`.
type Overlay = (Vec<(String, String)>, Vec<(String, String)>);

fn vxlan_entries(netns: &str) -> Overlay {
    let mut neigh: Vec<(String, String)> = out_in(netns, &["ip", "-4", "neigh", "show", "dev", "svcnet.1"])
        .lines()
        .filter(|l| l.contains("PERMANENT"))
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let mac = w.iter().position(|x| *x == "lladdr")?;
            Some((w[0].to_string(), w.get(mac + 1)?.to_string()))
        })
        .collect();
    neigh.sort();
    let mut fdb: Vec<(String, String)> = out_in(netns, &["bridge", "fdb", "show", "dev", "svcnet.1"])
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let dst = w.iter().position(|x| *x == "dst")?;
            Some((w[0].to_string(), w.get(dst + 1)?.to_string()))
        })
        .collect();
    fdb.sort();
    (neigh, fdb)
}

/// What a node's overlay entries should be, from the Nodes' published VTEPs.
fn wanted_entries(lab: &MultiNodeLab, me: &str) -> Overlay {
    let nodes = lab.get_json(&["nodes"]);
    let (mut neigh, mut fdb) = (Vec::new(), Vec::new());
    for n in nodes["items"].as_array().unwrap() {
        if n["metadata"]["name"] == me {
            continue;
        }
        let data: Value = serde_json::from_str(
            n["metadata"]["annotations"]["flannel.alpha.coreos.com/backend-data"]
                .as_str()
                .unwrap_or("{}"),
        )
        .unwrap();
        let mac = data["VtepMAC"].as_str().unwrap_or("?").to_string();
        let block = n["spec"]["podCIDR"].as_str().unwrap();
        neigh.push((first_address(block), mac.clone()));
        fdb.push((
            mac,
            n["status"]["addresses"][0]["address"]
                .as_str()
                .unwrap()
                .to_string(),
        ));
    }
    neigh.sort();
    fdb.sort();
    (neigh, fdb)
}

/// Counts what each connection on port 9000 sends and answers with the count.
const SINK: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9000))
s.listen(8)
while True:
    c, a = s.accept()
    n = 0
    while True:
        d = c.recv(65536)
        if not d:
            break
        n += len(d)
    c.sendall(str(n).encode())
    c.close()
"#;

/// Sends 10 MiB to ARGV[1]:9000 once and prints `got <what the sink counted>`.
const BULK: &str = r#"
import socket, sys, time
try:
    s = socket.create_connection((sys.argv[1], 9000), timeout=20)
    s.sendall(b"x" * (10 << 20))
    s.shutdown(socket.SHUT_WR)
    print("got", s.recv(100).decode(), flush=True)
except Exception as e:
    print("error", e, flush=True)
time.sleep(600)
"#;

#[test]
fn pods_reach_pods_on_other_nodes_over_vxlan() {
    if skip() {
        return;
    }
    let before = HostNet::now();
    let lab = MultiNodeLab::up(SVCNET, 3, &["--overlay", "vxlan"]);
    // The tunnels, their routes and the masquerade live in the nodes' namespaces only.
    let during = HostNet::now();
    assert_eq!(during.links, before.links, "the lab added links to the host");
    assert_eq!(during.routes, before.routes, "the lab changed the host's routes");
    assert_eq!(during.rules, before.rules);
    assert_eq!(during.nft, before.nft, "the lab changed the host's nftables");
    let all = nodes(&lab);
    let nodes_json = lab.get_json(&["nodes"]);
    for (i, (name, ip, _)) in all.iter().enumerate() {
        let netns = lab.netns_of(name);
        // flannel's device: VNI 1, UDP 8472, learning off, MTU 50 below the uplink's 1500.
        let link = out_in(&netns, &["ip", "-d", "link", "show", "svcnet.1"]);
        for want in [
            "mtu 1450",
            "vxlan id 1 ",
            &format!("local {ip} "),
            "dev eth0 ",
            "dstport 8472 ",
            "nolearning",
        ] {
            assert!(link.contains(want), "{name}: no {want:?} in {link}");
        }
        // Its MAC is what the Node publishes.
        let mac = link
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap()
            .to_string();
        let node = &nodes_json["items"][i];
        assert_eq!(node["metadata"]["name"], name.as_str());
        let ann = &node["metadata"]["annotations"];
        assert_eq!(ann["flannel.alpha.coreos.com/backend-type"], "vxlan");
        assert_eq!(ann["flannel.alpha.coreos.com/public-ip"], ip.as_str());
        let data: Value =
            serde_json::from_str(ann["flannel.alpha.coreos.com/backend-data"].as_str().unwrap()).unwrap();
        assert_eq!(data, serde_json::json!({"VNI": 1, "VtepMAC": mac}), "{name}");
        // One on-link route, neighbour and FDB entry per remote node; no host-gw route.
        let want = wanted_vxlan(&all, name);
        assert!(
            eventually(Duration::from_secs(5), || our_routes(&netns) == want),
            "{name}: {:?}, want {want:?}\n{}",
            our_routes(&netns),
            lab.log(name)
        );
        let routes = out_in(&netns, &["ip", "-4", "route", "show", "proto", PROTO]);
        assert!(
            routes
                .lines()
                .all(|l| l.contains("dev svcnet.1") && l.contains("onlink")),
            "{routes}"
        );
        let entries = wanted_entries(&lab, name);
        assert!(
            eventually(Duration::from_secs(5), || vxlan_entries(&netns) == entries),
            "{name}: {:?}, want {entries:?}",
            vxlan_entries(&netns)
        );
    }

    // Pod to pod across nodes through the tunnel, the sender's pod IP kept.
    let ns1 = lab.netns_of("node1");
    let tx = |netns: &str| -> u64 {
        out_in(netns, &["cat", "/sys/class/net/svcnet.1/statistics/tx_packets"])
            .trim()
            .parse()
            .unwrap()
    };
    let sent_before = tx(&ns1);
    lab.apply(&python_pod(
        "red",
        "node2",
        ECHO_SERVER,
        &["red", "8080"],
        Some(8080),
        &[],
    ));
    let red = lab.wait_pod_ready("red", WAIT);
    let red_ip = red["status"]["podIP"].as_str().unwrap().to_string();
    let red_target = format!("{red_ip}:8080");
    lab.apply(&python_pod("blue", "node1", CALLER, &[&red_target], None, &[]));
    let blue = lab.wait_pod_ready("blue", WAIT);
    let blue_ip = blue["status"]["podIP"].as_str().unwrap().to_string();
    // Pods get the tunnel's MTU, as flannel gives them: they never send what it cannot carry.
    let uid = blue["metadata"]["uid"].as_str().unwrap();
    let pod_link = lab.exec_ok(
        "node1",
        &[
            "ip",
            "netns",
            "exec",
            &format!("svcnet-{}", &uid[..8]),
            "ip",
            "-o",
            "link",
            "show",
            "eth0",
        ],
    );
    assert!(pod_link.contains(" mtu 1450 "), "{pod_link}");
    let to_red = format!("answer {red_target} red {blue_ip}\n");
    assert!(
        eventually(WAIT, || lab.pod_logs("blue").contains(&to_red)),
        "blue's log: {}\nnode1: {}",
        lab.pod_logs("blue"),
        lab.log("node1")
    );
    assert!(
        tx(&ns1) > sent_before,
        "nothing went through node1's VXLAN device"
    );
    // Bulk through the tunnel, in full-size packets.
    lab.apply(&python_pod("sink", "node2", SINK, &[], Some(9000), &[]));
    let sink = lab.wait_pod_ready("sink", WAIT);
    let sink_ip = sink["status"]["podIP"].as_str().unwrap().to_string();
    lab.apply(&python_pod("bulk", "node1", BULK, &[&sink_ip], None, &[]));
    assert!(
        eventually(WAIT, || lab.pod_logs("bulk").contains("got 10485760\n")),
        "bulk's log: {}",
        lab.pod_logs("bulk")
    );
    // The node itself reaches the remote pod from its overlay address (its block's first address).
    let node1_block = &all.iter().find(|n| n.0 == "node1").unwrap().2;
    assert_eq!(
        ask_from(&ns1, &red_ip, 8080),
        format!("red {}", first_address(node1_block))
    );

    // A deleted Node's route, neighbour and FDB entry go within 1 s.
    let out = lab.lab(&["stop-node", "node3"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rest: Vec<_> = all.iter().filter(|n| n.0 != "node3").cloned().collect();
    lab.ok(&["delete", "node", "node3"]);
    let deleted = Instant::now();
    let want_routes = wanted_vxlan(&rest, "node1");
    let want_entries = wanted_entries(&lab, "node1");
    assert_eq!(want_entries.0.len(), 1);
    let done = || our_routes(&ns1) == want_routes && vxlan_entries(&ns1) == want_entries;
    while !done() && deleted.elapsed() < Duration::from_secs(1) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        done(),
        "node3 outlived its Node by {:?} on node1: {:?} {:?}",
        deleted.elapsed(),
        our_routes(&ns1),
        vxlan_entries(&ns1)
    );

    // node1's agent restarts: the device (and so the published MAC) is kept, nothing is doubled.
    let mac_before = out_in(&ns1, &["cat", "/sys/class/net/svcnet.1/address"]);
    for cmd in ["stop-node", "start-node"] {
        let out = lab.lab(&[cmd, "node1"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    assert!(
        eventually(Duration::from_secs(5), &done),
        "after the restart node1 has {:?} {:?}",
        our_routes(&ns1),
        vxlan_entries(&ns1)
    );
    std::thread::sleep(Duration::from_millis(500));
    assert!(done(), "{:?} {:?}", our_routes(&ns1), vxlan_entries(&ns1));
    assert_eq!(
        out_in(&ns1, &["cat", "/sys/class/net/svcnet.1/address"]),
        mac_before
    );
    assert_eq!(
        ask_from(&ns1, &red_ip, 8080),
        format!("red {}", first_address(node1_block))
    );
    assert!(lab.down());
}
