//! The on-disk layout every chunk directory shares (origin store, edge disk tier, client cache,
//! and later a seeding peer): `ROOT/chunks/ab/abcdef…`, one file per chunk named by its BLAKE3
//! hash, written with [`fsutil::write_atomic`](crate::fsutil::write_atomic).

use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::fsutil;
use crate::id::ChunkId;

/// The file of chunk `id` under `root`.
#[must_use]
pub fn chunk_path(root: &Path, id: &ChunkId) -> PathBuf {
    let hex = id.hex_bytes();
    let hex = std::str::from_utf8(&hex).unwrap_or_default();
    root.join("chunks").join(&hex[..2]).join(hex)
}

/// A chunk file found by [`scan`].
#[derive(Debug, Clone, Copy)]
pub struct Found {
    /// The chunk.
    pub id: ChunkId,
    /// File size in bytes.
    pub len: u64,
    /// Last modification (a stand-in for last use).
    pub modified: SystemTime,
}

/// Lists the chunk files under `root` (creating `root/chunks` if missing), oldest first,
/// removing temporary files left by a crash and ignoring anything not named like a chunk.
/// Files are not read: callers verify contents when they first use them.
///
/// # Errors
/// An I/O error when the directory cannot be created or listed.
pub fn scan(root: &Path) -> io::Result<Vec<Found>> {
    let chunks = root.join("chunks");
    std::fs::create_dir_all(&chunks)?;
    let fans: Vec<PathBuf> = std::fs::read_dir(&chunks)?.filter_map(Result::ok).map(|f| f.path()).collect();
    // A stat per file is the cost, and on a cold page cache each one waits on the disk: several
    // threads keep several reads in flight (an SSD serves them in parallel).
    let threads = fans.len().clamp(1, SCAN_THREADS);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let parts: Vec<std::thread::Result<Vec<Found>>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut found = Vec::new();
                    while let Some(fan) = fans.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
                        scan_fan(fan, &mut found);
                    }
                    found
                })
            })
            .collect();
        workers.into_iter().map(std::thread::ScopedJoinHandle::join).collect()
    });
    let mut parts = parts
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| io::Error::other("a thread listing the chunk directory panicked"))?;
    parts.sort_by_key(Vec::len);
    let mut found = parts.pop().unwrap_or_default();
    found.reserve_exact(parts.iter().map(Vec::len).sum());
    for part in parts {
        found.extend(part);
    }
    found.sort_by_key(|f| f.modified);
    Ok(found)
}

/// Threads [`scan`] lists directories with.
const SCAN_THREADS: usize = 16;

/// Adds the chunk files of one fan-out directory to `found`.
fn scan_fan(fan: &Path, found: &mut Vec<Found>) {
    let Ok(files) = std::fs::read_dir(fan) else { return };
    for f in files.filter_map(Result::ok) {
        let name = f.file_name();
        let name = name.to_string_lossy();
        match (ChunkId::parse(&name), f.metadata()) {
            (Ok(id), Ok(meta)) if meta.is_file() => {
                found.push(Found { id, len: meta.len(), modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH) });
            }
            _ if name.starts_with(fsutil::TMP_PREFIX) => {
                let _ = std::fs::remove_file(f.path());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_and_scan() {
        let dir = tempfile::tempdir().unwrap();
        let id = ChunkId::of(b"x");
        let p = chunk_path(dir.path(), &id);
        assert!(p.ends_with(format!("chunks/{}/{}", &id.to_hex()[..2], id)));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        fsutil::write_atomic(&p, b"x", 0o644).unwrap();
        let stray = p.parent().unwrap().join(format!("{}junk", fsutil::TMP_PREFIX));
        std::fs::write(&stray, b"").unwrap();
        std::fs::write(p.parent().unwrap().join("not-a-chunk"), b"").unwrap();
        let found = scan(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].id, found[0].len), (id, 1));
        assert!(!stray.exists(), "temporary file left behind");
    }
}
