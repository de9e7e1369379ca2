//! The server's Service admission, which the Service strategy writes through: defaulting, validation,
//! and ClusterIP / NodePort allocation in one pass.
//!
//! Allocation goes through the store ([`crate::ipam`]): a ClusterIP is an IPAddress object, NodePorts
//! are bits of one stored bitmap written with compare-and-swap. So several API servers on one etcd never
//! hand out one address or port. On create the ClusterIPs are picked from the cache (a requested one
//! is looked up in the store) and their IPAddresses returned as [`Admission::with`], which the handler
//! writes in one store transaction with the Service: both commit or neither, and if another server
//! took an address first the handler allocates again. On update a new address is created before the Service is written. The protocol per
//! request otherwise: allocate in `service_create`/`service_update`, then either the Service write
//! commits (and whatever the old object held that the new one does not is released) or it fails (and
//! whatever the new object took is released). A crash in between leaves an allocation without a Service,
//! which the repair loop (`repair`) releases after a grace period, as kube's does.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use ipnet::IpNet;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use serde_json::Value;
use svcnet_alloc::{NodePortAllocator, NodePortError, PortRange, RandomSource, SplitMix64};
use svcnet_api::field::{FieldError, go_string_slice};
use svcnet_api::service::{self as svc_rules, IpFamily, ServiceConfig};
use svcnet_store::Store;

use crate::cache::Cache;
use crate::errors::ApiError;
use crate::ipam::{Ipam, Parent};
use crate::metrics::AllocationMetrics;
use crate::strategy::Admission;

/// Service networking settings of the cluster.
#[derive(Debug, Clone)]
pub struct ServiceNetConfig {
    /// Service CIDRs, primary first; two CIDRs of different families make the cluster dual-stack. They
    /// become the default ServiceCIDR `kubernetes`; more ranges are added as ServiceCIDR objects.
    pub service_cidrs: Vec<IpNet>,
    /// The NodePort range.
    pub node_port_range: PortRange,
}

/// Per-kind write hooks, shared by every request.
#[derive(Clone)]
pub struct KindHooks {
    services: Option<Arc<ServiceHooks>>,
}

struct ServiceHooks {
    config: ServiceNetConfig,
    rules: ServiceConfig,
    /// The store-backed allocator, set once the server has its store and cache.
    ipam: OnceLock<Arc<Ipam>>,
    rng: Mutex<SplitMix64>,
}

/// What a Service holds: its ClusterIPs and NodePorts (health-check port included).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Held {
    pub(crate) ips: BTreeSet<IpAddr>,
    pub(crate) ports: BTreeSet<i32>,
}

/// What stored Service `obj` holds.
pub(crate) fn held(obj: &Value) -> Held {
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
        for cidr in &config.service_cidrs {
            svcnet_alloc::ClusterIpAllocator::new(*cidr).map_err(|e| e.to_string())?;
        }
        let families: Vec<IpFamily> = config
            .service_cidrs
            .iter()
            .map(|c| IpFamily::of(c.network()))
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
                config,
                rules,
                ipam: OnceLock::new(),
                rng: Mutex::new(SplitMix64::new(rand::random())),
            })),
        })
    }

    /// Connects allocation to the server's store and cache (done once, by `ApiServer::new`).
    pub(crate) fn attach(&self, store: Arc<dyn Store>, cache: Arc<Cache>, metrics: AllocationMetrics) {
        if let Some(s) = &self.services {
            let _ = s.ipam.set(Arc::new(Ipam::new(
                store,
                cache,
                s.config.service_cidrs.clone(),
                s.config.node_port_range,
                metrics,
            )));
        }
    }

    /// The store-backed allocator, once attached.
    pub(crate) fn ipam(&self) -> Option<Arc<Ipam>> {
        self.services.as_ref()?.ipam.get().cloned()
    }

    /// The service CIDRs of the flags (the default ServiceCIDR's), if Services are handled.
    pub fn service_cidrs(&self) -> Vec<IpNet> {
        self.services
            .as_ref()
            .map(|s| s.config.service_cidrs.clone())
            .unwrap_or_default()
    }

    /// Defaults, allocates and validates a new Service in one pass; `None` when this server does not
    /// allocate (then the Service strategy validates as for any kind). Field errors become a 422. The
    /// ClusterIPs' IPAddresses are to be written with the Service ([`Admission::with`]); a dry run
    /// reserves nothing.
    pub(crate) async fn service_create(
        &self,
        obj: &mut Value,
        dry_run: bool,
    ) -> Option<Result<Admission, ApiError>> {
        let s = self.services.as_ref()?;
        Some(s.create(obj, dry_run).await)
    }

    /// Defaults, allocates and validates an update of Service `old` to `new`; `None` as for create.
    pub(crate) async fn service_update(
        &self,
        subresource: Option<&str>,
        new: &mut Value,
        old: &Value,
        dry_run: bool,
    ) -> Option<Result<Vec<FieldError>, ApiError>> {
        let s = self.services.as_ref()?;
        Some(s.update(subresource, new, old, dry_run).await)
    }

    /// Releases what Service `obj` holds that `keep` does not (all of it when `keep` is `None`).
    pub(crate) async fn service_release(&self, obj: &Value, keep: Option<&Value>) {
        if let Some(s) = &self.services {
            s.release(obj, keep).await;
        }
    }

    /// Releases what a new Service `obj` reserved when its write did not commit: its NodePorts (its
    /// IPAddresses were to be written with it, so they were not).
    pub(crate) async fn service_release_unwritten(&self, obj: &Value) {
        if let Some(s) = &self.services {
            s.free_ports(&held(obj).ports).await;
        }
    }
}

fn to_typed(obj: &Value) -> Result<Service, ApiError> {
    serde_json::from_value(obj.clone()).map_err(|e| ApiError::bad_request(e.to_string()))
}

fn to_json(svc: &Service) -> Result<Value, ApiError> {
    serde_json::to_value(svc).map_err(ApiError::internal)
}

fn is_clean(res: &Result<Vec<FieldError>, ApiError>) -> bool {
    matches!(res, Ok(e) if e.is_empty())
}

/// Why a NodePort assignment stopped: field errors for the client (422) or a server error (full range).
enum PortFailure {
    Invalid(Vec<FieldError>),
    Failed(ApiError),
}

impl ServiceHooks {
    fn ipam(&self) -> Result<Arc<Ipam>, ApiError> {
        self.ipam
            .get()
            .cloned()
            .ok_or_else(|| ApiError::internal("Service allocation has no store attached"))
    }

    fn seed(&self) -> u64 {
        self.rng.lock().unwrap_or_else(|e| e.into_inner()).next_u64()
    }

    async fn create(&self, obj: &mut Value, dry_run: bool) -> Result<Admission, ApiError> {
        let parent = Parent::of(obj);
        let mut svc = to_typed(obj)?;
        svc_rules::set_defaults(&mut svc, &self.rules);
        // kube allocates before it validates: validation expects the allocated values in place. The
        // addresses are only picked here (`taken.ips`); they are written with the Service.
        let mut taken = Held::default();
        let mut res = self
            .allocate(&mut svc, &Held::default(), &mut taken, &parent, true, dry_run)
            .await;
        if is_clean(&res) {
            res = Ok(svc_rules::validate_create(&svc, &self.rules));
        }
        if !is_clean(&res) {
            if !dry_run {
                self.free_ports(&taken.ports).await;
            }
            return res.map(Admission::errors);
        }
        let ipam = self.ipam()?;
        let with = if dry_run {
            Vec::new()
        } else {
            let claims: Result<Vec<_>, _> = taken
                .ips
                .iter()
                .map(|ip| ipam.claim_write(*ip, &parent))
                .collect();
            match claims {
                Ok(c) => c,
                Err(e) => {
                    self.free_ports(&taken.ports).await;
                    return Err(e);
                }
            }
        };
        *obj = to_json(&svc)?;
        Ok(Admission {
            errors: Vec::new(),
            with,
        })
    }

    async fn update(
        &self,
        subresource: Option<&str>,
        new: &mut Value,
        old: &Value,
        dry_run: bool,
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
        let parent = Parent::of(old);
        svc_rules::set_defaults_update(&mut svc, &old_svc, &self.rules);
        let mut taken = Held::default();
        let mut res = self
            .allocate(&mut svc, &held(old), &mut taken, &parent, false, dry_run)
            .await;
        if is_clean(&res) {
            res = Ok(svc_rules::validate_update(&svc, &old_svc, &self.rules));
        }
        if !is_clean(&res) {
            if !dry_run {
                self.free(&taken, &parent).await;
            }
            return res;
        }
        *new = to_json(&svc)?;
        Ok(Vec::new())
    }

    async fn free(&self, h: &Held, parent: &Parent) {
        let Ok(ipam) = self.ipam() else { return };
        for ip in &h.ips {
            ipam.release_ip(*ip, parent).await;
        }
        self.free_ports(&h.ports).await;
    }

    async fn free_ports(&self, ports: &BTreeSet<i32>) {
        let Ok(ipam) = self.ipam() else { return };
        let ports: Vec<i32> = ports.iter().copied().collect();
        ipam.release_ports(&ports).await;
    }

    async fn release(&self, obj: &Value, keep: Option<&Value>) {
        let mut h = held(obj);
        if let Some(k) = keep {
            let k = held(k);
            h.ips.retain(|ip| !k.ips.contains(ip));
            h.ports.retain(|p| !k.ports.contains(p));
        }
        self.free(&h, &Parent::of(obj)).await;
    }

    /// Fills in and reserves the ClusterIPs and NodePorts `svc` needs beyond what `already` holds
    /// (the old object's allocations on update). Everything newly reserved is recorded in `taken`.
    /// With `ips_with_object` the ClusterIPs are only picked where the cache shows them free, for the
    /// caller to write with the Service.
    async fn allocate(
        &self,
        svc: &mut Service,
        already: &Held,
        taken: &mut Held,
        parent: &Parent,
        ips_with_object: bool,
        dry_run: bool,
    ) -> Result<Vec<FieldError>, ApiError> {
        let ips_cache_only = dry_run || ips_with_object;
        let ipam = self.ipam()?;
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
                let Some(family) = IpFamily::parse(fam) else {
                    continue;
                };
                let ranges = ipam.ready_ranges(family);
                if ranges.is_empty() {
                    continue;
                }
                match ips.get(i).filter(|s| !s.is_empty()).cloned() {
                    Some(requested) => {
                        let Ok(ip) = requested.parse::<IpAddr>() else {
                            continue;
                        };
                        if already.ips.contains(&ip) {
                            continue;
                        }
                        let cidr = ranges
                            .iter()
                            .find(|r| r.contains(ip))
                            .map_or_else(String::new, |r| r.cidr().to_string());
                        let why = if !ranges.iter().any(|r| r.contains(ip)) {
                            let valid: Vec<String> = ranges.iter().map(|r| r.cidr().to_string()).collect();
                            Some(format!(
                                "the provided IP ({}) is not in the valid range. The range of valid IPs is {}",
                                ip.to_canonical(),
                                valid.join(",")
                            ))
                        } else if !self
                            .take_requested(&ipam, ip, parent, ips_with_object, dry_run)
                            .await?
                        {
                            Some("provided IP is already allocated".to_string())
                        } else {
                            None
                        };
                        ipam.count_ip(&cidr, "static", why.is_none());
                        if let Some(why) = why {
                            return Ok(vec![FieldError::invalid(
                                "spec.clusterIPs",
                                go_string_slice(&ips),
                                format!("failed to allocate IP {requested}: {why}"),
                            )]);
                        }
                        taken.ips.insert(ip);
                    }
                    None => {
                        let ip = self.allocate_next(&ipam, family, parent, ips_cache_only).await?;
                        taken.ips.insert(ip);
                        if ips.len() > i {
                            ips[i] = ip.to_string();
                        } else {
                            ips.push(ip.to_string());
                        }
                    }
                }
            }
            if !ips.is_empty() {
                spec.cluster_ip = Some(ips[0].clone());
                spec.cluster_ips = Some(ips);
            }
        }
        // NodePorts: NodePort services, and LoadBalancers unless node ports are switched off; and the
        // health-check node port of a LoadBalancer with local external traffic. One conditional write
        // of the stored bitmap takes them all.
        let wants_node_ports = ty == "NodePort"
            || (ty == "LoadBalancer" && spec.allocate_load_balancer_node_ports != Some(false));
        let wants_health_port =
            ty == "LoadBalancer" && spec.external_traffic_policy.as_deref() == Some("Local");
        if !wants_node_ports && !wants_health_port {
            return Ok(Vec::new());
        }
        let original = spec.clone();
        let seed = self.seed();
        let outcome = ipam
            .update_ports(dry_run, |alloc| {
                let mut s = original.clone();
                let mut t = BTreeSet::new();
                let mut rng = SplitMix64::new(seed);
                assign_node_ports(
                    &mut s,
                    alloc,
                    &mut rng,
                    already,
                    &mut t,
                    wants_node_ports,
                    wants_health_port,
                )?;
                let changed = !t.is_empty();
                Ok(((s, t), changed))
            })
            .await?;
        match outcome {
            Ok((s, t)) => {
                let requested: BTreeSet<i32> = original
                    .ports
                    .iter()
                    .flatten()
                    .filter_map(|p| p.node_port)
                    .chain(original.health_check_node_port)
                    .collect();
                for p in &t {
                    let scope = if requested.contains(p) {
                        "static"
                    } else {
                        "dynamic"
                    };
                    ipam.count_port(scope, true);
                }
                *spec = s;
                taken.ports.extend(t);
                Ok(Vec::new())
            }
            Err(PortFailure::Invalid(errs)) => {
                ipam.count_port("static", false);
                Ok(errs)
            }
            Err(PortFailure::Failed(e)) => {
                ipam.count_port("dynamic", false);
                Err(e)
            }
        }
    }

    /// Takes a requested address (see [`Ipam::claim_ip`]). One to be written with the Service is
    /// looked up in the store rather than the cache: a server whose cache is behind another's then
    /// still refuses an address that is taken, with kube's message, before anything else of the
    /// request can fail; the transaction decides a race that is still open.
    async fn take_requested(
        &self,
        ipam: &Ipam,
        ip: IpAddr,
        parent: &Parent,
        with_object: bool,
        dry_run: bool,
    ) -> Result<bool, ApiError> {
        if with_object && !dry_run {
            return ipam.stored_free(ip).await;
        }
        ipam.claim_ip(ip, parent, dry_run).await
    }

    /// A free address of `family` (kube's `AllocateNext` over every ready ServiceCIDR in turn): a
    /// candidate the cache shows as free is claimed in the store, and one someone else claimed first
    /// is passed over.
    async fn allocate_next(
        &self,
        ipam: &Ipam,
        family: IpFamily,
        parent: &Parent,
        cache_only: bool,
    ) -> Result<IpAddr, ApiError> {
        for range in ipam.ready_ranges(family) {
            for ip in range.scan(self.seed()) {
                if ipam.looks_taken(ip) {
                    continue;
                }
                if ipam.claim_ip(ip, parent, cache_only).await? {
                    ipam.count_ip(&range.cidr().to_string(), "dynamic", true);
                    return Ok(ip);
                }
            }
            ipam.count_ip(&range.cidr().to_string(), "dynamic", false);
        }
        Err(ApiError::internal(format!(
            "failed to allocate a serviceIP: {}",
            svcnet_alloc::ClusterIpError::Full
        )))
    }
}

/// Fills in and takes, in `alloc`, the NodePorts of `spec` beyond `already` (and the health-check node
/// port when `health` is asked for), recording what it took in `taken`.
fn assign_node_ports(
    spec: &mut ServiceSpec,
    alloc: &mut NodePortAllocator,
    rng: &mut impl RandomSource,
    already: &Held,
    taken: &mut BTreeSet<i32>,
    node_ports: bool,
    health: bool,
) -> Result<(), PortFailure> {
    let full = |e: NodePortError| {
        PortFailure::Failed(ApiError::internal(format!(
            "failed to allocate a nodePort: {}",
            node_port_msg(&e)
        )))
    };
    if node_ports && let Some(ports) = spec.ports.as_mut() {
        // The same service port number gets the same node port for every protocol, as kube does.
        let mut by_port: Vec<(i32, i32)> = Vec::new();
        for (i, p) in ports.iter_mut().enumerate() {
            match p.node_port.filter(|n| *n != 0) {
                Some(n) => {
                    if already.ports.contains(&n) || taken.contains(&n) {
                        by_port.push((p.port, n));
                        continue;
                    }
                    if let Err(e) = alloc.allocate(n) {
                        return Err(PortFailure::Invalid(vec![FieldError::invalid(
                            format!("spec.ports[{i}].nodePort"),
                            n,
                            node_port_msg(&e),
                        )]));
                    }
                    taken.insert(n);
                    by_port.push((p.port, n));
                }
                None => {
                    if let Some((_, n)) = by_port.iter().find(|(sp, _)| *sp == p.port) {
                        p.node_port = Some(*n);
                        continue;
                    }
                    let n = alloc.allocate_next(rng).map_err(full)?;
                    taken.insert(n);
                    p.node_port = Some(n);
                    by_port.push((p.port, n));
                }
            }
        }
    }
    if health {
        match spec.health_check_node_port.filter(|n| *n != 0) {
            Some(n) if !already.ports.contains(&n) && !taken.contains(&n) => {
                if let Err(e) = alloc.allocate(n) {
                    return Err(PortFailure::Invalid(vec![FieldError::invalid(
                        "spec.healthCheckNodePort",
                        n,
                        format!(
                            "failed to allocate requested HealthCheck NodePort {n}: {}",
                            node_port_msg(&e)
                        ),
                    )]));
                }
                taken.insert(n);
            }
            Some(_) => {}
            None => {
                let n = alloc.allocate_next(rng).map_err(full)?;
                taken.insert(n);
                spec.health_check_node_port = Some(n);
            }
        }
    }
    Ok(())
}

fn node_port_msg(e: &NodePortError) -> String {
    e.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use svcnet_store::redb::RedbStore;

    /// Two servers' hooks over one store, each with its own cache, as two API servers on one etcd.
    async fn two_servers(cidr: &str, ports: &str) -> (tempfile::TempDir, Server, Server) {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(RedbStore::open(&dir.path().join("db")).unwrap());
        let config = ServiceNetConfig {
            service_cidrs: vec![cidr.parse().unwrap()],
            node_port_range: PortRange::parse(ports).unwrap(),
        };
        let mut hooks = Vec::new();
        for _ in 0..2 {
            let h = KindHooks::with_services(config.clone()).unwrap();
            h.attach(
                store.clone(),
                Cache::start(store.clone(), "/").await.unwrap(),
                AllocationMetrics::default(),
            );
            hooks.push(Server {
                hooks: h,
                store: store.clone(),
            });
        }
        let b = hooks.pop().unwrap();
        (dir, hooks.pop().unwrap(), b)
    }

    /// One server's hooks and the store they share.
    #[derive(Clone)]
    struct Server {
        hooks: KindHooks,
        store: Arc<dyn Store>,
    }

    impl Server {
        /// Creates Service `s` as the create handler does: admitted, then written in one transaction
        /// with its IPAddresses; admitted again once this server's cache shows an address another
        /// server took first. A dry run only admits.
        async fn create(&self, s: &mut Value, dry_run: bool) -> Result<Vec<FieldError>, ApiError> {
            let ipam = self.hooks.ipam().unwrap();
            for _ in 0..8 {
                let mut candidate = s.clone();
                let admission = self
                    .hooks
                    .service_create(&mut candidate, dry_run)
                    .await
                    .unwrap()?;
                if !admission.errors.is_empty() || dry_run {
                    *s = candidate;
                    return Ok(admission.errors);
                }
                let name = candidate["metadata"]["name"].as_str().unwrap().to_string();
                let svc_rt = svcnet_api::resources::lookup("", "v1", "services").unwrap();
                let mut writes = admission.with.clone();
                writes.push(svcnet_store::Write::Put {
                    key: crate::request::object_key(svc_rt, Some("default"), &name),
                    value: serde_json::to_vec(&candidate).unwrap().into(),
                    precondition: svcnet_store::Precondition::Absent,
                });
                match self.store.write_all(writes).await.unwrap() {
                    svcnet_store::TxnOutcome::Committed { .. } => {
                        *s = candidate;
                        return Ok(Vec::new());
                    }
                    svcnet_store::TxnOutcome::PreconditionFailed { index, current } => {
                        assert!(index < admission.with.len(), "only addresses conflict here");
                        self.hooks.service_release_unwritten(&candidate).await;
                        let key = current.unwrap().key;
                        let ip: IpAddr = key.rsplit('/').next().unwrap().parse().unwrap();
                        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
                        while !ipam.looks_taken(ip) && std::time::Instant::now() < deadline {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                        }
                    }
                }
            }
            panic!("an address conflict eight times in a row")
        }
    }

    fn svc(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "NodePort", "ports": [{"port": 80}]}})
    }

    /// Concurrent creates through two servers until both ranges are exactly full: every address and
    /// every port once, then "range is full" from either.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_servers_never_hand_out_one_address_or_port() {
        // 30 usable addresses and 30 ports.
        let (_dir, a, b) = two_servers("10.0.0.0/27", "30000-30029").await;
        let mut tasks = Vec::new();
        for i in 0..30 {
            let h = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let mut s = svc(&format!("s{i}"));
                let errs = h.create(&mut s, false).await.unwrap();
                assert!(errs.is_empty(), "{errs:?}");
                s
            }));
        }
        let mut ips = BTreeSet::new();
        let mut ports = BTreeSet::new();
        let mut first = None;
        for t in tasks {
            let s = t.await.unwrap();
            first.get_or_insert_with(|| s.clone());
            assert!(ips.insert(s["spec"]["clusterIP"].as_str().unwrap().to_string()));
            assert!(ports.insert(s["spec"]["ports"][0]["nodePort"].as_i64().unwrap()));
        }
        assert_eq!((ips.len(), ports.len()), (30, 30));
        for h in [&a, &b] {
            let err = h.create(&mut svc("more"), false).await.unwrap_err();
            assert!(err.message.contains("range is full"), "{}", err.message);
        }
        // A dry run takes nothing; a release gives both back, to either server.
        let s0 = first.unwrap();
        let (ip, port) = (
            s0["spec"]["clusterIP"].clone(),
            s0["spec"]["ports"][0]["nodePort"].clone(),
        );
        a.hooks.service_release(&s0, None).await;
        // b picks addresses from its cache: it must have seen the release.
        let released: IpAddr = ip.as_str().unwrap().parse().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while b.hooks.ipam().unwrap().looks_taken(released) {
            assert!(
                std::time::Instant::now() < deadline,
                "b's cache never saw the release"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut again = svc("again");
        again["spec"]["clusterIP"] = ip.clone();
        assert!(b.create(&mut again.clone(), true).await.unwrap().is_empty());
        assert!(b.create(&mut again, false).await.unwrap().is_empty());
        assert_eq!(again["spec"]["ports"][0]["nodePort"], port);
        // The released address is held again: asked for once more, it is refused in kube's words. (Asked
        // of a server whose cache is behind, the address looks free and the NodePort range, full, says
        // no first: wait for a's cache.)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !a.hooks.ipam().unwrap().looks_taken(released) {
            assert!(
                std::time::Instant::now() < deadline,
                "a's cache never saw the address"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut copy = svc("copy");
        copy["spec"]["clusterIP"] = ip;
        let errs = a.create(&mut copy, false).await.unwrap();
        assert!(
            errs[0].to_string().contains("provided IP is already allocated"),
            "{errs:?}"
        );
    }
}
