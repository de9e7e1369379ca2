//! The ruleset as text: what each service port becomes in nftables, the full ruleset for a resync and the
//! minimal transaction for a batch of changes. Pure functions, so golden tests pin the exact output.
//!
//! The layout follows kube-proxy's nftables mode. One table per IP family holds
//!
//! - base chains on the netfilter hooks (`nat-prerouting`/`nat-output` jump to `services`,
//!   `nat-postrouting` masquerades what `mark-for-masquerade` marked and hairpin traffic, `filter-*`
//!   reject and drop);
//! - verdict maps keyed by `address . protocol . port` (`service-ips`, `firewall-ips`) or `protocol .
//!   port` (`service-nodeports`), so the cost of finding a service does not grow with the number of
//!   services, and plain sets of the same keys for frontends without endpoints (`no-endpoint-*`,
//!   rejected) or without endpoints their traffic policy allows (`no-local-endpoint-*`, dropped);
//! - per service port: `service-…` (internal endpoints), `external-…` (NodePort/externalIP/LB traffic and
//!   the externalTrafficPolicy), `local-…`/`cluster-…` (the external endpoints when the two policies
//!   differ) and `firewall-…` (loadBalancerSourceRanges).
//!
//! One deliberate difference: kube-proxy DNATs in one chain per endpoint, chosen by `numgen random mod N
//! vmap { … }`. Here a chain DNATs with `numgen random mod 65536 offset N` through an interval map that
//! gives each endpoint an equal share of the port's 65,536 slots (see `dispatch`), so that endpoints are
//! map elements only: an endpoint change rewrites no rule, which with 10,000 Services is the difference
//! between 0.2 s and a fraction of a millisecond (the kernel re-validates the whole table whenever a
//! transaction adds a jump, goto or NAT rule). The maps are shared by groups of 32 ports (each port at
//! its own offset, from the id [`Programmed`] gives it): the kernel finds a set by name in a linear list,
//! so a map per port made loading 10,000 Services quadratic (12 s), while one map for all would make
//! every endpoint change copy tens of thousands of ranges. Services with ClientIP affinity keep
//! kube-proxy's per-endpoint chains with timed sets.
//!
//! Every rule is written the way nft prints it (so that listings compare equal to renderings in tests),
//! and every chain is signed: its last rule's comment carries a digest of the chain's lines, which is
//! how a takeover ([`crate::takeover`]) tells, reading rules back through netlink as expressions, that a
//! chain is still what the renderer writes.
//!
//! Every object a port owns carries the port's name, so an incremental change replaces exactly one port's
//! objects.
//!
//! The submodules split the work by job: `names` of objects, set and map `elements`, the `ruleset` text,
//! and `transaction` planning for incremental changes.

mod elements;
mod names;
mod ruleset;
mod transaction;

pub use crate::family::Family;
pub use crate::slots::slot_ranges;
pub use elements::{AffinityEntries, Elem, Key, parse_affinity_entries};
pub use names::{PORTS_PER_MAP, endpoint_chain, service_chain};
pub use ruleset::{MASQUERADE_MARK, render_cold, render_full, render_full_keeping, render_programmed};
pub(crate) use ruleset::{SetSpec, TableSpec, comment_of_rule, families, table_spec};
pub use transaction::{
    ElementOp, Programmed, Transaction, delete_script, render_changes, render_changes_deferred,
};
