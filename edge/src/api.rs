//! The edge's HTTP API (docs/protocol.md §3): the same read API as the origin, plus the tracker, QoE
//! beacons, purge and prewarm. An unknown path is answered here (404), never forwarded.

// Handlers return a ready error response as `Err`: it is built once, on the error path only.
#![allow(clippy::result_large_err)]

use chorus_core::error::Chain;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chorus_core::protect::KeyId;
use chorus_core::token::Claims;
use chorus_core::{ChunkId, TrackId};
use chorus_http::body::{self, BodyError};
use chorus_http::hls;
use chorus_http::serve::{
    ChunkSource, chunk_response, chunk_response_from, if_none_match, is_read, key_response, method_not_allowed,
    only_if_cached, parse_chunk_segment, verify_request,
};
use chorus_http::{Body, FileBody, Handler, RequestContext, ResponseBody, empty, full, json, json_error};
use http::request::Parts;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use serde::Deserialize;

use crate::manifests::Freshness;
use crate::node::{Edge, Served};
use crate::tracker::TrackerError;
use crate::upstream::FetchError;
use chorus_core::announce::{AnnounceError, SignedAnnounce};
use chorus_core::api::ErrorBody;
use chorus_core::api::{QoeBeacon, TrackerAnswer};
use chorus_core::route::{self, Route};

/// Largest JSON body accepted (announce, QoE beacon, purge, prewarm).
const MAX_JSON_BODY: u64 = 256 * 1024;
/// A JSON body must arrive whole within this (not each piece: a byte now and then does not
/// keep it going).
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Manifests fetched at most to vouch for the tracks of one announce.
const VOUCH_FETCHES: usize = 4;
/// Most ids one purge or prewarm may list.
const MAX_ADMIN_ITEMS: usize = 10_000;

fn fetch_error(e: &FetchError) -> Response<ResponseBody> {
    json_error(e.status(), Chain(e))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminBody {
    #[serde(default)]
    chunks: Vec<ChunkId>,
    #[serde(default)]
    tracks: Vec<TrackId>,
}

impl Edge {
    /// Checks the access token of a `/v1/` request. `Ok(None)` when tokens are off.
    fn authenticate(&self, req: &Parts) -> Result<Option<Claims>, Response<ResponseBody>> {
        let Some(verifier) = &self.0.tokens else { return Ok(None) };
        verify_request(verifier, req).map(Some)
    }

    fn scope_track(claims: Option<&Claims>, track: &TrackId) -> Result<(), Response<ResponseBody>> {
        match claims {
            Some(c) if !c.allows(track) => {
                Err(json_error(StatusCode::FORBIDDEN, format!("this token does not cover track {track}")))
            }
            _ => Ok(()),
        }
    }

    fn scope_chunk(&self, claims: Option<&Claims>, id: &ChunkId) -> Result<(), Response<ResponseBody>> {
        let Some(c) = claims.filter(|c| c.tracks.is_some()) else { return Ok(()) };
        // The index keeps a few positions per chunk; only a chunk shared by more tracks than it
        // lists (identical init segments) is also looked up in the manifests of the token's own
        // tracks. Any other chunk is answered from the index alone, in O(1).
        let (positions, complete) = self.0.manifests.positions_all(id);
        let in_allowed = || {
            !complete
                && c.tracks
                    .iter()
                    .flatten()
                    .any(|t| self.0.manifests.cached(t).is_some_and(|m| m.chunks().any(|ch| ch.id == *id)))
        };
        if positions.iter().any(|p| c.allows(&p.track)) || in_allowed() {
            Ok(())
        } else {
            Err(json_error(
                StatusCode::FORBIDDEN,
                format!("this token does not cover a track holding chunk {id} (fetch the track's manifest first)"),
            ))
        }
    }

    fn admin(&self, req: &Parts, source: std::net::IpAddr) -> Result<(), Response<ResponseBody>> {
        self.0.admin_guard.check(&req.headers, self.0.cfg.admin_token.as_deref(), "edge", source).inspect_err(|r| {
            if matches!(r.status(), StatusCode::UNAUTHORIZED | StatusCode::TOO_MANY_REQUESTS) {
                self.0.metrics.refused.with_label_values(&["admin_auth"]).inc();
            }
        })
    }

    async fn json_body<T: serde::de::DeserializeOwned>(body: Body) -> Result<T, Response<ResponseBody>> {
        let bytes = body::read_to_bytes(body, MAX_JSON_BODY, BODY_TIMEOUT).await.map_err(|e| match e {
            BodyError::TooLarge(_) => json_error(StatusCode::PAYLOAD_TOO_LARGE, Chain(&e)),
            BodyError::Stalled(_) | BodyError::TooSlow(_) => json_error(StatusCode::REQUEST_TIMEOUT, Chain(&e)),
            _ => json_error(StatusCode::BAD_REQUEST, Chain(&e)),
        })?;
        serde_json::from_slice(&bytes).map_err(|e| json_error(StatusCode::BAD_REQUEST, format!("bad JSON body: {e}")))
    }

    /// Routes `req`; then acts on its next-track hint (a warm of the track named), only if the
    /// answer was a success and the client's budget of hints allows: a hint on a request that
    /// failed (a 404 for a made-up id) costs upstreams nothing.
    async fn route(
        &self,
        req: Request<Body>,
        ctx: RequestContext,
    ) -> (&'static str, Response<ResponseBody>, Option<&'static str>) {
        let mut hint = None;
        let source = ctx.remote.ip();
        let out = self.route_request(req, ctx, &mut hint).await;
        if let Some(next) = hint
            && out.1.status().is_success()
        {
            let allowed = self
                .0
                .hint_limit
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(source, std::time::Instant::now());
            match allowed {
                Ok(()) => {
                    let _ = self.warm(next, false);
                }
                Err(_) => self.0.metrics.refused.with_label_values(&["hint_rate"]).inc(),
            }
        }
        out
    }

    async fn route_request(
        &self,
        req: Request<Body>,
        ctx: RequestContext,
        hint: &mut Option<TrackId>,
    ) -> (&'static str, Response<ResponseBody>, Option<&'static str>) {
        let (req, body) = req.into_parts();
        let uri = req.uri.clone();
        let method = req.method.clone();

        // Every /v1/ request needs a valid token when tokens are on.
        let claims = if route::is_api(uri.path()) {
            match self.authenticate(&req) {
                Ok(c) => c,
                Err(r) => return (route::OTHER, r, None),
            }
        } else {
            None
        };
        if route::is_api(uri.path())
            && let Some(next) = crate::prefetch::next_track_hint(&req.headers, req.uri.query())
            && Self::scope_track(claims.as_ref(), &next).is_ok()
        {
            *hint = Some(next);
        }
        let Some(r) = Route::parse(uri.path()) else {
            return (route::OTHER, json_error(StatusCode::NOT_FOUND, "no such endpoint"), None);
        };
        let name = r.name();
        match r {
            Route::Manifest { .. } | Route::Chunk { .. } | Route::Hls { .. } | Route::Key { .. }
                if !is_read(&method) =>
            {
                (name, method_not_allowed("GET, HEAD"), None)
            }
            Route::Manifest { track } => (name, self.get_manifest(track, &req, claims.as_ref()).await, None),
            Route::Chunk { chunk } => {
                let (r, source) = self.get_chunk(chunk, &req, claims.as_ref(), ctx.sendfile).await;
                (name, r, source)
            }
            Route::Hls { track, file } => (name, self.get_playlist(track, file, &req, claims.as_ref()).await, None),
            Route::Key { track, key } => (name, self.get_key(track, key, &req, claims.as_ref()).await, None),
            Route::Peers { track } => {
                if !is_read(&method) {
                    return (name, method_not_allowed("GET"), None);
                }
                let track = match TrackId::parse(track) {
                    Ok(t) => t,
                    Err(e) => return (name, json_error(StatusCode::BAD_REQUEST, Chain(&e)), None),
                };
                if let Err(r) = Self::scope_track(claims.as_ref(), &track) {
                    return (name, r, None);
                }
                // A listener asks every few seconds per track: a burst of 20, then 2 a second
                // per source.
                let limited = self
                    .0
                    .peers_limit
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take(ctx.remote.ip(), std::time::Instant::now());
                if let Err(wait) = limited {
                    self.0.metrics.refused.with_label_values(&["peers_rate"]).inc();
                    let mut r = json_error(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!("too many peer queries; retry in {} s", wait.as_secs().max(1)),
                    );
                    r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
                    return (name, r, None);
                }
                let peers = self.0.tracker.peers(&track).await;
                let relays = self.0.tracker.relays().to_vec();
                let mut r = json(StatusCode::OK, &TrackerAnswer { peers, relays });
                r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                (name, r, None)
            }
            Route::Announce => {
                if method != Method::POST {
                    return (name, method_not_allowed("POST"), None);
                }
                // HTTP/2 and HTTP/3 carry the authority in the URI, HTTP/1.1 in `Host`.
                let authority = req
                    .uri
                    .authority()
                    .map(|a| a.as_str().to_owned())
                    .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()).map(str::to_owned));
                let r = self.announce(body, ctx.remote.ip(), authority.as_deref(), claims.as_ref()).await;
                (name, r, None)
            }
            Route::Qoe => {
                if method != Method::POST {
                    return (name, method_not_allowed("POST"), None);
                }
                (name, self.qoe(body, claims.as_ref(), ctx.remote.ip()).await, None)
            }
            Route::Purge | Route::Prewarm => {
                if method != Method::POST {
                    return (name, method_not_allowed("POST"), None);
                }
                if let Err(r) = self.admin(&req, ctx.remote.ip()) {
                    return (name, r, None);
                }
                (name, self.admin_op(r == Route::Purge, body).await, None)
            }
            Route::Metrics | Route::Health | Route::Ready if !is_read(&method) => {
                (route::OTHER, method_not_allowed("GET, HEAD"), None)
            }
            Route::Metrics => {
                self.update_gauges();
                self.update_curve_gauges();
                (name, chorus_http::metrics::response(&self.0.metrics.registry), None)
            }
            Route::Health => (name, full(StatusCode::OK, "text/plain", "ok\n"), None),
            Route::Ready => {
                let r = if self.ready() {
                    full(StatusCode::OK, "text/plain", "ready\n")
                } else {
                    json_error(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream")
                };
                (name, r, None)
            }
            Route::Player { file: None } if self.0.cfg.player => (name, crate::player::redirect("/player/"), None),
            Route::Player { file: Some(file) } if self.0.cfg.player => {
                (name, crate::player::file(&method, file, self.0.cfg.origin_key.as_ref()), None)
            }
            Route::Player { .. } | Route::Ingest { .. } => {
                (route::OTHER, json_error(StatusCode::NOT_FOUND, "no such endpoint"), None)
            }
        }
    }

    async fn get_manifest(&self, track: &str, req: &Parts, claims: Option<&Claims>) -> Response<ResponseBody> {
        let track = match TrackId::parse(track) {
            Ok(t) => t,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, Chain(&e)),
        };
        if let Err(r) = Self::scope_track(claims, &track) {
            return r;
        }
        let (entry, freshness) = match self.manifest(&track).await {
            Ok(x) => x,
            Err(e) => return fetch_error(&e),
        };
        let etag = entry.etag.clone();
        let not_modified = etag.as_deref().is_some_and(|etag| if_none_match(&req.headers, etag));
        let mut r = if not_modified {
            empty(StatusCode::NOT_MODIFIED)
        } else {
            full(StatusCode::OK, "application/json", entry.bytes.clone())
        };
        let h = r.headers_mut();
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=10"));
        if let Some(v) = etag.and_then(|e| HeaderValue::from_str(&e).ok()) {
            h.insert(header::ETAG, v);
        }
        if freshness == Freshness::Stale {
            h.insert("chorus-stale", HeaderValue::from_static("1"));
        }
        r
    }

    async fn get_chunk(
        &self,
        chunk: &str,
        req: &Parts,
        claims: Option<&Claims>,
        sendfile: bool,
    ) -> (Response<ResponseBody>, Option<&'static str>) {
        let (id, content_type) = match parse_chunk_segment(chunk) {
            Ok(x) => x,
            Err(e) => return (json_error(StatusCode::BAD_REQUEST, Chain(&e)), None),
        };
        if let Err(r) = self.scope_chunk(claims, &id) {
            return (r, None);
        }
        let served = if only_if_cached(&req.headers) {
            match self.serve_cached(id, sendfile).await {
                Some(s) => Ok(s),
                None => {
                    let why = format!("chunk {id} is not in this edge's cache (the request said only-if-cached)");
                    return (json_error(StatusCode::GATEWAY_TIMEOUT, why), None);
                }
            }
        } else {
            self.serve_chunk(id, sendfile).await
        };
        match served {
            Ok(Served::File(file, len)) => {
                let source = ChunkSource::File(file, len);
                (chunk_response_from(&id, source, content_type, &req.method, &req.headers), Some("disk"))
            }
            Ok(Served::Bytes(bytes, source)) => {
                (chunk_response(&id, bytes, content_type, &req.method, &req.headers), Some(source.as_str()))
            }
            Err(e) => (fetch_error(&e), None),
        }
    }

    /// `GET /v1/tracks/{track}/keys/{key_id}`: a protected track's content key, only to a
    /// token that covers the track (so only on an edge that checks tokens).
    async fn get_key(&self, track: &str, key_id: &str, req: &Parts, claims: Option<&Claims>) -> Response<ResponseBody> {
        let (track, key_id) = match (TrackId::parse(track), KeyId::parse(key_id)) {
            (Ok(t), Ok(k)) => (t, k),
            (Err(e), _) => return json_error(StatusCode::BAD_REQUEST, Chain(&e)),
            (_, Err(e)) => return json_error(StatusCode::BAD_REQUEST, Chain(&e)),
        };
        let Some(claims) = claims else {
            return json_error(
                StatusCode::FORBIDDEN,
                "this edge hands out no content keys: it checks no tokens (start it with --token-key)",
            );
        };
        if let Err(r) = Self::scope_track(Some(claims), &track) {
            return r;
        }
        match self.0.keys.get(&self.0.upstreams, self.0.cfg.upstream_token_file.as_deref(), &track, &key_id).await {
            Ok(key) => key_response(&key, &req.method),
            Err(e) => {
                if !matches!(e, crate::keys::KeyError::Fetch(crate::upstream::FetchError::NotFound)) {
                    tracing::warn!(track = %track, error = %Chain(&e), "could not get a content key");
                }
                json_error(e.status(), Chain(&e))
            }
        }
    }

    async fn get_playlist(
        &self,
        track: &str,
        file: &str,
        req: &Parts,
        claims: Option<&Claims>,
    ) -> Response<ResponseBody> {
        let track = match TrackId::parse(track) {
            Ok(t) => t,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, Chain(&e)),
        };
        if let Err(r) = Self::scope_track(claims, &track) {
            return r;
        }
        let Some(name) = file.strip_suffix(".m3u8") else {
            return json_error(StatusCode::NOT_FOUND, "playlists end in .m3u8");
        };
        match self.manifest(&track).await {
            Ok((entry, _)) => hls::respond(&entry.manifest, name, req.uri.query()),
            Err(e) => fetch_error(&e),
        }
    }

    /// `POST /v1/peers/announce`: rate limit, then the signature and the other checks
    /// (outside the tracker's lock), then the record.
    async fn announce(
        &self,
        body: Body,
        source: std::net::IpAddr,
        authority: Option<&str>,
        claims: Option<&Claims>,
    ) -> Response<ResponseBody> {
        let signed: SignedAnnounce = match Self::json_body(body).await {
            Ok(a) => a,
            Err(r) => return r,
        };
        let tracker = &self.0.tracker;
        let result = tracker.admit(source).and_then(|()| {
            let unix_now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            tracker.check().verify(&signed, source, authority, unix_now)
        });
        let mut verified = match result {
            Ok(v) => v,
            Err(e) => return self.announce_refused(&e),
        };
        if let Some(t) = verified.listing().find(|t| Self::scope_track(claims, t).is_err()) {
            return json_error(StatusCode::FORBIDDEN, format!("this token does not cover track {t}"));
        }
        // Only tracks this edge can vouch for are listed: made-up ids fill no table.
        let listing: Vec<TrackId> = verified.listing().cloned().collect();
        let vouched = self.vouch(&listing).await;
        let unvouched: Vec<TrackId> = verified.held().iter().filter(|t| !vouched.contains(*t)).cloned().collect();
        let dropped = verified.keep_tracks(|t| vouched.contains(t));
        if dropped > 0 {
            self.0.metrics.refused.with_label_values(&["unknown_track"]).inc_by(dropped as u64);
        }
        if !listing.is_empty() && dropped == listing.len() && verified.dropped().is_empty() {
            return json_error(
                StatusCode::NOT_FOUND,
                "none of the announced tracks is known to this edge (no manifest here or upstream)",
            );
        }
        match tracker.record(source, verified).await {
            Ok(unlisted) => {
                let answer = chorus_core::api::AnnounceAnswer { unlisted, unknown: unvouched };
                json(StatusCode::OK, &answer)
            }
            Err(e) => self.announce_refused(&e),
        }
    }

    /// The tracks of `tracks` this edge can vouch for: its manifest is cached, or an upstream
    /// delivers it. At most [`VOUCH_FETCHES`] manifests are fetched for one announce (the
    /// others wait for a later announce); a track an upstream said is unknown is dropped at
    /// once (the edge remembers the 404).
    async fn vouch(&self, tracks: &[TrackId]) -> std::collections::HashSet<TrackId> {
        let mut known = std::collections::HashSet::new();
        let mut fetches = 0;
        for t in tracks {
            if self.0.manifests.cached(t).is_some() {
                known.insert(t.clone());
            } else if fetches < VOUCH_FETCHES && !self.0.manifests.known_missing(t) {
                fetches += 1;
                if self.manifest(t).await.is_ok() {
                    known.insert(t.clone());
                }
            }
        }
        known
    }

    fn announce_refused(&self, e: &TrackerError) -> Response<ResponseBody> {
        let label = match e {
            TrackerError::Refused(AnnounceError::BadSignature | AnnounceError::NotTheSigner { .. }) => "signature",
            TrackerError::Refused(AnnounceError::OutsideWindow { .. }) => "time",
            TrackerError::Refused(AnnounceError::WrongEdge { .. }) => "edge",
            TrackerError::Refused(_) => "malformed",
            TrackerError::NoAddress { .. } => "address",
            TrackerError::Superseded => "replay",
            TrackerError::RateLimited(_) => "rate",
            _ => "full",
        };
        self.0.metrics.announces_refused.with_label_values(&[label]).inc();
        match e {
            TrackerError::Refused(AnnounceError::OutsideWindow { now, .. }) => {
                let body = ErrorBody { error: Chain(e).to_string(), now: Some(*now) };
                json(StatusCode::UNAUTHORIZED, &body)
            }
            TrackerError::Refused(a) if a.is_unauthorized() => json_error(StatusCode::UNAUTHORIZED, Chain(e)),
            TrackerError::Refused(_) | TrackerError::NoAddress { .. } => json_error(StatusCode::BAD_REQUEST, Chain(e)),
            TrackerError::Superseded => json_error(StatusCode::CONFLICT, Chain(e)),
            TrackerError::RateLimited(after) => {
                let mut r =
                    json_error(StatusCode::TOO_MANY_REQUESTS, format!("too many announces; retry in {after:?}"));
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after.as_secs().max(1)));
                r
            }
            _ => json_error(StatusCode::SERVICE_UNAVAILABLE, Chain(e)),
        }
    }

    async fn qoe(&self, body: Body, claims: Option<&Claims>, source: std::net::IpAddr) -> Response<ResponseBody> {
        // A listener sends one beacon a play: a burst of 10, then one every 10 s per source,
        // checked before the body is read.
        let limited = self
            .0
            .qoe_limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(source, std::time::Instant::now());
        if let Err(wait) = limited {
            self.0.metrics.refused.with_label_values(&["qoe_rate"]).inc();
            let mut r = json_error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many QoE beacons; retry in {} s", wait.as_secs().max(1)),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
            return r;
        }
        let b: QoeBeacon = match Self::json_body(body).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        if let Err(r) = Self::scope_track(claims, &b.track_id) {
            return r;
        }
        if let Err(e) = b.validate() {
            self.0.metrics.refused.with_label_values(&["qoe_invalid"]).inc();
            return json_error(StatusCode::BAD_REQUEST, Chain(&e));
        }
        let m = &self.0.metrics;
        m.qoe_beacons.inc();
        m.qoe_startup.observe(b.startup_ms as f64 / 1000.0);
        m.qoe_stalls.inc_by(b.stalls);
        m.qoe_stall_seconds.inc_by(b.stall_ms as f64 / 1000.0);
        m.qoe_bytes.with_label_values(&["edge"]).inc_by(b.bytes.edge);
        m.qoe_bytes.with_label_values(&["peer"]).inc_by(b.bytes.peer);
        m.qoe_bytes.with_label_values(&["cache"]).inc_by(b.bytes.cache);
        empty(StatusCode::NO_CONTENT)
    }

    async fn admin_op(&self, purge: bool, body: Body) -> Response<ResponseBody> {
        let b: AdminBody = match Self::json_body(body).await {
            Ok(b) => b,
            Err(r) => return r,
        };
        if b.chunks.len() + b.tracks.len() > MAX_ADMIN_ITEMS {
            return json_error(StatusCode::PAYLOAD_TOO_LARGE, format!("at most {MAX_ADMIN_ITEMS} ids per request"));
        }
        if purge {
            if b.chunks.is_empty() && b.tracks.is_empty() {
                return json_error(StatusCode::BAD_REQUEST, "give {\"chunks\": [...]} or {\"tracks\": [...]}");
            }
            let mut purged_chunks = self.purge_chunks(&b.chunks).await;
            let (purged_manifests, more) = self.purge_tracks(&b.tracks).await;
            purged_chunks += more;
            json(
                StatusCode::OK,
                &serde_json::json!({ "purged_chunks": purged_chunks, "purged_manifests": purged_manifests }),
            )
        } else {
            if b.tracks.is_empty() || !b.chunks.is_empty() {
                return json_error(StatusCode::BAD_REQUEST, "give {\"tracks\": [...]}");
            }
            let n = b.tracks.len();
            let warming = b.tracks.into_iter().filter(|t| self.warm(t.clone(), true)).count();
            // Tracks warmed in the last 30 s (and not purged since) are not warmed again.
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "accepted": n, "warming": warming, "recently_warmed": n - warming }),
            )
        }
    }
}

impl Handler for Edge {
    async fn call(&self, req: Request<Body>, ctx: RequestContext) -> Response<ResponseBody> {
        let (route, resp, source) = self.route(req, ctx).await;
        let m = &self.0.metrics;
        m.requests.inc(ctx.protocol, route, resp.status());
        if let Some(source) = source {
            let sent = match resp.extensions().get::<FileBody>() {
                Some(f) => Some(f.len),
                None => http_body::Body::size_hint(resp.body()).exact(),
            };
            if let Some(n) = sent {
                m.served_bytes.with_label_values(&[source]).inc_by(n);
            }
        }
        resp
    }
}
