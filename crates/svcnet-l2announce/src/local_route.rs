//! The holder's kernel must take traffic to the LoadBalancer IPs it announces as its own: the userspace
//! proxy listens on them (with `IP_FREEBIND`), and without a `local` route the node would route such a
//! packet back out of its uplink instead of delivering it. (The nftables backend DNATs in prerouting,
//! before routing, and needs no route; the route does it no harm.)
//!
//! So the holder adds `local <ip>/32 dev lo table local` (`/128` for IPv6) for each IP it holds, as kube-proxy's IPVS mode
//! puts LoadBalancer IPs on a dummy device, and removes it the moment it stops announcing. Only the
//! holder has it: a `local` route also makes the kernel answer ARP for the address, which must come from
//! one node only (IPv6 neighbour discovery answers only for addresses on the interface, so there the
//! responder alone answers). The routes carry svcnet's own route protocol number [`ROUTE_PROTOCOL`], so that an
//! agent starting up can remove what a killed predecessor left without touching anyone else's routes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::route::{RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType};
use rtnetlink::{Handle, RouteMessageBuilder};
use tracing::{info, warn};

/// The route protocol of these routes (pod-network routes use 115; `/etc/iproute2/rt_protos` names
/// neither).
pub const ROUTE_PROTOCOL: u8 = 116;
/// The kernel's `local` table.
const TABLE_LOCAL: u32 = 255;
/// The loopback device's index, the same in every network namespace.
const LOOPBACK: u32 = 1;

/// Netlink access for the holder's local routes.
#[derive(Clone)]
pub struct LocalRoutes {
    handle: Handle,
}

fn message(ip: IpAddr) -> RouteMessage {
    match ip {
        IpAddr::V4(v4) => RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(v4, 32)
            .output_interface(LOOPBACK)
            .table_id(TABLE_LOCAL)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
            .build(),
        IpAddr::V6(v6) => RouteMessageBuilder::<Ipv6Addr>::new()
            .destination_prefix(v6, 128)
            .output_interface(LOOPBACK)
            .table_id(TABLE_LOCAL)
            .kind(RouteType::Local)
            .scope(RouteScope::Host)
            .protocol(RouteProtocol::from(ROUTE_PROTOCOL))
            .build(),
    }
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

impl LocalRoutes {
    /// Opens a netlink connection (its task runs on the current runtime).
    pub fn new() -> std::io::Result<LocalRoutes> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(LocalRoutes { handle })
    }

    /// Makes `ip` local to this node.
    pub async fn add(&self, ip: IpAddr) {
        match self.handle.route().add(message(ip)).replace().execute().await {
            Ok(()) => info!(%ip, "LoadBalancer IP made local to this node"),
            Err(e) => warn!(%ip, error = %e, "could not make the LoadBalancer IP local (userspace proxy)"),
        }
    }

    /// Removes `ip`'s local route (none there is not an error).
    pub async fn del(&self, ip: IpAddr) {
        if let Err(e) = self.handle.route().del(message(ip)).execute().await {
            tracing::debug!(%ip, error = %e, "removing the LoadBalancer IP's local route");
        }
    }

    /// Removes every local route of ours (what an agent killed while holding left behind).
    pub async fn remove_all(&self) -> Result<usize, rtnetlink::Error> {
        let mut ours = Vec::new();
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new()
                .table_id(TABLE_LOCAL)
                .build(),
            RouteMessageBuilder::<Ipv6Addr>::new()
                .table_id(TABLE_LOCAL)
                .build(),
        ] {
            let mut stream = self.handle.route().get(query).execute();
            while let Some(m) = stream.try_next().await? {
                if table_of(&m) == TABLE_LOCAL && u8::from(m.header.protocol) == ROUTE_PROTOCOL {
                    ours.push(m);
                }
            }
        }
        let n = ours.len();
        for m in ours {
            self.handle.route().del(m).execute().await?;
        }
        Ok(n)
    }
}
