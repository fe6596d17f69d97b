//! The simulator's deterministic draws: a seeded generator, Zipf popularity, peer and chunk
//! ids, and a fast hasher for its own integer-keyed maps. A run depends on its seed only.

use std::hash::BuildHasherDefault;

use chorus_core::ChunkId;
use chorus_core::p2p::PeerId;

/// A multiplicative hasher for the simulator's own integer-keyed maps (ids it made itself, so
/// no one chooses keys to collide); the default SipHash was a tenth of the run time.
#[derive(Default)]
pub(crate) struct IntHasher(u64);

impl std::hash::Hasher for IntHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(*b)).wrapping_mul(0x517C_C1B7_2722_0A95);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517C_C1B7_2722_0A95);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<IntHasher>>;

/// SplitMix64.
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[allow(clippy::cast_precision_loss)] // 53 bits
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(crate) fn range(&mut self, (lo, hi): (u64, u64)) -> u64 {
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

/// Zipf popularity over ranks by a cumulative table.
pub(crate) struct Zipf(Vec<f64>);

impl Zipf {
    #[allow(clippy::cast_precision_loss)]
    pub(crate) fn new(n: usize, s: f64) -> Self {
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

    pub(crate) fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit() * self.0.last().copied().unwrap_or(1.0);
        self.0.partition_point(|&c| c < u).min(self.0.len() - 1)
    }
}

/// A peer id from `rng`: an identity multihash (code 0, length 32) of 32 random bytes, the
/// form of a key's peer id.
pub(crate) fn peer_id(rng: &mut Rng) -> PeerId {
    let mut b = vec![0x00, 0x20];
    for _ in 0..4 {
        b.extend_from_slice(&rng.next().to_le_bytes());
    }
    PeerId::from_bytes(&b).unwrap_or_else(|_| chorus_core::p2p::Keypair::generate_ed25519().public().to_peer_id())
}

/// A uniform 32-byte id for a (track, segment, rung): the sketch indexes by its bytes.
pub(crate) fn chunk_id(track: u32, segment: usize, rung: usize) -> ChunkId {
    let mut r = Rng((u64::from(track) << 24) ^ ((segment as u64) << 4) ^ rung as u64);
    let mut b = [0u8; 32];
    for c in b.chunks_exact_mut(8) {
        c.copy_from_slice(&r.next().to_le_bytes());
    }
    ChunkId::from_bytes(b)
}
