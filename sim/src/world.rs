//! The simulated world's listeners: a partition of them, with its own queue of timed events
//! (`par.rs` runs the partitions and the hub, `hub.rs`, side by side).
//!
//! Time is microseconds since the start of the run; the real code gets it as
//! `base + that` (a `std::time::Instant`, or tokio's for the tracker), so it runs unchanged.
//! A listener's own state is touched by its own events only; whatever it learns of the edge,
//! the tracker or another listener comes as mail (`mail.rs`), which takes its share of their
//! round trip: a question is answered with the state of the one asked when it arrives.
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
//!   cache, whole, drawn from the popularity of plays. A seeder (`SimConfig::seeders`) arrives
//!   at the start holding every track, announces at once, stays to the end and never plays.
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
//!   what it holds on a new substream (two more: negotiation, then the request); the peer
//!   answers with what it holds when the request reaches it (half a round trip before the
//!   answer is back; a departed peer's dial fails then); each answer joins the scheduler as it
//!   arrives, and the search ends after the last (2 s at most, as in the client). The search runs again when the client's own
//!   `refresh::PeerRefresh` says so (checked every 5 s while the track is being fetched).
//! - **Behind NATs** (`SimConfig::behind_cone`, `behind_symmetric`): a peer behind an
//!   endpoint-independent NAT is met through the edge's relay first (four round trips to the
//!   relay, three relayed ones for the circuit and two for DCUtR, a relayed one being the sum
//!   of both listeners' round trips to their edges), then dialled directly; one behind a
//!   symmetric NAT is reached that way by listeners with public addresses only (the
//!   connection reversed), and by no one else. A pair that cannot connect is not dialled:
//!   chunks never cross the relay, as in the client.
//! - **An edge request** takes the listener's round trip plus the size over its downlink; a
//!   miss in the edge's cache adds the origin's round trip and transfer (the edge's cache and
//!   the tracker see a request or an announce half a round trip after it left: `hub.rs`).
//! - **A peer request** takes two round trips between the two (a new substream negotiates its
//!   protocol, then asks) plus the size over the smaller of
//!   the listener's downlink and the uploader's uplink shared by its uploads when the request
//!   reaches it (after the negotiation: a round trip and a half after it left; the uploader's
//!   state is read half a round trip after), which holds an upload slot from then until its
//!   last byte leaves; an uploader with all its upload slots busy answers BUSY after a round trip,
//!   a departed one fails after two. A cancel frees the slot when it reaches the uploader.
//! - **The listener's own cache** answers in 1 ms (as the client reports it).
//!
//! One file of ~1 170 lines, past the usual ~600, on purpose: it is one idea, the event loop of
//! a partition of listeners. Its handlers (arrive, open, preload, search, step, fetch, done,
//! announce, serve, leave) all act on the same listeners, plays, fetches and counters and call
//! one another's helpers; split by handler, every file would need all of that state, and a
//! reader would follow one event across several files. What stands alone is elsewhere: the
//! deterministic draws and ids in `draw.rs` (on `chorus-draw`), the event queue in `queue.rs`,
//! the fetches' table in `slab.rs`, what no one changes (each listener's place on the
//! network, the catalogue) and the draws of a run's setup in `ctx.rs`, the messages in
//! `mail.rs`, the edges and trackers in
//! `hub.rs`, the windows and threads in `par.rs`, the report's types and percentiles in
//! `lib.rs`, the charts in `svg.rs`; the real scheduler, playout, dial guard, cache tier and
//! tracker come from their crates.

use std::time::{Duration, Instant};

use chorus_client::dials::{Dials, Open};
use chorus_client::playout::Playout;
use chorus_client::refresh::{self, PeerRefresh};
use chorus_client::scheduler::{Action, Scheduler, SchedulerConfig, SegmentInfo, SourceId, SourceKind};
use chorus_core::holdings::{Holdings, MAX_PLAYED, PLAYED_FOR, Plan, SOON};

use crate::ctx::{Ctx, MS, Reach, SEC, reach, transfer, us, version};
use crate::draw::{HashMap, Rng};
use crate::mail::{Held, Mail, Msg};
use crate::queue::Queue;
use crate::slab::Slab;
use crate::{Bytes, Point, Session, Us};

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

/// Where a source of a play is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    Edge(u32),
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

pub(crate) struct Listener {
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
    /// The announce awaiting the tracker's answer.
    announcing: Option<Box<Plan<u32>>>,
    /// Tracks it started, the latest first, with when (at most `MAX_PLAYED`).
    started: Vec<(u32, Us)>,
    /// The uploads it serves; those past their end are dropped when the next request comes.
    uploads: Vec<Upload>,
    peers: Vec<u32>,
    /// The client's dial guard: new dials per track and period, backoff of failed addresses
    /// (while it is online).
    dials: Option<Box<Dials>>,
    play: Option<Box<Play>>,
    /// The preload of the next track, while it runs.
    ahead: Option<Box<Play>>,
    /// The next track, drawn when its preload started, and the segments the preload fetched
    /// over the network.
    next: Option<(u32, Vec<bool>)>,
    announces: u64,
    rng: Rng,
}

/// An upload a listener serves.
struct Upload {
    /// To whom, and for which of its fetches.
    to: u32,
    fetch: u64,
    /// From when the request reached the uploader to when its last byte leaves: it holds an
    /// upload slot in between.
    from: Us,
    until: Us,
}

impl Play {
    /// Takes the fetch in flight for `segment` from `source`, if any.
    fn take_inflight(&mut self, segment: usize, source: usize) -> Option<u64> {
        let at = self.inflight.iter().position(|(k, _)| *k == (segment, source))?;
        Some(self.inflight.swap_remove(at).1)
    }

    /// When its audio ends (`n` segments of `segment`), as far as is known now: its startup,
    /// media and stalls so far; `None` before its first segment is out.
    fn audio_end(&self, segment: Duration, n: usize) -> Option<Us> {
        let stats = self.sched.stats();
        let startup = stats.startup?;
        Some(self.opened + us(startup + segment * u32::try_from(n).unwrap_or(u32::MAX) + stats.stalled))
    }
}

impl Listener {
    /// A listener yet to arrive, with its own draws, and `warm` held from before at `warm_rung`.
    pub(crate) fn new(rng: Rng, warm: Vec<u32>, warm_rung: u8) -> Self {
        Self {
            online: false,
            connected_edge: false,
            plays_left: None,
            held: HashMap::default(),
            held_order: Vec::new(),
            warm,
            warm_rung,
            holdings: Holdings::default(),
            announcing: None,
            started: Vec::new(),
            uploads: Vec::new(),
            peers: Vec::new(),
            dials: None,
            play: None,
            ahead: None,
            next: None,
            announces: 0,
            rng,
        }
    }

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

    /// What it holds of `track`.
    fn holding(&self, track: u32) -> Held {
        if let Some(h) = self.held.get(&track) {
            return Held::Some(h.clone());
        }
        if self.warm.binary_search(&track).is_ok() {
            return Held::Whole(self.warm_rung);
        }
        Held::None
    }

    /// The rung + 1 it holds of `segment` of `track` (0: none).
    fn holds_segment(&self, track: u32, segment: usize) -> u8 {
        if let Some(h) = self.held.get(&track) {
            return h.get(segment).copied().unwrap_or(0);
        }
        if self.warm.binary_search(&track).is_ok() { self.warm_rung } else { 0 }
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
    /// The peer asked, until the fetch is cancelled.
    peer: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ev {
    Arrive(u32),
    Leave(u32),
    Open(u32),
    Wake(u32, u64),
    /// A fetch from the listener's own cache is in.
    Done(u64),
    SearchDone(u32, u64),
    Refresh(u32, u64),
    TrackEnd(u32, u64),
    /// 30 s of play `p` are left: the listener preloads its next track.
    Preload(u32, u64),
    Announce(u32),
    /// One more announce soon, while a large cache goes in (no next period of its own).
    AnnounceSoon(u32),
    /// Mail (by its id in the partition's table).
    Mail(u64),
    Sample,
}

/// What a partition counted.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) bytes: Bytes,
    interval: Bytes,
    pub(crate) timeline: Vec<Point>,
    pub(crate) plays: u64,
    pub(crate) preloads: u64,
    pub(crate) preload_bytes: Bytes,
    pub(crate) completed: u64,
    pub(crate) lonely: u64,
    pub(crate) edge_first: u64,
    pub(crate) startups: Vec<u64>,
    /// Per started play: startup minus (2 × the listener's round trip + 10 ms), µs.
    pub(crate) over_budget: Vec<i64>,
    pub(crate) stalls: u64,
    pub(crate) dials: u64,
    pub(crate) dials_punched: u64,
    pub(crate) peers_unreachable: u64,
    pub(crate) peer_failures: u64,
    pub(crate) events: u64,
    pub(crate) online: usize,
}

/// A partition of the listeners: those `l` with `l % parts == index`.
pub(crate) struct Part<'a> {
    ctx: &'a Ctx<'a>,
    parts: u32,
    now: Us,
    /// The end of the window it runs through: what it sends arrives no earlier.
    until: Us,
    queue: Queue<Ev>,
    /// Its listeners, `l` at `l / parts`.
    listeners: Vec<Listener>,
    fetches: Slab<Fetch>,
    mail: Slab<Msg>,
    out: Vec<Mail>,
    next_id: u64,
    pub(crate) tally: Tally,
}

impl<'a> Part<'a> {
    pub(crate) fn new(ctx: &'a Ctx<'a>, parts: u32) -> Self {
        let mut queue = Queue::new();
        queue.push(us(ctx.cfg.sample).max(1), Ev::Sample);
        Self {
            ctx,
            parts: parts.max(1),
            now: 0,
            until: 0,
            queue,
            listeners: Vec::new(),
            fetches: Slab::default(),
            mail: Slab::default(),
            out: Vec::new(),
            next_id: 0,
            tally: Tally::default(),
        }
    }

    /// Takes listener `l` (the next of this partition's, in order), arriving at `at`.
    pub(crate) fn adopt(&mut self, l: u32, li: Listener, at: Us) {
        debug_assert_eq!(l / self.parts, u32::try_from(self.listeners.len()).unwrap_or(u32::MAX));
        self.listeners.push(li);
        self.at(at, Ev::Arrive(l));
    }

    /// Runs through the window that ends at `until`, with `inbox` delivered first (in
    /// [`crate::mail::canonical`] order); returns what it sent.
    pub(crate) fn window(&mut self, until: Us, inbox: Vec<Mail>) -> Vec<Mail> {
        self.until = until;
        for m in inbox {
            let id = self.mail.insert(m.msg);
            self.queue.push(m.at, Ev::Mail(id));
        }
        while let Some((t, ev)) = self.queue.pop_before(until) {
            self.now = t;
            self.tally.events += 1;
            self.handle(ev);
        }
        std::mem::take(&mut self.out)
    }

    pub(crate) fn next_at(&mut self) -> Option<Us> {
        self.queue.next_at()
    }

    /// The time of its last event.
    pub(crate) const fn now(&self) -> Us {
        self.now
    }

    fn li(&mut self, l: u32) -> &mut Listener {
        &mut self.listeners[(l / self.parts) as usize]
    }

    fn li_ref(&self, l: u32) -> &Listener {
        &self.listeners[(l / self.parts) as usize]
    }

    fn at(&mut self, t: Us, ev: Ev) {
        self.queue.push(t, ev);
    }

    /// Sends `msg` from `from`, to arrive at `at` (never within the window it is sent in).
    fn send(&mut self, from: u32, at: Us, msg: Msg) {
        self.out.push(Mail { at: at.max(self.until), from, msg });
    }

    fn instant(&self, t: Us) -> Instant {
        self.ctx.instant(t)
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
                if self.li_ref(l).online {
                    self.announce(l);
                    self.at(self.now + REANNOUNCE, Ev::Announce(l));
                }
            }
            Ev::AnnounceSoon(l) => {
                if self.li_ref(l).online {
                    self.announce(l);
                }
            }
            Ev::Mail(id) => {
                if let Some(msg) = self.mail.remove(id) {
                    self.deliver(msg);
                }
            }
            Ev::Sample => {
                let t = &mut self.tally;
                // Every partition samples: not an event of the model.
                t.events -= 1;
                t.timeline.push(Point { t_s: self.now / SEC, bytes: t.interval, online: t.online });
                t.interval = Bytes::default();
                self.at(self.now + us(self.ctx.cfg.sample).max(1), Ev::Sample);
            }
        }
    }

    fn deliver(&mut self, msg: Msg) {
        match msg {
            Msg::Fetched { fetch, .. } => self.done(fetch),
            Msg::Served { fetch, ok, .. } => {
                if let Some(f) = self.fetches.get_mut(fetch) {
                    f.from = ok.then_some(Via::Peer);
                }
                self.done(fetch);
            }
            Msg::Listed { l, p, peers } => self.listed(l, p, &peers),
            Msg::Taken { l, unlisted } => self.taken(l, unlisted),
            Msg::Have { u, l, p, track, dialled, join, answer_at } => {
                let up = self.li_ref(u);
                let (online, held) = if up.online { (true, up.holding(track)) } else { (false, Held::None) };
                self.send(u, answer_at, Msg::Holds { l, p, u, online, dialled, join, held });
            }
            Msg::Holds { l, p, u, online, dialled, join, held } => self.holds(l, p, u, online, dialled, join, &held),
            Msg::Request { u, l, fetch, size, sent } => self.serve(u, l, fetch, size, sent),
            Msg::Cancel { u, l, fetch } => self.li(u).uploads.retain(|k| (k.to, k.fetch) != (l, fetch)),
            // Not for a listener.
            Msg::EdgeGet { .. } | Msg::Query { .. } | Msg::Announce { .. } => {}
        }
    }

    fn play_mut(&mut self, l: u32, p: u64) -> Option<&mut Play> {
        self.li(l).slot(p)
    }

    fn arrive(&mut self, l: u32) {
        let cfg = self.ctx.cfg;
        let serving = self.serving(l);
        let li = self.li(l);
        li.online = true;
        li.connected_edge = false;
        li.dials = Some(Box::new(Dials::with_table(64)));
        if (l as usize) < cfg.seeders {
            // A seeder: online to the end, announcing what it holds at once, never playing.
            self.tally.online += 1;
            if serving {
                self.at(self.now, Ev::Announce(l));
            }
            return;
        }
        let stay = match cfg.session {
            Session::Plays(n) => {
                li.plays_left = Some(n);
                None
            }
            Session::Mean(mean) => Some((-li.rng.unit().max(1e-12).ln() * us(mean) as f64) as Us),
        };
        self.tally.online += 1;
        if let Some(stay) = stay {
            self.at(self.now + stay.max(SEC), Ev::Leave(l));
        }
        if serving {
            self.at(self.now + REANNOUNCE, Ev::Announce(l));
        }
        self.at(self.now, Ev::Open(l));
    }

    fn leave(&mut self, l: u32) {
        let li = self.li(l);
        if !li.online {
            return;
        }
        // A listener leaves for good: what it held and knew goes (a departed listener only
        // answers that it is gone), so that memory follows the listeners online.
        *li = Listener::new(li.rng.clone(), Vec::new(), 0);
        self.tally.online -= 1;
    }

    /// Opens the next track of `l`'s session (or ends the session): the one its preload drew,
    /// else a new draw. A preload still running is cut short (what it fetched is in the cache).
    fn open(&mut self, l: u32) {
        let done = {
            let li = self.li_ref(l);
            !li.online || li.plays_left == Some(0)
        };
        if done {
            self.leave(l);
            return;
        }
        if let Some(ahead) = self.li(l).ahead.take() {
            for (_, f) in ahead.inflight {
                self.cancel(f);
            }
        }
        let (track, preloaded) = match self.li(l).next.take() {
            Some(next) => next,
            None => (self.draw_track(l), Vec::new()),
        };
        let opened = self.now;
        let rtt = self.ctx.stat(l).rtt;
        let li = self.li(l);
        li.note_start(track, opened);
        // The manifest's round trip; the first request of a session also opens the connection.
        let mut first = rtt;
        if !li.connected_edge {
            first += rtt;
            li.connected_edge = true;
        }
        let mut play = self.new_play(l, track, None);
        play.preloaded = preloaded;
        let id = play.id;
        self.li(l).play = Some(Box::new(play));
        self.tally.plays += 1;
        self.begin(l, id, first);
    }

    fn draw_track(&mut self, l: u32) -> u32 {
        let zipf = &self.ctx.zipf;
        u32::try_from(zipf.sample(&mut self.li(l).rng)).unwrap_or(0)
    }

    /// A new play of `track` by `l` (not yet in its slot): a scheduler that knows what the
    /// cache holds; for a preload (`plan`: when playback starts, and how much to fetch), one
    /// that starts at that time and stops after that much.
    fn new_play(&mut self, l: u32, track: u32, plan: Option<(Us, Duration)>) -> Play {
        let cfg = self.ctx.cfg;
        let n = self.ctx.segments(track);
        let segments: Vec<SegmentInfo> =
            (0..n).map(|_| SegmentInfo { duration: cfg.segment, sizes: self.ctx.sizes.clone() }).collect();
        let mut sc = SchedulerConfig { quality: cfg.quality, ..SchedulerConfig::default() };
        if !cfg.play {
            sc.buffer_ahead = Duration::from_secs(86_400 * 365);
            sc.max_inflight = 4;
        }
        self.next_id += 1;
        let id = self.next_id;
        let opened = self.now;
        let mut sched = Scheduler::new(sc, cfg.ladder_bps.clone(), segments, 1, self.instant(opened));
        let li = self.li_ref(l);
        li.holding(track).each(n, |k, r| sched.set_cached(k, r));
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
            sources: vec![Src::Edge(self.ctx.stat(l).edge)],
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
        if self.ctx.cfg.p2p {
            // The search starts once the manifest is in (the client opens the track first).
            self.at(at, Ev::Refresh(l, p));
        }
    }

    /// When 30 s of `l`'s play `p` are left, its next track's first 15 s are preloaded (as
    /// `Client::preload` is called by a player, and by bench/swarm.sh): peers first, the edge
    /// only for segments due within its window. Checked again later while stalls push the
    /// end back.
    fn preload(&mut self, l: u32, p: u64) {
        let Some(end) = self.li_ref(l).play.as_ref().filter(|pl| pl.id == p).and_then(|pl| self.end_of(pl)) else {
            return;
        };
        let li = self.li_ref(l);
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
        let rtt = self.ctx.stat(l).rtt;
        let li = self.li(l);
        li.next = Some((track, Vec::new()));
        li.ahead = Some(Box::new(play));
        self.tally.preloads += 1;
        self.begin(l, id, rtt);
    }

    /// When play `pl`'s audio ends, as far as is known now.
    fn end_of(&self, pl: &Play) -> Option<Us> {
        pl.audio_end(self.ctx.cfg.segment, self.ctx.segments(pl.track))
    }

    /// Asks the tracker for peers of `l`'s track; what it lists is dialled when the answer
    /// is in ([`Part::listed`]).
    fn search(&mut self, l: u32, p: u64) {
        let Some(track) = self.li_ref(l).slot_ref(p).map(|pl| pl.track) else { return };
        let rtt = self.ctx.stat(l).rtt;
        self.send(l, self.now + rtt / 2, Msg::Query { l, p, track, sent: self.now });
    }

    /// The tracker listed `peers` for `l`'s play `p`: each that the dial guard admits is
    /// dialled (unless connected already) and asked what it holds.
    fn listed(&mut self, l: u32, p: u64, peers: &[u32]) {
        let ctx = self.ctx;
        let (track, open) = {
            let li = self.li_ref(l);
            let Some(play) = li.slot_ref(p) else { return };
            // A preload and the play that follows each have a dial budget, as in the client.
            (play.track, if play.preload { Open::Preload } else { Open::Play })
        };
        let me = *ctx.stat(l);
        let mut last = self.now;
        let mut asked = 0;
        for &u in peers {
            if u == l || asked >= ASK_AT_MOST || (u as usize) >= ctx.stats.len() {
                continue;
            }
            asked += 1;
            let rtt_pp = ctx.rtt_between(l, u);
            let them = ctx.stat(u);
            let connected = self.li_ref(l).peers.contains(&u);
            let how = reach(me.nat, them.nat);
            if !connected && how == Reach::Never {
                self.tally.peers_unreachable += 1;
                continue;
            }
            // Through the relay (the edges'): to it, the circuit with its handshakes (three
            // relayed round trips), DCUtR's exchange and sync (two), then the direct dial.
            let relayed = me.rtt + them.rtt;
            let meet = if how == Reach::Punched { 4 * me.rtt + 5 * relayed } else { 0 };
            let now_i = self.instant(self.now);
            if !connected {
                // The client's dial guard decides, as for a real client.
                let (pid, addr) = (ctx.peer_ids[u as usize], &ctx.addrs[u as usize]);
                let Some(dials) = self.li(l).dials.as_deref_mut() else { return };
                let usable = dials.usable(pid, std::slice::from_ref(addr), now_i);
                if usable.is_empty() || !dials.admit(&ctx.track_ids[track as usize], open, pid, &usable, now_i) {
                    continue;
                }
                self.tally.dials += 1;
                if how == Reach::Punched {
                    self.tally.dials_punched += 1;
                }
            }
            // TCP (one round trip), noise XX (one and a half), multistream-select of noise and of
            // yamux: about four; then the have request on a new substream (negotiated, then
            // asked): two more.
            let dial = if connected { 0 } else { meet + 4 * rtt_pp };
            let at = self.now + dial + 2 * rtt_pp;
            let join = at <= self.now + LOOK;
            last = last.max(at.min(self.now + LOOK));
            let have = Msg::Have { u, l, p, track, dialled: !connected, join, answer_at: at };
            self.send(l, at - rtt_pp / 2, have);
        }
        if self.li_ref(l).slot_ref(p).is_some_and(|pl| pl.searching) {
            self.at(last, Ev::SearchDone(l, p));
        }
    }

    /// Peer `u` answered `l`'s have request (`online`: it was there to): a new connection is
    /// noted by the dial guard, and in time for the search, the peer joins `l`'s play with
    /// what it holds.
    #[allow(clippy::too_many_arguments)] // one message's fields
    fn holds(&mut self, l: u32, p: u64, u: u32, online: bool, dialled: bool, join: bool, held: &Held) {
        let now_i = self.instant(self.now);
        let ctx = self.ctx;
        let addr = &ctx.addrs[u as usize];
        let li = self.li(l);
        if dialled && let Some(dials) = li.dials.as_deref_mut() {
            if online {
                dials.succeeded(addr);
            } else {
                // A departed peer: the dial fails.
                dials.failed(addr, now_i);
            }
        }
        if !online {
            li.peers.retain(|p| *p != u);
            return;
        }
        if !join || li.slot_ref(p).is_none() {
            return;
        }
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
        held.each(ctx.segments(play.track), |k, r| play.sched.set_holds(sid, k, r));
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
            let Some(play) = self.li(l).slot(p) else { return };
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
                self.li(l).ahead = None;
            } else {
                self.at(self.now, Ev::TrackEnd(l, p));
            }
            return;
        }
        for (segment, rung, source) in fetches {
            self.start_fetch(l, p, segment, rung, source);
        }
        self.hand_over(l, p);
        let (now, base) = (self.now, self.ctx.base);
        let Some(play) = self.li(l).slot(p) else { return };
        if let Some(w) = play.sched.next_wakeup(now_i) {
            let w = us(w.saturating_duration_since(base)).max(now + 1);
            if play.wake.is_none_or(|cur| w < cur || cur < now) {
                play.wake = Some(w);
                self.at(w, Ev::Wake(l, p));
            }
        }
    }

    /// Hands over what is ready, counting played bytes by source; at the end, schedules the
    /// track's end. A preload's segments go to the cache, not to a player: its bytes were
    /// counted as they arrived ([`Part::preloaded`]); its hand-over only notes its start (the
    /// announce) and its end, which frees it.
    fn hand_over(&mut self, l: u32, p: u64) {
        let ctx = self.ctx;
        let cfg = ctx.cfg;
        let mut first_out = false;
        let mut first_edge = 0;
        let mut counted = Bytes::default();
        let mut end = None;
        let now = self.now;
        let (track, preload) = {
            let li = self.li(l);
            let Some(play) = li.slot(p) else { return };
            let (track, preload) = (play.track, play.preload);
            while let Some(o) = play.playout.take() {
                first_out |= o.index == 0;
                if preload {
                    continue;
                }
                let size = ctx.size(o.rung);
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
                    let at =
                        if cfg.play { play.audio_end(cfg.segment, ctx.segments(track)).unwrap_or(now) } else { now };
                    end = Some(at);
                }
            }
            if preload && finished {
                li.ahead = None;
            }
            (track, preload)
        };
        let t = &mut self.tally;
        t.edge_first += first_edge;
        t.bytes += counted;
        t.interval += counted;
        if first_out {
            if preload {
                // The client names a preloaded track as played too (`Peer::play` at its
                // first segment).
                self.li(l).note_start(track, now);
            } else if cfg.play && cfg.preload {
                let at = self.li_ref(l).play.as_ref().and_then(|pl| self.end_of(pl));
                if let Some(at) = at {
                    self.at(at.saturating_sub(us(PRELOAD_STARTS_IN)).max(now), Ev::Preload(l, p));
                }
            }
            if self.serving(l) {
                self.announce_playing(l, track);
            }
        }
        if let Some(at) = end {
            self.at(at.max(now), Ev::TrackEnd(l, p));
        }
    }

    fn serving(&self, l: u32) -> bool {
        self.ctx.cfg.p2p && self.ctx.stat(l).up > 0
    }

    fn start_fetch(&mut self, l: u32, p: u64, segment: usize, rung: usize, source: usize) {
        let ctx = self.ctx;
        let size = ctx.size(rung);
        let Some((track, src)) = self.li_ref(l).slot_ref(p).map(|play| (play.track, play.sources[source])) else {
            return;
        };
        let held = self.li_ref(l).holds_segment(track, segment) == u8::try_from(rung + 1).unwrap_or(0);
        let (from, peer) = match src {
            _ if held => (Some(Via::Cache), None),
            Src::Edge(_) => (Some(Via::Edge), None),
            // Decided by the peer.
            Src::Peer(u) => (None, Some(u)),
        };
        let id = self.fetches.insert(Fetch {
            listener: l,
            play: p,
            segment,
            rung,
            source,
            bytes: size,
            started: self.now,
            from,
            peer,
        });
        if let Some(play) = self.li(l).slot(p) {
            play.inflight.retain(|(k, _)| *k != (segment, source));
            play.inflight.push(((segment, source), id));
        }
        let now = self.now;
        match src {
            _ if held => self.at(now + MS, Ev::Done(id)),
            Src::Edge(edge) => {
                let (segment, rung) =
                    (u16::try_from(segment).unwrap_or(u16::MAX), u8::try_from(rung).unwrap_or(u8::MAX));
                let get = Msg::EdgeGet { l, edge, fetch: id, track, segment, rung, sent: now };
                self.send(l, now + ctx.stat(l).rtt / 2, get);
            }
            Src::Peer(u) => {
                let half = ctx.rtt_between(l, u) / 2;
                self.send(l, now + half, Msg::Request { u, l, fetch: id, size, sent: now });
            }
        }
    }

    /// `l`'s request for its fetch `fetch` (`size` bytes, sent at `sent`) reaches `u`: served
    /// if it is still there and has an upload slot free.
    fn serve(&mut self, u: u32, l: u32, fetch: u64, size: u64, sent: Us) {
        let ctx = self.ctx;
        let rtt_pp = ctx.rtt_between(l, u);
        let (max, up, down) = (ctx.cfg.max_uploads as usize, ctx.stat(u).up, ctx.stat(l).down);
        let now = self.now;
        let li = self.li(u);
        li.uploads.retain(|k| k.until > now);
        // A request is a new substream: its protocol is negotiated first, so the request
        // itself reaches the uploader a round trip after this message, and holds a slot from
        // then until its last byte leaves (not from the negotiation on: that cost the model
        // BUSY answers a real node does not give, bench/simulate.sh netns).
        let arrives = sent + 3 * rtt_pp / 2;
        let busy = li.uploads.iter().filter(|k| k.from <= arrives && arrives < k.until).count();
        let (at, ok) = if !li.online {
            (sent + 2 * rtt_pp, false)
        } else if busy >= max || up == 0 {
            (sent + rtt_pp, false)
        } else {
            let rate = (up / (busy as u64 + 1)).min(down).max(1);
            let at = sent + 2 * rtt_pp + transfer(size, rate);
            li.uploads.push(Upload { to: l, fetch, from: arrives, until: at - rtt_pp / 2 });
            (at, true)
        };
        if !ok {
            self.tally.peer_failures += 1;
        }
        self.send(u, at.max(self.now + rtt_pp / 2), Msg::Served { l, fetch, ok });
    }

    /// A cancelled request: the peer asked frees its upload slot when the cancel reaches it;
    /// the answer will be ignored.
    fn cancel(&mut self, f: u64) {
        let now = self.now;
        let Some(fetch) = self.fetches.get_mut(f) else { return };
        fetch.play = 0;
        let (l, peer) = (fetch.listener, fetch.peer.take());
        if let Some(u) = peer {
            let half = self.ctx.rtt_between(l, u) / 2;
            self.send(l, now + half, Msg::Cancel { u, l, fetch: f });
        }
    }

    fn done(&mut self, f: u64) {
        let Some(fetch) = self.fetches.remove(f) else { return };
        let l = fetch.listener;
        let now_i = self.instant(self.now);
        let elapsed = Duration::from_micros(self.now - fetch.started);
        let mut cancels = Vec::new();
        let mut track = None;
        let mut preloaded = None;
        {
            let Some(play) = self.li(l).slot(fetch.play) else { return };
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
        let t = &mut self.tally;
        for b in [&mut t.bytes, &mut t.preload_bytes, &mut t.interval] {
            match from {
                Via::Edge => b.edge += bytes,
                Via::Peer => b.peer += bytes,
                Via::Cache => {}
            }
        }
        if let Some((_, marks)) = self.li(l).next.as_mut().filter(|(t, _)| *t == track) {
            if marks.len() <= segment {
                marks.resize(segment + 1, false);
            }
            marks[segment] = true;
        }
    }

    /// `l`'s cache now holds a segment of `track` (the client stores what it verified).
    fn hold(&mut self, l: u32, track: u32, segment: usize, rung: usize) {
        let n = self.ctx.segments(track);
        let li = self.li(l);
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
        let Some(play) = self.li(l).play.take_if(|pl| pl.id == p) else { return };
        let stats = play.sched.stats();
        if let Some(s) = stats.startup {
            self.tally.startups.push(u64::try_from(s.as_millis()).unwrap_or(u64::MAX));
            // Against the target: within two round trips to the edge plus 10 ms.
            let budget = 2 * self.ctx.stat(l).rtt + 10 * MS;
            self.tally.over_budget.push(i64::try_from(us(s)).unwrap_or(i64::MAX) - i64::try_from(budget).unwrap_or(0));
        }
        self.tally.stalls += u64::from(stats.stalls);
        self.tally.completed += 1;
        if play.sources.len() == 1 {
            self.tally.lonely += 1;
        }
        // No announce here: the client announces a track's end only when it did not at its
        // first segment, which every completed play handed over.
        if let Some(n) = self.li(l).plays_left.as_mut() {
            *n = n.saturating_sub(1);
        }
        self.at(self.now, Ev::Open(l));
    }

    /// `l` tells its tracker that it plays `track` now (the client, once the first segment of
    /// a play or a preload is handed over).
    fn announce_playing(&mut self, l: u32, track: u32) {
        self.send_announce(l, vec![track], Vec::new(), Vec::new(), false);
    }

    /// `l`'s round of announces: what its `Holdings` plans (the track it plays, then its cache,
    /// newest first, then what it held from before).
    fn announce(&mut self, l: u32) {
        if !self.serving(l) {
            return;
        }
        let now_i = self.instant(self.now);
        let since = self.now.saturating_sub(us(PLAYED_FOR));
        let li = self.li_ref(l);
        if li.announcing.is_some() {
            // The last one's answer is not in yet.
            return;
        }
        // The tracks started within PLAYED_FOR that it holds some of, the latest first.
        let playing: Vec<u32> =
            li.started.iter().filter(|(t, at)| *at > since && li.held.contains_key(t)).map(|(t, _)| *t).collect();
        let mut holds: Vec<u32> = li.held_order.iter().rev().copied().collect();
        holds.extend(li.warm.iter().filter(|t| !li.held.contains_key(t)));
        let plan = li.holdings.plan(now_i, &playing, &holds);
        if plan.tracks.is_empty() && plan.held.is_empty() && plan.dropped.is_empty() && holds.is_empty() {
            return;
        }
        self.send_announce(l, plan.tracks.clone(), plan.held.clone(), plan.dropped.clone(), true);
        self.li(l).announcing = Some(Box::new(plan));
    }

    /// One announce of `l` to its edge's tracker (`reply`: it waits for the held tracks left
    /// unlisted).
    fn send_announce(&mut self, l: u32, tracks: Vec<u32>, held: Vec<u32>, dropped: Vec<u32>, reply: bool) {
        let now = self.now;
        let li = self.li(l);
        li.announces += 1;
        let version = version(now, li.announces);
        let msg = Msg::Announce { l, version, tracks, held, dropped, reply, sent: now };
        self.send(l, now + self.ctx.stat(l).rtt / 2, msg);
    }

    /// The tracker's answer to `l`'s announce: the planner notes what it named (and what went
    /// unlisted), and while a large cache goes in, one more announce follows soon.
    fn taken(&mut self, l: u32, unlisted: Option<Vec<u32>>) {
        let now_i = self.instant(self.now);
        let li = self.li(l);
        let Some(plan) = li.announcing.take() else { return };
        let Some(unlisted) = unlisted else { return };
        li.holdings.taken(now_i, &plan, &unlisted, &[]);
        if plan.more && li.online {
            self.at(self.now + us(SOON), Ev::AnnounceSoon(l));
        }
    }
}
