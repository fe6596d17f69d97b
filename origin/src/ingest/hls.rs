//! `hls` mode: importing an HLS package with fMP4 (CMAF) segments as it is.
//!
//! The input is a multivariant playlist (or a directory holding `master.m3u8`), or a single
//! media playlist. Every URI must be a relative path inside the package's directory: an import
//! never reads outside it and never fetches from the network. Segments may be whole files or
//! `EXT-X-BYTERANGE` ranges of one file. MPEG-TS segments are refused (CMAF only).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};

use chorus_core::RenditionId;
use chorus_core::manifest::{Container, limits};
use m3u8_rs::{ByteRange, MediaPlaylist, Playlist};

use super::{IngestError, Piece, Plan, PlannedRendition};

/// Largest playlist file read.
const MAX_PLAYLIST_BYTES: u64 = 4 * 1024 * 1024;

fn input_err(path: &Path, what: impl std::fmt::Display) -> IngestError {
    IngestError::Input(format!("{}: {what}", path.display()))
}

fn read_playlist(path: &Path) -> Result<Playlist, IngestError> {
    let read_err = |source| IngestError::Read { path: path.to_owned(), source };
    let meta = std::fs::metadata(path).map_err(read_err)?;
    if meta.len() > MAX_PLAYLIST_BYTES {
        return Err(input_err(path, "playlist larger than 4 MiB"));
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    parse_playlist(path, &bytes)
}

/// Parses the playlist `bytes` read from `path` (named in errors). Pure: the fuzz target's
/// entry (`fuzz/fuzz_targets/hls_playlist.rs`).
pub(super) fn parse_playlist(path: &Path, bytes: &[u8]) -> Result<Playlist, IngestError> {
    if bytes.len() as u64 > MAX_PLAYLIST_BYTES {
        return Err(input_err(path, "playlist larger than 4 MiB"));
    }
    if !bytes.starts_with(b"#EXTM3U") {
        return Err(input_err(path, "not an HLS playlist (no #EXTM3U)"));
    }
    m3u8_rs::parse_playlist_res(bytes).map_err(|_| input_err(path, "malformed HLS playlist"))
}

/// Resolves `uri` against `dir`, refusing URLs, absolute paths and `..`.
fn resolve(dir: &Path, uri: &str, playlist: &Path) -> Result<PathBuf, IngestError> {
    let rel = Path::new(uri);
    let clean = !uri.contains("://")
        && !uri.contains('?')
        && rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if uri.is_empty() || !clean {
        return Err(input_err(playlist, format!("URI {uri:?} is not a relative path inside the package")));
    }
    Ok(dir.join(rel))
}

/// Plans the import of the package at `input`.
pub(super) fn plan(input: &Path) -> Result<Plan, IngestError> {
    let top = if input.is_dir() {
        ["master.m3u8", "index.m3u8"]
            .iter()
            .map(|n| input.join(n))
            .find(|p| p.is_file())
            .ok_or_else(|| input_err(input, "directory holds no master.m3u8 or index.m3u8"))?
    } else {
        input.to_owned()
    };
    let dir = top.parent().unwrap_or(Path::new(".")).to_owned();
    let mut renditions = Vec::new();
    match read_playlist(&top)? {
        Playlist::MasterPlaylist(master) => {
            let variants: Vec<_> = master.variants.iter().filter(|v| !v.is_i_frame).collect();
            if variants.is_empty() || variants.len() > limits::MAX_RENDITIONS {
                return Err(input_err(
                    &top,
                    format!("{} variants (expected 1 to {})", variants.len(), limits::MAX_RENDITIONS),
                ));
            }
            for v in variants {
                let path = resolve(&dir, &v.uri, &top)?;
                let Playlist::MediaPlaylist(media) = read_playlist(&path)? else {
                    return Err(input_err(&path, "a variant must be a media playlist"));
                };
                renditions.push(rendition(&path, &media, v.codecs.as_deref())?);
            }
        }
        Playlist::MediaPlaylist(media) => renditions.push(rendition(&top, &media, None)?),
    }
    let mut ids = HashSet::new();
    for r in &mut renditions {
        if !ids.insert(r.id.clone()) {
            // Two variants in directories of the same name: disambiguate by bitrate.
            let alt = format!("{}-{}", r.id.as_str().chars().take(20).collect::<String>(), r.bitrate_bps / 1000);
            r.id = RenditionId::parse(&alt)?;
            if !ids.insert(r.id.clone()) {
                return Err(IngestError::Input(format!("two renditions would both be named {alt}")));
            }
        }
    }
    Ok(Plan { renditions, duration_ms: None })
}

/// The rendition id for a media playlist: its directory's name if that is a valid id
/// (`aac-96/index.m3u8` → `aac-96`), else its file stem, else derived from codec and bitrate.
fn rendition_id(path: &Path, codec: &str, bitrate_bps: u64) -> RenditionId {
    let dir_name = path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).map(str::to_ascii_lowercase);
    let stem = path.file_stem().and_then(|n| n.to_str()).map(str::to_ascii_lowercase);
    dir_name
        .into_iter()
        .chain(stem)
        .find_map(|n| RenditionId::parse(&n).ok().filter(|id| !matches!(id.as_str(), "index" | "playlist" | "media")))
        .or_else(|| {
            let family = if codec.starts_with("mp4a") { "aac" } else { codec.split('.').next().unwrap_or("audio") };
            RenditionId::parse(&format!("{}-{}", family.to_ascii_lowercase(), bitrate_bps / 1000)).ok()
        })
        .unwrap_or_else(|| RenditionId::parse("audio").unwrap_or_else(|_| unreachable!("constant id is valid")))
}

fn rendition(path: &Path, media: &MediaPlaylist, codecs: Option<&str>) -> Result<PlannedRendition, IngestError> {
    let dir = path.parent().unwrap_or(Path::new(".")).to_owned();
    if media.segments.is_empty() || media.segments.len() > limits::MAX_SEGMENTS {
        return Err(input_err(
            path,
            format!("{} segments (expected 1 to {})", media.segments.len(), limits::MAX_SEGMENTS),
        ));
    }
    if media.segments.iter().any(|s| s.key.as_ref().is_some_and(|k| k.method != m3u8_rs::KeyMethod::None)) {
        return Err(input_err(path, "encrypted segments are not supported"));
    }
    let map = media.segments.first().and_then(|s| s.map.as_ref()).ok_or_else(|| {
        input_err(
            path,
            "no EXT-X-MAP: only fMP4/CMAF segments are supported (package with ffmpeg -hls_segment_type fmp4)",
        )
    })?;
    if media
        .segments
        .iter()
        .skip(1)
        .any(|s| s.map.as_ref().is_some_and(|m| m.uri != map.uri || m.byte_range != map.byte_range))
    {
        return Err(input_err(path, "more than one EXT-X-MAP: a rendition must have one init segment"));
    }
    let init_path = resolve(&dir, &map.uri, path)?;
    let init = piece(&init_path, map.byte_range.as_ref(), None)?;

    let mut segments = Vec::with_capacity(media.segments.len());
    let mut last: Option<(PathBuf, u64)> = None; // for byte ranges without an offset
    for s in &media.segments {
        if !(s.duration.is_finite() && s.duration > 0.0 && s.duration < 3600.0) {
            return Err(input_err(path, format!("segment {} has a bad duration {}", s.uri, s.duration)));
        }
        let seg_path = resolve(&dir, &s.uri, path)?;
        let follow = last.as_ref().filter(|(p, _)| *p == seg_path).map(|(_, end)| *end);
        let p = piece(&seg_path, s.byte_range.as_ref(), follow)?;
        last = Some((seg_path, p.offset + p.len));
        segments.push((p, (f64::from(s.duration) * 1000.0).round() as u64));
    }

    let init_bytes = init.read()?;
    let codec = match codecs {
        Some(c) => c.split(',').map(str::trim).find(|c| !c.is_empty()).unwrap_or("").to_owned(),
        None => sniff_codec(&init_bytes).ok_or_else(|| {
            input_err(&init_path, "cannot tell the codec: use a master playlist with CODECS, or an init segment with an mp4a, Opus or fLaC sample entry")
        })?,
    };
    let duration_ms: u64 = segments.iter().map(|(_, d)| d).sum();
    let bytes: u64 = segments.iter().map(|(p, _)| p.len).sum();
    let bitrate_bps = (bytes * 8 * 1000).checked_div(duration_ms).unwrap_or(0);
    Ok(PlannedRendition {
        id: rendition_id(path, &codec, bitrate_bps),
        codec,
        bitrate_bps,
        container: Container::Cmaf,
        init: Some(init),
        segments,
    })
}

fn piece(path: &Path, range: Option<&ByteRange>, follow: Option<u64>) -> Result<Piece, IngestError> {
    let whole = Piece::whole(path)?;
    let Some(r) = range else {
        if whole.len > limits::MAX_CHUNK_BYTES {
            return Err(input_err(
                path,
                format!(
                    "segment of {} bytes is larger than the {} MiB chunk limit",
                    whole.len,
                    limits::MAX_CHUNK_BYTES >> 20
                ),
            ));
        }
        return Ok(whole);
    };
    if r.length > limits::MAX_CHUNK_BYTES {
        return Err(input_err(
            path,
            format!(
                "byte range of {} bytes is larger than the {} MiB chunk limit",
                r.length,
                limits::MAX_CHUNK_BYTES >> 20
            ),
        ));
    }
    let offset = r.offset.or(follow).unwrap_or(0);
    if offset.checked_add(r.length).is_none_or(|end| end > whole.len) {
        return Err(input_err(path, format!("byte range {}@{offset} is past the end of the file", r.length)));
    }
    Ok(Piece { path: path.to_owned(), offset, len: r.length })
}

/// The codec of a CMAF init segment, from its sample entry.
fn sniff_codec(init: &[u8]) -> Option<String> {
    let has = |tag: &[u8]| init.windows(tag.len()).any(|w| w == tag);
    if has(b"mp4a") {
        Some("mp4a.40.2".to_owned())
    } else if has(b"Opus") {
        Some("opus".to_owned())
    } else if has(b"fLaC") {
        Some("fLaC".to_owned())
    } else if has(b"ec-3") {
        Some("ec-3".to_owned())
    } else if has(b"ac-3") {
        Some("ac-3".to_owned())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_stay_inside_the_package() {
        let d = Path::new("/pkg");
        let p = Path::new("/pkg/master.m3u8");
        assert_eq!(resolve(d, "a/seg1.m4s", p).unwrap(), PathBuf::from("/pkg/a/seg1.m4s"));
        for bad in ["../x.m4s", "/etc/passwd", "http://evil/x", "a/../../x", "", "x.m4s?y=1"] {
            assert!(resolve(d, bad, p).is_err(), "{bad}");
        }
    }

    #[test]
    fn ids_from_paths() {
        assert_eq!(rendition_id(Path::new("/p/aac-96/index.m3u8"), "mp4a.40.2", 1).as_str(), "aac-96");
        assert_eq!(rendition_id(Path::new("/p/Low/index.m3u8"), "mp4a.40.2", 1).as_str(), "low");
        assert_eq!(rendition_id(Path::new("/p/a b/index.m3u8"), "mp4a.40.2", 96_000).as_str(), "aac-96");
    }
}
