//! The [`Store`] on etcd: the API server's objects in a real etcd cluster, so that several API servers
//! serve one cluster and the control plane outlives any one machine.
//!
//! It maps the trait onto etcd the way kube-apiserver's storage layer does:
//! - every key lives under a prefix (`/registry` by default, kube-apiserver's `--etcd-prefix`), and the
//!   resourceVersion is etcd's revision;
//! - a write is one transaction that compares the key's `mod_revision` (or its absence or existence) and
//!   puts or deletes it, else reads it back for the conflict; [`Store::write_all`] is the same with
//!   several keys in one etcd transaction, so they commit at one revision or not at all;
//! - `snapshot_and_watch` is a paged range read at one revision and a watch from the revision after it,
//!   with progress notifications, so a feed whose keys are quiet still advances (a consistent read waits
//!   for that, see [`Store::current_revision`]);
//! - compaction runs every `--etcd-compaction-interval` (5 minutes, as kube-apiserver), coordinated
//!   between API servers through kube-apiserver's own `compact_rev_key`: each round compacts to the
//!   revision the previous round saw, so one interval of history stays for watchers to resume from.
//!
//! **Faults.** With several endpoints, a member that stops answering leaves the client's rotation until
//! it answers again ([`members`]). A probe reads a key every second; while it fails, [`Store::health`] says why (the API
//! server's `/readyz` shows `[-]etcd failed: …`), writes fail with the cause (after [`REQUEST_TIMEOUT`]
//! at most) and reads go on from the API server's cache. A watch that breaks is re-opened from the
//! revision after the last one it delivered, so the feed stays gap-free across an etcd restart (etcd
//! never splits one revision's events across watch responses, so a revision is delivered whole or not
//! at all). Only if
//! etcd compacted that revision meanwhile can the feed not go on: the store then reports
//! [`Health::Failed`] (`too old resource version`), and the process restarts on a fresh snapshot, as
//! kube-apiserver's cacher relists.

mod members;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity, KvClient,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchResponse,
};
use futures::future::BoxFuture;
use svcnet_store::{
    Event, Feed, Health, KeyValue, Precondition, Revision, Snapshot, Store, StoreError, TxnOutcome, Write,
    WriteOutcome,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

/// How long one request to etcd may take before it fails with [`StoreError::Timeout`]
/// (kube-apiserver's default `--request-timeout` is a minute, but a write that etcd cannot commit in
/// this long is better answered than left hanging).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the health probe reads from etcd.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long the probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys read per page of a snapshot: a whole prefix of large objects in one response would pass gRPC's
/// message limit.
const PAGE: i64 = 500;
/// The largest gRPC response accepted (kube-apiserver's etcd client takes up to `math.MaxInt32`): a page
/// of large objects, or a watch event with its previous state, passes gRPC's 4 MiB default.
const MAX_RESPONSE: usize = i32::MAX as usize;
/// How often an otherwise quiet watch asks etcd for a progress notification.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// The key kube-apiserver coordinates compaction through (outside every prefix, shared by all).
const COMPACT_KEY: &str = "compact_rev_key";
/// First and longest wait before re-opening a broken watch.
const REWATCH_FIRST: Duration = Duration::from_millis(100);
const REWATCH_MAX: Duration = Duration::from_secs(2);

/// How to reach etcd (kube-apiserver's `--etcd-*` flags).
#[derive(Debug, Clone)]
pub struct EtcdConfig {
    /// Client URLs, e.g. `http://127.0.0.1:2379` (`--etcd-servers`).
    pub endpoints: Vec<String>,
    /// The prefix every key is stored under (`--etcd-prefix`, default `/registry`).
    pub prefix: String,
    /// The CA that signed etcd's serving certificate (`--etcd-cafile`).
    pub ca_file: Option<PathBuf>,
    /// This client's certificate and key (`--etcd-certfile`, `--etcd-keyfile`).
    pub cert_file: Option<PathBuf>,
    /// The key of [`Self::cert_file`].
    pub key_file: Option<PathBuf>,
    /// How often to compact etcd's history (`--etcd-compaction-interval`); zero turns compaction off.
    pub compaction_interval: Duration,
}

impl EtcdConfig {
    /// Settings for `endpoints` with kube-apiserver's defaults: prefix `/registry`, no TLS, compaction
    /// every 5 minutes.
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig {
            endpoints,
            prefix: "/registry".into(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            compaction_interval: Duration::from_secs(300),
        }
    }
}

/// Errors setting up the connection (bad flags or files); failures talking to etcd are
/// [`StoreError`]s.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No `--etcd-servers` given.
    #[error("--etcd-servers needs at least one URL")]
    NoEndpoints,
    /// A URL that is not `http://` or `https://`.
    #[error("--etcd-servers: {0:?} is not an http:// or https:// URL")]
    BadUrl(String),
    /// Only one of the client certificate and its key.
    #[error("--etcd-certfile and --etcd-keyfile go together")]
    HalfIdentity,
    /// A TLS file that cannot be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The client library refused the settings.
    #[error("etcd client: {0}")]
    Client(String),
}

/// Why [`EtcdStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The settings are wrong; retrying cannot help.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// etcd did not answer; it may yet (`svcnet up` retries).
    #[error(transparent)]
    Unreachable(StoreError),
}

/// The etcd-backed store. Share it behind an `Arc`; its background tasks stop when it is dropped.
pub struct EtcdStore {
    client: Client,
    /// `/registry` (no trailing slash): store key `/core/…` is etcd key `/registry/core/…`.
    prefix: String,
    endpoints: String,
    health: Arc<Mutex<Health>>,
    /// Bumped to make every open watch ask etcd for a progress notification (a counter, so that a watch
    /// busy with a response when it is bumped still sees it).
    progress: watch::Sender<u64>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
            t.abort();
        }
    }
}

fn rev(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

/// Runs one etcd request with [`REQUEST_TIMEOUT`].
async fn timed<T>(
    endpoints: &str,
    what: &str,
    f: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.map_err(|e| StoreError::Backend(format!("etcd {endpoints}: {what}: {e}"))),
        Err(_) => Err(StoreError::Timeout(format!(
            "etcd {endpoints}: {what}: no answer within {}s",
            REQUEST_TIMEOUT.as_secs()
        ))),
    }
}

fn write_len(w: &Write) -> usize {
    match w {
        Write::Put { value, .. } => value.len(),
        Write::Delete { .. } => 0,
    }
}

/// The first key after every key that starts with `prefix` (etcd's range end for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn read(path: &PathBuf) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })
}

impl EtcdStore {
    /// Connects to etcd and checks that it answers (a read, within [`REQUEST_TIMEOUT`]); then starts the
    /// health probe and the compactor.
    pub async fn connect(config: EtcdConfig) -> Result<EtcdStore, ConnectError> {
        if config.endpoints.is_empty() {
            return Err(ConfigError::NoEndpoints.into());
        }
        if let Some(bad) = config
            .endpoints
            .iter()
            .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
        {
            return Err(ConfigError::BadUrl(bad.clone()).into());
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let tls = config.ca_file.is_some() || config.cert_file.is_some() || config.key_file.is_some();
        if tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &config.ca_file {
                t = t.ca_certificate(Certificate::from_pem(read(ca)?));
            }
            match (&config.cert_file, &config.key_file) {
                (Some(c), Some(k)) => {
                    t = t.identity(Identity::from_pem(read(c)?, read(k)?));
                }
                (None, None) => {}
                _ => return Err(ConfigError::HalfIdentity.into()),
            }
            options = options.with_tls(t);
        }
        let endpoints = config.endpoints.join(",");
        let client = Client::connect(&config.endpoints, Some(options.clone()))
            .await
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        let prefix = config.prefix.trim_end_matches('/').to_string();
        let store = EtcdStore {
            client,
            prefix,
            endpoints,
            health: Arc::new(Mutex::new(Health::Ok)),
            progress: watch::Sender::new(0),
            tasks: Mutex::new(Vec::new()),
        };
        // Said now rather than at the first request: a wrong URL or a stopped etcd is the likeliest
        // mistake, and `svcnet up` retries it with this message.
        let mut kv = store.client.kv_client();
        timed(&store.endpoints, "reading", kv.get("health", None))
            .await
            .map_err(ConnectError::Unreachable)?;
        info!(endpoints = %store.endpoints, prefix = %store.prefix, "connected to etcd");
        let probe = tokio::spawn(probe(
            store.client.kv_client(),
            store.endpoints.clone(),
            store.health.clone(),
        ));
        let mut tasks = vec![probe];
        if config.endpoints.len() > 1 {
            tasks.push(tokio::spawn(members::keep_rotation(
                store.client.clone(),
                config.endpoints.clone(),
                options,
            )));
        }
        if !config.compaction_interval.is_zero() {
            tasks.push(tokio::spawn(compactor(
                store.client.kv_client(),
                config.compaction_interval,
            )));
        }
        store
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(tasks);
        Ok(store)
    }

    fn etcd_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        let key = String::from_utf8_lossy(kv.key());
        KeyValue {
            key: key.strip_prefix(&self.prefix).unwrap_or(&key).to_string(),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: rev(kv.create_revision()),
            mod_revision: rev(kv.mod_revision()),
        }
    }

    fn kv(&self) -> KvClient {
        self.client.kv_client().max_decoding_message_size(MAX_RESPONSE)
    }

    /// Reads every key under `prefix` (an etcd key prefix) page by page at one revision.
    async fn range(&self, prefix: &str) -> Result<Snapshot, StoreError> {
        let end = prefix_end(prefix.as_bytes());
        let mut kv = self.kv();
        let mut from = prefix.as_bytes().to_vec();
        let mut at: Option<i64> = None;
        let mut items = Vec::new();
        loop {
            let mut opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            if let Some(r) = at {
                opts = opts.with_revision(r);
            }
            let resp = timed(&self.endpoints, "listing", kv.get(from.clone(), Some(opts))).await?;
            let revision = resp.header().map_or(0, |h| h.revision());
            let at = *at.get_or_insert(revision);
            items.extend(resp.kvs().iter().map(|kv| self.convert(kv)));
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => {
                    return Ok(Snapshot {
                        revision: rev(at),
                        items,
                    });
                }
            }
        }
    }
}

/// Reads a key every [`PROBE_EVERY`] and records whether etcd answers.
async fn probe(mut kv: KvClient, endpoints: String, health: Arc<Mutex<Health>>) {
    let mut since: Option<jiff::Timestamp> = None;
    loop {
        tokio::time::sleep(PROBE_EVERY).await;
        let result = match tokio::time::timeout(PROBE_TIMEOUT, kv.get("health", None)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {}s", PROBE_TIMEOUT.as_secs())),
        };
        let mut h = health.lock().unwrap_or_else(|e| e.into_inner());
        if matches!(*h, Health::Failed(_)) {
            // Only a restart clears it (see the module docs).
            continue;
        }
        match result {
            Ok(()) => {
                if since.take().is_some() {
                    info!(endpoints = %endpoints, "etcd answers again");
                }
                *h = Health::Ok;
            }
            Err(e) => {
                let first = *since.get_or_insert_with(jiff::Timestamp::now);
                if matches!(*h, Health::Ok) {
                    warn!(endpoints = %endpoints, error = %e, "etcd does not answer; writes fail until it does");
                }
                *h = Health::Degraded(format!(
                    "etcd {endpoints} has not answered since {}: {e}",
                    first.round(jiff::Unit::Second).unwrap_or(first)
                ));
            }
        }
    }
}

/// kube-apiserver's compaction loop (`storage/etcd3/compact.go`): every `interval`, try to move
/// `compact_rev_key` from the version this server last saw to a new one; the server that succeeds
/// compacts to the revision the previous round recorded, so exactly one server compacts per round and
/// one interval of history is always kept.
async fn compactor(mut kv: KvClient, interval: Duration) {
    let (mut seen_version, mut last_revision) = (0i64, 0i64);
    loop {
        tokio::time::sleep(interval).await;
        let txn = Txn::new()
            .when([Compare::version(COMPACT_KEY, CompareOp::Equal, seen_version)])
            .and_then([TxnOp::put(COMPACT_KEY, last_revision.to_string(), None)])
            .or_else([TxnOp::get(COMPACT_KEY, None)]);
        let resp = match tokio::time::timeout(REQUEST_TIMEOUT, kv.txn(txn)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                warn!(error = %e, "compaction round failed");
                continue;
            }
            Err(_) => {
                warn!("compaction round: etcd did not answer");
                continue;
            }
        };
        let current = resp.header().map_or(0, |h| h.revision());
        if !resp.succeeded() {
            // Another server compacted this round; follow its version.
            seen_version = resp
                .op_responses()
                .into_iter()
                .find_map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.version()),
                    _ => None,
                })
                .unwrap_or(0);
            last_revision = current;
            continue;
        }
        seen_version += 1;
        if last_revision > 0 {
            match tokio::time::timeout(REQUEST_TIMEOUT, kv.compact(last_revision, None)).await {
                Ok(Ok(_)) => info!(revision = last_revision, "compacted etcd's history"),
                // Already compacted further (another cluster sharing etcd): nothing lost.
                Ok(Err(e)) => debug!(error = %e, revision = last_revision, "compaction skipped"),
                Err(_) => warn!("compaction: etcd did not answer"),
            }
        }
        last_revision = current;
    }
}

impl EtcdStore {
    /// The writes as one etcd transaction: compare every precondition, then do every write; else read
    /// every key back, to say which precondition failed and how the key is now.
    async fn txn(&self, writes: &[Write]) -> Result<TxnOutcome, StoreError> {
        let mut when = Vec::new();
        let mut ops = Vec::with_capacity(writes.len());
        let mut reads = Vec::with_capacity(writes.len());
        for write in writes {
            let key = self.etcd_key(write.key());
            let precondition = write.precondition();
            when.extend(match (precondition, write) {
                (Precondition::None, Write::Put { .. }) => None,
                // A delete of a missing key does nothing and reports the key as missing, as the
                // embedded store does.
                (Precondition::None | Precondition::Exists, _) => {
                    Some(Compare::version(key.clone(), CompareOp::Greater, 0))
                }
                (Precondition::Absent, _) => Some(Compare::version(key.clone(), CompareOp::Equal, 0)),
                (Precondition::ModRevision(r), _) => Some(Compare::mod_revision(
                    key.clone(),
                    CompareOp::Equal,
                    i64::try_from(r).unwrap_or(i64::MAX),
                )),
            });
            ops.push(match write {
                // A create has no previous state to report: asking for it costs etcd a read of the
                // key on every create.
                Write::Put { value, .. } if precondition == Precondition::Absent => {
                    TxnOp::put(key.clone(), value.to_vec(), None)
                }
                Write::Put { value, .. } => TxnOp::put(
                    key.clone(),
                    value.to_vec(),
                    Some(PutOptions::new().with_prev_key()),
                ),
                Write::Delete { .. } => TxnOp::delete(
                    key.clone(),
                    Some(etcd_client::DeleteOptions::new().with_prev_key()),
                ),
            });
            reads.push(TxnOp::get(key, None));
        }
        let txn = if when.is_empty() {
            Txn::new().and_then(ops)
        } else {
            Txn::new().when(when).and_then(ops).or_else(reads)
        };
        let mut kv = self.kv();
        let resp = match timed(&self.endpoints, "writing", kv.txn(txn)).await {
            // etcd's own limit on one request (`--max-request-bytes`, 1.5 MiB by default).
            Err(StoreError::Backend(m)) if m.contains("request is too large") => {
                let keys: Vec<&str> = writes.iter().map(Write::key).collect();
                return Err(StoreError::TooLarge(format!(
                    "etcdserver: request is too large ({} bytes for {})",
                    writes.iter().map(write_len).sum::<usize>(),
                    keys.join(", ")
                )));
            }
            other => other?,
        };
        let revision = rev(resp.header().map_or(0, |h| h.revision()));
        let responses = resp.op_responses();
        if !resp.succeeded() {
            // The reads ran at the revision the comparisons did: the first write that does not hold
            // over its key's state is the one that failed.
            let currents = responses.into_iter().map(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|kv| self.convert(kv)),
                _ => None,
            });
            let failed = writes
                .iter()
                .zip(currents)
                .enumerate()
                .find(|(_, (w, current))| !w.holds(current.as_ref()));
            let (index, current) = match failed {
                Some((index, (_, current))) => (index, current),
                None => (0, None),
            };
            return Ok(TxnOutcome::PreconditionFailed { index, current });
        }
        let prevs = responses
            .into_iter()
            .map(|r| match r {
                TxnOpResponse::Put(p) => p.prev_key().map(|kv| self.convert(kv)),
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(|kv| self.convert(kv)),
                _ => None,
            })
            .collect();
        Ok(TxnOutcome::Committed { revision, prevs })
    }
}

impl Store for EtcdStore {
    fn write(&self, write: Write) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(async move {
            Ok(match self.txn(std::slice::from_ref(&write)).await? {
                TxnOutcome::Committed { revision, prevs } => WriteOutcome::Committed {
                    revision,
                    prev: prevs.into_iter().next().flatten(),
                },
                TxnOutcome::PreconditionFailed { current, .. } => {
                    WriteOutcome::PreconditionFailed { current }
                }
            })
        })
    }

    fn write_all(&self, writes: Vec<Write>) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            svcnet_store::check_txn(&writes)?;
            self.txn(&writes).await
        })
    }

    fn snapshot_and_watch(&self, prefix: &str) -> BoxFuture<'_, Result<(Snapshot, Feed), StoreError>> {
        let prefix = self.etcd_key(prefix);
        Box::pin(async move {
            let snapshot = self.range(&prefix).await?;
            let (tx, rx) = mpsc::unbounded_channel();
            let feeder = Feeder {
                client: self.client.clone(),
                prefix: prefix.clone(),
                strip: self.prefix.clone(),
                endpoints: self.endpoints.clone(),
                health: self.health.clone(),
                progress: self.progress.subscribe(),
                next: snapshot.revision + 1,
                tx,
            };
            let task = tokio::spawn(feeder.run());
            self.tasks.lock().unwrap_or_else(|e| e.into_inner()).push(task);
            Ok((snapshot, rx))
        })
    }

    fn get(&self, key: &str) -> BoxFuture<'_, Result<Option<KeyValue>, StoreError>> {
        let key = self.etcd_key(key);
        Box::pin(async move {
            let mut kv = self.kv();
            let resp = timed(&self.endpoints, "reading", kv.get(key, None)).await?;
            Ok(resp.kvs().first().map(|kv| self.convert(kv)))
        })
    }

    fn health(&self) -> Health {
        self.health.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn current_revision(&self) -> BoxFuture<'_, Result<Option<Revision>, StoreError>> {
        Box::pin(async move {
            // While etcd does not answer, say so at once instead of making every read wait.
            if let Health::Degraded(why) | Health::Failed(why) = self.health() {
                return Err(StoreError::Backend(why));
            }
            let mut kv = self.kv();
            // Any linearizable read answers with the current revision; a missing key is the cheapest.
            let resp = timed(&self.endpoints, "reading", kv.get(self.prefix.clone(), None)).await?;
            self.progress.send_modify(|n| *n = n.wrapping_add(1));
            Ok(Some(rev(resp.header().map_or(0, |h| h.revision()))))
        })
    }
}

/// One feed: an etcd watch on a prefix, re-opened where it stopped whenever it breaks.
struct Feeder {
    client: Client,
    /// The etcd key prefix watched.
    prefix: String,
    /// The store's prefix, taken off every key.
    strip: String,
    endpoints: String,
    health: Arc<Mutex<Health>>,
    progress: watch::Receiver<u64>,
    /// The first revision not yet delivered.
    next: Revision,
    tx: mpsc::UnboundedSender<Vec<Event>>,
}

/// Why a watch stream stopped.
enum Stop {
    /// The reader went away, or the revision to resume from was compacted: the feed ends.
    End,
    /// The connection broke: re-open it.
    Broken(String),
}

impl Feeder {
    async fn run(mut self) {
        let mut delay = REWATCH_FIRST;
        loop {
            match self.watch_once().await {
                Stop::End => return,
                Stop::Broken(why) => {
                    debug!(endpoints = %self.endpoints, error = %why, next = self.next, "etcd watch broke; re-opening it");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(REWATCH_MAX);
                }
            }
        }
    }

    fn convert(&self, kv: &etcd_client::KeyValue) -> KeyValue {
        let key = String::from_utf8_lossy(kv.key());
        KeyValue {
            key: key.strip_prefix(&self.strip).unwrap_or(&key).to_string(),
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: rev(kv.create_revision()),
            mod_revision: rev(kv.mod_revision()),
        }
    }

    /// Watches from `self.next` until the stream ends.
    async fn watch_once(&mut self) -> Stop {
        let options = WatchOptions::new()
            .with_range(prefix_end(self.prefix.as_bytes()))
            .with_start_revision(i64::try_from(self.next).unwrap_or(i64::MAX))
            .with_prev_key()
            .with_progress_notify();
        let mut watch_client = self.client.watch_client().max_decoding_message_size(MAX_RESPONSE);
        let stream = match tokio::time::timeout(
            REQUEST_TIMEOUT,
            watch_client.watch(self.prefix.clone(), Some(options)),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Stop::Broken(e.to_string()),
            Err(_) => return Stop::Broken("no answer".into()),
        };
        let (mut requests, mut responses) = stream.split();
        let mut tick = tokio::time::interval(PROGRESS_EVERY);
        loop {
            let msg = tokio::select! {
                _ = self.tx.closed() => return Stop::End,
                _ = self.progress.changed() => {
                    if let Err(e) = requests.request_progress().await {
                        return Stop::Broken(e.to_string());
                    }
                    continue;
                }
                _ = tick.tick() => {
                    if let Err(e) = requests.request_progress().await {
                        return Stop::Broken(e.to_string());
                    }
                    continue;
                }
                msg = responses.message() => msg,
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => return Stop::Broken("stream ended".into()),
                Err(e) => return Stop::Broken(e.to_string()),
            };
            if let Some(stop) = self.deliver(resp) {
                return stop;
            }
        }
    }

    /// Sends one watch response on as events; `Some` when the watch cannot go on.
    fn deliver(&mut self, resp: WatchResponse) -> Option<Stop> {
        if resp.canceled() {
            let compacted = resp.compact_revision();
            if compacted > 0 {
                let why = format!(
                    "too old resource version: {} ({compacted}): etcd compacted its history while the \
                     watch on {} was broken; restart svcnet to reload from a fresh snapshot",
                    self.next - 1,
                    self.prefix
                );
                error!(error = %why, "the store's change feed cannot go on");
                *self.health.lock().unwrap_or_else(|e| e.into_inner()) = Health::Failed(why);
                return Some(Stop::End);
            }
            return Some(Stop::Broken(format!("watch canceled: {}", resp.cancel_reason())));
        }
        let header_revision = rev(resp.header().map_or(0, |h| h.revision()));
        let mut batch = Vec::with_capacity(resp.events().len());
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let converted = self.convert(kv);
            let event = match ev.event_type() {
                EventType::Put => Event::Put {
                    kv: converted,
                    prev: ev.prev_kv().map(|p| self.convert(p)),
                },
                EventType::Delete => Event::Delete {
                    revision: converted.mod_revision,
                    // etcd sends the previous state when asked; without it (compacted away) the key
                    // alone still tells the reader what went.
                    prev: ev.prev_kv().map(|p| self.convert(p)).unwrap_or(converted),
                },
            };
            self.next = event.revision() + 1;
            batch.push(event);
        }
        // A response without events and not the creation answer is a progress notification: every
        // change up to its revision has been sent. (The creation answer's revision is etcd's current one,
        // which the events from `start_revision` have not caught up with yet.)
        if batch.is_empty() && !resp.created() && header_revision >= self.next {
            self.next = header_revision + 1;
            batch.push(Event::Progress {
                revision: header_revision,
            });
        }
        if !batch.is_empty() && self.tx.send(batch).is_err() {
            return Some(Stop::End);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"/registry/"), b"/registry0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
