//! End to end: `chorus fetch` against a real origin and two real edges.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use chorus_testkit as support;

use chorus_core::ChunkId;
use chorus_core::manifest::Manifest;
use support::proxy::{self, Mode};
use support::{Node, chorus, have_ffmpeg, ingest_sample, s, start_origin};

struct Net {
    dir: tempfile::TempDir,
    origin: Node,
    edges: Vec<Node>,
}

impl Net {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        ingest_sample(&store, "tides", "chorus-tides");
        let origin = start_origin(&store);
        let edges = (0..2)
            .map(|i| {
                let cache = dir.path().join(format!("edge{i}"));
                Node::start(
                    &[
                        "edge",
                        "--upstream",
                        &origin.url("http"),
                        "--listen",
                        "https://127.0.0.1:0",
                        "--listen",
                        "h3://127.0.0.1:0",
                        "--listen",
                        "http://127.0.0.1:0",
                        "--cache-dir",
                        s(&cache),
                    ],
                    3,
                )
            })
            .collect();
        Self { dir, origin, edges }
    }

    fn key(&self) -> String {
        self.dir.path().join("store").join("origin.pub").to_str().unwrap().to_owned()
    }

    fn ca(&self) -> String {
        (0..2)
            .map(|i| self.dir.path().join(format!("edge{i}")).join("tls").join("cert.pem").to_str().unwrap().to_owned())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The manifest and the chunks of its second rendition (what `--quality auto` picks on a
    /// two-rung ladder), straight from the origin.
    fn expected(&self) -> (Manifest, Vec<u8>) {
        let doc = std::fs::read(self.dir.path().join("store").join("manifests").join("tides.json")).unwrap();
        let m: Manifest = serde_json::from_slice(&doc).unwrap();
        let r = &m.renditions[1];
        let mut bytes = Vec::new();
        for c in r.chunks() {
            let hex = c.id.to_hex();
            bytes.extend(
                std::fs::read(self.dir.path().join("store").join("chunks").join(&hex[..2]).join(&hex)).unwrap(),
            );
        }
        (m, bytes)
    }

    fn fetch(&self, edges: &[String], extra: &[&str]) -> (std::process::Output, Option<serde_json::Value>) {
        let key = self.key();
        let ca = self.ca();
        let mut args = vec!["fetch", "tides", "--origin-key", &key, "--ca", &ca, "--json"];
        for e in edges {
            args.extend(["--edge", e.as_str()]);
        }
        args.extend_from_slice(extra);
        let out = chorus(&args);
        let json = serde_json::from_slice(&out.stdout).ok();
        (out, json)
    }
}

#[test]
fn fetches_verified_byte_identical_output_then_from_the_cache_offline() {
    let net = Net::start();
    let out_file = net.dir.path().join("out.mp4");
    let cache = net.dir.path().join("client-cache");
    let (out, json) = net.fetch(&[net.edges[0].url("h3")], &["--out", s(&out_file), "--cache-dir", s(&cache)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j = json.unwrap();
    let (m, expected) = net.expected();
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
    // Second fetch, every edge gone: served entirely from the local cache.
    let Net { dir, origin, edges } = net;
    drop(edges);
    drop(origin);
    let net_dir = dir;
    let key = net_dir.path().join("store").join("origin.pub");
    let out = chorus(&[
        "fetch",
        "tides",
        "--edge",
        "http://127.0.0.1:9",
        "--origin-key",
        s(&key),
        "--cache-dir",
        s(&cache),
        "--json",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["bytes_by_source"]["cache"], j["bytes_total"]);
    assert_eq!(j["bytes_by_source"]["edge"], 0);
    assert_eq!(j["protocol"], "cache");
}

#[test]
fn a_manifest_signed_by_another_key_is_refused() {
    let net = Net::start();
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
    let net = Net::start();
    // The first edge does not exist; the second is an edge with no HTTP/3 listener, asked for
    // over h3:// (as when UDP is blocked): the client falls back to HTTPS, HTTP/2.
    let cache = net.dir.path().join("edge-tcp-only");
    let tcp_only = Node::start(
        &["edge", "--upstream", &net.origin.url("http"), "--listen", "https://127.0.0.1:0", "--cache-dir", s(&cache)],
        1,
    );
    let h3_without_udp = tcp_only.url("https").replace("https://", "h3://");
    let key = net.key();
    let ca = cache.join("tls").join("cert.pem");
    let out = chorus(&[
        "fetch",
        "tides",
        "--origin-key",
        &key,
        "--ca",
        s(&ca),
        "--json",
        "--edge",
        "http://127.0.0.1:9",
        "--edge",
        &h3_without_udp,
    ]);
    let json: Option<serde_json::Value> = serde_json::from_slice(&out.stdout).ok();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j = json.unwrap();
    assert_eq!(j["protocol"], "h2");
    assert_eq!(j["bytes_total"], net.expected().1.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_that_corrupts_bytes_is_caught_and_the_output_is_still_right() {
    let net = Net::start();
    let (liar, _) = proxy::start(&net.edges[0].url("http"), Mode::Corrupt).await;
    let out_file = net.dir.path().join("out.mp4");
    let (liar2, honest) = (liar.clone(), net.edges[1].url("http"));
    let key = net.key();
    let out_path = out_file.clone();
    let out = tokio::task::spawn_blocking(move || {
        chorus(&[
            "fetch",
            "tides",
            "--edge",
            &liar2,
            "--edge",
            &honest,
            "--origin-key",
            &key,
            "--out",
            s(&out_path),
            "--json",
        ])
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(j["chunks_rejected"].as_u64().unwrap() >= 1, "{j}");
    let (_, expected) = net.expected();
    let got = std::fs::read(&out_file).unwrap();
    assert_eq!(got, expected);
    assert!(expected.len() > 1000 && ChunkId::of(&got) == ChunkId::of(&expected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_track_hint_warms_that_track_at_the_edge() {
    let net = Net::start();
    let store = net.dir.path().join("store");
    ingest_sample(&store, "lantern", "chorus-lantern");
    let edge = net.edges[0].url("http");
    let (out, _) = net.fetch(std::slice::from_ref(&edge), &["--next", "lantern"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // The edge fetches lantern's first segments on its own (into its cache's probation area,
    // in memory): lantern's first low-rung segment, which the fetch of tides never touched,
    // turns up in the cache. `only-if-cached` asks the cache alone (504 until then) and never
    // makes the edge fetch it itself.
    let doc = std::fs::read(store.join("manifests").join("lantern.json")).unwrap();
    let m: Manifest = serde_json::from_slice(&doc).unwrap();
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
