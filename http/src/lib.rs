//! chorus-http: the one serving front shared by origin and edge (docs/architecture.md,
//! decision D4), the client and its connection pool, and the responses every node builds
//! (`/metrics`, HLS playlists, chunks and keys). The protocol types it serves live in
//! `chorus-core`, which does no network I/O.
//!
//! A [`Handler`] is served on any mix of listen URLs ([`ListenUrl`]): `http://` (HTTP/1.1 and
//! h2c), `https://` (TLS with ALPN h2 and http/1.1) and `h3://` (HTTP/3 over QUIC). The handler
//! sees one request type whatever the protocol; the front adds `Alt-Svc` to TCP responses when an
//! HTTP/3 listener exists, caps connections, bounds request heads, times out idle and slow
//! clients, and drains in-flight requests on shutdown. [`client`] is the matching client.

#![warn(missing_docs)]

pub mod altsvc;
pub mod body;
pub mod client;
pub mod coalesce;
mod config;
pub mod cors;
mod h1fast;
mod h1head;
mod h3;
mod h3quic;
pub mod hls;
mod io;
pub mod listen;
pub mod metrics;
pub mod path;
pub mod pool;

/// The HTTP/1.1 fast path's head parsing on `bytes` (as much of a request as arrived), for the
/// fuzz targets (`fuzz/`): `Some(keep-alive)` when the fast path would serve the request.
/// Not part of the API.
#[doc(hidden)]
#[must_use]
pub fn fuzz_h1_head(bytes: &[u8]) -> Option<bool> {
    match h1head::parse(bytes, 4096) {
        h1head::Head::Request(r, _) => Some(h1head::wants_keep_alive(&r)),
        h1head::Head::Partial | h1head::Head::HandOver => None,
    }
}
#[cfg(test)]
mod front_tests;
pub mod proxy;
pub mod serve;
pub mod server;
mod share;
pub mod tls;
pub mod udp;

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Empty, Full};

pub use body::{Body, BodyError, ResponseBody};
pub use config::{AltSvcMode, FrontMetrics, ServerConfig, ServerError};
pub use listen::{ListenUrl, Scheme};
pub use server::Server;

/// Resolves once the shutdown signal is set (or its sender is gone).
async fn stopped(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

/// The HTTP version a request arrived over, as metrics label it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.0 or HTTP/1.1.
    Http1,
    /// HTTP/2, over TLS or cleartext.
    Http2,
    /// HTTP/3 over QUIC.
    Http3,
}

impl Protocol {
    /// The ALPN-style name: `http/1.1`, `h2`, `h3`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http1 => "http/1.1",
            Self::Http2 => "h2",
            Self::Http3 => "h3",
        }
    }
}

/// What the front knows about a request beyond the request itself.
#[derive(Debug, Clone, Copy)]
pub struct RequestContext {
    /// The protocol it came over.
    pub protocol: Protocol,
    /// Whether the connection is TLS (always true for HTTP/3).
    pub tls: bool,
    /// The client's address.
    pub remote: SocketAddr,
    /// Whether the connection can send a [`FileBody`] with `sendfile` (plaintext HTTP/1.1 on
    /// Linux). A handler may then answer with an empty body and a `FileBody` extension; on any
    /// other connection it must send the bytes.
    pub sendfile: bool,
}

/// A response body sent straight from a file by the kernel (`sendfile`), without passing
/// through user memory. Put it in the response's extensions, with an empty body, only when
/// [`RequestContext::sendfile`] is true.
#[derive(Debug, Clone)]
pub struct FileBody {
    /// The open file.
    pub file: std::sync::Arc<std::fs::File>,
    /// Where the bytes to send start.
    pub offset: u64,
    /// How many bytes to send.
    pub len: u64,
}

/// Serves requests. Implemented by the origin's and the edge's routers.
pub trait Handler: Send + Sync + 'static {
    /// Answers one request. Errors are answered as responses (see [`json_error`]); the front
    /// never sees them.
    fn call(
        &self,
        req: http::Request<Body>,
        ctx: RequestContext,
    ) -> impl Future<Output = Response<ResponseBody>> + Send;
}

/// A response with a complete body.
#[must_use]
pub fn full(status: StatusCode, content_type: &'static str, bytes: impl Into<Bytes>) -> Response<ResponseBody> {
    let mut resp = Response::new(Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// A response with no body (for `HEAD`, 204, 304).
#[must_use]
pub fn empty(status: StatusCode) -> Response<ResponseBody> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = status;
    resp
}

/// The JSON error every endpoint answers with: `{"error": "…"}`.
#[must_use]
pub fn json_error(status: StatusCode, message: impl std::fmt::Display) -> Response<ResponseBody> {
    let body = serde_json::json!({ "error": message.to_string() });
    let mut resp = full(status, "application/json", body.to_string());
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A JSON response of `value`.
#[must_use]
pub fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<ResponseBody> {
    match serde_json::to_vec(value) {
        Ok(v) => full(status, "application/json", v),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, format!("encoding response: {e}")),
    }
}
