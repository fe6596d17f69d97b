//! Upstreams: where misses are fetched from.
//!
//! Two kinds: origins (`--upstream`), tried in the order given, and parent edges (`--parent`),
//! tried first, in an order that depends on the chunk (rendezvous hashing of the chunk id), so
//! each chunk has a home parent and a tier of edges caches each chunk once. Every attempt has a
//! timeout; an error, a timeout, a 5xx or a body whose hash is not the chunk's id (a lying or
//! corrupting upstream) moves on to the next upstream. Errors say whether they came from
//! upstream and map to 502/504/404 for the client.
//!
//! Health is tracked two ways: passively (three failures in a row mark an upstream down) and
//! actively (`GET /healthz` every `health_interval`, which also brings it back). Upstreams
//! marked down are skipped, so with every upstream down a miss fails at once instead of
//! waiting on timeouts. Connections are pooled per upstream and reused: HTTP/1.1 ones one request
//! at a time (up to 32 kept), one HTTP/2 or HTTP/3 connection shared by every request in flight.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::ChunkId;
use chorus_core::error::{Cause, Chain, cause, message};
use chorus_core::url::BaseUrl;
use chorus_http::client::{ClientError, HttpClient};
use chorus_http::pool::{Pool, clone_request};
use chorus_http::tls::ClientTls;
use http::{HeaderMap, Request, Response, StatusCode};
use prometheus::{HistogramVec, IntCounterVec, IntGaugeVec};
use tracing::{info, warn};

use health::{Failure, Health, Verdict};

mod health;
mod order;

/// Idle connections kept per upstream.
const POOL_MAX: usize = 32;

/// How upstreams are contacted.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Time limit of one attempt at one upstream, connecting included (default 5 s).
    pub timeout: Duration,
    /// Time limit of setting up a connection (default 1 s). An upstream that cannot be
    /// connected to is marked down at once; health checks bring it back.
    pub connect_timeout: Duration,
    /// How often each upstream's `/healthz` is checked (default 2 s).
    pub health_interval: Duration,
    /// Failures in a row that mark an upstream down (default 3).
    pub fail_threshold: u32,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            health_interval: Duration::from_secs(2),
            fail_threshold: 3,
        }
    }
}

/// Why a fetch failed, after every usable upstream was tried. `Clone`: a coalesced fetch hands
/// its failure to every request that waited on it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// Upstreams answered 404.
    #[error("not found upstream")]
    NotFound,
    /// No upstream is healthy: nothing was tried.
    #[error("no healthy upstream")]
    NoUpstream,
    /// The last upstream tried did not answer in time.
    #[error("upstream timed out")]
    Timeout,
    /// The last upstream tried answered with a server error.
    #[error("upstream {url} answered {status}")]
    Status {
        /// The upstream.
        url: String,
        /// Its answer.
        status: StatusCode,
    },
    /// The last upstream tried answered, but not with what was asked for (a body that does not
    /// hash to the chunk, a manifest that does not verify).
    #[error("upstream {url} sent a bad answer")]
    BadAnswer {
        /// The upstream.
        url: String,
        /// What is wrong with the answer.
        #[source]
        why: Cause,
    },
    /// The request to the last upstream tried failed (connecting, or on the connection).
    #[error("request to upstream {url} failed")]
    Request {
        /// The upstream.
        url: String,
        /// The client's error.
        #[source]
        source: Cause,
    },
    /// An upstream's answer passed its checks but does not fit the request (a manifest of
    /// another track, a 304 to an unconditional request).
    #[error("upstream answer does not fit the request: {what}")]
    Mismatch {
        /// What did not fit.
        what: String,
        /// The parser's error behind it, if one.
        source: Option<Cause>,
    },
    /// The task fetching for this request ended without an answer (the edge is stopping).
    #[error("the {0} ended without an answer")]
    Lost(&'static str),
}

impl FetchError {
    /// The status to answer the client with.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        match self {
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Timeout => StatusCode::GATEWAY_TIMEOUT,
            Self::NoUpstream
            | Self::Status { .. }
            | Self::BadAnswer { .. }
            | Self::Request { .. }
            | Self::Mismatch { .. }
            | Self::Lost(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// Checks an upstream's answer before it is accepted; `Err` says what is wrong with it.
pub type Check<'a> = dyn Fn(&Response<Bytes>) -> Result<(), Cause> + Sync + 'a;

/// Whether an upstream is an origin or a parent edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An origin, tried in configured order.
    Origin,
    /// A parent edge, chosen per chunk by rendezvous hashing.
    Parent,
}

/// One upstream.
pub struct Upstream {
    /// Its base URL (`h3://host:port`, `https://…`, `http://…`).
    pub url: BaseUrl,
    /// The base URL as text: its `upstream` metric label, and what errors name.
    pub name: String,
    /// Origin or parent.
    pub kind: Kind,
    health: Health,
    pool: Pool,
}

impl Upstream {
    /// Marks the upstream down; returns whether it was up. Wakes requests waiting on it and
    /// drops its pooled connections.
    fn mark_down(&self) -> bool {
        self.pool.clear();
        self.health.mark_down()
    }

    /// Whether it is considered up.
    pub fn healthy(&self) -> bool {
        self.health.is_up()
    }
}

/// Upstream metrics.
#[derive(Clone)]
pub struct UpstreamMetrics {
    /// `chorus_edge_upstream_requests_total{upstream,status}`.
    pub requests: IntCounterVec,
    /// `chorus_edge_upstream_seconds{upstream}`.
    pub seconds: HistogramVec,
    /// `chorus_edge_upstream_healthy{upstream}`.
    pub healthy: IntGaugeVec,
    /// Chunks an upstream sent whose bytes did not match their id.
    pub bad_chunks: prometheus::IntCounter,
}

/// The set of upstreams of an edge.
pub struct Upstreams {
    list: Vec<Arc<Upstream>>,
    client: HttpClient,
    cfg: UpstreamConfig,
    metrics: UpstreamMetrics,
}

/// What an attempt at one upstream came to.
enum Attempt {
    Done(Response<Bytes>),
    NotFound,
    Failed(FetchError),
}

impl Upstreams {
    /// Upstreams from origin and parent URLs.
    ///
    /// # Errors
    /// [`ClientError`] when the TLS trust settings are unusable.
    pub fn new(
        origins: &[BaseUrl],
        parents: &[BaseUrl],
        trust: &ClientTls,
        cfg: UpstreamConfig,
        metrics: UpstreamMetrics,
    ) -> Result<Self, ClientError> {
        let client = HttpClient::new(trust)?
            .with_timeout(cfg.timeout)
            .with_connect_timeout(cfg.connect_timeout)
            .with_quic_liveness(Duration::from_secs(1), Duration::from_secs(3))
            .with_max_body(chorus_core::manifest::limits::MAX_BYTES as u64 * 2);
        let mk = |url: &BaseUrl, kind| {
            let name = url.to_string();
            metrics.healthy.with_label_values(&[name.as_str()]).set(1);
            Arc::new(Upstream {
                pool: Pool::new(url.clone(), POOL_MAX),
                url: url.clone(),
                name,
                kind,
                health: Health::default(),
            })
        };
        let list =
            parents.iter().map(|u| mk(u, Kind::Parent)).chain(origins.iter().map(|u| mk(u, Kind::Origin))).collect();
        Ok(Self { list, client, cfg, metrics })
    }

    /// Every upstream.
    #[must_use]
    pub fn all(&self) -> &[Arc<Upstream>] {
        &self.list
    }

    /// Whether at least one upstream is up (readiness).
    #[must_use]
    pub fn any_healthy(&self) -> bool {
        self.list.iter().any(|u| u.healthy())
    }

    /// Healthy upstreams in the order to try: parents by rendezvous hash of `key`, then
    /// origins in configured order.
    #[must_use]
    pub fn order(&self, key: Option<&ChunkId>) -> Vec<Arc<Upstream>> {
        let up = |kind| self.list.iter().filter(move |u| u.kind == kind && u.healthy());
        let parents: Vec<&Arc<Upstream>> = up(Kind::Parent).collect();
        let urls: Vec<&str> = parents.iter().map(|u| u.name.as_str()).collect();
        order::rendezvous(&urls, key).into_iter().map(|i| parents[i].clone()).chain(up(Kind::Origin).cloned()).collect()
    }

    fn failed(&self, u: &Upstream, why: Failure) {
        match u.health.failed(why, self.cfg.fail_threshold) {
            Verdict::StillUp => u.pool.clear(),
            Verdict::Down { failures } => {
                if u.mark_down() {
                    warn!(upstream = %u.url, failures, reason = why.as_str(), "upstream marked down");
                    self.metrics.healthy.with_label_values(&[u.name.as_str()]).set(0);
                }
            }
        }
    }

    fn succeeded(&self, u: &Upstream) {
        if u.health.succeeded() {
            info!(upstream = %u.url, "upstream back up");
            self.metrics.healthy.with_label_values(&[u.name.as_str()]).set(1);
        }
    }

    /// One request to one upstream over a pooled connection (a stale pooled connection is
    /// replaced by a new one once).
    async fn send(&self, u: &Upstream, req: &Request<Bytes>) -> Result<Response<Bytes>, ClientError> {
        // Give up as soon as the upstream is marked down (a health check failed meanwhile):
        // a request on a connection to a crashed server would otherwise wait for its timeout.
        let mut downs = u.health.downs();
        tokio::select! {
            r = u.pool.send(&self.client, clone_request(req)) => r,
            _ = downs.changed() => {
                Err(ClientError::Request(message("marked down while the request waited")))
            }
        }
    }

    /// [`Upstreams::send`] within one deadline: "one attempt" includes a reconnect after a
    /// stale pooled connection.
    async fn send_within(&self, u: &Upstream, req: &Request<Bytes>) -> Result<Response<Bytes>, ClientError> {
        tokio::time::timeout(self.cfg.timeout, self.send(u, req))
            .await
            .map_err(|_| ClientError::Timeout(self.cfg.timeout))?
    }

    async fn attempt(&self, u: &Upstream, req: &Request<Bytes>, check: &Check<'_>) -> Attempt {
        let started = Instant::now();
        let result = self.send_within(u, req).await;
        self.metrics.seconds.with_label_values(&[u.name.as_str()]).observe(started.elapsed().as_secs_f64());
        let label = match &result {
            Ok(r) => r.status().as_str().to_owned(),
            Err(ClientError::Timeout(_)) => "timeout".to_owned(),
            Err(_) => "error".to_owned(),
        };
        self.metrics.requests.with_label_values(&[u.name.as_str(), &label]).inc();
        match result {
            Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                self.succeeded(u);
                Attempt::NotFound
            }
            Ok(r) if r.status().is_server_error() => {
                self.failed(u, Failure::ServerError);
                Attempt::Failed(FetchError::Status { url: u.name.clone(), status: r.status() })
            }
            Ok(r) => match check(&r) {
                Ok(()) => {
                    self.succeeded(u);
                    Attempt::Done(r)
                }
                Err(why) => {
                    warn!(upstream = %u.url, reason = %Chain(&*why), "upstream sent a bad answer; trying the next one");
                    self.failed(u, Failure::BadAnswer);
                    Attempt::Failed(FetchError::BadAnswer { url: u.name.clone(), why })
                }
            },
            Err(ClientError::Timeout(_)) => {
                self.failed(u, Failure::Timeout);
                Attempt::Failed(FetchError::Timeout)
            }
            Err(e) => {
                // A bad URL or unusable TLS settings will not mend by retrying: down at once.
                let why = match &e {
                    ClientError::Connect { .. } => Failure::Connect,
                    e if e.is_retryable() => Failure::Request,
                    _ => Failure::Unusable,
                };
                self.failed(u, why);
                Attempt::Failed(FetchError::Request { url: u.name.clone(), source: cause(e) })
            }
        }
    }

    /// `GET path` from the first upstream that answers well (`check` passes), in [`order`]
    /// for `key`.
    ///
    /// # Errors
    /// [`FetchError`]: 404 as soon as an upstream says so (upstreams hold one catalogue: the
    /// others are not asked), else the last failure.
    ///
    /// [`order`]: Upstreams::order
    pub async fn get(
        &self,
        path: &str,
        headers: HeaderMap,
        key: Option<&ChunkId>,
        check: &Check<'_>,
    ) -> Result<Response<Bytes>, FetchError> {
        let order = self.order(key);
        if order.is_empty() {
            return Err(FetchError::NoUpstream);
        }
        let mut req = Request::new(Bytes::new());
        *req.uri_mut() = path.parse().map_err(|e| FetchError::Mismatch {
            what: format!("request path {path:?}"),
            source: Some(chorus_core::error::cause(e)),
        })?;
        *req.headers_mut() = headers;
        let mut last = FetchError::NoUpstream;
        for u in order {
            match self.attempt(&u, &req, check).await {
                Attempt::Done(r) => return Ok(r),
                // Upstreams hold the same catalogue: a 404 is the answer, not a failure to try
                // elsewhere (asking every upstream for a made-up id would multiply a flood).
                Attempt::NotFound => return Err(FetchError::NotFound),
                Attempt::Failed(e) => last = e,
            }
        }
        Err(last)
    }

    /// Fetches chunk `id`, accepting only bytes that hash to it.
    ///
    /// # Errors
    /// [`FetchError`] when no upstream delivered the chunk.
    pub async fn fetch_chunk(&self, id: &ChunkId) -> Result<Bytes, FetchError> {
        let check = |r: &Response<Bytes>| {
            if r.status() != StatusCode::OK {
                return Err(message(format!("unexpected status {}", r.status())));
            }
            if id.matches(r.body()) {
                Ok(())
            } else {
                self.metrics.bad_chunks.inc();
                Err(message(format!("body of {} bytes does not hash to chunk {id}", r.body().len())))
            }
        };
        let r = self.get(&chorus_core::route::chunk(id, None), HeaderMap::new(), Some(id), &check).await?;
        Ok(r.into_body())
    }

    /// The configured health-check interval.
    #[must_use]
    pub const fn health_interval(&self) -> Duration {
        self.cfg.health_interval
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::SocketAddr;
    use std::sync::Mutex;

    use chorus_http::{Body, Handler, ListenUrl, RequestContext, ResponseBody, Server, ServerConfig, full};

    use super::*;

    /// Answers every request after a pause (so requests overlap), noting the connection
    /// (client address) each came on.
    struct Recorder(Mutex<HashSet<SocketAddr>>);

    impl Handler for Recorder {
        async fn call(&self, _req: Request<Body>, ctx: RequestContext) -> Response<ResponseBody> {
            self.0.lock().unwrap().insert(ctx.remote);
            tokio::time::sleep(Duration::from_millis(50)).await;
            full(StatusCode::OK, "text/plain", "ok")
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn http2_and_http3_upstreams_share_one_connection() {
        let dir = tempfile::tempdir().unwrap();
        let ck = chorus_http::tls::load_or_generate(None, None, dir.path()).unwrap();
        for scheme in ["https", "h3"] {
            let url: ListenUrl = format!("{scheme}://127.0.0.1:0").parse().unwrap();
            let server = Server::bind(&[url], Some(&ck), ServerConfig::default()).await.unwrap();
            let base = server.local_urls()[0].base();
            let seen = Arc::new(Recorder(Mutex::new(HashSet::new())));
            tokio::spawn(server.serve(seen.clone(), std::future::pending()));
            let trust = ClientTls { ca_files: vec![ck.cert_path.clone()], insecure: false };
            let ups = Arc::new(
                Upstreams::new(
                    std::slice::from_ref(&base),
                    &[],
                    &trust,
                    UpstreamConfig::default(),
                    crate::metrics::EdgeMetrics::new().upstream,
                )
                .unwrap(),
            );
            let ok = |r: &Response<Bytes>| if r.status() == StatusCode::OK { Ok(()) } else { Err(message("status")) };
            // One request opens the connection; then 50 at once share it.
            ups.get("/a", HeaderMap::new(), None, &ok).await.unwrap();
            let all: Vec<_> = (0..50)
                .map(|n| {
                    let ups = ups.clone();
                    tokio::spawn(async move { ups.get(&format!("/{n}"), HeaderMap::new(), None, &ok).await })
                })
                .collect();
            for t in all {
                assert_eq!(t.await.unwrap().unwrap().body().as_ref(), b"ok");
            }
            let connections = seen.0.lock().unwrap().clone();
            assert_eq!(connections.len(), 1, "{base}: connections {connections:?}");
        }
    }
}
