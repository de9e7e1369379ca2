//! Serving: the UDP and TCP listeners, the client allow-list, and the per-query decision between an
//! answer written from the zone and one that needs an upstream.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::{CNAME, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tracing::debug;

use crate::forward::{ForwardError, Forwarder, client_response};
use crate::lookup::{Lookup, Outcome, ZoneConfig};
use crate::metrics::{Metrics, Source};
use crate::wire::{self, Owner, Reject, Writer, rcode};
use crate::zone::{Snapshot, ZoneReader};

/// How long a TCP connection may sit idle between queries.
pub const TCP_IDLE: Duration = Duration::from_secs(10);

/// What the synchronous part of handling a packet decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The response is in the output buffer.
    Reply {
        /// Its rcode (for metrics).
        rcode: u16,
        /// The name was in the cluster zone.
        in_zone: bool,
        /// Question type (0 when there was none).
        qtype: u16,
        /// Who answered.
        source: Source,
    },
    /// Say nothing.
    Drop,
    /// Needs an upstream: forward the question, or (non-empty `chain`) resolve the last of these
    /// CNAME targets and answer the CNAMEs plus that.
    Upstream {
        /// CNAME targets, in order (empty: plain forwarding).
        chain: Vec<String>,
        /// Largest response allowed.
        limit: usize,
        /// The name was in the cluster zone.
        in_zone: bool,
        /// Question type.
        qtype: u16,
    },
}

/// Everything a query needs besides the zone snapshot; shared by every listener.
pub struct Handler {
    /// Zone settings.
    pub cfg: ZoneConfig,
    allow: Vec<IpNet>,
    forwarder: Forwarder,
    metrics: Metrics,
    zone_label: Arc<str>,
    root_label: Arc<str>,
    /// `loadbalance`: the next rotation of address records.
    rotate: Option<AtomicUsize>,
    /// `loop`: the probe question this server sent itself, once armed.
    loop_probe: OnceLock<Arc<LoopProbe>>,
}

/// CoreDNS's `loop` plugin: a random HINFO question the server sends itself at start. Seen coming back
/// through the upstreams more than twice means that forwarding leads back here.
#[derive(Debug)]
pub struct LoopProbe {
    /// The question's name (lower case, no final dot).
    pub name: String,
    seen: AtomicU32,
    /// Woken when a loop is detected.
    pub detected: tokio::sync::Notify,
}

impl LoopProbe {
    /// A probe with a random name under the root.
    pub fn new() -> Self {
        LoopProbe {
            name: format!("{}.{}", rand::random::<u64>(), rand::random::<u64>()),
            seen: AtomicU32::new(0),
            detected: tokio::sync::Notify::new(),
        }
    }

    /// How often the probe has come in.
    pub fn seen(&self) -> u32 {
        self.seen.load(Ordering::Relaxed)
    }
}

impl Default for LoopProbe {
    fn default() -> Self {
        LoopProbe::new()
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

impl Handler {
    /// A handler for `cfg`, answering only clients inside `allow` (all when empty).
    pub fn new(
        cfg: ZoneConfig,
        allow: Vec<IpNet>,
        upstreams: Vec<SocketAddr>,
        cache_size: usize,
        metrics: Metrics,
    ) -> Self {
        let forwarder = Forwarder::new(upstreams, cache_size, metrics.clone());
        Handler::with_forwarder(cfg, allow, forwarder, metrics)
    }

    /// A handler answering other names through `forwarder`.
    pub fn with_forwarder(
        cfg: ZoneConfig,
        allow: Vec<IpNet>,
        forwarder: Forwarder,
        metrics: Metrics,
    ) -> Self {
        let zone_label: Arc<str> = format!("{}.", cfg.zone).into();
        Handler {
            cfg,
            allow,
            forwarder,
            metrics,
            zone_label,
            root_label: ".".into(),
            rotate: None,
            loop_probe: OnceLock::new(),
        }
    }

    /// Rotates the address records of every cluster answer (CoreDNS's `loadbalance`), so that clients
    /// that take the first address spread over a headless Service's pods.
    pub fn loadbalance(mut self, on: bool) -> Self {
        self.rotate = on.then(|| AtomicUsize::new(0));
        self
    }

    /// Arms loop detection with `probe` (once; later calls return the first probe).
    pub fn arm_loop_probe(&self, probe: Arc<LoopProbe>) -> Arc<LoopProbe> {
        self.loop_probe.get_or_init(|| probe).clone()
    }

    fn count_probe(&self, qname: &str, qtype: u16) {
        if let Some(p) = self.loop_probe.get()
            && qtype == wire::rtype::HINFO
            && qname == p.name
            && p.seen.fetch_add(1, Ordering::Relaxed) + 1 > 2
        {
            p.detected.notify_one();
        }
    }

    fn allowed(&self, client: IpAddr) -> bool {
        let client = canonical(client);
        self.allow.is_empty() || self.allow.iter().any(|n| n.contains(&client))
    }

    /// Handles one packet as far as it can without waiting: writes the response into `out` or says
    /// what else is needed. Never panics, whatever the bytes.
    pub fn local(&self, snap: &Snapshot, pkt: &[u8], client: IpAddr, tcp: bool, out: &mut Vec<u8>) -> Step {
        let q = match wire::parse_query(pkt) {
            Ok(q) => q,
            Err(Reject::Drop) => return Step::Drop,
            Err(Reject::Rcode {
                id,
                opcode,
                rd,
                rcode,
            }) => {
                wire::write_rejection(out, id, opcode, rd, rcode);
                return Step::Reply {
                    rcode: u16::from(rcode),
                    in_zone: false,
                    qtype: 0,
                    source: Source::Server,
                };
            }
        };
        let zone = self.cfg.zone.as_str();
        let limit = if tcp { 65535 } else { q.udp_limit() };
        let payload = q.udp_limit() as u16;
        if !self.allowed(client) {
            let w = Writer::new(out, pkt, &q, zone, limit, false, u16::from(rcode::REFUSED));
            w.finish(q.edns, payload, 0);
            return Step::Reply {
                rcode: u16::from(rcode::REFUSED),
                in_zone: false,
                qtype: q.qtype,
                source: Source::Server,
            };
        }
        if q.edns.is_some_and(|e| e.version > 0) {
            let w = Writer::new(out, pkt, &q, zone, limit, false, 0);
            w.finish(q.edns, payload, (rcode::BADVERS >> 4) as u8);
            return Step::Reply {
                rcode: rcode::BADVERS,
                in_zone: false,
                qtype: q.qtype,
                source: Source::Server,
            };
        }
        let lookup = Lookup::new(snap, &self.cfg);
        let qname = q.qname.as_str();
        self.count_probe(qname, q.qtype);
        let outcome = if q.qname.opaque {
            Outcome::Forward
        } else {
            lookup.resolve(qname, q.qtype)
        };
        let in_zone = !q.qname.opaque && lookup.in_zone(qname);
        match outcome {
            // `fallthrough` for the cluster zone: a name the cluster does not have is asked upstream.
            Outcome::Answer(a) if in_zone && a.rcode == rcode::NXDOMAIN && self.cfg.fallthrough_zone => {
                Step::Upstream {
                    chain: Vec::new(),
                    limit,
                    in_zone,
                    qtype: q.qtype,
                }
            }
            Outcome::Answer(mut a) => {
                if let Some(next) = &self.rotate {
                    rotate_addresses(&mut a.answers, next.fetch_add(1, Ordering::Relaxed));
                }
                let mut w = Writer::new(out, pkt, &q, zone, limit, a.aa, u16::from(a.rcode));
                for rr in &a.answers {
                    if !w.answer(rr) {
                        break;
                    }
                }
                if a.soa {
                    w.authority(&lookup.soa(Owner::Zone));
                }
                for rr in &a.extra {
                    w.additional(rr);
                }
                w.finish(q.edns, payload, 0);
                Step::Reply {
                    rcode: u16::from(a.rcode),
                    in_zone,
                    qtype: q.qtype,
                    source: if in_zone || a.rcode == rcode::NOERROR {
                        Source::Kubernetes
                    } else {
                        Source::Server
                    },
                }
            }
            Outcome::Forward => Step::Upstream {
                chain: Vec::new(),
                limit,
                in_zone,
                qtype: q.qtype,
            },
            Outcome::External { cnames, .. } => Step::Upstream {
                chain: cnames
                    .iter()
                    .filter_map(|rr| match rr.data {
                        wire::Data::Cname(d) => Some(d.to_text(zone)),
                        _ => None,
                    })
                    .collect(),
                limit,
                in_zone,
                qtype: q.qtype,
            },
        }
    }

    /// The part that waits for an upstream; returns the response and its rcode.
    pub async fn upstream(&self, pkt: &[u8], chain: &[String], limit: usize, serial: u32) -> (Vec<u8>, u16) {
        let Ok(req) = Message::from_vec(pkt) else {
            // Our parser took it but hickory does not: answer SERVFAIL with the header only.
            let mut out = Vec::new();
            let id = u16::from_be_bytes([pkt[0], pkt[1]]);
            wire::write_rejection(&mut out, id, 0, pkt[2] & 1 != 0, rcode::SERVFAIL);
            return (out, u16::from(rcode::SERVFAIL));
        };
        let Some(question) = req.queries.first().cloned() else {
            return (Vec::new(), 0);
        };
        let dnssec_ok = req.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok);
        if chain.is_empty() {
            let resp = self
                .forwarder
                .resolve(
                    question.name(),
                    question.query_type(),
                    question.query_class(),
                    dnssec_ok,
                )
                .await;
            let (c, rc) = match &resp {
                Ok(c) => (Some(&**c), c.msg.metadata.response_code),
                Err(ForwardError::Overloaded) => (None, ResponseCode::Refused),
                Err(e) => {
                    debug!(error = %e, name = %question.name(), "forwarding failed");
                    (None, ResponseCode::ServFail)
                }
            };
            let out = client_response(&req, c, Vec::new(), rc, false, req.edns.as_ref(), limit);
            return (out, u16::from(rc));
        }
        // An ExternalName leaving the zone: our CNAMEs, then the upstream's answer for the last target.
        let ttl = self.cfg.ttl;
        let mut cnames = Vec::new();
        let mut owner = question.name().clone();
        for t in chain {
            let Ok(target) = Name::from_ascii(format!("{t}.")) else {
                break;
            };
            cnames.push(Record::from_rdata(
                owner.clone(),
                ttl,
                RData::CNAME(CNAME(target.clone())),
            ));
            owner = target;
        }
        let resp = self
            .forwarder
            .resolve(&owner, question.query_type(), DNSClass::IN, dnssec_ok)
            .await;
        match resp {
            Ok(c) => {
                let out = client_response(
                    &req,
                    Some(&c),
                    cnames,
                    ResponseCode::NoError,
                    true,
                    req.edns.as_ref(),
                    limit,
                );
                (out, 0)
            }
            Err(_) => {
                // CoreDNS leaves the CNAME out when the target cannot be resolved: NODATA.
                let soa = self.soa_record(serial);
                let mut m = Message::response(req.metadata.id, req.metadata.op_code);
                m.metadata.authoritative = true;
                m.metadata.recursion_desired = req.metadata.recursion_desired;
                m.add_queries(req.queries.iter().cloned());
                m.add_authorities(soa);
                if let Some(e) = req.edns.as_ref() {
                    let mut ours = hickory_proto::op::Edns::new();
                    ours.set_max_payload(e.max_payload().max(512));
                    m.set_edns(ours);
                }
                (crate::forward::encode_within(m, limit), 0)
            }
        }
    }

    fn soa_record(&self, serial: u32) -> Option<Record> {
        let zone = Name::from_ascii(&*self.zone_label).ok()?;
        let mname = Name::from_ascii(format!("ns.dns.{}", self.zone_label)).ok()?;
        let rname = Name::from_ascii(format!("hostmaster.{}", self.zone_label)).ok()?;
        let soa = SOA::new(mname, rname, serial, 7200, 1800, 86400, self.cfg.ttl);
        Some(Record::from_rdata(zone, self.cfg.ttl.min(300), RData::SOA(soa)))
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        server: &Arc<str>,
        tcp: bool,
        v6: bool,
        in_zone: bool,
        qtype: u16,
        rcode: u16,
        source: Source,
        t0: Instant,
    ) {
        let zone = if in_zone {
            &self.zone_label
        } else {
            &self.root_label
        };
        self.metrics
            .request(server, zone, tcp, v6, qtype, rcode, source, t0.elapsed());
    }
}

/// Rotates the address records at the end of `answers` (after any CNAMEs) by `n` places.
fn rotate_addresses(answers: &mut [wire::Rr<'_>], n: usize) {
    let first = answers
        .iter()
        .position(|r| matches!(r.data, wire::Data::A(_) | wire::Data::Aaaa(_)))
        .unwrap_or(answers.len());
    let tail = &mut answers[first..];
    if tail.len() > 1
        && tail
            .iter()
            .all(|r| matches!(r.data, wire::Data::A(_) | wire::Data::Aaaa(_)))
    {
        let k = n % tail.len();
        tail.rotate_left(k);
    }
}

/// Serves one UDP socket until it fails for good.
pub async fn serve_udp(
    sock: Arc<UdpSocket>,
    handler: Arc<Handler>,
    mut reader: ZoneReader,
    server: Arc<str>,
) {
    let mut buf = vec![0u8; 65535];
    let mut out = Vec::with_capacity(4096);
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            // ICMP errors from earlier sends surface here; they are not fatal.
            Err(_) => continue,
        };
        let t0 = Instant::now();
        let snap = reader.load();
        let v6 = peer.is_ipv6();
        match handler.local(snap, &buf[..n], peer.ip(), false, &mut out) {
            Step::Reply {
                rcode,
                in_zone,
                qtype,
                source,
            } => {
                let _ = sock.send_to(&out, peer).await;
                handler.record(&server, false, v6, in_zone, qtype, rcode, source, t0);
            }
            Step::Drop => {}
            Step::Upstream {
                chain,
                limit,
                in_zone,
                qtype,
            } => {
                let pkt = buf[..n].to_vec();
                let (sock, handler, server) = (sock.clone(), handler.clone(), server.clone());
                let serial = snap.serial;
                tokio::spawn(async move {
                    let (resp, rcode) = handler.upstream(&pkt, &chain, limit, serial).await;
                    if !resp.is_empty() {
                        let _ = sock.send_to(&resp, peer).await;
                    }
                    handler.record(&server, false, v6, in_zone, qtype, rcode, Source::Forward, t0);
                });
            }
        }
    }
}

/// Accepts TCP connections (at most `max_conns` at once; more are closed at once).
pub async fn serve_tcp(
    listener: TcpListener,
    handler: Arc<Handler>,
    reader: ZoneReader,
    server: Arc<str>,
    max_conns: usize,
) {
    let slots = Arc::new(Semaphore::new(max_conns));
    let mut acceptor = svcnet_accept::Acceptor::new(listener, "DNS over TCP");
    loop {
        let Ok((stream, peer)) = acceptor.accept().await else {
            return;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let (handler, reader, server) = (handler.clone(), reader.clone(), server.clone());
        tokio::spawn(async move {
            let _ = serve_conn(stream, peer, handler, reader, server).await;
            drop(permit);
        });
    }
}

async fn serve_conn(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    mut reader: ZoneReader,
    server: Arc<str>,
) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut body = Vec::new();
    let mut out = Vec::with_capacity(4096);
    let mut framed = Vec::with_capacity(4096);
    let v6 = peer.is_ipv6();
    loop {
        let Ok(len) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return Ok(());
        };
        let len = len? as usize;
        body.resize(len, 0);
        if tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut body))
            .await
            .is_err()
        {
            return Ok(());
        }
        let t0 = Instant::now();
        let snap = reader.load().clone();
        let (resp, rcode, in_zone, qtype, source) =
            match handler.local(&snap, &body, peer.ip(), true, &mut out) {
                Step::Reply {
                    rcode,
                    in_zone,
                    qtype,
                    source,
                } => (&out[..], rcode, in_zone, qtype, source),
                Step::Drop => return Ok(()),
                Step::Upstream {
                    chain,
                    limit,
                    in_zone,
                    qtype,
                } => {
                    let (r, rcode) = handler.upstream(&body, &chain, limit, snap.serial).await;
                    out = r;
                    (&out[..], rcode, in_zone, qtype, Source::Forward)
                }
            };
        if resp.is_empty() {
            return Ok(());
        }
        framed.clear();
        framed.extend_from_slice(&(resp.len() as u16).to_be_bytes());
        framed.extend_from_slice(resp);
        stream.write_all(&framed).await?;
        handler.record(&server, true, v6, in_zone, qtype, rcode, source, t0);
    }
}
