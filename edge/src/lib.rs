//! chorus-edge: the caching edge node.
//!
//! An edge serves the same read API as an origin, from a memory tier over a disk tier, and
//! fetches misses from upstreams (parent edges by consistent hashing, then origins), once per
//! chunk however many clients ask ([`coalesce`]). It prefetches what listeners will ask for
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
#![warn(missing_docs)]

pub mod api;
pub mod cache;
mod chunk_index;
pub mod coalesce;
pub mod keys;
pub mod manifests;
pub mod metrics;
pub mod mrc;
mod negative;
pub mod node;
pub mod player;
pub mod prefetch;
pub mod tracker;
pub mod upstream;

pub use node::{Edge, EdgeConfig, EdgeError};
