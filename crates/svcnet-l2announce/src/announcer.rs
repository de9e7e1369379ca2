//! The election and the announcement, one group of Services at a time, on a short tick.
//!
//! Services that share an ingress address (`svcnet.io/allow-shared-ip`) are one group ([`crate::group`]);
//! a Service that shares nothing is a group of its own. For every group there is one
//! `coordination.k8s.io/v1` Lease, `svcnet-lb-<service>` named after the group's first Service and in
//! its namespace (owned by that Service, so it goes with it), whose holder is the node that answers
//! ARP and NDP for all the group's addresses: Services sharing an address are answered for by one node
//! and fail over together. The rules are client-go's leader election
//! (`tools/leaderelection`), per Service:
//!
//! - a candidate judges expiry by its own clock: a Lease is expired when its record has not changed for
//!   `leaseDurationSeconds` since this node *saw* it change (never by comparing clocks across nodes);
//! - the holder renews every retry period; if it cannot renew for the renew deadline (shorter than the
//!   Lease) it stops announcing, so two nodes never answer at once while their clocks agree on seconds;
//! - candidates write with the resourceVersion they saw, so of two racing candidates one wins.
//!
//! Spread: the candidates do not race blindly. Each ranks the eligible nodes for the group by
//! rendezvous hashing ([`crate::rank`]) and waits `rank × retry period` after the Lease became free
//! before trying, so the preferred node takes a new Service and, when a holder dies, the next in its
//! order takes over; Services are spread over the nodes instead of all landing on the first to start.
//! A node that already answers for an address of a group whose Lease is new (its first Service was
//! deleted, or a Service sorting before it joined; the Services' annotation names it) goes first and
//! the others wait a lease duration longer, so the address does not move.
//!
//! Visible: every new holder records a `nodeAssigned` Event on each Service of the group (MetalLB's
//! reason), and the holder keeps the annotation [`NODE_ANNOTATION`] on them naming itself (as kube-vip's
//! `kube-vip.io/vipHost` does), so `kubectl describe svc` shows who announces; a node that stops holding
//! removes the annotation if it still names it, conditionally on the resourceVersion it saw, so it never
//! removes the next holder's.
//!
//! Eligible: Ready nodes not labelled `node.kubernetes.io/exclude-from-external-load-balancers` and
//! matching the agent's `--lb-node-selector` (if any); under
//! `externalTrafficPolicy: Local` only those with a ready endpoint of every such Service of the group. A holder that stops
//! being eligible releases the Lease at once (holder cleared) so the next node need not wait for expiry.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use svcnet_controllers::events::{Involved, Recorder};
use tracing::{debug, info, warn};

use crate::eligible::{lb_ips, local_policy, node_eligible, nodes_with_ready_endpoints};
use crate::group::{self, Group, Key};
use crate::local_route::LocalRoutes;
use crate::metrics::Metrics;
use crate::rank;
use crate::responder::Responder;
use crate::{L2Config, LEASE_LABEL, MANAGER};

/// The Event reason on the Service when a node starts announcing it (MetalLB's word for the same).
pub const REASON: &str = "nodeAssigned";
/// The annotation on a LoadBalancer Service naming the node that answers for its IPs (shared with the
/// API server's NodeRestriction, which lets a node write only this, naming itself).
pub use svcnet_api::lb_announce::NODE_ANNOTATION;
/// How many gratuitous ARPs (unsolicited neighbour advertisements) a new holder sends per IP, and how
/// far apart. Spread over seconds, as MetalLB (every 1.1 s for 5 s) and keepalived do, not sent in one
/// burst: a neighbour that cannot hear them for a moment (its link just came up and its IPv6 stack is
/// not configured yet, so multicast to all nodes has no route there and is dropped; a switch still
/// learning; a lost frame) still hears a later one.
const GARPS: u8 = 5;
const GARP_INTERVAL: Duration = Duration::from_secs(1);

/// The Lease of Service `name`.
pub fn lease_name(service: &str) -> String {
    format!("{}{service}", svcnet_api::lb_announce::LEASE_PREFIX)
}

/// This node's knowledge of one group's Lease.
struct Entry {
    /// When this node first saw the Service (a Lease that does not exist is free since then).
    seen: Instant,
    /// The Lease record's resourceVersion and when this node saw it first.
    observed: Option<(String, Instant)>,
    /// No attempt to acquire before this (after a lost race or an error).
    next_try: Instant,
    /// Whether a failed write was logged as a warning since the last success (one per outage, not one
    /// per retry period).
    warned: bool,
    held: Option<Held>,
}

struct Held {
    /// The Lease as this node last wrote it.
    lease: Lease,
    /// The last successful write.
    renewed: Instant,
    /// The last attempt.
    wrote: Instant,
    /// The announcements still to send, by address: how many, and when the next is due.
    announce: BTreeMap<IpAddr, (u8, Instant)>,
    /// The group's Services that were told (by a `nodeAssigned` Event) that this node announces them,
    /// and the addresses announced: a Service or an address joining a held group gets its Event and
    /// its gratuitous ARP too.
    told: BTreeSet<Key>,
    ips: BTreeSet<IpAddr>,
}

/// The watched objects the announcer reads.
pub struct Stores {
    /// Every Service.
    pub services: Store<Service>,
    /// Every Node.
    pub nodes: Store<Node>,
    /// Every EndpointSlice.
    pub slices: Store<EndpointSlice>,
    /// The announcement Leases (by label).
    pub leases: Store<Lease>,
}

/// The announcer of one node.
pub struct Announcer {
    cfg: L2Config,
    client: kube::Client,
    responders: Vec<Arc<Responder>>,
    routes: Option<LocalRoutes>,
    stores: Stores,
    /// By group (its first Service).
    entries: HashMap<Key, Entry>,
    /// What the responders answer for (and has local routes) now.
    announced: BTreeSet<IpAddr>,
    /// The last write of each Service's [`NODE_ANNOTATION`] (at most one per retry period, so a watch
    /// that has not caught up yet does not cause a write per tick).
    annotated: HashMap<Key, Instant>,
    metrics: Metrics,
}

fn holder(l: &Lease) -> Option<&str> {
    l.spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

fn key_of(svc: &Service) -> Key {
    (
        svc.metadata.namespace.clone().unwrap_or_default(),
        svc.metadata.name.clone().unwrap_or_default(),
    )
}

/// The node the Service's annotation names as announcing it.
fn announcing_node(svc: &Service) -> Option<&String> {
    svc.metadata.annotations.as_ref()?.get(NODE_ANNOTATION)
}

fn duration_of(l: &Lease) -> Duration {
    let secs = l
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(1);
    Duration::from_secs(secs.max(1) as u64)
}

/// Someone else wrote the Lease first (409), or it is gone (404): not an error of ours.
fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409 || s.code == 404)
}

impl Announcer {
    /// An announcer over `stores`, answering through `responders` (one per interface); `routes` makes
    /// held IPs local.
    pub fn new(
        cfg: L2Config,
        client: kube::Client,
        responders: Vec<Arc<Responder>>,
        routes: Option<LocalRoutes>,
        stores: Stores,
        metrics: Metrics,
    ) -> Self {
        Announcer {
            cfg,
            client,
            responders,
            routes,
            stores,
            entries: HashMap::new(),
            announced: BTreeSet::new(),
            annotated: HashMap::new(),
            metrics,
        }
    }

    fn lease_seconds(&self) -> i32 {
        self.cfg.lease_duration.as_secs_f64().ceil().max(1.0) as i32
    }

    /// The Lease object this node writes for `svc`.
    fn lease_for(&self, svc: &Service, prev: Option<&Lease>, holder: Option<&str>) -> Lease {
        let now = MicroTime(jiff::Timestamp::now());
        let prev_spec = prev.and_then(|l| l.spec.clone()).unwrap_or_default();
        let changed = prev.and_then(self::holder) != holder;
        let transitions = prev_spec.lease_transitions.unwrap_or(0) + i32::from(changed && prev.is_some());
        let meta = &svc.metadata;
        Lease {
            metadata: ObjectMeta {
                name: Some(lease_name(meta.name.as_deref().unwrap_or_default())),
                namespace: meta.namespace.clone(),
                resource_version: prev.and_then(|l| l.metadata.resource_version.clone()),
                labels: Some(BTreeMap::from([(LEASE_LABEL.0.into(), LEASE_LABEL.1.into())])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "v1".into(),
                    kind: "Service".into(),
                    name: meta.name.clone().unwrap_or_default(),
                    uid: meta.uid.clone().unwrap_or_default(),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(if holder.is_some() { self.lease_seconds() } else { 1 }),
                acquire_time: if changed {
                    Some(now.clone())
                } else {
                    prev_spec.acquire_time
                },
                renew_time: Some(now),
                lease_transitions: Some(transitions),
                ..Default::default()
            }),
        }
    }

    /// One round over every group of Services: renew, release or acquire Leases, then make the
    /// responders and the local routes match what this node holds.
    pub async fn tick(&mut self) {
        let now = Instant::now();
        let me = self.cfg.node_name.clone();
        let lease_seconds = self.lease_seconds();
        let ready: BTreeSet<String> = self
            .stores
            .nodes
            .state()
            .iter()
            .filter(|n| node_eligible(n))
            .filter(|n| {
                let none = BTreeMap::new();
                let labels = n.metadata.labels.as_ref().unwrap_or(&none);
                self.cfg.node_selector.matches(labels)
            })
            .filter_map(|n| n.metadata.name.clone())
            .collect();
        let services = self.stores.services.state();
        let groups = group::groups(services.iter().filter_map(|svc| {
            let ips = lb_ips(svc);
            (!ips.is_empty()).then(|| (key_of(svc), ips))
        }));
        // Groups that are no more (their Services gone or no longer LoadBalancers with an address, or
        // merged into a group whose first Service is another): stop now, and release a Lease held
        // (one left by a type change or a merge; a deleted Service's goes with it).
        let current: BTreeSet<&Key> = groups.iter().map(|g| &g.key).collect();
        let stale: Vec<Key> = self
            .entries
            .keys()
            .filter(|k| !current.contains(k))
            .cloned()
            .collect();
        for key in stale {
            if let Some(Entry { held: Some(h), .. }) = self.entries.remove(&key) {
                let (ns, name) = (&key.0, &key.1);
                info!(service = %format!("{ns}/{name}"), "no longer the first Service of a LoadBalancer IP's group: stopped announcing for its Lease");
                if let Some(svc) = self.stores.services.get(&ObjectRef::new(name).within(ns)) {
                    self.release(&svc, &h.lease).await;
                }
            }
        }
        let mut want = BTreeSet::new();
        let mut garps = Vec::new();
        // `nodeAssigned` Events, recorded once the addresses are answered for.
        let mut events: Vec<(Key, String)> = Vec::new();
        let interfaces = self.cfg.interfaces.join(", ");
        let mut slices: Option<Vec<Arc<EndpointSlice>>> = None;
        for group in &groups {
            let key = group.key.clone();
            let (ns, name) = (&key.0, &key.1);
            let Some(svc) = self.stores.services.get(&ObjectRef::new(name).within(ns)) else {
                continue;
            };
            let ips = &group.ips;
            let mut eligible = ready.clone();
            for (sns, sname) in &group.services {
                let Some(member) = self.stores.services.get(&ObjectRef::new(sname).within(sns)) else {
                    continue;
                };
                if local_policy(&member) {
                    // The slices are read once per round, and only if some Service has the Local policy.
                    let all = slices.get_or_insert_with(|| self.stores.slices.state());
                    let local = nodes_with_ready_endpoints(sns, sname, all.iter().map(|s| &**s));
                    eligible.retain(|n| local.contains(n));
                }
            }
            let me_eligible = eligible.contains(&me);
            let lease = self
                .stores
                .leases
                .get(&ObjectRef::new(&lease_name(name)).within(ns));
            let entry = self.entries.entry(key.clone()).or_insert_with(|| Entry {
                seen: now,
                observed: None,
                next_try: now,
                warned: false,
                held: None,
            });
            match lease.as_deref().and_then(|l| l.metadata.resource_version.clone()) {
                Some(rv) if entry.observed.as_ref().is_none_or(|o| o.0 != rv) => {
                    entry.observed = Some((rv, now))
                }
                Some(_) => {}
                None => entry.observed = None,
            }

            if let Some(h) = entry.held.as_mut() {
                if !me_eligible {
                    let lease = h.lease.clone();
                    entry.held = None;
                    info!(service = %format!("{ns}/{name}"), "this node is no longer eligible: released the Lease");
                    self.metrics.releases.inc();
                    self.release(&svc, &lease).await;
                    continue;
                }
                if now.duration_since(h.renewed) >= self.cfg.renew_deadline {
                    warn!(service = %format!("{ns}/{name}"), "could not renew the Lease within the renew deadline: stopped announcing");
                    self.metrics.losses.inc();
                    entry.held = None;
                    continue;
                }
                if now.duration_since(h.wrote) >= self.cfg.retry_period {
                    h.wrote = now;
                    let mut next = h.lease.clone();
                    if let Some(spec) = next.spec.as_mut() {
                        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
                        spec.lease_duration_seconds = Some(lease_seconds);
                    }
                    let api: Api<Lease> = Api::namespaced(self.client.clone(), ns);
                    match api
                        .replace(&lease_name(name), &PostParams::default(), &next)
                        .await
                    {
                        Ok(l) => {
                            h.lease = l;
                            h.renewed = Instant::now();
                        }
                        Err(e) if is_conflict(&e) => {
                            info!(service = %format!("{ns}/{name}"), "the Lease was taken or removed: stopped announcing");
                            self.metrics.losses.inc();
                            entry.held = None;
                            continue;
                        }
                        Err(e) => debug!(service = %format!("{ns}/{name}"), error = %e, "renewing the Lease"),
                    }
                }
                want.extend(ips.iter().copied());
                // An address joining a held group is announced like one taken over.
                for ip in ips.difference(&h.ips) {
                    h.announce.insert(*ip, (GARPS, now));
                }
                h.announce.retain(|ip, _| ips.contains(ip));
                due_announcements(&mut h.announce, now, &mut garps);
                h.ips.clone_from(ips);
                h.told.retain(|k| group.services.contains(k));
                for member in &group.services {
                    if h.told.insert(member.clone()) {
                        events.push((
                            member.clone(),
                            assigned_message(&me, &interfaces, group, member, None),
                        ));
                    }
                }
                continue;
            }

            if !me_eligible || now < entry.next_try {
                continue;
            }
            // When the Lease became free, and whose it was.
            let (mut free_at, prev) = match lease.as_deref() {
                None => (entry.seen, None),
                Some(l) => {
                    let seen = entry.observed.as_ref().map_or(now, |o| o.1);
                    match holder(l) {
                        None => (seen, None),
                        // Ours from before this agent started: take it straight back.
                        Some(h) if h == me => (seen, None),
                        Some(h) => (seen + duration_of(l), Some(h.to_string())),
                    }
                }
            };
            let nodes: Vec<&str> = eligible.iter().map(String::as_str).collect();
            let Some(mut rank) = rank::rank(ns, name, &nodes, &me, prev.as_deref()) else {
                continue;
            };
            if prev.is_none() {
                // A new Lease for addresses a node answers for already (under the group's previous
                // Lease: its first Service was deleted, or one sorting before it joined): that node goes
                // first, the others wait a lease duration longer, so the addresses do not move.
                let incumbent = group.services.iter().find_map(|(sns, sname)| {
                    let member = self.stores.services.get(&ObjectRef::new(sname).within(sns))?;
                    announcing_node(&member)
                        .filter(|n| eligible.contains(*n))
                        .cloned()
                });
                if ips.iter().any(|ip| self.announced.contains(ip)) || incumbent.as_deref() == Some(&me) {
                    rank = 0;
                } else if incumbent.is_some() {
                    // As if the incumbent held a Lease: the others give it a whole lease duration (a busy
                    // node can be slow to see the new group), then their usual order.
                    rank += 1;
                    free_at += self.cfg.lease_duration;
                }
            }
            if now < free_at + self.cfg.retry_period * rank as u32 {
                continue;
            }
            let api: Api<Lease> = Api::namespaced(self.client.clone(), ns);
            let obj = self.lease_for(&svc, lease.as_deref(), Some(&me));
            let written = match lease {
                Some(_) => api.replace(&lease_name(name), &PostParams::default(), &obj).await,
                None => api.create(&PostParams::default(), &obj).await,
            };
            let entry = self.entries.get_mut(&key).expect("entry inserted above");
            match written {
                Ok(l) => {
                    entry.warned = false;
                    let took = Instant::now();
                    self.metrics.acquisitions.inc();
                    if prev.is_some() {
                        // From the old holder's last renewal as this node saw it: how long nobody announced.
                        let last = entry.observed.as_ref().map_or(took, |o| o.1);
                        self.metrics.takeovers.inc();
                        self.metrics
                            .takeover_seconds
                            .observe(took.duration_since(last).as_secs_f64());
                    }
                    entry.held = Some(Held {
                        lease: l,
                        renewed: took,
                        wrote: took,
                        announce: ips
                            .iter()
                            .map(|ip| (*ip, (GARPS - 1, took + GARP_INTERVAL)))
                            .collect(),
                        told: group.services.iter().cloned().collect(),
                        ips: ips.clone(),
                    });
                    want.extend(ips.iter().copied());
                    garps.extend(ips.iter().copied());
                    let ip_list = ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
                    info!(service = %format!("{ns}/{name}"), ips = %ip_list, previous = prev.as_deref().unwrap_or("-"), services = group.services.len(), "acquired the Lease: announcing");
                    for member in &group.services {
                        events.push((
                            member.clone(),
                            assigned_message(&me, &interfaces, group, member, prev.as_deref()),
                        ));
                    }
                }
                Err(e) => {
                    entry.next_try = now + self.cfg.retry_period;
                    if is_conflict(&e) {
                        debug!(service = %format!("{ns}/{name}"), "another node acquired the Lease first");
                    } else if !std::mem::replace(&mut entry.warned, true) {
                        warn!(service = %format!("{ns}/{name}"), error = %e, "could not write the Lease; retrying");
                    } else {
                        debug!(service = %format!("{ns}/{name}"), error = %e, "could not write the Lease");
                    }
                }
            }
        }
        let held = self.entries.values().filter(|e| e.held.is_some()).count();
        self.metrics.held.set(held as i64);
        self.apply(want, garps).await;
        for ((ns, name), message) in events {
            if let Some(svc) = self.stores.services.get(&ObjectRef::new(&name).within(&ns)) {
                self.record_event(&svc, message);
            }
        }
        // After the data plane: a takeover's ARP does not wait for the Service's annotation.
        self.annotate(now, &services, &groups).await;
    }

    /// Makes each Service's [`NODE_ANNOTATION`] name this node where this node holds its group's
    /// Lease, and removes it where it names this node but this node does not (any more).
    async fn annotate(&mut self, now: Instant, services: &[Arc<Service>], groups: &[Group]) {
        let me = self.cfg.node_name.clone();
        let mine: BTreeSet<&Key> = groups
            .iter()
            .filter(|g| self.entries.get(&g.key).is_some_and(|e| e.held.is_some()))
            .flat_map(|g| g.services.iter())
            .collect();
        let mut writes = Vec::new();
        for svc in services {
            let key = key_of(svc);
            let shown = announcing_node(svc);
            let held = mine.contains(&key);
            if (held && shown != Some(&me)) || (!held && shown == Some(&me)) {
                let due = self
                    .annotated
                    .get(&key)
                    .is_none_or(|t| now.duration_since(*t) >= self.cfg.retry_period);
                if due {
                    self.annotated.insert(key, now);
                    writes.push((svc.clone(), held));
                }
            }
        }
        let retry = self.cfg.retry_period;
        self.annotated.retain(|_, t| now.duration_since(*t) < retry);
        for (svc, held) in writes {
            let ns = svc.metadata.namespace.as_deref().unwrap_or("default");
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            let patch = if held {
                serde_json::json!({"metadata": {"annotations": {NODE_ANNOTATION: me}}})
            } else {
                // Only the version that names this node: if the next holder already wrote its own
                // name, this is a conflict and changes nothing.
                serde_json::json!({"metadata": {
                    "resourceVersion": svc.metadata.resource_version,
                    "annotations": {NODE_ANNOTATION: null}
                }})
            };
            let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
            match api
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => debug!(service = %format!("{ns}/{name}"), held, "annotated the announcing node"),
                Err(e) => {
                    debug!(service = %format!("{ns}/{name}"), error = %e, "annotating the announcing node (retried)")
                }
            }
        }
    }

    /// Makes the responders and the local routes hold exactly `want`, then sends the gratuitous ARPs
    /// and unsolicited neighbour advertisements.
    async fn apply(&mut self, want: BTreeSet<IpAddr>, garps: Vec<IpAddr>) {
        if want != self.announced {
            let added: Vec<IpAddr> = want.difference(&self.announced).copied().collect();
            let removed: Vec<IpAddr> = self.announced.difference(&want).copied().collect();
            // Stop answering first and deliver first: a removed IP is not answered a moment longer than
            // needed, and an added one is not answered before the node takes its traffic.
            if !removed.is_empty() {
                let kept: BTreeSet<IpAddr> = self.announced.intersection(&want).copied().collect();
                for r in &self.responders {
                    r.set(kept.clone());
                }
            }
            if let Some(routes) = &self.routes {
                for ip in &added {
                    routes.add(*ip).await;
                }
                for ip in &removed {
                    routes.del(*ip).await;
                }
            }
            for r in &self.responders {
                r.set(want.clone());
            }
            self.metrics.announced_ips.set(want.len() as i64);
            for ip in &removed {
                info!(%ip, "stopped answering ARP/NDP");
            }
            self.announced = want;
        }
        for ip in garps {
            for r in &self.responders {
                r.gratuitous(ip);
            }
        }
    }

    /// Clears the Lease's holder so the next node takes over without waiting for it to expire.
    async fn release(&self, svc: &Service, lease: &Lease) {
        let api: Api<Lease> = Api::namespaced(
            self.client.clone(),
            svc.metadata.namespace.as_deref().unwrap_or("default"),
        );
        let obj = self.lease_for(svc, Some(lease), None);
        let name = obj.metadata.name.clone().unwrap_or_default();
        if let Err(e) = api.replace(&name, &PostParams::default(), &obj).await {
            debug!(lease = %name, error = %e, "releasing the Lease (it expires by itself)");
        }
    }

    /// An Event on the Service, written in the background (the next Services' Leases do not wait for it).
    fn record_event(&self, svc: &Service, message: String) {
        let client = self.client.clone();
        let meta = svc.metadata.clone();
        tokio::spawn(async move {
            let mut recorder = Recorder::new(client, MANAGER);
            recorder
                .record(&Involved::of("v1", "Service", &meta), "Normal", REASON, &message)
                .await;
        });
    }
}

/// Moves into `out` the addresses whose next announcement is due at `now`, schedules their next one
/// [`GARP_INTERVAL`] later and forgets those announced often enough.
fn due_announcements(schedule: &mut BTreeMap<IpAddr, (u8, Instant)>, now: Instant, out: &mut Vec<IpAddr>) {
    schedule.retain(|ip, (left, next)| {
        if now >= *next {
            out.push(*ip);
            *left = left.saturating_sub(1);
            *next = now + GARP_INTERVAL;
        }
        *left > 0
    });
}

/// The `nodeAssigned` Event's message for `member` of `group`, which node `me` now announces on
/// `interfaces` (taking over from `prev`).
fn assigned_message(me: &str, interfaces: &str, group: &Group, member: &Key, prev: Option<&str>) -> String {
    let ips = &group.ips;
    let ip_list = ips.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ");
    let how = match (ips.iter().any(IpAddr::is_ipv4), ips.iter().any(IpAddr::is_ipv6)) {
        (true, true) => "ARP, NDP",
        (false, true) => "NDP",
        _ => "ARP",
    };
    let from = prev.map(|p| format!("; took over from {p}")).unwrap_or_default();
    let others: Vec<String> = group
        .services
        .iter()
        .filter(|k| *k != member)
        .map(|(n, s)| format!("{n}/{s}"))
        .collect();
    let shared = if others.is_empty() {
        String::new()
    } else {
        format!("; shared with {}", others.join(", "))
    };
    format!("announcing {ip_list} from node {me:?} (interface {interfaces}, {how}){from}{shared}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A takeover's announcements go out one per [`GARP_INTERVAL`] on the 100 ms ticks, [`GARPS`] in
    /// all (the first at the takeover itself), then no more.
    #[test]
    fn announcements_are_spread_over_seconds() {
        let t0 = Instant::now();
        let ip: IpAddr = "fd31::200".parse().unwrap();
        // As on acquiring: the first is sent with the Lease, the rest are scheduled.
        let mut schedule = BTreeMap::from([(ip, (GARPS - 1, t0 + GARP_INTERVAL))]);
        let mut sent = vec![Duration::ZERO];
        for tick in 1..=100u32 {
            let now = t0 + Duration::from_millis(100) * tick;
            let mut out = Vec::new();
            due_announcements(&mut schedule, now, &mut out);
            assert!(out.iter().all(|i| *i == ip), "{out:?}");
            sent.extend(out.iter().map(|_| now - t0));
        }
        let ms: Vec<u128> = sent.iter().map(Duration::as_millis).collect();
        assert_eq!(ms, [0, 1000, 2000, 3000, 4000]);
        assert_eq!(sent.len(), usize::from(GARPS));
        assert!(schedule.is_empty(), "done: {schedule:?}");
    }
}
