//! chorus-cache: the chunk cache of edges and origins, a memory tier over a disk tier, sharing
//! one admission policy (TinyLFU).
//!
//! ```text
//! get(id):    memory ──hit──▶ Bytes (no copy)
//!               │miss
//!             disk ──hit, hash verified──▶ promoted to memory (if admitted) ──▶ Bytes
//!               │miss, or file corrupt (deleted, counted)
//!             Miss: the caller fetches upstream (coalesced) and calls insert()
//! insert(id): memory (admission) and disk (admission; written atomically off the runtime)
//! ```
//!
//! Every chunk read from disk is checked against its id, so a file damaged on disk, or a cache
//! directory carried over from another machine, is never served: it is dropped and fetched
//! again. A write error (disk full, I/O error) turns the disk tier off with a warning; the edge
//! keeps serving from memory and upstream.
//!
//! Prefetched chunks are remembered until a client asks for them (`used`) or they leave the
//! cache unasked (`wasted`), so operators can see whether prefetch pays.
//!
//! Prefetched chunks go to a **probation area**: an eighth of the memory tier, kept apart from
//! it, in least-recently-used order, and never on disk. No client has asked for them, so they
//! must not push out chunks clients do ask for: a flood of requests for the first segments of
//! many cold tracks (each starting a prefetch of the next ones) then only churns the probation
//! area. A prefetched chunk's first request promotes it into the memory tier through the
//! ordinary admission test; if it is not admitted it stays in probation.
//!
//! The tiers' plain logic ([`tier`], [`sketch`]) is what the simulator's edges use; the cache
//! ([`ChunkCache`]) adds the disk tier and runs its I/O on Tokio's blocking pool.
#![warn(missing_docs)]

pub mod disk;
pub mod sketch;
pub mod tier;
mod tiered;

pub use tiered::*;
