//! The web player and the read API in a real browser: Debian's headless Chromium driven by
//! playwright-core (`tests/browser/run.mjs`), against real `chorus origin` and `chorus edge`
//! processes on loopback. Asserts what a listener notices: the audio plays on past several
//! segments and into the next track, the bytes appended are the manifest's chunks (hashed
//! here), the bitrate moves up when the throttled link is freed, an altered manifest plays
//! nothing, tokens work, and hls.js on a page of another origin plays the edge's playlist
//! (CORS), which it cannot with `--cors-origin off`; and `chorus demo`'s network view shows
//! every node and the bytes peers carried, live.
//!
//! Needs `/usr/bin/chromium`, `node`, and `npm ci` run in `tests/browser` (`.ci/run` installs
//! all three). Elsewhere it says what is missing and passes; with `CI` set it fails instead.
//! `CHORUS_SCREENSHOTS=DIR` copies the screenshots it takes into DIR (docs/ has them).
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::path::{Path, PathBuf};
use std::process::Command;

use chorus_core::ChunkId;
use chorus_core::manifest::Manifest;
use chorus_testkit as support;
use serde_json::Value;
use support::{Node, chorus, ingest_sample, s, start_origin};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("browser")
}

/// Why the browser tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!("no Chromium at {chromium} (apt-get install -y chromium)"));
    }
    if Command::new("node").arg("--version").output().is_err() {
        return Some("no node (apt-get install -y nodejs npm)".into());
    }
    if !browser_dir().join("node_modules").join("playwright-core").exists() {
        return Some("no playwright-core (npm ci in tests/browser)".into());
    }
    None
}

fn skip() -> bool {
    let Some(why) = missing() else { return false };
    assert!(std::env::var_os("CI").is_none(), "CI must run the browser tests: {why}");
    eprintln!("skipped: {why}");
    true
}

/// `node run.mjs SCENARIO EDGE OUT [TOKEN]`, its JSON result.
fn run(scenario: &str, edge: &str, out: &Path, token: Option<&str>) -> Value {
    let mut cmd = Command::new("node");
    cmd.arg(browser_dir().join("run.mjs")).args([scenario, edge, s(out)]).args(token);
    let output = cmd.output().expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let result: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("{scenario}: no result\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr)));
    eprintln!("{scenario}: {result}");
    assert!(result["failure"].is_null(), "{scenario} failed: {}", result["failure"]);
    if let Some(dir) = std::env::var_os("CHORUS_SCREENSHOTS") {
        for (shot, name) in
            [("player.png", "player.png"), ("tampered.png", "player-tampered.png"), ("network.png", "demo-network.png")]
        {
            let _ = std::fs::copy(out.join(shot), Path::new(&dir).join(name));
        }
    }
    result
}

struct Cdn {
    dir: tempfile::TempDir,
    _origin: Node,
    origin_url: String,
}

impl Cdn {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        for track in ["chorus-tides", "chorus-sunrise"] {
            ingest_sample(&store, track, track);
        }
        let origin = start_origin(&store);
        let origin_url = origin.url("http");
        Self { dir, _origin: origin, origin_url }
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("store").join("origin.pub")
    }

    /// An edge on plain HTTP at 127.0.0.1 (a secure context for the browser, as localhost is).
    fn edge(&self, name: &str, extra: &[&str]) -> Node {
        let cache = self.dir.path().join(name);
        let key = self.key();
        let mut args = vec![
            "edge",
            "--upstream",
            &self.origin_url,
            "--listen",
            "http://127.0.0.1:0",
            "--cache-dir",
            s(&cache),
            "--origin-key",
            s(&key),
        ];
        args.extend_from_slice(extra);
        Node::start(&args, 1)
    }

    async fn manifest(&self, edge: &str, track: &str) -> Manifest {
        let key = chorus_core::keys::read_verifying_key(&self.key()).unwrap();
        let r = support::conn(edge).await.get(&format!("/v1/tracks/{track}/manifest")).await.unwrap();
        Manifest::verify(r.body(), &key).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_player_and_hls_js_in_a_real_browser() {
    if skip() {
        return;
    }
    let cdn = Cdn::start();
    let edge = cdn.edge("edge", &[]);
    let base = edge.url("http");
    let out = cdn.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();

    // Play: past two segments, a switch up when the link is freed, on into the next track, a
    // switch down when it is throttled again.
    let play = run("play", &base, &out, None);
    let state = &play["state"];
    assert_eq!(play["consoleErrors"], serde_json::json!([]), "errors in the page");
    assert!(state["error"].is_null(), "{state}");
    assert_eq!(state["mediaErrors"], 0);
    assert!(play["mediaError"].is_null());
    assert!(play["timeBeforeSeek"].as_f64().unwrap() > 12.0, "the first two segments played");
    assert_eq!(play["firstRendition"], "aac-24", "the first segment at the lowest rung, the link throttled");
    assert!(state["switches"].as_u64().unwrap() >= 1);
    assert!(state["startupMs"].as_f64().unwrap() > 0.0);
    assert_eq!(state["rejected"], 0);
    assert_eq!(state["tracksDone"], 1);
    assert_eq!(state["track"], "chorus-sunrise");
    assert!(play["currentTime"].as_f64().unwrap() > 1.0, "the second track plays");
    let appended = state["appended"].as_array().unwrap();
    let renditions: Vec<&str> = appended.iter().map(|a| a["rendition"].as_str().unwrap()).collect();
    let up = renditions.iter().position(|r| *r == "aac-96").expect("a segment at aac-96");
    assert!(renditions[..up].iter().all(|r| *r == "aac-24"), "{renditions:?}");
    // The second track starts at the rung the fast link allowed, and goes down after its first
    // segment came over the throttled link.
    let second: Vec<&str> =
        appended.iter().filter(|a| a["track"] == "chorus-sunrise").map(|a| a["rendition"].as_str().unwrap()).collect();
    assert_eq!(second.first(), Some(&"aac-96"), "{second:?}");
    assert!(second.contains(&"aac-24"), "a switch down: {second:?}");
    assert!(state["switches"].as_u64().unwrap() >= 2);
    // Every appended segment is the manifest's chunk for its place, byte for byte.
    let manifests = [
        ("chorus-tides", cdn.manifest(&base, "chorus-tides").await),
        ("chorus-sunrise", cdn.manifest(&base, "chorus-sunrise").await),
    ];
    for (n, a) in appended.iter().enumerate() {
        let bytes = std::fs::read(out.join(format!("appended-{n}.bin"))).unwrap();
        let m = &manifests.iter().find(|(t, _)| a["track"] == *t).unwrap().1;
        let rendition = m.renditions.iter().find(|r| r.id.as_str() == a["rendition"]).unwrap();
        let want = rendition.segments[usize::try_from(a["index"].as_u64().unwrap()).unwrap()].id;
        assert_eq!(ChunkId::of(&bytes), want, "appended segment {n}: {a}");
        assert_eq!(a["id"], want.to_string());
    }

    // A manifest altered on the way: the page says so and plays nothing.
    let tampered = run("tampered", &base, &out, None);
    let state = &tampered["state"];
    assert_eq!(tampered["consoleErrors"], serde_json::json!([]), "an error shown, not thrown");
    assert!(state["error"].as_str().unwrap().contains("does not verify"), "{state}");
    assert_eq!(tampered["errorShown"], state["error"]);
    assert_eq!(state["appended"], serde_json::json!([]));
    assert_eq!(state["verified"], 0, "not even an init chunk fetched");
    assert_eq!(tampered["currentTime"], 0.0);

    // hls.js on a page of another origin: CORS lets it play, and without CORS it cannot.
    let hls = run("hls", &base, &out, None);
    assert_eq!(hls["hlsErrors"], serde_json::json!([]));
    assert_eq!(hls["consoleErrors"], serde_json::json!([]));
    assert!(hls["currentTime"].as_f64().unwrap() > 6.0, "{hls}");
    let closed = cdn.edge("closed", &["--cors-origin", "off"]);
    let refused = run("hls", &closed.url("http"), &out, None);
    assert!(!refused["hlsErrors"].as_array().unwrap().is_empty(), "{refused}");
    assert!(refused["consoleErrors"][0].as_str().unwrap().contains("blocked by CORS policy"), "{refused}");
    assert_eq!(refused["currentTime"], 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_player_with_an_access_token() {
    if skip() {
        return;
    }
    let cdn = Cdn::start();
    let keys = cdn.dir.path().join("keys");
    assert!(chorus(&["keys", "generate", "--out", s(&keys)]).status.success());
    let token = chorus(&["token", "issue", "--key", s(&keys.join("token.key")), "--ttl", "1h"]);
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let edge = cdn.edge("edge", &["--token-key", s(&keys.join("token.pub"))]);
    let out = cdn.dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let r = run("token", &edge.url("http"), &out, Some(&token));
    assert!(r["withToken"]["error"].is_null(), "{r}");
    // The only error in the page: the browser's note of the 401 without a token.
    assert_eq!(r["consoleErrors"].as_array().unwrap().len(), 1, "{r}");
    assert!(r["consoleErrors"][0].as_str().unwrap().contains("401"), "{r}");
    assert!(r["withToken"]["verified"].as_u64().unwrap() >= 2, "{r}");
    let refused = r["withoutToken"]["error"].as_str().unwrap();
    assert!(refused.contains("HTTP 401") && refused.contains("token"), "{refused}");
    assert_eq!(r["withoutToken"]["appended"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protected_track_plays_in_the_web_player_and_hls_js_only_with_a_token() {
    if skip() {
        return;
    }
    // "chorus-tides" twice in one store: protected as "tides", clear as "tides-clear".
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    for (track, protect) in [("tides", true), ("tides-clear", false)] {
        support::ingest_sample_with(&store, track, "chorus-tides", None, protect);
    }
    let keys = dir.path().join("keys");
    assert!(chorus(&["keys", "generate", "--out", s(&keys)]).status.success());
    let token_key = keys.join("token.key");
    let issue = |extra: &[&str]| {
        let mut args = vec!["token", "issue", "--key", s(&token_key), "--ttl", "1h"];
        args.extend_from_slice(extra);
        String::from_utf8(chorus(&args).stdout).unwrap().trim().to_owned()
    };
    let credential = dir.path().join("edge.token");
    std::fs::write(&credential, issue(&["--sub", "edge"])).unwrap();
    let token_pub = keys.join("token.pub");
    let origin = Node::start(
        &["origin", "--store", s(&store), "--listen", "http://127.0.0.1:0", "--token-key", s(&token_pub)],
        1,
    );
    let origin_url = origin.url("http");
    let origin_pub = store.join("origin.pub");
    let cache = dir.path().join("edge");
    let edge = Node::start(
        &[
            "edge",
            "--upstream",
            &origin_url,
            "--listen",
            "http://127.0.0.1:0",
            "--cache-dir",
            s(&cache),
            "--origin-key",
            s(&origin_pub),
            "--token-key",
            s(&token_pub),
            "--upstream-token-file",
            s(&credential),
        ],
        1,
    );
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let token = issue(&["--track", "tides"]);
    let r = run("protected", &edge.url("http"), &out, Some(&token));
    let with = &r["withToken"];
    assert!(with["error"].is_null(), "{r}");
    assert_eq!(with["protected"], true);
    assert_eq!(with["rejected"], 0);
    assert!(r["currentTime"].as_f64().unwrap() > 7.0, "played past the first segment: {r}");
    // Each segment appended is the clear track's segment at its place: decrypted exactly.
    let verifying = chorus_core::keys::read_verifying_key(&origin_pub).unwrap();
    let manifest = |t: &str| {
        let doc = std::fs::read(store.join("manifests").join(format!("{t}.json"))).unwrap();
        Manifest::verify(&doc, &verifying).unwrap()
    };
    let (protected, clear) = (manifest("tides"), manifest("tides-clear"));
    assert!(protected.protection.is_some());
    let appended = with["appended"].as_array().unwrap();
    assert!(appended.len() >= 2, "{with}");
    for (n, a) in appended.iter().enumerate() {
        let bytes = std::fs::read(out.join(format!("appended-{n}.bin"))).unwrap();
        let place = |m: &Manifest| {
            let r = m.renditions.iter().find(|r| r.id.as_str() == a["rendition"]).unwrap();
            r.segments[usize::try_from(a["index"].as_u64().unwrap()).unwrap()].id
        };
        assert_eq!(a["id"], place(&protected).to_string(), "fetched as the protected track's ciphertext");
        assert_eq!(ChunkId::of(&bytes), place(&clear), "appended segment {n}: {a}");
    }
    // Without a token, nothing: the page says why and appends nothing.
    let refused = r["withoutToken"]["error"].as_str().unwrap();
    assert!(refused.contains("401"), "{refused}");
    assert_eq!(r["withoutToken"]["appended"], serde_json::json!([]));
    // hls.js on a page of another origin decrypts it through #EXT-X-KEY (token in the URIs).
    assert_eq!(r["hls"]["hlsErrors"], serde_json::json!([]), "{r}");
    assert!(r["hls"]["currentTime"].as_f64().unwrap() > 6.0, "{r}");
    for e in r["consoleErrors"].as_array().unwrap() {
        assert!(e.as_str().unwrap().contains("401"), "only the refusal without a token: {r}");
    }
    drop(origin);
}

#[test]
fn the_demo_network_view_shows_every_node_and_the_bytes_peers_carry() {
    use std::io::BufRead as _;
    if skip() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut demo = Command::new(support::bin())
        .args(["demo", "--dir", s(&dir.path().join("demo"))])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The demo prints the view's URL once every node is up.
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = demo.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(url) = line.split("network view: ").nth(1).and_then(|r| r.split_whitespace().next()) {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let url = rx.recv_timeout(std::time::Duration::from_secs(120));
    let result = url.as_ref().map(|url| {
        let out = dir.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        run("view", url, &out, None)
    });
    let _ = demo.kill();
    let _ = demo.wait();
    let r = result.expect("the demo printed its network view's URL");
    assert_eq!(r["consoleErrors"], serde_json::json!([]), "{r}");
    let view = &r["view"];
    assert!(view["frames"].as_u64().unwrap() >= 3, "updated live: {view}");
    let kinds: Vec<&str> = view["nodes"].as_array().unwrap().iter().map(|n| n["kind"].as_str().unwrap()).collect();
    for (kind, n) in [("origin", 1), ("edge", 2), ("peer", 2), ("listener", 1)] {
        assert_eq!(kinds.iter().filter(|k| **k == kind).count(), n, "{kind} nodes drawn: {kinds:?}");
    }
    assert!(view["peerBytes"].as_array().unwrap().iter().any(|b| b.as_f64().unwrap() > 0.0), "{view}");
    assert_eq!(view["hitBars"], 2);
    let sent = &r["snapshot"]["sent"];
    for id in ["origin", "edge-a", "edge-b", "peer-1", "peer-2"] {
        assert!(sent[id].as_f64().is_some(), "{id} scraped: {sent}");
    }
}
