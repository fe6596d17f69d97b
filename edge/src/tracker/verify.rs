//! An announce checked: its signature, time, edge name and addresses ([`AnnounceCheck`]), and
//! what passed ([`Verified`]), which the tracker records.

use std::net::IpAddr;

use chorus_core::TrackId;
use chorus_core::announce::{self, SignedAnnounce};
use chorus_core::p2p::Multiaddr;

use super::{TrackerConfig, TrackerError};

/// An announce that passed [`AnnounceCheck::verify`], its addresses cut to those that may be
/// listed.
#[derive(Debug, Clone)]
pub struct Verified {
    pub(super) peer_id: String,
    pub(super) addrs: Vec<String>,
    pub(super) tracks: Vec<TrackId>,
    pub(super) held: Vec<TrackId>,
    pub(super) dropped: Vec<TrackId>,
    pub(super) timestamp: u64,
    /// A digest of what was signed besides the time (addresses and tracks), to tell a second
    /// announce within the same second from a replay of the first.
    pub(super) content: u64,
}

/// The digest of an announce's signed addresses, tracks and edge name ([`Verified::content`]):
/// the first 8 bytes of their BLAKE3 hash. Only the peer can sign two announces of one second,
/// so it needs to tell them apart, not to resist a forger; it is the same on every edge, so
/// edges sharing one tracker (see the shared tracker) agree on what a replay is, and the announces a
/// client sends to two of them in one second (one per edge name) are not taken for replays.
/// Held and dropped tracks count only when there are some: an announce without them digests as
/// before they existed.
pub(super) fn content_digest(
    addrs: &[String],
    tracks: &[TrackId],
    held: &[TrackId],
    dropped: &[TrackId],
    edge: &str,
) -> u64 {
    let mut h = blake3::Hasher::new();
    let more: Vec<&str> = if held.is_empty() && dropped.is_empty() {
        Vec::new()
    } else {
        let (held, dropped) = (held.iter().map(TrackId::as_str), dropped.iter().map(TrackId::as_str));
        std::iter::once("\u{0}held").chain(held).chain(["\u{0}dropped"]).chain(dropped).collect()
    };
    let parts = addrs
        .iter()
        .map(String::as_str)
        .chain([""])
        .chain(tracks.iter().map(TrackId::as_str))
        .chain(["", edge])
        .chain(more);
    for part in parts {
        // Length-prefixed, so no two lists hash alike by moving a boundary.
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    let mut first = [0u8; 8];
    first.copy_from_slice(&h.finalize().as_bytes()[..8]);
    u64::from_le_bytes(first)
}

impl Verified {
    /// An announce taken as verified without its signature: for simulations (`chorus-sim`),
    /// which drive this tracker with many listeners and no keys. An edge never builds one
    /// this way; its announces pass [`AnnounceCheck::verify`].
    #[must_use]
    pub fn assume(peer_id: String, addrs: Vec<String>, tracks: Vec<TrackId>, timestamp: u64) -> Self {
        let content = content_digest(&addrs, &tracks, &[], &[], "");
        Self { peer_id, addrs, tracks, held: Vec::new(), dropped: Vec::new(), timestamp, content }
    }

    /// [`Verified::assume`]'s announce, naming `held` tracks in its cache and `dropped` ones
    /// too.
    #[must_use]
    pub fn with_cache(mut self, held: Vec<TrackId>, dropped: Vec<TrackId>) -> Self {
        self.content = content_digest(&self.addrs, &self.tracks, &held, &dropped, "");
        self.held = held;
        self.dropped = dropped;
        self
    }

    /// The tracks it plays (or just played).
    #[must_use]
    pub fn tracks(&self) -> &[TrackId] {
        &self.tracks
    }

    /// The tracks in its cache.
    #[must_use]
    pub fn held(&self) -> &[TrackId] {
        &self.held
    }

    /// The tracks it no longer holds.
    #[must_use]
    pub fn dropped(&self) -> &[TrackId] {
        &self.dropped
    }

    /// The tracks it lists (played and held), played first.
    pub fn listing(&self) -> impl Iterator<Item = &TrackId> {
        self.tracks.iter().chain(&self.held)
    }

    /// Keeps only the played and held tracks `keep` accepts (those the edge can vouch for);
    /// returns how many were dropped.
    pub fn keep_tracks(&mut self, keep: impl Fn(&TrackId) -> bool) -> usize {
        let before = self.tracks.len() + self.held.len();
        self.tracks.retain(|t| keep(t));
        self.held.retain(|t| keep(t));
        before - self.tracks.len() - self.held.len()
    }

    /// The peer id it announces.
    #[must_use]
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The addresses that may be listed.
    #[must_use]
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// Its signed time (seconds since the Unix epoch).
    #[must_use]
    pub const fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// [`content_digest`] of its addresses and tracks.
    #[must_use]
    pub const fn content(&self) -> u64 {
        self.content
    }
}

/// What an announce is checked against: this edge's names and relays. Immutable, so announces
/// are verified outside the tracker's lock.
#[derive(Debug, Clone)]
pub struct AnnounceCheck {
    names: Vec<String>,
    /// The configured relays that name their peer id (`…/p2p/ID`).
    relays: Vec<Multiaddr>,
}

impl AnnounceCheck {
    /// The check for a tracker configured with `cfg`.
    #[must_use]
    pub fn new(cfg: &TrackerConfig) -> Self {
        let relays = cfg
            .relays
            .iter()
            .filter_map(|r| r.parse::<Multiaddr>().ok())
            .filter(|a| matches!(a.iter().last(), Some(chorus_core::p2p::multiaddr::Protocol::P2p(_))))
            .collect();
        Self { names: cfg.names.iter().map(|n| n.to_ascii_lowercase()).collect(), relays }
    }

    /// Opens `signed`, sent from `sender` to `authority` (the request's `host:port`) at
    /// `unix_now` (seconds since the Unix epoch), and keeps the addresses that may be listed.
    ///
    /// # Errors
    /// [`TrackerError::Refused`] or [`TrackerError::NoAddress`].
    pub fn verify(
        &self,
        signed: &SignedAnnounce,
        sender: IpAddr,
        authority: Option<&str>,
        unix_now: u64,
    ) -> Result<Verified, TrackerError> {
        let (ann, peer) = signed.open()?;
        announce::check_time(&ann, unix_now)?;
        announce::check_edge(&ann, &self.names, authority)?;
        let addrs = announce::bound_addrs(&ann, peer, sender, &self.relays);
        if addrs.is_empty() {
            return Err(TrackerError::NoAddress { sender: chorus_core::ip::canonical(sender) });
        }
        let content = content_digest(&ann.addrs, &ann.tracks, &ann.held, &ann.dropped, &ann.edge);
        Ok(Verified {
            peer_id: ann.peer_id,
            addrs,
            tracks: ann.tracks,
            held: ann.held,
            dropped: ann.dropped,
            timestamp: ann.timestamp,
            content,
        })
    }
}
