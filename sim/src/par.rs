//! A run on several cores: the listeners split into partitions, the hub (edges and trackers)
//! beside them, all stepping through the same windows of simulated time.
//!
//! A window is as long as the shortest one-way delay between any two parties (half the
//! shortest round trip to an edge: `SimConfig::rtt`; at least 0.1 ms, and with shorter round
//! trips a message arrives at the end of the window it was sent in), so nothing sent within a
//! window arrives within it (`mail.rs`): within a window every partition and the hub run alone, on whichever
//! thread takes them, and between windows the mail is exchanged. The next window starts at the
//! earliest event anywhere, so quiet stretches are skipped. Mail is delivered in an order that
//! does not depend on the partitions ([`canonical`]), and a partition's own events touch its
//! own listeners only, so a run's report is the same on one thread or many (a test holds it).
//!
//! The threads meet at a spinning barrier: a window of a large run is a fraction of a
//! millisecond of work, and a barrier that sleeps and wakes through the kernel would cost
//! about as much again. After a while spinning, a waiter yields its core, in case the machine
//! has fewer cores free than the run has threads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use chorus_core::p2p::Multiaddr;
use chorus_core::p2p::multiaddr::Protocol;

use crate::ctx::{Ctx, MS, SEC, listener, us, warm};
use crate::draw::{Rng, Zipf, peer_id};
use crate::hub::{Hub, HubTally};
use crate::mail::{Mail, To, canonical};
use crate::world::{Listener, Part, Tally};
use crate::{Percentiles, Report, SimConfig, Us};

/// No event: the end of time.
const NEVER: Us = Us::MAX;

/// A partition of listeners, or the hub: what one thread runs through a window.
#[allow(clippy::large_enum_variant)] // a handful, each behind its own lock
enum Task<'a> {
    Part(Part<'a>),
    Hub(Hub<'a>),
}

impl Task<'_> {
    fn window(&mut self, until: Us, inbox: Vec<Mail>) -> Vec<Mail> {
        match self {
            Self::Part(p) => p.window(until, inbox),
            Self::Hub(h) => h.window(until, inbox),
        }
    }

    fn next_at(&mut self) -> Us {
        match self {
            Self::Part(p) => p.next_at(),
            Self::Hub(h) => h.next_at(),
        }
        .unwrap_or(NEVER)
    }

    fn online(&self) -> usize {
        match self {
            Self::Part(p) => p.tally.online,
            Self::Hub(_) => 0,
        }
    }
}

/// Runs `cfg` to its end on `threads` threads; the report is the same whatever their number.
pub(crate) fn run(cfg: &SimConfig, threads: usize, progress: &mut dyn FnMut(u64)) -> Report {
    let mut rng = Rng(cfg.seed);
    let (stats, rngs): (Vec<_>, Vec<_>) = (0..cfg.listeners).map(|n| listener(cfg, &mut rng, n)).unzip();
    // "t<number>" is a valid track id.
    let track_ids = (0..cfg.tracks.max(1)).filter_map(|t| chorus_core::TrackId::parse(&format!("t{t}")).ok()).collect();
    let track_segments = (0..cfg.tracks.max(1))
        .map(|_| u16::try_from(rng.range((cfg.segments.0 as u64, cfg.segments.1 as u64))).unwrap_or(u16::MAX).max(1))
        .collect();
    let peer_ids = (0..cfg.listeners).map(|_| peer_id(&mut rng)).collect();
    let addrs = stats.iter().map(|s| Multiaddr::from(s.ip).with(Protocol::Tcp(4001))).collect();
    let segment_secs = cfg.segment.as_secs_f64();
    let sizes = cfg.ladder_bps.iter().map(|b| (*b as f64 * segment_secs / 8.0) as u64).collect();
    let ctx = Ctx {
        cfg,
        base: Instant::now(),
        stats,
        track_ids,
        track_segments,
        peer_ids,
        addrs,
        zipf: Zipf::new(cfg.tracks, cfg.zipf),
        sizes,
    };
    let threads = threads.max(1);
    // Twice as many partitions as threads, so that one thread's slow window is evened out.
    let parts = if threads == 1 { 1 } else { threads * 2 };
    let mut tasks: Vec<Part> = (0..parts).map(|_| Part::new(&ctx, u32::try_from(parts).unwrap_or(1))).collect();
    for (n, r) in rngs.into_iter().enumerate() {
        let (held, rung) = warm(cfg, &ctx.zipf, n, ctx.stats[n].down);
        let at = (rng.unit() * us(cfg.arrive_over) as f64) as Us;
        let at = if n < cfg.seeders { 0 } else { at };
        tasks[n % parts].adopt(u32::try_from(n).unwrap_or(u32::MAX), Listener::new(r, held, rung), at);
    }
    let hub = Hub::new(&ctx, rng);
    let mut all: Vec<Task> = tasks.into_iter().map(Task::Part).collect();
    all.push(Task::Hub(hub));
    let shared = Shared::new(all, parts, threads, cfg);
    std::thread::scope(|s| {
        for _ in 1..threads {
            s.spawn(|| shared.work(None));
        }
        shared.work(Some(progress));
    });
    shared.report()
}

/// What the threads share.
struct Shared<'a> {
    tasks: Vec<Mutex<Task<'a>>>,
    /// Mail for each task: `inbox[w % 2]` is delivered in window `w`, and what is sent in it
    /// goes to the other, so that mail reaches its partition at the start of the window
    /// after it was sent whichever order the tasks ran in.
    inbox: [Vec<Mutex<Vec<Mail>>>; 2],
    /// This window's parity.
    parity: AtomicUsize,
    /// Each task's next event.
    next_at: Vec<AtomicU64>,
    /// Each task's listeners online.
    online: Vec<AtomicUsize>,
    /// The earliest mail sent in this window.
    mail_min: AtomicU64,
    /// The next task to take in this window.
    claim: AtomicUsize,
    /// The start of this window, or [`NEVER`] when the run is over.
    start: AtomicU64,
    peak: AtomicUsize,
    barrier: SpinBarrier,
    parts: usize,
    /// A window's length.
    step: Us,
    end: Us,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<'a> Shared<'a> {
    fn new(tasks: Vec<Task<'a>>, parts: usize, threads: usize, cfg: &SimConfig) -> Self {
        let n = tasks.len();
        let mut tasks: Vec<Mutex<Task<'a>>> = tasks.into_iter().map(Mutex::new).collect();
        let first = tasks.iter_mut().map(|t| t.get_mut().unwrap_or_else(PoisonError::into_inner).next_at()).min();
        let end = us(cfg.duration);
        let first = first.unwrap_or(NEVER);
        Self {
            tasks,
            inbox: [0, 1].map(|_| (0..n).map(|_| Mutex::new(Vec::new())).collect()),
            parity: AtomicUsize::new(0),
            next_at: (0..n).map(|_| AtomicU64::new(NEVER)).collect(),
            online: (0..n).map(|_| AtomicUsize::new(0)).collect(),
            mail_min: AtomicU64::new(NEVER),
            claim: AtomicUsize::new(0),
            start: AtomicU64::new(if first > end { NEVER } else { first }),
            peak: AtomicUsize::new(0),
            barrier: SpinBarrier::new(threads.max(1)),
            parts,
            step: (us(cfg.rtt.0) / 2).max(MS / 10),
            end,
        }
    }

    /// One thread's part of the run: windows until the end.
    fn work(&self, mut progress: Option<&mut dyn FnMut(u64)>) {
        let _abort = AbortOnPanic(&self.barrier.abort);
        let mut next_progress = 60 * SEC;
        loop {
            let start = self.start.load(Ordering::Acquire);
            if start == NEVER {
                return;
            }
            if let Some(p) = progress.as_mut()
                && start >= next_progress
            {
                p(start / SEC);
                next_progress = (start / (60 * SEC) + 1) * 60 * SEC;
            }
            let until = start.saturating_add(self.step).min(self.end + 1);
            let parity = self.parity.load(Ordering::Relaxed);
            loop {
                let i = self.claim.fetch_add(1, Ordering::Relaxed);
                let Some(task) = self.tasks.get(i) else { break };
                let mut task = lock(task);
                let mut inbox = std::mem::take(&mut *lock(&self.inbox[parity][i]));
                canonical(&mut inbox);
                let out = task.window(until, inbox);
                self.route(out, &self.inbox[1 - parity]);
                self.next_at[i].store(task.next_at(), Ordering::Relaxed);
                self.online[i].store(task.online(), Ordering::Relaxed);
            }
            self.barrier.wait(|| {
                let mut next = self.mail_min.swap(NEVER, Ordering::Relaxed);
                for a in &self.next_at {
                    next = next.min(a.load(Ordering::Relaxed));
                }
                let online = self.online.iter().map(|o| o.load(Ordering::Relaxed)).sum();
                self.peak.fetch_max(online, Ordering::Relaxed);
                self.claim.store(0, Ordering::Relaxed);
                self.parity.store(1 - parity, Ordering::Relaxed);
                self.start.store(if next > self.end { NEVER } else { next }, Ordering::Relaxed);
            });
        }
    }

    /// Puts a window's mail in its recipients' inboxes for the next window.
    fn route(&self, out: Vec<Mail>, inbox: &[Mutex<Vec<Mail>>]) {
        if out.is_empty() {
            return;
        }
        let mut to: Vec<Vec<Mail>> = (0..self.tasks.len()).map(|_| Vec::new()).collect();
        let mut min = NEVER;
        for m in out {
            min = min.min(m.at);
            let i = match m.msg.to() {
                To::Hub => self.parts,
                To::Listener(l) => l as usize % self.parts,
            };
            to[i].push(m);
        }
        for (i, mail) in to.into_iter().enumerate() {
            if !mail.is_empty() {
                lock(&inbox[i]).extend(mail);
            }
        }
        self.mail_min.fetch_min(min, Ordering::Relaxed);
    }

    /// The report: the partitions' counts added up, the hub's, the peak online.
    fn report(self) -> Report {
        let mut tally = Tally::default();
        let mut hub = HubTally::default();
        let mut now = 0;
        for task in self.tasks {
            match task.into_inner().unwrap_or_else(PoisonError::into_inner) {
                Task::Part(p) => {
                    now = now.max(p.now());
                    add(&mut tally, p.tally);
                }
                Task::Hub(h) => hub = h.into_tally(),
            }
        }
        let mut startups = tally.startups;
        startups.sort_unstable();
        let pct = |p: f64| -> u64 {
            if startups.is_empty() { 0 } else { startups[((startups.len() - 1) as f64 * p).round() as usize] }
        };
        let mut over = tally.over_budget;
        over.sort_unstable();
        let over_p50_ms = if over.is_empty() { 0.0 } else { over[over.len() / 2] as f64 / MS as f64 };
        let secs = (now.min(self.end) as f64 / SEC as f64).max(1.0);
        let plays = tally.plays;
        Report {
            plays,
            plays_completed: tally.completed,
            preloads: tally.preloads,
            preload_bytes: tally.preload_bytes,
            plays_without_peers: tally.lonely,
            edge_first_segment_bytes: tally.edge_first,
            bytes: tally.bytes,
            edge_share: tally.bytes.edge_share(),
            timeline: tally.timeline,
            edges: hub.edges,
            announces: hub.announces,
            announced_names: hub.announced_names,
            announced_names_per_sec: hub.announced_names as f64 / secs,
            queries: hub.queries,
            tracker_ops_per_sec: (hub.announces + hub.queries) as f64 / secs,
            dials_per_play: if plays == 0 { 0.0 } else { tally.dials as f64 / plays as f64 },
            dials_punched: tally.dials_punched,
            peers_unreachable: tally.peers_unreachable,
            startup_ms: Percentiles { p50: pct(0.5), p95: pct(0.95), p99: pct(0.99) },
            startup_over_2rtt_plus_10ms_p50: over_p50_ms,
            stalls_per_100_plays: if tally.completed == 0 {
                0.0
            } else {
                100.0 * tally.stalls as f64 / tally.completed as f64
            },
            peer_failures: tally.peer_failures,
            events: tally.events + hub.events,
            peak_online: self.peak.into_inner(),
        }
    }
}

/// Adds partition `b`'s counts to `a`'s (their timelines point by point: every partition
/// samples at the same times).
fn add(a: &mut Tally, b: Tally) {
    a.bytes += b.bytes;
    a.preload_bytes += b.preload_bytes;
    if a.timeline.is_empty() {
        a.timeline = b.timeline;
    } else {
        for (x, y) in a.timeline.iter_mut().zip(b.timeline) {
            x.bytes += y.bytes;
            x.online += y.online;
        }
    }
    a.plays += b.plays;
    a.preloads += b.preloads;
    a.completed += b.completed;
    a.lonely += b.lonely;
    a.edge_first += b.edge_first;
    a.startups.extend(b.startups);
    a.over_budget.extend(b.over_budget);
    a.stalls += b.stalls;
    a.dials += b.dials;
    a.dials_punched += b.dials_punched;
    a.peers_unreachable += b.peers_unreachable;
    a.peer_failures += b.peer_failures;
    a.events += b.events;
    a.online += b.online;
}

/// A barrier for a fixed number of threads that spins (then yields) instead of sleeping; the
/// last to arrive runs the step between windows before letting the others go.
struct SpinBarrier {
    threads: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    /// A thread panicked: the others stop waiting for it.
    abort: AtomicBool,
}

impl SpinBarrier {
    fn new(threads: usize) -> Self {
        Self { threads, arrived: AtomicUsize::new(0), generation: AtomicUsize::new(0), abort: AtomicBool::new(false) }
    }

    fn wait(&self, last: impl FnOnce()) {
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            last();
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.store(generation.wrapping_add(1), Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            assert!(!self.abort.load(Ordering::Relaxed), "another thread of the run panicked");
            if spins < 4_000 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// Tells the other threads to stop waiting when this one unwinds.
struct AbortOnPanic<'a>(&'a AtomicBool);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}
