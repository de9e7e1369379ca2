//! Service address allocation that is safe across API servers sharing one store, as Kubernetes 1.33
//! does it:
//!
//! * **ClusterIPs are IPAddress objects** (kube's `ipallocator.Allocator`): an address is taken by
//!   creating `networking.k8s.io/v1` IPAddress `<ip>` in the store with "create if absent"; whoever's
//!   create commits holds it, so two API servers (or two requests in one) can never hand out one address.
//!   A Service create writes its IPAddresses in the same store transaction as the Service
//!   ([`Ipam::claim_write`]): one etcd transaction instead of two, and nothing to clean up when the
//!   Service's write fails; updates that take a new address create it first, on its own.
//!   Free addresses are looked for in the watch cache (kube's lister) over every ready ServiceCIDR, the
//!   store deciding when two look at once. Releasing deletes the object, only if it still names the
//!   Service releasing it.
//! * **NodePorts are one bitmap in the store** (kube's RangeAllocation at
//!   `/registry/ranges/servicenodeports`), read and written back with compare-`mod_revision`: a
//!   Service's ports are taken in one conditional write, retried on a concurrent change.
//!
//! Nothing is kept in memory between requests, so nothing needs rebuilding at start-up; what a crash
//! between reserving and writing the Service leaves behind (NodePorts, an address an update took) is
//! found by the repair loop (`repair`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use ipnet::IpNet;
use serde_json::{Value, json};
use svcnet_alloc::{ClusterIpRange, NodePortAllocator, PortRange};
use svcnet_api::resources::{self, ResourceType};
use svcnet_api::service::IpFamily;
use svcnet_kinds::kinds::{ipaddress, servicecidr};
use svcnet_store::{Precondition, Revision, Store, Write, WriteOutcome};
use tracing::warn;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::cache::Cache;
use crate::errors::ApiError;
use crate::metrics::{AllocationMetrics, CidrScope, Scope};
use crate::request::{collection_prefix, object_key};

/// The storage key of the NodePort allocations (kube keeps them at `/registry/ranges/servicenodeports`).
pub const NODE_PORTS_KEY: &str = "/ranges/servicenodeports";

/// How often a NodePort write is retried when another writer changed the bitmap meanwhile.
const PORT_RETRIES: usize = 64;

/// The Service an address belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl Parent {
    /// The Service `obj` names.
    pub fn of(obj: &Value) -> Self {
        let s = |k: &str| {
            obj.get("metadata")
                .and_then(|m| m.get(k))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Parent {
            namespace: s("namespace"),
            name: s("name"),
        }
    }

    /// Whether IPAddress `obj` names this Service as its parent.
    pub fn owns(&self, obj: &Value) -> bool {
        // Looked up without building pointers: the repair loop asks this of every IPAddress.
        let parent_ref = obj.get("spec").and_then(|s| s.get("parentRef"));
        let p = |k: &str| parent_ref.and_then(|r| r.get(k)).and_then(Value::as_str);
        p("group").unwrap_or_default().is_empty()
            && p("resource") == Some("services")
            && p("namespace").unwrap_or_default() == self.namespace
            && p("name") == Some(self.name.as_str())
    }
}

/// The served IPAddress type.
pub fn ip_address_rt() -> &'static ResourceType {
    resources::lookup("networking.k8s.io", "v1", "ipaddresses").expect("IPAddresses are served")
}

/// The served ServiceCIDR type.
pub fn service_cidr_rt() -> &'static ResourceType {
    resources::lookup("networking.k8s.io", "v1", "servicecidrs").expect("ServiceCIDRs are served")
}

/// The storage key of IPAddress `ip`.
pub fn ip_key(ip: IpAddr) -> String {
    object_key(ip_address_rt(), None, &ip.to_canonical().to_string())
}

/// The IPAddress object the allocator writes for `ip` held by `parent` (kube's `newIPAddress`).
pub fn ip_address_object(ip: IpAddr, parent: &Parent) -> Value {
    let family = if ip.to_canonical().is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    };
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "IPAddress",
        "metadata": {
            "name": ip.to_canonical().to_string(),
            "uid": uuid::Uuid::new_v4().to_string(),
            "creationTimestamp": crate::handlers::now_rfc3339(),
            "labels": {
                ipaddress::LABEL_IP_FAMILY: family,
                ipaddress::LABEL_MANAGED_BY: ipaddress::MANAGED_BY_ALLOCATOR,
            },
        },
        "spec": {"parentRef": {"group": "", "resource": "services", "namespace": parent.namespace, "name": parent.name}},
    })
}

/// Whether a ServiceCIDR hands out addresses: not being deleted, and not reported not Ready.
pub fn service_cidr_ready(obj: &Value) -> bool {
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return false;
    }
    let not_ready = obj
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("False")))
        });
    !not_ready
}

/// The CIDRs of a ServiceCIDR that parse.
pub fn cidrs_of(obj: &Value) -> Vec<IpNet> {
    obj.pointer("/spec/cidrs")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str()?.parse::<IpNet>().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The store and cache allocation reads and writes through.
pub struct Ipam {
    store: Arc<dyn Store>,
    cache: Arc<Cache>,
    /// The ranges of the flags, used while no ServiceCIDR exists yet (the first start, before the default
    /// one is written).
    flag_cidrs: Vec<IpNet>,
    node_ports: PortRange,
    metrics: AllocationMetrics,
    /// NodePorts allocated when the bitmap was last read or written (-1: not yet), for the gauge.
    ports_used: AtomicI64,
    /// The ServiceCIDRs as last decoded, with the (key, revision) of each: every ClusterIP allocation
    /// reads them, and decoding them again for each create was 4 % of the server's CPU in a burst of
    /// creates. Reused for as long as the cache shows the same versions.
    cidrs: Mutex<Option<CidrMemo>>,
}

/// The decoded ServiceCIDRs and the versions they were decoded from.
struct CidrMemo {
    versions: Vec<(Arc<str>, Revision)>,
    sorted: Arc<Vec<Value>>,
}

impl Ipam {
    /// Allocation over `store`, looking things up in `cache`.
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<Cache>,
        flag_cidrs: Vec<IpNet>,
        node_ports: PortRange,
        metrics: AllocationMetrics,
    ) -> Self {
        Ipam {
            store,
            cache,
            flag_cidrs,
            node_ports,
            metrics,
            ports_used: AtomicI64::new(-1),
            cidrs: Mutex::new(None),
        }
    }

    /// The allocator and repair counters.
    pub fn metrics(&self) -> &AllocationMetrics {
        &self.metrics
    }

    /// Counts one ClusterIP allocation (or failed one) from `cidr`.
    pub fn count_ip(&self, cidr: &str, scope: &str, ok: bool) {
        let family = if ok {
            &self.metrics.ip_allocations
        } else {
            &self.metrics.ip_allocation_errors
        };
        family
            .get_or_create(&CidrScope {
                cidr: cidr.to_string(),
                scope: scope.to_string(),
            })
            .inc();
    }

    /// Counts one NodePort allocation (or failed one).
    pub fn count_port(&self, scope: &str, ok: bool) {
        let family = if ok {
            &self.metrics.port_allocations
        } else {
            &self.metrics.port_allocation_errors
        };
        family
            .get_or_create(&Scope {
                scope: scope.to_string(),
            })
            .inc();
    }

    /// kube-apiserver's allocated/available gauges, computed from the cache (ClusterIPs per
    /// ServiceCIDR) and the last NodePort bitmap seen, as OpenMetrics text.
    pub fn gauges(&self) -> String {
        #[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
        struct Cidr {
            cidr: String,
        }
        let allocated = Family::<Cidr, Gauge>::default();
        let available = Family::<Cidr, Gauge>::default();
        let addresses: Vec<IpAddr> = self
            .cache
            .list(&collection_prefix(ip_address_rt(), None), None)
            .0
            .iter()
            .filter_map(|c| c.key.rsplit('/').next()?.parse().ok())
            .collect();
        for obj in self.service_cidrs().iter() {
            for net in cidrs_of(obj) {
                let range = ClusterIpRange::new(net);
                let used = addresses.iter().filter(|ip| range.contains(**ip)).count();
                let label = Cidr {
                    cidr: range.cidr().to_string(),
                };
                allocated.get_or_create(&label).set(used as i64);
                available
                    .get_or_create(&label)
                    .set(range.capacity().saturating_sub(used) as i64);
            }
        }
        let mut reg = Registry::default();
        reg.register(
            "kube_apiserver_clusterip_allocator_allocated_ips",
            "Gauge measuring the number of allocated IPs for Services",
            allocated,
        );
        reg.register(
            "kube_apiserver_clusterip_allocator_available_ips",
            "Gauge measuring the number of available IPs for Services",
            available,
        );
        let used = self.ports_used.load(Ordering::Relaxed);
        if used >= 0 {
            let (a, b) = (Gauge::<i64>::default(), Gauge::<i64>::default());
            a.set(used);
            b.set(self.node_ports.size() as i64 - used);
            reg.register(
                "kube_apiserver_nodeport_allocator_allocated_ports",
                "Gauge measuring the number of allocated NodePorts for Services",
                a,
            );
            reg.register(
                "kube_apiserver_nodeport_allocator_available_ports",
                "Gauge measuring the number of available NodePorts for Services",
                b,
            );
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }

    /// The NodePort range.
    pub fn node_port_range(&self) -> PortRange {
        self.node_ports
    }

    /// Every ServiceCIDR, the default one first, then by creation time and name.
    pub fn service_cidrs(&self) -> Arc<Vec<Value>> {
        let listed = self
            .cache
            .list(&collection_prefix(service_cidr_rt(), None), None)
            .0;
        let versions: Vec<(Arc<str>, Revision)> =
            listed.iter().map(|c| (c.key.clone(), c.revision)).collect();
        let mut memo = self.cidrs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = memo.as_ref()
            && m.versions == versions
        {
            return m.sorted.clone();
        }
        let mut all: Vec<Value> = listed.into_iter().map(|c| c.object()).collect();
        let key = |o: &Value| {
            let s = |p: &str| {
                o.pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (
                s("/metadata/name") != servicecidr::DEFAULT_NAME,
                s("/metadata/creationTimestamp"),
                s("/metadata/name"),
            )
        };
        all.sort_by_key(key);
        let sorted = Arc::new(all);
        *memo = Some(CidrMemo {
            versions,
            sorted: sorted.clone(),
        });
        sorted
    }

    /// The ranges of `family` addresses are handed out from, in the order they are tried.
    pub fn ready_ranges(&self, family: IpFamily) -> Vec<ClusterIpRange> {
        let cidrs = self.service_cidrs();
        let nets: Vec<IpNet> = if cidrs.is_empty() {
            self.flag_cidrs.clone()
        } else {
            cidrs
                .iter()
                .filter(|o| service_cidr_ready(o))
                .flat_map(cidrs_of)
                .collect()
        };
        let mut out: Vec<ClusterIpRange> = Vec::new();
        for net in nets {
            if IpFamily::of(net.network()) == family && !out.iter().any(|r| r.cidr() == net.trunc()) {
                out.push(ClusterIpRange::new(net));
            }
        }
        out
    }

    /// Whether the cache shows IPAddress `ip` (a hint: the store decides).
    pub fn looks_taken(&self, ip: IpAddr) -> bool {
        self.cache.get(&ip_key(ip)).is_some()
    }

    /// The stored IPAddress `ip`, if any, as the cache has it.
    pub fn cached_ip(&self, ip: IpAddr) -> Option<Value> {
        self.cache.get(&ip_key(ip)).map(|c| c.object())
    }

    /// The write that takes `ip` for `parent`: a create of its IPAddress, refused if it exists.
    pub fn claim_write(&self, ip: IpAddr, parent: &Parent) -> Result<Write, ApiError> {
        let body = serde_json::to_vec(&ip_address_object(ip, parent)).map_err(ApiError::internal)?;
        Ok(Write::Put {
            key: ip_key(ip),
            value: Bytes::from(body),
            precondition: Precondition::Absent,
        })
    }

    /// Whether the store holds no IPAddress `ip` now (a read, where the cache may be behind).
    pub async fn stored_free(&self, ip: IpAddr) -> Result<bool, ApiError> {
        Ok(self.store.get(&ip_key(ip)).await?.is_none())
    }

    /// Takes `ip` for `parent` by creating its IPAddress; `false` when it is taken already. With
    /// `cache_only` (a dry run, or a create that writes the IPAddress together with its Service,
    /// [`Ipam::claim_write`]) nothing is written and the cache answers.
    pub async fn claim_ip(&self, ip: IpAddr, parent: &Parent, cache_only: bool) -> Result<bool, ApiError> {
        if cache_only {
            return Ok(!self.looks_taken(ip));
        }
        let outcome = self.store.write(self.claim_write(ip, parent)?).await?;
        Ok(matches!(outcome, WriteOutcome::Committed { .. }))
    }

    /// Releases `ip` held by `parent`: deletes its IPAddress if that still names `parent` (an address
    /// another Service holds now is never touched).
    pub async fn release_ip(&self, ip: IpAddr, parent: &Parent) {
        let key = ip_key(ip);
        let result = async {
            let Some(kv) = self.store.get(&key).await? else {
                return Ok(());
            };
            let obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
            if !parent.owns(&obj) {
                return Ok(());
            }
            self.store
                .write(Write::Delete {
                    key: key.clone(),
                    precondition: Precondition::ModRevision(kv.mod_revision),
                })
                .await
                .map(|_| ())
        }
        .await;
        if let Err(e) = result {
            // The repair loop deletes an IPAddress whose Service does not hold it.
            warn!(%ip, error = %e, "releasing a ClusterIP failed; the repair loop will");
        }
    }

    /// Reads the stored NodePort bitmap: the allocator and the revision to write it back at (`None`:
    /// absent).
    pub async fn load_ports(&self) -> Result<(NodePortAllocator, Option<u64>), ApiError> {
        let Some(kv) = self.store.get(NODE_PORTS_KEY).await? else {
            return Ok((NodePortAllocator::new(self.node_ports), None));
        };
        let obj: Value = serde_json::from_slice(&kv.value).unwrap_or(Value::Null);
        let stored_range = obj
            .get("range")
            .and_then(Value::as_str)
            .and_then(|r| PortRange::parse(r).ok())
            .unwrap_or(self.node_ports);
        let data = obj
            .get("data")
            .and_then(Value::as_str)
            .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
            .unwrap_or_default();
        let ports = NodePortAllocator::from_bytes(self.node_ports, stored_range, &data);
        self.ports_used.store(ports.used() as i64, Ordering::Relaxed);
        Ok((ports, Some(kv.mod_revision)))
    }

    /// Writes the NodePort bitmap back if nobody changed it since `revision`; `false` if somebody did.
    pub async fn store_ports(
        &self,
        ports: &NodePortAllocator,
        revision: Option<u64>,
    ) -> Result<bool, ApiError> {
        let body = json!({
            "apiVersion": "v1",
            "kind": "RangeAllocation",
            "metadata": {"name": "servicenodeports"},
            "range": ports.range().to_string(),
            "data": base64::engine::general_purpose::STANDARD.encode(ports.to_bytes()),
        });
        let outcome = self
            .store
            .write(Write::Put {
                key: NODE_PORTS_KEY.into(),
                value: Bytes::from(serde_json::to_vec(&body).map_err(ApiError::internal)?),
                precondition: revision.map_or(Precondition::Absent, Precondition::ModRevision),
            })
            .await?;
        let committed = matches!(outcome, WriteOutcome::Committed { .. });
        if committed {
            self.ports_used.store(ports.used() as i64, Ordering::Relaxed);
        }
        Ok(committed)
    }

    /// Runs `change` on the stored NodePort bitmap and writes the result back with compare-and-swap,
    /// again from a fresh read whenever another writer got there first. `change` answers its result and
    /// whether it changed anything; an `Err` writes nothing. In a dry run nothing is written.
    pub async fn update_ports<T, E>(
        &self,
        dry_run: bool,
        mut change: impl FnMut(&mut NodePortAllocator) -> Result<(T, bool), E>,
    ) -> Result<Result<T, E>, ApiError> {
        for _ in 0..PORT_RETRIES {
            let (mut ports, revision) = self.load_ports().await?;
            let (out, changed) = match change(&mut ports) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            if !changed || dry_run || self.store_ports(&ports, revision).await? {
                return Ok(Ok(out));
            }
        }
        Err(ApiError::internal(
            "failed to allocate a nodePort: too many concurrent changes to the NodePort range",
        ))
    }

    /// Releases `ports`.
    pub async fn release_ports(&self, ports: &[i32]) {
        if ports.is_empty() {
            return;
        }
        let res = self
            .update_ports(false, |a| {
                let mut changed = false;
                for p in ports {
                    changed |= a.release(*p);
                }
                Ok::<_, ()>(((), changed))
            })
            .await;
        if let Err(e) = res {
            warn!(?ports, error = %e, "releasing NodePorts failed; the repair loop will");
        }
    }
}
