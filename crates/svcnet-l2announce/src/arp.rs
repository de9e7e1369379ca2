//! ARP frames (RFC 826) on Ethernet: reading a request for an address and writing the reply, and the
//! gratuitous ARP a new holder broadcasts so that neighbours replace the old holder's MAC at once. Pure:
//! bytes in, bytes out.

use std::net::Ipv4Addr;

/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// Length of an Ethernet frame carrying ARP for IPv4 (without padding and FCS).
pub const FRAME_LEN: usize = 14 + 28;
/// The broadcast MAC.
pub const BROADCAST: [u8; 6] = [0xff; 6];
const OP_REQUEST: u16 = 1;
const OP_REPLY: u16 = 2;

/// An ARP request: who has `target_ip`? tell `sender_ip` at `sender_mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// The asker's MAC (from the ARP payload).
    pub sender_mac: [u8; 6],
    /// The asker's address.
    pub sender_ip: Ipv4Addr,
    /// The address asked for.
    pub target_ip: Ipv4Addr,
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

fn ip_at(b: &[u8], i: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3])
}

/// The ARP request an Ethernet frame carries, if it is one (Ethernet, IPv4). Anything else (other
/// EtherTypes, replies, short or odd frames) is `None`.
pub fn parse_request(frame: &[u8]) -> Option<Request> {
    if frame.len() < FRAME_LEN || u16_at(frame, 12) != ETHERTYPE_ARP {
        return None;
    }
    let a = &frame[14..];
    // hardware Ethernet (1), protocol IPv4, lengths 6 and 4, operation request.
    if u16_at(a, 0) != 1 || u16_at(a, 2) != 0x0800 || a[4] != 6 || a[5] != 4 || u16_at(a, 6) != OP_REQUEST {
        return None;
    }
    let mut sender_mac = [0; 6];
    sender_mac.copy_from_slice(&a[8..14]);
    Some(Request {
        sender_mac,
        sender_ip: ip_at(a, 14),
        target_ip: ip_at(a, 24),
    })
}

#[allow(clippy::too_many_arguments)]
fn frame(
    eth_dst: [u8; 6],
    eth_src: [u8; 6],
    op: u16,
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> [u8; FRAME_LEN] {
    let mut f = [0u8; FRAME_LEN];
    f[0..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&eth_src);
    f[12..14].copy_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes());
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes());
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&op.to_be_bytes());
    f[22..28].copy_from_slice(&sha);
    f[28..32].copy_from_slice(&spa.octets());
    f[32..38].copy_from_slice(&tha);
    f[38..42].copy_from_slice(&tpa.octets());
    f
}

/// The reply to `req`: `req.target_ip` is at `mac`, sent straight to the asker.
pub fn reply(mac: [u8; 6], req: &Request) -> [u8; FRAME_LEN] {
    frame(
        req.sender_mac,
        mac,
        OP_REPLY,
        mac,
        req.target_ip,
        req.sender_mac,
        req.sender_ip,
    )
}

/// A gratuitous ARP for `ip` at `mac`: a broadcast request whose sender and target address are both
/// `ip`. Linux updates an existing neighbour entry from it at once (it counts as gratuitous and so
/// overrides the entry's lock time), which is what moves clients to a new holder without waiting for
/// their entry to go stale.
pub fn gratuitous(mac: [u8; 6], ip: Ipv4Addr) -> [u8; FRAME_LEN] {
    frame(BROADCAST, mac, OP_REQUEST, mac, ip, [0; 6], ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const NODE: [u8; 6] = [2, 0, 0, 0, 0, 11];

    fn request(target: Ipv4Addr) -> [u8; FRAME_LEN] {
        frame(
            BROADCAST,
            CLIENT,
            OP_REQUEST,
            CLIENT,
            Ipv4Addr::new(172, 18, 0, 2),
            [0; 6],
            target,
        )
    }

    #[test]
    fn a_request_is_read_and_answered() {
        let vip = Ipv4Addr::new(172, 18, 0, 224);
        let req = parse_request(&request(vip)).expect("a request");
        assert_eq!(req.target_ip, vip);
        assert_eq!(req.sender_ip, Ipv4Addr::new(172, 18, 0, 2));
        assert_eq!(req.sender_mac, CLIENT);
        let r = reply(NODE, &req);
        assert_eq!(&r[0..6], &CLIENT, "unicast to the asker");
        assert_eq!(&r[6..12], &NODE);
        assert_eq!(u16_at(&r, 20), OP_REPLY);
        assert_eq!(&r[22..28], &NODE, "the VIP is at the node's MAC");
        assert_eq!(ip_at(&r, 28), vip);
        assert_eq!(ip_at(&r, 38), req.sender_ip);
        // A reply is not a request.
        assert_eq!(parse_request(&r), None);
    }

    #[test]
    fn other_frames_are_not_requests() {
        let mut ipv4 = request(Ipv4Addr::LOCALHOST);
        ipv4[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        assert_eq!(parse_request(&ipv4), None);
        assert_eq!(parse_request(&request(Ipv4Addr::LOCALHOST)[..30]), None);
        let mut ipv6_arp = request(Ipv4Addr::LOCALHOST);
        ipv6_arp[16..18].copy_from_slice(&0x86ddu16.to_be_bytes());
        assert_eq!(parse_request(&ipv6_arp), None);
    }

    #[test]
    fn gratuitous_arp_names_the_vip_twice() {
        let vip = Ipv4Addr::new(172, 18, 0, 230);
        let g = gratuitous(NODE, vip);
        assert_eq!(&g[0..6], &BROADCAST);
        let req = parse_request(&g).expect("a gratuitous ARP is a request");
        assert_eq!(req.sender_ip, vip);
        assert_eq!(req.target_ip, vip);
        assert_eq!(req.sender_mac, NODE);
    }
}
