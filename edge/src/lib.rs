//! chorus-edge: the caching edge node.
//!
//! An edge serves the same read API as an origin, from a memory tier over a disk tier, and
//! fetches misses from upstreams (parent edges by consistent hashing, then origins), once per
//! chunk however many clients ask ([`chorus_http::coalesce`]). It prefetches what listeners will ask for
//! next ([`prefetch`]), tracks which peers hold which tracks ([`tracker`]), checks access
//! tokens, and exports the metrics planners read ([`metrics`]).
//!
//! - [`node::Edge`]: the node; [`api`]: its HTTP API;
//! - [`cache`]: the two tiers and their admission policy;
//! - [`upstream`]: upstream selection, health and failover;
//! - [`keys`]: content keys of protected tracks, for token holders only;
//! - [`manifests`]: the manifest cache; `chunk_index`: where each chunk sits in the cached
//!   manifests;
//! - [`mrc`]: the hit ratio at other cache sizes, estimated online for planners.
//!
//! Feature `io` (default) is the node; without it only the plain logic of [`cache`]'s tiers
//! and of [`tracker`]'s lists is built, with no HTTP, Redis or QUIC stack.
#![warn(missing_docs)]

// Plain logic, always built (the simulator uses it with `default-features = false`): the
// cache tiers' policy and the tracker's lists.
/// The chunk cache, from its own crate (the origin's object store uses it too).
pub use chorus_cache as cache;
pub mod tracker;

// The node: feature `io` (on by default).
#[cfg(feature = "io")]
pub mod api;
#[cfg(feature = "io")]
mod chunk_index;
#[cfg(feature = "io")]
#[cfg(feature = "io")]
pub mod keys;
#[cfg(feature = "io")]
pub mod manifests;
#[cfg(feature = "io")]
pub mod metrics;
#[cfg(feature = "io")]
pub mod mrc;
#[cfg(feature = "io")]
mod negative;
#[cfg(feature = "io")]
pub mod node;
#[cfg(feature = "io")]
pub mod player;
#[cfg(feature = "io")]
pub mod prefetch;
#[cfg(feature = "io")]
pub mod upstream;

#[cfg(feature = "io")]
pub use node::{Edge, EdgeConfig, EdgeError};
