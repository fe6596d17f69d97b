//! The peer layer's metrics (docs/protocol.md §6), declared in one place with help text.

use prometheus::{IntCounter, IntGauge, Registry};

/// The peer layer's metrics (docs/protocol.md §6 names).
#[derive(Clone)]
pub struct PeerMetrics {
    /// Chunk bytes uploaded to other peers.
    pub sent_bytes: IntCounter,
    /// Verified chunk bytes downloaded from other peers.
    pub received_bytes: IntCounter,
    /// Chunks from peers that did not match their id.
    pub rejected_chunks: IntCounter,
    /// Connections open now.
    pub connections: IntGauge,
    /// Chunk requests answered BUSY (upload limits, consume-only).
    pub busy: IntCounter,
}

impl PeerMetrics {
    /// Registers the metrics in `registry`.
    #[must_use]
    pub fn new(registry: &Registry) -> Self {
        // Names and help are constants, so construction cannot fail.
        #[allow(clippy::expect_used)]
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            chorus_core::metrics::register(registry, &c);
            c
        };
        #[allow(clippy::expect_used)]
        let connections =
            IntGauge::new("chorus_peer_connections", "libp2p connections open now.").expect("valid metric");
        chorus_core::metrics::register(registry, &connections);
        Self {
            sent_bytes: counter("chorus_peer_sent_bytes_total", "Chunk bytes uploaded to other peers."),
            received_bytes: counter(
                "chorus_peer_received_bytes_total",
                "Chunk bytes downloaded from other peers and verified against their ids.",
            ),
            rejected_chunks: counter(
                "chorus_peer_rejected_chunks_total",
                "Chunks from peers whose bytes did not match their id (the peer is banned).",
            ),
            connections,
            busy: counter(
                "chorus_peer_busy_total",
                "Chunk requests answered BUSY (upload limit, bandwidth cap, or consume-only).",
            ),
        }
    }
}
