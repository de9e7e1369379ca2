//! LoadBalancer IPAM: addresses for `type: LoadBalancer` Services without a cloud, in the spirit of
//! MetalLB's controller.
//!
//! [`run_lb_ipam`] follows every Service through the shared Service informer. Each LoadBalancer whose `spec.loadBalancerClass` is unset or
//! equals [`LbIpamConfig::class`] gets one address per family of its `spec.ipFamilies` that the pool
//! has, written to `status.loadBalancer.ingress` through the `status` subresource (field manager
//! [`FIELD_MANAGER`]). Services of any other class are never touched.
//!
//! * **Requests.** The annotation [`LB_IPS_ANNOTATION`] (`svcnet.io/load-balancer-ips: "ip1,ip2"`, at
//!   most one address per family) or the deprecated `spec.loadBalancerIP` asks for specific addresses;
//!   the annotation wins when both are set. A request that cannot be met (address taken, outside the
//!   pool, malformed, or of a family the Service does not have) leaves the Service without ingress.
//! * **Sharing.** Services with the same [`SHARED_IP_ANNOTATION`] (`svcnet.io/allow-shared-ip`) value
//!   share one address per family, as MetalLB's `allow-shared-ip` does: their ports must not clash
//!   (port and protocol, so DNS on 53/TCP and 53/UDP share) and under `externalTrafficPolicy: Local`
//!   they must select the same pods. A Service with a key that asks for any address joins its key's
//!   address; a request for a specific address may join its holders under the same rules. A clash is
//!   refused (`AllocationFailed`, naming the holder and the port) and the Service waits until it fits.
//! * **Failures** are reported as core/v1 Events (type Warning, reason `AllocationFailed`, source
//!   component [`FIELD_MANAGER`]), once per distinct failure. A Service that waits for capacity (pool
//!   exhausted, or its requested address held by another Service) is re-checked, oldest first, whenever
//!   an address is released: a Service deleted, changed away from LoadBalancer or moved to another
//!   address. A new assignment is reported as a Normal `IPAllocated` Event.
//! * **All or nothing.** A dual-stack Service gets new addresses only if it can get every family it
//!   lacks, so a waiting Service never hoards half a pair; addresses it already holds stay.
//! * **Restarts.** Assignments live in the Services' status, not in the controller. After every (re)list
//!   the controller claims the addresses the statuses show, oldest Service first; a younger Service
//!   showing an already claimed address loses it (Warning `AddressConflict`) and gets another; a status
//!   address outside the pool (the pool was changed) is replaced.
//!
//! The work is event-driven: one (shared) watch on Services, one evaluation per changed Service, plus the
//! waiting Services when capacity frees up. Status writes are conditional on the resourceVersion the
//! decision was based on; a conflict is resolved by the newer version that the watch delivers next.

mod service;
mod state;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use svcnet_alloc::{LbPool, PoolError};
use svcnet_informer::{Event as InformerEvent, Informer};
use thiserror::Error;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::events::{Involved, Recorder};
use service::{SvcInfo, SvcKey};
use state::{Action, IpamState};

/// The `loadBalancerClass` svcnet's IPAM serves by default (`svcnet up --lb-class`).
pub const DEFAULT_LB_CLASS: &str = "svcnet.io/lb";

/// Annotation requesting specific addresses: a comma-separated list, at most one per IP family, e.g.
/// `svcnet.io/load-balancer-ips: "127.240.0.10,fd00::10"`. Takes precedence over `spec.loadBalancerIP`.
pub const LB_IPS_ANNOTATION: &str = "svcnet.io/load-balancer-ips";

/// Annotation letting Services share one address (MetalLB's `allow-shared-ip`): Services with the
/// same value get the same address when their ports do not clash (e.g. DNS on TCP and on UDP) and,
/// under `externalTrafficPolicy: Local`, they select the same pods.
pub const SHARED_IP_ANNOTATION: &str = "svcnet.io/allow-shared-ip";

/// Field manager of the status writes, and `source.component` of the Events.
pub const FIELD_MANAGER: &str = "svcnet-lb-ipam";

/// The first delay after a failed status write; it doubles per failure up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// Configuration of [`run_lb_ipam`].
#[derive(Debug, Clone)]
pub struct LbIpamConfig {
    /// The addresses to hand out. Only its entries are used: allocations it may already hold are
    /// ignored, since the controller rebuilds them from the Services' status.
    pub pool: LbPool,
    /// The `spec.loadBalancerClass` this controller serves (Services without a class are served too).
    pub class: String,
}

impl LbIpamConfig {
    /// A configuration serving [`DEFAULT_LB_CLASS`] from `pool`.
    pub fn new(pool: LbPool) -> Self {
        Self {
            pool,
            class: DEFAULT_LB_CLASS.to_owned(),
        }
    }
}

/// Why [`run_lb_ipam`] stopped.
#[derive(Debug, Error)]
pub enum Error {
    /// The pool's entries are invalid (overlapping, malformed).
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// The Service watch ended, which a watcher with backoff never does on its own.
    #[error("the Service watch ended")]
    WatchEnded,
}

/// Runs the LoadBalancer IPAM controller until the returned future is dropped.
///
/// API errors are retried (the informer's watch with backoff, failed status writes with backoff per
/// Service); only an invalid pool or the informer going away return an error.
pub async fn run_lb_ipam(
    client: Client,
    services: Informer<Service>,
    cfg: LbIpamConfig,
) -> Result<(), Error> {
    let mut state = IpamState::new(cfg.pool.entries().to_vec())?;
    let mut shell = Shell {
        client: client.clone(),
        recorder: Recorder::new(client.clone(), FIELD_MANAGER),
        retry_at: BTreeMap::new(),
        attempts: HashMap::new(),
    };
    let store = services.store();
    let mut events = services.subscribe();
    // Whether the first list is in: until then nothing is decided one Service at a time, so that no
    // Service is handed an address another one's status already shows.
    let mut listed = false;
    info!(pool = %entries_text(&cfg.pool), class = %cfg.class, "LoadBalancer IPAM started");
    loop {
        let next_retry = shell.retry_at.values().min().copied();
        let actions = tokio::select! {
            event = events.next() => match event {
                None => return Err(Error::WatchEnded),
                Some(InformerEvent::Listed) => {
                    // After every (re)list, the assignments are rebuilt from the whole cache, which
                    // now equals the list.
                    listed = true;
                    let listing: Vec<SvcInfo> = store
                        .state()
                        .iter()
                        .filter_map(|svc| SvcInfo::from_service(svc, &cfg.class))
                        .collect();
                    debug!(services = listing.len(), "Service list complete; rebuilding assignments");
                    state.resync(listing)
                }
                Some(_) if !listed => continue,
                Some(InformerEvent::Apply { obj: svc, .. }) => match SvcInfo::from_service(&svc, &cfg.class) {
                    Some(info) => state.apply(info),
                    None => continue,
                },
                Some(InformerEvent::Delete(svc)) => match SvcKey::of(&svc) {
                    Some(key) => {
                        shell.retry_at.remove(&key);
                        shell.attempts.remove(&key);
                        state.delete(&key)
                    }
                    None => continue,
                },
            },
            _ = sleep_until(next_retry) => {
                let now = Instant::now();
                let due: Vec<SvcKey> = shell
                    .retry_at
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(k, _)| k.clone())
                    .collect();
                let mut actions = Vec::new();
                for key in due {
                    shell.retry_at.remove(&key);
                    actions.extend(state.reconcile(&key));
                }
                actions
            }
        };
        shell.execute(&mut state, &cfg.class, actions).await;
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn entries_text(pool: &LbPool) -> String {
    let entries: Vec<String> = pool.entries().iter().map(|e| e.to_string()).collect();
    entries.join(",")
}

/// The I/O half: carries out [`Action`]s.
struct Shell {
    client: Client,
    recorder: Recorder,
    /// Services whose status write failed for a reason a newer watch event will not fix (the API
    /// server unreachable, say): when to re-evaluate them.
    retry_at: BTreeMap<SvcKey, Instant>,
    /// Consecutive failed status writes per Service, for the backoff.
    attempts: HashMap<SvcKey, u32>,
}

impl Shell {
    async fn execute(&mut self, state: &mut IpamState, class: &str, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::WriteStatus {
                    key,
                    uid: _,
                    resource_version,
                    ingress,
                } => {
                    if let Some(svc) = self.write_status(&key, &resource_version, &ingress).await {
                        self.attempts.remove(&key);
                        if let Some(info) = SvcInfo::from_service(&svc, class) {
                            state.observe(info);
                        }
                    }
                }
                Action::Event {
                    key,
                    uid,
                    resource_version,
                    type_,
                    reason,
                    message,
                } => {
                    if type_ == state::EventType::Warning {
                        warn!(service = %key, reason, detail = %message, "LoadBalancer IPAM event");
                    } else {
                        info!(service = %key, reason, detail = %message, "LoadBalancer IPAM event");
                    }
                    let about = Involved {
                        api_version: "v1",
                        kind: "Service",
                        namespace: &key.namespace,
                        name: &key.name,
                        uid: &uid,
                        resource_version: &resource_version,
                    };
                    self.recorder
                        .record(&about, type_.as_str(), reason, &message)
                        .await;
                }
            }
        }
    }

    /// Writes the ingress; returns the updated Service, or `None` (with a retry scheduled when the
    /// watch will not bring a newer version by itself).
    async fn write_status(
        &mut self,
        key: &SvcKey,
        resource_version: &str,
        ingress: &[IpAddr],
    ) -> Option<Service> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), &key.namespace);
        let list = if ingress.is_empty() {
            // Merge-patch null removes the list: `status.loadBalancer: {}` as on a fresh Service.
            serde_json::Value::Null
        } else {
            ingress
                .iter()
                .map(|ip| json!({"ip": ip.to_string(), "ipMode": "VIP"}))
                .collect()
        };
        let mut patch = json!({"status": {"loadBalancer": {"ingress": list}}});
        if !resource_version.is_empty() {
            // Conditional: the decision was made on this version.
            patch["metadata"] = json!({"resourceVersion": resource_version});
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        match api.patch_status(&key.name, &params, &Patch::Merge(&patch)).await {
            Ok(svc) => {
                info!(service = %key, ingress = ?ingress, "LoadBalancer status written");
                Some(svc)
            }
            // Changed (409), gone (404) or no longer a LoadBalancer (422): the watch delivers the
            // newer version, and that is re-evaluated.
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409 | 422) => {
                debug!(service = %key, code = status.code, message = %status.message, "status write superseded");
                None
            }
            Err(e) => {
                let attempts = self.attempts.entry(key.clone()).or_insert(0);
                *attempts += 1;
                let delay = FIRST_RETRY.saturating_mul(1 << (*attempts).min(8)).min(MAX_RETRY);
                warn!(service = %key, error = %e, retry_in = ?delay, "LoadBalancer status write failed");
                self.retry_at.insert(key.clone(), Instant::now() + delay);
                None
            }
        }
    }
}
