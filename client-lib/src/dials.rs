//! Which listed peer addresses a client dials (docs/security.md, "Clients"): a tracker's list
//! may be partly hostile, so a client spends a small budget of new dials per track and period,
//! backs off an address that failed or served a wrong chunk, and never again dials a list
//! entry (peer id and address) whose handshake showed another key.
//!
//! Plain logic on an explicit clock; every table is bounded.

use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use chorus_core::TrackId;
use chorus_peer::{Multiaddr, PeerId};
use lru::LruCache;

/// New dials per track within [`PERIOD`].
pub(crate) const NEW_DIALS_PER_TRACK: usize = 8;
/// The period the dial budget is counted over.
pub(crate) const PERIOD: Duration = Duration::from_secs(60);
/// Backoff after an address's first failure; it doubles with each further one.
pub(crate) const BACKOFF_FIRST: Duration = Duration::from_secs(10);
/// The longest backoff after failures.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Backoff of every address of a peer that sent a wrong chunk.
pub(crate) const WRONG_CHUNK_BACKOFF: Duration = Duration::from_secs(3600);
/// Entries kept in each table.
const TABLE: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    failures: u32,
}

/// The client's dial state, shared by its tracks.
#[derive(Debug)]
pub(crate) struct Dials {
    /// Per track: when its recent new dials were made.
    budget: LruCache<TrackId, VecDeque<Instant>>,
    backoff: LruCache<Multiaddr, Backoff>,
    /// List entries whose handshake showed another peer: never dialled again.
    false_entries: LruCache<(PeerId, Multiaddr), ()>,
    /// The addresses dialled per peer, to back them off if the peer turns out to lie.
    dialled: LruCache<PeerId, Vec<Multiaddr>>,
}

impl Default for Dials {
    fn default() -> Self {
        let n = NonZeroUsize::new(TABLE).unwrap_or(NonZeroUsize::MIN);
        Self {
            budget: LruCache::new(n),
            backoff: LruCache::new(n),
            false_entries: LruCache::new(n),
            dialled: LruCache::new(n),
        }
    }
}

impl Dials {
    /// Whether to dial `addr`, listed for `peer`, for `track` at `now`; if so, it is counted
    /// against the track's budget.
    pub(crate) fn admit(&mut self, track: &TrackId, peer: PeerId, addr: &Multiaddr, now: Instant) -> bool {
        if self.false_entries.contains(&(peer, addr.clone())) {
            return false;
        }
        if self.backoff.peek(addr).is_some_and(|b| now < b.until) {
            return false;
        }
        let recent = self.budget.get_or_insert_mut(track.clone(), VecDeque::new);
        while recent.front().is_some_and(|t| now.saturating_duration_since(*t) >= PERIOD) {
            recent.pop_front();
        }
        if recent.len() >= NEW_DIALS_PER_TRACK {
            return false;
        }
        recent.push_back(now);
        let addrs = self.dialled.get_or_insert_mut(peer, Vec::new);
        if !addrs.contains(addr) && addrs.len() < chorus_core::api::MAX_ADDRS {
            addrs.push(addr.clone());
        }
        true
    }

    /// A dial of `addr` connected.
    pub(crate) fn succeeded(&mut self, addr: &Multiaddr) {
        self.backoff.pop(addr);
    }

    /// A dial of `addr` failed (refused, timed out, no handshake): back off, doubling.
    pub(crate) fn failed(&mut self, addr: &Multiaddr, now: Instant) {
        let failures = self.backoff.peek(addr).map_or(0, |b| b.failures).saturating_add(1);
        let wait = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(BACKOFF_MAX);
        self.backoff.put(addr.clone(), Backoff { until: now + wait, failures });
    }

    /// The node at `addr`, listed as `listed`, is another peer: that entry is false.
    pub(crate) fn wrong_peer(&mut self, listed: PeerId, addr: &Multiaddr) {
        self.false_entries.put((listed, addr.clone()), ());
    }

    /// `peer` sent a wrong chunk (it is banned by the node): its addresses are backed off for
    /// an hour, whoever lists them next.
    pub(crate) fn wrong_chunk(&mut self, peer: PeerId, now: Instant) {
        for a in self.dialled.pop(&peer).unwrap_or_default() {
            self.backoff.put(a, Backoff { until: now + WRONG_CHUNK_BACKOFF, failures: u32::MAX });
        }
    }
}

/// [`Dials`] shared by a client's tracks and the tasks that dial; cheap to clone.
#[derive(Debug, Clone, Default)]
pub(crate) struct Shared(std::sync::Arc<std::sync::Mutex<Dials>>);

impl Shared {
    /// The state, locked for a table update (no I/O under it).
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Dials> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u16) -> Multiaddr {
        format!("/ip4/198.51.100.7/tcp/{n}").parse().unwrap()
    }

    #[test]
    fn a_track_gets_a_few_new_dials_per_period() {
        let mut d = Dials::default();
        let t0 = Instant::now();
        let (a, b) = (TrackId::parse("a").unwrap(), TrackId::parse("b").unwrap());
        let admitted = (0..20).filter(|n| d.admit(&a, PeerId::random(), &addr(*n), t0)).count();
        assert_eq!(admitted, NEW_DIALS_PER_TRACK);
        // Another track has its own budget; the first gets its back a period later.
        assert!(d.admit(&b, PeerId::random(), &addr(100), t0));
        assert!(!d.admit(&a, PeerId::random(), &addr(101), t0 + PERIOD - Duration::from_millis(1)));
        assert!(d.admit(&a, PeerId::random(), &addr(102), t0 + PERIOD));
    }

    #[test]
    fn failed_addresses_back_off_doubling_and_recover() {
        let mut d = Dials::default();
        let t0 = Instant::now();
        let (t, p, a) = (TrackId::parse("a").unwrap(), PeerId::random(), addr(1));
        d.failed(&a, t0);
        assert!(!d.admit(&t, p, &a, t0 + BACKOFF_FIRST - Duration::from_millis(1)));
        assert!(d.admit(&t, p, &a, t0 + BACKOFF_FIRST));
        d.failed(&a, t0 + BACKOFF_FIRST);
        assert!(!d.admit(&t, p, &a, t0 + BACKOFF_FIRST * 3 - Duration::from_millis(1)), "20 s after the second");
        for n in 0..30 {
            d.failed(&a, t0 + Duration::from_secs(n));
        }
        assert!(!d.admit(&t, p, &a, t0 + Duration::from_secs(29) + BACKOFF_MAX - Duration::from_millis(1)));
        assert!(d.admit(&t, p, &a, t0 + Duration::from_secs(29) + BACKOFF_MAX), "capped");
        d.succeeded(&a);
        assert!(d.admit(&t, p, &a, t0 + Duration::from_secs(30) + BACKOFF_MAX));
    }

    #[test]
    fn a_false_entry_is_never_dialled_again_and_a_liar_is_avoided_for_an_hour() {
        let mut d = Dials::default();
        let t0 = Instant::now();
        let t = TrackId::parse("a").unwrap();
        let (listed, liar) = (PeerId::random(), PeerId::random());
        d.wrong_peer(listed, &addr(1));
        assert!(!d.admit(&t, listed, &addr(1), t0 + Duration::from_secs(86_400)));
        // The same address listed for the peer that really is there may be dialled.
        assert!(d.admit(&t, liar, &addr(1), t0));
        assert!(d.admit(&t, liar, &addr(2), t0));
        d.wrong_chunk(liar, t0);
        let later = t0 + PERIOD;
        assert!(!d.admit(&t, liar, &addr(2), later));
        assert!(!d.admit(&t, PeerId::random(), &addr(1), later), "whoever lists it");
        assert!(d.admit(&t, liar, &addr(2), t0 + WRONG_CHUNK_BACKOFF));
    }
}
