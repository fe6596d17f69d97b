//! Asking ffprobe what a file is.

use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use super::IngestError;

/// What ffprobe found.
#[derive(Debug, Clone, Copy)]
pub(super) struct Probe {
    /// Duration in ms.
    pub(super) duration_ms: u64,
    /// The container's overall bitrate, if known.
    pub(super) bitrate_bps: Option<u64>,
}

#[derive(Deserialize)]
struct Out {
    #[serde(default)]
    streams: Vec<Stream>,
    format: Option<Format>,
}

#[derive(Deserialize)]
struct Stream {
    codec_type: Option<String>,
}

#[derive(Deserialize)]
struct Format {
    duration: Option<String>,
    bit_rate: Option<String>,
}

/// `path` as ffmpeg's `file:` URL of the absolute path, so a name like `Live: Set.flac` is not
/// taken for a protocol, and nothing but local files can be read (with `-protocol_whitelist`).
pub(super) fn file_url(path: &Path) -> Result<std::ffi::OsString, IngestError> {
    let abs = std::fs::canonicalize(path).map_err(|source| IngestError::Read { path: path.to_owned(), source })?;
    let mut url = std::ffi::OsString::from("file:");
    url.push(abs.as_os_str());
    Ok(url)
}

/// Whether a program can be started (`ffmpeg`, `ffprobe`).
pub(super) fn available(program: &str) -> bool {
    Command::new(program).arg("-version").output().is_ok_and(|o| o.status.success())
}

/// Probes `path`, requiring an audio stream.
///
/// # Errors
/// [`IngestError::FfmpegMissing`] without ffprobe; [`IngestError::NotAudio`] when the file has
/// no audio stream or is not a media file at all.
pub(super) fn probe(path: &Path) -> Result<Probe, IngestError> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-protocol_whitelist",
            "file",
            "-show_entries",
            "stream=codec_type:format=duration,bit_rate",
            "-of",
            "json",
        ])
        .arg(file_url(path)?)
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                IngestError::FfmpegMissing
            } else {
                IngestError::Tool { what: "running ffprobe", source: e }
            }
        })?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        let first = msg.lines().next().unwrap_or("ffprobe cannot read it").trim();
        return Err(IngestError::NotAudio(format!("{}: {first}", path.display())));
    }
    let parsed: Out = serde_json::from_slice(&out.stdout).map_err(IngestError::Ffprobe)?;
    if !parsed.streams.iter().any(|s| s.codec_type.as_deref() == Some("audio")) {
        return Err(IngestError::NotAudio(format!("{}: no audio stream", path.display())));
    }
    let format =
        parsed.format.ok_or_else(|| IngestError::NotAudio(format!("{}: no container format", path.display())))?;
    let duration_ms = format
        .duration
        .and_then(|d| d.parse::<f64>().ok())
        .filter(|d| d.is_finite() && *d > 0.0)
        // Anything over a week is a lie in the file's header, not audio.
        .filter(|d| *d < 7.0 * 86_400.0)
        .map(|d| (d * 1000.0).round() as u64)
        .ok_or_else(|| IngestError::NotAudio(format!("{}: no duration (empty or truncated?)", path.display())))?;
    let bitrate_bps = format.bit_rate.and_then(|b| b.parse().ok());
    Ok(Probe { duration_ms, bitrate_bps })
}
