//! Deadline-driven scheduling of segment fetches across sources (edges now, peers later).
//!
//! Plain logic fed with events and an explicit `now`, returning actions; the I/O driver calls
//! [`Scheduler::poll`] when woken (at [`Scheduler::next_wakeup`] or after an event) and carries
//! out the [`Action`]s. So every behaviour is tested with a virtual clock.
//!
//! The model:
//! - **Playback** starts when segment 0 is complete (startup). From then on segment *i* is due
//!   at `play_start + media_start(i) + stalled_so_far`: its deadline. When the playhead reaches
//!   the end of the contiguous audio fetched so far, playback stalls until the next segment
//!   arrives; stalls are counted.
//! - **Startup**: segment 0 is raced on the two best sources; the first to finish wins and the
//!   other is cancelled. Before anything is measured, sources are assumed equal.
//! - **Buffer**: segments are requested in order, at most [`SchedulerConfig::max_inflight`] at a
//!   time (pipelining), while the audio fetched is less than [`SchedulerConfig::buffer_ahead`]
//!   ahead of the playhead.
//! - **Choosing a source**: the one with the lowest expected completion time: its latency plus
//!   size over its throughput (both measured, smoothed), plus the work already queued on it.
//! - **Hedging**: a request expected to finish later than its deadline minus
//!   [`SchedulerConfig::hedge_margin`] is also sent to the best other source; the first answer
//!   wins.
//! - **Failures**: a source that fails is avoided for [`SchedulerConfig::down_for`], then tried
//!   again (a recovered edge comes back); the segment is requested elsewhere at once.
//! - **Bitrate**: each segment's rendition comes from [`crate::abr`], at segment boundaries,
//!   fed with the lower of a fast and a slow throughput average weighted by download time.
//!   Until the track has measured anything, segments start at [`abr::first`] of a remembered
//!   estimate ([`Scheduler::set_estimate`]); without one, the first measurement moves straight
//!   to [`abr::warm`]'s default quality.
//! - **Seek**: [`Scheduler::seek`] cancels what is in flight and starts a new playback session
//!   at a segment: a new startup there, deadlines counted from it.
//! - **Peers' shares**: at most [`PEER_INFLIGHT`] requests go to one peer at once (a peer
//!   answers more BUSY).
//!
//! - **Peers** ([`SourceKind::Peer`], added with [`Scheduler::add_source`]) are asked only for
//!   segments they hold ([`Scheduler::set_holds`]) and only when the segment is not urgent (not
//!   the start, due more than [`SchedulerConfig::peer_lead`] ahead); a peer request that will be
//!   late is hedged to an edge. While an up peer holds a segment, edges are asked for it only
//!   within [`SchedulerConfig::edge_window`] of the playhead (or when urgent), so the peers get
//!   the first chance. A peer that sent a wrong chunk is [`Scheduler::ban`]ned for good.
//! - **Reader pace**: [`Scheduler::set_limit`] stops requests at a segment index, so a driver
//!   can bound what it holds for a reader that has not caught up.
//!
//! One idea in one file, past the usual ~600 lines (about 950 before the tests): the rules above
//! act on the same per-segment state and source estimates in one `poll`, and split apart they
//! would each need all of it. What stands alone already lives apart: bitrate choice
//! ([`crate::abr`]), when to look for peers again ([`crate::refresh`]), and the sets of
//! (segment, rendition) pairs a source or the cache holds (`scheduler/pairs.rs`). The second half of
//! the file is their virtual-clock tests.

use std::time::{Duration, Instant};

use crate::abr::{self, AbrConfig, Quality};

mod pairs;
use pairs::Pairs;

/// The segment holding media time `t`, given each segment's start (the last one for times past
/// the end).
#[must_use]
pub fn segment_at(starts: &[Duration], t: Duration) -> usize {
    starts.partition_point(|s| *s <= t).saturating_sub(1)
}

/// Requests in flight to one peer at most: what a chorus peer serves one other peer at once
/// (`chorus_peer`'s per-peer share); more would come back BUSY.
pub const PEER_INFLIGHT: usize = 2;

/// Tuning of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Audio to keep fetched ahead of the playhead (default 30 s).
    pub buffer_ahead: Duration,
    /// Segment requests in flight at most (default 2).
    pub max_inflight: usize,
    /// Hedge a request expected to finish later than its deadline minus this (default 1 s).
    pub hedge_margin: Duration,
    /// How long a source that failed is avoided (default 5 s).
    pub down_for: Duration,
    /// Weight of a new sample in the smoothed latency and throughput (default 0.3).
    pub alpha: f64,
    /// Assumed latency of a source before it is measured (default 100 ms).
    pub initial_latency: Duration,
    /// Assumed throughput of a source before it is measured, bytes/s (default 250 KB/s).
    pub initial_throughput: f64,
    /// Bitrate adaptation tuning.
    pub abr: AbrConfig,
    /// The user's quality preference.
    pub quality: Quality,
    /// Peers are asked only for segments due at least this far ahead (default 4 s: a 6 s
    /// segment's worth of time for a peer, with the edge still in time after a miss).
    pub peer_lead: Duration,
    /// While a peer holds a segment, edges wait until it is this close to the playhead
    /// (default 4 s, the same as `peer_lead`: a track's second 6 s segment goes to a peer
    /// when one holds it, not to the edge).
    pub edge_window: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            buffer_ahead: Duration::from_secs(30),
            max_inflight: 2,
            hedge_margin: Duration::from_secs(1),
            down_for: Duration::from_secs(5),
            alpha: 0.3,
            initial_latency: Duration::from_millis(100),
            initial_throughput: 250_000.0,
            abr: AbrConfig::default(),
            quality: Quality::Auto { cap: usize::MAX },
            peer_lead: Duration::from_secs(4),
            edge_window: Duration::from_secs(4),
        }
    }
}

/// What kind of source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// An edge (or the origin): has everything; the safety net.
    Edge,
    /// A peer: has what it says it holds, while it is around.
    Peer,
}

/// A source, by index: edges first (as given to [`Scheduler::new`]), then sources added with
/// [`Scheduler::add_source`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(pub usize);

/// A segment as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct SegmentInfo {
    /// Its duration.
    pub duration: Duration,
    /// Its size in each rendition (the ladder order), bytes.
    pub sizes: Vec<u64>,
}

/// What the driver should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start fetching `segment` in `rendition` from `source`.
    Fetch {
        /// Segment index.
        segment: usize,
        /// Rendition index (ladder order).
        rendition: usize,
        /// Where from.
        source: SourceId,
        /// Whether this duplicates a request already in flight (a hedge or a startup race).
        hedge: bool,
    },
    /// Stop fetching `segment` from `source` (another copy arrived first).
    Cancel {
        /// Segment index.
        segment: usize,
        /// The source to stop.
        source: SourceId,
    },
}

#[derive(Debug, Clone)]
struct Attempt {
    source: SourceId,
    rendition: usize,
    started: Instant,
    expected: Duration,
}

#[derive(Debug, Clone)]
enum State {
    Pending,
    InFlight(Vec<Attempt>),
    Done,
}

#[derive(Debug, Clone)]
struct Source {
    latency: Option<Duration>,
    /// Per-sample smoothed rate (bytes/s), for expected completion times.
    throughput: Option<f64>,
    /// Rate for bitrate choice: two averages weighted by download time, fast (3 s half-life)
    /// and slow (8 s), of which the lower counts — quick to believe a drop, slow to believe a
    /// rise, as dash.js does. Weighting by time means one long, slow download outweighs many
    /// short fast ones, which per-sample smoothing gets the wrong way round.
    rate_fast: Option<f64>,
    rate_slow: Option<f64>,
    down_until: Option<Instant>,
    kind: SourceKind,
    banned: bool,
    /// (segment, rendition) pairs a peer holds.
    holds: Pairs,
}

impl Source {
    fn new(kind: SourceKind, holds: Pairs) -> Self {
        Self {
            latency: None,
            throughput: None,
            rate_fast: None,
            rate_slow: None,
            down_until: None,
            kind,
            banned: false,
            holds,
        }
    }
}

/// Moves `avg` toward `sample` by the weight of `secs` of download at `half_life`.
fn time_weighted(avg: Option<f64>, sample: f64, secs: f64, half_life: f64) -> f64 {
    avg.map_or(sample, |a| {
        let keep = 0.5f64.powf(secs / half_life);
        a * keep + sample * (1.0 - keep)
    })
}

/// The deadlines of a moment: segment `i` is due at `base + (start of i - offset)`.
#[derive(Debug, Clone, Copy)]
struct Deadlines {
    /// When playback started (or is planned to), plus the stall time so far.
    base: Instant,
    /// Media time of the current session's start.
    offset: Duration,
}

impl Deadlines {
    fn of(self, media_start: Duration) -> Instant {
        self.base + media_start.saturating_sub(self.offset)
    }
}

/// What is queued on each source now: the bytes of the requests in flight to it, and how many.
struct Load {
    queued: Vec<u64>,
    requests: Vec<usize>,
}

/// Playback and fetch statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Time from creation to the end of segment 0 (startup), once known.
    pub startup: Option<Duration>,
    /// Times playback ran dry.
    pub stalls: u32,
    /// Total time stalled (up to the last poll).
    pub stalled: Duration,
    /// Requests that duplicated one in flight.
    pub hedges: u32,
    /// Failed requests.
    pub failures: u32,
    /// Seeks.
    pub seeks: u32,
}

/// The scheduler of one track's segments.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    ladder_bps: Vec<u64>,
    /// Each segment's size in each rendition, segment after segment (`ladder_bps.len()` a
    /// segment, 0 where the track has none).
    sizes: Vec<u64>,
    /// Media start time of each segment.
    starts: Vec<Duration>,
    /// The track's end (media time).
    end: Duration,
    state: Vec<State>,
    /// Kept with `state` by [`Scheduler::set_state`], as the driver asks for them on every
    /// event: segments done contiguously from the start, which segments are not done (a
    /// bitmap for [`Pairs::holds_any`]), and the segments in flight, ascending.
    done_prefix: usize,
    left: Vec<u64>,
    flying: Vec<usize>,
    sources: Vec<Source>,
    created: Instant,
    play_start: Option<Instant>,
    stall_began: Option<Instant>,
    stats: Stats,
    last_rendition: Option<usize>,
    /// The segment the current playback session started at (0, or where the last seek went).
    first: usize,
    /// Stall time accumulated before the current session.
    stalled_before: Duration,
    /// Segments at or beyond this index are not requested (reader pace).
    limit: usize,
    /// Peers are still being looked for: edges keep to their window as if a peer held
    /// everything, so what is not urgent waits (briefly) for the peers' answers.
    awaiting_peers: bool,
    /// When playback is planned to start (a next track fetched ahead), if later than startup.
    planned: Option<Instant>,
    /// (segment, rendition) pairs the local cache holds.
    cached: Pairs,
    /// A remembered throughput estimate (bits/s) to start from.
    estimate: Option<f64>,
    /// A cold start (no estimate) whose first measurement has not been acted on yet.
    warming: bool,
}

impl Scheduler {
    /// A scheduler for `segments` (with renditions of `ladder_bps`, lowest first) over
    /// `sources` sources, created at `now`.
    #[must_use]
    pub fn new(
        cfg: SchedulerConfig,
        ladder_bps: Vec<u64>,
        segments: Vec<SegmentInfo>,
        sources: usize,
        now: Instant,
    ) -> Self {
        let none = Pairs::new(segments.len(), ladder_bps.len());
        let mut starts = Vec::with_capacity(segments.len());
        let mut sizes = Vec::with_capacity(segments.len() * ladder_bps.len());
        let mut t = Duration::ZERO;
        for s in &segments {
            starts.push(t);
            t += s.duration;
            sizes.extend((0..ladder_bps.len()).map(|r| s.sizes.get(r).copied().unwrap_or(0)));
        }
        Self {
            cfg,
            ladder_bps,
            state: vec![State::Pending; segments.len()],
            done_prefix: 0,
            left: Pairs::segments_where(segments.len(), |_| true),
            flying: Vec::new(),
            sizes,
            starts,
            end: t,
            sources: (0..sources).map(|_| Source::new(SourceKind::Edge, none.clone())).collect(),
            created: now,
            play_start: None,
            stall_began: None,
            stats: Stats::default(),
            last_rendition: None,
            first: 0,
            stalled_before: Duration::ZERO,
            limit: usize::MAX,
            awaiting_peers: false,
            planned: None,
            cached: none,
            estimate: None,
            warming: true,
        }
    }

    /// Starts from a remembered throughput estimate (bits/s; see [`abr::first`]) instead of
    /// a cold start.
    pub fn set_estimate(&mut self, bps: Option<f64>) {
        self.estimate = bps;
        self.warming = bps.is_none();
    }

    /// The rung the first segments go in (what [`Scheduler::poll`] picks before anything is
    /// measured), for fetching the first one while the track is still being opened.
    #[must_use]
    pub fn first_rung(&self) -> usize {
        abr::first(&self.cfg.abr, self.cfg.quality, &self.ladder_bps, self.estimate)
    }

    /// The rendition for segment `i`, a new request: see the module docs, "Bitrate".
    fn pick_rendition(&self, i: usize, now: Instant) -> usize {
        let Some(tp) = self.throughput_bps() else { return self.first_rung() };
        if self.warming {
            return abr::warm(&self.cfg.abr, self.cfg.quality, &self.ladder_bps, tp);
        }
        let segment = if i < self.len() { self.media_start(i + 1) - self.starts[i] } else { Duration::ZERO };
        abr::choose(
            &self.cfg.abr,
            self.cfg.quality,
            &self.ladder_bps,
            Some(tp),
            self.buffered(now),
            self.last_rendition,
            segment,
        )
    }

    /// Records that the local cache holds `segment` in `rendition`: such a segment is taken in
    /// the best rendition the cache holds (within the user's cap) instead of the one bitrate
    /// adaptation would pick, as it costs no network at all (a replay, or a preload fetched
    /// at another bitrate).
    pub fn set_cached(&mut self, segment: usize, rendition: usize) {
        self.cached.insert(segment, rendition);
    }

    /// The best rendition of segment `i` the cache holds that the user's quality allows.
    fn best_cached(&self, i: usize) -> Option<usize> {
        let top = self.ladder_bps.len().saturating_sub(1);
        let allowed = |r: usize| match self.cfg.quality {
            Quality::Fixed(f) => r == f.min(top),
            Quality::Auto { cap } => r <= cap.min(top),
        };
        (0..self.ladder_bps.len()).rev().find(|&r| allowed(r) && self.cached.contains(i, r))
    }

    /// Playback will start at `at`, not when the first segment arrives: the track is fetched
    /// ahead (the next one in a playlist). Deadlines count from `at`; there is no startup
    /// race; peers get what they hold until it is due within [`SchedulerConfig::peer_lead`],
    /// and edges are asked for a segment only once it is due within
    /// [`SchedulerConfig::edge_window`], held by a peer or not — the edge is the fallback in
    /// time, not the first choice.
    pub fn plan_start(&mut self, at: Instant) {
        self.planned = Some(at);
    }

    /// Adds a source (a peer that turned up); returns its id.
    pub fn add_source(&mut self, kind: SourceKind) -> SourceId {
        self.sources.push(Source::new(kind, Pairs::new(self.len(), self.ladder_bps.len())));
        SourceId(self.sources.len() - 1)
    }

    /// While `on`, edges are asked only for urgent segments and those within their window (peers
    /// are being looked for and may hold the rest).
    pub fn set_awaiting_peers(&mut self, on: bool) {
        self.awaiting_peers = on;
    }

    /// Records that `source` holds `segment` in `rendition` (a segment or rendition this
    /// track does not have is ignored).
    pub fn set_holds(&mut self, source: SourceId, segment: usize, rendition: usize) {
        if let Some(s) = self.sources.get_mut(source.0) {
            s.holds.insert(segment, rendition);
        }
    }

    /// Peers worth having for what is left: not banned, not resting after failures, and
    /// holding a segment not fetched yet (what [`crate::refresh`] counts as working).
    #[must_use]
    pub fn working_peers(&self, now: Instant) -> usize {
        self.sources
            .iter()
            .filter(|s| s.kind == SourceKind::Peer && !s.banned && s.down_until.is_none_or(|u| u <= now))
            .filter(|s| s.holds.holds_any(&self.left))
            .count()
    }

    /// Never asks `source` again (it sent a wrong chunk). Its requests in flight count as
    /// failed.
    pub fn ban(&mut self, now: Instant, source: SourceId) {
        if let Some(s) = self.sources.get_mut(source.0) {
            s.banned = true;
        }
        for i in self.flying.clone() {
            if let State::InFlight(a) = &self.state[i]
                && a.iter().any(|a| a.source == source)
            {
                self.on_failed(now, i, source);
            }
        }
    }

    /// Number of segments.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.starts.len()
    }

    /// Whether the track has no segments.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.starts.is_empty()
    }

    /// Media start time of segment `i` (the track's end for `i == len()`).
    #[must_use]
    pub fn media_start(&self, i: usize) -> Duration {
        self.starts.get(i).copied().unwrap_or_else(|| self.track_end())
    }

    const fn track_end(&self) -> Duration {
        self.end
    }

    /// Segment `i`'s size in `rendition` (0 for one the track does not have).
    fn size(&self, i: usize, rendition: usize) -> u64 {
        let renditions = self.ladder_bps.len();
        if rendition >= renditions {
            return 0;
        }
        self.sizes.get(i * renditions + rendition).copied().unwrap_or(0)
    }

    /// The segment holding media time `t` (the last one for times past the end).
    #[must_use]
    pub fn segment_at(&self, t: Duration) -> usize {
        segment_at(&self.starts, t)
    }

    /// Requests no segment at or beyond `end` until the limit is raised (a reader that has not
    /// caught up; the driver raises it as segments are handed over).
    pub fn set_limit(&mut self, end: usize) {
        self.limit = end;
    }

    /// Starts a new playback session at `segment`: everything in flight is cancelled (the
    /// returned actions), segments before it count as done, it and everything after are fetched
    /// again (the driver has dropped what it held), and playback restarts once it arrives.
    pub fn seek(&mut self, now: Instant, segment: usize) -> Vec<Action> {
        self.update_stall(now);
        if let Some(began) = self.stall_began.take() {
            self.stats.stalled += now.saturating_duration_since(began);
        }
        let mut actions = Vec::new();
        let segment = segment.min(self.state.len());
        for i in 0..self.state.len() {
            if let State::InFlight(attempts) = &self.state[i] {
                actions.extend(attempts.iter().map(|a| Action::Cancel { segment: i, source: a.source }));
            }
            self.set_state(i, if i < segment { State::Done } else { State::Pending });
        }
        self.first = segment;
        self.play_start = None;
        self.planned = None;
        self.stalled_before = self.stats.stalled;
        self.stats.seeks += 1;
        actions
    }

    /// Statistics so far.
    #[must_use]
    pub const fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether every segment is fetched (from the current session's start on).
    #[must_use]
    pub const fn finished(&self) -> bool {
        self.done_prefix == self.state.len()
    }

    /// End (media time) of the audio fetched contiguously from the start.
    fn contiguous_end(&self) -> Duration {
        self.media_start(self.done_prefix)
    }

    /// Sets segment `i`'s state, keeping the counts and the bitmap of what is left.
    fn set_state(&mut self, i: usize, new: State) {
        let Some(old) = self.state.get_mut(i) else { return };
        let was = (matches!(old, State::InFlight(_)), matches!(old, State::Done));
        let now = (matches!(new, State::InFlight(_)), matches!(new, State::Done));
        *old = new;
        match (was.0, now.0) {
            (false, true) => {
                if let Err(at) = self.flying.binary_search(&i) {
                    self.flying.insert(at, i);
                }
            }
            (true, false) => {
                if let Ok(at) = self.flying.binary_search(&i) {
                    self.flying.remove(at);
                }
            }
            _ => {}
        }
        let bit = 1u64 << (i % 64);
        if now.1 {
            self.left[i / 64] &= !bit;
            while matches!(self.state.get(self.done_prefix), Some(State::Done)) {
                self.done_prefix += 1;
            }
        } else {
            self.left[i / 64] |= bit;
            self.done_prefix = self.done_prefix.min(i);
        }
    }

    /// Stall time of the current session, including a stall still going on at `now`.
    fn stalled_at(&self, now: Instant) -> Duration {
        (self.stats.stalled + self.stall_began.map_or(Duration::ZERO, |b| now.saturating_duration_since(b)))
            .saturating_sub(self.stalled_before)
    }

    /// Media time of the current session's start.
    fn offset(&self) -> Duration {
        self.media_start(self.first)
    }

    /// The playhead (media time) at `now`.
    #[must_use]
    pub fn playhead(&self, now: Instant) -> Duration {
        let Some(start) = self.play_start else { return self.offset() };
        (self.offset() + now.saturating_duration_since(start).saturating_sub(self.stalled_at(now)))
            .min(self.contiguous_end())
    }

    /// Audio fetched ahead of the playhead at `now`.
    #[must_use]
    pub fn buffered(&self, now: Instant) -> Duration {
        self.contiguous_end().saturating_sub(self.playhead(now))
    }

    /// When segment `i` must be complete; `None` before playback starts (then: as soon as
    /// possible).
    #[must_use]
    pub fn deadline(&self, i: usize, now: Instant) -> Option<Instant> {
        self.deadlines(now).map(|d| d.of(self.media_start(i)))
    }

    /// What [`Scheduler::deadline`] needs at `now`, worked out once for many segments.
    fn deadlines(&self, now: Instant) -> Option<Deadlines> {
        let start = self.play_start.or(self.planned)?;
        Some(Deadlines { base: start + self.stalled_at(now), offset: self.offset() })
    }

    fn update_stall(&mut self, now: Instant) {
        let Some(start) = self.play_start else { return };
        if self.stall_began.is_none() && !self.finished() {
            let unstalled = now.saturating_duration_since(start).saturating_sub(self.stalled_at(now));
            let fetched = self.contiguous_end().saturating_sub(self.offset());
            if unstalled >= fetched {
                // Ran dry at the moment the contiguous audio ended.
                let dry_at = start + self.stalled_at(now) + fetched;
                self.stall_began = Some(dry_at.min(now));
                self.stats.stalls += 1;
            }
        }
    }

    fn up(&self, s: SourceId, now: Instant) -> bool {
        let src = &self.sources[s.0];
        !src.banned && src.down_until.is_none_or(|t| now >= t)
    }

    /// Whether segment `i` must come from a safe source now: the start of a session, or due
    /// within [`SchedulerConfig::peer_lead`].
    fn urgent(&self, i: usize, now: Instant) -> bool {
        // Before playback starts, deadlines count from now (playback would start at once).
        let due = self.deadline(i, now).unwrap_or_else(|| now + self.media_start(i).saturating_sub(self.offset()));
        due < now + self.cfg.peer_lead
    }

    /// Whether a peer that is up at `now` holds segment `i` in `rendition`.
    fn held_by_up_peer(&self, i: usize, rendition: usize, now: Instant) -> bool {
        self.sources
            .iter()
            .enumerate()
            .any(|(k, p)| p.kind == SourceKind::Peer && p.holds.contains(i, rendition) && self.up(SourceId(k), now))
    }

    /// Whether `s` may be asked for segment `i` in `rendition` now; `urgent`: whether the
    /// segment is ([`Scheduler::urgent`]).
    fn eligible(&self, s: SourceId, i: usize, rendition: usize, now: Instant, urgent: bool) -> bool {
        let src = &self.sources[s.0];
        match src.kind {
            SourceKind::Peer => !urgent && src.holds.contains(i, rendition),
            SourceKind::Edge if self.planned.is_some() => {
                let due = self.deadline(i, now).unwrap_or(now);
                due <= now + self.cfg.edge_window
            }
            SourceKind::Edge => {
                urgent
                    || (!self.awaiting_peers && !self.held_by_up_peer(i, rendition, now))
                    || self.starts[i] <= self.playhead(now) + self.cfg.edge_window
            }
        }
    }

    /// What is in flight to each source now, in one pass over the segments.
    fn load(&self) -> Load {
        let mut load = Load { queued: vec![0; self.sources.len()], requests: vec![0; self.sources.len()] };
        for &i in &self.flying {
            let State::InFlight(attempts) = &self.state[i] else { continue };
            for (k, a) in attempts.iter().enumerate() {
                if let Some(c) = load.requests.get_mut(a.source.0) {
                    *c += 1;
                }
                // A segment asked twice of one source is queued on it once.
                if !attempts[..k].iter().any(|b| b.source == a.source)
                    && let Some(q) = load.queued.get_mut(a.source.0)
                {
                    *q += self.size(i, a.rendition);
                }
            }
        }
        load
    }

    /// Expected time for `source` to deliver `bytes`, counting work already queued on it
    /// (`load`).
    fn expected(&self, s: SourceId, bytes: u64, load: &Load) -> Duration {
        let src = &self.sources[s.0];
        let latency = src.latency.unwrap_or(self.cfg.initial_latency);
        let tp = src.throughput.unwrap_or(self.cfg.initial_throughput).max(1.0);
        let queued = load.queued.get(s.0).copied().unwrap_or(0);
        latency + Duration::from_secs_f64((bytes + queued) as f64 / tp)
    }

    /// Whether `s` is a peer already asked for [`PEER_INFLIGHT`] segments: a peer serves each
    /// other peer at most that many requests at once (it answers the rest BUSY), so more are
    /// not sent.
    fn saturated(&self, s: SourceId, load: &Load) -> bool {
        self.sources[s.0].kind == SourceKind::Peer && load.requests.get(s.0).is_some_and(|c| *c >= PEER_INFLIGHT)
    }

    /// Up sources that may be asked for segment `i` in `rendition`, best first, except those
    /// for which `except` says true.
    /// Of them, the best two (by expected completion, then id).
    fn ranked(
        &self,
        i: usize,
        rendition: usize,
        now: Instant,
        load: &Load,
        except: impl Fn(SourceId) -> bool,
    ) -> [Option<SourceId>; 2] {
        let bytes = self.size(i, rendition);
        let urgent = self.urgent(i, now);
        let mut best: [Option<(Duration, SourceId)>; 2] = [None, None];
        for s in (0..self.sources.len()).map(SourceId) {
            if !self.up(s, now) || except(s) || !self.eligible(s, i, rendition, now, urgent) {
                continue;
            }
            let key = (self.expected(s, bytes, load), s);
            if best[0].is_none_or(|b| key < b) {
                best = [Some(key), best[0]];
            } else if best[1].is_none_or(|b| key < b) {
                best[1] = Some(key);
            }
        }
        best.map(|b| b.map(|(_, s)| s))
    }

    /// The throughput bitrate adaptation goes by, bits/s: of each source, the lower of its
    /// fast and slow averages; the best source's. `None` before anything is measured.
    #[must_use]
    pub fn throughput_bps(&self) -> Option<f64> {
        self.sources
            .iter()
            .filter_map(|s| Some(s.rate_fast?.min(s.rate_slow?)))
            .fold(None, |best: Option<f64>, t| Some(best.map_or(t, |b| b.max(t))))
            .map(|b| b * 8.0)
    }

    /// Decides what to start now: hedges for requests that will be late, and new requests.
    pub fn poll(&mut self, now: Instant) -> Vec<Action> {
        self.update_stall(now);
        let mut actions = Vec::new();
        // Hedge requests expected to miss their deadline.
        let due = self.deadlines(now);
        for k in 0..self.flying.len() {
            let i = self.flying[k];
            let State::InFlight(attempts) = &self.state[i] else { continue };
            if attempts.len() != 1 {
                continue;
            }
            let a = attempts[0].clone();
            let Some(deadline) = due.map(|d| d.of(self.starts[i])) else { continue };
            let finish = a.started + a.expected.max(now.saturating_duration_since(a.started));
            let late =
                finish + self.cfg.hedge_margin > deadline || now.saturating_duration_since(a.started) > a.expected * 2;
            if !late {
                continue;
            }
            let bytes = self.size(i, a.rendition);
            let load = self.load();
            if let Some(other) = self.ranked(i, a.rendition, now, &load, |s| s == a.source)[0] {
                let expected = self.expected(other, bytes, &load);
                if let State::InFlight(att) = &mut self.state[i] {
                    att.push(Attempt { source: other, rendition: a.rendition, started: now, expected });
                }
                self.stats.hedges += 1;
                actions.push(Action::Fetch { segment: i, rendition: a.rendition, source: other, hedge: true });
            }
        }
        // New requests, in order, within the pipeline depth and the buffer target; a segment
        // no source may be asked for yet (waiting for the edges' window) does not hold up the
        // ones after it that a peer can send.
        let mut from = 0;
        loop {
            if self.flying.len() >= self.cfg.max_inflight {
                break;
            }
            let Some(i) = self.state.iter().skip(from).position(|s| matches!(s, State::Pending)).map(|p| p + from)
            else {
                break;
            };
            if i >= self.limit
                || (self.play_start.is_some() && self.starts[i] > self.playhead(now) + self.cfg.buffer_ahead)
            {
                break;
            }
            let rendition = match self.best_cached(i) {
                Some(r) => r,
                None => self.pick_rendition(i, now),
            };
            let bytes = self.size(i, rendition);
            let load = self.load();
            let ranked = self.ranked(i, rendition, now, &load, |s| self.saturated(s, &load));
            let Some(best) = ranked[0] else {
                from = i + 1;
                continue;
            };
            // Startup (and after a seek): race the first segment on the two best sources.
            let race =
                if i == self.first && self.play_start.is_none() && self.urgent(i, now) { ranked[1] } else { None };
            let mut attempts =
                vec![Attempt { source: best, rendition, started: now, expected: self.expected(best, bytes, &load) }];
            actions.push(Action::Fetch { segment: i, rendition, source: best, hedge: false });
            if let Some(second) = race {
                attempts.push(Attempt {
                    source: second,
                    rendition,
                    started: now,
                    expected: self.expected(second, bytes, &load),
                });
                self.stats.hedges += 1;
                actions.push(Action::Fetch { segment: i, rendition, source: second, hedge: true });
            }
            self.set_state(i, State::InFlight(attempts));
            self.last_rendition = Some(rendition);
            // The cold start's jump is spent once a request made after a measurement goes out
            // (not when a segment is passed over for want of a source).
            if self.throughput_bps().is_some() {
                self.warming = false;
            }
        }
        actions
    }

    /// Segment `segment` arrived complete and verified from `source`, `bytes` long, after
    /// `elapsed`. Returns cancellations of other copies in flight.
    pub fn on_complete(
        &mut self,
        now: Instant,
        segment: usize,
        source: SourceId,
        bytes: u64,
        elapsed: Duration,
    ) -> Vec<Action> {
        self.update_stall(now);
        self.learn(source, bytes, elapsed);
        let mut actions = Vec::new();
        if let Some(State::InFlight(attempts)) = self.state.get(segment) {
            for a in attempts.iter().filter(|a| a.source != source) {
                actions.push(Action::Cancel { segment, source: a.source });
            }
        }
        self.set_state(segment, State::Done);
        if self.play_start.is_none() && matches!(self.state.get(self.first), Some(State::Done)) {
            self.play_start = Some(self.planned.map_or(now, |p| p.max(now)));
            if self.stats.startup.is_none() {
                self.stats.startup = Some(now.saturating_duration_since(self.created));
            }
        }
        if let Some(began) = self.stall_began {
            // Playback resumes once the audio at the playhead is here.
            let playhead_needed = self.offset()
                + now.saturating_duration_since(self.play_start.unwrap_or(now)).saturating_sub(self.stalled_at(now));
            if self.contiguous_end() > playhead_needed || self.finished() {
                self.stats.stalled += now.saturating_duration_since(began);
                self.stall_began = None;
            }
        }
        actions
    }

    /// A request for `segment` from `source` failed (transport error, bad hash, timeout).
    pub fn on_failed(&mut self, now: Instant, segment: usize, source: SourceId) {
        self.stats.failures += 1;
        self.sources[source.0].down_until = Some(now + self.cfg.down_for);
        if let Some(State::InFlight(attempts)) = self.state.get_mut(segment) {
            attempts.retain(|a| a.source != source);
            if attempts.is_empty() {
                self.set_state(segment, State::Pending);
            }
        }
    }

    fn learn(&mut self, s: SourceId, bytes: u64, elapsed: Duration) {
        let alpha = self.cfg.alpha;
        let src = &mut self.sources[s.0];
        let secs = elapsed.as_secs_f64().max(1e-6);
        let tp_sample = bytes as f64 / secs;
        let tp = match src.throughput {
            Some(t) => t * (1.0 - alpha) + tp_sample * alpha,
            None => tp_sample,
        };
        // Latency: what the elapsed time was beyond moving the bytes at the smoothed rate.
        let lat_sample = Duration::from_secs_f64((secs - bytes as f64 / tp).max(0.0));
        src.latency = Some(match src.latency {
            Some(l) => l.mul_f64(1.0 - alpha) + lat_sample.mul_f64(alpha),
            None => lat_sample,
        });
        src.throughput = Some(tp);
        src.rate_fast = Some(time_weighted(src.rate_fast, tp_sample, secs, 3.0));
        src.rate_slow = Some(time_weighted(src.rate_slow, tp_sample, secs, 8.0));
        src.down_until = None;
    }

    /// When [`Scheduler::poll`] should next run if nothing else happens: the next segment
    /// coming within the buffer target, a hedge check, or a source coming back. `now` is the
    /// time of the last poll: only later times are returned.
    #[must_use]
    pub fn next_wakeup(&self, now: Instant) -> Option<Instant> {
        // What was due at or before `now` was decided by the poll at `now`; waking for it again
        // would spin while, say, a segment waits for the edges' window.
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| {
            if t > now && next.is_none_or(|n| t < n) {
                next = Some(t);
            }
        };
        let due = self.deadlines(now);
        if let (Some(i), true) =
            (self.state.iter().position(|s| matches!(s, State::Pending)), self.play_start.or(self.planned).is_some())
            && i < self.limit
            && let Some(due) = due.map(|d| d.of(self.starts[i]))
        {
            let before = |d: Duration| due.checked_sub(d).unwrap_or(now);
            consider(before(self.cfg.buffer_ahead));
            // With peers: when the segment enters the edges' window, or turns urgent.
            if self.awaiting_peers
                || self.planned.is_some()
                || self.sources.iter().any(|s| s.kind == SourceKind::Peer && !s.banned)
            {
                consider(before(self.cfg.edge_window));
                consider(before(self.cfg.peer_lead));
            }
        }
        if let Some(due) = due.filter(|_| !self.flying.is_empty()) {
            for &i in &self.flying {
                let State::InFlight(a) = &self.state[i] else { continue };
                if a.len() != 1 {
                    continue;
                }
                let deadline = due.of(self.starts[i]);
                consider(deadline.checked_sub(self.cfg.hedge_margin + a[0].expected).unwrap_or(now));
                consider(a[0].started + a[0].expected * 2);
                if self.sources[a[0].source.0].kind == SourceKind::Peer {
                    // A late peer request is hedged once an edge may be asked for the segment.
                    consider(deadline.checked_sub(self.cfg.edge_window).unwrap_or(now));
                    consider(deadline.checked_sub(self.cfg.peer_lead).unwrap_or(now));
                }
            }
        }
        for t in self.sources.iter().filter_map(|s| s.down_until) {
            consider(t);
        }
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: [u64; 2] = [24_000, 96_000];

    fn track(n: usize) -> Vec<SegmentInfo> {
        (0..n).map(|_| SegmentInfo { duration: Duration::from_secs(6), sizes: vec![18_000, 72_000] }).collect()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fetches(actions: &[Action]) -> Vec<(usize, usize, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Fetch { segment, source, hedge, .. } => Some((*segment, source.0, *hedge)),
                Action::Cancel { .. } => None,
            })
            .collect()
    }

    #[test]
    fn startup_races_two_sources_and_the_first_answer_wins() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default(), LADDER.to_vec(), track(10), 3, t0);
        let a = s.poll(t0);
        assert_eq!(fetches(&a)[..2], [(0, 0, false), (0, 1, true)]);
        let cancels = s.on_complete(t0 + ms(80), 0, SourceId(1), 18_000, ms(80));
        assert_eq!(cancels, vec![Action::Cancel { segment: 0, source: SourceId(0) }]);
        assert_eq!(s.stats().startup, Some(ms(80)));
    }

    #[test]
    fn pipelines_within_the_buffer_target_then_waits_for_the_playhead() {
        let t0 = Instant::now();
        let cfg = SchedulerConfig { buffer_ahead: Duration::from_secs(12), ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(10), 1, t0);
        let mut now = t0;
        let mut requested = Vec::new();
        for _ in 0..10 {
            for (seg, _, _) in fetches(&s.poll(now)) {
                requested.push(seg);
            }
            // Complete everything in flight quickly.
            let inflight: Vec<usize> =
                requested.iter().copied().filter(|i| !matches!(s.state[*i], State::Done)).collect();
            now += ms(50);
            for i in inflight {
                s.on_complete(now, i, SourceId(0), 18_000, ms(50));
            }
        }
        // Playback started at ~50 ms; 12 s ahead of the playhead covers segments 0..=2.
        assert_eq!(requested, vec![0, 1, 2], "fetched beyond the buffer target");
        let wake = s.next_wakeup(now).unwrap();
        assert!(wake > now && wake <= t0 + Duration::from_secs(7), "{:?}", wake - t0);
        for (seg, _, _) in fetches(&s.poll(wake)) {
            requested.push(seg);
        }
        assert_eq!(requested, vec![0, 1, 2, 3]);
        assert_eq!(s.stats().stalls, 0);
    }

    #[test]
    fn prefers_the_faster_source_once_measured() {
        let t0 = Instant::now();
        let cfg = SchedulerConfig { max_inflight: 1, ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(10), 2, t0);
        let a = s.poll(t0);
        assert_eq!(fetches(&a).len(), 2); // startup race
        s.on_complete(t0 + ms(30), 0, SourceId(1), 18_000, ms(30));
        s.on_failed(t0 + ms(31), 0, SourceId(0)); // the cancelled loser reports nothing useful
        // Source 0 is now avoided (down); after it comes back, both are known: 1 is faster.
        let later = t0 + Duration::from_secs(6);
        s.sources[0].down_until = None;
        s.sources[0].throughput = Some(20_000.0);
        s.sources[0].latency = Some(ms(200));
        let a = s.poll(later);
        assert_eq!(fetches(&a)[0].1, 1);
    }

    #[test]
    fn fails_over_at_once_and_comes_back_to_a_recovered_source() {
        let t0 = Instant::now();
        let cfg = SchedulerConfig { max_inflight: 1, down_for: Duration::from_secs(5), ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(10), 2, t0);
        s.poll(t0);
        s.on_complete(t0 + ms(40), 0, SourceId(0), 18_000, ms(40));
        s.on_complete(t0 + ms(45), 0, SourceId(1), 18_000, ms(45));
        let a = s.poll(t0 + ms(50));
        let (seg, src, _) = fetches(&a)[0];
        assert_eq!(seg, 1);
        s.on_failed(t0 + ms(60), 1, SourceId(src));
        let a = s.poll(t0 + ms(60));
        assert_eq!(fetches(&a), vec![(1, 1 - src, false)], "not re-requested elsewhere at once");
        s.on_complete(t0 + ms(100), 1, SourceId(1 - src), 18_000, ms(40));
        // While down, the failed source is not used…
        let a = s.poll(t0 + ms(200));
        assert_eq!(fetches(&a)[0].1, 1 - src);
        s.on_complete(t0 + ms(240), 2, SourceId(1 - src), 18_000, ms(40));
        // …and after `down_for` it is a candidate again.
        assert!(s.up(SourceId(src), t0 + Duration::from_secs(6)));
        assert!(!s.up(SourceId(src), t0 + Duration::from_secs(4)));
        assert_eq!(s.stats().failures, 1);
    }

    #[test]
    fn a_request_that_will_miss_its_deadline_is_hedged() {
        let t0 = Instant::now();
        let cfg =
            SchedulerConfig { max_inflight: 1, buffer_ahead: Duration::from_secs(6), ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(10), 2, t0);
        s.poll(t0);
        s.on_complete(t0 + ms(50), 0, SourceId(0), 18_000, ms(50));
        s.on_complete(t0 + ms(50), 0, SourceId(1), 18_000, ms(50));
        // Segment 1 (due at 6.05 s) goes to one source and then hangs there.
        let a = s.poll(t0 + ms(60));
        let (seg, src, _) = fetches(&a)[0];
        assert_eq!(seg, 1);
        // Well before the deadline nothing happens; close to it, a hedge goes to the other source.
        assert!(fetches(&s.poll(t0 + ms(100))).is_empty());
        let wake = s.next_wakeup(t0 + ms(100)).unwrap();
        assert!(wake <= t0 + Duration::from_secs(5), "hedge check too late: {:?}", wake - t0);
        let hedge = fetches(&s.poll(t0 + Duration::from_secs(5)));
        assert_eq!(hedge, vec![(1, 1 - src, true)]);
        let cancels = s.on_complete(t0 + ms(5100), 1, SourceId(1 - src), 18_000, ms(100));
        assert_eq!(cancels, vec![Action::Cancel { segment: 1, source: SourceId(src) }]);
        assert_eq!(s.stats().stalls, 0);
    }

    #[test]
    fn a_late_segment_is_a_stall_with_its_duration() {
        let t0 = Instant::now();
        let cfg =
            SchedulerConfig { max_inflight: 1, buffer_ahead: Duration::from_secs(6), ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(3), 1, t0);
        s.poll(t0);
        s.on_complete(t0, 0, SourceId(0), 18_000, ms(10));
        s.poll(t0 + ms(10));
        // Segment 1 was due at 6 s; it arrives at 7.5 s: one stall of 1.5 s.
        s.poll(t0 + Duration::from_secs(7));
        s.on_complete(t0 + ms(7500), 1, SourceId(0), 18_000, ms(7490));
        let st = s.stats();
        assert_eq!(st.stalls, 1);
        assert_eq!(st.stalled, ms(1500));
        // The deadline of segment 2 moved by the stall.
        assert_eq!(s.deadline(2, t0 + ms(7500)), Some(t0 + Duration::from_secs(12) + ms(1500)));
    }

    #[test]
    fn a_seek_cancels_what_is_in_flight_and_restarts_playback_there() {
        let t0 = Instant::now();
        let cfg =
            SchedulerConfig { max_inflight: 2, buffer_ahead: Duration::from_secs(12), ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(10), 2, t0);
        let first = s.poll(t0);
        assert_eq!(fetches(&first).iter().map(|f| f.0).collect::<Vec<_>>(), vec![0, 0, 1]);
        s.on_complete(t0 + ms(50), 0, SourceId(0), 18_000, ms(50));
        s.on_complete(t0 + ms(50), 0, SourceId(1), 18_000, ms(50));
        let a = s.poll(t0 + ms(60));
        assert_eq!(fetches(&a).iter().map(|f| f.0).collect::<Vec<_>>(), vec![2]);
        // Seek to 40 s: segment 6 (36..42 s).
        assert_eq!(s.segment_at(Duration::from_secs(40)), 6);
        let cancels = s.seek(t0 + ms(100), 6);
        assert_eq!(cancels.len(), 2, "{cancels:?}");
        assert!(cancels.iter().all(|c| matches!(c, Action::Cancel { segment: 1 | 2, .. })));
        // The new session starts with a race for segment 6; the playhead is there.
        let a = s.poll(t0 + ms(100));
        assert_eq!(fetches(&a)[..2], [(6, 0, false), (6, 1, true)]);
        assert_eq!(s.playhead(t0 + ms(100)), Duration::from_secs(36));
        s.on_complete(t0 + ms(150), 6, SourceId(0), 18_000, ms(50));
        // Deadlines count from the new session: segment 7 is due 6 s after it started.
        assert_eq!(s.deadline(7, t0 + ms(150)), Some(t0 + ms(150) + Duration::from_secs(6)));
        assert_eq!(s.playhead(t0 + ms(1150)), Duration::from_secs(37));
        // Earlier segments are not fetched again; the track finishes at the end.
        let mut now = t0 + ms(200);
        while !s.finished() {
            for (seg, src, _) in fetches(&s.poll(now)) {
                assert!(seg > 6, "fetched {seg} after seeking past it");
                s.on_complete(now, seg, SourceId(src), 18_000, ms(10));
            }
            now += Duration::from_secs(1);
        }
        let st = s.stats();
        assert_eq!((st.seeks, st.stalls), (1, 0));
        assert_eq!(st.startup, Some(ms(50)), "startup is the first session's");
    }

    #[test]
    fn the_limit_holds_requests_until_the_reader_catches_up() {
        let t0 = Instant::now();
        let cfg =
            SchedulerConfig { max_inflight: 4, buffer_ahead: Duration::from_secs(3600), ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(10), 1, t0);
        s.set_limit(3);
        let mut requested = Vec::new();
        for k in 0..5 {
            let now = t0 + ms(10 * k);
            for (seg, _, _) in fetches(&s.poll(now)) {
                requested.push(seg);
                s.on_complete(now, seg, SourceId(0), 18_000, ms(5));
            }
        }
        assert_eq!(requested, vec![0, 1, 2]);
        s.set_limit(5);
        requested.extend(fetches(&s.poll(t0 + ms(100))).iter().map(|f| f.0));
        assert_eq!(requested, vec![0, 1, 2, 3, 4]);
    }

    fn peer_setup(held: impl Fn(usize) -> bool) -> (Scheduler, SourceId, Instant) {
        let t0 = Instant::now();
        let cfg = SchedulerConfig {
            max_inflight: 4,
            buffer_ahead: Duration::from_secs(60),
            quality: Quality::Fixed(0),
            // The figures in these tests count with an 8 s lead and a 15 s window.
            peer_lead: Duration::from_secs(8),
            edge_window: Duration::from_secs(15),
            ..SchedulerConfig::default()
        };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(10), 1, t0);
        let peer = s.add_source(SourceKind::Peer);
        for i in (0..10).filter(|i| held(*i)) {
            s.set_holds(peer, i, 0);
        }
        (s, peer, t0)
    }

    fn sources_of(actions: &[Action]) -> Vec<(usize, usize)> {
        fetches(actions).iter().map(|(seg, src, _)| (*seg, *src)).collect()
    }

    #[test]
    fn the_start_comes_from_the_edge_and_peers_get_what_is_not_urgent() {
        let (mut s, peer, t0) = peer_setup(|_| true);
        // Startup: segments due within 8 s of starting now come from the edge (no startup race
        // with a peer, even one that holds the first segment); the third, due at 12 s, and
        // the fourth are not urgent and go to the peer.
        assert_eq!(sources_of(&s.poll(t0)), [(0, 0), (1, 0), (2, peer.0), (3, peer.0)]);
        for i in 0..4 {
            s.on_complete(t0 + ms(50 + 10 * i as u64), i, SourceId(0), 18_000, ms(50));
        }
        // Beyond the edges' window, segments a peer holds go to the peer, never the edge, at
        // most PEER_INFLIGHT at a time (a peer answers more than that BUSY).
        let a = sources_of(&s.poll(t0 + ms(100)));
        assert_eq!(a, [(4, peer.0), (5, peer.0)]);
        s.on_complete(t0 + ms(150), 4, peer, 18_000, ms(50));
        assert_eq!(sources_of(&s.poll(t0 + ms(150))), [(6, peer.0)]);
    }

    #[test]
    fn with_the_defaults_a_start_takes_one_segment_from_the_edge_and_the_second_from_a_peer() {
        let t0 = Instant::now();
        let cfg = SchedulerConfig { max_inflight: 4, quality: Quality::Fixed(0), ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(10), 1, t0);
        let peer = s.add_source(SourceKind::Peer);
        for i in 0..10 {
            s.set_holds(peer, i, 0);
        }
        // Segment 0 is the start (the edge); segment 1, due in 6 s, is not urgent yet.
        // (Two to the peer at once: the third waits for a place, not for the edge.)
        assert_eq!(sources_of(&s.poll(t0)), [(0, 0), (1, peer.0), (2, peer.0)]);
        s.on_complete(t0 + ms(60), 0, SourceId(0), 18_000, ms(50));
        // The peer sits on segment 1 (due at 6.06 s): nothing else is asked until it is within
        // the edge window (4 s), then the edge is asked too, with 4 s to spare.
        let early: Vec<_> = sources_of(&s.poll(t0 + ms(2_000))).into_iter().filter(|x| x.0 == 1).collect();
        assert!(early.is_empty(), "{early:?}");
        let hedge = fetches(&s.poll(t0 + ms(2_100)));
        assert!(hedge.contains(&(1, 0, true)), "{hedge:?}");
        s.on_complete(t0 + ms(2_200), 1, SourceId(0), 18_000, ms(100));
        assert_eq!(s.stats().stalls, 0);
    }

    #[test]
    fn a_next_track_comes_from_peers_early_and_from_the_edge_only_in_time() {
        // Playback planned 60 s from now; a peer holds segments 0 and 2, nobody holds 1.
        let (mut s, peer, t0) = peer_setup(|i| i != 1);
        s.plan_start(t0 + Duration::from_secs(60));
        s.set_limit(3);
        // No startup race, no edge: the peer gets what it holds, segment 1 waits.
        assert_eq!(sources_of(&s.poll(t0)), [(0, peer.0), (2, peer.0)]);
        s.on_complete(t0 + ms(200), 0, peer, 18_000, ms(200));
        s.on_complete(t0 + ms(300), 2, peer, 18_000, ms(100));
        assert!(s.poll(t0 + ms(300)).is_empty());
        // Segment 1 is due at 66 s: the edge is asked once it is within its 15 s window, and
        // the scheduler wakes up for that.
        assert!(s.next_wakeup(t0 + ms(300)).is_some_and(|w| w <= t0 + Duration::from_secs(51)));
        assert_eq!(s.next_wakeup(t0 + Duration::from_secs(50)), Some(t0 + Duration::from_secs(51)));
        assert!(s.poll(t0 + Duration::from_secs(50)).is_empty());
        assert!(s.poll(t0 + Duration::from_secs(50)).is_empty());
        assert_eq!(sources_of(&s.poll(t0 + Duration::from_secs(51))), [(1, 0)]);
        s.on_complete(t0 + Duration::from_secs(52), 1, SourceId(0), 18_000, ms(50));
        // Nothing played yet, so nothing stalled; playback starts at the planned time.
        assert_eq!(s.stats().stalls, 0);
        assert_eq!(s.playhead(t0 + Duration::from_secs(52)), Duration::ZERO);
        assert_eq!(s.deadline(1, t0), Some(t0 + Duration::from_secs(66)));
    }

    #[test]
    fn a_segment_the_cache_holds_is_taken_in_that_rendition() {
        let t0 = Instant::now();
        let cfg = SchedulerConfig { max_inflight: 4, ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(4), 1, t0);
        // Cached: segment 0 at the top rung, segment 1 at both; nothing of 2 and 3.
        s.set_cached(0, 1);
        s.set_cached(1, 0);
        s.set_cached(1, 1);
        let rungs = |actions: &[Action]| -> Vec<(usize, usize)> {
            actions
                .iter()
                .filter_map(|a| match a {
                    Action::Fetch { segment, rendition, hedge: false, .. } => Some((*segment, *rendition)),
                    Action::Fetch { .. } | Action::Cancel { .. } => None,
                })
                .collect()
        };
        let f = rungs(&s.poll(t0));
        let rung_of = |seg: usize| f.iter().find(|x| x.0 == seg).map(|x| x.1);
        assert_eq!(rung_of(0), Some(1));
        assert_eq!(rung_of(1), Some(1));
        // Not cached, nothing measured: bitrate adaptation starts low.
        assert_eq!(rung_of(2), Some(0));
        // Never above a fixed choice or the cap.
        let fixed = SchedulerConfig { quality: Quality::Fixed(0), ..SchedulerConfig::default() };
        let mut s = Scheduler::new(fixed, LADDER.to_vec(), track(4), 1, t0);
        s.set_cached(0, 1);
        assert_eq!(rungs(&s.poll(t0)).first().map(|x| x.1), Some(0));
    }

    #[test]
    fn while_peers_are_looked_for_the_edge_takes_only_what_is_near() {
        let (mut s, _, t0) = peer_setup(|_| false);
        s.set_awaiting_peers(true);
        // Segments 0-2 (due within the 15 s window of a playback starting now) from the edge;
        // the rest waits for the peers' answers.
        assert_eq!(sources_of(&s.poll(t0)), [(0, 0), (1, 0), (2, 0)]);
        // Nobody has them: the edge takes the rest at once.
        s.set_awaiting_peers(false);
        assert_eq!(sources_of(&s.poll(t0 + ms(10))), [(3, 0)]);
    }

    #[test]
    fn segments_no_peer_holds_come_from_the_edge_at_once() {
        let (mut s, peer, t0) = peer_setup(|i| i % 2 == 0);
        s.poll(t0);
        for i in 0..4 {
            s.on_complete(t0 + ms(50), i, SourceId(0), 18_000, ms(50));
        }
        let a = sources_of(&s.poll(t0 + ms(60)));
        assert_eq!(a.len(), 4);
        for (seg, src) in &a {
            let want = if seg % 2 == 0 { peer.0 } else { 0 };
            assert_eq!(*src, want, "segment {seg}: {a:?}");
        }
    }

    #[test]
    fn a_late_peer_request_is_hedged_to_the_edge_and_a_lying_peer_is_banned() {
        let (mut s, peer, t0) = peer_setup(|_| true);
        s.poll(t0);
        for i in 0..4 {
            s.on_complete(t0 + ms(50), i, SourceId(0), 18_000, ms(50));
        }
        let a = sources_of(&s.poll(t0 + ms(60)));
        assert!(a.contains(&(4, peer.0)), "{a:?}");
        // The peer sits on segment 4 (due at 24.05 s). While it is outside the edges' window
        // nothing else is asked; once inside, it is hedged to the edge.
        let quiet: Vec<_> = sources_of(&s.poll(t0 + Duration::from_secs(5))).into_iter().filter(|x| x.0 == 4).collect();
        assert!(quiet.is_empty(), "{quiet:?}");
        let wake = s.next_wakeup(t0 + Duration::from_secs(5)).unwrap();
        assert!(wake <= t0 + Duration::from_secs(10), "{:?}", wake - t0);
        let hedge = fetches(&s.poll(t0 + Duration::from_secs(10)));
        assert!(hedge.contains(&(4, 0, true)), "{hedge:?}");
        // The peer then answers with a wrong chunk: banned; everything after comes from the edge.
        s.ban(t0 + Duration::from_secs(10), peer);
        for i in 4..8 {
            s.on_complete(t0 + ms(10_100), i, SourceId(0), 18_000, ms(100));
        }
        let rest = sources_of(&s.poll(t0 + ms(10_200)));
        assert!(!rest.is_empty() && rest.iter().all(|(_, src)| *src == 0), "{rest:?}");
        assert_eq!(s.stats().stalls, 0);
    }

    #[test]
    fn bitrate_drops_at_once_when_throughput_falls() {
        let t0 = Instant::now();
        let cfg =
            SchedulerConfig { max_inflight: 1, buffer_ahead: Duration::from_secs(120), ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(12), 1, t0);
        let mut now = t0;
        let mut renditions = Vec::new();
        for i in 0..12 {
            for act in s.poll(now) {
                if let Action::Fetch { rendition, .. } = act {
                    renditions.push(rendition);
                }
            }
            // Fast for six segments (~29 Mbit/s), then the network collapses to ~60 kbit/s:
            // 72 KB in 9.6 s, under the 96 kbit/s rung's needs.
            let took = if i < 6 { ms(20) } else { ms(9600) };
            now += took;
            s.on_complete(now, i, SourceId(0), 72_000, took);
        }
        let top = renditions.iter().position(|&r| r == 1).expect("climbed first");
        assert!(top < 6, "{renditions:?}");
        // The smoothed estimate takes a segment or two to fall below the top rung's bitrate;
        // from then on it stays low, with no step back up while throughput is poor.
        let fell = renditions.iter().skip(6).position(|&r| r == 0).map(|p| p + 6).expect("never dropped");
        assert!(fell <= 9, "{renditions:?}");
        assert!(renditions[fell..].iter().all(|&r| r == 0), "{renditions:?}");
    }

    /// Plays a 4-rung track (24/96/160/320 kbit/s) on a virtual clock over a link of `bps`,
    /// starting from `estimate`, and returns each segment's rendition in request order.
    fn first_renditions(estimate: Option<f64>, bps: f64, n: usize) -> Vec<usize> {
        let t0 = Instant::now();
        let ladder = vec![24_000, 96_000, 160_000, 320_000];
        let segs = (0..n)
            .map(|_| SegmentInfo {
                duration: Duration::from_secs(6),
                sizes: ladder.iter().map(|b| b * 6 / 8).collect(),
            })
            .collect();
        let cfg = SchedulerConfig { buffer_ahead: Duration::from_secs(30), ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, ladder.clone(), segs, 1, t0);
        s.set_estimate(estimate);
        let mut now = t0;
        let mut picked = Vec::new();
        let mut inflight: Vec<(usize, usize)> = Vec::new();
        while picked.len() < n {
            for a in s.poll(now) {
                if let Action::Fetch { segment, rendition, hedge: false, .. } = a {
                    picked.push(rendition);
                    inflight.push((segment, rendition));
                }
            }
            // The oldest request completes at the link's rate plus a 20 ms round trip.
            if inflight.is_empty() {
                now = s.next_wakeup(now).expect("something to wait for");
                continue;
            }
            let (seg, r) = inflight.remove(0);
            let bytes = ladder[r] * 6 / 8;
            let took = ms(20) + Duration::from_secs_f64(bytes as f64 * 8.0 / bps);
            now += took;
            s.on_complete(now, seg, SourceId(0), bytes, took);
        }
        picked
    }

    #[test]
    fn the_first_bitrate_comes_from_the_remembered_estimate() {
        // A client that measured 2 Mbit/s last time starts at the top rung (half of it carries
        // 320k) and stays there on a link that carries it.
        let r = first_renditions(Some(2e6), 2e6, 6);
        assert_eq!(r, vec![3; 6]);
        // 500 kbit/s remembered: 250k → the 160k rung, from the first segment on.
        assert_eq!(first_renditions(Some(500_000.0), 2e6, 2), vec![2, 2]);
        // An estimate far above the link: the next decisions, made on what this track
        // measures, come down at once.
        let r = first_renditions(Some(50e6), 150_000.0, 5);
        assert_eq!(r[0], 3);
        assert!(r[2..].iter().all(|&x| x <= 1), "{r:?}");
    }

    #[test]
    fn a_cold_start_moves_to_the_default_quality_after_the_first_segment() {
        // No estimate: the first two requests (sent together) in the lowest rung; once the first
        // one shows a fast link, straight to 96 kbit/s (not 160k or 320k yet: those come one rung
        // at a time with a comfortable buffer).
        let r = first_renditions(None, 5e6, 10);
        assert_eq!(&r[..3], &[0, 0, 1], "{r:?}");
        assert_eq!(*r.last().unwrap(), 3, "then climbs to the top: {r:?}");
        // A link that cannot carry 96 kbit/s with margin stays at the lowest.
        let r = first_renditions(None, 100_000.0, 6);
        assert!(r.iter().all(|&x| x == 0), "{r:?}");
    }

    #[test]
    fn a_segment_held_back_for_peers_does_not_spend_the_cold_start_jump() {
        let t0 = Instant::now();
        let mut s = Scheduler::new(SchedulerConfig::default(), LADDER.to_vec(), track(4), 1, t0);
        s.set_awaiting_peers(true);
        assert_eq!(fetches(&s.poll(t0)), vec![(0, 0, false)]);
        s.on_complete(t0 + ms(50), 0, SourceId(0), 18_000, ms(50));
        // Segment 1 is left for the peers being looked for: nothing goes out.
        assert!(s.poll(t0 + ms(60)).is_empty());
        // Once it is within the edges' window it goes to the edge, in the default quality.
        let a = s.poll(t0 + ms(2100));
        assert!(a.contains(&Action::Fetch { segment: 1, rendition: 1, source: SourceId(0), hedge: false }), "{a:?}");
    }

    #[test]
    fn bitrate_climbs_with_measured_throughput() {
        let t0 = Instant::now();
        let cfg =
            SchedulerConfig { max_inflight: 1, buffer_ahead: Duration::from_secs(120), ..SchedulerConfig::default() };
        let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(10), 1, t0);
        let mut now = t0;
        let mut renditions = Vec::new();
        for i in 0..6 {
            let a = s.poll(now);
            for act in a {
                if let Action::Fetch { rendition, .. } = act {
                    renditions.push(rendition);
                }
            }
            now += ms(20);
            s.on_complete(now, i, SourceId(0), 72_000, ms(20)); // ~29 Mbit/s
        }
        assert_eq!(renditions[0], 0, "start low");
        assert_eq!(*renditions.last().unwrap(), 1, "climb once the buffer is comfortable: {renditions:?}");
    }

    proptest::proptest! {
        /// Whatever happens, the counts kept beside the segments' states (done from the
        /// start, in flight, the bitmap of what is left) are what the states say.
        #[test]
        fn the_kept_counts_follow_the_states(ops in proptest::collection::vec((0u8..6, 0usize..70, 0u64..3_000), 1..120)) {
            let t0 = Instant::now();
            let cfg = SchedulerConfig { max_inflight: 4, ..SchedulerConfig::default() };
            let mut s = Scheduler::new(cfg, LADDER.to_vec(), track(70), 1, t0);
            let peer = s.add_source(SourceKind::Peer);
            for i in 0..70 {
                s.set_holds(peer, i, 0);
            }
            let mut now = t0;
            for (op, i, dt) in ops {
                now += ms(dt);
                let source = SourceId(usize::from(op % 2 == 0));
                match op {
                    0 | 1 => drop(s.poll(now)),
                    2 => drop(s.on_complete(now, i, source, 18_000, ms(dt))),
                    3 => s.on_failed(now, i, source),
                    4 => drop(s.seek(now, i)),
                    _ => s.ban(now, peer),
                }
                let done = s.state.iter().take_while(|st| matches!(st, State::Done)).count();
                let left = Pairs::segments_where(70, |k| !matches!(s.state[k], State::Done));
                proptest::prop_assert_eq!(s.done_prefix, done);
                let flying: Vec<usize> = (0..70).filter(|k| matches!(s.state[*k], State::InFlight(_))).collect();
                proptest::prop_assert_eq!(&s.flying, &flying);
                proptest::prop_assert_eq!(&s.left, &left);
                proptest::prop_assert_eq!(s.finished(), s.state.iter().all(|st| matches!(st, State::Done)));
            }
        }
    }
}
