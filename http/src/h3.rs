//! The HTTP/3 side of the front: QUIC connections from a quinn endpoint, each request handed to
//! the same [`Handler`] as TCP requests.

use chorus_core::error::Chain;
use std::sync::Arc;

use bytes::Buf as _;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt as _, StreamBody};
use tokio::sync::{Semaphore, watch};
use tracing::{Instrument as _, debug, info_span, warn};

use super::config::ServerConfig;
use super::h3quic::{self, SendBuf};
use super::{BodyError, Handler, Protocol, RequestContext, ResponseBody, json_error};

// Bodies go to h3 as `SendBuf` so that our transport hands them to quinn without a copy.
type H3Conn = h3::server::Connection<h3quic::QuicConn, SendBuf>;
type H3Stream = h3::server::RequestStream<h3quic::BidiStream, SendBuf>;

/// The budgets a QUIC connection is counted against.
pub(super) struct Budgets {
    /// Serving slots, shared with TCP: taken once the handshake completes.
    pub(super) permits: Arc<Semaphore>,
    /// Connections per source host, shared with TCP.
    pub(super) per_source: Arc<super::share::PerSource>,
    /// Handshakes in progress (this listener's own).
    pub(super) pending: Arc<super::share::Pending>,
}

pub(super) async fn accept_loop<H: Handler>(
    endpoint: quinn::Endpoint,
    handler: Arc<H>,
    budgets: Budgets,
    mut stop: watch::Receiver<bool>,
    config: Arc<ServerConfig>,
) {
    use super::share::{QuicAdmit, quic_admit};
    let refused = |reason: &str| config.metrics.refused.with_label_values(&[reason]).inc();
    loop {
        let incoming = tokio::select! {
            biased;
            _ = super::stopped(&mut stop) => return,
            i = endpoint.accept() => i,
        };
        let Some(incoming) = incoming else { return };
        let remote = incoming.remote_address();
        // Handshakes in progress hold no serving slot, only a place in their own budget; past
        // a threshold an unvalidated address must first answer a Retry, which a spoofed source
        // never can.
        let pending = budgets.pending.count();
        match quic_admit(
            incoming.remote_address_validated(),
            incoming.may_retry(),
            pending,
            config.retry_threshold(),
            config.pending_handshakes(),
        ) {
            QuicAdmit::Retry => {
                refused("quic_retry");
                if let Err(e) = incoming.retry() {
                    e.into_incoming().refuse();
                }
                continue;
            }
            QuicAdmit::Refuse => {
                debug!(%remote, pending, "too many QUIC handshakes in progress, refusing");
                refused("handshakes");
                incoming.refuse();
                continue;
            }
            QuicAdmit::Accept => {}
        }
        // A host whose share is already taken by established connections is refused before
        // anything is served: HTTP/3 answers requests during the handshake (0.5-RTT), before
        // the connection is counted against its source. (Established connections only: a
        // spoofed Initial cannot fill the share of the host it names.)
        if !config.trusted_proxies.contains(remote.ip()) && budgets.per_source.is_full(remote.ip()) {
            debug!(%remote, "this source's share of connections is taken; refusing QUIC connection");
            refused("per_source");
            incoming.refuse();
            continue;
        }
        let Some(handshaking) = budgets.pending.try_start(config.pending_handshakes()) else {
            refused("handshakes");
            incoming.refuse();
            continue;
        };
        if budgets.permits.available_permits() == 0 {
            debug!(%remote, "connection limit reached, refusing QUIC connection");
            incoming.refuse();
            continue;
        }
        let (handler, stop, config, permits) = (handler.clone(), stop.clone(), config.clone(), budgets.permits.clone());
        let per_source = budgets.per_source.clone();
        tokio::spawn(
            async move {
                let connecting = match incoming.accept() {
                    Ok(c) => c,
                    Err(e) => return debug!(error = %Chain(&e), "QUIC accept failed"),
                };
                // Serve at once (0-RTT requests of resumed connections, 0.5-RTT answers); the
                // handshake completes meanwhile, and must do so in time.
                let (conn, handshake) = match connecting.into_0rtt() {
                    Ok((conn, accepted)) => {
                        let (done_tx, done_rx) = watch::channel(false);
                        let watched = conn.clone();
                        let limit = config.handshake_timeout;
                        tokio::spawn(async move {
                            // Resolved also when the connection is lost: the handshake counts as
                            // done only on a connection that is still open.
                            if tokio::time::timeout(limit, accepted).await.is_ok() {
                                if watched.close_reason().is_none() {
                                    let _ = done_tx.send(true);
                                }
                            } else {
                                debug!("QUIC handshake timed out");
                                watched.close(0u32.into(), b"handshake timeout");
                            }
                        });
                        (conn, done_rx)
                    }
                    Err(connecting) => match tokio::time::timeout(config.handshake_timeout, connecting).await {
                        Ok(Ok(conn)) => (conn, watch::channel(true).1),
                        Ok(Err(e)) => return debug!(error = %Chain(&e), "QUIC handshake failed"),
                        Err(_) => return debug!("QUIC handshake timed out"),
                    },
                };
                // Once the handshake completes, the connection leaves the handshake budget and
                // takes a serving slot (or is closed when none is left).
                let mut done = handshake.clone();
                let watched = conn.clone();
                // Counted against its source only then too: a spoofed address never completes a
                // handshake, so it cannot use up the share of the host it names.
                let trusted = config.trusted_proxies.contains(remote.ip());
                let refused_slot = config.metrics.refused.with_label_values(&["per_source"]);
                let slot = async move {
                    let completed = done.wait_for(|d| *d).await.is_ok();
                    drop(handshaking);
                    if !completed {
                        return None;
                    }
                    let source = if trusted { None } else { per_source.try_add(remote.ip()) };
                    if !trusted && source.is_none() {
                        debug!("this source's share of connections is taken; closing");
                        refused_slot.inc();
                        watched.close(0u32.into(), b"too many connections from this address");
                        return None;
                    }
                    let permit = permits.try_acquire_owned().ok();
                    if permit.is_none() {
                        debug!("connection limit reached after the handshake; closing");
                        watched.close(0u32.into(), b"server busy");
                    }
                    permit.map(|p| (p, source))
                };
                let ((), held) = tokio::join!(serve_conn(conn, handler, stop, &config, handshake), slot);
                drop(held);
            }
            .instrument(info_span!("conn", %remote, scheme = "h3")),
        );
    }
}

async fn serve_conn<H: Handler>(
    conn: quinn::Connection,
    handler: Arc<H>,
    mut stop: watch::Receiver<bool>,
    config: &ServerConfig,
    handshake: watch::Receiver<bool>,
) {
    let remote = conn.remote_address();
    let mut h3: H3Conn = match h3::server::builder()
        .max_field_section_size(config.max_header_bytes as u64)
        .build(h3quic::QuicConn::new(conn))
        .await
    {
        Ok(c) => c,
        Err(e) => return debug!(error = %Chain(&e), "HTTP/3 setup failed"),
    };
    let mut requests = tokio::task::JoinSet::new();
    let mut stopping = false;
    let mut last_request = tokio::time::Instant::now();
    // One timer for the connection, moved only when it fires (not on every request).
    let idle = tokio::time::sleep(config.idle_timeout);
    tokio::pin!(idle);
    loop {
        let next = tokio::select! {
            r = h3.accept() => r,
            Some(_) = requests.join_next(), if !requests.is_empty() => {
                last_request = tokio::time::Instant::now();
                continue;
            }
            // No request for the idle timeout: closed, whatever keep-alive PINGs arrive.
            () = &mut idle, if !stopping => {
                let due = last_request + config.idle_timeout;
                if !requests.is_empty() || tokio::time::Instant::now() < due {
                    idle.as_mut().reset(if requests.is_empty() { due } else { tokio::time::Instant::now() + config.idle_timeout });
                    continue;
                }
                debug!("no request for the idle timeout; closing the connection");
                config.metrics.refused.with_label_values(&["idle"]).inc();
                if let Err(e) = h3.shutdown(0).await {
                    debug!(error = %Chain(&e), "HTTP/3 shutdown");
                }
                break;
            }
            _ = super::stopped(&mut stop), if !stopping => {
                stopping = true;
                // GOAWAY: the client finishes what it started and opens no new requests here.
                if let Err(e) = h3.shutdown(0).await {
                    debug!(error = %Chain(&e), "HTTP/3 shutdown");
                }
                continue;
            }
        };
        match next {
            Ok(Some(resolver)) => {
                last_request = tokio::time::Instant::now();
                let handler = handler.clone();
                let limits = Limits {
                    max_uri: config.max_uri_bytes,
                    header_timeout: config.header_read_timeout,
                    idle: config.idle_timeout,
                    handshake_timeout: config.handshake_timeout,
                    clear_alt_svc: config.alt_svc == super::AltSvcMode::Clear,
                    forwarded: config.trusted_proxies.forwards_for(remote.ip()).then(|| config.trusted_proxies.clone()),
                };
                let handshake = handshake.clone();
                requests.spawn(async move {
                    // The request head must arrive in time, as on TCP.
                    match tokio::time::timeout(limits.header_timeout, resolver.resolve_request()).await {
                        Ok(Ok((req, stream))) => {
                            serve_request(req, stream, handler.as_ref(), remote, limits, handshake).await;
                        }
                        Ok(Err(e)) => debug!(error = %Chain(&e), "bad HTTP/3 request"),
                        Err(_) => debug!("HTTP/3 request head timed out"),
                    }
                });
            }
            Ok(None) => break,
            Err(e) => {
                if !e.is_h3_no_error() {
                    debug!(error = %Chain(&e), "HTTP/3 connection ended");
                }
                break;
            }
        }
        // Reap finished request tasks so the set stays small on long connections.
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
}

/// Per-request limits, copied from the [`ServerConfig`].
#[derive(Clone)]
struct Limits {
    max_uri: usize,
    header_timeout: std::time::Duration,
    idle: std::time::Duration,
    handshake_timeout: std::time::Duration,
    /// Set when the connection comes from a trusted proxy in the `X-Forwarded-For` mode:
    /// that header says who the client is. (There is no PROXY protocol for QUIC: in that
    /// mode a QUIC connection's own address counts.)
    forwarded: Option<super::proxy::TrustedProxies>,
    /// `--alt-svc clear`: said over HTTP/3 too, so that clients already on it forget it.
    clear_alt_svc: bool,
}

/// Whether `method` may run on data that could be a replay (0-RTT early data): the safe
/// methods of RFC 9110 §9.2.1. Others wait for the handshake.
fn safe_before_handshake(method: &http::Method) -> bool {
    matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS)
}

async fn serve_request<H: Handler>(
    req: Request<()>,
    stream: H3Stream,
    handler: &H,
    remote: std::net::SocketAddr,
    limits: Limits,
    mut handshake: watch::Receiver<bool>,
) {
    let max_uri = limits.max_uri;
    // A request that may have come in 0-RTT data and is not safe to replay runs only once the
    // handshake has completed (a replayed ClientHello never completes it): RFC 8470 §3.
    let too_early = if !safe_before_handshake(req.method()) && !*handshake.borrow() {
        !matches!(tokio::time::timeout(limits.handshake_timeout, handshake.wait_for(|done| *done)).await, Ok(Ok(_)))
    } else {
        false
    };
    let head_only = req.method() == http::Method::HEAD;
    let (mut send, recv) = stream.split();
    let resp = if too_early {
        json_error(StatusCode::TOO_EARLY, "the handshake did not complete; retry")
    } else if req.uri().path_and_query().map_or(0, |p| p.as_str().len()) > max_uri {
        json_error(StatusCode::URI_TOO_LONG, format!("request target longer than {max_uri} bytes"))
    } else {
        let body = futures_util::stream::unfold(recv, |mut recv| async move {
            match recv.recv_data().await {
                Ok(Some(mut buf)) => {
                    let bytes = buf.copy_to_bytes(buf.remaining());
                    Some((Ok(Frame::data(bytes)), recv))
                }
                Ok(None) => None,
                Err(e) => Some((Err(BodyError::Transport(chorus_core::error::cause(e))), recv)),
            }
        });
        let remote = match &limits.forwarded {
            Some(t) => super::proxy::forwarded_remote(t, remote, req.headers()),
            None => remote,
        };
        let req = req.map(|()| StreamBody::new(body).boxed_unsync());
        let ctx = RequestContext { protocol: Protocol::Http3, tls: true, remote, sendfile: false };
        handler.call(req, ctx).await
    };
    let mut resp = resp;
    if limits.clear_alt_svc {
        resp.headers_mut().insert(http::header::ALT_SVC, http::HeaderValue::from_static("clear"));
    }
    if let Err(e) = send_response(&mut send, resp, head_only, limits.idle).await {
        debug!(error = %Chain(&e), "sending HTTP/3 response failed");
    }
}

/// Sends `resp`; without its body for `HEAD` (hyper strips it on TCP; here it is ours to do).
/// A client that takes more than `idle` to accept a piece of the body is cut off.
async fn send_response(
    send: &mut h3::server::RequestStream<h3quic::SendHalf, SendBuf>,
    resp: Response<ResponseBody>,
    head_only: bool,
    idle: std::time::Duration,
) -> Result<(), SendError> {
    let (parts, mut body) = resp.into_parts();
    send.send_response(Response::from_parts(parts, ())).await?;
    if head_only {
        return Ok(send.finish().await?);
    }
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data()
                    && !data.is_empty()
                {
                    match tokio::time::timeout(idle, send.send_data(SendBuf::from(data))).await {
                        Ok(sent) => sent?,
                        Err(_) => {
                            send.stop_stream(h3::error::Code::H3_REQUEST_CANCELLED);
                            return Err(SendError::Stalled);
                        }
                    }
                }
            }
            Err(e) => {
                warn!(error = %Chain(&e), "response body failed mid-stream; resetting the stream");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return Ok(());
            }
        }
    }
    Ok(send.finish().await?)
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error(transparent)]
    Stream(#[from] h3::error::StreamError),
    #[error("client stopped reading the response")]
    Stalled,
}
