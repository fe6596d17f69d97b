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
//! [`Shared`], whose every call runs on tokio's blocking pool, so a slow disk never stalls a
//! runtime worker and the cache's lock is only ever held there.

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

impl LocalCache {
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
        cache.evict();
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
        self.index.get(id)?;
        let path = self.path(id);
        match std::fs::read(&path) {
            Ok(bytes) if id.matches(&bytes) => Some(bytes),
            _ => {
                let _ = std::fs::remove_file(&path);
                if let Some(len) = self.index.pop(id) {
                    self.bytes -= len;
                }
                None
            }
        }
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
        let len = bytes.len() as u64;
        if len > self.capacity {
            return Ok(()); // larger than the whole cache: not kept
        }
        if self.index.get(id).is_some() {
            return Ok(());
        }
        let path = self.path(id);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        fsutil::write_atomic(&path, bytes, 0o644)?;
        self.index.put(*id, len);
        self.bytes += len;
        self.evict();
        Ok(())
    }

    fn evict(&mut self) {
        while self.bytes > self.capacity {
            let Some((id, len)) = self.index.pop_lru() else { break };
            self.bytes -= len;
            let _ = std::fs::remove_file(self.path(&id));
        }
    }
}

/// A [`LocalCache`] shared by async code: each call is one blocking task.
#[derive(Debug, Clone)]
pub(crate) struct Shared(Arc<Mutex<LocalCache>>);

impl Shared {
    pub(crate) fn new(cache: LocalCache) -> Self {
        Self(Arc::new(Mutex::new(cache)))
    }

    async fn with<R: Send + 'static>(&self, f: impl FnOnce(&mut LocalCache) -> R + Send + 'static) -> Option<R> {
        let cache = self.0.clone();
        tokio::task::spawn_blocking(move || f(&mut cache.lock().unwrap_or_else(PoisonError::into_inner))).await.ok()
    }

    /// Chunk `id`, verified (see [`LocalCache::get`]).
    pub(crate) async fn get(&self, id: ChunkId) -> Option<Bytes> {
        self.with(move |c| c.get(&id)).await.flatten().map(Bytes::from)
    }

    /// Stores chunk `id` (see [`LocalCache::put`]).
    pub(crate) async fn put(&self, id: ChunkId, bytes: Bytes) -> io::Result<()> {
        self.with(move |c| c.put(&id, &bytes)).await.unwrap_or_else(|| Err(io::Error::other("cache task failed")))
    }

    /// Which of `ids` are held, in order (one task for all of them).
    pub(crate) async fn holding(&self, ids: Vec<ChunkId>) -> Vec<bool> {
        let n = ids.len();
        self.with(move |c| ids.iter().map(|id| c.contains(id)).collect()).await.unwrap_or_else(|| vec![false; n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
