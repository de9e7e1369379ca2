//! The batch on the wire: element changes encoded as nftables netlink messages, and the encoders of keys
//! and data in the kernel's register layout.

use std::net::IpAddr;

use super::{
    MAX_ELEMENTS_BYTES, NF_ACCEPT, NF_DROP, NFNETLINK_V0, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES, NFPROTO_IPV4, NFPROTO_IPV6, NFPROTO_UNSPEC, NFT_GOTO, NFT_JUMP, NFT_MSG_DELSETELEM,
    NFT_MSG_NEWSETELEM, NFT_SET_ELEM_INTERVAL_END, NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_LIST_ELEM,
    NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END,
    NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE, NFTA_VERDICT_CHAIN,
    NFTA_VERDICT_CODE, NLA_F_NESTED, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST, NetlinkError,
};
use crate::family::Family;

/// One element: key bytes as the kernel stores them, optional data, interval-end flag.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Element {
    /// The key, in register layout (see the encoders, e.g. [`addr_proto_port`]).
    pub key: Vec<u8>,
    /// What a map element maps to; `None` for set elements, deletions and interval ends.
    pub data: Option<ElementData>,
    /// Whether this element closes an interval (`NFT_SET_ELEM_INTERVAL_END`): its key is the first value
    /// after the range (single-field interval sets, kept in an rbtree).
    pub interval_end: bool,
    /// The last key of a range (`NFTA_SET_ELEM_KEY_END`, inclusive): sets with concatenated interval keys
    /// (the kernel's pipapo sets) hold a range as one element.
    pub key_end: Option<Vec<u8>>,
}

impl Element {
    /// A set element (or a map element to delete: the kernel finds elements by key).
    pub fn key(key: Vec<u8>) -> Element {
        Element {
            key,
            data: None,
            interval_end: false,
            key_end: None,
        }
    }

    /// A map element.
    pub fn map(key: Vec<u8>, data: ElementData) -> Element {
        Element {
            key,
            data: Some(data),
            interval_end: false,
            key_end: None,
        }
    }
}

/// The data of a map element.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ElementData {
    /// A value (for example a DNAT target, [`addr_port`]).
    Value(Vec<u8>),
    /// `goto CHAIN` (verdict maps).
    Goto(String),
    /// `jump CHAIN` (verdict maps).
    Jump(String),
    /// `drop` (verdict maps).
    Drop,
    /// `accept` (verdict maps).
    Accept,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpKind {
    Add,
    Delete,
}

impl OpKind {
    fn name(self) -> &'static str {
        match self {
            OpKind::Add => "add element",
            OpKind::Delete => "delete element",
        }
    }
}

#[derive(Debug, Clone)]
struct Op {
    kind: OpKind,
    family: Family,
    table: String,
    set: String,
    elements: Vec<Element>,
}

/// A batch of element changes, committed all-or-nothing, in the order they were added.
#[derive(Debug, Default, Clone)]
pub struct Batch {
    ops: Vec<Op>,
}

/// What one message of an encoded batch does, to explain its error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MsgInfo {
    pub(super) op: &'static str,
    pub(super) set: String,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Adds `elements` to `family table set`, as `nft add element` does: an element that is already there
    /// with the same data is no error, but one whose key is there with other data, or an interval that
    /// overlaps one in the set, fails the batch with `EEXIST`. To change what a key maps to, delete it and
    /// add it in the same batch.
    pub fn add(&mut self, family: Family, table: &str, set: &str, elements: Vec<Element>) {
        self.push(OpKind::Add, family, table, set, elements);
    }

    /// Deletes `elements` (found by key and interval-end flag; their data is ignored) from `family table
    /// set`; an element that is not there fails the whole batch with `ENOENT`. The kernel does not pair
    /// interval start and end elements: delete both, or the end element stays in the set (invisible in
    /// `nft list`, but it is there).
    pub fn delete(&mut self, family: Family, table: &str, set: &str, elements: Vec<Element>) {
        self.push(OpKind::Delete, family, table, set, elements);
    }

    fn push(&mut self, kind: OpKind, family: Family, table: &str, set: &str, elements: Vec<Element>) {
        if elements.is_empty() {
            return;
        }
        self.ops.push(Op {
            kind,
            family,
            table: table.to_string(),
            set: set.to_string(),
            elements,
        });
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// The number of element operations (each added or deleted element counts once).
    pub fn len(&self) -> usize {
        self.ops.iter().map(|op| op.elements.len()).sum()
    }

    /// The batch on the wire: BATCH_BEGIN with sequence number `seq`, the element messages with `seq + 1`
    /// onwards, BATCH_END; and what each element message does.
    pub(super) fn encode(&self, seq: u32) -> Result<(Vec<u8>, Vec<MsgInfo>), NetlinkError> {
        let mut buf = Vec::with_capacity(256 + self.len() * 48);
        let mut infos = Vec::new();
        batch_marker(&mut buf, NFNL_MSG_BATCH_BEGIN, seq);
        let mut elem = Vec::with_capacity(512);
        for op in &self.ops {
            let info = MsgInfo {
                op: op.kind.name(),
                set: format!("{} {} {}", op.family.nft(), op.table, op.set),
            };
            let mut open: Option<(usize, usize)> = None;
            for e in &op.elements {
                elem.clear();
                encode_element(&mut elem, e)?;
                if let Some((msg, nest)) = open
                    && buf.len() - nest + elem.len() > MAX_ELEMENTS_BYTES
                {
                    finish_message(&mut buf, msg, nest)?;
                    open = None;
                }
                if open.is_none() {
                    let msg_seq = seq.wrapping_add(1).wrapping_add(infos.len() as u32);
                    infos.push(info.clone());
                    open = Some(start_element_message(&mut buf, op, msg_seq));
                }
                buf.extend_from_slice(&elem);
            }
            if let Some((msg, nest)) = open {
                finish_message(&mut buf, msg, nest)?;
            }
        }
        batch_marker(
            &mut buf,
            NFNL_MSG_BATCH_END,
            seq.wrapping_add(1).wrapping_add(infos.len() as u32),
        );
        Ok((buf, infos))
    }
}

fn put_u16(buf: &mut Vec<u8>, v: u16) {
    buf.extend_from_slice(&v.to_ne_bytes());
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_ne_bytes());
}

fn pad4(buf: &mut Vec<u8>) {
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// Starts a netlink message (its length is filled in by [`end_message`]); returns where it starts.
pub(super) fn start_message(
    buf: &mut Vec<u8>,
    ty: u16,
    flags: u16,
    seq: u32,
    family: u8,
    res_id: u16,
) -> usize {
    let start = buf.len();
    put_u32(buf, 0);
    put_u16(buf, ty);
    put_u16(buf, flags);
    put_u32(buf, seq);
    put_u32(buf, 0);
    // nfgenmsg: family, version, res_id (big-endian).
    buf.push(family);
    buf.push(NFNETLINK_V0);
    buf.extend_from_slice(&res_id.to_be_bytes());
    start
}

pub(super) fn end_message(buf: &mut [u8], start: usize) {
    let len = (buf.len() - start) as u32;
    buf[start..start + 4].copy_from_slice(&len.to_ne_bytes());
}

fn batch_marker(buf: &mut Vec<u8>, ty: u16, seq: u32) {
    let start = start_message(buf, ty, NLM_F_REQUEST, seq, NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES);
    end_message(buf, start);
}

fn attr(buf: &mut Vec<u8>, ty: u16, payload: &[u8]) {
    put_u16(buf, (4 + payload.len()) as u16);
    put_u16(buf, ty);
    buf.extend_from_slice(payload);
    pad4(buf);
}

pub(super) fn attr_str(buf: &mut Vec<u8>, ty: u16, s: &str) {
    put_u16(buf, (4 + s.len() + 1) as u16);
    put_u16(buf, ty);
    buf.extend_from_slice(s.as_bytes());
    buf.push(0);
    pad4(buf);
}

fn nest_start(buf: &mut Vec<u8>, ty: u16) -> usize {
    let start = buf.len();
    put_u16(buf, 0);
    put_u16(buf, ty | NLA_F_NESTED);
    start
}

fn nest_end(buf: &mut [u8], start: usize) -> Result<(), NetlinkError> {
    let len = u16::try_from(buf.len() - start)
        .map_err(|_| NetlinkError::Protocol(format!("nested attribute of {} bytes", buf.len() - start)))?;
    buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
    Ok(())
}

pub(super) fn family_code(family: Family) -> u8 {
    match family {
        Family::V4 => NFPROTO_IPV4,
        Family::V6 => NFPROTO_IPV6,
    }
}

/// Starts `op`'s element message up to the open ELEMENTS nest: returns (message start, nest start).
fn start_element_message(buf: &mut Vec<u8>, op: &Op, seq: u32) -> (usize, usize) {
    let (ty, flags) = match op.kind {
        OpKind::Add => (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE),
        OpKind::Delete => (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK),
    };
    let msg = start_message(
        buf,
        (NFNL_SUBSYS_NFTABLES << 8) | ty,
        flags,
        seq,
        family_code(op.family),
        0,
    );
    attr_str(buf, NFTA_SET_ELEM_LIST_TABLE, &op.table);
    attr_str(buf, NFTA_SET_ELEM_LIST_SET, &op.set);
    let nest = nest_start(buf, NFTA_SET_ELEM_LIST_ELEMENTS);
    (msg, nest)
}

fn finish_message(buf: &mut [u8], msg: usize, nest: usize) -> Result<(), NetlinkError> {
    nest_end(buf, nest)?;
    end_message(buf, msg);
    Ok(())
}

/// One `NFTA_LIST_ELEM`.
pub(super) fn encode_element(buf: &mut Vec<u8>, e: &Element) -> Result<(), NetlinkError> {
    let elem = nest_start(buf, NFTA_LIST_ELEM);
    let key = nest_start(buf, NFTA_SET_ELEM_KEY);
    attr(buf, NFTA_DATA_VALUE, &e.key);
    nest_end(buf, key)?;
    if let Some(end) = &e.key_end {
        let k = nest_start(buf, NFTA_SET_ELEM_KEY_END);
        attr(buf, NFTA_DATA_VALUE, end);
        nest_end(buf, k)?;
    }
    if let Some(data) = &e.data {
        let d = nest_start(buf, NFTA_SET_ELEM_DATA);
        let verdict = |buf: &mut Vec<u8>, code: i32, chain: Option<&str>| -> Result<(), NetlinkError> {
            let v = nest_start(buf, NFTA_DATA_VERDICT);
            attr(buf, NFTA_VERDICT_CODE, &code.to_be_bytes());
            if let Some(chain) = chain {
                attr_str(buf, NFTA_VERDICT_CHAIN, chain);
            }
            nest_end(buf, v)
        };
        match data {
            ElementData::Value(v) => attr(buf, NFTA_DATA_VALUE, v),
            ElementData::Goto(chain) => verdict(buf, NFT_GOTO, Some(chain))?,
            ElementData::Jump(chain) => verdict(buf, NFT_JUMP, Some(chain))?,
            ElementData::Drop => verdict(buf, NF_DROP, None)?,
            ElementData::Accept => verdict(buf, NF_ACCEPT, None)?,
        }
        nest_end(buf, d)?;
    }
    if e.interval_end {
        attr(buf, NFTA_SET_ELEM_FLAGS, &NFT_SET_ELEM_INTERVAL_END.to_be_bytes());
    }
    nest_end(buf, elem)
}

/// An address as the kernel stores it: 4 or 16 bytes, network order.
pub fn addr(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

fn proto_field(buf: &mut Vec<u8>, proto: u8) {
    buf.extend_from_slice(&[proto, 0, 0, 0]);
}

fn port_field(buf: &mut Vec<u8>, port: u16) {
    buf.extend_from_slice(&port.to_be_bytes());
    buf.extend_from_slice(&[0, 0]);
}

/// The key `ADDR . inet_proto . inet_service`: address, protocol padded to 4 bytes, port (big-endian)
/// padded to 4 bytes.
pub fn addr_proto_port(ip: IpAddr, proto: u8, port: u16) -> Vec<u8> {
    let mut k = addr(ip);
    proto_field(&mut k, proto);
    port_field(&mut k, port);
    k
}

/// The key `inet_proto . inet_service`: protocol padded to 4 bytes, port (big-endian) padded to 4 bytes.
pub fn proto_port(proto: u8, port: u16) -> Vec<u8> {
    let mut k = Vec::with_capacity(8);
    proto_field(&mut k, proto);
    port_field(&mut k, port);
    k
}

/// The key `ADDR . ADDR`.
pub fn addr_pair(a: IpAddr, b: IpAddr) -> Vec<u8> {
    let mut k = addr(a);
    k.extend_from_slice(&addr(b));
    k
}

/// `ADDR . inet_service`: the address, then the port (big-endian) padded to 4 bytes; the data of a DNAT
/// map (`ip daddr . tcp dport`).
pub fn addr_port(ip: IpAddr, port: u16) -> Vec<u8> {
    let mut k = addr(ip);
    port_field(&mut k, port);
    k
}

/// The elements of a concatenated interval map keyed by `meta l4proto . numgen random mod 65536` (a
/// pipapo set in the kernel) covering `proto . 0-65535` with `targets.len()` adjacent ranges of (nearly)
/// equal size, range `i` mapping to `targets[i]`: range `i` is `floor(i * 65536 / n)` to
/// `floor((i + 1) * 65536 / n) - 1` (see [`crate::slots::slot_ranges`]).
///
/// Each range is one element, exactly as nft sends `proto . lo-hi : target`: key `[proto, 0, 0, 0]`
/// followed by `lo` as a big-endian `u32`, `key_end` the same with `hi` (inclusive), no interval-end
/// flag. The slot is big-endian because nft stores the host-endian numgen value byte-swapped (its rules
/// do `byteorder reg = hton(reg, 4, 4)` before the lookup). To delete ranges, delete these same elements.
/// Beware that the kernel (pipapo, seen on 6.18) deletes the element *containing* the start key and does
/// not compare the key end: a stale delete removes whatever range now covers its first slot (even one
/// added earlier in the same batch) instead of failing with `ENOENT`. Empty `targets` give no elements;
/// targets beyond the [`SLOTS`]th get no range.
pub fn slot_ranges(proto: u8, targets: &[Vec<u8>]) -> Vec<Element> {
    crate::slots::slot_ranges(targets.len())
        .into_iter()
        .zip(targets)
        .map(|((lo, hi), target)| slot_range(proto, lo, hi, target.clone()))
        .collect()
}

/// One range of an endpoint map, `proto . first-last : target` (see [`slot_ranges`] for the layout).
pub fn slot_range(proto: u8, first: u32, last: u32, target: Vec<u8>) -> Element {
    let key = |slot: u32| {
        let mut k = Vec::with_capacity(8);
        proto_field(&mut k, proto);
        k.extend_from_slice(&slot.to_be_bytes());
        k
    };
    Element {
        key: key(first),
        data: Some(ElementData::Value(target)),
        interval_end: false,
        key_end: Some(key(last)),
    }
}
