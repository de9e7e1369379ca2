//! Unanswered TCP conntrack entries toward a removed endpoint are deleted, established ones are kept: in
//! the lab's namespaces (root; skipped otherwise), with a real connection attempt to an address nobody
//! answers for and a real connection held open to a live pod. See `svcnet_testsupport::lab` for the lab
//! and its safety rules.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::Arc;

use svcnet_dataplane::{Backend, Change, Protocol, ServicePort};

use common::netns::{NftLab, can_run, lab_config};
use common::{ep, svc_port};
use svcnet_testsupport::lab::Lab;
use svcnet_testsupport::netns::{Netns, command_in};

/// Accepts TCP connections on the port given, answers each as the lab's client expects (`NAME PEER`) and
/// holds it open; ends by itself after 60 s.
const HOLDER: &str = r#"
import socket, sys, time
end = time.monotonic() + 60
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
print("ready", flush=True)
held = []
while time.monotonic() < end:
    s.settimeout(max(end - time.monotonic(), 0.01))
    try:
        c, a = s.accept()
    except socket.timeout:
        break
    c.sendall(("pod0 %s\n" % a[0]).encode())
    held.append(c)
"#;

/// Connects to the address and port given, says so, and keeps the connection open for 60 s.
const KEEPER: &str = r#"
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print("connected", flush=True)
time.sleep(60)
"#;

/// The port the holder listens on in pod 0.
const HOLD_PORT: u16 = 9090;
/// An address on the pod bridge nobody answers for: a SYN DNATed to it is never answered.
const DEAD: &str = "10.244.0.99";
const CIP: &str = "10.96.0.60";

/// A Python process in `ns` (bounded in time by the script itself) that prints `expect` on its first line
/// once it is ready; killed by its PID on drop. `ip netns exec` execs Python, so that PID is Python's and
/// nothing is left behind.
struct Script(Child);

impl Script {
    fn start(ns: &Netns, code: &str, args: &[&str], expect: &str) -> Script {
        let mut child = command_in(&ns.name, "python3")
            .args(["-c", code])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let s = Script(child);
        assert_eq!(line.trim(), expect, "the script in {} did not start", ns.name);
        s
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The node's TCP entries toward `cip:80` whose reply comes from `reply_src`, in `state`.
fn entries(lab: &Lab, reply_src: &str, state: &str) -> usize {
    lab.node
        .exec(&[
            "conntrack",
            "-L",
            "-p",
            "tcp",
            "--orig-dst",
            CIP,
            "--orig-port-dst",
            "80",
            "--reply-src",
            reply_src,
            "--state",
            state,
        ])
        .lines()
        .count()
}

fn port(eps: &[&str]) -> Arc<ServicePort> {
    let eps = eps.iter().map(|ip| ep(ip, HOLD_PORT, false)).collect();
    Arc::new(svc_port("hold", Protocol::Tcp, CIP, 80, eps))
}

#[test]
fn removed_endpoint_loses_unanswered_tcp_entries_but_not_established_ones() {
    if !can_run("removed_endpoint_loses_unanswered_tcp_entries_but_not_established_ones") {
        return;
    }
    let lab = Lab::new(1);
    let pod0 = Lab::pod_ip_of(0);
    let _holder = Script::start(&lab.pods[0], HOLDER, &[&HOLD_PORT.to_string()], "ready");
    let mut b = lab.backend(lab_config());
    let v1 = port(&[&pod0]);
    b.sync_all(std::slice::from_ref(&v1)).unwrap();
    let _keeper = Script::start(&lab.client, KEEPER, &[CIP, "80"], "connected");
    assert_eq!(entries(&lab, &pod0, "ESTABLISHED"), 1);

    // Pod 0 leaves the endpoints while alive: its established connection keeps its entry.
    let v2 = port(&[DEAD]);
    b.apply(&[Change::Upsert {
        old: Some(v1),
        new: v2.clone(),
    }])
    .unwrap();
    assert_eq!(entries(&lab, &pod0, "ESTABLISHED"), 1);

    // A connection attempt DNATed to the dead endpoint stays unanswered.
    let r = lab.client_in(&lab.client, &["tcp", CIP, "80", "3", "0.5"]);
    assert_eq!(r.failed(), 3, "{r:?}");
    let before = entries(&lab, DEAD, "SYN_SENT");
    assert_eq!(before, 3, "expected the attempts' SYN_SENT entries");

    // An update that keeps the dead endpoint keeps them too; removing it deletes them, and only them.
    let v3 = port(&[DEAD, &pod0]);
    b.apply(&[Change::Upsert {
        old: Some(v2),
        new: v3.clone(),
    }])
    .unwrap();
    assert_eq!(entries(&lab, DEAD, "SYN_SENT"), before);
    b.apply(&[Change::Upsert {
        old: Some(v3),
        new: port(&[&pod0]),
    }])
    .unwrap();
    assert_eq!(entries(&lab, DEAD, "SYN_SENT"), 0);
    assert_eq!(entries(&lab, &pod0, "ESTABLISHED"), 1);
    // New connections now all reach the live pod.
    let r = lab.client_in(&lab.client, &["tcp", CIP, "80", "5", "2"]);
    assert_eq!(r.failed(), 0, "{r:?}");
}
