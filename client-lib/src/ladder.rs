//! Ladder planning: which renditions a track handle uses and how its quality setting maps onto
//! them. Plain functions over the manifest, free of I/O.
//!
//! The ladder is sorted lowest bitrate first. A handle that may switch anywhere
//! ([`Switching::Anywhere`]) uses every rung; one that must stay one decodable stream
//! ([`Switching::OneDecoder`]) uses only the rungs whose codec and init chunk's decoder
//! configuration equal the preferred rung's (a CMAF switching set). The user's quality (an
//! index into the whole ladder) is then remapped to an index into the rungs in use.

use std::time::Duration;

use chorus_core::cmaf::AudioConfig;
use chorus_core::manifest::Rendition;

use crate::abr::{AbrConfig, Quality};
use crate::scheduler::SegmentInfo;

/// Whether a handle may switch anywhere in the ladder or only within one decoder configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Switching {
    Anywhere,
    OneDecoder,
}

/// The renditions, lowest bitrate first.
pub(crate) fn sorted(renditions: &[Rendition]) -> Vec<&Rendition> {
    let mut ladder: Vec<&Rendition> = renditions.iter().collect();
    ladder.sort_by_key(|r| r.bitrate_bps);
    ladder
}

/// The rung playback will most likely start in, before the track measures anything (from the
/// remembered `estimate`, bits/s): its first segment is fetched alongside the init chunks, a
/// round trip less to the first sound.
pub(crate) fn first_guess(quality: Quality, ladder: &[&Rendition], estimate: Option<f64>) -> usize {
    let bps: Vec<u64> = ladder.iter().map(|r| r.bitrate_bps).collect();
    crate::abr::first(&AbrConfig::default(), quality, &bps, estimate)
}

/// The rung the user asked for (the fixed one, or the cap), within a ladder of `len` rungs.
pub(crate) fn preferred(quality: Quality, len: usize) -> usize {
    let top = len.saturating_sub(1);
    match quality {
        Quality::Fixed(i) => i.min(top),
        Quality::Auto { cap } => cap.min(top),
    }
}

/// The rungs (indices into `ladder`) a handle may use. `configs[i]` is rung `i`'s decoder
/// configuration, read from its init chunk (`None` for raw files or an unreadable init).
pub(crate) fn switching_set(
    switching: Switching,
    ladder: &[&Rendition],
    configs: &[Option<AudioConfig>],
    preferred: usize,
) -> Vec<usize> {
    match switching {
        Switching::Anywhere => (0..ladder.len()).collect(),
        Switching::OneDecoder => {
            let key = |i: usize| (ladder[i].codec.as_str(), configs.get(i).cloned().flatten());
            let want = key(preferred);
            (0..ladder.len()).filter(|&i| i == preferred || key(i) == want).collect()
        }
    }
}

/// `quality` with its rung index remapped from the whole ladder to the rungs in `allowed`.
pub(crate) fn remap(quality: Quality, allowed: &[usize], preferred: usize) -> Quality {
    let at = allowed.iter().position(|&i| i == preferred).unwrap_or(0);
    match quality {
        Quality::Fixed(_) => Quality::Fixed(at),
        Quality::Auto { .. } => Quality::Auto { cap: at },
    }
}

/// What the scheduler needs of each segment: its duration (from the lowest rung; segments are
/// time-aligned) and its size in each allowed rung.
pub(crate) fn segment_infos(ladder: &[&Rendition], allowed: &[usize]) -> Vec<SegmentInfo> {
    let Some(base) = ladder.first() else { return Vec::new() };
    base.segments
        .iter()
        .enumerate()
        .map(|(k, s)| SegmentInfo {
            duration: Duration::from_millis(s.duration_ms),
            sizes: allowed.iter().map(|&i| ladder[i].segments.get(k).map_or(0, |s| s.size)).collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use chorus_core::manifest::{ChunkRef, Container, Segment};
    use chorus_core::{ChunkId, RenditionId};

    use super::*;

    fn rendition(id: &str, codec: &str, kbps: u64, segments: usize) -> Rendition {
        let chunk = |s: &str| ChunkId::of(format!("{id}/{s}").as_bytes());
        Rendition {
            id: RenditionId::parse(id).unwrap(),
            codec: codec.into(),
            bitrate_bps: kbps * 1000,
            container: Container::Cmaf,
            init: Some(ChunkRef { id: chunk("init"), size: 600 }),
            segments: (0..segments)
                .map(|k| Segment { id: chunk(&k.to_string()), size: kbps * 750, duration_ms: 6000, iv: None })
                .collect(),
        }
    }

    fn config(rate: u32) -> Option<AudioConfig> {
        Some(AudioConfig { format: *b"mp4a", channels: 2, sample_rate: rate, decoder_specific: vec![0x12, 0x10] })
    }

    #[test]
    fn the_ladder_is_sorted_lowest_first() {
        let all = [rendition("aac-160", "mp4a.40.2", 160, 2), rendition("aac-24", "mp4a.40.5", 24, 2)];
        let ids: Vec<String> = sorted(&all).iter().map(|r| r.id.to_string()).collect();
        assert_eq!(ids, ["aac-24", "aac-160"]);
    }

    #[test]
    fn the_first_guess_follows_the_estimate_within_the_cap() {
        let all = [rendition("a", "mp4a.40.2", 24, 1), rendition("b", "mp4a.40.2", 96, 1)];
        let ladder = sorted(&all);
        assert_eq!(first_guess(Quality::Fixed(1), &ladder, None), 1);
        assert_eq!(first_guess(Quality::Fixed(9), &ladder, None), 1);
        assert_eq!(first_guess(Quality::Auto { cap: 0 }, &ladder, Some(1e9)), 0);
        assert_eq!(first_guess(Quality::Auto { cap: 9 }, &ladder, None), 0);
        assert_eq!(first_guess(Quality::Auto { cap: 9 }, &ladder, Some(1e9)), 1, "a remembered estimate");
        assert_eq!(preferred(Quality::Auto { cap: 7 }, 3), 2);
        assert_eq!(preferred(Quality::Fixed(1), 3), 1);
        assert_eq!(preferred(Quality::Fixed(1), 0), 0);
    }

    #[test]
    fn one_decoder_keeps_only_the_preferred_configuration() {
        let all = [
            rendition("he-24", "mp4a.40.5", 24, 1),
            rendition("lc-96", "mp4a.40.2", 96, 1),
            rendition("lc-160", "mp4a.40.2", 160, 1),
            rendition("lc-320", "mp4a.40.2", 320, 1),
        ];
        let ladder = sorted(&all);
        // 320 is LC at another sample rate: another decoder configuration.
        let configs = [config(24_000), config(44_100), config(44_100), config(48_000)];
        assert_eq!(switching_set(Switching::OneDecoder, &ladder, &configs, 2), [1, 2]);
        assert_eq!(switching_set(Switching::OneDecoder, &ladder, &configs, 0), [0]);
        assert_eq!(switching_set(Switching::Anywhere, &ladder, &configs, 2), [0, 1, 2, 3]);
        // Raw files (no init chunks) of one codec are one set.
        let none = [None, None, None, None];
        assert_eq!(switching_set(Switching::OneDecoder, &ladder, &none, 1), [1, 2, 3]);
    }

    #[test]
    fn quality_is_remapped_into_the_allowed_rungs() {
        assert_eq!(remap(Quality::Fixed(2), &[1, 2], 2), Quality::Fixed(1));
        assert_eq!(remap(Quality::Auto { cap: 3 }, &[0, 1, 2, 3], 3), Quality::Auto { cap: 3 });
        assert_eq!(remap(Quality::Auto { cap: 2 }, &[1, 2], 2), Quality::Auto { cap: 1 });
    }

    #[test]
    fn segments_take_durations_from_the_lowest_rung_and_sizes_from_each() {
        let all = [rendition("a", "mp4a.40.2", 24, 3), rendition("b", "mp4a.40.2", 96, 2)];
        let ladder = sorted(&all);
        let infos = segment_infos(&ladder, &[0, 1]);
        assert_eq!(infos.len(), 3);
        assert_eq!(infos[0].duration, Duration::from_secs(6));
        assert_eq!(infos[0].sizes, [18_000, 72_000]);
        assert_eq!(infos[2].sizes, [18_000, 0], "a rung missing a segment counts 0 bytes");
        assert!(segment_infos(&[], &[]).is_empty());
    }
}
