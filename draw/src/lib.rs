//! chorus-draw: deterministic draws shared by the simulator (`chorus-sim`), the benchmarks
//! (`bench/swarm.rs`, `bench/tracker.rs`, `edge/examples/hit_ratio.rs`) and the edge's
//! hit-ratio tests: a SplitMix64 generator and Zipf popularity (P(rank k) ∝ 1/k^s). One
//! definition, so a seed gives the same stream in each of them.

/// SplitMix64: a small, fast, well-mixed deterministic generator.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)] // the generator's own step, not an iterator
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    #[allow(clippy::cast_precision_loss)] // 53 bits
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `lo..=hi` (`lo` when `hi <= lo`).
    pub fn range(&mut self, (lo, hi): (u64, u64)) -> u64 {
        if hi <= lo { lo } else { lo + self.next() % (hi - lo + 1) }
    }
}

impl rand_core::RngCore for Rng {
    fn next_u32(&mut self) -> u32 {
        u32::try_from(self.next() >> 32).unwrap_or(0)
    }
    fn next_u64(&mut self) -> u64 {
        self.next()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// Zipf popularity over ranks `0..n` (exponent `s`; 1.0 is the classic law), by a cumulative
/// table searched per draw.
#[derive(Debug, Clone)]
pub struct Zipf(Vec<f64>);

impl Zipf {
    /// The law over `n` ranks (at least one).
    #[allow(clippy::cast_precision_loss)]
    #[must_use]
    pub fn new(n: usize, s: f64) -> Self {
        let mut acc = 0.0;
        Self(
            (1..=n.max(1))
                .map(|k| {
                    acc += 1.0 / (k as f64).powf(s);
                    acc
                })
                .collect(),
        )
    }

    /// A rank, 0 the most popular.
    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit() * self.0.last().copied().unwrap_or(1.0);
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_is_a_stream_and_rank_zero_is_the_most_drawn() {
        let (mut a, mut b) = (Rng(7), Rng(7));
        assert!((0..100).all(|_| a.next() == b.next()));
        let z = Zipf::new(100, 1.0);
        let mut counts = [0u32; 100];
        let mut rng = Rng(1);
        for _ in 0..100_000 {
            counts[z.sample(&mut rng)] += 1;
        }
        assert!(counts[0] > counts[1] && counts[1] > counts[9] && counts[9] > counts[99], "{counts:?}");
        assert_eq!(Rng(3).range((5, 5)), 5);
        assert!((0..1000).all(|_| (10..=20).contains(&a.range((10, 20)))));
    }
}
