//! Allocators for the three kinds of address a Service can be given.
//!
//! * [`ClusterIpAllocator`]: Service cluster IPs out of one service CIDR, with
//!   kube-apiserver's bitmap semantics (network address and, for IPv4, the
//!   broadcast address are never handed out; IPv6 ranges are capped at 65536
//!   addresses; KEP-3070 static/dynamic bands).
//! * [`NodePortAllocator`]: NodePorts out of a `--service-node-port-range`
//!   style [`PortRange`], with KEP-3668's static band.
//! * [`LbPool`]: LoadBalancer ingress addresses out of a list of CIDRs and
//!   first-last ranges (svcnet's own, MetalLB-like; lowest free address first).
//!
//! * [`ClusterIpRange`]: a service CIDR's usable addresses and kube's order of
//!   trying them, without a bitmap, for an allocator whose allocations live
//!   elsewhere (the API server's are IPAddress objects in the store).
//!
//! Everything here is a plain in-memory data structure: no I/O, no clock, no
//! global randomness. Dynamic allocation takes a caller-supplied
//! [`RandomSource`] (or seed) so tests (and the API server) control the choice.
//! The API server keeps the NodePort bitmap in the store
//! ([`NodePortAllocator::to_bytes`] / [`NodePortAllocator::from_bytes`]), read and
//! written back with compare-and-swap around each allocation, so that API
//! servers sharing a store share it; the `rebuild` constructors report values
//! that are out of range or duplicated (a [`RebuildReport`]).
//!
//! Error texts that kube-apiserver shows to clients are reproduced verbatim;
//! [`messages`] builds the surrounding REST-layer texts.

mod addr;
mod band;
mod bitmap;
mod cluster_ip;
mod lb_pool;
pub mod messages;
mod node_port;
mod rebuild;
mod rng;

pub use addr::{IpFamily, nth_address};
pub use cluster_ip::{
    CidrError, ClusterIpAllocator, ClusterIpError, ClusterIpRange, MAX_IPV6_RANGE_SIZE,
    MAX_SERVICE_CIDR_HOST_BITS, cluster_ip_static_band_size, validate_service_cidr_flag,
};
pub use lb_pool::{LbPool, PoolEntry, PoolError};
pub use node_port::{
    DEFAULT_NODE_PORT_RANGE, NodePortAllocator, NodePortError, PortRange, PortRangeError,
    node_port_static_band_size,
};
pub use rebuild::RebuildReport;
pub use rng::{RandomSource, SplitMix64};
