//! `chorus simulate`: many listeners, tracks and edges on a virtual clock, for capacity planners
//! (docs/capacity-planning.md, "Simulating a deployment").
//!
//! A discrete-event run, on as many threads as it is given (the same run on any number: see
//! `par.rs`). What decides is the code a deployment runs, called as its own drivers call it,
//! with simulated time:
//!
//! - each play is a [`chorus_client::scheduler::Scheduler`] (with its ABR) and a
//!   [`chorus_client::playout::Playout`], stepped as `client-lib/src/driver.rs` steps them:
//!   poll, carry out fetches and cancels, feed completions and failures back, hand segments
//!   over in order, look for peers while the start comes from the edge and every 5 s while
//!   playing;
//! - each edge's tracker is the edge's own [`chorus_edge::tracker::Tracker`] (one per edge, or
//!   one for all, as with `chorus edge --tracker redis://…`), with its limits, expiry and
//!   answers (the newest half and a random sample);
//! - each edge's cache is the edge's memory tier ([`chorus_edge::cache::tier::Tier`] with
//!   TinyLFU admission by [`chorus_edge::cache::sketch::Sketch`]), finite.
//!
//! What is modelled, not run: the network (per-listener round trips and rates, a fixed
//! bandwidth share per upload, no congestion), the origin (a round trip and a rate), peer
//! connections (a dial costs round trips; a departed peer's request fails; behind NATs, a
//! meeting through the edge's relay and a hole punched, or no connection at all: see
//! [`SimConfig::behind_cone`]), and listeners' behaviour (Poisson-like arrivals, exponential
//! sessions, Zipf track popularity). Not modelled: seeks, Kademlia
//! and mDNS discovery, the relay's own load, request coalescing at the edge, a disk tier. See
//! [`world`] for the rules; every interaction between a listener and an edge, a tracker or
//! another listener is a message that takes its share of their round trip (`mail.rs`).

mod ctx;
mod draw;
mod hub;
mod mail;
mod par;
mod queue;
mod slab;
mod svg;
mod world;

/// Microseconds of simulated time.
pub(crate) type Us = u64;

use std::time::Duration;

use chorus_client::abr::Quality;
use serde::Serialize;

pub use svg::plot;

/// How long listeners stay.
#[derive(Debug, Clone, Copy)]
pub enum Session {
    /// Each listener plays this many tracks, then leaves.
    Plays(u32),
    /// Each listener stays for an exponentially distributed time with this mean, then leaves
    /// (mid-track, as listeners do).
    Mean(Duration),
}

/// One simulated deployment.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Listeners who arrive, at uniformly random times within [`SimConfig::arrive_over`].
    pub listeners: usize,
    /// The window of arrivals.
    pub arrive_over: Duration,
    /// Simulated time; what is still running then is cut.
    pub duration: Duration,
    /// How long each listener stays.
    pub session: Session,
    /// Tracks in the catalogue.
    pub tracks: usize,
    /// Popularity: track of rank k is played with probability ∝ 1 / k^zipf.
    pub zipf: f64,
    /// Segments per track, drawn uniformly in this range (inclusive) per track.
    pub segments: (usize, usize),
    /// Duration of a segment.
    pub segment: Duration,
    /// The bitrate ladder (bits per second, ascending); a segment's size is its bitrate times
    /// its duration.
    pub ladder_bps: Vec<u64>,
    /// The listeners' quality setting.
    pub quality: Quality,
    /// Play in real time (30 s ahead, 2 requests in flight), or fetch as fast as possible
    /// (`chorus fetch` without `--play`, the swarm benchmark's fast mode).
    pub play: bool,
    /// In play mode, whether each listener preloads its next track's first 15 s when 30 s of
    /// the current one are left (`Client::preload`, as bench/swarm.sh's player does): from
    /// peers, and from the edge only for segments due within its window.
    pub preload: bool,
    /// Whether listeners use peers.
    pub p2p: bool,
    /// Edges; listener `n` reaches edge `n mod edges`.
    pub edges: usize,
    /// Each edge's cache (bytes).
    pub edge_cache_bytes: u64,
    /// One tracker shared by all edges (Redis), or one per edge.
    pub shared_tracker: bool,
    /// The tracker's cap per track per source network (`--tracker-per-network`).
    pub per_network: usize,
    /// Listeners per /24 network (as the tracker sees sources).
    pub listeners_per_network: usize,
    /// Round trip from an edge to the origin, and the origin's rate (bytes/s).
    pub origin_rtt: Duration,
    /// The origin's rate per request (bytes/s).
    pub origin_bps: u64,
    /// Each listener's round trip to its edge, drawn uniformly in this range.
    pub rtt: (Duration, Duration),
    /// Added to the mean of two listeners' round trips between them (the core in between).
    pub core_rtt: Duration,
    /// Each listener's downlink (bytes/s), drawn uniformly in this range.
    pub downlink: (u64, u64),
    /// Each serving listener's uplink (bytes/s), drawn uniformly in this range.
    pub uplink: (u64, u64),
    /// Fraction of listeners that only consume (mobile): no uplink, never announced.
    pub mobile: f64,
    /// Fraction of listeners behind endpoint-independent NATs (home routers): reached through
    /// the edge's relay, then by a hole punched through both NATs (DCUtR), by any listener
    /// that is not behind a symmetric NAT.
    pub behind_cone: f64,
    /// Fraction of listeners behind symmetric NATs (some carrier-grade ones): reached by
    /// listeners with public addresses only (the connection reversed through the relay); they
    /// reach public listeners themselves. Chunks never cross the relay (architecture.md D15).
    /// The rest have public addresses.
    pub behind_symmetric: f64,
    /// Tracks each listener's cache holds when it arrives (whole, at the rung its downlink
    /// takes), drawn from the same popularity as its plays: what earlier days left. 0: cold
    /// caches.
    pub warm_tracks: usize,
    /// Of the listeners, the first this many are seeders: online from the start to the end,
    /// holding every track whole from before (at the rung their downlink takes), announcing
    /// as soon as they arrive, and never playing. They stand for listeners who keep their app
    /// open after playing (as `tests/netns.rs` and bench/swarm.sh's seeders do); the report's
    /// plays are the others'.
    pub seeders: usize,
    /// Uploads a listener serves at once at most (BUSY beyond).
    pub max_uploads: u32,
    /// Seed of every random draw: the same config and seed give the same run.
    pub seed: u64,
    /// Interval of the timeline.
    pub sample: Duration,
}

impl Default for SimConfig {
    /// 1 000 listeners for 20 minutes: a quick run. `chorus simulate --help` has the planner's
    /// defaults.
    fn default() -> Self {
        Self {
            listeners: 1_000,
            arrive_over: Duration::from_secs(600),
            duration: Duration::from_secs(1_200),
            session: Session::Mean(Duration::from_secs(1_800)),
            tracks: 10_000,
            zipf: 1.0,
            segments: (30, 45),
            segment: Duration::from_secs(6),
            ladder_bps: vec![24_000, 96_000, 160_000, 320_000],
            quality: Quality::Auto { cap: usize::MAX },
            play: true,
            preload: true,
            p2p: true,
            edges: 1,
            edge_cache_bytes: 8 << 30,
            shared_tracker: true,
            per_network: 4,
            listeners_per_network: 8,
            origin_rtt: Duration::from_millis(40),
            origin_bps: 125_000_000,
            rtt: (Duration::from_millis(10), Duration::from_millis(60)),
            core_rtt: Duration::from_millis(10),
            downlink: (1_250_000, 12_500_000),
            uplink: (125_000, 2_500_000),
            mobile: 0.3,
            behind_cone: 0.0,
            behind_symmetric: 0.0,
            warm_tracks: 0,
            seeders: 0,
            max_uploads: 4,
            seed: 1,
            sample: Duration::from_secs(60),
        }
    }
}

/// Played bytes by where they came from.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Bytes {
    /// From an edge.
    pub edge: u64,
    /// From a peer.
    pub peer: u64,
    /// From the listener's own cache.
    pub cache: u64,
}

impl Bytes {
    /// All of them.
    #[must_use]
    pub const fn total(&self) -> u64 {
        self.edge + self.peer + self.cache
    }

    /// The edges' share (0 to 1; 0 for no bytes).
    #[must_use]
    #[allow(clippy::cast_precision_loss)] // a ratio
    pub fn edge_share(&self) -> f64 {
        if self.total() == 0 { 0.0 } else { self.edge as f64 / self.total() as f64 }
    }
}

impl std::ops::AddAssign for Bytes {
    fn add_assign(&mut self, b: Self) {
        self.edge += b.edge;
        self.peer += b.peer;
        self.cache += b.cache;
    }
}

/// One interval of the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Its end, seconds of simulated time.
    pub t_s: u64,
    /// Bytes played within it.
    pub bytes: Bytes,
    /// Listeners online at its end.
    pub online: usize,
}

/// One edge's load.
#[derive(Debug, Clone, Default, Serialize)]
pub struct EdgeReport {
    /// Chunk requests answered.
    pub requests: u64,
    /// Of them, answered from its cache.
    pub hits: u64,
    /// Chunk bytes sent (hedges and cancelled requests included).
    pub egress_bytes: u64,
    /// Bytes fetched from the origin.
    pub origin_bytes: u64,
    /// `hits / requests`.
    pub hit_ratio: f64,
}

/// Percentiles of a distribution (ms).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Plays started.
    pub plays: u64,
    /// Plays that reached their end (the rest were cut by their listener leaving or the run
    /// ending).
    pub plays_completed: u64,
    /// Preloads of a next track started ([`SimConfig::preload`]).
    pub preloads: u64,
    /// What the preloads fetched over the network, by source (counted in [`Report::bytes`]
    /// too, as they crossed the network; read back from the cache when the track plays, they
    /// are not counted again).
    pub preload_bytes: Bytes,
    /// Completed plays that found no peer holding any of the track.
    pub plays_without_peers: u64,
    /// Played bytes of first segments that came from an edge (a start that is neither cached
    /// nor preloaded is urgent: the client asks edges only).
    pub edge_first_segment_bytes: u64,
    /// Played bytes by source.
    pub bytes: Bytes,
    /// The edges' share of played bytes (the "server share").
    pub edge_share: f64,
    /// The timeline.
    pub timeline: Vec<Point>,
    /// Per edge.
    pub edges: Vec<EdgeReport>,
    /// Announces recorded by trackers.
    pub announces: u64,
    /// Track names in those announces (played, held and dropped): what the tracker's scripts
    /// work through.
    pub announced_names: u64,
    /// Those names per second of the run.
    pub announced_names_per_sec: f64,
    /// Peer queries answered by trackers.
    pub queries: u64,
    /// Tracker operations (announces and queries) per second of simulated time.
    pub tracker_ops_per_sec: f64,
    /// New peer connections per play.
    pub dials_per_play: f64,
    /// Of the new peer connections, those made by a hole punched through NATs (or a connection
    /// reversed) after meeting through the edge's relay.
    pub dials_punched: u64,
    /// Listed peers not dialled because no connection can cross both NATs (symmetric ones).
    pub peers_unreachable: u64,
    /// Startup of plays that started (ms from opening the track to the first segment).
    pub startup_ms: Percentiles,
    /// The median over plays of startup minus (2 × the listener's round trip to its edge +
    /// 10 ms), ms: at most 0 when the median play starts within that budget.
    pub startup_over_2rtt_plus_10ms_p50: f64,
    /// Stalls per 100 completed plays.
    pub stalls_per_100_plays: f64,
    /// Peer requests refused for lack of an upload slot, or to a peer gone.
    pub peer_failures: u64,
    /// Events processed.
    pub events: u64,
    /// Peak listeners online (counted between windows of simulated time, every few ms).
    pub peak_online: usize,
}

/// Runs `cfg` to its end on `threads` threads (the report is the same whatever their
/// number); `progress` is called with the simulated seconds done, every simulated minute.
#[must_use]
pub fn run(cfg: &SimConfig, threads: usize, progress: &mut dyn FnMut(u64)) -> Report {
    par::run(cfg, threads, progress)
}
