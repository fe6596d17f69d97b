//! chorus-core: the protocol types every chorus crate shares. No async runtime, no network:
//! the serving front, the client and the responses built from these types are in
//! `chorus-http`.
//!
//! - [`api`]: the JSON bodies of the tracker and QoE routes, with their limits;
//! - [`announce`]: signed announces, and the addresses a tracker may list from one;
//! - [`id`]: track and chunk ids, validated once where they enter the system;
//! - [`manifest`]: the signed track manifest (ed25519 over RFC 8785 canonical JSON);
//! - [`keys`]: ed25519 keys in PEM; [`token`]: EdDSA JWT access tokens;
//! - [`protect`]: protected tracks (AES-128 content keys, segment IVs, HLS `METHOD=AES-128`);
//! - [`hls`]: HLS playlists generated from a manifest (their text);
//! - [`route`]: the HTTP API's routes, parsed from and written to request paths; [`url`]:
//!   base URLs of edges and origins (`h3://HOST:PORT`), parsed once with a clear error;
//! - [`rate`]: the token bucket every limit uses; [`ip`]: source addresses as limits count
//!   them (a host is an IPv4 address or an IPv6 /64);
//! - [`error`]: causes inside typed errors, and printing an error with its causes;
//! - [`units`]: sizes (`512MiB`) and durations (`30s`) as the CLI and config files write them;
//! - [`fsutil`]: crash-safe file writes; [`chunkdir`]: the on-disk layout of chunk directories.
//!
//! Only [`fsutil`] and [`chunkdir`] touch files; nothing here opens a socket or needs tokio.
#![warn(missing_docs)]

pub mod announce;
pub mod api;
pub mod chunkdir;
pub mod cmaf;
pub mod error;
pub mod fsutil;
pub mod hls;
pub mod holdings;
pub mod id;
pub mod ip;
pub mod keys;
pub mod manifest;
pub mod protect;
pub mod rate;
pub mod route;
pub mod token;
pub mod units;
pub mod url;

pub use id::{ChunkId, IdError, RenditionId, TrackId};

/// The libp2p address and identity types the protocol types use: the very types `libp2p`
/// re-exports, for crates that need them without libp2p's transports.
pub mod p2p {
    pub use libp2p_core::{Multiaddr, multiaddr};
    pub use libp2p_identity::{Keypair, PeerId};
}
pub use manifest::Manifest;
