//! `raw` mode: one pre-encoded audio file cut into byte chunks. Concatenated, the chunks are the
//! file. No ffmpeg needed; when ffprobe is present, it supplies duration and bitrate so that
//! chunks get estimated durations (clients schedule by them), otherwise those are 0.

use std::io::Read as _;
use std::path::Path;

use chorus_core::RenditionId;
use chorus_core::manifest::{Container, limits};

use super::{IngestError, Piece, Plan, PlannedRendition, probe};

/// Size of a raw chunk.
pub const RAW_CHUNK_BYTES: u64 = 256 * 1024;

pub(super) fn plan(input: &Path) -> Result<Plan, IngestError> {
    let whole = Piece::whole(input)?;
    if whole.len == 0 {
        return Err(IngestError::NotAudio(format!("{}: empty file", input.display())));
    }
    let mut head = [0u8; 64];
    let n = std::fs::File::open(input)
        .and_then(|mut f| f.read(&mut head))
        .map_err(|source| IngestError::Read { path: input.to_owned(), source })?;
    let format = sniff(&head[..n]).ok_or_else(|| {
        IngestError::NotAudio(format!(
            "{}: not a recognised audio format (raw mode takes MP3, AAC/ADTS, FLAC, Ogg, WAV or MP4/M4A)",
            input.display()
        ))
    })?;
    let count = whole.len.div_ceil(RAW_CHUNK_BYTES);
    if count > limits::MAX_SEGMENTS as u64 {
        return Err(IngestError::Input(format!("{}: file too large ({} bytes)", input.display(), whole.len)));
    }
    // Optional: a probe gives real durations. Without ffprobe, or if it cannot read the file,
    // the chunks are still served; their durations are unknown (0).
    let info = if probe::available("ffprobe") { probe::probe(input).ok() } else { None };
    let bitrate_bps = info
        .and_then(|i| i.bitrate_bps)
        .or_else(|| info.filter(|i| i.duration_ms > 0).map(|i| mul_div(whole.len, 8000, i.duration_ms)))
        .unwrap_or(0);
    let segments = (0..count)
        .map(|i| {
            let offset = i * RAW_CHUNK_BYTES;
            let len = RAW_CHUNK_BYTES.min(whole.len - offset);
            let duration_ms = info.map_or(0, |i| mul_div(i.duration_ms, len, whole.len));
            (Piece { path: input.to_owned(), offset, len }, duration_ms)
        })
        .collect();
    let id = RenditionId::parse(&format!("raw-{}", format.replace('.', "-")))?;
    Ok(Plan {
        renditions: vec![PlannedRendition {
            id,
            codec: format.to_owned(),
            bitrate_bps,
            container: Container::Raw,
            init: None,
            segments,
        }],
        duration_ms: info.map(|i| i.duration_ms),
    })
}

/// `a * b / c` without overflow (saturating; 0 when `c` is 0).
fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return 0;
    }
    u64::try_from(u128::from(a) * u128::from(b) / u128::from(c)).unwrap_or(u64::MAX)
}

/// The audio format of a file from its first bytes.
fn sniff(h: &[u8]) -> Option<&'static str> {
    let at = |o: usize, tag: &[u8]| h.len() >= o + tag.len() && &h[o..o + tag.len()] == tag;
    if at(0, b"fLaC") {
        Some("flac")
    } else if at(0, b"OggS") {
        Some(if h.windows(8).any(|w| w == b"OpusHead") { "opus" } else { "ogg" })
    } else if at(0, b"RIFF") && at(8, b"WAVE") {
        Some("wav")
    } else if at(4, b"ftyp") {
        Some("mp4")
    } else if at(0, b"ID3") {
        Some("mp3")
    } else if h.len() >= 2 && h[0] == 0xFF && (h[1] & 0xF6) == 0xF0 {
        Some("aac") // ADTS: sync word, layer 00
    } else if h.len() >= 2 && h[0] == 0xFF && (h[1] & 0xE0) == 0xE0 {
        Some("mp3") // MPEG audio frame sync
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sniffs_formats() {
        assert_eq!(sniff(b"fLaC\0\0"), Some("flac"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WAVEfmt "), Some("wav"));
        assert_eq!(sniff(b"ID3\x04"), Some("mp3"));
        assert_eq!(sniff(&[0xFF, 0xFB, 0x90]), Some("mp3"));
        assert_eq!(sniff(&[0xFF, 0xF1, 0x50]), Some("aac"));
        assert_eq!(sniff(b"\0\0\0\x20ftypM4A "), Some("mp4"));
        assert_eq!(sniff(b"hello world"), None);
        assert_eq!(sniff(b"%PDF-1.7"), None);
    }
}
