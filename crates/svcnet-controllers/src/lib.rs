//! svcnet's controllers: cluster-wide control loops that, like Kubernetes' own, talk to the API server
//! only through its API (list + watch, then writes), with a kube-rs client. They run inside
//! `svcnet up` and work unchanged against any Kubernetes API server.
//!
//! * [`lb_ipam`]: LoadBalancer IPAM, addresses for `type: LoadBalancer` Services from a configured
//!   pool, without a cloud.
//! * [`nodes`]: node pod CIDRs, node lifecycle (lease expiry, taints, taint-based eviction) and the
//!   scheduler; [`taints`]: taint and toleration matching.
//! * [`workloads`]: the ReplicaSet and Deployment controllers (rolling updates, rollbacks, scaling).
//! * [`endpointslice`]: the EndpointSlice, Endpoints and EndpointSlice mirroring controllers.
//!
//! Like kube-controller-manager's shared informers, the kinds several controllers read (Pods, Nodes,
//! Services) are watched and cached once per process, in [`SharedInformers`], which every entry point
//! takes; each subscribes to the events it needs (see [`svcnet_informer`]).
//!
//! Like kube-controller-manager with `--use-service-account-credentials`, each controller writes with a
//! client of its own identity ([`Clients`], names in [`identity`]), so RBAC limits it to its role and
//! the audit log names it; the shared informers watch as the controller manager itself.

pub mod bootstrap_signer;
pub mod certificates;
pub mod clusterrole_aggregation;
pub mod disruption;
pub mod endpointslice;
pub mod events;
pub mod lb_ipam;
mod node_lifecycle;
pub mod nodes;
mod queue;
pub mod root_ca;
pub mod serviceaccounts;
pub mod taints;
pub mod workloads;

pub use lb_ipam::{Error, LbIpamConfig, run_lb_ipam};

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use svcnet_informer::Informer;

/// The identities the controllers run as: the ServiceAccounts in `kube-system` that
/// kube-controller-manager's `--use-service-account-credentials` gives each controller (kube's names,
/// bound to kube's `system:controller:<name>` roles), one of svcnet's own, and the scheduler's user.
pub mod identity {
    /// The EndpointSlice controller.
    pub const ENDPOINTSLICE: &str = "endpointslice-controller";
    /// The Endpoints controller.
    pub const ENDPOINT: &str = "endpoint-controller";
    /// The EndpointSlice mirroring controller.
    pub const ENDPOINTSLICE_MIRRORING: &str = "endpointslicemirroring-controller";
    /// Node lifecycle, node IPAM (kube runs its range allocator as this one too) and the pod
    /// garbage collection of vanished nodes.
    pub const NODE: &str = "node-controller";
    /// The `default` ServiceAccount of every namespace.
    pub const SERVICE_ACCOUNT: &str = "service-account-controller";
    /// The Deployment controller.
    pub const DEPLOYMENT: &str = "deployment-controller";
    /// The ReplicaSet controller.
    pub const REPLICASET: &str = "replicaset-controller";
    /// csrapproving and csrsigning.
    pub const CERTIFICATE: &str = "certificate-controller";
    /// The bootstrap signer (cluster-info's JWS signatures).
    pub const BOOTSTRAP_SIGNER: &str = "bootstrap-signer";
    /// The root-ca-cert-publisher (`kube-root-ca.crt` in every namespace).
    pub const ROOT_CA_CERT_PUBLISHER: &str = "root-ca-cert-publisher";
    /// The clusterrole-aggregation controller (aggregated ClusterRoles' `rules`).
    pub const CLUSTERROLE_AGGREGATION: &str = "clusterrole-aggregation-controller";
    /// svcnet's LoadBalancer IPAM (kube has none): `system:controller:svcnet-lb-ipam-controller`.
    pub const LB_IPAM: &str = "svcnet-lb-ipam-controller";
    /// Every ServiceAccount above.
    pub const SERVICE_ACCOUNTS: &[&str] = &[
        ENDPOINTSLICE,
        ENDPOINT,
        ENDPOINTSLICE_MIRRORING,
        NODE,
        SERVICE_ACCOUNT,
        DEPLOYMENT,
        REPLICASET,
        CERTIFICATE,
        BOOTSTRAP_SIGNER,
        CLUSTERROLE_AGGREGATION,
        ROOT_CA_CERT_PUBLISHER,
        LB_IPAM,
    ];
    /// The scheduler is no controller of kube-controller-manager: it is the user kube-scheduler
    /// authenticates as, with kube's ClusterRole `system:kube-scheduler`.
    pub const SCHEDULER: &str = "kube-scheduler";
}

/// Which client each controller talks through (see [`identity`]). A name without a client of its own
/// gets the fallback: the one client of [`Clients::single`] (tests, one identity for everything), or
/// in `svcnet up` the controller manager's own, which may only read.
#[derive(Clone)]
pub struct Clients {
    fallback: kube::Client,
    named: HashMap<&'static str, kube::Client>,
}

impl Clients {
    /// Every controller on `client`.
    pub fn single(client: kube::Client) -> Self {
        Clients {
            fallback: client,
            named: HashMap::new(),
        }
    }

    /// `controller` on `client` from now on.
    pub fn with(mut self, controller: &'static str, client: kube::Client) -> Self {
        self.named.insert(controller, client);
        self
    }

    /// The client of `controller`.
    pub fn get(&self, controller: &str) -> kube::Client {
        self.named.get(controller).unwrap_or(&self.fallback).clone()
    }
}

/// The informers the controllers share: one watch and one cache per kind for the whole process. Cheap
/// to clone; the watches stop when the last clone is dropped.
#[derive(Clone)]
pub struct SharedInformers {
    /// Every pod, cut down by [`trim_shared_pod`] to what any controller reads.
    pub pods: Informer<Pod>,
    /// Every node (without managed fields).
    pub nodes: Informer<Node>,
    /// Every Service (without managed fields).
    pub services: Informer<Service>,
    /// Every namespace (without managed fields): the service-account controller and the
    /// root-ca-cert-publisher each keep an object in every active one.
    pub namespaces: Informer<Namespace>,
    /// The client the shared watches run through (kube-controller-manager's own identity, which may
    /// list and watch everything); a controller starts watches of kinds its own role may not list
    /// through it, as kube's controllers take those from the shared informer factory.
    watcher: Option<kube::Client>,
}

impl SharedInformers {
    /// Creates the informers and starts their watches through `client` (on tasks of their own: call it
    /// inside a tokio runtime).
    pub fn start(client: &kube::Client) -> Self {
        let s = Self::new();
        s.pods.spawn(kube::Api::all(client.clone()));
        s.nodes.spawn(kube::Api::all(client.clone()));
        s.services.spawn(kube::Api::all(client.clone()));
        s.namespaces.spawn(kube::Api::all(client.clone()));
        Self {
            watcher: Some(client.clone()),
            ..s
        }
    }

    /// The client to watch through: the shared informers' own, or `own` when they were made by hand.
    pub fn watcher_or(&self, own: &kube::Client) -> kube::Client {
        self.watcher.as_ref().unwrap_or(own).clone()
    }

    /// The informers, not running (tests feed them by hand).
    pub fn new() -> Self {
        Self {
            pods: Informer::new(trim_shared_pod),
            nodes: Informer::new(trim_managed_fields),
            services: Informer::new(trim_managed_fields),
            namespaces: Informer::new(trim_managed_fields),
            watcher: None,
        }
    }
}

impl Default for SharedInformers {
    fn default() -> Self {
        Self::new()
    }
}

/// Cuts a pod down to what the controllers sharing the one Pod cache read, as it arrives: the node loops
/// (identity, labels, placement and scheduling constraints, phase, conditions), the workload controllers
/// (the deletion-cost annotation, restart counts) and the EndpointSlice controllers (each container's
/// name, ports and restart policy for named target ports, hostname, subdomain, IPs). The controllers
/// write pods only by name (patches, bindings, deletions), never back from the cache.
pub fn trim_shared_pod(p: &mut Pod) {
    let keep = PodKeep {
        ports: true,
        annotation: Some(workloads::pods::POD_DELETION_COST),
        restarts: true,
    };
    trim_pod(p, keep);
}

/// Drops `metadata.managedFields` from an object a controller keeps in its cache, as kube-controller-manager's
/// informers do: no controller reads them, and they are a large part of small objects (a pod written by a
/// client and by its kubelet carries two field sets), so they would multiply the memory of every cached
/// pod. `None`, not an empty list: an object sent back from the cache must not reset them.
pub fn trim_managed_fields<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

/// What a controller's Pod cache keeps beyond metadata, placement, phase, IPs and conditions.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PodKeep {
    /// Each container's (and init container's) name, ports and restart policy (named target ports).
    pub ports: bool,
    /// The one annotation kept (all others go, kubectl's last-applied copy among them).
    pub annotation: Option<&'static str>,
    /// Each container status's name and restart count.
    pub restarts: bool,
}

/// Cuts a Pod a controller caches down to `keep`: each cache holds every pod in the cluster, and the
/// controllers write pods only by name (patches, bindings, deletions), never back from the cache.
/// Images, commands, environment, probes, volumes and the rest of the statuses go as the pod arrives.
pub(crate) fn trim_pod(p: &mut k8s_openapi::api::core::v1::Pod, keep: PodKeep) {
    use k8s_openapi::api::core::v1::{Container, ContainerStatus};
    trim_managed_fields(p);
    match keep.annotation {
        Some(k) => {
            if let Some(a) = p.metadata.annotations.as_mut() {
                a.retain(|n, _| n == k);
            }
            if p.metadata.annotations.as_ref().is_some_and(|a| a.is_empty()) {
                p.metadata.annotations = None;
            }
        }
        None => p.metadata.annotations = None,
    }
    if let Some(spec) = p.spec.as_mut() {
        if keep.ports {
            let slim = |c: &Container| Container {
                name: c.name.clone(),
                ports: c.ports.clone(),
                restart_policy: c.restart_policy.clone(),
                ..Default::default()
            };
            spec.containers = spec.containers.iter().map(slim).collect();
            spec.init_containers = spec
                .init_containers
                .as_ref()
                .map(|v| v.iter().map(slim).collect());
        } else {
            spec.containers = Vec::new();
            spec.init_containers = None;
        }
        spec.ephemeral_containers = None;
        spec.volumes = None;
    }
    if let Some(status) = p.status.as_mut() {
        let statuses = status.container_statuses.take().filter(|_| keep.restarts);
        status.container_statuses = statuses.map(|cs| {
            cs.into_iter()
                .map(|c| ContainerStatus {
                    name: c.name,
                    restart_count: c.restart_count,
                    ..Default::default()
                })
                .collect()
        });
        status.init_container_statuses = None;
        status.ephemeral_container_statuses = None;
    }
}
pub use workloads::run_workload_controllers;
