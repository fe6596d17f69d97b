//! The peer layer's metrics (docs/protocol.md §6), declared in one place with help text.

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

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
    /// Inbound connections open now (at most `PeerConfig::max_inbound`).
    pub inbound_connections: IntGauge,
    /// Chunk requests answered BUSY (upload limits, consume-only).
    pub busy: IntCounter,
    /// Chunk and have requests answered BUSY because the asking peer had its share in progress.
    pub share_busy: IntCounter,
    /// Have requests answered from a list already made or being made (no store scan of their own).
    pub have_cached: IntCounter,
    /// Uploads cut off at the request deadline (a reader that did not take its response).
    pub upload_timeouts: IntCounter,
    /// Inbound connections closed to make room for a newcomer (idle the longest).
    pub inbound_evicted: IntCounter,
    /// Inbound connections refused: inbound full, none idle long enough to evict.
    pub inbound_refused: IntCounter,
    /// Dials started (every transport dial of an address, the node's own and the application's).
    pub dials: IntCounter,
    /// Dials refused by the dial guard, by `reason` (`address`, `budget`, `backoff`).
    pub dials_refused: IntCounterVec,
    /// Addresses peers reported (identify) or mDNS found that were kept out of Kademlia.
    pub learned_addrs_refused: IntCounter,
    /// Direct connections that replaced a relay circuit to the same peer (a hole punched).
    pub punched: IntCounter,
    /// Chunk fetches failed because the peer stayed reachable only through a relay.
    pub relayed_only: IntCounter,
}

impl PeerMetrics {
    /// Registers the metrics in `registry`.
    #[must_use]
    pub fn new(registry: &Registry) -> Self {
        // Names and help are constants, so construction cannot fail.
        #[allow(clippy::expect_used)]
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            chorus_http::metrics::register(registry, &c);
            c
        };
        #[allow(clippy::expect_used)]
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            chorus_http::metrics::register(registry, &g);
            g
        };
        #[allow(clippy::expect_used)]
        let dials_refused = IntCounterVec::new(
            Opts::new(
                "chorus_peer_dials_refused_total",
                "Dials the node's dial guard refused, by reason: address (not a direct address, or \
                 unspecified, multicast, broadcast, link-local), budget (64 dials a minute already \
                 started), backoff (the address failed recently).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        chorus_http::metrics::register(registry, &dials_refused);
        for reason in [
            crate::dial_guard::Refused::Address,
            crate::dial_guard::Refused::Budget,
            crate::dial_guard::Refused::Backoff,
        ] {
            dials_refused.with_label_values(&[reason.as_str()]);
        }
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
            connections: gauge("chorus_peer_connections", "libp2p connections open now."),
            punched: counter(
                "chorus_peer_punched_total",
                "Direct connections that replaced a relay circuit to the same peer (a hole punched \
                 through NATs, DCUtR); the circuit is then closed.",
            ),
            relayed_only: counter(
                "chorus_peer_fetches_relayed_only_total",
                "Chunk fetches failed because the peer stayed reachable only through a relay circuit \
                 for 3 s (chunks do not travel over circuits; the client takes them from an edge).",
            ),
            inbound_connections: gauge(
                "chorus_peer_inbound_connections",
                "Inbound libp2p connections open now (bounded below the total so that dials keep room).",
            ),
            busy: counter(
                "chorus_peer_busy_total",
                "Chunk requests answered BUSY (upload limit, bandwidth cap, or consume-only).",
            ),
            share_busy: counter(
                "chorus_peer_share_busy_total",
                "Chunk and have requests answered BUSY because the asking peer already had its share \
                 (2) of requests in progress.",
            ),
            have_cached: counter(
                "chorus_peer_have_cached_total",
                "Have requests answered from a list made within 2 s or joined to one being made: \
                 store scans saved.",
            ),
            upload_timeouts: counter(
                "chorus_peer_upload_timeouts_total",
                "Uploads cut off at the request deadline, their slot freed (a reader that did not \
                 take its response in time).",
            ),
            inbound_evicted: counter(
                "chorus_peer_inbound_evicted_total",
                "Inbound connections closed to make room for a new one because inbound was full \
                 (the one longest without a chunk exchanged, idle at least 30 s).",
            ),
            inbound_refused: counter(
                "chorus_peer_inbound_refused_total",
                "Inbound connections refused because inbound was full and none was idle long enough \
                 to evict.",
            ),
            dials: counter(
                "chorus_peer_dials_total",
                "Dials of an address started (Kademlia, mDNS, relays, hole punching and the \
                 application's own).",
            ),
            dials_refused,
            learned_addrs_refused: counter(
                "chorus_peer_learned_addrs_refused_total",
                "Addresses peers reported about themselves (identify) or mDNS announced that were \
                 kept out of Kademlia (not on the reporting connection's IP, or not dialable).",
            ),
        }
    }
}
