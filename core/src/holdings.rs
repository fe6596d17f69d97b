//! What a peer names in each announce to one tracker (docs/peer.md "A whole cache seeds"): the
//! tracks it plays, every round; the tracks of its cache (`held`), each once and then again
//! only every [`HELD_REANNOUNCE`], those the tracker did not list (their lists full: plenty of
//! holders) only after [`UNLISTED_BACKOFF`], so what is scarce is named first; and the tracks
//! it named and no longer holds (`dropped`). One round names at most
//! [`MAX_TRACKS_PER_ANNOUNCE`]; a cache larger than that goes in
//! over a few rounds [`SOON`] apart, and from then on a round costs the tracker about
//! `cache size / (HELD_REANNOUNCE / REANNOUNCE)` tracks, not the whole cache.
//!
//! Plain logic with an explicit clock: `chorus-peer`'s `tracker::announce_held` does the I/O,
//! and the simulator (`chorus-sim`) runs it for its listeners.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::TrackId;
use crate::api::{HELD_REANNOUNCE, HELD_TTL, MAX_TRACKS_PER_ANNOUNCE};

/// How long a held track the tracker did not list waits before it is named again: its list was
/// full of live holders, which takes a while to change.
pub const UNLISTED_BACKOFF: Duration = HELD_TTL;

/// How long a held track the edge could not vouch for (it has no manifest of it yet) waits
/// before it is named again.
pub const UNKNOWN_BACKOFF: Duration = Duration::from_secs(600);

/// The wait before the next round while held tracks wait their first turn (a large cache going
/// in): within the tracker's rate limit of one announce per 3 s, with room for retries.
pub const SOON: Duration = Duration::from_secs(5);

/// Most played tracks one announce names (the rest of the announce is for the cache).
pub const MAX_PLAYED: usize = 16;

/// How long a track counts as played after it started: every round names it as played (and
/// it takes the place of the stalest entry of a full list or of its network's share), then as
/// held. Naming the recently played tracks every round is what keeps a popular track's places
/// rotating among its fresh holders; a held entry displaces no one (BENCHMARKS.md, "A
/// listener's whole cache seeds": with 5 minutes, listeners searched 29% more).
pub const PLAYED_FOR: Duration = Duration::from_secs(30 * 60);

/// What one announce names: tracks as [`TrackId`]s, or as the simulator's own indexes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan<T = TrackId> {
    /// Played tracks.
    pub tracks: Vec<T>,
    /// Held tracks due to be named.
    pub held: Vec<T>,
    /// Tracks named before and no longer held.
    pub dropped: Vec<T>,
    /// Whether held tracks that have never been named wait beyond this announce.
    pub more: bool,
}

impl<T> Default for Plan<T> {
    fn default() -> Self {
        Self { tracks: Vec::new(), held: Vec::new(), dropped: Vec::new(), more: false }
    }
}

impl Plan {
    /// An announce of played `tracks` alone.
    #[must_use]
    pub fn playing(tracks: Vec<TrackId>) -> Self {
        Self { tracks, ..Self::default() }
    }
}

/// What one tracker has been told, per held track: when to name it again.
#[derive(Debug, Clone)]
pub struct Holdings<T = TrackId> {
    /// When to name each held track again, in nanoseconds after `base`: 8 bytes where an
    /// `Instant` takes 16 (a simulation keeps a planner for each of a million listeners).
    due: HashMap<T, u64>,
    /// The time of the first announce taken.
    base: Option<Instant>,
}

impl<T> Default for Holdings<T> {
    fn default() -> Self {
        Self { due: HashMap::new(), base: None }
    }
}

impl<T> Holdings<T> {
    /// `at` in nanoseconds after the base (0 before it, or with none yet).
    fn offset(&self, at: Instant) -> u64 {
        self.base.map_or(0, |b| u64::try_from(at.saturating_duration_since(b).as_nanos()).unwrap_or(u64::MAX))
    }
}

impl<T: Clone + Eq + Hash + Ord> Holdings<T> {
    /// What to announce at `now`, playing `playing` and holding `holds` (the cache's tracks, in
    /// the order to name them first).
    #[must_use]
    pub fn plan(&self, now: Instant, playing: &[T], holds: &[T]) -> Plan<T> {
        let tracks: Vec<T> = playing.iter().take(MAX_PLAYED).cloned().collect();
        let mut room = MAX_TRACKS_PER_ANNOUNCE - tracks.len();
        let held_now: HashSet<&T> = holds.iter().collect();
        let mut dropped: Vec<T> =
            self.due.keys().filter(|t| !held_now.contains(t) && !tracks.contains(t)).cloned().collect();
        dropped.sort();
        dropped.truncate(room);
        room -= dropped.len();
        // Never named first (in the cache's order), then those due, the longest due first.
        let fresh = holds.iter().filter(|t| !self.due.contains_key(*t) && !tracks.contains(t));
        let now = self.offset(now);
        let mut due: Vec<(&T, u64)> =
            self.due.iter().filter(|(t, at)| **at <= now && held_now.contains(t)).map(|(t, at)| (t, *at)).collect();
        due.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(b.0)));
        let candidates: Vec<&T> = fresh.chain(due.into_iter().map(|(t, _)| t)).collect();
        let more = candidates.len() > room && candidates.iter().skip(room).any(|t| !self.due.contains_key(*t));
        let held = candidates.into_iter().take(room).cloned().collect();
        Plan { tracks, held, dropped, more }
    }

    /// Records that a tracker took `plan` at `now`, answering that it did not list `unlisted`
    /// (full lists) nor `unknown` (tracks it cannot vouch for yet).
    pub fn taken(&mut self, now: Instant, plan: &Plan<T>, unlisted: &[T], unknown: &[T]) {
        self.base.get_or_insert(now);
        for t in &plan.dropped {
            self.due.remove(t);
        }
        for t in &plan.held {
            let wait = if unlisted.contains(t) {
                UNLISTED_BACKOFF
            } else if unknown.contains(t) {
                UNKNOWN_BACKOFF
            } else {
                HELD_REANNOUNCE
            };
            let at = self.offset(now + wait);
            self.due.insert(t.clone(), at);
        }
    }

    /// Held tracks this tracker has been told of.
    #[must_use]
    pub fn named(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(range: std::ops::Range<usize>) -> Vec<TrackId> {
        range.map(|n| TrackId::parse(&format!("t{n:04}")).unwrap()).collect()
    }

    #[test]
    fn a_large_cache_goes_in_over_a_few_rounds_then_costs_little() {
        let mut h = Holdings::default();
        let cache = ids(0..600);
        let playing = vec![cache[599].clone()];
        let start = Instant::now();
        let mut now = start;
        let mut named = Vec::new();
        let mut rounds = 0;
        loop {
            let plan = h.plan(now, &playing, &cache);
            assert_eq!(plan.tracks, playing);
            assert!(plan.tracks.len() + plan.held.len() + plan.dropped.len() <= MAX_TRACKS_PER_ANNOUNCE);
            assert!(!plan.held.contains(&playing[0]), "the playing track is named as played");
            named.extend(plan.held.clone());
            h.taken(now, &plan, &[], &[]);
            rounds += 1;
            if !plan.more {
                break;
            }
            now += SOON;
        }
        assert_eq!(rounds, 3, "599 held tracks, 255 a round");
        named.sort();
        assert_eq!(named, cache[..599]);
        // Then a round names nothing held until the first ones are due again.
        now += Duration::from_secs(120);
        let quiet = h.plan(now, &playing, &cache);
        assert!(quiet.held.is_empty() && quiet.dropped.is_empty() && !quiet.more);
        now += HELD_REANNOUNCE;
        let again = h.plan(now, &playing, &cache);
        assert_eq!(again.held.len(), 255);
        assert_eq!(again.held[..3], cache[..3], "the longest due first");
        assert!(!again.more, "due again is no backlog");
        assert!(now - start < HELD_TTL, "every holding named again before its entry ends");
    }

    #[test]
    fn unlisted_tracks_wait_so_scarce_ones_go_first_and_evicted_ones_are_dropped() {
        let mut h = Holdings::default();
        let mut now = Instant::now();
        let cache = ids(0..10);
        let plan = h.plan(now, &[], &cache);
        assert_eq!(plan.held, cache);
        // The tracker has plenty of holders of the even ones.
        let plenty: Vec<TrackId> = cache.iter().step_by(2).cloned().collect();
        h.taken(now, &plan, &plenty, &[]);
        now += HELD_REANNOUNCE;
        let plan = h.plan(now, &[], &cache);
        let odd: Vec<TrackId> = cache.iter().skip(1).step_by(2).cloned().collect();
        assert_eq!(plan.held, odd, "the scarce ones are named again, the plentiful ones wait");
        h.taken(now, &plan, &[], &[]);
        now += UNLISTED_BACKOFF - HELD_REANNOUNCE;
        assert_eq!(h.plan(now, &[], &cache).held, plenty, "and are tried again later");

        // Two tracks evicted: dropped once, then forgotten.
        let kept: Vec<TrackId> = cache[2..].to_vec();
        let plan = h.plan(now, &[], &kept);
        assert_eq!(plan.dropped, cache[..2]);
        h.taken(now, &plan, &[], &[]);
        assert!(h.plan(now, &[], &kept).dropped.is_empty());
        assert_eq!(h.named(), 8);
        // A round no tracker took changes nothing: the same plan comes again.
        let plan = h.plan(now, &[], &cache);
        assert_eq!(h.plan(now, &[], &cache), plan);
    }
}
