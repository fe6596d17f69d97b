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
//! - [`cache`]: the local cache of verified chunks on disk (LRU, size cap, crash-safe).
//!
//! [`fetch`] is the I/O around them: HTTP/3 with HTTP/2 fallback, verification, the local
//! cache, the QoE beacon.
#![warn(missing_docs)]

pub mod abr;
pub mod cache;
pub mod fetch;
pub mod scheduler;

pub use fetch::{Client, ClientBuilder, FetchError, Segment, Source, Summary, Track, TrackInfo, TrackReader};
