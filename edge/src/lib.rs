//! chorus-edge: the caching edge node.
#![warn(missing_docs)]

pub mod cache;
pub mod coalesce;
pub mod manifests;
pub mod metrics;
pub mod prefetch;
pub mod tracker;
pub mod upstream;
