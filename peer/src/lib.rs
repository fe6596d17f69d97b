//! chorus-peer: the libp2p peer layer (docs/protocol.md §5).
//!
//! Listening clients swap verified chunks with each other. A [`Peer`] is a libp2p node (TCP
//! and QUIC, noise, yamux, identify, ping, Kademlia as `/chorus/kad/1.0.0`, mDNS) speaking the
//! two chorus protocols ([`wire`]): `/chorus/chunk/2.0.0` (one chunk by id) and
//! `/chorus/have/1.0.0` (which chunks of a track a peer holds). It serves chunks from a
//! [`Store`] within upload limits, and checks every chunk it receives against its id: a peer
//! that sends a wrong one is disconnected and never asked again.
//!
//! The rooms: [`node`] (the [`Peer`] handle), `driver` (the task that owns the swarm),
//! `behaviour` (the libp2p protocol set and swarm build), `config`, `error`, `metrics`,
//! `upload` (upload limits and per-peer shares, explicit clock), [`dial_guard`] (every dial
//! charged to a budget and a backoff), `direct` (chunks over direct connections only: a fetch
//! from a peer reached through a relay waits for the hole punch), `inbound` (inbound
//! connections below the total), `learned` (which reported addresses enter Kademlia),
//! `port_reuse` (a TCP dial the kernel refuses from the listening port is made again from a
//! fresh one), `relay` (relay and NAT state, explicit clock), [`wire`] (the two chorus
//! codecs), [`store`] (what a peer serves) and [`tracker`] (the edge tracker from a peer's
//! side; what each announce names is `chorus_core::holdings`).
#![warn(missing_docs)]

mod behaviour;
mod config;
pub mod dial_guard;
mod direct;
mod driver;
mod error;
pub mod inbound;
pub mod ip_limit;
mod learned;
mod metrics;
pub mod node;
mod port_reuse;
mod relay;
pub mod store;
pub mod tracker;
pub mod upload;
pub mod wire;

pub use libp2p::{Multiaddr, PeerId, identity, multiaddr};
pub use node::{MemoryLimit, Peer, PeerConfig, PeerError, PeerMetrics};
pub use store::{DirStore, NoChunks, Store};

/// This node's libp2p identity, kept in `path` (created on first use, mode 0600) so that its
/// peer id survives restarts and trackers and Kademlia keep finding it.
///
/// # Errors
/// [`PeerError::Start`] when the file cannot be read, written or decoded.
pub fn load_or_create_identity(path: &std::path::Path) -> Result<libp2p::identity::Keypair, PeerError> {
    let what = || format!("identity {}", path.display());
    match std::fs::read(path) {
        Ok(bytes) => libp2p::identity::Keypair::from_protobuf_encoding(&bytes).map_err(error::start(what())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = libp2p::identity::Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().map_err(error::start(what()))?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(error::start(what()))?;
            }
            chorus_core::fsutil::write_atomic(path, &bytes, 0o600).map_err(error::start(what()))?;
            Ok(key)
        }
        Err(e) => Err(error::start(what())(e)),
    }
}
