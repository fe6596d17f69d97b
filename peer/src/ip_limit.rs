//! Inbound connections per source IP (docs/security.md, "Peers"): libp2p bounds connections in
//! total and per peer id, but peer ids cost nothing to make, so one host could still take every
//! slot. This behaviour refuses an inbound connection when its IP already has
//! [`MAX_PENDING_PER_IP`] in their handshake, or [`MAX_ESTABLISHED_PER_IP`] established. An IP
//! is an IPv4 address or an IPv6 /64 (a host picks any address in its /64, so counting single
//! IPv6 addresses would bound nothing; [`chorus_core::ip::host`]).
//! Loopback sources are exempt from the second bound (a local process is trusted: it could read
//! the cache directly, and a swarm on one machine speaks from 127.0.0.1); relayed connections
//! are bounded by the relay.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, ListenFailure, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Inbound connections from one IP still in their handshake, at most.
pub const MAX_PENDING_PER_IP: u32 = 8;
/// Established inbound connections from one IP (not loopback), at most.
pub const MAX_ESTABLISHED_PER_IP: u32 = 16;

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("{ip} has {count} inbound connections {state}, the most one source (an IPv4 address, an IPv6 /64) may have")]
pub struct TooMany {
    ip: IpAddr,
    count: u32,
    state: &'static str,
}

/// The counts, apart from the swarm (plain logic).
#[derive(Debug, Default)]
struct Counts {
    pending: HashMap<ConnectionId, IpAddr>,
    established: HashMap<ConnectionId, IpAddr>,
    pending_per_ip: HashMap<IpAddr, u32>,
    established_per_ip: HashMap<IpAddr, u32>,
}

fn inc(map: &mut HashMap<IpAddr, u32>, ip: IpAddr) {
    *map.entry(ip).or_default() += 1;
}

fn dec(map: &mut HashMap<IpAddr, u32>, ip: IpAddr) {
    if let Some(n) = map.get_mut(&ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            map.remove(&ip);
        }
    }
}

impl Counts {
    fn pending(&mut self, id: ConnectionId, ip: IpAddr) -> Result<(), TooMany> {
        let count = self.pending_per_ip.get(&ip).copied().unwrap_or(0);
        if count >= MAX_PENDING_PER_IP {
            return Err(TooMany { ip, count, state: "in their handshake" });
        }
        inc(&mut self.pending_per_ip, ip);
        self.pending.insert(id, ip);
        Ok(())
    }

    fn pending_over(&mut self, id: ConnectionId) {
        if let Some(ip) = self.pending.remove(&id) {
            dec(&mut self.pending_per_ip, ip);
        }
    }

    fn established(&mut self, id: ConnectionId, ip: IpAddr) -> Result<(), TooMany> {
        self.pending_over(id);
        let count = self.established_per_ip.get(&ip).copied().unwrap_or(0);
        if !ip.is_loopback() && count >= MAX_ESTABLISHED_PER_IP {
            return Err(TooMany { ip, count, state: "established" });
        }
        Ok(())
    }

    fn opened(&mut self, id: ConnectionId, ip: IpAddr) {
        inc(&mut self.established_per_ip, ip);
        self.established.insert(id, ip);
    }

    fn closed(&mut self, id: ConnectionId) {
        if let Some(ip) = self.established.remove(&id) {
            dec(&mut self.established_per_ip, ip);
        }
    }
}

/// The source a direct connection is counted against: its IPv4 address (an IPv4-mapped IPv6
/// one included) or its IPv6 /64; `None` for a relayed one.
fn ip_of(addr: &Multiaddr) -> Option<IpAddr> {
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return None;
    }
    addr.iter()
        .find_map(|p| match p {
            Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
            Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
            _ => None,
        })
        .map(chorus_core::ip::host)
}

/// The behaviour (see the module docs).
#[derive(Debug, Default)]
pub struct IpLimit {
    counts: Counts,
}

impl NetworkBehaviour for IpLimit {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        match ip_of(remote) {
            Some(ip) => self.counts.pending(id, ip).map_err(ConnectionDenied::new),
            None => Ok(()),
        }
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        _peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if let Some(ip) = ip_of(remote) {
            self.counts.established(id, ip).map_err(ConnectionDenied::new)?;
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _id: ConnectionId,
        _peer: PeerId,
        _addr: &Multiaddr,
        _role: Endpoint,
        _port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                if let ConnectedPoint::Listener { send_back_addr, .. } = e.endpoint
                    && let Some(ip) = ip_of(send_back_addr)
                {
                    self.counts.opened(e.connection_id, ip);
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => self.counts.closed(connection_id),
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => self.counts.pending_over(connection_id),
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _peer: PeerId, _id: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_address_gets_a_bounded_share() {
        let mut c = Counts::default();
        let ip: IpAddr = "198.51.100.7".parse().unwrap();
        let ids: Vec<ConnectionId> = (0..40).map(|_| ConnectionId::new_unchecked(rand_id())).collect();
        for id in &ids[..8] {
            c.pending(*id, ip).unwrap();
        }
        assert!(c.pending(ids[8], ip).is_err(), "a ninth handshake from one address");
        assert!(c.pending(ids[8], "198.51.100.8".parse().unwrap()).is_ok(), "another address is not affected");
        // Handshakes that end free their place; established ones count on their own.
        for (n, id) in ids[..8].iter().enumerate() {
            c.established(*id, ip).unwrap();
            c.opened(*id, ip);
            assert_eq!(c.established_per_ip[&ip], u32::try_from(n + 1).unwrap());
        }
        for id in &ids[9..17] {
            c.pending(*id, ip).unwrap();
            c.established(*id, ip).unwrap();
            c.opened(*id, ip);
        }
        c.pending(ids[17], ip).unwrap();
        assert!(c.established(ids[17], ip).is_err(), "a seventeenth established connection");
        assert!(!c.pending_per_ip.contains_key(&ip), "{:?}", c.pending_per_ip);
        c.closed(ids[0]);
        c.pending(ids[18], ip).unwrap();
        c.established(ids[18], ip).unwrap();
        // Loopback is exempt from the established bound.
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        for id in &ids[20..40] {
            c.established(*id, lo).unwrap();
            c.opened(*id, lo);
        }
    }

    fn rand_id() -> usize {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(1 << 40);
        NEXT.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn sources_are_ipv4_addresses_and_ipv6_64s_and_relayed_connections_have_none() {
        assert_eq!(ip_of(&"/ip4/10.0.0.1/tcp/1".parse().unwrap()), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(ip_of(&"/ip6/::ffff:10.0.0.1/tcp/1".parse().unwrap()), Some("10.0.0.1".parse().unwrap()));
        // Two addresses of one /64 are one source.
        let (a, b) = (
            ip_of(&"/ip6/2001:db8::1/tcp/1".parse().unwrap()),
            ip_of(&"/ip6/2001:db8::ffff:2/udp/1/quic-v1".parse().unwrap()),
        );
        assert_eq!(a, b);
        assert_eq!(a, Some("2001:db8::".parse().unwrap()));
        assert_ne!(a, ip_of(&"/ip6/2001:db8:0:1::1/tcp/1".parse().unwrap()));
        let relayed: Multiaddr = format!("/ip4/10.0.0.1/tcp/1/p2p/{}/p2p-circuit", PeerId::random()).parse().unwrap();
        assert_eq!(ip_of(&relayed), None);
    }
}
