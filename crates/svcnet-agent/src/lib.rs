//! svcnet's node agent: runs the pods bound to its node as host processes (no container images) and reports
//! their status in Kubernetes' shape.
//!
//! [`runner`] owns the processes; `podip` gives pods their addresses; [`node`] keeps the Node object and its Lease; [`agent`] watches the API for
//! this node's pods, drives the runner, gives pods their ConfigMaps, Secrets and volumes, writes pod status
//! and serves container logs; [`netns`] gives pods
//! their own network namespaces (`--pod-network netns`, root).
//!
//! This crate is the kubelet alone: kube-proxy's job is `svcnet-proxier`, and publishing the node's DNS
//! endpoint is `svcnet-dns`'s.

pub mod agent;
pub mod netns;
pub mod node;
pub mod pod_identity;
mod podip;
pub mod runner;
