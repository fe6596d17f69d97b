//! The peer tracker (docs/protocol.md §3): which peers hold which track, so a client finds up to 10 peers in
//! one round trip.
//!
//! Plain logic with an explicit clock. Bounded everywhere: at most
//! [`TrackerConfig::per_track`] peers remembered per track (the stalest is replaced), at most
//! [`TrackerConfig::max_tracks`] tracks, at most [`TrackerConfig::returned`] peers answered,
//! entries expire after [`TrackerConfig::ttl`], and announces are rate-limited per source
//! address with a token bucket ([`TokenBucket`]) whose table is bounded too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use chorus_core::TrackId;
use chorus_core::rate::TokenBucket;
use tokio::time::Instant;

/// Limits of the tracker; every default suits a public edge.
#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// Peers remembered per track (default 20).
    pub per_track: usize,
    /// Peers returned per query (default 10).
    pub returned: usize,
    /// An entry not re-announced within this is dropped (default 5 min; peers re-announce
    /// before it runs out).
    pub ttl: Duration,
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
    /// peers that cannot be reached directly (`chorus edge --p2p-relay`).
    pub relays: Vec<String>,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            per_track: 20,
            returned: 10,
            ttl: Duration::from_secs(300),
            max_tracks: 200_000,
            burst: 10,
            refill: Duration::from_secs(3),
            max_sources: 100_000,
            max_peers: 500_000,
            relays: Vec::new(),
        }
    }
}

pub use chorus_core::api::{Announce, MAX_ADDR_LEN, MAX_ADDRS, MAX_PEER_ID_LEN, MAX_TRACKS_PER_ANNOUNCE, PeerRecord};

/// Why an announce was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TrackerError {
    /// The announce breaks a bound or a format rule (400).
    #[error("invalid announce")]
    Invalid(#[from] chorus_core::api::Invalid),
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
}

/// The tracker's state.
#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    /// Per track: peer ids with the time of their last announce of it.
    tracks: HashMap<TrackId, Vec<(String, Instant)>>,
    /// Per peer: its latest addresses.
    peers: HashMap<String, PeerInfo>,
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

    /// The relays offered with every answer.
    #[must_use]
    pub fn relays(&self) -> &[String] {
        &self.cfg.relays
    }

    /// Peer entries held (over all tracks): `chorus_tracker_peers`.
    #[must_use]
    pub const fn entries(&self) -> usize {
        self.entries
    }

    /// Records `ann` from `source` at `now`.
    ///
    /// # Errors
    /// [`TrackerError::Invalid`] for a malformed announce, [`TrackerError::RateLimited`] when
    /// `source` has used its budget.
    pub fn announce(&mut self, now: Instant, source: IpAddr, ann: Announce) -> Result<(), TrackerError> {
        ann.validate()?;
        self.take_token(now, source)?;
        // At most one expiry sweep per announce, however many tracks it names, and at most one
        // per SWEEP_GAP over all announces.
        let mut swept = false;
        if !self.peers.contains_key(&ann.peer_id) && self.peers.len() >= self.cfg.max_peers {
            if may_sweep(&mut self.swept_at, now) {
                self.expire(now);
            }
            swept = true;
            if self.peers.len() >= self.cfg.max_peers {
                return Err(TrackerError::Full);
            }
        }
        self.peers.insert(ann.peer_id.clone(), PeerInfo { addrs: ann.addrs, seen: now });
        for track in ann.tracks {
            if !self.tracks.contains_key(&track) && self.tracks.len() >= self.cfg.max_tracks {
                if !swept {
                    if may_sweep(&mut self.swept_at, now) {
                        self.expire(now);
                    }
                    swept = true;
                }
                if self.tracks.len() >= self.cfg.max_tracks {
                    continue; // full of live entries: remember what we have
                }
            }
            let list = self.tracks.entry(track).or_default();
            if let Some(e) = list.iter_mut().find(|(p, _)| *p == ann.peer_id) {
                e.1 = now;
            } else if list.len() < self.cfg.per_track {
                list.push((ann.peer_id.clone(), now));
                self.entries += 1;
            } else if let Some(stalest) = list.iter_mut().min_by_key(|(_, t)| *t) {
                *stalest = (ann.peer_id.clone(), now);
            }
        }
        Ok(())
    }

    fn take_token(&mut self, now: Instant, source: IpAddr) -> Result<(), TrackerError> {
        // One IPv6 host usually owns a whole /64: limit the prefix, not each address.
        let source = match source {
            IpAddr::V6(v6) => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::from(o)
            }
            v4 => v4,
        };
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

    /// Up to [`TrackerConfig::returned`] live peers for `track`, most recently announced first.
    #[must_use]
    pub fn peers(&self, now: Instant, track: &TrackId) -> Vec<PeerRecord> {
        let Some(list) = self.tracks.get(track) else {
            return Vec::new();
        };
        let mut live: Vec<&(String, Instant)> =
            list.iter().filter(|(_, t)| now.duration_since(*t) < self.cfg.ttl).collect();
        live.sort_by_key(|e| std::cmp::Reverse(e.1));
        live.into_iter()
            .filter_map(|(id, _)| {
                self.peers.get(id).map(|p| PeerRecord { peer_id: id.clone(), addrs: p.addrs.clone() })
            })
            .take(self.cfg.returned)
            .collect()
    }

    /// Drops expired entries, tracks left empty, and peers no track names.
    pub fn expire(&mut self, now: Instant) {
        let ttl = self.cfg.ttl;
        let mut entries = 0;
        self.tracks.retain(|_, list| {
            list.retain(|(_, t)| now.duration_since(*t) < ttl);
            entries += list.len();
            !list.is_empty()
        });
        self.entries = entries;
        self.peers.retain(|_, p| now.duration_since(p.seen) < ttl);
        self.buckets.retain(|_, b| !b.is_full(now.into_std()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

    fn ann(peer: &str, tracks: &[&str]) -> Announce {
        Announce {
            peer_id: peer.to_owned(),
            addrs: vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")],
            tracks: tracks.iter().map(|t| TrackId::parse(t).unwrap()).collect(),
        }
    }

    fn peer(n: usize) -> String {
        format!("12D3KooW{n:0>10}").replace('0', "z")
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn remembers_20_returns_10_newest_first() {
        let cfg = TrackerConfig { burst: 1000, ..TrackerConfig::default() };
        let mut t = Tracker::new(cfg);
        let start = Instant::now();
        let track = TrackId::parse("t").unwrap();
        for n in 0..30 {
            t.announce(
                start + Duration::from_secs(n as u64),
                ip(1),
                ann(&format!("{}{}", peer(0), n).replace('0', "z"), &["t"]),
            )
            .unwrap();
        }
        assert_eq!(t.entries(), 20);
        let now = start + Duration::from_secs(30);
        let got = t.peers(now, &track);
        assert_eq!(got.len(), 10);
        // The 10 most recent announces (peers 20..29), newest first.
        let want: Vec<String> = (20..30).rev().map(|n| format!("{}{}", peer(0), n).replace('0', "z")).collect();
        assert_eq!(got.iter().map(|p| p.peer_id.clone()).collect::<Vec<_>>(), want);
    }

    #[test]
    fn entries_expire() {
        let mut t = Tracker::new(TrackerConfig::default());
        let start = Instant::now();
        let track = TrackId::parse("t").unwrap();
        t.announce(start, ip(1), ann(PEER, &["t"])).unwrap();
        assert_eq!(t.peers(start + Duration::from_secs(299), &track).len(), 1);
        assert!(t.peers(start + Duration::from_secs(300), &track).is_empty());
        t.expire(start + Duration::from_secs(301));
        assert_eq!(t.entries(), 0);
        assert!(t.tracks.is_empty() && t.peers.is_empty());
    }

    #[test]
    fn rate_limited_per_source() {
        let mut t = Tracker::new(TrackerConfig::default());
        let now = Instant::now();
        for _ in 0..10 {
            t.announce(now, ip(1), ann(PEER, &["t"])).unwrap();
        }
        assert!(matches!(t.announce(now, ip(1), ann(PEER, &["t"])), Err(TrackerError::RateLimited(_))));
        // Another source is not affected; the first gets one more after the refill time.
        t.announce(now, ip(2), ann(PEER, &["t"])).unwrap();
        t.announce(now + Duration::from_secs(3), ip(1), ann(PEER, &["t"])).unwrap();
    }

    #[test]
    fn bounded_tracks_and_sources() {
        let cfg = TrackerConfig { max_tracks: 3, max_sources: 2, ..TrackerConfig::default() };
        let mut t = Tracker::new(cfg);
        let now = Instant::now();
        t.announce(now, ip(1), ann(PEER, &["a", "b", "c", "d", "e"])).unwrap();
        assert_eq!(t.tracks.len(), 3);
        t.announce(now, ip(2), ann(PEER, &["a"])).unwrap();
        assert!(matches!(t.announce(now, ip(3), ann(PEER, &["a"])), Err(TrackerError::RateLimited(_))));
    }

    #[test]
    fn a_full_table_is_swept_at_most_once_a_second() {
        let cfg =
            TrackerConfig { max_peers: 1, max_sources: 1, ttl: Duration::from_secs(10), ..TrackerConfig::default() };
        let mut t = Tracker::new(cfg);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        t.announce(at(0), ip(1), ann(&peer(1), &["t"])).unwrap();
        // Full of live entries: the sweep at 9.6 s frees nothing.
        assert_eq!(t.announce(at(9_600), ip(1), ann(&peer(2), &["t"])), Err(TrackerError::Full));
        // Peer 1 has expired at 10.1 s, but the last sweep was 0.5 s ago: still full.
        assert_eq!(t.announce(at(10_100), ip(1), ann(&peer(2), &["t"])), Err(TrackerError::Full));
        // A second after that sweep, the next one makes room.
        t.announce(at(10_700), ip(1), ann(&peer(2), &["t"])).unwrap();
        assert_eq!(t.peers(at(10_700), &TrackId::parse("t").unwrap()).len(), 1);

        // The same for the table of sources: source 1 used one of its 10 announces at 0 s and
        // has them all back at 3 s (one every 3 s). A sweep at 2.5 s finds it busy and blocks
        // the next until 3.5 s.
        let mut t = Tracker::new(TrackerConfig { max_sources: 1, ..TrackerConfig::default() });
        t.announce(at(0), ip(1), ann(&peer(1), &["t"])).unwrap();
        assert!(matches!(t.announce(at(2_500), ip(2), ann(&peer(2), &["t"])), Err(TrackerError::RateLimited(_))));
        assert!(matches!(t.announce(at(3_200), ip(2), ann(&peer(2), &["t"])), Err(TrackerError::RateLimited(_))));
        t.announce(at(3_600), ip(2), ann(&peer(2), &["t"])).unwrap();
    }

    #[test]
    fn peers_are_bounded_and_ipv6_is_limited_per_64() {
        let cfg = TrackerConfig { max_peers: 2, burst: 100, ..TrackerConfig::default() };
        let mut t = Tracker::new(cfg);
        let now = Instant::now();
        t.announce(now, ip(1), ann(&peer(1), &["t"])).unwrap();
        t.announce(now, ip(1), ann(&peer(2), &["t"])).unwrap();
        assert_eq!(t.announce(now, ip(1), ann(&peer(3), &["t"])), Err(TrackerError::Full));
        // Known peers may still re-announce; after expiry there is room again.
        t.announce(now, ip(1), ann(&peer(2), &["t"])).unwrap();
        t.announce(now + Duration::from_secs(301), ip(1), ann(&peer(3), &["t"])).unwrap();

        let mut t = Tracker::new(TrackerConfig::default());
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        for _ in 0..10 {
            t.announce(now, a, ann(PEER, &["t"])).unwrap();
        }
        assert!(matches!(t.announce(now, b, ann(PEER, &["t"])), Err(TrackerError::RateLimited(_))), "same /64");
    }

    #[test]
    fn malformed_announces() {
        let mut t = Tracker::new(TrackerConfig::default());
        let now = Instant::now();
        let mut a = ann(PEER, &["t"]);
        a.peer_id = "not/base58".into();
        assert!(matches!(t.announce(now, ip(1), a), Err(TrackerError::Invalid(_))));
        let mut a = ann(PEER, &["t"]);
        a.addrs = vec!["x".repeat(300)];
        assert!(matches!(t.announce(now, ip(1), a), Err(TrackerError::Invalid(_))));
        let mut a = ann(PEER, &["t"]);
        a.addrs = (0..9).map(|i| format!("/ip4/1.2.3.{i}/tcp/1")).collect();
        assert!(matches!(t.announce(now, ip(1), a), Err(TrackerError::Invalid(_))));
        assert!(serde_json::from_str::<Announce>(r#"{"peer_id":"x","addrs":[],"tracks":["../x"]}"#).is_err());
    }
}
