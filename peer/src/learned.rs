//! Which addresses a peer reports about itself may enter Kademlia's routing table
//! (docs/security.md, "Peers"): the rule the tracker applies to announces
//! ([`chorus_core::announce::bound_addrs`]), applied to what identify carries.
//!
//! Whatever enters the routing table is handed to other nodes in Kademlia answers and dialled
//! by them and by this node, so a peer that reports `/ip4/169.254.169.254/tcp/80` or a host on
//! the operator's LAN would make the swarm dial third parties for it. A reported address is
//! kept only when it is:
//!
//! - a direct address (`/ip4|ip6/IP/tcp/PORT` or `…/udp/PORT/quic-v1`, port not 0, no DNS
//!   name) whose `IP` is the one the reporting connection comes from, and neither unspecified
//!   nor multicast: a private, loopback or link-local address is thus kept only for a peer
//!   that speaks from that very address;
//! - or a relay circuit through one of this node's known relays, rebuilt from the relay's
//!   known address (the reported prefix is dropped, so it cannot smuggle in a host).
//!
//! At most [`MAX_LEARNED`] addresses are kept per report. Pure functions, no I/O.

use std::net::IpAddr;

use chorus_core::announce::{circuit_relay, direct_ip};
use chorus_core::ip::canonical;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// Addresses kept from one identify report, at most (a tracker lists as many per peer).
pub(crate) const MAX_LEARNED: usize = chorus_core::api::MAX_ADDRS;

/// The IP a connection's remote address comes from; `None` for a relayed connection (its
/// first IP is the relay's, not the peer's).
pub(crate) fn source_ip(remote: &Multiaddr) -> Option<IpAddr> {
    if remote.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    remote.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(canonical(IpAddr::V4(ip))),
        Protocol::Ip6(ip) => Some(canonical(IpAddr::V6(ip))),
        _ => None,
    })
}

/// Whether `a` (with no `/p2p/…` at its end) is a direct address worth dialling at all: the
/// shape [`direct_ip`] accepts, and not an unspecified, multicast or broadcast IP.
pub(crate) fn dialable_ip(a: &Multiaddr) -> Option<IpAddr> {
    let ip = canonical(direct_ip(a)?);
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    (!ip.is_unspecified() && !ip.is_multicast() && !broadcast).then_some(ip)
}

/// The addresses of `reported` (what `peer` says it listens on) that may enter the routing
/// table, for a report that came over a connection from `remote`; `relays` are this node's
/// known relays (full multiaddrs ending in `/p2p/RELAY`). See the module docs.
pub(crate) fn routable(
    peer: PeerId,
    reported: &[Multiaddr],
    remote: &Multiaddr,
    relays: &[Multiaddr],
) -> Vec<Multiaddr> {
    let source = source_ip(remote);
    let mut kept: Vec<Multiaddr> = Vec::new();
    for a in reported {
        let Some(a) = strip_peer(a.clone(), peer) else { continue };
        let candidate = if let Some(relay) = circuit_relay(&a) {
            relays
                .iter()
                .find(|r| r.iter().last() == Some(Protocol::P2p(relay)))
                .map(|r| r.clone().with(Protocol::P2pCircuit))
        } else {
            match (dialable_ip(&a), source) {
                (Some(ip), Some(from)) if ip == from => Some(a),
                _ => None,
            }
        };
        if let Some(c) = candidate
            && !kept.contains(&c)
        {
            kept.push(c);
            if kept.len() == MAX_LEARNED {
                break;
            }
        }
    }
    kept
}

/// `a` without a trailing `/p2p/<peer>`; `None` when it names another peer at its end.
fn strip_peer(mut a: Multiaddr, peer: PeerId) -> Option<Multiaddr> {
    match a.iter().last() {
        Some(Protocol::P2p(p)) if p == peer => {
            a.pop();
            Some(a)
        }
        Some(Protocol::P2p(_)) => None,
        _ => Some(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    fn kept(reported: &[&str], remote: &str) -> Vec<String> {
        let peer = PeerId::random();
        let reported: Vec<Multiaddr> = reported.iter().map(|a| m(a)).collect();
        routable(peer, &reported, &m(remote), &[]).iter().map(ToString::to_string).collect()
    }

    #[test]
    fn only_addresses_on_the_reporting_connections_ip_are_kept() {
        let from = "/ip4/203.0.113.9/tcp/51000";
        assert_eq!(
            kept(
                &[
                    "/ip4/203.0.113.9/tcp/4001",
                    "/ip4/203.0.113.9/udp/4001/quic-v1",
                    "/ip4/169.254.169.254/tcp/80",
                    "/ip4/10.1.2.3/tcp/22",
                    "/ip4/203.0.113.10/tcp/4001",
                    "/ip4/127.0.0.1/tcp/4001",
                ],
                from
            ),
            ["/ip4/203.0.113.9/tcp/4001", "/ip4/203.0.113.9/udp/4001/quic-v1"]
        );
        // An IPv4 client seen on a dual-stack socket is the same source.
        assert_eq!(
            kept(&["/ip4/203.0.113.9/tcp/4001"], "/ip6/::ffff:203.0.113.9/tcp/1"),
            ["/ip4/203.0.113.9/tcp/4001"]
        );
    }

    #[test]
    fn private_and_loopback_addresses_only_for_a_peer_speaking_from_them() {
        assert_eq!(kept(&["/ip4/127.0.0.1/tcp/4001"], "/ip4/127.0.0.1/tcp/50000"), ["/ip4/127.0.0.1/tcp/4001"]);
        assert_eq!(kept(&["/ip4/192.168.1.5/tcp/4001"], "/ip4/192.168.1.5/tcp/50000"), ["/ip4/192.168.1.5/tcp/4001"]);
        assert!(kept(&["/ip4/127.0.0.1/tcp/4001", "/ip4/192.168.1.5/tcp/4001"], "/ip4/198.51.100.1/tcp/1").is_empty());
        // Link-local, even from link-local, is only ever the sender itself.
        assert!(kept(&["/ip4/169.254.169.254/tcp/80"], "/ip4/169.254.10.10/tcp/1").is_empty());
    }

    #[test]
    fn no_dns_unspecified_multicast_port_zero_or_other_shapes() {
        let from = "/ip4/0.0.0.0/tcp/1";
        assert!(kept(&["/ip4/0.0.0.0/tcp/4001"], from).is_empty(), "unspecified, even if the source claims it");
        for bad in [
            "/dns4/example.com/tcp/4001",
            "/ip4/203.0.113.9/tcp/0",
            "/ip4/203.0.113.9/udp/4001",
            "/ip4/203.0.113.9/tcp/4001/ws",
            "/ip4/203.0.113.9/udp/0/quic-v1",
        ] {
            assert!(kept(&[bad], "/ip4/203.0.113.9/tcp/1").is_empty(), "{bad}");
        }
        assert!(kept(&["/ip4/224.0.0.251/udp/5353/quic-v1"], "/ip4/224.0.0.251/udp/1/quic-v1").is_empty());
        assert!(kept(&["/ip6/ff02::1/tcp/4001"], "/ip6/ff02::1/tcp/1").is_empty());
        assert!(kept(&["/ip4/255.255.255.255/tcp/4001"], "/ip4/255.255.255.255/tcp/1").is_empty());
    }

    #[test]
    fn nothing_direct_from_a_relayed_connection_and_circuits_only_through_known_relays() {
        let (peer, relay, other) = (PeerId::random(), PeerId::random(), PeerId::random());
        let relay_addr = m(&format!("/ip4/198.51.100.1/tcp/4001/p2p/{relay}"));
        let remote = m(&format!("/ip4/198.51.100.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{peer}"));
        let reported = [
            m("/ip4/198.51.100.1/tcp/9999"),
            m(&format!("/ip4/169.254.169.254/tcp/80/p2p/{relay}/p2p-circuit")),
            m(&format!("/ip4/10.0.0.1/tcp/1/p2p/{other}/p2p-circuit")),
        ];
        let out = routable(peer, &reported, &remote, std::slice::from_ref(&relay_addr));
        assert_eq!(out, [relay_addr.with(Protocol::P2pCircuit)], "the circuit rebuilt from the known relay");
    }

    #[test]
    fn an_address_naming_another_peer_is_dropped_and_reports_are_bounded() {
        let peer = PeerId::random();
        let from = m("/ip4/203.0.113.9/tcp/1");
        let own = m(&format!("/ip4/203.0.113.9/tcp/4001/p2p/{peer}"));
        let foreign = m(&format!("/ip4/203.0.113.9/tcp/4002/p2p/{}", PeerId::random()));
        assert_eq!(routable(peer, &[own, foreign], &from, &[]), [m("/ip4/203.0.113.9/tcp/4001")]);
        let many: Vec<Multiaddr> = (1..=100).map(|p| m(&format!("/ip4/203.0.113.9/tcp/{p}"))).collect();
        assert_eq!(routable(peer, &many, &from, &[]).len(), MAX_LEARNED);
        let dup = vec![m("/ip4/203.0.113.9/tcp/1"); 5];
        assert_eq!(routable(peer, &dup, &from, &[]).len(), 1);
    }
}
