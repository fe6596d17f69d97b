//! chorus-client: the library players embed to fetch tracks from chorus edges.
//!
//! Start at [`ClientBuilder`]: it makes a [`Client`], whose [`Client::open`] returns a
//! [`Track`] that yields verified segments in play order, with seek, stats, cancellation and an
//! `AsyncRead` form ([`Track::reader`]). See docs/client.md and `examples/fetch_track.rs`.
//!
//! The decisions are plain logic, free of I/O and driven by an explicit clock so that they are
//! tested deterministically:
//!
//! - [`scheduler`]: which segment to fetch next, from which source, and when to hedge or fail
//!   over, by each segment's playback deadline;
//! - [`abr`]: which rendition (bitrate) each segment should be fetched in;
//! - `ladder`: which renditions a handle uses, and how the quality setting maps onto them;
//! - `playout`: what has been verified and what is handed over next, in play order;
//! - [`refresh`]: when a playing track asks the tracker again for peers;
//! - [`cache`]: the local cache of verified chunks on disk (LRU, size cap, crash-safe).
//!
//! The I/O around them, one room each:
//!
//! - `client`: [`ClientBuilder`] and [`Client`]; `open`: opening a track (edges, verified
//!   manifest, init chunks, the speculative first segment, the ladder plan);
//! - `driver`: the task behind a [`Track`], carrying out the scheduler's actions; `fetch`: the
//!   one path of a chunk (cache, then a peer or an edge; verified, then stored) that opening a
//!   track and the driver both take;
//! - `edges`: reaching an edge (HTTP/3 from `Alt-Svc` or an `h3://` URL, raced against TCP,
//!   falling back to it) and its pooled connections; [`remembered`]: what the client keeps of
//!   the network between runs (HTTP/3 alternatives, the throughput estimate); `p2p`: the peer
//!   node, peer lookup and announces;
//! - `track`: the handle a player holds ([`Track`], [`TrackReader`], [`Preload`]);
//!   `summary`: what a fetch did ([`Summary`]); `error`: [`FetchError`]; `sync`: locking.
//!
//! Each module is handed the parts of the client it uses (the driver and the peer search get a
//! `fetch::Fetcher`, not the whole client), so the modules import one another in one
//! direction: `client` ← `open` → `driver` → `fetch`/`p2p` → `edges` → `remembered` → `sync`.
//!
//! Blocking work (the cache's reads, hashing and fsyncs; manifest files) runs on tokio's
//! blocking pool, never on a runtime worker. docs/architecture.md shows where this crate sits.
//!
//! Feature `io` (default) is the client; without it the crate is the plain logic alone
//! ([`scheduler`], [`abr`], [`playout`], [`dials`], [`refresh`]) and compiles no HTTP, QUIC or libp2p stack:
//! the simulator (`chorus-sim`) uses it so.
#![warn(missing_docs)]

// The plain logic: always built (the simulator uses it with `default-features = false`).
pub mod abr;
pub mod dials;
pub mod playout;
pub mod refresh;
pub mod scheduler;

// The client itself: feature `io` (on by default).
#[cfg(feature = "io")]
pub mod cache;
#[cfg(feature = "io")]
mod client;
#[cfg(feature = "io")]
mod driver;
#[cfg(feature = "io")]
mod edges;
#[cfg(feature = "io")]
mod error;
#[cfg(feature = "io")]
mod fetch;
#[cfg(feature = "io")]
mod ladder;
#[cfg(feature = "io")]
mod open;
#[cfg(feature = "io")]
mod p2p;
#[cfg(feature = "io")]
pub mod remembered;
#[cfg(feature = "io")]
mod summary;
#[cfg(feature = "io")]
mod sync;
#[cfg(feature = "io")]
mod track;

#[cfg(feature = "io")]
pub use client::{Client, ClientBuilder};
#[cfg(feature = "io")]
pub use error::{EdgeFailure, FetchError};
#[cfg(feature = "io")]
pub use summary::{BySource, Summary};
#[cfg(feature = "io")]
pub use track::{Preload, Segment, Source, Track, TrackInfo, TrackReader};
