//! `chorus origin`: serve a chunk store.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use chorus_core::keys;
use chorus_core::units::Size;
use chorus_http::{ListenUrl, Server};
use chorus_origin::metrics::OriginMetrics;
use chorus_origin::store::{Location, Options};
use chorus_origin::{ApiConfig, Origin, Store};
use clap::Args;
use tracing::info;

#[derive(Args)]
pub(crate) struct OriginArgs {
    /// The store: a directory (created if missing), or s3://BUCKET[/PREFIX] in an S3-compatible
    /// object store that several origins share. The store's endpoint, region and credentials
    /// come from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (or
    /// the AWS shared config and credentials files, profile AWS_PROFILE); requests use path-style
    /// URLs unless AWS_VIRTUAL_HOSTED_STYLE_REQUEST=true.
    #[arg(long, value_name = "DIR|s3://BUCKET[/PREFIX]")]
    store: Location,
    /// Where content keys of protected tracks live (a directory, or s3://BUCKET/PREFIX of a
    /// bucket apart from the catalogue's). Default: inside a directory store; none for an
    /// object store, which then serves and ingests only unprotected tracks.
    #[arg(long, value_name = "DIR|s3://BUCKET[/PREFIX]")]
    key_store: Option<Location>,
    /// With an object store: memory for the read-through cache of verified chunks (0: none).
    #[arg(long, value_name = "SIZE", default_value = "256MiB")]
    cache_mem_size: Size,
    /// With an object store: a directory for a disk tier under the memory cache (kept across
    /// restarts, every file verified when read); without it the cache is memory only.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Size of that disk tier.
    #[arg(long, value_name = "SIZE", default_value = "10GiB")]
    cache_disk_size: Size,
    /// A local directory for uploads in progress, encoder output and a generated certificate,
    /// with an object store (default: a new temporary directory, removed at exit).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Where to listen: http://HOST:PORT (HTTP/1.1, h2c), https://HOST:PORT (TLS, h2 and
    /// http/1.1), h3://HOST:PORT (HTTP/3). Repeat for several.
    #[arg(long, value_name = "URL", value_delimiter = ',', default_value = "http://127.0.0.1:8080")]
    listen: Vec<ListenUrl>,
    /// The manifest signing key (default for a directory store: STORE/origin.key, created on
    /// first use with STORE/origin.pub beside it, the key clients pin). An origin on an object
    /// store needs it only to accept uploads (--admin-token): the key never goes in the bucket.
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// Shared secret for the admin API (PUT /admin/tracks/{track}), at least 32 bytes; without
    /// it the admin API is disabled. Wrong tokens are slowed: 5, then one every 10 s per address.
    #[arg(long, value_name = "T", value_parser = crate::serve_args::admin_secret)]
    admin_token: Option<String>,
    /// Read the admin token from FILE instead (its one line), e.g. a systemd credential or a
    /// mounted Kubernetes Secret.
    #[arg(long, value_name = "FILE", value_parser = crate::serve_args::admin_secret_file, conflicts_with = "admin_token")]
    admin_token_file: Option<String>,
    /// Token public key (token.pub): the key route of protected tracks
    /// (/v1/tracks/T/keys/K) answers requests whose access token covers the track, such as the
    /// edges' own tokens (their --upstream-token-file). Without it no content key is served.
    /// The rest of the read API stays open, as before.
    #[arg(long, value_name = "FILE")]
    token_key: Option<PathBuf>,
    #[command(flatten)]
    token_expect: crate::serve_args::TokenExpectArgs,
    /// Largest upload accepted by the admin API.
    #[arg(long, value_name = "SIZE", default_value = "2GiB")]
    max_upload_size: Size,
    #[command(flatten)]
    serve: crate::serve_args::ServeArgs,
}

pub(crate) async fn run(a: OriginArgs) -> Result<()> {
    // Settings that do not go together fail before anything starts.
    let server_config = a.serve.server_config()?;
    if matches!(a.store, Location::Dir(_)) {
        // A directory store has no cache of its own (the OS page cache is one) and stages in
        // STORE/tmp: these would be silently ignored.
        if a.cache_dir.is_some() {
            anyhow::bail!(
                "--cache-dir is the cache of an object store (--store s3://…); a directory store is read from its own disk"
            );
        }
        if a.work_dir.is_some() {
            anyhow::bail!(
                "--work-dir is for an object store (--store s3://…); a directory store stages uploads in STORE/tmp"
            );
        }
    }
    let metrics = OriginMetrics::new();
    let opts = Options {
        cache: chorus_cache::CacheConfig {
            mem_bytes: a.cache_mem_size.0,
            disk_bytes: if a.cache_dir.is_some() { a.cache_disk_size.0 } else { 0 },
            dir: a.cache_dir.clone(),
            prefetch: false,
        },
        key_store: a.key_store.clone(),
        work_dir: a.work_dir.clone(),
        metrics: metrics.store.clone(),
    };
    let env = |k: &str| std::env::var(k).ok();
    let store = Store::open(&a.store, opts, &env).await.with_context(|| format!("opening store {}", a.store))?;
    let admin = a.admin_token.is_some() || a.admin_token_file.is_some();
    let key = match (&a.signing_key, store.default_key_path()) {
        (Some(p), _) => Some(keys::read_signing_key(p)?),
        (None, Some(priv_path)) => {
            let pub_path = priv_path.with_extension("pub");
            let (key, created) = keys::load_or_create(&priv_path, &pub_path)?;
            if created {
                info!(public_key = %pub_path.display(), "created a manifest signing key; clients pin its public half with --origin-key");
            }
            Some(key)
        }
        (None, None) if admin => anyhow::bail!(
            "--store {} with --admin-token needs --signing-key FILE: uploads are signed, and the signing key is kept out of the bucket",
            a.store
        ),
        (None, None) => None,
    };
    match &key {
        Some(key) => info!(key_id = %keys::key_id(&key.verifying_key()), "manifests are signed with this key"),
        None => info!(store = %a.store, "no signing key: this origin serves the store and accepts no uploads"),
    }

    let local = store.dir().unwrap_or_else(|| store.work_dir()).to_owned();
    let cert = a.serve.certificate(&a.listen, &local)?;
    server_config.metrics.register(&metrics.registry);
    let server = Server::bind(&a.listen, cert.as_ref(), server_config).await?;
    a.serve.reload_certificate(server.certificate(), &local);

    let api = ApiConfig {
        admin_token: a.admin_token.clone().or_else(|| a.admin_token_file.clone()),
        max_upload_bytes: a.max_upload_size.0,
        body_idle_timeout: a.serve.idle_timeout.0.min(ApiConfig::default().body_idle_timeout),
        token_key: a.token_key.as_deref().map(keys::read_verifying_key).transpose()?,
        token_expect: a.token_expect.expect(),
    };
    if api.token_key.is_none() {
        info!("no --token-key: content keys of protected tracks are not served");
    }
    if api.admin_token.is_none() {
        info!("admin API disabled (no --admin-token or --admin-token-file)");
    }
    let origin = Arc::new(Origin::new(store, key, api, metrics));
    origin.spawn_upkeep();
    a.serve.serve(server, origin).await
}
