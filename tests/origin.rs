//! End to end: `chorus ingest` in every mode, then a real `chorus origin` process on port 0
//! serving every chunk over HTTP/1.1, HTTP/2 over TLS and HTTP/3, and refusing bad input.

#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use chorus_testkit as support;

use std::time::Duration;

use chorus_core::keys::{self, VerifyingKey};
use chorus_core::manifest::{Container, Manifest};
use chorus_core::{ChunkId, token};
use chorus_http::Protocol;
use chorus_http::client::{Connection, HttpClient};
use chorus_http::tls::ClientTls;
use http::{Request, StatusCode};
use support::{Node, chorus, chorus_with_path, have_ffmpeg, origin_args, s, samples, snapshot, write_wav};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn fetch_manifest(conn: &mut Connection, track: &str, key: &VerifyingKey) -> Manifest {
    let protocol = conn.protocol();
    let resp = conn
        .get(&format!("/v1/tracks/{track}/manifest"))
        .await
        .unwrap_or_else(|e| panic!("{track} manifest over {}: {e}", protocol.as_str()));
    assert_eq!(resp.status(), StatusCode::OK, "{track}: {:?}", resp.body());
    assert!(resp.headers().contains_key("etag"));
    Manifest::verify(resp.body(), key).unwrap()
}

/// Fetches every chunk of `m` over `conn`, checks each against its id, and returns the bytes
/// of each rendition in order.
async fn fetch_all(conn: &mut Connection, m: &Manifest) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for r in &m.renditions {
        let mut bytes = Vec::new();
        for c in r.chunks() {
            let resp = conn.get(&format!("/v1/chunks/{}", c.id)).await.unwrap();
            assert_eq!(resp.status(), StatusCode::OK);
            assert_eq!(resp.body().len() as u64, c.size);
            assert_eq!(ChunkId::of(resp.body()), c.id, "chunk bytes do not hash to their id");
            assert_eq!(resp.headers()["etag"], format!("\"{}\"", c.id).as_str());
            assert_eq!(resp.headers()["cache-control"], "public, max-age=31536000, immutable");
            bytes.extend_from_slice(resp.body());
        }
        out.push(bytes);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ingest_mode_then_every_chunk_over_every_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // A name ffmpeg would read as a protocol ("tone:") unless given as a file: URL.
    let wav = dir.path().join("tone: one.wav");
    write_wav(&wav, 4);

    // (b) an HLS/CMAF package, imported as it is; idempotent.
    let sunrise = samples().join("chorus-sunrise");
    let first = ok(&chorus(&["ingest", "--store", s(&store), "--track", "sunrise", "--title", "Sunrise", s(&sunrise)]));
    assert!(first.starts_with("published sunrise: 2 renditions (aac-24, aac-96)"), "{first}");
    let again = ok(&chorus(&["ingest", "--store", s(&store), "--track", "sunrise", "--title", "Sunrise", s(&sunrise)]));
    assert!(again.starts_with("unchanged sunrise") && again.contains("(0 new)"), "{again}");
    // Without --title, a package's title.txt names the track.
    ok(&chorus(&["ingest", "--store", s(&store), "--track", "sunrise-untitled", s(&sunrise)]));
    let doc = std::fs::read(store.join("manifests").join("sunrise-untitled.json")).unwrap();
    assert_eq!(serde_json::from_slice::<Manifest>(&doc).unwrap().title, "Sunrise");

    // (c) a single pre-encoded file as raw byte chunks.
    ok(&chorus(&["ingest", "--store", s(&store), "--track", "tone-raw", "--mode", "raw", s(&wav)]));

    // (a) a source file encoded by ffmpeg into a ladder.
    let ffmpeg = have_ffmpeg();
    let mut tracks = vec!["sunrise", "tone-raw"];
    if ffmpeg {
        let out = ok(&chorus(&["ingest", "--store", s(&store), "--track", "tone-enc", "--ladder", "24,96", s(&wav)]));
        assert!(out.starts_with("published tone-enc: 2 renditions (aac-24, aac-96)"), "{out}");
        let again = ok(&chorus(&["ingest", "--store", s(&store), "--track", "tone-enc", "--ladder", "24,96", s(&wav)]));
        assert!(again.starts_with("unchanged tone-enc"), "re-encoding must be idempotent: {again}");
        tracks.push("tone-enc");
    }

    let node = Node::start(&origin_args(s(&store), &[]), 3);
    let key = keys::read_verifying_key(&store.join("origin.pub")).unwrap();
    let trust = ClientTls { ca_files: vec![store.join("tls").join("cert.pem")], insecure: false };
    let client = HttpClient::new(&trust).unwrap();
    // HTTP/3 shares the HTTPS port number, as Alt-Svc announces.
    assert_eq!(node.addr("https"), node.addr("h3"));

    let mut per_protocol = Vec::new();
    for (scheme, expect) in [("http", Protocol::Http1), ("https", Protocol::Http2), ("h3", Protocol::Http3)] {
        let mut conn = client.connect(&node.base(scheme), false).await.unwrap();
        assert_eq!(conn.protocol(), expect, "{scheme}");
        // HEAD: headers and length, no body, on every protocol.
        let first = fetch_manifest(&mut conn, "sunrise", &key).await.renditions[0].segments[0];
        let head = conn
            .send(Request::head(format!("/v1/chunks/{}", first.id)).body(bytes::Bytes::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(head.status(), StatusCode::OK, "{scheme}");
        assert_eq!(head.headers()["content-length"], first.size.to_string().as_str(), "{scheme}");
        assert!(head.body().is_empty(), "{scheme}: HEAD sent a body");
        let mut fetched = Vec::new();
        for track in &tracks {
            let m = fetch_manifest(&mut conn, track, &key).await;
            fetched.push((m.clone(), fetch_all(&mut conn, &m).await));
        }
        if scheme != "h3" {
            let resp = conn.get("/healthz").await.unwrap();
            let alt = resp.headers()["alt-svc"].to_str().unwrap().to_owned();
            assert_eq!(alt, format!("h3=\":{}\"; ma=86400", node.addr("h3").rsplit(':').next().unwrap()));
        }
        per_protocol.push(fetched);
    }
    // Same bytes whatever the protocol.
    assert_eq!(
        per_protocol[0].iter().map(|(_, b)| b).collect::<Vec<_>>(),
        per_protocol[2].iter().map(|(_, b)| b).collect::<Vec<_>>()
    );
    assert_eq!(
        per_protocol[1].iter().map(|(_, b)| b).collect::<Vec<_>>(),
        per_protocol[2].iter().map(|(_, b)| b).collect::<Vec<_>>()
    );

    let by_track = |t: &str| per_protocol[0].iter().find(|(m, _)| m.track_id.as_str() == t).unwrap().clone();

    // The raw rendition's chunks, concatenated, are the file.
    let (raw_m, raw_bytes) = by_track("tone-raw");
    assert_eq!(raw_m.renditions[0].container, Container::Raw);
    assert_eq!(raw_m.renditions[0].codec, "wav");
    assert_eq!(raw_bytes[0], std::fs::read(&wav).unwrap());

    // HLS playlists list exactly the manifest's chunks, in order.
    let mut conn = client.connect(&node.base("http"), false).await.unwrap();
    for track in tracks.iter().filter(|t| **t != "tone-raw") {
        let (m, _) = by_track(track);
        let master = conn.get(&format!("/v1/tracks/{track}/hls/master.m3u8")).await.unwrap();
        assert_eq!(master.status(), StatusCode::OK);
        let master = String::from_utf8(master.body().to_vec()).unwrap();
        let variants: Vec<&str> = master.lines().filter(|l| !l.starts_with('#')).collect();
        let expected: Vec<String> = m.renditions.iter().map(|r| format!("{}.m3u8", r.id)).collect();
        assert_eq!(variants, expected);
        for r in &m.renditions {
            let media = conn.get(&format!("/v1/tracks/{track}/hls/{}.m3u8", r.id)).await.unwrap();
            let media = String::from_utf8(media.body().to_vec()).unwrap();
            let mut listed: Vec<String> = Vec::new();
            for line in media.lines() {
                if let Some(uri) = line.strip_prefix("#EXT-X-MAP:URI=\"") {
                    listed.push(uri.trim_end_matches('"').to_owned());
                } else if !line.starts_with('#') && !line.is_empty() {
                    listed.push(line.to_owned());
                }
            }
            let mut want = vec![format!("/v1/chunks/{}.mp4", r.init.unwrap().id)];
            want.extend(r.segments.iter().map(|s| format!("/v1/chunks/{}.m4s", s.id)));
            assert_eq!(listed, want, "{track}/{}", r.id);
            // The suffixed URLs serve the same bytes.
            let seg = conn.get(&want[1]).await.unwrap();
            assert_eq!(ChunkId::of(seg.body()), r.segments[0].id);
            assert!(media.trim_end().ends_with("#EXT-X-ENDLIST"));
        }
    }
    let raw_hls = conn.get("/v1/tracks/tone-raw/hls/master.m3u8").await.unwrap();
    assert_eq!(raw_hls.status(), StatusCode::NOT_FOUND);

    // ffprobe decodes a rendition's init + segments, and an HLS player plays the playlist.
    if ffmpeg {
        for track in ["sunrise", "tone-enc"] {
            let (m, bytes) = by_track(track);
            for (r, b) in m.renditions.iter().zip(&bytes) {
                let f = dir.path().join(format!("{track}-{}.mp4", r.id));
                std::fs::write(&f, b).unwrap();
                let out = std::process::Command::new("ffprobe")
                    .args(["-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"])
                    .arg(&f)
                    .output()
                    .unwrap();
                let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(-1.0);
                let want = r.duration_ms() as f64 / 1000.0;
                assert!((secs - want).abs() < 0.1, "{track}/{}: ffprobe says {secs}s, manifest {want}s", r.id);
            }
        }
        let url = format!("{}/v1/tracks/sunrise/hls/master.m3u8", node.url("http"));
        let out =
            std::process::Command::new("ffmpeg").args(["-v", "error", "-i", &url, "-f", "null", "-"]).output().unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "ffmpeg could not play the HLS: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&chorus(&["ingest", "--store", s(&store), "--track", "sunrise", s(&samples().join("chorus-sunrise"))]));
    let node = Node::start(
        &[
            "origin",
            "--store",
            s(&store),
            "--listen",
            "http://127.0.0.1:0",
            "--admin-token",
            "adm1n-for-tests-0123456789abcdef",
            "--max-upload-size",
            "64KiB",
            "--header-read-timeout",
            "1s",
        ],
        1,
    );
    let before = snapshot(&store);
    let client = HttpClient::new(&ClientTls::default()).unwrap();
    let mut conn = client.connect(&node.base("http"), false).await.unwrap();
    let key = keys::read_verifying_key(&store.join("origin.pub")).unwrap();
    let m = fetch_manifest(&mut conn, "sunrise", &key).await;
    let chunk = m.renditions[0].segments[0];
    let upper = chunk.id.to_hex().to_uppercase();

    let get = |path: &str| Request::get(path).body(bytes::Bytes::new()).unwrap();
    let put = |path: &str, token: Option<&str>, body: &[u8]| {
        let mut b = Request::put(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(bytes::Bytes::copy_from_slice(body)).unwrap()
    };
    let text = b"this is not audio, just some text\n".repeat(4);
    let cases: Vec<(Request<bytes::Bytes>, StatusCode)> = vec![
        (get("/v1/chunks/xyz"), StatusCode::BAD_REQUEST),
        (get(&format!("/v1/chunks/{upper}")), StatusCode::BAD_REQUEST),
        (get(&format!("/v1/chunks/{}.exe", chunk.id)), StatusCode::BAD_REQUEST),
        (get("/v1/chunks/..%2F..%2Forigin.key"), StatusCode::BAD_REQUEST),
        // Dot segments are refused by the front before any route (one spelling per path).
        (get("/v1/chunks/../../origin.key"), StatusCode::BAD_REQUEST),
        (get("/v1/tracks/..%2Fmanifests%2Fsunrise/manifest"), StatusCode::BAD_REQUEST),
        (get("/v1/tracks/sun%00rise/manifest"), StatusCode::BAD_REQUEST),
        (get(&format!("/v1/tracks/{}/manifest", "x".repeat(65))), StatusCode::BAD_REQUEST),
        (get("/v1/tracks/nope/manifest"), StatusCode::NOT_FOUND),
        (get("/v1/tracks/nope/hls/master.m3u8"), StatusCode::NOT_FOUND),
        (get("/v1/tracks/sunrise/hls/aac-999.m3u8"), StatusCode::NOT_FOUND),
        (get(&format!("/v1/chunks/{}", ChunkId::of(b"never stored"))), StatusCode::NOT_FOUND),
        (get("/v2/anything"), StatusCode::NOT_FOUND),
        (Request::delete("/metrics").body(bytes::Bytes::new()).unwrap(), StatusCode::METHOD_NOT_ALLOWED),
        (
            Request::get("/healthz").header("x-big", "a".repeat(20 * 1024)).body(bytes::Bytes::new()).unwrap(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        ),
        (
            Request::post(format!("/v1/chunks/{}", chunk.id)).body(bytes::Bytes::new()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
        ),
        (
            Request::get(format!("/v1/chunks/{}", chunk.id))
                .header("range", format!("bytes={}-", chunk.size))
                .body(bytes::Bytes::new())
                .unwrap(),
            StatusCode::RANGE_NOT_SATISFIABLE,
        ),
        (get(&format!("/v1/chunks/{}?{}", chunk.id, "q=".repeat(3000))), StatusCode::URI_TOO_LONG),
        (put("/admin/tracks/new1", None, &text), StatusCode::UNAUTHORIZED),
        (put("/admin/tracks/new1", Some("wrong"), &text), StatusCode::UNAUTHORIZED),
        (put("/admin/tracks/..%2Fx", Some("adm1n-for-tests-0123456789abcdef"), &text), StatusCode::BAD_REQUEST),
        (
            put("/admin/tracks/new1?mode=raw", Some("adm1n-for-tests-0123456789abcdef"), &text),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            put("/admin/tracks/new1?mode=bogus", Some("adm1n-for-tests-0123456789abcdef"), &text),
            StatusCode::BAD_REQUEST,
        ),
        (put("/admin/tracks/new1", Some("adm1n-for-tests-0123456789abcdef"), b""), StatusCode::BAD_REQUEST),
        (
            put("/admin/tracks/new1?mode=raw", Some("adm1n-for-tests-0123456789abcdef"), &vec![0xFFu8; 100 * 1024]),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (req, want) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        // A new connection each time: after refusing an upload early, a server may close.
        let mut conn = client.connect(&node.base("http"), false).await.unwrap();
        let resp = conn.send(req).await.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(resp.status(), want, "{what}: {}", String::from_utf8_lossy(resp.body()));
        if want != StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE {
            let v: serde_json::Value =
                serde_json::from_slice(resp.body()).unwrap_or_else(|_| panic!("{what}: error body is not JSON"));
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{what}: {v}");
        }
    }
    // A non-audio upload for ffmpeg to encode is refused the same way.
    let mut conn = client.connect(&node.base("http"), false).await.unwrap();
    if have_ffmpeg() {
        let resp = conn.send(put("/admin/tracks/new2", Some("adm1n-for-tests-0123456789abcdef"), &text)).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNPROCESSABLE_ENTITY, "{}", String::from_utf8_lossy(resp.body()));
    }
    // A range inside the chunk works.
    let r = conn
        .send(
            Request::get(format!("/v1/chunks/{}", chunk.id))
                .header("range", "bytes=4-11")
                .body(bytes::Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.headers()["content-range"], format!("bytes 4-11/{}", chunk.size).as_str());
    assert_eq!(r.body().len(), 8);

    // Nothing was written: no manifest, no chunk, no stray upload.
    assert_eq!(snapshot(&store), before, "bad input changed the store");

    // A client that sends half a request head is cut off by the header timeout.
    let mut slow = tokio::net::TcpStream::connect(node.addr("http")).await.unwrap();
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut buf = Vec::new();
    // Cut (at the configured 1 s; `src/serve_args.rs` tests that the flag reaches the front),
    // within a generous 20 s.
    let read = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a slow client kept its connection open");
    assert!(!String::from_utf8_lossy(&buf).contains("200 OK"));

    // The node is still fine, and counted what it refused. (The idle keep-alive connection was
    // closed by the same 1 s header timeout: connect again.)
    let mut conn = client.connect(&node.base("http"), false).await.unwrap();
    let metrics = conn.get("/metrics").await.unwrap();
    let text = String::from_utf8_lossy(metrics.body());
    assert!(
        text.contains("chorus_origin_requests_total{protocol=\"http/1.1\",route=\"chunk\",status=\"400\"} 3")
            && text.contains("chorus_http_refused_total{reason=\"path\"} 5"),
        "{text}"
    );
    assert!(text.contains("chorus_origin_tracks 1"));
}

#[test]
fn without_ffmpeg_encoding_says_to_install_it_and_other_modes_work() {
    let dir = tempfile::tempdir().unwrap();
    let empty_path = dir.path().join("empty-bin");
    std::fs::create_dir(&empty_path).unwrap();
    let store = dir.path().join("store");
    let wav = dir.path().join("tone.wav");
    write_wav(&wav, 2);

    let out = chorus_with_path(&["ingest", "--store", s(&store), "--track", "t1", s(&wav)], &empty_path);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ffmpeg is not installed") && err.contains("install it") && err.contains("--mode raw"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one-line error expected: {err}");
    assert!(!store.join("manifests").join("t1.json").exists());

    ok(&chorus_with_path(&["ingest", "--store", s(&store), "--track", "t1", "--mode", "raw", s(&wav)], &empty_path));
    ok(&chorus_with_path(
        &["ingest", "--store", s(&store), "--track", "t2", s(&samples().join("chorus-tides"))],
        &empty_path,
    ));
    let m: Manifest = serde_json::from_slice(&std::fs::read(store.join("manifests").join("t1.json")).unwrap()).unwrap();
    assert_eq!(m.renditions[0].segments.iter().map(|s| s.size).sum::<u64>(), std::fs::metadata(&wav).unwrap().len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_through_the_admin_api_and_the_cli() {
    if !have_ffmpeg() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let wav = dir.path().join("tone.wav");
    write_wav(&wav, 3);
    // The token from a file, as a systemd credential or a mounted Secret gives it: one line.
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "adm1n-for-tests-0123456789abcdef\n").unwrap();
    let node = Node::start(
        &["origin", "--store", s(&store), "--listen", "http://127.0.0.1:0", "--admin-token-file", s(&token_file)],
        1,
    );
    let client = HttpClient::new(&ClientTls::default()).unwrap().with_timeout(Duration::from_secs(300));
    let mut conn = client.connect(&node.base("http"), false).await.unwrap();
    let upload = |q: &str| {
        Request::put(format!("/admin/tracks/up1?{q}"))
            .header("authorization", "Bearer adm1n-for-tests-0123456789abcdef")
            .body(bytes::Bytes::from(std::fs::read(&wav).unwrap()))
            .unwrap()
    };
    let resp = conn.send(upload("ladder=24,96&title=Up%20One")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", String::from_utf8_lossy(resp.body()));
    let report: serde_json::Value = serde_json::from_slice(resp.body()).unwrap();
    assert_eq!(report["renditions"], serde_json::json!(["aac-24", "aac-96"]));
    let resp = conn.send(upload("ladder=24,96&title=Up%20One")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(resp.body()).unwrap()["unchanged"], true);

    let key = keys::read_verifying_key(&store.join("origin.pub")).unwrap();
    let m = fetch_manifest(&mut conn, "up1", &key).await;
    assert_eq!(m.title, "Up One");
    fetch_all(&mut conn, &m).await;

    // The CLI uploads the same way (the token from the file here too).
    let out = chorus(&[
        "ingest",
        "--origin",
        &node.url("http"),
        "--admin-token-file",
        s(&token_file),
        "--track",
        "up2",
        "--mode",
        "raw",
        s(&wav),
    ]);
    let body = ok(&out);
    assert!(body.contains("\"track_id\":\"up2\""), "{body}");
    let out = chorus(&["ingest", "--origin", &node.url("http"), "--admin-token", "wrong", "--track", "up3", s(&wav)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("401"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_env_and_flags_layer_and_shutdown_is_graceful() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cfg = dir.path().join("chorus.toml");
    std::fs::write(
        &cfg,
        format!("store = {:?}\nlisten = [\"http://127.0.0.1:0\"]\nadmin_token = \"from-file-0123456789abcdef0123456789\"\n\n[origin]\nmax_connections = 50\n", s(&store)),
    )
    .unwrap();
    // The environment beats the file.
    let node = Node::start_env(
        &["origin", "--config", s(&cfg)],
        &[("CHORUS_ADMIN_TOKEN", "from-env-0123456789abcdef0123456789")],
        1,
    );
    let client = HttpClient::new(&ClientTls::default()).unwrap();
    let mut conn = client.connect(&node.base("http"), false).await.unwrap();
    let put = |t: &str| {
        Request::put("/admin/tracks/x?mode=raw")
            .header("authorization", format!("Bearer {t}"))
            .body(bytes::Bytes::from_static(b"fLaC"))
            .unwrap()
    };
    assert_eq!(
        conn.send(put("from-file-0123456789abcdef0123456789")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_ne!(conn.send(put("from-env-0123456789abcdef0123456789")).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(conn.get("/readyz").await.unwrap().status(), StatusCode::OK);
    drop(conn);
    let status = node.terminate();
    assert!(status.success(), "SIGTERM should stop the origin cleanly: {status}");

    // Unknown keys and bad flags are usage errors (exit 2) with a message.
    std::fs::write(&cfg, "stor = \"x\"\n").unwrap();
    let out = chorus(&["origin", "--config", s(&cfg)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown key \"stor\""));
    assert_eq!(chorus(&["origin"]).status.code(), Some(2));
    // Booleans in the file work as switches.
    let keys_dir = dir.path().join("keys");
    ok(&chorus(&["keys", "generate", "--out", s(&keys_dir)]));
    std::fs::write(&cfg, "force = true\n").unwrap();
    ok(&chorus(&["keys", "generate", "--out", s(&keys_dir), "--config", s(&cfg)]));
    assert_eq!(chorus(&["origin", "--store", "x", "--listen", "ftp://x:1"]).status.code(), Some(2));
    assert!(ok(&chorus(&["ingest", "--help"])).contains("--ladder"));

    // A port in use is a runtime failure (exit 1) with a one-line message.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let out = chorus(&["origin", "--store", s(&store), "--listen", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot listen on"));
}

#[test]
fn keys_and_tokens_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let keys_dir = dir.path().join("keys");
    ok(&chorus(&["keys", "generate", "--out", s(&keys_dir)]));
    for f in ["origin.key", "origin.pub", "token.key", "token.pub"] {
        assert!(keys_dir.join(f).is_file(), "{f}");
    }
    // Refuses to overwrite without --force.
    assert_eq!(chorus(&["keys", "generate", "--out", s(&keys_dir)]).status.code(), Some(1));

    let tok = ok(&chorus(&[
        "token",
        "issue",
        "--key",
        s(&keys_dir.join("token.key")),
        "--sub",
        "u1",
        "--track",
        "sunrise",
        "--ttl",
        "1h",
    ]));
    let verifier =
        token::TokenVerifier::new(&keys::read_verifying_key(&keys_dir.join("token.pub")).unwrap(), Duration::ZERO)
            .unwrap();
    let claims = verifier.verify(tok.trim(), std::time::SystemTime::now()).unwrap();
    assert_eq!(claims.sub.as_deref(), Some("u1"));
    assert!(claims.allows(&chorus_core::TrackId::parse("sunrise").unwrap()));
    assert!(!claims.allows(&chorus_core::TrackId::parse("other").unwrap()));
    let later = std::time::SystemTime::now() + Duration::from_secs(3601);
    assert!(matches!(verifier.verify(tok.trim(), later), Err(token::TokenError::Expired(_))));

    // A key made by openssl works as a signing key, when openssl is around.
    let ossl = dir.path().join("ossl.key");
    if std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&ossl)
        .status()
        .is_ok_and(|s| s.success())
    {
        ok(&chorus(&["token", "issue", "--key", s(&ossl), "--ttl", "1m"]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_chunk_on_disk_is_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let pkg = samples().join("chorus-lantern");
    ok(&chorus(&["ingest", "--store", s(&store), "--track", "lantern", s(&pkg)]));
    let node = Node::start(&["origin", "--store", s(&store), "--listen", "http://127.0.0.1:0"], 1);
    let client = HttpClient::new(&ClientTls::default()).unwrap();
    let mut conn = client.connect(&node.base("http"), false).await.unwrap();
    let key = keys::read_verifying_key(&store.join("origin.pub")).unwrap();
    let m = fetch_manifest(&mut conn, "lantern", &key).await;
    let victim = m.renditions[1].segments[1];
    let hex = victim.id.to_hex();
    let path = store.join("chunks").join(&hex[..2]).join(&hex);

    // HEAD gives the headers and length without the body.
    let head = conn.send(Request::head(format!("/v1/chunks/{hex}")).body(bytes::Bytes::new()).unwrap()).await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(head.headers()["content-length"], victim.size.to_string().as_str());
    assert!(head.body().is_empty());

    // Flip one byte on disk: the origin refuses to serve it and quarantines the file.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    let resp = conn.get(&format!("/v1/chunks/{hex}")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(String::from_utf8_lossy(resp.body()).contains("corrupt"));
    assert!(!path.exists() && store.join("quarantine").join(&hex).exists());
    assert_eq!(conn.get(&format!("/v1/chunks/{hex}")).await.unwrap().status(), StatusCode::NOT_FOUND);
    let metrics = conn.get("/metrics").await.unwrap();
    assert!(String::from_utf8_lossy(metrics.body()).contains("chorus_origin_corrupt_chunks_total 1"));

    // Re-ingesting the package restores it.
    let out = ok(&chorus(&["ingest", "--store", s(&store), "--track", "lantern", s(&pkg)]));
    assert!(out.contains("(1 new)"), "{out}");
    let resp = conn.get(&format!("/v1/chunks/{hex}")).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(ChunkId::of(resp.body()), victim.id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_cap_are_closed_at_once() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let node =
        Node::start(&["origin", "--store", s(&store), "--listen", "http://127.0.0.1:0", "--max-connections", "2"], 1);
    let client = HttpClient::new(&ClientTls::default()).unwrap();
    let mut a = client.connect(&node.base("http"), false).await.unwrap();
    let mut b = client.connect(&node.base("http"), false).await.unwrap();
    assert_eq!(a.get("/healthz").await.unwrap().status(), StatusCode::OK);
    assert_eq!(b.get("/healthz").await.unwrap().status(), StatusCode::OK);
    // A third connection is accepted by the kernel, then closed by the node without an answer.
    let mut third = tokio::net::TcpStream::connect(node.addr("http")).await.unwrap();
    let _ = third.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(20), third.read_to_end(&mut buf)).await;
    assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "over-cap connection got {:?}", String::from_utf8_lossy(&buf));
    // Once one closes, there is room again.
    drop(a);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut c) = client.connect(&node.base("http"), false).await
            && c.get("/healthz").await.is_ok_and(|r| r.status() == StatusCode::OK)
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no room after a connection closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.get("/healthz").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_trickled_byte_by_byte_is_still_cut_off() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let node = Node::start(
        &["origin", "--store", s(&store), "--listen", "http://127.0.0.1:0", "--header-read-timeout", "1s"],
        1,
    );
    let mut sock = tokio::net::TcpStream::connect(node.addr("http")).await.unwrap();
    sock.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let started = std::time::Instant::now();
    // One header byte every 200 ms: each read is quick, but the head never completes.
    let closed = loop {
        if started.elapsed() > Duration::from_secs(30) {
            break false;
        }
        if sock.write_all(b"x").await.is_err() {
            break true;
        }
        let mut b = [0u8; 256];
        match tokio::time::timeout(Duration::from_millis(200), sock.read(&mut b)).await {
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(_)) => break true, // an error answer also ends it
            Err(_) => {}
        }
    };
    // Cut off (at the 1 s header timeout, which each quick read does not extend), within a
    // generous 30 s.
    assert!(closed, "a trickling client kept its connection for 30 s");
}

/// HTTP/3 0-RTT: a second connection to a server sends its first GET in early data and the
/// server takes it; unsafe methods wait for the handshake; a server that restarted (and so
/// refuses the old ticket) costs a redial, not a failed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_resumes_in_zero_rtt_and_survives_a_refused_ticket() {
    use chorus_http::client::EarlyData;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ok(&chorus(&["ingest", "--store", s(&store), "--track", "tides", s(&samples().join("chorus-tides"))]));
    let origin = Node::start(&["origin", "--store", s(&store), "--listen", "h3://127.0.0.1:0"], 1);
    let url = origin.url("h3");
    let key = keys::read_verifying_key(&store.join("origin.pub")).unwrap();
    let trust = ClientTls { ca_files: vec![store.join("tls").join("cert.pem")], insecure: false };
    let client = HttpClient::new(&trust).unwrap();

    // First contact: a full handshake (no ticket yet), which leaves a session ticket behind.
    let mut first = client.connect(&url.parse().unwrap(), false).await.unwrap();
    assert_eq!(first.early_data(), EarlyData::NotTried);
    let m = fetch_manifest(&mut first, "tides", &key).await;
    let chunk = m.renditions[0].segments[0].id;
    tokio::time::sleep(Duration::from_millis(100)).await; // the ticket arrives after the handshake

    // Second connection: the GET goes out in 0-RTT data and comes back right.
    let mut second = client.connect(&url.parse().unwrap(), false).await.unwrap();
    assert_ne!(second.early_data(), EarlyData::NotTried, "0-RTT should have been attempted");
    let r = second.get(&format!("/v1/chunks/{chunk}")).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(chunk.matches(r.body()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while second.early_data() == EarlyData::Pending {
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(second.early_data(), EarlyData::Accepted);

    // An unsafe method on a fresh 0-RTT connection is held until the handshake completes, then
    // answered normally (here: 403, this origin has no admin token; not 425 Too Early).
    let mut third = client.connect(&url.parse().unwrap(), false).await.unwrap();
    assert_ne!(third.early_data(), EarlyData::NotTried);
    let put = Request::put("/admin/tracks/x").body(bytes::Bytes::from_static(b"{}")).unwrap();
    assert_eq!(third.send(put).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(third.early_data(), EarlyData::Accepted, "sent only after the handshake");

    // The origin restarts on the same port: it no longer knows the ticket, refuses the early
    // data, and the GET is sent again on a fresh connection.
    let port = origin.addr("h3");
    drop(origin);
    let origin = Node::start(&["origin", "--store", s(&store), "--listen", &format!("h3://{port}")], 1);
    // (The refusal may come while HTTP/3 is being set up, in which case connect redials.)
    let mut fourth = client.connect(&origin.base("h3"), false).await.unwrap();
    for _ in 0..2 {
        let r = fourth.get(&format!("/v1/chunks/{chunk}")).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(chunk.matches(r.body()));
    }
    // (A request that raced the refusal may have gone through in 1-RTT on the old connection;
    // the next one redials.)
    assert_eq!(fourth.early_data(), EarlyData::NotTried, "redialled without 0-RTT");
}

#[test]
fn an_empty_admin_token_is_refused_at_start() {
    let origin: &[&str] = &["origin", "--store", "unused", "--admin-token", ""];
    let edge: &[&str] = &["edge", "--upstream", "http://127.0.0.1:9", "--admin-token", "  "];
    for args in [origin, edge] {
        let out = chorus(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("the admin token is empty"), "{err}");
    }
    // A token file that is missing, empty, too long or of several lines stops the node at
    // start too, and naming both sources is refused.
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    // A token shorter than 32 bytes, given or in a file, stops the node at start.
    let short = file("short", "s3cret\n");
    for args in [
        &["origin", "--store", "unused", "--admin-token", "0123456789abcdef0123456789abcde"][..],
        &["edge", "--upstream", "http://127.0.0.1:9", "--admin-token-file", short.as_str()][..],
    ] {
        let out = chorus(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("must be at least 32"), "{err}");
    }
    let cases = [
        (dir.path().join("absent").to_string_lossy().into_owned(), "cannot read the admin token"),
        (file("empty", " \n"), "is empty"),
        (file("big", &"x".repeat(5000)), "larger than 4096 bytes"),
        (file("pem", "-----BEGIN PRIVATE KEY-----\nMC4CAQ\n-----END PRIVATE KEY-----\n"), "more than one line"),
    ];
    for (path, why) in &cases {
        for node in [&["origin", "--store", "unused"][..], &["edge", "--upstream", "http://127.0.0.1:9"][..]] {
            let args: Vec<&str> = node.iter().copied().chain(["--admin-token-file", path.as_str()]).collect();
            let out = chorus(&args);
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(why), "{args:?}: {err}");
        }
    }
    let good = file("good", "s3cret-s3cret-s3cret-s3cret-s3cret\n");
    let out = chorus(&[
        "origin",
        "--store",
        "unused",
        "--admin-token",
        "another-s3cret-another-s3cret-xx",
        "--admin-token-file",
        &good,
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"), "{out:?}");
}

#[test]
fn tells_systemd_when_it_is_ready_alive_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let next = || {
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    };
    let store = dir.path().join("store");
    // As systemd starts it for Type=notify with WatchdogSec=1s (WATCHDOG_PID names the
    // process the watchdog is meant for: the shell's own pid, which exec hands to chorus).
    let mut cmd = std::process::Command::new("sh");
    cmd.args(["-c", "export WATCHDOG_PID=$$; exec \"$@\"", "sh", s(&support::bin())])
        .args(["origin", "--store", s(&store), "--listen", "http://127.0.0.1:0"])
        .args(["--metrics-listen", "http://127.0.0.1:0"])
        .envs([("NOTIFY_SOCKET", s(&socket_path)), ("WATCHDOG_USEC", "1000000")]);
    let node = Node::start_command(cmd, 2);
    // Ready once both listeners are bound, with where it serves as the status line.
    let ready = next();
    let served = ready.strip_prefix("READY=1\nSTATUS=serving on ").and_then(|r| r.strip_suffix('\n'));
    let mut served: Vec<&str> = served.unwrap_or_else(|| panic!("{ready:?}")).split(' ').collect();
    let mut logged: Vec<&str> = node.urls.iter().map(String::as_str).collect();
    served.sort();
    logged.sort();
    assert_eq!(served, logged);
    // Watchdog pings at half the interval, while it runs.
    assert_eq!(next(), "WATCHDOG=1\n");
    assert_eq!(next(), "WATCHDOG=1\n");
    let status = node.terminate();
    let mut rest = Vec::new();
    while let Ok(n) = {
        socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 4096];
        socket.recv(&mut buf).map(|n| String::from_utf8(buf[..n].to_vec()).unwrap())
    } {
        rest.push(n);
    }
    assert!(status.success(), "{status:?}");
    assert!(rest.contains(&"STOPPING=1\nSTATUS=draining in-flight requests\n".to_owned()), "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http3_answer_sent_before_the_request_body_was_read_is_not_lost() {
    // The origin refuses an upload (no admin token) without reading its 8 MiB body, and stops
    // the rest of the request (RFC 9114 §4.1): the client still gets the 403.
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let origin = Node::start(&["origin", "--store", s(&store), "--listen", "h3://127.0.0.1:0"], 1);
    let trust = ClientTls { ca_files: vec![store.join("tls").join("cert.pem")], insecure: false };
    let mut c = HttpClient::new(&trust).unwrap().connect(&origin.base("h3"), false).await.unwrap();
    for _ in 0..3 {
        let put = Request::put("/admin/tracks/x").body(bytes::Bytes::from(vec![0u8; 8 << 20])).unwrap();
        assert_eq!(c.send(put).await.unwrap().status(), StatusCode::FORBIDDEN);
    }
}

#[test]
fn object_store_flags_on_a_directory_store_are_refused_not_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for (flag, says) in [("--cache-dir", "is the cache of an object store"), ("--work-dir", "STORE/tmp")] {
        let out = chorus(&["origin", "--store", s(&store), flag, s(dir.path()), "--listen", "http://127.0.0.1:0"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{flag}: {err}");
        assert!(err.contains(says), "{flag}: {err}");
    }
}
