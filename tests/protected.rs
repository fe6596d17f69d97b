//! End to end: a protected track (`chorus ingest --protect`) through a real origin, edges and a
//! seeding peer. Only a token that covers the track gets its content key; edges and peers carry
//! ciphertext (and need no secret to); players (`chorus fetch`, ffmpeg through HLS) play exactly
//! the audio of the same track ingested clear.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use chorus_testkit as support;

use std::path::Path;

use bytes::Bytes;
use chorus_core::protect::{self, ContentKey};
use chorus_http::client::Connection;
use http::{Request, StatusCode};
use support::net::Net;
use support::{chorus, conn, s};

/// The sample "chorus-tides" ingested twice into one store, signed with a key of the test's
/// (`keys/`, with the token key): protected as `tides`, clear as `tides-clear`; an origin that
/// checks key requests' tokens; an edge that checks tokens and holds its own credential
/// (`net.edges[EDGE]`), and one that checks none (`net.edges[OPEN]`).
fn start() -> Net {
    let builder = Net::builder();
    let keys = builder.dir().join("keys");
    assert!(chorus(&["keys", "generate", "--out", s(&keys)]).status.success());
    let (signing, origin_pub, token_pub) = (keys.join("origin.key"), keys.join("origin.pub"), keys.join("token.pub"));
    let builder = builder.origin_key(origin_pub.clone()).ingest(|_, store| {
        for (track, protect) in [("tides", true), ("tides-clear", false)] {
            let said = support::ingest_sample_with(store, track, "chorus-tides", Some(&signing), protect);
            assert_eq!(said.contains("protected (key "), protect, "{said}");
        }
    });
    let credential = builder.dir().join("edge.token");
    std::fs::write(&credential, format!("{}\n", issue(&keys, &["--sub", "edge-test"]))).unwrap();
    let upstream = ["--upstream-token-file", s(&credential), "--origin-key", s(&origin_pub)];
    let checking: Vec<&str> = ["--token-key", s(&token_pub)].into_iter().chain(upstream).collect();
    builder
        .origin_args(&["--token-key", s(&token_pub)])
        .edges(1, &["http"], &checking)
        .edges(1, &["http"], &upstream)
        .start()
}

/// The edge that checks tokens (and holds a credential for the origin).
const EDGE: usize = 0;
/// The edge that checks none.
const OPEN: usize = 1;

/// A token for `tracks` (every track without any).
fn token(net: &Net, tracks: &[&str]) -> String {
    let mut args = vec![];
    for t in tracks {
        args.extend_from_slice(&["--track", t]);
    }
    issue(&net.dir.path().join("keys"), &args)
}

/// `chorus token issue` with the test's token key, valid for an hour.
fn issue(keys: &Path, extra: &[&str]) -> String {
    let key = keys.join("token.key");
    let mut args = vec!["token", "issue", "--key", s(&key), "--ttl", "1h"];
    args.extend_from_slice(extra);
    let out = chorus(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn get(path: &str, token: Option<&str>) -> Request<Bytes> {
    let mut b = Request::get(path);
    if let Some(t) = token {
        b = b.header("authorization", format!("Bearer {t}"));
    }
    b.body(Bytes::new()).unwrap()
}

async fn status(c: &mut Connection, r: Request<Bytes>) -> StatusCode {
    c.send(r).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_track_plays_only_with_a_token_that_covers_it_and_is_ciphertext_everywhere_else() {
    let net = start();
    let (m, clear) = (net.manifest("tides"), net.manifest("tides-clear"));
    let protection = m.protection.clone().expect("ingested with --protect");
    assert!(clear.protection.is_none());
    let key_path = format!("/v1/tracks/tides/keys/{}", protection.key_id);
    let (tides, other, both) = (token(&net, &["tides"]), token(&net, &["tides-clear"]), token(&net, &[]));

    // The key route: a token that covers the track, and nothing else, gets the 16 bytes.
    let mut e = conn(&net.edges[EDGE].url("http")).await;
    assert_eq!(status(&mut e, get(&key_path, None)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&mut e, get(&key_path, Some("not.a.jwt"))).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&mut e, get(&key_path, Some(&other))).await, StatusCode::FORBIDDEN);
    let r = e.send(get(&key_path, Some(&tides))).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["cache-control"], "private, no-store");
    let key = ContentKey::from_slice(r.body()).unwrap();
    // The query form, as HLS players send it; an unknown key id is 404, a malformed one 400.
    assert_eq!(status(&mut e, get(&format!("{key_path}?token={tides}"), None)).await, StatusCode::OK);
    assert_eq!(
        status(&mut e, get("/v1/tracks/tides/keys/00000000000000aa", Some(&tides))).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(status(&mut e, get("/v1/tracks/tides/keys/..%2f..", Some(&tides))).await, StatusCode::BAD_REQUEST);
    // An edge that checks no tokens hands out no key, whoever asks.
    let mut open = conn(&net.edges[OPEN].url("http")).await;
    for t in [None, Some(tides.as_str())] {
        assert_eq!(status(&mut open, get(&key_path, t)).await, StatusCode::FORBIDDEN);
    }
    // The origin answers the edge's credential and listeners' tokens, never a stranger.
    let mut o = conn(&net.origin.url("http")).await;
    assert_eq!(status(&mut o, get(&key_path, None)).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&mut o, get(&key_path, Some(&other))).await, StatusCode::FORBIDDEN);
    assert_eq!(status(&mut o, get(&key_path, Some(&both))).await, StatusCode::OK);

    // What edges carry is ciphertext: named by its own hash, no fMP4 box in sight, and it
    // decrypts under the key to exactly the clear track's segment. Init chunks are clear.
    for (r, rc) in m.renditions.iter().zip(&clear.renditions) {
        assert_eq!(r.init, rc.init, "init chunks carry no audio and stay clear");
        for (seg, clear_seg) in r.segments.iter().zip(&rc.segments) {
            let served = open.send(get(&format!("/v1/chunks/{}", seg.id), None)).await.unwrap();
            assert_eq!(served.status(), StatusCode::OK);
            let body = served.body();
            assert!(seg.id.matches(body));
            assert!(!body.windows(4).any(|w| w == b"moof" || w == b"mdat"), "a box name in the ciphertext");
            let plain = protect::decrypt(&key, &seg.iv.unwrap(), body).unwrap();
            assert_eq!(plain, net.chunk(&clear_seg.id));
        }
    }

    // A player with a covering token plays the clear track's exact bytes.
    let out = net.dir.path().join("out.mp4");
    let edge_url = net.edges[EDGE].url("http");
    let fetch = |track: &str, edge: &str, token: Option<&str>, out: &Path| {
        let mut args = vec!["--edge", edge, "--quality", "normal", "--json", "--out", s(out)];
        if let Some(t) = token {
            args.extend_from_slice(&["--token", t]);
        }
        net.fetch(track, &args)
    };
    let run = fetch("tides", &edge_url, Some(&tides), &out);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let expected = net.bytes_of(&clear.renditions[1]);
    assert_eq!(std::fs::read(&out).unwrap(), expected);

    // Without a token that covers it, no edge gives the track's audio: the edge that checks
    // tokens refuses the manifest, the one that does not serves ciphertext but no key.
    for (edge, token) in [(edge_url.as_str(), Some(other.as_str())), (net.edges[OPEN].url("http").as_str(), None)] {
        let out = net.dir.path().join("refused.mp4");
        let run = fetch("tides", edge, token, &out);
        assert!(!run.status.success());
        let said = String::from_utf8_lossy(&run.stderr);
        assert!(said.contains("40"), "{said}");
        assert!(!out.exists() || std::fs::read(&out).unwrap().is_empty(), "nothing was played");
    }
    let run = fetch("tides", &net.edges[OPEN].url("http"), None, &net.dir.path().join("open.mp4"));
    assert!(String::from_utf8_lossy(&run.stderr).contains("protected"), "{}", String::from_utf8_lossy(&run.stderr));

    // The edge fetched the key once (it keeps it a minute) and says so in its route metric.
    let metrics = String::from_utf8(e.send(get("/metrics", None)).await.unwrap().into_body().to_vec()).unwrap();
    assert!(support::metric_sum(&metrics, "chorus_edge_requests_total", &["route=\"key\"", "status=\"200\""]) >= 3.0);

    // Any HLS player: ffmpeg fetches the key through the playlist's #EXT-X-KEY (the token in the
    // URI), decrypts, and decodes the very audio of the clear track.
    if support::have_ffmpeg() {
        let pcm = |track: &str| {
            let url = format!("{edge_url}/v1/tracks/{track}/hls/aac-96.m3u8?token={both}");
            let out = std::process::Command::new("ffmpeg")
                .args(["-v", "error", "-i", &url, "-f", "s16le", "-"])
                .output()
                .unwrap();
            assert!(out.status.success(), "ffmpeg {track}: {}", String::from_utf8_lossy(&out.stderr));
            out.stdout
        };
        let (protected, reference) = (pcm("tides"), pcm("tides-clear"));
        assert!(protected.len() > 44_100 * 4, "at least a second of audio");
        assert!(protected == reference, "ffmpeg decoded other audio from the protected track");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_carry_a_protected_track_without_any_secret_and_a_token_holder_plays_it_from_them() {
    let net = start();
    let clear = net.manifest("tides-clear");
    // A seeder with no token at all, from the edge that checks none: it carries ciphertext.
    let seed_cache = net.dir.path().join("seed");
    let seeder = support::start_seeder(&net.edges[OPEN], &net.key(), &seed_cache, &[], 0);
    // A listener with a token for the track, given the open edge first: the manifest and the
    // peers from it (the seeder announced there), the key from the next edge (the open one
    // refuses it), the audio exact.
    let tides = token(&net, &["tides"]);
    let edges = format!("{},{}", net.edges[OPEN].url("http"), net.edges[EDGE].url("http"));
    let out = net.dir.path().join("out.mp4");
    let j = support::fetch_p2p(
        &edges,
        &net.key(),
        &net.dir.path().join("listener"),
        &["--quality", "normal", "--out", s(&out), "--token", &tides],
    );
    assert!(j["bytes_by_source"]["peer"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["chunks_rejected"], 0, "{j}");
    let expected = net.bytes_of(&clear.renditions[1]);
    assert_eq!(std::fs::read(&out).unwrap(), expected);
    drop(seeder);
}
