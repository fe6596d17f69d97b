//! `encode` mode: ffmpeg turns a source file into an AAC-LC ladder of time-aligned CMAF
//! segments, which is then imported like any HLS package.
//!
//! Why AAC-LC in fMP4: it is the one audio codec every HLS player decodes (Safari, hls.js,
//! ExoPlayer, ffmpeg), and ffmpeg's native encoder ships everywhere. Renditions share a sample
//! rate (44.1 kHz), so AAC frames (1024 samples) fall at the same instants in every rendition
//! and the muxer cuts every rendition at the same frame boundaries. Renditions below 48 kbit/s
//! are mono, which is what such bitrates can carry well. ffmpeg runs with `+bitexact` and no
//! metadata, so the same input gives the same bytes, and re-ingesting is idempotent.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use chorus_core::RenditionId;

use super::{IngestError, Plan, Progress, hls, probe};
use crate::store::Store;

/// The default ladder in kbit/s, like Spotify's (low, normal, high, very high).
pub const DEFAULT_LADDER_KBPS: &[u32] = &[24, 96, 160, 320];

/// Target segment length. ffmpeg cuts at the first frame boundary after it.
pub const SEGMENT_SECONDS: u32 = 6;

/// Encodes `input` into a temporary directory in the store's work directory (a directory store's `tmp/`) and plans its import.
/// The directory is returned so it lives until the chunks are stored.
pub(super) fn plan(
    store: &Store,
    input: &Path,
    ladder: &[u32],
    progress: &dyn Progress,
) -> Result<(tempfile::TempDir, Plan), IngestError> {
    let ladder: Vec<u32> = if ladder.is_empty() { DEFAULT_LADDER_KBPS.to_vec() } else { ladder.to_vec() };
    if ladder.len() > chorus_core::manifest::limits::MAX_RENDITIONS || ladder.iter().any(|k| !(8..=512).contains(k)) {
        return Err(IngestError::Input(format!(
            "ladder {ladder:?}: give 1 to {} bitrates, each 8 to 512 kbit/s",
            chorus_core::manifest::limits::MAX_RENDITIONS
        )));
    }
    let mut seen = std::collections::HashSet::new();
    if !ladder.iter().all(|k| seen.insert(*k)) {
        return Err(IngestError::Input(format!("ladder {ladder:?} repeats a bitrate")));
    }
    if !probe::available("ffmpeg") || !probe::available("ffprobe") {
        return Err(IngestError::FfmpegMissing);
    }
    progress.stage("probing", None);
    let info = probe::probe(input)?;

    let dir = tempfile::Builder::new()
        .prefix("encode-")
        .tempdir_in(store.work_dir())
        .map_err(|source| IngestError::Tool { what: "making a work directory", source })?;
    let out = dir.path();
    let names: Vec<String> = ladder.iter().map(|k| format!("aac-{k}")).collect();

    let mut cmd = Command::new("ffmpeg");
    cmd.args([
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-nostats",
        "-progress",
        "pipe:1",
        "-y",
        "-protocol_whitelist",
        "file",
        "-i",
    ])
    .arg(probe::file_url(input)?)
    .args(ladder.iter().flat_map(|_| ["-map", "0:a:0"]))
    .args(["-c:a", "aac", "-ar", "44100"]);
    for (i, kbps) in ladder.iter().enumerate() {
        cmd.arg(format!("-b:a:{i}")).arg(format!("{kbps}k"));
        cmd.arg(format!("-ac:a:{i}")).arg(if *kbps < 48 { "1" } else { "2" });
    }
    let var_stream_map = names.iter().enumerate().map(|(i, n)| format!("a:{i},name:{n}")).collect::<Vec<_>>().join(" ");
    cmd.args(["-fflags", "+bitexact", "-flags:a", "+bitexact", "-map_metadata", "-1"])
        .args(["-f", "hls", "-hls_time", &SEGMENT_SECONDS.to_string(), "-hls_playlist_type", "vod"])
        .args(["-hls_segment_type", "fmp4", "-hls_fmp4_init_filename", "init.mp4"])
        .arg("-hls_segment_filename")
        .arg(out.join("%v").join("seg%05d.m4s"))
        .args(["-master_pl_name", "master.m3u8", "-var_stream_map", &var_stream_map])
        .arg(out.join("%v").join("index.m3u8"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());

    progress.stage("encoding", Some(info.duration_ms));
    let mut child = cmd.spawn().map_err(|source| IngestError::Tool { what: "starting ffmpeg", source })?;
    // Drain stderr on a thread so a chatty ffmpeg cannot block on a full pipe.
    let stderr = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            s
        })
    });
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(us) = line.strip_prefix("out_time_us=").and_then(|v| v.trim().parse::<u64>().ok()) {
                progress.position((us / 1000).min(info.duration_ms));
            }
        }
    }
    let status = child.wait().map_err(|source| IngestError::Tool { what: "waiting for ffmpeg", source })?;
    let errors = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if !status.success() {
        let first = errors.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(IngestError::Ffmpeg(format!("{status}: {first}")));
    }
    progress.position(info.duration_ms);

    let mut plan = hls::plan(&out.join("master.m3u8"))?;
    // Name and rate renditions by the ladder rather than by what the playlist measured.
    for r in &mut plan.renditions {
        if let Some(kbps) = r.id.as_str().strip_prefix("aac-").and_then(|k| k.parse::<u64>().ok()) {
            r.bitrate_bps = kbps * 1000;
        }
    }
    if plan.renditions.len() != ladder.len() {
        return Err(IngestError::Ffmpeg(format!(
            "expected {} renditions, ffmpeg made {}",
            ladder.len(),
            plan.renditions.len()
        )));
    }
    debug_assert!(plan.renditions.iter().all(|r| RenditionId::parse(r.id.as_str()).is_ok()));
    plan.duration_ms = Some(info.duration_ms);
    Ok((dir, plan))
}
