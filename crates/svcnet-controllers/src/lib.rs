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

pub mod bootstrap_signer;
pub mod certificates;
pub mod disruption;
pub mod endpointslice;
pub mod events;
pub mod lb_ipam;
mod node_lifecycle;
pub mod nodes;
mod queue;
pub mod serviceaccounts;
pub mod taints;
pub mod workloads;

pub use lb_ipam::{Error, LbIpamConfig, run_lb_ipam};

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use svcnet_informer::Informer;

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
}

impl SharedInformers {
    /// Creates the informers and starts their watches through `client` (on tasks of their own: call it
    /// inside a tokio runtime).
    pub fn start(client: &kube::Client) -> Self {
        let s = Self::new();
        s.pods.spawn(kube::Api::all(client.clone()));
        s.nodes.spawn(kube::Api::all(client.clone()));
        s.services.spawn(kube::Api::all(client.clone()));
        s
    }

    /// The informers, not running (tests feed them by hand).
    pub fn new() -> Self {
        Self {
            pods: Informer::new(trim_shared_pod),
            nodes: Informer::new(trim_managed_fields),
            services: Informer::new(trim_managed_fields),
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
