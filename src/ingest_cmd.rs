//! `chorus ingest`: encode or import audio into a store, or upload it to a running origin.

use chorus_core::route::Route;
use chorus_core::url::BaseUrl;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use chorus_core::TrackId;
use chorus_core::keys;
use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;
use chorus_origin::Store;
use chorus_origin::ingest::{self, IngestRequest, Mode, Progress};
use chorus_origin::metrics::StoreMetrics;
use chorus_origin::store::{Location, Options};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

#[derive(Args)]
pub(crate) struct IngestArgs {
    /// The audio source file, HLS playlist, or HLS/CMAF package directory.
    #[arg(value_name = "FILE")]
    input: PathBuf,
    /// The track id to publish under ([A-Za-z0-9_-], up to 64 characters).
    #[arg(long, value_name = "ID")]
    track: TrackId,
    /// The track's title (default: an HLS package's title.txt, else the track id).
    #[arg(long, value_name = "T")]
    title: Option<String>,
    /// Bitrates to encode, in kbit/s (encode mode).
    #[arg(long, value_name = "KBPS,…", value_delimiter = ',', default_values_t = ingest::DEFAULT_LADDER_KBPS.to_vec())]
    ladder: Vec<u32>,
    /// auto (hls for a directory or .m3u8, else encode), encode (ffmpeg), hls (import a
    /// CMAF package as it is), raw (cut a pre-encoded file into byte chunks).
    #[arg(long, value_name = "MODE", default_value = "auto")]
    mode: Mode,
    /// Encrypt the track (AES-128, a new key each time: re-ingesting rotates it). Edges and
    /// peers then carry ciphertext; only listeners whose token covers the track get the key,
    /// from an edge started with --token-key (docs/protocol.md §3.7).
    #[arg(long)]
    protect: bool,
    /// The store to ingest into (not with --origin): a directory, or s3://BUCKET[/PREFIX]
    /// (endpoint, region and credentials as for `chorus origin --store`).
    #[arg(
        long,
        value_name = "DIR|s3://BUCKET[/PREFIX]",
        required_unless_present = "origin",
        conflicts_with = "origin"
    )]
    store: Option<Location>,
    /// Where a protected track's content key goes (default: inside a directory store; an
    /// object store needs this for --protect).
    #[arg(long, value_name = "DIR|s3://BUCKET[/PREFIX]", conflicts_with = "origin")]
    key_store: Option<Location>,
    /// The signing key (default for a directory store: STORE/origin.key, created on first
    /// use; an object store needs it given).
    #[arg(long, value_name = "FILE", conflicts_with = "origin")]
    signing_key: Option<PathBuf>,
    /// Local directory for encoder output, with an object store (default: a temporary one).
    #[arg(long, value_name = "DIR", conflicts_with = "origin")]
    work_dir: Option<PathBuf>,
    /// Upload to a running origin instead (e.g. http://127.0.0.1:8080); needs --admin-token
    /// or --admin-token-file.
    #[arg(long, value_name = "URL", requires = "admin")]
    origin: Option<BaseUrl>,
    /// The origin's admin token (with --origin).
    #[arg(long, value_name = "T", group = "admin", value_parser = crate::serve_args::admin_token)]
    admin_token: Option<String>,
    /// Read the origin's admin token from FILE instead (its one line).
    #[arg(long, value_name = "FILE", group = "admin", value_parser = crate::serve_args::admin_token_file)]
    admin_token_file: Option<String>,
    /// Extra root certificate (PEM) to trust for an https:// or h3:// origin.
    #[arg(long, value_name = "FILE", value_delimiter = ',')]
    ca: Vec<PathBuf>,
    /// Skip TLS certificate checks for the origin (testing only).
    #[arg(long)]
    insecure: bool,
}

/// Draws ingest progress as a bar on stderr (hidden when stderr is not a terminal).
struct Bar(ProgressBar);

impl Progress for Bar {
    fn stage(&self, name: &str, total: Option<u64>) {
        let template = match (name, total) {
            ("encoding", Some(_)) => "{msg:>9} [{bar:30}] {percent:>3}% of the audio, {elapsed} elapsed, ~{eta} left",
            (_, Some(_)) => "{msg:>9} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
            _ => "{msg:>9} {spinner}",
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            self.0.set_style(style.progress_chars("=> "));
        }
        self.0.set_message(name.to_owned());
        self.0.set_length(total.unwrap_or(0));
        self.0.set_position(0);
        self.0.enable_steady_tick(Duration::from_millis(200));
    }

    fn position(&self, pos: u64) {
        self.0.set_position(pos);
    }
}

pub(crate) fn run(a: IngestArgs) -> Result<()> {
    if let Some(origin) = &a.origin {
        return upload(&a, origin);
    }
    let Some(location) = &a.store else { bail!("give --store DIR, or --origin URL to upload") };
    // An object store is reached asynchronously: ingest runs on this thread inside a runtime.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let _in_runtime = rt.enter();
    let opts = Options {
        cache: chorus_cache::CacheConfig { mem_bytes: 0, disk_bytes: 0, dir: None, prefetch: false },
        key_store: a.key_store.clone(),
        work_dir: a.work_dir.clone(),
        metrics: StoreMetrics::unregistered(prometheus_counter()),
    };
    let env = |k: &str| std::env::var(k).ok();
    let store = rt.block_on(Store::open(location, opts, &env)).with_context(|| format!("opening store {location}"))?;
    let key = match (&a.signing_key, store.default_key_path()) {
        (Some(p), _) => keys::read_signing_key(p)?,
        (None, Some(p)) => keys::load_or_create(&p, &p.with_extension("pub"))?.0,
        (None, None) => bail!(
            "--store {location} needs --signing-key FILE: the signing key is kept out of the bucket (`chorus keys generate --out DIR` writes one: DIR/origin.key)"
        ),
    };
    let req = IngestRequest {
        track: a.track.clone(),
        title: a.title.clone(),
        ladder_kbps: a.ladder.clone(),
        mode: a.mode,
        input: a.input.clone(),
        protect: a.protect,
    };
    let bar = Bar(ProgressBar::new(0));
    let result = ingest::ingest(&store, &key, &req, &bar);
    bar.0.finish_and_clear();
    let report = result?;
    println!(
        "{} {}: {} renditions ({}), {} chunks ({} new), {:.1} MiB, {:.1} s{}{}",
        if report.unchanged { "unchanged" } else { "published" },
        report.track_id,
        report.renditions.len(),
        report.renditions.join(", "),
        report.chunks,
        report.new_chunks,
        report.bytes as f64 / 1_048_576.0,
        report.duration_ms as f64 / 1000.0,
        if report.unchanged { " (identical manifest already published)" } else { "" },
        report.key_id.as_ref().map(|k| format!(", protected (key {k})")).unwrap_or_default()
    );
    Ok(())
}

fn upload(a: &IngestArgs, origin: &BaseUrl) -> Result<()> {
    if a.insecure {
        bail!(
            "--insecure would send the admin token to whoever answers; trust the origin's certificate with --ca instead"
        );
    }
    if a.mode == Mode::Hls || a.input.is_dir() {
        bail!("--origin uploads one file; import an HLS package directory with --store on the origin's host");
    }
    let body = std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let mut query = format!("mode={}", if a.mode == Mode::Raw { "raw" } else { "encode" });
    query.push_str(&format!("&ladder={}", a.ladder.iter().map(u32::to_string).collect::<Vec<_>>().join(",")));
    if a.protect {
        query.push_str("&protect=1");
    }
    if let Some(t) = &a.title {
        query.push_str("&title=");
        query.push_str(&percent_encode(t));
    }
    let token = a.admin_token.clone().or_else(|| a.admin_token_file.clone()).unwrap_or_default();
    let trust = ClientTls { ca_files: a.ca.clone(), insecure: a.insecure };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let resp = rt.block_on(async {
        // Encoding takes a while on the origin: allow for it.
        let client = HttpClient::new(&trust)?.with_timeout(Duration::from_secs(30 * 60));
        let mut conn = client.connect(origin, false).await?;
        let req = http::Request::put(format!("{}?{query}", Route::Ingest { track: a.track.as_str() }))
            .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
            .body(bytes::Bytes::from(body))?;
        anyhow::Ok(conn.send(req).await?)
    })?;
    let text = String::from_utf8_lossy(resp.body());
    if !resp.status().is_success() {
        let msg = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| text.to_string());
        bail!("origin answered {}: {msg}", resp.status());
    }
    println!("{text}");
    Ok(())
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A counter for metrics nobody reads (a one-off ingest exports none).
#[allow(clippy::expect_used)] // constant, valid options
fn prometheus_counter() -> prometheus::IntCounter {
    prometheus::IntCounter::new("unused", "unused").expect("valid metric")
}
