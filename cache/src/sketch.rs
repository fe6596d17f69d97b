//! A count-min sketch of recent request frequency: TinyLFU's memory.
//!
//! Four rows of 4-bit-range counters (`u8` saturating at 15), indexed by four independent
//! 32-bit slices of the chunk id, which is already a uniform hash. After `10 × width`
//! increments every counter is halved, so the sketch follows popularity as it shifts instead of
//! remembering last month's hits. Memory: `4 × width` bytes.

use chorus_core::ChunkId;

const ROWS: usize = 4;
const MAX: u8 = 15;

/// Approximate per-chunk request counts.
#[derive(Debug, Clone)]
pub struct Sketch {
    table: Vec<u8>,
    mask: usize,
    additions: usize,
    sample: usize,
}

impl Sketch {
    /// A sketch sized for about `items` distinct hot items (rounded up to a power of two,
    /// at least 256 and at most 2^24 columns).
    #[must_use]
    pub fn new(items: usize) -> Self {
        let width = items.clamp(256, 1 << 24).next_power_of_two();
        Self { table: vec![0; width * ROWS], mask: width - 1, additions: 0, sample: width * 10 }
    }

    fn slots(&self, id: &ChunkId) -> [usize; ROWS] {
        let b = id.as_bytes();
        let width = self.mask + 1;
        let mut out = [0; ROWS];
        for (row, slot) in out.iter_mut().enumerate() {
            let h = u32::from_le_bytes([b[row * 4], b[row * 4 + 1], b[row * 4 + 2], b[row * 4 + 3]]) as usize;
            *slot = row * width + (h & self.mask);
        }
        out
    }

    /// Counts one request for `id`.
    pub fn increment(&mut self, id: &ChunkId) {
        let slots = self.slots(id);
        let min = slots.iter().map(|&s| self.table[s]).min().unwrap_or(0);
        if min < MAX {
            // Conservative update: raise only the counters at the minimum.
            for s in slots {
                if self.table[s] == min {
                    self.table[s] += 1;
                }
            }
        }
        self.additions += 1;
        if self.additions >= self.sample {
            for c in &mut self.table {
                *c >>= 1;
            }
            self.additions /= 2;
        }
    }

    /// The estimated recent count of `id` (never below the truth, saturating at 15).
    #[must_use]
    pub fn estimate(&self, id: &ChunkId) -> u8 {
        self.slots(id).iter().map(|&s| self.table[s]).min().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_ages() {
        let mut s = Sketch::new(256);
        let hot = ChunkId::of(b"hot");
        let cold = ChunkId::of(b"cold");
        for _ in 0..10 {
            s.increment(&hot);
        }
        s.increment(&cold);
        assert!(s.estimate(&hot) >= 10);
        assert!(s.estimate(&cold) >= 1 && s.estimate(&cold) < 10);
        // Enough other traffic halves everything.
        for i in 0..(256u32 * 10) {
            s.increment(&ChunkId::of(&i.to_le_bytes()));
        }
        assert!(s.estimate(&hot) <= 7, "{}", s.estimate(&hot));
    }
}
