//! Bitrate adaptation: which rendition each segment is fetched in.
//!
//! A throughput rule with a buffer safety net, as players such as dash.js combine them:
//! - with less than [`AbrConfig::panic_buffer`] of audio buffered, take no higher rung than
//!   before, and only one whose segment the measured throughput brings in within half the
//!   audio buffered (the lowest if none does): a stall costs more than quality, but a link
//!   that delivers a segment in milliseconds need not drop to the lowest rung for a short
//!   buffer (one kept short on purpose, say, while peers are asked first);
//! - otherwise take the highest rendition whose bitrate is at most [`AbrConfig::safety`] times
//!   the measured throughput; while the buffer is above [`AbrConfig::comfortable_buffer`], step
//!   up at most one rung per segment (no oscillation on a single fast sample);
//! - never above the user's cap. Decisions are per segment, so switching happens at segment
//!   boundaries, where renditions are time-aligned.
//!
//! Where a track starts ([`first`], [`warm`]): a client that remembers a throughput estimate
//! (from its last track, or its last run, [`crate::remembered`]) starts at the highest rung
//! [`AbrConfig::start_safety`] of it carries. A client with no estimate fetches its first
//! segment in the lowest rung (it arrives soonest, and measures the link), then goes straight
//! to the default quality ([`AbrConfig::start_bps`], the "normal" 96 kbit/s class) when that
//! download shows the link carries it, rather than climb there one rung at a time.

use std::time::Duration;

/// Tuning of the adaptation rule.
#[derive(Debug, Clone)]
pub struct AbrConfig {
    /// Fraction of measured throughput a rendition may use (default 0.8).
    pub safety: f64,
    /// Below this much buffered audio, fetch the lowest rendition (default 4 s).
    pub panic_buffer: Duration,
    /// Above this much buffered audio, step up one rung at a time (default 12 s).
    pub comfortable_buffer: Duration,
    /// Fraction of a remembered throughput estimate the first rung may use (default 0.5: the
    /// estimate may come from another time, or another network).
    pub start_safety: f64,
    /// The default quality, bits/s (default 96 000): a client with no estimate goes to the
    /// highest rung at or below it once its first segment shows the link carries it.
    pub start_bps: u64,
}

impl Default for AbrConfig {
    fn default() -> Self {
        Self {
            safety: 0.8,
            panic_buffer: Duration::from_secs(4),
            comfortable_buffer: Duration::from_secs(12),
            start_safety: 0.5,
            start_bps: 96_000,
        }
    }
}

/// The user's quality preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quality {
    /// Adapt to the network, never above `cap` (an index into the ladder, lowest first).
    Auto {
        /// Highest rung allowed.
        cap: usize,
    },
    /// Always this rung (clamped to the ladder).
    Fixed(usize),
}

/// Picks the rung (index into `ladder_bps`, sorted lowest first) for the next segment, of
/// `segment` media time, given the measured throughput in bits/s (`None` before any
/// measurement), the audio buffered ahead of the playhead, and the rung of the previous
/// segment.
#[must_use]
pub fn choose(
    cfg: &AbrConfig,
    quality: Quality,
    ladder_bps: &[u64],
    throughput_bps: Option<f64>,
    buffered: Duration,
    previous: Option<usize>,
    segment: Duration,
) -> usize {
    let top = ladder_bps.len().saturating_sub(1);
    let cap = match quality {
        Quality::Fixed(r) => return r.min(top),
        Quality::Auto { cap } => cap.min(top),
    };
    let Some(tp) = throughput_bps else {
        // Nothing measured yet: start low, so the first segment arrives fast.
        return 0;
    };
    let fits = highest_within(ladder_bps, cap, tp * cfg.safety);
    if buffered < cfg.panic_buffer {
        // A rung's segment takes bitrate × duration / throughput to arrive.
        let in_time = tp * buffered.as_secs_f64() / (2.0 * segment.as_secs_f64().max(1e-3));
        return highest_within(ladder_bps, cap, in_time).min(fits).min(previous.unwrap_or(0));
    }
    match previous {
        // Going up: one rung at a time, and only with a comfortable buffer.
        Some(prev) if fits > prev => {
            if buffered >= cfg.comfortable_buffer {
                (prev + 1).min(fits)
            } else {
                prev.min(cap)
            }
        }
        _ => fits,
    }
}

/// The highest rung within `cap` whose bitrate is at most `budget` bits/s (the lowest if none).
fn highest_within(ladder_bps: &[u64], cap: usize, budget: f64) -> usize {
    ladder_bps.iter().take(cap + 1).rposition(|&b| (b as f64) <= budget).unwrap_or(0)
}

/// The rung a track's first segments are fetched in, before the track has measured anything:
/// the highest that [`AbrConfig::start_safety`] of `estimate_bps` (a remembered estimate)
/// carries, within the cap; the lowest with no estimate.
#[must_use]
pub fn first(cfg: &AbrConfig, quality: Quality, ladder_bps: &[u64], estimate_bps: Option<f64>) -> usize {
    let top = ladder_bps.len().saturating_sub(1);
    let cap = match quality {
        Quality::Fixed(r) => return r.min(top),
        Quality::Auto { cap } => cap.min(top),
    };
    estimate_bps
        .filter(|e| e.is_finite() && *e > 0.0)
        .map_or(0, |e| highest_within(ladder_bps, cap, e * cfg.start_safety))
}

/// The rung after a cold start's first measurement (`throughput_bps`, from the first
/// segment's download): the default quality ([`AbrConfig::start_bps`]) when the throughput
/// carries it with the usual [`AbrConfig::safety`], else the highest rung it carries; within
/// the cap. Above the default quality the usual rule climbs one rung at a time.
#[must_use]
pub fn warm(cfg: &AbrConfig, quality: Quality, ladder_bps: &[u64], throughput_bps: f64) -> usize {
    let top = ladder_bps.len().saturating_sub(1);
    let cap = match quality {
        Quality::Fixed(r) => return r.min(top),
        Quality::Auto { cap } => cap.min(top),
    };
    let default = highest_within(ladder_bps, cap, cfg.start_bps as f64);
    highest_within(ladder_bps, cap, throughput_bps * cfg.safety).min(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: [u64; 4] = [24_000, 96_000, 160_000, 320_000];

    fn pick(tp: Option<f64>, buffered: u64, prev: Option<usize>, q: Quality) -> usize {
        choose(&AbrConfig::default(), q, &LADDER, tp, Duration::from_secs(buffered), prev, Duration::from_secs(6))
    }

    #[test]
    fn starts_low_then_climbs_one_rung_at_a_time() {
        let auto = Quality::Auto { cap: 3 };
        assert_eq!(pick(None, 0, None, auto), 0);
        // Plenty of bandwidth, comfortable buffer: up one rung per segment.
        assert_eq!(pick(Some(2e6), 20, Some(0), auto), 1);
        assert_eq!(pick(Some(2e6), 20, Some(1), auto), 2);
        assert_eq!(pick(Some(2e6), 20, Some(2), auto), 3);
        // Buffer not comfortable yet: hold.
        assert_eq!(pick(Some(2e6), 8, Some(1), auto), 1);
    }

    #[test]
    fn drops_at_once_when_throughput_or_buffer_fall() {
        let auto = Quality::Auto { cap: 3 };
        // 150 kbit/s measured: 0.8 × 150k = 120k fits 96k (rung 1), straight down from 3.
        assert_eq!(pick(Some(150_000.0), 20, Some(3), auto), 1);
        // Buffer nearly empty (2 s): only what arrives within 1 s. At 500 kbit/s a 6 s segment
        // of 24k takes 0.29 s, of 96k 1.15 s: the lowest.
        assert_eq!(pick(Some(500_000.0), 2, Some(3), auto), 0);
        // At 2 Mbit/s 160k takes 0.48 s and 320k 0.96 s: no need to drop below the previous
        // rung, and no climbing either.
        assert_eq!(pick(Some(2e6), 2, Some(2), auto), 2);
        assert_eq!(pick(Some(2e6), 2, Some(1), auto), 1);
        assert_eq!(
            pick(Some(2e6), 1, Some(3), auto),
            2,
            "1 s buffered: 160k (0.48 s) arrives within 0.5 s, 320k does not"
        );
        assert_eq!(pick(Some(2e6), 0, Some(3), auto), 0);
    }

    #[test]
    fn a_remembered_estimate_picks_the_first_rung_with_a_margin() {
        let cfg = AbrConfig::default();
        let auto = Quality::Auto { cap: 3 };
        assert_eq!(first(&cfg, auto, &LADDER, None), 0, "no estimate: lowest");
        // Half of the estimate must carry the rung: 400 kbit/s → 200k → 160k (rung 2).
        assert_eq!(first(&cfg, auto, &LADDER, Some(400_000.0)), 2);
        assert_eq!(first(&cfg, auto, &LADDER, Some(640_000.0)), 3);
        assert_eq!(first(&cfg, auto, &LADDER, Some(100_000.0)), 0, "50k carries only the lowest");
        assert_eq!(first(&cfg, Quality::Auto { cap: 1 }, &LADDER, Some(1e9)), 1, "never above the cap");
        assert_eq!(first(&cfg, Quality::Fixed(2), &LADDER, None), 2);
        for junk in [f64::NAN, -5.0, 0.0, f64::INFINITY] {
            assert_eq!(first(&cfg, auto, &LADDER, Some(junk)), 0, "{junk}");
        }
    }

    #[test]
    fn a_cold_start_goes_to_the_default_quality_when_the_first_segment_shows_it_fits() {
        let cfg = AbrConfig::default();
        let auto = Quality::Auto { cap: 3 };
        assert_eq!(warm(&cfg, auto, &LADDER, 50e6), 1, "fast link: the default (96k), not higher");
        assert_eq!(warm(&cfg, auto, &LADDER, 130_000.0), 1, "0.8 × 130k = 104k carries 96k");
        assert_eq!(warm(&cfg, auto, &LADDER, 110_000.0), 0, "0.8 × 110k = 88k does not");
        assert_eq!(warm(&cfg, Quality::Auto { cap: 0 }, &LADDER, 50e6), 0);
        let high = AbrConfig { start_bps: 320_000, ..AbrConfig::default() };
        assert_eq!(warm(&high, auto, &LADDER, 300_000.0), 2, "the link, not the default, limits");
    }

    #[test]
    fn never_above_the_cap_and_fixed_is_fixed() {
        assert_eq!(pick(Some(1e9), 60, Some(1), Quality::Auto { cap: 1 }), 1);
        assert_eq!(pick(Some(1e9), 60, Some(0), Quality::Auto { cap: 9 }), 1);
        assert_eq!(pick(Some(10.0), 0, None, Quality::Fixed(2)), 2);
        assert_eq!(pick(None, 0, None, Quality::Fixed(9)), 3);
    }
}
