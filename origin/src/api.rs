//! The origin's HTTP API (docs/protocol.md §3): the read API every node serves, plus the admin upload.

use chorus_core::error::Chain;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_core::TrackId;
use chorus_core::keys::{SigningKey, VerifyingKey};
use chorus_core::manifest::Manifest;
use chorus_core::protect::KeyId;
use chorus_core::route::{self, Route};
use chorus_core::token::TokenVerifier;
use chorus_http::body::{self, BodyError};
use chorus_http::hls as playlist;
use chorus_http::serve::{
    AdminGuard, chunk_response, if_none_match, is_read, key_response, method_not_allowed, parse_chunk_segment,
    query_param, verify_request,
};
use chorus_http::{Body, Handler, RequestContext, ResponseBody, empty, full, json, json_error};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use tokio::io::AsyncWriteExt as _;
use tracing::{error, info, warn};

use crate::ingest::{self, IngestError, IngestRequest, Mode, NoProgress};
use crate::metrics::OriginMetrics;
use crate::store::{Store, StoreError};

/// `Cache-Control` of manifests and playlists: short, so a re-ingested track shows up soon.
const SHORT_CACHE: &str = "public, max-age=10";
/// How often an origin on an object store checks that the store answers (`/readyz`).
pub const PROBE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Settings of the origin's API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Shared secret for `/admin/` endpoints; `None` disables them.
    pub admin_token: Option<String>,
    /// Largest upload accepted by `PUT /admin/tracks/{track}`.
    pub max_upload_bytes: u64,
    /// An upload that sends nothing for this long is cut off.
    pub body_idle_timeout: Duration,
    /// The token public key: the key route answers requests whose token covers the track (an
    /// edge's own token, or a listener's). `None`: no content key is served at all.
    pub token_key: Option<VerifyingKey>,
    /// The `aud` and `iss` key requests' tokens must carry, when set.
    pub token_expect: chorus_core::token::Expect,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            max_upload_bytes: 2 << 30,
            body_idle_timeout: Duration::from_secs(30),
            token_key: None,
            token_expect: chorus_core::token::Expect::default(),
        }
    }
}

/// The origin: a store, its signing key, and the API over them.
pub struct Origin {
    store: Store,
    /// Signs the manifests of uploads; `None` on an origin that only serves (the admin API then
    /// refuses uploads).
    key: Option<Arc<SigningKey>>,
    config: ApiConfig,
    metrics: OriginMetrics,
    /// Checks the tokens of key requests (from [`ApiConfig::token_key`]).
    tokens: Option<TokenVerifier>,
    /// Failed admin attempts, slowed per source.
    admin_guard: AdminGuard,
    /// One ingest at a time: ffmpeg takes the CPU, and manifest replacement stays ordered.
    ingest_lock: Arc<tokio::sync::Mutex<()>>,
}

impl Origin {
    /// An origin over `store`, signing uploads with `key`.
    #[must_use]
    pub fn new(store: Store, key: Option<SigningKey>, config: ApiConfig, metrics: OriginMetrics) -> Self {
        // Clock skew between token issuers and this origin: the edges' allowance.
        let tokens = config
            .token_key
            .as_ref()
            .and_then(|k| TokenVerifier::new(k, Duration::from_secs(60)).ok())
            .map(|v| v.expect(&config.token_expect));
        Self {
            store,
            key: key.map(Arc::new),
            config,
            metrics,
            tokens,
            admin_guard: AdminGuard::default(),
            ingest_lock: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// The metrics.
    #[must_use]
    pub const fn metrics(&self) -> &OriginMetrics {
        &self.metrics
    }

    /// The store.
    #[must_use]
    pub const fn store(&self) -> &Store {
        &self.store
    }

    /// Recounts tracks (and chunks, on a directory store) for the gauges, off the request path.
    pub async fn refresh_counts(&self) {
        match self.store.count().await {
            Ok((tracks, chunks)) => {
                self.metrics.tracks.set(i64::try_from(tracks).unwrap_or(i64::MAX));
                if let Some(chunks) = chunks {
                    self.metrics.chunks.set(i64::try_from(chunks).unwrap_or(i64::MAX));
                }
            }
            Err(e) => warn!(error = %Chain(&e), "counting the store failed"),
        }
    }

    /// Keeps the gauges and readiness current until the runtime ends: recounts now and then
    /// ([`Store::count_every`]), and probes an object store every [`PROBE_EVERY`] for `/readyz`.
    pub fn spawn_upkeep(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(me.store.count_every());
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                me.refresh_counts().await;
            }
        });
        if self.store.is_object() {
            let me = self.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(PROBE_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    every.tick().await;
                    me.store.probe().await;
                }
            });
        }
    }

    async fn route(&self, req: Request<Body>, source: std::net::IpAddr) -> (&'static str, Response<ResponseBody>) {
        let (req, body) = req.into_parts();
        let path = req.uri.path().to_owned();
        let method = req.method.clone();
        let not_found = || json_error(StatusCode::NOT_FOUND, format!("no such endpoint: {}", truncate(&path)));
        let Some(r) = Route::parse(&path) else { return (route::OTHER, not_found()) };
        let name = r.name();
        match r {
            Route::Manifest { .. } | Route::Chunk { .. } | Route::Hls { .. } | Route::Key { .. }
                if !is_read(&method) =>
            {
                (name, method_not_allowed("GET, HEAD"))
            }
            Route::Manifest { track } => (name, self.manifest(track, &req).await),
            Route::Chunk { chunk } => (name, self.chunk(chunk, &req).await),
            Route::Hls { track, file } => (name, self.playlist(track, file, &req).await),
            Route::Key { track, key } => (name, self.content_key(track, key, &req).await),
            Route::Metrics | Route::Health | Route::Ready if !is_read(&method) => {
                (route::OTHER, method_not_allowed("GET, HEAD"))
            }
            Route::Metrics => (name, chorus_http::metrics::response(&self.metrics.registry)),
            Route::Health => (name, full(StatusCode::OK, "text/plain", "ok\n")),
            Route::Ready => {
                // A directory is checked now (a stat); an object store by the last probe.
                let ok = if self.store.is_object() { self.store.is_up() } else { self.store.probe().await };
                let r = if ok {
                    full(StatusCode::OK, "text/plain", "ready\n")
                } else if self.store.is_object() {
                    json_error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("the object store {} does not answer", self.store.name()),
                    )
                } else {
                    json_error(StatusCode::SERVICE_UNAVAILABLE, "store directory unavailable")
                };
                (name, r)
            }
            Route::Ingest { track } => {
                let r = if method == Method::PUT {
                    self.upload(track, &req, body, source).await
                } else if method == Method::DELETE {
                    self.purge(track, &req, source).await
                } else {
                    method_not_allowed("PUT, DELETE")
                };
                (name, r)
            }
            Route::Peers { .. }
            | Route::Announce
            | Route::Qoe
            | Route::Purge
            | Route::Prewarm
            | Route::Player { .. } => (route::OTHER, not_found()),
        }
    }

    async fn manifest(&self, track: &str, req: &Parts) -> Response<ResponseBody> {
        let track = match TrackId::parse(track) {
            Ok(t) => t,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, Chain(&e)),
        };
        let doc = match self.load_manifest(&track).await {
            Ok(Some(d)) => d,
            Ok(None) => return json_error(StatusCode::NOT_FOUND, format!("unknown track {track}")),
            Err(e) => return store_failed(&e),
        };
        let etag = format!("\"{}\"", &blake3::hash(&doc).to_hex()[..32]);
        let not_modified = if_none_match(&req.headers, &etag);
        let mut resp = if not_modified {
            empty(StatusCode::NOT_MODIFIED)
        } else if req.method == Method::HEAD {
            let mut r = empty(StatusCode::OK);
            r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(doc.len()));
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r
        } else {
            full(StatusCode::OK, "application/json", doc)
        };
        let h = resp.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(SHORT_CACHE));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        resp
    }

    async fn load_manifest(&self, track: &TrackId) -> Result<Option<Bytes>, StoreError> {
        self.store.get_manifest(track).await
    }

    async fn chunk(&self, chunk: &str, req: &Parts) -> Response<ResponseBody> {
        let (id, content_type) = match parse_chunk_segment(chunk) {
            Ok(parsed) => parsed,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, Chain(&e)),
        };
        match self.store.get_chunk(&id).await {
            Ok(Some(bytes)) => chunk_response(&id, bytes, content_type, &req.method, &req.headers),
            Ok(None) => json_error(StatusCode::NOT_FOUND, format!("unknown chunk {id}")),
            Err(StoreError::Corrupt(id)) => {
                json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("chunk {id} is corrupt on this origin's disk"))
            }
            Err(e) => store_failed(&e),
        }
    }

    /// `GET /v1/tracks/{track}/keys/{key_id}`: a protected track's content key, to a request
    /// whose token covers the track; 403 when this origin checks no tokens (docs/protocol.md §3.7).
    async fn content_key(&self, track: &str, key_id: &str, req: &Parts) -> Response<ResponseBody> {
        let (track, key_id) = match (TrackId::parse(track), KeyId::parse(key_id)) {
            (Ok(t), Ok(k)) => (t, k),
            (Err(e), _) => return json_error(StatusCode::BAD_REQUEST, Chain(&e)),
            (_, Err(e)) => return json_error(StatusCode::BAD_REQUEST, Chain(&e)),
        };
        let Some(verifier) = &self.tokens else {
            return json_error(
                StatusCode::FORBIDDEN,
                "this origin serves no content keys: start it with --token-key to check the tokens of key requests",
            );
        };
        let claims = match verify_request(verifier, req) {
            Ok(c) => c,
            Err(unauthorized) => return unauthorized,
        };
        if !claims.allows(&track) {
            return json_error(StatusCode::FORBIDDEN, format!("this token does not cover track {track}"));
        }
        match self.store.get_key(&track, &key_id).await {
            Ok(Some(key)) => {
                info!(track = %track, key_id = %key_id, sub = claims.sub.as_deref().unwrap_or(""), "content key handed out");
                key_response(&key, &req.method)
            }
            Ok(None) => json_error(
                StatusCode::NOT_FOUND,
                format!("track {track} has no key {key_id} (rotated by a re-ingest: fetch the manifest again)"),
            ),
            Err(e) => store_failed(&e),
        }
    }

    async fn playlist(&self, track: &str, file: &str, req: &Parts) -> Response<ResponseBody> {
        let track = match TrackId::parse(track) {
            Ok(t) => t,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, Chain(&e)),
        };
        let Some(name) = file.strip_suffix(".m3u8") else {
            return json_error(StatusCode::NOT_FOUND, "playlists end in .m3u8");
        };
        let doc = match self.load_manifest(&track).await {
            Ok(Some(d)) => d,
            Ok(None) => return json_error(StatusCode::NOT_FOUND, format!("unknown track {track}")),
            Err(e) => return store_failed(&e),
        };
        // The origin trusts its own store: parse without re-verifying the signature.
        let m: Manifest = match serde_json::from_slice(&doc) {
            Ok(m) => m,
            Err(e) => {
                return json_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("stored manifest of {track} is unreadable: {e}"),
                );
            }
        };
        playlist::respond(&m, name, req.uri.query())
    }

    /// `DELETE /admin/tracks/{track}`: unpublishes a track (its manifest and content keys go;
    /// its chunks stay, other tracks may share them). Other origins on the same object store
    /// see it within [`crate::store::MANIFEST_TTL`], edges when their cached manifest expires.
    async fn purge(&self, track: &str, req: &Parts, source: std::net::IpAddr) -> Response<ResponseBody> {
        if let Err(r) = self.admin_guard.check(&req.headers, self.config.admin_token.as_deref(), "origin", source) {
            return r;
        }
        let track = match TrackId::parse(track) {
            Ok(t) => t,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, Chain(&e)),
        };
        let _guard = self.ingest_lock.lock().await;
        match self.store.delete_track(&track).await {
            Ok(true) => {
                info!(track = %track, "track purged");
                self.refresh_counts().await;
                json(StatusCode::OK, &serde_json::json!({ "track_id": track, "purged": true }))
            }
            Ok(false) => json_error(StatusCode::NOT_FOUND, format!("unknown track {track}")),
            Err(e) => store_failed(&e),
        }
    }

    async fn upload(&self, track: &str, req: &Parts, body: Body, source: std::net::IpAddr) -> Response<ResponseBody> {
        if let Err(r) = self.admin_guard.check(&req.headers, self.config.admin_token.as_deref(), "origin", source) {
            return r;
        }
        let Some(key) = self.key.clone() else {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "this origin has no signing key (--signing-key), so it cannot publish uploads",
            );
        };
        let track = match TrackId::parse(track) {
            Ok(t) => t,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, Chain(&e)),
        };
        let q = req.uri.query().map(str::to_owned);
        let mode = match query_param(q.as_deref(), "mode").as_deref().map(str::parse::<Mode>) {
            None => Mode::Encode,
            Some(Ok(Mode::Hls)) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "mode=hls imports a package directory; upload one file with mode=encode or mode=raw",
                );
            }
            Some(Ok(m)) => m,
            Some(Err(e)) => return json_error(StatusCode::BAD_REQUEST, e),
        };
        let ladder_kbps = match query_param(q.as_deref(), "ladder") {
            None => Vec::new(),
            Some(l) => match l.split(',').map(|k| k.trim().parse::<u32>()).collect::<Result<Vec<_>, _>>() {
                Ok(v) => v,
                Err(_) => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        "ladder is a list of kbit/s, e.g. ladder=24,96,160,320",
                    );
                }
            },
        };
        let protect = match query_param(q.as_deref(), "protect").as_deref() {
            None | Some("0" | "false") => false,
            Some("1" | "true") => true,
            Some(_) => return json_error(StatusCode::BAD_REQUEST, "protect is 1 or 0"),
        };
        let title = query_param(q.as_deref(), "title");
        if title.as_ref().is_some_and(|t| t.len() > chorus_core::manifest::limits::MAX_TITLE) {
            return json_error(StatusCode::BAD_REQUEST, "title too long");
        }

        // Stage the upload in the store's tmp/ (removed when dropped).
        let staged = match tempfile::Builder::new().prefix("upload-").tempfile_in(self.store.work_dir()) {
            Ok(f) => f,
            Err(e) => return internal(&e),
        };
        if let Err(resp) = self.receive(body, staged.path()).await {
            self.metrics.ingests.with_label_values(&["rejected"]).inc();
            return resp;
        }
        // The lock moves into the blocking task: if this request is cancelled (client gone,
        // shutdown), the ingest still runs to its end holding it.
        let guard = self.ingest_lock.clone().lock_owned().await;
        let request =
            IngestRequest { track: track.clone(), title, ladder_kbps, mode, input: staged.path().to_owned(), protect };
        let store = self.store.clone();
        let result = tokio::task::spawn_blocking(move || {
            let r = ingest::ingest(&store, &key, &request, &NoProgress);
            drop(staged);
            drop(guard);
            r
        })
        .await;
        let result = match result {
            Ok(r) => r,
            Err(e) => return internal(&e),
        };
        match result {
            Ok(report) => {
                let label = if report.unchanged { "unchanged" } else { "published" };
                self.metrics.ingests.with_label_values(&[label]).inc();
                info!(track = %track, chunks = report.chunks, new = report.new_chunks, unchanged = report.unchanged, "ingested upload");
                self.refresh_counts().await;
                json(if report.unchanged { StatusCode::OK } else { StatusCode::CREATED }, &report)
            }
            Err(e) if e.is_input_error() => {
                self.metrics.ingests.with_label_values(&["rejected"]).inc();
                json_error(StatusCode::UNPROCESSABLE_ENTITY, Chain(&e))
            }
            Err(e @ (IngestError::FfmpegMissing | IngestError::Store(StoreError::NoKeyStore(_)))) => {
                self.metrics.ingests.with_label_values(&["rejected"]).inc();
                json_error(StatusCode::NOT_IMPLEMENTED, Chain(&e))
            }
            Err(e) => {
                self.metrics.ingests.with_label_values(&["failed"]).inc();
                error!(track = %track, error = %Chain(&e), "ingest failed");
                json_error(StatusCode::INTERNAL_SERVER_ERROR, Chain(&e))
            }
        }
    }

    /// Streams a request body into `path`, bounded in size and time.
    async fn receive(&self, mut body: Body, path: &std::path::Path) -> Result<(), Response<ResponseBody>> {
        let mut file =
            tokio::fs::OpenOptions::new().write(true).truncate(true).open(path).await.map_err(|e| internal(&e))?;
        let (max, idle) = (self.config.max_upload_bytes, self.config.body_idle_timeout);
        if http_body::Body::size_hint(&body).lower() > max {
            return Err(json_error(StatusCode::PAYLOAD_TOO_LARGE, format!("upload larger than {max} bytes")));
        }
        let mut seen = 0;
        // An upload must keep up 16 KiB/s on average after its first 30 s: a byte now and then
        // does not hold the connection (and the one ingest at a time) for weeks.
        let floor = body::MinRate { bytes_per_sec: 16 * 1024, grace: Duration::from_secs(30) };
        let started = tokio::time::Instant::now();
        loop {
            let next = body::next_data(&mut body, &mut seen, max, idle)
                .await
                .and_then(|d| floor.check(seen, started.elapsed()).map(|()| d));
            match next {
                Ok(Some(data)) => file.write_all(&data).await.map_err(|e| internal(&e))?,
                Ok(None) => break,
                Err(BodyError::TooLarge(m)) => {
                    return Err(json_error(StatusCode::PAYLOAD_TOO_LARGE, format!("upload larger than {m} bytes")));
                }
                Err(e @ (BodyError::Stalled(_) | BodyError::TooSlow(_))) => {
                    return Err(json_error(StatusCode::REQUEST_TIMEOUT, Chain(&e)));
                }
                Err(e) => return Err(json_error(StatusCode::BAD_REQUEST, Chain(&e))),
            }
        }
        if seen == 0 {
            return Err(json_error(StatusCode::BAD_REQUEST, "empty upload: send the audio file as the request body"));
        }
        file.flush().await.map_err(|e| internal(&e))?;
        Ok(())
    }
}

/// The answer to a read the store could not give: 502 for bytes that are not what their name
/// says (the edge then tries its next upstream), 503 with `Retry-After` when the store is slow
/// or down (a retry can help), 500 otherwise (an operator must look). The body says which, and
/// no more: the store's name, endpoint and answer go to the log, not to whoever asked.
fn store_failed(e: &StoreError) -> Response<ResponseBody> {
    let (status, public) = match e.root() {
        StoreError::CorruptObject { chunk, .. } => (
            StatusCode::BAD_GATEWAY,
            format!("chunk {chunk} in this origin's store does not match its hash; not served"),
        ),
        e if e.is_retryable() => {
            (StatusCode::SERVICE_UNAVAILABLE, "this origin's store did not answer in time; try again".to_owned())
        }
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "this origin's store failed; the origin's log says why".to_owned()),
    };
    if !e.is_corrupt() {
        // A corrupt chunk was logged where it was found, once for all the requests that waited.
        error!(error = %Chain(e), "the store failed");
    }
    let mut r = json_error(status, public);
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

fn internal(e: &dyn std::fmt::Display) -> Response<ResponseBody> {
    error!(error = %e, "internal error");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, e)
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl Handler for Origin {
    async fn call(&self, req: Request<Body>, ctx: RequestContext) -> Response<ResponseBody> {
        let (route, resp) = self.route(req, ctx.remote.ip()).await;
        self.metrics.requests.inc(ctx.protocol, route, resp.status());
        if let Some(n) = http_body::Body::size_hint(resp.body()).exact() {
            self.metrics.served_bytes.inc_by(n);
        }
        resp
    }
}
