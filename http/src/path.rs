//! One path, checked once, before any filter and any route.
//!
//! Handlers route on `uri.path()` split at `/`, and filters in front of them (the
//! `--metrics-listen` split, CORS, token checks) look at the same path. If a filter and a router
//! read one path two ways (`//metrics` is not `/metrics` to a filter comparing strings, but is
//! `["", "metrics"]` trimmed to `["metrics"]` by a router), a request can slip past the filter.
//! So the front refuses, with 400, every path that has more than one spelling: empty segments
//! (`//x`, `/a//b`; a single trailing `/` as in `/player/` is allowed), dot segments (`.`, `..`),
//! encoded slashes, backslashes and dots (`%2F`, `%5C`, `%2E`, any case), encoded NUL, and raw
//! backslashes. What passes has exactly one spelling, so every filter and every router see the
//! same thing. No route of chorus needs any of these (ids are `[A-Za-z0-9_-]`, chunk ids hex).

use http::{Request, Response, StatusCode};

use super::{Body, Handler, RequestContext, ResponseBody, json_error};

/// Why a path was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// Not starting with `/` (and not the `*` of `OPTIONS *`).
    #[error("the path must start with /")]
    NotAbsolute,
    /// `//`, or a `/` at the start of a segment that is empty (not the last).
    #[error("the path has an empty segment (//)")]
    EmptySegment,
    /// A `.` or `..` segment.
    #[error("the path has a dot segment (. or ..)")]
    DotSegment,
    /// `%2F`, `%5C`, `%2E` or `%00` (any case), or a raw `\`.
    #[error("the path has an encoded slash, backslash, dot or NUL")]
    Encoded,
}

/// Checks that `path` has one spelling only (see the module docs).
///
/// # Errors
/// The first [`PathError`] found.
pub fn check(path: &str) -> Result<(), PathError> {
    if path == "*" {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else { return Err(PathError::NotAbsolute) };
    // (On every request: no allocation, one pass over the bytes.)
    let b = path.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'\\' {
            return Err(PathError::Encoded);
        }
        if c == b'%'
            && let (Some(&h), Some(&l)) = (b.get(i + 1), b.get(i + 2))
            && matches!((h, l.to_ascii_lowercase()), (b'2', b'f' | b'e') | (b'5', b'c') | (b'0', b'0'))
        {
            return Err(PathError::Encoded);
        }
    }
    if rest.is_empty() {
        return Ok(()); // "/"
    }
    let mut segments = rest.split('/').peekable();
    while let Some(s) = segments.next() {
        match s {
            "" if segments.peek().is_none() => {} // one trailing slash: `/player/`
            "" => return Err(PathError::EmptySegment),
            "." | ".." => return Err(PathError::DotSegment),
            _ => {}
        }
    }
    Ok(())
}

/// A handler behind the path check: a path with more than one spelling is answered 400 and
/// reaches nothing else. The front wraps every node's handler in one, outermost.
pub struct CleanPath<H> {
    inner: std::sync::Arc<H>,
    refused: prometheus::IntCounter,
}

impl<H> CleanPath<H> {
    /// `inner`, reached only by requests whose path passes [`check`]; refusals counted in
    /// `metrics` (reason `path`).
    pub fn new(inner: std::sync::Arc<H>, metrics: &super::FrontMetrics) -> Self {
        Self { inner, refused: metrics.refused.with_label_values(&["path"]) }
    }
}

impl<H: Handler> Handler for CleanPath<H> {
    async fn call(&self, req: Request<Body>, ctx: RequestContext) -> Response<ResponseBody> {
        if let Err(e) = check(req.uri().path()) {
            self.refused.inc();
            return json_error(StatusCode::BAD_REQUEST, e);
        }
        self.inner.call(req, ctx).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_spelling_passes_every_other_is_refused() {
        for ok in ["/", "*", "/metrics", "/player/", "/v1/chunks/ab12.m4s", "/v1/tracks/t-1/hls/master.m3u8", "/a%41"] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("//metrics", PathError::EmptySegment),
            ("///metrics", PathError::EmptySegment),
            ("/v1//chunks/x", PathError::EmptySegment),
            ("/v1/chunks//", PathError::EmptySegment),
            ("/./metrics", PathError::DotSegment),
            ("/v1/../metrics", PathError::DotSegment),
            ("/v1/tracks/t/..", PathError::DotSegment),
            ("/v1%2fmetrics", PathError::Encoded),
            ("/%2E%2E/metrics", PathError::Encoded),
            ("/v1/tracks/t%5Cx", PathError::Encoded),
            ("/v1/tracks/t\\x", PathError::Encoded),
            ("/a%00", PathError::Encoded),
            ("metrics", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ] {
            assert_eq!(check(bad), Err(why), "{bad}");
        }
    }

    proptest! {
        /// Whatever passes splits into the segments a router sees with no empty or dot segment
        /// (but a trailing empty one), and has no encoded separator: one spelling.
        #[test]
        fn what_passes_has_one_spelling(path in "[/a-z.%2fFeE5cC0\\\\]{0,24}") {
            if check(&path).is_ok() && path != "*" {
                let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                let n = segments.len();
                for (i, s) in segments.iter().enumerate() {
                    prop_assert!(!(s.is_empty() && i + 1 != n && path != "/"), "{path}");
                    prop_assert!(*s != "." && *s != "..", "{path}");
                }
                prop_assert!(!path.starts_with("//"));
                prop_assert!(!path.to_ascii_lowercase().contains("%2f"));
            }
        }
    }
}
