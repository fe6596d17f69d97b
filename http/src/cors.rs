//! Cross-origin reads (CORS, the Fetch standard) on the read API, so that a web player served
//! from its own origin can fetch manifests, playlists and chunks from a CDN node's.
//!
//! The front wraps every node's handler in [`WithCors`], so each listener applies it alike:
//! HTTP/1.1 (the `sendfile` fast path included, which writes the headers a handler returns),
//! HTTP/2 and HTTP/3. It touches the read API only (`/v1/tracks/{track}/manifest`,
//! `/v1/tracks/{track}/hls/{file}`, `/v1/chunks/{chunk}`, and a protected track's key route
//! `/v1/tracks/{track}/keys/{key_id}`, which hls.js on another origin must reach and which
//! answers only a bearer token that covers the track); the tracker's lists (which name
//! listeners' addresses), announces, QoE beacons, `/metrics`, `/healthz`, `/readyz` and
//! `/admin/…` are not for pages on other origins and get no CORS headers.
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed
//!   origin is answered here with 204: methods `GET, HEAD`, request headers `Range`,
//!   `Authorization` and `Chorus-Next-Track`, cached by the browser for two hours. It needs no
//!   access token (browsers never send one on a preflight); the request it clears is checked as
//!   any other. A preflight from an origin not allowed is 403.
//! - Every other response of the read API, the handler's errors included (a player must be
//!   able to read a 401), says who may read it and exposes `Content-Range`, `ETag`, `Accept-Ranges` and `Alt-Svc`.
//!
//! Who may read ([`AllowOrigins`]; `--cors-origin`, docs/protocol.md "CORS"): anyone (`*`, the
//! default: the read API is public, or guarded by bearer tokens that a page on another origin
//! cannot read, and `*` never carries cookies), a list of origins, or no one. With `*` the
//! headers are the same on every response, so caches keep one copy; with a list the allowed
//! origin is echoed and every `/v1/` response says `Vary: Origin`.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};

use super::{Body, Handler, RequestContext, ResponseBody};

/// Origins in a list at most.
pub const MAX_ORIGINS: usize = 64;
/// Longest origin accepted in the list (scheme, host and port).
const MAX_ORIGIN_LEN: usize = 256;

const ALLOW_METHODS: HeaderValue = HeaderValue::from_static("GET, HEAD");
const ALLOW_HEADERS: HeaderValue = HeaderValue::from_static("Range, Authorization, Chorus-Next-Track");
const EXPOSE_HEADERS: HeaderValue = HeaderValue::from_static("Content-Range, ETag, Accept-Ranges, Alt-Svc");
/// Two hours: Chromium's cap (Firefox allows a day).
const MAX_AGE: HeaderValue = HeaderValue::from_static("7200");
const ANY: HeaderValue = HeaderValue::from_static("*");
const VARY_ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// Which web origins may read the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowOrigins {
    /// Any origin (`Access-Control-Allow-Origin: *`).
    #[default]
    Any,
    /// These origins (`https://app.example`, `http://localhost:8080`), lowercase.
    Only(Vec<String>),
    /// None: no CORS headers at all.
    Off,
}

/// A `--cors-origin` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorsError {
    /// Not `*`, `off`, or `http(s)://HOST[:PORT]`.
    #[error(
        "--cors-origin {0:?}: not an origin; give `*`, `off`, or SCHEME://HOST[:PORT] (http or https, no path), e.g. https://player.example"
    )]
    BadOrigin(String),
    /// `*` or `off` given along with something else.
    #[error("--cors-origin {0} cannot be combined with other values")]
    NotAlone(&'static str),
    /// Too many origins.
    #[error("--cors-origin: at most {MAX_ORIGINS} origins")]
    TooMany,
}

impl AllowOrigins {
    /// From the `--cors-origin` values: none (the default, [`AllowOrigins::Any`]), `*`, `off`,
    /// or origins.
    ///
    /// # Errors
    /// A value that is not an origin, `*` or `off` mixed with others, more than
    /// [`MAX_ORIGINS`].
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, CorsError> {
        let values: Vec<&str> = values.iter().map(|v| v.as_ref().trim()).collect();
        for (word, mode) in [("*", Self::Any), ("off", Self::Off)] {
            if values.iter().any(|v| v.eq_ignore_ascii_case(word)) {
                return if values.len() == 1 { Ok(mode) } else { Err(CorsError::NotAlone(word)) };
            }
        }
        if values.is_empty() {
            return Ok(Self::Any);
        }
        if values.len() > MAX_ORIGINS {
            return Err(CorsError::TooMany);
        }
        let mut list = Vec::with_capacity(values.len());
        for v in values {
            let origin = normalise(v).ok_or_else(|| CorsError::BadOrigin(v.chars().take(80).collect()))?;
            if !list.contains(&origin) {
                list.push(origin);
            }
        }
        Ok(Self::Only(list))
    }

    /// The `Access-Control-Allow-Origin` value for a request from `origin`, if it may read.
    fn allow(&self, origin: Option<&HeaderValue>) -> Option<HeaderValue> {
        match self {
            Self::Any => Some(ANY),
            Self::Off => None,
            Self::Only(list) => {
                let origin = origin?;
                let text = origin.to_str().ok()?;
                list.iter().any(|o| o.eq_ignore_ascii_case(text)).then(|| origin.clone())
            }
        }
    }
}

/// `http(s)://HOST[:PORT]` in lowercase, or `None` when `v` is not such an origin. A default
/// port is dropped (browsers send `https://a.example`, never `https://a.example:443`).
fn normalise(v: &str) -> Option<String> {
    if v.len() > MAX_ORIGIN_LEN {
        return None;
    }
    let v = v.to_ascii_lowercase();
    let (scheme, rest) = v.split_once("://")?;
    let default_port = match scheme {
        "https" => "443",
        "http" => "80",
        _ => return None,
    };
    let (host, port, host_ok) = if let Some(after) = rest.strip_prefix('[') {
        let (inner, tail) = after.split_once(']')?;
        let port = if tail.is_empty() { None } else { Some(tail.strip_prefix(':')?) };
        (&rest[..inner.len() + 2], port, inner.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let ok = !host.is_empty()
            && host.len() <= 253
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
            && !host.starts_with('.')
            && !host.ends_with('.');
        (host, port, ok)
    };
    if !host_ok {
        return None;
    }
    match port {
        None => Some(format!("{scheme}://{host}")),
        Some(p) if p == default_port => Some(format!("{scheme}://{host}")),
        Some(p) if p.parse::<u16>().is_ok_and(|n| n != 0) && !p.starts_with('0') => {
            Some(format!("{scheme}://{host}:{p}"))
        }
        Some(_) => None,
    }
}

/// Whether `path` is part of the read API CORS applies to: manifests, HLS playlists and
/// chunks. Not the tracker's lists (they name listeners' addresses, and players do not need
/// them), the announce or the QoE beacon.
fn applies(path: &str) -> bool {
    chorus_core::route::Route::parse(path).is_some_and(|r| r.is_read_api())
}

/// The CORS headers of a `/v1/` response to a request from `origin`.
pub fn decorate(allow: &AllowOrigins, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    if matches!(allow, AllowOrigins::Only(_)) {
        headers.append(header::VARY, VARY_ORIGIN);
    }
    if let Some(value) = allow.allow(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSE_HEADERS);
    }
}

/// The answer to a CORS preflight for a `/v1/` path, or `None` when `req` is not one.
#[must_use]
pub fn preflight<B>(allow: &AllowOrigins, req: &Request<B>) -> Option<Response<ResponseBody>> {
    if allow == &AllowOrigins::Off || req.method() != Method::OPTIONS || !applies(req.uri().path()) {
        return None;
    }
    let origin = req.headers().get(header::ORIGIN)?;
    req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    let Some(value) = allow.allow(Some(origin)) else {
        let mut resp = super::json_error(StatusCode::FORBIDDEN, "origin not allowed (--cors-origin)");
        resp.headers_mut().append(header::VARY, VARY_ORIGIN);
        return Some(resp);
    };
    let mut resp = super::empty(StatusCode::NO_CONTENT);
    let h = resp.headers_mut();
    h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, ALLOW_METHODS);
    h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, ALLOW_HEADERS);
    h.insert(header::ACCESS_CONTROL_MAX_AGE, MAX_AGE);
    if matches!(allow, AllowOrigins::Only(_)) {
        h.append(header::VARY, VARY_ORIGIN);
    }
    Some(resp)
}

/// A node's handler with CORS applied to its read API (the front wraps every handler in one).
pub struct WithCors<H> {
    inner: Arc<H>,
    allow: AllowOrigins,
}

impl<H> WithCors<H> {
    /// `inner`, answering as `allow` says.
    pub const fn new(inner: Arc<H>, allow: AllowOrigins) -> Self {
        Self { inner, allow }
    }
}

impl<H: Handler> Handler for WithCors<H> {
    async fn call(&self, req: Request<Body>, ctx: RequestContext) -> Response<ResponseBody> {
        if self.allow == AllowOrigins::Off || !applies(req.uri().path()) {
            return self.inner.call(req, ctx).await;
        }
        if let Some(resp) = preflight(&self.allow, &req) {
            return resp;
        }
        let origin = req.headers().get(header::ORIGIN).cloned();
        let mut resp = self.inner.call(req, ctx).await;
        decorate(&self.allow, origin.as_ref(), resp.headers_mut());
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only(list: &[&str]) -> AllowOrigins {
        AllowOrigins::parse(list).unwrap()
    }

    #[test]
    fn values_parse_to_a_mode_or_a_clear_error() {
        assert_eq!(AllowOrigins::parse::<&str>(&[]), Ok(AllowOrigins::Any), "the default");
        assert_eq!(only(&["*"]), AllowOrigins::Any);
        assert_eq!(only(&["OFF"]), AllowOrigins::Off);
        assert_eq!(
            only(&[
                "https://Player.Example:443",
                "http://localhost:8080",
                "https://player.example",
                "http://[::1]:3000"
            ]),
            AllowOrigins::Only(vec![
                "https://player.example".into(),
                "http://localhost:8080".into(),
                "http://[::1]:3000".into()
            ])
        );
        assert_eq!(AllowOrigins::parse(&["*", "https://a.example"]), Err(CorsError::NotAlone("*")));
        for bad in [
            "player.example",
            "ftp://a.example",
            "https://a.example/",
            "https://a.example/player",
            "https://",
            "https://a.example:0",
            "https://a.example:99999",
            "https://a.example:08",
            "https://a b.example",
            "https://[zz]:80",
            "https://user@a.example",
            "null",
        ] {
            assert!(matches!(AllowOrigins::parse(&[bad]), Err(CorsError::BadOrigin(_))), "{bad}");
        }
        let many: Vec<String> = (0..=MAX_ORIGINS).map(|i| format!("https://a{i}.example")).collect();
        assert_eq!(AllowOrigins::parse(&many), Err(CorsError::TooMany));
    }

    fn request(method: Method, path: &str, origin: Option<&str>, preflight: bool) -> Request<()> {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(o) = origin {
            b = b.header(header::ORIGIN, o);
        }
        if preflight {
            b = b.header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET");
        }
        b.body(()).unwrap()
    }

    #[test]
    fn preflights_are_answered_for_the_read_api_only() {
        let any = AllowOrigins::Any;
        let r = preflight(&any, &request(Method::OPTIONS, "/v1/chunks/x", Some("https://p.example"), true)).unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let h = r.headers();
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "GET, HEAD");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_HEADERS], "Range, Authorization, Chorus-Next-Track");
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "7200");
        assert!(h.get(header::VARY).is_none());
        // Not a preflight: no Origin, no requested method, another path, another method.
        assert!(preflight(&any, &request(Method::OPTIONS, "/v1/chunks/x", None, true)).is_none());
        assert!(preflight(&any, &request(Method::OPTIONS, "/v1/chunks/x", Some("https://p.example"), false)).is_none());
        assert!(preflight(&any, &request(Method::OPTIONS, "/admin/purge", Some("https://p.example"), true)).is_none());
        for not_read in ["/v1/tracks/t/peers", "/v1/peers/announce", "/v1/qoe", "/v1/chunks/", "/v1/tracks/t/hls/a/b"] {
            assert!(!applies(not_read), "{not_read}");
        }
        for read in
            ["/v1/tracks/t/manifest", "/v1/tracks/t/hls/master.m3u8", "/v1/chunks/abc.m4s", "/v1/tracks/t/keys/0123"]
        {
            assert!(applies(read), "{read}");
        }
        assert!(preflight(&any, &request(Method::GET, "/v1/chunks/x", Some("https://p.example"), true)).is_none());
        assert!(
            preflight(&AllowOrigins::Off, &request(Method::OPTIONS, "/v1/chunks/x", Some("https://p.example"), true))
                .is_none()
        );

        let list = only(&["https://p.example"]);
        let ok = preflight(&list, &request(Method::OPTIONS, "/v1/tracks/t/manifest", Some("https://p.example"), true))
            .unwrap();
        assert_eq!(ok.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://p.example");
        assert_eq!(ok.headers()[header::VARY], "Origin");
        let no =
            preflight(&list, &request(Method::OPTIONS, "/v1/tracks/t/manifest", Some("https://evil.example"), true))
                .unwrap();
        assert_eq!(no.status(), StatusCode::FORBIDDEN);
        assert!(no.headers().get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    }

    #[test]
    fn responses_say_who_may_read_them() {
        let origin = HeaderValue::from_static("https://p.example");
        let mut h = HeaderMap::new();
        decorate(&AllowOrigins::Any, None, &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*", "the same with or without Origin");
        assert_eq!(h[header::ACCESS_CONTROL_EXPOSE_HEADERS], "Content-Range, ETag, Accept-Ranges, Alt-Svc");

        let list = only(&["https://p.example"]);
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        decorate(&list, Some(&origin), &mut h);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://p.example");
        let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(vary, ["Accept-Encoding", "Origin"], "added to, not replaced");

        for other in [Some(&HeaderValue::from_static("https://evil.example")), None] {
            let mut h = HeaderMap::new();
            decorate(&list, other, &mut h);
            assert!(h.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
            assert_eq!(h[header::VARY], "Origin", "a cache must not give this answer to the allowed origin");
        }
        let mut h = HeaderMap::new();
        decorate(&AllowOrigins::Off, Some(&origin), &mut h);
        assert!(h.is_empty());
    }
}
