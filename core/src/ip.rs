//! Source addresses as the limits per source count them: one host is an IPv4 address or an
//! IPv6 /64, and an IPv4-mapped IPv6 address is its IPv4 address. The tracker's budgets, the
//! front's fair shares, the rate limits and the peer layer's per-IP limits all count by these.

use std::net::IpAddr;

/// `ip` (made [`canonical`]) with its host bits cleared to `v4_bits` (IPv4) or `v6_bits`
/// (IPv6) of prefix.
#[must_use]
pub fn prefix(ip: IpAddr, v4_bits: u32, v6_bits: u32) -> IpAddr {
    match canonical(ip) {
        IpAddr::V4(v4) => IpAddr::V4(std::net::Ipv4Addr::from(
            u32::from(v4) & u32::MAX.checked_shl(32_u32.saturating_sub(v4_bits)).unwrap_or(0),
        )),
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(
            u128::from(v6) & u128::MAX.checked_shl(128_u32.saturating_sub(v6_bits)).unwrap_or(0),
        )),
    }
}

/// The addresses one host is taken to own, as limits per source count them: an IPv4 address,
/// or an IPv6 /64 (one host is usually given a whole /64, and picks any address in it).
#[must_use]
pub fn host(ip: IpAddr) -> IpAddr {
    prefix(ip, 32, 64)
}

/// `ip` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, as a dual-stack socket reports an
/// IPv4 client) written as the IPv4 address.
#[must_use]
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_is_an_ipv4_address_or_an_ipv6_64() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(host(ip("198.51.100.9")), ip("198.51.100.9"));
        assert_eq!(host(ip("::ffff:198.51.100.9")), ip("198.51.100.9"));
        assert_eq!(host(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")), ip("2001:db8:1:2::"));
        assert_eq!(prefix(ip("198.51.100.9"), 24, 48), ip("198.51.100.0"));
        assert_eq!(prefix(ip("2001:db8:1:2::9"), 24, 48), ip("2001:db8:1::"));
        assert_eq!(prefix(ip("198.51.100.9"), 0, 0), ip("0.0.0.0"));
    }
}
