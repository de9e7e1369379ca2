//! The server's Service allocation state, which the Service strategy writes through: defaulting,
//! validation, and ClusterIP / NodePort allocation in one pass.
//!
//! Allocations are durable with the objects, not in a separate table: the allocators live in memory and
//! are rebuilt from the stored Services at start-up (kube's repair pass), so a crash between allocating
//! and writing can never leak an address. Within one process the protocol is: allocate in
//! `service_create`/`service_update`, then either the write commits (and whatever the old object held that
//! the new one does not is released) or it fails (and whatever the new object took is released).

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Service;
use serde_json::Value;
use svcnet_alloc::{
    ClusterIpAllocator, ClusterIpError, NodePortAllocator, NodePortError, PortRange, SplitMix64,
};
use svcnet_api::field::{FieldError, go_string_slice};
use svcnet_api::service::{self as svc_rules, IpFamily, ServiceConfig};
use tracing::warn;

use crate::errors::ApiError;

/// Service networking settings of the cluster.
#[derive(Debug, Clone)]
pub struct ServiceNetConfig {
    /// Service CIDRs, primary first; two CIDRs of different families make the cluster dual-stack.
    pub service_cidrs: Vec<IpNet>,
    /// The NodePort range.
    pub node_port_range: PortRange,
}

struct Allocators {
    /// One allocator per family, in the order of `service_cidrs`.
    ips: Vec<ClusterIpAllocator>,
    ports: NodePortAllocator,
    rng: SplitMix64,
}

/// Per-kind write hooks, shared by every request.
#[derive(Clone)]
pub struct KindHooks {
    services: Option<Arc<ServiceHooks>>,
}

struct ServiceHooks {
    config: ServiceNetConfig,
    rules: ServiceConfig,
    alloc: Mutex<Allocators>,
    /// Allocations that looked leaked, with how many consecutive repair passes saw them so.
    leaks: Mutex<HashMap<Leak, u32>>,
}

/// An allocation no stored Service holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Leak {
    Ip(IpAddr),
    Port(i32),
}

/// Consecutive passes an allocation must look leaked before the periodic repair releases it.
pub const LEAK_PASSES: u32 = 3;

/// What a Service holds in the allocators.
#[derive(Debug, Default, PartialEq)]
struct Held {
    ips: BTreeSet<IpAddr>,
    ports: BTreeSet<i32>,
}

fn held(obj: &Value) -> Held {
    let mut h = Held::default();
    let Some(spec) = obj.get("spec") else { return h };
    if let Some(ips) = spec.get("clusterIPs").and_then(Value::as_array) {
        h.ips.extend(
            ips.iter()
                .filter_map(Value::as_str)
                .filter_map(|s| s.parse::<IpAddr>().ok()),
        );
    }
    if let Some(ports) = spec.get("ports").and_then(Value::as_array) {
        h.ports.extend(
            ports
                .iter()
                .filter_map(|p| p.get("nodePort").and_then(Value::as_i64))
                .filter(|p| *p > 0)
                .map(|p| p as i32),
        );
    }
    if let Some(p) = spec
        .get("healthCheckNodePort")
        .and_then(Value::as_i64)
        .filter(|p| *p > 0)
    {
        h.ports.insert(p as i32);
    }
    h
}

fn family_of(ip: IpAddr) -> IpFamily {
    IpFamily::of(ip)
}

impl KindHooks {
    /// No kind-specific behaviour (for tests of the generic machinery).
    pub fn none() -> Self {
        KindHooks { services: None }
    }

    /// Hooks with Service allocation over `config`.
    pub fn with_services(config: ServiceNetConfig) -> Result<Self, String> {
        if config.service_cidrs.is_empty() || config.service_cidrs.len() > 2 {
            return Err("one or two service CIDRs are required".into());
        }
        let mut ips = Vec::new();
        for cidr in &config.service_cidrs {
            ips.push(ClusterIpAllocator::new(*cidr).map_err(|e| e.to_string())?);
        }
        let families: Vec<IpFamily> = config
            .service_cidrs
            .iter()
            .map(|c| family_of(c.network()))
            .collect();
        if families.len() == 2 && families[0] == families[1] {
            return Err("the two service CIDRs must be of different IP families".into());
        }
        let rules = ServiceConfig {
            primary_family: families[0],
            secondary_family: families.get(1).copied(),
        };
        Ok(KindHooks {
            services: Some(Arc::new(ServiceHooks {
                alloc: Mutex::new(Allocators {
                    ips,
                    ports: NodePortAllocator::new(config.node_port_range),
                    rng: SplitMix64::new(rand::random()),
                }),
                config,
                rules,
                leaks: Mutex::new(HashMap::new()),
            })),
        })
    }

    /// The service CIDRs, if Services are handled.
    pub fn service_cidrs(&self) -> Vec<IpNet> {
        self.services
            .as_ref()
            .map(|s| s.config.service_cidrs.clone())
            .unwrap_or_default()
    }

    /// Rebuilds the allocators from the stored Services (the repair pass): every address and port in
    /// use is marked, and anything out of range or held twice is logged.
    pub fn repair<'a>(&self, services: impl IntoIterator<Item = &'a Value>) {
        let Some(s) = &self.services else { return };
        let mut a = s.alloc.lock().unwrap_or_else(|e| e.into_inner());
        let mut all_ips: Vec<IpAddr> = Vec::new();
        let mut all_ports: Vec<i32> = Vec::new();
        for svc in services {
            let h = held(svc);
            all_ips.extend(h.ips);
            all_ports.extend(h.ports);
        }
        let mut rebuilt = Vec::new();
        for alloc in &a.ips {
            let cidr = alloc.cidr();
            let mine: Vec<IpAddr> = all_ips.iter().copied().filter(|ip| cidr.contains(ip)).collect();
            match ClusterIpAllocator::rebuild(cidr, mine) {
                Ok((fresh, report)) => {
                    if !report.is_clean() {
                        warn!(%cidr, out_of_range = ?report.out_of_range, duplicates = ?report.duplicates, "repair: ClusterIP allocations need attention");
                    }
                    rebuilt.push(fresh);
                }
                Err(e) => {
                    warn!(%cidr, error = %e, "repair: cannot rebuild ClusterIP allocator");
                    rebuilt.push(alloc.clone());
                }
            }
        }
        a.ips = rebuilt;
        let (ports, report) = NodePortAllocator::rebuild(a.ports.range(), all_ports);
        if !report.is_clean() {
            warn!(out_of_range = ?report.out_of_range, duplicates = ?report.duplicates, "repair: NodePort allocations need attention");
        }
        a.ports = ports;
    }

    /// The periodic repair pass: compares the allocators with the stored Services while the server runs.
    ///
    /// An address or port a stored Service holds but the allocator does not is marked at once (that gap
    /// could hand it out twice). One the allocator holds but no stored Service does is released only
    /// after it has looked leaked on [`LEAK_PASSES`] consecutive passes, because a request may have
    /// reserved it and not yet written its Service, exactly why kube's repair controller waits too.
    /// Returns what was marked and what was released.
    pub fn repair_pass<'a>(&self, services: impl IntoIterator<Item = &'a Value>) -> (usize, usize) {
        let Some(s) = &self.services else { return (0, 0) };
        let mut stored = Held::default();
        for svc in services {
            let h = held(svc);
            stored.ips.extend(h.ips);
            stored.ports.extend(h.ports);
        }
        let mut a = s.alloc.lock().unwrap_or_else(|e| e.into_inner());
        let mut leaks = s.leaks.lock().unwrap_or_else(|e| e.into_inner());
        let mut marked = 0;
        for ip in &stored.ips {
            for alloc in a.ips.iter_mut() {
                if alloc.in_range(*ip) && !alloc.is_allocated(*ip) && alloc.allocate(*ip).is_ok() {
                    warn!(%ip, "repair: a stored Service's ClusterIP was not marked allocated; marked");
                    marked += 1;
                }
            }
        }
        for p in &stored.ports {
            if a.ports.range().contains(*p) && !a.ports.is_allocated(*p) && a.ports.allocate(*p).is_ok() {
                warn!(
                    port = p,
                    "repair: a stored Service's NodePort was not marked allocated; marked"
                );
                marked += 1;
            }
        }
        let mut suspects: Vec<Leak> = Vec::new();
        for alloc in &a.ips {
            suspects.extend(alloc.iter().filter(|ip| !stored.ips.contains(ip)).map(Leak::Ip));
        }
        suspects.extend(
            a.ports
                .iter()
                .filter(|p| !stored.ports.contains(p))
                .map(Leak::Port),
        );
        leaks.retain(|k, _| suspects.contains(k));
        let mut released = 0;
        for leak in suspects {
            let n = leaks.entry(leak).or_insert(0);
            *n += 1;
            if *n >= LEAK_PASSES {
                match leak {
                    Leak::Ip(ip) => {
                        for alloc in a.ips.iter_mut() {
                            if alloc.in_range(ip) {
                                alloc.release(ip);
                            }
                        }
                        warn!(%ip, "repair: ClusterIP held by no Service; released");
                    }
                    Leak::Port(p) => {
                        a.ports.release(p);
                        warn!(port = p, "repair: NodePort held by no Service; released");
                    }
                }
                leaks.remove(&leak);
                released += 1;
            }
        }
        (marked, released)
    }

    /// Defaults, allocates and validates a new Service in one pass; `None` when this server does not
    /// allocate (then the Service strategy validates as for any kind). Field errors become a 422.
    pub(crate) fn service_create(&self, obj: &mut Value) -> Option<Result<Vec<FieldError>, ApiError>> {
        self.services.as_ref().map(|s| s.create(obj))
    }

    /// Defaults, allocates and validates an update of Service `old` to `new`; `None` as for create.
    pub(crate) fn service_update(
        &self,
        subresource: Option<&str>,
        new: &mut Value,
        old: &Value,
    ) -> Option<Result<Vec<FieldError>, ApiError>> {
        self.services.as_ref().map(|s| s.update(subresource, new, old))
    }

    /// Releases what Service `obj` holds that `keep` does not (all of it when `keep` is `None`).
    pub(crate) fn service_release(&self, obj: &Value, keep: Option<&Value>) {
        if let Some(s) = &self.services {
            s.release(obj, keep);
        }
    }
}

fn to_typed(obj: &Value) -> Result<Service, ApiError> {
    serde_json::from_value(obj.clone()).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn to_json(svc: &Service) -> Result<Value, ApiError> {
    serde_json::to_value(svc).map_err(ApiError::internal)
}

impl ServiceHooks {
    fn create(&self, obj: &mut Value) -> Result<Vec<FieldError>, ApiError> {
        let mut svc = to_typed(obj)?;
        svc_rules::set_defaults(&mut svc, &self.rules);
        // kube allocates before it validates: validation expects the allocated values in place.
        let mut a = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = Held::default();
        let mut res = self.allocate(&mut a, &mut svc, &Held::default(), &mut taken);
        if matches!(res, Ok(ref e) if e.is_empty()) {
            res = Ok(svc_rules::validate_create(&svc, &self.rules));
        }
        if res.is_err() || matches!(res, Ok(ref e) if !e.is_empty()) {
            Self::free(&mut a, &taken);
            return res;
        }
        *obj = to_json(&svc)?;
        Ok(Vec::new())
    }

    fn update(
        &self,
        subresource: Option<&str>,
        new: &mut Value,
        old: &Value,
    ) -> Result<Vec<FieldError>, ApiError> {
        let mut svc = to_typed(new)?;
        let old_svc = to_typed(old)?;
        if subresource == Some("status") {
            svc_rules::set_status_update_defaults(&mut svc, &old_svc);
            let errs = svc_rules::validate_status_update(&svc, &old_svc);
            if errs.is_empty() {
                *new = to_json(&svc)?;
            }
            return Ok(errs);
        }
        svc_rules::set_defaults_update(&mut svc, &old_svc, &self.rules);
        let mut a = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        let mut taken = Held::default();
        let mut res = self.allocate(&mut a, &mut svc, &held(old), &mut taken);
        if matches!(res, Ok(ref e) if e.is_empty()) {
            res = Ok(svc_rules::validate_update(&svc, &old_svc, &self.rules));
        }
        if res.is_err() || matches!(res, Ok(ref e) if !e.is_empty()) {
            Self::free(&mut a, &taken);
            return res;
        }
        *new = to_json(&svc)?;
        Ok(Vec::new())
    }

    fn free(a: &mut Allocators, h: &Held) {
        for ip in &h.ips {
            for alloc in a.ips.iter_mut() {
                if alloc.in_range(*ip) {
                    alloc.release(*ip);
                }
            }
        }
        for p in &h.ports {
            a.ports.release(*p);
        }
    }

    fn release(&self, obj: &Value, keep: Option<&Value>) {
        let mut h = held(obj);
        if let Some(k) = keep {
            let k = held(k);
            h.ips.retain(|ip| !k.ips.contains(ip));
            h.ports.retain(|p| !k.ports.contains(p));
        }
        let mut a = self.alloc.lock().unwrap_or_else(|e| e.into_inner());
        Self::free(&mut a, &h);
    }

    /// Fills in and reserves the ClusterIPs and NodePorts `svc` needs beyond what `already` holds
    /// (the old object's allocations on update). Everything newly reserved is recorded in `taken`.
    fn allocate(
        &self,
        a: &mut Allocators,
        svc: &mut Service,
        already: &Held,
        taken: &mut Held,
    ) -> Result<Vec<FieldError>, ApiError> {
        let Some(spec) = svc.spec.as_mut() else {
            return Ok(Vec::new());
        };
        let ty = spec.type_.clone().unwrap_or_else(|| "ClusterIP".into());
        // ClusterIPs: one per requested family, unless headless or ExternalName.
        let headless = spec.cluster_ip.as_deref() == Some("None");
        if ty != "ExternalName" && !headless {
            let families: Vec<String> = spec.ip_families.clone().unwrap_or_default();
            let mut ips: Vec<String> = spec.cluster_ips.clone().unwrap_or_default();
            for (i, fam) in families.iter().enumerate() {
                let Some(idx) = a
                    .ips
                    .iter()
                    .position(|al| Some(family_of(al.cidr().network())) == IpFamily::parse(fam))
                else {
                    continue;
                };
                match ips.get(i).filter(|s| !s.is_empty()) {
                    Some(requested) => {
                        let Ok(ip) = requested.parse::<IpAddr>() else {
                            continue;
                        };
                        if already.ips.contains(&ip) {
                            continue;
                        }
                        match a.ips[idx].allocate(ip) {
                            Ok(()) => {
                                taken.ips.insert(ip);
                            }
                            Err(e) => {
                                return Ok(vec![FieldError::invalid(
                                    "spec.clusterIPs",
                                    go_string_slice(&ips),
                                    format!("failed to allocate IP {requested}: {}", cluster_ip_msg(&e)),
                                )]);
                            }
                        }
                    }
                    None => {
                        let rng = &mut a.rng;
                        match a.ips[idx].allocate_next(rng) {
                            Ok(ip) => {
                                taken.ips.insert(ip);
                                if ips.len() > i {
                                    ips[i] = ip.to_string();
                                } else {
                                    ips.push(ip.to_string());
                                }
                            }
                            Err(e) => {
                                return Err(ApiError::internal(format!(
                                    "failed to allocate a serviceIP: {}",
                                    cluster_ip_msg(&e)
                                )));
                            }
                        }
                    }
                }
            }
            if !ips.is_empty() {
                spec.cluster_ip = Some(ips[0].clone());
                spec.cluster_ips = Some(ips);
            }
        }
        // NodePorts: NodePort services, and LoadBalancers unless node ports are switched off.
        let wants_node_ports = ty == "NodePort"
            || (ty == "LoadBalancer" && spec.allocate_load_balancer_node_ports != Some(false));
        if wants_node_ports && let Some(ports) = spec.ports.as_mut() {
            // The same service port number gets the same node port for every protocol, as kube does.
            let mut by_port: Vec<(i32, i32)> = Vec::new();
            for (i, p) in ports.iter_mut().enumerate() {
                match p.node_port.filter(|n| *n != 0) {
                    Some(n) => {
                        if already.ports.contains(&n) || taken.ports.contains(&n) {
                            by_port.push((p.port, n));
                            continue;
                        }
                        if let Err(e) = a.ports.allocate(n) {
                            return Ok(vec![FieldError::invalid(
                                format!("spec.ports[{i}].nodePort"),
                                n,
                                node_port_msg(&e),
                            )]);
                        }
                        taken.ports.insert(n);
                        by_port.push((p.port, n));
                    }
                    None => {
                        if let Some((_, n)) = by_port.iter().find(|(sp, _)| *sp == p.port) {
                            p.node_port = Some(*n);
                            continue;
                        }
                        let rng = &mut a.rng;
                        match a.ports.allocate_next(rng) {
                            Ok(n) => {
                                taken.ports.insert(n);
                                p.node_port = Some(n);
                                by_port.push((p.port, n));
                            }
                            Err(e) => {
                                return Err(ApiError::internal(format!(
                                    "failed to allocate a nodePort: {}",
                                    node_port_msg(&e)
                                )));
                            }
                        }
                    }
                }
            }
        }
        // The health-check node port of a LoadBalancer with local external traffic.
        if ty == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local") {
            match spec.health_check_node_port.filter(|n| *n != 0) {
                Some(n) if !already.ports.contains(&n) && !taken.ports.contains(&n) => {
                    if let Err(e) = a.ports.allocate(n) {
                        return Ok(vec![FieldError::invalid(
                            "spec.healthCheckNodePort",
                            n,
                            format!(
                                "failed to allocate requested HealthCheck NodePort {n}: {}",
                                node_port_msg(&e)
                            ),
                        )]);
                    }
                    taken.ports.insert(n);
                }
                Some(_) => {}
                None => {
                    let rng = &mut a.rng;
                    match a.ports.allocate_next(rng) {
                        Ok(n) => {
                            taken.ports.insert(n);
                            spec.health_check_node_port = Some(n);
                        }
                        Err(e) => {
                            return Err(ApiError::internal(format!(
                                "failed to allocate a nodePort: {}",
                                node_port_msg(&e)
                            )));
                        }
                    }
                }
            }
        }
        Ok(Vec::new())
    }
}

fn cluster_ip_msg(e: &ClusterIpError) -> String {
    e.to_string()
}

fn node_port_msg(e: &NodePortError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hooks() -> KindHooks {
        KindHooks::with_services(ServiceNetConfig {
            service_cidrs: vec!["10.96.0.0/24".parse().unwrap()],
            node_port_range: PortRange::default(),
        })
        .unwrap()
    }

    fn svc(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
    }

    #[test]
    fn allocation_is_released_when_the_write_fails_and_on_delete() {
        let h = hooks();
        let mut a = svc("a");
        assert!(h.service_create(&mut a).unwrap().unwrap().is_empty());
        let ip: IpAddr = a["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        let port = a["spec"]["ports"][0]["nodePort"].as_i64().unwrap() as i32;
        let mut b = svc("b");
        b["spec"]["clusterIP"] = json!(ip.to_string());
        let errs = h.service_create(&mut b).unwrap().unwrap();
        assert!(
            errs[0].to_string().contains("provided IP is already allocated"),
            "{errs:?}"
        );
        h.service_release(&a, None);
        let mut c = svc("c");
        c["spec"]["clusterIP"] = json!(ip.to_string());
        c["spec"]["ports"][0]["nodePort"] = json!(port);
        assert!(h.service_create(&mut c).unwrap().unwrap().is_empty());
    }

    #[test]
    fn periodic_repair_marks_at_once_and_releases_only_after_several_passes() {
        let h = hooks();
        let mut a = svc("a");
        assert!(h.service_create(&mut a).unwrap().unwrap().is_empty());
        // `a` was reserved but (say) its write never happened: only the third pass releases it.
        assert_eq!(h.repair_pass(std::iter::empty()), (0, 0));
        assert_eq!(h.repair_pass(std::iter::empty()), (0, 0));
        assert_eq!(h.repair_pass(std::iter::empty()), (0, 2));
        // A stored Service whose allocations the allocator lost is marked at the first pass.
        let (marked, released) = h.repair_pass([&a]);
        assert_eq!((marked, released), (2, 0));
        let mut b = svc("b");
        b["spec"]["clusterIP"] = a["spec"]["clusterIP"].clone();
        assert!(!h.service_create(&mut b).unwrap().unwrap().is_empty());
        // A suspect that reappears in storage is forgiven.
        let mut c = svc("c");
        assert!(h.service_create(&mut c).unwrap().unwrap().is_empty());
        h.repair_pass([&a]);
        h.repair_pass([&a]);
        assert_eq!(h.repair_pass([&a, &c]), (0, 0));
        assert_eq!(h.repair_pass([&a, &c]), (0, 0));
    }
}
