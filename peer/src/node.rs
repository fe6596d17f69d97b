//! The libp2p node: transports, discovery, the two chorus protocols, upload limits, bans.
//!
//! One task owns the [`Swarm`]; the [`Peer`] handle talks to it over a channel. Inbound chunk
//! requests are answered from the [`Store`] within the upload limits (at most
//! [`PeerConfig::max_uploads`] responses being written at once, and a byte-rate cap), `BUSY`
//! beyond them or always when consume-only. Outbound chunks are verified against their id
//! before they are handed over; a peer that sends a wrong one is disconnected and banned for
//! the life of the node.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::{ChunkId, TrackId};
use futures_util::StreamExt as _;
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle};
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, identify, mdns, noise, ping, tcp, yamux};
use prometheus::{IntCounter, IntGauge, Registry};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::store::Store;
use crate::wire::{
    CHUNK_PROTOCOL, ChunkCodec, ChunkRequest, ChunkResponse, HAVE_PROTOCOL, HaveCodec, HaveRequest, HaveResponse,
    Status,
};

/// Relays remembered at most.
const MAX_RELAYS: usize = 8;
/// Time between reservation attempts.
const RELAY_RETRY: Duration = Duration::from_secs(10);

/// Kademlia's protocol name in chorus swarms (SPEC §5).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/chorus/kad/1.0.0");

/// Decides whether an access token on a chunk request is good.
pub type TokenCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

type FetchReply = oneshot::Sender<Result<Bytes, PeerError>>;

/// Settings of a [`Peer`].
#[derive(Clone)]
pub struct PeerConfig {
    /// Addresses to listen on (default: TCP and QUIC on every IPv4 interface, ports chosen by
    /// the system).
    pub listen: Vec<Multiaddr>,
    /// Responses being written at once, at most (default 4, as Spotify's clients did).
    pub max_uploads: usize,
    /// Upload bytes per second, at most (default: no cap). Requests beyond it get `BUSY`.
    pub upload_rate: Option<u64>,
    /// Serve nothing (metered networks): every request gets `BUSY`.
    pub consume_only: bool,
    /// Find peers on the local network with mDNS (default on).
    pub mdns: bool,
    /// Kademlia peers to start from (`…/p2p/PEER_ID` addresses).
    pub bootstrap: Vec<Multiaddr>,
    /// Time a request may take (default 10 s).
    pub request_timeout: Duration,
    /// Established connections, at most (default 256).
    pub max_connections: u32,
    /// When set, chunk requests must carry a token this accepts (SPEC §5).
    pub token_check: Option<TokenCheck>,
    /// Act as a circuit relay (v2) for peers behind NATs (for nodes with a public address).
    pub relay_server: bool,
    /// No new connections (in or out) while the process uses more memory than this.
    pub memory_limit: MemoryLimit,
    /// Circuit relays (`…/p2p/RELAY_ID`) this node may reserve a slot on when it cannot be
    /// reached directly; more come from edge trackers ([`Peer::add_relay`]).
    pub relays: Vec<Multiaddr>,
    /// Reserve a relay slot when AutoNAT says this node is private, or when it has not
    /// confirmed a public address this long after starting (default 60 s: AutoNAT cannot
    /// decide on private networks whose peers it may not use as probes).
    pub relay_after: Duration,
    /// Addresses to give others instead of the listen addresses (a port forward, a load
    /// balancer, a NAT mapping set up by hand): announced to trackers and the only ones
    /// identify shows. Empty: the listen addresses.
    pub external: Vec<Multiaddr>,
}

/// The process memory beyond which a node accepts and opens no new connections (the
/// connections it has keep working). Each connection's own buffers are bounded too: at most
/// 128 yamux streams, 64 concurrent requests per protocol, SPEC §5 message sizes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryLimit {
    /// An absolute resident-set size in bytes.
    Bytes(usize),
    /// A fraction of the machine's physical memory (default 0.8).
    FractionOfRam(f64),
}

impl Default for MemoryLimit {
    fn default() -> Self {
        Self::FractionOfRam(0.8)
    }
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().unwrap_or_else(|_| Multiaddr::empty()),
                "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap_or_else(|_| Multiaddr::empty()),
            ],
            max_uploads: 4,
            upload_rate: None,
            consume_only: false,
            mdns: true,
            bootstrap: Vec::new(),
            request_timeout: Duration::from_secs(10),
            max_connections: 256,
            token_check: None,
            relay_server: false,
            memory_limit: MemoryLimit::default(),
            relays: Vec::new(),
            relay_after: Duration::from_secs(60),
            external: Vec::new(),
        }
    }
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("listen", &self.listen)
            .field("max_uploads", &self.max_uploads)
            .field("upload_rate", &self.upload_rate)
            .field("consume_only", &self.consume_only)
            .field("mdns", &self.mdns)
            .field("bootstrap", &self.bootstrap)
            .field("max_connections", &self.max_connections)
            .field("relay_server", &self.relay_server)
            .field("memory_limit", &self.memory_limit)
            .field("relays", &self.relays)
            .field("external", &self.external)
            .finish_non_exhaustive()
    }
}

/// Why talking to a peer failed, and whether asking elsewhere can help (it always can).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The node could not start (bad listen address, transport set-up).
    #[error("peer node: {0}")]
    Start(String),
    /// The peer sent bytes that are not the chunk asked for; it is now banned.
    #[error("peer {0} sent a wrong chunk; banned")]
    WrongChunk(PeerId),
    /// The peer was banned earlier.
    #[error("peer {0} is banned")]
    Banned(PeerId),
    /// The peer answered with a status other than OK.
    #[error("peer answered {0:?}")]
    Refused(Status),
    /// Dialling, the stream or the request failed (or timed out).
    #[error("peer request failed: {0}")]
    Failed(String),
    /// The node has stopped.
    #[error("peer node stopped")]
    Stopped,
}

/// The peer layer's metrics (SPEC §6 names).
#[derive(Clone)]
pub struct PeerMetrics {
    /// Chunk bytes uploaded to other peers.
    pub sent_bytes: IntCounter,
    /// Verified chunk bytes downloaded from other peers.
    pub received_bytes: IntCounter,
    /// Chunks from peers that did not match their id.
    pub rejected_chunks: IntCounter,
    /// Connections open now.
    pub connections: IntGauge,
    /// Chunk requests answered BUSY (upload limits, consume-only).
    pub busy: IntCounter,
}

impl PeerMetrics {
    /// Registers the metrics in `registry`.
    #[must_use]
    pub fn new(registry: &Registry) -> Self {
        // Names and help are constants, so construction cannot fail.
        #[allow(clippy::expect_used)]
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            chorus_core::metrics::register(registry, &c);
            c
        };
        #[allow(clippy::expect_used)]
        let connections =
            IntGauge::new("chorus_peer_connections", "libp2p connections open now.").expect("valid metric");
        chorus_core::metrics::register(registry, &connections);
        Self {
            sent_bytes: counter("chorus_peer_sent_bytes_total", "Chunk bytes uploaded to other peers."),
            received_bytes: counter(
                "chorus_peer_received_bytes_total",
                "Chunk bytes downloaded from other peers and verified against their ids.",
            ),
            rejected_chunks: counter(
                "chorus_peer_rejected_chunks_total",
                "Chunks from peers whose bytes did not match their id (the peer is banned).",
            ),
            connections,
            busy: counter(
                "chorus_peer_busy_total",
                "Chunk requests answered BUSY (upload limit, bandwidth cap, or consume-only).",
            ),
        }
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: libp2p::connection_limits::Behaviour,
    memory: libp2p::memory_connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<MemoryStore>,
    mdns: Toggle<mdns::tokio::Behaviour>,
    chunk: request_response::Behaviour<ChunkCodec>,
    have: request_response::Behaviour<HaveCodec>,
    /// NAT traversal: learn whether we are reachable (AutoNAT), reach others through relays
    /// (circuit v2 client), and upgrade relayed connections to direct ones (DCUtR).
    autonat: libp2p::autonat::Behaviour,
    relay_client: libp2p::relay::client::Behaviour,
    dcutr: libp2p::dcutr::Behaviour,
    relay_server: Toggle<libp2p::relay::Behaviour>,
}

enum Command {
    Dial(Multiaddr, oneshot::Sender<Result<(), PeerError>>),
    Listen(Multiaddr, oneshot::Sender<Result<(), PeerError>>),
    Fetch { peer: PeerId, id: ChunkId, token: Option<String>, reply: oneshot::Sender<Result<Bytes, PeerError>> },
    Have { peer: PeerId, track: TrackId, reply: oneshot::Sender<Result<Vec<ChunkId>, PeerError>> },
    Provide(TrackId),
    Unprovide(TrackId),
    FindProviders { track: TrackId, reply: oneshot::Sender<Vec<PeerId>> },
    Connected(oneshot::Sender<Vec<PeerId>>),
    AddRelay(Multiaddr),
}

/// A running peer node. Dropping the handle stops it.
pub struct Peer {
    peer_id: PeerId,
    tx: mpsc::UnboundedSender<Command>,
    addrs: watch::Receiver<Vec<Multiaddr>>,
    external: Vec<Multiaddr>,
    discovered: watch::Receiver<HashSet<PeerId>>,
    metrics: PeerMetrics,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Peer {
    /// Starts a node serving `store`, with a fresh identity unless `key` is given.
    ///
    /// # Errors
    /// [`PeerError::Start`] when a transport cannot be set up or a listen address is refused.
    pub fn start(
        cfg: PeerConfig,
        store: Arc<dyn Store>,
        key: Option<Keypair>,
        registry: &Registry,
    ) -> Result<Self, PeerError> {
        let key = key.unwrap_or_else(Keypair::generate_ed25519);
        let start = |e: &dyn std::fmt::Display| PeerError::Start(e.to_string());
        let timeout = cfg.request_timeout;
        let max_conns = cfg.max_connections;
        let want_mdns = cfg.mdns;
        let relay_server = cfg.relay_server;
        let hide_listen = !cfg.external.is_empty();
        let memory = match cfg.memory_limit {
            MemoryLimit::Bytes(b) => libp2p::memory_connection_limits::Behaviour::with_max_bytes(b),
            MemoryLimit::FractionOfRam(f) => {
                libp2p::memory_connection_limits::Behaviour::with_max_percentage(f.clamp(0.01, 1.0))
            }
        };
        let muxer = || {
            let mut c = yamux::Config::default();
            c.set_max_num_streams(128);
            c
        };
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, muxer)
            .map_err(|e| start(&e))?
            .with_quic()
            .with_relay_client(noise::Config::new, muxer)
            .map_err(|e| start(&e))?
            .with_behaviour(|key, relay_client| {
                let id = key.public().to_peer_id();
                let rr =
                    request_response::Config::default().with_request_timeout(timeout).with_max_concurrent_streams(64);
                let mut kad = kad::Behaviour::with_config(id, MemoryStore::new(id), kad::Config::new(KAD_PROTOCOL));
                kad.set_mode(Some(kad::Mode::Server));
                let mdns = if want_mdns { mdns::tokio::Behaviour::new(mdns::Config::default(), id).ok() } else { None };
                Behaviour {
                    limits: libp2p::connection_limits::Behaviour::new(
                        libp2p::connection_limits::ConnectionLimits::default()
                            .with_max_established(Some(max_conns))
                            .with_max_established_per_peer(Some(2))
                            .with_max_pending_incoming(Some(64)),
                    ),
                    memory,
                    identify: identify::Behaviour::new(
                        identify::Config::new("/chorus/1.0.0".into(), key.public()).with_hide_listen_addrs(hide_listen),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    kad,
                    mdns: Toggle::from(mdns),
                    chunk: request_response::Behaviour::with_codec(
                        ChunkCodec,
                        [(CHUNK_PROTOCOL, ProtocolSupport::Full)],
                        rr.clone(),
                    ),
                    have: request_response::Behaviour::with_codec(
                        HaveCodec,
                        [(HAVE_PROTOCOL, ProtocolSupport::Full)],
                        rr,
                    ),
                    autonat: libp2p::autonat::Behaviour::new(id, libp2p::autonat::Config::default()),
                    relay_client,
                    dcutr: libp2p::dcutr::Behaviour::new(id),
                    relay_server: Toggle::from(
                        relay_server.then(|| libp2p::relay::Behaviour::new(id, libp2p::relay::Config::default())),
                    ),
                }
            })
            .map_err(|e| start(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        for addr in &cfg.external {
            swarm.add_external_address(addr.clone());
        }
        for addr in &cfg.listen {
            swarm.listen_on(addr.clone()).map_err(|e| PeerError::Start(format!("listening on {addr}: {e}")))?;
        }
        for addr in &cfg.bootstrap {
            if let Some(libp2p::multiaddr::Protocol::P2p(id)) = addr.iter().last() {
                swarm.behaviour_mut().kad.add_address(&id, addr.clone());
            }
        }
        if !cfg.bootstrap.is_empty() {
            let _ = swarm.behaviour_mut().kad.bootstrap();
        }
        let relays = cfg.relays.clone();
        let peer_id = *swarm.local_peer_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let (addrs_tx, addrs) = watch::channel(Vec::new());
        let (disc_tx, discovered) = watch::channel(HashSet::new());
        let metrics = PeerMetrics::new(registry);
        let upload_rate = cfg.upload_rate;
        let driver = Driver {
            swarm,
            cfg,
            store,
            metrics: metrics.clone(),
            addrs: addrs_tx,
            discovered: disc_tx,
            banned: HashSet::new(),
            fetches: HashMap::new(),
            haves: HashMap::new(),
            providers: HashMap::new(),
            dials: HashMap::new(),
            uploads: HashMap::new(),
            bucket: upload_rate.map(|r| Bucket { tokens: r as f64, rate: r as f64, at: Instant::now() }),
            relays: RelayState { started: Some(Instant::now()), ..RelayState::default() },
        };
        let mut driver = driver;
        for r in relays {
            driver.add_relay(r);
        }
        let external = driver.cfg.external.clone();
        let task = tokio::spawn(driver.run(rx));
        Ok(Self { peer_id, tx, addrs, external, discovered, metrics, task })
    }

    /// This node's id.
    #[must_use]
    pub const fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The node's metrics.
    #[must_use]
    pub const fn metrics(&self) -> &PeerMetrics {
        &self.metrics
    }

    /// The addresses the node listens on, each ending in `/p2p/<peer id>`, once there is at
    /// least one.
    pub async fn listen_addrs(&self) -> Vec<Multiaddr> {
        let mut rx = self.addrs.clone();
        let _ = rx.wait_for(|a| !a.is_empty()).await;
        let addrs = rx.borrow().clone();
        addrs.into_iter().map(|a| a.with_p2p(self.peer_id).unwrap_or_else(|a| a)).collect()
    }

    /// The addresses to give others (trackers): [`PeerConfig::external`] when set, else the
    /// listen addresses (including relay circuits); each ends in `/p2p/<peer id>`.
    pub async fn public_addrs(&self) -> Vec<Multiaddr> {
        if self.external.is_empty() {
            return self.listen_addrs().await;
        }
        self.external.iter().map(|a| a.clone().with_p2p(self.peer_id).unwrap_or_else(|a| a)).collect()
    }

    /// Peers found on the local network (mDNS) so far.
    #[must_use]
    pub fn discovered(&self) -> HashSet<PeerId> {
        self.discovered.borrow().clone()
    }

    /// Waits until mDNS has found `peer`.
    pub async fn wait_discovered(&self, peer: PeerId) {
        let mut rx = self.discovered.clone();
        let _ = rx.wait_for(|d| d.contains(&peer)).await;
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, PeerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).map_err(|_| PeerError::Stopped)?;
        rx.await.map_err(|_| PeerError::Stopped)
    }

    /// Dials `addr` (which should end in `/p2p/<peer id>`) and waits for the connection.
    ///
    /// # Errors
    /// [`PeerError::Failed`] when the connection cannot be made.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), PeerError> {
        self.ask(|r| Command::Dial(addr, r)).await?
    }

    /// Listens on one more address, e.g. a relay circuit (`…/p2p/RELAY/p2p-circuit`) when this
    /// node cannot be dialled directly.
    ///
    /// # Errors
    /// [`PeerError::Failed`] when the address is refused.
    pub async fn listen_on(&self, addr: Multiaddr) -> Result<(), PeerError> {
        self.ask(|r| Command::Listen(addr, r)).await?
    }

    /// Fetches chunk `id` from `peer` and verifies it. A wrong chunk bans the peer.
    ///
    /// # Errors
    /// [`PeerError`]: refused (NOT_FOUND, BUSY…), failed, wrong chunk, banned.
    pub async fn fetch(&self, peer: PeerId, id: ChunkId, token: Option<String>) -> Result<Bytes, PeerError> {
        self.ask(|reply| Command::Fetch { peer, id, token, reply }).await?
    }

    /// Asks `peer` which chunks of `track` it holds.
    ///
    /// # Errors
    /// [`PeerError`] when the request fails or is refused.
    pub async fn have(&self, peer: PeerId, track: TrackId) -> Result<Vec<ChunkId>, PeerError> {
        self.ask(|reply| Command::Have { peer, track, reply }).await?
    }

    /// Announces on Kademlia that this node provides `track`.
    pub fn provide(&self, track: TrackId) {
        let _ = self.tx.send(Command::Provide(track));
    }

    /// Stops announcing `track` (its chunks were evicted).
    pub fn unprovide(&self, track: TrackId) {
        let _ = self.tx.send(Command::Unprovide(track));
    }

    /// Providers of `track` found on Kademlia.
    ///
    /// # Errors
    /// [`PeerError::Stopped`] when the node has stopped.
    pub async fn find_providers(&self, track: TrackId) -> Result<Vec<PeerId>, PeerError> {
        self.ask(|reply| Command::FindProviders { track, reply }).await
    }

    /// Peers connected now.
    ///
    /// # Errors
    /// [`PeerError::Stopped`] when the node has stopped.
    pub async fn connected(&self) -> Result<Vec<PeerId>, PeerError> {
        self.ask(Command::Connected).await
    }

    /// Adds a circuit relay (`…/p2p/RELAY_ID`, e.g. from an edge tracker's answer): the node
    /// reserves a slot on it when it cannot be reached directly (see
    /// [`PeerConfig::relay_after`]), uses it as an AutoNAT server, and as a Kademlia contact.
    pub fn add_relay(&self, addr: Multiaddr) {
        let _ = self.tx.send(Command::AddRelay(addr));
    }
}

/// Circuit-relay reservations: at most one at a time, on the first relay that takes it.
#[derive(Default)]
struct RelayState {
    known: Vec<(PeerId, Multiaddr)>,
    /// The circuit listener, while there is one.
    listener: Option<libp2p::core::transport::ListenerId>,
    next: usize,
    last_try: Option<Instant>,
    started: Option<Instant>,
    nat: NatGuess,
}

#[derive(Default, Clone, Copy, PartialEq, Eq, Debug)]
enum NatGuess {
    #[default]
    Unknown,
    Public,
    Private,
}

/// A token bucket for the upload cap: one second of burst.
struct Bucket {
    tokens: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    fn take(&mut self, n: usize) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate).min(self.rate);
        self.at = now;
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

struct Driver {
    swarm: Swarm<Behaviour>,
    cfg: PeerConfig,
    store: Arc<dyn Store>,
    metrics: PeerMetrics,
    addrs: watch::Sender<Vec<Multiaddr>>,
    discovered: watch::Sender<HashSet<PeerId>>,
    banned: HashSet<PeerId>,
    fetches: HashMap<OutboundRequestId, (PeerId, ChunkId, FetchReply)>,
    haves: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<ChunkId>, PeerError>>>,
    providers: HashMap<kad::QueryId, (Vec<PeerId>, oneshot::Sender<Vec<PeerId>>)>,
    dials: HashMap<PeerId, Vec<oneshot::Sender<Result<(), PeerError>>>>,
    /// Responses being written, by request, with their size.
    uploads: HashMap<request_response::InboundRequestId, usize>,
    bucket: Option<Bucket>,
    relays: RelayState,
}

type Event = <Behaviour as NetworkBehaviour>::ToSwarm;

impl Driver {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Command>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => return,
                },
                ev = self.swarm.select_next_some() => self.event(ev),
                _ = tick.tick() => self.reserve_if_needed(),
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::AddRelay(addr) => self.add_relay(addr),
            Command::Dial(addr, reply) => {
                let peer = match addr.iter().last() {
                    Some(libp2p::multiaddr::Protocol::P2p(p)) => Some(p),
                    _ => None,
                };
                if peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                match self.swarm.dial(addr.clone()) {
                    Ok(()) => match peer {
                        Some(p) => self.dials.entry(p).or_default().push(reply),
                        None => {
                            let _ = reply.send(Ok(()));
                        }
                    },
                    Err(e) => {
                        let _ = reply.send(Err(PeerError::Failed(format!("dialling {addr}: {}", chain(&e)))));
                    }
                }
            }
            Command::Listen(addr, reply) => {
                let r = self
                    .swarm
                    .listen_on(addr.clone())
                    .map(|_| ())
                    .map_err(|e| PeerError::Failed(format!("{addr}: {e}")));
                let _ = reply.send(r);
            }
            Command::Fetch { peer, id, token, reply } => {
                if self.banned.contains(&peer) {
                    let _ = reply.send(Err(PeerError::Banned(peer)));
                    return;
                }
                let rid = self.swarm.behaviour_mut().chunk.send_request(&peer, ChunkRequest::Get { id, token });
                self.fetches.insert(rid, (peer, id, reply));
            }
            Command::Have { peer, track, reply } => {
                if self.banned.contains(&peer) {
                    let _ = reply.send(Err(PeerError::Banned(peer)));
                    return;
                }
                let rid = self.swarm.behaviour_mut().have.send_request(&peer, HaveRequest::Track(track));
                self.haves.insert(rid, reply);
            }
            Command::Provide(track) => {
                let key = kad::RecordKey::new(&track.as_str());
                if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                    debug!(error = %e, %track, "cannot announce on Kademlia");
                }
            }
            Command::Unprovide(track) => {
                self.swarm.behaviour_mut().kad.stop_providing(&kad::RecordKey::new(&track.as_str()));
            }
            Command::FindProviders { track, reply } => {
                let q = self.swarm.behaviour_mut().kad.get_providers(kad::RecordKey::new(&track.as_str()));
                self.providers.insert(q, (Vec::new(), reply));
            }
            Command::Connected(reply) => {
                let _ = reply.send(self.swarm.connected_peers().copied().collect());
            }
        }
    }

    fn event(&mut self, ev: SwarmEvent<Event>) {
        match ev {
            SwarmEvent::NewListenAddr { address, .. } => {
                let full = address.clone().with_p2p(*self.swarm.local_peer_id()).unwrap_or_else(|a| a);
                info!(address = %full, "peer listening");
                if self.cfg.relay_server && self.cfg.external.is_empty() {
                    // A relay runs on a host with a public address (documented); relays only
                    // take reservations once they have a confirmed external address.
                    self.swarm.add_external_address(address.clone());
                }
                self.addrs.send_modify(|a| a.push(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.addrs.send_modify(|a| a.retain(|x| *x != address));
            }
            SwarmEvent::ListenerClosed { listener_id, reason, .. } if self.relays.listener == Some(listener_id) => {
                warn!(?reason, "relay circuit closed; another reservation is tried");
                self.relays.listener = None;
            }
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => {
                self.metrics.connections.inc();
                if self.banned.contains(&peer_id) {
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                }
                if endpoint.is_dialer() {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, endpoint.get_remote_address().clone());
                }
                for r in self.dials.remove(&peer_id).unwrap_or_default() {
                    let _ = r.send(Ok(()));
                }
            }
            SwarmEvent::ConnectionClosed { .. } => self.metrics.connections.dec(),
            SwarmEvent::OutgoingConnectionError { peer_id: Some(p), error, .. } => {
                for r in self.dials.remove(&p).unwrap_or_default() {
                    let _ = r.send(Err(PeerError::Failed(chain(&error))));
                }
            }
            SwarmEvent::Behaviour(b) => self.behaviour(b),
            _ => {}
        }
    }

    fn behaviour(&mut self, ev: BehaviourEvent) {
        match ev {
            BehaviourEvent::Chunk(e) => self.chunk_event(e),
            BehaviourEvent::Autonat(libp2p::autonat::Event::StatusChanged { new, .. }) => {
                info!(status = ?new, "reachability (AutoNAT)");
                self.relays.nat = match new {
                    libp2p::autonat::NatStatus::Public(_) => NatGuess::Public,
                    libp2p::autonat::NatStatus::Private => NatGuess::Private,
                    libp2p::autonat::NatStatus::Unknown => NatGuess::Unknown,
                };
                if self.relays.nat == NatGuess::Public
                    && let Some(id) = self.relays.listener.take()
                {
                    info!("reachable directly; relay circuit given up");
                    self.swarm.remove_listener(id);
                }
                self.reserve_if_needed();
            }
            BehaviourEvent::Have(e) => self.have_event(e),
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer, addr) in found {
                    if peer == *self.swarm.local_peer_id() {
                        continue;
                    }
                    debug!(%peer, %addr, "found on the local network");
                    self.swarm.behaviour_mut().kad.add_address(&peer, addr.clone());
                    self.swarm.add_peer_address(peer, addr);
                    self.discovered.send_modify(|d| {
                        d.insert(peer);
                    });
                }
            }
            // Peers that speak our Kademlia join the routing table with what they listen on.
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })
                if info.protocols.contains(&KAD_PROTOCOL) =>
            {
                for addr in info.listen_addrs {
                    self.swarm.behaviour_mut().kad.add_address(&peer_id, addr);
                }
            }
            BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(r),
                step,
                ..
            }) => {
                debug!(?id, ?r, last = step.last, "Kademlia providers");
                if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = r
                    && let Some((found, _)) = self.providers.get_mut(&id)
                {
                    found.extend(providers.into_iter().filter(|p| p != self.swarm.local_peer_id()));
                }
                // Answer with the first providers found (a listener wants some peers now, not
                // every provider after the whole walk), or with none once the query ends.
                let have_some = self.providers.get(&id).is_some_and(|(found, _)| !found.is_empty());
                if (have_some || step.last)
                    && let Some((found, reply)) = self.providers.remove(&id)
                {
                    let _ = reply.send(found);
                    if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                        q.finish();
                    }
                }
            }
            _ => {}
        }
    }

    fn add_relay(&mut self, addr: Multiaddr) {
        let Some(libp2p::multiaddr::Protocol::P2p(id)) = addr.iter().last() else {
            warn!(%addr, "relay address without /p2p/ID; ignored");
            return;
        };
        if id == *self.swarm.local_peer_id() || self.relays.known.iter().any(|(_, a)| *a == addr) {
            return;
        }
        if self.relays.known.len() >= MAX_RELAYS {
            self.relays.known.remove(0);
        }
        let b = self.swarm.behaviour_mut();
        b.kad.add_address(&id, addr.clone());
        b.autonat.add_server(id, Some(addr.clone()));
        self.relays.known.push((id, addr));
        self.reserve_if_needed();
    }

    /// Reserves a circuit on a known relay when the node seems unreachable and has none.
    fn reserve_if_needed(&mut self) {
        let r = &mut self.relays;
        let waited = r.started.is_some_and(|s| s.elapsed() >= self.cfg.relay_after);
        let unreachable = r.nat == NatGuess::Private || (r.nat == NatGuess::Unknown && waited);
        let retry_ok = r.last_try.is_none_or(|t| t.elapsed() >= RELAY_RETRY);
        if r.listener.is_some() || r.known.is_empty() || !unreachable || !retry_ok {
            return;
        }
        let (id, addr) = r.known[r.next % r.known.len()].clone();
        r.next += 1;
        r.last_try = Some(Instant::now());
        let circuit = addr.with(libp2p::multiaddr::Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(l) => {
                info!(relay = %id, nat = ?self.relays.nat, "not reachable directly; reserving a relay circuit");
                self.relays.listener = Some(l);
            }
            Err(e) => warn!(%circuit, error = %e, "relay circuit refused"),
        }
    }

    fn chunk_event(&mut self, e: request_response::Event<ChunkRequest, ChunkResponse>) {
        use request_response::{Event as E, Message};
        match e {
            E::Message { peer, message: Message::Request { request, channel, request_id }, .. } => {
                let response = self.answer_chunk(&peer, request);
                let len = match &response {
                    ChunkResponse::Ok(b) => b.len(),
                    ChunkResponse::Refused(_) => 0,
                };
                if self.swarm.behaviour_mut().chunk.send_response(channel, response).is_ok() && len > 0 {
                    self.uploads.insert(request_id, len);
                }
            }
            E::Message { peer, message: Message::Response { request_id, response }, .. } => {
                let Some((_, id, reply)) = self.fetches.remove(&request_id) else { return };
                let result = match response {
                    ChunkResponse::Ok(bytes) if id.matches(&bytes) => {
                        self.metrics.received_bytes.inc_by(bytes.len() as u64);
                        Ok(bytes)
                    }
                    ChunkResponse::Ok(_) => {
                        self.metrics.rejected_chunks.inc();
                        warn!(%peer, chunk = %id, "peer sent a wrong chunk; banned");
                        self.banned.insert(peer);
                        let _ = self.swarm.disconnect_peer_id(peer);
                        Err(PeerError::WrongChunk(peer))
                    }
                    ChunkResponse::Refused(s) => Err(PeerError::Refused(s)),
                };
                let _ = reply.send(result);
            }
            E::OutboundFailure { request_id, error, .. } => {
                if let Some((_, _, reply)) = self.fetches.remove(&request_id) {
                    let _ = reply.send(Err(PeerError::Failed(error.to_string())));
                }
            }
            E::ResponseSent { request_id, .. } => {
                if let Some(len) = self.uploads.remove(&request_id) {
                    self.metrics.sent_bytes.inc_by(len as u64);
                }
            }
            E::InboundFailure { request_id, .. } => {
                self.uploads.remove(&request_id);
            }
        }
    }

    /// What to answer a chunk request, within the limits.
    fn answer_chunk(&mut self, peer: &PeerId, request: ChunkRequest) -> ChunkResponse {
        let ChunkRequest::Get { id, token } = request else { return ChunkResponse::Refused(Status::BadRequest) };
        if self.banned.contains(peer) {
            return ChunkResponse::Refused(Status::Busy);
        }
        if let Some(check) = &self.cfg.token_check
            && !token.as_deref().is_some_and(|t| check(t))
        {
            return ChunkResponse::Refused(Status::Unauthorized);
        }
        if self.cfg.consume_only || self.uploads.len() >= self.cfg.max_uploads {
            self.metrics.busy.inc();
            return ChunkResponse::Refused(Status::Busy);
        }
        let Some(bytes) = self.store.chunk(&id) else { return ChunkResponse::Refused(Status::NotFound) };
        if let Some(b) = &mut self.bucket
            && !b.take(bytes.len())
        {
            self.metrics.busy.inc();
            return ChunkResponse::Refused(Status::Busy);
        }
        ChunkResponse::Ok(bytes)
    }

    fn have_event(&mut self, e: request_response::Event<HaveRequest, HaveResponse>) {
        use request_response::{Event as E, Message};
        match e {
            E::Message { message: Message::Request { request, channel, .. }, .. } => {
                let response = match request {
                    HaveRequest::Track(t) => HaveResponse::Ok(self.store.held(&t)),
                    HaveRequest::Malformed => HaveResponse::Refused(Status::BadRequest),
                };
                let _ = self.swarm.behaviour_mut().have.send_response(channel, response);
            }
            E::Message { message: Message::Response { request_id, response }, .. } => {
                if let Some(reply) = self.haves.remove(&request_id) {
                    let _ = reply.send(match response {
                        HaveResponse::Ok(ids) => Ok(ids),
                        HaveResponse::Refused(s) => Err(PeerError::Refused(s)),
                    });
                }
            }
            E::OutboundFailure { request_id, error, .. } => {
                if let Some(reply) = self.haves.remove(&request_id) {
                    let _ = reply.send(Err(PeerError::Failed(error.to_string())));
                }
            }
            E::ResponseSent { .. } | E::InboundFailure { .. } => {}
        }
    }
}

/// An error with its causes, `outer: inner: …` (libp2p's outer errors say little alone).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !out.contains(&c_text) {
            out.push_str(": ");
            out.push_str(&c_text);
        }
        cause = c.source();
    }
    out
}
