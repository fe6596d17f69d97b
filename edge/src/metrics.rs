//! The edge's metrics (docs/protocol.md §6), in one place, with help text a capacity planner can read.

use chorus_http::metrics::{RequestCounter, register};
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::upstream::UpstreamMetrics;

/// Every `reason` of `chorus_edge_refused_total`, registered at start so that each series
/// exists before its first event.
pub const REFUSED_REASONS: [&str; 6] =
    ["qoe_rate", "qoe_invalid", "admin_auth", "hint_rate", "peers_rate", "unknown_track"];

/// Every metric the edge exports.
#[derive(Clone)]
pub struct EdgeMetrics {
    /// The registry behind `/metrics`.
    pub registry: Registry,
    /// `chorus_edge_requests_total{protocol,route,status}`.
    pub requests: RequestCounter,
    /// `chorus_edge_cache_requests_total{result,tier}`.
    pub cache_requests: IntCounterVec,
    /// `chorus_edge_cache_bytes{tier}`.
    pub cache_bytes: IntGaugeVec,
    /// `chorus_edge_cache_capacity_bytes{tier}`.
    pub cache_capacity: IntGaugeVec,
    /// `chorus_edge_served_bytes_total{source}`.
    pub served_bytes: IntCounterVec,
    /// `chorus_edge_prefetch_total{result}`.
    pub prefetch: IntCounterVec,
    /// `chorus_edge_corrupt_chunks_total{source}`.
    pub corrupt: IntCounterVec,
    /// Upstream request metrics.
    pub upstream: UpstreamMetrics,
    /// `chorus_qoe_startup_seconds`.
    pub qoe_startup: Histogram,
    /// `chorus_qoe_stalls_total`.
    pub qoe_stalls: IntCounter,
    /// `chorus_qoe_stall_seconds_total`.
    pub qoe_stall_seconds: prometheus::Counter,
    /// `chorus_qoe_bytes_total{source}`.
    pub qoe_bytes: IntCounterVec,
    /// `chorus_qoe_beacons_total`.
    pub qoe_beacons: IntCounter,
    /// `chorus_tracker_peers`.
    pub tracker_peers: IntGauge,
    /// `chorus_tracker_announces_refused_total{reason}`.
    pub announces_refused: IntCounterVec,
    /// `chorus_edge_refused_total{reason}`: what the edge's defences turned away.
    pub refused: IntCounterVec,
    /// `chorus_edge_negative_hits_total{kind}`.
    pub negative_hits: IntCounterVec,
    /// `chorus_tracker_evicted_total`.
    pub tracker_evicted: IntCounter,
    /// `chorus_tracker_answers_total{view}`.
    pub tracker_answers: IntCounterVec,
    /// `chorus_tracker_shared_up`.
    pub tracker_shared_up: IntGauge,
    /// `chorus_tracker_shared_errors_total{op}`.
    pub tracker_shared_errors: IntCounterVec,
    /// `chorus_tracker_shared_seconds{op}`.
    pub tracker_shared_seconds: HistogramVec,
    /// `chorus_edge_mrc_hit_ratio{cache_bytes}`.
    pub mrc_hit_ratio: prometheus::GaugeVec,
    /// `chorus_edge_mrc_sampling_rate`.
    pub mrc_sampling_rate: prometheus::Gauge,
}

impl EdgeMetrics {
    /// Creates and registers every metric in a new registry.
    #[must_use]
    #[allow(clippy::expect_used, clippy::missing_panics_doc, clippy::too_many_lines)] // constant, valid options
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(&registry, &c);
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            register(&registry, &g);
            g
        };
        let latency_buckets = vec![0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
        let upstream_seconds = HistogramVec::new(
            HistogramOpts::new(
                "chorus_edge_upstream_seconds",
                "Time to fetch from an upstream (origin or parent edge), per attempt, by upstream.",
            )
            .buckets(latency_buckets.clone()),
            &["upstream"],
        )
        .expect("valid metric");
        register(&registry, &upstream_seconds);
        let corrupt = counter_vec(
            "chorus_edge_corrupt_chunks_total",
            "Chunks refused because their bytes did not match their id: from disk (damaged cache file) or upstream (a corrupting or lying upstream). Never served.",
            &["source"],
        );
        let upstream = UpstreamMetrics {
            bad_chunks: corrupt.with_label_values(&["upstream"]),
            requests: counter_vec(
                "chorus_edge_upstream_requests_total",
                "Requests this edge sent to each upstream, by status code (or 'error', 'timeout'): the load the edge puts on origins and parents.",
                &["upstream", "status"],
            ),
            seconds: upstream_seconds,
            healthy: gauge_vec(
                "chorus_edge_upstream_healthy",
                "1 when the upstream is considered up (health checks and recent requests), else 0.",
                &["upstream"],
            ),
        };
        let qoe_startup = Histogram::with_opts(
            HistogramOpts::new(
                "chorus_qoe_startup_seconds",
                "Client-reported startup time: from asking for a track to the first verified playable segment.",
            )
            .buckets(vec![0.05, 0.1, 0.15, 0.2, 0.265, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0]),
        )
        .expect("valid metric");
        register(&registry, &qoe_startup);
        let qoe_stalls = IntCounter::new(
            "chorus_qoe_stalls_total",
            "Client-reported playback stalls (the buffer ran dry), summed over plays.",
        )
        .expect("valid metric");
        register(&registry, &qoe_stalls);
        let qoe_stall_seconds = prometheus::Counter::new(
            "chorus_qoe_stall_seconds_total",
            "Client-reported time spent stalled, summed over plays.",
        )
        .expect("valid metric");
        register(&registry, &qoe_stall_seconds);
        let qoe_beacons =
            IntCounter::new("chorus_qoe_beacons_total", "QoE beacons received: one per play that reported.")
                .expect("valid metric");
        register(&registry, &qoe_beacons);
        let tracker_peers = IntGauge::new(
            "chorus_tracker_peers",
            "Peer entries the tracker holds, over all tracks (a peer holding 3 tracks counts 3).",
        )
        .expect("valid metric");
        register(&registry, &tracker_peers);
        let tracker_shared_up = IntGauge::new(
            "chorus_tracker_shared_up",
            "1 while the shared tracker (chorus edge --tracker redis://...) answers, 0 while it fails and this edge answers peer queries from its own announces only (the swarm splits by edge). Not exported without --tracker.",
        )
        .expect("valid metric");
        let tracker_shared_seconds = HistogramVec::new(
            HistogramOpts::new(
                "chorus_tracker_shared_seconds",
                "Round trips to the shared tracker's Redis that answered, by op (announce, peers).",
            )
            .buckets(vec![0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5]),
            &["op"],
        )
        .expect("valid metric");
        let mrc_hit_ratio = prometheus::GaugeVec::new(
            Opts::new(
                "chorus_edge_mrc_hit_ratio",
                "Estimated request hit ratio an LRU cache of cache_bytes would reach on this edge's chunk requests since it started (SHARDS sampling; sizes 1/4x to 8x this edge's cache). What more or less cache would buy: compare neighbouring sizes.",
            ),
            &["cache_bytes"],
        )
        .expect("valid metric");
        register(&registry, &mrc_hit_ratio);
        let mrc_sampling_rate = prometheus::Gauge::new(
            "chorus_edge_mrc_sampling_rate",
            "Fraction of chunks the hit-ratio-curve estimator samples (falls as the catalogue grows; its memory stays fixed).",
        )
        .expect("valid metric");
        register(&registry, &mrc_sampling_rate);
        let m = Self {
            requests: RequestCounter::new(&registry, "edge"),
            cache_requests: counter_vec(
                "chorus_edge_cache_requests_total",
                "Chunk lookups by result: hit (served from a tier), miss (fetched upstream), coalesced (joined a fetch already under way). Hit ratio = hit / all.",
                &["result", "tier"],
            ),
            cache_bytes: gauge_vec("chorus_edge_cache_bytes", "Bytes held in each cache tier.", &["tier"]),
            cache_capacity: gauge_vec(
                "chorus_edge_cache_capacity_bytes",
                "Configured size of each cache tier (disk is 0 once it is turned off after an error).",
                &["tier"],
            ),
            served_bytes: counter_vec(
                "chorus_edge_served_bytes_total",
                "Chunk bytes sent to clients by where they came from: memory, disk, or upstream (a miss). Byte hit ratio = (memory + disk) / all.",
                &["source"],
            ),
            prefetch: counter_vec(
                "chorus_edge_prefetch_total",
                "Prefetched chunks: issued (fetched ahead of a request), used (later asked for), wasted (left the cache unasked). Precision = used / issued.",
                &["result"],
            ),
            corrupt,
            upstream,
            qoe_startup,
            qoe_stalls,
            qoe_stall_seconds,
            qoe_bytes: counter_vec(
                "chorus_qoe_bytes_total",
                "Client-reported bytes played, by where the client got them: edge, peer, or its local cache.",
                &["source"],
            ),
            qoe_beacons,
            tracker_peers,
            announces_refused: counter_vec(
                "chorus_tracker_announces_refused_total",
                "Announces the tracker refused, by reason: signature (forged, or signed by another key than the peer id's), time (outside the 120 s window), edge (signed for another edge), malformed, address (no address on the sender's IP), replay (older than the peer's last), rate (429), full (503).",
                &["reason"],
            ),
            refused: counter_vec(
                "chorus_edge_refused_total",
                "Requests an edge defence turned away, by reason: qoe_rate (QoE beacons over a source's budget), qoe_invalid (beacon values out of range), admin_auth (a wrong or missing admin token; each one slows that source's next attempts), hint_rate (next-track hints beyond a source's budget: not acted on, the request itself is answered), peers_rate (peer queries beyond a source's budget), unknown_track (announced tracks this edge cannot vouch for: no manifest here or upstream; dropped from the announce). A rising rate is someone probing or flooding.",
                &["reason"],
            ),
            tracker_evicted: {
                let c = IntCounter::new(
                    "chorus_tracker_evicted_total",
                    "Tracker entries (a peer listed for a track) dropped because the source that announced them went over its budget (peer ids and entries per IPv4 address or IPv6 /64, /56, /48): that source's own oldest. Rising fast: a source announcing far more than a listener holds.",
                )
                .expect("valid metric");
                register(&registry, &c);
                c
            },
            negative_hits: counter_vec(
                "chorus_edge_negative_hits_total",
                "404s answered from the edge's memory of an upstream 404 in the last 10 s, without asking upstream again, by kind (chunk, manifest). High values: clients retrying unknown ids, or someone cycling made-up ones.",
                &["kind"],
            ),
            tracker_answers: counter_vec(
                "chorus_tracker_answers_total",
                "Peer queries answered, by the view they came from: shared (the tracker every edge shares), local (this edge's own announces: no --tracker, or the shared one failing), cached (the same track's answer of the last second, reused).",
                &["view"],
            ),
            tracker_shared_up,
            tracker_shared_errors: IntCounterVec::new(
                Opts::new(
                    "chorus_tracker_shared_errors_total",
                    "Calls to the shared tracker that failed (error, timeout) or were not made while it rests after a failure, by op (announce, peers); each was answered from this edge's own view.",
                ),
                &["op"],
            )
            .expect("valid metric"),
            tracker_shared_seconds,
            mrc_hit_ratio,
            mrc_sampling_rate,
            registry,
        };
        // Every label value known in advance is exported from the start, at 0, so a series
        // exists before its first event (rates and alerts see 0, not "no data").
        for (result, tier) in [("hit", "memory"), ("hit", "disk"), ("miss", "none"), ("coalesced", "none")] {
            m.cache_requests.with_label_values(&[result, tier]);
        }
        for reason in ["signature", "time", "edge", "malformed", "address", "replay", "rate", "full"] {
            m.announces_refused.with_label_values(&[reason]);
        }
        for reason in REFUSED_REASONS {
            m.refused.with_label_values(&[reason]);
        }
        for kind in ["chunk", "manifest"] {
            m.negative_hits.with_label_values(&[kind]);
        }
        for view in ["shared", "local", "cached"] {
            m.tracker_answers.with_label_values(&[view]);
        }
        for source in ["memory", "disk", "upstream"] {
            m.served_bytes.with_label_values(&[source]);
        }
        for result in ["issued", "used", "wasted"] {
            m.prefetch.with_label_values(&[result]);
        }
        for source in ["disk", "upstream"] {
            m.corrupt.with_label_values(&[source]);
        }
        for source in ["edge", "peer", "cache"] {
            m.qoe_bytes.with_label_values(&[source]);
        }
        m
    }

    /// Registers the metrics of the shared tracker (`chorus edge --tracker`), which an edge
    /// without one does not export.
    pub fn register_shared_tracker(&self) {
        register(&self.registry, &self.tracker_shared_up);
        register(&self.registry, &self.tracker_shared_errors);
        register(&self.registry, &self.tracker_shared_seconds);
        self.tracker_shared_up.set(1);
        for op in ["announce", "peers"] {
            self.tracker_shared_errors.with_label_values(&[op]);
        }
    }
}

impl Default for EdgeMetrics {
    fn default() -> Self {
        Self::new()
    }
}
