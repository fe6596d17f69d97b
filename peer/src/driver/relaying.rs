//! The driver's side of relays: remembering them, connecting to one and reserving a circuit
//! on it, and dialling circuits once their relay is connected (the logic is in
//! [`crate::relay`]).

use std::time::Instant;

use chorus_core::error::Chain;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use tracing::{debug, info, warn};

use super::{Driver, dial_error};
use crate::relay::{Circuit, Transport, circuit_via};

impl Driver {
    /// Dials `addr` of `peer` for the application; a circuit once a connection to its relay is
    /// up ([`crate::relay::RelayDials`]).
    pub(super) fn dial_peer(&mut self, addr: Multiaddr, peer: PeerId) {
        let Some((relay, relay_addr)) = circuit_via(&addr).filter(|(r, _)| !self.swarm.is_connected(r)) else {
            self.dial_app(addr, peer);
            return;
        };
        match self.relay_dials.circuit(relay, (addr, peer)) {
            Circuit::Now((addr, peer)) => self.dial_app(addr, peer),
            Circuit::DialRelay => {
                if !self.dial_relay(relay, relay_addr) {
                    for (addr, peer) in self.relay_dials.take(relay) {
                        self.dial_app(addr, peer);
                    }
                }
            }
            Circuit::Wait => {}
        }
    }

    /// Remembers relays (see [`crate::Peer::add_relays`]), then reserves a circuit on one if
    /// the node needs it: only once all are known, so that the reservation can pick a relay's
    /// TCP address and its other transports are dialled beside it ([`crate::relay::RelayState::observers`]).
    pub(crate) fn add_relays(&mut self, addrs: Vec<Multiaddr>) {
        for addr in addrs {
            let Some(libp2p::multiaddr::Protocol::P2p(id)) = addr.iter().last() else {
                warn!(%addr, "relay address without /p2p/ID; ignored");
                continue;
            };
            if id == *self.swarm.local_peer_id() || !self.relays.add(id, addr.clone()) {
                continue;
            }
            let b = self.swarm.behaviour_mut();
            b.kad.add_address(&id, addr.clone());
            b.autonat.add_server(id, Some(addr));
        }
        self.reserve_if_needed();
    }

    /// Dials `addr` of `peer` for the application (its client bounds those dials): not
    /// refused for the node's dial budget or a backoff, but counted. A failure answers the
    /// dials waiting for `peer`.
    pub(super) fn dial_app(&mut self, addr: Multiaddr, peer: PeerId) {
        self.guard.lock().allow(&addr, Instant::now());
        if let Err(e) = self.swarm.dial(addr.clone()) {
            let e = dial_error(addr.to_string(), Some(peer), e);
            for r in self.dials.remove(&peer).unwrap_or_default() {
                let _ = r.send(Err(e.clone()));
            }
        }
    }

    /// Dials relay `id` at `addr` (another connection beside any in flight); false when the
    /// dial could not start.
    pub(super) fn dial_relay(&mut self, id: PeerId, addr: Multiaddr) -> bool {
        debug!(relay = %id, %addr, "connecting to the relay");
        let opts = DialOpts::peer_id(id).addresses(vec![addr.clone()]).condition(PeerCondition::Always).build();
        let conn = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.relay_dials.dialling(conn, id);
                true
            }
            Err(e) => {
                debug!(%addr, error = %Chain(&e), "cannot dial the relay");
                false
            }
        }
    }

    /// Reserves a circuit on a known relay when the node seems unreachable and has none.
    ///
    /// The node first connects to the relay on every transport it listens on (TCP and QUIC):
    /// identify on each connection tells it its public address there, and hole punching meets
    /// a peer only on a transport both offer. The circuit is asked for once a connection is
    /// up ([`Driver::reserve_on`]), so the relay client never dials beside these dials (its
    /// dial would fail while they are pending, and drop the reservation).
    pub(super) fn reserve_if_needed(&mut self) {
        let Some((id, addr)) = self.relays.due(Instant::now()) else { return };
        let open = self.transports_to(id);
        let mut dials = self.relays.observers(id, &self.addrs.borrow(), &open);
        if !open.is_empty() {
            self.reserve_on(id);
        } else if dials.is_empty() {
            dials.push(addr);
        }
        if open.is_empty() {
            self.relays.reserving = Some(id);
        }
        for a in dials {
            self.dial_relay(id, a);
        }
    }

    /// The transports of the direct connections open to `peer`.
    pub(super) fn transports_to(&self, peer: PeerId) -> Vec<Transport> {
        self.remotes.values().filter(|(p, _)| *p == peer).filter_map(|(_, a)| Transport::of(a)).collect()
    }

    /// Asks relay `id`, connected, for a circuit.
    pub(super) fn reserve_on(&mut self, id: PeerId) {
        self.relays.reserving = None;
        let Some(addr) = self.relays.addr_for(id, &self.transports_to(id)) else { return };
        let circuit = addr.with(libp2p::multiaddr::Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(l) => {
                info!(relay = %id, nat = ?self.relays.nat, "not reachable directly; reserving a relay circuit");
                self.relays.listener = Some(l);
            }
            Err(e) => warn!(%circuit, error = %Chain(&e), "relay circuit refused"),
        }
    }
}
