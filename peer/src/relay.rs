//! Relay and NAT state: which circuit relays a node knows, whether it seems reachable, and
//! when to reserve a circuit on one. Plain logic with an explicit clock; the driver carries the
//! decision out with `listen_on`.

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

/// Relays remembered at most (the oldest is forgotten).
const MAX_RELAYS: usize = 8;
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

/// Circuit-relay reservations: at most one at a time, on the first relay that takes it.
#[derive(Debug)]
pub(crate) struct RelayState {
    known: Vec<(PeerId, Multiaddr)>,
    /// The circuit listener, while there is one.
    pub(crate) listener: Option<libp2p::core::transport::ListenerId>,
    next: usize,
    last_try: Option<Instant>,
    started: Instant,
    pub(crate) nat: NatGuess,
    /// With no word from AutoNAT for this long after starting, the node counts as unreachable.
    after: Duration,
}

impl RelayState {
    pub(crate) fn new(now: Instant, after: Duration) -> Self {
        Self { known: Vec::new(), listener: None, next: 0, last_try: None, started: now, nat: NatGuess::Unknown, after }
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
        // TCP addresses first: a reservation over TCP gives the node, through identify on that
        // connection, the observed TCP address that hole punching needs, and its peers reach
        // it through TCP circuits too (client-lib's dials), so both ends punch over the same
        // transport (over QUIC on one end and TCP on the other no punch can meet).
        self.known.sort_by_key(|(_, a)| !a.iter().any(|p| matches!(p, libp2p::multiaddr::Protocol::Tcp(_))));
        true
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
