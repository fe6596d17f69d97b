//! The peer tracker (docs/protocol.md §3.3): which peers hold which track, so a client finds up
//! to 10 peers in one round trip, and none that a stranger put there.
//!
//! An announce goes through three steps, so that the costly check runs outside the tracker's
//! lock and after the rate limit: [`Tracker::admit`] (a token bucket per source address),
//! [`AnnounceCheck::verify`] (the signature, the signer, the time window, the edge it is meant
//! for, and the addresses bound to the sender; see [`chorus_core::announce`]), then
//! [`Tracker::record`].
//!
//! Plain logic with an explicit clock. Bounded everywhere: at most
//! [`TrackerConfig::per_track`] peers remembered per track and at most
//! [`TrackerConfig::per_network`] of them from one source network (a /24 or a /48), so one
//! source cannot fill a track's list; at most [`TrackerConfig::max_tracks`] tracks and
//! [`TrackerConfig::max_peers`] peers; at most [`TrackerConfig::returned`] peers answered, the
//! newest half and a random sample of the other live ones; entries expire after
//! [`TrackerConfig::ttl`]; the table of sources is bounded too.
//!
//! A peer's whole cache seeds: besides the tracks it plays (`tracks`, listed for
//! [`TrackerConfig::ttl`], the freshest holders of a full list displacing the stalest), an
//! announce names tracks it holds in its cache (`held`), listed for
//! [`TrackerConfig::held_ttl`] as long as the peer itself stays live (any announce within
//! [`TrackerConfig::ttl`]), and only where a list has room: a held track displaces no one, and
//! the tracker answers which of them it did not list (`plenty`), so the peer names what is
//! scarce first. A peer keeps hundreds of holdings listed with one small announce per period,
//! and removes the tracks it evicted (`dropped`).

pub mod footprint;
#[cfg(feature = "io")]
mod front;
#[cfg(feature = "io")]
pub mod shared;

#[cfg(feature = "io")]
pub use front::Front;
mod verify;
#[cfg(test)]
use verify::content_digest;
pub use verify::{AnnounceCheck, Verified};

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::TrackId;
use chorus_core::announce::AnnounceError;
use chorus_core::rate::TokenBucket;
use rand_core::RngCore;
use tokio::time::Instant;

/// Limits of the tracker; every default suits a public edge.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Peers remembered per track (default 32).
    pub per_track: usize,
    /// Peers remembered per track from one source network, a /24 for IPv4 or a /48 for IPv6
    /// (default 4): a newer one from that network replaces its stalest.
    pub per_network: usize,
    /// Peers returned per query (default 10): the most recent half, then a random sample of
    /// the other live ones.
    pub returned: usize,
    /// An entry not re-announced within this is dropped, and so is every entry of a peer that
    /// announced nothing within it (default 5 min; peers re-announce before it runs out).
    pub ttl: Duration,
    /// An entry of a track announced as held (in the peer's cache) lives this long, while its
    /// peer is live (default 1 h, [`chorus_core::api::HELD_TTL`]).
    pub held_ttl: Duration,
    /// Tracks remembered at most (default 200 000).
    pub max_tracks: usize,
    /// Announces per source address: burst size (default 10).
    pub burst: u32,
    /// Announces per source address: one more allowed every this long (default 3 s).
    pub refill: Duration,
    /// Source addresses whose rate is tracked at most (default 100 000).
    pub max_sources: usize,
    /// Peers remembered at most, over all tracks (default 500 000).
    pub max_peers: usize,
    /// Circuit relays (full multiaddrs ending in `/p2p/ID`) offered with every answer, for
    /// peers that cannot be reached directly (`chorus edge --p2p-relay`). Circuit addresses
    /// are listed only through these.
    pub relays: Vec<String>,
    /// The names (`host:port`) announces must be signed for (`chorus edge --tracker-name`).
    /// Empty: the `host:port` each request was sent to.
    pub names: Vec<String>,
    /// What one source may put in the tracker (peer ids and entries per host, IPv6 /56 and
    /// /48); over it, its own oldest entries go (see [`footprint`]).
    pub budgets: footprint::Budgets,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            per_track: 32,
            per_network: 4,
            returned: 10,
            ttl: Duration::from_secs(300),
            held_ttl: chorus_core::api::HELD_TTL,
            max_tracks: 200_000,
            burst: 10,
            refill: Duration::from_secs(3),
            max_sources: 100_000,
            max_peers: 500_000,
            relays: Vec::new(),
            names: Vec::new(),
            budgets: footprint::Budgets::default(),
        }
    }
}

pub use chorus_core::api::{Announce, MAX_ADDR_LEN, MAX_ADDRS, MAX_PEER_ID_LEN, MAX_TRACKS_PER_ANNOUNCE, PeerRecord};

/// Why an announce was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TrackerError {
    /// The announce is malformed (400), or its signature, signer, time or edge is wrong (401).
    #[error("announce refused")]
    Refused(#[from] AnnounceError),
    /// None of its addresses may be listed (400): none is on the address it came from, or a
    /// circuit through this edge's relay.
    #[error(
        "no address of this announce is on {sender}, the address it came from, or a circuit through this edge's relay"
    )]
    NoAddress {
        /// The address the announce came from.
        sender: IpAddr,
    },
    /// A newer announce of this peer, or this very one, is recorded (409): an old one
    /// replayed.
    #[error("this announce or a newer one of this peer is recorded")]
    Superseded,
    /// The source announces too often (429); retry after the given time.
    #[error("too many announces from this address; retry in {0:?}")]
    RateLimited(Duration),
    /// The tracker holds as many live peers as it may (503); retry later.
    #[error("the tracker is full; retry later")]
    Full,
}

#[derive(Debug, Clone)]
struct PeerInfo {
    addrs: Vec<String>,
    seen: Instant,
    /// The timestamp of its latest announce: an older one is a replay.
    timestamp: u64,
    /// [`Verified::content`] of its latest announce: the same again with the same timestamp
    /// is a replay too.
    content: u64,
}

/// One peer listed for a track.
#[derive(Debug, Clone)]
struct Entry {
    /// The peer's id, shared with its [`Tracker::peers`] key and its other entries (an entry
    /// per held track: a copy each was most of the table).
    peer: Arc<str>,
    /// When an announce last named it: the order of entries ("newest", "stalest") is by it.
    seen: Instant,
    /// Named as held (in the peer's cache) by the latest or an earlier announce: it lives
    /// [`TrackerConfig::held_ttl`] after `seen`, else [`TrackerConfig::ttl`].
    held: bool,
    /// The source network of its latest announce of the track.
    network: IpAddr,
}

/// The tracker's state.
#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    /// Per track: its peers, each with the time of its last announce of it.
    tracks: HashMap<TrackId, Vec<Entry>>,
    /// Per peer: its latest addresses.
    peers: HashMap<Arc<str>, PeerInfo>,
    buckets: HashMap<IpAddr, TokenBucket>,
    entries: usize,
    /// When a full table was last swept for room on the announce path (see [`SWEEP_GAP`]).
    swept_at: Option<Instant>,
    /// When the full source table was last swept for idle sources.
    sources_swept_at: Option<Instant>,
}

/// The least time between two sweeps of a full table on the announce path. A sweep walks
/// every entry (millions on a busy edge, tens of milliseconds under the tracker's lock); while
/// a full table holds only live entries each announce would sweep again and free nothing.
/// Between sweeps a full table refuses new peers, tracks and sources as if just swept.
pub const SWEEP_GAP: Duration = Duration::from_secs(1);

/// Whether a sweep may run at `now`, given the last one; records it if so.
fn may_sweep(last: &mut Option<Instant>, now: Instant) -> bool {
    if last.is_some_and(|t| now.saturating_duration_since(t) < SWEEP_GAP) {
        return false;
    }
    *last = Some(now);
    true
}

/// Which entry of a full `list` a newcomer from network `net` replaces: the stalest entry of
/// the networks holding the most entries, its own network first when it is one of them. So a
/// network is only ever displaced by one that holds no more entries than it after the swap,
/// and 8 networks flooding a list of 32 at 4 each cycle among themselves while a seeder alone
/// in its network keeps its place (it goes only when every entry is alone in its network).
fn crowded_stalest(list: &[Entry], net: IpAddr) -> Option<usize> {
    let mut counts: HashMap<IpAddr, usize> = HashMap::new();
    for e in list {
        *counts.entry(e.network).or_default() += 1;
    }
    let most = counts.values().copied().max()?;
    let own = counts.get(&net).copied().unwrap_or(0);
    let from = |n: &IpAddr| if own == most { *n == net } else { counts.get(n) == Some(&most) };
    list.iter().enumerate().filter(|(_, e)| from(&e.network)).min_by_key(|(_, e)| e.seen).map(|(i, _)| i)
}

/// The source network whose entries per track are capped: a /24 or a /48.
pub(crate) fn network(ip: IpAddr) -> IpAddr {
    chorus_core::ip::prefix(ip, 24, 48)
}

/// The answer to a peer query from a track's `live` entries, each with the time it was last
/// announced: up to `returned` of them, the most recently announced half (newest first), then
/// a sample drawn by `rng` from the others. The newest find each other; the sample keeps older,
/// steady seeders in view, whoever announced last. Both trackers answer with it.
pub(crate) fn newest_and_sample<K: Ord + Copy, T>(
    mut live: Vec<(K, T)>,
    returned: usize,
    rng: &mut dyn RngCore,
) -> Vec<T> {
    live.sort_by_key(|(seen, _)| std::cmp::Reverse(*seen));
    let want = returned.min(live.len());
    let recent = want.div_ceil(2);
    // A partial Fisher-Yates shuffle of the older ones picks the rest.
    let older = &mut live[recent..];
    for i in 0..want - recent {
        let left = older.len() - i;
        let j = i + usize::try_from(rng.next_u64() % left as u64).unwrap_or(0);
        older.swap(i, j);
    }
    live.truncate(want);
    live.into_iter().map(|(_, t)| t).collect()
}

/// Whether `e` is live at `now`: its own time has not run out (`ttl`, or `held_ttl` for a held
/// track), and its peer announced within `ttl`.
///
/// An entry named within `ttl` needs no look at its peer: the announce that named it set the
/// peer's time too, to the same instant or later, and a peer is forgotten only once silent for
/// `ttl`. So only held entries older than `ttl` cost a lookup.
fn live(e: &Entry, peers: &HashMap<Arc<str>, PeerInfo>, (ttl, held_ttl): (Duration, Duration), now: Instant) -> bool {
    let age = now.duration_since(e.seen);
    let lifetime = if e.held { held_ttl } else { ttl };
    age < lifetime && (age < ttl || peers.get(&*e.peer).is_some_and(|p| now.duration_since(p.seen) < ttl))
}

impl Tracker {
    /// An empty tracker.
    #[must_use]
    pub fn new(cfg: TrackerConfig) -> Self {
        Self {
            cfg,
            tracks: HashMap::new(),
            peers: HashMap::new(),
            buckets: HashMap::new(),
            entries: 0,
            swept_at: None,
            sources_swept_at: None,
        }
    }

    /// Peer entries held (over all tracks): `chorus_tracker_peers`.
    #[must_use]
    pub const fn entries(&self) -> usize {
        self.entries
    }

    /// Takes one announce from `source`'s budget at `now`; the first step of an announce, so a
    /// flood costs no signature checks.
    ///
    /// # Errors
    /// [`TrackerError::RateLimited`] when `source` has used its budget (or the table of
    /// sources is full of active ones).
    pub fn admit(&mut self, now: Instant, source: IpAddr) -> Result<(), TrackerError> {
        // One IPv6 host usually owns a whole /64: limit the prefix, not each address.
        let source = chorus_core::ip::host(source);
        let std_now = now.into_std();
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.cfg.max_sources {
            // Forget sources whose bucket has refilled: they are idle.
            if may_sweep(&mut self.sources_swept_at, now) {
                self.buckets.retain(|_, b| !b.is_full(std_now));
            }
            if self.buckets.len() >= self.cfg.max_sources {
                return Err(TrackerError::RateLimited(self.cfg.refill));
            }
        }
        let per_sec = 1.0 / self.cfg.refill.as_secs_f64().max(1e-3);
        let burst = f64::from(self.cfg.burst);
        let b = self.buckets.entry(source).or_insert_with(|| TokenBucket::full(burst, per_sec, std_now));
        // (A burst of zero never lets one through: an hour is as good a retry time as any.)
        b.take(1.0, std_now).map_err(|wait| TrackerError::RateLimited(wait.min(Duration::from_secs(3600))))
    }

    /// Records `ann`, verified, from `source` at `now`, and returns the held tracks it did not
    /// list (`plenty`). The peer's addresses become those of this announce, and every entry of
    /// the peer stays live as long as it keeps announcing.
    ///
    /// A played track keeps the peer's one entry, or replaces the stalest entry of its own
    /// source network when that network has its [`TrackerConfig::per_network`], or takes a free
    /// place, or (the list full) replaces the stalest entry of the most crowded network (see
    /// [`crowded_stalest`]): networks that flood a track displace each other, never a network
    /// with fewer entries. A held track keeps the peer's entry or takes a free place within its
    /// network's share, and displaces no one: otherwise it is `plenty`. A dropped track loses
    /// the peer's entry.
    ///
    /// # Errors
    /// [`TrackerError::Superseded`] for an announce older than the peer's last one, or the
    /// same one again (a replay: same time, same addresses and tracks),
    /// [`TrackerError::Full`] for a new peer while the table is full of live ones.
    pub fn record(&mut self, now: Instant, source: IpAddr, ann: Verified) -> Result<Vec<TrackId>, TrackerError> {
        let replay =
            |p: &PeerInfo| p.timestamp > ann.timestamp || (p.timestamp == ann.timestamp && p.content == ann.content);
        if self.peers.get(ann.peer_id.as_str()).is_some_and(replay) {
            return Err(TrackerError::Superseded);
        }
        // At most one expiry sweep per announce, however many tracks it names, and at most one
        // per SWEEP_GAP over all announces.
        let mut swept = false;
        if !self.peers.contains_key(ann.peer_id.as_str()) && self.peers.len() >= self.cfg.max_peers {
            if may_sweep(&mut self.swept_at, now) {
                self.expire(now);
            }
            swept = true;
            if self.peers.len() >= self.cfg.max_peers {
                return Err(TrackerError::Full);
            }
        }
        let id: Arc<str> = match self.peers.get_key_value(ann.peer_id.as_str()) {
            Some((known, _)) => known.clone(),
            None => Arc::from(ann.peer_id.as_str()),
        };
        self.peers.insert(
            id.clone(),
            PeerInfo { addrs: ann.addrs, seen: now, timestamp: ann.timestamp, content: ann.content },
        );
        for track in &ann.dropped {
            self.forget(&ann.peer_id, track);
        }
        let net = network(source);
        let mut plenty = Vec::new();
        let played = ann.tracks.into_iter().map(|t| (t, false));
        for (track, held) in played.chain(ann.held.into_iter().map(|t| (t, true))) {
            if !self.tracks.contains_key(&track) && self.tracks.len() >= self.cfg.max_tracks {
                if !swept {
                    if may_sweep(&mut self.swept_at, now) {
                        self.expire(now);
                    }
                    swept = true;
                }
                if self.tracks.len() >= self.cfg.max_tracks {
                    if held {
                        plenty.push(track);
                    }
                    continue; // full of live entries: remember what we have
                }
            }
            let list = self.tracks.entry(track.clone()).or_default();
            // Decide on live entries only (as the shared tracker does): an expired one is
            // dropped here rather than at the next sweep.
            let before = list.len();
            let peers = &self.peers;
            let lifetimes = (self.cfg.ttl, self.cfg.held_ttl);
            list.retain(|e| live(e, peers, lifetimes, now));
            self.entries -= before - list.len();
            let fresh = Entry { peer: id.clone(), seen: now, held, network: net };
            let own = list.iter().filter(|e| e.network == net).count();
            if let Some(e) = list.iter_mut().find(|e| *e.peer == *ann.peer_id) {
                // A holding played again, or a track played then cached: it stays a holding.
                e.held |= held;
                e.seen = now;
                e.network = net;
            } else if held && (own >= self.cfg.per_network || list.len() >= self.cfg.per_track) {
                plenty.push(track.clone());
            } else if own >= self.cfg.per_network {
                if let Some(stalest) = list.iter_mut().filter(|e| e.network == net).min_by_key(|e| e.seen) {
                    *stalest = fresh;
                }
            } else if list.len() < self.cfg.per_track {
                list.push(fresh);
                self.entries += 1;
            } else if let Some(victim) = crowded_stalest(list, net) {
                list[victim] = fresh;
            }
            if list.is_empty() {
                self.tracks.remove(&track);
            }
        }
        Ok(plenty)
    }

    /// Drops `peer`'s entry for `track`, if it has one (its source went over its budget, or
    /// it no longer holds the track).
    pub fn forget(&mut self, peer: &str, track: &TrackId) {
        if let Some(list) = self.tracks.get_mut(track) {
            let before = list.len();
            list.retain(|e| &*e.peer != peer);
            self.entries -= before - list.len();
            if list.is_empty() {
                self.tracks.remove(track);
            }
        }
    }

    /// Up to [`TrackerConfig::returned`] live peers for `track`: the most recently announced
    /// half, newest first, then a sample drawn by `rng` from the other live ones. The newest
    /// find each other; the sample keeps older, steady seeders in view, whoever announced last.
    #[must_use]
    pub fn peers(&self, now: Instant, track: &TrackId, rng: &mut dyn RngCore) -> Vec<PeerRecord> {
        let Some(list) = self.tracks.get(track) else {
            return Vec::new();
        };
        let lifetimes = (self.cfg.ttl, self.cfg.held_ttl);
        let live: Vec<(Instant, &Entry)> =
            list.iter().filter(|e| live(e, &self.peers, lifetimes, now)).map(|e| (e.seen, e)).collect();
        newest_and_sample(live, self.cfg.returned, rng)
            .into_iter()
            .filter_map(|e| {
                self.peers.get(&*e.peer).map(|p| PeerRecord { peer_id: e.peer.to_string(), addrs: p.addrs.clone() })
            })
            .collect()
    }

    /// Every peer listed for `track`, live or not (tests compare both trackers with it).
    #[cfg(test)]
    pub(crate) fn listed(&self, track: &TrackId) -> Vec<String> {
        self.tracks.get(track).map(|l| l.iter().map(|e| e.peer.to_string()).collect()).unwrap_or_default()
    }

    /// Drops expired entries and those of peers gone silent, tracks left empty, and those
    /// peers.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.cfg.ttl;
        self.peers.retain(|_, p| now.duration_since(p.seen) < ttl);
        let mut entries = 0;
        let peers = &self.peers;
        let lifetimes = (ttl, self.cfg.held_ttl);
        self.tracks.retain(|_, list| {
            list.retain(|e| live(e, peers, lifetimes, now));
            entries += list.len();
            !list.is_empty()
        });
        self.entries = entries;
        self.buckets.retain(|_, b| !b.is_full(now.into_std()));
    }
}

#[cfg(test)]
mod tests;
