//! What a client remembers about the network between tracks and between runs: each edge's
//! HTTP/3 alternative (from `Alt-Svc`, RFC 7838) and the last throughput estimate.
//!
//! [`Remembered`] is plain logic on an explicit clock (Unix seconds), tested without I/O;
//! [`Memory`] keeps one behind a lock and, when the client has a cache directory, in
//! `DIR/network.json` beside the cache (written atomically, on the blocking pool), so the next
//! run goes straight to QUIC and starts at a bitrate that suits the link.
//!
//! The rules (docs/client.md, "HTTP/3 and the first bitrate"):
//! - an alternative is used until its `ma` runs out; a new `Alt-Svc` moves that time, `clear`
//!   forgets it;
//! - an alternative that failed (UDP blocked, handshake timeout, a connection that died) is
//!   *broken*: not tried for 5 minutes, then 10, 20, … up to 2 days, as browsers do; one that
//!   works again is forgiven;
//! - the throughput estimate is trusted for [`ESTIMATE_LIFETIME`]; older, the client starts as
//!   a new one would.
//!
//! The file is input like any other: bounded in size, every entry validated, anything wrong
//! dropped (with a warning) rather than trusted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chorus_core::url::{BaseUrl, Scheme};
use serde::{Deserialize, Serialize};

use crate::sync::lock;

/// The file's name in the cache directory.
pub(crate) const FILE: &str = "network.json";
/// A file larger than this is not read.
const MAX_FILE: u64 = 64 * 1024;
/// Alternatives kept at most (the ones expiring first go).
const MAX_ALTERNATIVES: usize = 64;
/// How long a throughput estimate is used to pick the first bitrate.
pub const ESTIMATE_LIFETIME: Duration = Duration::from_secs(7 * 86_400);
/// The first time an alternative is marked broken, it is avoided this long; each failure in a
/// row doubles it, up to [`MAX_BROKEN`].
const FIRST_BROKEN: Duration = Duration::from_secs(300);
const MAX_BROKEN: Duration = Duration::from_secs(2 * 86_400);
/// A handshake time above this is not believed (a handshake that slow has timed out).
const MAX_HANDSHAKE_MS: u32 = 60_000;
/// An estimate above this is not believed (10 Gbit/s).
const MAX_BPS: f64 = 10e9;

/// An edge's HTTP/3 alternative.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alternative {
    /// Where QUIC goes: `HOST:PORT`.
    pub via: String,
    /// Unix time its `ma` runs out.
    pub expires: u64,
    /// Unix time until which it is not tried (0: not broken).
    #[serde(default)]
    pub broken_until: u64,
    /// Failures in a row.
    #[serde(default)]
    pub failures: u32,
    /// How long the last QUIC handshake to it took, in milliseconds (sets the race's delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_ms: Option<u32>,
}

/// A throughput estimate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    /// Bits per second.
    pub bps: f64,
    /// Unix time it was measured.
    pub at: u64,
}

/// What is remembered (the file's contents).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    /// The last throughput estimate.
    #[serde(default)]
    pub throughput: Option<Estimate>,
    /// HTTP/3 alternatives by origin (`https://HOST:PORT`).
    #[serde(default)]
    pub alternatives: BTreeMap<String, Alternative>,
}

impl Remembered {
    /// The alternative to try for `origin` now: known, not expired, not broken.
    #[must_use]
    pub fn usable(&self, origin: &str, now: u64) -> Option<&Alternative> {
        self.alternatives.get(origin).filter(|a| a.expires > now && a.broken_until <= now)
    }

    /// Whether the alternative of `origin` is known and broken now.
    #[must_use]
    pub fn is_broken(&self, origin: &str, now: u64) -> bool {
        self.alternatives.get(origin).is_some_and(|a| a.expires > now && a.broken_until > now)
    }

    /// `Alt-Svc` offered `via` for `origin`, good for `max_age`. Returns whether something
    /// worth saving changed (a new alternative, or its expiry moved by more than an hour: an
    /// answer that only repeats the header costs no write).
    pub fn learn(&mut self, origin: &str, via: &str, max_age: Duration, now: u64) -> bool {
        let expires = now.saturating_add(max_age.as_secs());
        if let Some(a) = self.alternatives.get_mut(origin)
            && a.via == via
        {
            let moved = a.expires.abs_diff(expires) > 3600;
            a.expires = expires;
            return moved;
        }
        self.alternatives.insert(
            origin.to_owned(),
            Alternative { via: via.to_owned(), expires, broken_until: 0, failures: 0, handshake_ms: None },
        );
        self.bound(now);
        true
    }

    /// `Alt-Svc: clear` from `origin`. Returns whether there was something to forget.
    pub fn clear(&mut self, origin: &str) -> bool {
        self.alternatives.remove(origin).is_some()
    }

    /// The alternative of `origin` failed: avoided for a while, longer each time in a row.
    pub fn broken(&mut self, origin: &str, now: u64) {
        if let Some(a) = self.alternatives.get_mut(origin) {
            a.failures = a.failures.saturating_add(1);
            let shift = a.failures.saturating_sub(1).min(20);
            let avoid = FIRST_BROKEN.saturating_mul(1 << shift).min(MAX_BROKEN);
            a.broken_until = now.saturating_add(avoid.as_secs());
        }
    }

    /// The alternative of `origin` worked. Returns whether it had been marked broken.
    pub fn worked(&mut self, origin: &str) -> bool {
        match self.alternatives.get_mut(origin) {
            Some(a) if a.failures > 0 || a.broken_until > 0 => {
                a.failures = 0;
                a.broken_until = 0;
                true
            }
            _ => false,
        }
    }

    /// A QUIC handshake to the alternative of `origin` took `took`. Returns whether it is worth
    /// saving: the first one, or one that moved by more than half (a handshake's time varies
    /// with the machine's load; the race only needs its order of magnitude).
    pub fn handshake(&mut self, origin: &str, took: Duration) -> bool {
        let Some(a) = self.alternatives.get_mut(origin) else { return false };
        let ms = u32::try_from(took.as_millis()).unwrap_or(u32::MAX).max(1);
        if ms > MAX_HANDSHAKE_MS {
            return false;
        }
        let save = a.handshake_ms.is_none_or(|old| ms.abs_diff(old) * 2 > old);
        if save {
            a.handshake_ms = Some(ms);
        }
        save
    }

    /// How long the last QUIC handshake to the alternative of `origin` took, if known.
    #[must_use]
    pub fn handshake_time(&self, origin: &str) -> Option<Duration> {
        self.alternatives.get(origin)?.handshake_ms.map(|ms| Duration::from_millis(ms.into()))
    }

    /// Remembers a throughput estimate measured at `now`. Returns whether it is worth saving:
    /// the first one, one that moved by more than a quarter, or an hour since the last save.
    pub fn remember_throughput(&mut self, bps: f64, now: u64) -> bool {
        if !(bps.is_finite() && bps > 0.0 && bps <= MAX_BPS) {
            return false;
        }
        let save = self.throughput.is_none_or(|e| (bps / e.bps - 1.0).abs() > 0.25 || now.saturating_sub(e.at) > 3600);
        if save {
            self.throughput = Some(Estimate { bps, at: now });
        }
        save
    }

    /// The throughput estimate, if recent enough to use.
    #[must_use]
    pub fn throughput(&self, now: u64) -> Option<f64> {
        self.throughput.filter(|e| now.saturating_sub(e.at) < ESTIMATE_LIFETIME.as_secs()).map(|e| e.bps)
    }

    /// Drops what is expired or invalid, then the earliest-expiring alternatives beyond the
    /// bound. Returns how many entries were dropped as invalid.
    fn bound(&mut self, now: u64) -> usize {
        let before = self.alternatives.len();
        self.alternatives.retain(|origin, a| a.expires > now && valid_origin(origin) && valid_via(&a.via));
        for a in self.alternatives.values_mut() {
            a.handshake_ms = a.handshake_ms.filter(|ms| (1..=MAX_HANDSHAKE_MS).contains(ms));
        }
        let invalid = before - self.alternatives.len();
        while self.alternatives.len() > MAX_ALTERNATIVES {
            let Some(first) = self.alternatives.iter().min_by_key(|(_, a)| a.expires).map(|(o, _)| o.clone()) else {
                break;
            };
            self.alternatives.remove(&first);
        }
        if let Some(e) = self.throughput
            && !(e.bps.is_finite() && e.bps > 0.0 && e.bps <= MAX_BPS)
        {
            self.throughput = None;
        }
        invalid
    }
}

/// An `https://HOST:PORT` base URL, written as [`BaseUrl`] writes it (the key an edge's
/// memory is kept under).
fn valid_origin(origin: &str) -> bool {
    origin.parse::<BaseUrl>().is_ok_and(|b| b.scheme() == Scheme::Https && b.to_string() == origin)
}

/// `HOST:PORT` with a valid host (name, IPv4, or bracketed IPv6) and a non-zero port.
fn valid_via(via: &str) -> bool {
    format!("h3://{via}").parse::<BaseUrl>().is_ok()
}

/// Unix seconds now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A client's memory: shared by its edges and tracks, saved beside its cache.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    path: Option<PathBuf>,
    state: Mutex<Remembered>,
    /// Bumped at each change (never waits on the disk, so async callers never block on it).
    generation: AtomicU64,
    /// The generation last written; held by the (blocking-pool) writer while it writes, so
    /// writes are serialised and an older snapshot never replaces a newer one.
    written: Mutex<u64>,
}

impl Memory {
    /// The memory kept in `dir/network.json` (read now, blocking: called once while the client
    /// is built), or kept in memory only without a directory.
    pub(crate) fn open(dir: Option<&std::path::Path>) -> Self {
        let Some(dir) = dir else { return Self::default() };
        let path = dir.join(FILE);
        let mut state = read(&path).unwrap_or_default();
        let dropped = state.bound(unix_now());
        if dropped > 0 {
            tracing::warn!(file = %path.display(), dropped, "ignored invalid entries");
        }
        Self { path: Some(path), state: Mutex::new(state), generation: AtomicU64::new(0), written: Mutex::new(0) }
    }

    /// Reads the state under the lock.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Remembered) -> T) -> T {
        f(&lock(&self.state))
    }

    /// Changes the state under the lock; when `f` says it changed something worth keeping, the
    /// file is rewritten in the background.
    pub(crate) fn change(self: &Arc<Self>, f: impl FnOnce(&mut Remembered) -> bool) {
        let (snapshot, generation) = {
            let mut state = lock(&self.state);
            if !f(&mut state) {
                return;
            }
            // Numbered under the state's lock, so a later number is always a later state.
            (state.clone(), self.generation.fetch_add(1, Ordering::Relaxed) + 1)
        };
        let Some(path) = self.path.clone() else { return };
        let this = self.clone();
        // Fire and forget: losing a write costs a slower start next time, nothing more.
        tokio::task::spawn_blocking(move || {
            let mut written = lock(&this.written);
            if *written >= generation {
                return; // a newer snapshot is already on disk
            }
            match serde_json::to_vec_pretty(&snapshot) {
                Ok(doc) => {
                    if let Err(e) = chorus_core::fsutil::write_atomic(&path, &doc, 0o644) {
                        tracing::warn!(file = %path.display(), error = %e, "cannot save what the client learned of the network");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode the client's network state"),
            }
            *written = generation;
        });
    }
}

fn read(path: &std::path::Path) -> Option<Remembered> {
    use std::io::Read as _;
    let file = std::fs::File::open(path).ok()?;
    let mut doc = Vec::new();
    if file.take(MAX_FILE + 1).read_to_end(&mut doc).is_err() || doc.len() as u64 > MAX_FILE {
        tracing::warn!(file = %path.display(), "unreadable or larger than {MAX_FILE} bytes; starting afresh");
        return None;
    }
    match serde_json::from_slice(&doc) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "not a network state file; starting afresh");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_base_urls_are_kept_as_keys_and_vias() {
        for ok in ["https://edge.example:443", "https://127.0.0.1:8443", "https://[::1]:8443"] {
            assert!(valid_origin(ok), "{ok}");
        }
        for bad in
            ["http://edge:80", "h3://edge:443", "https://edge", "https://edge:0", "https://Edge:1", "https://e:1/x"]
        {
            assert!(!valid_origin(bad), "{bad}");
        }
        assert!(valid_via("edge.example:443") && valid_via("[::1]:4433"));
        for bad in ["edge", "edge:0", "::1:443", "e:1/x", "u@e:1"] {
            assert!(!valid_via(bad), "{bad}");
        }
    }

    const O: &str = "https://edge.example:8443";
    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn an_alternative_lives_for_its_max_age_and_clear_forgets_it() {
        let mut r = Remembered::default();
        assert!(r.learn(O, "edge.example:8443", DAY, 1000));
        assert_eq!(r.usable(O, 1000).map(|a| a.via.as_str()), Some("edge.example:8443"));
        assert!(r.usable(O, 1000 + 86_400).is_none(), "expired");
        // Repeating the header saves nothing; a later one that moves the expiry does.
        assert!(!r.learn(O, "edge.example:8443", DAY, 1010));
        assert!(r.learn(O, "edge.example:8443", DAY, 1000 + 7200));
        assert!(r.learn(O, "other.example:443", DAY, 9000), "a new place is news");
        assert!(r.clear(O));
        assert!(!r.clear(O));
        assert!(r.usable(O, 9000).is_none());
    }

    #[test]
    fn a_broken_alternative_is_avoided_longer_each_time_and_forgiven_when_it_works() {
        let mut r = Remembered::default();
        r.learn(O, "edge.example:8443", 30 * DAY, 0);
        r.broken(O, 100);
        assert!(r.usable(O, 100).is_none() && r.is_broken(O, 100));
        assert!(r.usable(O, 100 + 300).is_some(), "5 minutes the first time");
        r.broken(O, 1000);
        assert!(r.usable(O, 1000 + 599).is_none());
        assert!(r.usable(O, 1000 + 600).is_some(), "10 the second");
        for _ in 0..30 {
            r.broken(O, 5000);
        }
        assert!(r.usable(O, 5000 + 2 * 86_400 - 1).is_none());
        assert!(r.usable(O, 5000 + 2 * 86_400).is_some(), "never more than 2 days");
        // The same alternative offered again stays broken; working forgives it.
        r.learn(O, "edge.example:8443", 30 * DAY, 6000);
        assert!(r.is_broken(O, 6000));
        assert!(r.worked(O));
        assert!(r.usable(O, 6000).is_some());
        assert!(!r.worked(O));
    }

    #[test]
    fn the_handshake_time_is_kept_per_alternative_and_saved_when_it_moves() {
        let mut r = Remembered::default();
        assert!(!r.handshake(O, Duration::from_millis(20)), "no alternative, nothing to keep");
        r.learn(O, "edge.example:8443", DAY, 0);
        assert_eq!(r.handshake_time(O), None);
        assert!(r.handshake(O, Duration::from_millis(20)));
        assert_eq!(r.handshake_time(O), Some(Duration::from_millis(20)));
        assert!(!r.handshake(O, Duration::from_millis(29)), "within half: not worth a write");
        assert!(r.handshake(O, Duration::from_millis(31)));
        assert!(!r.handshake(O, Duration::from_secs(61)), "not believed");
        assert_eq!(r.handshake_time(O), Some(Duration::from_millis(31)));
        // A new place starts without one; a bad value read from a file is dropped.
        r.learn(O, "other.example:443", DAY, 0);
        assert_eq!(r.handshake_time(O), None);
        r.alternatives.get_mut(O).unwrap().handshake_ms = Some(0);
        r.bound(0);
        assert_eq!(r.handshake_time(O), None);
    }

    #[test]
    fn the_estimate_ages_out_and_bad_input_is_dropped() {
        let mut r = Remembered { throughput: Some(Estimate { bps: 2e6, at: 100 }), ..Remembered::default() };
        assert_eq!(r.throughput(100 + 3600), Some(2e6));
        assert_eq!(r.throughput(100 + ESTIMATE_LIFETIME.as_secs()), None);
        for bps in [f64::NAN, -1.0, 0.0, 1e12, f64::INFINITY] {
            r.throughput = Some(Estimate { bps, at: 100 });
            r.bound(100);
            assert_eq!(r.throughput, None, "{bps}");
        }
        for (origin, via) in [
            ("http://edge.example:80", "edge.example:80"),
            ("https://edge.example", "edge.example:1"),
            (O, "edge.example:0"),
            (O, "edge example:443"),
            (O, "/etc/passwd:443"),
            (O, ":443"),
        ] {
            let mut r = Remembered::default();
            r.alternatives.insert(
                origin.into(),
                Alternative { via: via.into(), expires: 10, broken_until: 0, failures: 0, handshake_ms: None },
            );
            assert_eq!(r.bound(0), 1, "{origin} {via}");
        }
        let mut r = Remembered::default();
        for i in 0..100u64 {
            r.learn(&format!("https://e{i}.example:443"), "[::1]:443", Duration::from_secs(1000 + i), 0);
        }
        assert_eq!(r.alternatives.len(), MAX_ALTERNATIVES);
        assert!(
            r.alternatives.contains_key("https://e99.example:443")
                && !r.alternatives.contains_key("https://e0.example:443")
        );
    }

    #[tokio::test]
    async fn the_file_survives_a_restart_and_a_bad_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(Memory::open(Some(dir.path())));
        let now = unix_now();
        m.change(|r| r.learn(O, "edge.example:8443", DAY, now));
        m.change(|r| {
            r.throughput = Some(Estimate { bps: 1.5e6, at: now });
            true
        });
        let path = dir.path().join(FILE);
        chorus_testkit::eventually(
            "the file written",
            Duration::from_secs(10),
            Duration::from_millis(20),
            async || read(&path).is_some_and(|r| r.throughput.is_some()),
        )
        .await;
        let again = Memory::open(Some(dir.path()));
        assert_eq!(again.with(|r| r.usable(O, now).map(|a| a.via.clone())), Some("edge.example:8443".into()));
        assert_eq!(again.with(|r| r.throughput(now)), Some(1.5e6));
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(Memory::open(Some(dir.path())).with(Clone::clone), Remembered::default());
        std::fs::write(&path, vec![b' '; 100_000]).unwrap();
        assert_eq!(Memory::open(Some(dir.path())).with(Clone::clone), Remembered::default());
    }
}
