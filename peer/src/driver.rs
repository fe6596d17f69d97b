//! The task that owns a peer node's [`Swarm`]: it carries out the [`Peer`] handle's commands
//! and answers the swarm's events.
//!
//! Inbound chunk and have requests are admitted here ([`Uploads`]), but the store is read on
//! tokio's blocking pool ([`Loaded`] comes back when a read is done), so a slow disk never
//! stalls the swarm and with it every connection. Outbound chunks are verified against their
//! id before they are handed over; a peer that sends a wrong one is disconnected and banned for
//! the life of the node.
//!
//! The defences against strangers (docs/security.md, "Peers") meet here: the dial guard is told
//! which dials the application asked for; addresses peers report through identify enter
//! Kademlia only through [`crate::learned`]; a chunk exchanged marks its peer useful for the
//! inbound slots; have lists come from a short cache, and each peer has a bounded share of
//! the serving work ([`Uploads`]).
//!
//! [`Peer`]: crate::Peer

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::error::{Chain, cause};
use chorus_core::{ChunkId, TrackId};
use futures_util::StreamExt as _;
use libp2p::kad;
use libp2p::request_response::{self, OutboundRequestId};
use libp2p::swarm::{ConnectionId, NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL};
use crate::config::PeerConfig;
use crate::dial_guard;
use crate::direct::{DirectFirst, Fetch};
use crate::error::PeerError;
use crate::metrics::PeerMetrics;
use crate::node::{Command, FetchReply};
use crate::relay::{NatGuess, RelayDials, RelayState};
use crate::store::Store;
use crate::upload::{Busy, HaveCache, Uploads};
use crate::wire::{ChunkRequest, ChunkResponse, HaveRequest, HaveResponse, Status};

mod relaying;

/// The task that owns the swarm (see the module docs).
pub(crate) struct Driver {
    pub(crate) swarm: Swarm<Behaviour>,
    pub(crate) cfg: PeerConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) metrics: PeerMetrics,
    pub(crate) addrs: watch::Sender<Vec<Multiaddr>>,
    pub(crate) discovered: watch::Sender<HashSet<PeerId>>,
    pub(crate) banned: HashSet<PeerId>,
    pub(crate) fetches: HashMap<OutboundRequestId, (PeerId, ChunkId, FetchReply)>,
    pub(crate) haves: HashMap<OutboundRequestId, oneshot::Sender<Result<Vec<ChunkId>, PeerError>>>,
    pub(crate) providers: HashMap<kad::QueryId, Providers>,
    pub(crate) dials: HashMap<PeerId, Vec<oneshot::Sender<Result<(), PeerError>>>>,
    /// Responses being written, by request, with their peer and size.
    pub(crate) uploads: HashMap<request_response::InboundRequestId, (PeerId, usize)>,
    pub(crate) limits: Uploads,
    /// Have lists made lately, and the requests waiting for one being made.
    pub(crate) have_cache: HaveCache<(PeerId, request_response::ResponseChannel<HaveResponse>)>,
    pub(crate) relays: RelayState,
    /// The node's own dials of relays, and the circuit dials waiting for them.
    pub(crate) relay_dials: RelayDials<(Multiaddr, PeerId)>,
    /// Store reads on the blocking pool report here.
    pub(crate) loaded_tx: mpsc::UnboundedSender<Loaded>,
    /// The dial guard under the transports (told which dials the application asked for).
    pub(crate) guard: dial_guard::Shared,
    /// The peer and remote address of each open connection (what identify reports is checked
    /// against the address).
    pub(crate) remotes: HashMap<ConnectionId, (PeerId, Multiaddr)>,
    /// Which connections are circuits, and the fetches waiting for a direct one.
    pub(crate) direct: DirectFirst<(ChunkId, FetchReply)>,
}

/// A store read done on the blocking pool, back to the swarm task to be answered.
pub(crate) enum Loaded {
    Chunk {
        peer: PeerId,
        request_id: request_response::InboundRequestId,
        channel: request_response::ResponseChannel<ChunkResponse>,
        bytes: Option<Bytes>,
    },
    Have {
        track: TrackId,
        held: Vec<ChunkId>,
    },
}

type Event = <Behaviour as NetworkBehaviour>::ToSwarm;

/// A Kademlia search for a track's providers: those found so far with their addresses, and
/// where to answer.
pub(crate) type Providers = (Vec<(PeerId, Vec<Multiaddr>)>, oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>);

impl Driver {
    pub(crate) async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        mut loaded: mpsc::UnboundedReceiver<Loaded>,
    ) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                cmd = rx.recv() => match cmd {
                    Some(c) => self.command(c),
                    None => return,
                },
                ev = self.swarm.select_next_some() => self.event(ev),
                Some(l) = loaded.recv() => self.loaded(l),
                _ = tick.tick() => {
                    self.reserve_if_needed();
                    for (peer, (_, reply)) in self.direct.expired(Instant::now()) {
                        self.metrics.relayed_only.inc();
                        let _ = reply.send(Err(PeerError::RelayedOnly(peer)));
                    }
                }
            }
        }
    }

    fn command(&mut self, c: Command) {
        match c {
            Command::AddRelays(addrs) => self.add_relays(addrs),
            Command::SeenElsewhere => {
                if self.relays.nat == NatGuess::Unknown {
                    info!("a tracker sees this node at an address it does not listen on: unreachable directly");
                    self.relays.nat = NatGuess::Private;
                    self.reserve_if_needed();
                }
            }
            Command::Dial(addr, reply) => {
                let peer = match addr.iter().last() {
                    Some(libp2p::multiaddr::Protocol::P2p(p)) => Some(p),
                    _ => None,
                };
                if peer.is_some_and(|p| self.swarm.is_connected(&p)) {
                    let _ = reply.send(Ok(()));
                    return;
                }
                let Some(peer) = peer else {
                    // The application's own dial all the same (see `dial_app`).
                    self.guard.lock().allow(&addr, Instant::now());
                    let r = self.swarm.dial(addr.clone()).map_err(|e| dial_error(addr.to_string(), None, e));
                    let _ = reply.send(r);
                    return;
                };
                self.dials.entry(peer).or_default().push(reply);
                self.dial_peer(addr, peer);
            }
            Command::Listen(addr, reply) => {
                let r = self
                    .swarm
                    .listen_on(addr.clone())
                    .map(|_| ())
                    .map_err(|e| PeerError::Listen { addr: addr.to_string(), source: cause(e) });
                let _ = reply.send(r);
            }
            Command::Fetch { peer, id, reply } => {
                if self.banned.contains(&peer) {
                    let _ = reply.send(Err(PeerError::Banned(peer)));
                    return;
                }
                match self.direct.fetch(peer, (id, reply), Instant::now()) {
                    Fetch::Send((id, reply)) => self.send_fetch(peer, id, reply),
                    Fetch::Held => {}
                    Fetch::Fail((_, reply)) => {
                        self.metrics.relayed_only.inc();
                        let _ = reply.send(Err(PeerError::RelayedOnly(peer)));
                    }
                }
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
                    debug!(error = %Chain(&e), %track, "cannot announce on Kademlia");
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
            Command::RoutingAddrs(peer, reply) => {
                let mut found = Vec::new();
                for bucket in self.swarm.behaviour_mut().kad.kbuckets() {
                    for entry in bucket.iter() {
                        if *entry.node.key.preimage() == peer {
                            found.extend(entry.node.value.iter().cloned());
                        }
                    }
                }
                let _ = reply.send(found);
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
            SwarmEvent::ConnectionEstablished { peer_id, endpoint, connection_id, .. } => {
                self.metrics.connections.inc();
                self.remotes.insert(connection_id, (peer_id, endpoint.get_remote_address().clone()));
                if !endpoint.is_relayed() {
                    if self.relays.reserving == Some(peer_id) && self.relays.listener.is_none() {
                        self.reserve_on(peer_id);
                    }
                    for (addr, peer) in self.relay_dials.up(connection_id, peer_id) {
                        self.dial_app(addr, peer);
                    }
                }
                // A direct connection (a punched hole) replaces the circuits to that peer.
                let circuits = self.direct.opened(peer_id, connection_id, endpoint.is_relayed());
                if !circuits.is_empty() && !endpoint.is_relayed() {
                    debug!(peer = %peer_id, "direct connection made; closing the relay circuit");
                    self.metrics.punched.inc();
                }
                for circuit in circuits {
                    self.swarm.close_connection(circuit);
                }
                self.guard.lock().relayed(peer_id, self.direct.relayed(peer_id));
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
            SwarmEvent::ConnectionClosed { peer_id, connection_id, .. } => {
                self.metrics.connections.dec();
                self.remotes.remove(&connection_id);
                for (id, reply) in self.direct.closed(peer_id, connection_id) {
                    self.send_fetch(peer_id, id, reply);
                }
                self.guard.lock().relayed(peer_id, self.direct.relayed(peer_id));
            }
            SwarmEvent::OutgoingConnectionError { peer_id: Some(p), error, connection_id } => {
                for (addr, peer) in self.relay_dials.failed(connection_id) {
                    self.dial_app(addr, peer);
                }
                let e = dial_error(p.to_string(), Some(p), error);
                for r in self.dials.remove(&p).unwrap_or_default() {
                    let _ = r.send(Err(e.clone()));
                }
            }
            SwarmEvent::Behaviour(b) => self.behaviour(b),
            _ => {}
        }
    }

    /// Asks `peer` for chunk `id`.
    fn send_fetch(&mut self, peer: PeerId, id: ChunkId, reply: FetchReply) {
        let rid = self.swarm.behaviour_mut().chunk.send_request(&peer, ChunkRequest::Get { id });
        self.fetches.insert(rid, (peer, id, reply));
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
                    // Anyone on the LAN can multicast an answer: only dialable addresses are
                    // kept (and every dial is charged to the guard).
                    if crate::learned::dialable_ip(&dial_guard::key(&addr)).is_none() {
                        self.metrics.learned_addrs_refused.inc();
                        debug!(%peer, %addr, "mDNS address not dialable; ignored");
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
            // Peers that speak our Kademlia join the routing table with what they listen on, as
            // far as it is on the IP they speak from (or a circuit through a relay we know).
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, connection_id })
                if info.protocols.contains(&KAD_PROTOCOL) =>
            {
                let Some((_, remote)) = self.remotes.get(&connection_id) else { return };
                let kept = crate::learned::routable(peer_id, &info.listen_addrs, remote, &self.relays.addrs());
                let refused = info.listen_addrs.len().saturating_sub(kept.len());
                if refused > 0 {
                    self.metrics.learned_addrs_refused.inc_by(refused as u64);
                    debug!(peer = %peer_id, %remote, reported = ?info.listen_addrs, ?kept, "reported addresses kept out of Kademlia");
                }
                for addr in kept {
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
                    let me = *self.swarm.local_peer_id();
                    for p in providers {
                        if p == me || found.iter().any(|(f, _)| *f == p) {
                            continue;
                        }
                        // The addresses the answer gave for the provider live in the query
                        // only, which ends below: take them now, so the listener can dial it
                        // (the event names providers by id alone). Kademlia hands them out to
                        // the swarm's dials, by peer, through this call; it reads its routing
                        // table and running queries, and ignores the connection id.
                        let offered = self
                            .swarm
                            .behaviour_mut()
                            .kad
                            .handle_pending_outbound_connection(
                                ConnectionId::new_unchecked(0),
                                Some(p),
                                &[],
                                libp2p::core::Endpoint::Dialer,
                            )
                            .unwrap_or_default();
                        let mut addrs: Vec<Multiaddr> = Vec::new();
                        // Each ends in the provider's id, so that a dial of it checks the
                        // handshake; one that names another peer is dropped.
                        for a in offered.into_iter().filter_map(|a| a.with_p2p(p).ok()) {
                            if !addrs.contains(&a) && addrs.len() < chorus_core::api::MAX_ADDRS {
                                addrs.push(a);
                            }
                        }
                        found.push((p, addrs));
                    }
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

    fn chunk_event(&mut self, e: request_response::Event<ChunkRequest, ChunkResponse>) {
        use request_response::{Event as E, InboundFailure, Message};
        match e {
            E::Message { peer, message: Message::Request { request, channel, request_id }, .. } => {
                match self.admit_chunk(peer, request) {
                    Ok(id) => {
                        // Read and hashed on the blocking pool: a slow disk stalls no connection.
                        let (store, tx) = (self.store.clone(), self.loaded_tx.clone());
                        tokio::task::spawn_blocking(move || {
                            let bytes = store.chunk(&id);
                            let _ = tx.send(Loaded::Chunk { peer, request_id, channel, bytes });
                        });
                    }
                    Err(status) => {
                        let _ = self.swarm.behaviour_mut().chunk.send_response(channel, ChunkResponse::Refused(status));
                    }
                }
            }
            E::Message { peer, message: Message::Response { request_id, response }, .. } => {
                let Some((_, id, reply)) = self.fetches.remove(&request_id) else { return };
                let result = match response {
                    ChunkResponse::Ok(bytes) if id.matches(&bytes) => {
                        self.metrics.received_bytes.inc_by(bytes.len() as u64);
                        self.swarm.behaviour_mut().inbound.useful(peer, Instant::now());
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
                    let _ = reply.send(Err(PeerError::Request(cause(error))));
                }
            }
            E::ResponseSent { peer, request_id, .. } => {
                if let Some((_, len)) = self.uploads.remove(&request_id) {
                    self.metrics.sent_bytes.inc_by(len as u64);
                    self.limits.done(&peer);
                    // Served: a listener fetching from this node is what a seeder is for. (A
                    // stranger can hold a slot so, one chunk every GRACE, within the upload
                    // limits: docs/security.md says so.)
                    self.swarm.behaviour_mut().inbound.useful(peer, Instant::now());
                }
            }
            E::InboundFailure { peer, request_id, error, .. } => {
                if self.uploads.remove(&request_id).is_some() {
                    if matches!(error, InboundFailure::Timeout) {
                        // A reader that did not take its response within the deadline: the
                        // stream is cut and the slot is free again.
                        self.metrics.upload_timeouts.inc();
                        debug!(%peer, "upload cut off at the request deadline");
                    }
                    self.limits.done(&peer);
                }
            }
        }
    }

    /// Whether to read the chunk a request asks for: its id, or the status to refuse with.
    fn admit_chunk(&mut self, peer: PeerId, request: ChunkRequest) -> Result<ChunkId, Status> {
        let ChunkRequest::Get { id } = request else { return Err(Status::BadRequest) };
        if self.banned.contains(&peer) {
            return Err(Status::Busy);
        }
        self.limits.admit(peer).inspect_err(|b| self.count_busy(*b))?;
        Ok(id)
    }

    fn count_busy(&self, b: Busy) {
        match b {
            Busy::Node => self.metrics.busy.inc(),
            Busy::Share => self.metrics.share_busy.inc(),
        }
    }

    /// Answers a request whose store read is done.
    fn loaded(&mut self, l: Loaded) {
        match l {
            Loaded::Chunk { peer, request_id, channel, bytes } => {
                let response = match bytes {
                    None => ChunkResponse::Refused(Status::NotFound),
                    Some(b) if !self.limits.send(b.len(), Instant::now()) => {
                        self.metrics.busy.inc();
                        ChunkResponse::Refused(Status::Busy)
                    }
                    Some(b) => ChunkResponse::Ok(b),
                };
                let len = match &response {
                    ChunkResponse::Ok(b) => b.len(),
                    ChunkResponse::Refused(_) => 0,
                };
                if self.swarm.behaviour_mut().chunk.send_response(channel, response).is_ok() && len > 0 {
                    self.uploads.insert(request_id, (peer, len));
                } else {
                    self.limits.done(&peer);
                }
            }
            Loaded::Have { track, held } => {
                self.limits.have_loaded();
                let waiting = self.have_cache.loaded(&track, held.clone(), Instant::now());
                for (peer, channel) in waiting {
                    self.limits.have_answered(&peer);
                    let _ = self.swarm.behaviour_mut().have.send_response(channel, HaveResponse::Ok(held.clone()));
                }
            }
        }
    }

    fn have_event(&mut self, e: request_response::Event<HaveRequest, HaveResponse>) {
        use request_response::{Event as E, Message};
        match e {
            E::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                let track = match request {
                    HaveRequest::Malformed => {
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .have
                            .send_response(channel, HaveResponse::Refused(Status::BadRequest));
                        return;
                    }
                    HaveRequest::Track(t) => t,
                };
                if let Some(held) = self.have_cache.get(&track, Instant::now()) {
                    self.metrics.have_cached.inc();
                    let response = HaveResponse::Ok(held.to_vec());
                    let _ = self.swarm.behaviour_mut().have.send_response(channel, response);
                    return;
                }
                let joins = self.have_cache.loading(&track);
                if let Err(b) = self.limits.admit_have(peer, !joins) {
                    self.count_busy(b);
                    let _ = self.swarm.behaviour_mut().have.send_response(channel, HaveResponse::Refused(b.into()));
                    return;
                }
                if joins {
                    self.metrics.have_cached.inc();
                }
                if self.have_cache.wait(track.clone(), (peer, channel)) {
                    let (store, tx) = (self.store.clone(), self.loaded_tx.clone());
                    tokio::task::spawn_blocking(move || {
                        let held = store.held(&track);
                        let _ = tx.send(Loaded::Have { track, held });
                    });
                }
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
                    let _ = reply.send(Err(PeerError::Request(cause(error))));
                }
            }
            E::ResponseSent { .. } | E::InboundFailure { .. } => {}
        }
    }
}

/// The error of a failed dial to `to`: [`PeerError::WrongPeer`] when the node there has
/// another identity than the address names.
fn dial_error(to: String, listed: Option<PeerId>, e: libp2p::swarm::DialError) -> PeerError {
    match (e, listed) {
        (libp2p::swarm::DialError::WrongPeerId { obtained, .. }, Some(listed)) => {
            PeerError::WrongPeer { listed, obtained: Box::new(obtained) }
        }
        (other, _) => PeerError::Dial { to, source: cause(other) },
    }
}
