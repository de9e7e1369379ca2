//! `--overlay vxlan` (flannel's vxlan backend, for nodes that do not share a subnet): one VXLAN device,
//! [`DEVICE`] (VNI 1, UDP 8472, learning off, MTU 50 below the uplink that holds the node's address), with
//! the first address of the node's pod block as a /32; per remote node, over netlink:
//!
//! - an on-link route: its pod block via its block's first address, dev [`DEVICE`] (through [`routes`]);
//! - a permanent neighbour entry: that address is the remote VTEP's MAC;
//! - a permanent FDB entry: that MAC is behind the remote node's address (the outer destination).
//!
//! The VTEP's MAC is published on the node's own Node object in flannel's annotations
//! ([`crate::peers::BACKEND_DATA`]), which is how the other nodes learn it. The device is svcnet's alone,
//! so every neighbour and FDB entry on it is reconciled to exactly the wanted set.
//!
//! [`routes`]: crate::routes

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::{Handle, LinkUnspec, LinkVxlan};
use tracing::info;

use crate::PodNetError;
use crate::peers::Peer;
use crate::routes::{self, is_errno};

/// The VXLAN device (flannel calls its `flannel.1`: the VNI follows the dot).
pub const DEVICE: &str = "svcnet.1";
/// The VXLAN network identifier.
pub const VNI: u32 = 1;
/// The UDP port (the Linux kernel's historical default, flannel's).
pub const PORT: u16 = 8472;
/// What encapsulation costs: outer IPv4 (20), UDP (8), VXLAN (8) and inner Ethernet (14) headers.
pub const OVERHEAD: u32 = 50;

/// `ENODEV`: no such device.
const ENODEV: i32 = 19;

/// This node's tunnel endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vtep {
    /// The device's index.
    pub index: u32,
    /// Its MAC, which the other nodes need.
    pub mac: [u8; 6],
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<Option<LinkMessage>, PodNetError> {
    match handle.link().get().match_name(name).execute().try_next().await {
        Ok(link) => Ok(link),
        Err(e) if is_errno(&e, ENODEV) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The index and MTU of the link that holds `ip`.
async fn uplink(handle: &Handle, ip: Ipv4Addr) -> Result<(u32, u32), PodNetError> {
    let mut addrs = handle
        .address()
        .get()
        .set_address_filter(IpAddr::V4(ip))
        .execute();
    let mut index = None;
    while let Some(a) = addrs.try_next().await? {
        let holds = a.attributes.iter().any(|x| {
            matches!(x, AddressAttribute::Address(IpAddr::V4(v)) | AddressAttribute::Local(IpAddr::V4(v)) if *v == ip)
        });
        if holds {
            index = Some(a.header.index);
            break;
        }
    }
    let index = index.ok_or(PodNetError::NoUplink(ip))?;
    let link = handle
        .link()
        .get()
        .match_index(index)
        .execute()
        .try_next()
        .await?
        .ok_or(PodNetError::NoUplink(ip))?;
    let mtu = link
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(*m),
            _ => None,
        })
        .unwrap_or(1500);
    Ok((index, mtu))
}

fn vxlan_info(link: &LinkMessage) -> Vec<InfoVxlan> {
    link.attributes
        .iter()
        .filter_map(|a| match a {
            LinkAttribute::LinkInfo(infos) => Some(infos),
            _ => None,
        })
        .flatten()
        .filter_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn mac_of(link: &LinkMessage) -> Option<[u8; 6]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => m.as_slice().try_into().ok(),
        _ => None,
    })
}

/// The MTU pods get under vxlan: [`OVERHEAD`] below that of the link holding the node's address `node_ip`
/// (what the device gets), so that pods never send what the tunnel cannot carry.
pub async fn pod_mtu(node_ip: Ipv4Addr) -> Result<u32, PodNetError> {
    let (connection, handle, _) = rtnetlink::new_connection()?;
    let conn = tokio::spawn(connection);
    let found = uplink(&handle, node_ip).await;
    conn.abort();
    Ok(found?.1.saturating_sub(OVERHEAD))
}

/// Makes [`DEVICE`] as wanted for a node at `node_ip` with pod block `block`: an existing device with
/// another VNI, port, local address or uplink, or with learning on, is made again. Idempotent.
pub async fn ensure(handle: &Handle, node_ip: Ipv4Addr, block: Ipv4Net) -> Result<Vtep, PodNetError> {
    let (uplink, uplink_mtu) = uplink(handle, node_ip).await?;
    let mtu = uplink_mtu.saturating_sub(OVERHEAD);
    if let Some(link) = link_by_name(handle, DEVICE).await? {
        let info = vxlan_info(&link);
        let fits = [
            InfoVxlan::Id(VNI),
            InfoVxlan::Port(PORT),
            InfoVxlan::Local(node_ip),
            InfoVxlan::Link(uplink),
            InfoVxlan::Learning(false),
        ]
        .iter()
        .all(|want| info.contains(want));
        if !fits {
            info!(
                device = DEVICE,
                "the VXLAN device does not fit this node; making it again"
            );
            handle.link().del(link.header.index).execute().await?;
        }
    }
    if link_by_name(handle, DEVICE).await?.is_none() {
        let msg = LinkVxlan::new(DEVICE, VNI)
            .dev(uplink)
            .local(node_ip)
            .port(PORT)
            .learning(false)
            .mtu(mtu)
            .build();
        handle.link().add(msg).execute().await?;
        info!(
            device = DEVICE,
            vni = VNI,
            port = PORT,
            mtu,
            "made the VXLAN device"
        );
    }
    let link = link_by_name(handle, DEVICE).await?.ok_or(PodNetError::NoDevice)?;
    let index = link.header.index;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).up().build())
        .execute()
        .await?;
    // The node's own address on the overlay: the source of what the node itself sends to remote pods,
    // and where remote nodes' replies come back to.
    let own = block.network();
    let mut addrs = handle.address().get().set_link_index_filter(index).execute();
    let mut have_own = false;
    while let Some(a) = addrs.try_next().await? {
        let addr = a.attributes.iter().find_map(|x| match x {
            AddressAttribute::Local(IpAddr::V4(v)) | AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
            _ => None,
        });
        if addr == Some(own) && a.header.prefix_len == 32 {
            have_own = true;
        } else if addr.is_some() {
            handle.address().del(a).execute().await?;
        }
    }
    if !have_own {
        handle.address().add(index, IpAddr::V4(own), 32).execute().await?;
    }
    let mac = mac_of(&link).ok_or(PodNetError::NoDevice)?;
    Ok(Vtep { index, mac })
}

/// Deletes [`DEVICE`] if it exists (the node runs `host-gw` now); its neighbours, FDB entries and
/// routes go with it.
pub async fn remove(handle: &Handle) -> Result<bool, PodNetError> {
    match link_by_name(handle, DEVICE).await? {
        Some(link) => {
            handle.link().del(link.header.index).execute().await?;
            info!(device = DEVICE, "deleted the VXLAN device (overlay host-gw)");
            Ok(true)
        }
        None => Ok(false),
    }
}

/// The routes vxlan wants: each remote block via its first address, on-link on [`DEVICE`]. Peers
/// that have not published a VTEP MAC yet get nothing (no neighbour entry could resolve the route).
pub fn routes(vtep: &Vtep, peers: &BTreeMap<Ipv4Net, Peer>) -> BTreeMap<Ipv4Net, routes::Want> {
    peers
        .iter()
        .filter(|(_, p)| p.vtep_mac.is_some())
        .map(|(block, _)| {
            (
                *block,
                routes::Want {
                    gateway: block.network(),
                    oif: Some(vtep.index),
                    onlink: true,
                },
            )
        })
        .collect()
}

fn lladdr(m: &NeighbourMessage) -> Option<[u8; 6]> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(l) => l.as_slice().try_into().ok(),
        _ => None,
    })
}

fn destination(m: &NeighbourMessage) -> Option<Ipv4Addr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some(*v),
        _ => None,
    })
}

/// The entries on the device in one family's neighbour table (IPv4 neighbours, or the bridge family's
/// FDB).
async fn entries(
    handle: &Handle,
    family: AddressFamily,
    index: u32,
) -> Result<Vec<NeighbourMessage>, PodNetError> {
    let mut stream = handle.neighbours().get().set_address_family(family).execute();
    let mut out = Vec::new();
    while let Some(m) = stream.try_next().await? {
        if m.header.ifindex == index && m.header.family == family {
            out.push(m);
        }
    }
    Ok(out)
}

/// Makes the device's neighbour entries (remote block address → VTEP MAC) and FDB entries (VTEP MAC →
/// node address) exactly those of `peers`; returns how many entries were added and deleted.
pub async fn reconcile_neighbours(
    handle: &Handle,
    vtep: &Vtep,
    peers: &BTreeMap<Ipv4Net, Peer>,
) -> Result<routes::Changes, PodNetError> {
    let mut changes = routes::Changes::default();
    let neigh: BTreeMap<Ipv4Addr, [u8; 6]> = peers
        .iter()
        .filter_map(|(block, p)| Some((block.network(), p.vtep_mac?)))
        .collect();
    let fdb: BTreeMap<[u8; 6], Ipv4Addr> = peers
        .values()
        .filter_map(|p| Some((p.vtep_mac?, p.node_ip)))
        .collect();

    let mut right_neigh = Vec::new();
    for m in entries(handle, AddressFamily::Inet, vtep.index).await? {
        let (dst, mac) = (destination(&m), lladdr(&m));
        let permanent = m.header.state == NeighbourState::Permanent;
        match dst {
            Some(d) if permanent && mac.is_some() && neigh.get(&d) == mac.as_ref() => right_neigh.push(d),
            _ => {
                delete(handle, m).await?;
                changes.deleted += 1;
            }
        }
    }
    for (ip, mac) in &neigh {
        if !right_neigh.contains(ip) {
            handle
                .neighbours()
                .add(vtep.index, IpAddr::V4(*ip))
                .link_layer_address(mac)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await?;
            changes.added += 1;
        }
    }

    let mut right_fdb = Vec::new();
    for m in entries(handle, AddressFamily::Bridge, vtep.index).await? {
        let (mac, dst) = (lladdr(&m), destination(&m));
        match mac {
            Some(mac) if dst.is_some() && fdb.get(&mac) == dst.as_ref() && !right_fdb.contains(&mac) => {
                right_fdb.push(mac)
            }
            _ => {
                delete(handle, m).await?;
                changes.deleted += 1;
            }
        }
    }
    for (mac, ip) in &fdb {
        if !right_fdb.contains(mac) {
            handle
                .neighbours()
                .add_bridge(vtep.index, mac)
                .destination(IpAddr::V4(*ip))
                .flags(NeighbourFlags::Own)
                .state(NeighbourState::Permanent)
                .replace()
                .execute()
                .await?;
            changes.added += 1;
        }
    }
    Ok(changes)
}

async fn delete(handle: &Handle, m: NeighbourMessage) -> Result<(), PodNetError> {
    match handle.neighbours().del(m).execute().await {
        // Gone meanwhile (ENOENT): what was wanted.
        Err(e) if is_errno(&e, 2) => Ok(()),
        other => Ok(other?),
    }
}
