//! Manifests at the edge: cached as the upstream says (`Cache-Control: max-age`, `ETag`),
//! revalidated with `If-None-Match` when stale, served stale when every upstream is down, and
//! fetched once for any number of concurrent requests.
//!
//! Each cached manifest also feeds the chunk index ([`ChunkIndex`]): it holds exactly the
//! chunks of the cached manifests, so it is bounded with them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chorus_core::error::{Cause, Chain, cause, message};
use chorus_core::keys::VerifyingKey;
use chorus_core::manifest::{Manifest, ManifestError};
use chorus_core::{ChunkId, TrackId};
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use lru::LruCache;
use tokio::time::Instant;
use tracing::warn;

use crate::chunk_index::ChunkIndex;
pub use crate::chunk_index::Position;
use crate::upstream::{FetchError, Upstreams};
use chorus_http::coalesce::Inflight;

/// Used when the upstream sends no `max-age`.
const DEFAULT_MAX_AGE: Duration = Duration::from_secs(10);
/// A cached manifest.
#[derive(Debug)]
pub struct Entry {
    /// The document, as received.
    pub bytes: Bytes,
    /// The upstream's `ETag`.
    pub etag: Option<String>,
    /// The parsed manifest.
    pub manifest: Arc<Manifest>,
    fetched: Instant,
    max_age: Duration,
}

/// How a manifest request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// From cache, within its max-age.
    Fresh,
    /// Fetched (first time, or changed upstream).
    Fetched,
    /// Stale, confirmed unchanged upstream (304).
    Revalidated,
    /// Stale, and no upstream could be asked: served anyway.
    Stale,
}

struct State {
    entries: LruCache<TrackId, Arc<Entry>>,
    index: ChunkIndex,
}

/// The manifest cache and chunk index.
pub struct Manifests {
    state: Mutex<State>,
    inflight: Inflight<TrackId, (Arc<Entry>, Freshness), FetchError>,
    origin_key: Option<VerifyingKey>,
    /// Tracks upstreams recently said do not exist.
    missing: crate::negative::Negative<TrackId>,
}

fn max_age(headers: &HeaderMap) -> Duration {
    let Some(cc) = headers.get(header::CACHE_CONTROL).and_then(|v| v.to_str().ok()) else {
        return DEFAULT_MAX_AGE;
    };
    let mut age = DEFAULT_MAX_AGE;
    for d in cc.split(',').map(str::trim) {
        if d.eq_ignore_ascii_case("no-store") || d.eq_ignore_ascii_case("no-cache") {
            return Duration::ZERO;
        }
        if let Some(v) = d.strip_prefix("max-age=").and_then(|v| v.parse::<u64>().ok()) {
            age = Duration::from_secs(v.min(86_400));
        }
    }
    age
}

impl Manifests {
    /// A cache of at most `capacity` manifests. With `origin_key`, manifests that do not verify
    /// against it are refused like a failed upstream (and never cached).
    #[must_use]
    pub fn new(capacity: usize, origin_key: Option<VerifyingKey>) -> Self {
        let cap = std::num::NonZeroUsize::new(capacity.max(1)).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            state: Mutex::new(State { entries: LruCache::new(cap), index: ChunkIndex::default() }),
            inflight: Inflight::default(),
            origin_key,
            missing: crate::negative::Negative::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The manifest for `track`, from cache or upstream.
    ///
    /// # Errors
    /// [`FetchError`] when it is not cached and no upstream delivered it.
    pub async fn get(
        self: &Arc<Self>,
        track: &TrackId,
        upstreams: &Arc<Upstreams>,
    ) -> Result<(Arc<Entry>, Freshness), FetchError> {
        let cached = self.lock().entries.get(track).cloned();
        if let Some(e) = &cached
            && e.fetched.elapsed() < e.max_age
        {
            return Ok((e.clone(), Freshness::Fresh));
        }
        // An unknown track asked again within seconds costs no upstream request.
        if cached.is_none() && self.missing.known_missing(track, std::time::Instant::now()) {
            return Err(FetchError::NotFound);
        }
        let (this, ups, t) = (self.clone(), upstreams.clone(), track.clone());
        let (result, _) = self
            .inflight
            .get(
                track.clone(),
                move || async move { this.refresh(&t, cached, &ups).await },
                FetchError::Lost("manifest fetch"),
            )
            .await;
        if matches!(result, Err(FetchError::NotFound)) {
            self.missing.missing(track.clone(), std::time::Instant::now());
        }
        result
    }

    /// Whether `track` is answered 404 from memory (an upstream said so within seconds).
    #[must_use]
    pub fn known_missing(&self, track: &TrackId) -> bool {
        self.missing.known_missing(track, std::time::Instant::now())
    }

    async fn refresh(
        &self,
        track: &TrackId,
        cached: Option<Arc<Entry>>,
        upstreams: &Upstreams,
    ) -> Result<(Arc<Entry>, Freshness), FetchError> {
        let mut headers = HeaderMap::new();
        if let Some(etag) = cached.as_ref().and_then(|e| e.etag.as_deref()).and_then(|e| HeaderValue::from_str(e).ok())
        {
            headers.insert(header::IF_NONE_MATCH, etag);
        }
        let key = self.origin_key;
        let check = move |r: &Response<Bytes>| -> Result<(), Cause> {
            match r.status() {
                StatusCode::NOT_MODIFIED => Ok(()),
                StatusCode::OK => parse(r.body(), key.as_ref()).map(|_| ()).map_err(cause),
                s => Err(message(format!("unexpected status {s}"))),
            }
        };
        let path = chorus_core::route::manifest(track);
        match upstreams.get(&path, headers, None, &check).await {
            Ok(r) if r.status() == StatusCode::NOT_MODIFIED => match cached {
                Some(old) => {
                    let e = Arc::new(Entry {
                        bytes: old.bytes.clone(),
                        etag: old.etag.clone(),
                        manifest: old.manifest.clone(),
                        fetched: Instant::now(),
                        max_age: max_age(r.headers()),
                    });
                    self.store(track, e.clone());
                    Ok((e, Freshness::Revalidated))
                }
                None => Err(FetchError::Mismatch { what: "304 to an unconditional request".into(), source: None }),
            },
            Ok(r) => {
                let etag = r.headers().get(header::ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let age = max_age(r.headers());
                // The check above passed, so this parses; the answer is re-read, not trusted.
                let manifest = parse(r.body(), key.as_ref())
                    .map_err(|e| FetchError::BadAnswer { url: "upstream".into(), why: cause(e) })?;
                if manifest.track_id != *track {
                    return Err(FetchError::Mismatch {
                        what: format!("the manifest of {} for {track}", manifest.track_id),
                        source: None,
                    });
                }
                let e = Arc::new(Entry {
                    bytes: r.into_body(),
                    etag,
                    manifest: Arc::new(manifest),
                    fetched: Instant::now(),
                    max_age: age,
                });
                self.store(track, e.clone());
                Ok((e, Freshness::Fetched))
            }
            Err(err @ FetchError::NotFound) => {
                self.purge(track);
                Err(err)
            }
            Err(err) => match cached {
                Some(old) => {
                    warn!(track = %track, error = %Chain(&err), "upstreams unavailable; serving a stale manifest");
                    Ok((old, Freshness::Stale))
                }
                None => Err(err),
            },
        }
    }

    fn store(&self, track: &TrackId, e: Arc<Entry>) {
        let mut g = self.lock();
        let state = &mut *g;
        if let Some(old) = state.entries.peek(track).cloned() {
            state.index.remove(track, &old.manifest);
        }
        if let Some((evicted_track, evicted)) = state.entries.push(track.clone(), e.clone())
            && evicted_track != *track
        {
            state.index.remove(&evicted_track, &evicted.manifest);
        }
        state.index.add(track, &e.manifest);
    }

    /// Where chunk `id` sits in the cached manifests (at most a few places).
    #[must_use]
    pub fn positions(&self, id: &ChunkId) -> Vec<Position> {
        self.lock().index.positions(id)
    }

    /// [`Manifests::positions`], and whether they are all of them: false when more cached
    /// manifests hold the chunk than the index lists (a chunk shared by many tracks).
    #[must_use]
    pub fn positions_all(&self, id: &ChunkId) -> (Vec<Position>, bool) {
        self.lock().index.positions_all(id)
    }

    /// The cached manifest of `track`, fresh or not.
    #[must_use]
    pub fn cached(&self, track: &TrackId) -> Option<Arc<Manifest>> {
        self.lock().entries.peek(track).map(|e| e.manifest.clone())
    }

    /// Forgets `track`'s manifest; returns it if it was cached.
    pub fn purge(&self, track: &TrackId) -> Option<Arc<Manifest>> {
        self.missing.forget(track);
        let mut g = self.lock();
        let state = &mut *g;
        let e = state.entries.pop(track)?;
        state.index.remove(track, &e.manifest);
        Some(e.manifest.clone())
    }
}

/// Parses (and, with a key, verifies) a manifest from upstream.
fn parse(bytes: &[u8], key: Option<&VerifyingKey>) -> Result<Manifest, ManifestError> {
    match key {
        Some(k) => Manifest::verify(bytes, k),
        None => {
            if bytes.len() > chorus_core::manifest::limits::MAX_BYTES {
                return Err(ManifestError::TooLarge(bytes.len()));
            }
            let m: Manifest = serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(cause(e)))?;
            m.validate()?;
            Ok(m)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chorus_core::RenditionId;
    use chorus_core::manifest::{ChunkRef, Container, Rendition, Segment};

    /// A one-rendition CMAF manifest of `track` with the shared `init` and one own segment.
    fn manifest(track: &str, init: ChunkId) -> Arc<Entry> {
        let seg = ChunkId::of(track.as_bytes());
        let m = Manifest {
            format: chorus_core::manifest::FORMAT.into(),
            track_id: TrackId::parse(track).unwrap(),
            title: String::new(),
            duration_ms: 6_000,
            renditions: vec![Rendition {
                id: RenditionId::parse("aac-96").unwrap(),
                codec: "mp4a.40.2".into(),
                bitrate_bps: 96_000,
                container: Container::Cmaf,
                init: Some(ChunkRef { id: init, size: 10 }),
                segments: vec![Segment { id: seg, size: 100, duration_ms: 6_000, iv: None }],
            }],
            protection: None,
            signature: None,
        };
        Arc::new(Entry {
            bytes: Bytes::new(),
            etag: None,
            manifest: Arc::new(m),
            fetched: Instant::now(),
            max_age: Duration::from_secs(60),
        })
    }

    #[test]
    fn the_index_knows_when_it_lists_every_holder_of_a_chunk() {
        let cache = Manifests::new(100, None);
        let init = ChunkId::of(b"shared init");
        let tracks: Vec<String> = (0..10).map(|n| format!("t{n}")).collect();
        for t in &tracks {
            cache.store(&TrackId::parse(t).unwrap(), manifest(t, init));
        }
        // Ten tracks hold the init chunk; eight are listed, and the index says so.
        let (listed, complete) = cache.positions_all(&init);
        assert_eq!((listed.len(), complete), (crate::chunk_index::MAX_POSITIONS, false));
        // A track's own segment: one holder, listed.
        let (listed, complete) = cache.positions_all(&ChunkId::of(b"t9"));
        assert_eq!((listed[0].track.as_str(), complete), ("t9", true));
        // With the eight listed tracks gone, two unlisted holders remain: still incomplete.
        for t in &tracks[..8] {
            cache.purge(&TrackId::parse(t).unwrap());
        }
        let (listed, complete) = cache.positions_all(&init);
        assert_eq!((listed.len(), complete), (0, false));
        // Replacing a manifest counts its chunks once.
        cache.store(&TrackId::parse("t9").unwrap(), manifest("t9", init));
        cache.purge(&TrackId::parse("t8").unwrap());
        cache.purge(&TrackId::parse("t9").unwrap());
        assert_eq!(cache.positions_all(&init), (Vec::new(), true));
        assert!(cache.lock().index.is_empty());
    }

    #[test]
    fn cache_control() {
        let mut h = HeaderMap::new();
        assert_eq!(max_age(&h), DEFAULT_MAX_AGE);
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=30"));
        assert_eq!(max_age(&h), Duration::from_secs(30));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        assert_eq!(max_age(&h), Duration::ZERO);
    }
}
