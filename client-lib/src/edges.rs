//! The edges a client fetches from: reaching one (HTTP/3 first, then HTTPS on the same host
//! and port when QUIC fails, as browsers do) and sending requests over its pooled connections.

use bytes::Bytes;
use chorus_core::http::client::{ClientError, HttpClient};
use chorus_core::http::pool::Pool;

/// Idle HTTP/1.1 connections kept per edge (HTTP/2 and HTTP/3 share one).
const POOL_MAX: usize = 8;

/// One edge as a source: the URL in use and its connections.
pub(crate) struct Edge {
    /// The HTTP version spoken ("h3", "h2", "http/1.1").
    pub(crate) protocol: String,
    pool: Pool,
}

impl Edge {
    /// Connects to the edge at `base`: HTTP/3 for an `h3://` URL, falling back to HTTPS on the
    /// same host and port when QUIC fails. `None` when neither works.
    pub(crate) async fn reach(http: &HttpClient, base: &str) -> Option<Self> {
        let (conn, base) = match base.strip_prefix("h3://") {
            Some(hostport) => match http.connect(base, false).await {
                Ok(c) => (c, base.to_owned()),
                Err(_) => {
                    let https = format!("https://{hostport}");
                    (http.connect(&https, false).await.ok()?, https)
                }
            },
            None => (http.connect(base, false).await.ok()?, base.to_owned()),
        };
        let protocol = conn.protocol().as_str().to_owned();
        let pool = Pool::new(base, POOL_MAX);
        pool.put(conn);
        Some(Self { protocol, pool })
    }

    /// The base URL in use (after any HTTP/3 → HTTPS fallback).
    pub(crate) fn base(&self) -> &str {
        self.pool.base()
    }

    /// Sends `req` on a pooled connection (or a new one); see [`Pool::send`].
    pub(crate) async fn send(
        &self,
        http: &HttpClient,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, ClientError> {
        self.pool.send(http, req).await
    }

    /// Whether a pooled connection may still be open.
    pub(crate) fn reachable(&self) -> bool {
        self.pool.is_open()
    }
}

/// A `GET path` request, with the access token as a bearer token when there is one.
pub(crate) fn get(path: &str, token: Option<&str>) -> http::Request<Bytes> {
    let mut b = http::Request::get(path);
    if let Some(t) = token {
        b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Bytes::new()).unwrap_or_else(|_| http::Request::new(Bytes::new()))
}
