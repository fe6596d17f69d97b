//! Ingest: turning audio into chunks and a signed manifest in the [`Store`].
//!
//! Three modes ([`Mode`]), one pipeline:
//!
//! ```text
//!  encode: source file ──ffprobe, ffmpeg──▶ HLS/CMAF ladder in STORE/tmp ─┐
//!  hls:    an existing HLS/CMAF package ───────────────────────────────────┼─▶ Plan (pieces of files)
//!  raw:    one pre-encoded file ──cut into 256 KiB pieces─────────────────┘        │
//!        hash every piece ─▶ build + validate + sign the manifest ─▶ write chunks ─▶ publish manifest
//! ```
//!
//! Nothing is written to the store until the manifest has been built and validated, so a bad
//! input (not audio, unreadable, misaligned renditions) leaves the store unchanged. Chunks are
//! written before the manifest that names them, so a reader never sees a manifest whose chunks
//! are missing. Re-ingesting the same input gives the same chunks and the same manifest bytes
//! (ffmpeg runs bit-exact, signing is deterministic): the report then says `unchanged`.
//!
//! A protected ingest ([`IngestRequest::protect`]) encrypts every media segment under a new
//! content key, each with its own random IV, before hashing (chunk ids name the ciphertext),
//! and writes the key to the store after the chunks and before the manifest: a reader never
//! sees a manifest whose key is missing. Every protected ingest makes a new key (rotation); the
//! previous key is kept for manifests still cached, older ones are removed.

mod encode;
mod hls;
mod probe;
mod raw;

use std::fs::File;
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use chorus_core::keys::SigningKey;
use chorus_core::manifest::{self, ChunkRef, Container, Manifest, ManifestError, Rendition, Segment};
use chorus_core::protect::{self, ContentKey, Iv, KeyId, Protection};
use chorus_core::{ChunkId, RenditionId, TrackId};
use serde::Serialize;

use crate::store::{Store, StoreError, Writer};

pub use encode::{DEFAULT_LADDER_KBPS, SEGMENT_SECONDS};
pub use raw::RAW_CHUNK_BYTES;

/// The HLS importer's playlist parser on `bytes`, for the fuzz targets (`fuzz/`): `true` when
/// they parse as a playlist. Not part of the API.
#[doc(hidden)]
#[must_use]
pub fn fuzz_hls_playlist(bytes: &[u8]) -> bool {
    hls::parse_playlist(std::path::Path::new("fuzz.m3u8"), bytes).is_ok()
}

/// How to read the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// `hls` for a directory or `.m3u8`, `encode` for anything else.
    #[default]
    Auto,
    /// Encode a source file with ffmpeg into an AAC ladder of CMAF segments.
    Encode,
    /// Import an existing HLS package with fMP4 (CMAF) segments, as it is.
    Hls,
    /// Cut one pre-encoded file into byte chunks (a `raw` rendition).
    Raw,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "encode" => Ok(Self::Encode),
            "hls" => Ok(Self::Hls),
            "raw" => Ok(Self::Raw),
            _ => Err(format!("unknown ingest mode {s:?}: expected auto, encode, hls or raw")),
        }
    }
}

/// What to ingest.
#[derive(Debug, Clone)]
pub struct IngestRequest {
    /// The track id to publish under.
    pub track: TrackId,
    /// The title; defaults to the track id.
    pub title: Option<String>,
    /// Bitrates in kbit/s for `encode` (default [`DEFAULT_LADDER_KBPS`]).
    pub ladder_kbps: Vec<u32>,
    /// How to read the input.
    pub mode: Mode,
    /// The source file, HLS playlist or package directory.
    pub input: PathBuf,
    /// Encrypt the media segments under a new content key (docs/protocol.md §3.7): only
    /// holders of a token covering the track can then play it, from edges or from peers.
    pub protect: bool,
}

/// What an ingest did.
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    /// The track.
    pub track_id: TrackId,
    /// The mode actually used.
    pub mode: &'static str,
    /// Rendition ids, lowest bitrate first.
    pub renditions: Vec<String>,
    /// Chunks the manifest names.
    pub chunks: usize,
    /// Chunks that were not in the store before.
    pub new_chunks: usize,
    /// Bytes of all chunks.
    pub bytes: u64,
    /// The track's duration.
    pub duration_ms: u64,
    /// Whether the published manifest is byte-identical to the one already there.
    pub unchanged: bool,
    /// The content key's id, for a protected track.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

/// Why an ingest failed. Nothing was published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The input cannot be used as given (the user's to fix); the text says what is wrong.
    #[error("{0}")]
    Input(String),
    /// An input file cannot be read (the user's to fix).
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A name made from the input is not a valid id.
    #[error(transparent)]
    Name(#[from] chorus_core::IdError),
    /// The input is not audio (or not a format we can read).
    #[error("not an audio file we can ingest: {0}")]
    NotAudio(String),
    /// `encode` needs ffmpeg and ffprobe, which are not installed.
    #[error(
        "ffmpeg is not installed, and encoding a source file needs it: install it (e.g. `apt-get install ffmpeg`), or ingest an already encoded file with --mode raw, or an HLS/CMAF package with --mode hls"
    )]
    FfmpegMissing,
    /// ffmpeg failed; the text is what it said.
    #[error("ffmpeg failed: {0}")]
    Ffmpeg(String),
    /// Running ffmpeg or ffprobe, or the work directory it needs, failed.
    #[error("{what}")]
    Tool {
        /// What was being done ("starting ffmpeg").
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// ffprobe printed something other than the JSON it was asked for.
    #[error("unexpected ffprobe output")]
    Ffprobe(#[source] serde_json::Error),
    /// The resulting manifest breaks a rule (e.g. renditions not time-aligned).
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Reading the input or writing the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl IngestError {
    /// Whether the input is at fault (answered as a 4xx), rather than the server.
    #[must_use]
    pub const fn is_input_error(&self) -> bool {
        matches!(self, Self::Input(_) | Self::Read { .. } | Self::Name(_) | Self::NotAudio(_) | Self::Manifest(_))
    }
}

/// Receives progress; the CLI draws a bar, the server logs.
pub trait Progress: Sync {
    /// A new stage begins (`encoding`, `hashing`, `storing`), with its total if known.
    fn stage(&self, name: &str, total: Option<u64>);
    /// Position within the stage.
    fn position(&self, pos: u64);
}

/// Progress that goes nowhere.
pub struct NoProgress;

impl Progress for NoProgress {
    fn stage(&self, _: &str, _: Option<u64>) {}
    fn position(&self, _: u64) {}
}

/// A byte range of a file that becomes one chunk.
#[derive(Debug, Clone)]
struct Piece {
    path: PathBuf,
    offset: u64,
    len: u64,
}

impl Piece {
    fn whole(path: &Path) -> Result<Self, IngestError> {
        let len = std::fs::metadata(path).map_err(|source| IngestError::Read { path: path.to_owned(), source })?.len();
        Ok(Self { path: path.to_owned(), offset: 0, len })
    }

    fn read(&self) -> Result<Vec<u8>, IngestError> {
        let err = |source: std::io::Error| IngestError::Read { path: self.path.clone(), source };
        if self.len == 0 || self.len > manifest::limits::MAX_CHUNK_BYTES {
            return Err(IngestError::Input(format!(
                "{}: a chunk of {} bytes (a chunk must be 1 byte to {} MiB; use shorter segments)",
                self.path.display(),
                self.len,
                manifest::limits::MAX_CHUNK_BYTES >> 20
            )));
        }
        let mut f = File::open(&self.path).map_err(err)?;
        f.seek(SeekFrom::Start(self.offset)).map_err(err)?;
        let mut buf = Vec::with_capacity(usize::try_from(self.len).unwrap_or(0));
        f.take(self.len).read_to_end(&mut buf).map_err(err)?;
        if buf.len() as u64 != self.len {
            return Err(IngestError::Input(format!("{}: file is shorter than its playlist says", self.path.display())));
        }
        Ok(buf)
    }
}

/// A rendition before hashing.
#[derive(Debug, Clone)]
struct PlannedRendition {
    id: RenditionId,
    codec: String,
    bitrate_bps: u64,
    container: Container,
    init: Option<Piece>,
    segments: Vec<(Piece, u64)>,
}

/// What the input turned into: renditions made of file pieces.
#[derive(Debug, Default)]
struct Plan {
    renditions: Vec<PlannedRendition>,
    /// The track's duration when known better than the sum of segment durations.
    duration_ms: Option<u64>,
}

/// Ingests `req` into `store`, signing the manifest with `key`.
///
/// # Errors
/// [`IngestError`]; the store then holds no new manifest (at most unreferenced chunks, if
/// writing failed halfway).
pub fn ingest(
    store: &Store,
    key: &SigningKey,
    req: &IngestRequest,
    progress: &dyn Progress,
) -> Result<IngestReport, IngestError> {
    let writer = store.writer()?;
    if req.protect && !writer.keeps_keys() {
        return Err(StoreError::NoKeyStore(store.name().to_owned()).into());
    }
    let mode = match req.mode {
        Mode::Auto if req.input.is_dir() || req.input.extension().is_some_and(|e| e == "m3u8") => Mode::Hls,
        Mode::Auto => Mode::Encode,
        m => m,
    };
    if !req.input.exists() {
        return Err(IngestError::Input(format!("{}: no such file or directory", req.input.display())));
    }
    // The encoder's output lives in a temporary directory that must outlive the commit.
    let mut _encoded = None;
    let (plan, mode_name) = match mode {
        Mode::Hls => (hls::plan(&req.input)?, "hls"),
        Mode::Raw => (raw::plan(&req.input)?, "raw"),
        Mode::Encode | Mode::Auto => {
            let (dir, plan) = encode::plan(store, &req.input, &req.ladder_kbps, progress)?;
            _encoded = Some(dir);
            (plan, "encode")
        }
    };
    if req.title.is_none()
        && matches!(mode, Mode::Hls)
        && let Some(title) = package_title(&req.input)
    {
        let req = IngestRequest { title: Some(title), ..req.clone() };
        return commit(&writer, key, &req, plan, mode_name, progress);
    }
    commit(&writer, key, req, plan, mode_name, progress)
}

/// The title an HLS package directory names in its `title.txt` (first line, trimmed), if it
/// has one that fits a manifest.
fn package_title(dir: &Path) -> Option<String> {
    if !dir.is_dir() {
        return None;
    }
    let file = dir.join("title.txt");
    // Bounded: a title is short, and a huge or binary file is ignored, not read.
    if std::fs::metadata(&file).ok()?.len() > 4096 {
        return None;
    }
    let text = std::fs::read_to_string(&file).ok()?;
    let title = text.lines().next()?.trim();
    (!title.is_empty() && title.len() <= chorus_core::manifest::limits::MAX_TITLE).then(|| title.to_owned())
}

fn commit(
    store: &Writer<'_>,
    key: &SigningKey,
    req: &IngestRequest,
    plan: Plan,
    mode: &'static str,
    progress: &dyn Progress,
) -> Result<IngestReport, IngestError> {
    let mut renditions = plan.renditions;
    renditions.sort_by_key(|r| r.bitrate_bps);
    let total: u64 =
        renditions.iter().flat_map(|r| r.init.iter().chain(r.segments.iter().map(|(p, _)| p))).map(|p| p.len).sum();

    // A protected track: a new key, and an IV for every media segment (init chunks stay clear).
    let protection = req.protect.then(|| (KeyId::generate(), ContentKey::generate()));
    let ivs: Vec<Vec<Option<Iv>>> = renditions
        .iter()
        .map(|r| r.segments.iter().map(|_| protection.as_ref().map(|_| Iv::generate())).collect())
        .collect();
    // The bytes a piece becomes in the store: as read, or encrypted under the track's key.
    let stored = |p: &Piece, iv: Option<Iv>| -> Result<Vec<u8>, IngestError> {
        let bytes = p.read()?;
        Ok(match (&protection, iv) {
            (Some((_, key)), Some(iv)) => protect::encrypt(key, &iv, &bytes),
            _ => bytes,
        })
    };

    // Pass 1: hash every piece and build the manifest; nothing is written yet.
    progress.stage("hashing", Some(total));
    let mut done = 0u64;
    let mut hash = |p: &Piece, iv: Option<Iv>| -> Result<ChunkRef, IngestError> {
        let bytes = stored(p, iv)?;
        done += p.len;
        progress.position(done);
        Ok(ChunkRef { id: ChunkId::of(&bytes), size: bytes.len() as u64 })
    };
    let mut built = Vec::with_capacity(renditions.len());
    for (r, ivs) in renditions.iter().zip(&ivs) {
        let init = r.init.as_ref().map(|p| hash(p, None)).transpose()?;
        let mut segments = Vec::with_capacity(r.segments.len());
        for ((p, duration_ms), iv) in r.segments.iter().zip(ivs) {
            let c = hash(p, *iv)?;
            segments.push(Segment { id: c.id, size: c.size, duration_ms: *duration_ms, iv: *iv });
        }
        built.push(Rendition {
            id: r.id.clone(),
            codec: r.codec.clone(),
            bitrate_bps: r.bitrate_bps,
            container: r.container,
            init,
            segments,
        });
    }
    let duration_ms = plan.duration_ms.unwrap_or_else(|| built.iter().map(Rendition::duration_ms).max().unwrap_or(0));
    let title = req.title.clone().unwrap_or_else(|| req.track.to_string());
    let mut manifest = Manifest::new(req.track.clone(), title, duration_ms, built);
    manifest.protection = protection.as_ref().map(|(id, _)| Protection::new(id.clone()));
    manifest.sign(key)?;
    let json = manifest.to_json()?;

    // Pass 2: write chunks (re-verified against pass 1, in case a file changed), then publish.
    progress.stage("storing", Some(total));
    let mut done = 0u64;
    let mut new_chunks = 0;
    for ((r, m), ivs) in renditions.iter().zip(&manifest.renditions).zip(&ivs) {
        let pieces = r.init.iter().map(|p| (p, None)).chain(r.segments.iter().map(|(p, _)| p).zip(ivs.iter().copied()));
        for ((p, iv), c) in pieces.zip(m.chunks()) {
            let bytes = stored(p, iv)?;
            let (id, new) = store.put_chunk(&bytes)?;
            if id != c.id {
                return Err(IngestError::Input(format!("{} changed while it was being ingested", p.path.display())));
            }
            new_chunks += usize::from(new);
            done += p.len;
            progress.position(done);
        }
    }
    let old = store.get_manifest(&req.track)?;
    let unchanged = old.as_ref().is_some_and(|old| *old == json);
    // The key before the manifest that names it; the key before this one is kept for a manifest
    // cached a few seconds more (edges keep them 10 s), older ones go.
    let previous_key =
        old.and_then(|doc| serde_json::from_slice::<Manifest>(&doc).ok()).and_then(|m| m.protection).map(|p| p.key_id);
    if let Some((id, key)) = &protection {
        store.put_key(&req.track, id, key)?;
    }
    if !unchanged {
        store.put_manifest(&req.track, &json)?;
    }
    let keep: Vec<&KeyId> = protection.iter().map(|(id, _)| id).chain(previous_key.iter()).collect();
    store.prune_keys(&req.track, &keep)?;
    Ok(IngestReport {
        track_id: req.track.clone(),
        mode,
        renditions: manifest.renditions.iter().map(|r| r.id.to_string()).collect(),
        chunks: manifest.chunks().count(),
        new_chunks,
        bytes: total,
        duration_ms,
        unchanged,
        key_id: protection.map(|(id, _)| id.to_string()),
    })
}
