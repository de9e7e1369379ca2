//! IP addresses and CIDRs as kube's legacy validation reads them: Go's historical ("sloppy") parser, which
//! allows leading zeros in IPv4 octets, and the checks built on it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::field::{FieldError, Path};

/// Parses one IPv4 octet the way Go's historical parser (`netutils.ParseIPSloppy`) does: decimal, leading
/// zeros allowed, at most 255.
fn parse_sloppy_octet(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 10 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().and_then(|v| u8::try_from(v).ok())
}

fn parse_sloppy_ipv4(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut octets = [0u8; 4];
    for (o, p) in octets.iter_mut().zip(&parts) {
        *o = parse_sloppy_octet(p)?;
    }
    Some(Ipv4Addr::from(octets))
}

/// Parses an IP address as kube's legacy ("sloppy") validation does: like Go's `net.ParseIP`, but IPv4
/// octets may have leading zeros (they are read as decimal). Zones (`%eth0`) are rejected.
pub fn parse_ip_sloppy(value: &str) -> Option<IpAddr> {
    if let Ok(ip) = value.parse::<IpAddr>() {
        return Some(ip);
    }
    if !value.contains(':') {
        return parse_sloppy_ipv4(value).map(IpAddr::V4);
    }
    // An IPv6 address may end in an embedded IPv4 address, which may itself have leading zeros.
    let (head, tail) = value.rsplit_once(':')?;
    if !tail.contains('.') {
        return None;
    }
    let v4 = parse_sloppy_ipv4(tail)?;
    format!("{head}:{v4}").parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// Parses a CIDR as kube's legacy validation does (`netutils.ParseCIDRSloppy`): a sloppy IP, `/`, and a
/// decimal prefix length that fits the address family. Returns the address and the prefix length.
pub fn parse_cidr_sloppy(value: &str) -> Option<(IpAddr, u8)> {
    let (addr, mask) = value.split_once('/')?;
    if mask.is_empty() || mask.len() > 10 || !mask.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let bits: u32 = mask.parse().ok()?;
    // Go reads the address as IPv4 first, so the IPv4 form decides the allowed prefix length.
    let ip = match parse_sloppy_ipv4(addr) {
        Some(v4) => IpAddr::V4(v4),
        None => match parse_ip_sloppy(addr)? {
            IpAddr::V4(_) => return None,
            v6 => v6,
        },
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if bits > max {
        return None;
    }
    Some((ip, u8::try_from(bits).ok()?))
}

/// Go treats IPv4-mapped IPv6 addresses as IPv4 everywhere (`To4()`); this does the same.
pub fn canonical_family_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// True when the string is an IPv6 address in Go's sense (`netutils.IsIPv6String`): it parses and is not
/// IPv4 or IPv4-mapped.
pub fn is_ipv6_string(value: &str) -> bool {
    matches!(
        parse_ip_sloppy(value).map(canonical_family_ip),
        Some(IpAddr::V6(_))
    )
}

/// `IsValidIP` (legacy form, as kube 1.33 applies it with `StrictIPCIDRValidation` off).
pub fn is_valid_ip(path: &Path, value: &str) -> Vec<FieldError> {
    if parse_ip_sloppy(value).is_some() {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            path,
            value,
            "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
        )]
    }
}

/// `IsValidCIDR` (legacy form, as kube 1.33 applies it with `StrictIPCIDRValidation` off).
pub fn is_valid_cidr(path: &Path, value: &str) -> Vec<FieldError> {
    if parse_cidr_sloppy(value).is_some() {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            path,
            value,
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        )]
    }
}

/// `ValidateNonSpecialIP`: rejects unspecified, loopback, link-local and link-local multicast addresses
/// (used for external IPs and endpoints).
pub fn validate_non_special_ip(value: &str, path: &Path) -> Vec<FieldError> {
    let Some(ip) = parse_ip_sloppy(value).map(canonical_family_ip) else {
        return vec![FieldError::invalid(path, value, "must be a valid IP address")];
    };
    let mut errs = Vec::new();
    let (unspecified, loopback, link_local, link_local_mc) = match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            (
                v4.is_unspecified(),
                v4.is_loopback(),
                o[0] == 169 && o[1] == 254,
                o[0] == 224 && o[1] == 0 && o[2] == 0,
            )
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (
                v6.is_unspecified(),
                v6.is_loopback(),
                s[0] & 0xffc0 == 0xfe80,
                (s[0] >> 8) == 0xff && (s[0] & 0x0f) == 0x02,
            )
        }
    };
    if unspecified {
        errs.push(FieldError::invalid(
            path,
            value,
            format!("may not be unspecified ({value})"),
        ));
    }
    if loopback {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the loopback range (127.0.0.0/8, ::1/128)",
        ));
    }
    if link_local {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the link-local range (169.254.0.0/16, fe80::/10)",
        ));
    }
    if link_local_mc {
        errs.push(FieldError::invalid(
            path,
            value,
            "may not be in the link-local multicast range (224.0.0.0/24, ff02::/10)",
        ));
    }
    errs
}
