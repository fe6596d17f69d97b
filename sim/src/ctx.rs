//! What every partition of listeners and the hub read and no one changes: each listener's
//! place on the network (`Stat`), the catalogue, and the run's clock base (`Ctx`); and the
//! draws that make them at the start of a run, in the order that keeps a seed's run the same.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use chorus_core::TrackId;
use chorus_core::p2p::{Multiaddr, PeerId};

use crate::draw::{Rng, Zipf};
use crate::{SimConfig, Us};

pub(crate) const MS: Us = 1_000;
pub(crate) const SEC: Us = 1_000_000;
/// What is between a listener and the internet (`SimConfig::behind_cone`, `behind_symmetric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nat {
    Public,
    Cone,
    Symmetric,
}

/// How a listener behind `from` gets a connection to one behind `to`: directly, by a hole
/// punched (or the connection reversed) after meeting through the edge's relay, or not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reach {
    Direct,
    Punched,
    Never,
}

pub(crate) const fn reach(from: Nat, to: Nat) -> Reach {
    match (from, to) {
        (_, Nat::Public) => Reach::Direct,
        (Nat::Public, _) | (Nat::Cone, Nat::Cone) => Reach::Punched,
        _ => Reach::Never,
    }
}

/// What does not change about a listener, known to every partition and the hub.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub(crate) ip: Ipv4Addr,
    pub(crate) nat: Nat,
    pub(crate) edge: u32,
    /// Round trip to its edge.
    pub(crate) rtt: Us,
    pub(crate) down: u64,
    /// 0: consume only.
    pub(crate) up: u64,
}

/// What every partition and the hub read and no one changes.
pub(crate) struct Ctx<'a> {
    pub(crate) cfg: &'a SimConfig,
    pub(crate) base: Instant,
    pub(crate) stats: Vec<Stat>,
    pub(crate) track_ids: Vec<TrackId>,
    pub(crate) track_segments: Vec<u16>,
    pub(crate) peer_ids: Vec<PeerId>,
    pub(crate) addrs: Vec<Multiaddr>,
    pub(crate) zipf: Zipf,
    /// A segment's size per rung.
    pub(crate) sizes: Vec<u64>,
}

impl Ctx<'_> {
    pub(crate) fn stat(&self, l: u32) -> &Stat {
        &self.stats[l as usize]
    }

    pub(crate) fn instant(&self, t: Us) -> Instant {
        self.base + Duration::from_micros(t)
    }

    pub(crate) fn size(&self, rung: usize) -> u64 {
        self.sizes.get(rung).copied().unwrap_or(0)
    }

    pub(crate) fn ids(&self, tracks: &[u32]) -> Vec<TrackId> {
        tracks.iter().map(|t| self.track_ids[*t as usize].clone()).collect()
    }

    /// The round trip between two listeners.
    pub(crate) fn rtt_between(&self, a: u32, b: u32) -> Us {
        (self.stat(a).rtt + self.stat(b).rtt) / 2 + us(self.cfg.core_rtt)
    }

    pub(crate) fn segments(&self, track: u32) -> usize {
        usize::from(self.track_segments[track as usize])
    }
}

/// Listener `n`'s draws and its place on the network, as the run's setup makes them.
pub(crate) fn listener(cfg: &SimConfig, rng: &mut Rng, n: usize) -> (Stat, Rng) {
    let per24 = cfg.listeners_per_network.max(1);
    let mut r = Rng(rng.next());
    let net = u32::try_from(n / per24).unwrap_or(u32::MAX);
    let host = u32::try_from(n % per24).unwrap_or(0) + 1;
    let mobile = r.unit() < cfg.mobile;
    // Drawn apart from the listener's own sequence, so that runs without NATs stay as they were.
    let n64 = u64::try_from(n).unwrap_or(u64::MAX);
    let behind = Rng(cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ n64.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1).unit();
    let nat = if behind < cfg.behind_symmetric {
        Nat::Symmetric
    } else if behind < cfg.behind_symmetric + cfg.behind_cone {
        Nat::Cone
    } else {
        Nat::Public
    };
    let stat = Stat {
        nat,
        ip: Ipv4Addr::from(0x0A00_0000u32.wrapping_add(net.wrapping_mul(256)).wrapping_add(host)),
        edge: u32::try_from(n % cfg.edges.max(1)).unwrap_or(0),
        rtt: r.range((us(cfg.rtt.0), us(cfg.rtt.1))),
        down: r.range(cfg.downlink).max(1),
        up: if mobile { 0 } else { r.range(cfg.uplink) },
    };
    (stat, r)
}

/// Listener `n`'s cache from before the run: `SimConfig::warm_tracks` tracks drawn from the
/// popularity of plays (by a sequence of its own, so that cold runs stay as they were), at the
/// highest rung its downlink takes twice over (as rung + 1); a seeder's is every track.
pub(crate) fn warm(cfg: &SimConfig, zipf: &Zipf, n: usize, down: u64) -> (Vec<u32>, u8) {
    let rung = cfg.ladder_bps.iter().rposition(|b| *b * 2 <= down * 8).unwrap_or(0);
    let rung = u8::try_from(rung + 1).unwrap_or(1);
    if n < cfg.seeders {
        // A seeder holds the whole catalogue.
        return ((0..u32::try_from(cfg.tracks.max(1)).unwrap_or(u32::MAX)).collect(), rung);
    }
    let want = cfg.warm_tracks.min(cfg.tracks / 2);
    if want == 0 {
        return (Vec::new(), 0);
    }
    let mut r = Rng(cfg.seed.wrapping_mul(0xA076_1D64_78BD_642F) ^ (n as u64).wrapping_mul(0xE703_7ED1_A0B4_28DB) | 1);
    let mut warm = std::collections::BTreeSet::new();
    while warm.len() < want {
        warm.insert(u32::try_from(zipf.sample(&mut r)).unwrap_or(0));
    }
    (warm.into_iter().collect(), rung)
}

pub(crate) fn us(d: Duration) -> Us {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Microseconds to move `bytes` at `rate` bytes/s.
pub(crate) fn transfer(bytes: u64, rate: u64) -> Us {
    bytes.saturating_mul(SEC) / rate.max(1)
}

/// A later announce of a listener carries a later version: simulated milliseconds, plus its
/// count of announces.
pub(crate) const fn version(now: Us, announces: u64) -> u64 {
    now / MS + announces
}
