//! End to end: a real origin and real edges on port 0, with a misbehaving upstream where needed.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use chorus_testkit as support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chorus_core::ChunkId;
use chorus_core::announce::SignedAnnounce;
use chorus_core::keys;
use chorus_core::manifest::Manifest;
use chorus_http::Protocol;
use chorus_http::client::{Connection, HttpClient};
use chorus_http::tls::ClientTls;
use chorus_peer::identity::Keypair;
use http::{Request, StatusCode};
use support::proxy::{self, Mode};
use support::{ALL_LISTENERS, Node, chorus, metric, metric_sum, origin_args, s, samples};

/// An origin with two sample tracks, on http, https and h3.
struct Origin {
    dir: tempfile::TempDir,
    store: PathBuf,
    node: Option<Node>,
}

impl Origin {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        for (track, pkg) in [("sunrise", "chorus-sunrise"), ("tides", "chorus-tides")] {
            let out = chorus(&["ingest", "--store", s(&store), "--track", track, s(&samples().join(pkg))]);
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        }
        let mut o = Self { dir, store, node: None };
        o.restart();
        o
    }

    fn restart(&mut self) {
        let store = self.store.clone();
        self.node = Some(Node::start(&origin_args(s(&store), &[]), 3));
    }

    fn node(&self) -> &Node {
        self.node.as_ref().expect("origin running")
    }

    fn cert(&self) -> PathBuf {
        self.store.join("tls").join("cert.pem")
    }

    fn key(&self) -> keys::VerifyingKey {
        keys::read_verifying_key(&self.store.join("origin.pub")).unwrap()
    }

    /// Chunk requests the origin answered 200, over all protocols.
    async fn chunk_fetches(&self) -> f64 {
        let text = get_text(&self.node().url("http"), "/metrics").await;
        metric_sum(&text, "chorus_origin_requests_total", &["route=\"chunk\"", "status=\"200\""])
    }
}

/// Starts an edge in front of `upstreams` with its cache in `cache`.
fn edge(upstreams: &[String], cache: &Path, ca: &Path, extra: &[&str]) -> Node {
    let mut args: Vec<String> = vec!["edge".into()];
    for u in upstreams {
        args.extend(["--upstream".into(), u.clone()]);
    }
    args.extend(ALL_LISTENERS.map(String::from));
    args.extend(["--cache-dir", s(cache), "--ca", s(ca)].map(String::from));
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start(&refs, 3)
}

async fn conn(url: &str) -> Connection {
    support::conn(url).await
}

async fn get_text(base: &str, path: &str) -> String {
    let r = conn(base).await.get(path).await.unwrap();
    String::from_utf8_lossy(r.body()).into_owned()
}

async fn manifest(base: &str, track: &str, key: &keys::VerifyingKey) -> Manifest {
    let r = conn(base).await.get(&format!("/v1/tracks/{track}/manifest")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", String::from_utf8_lossy(r.body()));
    Manifest::verify(r.body(), key).unwrap()
}

async fn get_chunk(c: &mut Connection, id: &ChunkId) -> StatusCode {
    let r = c.get(&format!("/v1/chunks/{id}")).await.unwrap();
    if r.status() == StatusCode::OK {
        assert_eq!(ChunkId::of(r.body()), *id, "the edge passed on bytes that do not match the chunk id");
    }
    r.status()
}

/// Waits until `cond` holds (for counters updated by background work), or fails after 20 s.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, cond: F) {
    support::eventually(what, Duration::from_secs(20), Duration::from_millis(25), cond).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_chunk_through_the_edge_over_every_protocol() {
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(&[origin.node().url("h3")], &cache, &origin.cert(), &[]);
    let trust = ClientTls { ca_files: vec![cache.join("tls").join("cert.pem")], insecure: false };
    let client = HttpClient::new(&trust).unwrap();
    let key = origin.key();
    for (scheme, want) in [("http", Protocol::Http1), ("https", Protocol::Http2), ("h3", Protocol::Http3)] {
        let mut c = client.connect(&e.base(scheme), false).await.unwrap();
        assert_eq!(c.protocol(), want);
        for track in ["sunrise", "tides"] {
            let r = c.get(&format!("/v1/tracks/{track}/manifest")).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let m = Manifest::verify(r.body(), &key).unwrap();
            for chunk in m.chunks() {
                let r = c.get(&format!("/v1/chunks/{}", chunk.id)).await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                assert_eq!(ChunkId::of(r.body()), chunk.id);
                assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
            }
            // A range is served from the cached whole chunk.
            let seg = m.renditions[1].segments[0];
            let r = c
                .send(
                    Request::get(format!("/v1/chunks/{}", seg.id))
                        .header("range", "bytes=10-19")
                        .body(bytes::Bytes::new())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
            assert_eq!(r.headers()["content-range"], format!("bytes 10-19/{}", seg.size).as_str());
        }
        // Playlists through the edge name the same chunks.
        let p = c.get("/v1/tracks/sunrise/hls/aac-96.m3u8").await.unwrap();
        assert_eq!(p.status(), StatusCode::OK);
        assert!(String::from_utf8_lossy(p.body()).contains("#EXT-X-ENDLIST"));
    }
    let text = get_text(&e.url("http"), "/metrics").await;
    assert!(metric(&text, "chorus_edge_cache_requests_total{result=\"hit\",tier=\"memory\"}") > 0.0);
    for name in [
        "chorus_edge_requests_total",
        "chorus_edge_served_bytes_total",
        "chorus_edge_upstream_seconds_bucket",
        "chorus_edge_cache_capacity_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics");
    }
    // Unknown paths are answered by the edge, not forwarded.
    let r = conn(&e.url("http")).await.get("/v2/unknown").await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    if support::have_ffmpeg() {
        let url = format!("{}/v1/tracks/tides/hls/master.m3u8", e.url("http"));
        let out =
            std::process::Command::new("ffmpeg").args(["-v", "error", "-i", &url, "-f", "null", "-"]).output().unwrap();
        assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_misses_make_one_origin_fetch() {
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(&[origin.node().url("h3")], &cache, &origin.cert(), &["--prefetch-segments", "0"]);
    let m = manifest(&e.url("http"), "sunrise", &origin.key()).await;
    let id = m.renditions[1].segments[2].id;
    let before = origin.chunk_fetches().await;
    let base = e.url("http");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let base = base.clone();
            tokio::spawn(async move {
                let mut c = conn(&base).await;
                get_chunk(&mut c, &id).await
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(origin.chunk_fetches().await - before, 1.0, "exactly one origin fetch for 200 concurrent misses");
    let text = get_text(&base, "/metrics").await;
    let miss = metric(&text, "chorus_edge_cache_requests_total{result=\"miss\",tier=\"none\"}");
    let coalesced = metric(&text, "chorus_edge_cache_requests_total{result=\"coalesced\",tier=\"none\"}");
    // Requests that came after the fetch completed are hits (memory, or disk via sendfile).
    let hits = metric_sum(&text, "chorus_edge_cache_requests_total", &["result=\"hit\""]);
    assert_eq!(miss, 1.0);
    assert_eq!(miss + coalesced + hits, 200.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_segments_are_served_from_cache() {
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(&[origin.node().url("h3")], &cache, &origin.cert(), &["--prefetch-segments", "2"]);
    let base = e.url("http");
    let m = manifest(&base, "tides", &origin.key()).await;
    let segs = &m.renditions[0].segments;
    let mut c = conn(&base).await;
    assert_eq!(get_chunk(&mut c, &segs[0].id).await, StatusCode::OK);
    // Segments 1 and 2 are fetched ahead of any request.
    eventually("two prefetches to land", async || {
        let t = get_text(&base, "/metrics").await;
        metric(&t, "chorus_edge_prefetch_total{result=\"issued\"}") == 2.0 && origin.chunk_fetches().await == 3.0
    })
    .await;
    assert_eq!(get_chunk(&mut c, &segs[1].id).await, StatusCode::OK);
    let t = get_text(&base, "/metrics").await;
    assert_eq!(metric(&t, "chorus_edge_prefetch_total{result=\"used\"}"), 1.0);
    // Asking for segment 1 prefetches segment 3 only (2 is cached already).
    eventually("segment 3 prefetched", async || origin.chunk_fetches().await == 4.0).await;
    assert_eq!(get_chunk(&mut c, &segs[2].id).await, StatusCode::OK);
    assert_eq!(get_chunk(&mut c, &segs[3].id).await, StatusCode::OK);
    assert_eq!(origin.chunk_fetches().await, 4.0, "prefetched segments were fetched again");
    let t = get_text(&base, "/metrics").await;
    assert_eq!(metric(&t, "chorus_edge_prefetch_total{result=\"used\"}"), 3.0);
    assert_eq!(metric(&t, "chorus_edge_cache_requests_total{result=\"miss\",tier=\"none\"}"), 1.0);

    // A next-track hint warms that track's start: init chunks and first segments of each rendition.
    let m2 = manifest(&origin.node().url("http"), "sunrise", &origin.key()).await;
    let r = c
        .send(
            Request::get(format!("/v1/chunks/{}", segs[0].id))
                .header("chorus-next-track", "sunrise")
                .body(bytes::Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let start: Vec<ChunkId> = chorus_edge::prefetch::track_start(&m2, 2);
    eventually("next track warmed", async || origin.chunk_fetches().await == 4.0 + start.len() as f64).await;
    // Reading them is all hits (reads trigger further prefetch, so count misses, not fetches).
    let misses = async || {
        metric(&get_text(&base, "/metrics").await, "chorus_edge_cache_requests_total{result=\"miss\",tier=\"none\"}")
    };
    let before = misses().await;
    for id in &start {
        assert_eq!(get_chunk(&mut c, id).await, StatusCode::OK);
    }
    assert_eq!(misses().await, before, "warmed chunks were not in the cache");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_origin_loss_restarts_and_a_corrupt_cache_file() {
    let mut origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    // A request timeout far beyond the test client's 20 s: a miss that waited for it would
    // fail the test, whatever the machine's speed.
    let args = ["--prefetch-segments", "0", "--health-interval", "500ms", "--upstream-timeout", "120s"];
    let e = edge(&[origin.node().url("h3")], &cache, &origin.cert(), &args);
    let base = e.url("http");
    let m = manifest(&base, "sunrise", &origin.key()).await;
    let cached: Vec<ChunkId> = m.renditions[1].chunks().map(|c| c.id).collect();
    let mut c = conn(&base).await;
    for id in &cached {
        assert_eq!(get_chunk(&mut c, id).await, StatusCode::OK);
    }
    let uncached = m.renditions[0].segments[0].id;

    // Origin crashed (SIGKILL: no goodbye on the QUIC connection): hits still served, a miss
    // fails promptly with 502/504.
    drop(origin.node.take());
    for id in &cached {
        assert_eq!(get_chunk(&mut c, id).await, StatusCode::OK);
    }
    // Ended by the dead connection's liveness check (QUIC keep-alive 1 s, idle 3 s) or the next
    // failed health check (every 500 ms, 1 s connect timeout), not by the request timeout.
    let status = get_chunk(&mut c, &uncached).await;
    assert!(matches!(status, StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT), "{status}");
    eventually("edge not ready without upstreams", async || {
        conn(&base).await.get("/readyz").await.unwrap().status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    // The policy, not a clock: an upstream marked down is not tried at all (no request goes
    // out, so nothing waits on a timeout).
    let tried = async || metric_sum(&get_text(&base, "/metrics").await, "chorus_edge_upstream_requests_total", &[]);
    let before = tried().await;
    let status = get_chunk(&mut c, &uncached).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(tried().await, before, "a miss with every upstream marked down tried one");
    drop(c);

    // Edge restarted (origin still down): the disk tier answers with no upstream at all.
    let e = e.terminate();
    assert!(e.success());
    let e = edge(&["http://127.0.0.1:9".into()], &cache, &origin.cert(), &args);
    let base = e.url("http");
    let mut c = conn(&base).await;
    for id in &cached {
        assert_eq!(get_chunk(&mut c, id).await, StatusCode::OK);
    }
    let t = get_text(&base, "/metrics").await;
    assert_eq!(metric(&t, "chorus_edge_cache_requests_total{result=\"hit\",tier=\"disk\"}"), cached.len() as f64);
    assert_eq!(metric_sum(&t, "chorus_edge_upstream_requests_total", &[]), 0.0);
    drop(c);
    drop(e);

    // A cache file damaged while the edge was down is caught on read and fetched again.
    origin.restart();
    let victim = cached[1];
    let hex = victim.to_hex();
    let file = cache.join("chunks").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[7] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();
    let e = edge(&[origin.node().url("http")], &cache, &origin.cert(), &args);
    let base = e.url("http");
    let before = origin.chunk_fetches().await;
    let mut c = conn(&base).await;
    assert_eq!(get_chunk(&mut c, &victim).await, StatusCode::OK);
    assert_eq!(origin.chunk_fetches().await - before, 1.0);
    let t = get_text(&base, "/metrics").await;
    assert_eq!(metric(&t, "chorus_edge_corrupt_chunks_total{source=\"disk\"}"), 1.0);
    assert_eq!(ChunkId::of(&std::fs::read(&file).unwrap()), victim, "the refetched chunk was written back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_chunk_and_by_track() {
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(
        &[origin.node().url("http")],
        &cache,
        &origin.cert(),
        &["--prefetch-segments", "0", "--admin-token", "adm1n-for-tests-0123456789abcdef"],
    );
    let base = e.url("http");
    let m = manifest(&base, "tides", &origin.key()).await;
    let ids: Vec<ChunkId> = m.renditions[0].chunks().map(|c| c.id).collect();
    let mut c = conn(&base).await;
    for id in &ids {
        get_chunk(&mut c, id).await;
    }
    let purge = |body: String, token: &str| {
        Request::post("/admin/purge")
            .header("authorization", format!("Bearer {token}"))
            .body(bytes::Bytes::from(body))
            .unwrap()
    };
    assert_eq!(
        c.send(purge(format!("{{\"chunks\":[\"{}\"]}}", ids[1]), "nope")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let r =
        c.send(purge(format!("{{\"chunks\":[\"{}\"]}}", ids[1]), "adm1n-for-tests-0123456789abcdef")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(r.body()).unwrap()["purged_chunks"], 1);
    let before = origin.chunk_fetches().await;
    get_chunk(&mut c, &ids[1]).await;
    assert_eq!(origin.chunk_fetches().await - before, 1.0, "a purged chunk is fetched again");
    let r = c.send(purge("{\"tracks\":[\"tides\"]}".into(), "adm1n-for-tests-0123456789abcdef")).await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["purged_manifests"], 1);
    assert_eq!(v["purged_chunks"], ids.len());
    let before = origin.chunk_fetches().await;
    get_chunk(&mut c, &ids[0]).await;
    assert_eq!(origin.chunk_fetches().await - before, 1.0);
    assert_eq!(
        c.send(purge("{\"bogus\":1}".into(), "adm1n-for-tests-0123456789abcdef")).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );

    // Prewarm positions a track's start before anyone asks.
    let r = c
        .send(
            Request::post("/admin/prewarm")
                .header("authorization", "Bearer adm1n-for-tests-0123456789abcdef")
                .body(bytes::Bytes::from_static(b"{\"tracks\":[\"sunrise\"]}"))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let m2 = manifest(&origin.node().url("http"), "sunrise", &origin.key()).await;
    let start = chorus_edge::prefetch::track_start(&m2, 2);
    // The sample tracks share their init segments: one is cached already (ids[0]).
    let fresh = start.iter().filter(|id| !ids.contains(id)).count();
    let base2 = base.clone();
    eventually("prewarm done", async || {
        let t = get_text(&base2, "/metrics").await;
        metric(&t, "chorus_edge_prefetch_total{result=\"issued\"}") == fresh as f64
            && origin.chunk_fetches().await >= (ids.len() + 2 + fresh) as f64
    })
    .await;
    let before = origin.chunk_fetches().await;
    for id in &start {
        get_chunk(&mut c, id).await;
    }
    assert_eq!(origin.chunk_fetches().await, before);

    // Asked again at once: accepted, but not warmed twice within 30 s, and the answer says so.
    let v = prewarm(&mut c, "sunrise").await;
    assert_eq!(
        (v["accepted"].as_u64(), v["warming"].as_u64(), v["recently_warmed"].as_u64()),
        (Some(1), Some(0), Some(1)),
        "{v}"
    );
    // After a purge of the track it is cold again, and a prewarm right away warms it.
    let r = c.send(purge("{\"tracks\":[\"sunrise\"]}".into(), "adm1n-for-tests-0123456789abcdef")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let v = prewarm(&mut c, "sunrise").await;
    assert_eq!(v["warming"].as_u64(), Some(1), "{v}");
    let base3 = base.clone();
    eventually("prewarm after purge done", async || {
        let t = get_text(&base3, "/metrics").await;
        metric(&t, "chorus_edge_prefetch_total{result=\"issued\"}") >= (fresh + start.len()) as f64
    })
    .await;
    let before = origin.chunk_fetches().await;
    for id in &start {
        get_chunk(&mut c, id).await;
    }
    assert_eq!(origin.chunk_fetches().await, before, "the re-warmed start is served from cache");

    // Guessing the admin token is slowed: one wrong token was spent above; four more, then the
    // address is answered 429 (Retry-After) without its token being looked at, even the right
    // one; each refusal counts.
    for _ in 0..4 {
        assert_eq!(
            c.send(purge("{\"tracks\":[\"tides\"]}".into(), "guess")).await.unwrap().status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let r = c.send(purge("{\"tracks\":[\"tides\"]}".into(), "adm1n-for-tests-0123456789abcdef")).await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    let t = get_text(&base, "/metrics").await;
    assert_eq!(metric(&t, "chorus_edge_refused_total{reason=\"admin_auth\"}"), 6.0);
}

/// `POST /admin/prewarm` of one track (admin token `adm1n-for-tests-0123456789abcdef`); the 202 answer's JSON.
async fn prewarm(c: &mut Connection, track: &str) -> serde_json::Value {
    let req = Request::post("/admin/prewarm")
        .header("authorization", "Bearer adm1n-for-tests-0123456789abcdef")
        .body(bytes::Bytes::from(format!("{{\"tracks\":[\"{track}\"]}}")))
        .unwrap();
    let r = c.send(req).await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    serde_json::from_slice(r.body()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_with_an_audience_and_an_issuer_takes_only_tokens_that_name_them() {
    let origin = Origin::start();
    let keys_dir = origin.dir.path().join("keys");
    assert!(chorus(&["keys", "generate", "--out", s(&keys_dir)]).status.success());
    let token_pub = keys_dir.join("token.pub");
    let e = edge(
        &[origin.node().url("http")],
        &origin.dir.path().join("edge-cache"),
        &origin.cert(),
        &["--token-key", s(&token_pub), "--token-audience", "chorus-cdn", "--token-issuer", "https://id.example"],
    );
    let token_key = keys_dir.join("token.key");
    let issue = |extra: &[&str]| {
        let mut args = vec!["token", "issue", "--key", s(&token_key), "--ttl", "1h"];
        args.extend_from_slice(extra);
        String::from_utf8(chorus(&args).stdout).unwrap().trim().to_owned()
    };
    let mut c = conn(&e.url("http")).await;
    let status = async |c: &mut Connection, token: &str| {
        let r = Request::get("/v1/tracks/tides/manifest").header("authorization", format!("Bearer {token}"));
        c.send(r.body(bytes::Bytes::new()).unwrap()).await.unwrap().status()
    };
    let both = issue(&["--aud", "chorus-cdn", "--iss", "https://id.example"]);
    assert_eq!(status(&mut c, &both).await, StatusCode::OK);
    for bad in [
        issue(&[]),
        issue(&["--aud", "chorus-cdn"]),
        issue(&["--aud", "another-service", "--iss", "https://id.example"]),
        issue(&["--aud", "chorus-cdn", "--iss", "https://evil.example"]),
    ] {
        assert_eq!(status(&mut c, &bad).await, StatusCode::UNAUTHORIZED);
    }
    // Without a token key, the flags make no sense: refused at start.
    let out = chorus(&["edge", "--upstream", "http://127.0.0.1:9", "--token-audience", "x"]);
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_tokens_are_checked() {
    let origin = Origin::start();
    let keys_dir = origin.dir.path().join("keys");
    assert!(chorus(&["keys", "generate", "--out", s(&keys_dir)]).status.success());
    let cache = origin.dir.path().join("edge-cache");
    let token_pub = keys_dir.join("token.pub");
    let e = edge(&[origin.node().url("http")], &cache, &origin.cert(), &["--token-key", s(&token_pub)]);
    let base = e.url("http");
    let token_key = keys_dir.join("token.key");
    let issue = |extra: &[&str]| {
        let mut args = vec!["token", "issue", "--key", s(&token_key)];
        args.extend_from_slice(extra);
        let out = chorus(&args);
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let sunrise_only = issue(&["--track", "sunrise", "--ttl", "1h"]);
    let all = issue(&["--ttl", "1h"]);
    // Expired two minutes ago: beyond the edge's 30 s leeway for clock skew.
    let now = chorus_core::token::unix_secs(std::time::SystemTime::now());
    let expired = chorus_core::token::TokenIssuer::new(&keys::read_signing_key(&token_key).unwrap())
        .unwrap()
        .issue(&chorus_core::token::Claims { iat: Some(now - 180), ..chorus_core::token::Claims::expiring(now - 120) })
        .unwrap();
    let get = |path: &str, token: Option<&str>| {
        let mut b = Request::get(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(bytes::Bytes::new()).unwrap()
    };
    let mut c = conn(&base).await;
    let status = async |c: &mut Connection, r| c.send(r).await.unwrap().status();
    assert_eq!(status(&mut c, get("/v1/tracks/sunrise/manifest", None)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&mut c, get("/v1/tracks/sunrise/manifest", Some("not.a.jwt"))).await, StatusCode::UNAUTHORIZED);
    let r = c.send(get("/v1/tracks/sunrise/manifest", Some(&expired))).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(String::from_utf8_lossy(r.body()).contains("expired"));
    assert_eq!(status(&mut c, get("/v1/tracks/sunrise/manifest", Some(&sunrise_only))).await, StatusCode::OK);
    assert_eq!(status(&mut c, get("/v1/tracks/tides/manifest", Some(&sunrise_only))).await, StatusCode::FORBIDDEN);
    assert_eq!(status(&mut c, get("/v1/tracks/tides/manifest", Some(&all))).await, StatusCode::OK);
    // Chunks are scoped through the manifests the edge has seen.
    let m = manifest_with(&base, "tides", &all, &origin.key()).await;
    let tides_seg = m.renditions[1].segments[0].id;
    assert_eq!(
        status(&mut c, get(&format!("/v1/chunks/{tides_seg}"), Some(&sunrise_only))).await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(&mut c, get(&format!("/v1/chunks/{tides_seg}"), Some(&all))).await, StatusCode::OK);
    // The token query parameter works too (for HLS players), and is carried into playlists.
    let r = c.send(get(&format!("/v1/tracks/sunrise/hls/aac-24.m3u8?token={sunrise_only}"), None)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(String::from_utf8_lossy(r.body()).contains(&format!("?token={sunrise_only}")));
    // Health and metrics need no token.
    assert_eq!(status(&mut c, get("/healthz", None)).await, StatusCode::OK);
}

async fn manifest_with(base: &str, track: &str, token: &str, key: &keys::VerifyingKey) -> Manifest {
    let r = conn(base)
        .await
        .send(
            Request::get(format!("/v1/tracks/{track}/manifest"))
                .header("authorization", format!("Bearer {token}"))
                .body(bytes::Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
    Manifest::verify(r.body(), key).unwrap()
}

fn now() -> u64 {
    support::unix_now()
}

/// `POST /v1/peers/announce` of the peer of `key` at `addrs`, holding "sunrise", signed for
/// `edge` at `timestamp`.
fn signed_announce(key: &Keypair, addrs: &[String], edge: &str, timestamp: u64) -> Request<bytes::Bytes> {
    let a = chorus_core::api::Announce {
        peer_id: key.public().to_peer_id().to_base58(),
        addrs: addrs.to_vec(),
        tracks: vec![chorus_core::TrackId::parse("sunrise").unwrap()],
        held: Vec::new(),
        dropped: Vec::new(),
        timestamp,
        edge: edge.to_owned(),
    };
    let body = serde_json::to_vec(&SignedAnnounce::sign(key, &a).unwrap()).unwrap();
    Request::post("/v1/peers/announce").body(bytes::Bytes::from(body)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracker_limits() {
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(&[origin.node().url("http")], &cache, &origin.cert(), &[]);
    let base = e.url("http");
    let mut c = conn(&base).await;
    let keys: Vec<Keypair> = (0..12).map(|_| Keypair::generate_ed25519()).collect();
    let name = chorus_core::announce::edge_name(&base.parse().unwrap());
    let announce = |n: usize| signed_announce(&keys[n], &[format!("/ip4/127.0.0.1/tcp/{}", 4000 + n)], &name, now());
    let mut statuses = Vec::new();
    for n in 0..12 {
        statuses.push(c.send(announce(n)).await.unwrap().status());
    }
    // A burst of 10 per source, then 429.
    assert!(statuses[..10].iter().all(|s| *s == StatusCode::OK), "{statuses:?}");
    assert_eq!(statuses[10], StatusCode::TOO_MANY_REQUESTS);
    // Ten peers from one source network: the newest 4 are listed (4 per /24 per track).
    let r = c.get("/v1/tracks/sunrise/peers").await.unwrap();
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    let listed: Vec<&str> = v["peers"].as_array().unwrap().iter().map(|p| p["peer_id"].as_str().unwrap()).collect();
    let newest: Vec<String> = keys[6..10].iter().map(|k| k.public().to_peer_id().to_base58()).collect();
    assert_eq!(listed.len(), 4, "{v}");
    assert!(newest.iter().all(|p| listed.contains(&p.as_str())), "{v}");
    let r = c.get("/v1/tracks/tides/peers").await.unwrap();
    assert_eq!(serde_json::from_slice::<serde_json::Value>(r.body()).unwrap()["peers"], serde_json::json!([]));
    let t = get_text(&base, "/metrics").await;
    assert_eq!(metric(&t, "chorus_tracker_peers"), 4.0);
    assert_eq!(metric(&t, "chorus_tracker_announces_refused_total{reason=\"rate\"}"), 2.0);
    // A QoE beacon feeds the QoE metrics.
    let beacon = serde_json::json!({"track_id": "sunrise", "startup_ms": 180, "stalls": 1, "stall_ms": 400, "bytes": {"edge": 1000, "peer": 3000, "cache": 0}});
    let r = c.send(Request::post("/v1/qoe").body(bytes::Bytes::from(beacon.to_string())).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let t = get_text(&base, "/metrics").await;
    assert_eq!(metric(&t, "chorus_qoe_stalls_total"), 1.0);
    assert_eq!(metric(&t, "chorus_qoe_bytes_total{source=\"peer\"}"), 3000.0);
    assert_eq!(metric(&t, "chorus_qoe_startup_seconds_count"), 1.0);
    // A beacon claiming absurd values is refused (five of them once made the stall counter
    // 500 000); beyond ten beacons from one address, 429 until its budget refills (one per
    // 10 s). Neither moves the QoE metrics; both show in chorus_edge_refused_total.
    let absurd = serde_json::json!({"track_id": "sunrise", "startup_ms": 1, "stalls": 100_000});
    let r = c.send(Request::post("/v1/qoe").body(bytes::Bytes::from(absurd.to_string())).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    // (Counted, not timed: the budget refills one beacon per 10 s, so a slow machine may see
    // one or two more accepted; every accepted one counts, every refused one does not.)
    let mut statuses = Vec::new();
    for _ in 0..20 {
        let r = c.send(Request::post("/v1/qoe").body(bytes::Bytes::from(beacon.to_string())).unwrap()).await.unwrap();
        statuses.push(r.status());
    }
    let accepted = statuses.iter().filter(|s| **s == StatusCode::NO_CONTENT).count();
    let limited = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(accepted + limited, 20, "{statuses:?}");
    assert!(accepted >= 8 && limited >= 8, "a burst of 10 a source, then one per 10 s: {statuses:?}");
    let t = get_text(&base, "/metrics").await;
    assert_eq!(metric(&t, "chorus_qoe_stalls_total"), (1 + accepted) as f64);
    assert_eq!(metric(&t, "chorus_edge_refused_total{reason=\"qoe_invalid\"}"), 1.0);
    assert_eq!(metric(&t, "chorus_edge_refused_total{reason=\"qoe_rate\"}"), limited as f64);
}

/// Announces as an attacker would make them: unsigned, pointing listeners at hosts that never
/// joined, squatting another peer's id, replayed to another edge, late, or older than the
/// peer's last. None of it is listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announces_from_strangers_are_refused_and_their_targets_never_listed() {
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(&[origin.node().url("http")], &cache, &origin.cert(), &["--p2p-relay", "/ip4/127.0.0.1/tcp/0"]);
    let base = e.url("http");
    let name = chorus_core::announce::edge_name(&base.parse().unwrap());
    let mut c = conn(&base).await;
    let (victim, attacker) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let status = |r: &http::Response<bytes::Bytes>| r.status();
    let body = |r: &http::Response<bytes::Bytes>| serde_json::from_slice::<serde_json::Value>(r.body()).unwrap();

    // The unsigned form of the announce.
    let peer = victim.public().to_peer_id();
    let unsigned =
        serde_json::json!({"peer_id": peer.to_base58(), "addrs": ["/ip4/127.0.0.1/tcp/4001"], "tracks": ["sunrise"]});
    let r = c
        .send(Request::post("/v1/peers/announce").body(bytes::Bytes::from(unsigned.to_string())).unwrap())
        .await
        .unwrap();
    assert_eq!(status(&r), StatusCode::BAD_REQUEST, "{:?}", body(&r));

    // Signed, but every address points elsewhere than the sender (127.0.0.1).
    let targets = ["/ip4/10.1.2.3/tcp/22", "/ip4/169.254.169.254/tcp/80", "/dns4/internal.example/tcp/6379"];
    let targets: Vec<String> = targets.iter().map(|t| (*t).to_owned()).collect();
    let r = c.send(signed_announce(&attacker, &targets, &name, now())).await.unwrap();
    assert_eq!(status(&r), StatusCode::BAD_REQUEST, "{:?}", body(&r));
    assert!(body(&r)["error"].as_str().unwrap().contains("127.0.0.1"), "{:?}", body(&r));
    // Mixed with its own address: only that one is listed.
    let mut mixed = targets.clone();
    mixed.push("/ip4/127.0.0.1/tcp/4002".into());
    assert_eq!(status(&c.send(signed_announce(&attacker, &mixed, &name, now())).await.unwrap()), StatusCode::OK);

    // The victim's peer id, signed by the attacker's key.
    let squat = chorus_core::api::Announce {
        peer_id: peer.to_base58(),
        addrs: vec!["/ip4/127.0.0.1/tcp/4003".into()],
        tracks: vec![chorus_core::TrackId::parse("sunrise").unwrap()],
        held: Vec::new(),
        dropped: Vec::new(),
        timestamp: now(),
        edge: name.clone(),
    };
    let squat = serde_json::to_vec(&SignedAnnounce::sign(&attacker, &squat).unwrap()).unwrap();
    let r = c.send(Request::post("/v1/peers/announce").body(bytes::Bytes::from(squat)).unwrap()).await.unwrap();
    assert_eq!(status(&r), StatusCode::UNAUTHORIZED, "{:?}", body(&r));

    // The victim's own announce, replayed: to another edge, after its window, or after a newer one.
    let own = ["/ip4/127.0.0.1/tcp/4004".to_owned()];
    let r = c.send(signed_announce(&victim, &own, "edge-b.example:8080", now())).await.unwrap();
    assert_eq!(status(&r), StatusCode::UNAUTHORIZED, "{:?}", body(&r));
    let r = c.send(signed_announce(&victim, &own, &name, now() - 600)).await.unwrap();
    assert_eq!(status(&r), StatusCode::UNAUTHORIZED);
    assert!(
        body(&r)["now"].as_u64().unwrap().abs_diff(now()) < 60,
        "the edge's clock, to sign again by: {:?}",
        body(&r)
    );
    assert_eq!(status(&c.send(signed_announce(&victim, &own, &name, now())).await.unwrap()), StatusCode::OK);
    let r = c.send(signed_announce(&victim, &own, &name, now() - 30)).await.unwrap();
    assert_eq!(status(&r), StatusCode::CONFLICT, "{:?}", body(&r));

    // A circuit through this edge's relay whose prefix names a host to dial: listed through
    // the relay's real address only. The same announce sent twice: the second is a replay.
    let r = c.get("/v1/tracks/sunrise/peers").await.unwrap();
    let relay = body(&r)["relays"][0].as_str().unwrap().to_owned();
    let relay_id = relay.rsplit_once("/p2p/").unwrap().1.to_owned();
    let hidden = Keypair::generate_ed25519();
    let circuit = [format!("/ip4/169.254.169.254/tcp/80/p2p/{relay_id}/p2p-circuit")];
    let once = signed_announce(&hidden, &circuit, &name, now());
    assert_eq!(status(&c.send(once.clone()).await.unwrap()), StatusCode::OK);
    assert_eq!(status(&c.send(once).await.unwrap()), StatusCode::CONFLICT);

    // Listed: the attacker at its own address, the victim at its own; nothing else.
    let r = c.get("/v1/tracks/sunrise/peers").await.unwrap();
    let mut listed: Vec<(String, Vec<String>)> = body(&r)["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let addrs = p["addrs"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_owned()).collect();
            (p["peer_id"].as_str().unwrap().to_owned(), addrs)
        })
        .collect();
    listed.sort();
    let mut want = vec![
        (
            attacker.public().to_peer_id().to_base58(),
            vec![format!("/ip4/127.0.0.1/tcp/4002/p2p/{}", attacker.public().to_peer_id())],
        ),
        (peer.to_base58(), vec![format!("/ip4/127.0.0.1/tcp/4004/p2p/{peer}")]),
        (
            hidden.public().to_peer_id().to_base58(),
            vec![format!("{relay}/p2p-circuit/p2p/{}", hidden.public().to_peer_id())],
        ),
    ];
    want.sort();
    assert_eq!(listed, want);
    let t = get_text(&base, "/metrics").await;
    for (reason, n) in
        [("address", 1.0), ("signature", 1.0), ("edge", 1.0), ("time", 1.0), ("replay", 2.0), ("malformed", 0.0)]
    {
        let series = format!("chorus_tracker_announces_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&t, &series), n, "{series}");
    }
}

/// Sends `req` on a fresh TCP connection to `addr` after `preface` (a PROXY header, or
/// nothing), as HTTP/1.1, and returns the status.
async fn raw_send(addr: &str, preface: &[u8], req: Request<bytes::Bytes>, host: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut head = format!("{} {} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n", req.method(), req.uri());
    for (k, v) in req.headers() {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().unwrap()));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", req.body().len()));
    // A server that refuses the first line answers and closes at once: the rest of our bytes
    // may then find the connection reset. What counts is its answer, read below.
    let _ = s.write_all(&[preface, head.as_bytes(), req.body()].concat()).await;
    // Read to the end; a server that closes with our bytes unread may reset the connection
    // after its answer, which ends the read as well.
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n @ 1..) = s.read(&mut buf).await {
        out.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&out);
    text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no status in {text:?}"))
}

/// Behind a load balancer the operator trusts, the client's address comes from a PROXY header
/// or `X-Forwarded-For`, and announced addresses are bound to it; from anyone else neither is
/// believed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_comes_from_a_trusted_proxy_only() {
    let origin = Origin::start();
    let cache = |n: &str| origin.dir.path().join(n);
    let upstream = [origin.node().url("http")];
    // An L4 balancer that sends PROXY headers (the default mode), an L7 one that writes
    // X-Forwarded-For, and an edge that trusts no one.
    let l4 = edge(&upstream, &cache("l4"), &origin.cert(), &["--trusted-proxy", "127.0.0.0/8"]);
    let l7 = edge(
        &upstream,
        &cache("l7"),
        &origin.cert(),
        &["--trusted-proxy", "127.0.0.0/8", "--trusted-proxy-mode", "x-forwarded-for"],
    );
    let open = edge(&upstream, &cache("open"), &origin.cert(), &[]);
    let at = |ip: &str| vec![format!("/ip4/{ip}/tcp/4001")];
    let v1 = |node: &chorus_testkit::Node| {
        let port = node.addr("http").rsplit_once(':').unwrap().1.to_owned();
        format!("PROXY TCP4 198.51.100.9 127.0.0.1 50000 {port}\r\n")
    };
    let xff = |mut req: Request<bytes::Bytes>, client: &str| {
        req.headers_mut().insert("x-forwarded-for", format!("6.6.6.6, {client}").parse().unwrap());
        req
    };
    // An announce over HTTP/3: its `edge` is the h3 listener's host:port.
    let over_h3 = |node: &chorus_testkit::Node, dir: &str, client: &str| {
        let url = node.url("h3");
        let trust = ClientTls { ca_files: vec![cache(dir).join("tls").join("cert.pem")], insecure: false };
        let client = client.to_owned();
        async move {
            let name = chorus_core::announce::edge_name(&url.parse().unwrap());
            let req = xff(signed_announce(&Keypair::generate_ed25519(), &at(&client), &name, now()), &client);
            let mut c = HttpClient::new(&trust).unwrap().connect(&url.parse().unwrap(), false).await.unwrap();
            assert_eq!(c.protocol(), Protocol::Http3);
            c.send(req).await.unwrap().status().as_u16()
        }
    };
    let listed = |node: &chorus_testkit::Node| {
        let url = node.url("http");
        async move {
            let r = conn(&url).await.get("/v1/tracks/sunrise/peers").await.unwrap();
            let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
            let mut ips: Vec<String> = v["peers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["addrs"][0].as_str().unwrap().split('/').nth(2).unwrap().to_owned())
                .collect();
            ips.sort_unstable();
            ips
        }
    };

    // The L4 mode: the PROXY header names the client (198.51.100.9)…
    let name = chorus_core::announce::edge_name(&l4.base("http"));
    let req = signed_announce(&Keypair::generate_ed25519(), &at("198.51.100.9"), &name, now());
    assert_eq!(raw_send(&l4.addr("http"), v1(&l4).as_bytes(), req, &name).await, 200);
    // …and X-Forwarded-For is not believed, even from the balancer's address: such a balancer
    // passes a client's own header through. Bound to 127.0.0.1, 198.51.100.10 is refused.
    let req = xff(signed_announce(&Keypair::generate_ed25519(), &at("198.51.100.10"), &name, now()), "198.51.100.10");
    assert_eq!(raw_send(&l4.addr("http"), b"", req, &name).await, 400);
    // Nor over HTTP/3 (no PROXY protocol there: the QUIC connection's address counts).
    assert_eq!(over_h3(&l4, "l4", "198.51.100.11").await, 400);
    // A malformed PROXY header closes the connection without an answer.
    let mut s = tokio::net::TcpStream::connect(l4.addr("http")).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"PROXY TCP4 nonsense\r\n").await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out).await;
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(listed(&l4).await, ["198.51.100.9"]);

    // The L7 mode: the rightmost X-Forwarded-For entry (the balancer's) names the client, on
    // HTTP/1.1 and HTTP/3; the client's own claim (6.6.6.6) is not believed; a PROXY header is
    // not read (it is not HTTP).
    let name = chorus_core::announce::edge_name(&l7.base("http"));
    let req = xff(signed_announce(&Keypair::generate_ed25519(), &at("198.51.100.10"), &name, now()), "198.51.100.10");
    assert_eq!(raw_send(&l7.addr("http"), b"", req, &name).await, 200);
    assert_eq!(over_h3(&l7, "l7", "198.51.100.11").await, 200);
    let req = signed_announce(&Keypair::generate_ed25519(), &at("198.51.100.9"), &name, now());
    assert_eq!(raw_send(&l7.addr("http"), v1(&l7).as_bytes(), req, &name).await, 400, "the PROXY line is not HTTP");
    assert_eq!(listed(&l7).await, ["198.51.100.10", "198.51.100.11"]);

    // An edge that trusts no proxy believes neither.
    let name = chorus_core::announce::edge_name(&open.base("http"));
    let req = signed_announce(&Keypair::generate_ed25519(), &at("198.51.100.9"), &name, now());
    assert_eq!(raw_send(&open.addr("http"), v1(&open).as_bytes(), req, &name).await, 400, "the PROXY line is not HTTP");
    let req = xff(signed_announce(&Keypair::generate_ed25519(), &at("198.51.100.11"), &name, now()), "198.51.100.11");
    assert_eq!(raw_send(&open.addr("http"), b"", req, &name).await, 400, "bound to 127.0.0.1, not to the header");
    assert_eq!(over_h3(&open, "open", "198.51.100.11").await, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_and_slow_upstreams_are_never_passed_on() {
    let origin = Origin::start();
    let (liar, liar_state) = proxy::start(&origin.node().url("http"), Mode::Corrupt).await;
    let (slow, slow_state) = proxy::start(&origin.node().url("http"), Mode::Delay(Duration::from_secs(30))).await;
    let cache = origin.dir.path().join("edge-cache");
    // The liar first, the real origin second: every chunk is caught and fetched from the origin.
    let e = edge(&[liar.clone(), origin.node().url("http")], &cache, &origin.cert(), &["--prefetch-segments", "0"]);
    let base = e.url("http");
    let m = manifest(&base, "sunrise", &origin.key()).await;
    let ids: Vec<ChunkId> = m.renditions[0].chunks().map(|c| c.id).collect();
    let mut c = conn(&base).await;
    for id in &ids {
        assert_eq!(get_chunk(&mut c, id).await, StatusCode::OK);
    }
    let t = get_text(&base, "/metrics").await;
    let caught = metric(&t, "chorus_edge_corrupt_chunks_total{source=\"upstream\"}");
    let asked = liar_state.chunk_requests.load(std::sync::atomic::Ordering::SeqCst) as f64;
    assert!(caught >= 1.0 && caught == asked, "every corrupt chunk is caught: {caught} of {asked}");
    drop(e);

    // Only a liar: the client gets an error, never the wrong bytes.
    let e = edge(&[liar], &origin.dir.path().join("cache2"), &origin.cert(), &["--prefetch-segments", "0"]);
    let mut c = conn(&e.url("http")).await;
    let status = get_chunk(&mut c, &ids[0]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    drop(e);

    // A slow upstream times out and the next one answers.
    let e = edge(
        &[slow, origin.node().url("http")],
        &origin.dir.path().join("cache3"),
        &origin.cert(),
        &["--prefetch-segments", "0", "--upstream-timeout", "1s"],
    );
    let mut c = conn(&e.url("http")).await;
    // The slow upstream answers after 30 s, beyond the test client's 20 s: an OK comes from the
    // next one, after the 1 s timeout.
    assert_eq!(get_chunk(&mut c, &ids[1]).await, StatusCode::OK);
    assert!(slow_state.chunk_requests.load(std::sync::atomic::Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_edge_goes_through_its_parent() {
    let origin = Origin::start();
    let dir = origin.dir.path();
    let parent =
        edge(&[origin.node().url("h3")], &dir.join("parent-cache"), &origin.cert(), &["--prefetch-segments", "0"]);
    // The child trusts both the origin's and the parent's self-signed certificates.
    let parent_cert = dir.join("parent-cache").join("tls").join("cert.pem");
    let both = dir.join("both.pem");
    let mut pem = std::fs::read(origin.cert()).unwrap();
    pem.extend(std::fs::read(&parent_cert).unwrap());
    std::fs::write(&both, pem).unwrap();
    let child = edge(
        &[origin.node().url("h3")],
        &dir.join("child-cache"),
        &both,
        &["--prefetch-segments", "0", "--parent", &parent.url("https")],
    );
    let m = manifest(&child.url("http"), "tides", &origin.key()).await;
    let mut c = conn(&child.url("http")).await;
    for chunk in m.renditions[0].chunks() {
        assert_eq!(get_chunk(&mut c, &chunk.id).await, StatusCode::OK);
    }
    let n = m.renditions[0].chunks().count() as f64;
    let parent_metrics = get_text(&parent.url("http"), "/metrics").await;
    assert_eq!(
        metric(&parent_metrics, "chorus_edge_cache_requests_total{result=\"miss\",tier=\"none\"}"),
        n,
        "every child miss went to the parent"
    );
    assert_eq!(origin.chunk_fetches().await, n, "the origin saw each chunk once, from the parent");
    let child_metrics = get_text(&child.url("http"), "/metrics").await;
    assert_eq!(
        metric_sum(
            &child_metrics,
            "chorus_edge_upstream_requests_total",
            &[&format!("upstream=\"{}\"", parent.url("https")), "status=\"200\""]
        ),
        n + 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_write_error_turns_the_disk_tier_off_and_fails_nothing() {
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(&[origin.node().url("http")], &cache, &origin.cert(), &["--prefetch-segments", "0"]);
    let base = e.url("http");
    let m = manifest(&base, "sunrise", &origin.key()).await;
    let ids: Vec<ChunkId> = m.renditions[1].chunks().map(|c| c.id).collect();
    // A file where the chunk's directory must go: the disk write fails (as on a full or broken disk).
    let hex = ids[0].to_hex();
    std::fs::write(cache.join("chunks").join(&hex[..2]), b"in the way").unwrap();
    let mut c = conn(&base).await;
    for id in &ids {
        assert_eq!(get_chunk(&mut c, id).await, StatusCode::OK);
    }
    let t = get_text(&base, "/metrics").await;
    assert_eq!(
        metric(&t, "chorus_edge_cache_capacity_bytes{tier=\"disk\"}"),
        0.0,
        "disk tier still on after a write error"
    );
    // Memory still serves them.
    for id in &ids {
        assert_eq!(get_chunk(&mut c, id).await, StatusCode::OK);
    }
    let t = get_text(&base, "/metrics").await;
    assert_eq!(metric(&t, "chorus_edge_cache_requests_total{result=\"hit\",tier=\"memory\"}"), ids.len() as f64);
    assert!(e.log.lock().unwrap().iter().any(|l| l.contains("continuing memory-only")), "no warning logged");
}

/// Reads one HTTP/1.1 response (head and a Content-Length body) from `s`, leaving the rest.
async fn read_response(s: &mut tokio::net::TcpStream, buf: &mut Vec<u8>, head_request: bool) -> (u16, String, Vec<u8>) {
    use tokio::io::AsyncReadExt as _;
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
            let is_head = head_request;
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            let body_len = if is_head { 0 } else { len };
            while buf.len() < end + 4 + body_len {
                let mut chunk = [0u8; 65536];
                let n = s.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed mid-body");
                buf.extend_from_slice(&chunk[..n]);
            }
            let body = buf[end + 4..end + 4 + body_len].to_vec();
            buf.drain(..end + 4 + body_len);
            return (status, head, body);
        }
        let mut chunk = [0u8; 65536];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_http1_hits_are_sent_from_disk_with_sendfile() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(&[origin.node().url("http")], &cache, &origin.cert(), &["--prefetch-segments", "0"]);
    let base = e.url("http");
    let m = manifest(&base, "tides", &origin.key()).await;
    let seg = m.renditions[1].segments[0];
    let other = m.renditions[1].segments[1];
    let mut s = tokio::net::TcpStream::connect(e.addr("http")).await.unwrap();
    let mut buf = Vec::new();
    // A miss (fetched, written to disk, verified), then a hit from the verified file.
    for _ in 0..2 {
        s.write_all(format!("GET /v1/chunks/{} HTTP/1.1\r\nHost: x\r\n\r\n", seg.id).as_bytes()).await.unwrap();
        let (status, _, body) = read_response(&mut s, &mut buf, false).await;
        assert_eq!(status, 200);
        assert_eq!(ChunkId::of(&body), seg.id);
    }
    let t = get_text(&base, "/metrics").await;
    assert_eq!(
        metric(&t, "chorus_edge_cache_requests_total{result=\"hit\",tier=\"disk\"}"),
        1.0,
        "second request not a disk (sendfile) hit"
    );
    assert_eq!(metric(&t, "chorus_edge_served_bytes_total{source=\"disk\"}"), seg.size as f64);
    // A range, sent from the file at an offset.
    s.write_all(
        format!("GET /v1/chunks/{}.m4s HTTP/1.1\r\nHost: x\r\nRange: bytes=100-199\r\n\r\n", seg.id).as_bytes(),
    )
    .await
    .unwrap();
    let (status, head, body) = read_response(&mut s, &mut buf, false).await;
    assert_eq!(status, 206);
    assert!(head.contains(&format!("content-range: bytes 100-199/{}", seg.size)), "{head}");
    let whole =
        conn(&origin.node().url("http")).await.get(&format!("/v1/chunks/{}", seg.id)).await.unwrap().into_body();
    assert_eq!(body, whole[100..200].to_vec());
    // Two pipelined requests in one write are answered in order; HEAD has no body.
    s.write_all(
        format!(
            "HEAD /v1/chunks/{} HTTP/1.1\r\nHost: x\r\n\r\nGET /v1/chunks/{} HTTP/1.1\r\nHost: x\r\n\r\n",
            seg.id, other.id
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (status, head, body) = read_response(&mut s, &mut buf, true).await;
    assert_eq!(status, 200);
    assert!(body.is_empty() && head.contains(&format!("content-length: {}", seg.size)), "{head}");
    let (status, _, body) = read_response(&mut s, &mut buf, false).await;
    assert_eq!(status, 200);
    assert_eq!(ChunkId::of(&body), other.id);
    // A request with a body on the same connection goes to hyper, which answers it.
    let beacon = r#"{"track_id":"tides","startup_ms":100}"#;
    s.write_all(
        format!("POST /v1/qoe HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{beacon}", beacon.len()).as_bytes(),
    )
    .await
    .unwrap();
    let (status, _, _) = read_response(&mut s, &mut buf, false).await;
    assert_eq!(status, 204);
    // …and keeps serving chunks after that.
    s.write_all(format!("GET /v1/chunks/{} HTTP/1.1\r\nHost: x\r\n\r\n", seg.id).as_bytes()).await.unwrap();
    let (status, _, body) = read_response(&mut s, &mut buf, false).await;
    assert_eq!(status, 200);
    assert_eq!(ChunkId::of(&body), seg.id);
    // HTTP/1.0 without keep-alive: one answer, then the connection closes.
    let mut s = tokio::net::TcpStream::connect(e.addr("http")).await.unwrap();
    s.write_all(format!("GET /v1/chunks/{} HTTP/1.0\r\n\r\n", seg.id).as_bytes()).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut all)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&all);
    assert!(
        text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("connection: close"),
        "{}",
        &text[..200.min(text.len())]
    );
    assert_eq!(all.len() - (all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4), seg.size as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_move_to_a_listener_of_their_own() {
    let origin = Origin::start();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let scrape = format!("http://127.0.0.1:{port}");
    let cache = dir.path().join("cache");
    let args = [
        "edge",
        "--upstream",
        &origin.node().url("http"),
        "--listen",
        "http://127.0.0.1:0",
        "--cache-dir",
        s(&cache),
        "--metrics-listen",
        &scrape,
    ];
    let e = Node::start(&args, 2);
    let public = e.urls.iter().find(|u| **u != scrape).cloned().expect("a public listener");

    // The public listener serves the API but not the metrics; the scrape listener the reverse.
    let m = manifest(&public, "tides", &origin.key()).await;
    assert_eq!(m.track_id.as_str(), "tides");
    let r = conn(&public).await.get("/metrics").await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let text = get_text(&scrape, "/metrics").await;
    assert!(metric_sum(&text, "chorus_edge_requests_total", &["route=\"manifest\""]) >= 1.0, "{text}");
    let r = conn(&scrape).await.get("/v1/tracks/tides/manifest").await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    for base in [&public, &scrape] {
        assert_eq!(conn(base).await.get("/healthz").await.unwrap().status(), StatusCode::OK);
    }
    // Other spellings of /metrics (sent as they are, as `curl --path-as-is` does) are refused
    // before the public side's filter, on the plain path and on the sendfile fast path alike:
    // nothing of the metrics leaks, and the API's own paths are refused the same way.
    {
        use tokio::io::AsyncWriteExt as _;
        let public_addr = public.trim_start_matches("http://").to_owned();
        for path in
            ["//metrics", "///metrics", "/./metrics", "/v1/../metrics", "/%2Fmetrics", "/v1//tracks/tides/manifest"]
        {
            let mut s = tokio::net::TcpStream::connect(&public_addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
            let (status, _, body) = read_response(&mut s, &mut Vec::new(), false).await;
            assert_eq!(status, 400, "{path}");
            assert!(!String::from_utf8_lossy(&body).contains("chorus_"), "{path}");
        }
    }

    // Only plain HTTP: a scrape port is internal.
    let out = chorus(&["edge", "--upstream", "http://127.0.0.1:1", "--metrics-listen", "https://127.0.0.1:0"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--metrics-listen takes an http:// address"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_from_one_client_start_at_most_4_manifest_fetches_and_only_after_a_success() {
    let origin = Origin::start();
    // An upstream that holds every request for 30 s: warmings stay in flight.
    let (slow, slow_state) = proxy::start(&origin.node().url("http"), Mode::Delay(Duration::from_secs(30))).await;
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(&[slow], &cache, &origin.cert(), &["--prefetch-segments", "0"]);
    let base = e.url("http");
    let mut c = conn(&base).await;
    // A hint on a request that fails (a made-up chunk id: 400) is not acted on at all.
    let req = Request::get("/v1/chunks/not-a-chunk").header("chorus-next-track", "never").body(bytes::Bytes::new());
    assert_eq!(c.send(req.unwrap()).await.unwrap().status(), StatusCode::BAD_REQUEST);
    // 20 requests from one address, each hinting at a different next track: its budget is 4
    // at once (then one every 10 s); the other 16 are answered but their hints ignored.
    for n in 0..20 {
        let req = Request::get("/v1/tracks/hinter/peers")
            .header("chorus-next-track", format!("next{n}"))
            .body(bytes::Bytes::new())
            .unwrap();
        assert_eq!(c.send(req).await.unwrap().status(), StatusCode::OK);
    }
    // (Counted, not timed: the budget refills one hint per 10 s on a slow machine.)
    let t = get_text(&base, "/metrics").await;
    let ignored = metric(&t, "chorus_edge_refused_total{reason=\"hint_rate\"}") as usize;
    assert!(ignored >= 14, "{ignored} of 20 hints ignored");
    let acted = 20 - ignored;
    let seen = || slow_state.manifest_requests.load(std::sync::atomic::Ordering::SeqCst);
    eventually("the warmings within budget reach the upstream", async || seen() >= acted).await;
    assert_eq!(seen(), acted, "only the hints within budget started a fetch");
}

/// A request from a page on `origin`, with `headers`.
fn from_page(method: http::Method, path: &str, origin: &str, headers: &[(&str, &str)]) -> Request<bytes::Bytes> {
    let mut b = Request::builder().method(method).uri(path).header("origin", origin);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(bytes::Bytes::new()).unwrap()
}

/// What a browser checks before and after a cross-origin read: the preflight's answer, and the
/// headers of the answer itself.
async fn assert_readable_by(c: &mut Connection, page: &str, allow_origin: &str, chunk: &ChunkId) {
    let preflight = c
        .send(from_page(
            http::Method::OPTIONS,
            &format!("/v1/chunks/{chunk}"),
            page,
            &[("access-control-request-method", "GET"), ("access-control-request-headers", "range,authorization")],
        ))
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT, "{:?}", c.protocol());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], allow_origin);
    assert_eq!(h["access-control-allow-methods"], "GET, HEAD");
    assert_eq!(h["access-control-allow-headers"], "Range, Authorization, Chorus-Next-Track");
    let r = c
        .send(from_page(http::Method::GET, &format!("/v1/chunks/{chunk}"), page, &[("range", "bytes=0-99")]))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body().len(), 100);
    assert_eq!(r.headers()["access-control-allow-origin"], allow_origin, "{:?}", c.protocol());
    assert_eq!(r.headers()["access-control-expose-headers"], "Content-Range, ETag, Accept-Ranges, Alt-Svc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_on_other_origins_may_read_the_api_over_every_protocol() {
    use tokio::io::AsyncWriteExt as _;
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(&[origin.node().url("http")], &cache, &origin.cert(), &["--prefetch-segments", "0"]);
    let m = manifest(&e.url("http"), "tides", &origin.key()).await;
    let seg = m.renditions[1].segments[0];
    let page = "https://player.example";
    let trust = ClientTls { ca_files: vec![cache.join("tls").join("cert.pem")], insecure: false };
    let client = HttpClient::new(&trust).unwrap();
    for scheme in ["http", "https", "h3"] {
        let mut c = client.connect(&e.base(scheme), false).await.unwrap();
        assert_readable_by(&mut c, page, "*", &seg.id).await;
        // Not the read API: no CORS headers, and OPTIONS is not answered for it.
        let r = c.send(from_page(http::Method::GET, "/metrics", page, &[])).await.unwrap();
        assert!(r.headers().get("access-control-allow-origin").is_none());
    }
    // The plaintext HTTP/1.1 fast path, a disk hit sent with sendfile, says the same.
    let mut s = tokio::net::TcpStream::connect(e.addr("http")).await.unwrap();
    let mut buf = Vec::new();
    let before = metric(
        &get_text(&e.url("http"), "/metrics").await,
        "chorus_edge_cache_requests_total{result=\"hit\",tier=\"disk\"}",
    );
    s.write_all(format!("GET /v1/chunks/{} HTTP/1.1\r\nHost: x\r\nOrigin: {page}\r\n\r\n", seg.id).as_bytes())
        .await
        .unwrap();
    let (status, head, body) = read_response(&mut s, &mut buf, false).await;
    assert_eq!(status, 200);
    assert_eq!(ChunkId::of(&body), seg.id);
    assert!(head.contains("access-control-allow-origin: *\r\n"), "{head}");
    let after = metric(
        &get_text(&e.url("http"), "/metrics").await,
        "chorus_edge_cache_requests_total{result=\"hit\",tier=\"disk\"}",
    );
    assert_eq!(after, before + 1.0, "not the sendfile path");
    // The origin's read API too.
    let r = conn(&origin.node().url("http"))
        .await
        .send(from_page(http::Method::GET, "/v1/tracks/tides/manifest", page, &[]))
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_listed_origins_may_read_and_tokens_are_still_checked() {
    let origin = Origin::start();
    let keys_dir = origin.dir.path().join("keys");
    assert!(chorus(&["keys", "generate", "--out", s(&keys_dir)]).status.success());
    let token =
        String::from_utf8(chorus(&["token", "issue", "--key", s(&keys_dir.join("token.key")), "--ttl", "1h"]).stdout)
            .unwrap()
            .trim()
            .to_owned();
    let cache = origin.dir.path().join("edge-cache");
    let page = "https://player.example";
    let e = edge(
        &[origin.node().url("http")],
        &cache,
        &origin.cert(),
        &[
            "--cors-origin",
            "https://other.example,https://PLAYER.example:443",
            "--token-key",
            s(&keys_dir.join("token.pub")),
        ],
    );
    let trust = ClientTls { ca_files: vec![cache.join("tls").join("cert.pem")], insecure: false };
    let mut c = HttpClient::new(&trust).unwrap().connect(&e.base("h3"), false).await.unwrap();
    let bearer = format!("Bearer {token}");
    let manifest = "/v1/tracks/tides/manifest";
    let r = c.send(from_page(http::Method::GET, manifest, page, &[("authorization", &bearer)])).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let m = Manifest::verify(r.body(), &origin.key()).unwrap();
    assert_eq!(r.headers()["access-control-allow-origin"], page, "the allowed origin, echoed");
    assert_eq!(r.headers()["vary"], "Origin");
    // The preflight needs no token; the request it clears does, and its 401 is readable.
    let seg = m.renditions[1].segments[0];
    let preflight = c
        .send(from_page(
            http::Method::OPTIONS,
            &format!("/v1/chunks/{}", seg.id),
            page,
            &[("access-control-request-method", "GET")],
        ))
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(preflight.headers()["access-control-allow-origin"], page);
    let r = c.send(from_page(http::Method::GET, &format!("/v1/chunks/{}", seg.id), page, &[])).await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["access-control-allow-origin"], page);
    // Another page: refused at the preflight, and nothing that lets a browser read the answer.
    let evil = "https://evil.example";
    let preflight = c
        .send(from_page(http::Method::OPTIONS, manifest, evil, &[("access-control-request-method", "GET")]))
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::FORBIDDEN);
    assert!(preflight.headers().get("access-control-allow-origin").is_none());
    let r = c.send(from_page(http::Method::GET, manifest, evil, &[("authorization", &bearer)])).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "CORS is the browser's check; the edge still serves");
    assert!(r.headers().get("access-control-allow-origin").is_none());
    assert_eq!(r.headers()["vary"], "Origin");
}

#[test]
fn a_bad_cors_origin_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("c");
    let run = |value: &str| {
        chorus(&[
            "edge",
            "--upstream",
            "http://127.0.0.1:9",
            "--listen",
            "http://127.0.0.1:0",
            "--cache-dir",
            s(&cache),
            "--cors-origin",
            value,
        ])
    };
    let out = run("player.example/app");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an origin"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = run("*,https://a.example");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be combined"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Made-up ids cost upstreams one request each at most: an origin's 404 is final (the second
/// upstream is not asked), and the same id again within 10 s is answered from the edge's memory
/// of that 404. The same holds for unknown tracks' manifests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_404_is_final_and_remembered_so_made_up_ids_cost_upstreams_once() {
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    // Two upstreams (the origin's HTTP and HTTPS listeners): a 404 from the first ends it.
    let ups = [origin.node().url("http"), origin.node().url("https")];
    let e = edge(&ups, &cache, &origin.cert(), &["--prefetch-segments", "0"]);
    let base = e.url("http");
    let mut c = conn(&base).await;
    let not_found = async || {
        let text = get_text(&origin.node().url("http"), "/metrics").await;
        metric_sum(&text, "chorus_origin_requests_total", &["status=\"404\""])
    };
    let before = not_found().await;
    let ids: Vec<ChunkId> = (0..30u32).map(|n| ChunkId::of(&n.to_le_bytes())).collect();
    for round in 0..2 {
        for id in &ids {
            assert_eq!(get_chunk(&mut c, id).await, StatusCode::NOT_FOUND, "round {round}");
        }
        for _ in 0..3 {
            assert_eq!(c.get("/v1/tracks/no-such-track/manifest").await.unwrap().status(), StatusCode::NOT_FOUND);
        }
    }
    // Every one of the 66 requests cost the upstreams exactly one request (its 404 final: the
    // second upstream never asked), or none (answered from the edge's memory of a 404). (On a
    // machine slow enough for 10 s to pass between the rounds, more of them go upstream.)
    let upstream = not_found().await - before;
    let t = get_text(&base, "/metrics").await;
    let remembered = metric(&t, "chorus_edge_negative_hits_total{kind=\"chunk\"}")
        + metric(&t, "chorus_edge_negative_hits_total{kind=\"manifest\"}");
    assert_eq!(upstream + remembered, 66.0, "{upstream} upstream 404s, {remembered} remembered");
    assert!(upstream >= 31.0 && remembered >= 1.0, "{upstream} upstream 404s, {remembered} remembered");
}

/// `Cache-Control: only-if-cached` (RFC 9111) asks the edge's cache alone: 504 for a chunk it
/// does not hold, with the origin not asked; the chunk's bytes once it holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_if_cached_asks_the_cache_alone() {
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(&[origin.node().url("http")], &cache, &origin.cert(), &["--prefetch-segments", "0"]);
    let mut c = conn(&e.url("http")).await;
    let m = manifest(&origin.node().url("http"), "tides", &origin.key()).await;
    let id = m.renditions[0].segments[0].id;
    let only_if_cached = || {
        Request::get(format!("/v1/chunks/{id}"))
            .header(http::header::CACHE_CONTROL, "max-age=0, only-if-cached")
            .body(bytes::Bytes::new())
            .unwrap()
    };
    let before = origin.chunk_fetches().await;
    let r = c.send(only_if_cached()).await.unwrap();
    assert_eq!(r.status(), StatusCode::GATEWAY_TIMEOUT, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(origin.chunk_fetches().await, before, "only-if-cached made the edge fetch");
    assert_eq!(get_chunk(&mut c, &id).await, StatusCode::OK);
    let r = c.send(only_if_cached()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(ChunkId::of(r.body()), id);
    assert_eq!(origin.chunk_fetches().await, before + 1.0, "one fetch, for the plain request");
}

/// `POST /v1/peers/announce` of the peer of `key` at `addr`, holding `tracks`, signed for `edge`.
fn announce_tracks(key: &Keypair, addr: &str, tracks: &[&str], edge: &str) -> Request<bytes::Bytes> {
    let a = chorus_core::api::Announce {
        peer_id: key.public().to_peer_id().to_base58(),
        addrs: vec![addr.to_owned()],
        tracks: tracks.iter().map(|t| chorus_core::TrackId::parse(t).unwrap()).collect(),
        held: Vec::new(),
        dropped: Vec::new(),
        timestamp: now(),
        edge: edge.to_owned(),
    };
    let body = serde_json::to_vec(&SignedAnnounce::sign(key, &a).unwrap()).unwrap();
    Request::post("/v1/peers/announce").body(bytes::Bytes::from(body)).unwrap()
}

/// Strangers cannot fill the tracker with tracks that do not exist (each announced track is
/// vouched for by a manifest, the origin's 404 remembered), and cannot make every peer query
/// cost a lookup (a budget per source, and one answer a second per track).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_tracks_are_never_listed_and_peer_queries_are_budgeted_and_cached() {
    let origin = Origin::start();
    let cache = origin.dir.path().join("edge-cache");
    let e = edge(&[origin.node().url("http")], &cache, &origin.cert(), &[]);
    let base = e.url("http");
    let name = chorus_core::announce::edge_name(&base.parse().unwrap());
    let mut c = conn(&base).await;
    let fake: Vec<String> = (0..8).map(|n| format!("fake-{n}")).collect();
    let fake: Vec<&str> = fake.iter().map(String::as_str).collect();
    // Only made-up tracks: refused, nothing recorded.
    let r = c.send(announce_tracks(&Keypair::generate_ed25519(), "/ip4/127.0.0.1/tcp/4100", &fake, &name)).await;
    assert_eq!(r.unwrap().status(), StatusCode::NOT_FOUND);
    // A real track among made-up ones: the real one is listed, the others are not.
    let mut mixed = vec!["tides"];
    mixed.extend_from_slice(&fake);
    let key = Keypair::generate_ed25519();
    let r = c.send(announce_tracks(&key, "/ip4/127.0.0.1/tcp/4101", &mixed, &name)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let listed = |v: &serde_json::Value| v["peers"].as_array().unwrap().len();
    let peers = async |c: &mut Connection, t: &str| {
        let r = c.get(&format!("/v1/tracks/{t}/peers")).await.unwrap();
        (r.status(), serde_json::from_slice::<serde_json::Value>(r.body()).unwrap_or_default())
    };
    assert_eq!(listed(&peers(&mut c, "tides").await.1), 1);
    for f in &fake[..3] {
        assert_eq!(listed(&peers(&mut c, f).await.1), 0, "{f}");
    }
    // The origin was asked for each made-up track once at most (4 per announce, then its 404
    // remembered): 8 made-up tracks in two announces, under a dozen manifest 404s upstream.
    let text = get_text(&origin.node().url("http"), "/metrics").await;
    let upstream_404 = metric_sum(&text, "chorus_origin_requests_total", &["route=\"manifest\"", "status=\"404\""]);
    assert!(upstream_404 <= 8.0, "{upstream_404} manifest 404s upstream");
    let t = get_text(&base, "/metrics").await;
    assert!(metric(&t, "chorus_edge_refused_total{reason=\"unknown_track\"}") >= 8.0);
    // Queries: 4 were made above; a burst of 20 a source, then 2 a second: asked as fast as it
    // answers, 429 comes (counted, not timed: a slow machine refills a few more).
    let mut statuses = Vec::new();
    while statuses.last() != Some(&StatusCode::TOO_MANY_REQUESTS) && statuses.len() < 1000 {
        statuses.push(peers(&mut c, "tides").await.0);
    }
    let ok = statuses.iter().filter(|s| **s == StatusCode::OK).count();
    assert!(ok >= 16, "{statuses:?}");
    assert_eq!(statuses.last(), Some(&StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");
    let t = get_text(&base, "/metrics").await;
    assert_eq!(metric(&t, "chorus_edge_refused_total{reason=\"peers_rate\"}"), 1.0);
    assert!(metric(&t, "chorus_tracker_answers_total{view=\"cached\"}") >= 1.0);
}

#[test]
fn a_bad_base_url_is_refused_at_start_with_what_is_wrong() {
    for (args, what) in [
        (&["edge", "--upstream", "http://127.0.0.1"][..], "missing port"),
        (&["edge", "--upstream", "http://127.0.0.1:9/v1"][..], "a base URL has no path"),
        (&["edge", "--upstream", "http://127.0.0.1:9", "--parent", "ftp://p:1"][..], "unknown scheme"),
        (&["peer", "--edge", "127.0.0.1:9"][..], "missing scheme"),
        (&["fetch", "t", "--edge", "https://e", "--origin-key", "k.pub"][..], "missing port"),
        (&["ingest", "--track", "t", "--origin", "https://o:0", "x.wav"][..], "bad port"),
    ] {
        let out = chorus(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(what), "{args:?}: {err}");
    }
    let out = chorus(&["get", "h3://127.0.0.1/healthz"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing port"));
}
