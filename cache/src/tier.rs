//! One cache tier: least-recently-used order, bounded by bytes, with TinyLFU admission.
//!
//! Plain logic (no I/O): the memory tier holds the bytes themselves, the disk tier holds an
//! index of files; both use this. When a new chunk does not fit, the least recently used
//! entries that would have to leave are compared with it by recent request frequency (a
//! [`Sketch`] shared by both tiers): the newcomer gets in only if it has been asked for more
//! often than each of them. One-hit wonders (a crawler, a track played once) then cannot flush
//! hot chunks, while chunks whose popularity rises get in on their second or third request.

use chorus_core::ChunkId;
use lru::LruCache;

use super::sketch::Sketch;

/// What a tier stores for a chunk: something with a size in bytes.
pub trait Weighted {
    /// Bytes this entry accounts for.
    fn weight(&self) -> u64;
}

impl Weighted for bytes::Bytes {
    fn weight(&self) -> u64 {
        self.len() as u64
    }
}

/// The result of offering a chunk to a tier.
#[derive(Debug)]
pub enum Admission<V> {
    /// Stored; these entries were evicted to make room.
    Admitted(Vec<(ChunkId, V)>),
    /// Refused: less popular than what it would evict, or larger than the whole tier.
    Rejected,
}

/// A byte-bounded LRU with frequency-based admission.
pub struct Tier<V> {
    entries: LruCache<ChunkId, V>,
    bytes: u64,
    capacity: u64,
}

impl<V: Weighted> Tier<V> {
    /// An empty tier holding at most `capacity` bytes.
    #[must_use]
    pub fn new(capacity: u64) -> Self {
        Self { entries: LruCache::unbounded(), bytes: 0, capacity }
    }

    /// Bytes held.
    #[must_use]
    pub const fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Capacity in bytes.
    #[must_use]
    pub const fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Entries held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tier is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry for `id`, marking it most recently used.
    pub fn get(&mut self, id: &ChunkId) -> Option<&V> {
        self.entries.get(id)
    }

    /// The entry for `id`, mutably, marking it most recently used.
    pub fn get_mut(&mut self, id: &ChunkId) -> Option<&mut V> {
        self.entries.get_mut(id)
    }

    /// The entry for `id`, without touching the order.
    #[must_use]
    pub fn peek(&self, id: &ChunkId) -> Option<&V> {
        self.entries.peek(id)
    }

    /// Whether `id` is held.
    #[must_use]
    pub fn contains(&self, id: &ChunkId) -> bool {
        self.entries.contains(id)
    }

    /// Offers `value` for `id`, admitting it only if it is more popular (per `sketch`) than
    /// each entry that would have to leave. Replaces an existing entry for `id`.
    pub fn offer(&mut self, id: ChunkId, value: V, sketch: &Sketch) -> Admission<V> {
        let weight = value.weight();
        if weight > self.capacity {
            return Admission::Rejected;
        }
        if let Some(old) = self.entries.pop(&id) {
            self.bytes -= old.weight();
        }
        let need = (self.bytes + weight).saturating_sub(self.capacity);
        if need > 0 {
            let candidate = sketch.estimate(&id);
            let mut freed = 0;
            for (victim, v) in self.entries.iter().rev() {
                if freed >= need {
                    break;
                }
                if sketch.estimate(victim) >= candidate {
                    return Admission::Rejected;
                }
                freed += v.weight();
            }
        }
        let mut evicted = Vec::new();
        while self.bytes + weight > self.capacity {
            match self.entries.pop_lru() {
                Some((k, v)) => {
                    self.bytes -= v.weight();
                    evicted.push((k, v));
                }
                None => break,
            }
        }
        self.bytes += weight;
        self.entries.put(id, value);
        Admission::Admitted(evicted)
    }

    /// Inserts without admission control unless it is larger than the whole tier (`None`),
    /// evicting least recently used entries; returns them.
    pub fn insert_if_fits(&mut self, id: ChunkId, value: V) -> Option<Vec<(ChunkId, V)>> {
        (value.weight() <= self.capacity).then(|| self.insert(id, value))
    }

    /// Inserts without admission control (used when rebuilding an index from disk), evicting
    /// least recently used entries if needed.
    pub fn insert(&mut self, id: ChunkId, value: V) -> Vec<(ChunkId, V)> {
        if let Some(old) = self.entries.pop(&id) {
            self.bytes -= old.weight();
        }
        self.bytes += value.weight();
        self.entries.put(id, value);
        let mut evicted = Vec::new();
        while self.bytes > self.capacity {
            match self.entries.pop_lru() {
                Some((k, v)) => {
                    self.bytes -= v.weight();
                    evicted.push((k, v));
                }
                None => break,
            }
        }
        evicted
    }

    /// Removes `id`.
    pub fn remove(&mut self, id: &ChunkId) -> Option<V> {
        let v = self.entries.pop(id)?;
        self.bytes -= v.weight();
        Some(v)
    }

    /// Every id held, least recently used last.
    pub fn ids(&self) -> impl Iterator<Item = &ChunkId> {
        self.entries.iter().map(|(k, _)| k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy, PartialEq)]
    struct W(u64);
    impl Weighted for W {
        fn weight(&self) -> u64 {
            self.0
        }
    }

    fn id(n: u32) -> ChunkId {
        ChunkId::of(&n.to_le_bytes())
    }

    #[test]
    fn bounded_by_bytes_and_lru() {
        let sketch = Sketch::new(256);
        let mut t = Tier::new(300);
        for n in 0..3 {
            assert!(matches!(t.offer(id(n), W(100), &sketch), Admission::Admitted(ref e) if e.is_empty()));
        }
        assert_eq!(t.bytes(), 300);
        t.get(&id(0));
        // id(1) is now least recently used; with equal (zero) popularity a newcomer is refused.
        assert!(matches!(t.offer(id(3), W(100), &sketch), Admission::Rejected));
        let mut sketch = sketch;
        sketch.increment(&id(3));
        match t.offer(id(3), W(100), &sketch) {
            Admission::Admitted(e) => assert_eq!(e, vec![(id(1), W(100))]),
            Admission::Rejected => panic!("a more popular chunk must get in"),
        }
        assert!(t.contains(&id(0)) && !t.contains(&id(1)));
        assert!(matches!(t.offer(id(9), W(301), &sketch), Admission::Rejected));
    }

    #[test]
    fn one_hit_wonders_do_not_flush_hot_chunks() {
        let mut sketch = Sketch::new(1024);
        let mut t = Tier::new(10 * 100);
        for n in 0..10 {
            for _ in 0..3 {
                sketch.increment(&id(n));
            }
            t.offer(id(n), W(100), &sketch);
        }
        for n in 1000..2000 {
            sketch.increment(&id(n));
            t.offer(id(n), W(100), &sketch);
        }
        assert!((0..10).all(|n| t.contains(&id(n))), "a scan flushed the hot set");
    }
}
