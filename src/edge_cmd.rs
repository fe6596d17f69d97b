//! `chorus edge`: run an edge cache node.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use chorus_core::http::tls::ClientTls;
use chorus_core::http::{ListenUrl, Server};
use chorus_core::keys;
use chorus_core::units::{Size, Span};
use chorus_edge::cache::CacheConfig;
use chorus_edge::metrics::EdgeMetrics;
use chorus_edge::prefetch::PrefetchConfig;
use chorus_edge::tracker::TrackerConfig;
use chorus_edge::upstream::UpstreamConfig;
use chorus_edge::{Edge, EdgeConfig};
use clap::Args;
use tracing::info;

/// Checks an upstream URL: `http://`, `https://` or `h3://` with a host and a port, no path.
fn upstream_url(s: &str) -> Result<String, String> {
    let err = || format!("invalid upstream URL {s:?}: expected http://HOST:PORT, https://HOST:PORT or h3://HOST:PORT");
    let (scheme, rest) = s.split_once("://").ok_or_else(err)?;
    let rest = rest.trim_end_matches('/');
    let port_ok = rest.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
    if !matches!(scheme, "http" | "https" | "h3") || rest.contains('/') || !port_ok {
        return Err(err());
    }
    Ok(format!("{scheme}://{rest}"))
}

#[derive(Args)]
pub(crate) struct EdgeArgs {
    /// Origin to fetch misses from (http://, https:// or h3://HOST:PORT); repeat for several,
    /// tried in order.
    #[arg(long, value_name = "URL", value_delimiter = ',', required = true, value_parser = upstream_url)]
    upstream: Vec<String>,
    /// Parent edge, chosen per chunk by consistent hashing and tried before the origins.
    #[arg(long, value_name = "URL", value_delimiter = ',', value_parser = upstream_url)]
    parent: Vec<String>,
    /// Where to listen: http://, https://, h3://HOST:PORT. Repeat for several.
    #[arg(long, value_name = "URL", value_delimiter = ',', default_value = "http://127.0.0.1:8081")]
    listen: Vec<ListenUrl>,
    /// Directory of the disk cache (kept across restarts); without it the edge is memory-only.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Size of the disk cache.
    #[arg(long, value_name = "SIZE", default_value = "10GiB")]
    cache_disk_size: Size,
    /// Size of the memory cache.
    #[arg(long, value_name = "SIZE", default_value = "512MiB")]
    cache_mem_size: Size,
    /// Token public key (token.pub): when given, every /v1/ request needs a valid access token.
    #[arg(long, value_name = "FILE")]
    token_key: Option<PathBuf>,
    /// Shared secret for /admin/purge and /admin/prewarm; without it they are disabled.
    #[arg(long, value_name = "T")]
    admin_token: Option<String>,
    /// The origin's public key (origin.pub): when given, manifests that do not verify are refused.
    #[arg(long, value_name = "FILE")]
    origin_key: Option<PathBuf>,
    /// Extra root certificate (PEM) to trust for https:// and h3:// upstreams.
    #[arg(long, value_name = "FILE", value_delimiter = ',')]
    ca: Vec<PathBuf>,
    /// Skip certificate checks of upstreams (chunks are still verified by their hashes).
    #[arg(long)]
    insecure: bool,
    /// Segments prefetched after each segment request (0: off).
    #[arg(long, value_name = "N", default_value_t = 3)]
    prefetch_segments: usize,
    /// Prefetch fetches at once, at most.
    #[arg(long, value_name = "N", default_value_t = 8)]
    prefetch_concurrency: usize,
    /// Time limit of one attempt at one upstream.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    upstream_timeout: Span,
    /// Time limit of connecting to an upstream; one that cannot be reached is marked down
    /// until its health check passes.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    upstream_connect_timeout: Span,
    /// How often upstreams' /healthz is checked.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    health_interval: Span,
    #[command(flatten)]
    serve: crate::serve_args::ServeArgs,
}

pub(crate) async fn run(a: EdgeArgs) -> Result<()> {
    let token_key = a.token_key.as_deref().map(keys::read_verifying_key).transpose()?;
    let origin_key = a.origin_key.as_deref().map(keys::read_verifying_key).transpose()?;
    if let Some(dir) = &a.cache_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating cache directory {}", dir.display()))?;
    } else {
        info!("no --cache-dir: memory-only cache");
    }
    // Self-signed TLS material lives in the cache directory, or a temporary one.
    let mut _tls_tmp = None;
    let cert_dir = match &a.cache_dir {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::tempdir().context("making a directory for the self-signed certificate")?;
            let p = t.path().to_owned();
            _tls_tmp = Some(t);
            p
        }
    };
    let cert = a.serve.certificate(&a.listen, &cert_dir)?;
    let cfg = EdgeConfig {
        origins: a.upstream.clone(),
        parents: a.parent.clone(),
        trust: ClientTls { ca_files: a.ca.clone(), insecure: a.insecure },
        cache: CacheConfig { mem_bytes: a.cache_mem_size.0, disk_bytes: a.cache_disk_size.0, dir: a.cache_dir.clone() },
        upstream: UpstreamConfig {
            timeout: a.upstream_timeout.0,
            connect_timeout: a.upstream_connect_timeout.0,
            health_interval: a.health_interval.0,
            ..UpstreamConfig::default()
        },
        prefetch: PrefetchConfig {
            segments_ahead: a.prefetch_segments,
            concurrency: a.prefetch_concurrency,
            ..PrefetchConfig::default()
        },
        tracker: TrackerConfig::default(),
        manifests: 4096,
        token_key,
        admin_token: a.admin_token.clone(),
        origin_key,
    };
    if cfg.token_key.is_some() {
        info!("access tokens required on /v1/");
    }
    let edge = Edge::new(cfg, EdgeMetrics::new()).await.map_err(anyhow::Error::msg)?;
    let server = Server::bind(&a.listen, cert.as_ref(), a.serve.server_config()).await?;
    info!(upstreams = ?a.upstream, parents = ?a.parent, "edge starting");
    edge.spawn_background();
    server.serve(Arc::new(edge), crate::origin_cmd::shutdown_signal()).await;
    Ok(())
}
