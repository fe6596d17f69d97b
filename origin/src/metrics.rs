//! The origin's metrics (docs/protocol.md §6), declared in one place with help text for planners.

use chorus_http::metrics::{RequestCounter, register};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Every metric the origin exports.
#[derive(Clone)]
pub struct OriginMetrics {
    /// The registry behind `/metrics`.
    pub registry: Registry,
    /// `chorus_origin_requests_total{protocol,route,status}`.
    pub requests: RequestCounter,
    /// `chorus_origin_served_bytes_total`.
    pub served_bytes: IntCounter,
    /// `chorus_origin_tracks`.
    pub tracks: IntGauge,
    /// `chorus_origin_chunks`.
    pub chunks: IntGauge,
    /// `chorus_origin_ingests_total{result}`.
    pub ingests: IntCounterVec,
    /// `chorus_origin_corrupt_chunks_total`.
    pub corrupt: IntCounter,
}

impl OriginMetrics {
    /// Creates and registers the metrics in a new registry.
    #[must_use]
    #[allow(clippy::expect_used, clippy::missing_panics_doc)] // constant, valid options
    pub fn new() -> Self {
        let registry = Registry::new();
        let served_bytes = IntCounter::new(
            "chorus_origin_served_bytes_total",
            "Body bytes the origin sent (chunks, manifests, playlists): the load edges put on the origin.",
        )
        .expect("valid metric");
        let tracks =
            IntGauge::new("chorus_origin_tracks", "Tracks published in the origin's store.").expect("valid metric");
        let chunks = IntGauge::new(
            "chorus_origin_chunks",
            "Chunks held in the origin's store (each stored once, however many tracks share it).",
        )
        .expect("valid metric");
        let ingests = IntCounterVec::new(
            Opts::new(
                "chorus_origin_ingests_total",
                "Uploads ingested through PUT /admin/tracks, by result (published, unchanged, rejected, failed).",
            ),
            &["result"],
        )
        .expect("valid metric");
        let corrupt = IntCounter::new(
            "chorus_origin_corrupt_chunks_total",
            "Chunks found corrupt on the origin's disk when read (quarantined, never served). Any increase needs an operator.",
        )
        .expect("valid metric");
        register(&registry, &served_bytes);
        register(&registry, &tracks);
        register(&registry, &chunks);
        register(&registry, &ingests);
        // Exported from the start, at 0, before the first upload.
        for result in ["published", "unchanged", "rejected", "failed"] {
            ingests.with_label_values(&[result]);
        }
        register(&registry, &corrupt);
        let requests = RequestCounter::new(&registry, "origin");
        Self { registry, requests, served_bytes, tracks, chunks, ingests, corrupt }
    }
}

impl Default for OriginMetrics {
    fn default() -> Self {
        Self::new()
    }
}
