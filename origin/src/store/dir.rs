//! The directory store: the content-addressed chunk store on one filesystem (the default).
//!
//! ```text
//! STORE/
//!   chunks/ab/abcdef…(64 hex)   one file per chunk, named by the BLAKE3 of its bytes
//!   manifests/<track>.json      the signed manifest, exactly as served
//!   keys/<track>/<key_id>       a protected track's content keys (16 bytes, mode 0600, in a
//!                               0700 directory): the current one and the one before it
//!   tmp/                        uploads and encoder output in progress
//!   quarantine/                 chunks that failed verification on read
//!   origin.key, origin.pub      the manifest signing key (created on first use)
//!   tls/                        the self-signed certificate, when one was generated
//! ```
//!
//! Every write is atomic (temporary file, fsync, rename, fsync of the directory), so a crash
//! never leaves a torn chunk or manifest under its real name. Every read is verified: a chunk
//! whose bytes do not hash to its name (disk corruption, an operator's mistake) is moved to
//! `quarantine/` and reported, never served.

use chorus_core::error::Chain;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chorus_core::protect::{ContentKey, KeyId};
use chorus_core::{ChunkId, TrackId, fsutil};
use tracing::error;

use super::StoreError;

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_owned(), source }
}

/// A chunk store rooted at a directory.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// Opens (creating if needed) the store at `root`.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directories cannot be created.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for sub in ["chunks", "manifests", "tmp", "quarantine", "keys"] {
            let p = root.join(sub);
            fs::create_dir_all(&p).map_err(io_err(&p))?;
        }
        // Content keys are secrets: only the origin's user may list or read them.
        let keys = root.join("keys");
        set_mode(&keys, 0o700).map_err(io_err(&keys))?;
        Ok(Self { root: root.to_owned() })
    }

    /// The store's root directory.
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where uploads and encoder output are staged (same filesystem, so renames are atomic).
    #[must_use]
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The default signing key path, `STORE/origin.key`.
    #[must_use]
    pub fn default_key_path(&self) -> PathBuf {
        self.root.join("origin.key")
    }

    fn chunk_path(&self, id: &ChunkId) -> PathBuf {
        chorus_core::chunkdir::chunk_path(&self.root, id)
    }

    fn manifest_path(&self, track: &TrackId) -> PathBuf {
        self.root.join("manifests").join(format!("{track}.json"))
    }

    /// Whether the store holds chunk `id` (without verifying it).
    #[must_use]
    pub fn has_chunk(&self, id: &ChunkId) -> bool {
        self.chunk_path(id).is_file()
    }

    /// Stores `bytes` under their id. A chunk already present is left alone (content
    /// addressing makes the write idempotent). Returns the id and whether it was new.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the write fails; nothing is left under the chunk's name.
    pub fn put_chunk(&self, bytes: &[u8]) -> Result<(ChunkId, bool), StoreError> {
        let id = ChunkId::of(bytes);
        let path = self.chunk_path(&id);
        if path.is_file() {
            return Ok((id, false));
        }
        let dir = path.parent().unwrap_or(&self.root);
        if !dir.is_dir() {
            // A new fan-out directory must itself be durable before a chunk in it counts.
            fs::create_dir_all(dir).map_err(io_err(dir))?;
            let chunks = self.root.join("chunks");
            fsutil::sync_dir(&chunks).map_err(io_err(&chunks))?;
        }
        fsutil::write_atomic(&path, bytes, 0o644).map_err(io_err(&path))?;
        Ok((id, true))
    }

    /// Reads chunk `id`, verified against its hash. `Ok(None)` when absent.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the bytes do not match (the file is quarantined), or
    /// [`StoreError::Io`].
    pub fn get_chunk(&self, id: &ChunkId) -> Result<Option<Bytes>, StoreError> {
        let path = self.chunk_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(&path)(e)),
        };
        if id.matches(&bytes) {
            return Ok(Some(Bytes::from(bytes)));
        }
        let dest = self.root.join("quarantine").join(id.to_hex());
        match fs::rename(&path, &dest) {
            Ok(()) => {
                error!(chunk = %id, quarantined = %dest.display(), "chunk on disk does not match its hash")
            }
            Err(e) => {
                error!(chunk = %id, error = %Chain(&e), "chunk on disk does not match its hash, and quarantining it failed")
            }
        }
        Err(StoreError::Corrupt(*id))
    }

    /// Publishes a track's signed manifest document, atomically replacing any previous one.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the write fails; the previous manifest then stays.
    pub fn put_manifest(&self, track: &TrackId, json: &[u8]) -> Result<(), StoreError> {
        let path = self.manifest_path(track);
        fsutil::write_atomic(&path, json, 0o644).map_err(io_err(&path))
    }

    /// Removes a track's manifest (a purge): the track is unknown from then on. Its chunks stay
    /// (other tracks may share them). `Ok(false)` when there was none.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the removal fails.
    pub fn delete_manifest(&self, track: &TrackId) -> Result<bool, StoreError> {
        let path = self.manifest_path(track);
        match fs::remove_file(&path) {
            Ok(()) => {
                let dir = self.root.join("manifests");
                fsutil::sync_dir(&dir).map_err(io_err(&dir))?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// A track's manifest document, as stored. `Ok(None)` when the track is unknown.
    ///
    /// # Errors
    /// [`StoreError::Io`] when reading fails.
    pub fn get_manifest(&self, track: &TrackId) -> Result<Option<Bytes>, StoreError> {
        let path = self.manifest_path(track);
        match fs::read(&path) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    fn key_dir(&self, track: &TrackId) -> PathBuf {
        self.root.join("keys").join(track.as_str())
    }

    /// Stores content key `id` of `track` (mode 0600), durably, before the manifest naming it
    /// is published.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the write fails.
    pub fn put_key(&self, track: &TrackId, id: &KeyId, key: &ContentKey) -> Result<(), StoreError> {
        let dir = self.key_dir(track);
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
            set_mode(&dir, 0o700).map_err(io_err(&dir))?;
            let keys = self.root.join("keys");
            fsutil::sync_dir(&keys).map_err(io_err(&keys))?;
        }
        let path = dir.join(id.as_str());
        fsutil::write_atomic(&path, key.as_bytes(), 0o600).map_err(io_err(&path))
    }

    /// Content key `id` of `track`. `Ok(None)` when there is none (unknown, or rotated out).
    ///
    /// # Errors
    /// [`StoreError::Io`] when reading fails, or the file is not a key.
    pub fn get_key(&self, track: &TrackId, id: &KeyId) -> Result<Option<ContentKey>, StoreError> {
        let path = self.key_dir(track).join(id.as_str());
        match fs::read(&path) {
            Ok(b) => ContentKey::from_slice(&b)
                .map(Some)
                .map_err(|e| io_err(&path)(io::Error::new(io::ErrorKind::InvalidData, e))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// Removes every content key of `track` but those in `keep` (after a re-ingest: the new
    /// key and the one before it, which manifests cached for a few seconds still name).
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be listed or a key removed.
    pub fn prune_keys(&self, track: &TrackId, keep: &[&KeyId]) -> Result<(), StoreError> {
        let dir = self.key_dir(track);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            if keep.iter().any(|k| name.to_str() == Some(k.as_str())) {
                continue;
            }
            let path = e.path();
            fs::remove_file(&path).map_err(io_err(&path))?;
        }
        if keep.is_empty() {
            let _ = fs::remove_dir(&dir);
        }
        Ok(())
    }

    /// Counts tracks and chunks (a directory scan; for the gauges, not the request path).
    ///
    /// # Errors
    /// [`StoreError::Io`] when a directory cannot be listed.
    pub fn count(&self) -> Result<(u64, u64), StoreError> {
        let list = |p: &Path| fs::read_dir(p).map_err(io_err(p));
        let visible = |e: &fs::DirEntry| !e.file_name().to_string_lossy().starts_with(fsutil::TMP_PREFIX);
        let manifests = self.root.join("manifests");
        let tracks = list(&manifests)?
            .filter_map(Result::ok)
            .filter(|e| visible(e) && e.file_name().to_string_lossy().ends_with(".json"))
            .count() as u64;
        let mut chunks = 0u64;
        for fan in list(&self.root.join("chunks"))?.filter_map(Result::ok) {
            chunks += list(&fan.path())?.filter_map(Result::ok).filter(visible).count() as u64;
        }
        Ok((tracks, chunks))
    }
}

fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_private_and_pruned() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let t = TrackId::parse("t1").unwrap();
        let (a, b, c) = (KeyId::generate(), KeyId::generate(), KeyId::generate());
        let key = ContentKey::generate();
        for id in [&a, &b, &c] {
            store.put_key(&t, id, &key).unwrap();
        }
        assert_eq!(store.get_key(&t, &a).unwrap(), Some(key.clone()));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.path().join("keys").join("t1").join(a.as_str())), 0o600);
        assert_eq!(mode(&dir.path().join("keys").join("t1")), 0o700);
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
        store.prune_keys(&t, &[&b, &c]).unwrap();
        assert_eq!(store.get_key(&t, &a).unwrap(), None);
        assert_eq!(store.get_key(&t, &c).unwrap(), Some(key));
        store.prune_keys(&t, &[]).unwrap();
        assert!(!dir.path().join("keys").join("t1").exists());
        assert_eq!(store.get_key(&TrackId::parse("other").unwrap(), &a).unwrap(), None);
    }

    #[test]
    fn put_get_verify_and_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let (id, new) = store.put_chunk(b"chunk one").unwrap();
        assert!(new);
        assert!(!store.put_chunk(b"chunk one").unwrap().1);
        assert_eq!(store.get_chunk(&id).unwrap().unwrap(), Bytes::from_static(b"chunk one"));
        assert_eq!(store.get_chunk(&ChunkId::of(b"absent")).unwrap(), None);
        // Corrupt the file on disk: the read is refused and the file quarantined.
        fs::write(store.chunk_path(&id), b"chunk 0ne").unwrap();
        assert!(matches!(store.get_chunk(&id), Err(StoreError::Corrupt(_))));
        assert!(!store.has_chunk(&id));
        assert!(dir.path().join("quarantine").join(id.to_hex()).is_file());
        assert_eq!(store.count().unwrap(), (0, 0));
    }

    #[test]
    fn manifests_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::open(dir.path()).unwrap();
        let t = TrackId::parse("t1").unwrap();
        assert_eq!(store.get_manifest(&t).unwrap(), None);
        store.put_manifest(&t, b"{}").unwrap();
        store.put_chunk(b"a").unwrap();
        store.put_chunk(b"b").unwrap();
        // A stray temporary file from a crash is not counted.
        fs::write(dir.path().join("manifests").join(".tmp-x.json"), b"").unwrap();
        assert_eq!(store.count().unwrap(), (1, 2));
        assert_eq!(store.get_manifest(&t).unwrap().unwrap(), Bytes::from_static(b"{}"));
    }
}
