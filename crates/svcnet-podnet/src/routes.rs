//! The node's routes to other nodes' pod blocks, over netlink, reconciled rather than appended.
//!
//! Every route this module adds carries [`ROUTE_PROTOCOL`] (`ip route show proto 115`), and it only ever
//! deletes routes that carry it: routes added by anyone else (the kernel's connected routes, an
//! operator's, another CNI's) are left alone, even for a prefix it wants (it then says so and adds
//! nothing). A reconcile lists the main table's routes once, deletes its own that are no longer wanted
//! or point elsewhere, and adds the missing ones, so an agent restart leaves neither stale nor duplicate
//! routes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::{info, warn};

use crate::PodNetError;

/// The route protocol number svcnet's pod-network routes carry (`/etc/iproute2/rt_protos` has no name
/// for it; calico's 80 and the routing daemons' numbers are avoided).
pub const ROUTE_PROTOCOL: u8 = 115;

/// A route as wanted: a pod block via a gateway, optionally through a given device and on-link (vxlan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The next hop.
    pub gateway: Ipv4Addr,
    /// The output device (`dev`), if the route names one.
    pub oif: Option<u32>,
    /// Whether the gateway is declared on-link (it is not on a connected subnet: the VXLAN device's
    /// neighbours).
    pub onlink: bool,
}

/// One of our routes as the kernel has it.
#[derive(Debug, Clone)]
struct Have {
    dst: Ipv4Net,
    gateway: Option<Ipv4Addr>,
    oif: Option<u32>,
    message: RouteMessage,
}

fn table_of(m: &RouteMessage) -> u32 {
    m.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table))
}

fn parse(m: RouteMessage) -> Option<Have> {
    let mut dst = None;
    let mut gateway = None;
    let mut oif = None;
    for a in &m.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(d)) => dst = Some(*d),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => gateway = Some(*g),
            RouteAttribute::Oif(i) => oif = Some(*i),
            _ => {}
        }
    }
    let dst = Ipv4Net::new(dst?, m.header.destination_prefix_length).ok()?;
    Some(Have {
        dst,
        gateway,
        oif,
        message: m,
    })
}

/// The IPv4 routes of the main table, split into ours (by [`ROUTE_PROTOCOL`]) and the prefixes of
/// everyone else's.
async fn list(handle: &Handle) -> Result<(Vec<Have>, Vec<Ipv4Net>), PodNetError> {
    let mut stream = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let (mut ours, mut others) = (Vec::new(), Vec::new());
    while let Some(m) = stream.try_next().await? {
        if table_of(&m) != u32::from(RouteHeader::RT_TABLE_MAIN) {
            continue;
        }
        let mine = u8::from(m.header.protocol) == ROUTE_PROTOCOL;
        if let Some(h) = parse(m) {
            if mine {
                ours.push(h);
            } else {
                others.push(h.dst);
            }
        }
    }
    Ok((ours, others))
}

/// What a reconcile changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Routes added.
    pub added: usize,
    /// Routes deleted.
    pub deleted: usize,
    /// Wanted routes the kernel refused (each logged); the caller tries again later.
    pub failed: usize,
}

impl Changes {
    /// Adds another reconcile's counts to these.
    pub fn add(&mut self, other: Changes) {
        self.added += other.added;
        self.deleted += other.deleted;
        self.failed += other.failed;
    }
}

/// Makes the main table's routes with [`ROUTE_PROTOCOL`] exactly `want`.
pub async fn reconcile(handle: &Handle, want: &BTreeMap<Ipv4Net, Want>) -> Result<Changes, PodNetError> {
    let (ours, others) = list(handle).await?;
    let mut changes = Changes::default();
    let mut kept = Vec::new();
    for have in ours {
        let right = want
            .get(&have.dst)
            .is_some_and(|w| have.gateway == Some(w.gateway) && (w.oif.is_none() || w.oif == have.oif));
        // A duplicate (same prefix twice, e.g. in another metric) goes as well.
        if right && !kept.contains(&have.dst) {
            kept.push(have.dst);
            continue;
        }
        info!(dst = %have.dst, gateway = ?have.gateway, "deleting a pod-network route no longer wanted");
        match handle.route().del(have.message).execute().await {
            Ok(()) => changes.deleted += 1,
            // Gone meanwhile: what was wanted.
            Err(e) if is_errno(&e, ESRCH) => {}
            Err(e) => return Err(e.into()),
        }
    }
    for (dst, w) in want {
        if kept.contains(dst) {
            continue;
        }
        if others.contains(dst) {
            warn!(%dst, "a route to this pod block exists and is not svcnet's; leaving it alone");
            continue;
        }
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.network(), dst.prefix_len())
            .gateway(w.gateway)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL));
        if let Some(oif) = w.oif {
            b = b.output_interface(oif);
        }
        if w.onlink {
            b = b.onlink();
        }
        match handle.route().add(b.build()).execute().await {
            Ok(()) => {
                info!(%dst, gateway = %w.gateway, "added a pod-network route");
                changes.added += 1;
            }
            // The gateway is not on a connected subnet: host-gw cannot reach that node (vxlan can).
            Err(e) if is_errno(&e, ENETUNREACH) => {
                warn!(%dst, gateway = %w.gateway, "the node is not on this node's subnet; host-gw cannot route to it (use --overlay vxlan)");
                changes.failed += 1;
            }
            // One node's bad address must not keep the routes to the others from being made.
            Err(e) => {
                warn!(%dst, gateway = %w.gateway, error = %e, "the kernel refused a pod-network route");
                changes.failed += 1;
            }
        }
    }
    Ok(changes)
}

/// `ESRCH`: no such route.
const ESRCH: i32 = 3;
/// `ENETUNREACH`: the gateway is on no connected subnet.
const ENETUNREACH: i32 = 101;

/// Whether a netlink error is the kernel's `errno` (netlink reports `-errno`).
pub(crate) fn is_errno(e: &rtnetlink::Error, errno: i32) -> bool {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.raw_code().abs() == errno,
        _ => false,
    }
}
