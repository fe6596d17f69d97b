//! Binding listeners and serving a [`Handler`] on them until shutdown.
//!
//! ```text
//! Server::bind(urls, tls, config)  → ports known (tests bind port 0 and read local_urls())
//! server.serve(handler, shutdown)  → accept loops; on shutdown: stop accepting, let in-flight
//!                                    requests finish (up to grace_period), close the rest
//! ```
//!
//! One semaphore caps open connections across all listeners; when every permit is taken a new
//! TCP connection is closed at once and a QUIC handshake refused, so clients fail over quickly
//! instead of queueing. The same semaphore tells when every connection has drained.

use chorus_core::error::Chain;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument as _, debug, info, info_span, warn};

use super::config::{ServerConfig, ServerError};
use super::io::{Busy, IdleTimeout};
use super::listen::{ListenUrl, Scheme};
use super::tls::{self, CertifiedKey, TlsError};
use super::{BodyError, Handler, Protocol, RequestContext, json_error};

/// The ACK frequency a QUIC listener asks its clients for (the QUIC ACK frequency extension,
/// which quinn clients support; other clients ignore the request): an ACK after every
/// [`ACK_EVERY`] ack-eliciting packets or [`ACK_DELAY`] after the first unacknowledged one,
/// whichever comes first, rather than after every second packet (RFC 9000 §13.2.2).
///
/// An edge mostly sends: a 128 KiB chunk is about 95 packets, and each ACK the client sends is
/// a datagram the edge must receive, decrypt and process. Acknowledging every tenth packet is
/// what large QUIC deployments do for bulk downloads ("ACK decimation"). The short delay bounds
/// what it can cost when fewer than ten packets are in flight (slow start, a window cut by
/// loss, the tail of a response): the sender waits at most 5 ms more for an ACK, instead of
/// the client's default 25 ms. A packet that arrives two or more places out of order is still
/// acknowledged at once (reordering threshold 2, the extension's default). Measured in
/// docs/edge.md ("Kernel settings", ACKs).
const ACK_EVERY: u32 = 10;
const ACK_DELAY: Duration = Duration::from_millis(5);

fn ack_decimation() -> quinn::AckFrequencyConfig {
    let mut config = quinn::AckFrequencyConfig::default();
    config.ack_eliciting_threshold((ACK_EVERY - 1).into()).max_ack_delay(Some(ACK_DELAY));
    config
}

struct TcpBound {
    url: ListenUrl,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
}

/// Listeners bound and ready to serve.
pub struct Server {
    tcp: Vec<TcpBound>,
    quic: Vec<(ListenUrl, quinn::Endpoint)>,
    config: ServerConfig,
    alt_svc: Option<HeaderValue>,
    cert: Option<Arc<tls::CertSlot>>,
}

impl Server {
    /// Binds every listen URL. `tls` is required when any URL is `https://` or `h3://`. An
    /// `h3://` URL with port 0 binds the UDP port of a TCP listener on the same address when
    /// it is free, so HTTP/3 shares the HTTPS port number as `Alt-Svc` clients expect.
    ///
    /// # Errors
    /// [`ServerError`] for a port in use, missing TLS material, or no URLs.
    pub async fn bind(
        urls: &[ListenUrl],
        tls: Option<&CertifiedKey>,
        config: ServerConfig,
    ) -> Result<Self, ServerError> {
        if urls.is_empty() {
            return Err(ServerError::NoListener);
        }
        let cert = tls.map(tls::CertSlot::new).transpose()?;
        let need_tls = |u: &ListenUrl| cert.as_ref().ok_or_else(|| ServerError::NoCertificate(u.to_string()));
        let mut tcp = Vec::new();
        for u in urls.iter().filter(|u| u.scheme != Scheme::H3) {
            let listener =
                TcpListener::bind(u.addr).await.map_err(|source| ServerError::Bind { url: u.to_string(), source })?;
            let addr = listener.local_addr().map_err(|source| ServerError::Bind { url: u.to_string(), source })?;
            let acceptor = if u.scheme == Scheme::Https {
                Some(TlsAcceptor::from(tls::server_config(need_tls(u)?, tls::ALPN_TCP, false)?))
            } else {
                None
            };
            tcp.push(TcpBound { url: ListenUrl { scheme: u.scheme, addr }, listener, tls: acceptor });
        }
        let mut quic = Vec::new();
        for u in urls.iter().filter(|u| u.scheme == Scheme::H3) {
            let rustls_cfg = tls::server_config(need_tls(u)?, tls::ALPN_H3, true)?;
            let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(rustls_cfg)
                .map_err(|e| ServerError::Tls(TlsError::Generate(chorus_core::error::cause(e))))?;
            let mut server_cfg = quinn::ServerConfig::with_crypto(Arc::new(crypto));
            let mut transport = quinn::TransportConfig::default();
            transport
                .max_idle_timeout(quinn::IdleTimeout::try_from(config.idle_timeout).ok())
                .max_concurrent_bidi_streams(config.max_concurrent_streams.into())
                .max_concurrent_uni_streams(8u32.into())
                .ack_frequency_config(Some(ack_decimation()));
            server_cfg.transport_config(Arc::new(transport));
            let socket = bind_udp(u, &tcp)?;
            let endpoint = quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(server_cfg),
                socket,
                Arc::new(quinn::TokioRuntime),
            )
            .map_err(|source| ServerError::Bind { url: u.to_string(), source })?;
            let addr = endpoint.local_addr().map_err(|source| ServerError::Bind { url: u.to_string(), source })?;
            quic.push((ListenUrl { scheme: Scheme::H3, addr }, endpoint));
        }
        let alt_svc = match config.alt_svc {
            super::AltSvcMode::Auto => quic
                .first()
                .and_then(|(u, _)| HeaderValue::from_str(&format!("h3=\":{}\"; ma=86400", u.addr.port())).ok()),
            super::AltSvcMode::Clear => Some(HeaderValue::from_static("clear")),
            super::AltSvcMode::Off => None,
        };
        Ok(Self { tcp, quic, config, alt_svc, cert })
    }

    /// The certificate every TLS listener presents, to replace on renewal (`None` without TLS).
    #[must_use]
    pub fn certificate(&self) -> Option<Arc<tls::CertSlot>> {
        self.cert.clone()
    }

    /// The bound URLs, with the real ports.
    #[must_use]
    pub fn local_urls(&self) -> Vec<ListenUrl> {
        self.tcp.iter().map(|t| t.url.clone()).chain(self.quic.iter().map(|(u, _)| u.clone())).collect()
    }

    /// Serves `handler` until `shutdown` completes, then drains.
    pub async fn serve<H: Handler>(self, handler: Arc<H>, shutdown: impl Future<Output = ()>) {
        let Self { tcp, quic, config, alt_svc, cert: _ } = self;
        // Every listener serves the read API with the same CORS answers (docs/protocol.md, "CORS"),
        // and before anything else refuses a path with more than one spelling (`//metrics`), so
        // filters and routes see the same path.
        let handler = Arc::new(super::cors::WithCors::new(handler, config.cors.clone()));
        let handler = Arc::new(super::path::CleanPath::new(handler, &config.metrics));
        let config = Arc::new(config);
        let permits = Arc::new(Semaphore::new(config.max_connections));
        let per_source = super::share::PerSource::new(config.per_source_cap());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut loops = tokio::task::JoinSet::new();

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout)
            .max_buf_size(config.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(config.max_concurrent_streams)
            .max_header_list_size(u32::try_from(config.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Duration::from_secs(20))
            .keep_alive_timeout(Duration::from_secs(20));
        let builder = Arc::new(builder);

        for bound in tcp {
            info!(url = %bound.url, "listening");
            let tcp_ctx = TcpLoop {
                handler: handler.clone(),
                permits: permits.clone(),
                per_source: per_source.clone(),
                stop: stop_rx.clone(),
                config: config.clone(),
                builder: builder.clone(),
                alt_svc: alt_svc.clone(),
            };
            loops.spawn(tcp_ctx.run(bound));
        }
        for (url, endpoint) in &quic {
            info!(url = %url, "listening");
            loops.spawn(super::h3::accept_loop(
                endpoint.clone(),
                handler.clone(),
                super::h3::Budgets {
                    permits: permits.clone(),
                    per_source: per_source.clone(),
                    pending: Arc::default(),
                },
                stop_rx.clone(),
                config.clone(),
            ));
        }

        shutdown.await;
        info!(grace = ?config.grace_period, "shutting down: no new connections, draining in-flight requests");
        let _ = stop_tx.send(true);
        while loops.join_next().await.is_some() {}
        let total = u32::try_from(config.max_connections).unwrap_or(u32::MAX);
        match tokio::time::timeout(config.grace_period, permits.acquire_many(total)).await {
            Ok(_) => info!("drained"),
            Err(_) => warn!(
                open = config.max_connections - permits.available_permits(),
                "grace period over, closing remaining connections"
            ),
        }
        for (_, endpoint) in &quic {
            endpoint.close(0u32.into(), b"server shutting down");
        }
        for (_, endpoint) in &quic {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

/// Binds the UDP socket for an `h3://` URL (see [`Server::bind`] for the port-0 rule).
fn bind_udp(u: &ListenUrl, tcp: &[TcpBound]) -> Result<std::net::UdpSocket, ServerError> {
    let socket = bind_udp_port(u, tcp)?;
    super::udp::size_buffers(&socket, super::udp::QUIC_SOCKET_BUFFER);
    Ok(socket)
}

fn bind_udp_port(u: &ListenUrl, tcp: &[TcpBound]) -> Result<std::net::UdpSocket, ServerError> {
    let bind_err = |source| ServerError::Bind { url: u.to_string(), source };
    if u.addr.port() == 0 {
        let twin = tcp
            .iter()
            .find(|t| t.url.addr.ip() == u.addr.ip() && t.url.scheme == Scheme::Https)
            .or_else(|| tcp.iter().find(|t| t.url.addr.ip() == u.addr.ip()));
        if let Some(t) = twin
            && let Ok(s) = std::net::UdpSocket::bind(t.url.addr)
        {
            return Ok(s);
        }
    }
    std::net::UdpSocket::bind(u.addr).map_err(bind_err)
}

/// Everything a TCP accept loop and its connections share.
struct TcpLoop<H> {
    handler: Arc<H>,
    permits: Arc<Semaphore>,
    per_source: Arc<super::share::PerSource>,
    stop: watch::Receiver<bool>,
    config: Arc<ServerConfig>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    alt_svc: Option<HeaderValue>,
}

impl<H: Handler> TcpLoop<H> {
    async fn run(mut self, bound: TcpBound) {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = super::stopped(&mut self.stop) => return,
                a = bound.listener.accept() => a,
            };
            let (stream, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    warn!(error = %Chain(&e), url = %bound.url, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                debug!(%remote, "connection limit reached, closing new connection");
                drop(stream);
                continue;
            };
            // A balancer's connections carry many clients: only others count per source.
            let source_slot = if self.config.trusted_proxies.contains(remote.ip()) {
                None
            } else {
                match self.per_source.try_add(remote.ip()) {
                    Some(s) => Some(s),
                    None => {
                        debug!(%remote, "this source's share of connections is taken, closing new connection");
                        self.config.metrics.refused.with_label_values(&["per_source"]).inc();
                        drop(stream);
                        continue;
                    }
                }
            };
            let _ = stream.set_nodelay(true);
            let conn = TcpConn {
                handler: self.handler.clone(),
                stop: self.stop.clone(),
                config: self.config.clone(),
                builder: self.builder.clone(),
                alt_svc: self.alt_svc.clone(),
            };
            let tls = bound.tls.clone();
            let span = info_span!("conn", %remote, scheme = bound.url.scheme.as_str());
            tokio::spawn(
                async move {
                    conn.serve(stream, remote, tls).await;
                    drop((permit, source_slot));
                }
                .instrument(span),
            );
        }
    }
}

struct TcpConn<H> {
    handler: Arc<H>,
    stop: watch::Receiver<bool>,
    config: Arc<ServerConfig>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    alt_svc: Option<HeaderValue>,
}

impl<H: Handler> TcpConn<H> {
    async fn serve(self, mut stream: TcpStream, mut remote: SocketAddr, tls: Option<TlsAcceptor>) {
        // A trusted proxy may say who the client is: with a PROXY header first on the
        // connection, or with X-Forwarded-For on each request, as its mode says (never both).
        let trusted = &self.config.trusted_proxies;
        let forwarded = trusted.forwards_for(remote.ip()).then(|| trusted.clone());
        if trusted.sends_proxy_header(remote.ip()) {
            match super::proxy::read_header(&mut stream, self.config.header_read_timeout).await {
                Ok(Some(client)) => remote = client,
                Ok(None) => {} // a health check, or a header that names no client
                Err(e) => {
                    debug!(error = %Chain(&e), "bad PROXY protocol header; closing");
                    return;
                }
            }
        }
        let busy = Busy::default();
        let mut io = IdleTimeout::new(stream, self.config.idle_timeout, busy.clone());
        match tls {
            None if self.config.h1_fast_path => {
                let limits = super::h1fast::Limits {
                    max_header_bytes: self.config.max_header_bytes,
                    max_uri_bytes: self.config.max_uri_bytes,
                    header_read_timeout: self.config.header_read_timeout,
                    idle_timeout: self.config.idle_timeout,
                    forwarded: forwarded.clone(),
                };
                let ctx = RequestContext { protocol: Protocol::Http1, tls: false, remote, sendfile: true };
                let mut stop = self.stop.clone();
                let outcome = super::h1fast::serve(
                    &mut io,
                    self.handler.as_ref(),
                    ctx,
                    &limits,
                    self.alt_svc.as_ref(),
                    &mut stop,
                )
                .await;
                match outcome {
                    Ok(super::h1fast::Outcome::Done) => {}
                    Ok(super::h1fast::Outcome::HandOver(prefix)) => {
                        self.serve_io(super::h1fast::Rewind::new(prefix, io), remote, false, busy, forwarded).await;
                    }
                    Err(e) => debug!(error = %Chain(&e), "connection ended with an error"),
                }
            }
            None => self.serve_io(io, remote, false, busy, forwarded).await,
            Some(acceptor) => match tokio::time::timeout(self.config.handshake_timeout, acceptor.accept(io)).await {
                Ok(Ok(tls_stream)) => self.serve_io(tls_stream, remote, true, busy, forwarded).await,
                Ok(Err(e)) => debug!(error = %Chain(&e), "TLS handshake failed"),
                Err(_) => debug!("TLS handshake timed out"),
            },
        }
    }

    async fn serve_io<I>(
        self,
        io: I,
        remote: SocketAddr,
        tls: bool,
        busy: Busy,
        forwarded: Option<super::proxy::TrustedProxies>,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Self { handler, mut stop, config, builder, alt_svc } = self;
        // The idle clock starts now: a connection handed over by the fast path may have served
        // requests there for longer than the idle timeout.
        busy.touch();
        let idle_requests = busy.clone();
        let max_uri = config.max_uri_bytes;
        let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
            let handler = handler.clone();
            let alt_svc = alt_svc.clone();
            let working = busy.enter();
            let remote = match &forwarded {
                Some(t) => super::proxy::forwarded_remote(t, remote, req.headers()),
                None => remote,
            };
            async move {
                let _working = working;
                let protocol = if req.version() == http::Version::HTTP_2 { Protocol::Http2 } else { Protocol::Http1 };
                let ctx = RequestContext { protocol, tls, remote, sendfile: false };
                let mut resp = if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > max_uri {
                    json_error(StatusCode::URI_TOO_LONG, format!("request target longer than {max_uri} bytes"))
                } else {
                    let req =
                        req.map(|b| b.map_err(|e| BodyError::Transport(chorus_core::error::cause(e))).boxed_unsync());
                    handler.call(req, ctx).await
                };
                if let Some(v) = alt_svc {
                    resp.headers_mut().insert(header::ALT_SVC, v);
                }
                Ok::<_, Infallible>(resp)
            }
        });
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let result = tokio::select! {
            biased;
            r = conn.as_mut() => r,
            _ = super::stopped(&mut stop) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
            // No request for the idle timeout: closed, whatever else moves on it (HTTP/2 PING
            // acknowledgements, a keep-alive connection held open). A response still being
            // sent finishes first (a graceful close).
            () = idle_requests.no_request_for(config.idle_timeout) => {
                debug!("no request for the idle timeout; closing the connection");
                config.metrics.refused.with_label_values(&["idle"]).inc();
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            debug!(error = %Chain(&*e), "connection ended with an error");
        }
    }
}
