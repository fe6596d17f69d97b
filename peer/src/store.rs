//! What a peer serves: verified chunks, and which chunks of a track it holds.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use chorus_core::manifest::Manifest;
use chorus_core::{ChunkId, TrackId};

/// The chunks a peer can serve. Implementations must hand out only bytes that hash to the id
/// (the receiver checks too, but a peer should not spread what it knows to be wrong).
pub trait Store: Send + Sync + 'static {
    /// The chunk's bytes, verified, if held.
    fn chunk(&self, id: &ChunkId) -> Option<Bytes>;
    /// The ids of `track`'s chunks held (for `/chorus/have/1.0.0`).
    fn held(&self, track: &TrackId) -> Vec<ChunkId>;
    /// Tracks of which at least one chunk is held (to announce).
    fn tracks(&self) -> Vec<TrackId>;
}

/// A directory in the shared chunk layout (`DIR/chunks/ab/abcd…`) with the manifests of its
/// tracks in `DIR/manifests/{track}.json`: exactly what `chorus fetch --cache-dir` leaves, so a
/// listener's cache is a seeding peer's store.
#[derive(Debug, Clone)]
pub struct DirStore {
    dir: PathBuf,
}

impl DirStore {
    /// A store over `dir` (nothing is read until asked).
    #[must_use]
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_owned() }
    }

    /// The chunk ids a manifest lists (init chunks and segments of every rendition).
    fn manifest_ids(&self, track: &TrackId) -> Vec<ChunkId> {
        // The manifest's signature is not checked here: it only says which ids to look for,
        // and every chunk is checked against its id when read and again by the receiver.
        let path = self.dir.join("manifests").join(format!("{track}.json"));
        let Ok(doc) = std::fs::read(&path) else { return Vec::new() };
        let Ok(m) = serde_json::from_slice::<Manifest>(&doc) else { return Vec::new() };
        m.chunks().map(|c| c.id).collect()
    }
}

impl Store for DirStore {
    fn chunk(&self, id: &ChunkId) -> Option<Bytes> {
        let bytes = std::fs::read(chorus_core::chunkdir::chunk_path(&self.dir, id)).ok()?;
        id.matches(&bytes).then(|| Bytes::from(bytes))
    }

    fn held(&self, track: &TrackId) -> Vec<ChunkId> {
        self.manifest_ids(track)
            .into_iter()
            .filter(|id| chorus_core::chunkdir::chunk_path(&self.dir, id).is_file())
            .collect()
    }

    fn tracks(&self) -> Vec<TrackId> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("manifests")) else { return Vec::new() };
        let mut tracks: Vec<TrackId> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name();
                let track = TrackId::parse(name.to_str()?.strip_suffix(".json")?).ok()?;
                (!self.held(&track).is_empty()).then_some(track)
            })
            .collect();
        tracks.sort();
        tracks
    }
}

/// A store that holds nothing: for nodes that only relay or bootstrap (`chorus edge
/// --p2p-relay`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoChunks;

impl Store for NoChunks {
    fn chunk(&self, _: &ChunkId) -> Option<Bytes> {
        None
    }
    fn held(&self, _: &TrackId) -> Vec<ChunkId> {
        Vec::new()
    }
    fn tracks(&self) -> Vec<TrackId> {
        Vec::new()
    }
}
