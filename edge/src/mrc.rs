//! Miss-ratio curve: the hit ratio this edge would reach at other cache sizes, estimated online
//! from its own chunk requests, for capacity planning (`chorus_edge_mrc_hit_ratio{cache_bytes}`).
//!
//! The estimator is SHARDS (Waldspurger et al., "Efficient MRC Construction with SHARDS",
//! FAST '15) in its fixed-size form, measured in bytes:
//! - **Spatial sampling.** A chunk is in the sample when a keyed hash of its id falls below a
//!   threshold, so every request for a sampled chunk is seen and every other request costs one
//!   hash and a comparison (no lock). The sampling rate is `threshold / 2^64`.
//! - **A fixed sample budget.** At most [`MrcConfig::max_samples`] chunks are tracked; when one
//!   more would exceed it, the chunk with the largest hash leaves and the threshold drops to
//!   its hash. Counts gathered at the higher rate are scaled by the ratio of the rates, so old
//!   and new requests weigh alike. Memory stays bounded however large the catalogue.
//! - **Byte stack distances.** For a repeated request, the distance is the bytes of the
//!   distinct sampled chunks requested since this chunk's previous request, divided by the
//!   sampling rate. An LRU cache of `C` bytes would have hit iff distance + the chunk's size
//!   ≤ `C`; first requests are misses at every size. The estimate for each configured size is
//!   hits / requests, over every request since the edge started.
//!
//! What it estimates is an LRU cache of that many bytes; the edge's own policy (TinyLFU
//! admission over two tiers) usually does a little better at the same size, so read the curve's
//! shape (what doubling the cache buys) rather than its absolute value at 1×.
//!
//! Cost: an unsampled request costs a hash and a comparison. A sampled one takes a lock and
//! O(log n) work in the n tracked chunks: the bytes requested since a time come from a Fenwick
//! tree of sizes indexed by logical time, renumbered when its times run out (O(n log n) once per
//! at least n requests). The rate falls as the catalogue grows, so sampled requests become rare
//! on a busy edge; with a catalogue under `max_samples` chunks every request is sampled.

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasher as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chorus_core::ChunkId;

/// Settings of the estimator.
#[derive(Debug, Clone)]
pub struct MrcConfig {
    /// The cache sizes to estimate the hit ratio at, in bytes.
    pub sizes: Vec<u64>,
    /// Chunks tracked at most (default 8192, about 1 MiB of memory).
    pub max_samples: usize,
}

impl MrcConfig {
    /// Sizes from ¼× to 8× `capacity` (the edge's cache size), doubling.
    #[must_use]
    pub fn around(capacity: u64) -> Self {
        let sizes = [4, 2, 1]
            .map(|d| capacity / d)
            .into_iter()
            .chain([2, 4, 8].map(|m| capacity.saturating_mul(m)))
            .filter(|&s| s > 0)
            .collect();
        Self { sizes, max_samples: 8192 }
    }
}

/// The online estimator; cheap to call on every chunk request.
#[derive(Debug)]
pub struct Mrc {
    /// Secret per process, so nobody can choose chunk ids that land in (or out of) the sample.
    key: u64,
    /// Requests whose hash is below this are sampled (a copy of `State::threshold` read
    /// without the lock).
    threshold: AtomicU64,
    /// Requests (sampled or not) not yet folded into `State::expected`.
    seen: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    sizes: Vec<u64>,
    max_samples: usize,
    threshold: u64,
    /// Logical time: one tick per sampled request.
    clock: u64,
    /// Sampled chunk (by hash) → time and size of its last request.
    last: HashMap<u64, (u64, u64)>,
    /// Size of each sampled chunk at the time of its last request: the bytes requested since
    /// a time, in O(log n).
    sums: Fenwick,
    /// The sum of every size in `sums`.
    total: u64,
    /// Hashes of the sampled chunks, to find the largest when the budget is exceeded.
    hashes: BTreeSet<u64>,
    /// Requests that would have hit, per size (scaled with the rate).
    hits: Vec<f64>,
    /// Sampled requests (scaled with the rate).
    requests: f64,
    /// Sampled requests expected from all requests at the rates in force (scaled alike).
    expected: f64,
}

impl Mrc {
    /// An estimator for `cfg.sizes`, sampling with a random key.
    #[must_use]
    pub fn new(cfg: MrcConfig) -> Self {
        Self::with_key(cfg, std::collections::hash_map::RandomState::new().hash_one(0u64))
    }

    /// An estimator sampling with `key`: the same key and requests give the same estimates.
    #[must_use]
    pub fn with_key(cfg: MrcConfig, key: u64) -> Self {
        let n = cfg.sizes.len();
        Self {
            key,
            threshold: AtomicU64::new(u64::MAX),
            seen: AtomicU64::new(0),
            state: Mutex::new(State {
                sizes: cfg.sizes,
                max_samples: cfg.max_samples.max(1),
                threshold: u64::MAX,
                clock: 0,
                last: HashMap::new(),
                sums: Fenwick::with_values(MIN_TIMES, std::iter::empty()),
                total: 0,
                hashes: BTreeSet::new(),
                hits: vec![0.0; n],
                requests: 0.0,
                expected: 0.0,
            }),
        }
    }

    /// Records a request for chunk `id` of `size` bytes; returns whether it was sampled (and
    /// the estimates may have changed).
    pub fn record(&self, id: &ChunkId, size: u64) -> bool {
        self.seen.fetch_add(1, Ordering::Relaxed);
        let h = self.hash(id);
        if h >= self.threshold.load(Ordering::Relaxed) {
            return false;
        }
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.fold(&self.seen);
        if h >= st.threshold {
            return false; // the threshold dropped meanwhile
        }
        st.record(h, size);
        self.threshold.store(st.threshold, Ordering::Relaxed);
        true
    }

    /// Where `id` falls in `0..2^64`: its first 8 bytes (a BLAKE3 hash, so uniform) mixed
    /// with the key by a bijection (SplitMix64's finalizer).
    fn hash(&self, id: &ChunkId) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&id.as_bytes()[..8]);
        let mut z = u64::from_le_bytes(first) ^ self.key;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The estimated hit ratio at each configured size, as `(size, ratio)`; `None` before any
    /// request was sampled.
    #[must_use]
    pub fn hit_ratios(&self) -> Option<Vec<(u64, f64)>> {
        let mut st = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        st.fold(&self.seen);
        if st.requests <= 0.0 {
            return None;
        }
        // SHARDS_adj: the sample drew more or fewer requests than its rate predicts, almost
        // always because the hottest chunks are in it or not; they are requested again at
        // once, so the difference counts as hits (distance 0) at every size.
        let total = st.expected.max(f64::MIN_POSITIVE);
        let adjust = st.expected - st.requests;
        Some(st.sizes.iter().zip(&st.hits).map(|(&s, &h)| (s, ((h + adjust) / total).clamp(0.0, 1.0))).collect())
    }

    /// The fraction of chunks sampled now.
    #[must_use]
    pub fn sampling_rate(&self) -> f64 {
        rate(self.threshold.load(Ordering::Relaxed))
    }

    /// Chunks tracked now (at most [`MrcConfig::max_samples`]).
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner).last.len()
    }
}

fn rate(threshold: u64) -> f64 {
    threshold as f64 / 18_446_744_073_709_551_616.0 // 2^64
}

impl State {
    /// Counts the requests seen since the last call as expected samples at the current rate.
    fn fold(&mut self, seen: &AtomicU64) {
        self.expected += seen.swap(0, Ordering::Relaxed) as f64 * rate(self.threshold);
    }

    fn record(&mut self, h: u64, size: u64) {
        if self.clock >= self.sums.capacity() {
            self.renumber();
        }
        self.clock += 1;
        let now = self.clock;
        self.requests += 1.0;
        if let Some((prev, prev_size)) = self.last.get(&h).copied() {
            // Every chunk requested after `prev` (all before `now`) is distinct and counted once.
            let between = self.total - self.sums.prefix(prev);
            let distance = between as f64 / rate(self.threshold);
            for (hits, &c) in self.hits.iter_mut().zip(&self.sizes) {
                if distance + size as f64 <= c as f64 {
                    *hits += 1.0;
                }
            }
            self.forget(prev, prev_size);
        } else {
            self.hashes.insert(h);
        }
        self.sums.add(now, size);
        self.total += size;
        self.last.insert(h, (now, size));
        if self.hashes.len() > self.max_samples
            && let Some(top) = self.hashes.pop_last()
        {
            // The largest hash leaves, and the threshold drops to it: sampled from now on are
            // hashes below it. Counts so far shrink by the ratio of the rates.
            if let Some((t, s)) = self.last.remove(&top) {
                self.forget(t, s);
            }
            let scale = rate(top) / rate(self.threshold);
            self.hits.iter_mut().for_each(|x| *x *= scale);
            self.requests *= scale;
            self.expected *= scale;
            self.threshold = top;
        }
    }

    /// Takes the request at time `t` of `size` bytes out of the sums.
    fn forget(&mut self, t: u64, size: u64) {
        self.sums.add(t, size.wrapping_neg());
        self.total -= size;
    }

    /// Gives the tracked chunks times `1..=n` in the order of their last requests, with room
    /// for at least `n + 1` more requests before the next renumbering.
    fn renumber(&mut self) {
        let mut live: Vec<(u64, u64, u64)> = self.last.iter().map(|(&h, &(t, s))| (t, h, s)).collect();
        live.sort_unstable_by_key(|&(t, _, _)| t);
        for (i, &(_, h, s)) in live.iter().enumerate() {
            self.last.insert(h, (i as u64 + 1, s));
        }
        let times = (2 * live.len() + 2).max(MIN_TIMES);
        self.sums = Fenwick::with_values(times, live.iter().map(|&(_, _, s)| s));
        self.clock = live.len() as u64;
    }
}

/// Logical times a [`Fenwick`] holds at least.
const MIN_TIMES: usize = 1024;

/// A Fenwick (binary indexed) tree of sizes at times `1..=capacity`: adding at a time and
/// summing up to a time both take O(log capacity). Arithmetic wraps, so subtracting is adding
/// the wrapped negation; every prefix sum of real sizes is exact.
#[derive(Debug)]
struct Fenwick {
    /// `tree[i]` holds the sum over times `(i - lowbit(i), i]`; `tree[0]` is unused.
    tree: Vec<u64>,
}

impl Fenwick {
    /// A tree of `capacity` times whose first ones hold `values`, built in O(capacity).
    fn with_values(capacity: usize, values: impl Iterator<Item = u64>) -> Self {
        let mut tree = vec![0u64; capacity + 1];
        for (slot, v) in tree[1..].iter_mut().zip(values) {
            *slot = v;
        }
        for i in 1..=capacity {
            let parent = i + (i & i.wrapping_neg());
            if parent <= capacity {
                tree[parent] = tree[parent].wrapping_add(tree[i]);
            }
        }
        Self { tree }
    }

    fn capacity(&self) -> u64 {
        self.tree.len() as u64 - 1
    }

    /// Adds `v` (wrapping) at time `t` (`1..=capacity`).
    fn add(&mut self, t: u64, v: u64) {
        let mut i = usize::try_from(t).unwrap_or(usize::MAX);
        while let Some(slot) = self.tree.get_mut(i).filter(|_| i > 0) {
            *slot = slot.wrapping_add(v);
            i += i & i.wrapping_neg();
        }
    }

    /// The sum over times `1..=t`.
    fn prefix(&self, t: u64) -> u64 {
        let mut i = usize::try_from(t).unwrap_or(usize::MAX).min(self.tree.len() - 1);
        let mut sum = 0u64;
        while i > 0 {
            sum = sum.wrapping_add(self.tree[i]);
            i &= i - 1;
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The benchmarks' deterministic Zipf request streams, for the test against exact simulation.
    use chorus_draw::{Rng, Zipf};

    /// Exact hit ratios of byte-bounded LRU caches of each size on `stream`.
    fn exact(stream: &[(ChunkId, u64)], sizes: &[u64]) -> Vec<f64> {
        sizes
            .iter()
            .map(|&cap| {
                let mut lru: lru::LruCache<ChunkId, u64> = lru::LruCache::unbounded();
                let (mut held, mut hits) = (0u64, 0u64);
                for &(id, size) in stream {
                    if lru.get(&id).is_some() {
                        hits += 1;
                        continue;
                    }
                    if size > cap {
                        continue;
                    }
                    lru.put(id, size);
                    held += size;
                    while held > cap {
                        let Some((_, s)) = lru.pop_lru() else { break };
                        held -= s;
                    }
                }
                hits as f64 / stream.len() as f64
            })
            .collect()
    }

    /// A Zipf(1.0) stream over `chunks` chunks of 18–240 KB (the rendition mix of a 6 s
    /// segment ladder), popularity independent of size.
    fn stream(chunks: usize, requests: usize, seed: u64) -> (Vec<(ChunkId, u64)>, u64) {
        let mut rng = Rng(seed);
        let ladder = [18_000u64, 72_000, 120_000, 240_000];
        let catalogue: Vec<(ChunkId, u64)> =
            (0..chunks).map(|k| (ChunkId::of(&(k as u64).to_le_bytes()), ladder[(rng.next() % 4) as usize])).collect();
        let bytes = catalogue.iter().map(|(_, s)| s).sum();
        let zipf = Zipf::new(chunks, 1.0);
        ((0..requests).map(|_| catalogue[zipf.sample(&mut rng)]).collect(), bytes)
    }

    #[test]
    fn the_estimate_matches_an_exact_lru_simulation() {
        let (stream, catalogue) = stream(100_000, 400_000, 7);
        // The edge's cache at 2% of the catalogue; the curve from ¼× to 8× of it.
        let cfg = MrcConfig { max_samples: 4096, ..MrcConfig::around(catalogue / 50) };
        let exact = exact(&stream, &cfg.sizes);
        // A real curve: it rises with the cache size.
        assert!(exact[0] < exact[5] - 0.1, "{exact:?}");
        // Which chunks are sampled depends on the key: every key must do.
        for key in [1, 2, 3, 0xC0FFEE, u64::MAX] {
            let mrc = Mrc::with_key(cfg.clone(), key);
            for (id, size) in &stream {
                mrc.record(id, *size);
            }
            let estimated = mrc.hit_ratios().unwrap();
            let errors: Vec<f64> = estimated.iter().zip(&exact).map(|((_, e), x)| (e - x).abs()).collect();
            let mae = errors.iter().sum::<f64>() / errors.len() as f64;
            eprintln!("key {key}: mean absolute error {mae:.4} at sampling rate {:.4}", mrc.sampling_rate());
            assert!(mae <= 0.02, "key {key}: mean absolute error {mae:.4}: estimated {estimated:?}, exact {exact:?}");
            // Bounded memory: the budget holds, far below the catalogue's 100 000 chunks.
            assert!(mrc.tracked() <= 4096);
            assert!(mrc.sampling_rate() < 0.1, "rate {}", mrc.sampling_rate());
        }
    }

    #[test]
    fn without_sampling_it_is_exact() {
        let (stream, catalogue) = stream(2_000, 20_000, 11);
        let cfg = MrcConfig { max_samples: 1_000_000, ..MrcConfig::around(catalogue / 20) };
        let mrc = Mrc::new(cfg.clone());
        for (id, size) in &stream {
            assert!(mrc.record(id, *size));
        }
        let exact = exact(&stream, &cfg.sizes);
        for ((_, e), x) in mrc.hit_ratios().unwrap().iter().zip(&exact) {
            assert!((e - x).abs() < 1e-9, "{e} vs {x}");
        }
    }

    #[test]
    fn fenwick_sums_match_a_plain_sum() {
        let mut rng = Rng(3);
        let mut plain = vec![0u64; 300];
        let mut tree = Fenwick::with_values(299, plain[1..].iter().copied());
        for _ in 0..5_000 {
            let t = 1 + rng.next() % 299;
            let held = plain[t as usize];
            if held > 0 && rng.next().is_multiple_of(2) {
                plain[t as usize] = 0;
                tree.add(t, held.wrapping_neg());
            } else {
                let v = rng.next() % 250_000;
                plain[t as usize] += v;
                tree.add(t, v);
            }
            let q = rng.next() % 300;
            assert_eq!(tree.prefix(q), plain[..=q as usize].iter().sum::<u64>());
        }
        let rebuilt = Fenwick::with_values(299, plain[1..].iter().copied());
        assert!((0..300).all(|q| rebuilt.prefix(q) == tree.prefix(q)));
    }

    #[test]
    fn renumbering_keeps_the_estimate_exact() {
        // 3 000 chunks cycled 12 times: every repeat has the whole catalogue between, and the
        // logical times run out (and are renumbered) many times over.
        let ids: Vec<ChunkId> = (0..3_000u64).map(|k| ChunkId::of(&k.to_le_bytes())).collect();
        let cfg = MrcConfig { sizes: vec![2_999 * 100, 3_000 * 100], max_samples: 1_000_000 };
        let mrc = Mrc::new(cfg);
        for _ in 0..12 {
            for id in &ids {
                mrc.record(id, 100);
            }
        }
        // Distance + size is exactly 3 000 × 100 bytes: a miss at the smaller size, a hit at
        // the larger from the second round on.
        let ratios = mrc.hit_ratios().unwrap();
        assert_eq!(ratios[0].1, 0.0);
        assert!((ratios[1].1 - 11.0 / 12.0).abs() < 1e-12, "{ratios:?}");
    }

    #[test]
    fn nothing_sampled_means_no_estimate() {
        let mrc = Mrc::new(MrcConfig::around(1 << 30));
        assert!(mrc.hit_ratios().is_none());
        assert_eq!(MrcConfig::around(1 << 30).sizes.len(), 6);
        assert_eq!(MrcConfig::around(0).sizes, Vec::<u64>::new());
    }
}
