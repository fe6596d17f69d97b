//! Chunks travel over direct connections only: a peer reached through a relay circuit is asked
//! for chunks once a direct connection to it exists (hole punching, DCUtR), and the circuit is
//! then closed.
//!
//! Why: the relays a node knows are the edges' (`chorus edge --p2p-relay`), so a chunk relayed
//! through one crosses the edge twice, where serving it from the edge's cache crosses it once;
//! and a circuit is limited (by default 128 KiB and 2 minutes), so chunks sent over it are cut
//! off. A circuit carries what hole punching needs and the small `have` exchange. A fetch from
//! a peer reachable only through a circuit waits for the punch for at most [`HOLD`], then fails
//! (retryable): the client then takes the chunk from an edge, as from any failed peer. Requests
//! are spread over a peer's connections, so while a circuit and a direct connection both
//! exist, fetches wait for the circuit to close too.
//!
//! Plain logic with an explicit clock; the driver does what it returns.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::swarm::ConnectionId;

/// How long a fetch waits for a direct connection to a peer reached through a relay.
pub(crate) const HOLD: Duration = Duration::from_secs(3);

/// Fetches held per peer, at most (more fail at once).
const MAX_HELD: usize = 64;

/// A peer's open connections: which are circuits.
#[derive(Debug, Default)]
struct Conns {
    direct: Vec<ConnectionId>,
    relayed: Vec<ConnectionId>,
}

/// The connections of every peer, and the fetches held for them.
#[derive(Debug)]
pub(crate) struct DirectFirst<T> {
    conns: HashMap<PeerId, Conns>,
    held: HashMap<PeerId, Vec<(Instant, T)>>,
}

impl<T> Default for DirectFirst<T> {
    fn default() -> Self {
        Self { conns: HashMap::new(), held: HashMap::new() }
    }
}

/// What to do with a fetch.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Fetch<T> {
    /// Send it now.
    Send(T),
    /// Held until a direct connection is the only one.
    Held,
    /// Fail it: too many held for this peer.
    Fail(T),
}

impl<T> DirectFirst<T> {
    /// A connection to `peer` opened; returns the circuits to `peer` to close: all of them when
    /// this one is direct, this one when it is a circuit and a direct connection exists.
    pub(crate) fn opened(&mut self, peer: PeerId, conn: ConnectionId, relayed: bool) -> Vec<ConnectionId> {
        let c = self.conns.entry(peer).or_default();
        if relayed {
            c.relayed.push(conn);
            return if c.direct.is_empty() { Vec::new() } else { vec![conn] };
        }
        c.direct.push(conn);
        c.relayed.clone()
    }

    /// A connection to `peer` closed; returns the fetches that may now be sent (a direct
    /// connection is left and no circuit).
    pub(crate) fn closed(&mut self, peer: PeerId, conn: ConnectionId) -> Vec<T> {
        if let Some(c) = self.conns.get_mut(&peer) {
            c.direct.retain(|x| *x != conn);
            c.relayed.retain(|x| *x != conn);
            if c.direct.is_empty() && c.relayed.is_empty() {
                self.conns.remove(&peer);
            }
        }
        self.release(peer)
    }

    /// The fetches held for `peer` that may go now.
    fn release(&mut self, peer: PeerId) -> Vec<T> {
        if !self.clear(peer) {
            return Vec::new();
        }
        self.held.remove(&peer).unwrap_or_default().into_iter().map(|(_, t)| t).collect()
    }

    /// Whether a fetch from `peer` goes out now: it has no circuit open (no connection at all
    /// is the request's own business: it dials).
    fn clear(&self, peer: PeerId) -> bool {
        self.conns.get(&peer).is_none_or(|c| c.relayed.is_empty())
    }

    /// A fetch from `peer` at `now`.
    pub(crate) fn fetch(&mut self, peer: PeerId, t: T, now: Instant) -> Fetch<T> {
        if self.clear(peer) {
            return Fetch::Send(t);
        }
        let held = self.held.entry(peer).or_default();
        if held.len() >= MAX_HELD {
            return Fetch::Fail(t);
        }
        held.push((now, t));
        Fetch::Held
    }

    /// The fetches held for longer than [`HOLD`] at `now`, with their peers, to fail.
    pub(crate) fn expired(&mut self, now: Instant) -> Vec<(PeerId, T)> {
        let mut out = Vec::new();
        self.held.retain(|peer, held| {
            let (old, keep): (Vec<_>, Vec<_>) = held.drain(..).partition(|(at, _)| now.duration_since(*at) >= HOLD);
            out.extend(old.into_iter().map(|(_, t)| (*peer, t)));
            *held = keep;
            !held.is_empty()
        });
        out
    }

    /// Whether `peer` has a relay circuit open.
    pub(crate) fn relayed(&self, peer: PeerId) -> bool {
        self.conns.get(&peer).is_some_and(|c| !c.relayed.is_empty())
    }

    /// Whether `peer` has a direct connection open.
    #[cfg(test)]
    fn has_direct(&self, peer: PeerId) -> bool {
        self.conns.get(&peer).is_some_and(|c| !c.direct.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fetch_waits_for_the_punch_and_the_circuit_to_close() {
        let t0 = Instant::now();
        let mut d = DirectFirst::default();
        let (p, relayed, direct) = (PeerId::random(), ConnectionId::new_unchecked(1), ConnectionId::new_unchecked(2));
        // Not connected: the request dials by itself.
        assert_eq!(d.fetch(p, "a", t0), Fetch::Send("a"));
        assert!(d.opened(p, relayed, true).is_empty());
        assert_eq!(d.fetch(p, "b", t0), Fetch::Held);
        // The punch succeeds: the circuit is to be closed; fetches wait until it is.
        assert_eq!(d.opened(p, direct, false), vec![relayed]);
        assert!(d.has_direct(p));
        assert_eq!(d.fetch(p, "c", t0), Fetch::Held);
        assert_eq!(d.closed(p, relayed), vec!["b", "c"]);
        assert_eq!(d.fetch(p, "d", t0), Fetch::Send("d"));
        // Others are not held for it.
        assert_eq!(d.fetch(PeerId::random(), "e", t0), Fetch::Send("e"));
        // A circuit that opens beside a direct connection is closed at once.
        let late = ConnectionId::new_unchecked(3);
        assert_eq!(d.opened(p, late, true), vec![late]);
        assert_eq!(d.fetch(p, "f", t0), Fetch::Held);
        assert_eq!(d.closed(p, late), vec!["f"]);
    }

    #[test]
    fn without_a_punch_held_fetches_fail_after_the_hold() {
        let t0 = Instant::now();
        let mut d = DirectFirst::default();
        let p = PeerId::random();
        d.opened(p, ConnectionId::new_unchecked(1), true);
        assert_eq!(d.fetch(p, 1, t0), Fetch::Held);
        assert_eq!(d.fetch(p, 2, t0 + Duration::from_secs(1)), Fetch::Held);
        assert!(d.expired(t0 + HOLD - Duration::from_millis(1)).is_empty());
        assert_eq!(d.expired(t0 + HOLD), vec![(p, 1)]);
        assert_eq!(d.expired(t0 + HOLD + Duration::from_secs(1)), vec![(p, 2)]);
        for n in 0..MAX_HELD {
            assert_eq!(d.fetch(p, n, t0), Fetch::Held);
        }
        assert_eq!(d.fetch(p, 99, t0), Fetch::Fail(99));
        // The circuit closes with no direct connection: the held fetches go (and dial).
        assert_eq!(d.closed(p, ConnectionId::new_unchecked(1)).len(), MAX_HELD);
    }
}
