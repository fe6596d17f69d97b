//! End to end: `chorus peer` seeds a track from a real edge, announces it to the edge's
//! tracker, and a libp2p node that knows nothing else fetches every chunk from it, verified.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use chorus_peer::tracker::Plan;
use chorus_testkit as support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_core::TrackId;
use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;
use chorus_peer::{Peer, PeerConfig, Store};
use support::net::Net;
use support::{Node, chorus, s, wait_log};

/// The sample track "tides" on a real origin behind one edge (plain HTTP), in a temporary
/// directory.
fn start() -> Net {
    Net::builder().sample("tides", "chorus-tides").edges(1, &["http"], &[]).start()
}

/// `chorus peer` seeding "tides" into `cache` and announcing to `edge`; returns it once it
/// has announced, with the full multiaddr it logged.
fn seed(net: &Net, edge: &Node, cache: &Path) -> (Node, String) {
    let node = support::start_seeder(edge, &net.key(), cache, &[], 0);
    let addr = node.p2p[0].clone();
    (node, addr)
}

/// A store with nothing in it (the fetching side).
struct Empty;
impl Store for Empty {
    fn chunk(&self, _: &chorus_core::ChunkId) -> Option<bytes::Bytes> {
        None
    }
    fn held(&self, _: &TrackId) -> Vec<chorus_core::ChunkId> {
        Vec::new()
    }
    fn tracks(&self) -> Vec<TrackId> {
        Vec::new()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeding_peer_serves_every_chunk_of_its_tracks_found_through_the_tracker() {
    let net = start();
    let seed_dir = net.dir.path().join("seed");
    let (seeder, listening) = seed(&net, &net.edges[0], &seed_dir);
    assert!(listening.contains("/p2p/12D3KooW"), "full multiaddr logged: {listening}");
    let edge = &net.edges[0];

    // The tracker lists the seeder for the track, with an address to dial.
    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let track = TrackId::parse("tides").unwrap();
    let found = chorus_peer::tracker::peers(&http, &edge.base("http"), &track, None).await.unwrap();
    assert_eq!(found.peers.len(), 1, "{found:?}");
    assert!(found.relays.is_empty(), "no --p2p-relay, no relays offered");
    let (peer_id, addrs) = found.peers[0].clone();
    assert!(addrs.iter().any(|a| a.to_string().starts_with("/ip4/127.0.0.1/tcp/")), "{addrs:?}");

    // A node that knows only that fetches every chunk of every rendition, verified.
    let registry = prometheus::Registry::new();
    let leech = Peer::start(
        PeerConfig { listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], mdns: false, ..PeerConfig::default() },
        Arc::new(Empty),
        None,
        &registry,
    )
    .unwrap();
    leech.dial(addrs[0].clone()).await.unwrap();
    let all: Vec<_> = net.manifest("tides").chunks().map(|c| c.id).collect();
    let mut held = leech.have(peer_id, track).await.unwrap();
    held.sort();
    let mut want = all.clone();
    want.sort();
    assert_eq!(held, want, "the seeder holds every chunk of every rendition");
    for id in &all {
        let bytes = leech.fetch(peer_id, *id).await.unwrap();
        assert!(id.matches(&bytes));
    }
    // The identity is kept: the peer id is the same after a restart.
    let first_id = peer_id.to_string();
    drop(seeder);
    let again = Node::start(
        &[
            "peer",
            "--edge",
            &edge.url("http"),
            "--cache-dir",
            s(&seed_dir),
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ],
        0,
    );
    assert!(again.p2p[0].contains(&first_id), "{:?}", again.p2p);
}

/// A store that holds every chunk of a manifest but serves zeros in their place.
/// A peer that claims every chunk of "tides" and answers each request with `answer`: zeros
/// (a liar), or nothing after a stall (a peer that never finishes an answer).
struct Hostile {
    ids: Vec<chorus_core::ChunkId>,
    answer: fn() -> Option<bytes::Bytes>,
}
impl Store for Hostile {
    fn chunk(&self, id: &chorus_core::ChunkId) -> Option<bytes::Bytes> {
        if self.ids.contains(id) { (self.answer)() } else { None }
    }
    fn held(&self, _: &TrackId) -> Vec<chorus_core::ChunkId> {
        self.ids.clone()
    }
    fn tracks(&self) -> Vec<TrackId> {
        vec![TrackId::parse("tides").unwrap()]
    }
}

fn lie() -> Option<bytes::Bytes> {
    Some(bytes::Bytes::from(vec![0u8; 1000]))
}

/// Set when the test with a stalling peer is over: its stalled answers end then (they run on
/// the blocking pool, which the test's runtime waits for when it stops).
static STALL_OVER: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Sets [`STALL_OVER`] when dropped (the test ended, passed or not).
struct StallOver;
impl Drop for StallOver {
    fn drop(&mut self) {
        STALL_OVER.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

fn stall() -> Option<bytes::Bytes> {
    // Past the 10 s request deadline: until the test is over (5 minutes at most).
    let until = Instant::now() + Duration::from_secs(300);
    while !STALL_OVER.load(std::sync::atomic::Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// `chorus fetch tides --p2p --json --quality normal` from `edge` into `out` with its cache in
/// `cache`; the JSON summary.
fn fetch_p2p(edge: &str, key: &Path, cache: &Path, out: &Path) -> serde_json::Value {
    support::fetch_p2p(edge, key, cache, &["--quality", "normal", "--out", s(out)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_with_p2p_takes_what_is_not_urgent_from_peers_and_bans_a_liar() {
    let net = start();
    let (dir, edge, key) = (&net.dir, &net.edges[0], net.key());
    let (seeder, _) = seed(&net, edge, &dir.path().join("seed"));
    let m = net.manifest("tides");
    let expected = net.bytes_of(&m.renditions[1]);

    // A fresh listener with --p2p: the start from the edge, later segments from the seeder.
    let out_file = dir.path().join("out.mp4");
    let (edge_url, key_path) = (edge.url("http"), key.clone());
    let run = move |cache: std::path::PathBuf, out: std::path::PathBuf| {
        let (edge_url, key_path) = (edge_url.clone(), key_path.clone());
        tokio::task::spawn_blocking(move || fetch_p2p(&edge_url, &key_path, &cache, &out))
    };
    let j = run(dir.path().join("listener"), out_file.clone()).await.unwrap();
    assert!(j["bytes_by_source"]["peer"].as_u64().unwrap() > 0, "{j}");
    assert!(j["bytes_by_source"]["edge"].as_u64().unwrap() > 0, "the start comes from the edge: {j}");
    assert_eq!(j["chunks_rejected"], 0);
    assert_eq!(std::fs::read(&out_file).unwrap(), expected);

    // A lying peer joins the tracker (announced before the seeder, so it is asked too): every
    // chunk it sends is caught, it is banned, and the output is still right.
    let registry = prometheus::Registry::new();
    let liar = Peer::start(
        PeerConfig { listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], mdns: false, ..PeerConfig::default() },
        Arc::new(Hostile { ids: m.chunks().map(|c| c.id).collect(), answer: lie }),
        None,
        &registry,
    )
    .unwrap();
    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let addrs = liar.listen_addrs().await;
    let track = TrackId::parse("tides").unwrap();
    chorus_peer::tracker::announce(
        &http,
        &edge.base("http"),
        liar.identity(),
        &addrs,
        &Plan::playing(vec![track]),
        None,
    )
    .await
    .unwrap();
    drop(seeder); // only the liar is left among the peers
    let out2 = dir.path().join("out2.mp4");
    let j = run(dir.path().join("listener2"), out2.clone()).await.unwrap();
    assert!(j["chunks_rejected"].as_u64().unwrap() >= 1, "the liar was asked and caught: {j}");
    assert_eq!(j["bytes_by_source"]["peer"], 0, "{j}");
    assert_eq!(std::fs::read(&out2).unwrap(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_vanishes_mid_transfer_costs_nothing_but_a_retry_at_the_edge() {
    let net = start();
    let (dir, edge) = (&net.dir, &net.edges[0]);
    // The seeder, reached only through a relay that answers 100 ms late and can be cut.
    let (seeder, full) = seed(&net, edge, &dir.path().join("seed"));
    let (tcp, peer_id) = {
        let a: chorus_peer::Multiaddr = full.parse().unwrap();
        let port = a.iter().find_map(|p| match p {
            chorus_peer::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        });
        let id = a.iter().find_map(|p| match p {
            chorus_peer::multiaddr::Protocol::P2p(id) => Some(id),
            _ => None,
        });
        (std::net::SocketAddr::from(([127, 0, 0, 1], port.unwrap())), id.unwrap())
    };
    let relay = support::tcpproxy::start(tcp, Duration::from_millis(100)).await;
    let via: chorus_peer::Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", relay.addr.port()).parse().unwrap();
    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let track = TrackId::parse("tides").unwrap();
    // Announced for the seeder, signed with its own key (kept in its cache directory).
    let seeder_key = chorus_peer::load_or_create_identity(&dir.path().join("seed").join("peer.key")).unwrap();
    assert_eq!(seeder_key.public().to_peer_id(), peer_id);
    chorus_peer::tracker::announce(
        &http,
        &edge.base("http"),
        &seeder_key,
        &[via],
        &Plan::playing(vec![track.clone()]),
        None,
    )
    .await
    .unwrap();

    let origin_key = net.verifying_key();
    let client = chorus_client::ClientBuilder::new(vec![edge.url("http")], origin_key)
        .p2p(true)
        .p2p_mdns(false)
        .cache(dir.path().join("listener"), 1 << 30)
        .quality(chorus_client::abr::Quality::Fixed(1))
        .build()
        .unwrap();
    let mut t = client.open(&track).await.unwrap();
    // Once the peer is found (it joins the scheduler and gets what is not urgent), it vanishes.
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.stats().peers == 0 {
        assert!(Instant::now() < deadline, "the peer was never found");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Gone for good: cut off, and stopped (else the client redials it at the addresses it
    // learnt through identify, and it has not vanished at all).
    relay.cut();
    drop(seeder);
    let m = net.manifest("tides");
    let mut n = 0;
    while let Some(seg) = t.next().await {
        let seg = seg.expect("the track completes from the edge");
        assert_eq!(seg.data, net.chunk(&m.renditions[1].segments[seg.index].id));
        n += 1;
    }
    assert_eq!(n, m.renditions[1].segments.len());
    let summary = t.finish().await;
    assert_eq!(summary.bytes_by_source.peer, 0, "{summary:?}");
    assert!(summary.failures >= 1, "the peer was asked and its requests failed: {summary:?}");
    assert_eq!(summary.chunks_rejected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_on_the_tracker_peers_are_found_through_kademlia() {
    let net = start();
    // The seeder announces to edge B's tracker; the listener asks edge A, whose tracker knows
    // nobody, and finds the seeder as a Kademlia provider through its bootstrap address.
    let (edge_a, edge_b, key) = (&net.edges[0], net.start_edge("edge-b", &["http"], &[]), net.key());
    let (_seeder, full) = seed(&net, &edge_b, &net.dir.path().join("seed"));
    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let track = TrackId::parse("tides").unwrap();
    assert!(chorus_peer::tracker::peers(&http, &edge_a.base("http"), &track, None).await.unwrap().peers.is_empty());
    let (edge_url, cache) = (edge_a.url("http"), net.dir.path().join("listener"));
    let j = tokio::task::spawn_blocking(move || {
        support::fetch_p2p(&edge_url, &key, &cache, &["--p2p-bootstrap", &full, "--quality", "normal"])
    })
    .await
    .unwrap();
    assert!(j["bytes_by_source"]["peer"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["chunks_rejected"], 0);
}

/// A store holding one chunk.
struct One(chorus_core::ChunkId, bytes::Bytes, TrackId);
impl Store for One {
    fn chunk(&self, id: &chorus_core::ChunkId) -> Option<bytes::Bytes> {
        (*id == self.0).then(|| self.1.clone())
    }
    fn held(&self, track: &TrackId) -> Vec<chorus_core::ChunkId> {
        if *track == self.2 { vec![self.0] } else { Vec::new() }
    }
    fn tracks(&self) -> Vec<TrackId> {
        vec![self.2.clone()]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_relay_is_offered_by_the_tracker_and_reaches_a_peer_that_cannot_be_dialled() {
    let net = start();
    let edge = net.start_edge("relay-edge", &["http"], &["--p2p-relay", "/ip4/127.0.0.1/tcp/0"]);
    assert!(!edge.p2p.is_empty(), "the edge's ready file lists its relay");
    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let track = TrackId::parse("tides").unwrap();
    let answer = chorus_peer::tracker::peers(&http, &edge.base("http"), &track, None).await.unwrap();
    assert_eq!(answer.relays.len(), 1, "{answer:?}");
    assert!(answer.relays[0].to_string().starts_with("/ip4/127.0.0.1/tcp/"), "{answer:?}");

    // A listener with no address of its own (as behind a NAT) holding one chunk: it takes the
    // relay from the tracker's answer, reserves a circuit, and announces the circuit address.
    let id = net.manifest("tides").chunks().next().unwrap().id;
    let bytes = bytes::Bytes::from(net.chunk(&id));
    let cfg = PeerConfig { listen: vec![], mdns: false, relay_after: Duration::ZERO, ..PeerConfig::default() };
    let hidden =
        Peer::start(cfg, Arc::new(One(id, bytes.clone(), track.clone())), None, &prometheus::Registry::new()).unwrap();
    hidden.add_relays(answer.relays);
    let circuit = tokio::time::timeout(Duration::from_secs(20), hidden.listen_addrs()).await.expect("no reservation");
    assert!(circuit.iter().all(|a| a.to_string().contains("/p2p-circuit")), "{circuit:?}");
    chorus_peer::tracker::announce(
        &http,
        &edge.base("http"),
        hidden.identity(),
        &circuit,
        &Plan::playing(vec![track.clone()]),
        None,
    )
    .await
    .unwrap();

    // Another listener finds it through the tracker and reaches it through the relay: the
    // circuit carries its have list, not the chunk (chunks wait for a punched direct
    // connection, which a peer with no address cannot give; tests/nat.rs punches one).
    let found = chorus_peer::tracker::peers(&http, &edge.base("http"), &track, None).await.unwrap();
    let (peer_id, addrs) = found.peers[0].clone();
    assert_eq!(peer_id, hidden.peer_id());
    let cfg =
        PeerConfig { listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], mdns: false, ..PeerConfig::default() };
    let seeker = Peer::start(cfg, Arc::new(Empty), None, &prometheus::Registry::new()).unwrap();
    seeker.dial(addrs[0].clone()).await.unwrap();
    assert_eq!(seeker.have(peer_id, track.clone()).await.unwrap(), vec![id]);
    let out = seeker.fetch(peer_id, id).await;
    assert!(matches!(out, Err(chorus_peer::PeerError::RelayedOnly(p)) if p == peer_id), "{out:?}");

    // The relay's connections show on the edge's own /metrics.
    let out = chorus(&["get", &format!("{}/metrics", edge.url("http"))]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(support::metric(&text, "chorus_peer_connections") >= 2.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_next_track_is_preloaded_from_peers_and_then_starts_from_the_cache() {
    let net = start();
    let (_seeder, _) = seed(&net, &net.edges[0], &net.dir.path().join("seed"));
    let key = net.verifying_key();
    let client = chorus_client::ClientBuilder::new(vec![net.edges[0].url("http")], key)
        .p2p(true)
        .p2p_mdns(false)
        .cache(net.dir.path().join("listener"), 1 << 30)
        .quality(chorus_client::abr::Quality::Fixed(0))
        .build()
        .unwrap();
    let track = TrackId::parse("tides").unwrap();
    // Playback planned a minute from now: nothing is due within the edges' 4 s window, so
    // the first 12 s come from the seeder, found through the tracker.
    let pre = client.preload(&track, Duration::from_secs(60), Duration::from_secs(12)).await.unwrap();
    let pre = pre.finish().await.unwrap();
    let manifest = net.manifest("tides");
    let lowest = manifest.renditions.iter().min_by_key(|r| r.bitrate_bps).unwrap();
    let mut at = 0;
    let first: Vec<_> = lowest
        .segments
        .iter()
        .take_while(|seg| {
            let starts = at;
            at += seg.duration_ms;
            starts < 12_000
        })
        .collect();
    let seg_bytes: u64 = first.iter().map(|seg| seg.size).sum();
    let init_bytes = lowest.init.map_or(0, |c| c.size);
    assert_eq!(pre.bytes_by_source.peer, seg_bytes, "{pre:?}");
    assert_eq!(pre.bytes_by_source.edge, init_bytes, "only the init chunk from the edge: {pre:?}");
    assert_eq!(pre.bytes_total, seg_bytes + init_bytes);

    // Played now: those segments come from the local cache, byte for byte the origin's.
    let mut t = client.open(&track).await.unwrap();
    for seg in &first {
        let got = t.next().await.unwrap().unwrap();
        assert_eq!(got.source, chorus_client::Source::Cache);
        assert_eq!(got.data.as_ref(), net.chunk(&seg.id).as_slice());
    }
    t.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_announces_its_forwarded_address_instead_of_the_one_it_listens_on() {
    let net = start();
    // The seeder listens on a port of its own; a TCP relay (a port forward) points at it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let forward = support::tcpproxy::start(([127, 0, 0, 1], port).into(), Duration::ZERO).await;
    let announced = format!("/ip4/127.0.0.1/tcp/{}", forward.addr.port());
    let cache = net.dir.path().join("seed");
    let seeder = Node::start(
        &[
            "peer",
            "--edge",
            &net.edges[0].url("http"),
            "--seed",
            "tides",
            "--origin-key",
            s(&net.key()),
            "--cache-dir",
            s(&cache),
            "--p2p-listen",
            &format!("/ip4/127.0.0.1/tcp/{port}"),
            "--p2p-announce",
            &announced,
            "--no-mdns",
        ],
        0,
    );
    wait_log(&seeder, "announced");
    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let track = TrackId::parse("tides").unwrap();
    let found = chorus_peer::tracker::peers(&http, &net.edges[0].base("http"), &track, None).await.unwrap();
    let (peer_id, addrs) = found.peers[0].clone();
    assert_eq!(addrs, vec![format!("{announced}/p2p/{peer_id}").parse::<chorus_peer::Multiaddr>().unwrap()]);
    let cfg =
        PeerConfig { listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], mdns: false, ..PeerConfig::default() };
    let leech = Peer::start(cfg, Arc::new(Empty), None, &prometheus::Registry::new()).unwrap();
    leech.dial(addrs[0].clone()).await.unwrap();
    let id = net.manifest("tides").chunks().next().unwrap().id;
    assert_eq!(leech.fetch(peer_id, id).await.unwrap().as_ref(), net.chunk(&id).as_slice());
}

/// SIGTERM stops `chorus peer` in the middle of an announce round: an edge that accepts the
/// connection and never answers holds a round for the request timeout (10 s), and the signal
/// must not wait for it.
#[test]
fn a_signal_ends_an_announce_round_in_progress() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let edge = format!("http://{}", silent.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let mut child = std::process::Command::new(support::bin())
        .args(["peer", "--edge", &edge, "--cache-dir", s(&dir.path().join("cache")), "--no-mdns"])
        .args(["--p2p-listen", "/ip4/127.0.0.1/tcp/0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The announce is under way once its connection is accepted; held open, never answered.
    let (_held, _) = silent.accept().unwrap();
    let signalled = Instant::now();
    let _ = rustix::process::kill_process(rustix::process::Pid::from_child(&child), rustix::process::Signal::TERM);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(signalled.elapsed() < Duration::from_secs(60), "chorus peer did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    // It stopped on the signal, not once the unanswered request had timed out (after 10 s the
    // round would have logged its failure first).
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("announce failed"), "the round ran to its timeout before stopping: {text}");
}

/// POSTs a signed announce of a fresh peer id at `/ip4/{from}/tcp/{port}` for "tides" to the
/// edge at `edge` (`host:port`), from the local address `from`; returns the status.
async fn announce_from(edge: &str, from: std::net::Ipv4Addr, port: u16) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let key = chorus_peer::identity::Keypair::generate_ed25519();
    let a = chorus_core::api::Announce {
        peer_id: key.public().to_peer_id().to_base58(),
        addrs: vec![format!("/ip4/{from}/tcp/{port}")],
        tracks: vec![TrackId::parse("tides").unwrap()],
        held: Vec::new(),
        dropped: Vec::new(),
        timestamp: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
        edge: edge.to_owned(),
    };
    let body = serde_json::to_vec(&chorus_core::announce::SignedAnnounce::sign(&key, &a).unwrap()).unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    let mut s = socket.connect(edge.parse().unwrap()).await.unwrap();
    let head = format!(
        "POST /v1/peers/announce HTTP/1.1\r\nhost: {edge}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0)
}

/// One source network (127.1.0.0/24, 250 addresses) announces 1,000 fake peers for a track: the
/// tracker keeps 4 of them, the real seeder stays listed, and a new listener finds it and gets
/// bytes from it; the output is byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_fake_peers_from_one_network_do_not_hide_the_real_seeder() {
    let net = start();
    let (dir, edge, key) = (&net.dir, &net.edges[0], net.key());
    let (_seeder, _) = seed(&net, edge, &dir.path().join("seed"));
    let m = net.manifest("tides");
    let expected = net.bytes_of(&m.renditions[1]);

    let target = edge.addr("http");
    let mut statuses = std::collections::HashMap::new();
    for n in 0..1000u16 {
        let from = std::net::Ipv4Addr::new(127, 1, 0, u8::try_from(n % 250 + 1).unwrap());
        *statuses.entry(announce_from(&target, from, 10_000 + n).await).or_insert(0) += 1;
    }
    // Each of the 250 addresses has its burst of 10; some of the 1000 got through.
    assert!(statuses.get(&200).copied().unwrap_or(0) >= 250, "{statuses:?}");

    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let track = TrackId::parse("tides").unwrap();
    let listed = chorus_peer::tracker::peers(&http, &edge.base("http"), &track, None).await.unwrap();
    let fakes =
        listed.peers.iter().filter(|(_, a)| a.iter().any(|a| a.to_string().starts_with("/ip4/127.1.0."))).count();
    assert!(fakes <= 4, "{listed:?}");
    assert!(
        listed.peers.iter().any(|(_, a)| a.iter().any(|a| a.to_string().starts_with("/ip4/127.0.0.1/"))),
        "{listed:?}"
    );

    let out_file = dir.path().join("out.mp4");
    let j = fetch_p2p(&edge.url("http"), &key, &dir.path().join("listener"), &out_file);
    let (peer, edge_bytes) =
        (j["bytes_by_source"]["peer"].as_u64().unwrap(), j["bytes_by_source"]["edge"].as_u64().unwrap());
    // Most bytes from the seeder: the edge serves the start, peers what is not urgent.
    assert!(peer > edge_bytes, "after the flood: {peer} bytes from peers, {edge_bytes} from the edge: {j}");
    assert_eq!(j["chunks_rejected"], 0);
    assert_eq!(std::fs::read(&out_file).unwrap(), expected);
}

/// The only peer listed for a track never finishes an answer: each request to it is cut off at
/// the deadline, the segments come from the edge, and the play completes byte-identical with
/// nothing rejected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_finishes_an_answer_costs_a_deadline_not_the_play() {
    let net = start();
    let (dir, edge, key) = (&net.dir, &net.edges[0], net.key());
    let m = net.manifest("tides");
    let expected = net.bytes_of(&m.renditions[1]);
    let _over = StallOver;
    let stuck = Peer::start(
        PeerConfig { listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], mdns: false, ..PeerConfig::default() },
        Arc::new(Hostile { ids: m.chunks().map(|c| c.id).collect(), answer: stall }),
        None,
        &prometheus::Registry::new(),
    )
    .unwrap();
    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let track = TrackId::parse("tides").unwrap();
    let addrs = stuck.listen_addrs().await;
    chorus_peer::tracker::announce(
        &http,
        &edge.base("http"),
        stuck.identity(),
        &addrs,
        &Plan::playing(vec![track]),
        None,
    )
    .await
    .unwrap();

    let out_file = dir.path().join("out.mp4");
    let (edge_url, cache, key, out) = (edge.url("http"), dir.path().join("listener"), key.clone(), out_file.clone());
    let j = tokio::task::spawn_blocking(move || fetch_p2p(&edge_url, &key, &cache, &out)).await.unwrap();
    assert_eq!(j["bytes_by_source"]["peer"], 0, "{j}");
    assert_eq!(j["chunks_rejected"], 0, "{j}");
    assert_eq!(std::fs::read(&out_file).unwrap(), expected);
}

/// A listener's whole cache seeds (docs/peer.md "A whole cache seeds"): `chorus peer` over a
/// cache of more tracks than one announce may name is listed for every one of them, the last
/// as well as the first, in two rounds; the tracker's entries count exactly the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_larger_than_one_announce_is_listed_whole() {
    const TRACKS: usize = 260;
    let names: Vec<String> = (0..TRACKS).map(|n| format!("c{n:03}")).collect();
    let net = support::net::Net::builder()
        .ingest(|_, store| {
            for n in &names {
                support::ingest_sample(store, n, "chorus-tides");
            }
        })
        .edges(1, &["http"], &[])
        .start();
    let edge = &net.edges[0];
    // The edge holds every manifest already, as it does once listeners have played them.
    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let base = edge.base("http");
    for n in &names {
        let mut conn = http.connect(&base, false).await.unwrap();
        let path = chorus_core::route::manifest(&TrackId::parse(n).unwrap());
        let req = http::Request::get(path.as_str()).body(bytes::Bytes::new()).unwrap();
        assert_eq!(conn.send(req).await.unwrap().status(), 200, "{n}");
    }
    // The listener's cache: the origin's chunks and manifests (the same layout).
    let cache = net.dir.path().join("listener");
    std::fs::create_dir_all(&cache).unwrap();
    for sub in ["chunks", "manifests"] {
        let out = std::process::Command::new("cp")
            .args(["-r", s(&net.store.join(sub)), s(&cache.join(sub))])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let url = edge.url("http");
    let peer = Node::start(
        &["peer", "--edge", &url, "--cache-dir", s(&cache), "--p2p-listen", "/ip4/127.0.0.1/tcp/0", "--no-mdns"],
        0,
    );
    let id = peer.p2p[0].rsplit("/p2p/").next().unwrap().to_owned();
    // Listed for all 260: the first round named 256, the next (5 s later) the other 4.
    let metrics = format!("{}/metrics", edge.url("http"));
    let all = "the tracker lists an entry for each of the 260 tracks";
    support::eventually(all, Duration::from_secs(120), Duration::from_millis(500), async || {
        let text = String::from_utf8_lossy(&chorus(&["get", &metrics]).stdout).into_owned();
        support::metric(&text, "chorus_tracker_peers") == TRACKS as f64
    })
    .await;
    for n in [&names[0], &names[TRACKS / 2], &names[TRACKS - 1]] {
        let found = chorus_peer::tracker::peers(&http, &base, &TrackId::parse(n).unwrap(), None).await.unwrap();
        let ids: Vec<String> = found.peers.iter().map(|(p, _)| p.to_string()).collect();
        assert_eq!(ids, std::slice::from_ref(&id), "{n}");
    }
    // The log says so: 256 held tracks in the first announce, the other 4 in the next.
    wait_log(&peer, r#""held":4,"#);
    wait_log(&peer, r#""held":256,"#);
}
