//! End to end: `chorus fetch` against a real origin and two real edges.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use chorus_testkit as support;

use chorus_core::ChunkId;
use chorus_core::manifest::Manifest;
use support::net::Net;
use support::proxy::{self, Mode};
use support::{chorus, have_ffmpeg, ingest_sample, s};

/// The sample "tides" behind two edges, each listening on HTTPS, HTTP/3 and plain HTTP.
fn start() -> Net {
    Net::builder().sample("tides", "chorus-tides").edges(2, &["https", "h3", "http"], &[]).start()
}

/// The manifest and the chunks of its second rendition (what `--quality auto` picks on a
/// two-rung ladder), straight from the origin.
fn expected(net: &Net) -> (Manifest, Vec<u8>) {
    let m = net.manifest("tides");
    let bytes = net.bytes_of(&m.renditions[1]);
    (m, bytes)
}

/// `chorus fetch tides --ca (the edges' certificates) --json` from `edges`, then `extra`.
fn fetch(net: &Net, edges: &[String], extra: &[&str]) -> (std::process::Output, Option<serde_json::Value>) {
    let ca = net.ca();
    let mut args = vec!["--ca", &ca, "--json"];
    for e in edges {
        args.extend(["--edge", e.as_str()]);
    }
    args.extend_from_slice(extra);
    let out = net.fetch("tides", &args);
    let json = serde_json::from_slice(&out.stdout).ok();
    (out, json)
}

#[test]
fn fetches_verified_byte_identical_output_then_from_the_cache_offline() {
    let mut net = start();
    let out_file = net.dir.path().join("out.mp4");
    let cache = net.dir.path().join("client-cache");
    let (out, json) = fetch(&net, &[net.edges[0].url("h3")], &["--out", s(&out_file), "--cache-dir", s(&cache)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j = json.unwrap();
    let (m, expected) = expected(&net);
    assert_eq!(j["protocol"], "h3");
    assert_eq!(j["rendition"], m.renditions[1].id.as_str());
    // Every chunk of the rendition, plus the other rung's init (read to compare decoder
    // configurations: the low rung is mono, so the stream stays on the stereo one).
    assert_eq!(j["chunks_verified"], m.renditions[1].chunks().count() + 1);
    assert_eq!(j["chunks_rejected"], 0);
    assert_eq!(j["bytes_total"], expected.len());
    assert_eq!(j["bytes_by_source"]["edge"], expected.len());
    assert_eq!(std::fs::read(&out_file).unwrap(), expected, "output differs from the origin's chunks");
    if have_ffmpeg() {
        let p = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
            .arg(&out_file)
            .output()
            .unwrap();
        let secs: f64 = String::from_utf8_lossy(&p.stdout).trim().parse().unwrap();
        assert!((secs - m.renditions[1].duration_ms() as f64 / 1000.0).abs() < 0.1);
    }
    // Second fetch, every edge gone (and the origin): served entirely from the local cache.
    net.edges.clear();
    net.origin.kill();
    let out = net.fetch("tides", &["--edge", "http://127.0.0.1:9", "--cache-dir", s(&cache), "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["bytes_by_source"]["cache"], j["bytes_total"]);
    assert_eq!(j["bytes_by_source"]["edge"], 0);
    assert_eq!(j["protocol"], "cache");
}

#[test]
fn a_manifest_signed_by_another_key_is_refused() {
    let net = start();
    let other = net.dir.path().join("other");
    assert!(chorus(&["keys", "generate", "--out", s(&other)]).status.success());
    let out =
        chorus(&["fetch", "tides", "--edge", &net.edges[0].url("http"), "--origin-key", s(&other.join("origin.pub"))]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("manifest refused") && err.contains("not by the pinned origin key"), "{err}");
    assert_eq!(err.matches("not by the pinned").count(), 1, "message repeated: {err}");
}

#[test]
fn a_dead_first_edge_and_blocked_udp_fall_back() {
    let net = start();
    // The first edge does not exist; the second is an edge with no HTTP/3 listener, asked for
    // over h3:// (as when UDP is blocked): the client falls back to HTTPS, HTTP/2.
    let tcp_only = net.start_edge("edge-tcp-only", &["https"], &[]);
    let h3_without_udp = tcp_only.url("https").replace("https://", "h3://");
    let ca = net.cert("edge-tcp-only");
    let out =
        net.fetch("tides", &["--ca", s(&ca), "--json", "--edge", "http://127.0.0.1:9", "--edge", &h3_without_udp]);
    let json: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j = json.unwrap();
    assert_eq!(j["protocol"], "h2");
    assert_eq!(j["bytes_total"], expected(&net).1.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_corrupts_bytes_is_caught_and_the_output_is_still_right() {
    let net = start();
    let (liar, _) = proxy::start(&net.edges[0].url("http"), Mode::Corrupt).await;
    let out_file = net.dir.path().join("out.mp4");
    let honest = net.edges[1].url("http");
    let args = ["--edge", &liar, "--edge", &honest, "--out", s(&out_file), "--json"];
    let out = tokio::task::block_in_place(|| net.fetch("tides", &args));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["chunks_rejected"].as_u64().unwrap() >= 1, "{j}");
    let (_, expected) = expected(&net);
    let got = std::fs::read(&out_file).unwrap();
    assert_eq!(got, expected);
    assert!(expected.len() > 1000 && ChunkId::of(&got) == ChunkId::of(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_track_hint_warms_that_track_at_the_edge() {
    let net = start();
    ingest_sample(&net.store, "lantern", "chorus-lantern");
    let edge = net.edges[0].url("http");
    let (out, _) = fetch(&net, std::slice::from_ref(&edge), &["--next", "lantern"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The edge fetches lantern's first segments on its own (into its cache's probation area,
    // in memory): lantern's first low-rung segment, which the fetch of tides never touched,
    // turns up in the cache. `only-if-cached` asks the cache alone (504 until then) and never
    // makes the edge fetch it itself.
    let m = net.manifest("lantern");
    let id = m.renditions[0].segments[0].id;
    let mut c = support::conn(&edge).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let req = http::Request::get(format!("/v1/chunks/{id}"))
            .header(http::header::CACHE_CONTROL, "only-if-cached")
            .body(bytes::Bytes::new())
            .unwrap();
        let r = c.send(req).await.unwrap();
        if r.status() == http::StatusCode::OK {
            assert_eq!(chorus_core::ChunkId::of(r.body()), id, "the warmed segment's bytes");
            break;
        }
        assert_eq!(r.status(), http::StatusCode::GATEWAY_TIMEOUT);
        assert!(std::time::Instant::now() < deadline, "the edge did not warm the next track");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
