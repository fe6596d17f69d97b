//! The plaintext HTTP/1.1 fast path's pure half: which request heads it takes, turning an
//! httparse head into a request, keep-alive, and serialising a response head. No I/O; the
//! sending (vectored writes, `sendfile`) is in `h1fast.rs`.

use std::io;

use http::{HeaderValue, Request, Version, header};

/// Request headers the fast path parses at most (more: hyper answers the request).
pub(super) const MAX_HEADERS: usize = 64;

/// What the first bytes of a connection's buffer hold.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once per request and unpacked at once; a box would cost an allocation per request"
)]
pub(super) enum Head {
    /// A request head the fast path serves, and how many bytes it took.
    Request(Request<super::Body>, usize),
    /// The start of a head; read more (while under the size limit).
    Partial,
    /// Anything else (malformed, too many headers, a method or target or header the fast
    /// path leaves alone): hyper answers it.
    HandOver,
}

/// Parses the request head at the start of `buf`, one of at most `max_uri` bytes of target.
pub(super) fn parse(buf: &[u8], max_uri: usize) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            if !eligible(&req) || req.path.is_some_and(|p| p.len() > max_uri) {
                return Head::HandOver;
            }
            // httparse accepts some heads that `http` refuses: let hyper answer those.
            to_request(&req).map_or(Head::HandOver, |r| Head::Request(r, n))
        }
        Ok(httparse::Status::Partial) => Head::Partial,
        Err(_) => Head::HandOver,
    }
}

/// Whether the fast path serves this request head: a bodiless `GET` or `HEAD` of a path,
/// without `Expect`, `Upgrade` or `Transfer-Encoding` (anything else goes to hyper).
fn eligible(req: &httparse::Request<'_, '_>) -> bool {
    let simple_method = matches!(req.method, Some("GET" | "HEAD"));
    let path_ok = req.path.is_some_and(|p| p.starts_with('/'));
    simple_method
        && path_ok
        && req.headers.iter().all(|h| {
            let n = h.name;
            !(n.eq_ignore_ascii_case("transfer-encoding")
                || n.eq_ignore_ascii_case("expect")
                || n.eq_ignore_ascii_case("upgrade")
                || (n.eq_ignore_ascii_case("content-length") && h.value != b"0"))
        })
}

/// The request for a parsed head, with an empty body.
///
/// # Errors
/// [`io::ErrorKind::InvalidData`] for a header name or value `http` refuses.
fn to_request(r: &httparse::Request<'_, '_>) -> io::Result<Request<super::Body>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut b = Request::builder()
        .method(r.method.unwrap_or("GET"))
        .uri(r.path.unwrap_or("/"))
        .version(if r.version == Some(0) { Version::HTTP_10 } else { Version::HTTP_11 });
    if let Some(h) = b.headers_mut() {
        for hd in r.headers.iter() {
            let name = header::HeaderName::from_bytes(hd.name.as_bytes()).map_err(|_| bad("bad header name"))?;
            let value = HeaderValue::from_bytes(hd.value).map_err(|_| bad("bad header value"))?;
            h.append(name, value);
        }
    }
    b.body(super::body::empty_body()).map_err(|e| bad(&e.to_string()))
}

/// Whether the connection stays open after this request (HTTP/1.0 asks, HTTP/1.1 must
/// refuse).
pub(super) fn wants_keep_alive(req: &Request<super::Body>) -> bool {
    let has = |t: &str| {
        req.headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|c| c.trim().eq_ignore_ascii_case(t))
    };
    if req.version() == Version::HTTP_10 { has("keep-alive") } else { !has("close") }
}

thread_local! {
    static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
}

/// Appends the `Date` header value, formatted once per second per thread.
fn push_date(out: &mut Vec<u8>) {
    let now = std::time::SystemTime::now();
    let secs = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs || d.1.is_empty() {
            *d = (secs, httpdate::fmt_http_date(now));
        }
        out.extend_from_slice(d.1.as_bytes());
    });
}

/// The response head for `parts`: status line, headers (but `Content-Length` and `Connection`,
/// which are written from what is sent), `alt-svc`, `connection`, `date`. `len` is the body's
/// length; for `HEAD` a declared `Content-Length` is kept.
pub(super) fn response_head(
    parts: &http::response::Parts,
    len: u64,
    head_only: bool,
    version: Version,
    keep_alive: bool,
    alt_svc: Option<&HeaderValue>,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(512);
    let reason = parts.status.canonical_reason().unwrap_or("");
    head.extend_from_slice(b"HTTP/1.1 ");
    head.extend_from_slice(parts.status.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(reason.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        if name == header::CONTENT_LENGTH || name == header::CONNECTION {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    let no_body_status = parts.status.is_informational() || parts.status == 204 || parts.status == 304;
    if !no_body_status {
        let declared = if head_only {
            parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(len)
        } else {
            len
        };
        use std::io::Write as _;
        let _ = write!(head, "content-length: {declared}\r\n");
    }
    if let Some(v) = alt_svc {
        head.extend_from_slice(b"alt-svc: ");
        head.extend_from_slice(v.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    if !keep_alive {
        head.extend_from_slice(b"connection: close\r\n");
    } else if version == Version::HTTP_10 {
        head.extend_from_slice(b"connection: keep-alive\r\n");
    }
    head.extend_from_slice(b"date: ");
    push_date(&mut head);
    head.extend_from_slice(b"\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use http::{Response, StatusCode};

    use super::*;

    fn parts(status: StatusCode, headers: &[(&str, &str)]) -> http::response::Parts {
        let mut b = Response::builder().status(status);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    fn text(head: &[u8]) -> String {
        let s = String::from_utf8(head.to_vec()).unwrap();
        let (before, date) = s.split_once("date: ").unwrap();
        assert!(date.ends_with(" GMT\r\n\r\n"), "{date}");
        before.to_owned()
    }

    #[test]
    fn heads_are_written_with_the_length_sent_and_keep_alive_rules() {
        let p = parts(StatusCode::OK, &[("etag", "\"x\""), ("content-length", "999"), ("connection", "x")]);
        assert_eq!(
            text(&response_head(&p, 5, false, Version::HTTP_11, true, None)),
            "HTTP/1.1 200 OK\r\netag: \"x\"\r\ncontent-length: 5\r\n"
        );
        // HEAD keeps the declared length; HTTP/1.0 keep-alive is said; alt-svc added.
        let alt = HeaderValue::from_static("h3=\":443\"");
        assert_eq!(
            text(&response_head(&p, 0, true, Version::HTTP_10, true, Some(&alt))),
            "HTTP/1.1 200 OK\r\netag: \"x\"\r\ncontent-length: 999\r\nalt-svc: h3=\":443\"\r\nconnection: keep-alive\r\n"
        );
        let none = parts(StatusCode::NOT_MODIFIED, &[]);
        assert_eq!(
            text(&response_head(&none, 0, false, Version::HTTP_11, false, None)),
            "HTTP/1.1 304 Not Modified\r\nconnection: close\r\n"
        );
    }

    #[test]
    fn only_bodiless_gets_and_heads_take_the_fast_path() {
        let parse = |raw: &str, f: &dyn Fn(&httparse::Request<'_, '_>) -> bool| {
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let mut r = httparse::Request::new(&mut headers);
            assert!(r.parse(raw.as_bytes()).unwrap().is_complete());
            f(&r)
        };
        assert!(parse("GET /v1/chunks/x HTTP/1.1\r\nHost: a\r\n\r\n", &eligible));
        assert!(parse("HEAD / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", &eligible));
        assert!(!parse("POST / HTTP/1.1\r\n\r\n", &eligible));
        assert!(!parse("GET / HTTP/1.1\r\nContent-Length: 3\r\n\r\n", &eligible));
        assert!(!parse("GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n", &eligible));
        assert!(!parse("GET * HTTP/1.1\r\n\r\n", &eligible));
        let keep = |raw: &str| parse(raw, &|r| wants_keep_alive(&to_request(r).unwrap()));
        assert!(keep("GET / HTTP/1.1\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.1\r\nConnection: close\r\n\r\n"));
        assert!(!keep("GET / HTTP/1.0\r\n\r\n"));
        assert!(keep("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }
}
