//! The runner: the thread that hands the watch loop's batches to the backend, and heals a failed sync.
//!
//! kube-proxy's `BoundedFrequencyRunner` runs `syncProxyRules` at most once per min-sync-period and, when a
//! sync fails, retries it after a while as a full sync. Here the [`watch`](crate::watch) loop already bounds
//! the frequency (it coalesces events into batches), and this thread does the rest:
//! - a batch goes to the backend as it is ([`Backend::apply`]), a start-up or periodic resync as
//!   [`Backend::sync_all`];
//! - after any failure nothing incremental is tried again: the backend's idea of what is programmed may be
//!   wrong (a batch half applied), so the next attempt is a full sync of the whole wanted table, after a
//!   short back-off ([`RetryPolicy`]: the first retry within a second). Batches that arrive meanwhile only
//!   change the wanted table, and go out with that full sync;
//! - the runner keeps the wanted table itself (the same `Arc`s the model produced, no copies), so a retry
//!   needs nothing from the watch loop;
//! - `healthCheckNodePort` servers ([`ServiceHealthServers`]) follow what was programmed, for every backend.
//!
//! The backend runs on this thread, not on the async runtime: a slow `nft` transaction never stalls the
//! watches, and events that arrive while it works go out as the next, coalesced batch.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant, SystemTime};

use svcnet_dataplane::{Backend, BackendError, Change, ServicePort, ServicePortName};
use tracing::{info, warn};

use crate::health::ProxyHealth;
use crate::metrics::{ProxierMetrics, ReasonLabel, unix_seconds};
use crate::service_health::ServiceHealthServers;

/// When a failed sync is tried again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The wait before the first retry.
    pub first: Duration,
    /// The longest wait between retries; each failure in a row doubles the wait up to this.
    pub max: Duration,
}

impl Default for RetryPolicy {
    /// A quarter of a second, doubling to one second: a passing fault (a lock held by another `nft`, a
    /// table someone deleted) heals within about a second of clearing, and a lasting one costs one full
    /// sync a second. kube-proxy waits a whole sync period (30 s) before its retry.
    fn default() -> RetryPolicy {
        RetryPolicy {
            first: Duration::from_millis(250),
            max: Duration::from_secs(1),
        }
    }
}

/// Watch events received but not yet handed to the backend, by kind.
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct Pending {
    pub(crate) services: i64,
    pub(crate) slices: i64,
}

/// One unit of work for the runner.
pub(crate) enum Work {
    /// The whole table: the first sync (`reason` "start") or the periodic one ("resync"), with the
    /// trigger times of the changes it takes along.
    All {
        ports: Vec<Arc<ServicePort>>,
        reason: &'static str,
        triggers: Vec<SystemTime>,
        answered: Pending,
    },
    /// A batch of changes; the trigger times behind them (EndpointSlice annotations), when the first
    /// event of the batch arrived, and the watch events they answer.
    Changes {
        changes: Vec<Change>,
        triggers: Vec<SystemTime>,
        first_event: Option<Instant>,
        answered: Pending,
    },
}

/// The runner's state while syncs fail.
#[derive(Debug)]
struct Failing {
    since: Instant,
    failures: u32,
    delay: Duration,
    retry_at: Instant,
}

/// The runner. See the module docs.
pub(crate) struct Runner {
    backend: Box<dyn Backend>,
    metrics: ProxierMetrics,
    health: ProxyHealth,
    services: Option<ServiceHealthServers>,
    policy: RetryPolicy,
    /// What the data plane should be: every port the watch loop has handed over.
    wanted: HashMap<ServicePortName, Arc<ServicePort>>,
    failing: Option<Failing>,
    /// Trigger times and the first event of batches not programmed yet (only while failing).
    held_triggers: Vec<SystemTime>,
    held_first: Option<Instant>,
}

impl Runner {
    /// A runner for `backend`; `service_health` is where `healthCheckNodePort` servers listen (every
    /// address when empty), `None` for none at all.
    pub(crate) fn new(
        backend: Box<dyn Backend>,
        metrics: ProxierMetrics,
        health: ProxyHealth,
        service_health: Option<&[IpAddr]>,
        policy: RetryPolicy,
    ) -> Runner {
        Runner {
            backend,
            metrics,
            health,
            services: service_health.map(ServiceHealthServers::new),
            policy,
            wanted: HashMap::new(),
            failing: None,
            held_triggers: Vec::new(),
            held_first: None,
        }
    }

    /// Runs the runner on a thread of its own until every sender of `rx` is gone.
    pub(crate) fn spawn(self, rx: Receiver<Work>) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("proxier-runner".into())
            .spawn(move || self.run(rx))
    }

    fn run(mut self, rx: Receiver<Work>) {
        loop {
            // A health server that could not listen yet (its port still held by the process this one
            // took over from, while it drains) is retried every second, whatever else happens.
            let health_retry = self
                .services
                .as_ref()
                .is_some_and(|s| s.has_missing())
                .then(|| Instant::now() + HEALTH_LISTEN_RETRY);
            let retry_at = match (&self.failing, health_retry) {
                (Some(f), Some(h)) => Some(f.retry_at.min(h)),
                (Some(f), None) => Some(f.retry_at),
                (None, h) => h,
            };
            let work = match retry_at {
                Some(at) => match rx.recv_timeout(at.saturating_duration_since(Instant::now())) {
                    Ok(w) => Some(w),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(w) => Some(w),
                    Err(_) => break,
                },
            };
            if let Some(s) = self.services.as_mut().filter(|s| s.has_missing()) {
                s.retry_missing();
            }
            match work {
                Some(w) => self.handle(w),
                None if self.failing.as_ref().is_none_or(|f| f.retry_at > Instant::now()) => {}
                None => {
                    self.metrics.sync_retries.inc();
                    let mut ports: Vec<_> = self.wanted.values().cloned().collect();
                    ports.sort_by(|a, b| a.name.cmp(&b.name));
                    self.full_sync(&ports, "retry");
                }
            }
        }
    }

    fn handle(&mut self, work: Work) {
        match work {
            Work::All {
                ports,
                reason,
                triggers,
                answered,
            } => {
                self.metrics.handled(answered);
                self.held_triggers.extend(triggers);
                self.wanted = ports.iter().map(|p| (p.name.clone(), p.clone())).collect();
                self.full_sync(&ports, reason);
            }
            Work::Changes {
                changes,
                triggers,
                first_event,
                answered,
            } => {
                self.metrics.handled(answered);
                let olds: Vec<_> = changes
                    .iter()
                    .map(|c| match c {
                        Change::Upsert { new, .. } => self.wanted.insert(new.name.clone(), new.clone()),
                        Change::Remove(old) => self.wanted.remove(&old.name),
                    })
                    .collect();
                self.held_triggers.extend(triggers);
                if let Some(t) = first_event.filter(|_| !changes.is_empty()) {
                    self.held_first = Some(self.held_first.map_or(t, |h| h.min(t)));
                }
                if self.failing.is_some() {
                    // The scheduled full sync takes these changes along.
                    return;
                }
                if changes.is_empty() {
                    // Nothing to program, but the queued events are now handled (health, metrics).
                    self.succeeded();
                    return;
                }
                let started = Instant::now();
                let result = self.backend.apply(&changes);
                self.metrics
                    .sync_duration
                    .observe(started.elapsed().as_secs_f64());
                match result {
                    Ok(()) => {
                        if let Some(s) = &mut self.services {
                            for (c, old) in changes.iter().zip(olds) {
                                let new = match c {
                                    Change::Upsert { new, .. } => Some(&**new),
                                    Change::Remove(_) => None,
                                };
                                s.update(old.as_deref(), new);
                            }
                        }
                        self.succeeded();
                    }
                    Err(e) => self.failed(e),
                }
            }
        }
    }

    fn full_sync(&mut self, ports: &[Arc<ServicePort>], reason: &'static str) {
        self.metrics
            .full_syncs
            .get_or_create(&ReasonLabel { reason })
            .inc();
        let started = Instant::now();
        let result = self.backend.sync_all(ports);
        self.metrics
            .sync_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                if let Some(s) = &mut self.services {
                    s.reset(ports.iter());
                }
                self.succeeded();
            }
            Err(e) => self.failed(e),
        }
    }

    /// Everything wanted is programmed.
    fn succeeded(&mut self) {
        if let Some(f) = self.failing.take() {
            info!(
                backend = self.backend.name(),
                failures = f.failures,
                after = ?f.since.elapsed(),
                "data plane sync recovered"
            );
        }
        self.health.updated();
        let now = SystemTime::now();
        self.metrics.last_sync.set(unix_seconds(now));
        for t in self.held_triggers.drain(..) {
            if let Ok(d) = now.duration_since(t) {
                self.metrics.programming_duration.observe(d.as_secs_f64());
            }
        }
        // This node's share of network programming latency, at sub-second precision (the trigger times
        // behind `programming_duration` come from whole-second API timestamps).
        if let Some(t) = self.held_first.take() {
            self.metrics
                .event_to_programmed
                .observe(t.elapsed().as_secs_f64());
        }
    }

    /// A sync failed: schedule a full sync, backing off while failures go on.
    fn failed(&mut self, e: BackendError) {
        self.metrics.sync_failures.inc();
        let now = Instant::now();
        let f = self.failing.get_or_insert(Failing {
            since: now,
            failures: 0,
            delay: self.policy.first,
            retry_at: now,
        });
        if f.failures > 0 {
            f.delay = (f.delay * 2).min(self.policy.max);
        }
        f.failures += 1;
        f.retry_at = now + f.delay;
        // A lasting fault fails once a second: say so at the 1st, 2nd, 4th, 8th… failure, not every time.
        if f.failures.is_power_of_two() {
            warn!(
                backend = self.backend.name(),
                error = %first_lines(&e.to_string(), 4),
                failures = f.failures,
                retry_in = ?f.delay,
                "data plane sync failed; retrying as a full sync"
            );
        }
    }
}

/// How often a `healthCheckNodePort` that could not be listened on is tried again.
const HEALTH_LISTEN_RETRY: Duration = Duration::from_secs(1);

/// The first `n` lines of `text`, and how many more there were: `nft` reports an error on every line of a
/// failed transaction, and a full sync can be thousands of lines.
fn first_lines(text: &str, n: usize) -> String {
    let mut lines = text.lines();
    let mut out: Vec<&str> = lines.by_ref().take(n).collect();
    let more = lines.count();
    let tail = format!("… ({more} more lines)");
    if more > 0 {
        out.push(&tail);
    }
    out.join("\n")
}

/// Starts `runner` on its own thread; the watch loop sends it work through the returned sender, and the
/// thread ends when the sender is dropped.
pub(crate) fn start(runner: Runner) -> std::io::Result<(Sender<Work>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = runner.spawn(rx)?;
    Ok((tx, handle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    use prometheus_client::registry::Registry;
    use svcnet_dataplane::{Model, ModelConfig};

    /// A backend that fails while `failures` is above zero (counting it down), recording every call.
    struct Flaky {
        failures: Arc<AtomicU32>,
        calls: Arc<Mutex<Vec<(Instant, String)>>>,
    }

    impl Flaky {
        fn call(&self, what: String) -> Result<(), BackendError> {
            self.calls.lock().unwrap().push((Instant::now(), what));
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                return Err(BackendError {
                    backend: "flaky",
                    message: format!("injected failure ({left} left)"),
                });
            }
            Ok(())
        }
    }

    impl Backend for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        fn apply(&mut self, changes: &[Change]) -> Result<(), BackendError> {
            let names: Vec<String> = changes.iter().map(|c| c.name().to_string()).collect();
            self.call(format!("apply {}", names.join(",")))
        }
        fn sync_all(&mut self, ports: &[Arc<ServicePort>]) -> Result<(), BackendError> {
            let names: Vec<String> = ports.iter().map(|p| p.name.to_string()).collect();
            self.call(format!("all {}", names.join(",")))
        }
    }

    /// The ports a model makes of `services` (name, healthCheckNodePort) with one endpoint each, local
    /// to node `n1` when `local`.
    fn ports(services: &[(&str, u16, bool)]) -> Vec<Arc<ServicePort>> {
        let mut model = Model::new(ModelConfig {
            node_name: "n1".into(),
            ..Default::default()
        });
        for (i, (name, hc, local)) in services.iter().enumerate() {
            let svc = serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "default", "name": name},
                "spec": {"type": "LoadBalancer", "clusterIP": format!("10.96.0.{}", i + 10),
                    "externalTrafficPolicy": "Local", "healthCheckNodePort": hc,
                    "ports": [{"port": 80, "nodePort": 30000 + i}]}
            }))
            .unwrap();
            model.upsert_service(&svc);
            let slice = serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": "default", "name": format!("{name}-1"),
                    "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4",
                "ports": [{"port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [format!("10.244.0.{}", i + 10)],
                    "nodeName": if *local { "n1" } else { "n2" }, "conditions": {"ready": true}}]
            }))
            .unwrap();
            model.upsert_slice(&slice);
        }
        model.take_changes();
        let mut v: Vec<_> = model.ports().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    fn metric(registry: &Registry, line_start: &str) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(line_start).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| panic!("{line_start} in\n{text}"))
    }

    /// Waits up to `limit` for `f` to hold.
    fn eventually(limit: Duration, f: impl Fn() -> bool) -> bool {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        f()
    }

    /// A sync that fails is retried within a second as a full sync of everything wanted, including the
    /// changes that arrived while it failed; back-off doubles between failures; the metrics say what
    /// happened, and incremental syncs resume once a full sync succeeds.
    #[test]
    fn a_failed_sync_heals_with_a_full_sync() {
        let failures = Arc::new(AtomicU32::new(0));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::default();
        let metrics = ProxierMetrics::new(&mut registry);
        let health = ProxyHealth::new(Duration::from_secs(60), &mut registry);
        let backend = Flaky {
            failures: failures.clone(),
            calls: calls.clone(),
        };
        let runner = Runner::new(Box::new(backend), metrics, health, None, RetryPolicy::default());
        let (tx, thread) = start(runner).unwrap();
        let all = ports(&[("a", 31001, true), ("b", 31002, true)]);
        tx.send(Work::All {
            ports: vec![all[0].clone()],
            reason: "start",
            triggers: vec![],
            answered: Pending::default(),
        })
        .unwrap();
        assert!(eventually(Duration::from_secs(2), || calls.lock().unwrap().len() == 1));

        // Three failures in a row: the incremental batch, then two full syncs.
        failures.store(3, Ordering::SeqCst);
        let failed_at = Instant::now();
        tx.send(Work::Changes {
            changes: vec![Change::Upsert {
                old: None,
                new: all[1].clone(),
            }],
            triggers: vec![],
            first_event: Some(Instant::now()),
            answered: Pending::default(),
        })
        .unwrap();
        assert!(eventually(Duration::from_secs(5), || calls.lock().unwrap().len() == 5));
        let log = calls.lock().unwrap().clone();
        let what: Vec<&str> = log.iter().map(|(_, w)| w.as_str()).collect();
        assert_eq!(
            what,
            [
                "all default/a",
                "apply default/b",
                "all default/a,default/b",
                "all default/a,default/b",
                "all default/a,default/b",
            ]
        );
        let gaps: Vec<Duration> = log.windows(2).skip(1).map(|w| w[1].0 - w[0].0).collect();
        assert!(
            gaps[0] < Duration::from_secs(1),
            "first retry within 1 s: {gaps:?}"
        );
        assert!(gaps[1] > gaps[0], "back-off grows: {gaps:?}");
        assert!(
            failed_at.elapsed() < Duration::from_secs(3),
            "healed within seconds"
        );
        // Healthy again: the next batch is incremental.
        let changed = ports(&[("a", 31001, false)]);
        tx.send(Work::Changes {
            changes: vec![Change::Upsert {
                old: Some(all[0].clone()),
                new: changed[0].clone(),
            }],
            triggers: vec![],
            first_event: None,
            answered: Pending::default(),
        })
        .unwrap();
        drop(tx);
        thread.join().unwrap();
        assert_eq!(calls.lock().unwrap().last().unwrap().1, "apply default/a");
        assert_eq!(metric(&registry, "kubeproxy_sync_proxy_rules_errors_total "), "3");
        assert_eq!(metric(&registry, "svcnet_proxier_sync_retries_total "), "3");
        assert_eq!(
            metric(&registry, "svcnet_proxier_full_syncs_total{reason=\"retry\"} "),
            "3"
        );
        assert_eq!(
            metric(&registry, "svcnet_proxier_full_syncs_total{reason=\"start\"} "),
            "1"
        );
    }

    /// A failed transaction's report is cut to a few lines in the log.
    #[test]
    fn long_errors_are_cut() {
        assert_eq!(first_lines("a\nb", 4), "a\nb");
        let long: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
        assert_eq!(
            first_lines(&long.join("\n"), 2),
            "line 0\nline 1\n… (998 more lines)"
        );
    }

    fn http_get(port: u16) -> Option<(u16, serde_json::Value)> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        // A server being replaced may reset the connection: no answer yet, as for a refused one.
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).ok()?;
        let code = resp.split_whitespace().nth(1)?.parse().ok()?;
        let body = resp.split("\r\n\r\n").nth(1)?;
        Some((code, serde_json::from_str(body).unwrap()))
    }

    /// A `healthCheckNodePort` still held by someone else (the process this one took over from, while it
    /// drains) is listened on as soon as it is free, without any further change to the Services.
    #[test]
    fn a_busy_health_check_port_is_taken_once_it_is_free() {
        let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let hc = blocker.local_addr().unwrap().port();
        let mut registry = Registry::default();
        let localhost = ["127.0.0.1".parse().unwrap()];
        let (tx, thread) = start(Runner::new(
            Box::new(Flaky {
                failures: Arc::new(AtomicU32::new(0)),
                calls: Arc::new(Mutex::new(Vec::new())),
            }),
            ProxierMetrics::new(&mut registry),
            ProxyHealth::new(Duration::from_secs(60), &mut registry),
            Some(&localhost),
            RetryPolicy::default(),
        ))
        .unwrap();
        tx.send(Work::All {
            ports: ports(&[("lb", hc, true)]),
            reason: "start",
            triggers: vec![],
            answered: Pending::default(),
        })
        .unwrap();
        // The blocker answers nothing: connections queue in its backlog unanswered.
        std::thread::sleep(Duration::from_millis(300));
        drop(blocker);
        assert!(
            eventually(Duration::from_secs(3), || http_get(hc)
                .is_some_and(|(c, _)| c == 200)),
            "the health server never took the port once it was free"
        );
        drop(tx);
        thread.join().unwrap();
    }

    /// `healthCheckNodePort` servers follow what the runner programmed, whatever the backend: 200 with a
    /// local endpoint, 503 without, gone with the Service, and not updated by a sync that failed.
    #[test]
    fn service_health_servers_follow_programmed_ports() {
        // A port the system just had free (a fixed one could be anybody's).
        let hc = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let failures = Arc::new(AtomicU32::new(0));
        let calls = Arc::new(Mutex::new(Vec::new()));
        let mut registry = Registry::default();
        let backend = Flaky {
            failures: failures.clone(),
            calls: calls.clone(),
        };
        let localhost = ["127.0.0.1".parse().unwrap()];
        let (tx, thread) = start(Runner::new(
            Box::new(backend),
            ProxierMetrics::new(&mut registry),
            ProxyHealth::new(Duration::from_secs(60), &mut registry),
            Some(&localhost),
            RetryPolicy {
                first: Duration::from_secs(30),
                max: Duration::from_secs(30),
            },
        ))
        .unwrap();
        let local = ports(&[("lb", hc, true)]);
        tx.send(Work::All {
            ports: local.clone(),
            reason: "start",
            triggers: vec![],
            answered: Pending::default(),
        })
        .unwrap();
        assert!(eventually(Duration::from_secs(2), || http_get(hc).is_some()));
        let (code, body) = http_get(hc).unwrap();
        assert_eq!(code, 200);
        assert_eq!(body["localEndpoints"], 1);
        assert_eq!(body["service"]["namespace"], "default");
        assert_eq!(body["service"]["name"], "lb");
        assert_eq!(body["serviceProxyHealthy"], true);

        // A change the backend failed to program is not announced.
        let remote = ports(&[("lb", hc, false)]);
        failures.store(1, Ordering::SeqCst);
        let change = |old: &Arc<ServicePort>, new: &Arc<ServicePort>| Work::Changes {
            changes: vec![Change::Upsert {
                old: Some(old.clone()),
                new: new.clone(),
            }],
            triggers: vec![],
            first_event: None,
            answered: Pending::default(),
        };
        tx.send(change(&local[0], &remote[0])).unwrap();
        assert!(eventually(Duration::from_secs(2), || calls.lock().unwrap().len() == 2));
        assert_eq!(http_get(hc).unwrap().0, 200);
        // The (periodic) full sync programs it.
        tx.send(Work::All {
            ports: remote.clone(),
            reason: "resync",
            triggers: vec![],
            answered: Pending::default(),
        })
        .unwrap();
        assert!(eventually(Duration::from_secs(2), || http_get(hc)
            .is_some_and(|(c, b)| c == 503 && b["localEndpoints"] == 0)));
        tx.send(Work::Changes {
            changes: vec![Change::Remove(remote[0].clone())],
            triggers: vec![],
            first_event: None,
            answered: Pending::default(),
        })
        .unwrap();
        assert!(
            eventually(Duration::from_secs(2), || http_get(hc).is_none()),
            "server still answers after its Service went away"
        );
        drop(tx);
        thread.join().unwrap();
    }
}
