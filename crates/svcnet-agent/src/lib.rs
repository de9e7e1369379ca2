//! svcnet's node agent: runs the pods bound to its node as host processes (no container images) and reports
//! their status in Kubernetes' shape.
//!
//! [`runner`] owns the processes; `podip` gives pods their addresses; [`node`] keeps the Node object and its Lease; [`agent`] watches the API for
//! this node's pods, drives the runner, writes pod status and serves container logs; [`netns`] gives pods
//! their own network namespaces (`--pod-network netns`, root); [`dataplane`] is kube-proxy's control loop,
//! feeding the service model and a data-plane backend, with [`proxyhealth`] its `/healthz` (served with
//! [`http`], as the node's metrics are); [`localdns`] makes the node's DNS server kube-dns' endpoint.

pub mod agent;
pub mod dataplane;
pub mod http;
pub mod localdns;
pub mod netns;
pub mod node;
mod podip;
pub mod proxyhealth;
pub mod runner;
