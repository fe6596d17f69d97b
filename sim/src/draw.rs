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

pub(crate) use chorus_draw::{Rng, Zipf};

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
