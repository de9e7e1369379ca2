//! A network-namespace lab for data-plane traffic tests: a "node" namespace with a bridge, pod
//! namespaces on it running a small server, and an outside client namespace routed through the node.
//! Rules under test go into the node (e.g. an nftables backend pointed at [`Lab::node`]); the client
//! scripts report which pod answered and what client address it saw.
//!
//! Every address below exists only inside the lab's namespaces (see [`crate::netns`]); [`Lab`]'s `Drop`
//! (which also runs on panic) stops the processes it started, by their PID, and its namespaces go with it.

use std::io::Read;
use std::process::{Child, Stdio};

use crate::netns::{Netns, command_in, run};

/// The pods' little server: answers every TCP connection and UDP datagram with `NAME PEER-IP`, on IPv4
/// and IPv6 alike (a socket per family, the IPv6 ones `IPV6_V6ONLY`, so IPv4 peers show as plain IPv4
/// addresses rather than `::ffff:…`).
const SERVER: &str = r#"
import socket, sys, threading
name, port = sys.argv[1], int(sys.argv[2])
def sock(fam, kind):
    s = socket.socket(fam, kind)
    if kind == socket.SOCK_STREAM:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(("::", port))
    else:
        s.bind(("0.0.0.0", port))
    return s
def udp(u):
    while True:
        d, a = u.recvfrom(2048)
        u.sendto(("%s %s\n" % (name, a[0])).encode(), a)
def tcp(s):
    while True:
        c, a = s.accept()
        try:
            c.sendall(("%s %s\n" % (name, a[0])).encode())
        except OSError:
            pass
        c.close()
socks = []
for fam in (socket.AF_INET, socket.AF_INET6):
    u = sock(fam, socket.SOCK_DGRAM)
    t = sock(fam, socket.SOCK_STREAM)
    t.listen(1024)
    socks += [(udp, u), (tcp, t)]
for f, s in socks[1:]:
    threading.Thread(target=f, args=(s,), daemon=True).start()
print("ready", flush=True)
socks[0][0](socks[0][1])
"#;

/// A bounded client, for IPv4 or IPv6 literals: `tcp IP PORT COUNT TIMEOUT [SRC]` makes COUNT connections;
/// `udp IP PORT SECONDS` sends a datagram every 20 ms from one socket for SECONDS; `load IP PORT SECONDS`
/// connects as fast as it can for SECONDS (at most 200,000 times). Prints one JSON object: answers by pod,
/// errors by kind, the peers pods saw, the slowest failure, and for udp the sequence of answering pods.
const CLIENT: &str = r#"
import json, socket, sys, time
mode, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
hits, errors, peers, seq = {}, {}, set(), []
slowest_error = 0.0
def one(timeout, src):
    global slowest_error
    t = time.monotonic()
    try:
        s = socket.create_connection((ip, port), timeout=timeout, source_address=(src, 0) if src else None)
        data = s.recv(200).decode().split()
        s.close()
        hits[data[0]] = hits.get(data[0], 0) + 1
        peers.add(data[1])
    except Exception as e:
        k = type(e).__name__
        errors[k] = errors.get(k, 0) + 1
        slowest_error = max(slowest_error, time.monotonic() - t)
if mode == "tcp":
    n, timeout = int(sys.argv[4]), float(sys.argv[5])
    src = sys.argv[6] if len(sys.argv) > 6 else None
    for _ in range(n):
        one(timeout, src)
elif mode == "load":
    end = time.monotonic() + float(sys.argv[4])
    n = 0
    while time.monotonic() < end and n < 200000:
        one(2.0, None)
        n += 1
elif mode == "udp":
    u = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(0.2)
    end = time.monotonic() + float(sys.argv[4])
    while time.monotonic() < end:
        try:
            u.sendto(b"ping", (ip, port))
            data = u.recv(200).decode().split()
            if not seq:
                print("answered", flush=True)
            hits[data[0]] = hits.get(data[0], 0) + 1
            seq.append(data[0])
        except Exception as e:
            k = type(e).__name__
            errors[k] = errors.get(k, 0) + 1
        time.sleep(0.02)
print(json.dumps({"hits": hits, "errors": errors, "peers": sorted(peers), "slowest_error": slowest_error, "seq": seq}))
"#;

/// The port every pod serves on (TCP and UDP).
pub const POD_PORT: u16 = 8080;
/// The node's address on the client link.
pub const NODE_IP: &str = "192.168.50.1";
/// The client's addresses.
pub const CLIENT_IP: &str = "192.168.50.2";
/// A second client address, outside the source ranges the tests allow.
pub const CLIENT_IP2: &str = "192.168.50.3";
/// The node's address on the pod bridge (pods' gateway).
pub const BRIDGE_IP: &str = "10.244.0.1";
/// The node's IPv6 address on the client link.
pub const NODE_IP6: &str = "fd00:192:168::1";
/// The client's IPv6 address.
pub const CLIENT_IP6: &str = "fd00:192:168::2";
/// A second client IPv6 address (never the default source).
pub const CLIENT_IP6_2: &str = "fd00:192:168::3";
/// The node's IPv6 address on the pod bridge (pods' IPv6 gateway).
pub const BRIDGE_IP6: &str = "fd00:10:244::1";
/// The lab's IPv4 pod CIDR.
pub const POD_CIDR: &str = "10.244.0.0/16";
/// The lab's IPv4 Service CIDR.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The lab's IPv6 pod CIDR (the bridge's prefix).
pub const POD_CIDR6: &str = "fd00:10:244::/64";
/// The lab's IPv6 Service CIDR.
pub const SERVICE_CIDR6: &str = "fd00:10:96::/112";

/// What the client saw.
#[derive(Debug, Default)]
pub struct ClientResult {
    /// Answers by pod name.
    pub hits: std::collections::BTreeMap<String, u64>,
    /// Failures by exception name.
    pub errors: std::collections::BTreeMap<String, u64>,
    /// The client addresses the pods saw.
    pub peers: Vec<String>,
    /// The longest a failed attempt took, in seconds.
    pub slowest_error: f64,
    /// UDP: answering pods in order.
    pub seq: Vec<String>,
}

impl ClientResult {
    fn parse(s: &str) -> ClientResult {
        let v: serde_json::Value =
            serde_json::from_str(s.trim()).unwrap_or_else(|e| panic!("client output {s:?}: {e}"));
        let map = |k: &str| {
            v[k].as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .collect()
                })
                .unwrap_or_default()
        };
        let list = |k: &str| {
            v[k].as_array()
                .map(|a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                .unwrap_or_default()
        };
        ClientResult {
            hits: map("hits"),
            errors: map("errors"),
            peers: list("peers"),
            slowest_error: v["slowest_error"].as_f64().unwrap_or(0.0),
            seq: list("seq"),
        }
    }

    /// Total successful answers.
    pub fn ok(&self) -> u64 {
        self.hits.values().sum()
    }

    /// Total failures.
    pub fn failed(&self) -> u64 {
        self.errors.values().sum()
    }
}

/// A "node" namespace with a bridge, `pods` pod namespaces on it running [`SERVER`], and a client
/// namespace linked to the node. Dual stack: every link has an IPv4 and an IPv6 address (IPv6 ones
/// without duplicate address detection, so they are usable at once).
pub struct Lab {
    /// The node (where the rules go).
    pub node: Netns,
    /// The pods; pod `i` is `10.244.0.(10+i)` and `fd00:10:244::(10+i)`, and answers as `pod{i}`.
    pub pods: Vec<Netns>,
    /// An outside client, `192.168.50.2` and `.3`, `fd00:192:168::2` and `::3`, routed through the node.
    pub client: Netns,
    children: Vec<Child>,
    dir: std::path::PathBuf,
}

impl Lab {
    /// Builds the lab and waits until every pod server listens.
    pub fn new(pods: usize) -> Lab {
        let node = Netns::new("node");
        let client = Netns::new("client");
        let dir = std::env::temp_dir().join(format!("{}-files", node.name));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("server.py"), SERVER).unwrap();
        std::fs::write(dir.join("client.py"), CLIENT).unwrap();
        let mut lab = Lab {
            node,
            pods: Vec::new(),
            client,
            children: Vec::new(),
            dir,
        };
        lab.client.no_dad();
        let node = &lab.node;
        node.no_dad();
        node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        node.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        // No multicast snooping: IPv6 neighbour discovery must not depend on MLD reports having been seen.
        node.ip(&["link", "add", "br0", "type", "bridge", "mcast_snooping", "0"]);
        node.ip(&["addr", "add", &format!("{BRIDGE_IP}/24"), "dev", "br0"]);
        node.addr6(&format!("{BRIDGE_IP6}/64"), "br0");
        node.ip(&["link", "set", "br0", "up"]);
        // ClusterIPs and LB IPs are reachable from the node itself through the bridge (DNAT picks the pod).
        node.ip(&["route", "add", SERVICE_CIDR, "dev", "br0"]);
        // IPv6 ClusterIPs are routed to a dead end instead (`svc0`, a veth whose peer stays in the node and
        // answers no neighbour solicitation; this kernel may lack the dummy device): a router forwarding a
        // packet out the interface it came in on sends an ICMPv6 redirect before the FORWARD hook, so a
        // pod's packet to a ClusterIP that is not DNATed (a port no Service has: rejected in
        // filter-forward) would also make the node tell the pod the ClusterIP is on-link, and the pod's
        // later connections to it, to valid ports too, would fail after 3 s of unanswered neighbour
        // solicitations. DNATed packets are routed again, to the pods.
        node.ip(&["link", "add", "svc0", "type", "veth", "peer", "name", "svc1"]);
        node.ip(&["link", "set", "svc1", "up"]);
        node.ip(&["link", "set", "svc0", "up"]);
        node.ip(&["-6", "route", "add", SERVICE_CIDR6, "dev", "svc0"]);
        node.ip(&[
            "link",
            "add",
            "vc0",
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            &lab.client.name,
        ]);
        node.ip(&["addr", "add", &format!("{NODE_IP}/24"), "dev", "vc0"]);
        node.addr6(&format!("{NODE_IP6}/64"), "vc0");
        node.ip(&["link", "set", "vc0", "up"]);
        let c = &lab.client;
        c.ip(&["addr", "add", &format!("{CLIENT_IP}/24"), "dev", "eth0"]);
        c.ip(&["addr", "add", &format!("{CLIENT_IP2}/24"), "dev", "eth0"]);
        c.addr6(&format!("{CLIENT_IP6}/64"), "eth0");
        c.addr6_secondary(&format!("{CLIENT_IP6_2}/64"), "eth0");
        c.ip(&["link", "set", "eth0", "up"]);
        c.ip(&["route", "add", "default", "via", NODE_IP]);
        c.ip(&["-6", "route", "add", "default", "via", NODE_IP6]);
        for i in 0..pods {
            let pod = Netns::new(&format!("pod{i}"));
            pod.no_dad();
            let veth = format!("vp{i}");
            lab.node.ip(&[
                "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pod.name,
            ]);
            lab.node.ip(&["link", "set", &veth, "master", "br0", "up"]);
            // As the bridge CNI plugin's hairpinMode: with br_netfilter loaded, a pod's packet DNATed back
            // to the pod itself leaves through the port it came in on.
            lab.node
                .ip(&["link", "set", &veth, "type", "bridge_slave", "hairpin", "on"]);
            pod.ip(&["addr", "add", &format!("{}/24", Lab::pod_ip_of(i)), "dev", "eth0"]);
            pod.addr6(&format!("{}/64", Lab::pod_ip6_of(i)), "eth0");
            pod.ip(&["link", "set", "eth0", "up"]);
            pod.ip(&["route", "add", "default", "via", BRIDGE_IP]);
            pod.ip(&["-6", "route", "add", "default", "via", BRIDGE_IP6]);
            lab.pods.push(pod);
        }
        for i in 0..pods {
            let script = lab.dir.join("server.py");
            let mut child = command_in(&lab.pods[i].name, "python3")
                .arg("-u")
                .arg(&script)
                .args([format!("pod{i}"), POD_PORT.to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut ready = [0u8; 6];
            let mut out = child.stdout.take().unwrap();
            lab.children.push(child);
            out.read_exact(&mut ready).expect("pod server did not start");
        }
        lab
    }

    /// Pod `i`'s address.
    pub fn pod_ip_of(i: usize) -> String {
        format!("10.244.0.{}", 10 + i)
    }

    /// Pod `i`'s IPv6 address.
    pub fn pod_ip6_of(i: usize) -> String {
        format!("fd00:10:244::{}", 10 + i)
    }

    /// Runs the client script in `ns` and parses its answer.
    pub fn client_in(&self, ns: &Netns, args: &[&str]) -> ClientResult {
        let script = self.dir.join("client.py");
        let mut v = vec!["ip", "netns", "exec", &ns.name, "timeout", "120", "python3"];
        v.push(script.to_str().unwrap());
        v.extend_from_slice(args);
        ClientResult::parse(&String::from_utf8_lossy(&run(&v).stdout))
    }

    /// Starts the client script in the client namespace in the background.
    pub fn spawn_client(&self, args: &[&str]) -> BackgroundClient {
        let script = self.dir.join("client.py");
        let child = command_in(&self.client.name, "timeout")
            .args(["120", "python3"])
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        BackgroundClient { child: Some(child) }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The namespaces go when their `Netns` fields drop, after this.
    }
}

/// A client running in the background; killed (by PID) if dropped unfinished.
pub struct BackgroundClient {
    child: Option<Child>,
}

impl BackgroundClient {
    /// Waits until the client got its first answer (the `udp` mode says so on a line of its own), so
    /// that a test acts on a flow that is really running: starting Python can take over a second on a
    /// loaded machine. False when the client ended without one.
    pub fn wait_first_answer(&mut self) -> bool {
        use std::io::Read;
        let Some(out) = self.child.as_mut().and_then(|c| c.stdout.as_mut()) else {
            return false;
        };
        // Byte by byte, so that nothing after the line is taken from the final report.
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).is_ok_and(|n| n == 1) && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        line == b"answered"
    }

    /// Waits for the client and parses what it printed (its last line).
    pub fn finish(mut self) -> ClientResult {
        let child = self.child.take().unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        ClientResult::parse(text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or(""))
    }
}

impl Drop for BackgroundClient {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
