//! Why a fetch failed: one error type for opening and reading a track, each variant with its
//! cause, and whether trying again can help.

use chorus_core::manifest::ManifestError;
use chorus_core::{ChunkId, TrackId};
use chorus_http::client::ClientError;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No edge was reachable and no verified copy of the manifest is in the local cache.
    #[error("no edge reachable (tried {tried:?}) and no copy of the manifest in the local cache")]
    Unreachable {
        /// The configured edges.
        tried: Vec<String>,
    },
    /// Edges were reached, but none delivered a manifest; the last one's failure is the cause.
    #[error("no edge delivered the manifest")]
    NoManifest(#[source] EdgeFailure),
    /// The manifest failed verification against the pinned origin key.
    #[error("manifest refused")]
    Manifest(#[from] ManifestError),
    /// The track is unknown.
    #[error("unknown track {0}")]
    NotFound(TrackId),
    /// Every source failed for a chunk, for too long.
    #[error("chunk {0} could not be fetched from any edge")]
    Chunk(ChunkId),
    /// The local cache failed.
    #[error("local cache")]
    Cache(#[from] std::io::Error),
    /// No edge was configured.
    #[error("give at least one edge")]
    NoEdges,
    /// An edge's URL is not a base URL.
    #[error("edge URL")]
    BadEdge(#[source] chorus_core::url::UrlError),
    /// The TLS trust settings (`--ca` files) are unusable.
    #[error("TLS trust settings")]
    Tls(#[source] ClientError),
    /// [`crate::Client::preload`] needs a cache directory to preload into.
    #[error("preloading needs a cache directory")]
    NoCache,
    /// A preload's task ended without a result (cancelled or panicked).
    #[error("preload stopped")]
    Preload(#[source] tokio::task::JoinError),
    /// The track is protected and every edge refused its content key: the client's token is
    /// missing, invalid, expired or does not cover the track, or no edge hands out keys.
    #[error("track {track} is protected and the edges refused its key ({status}): a token covering it is needed")]
    KeyRefused {
        /// The track.
        track: TrackId,
        /// The last refusal (401: no or bad token; 403: not covered, or the edge serves no keys).
        status: http::StatusCode,
    },
    /// The track is protected and no edge delivered its content key.
    #[error("no edge delivered the content key of protected track {0}")]
    NoKey(TrackId, #[source] EdgeFailure),
    /// A verified segment did not decrypt with the key (the track was re-ingested meanwhile).
    #[error("a segment of protected track {0} did not decrypt")]
    Decrypt(TrackId, #[source] chorus_core::protect::ProtectError),
}

/// What went wrong at one edge.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeFailure {
    /// The request failed (connection, timeout, body).
    #[error("{edge}")]
    Request {
        /// The edge's base URL.
        edge: String,
        /// Why.
        #[source]
        cause: ClientError,
    },
    /// The edge answered with an unexpected status.
    #[error("{edge} answered {status}")]
    Status {
        /// The edge's base URL.
        edge: String,
        /// Its answer.
        status: http::StatusCode,
    },
    /// What the edge sent did not verify.
    #[error("{edge} sent a manifest that does not verify")]
    Manifest {
        /// The edge's base URL.
        edge: String,
        /// Why.
        #[source]
        cause: ManifestError,
    },
    /// The edge sent a validly signed manifest of another track.
    #[error("{edge} sent the manifest of track {got}, not of the track asked for")]
    OtherTrack {
        /// The edge's base URL.
        edge: String,
        /// The track the manifest is of.
        got: chorus_core::TrackId,
    },
}

impl FetchError {
    /// Whether trying again later (or with other edges) may succeed: the network, the edges or
    /// the sources may recover; a wrong key, an unknown track or bad settings will not.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable { .. }
            | Self::NoManifest(_)
            | Self::Chunk(_)
            | Self::Cache(_)
            | Self::Preload(_)
            | Self::NoKey(..)
            | Self::Decrypt(..) => true,
            Self::Manifest(_)
            | Self::NotFound(_)
            | Self::NoEdges
            | Self::BadEdge(_)
            | Self::Tls(_)
            | Self::NoCache
            | Self::KeyRefused { .. } => false,
        }
    }
}
