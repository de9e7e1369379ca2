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
pub use workloads::run_workload_controllers;
