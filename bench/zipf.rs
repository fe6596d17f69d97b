//! Deterministic request streams for the benchmarks: a SplitMix64 generator and Zipf(1.0)
//! sampling (P(rank k) ∝ 1/k). Shared by `edge/examples/hit_ratio.rs` and `bench/swarm.rs`
//! (included with `#[path]`), so both draw from the same popularity law with the same seeds.

/// SplitMix64: a small, fast, well-mixed deterministic generator.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    /// The next 64 random bits.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf(1.0) over ranks `0..n`, by a cumulative table searched per draw.
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The law over `n` ranks (at least one).
    pub(crate) fn new(n: usize) -> Self {
        let mut cdf = Vec::with_capacity(n.max(1));
        let mut acc = 0.0;
        for k in 1..=n.max(1) {
            acc += 1.0 / k as f64;
            cdf.push(acc);
        }
        Self { cdf }
    }

    /// A rank, 0 the most popular.
    pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
        let total = self.cdf.last().copied().unwrap_or(1.0);
        let u = rng.unit() * total;
        self.cdf.partition_point(|&c| c < u).min(self.cdf.len() - 1)
    }
}
