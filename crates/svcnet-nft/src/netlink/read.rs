//! Reading tables back through netlink (for a takeover, [`crate::takeover`]): dumps of one family's
//! tables, chains, rules and set elements, decoded into only what the comparison needs. `nft list table`
//! does the same dumps and then turns every rule back into text, which at 10,000 Services costs about a
//! second of CPU; the dumps themselves take tens of milliseconds.
//!
//! The requests are `NFT_MSG_GETTABLE`/`GETCHAIN`/`GETRULE`/`GETSETELEM` with `NLM_F_DUMP`; the kernel
//! answers with a series of `NEW…` messages and `NLMSG_DONE`. A dump that a concurrent transaction
//! changed midway is flagged `NLM_F_DUMP_INTR` and reported as an error, so that nothing is decided
//! on a mix of two rulesets.

use nix::errno::Errno;

use super::encode::{attr_str, end_message, family_code, start_message};
use super::{
    ACK_TIMEOUT_SECS, Element, ElementData, NF_ACCEPT, NF_DROP, NFNL_SUBSYS_NFTABLES, NFT_GOTO, NFT_JUMP,
    NFT_SET_ELEM_INTERVAL_END, NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_LIST_ELEM, NFTA_SET_ELEM_DATA,
    NFTA_SET_ELEM_FLAGS, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END, NFTA_SET_ELEM_LIST_ELEMENTS,
    NFTA_SET_ELEM_LIST_SET, NFTA_SET_ELEM_LIST_TABLE, NFTA_VERDICT_CHAIN, NFTA_VERDICT_CODE, NLM_F_REQUEST,
    NLMSG_ERROR, NLMSG_HDRLEN, NetlinkError, Writer, error_code, messages,
};
use crate::family::Family;

// linux/netlink.h
const NLMSG_DONE: u16 = 3;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_DUMP_INTR: u16 = 0x10;
// linux/netfilter/nf_tables.h
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_NG_OFFSET: u16 = 4;
// libnftnl's rule user data: a comment is TLV type 0.
const NFTNL_UDATA_RULE_COMMENT: u8 = 0;

/// A chain as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainInfo {
    /// Its name.
    pub name: String,
    /// Where a base chain is attached; `None` for a regular chain.
    pub hook: Option<BaseHook>,
}

/// What makes a chain a base chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseHook {
    /// `filter`, `nat`, `route`.
    pub chain_type: String,
    /// The netfilter hook (`NF_INET_PRE_ROUTING` = 0 … `NF_INET_POST_ROUTING` = 4).
    pub hook: u32,
    /// The priority.
    pub priority: i32,
    /// The policy verdict (`NF_ACCEPT` = 1, `NF_DROP` = 0).
    pub policy: u32,
}

/// A rule, reduced to what a takeover looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleInfo {
    /// The chain it is in.
    pub chain: String,
    /// Its comment, if any.
    pub comment: Option<String>,
    /// The sets its `lookup` expressions name (`map @NAME`, `@NAME`), in order.
    pub lookups: Vec<String>,
    /// The offset of its `numgen` expression, if it has one.
    pub numgen_offset: Option<u32>,
}

/// The attributes in `b`: (type without the nested/byte-order flags, payload).
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if b.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([b[0], b[1]]) as usize;
        let ty = u16::from_ne_bytes([b[2], b[3]]) & 0x3fff;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((ty, payload))
    })
}

fn string(p: &[u8]) -> String {
    let end = p.iter().position(|&c| c == 0).unwrap_or(p.len());
    String::from_utf8_lossy(&p[..end]).into_owned()
}

fn be32(p: &[u8]) -> u32 {
    p.get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .unwrap_or_default()
}

/// The `NFTA_DATA_VALUE` inside a nested data attribute.
fn value(nested: &[u8]) -> Vec<u8> {
    attrs(nested)
        .find(|(t, _)| *t == NFTA_DATA_VALUE)
        .map(|(_, v)| v.to_vec())
        .unwrap_or_default()
}

/// An element's data: a value or a verdict. Verdicts this crate never writes (`continue`, `return`)
/// come back as their code's bytes, which then compare unequal to anything wanted.
fn data(nested: &[u8]) -> ElementData {
    for (t, v) in attrs(nested) {
        match t {
            NFTA_DATA_VALUE => return ElementData::Value(v.to_vec()),
            NFTA_DATA_VERDICT => {
                let mut code = None;
                let mut chain = None;
                for (vt, vv) in attrs(v) {
                    match vt {
                        NFTA_VERDICT_CODE => code = Some(be32(vv) as i32),
                        NFTA_VERDICT_CHAIN => chain = Some(string(vv)),
                        _ => {}
                    }
                }
                return match (code, chain) {
                    (Some(NFT_GOTO), Some(c)) => ElementData::Goto(c),
                    (Some(NFT_JUMP), Some(c)) => ElementData::Jump(c),
                    (Some(NF_DROP), None) => ElementData::Drop,
                    (Some(NF_ACCEPT), None) => ElementData::Accept,
                    (code, _) => ElementData::Value(code.unwrap_or(i32::MIN).to_be_bytes().to_vec()),
                };
            }
            _ => {}
        }
    }
    ElementData::Value(Vec::new())
}

/// One `NFTA_LIST_ELEM` of a set element dump.
fn element(p: &[u8]) -> Element {
    let mut e = Element::key(Vec::new());
    for (t, v) in attrs(p) {
        match t {
            NFTA_SET_ELEM_KEY => e.key = value(v),
            NFTA_SET_ELEM_KEY_END => e.key_end = Some(value(v)),
            NFTA_SET_ELEM_DATA => e.data = Some(data(v)),
            NFTA_SET_ELEM_FLAGS => e.interval_end = be32(v) & NFT_SET_ELEM_INTERVAL_END != 0,
            _ => {}
        }
    }
    e
}

/// The comment in a rule's user data (libnftnl's TLVs: type, length, value).
fn comment(mut udata: &[u8]) -> Option<String> {
    while udata.len() >= 2 {
        let (ty, len) = (udata[0], udata[1] as usize);
        let v = udata.get(2..2 + len)?;
        if ty == NFTNL_UDATA_RULE_COMMENT {
            return Some(string(v));
        }
        udata = &udata[2 + len..];
    }
    None
}

fn rule(msg: &[u8]) -> RuleInfo {
    let mut r = RuleInfo::default();
    for (t, v) in attrs(msg) {
        match t {
            NFTA_RULE_CHAIN => r.chain = string(v),
            NFTA_RULE_USERDATA => r.comment = comment(v),
            NFTA_RULE_EXPRESSIONS => {
                for (_, e) in attrs(v).filter(|(t, _)| *t == NFTA_LIST_ELEM) {
                    let mut name = String::new();
                    let mut body: &[u8] = &[];
                    for (et, ev) in attrs(e) {
                        match et {
                            NFTA_EXPR_NAME => name = string(ev),
                            NFTA_EXPR_DATA => body = ev,
                            _ => {}
                        }
                    }
                    match name.as_str() {
                        "lookup" => r.lookups.extend(
                            attrs(body)
                                .filter(|(t, _)| *t == NFTA_LOOKUP_SET)
                                .map(|(_, s)| string(s)),
                        ),
                        "numgen" => {
                            r.numgen_offset = Some(
                                attrs(body)
                                    .find(|(t, _)| *t == NFTA_NG_OFFSET)
                                    .map_or(0, |(_, o)| be32(o)),
                            )
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    r
}

impl Writer {
    /// Runs one dump: sends the request and hands each answer's attributes (after `nfgenmsg`) to `each`.
    fn dump(
        &mut self,
        ty: u16,
        family: Family,
        request: &[(u16, &str)],
        what: &str,
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), NetlinkError> {
        self.drain()?;
        let seq = self.seq;
        self.seq = seq.wrapping_add(1);
        let mut buf = Vec::with_capacity(64);
        let msg = start_message(
            &mut buf,
            (NFNL_SUBSYS_NFTABLES << 8) | ty,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family_code(family),
            0,
        );
        for (t, v) in request {
            attr_str(&mut buf, *t, v);
        }
        end_message(&mut buf, msg);
        self.send(&buf)?;
        let mut interrupted = false;
        loop {
            let Some(len) = self.recv_datagram()? else {
                return Err(NetlinkError::Protocol(format!(
                    "no answer to the {what} dump within {ACK_TIMEOUT_SECS} s"
                )));
            };
            for (mty, mseq, m) in messages(&self.recv_buf[..len])? {
                if mseq != seq {
                    continue;
                }
                interrupted |= u16::from_ne_bytes([m[6], m[7]]) & NLM_F_DUMP_INTR != 0;
                match mty {
                    NLMSG_DONE if interrupted => return Err(NetlinkError::Interrupted(what.to_string())),
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let e = error_code(m)?;
                        if e == 0 {
                            continue;
                        }
                        let errno = e.checked_neg().unwrap_or(i32::MAX);
                        return Err(NetlinkError::Kernel {
                            op: format!("dump {what}"),
                            set: String::new(),
                            errno,
                            message: Errno::from_raw(errno).desc().to_string(),
                        });
                    }
                    _ => each(m.get(NLMSG_HDRLEN + 4..).unwrap_or_default()),
                }
            }
        }
    }

    /// The names of the tables of `family`.
    pub fn tables(&mut self, family: Family) -> Result<Vec<String>, NetlinkError> {
        let mut out = Vec::new();
        self.dump(NFT_MSG_GETTABLE, family, &[], "tables", |m| {
            out.extend(
                attrs(m)
                    .filter(|(t, _)| *t == NFTA_TABLE_NAME)
                    .map(|(_, v)| string(v)),
            )
        })?;
        Ok(out)
    }

    /// The chains of table `family table`.
    pub fn chains(&mut self, family: Family, table: &str) -> Result<Vec<ChainInfo>, NetlinkError> {
        let mut out = Vec::new();
        // The kernel dumps the chains of every table of the family.
        self.dump(NFT_MSG_GETCHAIN, family, &[], "chains", |m| {
            let mut in_table = false;
            let mut c = ChainInfo {
                name: String::new(),
                hook: None,
            };
            let (mut ty, mut policy, mut hook) = (String::new(), 1, None);
            for (t, v) in attrs(m) {
                match t {
                    NFTA_CHAIN_TABLE => in_table = string(v) == table,
                    NFTA_CHAIN_NAME => c.name = string(v),
                    NFTA_CHAIN_TYPE => ty = string(v),
                    NFTA_CHAIN_POLICY => policy = be32(v),
                    NFTA_CHAIN_HOOK => {
                        let mut h = (0, 0);
                        for (ht, hv) in attrs(v) {
                            match ht {
                                NFTA_HOOK_HOOKNUM => h.0 = be32(hv),
                                NFTA_HOOK_PRIORITY => h.1 = be32(hv) as i32,
                                _ => {}
                            }
                        }
                        hook = Some(h);
                    }
                    _ => {}
                }
            }
            c.hook = hook.map(|(hook, priority)| BaseHook {
                chain_type: ty,
                hook,
                priority,
                policy,
            });
            if in_table {
                out.push(c);
            }
        })?;
        Ok(out)
    }

    /// The rules of table `family table`, chain by chain, in each chain's order.
    pub fn rules(&mut self, family: Family, table: &str) -> Result<Vec<RuleInfo>, NetlinkError> {
        let mut out = Vec::new();
        self.dump(
            NFT_MSG_GETRULE,
            family,
            &[(NFTA_RULE_TABLE, table)],
            "rules",
            |m| out.push(rule(m)),
        )?;
        Ok(out)
    }

    /// The elements of set `set` in table `family table`, as the kernel stores them.
    pub fn elements(&mut self, family: Family, table: &str, set: &str) -> Result<Vec<Element>, NetlinkError> {
        let mut out = Vec::new();
        self.dump(
            NFT_MSG_GETSETELEM,
            family,
            &[(NFTA_SET_ELEM_LIST_TABLE, table), (NFTA_SET_ELEM_LIST_SET, set)],
            "set elements",
            |m| {
                for (_, list) in attrs(m).filter(|(t, _)| *t == NFTA_SET_ELEM_LIST_ELEMENTS) {
                    out.extend(
                        attrs(list)
                            .filter(|(t, _)| *t == NFTA_LIST_ELEM)
                            .map(|(_, e)| element(e)),
                    );
                }
            },
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_comment_from_user_data() {
        // nft's layout: type 0, length with the NUL, the text.
        let mut u = vec![0u8, 6];
        u.extend_from_slice(b"hello\0");
        assert_eq!(comment(&u).as_deref(), Some("hello"));
        assert_eq!(comment(&[1, 1, 7]), None);
        assert_eq!(comment(&[0, 9, b'x']), None, "truncated");
    }

    #[test]
    fn elements_round_trip_through_the_encoder() {
        let e = Element {
            key: vec![6, 0, 0, 0, 0, 0, 0, 0],
            key_end: Some(vec![6, 0, 0, 0, 0, 0, 0xff, 0xff]),
            data: Some(ElementData::Value(vec![10, 0, 0, 1, 0, 80, 0, 0])),
            interval_end: false,
        };
        let g = Element::map(vec![10, 96, 0, 1], ElementData::Goto("service-x".into()));
        for want in [e, g] {
            let mut buf = Vec::new();
            super::super::encode::encode_element(&mut buf, &want).unwrap();
            let (t, inner) = attrs(&buf).next().unwrap();
            assert_eq!(t, NFTA_LIST_ELEM);
            assert_eq!(element(inner), want);
        }
    }
}
