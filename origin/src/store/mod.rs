//! Where the origin keeps tracks: a directory on this host ([`DirStore`], the default), or a
//! bucket of an S3-compatible object store ([`ObjectBackend`]), which several origins share.
//!
//! Both hold the same layout (chunks by BLAKE3 id, signed manifests, content keys) and answer
//! through one [`Store`]:
//!
//! - a directory store is read and written as before: every write atomic and fsynced, every
//!   chunk read verified (a corrupt file is quarantined), the OS page cache as the cache;
//! - an object store is read through the edge's chunk cache (`chorus-cache`: a memory tier,
//!   optionally over a disk tier, with TinyLFU admission), concurrent misses of one chunk make
//!   one GET, every chunk read from the bucket is verified by its hash
//!   before a byte of it is served, and manifests are cached [`MANIFEST_TTL`] (the bound on how
//!   long a re-ingest or a purge through another origin stays unseen by this one).
//!
//! Content keys of protected tracks live in the directory store itself, but on an object store
//! only where `--key-store` says: every origin and every backup job can read the catalogue
//! bucket, and a key beside its ciphertext would make a read credential a decryption credential.
//!
//! Ingest writes through [`Writer`], on a blocking thread: chunks first, the signed manifest
//! last, so no reader ever sees a manifest whose chunks are missing.
//!
//! Files: this one is the [`Store`] the API reads through (the cache, coalescing, the manifest
//! cache, readiness); `error.rs` its errors; `writer.rs` ingest's writes; `dir.rs` and
//! `object.rs` the two backends; `profile.rs` the AWS shared files; `location.rs` `--store`.

pub mod dir;
mod error;
mod location;
pub mod object;
pub mod profile;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chorus_core::error::Chain;
use chorus_core::manifest::limits;
use chorus_core::protect::{ContentKey, KeyId};
use chorus_core::{ChunkId, TrackId};
use chorus_http::coalesce::{Inflight, Role};
use lru::LruCache;
use tokio::time::Instant;
use tracing::{error, warn};

pub use dir::DirStore;
pub use error::StoreError;
pub use location::{Location, LocationError};
pub use object::ObjectBackend;
pub use writer::Writer;

use crate::metrics::StoreMetrics;
use chorus_cache::{CacheConfig, ChunkCache, Events};

/// How long an origin on an object store keeps a manifest (or its absence) before asking the
/// bucket again: within this, plus the edges' manifest cache, every origin and edge sees a
/// re-ingest or a purge made through any origin.
pub const MANIFEST_TTL: Duration = Duration::from_secs(5);
/// Manifests (and absences) cached at most.
const MANIFEST_ENTRIES: usize = 4096;
/// A content key object is 16 bytes; anything much larger is not one.
const MAX_KEY_BYTES: u64 = 64;
/// Tracks counted at most on an object store (each 1000 a LIST request).
const MAX_COUNTED_TRACKS: usize = 1_000_000;

/// How to open a store.
pub struct Options {
    /// An object store's read-through cache of verified chunks: memory (0: none), and a disk
    /// tier when `dir` is given. A directory store has no cache of its own: the OS page cache
    /// is one.
    pub cache: CacheConfig,
    /// Where content keys live, when not in the store (required for protected tracks on an
    /// object store).
    pub key_store: Option<Location>,
    /// A local directory for uploads and encoder output with an object store (default: a new
    /// temporary directory, removed at exit). A directory store uses its own `tmp/`.
    pub work_dir: Option<PathBuf>,
    /// The metrics the store moves.
    pub metrics: StoreMetrics,
}

impl Options {
    /// Default options, moving `metrics`.
    #[must_use]
    pub fn new(metrics: StoreMetrics) -> Self {
        let cache = CacheConfig { mem_bytes: 256 << 20, disk_bytes: 0, dir: None, prefetch: false };
        Self { cache, key_store: None, work_dir: None, metrics }
    }
}

#[derive(Clone, Debug)]
enum Backend {
    Dir(DirStore),
    Object(ObjectBackend),
}

type ManifestEntry = (Instant, Option<Bytes>);

/// The origin's store, a directory or an object store (cheap to clone: shared).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Backend,
    keys: Option<Backend>,
    name: String,
    work: PathBuf,
    _work_guard: Option<tempfile::TempDir>,
    /// An object store's cache (`None` for a directory store).
    chunks: Option<ChunkCache>,
    inflight: Inflight<ChunkId, Option<Bytes>, Arc<StoreError>>,
    manifests: std::sync::Mutex<LruCache<TrackId, ManifestEntry>>,
    manifest_inflight: Inflight<TrackId, Option<Bytes>, Arc<StoreError>>,
    metrics: StoreMetrics,
    up: AtomicBool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("name", &self.inner.name).finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the directory store at `root`, content keys inside it, as
    /// `chorus origin --store DIR` always has.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directories cannot be created.
    pub fn open_dir(root: &Path, metrics: StoreMetrics) -> Result<Self, StoreError> {
        let dir = DirStore::open(root)?;
        let work = dir.tmp_dir();
        Ok(Self::assemble(
            Backend::Dir(dir.clone()),
            Some(Backend::Dir(dir)),
            root.display().to_string(),
            work,
            None,
            None,
            metrics,
        ))
    }

    /// Opens the store at `location`. An object store is checked first (one listing): wrong
    /// credentials, a missing bucket or an unreachable endpoint fail here, at start, not at the
    /// first listener's request.
    ///
    /// # Errors
    /// [`StoreError`]: what is wrong with the location, the settings or the store.
    pub async fn open(
        location: &Location,
        opts: Options,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, StoreError> {
        let keys = match &opts.key_store {
            None => None,
            Some(Location::Dir(p)) => Some(Backend::Dir(DirStore::open(p)?)),
            Some(Location::S3 { bucket, prefix }) => {
                let b = ObjectBackend::new(bucket, prefix, env, opts.metrics.clone())?;
                b.check().await?;
                Some(Backend::Object(b))
            }
        };
        match location {
            Location::Dir(root) => {
                let dir = DirStore::open(root)?;
                let keys = keys.unwrap_or_else(|| Backend::Dir(dir.clone()));
                let work = dir.tmp_dir();
                Ok(Self::assemble(Backend::Dir(dir), Some(keys), location.to_string(), work, None, None, opts.metrics))
            }
            Location::S3 { bucket, prefix } => {
                let b = ObjectBackend::new(bucket, prefix, env, opts.metrics.clone())?;
                b.check().await?;
                let (work, guard) = match opts.work_dir {
                    Some(w) => {
                        std::fs::create_dir_all(&w).map_err(|source| StoreError::Io { path: w.clone(), source })?;
                        (w, None)
                    }
                    None => {
                        let t = tempfile::Builder::new()
                            .prefix("chorus-origin-")
                            .tempdir()
                            .map_err(|source| StoreError::Io { path: std::env::temp_dir(), source })?;
                        (t.path().to_owned(), Some(t))
                    }
                };
                let cache = CacheConfig { prefetch: false, ..opts.cache };
                let (chunks, indexed) = ChunkCache::open(&cache)
                    .await
                    .map_err(|source| StoreError::Io { path: cache.dir.clone().unwrap_or_default(), source })?;
                if cache.dir.is_some() {
                    tracing::info!(chunks = indexed, "indexed the origin's disk cache (files are verified when read)");
                }
                let s = Self::assemble(
                    Backend::Object(b),
                    keys,
                    location.to_string(),
                    work,
                    guard,
                    Some(chunks),
                    opts.metrics,
                );
                s.cache_usage();
                s.inner.metrics.up.set(1);
                Ok(s)
            }
        }
    }

    fn assemble(
        backend: Backend,
        keys: Option<Backend>,
        name: String,
        work: PathBuf,
        guard: Option<tempfile::TempDir>,
        chunks: Option<ChunkCache>,
        metrics: StoreMetrics,
    ) -> Self {
        let entries = std::num::NonZeroUsize::new(MANIFEST_ENTRIES).unwrap_or(std::num::NonZeroUsize::MIN);
        Self {
            inner: Arc::new(Inner {
                backend,
                keys,
                name,
                work,
                _work_guard: guard,
                chunks,
                inflight: Inflight::default(),
                manifests: std::sync::Mutex::new(LruCache::new(entries)),
                manifest_inflight: Inflight::default(),
                metrics,
                up: AtomicBool::new(true),
            }),
        }
    }

    /// The store's location, for logs.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The directory of a directory store (`None` for an object store).
    #[must_use]
    pub fn dir(&self) -> Option<&Path> {
        match &self.inner.backend {
            Backend::Dir(d) => Some(d.root()),
            Backend::Object(_) => None,
        }
    }

    /// A local directory for uploads, encoder output and generated certificates.
    #[must_use]
    pub fn work_dir(&self) -> &Path {
        &self.inner.work
    }

    /// The default signing key path of a directory store, `STORE/origin.key`. An object
    /// store has none: its signing key is the operator's to place (`--signing-key`).
    #[must_use]
    pub fn default_key_path(&self) -> Option<PathBuf> {
        self.dir().map(|d| d.join("origin.key"))
    }

    /// Chunk `id`, verified; `Ok(None)` when the store does not hold it.
    ///
    /// # Errors
    /// [`StoreError`]: corrupt (never served), or the store failed.
    pub async fn get_chunk(&self, id: &ChunkId) -> Result<Option<Bytes>, StoreError> {
        let metrics = &self.inner.metrics;
        match &self.inner.backend {
            Backend::Dir(d) => {
                let (d, id) = (d.clone(), *id);
                let r = on_blocking(move || d.get_chunk(&id)).await;
                if matches!(r, Err(StoreError::Corrupt(_))) {
                    metrics.corrupt.inc();
                }
                r
            }
            Backend::Object(b) => {
                if let Some(cache) = &self.inner.chunks {
                    let mut events = Events::default();
                    let found = cache.get(id, &mut events).await;
                    self.count_events(events);
                    if let Some(found) = found {
                        metrics.cache.with_label_values(&["hit"]).inc();
                        return Ok(Some(found.bytes));
                    }
                }
                let (me, b, id) = (self.clone(), b.clone(), *id);
                let lost =
                    Arc::new(StoreError::Config { store: b.name().to_owned(), reason: "a read was lost".into() });
                let (r, role) =
                    self.inner.inflight.get(id, move || async move { me.fetch_chunk(&b, id).await }, lost).await;
                let label = if role == Role::Leader { "miss" } else { "coalesced" };
                metrics.cache.with_label_values(&[label]).inc();
                r.map_err(unshare)
            }
        }
    }

    async fn fetch_chunk(&self, b: &ObjectBackend, id: ChunkId) -> Result<Option<Bytes>, Arc<StoreError>> {
        let corrupt = |why: &str| {
            self.inner.metrics.corrupt.inc();
            error!(chunk = %id, store = b.name(), why, "a chunk read from the object store does not match its hash: not served");
            Arc::new(StoreError::CorruptObject { chunk: id, store: b.name().to_owned() })
        };
        let bytes = match b.get(&ObjectBackend::chunk_key(&id), limits::MAX_CHUNK_BYTES).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(StoreError::TooLarge { .. }) => return Err(corrupt("larger than any chunk")),
            Err(e) => return Err(Arc::new(e)),
        };
        if !id.matches(&bytes) {
            return Err(corrupt("bytes differ"));
        }
        if let Some(cache) = &self.inner.chunks {
            let events = cache.insert(id, bytes.clone(), false).await;
            self.count_events(events);
            self.cache_usage();
        }
        Ok(Some(bytes))
    }

    /// A file of the cache's disk tier found corrupt (dropped, fetched again) is counted with
    /// the store's corrupt chunks: disk trouble on this host either way.
    fn count_events(&self, events: Events) {
        if events.disk_corrupt > 0 {
            self.inner.metrics.corrupt.inc_by(events.disk_corrupt);
        }
    }

    fn cache_usage(&self) {
        if let Some(cache) = &self.inner.chunks {
            let [(mem, _), (disk, _)] = cache.usage();
            let set = |tier: &str, n: u64| {
                self.inner.metrics.cache_bytes.with_label_values(&[tier]).set(i64::try_from(n).unwrap_or(i64::MAX));
            };
            set("memory", mem);
            set("disk", disk);
        }
    }

    /// A track's manifest document, as stored; `Ok(None)` when the track is unknown. On an
    /// object store, at most [`MANIFEST_TTL`] old.
    ///
    /// # Errors
    /// [`StoreError`] when the store failed.
    pub async fn get_manifest(&self, track: &TrackId) -> Result<Option<Bytes>, StoreError> {
        match &self.inner.backend {
            Backend::Dir(d) => {
                let (d, t) = (d.clone(), track.clone());
                on_blocking(move || d.get_manifest(&t)).await
            }
            Backend::Object(b) => {
                if let Some((at, doc)) = self.manifests().get(track)
                    && at.elapsed() < MANIFEST_TTL
                {
                    return Ok(doc.clone());
                }
                let (me, b, t) = (self.clone(), b.clone(), track.clone());
                let lost =
                    Arc::new(StoreError::Config { store: b.name().to_owned(), reason: "a read was lost".into() });
                let fetch = move || async move {
                    let started = Instant::now();
                    let doc = b.get(&manifest_key(&t), limits::MAX_BYTES as u64).await.map_err(Arc::new)?;
                    me.manifests().put(t, (started, doc.clone()));
                    Ok(doc)
                };
                let (r, _) = self.inner.manifest_inflight.get(track.clone(), fetch, lost).await;
                r.map_err(unshare)
            }
        }
    }

    fn manifests(&self) -> std::sync::MutexGuard<'_, LruCache<TrackId, ManifestEntry>> {
        self.inner.manifests.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Content key `id` of `track`; `Ok(None)` when there is none (unknown, rotated out, or
    /// this store keeps no keys).
    ///
    /// # Errors
    /// [`StoreError`] when the key store failed.
    pub async fn get_key(&self, track: &TrackId, id: &KeyId) -> Result<Option<ContentKey>, StoreError> {
        match &self.inner.keys {
            None => Ok(None),
            Some(Backend::Dir(d)) => {
                let (d, t, k) = (d.clone(), track.clone(), id.clone());
                on_blocking(move || d.get_key(&t, &k)).await
            }
            Some(Backend::Object(b)) => {
                let rel = key_key(track, id);
                match b.get(&rel, MAX_KEY_BYTES).await? {
                    None => Ok(None),
                    Some(bytes) => ContentKey::from_slice(&bytes).map(Some).map_err(|e| StoreError::Config {
                        store: b.name().to_owned(),
                        reason: format!("{rel} is not a content key: {e}"),
                    }),
                }
            }
        }
    }

    /// Removes a track's manifest and content keys (a purge): this origin answers 404 for it
    /// at once, others within [`MANIFEST_TTL`]. Chunks stay (other tracks may share them).
    /// `Ok(false)` when the track was unknown.
    ///
    /// # Errors
    /// [`StoreError`] when the store failed; the track may then still be published.
    pub async fn delete_track(&self, track: &TrackId) -> Result<bool, StoreError> {
        let existed = match &self.inner.backend {
            Backend::Dir(d) => {
                let (d, t) = (d.clone(), track.clone());
                on_blocking(move || d.delete_manifest(&t)).await?
            }
            Backend::Object(b) => b.delete(&manifest_key(track)).await?,
        };
        self.manifests().pop(track);
        match &self.inner.keys {
            None => {}
            Some(Backend::Dir(d)) => {
                let (d, t) = (d.clone(), track.clone());
                on_blocking(move || d.prune_keys(&t, &[])).await?;
            }
            Some(Backend::Object(b)) => prune_object_keys(b, track, &[]).await?,
        }
        Ok(existed)
    }

    /// Counts tracks, and chunks on a directory store (`None` on an object store, where it
    /// would list every object). For the gauges, off the request path.
    ///
    /// # Errors
    /// [`StoreError`] when listing fails.
    pub async fn count(&self) -> Result<(u64, Option<u64>), StoreError> {
        match &self.inner.backend {
            Backend::Dir(d) => {
                let d = d.clone();
                let (t, c) = on_blocking(move || d.count()).await?;
                Ok((t, Some(c)))
            }
            Backend::Object(b) => {
                let names = b.list("manifests", MAX_COUNTED_TRACKS).await?;
                Ok((names.iter().filter(|n| n.ends_with(".json")).count() as u64, None))
            }
        }
    }

    /// How often [`Self::count`] is worth running: a directory scan is cheap, listing a bucket
    /// costs a request per thousand tracks.
    #[must_use]
    pub fn count_every(&self) -> Duration {
        match self.inner.backend {
            Backend::Dir(_) => Duration::from_secs(60),
            Backend::Object(_) => Duration::from_secs(600),
        }
    }

    /// Asks the store whether it answers, and records the answer for [`Self::is_up`] and
    /// `chorus_origin_store_up`.
    pub async fn probe(&self) -> bool {
        let up = match &self.inner.backend {
            Backend::Dir(d) => d.root().join("manifests").is_dir(),
            Backend::Object(b) => match b.probe().await {
                Ok(()) => true,
                Err(e) => {
                    if self.is_up() {
                        warn!(store = b.name(), error = %Chain(&e), "the object store stopped answering: /readyz says not ready");
                    }
                    false
                }
            },
        };
        if up && !self.is_up() {
            tracing::info!(store = %self.inner.name, "the store answers again");
        }
        self.inner.up.store(up, Ordering::Relaxed);
        self.inner.metrics.up.set(i64::from(up));
        up
    }

    /// The last [`Self::probe`]'s answer.
    #[must_use]
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// Whether this is an object store (whose readiness comes from periodic probes).
    #[must_use]
    pub fn is_object(&self) -> bool {
        matches!(self.inner.backend, Backend::Object(_))
    }

    /// Synchronous writes for ingest, which runs on a blocking thread (inside a Tokio runtime
    /// when the store is an object store).
    ///
    /// # Errors
    /// [`StoreError::Config`] for an object store outside a Tokio runtime.
    pub fn writer(&self) -> Result<Writer<'_>, StoreError> {
        let rt = match &self.inner.backend {
            Backend::Dir(_) => tokio::runtime::Handle::try_current().ok(),
            Backend::Object(b) => Some(tokio::runtime::Handle::try_current().map_err(|_| StoreError::Config {
                store: b.name().to_owned(),
                reason: "writing an object store needs a Tokio runtime".into(),
            })?),
        };
        Ok(Writer { store: self, rt })
    }
}

fn unshare(e: Arc<StoreError>) -> StoreError {
    Arc::try_unwrap(e).unwrap_or_else(StoreError::Shared)
}

fn manifest_key(track: &TrackId) -> String {
    format!("manifests/{track}.json")
}

fn key_key(track: &TrackId, id: &KeyId) -> String {
    format!("keys/{track}/{}", id.as_str())
}

async fn prune_object_keys(b: &ObjectBackend, track: &TrackId, keep: &[&KeyId]) -> Result<(), StoreError> {
    for name in b.list(&format!("keys/{track}"), 10_000).await? {
        if !keep.iter().any(|k| k.as_str() == name) {
            b.delete(&format!("keys/{track}/{name}")).await?;
        }
    }
    Ok(())
}

/// Runs directory-store work `f` on the blocking pool. A task that panicked or was cancelled is
/// an I/O error of the store, the task's error kept as its cause.
async fn on_blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Io { path: PathBuf::new(), source: std::io::Error::other(e) }))
}
