//! IP address arithmetic shared by the IP allocators.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An IP family, spelled as in the Kubernetes API (`IPv4`, `IPv6`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IpFamily {
    /// IPv4.
    #[serde(rename = "IPv4")]
    Ipv4,
    /// IPv6.
    #[serde(rename = "IPv6")]
    Ipv6,
}

impl IpFamily {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => IpFamily::Ipv4,
            IpAddr::V6(_) => IpFamily::Ipv6,
        }
    }

    /// The family of a network.
    pub fn of_net(net: &IpNet) -> Self {
        Self::of(net.addr())
    }
}

impl fmt::Display for IpFamily {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            IpFamily::Ipv4 => "IPv4",
            IpFamily::Ipv6 => "IPv6",
        })
    }
}

/// The address as an integer (IPv4 in the low 32 bits).
pub(crate) fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of `family` with integer value `n`, if it fits the family.
pub(crate) fn from_u128(family: IpFamily, n: u128) -> Option<IpAddr> {
    match family {
        IpFamily::Ipv4 => u32::try_from(n).ok().map(|v| IpAddr::V4(Ipv4Addr::from(v))),
        IpFamily::Ipv6 => Some(IpAddr::V6(Ipv6Addr::from(n))),
    }
}

/// Treats IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) as IPv4, as Go's
/// `net.IP` (and therefore kube) does.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// The `n`-th address of `cidr`, counting the network address as 0, like
/// kube's `GetIndexedIP`; `None` if the CIDR has no such address.
///
/// In a service CIDR, index 1 is the `default/kubernetes` Service's ClusterIP
/// and, by convention, index 10 is `kube-system/kube-dns`'s.
///
/// ```
/// # use svcnet_alloc::nth_address;
/// let cidr = "10.96.0.0/12".parse().unwrap();
/// assert_eq!(nth_address(&cidr, 1), Some("10.96.0.1".parse().unwrap()));
/// assert_eq!(nth_address(&cidr, 10), Some("10.96.0.10".parse().unwrap()));
/// ```
pub fn nth_address(cidr: &IpNet, n: u128) -> Option<IpAddr> {
    let net = cidr.trunc();
    let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
    // A /0 IPv6 network has 2^128 addresses: every u128 index fits.
    if host_bits < 128 && n >> host_bits != 0 {
        return None;
    }
    from_u128(IpFamily::of_net(&net), to_u128(net.network()) + n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn nth_address_matches_get_indexed_ip() {
        assert_eq!(
            nth_address(&net("10.0.0.0/24"), 0),
            Some("10.0.0.0".parse().unwrap())
        );
        assert_eq!(
            nth_address(&net("10.0.0.0/24"), 255),
            Some("10.0.0.255".parse().unwrap())
        );
        assert_eq!(nth_address(&net("10.0.0.0/24"), 256), None);
        assert_eq!(
            nth_address(&net("10.0.0.0/29"), 10),
            None,
            "subnet too small for kube-dns"
        );
        assert_eq!(
            nth_address(&net("fd00::/108"), 10),
            Some("fd00::a".parse().unwrap())
        );
        assert_eq!(
            nth_address(&net("10.0.0.7/24"), 1),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            nth_address(&net("::/0"), u128::MAX),
            Some("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap())
        );
        assert_eq!(
            nth_address(&net("10.0.0.1/32"), 0),
            Some("10.0.0.1".parse().unwrap())
        );
        assert_eq!(nth_address(&net("10.0.0.1/32"), 1), None);
    }

    #[test]
    fn family_names() {
        assert_eq!(IpFamily::Ipv4.to_string(), "IPv4");
        assert_eq!(IpFamily::Ipv6.to_string(), "IPv6");
        assert_eq!(serde_json::to_string(&IpFamily::Ipv6).unwrap(), "\"IPv6\"");
    }

    #[test]
    fn mapped_addresses_are_ipv4() {
        assert_eq!(
            canonical("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
