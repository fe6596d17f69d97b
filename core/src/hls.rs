//! HLS playlists generated from a manifest, so any HLS player can play a track from an origin
//! or edge with no chorus code. Segment URIs are `/v1/chunks/{chunk}.m4s` and the init
//! segment's `/v1/chunks/{chunk}.mp4` (players such as ffmpeg refuse segment URLs without a
//! media extension; the suffix names the same bytes as `/v1/chunks/{chunk}`). A `token` query
//! parameter, when the playlist was requested with one, is carried onto every URI so players
//! that cannot set headers still pass the edge's token check.
//!
//! A protected track's media playlists give every segment an `#EXT-X-KEY:METHOD=AES-128` tag
//! with the segment's own IV and the key route's URI (`/v1/tracks/{track}/keys/{key_id}`), so
//! any HLS player fetches the key (with the token) and decrypts. The `#EXT-X-MAP` comes before
//! the first key tag: the init segment is clear.
//!
//! The playlists as text; `chorus_http::hls::respond` answers them as HTTP responses.

use std::fmt::Write as _;

use crate::manifest::{Container, Manifest, Rendition};

/// Whether a rendition can be played through HLS (CMAF only; raw byte chunks cannot).
#[must_use]
pub fn playable(r: &Rendition) -> bool {
    r.container == Container::Cmaf
}

fn suffix(token: Option<&str>) -> String {
    token.map(|t| format!("?token={t}")).unwrap_or_default()
}

/// The multivariant playlist: one variant per CMAF rendition. `None` if there is none.
#[must_use]
pub fn master(m: &Manifest, token: Option<&str>) -> Option<String> {
    let mut out = String::from("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n");
    let mut any = false;
    for r in m.renditions.iter().filter(|r| playable(r)) {
        any = true;
        // BANDWIDTH is the peak rate of any segment, as RFC 8216 asks.
        let peak = r
            .segments
            .iter()
            .filter(|s| s.duration_ms > 0)
            .map(|s| s.size * 8 * 1000 / s.duration_ms)
            .max()
            .unwrap_or(r.bitrate_bps)
            .max(r.bitrate_bps);
        let _ = writeln!(
            out,
            "#EXT-X-STREAM-INF:BANDWIDTH={peak},AVERAGE-BANDWIDTH={},CODECS=\"{}\"\n{}.m3u8{}",
            r.bitrate_bps.max(1),
            r.codec,
            r.id,
            suffix(token)
        );
    }
    any.then_some(out)
}

/// The key route's path for `m`'s content key (`None` for a clear track).
#[must_use]
pub fn key_path(m: &Manifest) -> Option<String> {
    m.protection.as_ref().map(|p| crate::route::key(&m.track_id, &p.key_id))
}

/// The media playlist of a CMAF rendition `r` of `m`. `None` for raw renditions.
#[must_use]
pub fn media(m: &Manifest, r: &Rendition, token: Option<&str>) -> Option<String> {
    if !playable(r) {
        return None;
    }
    let q = suffix(token);
    let target = r.segments.iter().map(|s| s.duration_ms.div_ceil(1000)).max().unwrap_or(1).max(1);
    let mut out = format!(
        "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:{target}\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-INDEPENDENT-SEGMENTS\n"
    );
    if let Some(init) = &r.init {
        let _ = writeln!(out, "#EXT-X-MAP:URI=\"{}{q}\"", crate::route::chunk(&init.id, Some("mp4")));
    }
    let key = key_path(m);
    for s in &r.segments {
        if let (Some(key), Some(iv)) = (&key, s.iv) {
            let _ = writeln!(out, "#EXT-X-KEY:METHOD=AES-128,URI=\"{key}{q}\",IV=0x{iv}");
        }
        let uri = crate::route::chunk(&s.id, Some("m4s"));
        let _ = writeln!(out, "#EXTINF:{}.{:03},\n{uri}{q}", s.duration_ms / 1000, s.duration_ms % 1000);
    }
    out.push_str("#EXT-X-ENDLIST\n");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{ChunkRef, Segment};
    use crate::{ChunkId, RenditionId, TrackId};

    #[test]
    fn media_playlist_lists_exactly_the_chunks() {
        let seg = |n: u8, d| Segment { id: ChunkId::of(&[n]), size: 100, duration_ms: d, iv: None };
        let r = Rendition {
            id: RenditionId::parse("aac-96").unwrap(),
            codec: "mp4a.40.2".into(),
            bitrate_bps: 96_000,
            container: Container::Cmaf,
            init: Some(ChunkRef { id: ChunkId::of(b"init"), size: 10 }),
            segments: vec![seg(1, 6014), seg(2, 5991), seg(3, 2018)],
        };
        let m = Manifest::new(TrackId::parse("t").unwrap(), String::new(), 14023, vec![r.clone()]);
        let p = media(&m, &r, Some("abc")).unwrap();
        assert!(!p.contains("EXT-X-KEY"));
        assert!(p.contains(&format!("#EXT-X-MAP:URI=\"/v1/chunks/{}.mp4?token=abc\"", ChunkId::of(b"init"))));
        assert!(p.contains("#EXTINF:6.014,\n"));
        assert!(p.contains("#EXT-X-TARGETDURATION:7\n"));
        let uris: Vec<_> = p.lines().filter(|l| l.starts_with("/v1/chunks/")).collect();
        assert_eq!(uris.len(), 3);
        let master = master(&m, None).unwrap();
        assert!(master.contains("CODECS=\"mp4a.40.2\"\naac-96.m3u8\n"));
    }

    #[test]
    fn a_protected_playlist_names_the_key_and_each_segments_iv_after_the_clear_init() {
        use crate::protect::{Iv, KeyId, Protection};
        let seg = |n: u8| Segment { id: ChunkId::of(&[n]), size: 112, duration_ms: 6000, iv: Some(Iv([n; 16])) };
        let r = Rendition {
            id: RenditionId::parse("aac-96").unwrap(),
            codec: "mp4a.40.2".into(),
            bitrate_bps: 96_000,
            container: Container::Cmaf,
            init: Some(ChunkRef { id: ChunkId::of(b"init"), size: 10 }),
            segments: vec![seg(1), seg(2)],
        };
        let mut m = Manifest::new(TrackId::parse("t").unwrap(), String::new(), 12000, vec![r.clone()]);
        m.protection = Some(Protection::new(KeyId::parse("0123456789abcdef").unwrap()));
        let p = media(&m, &r, Some("tok")).unwrap();
        let lines: Vec<&str> = p.lines().collect();
        let map = lines.iter().position(|l| l.starts_with("#EXT-X-MAP")).unwrap();
        let keys: Vec<usize> = (0..lines.len()).filter(|&i| lines[i].starts_with("#EXT-X-KEY")).collect();
        assert_eq!(keys.len(), 2);
        assert!(map < keys[0], "the init segment is clear: its map comes before any key");
        assert_eq!(
            lines[keys[1]],
            format!(
                "#EXT-X-KEY:METHOD=AES-128,URI=\"/v1/tracks/t/keys/0123456789abcdef?token=tok\",IV=0x{}",
                "02".repeat(16)
            )
        );
        assert!(lines[keys[1] + 2].starts_with("/v1/chunks/"));
    }
}
