//! Fetching a track: the I/O around the [`Scheduler`](crate::scheduler::Scheduler).
//!
//! Edges are reached over HTTP/3 first; when QUIC fails (UDP blocked, no HTTP/3 listener) the
//! same host and port are tried over HTTPS (HTTP/2 by ALPN), as browsers do. The manifest is
//! verified against the pinned origin key; every chunk against its id before it is used or
//! cached. A wrong chunk is counted as rejected, its source is penalised (the scheduler avoids
//! it for a while) and the chunk is fetched again elsewhere. Chunks in the local cache are used
//! before any network. At the end a QoE beacon goes to the edge.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chorus_core::http::client::{Connection, HttpClient};
use chorus_core::http::tls::ClientTls;
use chorus_core::keys::VerifyingKey;
use chorus_core::manifest::{Manifest, ManifestError};
use chorus_core::{ChunkId, TrackId};
use serde::Serialize;
use tokio::time::Instant;

use crate::abr::Quality;
use crate::cache::LocalCache;
use crate::scheduler::{Action, Scheduler, SchedulerConfig, SegmentInfo};

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
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The track.
    pub track_id: String,
    /// The rendition fetched.
    pub rendition: String,
    /// Bytes of all chunks delivered.
    pub bytes_total: u64,
    /// Bytes by where they came from.
    pub bytes_by_source: BySource,
    /// From the start of the fetch to the first verified playable segment (init + segment 0).
    pub startup_ms: u64,
    /// Times playback would have run dry.
    pub stalls: u32,
    /// Time it would have been stalled.
    pub stall_ms: u64,
    /// Chunks that passed verification.
    pub chunks_verified: u64,
    /// Chunks refused (wrong bytes).
    pub chunks_rejected: u64,
    /// The HTTP version used to reach edges: `h3`, `h2` or `http/1.1` (`cache` if none was needed).
    pub protocol: String,
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

    /// Fetch paced like a player (keep 30 s ahead) instead of as fast as possible.
    #[must_use]
    pub const fn play(mut self, play: bool) -> Self {
        self.play = play;
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
        Ok(Client { cfg: self, http, cache })
    }
}

/// A client: reusable for several tracks.
pub struct Client {
    cfg: ClientBuilder,
    http: HttpClient,
    cache: Option<Arc<Mutex<LocalCache>>>,
}

/// One edge as a source: its URL to use, protocol, and idle connections.
struct Edge {
    base: String,
    pool: Mutex<Vec<Connection>>,
}

impl Edge {
    /// Sends `req` on an idle pooled connection (or a new one), returning the connection to the
    /// pool after a complete answer.
    async fn send(&self, http: &HttpClient, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, String> {
        let pooled = lock(&self.pool).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => http.connect(&self.base, false).await.map_err(|e| e.to_string())?,
        };
        let r = conn.send(req).await.map_err(|e| e.to_string())?;
        lock(&self.pool).push(conn);
        Ok(r)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Client {
    /// Connects to an edge: HTTP/3 for an `h3://` URL, falling back to HTTPS on the same
    /// host and port when QUIC fails.
    async fn connect(&self, base: &str) -> Option<(Connection, String)> {
        if let Some(hostport) = base.strip_prefix("h3://") {
            if let Ok(c) = self.http.connect(base, false).await {
                return Some((c, base.to_owned()));
            }
            let https = format!("https://{hostport}");
            return self.http.connect(&https, false).await.ok().map(|c| (c, https));
        }
        self.http.connect(base, false).await.ok().map(|c| (c, base.to_owned()))
    }

    fn request(&self, path: &str) -> http::Request<Bytes> {
        let mut b = http::Request::get(path);
        if let Some(t) = &self.cfg.token {
            b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b.body(Bytes::new()).unwrap_or_else(|_| http::Request::new(Bytes::new()))
    }

    /// The manifest request, carrying the next-track hint when there is one.
    async fn get_manifest(&self, edge: &Edge, track: &TrackId) -> Result<http::Response<Bytes>, String> {
        let mut req = self.request(&format!("/v1/tracks/{track}/manifest"));
        if let Some(next) = self.cfg.next_track.as_ref().and_then(|n| http::HeaderValue::from_str(n.as_str()).ok()) {
            req.headers_mut().insert("chorus-next-track", next);
        }
        edge.send(&self.http, req).await
    }

    async fn get(&self, edge: &Edge, path: &str) -> Result<http::Response<Bytes>, String> {
        edge.send(&self.http, self.request(path)).await
    }

    /// Fetches `track`, handing each verified chunk of the chosen rendition (init first, then
    /// segments in order) to `sink`.
    ///
    /// # Errors
    /// [`FetchError`] when the manifest cannot be had or verified, or a chunk cannot be fetched.
    pub async fn fetch(&self, track: &TrackId, sink: impl FnMut(&[u8])) -> Result<Summary, FetchError> {
        let started = Instant::now();
        // Reach the edges (in parallel would be faster; in order keeps failover simple).
        let mut edges = Vec::new();
        let mut protocol = String::from("cache");
        for base in &self.cfg.edges {
            if let Some((conn, used)) = self.connect(base).await {
                if edges.is_empty() {
                    protocol = conn.protocol().as_str().to_owned();
                }
                edges.push(Arc::new(Edge { base: used, pool: Mutex::new(vec![conn]) }));
            }
        }
        // Offline with a cache: the last verified manifest, checked again against the key.
        let cached_manifest =
            self.cfg.cache.as_ref().map(|(dir, _)| dir.join("manifests").join(format!("{track}.json")));
        if edges.is_empty() {
            let offline = cached_manifest.as_ref().and_then(|p| std::fs::read(p).ok());
            let Some(doc) = offline else {
                return Err(FetchError::Unreachable(format!("none of {:?}", self.cfg.edges)));
            };
            let manifest = Manifest::verify(&doc, &self.cfg.origin_key)?;
            return self.fetch_manifest(track, &manifest, Vec::new(), protocol, started, sink).await;
        }
        // The manifest, from the first edge that delivers one that verifies.
        let mut manifest = None;
        let mut last = String::new();
        for e in &edges {
            match self.get_manifest(e, track).await {
                Ok(r) if r.status() == http::StatusCode::OK => match Manifest::verify(r.body(), &self.cfg.origin_key) {
                    Ok(m) => {
                        manifest = Some(m);
                        break;
                    }
                    Err(e @ (ManifestError::WrongKey { .. } | ManifestError::UnsupportedFormat(_))) => {
                        return Err(e.into());
                    }
                    Err(e) => last = e.to_string(),
                },
                Ok(r) if r.status() == http::StatusCode::NOT_FOUND => return Err(FetchError::NotFound(track.clone())),
                Ok(r) => last = format!("{} answered {}", e.base, r.status()),
                Err(err) => last = err,
            }
        }
        let Some(manifest) = manifest else { return Err(FetchError::Unreachable(last)) };
        if let (Some(path), Ok(doc)) = (&cached_manifest, manifest.to_json()) {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            chorus_core::fsutil::write_atomic(path, &doc, 0o644)?;
        }
        self.fetch_manifest(track, &manifest, edges, protocol, started, sink).await
    }

    /// Fetches the chunks of a verified manifest.
    async fn fetch_manifest(
        &self,
        track: &TrackId,
        manifest: &Manifest,
        edges: Vec<Arc<Edge>>,
        protocol: String,
        started: Instant,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<Summary, FetchError> {
        // One rendition for the whole track, so the output is one decodable stream.
        let mut ladder: Vec<&chorus_core::manifest::Rendition> = manifest.renditions.iter().collect();
        ladder.sort_by_key(|r| r.bitrate_bps);
        let rung = match self.cfg.quality {
            Quality::Fixed(i) => i.min(ladder.len() - 1),
            Quality::Auto { cap } => cap.min(ladder.len() - 1).min(ladder.len() / 2),
        };
        let rendition = ladder[rung];
        let mut summary = Summary {
            track_id: track.to_string(),
            rendition: rendition.id.to_string(),
            bytes_total: 0,
            bytes_by_source: BySource::default(),
            startup_ms: 0,
            stalls: 0,
            stall_ms: 0,
            chunks_verified: 0,
            chunks_rejected: 0,
            protocol,
        };
        // The init chunk first.
        if let Some(init) = rendition.init {
            let bytes = self.chunk(&edges, init.id, &mut summary).await?;
            sink(&bytes);
        }
        let segments: Vec<SegmentInfo> = rendition
            .segments
            .iter()
            .map(|s| SegmentInfo { duration: Duration::from_millis(s.duration_ms), sizes: vec![s.size] })
            .collect();
        let mut cfg = SchedulerConfig { quality: Quality::Fixed(0), ..SchedulerConfig::default() };
        if !self.cfg.play {
            cfg.buffer_ahead = Duration::from_secs(86_400 * 365);
            cfg.max_inflight = 4;
        }
        // Offline (no edge), the cache is the one source.
        let mut sched =
            Scheduler::new(cfg, vec![rendition.bitrate_bps], segments, edges.len().max(1), started.into_std());
        let mut tasks = tokio::task::JoinSet::new();
        let mut done: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let mut next_out = 0;
        let mut attempts = vec![0u32; rendition.segments.len()];
        loop {
            let now = Instant::now().into_std();
            for a in sched.poll(now) {
                if let Action::Fetch { segment, source, .. } = a {
                    let id = rendition.segments[segment].id;
                    attempts[segment] += 1;
                    if attempts[segment] > 8 * edges.len().max(1) as u32 {
                        return Err(FetchError::Chunk(id));
                    }
                    // The local cache answers before any network.
                    if let Some(bytes) = self.cache.as_ref().and_then(|c| lock(c).get(&id)) {
                        summary.bytes_by_source.cache += bytes.len() as u64;
                        summary.chunks_verified += 1;
                        let len = bytes.len() as u64;
                        tasks.spawn(async move { (segment, source, Ok((bytes, Duration::from_millis(1), true)), len) });
                        continue;
                    }
                    let Some(edge) = edges.get(source.0).cloned() else {
                        return Err(FetchError::Chunk(id)); // offline and not in the cache
                    };
                    let client = self.http.clone();
                    let req = self.request(&format!("/v1/chunks/{id}"));
                    tasks.spawn(async move {
                        let t = Instant::now();
                        let result = async {
                            let r = edge.send(&client, req).await?;
                            if r.status() != http::StatusCode::OK {
                                return Err(format!("{} answered {}", edge.base, r.status()));
                            }
                            Ok((r.into_body().to_vec(), t.elapsed(), false))
                        }
                        .await;
                        (segment, source, result, 0)
                    });
                }
            }
            if sched.finished() && tasks.is_empty() {
                break;
            }
            let wake = sched.next_wakeup(Instant::now().into_std()).map(Instant::from_std);
            let joined = tokio::select! {
                j = tasks.join_next(), if !tasks.is_empty() => j,
                _ = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => None,
            };
            let Some(Ok((segment, source, result, _))) = joined else { continue };
            let now = Instant::now().into_std();
            match result {
                Ok((bytes, elapsed, from_cache)) => {
                    let id = rendition.segments[segment].id;
                    if !from_cache && !id.matches(&bytes) {
                        summary.chunks_rejected += 1;
                        sched.on_failed(now, segment, source);
                        continue;
                    }
                    if !from_cache {
                        summary.chunks_verified += 1;
                        summary.bytes_by_source.edge += bytes.len() as u64;
                        if let Some(c) = &self.cache {
                            lock(c).put(&id, &bytes)?;
                        }
                    }
                    sched.on_complete(now, segment, source, bytes.len() as u64, elapsed);
                    done.insert(segment, bytes);
                    while let Some(b) = done.remove(&next_out) {
                        if next_out == 0 {
                            summary.startup_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                        }
                        summary.bytes_total += b.len() as u64;
                        sink(&b);
                        next_out += 1;
                    }
                }
                Err(_) => sched.on_failed(now, segment, source),
            }
        }
        let st = sched.stats();
        summary.stalls = st.stalls;
        summary.stall_ms = u64::try_from(st.stalled.as_millis()).unwrap_or(u64::MAX);
        // QoE beacon to the first edge (best effort).
        let beacon = serde_json::json!({
            "track_id": track.to_string(), "startup_ms": summary.startup_ms, "stalls": summary.stalls, "stall_ms": summary.stall_ms,
            "bytes": {"edge": summary.bytes_by_source.edge, "peer": 0, "cache": summary.bytes_by_source.cache},
        });
        if let Some(e) = edges.first() {
            let mut req = http::Request::post("/v1/qoe");
            if let Some(t) = &self.cfg.token {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let pooled = lock(&e.pool).pop();
            if let (Ok(req), Some(mut conn)) = (req.body(Bytes::from(beacon.to_string())), pooled) {
                let _ = conn.send(req).await;
            }
        }
        Ok(summary)
    }

    /// One chunk outside the scheduler (the init chunk): cache, then each edge in turn.
    async fn chunk(&self, edges: &[Arc<Edge>], id: ChunkId, summary: &mut Summary) -> Result<Vec<u8>, FetchError> {
        if let Some(bytes) = self.cache.as_ref().and_then(|c| lock(c).get(&id)) {
            summary.bytes_by_source.cache += bytes.len() as u64;
            summary.bytes_total += bytes.len() as u64;
            summary.chunks_verified += 1;
            return Ok(bytes);
        }
        for e in edges {
            if let Ok(r) = self.get(e, &format!("/v1/chunks/{id}")).await {
                if r.status() == http::StatusCode::OK && id.matches(r.body()) {
                    let bytes = r.into_body().to_vec();
                    summary.chunks_verified += 1;
                    summary.bytes_by_source.edge += bytes.len() as u64;
                    summary.bytes_total += bytes.len() as u64;
                    if let Some(c) = &self.cache {
                        lock(c).put(&id, &bytes)?;
                    }
                    return Ok(bytes);
                } else if r.status() == http::StatusCode::OK {
                    summary.chunks_rejected += 1;
                }
            }
        }
        Err(FetchError::Chunk(id))
    }
}
