//! The disk tier's files: `DIR/chunks/ab/abcdef…`, written atomically, verified on read.

use chorus_core::error::Chain;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use chorus_core::{ChunkId, fsutil};
use tracing::{error, info, warn};

use super::tier::Weighted;

/// What the disk index keeps per chunk.
#[derive(Debug, Clone, Copy)]
pub struct DiskEntry {
    /// File size in bytes.
    pub size: u64,
    /// Whether the file's bytes are known to match its id: written by this process, or read
    /// and checked since it started. Only verified files are sent with `sendfile` (unread).
    pub verified: bool,
    /// Whether the file is on disk: false while it is being written (the index admits the
    /// chunk first, so the bytes count against the tier's size at once).
    pub ready: bool,
}

impl Weighted for DiskEntry {
    fn weight(&self) -> u64 {
        self.size
    }
}

/// The chunk files of the disk tier.
pub struct DiskStore {
    dir: PathBuf,
    enabled: AtomicBool,
}

impl DiskStore {
    pub(super) fn new(dir: PathBuf) -> Self {
        Self { dir, enabled: AtomicBool::new(true) }
    }

    /// Whether writes have not failed yet.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        chorus_core::chunkdir::chunk_path(&self.dir, id)
    }

    /// Lists the chunk files, oldest first (by modification time, a stand-in for last use),
    /// removing leftover temporary files and anything not named like a chunk.
    pub(super) async fn scan(&self) -> std::io::Result<Vec<(ChunkId, DiskEntry)>> {
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || {
            let found = chorus_core::chunkdir::scan(&dir)?;
            info!(files = found.len(), dir = %dir.display(), "disk cache index rebuilt; files are verified when first read");
            Ok(found.into_iter().map(|f| (f.id, DiskEntry { size: f.len, verified: false, ready: true })).collect())
        })
        .await
        .map_err(std::io::Error::other)?
    }

    /// Reads and verifies chunk `id`. `None` if absent, unreadable or corrupt (then deleted).
    pub(super) async fn read(&self, id: &ChunkId) -> Option<Bytes> {
        let path = self.path(id);
        let id = *id;
        tokio::task::spawn_blocking(move || match std::fs::read(&path) {
            Ok(b) if id.matches(&b) => Some(Bytes::from(b)),
            Ok(_) => {
                error!(chunk = %id, path = %path.display(), "cached file does not match its hash; deleted, will refetch");
                let _ = std::fs::remove_file(&path);
                None
            }
            Err(e) => {
                warn!(chunk = %id, error = %Chain(&e), "cached file unreadable; will refetch");
                None
            }
        })
        .await
        .ok()
        .flatten()
    }

    /// Writes chunk `id` atomically. On failure turns the tier off and returns false.
    pub(super) async fn write(&self, id: &ChunkId, bytes: Bytes) -> bool {
        if !self.enabled() {
            return false;
        }
        let path = self.path(id);
        let result = tokio::task::spawn_blocking(move || {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            fsutil::write_atomic(&path, &bytes, 0o644)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match result {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %Chain(&e), dir = %self.dir.display(), "writing to the disk cache failed; continuing memory-only");
                self.enabled.store(false, Ordering::Relaxed);
                false
            }
        }
    }

    /// Opens chunk `id`'s file for `sendfile` (a cheap `open` on a hot directory entry, done
    /// on the calling thread).
    pub(super) fn open(&self, id: &ChunkId) -> Option<std::fs::File> {
        std::fs::File::open(self.path(id)).ok()
    }

    /// Deletes the files of `ids` (missing files are fine).
    pub(super) async fn remove_all(&self, ids: Vec<ChunkId>) {
        if ids.is_empty() {
            return;
        }
        let paths: Vec<PathBuf> = ids.iter().map(|id| self.path(id)).collect();
        let _ = tokio::task::spawn_blocking(move || {
            for p in paths {
                let _ = std::fs::remove_file(p);
            }
        })
        .await;
    }
}
