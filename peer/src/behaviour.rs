//! The libp2p behaviour of a chorus peer and the swarm built from a [`PeerConfig`]: TCP and
//! QUIC, noise, yamux, identify, ping, Kademlia, mDNS, the two chorus protocols, AutoNAT,
//! relay client and server, DCUtR, and the connection and memory limits.
//!
//! TCP and QUIC sit behind the dial guard ([`crate::dial_guard`]), so every dial of any
//! behaviour is charged to it; inbound connections are bounded below the total
//! ([`crate::inbound`]); identify keeps no address cache of its own (what peers report enters
//! Kademlia only through [`crate::learned`]).

use std::time::Duration;

use libp2p::core::Transport as _;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::identity::Keypair;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::request_response::{self, ProtocolSupport};
use libp2p::swarm::{NetworkBehaviour, behaviour::toggle::Toggle};
use libp2p::{StreamProtocol, Swarm, identify, mdns, noise, ping, tcp, yamux};

use crate::config::{MemoryLimit, PeerConfig};
use chorus_core::error::cause;

use crate::dial_guard::{Guarded, Shared};
use crate::error::{PeerError, start};
use crate::inbound::InboundSlots;
use crate::metrics::PeerMetrics;
use crate::port_reuse::ReuseFallback;
use crate::wire::{CHUNK_PROTOCOL, ChunkCodec, HAVE_PROTOCOL, HaveCodec};

/// Kademlia's protocol name in chorus swarms (docs/protocol.md §5).
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/chorus/kad/1.0.0");

/// Yamux streams per connection, at most.
const MAX_STREAMS: usize = 128;
/// Concurrent inbound requests per protocol and connection, at most.
const MAX_CONCURRENT_REQUESTS: usize = 64;
/// Connections to one peer, at most.
const MAX_PER_PEER: u32 = 2;
/// Incoming connections still in their handshake, at most.
const MAX_PENDING_INCOMING: u32 = 64;
/// A connection with no stream open this long is closed.
const IDLE: Duration = Duration::from_secs(60);

#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: libp2p::connection_limits::Behaviour,
    pub(crate) per_ip: crate::ip_limit::IpLimit,
    pub(crate) memory: libp2p::memory_connection_limits::Behaviour,
    /// After the behaviours that may refuse a connection: it evicts only for one that opens.
    pub(crate) inbound: InboundSlots,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) kad: kad::Behaviour<MemoryStore>,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) chunk: request_response::Behaviour<ChunkCodec>,
    pub(crate) have: request_response::Behaviour<HaveCodec>,
    /// NAT traversal: learn whether we are reachable (AutoNAT), reach others through relays
    /// (circuit v2 client), and upgrade relayed connections to direct ones (DCUtR).
    pub(crate) autonat: libp2p::autonat::Behaviour,
    pub(crate) relay_client: libp2p::relay::client::Behaviour,
    pub(crate) dcutr: libp2p::dcutr::Behaviour,
    pub(crate) relay_server: Toggle<libp2p::relay::Behaviour>,
}

/// A swarm for `cfg` under identity `key`, listening on `cfg.listen`, with `cfg.external`
/// as its external addresses and `cfg.bootstrap` in its Kademlia table; its dials are charged
/// to `guard`.
pub(crate) fn build(
    cfg: &PeerConfig,
    key: Keypair,
    metrics: &PeerMetrics,
    guard: Shared,
) -> Result<Swarm<Behaviour>, PeerError> {
    let timeout = cfg.request_timeout;
    let max_conns = cfg.max_connections;
    let want_mdns = cfg.mdns;
    let relay_server = cfg.relay_server;
    let hide_listen = !cfg.external.is_empty();
    let max_inbound = usize::try_from(cfg.inbound_limit()).unwrap_or(usize::MAX);
    let guard_metrics = metrics.clone();
    let inbound_metrics = metrics.clone();
    let memory = match cfg.memory_limit {
        MemoryLimit::Bytes(b) => libp2p::memory_connection_limits::Behaviour::with_max_bytes(b),
        MemoryLimit::FractionOfRam(f) => {
            libp2p::memory_connection_limits::Behaviour::with_max_percentage(f.clamp(0.01, 1.0))
        }
    };
    let muxer = || {
        let mut c = yamux::Config::default();
        c.set_max_num_streams(MAX_STREAMS);
        c
    };
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_other_transport(|key| -> Result<Guarded, Box<dyn std::error::Error + Send + Sync>> {
            let tcp_config = || tcp::Config::default().nodelay(true);
            let tcp =
                ReuseFallback::new(tcp::tokio::Transport::new(tcp_config()), tcp::tokio::Transport::new(tcp_config()))
                    .upgrade(libp2p::core::upgrade::Version::V1Lazy)
                    .authenticate(noise::Config::new(key)?)
                    .multiplex(muxer())
                    .map(|(p, c), _| (p, StreamMuxerBox::new(c)));
            let quic = libp2p::quic::tokio::Transport::new(libp2p::quic::Config::new(key))
                .map(|(p, c), _| (p, StreamMuxerBox::new(c)));
            let direct = tcp.or_transport(quic).map(|either, _| either.into_inner()).boxed();
            Ok(Guarded::new(direct, guard, guard_metrics))
        })
        .map_err(start("the TCP and QUIC transports"))?
        .with_relay_client(noise::Config::new, muxer)
        .map_err(start("the relay client"))?
        .with_behaviour(|key, relay_client| {
            let id = key.public().to_peer_id();
            let rr = request_response::Config::default()
                .with_request_timeout(timeout)
                .with_max_concurrent_streams(MAX_CONCURRENT_REQUESTS);
            let mut kad = kad::Behaviour::with_config(id, MemoryStore::new(id), kad::Config::new(KAD_PROTOCOL));
            kad.set_mode(Some(kad::Mode::Server));
            let mdns = if want_mdns { mdns::tokio::Behaviour::new(mdns::Config::default(), id).ok() } else { None };
            Behaviour {
                limits: libp2p::connection_limits::Behaviour::new(
                    libp2p::connection_limits::ConnectionLimits::default()
                        .with_max_established(Some(max_conns))
                        .with_max_established_per_peer(Some(MAX_PER_PEER))
                        .with_max_pending_incoming(Some(MAX_PENDING_INCOMING)),
                ),
                per_ip: crate::ip_limit::IpLimit::default(),
                memory,
                inbound: InboundSlots::new(max_inbound, inbound_metrics),
                // No cache: the addresses peers report are filtered into Kademlia by the driver.
                identify: identify::Behaviour::new(
                    identify::Config::new("/chorus/1.0.0".into(), key.public())
                        .with_hide_listen_addrs(hide_listen)
                        .with_cache_size(0),
                ),
                ping: ping::Behaviour::new(ping::Config::new()),
                kad,
                mdns: Toggle::from(mdns),
                chunk: request_response::Behaviour::with_codec(
                    ChunkCodec,
                    [(CHUNK_PROTOCOL, ProtocolSupport::Full)],
                    rr.clone(),
                ),
                have: request_response::Behaviour::with_codec(HaveCodec, [(HAVE_PROTOCOL, ProtocolSupport::Full)], rr),
                autonat: libp2p::autonat::Behaviour::new(id, libp2p::autonat::Config::default()),
                relay_client,
                dcutr: libp2p::dcutr::Behaviour::new(id),
                relay_server: Toggle::from(
                    relay_server.then(|| libp2p::relay::Behaviour::new(id, libp2p::relay::Config::default())),
                ),
            }
        })
        .map_err(|never| match never {})?
        .with_swarm_config(|c| c.with_idle_connection_timeout(IDLE))
        .build();
    for addr in &cfg.external {
        swarm.add_external_address(addr.clone());
    }
    for addr in &cfg.listen {
        swarm.listen_on(addr.clone()).map_err(|e| PeerError::Listen { addr: addr.to_string(), source: cause(e) })?;
    }
    for addr in &cfg.bootstrap {
        if let Some(libp2p::multiaddr::Protocol::P2p(id)) = addr.iter().last() {
            swarm.behaviour_mut().kad.add_address(&id, addr.clone());
        }
    }
    if !cfg.bootstrap.is_empty() {
        let _ = swarm.behaviour_mut().kad.bootstrap();
    }
    Ok(swarm)
}
