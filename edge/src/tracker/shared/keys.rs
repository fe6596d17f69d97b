//! The names of the shared tracker's keys, and which of them a script may touch together.
//!
//! On one Redis the keys are those of every earlier release:
//!
//! | key | type | what |
//! |---|---|---|
//! | `PREFIXp:PEER` | HASH | the peer's last announce: `a` addresses (JSON), `ts` signed time, `c` content digest |
//! | `PREFIXpeers` | ZSET | live peers, by when they expire (the `max_peers` bound) |
//! | `PREFIXtracks` | ZSET | live tracks, by when they expire (the `max_tracks` bound) |
//! | `PREFIXt:TRACK` | ZSET | the track's peers, by last announce |
//! | `PREFIXn:TRACK` | HASH | the track's peers' source networks |
//!
//! A cluster has one more per track, `PREFIX{N}a:TRACK`, a HASH of its peers' addresses, so
//! that a lookup reads one slot (see `peers.lua`): an entry costs its peer's addresses again,
//! bounded like the entries themselves (`max_tracks × per_track`).
//!
//! A Redis Cluster runs a script only on keys of one hash slot. So there every id (peer or
//! track) falls in one of [`BUCKETS`] buckets by a hash of it, and every key carries its
//! bucket as a hash tag right after the prefix: `PREFIX{17}p:PEER`, `PREFIX{17}peers`,
//! `PREFIX{203}t:TRACK`… A bucket's keys share a slot: the peer's key with its bucket's
//! `peers` set, a track's two keys with its bucket's `tracks` set. The table bounds are then
//! kept per bucket, each `⌈bound / BUCKETS⌉`: exact within a bucket, and for the table as a
//! whole a new peer or track can be refused a little before the global bound, when its own
//! bucket is full while others are not (at the default bounds the first bucket fills when the
//! table holds 91% of its tracks or 94% of its peers: `the_fullest_bucket_fills_near_the_global_bound`).
//! 256 buckets spread over the 16 384 slots, and so over a cluster's primaries, evenly enough
//! (100 000 tracks: 30 953 / 33 514 / 35 533 over three primaries, within 7% of even) while
//! keeping each bucket's share of the bounds large enough that the per-bucket bound is close
//! to the global one.

use chorus_core::TrackId;

/// Buckets of a cluster's keys.
pub const BUCKETS: u32 = 256;

/// The key names of one tracker (a prefix), on one Redis or on a cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    cluster: bool,
}

/// A bucket's hash tag, `{N}`, or nothing on one Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bucket(Option<u32>);

impl std::fmt::Display for Bucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(n) => write!(f, "{{{n}}}"),
            None => Ok(()),
        }
    }
}

impl Keys {
    /// The names under `prefix`; bucketed when `cluster`.
    #[must_use]
    pub fn new(prefix: impl Into<String>, cluster: bool) -> Self {
        Self { prefix: prefix.into(), cluster }
    }

    /// Whether the keys are bucketed (a cluster).
    #[must_use]
    pub const fn cluster(&self) -> bool {
        self.cluster
    }

    /// The bucket of an id (peer or track): the first 4 bytes of its BLAKE3 hash, modulo
    /// [`BUCKETS`]; the same on every edge and every release.
    #[must_use]
    pub fn bucket(&self, id: &str) -> Bucket {
        if !self.cluster {
            return Bucket(None);
        }
        let h = blake3::hash(id.as_bytes());
        let b = h.as_bytes();
        Bucket(Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) % BUCKETS))
    }

    /// A table bound as kept in each bucket: the whole bound on one Redis.
    #[must_use]
    pub fn per_bucket(&self, bound: usize) -> usize {
        if self.cluster { bound.div_ceil(BUCKETS as usize) } else { bound }
    }

    /// The peer's hash.
    #[must_use]
    pub fn peer(&self, peer: &str) -> String {
        format!("{}{}p:{peer}", self.prefix, self.bucket(peer))
    }

    /// Where the peer keys of `bucket` start (a peer's key is this and its id).
    #[must_use]
    pub fn peer_prefix(&self, bucket: Bucket) -> String {
        format!("{}{bucket}p:", self.prefix)
    }

    /// The live peers of `bucket` (all of them on one Redis).
    #[must_use]
    pub fn peers(&self, bucket: Bucket) -> String {
        format!("{}{bucket}peers", self.prefix)
    }

    /// The live tracks of `bucket` (all of them on one Redis).
    #[must_use]
    pub fn tracks(&self, bucket: Bucket) -> String {
        format!("{}{bucket}tracks", self.prefix)
    }

    /// The track's peers by last announce.
    #[must_use]
    pub fn track(&self, track: &TrackId) -> String {
        format!("{}{}t:{track}", self.prefix, self.bucket(track.as_str()))
    }

    /// The track's peers' source networks.
    #[must_use]
    pub fn networks(&self, track: &TrackId) -> String {
        format!("{}{}n:{track}", self.prefix, self.bucket(track.as_str()))
    }

    /// The track's peers' addresses (a cluster only: on one Redis a peer's addresses are kept
    /// once, in its own key).
    #[must_use]
    pub fn addresses(&self, track: &TrackId) -> String {
        format!("{}{}a:{track}", self.prefix, self.bucket(track.as_str()))
    }

    /// `tracks` grouped by bucket, buckets in order, each group in the order given.
    #[must_use]
    pub fn by_bucket<'a>(&self, tracks: impl IntoIterator<Item = &'a TrackId>) -> Vec<(Bucket, Vec<&'a TrackId>)> {
        let mut groups: std::collections::BTreeMap<Bucket, Vec<&'a TrackId>> = std::collections::BTreeMap::new();
        for t in tracks {
            groups.entry(self.bucket(t.as_str())).or_default().push(t);
        }
        groups.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash slot of a key as Redis Cluster computes it (CRC16-XMODEM of the hash tag, or of
    /// the key without one, modulo 16 384): written from the cluster specification so that the
    /// test checks the tags against Redis's rule, not against our own naming.
    fn slot(key: &str) -> u16 {
        let k = key.as_bytes();
        let tagged = k.iter().position(|&c| c == b'{').and_then(|open| {
            let close = k[open + 1..].iter().position(|&c| c == b'}')?;
            (close > 0).then(|| &k[open + 1..open + 1 + close])
        });
        let mut crc: u16 = 0;
        for &byte in tagged.unwrap_or(k) {
            crc ^= u16::from(byte) << 8;
            for _ in 0..8 {
                crc = if crc & 0x8000 != 0 { (crc << 1) ^ 0x1021 } else { crc << 1 };
            }
        }
        crc % 16_384
    }

    #[test]
    fn one_redis_keeps_the_names_of_earlier_releases() {
        let k = Keys::new("chorus:", false);
        let t = TrackId::parse("tides").unwrap();
        assert_eq!(k.peer("P"), "chorus:p:P");
        assert_eq!(k.peers(k.bucket("P")), "chorus:peers");
        assert_eq!(k.tracks(k.bucket("tides")), "chorus:tracks");
        assert_eq!(k.track(&t), "chorus:t:tides");
        assert_eq!(k.networks(&t), "chorus:n:tides");
        assert_eq!(k.peer_prefix(k.bucket("P")), "chorus:p:");
        assert_eq!(k.per_bucket(500_000), 500_000);
        assert_eq!(k.by_bucket([&t]).len(), 1);
    }

    #[test]
    fn in_a_cluster_what_a_script_touches_shares_one_slot() {
        let k = Keys::new("chorus:", true);
        assert_eq!(slot("123456789"), 12_739, "the specification's check value");
        for i in 0..2_000 {
            let peer = format!("12D3KooW{i}");
            let b = k.bucket(&peer);
            assert_eq!(slot(&k.peer(&peer)), slot(&k.peers(b)), "{peer}");
            assert!(k.peer(&peer).starts_with(&k.peer_prefix(b)));
            let t = TrackId::parse(&format!("track-{i}")).unwrap();
            let b = k.bucket(t.as_str());
            assert_eq!(slot(&k.track(&t)), slot(&k.tracks(b)), "{t}");
            assert_eq!(slot(&k.networks(&t)), slot(&k.tracks(b)), "{t}");
            assert_eq!(slot(&k.addresses(&t)), slot(&k.tracks(b)), "{t}");
        }
        assert_eq!(k.per_bucket(500_000), 1_954);
        assert_eq!(k.per_bucket(1), 1);
    }

    #[test]
    fn buckets_spread_evenly_over_three_primaries() {
        // `redis-cli --cluster create` with three primaries gives each a third of the slots.
        let k = Keys::new("chorus:", true);
        let mut per_primary = [0u32; 3];
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..100_000 {
            let t = TrackId::parse(&format!("track-{i}")).unwrap();
            let s = slot(&k.track(&t));
            seen.insert(k.bucket(t.as_str()));
            per_primary[usize::from(s / 5_462).min(2)] += 1;
        }
        assert_eq!(seen.len(), BUCKETS as usize, "every bucket is used");
        eprintln!("100 000 tracks over three primaries: {per_primary:?}");
        for n in per_primary {
            assert!((25_000..42_000).contains(&n), "{per_primary:?}");
        }
    }

    /// Fills a table of peers (ids as the client makes them) until the first bucket is full,
    /// at the default bounds: the share of the global bound reached then. Printed, for
    /// docs/operator.md (`cargo test -p chorus-edge --lib fullest_bucket -- --nocapture`).
    #[test]
    fn the_fullest_bucket_fills_near_the_global_bound() {
        let k = Keys::new("chorus:", true);
        for (what, bound) in [("peers", 500_000usize), ("tracks", 200_000)] {
            let cap = k.per_bucket(bound);
            let mut counts = vec![0usize; BUCKETS as usize];
            let mut n = 0usize;
            loop {
                let Bucket(Some(b)) = k.bucket(&format!("{what}-{n}")) else { unreachable!() };
                n += 1;
                counts[b as usize] += 1;
                if counts[b as usize] > cap {
                    break;
                }
            }
            let share = (n - 1) as f64 / bound as f64;
            eprintln!("{what}: the first bucket is full at {n} of {bound} ({:.1}%)", 100.0 * share);
            assert!((0.80..1.0).contains(&share), "{what}: {share}");
        }
    }
}
