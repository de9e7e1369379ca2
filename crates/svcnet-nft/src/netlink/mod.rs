//! A minimal nftables netlink client that does two things: add and delete set and map **elements**, many
//! of them in one atomic batch, and read tables back (`read`: what a takeover compares).
//!
//! Why hand-written: the rest of the backend drives `nft -f`, which is right for tables, chains and rules,
//! but wrong for the one thing that changes whenever an endpoint changes — map elements. Starting `nft`
//! costs about 4 ms per call, and nft 1.0.6 reads the whole ruleset into its cache before it runs a
//! `delete element` or `flush map` (2.4 s and 50 ms respectively with 10,000 Services). The crates built on
//! libnftnl need its C libraries, and no pure-Rust crate encodes concatenated keys, interval maps and
//! verdict data. So element updates go straight to the kernel, in the messages `nft` itself would send.
//!
//! The wire format (`linux/netlink.h`, `linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`):
//!
//! - one `sendmsg` carries `NFNL_MSG_BATCH_BEGIN`, the `NFT_MSG_NEWSETELEM`/`NFT_MSG_DELSETELEM` messages
//!   and `NFNL_MSG_BATCH_END`; the kernel applies the whole batch or none of it (a batch cannot span
//!   several `sendmsg` calls, so the socket's send buffer is grown to fit it);
//! - each element message is `nlmsghdr`, `nfgenmsg` and the attributes `NFTA_SET_ELEM_LIST_TABLE`,
//!   `_SET` and `_ELEMENTS` (one nested `NFTA_LIST_ELEM` per element: key, data, flags); one set's
//!   elements are split over several messages when they would not fit in about 32 KiB;
//! - every element message asks for an ack, so [`Writer::commit`] knows the batch was applied, and which
//!   message failed when it was not.
//!
//! Keys and data are given as the bytes the kernel stores, in nftables' register layout: each field of a
//! concatenation is padded to 4 bytes (see [`addr_proto_port`] and the other encoders).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, bind, recv, sendto, setsockopt,
    socket, sockopt,
};
use nix::sys::time::TimeVal;

mod encode;
mod read;

pub use encode::{
    Batch, Element, ElementData, addr, addr_pair, addr_port, addr_proto_port, proto_port, slot_range,
    slot_ranges,
};
use encode::{MsgInfo, end_message, start_message};
pub use read::{BaseHook, ChainInfo, RuleInfo};

pub use crate::slots::SLOTS;

// linux/netlink.h
const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;
// linux/netfilter/nfnetlink.h
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNETLINK_V0: u8 = 0;
// linux/netfilter.h
const NFPROTO_UNSPEC: u8 = 0;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
// linux/netfilter/nf_tables.h
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFTA_GEN_ID: u16 = 1;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_KEY_END: u16 = 10;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
const NF_DROP: i32 = 0;
const NF_ACCEPT: i32 = 1;
const NFT_JUMP: i32 = -3;
const NFT_GOTO: i32 = -4;

/// Most bytes of elements one message carries (the nested attribute's `nla_len` is a `u16`, and a failed
/// message comes back whole in its error reply).
const MAX_ELEMENTS_BYTES: usize = 32 * 1024;
/// How long [`Writer::commit`] waits for the kernel's answer.
const ACK_TIMEOUT_SECS: i64 = 5;
/// The receive buffer: larger than any reply (an error reply quotes the failed message).
const RECV_BUF: usize = 128 * 1024;

/// What committing a batch failed with.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// A system call failed.
    #[error("nftables netlink socket: {0}")]
    Io(#[from] std::io::Error),
    /// The network namespace could not be entered.
    #[error("network namespace {}: {source}", path.display())]
    Netns {
        /// The namespace file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The kernel rejected a message; the whole batch was discarded.
    #[error("{op} in {set}: {message} (errno {errno})")]
    Kernel {
        /// What the message did (`add element`, `delete element`; `commit` when the transaction as a whole
        /// failed).
        op: String,
        /// The set, as `FAMILY TABLE SET` (empty for `commit`).
        set: String,
        /// The error number (positive, e.g. `ENOENT` = 2).
        errno: i32,
        /// The error's description (strerror).
        message: String,
    },
    /// A dump (reading tables back) saw a transaction commit midway (`NLM_F_DUMP_INTR`): what it read may
    /// mix two rulesets. Reading again is the cure.
    #[error("the {0} dump was interrupted by a concurrent change")]
    Interrupted(String),
    /// The kernel's answer was not what the protocol says, or did not come in time.
    #[error("nftables netlink protocol: {0}")]
    Protocol(String),
}

impl From<Errno> for NetlinkError {
    fn from(e: Errno) -> Self {
        NetlinkError::Io(e.into())
    }
}

/// Owns a `NETLINK_NETFILTER` socket and the sequence numbers of its messages; commits [`Batch`]es.
#[derive(Debug)]
pub struct Writer {
    fd: OwnedFd,
    seq: u32,
    /// What the socket buffers were last set to (what the kernel uses is twice that).
    sndbuf: usize,
    rcvbuf: usize,
    recv_buf: Vec<u8>,
}

fn open_socket() -> Result<OwnedFd, NetlinkError> {
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkNetFilter,
    )?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &TimeVal::new(ACK_TIMEOUT_SECS, 0))?;
    Ok(fd)
}

impl Writer {
    /// Opens the socket in the current network namespace, or in the one at `netns` (e.g.
    /// `/run/netns/NAME`). For the latter a short-lived thread enters the namespace and creates the socket
    /// there (a socket stays in the namespace it was created in); the calling thread's namespace does not
    /// change.
    pub fn open(netns: Option<&Path>) -> Result<Writer, NetlinkError> {
        let fd = match netns {
            None => open_socket()?,
            Some(path) => {
                let path = path.to_path_buf();
                std::thread::Builder::new()
                    .name("svcnet-netns".into())
                    .spawn(move || {
                        let ns_err = |source: std::io::Error| NetlinkError::Netns {
                            path: path.clone(),
                            source,
                        };
                        let f = File::open(&path).map_err(ns_err)?;
                        setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| ns_err(e.into()))?;
                        open_socket()
                    })?
                    .join()
                    .map_err(|_| NetlinkError::Protocol("network namespace thread panicked".into()))??
            }
        };
        let sndbuf = nix::sys::socket::getsockopt(&fd, sockopt::SndBuf)?;
        let rcvbuf = nix::sys::socket::getsockopt(&fd, sockopt::RcvBuf)?;
        // Any start will do; distinct from 0 so that a stray reply to nobody's message is not ours.
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() | 1)
            .unwrap_or(1);
        Ok(Writer {
            fd,
            seq,
            sndbuf,
            rcvbuf,
            recv_buf: vec![0; RECV_BUF],
        })
    }

    /// Sends the batch (BATCH_BEGIN, the element messages, BATCH_END) in one `sendmsg` and reads the
    /// kernel's acks. `Ok` means every message was applied and the transaction committed; otherwise the
    /// kernel applied none of it, and the error names the first message it rejected. An empty batch
    /// returns `Ok` without touching the socket.
    pub fn commit(&mut self, batch: &Batch) -> Result<(), NetlinkError> {
        if batch.is_empty() {
            return Ok(());
        }
        let seq = self.seq;
        let (buf, infos) = batch.encode(seq)?;
        self.seq = seq.wrapping_add(infos.len() as u32 + 2);
        self.grow_buffers(buf.len(), infos.len())?;
        // Answers to an earlier batch that timed out must not be taken for this one's.
        self.drain()?;
        self.send(&buf)?;
        let result = self.read_acks(seq, &infos);
        // Whatever is left (acks after an error) belongs to this batch: discard it now.
        let drained = self.drain();
        result.and(drained)
    }

    /// The ruleset's generation (`NFT_MSG_GETGEN`): every nftables transaction committed in the socket's
    /// network namespace, by anyone, adds one. Comparing it before and after our own commits tells
    /// whether anything else changed the ruleset in between.
    pub fn generation(&mut self) -> Result<u32, NetlinkError> {
        self.drain()?;
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        let mut buf = Vec::with_capacity(32);
        let msg = start_message(
            &mut buf,
            (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN,
            NLM_F_REQUEST,
            seq,
            NFPROTO_UNSPEC,
            0,
        );
        end_message(&mut buf, msg);
        self.send(&buf)?;
        loop {
            let Some(len) = self.recv_datagram()? else {
                return Err(NetlinkError::Protocol(format!(
                    "no generation from the kernel within {ACK_TIMEOUT_SECS} s"
                )));
            };
            if let Some(r) = parse_generation(&self.recv_buf[..len], seq) {
                return r;
            }
        }
    }

    /// Sends one datagram to the kernel, whole.
    fn send(&self, buf: &[u8]) -> Result<(), NetlinkError> {
        loop {
            match sendto(
                self.fd.as_raw_fd(),
                buf,
                &NetlinkAddr::new(0, 0),
                MsgFlags::empty(),
            ) {
                Ok(n) if n == buf.len() => return Ok(()),
                Ok(n) => return Err(NetlinkError::Protocol(format!("sent {n} of {} bytes", buf.len()))),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Receives one datagram into `recv_buf`: its length, or `None` when nothing came within the
    /// socket's timeout.
    fn recv_datagram(&mut self) -> Result<Option<usize>, NetlinkError> {
        loop {
            match recv(self.fd.as_raw_fd(), &mut self.recv_buf, MsgFlags::empty()) {
                Ok(len) => return Ok(Some(len)),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Makes the send buffer hold the whole batch (a batch must be one `sendmsg`) and the receive buffer
    /// hold every ack (the kernel drops acks that do not fit).
    fn grow_buffers(&mut self, send_len: usize, messages: usize) -> Result<(), NetlinkError> {
        let snd = send_len + 64 * 1024;
        if snd > self.sndbuf {
            if setsockopt(&self.fd, sockopt::SndBufForce, &snd).is_err() {
                setsockopt(&self.fd, sockopt::SndBuf, &snd)?;
            }
            self.sndbuf = snd;
        }
        // An ack costs up to ~1 KiB of buffer; an error quotes its message.
        let rcv = send_len + messages * 2048 + RECV_BUF;
        if rcv > self.rcvbuf {
            if setsockopt(&self.fd, sockopt::RcvBufForce, &rcv).is_err() {
                setsockopt(&self.fd, sockopt::RcvBuf, &rcv)?;
            }
            self.rcvbuf = rcv;
        }
        Ok(())
    }

    /// Discards whatever is queued on the socket.
    fn drain(&mut self) -> Result<(), NetlinkError> {
        loop {
            match recv(self.fd.as_raw_fd(), &mut self.recv_buf, MsgFlags::MSG_DONTWAIT) {
                Ok(_) | Err(Errno::EINTR) | Err(Errno::ENOBUFS) => continue,
                Err(Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads the answers to the batch that started with sequence number `seq`: one ack per element
    /// message, or the first error.
    fn read_acks(&mut self, seq: u32, infos: &[MsgInfo]) -> Result<(), NetlinkError> {
        let n = infos.len();
        let mut acked = vec![false; n];
        let mut missing = n;
        while missing > 0 {
            let Some(len) = self.recv_datagram()? else {
                return Err(NetlinkError::Protocol(format!(
                    "no answer from the kernel within {ACK_TIMEOUT_SECS} s ({missing} of {n} acks missing)"
                )));
            };
            for (seq_r, error) in parse_acks(&self.recv_buf[..len])? {
                // 0 is BATCH_BEGIN (also where a failed commit is reported), n + 1 is BATCH_END.
                let idx = seq_r.wrapping_sub(seq) as usize;
                if idx > n + 1 {
                    continue; // not this batch's
                }
                if error == 0 {
                    if (1..=n).contains(&idx) && !acked[idx - 1] {
                        acked[idx - 1] = true;
                        missing -= 1;
                    }
                    continue;
                }
                let errno = error.checked_neg().unwrap_or(i32::MAX);
                let (op, set) = match idx {
                    0 => ("commit".to_string(), String::new()),
                    i if i == n + 1 => ("end batch".to_string(), String::new()),
                    i => (infos[i - 1].op.to_string(), infos[i - 1].set.clone()),
                };
                return Err(NetlinkError::Kernel {
                    op,
                    set,
                    errno,
                    message: Errno::from_raw(errno).desc().to_string(),
                });
            }
        }
        Ok(())
    }
}

/// One netlink message of a datagram: its type, sequence number, and the whole message with its header.
type Message<'a> = (u16, u32, &'a [u8]);

/// The netlink messages in one datagram.
fn messages(mut data: &[u8]) -> Result<Vec<Message<'_>>, NetlinkError> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let word = |at: usize| u32::from_ne_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]]);
        let len = word(0) as usize;
        let ty = u16::from_ne_bytes([data[4], data[5]]);
        let seq = word(8);
        if len < NLMSG_HDRLEN || len > data.len() {
            return Err(NetlinkError::Protocol(format!(
                "reply of {len} bytes in a datagram of {}",
                data.len()
            )));
        }
        out.push((ty, seq, &data[..len]));
        data = &data[len.next_multiple_of(4).min(data.len())..];
    }
    Ok(out)
}

/// The error code of an `NLMSG_ERROR` message: 0 (an ack) or a negative errno.
fn error_code(msg: &[u8]) -> Result<i32, NetlinkError> {
    match msg.get(NLMSG_HDRLEN..NLMSG_HDRLEN + 4) {
        Some(b) => Ok(i32::from_ne_bytes([b[0], b[1], b[2], b[3]])),
        None => Err(NetlinkError::Protocol("short NLMSG_ERROR".into())),
    }
}

/// The answer to the `NFT_MSG_GETGEN` with sequence number `seq` in one datagram, if it is there: the
/// generation, or the kernel's error.
fn parse_generation(data: &[u8], seq: u32) -> Option<Result<u32, NetlinkError>> {
    // nlmsghdr, then nfgenmsg (4 bytes), then attributes.
    const ATTRS: usize = NLMSG_HDRLEN + 4;
    let msgs = match messages(data) {
        Ok(m) => m,
        Err(e) => return Some(Err(e)),
    };
    for (ty, _, msg) in msgs.into_iter().filter(|m| m.1 == seq) {
        if ty == NLMSG_ERROR {
            let errno = match error_code(msg) {
                Ok(e) => e.checked_neg().unwrap_or(i32::MAX),
                Err(e) => return Some(Err(e)),
            };
            return Some(Err(NetlinkError::Kernel {
                op: "get generation".into(),
                set: String::new(),
                errno,
                message: Errno::from_raw(errno).desc().to_string(),
            }));
        }
        if ty == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN {
            let mut attrs = msg.get(ATTRS..).unwrap_or_default();
            while attrs.len() >= 4 {
                let alen = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
                let aty = u16::from_ne_bytes([attrs[2], attrs[3]]) & !NLA_F_NESTED;
                if alen < 4 || alen > attrs.len() {
                    break;
                }
                if aty == NFTA_GEN_ID && alen >= 8 {
                    return Some(Ok(u32::from_be_bytes([attrs[4], attrs[5], attrs[6], attrs[7]])));
                }
                attrs = &attrs[alen.next_multiple_of(4).min(attrs.len())..];
            }
            return Some(Err(NetlinkError::Protocol(
                "generation message without an id".into(),
            )));
        }
    }
    None
}

/// The `NLMSG_ERROR` messages in one datagram: (sequence number, error: 0 or a negative errno). Other
/// types (NLMSG_DONE, notifications) carry nothing for us.
fn parse_acks(data: &[u8]) -> Result<Vec<(u32, i32)>, NetlinkError> {
    messages(data)?
        .into_iter()
        .filter(|(ty, _, _)| *ty == NLMSG_ERROR)
        .map(|(_, seq, msg)| Ok((seq, error_code(msg)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::encode::encode_element;
    use super::*;
    use crate::family::Family;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn encoders() {
        assert_eq!(addr(ip("10.0.0.1")), [10, 0, 0, 1]);
        assert_eq!(addr(ip("fd00::1")).len(), 16);
        assert_eq!(addr(ip("fd00::1"))[0], 0xfd);
        assert_eq!(addr(ip("fd00::1"))[15], 1);
        assert_eq!(
            addr_proto_port(ip("10.96.0.1"), 6, 80),
            [10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]
        );
        assert_eq!(proto_port(17, 30000), [17, 0, 0, 0, 0x75, 0x30, 0, 0]);
        assert_eq!(
            addr_pair(ip("10.0.0.1"), ip("10.0.0.2")),
            [10, 0, 0, 1, 10, 0, 0, 2]
        );
        assert_eq!(addr_port(ip("10.0.0.3"), 8080), [10, 0, 0, 3, 0x1f, 0x90, 0, 0]);
        let v6 = addr_proto_port(ip("fd00::1"), 6, 443);
        assert_eq!(v6.len(), 24);
        assert_eq!(&v6[16..], [6, 0, 0, 0, 1, 0xbb, 0, 0]);
    }

    /// The slot of a `proto . slot` key, checking the protocol field.
    fn slot(key: &[u8], proto: u8) -> u32 {
        assert_eq!(key.len(), 8);
        assert_eq!(key[..4], [proto, 0, 0, 0]);
        u32::from_be_bytes(key[4..].try_into().unwrap())
    }

    /// The ranges as (first, last inclusive, target).
    fn ranges(elems: &[Element], proto: u8) -> Vec<(u32, u32, Vec<u8>)> {
        elems
            .iter()
            .map(|e| {
                assert!(!e.interval_end);
                let Some(ElementData::Value(t)) = &e.data else {
                    panic!("range without data")
                };
                let end = e.key_end.as_ref().expect("range without key end");
                (slot(&e.key, proto), slot(end, proto), t.clone())
            })
            .collect()
    }

    #[test]
    fn slot_ranges_boundaries() {
        assert!(slot_ranges(6, &[]).is_empty());
        let t = |i: u32| i.to_be_bytes().to_vec();
        assert_eq!(ranges(&slot_ranges(6, &[t(7)]), 6), [(0, 65535, t(7))]);
        let three = slot_ranges(17, &[t(0), t(1), t(2)]);
        assert_eq!(
            ranges(&three, 17),
            [(0, 21844, t(0)), (21845, 43689, t(1)), (43690, 65535, t(2))]
        );
        // Protocol padded to 4 bytes, then the slot as a big-endian u32: 21845 = 0x5555.
        assert_eq!(three[1].key, [17, 0, 0, 0, 0, 0, 0x55, 0x55]);
        assert_eq!(
            three[1].key_end.as_deref(),
            Some(&[17, 0, 0, 0, 0, 0, 0xaa, 0xa9][..])
        );
        assert_eq!(
            three[2].key_end.as_deref(),
            Some(&[17, 0, 0, 0, 0, 0, 0xff, 0xff][..])
        );
        for n in [1u32, 2, 3, 5, 7, 100, 1000, 4097, 65535, 65536] {
            let targets: Vec<Vec<u8>> = (0..n).map(t).collect();
            let r = ranges(&slot_ranges(6, &targets), 6);
            assert_eq!(r.len(), n as usize);
            assert_eq!(r[0].0, 0);
            assert_eq!(r.last().unwrap().1, SLOTS - 1);
            let (min, max) = r.iter().fold((u32::MAX, 0), |(lo, hi), (first, last, _)| {
                assert!(first <= last, "n={n}: empty range {first}-{last}");
                (lo.min(last - first + 1), hi.max(last - first + 1))
            });
            assert!(min >= 1 && max - min <= 1, "n={n}: sizes {min}..={max}");
            for (i, w) in r.windows(2).enumerate() {
                assert_eq!(w[0].1 + 1, w[1].0, "n={n}: gap or overlap after range {i}");
            }
            for (i, (_, _, target)) in r.iter().enumerate() {
                assert_eq!(*target, t(i as u32));
            }
        }
        // More targets than slots: the first 65536 get one slot each.
        let targets: Vec<Vec<u8>> = (0..70000).map(t).collect();
        let r = ranges(&slot_ranges(6, &targets), 6);
        assert_eq!(r.len(), SLOTS as usize);
        assert_eq!(r.last().unwrap(), &(SLOTS - 1, SLOTS - 1, t(SLOTS - 1)));
    }

    /// A range element on the wire: key, key end (attribute 10), data, and no flags.
    #[test]
    fn range_element_layout() {
        let mut buf = Vec::new();
        let e = slot_ranges(6, &[addr_port(ip("10.0.0.1"), 80)]);
        assert_eq!(e.len(), 1);
        encode_element(&mut buf, &e[0]).unwrap();
        let mut want: Vec<u8> = Vec::new();
        let nla = |w: &mut Vec<u8>, len: u16, ty: u16| {
            w.extend_from_slice(&len.to_ne_bytes());
            w.extend_from_slice(&ty.to_ne_bytes());
        };
        nla(&mut want, 52, 0x8001); // LIST_ELEM
        nla(&mut want, 16, 0x8001); // KEY
        nla(&mut want, 12, 1);
        want.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0]);
        nla(&mut want, 16, 0x800a); // KEY_END
        nla(&mut want, 12, 1);
        want.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0xff, 0xff]);
        nla(&mut want, 16, 0x8002); // DATA
        nla(&mut want, 12, 1);
        want.extend_from_slice(&[10, 0, 0, 1, 0, 80, 0, 0]);
        assert_eq!(buf, want);
    }

    /// One add of `tcp . 30001` to `ip t pp`: the bytes `nft --debug=mnl add element ip t pp { tcp . 30001 }`
    /// shows (without its NFTA_SET_ELEM_LIST_SET_ID), plus NLM_F_ACK|NLM_F_CREATE.
    #[test]
    fn message_layout() {
        let mut b = Batch::new();
        assert!(b.is_empty());
        b.add(Family::V4, "t", "pp", vec![Element::key(proto_port(6, 30001))]);
        b.delete(Family::V4, "t", "pp", vec![]);
        assert_eq!(b.len(), 1);
        let (buf, infos) = b.encode(100).unwrap();
        assert_eq!(
            infos,
            [MsgInfo {
                op: "add element",
                set: "ip t pp".into()
            }]
        );
        let mut want: Vec<u8> = Vec::new();
        let hdr = |w: &mut Vec<u8>, len: u32, ty: u16, flags: u16, seq: u32| {
            w.extend_from_slice(&len.to_ne_bytes());
            w.extend_from_slice(&ty.to_ne_bytes());
            w.extend_from_slice(&flags.to_ne_bytes());
            w.extend_from_slice(&seq.to_ne_bytes());
            w.extend_from_slice(&0u32.to_ne_bytes());
        };
        let nla = |w: &mut Vec<u8>, len: u16, ty: u16| {
            w.extend_from_slice(&len.to_ne_bytes());
            w.extend_from_slice(&ty.to_ne_bytes());
        };
        // BATCH_BEGIN: AF_UNSPEC, version 0, res_id 10 big-endian.
        hdr(&mut want, 20, 0x10, 1, 100);
        want.extend_from_slice(&[0, 0, 0, 10]);
        // NEWSETELEM, ip.
        hdr(&mut want, 60, 0x0a0c, 0x1 | 0x4 | 0x400, 101);
        want.extend_from_slice(&[2, 0, 0, 0]);
        nla(&mut want, 6, 1);
        want.extend_from_slice(b"t\0\0\0");
        nla(&mut want, 7, 2);
        want.extend_from_slice(b"pp\0\0");
        nla(&mut want, 24, 0x8003); // ELEMENTS
        nla(&mut want, 20, 0x8001); // LIST_ELEM
        nla(&mut want, 16, 0x8001); // KEY
        nla(&mut want, 12, 1); // DATA_VALUE
        want.extend_from_slice(&[6, 0, 0, 0, 0x75, 0x31, 0, 0]);
        // BATCH_END.
        hdr(&mut want, 20, 0x11, 1, 102);
        want.extend_from_slice(&[0, 0, 0, 10]);
        assert_eq!(buf, want);
    }

    #[test]
    fn element_data_layout() {
        let mut buf = Vec::new();
        encode_element(
            &mut buf,
            &Element::map(
                addr_proto_port(ip("10.96.0.1"), 6, 80),
                ElementData::Goto("c".into()),
            ),
        )
        .unwrap();
        let mut want: Vec<u8> = Vec::new();
        let nla = |w: &mut Vec<u8>, len: u16, ty: u16| {
            w.extend_from_slice(&len.to_ne_bytes());
            w.extend_from_slice(&ty.to_ne_bytes());
        };
        nla(&mut want, 48, 0x8001); // LIST_ELEM
        nla(&mut want, 20, 0x8001); // KEY
        nla(&mut want, 16, 1);
        want.extend_from_slice(&[10, 96, 0, 1, 6, 0, 0, 0, 0, 80, 0, 0]);
        nla(&mut want, 24, 0x8002); // DATA
        nla(&mut want, 20, 0x8002); // VERDICT
        nla(&mut want, 8, 1); // CODE
        want.extend_from_slice(&(-4i32).to_be_bytes());
        nla(&mut want, 6, 2); // CHAIN
        want.extend_from_slice(b"c\0\0\0");
        assert_eq!(buf, want);

        buf.clear();
        encode_element(
            &mut buf,
            &Element {
                key: vec![0, 1, 0, 0],
                data: None,
                interval_end: true,
                key_end: None,
            },
        )
        .unwrap();
        want.clear();
        nla(&mut want, 24, 0x8001);
        nla(&mut want, 12, 0x8001);
        nla(&mut want, 8, 1);
        want.extend_from_slice(&[0, 1, 0, 0]);
        nla(&mut want, 8, 3); // FLAGS
        want.extend_from_slice(&1u32.to_be_bytes());
        assert_eq!(buf, want);
    }

    /// Walks an encoded batch: (type, flags, seq, element count) per message.
    fn walk(mut buf: &[u8]) -> Vec<(u16, u16, u32, usize)> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            let len = u32::from_ne_bytes(buf[0..4].try_into().unwrap()) as usize;
            let ty = u16::from_ne_bytes(buf[4..6].try_into().unwrap());
            let flags = u16::from_ne_bytes(buf[6..8].try_into().unwrap());
            let seq = u32::from_ne_bytes(buf[8..12].try_into().unwrap());
            let mut attrs = &buf[20..len];
            let mut count = 0;
            while !attrs.is_empty() {
                let alen = u16::from_ne_bytes(attrs[0..2].try_into().unwrap()) as usize;
                let aty = u16::from_ne_bytes(attrs[2..4].try_into().unwrap());
                if aty == 0x8003 {
                    let mut elems = &attrs[4..alen];
                    while !elems.is_empty() {
                        let elen = u16::from_ne_bytes(elems[0..2].try_into().unwrap()) as usize;
                        count += 1;
                        elems = &elems[elen.next_multiple_of(4)..];
                    }
                }
                attrs = &attrs[alen.next_multiple_of(4)..];
            }
            out.push((ty, flags, seq, count));
            buf = &buf[len..];
        }
        out
    }

    #[test]
    fn large_sets_are_split() {
        let mut b = Batch::new();
        let keys: Vec<Element> = (0..5000u32)
            .map(|i| Element::key(addr_pair(ip("10.0.0.1"), IpAddr::from(i.to_be_bytes()))))
            .collect();
        b.delete(Family::V4, "t", "s", keys[..10].to_vec());
        b.add(Family::V4, "t", "s", keys.clone());
        b.add(
            Family::V6,
            "t",
            "vm",
            vec![Element::map(vec![0; 40], ElementData::Accept)],
        );
        assert_eq!(b.len(), 5011);
        let seq = u32::MAX - 1; // wraps
        let (buf, infos) = b.encode(seq).unwrap();
        let msgs = walk(&buf);
        assert_eq!(msgs.len(), infos.len() + 2);
        assert!(infos.len() > 3, "5,000 elements fit in one message?");
        assert_eq!(msgs[0].0, 0x10);
        assert_eq!(msgs.last().unwrap().0, 0x11);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(m.2, seq.wrapping_add(i as u32));
        }
        let inner = &msgs[1..msgs.len() - 1];
        assert_eq!(inner[0], (0x0a0e, 0x5, seq.wrapping_add(1), 10));
        assert_eq!(infos[0].op, "delete element");
        let adds: usize = inner[1..inner.len() - 1].iter().map(|m| m.3).sum();
        assert_eq!(adds, 5000);
        assert!(inner.iter().all(|m| m.3 > 0));
        assert_eq!(infos.last().unwrap().set, "ip6 t vm");
        assert_eq!(inner.last().unwrap().3, 1);
        // Every message's elements stay within the limit.
        let mut rest = &buf[..];
        while !rest.is_empty() {
            let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap()) as usize;
            assert!(len <= MAX_ELEMENTS_BYTES + 1024);
            rest = &rest[len..];
        }
    }

    #[test]
    fn acks_parse() {
        let mut d = Vec::new();
        for (seq, err) in [(5u32, 0i32), (6, -2)] {
            d.extend_from_slice(&36u32.to_ne_bytes());
            d.extend_from_slice(&2u16.to_ne_bytes());
            d.extend_from_slice(&0u16.to_ne_bytes());
            d.extend_from_slice(&seq.to_ne_bytes());
            d.extend_from_slice(&0u32.to_ne_bytes());
            d.extend_from_slice(&err.to_ne_bytes());
            d.extend_from_slice(&[0; 16]);
        }
        assert_eq!(parse_acks(&d).unwrap(), [(5, 0), (6, -2)]);
        assert!(parse_acks(&d[..30]).is_err());
    }

    #[test]
    fn empty_commit_does_not_touch_the_socket() {
        // Opening needs no privilege; committing nothing sends nothing.
        if let Ok(mut w) = Writer::open(None) {
            w.commit(&Batch::new()).unwrap();
        }
    }
}
