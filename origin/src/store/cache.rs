//! The origin's read-through memory cache of verified chunks, bounded in bytes (LRU).
//!
//! Chunks are immutable (named by their hash), so a cached chunk never goes stale; only
//! verified bytes are put in. Manifests are cached apart, for a few seconds
//! ([`super::MANIFEST_TTL`]), since a re-ingest or a purge replaces them.

use std::sync::Mutex;

use bytes::Bytes;
use chorus_core::ChunkId;
use lru::LruCache;
use prometheus::IntGauge;

/// A byte-bounded LRU of chunks.
pub(super) struct ChunkCache {
    inner: Mutex<Inner>,
    gauge: IntGauge,
}

struct Inner {
    lru: LruCache<ChunkId, Bytes>,
    bytes: u64,
    capacity: u64,
}

impl ChunkCache {
    /// A cache of at most `capacity` bytes (0: nothing is kept), its size shown in `gauge`.
    #[must_use]
    pub(super) fn new(capacity: u64, gauge: IntGauge) -> Self {
        Self { inner: Mutex::new(Inner { lru: LruCache::unbounded(), bytes: 0, capacity }), gauge }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Chunk `id`, if held (and marks it used).
    pub(super) fn get(&self, id: &ChunkId) -> Option<Bytes> {
        self.lock().lru.get(id).cloned()
    }

    /// Keeps `bytes` (already verified to be chunk `id`), evicting the least recently used
    /// chunks to stay within the capacity. A chunk larger than the whole cache is not kept.
    pub(super) fn insert(&self, id: ChunkId, bytes: Bytes) {
        let mut inner = self.lock();
        let len = bytes.len() as u64;
        if len > inner.capacity {
            return;
        }
        if let Some(old) = inner.lru.put(id, bytes) {
            inner.bytes -= old.len() as u64;
        }
        inner.bytes += len;
        while inner.bytes > inner.capacity {
            let Some((_, evicted)) = inner.lru.pop_lru() else { break };
            inner.bytes -= evicted.len() as u64;
        }
        self.gauge.set(i64::try_from(inner.bytes).unwrap_or(i64::MAX));
    }

    /// Bytes held.
    #[cfg(test)]
    #[must_use]
    pub(super) fn bytes(&self) -> u64 {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_in_bytes_least_recently_used_out() {
        let gauge = IntGauge::new("g", "g").unwrap();
        let cache = ChunkCache::new(10, gauge.clone());
        let chunk = |s: &'static [u8]| (ChunkId::of(s), Bytes::from_static(s));
        let (a, b, c, big) = (chunk(b"aaaa"), chunk(b"bbbb"), chunk(b"cccc"), chunk(b"0123456789x"));
        cache.insert(a.0, a.1.clone());
        cache.insert(b.0, b.1.clone());
        assert_eq!(cache.get(&a.0), Some(a.1.clone())); // a is now the most recent
        cache.insert(c.0, c.1.clone()); // 12 > 10: b goes
        assert_eq!(cache.get(&b.0), None);
        assert_eq!(cache.get(&a.0), Some(a.1.clone()));
        assert_eq!(cache.bytes(), 8);
        assert_eq!(gauge.get(), 8);
        cache.insert(big.0, big.1);
        assert_eq!(cache.get(&big.0), None);
        assert_eq!(cache.bytes(), 8);
        cache.insert(a.0, a.1); // again: counted once
        assert_eq!(cache.bytes(), 8);
        let off = ChunkCache::new(0, gauge);
        off.insert(c.0, c.1);
        assert_eq!(off.get(&c.0), None);
    }
}
