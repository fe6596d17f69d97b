//! End to end: every metric docs/protocol.md §6 names appears on a live node after real traffic (an
//! origin, an edge, a seeding peer, and a listener fetching with P2P on), each node's
//! `/metrics` passes `promtool check metrics`, and the deployment files' rules and dashboards
//! use only names these live nodes export (`deploy/check.sh` with the files).
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use chorus_testkit as support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;
use support::redis::{Redis, have_redis};
use support::{ingest_sample, start_edge_with, start_origin, start_seeder};

const EDGE: &[&str] = &[
    "chorus_edge_requests_total",
    "chorus_edge_cache_requests_total",
    "chorus_edge_cache_bytes",
    "chorus_edge_cache_capacity_bytes",
    "chorus_edge_served_bytes_total",
    "chorus_edge_upstream_requests_total",
    "chorus_edge_upstream_seconds",
    "chorus_edge_prefetch_total",
    "chorus_edge_mrc_hit_ratio",
    "chorus_qoe_startup_seconds",
    "chorus_qoe_stalls_total",
    "chorus_qoe_bytes_total",
    "chorus_tracker_peers",
    "chorus_tracker_answers_total",
    "chorus_edge_refused_total",
    "chorus_http_refused_total",
];
/// Exported by an edge with a shared tracker (`--tracker`) only.
const SHARED_TRACKER: &[&str] =
    &["chorus_tracker_shared_up", "chorus_tracker_shared_errors_total", "chorus_tracker_shared_seconds"];
const ORIGIN: &[&str] = &[
    "chorus_origin_requests_total",
    "chorus_origin_served_bytes_total",
    "chorus_origin_tracks",
    "chorus_origin_chunks",
    "chorus_http_refused_total",
];
const PEER: &[&str] = &[
    "chorus_peer_sent_bytes_total",
    "chorus_peer_received_bytes_total",
    "chorus_peer_rejected_chunks_total",
    "chorus_peer_connections",
    "chorus_peer_inbound_connections",
    "chorus_peer_share_busy_total",
    "chorus_peer_have_cached_total",
    "chorus_peer_upload_timeouts_total",
    "chorus_peer_inbound_evicted_total",
    "chorus_peer_inbound_refused_total",
    "chorus_peer_dials_total",
    "chorus_peer_dials_refused_total",
    "chorus_peer_learned_addrs_refused_total",
];

async fn metrics_text(base: &str) -> String {
    let mut c = HttpClient::new(&ClientTls::default()).unwrap().connect(&base.parse().unwrap(), false).await.unwrap();
    let r = c.get("/metrics").await.unwrap();
    assert_eq!(r.status(), http::StatusCode::OK, "{base}/metrics");
    String::from_utf8(r.body().to_vec()).unwrap()
}

/// Whether `tool` runs; on CI (where `.ci/run` installs it) it must.
fn have(tool: &str, probe: &[&str]) -> bool {
    let ok =
        Command::new(tool).args(probe).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success());
    assert!(ok || std::env::var_os("CI").is_none(), "{tool} is missing on CI (.ci/run installs it)");
    if !ok {
        eprintln!("{tool} not installed: that part of the check is skipped");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spec_metric_appears_on_live_nodes_and_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ingest_sample(&store, "tides", "chorus-tides");
    let origin = start_origin(&store);
    // With a shared tracker, so that its metrics are exported too (CI has redis-server).
    let redis = have_redis().then(Redis::start);
    let url = redis.as_ref().map(Redis::url);
    let tracker: Vec<&str> = url.iter().flat_map(|u| ["--tracker", u.as_str()]).collect();
    let edge = start_edge_with(&origin, &dir.path().join("edge"), &tracker);
    let key = store.join("origin.pub");
    // A seeding peer with its metrics on HTTP (its one logged listen URL).
    let extra = ["--metrics-listen", "http://127.0.0.1:0"];
    let peer = start_seeder(&edge, &key, &dir.path().join("seed"), &extra, 1);
    // A listener with P2P on: edge and peer traffic, a tracker lookup, a QoE beacon.
    let (edge_url, cache) = (edge.url("http"), dir.path().join("listener"));
    let key2 = key.clone();
    tokio::task::spawn_blocking(move || support::fetch_p2p(&edge_url, &key2, &cache, &[])).await.unwrap();
    // The beacon is sent as the fetch ends; give the edge a moment to count it.
    let mut edge_text = String::new();
    for _ in 0..50 {
        edge_text = metrics_text(&edge.url("http")).await;
        if edge_text.contains("chorus_qoe_beacons_total 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let edge_names: Vec<&str> =
        EDGE.iter().chain(if redis.is_some() { SHARED_TRACKER } else { &[] }).copied().collect();
    let texts = [
        ("origin", metrics_text(&origin.url("http")).await, ORIGIN),
        ("edge", edge_text, edge_names.as_slice()),
        ("peer", metrics_text(&peer.url("http")).await, PEER),
    ];
    let mut files = Vec::new();
    for (node, text, names) in &texts {
        for name in *names {
            let kind = format!("# TYPE {name} ");
            let help = format!("# HELP {name} ");
            assert!(text.contains(&kind) && text.contains(&help), "{name} missing from the {node}'s /metrics:\n{text}");
        }
        let file = dir.path().join(format!("{node}.prom"));
        std::fs::write(&file, text).unwrap();
        files.push(file);
    }
    // The curve has one series per estimated cache size: ¼× to 8× the edge's 10 GiB default.
    let edge_text = &texts[1].1;
    assert_eq!(edge_text.matches("chorus_edge_mrc_hit_ratio{cache_bytes=").count(), 6, "{edge_text}");
    assert!(edge_text.contains("chorus_edge_mrc_hit_ratio{cache_bytes=\"10737418240\"}"), "{edge_text}");

    if have("promtool", &["--version"]) {
        for f in &files {
            let out = Command::new("promtool")
                .args(["check", "metrics"])
                .stdin(std::fs::File::open(f).unwrap())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "promtool check metrics {}: {}{}",
                f.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    if have("kubernetes-validate", &["--version"]) && have("promtool", &["--version"]) {
        let check = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join("check.sh");
        let mut cmd = Command::new(check);
        if redis.is_none() {
            // Without redis-server here (never on CI), the edge ran without a shared tracker.
            cmd.env("CHORUS_CHECK_ALLOW_MISSING", SHARED_TRACKER.join(" "));
        }
        let out = cmd.args(files.iter().map(|f| f.as_os_str())).output().unwrap();
        assert!(
            out.status.success(),
            "deploy/check.sh with live metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
