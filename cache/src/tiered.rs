//! The tiered cache itself: [`Cache`], its configuration and its probation area (see the
//! module above for the design).

use std::path::PathBuf;
use std::sync::Mutex;

use bytes::Bytes;
use chorus_core::ChunkId;
use lru::LruCache;
use tracing::warn;

use super::disk::{DiskEntry, DiskStore};
use super::sketch::Sketch;
use super::tier::{Admission, Tier};

/// Prefetched chunks remembered at most while waiting to be used.
const PREFETCH_TRACKED: usize = 65_536;

/// The share of the memory tier set apart for prefetched chunks (the probation area).
const PROBATION_SHARE: u64 = 8;

/// Open files of hot disk-tier chunks kept for `sendfile` (nginx's `open_file_cache`): a hit
/// then costs no `open`/`close`. Chunk files never change, and an entry is dropped when its
/// chunk is evicted or purged.
const OPEN_FILES: usize = 1024;

/// Cache sizes and place.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Memory tier capacity in bytes.
    pub mem_bytes: u64,
    /// Disk tier capacity in bytes (0 disables it).
    pub disk_bytes: u64,
    /// Where the disk tier lives; `None` disables it.
    pub dir: Option<PathBuf>,
    /// Whether chunks are prefetched into this cache: an eighth of the memory then holds them
    /// apart (the probation area) until asked for. An origin prefetches nothing.
    pub prefetch: bool,
}

/// Which tier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TierName {
    /// RAM.
    Memory,
    /// Local disk.
    Disk,
}

impl TierName {
    /// Metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Memory => "memory",
            Self::Disk => "disk",
        }
    }
}

/// What a lookup found, and prefetch accounting for it.
#[derive(Debug)]
pub struct Found {
    /// The chunk's verified bytes.
    pub bytes: Bytes,
    /// The tier it came from.
    pub tier: TierName,
    /// Whether this was the first request for a prefetched chunk.
    pub prefetch_used: bool,
}

/// Counters the cache reports to whoever keeps metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Events {
    /// Prefetched chunks that left the cache without being asked for.
    pub prefetch_wasted: u64,
    /// Chunks found corrupt on disk (dropped).
    pub disk_corrupt: u64,
}

/// An open disk-tier file and when its size was last checked.
#[derive(Clone)]
struct OpenFile {
    file: std::sync::Arc<std::fs::File>,
    checked: std::time::Instant,
}

/// How long an open file is served without checking its size again.
const FILE_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

struct Inner {
    mem: Tier<Bytes>,
    /// Prefetched chunks not asked for yet (memory only).
    probation: Tier<Bytes>,
    disk: Tier<DiskEntry>,
    sketch: Sketch,
    prefetched: LruCache<ChunkId, ()>,
    files: LruCache<ChunkId, OpenFile>,
}

/// The two-tier chunk cache. Cheap operations take a short lock; disk I/O runs outside it.
pub struct ChunkCache {
    inner: Mutex<Inner>,
    disk: Option<DiskStore>,
}

impl ChunkCache {
    /// Opens the cache, rebuilding the disk tier's index from `cfg.dir` (files are verified
    /// lazily, when first read). Returns the cache and how many files were indexed.
    ///
    /// # Errors
    /// An I/O error when the directory cannot be created or listed.
    pub async fn open(cfg: &CacheConfig) -> std::io::Result<(Self, usize)> {
        let mut disk_tier = Tier::new(cfg.disk_bytes);
        let mut indexed = 0;
        let disk = match &cfg.dir {
            Some(dir) if cfg.disk_bytes > 0 => {
                let store = DiskStore::new(dir.clone());
                let found = store.scan().await?;
                indexed = found.len();
                let mut evicted = Vec::new();
                for (id, entry) in found {
                    evicted.extend(disk_tier.insert(id, entry).into_iter().map(|(id, _)| id));
                }
                store.remove_all(evicted).await;
                Some(store)
            }
            _ => None,
        };
        // Size the sketch for the number of chunks the cache can hold (about 64 KiB each).
        let items = usize::try_from((cfg.mem_bytes + cfg.disk_bytes) / 65_536).unwrap_or(usize::MAX);
        let probation = if cfg.prefetch { cfg.mem_bytes / PROBATION_SHARE } else { 0 };
        let inner = Inner {
            mem: Tier::new(cfg.mem_bytes - probation),
            probation: Tier::new(probation),
            disk: disk_tier,
            sketch: Sketch::new(items.max(1024)),
            prefetched: LruCache::unbounded(),
            files: LruCache::new(std::num::NonZeroUsize::new(OPEN_FILES).unwrap_or(std::num::NonZeroUsize::MIN)),
        };
        Ok((Self { inner: Mutex::new(inner), disk }, indexed))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough state for a cache.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the disk tier is on (it turns off after a write error).
    #[must_use]
    pub fn disk_enabled(&self) -> bool {
        self.disk.as_ref().is_some_and(DiskStore::enabled)
    }

    /// (bytes, capacity) of the memory and disk tiers.
    #[must_use]
    pub fn usage(&self) -> [(u64, u64); 2] {
        let g = self.lock();
        let disk_cap = if self.disk_enabled() { g.disk.capacity() } else { 0 };
        let mem = (g.mem.bytes() + g.probation.bytes(), g.mem.capacity() + g.probation.capacity());
        [mem, (g.disk.bytes(), disk_cap)]
    }

    /// Whether `id` is held in either tier (no verification, no recency change).
    #[must_use]
    pub fn contains(&self, id: &ChunkId) -> bool {
        let g = self.lock();
        g.mem.contains(id) || g.probation.contains(id) || (self.disk_enabled() && g.disk.contains(id))
    }

    /// Looks `id` up, counting the request for admission. `Ok(None)` is a miss.
    pub async fn get(&self, id: &ChunkId, events: &mut Events) -> Option<Found> {
        let mut promote = None;
        let on_disk = {
            let mut g = self.lock();
            g.sketch.increment(id);
            if let Some(b) = g.mem.get(id) {
                let bytes = b.clone();
                let prefetch_used = g.prefetched.pop(id).is_some();
                return Some(Found { bytes, tier: TierName::Memory, prefetch_used });
            }
            if let Some(b) = g.probation.get(id) {
                // Asked for: offered to the tiers as any fetched chunk is (below, outside the
                // lock: the disk write), and kept in probation if neither admits it.
                let bytes = b.clone();
                let prefetch_used = g.prefetched.pop(id).is_some();
                promote = Some(Found { bytes, tier: TierName::Memory, prefetch_used });
            }
            promote.is_none() && self.disk_enabled() && g.disk.get(id).is_some_and(|e| e.ready)
        };
        if let Some(found) = promote {
            let more = self.insert(*id, found.bytes.clone(), false).await;
            events.prefetch_wasted += more.prefetch_wasted;
            return Some(found);
        }
        if !on_disk {
            return None;
        }
        let disk = self.disk.as_ref()?;
        match disk.read(id).await {
            Some(bytes) => {
                let mut g = self.lock();
                if let Some(e) = g.disk.get_mut(id) {
                    e.verified = true;
                }
                let prefetch_used = g.prefetched.pop(id).is_some();
                let inner = &mut *g;
                if let Admission::Admitted(evicted) = inner.mem.offer(*id, bytes.clone(), &inner.sketch) {
                    // Chunks pushed out of memory are usually still on disk; a prefetched one
                    // that is in neither tier now left unasked.
                    for (k, _) in evicted {
                        if !inner.disk.contains(&k) && inner.prefetched.pop(&k).is_some() {
                            events.prefetch_wasted += 1;
                        }
                    }
                }
                Some(Found { bytes, tier: TierName::Disk, prefetch_used })
            }
            None => {
                // Missing or corrupt: forget it; the caller fetches it again.
                events.disk_corrupt += 1;
                let mut g = self.lock();
                g.disk.remove(id);
                g.files.pop(id);
                None
            }
        }
    }

    /// Stores verified `bytes` for `id` in the tiers that admit them. `prefetched` marks a chunk
    /// no client has asked for yet.
    pub async fn insert(&self, id: ChunkId, bytes: Bytes, prefetched: bool) -> Events {
        let mut events = Events::default();
        let (to_write, to_delete) = {
            let mut g = self.lock();
            let inner = &mut *g;
            // A prefetched chunk has not been asked for, so the admission sketch knows nothing of
            // it and a full tier would always refuse it: it goes to the probation area (see the
            // module docs), where it can push out only other prefetched chunks, and leaves
            // unasked like any other chunk (counted as wasted).
            let mut dropped = Vec::new();
            let admitted = if prefetched {
                if inner.mem.contains(&id) || inner.disk.contains(&id) {
                    None
                } else {
                    inner.probation.insert_if_fits(id, bytes.clone())
                }
            } else {
                match inner.mem.offer(id, bytes.clone(), &inner.sketch) {
                    Admission::Admitted(evicted) => Some(evicted),
                    Admission::Rejected => None,
                }
            };
            dropped.extend(admitted.into_iter().flatten().map(|(k, _)| k));
            let mut to_delete = Vec::new();
            let mut to_write = false;
            let entry = DiskEntry { size: bytes.len() as u64, verified: true, ready: false };
            let on_disk = if !self.disk_enabled() || inner.disk.contains(&id) || prefetched {
                None
            } else {
                match inner.disk.offer(id, entry, &inner.sketch) {
                    Admission::Admitted(evicted) => Some(evicted),
                    Admission::Rejected => None,
                }
            };
            if let Some(evicted) = on_disk {
                to_write = true;
                for (k, _) in evicted {
                    inner.files.pop(&k);
                    to_delete.push(k);
                    if !inner.mem.contains(&k) {
                        dropped.push(k);
                    }
                }
            }
            // A chunk that left memory but is still on disk is still cached.
            for k in dropped {
                let still_cached = inner.mem.contains(&k)
                    || inner.probation.contains(&k)
                    || (self.disk_enabled() && inner.disk.contains(&k));
                if !still_cached && inner.prefetched.pop(&k).is_some() {
                    events.prefetch_wasted += 1;
                }
            }
            // A chunk admitted to a tier leaves probation (if it was there, prefetched).
            if !prefetched && (inner.mem.contains(&id) || inner.disk.contains(&id)) {
                inner.probation.remove(&id);
            }
            let held = inner.mem.contains(&id) || inner.probation.contains(&id) || inner.disk.contains(&id);
            if prefetched && held {
                inner.prefetched.put(id, ());
                while inner.prefetched.len() > PREFETCH_TRACKED {
                    inner.prefetched.pop_lru();
                    events.prefetch_wasted += 1;
                }
            }
            (to_write, to_delete)
        };
        if let Some(disk) = &self.disk {
            disk.remove_all(to_delete).await;
            if to_write {
                if disk.write(&id, bytes).await {
                    // Ready now, unless the chunk was evicted or purged while it was written:
                    // then the file must not outlive its index entry.
                    let still_indexed = match self.lock().disk.get_mut(&id) {
                        Some(e) => {
                            e.ready = true;
                            true
                        }
                        None => false,
                    };
                    if !still_indexed {
                        disk.remove_all(vec![id]).await;
                    }
                } else {
                    warn!("disk tier turned off after a write error; serving from memory and upstream");
                    self.lock().disk.remove(&id);
                }
            }
        }
        events
    }

    /// A hit served from a verified disk file, for `sendfile`: the open file and its length.
    /// `None` when the chunk is not on disk or not verified since start (the caller then takes
    /// the ordinary path, which reads and verifies it). `now` decides whether the file's size is
    /// due to be checked again.
    pub fn get_file(
        &self,
        id: &ChunkId,
        now: std::time::Instant,
    ) -> Option<(std::sync::Arc<std::fs::File>, u64, bool)> {
        let disk = self.disk.as_ref().filter(|d| d.enabled())?;
        let (size, open, prefetch_used) = {
            let mut g = self.lock();
            let e = g.disk.get(id).filter(|e| e.verified && e.ready)?;
            let size = e.size;
            g.sketch.increment(id);
            (size, g.files.get(id).cloned(), g.prefetched.pop(id).is_some())
        };
        // A file opened (or checked) within the last FILE_RECHECK is used as is; otherwise its
        // size is checked again, like nginx's `open_file_cache_valid`: one `fstat` per file per
        // interval instead of one per request.
        let (file, check) = match open {
            Some(f) if now.saturating_duration_since(f.checked) < FILE_RECHECK => (f.file, false),
            Some(f) => (f.file, true),
            None => match disk.open(id) {
                Some(f) => (std::sync::Arc::new(f), true),
                None => {
                    self.lock().disk.remove(id);
                    return None;
                }
            },
        };
        if check {
            self.lock().files.put(*id, OpenFile { file: file.clone(), checked: now });
        }
        // A file changed under us (truncated by hand, a damaged disk) is dropped, never sent
        // with a length it does not have; the ordinary path then fetches the chunk again.
        // (Truncated between checks, sendfile comes up short and the connection is closed: the
        // client sees a short body, never wrong bytes under a complete length.)
        if check && file.metadata().map(|m| m.len()).ok() != Some(size) {
            let mut g = self.lock();
            g.disk.remove(id);
            g.files.pop(id);
            drop(g);
            warn!(chunk = %id, "cached file changed size on disk; dropped");
            return None;
        }
        Some((file, size, prefetch_used))
    }

    /// Marks a prefetched chunk as used (a client got it by joining the prefetch's fetch).
    /// Returns whether it was waiting to be used.
    pub fn take_prefetched(&self, id: &ChunkId) -> bool {
        self.lock().prefetched.pop(id).is_some()
    }

    /// Removes `ids` from both tiers (and their files). Returns how many were held.
    pub async fn purge(&self, ids: &[ChunkId]) -> usize {
        let held = {
            let mut g = self.lock();
            ids.iter()
                .filter(|id| {
                    g.prefetched.pop(*id);
                    g.files.pop(*id);
                    let m = g.mem.remove(id).is_some();
                    let p = g.probation.remove(id).is_some();
                    let d = g.disk.remove(id).is_some();
                    m || p || d
                })
                .count()
        };
        // Every file is unlinked, indexed or not, in one blocking task.
        if let Some(disk) = &self.disk {
            disk.remove_all(ids.to_vec()).await;
        }
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(n: u32) -> (ChunkId, Bytes) {
        let bytes = Bytes::from(vec![u8::try_from(n % 251).unwrap_or(0); 1000]);
        (ChunkId::of(&bytes), bytes)
    }

    #[tokio::test]
    async fn a_prefetched_chunk_gets_into_a_full_cache_of_hot_chunks_and_a_cold_one_does_not() {
        // 8 750 bytes of memory tier, and 1 250 of probation for prefetched chunks.
        let cfg = CacheConfig { mem_bytes: 10_000, disk_bytes: 0, dir: None, prefetch: true };
        let (cache, _) = ChunkCache::open(&cfg).await.unwrap();
        // Eight chunks, each asked for three times: the memory tier is full of hot chunks.
        for n in 0..8 {
            let (id, bytes) = chunk(n);
            let mut events = Events::default();
            for _ in 0..3 {
                let _ = cache.get(&id, &mut events).await;
            }
            cache.insert(id, bytes, false).await;
        }
        assert!((0..8).all(|n| cache.contains(&chunk(n).0)));
        // A chunk fetched on a miss, asked for once, does not push a hot one out.
        let (cold, bytes) = chunk(100);
        let _ = cache.get(&cold, &mut Events::default()).await;
        cache.insert(cold, bytes, false).await;
        assert!(!cache.contains(&cold));
        // A prefetched one, never asked for yet, gets in (into probation: no hot chunk leaves),
        // and its first request counts as used.
        let (ahead, bytes) = chunk(101);
        cache.insert(ahead, bytes, true).await;
        assert!(cache.contains(&ahead));
        assert!((0..8).all(|n| cache.contains(&chunk(n).0)));
        let found = cache.get(&ahead, &mut Events::default()).await.unwrap();
        assert!(found.prefetch_used);
        assert_eq!(cache.usage()[0], (9_000, 10_000));
    }

    #[tokio::test]
    async fn prefetches_of_many_cold_tracks_churn_the_probation_area_and_never_evict_hot_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let cfg =
            CacheConfig { mem_bytes: 10_000, disk_bytes: 8_000, dir: Some(dir.path().to_owned()), prefetch: true };
        let (cache, _) = ChunkCache::open(&cfg).await.unwrap();
        for n in 0..8 {
            let (id, bytes) = chunk(n);
            for _ in 0..3 {
                let _ = cache.get(&id, &mut Events::default()).await;
            }
            cache.insert(id, bytes, false).await;
        }
        let mut wasted = 0;
        for n in 8..208 {
            let (id, bytes) = chunk(n);
            wasted += cache.insert(id, bytes, true).await.prefetch_wasted;
        }
        assert!((0..8).all(|n| cache.contains(&chunk(n).0)), "a prefetch flood evicted a hot chunk");
        assert_eq!(cache.usage()[1].0, 8_000, "prefetched chunks never go to disk");
        // All but the one that fits in probation (1 250 bytes) left unasked.
        assert_eq!(wasted, 199);
    }

    /// The recheck of a disk file's size, on an explicit clock: within FILE_RECHECK of the last
    /// check the open file is used as is; after it, a file that changed size is dropped.
    #[tokio::test]
    async fn a_disk_file_is_rechecked_once_per_interval_and_dropped_when_it_changed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CacheConfig { mem_bytes: 0, disk_bytes: 1 << 20, dir: Some(dir.path().to_owned()), prefetch: true };
        let (cache, _) = ChunkCache::open(&cfg).await.unwrap();
        let (id, bytes) = chunk(7);
        cache.insert(id, bytes, false).await;
        let t0 = std::time::Instant::now();
        let (_, len, _) = cache.get_file(&id, t0).expect("a verified file we wrote");
        assert_eq!(len, 1000);
        let path = chorus_core::chunkdir::chunk_path(dir.path(), &id);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(10).unwrap();
        let soon = t0 + FILE_RECHECK - std::time::Duration::from_millis(1);
        assert!(cache.get_file(&id, soon).is_some(), "not rechecked before the interval");
        assert!(cache.get_file(&id, t0 + FILE_RECHECK).is_none(), "rechecked: the size changed");
        assert!(cache.get_file(&id, t0 + FILE_RECHECK).is_none(), "and dropped from the index");
    }
}
