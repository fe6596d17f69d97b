//! The simulated world: listeners, edges, trackers and one queue of timed events.
//!
//! Time is microseconds since the start of the run; the real code gets it as
//! `base + that` (a `std::time::Instant`, or tokio's for the tracker), so it runs unchanged.
//!
//! The rules of the model (see the crate docs for what runs for real):
//! - **Listener**: arrives, opens a track (Zipf), plays it to its end (its startup plus its
//!   media time plus its stalls), opens the next, until its session ends; it may leave mid-
//!   track. A serving listener (not mobile) announces the track it plays when its first
//!   segment is handed over, and every 2 minutes what the client's own `Holdings`
//!   (`chorus_core::holdings`) plans: the tracks it started within the last 30 minutes as
//!   played, and the rest of its cache as held tracks, each
//!   named once and then every 45 minutes (5 s apart while a large cache goes in), unlisted
//!   ones an hour later. With `SimConfig::warm_tracks` it arrives with that many tracks in its
//!   cache, whole, drawn from the popularity of plays.
//! - **Preloading** (`SimConfig::preload`, play mode): when 30 s of a track are left, the
//!   listener draws its next track and preloads its first 15 s as `Client::preload` does: a
//!   play of its own (manifest, peer search, the real scheduler with a planned start, so the
//!   edge is asked only for segments due within its window) whose segments go to the cache,
//!   announced as played at its first segment. The next track then opens from the cache; a
//!   preload still running is cut short. Its bytes count where they crossed the network, and
//!   not again when read back from the cache (as bench/swarm.sh counts them).
//! - **Opening a track** costs a round trip to the edge (the manifest; one more for the first
//!   connection of a session). With peers on, the tracker is asked once the manifest is in
//!   (one round trip), then each listed peer that is online is dialled (four peer round trips:
//!   TCP, noise, the negotiation of noise and yamux; none when already connected) and asked
//!   what it holds on a new substream (two more: negotiation, then the request); each answer
//!   joins the scheduler as it arrives, and the search ends after the last
//!   (2 s at most, as in the client). The search runs again when the client's own
//!   `refresh::PeerRefresh` says so (checked every 5 s while the track is being fetched).
//! - **Behind NATs** (`SimConfig::behind_cone`, `behind_symmetric`): a peer behind an
//!   endpoint-independent NAT is met through the edge's relay first (four round trips to the
//!   relay, three relayed ones for the circuit and two for DCUtR, a relayed one being the sum
//!   of both listeners' round trips to their edges), then dialled directly; one behind a
//!   symmetric NAT is reached that way by listeners with public addresses only (the
//!   connection reversed), and by no one else. A pair that cannot connect is not dialled:
//!   chunks never cross the relay, as in the client.
//! - **An edge request** takes the listener's round trip plus the size over its downlink; a
//!   miss in the edge's cache adds the origin's round trip and transfer.
//! - **A peer request** takes two round trips between the two (a new substream negotiates its
//!   protocol, then asks) plus the size over the smaller of
//!   the listener's downlink and the uploader's uplink shared by its uploads at that moment; an
//!   uploader with all its upload slots busy answers BUSY after a round trip, a departed one
//!   fails after two.
//! - **The listener's own cache** answers in 1 ms (as the client reports it).
//!
//! One file of ~1 300 lines, past the usual ~600, on purpose: it is one idea, the event loop of
//! `World`. Its handlers (arrive, open, preload, search, step, fetch, done, announce, leave) all act on
//! the same listeners, plays, fetches and counters and call one another's helpers; split by
//! handler, every file would need all of that state, and a reader would follow one event
//! across several files. What stands alone is elsewhere: the deterministic draws and ids in
//! `draw.rs` (on `chorus-draw`), the event queue in `queue.rs`, the fetches' table in `slab.rs`, the report's types and
//! percentiles in `lib.rs`, the charts in `svg.rs`; the real scheduler, playout, dial guard, cache tier and tracker come from their
//! crates.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use chorus_client::dials::{Dials, Open};
use chorus_client::playout::Playout;
use chorus_client::refresh::{self, PeerRefresh};
use chorus_client::scheduler::{Action, Scheduler, SchedulerConfig, SegmentInfo, SourceId, SourceKind};
use chorus_core::TrackId;
use chorus_core::holdings::{Holdings, MAX_PLAYED, PLAYED_FOR, SOON};
use chorus_core::p2p::{Multiaddr, PeerId};
use chorus_edge::cache::sketch::Sketch;
use chorus_edge::cache::tier::{Tier, Weighted};
use chorus_edge::tracker::{Tracker, TrackerConfig, Verified};

use crate::draw::{HashMap, Rng, Zipf, chunk_id, peer_id};
use crate::queue::Queue;
use crate::slab::Slab;
use crate::{Bytes, EdgeReport, Percentiles, Point, Report, Session, SimConfig};

/// Microseconds of simulated time.
type Us = u64;

const MS: Us = 1_000;
const SEC: Us = 1_000_000;
/// How often a serving listener announces ([`chorus_core::api::REANNOUNCE`]).
const REANNOUNCE: Us = chorus_core::api::REANNOUNCE.as_secs() * SEC;
/// How often a playing track checks whether to look for peers again (the client's
/// `refresh::TICK`; whether it does is the client's own `PeerRefresh`).
const PEER_CHECK: Us = refresh::TICK.as_secs() * SEC;
/// Longest a peer search waits for answers (the client's `LOOK`).
const LOOK: Us = 2 * SEC;
/// Candidates asked per search at most (the client's `ASK_AT_MOST`).
const ASK_AT_MOST: usize = 8;
/// Segments fetched beyond the one the reader waits for (the client's default read-ahead).
const READ_AHEAD: usize = 8;
/// A preload starts when this much of the playing track is left (bench/swarm.sh's player).
const PRELOAD_STARTS_IN: Duration = Duration::from_secs(30);
/// What a preload fetches of the next track.
const PRELOAD_AMOUNT: Duration = Duration::from_secs(15);

/// A cached chunk's size, for the edge's tier.
struct Size(u64);

impl Weighted for Size {
    fn weight(&self) -> u64 {
        self.0
    }
}

/// An edge: its cache (the real tier and sketch) and its counters.
struct Edge {
    cache: Tier<Size>,
    sketch: Sketch,
    report: EdgeReport,
}

/// Where a source of a play is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Edge(usize),
    Peer(u32),
}

/// Where a handed-over segment came from.
#[derive(Debug, Clone, Copy)]
enum Via {
    Edge,
    Peer,
    Cache,
}

/// One track being played.
struct Play {
    id: u64,
    track: u32,
    sched: Scheduler,
    playout: Playout<Via>,
    sources: Vec<Src>,
    opened: Us,
    /// The scheduled wakeup, so a later poll does not queue duplicates.
    wake: Option<Us>,
    /// Fetches in flight: (segment, source) → fetch id (a handful: a list, not a map).
    inflight: Vec<((usize, usize), u64)>,
    searching: bool,
    /// When it asks the tracker again (the client's policy).
    refresh: PeerRefresh,
    /// A preload of the next track (`Client::preload`): what it fetches goes to the cache, and
    /// nothing is played.
    preload: bool,
    /// Of a played track: the segments a preload fetched over the network (their bytes were
    /// counted then, by source; read back from the cache they are not counted again).
    preloaded: Vec<bool>,
}

/// What is between a listener and the internet (`SimConfig::behind_cone`, `behind_symmetric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nat {
    Public,
    Cone,
    Symmetric,
}

/// How a listener behind `from` gets a connection to one behind `to`: directly, by a hole
/// punched (or the connection reversed) after meeting through the edge's relay, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    Direct,
    Punched,
    Never,
}

const fn reach(from: Nat, to: Nat) -> Reach {
    match (from, to) {
        (_, Nat::Public) => Reach::Direct,
        (Nat::Public, _) | (Nat::Cone, Nat::Cone) => Reach::Punched,
        _ => Reach::Never,
    }
}

struct Listener {
    ip: Ipv4Addr,
    nat: Nat,
    edge: usize,
    rtt: Us,
    down: u64,
    /// 0: consume only.
    up: u64,
    online: bool,
    connected_edge: bool,
    plays_left: Option<u32>,
    /// Per track held: the rung + 1 of each segment (0: not held), in ladder order.
    held: HashMap<u32, Vec<u8>>,
    /// Tracks held, oldest first (named newest first).
    held_order: Vec<u32>,
    /// Tracks held whole since before the run (`SimConfig::warm_tracks`), sorted, at rung
    /// `warm_rung - 1`.
    warm: Vec<u32>,
    warm_rung: u8,
    /// What it has told its tracker (the client's own planner).
    holdings: Holdings<u32>,
    /// Tracks it started, the latest first, with when (at most `MAX_PLAYED`).
    started: Vec<(u32, Us)>,
    uploads: u32,
    peers: Vec<u32>,
    /// The client's dial guard: new dials per track and period, backoff of failed addresses.
    dials: Dials,
    play: Option<Box<Play>>,
    /// The preload of the next track, while it runs.
    ahead: Option<Box<Play>>,
    /// The next track, drawn when its preload started, and the segments the preload fetched
    /// over the network.
    next: Option<(u32, Vec<bool>)>,
    announces: u64,
    rng: Rng,
}

impl Play {
    /// Takes the fetch in flight for `segment` from `source`, if any.
    fn take_inflight(&mut self, segment: usize, source: usize) -> Option<u64> {
        let at = self.inflight.iter().position(|(k, _)| *k == (segment, source))?;
        Some(self.inflight.swap_remove(at).1)
    }

    /// When its audio ends (`n` segments of `segment`), as far as is known now: its startup,
    /// media and stalls so far; `None` before its first segment is out.
    fn audio_end(&self, segment: Duration, n: u16) -> Option<Us> {
        let stats = self.sched.stats();
        let startup = stats.startup?;
        Some(self.opened + us(startup + segment * u32::from(n) + stats.stalled))
    }
}

impl Listener {
    /// Records that it started `track` at `at` (the latest first, at most `MAX_PLAYED`).
    fn note_start(&mut self, track: u32, at: Us) {
        self.started.retain(|(t, _)| *t != track);
        self.started.insert(0, (track, at));
        self.started.truncate(MAX_PLAYED);
    }

    /// Its play or its preload with id `p`.
    fn slot(&mut self, p: u64) -> Option<&mut Play> {
        match &mut self.play {
            Some(play) if play.id == p => Some(play),
            _ => self.ahead.as_deref_mut().filter(|a| a.id == p),
        }
    }

    fn slot_ref(&self, p: u64) -> Option<&Play> {
        match &self.play {
            Some(play) if play.id == p => Some(play),
            _ => self.ahead.as_deref().filter(|a| a.id == p),
        }
    }

    /// What it holds of `track` (of `n` segments): the rung + 1 of each segment, 0 where none.
    fn holding(&self, track: u32, n: usize) -> std::borrow::Cow<'_, [u8]> {
        if let Some(h) = self.held.get(&track) {
            return std::borrow::Cow::Borrowed(h.as_slice());
        }
        if self.warm.binary_search(&track).is_ok() {
            return std::borrow::Cow::Owned(vec![self.warm_rung; n]);
        }
        std::borrow::Cow::Borrowed(&[])
    }
}

struct Fetch {
    listener: u32,
    play: u64,
    segment: usize,
    rung: usize,
    source: usize,
    bytes: u64,
    started: Us,
    from: Option<Via>,
    uploader: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Arrive(u32),
    Leave(u32),
    Open(u32),
    Wake(u32, u64),
    Done(u64),
    Holds(u32, u64, u32),
    SearchDone(u32, u64),
    Refresh(u32, u64),
    TrackEnd(u32, u64),
    /// 30 s of play `p` are left: the listener preloads its next track.
    Preload(u32, u64),
    Announce(u32),
    /// One more announce soon, while a large cache goes in (no next period of its own).
    AnnounceSoon(u32),
    Sample,
    Expire,
}

pub(crate) struct World<'a> {
    cfg: &'a SimConfig,
    base: Instant,
    now: Us,
    queue: Queue<Ev>,
    listeners: Vec<Listener>,
    edges: Vec<Edge>,
    trackers: Vec<Tracker>,
    track_ids: Vec<TrackId>,
    track_segments: Vec<u16>,
    /// Each listener's peer id and address, as its tracker entries list them.
    peer_ids: Vec<PeerId>,
    addrs: Vec<Multiaddr>,
    zipf: Zipf,
    rng: Rng,
    fetches: Slab<Fetch>,
    next_id: u64,
    // Counters.
    bytes: Bytes,
    interval: Bytes,
    timeline: Vec<Point>,
    plays: u64,
    preloads: u64,
    preload_bytes: Bytes,
    completed: u64,
    lonely: u64,
    edge_first: u64,
    startups: Vec<u64>,
    /// Per started play: its startup minus (2 × its round trip to the edge + 10 ms), µs.
    over_budget: Vec<i64>,
    stalls: u64,
    announces: u64,
    announced_names: u64,
    queries: u64,
    dials: u64,
    dials_punched: u64,
    peers_unreachable: u64,
    peer_failures: u64,
    events: u64,
    online: usize,
    peak_online: usize,
}

impl<'a> World<'a> {
    pub(crate) fn new(cfg: &'a SimConfig) -> Self {
        let mut rng = Rng(cfg.seed);
        let tracker_cfg = TrackerConfig {
            per_network: cfg.per_network.max(1),
            max_peers: usize::MAX,
            max_tracks: usize::MAX,
            max_sources: usize::MAX,
            ..TrackerConfig::default()
        };
        let trackers = (0..if cfg.shared_tracker { 1 } else { cfg.edges.max(1) })
            .map(|_| Tracker::new(tracker_cfg.clone()))
            .collect();
        let per24 = cfg.listeners_per_network.max(1);
        let listeners: Vec<Listener> = (0..cfg.listeners)
            .map(|n| {
                let mut r = Rng(rng.next());
                let net = u32::try_from(n / per24).unwrap_or(u32::MAX);
                let host = u32::try_from(n % per24).unwrap_or(0) + 1;
                let mobile = r.unit() < cfg.mobile;
                // Drawn apart from the listener's own sequence, so that runs without NATs stay
                // as they were.
                let n64 = u64::try_from(n).unwrap_or(u64::MAX);
                let behind =
                    Rng(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n64.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1)
                        .unit();
                let nat = if behind < cfg.behind_symmetric {
                    Nat::Symmetric
                } else if behind < cfg.behind_symmetric + cfg.behind_cone {
                    Nat::Cone
                } else {
                    Nat::Public
                };
                Listener {
                    nat,
                    ip: Ipv4Addr::from(0x0A00_0000u32.wrapping_add(net.wrapping_mul(256)).wrapping_add(host)),
                    edge: n % cfg.edges.max(1),
                    rtt: r.range((us(cfg.rtt.0), us(cfg.rtt.1))),
                    down: r.range(cfg.downlink).max(1),
                    up: if mobile { 0 } else { r.range(cfg.uplink) },
                    online: false,
                    connected_edge: false,
                    plays_left: None,
                    held: HashMap::default(),
                    held_order: Vec::new(),
                    warm: Vec::new(),
                    warm_rung: 0,
                    holdings: Holdings::default(),
                    started: Vec::new(),
                    uploads: 0,
                    peers: Vec::new(),
                    dials: Dials::with_table(64),
                    play: None,
                    ahead: None,
                    next: None,
                    announces: 0,
                    rng: r,
                }
            })
            .collect();
        let items = usize::try_from(cfg.edge_cache_bytes / 65_536).unwrap_or(usize::MAX).max(1024);
        let edges = (0..cfg.edges.max(1))
            .map(|_| Edge {
                cache: Tier::new(cfg.edge_cache_bytes),
                sketch: Sketch::new(items),
                report: EdgeReport::default(),
            })
            .collect();
        // "t<number>" is a valid track id.
        let track_ids = (0..cfg.tracks.max(1)).filter_map(|t| TrackId::parse(&format!("t{t}")).ok()).collect();
        let track_segments = (0..cfg.tracks.max(1))
            .map(|_| {
                u16::try_from(rng.range((cfg.segments.0 as u64, cfg.segments.1 as u64))).unwrap_or(u16::MAX).max(1)
            })
            .collect();
        let peer_ids: Vec<PeerId> = (0..cfg.listeners).map(|_| peer_id(&mut rng)).collect();
        let addrs: Vec<Multiaddr> = listeners
            .iter()
            .map(|li: &Listener| Multiaddr::from(li.ip).with(chorus_core::p2p::multiaddr::Protocol::Tcp(4001)))
            .collect();
        let mut w = Self {
            cfg,
            peer_ids,
            addrs,
            base: Instant::now(),
            now: 0,
            queue: Queue::new(),
            listeners,
            edges,
            trackers,
            track_ids,
            track_segments,
            zipf: Zipf::new(cfg.tracks, cfg.zipf),
            rng,
            fetches: Slab::default(),
            next_id: 0,
            bytes: Bytes::default(),
            interval: Bytes::default(),
            timeline: Vec::new(),
            plays: 0,
            preloads: 0,
            preload_bytes: Bytes::default(),
            completed: 0,
            lonely: 0,
            edge_first: 0,
            startups: Vec::new(),
            over_budget: Vec::new(),
            stalls: 0,
            announces: 0,
            announced_names: 0,
            queries: 0,
            dials: 0,
            dials_punched: 0,
            peers_unreachable: 0,
            peer_failures: 0,
            events: 0,
            online: 0,
            peak_online: 0,
        };
        w.warm_up();
        for n in 0..w.listeners.len() {
            let at = (w.rng.unit() * us(cfg.arrive_over) as f64) as Us;
            w.at(at, Ev::Arrive(u32::try_from(n).unwrap_or(u32::MAX)));
        }
        w.at(us(cfg.sample).max(1), Ev::Sample);
        w.at(30 * SEC, Ev::Expire);
        w
    }

    fn at(&mut self, t: Us, ev: Ev) {
        self.queue.push(t, ev);
    }

    fn instant(&self, t: Us) -> Instant {
        self.base + Duration::from_micros(t)
    }

    fn tokio_now(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.instant(self.now))
    }

    pub(crate) fn run(mut self, progress: &mut dyn FnMut(u64)) -> Report {
        let end = us(self.cfg.duration);
        let mut next_progress = 60 * SEC;
        while let Some((t, ev)) = self.queue.pop() {
            if t > end {
                break;
            }
            self.now = t;
            self.events += 1;
            if t >= next_progress {
                progress(t / SEC);
                next_progress += 60 * SEC;
            }
            self.handle(ev);
        }
        self.report()
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Arrive(l) => self.arrive(l),
            Ev::Leave(l) => self.leave(l),
            Ev::Open(l) => self.open(l),
            Ev::Wake(l, p) => {
                let now = self.now;
                if let Some(play) = self.play_mut(l, p)
                    && play.wake == Some(now)
                {
                    play.wake = None;
                    self.step(l, p);
                }
            }
            Ev::Done(f) => self.done(f),
            Ev::Holds(l, p, u) => self.holds(l, p, u),
            Ev::SearchDone(l, p) => {
                if let Some(play) = self.play_mut(l, p) {
                    play.searching = false;
                    play.sched.set_awaiting_peers(false);
                    self.step(l, p);
                }
            }
            Ev::Refresh(l, p) => {
                let now_i = self.instant(self.now);
                if let Some(play) = self.play_mut(l, p)
                    && (play.playout.playing() || play.searching)
                {
                    let known = play.sources.iter().filter(|s| matches!(s, Src::Peer(_))).count();
                    let working = play.sched.working_peers(now_i);
                    if play.refresh.should_search(now_i, working, known) {
                        self.search(l, p);
                    }
                    self.at(self.now + PEER_CHECK, Ev::Refresh(l, p));
                }
            }
            Ev::TrackEnd(l, p) => self.track_end(l, p),
            Ev::Preload(l, p) => self.preload(l, p),
            Ev::Announce(l) => {
                if self.listeners[l as usize].online {
                    self.announce(l);
                    self.at(self.now + REANNOUNCE, Ev::Announce(l));
                }
            }
            Ev::AnnounceSoon(l) => {
                if self.listeners[l as usize].online {
                    self.announce(l);
                }
            }
            Ev::Sample => {
                self.timeline.push(Point { t_s: self.now / SEC, bytes: self.interval, online: self.online });
                self.interval = Bytes::default();
                self.at(self.now + us(self.cfg.sample).max(1), Ev::Sample);
            }
            Ev::Expire => {
                let now = self.tokio_now();
                for t in &mut self.trackers {
                    t.expire(now);
                }
                self.at(self.now + 30 * SEC, Ev::Expire);
            }
        }
    }

    fn play_mut(&mut self, l: u32, p: u64) -> Option<&mut Play> {
        self.listeners[l as usize].slot(p)
    }

    fn arrive(&mut self, l: u32) {
        let cfg = self.cfg;
        let li = &mut self.listeners[l as usize];
        li.online = true;
        li.connected_edge = false;
        let stay = match cfg.session {
            Session::Plays(n) => {
                li.plays_left = Some(n);
                None
            }
            Session::Mean(mean) => Some((-li.rng.unit().max(1e-12).ln() * us(mean) as f64) as Us),
        };
        let serving = li.up > 0 && cfg.p2p;
        self.online += 1;
        self.peak_online = self.peak_online.max(self.online);
        if let Some(stay) = stay {
            self.at(self.now + stay.max(SEC), Ev::Leave(l));
        }
        if serving {
            self.at(self.now + REANNOUNCE, Ev::Announce(l));
        }
        self.at(self.now, Ev::Open(l));
    }

    fn leave(&mut self, l: u32) {
        let li = &mut self.listeners[l as usize];
        if !li.online {
            return;
        }
        li.online = false;
        li.play = None;
        li.ahead = None;
        li.next = None;
        li.peers.clear();
        self.online -= 1;
    }

    /// Opens the next track of `l`'s session (or ends the session): the one its preload drew,
    /// else a new draw. A preload still running is cut short (what it fetched is in the cache).
    fn open(&mut self, l: u32) {
        let done = {
            let li = &self.listeners[l as usize];
            !li.online || li.plays_left == Some(0)
        };
        if done {
            self.leave(l);
            return;
        }
        if let Some(ahead) = self.listeners[l as usize].ahead.take() {
            for (_, f) in ahead.inflight {
                self.cancel(f);
            }
        }
        let (track, preloaded) = match self.listeners[l as usize].next.take() {
            Some(next) => next,
            None => (self.draw_track(l), Vec::new()),
        };
        let opened = self.now;
        let li = &mut self.listeners[l as usize];
        li.note_start(track, opened);
        // The manifest's round trip; the first request of a session also opens the connection.
        let mut first = li.rtt;
        if !li.connected_edge {
            first += li.rtt;
            li.connected_edge = true;
        }
        let mut play = self.new_play(l, track, None);
        play.preloaded = preloaded;
        let id = play.id;
        self.listeners[l as usize].play = Some(Box::new(play));
        self.plays += 1;
        self.begin(l, id, first);
    }

    fn draw_track(&mut self, l: u32) -> u32 {
        u32::try_from(self.zipf.sample(&mut self.listeners[l as usize].rng)).unwrap_or(0)
    }

    /// A new play of `track` by `l` (not yet in its slot): a scheduler that knows what the
    /// cache holds; for a preload (`plan`: when playback starts, and how much to fetch), one
    /// that starts at that time and stops after that much.
    fn new_play(&mut self, l: u32, track: u32, plan: Option<(Us, Duration)>) -> Play {
        let cfg = self.cfg;
        let n = usize::from(self.track_segments[track as usize]);
        let segment_secs = cfg.segment.as_secs_f64();
        let segments: Vec<SegmentInfo> = (0..n)
            .map(|_| SegmentInfo {
                duration: cfg.segment,
                sizes: cfg.ladder_bps.iter().map(|b| (*b as f64 * segment_secs / 8.0) as u64).collect(),
            })
            .collect();
        let mut sc = SchedulerConfig { quality: cfg.quality, ..SchedulerConfig::default() };
        if !cfg.play {
            sc.buffer_ahead = Duration::from_secs(86_400 * 365);
            sc.max_inflight = 4;
        }
        self.next_id += 1;
        let id = self.next_id;
        let opened = self.now;
        let mut sched = Scheduler::new(sc, cfg.ladder_bps.clone(), segments, 1, self.instant(opened));
        let li = &self.listeners[l as usize];
        for (k, r) in li.holding(track, n).iter().enumerate() {
            if *r > 0 {
                sched.set_cached(k, usize::from(*r - 1));
            }
        }
        // A preload stops after the segments covering its amount (as `Client::preload`).
        let mut upto = n;
        if let Some((at, amount)) = plan {
            sched.plan_start(self.instant(at));
            upto = (sched.segment_at(amount.saturating_sub(Duration::from_millis(1))) + 1).min(n);
        }
        if cfg.p2p {
            sched.set_awaiting_peers(true);
        }
        Play {
            id,
            track,
            sched,
            playout: Playout::new(upto, 8, true),
            sources: vec![Src::Edge(li.edge)],
            opened,
            wake: None,
            inflight: Vec::new(),
            searching: cfg.p2p,
            refresh: PeerRefresh::new(),
            preload: plan.is_some(),
            preloaded: Vec::new(),
        }
    }

    /// Play `p` of `l` starts once its manifest is in, `after` from now: its first poll, and
    /// its search for peers.
    fn begin(&mut self, l: u32, p: u64, after: Us) {
        let at = self.now + after;
        if let Some(play) = self.play_mut(l, p) {
            play.wake = Some(at);
        }
        self.at(at, Ev::Wake(l, p));
        if self.cfg.p2p {
            // The search starts once the manifest is in (the client opens the track first).
            self.at(at, Ev::Refresh(l, p));
        }
    }

    /// When 30 s of `l`'s play `p` are left, its next track's first 15 s are preloaded (as
    /// `Client::preload` is called by a player, and by bench/swarm.sh): peers first, the edge
    /// only for segments due within its window. Checked again later while stalls push the
    /// end back.
    fn preload(&mut self, l: u32, p: u64) {
        let Some(end) = self.listeners[l as usize].play.as_ref().filter(|pl| pl.id == p).and_then(|pl| self.end_of(pl))
        else {
            return;
        };
        let li = &self.listeners[l as usize];
        if !li.online || li.ahead.is_some() || li.next.is_some() || li.plays_left == Some(1) {
            return;
        }
        let starts_in = us(PRELOAD_STARTS_IN);
        if end > self.now + starts_in + SEC {
            self.at(end - starts_in, Ev::Preload(l, p));
            return;
        }
        let track = self.draw_track(l);
        let play = self.new_play(l, track, Some((end.max(self.now), PRELOAD_AMOUNT)));
        let id = play.id;
        let li = &mut self.listeners[l as usize];
        li.next = Some((track, Vec::new()));
        li.ahead = Some(Box::new(play));
        let rtt = li.rtt;
        self.preloads += 1;
        self.begin(l, id, rtt);
    }

    /// When play `pl`'s audio ends, as far as is known now.
    fn end_of(&self, pl: &Play) -> Option<Us> {
        pl.audio_end(self.cfg.segment, self.track_segments[pl.track as usize])
    }

    /// Asks the tracker of `l`'s edge for peers of its track, and dials what it lists.
    fn search(&mut self, l: u32, p: u64) {
        let (track, edge, rtt, open) = {
            let li = &self.listeners[l as usize];
            let Some(play) = li.slot_ref(p) else { return };
            // A preload and the play that follows each have a dial budget, as in the client.
            (play.track, li.edge, li.rtt, if play.preload { Open::Preload } else { Open::Play })
        };
        let tracker = if self.cfg.shared_tracker { 0 } else { edge };
        let now = self.tokio_now();
        let listed = self.trackers[tracker].peers(now, &self.track_ids[track as usize], &mut self.rng);
        self.queries += 1;
        let mut last = self.now + rtt;
        let mut asked = 0;
        for rec in listed {
            let Some(u) = rec.peer_id.strip_prefix('L').and_then(|n| n.parse::<u32>().ok()) else { continue };
            if u == l || asked >= ASK_AT_MOST || (u as usize) >= self.listeners.len() {
                continue;
            }
            asked += 1;
            let rtt_pp = self.rtt_between(l, u);
            let connected = self.listeners[l as usize].peers.contains(&u);
            let how = reach(self.listeners[l as usize].nat, self.listeners[u as usize].nat);
            if !connected && how == Reach::Never {
                self.peers_unreachable += 1;
                continue;
            }
            // Through the relay (the edges'): to it, the circuit with its handshakes (three
            // relayed round trips), DCUtR's exchange and sync (two), then the direct dial.
            let relayed = self.listeners[l as usize].rtt + self.listeners[u as usize].rtt;
            let meet = if how == Reach::Punched { 4 * self.listeners[l as usize].rtt + 5 * relayed } else { 0 };
            let (pid, addr) = (self.peer_ids[u as usize], self.addrs[u as usize].clone());
            let now_i = self.instant(self.now);
            let online = self.listeners[u as usize].online;
            let li = &mut self.listeners[l as usize];
            if !connected {
                // The client's dial guard decides, as for a real client.
                let usable = li.dials.usable(pid, std::slice::from_ref(&addr), now_i);
                if usable.is_empty() || !li.dials.admit(&self.track_ids[track as usize], open, pid, &usable, now_i) {
                    continue;
                }
                self.dials += 1;
                if how == Reach::Punched {
                    self.dials_punched += 1;
                }
                if online {
                    li.dials.succeeded(&addr);
                } else {
                    // A departed peer: the dial fails.
                    li.dials.failed(&addr, now_i);
                    continue;
                }
            } else if !online {
                li.peers.retain(|p| *p != u);
                continue;
            }
            // TCP (one round trip), noise XX (one and a half), multistream-select of noise and of
            // yamux: about four; then the have request on a new substream (negotiated, then
            // asked): two more.
            let dial = if connected { 0 } else { meet + 4 * rtt_pp };
            let at = self.now + rtt + dial + 2 * rtt_pp;
            last = last.max(at.min(self.now + rtt + LOOK));
            if at <= self.now + rtt + LOOK {
                self.at(at, Ev::Holds(l, p, u));
            }
        }
        if self.listeners[l as usize].slot_ref(p).is_some_and(|pl| pl.searching) {
            self.at(last, Ev::SearchDone(l, p));
        }
    }

    fn rtt_between(&self, a: u32, b: u32) -> Us {
        (self.listeners[a as usize].rtt + self.listeners[b as usize].rtt) / 2 + us(self.cfg.core_rtt)
    }

    /// Peer `u` answered `l`'s have request: it joins `l`'s play with what it holds.
    fn holds(&mut self, l: u32, p: u64, u: u32) {
        if !self.listeners[u as usize].online {
            return;
        }
        let Some(track) = self.listeners[l as usize].slot_ref(p).map(|pl| pl.track) else {
            return;
        };
        let n = usize::from(self.track_segments[track as usize]);
        let (li, up) = pair(&mut self.listeners, l as usize, u as usize);
        let held = up.holding(track, n);
        if !li.peers.contains(&u) {
            li.peers.push(u);
        }
        let Some(play) = li.slot(p) else { return };
        let sid = match play.sources.iter().position(|s| *s == Src::Peer(u)) {
            Some(i) => SourceId(i),
            None => {
                play.sources.push(Src::Peer(u));
                play.sched.add_source(SourceKind::Peer)
            }
        };
        for (k, r) in held.iter().enumerate() {
            if *r > 0 {
                play.sched.set_holds(sid, k, usize::from(*r - 1));
            }
        }
        self.step(l, p);
    }

    /// One turn of the driver loop for `l`'s play (or preload) `p`: poll, carry out, hand over.
    fn step(&mut self, l: u32, p: u64) {
        let now_i = self.instant(self.now);
        let mut fetches: Vec<(usize, usize, usize)> = Vec::new();
        let mut cancel: Vec<u64> = Vec::new();
        let mut failed = false;
        let preload;
        {
            let Some(play) = self.listeners[l as usize].slot(p) else { return };
            preload = play.preload;
            play.sched.set_limit(play.playout.fetch_limit(READ_AHEAD));
            for a in play.sched.poll(now_i) {
                match a {
                    Action::Fetch { segment, rendition, source, .. } => {
                        let from_edge = matches!(play.sources[source.0], Src::Edge(_));
                        if !play.playout.attempt(segment, from_edge) {
                            failed = true;
                            break;
                        }
                        fetches.push((segment, rendition, source.0));
                    }
                    Action::Cancel { segment, source } => {
                        if let Some(f) = play.take_inflight(segment, source.0) {
                            cancel.push(f);
                        }
                    }
                }
            }
        }
        for f in std::mem::take(&mut cancel) {
            self.cancel(f);
        }
        if failed {
            // The track gives up (the edge failed it too often); the listener moves on (a
            // preload just stops).
            if preload {
                self.listeners[l as usize].ahead = None;
            } else {
                self.at(self.now, Ev::TrackEnd(l, p));
            }
            return;
        }
        for (segment, rung, source) in fetches {
            self.start_fetch(l, p, segment, rung, source);
        }
        self.hand_over(l, p);
        let Some(play) = self.listeners[l as usize].slot(p) else { return };
        if let Some(w) = play.sched.next_wakeup(now_i) {
            let w = us(w.saturating_duration_since(self.base)).max(self.now + 1);
            if play.wake.is_none_or(|cur| w < cur || cur < self.now) {
                play.wake = Some(w);
                self.at(w, Ev::Wake(l, p));
            }
        }
    }

    /// Hands over what is ready, counting played bytes by source; at the end, schedules the
    /// track's end. A preload's segments go to the cache, not to a player: its bytes were
    /// counted as they arrived ([`World::preloaded`]); its hand-over only notes its start (the
    /// announce) and its end, which frees it.
    fn hand_over(&mut self, l: u32, p: u64) {
        let cfg = self.cfg;
        let mut first_out = false;
        let mut first_edge = 0;
        let mut counted = Bytes::default();
        let mut end = None;
        let (track, preload) = {
            let li = &mut self.listeners[l as usize];
            let Some(play) = li.slot(p) else { return };
            let (track, preload) = (play.track, play.preload);
            while let Some(o) = play.playout.take() {
                first_out |= o.index == 0;
                if preload {
                    continue;
                }
                let size = (cfg.ladder_bps[o.rung] as f64 * cfg.segment.as_secs_f64() / 8.0) as u64;
                match o.payload {
                    Via::Edge if o.index == 0 => {
                        counted.edge += size;
                        first_edge += size;
                    }
                    Via::Edge => counted.edge += size,
                    Via::Peer => counted.peer += size,
                    Via::Cache if play.preloaded.get(o.index) == Some(&true) => {}
                    Via::Cache => counted.cache += size,
                }
            }
            let finished = play.playout.at_end();
            if finished {
                play.playout.end_sent();
                if !preload {
                    // Played in real time, the track ends when its audio has played out;
                    // fetched as fast as possible, when its last segment is in.
                    let n = self.track_segments[track as usize];
                    let at = if cfg.play { play.audio_end(cfg.segment, n).unwrap_or(self.now) } else { self.now };
                    end = Some(at);
                }
            }
            if preload && finished {
                li.ahead = None;
            }
            (track, preload)
        };
        self.edge_first += first_edge;
        self.bytes.edge += counted.edge;
        self.bytes.peer += counted.peer;
        self.bytes.cache += counted.cache;
        self.interval.edge += counted.edge;
        self.interval.peer += counted.peer;
        self.interval.cache += counted.cache;
        if first_out {
            if preload {
                // The client names a preloaded track as played too (`Peer::play` at its
                // first segment).
                self.listeners[l as usize].note_start(track, self.now);
            } else if cfg.play && cfg.preload {
                let at = self.listeners[l as usize].play.as_ref().and_then(|pl| self.end_of(pl));
                if let Some(at) = at {
                    self.at(at.saturating_sub(us(PRELOAD_STARTS_IN)).max(self.now), Ev::Preload(l, p));
                }
            }
            if self.serving(l) {
                self.announce_playing(l, track);
            }
        }
        if let Some(at) = end {
            self.at(at.max(self.now), Ev::TrackEnd(l, p));
        }
    }

    fn serving(&self, l: u32) -> bool {
        self.cfg.p2p && self.listeners[l as usize].up > 0
    }

    fn start_fetch(&mut self, l: u32, p: u64, segment: usize, rung: usize, source: usize) {
        let cfg = self.cfg;
        let size = (cfg.ladder_bps[rung] as f64 * cfg.segment.as_secs_f64() / 8.0) as u64;
        let (track, src, rtt, down) = {
            let li = &self.listeners[l as usize];
            let Some(play) = li.slot_ref(p) else { return };
            (play.track, play.sources[source], li.rtt, li.down)
        };
        let n = usize::from(self.track_segments[track as usize]);
        let held = self.listeners[l as usize].holding(track, n).get(segment).copied() == Some(rung as u8 + 1);
        let (took, from, uploader) = if held {
            (MS, Some(Via::Cache), None)
        } else {
            match src {
                Src::Edge(e) => {
                    let chunk = chunk_id(track, segment, rung);
                    let edge = &mut self.edges[e];
                    edge.sketch.increment(&chunk);
                    edge.report.requests += 1;
                    edge.report.egress_bytes += size;
                    let mut took = rtt + transfer(size, down);
                    if edge.cache.get(&chunk).is_some() {
                        edge.report.hits += 1;
                    } else {
                        edge.report.origin_bytes += size;
                        took += us(cfg.origin_rtt) + transfer(size, cfg.origin_bps);
                        let _ = edge.cache.offer(chunk, Size(size), &edge.sketch);
                    }
                    (took, Some(Via::Edge), None)
                }
                Src::Peer(u) => {
                    let rtt_pp = self.rtt_between(l, u);
                    let up = &mut self.listeners[u as usize];
                    if !up.online {
                        self.peer_failures += 1;
                        (2 * rtt_pp, None, None)
                    } else if up.uploads >= cfg.max_uploads || up.up == 0 {
                        self.peer_failures += 1;
                        (rtt_pp, None, None)
                    } else {
                        up.uploads += 1;
                        let rate = (up.up / u64::from(up.uploads)).min(down).max(1);
                        // A request is a new substream: its protocol is negotiated first.
                        (2 * rtt_pp + transfer(size, rate), Some(Via::Peer), Some(u))
                    }
                }
            }
        };
        // A peer that holds the segment answers it; one that no longer does is not asked (the
        // scheduler only asks holders).
        let id = self.fetches.insert(Fetch {
            listener: l,
            play: p,
            segment,
            rung,
            source,
            bytes: size,
            started: self.now,
            from,
            uploader,
        });
        if let Some(play) = self.listeners[l as usize].slot(p) {
            play.inflight.retain(|(k, _)| *k != (segment, source));
            play.inflight.push(((segment, source), id));
        }
        self.at(self.now + took.max(1), Ev::Done(id));
    }

    /// A cancelled request: its upload slot is freed now; its answer will be ignored.
    fn cancel(&mut self, f: u64) {
        if let Some(fetch) = self.fetches.get_mut(f) {
            if let Some(u) = fetch.uploader.take() {
                let up = &mut self.listeners[u as usize];
                up.uploads = up.uploads.saturating_sub(1);
            }
            fetch.play = 0;
        }
    }

    fn done(&mut self, f: u64) {
        let Some(fetch) = self.fetches.remove(f) else { return };
        if let Some(u) = fetch.uploader {
            let up = &mut self.listeners[u as usize];
            up.uploads = up.uploads.saturating_sub(1);
        }
        let l = fetch.listener;
        let now_i = self.instant(self.now);
        let elapsed = Duration::from_micros(self.now - fetch.started);
        let mut cancels = Vec::new();
        let mut track = None;
        let mut preloaded = None;
        {
            let Some(play) = self.listeners[l as usize].slot(fetch.play) else { return };
            play.take_inflight(fetch.segment, fetch.source);
            let generation = play.playout.generation();
            if !play.playout.wanted(generation, fetch.segment) {
                return;
            }
            match fetch.from {
                Some(from) => {
                    for a in play.sched.on_complete(now_i, fetch.segment, SourceId(fetch.source), fetch.bytes, elapsed)
                    {
                        if let Action::Cancel { segment, source } = a
                            && let Some(c) = play.take_inflight(segment, source.0)
                        {
                            cancels.push(c);
                        }
                    }
                    play.playout.completed(fetch.segment, fetch.rung, from);
                    track = Some(play.track);
                    if play.preload && !matches!(from, Via::Cache) {
                        preloaded = Some(from);
                    }
                }
                None => play.sched.on_failed(now_i, fetch.segment, SourceId(fetch.source)),
            }
        }
        for c in cancels {
            self.cancel(c);
        }
        if let Some(track) = track {
            self.hold(l, track, fetch.segment, fetch.rung);
            if let Some(from) = preloaded {
                self.preloaded(l, track, fetch.segment, fetch.bytes, from);
            }
        }
        self.step(l, fetch.play);
    }

    /// A preload of `track` by `l` fetched `segment` (`bytes`) over the network: counted now,
    /// where it crossed the network (a preload cut short may never hand it over), and marked,
    /// so that the play does not count it again when it reads it from the cache.
    fn preloaded(&mut self, l: u32, track: u32, segment: usize, bytes: u64, from: Via) {
        let (total, pre, interval) = (&mut self.bytes, &mut self.preload_bytes, &mut self.interval);
        for b in [total, pre, interval] {
            match from {
                Via::Edge => b.edge += bytes,
                Via::Peer => b.peer += bytes,
                Via::Cache => {}
            }
        }
        if let Some((_, marks)) = self.listeners[l as usize].next.as_mut().filter(|(t, _)| *t == track) {
            if marks.len() <= segment {
                marks.resize(segment + 1, false);
            }
            marks[segment] = true;
        }
    }

    /// `l`'s cache now holds a segment of `track` (the client stores what it verified).
    fn hold(&mut self, l: u32, track: u32, segment: usize, rung: usize) {
        let n = usize::from(self.track_segments[track as usize]);
        let li = &mut self.listeners[l as usize];
        // A track held from before starts as all it held.
        let before = if li.warm.binary_search(&track).is_ok() { li.warm_rung } else { 0 };
        let h = li.held.entry(track).or_insert_with(|| {
            li.held_order.push(track);
            vec![before; n]
        });
        if let Some(s) = h.get_mut(segment) {
            *s = u8::try_from(rung + 1).unwrap_or(u8::MAX);
        }
    }

    fn track_end(&mut self, l: u32, p: u64) {
        let Some(play) = self.listeners[l as usize].play.take_if(|pl| pl.id == p) else { return };
        let stats = play.sched.stats();
        if let Some(s) = stats.startup {
            self.startups.push(u64::try_from(s.as_millis()).unwrap_or(u64::MAX));
            // Against the target: within two round trips to the edge plus 10 ms.
            let budget = 2 * self.listeners[l as usize].rtt + 10 * MS;
            self.over_budget.push(i64::try_from(us(s)).unwrap_or(i64::MAX) - i64::try_from(budget).unwrap_or(0));
        }
        self.stalls += u64::from(stats.stalls);
        self.completed += 1;
        if play.sources.len() == 1 {
            self.lonely += 1;
        }
        // No announce here: the client announces a track's end only when it did not at its
        // first segment, which every completed play handed over.
        let li = &mut self.listeners[l as usize];
        if let Some(n) = li.plays_left.as_mut() {
            *n = n.saturating_sub(1);
        }
        self.at(self.now, Ev::Open(l));
    }

    /// Fills each listener's cache with `SimConfig::warm_tracks` tracks drawn from the
    /// popularity of plays (by a sequence of its own, so that cold runs stay as they were), at
    /// the highest rung its downlink takes twice over.
    fn warm_up(&mut self) {
        let want = self.cfg.warm_tracks.min(self.cfg.tracks / 2);
        if want == 0 {
            return;
        }
        let ladder = &self.cfg.ladder_bps;
        for (n, li) in self.listeners.iter_mut().enumerate() {
            let mut r = Rng(self.cfg.seed.wrapping_mul(0xA076_1D64_78BD_642F)
                ^ (n as u64).wrapping_mul(0xE703_7ED1_A0B4_28DB)
                | 1);
            let mut warm = std::collections::BTreeSet::new();
            while warm.len() < want {
                warm.insert(u32::try_from(self.zipf.sample(&mut r)).unwrap_or(0));
            }
            li.warm = warm.into_iter().collect();
            let rung = ladder.iter().rposition(|b| *b * 2 <= li.down * 8).unwrap_or(0);
            li.warm_rung = u8::try_from(rung + 1).unwrap_or(1);
        }
    }

    /// `l` tells its tracker that it plays `track` now (the client, once the first segment of
    /// a play or a preload is handed over).
    fn announce_playing(&mut self, l: u32, track: u32) {
        self.send_announce(l, vec![track], Vec::new(), Vec::new());
    }

    /// `l`'s round of announces: what its `Holdings` plans (the track it plays, then its cache,
    /// newest first, then what it held from before).
    fn announce(&mut self, l: u32) {
        if !self.serving(l) {
            return;
        }
        let now_i = self.instant(self.now);
        let li = &self.listeners[l as usize];
        // The tracks started within PLAYED_FOR that it holds some of, the latest first.
        let since = self.now.saturating_sub(us(PLAYED_FOR));
        let playing: Vec<u32> =
            li.started.iter().filter(|(t, at)| *at > since && li.held.contains_key(t)).map(|(t, _)| *t).collect();
        let mut holds: Vec<u32> = li.held_order.iter().rev().copied().collect();
        holds.extend(li.warm.iter().filter(|t| !li.held.contains_key(t)));
        let plan = li.holdings.plan(now_i, &playing, &holds);
        if plan.tracks.is_empty() && plan.held.is_empty() && plan.dropped.is_empty() && holds.is_empty() {
            return;
        }
        let more = plan.more;
        let unlisted = self.send_announce(l, plan.tracks.clone(), plan.held.clone(), plan.dropped.clone());
        if let Some(unlisted) = unlisted {
            self.listeners[l as usize].holdings.taken(now_i, &plan, &unlisted, &[]);
            if more {
                self.at(self.now + us(SOON), Ev::AnnounceSoon(l));
            }
        }
    }

    /// One announce of `l` to its edge's tracker; the held tracks it did not list, when it
    /// took the announce.
    fn send_announce(&mut self, l: u32, tracks: Vec<u32>, held: Vec<u32>, dropped: Vec<u32>) -> Option<Vec<u32>> {
        let tracker = if self.cfg.shared_tracker { 0 } else { self.listeners[l as usize].edge };
        let now = self.tokio_now();
        let li = &mut self.listeners[l as usize];
        li.announces += 1;
        let ids = |l: &[u32]| -> Vec<TrackId> { l.iter().map(|t| self.track_ids[*t as usize].clone()).collect() };
        let names = (tracks.len() + held.len() + dropped.len()) as u64;
        let ip = IpAddr::V4(li.ip);
        // A later announce of the peer carries a later time: simulated milliseconds.
        let ann = Verified::assume(
            format!("L{l}"),
            vec![format!("/ip4/{ip}/tcp/4001")],
            ids(&tracks),
            self.now / MS + li.announces,
        )
        .with_cache(ids(&held), ids(&dropped));
        let t = &mut self.trackers[tracker];
        if t.admit(now, ip).is_err() {
            return None;
        }
        let unlisted = t.record(now, ip, ann).ok()?;
        self.announces += 1;
        self.announced_names += names;
        Some(held.into_iter().filter(|h| unlisted.contains(&self.track_ids[*h as usize])).collect())
    }

    fn report(self) -> Report {
        let mut startups = self.startups;
        startups.sort_unstable();
        let pct = |p: f64| -> u64 {
            if startups.is_empty() { 0 } else { startups[((startups.len() - 1) as f64 * p).round() as usize] }
        };
        let mut over = self.over_budget;
        over.sort_unstable();
        let over_p50_ms = if over.is_empty() { 0.0 } else { over[over.len() / 2] as f64 / MS as f64 };
        let secs = (self.now as f64 / SEC as f64).max(1.0);
        let edges = self
            .edges
            .into_iter()
            .map(|e| {
                let mut r = e.report;
                r.hit_ratio = if r.requests == 0 { 0.0 } else { r.hits as f64 / r.requests as f64 };
                r
            })
            .collect();
        Report {
            plays: self.plays,
            plays_completed: self.completed,
            preloads: self.preloads,
            preload_bytes: self.preload_bytes,
            plays_without_peers: self.lonely,
            edge_first_segment_bytes: self.edge_first,
            bytes: self.bytes,
            edge_share: self.bytes.edge_share(),
            timeline: self.timeline,
            edges,
            announces: self.announces,
            announced_names: self.announced_names,
            announced_names_per_sec: self.announced_names as f64 / secs,
            queries: self.queries,
            tracker_ops_per_sec: (self.announces + self.queries) as f64 / secs,
            dials_per_play: if self.plays == 0 { 0.0 } else { self.dials as f64 / self.plays as f64 },
            dials_punched: self.dials_punched,
            peers_unreachable: self.peers_unreachable,
            startup_ms: Percentiles { p50: pct(0.5), p95: pct(0.95), p99: pct(0.99) },
            startup_over_2rtt_plus_10ms_p50: over_p50_ms,
            stalls_per_100_plays: if self.completed == 0 {
                0.0
            } else {
                100.0 * self.stalls as f64 / self.completed as f64
            },
            peer_failures: self.peer_failures,
            events: self.events,
            peak_online: self.peak_online,
        }
    }
}

/// Two distinct listeners, both mutable.
fn pair(v: &mut [Listener], a: usize, b: usize) -> (&mut Listener, &Listener) {
    if a < b {
        let (x, y) = v.split_at_mut(b);
        (&mut x[a], &y[0])
    } else {
        let (x, y) = v.split_at_mut(a);
        (&mut y[0], &x[b])
    }
}

fn us(d: Duration) -> Us {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds to move `bytes` at `rate` bytes/s.
fn transfer(bytes: u64, rate: u64) -> Us {
    bytes.saturating_mul(SEC) / rate.max(1)
}
