//! An ingest's synchronous writes ([`Store::writer`]): chunks, content keys, then the manifest.

use std::path::Path;

use bytes::Bytes;
use chorus_core::manifest::limits;
use chorus_core::protect::{ContentKey, KeyId};
use chorus_core::{ChunkId, TrackId};

use super::{Backend, ObjectBackend, Store, StoreError, key_key, manifest_key, prune_object_keys};

/// An ingest's synchronous access to the store ([`Store::writer`]).
pub struct Writer<'a> {
    pub(super) store: &'a Store,
    pub(super) rt: Option<tokio::runtime::Handle>,
}

impl Writer<'_> {
    fn block<T>(&self, b: &ObjectBackend, f: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => Err(StoreError::Config { store: b.name().to_owned(), reason: "no Tokio runtime".into() }),
        }
    }

    /// The store's location, for errors.
    #[must_use]
    pub fn name(&self) -> &str {
        self.store.name()
    }

    /// Where encoder output is staged (local).
    #[must_use]
    pub fn work_dir(&self) -> &Path {
        self.store.work_dir()
    }

    /// Stores `bytes` under their id; a chunk already present is left alone (content addressing
    /// makes the write idempotent). Returns the id and whether it was new.
    ///
    /// # Errors
    /// [`StoreError`] when the write fails; nothing is left under the chunk's name.
    pub fn put_chunk(&self, bytes: &[u8]) -> Result<(ChunkId, bool), StoreError> {
        match &self.store.inner.backend {
            Backend::Dir(d) => d.put_chunk(bytes),
            Backend::Object(b) => {
                let id = ChunkId::of(bytes);
                let rel = ObjectBackend::chunk_key(&id);
                self.block(b, async {
                    if b.exists(&rel).await? {
                        return Ok((id, false));
                    }
                    b.put(&rel, Bytes::copy_from_slice(bytes)).await?;
                    Ok((id, true))
                })
            }
        }
    }

    /// A track's manifest as stored now (never from a cache).
    ///
    /// # Errors
    /// [`StoreError`] when reading fails.
    pub fn get_manifest(&self, track: &TrackId) -> Result<Option<Bytes>, StoreError> {
        match &self.store.inner.backend {
            Backend::Dir(d) => d.get_manifest(track),
            Backend::Object(b) => self.block(b, b.get(&manifest_key(track), limits::MAX_BYTES as u64)),
        }
    }

    /// Publishes a track's signed manifest, replacing any previous one at once (atomically).
    ///
    /// # Errors
    /// [`StoreError`] when the write fails; the previous manifest then stays.
    pub fn put_manifest(&self, track: &TrackId, json: &[u8]) -> Result<(), StoreError> {
        match &self.store.inner.backend {
            Backend::Dir(d) => d.put_manifest(track, json)?,
            Backend::Object(b) => self.block(b, b.put(&manifest_key(track), Bytes::copy_from_slice(json)))?,
        }
        self.store.manifests().pop(track);
        Ok(())
    }

    /// Stores content key `id` of `track`, before the manifest naming it is published.
    ///
    /// # Errors
    /// [`StoreError::NoKeyStore`] when the store keeps no keys, or the write failed.
    pub fn put_key(&self, track: &TrackId, id: &KeyId, key: &ContentKey) -> Result<(), StoreError> {
        match &self.store.inner.keys {
            None => Err(StoreError::NoKeyStore(self.store.name().to_owned())),
            Some(Backend::Dir(d)) => d.put_key(track, id, key),
            Some(Backend::Object(b)) => {
                self.block(b, b.put(&key_key(track, id), Bytes::copy_from_slice(key.as_bytes())))
            }
        }
    }

    /// Whether a protected ingest can keep its key.
    #[must_use]
    pub fn keeps_keys(&self) -> bool {
        self.store.inner.keys.is_some()
    }

    /// Removes every content key of `track` but those in `keep`.
    ///
    /// # Errors
    /// [`StoreError`] when listing or removing fails.
    pub fn prune_keys(&self, track: &TrackId, keep: &[&KeyId]) -> Result<(), StoreError> {
        match &self.store.inner.keys {
            None => Ok(()),
            Some(Backend::Dir(d)) => d.prune_keys(track, keep),
            Some(Backend::Object(b)) => self.block(b, prune_object_keys(b, track, keep)),
        }
    }
}
