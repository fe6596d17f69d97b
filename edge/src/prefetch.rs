//! Prefetch decisions, as plain logic with an explicit clock.
//!
//! - **Sequential**: music is listened to in order, so a request for segment i of a rendition
//!   prefetches i+1..=i+k of the same rendition ([`PrefetchConfig::segments_ahead`]).
//! - **Next track**: a client that knows its queue says so (CMCD `nor`, or the
//!   `Chorus-Next-Track` header); that track's manifest, init chunks and first segments are
//!   warmed.
//! - **Trending**: a track whose manifest request rate in the current window reaches
//!   [`PrefetchConfig::trending_min`] and at least doubles the previous window's is warmed the
//!   same way, once per window.
//! - **Operators**: `POST /admin/prewarm` warms listed tracks.
//!
//! The I/O (fetching, bounded concurrency, skipping what is cached or in flight) lives in the
//! edge node; this module only decides.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chorus_core::ChunkId;
use chorus_core::TrackId;
use chorus_core::manifest::Manifest;
use tokio::time::Instant;

/// Prefetch settings.
#[derive(Debug, Clone)]
pub struct PrefetchConfig {
    /// Segments prefetched ahead of each segment request (default 3; 0 turns it off).
    pub segments_ahead: usize,
    /// Prefetch fetches running at once at most (default 8); more are skipped, not queued.
    pub concurrency: usize,
    /// Segments per rendition warmed for a next-track hint, a trending track or a prewarm
    /// (default 2, after the init chunk).
    pub warm_segments: usize,
    /// Manifest requests in one window that can make a track trending (default 5).
    pub trending_min: u32,
    /// Length of a trending window (default 60 s).
    pub window: Duration,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        Self { segments_ahead: 3, concurrency: 8, warm_segments: 2, trending_min: 5, window: Duration::from_secs(60) }
    }
}

/// The chunks that follow segment `segment` of rendition `rendition` (at most `k`).
#[must_use]
pub fn following(m: &Manifest, rendition: usize, segment: usize, k: usize) -> Vec<ChunkId> {
    m.renditions
        .get(rendition)
        .map(|r| r.segments.iter().skip(segment + 1).take(k).map(|s| s.id).collect())
        .unwrap_or_default()
}

/// The chunks that start a track: each rendition's init chunk and first `n` segments.
#[must_use]
pub fn track_start(m: &Manifest, n: usize) -> Vec<ChunkId> {
    m.renditions
        .iter()
        .flat_map(|r| r.init.iter().map(|c| c.id).chain(r.segments.iter().take(n).map(|s| s.id)))
        .collect()
}

/// The track named by a next-track hint: a `Chorus-Next-Track: TRACK` header, or a CMCD
/// `nor` key (in a `CMCD-Request` header or a `CMCD` query parameter) naming a
/// `/v1/tracks/TRACK/…` URL.
#[must_use]
pub fn next_track_hint(headers: &http::HeaderMap, query: Option<&str>) -> Option<TrackId> {
    if let Some(t) = headers.get("chorus-next-track").and_then(|v| v.to_str().ok()) {
        return TrackId::parse(t.trim()).ok();
    }
    let cmcd_header = headers.get("cmcd-request").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let cmcd_query = chorus_http::serve::query_param(query, "CMCD");
    let cmcd = cmcd_header.or(cmcd_query)?;
    let nor = cmcd.split(',').find_map(|kv| kv.trim().strip_prefix("nor="))?;
    let url = nor.trim_matches('"');
    let url = chorus_http::serve::query_param(Some(&format!("u={url}")), "u").unwrap_or_else(|| url.to_owned());
    TrackId::parse(chorus_core::route::track_of(&url)?).ok()
}

/// Detects tracks whose request rate is rising.
#[derive(Debug)]
pub struct Trending {
    window: Duration,
    min: u32,
    max_tracks: usize,
    started: Option<Instant>,
    current: HashMap<TrackId, u32>,
    previous: HashMap<TrackId, u32>,
    warmed: HashSet<TrackId>,
}

impl Trending {
    /// A detector with windows of `window`, firing at `min` requests per window.
    #[must_use]
    pub fn new(window: Duration, min: u32) -> Self {
        Self {
            window,
            min,
            max_tracks: 100_000,
            started: None,
            current: HashMap::new(),
            previous: HashMap::new(),
            warmed: HashSet::new(),
        }
    }

    /// Counts a manifest request for `track` at `now`; true when the track just became
    /// trending (warm it now).
    pub fn observe(&mut self, now: Instant, track: &TrackId) -> bool {
        let start = *self.started.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= self.window {
            let windows = elapsed.as_nanos() / self.window.as_nanos().max(1);
            self.previous = if windows == 1 { std::mem::take(&mut self.current) } else { HashMap::new() };
            self.current.clear();
            self.warmed.clear();
            let advance = self.window * u32::try_from(windows).unwrap_or(u32::MAX);
            self.started = Some(start + advance);
        }
        if !self.current.contains_key(track) && self.current.len() >= self.max_tracks {
            return false;
        }
        let n = self.current.entry(track.clone()).or_insert(0);
        *n += 1;
        let before = self.previous.get(track).copied().unwrap_or(0);
        if *n >= self.min && *n >= before.saturating_mul(2) && self.warmed.insert(track.clone()) {
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn rising_tracks_fire_once_per_window() {
        let mut t = Trending::new(Duration::from_secs(60), 5);
        let now = Instant::now();
        let a = TrackId::parse("a").unwrap();
        let fired: Vec<bool> = (0..6).map(|i| t.observe(now + Duration::from_secs(i), &a)).collect();
        assert_eq!(fired, vec![false, false, false, false, true, false]);
        // Next window: the same rate is not rising (needs twice the previous 6).
        let next = now + Duration::from_secs(61);
        assert!(!(0..11).any(|i| t.observe(next + Duration::from_millis(i), &a)));
        assert!(t.observe(next + Duration::from_millis(20), &a), "12 ≥ 2 × 6 fires");
    }

    #[test]
    fn hints() {
        let mut h = http::HeaderMap::new();
        h.insert("chorus-next-track", HeaderValue::from_static("next-1"));
        assert_eq!(next_track_hint(&h, None), TrackId::parse("next-1").ok());
        let mut h = http::HeaderMap::new();
        h.insert("cmcd-request", HeaderValue::from_static("bl=2100,nor=\"/v1/tracks/song-2/manifest\""));
        assert_eq!(next_track_hint(&h, None), TrackId::parse("song-2").ok());
        let q = "CMCD=nor%3D%22%2Fv1%2Ftracks%2Fsong-3%2Fhls%2Fmaster.m3u8%22";
        assert_eq!(next_track_hint(&http::HeaderMap::new(), Some(q)), TrackId::parse("song-3").ok());
        assert_eq!(next_track_hint(&http::HeaderMap::new(), Some("CMCD=bl%3D100")), None);
    }
}
