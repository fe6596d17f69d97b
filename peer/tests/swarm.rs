//! Real libp2p nodes on loopback, in one process: the chunk and have protocols over TCP and
//! QUIC, a lying peer banned, upload limits, Kademlia providers.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chorus_core::error::Chain;
use chorus_core::{ChunkId, TrackId};
use chorus_peer::wire::Status;
use chorus_peer::{MemoryLimit, Multiaddr, Peer, PeerConfig, PeerError, Store};
use prometheus::Registry;

/// An in-memory store; `lie` makes it serve other bytes under every id.
#[derive(Default)]
struct Mem {
    chunks: Mutex<HashMap<ChunkId, Bytes>>,
    tracks: Mutex<HashMap<TrackId, Vec<ChunkId>>>,
    lie: bool,
}

impl Mem {
    fn with_track(track: &str, n: usize, lie: bool) -> (Arc<Self>, Vec<(ChunkId, Bytes)>) {
        let m = Self { lie, ..Self::default() };
        let chunks: Vec<(ChunkId, Bytes)> = (0..n)
            .map(|i| {
                let b = Bytes::from(format!("{track} chunk {i} ").repeat(1000));
                (ChunkId::of(&b), b)
            })
            .collect();
        for (id, b) in &chunks {
            m.chunks.lock().unwrap().insert(*id, b.clone());
        }
        m.tracks.lock().unwrap().insert(TrackId::parse(track).unwrap(), chunks.iter().map(|c| c.0).collect());
        (Arc::new(m), chunks)
    }
}

impl Store for Mem {
    fn chunk(&self, id: &ChunkId) -> Option<Bytes> {
        let b = self.chunks.lock().unwrap().get(id).cloned()?;
        Some(if self.lie { Bytes::from(vec![0u8; b.len()]) } else { b })
    }
    fn held(&self, track: &TrackId) -> Vec<ChunkId> {
        self.tracks.lock().unwrap().get(track).cloned().unwrap_or_default()
    }
    fn tracks(&self) -> Vec<TrackId> {
        self.tracks.lock().unwrap().keys().cloned().collect()
    }
}

fn cfg(listen: &str) -> PeerConfig {
    PeerConfig { listen: vec![listen.parse().unwrap()], mdns: false, ..PeerConfig::default() }
}

fn start(c: PeerConfig, store: Arc<dyn Store>) -> (Peer, Registry) {
    let registry = Registry::new();
    let p = Peer::start(c, store, None, &registry).unwrap();
    (p, registry)
}

fn metric(registry: &Registry, name: &str) -> f64 {
    let text = prometheus::TextEncoder::new().encode_to_string(&registry.gather()).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')).and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

async fn addr_of(p: &Peer, transport: &str) -> Multiaddr {
    p.listen_addrs().await.into_iter().find(|a| a.to_string().contains(transport)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_and_have_lists_over_tcp_and_quic_verified() {
    let (seed_store, chunks) = Mem::with_track("tides", 5, false);
    let (seed, seed_metrics) = start(cfg("/ip4/127.0.0.1/tcp/0"), seed_store);
    let track = TrackId::parse("tides").unwrap();
    for transport in ["/tcp/", "/quic-v1"] {
        let listen = if transport == "/tcp/" { "/ip4/127.0.0.1/tcp/0" } else { "/ip4/127.0.0.1/udp/0/quic-v1" };
        let (seed_q, _) = if transport == "/tcp/" {
            (None, ())
        } else {
            let (store, _) = Mem::with_track("tides", 5, false);
            (Some(start(cfg(listen), store).0), ())
        };
        let target = seed_q.as_ref().unwrap_or(&seed);
        let (leech, leech_metrics) = start(cfg(listen), Arc::new(Mem::default()));
        leech.dial(addr_of(target, transport).await).await.unwrap();
        let held = leech.have(target.peer_id(), track.clone()).await.unwrap();
        assert_eq!(held, chunks.iter().map(|c| c.0).collect::<Vec<_>>());
        for (id, bytes) in &chunks {
            let got = leech.fetch(target.peer_id(), *id).await.unwrap();
            assert_eq!(&got, bytes, "{transport}");
        }
        let unknown = ChunkId::of(b"nobody has this");
        assert!(matches!(leech.fetch(target.peer_id(), unknown).await, Err(PeerError::Refused(Status::NotFound))));
        let total: usize = chunks.iter().map(|c| c.1.len()).sum();
        assert_eq!(metric(&leech_metrics, "chorus_peer_received_bytes_total"), total as f64);
        if transport == "/tcp/" {
            // The sender counts a response once it is written.
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while metric(&seed_metrics, "chorus_peer_sent_bytes_total") < total as f64 {
                assert!(std::time::Instant::now() < deadline);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert_eq!(metric(&seed_metrics, "chorus_peer_sent_bytes_total"), total as f64);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_sends_wrong_bytes_is_caught_banned_and_never_asked_again() {
    let (liar_store, chunks) = Mem::with_track("tides", 2, true);
    let (liar, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), liar_store);
    let (leech, metrics) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    leech.dial(addr_of(&liar, "/tcp/").await).await.unwrap();
    let first = leech.fetch(liar.peer_id(), chunks[0].0).await;
    assert!(matches!(first, Err(PeerError::WrongChunk(p)) if p == liar.peer_id()), "{first:?}");
    assert_eq!(metric(&metrics, "chorus_peer_rejected_chunks_total"), 1.0);
    // Banned: no request goes out, and the connection is gone.
    assert!(matches!(leech.fetch(liar.peer_id(), chunks[1].0).await, Err(PeerError::Banned(_))));
    assert!(matches!(leech.have(liar.peer_id(), TrackId::parse("tides").unwrap()).await, Err(PeerError::Banned(_))));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while leech.connected().await.unwrap().contains(&liar.peer_id()) {
        assert!(std::time::Instant::now() < deadline, "still connected to a banned peer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_limits_answer_busy() {
    let (store, chunks) = Mem::with_track("tides", 3, false);
    let track_bytes = chunks[0].1.len() as u64;
    // A cap of one chunk per second: the first request is served, the next at once is BUSY.
    let capped = PeerConfig { upload_rate: Some(track_bytes), ..cfg("/ip4/127.0.0.1/tcp/0") };
    let (seed, seed_metrics) = start(capped, store.clone());
    let store_again: Arc<dyn Store> = store.clone();
    let (metered, _) = start(PeerConfig { consume_only: true, ..cfg("/ip4/127.0.0.1/tcp/0") }, store);
    let (leech, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    leech.dial(addr_of(&seed, "/tcp/").await).await.unwrap();
    leech.dial(addr_of(&metered, "/tcp/").await).await.unwrap();
    assert!(leech.fetch(seed.peer_id(), chunks[0].0).await.is_ok());
    assert!(matches!(leech.fetch(seed.peer_id(), chunks[1].0).await, Err(PeerError::Refused(Status::Busy))));
    assert_eq!(metric(&seed_metrics, "chorus_peer_busy_total"), 1.0);
    // Consume-only serves nothing, but still fetches.
    assert!(matches!(leech.fetch(metered.peer_id(), chunks[0].0).await, Err(PeerError::Refused(Status::Busy))));
    // (The bucket's refill is policy, tested on a virtual clock in `upload.rs`.)
    let (free, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), store_again);
    metered.dial(addr_of(&free, "/tcp/").await).await.unwrap();
    assert!(metered.fetch(free.peer_id(), chunks[2].0).await.is_ok());
}

/// A store whose chunk reads block until the test lets them go (a disk that hangs).
struct Stuck {
    inner: Arc<Mem>,
    release: Mutex<std::sync::mpsc::Receiver<()>>,
    reading: tokio::sync::Notify,
}

impl Store for Stuck {
    fn chunk(&self, id: &ChunkId) -> Option<Bytes> {
        self.reading.notify_one();
        let _ = self.release.lock().unwrap().recv();
        self.inner.chunk(id)
    }
    fn held(&self, track: &TrackId) -> Vec<ChunkId> {
        self.inner.held(track)
    }
    fn tracks(&self) -> Vec<TrackId> {
        self.inner.tracks()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_disk_read_stalls_no_other_request() {
    let (mem, chunks) = Mem::with_track("tides", 2, false);
    let (release, wait) = std::sync::mpsc::channel();
    let store = Arc::new(Stuck { inner: mem, release: Mutex::new(wait), reading: tokio::sync::Notify::new() });
    let (seed, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), store.clone());
    let (leech, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    leech.dial(addr_of(&seed, "/tcp/").await).await.unwrap();
    let (leech, seed_id) = (Arc::new(leech), seed.peer_id());
    let (l, first) = (leech.clone(), chunks[0].0);
    let fetch = tokio::spawn(async move { l.fetch(seed_id, first).await });
    store.reading.notified().await; // the seed's read of the chunk has begun, and hangs
    // Meanwhile the seed answers a have request on the same connection and a new dial.
    let have = leech.have(seed_id, TrackId::parse("tides").unwrap());
    // Generous: the answer needs no disk, only a swarm task that is not stuck.
    let held = tokio::time::timeout(Duration::from_secs(30), have).await.expect("the seed's swarm is stuck").unwrap();
    assert_eq!(held.len(), 2);
    let (other, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    other.dial(addr_of(&seed, "/tcp/").await).await.unwrap();
    assert!(!fetch.is_finished(), "the chunk read is still stuck");
    release.send(()).unwrap();
    assert_eq!(fetch.await.unwrap().unwrap(), chunks[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kademlia_finds_the_providers_of_a_track() {
    // A bootstrap node, a provider and a seeker that knows only the bootstrap node.
    let (boot, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    let boot_addr = addr_of(&boot, "/tcp/").await;
    let with_boot = |listen| PeerConfig { bootstrap: vec![boot_addr.clone()], ..cfg(listen) };
    let (store, _) = Mem::with_track("tides", 1, false);
    let (provider, _) = start(with_boot("/ip4/127.0.0.1/tcp/0"), store);
    provider.dial(boot_addr.clone()).await.unwrap();
    let track = TrackId::parse("tides").unwrap();
    provider.provide(track.clone());
    let (seeker, _) = start(with_boot("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    seeker.dial(boot_addr).await.unwrap();
    // Found with the addresses the search learned for it (the provider record can name the
    // provider before the seeker's routing table holds any), each ending in its id: a dial of
    // the first, then a have, succeed without any other introduction.
    let addrs = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let found = seeker.find_providers(track.clone()).await.unwrap();
            if let Some((_, addrs)) = found.into_iter().find(|(p, _)| *p == provider.peer_id()) {
                break addrs;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("provider not found within 20 s");
    let first = addrs.first().expect("the provider comes with an address").clone();
    assert_eq!(first.iter().last(), Some(chorus_core::p2p::multiaddr::Protocol::P2p(provider.peer_id())), "{addrs:?}");
    seeker.dial(first).await.unwrap();
    let held = seeker.have(provider.peer_id(), track.clone()).await.unwrap();
    assert_eq!(held.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_on_one_machine_find_each_other_with_mdns() {
    let (store, chunks) = Mem::with_track("tides", 1, false);
    let mdns = |listen| PeerConfig { mdns: true, ..cfg(listen) };
    let (a, _) = start(mdns("/ip4/0.0.0.0/tcp/0"), store);
    let (b, _) = start(mdns("/ip4/0.0.0.0/tcp/0"), Arc::new(Mem::default()));
    tokio::time::timeout(Duration::from_secs(30), b.wait_discovered(a.peer_id()))
        .await
        .expect("mDNS found nothing in 30 s");
    // Found, so reachable with no address given.
    assert_eq!(b.fetch(a.peer_id(), chunks[0].0).await.unwrap(), chunks[0].1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_cannot_be_dialled_is_reached_through_a_relay_for_its_have_list_not_chunks() {
    // The relay (a node with a public address), a peer that listens only through it (as one
    // behind a NAT would), and a third that reaches that peer by a circuit address. The circuit
    // carries the have list; chunks wait for a direct connection (hole punching, which this
    // peer with no listen address cannot offer), then fail: they do not cross the relay.
    let (relay, _) = start(PeerConfig { relay_server: true, ..cfg("/ip4/127.0.0.1/tcp/0") }, Arc::new(Mem::default()));
    let relay_addr = addr_of(&relay, "/tcp/").await;
    let circuit: Multiaddr = format!("{relay_addr}/p2p-circuit").parse().unwrap();
    let (store, chunks) = Mem::with_track("tides", 1, false);
    let hidden_cfg = PeerConfig { listen: vec![], ..cfg("/ip4/127.0.0.1/tcp/0") };
    let (hidden, _) = start(hidden_cfg, store);
    hidden.dial(relay_addr.clone()).await.unwrap();
    hidden.listen_on(circuit.clone()).await.unwrap();
    let (seeker, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    let via: Multiaddr = format!("{circuit}/p2p/{}", hidden.peer_id()).parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seeker.dial(via.clone()).await.is_err() {
        assert!(std::time::Instant::now() < deadline, "no circuit to the hidden peer");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let held = seeker.have(hidden.peer_id(), TrackId::parse("tides").unwrap()).await.unwrap();
    assert_eq!(held, vec![chunks[0].0]);
    let out = seeker.fetch(hidden.peer_id(), chunks[0].0).await;
    assert!(matches!(out, Err(PeerError::RelayedOnly(p)) if p == hidden.peer_id()), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_over_its_memory_limit_opens_and_accepts_no_connections() {
    let (store, chunks) = Mem::with_track("tides", 1, false);
    let full_cfg = PeerConfig { memory_limit: MemoryLimit::Bytes(1), ..cfg("/ip4/127.0.0.1/tcp/0") };
    let (full, _) = start(full_cfg, store);
    let (other, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    let out = full.dial(addr_of(&other, "/tcp/").await).await;
    assert!(matches!(out, Err(ref e @ PeerError::Dial { .. }) if Chain(e).to_string().contains("memory")), "{out:?}");
    // Inbound: the connection is refused, so nothing can be fetched from the node.
    let _ = other.dial(addr_of(&full, "/tcp/").await).await;
    assert!(other.fetch(full.peer_id(), chunks[0].0).await.is_err());
    assert!(full.connected().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_is_not_reachable_reserves_a_relay_circuit_by_itself() {
    // AutoNAT cannot decide on loopback (it uses no private-address probes), so the node
    // reserves once `relay_after` has passed without a public address.
    let (relay, _) = start(PeerConfig { relay_server: true, ..cfg("/ip4/127.0.0.1/tcp/0") }, Arc::new(Mem::default()));
    let relay_addr = addr_of(&relay, "/tcp/").await;
    let (store, chunks) = Mem::with_track("tides", 1, false);
    let hidden_cfg = PeerConfig { listen: vec![], relay_after: Duration::ZERO, ..cfg("/ip4/127.0.0.1/tcp/0") };
    let (hidden, _) = start(hidden_cfg, store);
    hidden.add_relays(vec![relay_addr.clone()]);
    let circuit = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let addrs = hidden.listen_addrs().await;
            if let Some(a) = addrs.into_iter().find(|a| a.to_string().contains("/p2p-circuit")) {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("no relay reservation");
    assert!(circuit.to_string().starts_with(&format!("{relay_addr}/p2p-circuit")), "{circuit}");
    let (seeker, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    assert!(circuit.to_string().ends_with(&format!("/p2p-circuit/p2p/{}", hidden.peer_id())), "{circuit}");
    seeker.dial(circuit).await.unwrap();
    let held = seeker.have(hidden.peer_id(), TrackId::parse("tides").unwrap()).await.unwrap();
    assert_eq!(held, vec![chunks[0].0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_for_a_node_ends_when_its_handle_is_dropped() {
    let (p, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    let stopped = p.stopped();
    let waiting = tokio::spawn(stopped);
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    drop(p);
    tokio::time::timeout(Duration::from_secs(30), waiting).await.expect("stopped() completes on drop").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_listed_for_another_peer_says_who_answered() {
    let (a, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    let (b, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    let listed = chorus_peer::identity::Keypair::generate_ed25519().public().to_peer_id();
    let at_b = addr_of(&b, "/tcp/").await;
    // b's address with another peer id at its end, as a false tracker entry would list it.
    let mut false_entry: Multiaddr =
        at_b.iter().filter(|p| !matches!(p, chorus_peer::multiaddr::Protocol::P2p(_))).collect();
    false_entry.push(chorus_peer::multiaddr::Protocol::P2p(listed));
    match a.dial(false_entry).await {
        Err(PeerError::WrongPeer { listed: l, obtained }) => {
            assert_eq!(l, listed);
            assert_eq!(*obtained, b.peer_id());
        }
        other => panic!("{other:?}"),
    }
}

/// 500 connections from one hostile address that never finish a handshake: the node keeps at
/// most a few of them open, closes the rest at once, and goes on serving another peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_from_one_address_leaves_the_node_serving_others() {
    let (store, chunks) = Mem::with_track("tides", 1, false);
    let (seeder, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), store);
    let at = addr_of(&seeder, "/tcp/").await;
    let port = at
        .iter()
        .find_map(|p| match p {
            chorus_peer::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    let target = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut flood = Vec::new();
    for _ in 0..500 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(s) = socket.connect(target).await {
            flood.push(s);
        }
    }
    assert!(flood.len() > 400, "the kernel took the connections: {}", flood.len());
    // An honest peer elsewhere (127.0.0.1) is served meanwhile, verified.
    let (honest, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    // (Its own side may fail to bind the dial's source port while the flood's 500 sockets are
    // open, EADDRINUSE, which is about this machine, not the node under test: dial again, within
    // a generous deadline rather than a fixed number of tries, which a loaded CI machine used up.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut dialled = honest.dial(at.clone()).await;
    while dialled.is_err() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        dialled = honest.dial(at.clone()).await;
    }
    dialled.unwrap();
    assert_eq!(honest.fetch(seeder.peer_id(), chunks[0].0).await.unwrap(), chunks[0].1);
    // Of the flood, all but a handful were closed by the node at once (the handful stay in their
    // handshake until its timeout). Without the per-address bound, 64 would hold every
    // handshake slot, and the honest peer's connection above would have been refused.
    let reads: Vec<_> = flood
        .into_iter()
        .map(|mut s| {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                let read =
                    tokio::time::timeout(Duration::from_secs(1), tokio::io::AsyncReadExt::read(&mut s, &mut buf));
                !matches!(read.await, Ok(Ok(0) | Err(_)))
            })
        })
        .collect();
    let total = reads.len();
    let mut held = 0;
    for r in reads {
        held += usize::from(r.await.unwrap());
    }
    assert!(held <= chorus_peer::ip_limit::MAX_PENDING_PER_IP as usize, "{held} of {total} held open");
}

/// A hostile peer's chunk codec: it answers OK with the length of a whole chunk, then drips
/// the bytes one every 100 ms (a response that, at this rate, takes hours).
#[derive(Clone, Copy, Default)]
struct DripCodec;

impl libp2p::request_response::Codec for DripCodec {
    type Protocol = libp2p::StreamProtocol;
    type Request = chorus_peer::wire::ChunkRequest;
    type Response = chorus_peer::wire::ChunkResponse;

    async fn read_request<T: futures_util::AsyncRead + Unpin + Send>(
        &mut self,
        p: &Self::Protocol,
        io: &mut T,
    ) -> std::io::Result<Self::Request> {
        chorus_peer::wire::ChunkCodec.read_request(p, io).await
    }

    async fn read_response<T: futures_util::AsyncRead + Unpin + Send>(
        &mut self,
        p: &Self::Protocol,
        io: &mut T,
    ) -> std::io::Result<Self::Response> {
        chorus_peer::wire::ChunkCodec.read_response(p, io).await
    }

    async fn write_request<T: futures_util::AsyncWrite + Unpin + Send>(
        &mut self,
        p: &Self::Protocol,
        io: &mut T,
        req: Self::Request,
    ) -> std::io::Result<()> {
        chorus_peer::wire::ChunkCodec.write_request(p, io, req).await
    }

    async fn write_response<T: futures_util::AsyncWrite + Unpin + Send>(
        &mut self,
        _: &Self::Protocol,
        io: &mut T,
        res: Self::Response,
    ) -> std::io::Result<()> {
        use futures_util::AsyncWriteExt as _;
        let chorus_peer::wire::ChunkResponse::Ok(bytes) = res else { return Ok(()) };
        io.write_all(&[Status::Ok as u8]).await?;
        let mut len = unsigned_varint::encode::usize_buffer();
        io.write_all(unsigned_varint::encode::usize(bytes.len(), &mut len)).await?;
        for b in bytes.iter() {
            io.write_all(&[*b]).await?;
            io.flush().await?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

/// A peer that drips its response is cut off by the request deadline, and nothing it sent is
/// taken; the node stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_drips_its_response_is_cut_off_at_the_deadline() {
    use futures_util::StreamExt as _;
    use libp2p::request_response::{self, ProtocolSupport};
    let (_, chunks) = Mem::with_track("tides", 1, false);
    let (id, bytes) = chunks[0].clone();
    let mut hostile = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                DripCodec,
                [(chorus_peer::wire::CHUNK_PROTOCOL, ProtocolSupport::Inbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(3600)),
            )
        })
        .unwrap()
        .build();
    hostile.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let hostile_id = *hostile.local_peer_id();
    let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut addr_tx = Some(addr_tx);
        loop {
            match hostile.select_next_some().await {
                libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } => {
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(address);
                    }
                }
                libp2p::swarm::SwarmEvent::Behaviour(request_response::Event::Message {
                    message: request_response::Message::Request { channel, .. },
                    ..
                }) => {
                    let _ = hostile
                        .behaviour_mut()
                        .send_response(channel, chorus_peer::wire::ChunkResponse::Ok(bytes.clone()));
                }
                _ => {}
            }
        }
    });
    let at = addr_rx.await.unwrap().with_p2p(hostile_id).unwrap();
    let c = PeerConfig { request_timeout: Duration::from_secs(2), ..cfg("/ip4/127.0.0.1/tcp/0") };
    let (asker, _) = start(c, Arc::new(Mem::default()));
    asker.dial(at).await.unwrap();
    // The 2 s deadline cuts the response off: within a generous minute, not the hours the drip
    // would take.
    let out = tokio::time::timeout(Duration::from_secs(60), asker.fetch(hostile_id, id)).await;
    let out = out.expect("the fetch ends (the deadline cut the response off)");
    assert!(matches!(out, Err(PeerError::Request(_))), "{out:?}");
    assert!(asker.connected().await.is_ok(), "the node still answers");
}

/// Waits, with a generous deadline, until `cond` holds.
async fn wait_until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !cond().await {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Ten strangers with fresh peer ids connect to a node whose connection cap is 8: they get at
/// most its inbound share (6), the rest is refused, and the node still dials an honest peer and
/// fetches from it. (Before, the 8 connections of strangers took every slot.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_filling_inbound_cannot_stop_the_node_dialling_an_honest_peer() {
    let small = PeerConfig { max_connections: 8, ..cfg("/ip4/127.0.0.1/tcp/0") };
    assert_eq!(small.inbound_limit(), 6);
    let (node, node_metrics) = start(small, Arc::new(Mem::default()));
    let at = addr_of(&node, "/tcp/").await;
    let mut strangers = Vec::new();
    for _ in 0..10 {
        let (s, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
        let _ = s.dial(at.clone()).await; // refused ones may see the connection open, then close
        strangers.push(s);
    }
    wait_until("inbound is full and the rest refused", async || {
        metric(&node_metrics, "chorus_peer_inbound_connections") == 6.0
            && metric(&node_metrics, "chorus_peer_inbound_refused_total") >= 4.0
    })
    .await;
    let (store, chunks) = Mem::with_track("tides", 1, false);
    let (honest, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), store);
    node.dial(addr_of(&honest, "/tcp/").await).await.unwrap();
    assert_eq!(node.fetch(honest.peer_id(), chunks[0].0).await.unwrap(), chunks[0].1);
    assert!(metric(&node_metrics, "chorus_peer_inbound_connections") <= 6.0);
}

#[derive(libp2p::swarm::NetworkBehaviour)]
struct Reporter {
    identify: libp2p::identify::Behaviour,
    kad: libp2p::kad::Behaviour<libp2p::kad::store::MemoryStore>,
}

/// A peer that reports third parties' addresses through identify (a cloud metadata address, a
/// host on another IP that the test listens on): only its own address, on the IP it speaks
/// from, enters the node's Kademlia table, and the third parties are never dialled, not even
/// when the node later dials that peer by its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_a_peer_reports_for_third_parties_stay_out_of_kademlia_and_are_never_dialled() {
    use futures_util::{FutureExt as _, StreamExt as _};
    let (node, node_metrics) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    let node_at = addr_of(&node, "/tcp/").await;
    let trap = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let trap_at: Multiaddr = format!("/ip4/127.0.0.2/tcp/{}", trap.local_addr().unwrap().port()).parse().unwrap();
    let metadata: Multiaddr = "/ip4/169.254.169.254/tcp/80".parse().unwrap();
    let mut reporter = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .unwrap()
        .with_behaviour(|key| {
            let id = key.public().to_peer_id();
            let kad_cfg = libp2p::kad::Config::new(chorus_peer::node::KAD_PROTOCOL);
            let mut kad = libp2p::kad::Behaviour::with_config(id, libp2p::kad::store::MemoryStore::new(id), kad_cfg);
            kad.set_mode(Some(libp2p::kad::Mode::Server));
            let identify =
                libp2p::identify::Behaviour::new(libp2p::identify::Config::new("/chorus/1.0.0".into(), key.public()));
            Reporter { identify, kad }
        })
        .unwrap()
        .build();
    reporter.listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap()).unwrap();
    let reporter_id = *reporter.local_peer_id();
    let (own_tx, own_rx) = tokio::sync::oneshot::channel();
    let (third_parties, dial) = ([metadata.clone(), trap_at.clone()], node_at.clone());
    let task = tokio::spawn(async move {
        let mut own_tx = Some(own_tx);
        loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } = reporter.select_next_some().await
                && let Some(tx) = own_tx.take()
            {
                for a in third_parties.iter().chain([&address]) {
                    reporter.add_external_address(a.clone());
                }
                reporter.dial(dial.clone()).unwrap();
                let _ = tx.send(address);
            }
        }
    });
    let own = own_rx.await.unwrap();
    wait_until("the reporter's identify was received", async || {
        !node.routing_addrs(reporter_id).await.unwrap().is_empty()
    })
    .await;
    let known: Vec<Multiaddr> =
        node.routing_addrs(reporter_id).await.unwrap().iter().map(chorus_peer::dial_guard::key).collect();
    assert_eq!(known, vec![own], "only its own address");
    assert!(metric(&node_metrics, "chorus_peer_learned_addrs_refused_total") >= 2.0);
    // The reporter goes away; a fetch from it makes the node dial it by id, with the addresses
    // it knows: the reporter's own (now closed), never the third parties.
    task.abort();
    wait_until("the reporter is gone", async || !node.connected().await.unwrap().contains(&reporter_id)).await;
    let out = node.fetch(reporter_id, ChunkId::of(b"anything")).await;
    assert!(matches!(out, Err(PeerError::Request(_))), "{out:?}");
    assert!(trap.accept().now_or_never().is_none(), "the node dialled a third party's address");
    assert!(metric(&node_metrics, "chorus_peer_dials_total") >= 1.0, "the dial by id did go out");
}

/// A store whose reads of some chunks, and have lists of some tracks, block until released.
struct Gate {
    inner: Arc<Mem>,
    slow: std::collections::HashSet<ChunkId>,
    slow_track: TrackId,
    open: Mutex<bool>,
    opened: std::sync::Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock().unwrap();
        while !*open {
            open = self.opened.wait(open).unwrap();
        }
    }
    fn release(&self) {
        *self.open.lock().unwrap() = true;
        self.opened.notify_all();
    }
}

impl Store for Gate {
    fn chunk(&self, id: &ChunkId) -> Option<Bytes> {
        if self.slow.contains(id) {
            self.wait();
        }
        self.inner.chunk(id)
    }
    fn held(&self, track: &TrackId) -> Vec<ChunkId> {
        if *track == self.slow_track {
            self.wait();
        }
        self.inner.held(track)
    }
    fn tracks(&self) -> Vec<TrackId> {
        self.inner.tracks()
    }
}

/// One peer fires 10 chunk requests and a have request at once, at a node with 4 upload slots:
/// it gets its share (2 requests in progress), the rest is BUSY, and a second peer is served
/// chunks and have lists meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_hammering_requests_cannot_take_the_upload_slots_from_another() {
    let (mem, chunks) = Mem::with_track("tides", 12, false);
    let slow: std::collections::HashSet<ChunkId> = chunks[..10].iter().map(|c| c.0).collect();
    let slow_track = TrackId::parse("sunrise").unwrap();
    mem.tracks.lock().unwrap().insert(slow_track.clone(), vec![chunks[0].0]);
    let gate = Arc::new(Gate {
        inner: mem,
        slow,
        slow_track: slow_track.clone(),
        open: Mutex::new(false),
        opened: Default::default(),
    });
    // A deadline far beyond the test: the held requests must not time out on a busy machine.
    let patient = |listen: &str| PeerConfig { request_timeout: Duration::from_secs(600), ..cfg(listen) };
    let (seed, seed_metrics) = start(patient("/ip4/127.0.0.1/tcp/0"), gate.clone());
    let at = addr_of(&seed, "/tcp/").await;
    let (greedy, _) = start(patient("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    greedy.dial(at.clone()).await.unwrap();
    let greedy = Arc::new(greedy);
    let seed_id = seed.peer_id();
    let mut hammering = Vec::new();
    for (id, _) in &chunks[..10] {
        let (g, id) = (greedy.clone(), *id);
        hammering.push(tokio::spawn(async move { g.fetch(seed_id, id).await }));
    }
    // Two requests hold the greedy peer's share (their reads hang); the other eight are BUSY.
    wait_until("eight of the greedy peer's requests are answered", async || {
        hammering.iter().filter(|h| h.is_finished()).count() >= 8
    })
    .await;
    // (The two others cannot finish: their reads hang until the gate opens.)
    assert_eq!(hammering.iter().filter(|h| h.is_finished()).count(), 8, "exactly its share is in progress");
    assert_eq!(metric(&seed_metrics, "chorus_peer_share_busy_total"), 8.0);
    let have = greedy.have(seed_id, slow_track.clone()).await;
    assert!(matches!(have, Err(PeerError::Refused(Status::Busy))), "{have:?}");
    // Another peer is served meanwhile: a chunk and a have list.
    let (other, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    other.dial(at).await.unwrap();
    assert_eq!(other.fetch(seed_id, chunks[11].0).await.unwrap(), chunks[11].1);
    assert_eq!(other.have(seed_id, TrackId::parse("tides").unwrap()).await.unwrap().len(), 12);
    gate.release();
    let mut served = 0;
    for h in hammering {
        match h.await.unwrap() {
            Ok(_) => served += 1,
            Err(PeerError::Refused(Status::Busy)) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(served, 2);
}

/// A codec that writes chunk requests and never reads the response (a reader that stalls).
#[derive(Clone, Copy, Default)]
struct StallCodec;

impl libp2p::request_response::Codec for StallCodec {
    type Protocol = libp2p::StreamProtocol;
    type Request = chorus_peer::wire::ChunkRequest;
    type Response = chorus_peer::wire::ChunkResponse;

    async fn read_request<T: futures_util::AsyncRead + Unpin + Send>(
        &mut self,
        p: &Self::Protocol,
        io: &mut T,
    ) -> std::io::Result<Self::Request> {
        chorus_peer::wire::ChunkCodec.read_request(p, io).await
    }

    async fn read_response<T: futures_util::AsyncRead + Unpin + Send>(
        &mut self,
        _: &Self::Protocol,
        _: &mut T,
    ) -> std::io::Result<Self::Response> {
        std::future::pending().await
    }

    async fn write_request<T: futures_util::AsyncWrite + Unpin + Send>(
        &mut self,
        p: &Self::Protocol,
        io: &mut T,
        req: Self::Request,
    ) -> std::io::Result<()> {
        chorus_peer::wire::ChunkCodec.write_request(p, io, req).await
    }

    async fn write_response<T: futures_util::AsyncWrite + Unpin + Send>(
        &mut self,
        p: &Self::Protocol,
        io: &mut T,
        res: Self::Response,
    ) -> std::io::Result<()> {
        chorus_peer::wire::ChunkCodec.write_response(p, io, res).await
    }
}

/// A peer asks for a 4 MiB chunk and never reads the answer, at a node with one upload slot:
/// the upload is cut off at the request deadline and the slot serves another peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stalls_loses_its_upload_slot() {
    use futures_util::StreamExt as _;
    use libp2p::request_response::{self, ProtocolSupport};
    let big = Bytes::from(vec![7u8; 4 << 20]);
    let big_id = ChunkId::of(&big);
    let (mem, chunks) = Mem::with_track("tides", 1, false);
    mem.chunks.lock().unwrap().insert(big_id, big);
    let one_slot =
        PeerConfig { max_uploads: 1, request_timeout: Duration::from_secs(2), ..cfg("/ip4/127.0.0.1/tcp/0") };
    let (seed, seed_metrics) = start(one_slot, mem);
    let at = addr_of(&seed, "/tcp/").await;
    let seed_id = seed.peer_id();
    let mut staller = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(libp2p::tcp::Config::default(), libp2p::noise::Config::new, libp2p::yamux::Config::default)
        .unwrap()
        .with_behaviour(|_| {
            request_response::Behaviour::with_codec(
                StallCodec,
                [(chorus_peer::wire::CHUNK_PROTOCOL, ProtocolSupport::Outbound)],
                request_response::Config::default().with_request_timeout(Duration::from_secs(3600)),
            )
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    staller.dial(at.clone()).unwrap();
    let task = tokio::spawn(async move {
        loop {
            if let libp2p::swarm::SwarmEvent::ConnectionEstablished { .. } = staller.select_next_some().await {
                staller.behaviour_mut().send_request(&seed_id, chorus_peer::wire::ChunkRequest::Get { id: big_id });
            }
        }
    });
    let (other, _) = start(cfg("/ip4/127.0.0.1/tcp/0"), Arc::new(Mem::default()));
    other.dial(at).await.unwrap();
    wait_until("the stalled upload is cut off", async || {
        metric(&seed_metrics, "chorus_peer_upload_timeouts_total") >= 1.0
    })
    .await;
    let mut got = other.fetch(seed_id, chunks[0].0).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while matches!(got, Err(PeerError::Refused(Status::Busy))) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        got = other.fetch(seed_id, chunks[0].0).await;
    }
    assert_eq!(got.unwrap(), chunks[0].1);
    task.abort();
}
