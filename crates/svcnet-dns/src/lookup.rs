//! Answering names in the cluster zone from a snapshot, following the Kubernetes DNS specification
//! (schema 1.1.0) and, where the specification is silent, what CoreDNS's `kubernetes` plugin does:
//!
//! * `<svc>.<ns>.svc.<zone>`: A/AAAA of every ClusterIP; for a headless Service, of every ready endpoint
//!   (none: NXDOMAIN, as CoreDNS); an ExternalName Service is a CNAME, chased in the same answer when
//!   the target is in the zone, resolved upstream otherwise (CoreDNS: CNAME plus upstream answer).
//! * `_<port>._<proto>.<svc>.<ns>.svc.<zone>` (and `<svc>.<ns>.svc.<zone>` for every port): SRV
//!   `0 <100/n> <port> <target>` with the targets' addresses in the additional section.
//! * `<endpoint>.<svc>.<ns>.svc.<zone>`: the endpoint's `hostname`, else its address with dashes.
//! * PTR for ClusterIPs and endpoint addresses; names we do not know go upstream.
//! * `<a-b-c-d>.<ns>.pod.<zone>` per `--dns-pods`; `dns-version.<zone>` TXT `1.1.0`.
//! * NXDOMAIN vs NODATA exactly as CoreDNS decides: names that parse but hold nothing (`<zone>`,
//!   `svc.<zone>`, an existing namespace) are NODATA, unknown namespaces and Services NXDOMAIN, other
//!   types on existing names NODATA. CoreDNS quirks kept on purpose: TXT is NODATA for every name but
//!   `dns-version`, and SOA for any name below the apex is NODATA.
//! * ANY gets RFC 8482's HINFO (what CoreDNS's `any` plugin answers), for every name.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::{DName, Data, Owner, Part, Rr, rcode, rtype};
use crate::zone::{Entry, Kind, Snapshot};

/// How pod names (`a-b-c-d.<ns>.pod.<zone>`) are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PodsMode {
    /// Never (NXDOMAIN).
    Disabled,
    /// For any well-formed address in an existing namespace.
    Insecure,
    /// Only when a pod with that address exists in that namespace.
    #[default]
    Verified,
}

impl std::str::FromStr for PodsMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disabled" => Ok(PodsMode::Disabled),
            "insecure" => Ok(PodsMode::Insecure),
            "verified" => Ok(PodsMode::Verified),
            _ => Err(format!("{s:?}: expected disabled, insecure or verified")),
        }
    }
}

/// What the lookup needs besides the data.
#[derive(Clone, Debug)]
pub struct ZoneConfig {
    /// The cluster domain, lower case, no final dot.
    pub zone: String,
    /// TTL of every answer.
    pub ttl: u32,
    /// Pod records.
    pub pods: PodsMode,
    /// The addresses `ns.dns.<zone>` resolves to (our own).
    pub ns_addrs: Vec<IpAddr>,
    /// PTR questions for cluster addresses are answered (the reverse zones are listed).
    pub reverse: bool,
    /// Reverse names the cluster does not hold go to the upstreams instead of NXDOMAIN.
    pub fallthrough_reverse: bool,
    /// Names in the cluster zone that do not exist go to the upstreams instead of NXDOMAIN.
    pub fallthrough_zone: bool,
}

/// What to do with a question.
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Answer from the zone.
    Answer(Answer<'a>),
    /// The CNAME chain leaves the zone: answer these CNAMEs plus the upstream's answer for `target`.
    External {
        /// The CNAMEs so far.
        cnames: Vec<Rr<'a>>,
        /// The first name outside the zone.
        target: &'a str,
    },
    /// Not ours: ask the upstreams.
    Forward,
}

/// An answer from the zone.
#[derive(Debug, Default)]
pub struct Answer<'a> {
    /// Response code.
    pub rcode: u8,
    /// Authoritative.
    pub aa: bool,
    /// Answer section.
    pub answers: Vec<Rr<'a>>,
    /// Additional section.
    pub extra: Vec<Rr<'a>>,
    /// Put the zone's SOA in the authority section.
    pub soa: bool,
}

impl<'a> Answer<'a> {
    fn negative(rcode: u8) -> Self {
        Answer {
            rcode,
            aa: true,
            soa: true,
            ..Default::default()
        }
    }
    fn records(answers: Vec<Rr<'a>>, extra: Vec<Rr<'a>>) -> Answer<'a> {
        if answers.is_empty() {
            return Answer::negative(rcode::NOERROR);
        }
        Answer {
            rcode: rcode::NOERROR,
            aa: true,
            answers,
            extra,
            soa: false,
        }
    }
}

/// The name does not exist (CoreDNS's errNoItems / errInvalidRequest / errNsNotExposed).
struct NameError;

/// What a parsed name asks for.
struct Req<'a> {
    pod: bool,
    namespace: &'a str,
    /// `<service>.<namespace>`: the entry key (empty service: none).
    key: Option<&'a str>,
    service: &'a str,
    endpoint: Option<&'a str>,
    port: Option<&'a str>,
    protocol: Option<&'a str>,
}

/// Where a hit points.
#[derive(Clone, Copy)]
enum Host<'a> {
    Ip(IpAddr),
    Name(&'a str),
}

/// One result of a service or pod lookup (CoreDNS's msg.Service).
#[derive(Clone, Copy)]
struct Hit<'a> {
    host: Host<'a>,
    port: i32,
    /// The name SRV targets use.
    name: DName<'a>,
    /// Identity of `name` for de-duplication.
    ident: Ident<'a>,
}

/// A target name's identity: hostname, or dashed address, and the Service key.
type Ident<'a> = (Option<&'a str>, Option<IpAddr>, &'a str);

fn strip_underscore(s: &str) -> &str {
    s.strip_prefix('_').unwrap_or(s)
}

fn match_port(want_port: Option<&str>, name: &str, want_proto: Option<&str>, proto: &str) -> bool {
    want_port.is_none_or(|p| p.eq_ignore_ascii_case(name))
        && want_proto.is_none_or(|p| p.eq_ignore_ascii_case(proto))
}

/// `10-0-0-1` → 10.0.0.1; `fd00--1` → fd00::1 (CoreDNS's rule: three dashes and no `--` is IPv4).
fn parse_dashed(s: &str) -> Option<IpAddr> {
    if s.bytes().filter(|b| *b == b'-').count() == 3 && !s.contains("--") {
        s.replace('-', ".").parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    } else {
        s.replace('-', ":").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    }
}

/// The address a reverse name stands for, if it is a whole one.
pub fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 4 {
            return None;
        }
        let mut o = [0u8; 4];
        for (i, l) in labels.iter().rev().enumerate() {
            if l.is_empty() || l.len() > 3 || (l.len() > 1 && l.starts_with('0')) {
                return None;
            }
            o[i] = l.parse().ok()?;
        }
        return Some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let labels: Vec<&str> = rest.split('.').collect();
        if labels.len() != 32 {
            return None;
        }
        let mut v: u128 = 0;
        for l in labels.iter().rev() {
            if l.len() != 1 {
                return None;
            }
            v = (v << 4) | u128::from(u8::from_str_radix(l, 16).ok()?);
        }
        return Some(IpAddr::V6(Ipv6Addr::from(v)));
    }
    None
}

/// Answers questions about the cluster zone from one snapshot.
pub struct Lookup<'a> {
    snap: &'a Snapshot,
    cfg: &'a ZoneConfig,
}

impl<'a> Lookup<'a> {
    /// A lookup over `snap`.
    pub fn new(snap: &'a Snapshot, cfg: &'a ZoneConfig) -> Self {
        Lookup { snap, cfg }
    }

    fn ttl(&self) -> u32 {
        self.cfg.ttl
    }

    /// Whether `qname` (lower case, no final dot) is in the cluster zone.
    pub fn in_zone(&self, qname: &str) -> bool {
        let zone = self.cfg.zone.as_str();
        qname == zone
            || (qname.len() > zone.len()
                && qname.ends_with(zone)
                && qname.as_bytes()[qname.len() - zone.len() - 1] == b'.')
    }

    /// Decides the answer to `qname`/`qtype` (`qname` lower case without the final dot).
    pub fn resolve(&self, qname: &'a str, qtype: u16) -> Outcome<'a> {
        if qtype == rtype::ANY {
            return Outcome::Answer(Answer {
                rcode: rcode::NOERROR,
                aa: false,
                answers: vec![Rr {
                    owner: Owner::QName,
                    ttl: 8482,
                    data: Data::Hinfo,
                }],
                extra: Vec::new(),
                soa: false,
            });
        }
        if !self.in_zone(qname) {
            if self.cfg.reverse
                && qtype == rtype::PTR
                && self.snap.synced
                && let Some(ip) = parse_reverse(qname)
            {
                let recs = self.ptr(ip);
                if !recs.is_empty() {
                    return Outcome::Answer(Answer::records(recs, Vec::new()));
                }
                // Without CoreDNS's `fallthrough in-addr.arpa ip6.arpa`, the kubernetes plugin owns the
                // reverse zones and says that the name does not exist.
                if !self.cfg.fallthrough_reverse {
                    return Outcome::Answer(Answer {
                        rcode: rcode::NXDOMAIN,
                        aa: true,
                        ..Default::default()
                    });
                }
            }
            return Outcome::Forward;
        }
        if !self.snap.synced {
            return Outcome::Answer(Answer::negative(rcode::SERVFAIL));
        }
        let zone = self.cfg.zone.as_str();
        let result = match qtype {
            rtype::AXFR | rtype::IXFR => {
                return Outcome::Answer(Answer {
                    rcode: rcode::REFUSED,
                    ..Default::default()
                });
            }
            rtype::A | rtype::AAAA => {
                if qname == zone {
                    Ok(Answer::negative(rcode::NOERROR))
                } else {
                    match self.address(qname, qtype, Owner::QName, 0) {
                        Ok(Addr::Records(r)) => Ok(Answer::records(r, Vec::new())),
                        Ok(Addr::External(cnames, target)) => {
                            return Outcome::External { cnames, target };
                        }
                        Err(e) => Err(e),
                    }
                }
            }
            rtype::TXT => {
                let answers = if qname.strip_suffix(zone) == Some("dns-version.") {
                    vec![Rr {
                        owner: Owner::QName,
                        ttl: 28800,
                        data: Data::Txt("1.1.0"),
                    }]
                } else {
                    Vec::new()
                };
                Ok(Answer::records(answers, Vec::new()))
            }
            rtype::CNAME => self.services(qname, rtype::CNAME).map(|hits| {
                let recs = match hits.first() {
                    Some(Hit {
                        host: Host::Name(t), ..
                    }) => vec![Rr {
                        owner: Owner::QName,
                        ttl: self.ttl(),
                        data: Data::Cname(DName::absolute(t)),
                    }],
                    _ => Vec::new(),
                };
                Answer::records(recs, Vec::new())
            }),
            rtype::SRV => self.srv(qname).map(|(a, e)| Answer::records(a, e)),
            rtype::SOA => {
                let recs = if qname == zone {
                    vec![self.soa(Owner::QName)]
                } else {
                    Vec::new()
                };
                Ok(Answer::records(recs, Vec::new()))
            }
            rtype::NS if qname == zone => Ok(self.ns()),
            rtype::PTR | rtype::MX => self
                .services(qname, qtype)
                .map(|_| Answer::negative(rcode::NOERROR)),
            _ => self
                .services(qname, rtype::A)
                .map(|_| Answer::negative(rcode::NOERROR)),
        };
        Outcome::Answer(result.unwrap_or_else(|NameError| Answer::negative(rcode::NXDOMAIN)))
    }

    /// The zone's SOA record as CoreDNS writes it.
    pub fn soa(&self, owner: Owner<'a>) -> Rr<'a> {
        Rr {
            owner,
            ttl: self.ttl().min(300),
            data: Data::Soa {
                serial: self.snap.serial,
                minttl: self.ttl(),
            },
        }
    }

    fn ns(&self) -> Answer<'a> {
        let ns = DName::zone(&[Part::S("ns.dns")]);
        let answers = vec![Rr {
            owner: Owner::QName,
            ttl: self.ttl(),
            data: Data::Ns(ns),
        }];
        let extra = self
            .cfg
            .ns_addrs
            .iter()
            .map(|ip| Rr {
                owner: Owner::TargetOf(0),
                ttl: self.ttl(),
                data: addr_data(*ip),
            })
            .collect();
        Answer {
            rcode: rcode::NOERROR,
            aa: true,
            answers,
            extra,
            soa: false,
        }
    }

    fn parse(&self, qname: &'a str) -> Result<Option<Req<'a>>, NameError> {
        let zone = self.cfg.zone.as_str();
        let base = if qname.len() > zone.len() {
            &qname[..qname.len() - zone.len() - 1]
        } else {
            ""
        };
        if base.is_empty() || base == "svc" || base == "pod" {
            return Ok(None);
        }
        let segs: Vec<&'a str> = base.rsplit('.').collect();
        let pod = match segs[0] {
            "svc" => false,
            "pod" => true,
            _ => return Err(NameError),
        };
        let namespace = segs[1];
        let mut req = Req {
            pod,
            namespace,
            key: None,
            service: "",
            endpoint: None,
            port: None,
            protocol: None,
        };
        let Some(service) = segs.get(2) else {
            return Ok(Some(req));
        };
        req.service = service;
        // `<service>.<namespace>` sits in the name as one piece: the entry key, without copying.
        let end = base.len() - 4; // before ".svc" / ".pod"
        let start = end - namespace.len() - 1 - service.len();
        req.key = Some(&base[start..end]);
        match segs.len() - 3 {
            0 => {}
            1 => req.endpoint = Some(segs[3]),
            2 => {
                req.protocol = Some(strip_underscore(segs[3]));
                req.port = Some(strip_underscore(segs[4]));
            }
            _ => return Err(NameError),
        }
        Ok(Some(req))
    }

    /// CoreDNS's Services(): the hits for a name (CNAME hits dropped for SRV).
    fn services(&self, qname: &'a str, qtype: u16) -> Result<Vec<Hit<'a>>, NameError> {
        let zone = self.cfg.zone.as_str();
        if qname.strip_suffix(zone) == Some("ns.dns.") {
            let want_v4 = qtype == rtype::A;
            return Ok(self
                .cfg
                .ns_addrs
                .iter()
                .filter(|ip| (qtype == rtype::A || qtype == rtype::AAAA) && ip.is_ipv4() == want_v4)
                .map(|ip| Hit {
                    host: Host::Ip(*ip),
                    port: 0,
                    name: DName::zone(&[Part::S("ns.dns")]),
                    ident: (Some("ns.dns"), None, ""),
                })
                .collect());
        }
        let Some(req) = self.parse(qname)? else {
            return Ok(Vec::new());
        };
        if !self.snap.namespaces.contains(req.namespace) {
            return Err(NameError);
        }
        let mut hits = if req.pod {
            self.pods(&req)?
        } else {
            self.find_services(&req)?
        };
        if qtype == rtype::SRV {
            hits.retain(|h| matches!(h.host, Host::Ip(_)));
        }
        Ok(hits)
    }

    fn pods(&self, req: &Req<'a>) -> Result<Vec<Hit<'a>>, NameError> {
        if self.cfg.pods == PodsMode::Disabled {
            return Err(NameError);
        }
        if req.service.is_empty() {
            return Ok(Vec::new());
        }
        if req.endpoint.is_some() || req.port.is_some() {
            return Err(NameError);
        }
        let ip = parse_dashed(req.service).ok_or(NameError)?;
        if self.cfg.pods == PodsMode::Verified && !self.snap.pod_exists(ip, req.namespace) {
            return Err(NameError);
        }
        Ok(vec![Hit {
            host: Host::Ip(ip),
            port: 0,
            name: DName::zone(&[Part::S(req.service), Part::S(req.namespace), Part::S("pod")]),
            ident: (Some(req.service), None, req.namespace),
        }])
    }

    fn find_services(&self, req: &Req<'a>) -> Result<Vec<Hit<'a>>, NameError> {
        let Some(key) = req.key else {
            return Ok(Vec::new());
        };
        let entry: &'a Entry = self.snap.entries.get(key).ok_or(NameError)?;
        let svc = entry.svc.as_deref().ok_or(NameError)?;
        let mut hits = Vec::new();
        let key: &'a str = &entry.key;
        match &svc.kind {
            Kind::ExternalName(target) => {
                // An address is not a CNAME target; CoreDNS then has nothing.
                if req.endpoint.is_some() || target.parse::<IpAddr>().is_ok() || target.is_empty() {
                    return Err(NameError);
                }
                hits.push(Hit {
                    host: Host::Name(target),
                    port: 0,
                    name: DName::zone(&[Part::S(key), Part::S("svc")]),
                    ident: (None, None, key),
                });
            }
            Kind::Headless | Kind::ClusterIp(_)
                if matches!(svc.kind, Kind::Headless) || req.endpoint.is_some() =>
            {
                let want_ip = req.endpoint.and_then(parse_dashed);
                for slice in entry.slices.iter() {
                    for ep in slice.endpoints() {
                        if let Some(label) = req.endpoint {
                            let ok = match ep.hostname {
                                Some(h) => h == label,
                                None => want_ip == Some(ep.ip),
                            };
                            if !ok {
                                continue;
                            }
                        }
                        let (name, ident) = match ep.hostname {
                            Some(h) => (
                                DName::zone(&[Part::S(h), Part::S(key), Part::S("svc")]),
                                (Some(h), None, key),
                            ),
                            None => (
                                DName::zone(&[Part::DashedIp(ep.ip), Part::S(key), Part::S("svc")]),
                                (None, Some(ep.ip), key),
                            ),
                        };
                        let mut push = |port: i32| {
                            hits.push(Hit {
                                host: Host::Ip(ep.ip),
                                port,
                                name,
                                ident,
                            })
                        };
                        if slice.ports.is_empty() {
                            // CoreDNS's sentinel for a slice without ports: addresses, no SRV.
                            if match_port(req.port, "", req.protocol, "") {
                                push(-1);
                            }
                        }
                        for p in slice.ports.iter() {
                            if match_port(req.port, &p.name, req.protocol, &p.protocol) {
                                push(p.port);
                            }
                        }
                    }
                }
            }
            Kind::ClusterIp(ips) => {
                for p in svc.ports.iter() {
                    if !match_port(req.port, &p.name, req.protocol, &p.protocol) {
                        continue;
                    }
                    for ip in ips.iter() {
                        hits.push(Hit {
                            host: Host::Ip(*ip),
                            port: p.port,
                            name: DName::zone(&[Part::S(key), Part::S("svc")]),
                            ident: (None, None, key),
                        });
                    }
                }
            }
            Kind::Headless => {}
        }
        if hits.is_empty() {
            return Err(NameError);
        }
        Ok(hits)
    }

    /// A/AAAA for `name`, chasing in-zone CNAMEs (at most 8, no loops).
    fn address(
        &self,
        name: &'a str,
        qtype: u16,
        owner: Owner<'a>,
        depth: usize,
    ) -> Result<Addr<'a>, NameError> {
        let hits = self.services(name, qtype)?;
        if let Some(Hit {
            host: Host::Name(target),
            ..
        }) = hits.first()
        {
            let target: &'a str = target;
            if target == name || depth > 7 {
                return Ok(Addr::Records(Vec::new()));
            }
            let cname = Rr {
                owner,
                ttl: self.ttl(),
                data: Data::Cname(DName::absolute(target)),
            };
            if !self.in_zone(target) {
                return Ok(Addr::External(vec![cname], target));
            }
            return Ok(
                match self.address(target, qtype, Owner::TargetOf(depth), depth + 1) {
                    Ok(Addr::Records(r)) if !r.is_empty() => {
                        let mut out = vec![cname];
                        out.extend(r);
                        Addr::Records(out)
                    }
                    Ok(Addr::External(mut c, t)) => {
                        c.insert(0, cname);
                        Addr::External(c, t)
                    }
                    _ => Addr::Records(Vec::new()),
                },
            );
        }
        let want_v4 = qtype == rtype::A;
        let mut seen: HashSet<IpAddr> = HashSet::new();
        let mut recs = Vec::new();
        for h in &hits {
            if let Host::Ip(ip) = h.host
                && ip.is_ipv4() == want_v4
                && (hits.len() == 1 || seen.insert(ip))
            {
                recs.push(Rr {
                    owner,
                    ttl: self.ttl(),
                    data: addr_data(ip),
                });
            }
        }
        Ok(Addr::Records(recs))
    }

    fn srv(&self, qname: &'a str) -> Result<(Vec<Rr<'a>>, Vec<Rr<'a>>), NameError> {
        let hits = self.services(qname, rtype::SRV)?;
        // CoreDNS: every hit weighs 100, so each gets floor(100 / n), at least 1.
        let weight = ((100 / hits.len().max(1)) as u16).max(1);
        let mut answers = Vec::new();
        let mut extra = Vec::new();
        let mut srv_seen: HashSet<(Ident<'_>, i32)> = HashSet::new();
        let mut addr_seen: HashSet<(Ident<'_>, IpAddr)> = HashSet::new();
        let mut target_index: Vec<(Ident<'_>, usize)> = Vec::new();
        for h in &hits {
            let Host::Ip(ip) = h.host else { continue };
            if h.port < 0 {
                continue;
            }
            if srv_seen.insert((h.ident, h.port)) {
                answers.push(Rr {
                    owner: Owner::QName,
                    ttl: self.ttl(),
                    data: Data::Srv {
                        priority: 0,
                        weight,
                        port: h.port as u16,
                        target: h.name,
                    },
                });
                if !target_index.iter().any(|(i, _)| *i == h.ident) {
                    target_index.push((h.ident, answers.len() - 1));
                }
            }
            if addr_seen.insert((h.ident, ip))
                && let Some((_, idx)) = target_index.iter().find(|(i, _)| *i == h.ident)
            {
                extra.push(Rr {
                    owner: Owner::TargetOf(*idx),
                    ttl: self.ttl(),
                    data: addr_data(ip),
                });
            }
        }
        Ok((answers, extra))
    }

    /// PTR records for an address: its Service's name if it is a ClusterIP, else one per endpoint
    /// holding it.
    pub(crate) fn ptr(&self, ip: IpAddr) -> Vec<Rr<'a>> {
        let ttl = self.ttl();
        let ptr = |d: DName<'a>| Rr {
            owner: Owner::QName,
            ttl,
            data: Data::Ptr(d),
        };
        if let Some(key) = self.snap.cluster_ips.get(ip) {
            return vec![ptr(DName::zone(&[Part::S(key), Part::S("svc")]))];
        }
        let mut out = Vec::new();
        let mut seen: Vec<(Option<&str>, &str)> = Vec::new();
        for id in self.snap.endpoint_ips.get(ip) {
            let Some(entry) = self.snap.entry_by_id(id) else {
                continue;
            };
            let key: &'a str = &entry.key;
            for ep in entry.slices.iter().flat_map(|s| s.endpoints()) {
                if ep.ip != ip || seen.contains(&(ep.hostname, key)) {
                    continue;
                }
                seen.push((ep.hostname, key));
                let first = match ep.hostname {
                    Some(h) => Part::S(h),
                    None => Part::DashedIp(ip),
                };
                out.push(ptr(DName::zone(&[first, Part::S(key), Part::S("svc")])));
            }
        }
        out
    }
}

enum Addr<'a> {
    Records(Vec<Rr<'a>>),
    External(Vec<Rr<'a>>, &'a str),
}

fn addr_data(ip: IpAddr) -> Data<'static> {
    match ip {
        IpAddr::V4(v4) => Data::A(v4),
        IpAddr::V6(v6) => Data::Aaaa(v6),
    }
}
