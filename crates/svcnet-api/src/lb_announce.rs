//! The names L2 announcement of LoadBalancer IPs (`svcnet-l2announce`, run by every node) shares with
//! the API server's NodeRestriction, which keeps a node's writes to exactly these objects: the
//! announcement Leases (named with [`LEASE_PREFIX`], each holding its own node's name) and the
//! [`NODE_ANNOTATION`] on Services naming the node itself.

/// The prefix of every announcement Lease's name: `svcnet-lb-<first Service of the group>`, in that
/// Service's namespace.
pub const LEASE_PREFIX: &str = "svcnet-lb-";

/// The annotation on a LoadBalancer Service naming the node that answers for its IPs.
pub const NODE_ANNOTATION: &str = "svcnet.io/lb-announcing-node";
