//! The client's local cache: verified chunks on disk, served before any network.
//!
//! `DIR/chunks/ab/abcdef…`, one file per chunk named by its BLAKE3 hash, like the origin's store
//! and the edge's disk tier, so a directory filled by `chorus fetch --cache-dir` is also what a
//! seeding peer serves (issue 5). Least recently used chunks are evicted past the size cap.
//! Writes are atomic (a crash leaves no torn chunk); every read is checked against the chunk's
//! hash, and a file that fails is deleted. The index is rebuilt from the directory at open
//! (oldest files first in line for eviction).
//!
//! [`LocalCache`] does synchronous file I/O (reads, hashing, fsync). Async code goes through
//! `Shared`: the index is looked at under a short lock with no I/O, and every file operation runs
//! on tokio's blocking pool outside the lock, so a slow disk never stalls a runtime worker.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use chorus_core::{ChunkId, fsutil};
use lru::LruCache;

/// A local chunk cache bounded by bytes.
#[derive(Debug)]
pub struct LocalCache {
    dir: PathBuf,
    index: LruCache<ChunkId, u64>,
    bytes: u64,
    capacity: u64,
}

/// The largest default cache (Spotify's client took 10% of the free disk, at most 10 GB).
pub const DEFAULT_MAX: u64 = 10 << 30;
/// The smallest default cache, on a nearly full disk: a few tracks.
pub const DEFAULT_MIN: u64 = 64 << 20;

/// The default size of a cache on a disk with `free` bytes available to it (the cache's own
/// files counted as free): a tenth, within [`DEFAULT_MIN`] and [`DEFAULT_MAX`].
#[must_use]
pub const fn default_capacity(free: u64) -> u64 {
    let tenth = free / 10;
    if tenth < DEFAULT_MIN {
        DEFAULT_MIN
    } else if tenth > DEFAULT_MAX {
        DEFAULT_MAX
    } else {
        tenth
    }
}

/// Bytes available to an unprivileged writer on the disk of `dir` (or of its nearest existing
/// parent); `None` when the system does not say.
fn free_space(dir: &Path) -> Option<u64> {
    let mut at = dir;
    while !at.exists() {
        at = at.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or_else(|| Path::new("."));
        if at == Path::new(".") {
            break;
        }
    }
    let s = rustix::fs::statvfs(at).ok()?;
    Some(s.f_bavail.saturating_mul(s.f_frsize))
}

impl LocalCache {
    /// Opens (creating if needed) the cache at `dir` at its default size: a tenth of the free
    /// space of its disk, counting what it holds already, within [`DEFAULT_MIN`] and
    /// [`DEFAULT_MAX`] ([`default_capacity`]).
    ///
    /// # Errors
    /// An I/O error when the directory cannot be created or listed.
    pub fn open_default(dir: &Path) -> io::Result<Self> {
        let found = chorus_core::chunkdir::scan(dir)?;
        let held: u64 = found.iter().map(|f| f.len).sum();
        let capacity = default_capacity(free_space(dir).unwrap_or(0).saturating_add(held));
        Self::open(dir, capacity)
    }

    /// Opens (creating if needed) the cache at `dir`, holding at most `capacity` bytes.
    ///
    /// # Errors
    /// An I/O error when the directory cannot be created or listed.
    pub fn open(dir: &Path, capacity: u64) -> io::Result<Self> {
        let found = chorus_core::chunkdir::scan(dir)?;
        let mut cache = Self { dir: dir.to_owned(), index: LruCache::unbounded(), bytes: 0, capacity };
        for f in found {
            cache.index.put(f.id, f.len);
            cache.bytes += f.len;
        }
        for path in cache.evict() {
            let _ = std::fs::remove_file(path);
        }
        Ok(cache)
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        chorus_core::chunkdir::chunk_path(&self.dir, id)
    }

    /// Bytes held.
    #[must_use]
    pub const fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Chunks held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the cache is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether chunk `id` is held (without reading it).
    #[must_use]
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.index.contains(id)
    }

    /// Every chunk held (most recently used first): what a seeding peer announces.
    pub fn ids(&self) -> impl Iterator<Item = &ChunkId> {
        self.index.iter().map(|(id, _)| id)
    }

    /// Chunk `id`, verified. `None` when absent, unreadable or corrupt (then deleted).
    pub fn get(&mut self, id: &ChunkId) -> Option<Vec<u8>> {
        let path = self.file_of(id)?;
        let bytes = read_verified(&path, id);
        if bytes.is_none() {
            self.forget(id);
        }
        bytes
    }

    /// Stores verified `bytes` as chunk `id` (checked again here: a wrong chunk is never
    /// stored), evicting least recently used chunks beyond the cap.
    ///
    /// # Errors
    /// [`io::ErrorKind::InvalidData`] when `bytes` are not chunk `id`; an I/O error from the
    /// write (the cache is unchanged then).
    pub fn put(&mut self, id: &ChunkId, bytes: &[u8]) -> io::Result<()> {
        if !id.matches(bytes) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bytes are not chunk {id}")));
        }
        if !self.wants(id, bytes.len() as u64) {
            return Ok(());
        }
        write_verified(&self.path(id), id, bytes)?;
        for path in self.adopt(*id, bytes.len() as u64) {
            let _ = std::fs::remove_file(path);
        }
        Ok(())
    }

    /// The file of chunk `id` if held (it becomes the most recently used). No I/O.
    fn file_of(&mut self, id: &ChunkId) -> Option<PathBuf> {
        self.index.get(id)?;
        Some(self.path(id))
    }

    /// Drops chunk `id` whose file was unreadable or corrupt, and the file. (The removal is
    /// the one I/O done under the cache's lock, on a file already known to be bad.)
    fn forget(&mut self, id: &ChunkId) {
        let _ = std::fs::remove_file(self.path(id));
        if let Some(len) = self.index.pop(id) {
            self.bytes -= len;
        }
    }

    /// Whether a chunk of `len` bytes is worth writing: not held yet, and not larger than the
    /// whole cache. No I/O.
    fn wants(&self, id: &ChunkId, len: u64) -> bool {
        len <= self.capacity && !self.index.contains(id)
    }

    /// Indexes chunk `id`, `len` bytes, whose file was written; returns the files of the chunks
    /// evicted to make room, for the caller to delete (outside any lock).
    fn adopt(&mut self, id: ChunkId, len: u64) -> Vec<PathBuf> {
        if self.index.get(&id).is_some() {
            return Vec::new();
        }
        self.index.put(id, len);
        self.bytes += len;
        self.evict()
    }

    fn evict(&mut self) -> Vec<PathBuf> {
        let mut gone = Vec::new();
        while self.bytes > self.capacity {
            let Some((id, len)) = self.index.pop_lru() else { break };
            self.bytes -= len;
            gone.push(self.path(&id));
        }
        gone
    }
}

/// The bytes of the file at `path` if they are chunk `id`.
fn read_verified(path: &Path, id: &ChunkId) -> Option<Vec<u8>> {
    std::fs::read(path).ok().filter(|b| id.matches(b))
}

/// Writes chunk `id` to `path`, atomically, after checking that `bytes` are that chunk.
fn write_verified(path: &Path, id: &ChunkId, bytes: &[u8]) -> io::Result<()> {
    if !id.matches(bytes) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bytes are not chunk {id}")));
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    fsutil::write_atomic(path, bytes, 0o644)
}

/// A [`LocalCache`] shared by async code. Its lock is held only for index work, never across
/// file I/O: reads, hashing and the writes (with their fsyncs) run on tokio's blocking pool
/// outside it, so asking whether a chunk is held costs no thread hop and never waits on a disk.
#[derive(Debug, Clone)]
pub(crate) struct Shared(Arc<Mutex<LocalCache>>);

impl Shared {
    pub(crate) fn new(cache: LocalCache) -> Self {
        Self(Arc::new(Mutex::new(cache)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LocalCache> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Chunk `id`, verified (see [`LocalCache::get`]); a miss answers at once.
    pub(crate) async fn get(&self, id: ChunkId) -> Option<Bytes> {
        let path = self.lock().file_of(&id)?;
        let read = tokio::task::spawn_blocking(move || read_verified(&path, &id)).await.ok().flatten();
        if read.is_none() {
            let this = self.clone();
            // Deleting the bad file is I/O: on the blocking pool too.
            let _ = tokio::task::spawn_blocking(move || this.lock().forget(&id)).await;
        }
        read.map(Bytes::from)
    }

    /// Stores chunk `id` (see [`LocalCache::put`]); a chunk already held (or larger than the
    /// cache) answers at once, without looking at `bytes`: nothing is stored then either.
    pub(crate) async fn put(&self, id: ChunkId, bytes: Bytes) -> io::Result<()> {
        let (path, wanted) = {
            let c = self.lock();
            (c.path(&id), c.wants(&id, bytes.len() as u64))
        };
        if !wanted {
            return Ok(());
        }
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            write_verified(&path, &id, &bytes)?;
            let gone = this.lock().adopt(id, bytes.len() as u64);
            for p in gone {
                let _ = std::fs::remove_file(p);
            }
            Ok(())
        })
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
    }

    /// Which of `ids` are held, in order.
    pub(crate) fn holding(&self, ids: &[ChunkId]) -> Vec<bool> {
        let c = self.lock();
        ids.iter().map(|id| c.contains(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_size_is_a_tenth_of_the_free_disk_within_bounds() {
        assert_eq!(default_capacity(0), DEFAULT_MIN);
        assert_eq!(default_capacity(20 << 30), 2 << 30);
        assert_eq!(default_capacity(1 << 40), DEFAULT_MAX);
        // On this machine's disk: within the bounds, and a directory not made yet is measured
        // by its parent's disk.
        let dir = tempfile::tempdir().unwrap();
        let c = LocalCache::open_default(&dir.path().join("not/yet")).unwrap();
        assert!((DEFAULT_MIN..=DEFAULT_MAX).contains(&c.capacity), "{}", c.capacity);
        // (Other writers change the free space meanwhile: a gigabyte either way.)
        let free = free_space(dir.path()).unwrap();
        let (lo, hi) = (default_capacity(free.saturating_sub(1 << 30)), default_capacity(free + (1 << 30)));
        assert!((lo..=hi).contains(&c.capacity), "{} for an empty cache on a disk with {free} bytes free", c.capacity);
    }

    #[test]
    fn stores_verifies_evicts_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let chunk = |n: u8| vec![n; 1000];
        let ids: Vec<ChunkId> = (0..5).map(|n| ChunkId::of(&chunk(n))).collect();
        let mut c = LocalCache::open(dir.path(), 3000).unwrap();
        for (n, id) in ids.iter().enumerate() {
            c.put(id, &chunk(n as u8)).unwrap();
            if n == 2 {
                assert!(c.get(&ids[0]).is_some()); // 0 becomes the most recently used
            }
        }
        // 5 × 1000 bytes into 3000: the least recently used (1, then 2) are gone; 0, read after
        // the third put, stayed.
        assert_eq!(c.len(), 3);
        assert!(c.contains(&ids[0]) && !c.contains(&ids[1]) && !c.contains(&ids[2]));
        assert_eq!(c.bytes(), 3000);
        assert!(c.put(&ids[0], &chunk(9)).is_err(), "wrong bytes accepted");
        drop(c);

        // Reopened: the index comes back from the directory.
        let mut c = LocalCache::open(dir.path(), 3000).unwrap();
        assert_eq!(c.len(), 3);
        assert_eq!(c.get(&ids[4]), Some(chunk(4)));

        // A damaged file is caught on read and dropped.
        let hex = ids[3].to_hex();
        std::fs::write(dir.path().join("chunks").join(&hex[..2]).join(&hex), b"garbage").unwrap();
        assert_eq!(c.get(&ids[3]), None);
        assert!(!c.contains(&ids[3]));
        assert_eq!(c.bytes(), 2000);

        // A smaller cap at reopening evicts down to it.
        let c = LocalCache::open(dir.path(), 1000).unwrap();
        assert_eq!(c.len(), 1);
    }

    #[tokio::test]
    async fn the_shared_cache_reads_and_writes_off_the_lock_and_drops_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let c = Shared::new(LocalCache::open(dir.path(), 2500).unwrap());
        let chunks: Vec<(ChunkId, Bytes)> =
            (0..3u8).map(|n| Bytes::from(vec![n; 1000])).map(|b| (ChunkId::of(&b), b)).collect();
        assert_eq!(c.get(chunks[0].0).await, None, "a miss answers at once");
        for (id, b) in &chunks {
            c.put(*id, b.clone()).await.unwrap();
        }
        // 3 × 1000 bytes into 2500: the first was evicted, its file deleted.
        assert_eq!(c.holding(&chunks.iter().map(|c| c.0).collect::<Vec<_>>()), [false, true, true]);
        assert!(!chorus_core::chunkdir::chunk_path(dir.path(), &chunks[0].0).exists());
        assert_eq!(c.get(chunks[1].0).await, Some(chunks[1].1.clone()));
        std::fs::write(chorus_core::chunkdir::chunk_path(dir.path(), &chunks[2].0), b"damaged").unwrap();
        assert_eq!(c.get(chunks[2].0).await, None);
        assert_eq!(c.holding(&[chunks[2].0]), [false], "dropped from the index");
        assert!(c.put(chunks[2].0, Bytes::from_static(b"wrong")).await.is_err(), "wrong bytes are refused");
    }
}
