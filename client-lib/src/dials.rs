//! Which listed peers and addresses a client dials (docs/security.md, "Clients"): a tracker's
//! list may be partly hostile, so a client spends a small budget of new peer dials per track
//! and period, tries at most [`ADDRS_PER_PEER`] addresses of each, backs off an address that
//! failed or served a wrong chunk, and never again dials a list entry (peer id and address)
//! whose handshake showed another key.
//!
//! Plain logic on an explicit clock; every table is bounded. Public so that the network
//! simulator (`chorus-sim`) drives the very code a client runs.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use chorus_core::TrackId;
use chorus_core::p2p::{Multiaddr, PeerId};
use lru::LruCache;

/// New peers dialled per track within [`PERIOD`] (by its play, and as many by its preload).
pub const NEW_DIALS_PER_TRACK: usize = 8;

/// Which open of a track a dial is for: a preload of it and the play that follows each have a
/// budget. The preload looks for holders of the track's first seconds, the play half a minute
/// later for holders of the rest; one budget for both left the play without new peers for the
/// rest of its minute (BENCHMARKS.md, "The next track's preload in the simulator": 5 points
/// more of the bytes from the edges).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Open {
    /// The track playing (or fetched).
    Play,
    /// A preload of the next track (`Client::preload`).
    Preload,
}

/// Addresses of one listed peer tried at most: a peer that lists 8 ports gets no more tries
/// than one that lists one.
pub const ADDRS_PER_PEER: usize = 2;
/// The period the dial budget is counted over.
pub const PERIOD: Duration = Duration::from_secs(60);
/// Backoff after an address's first failure; it doubles with each further one.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(10);
/// The longest backoff after failures.
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Backoff of every address of a peer that sent a wrong chunk.
pub const WRONG_CHUNK_BACKOFF: Duration = Duration::from_secs(3600);
/// Entries kept in each table.
const TABLE: usize = 4096;

/// A table of at most `n` entries that takes memory as they come, not all of it up front (a
/// simulation holds one per listener, a million of them).
fn table<K: std::hash::Hash + Eq, V>(n: NonZeroUsize) -> LruCache<K, V> {
    let mut t = LruCache::unbounded();
    t.resize(n);
    t
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    failures: u32,
}

/// The client's dial state, shared by its tracks.
#[derive(Debug)]
pub struct Dials {
    /// Per track and open: when its recent new peer dials were started.
    budget: LruCache<(TrackId, Open), VecDeque<Instant>>,
    backoff: LruCache<Multiaddr, Backoff>,
    /// List entries whose handshake showed another peer: never dialled again.
    false_entries: LruCache<(PeerId, Multiaddr), ()>,
    /// The addresses dialled per peer, to back them off if the peer turns out to lie; by
    /// [`Dials::key`] of the peer.
    dialled: LruCache<u64, Vec<Multiaddr>>,
    /// The keys of [`Dials::key`], random per table.
    hasher: std::hash::RandomState,
}

impl Default for Dials {
    fn default() -> Self {
        Self::with_table(TABLE)
    }
}

impl Dials {
    /// Dial state whose tables keep `entries` each (the client's: 4096; a simulation of many
    /// listeners keeps fewer).
    #[must_use]
    pub fn with_table(entries: usize) -> Self {
        let n = NonZeroUsize::new(entries).unwrap_or(NonZeroUsize::MIN);
        Self {
            budget: table(n),
            backoff: table(n),
            false_entries: table(n),
            dialled: table(n),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// A peer in the `dialled` table: a keyed 64-bit hash of its id, not the id's 80 bytes (a
    /// simulation holds a table for each of a million listeners). The keys are random per
    /// table, so no one can make two ids meet on purpose; were two to meet by chance (2^-64 a
    /// pair), a lying peer's addresses would be backed off with the other's, nothing more.
    fn key(&self, peer: &PeerId) -> u64 {
        use std::hash::BuildHasher as _;
        self.hasher.hash_one(peer)
    }

    /// The addresses listed for `peer` worth a dial at `now`: none proven false for it, none
    /// backing off, at most [`ADDRS_PER_PEER`], the first direct one and the first circuit
    /// first (a peer behind a NAT is reachable only through its circuit), a circuit over TCP
    /// before one over QUIC (the peer reserved its circuit over TCP, and hole punching needs
    /// both ends on one transport: chorus-peer's `relay.rs`). Charges nothing.
    pub fn usable(&self, peer: PeerId, listed: &[Multiaddr], now: Instant) -> Vec<Multiaddr> {
        let mut ok: Vec<&Multiaddr> = listed
            .iter()
            .filter(|a| !self.false_entries.contains(&(peer, (*a).clone())))
            .filter(|a| self.backoff.peek(*a).is_none_or(|b| now >= b.until))
            .collect();
        use chorus_core::p2p::multiaddr::Protocol;
        let circuit = |a: &Multiaddr| a.iter().any(|p| matches!(p, Protocol::P2pCircuit));
        let tcp = |a: &Multiaddr| a.iter().any(|p| matches!(p, Protocol::Tcp(_)));
        ok.sort_by_key(|a| circuit(a) && !tcp(a));
        if let (Some(d), Some(c)) = (ok.iter().position(|a| !circuit(a)), ok.iter().position(|a| circuit(a))) {
            let (first, second) = (ok[d], ok[c]);
            ok.retain(|a| *a != first && *a != second);
            ok.splice(0..0, [first, second]);
        }
        ok.into_iter().take(ADDRS_PER_PEER).cloned().collect()
    }

    /// Whether a new dial of `peer` (at `addrs`, from [`Dials::usable`]) for `open` of `track`
    /// may start at `now`; if so, it is counted against that budget: one per peer, however
    /// many addresses it lists.
    pub fn admit(&mut self, track: &TrackId, open: Open, peer: PeerId, addrs: &[Multiaddr], now: Instant) -> bool {
        // A budget whose dials are all a period old counts nothing, as if it were not there:
        // drop such from the least recently used end, so the table holds the opens dialled for
        // lately, not the last `TABLE` ever (a simulation keeps a million of these tables).
        while self
            .budget
            .peek_lru()
            .is_some_and(|(_, r)| r.back().is_none_or(|t| now.saturating_duration_since(*t) >= PERIOD))
        {
            self.budget.pop_lru();
        }
        let recent = self.budget.get_or_insert_mut((track.clone(), open), VecDeque::new);
        while recent.front().is_some_and(|t| now.saturating_duration_since(*t) >= PERIOD) {
            recent.pop_front();
        }
        if recent.len() >= NEW_DIALS_PER_TRACK {
            return false;
        }
        recent.push_back(now);
        let key = self.key(&peer);
        let dialled = self.dialled.get_or_insert_mut(key, Vec::new);
        for a in addrs {
            if !dialled.contains(a) && dialled.len() < chorus_core::api::MAX_ADDRS {
                dialled.push(a.clone());
            }
        }
        true
    }

    /// A dial of `addr` connected.
    pub fn succeeded(&mut self, addr: &Multiaddr) {
        self.backoff.pop(addr);
    }

    /// A dial of `addr` failed (refused, timed out, no handshake): back off, doubling.
    pub fn failed(&mut self, addr: &Multiaddr, now: Instant) {
        let failures = self.backoff.peek(addr).map_or(0, |b| b.failures).saturating_add(1);
        let wait = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(BACKOFF_MAX);
        self.backoff.put(addr.clone(), Backoff { until: now + wait, failures });
    }

    /// The node at `addr`, listed as `listed`, is another peer: that entry is false.
    pub fn wrong_peer(&mut self, listed: PeerId, addr: &Multiaddr) {
        self.false_entries.put((listed, addr.clone()), ());
    }

    /// `peer` sent a wrong chunk (it is banned by the node): its addresses are backed off for
    /// an hour, whoever lists them next.
    pub fn wrong_chunk(&mut self, peer: PeerId, now: Instant) {
        let key = self.key(&peer);
        for a in self.dialled.pop(&key).unwrap_or_default() {
            self.backoff.put(a, Backoff { until: now + WRONG_CHUNK_BACKOFF, failures: u32::MAX });
        }
    }
}

/// [`Dials`] shared by a client's tracks and the tasks that dial; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shared(std::sync::Arc<std::sync::Mutex<Dials>>);

impl Shared {
    /// The state, locked for a table update (no I/O under it).
    pub fn lock(&self) -> std::sync::MutexGuard<'_, Dials> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u16) -> Multiaddr {
        format!("/ip4/198.51.100.7/tcp/{n}").parse().unwrap()
    }

    /// `usable` then `admit`, as a dial makes them: the addresses to try, or `None`.
    fn dial(d: &mut Dials, t: &TrackId, p: PeerId, listed: &[Multiaddr], now: Instant) -> Option<Vec<Multiaddr>> {
        let addrs = d.usable(p, listed, now);
        (!addrs.is_empty() && d.admit(t, Open::Play, p, &addrs, now)).then_some(addrs)
    }

    #[test]
    fn a_track_gets_a_few_new_peer_dials_per_period() {
        let mut d = Dials::default();
        let t0 = Instant::now();
        let (a, b) = (TrackId::parse("a").unwrap(), TrackId::parse("b").unwrap());
        let admitted = (0..20).filter(|n| dial(&mut d, &a, PeerId::random(), &[addr(*n)], t0).is_some()).count();
        assert_eq!(admitted, NEW_DIALS_PER_TRACK);
        // Another track has its own budget; the first gets its back a period later.
        assert!(dial(&mut d, &b, PeerId::random(), &[addr(100)], t0).is_some());
        assert!(dial(&mut d, &a, PeerId::random(), &[addr(101)], t0 + PERIOD - Duration::from_millis(1)).is_none());
        assert!(dial(&mut d, &a, PeerId::random(), &[addr(102)], t0 + PERIOD).is_some());
        // A preload of the track has a budget of its own (and no more than that).
        let pre = (0..20).filter(|n| d.admit(&a, Open::Preload, PeerId::random(), &[addr(200 + n)], t0)).count();
        assert_eq!(pre, NEW_DIALS_PER_TRACK);
    }

    #[test]
    fn every_table_keeps_its_bound() {
        let mut d = Dials::with_table(4);
        let t0 = Instant::now();
        for n in 0..100u16 {
            let track = TrackId::parse(&format!("t{n}")).unwrap();
            assert!(dial(&mut d, &track, PeerId::random(), &[addr(n)], t0).is_some());
            d.failed(&addr(n), t0);
        }
        assert_eq!((d.budget.len(), d.backoff.len(), d.dialled.len()), (4, 4, 4));
        assert_eq!(d.budget.cap().get(), 4);
    }

    #[test]
    fn a_budget_a_period_old_is_dropped_as_the_next_dial_comes() {
        let mut d = Dials::default();
        let t0 = Instant::now();
        for n in 0..10u16 {
            let track = TrackId::parse(&format!("t{n}")).unwrap();
            assert!(dial(&mut d, &track, PeerId::random(), &[addr(n)], t0).is_some());
        }
        assert_eq!(d.budget.len(), 10);
        let t = TrackId::parse("t0").unwrap();
        assert!(dial(&mut d, &t, PeerId::random(), &[addr(50)], t0 + PERIOD - Duration::from_millis(1)).is_some());
        assert_eq!(d.budget.len(), 10, "nothing a period old yet");
        // A period after the others: only the track dialled since is kept, and its count holds.
        assert!(dial(&mut d, &t, PeerId::random(), &[addr(51)], t0 + PERIOD).is_some());
        assert_eq!(d.budget.len(), 1);
        assert_eq!(d.budget.peek(&(t, Open::Play)).map(VecDeque::len), Some(2));
    }

    #[test]
    fn a_peer_listing_many_addresses_costs_one_dial_and_gets_two_tries() {
        let mut d = Dials::default();
        let t0 = Instant::now();
        let t = TrackId::parse("a").unwrap();
        let many: Vec<Multiaddr> = (1..=8).map(addr).collect();
        // A hostile peer with 8 ports: two are tried, one dial of the budget is spent…
        assert_eq!(dial(&mut d, &t, PeerId::random(), &many, t0), Some(vec![addr(1), addr(2)]));
        // …so 7 other peers still get theirs.
        let others = (0..10).filter(|n| dial(&mut d, &t, PeerId::random(), &[addr(100 + n)], t0).is_some()).count();
        assert_eq!(others, NEW_DIALS_PER_TRACK - 1);
        // A direct address and a circuit: both are tried, whatever the order listed.
        let relayed: Multiaddr =
            format!("/ip4/203.0.113.1/tcp/4001/p2p/{}/p2p-circuit", PeerId::random()).parse().unwrap();
        let mixed = [addr(1), addr(2), addr(3), relayed.clone()];
        assert_eq!(d.usable(PeerId::random(), &mixed, t0), vec![addr(1), relayed.clone()]);
        // A circuit over TCP before one over QUIC, whatever the order listed.
        let quic: Multiaddr =
            format!("/ip4/203.0.113.1/udp/4001/quic-v1/p2p/{}/p2p-circuit", PeerId::random()).parse().unwrap();
        assert_eq!(d.usable(PeerId::random(), &[quic.clone(), relayed.clone()], t0), vec![relayed, quic]);
    }

    #[test]
    fn failed_addresses_back_off_doubling_and_recover() {
        let mut d = Dials::default();
        let t0 = Instant::now();
        let (p, a) = (PeerId::random(), addr(1));
        let usable = |d: &Dials, at| !d.usable(p, std::slice::from_ref(&a), at).is_empty();
        d.failed(&a, t0);
        assert!(!usable(&d, t0 + BACKOFF_FIRST - Duration::from_millis(1)));
        assert!(usable(&d, t0 + BACKOFF_FIRST));
        d.failed(&a, t0 + BACKOFF_FIRST);
        assert!(!usable(&d, t0 + BACKOFF_FIRST * 3 - Duration::from_millis(1)), "20 s after the second");
        for n in 0..30 {
            d.failed(&a, t0 + Duration::from_secs(n));
        }
        assert!(!usable(&d, t0 + Duration::from_secs(29) + BACKOFF_MAX - Duration::from_millis(1)));
        assert!(usable(&d, t0 + Duration::from_secs(29) + BACKOFF_MAX), "capped");
        d.succeeded(&a);
        assert!(usable(&d, t0 + Duration::from_secs(30) + BACKOFF_MAX));
        // A backed-off address is skipped, not the peer: its next one is tried.
        d.failed(&a, t0);
        assert_eq!(d.usable(p, &[a.clone(), addr(2)], t0), vec![addr(2)]);
    }

    #[test]
    fn a_false_entry_is_never_dialled_again_and_a_liar_is_avoided_for_an_hour() {
        let mut d = Dials::default();
        let t0 = Instant::now();
        let t = TrackId::parse("a").unwrap();
        let (listed, liar) = (PeerId::random(), PeerId::random());
        d.wrong_peer(listed, &addr(1));
        assert!(d.usable(listed, &[addr(1)], t0 + Duration::from_secs(86_400)).is_empty());
        // The same address listed for the peer that really is there may be dialled.
        assert!(dial(&mut d, &t, liar, &[addr(1), addr(2)], t0).is_some());
        d.wrong_chunk(liar, t0);
        let later = t0 + PERIOD;
        assert!(d.usable(liar, &[addr(2)], later).is_empty());
        assert!(d.usable(PeerId::random(), &[addr(1)], later).is_empty(), "whoever lists it");
        assert_eq!(d.usable(liar, &[addr(2)], t0 + WRONG_CHUNK_BACKOFF), vec![addr(2)]);
    }
}
