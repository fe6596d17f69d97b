//! The chunk index: for every chunk of the cached manifests, which track, rendition and segment
//! it is. Prefetch uses it (segment i asked → i+1..i+k), and so do track-scoped access tokens
//! (a chunk request names no track). Plain data, kept by [`crate::manifests::Manifests`] in
//! step with its cache.

use std::collections::HashMap;

use chorus_core::manifest::Manifest;
use chorus_core::{ChunkId, TrackId};

/// Most positions remembered per chunk (identical chunks shared by many tracks).
pub(crate) const MAX_POSITIONS: usize = 8;

/// Where a chunk sits in a track.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The track.
    pub track: TrackId,
    /// Index of the rendition in the manifest.
    pub rendition: usize,
    /// Index of the segment; `None` for the init chunk.
    pub segment: Option<usize>,
}

/// What the index knows of one chunk.
#[derive(Debug, Default)]
struct Slot {
    /// Up to [`MAX_POSITIONS`] of its positions in the indexed manifests.
    positions: Vec<Position>,
    /// All its positions in the indexed manifests, remembered or not: more than
    /// `positions.len()` means some are not listed.
    holders: usize,
}

/// Chunk id → positions in the indexed manifests.
#[derive(Debug, Default)]
pub(crate) struct ChunkIndex {
    slots: HashMap<ChunkId, Slot>,
}

impl ChunkIndex {
    /// Indexes every chunk of `track`'s manifest `m` (each rendition's init, then its
    /// segments).
    pub(crate) fn add(&mut self, track: &TrackId, m: &Manifest) {
        for (ri, r) in m.renditions.iter().enumerate() {
            let positions =
                r.init.iter().map(|c| (c.id, None)).chain(r.segments.iter().enumerate().map(|(i, s)| (s.id, Some(i))));
            for (id, segment) in positions {
                let slot = self.slots.entry(id).or_default();
                slot.holders += 1;
                if slot.positions.len() < MAX_POSITIONS {
                    slot.positions.push(Position { track: track.clone(), rendition: ri, segment });
                }
            }
        }
    }

    /// Forgets what [`ChunkIndex::add`] indexed of `track`'s manifest `m`.
    pub(crate) fn remove(&mut self, track: &TrackId, m: &Manifest) {
        // One call per position `add` counted (the same walk).
        for c in m.chunks() {
            if let Some(slot) = self.slots.get_mut(&c.id) {
                slot.positions.retain(|p| p.track != *track);
                slot.holders = slot.holders.saturating_sub(1);
                if slot.holders == 0 {
                    self.slots.remove(&c.id);
                }
            }
        }
    }

    /// Where chunk `id` sits (at most [`MAX_POSITIONS`] places).
    pub(crate) fn positions(&self, id: &ChunkId) -> Vec<Position> {
        self.slots.get(id).map(|s| s.positions.clone()).unwrap_or_default()
    }

    /// [`ChunkIndex::positions`], and whether they are all of them: false when more indexed
    /// manifests hold the chunk than are listed.
    pub(crate) fn positions_all(&self, id: &ChunkId) -> (Vec<Position>, bool) {
        self.slots.get(id).map_or((Vec::new(), true), |s| (s.positions.clone(), s.holders == s.positions.len()))
    }

    /// Whether nothing is indexed.
    #[cfg(test)]
    pub(crate) fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}
