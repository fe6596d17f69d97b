//! The routes of the HTTP API (docs/protocol.md §2): the one definition edges and origins route
//! requests by, and clients, playlists and tools build request paths from.
//!
//! [`Route::parse`] reads a request's path; `Display` writes it back, so the two cannot drift
//! apart. The segments are borrowed as they arrived: each handler validates the id it takes,
//! so a bad id gets its own clear 400 rather than a 404.

use std::fmt;

use crate::protect::KeyId;
use crate::{ChunkId, TrackId};

/// A route of the API, with the path segments it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// `/v1/tracks/{track}/manifest`: a track's signed manifest.
    Manifest {
        /// The track id as written.
        track: &'a str,
    },
    /// `/v1/chunks/{chunk}`: a chunk by id, with an optional `.m4s`/`.mp4` extension.
    Chunk {
        /// The id, and the extension if any.
        chunk: &'a str,
    },
    /// `/v1/tracks/{track}/hls/{file}`: an HLS playlist generated from the manifest.
    Hls {
        /// The track id as written.
        track: &'a str,
        /// `master.m3u8` or `RENDITION.m3u8`.
        file: &'a str,
    },
    /// `/v1/tracks/{track}/keys/{key}`: a protected track's content key.
    Key {
        /// The track id as written.
        track: &'a str,
        /// The key id as written.
        key: &'a str,
    },
    /// `/v1/tracks/{track}/peers` (edge): listeners holding a track.
    Peers {
        /// The track id as written.
        track: &'a str,
    },
    /// `/v1/peers/announce` (edge): a listener's signed announce.
    Announce,
    /// `/v1/qoe` (edge): a play's quality-of-experience beacon.
    Qoe,
    /// `/admin/purge` (edge).
    Purge,
    /// `/admin/prewarm` (edge).
    Prewarm,
    /// `/admin/tracks/{track}` (origin): an upload to ingest.
    Ingest {
        /// The track id as written.
        track: &'a str,
    },
    /// `/metrics`.
    Metrics,
    /// `/healthz`.
    Health,
    /// `/readyz`.
    Ready,
    /// `/` or `/player` (`None`, a redirect), or `/player/{file}` (edge).
    Player {
        /// The player's file (empty for `/player/`).
        file: Option<&'a str>,
    },
}

impl<'a> Route<'a> {
    /// The route of a request's `path` (without its query); `None` when it names no route.
    #[must_use]
    pub fn parse(path: &'a str) -> Option<Self> {
        let mut parts = path.trim_start_matches('/').split('/');
        let segments: [Option<&'a str>; 6] = std::array::from_fn(|_| parts.next());
        Some(match segments {
            [Some("v1"), Some("tracks"), Some(track), Some("manifest"), None, _] => Self::Manifest { track },
            [Some("v1"), Some("chunks"), Some(chunk), None, ..] => Self::Chunk { chunk },
            [Some("v1"), Some("tracks"), Some(track), Some("hls"), Some(file), None] => Self::Hls { track, file },
            [Some("v1"), Some("tracks"), Some(track), Some("keys"), Some(key), None] => Self::Key { track, key },
            [Some("v1"), Some("tracks"), Some(track), Some("peers"), None, _] => Self::Peers { track },
            [Some("v1"), Some("peers"), Some("announce"), None, ..] => Self::Announce,
            [Some("v1"), Some("qoe"), None, ..] => Self::Qoe,
            [Some("admin"), Some("purge"), None, ..] => Self::Purge,
            [Some("admin"), Some("prewarm"), None, ..] => Self::Prewarm,
            [Some("admin"), Some("tracks"), Some(track), None, ..] => Self::Ingest { track },
            [Some("metrics"), None, ..] => Self::Metrics,
            [Some("healthz"), None, ..] => Self::Health,
            [Some("readyz"), None, ..] => Self::Ready,
            [Some("" | "player"), None, ..] => Self::Player { file: None },
            [Some("player"), Some(file), None, ..] => Self::Player { file: Some(file) },
            _ => return None,
        })
    }

    /// The route's name in the `route` label of the request metrics.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Self::Manifest { .. } => "manifest",
            Self::Chunk { .. } => "chunk",
            Self::Hls { file: "master.m3u8", .. } => "hls_master",
            Self::Hls { .. } => "hls_media",
            Self::Key { .. } => "key",
            Self::Peers { .. } => "peers",
            Self::Announce => "announce",
            Self::Qoe => "qoe",
            Self::Purge => "purge",
            Self::Prewarm => "prewarm",
            Self::Ingest { .. } => "admin_ingest",
            Self::Metrics => "metrics",
            Self::Health => "healthz",
            Self::Ready => "readyz",
            Self::Player { .. } => "player",
        }
    }

    /// Whether this is the read API players fetch from other sites (CORS applies): manifests,
    /// playlists, content keys and chunks, each naming what it reads. Not the tracker's lists
    /// (they name listeners' addresses), the announce or the beacon.
    #[must_use]
    pub const fn is_read_api(&self) -> bool {
        match self {
            Self::Manifest { track } => !track.is_empty(),
            Self::Chunk { chunk } => !chunk.is_empty(),
            Self::Hls { track, file } | Self::Key { track, key: file } => !track.is_empty() && !file.is_empty(),
            _ => false,
        }
    }
}

/// Whether `path` is under `/v1/`, the API that needs an access token when tokens are on (a
/// path that names no route included: it gets its 404 only with a valid token).
#[must_use]
pub fn is_api(path: &str) -> bool {
    path.trim_start_matches('/').split('/').next() == Some("v1")
}

/// The name of a request that took no route (or was refused before it did), in the metrics.
pub const OTHER: &str = "other";

impl fmt::Display for Route<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Manifest { track } => write!(f, "/v1/tracks/{track}/manifest"),
            Self::Chunk { chunk } => write!(f, "/v1/chunks/{chunk}"),
            Self::Hls { track, file } => write!(f, "/v1/tracks/{track}/hls/{file}"),
            Self::Key { track, key } => write!(f, "/v1/tracks/{track}/keys/{key}"),
            Self::Peers { track } => write!(f, "/v1/tracks/{track}/peers"),
            Self::Announce => f.write_str("/v1/peers/announce"),
            Self::Qoe => f.write_str("/v1/qoe"),
            Self::Purge => f.write_str("/admin/purge"),
            Self::Prewarm => f.write_str("/admin/prewarm"),
            Self::Ingest { track } => write!(f, "/admin/tracks/{track}"),
            Self::Metrics => f.write_str("/metrics"),
            Self::Health => f.write_str("/healthz"),
            Self::Ready => f.write_str("/readyz"),
            Self::Player { file: None } => f.write_str("/player"),
            Self::Player { file: Some(file) } => write!(f, "/player/{file}"),
        }
    }
}

/// The path of `track`'s manifest.
#[must_use]
pub fn manifest(track: &TrackId) -> String {
    Route::Manifest { track: track.as_str() }.to_string()
}

/// The path of chunk `id`, with `ext` (`m4s`, `mp4`) when given.
#[must_use]
pub fn chunk(id: &ChunkId, ext: Option<&str>) -> String {
    let name = match ext {
        Some(ext) => format!("{id}.{ext}"),
        None => id.to_string(),
    };
    Route::Chunk { chunk: &name }.to_string()
}

/// The path of `track`'s content key `key`.
#[must_use]
pub fn key(track: &TrackId, key: &KeyId) -> String {
    Route::Key { track: track.as_str(), key: key.as_str() }.to_string()
}

/// The path of the listeners holding `track`.
#[must_use]
pub fn peers(track: &TrackId) -> String {
    Route::Peers { track: track.as_str() }.to_string()
}

/// The track a `/v1/tracks/TRACK/…` URL or path names (a next-track hint's `nor`), if any.
#[must_use]
pub fn track_of(url: &str) -> Option<&str> {
    let rest = url.split("/v1/tracks/").nth(1)?;
    rest.split('/').next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_reads_back_what_it_writes() {
        let all = [
            Route::Manifest { track: "t" },
            Route::Chunk { chunk: "ab.m4s" },
            Route::Hls { track: "t", file: "master.m3u8" },
            Route::Key { track: "t", key: "0123" },
            Route::Peers { track: "t" },
            Route::Announce,
            Route::Qoe,
            Route::Purge,
            Route::Prewarm,
            Route::Ingest { track: "t" },
            Route::Metrics,
            Route::Health,
            Route::Ready,
            Route::Player { file: None },
            Route::Player { file: Some("app.js") },
        ];
        for r in all {
            assert_eq!(Route::parse(&r.to_string()), Some(r), "{r}");
        }
        assert_eq!(Route::parse("/"), Some(Route::Player { file: None }));
        assert_eq!(Route::parse("/player/"), Some(Route::Player { file: Some("") }));
    }

    #[test]
    fn other_paths_take_no_route() {
        for none in [
            "/v1",
            "/v1/",
            "/v1/tracks/t",
            "/v1/tracks/t/manifest/x",
            "/v1/chunks/a/b",
            "/v1/tracks/t/hls",
            "/v1/tracks/t/hls/a/b",
            "/v1/tracks/t/keys",
            "/v1/peers",
            "/admin",
            "/admin/tracks/t/x",
            "/metrics/x",
            "/player/a/b",
            "/elsewhere",
        ] {
            assert_eq!(Route::parse(none), None, "{none}");
        }
    }

    #[test]
    fn the_read_api_is_what_players_fetch() {
        for read in
            ["/v1/tracks/t/manifest", "/v1/tracks/t/hls/master.m3u8", "/v1/chunks/abc.m4s", "/v1/tracks/t/keys/0"]
        {
            assert!(Route::parse(read).is_some_and(|r| r.is_read_api()), "{read}");
        }
        for not in ["/v1/tracks/t/peers", "/v1/peers/announce", "/v1/qoe", "/v1/chunks/", "/v1/tracks//manifest"] {
            assert!(!Route::parse(not).is_some_and(|r| r.is_read_api()), "{not}");
        }
        assert!(is_api("/v1/nothing") && !is_api("/metrics") && !is_api("/v1x"));
    }

    #[test]
    fn names_are_the_metric_labels() {
        assert_eq!(Route::Hls { track: "t", file: "master.m3u8" }.name(), "hls_master");
        assert_eq!(Route::Hls { track: "t", file: "aac-96.m3u8" }.name(), "hls_media");
        assert_eq!(Route::Ingest { track: "t" }.name(), "admin_ingest");
    }

    #[test]
    fn typed_paths() {
        let t = TrackId::parse("song-1").unwrap();
        let id = ChunkId::of(b"x");
        assert_eq!(manifest(&t), "/v1/tracks/song-1/manifest");
        assert_eq!(chunk(&id, Some("m4s")), format!("/v1/chunks/{id}.m4s"));
        assert_eq!(chunk(&id, None), format!("/v1/chunks/{id}"));
        assert_eq!(key(&t, &KeyId::parse("0123456789abcdef").unwrap()), "/v1/tracks/song-1/keys/0123456789abcdef");
        assert_eq!(peers(&t), "/v1/tracks/song-1/peers");
        assert_eq!(track_of("https://e:1/v1/tracks/song-2/manifest"), Some("song-2"));
        assert_eq!(track_of("/v1/chunks/x"), None);
    }
}
