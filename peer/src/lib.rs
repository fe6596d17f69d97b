//! chorus-peer: the libp2p peer layer (SPEC §5).
//!
//! Listening clients swap verified chunks with each other. A [`Peer`] is a libp2p node (TCP
//! and QUIC, noise, yamux, identify, ping, Kademlia as `/chorus/kad/1.0.0`, mDNS) speaking the
//! two chorus protocols ([`wire`]): `/chorus/chunk/1.0.0` (one chunk by id) and
//! `/chorus/have/1.0.0` (which chunks of a track a peer holds). It serves chunks from a
//! [`Store`] within upload limits, and checks every chunk it receives against its id: a peer
//! that sends a wrong one is disconnected and never asked again.
#![warn(missing_docs)]

pub mod node;
pub mod store;
pub mod wire;

pub use libp2p::{Multiaddr, PeerId};
pub use node::{Peer, PeerConfig, PeerError, PeerMetrics};
pub use store::{DirStore, Store};
