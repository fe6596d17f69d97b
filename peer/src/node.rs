//! The handle to a running peer node ([`Peer`]): start it, then dial, fetch verified chunks,
//! ask what a peer holds, provide and find tracks on Kademlia, add relays.
//!
//! One task owns the swarm ([`crate::driver`]); the handle talks to it over a channel. The
//! node's settings are [`PeerConfig`], its errors [`PeerError`], its metrics [`PeerMetrics`]
//! (re-exported here, where they were first defined).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chorus_core::{ChunkId, TrackId};
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use prometheus::Registry;
use tokio::sync::{mpsc, oneshot, watch};

pub use crate::behaviour::KAD_PROTOCOL;
pub use crate::config::{MemoryLimit, PeerConfig};
use crate::driver::Driver;
pub use crate::error::PeerError;
pub use crate::metrics::PeerMetrics;
use crate::relay::RelayState;
use crate::store::Store;
use crate::upload::{HaveCache, Uploads};

/// Where a fetch's answer goes.
pub(crate) type FetchReply = oneshot::Sender<Result<Bytes, PeerError>>;

pub(crate) enum Command {
    Dial(Multiaddr, oneshot::Sender<Result<(), PeerError>>),
    Listen(Multiaddr, oneshot::Sender<Result<(), PeerError>>),
    Fetch {
        peer: PeerId,
        id: ChunkId,
        reply: oneshot::Sender<Result<Bytes, PeerError>>,
    },
    Have {
        peer: PeerId,
        track: TrackId,
        reply: oneshot::Sender<Result<Vec<ChunkId>, PeerError>>,
    },
    Provide(TrackId),
    Unprovide(TrackId),
    FindProviders {
        track: TrackId,
        reply: oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>,
    },
    Connected(oneshot::Sender<Vec<PeerId>>),
    RoutingAddrs(PeerId, oneshot::Sender<Vec<Multiaddr>>),
    AddRelays(Vec<Multiaddr>),
    /// A tracker saw this node at an address it does not listen on.
    SeenElsewhere,
}

/// A running peer node. Dropping the handle stops it.
pub struct Peer {
    peer_id: PeerId,
    tx: mpsc::UnboundedSender<Command>,
    addrs: watch::Receiver<Vec<Multiaddr>>,
    external: Vec<Multiaddr>,
    discovered: watch::Receiver<HashSet<PeerId>>,
    metrics: PeerMetrics,
    /// The identity key, which signs what the node announces.
    identity: Keypair,
    task: tokio::task::JoinHandle<()>,
    /// Cancelled when the handle is dropped, so loops that work for this node (re-announcing)
    /// end with it instead of at their next wake-up.
    stopped: tokio_util::sync::CancellationToken,
    /// Serves nothing, so announces nothing.
    consume_only: bool,
    /// Tracks played, each with when it last started ([`Peer::play`]).
    playing: std::sync::Mutex<Vec<(chorus_core::TrackId, std::time::Instant)>>,
}

pub use chorus_core::holdings::PLAYED_FOR;

/// Most tracks remembered as played.
const PLAYED_KEPT: usize = chorus_core::holdings::MAX_PLAYED;

impl Drop for Peer {
    fn drop(&mut self) {
        self.stopped.cancel();
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
        let metrics = PeerMetrics::new(registry);
        let guard = crate::dial_guard::Shared::default();
        let swarm = crate::behaviour::build(&cfg, key.clone(), &metrics, guard.clone())?;
        let relays = cfg.relays.clone();
        let peer_id = *swarm.local_peer_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let (addrs_tx, addrs) = watch::channel(Vec::new());
        let (disc_tx, discovered) = watch::channel(HashSet::new());
        let (loaded_tx, loaded) = mpsc::unbounded_channel();
        let now = Instant::now();
        let driver = Driver {
            swarm,
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
            limits: Uploads::new(&cfg, now),
            have_cache: HaveCache::default(),
            relays: RelayState::new(now, cfg.relay_after),
            loaded_tx,
            guard,
            remotes: HashMap::new(),
            relay_dials: crate::relay::RelayDials::default(),
            direct: crate::direct::DirectFirst::default(),
            cfg,
        };
        let mut driver = driver;
        driver.add_relays(relays);
        let external = driver.cfg.external.clone();
        let consume_only = driver.cfg.consume_only;
        let task = tokio::spawn(driver.run(rx, loaded));
        Ok(Self {
            peer_id,
            tx,
            addrs,
            external,
            discovered,
            metrics,
            identity: key,
            task,
            stopped: Default::default(),
            consume_only,
            playing: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Completes when this node stops (its handle is dropped). Holds no reference to the node.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        self.stopped.clone().cancelled_owned()
    }

    /// This node's id.
    #[must_use]
    pub const fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The node's identity key (its peer id is derived from it), which signs its announces
    /// ([`crate::tracker::announce`]).
    #[must_use]
    pub const fn identity(&self) -> &Keypair {
        &self.identity
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
    /// [`PeerError::Dial`] when the connection cannot be made.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), PeerError> {
        self.ask(|r| Command::Dial(addr, r)).await?
    }

    /// Listens on one more address, e.g. a relay circuit (`…/p2p/RELAY/p2p-circuit`) when this
    /// node cannot be dialled directly.
    ///
    /// # Errors
    /// [`PeerError::Listen`] when the address is refused.
    pub async fn listen_on(&self, addr: Multiaddr) -> Result<(), PeerError> {
        self.ask(|r| Command::Listen(addr, r)).await?
    }

    /// Fetches chunk `id` from `peer` and verifies it. A wrong chunk bans the peer.
    ///
    /// # Errors
    /// [`PeerError`]: refused (NOT_FOUND, BUSY…), failed, wrong chunk, banned.
    pub async fn fetch(&self, peer: PeerId, id: ChunkId) -> Result<Bytes, PeerError> {
        self.ask(|reply| Command::Fetch { peer, id, reply }).await?
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

    /// Providers of `track` found on Kademlia, each with the addresses the search learned for
    /// it (from its provider record, or the routing table of the node that answered; none
    /// when it learned none). They are as untrusted as a tracker's list: dial them through a
    /// guard, with the peer id, so a handshake with another key fails.
    ///
    /// # Errors
    /// [`PeerError::Stopped`] when the node has stopped.
    pub async fn find_providers(&self, track: TrackId) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, PeerError> {
        self.ask(|reply| Command::FindProviders { track, reply }).await
    }

    /// Peers connected now.
    ///
    /// # Errors
    /// [`PeerError::Stopped`] when the node has stopped.
    pub async fn connected(&self) -> Result<Vec<PeerId>, PeerError> {
        self.ask(Command::Connected).await
    }

    /// The addresses of `peer` in this node's Kademlia routing table (none when it is not
    /// there): what the node, and the nodes it answers, would dial it at.
    ///
    /// # Errors
    /// [`PeerError::Stopped`] when the node has stopped.
    pub async fn routing_addrs(&self, peer: PeerId) -> Result<Vec<Multiaddr>, PeerError> {
        self.ask(|reply| Command::RoutingAddrs(peer, reply)).await
    }

    /// Adds circuit relays (`…/p2p/RELAY_ID`, e.g. an edge tracker's answer's, all of them at
    /// once: a relay's addresses on every transport are known before a reservation is made on
    /// it): the node reserves a slot on one when it cannot be reached directly (see
    /// [`PeerConfig::relay_after`]), uses them as AutoNAT servers, and as Kademlia contacts.
    pub fn add_relays(&self, addrs: Vec<Multiaddr>) {
        let _ = self.tx.send(Command::AddRelays(addrs));
    }

    /// Whether the node serves nothing (a metered network), and so announces nothing.
    #[must_use]
    pub const fn consume_only(&self) -> bool {
        self.consume_only
    }

    /// Records that this node starts playing `track`: for [`PLAYED_FOR`] its announces name it
    /// as played, not as held.
    pub fn play(&self, track: chorus_core::TrackId) {
        let mut p = self.playing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        p.retain(|(t, _)| *t != track);
        p.insert(0, (track, std::time::Instant::now()));
        p.truncate(PLAYED_KEPT);
    }

    /// The tracks started within [`PLAYED_FOR`], the latest first.
    #[must_use]
    pub fn playing(&self) -> Vec<chorus_core::TrackId> {
        let p = self.playing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        p.iter().filter(|(_, at)| at.elapsed() < PLAYED_FOR).map(|(t, _)| t.clone()).collect()
    }

    /// Tells the node that a tracker refused its addresses because none is on the address its
    /// announce came from: it is behind a NAT (or listens on no public address). Unless AutoNAT
    /// has decided already, the node counts as unreachable and reserves a relay circuit at once
    /// instead of after [`PeerConfig::relay_after`].
    pub fn seen_elsewhere(&self) {
        let _ = self.tx.send(Command::SeenElsewhere);
    }
}
