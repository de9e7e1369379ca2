//! Everything outside the cluster zone: forwarding to the upstream resolvers over UDP (TCP when the
//! answer is truncated), a bounded cache of positive and negative answers that honours TTLs, and
//! request coalescing so that concurrent identical questions cost one upstream query.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::oneshot;

use crate::metrics::Metrics;

/// Longest a positive answer is cached (CoreDNS's cache default).
const MAX_POSITIVE_TTL: u32 = 3600;
/// Longest a negative answer is cached (CoreDNS's cache default).
const MAX_NEGATIVE_TTL: u32 = 1800;

/// What may be cached and for how long: CoreDNS's `cache [TTL] [ZONES…] { disable success|denial ZONES }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachePolicy {
    /// Longest a positive answer is kept.
    pub max_success_ttl: u32,
    /// Longest a negative answer (NXDOMAIN, NODATA) is kept.
    pub max_denial_ttl: u32,
    /// Only names in these zones are cached (empty: every name).
    pub zones: Vec<String>,
    /// Positive answers for names in these zones are not cached (`.`: none is).
    pub no_success: Vec<String>,
    /// Negative answers for names in these zones are not cached.
    pub no_denial: Vec<String>,
}

impl Default for CachePolicy {
    fn default() -> Self {
        CachePolicy {
            max_success_ttl: MAX_POSITIVE_TTL,
            max_denial_ttl: MAX_NEGATIVE_TTL,
            zones: Vec::new(),
            no_success: Vec::new(),
            no_denial: Vec::new(),
        }
    }
}

/// Whether `name` (lower case, no final dot) is in `zone` (`.` holds every name).
fn in_zone(name: &str, zone: &str) -> bool {
    zone == "."
        || name == zone
        || (name.len() > zone.len()
            && name.ends_with(zone)
            && name.as_bytes()[name.len() - zone.len() - 1] == b'.')
}

impl CachePolicy {
    /// How long `m`, the answer for `name`, may be cached (0: not at all).
    fn ttl(&self, name: &str, m: &Message) -> u32 {
        let name = name.trim_end_matches('.');
        if !self.zones.is_empty() && !self.zones.iter().any(|z| in_zone(name, z)) {
            return 0;
        }
        let negative = m.metadata.response_code != ResponseCode::NoError || m.answers.is_empty();
        let (cap, off) = if negative {
            (self.max_denial_ttl, &self.no_denial)
        } else {
            (self.max_success_ttl, &self.no_success)
        };
        if off.iter().any(|z| in_zone(name, z)) {
            return 0;
        }
        cache_ttl(m).min(cap)
    }
}
/// Time allowed for one upstream exchange.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// Why an upstream answer could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No upstream is configured.
    #[error("no upstream resolvers")]
    NoUpstreams,
    /// Every upstream failed.
    #[error("every upstream failed: {0}")]
    Failed(String),
    /// `max_concurrent` upstream queries are already waiting (answered REFUSED, as CoreDNS does).
    #[error("too many concurrent upstream queries")]
    Overloaded,
}

/// The cache key: the lower-cased name, type, class and DO bit.
type Key = (String, u16, u16, bool);

/// Someone waiting for an in-flight upstream query (None: it failed).
type Waiter = oneshot::Sender<Option<Arc<Cached>>>;

/// An upstream answer as cached.
pub struct Cached {
    /// The upstream's message.
    pub msg: Message,
    stored: Instant,
    ttl: u32,
}

impl Cached {
    /// Seconds since it was stored.
    pub fn age(&self) -> u32 {
        self.stored.elapsed().as_secs() as u32
    }
    fn fresh(&self) -> bool {
        self.stored.elapsed() < Duration::from_secs(u64::from(self.ttl))
    }
}

struct Cache {
    map: HashMap<Key, Arc<Cached>>,
    capacity: usize,
}

impl Cache {
    fn get(&mut self, k: &Key) -> Option<Arc<Cached>> {
        match self.map.get(k) {
            Some(c) if c.fresh() => Some(c.clone()),
            Some(_) => {
                self.map.remove(k);
                None
            }
            None => None,
        }
    }

    fn insert(&mut self, k: Key, v: Arc<Cached>) {
        if self.capacity == 0 {
            return;
        }
        if self.map.len() >= self.capacity && !self.map.contains_key(&k) {
            self.map.retain(|_, c| c.fresh());
            if self.map.len() >= self.capacity {
                // Still full of live entries: drop an arbitrary tenth rather than one at a time.
                let drop: Vec<Key> = self.map.keys().take(self.capacity / 10 + 1).cloned().collect();
                for d in drop {
                    self.map.remove(&d);
                }
            }
        }
        self.map.insert(k, v);
    }
}

/// The forwarder shared by every serving task.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    policy: CachePolicy,
    /// Permits for upstream queries in flight (`forward … { max_concurrent N }`).
    concurrent: Option<Arc<tokio::sync::Semaphore>>,
    cache: Mutex<Cache>,
    inflight: Mutex<HashMap<Key, Vec<Waiter>>>,
    metrics: Metrics,
}

/// Removes an in-flight entry however the leader's future ends (even if dropped), waking waiters.
struct InflightGuard<'a> {
    fwd: &'a Forwarder,
    key: Option<Key>,
}

impl InflightGuard<'_> {
    fn finish(mut self, v: Option<Arc<Cached>>) {
        if let Some(k) = self.key.take() {
            let waiters = self
                .fwd
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&k);
            for w in waiters.unwrap_or_default() {
                let _ = w.send(v.clone());
            }
        }
    }
}

impl Drop for InflightGuard<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.fwd
                .inflight
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&k);
        }
    }
}

impl Forwarder {
    /// A forwarder to `upstreams` with a cache of at most `cache_size` answers.
    pub fn new(upstreams: Vec<SocketAddr>, cache_size: usize, metrics: Metrics) -> Self {
        Forwarder::with_policy(upstreams, cache_size, CachePolicy::default(), None, metrics)
    }

    /// A forwarder with a cache `policy` and at most `max_concurrent` upstream queries at once.
    pub fn with_policy(
        upstreams: Vec<SocketAddr>,
        cache_size: usize,
        policy: CachePolicy,
        max_concurrent: Option<usize>,
        metrics: Metrics,
    ) -> Self {
        Forwarder {
            upstreams,
            policy,
            concurrent: max_concurrent.map(|n| Arc::new(tokio::sync::Semaphore::new(n))),
            cache: Mutex::new(Cache {
                map: HashMap::new(),
                capacity: cache_size,
            }),
            inflight: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The upstream answer to a question, from the cache or the upstreams.
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        dnssec_ok: bool,
    ) -> Result<Arc<Cached>, ForwardError> {
        let key: Key = (
            name.to_ascii().to_ascii_lowercase(),
            u16::from(qtype),
            u16::from(qclass),
            dnssec_ok,
        );
        let cached = self.cache.lock().unwrap_or_else(|e| e.into_inner()).get(&key);
        if let Some(c) = cached {
            self.metrics
                .cache_hit(c.msg.metadata.response_code != ResponseCode::NoError || c.msg.answers.is_empty());
            return Ok(c);
        }
        self.metrics.cache_miss();
        // Coalesce: the first asker queries, the others wait for its answer.
        let rx = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            match inflight.get_mut(&key) {
                Some(waiters) => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Some(rx)
                }
                None => {
                    inflight.insert(key.clone(), Vec::new());
                    None
                }
            }
        };
        if let Some(rx) = rx {
            return match rx.await {
                Ok(Some(c)) => Ok(c),
                _ => Err(ForwardError::Failed("coalesced query failed".into())),
            };
        }
        let guard = InflightGuard {
            fwd: self,
            key: Some(key.clone()),
        };
        let _permit = match &self.concurrent {
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    self.metrics.max_concurrent_reject();
                    return Err(ForwardError::Overloaded);
                }
            },
            None => None,
        };
        let result = self.query_upstreams(name, qtype, qclass, dnssec_ok).await;
        match result {
            Ok(msg) => {
                let ttl = self.policy.ttl(&key.0, &msg);
                let c = Arc::new(Cached {
                    msg,
                    stored: Instant::now(),
                    ttl,
                });
                if ttl > 0 {
                    let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
                    cache.insert(key, c.clone());
                    self.metrics.cache_entries(cache.map.len());
                }
                guard.finish(Some(c.clone()));
                Ok(c)
            }
            Err(e) => {
                guard.finish(None);
                Err(e)
            }
        }
    }

    async fn query_upstreams(
        &self,
        name: &Name,
        qtype: RecordType,
        qclass: DNSClass,
        dnssec_ok: bool,
    ) -> Result<Message, ForwardError> {
        if self.upstreams.is_empty() {
            return Err(ForwardError::NoUpstreams);
        }
        let mut errors = Vec::new();
        for up in &self.upstreams {
            let mut q = Message::query();
            q.metadata.recursion_desired = true;
            let mut query = Query::query(name.clone(), qtype);
            query.set_query_class(qclass);
            q.add_query(query);
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            edns.set_dnssec_ok(dnssec_ok);
            q.set_edns(edns);
            let started = Instant::now();
            self.metrics.forward_request(up);
            match exchange(*up, &q).await {
                Ok(m) => {
                    self.metrics
                        .forward_response(up, m.metadata.response_code, started.elapsed());
                    // SERVFAIL and REFUSED: another upstream may do better.
                    if matches!(
                        m.metadata.response_code,
                        ResponseCode::ServFail | ResponseCode::Refused
                    ) {
                        errors.push(format!("{up}: {}", m.metadata.response_code));
                        continue;
                    }
                    return Ok(m);
                }
                Err(e) => errors.push(format!("{up}: {e}")),
            }
        }
        Err(ForwardError::Failed(errors.join("; ")))
    }
}

/// How long an answer may be kept, before the policy's caps: its smallest TTL, or for a negative
/// answer the SOA's (RFC 2308); 0 means not at all.
fn cache_ttl(m: &Message) -> u32 {
    match m.metadata.response_code {
        ResponseCode::NoError if !m.answers.is_empty() => m.answers.iter().map(|r| r.ttl).min().unwrap_or(0),
        ResponseCode::NoError | ResponseCode::NXDomain => m
            .authorities
            .iter()
            .find_map(|r| match &r.data {
                RData::SOA(soa) => Some(r.ttl.min(soa.minimum)),
                _ => None,
            })
            .unwrap_or(0),
        _ => 0,
    }
}

fn matches_question(q: &Message, r: &Message) -> bool {
    r.metadata.id == q.metadata.id
        && r.metadata.message_type == MessageType::Response
        && match (q.queries.first(), r.queries.first()) {
            (Some(a), Some(b)) => {
                a.query_type() == b.query_type()
                    && a.name().to_ascii().eq_ignore_ascii_case(&b.name().to_ascii())
            }
            _ => false,
        }
}

/// One query to one upstream: UDP, then TCP if the answer came back truncated.
async fn exchange(up: SocketAddr, q: &Message) -> Result<Message, String> {
    let bytes = q.to_vec().map_err(|e| e.to_string())?;
    let local: SocketAddr = if up.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let sock = UdpSocket::bind(local).await.map_err(|e| e.to_string())?;
    sock.connect(up).await.map_err(|e| e.to_string())?;
    sock.send(&bytes).await.map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    let mut buf = vec![0u8; 65535];
    let reply = loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf))
            .await
            .map_err(|_| "timeout".to_string())?
            .map_err(|e| e.to_string())?;
        // A connected socket only hears the upstream; still ignore anything that is not our answer.
        if let Ok(m) = Message::from_vec(&buf[..n])
            && matches_question(q, &m)
        {
            break m;
        }
    };
    if !reply.metadata.truncation {
        return Ok(reply);
    }
    let tcp = async {
        let mut s = TcpStream::connect(up).await.map_err(|e| e.to_string())?;
        let mut framed = Vec::with_capacity(bytes.len() + 2);
        framed.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        framed.extend_from_slice(&bytes);
        s.write_all(&framed).await.map_err(|e| e.to_string())?;
        let len = s.read_u16().await.map_err(|e| e.to_string())? as usize;
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        let m = Message::from_vec(&body).map_err(|e| e.to_string())?;
        if !matches_question(q, &m) {
            return Err("TCP answer does not match the question".to_string());
        }
        Ok(m)
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, tcp)
        .await
        .map_err(|_| "TCP timeout".to_string())?
}

/// The client's response built from an upstream answer: the client's id, question (in its case) and
/// EDNS, TTLs aged by the time in the cache, `prefix` records (our CNAMEs) first, and at most `limit`
/// bytes (records dropped from the end, TC set when answers or authorities had to go).
pub fn client_response(
    req: &Message,
    upstream: Option<&Cached>,
    prefix: Vec<Record>,
    rcode: ResponseCode,
    aa: bool,
    client_edns: Option<&Edns>,
    limit: usize,
) -> Vec<u8> {
    let mut m = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.checking_disabled = req.metadata.checking_disabled;
    m.metadata.authoritative = aa;
    m.metadata.response_code = rcode;
    m.add_queries(req.queries.iter().cloned());
    let has_prefix = !prefix.is_empty();
    m.add_answers(prefix);
    if let Some(c) = upstream {
        let age = c.age();
        // TTLs are capped at what the cache may keep (CoreDNS does the same, so that a client does not
        // see 3600 first and then the cap), then aged by the time in the cache.
        let cap = c.ttl;
        let aged = |r: &Record| {
            let mut r = r.clone();
            if cap > 0 {
                r.ttl = r.ttl.min(cap);
            }
            r.decrement_ttl(age);
            r
        };
        m.metadata.recursion_available = c.msg.metadata.recursion_available;
        if !has_prefix {
            m.metadata.authoritative = c.msg.metadata.authoritative;
            m.metadata.response_code = c.msg.metadata.response_code;
            m.metadata.authentic_data = c.msg.metadata.authentic_data;
        }
        // A cached answer may have been asked in another spelling: owners that are the question get
        // this asker's.
        let qname = req.queries.first().map(|q| q.name().clone());
        m.add_answers(c.msg.answers.iter().map(aged).map(|mut r| {
            if let Some(q) = &qname
                && r.name.eq_ignore_root(q)
            {
                r.name = q.clone();
            }
            r
        }));
        if !has_prefix || !c.msg.answers.is_empty() {
            m.add_authorities(c.msg.authorities.iter().map(aged));
            m.add_additionals(c.msg.additionals.iter().map(aged));
        }
    }
    if let Some(e) = client_edns {
        let mut ours = Edns::new();
        ours.set_max_payload(e.max_payload().max(512));
        ours.set_dnssec_ok(e.flags().dnssec_ok);
        m.set_edns(ours);
    }
    encode_within(m, limit)
}

/// Encodes `m` in at most `limit` bytes: drops additional records first (no TC), then authorities and
/// answers from the end (TC).
pub fn encode_within(mut m: Message, limit: usize) -> Vec<u8> {
    loop {
        match m.to_vec() {
            Ok(v) if v.len() <= limit => return v,
            Ok(_) => {}
            Err(_) => {
                // Something in the upstream's data will not encode: answer SERVFAIL rather than nothing.
                m.answers.clear();
                m.authorities.clear();
                m.additionals.clear();
                m.metadata.response_code = ResponseCode::ServFail;
                continue;
            }
        }
        if m.additionals.pop().is_some() {
            continue;
        }
        m.metadata.truncation = true;
        if m.authorities.pop().is_some() {
            continue;
        }
        if m.answers.pop().is_some() {
            continue;
        }
        // Even the header and question do not fit (cannot happen for limit >= 512).
        return m.to_vec().unwrap_or_default();
    }
}
