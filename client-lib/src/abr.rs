//! Bitrate adaptation: which rendition each segment is fetched in.
//!
//! A throughput rule with a buffer safety net, as players such as dash.js combine them:
//! - with less than [`AbrConfig::panic_buffer`] of audio buffered, take the lowest rendition
//!   (a stall costs more than quality);
//! - otherwise take the highest rendition whose bitrate is at most [`AbrConfig::safety`] times
//!   the measured throughput; while the buffer is above [`AbrConfig::comfortable_buffer`], step
//!   up at most one rung per segment (no oscillation on a single fast sample);
//! - never above the user's cap. Decisions are per segment, so switching happens at segment
//!   boundaries, where renditions are time-aligned.

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
}

impl Default for AbrConfig {
    fn default() -> Self {
        Self { safety: 0.8, panic_buffer: Duration::from_secs(4), comfortable_buffer: Duration::from_secs(12) }
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

/// Picks the rung (index into `ladder_bps`, sorted lowest first) for the next segment, given
/// the measured throughput in bits/s (`None` before any measurement), the audio buffered ahead
/// of the playhead, and the rung of the previous segment.
#[must_use]
pub fn choose(
    cfg: &AbrConfig,
    quality: Quality,
    ladder_bps: &[u64],
    throughput_bps: Option<f64>,
    buffered: Duration,
    previous: Option<usize>,
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
    if buffered < cfg.panic_buffer {
        return 0;
    }
    let budget = tp * cfg.safety;
    let fits = ladder_bps.iter().take(cap + 1).rposition(|&b| (b as f64) <= budget).unwrap_or(0);
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

#[cfg(test)]
mod tests {
    use super::*;

    const LADDER: [u64; 4] = [24_000, 96_000, 160_000, 320_000];

    fn pick(tp: Option<f64>, buffered: u64, prev: Option<usize>, q: Quality) -> usize {
        choose(&AbrConfig::default(), q, &LADDER, tp, Duration::from_secs(buffered), prev)
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
        // Buffer nearly empty: lowest, whatever the throughput.
        assert_eq!(pick(Some(2e6), 2, Some(3), auto), 0);
    }

    #[test]
    fn never_above_the_cap_and_fixed_is_fixed() {
        assert_eq!(pick(Some(1e9), 60, Some(1), Quality::Auto { cap: 1 }), 1);
        assert_eq!(pick(Some(1e9), 60, Some(0), Quality::Auto { cap: 9 }), 1);
        assert_eq!(pick(Some(10.0), 0, None, Quality::Fixed(2)), 2);
        assert_eq!(pick(None, 0, None, Quality::Fixed(9)), 3);
    }
}
