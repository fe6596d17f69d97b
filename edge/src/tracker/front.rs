//! What the edge's API asks of its tracker: this edge's own [`Tracker`] and, with
//! `chorus edge --tracker redis://…`, the [`SharedTracker`] every edge behind one balancer
//! shares (docs/architecture.md "The shared tracker").
//!
//! Every announce is recorded in both (but one Redis knows for a replay): the local view stays
//! warm, so when Redis fails the edge answers from its own announces at once (with a warning at
//! the change, and `chorus_tracker_shared_up` 0) instead of hanging or failing. While Redis
//! works it is the truth: its verdict on an announce (a replay seen by another edge, a full
//! table) and its peer lists are the answers, filled up from the local view when Redis lists
//! fewer than an answer takes (a Redis restarted empty).

use std::net::IpAddr;
use std::sync::Mutex;

use chorus_core::TrackId;
use chorus_core::api::PeerRecord;
use chorus_core::error::Chain;
use tokio::time::Instant;
use tracing::{info, warn};

use super::shared::{Change, Health, Recorded, SharedError, SharedTracker};
use super::{AnnounceCheck, Tracker, TrackerConfig, TrackerError, Verified, newest_and_sample};
use crate::metrics::EdgeMetrics;

/// How long an answer to a peer query is reused for the same track: the listeners of a popular
/// track asking every few seconds cost Redis one script a second, not one each.
pub(crate) const ANSWER_TTL: std::time::Duration = std::time::Duration::from_secs(1);

/// Tracks whose last answer is kept at most.
const ANSWERS_KEPT: usize = 16_384;

/// (peer, track) entries counted per source, over all sources, at most.
const FOOTPRINT_ENTRIES: usize = 1_000_000;

/// The edge's tracker: local, and shared when configured.
pub struct Front {
    /// The last answer per track, and when it was made.
    answers: Mutex<lru::LruCache<TrackId, (Instant, Vec<PeerRecord>)>>,
    /// What each source has put in, within its budgets.
    footprints: Mutex<super::footprint::Footprints>,
    local: Mutex<Tracker>,
    check: AnnounceCheck,
    shared: Option<SharedTracker>,
    health: Mutex<Health>,
    returned: usize,
    relays: Vec<String>,
    metrics: EdgeMetrics,
}

impl Front {
    /// A tracker with the limits of `cfg`, shared through `shared` when given.
    #[must_use]
    pub fn new(cfg: &TrackerConfig, shared: Option<SharedTracker>, metrics: EdgeMetrics) -> Self {
        if shared.is_some() {
            metrics.register_shared_tracker();
        }
        let health = shared.as_ref().map_or_else(Health::default, |s| Health::with_rest(s.timeout()));
        let kept = std::num::NonZeroUsize::new(ANSWERS_KEPT).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            answers: Mutex::new(lru::LruCache::new(kept)),
            footprints: Mutex::new(super::footprint::Footprints::new(
                cfg.budgets,
                cfg.ttl.max(cfg.held_ttl),
                cfg.max_sources,
                FOOTPRINT_ENTRIES,
            )),
            local: Mutex::new(Tracker::new(cfg.clone())),
            check: AnnounceCheck::new(cfg),
            shared,
            health: Mutex::new(health),
            returned: cfg.returned,
            relays: cfg.relays.clone(),
            metrics,
        }
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The relays offered with every answer.
    #[must_use]
    pub fn relays(&self) -> &[String] {
        &self.relays
    }

    /// The first step of an announce: `source`'s budget (kept per edge).
    ///
    /// # Errors
    /// [`TrackerError::RateLimited`].
    pub fn admit(&self, source: IpAddr) -> Result<(), TrackerError> {
        self.local().admit(Instant::now(), source)
    }

    /// What announces are checked against (outside every lock).
    #[must_use]
    pub const fn check(&self) -> &AnnounceCheck {
        &self.check
    }

    /// Records `ann`, verified, from `source`: in the shared view, whose verdict is the
    /// answer while it works, and in the local one (kept warm for when it does not), unless the
    /// shared view knows the announce for a replay. Returns the held tracks not listed
    /// (`plenty`).
    ///
    /// # Errors
    /// [`TrackerError::Superseded`] (a replay, seen by any edge), [`TrackerError::Full`].
    pub async fn record(&self, source: IpAddr, ann: Verified) -> Result<Vec<TrackId>, TrackerError> {
        // What this edge answers for these tracks changes now, not a second later.
        {
            let mut answers = self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for t in ann.listing().chain(ann.dropped()) {
                answers.pop(t);
            }
        }
        // A source over its budgets makes room by losing its own oldest entries.
        let listing: Vec<TrackId> = ann.listing().cloned().collect();
        let gone = self.footprints.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(
            source,
            ann.peer_id(),
            &listing,
            Instant::now(),
        );
        if !gone.is_empty() {
            self.metrics.tracker_evicted.inc_by(gone.len() as u64);
            let mut local = self.local();
            for (peer, track) in &gone {
                local.forget(peer, track);
            }
        }
        let verdict = match &self.shared {
            Some(shared) => {
                if !gone.is_empty() {
                    let _ = self.call("forget", shared.forget(&gone)).await;
                }
                self.call("announce", shared.record(source, &ann)).await
            }
            None => None,
        };
        let local = match verdict {
            Some(Recorded::Replay) => Err(TrackerError::Superseded),
            _ => {
                let mut t = self.local();
                let r = t.record(Instant::now(), source, ann);
                self.metrics.tracker_peers.set(i64::try_from(t.entries()).unwrap_or(i64::MAX));
                r
            }
        };
        match verdict {
            Some(Recorded::Yes(plenty)) => Ok(plenty),
            Some(Recorded::Replay) => Err(TrackerError::Superseded),
            Some(Recorded::Full) => Err(TrackerError::Full),
            None => local,
        }
    }

    /// Up to [`TrackerConfig::returned`] live peers of `track`: the newest half and a random
    /// sample of the rest, from the shared view while it answers, else from this edge's.
    pub async fn peers(&self, track: &TrackId) -> Vec<PeerRecord> {
        let answers = || self.answers.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((at, answer)) = answers().get(track)
            && at.elapsed() < ANSWER_TTL
        {
            self.metrics.tracker_answers.with_label_values(&["cached"]).inc();
            return answer.clone();
        }
        let answer = self.ask(track).await;
        answers().put(track.clone(), (Instant::now(), answer.clone()));
        answer
    }

    async fn ask(&self, track: &TrackId) -> Vec<PeerRecord> {
        if let Some(shared) = &self.shared
            && let Some(listed) = self.call("peers", shared.peers(track)).await
        {
            self.metrics.tracker_answers.with_label_values(&["shared"]).inc();
            let mut answer = newest_and_sample(listed, self.returned, &mut rand_core::OsRng);
            if answer.len() < self.returned {
                // A Redis restarted empty, or still filling: this edge's own announces fill
                // the answer up meanwhile.
                for p in self.local().peers(Instant::now(), track, &mut rand_core::OsRng) {
                    if answer.len() < self.returned && !answer.iter().any(|a| a.peer_id == p.peer_id) {
                        answer.push(p);
                    }
                }
            }
            return answer;
        }
        self.metrics.tracker_answers.with_label_values(&["local"]).inc();
        self.local().peers(Instant::now(), track, &mut rand_core::OsRng)
    }

    /// Drops expired local entries (the shared ones expire in Redis).
    pub fn expire(&self) {
        let mut t = self.local();
        t.expire(Instant::now());
        self.metrics.tracker_peers.set(i64::try_from(t.entries()).unwrap_or(i64::MAX));
    }

    /// Runs `call` to the shared tracker unless it rests after a failure; `None` (counted, and
    /// logged when it changes) when it did not answer.
    async fn call<T>(&self, op: &'static str, call: impl Future<Output = Result<T, SharedError>>) -> Option<T> {
        let health = || self.health.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let allowed = health().may_call(Instant::now());
        let started = Instant::now();
        let result = match allowed {
            Ok(()) => call.await,
            Err(left) => Err(SharedError::Resting(left)),
        };
        let ok = result.is_ok();
        if !matches!(result, Err(SharedError::Resting(_))) {
            let (change, up) = {
                let mut h = health();
                let change = h.outcome(ok, Instant::now());
                (change, h.is_up())
            };
            match (change, &result) {
                (Change::Down, Err(e)) => {
                    warn!(op, error = %Chain(e), "the shared tracker failed; answering from this edge's own announces until it is back");
                }
                (Change::Up, _) => info!(op, "the shared tracker answers again"),
                _ => {}
            }
            self.metrics.tracker_shared_up.set(i64::from(up));
        }
        match result {
            Ok(v) => {
                self.metrics.tracker_shared_seconds.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
                Some(v)
            }
            Err(_) => {
                self.metrics.tracker_shared_errors.with_label_values(&[op]).inc();
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracker::footprint::{Budget, Budgets};

    #[tokio::test]
    async fn a_source_over_its_budget_loses_its_own_oldest_peer_and_no_one_else_does() {
        let b = |peers, entries| Budget { peers, entries };
        let cfg = TrackerConfig {
            budgets: Budgets { host: b(2, 100), v6_56: b(2, 100), v6_48: b(2, 100) },
            ..TrackerConfig::default()
        };
        let metrics = EdgeMetrics::new();
        let front = Front::new(&cfg, None, metrics.clone());
        let track = TrackId::parse("t").unwrap();
        let ann = |peer: &str, ts| {
            Verified::assume(peer.to_owned(), vec![format!("/ip4/192.0.2.1/tcp/1/p2p/{peer}")], vec![track.clone()], ts)
        };
        let (flooder, other) = (IpAddr::from([192, 0, 2, 1]), IpAddr::from([198, 51, 100, 1]));
        front.record(other, ann("honest", 1)).await.unwrap();
        for (n, p) in ["f1", "f2", "f3"].iter().enumerate() {
            front.record(flooder, ann(p, n as u64 + 1)).await.unwrap();
        }
        let mut listed: Vec<String> = front.peers(&track).await.into_iter().map(|p| p.peer_id).collect();
        listed.sort();
        assert_eq!(listed, ["f2", "f3", "honest"]);
        assert_eq!(metrics.tracker_evicted.get(), 1);
    }
}
