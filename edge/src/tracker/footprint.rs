//! What each source has put in the tracker, within a budget: the peer ids it announced and
//! their (peer, track) entries, per source host (an IPv4 address, an IPv6 /64) and, for IPv6,
//! per /56 and /48 too (one subscriber is often given a whole /56 or /48, so budgets per /64
//! alone would give it 256 or 65 536 budgets). A source over its budget makes room by losing
//! its **own** oldest entries (or its oldest peer, whole), never anyone else's: strangers cannot
//! fill the tables, and an honest listener with a big cache is not refused, its oldest
//! holdings only drop out of the list.
//!
//! Plain logic with an explicit clock; [`super::Front`] applies the evictions to the local
//! tracker and the shared one. Bounded: at most [`Footprints::new`]'s `max_sources` footprints
//! and `max_entries` entries in all (beyond them, the least recently active sources' records are
//! forgotten: their entries stay in the tracker until they expire).

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use chorus_core::TrackId;
use lru::LruCache;
use tokio::time::Instant;

/// A budget at one level of a source's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Peer ids at most.
    pub peers: usize,
    /// (peer, track) entries at most.
    pub entries: usize,
}

/// The budgets of one source (defaults: a host 16 peers and 4 096 entries, an IPv6 /56 64 and
/// 16 384, an IPv6 /48 256 and 65 536).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// An IPv4 address, or an IPv6 /64.
    pub host: Budget,
    /// An IPv6 /56.
    pub v6_56: Budget,
    /// An IPv6 /48.
    pub v6_48: Budget,
}

impl Default for Budgets {
    fn default() -> Self {
        Self {
            host: Budget { peers: 16, entries: 4096 },
            v6_56: Budget { peers: 64, entries: 16_384 },
            v6_48: Budget { peers: 256, entries: 65_536 },
        }
    }
}

/// One source's entries, least recently announced first, and how many each peer has.
#[derive(Debug)]
struct Footprint {
    entries: LruCache<(String, TrackId), Instant>,
    peers: HashMap<String, usize>,
}

impl Footprint {
    fn new() -> Self {
        Self { entries: LruCache::unbounded(), peers: HashMap::new() }
    }

    fn remove(&mut self, key: &(String, TrackId)) -> bool {
        if self.entries.pop(key).is_none() {
            return false;
        }
        if let Some(n) = self.peers.get_mut(&key.0) {
            *n -= 1;
            if *n == 0 {
                self.peers.remove(&key.0);
            }
        }
        true
    }
}

/// Every source's footprint.
#[derive(Debug)]
pub struct Footprints {
    budgets: Budgets,
    ttl: Duration,
    sources: LruCache<(IpAddr, u8), Footprint>,
    max_sources: usize,
    max_entries: usize,
    entries: usize,
}

impl Footprints {
    /// Footprints under `budgets`; entries older than `ttl` no longer count.
    #[must_use]
    pub fn new(budgets: Budgets, ttl: Duration, max_sources: usize, max_entries: usize) -> Self {
        Self { budgets, ttl, sources: LruCache::unbounded(), max_sources, max_entries, entries: 0 }
    }

    /// The levels `source` is counted at, with their budgets.
    fn levels(&self, source: IpAddr) -> Vec<((IpAddr, u8), Budget)> {
        let source = chorus_core::ip::canonical(source);
        match source {
            IpAddr::V4(_) => vec![((source, 32), self.budgets.host)],
            IpAddr::V6(_) => vec![
                ((chorus_core::ip::prefix(source, 32, 64), 64), self.budgets.host),
                ((chorus_core::ip::prefix(source, 32, 56), 56), self.budgets.v6_56),
                ((chorus_core::ip::prefix(source, 32, 48), 48), self.budgets.v6_48),
            ],
        }
    }

    /// Records that `source` announced `peer` holding `tracks` at `now`; returns the (peer,
    /// track) entries of that source to drop to keep it within its budgets (its own oldest).
    pub fn record(&mut self, source: IpAddr, peer: &str, tracks: &[TrackId], now: Instant) -> Vec<(String, TrackId)> {
        let mut evict = Vec::new();
        for (key, budget) in self.levels(source) {
            if !self.sources.contains(&key) {
                while self.sources.len() >= self.max_sources.max(1) {
                    if let Some((_, old)) = self.sources.pop_lru() {
                        self.entries -= old.entries.len();
                    }
                }
                self.sources.put(key, Footprint::new());
            }
            let Some(fp) = self.sources.get_mut(&key) else { continue };
            // Entries past their time are gone from the tracker already: they count no more.
            while let Some((_, at)) = fp.entries.peek_lru() {
                if now.saturating_duration_since(*at) < self.ttl {
                    break;
                }
                let Some((k, _)) = fp.entries.peek_lru().map(|(k, v)| (k.clone(), *v)) else { break };
                fp.remove(&k);
                self.entries -= 1;
            }
            for t in tracks {
                let k = (peer.to_owned(), t.clone());
                if fp.entries.put(k, now).is_none() {
                    *fp.peers.entry(peer.to_owned()).or_default() += 1;
                    self.entries += 1;
                }
            }
            while fp.entries.len() > budget.entries {
                let Some((k, _)) = fp.entries.peek_lru().map(|(k, v)| (k.clone(), *v)) else { break };
                fp.remove(&k);
                self.entries -= 1;
                evict.push(k);
            }
            // Too many peer ids: the one announced least recently goes, all of it.
            while fp.peers.len() > budget.peers {
                let Some(oldest) = fp.entries.peek_lru().map(|(k, _)| k.0.clone()) else { break };
                let gone: Vec<(String, TrackId)> =
                    fp.entries.iter().filter(|(k, _)| k.0 == oldest).map(|(k, _)| k.clone()).collect();
                for k in gone {
                    fp.remove(&k);
                    self.entries -= 1;
                    evict.push(k);
                }
            }
        }
        // The whole table's bound: the least recently active sources' records are forgotten.
        while self.entries > self.max_entries {
            match self.sources.pop_lru() {
                Some((_, old)) => self.entries -= old.entries.len(),
                None => break,
            }
        }
        evict.sort();
        evict.dedup();
        evict
    }

    /// Entries counted in all.
    #[must_use]
    pub const fn entries(&self) -> usize {
        self.entries
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u32) -> TrackId {
        TrackId::parse(&format!("t{n}")).unwrap()
    }

    fn small() -> Footprints {
        let b = |peers, entries| Budget { peers, entries };
        Footprints::new(Budgets { host: b(2, 4), v6_56: b(3, 6), v6_48: b(4, 8) }, Duration::from_secs(300), 100, 1000)
    }

    #[test]
    fn a_source_over_its_entries_loses_its_own_oldest() {
        let now = Instant::now();
        let mut f = small();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(f.record(a, "p1", &[t(1), t(2), t(3)], now).is_empty());
        // Re-announcing t1 makes it recent: t2 is then the oldest.
        assert!(f.record(a, "p1", &[t(1)], now).is_empty());
        let out = f.record(a, "p1", &[t(4), t(5)], now);
        assert_eq!(out, vec![("p1".to_owned(), t(2))]);
        // Another source is untouched by the first one's flood.
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert!(f.record(b, "q1", &[t(1)], now).is_empty());
        for n in 10..30 {
            f.record(a, "p1", &[t(n)], now);
        }
        assert!(f.record(b, "q1", &[t(2)], now).is_empty());
    }

    #[test]
    fn a_source_over_its_peers_loses_its_oldest_peer_whole() {
        let now = Instant::now();
        let mut f = small();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        f.record(a, "p1", &[t(1), t(2)], now);
        f.record(a, "p2", &[t(1)], now);
        let mut out = f.record(a, "p3", &[t(1)], now);
        out.sort();
        assert_eq!(out, vec![("p1".to_owned(), t(1)), ("p1".to_owned(), t(2))]);
    }

    #[test]
    fn ipv6_is_counted_per_64_56_and_48() {
        let now = Instant::now();
        let mut f = small();
        // Four /64s of one /56: each within its host budget (2 peers), the /56 budget (3 peers)
        // makes the /56's oldest peer go.
        let mut evicted = Vec::new();
        for (n, ip) in ["2001:db8:0:1::1", "2001:db8:0:2::1", "2001:db8:0:3::1", "2001:db8:0:4::1"].iter().enumerate() {
            evicted.extend(f.record(ip.parse().unwrap(), &format!("p{n}"), &[t(1)], now));
        }
        assert_eq!(evicted, vec![("p0".to_owned(), t(1))]);
        // /56s of one /48: its budget of 4 peers holds over them.
        let mut evicted = Vec::new();
        for n in 0..6u32 {
            let ip: IpAddr = format!("2001:db9:0:{:x}00::1", n).parse().unwrap();
            evicted.extend(f.record(ip, &format!("q{n}"), &[t(1)], now));
        }
        assert_eq!(evicted.len(), 2, "{evicted:?}");
    }

    #[test]
    fn expired_entries_count_no_more_and_the_table_is_bounded() {
        let now = Instant::now();
        let mut f = small();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        f.record(a, "p1", &[t(1), t(2), t(3), t(4)], now);
        let later = now + Duration::from_secs(301);
        assert!(f.record(a, "p1", &[t(5), t(6)], later).is_empty(), "the old four expired");
        let mut tiny = Footprints::new(Budgets::default(), Duration::from_secs(300), 2, 1000);
        for n in 0..10u8 {
            tiny.record(IpAddr::from([192, 0, 2, n]), "p", &[t(1)], now);
        }
        assert_eq!(tiny.entries(), 2);
    }
}
