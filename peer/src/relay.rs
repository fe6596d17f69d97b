//! Relay and NAT state: which circuit relays a node knows, whether it seems reachable, and
//! when to reserve a circuit on one. Plain logic with an explicit clock; the driver carries the
//! decision out with `listen_on`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

/// Relays remembered at most (the oldest is forgotten).
const MAX_RELAYS: usize = 8;
/// Circuit dials waiting for one relay, at most (more are dialled at once).
const MAX_WAITING: usize = 64;
/// Time between reservation attempts.
const RELAY_RETRY: Duration = Duration::from_secs(10);

/// What AutoNAT last said about this node's reachability.
#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum NatGuess {
    #[default]
    Unknown,
    Public,
    Private,
}

/// A transport a hole can be punched over. Both ends of a punch must offer an address on the
/// same one: a node that knows its public address on TCP only cannot meet a peer that offers
/// QUIC only.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Transport {
    Tcp,
    Quic,
}

impl Transport {
    /// The transport of direct address `a`; `None` for a circuit or any other shape.
    pub(crate) fn of(a: &Multiaddr) -> Option<Self> {
        if a.iter().any(|p| p == Protocol::P2pCircuit) {
            None
        } else if a.iter().any(|p| p == Protocol::QuicV1) {
            Some(Self::Quic)
        } else if a.iter().any(|p| matches!(p, Protocol::Tcp(_))) {
            Some(Self::Tcp)
        } else {
            None
        }
    }
}

/// Circuit-relay reservations: at most one at a time, on the first relay that takes it.
#[derive(Debug)]
pub(crate) struct RelayState {
    known: Vec<(PeerId, Multiaddr)>,
    /// The circuit listener, while there is one.
    pub(crate) listener: Option<libp2p::core::transport::ListenerId>,
    /// The relay being connected to for a reservation, until a connection to it is up.
    pub(crate) reserving: Option<PeerId>,
    next: usize,
    last_try: Option<Instant>,
    started: Instant,
    pub(crate) nat: NatGuess,
    /// With no word from AutoNAT for this long after starting, the node counts as unreachable.
    after: Duration,
}

impl RelayState {
    pub(crate) fn new(now: Instant, after: Duration) -> Self {
        Self {
            known: Vec::new(),
            listener: None,
            reserving: None,
            next: 0,
            last_try: None,
            started: now,
            nat: NatGuess::Unknown,
            after,
        }
    }

    /// The known relays' addresses (each ending in `/p2p/RELAY`).
    pub(crate) fn addrs(&self) -> Vec<Multiaddr> {
        self.known.iter().map(|(_, a)| a.clone()).collect()
    }

    /// Remembers relay `id` at `addr`; false when it was known already.
    pub(crate) fn add(&mut self, id: PeerId, addr: Multiaddr) -> bool {
        if self.known.iter().any(|(_, a)| *a == addr) {
            return false;
        }
        if self.known.len() >= MAX_RELAYS {
            self.known.remove(0);
        }
        self.known.push((id, addr));
        // TCP addresses first: the circuit is reserved on the TCP address where there is one
        // (peers dial TCP circuits first too, client-lib's dials). Punching does not depend on
        // it: the node connects to the relay on each transport ([`RelayState::observers`]).
        self.known.sort_by_key(|(_, a)| !a.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_))));
        true
    }

    /// The address of relay `id` to reserve a circuit on over a connection on one of `open`:
    /// the first known one on such a transport (TCP first), else its first known one.
    pub(crate) fn addr_for(&self, id: PeerId, open: &[Transport]) -> Option<Multiaddr> {
        let of_id = || self.known.iter().filter(|(r, _)| *r == id).map(|(_, a)| a);
        of_id().find(|a| Transport::of(a).is_some_and(|t| open.contains(&t))).or_else(|| of_id().next()).cloned()
    }

    /// The relay to reserve a circuit on at `now`, if one is due: the node seems unreachable
    /// (AutoNAT says private, or has said nothing for [`RelayState::new`]'s `after`), holds no
    /// circuit, knows a relay, and did not try in the last [`RELAY_RETRY`]. Relays are tried in
    /// turn.
    pub(crate) fn due(&mut self, now: Instant) -> Option<(PeerId, Multiaddr)> {
        let waited = now.saturating_duration_since(self.started) >= self.after;
        let unreachable = self.nat == NatGuess::Private || (self.nat == NatGuess::Unknown && waited);
        let retry_ok = self.last_try.is_none_or(|t| now.saturating_duration_since(t) >= RELAY_RETRY);
        if self.listener.is_some() || self.known.is_empty() || !unreachable || !retry_ok {
            return None;
        }
        let pick = self.known[self.next % self.known.len()].clone();
        self.next += 1;
        self.last_try = Some(now);
        Some(pick)
    }

    /// The addresses of relay `id` to dial for its reservation, so that the node learns its
    /// public address (identify, on a direct connection) on every transport it listens on:
    /// hole punching offers only the addresses peers observed, and it meets a peer only on a
    /// transport both offer. One address per transport of `listening` that none of `covered`
    /// (the transports of the connections open to the relay) is on, and that the relay offers.
    pub(crate) fn observers(&self, id: PeerId, listening: &[Multiaddr], covered: &[Transport]) -> Vec<Multiaddr> {
        let mut out: Vec<Multiaddr> = Vec::new();
        for t in listening.iter().filter_map(Transport::of) {
            if covered.contains(&t) || out.iter().any(|a| Transport::of(a) == Some(t)) {
                continue;
            }
            if let Some((_, a)) = self.known.iter().find(|(r, a)| *r == id && Transport::of(a) == Some(t)) {
                out.push(a.clone());
            }
        }
        out
    }
}

/// The relay of circuit address `…/p2p/RELAY/p2p-circuit/…` and the address it is reached
/// at (`…/p2p/RELAY`); `None` for any other address.
pub(crate) fn circuit_via(a: &Multiaddr) -> Option<(PeerId, Multiaddr)> {
    let mut relay_addr = Multiaddr::empty();
    let mut last = None;
    for p in a.iter() {
        if p == Protocol::P2pCircuit {
            return last.map(|id| (id, relay_addr));
        }
        last = match p {
            Protocol::P2p(id) => Some(id),
            _ => None,
        };
        relay_addr.push(p);
    }
    None
}

/// The relay dials the node makes itself, and the circuit dials waiting for them.
///
/// libp2p's relay client dials a relay it is not connected to only when no other dial of that
/// relay is in flight, and fails the circuit or the reservation otherwise: two circuits through
/// one relay asked for at once, or a circuit beside a reservation, lose all but one. So the
/// node connects to a relay itself, and dials circuits through it once a connection is up (or
/// once none of its own dials of the relay is left: the relay client then dials by itself).
#[derive(Debug)]
pub(crate) struct RelayDials<T> {
    /// The node's own dials of relays in flight.
    pending: HashMap<ConnectionId, PeerId>,
    /// Circuit dials waiting for a connection to their relay.
    waiting: HashMap<PeerId, Vec<T>>,
}

impl<T> Default for RelayDials<T> {
    fn default() -> Self {
        Self { pending: HashMap::new(), waiting: HashMap::new() }
    }
}

/// What to do with a circuit dial.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Circuit<T> {
    /// Dial it now: too many wait for its relay.
    Now(T),
    /// It waits; dial the relay first.
    DialRelay,
    /// It waits for a dial of the relay in flight.
    Wait,
}

impl<T> RelayDials<T> {
    /// The node dials `relay` itself (connection `conn`).
    pub(crate) fn dialling(&mut self, conn: ConnectionId, relay: PeerId) {
        self.pending.insert(conn, relay);
    }

    /// Whether a dial of `relay` by the node is in flight.
    fn in_flight(&self, relay: PeerId) -> bool {
        self.pending.values().any(|r| *r == relay)
    }

    /// A dial of `circuit` through `relay`, which has no connection up.
    pub(crate) fn circuit(&mut self, relay: PeerId, circuit: T) -> Circuit<T> {
        let waiting = self.waiting.entry(relay).or_default();
        if waiting.len() >= MAX_WAITING {
            return Circuit::Now(circuit);
        }
        waiting.push(circuit);
        if self.in_flight(relay) { Circuit::Wait } else { Circuit::DialRelay }
    }

    /// A connection to `peer` is up (`conn`): the circuits waiting for it, to dial now.
    pub(crate) fn up(&mut self, conn: ConnectionId, peer: PeerId) -> Vec<T> {
        self.pending.remove(&conn);
        self.take(peer)
    }

    /// The circuits waiting for `relay`, to dial now (its dial could not start).
    pub(crate) fn take(&mut self, relay: PeerId) -> Vec<T> {
        self.waiting.remove(&relay).unwrap_or_default()
    }

    /// Dial `conn` failed: when it was the node's last dial of its relay in flight, the
    /// circuits waiting for that relay, to dial now all the same.
    pub(crate) fn failed(&mut self, conn: ConnectionId) -> Vec<T> {
        let Some(relay) = self.pending.remove(&conn) else { return Vec::new() };
        if self.in_flight(relay) {
            return Vec::new();
        }
        self.waiting.remove(&relay).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(n: u8) -> (PeerId, Multiaddr) {
        let id = PeerId::random();
        (id, format!("/ip4/10.0.0.{n}/tcp/4001/p2p/{id}").parse().unwrap())
    }

    #[test]
    fn tcp_relay_addresses_come_first() {
        let t0 = Instant::now();
        let mut r = RelayState::new(t0, Duration::ZERO);
        let id = PeerId::random();
        let quic: Multiaddr = format!("/ip4/10.0.0.9/udp/4001/quic-v1/p2p/{id}").parse().unwrap();
        let tcp: Multiaddr = format!("/ip4/10.0.0.9/tcp/4001/p2p/{id}").parse().unwrap();
        assert!(r.add(id, quic.clone()) && r.add(id, tcp.clone()));
        assert_eq!(r.addrs(), vec![tcp.clone(), quic]);
        assert_eq!(r.due(t0), Some((id, tcp)));
    }

    #[test]
    fn a_circuit_is_reserved_once_unreachable_in_turn_and_not_too_often() {
        let t0 = Instant::now();
        let mut r = RelayState::new(t0, Duration::from_secs(60));
        assert_eq!(r.due(t0), None, "no relay known");
        let (a, b) = (relay(1), relay(2));
        assert!(r.add(a.0, a.1.clone()) && r.add(b.0, b.1.clone()));
        assert!(!r.add(a.0, a.1.clone()), "known already");
        assert_eq!(r.due(t0), None, "reachability not known yet");
        assert_eq!(r.due(t0 + Duration::from_secs(60)), Some(a.clone()), "AutoNAT silent for 60 s");
        assert_eq!(r.due(t0 + Duration::from_secs(65)), None, "retried too soon");
        assert_eq!(r.due(t0 + Duration::from_secs(70)), Some(b), "the next relay");
        r.nat = NatGuess::Public;
        assert_eq!(r.due(t0 + Duration::from_secs(90)), None, "reachable directly");
        r.nat = NatGuess::Private;
        assert_eq!(r.due(t0 + Duration::from_secs(90)), Some(a));
    }

    #[test]
    fn the_relay_is_dialled_on_each_transport_the_node_listens_on_and_no_connection_covers() {
        let mut r = RelayState::new(Instant::now(), Duration::ZERO);
        let id = PeerId::random();
        let quic: Multiaddr = format!("/ip4/10.0.0.9/udp/4001/quic-v1/p2p/{id}").parse().unwrap();
        let tcp: Multiaddr = format!("/ip4/10.0.0.9/tcp/4001/p2p/{id}").parse().unwrap();
        r.add(id, quic.clone());
        r.add(id, tcp.clone());
        let other = relay(3);
        r.add(other.0, other.1);
        let listening: Vec<Multiaddr> = [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/192.168.1.2/tcp/4001",
            "/ip4/192.168.1.2/udp/4001/quic-v1",
            &format!("/ip4/10.0.0.9/tcp/4001/p2p/{id}/p2p-circuit"),
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        assert_eq!(Transport::of(&listening[3]), None, "a circuit is no transport to punch over");
        assert_eq!(r.observers(id, &listening, &[]), vec![tcp.clone(), quic.clone()]);
        assert_eq!(r.addr_for(id, &[Transport::Quic, Transport::Tcp]), Some(tcp.clone()), "TCP first");
        assert_eq!(r.addr_for(id, &[Transport::Quic]), Some(quic.clone()), "over the open connection");
        assert_eq!(r.addr_for(id, &[]), Some(tcp.clone()));
        // Connected over TCP: QUIC is dialled.
        assert_eq!(r.observers(id, &listening, &[Transport::Tcp]), vec![quic]);
        // Connected over QUIC: TCP is dialled.
        assert_eq!(r.observers(id, &listening, &[Transport::Quic]), vec![tcp.clone()]);
        assert!(r.observers(id, &listening, &[Transport::Quic, Transport::Tcp]).is_empty());
        // Only the transports the node listens on, and only the relay's own addresses.
        assert_eq!(r.observers(id, &listening[..2], &[]), vec![tcp]);
        assert!(r.observers(PeerId::random(), &listening, &[]).is_empty());
    }

    #[test]
    fn a_circuit_waits_for_a_connection_to_its_relay() {
        let relay = PeerId::random();
        let dst = PeerId::random();
        let circuit: Multiaddr = format!("/ip4/10.0.0.9/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{dst}").parse().unwrap();
        let relay_addr: Multiaddr = format!("/ip4/10.0.0.9/tcp/4001/p2p/{relay}").parse().unwrap();
        assert_eq!(circuit_via(&circuit), Some((relay, relay_addr)));
        assert_eq!(circuit_via(&format!("/ip4/10.0.0.9/tcp/4001/p2p/{dst}").parse().unwrap()), None);
        assert_eq!(circuit_via(&"/ip4/10.0.0.9/tcp/4001/p2p-circuit".parse().unwrap()), None);

        let mut d = RelayDials::default();
        let (tcp, quic) = (ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        assert_eq!(d.circuit(relay, circuit.clone()), Circuit::DialRelay);
        d.dialling(tcp, relay);
        d.dialling(quic, relay);
        assert_eq!(d.circuit(relay, circuit.clone()), Circuit::Wait);
        // One dial fails while the other is in flight: they go on waiting.
        assert!(d.failed(tcp).is_empty());
        assert_eq!(d.up(quic, relay), vec![circuit.clone(), circuit.clone()]);
        assert!(d.up(quic, relay).is_empty());
        // With no dial of the relay left, the circuits go all the same.
        assert_eq!(d.circuit(relay, circuit.clone()), Circuit::DialRelay);
        d.dialling(tcp, relay);
        assert_eq!(d.failed(tcp), vec![circuit.clone()]);
        assert!(d.failed(ConnectionId::new_unchecked(9)).is_empty(), "not a relay dial");
        assert_eq!(d.circuit(relay, circuit.clone()), Circuit::DialRelay);
        assert_eq!(d.take(relay), vec![circuit.clone()], "the relay's dial did not start");
        // Bounded.
        d.dialling(tcp, relay);
        for _ in 0..MAX_WAITING {
            assert_eq!(d.circuit(relay, circuit.clone()), Circuit::Wait);
        }
        assert_eq!(d.circuit(relay, circuit.clone()), Circuit::Now(circuit));
    }

    #[test]
    fn relays_are_bounded() {
        let mut r = RelayState::new(Instant::now(), Duration::ZERO);
        let first = relay(0);
        r.add(first.0, first.1.clone());
        for n in 1..=MAX_RELAYS as u8 {
            let x = relay(n);
            r.add(x.0, x.1);
        }
        assert_eq!(r.known.len(), MAX_RELAYS);
        assert!(r.add(first.0, first.1), "the oldest was forgotten");
    }
}
