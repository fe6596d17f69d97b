//! `chorus get`: fetch one URL over HTTP/1.1, HTTP/2 or HTTP/3, the way an operator uses curl,
//! with chunk verification: a `/v1/chunks/{id}` body must hash to `{id}`.

use chorus_core::route::Route;
use chorus_core::url::BaseUrl;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chorus_http::client::HttpClient;
use chorus_http::serve::parse_chunk_segment;
use chorus_http::tls::ClientTls;
use clap::Args;

#[derive(Args)]
pub(crate) struct GetArgs {
    /// The URL: http://HOST:PORT/PATH (HTTP/1.1), https://… (HTTP/2 or 1.1 by ALPN),
    /// h3://HOST:PORT/PATH (HTTP/3).
    #[arg(value_name = "URL")]
    url: String,
    /// Write the body to FILE instead of stdout.
    #[arg(long, short, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Speak HTTP/2 without TLS (h2c) to an http:// URL.
    #[arg(long)]
    h2c: bool,
    /// Extra root certificate (PEM) to trust, e.g. an origin's STORE/tls/cert.pem.
    #[arg(long, value_name = "FILE", value_delimiter = ',')]
    ca: Vec<PathBuf>,
    /// Skip TLS certificate checks (testing only).
    #[arg(long)]
    insecure: bool,
    /// An access token, sent as Authorization: Bearer.
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Request timeout.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    timeout: chorus_core::units::Span,
}

pub(crate) fn run(a: GetArgs) -> Result<()> {
    let (base, path) = BaseUrl::split(&a.url)?;
    let trust = ClientTls { ca_files: a.ca.clone(), insecure: a.insecure };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let started = Instant::now();
    let (resp, protocol) = rt.block_on(async {
        let client = HttpClient::new(&trust)?.with_timeout(a.timeout.0.max(Duration::from_millis(1)));
        let mut conn = client.connect(&base, a.h2c).await?;
        let mut req = http::Request::get(path);
        if let Some(t) = &a.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = conn.send(req.body(bytes::Bytes::new())?).await?;
        anyhow::Ok((resp, conn.protocol()))
    })?;
    let elapsed = started.elapsed();
    let body = resp.body();
    eprintln!(
        "{} {} over {}, {} bytes in {:.1} ms",
        resp.status().as_u16(),
        resp.status().canonical_reason().unwrap_or(""),
        protocol.as_str(),
        body.len(),
        elapsed.as_secs_f64() * 1000.0
    );
    if let Some(Route::Chunk { chunk: seg }) = Route::parse(path.split('?').next().unwrap_or(path))
        && resp.status() == http::StatusCode::OK
        && let Ok((id, _)) = parse_chunk_segment(seg)
    {
        if id.matches(body) {
            eprintln!("verified: BLAKE3 of the body is the chunk id");
        } else {
            bail!("the body does NOT hash to chunk id {id}: corrupted in transit or by the server");
        }
    }
    match &a.out {
        Some(p) => std::fs::write(p, body).with_context(|| format!("writing {}", p.display()))?,
        None => std::io::stdout().write_all(body)?,
    }
    if !resp.status().is_success() {
        bail!("server answered {}", resp.status());
    }
    Ok(())
}
