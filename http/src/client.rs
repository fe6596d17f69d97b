//! A small HTTP client that speaks what the front speaks: HTTP/1.1 and h2c over `http://`,
//! HTTP/2 or HTTP/1.1 (by ALPN) over `https://`, and HTTP/3 over `h3://`.
//!
//! [`HttpClient::connect`] opens one connection to a base URL; [`Connection::send`] sends
//! requests over it (HTTP/2 and HTTP/3 requests may run concurrently on clones). Response
//! bodies are read whole, up to a size limit, under a per-request timeout.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::debug;

use super::Protocol;
use super::tls::{self, ClientTls, TlsError};
use chorus_core::error::{Cause, Chain, cause, message};
use chorus_core::url::{BaseUrl, Scheme};

/// Why a request failed, and whether trying again (elsewhere) can help.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The base URL cannot be dialled as asked.
    #[error("cannot dial {url}: {reason}")]
    BadUrl {
        /// The base URL.
        url: BaseUrl,
        /// Why not.
        reason: &'static str,
    },
    /// The host name did not resolve (`source`: the resolver's error; none when it answered
    /// with no address).
    #[error("cannot resolve {authority}")]
    Resolve {
        /// `host:port` as given.
        authority: String,
        /// What the resolver said.
        source: Option<std::io::Error>,
    },
    /// TCP or QUIC connect failed.
    #[error("connecting to {addr}")]
    Connect {
        /// The address.
        addr: String,
        /// What failed.
        #[source]
        source: Cause,
    },
    /// The TLS configuration is unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The request failed on an established connection.
    #[error("request failed")]
    Request(#[source] Cause),
    /// The response body passed the size limit.
    #[error("response body larger than {0} bytes")]
    TooLarge(u64),
    /// No complete response within the timeout.
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

impl ClientError {
    /// Whether another attempt, on a new connection or at another server, may succeed.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        !matches!(self, Self::BadUrl { .. } | Self::Tls(_))
    }
}

/// [`ClientError::Request`] caused by `e`.
fn request_failed(e: impl std::error::Error + Send + Sync + 'static) -> ClientError {
    ClientError::Request(cause(e))
}

/// A client; cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    tcp_tls: Arc<rustls::ClientConfig>,
    quic: quinn::ClientConfig,
    timeout: Duration,
    connect_timeout: Duration,
    max_body: u64,
    /// The QUIC endpoints (one UDP socket each, IPv4 and IPv6) every HTTP/3 connection of this
    /// client and its clones goes through, made on first use.
    endpoints: Arc<Mutex<[Option<quinn::Endpoint>; 2]>>,
}

impl HttpClient {
    /// A client trusting `trust`, with a 30 s request timeout and a 64 MiB body limit.
    ///
    /// # Errors
    /// [`ClientError::Tls`] when a CA file is unusable.
    pub fn new(trust: &ClientTls) -> Result<Self, ClientError> {
        let tcp_tls = tls::client_config(trust, tls::ALPN_TCP, false)?;
        let quic_tls = tls::client_config(trust, tls::ALPN_H3, true)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(quic_tls)
            .map_err(|e| ClientError::Tls(TlsError::Generate(cause(e))))?;
        let mut quic = quinn::ClientConfig::new(Arc::new(crypto));
        // Keep-alives while waiting on a slow answer (a server encoding an upload says nothing
        // for minutes); the server's idle timeout would otherwise close the connection.
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(10)));
        quic.transport_config(Arc::new(transport));
        Ok(Self {
            tcp_tls,
            quic,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            max_body: 64 * 1024 * 1024,
            endpoints: Arc::default(),
        })
    }

    /// Sets the per-request timeout (and the connect timeout, if that was not shorter).
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        if self.connect_timeout.as_nanos() > timeout.as_nanos() {
            self.connect_timeout = timeout;
        }
        self
    }

    /// Sets the time a connection (TCP + TLS, or QUIC) may take to set up. A dead QUIC peer
    /// never refuses, so this bounds how long finding out takes.
    #[must_use]
    pub const fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets how HTTP/3 connections notice a dead peer: a keep-alive every `keep_alive`, and
    /// the connection is dropped after `idle` without any packet from the peer (a crashed
    /// server sends nothing, so without this a request waits for its full timeout).
    #[must_use]
    pub fn with_quic_liveness(mut self, keep_alive: Duration, idle: Duration) -> Self {
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(keep_alive));
        transport.max_idle_timeout(quinn::IdleTimeout::try_from(idle).ok());
        self.quic.transport_config(Arc::new(transport));
        self
    }

    /// Sets the response body limit.
    #[must_use]
    pub const fn with_max_body(mut self, max: u64) -> Self {
        self.max_body = max;
        self
    }

    /// Opens a connection to `base` (`scheme://host:port`). `http://` speaks HTTP/1.1, or h2c
    /// when `h2c` is set; `https://` takes what ALPN agrees; `h3://` speaks HTTP/3.
    ///
    /// # Errors
    /// [`ClientError`] when the URL is bad or the connection cannot be made.
    pub async fn connect(&self, base: &BaseUrl, h2c: bool) -> Result<Connection, ClientError> {
        self.connect_with(base, None, h2c, true).await
    }

    /// Opens an HTTP/3 connection for the origin `h3://HOST:PORT` at the alternative
    /// `via` (`HOST:PORT`, an `Alt-Svc` authority): packets go to `via`, while the TLS server
    /// name, the certificate check and the requests' authority stay the origin's (RFC 7838
    /// §2.1: an alternative must prove it speaks for the origin).
    ///
    /// # Errors
    /// [`ClientError`] when the URL is bad or the connection cannot be made.
    pub async fn connect_via(&self, base: &BaseUrl, via: &str) -> Result<Connection, ClientError> {
        self.connect_with(base, Some(via), false, true).await
    }

    async fn connect_with(
        &self,
        base: &BaseUrl,
        via: Option<&str>,
        h2c: bool,
        early: bool,
    ) -> Result<Connection, ClientError> {
        let bad = |reason| ClientError::BadUrl { url: base.clone(), reason };
        let authority = base.authority();
        let host = base.host();
        if via.is_some() && base.scheme() != Scheme::H3 {
            return Err(bad("an alternative service is dialled over HTTP/3 only"));
        }
        let addr = resolve(via.unwrap_or(&authority)).await?;
        let connect = async {
            match base.scheme() {
                Scheme::Http | Scheme::Https => {
                    let tcp = TcpStream::connect(addr)
                        .await
                        .map_err(|e| ClientError::Connect { addr: addr.to_string(), source: cause(e) })?;
                    let _ = tcp.set_nodelay(true);
                    if base.scheme() == Scheme::Http {
                        handshake(tcp, h2c, "http", &authority).await
                    } else {
                        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
                            .map_err(|_| bad("the host is not a TLS server name"))?;
                        let tls = tokio_rustls::TlsConnector::from(self.tcp_tls.clone())
                            .connect(name, tcp)
                            .await
                            .map_err(|e| ClientError::Connect { addr: addr.to_string(), source: cause(e) })?;
                        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                        handshake(tls, h2, "https", &authority).await
                    }
                }
                Scheme::H3 => self.connect_h3(addr, host, &authority, early.then_some((base, via))).await,
            }
        };
        let mut conn =
            tokio::time::timeout(self.connect_timeout, connect).await.map_err(|_| ClientError::Connect {
                addr: authority,
                source: message(format!("no connection within {:?}", self.connect_timeout)),
            })??;
        conn.timeout = self.timeout;
        conn.max_body = self.max_body;
        Ok(conn)
    }

    /// An HTTP/3 connection. With `early` (the base URL, for redialling) and a session ticket
    /// from an earlier connection to this server, requests go out in 0-RTT data (see
    /// [`Connection::send`]).
    async fn connect_h3(
        &self,
        addr: SocketAddr,
        host: &str,
        authority: &str,
        early: Option<(&BaseUrl, Option<&str>)>,
    ) -> Result<Connection, ClientError> {
        let conn_err = |source: Cause| ClientError::Connect { addr: addr.to_string(), source };
        let endpoint = self.endpoint(addr.is_ipv6()).map_err(|e| conn_err(cause(e)))?;
        let connecting = match endpoint.connect_with(self.quic.clone(), addr, host) {
            Ok(c) => c,
            Err(e) => {
                // The endpoint is unusable (its runtime is gone, or it was closed): the next
                // connection makes a new one.
                self.forget_endpoint(addr.is_ipv6());
                return Err(conn_err(cause(e)));
            }
        };
        let attempt = match early {
            Some(again) => connecting.into_0rtt().map(|(conn, accepted)| (conn, accepted, again)),
            None => Err(connecting),
        };
        let (conn, early) = match attempt {
            Ok((conn, accepted, (base, via))) => {
                // The handshake finishes in the background; it must do so within the connect
                // timeout, or the connection is closed (a dead server never answers).
                let (tx, rx) = watch::channel(EarlyData::Pending);
                let (watched, limit) = (conn.clone(), self.connect_timeout);
                tokio::spawn(async move {
                    let state = match tokio::time::timeout(limit, accepted).await {
                        Ok(true) => EarlyData::Accepted,
                        Ok(false) => EarlyData::Rejected,
                        Err(_) => {
                            watched.close(0u32.into(), b"handshake timeout");
                            EarlyData::Failed
                        }
                    };
                    let _ = tx.send(state);
                });
                let via = via.map(str::to_owned);
                (conn, Some(Early { state: rx, client: self.clone(), base: base.clone(), via }))
            }
            Err(connecting) => match connecting.await {
                Ok(conn) => (conn, None),
                Err(e) => {
                    if matches!(e, quinn::ConnectionError::LocallyClosed | quinn::ConnectionError::CidsExhausted) {
                        self.forget_endpoint(addr.is_ipv6());
                    }
                    return Err(conn_err(cause(e)));
                }
            },
        };
        let quic = conn.clone();
        let (mut driver, send) = match h3::client::builder().build(super::h3quic::QuicConn::new(conn)).await {
            Ok(pair) => pair,
            // Early data refused while HTTP/3 was setting up: its control streams are gone.
            Err(_) if early.is_some() => return Box::pin(self.connect_h3(addr, host, authority, None)).await,
            Err(e) => return Err(conn_err(cause(e))),
        };
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mark = closed.clone();
        tokio::spawn(async move {
            let e = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
            mark.store(true, std::sync::atomic::Ordering::Relaxed);
            if !e.is_h3_no_error() {
                debug!(error = %Chain(&e), "HTTP/3 client connection closed");
            }
        });
        Ok(Connection {
            inner: Inner::H3 { send, quic, _endpoint: endpoint, closed },
            scheme: "https",
            authority: authority.to_owned(),
            timeout: self.timeout,
            max_body: self.max_body,
            early,
        })
    }
}

impl HttpClient {
    /// This client's QUIC endpoint for IPv6 or IPv4 destinations, bound on first use to an
    /// ephemeral port on every interface.
    fn endpoint(&self, v6: bool) -> std::io::Result<quinn::Endpoint> {
        let mut slots = self.endpoints.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = &mut slots[usize::from(v6)];
        if let Some(e) = slot {
            return Ok(e.clone());
        }
        let bind: SocketAddr = if v6 {
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 0))
        } else {
            SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, 0))
        };
        let socket = std::net::UdpSocket::bind(bind)?;
        super::udp::size_buffers(&socket, super::udp::QUIC_SOCKET_BUFFER);
        let endpoint =
            quinn::Endpoint::new(quinn::EndpointConfig::default(), None, socket, Arc::new(quinn::TokioRuntime))?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }

    fn forget_endpoint(&self, v6: bool) {
        self.endpoints.lock().unwrap_or_else(PoisonError::into_inner)[usize::from(v6)] = None;
    }
}

async fn resolve(authority: &str) -> Result<SocketAddr, ClientError> {
    let resolve = |source| ClientError::Resolve { authority: authority.to_owned(), source };
    tokio::net::lookup_host(authority).await.map_err(|e| resolve(Some(e)))?.next().ok_or_else(|| resolve(None))
}

async fn handshake<I>(io: I, h2: bool, scheme: &'static str, authority: &str) -> Result<Connection, ClientError>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let err = |e: hyper::Error| ClientError::Connect { addr: authority.to_owned(), source: cause(e) };
    let inner = if h2 {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(err)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %Chain(&e), "HTTP/2 client connection closed");
            }
        });
        Inner::H2(send)
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(err)?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(error = %Chain(&e), "HTTP/1.1 client connection closed");
            }
        });
        Inner::H1(send)
    };
    Ok(Connection {
        inner,
        scheme,
        authority: authority.to_owned(),
        timeout: Duration::from_secs(30),
        max_body: 0,
        early: None,
    })
}

enum Inner {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
    /// The endpoint is kept so its socket lives as long as the connection.
    H3 {
        send: h3::client::SendRequest<super::h3quic::Opener, super::h3quic::SendBuf>,
        quic: quinn::Connection,
        _endpoint: quinn::Endpoint,
        /// Set when the connection has closed (its driver returned).
        closed: Arc<std::sync::atomic::AtomicBool>,
    },
}

/// Where a connection's 0-RTT attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarlyData {
    /// Not tried: no session ticket from this server yet, or not HTTP/3.
    NotTried,
    /// Requests went out in 0-RTT data; the handshake is still completing.
    Pending,
    /// The server took the 0-RTT data: the first requests saved a round trip.
    Accepted,
    /// The server refused it (e.g. it restarted and forgot its tickets); requests are redone.
    Rejected,
    /// The handshake did not complete within the connect timeout; the connection is closed.
    Failed,
}

/// A connection's 0-RTT attempt: its state, and what is needed to redial without it.
#[derive(Clone)]
struct Early {
    state: watch::Receiver<EarlyData>,
    client: HttpClient,
    base: BaseUrl,
    /// The alternative the connection went to, if not the origin's own address.
    via: Option<String>,
}

/// A QUIC connection's counters, as [`Connection::quic_stats`] reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicStats {
    /// The smoothed round-trip time.
    pub rtt: Duration,
    /// UDP datagrams received.
    pub packets_received: u64,
    /// ACK frames sent.
    pub acks_sent: u64,
}

/// One open connection.
pub struct Connection {
    inner: Inner,
    scheme: &'static str,
    authority: String,
    timeout: Duration,
    max_body: u64,
    early: Option<Early>,
}

impl Connection {
    /// The protocol this connection speaks.
    #[must_use]
    pub const fn protocol(&self) -> Protocol {
        match self.inner {
            Inner::H1(_) => Protocol::Http1,
            Inner::H2(_) => Protocol::Http2,
            Inner::H3 { .. } => Protocol::Http3,
        }
    }

    /// Whether the connection is known to be closed (pooled connections are checked before
    /// reuse; an HTTP/3 connection reports closure only when a request fails).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        match &self.inner {
            Inner::H1(s) => s.is_closed(),
            Inner::H2(s) => s.is_closed(),
            Inner::H3 { closed, .. } => closed.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// What the QUIC transport under an HTTP/3 connection has seen so far (`None` over TCP).
    #[must_use]
    pub fn quic_stats(&self) -> Option<QuicStats> {
        let Inner::H3 { quic, .. } = &self.inner else { return None };
        let stats = quic.stats();
        Some(QuicStats {
            rtt: stats.path.rtt,
            packets_received: stats.udp_rx.datagrams,
            acks_sent: stats.frame_tx.acks,
        })
    }

    /// Whether it carries many requests at once (HTTP/2, HTTP/3), so it can be [shared].
    ///
    /// [shared]: Connection::share
    #[must_use]
    pub const fn multiplexed(&self) -> bool {
        !matches!(self.inner, Inner::H1(_))
    }

    /// Another handle to this connection, when it carries many requests at once (HTTP/2,
    /// HTTP/3): requests sent on either share the one connection. `None` for HTTP/1.1, which
    /// carries one request at a time.
    #[must_use]
    pub fn share(&self) -> Option<Self> {
        let inner = match &self.inner {
            Inner::H1(_) => return None,
            Inner::H2(send) => Inner::H2(send.clone()),
            Inner::H3 { send, quic, _endpoint, closed } => Inner::H3 {
                send: send.clone(),
                quic: quic.clone(),
                _endpoint: _endpoint.clone(),
                closed: closed.clone(),
            },
        };
        Some(Self {
            inner,
            scheme: self.scheme,
            authority: self.authority.clone(),
            timeout: self.timeout,
            max_body: self.max_body,
            early: self.early.clone(),
        })
    }

    /// `GET path` (path and query, e.g. `/v1/chunks/…`).
    ///
    /// # Errors
    /// See [`Connection::send`].
    pub async fn get(&mut self, path: &str) -> Result<Response<Bytes>, ClientError> {
        let req = Request::get(path).body(Bytes::new()).map_err(request_failed)?;
        self.send(req).await
    }

    /// Where this connection's 0-RTT attempt stands.
    #[must_use]
    pub fn early_data(&self) -> EarlyData {
        self.early.as_ref().map_or(EarlyData::NotTried, |e| *e.state.borrow())
    }

    /// Sends `req` (its URI is a path and query; the connection supplies scheme and authority)
    /// and reads the whole response.
    ///
    /// On an HTTP/3 connection still completing a 0-RTT handshake, safe requests (GET, HEAD,
    /// OPTIONS) go out at once, in early data; others wait for the handshake, since early data
    /// can be replayed. If the server refuses the early data, a safe request is sent again on a
    /// fresh connection (which then replaces this one).
    ///
    /// # Errors
    /// [`ClientError`] when the request fails, times out or the body is too large.
    pub async fn send(&mut self, req: Request<Bytes>) -> Result<Response<Bytes>, ClientError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.send_early(req)).await.map_err(|_| ClientError::Timeout(timeout))?
    }

    async fn send_early(&mut self, req: Request<Bytes>) -> Result<Response<Bytes>, ClientError> {
        let safe = matches!(*req.method(), http::Method::GET | http::Method::HEAD | http::Method::OPTIONS);
        let Some(early) = self.early.as_mut() else { return self.send_inner(req).await };
        let state = *early.state.borrow();
        match state {
            EarlyData::NotTried | EarlyData::Accepted | EarlyData::Failed => return self.send_inner(req).await,
            EarlyData::Rejected => {
                self.redial().await?;
                return self.send_inner(req).await;
            }
            EarlyData::Pending if !safe => {
                let resolved = early.state.wait_for(|s| *s != EarlyData::Pending).await.map(|s| *s);
                if matches!(resolved, Ok(EarlyData::Rejected)) {
                    self.redial().await?;
                }
                return self.send_inner(req).await;
            }
            EarlyData::Pending => {}
        }
        let again = super::pool::clone_request(&req);
        let first = self.send_inner(req).await;
        if first.is_ok() {
            return first;
        }
        let Some(early) = self.early.as_mut() else { return first };
        if !matches!(early.state.wait_for(|s| *s != EarlyData::Pending).await.map(|s| *s), Ok(EarlyData::Rejected)) {
            return first;
        }
        self.redial().await?;
        self.send_inner(again).await
    }

    /// Replaces a connection whose early data the server refused (its HTTP/3 control streams
    /// went with it) by a fresh one without 0-RTT.
    async fn redial(&mut self) -> Result<(), ClientError> {
        let Some(early) = &self.early else { return Ok(()) };
        let (client, base, via) = (early.client.clone(), early.base.clone(), early.via.clone());
        let mut fresh = client.connect_with(&base, via.as_deref(), false, false).await?;
        fresh.timeout = self.timeout;
        fresh.max_body = self.max_body;
        *self = fresh;
        Ok(())
    }

    async fn send_inner(&mut self, req: Request<Bytes>) -> Result<Response<Bytes>, ClientError> {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let max = self.max_body;
        match &mut self.inner {
            Inner::H1(send) => {
                parts.uri = path.parse::<Uri>().map_err(request_failed)?;
                let host = HeaderValue::from_str(&self.authority).map_err(request_failed)?;
                parts.headers.entry(header::HOST).or_insert(host);
                send.ready().await.map_err(request_failed)?;
                let resp =
                    send.send_request(Request::from_parts(parts, Full::new(body))).await.map_err(request_failed)?;
                collect_hyper(resp, max).await
            }
            Inner::H2(send) => {
                parts.uri =
                    format!("{}://{}{}", self.scheme, self.authority, path).parse::<Uri>().map_err(request_failed)?;
                parts.version = http::Version::HTTP_2;
                send.ready().await.map_err(request_failed)?;
                let resp =
                    send.send_request(Request::from_parts(parts, Full::new(body))).await.map_err(request_failed)?;
                collect_hyper(resp, max).await
            }
            Inner::H3 { send, .. } => {
                parts.uri = format!("https://{}{}", self.authority, path).parse::<Uri>().map_err(request_failed)?;
                let mut stream = send.send_request(Request::from_parts(parts, ())).await.map_err(request_failed)?;
                let sent = async {
                    if !body.is_empty() {
                        stream.send_data(body.into()).await?;
                    }
                    stream.finish().await
                }
                .await;
                // A server may answer before reading the whole request and stop the rest of it
                // (RFC 9114 §4.1, e.g. a refusal of an upload): its answer still counts.
                let resp = match (sent, stream.recv_response().await) {
                    (_, Ok(resp)) => resp,
                    (Err(e), Err(_)) | (Ok(()), Err(e)) => return Err(request_failed(e)),
                };
                let mut buf = BytesMut::new();
                while let Some(mut chunk) = stream.recv_data().await.map_err(request_failed)? {
                    if (buf.len() + chunk.remaining()) as u64 > max {
                        return Err(ClientError::TooLarge(max));
                    }
                    while chunk.has_remaining() {
                        let part = chunk.chunk();
                        buf.extend_from_slice(part);
                        let n = part.len();
                        chunk.advance(n);
                    }
                }
                Ok(resp.map(|()| buf.freeze()))
            }
        }
    }
}

async fn collect_hyper(resp: Response<hyper::body::Incoming>, max: u64) -> Result<Response<Bytes>, ClientError> {
    let (parts, body) = resp.into_parts();
    let limited = http_body_util::Limited::new(body, usize::try_from(max).unwrap_or(usize::MAX));
    let bytes = limited.collect().await.map_err(|e| {
        if e.is::<http_body_util::LengthLimitError>() {
            ClientError::TooLarge(max)
        } else {
            ClientError::Request(Cause::from(e))
        }
    })?;
    Ok(Response::from_parts(parts, bytes.to_bytes()))
}
