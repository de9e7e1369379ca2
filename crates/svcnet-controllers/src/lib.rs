//! svcnet's controllers: cluster-wide control loops that, like Kubernetes' own, talk to the API server
//! only through its API (list + watch, then writes), with a kube-rs client. They run inside
//! `svcnet up` and work unchanged against any Kubernetes API server.
//!
//! * [`lb_ipam`]: LoadBalancer IPAM, addresses for `type: LoadBalancer` Services from a configured
//!   pool, without a cloud.
//! * [`nodes`]: node pod CIDRs, node lifecycle (lease expiry) and the scheduler.
//! * [`workloads`]: the ReplicaSet and Deployment controllers (rolling updates, rollbacks, scaling).

pub mod endpointslice;
mod events;
pub mod lb_ipam;
pub mod nodes;
mod queue;
pub mod workloads;

pub use lb_ipam::{Error, LbIpamConfig, run_lb_ipam};

/// Drops `metadata.managedFields` from an object a controller keeps in its cache, as kube-controller-manager's
/// informers do: no controller reads them, and they are a large part of small objects (a pod written by a
/// client and by its kubelet carries two field sets), so they would multiply the memory of every cached
/// pod. `None`, not an empty list: an object sent back from the cache must not reset them.
pub fn trim_managed_fields<K: kube::Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}
pub use workloads::run_workload_controllers;
