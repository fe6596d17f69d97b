//! The origin on object storage (`--store s3://…`), against a real Garage cluster of three nodes
//! on loopback with three replicas of every object: several origins over one bucket, a node
//! lost mid-play, an object altered in the bucket, the store stopped, bad settings at start.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use chorus_core::keys;
use chorus_core::manifest::Manifest;
use chorus_testkit as support;
use http::{Request, StatusCode};
use object_store::{ObjectStore as _, ObjectStoreExt as _};
use support::garage::{self, Garage};
use support::{Node, bin, conn, eventually, have_ffmpeg, metric, s, samples, write_wav};

const ADMIN: &str = "adm1n-for-tests-0123456789abcdef";

/// `chorus args…` with the store's environment (through Garage node `via`).
fn command(g: &Garage, via: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args);
    for (k, v) in g.env(via) {
        cmd.env(k, v);
    }
    // No shared files of the machine's user.
    cmd.env("HOME", "/nonexistent");
    cmd
}

/// `chorus origin --store s3://chorus` on plain HTTP, port 0, with `extra` flags.
fn origin(g: &Garage, via: usize, extra: &[&str]) -> Node {
    let mut args = vec!["origin", "--store", "s3://chorus/catalogue", "--listen", "http://127.0.0.1:0"];
    args.extend_from_slice(extra);
    Node::start_command(command(g, via, &args), 1)
}

/// Signing keys in `dir` (origin.key, origin.pub).
fn keys_in(dir: &Path) {
    let out = support::chorus(&["keys", "generate", "--out", s(dir)]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `chorus ingest` of the sample `sample` into the bucket as `track`.
fn ingest(g: &Garage, track: &str, input: &Path, key: &Path, extra: &[&str]) {
    let mut args = vec!["ingest", "--store", "s3://chorus/catalogue", "--signing-key", s(key), "--track", track];
    args.extend_from_slice(extra);
    args.push(s(input));
    let out = command(g, 0, &args).output().unwrap();
    assert!(out.status.success(), "ingest: {}", String::from_utf8_lossy(&out.stderr));
}

/// A Garage cluster of three, a directory holding a signing key pair, and the two halves' paths.
struct Bucket {
    g: Garage,
    dir: tempfile::TempDir,
    key: std::path::PathBuf,
    public: std::path::PathBuf,
}

/// [`Bucket`], with the sample "tides" ingested into it when `tides`.
async fn bucket(tides: bool) -> Bucket {
    let g = Garage::cluster(3).await;
    let dir = tempfile::tempdir().unwrap();
    keys_in(dir.path());
    let (key, public) = (dir.path().join("origin.key"), dir.path().join("origin.pub"));
    if tides {
        ingest(&g, "tides", &samples().join("chorus-tides"), &key, &[]);
    }
    Bucket { g, dir, key, public }
}

async fn get(url: &str, path: &str) -> http::Response<bytes::Bytes> {
    let mut c = conn(url).await;
    c.send(Request::get(path).body(bytes::Bytes::new()).unwrap()).await.unwrap()
}

async fn manifest(url: &str, track: &str, key: &Path) -> Manifest {
    let r = get(url, &format!("/v1/tracks/{track}/manifest")).await;
    assert_eq!(r.status(), StatusCode::OK, "{}", String::from_utf8_lossy(r.body()));
    Manifest::verify(r.body(), &keys::read_verifying_key(key).unwrap()).unwrap()
}

/// The bytes of rendition `r` of `m`, init then segments, read from `url`.
async fn rendition_bytes(url: &str, m: &Manifest, r: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in m.renditions[r].chunks() {
        let resp = get(url, &format!("/v1/chunks/{}", c.id)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        out.extend_from_slice(resp.body());
    }
    out
}

async fn metrics(url: &str) -> String {
    String::from_utf8(get(url, "/metrics").await.body().to_vec()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_through_one_origin_play_through_an_edge_on_another_byte_identical() {
    if !garage::available() {
        return;
    }
    let Bucket { g, dir, key, public } = bucket(false).await;
    // Origin A takes uploads (it signs); origin B only serves, with no key at all.
    let a = origin(&g, 0, &["--admin-token", ADMIN, "--signing-key", s(&key)]);
    let b = origin(&g, 1, &[]);

    // An upload through A's admin API (raw mode: no ffmpeg needed)…
    let wav = dir.path().join("tone.wav");
    write_wav(&wav, 3);
    let mut c = conn(&a.url("http")).await;
    let up = Request::put("/admin/tracks/up1?mode=raw")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(bytes::Bytes::from(std::fs::read(&wav).unwrap()))
        .unwrap();
    let resp = c.send(up).await.unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED, "{}", String::from_utf8_lossy(resp.body()));
    // …is served by B, verified, byte for byte.
    let m = manifest(&b.url("http"), "up1", &public).await;
    assert_eq!(rendition_bytes(&b.url("http"), &m, 0).await, std::fs::read(&wav).unwrap());

    // A package imported with the CLI, played through an edge whose only origin is B.
    ingest(&g, "tides", &samples().join("chorus-tides"), &key, &[]);
    let cache = dir.path().join("edge-cache");
    let edge = Node::start(
        &["edge", "--upstream", &b.url("http"), "--listen", "http://127.0.0.1:0", "--cache-dir", s(&cache)],
        1,
    );
    let out_file = dir.path().join("out.mp4");
    let play = support::chorus(&[
        "fetch",
        "tides",
        "--edge",
        &edge.url("http"),
        "--origin-key",
        s(&public),
        "--out",
        s(&out_file),
        "--json",
    ]);
    assert!(play.status.success(), "{}", String::from_utf8_lossy(&play.stderr));
    let j: serde_json::Value = serde_json::from_slice(&play.stdout).unwrap();
    let m = manifest(&a.url("http"), "tides", &public).await;
    let expected = rendition_bytes(&a.url("http"), &m, 1).await;
    assert_eq!(j["chunks_rejected"], 0);
    assert_eq!(std::fs::read(&out_file).unwrap(), expected, "output differs from origin A's chunks");
    let text = metrics(&b.url("http")).await;
    assert!(metric(&text, "chorus_origin_store_requests_total{op=\"get\",outcome=\"ok\"}") >= 5.0, "{text}");
    assert_eq!(metric(&text, "chorus_origin_store_up"), 1.0);

    // Ranges work from the bucket as from a disk.
    let first = m.renditions[1].segments[0].id;
    let whole = get(&b.url("http"), &format!("/v1/chunks/{first}")).await.body().clone();
    let ranged = c
        .send(
            Request::get(format!("/v1/chunks/{first}"))
                .header("range", "bytes=10-99")
                .body(bytes::Bytes::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(ranged.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.body(), &whole[10..100]);

    // A re-ingest through A (other audio, same track) is seen by B within the manifest TTL.
    let before = manifest(&b.url("http"), "up1", &public).await;
    write_wav(&wav, 4);
    let up = Request::put("/admin/tracks/up1?mode=raw")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(bytes::Bytes::from(std::fs::read(&wav).unwrap()))
        .unwrap();
    assert_eq!(c.send(up).await.unwrap().status(), StatusCode::CREATED);
    eventually("origin B serves the new manifest", Duration::from_secs(30), Duration::from_millis(200), async || {
        manifest(&b.url("http"), "up1", &public).await != before
    })
    .await;
    let m = manifest(&b.url("http"), "up1", &public).await;
    assert_eq!(rendition_bytes(&b.url("http"), &m, 0).await, std::fs::read(&wav).unwrap());

    // A purge through A is seen by B within the manifest TTL (5 s), stated in the docs.
    let purge = Request::delete("/admin/tracks/up1")
        .header("authorization", format!("Bearer {ADMIN}"))
        .body(bytes::Bytes::new())
        .unwrap();
    assert_eq!(c.send(purge).await.unwrap().status(), StatusCode::OK);
    assert_eq!(get(&a.url("http"), "/v1/tracks/up1/manifest").await.status(), StatusCode::NOT_FOUND);
    eventually("origin B sees the purge", Duration::from_secs(30), Duration::from_millis(200), async || {
        get(&b.url("http"), "/v1/tracks/up1/manifest").await.status() == StatusCode::NOT_FOUND
    })
    .await;
    // B takes no uploads: it has no admin token, and could not sign without a key.
    let mut cb = conn(&b.url("http")).await;
    let up = Request::put("/admin/tracks/x?mode=raw").body(bytes::Bytes::from_static(b"x")).unwrap();
    assert_eq!(cb.send(up).await.unwrap().status(), StatusCode::FORBIDDEN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garage_node_killed_mid_play_and_the_play_completes_without_a_stall() {
    if !garage::available() || !have_ffmpeg() {
        return;
    }
    let Bucket { mut g, dir, key, public } = bucket(false).await;
    // 60 s of audio: 10 segments per rung, fetched paced like a player, 30 s ahead.
    let wav = dir.path().join("long.wav");
    write_wav(&wav, 60);
    ingest(&g, "long", &wav, &key, &["--ladder", "24,64"]);
    // No cache on the origin: every chunk the edge asks for is a GET to the store.
    let o = origin(&g, 0, &["--cache-mem-size", "0"]);
    let cache = dir.path().join("edge-cache");
    let edge = Node::start(
        &["edge", "--upstream", &o.url("http"), "--listen", "http://127.0.0.1:0", "--cache-dir", s(&cache)],
        1,
    );
    let play = Command::new(bin())
        .args(["fetch", "long", "--edge", &edge.url("http"), "--origin-key", s(&public), "--play", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-play: once the store has served a few chunks, and before it served them all.
    let url = o.url("http");
    eventually("the play is under way", Duration::from_secs(60), Duration::from_millis(50), async || {
        metric(&metrics(&url).await, "chorus_origin_store_requests_total{op=\"get\",outcome=\"ok\"}") >= 4.0
    })
    .await;
    g.kill(2);
    let gets = async || metric(&metrics(&url).await, "chorus_origin_store_requests_total{op=\"get\",outcome=\"ok\"}");
    let at_kill = gets().await;
    let out = tokio::task::spawn_blocking(move || play.wait_with_output()).await.unwrap().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["stalls"], 0, "{j}");
    assert_eq!(j["chunks_rejected"], 0, "{j}");
    let m = manifest(&url, "long", &public).await;
    assert_eq!(j["chunks_verified"].as_u64().unwrap() as usize, m.renditions[1].chunks().count() + 1, "{j}");
    // The chunks paced after the kill were read from the two nodes left.
    let after = gets().await;
    assert!(after > at_kill, "nothing was read from the store after the kill ({at_kill} GETs before)");
    let text = metrics(&url).await;
    assert_eq!(metric(&text, "chorus_origin_store_requests_total{op=\"get\",outcome=\"error\"}"), 0.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_altered_in_the_bucket_is_refused_counted_and_the_edge_gets_it_from_its_next_upstream() {
    if !garage::available() {
        return;
    }
    let Bucket { g, dir, key, public } = bucket(true).await;
    // A second origin on a directory store holding the same track (the same manifest: the
    // same key signs the same input).
    let store = dir.path().join("backup");
    let out = support::chorus(&[
        "ingest",
        "--store",
        s(&store),
        "--signing-key",
        s(&key),
        "--track",
        "tides",
        s(&samples().join("chorus-tides")),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s3 = origin(&g, 0, &[]);
    let backup = support::start_origin(&store);
    let m = manifest(&s3.url("http"), "tides", &public).await;
    let chunk = m.renditions[1].segments[1].id;
    let good = get(&backup.url("http"), &format!("/v1/chunks/{chunk}")).await.body().clone();

    // Someone alters the object in the bucket.
    let hex = chunk.to_hex();
    let object = object_store::path::Path::from(format!("catalogue/chunks/{}/{hex}", &hex[..2]));
    let mut altered = good.to_vec();
    altered[100] ^= 0xff;
    g.client(0).put(&object, altered.into()).await.unwrap();

    // The S3 origin refuses it (502, never a 200 of wrong bytes) and counts it…
    let r = get(&s3.url("http"), &format!("/v1/chunks/{chunk}")).await;
    assert_eq!(r.status(), StatusCode::BAD_GATEWAY, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(metric(&metrics(&s3.url("http")).await, "chorus_origin_corrupt_chunks_total"), 1.0);
    // …and an edge whose first upstream is that origin gets the right bytes from its next.
    let cache = dir.path().join("edge-cache");
    let edge = Node::start(
        &[
            "edge",
            "--upstream",
            &format!("{},{}", s3.url("http"), backup.url("http")),
            "--listen",
            "http://127.0.0.1:0",
            "--cache-dir",
            s(&cache),
        ],
        1,
    );
    let r = get(&edge.url("http"), &format!("/v1/chunks/{chunk}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.body(), &good);
    assert_eq!(metric(&metrics(&s3.url("http")).await, "chorus_origin_corrupt_chunks_total"), 2.0);
    // The other chunks still come from the bucket.
    let other = m.renditions[1].segments[2].id;
    let r = get(&s3.url("http"), &format!("/v1/chunks/{other}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(other.matches(r.body()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_stopped_hits_still_served_misses_answered_503_and_not_ready() {
    if !garage::available() {
        return;
    }
    let Bucket { mut g, dir, public, .. } = bucket(true).await;
    // The cache on disk only (no memory tier): what it serves below comes from its files.
    let cache = dir.path().join("origin-cache");
    let o = origin(&g, 0, &["--cache-mem-size", "0", "--cache-dir", s(&cache)]);
    let url = o.url("http");
    let m = manifest(&url, "tides", &public).await;
    let (hot, cold) = (m.renditions[1].segments[0].id, m.renditions[1].segments[1].id);
    let hot_bytes = get(&url, &format!("/v1/chunks/{hot}")).await.body().clone();
    assert!(hot.matches(&hot_bytes));
    assert_eq!(get(&url, "/readyz").await.status(), StatusCode::OK);

    g.kill_all();
    // A hit: from the origin's memory, as if nothing happened.
    let r = get(&url, &format!("/v1/chunks/{hot}")).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.body(), &hot_bytes);
    // A miss: 503 with Retry-After (the edge moves on), not a hang (conn() gives up at 20 s).
    let r = get(&url, &format!("/v1/chunks/{cold}")).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(r.headers()["retry-after"], "1");
    eventually("/readyz says not ready", Duration::from_secs(60), Duration::from_millis(200), async || {
        get(&url, "/readyz").await.status() == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let text = metrics(&url).await;
    assert_eq!(metric(&text, "chorus_origin_store_up"), 0.0);
    assert!(metric(&text, "chorus_origin_cache_requests_total{result=\"hit\"}") >= 1.0, "{text}");
    assert_eq!(metric(&text, "chorus_origin_cache_bytes{tier=\"disk\"}"), hot_bytes.len() as f64, "{text}");
    assert_eq!(metric(&text, "chorus_origin_cache_bytes{tier=\"memory\"}"), 0.0, "{text}");

    // The store comes back: so do misses and readiness.
    for n in 0..3 {
        g.restart(n).await;
    }
    eventually("the cold chunk is served again", Duration::from_secs(120), Duration::from_millis(500), async || {
        get(&url, &format!("/v1/chunks/{cold}")).await.status() == StatusCode::OK
    })
    .await;
    eventually("/readyz says ready", Duration::from_secs(60), Duration::from_millis(200), async || {
        get(&url, "/readyz").await.status() == StatusCode::OK
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_store_urls_and_wrong_credentials_are_a_clear_error_at_start() {
    if !garage::available() {
        return;
    }
    let g = Garage::cluster(1).await;
    let start = |store: &str, env: &[(&str, &str)]| {
        let mut cmd = command(&g, 0, &["origin", "--store", store, "--listen", "http://127.0.0.1:0"]);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(!out.status.success(), "{store} {env:?} started");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // (--store, extra environment, what the error says)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case<'_>] = &[
        ("s3://Not_A_Bucket", &[], "not a bucket name"),
        ("gs://chorus", &[], "only s3://"),
        ("s3://chorus/a//b", &[], "empty"),
        ("s3://no-such-bucket", &[], "no such bucket"),
        (
            "s3://chorus",
            &[("AWS_SECRET_ACCESS_KEY", "0000000000000000000000000000000000000000000000000000000000000000")],
            "check the credentials",
        ),
        ("s3://chorus", &[("AWS_ACCESS_KEY_ID", "GK000000000000000000000000")], "check the credentials"),
        ("s3://chorus", &[("AWS_ENDPOINT_URL", "http://127.0.0.1:9")], "failed to list"),
        ("s3://chorus", &[("AWS_ENDPOINT_URL", "ftp://127.0.0.1:9")], "not an http:// or https:// URL"),
        ("s3://chorus", &[("AWS_PROFILE", "nope")], "AWS_PROFILE=nope"),
    ];
    for (store, env, says) in cases {
        let err = start(store, env);
        assert!(err.contains(says), "{store} {env:?}: wanted {says:?} in:\n{err}");
    }
    // Uploads are signed, and the signing key is not in the bucket: an admin token needs one.
    let out = command(&g, 0, &["origin", "--store", "s3://chorus", "--admin-token", ADMIN]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("needs --signing-key"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No region at all.
    let mut cmd = Command::new(bin());
    cmd.args(["origin", "--store", "s3://chorus", "--listen", "http://127.0.0.1:0"]).env("HOME", "/nonexistent");
    for (k, v) in g.env(0) {
        if k != "AWS_REGION" {
            cmd.env(k, v);
        }
    }
    let out = cmd.env_remove("AWS_REGION").env_remove("AWS_DEFAULT_REGION").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("no region"), "{}", String::from_utf8_lossy(&out.stderr));
    // The shared files work in place of the variables.
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/credentials"),
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            g.access_key_id(),
            g.secret_access_key()
        ),
    )
    .unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!("[default]\nregion = {}\nendpoint_url = {}\n", g.region(), g.s3_endpoint(0)),
    )
    .unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["origin", "--store", "s3://chorus", "--listen", "http://127.0.0.1:0"]).env("HOME", home.path());
    for k in ["AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"] {
        cmd.env_remove(k);
    }
    let node = Node::start_command(cmd, 1);
    assert_eq!(get(&node.url("http"), "/readyz").await.status(), StatusCode::OK);
    // Protected ingest into a bucket with no key store is refused before anything is written.
    let dir = tempfile::tempdir().unwrap();
    keys_in(dir.path());
    let out = command(
        &g,
        0,
        &[
            "ingest",
            "--store",
            "s3://chorus",
            "--signing-key",
            s(&dir.path().join("origin.key")),
            "--track",
            "p",
            "--protect",
            s(&samples().join("chorus-tides")),
        ],
    )
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--key-store"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = command(&g, 0, &["ingest", "--store", "s3://chorus", "--track", "p", s(&samples().join("chorus-tides"))])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("--signing-key"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_get_and_an_interrupted_ingest_leaves_no_manifest() {
    use futures_util::StreamExt as _;
    if !garage::available() {
        return;
    }
    let Bucket { g, dir, key, public } = bucket(true).await;
    let o = origin(&g, 0, &[]);
    let url = o.url("http");
    let m = manifest(&url, "tides", &public).await;
    let chunk = m.renditions[1].segments[2].id;
    let gets = async || metric(&metrics(&url).await, "chorus_origin_store_requests_total{op=\"get\",outcome=\"ok\"}");
    let before = gets().await;
    // 32 listeners' edges ask for one cold chunk at once: one GET to the store.
    let asks: Vec<_> = (0..32)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { get(&url, &format!("/v1/chunks/{chunk}")).await })
        })
        .collect();
    for a in asks {
        let r = a.await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(chunk.matches(r.body()));
    }
    assert_eq!(gets().await - before, 1.0, "one GET for 32 concurrent misses");
    let text = metrics(&url).await;
    let by = |r: &str| metric(&text, &format!("chorus_origin_cache_requests_total{{result=\"{r}\"}}"));
    assert_eq!(by("miss"), 1.0, "{text}");
    assert_eq!(by("hit") + by("coalesced") + by("miss"), 32.0, "{text}");

    // An ingest killed while it writes chunks leaves no manifest; run again, it completes and
    // skips the chunks already there.
    let wav = dir.path().join("long.wav");
    write_wav(&wav, 300);
    let args = [
        "ingest",
        "--store",
        "s3://chorus/catalogue",
        "--signing-key",
        s(&key),
        "--track",
        "long",
        "--mode",
        "raw",
        s(&wav),
    ];
    let mut run =
        command(&g, 0, &args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
    let s3 = g.client(0);
    let chunks = object_store::path::Path::from("catalogue/chunks");
    let tides_chunks = m.chunks().count();
    eventually("the ingest is writing chunks", Duration::from_secs(120), Duration::from_millis(20), async || {
        s3.list(Some(&chunks)).count().await >= tides_chunks + 8
    })
    .await;
    run.kill().unwrap();
    run.wait().unwrap();
    let manifest_key = object_store::path::Path::from("catalogue/manifests/long.json");
    assert!(
        matches!(s3.head(&manifest_key).await, Err(object_store::Error::NotFound { .. })),
        "an interrupted ingest published a manifest (or finished before it was killed)"
    );
    let out = command(&g, 0, &args).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    let (total, new) = said
        .split_once(" chunks (")
        .and_then(|(a, b)| {
            Some((a.rsplit(' ').next()?.parse::<u64>().ok()?, b.split(' ').next()?.parse::<u64>().ok()?))
        })
        .unwrap_or_else(|| panic!("no chunk counts in {said:?}"));
    assert!(new < total, "the re-run wrote every chunk again: {said}");
    let m = manifest(&url, "long", &public).await;
    assert_eq!(rendition_bytes(&url, &m, 0).await, std::fs::read(&wav).unwrap());
}
