//! The hub: the edges (their caches) and the trackers, which every listener reaches over its
//! round trip to its edge. It runs as a partition of its own (`par.rs`): what it is asked
//! arrives as mail half a round trip after it was sent, and its answers arrive back at the
//! asker a full round trip (and for a fetch, the transfer) after the question left.

use std::net::IpAddr;

use chorus_edge::cache::sketch::Sketch;
use chorus_edge::cache::tier::{Tier, Weighted};
use chorus_edge::tracker::{Tracker, TrackerConfig, Verified};

use crate::ctx::{Ctx, SEC, transfer, us};
use crate::draw::{Rng, chunk_id};
use crate::mail::{HUB, Mail, Msg};
use crate::queue::Queue;
use crate::slab::Slab;
use crate::{EdgeReport, Us};

/// How often the trackers drop what has expired.
const EXPIRE_EVERY: Us = 30 * SEC;

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

enum Ev {
    Mail(u64),
    Expire,
}

/// What the hub counted.
#[derive(Debug, Default)]
pub(crate) struct HubTally {
    pub(crate) announces: u64,
    pub(crate) announced_names: u64,
    pub(crate) queries: u64,
    pub(crate) events: u64,
    pub(crate) edges: Vec<EdgeReport>,
}

pub(crate) struct Hub<'a> {
    ctx: &'a Ctx<'a>,
    now: Us,
    /// The end of the window it runs through: what it sends arrives no earlier.
    until: Us,
    queue: Queue<Ev>,
    mail: Slab<Msg>,
    edges: Vec<Edge>,
    trackers: Vec<Tracker>,
    /// The trackers' draws (their random sample of holders).
    rng: Rng,
    tally: HubTally,
}

impl<'a> Hub<'a> {
    pub(crate) fn new(ctx: &'a Ctx<'a>, rng: Rng) -> Self {
        let cfg = ctx.cfg;
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
        let items = usize::try_from(cfg.edge_cache_bytes / 65_536).unwrap_or(usize::MAX).max(1024);
        let edges = (0..cfg.edges.max(1))
            .map(|_| Edge {
                cache: Tier::new(cfg.edge_cache_bytes),
                sketch: Sketch::new(items),
                report: EdgeReport::default(),
            })
            .collect();
        let mut queue = Queue::new();
        queue.push(EXPIRE_EVERY, Ev::Expire);
        Self { ctx, now: 0, until: 0, queue, mail: Slab::default(), edges, trackers, rng, tally: HubTally::default() }
    }

    /// Runs through `[start, until)` with `inbox` delivered first (in [`crate::mail::canonical`]
    /// order); returns what it sent.
    pub(crate) fn window(&mut self, until: Us, inbox: Vec<Mail>) -> Vec<Mail> {
        self.until = until;
        for m in inbox {
            let id = self.mail.insert(m.msg);
            self.queue.push(m.at, Ev::Mail(id));
        }
        let mut out = Vec::new();
        while let Some((t, ev)) = self.queue.pop_before(until) {
            self.now = t;
            self.tally.events += 1;
            match ev {
                Ev::Mail(id) => {
                    if let Some(msg) = self.mail.remove(id) {
                        self.handle(msg, &mut out);
                    }
                }
                Ev::Expire => {
                    let now = self.tokio_now();
                    for t in &mut self.trackers {
                        t.expire(now);
                    }
                    self.queue.push(self.now + EXPIRE_EVERY, Ev::Expire);
                }
            }
        }
        out
    }

    pub(crate) fn next_at(&mut self) -> Option<Us> {
        self.queue.next_at()
    }

    pub(crate) fn into_tally(self) -> HubTally {
        let mut tally = self.tally;
        tally.edges = self
            .edges
            .into_iter()
            .map(|e| {
                let mut r = e.report;
                r.hit_ratio = if r.requests == 0 { 0.0 } else { r.hits as f64 / r.requests as f64 };
                r
            })
            .collect();
        tally
    }

    fn tokio_now(&self) -> tokio::time::Instant {
        tokio::time::Instant::from_std(self.ctx.instant(self.now))
    }

    fn send(&self, out: &mut Vec<Mail>, at: Us, msg: Msg) {
        out.push(Mail { at: at.max(self.until), from: HUB, msg });
    }

    fn tracker(&self, l: u32) -> usize {
        if self.ctx.cfg.shared_tracker { 0 } else { self.ctx.stat(l).edge as usize }
    }

    fn handle(&mut self, msg: Msg, out: &mut Vec<Mail>) {
        let ctx = self.ctx;
        match msg {
            // A request takes the listener's round trip plus the size over its downlink; a
            // miss in the edge's cache adds the origin's round trip and transfer.
            Msg::EdgeGet { l, edge, fetch, track, segment, rung, sent } => {
                let (rung, segment) = (usize::from(rung), usize::from(segment));
                let size = ctx.size(rung);
                let chunk = chunk_id(track, segment, rung);
                let st = ctx.stat(l);
                let Some(edge) = self.edges.get_mut(edge as usize) else { return };
                edge.sketch.increment(&chunk);
                edge.report.requests += 1;
                edge.report.egress_bytes += size;
                let mut took = st.rtt + transfer(size, st.down);
                if edge.cache.get(&chunk).is_some() {
                    edge.report.hits += 1;
                } else {
                    edge.report.origin_bytes += size;
                    took += us(ctx.cfg.origin_rtt) + transfer(size, ctx.cfg.origin_bps);
                    let _ = edge.cache.offer(chunk, Size(size), &edge.sketch);
                }
                self.send(out, sent + took.max(1), Msg::Fetched { l, fetch });
            }
            Msg::Query { l, p, track, sent } => {
                let now = self.tokio_now();
                let t = self.tracker(l);
                let listed = self.trackers[t].peers(now, &ctx.track_ids[track as usize], &mut self.rng);
                self.tally.queries += 1;
                let peers = listed
                    .iter()
                    .filter_map(|rec| rec.peer_id.strip_prefix('L').and_then(|n| n.parse::<u32>().ok()))
                    .collect();
                self.send(out, sent + ctx.stat(l).rtt, Msg::Listed { l, p, peers });
            }
            Msg::Announce { l, version, tracks, held, dropped, reply, sent } => {
                let now = self.tokio_now();
                let ip = IpAddr::V4(ctx.stat(l).ip);
                let ids = |l: &[u32]| ctx.ids(l);
                let names = (tracks.len() + held.len() + dropped.len()) as u64;
                let ann = Verified::assume(format!("L{l}"), vec![format!("/ip4/{ip}/tcp/4001")], ids(&tracks), version)
                    .with_cache(ids(&held), ids(&dropped));
                let t = self.tracker(l);
                let tracker = &mut self.trackers[t];
                let unlisted = if tracker.admit(now, ip).is_err() {
                    None
                } else if let Ok(unlisted) = tracker.record(now, ip, ann) {
                    self.tally.announces += 1;
                    self.tally.announced_names += names;
                    Some(held.into_iter().filter(|h| unlisted.contains(&ctx.track_ids[*h as usize])).collect())
                } else {
                    None
                };
                if reply {
                    self.send(out, sent + ctx.stat(l).rtt, Msg::Taken { l, unlisted });
                }
            }
            // Not for the hub.
            _ => {}
        }
    }
}
