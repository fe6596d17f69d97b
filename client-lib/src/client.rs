//! The client a player embeds: its settings ([`ClientBuilder`]) and the [`Client`] that opens
//! tracks with them.
//!
//! A client is cheap to clone and reused for many tracks: it keeps the edges it reached (their
//! pooled connections), its local cache and its peer node between tracks. Opening a track is
//! [`crate::open`]; fetching it, [`crate::driver`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chorus_core::TrackId;
use chorus_core::keys::VerifyingKey;
use chorus_core::url::BaseUrl;
use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;
use chorus_peer::Peer;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::abr::Quality;
use crate::cache::{LocalCache, Shared};
use crate::edges::Edge;
use crate::error::FetchError;
use crate::fetch::Fetcher;
use crate::ladder::Switching;
use crate::remembered::Memory;
use crate::summary::Summary;
use crate::track::{Preload, Track};

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    pub(crate) edges: Vec<String>,
    pub(crate) origin_key: VerifyingKey,
    trust: ClientTls,
    pub(crate) quality: Quality,
    pub(crate) start_bps: u64,
    pub(crate) token: Option<String>,
    pub(crate) cache: Option<(PathBuf, Option<u64>)>,
    pub(crate) play: bool,
    pub(crate) next_track: Option<TrackId>,
    pub(crate) read_ahead: usize,
    pub(crate) buffer_ahead: Duration,
    pub(crate) p2p: bool,
    pub(crate) p2p_bootstrap: Vec<chorus_peer::Multiaddr>,
    pub(crate) p2p_mdns: bool,
    pub(crate) p2p_upload_rate: Option<u64>,
    pub(crate) p2p_listen: Vec<chorus_peer::Multiaddr>,
    pub(crate) p2p_external: Vec<chorus_peer::Multiaddr>,
    pub(crate) carry_only: bool,
}

impl ClientBuilder {
    /// A client for `edges` (`h3://`, `https://` or `http://` base URLs) that trusts manifests
    /// signed by `origin_key`.
    #[must_use]
    pub fn new(edges: Vec<String>, origin_key: VerifyingKey) -> Self {
        Self {
            edges,
            origin_key,
            trust: ClientTls::default(),
            quality: Quality::Auto { cap: usize::MAX },
            start_bps: crate::abr::AbrConfig::default().start_bps,
            token: None,
            cache: None,
            play: false,
            next_track: None,
            read_ahead: 8,
            buffer_ahead: Duration::from_secs(30),
            p2p: false,
            p2p_bootstrap: Vec::new(),
            p2p_mdns: true,
            p2p_upload_rate: None,
            p2p_listen: Vec::new(),
            p2p_external: Vec::new(),
            carry_only: false,
        }
    }
    /// TLS trust for edges.
    #[must_use]
    pub fn trust(mut self, trust: ClientTls) -> Self {
        self.trust = trust;
        self
    }
    /// Quality preference.
    #[must_use]
    pub const fn quality(mut self, q: Quality) -> Self {
        self.quality = q;
        self
    }
    /// The default quality, bits/s (default 96 000, the "normal" class): with `Quality::Auto`,
    /// a client that has no throughput estimate yet goes to the highest rung at or below it as
    /// soon as its first segment shows the link carries it (docs/client.md, "The first
    /// bitrate").
    #[must_use]
    pub const fn start_bitrate(mut self, bps: u64) -> Self {
        self.start_bps = bps;
        self
    }
    /// Access token for the edges. It goes to edges only: never to a peer.
    #[must_use]
    pub fn token(mut self, t: Option<String>) -> Self {
        self.token = t;
        self
    }
    /// Only carry tracks (fill the cache to serve peers, as `chorus peer --seed` does): a
    /// protected track's segments are handed over as the verified ciphertext they are and no
    /// content key is asked for, so none is needed (default off: segments are playable).
    #[must_use]
    pub const fn carry_only(mut self, on: bool) -> Self {
        self.carry_only = on;
        self
    }
    /// Local cache directory and size.
    #[must_use]
    pub fn cache(mut self, dir: PathBuf, bytes: u64) -> Self {
        self.cache = Some((dir, Some(bytes)));
        self
    }
    /// Local cache directory, at the default size: a tenth of its disk's free space, at most
    /// 10 GiB ([`crate::cache::default_capacity`]).
    #[must_use]
    pub fn cache_default(mut self, dir: PathBuf) -> Self {
        self.cache = Some((dir, None));
        self
    }
    /// The track the listener will play next, when the queue is known: sent to the edge with
    /// the manifest request (`Chorus-Next-Track`) so it can warm that track's first segments.
    #[must_use]
    pub fn next_track(mut self, t: Option<TrackId>) -> Self {
        self.next_track = t;
        self
    }

    /// Fetch paced like a player (keep [`ClientBuilder::buffer_ahead`] of audio ahead of a
    /// playhead moving in real time) instead of as fast as the reader takes segments.
    #[must_use]
    pub const fn play(mut self, play: bool) -> Self {
        self.play = play;
        self
    }

    /// Swap chunks with other listeners (chorus-peer): peers are found through the edges'
    /// tracker, then Kademlia and mDNS; chunks not yet urgent come from peers that hold them,
    /// the start and anything urgent from the edge. With a cache directory this client also
    /// serves what it holds (at most 4 uploads at once) and announces it. The node starts on
    /// the first [`Client::open`] and lives as long as the client.
    #[must_use]
    pub const fn p2p(mut self, on: bool) -> Self {
        self.p2p = on;
        self
    }

    /// Kademlia peers to start from (`…/p2p/PEER_ID`), for finding peers when the trackers
    /// know none.
    #[must_use]
    pub fn p2p_bootstrap(mut self, peers: Vec<chorus_peer::Multiaddr>) -> Self {
        self.p2p_bootstrap = peers;
        self
    }

    /// Whether to look for peers on the local network with mDNS (default on).
    #[must_use]
    pub const fn p2p_mdns(mut self, on: bool) -> Self {
        self.p2p_mdns = on;
        self
    }

    /// Upload bytes per second this client gives other peers, at most (default: no cap);
    /// requests beyond it are answered BUSY.
    #[must_use]
    pub const fn p2p_upload_rate(mut self, bytes_per_sec: Option<u64>) -> Self {
        self.p2p_upload_rate = bytes_per_sec;
        self
    }

    /// Where the peer node listens (default: TCP and QUIC on every interface, ports chosen
    /// by the system).
    #[must_use]
    pub fn p2p_listen(mut self, addrs: Vec<chorus_peer::Multiaddr>) -> Self {
        self.p2p_listen = addrs;
        self
    }

    /// Addresses other peers should use instead of the listen addresses (a port forward);
    /// see [`chorus_peer::PeerConfig::external`].
    #[must_use]
    pub fn p2p_external(mut self, addrs: Vec<chorus_peer::Multiaddr>) -> Self {
        self.p2p_external = addrs;
        self
    }

    /// Audio to keep fetched ahead of the playhead when playing (default 30 s). Less saves
    /// bytes when listeners skip; more rides out longer network trouble.
    #[must_use]
    pub const fn buffer_ahead(mut self, ahead: Duration) -> Self {
        self.buffer_ahead = ahead;
        self
    }

    /// At most this many verified segments are fetched ahead of the one waiting to be taken
    /// (default 8, at least 1): a track that is not read does not fill memory.
    #[must_use]
    pub fn read_ahead(mut self, segments: usize) -> Self {
        self.read_ahead = segments.max(1);
        self
    }

    /// Builds the client.
    ///
    /// # Errors
    /// [`FetchError::NoEdges`], [`FetchError::BadEdge`] or [`FetchError::Tls`] for unusable settings; [`FetchError::Cache`] when the
    /// cache directory cannot be opened.
    pub fn build(self) -> Result<Client, FetchError> {
        if self.edges.is_empty() {
            return Err(FetchError::NoEdges);
        }
        let bases =
            self.edges.iter().map(|e| e.parse()).collect::<Result<Vec<BaseUrl>, _>>().map_err(FetchError::BadEdge)?;
        let http = HttpClient::new(&self.trust)
            .map_err(FetchError::Tls)?
            .with_timeout(Duration::from_secs(10))
            .with_connect_timeout(Duration::from_secs(2));
        // Listing the cache directory is blocking I/O, once, before any track is open.
        let cache = match &self.cache {
            Some((dir, Some(bytes))) => Some(Shared::new(LocalCache::open(dir, *bytes)?)),
            Some((dir, None)) => Some(Shared::new(LocalCache::open_default(dir)?)),
            None => None,
        };
        let memory = Arc::new(Memory::open(self.cache.as_ref().map(|(dir, _)| dir.as_path())));
        Ok(Client {
            inner: Arc::new(Inner {
                net: Fetcher {
                    http,
                    token: self.token.as_deref().map(Arc::from),
                    cache,
                    dials: crate::dials::Shared::default(),
                },
                cfg: self,
                bases,
                memory,
                peer: OnceCell::new(),
                edges: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// A client: cheap to clone, reusable for many tracks.
#[derive(Clone)]
pub struct Client {
    pub(crate) inner: Arc<Inner>,
}

/// What every clone of a client shares.
pub(crate) struct Inner {
    pub(crate) cfg: ClientBuilder,
    /// The configured edges' base URLs, in order.
    pub(crate) bases: Vec<BaseUrl>,
    /// How chunks (and every other request) are fetched: HTTP client, token, cache, dial guard.
    pub(crate) net: Fetcher,
    /// What was learned of the network (HTTP/3 alternatives, throughput), kept beside the cache.
    pub(crate) memory: Arc<Memory>,
    /// The peer node, started on first use when p2p is on (`None` inside when it could not).
    peer: OnceCell<Option<Arc<Peer>>>,
    /// Edges reached, by their index in the configuration, with their idle connections: the
    /// next track reuses them instead of connecting again.
    pub(crate) edges: Mutex<HashMap<usize, Arc<Edge>>>,
}

impl Inner {
    /// The peer node, when p2p is on and it started.
    pub(crate) async fn peer(&self) -> Option<Arc<Peer>> {
        if !self.cfg.p2p {
            return None;
        }
        self.peer.get_or_init(|| crate::p2p::start(self.peer_config(), self.announcer())).await.clone()
    }

    /// The peer node's settings. Without a cache directory it only fetches (and serves nothing).
    fn peer_config(&self) -> crate::p2p::Node {
        let c = &self.cfg;
        let mut cfg = chorus_peer::PeerConfig {
            external: c.p2p_external.clone(),
            consume_only: c.cache.is_none(),
            bootstrap: c.p2p_bootstrap.clone(),
            mdns: c.p2p_mdns,
            upload_rate: c.p2p_upload_rate,
            ..chorus_peer::PeerConfig::default()
        };
        if !c.p2p_listen.is_empty() {
            cfg.listen = c.p2p_listen.clone();
        }
        crate::p2p::Node { cfg, dir: c.cache.as_ref().map(|(dir, _)| dir.clone()) }
    }

    /// Who announces what the cache holds, and to which edges.
    fn announcer(&self) -> crate::p2p::Announcer {
        crate::p2p::Announcer { http: self.net.http.clone(), edges: self.bases.clone(), token: self.net.token.clone() }
    }
}

/// A next track's planned start (see [`Client::preload`]).
pub(crate) struct Plan {
    pub(crate) at: Instant,
    pub(crate) amount: Duration,
}

impl Client {
    /// Opens `track`, switching renditions anywhere in the ladder (each switch hands over the
    /// new rendition's init chunk).
    ///
    /// # Errors
    /// [`FetchError`] when no edge answers (and no verified manifest is cached), the manifest
    /// does not verify, the track is unknown, or an init chunk cannot be had.
    pub async fn open(&self, track: &TrackId) -> Result<Track, FetchError> {
        self.open_with(track, Switching::Anywhere, None).await
    }

    /// Fetches the first `amount` of `track` into the local cache ahead of playing it, for a
    /// playback starting in `starts_in` (the next track of a playlist, when the current one
    /// nears its end): peers that hold it are asked first, and the edge only once a segment
    /// is due within the edges' window (4 s), so the start of the next track comes from
    /// peers when they have it and never arrives late. A later [`Client::open`] of the track
    /// then starts from the cache. The returned handle reports what came from where; dropping
    /// it stops the preload.
    ///
    /// # Errors
    /// [`FetchError::NoCache`] without a cache directory; otherwise as [`Client::open`].
    pub async fn preload(&self, track: &TrackId, starts_in: Duration, amount: Duration) -> Result<Preload, FetchError> {
        if self.inner.net.cache.is_none() {
            return Err(FetchError::NoCache);
        }
        let at = Instant::now() + starts_in;
        let t = self.open_with(track, Switching::Anywhere, Some(Plan { at, amount })).await?;
        Ok(Preload::spawn(t))
    }

    /// Opens `track` as one decodable stream: renditions switch only among those sharing the
    /// decoder configuration of the preferred one, so init + segments concatenate.
    ///
    /// # Errors
    /// As [`Client::open`].
    pub async fn open_stream(&self, track: &TrackId) -> Result<Track, FetchError> {
        self.open_with(track, Switching::OneDecoder, None).await
    }

    /// Fetches `track` as one stream, handing each verified chunk (init chunks included) to
    /// `sink` in play order; returns the summary once the QoE beacon has been sent.
    ///
    /// # Errors
    /// [`FetchError`] as [`Client::open`], or when a chunk cannot be fetched.
    pub async fn fetch(&self, track: &TrackId, mut sink: impl FnMut(&[u8])) -> Result<Summary, FetchError> {
        let mut t = self.open_stream(track).await?;
        while let Some(s) = t.next().await {
            let s = s?;
            if let Some(init) = &s.init {
                sink(init);
            }
            sink(&s.data);
        }
        Ok(t.finish().await)
    }
}
