//! Answering the read API's common questions the same way on origin and edge: immutable chunk
//! responses with `ETag`, conditional requests and single byte ranges; query parameters;
//! bearer credentials.

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};

use super::{ResponseBody, empty, full};
use chorus_core::id::ChunkId;

/// `Cache-Control` of a chunk: chunks never change.
pub const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// Suffixes a chunk URL may carry, and the content type each implies. Playlists name chunks
/// `/v1/chunks/{id}.mp4` (init) and `/v1/chunks/{id}.m4s` (media segment) because HLS
/// players such as ffmpeg only fetch segment URLs with a known media extension; the bytes are
/// the same as at `/v1/chunks/{id}`.
pub const CHUNK_SUFFIXES: &[(&str, &str)] = &[(".m4s", "audio/mp4"), (".mp4", "audio/mp4")];

/// Parses the last path segment of a chunk URL: `{id}`, `{id}.m4s` or `{id}.mp4`. Returns the
/// id and the content type to answer with.
///
/// # Errors
/// [`IdError::Chunk`](chorus_core::IdError::Chunk) for anything else.
pub fn parse_chunk_segment(segment: &str) -> Result<(ChunkId, &'static str), chorus_core::IdError> {
    for (suffix, content_type) in CHUNK_SUFFIXES {
        if let Some(hex) = segment.strip_suffix(suffix) {
            return ChunkId::parse(hex).map(|id| (id, *content_type));
        }
    }
    ChunkId::parse(segment).map(|id| (id, "application/octet-stream"))
}

/// A parsed `Range` header against a body of known length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: send the whole body (also for multi-range requests, which RFC 9110
    /// lets a server ignore).
    Full,
    /// Send bytes `start..=end`.
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// The range lies outside the body: 416.
    Unsatisfiable,
}

/// Parses `value` (`bytes=0-99`, `bytes=100-`, `bytes=-100`) for a body of `len` bytes.
#[must_use]
pub fn parse_range(value: &str, len: u64) -> RangeRequest {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    let num = |s: &str| {
        if s.is_empty() || s.len() > 20 || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse::<u64>().ok()
        }
    };
    match (a.is_empty(), b.is_empty()) {
        (true, true) => RangeRequest::Full,
        (true, false) => match num(b) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(n) if len > 0 => RangeRequest::Partial { start: len.saturating_sub(n), end: len - 1 },
            Some(_) => RangeRequest::Unsatisfiable,
            None => RangeRequest::Full,
        },
        (false, _) => {
            let Some(start) = num(a) else {
                return RangeRequest::Full;
            };
            let end = if b.is_empty() { Some(u64::MAX) } else { num(b) };
            match end {
                None => RangeRequest::Full,
                Some(end) if end < start => RangeRequest::Full,
                Some(_) if start >= len => RangeRequest::Unsatisfiable,
                Some(end) => RangeRequest::Partial { start, end: end.min(len - 1) },
            }
        }
    }
}

/// Whether the request's `If-None-Match` matches `etag` (a quoted entity tag): any listed tag
/// equal to it under the weak comparison of RFC 9110 §13.1.2, or `*`. The one conditional
/// check of every route (chunks here, manifests at the origin and the edge).
#[must_use]
pub fn if_none_match(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().trim_start_matches("W/"))
        .any(|t| t == etag || t == "*")
}

/// The body of a chunk response: bytes in memory, or a file sent with `sendfile`.
#[derive(Debug)]
pub enum ChunkSource {
    /// The chunk's bytes.
    Bytes(Bytes),
    /// The chunk's verified file (only where [`RequestContext::sendfile`](super::RequestContext) is set).
    File(std::sync::Arc<std::fs::File>, u64),
}

impl ChunkSource {
    fn len(&self) -> u64 {
        match self {
            Self::Bytes(b) => b.len() as u64,
            Self::File(_, len) => *len,
        }
    }
}

/// The response for chunk `id` whose verified bytes are `bytes`: `ETag`, immutable caching,
/// `If-None-Match` (304), a single `Range` (206/416), `HEAD` without a body.
#[must_use]
pub fn chunk_response(
    id: &ChunkId,
    bytes: Bytes,
    content_type: &'static str,
    method: &Method,
    headers: &HeaderMap,
) -> Response<ResponseBody> {
    chunk_response_from(id, ChunkSource::Bytes(bytes), content_type, method, headers)
}

/// [`chunk_response`] for a chunk in memory or in a file (then sent with `sendfile`: an empty
/// body and a [`FileBody`](super::FileBody) extension).
#[must_use]
pub fn chunk_response_from(
    id: &ChunkId,
    source: ChunkSource,
    content_type: &'static str,
    method: &Method,
    headers: &HeaderMap,
) -> Response<ResponseBody> {
    let etag = format!("\"{id}\"");
    let len = source.len();
    let set_common = |resp: &mut Response<ResponseBody>| {
        let h = resp.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(header::ETAG, v);
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static(IMMUTABLE));
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    };
    if if_none_match(headers, &etag) {
        let mut resp = empty(StatusCode::NOT_MODIFIED);
        set_common(&mut resp);
        return resp;
    }
    let range =
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()).map_or(RangeRequest::Full, |v| parse_range(v, len));
    // If-Range with another validator means the client's copy is stale: send it all.
    let range = match headers.get(header::IF_RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) if v.trim() != etag => RangeRequest::Full,
        _ => range,
    };
    let (status, start, end) = match range {
        RangeRequest::Full => (StatusCode::OK, 0, len.saturating_sub(1)),
        RangeRequest::Partial { start, end } => (StatusCode::PARTIAL_CONTENT, start, end),
        RangeRequest::Unsatisfiable => {
            let mut resp =
                super::json_error(StatusCode::RANGE_NOT_SATISFIABLE, format!("range outside the chunk's {len} bytes"));
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            return resp;
        }
    };
    let body_len = if len == 0 { 0 } else { end + 1 - start };
    let mut resp = match source {
        _ if method == Method::HEAD => empty(status),
        ChunkSource::Bytes(bytes) => {
            let slice =
                bytes.slice(usize::try_from(start).unwrap_or(0)..usize::try_from(start + body_len).unwrap_or(0));
            full(status, content_type, slice)
        }
        ChunkSource::File(file, _) => {
            let mut r = empty(status);
            r.extensions_mut().insert(super::FileBody { file, offset: start, len: body_len });
            r
        }
    };
    set_common(&mut resp);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    if status == StatusCode::PARTIAL_CONTENT
        && let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}"))
    {
        h.insert(header::CONTENT_RANGE, v);
    }
    resp
}

/// The value of query parameter `name`, percent-decoded (`+` is a space). `None` when absent
/// or not valid UTF-8 after decoding.
#[must_use]
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v)).flatten()
    })
}

/// Decodes a query value: `+` is a space, `%XX` a byte. `None` for a `%` not followed by two
/// hex digits, or bytes that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let escapes_ok = b
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .all(|(i, _)| b.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)));
    if !escapes_ok {
        return None;
    }
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced).decode_utf8().ok().map(std::borrow::Cow::into_owned)
}

/// Whether the request's `Cache-Control` holds `only-if-cached` (RFC 9111 §5.2.1.7): answer
/// from the cache or with 504, never by fetching.
#[must_use]
pub fn only_if_cached(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|d| d.trim().eq_ignore_ascii_case("only-if-cached"))
}

/// The credential of an `Authorization: Bearer …` header.
#[must_use]
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, cred) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| cred.trim())
}

/// The access token of a request, as every node reads it: `Authorization: Bearer …`, else a
/// `?token=` query parameter (for HLS URIs, which players fetch without headers).
#[must_use]
pub fn request_token(req: &http::request::Parts) -> Option<String> {
    bearer(&req.headers).map(str::to_owned).or_else(|| query_param(req.uri.query(), "token"))
}

/// Checks the access token of `req` with `verifier`: its claims, or the 401 to answer (no
/// token, or one that does not verify).
///
/// # Errors
/// The 401 response, its body saying why.
#[allow(clippy::result_large_err)] // the ready error response, built on the error path only
pub fn verify_request(
    verifier: &chorus_core::token::TokenVerifier,
    req: &http::request::Parts,
) -> Result<chorus_core::token::Claims, Response<ResponseBody>> {
    let Some(token) = request_token(req) else {
        return Err(super::json_error(StatusCode::UNAUTHORIZED, chorus_core::token::TokenError::Missing));
    };
    verifier
        .verify(&token, std::time::SystemTime::now())
        .map_err(|e| super::json_error(StatusCode::UNAUTHORIZED, chorus_core::error::Chain(&e)))
}

/// The key route's answer (docs/protocol.md §3.7): the 16 key bytes, never stored by a shared
/// cache or a browser (`private, no-store`). `HEAD` gets the headers alone.
#[must_use]
pub fn key_response(key: &chorus_core::protect::ContentKey, method: &Method) -> Response<ResponseBody> {
    let mut r = if method == Method::HEAD {
        let mut r = empty(StatusCode::OK);
        r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(chorus_core::protect::KEY_BYTES));
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        r
    } else {
        full(StatusCode::OK, "application/octet-stream", Bytes::copy_from_slice(key.as_bytes()))
    };
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-store"));
    r
}

/// The admin routes' gate: the token check of [`check_admin`], with failed attempts slowed per
/// source host. Five wrong or missing tokens, then one more every 10 s: beyond that budget a
/// source is answered 429 before its token is even compared, so guessing a token online costs
/// ten seconds a guess.
pub struct AdminGuard {
    failures: std::sync::Mutex<chorus_core::rate::PerSource>,
}

impl Default for AdminGuard {
    fn default() -> Self {
        Self { failures: std::sync::Mutex::new(chorus_core::rate::PerSource::new(5, 0.1, 10_000)) }
    }
}

impl AdminGuard {
    /// Checks an admin request from `source` against `expected` (see [`check_admin`]).
    ///
    /// # Errors
    /// The response to send: 429 (with `Retry-After`) for a source out of attempts, else as
    /// [`check_admin`]; a 401 spends one of the source's attempts.
    #[allow(clippy::result_large_err)] // the ready error response, built on the error path only
    pub fn check(
        &self,
        headers: &HeaderMap,
        expected: Option<&str>,
        node: &str,
        source: std::net::IpAddr,
    ) -> Result<(), Response<ResponseBody>> {
        let now = std::time::Instant::now();
        let lock = || self.failures.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Err(wait) = lock().check(source, now) {
            let mut r = super::json_error(
                StatusCode::TOO_MANY_REQUESTS,
                format!("too many failed admin attempts from this address; retry in {} s", wait.as_secs().max(1)),
            );
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
            return Err(r);
        }
        check_admin(headers, expected, node).inspect_err(|r| {
            if r.status() == StatusCode::UNAUTHORIZED {
                let _ = lock().take(source, now);
            }
        })
    }
}

/// 405 with an `Allow` header listing `allow` (e.g. `"GET, HEAD"`).
#[must_use]
pub fn method_not_allowed(allow: &'static str) -> Response<ResponseBody> {
    let mut r = super::json_error(StatusCode::METHOD_NOT_ALLOWED, format!("method not allowed; use {allow}"));
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// Whether `m` only reads (`GET` or `HEAD`).
#[must_use]
pub fn is_read(m: &Method) -> bool {
    m == Method::GET || m == Method::HEAD
}

/// Checks the admin bearer token of a request against `expected` (the node's `--admin-token`;
/// `None` means the admin API is off). `node` names the node in the error (`origin`, `edge`).
///
/// # Errors
/// The response to send: 403 when the admin API is off, 401 when the token is missing or wrong.
#[allow(clippy::result_large_err)] // the ready error response, built on the error path only
pub fn check_admin(headers: &HeaderMap, expected: Option<&str>, node: &str) -> Result<(), Response<ResponseBody>> {
    // An empty secret is no secret: treated as no token configured.
    let Some(expected) = expected.filter(|t| !t.is_empty()) else {
        return Err(super::json_error(
            StatusCode::FORBIDDEN,
            format!("the admin API is disabled: start the {node} with --admin-token"),
        ));
    };
    match bearer(headers) {
        Some(given) if secret_eq(given, expected) => Ok(()),
        Some(_) => Err(super::json_error(StatusCode::UNAUTHORIZED, "wrong admin token")),
        None => Err(super::json_error(StatusCode::UNAUTHORIZED, "admin token required: Authorization: Bearer <token>")),
    }
}

/// Whether `given` equals `expected`, in time that does not depend on where they differ.
#[must_use]
pub fn secret_eq(given: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    // Hash first so the comparison's length is fixed too.
    blake3::hash(given.as_bytes()).as_bytes().ct_eq(blake3::hash(expected.as_bytes()).as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ranges() {
        use RangeRequest::*;
        assert_eq!(parse_range("bytes=0-99", 1000), Partial { start: 0, end: 99 });
        assert_eq!(parse_range("bytes=900-", 1000), Partial { start: 900, end: 999 });
        assert_eq!(parse_range("bytes=900-5000", 1000), Partial { start: 900, end: 999 });
        assert_eq!(parse_range("bytes=-100", 1000), Partial { start: 900, end: 999 });
        assert_eq!(parse_range("bytes=-5000", 1000), Partial { start: 0, end: 999 });
        assert_eq!(parse_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 1000), Full);
        assert_eq!(parse_range("bytes=0-1,5-6", 1000), Full);
        assert_eq!(parse_range("items=0-1", 1000), Full);
        assert_eq!(parse_range("bytes=x-1", 1000), Full);
    }

    #[test]
    fn only_if_cached_is_one_directive_among_others() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static(v));
            only_if_cached(&h)
        };
        assert!(with("only-if-cached"));
        assert!(with("max-age=0, Only-If-Cached"));
        assert!(!with("no-cache"));
        assert!(!with("only-if-cached-ish"));
        assert!(!only_if_cached(&HeaderMap::new()));
    }

    #[test]
    fn chunk_responses() {
        let data = Bytes::from_static(b"0123456789");
        let id = ChunkId::of(&data);
        let mut h = HeaderMap::new();
        let r = chunk_response(&id, data.clone(), "application/octet-stream", &Method::GET, &h);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::ETAG], format!("\"{id}\"").as_str());
        assert_eq!(r.headers()[header::CACHE_CONTROL], IMMUTABLE);
        h.insert(header::RANGE, HeaderValue::from_static("bytes=2-4"));
        let r = chunk_response(&id, data.clone(), "application/octet-stream", &Method::GET, &h);
        assert_eq!(r.status(), StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes 2-4/10");
        h.insert(header::RANGE, HeaderValue::from_static("bytes=10-"));
        let r = chunk_response(&id, data.clone(), "application/octet-stream", &Method::GET, &h);
        assert_eq!(r.status(), StatusCode::RANGE_NOT_SATISFIABLE);
        assert_eq!(r.headers()[header::CONTENT_RANGE], "bytes */10");
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, HeaderValue::from_str(&format!("\"{id}\"")).unwrap());
        assert_eq!(
            chunk_response(&id, data, "application/octet-stream", &Method::GET, &h).status(),
            StatusCode::NOT_MODIFIED
        );
    }

    #[test]
    fn chunk_segments() {
        let id = ChunkId::of(b"x");
        assert_eq!(parse_chunk_segment(&format!("{id}.m4s")).unwrap(), (id, "audio/mp4"));
        assert_eq!(parse_chunk_segment(&id.to_hex()).unwrap().0, id);
        assert!(parse_chunk_segment(&format!("{id}.exe")).is_err());
        assert!(parse_chunk_segment(".m4s").is_err());
    }

    #[test]
    fn queries_and_credentials() {
        assert_eq!(query_param(Some("a=1&title=Hello%20W+x&b"), "title").as_deref(), Some("Hello W x"));
        assert_eq!(query_param(Some("b"), "b").as_deref(), Some(""));
        assert_eq!(query_param(Some("a=%zz"), "a"), None);
        assert_eq!(query_param(Some("a=%4"), "a"), None);
        assert_eq!(query_param(None, "a"), None);
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer s3cret"));
        assert_eq!(bearer(&h), Some("s3cret"));
        assert!(secret_eq("s3cret", "s3cret"));
        assert!(!secret_eq("s3cres", "s3cret"));
    }

    proptest! {
        #[test]
        fn range_is_always_inside(v in "bytes=[0-9]{0,4}-[0-9]{0,4}", len in 1u64..5000) {
            if let RangeRequest::Partial { start, end } = parse_range(&v, len) {
                prop_assert!(start <= end && end < len);
            }
        }

        #[test]
        fn percent_decode_never_panics(s in ".{0,40}") {
            let _ = query_param(Some(&format!("k={s}")), "k");
        }
    }
}
