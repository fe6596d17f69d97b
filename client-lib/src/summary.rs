//! What a fetch did: the summary `chorus fetch --json` prints (docs/protocol.md §1) and
//! [`crate::Track::stats`] returns.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Where a segment came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The local cache.
    Cache,
    /// An edge, by the base URL used (after any HTTP/3 → HTTPS fallback).
    Edge(String),
    /// A peer, by its libp2p peer id.
    Peer(String),
}

/// What a fetch did (the `--json` summary of docs/protocol.md §1).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The track.
    pub track_id: String,
    /// The rendition most segments came in.
    pub rendition: String,
    /// Segments handed over, by rendition (switches happen at segment boundaries).
    pub segments_by_rendition: BTreeMap<String, u64>,
    /// Bytes of all chunks handed over (init chunks included).
    pub bytes_total: u64,
    /// The same bytes by where they came from (they add up to `bytes_total`).
    pub bytes_by_source: BySource,
    /// From opening the track to the first verified playable segment (init + first segment).
    pub startup_ms: u64,
    /// Times playback would have run dry.
    pub stalls: u32,
    /// Time it would have been stalled.
    pub stall_ms: u64,
    /// Chunks that passed verification (including init chunks of renditions that were only
    /// read to decide which renditions can be switched among).
    pub chunks_verified: u64,
    /// Chunks refused (wrong bytes).
    pub chunks_rejected: u64,
    /// Requests sent to a second source: the startup race's second request, and hedges of
    /// requests that would be late.
    pub hedges: u32,
    /// Requests that failed (transport error, refusal, wrong bytes) and went elsewhere.
    pub failures: u32,
    /// Seeks.
    pub seeks: u32,
    /// Peers found holding chunks of the track (with `p2p`).
    pub peers: u32,
    /// The HTTP version that carried most of the track's requests to edges: `h3`, `h2` or
    /// `http/1.1` (`cache` when no edge was asked).
    pub protocol: String,
    /// The track's requests to edges by HTTP version (an `https://` edge that offers HTTP/3
    /// answers the first request of a new client over TCP, the rest over HTTP/3).
    pub requests_by_protocol: BTreeMap<String, u64>,
    /// Audio fetched ahead of the playhead right now (live; not part of the JSON summary).
    #[serde(skip)]
    pub buffer_ms: u64,
}

/// Bytes by source.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BySource {
    /// From edges.
    pub edge: u64,
    /// From peers.
    pub peer: u64,
    /// From the local cache.
    pub cache: u64,
}

impl BySource {
    pub(crate) fn add(&mut self, from: &Source, bytes: usize) {
        let slot = match from {
            Source::Cache => &mut self.cache,
            Source::Edge(_) => &mut self.edge,
            Source::Peer(_) => &mut self.peer,
        };
        *slot += bytes as u64;
    }
}

/// Whole milliseconds of `d`, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
