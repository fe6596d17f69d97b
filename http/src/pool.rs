//! Connections to one base URL, kept for reuse: the pool the edge's upstreams and the client
//! library's edges share.
//!
//! HTTP/1.1 connections carry one request at a time: one is taken out for a request and put
//! back after a complete answer (up to [`Pool::new`]'s `max_idle`). An HTTP/2 or HTTP/3
//! connection carries many: it stays in the pool and every request in flight shares it, so a
//! burst of requests opens one connection, not one each. A pooled connection the server closed
//! meanwhile costs one retry on a fresh connection ([`Pool::send`]).

use chorus_core::error::Chain;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use http::{Request, Response};

use super::client::{ClientError, Connection, HttpClient};
use chorus_core::url::BaseUrl;

/// Reusable connections to one base URL (`h3://`, `https://` or `http://host:port`).
pub struct Pool {
    base: BaseUrl,
    /// The `Alt-Svc` alternative (`HOST:PORT`) HTTP/3 connections go to, if not the base's
    /// own address.
    via: Option<String>,
    max_idle: usize,
    conns: Mutex<Vec<Connection>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").field("base", &self.base).field("idle", &self.lock().len()).finish()
    }
}

impl Pool {
    /// An empty pool for `base`, keeping at most `max_idle` idle HTTP/1.1 connections.
    #[must_use]
    pub fn new(base: BaseUrl, max_idle: usize) -> Self {
        Self { base, via: None, max_idle: max_idle.max(1), conns: Mutex::new(Vec::new()) }
    }

    /// An empty pool of HTTP/3 connections for the origin `base` (`h3://HOST:PORT`) made to its
    /// alternative `via` (`HOST:PORT`); see [`HttpClient::connect_via`].
    #[must_use]
    pub fn via(base: BaseUrl, via: impl Into<String>) -> Self {
        Self { via: Some(via.into()), ..Self::new(base, 1) }
    }

    /// The base URL connections go to.
    #[must_use]
    pub const fn base(&self) -> &BaseUrl {
        &self.base
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Connection>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A pooled connection to send one request on, if one is open: a handle to the shared
    /// HTTP/2 or HTTP/3 connection (which stays pooled), or an idle HTTP/1.1 one (taken out).
    #[must_use]
    pub fn take(&self) -> Option<Connection> {
        let mut pool = self.lock();
        while let Some(c) = pool.pop() {
            if c.is_closed() {
                continue;
            }
            if let Some(shared) = c.share() {
                pool.push(c);
                return Some(shared);
            }
            return Some(c);
        }
        None
    }

    /// Returns a connection after a request went well. Of HTTP/2 and HTTP/3 connections one is
    /// kept (requests made while there was none each opened their own).
    pub fn put(&self, c: Connection) {
        if c.is_closed() {
            return;
        }
        let mut pool = self.lock();
        if c.multiplexed() && pool.iter().any(|p| p.multiplexed() && !p.is_closed()) {
            return;
        }
        if pool.len() < self.max_idle {
            pool.push(c);
        }
    }

    /// Drops the pooled HTTP/2 and HTTP/3 connections (the shared one just failed a request).
    pub fn drop_shared(&self) {
        self.lock().retain(|c| !c.multiplexed());
    }

    /// Drops every pooled connection (the server was marked down).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Whether a pooled connection may still be open.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.lock().iter().any(|c| !c.is_closed())
    }

    /// Sends `req` on a pooled connection, or a new one through `client`. A pooled connection
    /// that fails (other than by timing out) is replaced by a fresh one once; use this only for
    /// requests that are safe to send twice (every chunk, manifest and beacon request is).
    ///
    /// # Errors
    /// [`ClientError`] from connecting or from the request on the fresh connection.
    pub async fn send(&self, client: &HttpClient, req: Request<Bytes>) -> Result<Response<Bytes>, ClientError> {
        if let Some(mut c) = self.take() {
            match c.send(clone_request(&req)).await {
                Ok(r) => {
                    self.put(c);
                    return Ok(r);
                }
                Err(e @ ClientError::Timeout(_)) => return Err(e),
                Err(e) => {
                    tracing::debug!(base = %self.base, error = %Chain(&e), "pooled connection failed; reconnecting");
                    if c.multiplexed() {
                        self.drop_shared();
                    }
                }
            }
        }
        self.send_fresh(client, req).await
    }

    /// Sends `req` on a new connection, which joins the pool after a complete answer.
    ///
    /// # Errors
    /// [`ClientError`] from connecting or from the request.
    pub async fn send_fresh(&self, client: &HttpClient, req: Request<Bytes>) -> Result<Response<Bytes>, ClientError> {
        let mut c = match &self.via {
            Some(via) => client.connect_via(&self.base, via).await?,
            None => client.connect(&self.base, false).await?,
        };
        let r = c.send(req).await?;
        self.put(c);
        Ok(r)
    }
}

/// A copy of `req` (method, URI, version, headers and body), for sending it again.
#[must_use]
pub fn clone_request(req: &Request<Bytes>) -> Request<Bytes> {
    let mut r = Request::new(req.body().clone());
    *r.method_mut() = req.method().clone();
    *r.uri_mut() = req.uri().clone();
    *r.version_mut() = req.version();
    *r.headers_mut() = req.headers().clone();
    r
}
