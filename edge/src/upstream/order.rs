//! The order in which parents are tried for a chunk: rendezvous (highest random weight)
//! hashing of parent URL and chunk id, so each chunk has a home parent, a tier of edges caches
//! each chunk once, and a parent that goes away moves only its own chunks elsewhere.

use chorus_core::ChunkId;

/// Indices into `parents` (their URLs), highest weight for `key` first. Without a key (a
/// manifest), the order depends on the URLs alone.
pub(crate) fn rendezvous(parents: &[&str], key: Option<&ChunkId>) -> Vec<usize> {
    let mut weighted: Vec<(u64, usize)> = parents
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let mut h = blake3::Hasher::new();
            h.update(url.as_bytes());
            if let Some(k) = key {
                h.update(k.as_bytes());
            }
            let d = h.finalize();
            let b = d.as_bytes();
            (u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]), i)
        })
        .collect();
    weighted.sort_by_key(|w| std::cmp::Reverse(w.0));
    weighted.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_chunk_has_a_home_and_losing_a_parent_moves_only_its_chunks() {
        let all = ["http://p1:80", "http://p2:80", "http://p3:80", "http://p4:80"];
        let chunks: Vec<ChunkId> = (0..2000u32).map(|n| ChunkId::of(&n.to_le_bytes())).collect();
        let home = |parents: &[&str], c: &ChunkId| parents[rendezvous(parents, Some(c))[0]].to_owned();
        let mut per = std::collections::HashMap::new();
        for c in &chunks {
            *per.entry(home(&all, c)).or_insert(0) += 1;
            assert_eq!(home(&all, c), home(&all, c), "stable");
        }
        assert!(per.values().all(|n| (350..650).contains(n)), "spread evenly: {per:?}");
        let without_p3 = ["http://p1:80", "http://p2:80", "http://p4:80"];
        for c in &chunks {
            let before = home(&all, c);
            if before != "http://p3:80" {
                assert_eq!(home(&without_p3, c), before, "a chunk not homed on p3 stays put");
            }
        }
        let mut order = rendezvous(&all, None);
        order.sort_unstable();
        assert_eq!(order, [0, 1, 2, 3], "every parent once");
    }
}
