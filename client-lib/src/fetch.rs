//! Fetching tracks: the I/O around the [`crate::scheduler::Scheduler`].
//!
//! [`Client::open`] returns a [`Track`]: a handle that yields verified segments in play order
//! while a driver task fetches ahead of the reader. Edges are reached over HTTP/3 first; when
//! QUIC fails (UDP blocked, no HTTP/3 listener) the same host and port are tried over HTTPS
//! (HTTP/2 by ALPN), as browsers do. The manifest is verified against the pinned origin key;
//! every chunk against its id before it is handed over or cached. A wrong chunk is counted as
//! rejected, its source is penalised (the scheduler avoids it for a while) and the chunk is
//! fetched again elsewhere. Chunks in the local cache are used before any network. When the
//! last segment has been handed over, a QoE beacon goes to the edge.
//!
//! Renditions switch at segment boundaries. [`Client::open`] may switch anywhere in the ladder
//! and hands over the new rendition's init chunk with the first segment after a switch (what a
//! player that re-initialises its decoder needs); [`Client::open_stream`] switches only among
//! renditions whose init chunks describe the same decoder configuration (codec, channels,
//! sample rate — a CMAF switching set), so init + segments concatenate into one stream that any
//! decoder plays: that is what [`Track::reader`] and `chorus fetch --out` give.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chorus_core::http::client::{Connection, HttpClient};
use chorus_core::http::tls::ClientTls;
use chorus_core::keys::VerifyingKey;
use chorus_core::manifest::{Manifest, ManifestError};
use chorus_core::{ChunkId, RenditionId, TrackId};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::abr::Quality;
use crate::cache::LocalCache;
use crate::scheduler::{Action, Scheduler, SchedulerConfig, SegmentInfo, SourceId, SourceKind};
use chorus_peer::Peer;

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No edge could be reached, or none delivered the manifest.
    #[error("no edge answered: {0}")]
    Unreachable(String),
    /// The manifest failed verification against the pinned origin key.
    #[error("manifest refused")]
    Manifest(#[from] ManifestError),
    /// The track is unknown.
    #[error("unknown track {0}")]
    NotFound(TrackId),
    /// Every source failed for a chunk, for too long.
    #[error("chunk {0} could not be fetched from any edge")]
    Chunk(ChunkId),
    /// The local cache failed.
    #[error("local cache: {0}")]
    Cache(#[from] std::io::Error),
    /// Bad settings (no edges, unusable TLS files).
    #[error("{0}")]
    Config(String),
}

/// What a fetch did (SPEC §1's `--json` summary).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The track.
    pub track_id: String,
    /// The rendition most segments came in.
    pub rendition: String,
    /// Segments handed over, by rendition (switches happen at segment boundaries).
    pub segments_by_rendition: BTreeMap<String, u64>,
    /// Bytes of all chunks handed over (init chunks included).
    pub bytes_total: u64,
    /// The same bytes by where they came from (they add up to `bytes_total`).
    pub bytes_by_source: BySource,
    /// From opening the track to the first verified playable segment (init + first segment).
    pub startup_ms: u64,
    /// Times playback would have run dry.
    pub stalls: u32,
    /// Time it would have been stalled.
    pub stall_ms: u64,
    /// Chunks that passed verification (including init chunks of renditions that were only
    /// read to decide which renditions can be switched among).
    pub chunks_verified: u64,
    /// Chunks refused (wrong bytes).
    pub chunks_rejected: u64,
    /// Requests sent to a second source because the first would be late.
    pub hedges: u32,
    /// Requests that failed (transport error, refusal, wrong bytes) and went elsewhere.
    pub failures: u32,
    /// Seeks.
    pub seeks: u32,
    /// Peers found holding chunks of the track (with `p2p`).
    pub peers: u32,
    /// The HTTP version used to reach edges: `h3`, `h2` or `http/1.1` (`cache` if none was needed).
    pub protocol: String,
    /// Audio fetched ahead of the playhead right now (live; not part of the JSON summary).
    #[serde(skip)]
    pub buffer_ms: u64,
}

/// Bytes by source.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct BySource {
    /// From edges.
    pub edge: u64,
    /// From peers (issue 5).
    pub peer: u64,
    /// From the local cache.
    pub cache: u64,
}

impl BySource {
    fn add(&mut self, from: &Source, bytes: usize) {
        let slot = match from {
            Source::Cache => &mut self.cache,
            Source::Edge(_) => &mut self.edge,
            Source::Peer(_) => &mut self.peer,
        };
        *slot += bytes as u64;
    }
}

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    edges: Vec<String>,
    origin_key: VerifyingKey,
    trust: ClientTls,
    quality: Quality,
    token: Option<String>,
    cache: Option<(PathBuf, u64)>,
    play: bool,
    next_track: Option<TrackId>,
    read_ahead: usize,
    buffer_ahead: Duration,
    p2p: bool,
    p2p_bootstrap: Vec<chorus_peer::Multiaddr>,
    p2p_mdns: bool,
    p2p_upload_rate: Option<u64>,
    p2p_listen: Vec<chorus_peer::Multiaddr>,
    p2p_external: Vec<chorus_peer::Multiaddr>,
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
    /// Access token for the edges.
    #[must_use]
    pub fn token(mut self, t: Option<String>) -> Self {
        self.token = t;
        self
    }
    /// Local cache directory and size.
    #[must_use]
    pub fn cache(mut self, dir: PathBuf, bytes: u64) -> Self {
        self.cache = Some((dir, bytes));
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
    /// [`FetchError::Config`] for no edges or unusable TLS files; [`FetchError::Cache`] when the
    /// cache directory cannot be opened.
    pub fn build(self) -> Result<Client, FetchError> {
        if self.edges.is_empty() {
            return Err(FetchError::Config("give at least one edge".into()));
        }
        let http = HttpClient::new(&self.trust)
            .map_err(|e| FetchError::Config(e.to_string()))?
            .with_timeout(Duration::from_secs(10))
            .with_connect_timeout(Duration::from_secs(2));
        let cache = match &self.cache {
            Some((dir, bytes)) => Some(Arc::new(Mutex::new(LocalCache::open(dir, *bytes)?))),
            None => None,
        };
        Ok(Client {
            inner: Arc::new(Inner {
                cfg: self,
                http,
                cache,
                peer: tokio::sync::OnceCell::new(),
                edges: Mutex::new(HashMap::new()),
            }),
        })
    }
}

/// A client: cheap to clone, reusable for many tracks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ClientBuilder,
    http: HttpClient,
    cache: Option<Arc<Mutex<LocalCache>>>,
    /// The peer node, started on first use when p2p is on (`None` inside when it could not).
    peer: tokio::sync::OnceCell<Option<Arc<Peer>>>,
    /// Edges reached, by their index in the configuration, with their idle connections: the
    /// next track reuses them instead of connecting again.
    edges: Mutex<HashMap<usize, Arc<Edge>>>,
}

/// How often a p2p client announces what its cache holds (the tracker forgets after 5 min).
const REANNOUNCE: Duration = Duration::from_secs(120);

/// Announces the tracks `dir` holds (see [`chorus_peer::tracker::announce_held`]).
async fn announce_held(
    http: &HttpClient,
    peer: &Peer,
    dir: &std::path::Path,
    edges: &[String],
    token: Option<&str>,
    announced: &mut Vec<TrackId>,
) {
    let store = chorus_peer::DirStore::new(dir);
    for (edge, r) in chorus_peer::tracker::announce_held(http, peer, &store, edges, token, announced).await {
        if let Err(error) = r {
            tracing::debug!(%edge, %error, "announce failed");
        }
    }
}

/// A store for a client without a cache directory: it serves nothing.
struct NoStore;

impl chorus_peer::Store for NoStore {
    fn chunk(&self, _: &ChunkId) -> Option<Bytes> {
        None
    }
    fn held(&self, _: &TrackId) -> Vec<ChunkId> {
        Vec::new()
    }
    fn tracks(&self) -> Vec<TrackId> {
        Vec::new()
    }
}

impl Inner {
    /// The peer node, when p2p is on and it started.
    async fn peer(&self) -> Option<Arc<Peer>> {
        if !self.cfg.p2p {
            return None;
        }
        self.peer
            .get_or_init(|| async {
                let store: Arc<dyn chorus_peer::Store> = match &self.cfg.cache {
                    Some((dir, _)) => Arc::new(chorus_peer::DirStore::new(dir)),
                    None => Arc::new(NoStore),
                };
                let key = self
                    .cfg
                    .cache
                    .as_ref()
                    .and_then(|(dir, _)| chorus_peer::load_or_create_identity(&dir.join("peer.key")).ok());
                let mut cfg = chorus_peer::PeerConfig {
                    external: self.cfg.p2p_external.clone(),
                    consume_only: self.cfg.cache.is_none(),
                    bootstrap: self.cfg.p2p_bootstrap.clone(),
                    mdns: self.cfg.p2p_mdns,
                    upload_rate: self.cfg.p2p_upload_rate,
                    ..chorus_peer::PeerConfig::default()
                };
                if !self.cfg.p2p_listen.is_empty() {
                    cfg.listen = self.cfg.p2p_listen.clone();
                }
                match Peer::start(cfg, store, key, &prometheus::Registry::new()) {
                    Ok(p) => {
                        let p = Arc::new(p);
                        // A long-lived client keeps its announcements fresh (and withdraws what
                        // was evicted) until it is dropped.
                        if let Some((dir, _)) = self.cfg.cache.clone() {
                            let weak = Arc::downgrade(&p);
                            let (http, edges, token) =
                                (self.http.clone(), self.cfg.edges.clone(), self.cfg.token.clone());
                            tokio::spawn(async move {
                                let mut announced = Vec::new();
                                loop {
                                    tokio::time::sleep(REANNOUNCE).await;
                                    let Some(peer) = weak.upgrade() else { return };
                                    announce_held(&http, &peer, &dir, &edges, token.as_deref(), &mut announced).await;
                                }
                            });
                        }
                        Some(p)
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "peer node did not start; fetching from edges only");
                        None
                    }
                }
            })
            .await
            .clone()
    }
}

/// One edge as a source: its URL to use, and idle connections.
struct Edge {
    base: String,
    /// The HTTP version spoken ("h3", "h2", "http/1.1").
    protocol: String,
    pool: Mutex<Vec<Connection>>,
}

impl Edge {
    /// Sends `req` on an idle pooled connection (or a new one), returning the connection to the
    /// pool after a complete answer.
    ///
    /// A pooled connection the server closed meanwhile costs one retry on a new connection
    /// (every request here is a GET).
    async fn send(&self, http: &HttpClient, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, String> {
        let pooled = {
            let mut pool = lock(&self.pool);
            pool.retain(|c| !c.is_closed());
            pool.pop()
        };
        if let Some(mut conn) = pooled {
            let retry = clone_request(&req);
            match conn.send(req).await {
                Ok(r) => {
                    lock(&self.pool).push(conn);
                    return Ok(r);
                }
                Err(_) => return self.send_new(http, retry).await,
            }
        }
        self.send_new(http, req).await
    }

    async fn send_new(&self, http: &HttpClient, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, String> {
        let mut conn = http.connect(&self.base, false).await.map_err(|e| e.to_string())?;
        let r = conn.send(req).await.map_err(|e| e.to_string())?;
        lock(&self.pool).push(conn);
        Ok(r)
    }

    /// Whether a pooled connection may still be open.
    fn reachable(&self) -> bool {
        lock(&self.pool).iter().any(|c| !c.is_closed())
    }
}

fn clone_request(req: &http::Request<Bytes>) -> http::Request<Bytes> {
    let mut r = http::Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Where a segment came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The local cache.
    Cache,
    /// An edge, by the base URL used (after any HTTP/3 → HTTPS fallback).
    Edge(String),
    /// A peer, by its libp2p peer id.
    Peer(String),
}

/// A verified segment, handed over in play order.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Index in the rendition's segment list (the same in every rendition).
    pub index: usize,
    /// Media time it starts at.
    pub start: Duration,
    /// Media time it lasts.
    pub duration: Duration,
    /// The rendition it is in.
    pub rendition: RenditionId,
    /// The rendition's init chunk, present on the first segment, after a seek, and (for a
    /// track from [`Client::open`]) after every rendition switch; always `None` for raw files.
    pub init: Option<Bytes>,
    /// The segment's bytes, checked against its id.
    pub data: Bytes,
    /// Where it came from.
    pub source: Source,
}

/// What the track holds, known once it is open.
#[derive(Debug, Clone)]
pub struct TrackInfo {
    /// The track.
    pub track_id: TrackId,
    /// Total media time.
    pub duration: Duration,
    /// Number of segments.
    pub segments: usize,
    /// The renditions this handle may switch among, lowest bitrate first.
    pub renditions: Vec<RenditionId>,
}

/// A next track's planned start (see [`Client::preload`]).
struct Plan {
    at: Instant,
    amount: Duration,
}

/// A preload in progress ([`Client::preload`]); dropping it stops the preload.
pub struct Preload {
    task: JoinHandle<Result<Summary, FetchError>>,
}

impl Preload {
    /// Waits for the preload to end; its summary says where the bytes came from.
    ///
    /// # Errors
    /// As [`Track::next`]: a chunk no source could deliver.
    pub async fn finish(mut self) -> Result<Summary, FetchError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(FetchError::Config(format!("preload stopped: {e}"))),
        }
    }
}

impl Drop for Preload {
    fn drop(&mut self) {
        self.task.abort();
    }
}

enum Control {
    Seek { generation: u64, segment: usize },
}

enum Delivery {
    Segment(u64, Segment),
    End(u64),
    Failed(FetchError),
}

/// An open track: verified segments in play order, with seek, stats and cancellation.
///
/// Dropping the handle (or [`Track::cancel`]) stops every request in flight at once.
pub struct Track {
    info: TrackInfo,
    rx: mpsc::Receiver<Delivery>,
    control: Option<mpsc::UnboundedSender<Control>>,
    summary: watch::Receiver<Summary>,
    generation: u64,
    driver: Option<JoinHandle<()>>,
    ended: bool,
    /// Media start of each segment.
    starts: Vec<Duration>,
}

impl Track {
    /// What the track holds.
    #[must_use]
    pub const fn info(&self) -> &TrackInfo {
        &self.info
    }

    /// The next verified segment in play order; `None` after the last one.
    ///
    /// # Errors
    /// [`FetchError::Chunk`] when a chunk could not be had from any source (the track then
    /// ends), or a local cache error.
    pub async fn next(&mut self) -> Option<Result<Segment, FetchError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polling form of [`Track::next`].
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Segment, FetchError>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(Delivery::Segment(g, s)) if g == self.generation => return Poll::Ready(Some(Ok(s))),
                Some(Delivery::End(g)) if g == self.generation => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Some(Delivery::Failed(e)) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Some(_) => {} // from before a seek
                None => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
            }
        }
    }

    /// Continues from the segment holding media time `to` (the last segment for times past
    /// the end): what was fetched ahead is dropped, requests in flight are cancelled, and the
    /// next segment handed over is that one, with its rendition's init chunk. Returns its index.
    pub fn seek(&mut self, to: Duration) -> usize {
        let segment = crate::scheduler::segment_at(&self.starts, to);
        self.generation += 1;
        self.ended = false;
        if let Some(c) = &self.control {
            let _ = c.send(Control::Seek { generation: self.generation, segment });
        }
        segment
    }

    /// What happened so far.
    #[must_use]
    pub fn stats(&self) -> Summary {
        self.summary.borrow().clone()
    }

    /// Stops fetching now: requests in flight are dropped, nothing more is handed over.
    pub fn cancel(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.control = None;
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }

    /// Stops the track after the last segment (the QoE beacon has then been sent) and returns
    /// the final summary.
    pub async fn finish(mut self) -> Summary {
        self.control = None; // the driver exits once it has nothing left to do
        if let Some(d) = self.driver.take() {
            let _ = d.await;
        }
        self.summary.borrow().clone()
    }

    /// The track as bytes: each segment's init chunk (when present) then its data, in play
    /// order. Open with [`Client::open_stream`] for bytes a decoder plays end to end.
    #[must_use]
    pub fn reader(self) -> TrackReader {
        TrackReader { track: self, pending: Vec::new() }
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        self.stop();
    }
}

/// [`tokio::io::AsyncRead`] over a track's verified bytes (see [`Track::reader`]).
pub struct TrackReader {
    track: Track,
    /// Chunks still to be read, in reverse order (the next at the end).
    pending: Vec<Bytes>,
}

impl TrackReader {
    /// The track, for stats.
    #[must_use]
    pub const fn track(&self) -> &Track {
        &self.track
    }
}

impl tokio::io::AsyncRead for TrackReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if let Some(chunk) = self.pending.last_mut() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk.split_to(n));
                if chunk.is_empty() {
                    self.pending.pop();
                }
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(self.track.poll_next(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
                Some(Ok(s)) => {
                    self.pending.push(s.data);
                    self.pending.extend(s.init);
                    self.pending.retain(|b| !b.is_empty());
                }
            }
        }
    }
}

/// Whether a handle may switch anywhere in the ladder or only within one decoder configuration.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Switching {
    Anywhere,
    OneDecoder,
}

/// One rendition as the driver uses it.
struct Rung {
    id: RenditionId,
    init: Option<(ChunkId, Bytes, Source)>,
    segments: Vec<ChunkId>,
}

impl Client {
    /// Connects to an edge: HTTP/3 for an `h3://` URL, falling back to HTTPS on the same
    /// host and port when QUIC fails.
    async fn connect(inner: &Inner, base: &str) -> Option<(Connection, String)> {
        if let Some(hostport) = base.strip_prefix("h3://") {
            if let Ok(c) = inner.http.connect(base, false).await {
                return Some((c, base.to_owned()));
            }
            let https = format!("https://{hostport}");
            return inner.http.connect(&https, false).await.ok().map(|c| (c, https));
        }
        inner.http.connect(base, false).await.ok().map(|c| (c, base.to_owned()))
    }

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
    /// [`FetchError::Config`] without a cache directory; otherwise as [`Client::open`].
    pub async fn preload(&self, track: &TrackId, starts_in: Duration, amount: Duration) -> Result<Preload, FetchError> {
        if self.inner.cache.is_none() {
            return Err(FetchError::Config("preloading needs a cache directory".into()));
        }
        let at = Instant::now() + starts_in;
        let mut t = self.open_with(track, Switching::Anywhere, Some(Plan { at, amount })).await?;
        let task = tokio::spawn(async move {
            while let Some(s) = t.next().await {
                s?;
            }
            Ok(t.finish().await)
        });
        Ok(Preload { task })
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

    async fn open_with(&self, track: &TrackId, switching: Switching, plan: Option<Plan>) -> Result<Track, FetchError> {
        let inner = &self.inner;
        let started = Instant::now();
        // Reach every edge at once (or reuse the connections of the previous track); keep the
        // configured order (the first is the preferred).
        let mut reached: BTreeMap<usize, Arc<Edge>> = BTreeMap::new();
        let mut connecting = JoinSet::new();
        let known = lock(&inner.edges).clone();
        for (i, base) in inner.cfg.edges.iter().enumerate() {
            if let Some(e) = known.get(&i).filter(|e| e.reachable()) {
                reached.insert(i, e.clone());
                continue;
            }
            let (inner, base) = (self.inner.clone(), base.clone());
            connecting.spawn(async move { (i, Self::connect(&inner, &base).await) });
        }
        while let Some(j) = connecting.join_next().await {
            if let Ok((i, Some((conn, base)))) = j {
                let protocol = conn.protocol().as_str().to_owned();
                let e = Arc::new(Edge { base, protocol, pool: Mutex::new(vec![conn]) });
                lock(&inner.edges).insert(i, e.clone());
                reached.insert(i, e);
            }
        }
        let protocol = reached.values().next().map_or_else(|| "cache".to_owned(), |e| e.protocol.clone());
        let edges: Vec<Arc<Edge>> = reached.into_values().collect();
        let manifest = self.manifest(track, &edges).await?;
        let mut summary = Summary { track_id: track.to_string(), protocol, ..Summary::default() };

        // The ladder, lowest first, with every init chunk (small; needed to switch).
        let mut ladder: Vec<&chorus_core::manifest::Rendition> = manifest.renditions.iter().collect();
        ladder.sort_by_key(|r| r.bitrate_bps);
        if ladder.is_empty() {
            return Err(FetchError::NotFound(track.clone())); // a verified manifest always has one
        }
        // The first segment of the rendition playback will most likely start with is fetched
        // alongside the init chunks (not after them): a round trip less to the first sound.
        let speculative = {
            let bps: Vec<u64> = ladder.iter().map(|r| r.bitrate_bps).collect();
            let guess = crate::abr::choose(
                &crate::abr::AbrConfig::default(),
                inner.cfg.quality,
                &bps,
                None,
                Duration::ZERO,
                None,
            );
            // Not when the start is planned (a preload), nor when the cache holds the first
            // segment in some rendition (the scheduler takes that one, at no cost).
            let cached_start = inner.cache.as_ref().is_some_and(|c| {
                let c = lock(c);
                ladder.iter().filter_map(|r| r.segments.first()).any(|s| c.contains(&s.id))
            });
            let first = if plan.is_some() || cached_start {
                None
            } else {
                ladder.get(guess).and_then(|r| r.segments.first()).map(|s| s.id)
            };
            first.map(|id| {
                let (this, edges) = (self.clone(), edges.clone());
                (
                    id,
                    tokio::spawn(async move {
                        let t = Instant::now();
                        // Not stored in the cache here: the segment's own fetch stores it when
                        // it takes this answer. Stored now, a startup race's other request would
                        // find it there and count the edge's bytes as a cache hit.
                        let r = this.chunk(&edges, id, false).await;
                        (r, t.elapsed())
                    }),
                )
            })
        };
        let mut inits = JoinSet::new();
        for (i, id) in ladder.iter().enumerate().filter_map(|(i, r)| r.init.map(|c| (i, c.id))) {
            let (this, edges) = (self.clone(), edges.clone());
            inits.spawn(async move { (i, id, this.chunk(&edges, id, true).await) });
        }
        let mut init_of = BTreeMap::new();
        while let Some(j) = inits.join_next().await {
            let Ok((i, id, fetched)) = j else { continue };
            let got = fetched?;
            summary.chunks_verified += 1;
            summary.chunks_rejected += got.rejected;
            init_of.insert(i, (id, got.bytes, got.source));
        }
        let mut rungs = Vec::with_capacity(ladder.len());
        for (i, r) in ladder.iter().enumerate() {
            if let Some(c) = r.init
                && !init_of.contains_key(&i)
            {
                return Err(FetchError::Chunk(c.id));
            }
            let init = init_of.remove(&i);
            rungs.push(Rung { id: r.id.clone(), init, segments: r.segments.iter().map(|s| s.id).collect() });
        }
        let top = rungs.len().saturating_sub(1);
        let preferred = match inner.cfg.quality {
            Quality::Fixed(i) => i.min(top),
            Quality::Auto { cap } => cap.min(top),
        };
        let allowed: Vec<usize> = match switching {
            Switching::Anywhere => (0..rungs.len()).collect(),
            Switching::OneDecoder => {
                let config = |i: usize| rungs[i].init.as_ref().and_then(|(_, b, _)| chorus_core::cmaf::audio_config(b));
                let want = (ladder[preferred].codec.as_str(), config(preferred));
                (0..rungs.len()).filter(|&i| i == preferred || (ladder[i].codec.as_str(), config(i)) == want).collect()
            }
        };
        let quality = match inner.cfg.quality {
            Quality::Fixed(_) => Quality::Fixed(allowed.iter().position(|&i| i == preferred).unwrap_or(0)),
            Quality::Auto { .. } => Quality::Auto { cap: allowed.iter().position(|&i| i == preferred).unwrap_or(0) },
        };
        let ladder_bps: Vec<u64> = allowed.iter().map(|&i| ladder[i].bitrate_bps).collect();
        let segments: Vec<SegmentInfo> = (0..ladder[0].segments.len())
            .map(|k| SegmentInfo {
                duration: Duration::from_millis(ladder[0].segments[k].duration_ms),
                sizes: allowed.iter().map(|&i| ladder[i].segments.get(k).map_or(0, |s| s.size)).collect(),
            })
            .collect();
        let mut cfg = SchedulerConfig { quality, buffer_ahead: inner.cfg.buffer_ahead, ..SchedulerConfig::default() };
        if !inner.cfg.play {
            cfg.buffer_ahead = Duration::from_secs(86_400 * 365);
            cfg.max_inflight = 4;
        }
        let mut sched = Scheduler::new(cfg, ladder_bps, segments, edges.len().max(1), started.into_std());
        if let Some(c) = &inner.cache {
            let c = lock(c);
            for (j, &i) in allowed.iter().enumerate() {
                for (k, seg) in ladder[i].segments.iter().enumerate() {
                    if c.contains(&seg.id) {
                        sched.set_cached(k, j);
                    }
                }
            }
        }
        // A preload stops after the segments covering `amount`.
        let mut upto = sched.len();
        if let Some(p) = &plan {
            sched.plan_start(p.at.into_std());
            upto = (sched.segment_at(p.amount.saturating_sub(Duration::from_millis(1))) + 1).min(sched.len());
        }
        // Peers are looked for while the start comes from the edge: each one that answers
        // joins the scheduler as it does, so finding them never delays playback.
        let peer = inner.peer().await;
        let (found_tx, found_rx) = mpsc::unbounded_channel();
        if let Some(p) = &peer {
            sched.set_awaiting_peers(true);
            let (this, p, track, edges, tx) = (self.clone(), p.clone(), track.clone(), edges.clone(), found_tx.clone());
            tokio::spawn(async move {
                this.peers_holding(&p, &track, &edges, &tx).await;
                let _ = tx.send(PeerNews::Done);
            });
        }
        let starts: Vec<Duration> = (0..sched.len()).map(|i| sched.media_start(i)).collect();
        let info = TrackInfo {
            track_id: track.clone(),
            duration: sched.media_start(sched.len()),
            segments: upto,
            renditions: allowed.iter().map(|&i| rungs[i].id.clone()).collect(),
        };
        let allowed_rungs: Vec<Rung> = {
            let mut by_index: Vec<Option<Rung>> = rungs.into_iter().map(Some).collect();
            allowed.iter().filter_map(|&i| by_index[i].take()).collect()
        };
        let (tx, rx) = mpsc::channel(1);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (summary_tx, summary_rx) = watch::channel(summary.clone());
        let driver = Driver {
            peer,
            peer_of: HashMap::new(),
            found: found_rx,
            found_tx,
            init_on_switch: switching == Switching::Anywhere,
            inner: self.inner.clone(),
            track: track.clone(),
            edges,
            rungs: allowed_rungs,
            sched,
            starts: starts.clone(),
            tx,
            control: control_rx,
            summary_tx,
            summary,
            started,
            upto,
            preload: plan.is_some(),
            speculative,
        };
        let handle = tokio::spawn(driver.run());
        Ok(Track {
            info,
            rx,
            control: Some(control_tx),
            summary: summary_rx,
            generation: 0,
            driver: Some(handle),
            ended: false,
            starts,
        })
    }

    /// Peers that hold chunks of `track`, sent to `found` with what they hold as each answers:
    /// candidates from the edges' tracker (one round trip), else Kademlia providers, plus peers
    /// found on the local network; at most 8 are dialled and asked, in parallel, for at most 2 s.
    async fn peers_holding(
        &self,
        p: &Arc<Peer>,
        track: &TrackId,
        edges: &[Arc<Edge>],
        found: &mpsc::UnboundedSender<PeerNews>,
    ) {
        const LOOK: Duration = Duration::from_secs(2);
        let inner = &self.inner;
        let token = inner.cfg.token.as_deref();
        let mut cands: Vec<(chorus_peer::PeerId, Vec<chorus_peer::Multiaddr>)> = Vec::new();
        for e in edges {
            if let Ok(Ok(answer)) =
                tokio::time::timeout(LOOK, chorus_peer::tracker::peers(&inner.http, &e.base, track, token)).await
            {
                for r in answer.relays {
                    p.add_relay(r);
                }
                // The tracker may already list this node (it announces once its first segment
                // is in): it is no candidate, and must not stand in for a Kademlia search.
                cands = answer.peers.into_iter().filter(|(id, _)| *id != p.peer_id()).collect();
                break;
            }
        }
        if cands.is_empty()
            && let Ok(Ok(found)) = tokio::time::timeout(LOOK, p.find_providers(track.clone())).await
        {
            cands = found.into_iter().map(|id| (id, Vec::new())).collect();
        }
        tracing::debug!(%track, candidates = cands.len(), "peers from the tracker or Kademlia");
        for id in p.discovered() {
            if !cands.iter().any(|(c, _)| *c == id) {
                cands.push((id, Vec::new()));
            }
        }
        cands.retain(|(id, _)| *id != p.peer_id());
        cands.truncate(8);
        let mut asking = JoinSet::new();
        for (id, addrs) in cands {
            let (p, track) = (p.clone(), track.clone());
            asking.spawn(async move {
                let ask = async {
                    for a in &addrs {
                        if p.dial(a.clone()).await.is_ok() {
                            break;
                        }
                    }
                    p.have(id, track).await.ok()
                };
                tokio::time::timeout(LOOK, ask).await.ok().flatten().map(|held| (id, held.into_iter().collect()))
            });
        }
        while let Some(j) = asking.join_next().await {
            if let Ok(Some((id, held))) = j
                && found.send(PeerNews::Holds(id, held)).is_err()
            {
                return; // the track is over
            }
        }
    }

    /// The verified manifest: from the first edge that delivers one that verifies, or with no
    /// edge reachable, the last verified copy in the local cache (checked again).
    async fn manifest(&self, track: &TrackId, edges: &[Arc<Edge>]) -> Result<Manifest, FetchError> {
        let inner = &self.inner;
        let cached = inner.cfg.cache.as_ref().map(|(dir, _)| dir.join("manifests").join(format!("{track}.json")));
        if edges.is_empty() {
            let offline = cached.as_ref().and_then(|p| std::fs::read(p).ok());
            let Some(doc) = offline else {
                return Err(FetchError::Unreachable(format!("none of {:?}", inner.cfg.edges)));
            };
            return Ok(Manifest::verify(&doc, &inner.cfg.origin_key)?);
        }
        let mut last = String::new();
        for e in edges {
            let mut req = inner.request(&format!("/v1/tracks/{track}/manifest"));
            if let Some(next) = inner.cfg.next_track.as_ref().and_then(|n| http::HeaderValue::from_str(n.as_str()).ok())
            {
                req.headers_mut().insert("chorus-next-track", next);
            }
            match e.send(&inner.http, req).await {
                Ok(r) if r.status() == http::StatusCode::OK => {
                    match Manifest::verify(r.body(), &inner.cfg.origin_key) {
                        Ok(m) => {
                            if let (Some(path), Ok(doc)) = (&cached, m.to_json()) {
                                if let Some(dir) = path.parent() {
                                    std::fs::create_dir_all(dir)?;
                                }
                                chorus_core::fsutil::write_atomic(path, &doc, 0o644)?;
                            }
                            return Ok(m);
                        }
                        Err(e @ (ManifestError::WrongKey { .. } | ManifestError::UnsupportedFormat(_))) => {
                            return Err(e.into());
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                Ok(r) if r.status() == http::StatusCode::NOT_FOUND => return Err(FetchError::NotFound(track.clone())),
                Ok(r) => last = format!("{} answered {}", e.base, r.status()),
                Err(err) => last = err,
            }
        }
        Err(FetchError::Unreachable(last))
    }

    /// One chunk outside the scheduler (init chunks, the speculative first segment): cache,
    /// then each edge in turn; what an edge sends is stored in the cache if `store`.
    async fn chunk(&self, edges: &[Arc<Edge>], id: ChunkId, store: bool) -> Result<OneChunk, FetchError> {
        let inner = &self.inner;
        if let Some(bytes) = inner.cache.as_ref().and_then(|c| lock(c).get(&id)) {
            return Ok(OneChunk { bytes: Bytes::from(bytes), source: Source::Cache, rejected: 0 });
        }
        let mut rejected = 0;
        for e in edges {
            if let Ok(r) = e.send(&inner.http, inner.request(&format!("/v1/chunks/{id}"))).await {
                if r.status() == http::StatusCode::OK && id.matches(r.body()) {
                    let bytes = r.into_body();
                    if let Some(c) = inner.cache.as_ref().filter(|_| store) {
                        lock(c).put(&id, &bytes)?;
                    }
                    return Ok(OneChunk { bytes, source: Source::Edge(e.base.clone()), rejected });
                } else if r.status() == http::StatusCode::OK {
                    rejected += 1;
                }
            }
        }
        Err(FetchError::Chunk(id))
    }
}

impl Inner {
    fn request(&self, path: &str) -> http::Request<Bytes> {
        let mut b = http::Request::get(path);
        if let Some(t) = &self.cfg.token {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Bytes::new()).unwrap_or_else(|_| http::Request::new(Bytes::new()))
    }
}

/// What the peer search tells the driver.
enum PeerNews {
    /// A peer holds these chunks of the track (now; asked again every few seconds).
    Holds(chorus_peer::PeerId, std::collections::HashSet<ChunkId>),
    /// The first search is over: edges need no longer hold back.
    Done,
}

/// How often a playing track asks again who holds what (peers fetch ahead too).
const PEER_REFRESH: Duration = Duration::from_secs(5);

/// A chunk fetched outside the scheduler.
struct OneChunk {
    bytes: Bytes,
    source: Source,
    rejected: u64,
}

/// A chunk requested ahead of the scheduler, with the time the request took.
type Early = JoinHandle<(Result<OneChunk, FetchError>, Duration)>;

/// The outcome of one chunk request.
struct Fetched {
    generation: u64,
    segment: usize,
    rung: usize,
    source: SourceId,
    result: Result<(Bytes, Duration, bool), Rejected>,
}

enum Rejected {
    /// Transport error or non-200 answer.
    Failed,
    /// Bytes that do not hash to the id (from an edge: avoided for a while; from a peer:
    /// banned).
    WrongBytes,
}

/// The task behind a [`Track`]: runs the scheduler, carries out its actions, verifies, caches,
/// and hands segments over in order.
struct Driver {
    /// The peer node, and which scheduler sources are which peers.
    peer: Option<Arc<Peer>>,
    peer_of: HashMap<usize, chorus_peer::PeerId>,
    found: mpsc::UnboundedReceiver<PeerNews>,
    found_tx: mpsc::UnboundedSender<PeerNews>,
    /// Hand over the init chunk at rendition switches (not needed within one decoder
    /// configuration, where it would only repeat the `moov` in the byte stream).
    init_on_switch: bool,
    inner: Arc<Inner>,
    track: TrackId,
    edges: Vec<Arc<Edge>>,
    rungs: Vec<Rung>,
    sched: Scheduler,
    starts: Vec<Duration>,
    tx: mpsc::Sender<Delivery>,
    control: mpsc::UnboundedReceiver<Control>,
    summary_tx: watch::Sender<Summary>,
    summary: Summary,
    started: Instant,
    /// Segments at or beyond this are never fetched (a preload's end; else the track's).
    upto: usize,
    /// A preload: no QoE beacon (nothing was played).
    preload: bool,
    /// The first segment's chunk, requested while the track was being opened.
    speculative: Option<(ChunkId, Early)>,
}

impl Driver {
    async fn run(mut self) {
        let n = self.upto;
        let read_ahead = self.inner.cfg.read_ahead;
        let mut generation = 0u64;
        let mut tasks: JoinSet<Fetched> = JoinSet::new();
        let mut handles: HashMap<(usize, usize), AbortHandle> = HashMap::new();
        let mut done: BTreeMap<usize, (usize, Bytes, Source)> = BTreeMap::new();
        let mut next_out = 0usize;
        let mut last_rung: Option<usize> = None;
        let mut attempts = vec![0u32; n];
        // Segments of this session already verified (a hedge's loser may still answer).
        let mut have = vec![false; n];
        let mut end_sent = false;
        let mut beacon: Option<JoinHandle<()>> = None;
        let max_attempts = 8 * u32::try_from(self.edges.len().max(1)).unwrap_or(u32::MAX);
        let tx = self.tx.clone();
        let mut sid_of: HashMap<chorus_peer::PeerId, SourceId> = HashMap::new();
        let mut refresh = tokio::time::interval_at(Instant::now() + PEER_REFRESH, PEER_REFRESH);
        let mut announced_start = false;
        loop {
            self.sched.set_limit((next_out + read_ahead).min(n));
            let now = Instant::now().into_std();
            for a in self.sched.poll(now) {
                match a {
                    Action::Fetch { segment, rendition, source, .. } => {
                        // Only edge attempts count toward giving up: a peer that is busy, gone or
                        // lying costs a retry, and the edge is always there after it.
                        if !self.peer_of.contains_key(&source.0) {
                            attempts[segment] += 1;
                        }
                        let id = self.rungs[rendition].segments[segment];
                        if attempts[segment] > max_attempts {
                            let _ = self.tx.send(Delivery::Failed(FetchError::Chunk(id))).await;
                            return;
                        }
                        let handle = self.spawn_fetch(&mut tasks, generation, segment, rendition, source);
                        handles.insert((segment, source.0), handle);
                    }
                    Action::Cancel { segment, source } => {
                        if let Some(h) = handles.remove(&(segment, source.0)) {
                            h.abort();
                        }
                    }
                }
            }
            if next_out >= n && !end_sent && done.is_empty() {
                self.publish();
                if beacon.is_none() && !self.preload {
                    // Detached, so that dropping the handle right after the end does not lose it.
                    beacon = Some(tokio::spawn(self.beacon()));
                }
                if !end_sent {
                    self.announce();
                }
                if self.tx.send(Delivery::End(generation)).await.is_err() {
                    return;
                }
                end_sent = true;
            }
            let deliverable = done.contains_key(&next_out);
            let wake = self.sched.next_wakeup(now).map(Instant::from_std);
            tokio::select! {
                c = self.control.recv() => match c {
                    None => {
                        // The handle is finished with (or gone): let the beacon land, then stop.
                        if let Some(b) = beacon.take() {
                            let _ = b.await;
                        }
                        return;
                    }
                    Some(Control::Seek { generation: g, segment }) => {
                        generation = g;
                        tasks.abort_all();
                        handles.clear();
                        done.clear();
                        let _ = self.sched.seek(Instant::now().into_std(), segment);
                        next_out = segment.min(n);
                        last_rung = None;
                        attempts.iter_mut().for_each(|a| *a = 0);
                        have.iter_mut().for_each(|h| *h = false);
                        end_sent = false;
                        self.summary.seeks += 1;
                    }
                },
                permit = tx.reserve(), if deliverable => {
                    let Ok(permit) = permit else { return };
                    let Some((rung, data, source)) = done.remove(&next_out) else { continue };
                    let init = if last_rung == Some(rung) || (last_rung.is_some() && !self.init_on_switch) {
                        None
                    } else {
                        self.rungs[rung].init.as_ref().map(|(_, b, from)| {
                            self.summary.bytes_by_source.add(from, b.len());
                            b.clone()
                        })
                    };
                    last_rung = Some(rung);
                    self.summary.bytes_by_source.add(&source, data.len());
                    if self.summary.startup_ms == 0 && self.summary.segments_by_rendition.is_empty() {
                        self.summary.startup_ms = millis(self.started.elapsed()).max(1);
                    }
                    let rid = self.rungs[rung].id.clone();
                    *self.summary.segments_by_rendition.entry(rid.to_string()).or_default() += 1;
                    self.summary.bytes_total += data.len() as u64 + init.as_ref().map_or(0, |b| b.len() as u64);
                    let start = self.starts[next_out];
                    let duration = self.starts.get(next_out + 1).copied().unwrap_or_else(|| self.sched.media_start(n)) - start;
                    permit.send(Delivery::Segment(generation, Segment { index: next_out, start, duration, rendition: rid, init, data, source }));
                    next_out += 1;
                    self.publish();
                    if !announced_start {
                        // Listeners a little behind on this track can ask us from now on.
                        announced_start = true;
                        self.announce();
                    }
                },
                news = self.found.recv() => {
                    let Some(PeerNews::Holds(peer_id, held)) = news else {
                        // The first search is over (every candidate answered or ran out of time).
                        self.sched.set_awaiting_peers(false);
                        continue;
                    };
                    let sid = match sid_of.get(&peer_id) {
                        Some(sid) => *sid,
                        None => {
                            self.summary.peers += 1;
                            let sid = self.sched.add_source(SourceKind::Peer);
                            sid_of.insert(peer_id, sid);
                            sid
                        }
                    };
                    for (r, rung) in self.rungs.iter().enumerate() {
                        for (k, id) in rung.segments.iter().enumerate() {
                            if held.contains(id) {
                                self.sched.set_holds(sid, k, r);
                            }
                        }
                    }
                    self.peer_of.insert(sid.0, peer_id);
                    self.publish();
                },
                _ = refresh.tick(), if self.peer.is_some() && next_out < n => {
                    // Who holds what changes as other listeners play: ask again.
                    if let Some(p) = self.peer.clone() {
                        let this = Client { inner: self.inner.clone() };
                        let (track, edges, tx) = (self.track.clone(), self.edges.clone(), self.found_tx.clone());
                        tokio::spawn(async move { this.peers_holding(&p, &track, &edges, &tx).await });
                    }
                },
                j = tasks.join_next(), if !tasks.is_empty() => {
                    let Some(Ok(f)) = j else { continue };
                    if f.generation != generation || have[f.segment] {
                        continue;
                    }
                    handles.remove(&(f.segment, f.source.0));
                    let now = Instant::now().into_std();
                    match f.result {
                        Ok((bytes, elapsed, from_cache)) => {
                            let len = bytes.len() as u64;
                            let source = if from_cache {
                                Source::Cache
                            } else {
                                if let Some(c) = &self.inner.cache {
                                    let id = self.rungs[f.rung].segments[f.segment];
                                    let stored = lock(c).put(&id, &bytes);
                                    if let Err(e) = stored {
                                        let _ = self.tx.send(Delivery::Failed(e.into())).await;
                                        return;
                                    }
                                }
                                match self.peer_of.get(&f.source.0) {
                                    Some(p) => Source::Peer(p.to_string()),
                                    None => Source::Edge(self.edges.get(f.source.0).map(|e| e.base.clone()).unwrap_or_default()),
                                }
                            };
                            self.summary.chunks_verified += 1;
                            have[f.segment] = true;
                            for a in self.sched.on_complete(now, f.segment, f.source, len, elapsed) {
                                if let Action::Cancel { segment, source } = a
                                    && let Some(h) = handles.remove(&(segment, source.0))
                                {
                                    h.abort();
                                }
                            }
                            if f.segment >= next_out {
                                done.insert(f.segment, (f.rung, bytes, source));
                            }
                        }
                        Err(Rejected::WrongBytes) => {
                            self.summary.chunks_rejected += 1;
                            if self.peer_of.contains_key(&f.source.0) {
                                self.sched.ban(now, f.source); // the peer node has cut it off too
                            } else {
                                self.sched.on_failed(now, f.segment, f.source);
                            }
                        }
                        Err(Rejected::Failed) => self.sched.on_failed(now, f.segment, f.source),
                    }
                    self.publish();
                },
                () = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => {},
            }
        }
    }

    /// Starts one chunk request: from the local cache when it is there, else from the edge.
    fn spawn_fetch(
        &mut self,
        tasks: &mut JoinSet<Fetched>,
        generation: u64,
        segment: usize,
        rung: usize,
        source: SourceId,
    ) -> AbortHandle {
        let id = self.rungs[rung].segments[segment];
        let fetched = |result| Fetched { generation, segment, rung, source, result };
        if self.speculative.as_ref().is_some_and(|(s, _)| *s == id)
            && let Some((_, early)) = self.speculative.take()
        {
            return tasks.spawn(async move {
                let result = match early.await {
                    Ok((Ok(one), took)) => Ok((one.bytes, took, one.source == Source::Cache)),
                    _ => Err(Rejected::Failed),
                };
                Fetched { generation, segment, rung, source, result }
            });
        }
        if let Some(bytes) = self.inner.cache.as_ref().and_then(|c| lock(c).get(&id)) {
            let done = fetched(Ok((Bytes::from(bytes), Duration::from_millis(1), true)));
            return tasks.spawn(async move { done });
        }
        if let (Some(peer), Some(&peer_id)) = (&self.peer, self.peer_of.get(&source.0)) {
            let (peer, token) = (peer.clone(), self.inner.cfg.token.clone());
            return tasks.spawn(async move {
                let t = Instant::now();
                let result = match peer.fetch(peer_id, id, token).await {
                    Ok(bytes) => Ok((bytes, t.elapsed(), false)),
                    Err(chorus_peer::PeerError::WrongChunk(_)) => Err(Rejected::WrongBytes),
                    Err(_) => Err(Rejected::Failed),
                };
                Fetched { generation, segment, rung, source, result }
            });
        }
        let Some(edge) = self.edges.get(source.0).cloned() else {
            // Offline and not in the cache.
            let failed = fetched(Err(Rejected::Failed));
            return tasks.spawn(async move { failed });
        };
        let inner = self.inner.clone();
        let req = inner.request(&format!("/v1/chunks/{id}"));
        tasks.spawn(async move {
            let t = Instant::now();
            let result = match edge.send(&inner.http, req).await {
                Ok(r) if r.status() == http::StatusCode::OK => {
                    let body = r.into_body();
                    if id.matches(&body) { Ok((body, t.elapsed(), false)) } else { Err(Rejected::WrongBytes) }
                }
                _ => Err(Rejected::Failed),
            };
            Fetched { generation, segment, rung, source, result }
        })
    }

    fn publish(&mut self) {
        let st = self.sched.stats();
        self.summary.stalls = st.stalls;
        self.summary.stall_ms = millis(st.stalled);
        self.summary.hedges = st.hedges;
        self.summary.failures = st.failures;
        self.summary.buffer_ms = millis(self.sched.buffered(Instant::now().into_std()));
        if let Some((r, _)) = self.summary.segments_by_rendition.iter().max_by_key(|(r, n)| (**n, (*r).clone())) {
            self.summary.rendition.clone_from(r);
        }
        self.summary_tx.send_replace(self.summary.clone());
    }

    /// Tells the trackers and Kademlia what this client now holds (best effort, detached).
    fn announce(&self) {
        let (Some(peer), Some((dir, _))) = (self.peer.clone(), self.inner.cfg.cache.clone()) else { return };
        let inner = self.inner.clone();
        let edges: Vec<String> = self.edges.iter().map(|e| e.base.clone()).collect();
        tokio::spawn(async move {
            announce_held(&inner.http, &peer, &dir, &edges, inner.cfg.token.as_deref(), &mut Vec::new()).await;
        });
    }

    /// The QoE beacon (best effort): to the first edge that takes it.
    fn beacon(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let s = &self.summary;
        let body = Bytes::from(
            serde_json::json!({
                "track_id": self.track.to_string(), "startup_ms": s.startup_ms, "stalls": s.stalls, "stall_ms": s.stall_ms,
                "bytes": {"edge": s.bytes_by_source.edge, "peer": s.bytes_by_source.peer, "cache": s.bytes_by_source.cache},
            })
            .to_string(),
        );
        let (inner, edges) = (self.inner.clone(), self.edges.clone());
        async move {
            for e in &edges {
                let mut req = http::Request::post("/v1/qoe").header(http::header::CONTENT_TYPE, "application/json");
                if let Some(t) = &inner.cfg.token {
                    req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
                }
                let Ok(req) = req.body(body.clone()) else { return };
                if matches!(e.send(&inner.http, req).await, Ok(r) if r.status().is_success()) {
                    return;
                }
            }
        }
    }
}
