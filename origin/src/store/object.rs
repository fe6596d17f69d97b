//! The object store backend: the directory store's layout as the keys of an S3 bucket.
//!
//! ```text
//! s3://BUCKET/PREFIX/
//!   chunks/ab/abcdef…(64 hex)   one object per chunk, named by the BLAKE3 of its bytes
//!   manifests/<track>.json      the signed manifest, exactly as served
//!   keys/<track>/<key_id>       content keys, only in the bucket --key-store names
//! ```
//!
//! An S3 PUT is atomic (the object appears whole or not at all), so no torn object is ever
//! read. Requests go through `object_store`'s client: signed (SigV4), retried with backoff on 5xx
//! and connection errors, and each bounded by a deadline of ours, tight for reads (a listener is
//! waiting: [`READ_DEADLINE`]) and patient for writes (an ingest: [`WRITE_DEADLINE`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_core::ChunkId;
use futures_util::StreamExt as _;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as Key;
use object_store::{BackoffConfig, ClientOptions, ObjectStore as _, ObjectStoreExt as _, RetryConfig};
use tokio::time::Instant;
use tracing::warn;

use super::StoreError;
use super::profile;
use crate::metrics::StoreMetrics;

/// The longest a read (a chunk, a manifest, a key) may take, retries included, before the
/// origin answers 503: under the edges' upstream timeout (5 s), so an edge has time to try its
/// next upstream.
pub const READ_DEADLINE: Duration = Duration::from_secs(3);
/// The longest a write or listing may take, retries included.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(60);

/// A bucket (and prefix) of an S3-compatible store.
#[derive(Clone)]
pub struct ObjectBackend {
    /// Tight timeouts and few retries: someone is waiting.
    reads: Arc<AmazonS3>,
    /// Patient timeouts and more retries: an ingest.
    writes: Arc<AmazonS3>,
    prefix: String,
    name: Arc<str>,
    metrics: StoreMetrics,
}

impl std::fmt::Debug for ObjectBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBackend").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ObjectBackend {
    /// A backend for `bucket`/`prefix`, configured from `env` (the process environment: the
    /// `AWS_*` variables) and the AWS shared files. Makes no request.
    ///
    /// # Errors
    /// [`StoreError::Config`] when the settings are unusable (a bad endpoint URL, an unreadable
    /// shared file, an unknown profile).
    pub fn new(
        bucket: &str,
        prefix: &str,
        env: &dyn Fn(&str) -> Option<String>,
        metrics: StoreMetrics,
    ) -> Result<Self, StoreError> {
        let name: Arc<str> =
            if prefix.is_empty() { format!("s3://{bucket}").into() } else { format!("s3://{bucket}/{prefix}").into() };
        let config = |reason: String| StoreError::Config { store: name.to_string(), reason };
        let shared = profile::load(env).map_err(|e| config(chorus_core::error::Chain(&e).to_string()))?;
        // The AWS_* variables first (as `AmazonS3Builder::from_env` reads them), then what the
        // shared files add where the environment says nothing.
        let mut settings: Vec<(AmazonS3ConfigKey, String)> = Vec::new();
        for (k, v) in env_vars(env) {
            if let Ok(key) = k.to_ascii_lowercase().parse() {
                settings.push((key, v));
            }
        }
        for (k, v) in &shared.settings {
            let key = k.parse().map_err(|e| config(format!("{k}: {e}")))?;
            settings.push((key, v.clone()));
        }
        let value = |key: &AmazonS3ConfigKey| settings.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let endpoint = value(&AmazonS3ConfigKey::Endpoint).or(value(&AmazonS3ConfigKey::S3Endpoint));
        let mut allow_http = false;
        if let Some(e) = endpoint {
            if !(e.starts_with("https://") || e.starts_with("http://")) {
                return Err(config(format!("the endpoint {e:?} (AWS_ENDPOINT_URL) is not an http:// or https:// URL")));
            }
            if e.starts_with("http://") {
                // The operator wrote http:// on purpose (a store on a private network).
                warn!(endpoint = %e, "the object store's endpoint is plain http: requests are signed, but data crosses the network unencrypted");
                allow_http = true;
            }
        }
        if value(&AmazonS3ConfigKey::Region).or(value(&AmazonS3ConfigKey::DefaultRegion)).is_none() {
            return Err(config(
                "no region: set AWS_REGION (a self-hosted store names its own, e.g. `garage`), or `region` in the AWS config file".into(),
            ));
        }
        let build = |timeout: Duration, retries: usize, within: Duration| {
            let options = ClientOptions::new()
                .with_timeout(timeout)
                .with_connect_timeout(Duration::from_secs(1))
                .with_allow_http(allow_http);
            let mut b = AmazonS3Builder::new().with_client_options(options);
            for (k, v) in &settings {
                b = b.with_config(*k, v);
            }
            b.with_bucket_name(bucket)
                .with_retry(RetryConfig {
                    backoff: BackoffConfig {
                        init_backoff: Duration::from_millis(50),
                        max_backoff: Duration::from_secs(1),
                        base: 2.0,
                    },
                    max_retries: retries,
                    retry_timeout: within,
                })
                .build()
                .map_err(|e| config(root_cause(&e)))
        };
        let reads = build(Duration::from_secs(2), 3, READ_DEADLINE)?;
        let writes = build(Duration::from_secs(20), 6, WRITE_DEADLINE)?;
        Ok(Self { reads: Arc::new(reads), writes: Arc::new(writes), prefix: prefix.to_owned(), name, metrics })
    }

    /// `s3://BUCKET/PREFIX`, for logs and errors.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key of `rel` (`chunks/ab/…`) under the prefix.
    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() { Key::from(rel) } else { Key::from(format!("{}/{rel}", self.prefix)) }
    }

    /// The key of chunk `id`.
    #[must_use]
    pub fn chunk_key(id: &ChunkId) -> String {
        let hex = id.to_hex();
        format!("chunks/{}/{hex}", &hex[..2])
    }

    /// Runs store request `op` within `deadline`, timing and counting it.
    async fn call<T>(
        &self,
        op: &'static str,
        deadline: Duration,
        what: &str,
        fut: impl Future<Output = object_store::Result<T>>,
    ) -> Result<Option<T>, StoreError> {
        let started = Instant::now();
        let r = tokio::time::timeout(deadline, fut).await;
        self.metrics.seconds.with_label_values(&[op]).observe(started.elapsed().as_secs_f64());
        let (outcome, r) = match r {
            Ok(Ok(v)) => ("ok", Ok(Some(v))),
            Ok(Err(object_store::Error::NotFound { .. })) => ("not_found", Ok(None)),
            Ok(Err(
                e @ (object_store::Error::PermissionDenied { .. } | object_store::Error::Unauthenticated { .. }),
            )) => (
                "denied",
                Err(StoreError::Denied {
                    store: self.name.to_string(),
                    op,
                    what: what.to_owned(),
                    detail: root_cause(&e),
                }),
            ),
            Ok(Err(e)) => {
                let detail = root_cause(&e);
                // Listings come back as generic errors whatever the status: read it from the text.
                if matches!(status_in(&detail), Some(401 | 403)) {
                    (
                        "denied",
                        Err(StoreError::Denied { store: self.name.to_string(), op, what: what.to_owned(), detail }),
                    )
                } else {
                    (
                        "error",
                        Err(StoreError::Unavailable {
                            store: self.name.to_string(),
                            op,
                            what: what.to_owned(),
                            detail,
                        }),
                    )
                }
            }
            Err(_) => (
                "timeout",
                Err(StoreError::TimedOut { store: self.name.to_string(), op, what: what.to_owned(), after: deadline }),
            ),
        };
        self.metrics.requests.with_label_values(&[op, outcome]).inc();
        r
    }

    /// Object `rel`, read whole; `Ok(None)` when absent. An object over `max` bytes is refused
    /// unread ([`StoreError::TooLarge`]).
    ///
    /// # Errors
    /// [`StoreError`]: the store did not answer in time, refused the credentials, or failed.
    pub async fn get(&self, rel: &str, max: u64) -> Result<Option<Bytes>, StoreError> {
        let key = self.key(rel);
        let store = self.reads.clone();
        let name = self.name.clone();
        let read = async move {
            let r = store.get(&key).await?;
            if r.meta.size > max {
                return Ok(Err(StoreError::TooLarge {
                    store: name.to_string(),
                    what: key.to_string(),
                    size: r.meta.size,
                }));
            }
            r.bytes().await.map(Ok)
        };
        match self.call("get", READ_DEADLINE, rel, read).await? {
            None => Ok(None),
            Some(Err(e)) => Err(e),
            Some(Ok(bytes)) => {
                self.metrics.bytes.with_label_values(&["read"]).inc_by(bytes.len() as u64);
                Ok(Some(bytes))
            }
        }
    }

    /// Whether object `rel` exists.
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn exists(&self, rel: &str) -> Result<bool, StoreError> {
        let key = self.key(rel);
        Ok(self.call("head", WRITE_DEADLINE, rel, self.writes.head(&key)).await?.is_some())
    }

    /// Writes object `rel` (atomically: readers see the old object or the new one, whole).
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn put(&self, rel: &str, bytes: Bytes) -> Result<(), StoreError> {
        let key = self.key(rel);
        let n = bytes.len() as u64;
        self.call("put", WRITE_DEADLINE, rel, self.writes.put(&key, bytes.into())).await?;
        self.metrics.bytes.with_label_values(&["written"]).inc_by(n);
        Ok(())
    }

    /// Removes object `rel`; `Ok(false)` when there was none.
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn delete(&self, rel: &str) -> Result<bool, StoreError> {
        let key = self.key(rel);
        let existed = self.exists(rel).await?;
        self.call("delete", WRITE_DEADLINE, rel, self.writes.delete(&key)).await?;
        Ok(existed)
    }

    /// The names (relative to `rel_dir`) of the objects under `rel_dir`, at most `limit`.
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn list(&self, rel_dir: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let dir = self.key(rel_dir);
        let stream = self.writes.list(Some(&dir));
        let names = async {
            let mut names = Vec::new();
            let mut stream = stream.take(limit);
            while let Some(meta) = stream.next().await {
                let meta = meta?;
                if let Some(rest) = meta.location.prefix_match(&dir) {
                    names.push(rest.map(|p| p.as_ref().to_owned()).collect::<Vec<_>>().join("/"));
                }
            }
            Ok(names)
        };
        Ok(self.call("list", WRITE_DEADLINE, rel_dir, names).await?.unwrap_or_default())
    }

    /// Checks the store answers, with the credentials, and the bucket exists: a listing of one
    /// object (a missing bucket is an error, where a HEAD could not tell it from a missing key).
    ///
    /// # Errors
    /// [`StoreError::NoBucket`], or what [`Self::get`] gives.
    pub async fn check(&self) -> Result<(), StoreError> {
        let dir = self.key("manifests");
        let mut stream = self.reads.list(Some(&dir)).take(1);
        let first = async move { stream.next().await.transpose() };
        match self.call("list", READ_DEADLINE, "manifests/", first).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(StoreError::NoBucket { store: self.name.to_string() }),
            // A listing's 404 is not mapped to "not found" by the client: S3 says NoSuchBucket.
            Err(StoreError::Unavailable { detail, .. }) if detail.contains("NoSuchBucket") => {
                Err(StoreError::NoBucket { store: self.name.to_string() })
            }
            Err(e) => Err(e),
        }
    }

    /// A cheap liveness probe for `/readyz`: a HEAD of a key that need not exist.
    ///
    /// # Errors
    /// As [`Self::get`].
    pub async fn probe(&self) -> Result<(), StoreError> {
        let key = self.key("readyz");
        self.call("head", READ_DEADLINE, "readyz", self.reads.head(&key)).await.map(drop)
    }
}

/// The `AWS_*` variables of `env`, as `AmazonS3Builder::from_env` would read them, but through
/// `env` (so tests can give their own).
fn env_vars(env: &dyn Fn(&str) -> Option<String>) -> Vec<(String, String)> {
    const VARS: &[&str] = &[
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT",
        "AWS_ENDPOINT_URL_S3",
        "AWS_VIRTUAL_HOSTED_STYLE_REQUEST",
        "AWS_ALLOW_HTTP",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_ROLE_SESSION_NAME",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
        "AWS_SKIP_SIGNATURE",
        "AWS_IMDSV1_FALLBACK",
        "AWS_METADATA_ENDPOINT",
    ];
    VARS.iter().filter_map(|k| env(k).filter(|v| !v.is_empty()).map(|v| ((*k).to_owned(), v))).collect()
}

/// What went wrong at the bottom of an object store error (its layers each repeat the layer
/// below), bounded for a log line or a response.
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    let mut s = last.to_string();
    if s.len() > 300 {
        let cut = (0..=300).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// The HTTP status an object store error's text names (`… status code: 403 Forbidden …`).
fn status_in(detail: &str) -> Option<u16> {
    let (_, rest) = detail.split_once("status code: ")?;
    rest.get(..3)?.parse().ok()
}
