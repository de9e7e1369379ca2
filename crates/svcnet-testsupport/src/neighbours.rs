//! Asking who answers for an address on a link, from inside a network namespace a test made (root
//! only): an ARP request or an IPv6 neighbour solicitation sent from the namespace's `eth0` with every
//! answer collected, and a capture of the gratuitous ARPs and unsolicited neighbour advertisements
//! that reach it. Raw frames through python3's AF_PACKET sockets, so the kernel's own neighbour cache
//! is neither asked nor changed.

use std::io::Read;
use std::process::Stdio;

use crate::multinode::Proc;
use crate::netns::command_in;

/// Sends one ARP request for ARGV[1] from eth0 (sender address ARGV[2]) and prints the MACs of every
/// reply within a second, sorted, space-separated.
const ARP_PROBE: &str = r#"
import socket, struct, sys, time
tgt, src = socket.inet_aton(sys.argv[1]), socket.inet_aton(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("eth0", 0))
mac = s.getsockname()[4]
s.send(b"\xff" * 6 + mac + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + src + b"\0" * 6 + tgt)
s.settimeout(0.1)
macs, end = set(), time.time() + 1.0
while time.time() < end:
    try:
        f = s.recv(128)
    except socket.timeout:
        continue
    if len(f) >= 42 and f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x02" and f[28:32] == tgt:
        macs.add(f[22:28].hex(":"))
print(" ".join(sorted(macs)))
"#;

/// Sends one neighbour solicitation for ARGV[1] from eth0 (source address ARGV[2]) to the target's
/// solicited-node group and prints the Ethernet sources of every advertisement for it within a second,
/// sorted, space-separated.
const NDP_PROBE: &str = r#"
import socket, struct, sys, time
tgt = socket.inet_pton(socket.AF_INET6, sys.argv[1])
src = socket.inet_pton(socket.AF_INET6, sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x86dd))
s.bind(("eth0", 0))
mac = s.getsockname()[4]
grp = b"\xff\x02" + b"\0" * 9 + b"\x01\xff" + tgt[13:]
def csum(data):
    t = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while t >> 16:
        t = (t & 0xffff) + (t >> 16)
    return ~t & 0xffff
icmp = struct.pack("!BBHI", 135, 0, 0, 0) + tgt + b"\x01\x01" + mac
c = csum(src + grp + struct.pack("!I", len(icmp)) + b"\0\0\0\x3a" + icmp)
icmp = icmp[:2] + struct.pack("!H", c) + icmp[4:]
ip6 = struct.pack("!IHBB", 0x60000000, len(icmp), 58, 255) + src + grp
s.send(b"\x33\x33" + grp[12:] + mac + b"\x86\xdd" + ip6 + icmp)
s.settimeout(0.1)
macs, end = set(), time.time() + 1.0
while time.time() < end:
    try:
        f = s.recv(256)
    except socket.timeout:
        continue
    if len(f) >= 78 and f[12:14] == b"\x86\xdd" and f[20] == 58 and f[54] == 136 and f[62:78] == tgt:
        macs.add(f[6:12].hex(":"))
print(" ".join(sorted(macs)))
"#;

/// Prints `listening`, then one line per gratuitous ARP (`garp IP MAC`) and per neighbour
/// advertisement (`na TARGET MAC FLAGS DESTINATION SOURCE`, FLAGS the hex byte of R/S/O) seen on eth0.
const CAPTURE: &str = r#"
import socket
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0))
print("listening", flush=True)
while True:
    f = s.recv(256)
    if len(f) >= 42 and f[12:14] == b"\x08\x06" and f[20:22] == b"\x00\x01" and f[28:32] == f[38:42]:
        print("garp", socket.inet_ntop(socket.AF_INET, f[28:32]), f[22:28].hex(":"), flush=True)
    elif len(f) >= 78 and f[12:14] == b"\x86\xdd" and f[20] == 58 and f[54] == 136:
        print("na", socket.inet_ntop(socket.AF_INET6, f[62:78]), f[6:12].hex(":"), "%02x" % f[58],
              socket.inet_ntop(socket.AF_INET6, f[38:54]), socket.inet_ntop(socket.AF_INET6, f[22:38]),
              flush=True)
"#;

/// The MACs (sorted, space-separated; empty if none) that answer an ARP request (IPv4 `ip`) or a
/// neighbour solicitation (IPv6 `ip`) sent from `netns`'s eth0 with source address `src`.
pub fn answers(netns: &str, ip: &str, src: &str) -> String {
    let script = if ip.contains(':') { NDP_PROBE } else { ARP_PROBE };
    let out = command_in(netns, "python3")
        .args(["-c", script, ip, src])
        .output()
        .expect("python3");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A capture of gratuitous ARPs and neighbour advertisements on `netns`'s eth0, running from when
/// [`Capture::start`] returns until [`Capture::finish`] (or drop) stops it by its PID.
pub struct Capture(Proc);

impl Capture {
    /// Starts the capture and waits until it listens.
    pub fn start(netns: &str) -> Capture {
        let mut child = command_in(netns, "python3")
            .args(["-u", "-c", CAPTURE])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut out = child.stdout.take().expect("stdout");
        let mut first = [0u8; 10];
        let _ = out.read_exact(&mut first);
        assert_eq!(&first, b"listening\n", "the capture did not start");
        child.stdout = Some(out);
        Capture(Proc(child))
    }

    /// Stops the capture; its lines.
    pub fn finish(mut self) -> Vec<String> {
        let _ = self.0.0.kill();
        let mut text = String::new();
        if let Some(mut out) = self.0.0.stdout.take() {
            let _ = out.read_to_string(&mut text);
        }
        let _ = self.0.0.wait();
        text.lines().map(str::to_string).collect()
    }
}
