//! [`UserspaceBackend`]: the control side. Turns service-port changes into listeners and published views.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use prometheus_client::registry::Registry;
use socket2::{Domain, Socket, Type};
use svcnet_dataplane::{
    Backend, BackendError, Balance, Change, Endpoint, FrontendKind, Protocol, ServicePort, ServicePortName,
};
use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::endpoints::{EndpointSet, EpState};
use crate::metrics::ProxyMetrics;
use crate::port::{PortShared, PortView, Settings};
use crate::source::SourcePolicy;
use crate::{ProxyConfig, ProxyError, tcp, udp};

/// The userspace data plane: an L4 proxy listening on every frontend of every service port.
///
/// Calls to [`Backend::apply`]/[`Backend::sync_all`] bind and close listeners synchronously, on the
/// caller's thread; connections are served by the backend's own runtime. A listener that cannot be bound
/// does not stop the rest of the batch: it is logged with its service port, counted in
/// `svcnet_proxy_bind_errors_total`, reported in the call's error (after everything else was applied)
/// and tried again by the next call that touches the port, and by every `sync_all` (the proxier's runner
/// retries a failed sync as a full one, so a listener binds soon after descriptors free up). Which service
/// ports lack a listener is published ([`UserspaceBackend::unbound`], for Warning Events on their
/// Services) and counted in `svcnet_proxy_unbound_listeners`; the log names only the first few ports that
/// start failing in one call and how many more, so running out of descriptors with thousands of Services
/// does not flood it.
///
/// Dropping the backend closes every listener and stops the runtime, ending open connections.
pub struct UserspaceBackend {
    settings: Arc<Settings>,
    balance: Balance,
    node_addresses: Vec<IpAddr>,
    backlog: i32,
    freebind: bool,
    /// [`ProxyConfig::listener_fds`].
    fd_budget: Option<usize>,
    /// Descriptors the listeners hold now (each [`Listener`] gives its own back when dropped).
    fds: Arc<AtomicUsize>,
    metrics: ProxyMetrics,
    ports: HashMap<ServicePortName, PortEntry>,
    /// SCTP ports already logged as skipped.
    sctp_skipped: HashSet<ServicePortName>,
    /// Service ports with frontends that could not be bound: how many, and the first error.
    unbound: BTreeMap<ServicePortName, (usize, String)>,
    /// What [`UserspaceBackend::unbound`] receivers see.
    unbound_tx: tokio::sync::watch::Sender<Arc<Unbound>>,
    /// Listening sockets another proxy process handed over ([`UserspaceBackend::inherit`]), used instead
    /// of binding anew by the frontends they belong to.
    inherited: HashMap<(SocketAddr, Protocol), Socket>,
    /// Set by [`UserspaceBackend::retire`]: this process no longer serves new connections.
    retired: bool,
    rt: ProxyRuntime,
}

/// A listening socket passed between proxy processes (see [`UserspaceBackend::listening_sockets`]).
#[derive(Debug)]
pub struct InheritedSocket {
    /// The frontend address it is bound to.
    pub addr: SocketAddr,
    /// TCP (listening) or UDP.
    pub protocol: Protocol,
    /// The socket.
    pub fd: OwnedFd,
}

/// Service ports that lack a listener, with the first bind error of each.
pub type Unbound = BTreeMap<ServicePortName, String>;

/// At most this many log lines per call for service ports that start failing to bind.
const UNBOUND_LOG_LINES: usize = 5;

/// The proxy's own runtime.
///
/// With one worker it is a current-thread runtime driven by a dedicated thread: the same isolation, and a
/// cheaper scheduler than a one-worker multi-thread runtime (no work-stealing bookkeeping on every wake).
enum ProxyRuntime {
    Multi(Option<Runtime>),
    Single {
        handle: Handle,
        /// Dropping it ends the thread's `block_on`; the runtime and its tasks are then dropped there.
        _stop: tokio::sync::oneshot::Sender<()>,
    },
}

impl ProxyRuntime {
    fn new(workers: usize) -> io::Result<ProxyRuntime> {
        if workers > 1 {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(workers)
                .thread_name("svcnet-proxy")
                .enable_all()
                .build()?;
            return Ok(ProxyRuntime::Multi(Some(rt)));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = rt.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("svcnet-proxy".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
            })?;
        Ok(ProxyRuntime::Single { handle, _stop: stop })
    }

    fn handle(&self) -> &Handle {
        match self {
            ProxyRuntime::Multi(rt) => rt.as_ref().expect("present until drop").handle(),
            ProxyRuntime::Single { handle, .. } => handle,
        }
    }
}

impl Drop for ProxyRuntime {
    fn drop(&mut self) {
        if let ProxyRuntime::Multi(rt) = self
            && let Some(rt) = rt.take()
        {
            // Not `drop(rt)`: that blocks, and panics when the caller is itself inside a runtime.
            rt.shutdown_background();
        }
    }
}

/// One service port as programmed.
struct PortEntry {
    shared: Arc<PortShared>,
    listeners: HashMap<(SocketAddr, Protocol), Listener>,
    /// Live endpoint state by address, shared by the internal and external sets and kept across updates.
    endpoints: HashMap<SocketAddr, Arc<EpState>>,
}

/// A listening socket served by a task on the proxy runtime.
struct Listener {
    kind: FrontendKind,
    task: JoinHandle<()>,
    /// A duplicate of a TCP listening socket, to stop it listening synchronously on close (the task is
    /// only dropped when a worker next gets to it).
    control: Option<Socket>,
    /// A UDP listener's socket, shared with its task (to hand it over).
    udp: Option<Arc<tokio::net::UdpSocket>>,
    /// Whether dropping stops the socket listening (`shutdown(2)`) for every process that holds it;
    /// not once it was handed over to another proxy process.
    shut_down_on_drop: bool,
    /// The backend's count of listener descriptors, which this one leaves when dropped.
    fds: Arc<AtomicUsize>,
}

impl Listener {
    /// Descriptors a listener of `protocol` holds: the socket, and for TCP its control duplicate.
    fn fds_for(protocol: Protocol) -> usize {
        if protocol == Protocol::Udp { 1 } else { 2 }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.fds
            .fetch_sub(1 + usize::from(self.control.is_some()), Ordering::Relaxed);
        if let Some(s) = self.control.as_ref().filter(|_| self.shut_down_on_drop) {
            // shutdown(2) on a listening TCP socket stops it listening: new connections are refused from
            // now on, and the address can be bound again at once.
            let _ = s.shutdown(Shutdown::Both);
        }
        self.task.abort();
    }
}

impl UserspaceBackend {
    /// Starts the proxy runtime and registers the metrics in `registry`. No listener is opened until the
    /// first [`Backend::sync_all`] or [`Backend::apply`].
    pub fn new(config: ProxyConfig, registry: &mut Registry) -> Result<UserspaceBackend, ProxyError> {
        Self::with_metrics(config, ProxyMetrics::new(registry))
    }

    /// Like [`UserspaceBackend::new`], with metric families created (and registered) by the caller.
    pub fn with_metrics(config: ProxyConfig, metrics: ProxyMetrics) -> Result<UserspaceBackend, ProxyError> {
        if config.workers == 0 {
            return Err(ProxyError::Config("workers must be at least 1".into()));
        }
        let rt = ProxyRuntime::new(config.workers)?;
        Ok(UserspaceBackend {
            settings: Arc::new(Settings {
                connect_timeout: config.connect_timeout,
                connect_attempts: config.connect_attempts.max(1),
                backoff_ms: config.endpoint_backoff.as_millis() as u64,
                udp_idle_ms: config.udp_idle_timeout.as_millis().max(1) as u64,
                udp_max_flows: config.udp_max_flows.max(1),
                local_addrs: config.node_addresses.clone(),
                splice: config.splice,
                pipe_size: config.pipe_size,
                source: SourcePolicy {
                    ranges: config.client_ip_ranges,
                    transparent: config.transparent,
                    ..Default::default()
                },
            }),
            balance: config.balance,
            node_addresses: config.node_addresses,
            backlog: config.backlog,
            freebind: config.freebind,
            fd_budget: config.listener_fds,
            fds: Arc::default(),
            metrics,
            ports: HashMap::new(),
            sctp_skipped: HashSet::new(),
            unbound: BTreeMap::new(),
            unbound_tx: tokio::sync::watch::Sender::new(Arc::default()),
            inherited: HashMap::new(),
            retired: false,
            rt,
        })
    }

    /// Service ports programmed (SCTP ones are skipped and not counted).
    pub fn port_count(&self) -> usize {
        self.ports.len()
    }

    /// Listening sockets open, over all ports.
    pub fn listener_count(&self) -> usize {
        self.ports.values().map(|p| p.listeners.len()).sum()
    }

    /// The addresses a service port listens on now (TCP or UDP per its protocol), sorted.
    pub fn listening_on(&self, name: &ServicePortName) -> Vec<SocketAddr> {
        let mut v: Vec<_> = self
            .ports
            .get(name)
            .map(|p| p.listeners.keys().map(|(a, _)| *a).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// The service ports that lack a listener now (updated after every call), with the first error of each.
    pub fn unbound(&self) -> tokio::sync::watch::Receiver<Arc<Unbound>> {
        self.unbound_tx.subscribe()
    }

    /// Duplicates of every listening socket, for another proxy process to serve the same frontends
    /// without a moment of "connection refused" ([`UserspaceBackend::inherit`] there, then
    /// [`UserspaceBackend::retire`] here).
    pub fn listening_sockets(&self) -> io::Result<Vec<InheritedSocket>> {
        let mut out = Vec::new();
        for entry in self.ports.values() {
            for ((addr, protocol), l) in &entry.listeners {
                let fd = match (&l.control, &l.udp) {
                    (Some(s), _) => s.as_fd().try_clone_to_owned()?,
                    (None, Some(u)) => u.as_fd().try_clone_to_owned()?,
                    (None, None) => continue,
                };
                out.push(InheritedSocket {
                    addr: *addr,
                    protocol: *protocol,
                    fd,
                });
            }
        }
        Ok(out)
    }

    /// Takes over listening sockets another proxy process handed over: the frontends they are bound to
    /// serve them instead of binding new ones (so no connection is refused between the two processes).
    /// A socket not bound to the address it claims is closed. Sockets no frontend uses are closed by
    /// [`UserspaceBackend::drop_unused_inherited`].
    pub fn inherit(&mut self, sockets: Vec<InheritedSocket>) {
        for s in sockets {
            let sock = Socket::from(s.fd);
            let ok = sock
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .is_some_and(|a| a == s.addr)
                && sock.r#type().ok()
                    == Some(if s.protocol == Protocol::Udp {
                        Type::DGRAM
                    } else {
                        Type::STREAM
                    });
            if ok {
                self.inherited.insert((s.addr, s.protocol), sock);
            } else {
                warn!(addr = %s.addr, protocol = %s.protocol, "handed-over socket is not what it claims; closed");
            }
        }
    }

    /// Closes the inherited sockets that no frontend took (their Services went away meanwhile); returns
    /// how many.
    pub fn drop_unused_inherited(&mut self) -> usize {
        let n = self.inherited.len();
        self.inherited.clear();
        n
    }

    /// Stops serving new connections in this process, after its listening sockets were handed over: the
    /// listeners are closed here without `shutdown(2)` (the other process keeps them listening), and
    /// later changes are ignored. Established connections go on until they end.
    pub fn retire(&mut self) {
        self.retired = true;
        for entry in self.ports.values_mut() {
            for l in entry.listeners.values_mut() {
                l.shut_down_on_drop = false;
            }
            entry.listeners.clear();
        }
    }

    /// Connections open now, over all ports.
    pub fn active_connections(&self) -> i64 {
        self.ports.values().map(|p| p.shared.metrics.active.get()).sum()
    }

    /// Records which frontends of `name` could not be bound in the last attempt.
    fn set_unbound(&mut self, name: &ServicePortName, errors: Vec<String>) {
        match errors.first() {
            Some(first) => {
                self.unbound.insert(name.clone(), (errors.len(), first.clone()));
            }
            None => {
                self.unbound.remove(name);
            }
        }
    }

    /// Logs what changed since the last publication (a few lines at most), updates the gauge and
    /// publishes the set.
    fn publish_unbound(&mut self) {
        let before = self.unbound_tx.borrow().clone();
        let newly: Vec<(&ServicePortName, &String)> = self
            .unbound
            .iter()
            .filter(|(n, _)| !before.contains_key(*n))
            .map(|(n, (_, e))| (n, e))
            .collect();
        for (name, error) in newly.iter().take(UNBOUND_LOG_LINES) {
            warn!(service = %name, error = %error, "cannot listen; retried until it binds");
        }
        if newly.len() > UNBOUND_LOG_LINES {
            warn!(
                more = newly.len() - UNBOUND_LOG_LINES,
                total = self.unbound.len(),
                "more service ports cannot listen (see svcnet_proxy_unbound_listeners and their Services' events)"
            );
        }
        let recovered = before.keys().filter(|n| !self.unbound.contains_key(*n)).count();
        if recovered > 0 {
            info!(
                recovered,
                still_unbound = self.unbound.len(),
                "service ports that could not listen are listening now (or gone)"
            );
        }
        let listeners: usize = self.unbound.values().map(|(n, _)| n).sum();
        self.metrics.unbound.set(listeners as i64);
        if !newly.is_empty()
            || recovered > 0
            || self.unbound.iter().any(|(n, (_, e))| before.get(n) != Some(e))
        {
            let now: Unbound = self
                .unbound
                .iter()
                .map(|(n, (_, e))| (n.clone(), e.clone()))
                .collect();
            self.unbound_tx.send_replace(Arc::new(now));
        }
    }

    /// Programs one port; returns the listeners that could not be bound.
    fn upsert(&mut self, sp: &ServicePort) -> Vec<String> {
        if sp.name.protocol == Protocol::Sctp {
            if self.sctp_skipped.insert(sp.name.clone()) {
                info!(service = %sp.name, "SCTP is not proxied in userspace; port skipped");
            }
            return vec![];
        }
        let balance = sp.balance.unwrap_or(self.balance);
        let metrics = self.metrics.clone();
        let settings = self.settings.clone();
        let entry = self.ports.entry(sp.name.clone()).or_insert_with(|| {
            let pm = metrics.port(&sp.name);
            let empty = Arc::new(EndpointSet::new(vec![], balance));
            PortEntry {
                shared: Arc::new(PortShared {
                    view: ArcSwap::from_pointee(PortView {
                        balance,
                        affinity_ms: None,
                        source_ranges: vec![],
                        external_local: false,
                        internal: empty.clone(),
                        external: empty,
                    }),
                    affinity: Default::default(),
                    metrics: pm,
                    settings,
                }),
                listeners: HashMap::new(),
                endpoints: HashMap::new(),
            }
        });

        // Endpoint state: keep what stays (active counts, back-offs), add what is new, drop what went.
        let wanted: HashSet<SocketAddr> = sp
            .internal_endpoints
            .iter()
            .chain(&sp.external_endpoints)
            .map(Endpoint::addr)
            .collect();
        let pm = &entry.shared.metrics;
        entry.endpoints.retain(|addr, _| {
            let keep = wanted.contains(addr);
            if !keep {
                metrics.remove_endpoint(pm, *addr);
            }
            keep
        });
        let transparent = self.settings.source.transparent;
        for addr in &wanted {
            entry.endpoints.entry(*addr).or_insert_with(|| {
                let mut ep = EpState::new(*addr, metrics.endpoint(pm, *addr));
                // Only transparent connects care, and a bind test costs two syscalls per new endpoint.
                ep.local = transparent && is_local(addr.ip());
                Arc::new(ep)
            });
        }
        let old = entry.shared.view.load_full();
        let build = |list: &[Endpoint], old: &Arc<EndpointSet>| -> Arc<EndpointSet> {
            let mut seen = HashSet::new();
            let addrs: Vec<SocketAddr> = list
                .iter()
                .map(Endpoint::addr)
                .filter(|a| seen.insert(*a))
                .collect();
            if old.suits(balance) && old.addrs().eq(addrs.iter().copied()) {
                // Unchanged: keep the set (and its Maglev table and round-robin position).
                return old.clone();
            }
            let eps = addrs.iter().map(|a| entry.endpoints[a].clone()).collect();
            Arc::new(EndpointSet::new(eps, balance))
        };
        let internal = build(&sp.internal_endpoints, &old.internal);
        let external = if sp.external_endpoints == sp.internal_endpoints {
            internal.clone()
        } else {
            build(&sp.external_endpoints, &old.external)
        };
        entry.shared.view.store(Arc::new(PortView {
            balance,
            affinity_ms: sp.affinity_timeout.map(|t| t.as_millis() as u64),
            source_ranges: sp.load_balancer_source_ranges.clone(),
            external_local: sp.external_policy_local,
            internal,
            external,
        }));

        // Listeners: close what is no longer a frontend, open what is missing (or failed before). A
        // frontend with no endpoint for any client has no listener at all, so the kernel refuses the
        // connection (TCP reset to the SYN, ICMP port unreachable for UDP) as kube-proxy's reject rule
        // does: the client's `connect()` fails with ECONNREFUSED, not a reset after it succeeded. The
        // listener is back as soon as an endpoint is.
        let has_internal = !sp.internal_endpoints.is_empty();
        let has_any = has_internal || !sp.external_endpoints.is_empty();
        let mut want: HashMap<(SocketAddr, Protocol), FrontendKind> = HashMap::new();
        // External frontends serve remote clients from the external endpoints and the node's own from the
        // internal ones (kube-proxy's local short-circuit): they listen if either set has an endpoint.
        for fe in sp.frontends().filter(|fe| {
            if fe.kind.is_external() {
                has_any
            } else {
                has_internal
            }
        }) {
            let ips: Vec<IpAddr> = match fe.ip {
                Some(ip) => vec![ip],
                None => self.node_addresses.clone(),
            };
            for ip in ips {
                want.entry((SocketAddr::new(ip, fe.port), sp.name.protocol))
                    .or_insert(fe.kind);
            }
        }
        entry.listeners.retain(|key, l| want.get(key) == Some(&l.kind));
        let mut failed = vec![];
        let mut errors = vec![];
        let shared = entry.shared.clone();
        let rt = self.rt.handle();
        for (key, kind) in want {
            if entry.listeners.contains_key(&key) {
                continue;
            }
            let need = Listener::fds_for(key.1);
            let over_budget = self
                .fd_budget
                .filter(|budget| self.fds.load(Ordering::Relaxed) + need > *budget);
            let bound = match over_budget {
                Some(budget) => Err(io::Error::other(format!(
                    "out of file descriptors: the proxy's listeners may hold {budget} (the open-file \
                     limit minus what svcnet keeps for connections) and hold them all"
                ))),
                None => listen(
                    rt,
                    key.0,
                    key.1,
                    kind,
                    &shared,
                    BindOpts {
                        backlog: self.backlog,
                        freebind: self.freebind,
                        fds: &self.fds,
                        inherited: self.inherited.remove(&key),
                    },
                ),
            };
            match bound {
                Ok(l) => {
                    debug!(service = %sp.name, addr = %key.0, protocol = %key.1, "listening");
                    entry.listeners.insert(key, l);
                }
                Err(e) => {
                    // Logged once per port when it starts failing ([`Self::publish_unbound`]), not per try.
                    debug!(service = %sp.name, addr = %key.0, protocol = %key.1, error = %e, "cannot listen");
                    shared.metrics.bind_errors.inc();
                    failed.push(format!("{} {}/{}: {e}", sp.name, key.0, key.1.lower()));
                    errors.push(format!("cannot listen on {}/{}: {e}", key.0, key.1.lower()));
                }
            }
        }
        self.set_unbound(&sp.name, errors);
        failed
    }

    fn remove(&mut self, name: &ServicePortName) {
        self.sctp_skipped.remove(name);
        self.unbound.remove(name);
        if let Some(entry) = self.ports.remove(name) {
            for addr in entry.endpoints.keys() {
                self.metrics.remove_endpoint(&entry.shared.metrics, *addr);
            }
            self.metrics.remove_port(name);
            debug!(service = %name, "closed");
        }
    }

    fn result(failed: Vec<String>) -> Result<(), BackendError> {
        if failed.is_empty() {
            return Ok(());
        }
        let shown: Vec<_> = failed.iter().take(5).cloned().collect();
        let more = failed.len().saturating_sub(shown.len());
        Err(BackendError {
            backend: "userspace",
            message: format!(
                "{} listener(s) not bound (everything else applied; retried at the next sync): {}{}",
                failed.len(),
                shown.join("; "),
                if more > 0 {
                    format!("; and {more} more")
                } else {
                    String::new()
                }
            ),
        })
    }
}

/// How listeners are bound, and the count of descriptors they hold.
struct BindOpts<'a> {
    backlog: i32,
    freebind: bool,
    fds: &'a Arc<AtomicUsize>,
    /// The socket another proxy process listened on for this frontend, if it handed one over.
    inherited: Option<Socket>,
}

/// Whether `ip` is an address of this node (network namespace): it can be bound without
/// `IP_FREEBIND`/`IP_TRANSPARENT`.
fn is_local(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Binds one frontend and starts serving it on the proxy runtime.
fn listen(
    rt: &Handle,
    addr: SocketAddr,
    protocol: Protocol,
    kind: FrontendKind,
    shared: &Arc<PortShared>,
    opts: BindOpts<'_>,
) -> io::Result<Listener> {
    let BindOpts {
        backlog,
        freebind,
        fds,
        inherited,
    } = opts;
    if let Some(s) = inherited {
        // Bound (and listening) in the process that handed it over; served from here on.
        s.set_nonblocking(true)?;
        return serve_socket(rt, s, protocol, kind, shared, fds);
    }
    let ty = if protocol == Protocol::Udp {
        Type::DGRAM
    } else {
        Type::STREAM
    };
    let s = Socket::new(Domain::for_address(addr), ty, None)?;
    // Reuse so that a listener closed a moment ago (or its TIME_WAIT connections) never blocks a rebind.
    // TCP only: on Linux SO_REUSEADDR lets a second UDP socket bind the very same address and steal its
    // datagrams, so a second proxy on the machine would silently split a UDP Service with this one.
    if protocol != Protocol::Udp {
        s.set_reuse_address(true)?;
    }
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    if freebind {
        if addr.is_ipv6() {
            s.set_freebind_v6(true)?;
        } else {
            s.set_freebind_v4(true)?;
        }
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    if protocol != Protocol::Udp {
        // Accepted sockets inherit TCP_NODELAY from the listener (Linux), which saves a setsockopt per
        // connection.
        s.set_tcp_nodelay(true)?;
        s.listen(backlog)?;
    }
    serve_socket(rt, s, protocol, kind, shared, fds)
}

/// Serves a bound (for TCP: listening) socket on the proxy runtime.
fn serve_socket(
    rt: &Handle,
    s: Socket,
    protocol: Protocol,
    kind: FrontendKind,
    shared: &Arc<PortShared>,
    fds: &Arc<AtomicUsize>,
) -> io::Result<Listener> {
    // Entering the runtime lets tokio register the socket with the proxy's reactor, not the caller's.
    let _enter = rt.enter();
    let shared = shared.clone();
    if protocol == Protocol::Udp {
        let sock = Arc::new(tokio::net::UdpSocket::from_std(s.into())?);
        let task = rt.spawn(udp::serve(sock.clone(), shared, kind));
        fds.fetch_add(1, Ordering::Relaxed);
        Ok(Listener {
            kind,
            task,
            control: None,
            udp: Some(sock),
            shut_down_on_drop: true,
            fds: fds.clone(),
        })
    } else {
        let control = s.try_clone()?;
        let l = tokio::net::TcpListener::from_std(s.into())?;
        let task = rt.spawn(tcp::serve(l, shared, kind));
        fds.fetch_add(2, Ordering::Relaxed);
        Ok(Listener {
            kind,
            task,
            control: Some(control),
            udp: None,
            shut_down_on_drop: true,
            fds: fds.clone(),
        })
    }
}

impl Backend for UserspaceBackend {
    fn name(&self) -> &'static str {
        "userspace"
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), BackendError> {
        if self.retired {
            return Ok(());
        }
        let mut failed = vec![];
        for c in changes {
            match c {
                Change::Upsert { new, .. } => failed.extend(self.upsert(new)),
                Change::Remove(old) => self.remove(&old.name),
            }
        }
        self.publish_unbound();
        Self::result(failed)
    }

    fn sync_all(&mut self, ports: &[Arc<ServicePort>]) -> Result<(), BackendError> {
        if self.retired {
            return Ok(());
        }
        let keep: HashSet<&ServicePortName> = ports.iter().map(|p| &p.name).collect();
        let gone: Vec<ServicePortName> = self.ports.keys().filter(|n| !keep.contains(n)).cloned().collect();
        for name in gone {
            self.remove(&name);
        }
        self.sctp_skipped.retain(|n| keep.contains(n));
        let mut failed = vec![];
        for p in ports {
            failed.extend(self.upsert(p));
        }
        self.publish_unbound();
        Self::result(failed)
    }
}

impl Drop for UserspaceBackend {
    fn drop(&mut self) {
        // Listeners first (they stop listening at once), then the runtime (field drop order).
        self.ports.clear();
    }
}

impl std::fmt::Debug for UserspaceBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserspaceBackend")
            .field("ports", &self.ports.len())
            .field("listeners", &self.listener_count())
            .finish()
    }
}
