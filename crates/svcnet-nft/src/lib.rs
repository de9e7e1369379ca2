//! svcnet's kernel data plane: the service-port table ([`svcnet_dataplane::ServicePort`]s) programmed as
//! nftables rules, laid out as kube-proxy's nftables mode lays them out (see [`render`] for the layout).
//!
//! [`NftBackend`] implements [`svcnet_dataplane::Backend`]:
//!
//! - [`Backend::sync_all`] replaces both tables (`ip svcnet`, `ip6 svcnet`) in one `nft -f -` transaction
//!   ([`render_full`]): periodic resync, recovery. Stale chains cannot survive it, and the kernel swaps
//!   the rulesets at commit, so no packet sees a half-built table. Where there are no tables yet (a cold
//!   start) the rules go through `nft -f` and the elements after them in one netlink batch
//!   ([`render_cold`]; nft spends more on elements than on rules). The first sync of a process that finds
//!   the tables already there (left by the process before it, after a restart or a crash) takes them
//!   over instead ([`takeover`]): it reads them back through netlink, and writes only what differs from
//!   the wanted state, so rules, affinity entries and connections are never interrupted, and an
//!   unchanged state writes nothing (10,000 Services: about 0.3 s of CPU; see BENCHMARKS.md).
//! - [`Backend::apply`] touches only the changed ports' elements, chains and sets
//!   ([`render_changes_deferred`]), so an endpoint change costs the same with 10 or 10,000 Services.
//!   Chains and declarations go through `nft -f`, written so that nft 1.0.x need not read the ruleset
//!   back first (seconds with 100,000 endpoints); map and set elements, which are all an endpoint change
//!   of a Service without affinity is, go straight to the kernel in one netlink batch ([`netlink`]).
//!   Objects that become unused are emptied, and deleted later in one go (when
//!   [`NftConfig::stale_chain_limit`] of them have piled up, in a transaction that reads the ruleset
//!   anyway, or at the next full sync). If anything fails, the backend falls back to a full sync.
//! - After each change, stale UDP conntrack entries and unanswered TCP ones toward endpoints no longer used are
//!   deleted ([`conntrack`]). (`healthCheckNodePort` servers are the proxier's, for every backend.)
//! - After the first full sync (which loads the kernel's connection tracking), the conntrack table size
//!   and timeouts kube-proxy sets are made ([`sysctl`], [`NftConfig::conntrack`]).
//!
//! `nft` and `conntrack` run through configurable command prefixes, so tests drive the backend inside a
//! network namespace with `ip netns exec NS nft` (with [`NftConfig::netns`] naming the same namespace for
//! the netlink socket). Without a netlink socket, elements go through `nft` and a takeover replaces the
//! tables instead (it reads them back through netlink only).

pub mod conntrack;
mod family;
pub mod netlink;
mod nft;
pub mod render;
mod slots;
pub mod sysctl;
pub mod takeover;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use svcnet_dataplane::{Backend, BackendError, Change, ServicePort};
use tracing::{debug, info, warn};

pub use takeover::TakeoverStats;

pub use render::{
    Elem, ElementOp, Family, Key, Programmed, Transaction, delete_script, render_changes,
    render_changes_deferred, render_cold, render_full, render_programmed,
};

/// How the backend reaches nftables and what it needs to know about the node.
#[derive(Debug, Clone)]
pub struct NftConfig {
    /// The command that runs `nft` (default `["nft"]`); `["ip", "netns", "exec", NS, "nft"]` drives a
    /// network namespace.
    pub nft_command: Vec<String>,
    /// The command that runs `conntrack` (default `["conntrack"]`).
    pub conntrack_command: Vec<String>,
    /// The table name in each family (default `svcnet`).
    pub table: String,
    /// The network namespace to program (a file such as `/run/netns/NAME`), for the netlink socket
    /// element changes go through; `None`: this process's own. Set it together with `nft_command` when
    /// that enters a namespace.
    pub netns: Option<PathBuf>,
    /// The pod CIDRs (kube-proxy's local-traffic detector): traffic from them is "inside" the cluster
    /// (no masquerade to ClusterIPs, externalTrafficPolicy short-circuit). Empty: no detector, so
    /// off-cluster traffic to ClusterIPs is not masqueraded (unless `masquerade_all`).
    pub pod_cidrs: Vec<IpNet>,
    /// The Service CIDRs: traffic to an address in them that no Service has is dropped.
    pub service_cidrs: Vec<IpNet>,
    /// kube-proxy's `--masquerade-all`: SNAT all ClusterIP traffic.
    pub masquerade_all: bool,
    /// The node's addresses: which sources count as the node for loadBalancerSourceRanges.
    pub node_ips: Vec<IpAddr>,
    /// Where NodePorts answer (kube-proxy's `--nodeport-addresses`, as single addresses): only these
    /// (loopback ones excepted: nftables cannot DNAT them). Empty: every local address except loopback
    /// (`fib daddr type local`), kube-proxy's default before `primary`.
    pub nodeport_addresses: Vec<IpAddr>,
    /// Program the `ip6` table too (default true).
    pub ipv6: bool,
    /// How many emptied, unused chains and sets (of Services that went away, or of endpoints of Services
    /// with affinity) may wait before an incremental transaction deletes them (default 1000). Deleting
    /// makes nft 1.0.x read the whole ruleset first, which costs tens of milliseconds with 10,000
    /// Services, so it is done once for many; the empty objects cost nothing meanwhile. 0 deletes them
    /// at once.
    pub stale_chain_limit: usize,
    /// The connection-tracking settings to make in the programmed namespace (kube-proxy's
    /// `--conntrack-*`); `None` (the default here; the agent sets kube-proxy's) leaves them as they are.
    pub conntrack: Option<sysctl::ConntrackSysctls>,
}

impl Default for NftConfig {
    fn default() -> Self {
        NftConfig {
            nft_command: vec!["nft".into()],
            conntrack_command: vec!["conntrack".into()],
            table: "svcnet".into(),
            netns: None,
            pod_cidrs: Vec::new(),
            service_cidrs: Vec::new(),
            masquerade_all: false,
            node_ips: Vec::new(),
            nodeport_addresses: Vec::new(),
            ipv6: true,
            stale_chain_limit: 1000,
            conntrack: None,
        }
    }
}

/// What running `nft` or `conntrack` failed with.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The configured command is empty.
    #[error("empty command prefix")]
    EmptyCommand,
    /// The command could not be started or fed.
    #[error("{command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The command ran and failed.
    #[error("{command} exited with {status:?}: {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit code.
        status: Option<i32>,
        /// What it printed on stderr.
        stderr: String,
    },
    /// `nft -j` printed something that is not JSON.
    #[error("nft -j output: {0}")]
    Json(#[from] serde_json::Error),
    /// A netlink batch of element changes failed.
    #[error(transparent)]
    Netlink(#[from] netlink::NetlinkError),
}

/// The backend's metrics, named after kube-proxy's nftables-mode metrics. The generic
/// `kubeproxy_sync_proxy_rules_duration_seconds`/`_last_timestamp_seconds` are the agent's; these say
/// which kind of sync and what it cost in nftables.
#[derive(Clone, Debug)]
pub struct NftMetrics {
    full_sync: Histogram,
    partial_sync: Histogram,
    last_sync: Gauge<f64, AtomicU64>,
    sync_failures: Counter,
    cleanup_failures: Counter,
    resyncs_skipped: Counter,
    ports: Gauge<i64, AtomicI64>,
    endpoints: Gauge<i64, AtomicI64>,
}

impl Default for NftMetrics {
    fn default() -> Self {
        NftMetrics {
            full_sync: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            partial_sync: Histogram::new(exponential_buckets(0.0005, 2.0, 18)),
            last_sync: Gauge::default(),
            sync_failures: Counter::default(),
            cleanup_failures: Counter::default(),
            resyncs_skipped: Counter::default(),
            ports: Gauge::default(),
            endpoints: Gauge::default(),
        }
    }
}

impl NftMetrics {
    /// Registers the metrics in `registry`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "kubeproxy_sync_full_proxy_rules_duration_seconds",
            "Full nftables sync latency in seconds",
            self.full_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "Incremental nftables transaction latency in seconds",
            self.partial_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_last_timestamp_seconds",
            "The last time nftables rules were successfully programmed",
            self.last_sync.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_sync_failures",
            "nftables transactions that failed",
            self.sync_failures.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_cleanup_failures",
            "conntrack cleanups that failed",
            self.cleanup_failures.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_resyncs_skipped",
            "Periodic full syncs skipped because nothing but this backend had changed nftables since its \
             last write (the ruleset generation said so)",
            self.resyncs_skipped.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_service_ports",
            "Service ports programmed in nftables",
            self.ports.clone(),
        );
        registry.register(
            "kubeproxy_sync_proxy_rules_nftables_endpoints",
            "Endpoints programmed in nftables (internal sets)",
            self.endpoints.clone(),
        );
    }
}

/// The nftables backend. See the crate docs.
pub struct NftBackend {
    cfg: NftConfig,
    state: Programmed,
    synced: bool,
    metrics: NftMetrics,
    endpoints: i64,
    /// Emptied objects nothing refers to, not yet deleted (`chain|set|map FAMILY TABLE NAME`).
    stale: BTreeSet<String>,
    /// The netlink socket element changes go through, opened on first use.
    writer: Option<netlink::Writer>,
    /// Set when the socket could not be opened: elements then go through `nft` (slower, same result).
    no_netlink: bool,
    /// Transactions this backend committed (`nft -f` runs and netlink batches).
    commits: std::cell::Cell<u32>,
    /// The ruleset generation right after this backend's last write, when every transaction committed
    /// since the tables were last written whole was this backend's own; `None` when something else may
    /// have changed them (or the generation cannot be read). A periodic full sync is skipped while the
    /// generation still equals it: nothing can have drifted.
    generation: Option<u32>,
    /// What the first sync changed when it took over tables left by an earlier process.
    takeover: Option<TakeoverStats>,
}

fn backend_error(e: impl std::fmt::Display) -> BackendError {
    BackendError {
        backend: "nftables",
        message: e.to_string(),
    }
}

impl NftBackend {
    /// A backend that has programmed nothing yet; the first [`Backend::sync_all`] creates the tables.
    pub fn new(cfg: NftConfig) -> NftBackend {
        NftBackend {
            cfg,
            state: Programmed::new(),
            synced: false,
            metrics: NftMetrics::default(),
            endpoints: 0,
            stale: Default::default(),
            writer: None,
            no_netlink: false,
            commits: std::cell::Cell::new(0),
            generation: None,
            takeover: None,
        }
    }

    /// What the first sync changed when it took over tables an earlier process left (`None`: there were
    /// none, or they were replaced).
    pub fn takeover(&self) -> Option<TakeoverStats> {
        self.takeover
    }

    /// Takes over the tables an earlier process left: reads them back and changes only what differs
    /// from `ports` ([`takeover`]). `Ok(None)` when there are no tables to take over, or they cannot be
    /// read (no netlink socket) or reconciled in place (the caller then replaces them). Reading again
    /// when another transaction committed while the tables were being read.
    fn take_over(&mut self, ports: &[Arc<ServicePort>]) -> Result<Option<TakeoverStats>, NftError> {
        const ATTEMPTS: u32 = 3;
        let mut attempt = 1;
        loop {
            match self.take_over_once(ports) {
                Err(NftError::Netlink(netlink::NetlinkError::Interrupted(what))) if attempt < ATTEMPTS => {
                    debug!(dump = %what, attempt, "nftables changed while being read; reading again");
                    attempt += 1;
                }
                res => return res,
            }
        }
    }

    fn take_over_once(&mut self, ports: &[Arc<ServicePort>]) -> Result<Option<TakeoverStats>, NftError> {
        let t0 = Instant::now();
        let cfg = self.cfg.clone();
        let standby = format!("{}-standby", cfg.table);
        let Some(w) = self.netlink_writer() else {
            return Ok(None);
        };
        let (mut found, standby_left) = match takeover::read(&cfg, w, &standby) {
            Ok(r) => r,
            Err(e) => {
                self.writer = None;
                return Err(e);
            }
        };
        if found.is_empty() {
            return Ok(None);
        }
        let read = Instant::now();
        let ids = takeover::ids(&found, ports.iter().map(|p| &p.name));
        let prog = Programmed::from_ports_with_ids(ports, &ids);
        let wanted: BTreeMap<Family, render::TableSpec> = render::families(&cfg)
            .into_iter()
            .map(|f| (f, render::table_spec(&prog, &cfg, f, &Default::default())))
            .collect();
        let rendered = Instant::now();
        let Some(w) = self.netlink_writer() else {
            return Ok(None);
        };
        if let Err(e) = takeover::read_elements(&cfg, w, &mut found, &wanted) {
            self.writer = None;
            return Err(e);
        }
        let elements = Instant::now();
        let mut plan = match takeover::reconcile(&found, &wanted, &cfg.table) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "replacing the nftables tables instead");
                return Ok(None);
            }
        };
        // A standby copy left by a full sync that was interrupted would keep DNATing with old rules.
        for fam in standby_left {
            plan.after
                .push_str(&format!("delete table {} {standby}\n", fam.nft()));
        }
        let reconciled = Instant::now();
        if !plan.before.is_empty() {
            self.transact(&plan.before)?;
        }
        if !plan.elements.is_empty() {
            let w = self.netlink_writer().ok_or_else(|| {
                NftError::Netlink(netlink::NetlinkError::Protocol(
                    "the netlink socket went away".into(),
                ))
            })?;
            if let Err(e) = w.commit(&plan.elements) {
                self.writer = None;
                return Err(e.into());
            }
            self.commits.set(self.commits.get().wrapping_add(1));
        }
        if !plan.after.is_empty() {
            self.transact(&plan.after)?;
        }
        debug!(
            read = ?(read - t0),
            render = ?(rendered - read),
            elements = ?(elements - rendered),
            reconcile = ?(reconciled - elements),
            write = ?reconciled.elapsed(),
            "nftables takeover phases"
        );
        self.state = prog;
        Ok(Some(plan.stats))
    }

    /// The configuration.
    pub fn config(&self) -> &NftConfig {
        &self.cfg
    }

    /// The metrics (register them with [`NftMetrics::register`]).
    pub fn metrics(&self) -> &NftMetrics {
        &self.metrics
    }

    /// The metrics in Prometheus text format, for callers without a registry of their own.
    pub fn metrics_text(&self) -> String {
        let mut registry = Registry::default();
        self.metrics.register(&mut registry);
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    /// Makes the configured conntrack settings, logging what changed and what could not be.
    fn set_conntrack_sysctls(&self) {
        let Some(c) = &self.cfg.conntrack else {
            return;
        };
        match c.apply(self.cfg.netns.as_deref()) {
            Ok(outcomes) => {
                for o in outcomes {
                    match (&o.error, o.written) {
                        (Some(e), _) => {
                            warn!(sysctl = o.name, wanted = o.wanted, before = ?o.before, error = %e, "cannot set conntrack sysctl")
                        }
                        (None, true) => {
                            info!(sysctl = o.name, value = o.wanted, before = ?o.before, "set conntrack sysctl")
                        }
                        (None, false) => {
                            debug!(sysctl = o.name, value = ?o.before, "conntrack sysctl already set")
                        }
                    }
                }
            }
            Err(e) => warn!(error = %e, "cannot enter the network namespace to set conntrack sysctls"),
        }
    }

    /// The emptied, unused objects waiting to be deleted (`chain|set|map FAMILY TABLE NAME`).
    pub fn stale_objects(&self) -> impl Iterator<Item = &str> {
        self.stale.iter().map(String::as_str)
    }

    /// Deletes the emptied, unused objects now (one transaction; nft reads the whole ruleset for it).
    pub fn delete_stale_objects(&mut self) -> Result<(), NftError> {
        if self.stale.is_empty() {
            return Ok(());
        }
        let before = self.writes_begin(false);
        let res = self.transact(&delete_script(&self.stale));
        self.writes_end(before);
        res?;
        self.stale.clear();
        Ok(())
    }

    /// The ruleset generation now, when it can be read (through the netlink socket).
    fn read_generation(&mut self) -> Option<u32> {
        let w = self.netlink_writer()?;
        match w.generation() {
            Ok(g) => Some(g),
            Err(e) => {
                debug!(error = %e, "cannot read the nftables generation");
                self.writer = None;
                None
            }
        }
    }

    /// Before a series of writes: the generation they start from and this backend's commit count. Writes
    /// that replace the tables whole (`whole`) start from the generation now, whatever came before;
    /// others start from the one recorded after this backend's last write, and only while that is
    /// known to be clean, so the hot path of incremental changes reads nothing here.
    fn writes_begin(&mut self, whole: bool) -> (Option<u32>, u32) {
        let base = if whole {
            self.read_generation()
        } else {
            self.generation
        };
        (base, self.commits.get())
    }

    /// After a series of writes that began at `before`: the tables are known to be as this backend
    /// wrote them when the generation moved from the base by exactly its own commits.
    fn writes_end(&mut self, before: (Option<u32>, u32)) {
        let (base, commits_before) = before;
        let Some(base) = base else {
            self.generation = None;
            return;
        };
        let ours = self.commits.get().wrapping_sub(commits_before);
        self.generation = self.read_generation().filter(|&a| a == base.wrapping_add(ours));
    }

    /// The netlink socket, opened on first use (`None` where netlink is unavailable).
    fn netlink_writer(&mut self) -> Option<&mut netlink::Writer> {
        if self.writer.is_none() && !self.no_netlink {
            match netlink::Writer::open(self.cfg.netns.as_deref()) {
                Ok(w) => self.writer = Some(w),
                Err(e) => {
                    warn!(error = %e, "no netlink socket for nftables; element changes go through nft");
                    self.no_netlink = true;
                }
            }
        }
        self.writer.as_mut()
    }

    /// Sends element changes: one netlink batch, or `nft` commands when netlink is unavailable.
    fn send_elements(&mut self, tx: &Transaction) -> Result<(), NftError> {
        if tx.elements.is_empty() {
            return Ok(());
        }
        let table = self.cfg.table.clone();
        match self.netlink_writer() {
            Some(w) => match w.commit(&tx.batch(&table)) {
                Ok(()) => {
                    self.commits.set(self.commits.get().wrapping_add(1));
                    Ok(())
                }
                Err(e) => {
                    // A socket in an unknown state is not reused.
                    self.writer = None;
                    Err(NftError::from(e))
                }
            },
            None => self.transact(&tx.element_script(&table)),
        }
    }

    /// What the backend believes is programmed.
    pub fn programmed(&self) -> &Programmed {
        &self.state
    }

    /// Reads one family's table back from the kernel (`nft -j list table`): the parsed JSON.
    pub fn list_table(&self, family: Family) -> Result<serde_json::Value, NftError> {
        let out = nft::run(
            &self.cfg.nft_command,
            &["-j", "list", "table", family.nft(), &self.cfg.table],
            None,
        )?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Deletes both tables (switching away from nftables mode, kube-proxy's `CleanupLeftovers`). Tables
    /// that do not exist are fine.
    pub fn cleanup(&mut self) -> Result<(), NftError> {
        let mut script = String::new();
        for fam in render::families(&self.cfg) {
            let t = format!("{} {}", fam.nft(), self.cfg.table);
            script.push_str(&format!("add table {t}\ndelete table {t}\n"));
        }
        nft::run(&self.cfg.nft_command, &["-f", "-"], Some(&script))?;
        self.state = Programmed::new();
        self.synced = false;
        self.generation = None;
        self.stale.clear();
        Ok(())
    }

    /// Replaces the tables with the ruleset for `ports`, without a moment in which traffic fails.
    ///
    /// One transaction replaces a table atomically for rules and hash sets, but the endpoint maps are
    /// pipapo sets, whose contents the kernel swaps in just after the generation flips: for a few
    /// microseconds the new rules see empty maps, and a new connection then goes un-DNATed (measured: one
    /// refused connection in about 25 replacements under 6,000 connections/s). So when the tables already
    /// exist, a standby copy of the new ruleset is committed first (it runs alongside, and as the older
    /// registration its NAT chains come first), the tables are replaced, and the standby is deleted.
    ///
    /// When they do not exist yet (a cold start), see [`NftBackend::load_cold`].
    fn replace_tables(&mut self, ports: &[Arc<ServicePort>]) -> Result<(), NftError> {
        if !self.table_exists()? {
            return self.load_cold(ports);
        }
        let standby_cfg = NftConfig {
            table: format!("{}-standby", self.cfg.table),
            ..self.cfg.clone()
        };
        // Clients keep their affinity across the replacement.
        let mut kept = render::AffinityEntries::new();
        if ports.iter().any(|p| p.affinity_timeout.is_some()) {
            for fam in render::families(&self.cfg) {
                let out = nft::run(&self.cfg.nft_command, &["-j", "list", "sets", fam.nft()], None)?;
                let json: serde_json::Value = serde_json::from_str(&out)?;
                kept.extend(render::parse_affinity_entries(fam, &self.cfg.table, &json));
            }
        }
        let script = render::render_full_keeping(ports, &self.cfg, &kept);
        self.transact(&render_full(ports, &standby_cfg))?;
        let res = self.transact(&script);
        let mut cleanup = String::new();
        for fam in render::families(&standby_cfg) {
            let t = format!("{} {}", fam.nft(), standby_cfg.table);
            cleanup.push_str(&format!("add table {t}\ndelete table {t}\n"));
        }
        self.transact(&cleanup)?;
        res
    }

    /// Whether the `ip` table exists (through netlink when it can: `nft list tables` makes nft 1.0.6 read
    /// every set's elements).
    fn table_exists(&mut self) -> Result<bool, NftError> {
        let table = self.cfg.table.clone();
        if let Some(w) = self.netlink_writer() {
            match w.tables(Family::V4) {
                Ok(tables) => return Ok(tables.contains(&table)),
                Err(e) => {
                    debug!(error = %e, "cannot list the nftables tables through netlink");
                    self.writer = None;
                }
            }
        }
        let tables = nft::run(&self.cfg.nft_command, &["list", "tables"], None)?;
        let live = format!("ip {table}");
        Ok(tables
            .lines()
            .any(|l| l.trim().strip_prefix("table ") == Some(live.as_str())))
    }

    /// Loads the tables where there are none ([`render_cold`]): the rules and declarations in one `nft -f`
    /// transaction, then the elements in one netlink batch, which costs nft nothing. Nothing served these
    /// Services before, so the moment in between, when the tables stand with empty maps, loses nothing.
    fn load_cold(&mut self, ports: &[Arc<ServicePort>]) -> Result<(), NftError> {
        if self.netlink_writer().is_none() {
            return self.transact(&render_full(ports, &self.cfg));
        }
        let (script, elements) = render_cold(ports, &self.cfg);
        self.transact(&script)?;
        self.send_elements(&Transaction {
            elements,
            ..Default::default()
        })
    }

    /// Runs one transaction.
    fn transact(&self, script: &str) -> Result<(), NftError> {
        nft::run(&self.cfg.nft_command, &["-f", "-"], Some(script))?;
        self.commits.set(self.commits.get().wrapping_add(1));
        Ok(())
    }

    fn count_endpoints(sp: &ServicePort) -> i64 {
        sp.internal_endpoints.len() as i64
    }

    fn mark_synced(&self) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.metrics.last_sync.set(now);
        self.metrics.ports.set(self.state.len() as i64);
        self.metrics.endpoints.set(self.endpoints);
    }

    fn cleanup_conntrack(&self, old: Option<&ServicePort>, new: Option<&ServicePort>) {
        for args in conntrack::cleanup_commands(old, new) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            match nft::run(&self.cfg.conntrack_command, &args, None) {
                Ok(_) => {}
                // conntrack exits with 1 when nothing matched; that is the common case, not a failure.
                Err(NftError::Failed { stderr, .. }) if stderr.contains("0 flow entries") => {}
                Err(e) => {
                    self.metrics.cleanup_failures.inc();
                    warn!(error = %e, "conntrack cleanup failed");
                }
            }
        }
    }
}

impl Backend for NftBackend {
    fn name(&self) -> &'static str {
        "nftables"
    }

    fn apply(&mut self, changes: &[Change]) -> Result<(), BackendError> {
        if changes.is_empty() {
            return Ok(());
        }
        if !self.synced {
            // Nothing known about the kernel yet: program the whole intended state instead.
            let mut next = self.state.clone();
            next.commit(changes);
            let ports: Vec<Arc<ServicePort>> = next.ports().cloned().collect();
            return self.sync_all(&ports);
        }
        let start = Instant::now();
        let before = self.writes_begin(false);
        let tx = render_changes_deferred(&self.state, changes, &self.cfg);
        for id in &tx.revived {
            self.stale.remove(id);
        }
        self.stale.extend(tx.stale.iter().cloned());
        // Deleting objects costs a read of the whole ruleset: only when it is paid anyway, or when enough
        // have piled up.
        let delete_stale =
            !self.stale.is_empty() && (tx.loads_cache || self.stale.len() > self.cfg.stale_chain_limit);
        let mut after = tx.after.clone();
        if delete_stale {
            after.push_str(&delete_script(&self.stale));
        }
        let res = (|| {
            if !tx.script.is_empty() {
                self.transact(&tx.script)?;
            }
            self.send_elements(&tx)?;
            if !after.is_empty() {
                self.transact(&after)?;
            }
            Ok::<_, NftError>(())
        })();
        if let Err(e) = res {
            self.metrics.sync_failures.inc();
            warn!(error = %e, "incremental nftables change failed; doing a full sync");
            let prev = self.state.clone();
            let mut next = self.state.clone();
            next.commit(changes);
            let ports: Vec<Arc<ServicePort>> = next.ports().cloned().collect();
            self.synced = false;
            self.sync_all(&ports)?;
            // The full sync does not know what went away: clean up after the changes all the same.
            for c in changes {
                let old = prev.get(c.name()).cloned();
                let new = match c {
                    Change::Upsert { new, .. } => Some(new.clone()),
                    Change::Remove(_) => None,
                };
                self.cleanup_conntrack(old.as_deref(), new.as_deref());
            }
            return Ok(());
        }
        if delete_stale {
            self.stale.clear();
        }
        self.writes_end(before);
        self.metrics.partial_sync.observe(start.elapsed().as_secs_f64());
        // What each change replaced, change by change (a port may change twice in one batch); the
        // state takes the whole batch at once, so that it hands out the ids the rendering did.
        let mut current: std::collections::HashMap<
            &svcnet_dataplane::ServicePortName,
            Option<Arc<ServicePort>>,
        > = Default::default();
        for c in changes {
            let name = c.name();
            let old = match current.get(name) {
                Some(p) => p.clone(),
                None => self.state.get(name).cloned(),
            };
            let new = match c {
                Change::Upsert { new, .. } => Some(new.clone()),
                Change::Remove(_) => None,
            };
            self.cleanup_conntrack(old.as_deref(), new.as_deref());
            self.endpoints += new.as_deref().map(Self::count_endpoints).unwrap_or(0)
                - old.as_deref().map(Self::count_endpoints).unwrap_or(0);
            current.insert(name, new);
        }
        self.state.commit(changes);
        self.mark_synced();
        debug!(changes = changes.len(), elapsed = ?start.elapsed(), "nftables changes applied");
        Ok(())
    }

    fn sync_all(&mut self, ports: &[Arc<ServicePort>]) -> Result<(), BackendError> {
        let start = Instant::now();
        // A periodic resync repairs what something else changed. When nothing else has committed a
        // transaction since this backend's last write, and the ports are the ones programmed, there is
        // nothing to repair, and rebuilding 10,000 Services' sets would cost the kernel 20 s.
        if self.synced
            && self.generation.is_some()
            && self.read_generation() == self.generation
            && self.state.same_ports(ports)
        {
            self.metrics.resyncs_skipped.inc();
            self.mark_synced();
            debug!(
                ports = ports.len(),
                "nftables unchanged since the last write; full sync skipped"
            );
            return Ok(());
        }
        let before = self.writes_begin(true);
        if !self.synced {
            // Tables left by an earlier process: changed in place, never flushed.
            match self.take_over(ports) {
                Ok(Some(stats)) => {
                    self.writes_end(before);
                    self.metrics.full_sync.observe(start.elapsed().as_secs_f64());
                    self.takeover = Some(stats);
                    self.stale.clear();
                    self.endpoints = ports.iter().map(|p| Self::count_endpoints(p)).sum();
                    self.set_conntrack_sysctls();
                    self.synced = true;
                    self.mark_synced();
                    info!(ports = ports.len(), elapsed = ?start.elapsed(), sets = stats.sets,
                        chains = stats.chains, elements = stats.elements, "nftables tables taken over");
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => {
                    self.metrics.sync_failures.inc();
                    warn!(error = %e, "cannot take over the nftables tables; replacing them");
                }
            }
        }
        let replaced = self.replace_tables(ports);
        self.writes_end(before);
        if let Err(e) = replaced {
            self.generation = None;
            self.metrics.sync_failures.inc();
            return Err(backend_error(e));
        }
        self.metrics.full_sync.observe(start.elapsed().as_secs_f64());
        self.state = Programmed::from_ports(ports);
        // The tables were replaced: nothing stale is left.
        self.stale.clear();
        self.endpoints = ports.iter().map(|p| Self::count_endpoints(p)).sum();
        if !self.synced {
            self.set_conntrack_sysctls();
        }
        self.synced = true;
        self.mark_synced();
        debug!(ports = ports.len(), elapsed = ?start.elapsed(), "nftables full sync");
        Ok(())
    }
}
