//! The userspace proxy process's control socket and state file, shared by the process itself
//! ([`crate::node_proxy`]) and by the `svcnet up`/`svcnet agent` that starts or adopts it
//! ([`crate::proxy_process`]).
//!
//! Both live in the proxy's state directory (`<data dir>/proxy`):
//!
//! - `state`: who serves the node now, as `key value` lines: `pid`, `start` (the process's start time in
//!   clock ticks after boot, so that a reused PID is never mistaken for it) and `fingerprint` (the
//!   binary and arguments it runs with: a later `svcnet up` adopts it only if they are still the same).
//!   Written atomically (temporary file, then rename) by the process once it serves.
//! - `control.sock`: a `SOCK_SEQPACKET` Unix socket (one request or answer per message) with three
//!   requests: `ping` (answers `ok <pid>`), `metrics` (the process's Prometheus text in chunks, ended by
//!   an empty message) and `handover`: the answer is the process's listening sockets, passed with
//!   `SCM_RIGHTS` in batches (each message's text names the address and protocol of each descriptor it
//!   carries, one per line; the last message is `end`); the new process answers `taken` once it serves
//!   them, and the old one stops accepting (closing its copies without `shutdown(2)`), answers `bye`
//!   and drains its established connections. A new process that goes away before `taken` leaves the
//!   old one serving as before, as HAProxy's and Envoy's hot restarts do.

use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, SocketAddrUnix, SocketFlags, SocketType,
};
use svcnet_dataplane::Protocol;
use svcnet_proxy::InheritedSocket;

/// Largest control message (text) read at once.
const MAX_MESSAGE: usize = 64 * 1024;
/// Descriptors per handover message (the kernel takes at most 253 per message).
const FDS_PER_MESSAGE: usize = 200;

/// The state file in `dir`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join("state")
}

/// The control socket in `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join("control.sock")
}

/// What the state file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct State {
    /// The process serving the node.
    pub pid: u32,
    /// Its start time (clock ticks after boot).
    pub start: u64,
    /// Its binary and arguments.
    pub fingerprint: String,
}

impl State {
    /// Reads `dir`'s state file; `None` if there is none or it cannot be read.
    pub fn read(dir: &Path) -> Option<State> {
        let text = std::fs::read_to_string(state_path(dir)).ok()?;
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix(' ').map(str::to_string))
        };
        Some(State {
            pid: field("pid")?.parse().ok()?,
            start: field("start")?.parse().ok()?,
            fingerprint: field("fingerprint")?,
        })
    }

    /// Writes it to `dir` atomically.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        let tmp = dir.join(format!("state.{}.tmp", self.pid));
        std::fs::write(
            &tmp,
            format!(
                "pid {}\nstart {}\nfingerprint {}\n",
                self.pid, self.start, self.fingerprint
            ),
        )?;
        std::fs::rename(&tmp, state_path(dir))
    }

    /// Whether the process it names still runs (same PID and start time).
    pub fn alive(&self) -> bool {
        proc_start(self.pid) == Some(self.start)
    }
}

/// A live process's start time in clock ticks after boot (`/proc/<pid>/stat` field 22); `None` for a
/// process that is gone or a zombie.
pub fn proc_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// Binds the control socket at `path` (replacing a stale file) and listens.
pub fn listen(path: &Path) -> io::Result<OwnedFd> {
    let _ = std::fs::remove_file(path);
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::bind(&fd, &SocketAddrUnix::new(path)?)?;
    rustix::net::listen(&fd, 16)?;
    Ok(fd)
}

/// Accepts one control connection.
pub fn accept(listener: &OwnedFd) -> io::Result<UnixStream> {
    let fd = rustix::net::accept_with(listener, SocketFlags::CLOEXEC)?;
    Ok(UnixStream::from(fd))
}

/// Connects to the control socket at `path`, with `timeout` on every later read and write.
pub fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
    let s = UnixStream::from(fd);
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    Ok(s)
}

/// Reads one message as text (empty at end of stream).
pub fn read_message(s: &mut UnixStream) -> io::Result<String> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = s.read(&mut buf)?;
    buf.truncate(n);
    String::from_utf8(buf).map_err(|_| io::Error::other("control message is not UTF-8"))
}

/// Writes one message.
pub fn write_message(s: &mut UnixStream, text: &str) -> io::Result<()> {
    s.write_all(text.as_bytes())
}

/// `ping`: the PID that answers, if the process answers at all.
pub fn ping(dir: &Path) -> Option<u32> {
    let mut s = connect(&socket_path(dir), Duration::from_secs(2)).ok()?;
    write_message(&mut s, "ping").ok()?;
    read_message(&mut s)
        .ok()?
        .strip_prefix("ok ")?
        .trim()
        .parse()
        .ok()
}

/// `metrics`: the process's Prometheus text.
pub fn metrics(dir: &Path) -> io::Result<String> {
    let mut s = connect(&socket_path(dir), Duration::from_secs(2))?;
    write_message(&mut s, "metrics")?;
    let mut text = String::new();
    loop {
        let chunk = read_message(&mut s)?;
        if chunk.is_empty() {
            return Ok(text);
        }
        text.push_str(&chunk);
    }
}

/// Answers a `metrics` request with `text`.
pub fn send_metrics(s: &mut UnixStream, text: &str) -> io::Result<()> {
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(MAX_MESSAGE);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        write_message(s, &rest[..end])?;
        rest = &rest[end..];
    }
    write_message(s, "")
}

/// Sends `sockets` over `s` (the answer to `handover`).
pub fn send_sockets(s: &mut UnixStream, sockets: &[InheritedSocket]) -> io::Result<()> {
    for batch in sockets.chunks(FDS_PER_MESSAGE) {
        let text: String = batch
            .iter()
            .map(|i| format!("{} {}\n", i.addr, i.protocol))
            .collect();
        let fds: Vec<BorrowedFd<'_>> = batch.iter().map(|i| i.fd.as_fd()).collect();
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(io::Error::other(
                "handover: descriptors do not fit the control buffer",
            ));
        }
        rustix::net::sendmsg(
            s.as_fd(),
            &[io::IoSlice::new(text.as_bytes())],
            &mut control,
            SendFlags::empty(),
        )?;
    }
    write_message(s, "end")
}

/// Receives the sockets of a `handover` answer.
pub fn receive_sockets(s: &mut UnixStream) -> io::Result<Vec<InheritedSocket>> {
    let mut out = Vec::new();
    loop {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(FDS_PER_MESSAGE))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = rustix::net::recvmsg(
            s.as_fd(),
            &mut [io::IoSliceMut::new(&mut buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        let text = std::str::from_utf8(&buf[..got.bytes])
            .map_err(|_| io::Error::other("handover message is not UTF-8"))?;
        let mut fds: Vec<OwnedFd> = Vec::new();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = msg {
                fds.extend(received);
            }
        }
        if got.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the old proxy process closed the handover",
            ));
        }
        if text == "end" {
            return Ok(out);
        }
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() != fds.len() {
            return Err(io::Error::other(format!(
                "handover message names {} sockets but carries {} descriptors",
                lines.len(),
                fds.len()
            )));
        }
        for (line, fd) in lines.into_iter().zip(fds) {
            let (addr, protocol) = parse_socket_line(line)
                .ok_or_else(|| io::Error::other(format!("handover: bad socket line {line:?}")))?;
            out.push(InheritedSocket { addr, protocol, fd });
        }
    }
}

/// `ADDR PROTOCOL`, as [`send_sockets`] writes it.
fn parse_socket_line(line: &str) -> Option<(SocketAddr, Protocol)> {
    let (addr, protocol) = line.split_once(' ')?;
    let protocol = match protocol {
        "TCP" => Protocol::Tcp,
        "UDP" => Protocol::Udp,
        "SCTP" => Protocol::Sctp,
        _ => return None,
    };
    Some((addr.parse().ok()?, protocol))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip() {
        let dir = std::env::temp_dir().join(format!("svcnet-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let s = State {
            pid: std::process::id(),
            start: proc_start(std::process::id()).unwrap(),
            fingerprint: "/bin/svcnet node-proxy --x 1".into(),
        };
        s.write(&dir).unwrap();
        assert_eq!(State::read(&dir), Some(s.clone()));
        assert!(s.alive());
        assert!(
            !State {
                start: s.start + 1,
                ..s
            }
            .alive()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sockets_pass_between_processes_sides() {
        let dir = std::env::temp_dir().join(format!("svcnet-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = socket_path(&dir);
        let listener = listen(&path).unwrap();
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let (ta, ua) = (tcp.local_addr().unwrap(), udp.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let mut s = accept(&listener).unwrap();
            assert_eq!(read_message(&mut s).unwrap(), "handover");
            let sockets = vec![
                InheritedSocket {
                    addr: ta,
                    protocol: Protocol::Tcp,
                    fd: OwnedFd::from(tcp),
                },
                InheritedSocket {
                    addr: ua,
                    protocol: Protocol::Udp,
                    fd: OwnedFd::from(udp),
                },
            ];
            send_sockets(&mut s, &sockets).unwrap();
        });
        let mut c = connect(&path, Duration::from_secs(5)).unwrap();
        write_message(&mut c, "handover").unwrap();
        let got = receive_sockets(&mut c).unwrap();
        server.join().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].addr, got[0].protocol), (ta, Protocol::Tcp));
        assert_eq!((got[1].addr, got[1].protocol), (ua, Protocol::Udp));
        // The received listener still listens: a connection to it is accepted through the new descriptor.
        let l = std::net::TcpListener::from(got.into_iter().next().unwrap().fd);
        let _client = std::net::TcpStream::connect(ta).unwrap();
        l.accept().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
