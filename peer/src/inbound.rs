//! Inbound connections below the total (docs/security.md, "Peers"): strangers that connect to
//! a node must not take the slots it needs to dial the peers it chooses.
//!
//! libp2p's connection limits count inbound and outbound together, so connections from a few
//! hosts with fresh peer ids could fill them and the node could then dial no one. This
//! behaviour keeps established inbound connections at [`crate::PeerConfig::max_inbound`] (by
//! default three quarters of `max_connections`), so the rest stays for dials.
//!
//! When inbound is full, a new inbound connection evicts the least useful one instead of being
//! refused: the one whose peer has gone longest without a chunk exchanged either way (or since
//! it connected, if never), provided that is at least [`GRACE`] ago. Refusing everyone new
//! would let whoever connected first keep the slots for good; evicting only connections that
//! did nothing useful for [`GRACE`] means that a flood of new connections cannot push out peers
//! that are swapping chunks, and each newcomer gets [`GRACE`] to prove useful. When no
//! connection is that idle, the newcomer is refused. Plain logic on an explicit clock
//! ([`Slots`]); the behaviour is thin.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::{
    CloseConnection, ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};
use tracing::debug;

use crate::metrics::PeerMetrics;

/// How long a connection may go without a chunk exchanged before a newcomer may evict it.
pub const GRACE: Duration = Duration::from_secs(30);

/// Inbound connections are full and none has been idle for [`GRACE`].
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{count} inbound connections, the most this node takes, and none idle for {} s", GRACE.as_secs())]
pub struct InboundFull {
    count: usize,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    peer: PeerId,
    /// The last chunk exchanged with the peer, or when the connection opened.
    active: Instant,
}

/// What to do with a new inbound connection.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// There is room.
    Accept,
    /// Take it, and close this idle one.
    Evict(PeerId, ConnectionId),
}

/// The inbound connections of one node and when each was last useful (plain logic).
#[derive(Debug)]
pub(crate) struct Slots {
    max: usize,
    open: HashMap<ConnectionId, Entry>,
}

impl Slots {
    pub(crate) fn new(max: usize) -> Self {
        Self { max, open: HashMap::new() }
    }

    /// Whether a new inbound connection may open at `now`; an evicted one no longer counts.
    pub(crate) fn admit(&mut self, now: Instant) -> Result<Admit, InboundFull> {
        if self.open.len() < self.max {
            return Ok(Admit::Accept);
        }
        let idle = self
            .open
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.active) >= GRACE)
            .min_by_key(|(_, e)| e.active)
            .map(|(id, e)| (*id, e.peer));
        match idle {
            Some((id, peer)) => {
                self.open.remove(&id);
                Ok(Admit::Evict(peer, id))
            }
            None => Err(InboundFull { count: self.open.len() }),
        }
    }

    pub(crate) fn opened(&mut self, id: ConnectionId, peer: PeerId, now: Instant) {
        self.open.insert(id, Entry { peer, active: now });
    }

    pub(crate) fn closed(&mut self, id: ConnectionId) {
        self.open.remove(&id);
    }

    /// A chunk was exchanged with `peer` (served to it, or fetched from it and verified).
    pub(crate) fn useful(&mut self, peer: PeerId, now: Instant) {
        for e in self.open.values_mut().filter(|e| e.peer == peer) {
            e.active = now;
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }
}

/// The behaviour (see the module docs).
pub(crate) struct InboundSlots {
    slots: Slots,
    /// Connections to close (evicted).
    close: VecDeque<(PeerId, ConnectionId)>,
    metrics: PeerMetrics,
}

impl InboundSlots {
    pub(crate) fn new(max: usize, metrics: PeerMetrics) -> Self {
        Self { slots: Slots::new(max), close: VecDeque::new(), metrics }
    }

    /// A chunk was exchanged with `peer` at `now`.
    pub(crate) fn useful(&mut self, peer: PeerId, now: Instant) {
        self.slots.useful(peer, now);
    }
}

impl NetworkBehaviour for InboundSlots {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_established_inbound_connection(
        &mut self,
        _id: ConnectionId,
        peer: PeerId,
        _local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        match self.slots.admit(Instant::now()) {
            Ok(Admit::Accept) => {}
            Ok(Admit::Evict(old, id)) => {
                debug!(evicted = %old, newcomer = %peer, "inbound connections full; the longest idle one is closed");
                self.metrics.inbound_evicted.inc();
                self.close.push_back((old, id));
            }
            Err(e) => {
                debug!(%peer, %remote, "inbound connections full; refused");
                self.metrics.inbound_refused.inc();
                return Err(ConnectionDenied::new(e));
            }
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
            FromSwarm::ConnectionEstablished(e) if matches!(e.endpoint, ConnectedPoint::Listener { .. }) => {
                self.slots.opened(e.connection_id, e.peer_id, Instant::now());
                self.metrics.inbound_connections.set(i64::try_from(self.slots.len()).unwrap_or(i64::MAX));
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                self.slots.closed(connection_id);
                self.metrics.inbound_connections.set(i64::try_from(self.slots.len()).unwrap_or(i64::MAX));
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(&mut self, _peer: PeerId, _id: ConnectionId, event: THandlerOutEvent<Self>) {
        match event {}
    }

    fn poll(&mut self, _cx: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        match self.close.pop_front() {
            Some((peer_id, id)) => {
                Poll::Ready(ToSwarm::CloseConnection { peer_id, connection: CloseConnection::One(id) })
            }
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: usize) -> ConnectionId {
        ConnectionId::new_unchecked(n)
    }

    #[test]
    fn inbound_stops_at_its_share_and_evicts_the_longest_idle_once_past_the_grace() {
        let t0 = Instant::now();
        let mut s = Slots::new(3);
        let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for (n, p) in peers.iter().enumerate() {
            assert_eq!(s.admit(t0), Ok(Admit::Accept));
            s.opened(id(n), *p, t0 + Duration::from_secs(n as u64));
        }
        // Full, and all newer than the grace: a newcomer is refused.
        assert!(s.admit(t0 + GRACE - Duration::from_millis(1)).is_err());
        // Peer 0 swaps chunks; peers 1 and 2 do nothing.
        s.useful(peers[0], t0 + GRACE);
        let later = t0 + GRACE + Duration::from_secs(2);
        assert_eq!(s.admit(later), Ok(Admit::Evict(peers[1], id(1))), "the longest idle, not the useful one");
        s.opened(id(10), PeerId::random(), later);
        assert_eq!(s.len(), 3);
        // The newcomer has its own grace; peer 2 is next, then peer 0 once it idles too.
        let t = later + Duration::from_secs(1);
        assert_eq!(s.admit(t), Ok(Admit::Evict(peers[2], id(2))));
        s.opened(id(11), PeerId::random(), t);
        assert!(s.admit(t).is_err());
        assert_eq!(s.admit(t0 + GRACE * 2), Ok(Admit::Evict(peers[0], id(0))));
        // Closing frees a slot outright.
        s.closed(id(10));
        assert_eq!(s.admit(t0 + GRACE * 2), Ok(Admit::Accept));
    }
}
