//! Upload limits: whether to answer a chunk request, decided before the chunk is read from
//! the store and again (the byte-rate cap) once its size is known.
//!
//! Plain logic with an explicit clock. A request is refused BUSY when the node is consume-only,
//! when [`crate::PeerConfig::max_uploads`] responses are already being read or written, or when
//! the upload-rate bucket ([`TokenBucket`], one second of burst) lacks the chunk's bytes. No
//! credential is asked for: what peers carry of a protected track is ciphertext, whose key only
//! edges hand out, to token holders (docs/security.md).
//!
//! Shares per peer (docs/security.md, "Peers"): one peer has at most [`MAX_PER_PEER`] requests
//! in progress, chunk and have together, so it cannot hold every upload slot or have load while
//! others wait. Have lists are kept per track for [`HAVE_TTL`] ([`HaveCache`]), and requests
//! for a list being made join that load, so a flood of have requests costs one store scan per
//! track and TTL. A reader that does not take its response loses its slot when the request
//! deadline (`PeerConfig::request_timeout`, which covers the whole inbound exchange, the
//! response's write included) cuts the stream.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chorus_core::rate::TokenBucket;
use chorus_core::{ChunkId, TrackId};
use libp2p::PeerId;

use crate::config::PeerConfig;
use crate::wire::Status;

/// Requests (chunk and have together) one peer may have in progress, at most: one peer cannot
/// take every upload slot or every have load from the others.
pub const MAX_PER_PEER: usize = 2;
/// Have lists made from the store at once, at most.
pub const MAX_HAVE_LOADS: usize = 16;
/// How long a have list, once made, answers every have request for its track.
pub const HAVE_TTL: Duration = Duration::from_secs(2);
/// Tracks whose have lists are kept.
const HAVE_CACHE: usize = 256;

/// Why a request gets BUSY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Busy {
    /// The node's limits: upload slots, have loads, consume-only.
    Node,
    /// The asking peer already has [`MAX_PER_PEER`] requests in progress.
    Share,
}

impl From<Busy> for Status {
    fn from(_: Busy) -> Self {
        Self::Busy
    }
}

/// The upload limits of one node, and the uploads in progress.
pub(crate) struct Uploads {
    max: usize,
    consume_only: bool,
    /// The upload cap: `upload_rate` bytes a second, one second of burst.
    bucket: Option<TokenBucket>,
    /// Requests admitted whose chunk is being read, or whose response is being written.
    busy: usize,
    /// Have lists being made from the store.
    have_loads: usize,
    /// Requests in progress per peer, chunk and have.
    per_peer: HashMap<PeerId, usize>,
}

impl Uploads {
    pub(crate) fn new(cfg: &PeerConfig, now: Instant) -> Self {
        Self {
            max: cfg.max_uploads,
            consume_only: cfg.consume_only,
            bucket: cfg.upload_rate.map(|r| TokenBucket::full(r as f64, r as f64, now)),
            busy: 0,
            have_loads: 0,
            per_peer: HashMap::new(),
        }
    }

    fn share(&self, peer: &PeerId) -> Result<(), Busy> {
        if self.per_peer.get(peer).copied().unwrap_or(0) >= MAX_PER_PEER {
            return Err(Busy::Share);
        }
        Ok(())
    }

    fn take_share(&mut self, peer: PeerId) {
        *self.per_peer.entry(peer).or_default() += 1;
    }

    fn give_share(&mut self, peer: &PeerId) {
        if let Some(n) = self.per_peer.get_mut(peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_peer.remove(peer);
            }
        }
    }

    /// Admits a chunk request of `peer`: `Ok` takes an upload slot and a share of the peer's,
    /// given back with [`Uploads::done`].
    ///
    /// # Errors
    /// Why it gets BUSY.
    pub(crate) fn admit(&mut self, peer: PeerId) -> Result<(), Busy> {
        if self.consume_only || self.busy >= self.max {
            return Err(Busy::Node);
        }
        self.share(&peer)?;
        self.busy += 1;
        self.take_share(peer);
        Ok(())
    }

    /// Whether `len` bytes may go out at `now` under the rate cap (an admitted request whose
    /// chunk was read). On `false` the request is answered BUSY and its slot given back.
    pub(crate) fn send(&mut self, len: usize, now: Instant) -> bool {
        self.bucket.as_mut().is_none_or(|b| b.take(len as f64, now).is_ok())
    }

    /// An admitted chunk request of `peer` is over (answered, refused after reading, failed).
    pub(crate) fn done(&mut self, peer: &PeerId) {
        self.busy = self.busy.saturating_sub(1);
        self.give_share(peer);
    }

    /// Admits a have request of `peer` that is not answered from the cache: `Ok` takes a share
    /// of the peer's and, when `new_load` (no list for its track is being made yet), a have
    /// load; both are given back with [`Uploads::have_done`].
    ///
    /// # Errors
    /// Why it gets BUSY.
    pub(crate) fn admit_have(&mut self, peer: PeerId, new_load: bool) -> Result<(), Busy> {
        if new_load && self.have_loads >= MAX_HAVE_LOADS {
            return Err(Busy::Node);
        }
        self.share(&peer)?;
        self.have_loads += usize::from(new_load);
        self.take_share(peer);
        Ok(())
    }

    /// A have request of `peer` was answered (or dropped).
    pub(crate) fn have_answered(&mut self, peer: &PeerId) {
        self.give_share(peer);
    }

    /// A have list was made (its load is over).
    pub(crate) fn have_loaded(&mut self) {
        self.have_loads = self.have_loads.saturating_sub(1);
    }
}

/// Have lists by track, kept [`HAVE_TTL`], and the requests waiting for a list being made
/// (`W`: what answers one). Plain logic on an explicit clock.
pub(crate) struct HaveCache<W> {
    lists: HashMap<TrackId, (Instant, Vec<ChunkId>)>,
    waiting: HashMap<TrackId, Vec<W>>,
}

impl<W> Default for HaveCache<W> {
    fn default() -> Self {
        Self { lists: HashMap::new(), waiting: HashMap::new() }
    }
}

impl<W> HaveCache<W> {
    /// The list of `track`, if one was made within [`HAVE_TTL`] of `now`.
    pub(crate) fn get(&self, track: &TrackId, now: Instant) -> Option<&[ChunkId]> {
        self.lists
            .get(track)
            .filter(|(made, _)| now.saturating_duration_since(*made) < HAVE_TTL)
            .map(|(_, held)| held.as_slice())
    }

    /// Whether a list of `track` is being made (a new request joins it).
    pub(crate) fn loading(&self, track: &TrackId) -> bool {
        self.waiting.contains_key(track)
    }

    /// `w` waits for the list of `track`; `true` when a load must start for it.
    pub(crate) fn wait(&mut self, track: TrackId, w: W) -> bool {
        let waiting = self.waiting.entry(track).or_default();
        waiting.push(w);
        waiting.len() == 1
    }

    /// The list of `track` was made at `now`: kept, and the requests that waited for it.
    pub(crate) fn loaded(&mut self, track: &TrackId, held: Vec<ChunkId>, now: Instant) -> Vec<W> {
        if self.lists.len() >= HAVE_CACHE && !self.lists.contains_key(track) {
            self.lists.retain(|_, (made, _)| now.saturating_duration_since(*made) < HAVE_TTL);
        }
        if self.lists.len() < HAVE_CACHE || self.lists.contains_key(track) {
            self.lists.insert(track.clone(), (now, held));
        }
        self.waiting.remove(track).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn requests_are_admitted_within_the_slots_and_rate() {
        let t0 = Instant::now();
        let cfg = PeerConfig { max_uploads: 2, upload_rate: Some(100), ..PeerConfig::default() };
        let mut u = Uploads::new(&cfg, t0);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        assert_eq!(u.admit(a), Ok(()));
        assert_eq!(u.admit(b), Ok(()));
        assert_eq!(u.admit(c), Err(Busy::Node), "both slots are taken");
        assert!(u.send(100, t0));
        u.done(&a);
        assert!(!u.send(100, t0), "the rate cap holds");
        u.done(&b);
        assert!(u.send(100, t0 + Duration::from_secs(1)), "refilled a second later");
        let metered = PeerConfig { consume_only: true, ..PeerConfig::default() };
        assert_eq!(Uploads::new(&metered, t0).admit(a), Err(Busy::Node));
    }

    #[test]
    fn one_peer_gets_a_bounded_share_of_chunk_and_have_work() {
        let t0 = Instant::now();
        let mut u = Uploads::new(&PeerConfig::default(), t0);
        let (greedy, other) = (PeerId::random(), PeerId::random());
        assert_eq!(u.admit(greedy), Ok(()));
        assert_eq!(u.admit_have(greedy, true), Ok(()));
        assert_eq!(u.admit(greedy), Err(Busy::Share), "a chunk and a have list: its share");
        assert_eq!(u.admit_have(greedy, false), Err(Busy::Share), "joining a load counts too");
        // The other peer gets the remaining slots.
        assert_eq!(u.admit(other), Ok(()));
        assert_eq!(u.admit_have(other, true), Ok(()));
        u.have_answered(&greedy);
        u.have_loaded();
        assert_eq!(u.admit(greedy), Ok(()), "a share comes back once a request is over");
        // Have loads are bounded for the node, whoever asks.
        let mut u = Uploads::new(&PeerConfig::default(), t0);
        for _ in 0..MAX_HAVE_LOADS {
            assert_eq!(u.admit_have(PeerId::random(), true), Ok(()));
        }
        assert_eq!(u.admit_have(PeerId::random(), true), Err(Busy::Node));
        assert_eq!(u.admit_have(PeerId::random(), false), Ok(()), "joining a load in progress costs no load");
    }

    #[test]
    fn have_lists_are_made_once_per_track_and_kept_briefly() {
        let t0 = Instant::now();
        let mut c: HaveCache<u32> = HaveCache::default();
        let t = TrackId::parse("tides").unwrap();
        assert!(c.get(&t, t0).is_none());
        assert!(c.wait(t.clone(), 1), "the first request starts a load");
        assert!(c.loading(&t));
        assert!(!c.wait(t.clone(), 2), "the next joins it");
        let id = ChunkId::of(b"x");
        assert_eq!(c.loaded(&t, vec![id], t0), vec![1, 2], "both are answered by one load");
        assert!(!c.loading(&t));
        assert_eq!(c.get(&t, t0 + HAVE_TTL - Duration::from_millis(1)), Some(&[id][..]));
        assert!(c.get(&t, t0 + HAVE_TTL).is_none(), "made again after the TTL");
        // The table stays bounded.
        for n in 0..(HAVE_CACHE + 10) {
            let track = TrackId::parse(&format!("t{n}")).unwrap();
            let _ = c.loaded(&track, Vec::new(), t0);
        }
        assert!(c.lists.len() <= HAVE_CACHE);
    }
}
