//! chorus-origin: where tracks enter the network.
//!
//! - [`ingest`]: audio in, chunks and a signed manifest out (ffmpeg ladder, HLS/CMAF import,
//!   or raw byte chunks of a pre-encoded file);
//! - [`store`]: the content-addressed chunk store, a directory (crash-safe) or an S3 bucket
//!   (shared by several origins), verified on read;
//! - [`api`]: the read API (docs/protocol.md §3) and `PUT /admin/tracks/{track}`;
//! - [`metrics`]: the origin's Prometheus metrics.
#![warn(missing_docs)]

pub mod api;
pub mod ingest;
pub mod metrics;
pub mod store;

pub use api::{ApiConfig, Origin};
pub use store::Store;
