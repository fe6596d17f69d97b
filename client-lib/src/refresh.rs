//! When a playing track asks the tracker again who holds its chunks (docs/peer.md, "Finding
//! peers"). Plain logic on an explicit clock; the driver and the simulator both run it.
//!
//! Asking every few seconds whatever happens made tracker queries most of a swarm's tracker
//! load. The rules:
//!
//! - the first search is at once;
//! - while [`ENOUGH`] peers are working (they hold segments still to fetch, and are neither
//!   banned nor resting after failures) the track does not ask at all;
//! - otherwise it asks every [`FIRST`]; a search that found no peer the track did not already
//!   know doubles the wait for the next one, up to [`LONGEST`] (a long-tail track with no
//!   holders asks about twice a minute), and one that found a new peer brings it back to
//!   [`FIRST`];
//! - when the working peers fall below [`ENOUGH`] again (peers left, or were banned), it asks
//!   at the next check, and the wait starts again from [`FIRST`].
//!
//! The caller checks every [`TICK`]: a check that does not search costs nothing.

use std::time::{Duration, Instant};

/// How often the caller checks whether to search.
pub const TICK: Duration = Duration::from_secs(5);
/// The wait between searches while new peers turn up.
pub const FIRST: Duration = Duration::from_secs(5);
/// The longest wait between searches while too few peers work. 60 s cut tracker queries more
/// but cost twice the edge share (docs/BENCHMARKS.md, "A quieter tracker").
pub const LONGEST: Duration = Duration::from_secs(30);
/// Working peers enough for a track: no search while it has them.
pub const ENOUGH: usize = 4;

/// One playing track's peer searches.
#[derive(Debug, Clone, Default)]
pub struct PeerRefresh {
    /// The last search, and how many peers the track knew then.
    last: Option<(Instant, usize)>,
    /// The wait after the last search.
    every: Duration,
    /// Whether [`ENOUGH`] peers worked at the last check.
    had_enough: bool,
}

impl PeerRefresh {
    /// A track that has not searched yet.
    #[must_use]
    pub fn new() -> Self {
        Self { last: None, every: FIRST, had_enough: false }
    }

    /// Whether to search now, given the peers `working` now and all the peers the track has
    /// `known` so far (working or not). A `true` counts as the search.
    pub fn should_search(&mut self, now: Instant, working: usize, known: usize) -> bool {
        if working >= ENOUGH {
            self.had_enough = true;
            return false;
        }
        if std::mem::take(&mut self.had_enough) {
            // It lost peers it had: ask again now, from the shortest wait.
            self.every = FIRST;
            self.last = self.last.map(|(_, k)| (now - FIRST, k));
        }
        let (due, grew) = match self.last {
            None => (true, true),
            Some((at, k)) => (now.saturating_duration_since(at) >= self.every, known > k),
        };
        if !due {
            return false;
        }
        self.every = if grew { FIRST } else { (self.every * 2).min(LONGEST) };
        self.last = Some((now, known));
        true
    }

    /// The wait after the last search (for tests and the simulator's report).
    #[must_use]
    pub const fn every(&self) -> Duration {
        self.every
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checks at which a track searches, every [`TICK`] over `secs`, with `working` and
    /// `known` peers as functions of the check's time (seconds).
    fn searches(secs: u64, working: impl Fn(u64) -> usize, known: impl Fn(u64) -> usize) -> Vec<u64> {
        let t0 = Instant::now();
        let mut r = PeerRefresh::new();
        (0..=secs)
            .step_by(TICK.as_secs() as usize)
            .filter(|&s| r.should_search(t0 + Duration::from_secs(s), working(s), known(s)))
            .collect()
    }

    #[test]
    fn no_holders_backs_off_to_the_longest_wait() {
        // Waits of 5, 10, 20, then 30 s: 12 searches in 5 minutes, not 61.
        assert_eq!(searches(300, |_| 0, |_| 0), vec![0, 5, 15, 35, 65, 95, 125, 155, 185, 215, 245, 275]);
    }

    #[test]
    fn new_peers_keep_it_asking_and_enough_stops_it() {
        // A new peer at every search until 4 work (at 20 s): then no search at all.
        let s = searches(120, |s| (s / 5).min(4) as usize, |s| (s / 5) as usize);
        assert_eq!(s, vec![0, 5, 10, 15]);
    }

    #[test]
    fn losing_peers_asks_again_at_once() {
        // The first search finds four, which work until 60 s; then two leave: the next check
        // searches, and with no one new to find the waits grow again (10 s, 20 s…).
        let working = |s: u64| match s {
            0 => 0,
            1..60 => 4,
            _ => 2,
        };
        let s = searches(120, working, |_| 4);
        assert_eq!(s, vec![0, 60, 70, 90, 120]);
    }
}
