//! Why a fetch failed: one error type for opening and reading a track.

use chorus_core::manifest::ManifestError;
use chorus_core::{ChunkId, TrackId};

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No edge could be reached, or none delivered the manifest.
    #[error("no edge answered: {0}")]
    Unreachable(String),
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
    #[error("local cache: {0}")]
    Cache(#[from] std::io::Error),
    /// Bad settings (no edges, unusable TLS files).
    #[error("{0}")]
    Config(String),
}
