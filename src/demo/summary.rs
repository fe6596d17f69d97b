//! What the demo's plays add up to: the `--json` summary, and where each play's bytes crossed
//! the network (a preload's sources count for the cache hits it made).

use chorus_client::{BySource, Summary};
use indicatif::HumanBytes;
use serde::Serialize;

/// The summary `--once --json` prints (docs/protocol.md §7), plus a few more counts.
#[derive(Debug, Default, Serialize)]
pub(super) struct DemoSummary {
    pub(super) plays: usize,
    pub(super) bytes_total: u64,
    pub(super) bytes_by_source: BySource,
    pub(super) startup_ms_p50: u64,
    pub(super) stalls: u32,
    pub(super) stall_ms: u64,
    pub(super) chunks_verified: u64,
    pub(super) chunks_rejected: u64,
    /// Bytes preloads fetched over the network (those later played count in
    /// `bytes_by_source` by where they came from).
    pub(super) preloaded_bytes: u64,
    /// The rendition each play was heard in (most of its segments), in play order.
    pub(super) renditions: Vec<String>,
    /// The HTTP version that carried most of each play's requests to edges (`cache` when it
    /// asked none), in play order.
    pub(super) protocols: Vec<String>,
}

/// One play and the preload that fetched the start of its track ahead of it, if any.
pub(super) struct Played {
    pub(super) summary: Summary,
    pub(super) preload: Option<Summary>,
}

impl Played {
    /// The play's bytes by where they crossed the network: what it read from the cache that
    /// its preload had fetched counts by the preload's sources (in their proportion), not as
    /// cache. The shares still add up to the bytes played; preloaded bytes the play did not
    /// use (another rendition) count in no share.
    pub(super) fn by_source(&self) -> BySource {
        let mut s = self.summary.bytes_by_source;
        if let Some(pre) = &self.preload {
            let fetched = pre.bytes_by_source.edge + pre.bytes_by_source.peer;
            let used = fetched.min(s.cache);
            if used > 0 {
                let from_edge =
                    u64::try_from(u128::from(pre.bytes_by_source.edge) * u128::from(used) / u128::from(fetched))
                        .unwrap_or(used);
                s.edge += from_edge;
                s.peer += used - from_edge;
                s.cache -= used;
            }
        }
        s
    }
}

pub(super) fn summarize(plays: &[Played]) -> DemoSummary {
    let mut out = DemoSummary { plays: plays.len(), ..DemoSummary::default() };
    for p in plays {
        let s = p.by_source();
        out.bytes_by_source.edge += s.edge;
        out.bytes_by_source.peer += s.peer;
        out.bytes_by_source.cache += s.cache;
        out.bytes_total += p.summary.bytes_total;
        out.stalls += p.summary.stalls;
        out.stall_ms += p.summary.stall_ms;
        out.chunks_verified += p.summary.chunks_verified;
        out.chunks_rejected += p.summary.chunks_rejected;
        out.preloaded_bytes += p.preload.as_ref().map_or(0, |pre| pre.bytes_by_source.edge + pre.bytes_by_source.peer);
        out.renditions.push(p.summary.rendition.clone());
        out.protocols.push(p.summary.protocol.clone());
    }
    let mut startup: Vec<u64> = plays.iter().map(|p| p.summary.startup_ms).collect();
    startup.sort_unstable();
    out.startup_ms_p50 = startup.get(startup.len().saturating_sub(1) / 2).copied().unwrap_or(0);
    out
}

/// Where the bytes came from, as shares of the total.
pub(super) fn shares(s: &BySource) -> String {
    let total = (s.edge + s.peer + s.cache).max(1) as f64;
    let pct = |b: u64| 100.0 * b as f64 / total;
    format!(
        "edge {} ({:.0}%) · peer {} ({:.0}%) · cache {} ({:.0}%)",
        HumanBytes(s.edge),
        pct(s.edge),
        HumanBytes(s.peer),
        pct(s.peer),
        HumanBytes(s.cache),
        pct(s.cache)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(edge: u64, peer: u64, cache: u64, startup_ms: u64) -> Summary {
        Summary {
            bytes_total: edge + peer + cache,
            bytes_by_source: BySource { edge, peer, cache },
            startup_ms,
            ..Summary::default()
        }
    }

    #[test]
    fn preloaded_bytes_count_where_they_crossed_the_network() {
        let plays = vec![
            Played { summary: summary(300, 100, 0, 40), preload: None },
            // 250 bytes came from the cache, of which the preload fetched 200 (150 from peers).
            Played { summary: summary(0, 50, 250, 5), preload: Some(summary(50, 150, 0, 0)) },
            Played { summary: summary(0, 0, 400, 2), preload: Some(summary(0, 0, 400, 0)) },
            // The preload fetched 300 bytes of another rendition; the play read 100 from the
            // cache: only those count as the preload's (a third from the edge).
            Played { summary: summary(0, 200, 100, 3), preload: Some(summary(100, 200, 0, 0)) },
        ];
        let s = summarize(&plays);
        assert_eq!(s.plays, 4);
        assert_eq!(s.bytes_total, 1400);
        assert_eq!((s.bytes_by_source.edge, s.bytes_by_source.peer, s.bytes_by_source.cache), (383, 567, 450));
        assert_eq!(s.bytes_by_source.edge + s.bytes_by_source.peer + s.bytes_by_source.cache, s.bytes_total);
        assert_eq!(s.preloaded_bytes, 500);
        assert_eq!(s.startup_ms_p50, 3);
    }
}
