//! The origin's metrics (docs/protocol.md §6), declared in one place with help text for planners.

use chorus_http::metrics::{RequestCounter, register};
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

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
    /// The object store's and the read-through cache's metrics.
    pub store: StoreMetrics,
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
            "Chunks found corrupt when read: on the origin's disk (the directory store: quarantined; the object store's disk cache: dropped) or in its bucket; never served. Any increase needs an operator.",
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
        let store = StoreMetrics::new(&registry, corrupt.clone());
        Self { registry, requests, served_bytes, tracks, chunks, ingests, corrupt, store }
    }
}

impl Default for OriginMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// What the origin asks of an object store (`--store s3://…`), and how its read-through cache
/// answers. On a directory store only `corrupt` moves.
#[derive(Clone)]
pub struct StoreMetrics {
    /// `chorus_origin_store_requests_total{op,outcome}`.
    pub requests: IntCounterVec,
    /// `chorus_origin_store_bytes_total{direction}`.
    pub bytes: IntCounterVec,
    /// `chorus_origin_store_request_seconds{op}`.
    pub seconds: HistogramVec,
    /// `chorus_origin_cache_requests_total{result}`.
    pub cache: IntCounterVec,
    /// `chorus_origin_cache_bytes{tier}`.
    pub cache_bytes: IntGaugeVec,
    /// `chorus_origin_store_up`.
    pub up: IntGauge,
    /// `chorus_origin_corrupt_chunks_total` (shared with [`OriginMetrics::corrupt`]).
    pub corrupt: IntCounter,
}

/// The operations an object store is asked for, as `op` labels.
pub const STORE_OPS: [&str; 5] = ["get", "head", "put", "delete", "list"];
/// How a store request ended, as `outcome` labels.
pub const STORE_OUTCOMES: [&str; 5] = ["ok", "not_found", "error", "timeout", "denied"];

impl StoreMetrics {
    /// Creates the metrics and registers them in `registry`.
    #[must_use]
    #[allow(clippy::expect_used, clippy::missing_panics_doc)] // constant, valid options
    pub fn new(registry: &Registry, corrupt: IntCounter) -> Self {
        let s = Self::unregistered(corrupt);
        register(registry, &s.requests);
        register(registry, &s.bytes);
        register(registry, &s.seconds);
        register(registry, &s.cache);
        register(registry, &s.cache_bytes);
        register(registry, &s.up);
        s
    }

    /// The metrics, registered nowhere (`chorus ingest`, tests).
    #[must_use]
    #[allow(clippy::expect_used, clippy::missing_panics_doc)] // constant, valid options
    pub fn unregistered(corrupt: IntCounter) -> Self {
        let requests = IntCounterVec::new(
            Opts::new(
                "chorus_origin_store_requests_total",
                "Requests to the object store, by operation (get, head, put, delete, list) and outcome (ok, not_found, error, timeout, denied). GETs are what the store bills for: compare with chorus_origin_cache_requests_total.",
            ),
            &["op", "outcome"],
        )
        .expect("valid metric");
        let bytes = IntCounterVec::new(
            Opts::new(
                "chorus_origin_store_bytes_total",
                "Object bytes read from (direction=read) and written to (direction=written) the object store.",
            ),
            &["direction"],
        )
        .expect("valid metric");
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "chorus_origin_store_request_seconds",
                "Time of each object store request, retries included, by operation.",
            )
            .buckets(vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]),
            &["op"],
        )
        .expect("valid metric");
        let cache = IntCounterVec::new(
            Opts::new(
                "chorus_origin_cache_requests_total",
                "Chunk reads by how the origin's read-through cache answered: hit (from memory), miss (a GET to the store), coalesced (waited on another request's GET). Hit ratio = hit / sum.",
            ),
            &["result"],
        )
        .expect("valid metric");
        let cache_bytes = IntGaugeVec::new(
            Opts::new(
                "chorus_origin_cache_bytes",
                "Bytes of chunks held in the origin's read-through cache, by tier (memory: at most --cache-mem-size; disk: at most --cache-disk-size).",
            ),
            &["tier"],
        )
        .expect("valid metric");
        let up = IntGauge::new(
            "chorus_origin_store_up",
            "1 while the object store answers the origin's probes (what /readyz reports), 0 when not.",
        )
        .expect("valid metric");
        for op in STORE_OPS {
            seconds.with_label_values(&[op]);
            for outcome in STORE_OUTCOMES {
                requests.with_label_values(&[op, outcome]);
            }
        }
        for d in ["read", "written"] {
            bytes.with_label_values(&[d]);
        }
        for t in ["memory", "disk"] {
            cache_bytes.with_label_values(&[t]);
        }
        for r in ["hit", "miss", "coalesced"] {
            cache.with_label_values(&[r]);
        }
        Self { requests, bytes, seconds, cache, cache_bytes, up, corrupt }
    }
}
