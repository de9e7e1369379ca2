//! The loops that keep Service allocations and ServiceCIDRs true, as kube-apiserver's and
//! kube-controller-manager's do. They run on the instance holding their Lease (`svcnet up` gates them),
//! so several API servers on one etcd never repair at once.
//!
//! * **Allocation repair** (kube's `ipallocator/controller/repairip.go` and the NodePort repair): a
//!   Service whose ClusterIP has no IPAddress gets one (Event `ClusterIPNotAllocated`); a ClusterIP held
//!   by two Services is reported on them (`ClusterIPAlreadyAllocated`), one outside every ServiceCIDR too
//!   (`ClusterIPOutOfRange`); an IPAddress no Service holds is deleted once older than the grace period
//!   (`IPAddressNotAllocated`), because a request may have made it and not yet written its Service. The
//!   NodePort bitmap gets every port a Service holds (`PortNotAllocated`), duplicates and out-of-range
//!   ports are reported (`PortAlreadyAllocated`, `PortOutOfRange`), and a port no Service holds is
//!   released after it has looked leaked for the grace period.
//! * **ServiceCIDRs** (kube's `servicecidrs` controller and the API server's default-ServiceCIDR
//!   controller): the default `kubernetes` one exists; each one carries the protection finalizer and a
//!   `Ready` condition; a deleted one keeps its finalizer (Ready False, reason `Terminating`) while an
//!   IPAddress lies only in it, and loses it 10 s after deletion otherwise, so that no allocation that
//!   still saw it ready can land in a range that is gone.
//!
//! Each pass reads the watch cache; it runs on every change to Services, IPAddresses or ServiceCIDRs
//! (at most once a second; after a long pass, up to 5 s later, so that passes over a large cluster take
//! at most a twentieth of a core) and on a period. It decodes only
//! the objects that changed since the previous pass and keeps only the fields it reads of the others.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::{Value, json};
use svcnet_api::events::{Involved, build_event};
use svcnet_api::resources::{self, ResourceType};
use svcnet_kinds::kinds::{ipaddress, servicecidr};
use svcnet_store::{Precondition, Revision, Write};
use tracing::{info, warn};

use crate::ApiServer;
use crate::cache::Cached;
use crate::errors::ApiError;
use crate::handlers::WriteCtx;
use crate::hooks::held;
use crate::ipam::{Ipam, Parent, cidrs_of, ip_address_rt, ip_key, service_cidr_rt};
use crate::request::{Params, ResourceRoute, collection_prefix};

/// Who the loops' writes and Events are from.
const MANAGER: &str = "svcnet-apiserver";
/// How long a deleted ServiceCIDR with no address depending on it waits before its finalizer goes
/// (kube's `deletionGracePeriod`): allocators that still see it ready have had time to see otherwise.
const CIDR_DELETION_GRACE: Duration = Duration::from_secs(10);
/// The message of a deleted ServiceCIDR that addresses still depend on (kube's, verbatim).
const CIDR_BLOCKED: &str =
    "There are still IPAddresses referencing the ServiceCIDR, please remove them or create a new ServiceCIDR";
/// The message of a ready ServiceCIDR (kube's, verbatim).
const CIDR_READY: &str = "Kubernetes Service CIDR is ready";

/// Settings of the repair loop.
#[derive(Debug, Clone, Copy)]
pub struct RepairConfig {
    /// A pass runs at least this often, changes or not.
    pub period: Duration,
    /// How long an allocation without a Service is left alone before it is released (kube: 60 s).
    pub leak_grace: Duration,
}

impl Default for RepairConfig {
    fn default() -> Self {
        RepairConfig {
            period: Duration::from_secs(180),
            leak_grace: Duration::from_secs(60),
        }
    }
}

/// What one pass did (for logs and tests).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// IPAddresses created for Services that held an address without one.
    pub ips_created: usize,
    /// IPAddresses deleted because no Service held them.
    pub ips_deleted: usize,
    /// NodePorts marked allocated for the Services holding them.
    pub ports_marked: usize,
    /// NodePorts released because no Service held them.
    pub ports_released: usize,
}

/// What the loop remembers between passes: since when each NodePort has looked leaked, and which
/// Events it recorded when (a lasting problem, a duplicate, is reported again only after
/// [`REPORT_AGAIN`], not on every pass).
#[derive(Debug, Default)]
pub struct RepairState {
    port_suspects: HashMap<i32, Instant>,
    reported: HashMap<String, Instant>,
    services: Trimmed,
    addresses: Trimmed,
}

/// The parts of each Service or IPAddress that a pass reads, kept between passes with the revision
/// they were taken from, so that a pass decodes only the objects that changed since the previous one.
/// Decoding all of them on every pass (once a second while Services change) took a fifth of the
/// server's CPU during a burst of 10,000 creates, and stalled a runtime thread for as long.
#[derive(Debug, Default)]
struct Trimmed {
    by_key: HashMap<Arc<str>, (Revision, Arc<Value>)>,
}

impl Trimmed {
    /// The trimmed form (`keep`: the JSON pointers kept) of every object in `listed`, in its order;
    /// forgets the objects that are gone.
    fn refresh(&mut self, listed: Vec<Cached>, keep: &[&str]) -> Vec<Arc<Value>> {
        let mut next = HashMap::with_capacity(listed.len());
        let mut out = Vec::with_capacity(listed.len());
        for c in listed {
            let obj = match self.by_key.remove(&c.key) {
                Some((revision, obj)) if revision == c.revision => obj,
                _ => Arc::new(trim(&c.object(), keep)),
            };
            out.push(obj.clone());
            next.insert(c.key, (c.revision, obj));
        }
        self.by_key = next;
        out
    }
}

/// What a pass reads of a Service: who it is (for Events) and what it holds (`hooks::held`).
const SERVICE_PARTS: &[&str] = &[
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/namespace",
    "/metadata/uid",
    "/metadata/resourceVersion",
    "/metadata/creationTimestamp",
    "/spec/clusterIPs",
    "/spec/ports",
    "/spec/healthCheckNodePort",
];

/// What a pass reads of an IPAddress: who it is, whether the allocator made it, and its parent.
const ADDRESS_PARTS: &[&str] = &[
    "/apiVersion",
    "/kind",
    "/metadata/name",
    "/metadata/uid",
    "/metadata/resourceVersion",
    "/metadata/creationTimestamp",
    "/metadata/labels",
    "/spec/parentRef",
];

/// A copy of `obj` with only the values at `keep` (JSON pointers of object members).
fn trim(obj: &Value, keep: &[&str]) -> Value {
    let mut out = Value::Object(serde_json::Map::new());
    for pointer in keep {
        let Some(v) = obj.pointer(pointer) else {
            continue;
        };
        let mut cur = &mut out;
        let mut parts = pointer.split('/').skip(1).peekable();
        while let Some(part) = parts.next() {
            let Some(map) = cur.as_object_mut() else { break };
            if parts.peek().is_none() {
                map.insert(part.to_string(), v.clone());
                break;
            }
            cur = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
        }
    }
    out
}

/// The longest pause between two passes that the pacing by the last pass's duration makes.
const PACE_MAX: Duration = Duration::from_secs(5);

/// How long before the same Event about the same object is recorded again.
const REPORT_AGAIN: Duration = Duration::from_secs(600);

fn rt(group: &str, plural: &str) -> &'static ResourceType {
    resources::lookup(group, "v1", plural).expect("repair kinds are always served")
}

fn family(ip: IpAddr) -> &'static str {
    if ip.to_canonical().is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// Whether `obj` (an IPAddress) carries the allocator's `managed-by` label.
fn allocator_made(obj: &Value) -> bool {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(|l| l.get(ipaddress::LABEL_MANAGED_BY))
        .and_then(Value::as_str)
        == Some(ipaddress::MANAGED_BY_ALLOCATOR)
}

/// How long ago `obj` was created (zero when unknown, so that it is never taken for old).
fn age(obj: &Value) -> Duration {
    meta_str(obj, "creationTimestamp")
        .parse::<jiff::Timestamp>()
        .ok()
        .and_then(|t| Duration::try_from(jiff::Timestamp::now().duration_since(t)).ok())
        .unwrap_or_default()
}

fn involved<'a>(api_version: &'a str, kind: &'a str, obj: &'a Value) -> Involved<'a> {
    Involved {
        api_version,
        kind,
        namespace: meta_str(obj, "namespace"),
        name: meta_str(obj, "name"),
        uid: meta_str(obj, "uid"),
        resource_version: meta_str(obj, "resourceVersion"),
    }
}

impl ApiServer {
    /// Records a core/v1 Event through the server's own write path; a failure is logged only.
    async fn record_event(&self, about: &Involved<'_>, type_: &str, reason: &str, message: &str) {
        let now = jiff::Timestamp::now();
        let ev = build_event(about, MANAGER, type_, reason, message, now, now.as_nanosecond());
        let Ok(body) = serde_json::to_value(&ev) else {
            return;
        };
        let ns = body
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let route = ResourceRoute::object(rt("", "events"), Some(ns), None);
        let params = Params::default();
        let ctx = WriteCtx::internal(&route, &params, MANAGER);
        if let Err(e) = self.create(&ctx, body).await {
            warn!(reason, message, error = %e, "could not record event");
        } else {
            info!(object = about.name, reason, message, "allocation repair");
        }
    }

    /// Records an Event unless the same one about the same object was recorded within [`REPORT_AGAIN`].
    async fn report(
        &self,
        reported: &mut HashMap<String, Instant>,
        about: &Involved<'_>,
        type_: &str,
        reason: &str,
        message: &str,
    ) {
        let key = format!(
            "{}/{}/{}\n{reason}\n{message}",
            about.kind, about.namespace, about.uid
        );
        let now = Instant::now();
        reported.retain(|_, at| now.duration_since(*at) < REPORT_AGAIN);
        if reported.contains_key(&key) {
            return;
        }
        reported.insert(key, now);
        self.record_event(about, type_, reason, message).await;
    }

    fn ipam_or_none(&self) -> Option<Arc<Ipam>> {
        self.kind_hooks.ipam()
    }

    /// At start-up, before anything new is allocated: every address and port a stored Service holds is
    /// made present in the store (an IPAddress per ClusterIP, the NodePort bitmap), so that data from
    /// before the IPAddress API, or written by `svcnet migrate`, is never handed out twice.
    pub async fn adopt_allocations(&self) -> Result<RepairReport, ApiError> {
        let mut report = RepairReport::default();
        let Some(ipam) = self.ipam_or_none() else {
            return Ok(report);
        };
        let services = self.cached_list(rt("", "services"), None);
        let mut ports: Vec<i32> = Vec::new();
        for svc in &services {
            let parent = Parent::of(svc);
            let h = held(svc);
            ports.extend(h.ports.iter().copied());
            for ip in h.ips {
                if ipam.cached_ip(ip).is_none() && ipam.claim_ip(ip, &parent, false).await? {
                    report.ips_created += 1;
                }
            }
        }
        let marked = ipam
            .update_ports(false, |a| {
                let n = ports.iter().filter(|p| a.allocate(**p).is_ok()).count();
                Ok::<_, ()>((n, n > 0))
            })
            .await?;
        report.ports_marked = marked.unwrap_or(0);
        // The bitmap exists from now on, even in a cluster without NodePorts.
        let (alloc, revision) = ipam.load_ports().await?;
        if revision.is_none() {
            ipam.store_ports(&alloc, None).await?;
        }
        if report != RepairReport::default() {
            info!(?report, "adopted the allocations of stored Services");
        }
        Ok(report)
    }

    /// Starts the repair and ServiceCIDR loop (see the module docs).
    pub fn spawn_allocation_repair(self: &Arc<Self>, config: RepairConfig) {
        let server = self.clone();
        tokio::spawn(async move {
            const PREFIXES: [&str; 3] = [
                "/core/services/",
                "/networking.k8s.io/ipaddresses/",
                "/networking.k8s.io/servicecidrs/",
            ];
            let (_, _, mut changes) = server.cache.watch_from_now(PREFIXES[2]);
            let mut state = RepairState::default();
            loop {
                let started = Instant::now();
                let mut next = config.period;
                match server.sync_service_cidrs().await {
                    Ok(Some(wait)) => next = next.min(wait),
                    Ok(None) => {}
                    Err(e) => warn!(error = %e, "ServiceCIDR sync failed; will retry"),
                }
                match server.repair_allocations(&mut state, config).await {
                    Ok((report, wait)) => {
                        if report != RepairReport::default() {
                            info!(?report, "allocation repair pass");
                        }
                        if let Some(wait) = wait {
                            next = next.min(wait);
                        }
                    }
                    Err(e) => {
                        if let Some(ipam) = server.ipam_or_none() {
                            ipam.metrics().repair_reconcile_errors.inc();
                        }
                        warn!(error = %e, "allocation repair failed; will retry");
                        next = next.min(Duration::from_secs(1));
                    }
                }
                let took = started.elapsed();
                let wake = async {
                    loop {
                        match changes.recv().await {
                            Ok(ev) if !PREFIXES.iter().any(|p| ev.key.starts_with(p)) => continue,
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => return false,
                            _ => return true,
                        }
                    }
                };
                tokio::select! {
                    open = wake => if !open { return },
                    _ = tokio::time::sleep(next) => {}
                }
                // At most one pass a second however busy the cluster is, and never more than a
                // twentieth of a core: a pass is linear in the number of Services, and on a loaded
                // machine one took long enough to matter to the requests it shares the threads with.
                // A pass's time includes its writes, so a pass that repaired much is not followed by a
                // long pause: at most `PACE_MAX`.
                let pace = (took * 20).clamp(Duration::from_secs(1), PACE_MAX);
                tokio::time::sleep(pace.saturating_sub(started.elapsed())).await;
                changes = changes.resubscribe();
            }
        });
    }

    /// One allocation repair pass. Answers what it did and, if something becomes releasable later,
    /// how long until then.
    pub async fn repair_allocations(
        &self,
        state: &mut RepairState,
        config: RepairConfig,
    ) -> Result<(RepairReport, Option<Duration>), ApiError> {
        let mut report = RepairReport::default();
        let Some(ipam) = self.ipam_or_none() else {
            return Ok((report, None));
        };
        let mut wait: Option<Duration> = None;
        let mut soonest = |d: Duration| wait = Some(wait.map_or(d, |w: Duration| w.min(d)));
        let listed = |rt: &ResourceType| self.cache.list(&collection_prefix(rt, None), None).0;
        let services = state.services.refresh(listed(rt("", "services")), SERVICE_PARTS);
        let addresses = state.addresses.refresh(listed(ip_address_rt()), ADDRESS_PARTS);
        let all_cidrs: Vec<IpNet> = ipam.service_cidrs().iter().flat_map(cidrs_of).collect();
        // Who holds what, by the stored Services.
        let mut ip_holders: BTreeMap<IpAddr, Vec<&Value>> = BTreeMap::new();
        let mut port_holders: BTreeMap<i32, Vec<&Value>> = BTreeMap::new();
        for svc in &services {
            let h = held(svc);
            for ip in h.ips {
                ip_holders.entry(ip).or_default().push(svc);
            }
            for p in h.ports {
                port_holders.entry(p).or_default().push(svc);
            }
        }
        // The stored IPAddresses by address (their names are canonical, as `ipam::ip_key` writes them).
        let by_ip: HashMap<IpAddr, &Value> = addresses
            .iter()
            .filter_map(|a| Some((meta_str(a, "name").parse::<IpAddr>().ok()?.to_canonical(), &**a)))
            .collect();
        // Services whose addresses are not (rightly) allocated.
        for (ip, holders) in &ip_holders {
            let fam = family(*ip);
            for svc in holders {
                let parent = Parent::of(svc);
                let about = involved("v1", "Service", svc);
                if !all_cidrs.is_empty() && !all_cidrs.iter().any(|c| c.contains(ip)) {
                    ipam.metrics().repair(true, "outOfRange", 1);
                    self.report(
                        &mut state.reported,
                        &about,
                        "Warning",
                        "ClusterIPOutOfRange",
                        &format!("Cluster IP [{fam}]: {ip} is not within any configured Service CIDR; please recreate service"),
                    )
                    .await;
                    continue;
                }
                match by_ip.get(&ip.to_canonical()).copied() {
                    None => {
                        if ipam.claim_ip(*ip, &parent, false).await? {
                            report.ips_created += 1;
                            ipam.metrics().repair(true, "repair", 1);
                            self.report(
                                &mut state.reported,
                                &about,
                                "Warning",
                                "ClusterIPNotAllocated",
                                &format!("Cluster IP [{fam}]: {ip} is not allocated; repairing"),
                            )
                            .await;
                        }
                    }
                    Some(obj) if parent.owns(obj) => {}
                    Some(obj) => {
                        let owner_holds = holders.iter().any(|other| Parent::of(other).owns(obj));
                        if owner_holds {
                            ipam.metrics().repair(true, "duplicate", 1);
                            self.report(
                        &mut state.reported,
                                &about,
                                "Warning",
                                "ClusterIPAlreadyAllocated",
                                &format!(
                                    "Cluster IP [{fam}]:{ip} was assigned to multiple services. Please recreate service"
                                ),
                            )
                            .await;
                        } else if age(obj) < config.leak_grace {
                            // Its Service may be a create in flight that the cache does not show yet.
                            soonest(config.leak_grace - age(obj));
                        } else {
                            // The IPAddress names a Service that does not hold the address: it is this one's.
                            self.delete_ip_address(*ip, obj).await?;
                            if ipam.claim_ip(*ip, &parent, false).await? {
                                report.ips_created += 1;
                            }
                            self.report(
                        &mut state.reported,
                                &about,
                                "Warning",
                                "ClusterIPNotAllocated",
                                &format!(
                                    "the ClusterIP [{fam}]: {ip} for Service {}/{} has a wrong reference; repairing",
                                    parent.namespace, parent.name
                                ),
                            )
                            .await;
                        }
                    }
                }
            }
        }
        // IPAddresses the allocator made that no Service holds.
        for obj in addresses {
            let managed = allocator_made(&obj);
            let Ok(ip) = meta_str(&obj, "name").parse::<IpAddr>() else {
                continue;
            };
            if !managed {
                continue;
            }
            let held_rightly = ip_holders
                .get(&ip)
                .is_some_and(|hs| hs.iter().any(|s| Parent::of(s).owns(&obj)));
            if held_rightly {
                continue;
            }
            let lived = age(&obj);
            if lived < config.leak_grace {
                soonest(config.leak_grace - lived);
                continue;
            }
            let p = |k: &str| {
                obj.pointer(&format!("/spec/parentRef/{k}"))
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            let message = format!(
                "IPAddress: {ip} for Service {}/{} appears to have leaked: cleaning up",
                p("namespace"),
                p("name")
            );
            self.delete_ip_address(ip, &obj).await?;
            report.ips_deleted += 1;
            ipam.metrics().repair(true, "leak", 1);
            let about = involved("networking.k8s.io/v1", "IPAddress", &obj);
            self.report(
                &mut state.reported,
                &about,
                "Warning",
                "IPAddressNotAllocated",
                &message,
            )
            .await;
        }
        // NodePorts.
        let range = ipam.node_port_range();
        for (port, holders) in &port_holders {
            for svc in holders {
                let about = involved("v1", "Service", svc);
                if !range.contains(*port) {
                    ipam.metrics().repair(false, "outOfRange", 1);
                    self.report(
                        &mut state.reported,
                        &about,
                        "Warning",
                        "PortOutOfRange",
                        &format!("Port {port} is not within the port range {range}; please recreate service"),
                    )
                    .await;
                } else if holders.len() > 1 {
                    ipam.metrics().repair(false, "duplicate", 1);
                    self.report(
                        &mut state.reported,
                        &about,
                        "Warning",
                        "PortAlreadyAllocated",
                        &format!("Port {port} was assigned to multiple services; please recreate service"),
                    )
                    .await;
                }
            }
        }
        let (alloc, _) = ipam.load_ports().await?;
        let now = Instant::now();
        let leaked: Vec<i32> = alloc.iter().filter(|p| !port_holders.contains_key(p)).collect();
        state.port_suspects.retain(|p, _| leaked.contains(p));
        let mut release = Vec::new();
        for p in leaked {
            let since = *state.port_suspects.entry(p).or_insert(now);
            let looked = now.duration_since(since);
            if looked >= config.leak_grace {
                release.push(p);
            } else {
                soonest(config.leak_grace - looked);
            }
        }
        let missing: Vec<i32> = port_holders
            .keys()
            .copied()
            .filter(|p| range.contains(*p))
            .collect();
        let outcome = ipam
            .update_ports(false, |a| {
                let marked: Vec<i32> = missing
                    .iter()
                    .copied()
                    .filter(|p| a.allocate(*p).is_ok())
                    .collect();
                let released: Vec<i32> = release.iter().copied().filter(|p| a.release(*p)).collect();
                let changed = !marked.is_empty() || !released.is_empty();
                Ok::<_, ()>(((marked, released), changed))
            })
            .await?;
        if let Ok((marked, released)) = outcome {
            for p in &marked {
                if let Some(svc) = port_holders.get(p).and_then(|h| h.first()) {
                    let about = involved("v1", "Service", svc);
                    self.report(
                        &mut state.reported,
                        &about,
                        "Warning",
                        "PortNotAllocated",
                        &format!("Port {p} is not allocated; repairing"),
                    )
                    .await;
                }
            }
            for p in &released {
                warn!(port = p, "NodePort held by no Service; released");
                state.port_suspects.remove(p);
            }
            report.ports_marked = marked.len();
            report.ports_released = released.len();
            ipam.metrics().repair(false, "repair", marked.len());
            ipam.metrics().repair(false, "leak", released.len());
        }
        Ok((report, wait))
    }

    /// Deletes IPAddress `ip` if it is still the version `seen`.
    async fn delete_ip_address(&self, ip: IpAddr, seen: &Value) -> Result<(), ApiError> {
        let revision = meta_str(seen, "resourceVersion")
            .parse::<u64>()
            .unwrap_or_default();
        let precondition = if revision > 0 {
            Precondition::ModRevision(revision)
        } else {
            Precondition::Exists
        };
        let outcome = self
            .store
            .write(Write::Delete {
                key: ip_key(ip),
                precondition,
            })
            .await?;
        if let svcnet_store::WriteOutcome::Committed { revision, .. } = outcome {
            self.cache.wait_for(revision).await;
        }
        Ok(())
    }

    /// Brings every ServiceCIDR where it should be (see the module docs). Answers how long until a
    /// deleted one may lose its finalizer, if one waits.
    pub async fn sync_service_cidrs(&self) -> Result<Option<Duration>, ApiError> {
        let Some(ipam) = self.ipam_or_none() else {
            return Ok(None);
        };
        let cidrs_rt = service_cidr_rt();
        let flags = self.kind_hooks.service_cidrs();
        if self.cached(cidrs_rt, None, servicecidr::DEFAULT_NAME).is_none() && !flags.is_empty() {
            let cidrs: Vec<String> = flags.iter().map(|c| c.trunc().to_string()).collect();
            self.ensure(
                cidrs_rt,
                None,
                json!({"apiVersion": "networking.k8s.io/v1", "kind": "ServiceCIDR",
                    "metadata": {"name": servicecidr::DEFAULT_NAME},
                    "spec": {"cidrs": cidrs}}),
            )
            .await?;
        }
        let all = ipam.service_cidrs();
        // The views hold the name and labels: nothing needs decoding.
        let addresses: Vec<IpAddr> = self
            .cache
            .list(&collection_prefix(ip_address_rt(), None), None)
            .0
            .iter()
            .map(|c| &*c.view)
            .filter(|o| allocator_made(o))
            .filter_map(|o| meta_str(o, "name").parse().ok())
            .collect();
        let mut wait = None;
        for obj in all.iter() {
            let name = meta_str(obj, "name").to_string();
            let finalizers: Vec<&str> = obj
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let has_finalizer = finalizers.contains(&servicecidr::FINALIZER);
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                if !has_finalizer {
                    self.set_cidr_finalizer(&name, true).await?;
                }
                self.set_cidr_ready(&name, "True", "", CIDR_READY).await?;
                continue;
            }
            if !has_finalizer {
                continue;
            }
            if cidr_in_use(obj, &all, &addresses) {
                self.set_cidr_ready(&name, "False", "Terminating", CIDR_BLOCKED)
                    .await?;
                continue;
            }
            let since = meta_str(obj, "deletionTimestamp")
                .parse::<jiff::Timestamp>()
                .ok()
                .and_then(|t| Duration::try_from(jiff::Timestamp::now().duration_since(t)).ok())
                .unwrap_or(CIDR_DELETION_GRACE);
            if since < CIDR_DELETION_GRACE {
                let left = CIDR_DELETION_GRACE - since;
                wait = Some(wait.map_or(left, |w: Duration| w.min(left)));
                continue;
            }
            self.set_cidr_finalizer(&name, false).await?;
        }
        Ok(wait)
    }

    /// Adds or removes the protection finalizer of ServiceCIDR `name`.
    async fn set_cidr_finalizer(&self, name: &str, present: bool) -> Result<(), ApiError> {
        let cidrs_rt = service_cidr_rt();
        let Some(cur) = self.cached(cidrs_rt, None, name) else {
            return Ok(());
        };
        let mut obj = (*cur).clone();
        let list = obj
            .pointer_mut("/metadata")
            .and_then(Value::as_object_mut)
            .map(|m| m.entry("finalizers").or_insert_with(|| json!([])));
        let Some(Value::Array(list)) = list else {
            return Ok(());
        };
        list.retain(|f| f != servicecidr::FINALIZER);
        if present {
            list.push(json!(servicecidr::FINALIZER));
        }
        let route = ResourceRoute::object(cidrs_rt, None, Some(name.to_string()));
        let params = Params::default();
        let ctx = WriteCtx::internal(&route, &params, MANAGER);
        match self.update(&ctx, obj).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sets the `Ready` condition of ServiceCIDR `name` unless it already says this.
    async fn set_cidr_ready(
        &self,
        name: &str,
        status: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), ApiError> {
        let cidrs_rt = service_cidr_rt();
        let Some(cur) = self.cached(cidrs_rt, None, name) else {
            return Ok(());
        };
        let conditions: Vec<Value> = cur
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let same = conditions.iter().any(|c| {
            c.get("type") == Some(&json!("Ready"))
                && c.get("status") == Some(&json!(status))
                && c.get("reason").and_then(Value::as_str).unwrap_or_default() == reason
                && c.get("message").and_then(Value::as_str).unwrap_or_default() == message
        });
        if same {
            return Ok(());
        }
        let mut rest: Vec<Value> = conditions
            .into_iter()
            .filter(|c| c.get("type") != Some(&json!("Ready")))
            .collect();
        rest.push(
            json!({"type": "Ready", "status": status, "reason": reason, "message": message,
            "lastTransitionTime": crate::handlers::now_rfc3339()}),
        );
        let mut obj = (*cur).clone();
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), json!({"conditions": rest}));
        }
        let mut route = ResourceRoute::object(cidrs_rt, None, Some(name.to_string()));
        route.subresource = Some("status".into());
        let params = Params::default();
        let ctx = WriteCtx::internal(&route, &params, MANAGER);
        match self.update(&ctx, obj).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == 404 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// Whether deleting ServiceCIDR `obj` would orphan an allocated address (kube's `canDeleteCIDR`,
/// negated): no other ServiceCIDR contains all of its ranges, and some address lies in it and in no
/// other ServiceCIDR.
fn cidr_in_use(obj: &Value, all: &[Value], addresses: &[IpAddr]) -> bool {
    let name = meta_str(obj, "name");
    let others: Vec<IpNet> = all
        .iter()
        .filter(|o| meta_str(o, "name") != name)
        .flat_map(cidrs_of)
        .collect();
    let mine = cidrs_of(obj);
    if mine.iter().all(|c| {
        others
            .iter()
            .any(|o| o.contains(&c.network()) && o.prefix_len() <= c.prefix_len())
    }) {
        return false;
    }
    addresses
        .iter()
        .any(|ip| mine.iter().any(|c| c.contains(ip)) && !others.iter().any(|o| o.contains(ip)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(name: &str, cidrs: &[&str]) -> Value {
        json!({"metadata": {"name": name}, "spec": {"cidrs": cidrs}})
    }

    fn cached(key: &str, revision: Revision, obj: &Value) -> Cached {
        Cached {
            key: key.into(),
            revision,
            view: Arc::new(Value::Null),
            json: serde_json::to_vec(obj).unwrap().into(),
        }
    }

    fn service(name: &str, ip: &str, node_port: Option<i32>) -> Value {
        json!({"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "uid": "u", "resourceVersion": "5",
                "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"a": "b"},
                "managedFields": [{"manager": "kubectl"}]},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "selector": {"app": "x"},
                "ports": [{"port": 80, "nodePort": node_port}], "healthCheckNodePort": 30001},
            "status": {"loadBalancer": {}}})
    }

    /// A trimmed Service keeps what the pass reads, so it holds what the whole one holds.
    #[test]
    fn trimmed_services_hold_what_the_whole_ones_do() {
        let whole = service("a", "10.0.0.1", Some(30000));
        let t = trim(&whole, SERVICE_PARTS);
        assert_eq!(held(&t), held(&whole));
        assert_eq!(Parent::of(&t), Parent::of(&whole));
        assert_eq!(t["metadata"]["uid"], "u");
        assert!(t["metadata"].get("labels").is_none() && t.get("status").is_none());
        assert!(t["spec"].get("selector").is_none());
        let ip = json!({"apiVersion": "networking.k8s.io/v1", "kind": "IPAddress",
            "metadata": {"name": "10.0.0.1", "resourceVersion": "6",
                "labels": {ipaddress::LABEL_MANAGED_BY: ipaddress::MANAGED_BY_ALLOCATOR}},
            "spec": {"parentRef": {"group": "", "resource": "services", "namespace": "default", "name": "a"}}});
        let t = trim(&ip, ADDRESS_PARTS);
        assert!(allocator_made(&t));
        assert!(Parent::of(&whole).owns(&t));
        assert_eq!(meta_str(&t, "resourceVersion"), "6");
    }

    /// A pass decodes an object again only when its revision changed, and forgets deleted ones.
    #[test]
    fn trimmed_objects_are_reused_until_they_change() {
        let mut memo = Trimmed::default();
        let a1 = cached("/s/a", 1, &service("a", "10.0.0.1", None));
        let b1 = cached("/s/b", 2, &service("b", "10.0.0.2", None));
        let first = memo.refresh(vec![a1.clone(), b1], SERVICE_PARTS);
        let b3 = cached("/s/b", 3, &service("b", "10.0.0.3", None));
        let second = memo.refresh(vec![a1.clone(), b3], SERVICE_PARTS);
        assert!(Arc::ptr_eq(&first[0], &second[0]), "unchanged: not decoded again");
        assert_eq!(held(&second[1]).ips.first().unwrap().to_string(), "10.0.0.3");
        let third = memo.refresh(vec![a1], SERVICE_PARTS);
        assert_eq!(third.len(), 1);
        assert_eq!(memo.by_key.len(), 1, "a deleted object is forgotten");
    }

    #[test]
    fn a_cidr_is_in_use_only_while_an_address_lies_in_it_alone() {
        let a = cidr("a", &["10.0.0.0/24"]);
        let b = cidr("b", &["10.0.1.0/24"]);
        let wide = cidr("wide", &["10.0.0.0/16"]);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        let all = vec![a.clone(), b.clone()];
        assert!(cidr_in_use(&a, &all, &[ip]));
        assert!(!cidr_in_use(&b, &all, &[ip]));
        assert!(!cidr_in_use(&a, &all, &[]));
        // A wider ServiceCIDR still holds the address: deleting the narrow one orphans nothing.
        assert!(!cidr_in_use(&a, &[a.clone(), wide], &[ip]));
    }
}
