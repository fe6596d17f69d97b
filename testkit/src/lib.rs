//! Test support for the end-to-end tests in `tests/`: real `chorus` processes on port 0 (their
//! ports read from the `--ready-file` each writes once it serves), a store with an origin and
//! edges in front of it ([`net`]), a misbehaving upstream ([`proxy`]) and TCP relay
//! ([`tcpproxy`]), and test inputs made on the spot.
//!
//! A crate of its own, so it is compiled once, not into every test binary.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::missing_panics_doc)]

/// A real Garage (S3-compatible object store) cluster on loopback, for chorus against S3.
pub mod garage;
pub mod inproc;
pub mod nat;
pub mod net;
pub mod netns;
pub mod proxy;
pub mod redis;
pub mod tcpproxy;

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `chorus` binary under test: beside the directory of the test binary running
/// (`target/debug/deps/…` → `target/debug/chorus`); cargo builds it for the package's
/// integration tests.
pub fn bin() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(Path::parent).expect("the test binary is in target/*/deps");
    let bin = dir.join(format!("chorus{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} not built: run the tests with cargo test", bin.display());
    bin
}

/// Runs `chorus args…` to completion.
pub fn chorus(args: &[&str]) -> Output {
    Command::new(bin()).args(args).output().expect("chorus runs")
}

/// Runs `chorus args…` with `PATH` replaced (to hide ffmpeg).
pub fn chorus_with_path(args: &[&str], path: &Path) -> Output {
    Command::new(bin()).args(args).env("PATH", path).output().expect("chorus runs")
}

/// Whether ffmpeg and ffprobe are installed. On CI they must be (`.ci/run` installs them):
/// a missing ffmpeg there fails the test instead of skipping it.
pub fn have_ffmpeg() -> bool {
    let ok = ["ffmpeg", "ffprobe"]
        .iter()
        .all(|p| Command::new(p).arg("-version").output().is_ok_and(|o| o.status.success()));
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "ffmpeg/ffprobe missing on CI: .ci/run must install them");
        eprintln!("note: ffmpeg not installed; skipping the parts of this test that need it");
    }
    ok
}

/// A running node; killed when dropped.
pub struct Node {
    pub child: Child,
    /// Listen URLs from its ready file, e.g. `h3://127.0.0.1:40123`.
    pub urls: Vec<String>,
    /// libp2p addresses from its ready file (a peer's listen addresses, an edge's relay),
    /// each ending in `/p2p/<peer id>`.
    pub p2p: Vec<String>,
    /// Every log line so far.
    pub log: Arc<Mutex<Vec<String>>>,
    /// Holds the ready file.
    _ready: tempfile::TempDir,
}

impl Node {
    /// Starts `chorus args…` with JSON logs and waits until it serves (its ready file is
    /// written) with `expect_listeners` listen URLs.
    pub fn start(args: &[&str], expect_listeners: usize) -> Self {
        Self::start_env(args, &[], expect_listeners)
    }

    /// [`Node::start`] with extra environment variables.
    pub fn start_env(args: &[&str], env: &[(&str, &str)], expect_listeners: usize) -> Self {
        let mut cmd = Command::new(bin());
        cmd.args(args).envs(env.iter().copied());
        Self::start_command(cmd, expect_listeners)
    }

    /// [`Node::start`] of a prepared command (`chorus args…`, or a wrapper that runs it).
    pub fn start_command(mut cmd: Command, expect_listeners: usize) -> Self {
        let ready = tempfile::tempdir().expect("a directory for the ready file");
        let ready_file = ready.path().join("ready.json");
        // `CHORUS_TEST_LOG` (a log filter, e.g. `info,libp2p_relay=debug`) for a closer look.
        let level = std::env::var("CHORUS_TEST_LOG").unwrap_or_else(|_| "info".into());
        let mut child = cmd
            .args(["--log-format", "json", "--log-level", &level, "--ready-file"])
            .arg(&ready_file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("chorus starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log2.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        let doc = loop {
            if let Ok(bytes) = std::fs::read(&ready_file) {
                break serde_json::from_slice::<serde_json::Value>(&bytes).expect("a JSON ready file");
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let _ = child.kill();
                panic!("node did not start ({exited:?}); log:\n{}", log.lock().unwrap().join("\n"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let strings = |key: &str| -> Vec<String> {
            doc[key].as_array().into_iter().flatten().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        };
        let (urls, p2p) = (strings("urls"), strings("p2p"));
        assert_eq!(urls.len(), expect_listeners, "listen URLs in the ready file: {urls:?}");
        Self { child, urls, p2p, log, _ready: ready }
    }

    /// The listen URL with `scheme`.
    pub fn url(&self, scheme: &str) -> String {
        self.urls
            .iter()
            .find(|u| u.starts_with(&format!("{scheme}://")))
            .cloned()
            .unwrap_or_else(|| panic!("no {scheme} listener in {:?}", self.urls))
    }

    /// The base URL of the listener with `scheme`.
    pub fn base(&self, scheme: &str) -> chorus_core::url::BaseUrl {
        self.url(scheme).parse().unwrap()
    }

    /// `host:port` of the listener with `scheme`.
    pub fn addr(&self, scheme: &str) -> String {
        self.url(scheme).split_once("://").unwrap().1.to_owned()
    }

    /// Kills it (SIGKILL: no goodbye on its connections) and waits for it to exit.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "node did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A WAV file of `seconds` of a two-tone chord, 44.1 kHz stereo 16-bit, made here.
pub fn write_wav(path: &Path, seconds: u32) {
    let rate = 44_100u32;
    let frames = rate * seconds;
    let mut data = Vec::with_capacity(frames as usize * 4);
    for n in 0..frames {
        let t = f64::from(n) / f64::from(rate);
        let env = (t * 2.0 * std::f64::consts::PI).sin().abs();
        let l = 0.3 * env * (2.0 * std::f64::consts::PI * 220.0 * t).sin();
        let r = 0.3 * env * (2.0 * std::f64::consts::PI * 277.18 * t).sin();
        for s in [l, r] {
            data.extend_from_slice(&((s * f64::from(i16::MAX)) as i16).to_le_bytes());
        }
    }
    let mut wav = Vec::with_capacity(44 + data.len());
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&2u16.to_le_bytes()); // channels
    wav.extend_from_slice(&rate.to_le_bytes());
    wav.extend_from_slice(&(rate * 4).to_le_bytes());
    wav.extend_from_slice(&4u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    std::fs::write(path, wav).unwrap();
}

/// The repository's sample tracks directory.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("samples")
}

/// Every file under `dir`, recursively, with its contents (to tell whether a store changed).
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_owned(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// The value of a metric line `name{labels}` in Prometheus text (0 when absent). `series` is
/// the exact text before the value, e.g. `chorus_edge_prefetch_total{result="used"}`.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

/// The sum of every series of `name` whose labels contain all of `labels` (e.g. `route="chunk"`).
pub fn metric_sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// A path as the `&str` a command line wants.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Ingests the shipped sample `sample` (e.g. `chorus-tides`) into `store` as `track`.
pub fn ingest_sample(store: &Path, track: &str, sample: &str) {
    let out = chorus(&["ingest", "--store", s(store), "--track", track, s(&samples().join(sample))]);
    assert!(out.status.success(), "ingest {sample}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Ingests the shipped sample `sample` into `store` as `track`, signed with `signing_key` (the
/// store's own key without one), encrypted when `protect` (`chorus ingest --protect`); what
/// the command printed.
pub fn ingest_sample_with(
    store: &Path,
    track: &str,
    sample: &str,
    signing_key: Option<&Path>,
    protect: bool,
) -> String {
    let input = samples().join(sample);
    let mut args = vec!["ingest", "--store", s(store), "--track", track];
    if let Some(k) = signing_key {
        args.extend_from_slice(&["--signing-key", s(k)]);
    }
    if protect {
        args.push("--protect");
    }
    args.push(s(&input));
    let out = chorus(&args);
    assert!(out.status.success(), "ingest {sample}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An origin serving `store` over plain HTTP on port 0.
/// An HTTP, an HTTPS and an HTTP/3 listener on loopback, port 0 (a node logs 3 URLs).
pub const ALL_LISTENERS: [&str; 6] =
    ["--listen", "http://127.0.0.1:0", "--listen", "https://127.0.0.1:0", "--listen", "h3://127.0.0.1:0"];

/// `chorus origin` on `store` with an HTTP, an HTTPS and an HTTP/3 listener (port 0), then
/// `extra` (start it with `Node::start(…, 3)`).
pub fn origin_args<'a>(store: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["origin", "--store", store];
    v.extend_from_slice(&ALL_LISTENERS);
    v.extend_from_slice(extra);
    v
}

pub fn start_origin(store: &Path) -> Node {
    Node::start(&["origin", "--store", s(store), "--listen", "http://127.0.0.1:0"], 1)
}

/// An edge (plain HTTP, port 0) in front of `origin`, caching in `cache`.
pub fn start_edge(origin: &Node, cache: &Path) -> Node {
    start_edge_with(origin, cache, &[])
}

/// [`start_edge`] with `extra` flags.
pub fn start_edge_with(origin: &Node, cache: &Path, extra: &[&str]) -> Node {
    let url = origin.url("http");
    let mut args = vec!["edge", "--upstream", &url, "--listen", "http://127.0.0.1:0", "--cache-dir", s(cache)];
    args.extend_from_slice(extra);
    Node::start(&args, 1)
}

/// `chorus peer` seeding "tides" into `cache` from `edge` (verified with `key`), on loopback
/// without mDNS, with `extra` flags; waits for `listeners` logged listen URLs, then until it
/// has announced.
pub fn start_seeder(edge: &Node, key: &Path, cache: &Path, extra: &[&str], listeners: usize) -> Node {
    let url = edge.url("http");
    let mut args = vec![
        "peer",
        "--edge",
        &url,
        "--seed",
        "tides",
        "--origin-key",
        s(key),
        "--cache-dir",
        s(cache),
        "--p2p-listen",
        "/ip4/127.0.0.1/tcp/0",
        "--no-mdns",
    ];
    args.extend_from_slice(extra);
    let node = Node::start(&args, listeners);
    wait_log(&node, "announced");
    node
}

/// `chorus fetch tides --p2p --no-mdns --json` from `edge` (verified with `key`) with its
/// cache in `cache` and `extra` flags: asserts it succeeds and returns its JSON summary.
pub fn fetch_p2p(edge: &str, key: &Path, cache: &Path, extra: &[&str]) -> serde_json::Value {
    let mut args = vec![
        "fetch",
        "tides",
        "--edge",
        edge,
        "--origin-key",
        s(key),
        "--cache-dir",
        s(cache),
        "--p2p",
        "--no-mdns",
        "--json",
    ];
    args.extend_from_slice(extra);
    let run = chorus(&args);
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    serde_json::from_slice(&run.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&run.stdout)))
}

/// The bytes of rendition `index` of `track` as the directory store at `store` holds them
/// (init and segments in order): what every play of that rendition must write.
pub fn rendition_bytes(store: &Path, track: &str, index: usize) -> Vec<u8> {
    let path = store.join("manifests").join(format!("{track}.json"));
    let manifest: chorus_core::manifest::Manifest =
        serde_json::from_slice(&std::fs::read(&path).expect("the manifest")).expect("a manifest");
    manifest.renditions[index]
        .chunks()
        .flat_map(|c| std::fs::read(chorus_core::chunkdir::chunk_path(store, &c.id)).expect("a stored chunk"))
        .collect()
}

/// Waits (up to 60 s) for a log line of `node` containing `what`, and returns it.
pub fn wait_log(node: &Node, what: &str) -> String {
    wait_log_within(node, what, Duration::from_secs(60))
}

/// [`wait_log`] with a deadline of `within` (for what takes a minute by design, as a relay
/// reservation does).
pub fn wait_log_within(node: &Node, what: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(l) = node.log.lock().unwrap().iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        assert!(Instant::now() < deadline, "no {what:?} in:\n{}", node.log.lock().unwrap().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `cond` holds, trying every `every`, or fails after `within` (for what
/// background work or another process does in its own time).
pub async fn eventually<F: AsyncFnMut() -> bool>(what: &str, within: Duration, every: Duration, mut cond: F) {
    let deadline = Instant::now() + within;
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(every).await;
    }
}

/// A connection to `url` (any scheme) trusting the system's roots, with a 20 s request limit.
pub async fn conn(url: &str) -> chorus_http::client::Connection {
    chorus_http::client::HttpClient::new(&chorus_http::tls::ClientTls::default())
        .unwrap()
        .with_timeout(Duration::from_secs(20))
        .connect(&url.parse().unwrap(), false)
        .await
        .unwrap()
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}
