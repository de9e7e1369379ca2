//! IPv6 neighbour discovery (RFC 4861) on Ethernet, the IPv6 twin of [`crate::arp`]: reading a
//! neighbour solicitation for an address and writing the advertisement that answers it, and the
//! unsolicited advertisement a new holder sends to all nodes so that neighbours replace the old
//! holder's link-layer address at once. Pure: bytes in, bytes out.

use std::net::Ipv6Addr;

/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// IPv6's next-header number of ICMPv6.
pub const ICMPV6: u8 = 58;
/// ICMPv6 type of a neighbour solicitation.
pub const NEIGHBOR_SOLICITATION: u8 = 135;
/// ICMPv6 type of a neighbour advertisement.
pub const NEIGHBOR_ADVERTISEMENT: u8 = 136;
/// Where the IPv6 header starts (after Ethernet), and the ICMPv6 message (after a header without
/// extension headers, which neighbour discovery never carries).
const IP6: usize = 14;
const ICMP: usize = IP6 + 40;
/// Length of a solicitation without options: type, code, checksum, reserved, target.
const NS_LEN: usize = ICMP + 24;
/// Length of the advertisements written here: header, target and one target link-layer option.
pub const NA_FRAME_LEN: usize = ICMP + 32;
/// All-nodes multicast address, where unsolicited advertisements go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// Advertisement flags: Solicited and Override (a router flag is never set: the node is no router
/// for the address).
const FLAG_SOLICITED: u8 = 0x40;
const FLAG_OVERRIDE: u8 = 0x20;

/// A neighbour solicitation: who has `target`? asked by `source` from Ethernet address `sender_mac`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Solicitation {
    /// The asker's Ethernet address (the frame's source).
    pub sender_mac: [u8; 6],
    /// The asker's address; unspecified (`::`) for duplicate address detection.
    pub source: Ipv6Addr,
    /// The address asked for.
    pub target: Ipv6Addr,
}

fn ip6_at(b: &[u8], i: usize) -> Ipv6Addr {
    let mut o = [0u8; 16];
    o.copy_from_slice(&b[i..i + 16]);
    Ipv6Addr::from(o)
}

/// The neighbour solicitation an Ethernet frame carries, if it is a valid one (RFC 4861 7.1.1: hop
/// limit 255, code 0, a unicast target). Anything else is `None`.
pub fn parse_solicitation(frame: &[u8]) -> Option<Solicitation> {
    if frame.len() < NS_LEN || u16::from_be_bytes([frame[12], frame[13]]) != ETHERTYPE_IPV6 {
        return None;
    }
    // IPv6, ICMPv6 right after the header, hop limit 255 (it was not routed here).
    if frame[IP6] >> 4 != 6 || frame[IP6 + 6] != ICMPV6 || frame[IP6 + 7] != 255 {
        return None;
    }
    if frame[ICMP] != NEIGHBOR_SOLICITATION || frame[ICMP + 1] != 0 {
        return None;
    }
    let target = ip6_at(frame, ICMP + 8);
    if target.is_multicast() {
        return None;
    }
    let mut sender_mac = [0; 6];
    sender_mac.copy_from_slice(&frame[6..12]);
    Some(Solicitation {
        sender_mac,
        source: ip6_at(frame, IP6 + 8),
        target,
    })
}

/// The solicited-node multicast address of `ip` (`ff02::1:ffXX:XXXX`), where solicitations for it go.
pub fn solicited_node(ip: Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The Ethernet address of an IPv6 multicast group (`33:33` and its last 32 bits, RFC 2464).
fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The ICMPv6 checksum of `message` from `src` to `dst` (RFC 4443 2.3, over the pseudo-header).
fn checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for pair in bytes.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |b| u32::from(*b));
            sum += hi | lo;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(message.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(message);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn advertisement_frame(
    eth_dst: [u8; 6],
    mac: [u8; 6],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    flags: u8,
) -> [u8; NA_FRAME_LEN] {
    let mut f = [0u8; NA_FRAME_LEN];
    f[0..6].copy_from_slice(&eth_dst);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
    f[IP6] = 0x60;
    f[IP6 + 4..IP6 + 6].copy_from_slice(&32u16.to_be_bytes());
    f[IP6 + 6] = ICMPV6;
    f[IP6 + 7] = 255;
    f[IP6 + 8..IP6 + 24].copy_from_slice(&src.octets());
    f[IP6 + 24..IP6 + 40].copy_from_slice(&dst.octets());
    let m = &mut f[ICMP..];
    m[0] = NEIGHBOR_ADVERTISEMENT;
    m[4] = flags;
    m[8..24].copy_from_slice(&target.octets());
    // Option 2, target link-layer address, length 1 (8 bytes).
    m[24] = 2;
    m[25] = 1;
    m[26..32].copy_from_slice(&mac);
    let sum = checksum(src, dst, &f[ICMP..]);
    f[ICMP + 2..ICMP + 4].copy_from_slice(&sum.to_be_bytes());
    f
}

/// The advertisement answering `sol`: `sol.target` is at `mac`, from `src` (the interface's
/// link-local address). Sent to the asker (Solicited set), or to all nodes when the asker has no
/// address yet (duplicate address detection, RFC 4861 7.2.4).
pub fn advertisement(mac: [u8; 6], src: Ipv6Addr, sol: &Solicitation) -> [u8; NA_FRAME_LEN] {
    if sol.source.is_unspecified() {
        advertisement_frame(
            multicast_mac(ALL_NODES),
            mac,
            src,
            ALL_NODES,
            sol.target,
            FLAG_OVERRIDE,
        )
    } else {
        advertisement_frame(
            sol.sender_mac,
            mac,
            src,
            sol.source,
            sol.target,
            FLAG_SOLICITED | FLAG_OVERRIDE,
        )
    }
}

/// An unsolicited advertisement of `target` at `mac` to all nodes, Override set: Linux replaces an
/// existing neighbour entry's link-layer address from it (RFC 4861 7.2.6), which is what moves
/// clients to a new holder at once.
pub fn unsolicited(mac: [u8; 6], src: Ipv6Addr, target: Ipv6Addr) -> [u8; NA_FRAME_LEN] {
    advertisement_frame(
        multicast_mac(ALL_NODES),
        mac,
        src,
        ALL_NODES,
        target,
        FLAG_OVERRIDE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const NODE: [u8; 6] = [2, 0, 0, 0, 0, 11];

    /// A solicitation as Linux sends it (with a source link-layer option).
    fn solicitation(source: Ipv6Addr, target: Ipv6Addr) -> Vec<u8> {
        let group = solicited_node(target);
        let mut f = vec![0u8; NS_LEN + 8];
        f[0..6].copy_from_slice(&multicast_mac(group));
        f[6..12].copy_from_slice(&CLIENT);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        f[IP6] = 0x60;
        f[IP6 + 4..IP6 + 6].copy_from_slice(&32u16.to_be_bytes());
        f[IP6 + 6] = ICMPV6;
        f[IP6 + 7] = 255;
        f[IP6 + 8..IP6 + 24].copy_from_slice(&source.octets());
        f[IP6 + 24..IP6 + 40].copy_from_slice(&group.octets());
        f[ICMP] = NEIGHBOR_SOLICITATION;
        f[ICMP + 8..ICMP + 24].copy_from_slice(&target.octets());
        f[ICMP + 24] = 1;
        f[ICMP + 25] = 1;
        f[ICMP + 26..ICMP + 32].copy_from_slice(&CLIENT);
        let sum = checksum(source, group, &f[ICMP..]);
        f[ICMP + 2..ICMP + 4].copy_from_slice(&sum.to_be_bytes());
        f
    }

    #[test]
    fn the_solicited_node_group() {
        let ip: Ipv6Addr = "fd00:18::e0:1234:5678".parse().unwrap();
        assert_eq!(
            solicited_node(ip),
            "ff02::1:ff34:5678".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(ip)),
            [0x33, 0x33, 0xff, 0x34, 0x56, 0x78]
        );
    }

    #[test]
    fn a_solicitation_is_read_and_answered() {
        let client: Ipv6Addr = "fd00:18::2".parse().unwrap();
        let vip: Ipv6Addr = "fd00:18::e0".parse().unwrap();
        let node_ll: Ipv6Addr = "fe80::b".parse().unwrap();
        let sol = parse_solicitation(&solicitation(client, vip)).expect("a solicitation");
        assert_eq!((sol.source, sol.target, sol.sender_mac), (client, vip, CLIENT));
        let na = advertisement(NODE, node_ll, &sol);
        assert_eq!(&na[0..6], &CLIENT, "unicast to the asker");
        assert_eq!(&na[6..12], &NODE);
        assert_eq!(ip6_at(&na, IP6 + 8), node_ll);
        assert_eq!(ip6_at(&na, IP6 + 24), client);
        assert_eq!(na[IP6 + 7], 255, "hop limit");
        assert_eq!(na[ICMP], NEIGHBOR_ADVERTISEMENT);
        assert_eq!(na[ICMP + 4], FLAG_SOLICITED | FLAG_OVERRIDE);
        assert_eq!(ip6_at(&na, ICMP + 8), vip);
        assert_eq!(&na[ICMP + 24..ICMP + 32], &[2, 1, 2, 0, 0, 0, 0, 11]);
        // The checksum verifies: summing the message with it gives zero.
        assert_eq!(checksum(node_ll, client, &na[ICMP..]), 0);
        // An advertisement is not a solicitation.
        assert_eq!(parse_solicitation(&na), None);
    }

    #[test]
    fn duplicate_address_detection_is_answered_to_all_nodes() {
        let vip: Ipv6Addr = "fd00:18::e0".parse().unwrap();
        let sol = parse_solicitation(&solicitation(Ipv6Addr::UNSPECIFIED, vip)).unwrap();
        let na = advertisement(NODE, "fe80::b".parse().unwrap(), &sol);
        assert_eq!(&na[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(ip6_at(&na, IP6 + 24), ALL_NODES);
        assert_eq!(na[ICMP + 4], FLAG_OVERRIDE, "not solicited");
    }

    #[test]
    fn other_frames_are_not_solicitations() {
        let client: Ipv6Addr = "fd00:18::2".parse().unwrap();
        let vip: Ipv6Addr = "fd00:18::e0".parse().unwrap();
        let good = solicitation(client, vip);
        let mut routed = good.clone();
        routed[IP6 + 7] = 64;
        assert_eq!(parse_solicitation(&routed), None, "hop limit below 255");
        let mut multicast_target = good.clone();
        multicast_target[ICMP + 8] = 0xff;
        assert_eq!(parse_solicitation(&multicast_target), None);
        assert_eq!(parse_solicitation(&good[..NS_LEN - 1]), None);
        let mut arp = good.clone();
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(parse_solicitation(&arp), None);
    }

    #[test]
    fn unsolicited_advertisement_to_all_nodes() {
        let vip: Ipv6Addr = "fd00:18::e1".parse().unwrap();
        let src: Ipv6Addr = "fe80::b".parse().unwrap();
        let na = unsolicited(NODE, src, vip);
        assert_eq!(&na[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
        assert_eq!(ip6_at(&na, ICMP + 8), vip);
        assert_eq!(na[ICMP + 4], FLAG_OVERRIDE);
        assert_eq!(checksum(src, ALL_NODES, &na[ICMP..]), 0);
    }
}
