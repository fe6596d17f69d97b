//! chorus-client: the library players embed to fetch tracks from chorus edges.
//!
//! This first part is the decision logic, free of I/O and driven by an explicit clock so that it
//! is tested deterministically:
//!
//! - [`scheduler`]: which segment to fetch next, from which source, and when to hedge or fail
//!   over, by each segment's playback deadline;
//! - [`abr`]: which rendition (bitrate) each segment should be fetched in;
//! - [`cache`]: the local cache of verified chunks on disk (LRU, size cap, crash-safe).
//!
//! The transport (HTTP/3 with HTTP/2 fallback, verification, local cache) and the public
//! builder API come next (issue 4).
#![warn(missing_docs)]

pub mod abr;
pub mod cache;
pub mod fetch;
pub mod scheduler;

pub use fetch::{Client, ClientBuilder, FetchError, Summary};
