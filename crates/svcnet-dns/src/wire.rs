//! The hot path's wire format: reading a query's header, question and OPT record, and writing
//! authoritative answers straight into a reused buffer.
//!
//! Cluster answers are simple (a handful of record types whose owner is nearly always the question),
//! so they are written by hand: no per-query message objects, names compressed against the question
//! (whose case the answer thereby echoes), and truncation decided record by record. Everything else
//! (forwarded answers, upstream data) goes through hickory-proto in `forward`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Record types the server names.
pub mod rtype {
    /// A.
    pub const A: u16 = 1;
    /// NS.
    pub const NS: u16 = 2;
    /// CNAME.
    pub const CNAME: u16 = 5;
    /// SOA.
    pub const SOA: u16 = 6;
    /// PTR.
    pub const PTR: u16 = 12;
    /// HINFO.
    pub const HINFO: u16 = 13;
    /// MX.
    pub const MX: u16 = 15;
    /// TXT.
    pub const TXT: u16 = 16;
    /// AAAA.
    pub const AAAA: u16 = 28;
    /// SRV.
    pub const SRV: u16 = 33;
    /// OPT (EDNS0).
    pub const OPT: u16 = 41;
    /// IXFR.
    pub const IXFR: u16 = 251;
    /// AXFR.
    pub const AXFR: u16 = 252;
    /// ANY.
    pub const ANY: u16 = 255;
}

/// Response codes.
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// Format error.
    pub const FORMERR: u8 = 1;
    /// Server failure.
    pub const SERVFAIL: u8 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// Not implemented.
    pub const NOTIMP: u8 = 4;
    /// Refused.
    pub const REFUSED: u8 = 5;
    /// Bad EDNS version (extended; the header carries its low 4 bits, 0).
    pub const BADVERS: u16 = 16;
}

/// The largest UDP answer we send, whatever a client advertises.
pub const MAX_UDP: usize = 4096;
/// The classic limit without EDNS.
pub const MIN_UDP: usize = 512;

/// A query name in lower case, dotted, without the final dot (the root is empty).
pub struct QName {
    buf: [u8; 256],
    len: usize,
    /// A label held a `.` or a byte outside printable ASCII: it can never be a cluster name.
    pub opaque: bool,
}

impl QName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        // Only printable ASCII is stored (anything else sets `opaque` and is replaced by '?').
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// EDNS0 data of a query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Edns {
    /// Advertised UDP payload size.
    pub payload: u16,
    /// EDNS version.
    pub version: u8,
    /// DNSSEC OK.
    pub dnssec_ok: bool,
}

/// A parsed query.
pub struct Query {
    /// Message id.
    pub id: u16,
    /// Opcode.
    pub opcode: u8,
    /// Recursion desired.
    pub rd: bool,
    /// Checking disabled.
    pub cd: bool,
    /// The question name, lowered.
    pub qname: QName,
    /// End of the question section in the packet (the question is echoed from it).
    pub question_end: usize,
    /// Question type.
    pub qtype: u16,
    /// Question class.
    pub qclass: u16,
    /// The OPT record, if any.
    pub edns: Option<Edns>,
}

impl Query {
    /// The largest response the client accepts over UDP.
    pub fn udp_limit(&self) -> usize {
        match self.edns {
            Some(e) => (e.payload as usize).clamp(MIN_UDP, MAX_UDP),
            None => MIN_UDP,
        }
    }
}

/// Why a packet is not a query we answer normally.
#[derive(Debug, PartialEq, Eq)]
pub enum Reject {
    /// Not even a header, or a response: say nothing.
    Drop,
    /// Answer with this rcode and no question (`FORMERR`, `NOTIMP`).
    Rcode {
        /// Message id.
        id: u16,
        /// Opcode, echoed.
        opcode: u8,
        /// RD, echoed.
        rd: bool,
        /// The rcode.
        rcode: u8,
    },
}

fn u16_at(p: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*p.get(i)?, *p.get(i + 1)?]))
}

/// Skips a (possibly compressed) name; returns the offset after it.
fn skip_name(p: &[u8], mut i: usize) -> Option<usize> {
    for _ in 0..128 {
        let len = *p.get(i)? as usize;
        match len & 0xC0 {
            0 if len == 0 => return Some(i + 1),
            0 => i += 1 + len,
            0xC0 => {
                p.get(i + 1)?;
                return Some(i + 2);
            }
            _ => return None,
        }
    }
    None
}

/// Parses a query. Never panics, whatever the bytes.
pub fn parse_query(p: &[u8]) -> Result<Query, Reject> {
    if p.len() < 12 {
        return Err(Reject::Drop);
    }
    let id = u16::from_be_bytes([p[0], p[1]]);
    let flags = u16::from_be_bytes([p[2], p[3]]);
    if flags & 0x8000 != 0 {
        return Err(Reject::Drop);
    }
    let opcode = ((flags >> 11) & 0xF) as u8;
    let rd = flags & 0x0100 != 0;
    let cd = flags & 0x0010 != 0;
    let reject = |rcode| Reject::Rcode {
        id,
        opcode,
        rd,
        rcode,
    };
    if opcode != 0 {
        return Err(reject(rcode::NOTIMP));
    }
    let qd = u16::from_be_bytes([p[4], p[5]]);
    let an = u16::from_be_bytes([p[6], p[7]]);
    let ns = u16::from_be_bytes([p[8], p[9]]);
    let ar = u16::from_be_bytes([p[10], p[11]]);
    // The same limits as miekg/dns's default accept function, which CoreDNS serves with.
    if qd != 1 || an > 1 || ns > 1 || ar > 2 {
        return Err(reject(rcode::FORMERR));
    }
    let mut qname = QName {
        buf: [0; 256],
        len: 0,
        opaque: false,
    };
    let mut i = 12;
    loop {
        let Some(&len) = p.get(i) else {
            return Err(reject(rcode::FORMERR));
        };
        let len = len as usize;
        if len == 0 {
            i += 1;
            break;
        }
        // No compression in a question: there is nothing before it to point at.
        if len > 63 || i + 1 + len > p.len() || qname.len + len + 1 > 254 {
            return Err(reject(rcode::FORMERR));
        }
        if qname.len > 0 {
            qname.buf[qname.len] = b'.';
            qname.len += 1;
        }
        for &b in &p[i + 1..i + 1 + len] {
            let c = if b.is_ascii_graphic() && b != b'.' {
                b.to_ascii_lowercase()
            } else {
                qname.opaque = true;
                b'?'
            };
            qname.buf[qname.len] = c;
            qname.len += 1;
        }
        i += 1 + len;
    }
    let (Some(qtype), Some(qclass)) = (u16_at(p, i), u16_at(p, i + 2)) else {
        return Err(reject(rcode::FORMERR));
    };
    let question_end = i + 4;
    i = question_end;
    let mut edns = None;
    for n in 0..(an as usize + ns as usize + ar as usize) {
        let Some(j) = skip_name(p, i) else {
            return Err(reject(rcode::FORMERR));
        };
        let (Some(t), Some(class), Some(ttl_hi), Some(ttl_lo), Some(rdlen)) = (
            u16_at(p, j),
            u16_at(p, j + 2),
            u16_at(p, j + 4),
            u16_at(p, j + 6),
            u16_at(p, j + 8),
        ) else {
            return Err(reject(rcode::FORMERR));
        };
        let end = j + 10 + rdlen as usize;
        if end > p.len() {
            return Err(reject(rcode::FORMERR));
        }
        if n >= an as usize + ns as usize && t == rtype::OPT {
            if edns.is_some() || j != i + 1 {
                // Two OPTs, or one not owned by the root.
                return Err(reject(rcode::FORMERR));
            }
            edns = Some(Edns {
                payload: class,
                version: (ttl_hi & 0xFF) as u8,
                dnssec_ok: ttl_lo & 0x8000 != 0,
            });
        }
        i = end;
    }
    Ok(Query {
        id,
        opcode,
        rd,
        cd,
        qname,
        question_end,
        qtype,
        qclass,
        edns,
    })
}

/// A header-only answer (FORMERR, NOTIMP, or REFUSED without a question).
pub fn write_rejection(out: &mut Vec<u8>, id: u16, opcode: u8, rd: bool, rcode: u8) {
    out.clear();
    out.extend_from_slice(&id.to_be_bytes());
    let flags: u16 = 0x8000 | (u16::from(opcode) << 11) | if rd { 0x0100 } else { 0 } | u16::from(rcode);
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(&[0; 8]);
}

/// One piece of a composed name.
#[derive(Clone, Copy, Debug)]
pub enum Part<'a> {
    /// Text, possibly several labels.
    S(&'a str),
    /// An address written with dashes (`10-0-0-1`, CoreDNS's endpoint name for addresses without a
    /// hostname).
    DashedIp(IpAddr),
}

/// A name made of parts, optionally followed by the cluster zone.
#[derive(Clone, Copy, Debug)]
pub struct DName<'a> {
    parts: [Part<'a>; 4],
    n: u8,
    /// Append the cluster zone.
    pub in_zone: bool,
}

impl<'a> DName<'a> {
    /// A name in the cluster zone: `parts….<zone>`.
    pub fn zone(parts: &[Part<'a>]) -> Self {
        let mut d = DName {
            parts: [Part::S(""); 4],
            n: 0,
            in_zone: true,
        };
        for (slot, p) in d.parts.iter_mut().zip(parts) {
            *slot = *p;
            d.n += 1;
        }
        d
    }

    /// A name outside the zone.
    pub fn absolute(name: &'a str) -> Self {
        let mut d = Self::zone(&[Part::S(name)]);
        d.in_zone = false;
        d
    }

    /// The parts.
    pub fn parts(&self) -> &[Part<'a>] {
        &self.parts[..self.n as usize]
    }

    /// The name as lower-case text (for tests, dedup and chasing), without the final dot.
    pub fn to_text(&self, zone: &str) -> String {
        let mut s = String::new();
        for p in self.parts() {
            if !s.is_empty() {
                s.push('.');
            }
            match p {
                Part::S(t) => s.push_str(t),
                Part::DashedIp(ip) => s.push_str(&dashed(*ip)),
            }
        }
        if self.in_zone {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(zone);
        }
        s
    }
}

/// CoreDNS's endpoint name for an address: dots (or colons) become dashes.
pub fn dashed(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string().replace('.', "-"),
        IpAddr::V6(v6) => v6.to_string().replace(':', "-"),
    }
}

/// Who owns a record.
#[derive(Clone, Copy, Debug)]
pub enum Owner<'a> {
    /// The question's name (written as a pointer: the answer echoes the question's case).
    QName,
    /// The target name of an earlier answer record (by index).
    TargetOf(usize),
    /// The zone apex.
    Zone,
    /// Some other name.
    Name(DName<'a>),
}

/// Record data.
#[derive(Clone, Copy, Debug)]
pub enum Data<'a> {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Alias.
    Cname(DName<'a>),
    /// Pointer.
    Ptr(DName<'a>),
    /// Name server.
    Ns(DName<'a>),
    /// Service location.
    Srv {
        /// Priority.
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
        /// Target.
        target: DName<'a>,
    },
    /// One text string.
    Txt(&'a str),
    /// The zone's SOA (CoreDNS's fields).
    Soa {
        /// Serial.
        serial: u32,
        /// Minimum TTL.
        minttl: u32,
    },
    /// RFC 8482's answer to ANY.
    Hinfo,
}

impl Data<'_> {
    /// The record type.
    pub fn rtype(&self) -> u16 {
        match self {
            Data::A(_) => rtype::A,
            Data::Aaaa(_) => rtype::AAAA,
            Data::Cname(_) => rtype::CNAME,
            Data::Ptr(_) => rtype::PTR,
            Data::Ns(_) => rtype::NS,
            Data::Srv { .. } => rtype::SRV,
            Data::Txt(_) => rtype::TXT,
            Data::Soa { .. } => rtype::SOA,
            Data::Hinfo => rtype::HINFO,
        }
    }
}

/// A resource record to write.
#[derive(Clone, Copy, Debug)]
pub struct Rr<'a> {
    /// Owner.
    pub owner: Owner<'a>,
    /// TTL.
    pub ttl: u32,
    /// Data.
    pub data: Data<'a>,
}

/// Which part of the response a record goes in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Section {
    Answer,
    Authority,
    Additional,
}

/// Writes one response into a reused buffer.
pub struct Writer<'b> {
    out: &'b mut Vec<u8>,
    limit: usize,
    zone: &'b str,
    /// Where the zone's labels are in the packet (pointer target), once known.
    zone_off: Option<u16>,
    /// Offset of each answer's target name (for `Owner::TargetOf`).
    targets: Vec<(usize, u16)>,
    counts: [u16; 3],
    answers_written: usize,
    /// Some record did not fit.
    pub truncated: bool,
    reserve: usize,
}

impl<'b> Writer<'b> {
    /// Starts a response to `q` (raw packet `pkt`): header and the echoed question. `limit` is the most
    /// bytes the response may have.
    pub fn new(
        out: &'b mut Vec<u8>,
        pkt: &[u8],
        q: &Query,
        zone: &'b str,
        limit: usize,
        aa: bool,
        rcode: u16,
    ) -> Self {
        out.clear();
        out.extend_from_slice(&q.id.to_be_bytes());
        let flags: u16 = 0x8000
            | if aa { 0x0400 } else { 0 }
            | if q.rd { 0x0100 } else { 0 }
            | if q.cd { 0x0010 } else { 0 }
            | (rcode & 0xF);
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&pkt[12..q.question_end]);
        let qn = q.qname.as_str();
        let zone_off = if q.qname.opaque {
            None
        } else if qn == zone {
            Some(12)
        } else if qn.len() > zone.len()
            && qn.ends_with(zone)
            && qn.as_bytes()[qn.len() - zone.len() - 1] == b'.'
        {
            Some((12 + qn.len() - zone.len()) as u16)
        } else {
            None
        };
        let reserve = if q.edns.is_some() { 11 } else { 0 };
        Writer {
            out,
            limit: limit.max(MIN_UDP),
            zone,
            zone_off,
            targets: Vec::new(),
            counts: [0; 3],
            answers_written: 0,
            truncated: false,
            reserve,
        }
    }

    fn label(&mut self, l: &[u8]) -> Result<(), ()> {
        if l.is_empty() || l.len() > 63 {
            return Err(());
        }
        self.out.push(l.len() as u8);
        self.out.extend_from_slice(l);
        Ok(())
    }

    fn text_labels(&mut self, s: &str) -> Result<(), ()> {
        for l in s.split('.').filter(|l| !l.is_empty()) {
            self.label(l.as_bytes())?;
        }
        Ok(())
    }

    fn name(&mut self, d: &DName<'_>) -> Result<u16, ()> {
        let start = self.out.len();
        for p in d.parts() {
            match p {
                Part::S(s) => self.text_labels(s)?,
                Part::DashedIp(ip) => self.label(dashed(*ip).as_bytes())?,
            }
        }
        if d.in_zone {
            match self.zone_off {
                Some(off) => self.out.extend_from_slice(&(0xC000 | off).to_be_bytes()),
                None => {
                    let off = self.out.len();
                    let zone = self.zone;
                    self.text_labels(zone)?;
                    self.out.push(0);
                    if off < 0x3FFF {
                        self.zone_off = Some(off as u16);
                    }
                }
            }
        } else {
            self.out.push(0);
        }
        if self.out.len() - start > 255 {
            return Err(());
        }
        Ok(start as u16)
    }

    fn pointer(&mut self, off: u16) {
        self.out.extend_from_slice(&(0xC000 | off).to_be_bytes());
    }

    fn write_rr(&mut self, rr: &Rr<'_>, section: Section) -> Result<(), ()> {
        match rr.owner {
            Owner::QName => self.pointer(12),
            Owner::Zone => match self.zone_off {
                Some(off) => self.pointer(off),
                None => {
                    self.name(&DName::zone(&[]))?;
                }
            },
            Owner::TargetOf(i) => match self.targets.iter().find(|(j, _)| *j == i) {
                Some(&(_, off)) => self.pointer(off),
                None => return Err(()),
            },
            Owner::Name(d) => {
                self.name(&d)?;
            }
        }
        self.out.extend_from_slice(&rr.data.rtype().to_be_bytes());
        self.out.extend_from_slice(&1u16.to_be_bytes());
        self.out.extend_from_slice(&rr.ttl.to_be_bytes());
        let len_at = self.out.len();
        self.out.extend_from_slice(&[0, 0]);
        let mut target = None;
        match &rr.data {
            Data::A(ip) => self.out.extend_from_slice(&ip.octets()),
            Data::Aaaa(ip) => self.out.extend_from_slice(&ip.octets()),
            Data::Cname(d) | Data::Ptr(d) | Data::Ns(d) => target = Some(self.name(d)?),
            Data::Srv {
                priority,
                weight,
                port,
                target: t,
            } => {
                self.out.extend_from_slice(&priority.to_be_bytes());
                self.out.extend_from_slice(&weight.to_be_bytes());
                self.out.extend_from_slice(&port.to_be_bytes());
                target = Some(self.name(t)?);
            }
            Data::Txt(t) => {
                let b = t.as_bytes();
                let b = &b[..b.len().min(255)];
                self.out.push(b.len() as u8);
                self.out.extend_from_slice(b);
            }
            Data::Soa { serial, minttl } => {
                let ns = DName::zone(&[Part::S("ns.dns")]);
                self.name(&ns)?;
                let hm = DName::zone(&[Part::S("hostmaster")]);
                self.name(&hm)?;
                for v in [*serial, 7200, 1800, 86400, *minttl] {
                    self.out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Data::Hinfo => {
                for s in ["ANY obsoleted", "See RFC 8482"] {
                    self.out.push(s.len() as u8);
                    self.out.extend_from_slice(s.as_bytes());
                }
            }
        }
        let rdlen = self.out.len() - len_at - 2;
        self.out[len_at..len_at + 2].copy_from_slice(&(rdlen as u16).to_be_bytes());
        if section == Section::Answer
            && let Some(off) = target
            && off < 0x3FFF
        {
            self.targets.push((self.answers_written, off));
        }
        Ok(())
    }

    fn add(&mut self, rr: &Rr<'_>, section: Section) -> bool {
        if self.truncated {
            return false;
        }
        let mark = self.out.len();
        let ok = self.write_rr(rr, section).is_ok();
        if !ok {
            // An unencodable record (a bad name from the API) is left out, not fatal.
            self.out.truncate(mark);
            if section == Section::Answer {
                self.answers_written += 1;
            }
            return true;
        }
        if self.out.len() + self.reserve > self.limit {
            self.out.truncate(mark);
            if section != Section::Additional {
                self.truncated = true;
            }
            return false;
        }
        let i = match section {
            Section::Answer => 0,
            Section::Authority => 1,
            Section::Additional => 2,
        };
        self.counts[i] += 1;
        if section == Section::Answer {
            self.answers_written += 1;
        }
        true
    }

    /// Adds an answer record; false when it did not fit (the response is then truncated).
    pub fn answer(&mut self, rr: &Rr<'_>) -> bool {
        self.add(rr, Section::Answer)
    }

    /// Adds an authority record.
    pub fn authority(&mut self, rr: &Rr<'_>) -> bool {
        self.add(rr, Section::Authority)
    }

    /// Adds an additional record (dropped silently when it does not fit).
    pub fn additional(&mut self, rr: &Rr<'_>) -> bool {
        self.add(rr, Section::Additional)
    }

    /// Writes the OPT record (if the query had one) and the counts.
    pub fn finish(self, edns: Option<Edns>, payload: u16, ext_rcode: u8) {
        let mut ar = self.counts[2];
        if let Some(e) = edns {
            self.out.push(0);
            self.out.extend_from_slice(&rtype::OPT.to_be_bytes());
            self.out.extend_from_slice(&payload.to_be_bytes());
            self.out.push(ext_rcode);
            self.out.push(0);
            self.out
                .extend_from_slice(&(if e.dnssec_ok { 0x8000u16 } else { 0 }).to_be_bytes());
            self.out.extend_from_slice(&[0, 0]);
            ar += 1;
        }
        if self.truncated {
            self.out[2] |= 0x02;
        }
        self.out[6..8].copy_from_slice(&self.counts[0].to_be_bytes());
        self.out[8..10].copy_from_slice(&self.counts[1].to_be_bytes());
        self.out[10..12].copy_from_slice(&ar.to_be_bytes());
    }
}
