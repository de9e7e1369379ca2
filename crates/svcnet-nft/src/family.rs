//! The IP families the backend programs, each in its own table. Its own module because both the ruleset
//! text ([`crate::render`]) and the netlink element writer ([`crate::netlink`]) speak of families, and
//! neither should depend on the other for that.

use std::net::IpAddr;

use ipnet::IpNet;

/// An IP family: each has its own table (`ip svcnet`, `ip6 svcnet`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4: table family `ip`.
    V4,
    /// IPv6: table family `ip6`.
    V6,
}

impl Family {
    /// The nftables table family keyword (`ip`, `ip6`); also the payload protocol in rules.
    pub fn nft(self) -> &'static str {
        match self {
            Family::V4 => "ip",
            Family::V6 => "ip6",
        }
    }

    pub(crate) fn addr_type(self) -> &'static str {
        match self {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        }
    }

    pub(crate) fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv6() { Family::V6 } else { Family::V4 }
    }

    pub(crate) fn has(self, ip: &IpAddr) -> bool {
        Family::of(ip) == self
    }

    pub(crate) fn net_has(self, net: &IpNet) -> bool {
        self.has(&net.addr())
    }

    pub(crate) fn v6(self) -> bool {
        self == Family::V6
    }
}
