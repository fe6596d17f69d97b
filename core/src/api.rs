//! The JSON bodies of the tracker and QoE routes (docs/protocol.md §3) and their limits: one
//! definition that the edge (which parses and answers them), the peer and the client (which
//! send and read them) all use.
//!
//! Pure types, no I/O. What an edge accepts is checked by [`Announce::validate`] and
//! [`QoeBeacon::validate`]; what a client reads from an edge ([`TrackerAnswer`]) is taken
//! leniently, entry by entry: an entry that does not parse is skipped, not the whole answer.

use serde::{Deserialize, Deserializer, Serialize};

use crate::TrackId;

/// Most addresses one announce may carry.
pub const MAX_ADDRS: usize = 8;
/// Longest multiaddr accepted, in bytes.
pub const MAX_ADDR_LEN: usize = 256;
/// Most tracks one announce may name, in its three lists together (`tracks`, `held`,
/// `dropped`).
pub const MAX_TRACKS_PER_ANNOUNCE: usize = 256;
/// Longest peer id accepted (a base58 libp2p peer id is 46–53 characters).
pub const MAX_PEER_ID_LEN: usize = 128;
/// Most peers a client takes from one tracker answer (an edge answers at most 10).
pub const MAX_PEERS_TAKEN: usize = 16;
/// Most relays a client takes from one tracker answer.
pub const MAX_RELAYS: usize = 4;

/// Longest edge name an announce may be signed for (`host:port`).
pub const MAX_EDGE_LEN: usize = 255;
/// How often a peer announces what it holds again: well inside the tracker's five-minute
/// memory of an announce, so a live peer never drops out of the lists. Every announcer (the
/// client, `chorus peer`, the demo's seeders) and the simulator go by it.
pub const REANNOUNCE: std::time::Duration = std::time::Duration::from_secs(120);
/// How long a tracker lists a peer for a track it announced as `held` (in its cache, not
/// playing), while the peer itself stays live (announces anything at least every five
/// minutes). A peer's whole cache stays listed at the cost of one small announce per
/// [`REANNOUNCE`], and each holding is named again only every [`HELD_REANNOUNCE`].
pub const HELD_TTL: std::time::Duration = std::time::Duration::from_secs(3600);
/// How often a peer names a holding again: well inside [`HELD_TTL`].
pub const HELD_REANNOUNCE: std::time::Duration = std::time::Duration::from_secs(45 * 60);

/// What a peer announces: where it listens and which tracks it holds, for one edge at one
/// time. It travels only inside a signed envelope ([`crate::announce::SignedAnnounce`]), the
/// body of `POST /v1/peers/announce`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Announce {
    /// The peer's libp2p id (base58); the envelope must be signed by its key.
    pub peer_id: String,
    /// Where it listens, as multiaddrs.
    pub addrs: Vec<String>,
    /// The tracks it is playing or has just played: listed for five minutes, and a newcomer
    /// takes the place of the stalest entry of a full list (the freshest holders are listed).
    pub tracks: Vec<TrackId>,
    /// Tracks in its cache (complete or partly): listed for [`HELD_TTL`] while the peer is
    /// live, and only where a list has room (they displace no one); the tracker's answer
    /// names those it did not list ([`AnnounceAnswer::unlisted`]). Absent when empty, so an
    /// announce without it is signed as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<TrackId>,
    /// Tracks it announced before and no longer holds (evicted): its entries go at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<TrackId>,
    /// When it was made, in seconds since the Unix epoch (by the edge's clock, as far as the
    /// peer knows it).
    pub timestamp: u64,
    /// The edge it is meant for: the `host:port` of the URL the peer sends it to, lower case.
    pub edge: String,
}

/// Why an announce or a beacon breaks the contract (the edge answers 400 with this text).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Announce {
    /// Checks the announce against the limits above and the formats of peer ids and
    /// multiaddrs, before any of it is stored.
    ///
    /// # Errors
    /// [`Invalid`] saying which rule was broken.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !valid_peer_id(&self.peer_id) {
            return Err(Invalid("peer_id must be a base58 libp2p peer id".into()));
        }
        if self.addrs.is_empty() || self.addrs.len() > MAX_ADDRS || !self.addrs.iter().all(|a| valid_multiaddr(a)) {
            return Err(Invalid(format!("addrs must be 1 to {MAX_ADDRS} multiaddrs of at most {MAX_ADDR_LEN} bytes")));
        }
        if self.tracks.len() + self.held.len() + self.dropped.len() > MAX_TRACKS_PER_ANNOUNCE {
            return Err(Invalid(format!(
                "at most {MAX_TRACKS_PER_ANNOUNCE} tracks per announce (tracks, held and dropped)"
            )));
        }
        if self.dropped.iter().any(|d| self.tracks.contains(d) || self.held.contains(d)) {
            return Err(Invalid("a dropped track cannot also be held or played".into()));
        }
        if self.edge.is_empty() || self.edge.len() > MAX_EDGE_LEN || !self.edge.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Invalid(format!(
                "edge must be the host:port the announce is sent to, at most {MAX_EDGE_LEN} bytes"
            )));
        }
        Ok(())
    }
}

fn valid_peer_id(s: &str) -> bool {
    // base58btc alphabet (no 0, O, I, l).
    !s.is_empty()
        && s.len() <= MAX_PEER_ID_LEN
        && s.bytes().all(|b| b.is_ascii_alphanumeric() && !matches!(b, b'0' | b'O' | b'I' | b'l'))
}

fn valid_multiaddr(s: &str) -> bool {
    s.starts_with('/') && s.len() <= MAX_ADDR_LEN && s.bytes().all(|b| b.is_ascii_graphic())
}

/// A JSON error body, with the edge's clock when the error is about time (a signed announce
/// outside its window), so that a peer with a wrong clock can sign again by the edge's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What was wrong.
    pub error: String,
    /// The edge's time, in seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<u64>,
}

/// The answer to an announce (`200`, JSON): what the tracker did not list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceAnswer {
    /// Tracks of the announce's `held` that were not listed because their list is full of
    /// live holders (or of holders from the announcer's network). The peer names them again
    /// only much later, and the others first: what is scarce goes first.
    #[serde(default, deserialize_with = "lenient")]
    pub unlisted: Vec<TrackId>,
    /// Tracks of the announce's `held` that the edge cannot vouch for yet (no manifest here,
    /// and none fetched for this announce): named again in a while.
    #[serde(default, deserialize_with = "lenient")]
    pub unknown: Vec<TrackId>,
}

/// One peer in a tracker answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerRecord {
    /// The peer's libp2p id.
    pub peer_id: String,
    /// Where it listens.
    pub addrs: Vec<String>,
}

/// `GET /v1/tracks/{track}/peers`: peers holding the track, and the edge's circuit relays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrackerAnswer {
    /// Live peers for the track, most recent first.
    #[serde(deserialize_with = "lenient")]
    pub peers: Vec<PeerRecord>,
    /// Relay multiaddrs (`…/p2p/RELAY_ID`), present only when the edge offers relays.
    #[serde(default, skip_serializing_if = "Vec::is_empty", deserialize_with = "lenient")]
    pub relays: Vec<String>,
}

/// A list whose entries that do not parse as `T` are skipped.
fn lenient<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Entry<T> {
        Good(T),
        Bad(serde::de::IgnoredAny),
    }
    let all: Vec<Entry<T>> = Vec::deserialize(d)?;
    Ok(all
        .into_iter()
        .filter_map(|e| match e {
            Entry::Good(t) => Some(t),
            Entry::Bad(_) => None,
        })
        .collect())
}

/// Upper bounds on beacon values: anything beyond is not a real play.
pub mod qoe_limits {
    /// Longest startup, or total stall time, a beacon may report (1 h), in milliseconds.
    pub const MAX_MS: u64 = 3_600_000;
    /// Most stalls in one beacon (one play).
    pub const MAX_STALLS: u64 = 1_000;
    /// Most bytes from one source in one beacon (4 GiB: a day of 320 kbit/s is 3.5 GB).
    pub const MAX_BYTES: u64 = 1 << 32;
}

/// `POST /v1/qoe`: what one play was like, sent by the client when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QoeBeacon {
    /// The track played.
    pub track_id: TrackId,
    /// From opening the track to the first playable audio.
    pub startup_ms: u64,
    /// Times playback ran dry.
    #[serde(default)]
    pub stalls: u64,
    /// Time spent stalled.
    #[serde(default)]
    pub stall_ms: u64,
    /// Bytes played by where they came from.
    #[serde(default)]
    pub bytes: QoeBytes,
}

/// Bytes of a play by source.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QoeBytes {
    /// From edges.
    #[serde(default)]
    pub edge: u64,
    /// From peers.
    #[serde(default)]
    pub peer: u64,
    /// From the local cache.
    #[serde(default)]
    pub cache: u64,
}

impl QoeBeacon {
    /// Checks every value against [`qoe_limits`].
    ///
    /// # Errors
    /// [`Invalid`] when a value is out of range.
    pub fn validate(&self) -> Result<(), Invalid> {
        use qoe_limits::{MAX_BYTES, MAX_MS, MAX_STALLS};
        let b = &self.bytes;
        if self.startup_ms > MAX_MS
            || self.stall_ms > MAX_MS
            || self.stalls > MAX_STALLS
            || [b.edge, b.peer, b.cache].iter().any(|v| *v > MAX_BYTES)
        {
            return Err(Invalid("beacon values out of range".into()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_skip_what_does_not_parse_and_omit_empty_relays() {
        let a: TrackerAnswer = serde_json::from_str(
            r#"{"peers": [{"peer_id": "a", "addrs": ["/x"]}, {"peer_id": 7}], "relays": ["/r", 7]}"#,
        )
        .unwrap();
        assert_eq!(a.peers, [PeerRecord { peer_id: "a".into(), addrs: vec!["/x".into()] }]);
        assert_eq!(a.relays, ["/r"]);
        let none = TrackerAnswer { peers: Vec::new(), relays: Vec::new() };
        assert_eq!(serde_json::to_string(&none).unwrap(), r#"{"peers":[]}"#);
        assert!(serde_json::from_str::<TrackerAnswer>(r#"{"relays": []}"#).is_err(), "peers is required");
    }

    #[test]
    fn announces_are_bounded() {
        let id = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let ok = Announce {
            peer_id: id.into(),
            addrs: vec!["/ip4/10.0.0.1/tcp/1".into()],
            tracks: Vec::new(),
            held: Vec::new(),
            dropped: Vec::new(),
            timestamp: 0,
            edge: "edge:443".into(),
        };
        assert_eq!(ok.validate(), Ok(()));
        // Without held or dropped tracks, the JSON (which is what is signed) is as before.
        assert!(!serde_json::to_string(&ok).unwrap().contains("held"));
        let t = |s: &str| TrackId::parse(s).unwrap();
        let split = Announce {
            tracks: vec![t("t"); 100],
            held: vec![t("h"); 100],
            dropped: vec![t("d"); MAX_TRACKS_PER_ANNOUNCE - 200],
            ..ok.clone()
        };
        assert_eq!(split.validate(), Ok(()));
        let over = Announce { held: vec![t("h"); 101], ..split };
        assert!(over.validate().is_err(), "the bound is on the three lists together");
        let both = Announce { held: vec![t("x")], dropped: vec![t("x")], ..ok.clone() };
        assert!(both.validate().is_err());
        let bad_id = Announce { peer_id: "0OIl".into(), ..ok.clone() };
        assert!(bad_id.validate().is_err());
        let no_addrs = Announce { addrs: Vec::new(), ..ok.clone() };
        assert!(no_addrs.validate().is_err());
        let long = Announce { addrs: vec![format!("/{}", "a".repeat(MAX_ADDR_LEN))], ..ok.clone() };
        assert!(long.validate().is_err());
        let many = Announce { tracks: vec![TrackId::parse("t").unwrap(); MAX_TRACKS_PER_ANNOUNCE + 1], ..ok };
        assert!(many.validate().is_err());
        assert!(serde_json::from_str::<Announce>(r#"{"peer_id":"x","addrs":[],"tracks":[],"more":1}"#).is_err());
    }

    #[test]
    fn beacons_are_bounded_and_default_what_is_missing() {
        let b: QoeBeacon = serde_json::from_str(r#"{"track_id": "t", "startup_ms": 120}"#).unwrap();
        assert_eq!((b.stalls, b.bytes), (0, QoeBytes::default()));
        assert_eq!(b.validate(), Ok(()));
        let huge = QoeBeacon { startup_ms: qoe_limits::MAX_MS + 1, ..b.clone() };
        assert!(huge.validate().is_err());
        let bytes = QoeBeacon { bytes: QoeBytes { peer: qoe_limits::MAX_BYTES + 1, ..b.bytes }, ..b };
        assert!(bytes.validate().is_err());
    }
}
