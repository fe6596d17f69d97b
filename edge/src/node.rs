//! The edge node: cache, upstreams, coalescing, prefetch and tracker working together.
//!
//! [`Edge`] is cheap to clone (one `Arc`); background work (prefetch, warming, health checks)
//! holds a clone.

use chorus_core::error::Chain;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chorus_core::keys::VerifyingKey;
use chorus_core::token::TokenVerifier;
use chorus_core::url::BaseUrl;
use chorus_core::{ChunkId, TrackId};
use lru::LruCache;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cache::{CacheConfig, ChunkCache, Events, TierName};
use crate::manifests::{Entry, Freshness, Manifests};
use crate::metrics::EdgeMetrics;
use crate::mrc::{Mrc, MrcConfig};
use crate::prefetch::{self, PrefetchConfig, Trending};
use crate::tracker::shared::{SharedConfig, SharedError, SharedTracker};
use crate::tracker::{Front, TrackerConfig};
use crate::upstream::{FetchError, UpstreamConfig, Upstreams};
use chorus_http::coalesce::{Inflight, Role};

/// Warmings (a track's manifest, then its first chunks as prefetches) running at once at most.
pub const WARM_CONCURRENCY: usize = 16;

/// Manifests a track purge fetches at once (for tracks this edge holds no manifest of).
const PURGE_FETCHES: usize = 16;

/// Everything an edge is configured with.
#[derive(Clone)]
pub struct EdgeConfig {
    /// Origins, tried in order.
    pub origins: Vec<BaseUrl>,
    /// Parent edges, chosen per chunk by rendezvous hashing, tried before origins.
    pub parents: Vec<BaseUrl>,
    /// How upstreams are trusted (`--ca`, `--insecure`).
    pub trust: chorus_http::tls::ClientTls,
    /// Cache sizes and directory.
    pub cache: CacheConfig,
    /// Upstream timeouts and health checks.
    pub upstream: UpstreamConfig,
    /// Prefetch settings.
    pub prefetch: PrefetchConfig,
    /// Tracker limits.
    pub tracker: TrackerConfig,
    /// The tracker shared with other edges (`--tracker redis://…`); `None`: this edge's own.
    pub shared_tracker: Option<SharedConfig>,
    /// Manifests cached at most (default 4096).
    pub manifests: usize,
    /// The token public key: when set, every `/v1/` request needs a valid token.
    pub token_key: Option<VerifyingKey>,
    /// The `aud` and `iss` tokens must carry, when set (`--token-audience`, `--token-issuer`).
    pub token_expect: chorus_core::token::Expect,
    /// Shared secret of `/admin/` endpoints; `None` disables them.
    pub admin_token: Option<String>,
    /// The origin's public key: when set, manifests that do not verify are refused.
    pub origin_key: Option<VerifyingKey>,
    /// Serve the web player at `/player/` (`--no-player` turns it off).
    pub player: bool,
    /// A file holding this edge's own access token, sent to upstreams (and only to them) to
    /// fetch protected tracks' content keys; `None`: keys cannot be fetched.
    pub upstream_token_file: Option<std::path::PathBuf>,
}

/// A chunk as [`Edge::serve_chunk`] gives it to the HTTP layer.
#[derive(Debug)]
pub enum Served {
    /// A verified file of the disk tier, `len` bytes, for `sendfile`.
    File(Arc<std::fs::File>, u64),
    /// Bytes from memory, disk or upstream.
    Bytes(Bytes, Source),
}

/// Where a served chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The memory tier.
    Memory,
    /// The disk tier.
    Disk,
    /// An upstream (this request missed).
    Upstream,
}

impl Source {
    /// Metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
            Self::Upstream => "upstream",
        }
    }
}

pub(crate) struct Inner {
    /// The background loops, and the token that stops them.
    background: tokio_util::task::TaskTracker,
    stop: tokio_util::sync::CancellationToken,
    pub(crate) cache: ChunkCache,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) manifests: Arc<Manifests>,
    chunks: Inflight<ChunkId, Bytes, FetchError>,
    pub(crate) tracker: Front,
    trending: Mutex<Trending>,
    recently_warmed: Mutex<LruCache<TrackId, Instant>>,
    prefetch_permits: Arc<Semaphore>,
    /// Warmings (manifest fetches) running at once; see [`WARM_CONCURRENCY`].
    warm_permits: Arc<Semaphore>,
    pub(crate) cfg: EdgeConfig,
    pub(crate) tokens: Option<TokenVerifier>,
    /// Chunks upstreams recently said do not exist.
    missing_chunks: crate::negative::Negative<ChunkId>,
    /// Content keys fetched for token holders (memory only).
    pub(crate) keys: crate::keys::Keys,
    /// Failed admin attempts, slowed per source.
    pub(crate) admin_guard: chorus_http::serve::AdminGuard,
    /// Peer queries per source: a burst of 20, then 2 a second.
    pub(crate) peers_limit: Mutex<chorus_core::rate::PerSource>,
    /// Next-track hints acted on per source: a burst of 4, then one every 10 s.
    pub(crate) hint_limit: Mutex<chorus_core::rate::PerSource>,
    /// QoE beacons per source: a burst of 10, then one every 10 s.
    pub(crate) qoe_limit: Mutex<chorus_core::rate::PerSource>,
    pub(crate) metrics: EdgeMetrics,
    /// The hit ratio at other cache sizes, from the chunk requests served.
    pub(crate) mrc: Mrc,
}

/// Why an edge could not start; each variant keeps its cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EdgeError {
    /// The cache directory could not be opened or listed.
    #[error("opening the cache")]
    Cache(#[source] std::io::Error),
    /// The TLS trust settings for upstreams are unusable.
    #[error("setting up upstreams")]
    Upstreams(#[source] chorus_http::client::ClientError),
    /// The token key is unusable.
    #[error("loading the token key")]
    TokenKey(#[source] chorus_core::token::TokenError),
    /// The shared tracker's URL or TLS settings are unusable.
    #[error("setting up the shared tracker")]
    Tracker(#[source] SharedError),
}

/// An edge node.
#[derive(Clone)]
pub struct Edge(pub(crate) Arc<Inner>);

impl Edge {
    /// Builds an edge: opens the cache (rebuilding the disk index) and sets up upstreams.
    ///
    /// # Errors
    /// [`EdgeError`] when the cache directory, the TLS trust settings or the token key are
    /// unusable.
    pub async fn new(cfg: EdgeConfig, metrics: EdgeMetrics) -> Result<Self, EdgeError> {
        let (cache, indexed) = ChunkCache::open(&cfg.cache).await.map_err(EdgeError::Cache)?;
        if indexed > 0 {
            info!(files = indexed, "disk cache carried over from the last run");
        }
        let upstreams =
            Upstreams::new(&cfg.origins, &cfg.parents, &cfg.trust, cfg.upstream.clone(), metrics.upstream.clone())
                .map_err(EdgeError::Upstreams)?;
        let tokens = match &cfg.token_key {
            Some(k) => Some(
                TokenVerifier::new(k, Duration::from_secs(30)).map_err(EdgeError::TokenKey)?.expect(&cfg.token_expect),
            ),
            None => None,
        };
        let shared = match &cfg.shared_tracker {
            Some(s) => Some(SharedTracker::new(s, &cfg.tracker).map_err(EdgeError::Tracker)?),
            None => None,
        };
        // The curve spans the largest tier: the disk when there is one.
        let capacity = if cfg.cache.dir.is_some() { cfg.cache.disk_bytes } else { cfg.cache.mem_bytes };
        let mrc = Mrc::new(MrcConfig::around(capacity));
        let warmed_cap = std::num::NonZeroUsize::new(4096).unwrap_or(std::num::NonZeroUsize::MIN);
        let inner = Inner {
            cache,
            upstreams: Arc::new(upstreams),
            manifests: Arc::new(Manifests::new(cfg.manifests, cfg.origin_key)),
            chunks: Inflight::default(),
            tracker: Front::new(&cfg.tracker, shared, metrics.clone()),
            trending: Mutex::new(Trending::new(cfg.prefetch.window, cfg.prefetch.trending_min)),
            recently_warmed: Mutex::new(LruCache::new(warmed_cap)),
            prefetch_permits: Arc::new(Semaphore::new(cfg.prefetch.concurrency.max(1))),
            background: tokio_util::task::TaskTracker::new(),
            stop: tokio_util::sync::CancellationToken::new(),
            warm_permits: Arc::new(Semaphore::new(WARM_CONCURRENCY)),
            tokens,
            keys: crate::keys::Keys::default(),
            missing_chunks: crate::negative::Negative::default(),
            admin_guard: chorus_http::serve::AdminGuard::default(),
            peers_limit: Mutex::new(chorus_core::rate::PerSource::new(20, 2.0, 100_000)),
            hint_limit: Mutex::new(chorus_core::rate::PerSource::new(4, 0.1, 100_000)),
            qoe_limit: Mutex::new(chorus_core::rate::PerSource::new(10, 0.1, 100_000)),
            metrics,
            mrc,
            cfg,
        };
        let edge = Self(Arc::new(inner));
        edge.update_gauges();
        Ok(edge)
    }

    /// The metrics.
    #[must_use]
    pub fn metrics(&self) -> &EdgeMetrics {
        &self.0.metrics
    }

    /// Whether at least one upstream is up.
    #[must_use]
    pub fn ready(&self) -> bool {
        self.0.upstreams.any_healthy()
    }

    /// Runs health checks and tracker expiry until the process ends.
    pub fn spawn_background(&self) {
        let edge = self.clone();
        self.0.background.spawn(async move {
            let mut tick = tokio::time::interval(edge.0.upstreams.health_interval());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = edge.0.stop.cancelled() => return,
                    _ = tick.tick() => edge.0.upstreams.check_health().await,
                }
            }
        });
        let edge = self.clone();
        self.0.background.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(30));
            loop {
                tokio::select! {
                    () = edge.0.stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                edge.0.tracker.expire();
            }
        });
    }

    /// Stops the background loops of [`Edge::spawn_background`] and waits for them to end (an
    /// embedding application's shutdown; the process's own ends after the front drained).
    pub async fn shutdown(&self) {
        self.0.stop.cancel();
        self.0.background.close();
        self.0.background.wait().await;
    }

    /// Refreshes the cache gauges (called on scrape and after inserts). The tracker's gauge is
    /// set where its lock is held anyway: after each announce and each expiry sweep.
    pub fn update_gauges(&self) {
        let [(mem, mem_cap), (disk, disk_cap)] = self.0.cache.usage();
        let m = &self.0.metrics;
        m.cache_bytes.with_label_values(&["memory"]).set(i64::try_from(mem).unwrap_or(i64::MAX));
        m.cache_capacity.with_label_values(&["memory"]).set(i64::try_from(mem_cap).unwrap_or(i64::MAX));
        m.cache_bytes.with_label_values(&["disk"]).set(i64::try_from(disk).unwrap_or(i64::MAX));
        m.cache_capacity.with_label_values(&["disk"]).set(i64::try_from(disk_cap).unwrap_or(i64::MAX));
    }

    fn record(&self, events: Events) {
        let m = &self.0.metrics;
        if events.prefetch_wasted > 0 {
            m.prefetch.with_label_values(&["wasted"]).inc_by(events.prefetch_wasted);
        }
        if events.disk_corrupt > 0 {
            m.corrupt.with_label_values(&["disk"]).inc_by(events.disk_corrupt);
        }
    }

    /// Chunk `id`, from cache or upstream (coalesced).
    ///
    /// # Errors
    /// [`FetchError`] when it is not cached and no upstream delivered it.
    pub async fn chunk(&self, id: ChunkId) -> Result<(Bytes, Source), FetchError> {
        if let Some(hit) = self.cached(id).await {
            return Ok(hit);
        }
        let m = &self.0.metrics;
        let edge = self.clone();
        let (result, role) = self
            .0
            .chunks
            .get(id, move || async move { edge.fetch_and_store(id, false).await }, FetchError::Lost("chunk fetch"))
            .await;
        match role {
            Role::Leader => m.cache_requests.with_label_values(&["miss", "none"]).inc(),
            Role::Follower => {
                m.cache_requests.with_label_values(&["coalesced", "none"]).inc();
                if self.0.cache.take_prefetched(&id) {
                    m.prefetch.with_label_values(&["used"]).inc();
                }
            }
        }
        let bytes = result?;
        self.observe(&id, bytes.len() as u64);
        Ok((bytes, Source::Upstream))
    }

    /// Chunk `id` from the cache alone (a hit, counted as one), or `None`: nothing is fetched.
    async fn cached(&self, id: ChunkId) -> Option<(Bytes, Source)> {
        let m = &self.0.metrics;
        let mut events = Events::default();
        let found = self.0.cache.get(&id, &mut events).await;
        self.record(events);
        let f = found?;
        m.cache_requests.with_label_values(&["hit", f.tier.as_str()]).inc();
        if f.prefetch_used {
            m.prefetch.with_label_values(&["used"]).inc();
        }
        let source = if f.tier == TierName::Memory { Source::Memory } else { Source::Disk };
        self.observe(&id, f.bytes.len() as u64);
        Some((f.bytes, source))
    }

    /// Answers a request for chunk `id` that allows the cache alone (`Cache-Control:
    /// only-if-cached`, RFC 9111 §5.2.1.7): as [`Self::serve_chunk`] when the chunk is cached,
    /// `None` (the HTTP layer answers 504) when it is not; nothing is fetched upstream.
    pub async fn serve_cached(&self, id: ChunkId, sendfile: bool) -> Option<Served> {
        if sendfile && let Some((file, len)) = self.chunk_file(&id) {
            self.after_chunk(&id);
            return Some(Served::File(file, len));
        }
        let (bytes, source) = self.cached(id).await?;
        self.after_chunk(&id);
        Some(Served::Bytes(bytes, source))
    }

    /// Feeds a served chunk request to the hit-ratio-curve estimator (its gauges are set on
    /// scrape, [`Edge::update_curve_gauges`]).
    fn observe(&self, id: &ChunkId, size: u64) {
        self.0.mrc.record(id, size);
    }

    /// Refreshes the hit-ratio-curve gauges from the estimator (on scrape; the series appear
    /// once a request was sampled).
    pub fn update_curve_gauges(&self) {
        let Some(curve) = self.0.mrc.hit_ratios() else { return };
        let m = &self.0.metrics;
        for (bytes, ratio) in curve {
            m.mrc_hit_ratio.with_label_values(&[&bytes.to_string()]).set(ratio);
        }
        m.mrc_sampling_rate.set(self.0.mrc.sampling_rate());
    }

    /// The estimated hit ratio at ¼× to 8× this edge's cache size (see [`crate::mrc`]);
    /// `None` before any chunk request was sampled.
    #[must_use]
    pub fn hit_ratio_curve(&self) -> Option<Vec<(u64, f64)>> {
        self.0.mrc.hit_ratios()
    }

    /// Chunk `id` as a verified disk file for `sendfile`, counted as a disk hit. `None` when
    /// not on disk or not verified yet (then [`Edge::chunk`] reads and verifies it).
    #[must_use]
    pub fn chunk_file(&self, id: &ChunkId) -> Option<(Arc<std::fs::File>, u64)> {
        let (file, len, prefetch_used) = self.0.cache.get_file(id, std::time::Instant::now())?;
        let m = &self.0.metrics;
        m.cache_requests.with_label_values(&["hit", "disk"]).inc();
        if prefetch_used {
            m.prefetch.with_label_values(&["used"]).inc();
        }
        self.observe(id, len);
        Some((file, len))
    }

    async fn fetch_and_store(&self, id: ChunkId, prefetched: bool) -> Result<Bytes, FetchError> {
        // A chunk id an upstream said does not exist, asked again within seconds (a retry, or
        // someone cycling made-up ids): 404 from memory, nothing sent upstream.
        if self.0.missing_chunks.known_missing(&id, Instant::now().into_std()) {
            self.0.metrics.negative_hits.with_label_values(&["chunk"]).inc();
            return Err(FetchError::NotFound);
        }
        let bytes = match self.0.upstreams.fetch_chunk(&id).await {
            Err(FetchError::NotFound) => {
                self.0.missing_chunks.missing(id, Instant::now().into_std());
                return Err(FetchError::NotFound);
            }
            r => r?,
        };
        let events = self.0.cache.insert(id, bytes.clone(), prefetched).await;
        self.record(events);
        self.update_gauges();
        Ok(bytes)
    }

    /// Answers a client's request for chunk `id`: a verified disk file for `sendfile` when
    /// `sendfile` allows it, else the bytes from cache or upstream; either way the segments that
    /// follow it are prefetched. The HTTP layer only translates the result.
    ///
    /// # Errors
    /// [`FetchError`] when it is not cached and no upstream delivered it.
    pub async fn serve_chunk(&self, id: ChunkId, sendfile: bool) -> Result<Served, FetchError> {
        // Zero copy where the connection allows it: a verified disk file, sent by the kernel.
        if sendfile && let Some((file, len)) = self.chunk_file(&id) {
            self.after_chunk(&id);
            return Ok(Served::File(file, len));
        }
        let (bytes, source) = self.chunk(id).await?;
        self.after_chunk(&id);
        Ok(Served::Bytes(bytes, source))
    }

    /// After a client got chunk `id`: prefetch the segments that follow it.
    fn after_chunk(&self, id: &ChunkId) {
        let k = self.0.cfg.prefetch.segments_ahead;
        if k == 0 {
            return;
        }
        let Some((pos, seg)) = self.0.manifests.positions(id).into_iter().find_map(|p| p.segment.map(|s| (p, s)))
        else {
            return;
        };
        let Some(manifest) = self.0.manifests.cached(&pos.track) else { return };
        for next in prefetch::following(&manifest, pos.rendition, seg, k) {
            self.prefetch(next, false);
        }
    }

    /// Fetches `id` ahead of any request, unless it is cached or already coming. With `queue`
    /// false a prefetch is skipped when all prefetch slots are busy (load shedding); with true
    /// it waits for a slot.
    fn prefetch(&self, id: ChunkId, queue: bool) {
        if self.0.cache.contains(&id) || self.0.chunks.contains(&id) {
            return;
        }
        let permits = self.0.prefetch_permits.clone();
        let permit = if queue {
            None
        } else {
            match permits.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => return,
            }
        };
        let edge = self.clone();
        tokio::spawn(async move {
            let _permit = match permit {
                Some(p) => p,
                None => match permits.acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            if edge.0.cache.contains(&id) {
                return;
            }
            let e2 = edge.clone();
            let (r, role) = edge
                .0
                .chunks
                .get(id, move || async move { e2.fetch_and_store(id, true).await }, FetchError::Lost("prefetch"))
                .await;
            // Counted only when this prefetch fetched and stored the chunk, so that every
            // `issued` can later be `used` or `wasted`.
            if role == Role::Leader && r.is_ok() {
                edge.0.metrics.prefetch.with_label_values(&["issued"]).inc();
            }
            if let Err(e) = r {
                debug!(chunk = %id, error = %Chain(&e), "prefetch failed");
            }
        });
    }

    /// The manifest of `track` (cached per the upstream's rules; stale if upstreams are down).
    /// Counts the request for trending detection.
    ///
    /// # Errors
    /// [`FetchError`] when it is not cached and no upstream delivered it.
    pub async fn manifest(&self, track: &TrackId) -> Result<(Arc<Entry>, Freshness), FetchError> {
        if self.0.manifests.known_missing(track) {
            self.0.metrics.negative_hits.with_label_values(&["manifest"]).inc();
            return Err(FetchError::NotFound);
        }
        let r = self.0.manifests.get(track, &self.0.upstreams).await;
        if r.is_ok() {
            let trending = self
                .0
                .trending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .observe(Instant::now(), track);
            if trending {
                info!(track = %track, "track is trending; warming its first segments");
                let _ = self.warm(track.clone(), false);
            }
        }
        r
    }

    /// Warms `track` in the background: its manifest, init chunks and first segments. Skipped
    /// (returns `false`) if the same track was warmed in the last 30 s and not purged since.
    /// At most [`WARM_CONCURRENCY`] warmings run at once: with `queue` (a prewarm) the rest
    /// wait their turn; without (a client's hint, a trending track) they are skipped, so hints
    /// naming many tracks cannot pile up manifest fetches on the upstreams.
    pub fn warm(&self, track: TrackId, queue: bool) -> bool {
        // Taken first, so a skipped hint does not mark its track as warmed (a permit taken for
        // a recent track goes back at once).
        let permit = if queue {
            None
        } else {
            match self.0.warm_permits.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => return false,
            }
        };
        {
            let mut recent = self.0.recently_warmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if recent.get(&track).is_some_and(|t| t.elapsed() < Duration::from_secs(30)) {
                return false;
            }
            recent.put(track.clone(), Instant::now());
        }
        let edge = self.clone();
        tokio::spawn(async move {
            let _permit = match permit {
                Some(p) => p,
                None => match edge.0.warm_permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            match edge.0.manifests.get(&track, &edge.0.upstreams).await {
                Ok((e, _)) => {
                    for id in prefetch::track_start(&e.manifest, edge.0.cfg.prefetch.warm_segments) {
                        edge.prefetch(id, queue);
                    }
                }
                Err(e) => warn!(track = %track, error = %Chain(&e), "warming failed"),
            }
        });
        true
    }

    /// Purges chunks; returns how many were cached.
    pub async fn purge_chunks(&self, ids: &[ChunkId]) -> usize {
        for id in ids {
            self.0.missing_chunks.forget(id);
        }
        let n = self.0.cache.purge(ids).await;
        self.update_gauges();
        n
    }

    /// Purges tracks: their manifests and every chunk they name (the manifest is fetched if
    /// this edge has none, to learn its chunks). Returns (manifests, chunks) purged.
    pub async fn purge_tracks(&self, tracks: &[TrackId]) -> (usize, usize) {
        use futures_util::StreamExt as _;
        let mut manifests = 0;
        let mut known = Vec::new();
        let mut unknown = Vec::new();
        for t in tracks {
            match self.0.manifests.purge(t) {
                Some(m) => {
                    manifests += 1;
                    known.push(m);
                }
                None => unknown.push(t.clone()),
            }
            self.0.keys.forget(t);
            // A purged track is cold again: the next warm must not be skipped as recent.
            self.0.recently_warmed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop(t);
        }
        // Manifests this edge does not hold are fetched to learn their chunks, several at once.
        let fetched: Vec<Arc<chorus_core::manifest::Manifest>> = futures_util::stream::iter(unknown)
            .map(|t| async move {
                let m = self.0.manifests.get(&t, &self.0.upstreams).await.ok().map(|(e, _)| e.manifest.clone());
                self.0.manifests.purge(&t);
                m
            })
            .buffer_unordered(PURGE_FETCHES)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let ids: Vec<ChunkId> = known.iter().chain(&fetched).flat_map(|m| m.chunks().map(|c| c.id)).collect();
        (manifests, self.purge_chunks(&ids).await)
    }
}
