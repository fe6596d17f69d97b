//! Hit ratio of the edge's cache policy (LRU + TinyLFU admission) against plain LRU on a
//! Zipf(1.0) request stream, with the cache at 1% and 10% of the catalogue's bytes; then the
//! time the edge's miss-ratio curve estimator takes per request on the same stream.
//!
//! `cargo run --release -p chorus-edge --example hit_ratio [-- CHUNKS REQUESTS SEED]`
//!
//! Deterministic for a given seed. The catalogue has CHUNKS chunks (default 100 000); chunk
//! sizes follow the rendition mix of a 6 s segment ladder (24/96/160/320 kbit/s ≈ 18/72/120/240
//! KB) so a byte-bounded cache sees what an edge sees; popularity rank is independent of size.

use chorus_core::ChunkId;
use chorus_edge::cache::sketch::Sketch;
use chorus_edge::cache::tier::{Admission, Tier, Weighted};
use chorus_edge::mrc::{Mrc, MrcConfig};

#[derive(Clone, Copy)]
struct Size(u64);
impl Weighted for Size {
    fn weight(&self) -> u64 {
        self.0
    }
}

use chorus_draw::{Rng, Zipf};

fn main() {
    let args: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let chunks = *args.first().unwrap_or(&100_000) as usize;
    let requests = *args.get(1).unwrap_or(&2_000_000) as usize;
    let seed = *args.get(2).unwrap_or(&42);

    let mut rng = Rng(seed);
    let ladder = [18_000u64, 72_000, 120_000, 240_000];
    let ids: Vec<ChunkId> = (0..chunks as u64).map(|i| ChunkId::of(&i.to_le_bytes())).collect();
    let sizes: Vec<u64> = (0..chunks).map(|_| ladder[(rng.next() % 4) as usize]).collect();
    let total: u64 = sizes.iter().sum();
    let popularity = Zipf::new(chunks, 1.0);
    let stream: Vec<usize> = (0..requests).map(|_| popularity.sample(&mut rng)).collect();
    let warmup = requests / 10;

    println!(
        "catalogue: {chunks} chunks, {:.1} GB; {requests} requests (first {warmup} warm the cache); seed {seed}",
        total as f64 / 1e9
    );
    println!("{:<8} {:>14} {:>14} {:>14} {:>14}", "cache", "LRU hits", "chorus hits", "LRU bytes", "chorus bytes");
    for pct in [1u64, 10] {
        let capacity = total * pct / 100;
        let (lru_h, lru_b) = run(&stream, &ids, &sizes, capacity, warmup, false);
        let (ours_h, ours_b) = run(&stream, &ids, &sizes, capacity, warmup, true);
        println!(
            "{:<8} {:>13.1}% {:>13.1}% {:>13.1}% {:>13.1}%",
            format!("{pct}%"),
            lru_h * 100.0,
            ours_h * 100.0,
            lru_b * 100.0,
            ours_b * 100.0
        );
    }

    // What the edge's online miss-ratio curve (chorus_edge_mrc_hit_ratio) costs per request on
    // this stream, with its defaults around a cache of 1% of the catalogue.
    let mrc = Mrc::new(MrcConfig::around(total / 100));
    let started = std::time::Instant::now();
    for &k in &stream {
        mrc.record(&ids[k], sizes[k]);
    }
    let per_request = started.elapsed().as_secs_f64() * 1e9 / requests.max(1) as f64;
    println!(
        "miss-ratio curve estimator: {per_request:.0} ns per request (sampling rate {:.3}, {} chunks tracked)",
        mrc.sampling_rate(),
        mrc.tracked()
    );
}

/// Returns (request hit ratio, byte hit ratio) after warm-up.
fn run(stream: &[usize], ids: &[ChunkId], sizes: &[u64], capacity: u64, warmup: usize, admission: bool) -> (f64, f64) {
    let mut tier: Tier<Size> = Tier::new(capacity);
    let mut sketch = Sketch::new((capacity / 64_000) as usize);
    let (mut hits, mut n, mut hit_bytes, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    for (i, &k) in stream.iter().enumerate() {
        let id = ids[k];
        sketch.increment(&id);
        let hit = tier.get(&id).is_some();
        if !hit {
            if admission {
                let _ = matches!(tier.offer(id, Size(sizes[k]), &sketch), Admission::Admitted(_));
            } else {
                tier.insert(id, Size(sizes[k]));
            }
        }
        if i >= warmup {
            n += 1;
            bytes += sizes[k];
            if hit {
                hits += 1;
                hit_bytes += sizes[k];
            }
        }
    }
    (hits as f64 / n as f64, hit_bytes as f64 / bytes as f64)
}
