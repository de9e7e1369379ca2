//! The incremental computation: watched objects in, changes to the service-port table out.
//!
//! State is kept per Service (`SvcKey`): its parsed spec, its slices, and the ports last reported. An
//! event marks its Service dirty; [`Model::take_changes`] recomputes only dirty Services and compares
//! with what was reported, so the output is the minimal diff. [`Model::compute_all`] recomputes the world
//! from the same inputs, which the tests use to check that the incremental path never drifts.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::types::{
    BALANCE_ANNOTATION, Balance, Change, Endpoint, Name, Protocol, ServicePort, ServicePortName,
};

/// Services with this label belong to another proxy; kube-proxy (and svcnet) leave them alone.
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";
/// Services with this label are not proxied either (kube-proxy's informer selects
/// `!service.kubernetes.io/service-proxy-name,!service.kubernetes.io/headless`).
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";
/// The EndpointSlice annotation with the time of the change that caused it (network programming latency).
pub const TRIGGER_TIME_ANNOTATION: &str = "endpoints.kubernetes.io/last-change-trigger-time";
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const TOPOLOGY_MODE_ANNOTATION: &str = "service.kubernetes.io/topology-mode";
const TOPOLOGY_HINTS_ANNOTATION: &str = "service.kubernetes.io/topology-aware-hints";
/// Kubernetes' default `sessionAffinityConfig.clientIP.timeoutSeconds` (3 hours).
const DEFAULT_AFFINITY_SECONDS: i32 = 10800;

/// What the model needs to know about the node it runs for.
#[derive(Debug, Clone, Default)]
pub struct ModelConfig {
    /// This node's name: endpoints with this `nodeName` are local.
    pub node_name: String,
    /// This node's `topology.kubernetes.io/zone`, for topology hints.
    pub node_zone: Option<String>,
    /// Services (namespace, name) the data plane must leave alone, e.g. `kube-system/kube-dns` when the
    /// node agent serves DNS on its ClusterIP itself.
    pub ignore: Vec<(String, String)>,
}

/// One batch of output.
#[derive(Debug, Default)]
pub struct Changes {
    /// The changed ports, in a stable order.
    pub changes: Vec<Change>,
    /// `last-change-trigger-time`s of the EndpointSlices behind this batch (for
    /// `network_programming_duration_seconds`).
    pub trigger_times: Vec<SystemTime>,
}

type SvcKey = (Name, Name);

/// A Service as the data plane sees it (only what matters for forwarding).
#[derive(Debug, Clone)]
struct SvcInfo {
    cluster_ips: Vec<IpAddr>,
    ports: Vec<PortInfo>,
    external_ips: Vec<IpAddr>,
    lb_ips: Vec<IpAddr>,
    source_ranges: Vec<IpNet>,
    affinity: Option<Duration>,
    internal_local: bool,
    external_local: bool,
    health_check_node_port: Option<u16>,
    balance: Option<Balance>,
    topology: bool,
}

#[derive(Debug, Clone)]
struct PortInfo {
    name: Name,
    protocol: Protocol,
    port: u16,
    node_port: Option<u16>,
}

/// An EndpointSlice as the data plane sees it.
#[derive(Debug, Clone)]
struct SliceInfo {
    owner: SvcKey,
    ports: Vec<(Name, Protocol, u16)>,
    endpoints: Vec<RawEndpoint>,
}

#[derive(Debug, Clone)]
struct RawEndpoint {
    ip: IpAddr,
    ready: bool,
    serving: bool,
    terminating: bool,
    node: Option<Name>,
    zone: Option<Name>,
    zone_hints: Option<Vec<Name>>,
}

/// The service model of one node. See the crate docs.
#[derive(Debug, Default)]
pub struct Model {
    cfg: ModelConfig,
    ignore: HashSet<(String, String)>,
    services: HashMap<SvcKey, SvcInfo>,
    /// Slices by (namespace, slice name).
    slices: HashMap<SvcKey, SliceInfo>,
    /// Slice names by owning Service.
    slices_of: HashMap<SvcKey, BTreeSet<Name>>,
    /// What was last reported, by Service.
    reported: HashMap<SvcKey, BTreeMap<ServicePortName, Arc<ServicePort>>>,
    dirty: BTreeSet<SvcKey>,
    triggers: Vec<SystemTime>,
}

fn key(ns: &str, name: &str) -> SvcKey {
    (Arc::from(ns), Arc::from(name))
}

impl Model {
    /// An empty model for a node.
    pub fn new(cfg: ModelConfig) -> Model {
        let ignore = cfg.ignore.iter().cloned().collect();
        Model {
            cfg,
            ignore,
            ..Default::default()
        }
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.cfg.node_name
    }

    /// Sets this node's zone (from its `topology.kubernetes.io/zone` label); every Service is recomputed.
    pub fn set_node_zone(&mut self, zone: Option<String>) {
        if self.cfg.node_zone != zone {
            self.cfg.node_zone = zone;
            self.dirty.extend(self.services.keys().cloned());
        }
    }

    /// A Service was added or changed.
    pub fn upsert_service(&mut self, svc: &Service) {
        let (Some(ns), Some(name)) = (svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref()) else {
            return;
        };
        let k = key(ns, name);
        match self.parse_service(svc) {
            Some(info) => {
                self.services.insert(k.clone(), info);
            }
            None => {
                self.services.remove(&k);
            }
        }
        self.dirty.insert(k);
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        let k = key(namespace, name);
        self.services.remove(&k);
        self.dirty.insert(k);
    }

    /// An EndpointSlice was added or changed.
    pub fn upsert_slice(&mut self, slice: &EndpointSlice) {
        let (Some(ns), Some(name)) = (
            slice.metadata.namespace.as_deref(),
            slice.metadata.name.as_deref(),
        ) else {
            return;
        };
        let sk = key(ns, name);
        self.drop_slice(&sk);
        let Some(info) = parse_slice(ns, slice) else {
            return;
        };
        if let Some(t) = slice
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(TRIGGER_TIME_ANNOTATION))
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(SystemTime::from)
        {
            self.triggers.push(t);
        }
        self.slices_of
            .entry(info.owner.clone())
            .or_default()
            .insert(sk.1.clone());
        self.dirty.insert(info.owner.clone());
        self.slices.insert(sk, info);
    }

    /// An EndpointSlice was deleted.
    pub fn delete_slice(&mut self, namespace: &str, name: &str) {
        self.drop_slice(&key(namespace, name));
    }

    fn drop_slice(&mut self, sk: &SvcKey) {
        if let Some(old) = self.slices.remove(sk) {
            if let Some(set) = self.slices_of.get_mut(&old.owner) {
                set.remove(&sk.1);
                if set.is_empty() {
                    self.slices_of.remove(&old.owner);
                }
            }
            self.dirty.insert(old.owner);
        }
    }

    /// Forgets every object (before a relist); the next [`Model::take_changes`] reports what the relisted
    /// objects change.
    pub fn clear_inputs(&mut self) {
        self.dirty.extend(self.services.keys().cloned());
        self.dirty.extend(self.slices_of.keys().cloned());
        self.services.clear();
        self.slices.clear();
        self.slices_of.clear();
    }

    /// Whether changes are waiting.
    pub fn is_dirty(&self) -> bool {
        !self.dirty.is_empty()
    }

    /// Recomputes the Services touched since the last call and returns what changed.
    pub fn take_changes(&mut self) -> Changes {
        let mut out = Changes {
            trigger_times: std::mem::take(&mut self.triggers),
            ..Default::default()
        };
        for k in std::mem::take(&mut self.dirty) {
            let new = self.compute_service(&k);
            let old = self.reported.remove(&k).unwrap_or_default();
            let mut kept = BTreeMap::new();
            for (name, port) in new {
                match old.get(&name) {
                    Some(prev) if **prev == port => {
                        kept.insert(name, prev.clone());
                    }
                    prev => {
                        let port = Arc::new(port);
                        out.changes.push(Change::Upsert {
                            old: prev.cloned(),
                            new: port.clone(),
                        });
                        kept.insert(name, port);
                    }
                }
            }
            for (name, prev) in old {
                if !kept.contains_key(&name) {
                    out.changes.push(Change::Remove(prev));
                }
            }
            if !kept.is_empty() {
                self.reported.insert(k, kept);
            }
        }
        out
    }

    /// Every port as last reported by [`Model::take_changes`].
    pub fn ports(&self) -> impl Iterator<Item = &Arc<ServicePort>> {
        self.reported.values().flat_map(|m| m.values())
    }

    /// Number of ports last reported.
    pub fn port_count(&self) -> usize {
        self.reported.values().map(|m| m.len()).sum()
    }

    /// The whole table computed from scratch from the current inputs (ignores what was reported).
    pub fn compute_all(&self) -> BTreeMap<ServicePortName, ServicePort> {
        let mut keys: BTreeSet<&SvcKey> = self.services.keys().collect();
        keys.extend(self.slices_of.keys());
        keys.into_iter().flat_map(|k| self.compute_service(k)).collect()
    }

    fn parse_service(&self, svc: &Service) -> Option<SvcInfo> {
        let meta = &svc.metadata;
        if meta
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL) || l.contains_key(HEADLESS_LABEL))
        {
            return None;
        }
        let ns = meta.namespace.clone().unwrap_or_default();
        let name = meta.name.clone().unwrap_or_default();
        if self.ignore.contains(&(ns, name)) {
            return None;
        }
        let spec = svc.spec.as_ref()?;
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            return None;
        }
        let mut cluster_ips: Vec<IpAddr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect();
        if cluster_ips.is_empty() {
            cluster_ips.extend(spec.cluster_ip.as_deref().and_then(|s| s.parse::<IpAddr>().ok()));
        }
        // Headless Services (and ones not yet allocated) have nothing to forward.
        if cluster_ips.is_empty() {
            return None;
        }
        let ports = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| {
                Some(PortInfo {
                    name: Arc::from(p.name.as_deref().unwrap_or("")),
                    protocol: Protocol::parse(p.protocol.as_deref())?,
                    port: u16::try_from(p.port).ok().filter(|p| *p > 0)?,
                    node_port: p.node_port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0),
                })
            })
            .collect();
        let external_ips = spec
            .external_ips
            .iter()
            .flatten()
            .filter_map(|s| s.parse().ok())
            .collect();
        let lb_ips = if ty == "LoadBalancer" {
            svc.status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.as_ref())
                .into_iter()
                .flatten()
                // ipMode Proxy: the load balancer delivers to the node itself; nothing to capture here.
                .filter(|i| i.ip_mode.as_deref() != Some("Proxy"))
                .filter_map(|i| i.ip.as_deref()?.parse().ok())
                .collect()
        } else {
            Vec::new()
        };
        let source_ranges = if ty == "LoadBalancer" {
            spec.load_balancer_source_ranges
                .iter()
                .flatten()
                .filter_map(|s| s.trim().parse().ok())
                .collect()
        } else {
            Vec::new()
        };
        let affinity = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
            let secs = spec
                .session_affinity_config
                .as_ref()
                .and_then(|c| c.client_ip.as_ref())
                .and_then(|c| c.timeout_seconds)
                .unwrap_or(DEFAULT_AFFINITY_SECONDS);
            Duration::from_secs(u64::try_from(secs).unwrap_or(0))
        });
        let external_capable = ty == "NodePort" || ty == "LoadBalancer";
        let annotations = meta.annotations.as_ref();
        let topology_mode = annotations
            .and_then(|a| {
                a.get(TOPOLOGY_MODE_ANNOTATION)
                    .or_else(|| a.get(TOPOLOGY_HINTS_ANNOTATION))
            })
            .map(String::as_str)
            .unwrap_or("");
        Some(SvcInfo {
            cluster_ips,
            ports,
            external_ips,
            lb_ips,
            source_ranges,
            affinity,
            internal_local: spec.internal_traffic_policy.as_deref() == Some("Local"),
            external_local: external_capable && spec.external_traffic_policy.as_deref() == Some("Local"),
            health_check_node_port: spec
                .health_check_node_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0),
            balance: annotations
                .and_then(|a| a.get(BALANCE_ANNOTATION))
                .and_then(|b| b.parse().ok()),
            topology: spec.traffic_distribution.is_some() || matches!(topology_mode, "Auto" | "auto"),
        })
    }

    fn compute_service(&self, k: &SvcKey) -> BTreeMap<ServicePortName, ServicePort> {
        let mut out = BTreeMap::new();
        let Some(svc) = self.services.get(k) else {
            return out;
        };
        let slices: Vec<&SliceInfo> = self
            .slices_of
            .get(k)
            .into_iter()
            .flatten()
            .filter_map(|n| self.slices.get(&(k.0.clone(), n.clone())))
            .collect();
        for p in &svc.ports {
            let name = ServicePortName {
                namespace: k.0.clone(),
                name: k.1.clone(),
                port: p.name.clone(),
                protocol: p.protocol,
            };
            let all = self.endpoints_of(&slices, p);
            let externally_accessible =
                p.node_port.is_some() || !svc.external_ips.is_empty() || !svc.lb_ips.is_empty();
            let external_local = svc.external_local && externally_accessible;
            let cat = categorize(
                &all,
                svc.internal_local,
                externally_accessible,
                external_local,
                svc.topology,
                self.cfg.node_zone.as_deref(),
            );
            let pick = |local: bool| {
                if local {
                    cat.local.clone()
                } else {
                    cat.cluster.clone()
                }
            };
            out.insert(
                name.clone(),
                ServicePort {
                    name,
                    cluster_ips: svc.cluster_ips.clone(),
                    port: p.port,
                    node_port: p.node_port,
                    external_ips: svc.external_ips.clone(),
                    load_balancer_ips: svc.lb_ips.clone(),
                    load_balancer_source_ranges: svc.source_ranges.clone(),
                    affinity_timeout: svc.affinity,
                    internal_policy_local: svc.internal_local,
                    external_policy_local: external_local,
                    health_check_node_port: svc.health_check_node_port,
                    balance: svc.balance,
                    internal_endpoints: pick(svc.internal_local),
                    external_endpoints: if externally_accessible {
                        pick(external_local)
                    } else {
                        Vec::new()
                    },
                    has_endpoints: cat.has_any,
                    all_endpoints: all,
                },
            );
        }
        out
    }

    /// The endpoints of one service port across its slices, deduplicated by address (a ready copy wins, as
    /// when a pod moves between slices) and sorted, so equal inputs give equal output.
    fn endpoints_of(&self, slices: &[&SliceInfo], p: &PortInfo) -> Vec<Endpoint> {
        let mut by_addr: BTreeMap<(IpAddr, u16), Endpoint> = BTreeMap::new();
        for s in slices {
            let Some(port) = s
                .ports
                .iter()
                .find(|(n, proto, _)| *n == p.name && *proto == p.protocol)
                .map(|(_, _, port)| *port)
            else {
                continue;
            };
            for e in &s.endpoints {
                let ep = Endpoint {
                    ip: e.ip,
                    port,
                    ready: e.ready,
                    serving: e.serving,
                    terminating: e.terminating,
                    is_local: e.node.as_deref() == Some(self.cfg.node_name.as_str()),
                    node: e.node.clone(),
                    zone: e.zone.clone(),
                    zone_hints: e.zone_hints.clone(),
                };
                match by_addr.get(&(e.ip, port)) {
                    Some(prev) if prev.ready || !ep.ready => {}
                    _ => {
                        by_addr.insert((e.ip, port), ep);
                    }
                }
            }
        }
        by_addr.into_values().collect()
    }
}

fn parse_slice(ns: &str, slice: &EndpointSlice) -> Option<SliceInfo> {
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    if slice.address_type == "FQDN" {
        return None;
    }
    let ports = slice
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            Some((
                Arc::from(p.name.as_deref().unwrap_or("")),
                Protocol::parse(p.protocol.as_deref())?,
                u16::try_from(p.port?).ok().filter(|p| *p > 0)?,
            ))
        })
        .collect();
    let endpoints = slice
        .endpoints
        .iter()
        .filter_map(|e| {
            // kube-proxy uses an endpoint's first address only.
            let ip: IpAddr = e.addresses.first()?.parse().ok()?;
            let c = e.conditions.as_ref();
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            Some(RawEndpoint {
                ip,
                ready,
                serving: c.and_then(|c| c.serving).unwrap_or(ready),
                terminating: c.and_then(|c| c.terminating).unwrap_or(false),
                node: e.node_name.as_deref().map(Arc::from),
                zone: e.zone.as_deref().map(Arc::from),
                zone_hints: e
                    .hints
                    .as_ref()
                    .and_then(|h| h.for_zones.as_ref())
                    .map(|z| z.iter().map(|z| Arc::from(z.name.as_str())).collect()),
            })
        })
        .collect();
    Some(SliceInfo {
        owner: key(ns, svc),
        ports,
        endpoints,
    })
}

/// kube-proxy's `CategorizeEndpoints`.
struct Categorized {
    cluster: Vec<Endpoint>,
    local: Vec<Endpoint>,
    has_any: bool,
}

fn categorize(
    all: &[Endpoint],
    internal_local: bool,
    externally_accessible: bool,
    external_local: bool,
    topology: bool,
    zone: Option<&str>,
) -> Categorized {
    let uses_cluster = !internal_local || (externally_accessible && !external_local);
    let uses_local = internal_local || (externally_accessible && external_local);
    let mut out = Categorized {
        cluster: Vec::new(),
        local: Vec::new(),
        has_any: false,
    };
    if uses_cluster {
        let zone = zone.filter(|_| topology).filter(|z| can_use_topology(all, z));
        out.cluster = all
            .iter()
            .filter(|e| e.ready)
            .filter(|e| zone.is_none_or(|z| has_zone_hint(e, z)))
            .cloned()
            .collect();
        // No ready endpoint anywhere: fall back to serving endpoints that are terminating.
        if out.cluster.is_empty() {
            out.cluster = all
                .iter()
                .filter(|e| e.serving && e.terminating)
                .cloned()
                .collect();
        }
        out.has_any = !out.cluster.is_empty();
    }
    if uses_local {
        let (mut local_ready, mut local_terminating) = (false, false);
        for e in all {
            if e.ready {
                out.has_any = true;
                local_ready |= e.is_local;
            } else if e.serving && e.terminating {
                out.has_any = true;
                local_terminating |= e.is_local;
            }
        }
        if local_ready {
            out.local = all.iter().filter(|e| e.is_local && e.ready).cloned().collect();
        } else if local_terminating {
            out.local = all
                .iter()
                .filter(|e| e.is_local && e.serving && e.terminating)
                .cloned()
                .collect();
        }
    }
    out
}

fn has_zone_hint(e: &Endpoint, zone: &str) -> bool {
    e.zone_hints
        .as_ref()
        .is_some_and(|h| h.iter().any(|z| &**z == zone))
}

/// kube-proxy's `canUseTopology`: every ready endpoint has zone hints and one of them is for this zone.
fn can_use_topology(all: &[Endpoint], zone: &str) -> bool {
    if zone.is_empty() {
        return false;
    }
    let mut for_zone = false;
    for e in all.iter().filter(|e| e.ready) {
        match &e.zone_hints {
            None => return false,
            Some(h) if h.is_empty() => return false,
            Some(h) => for_zone |= h.iter().any(|z| &**z == zone),
        }
    }
    for_zone
}

#[cfg(test)]
mod tests;
