//! The plaintext HTTP/1.1 fast path: cache hits sent with `sendfile` (zero copy).
//!
//! Serving a 128 KiB chunk from memory costs the kernel a 128 KiB copy into the socket; nginx
//! avoids it by handing page-cache pages to the socket (`sendfile`). This loop does the same for
//! plaintext HTTP/1.1 connections: it parses each request head itself (httparse), passes
//! bodiless `GET`/`HEAD` requests to the same [`Handler`] as every other path (with
//! [`RequestContext::sendfile`] set), and when the answer carries a [`FileBody`] it writes the
//! head and then lets the kernel send the file. Answers with ordinary bodies are written as they
//! are.
//!
//! Anything else — a request with a body, `Expect`, `Upgrade`, HTTP/2 prior knowledge, a
//! malformed or oversize head — ends the fast path for the connection: the bytes read so far
//! are replayed into hyper, which serves the rest of the connection. So the fast path handles
//! only what it understands completely, and hyper handles everything else as before.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf as _, Bytes, BytesMut};
use http::{HeaderValue, Method, Response, Version, header};
use http_body_util::BodyExt as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;

use super::h1head::{Head, parse, response_head, wants_keep_alive};
use super::io::IdleTimeout;
use super::{FileBody, Handler, RequestContext, ResponseBody};

/// What the fast loop ended with.
pub(super) enum Outcome {
    /// The connection is finished (closed by either side, an error, or `Connection: close`).
    Done,
    /// Hand the connection to hyper, replaying these bytes first.
    HandOver(Bytes),
}

/// Settings the loop needs from the server.
pub(super) struct Limits {
    pub(super) max_header_bytes: usize,
    pub(super) max_uri_bytes: usize,
    pub(super) header_read_timeout: Duration,
    pub(super) idle_timeout: Duration,
    /// Set when the connection comes from a trusted proxy in the `X-Forwarded-For` mode:
    /// that header then says who the client is.
    pub(super) forwarded: Option<super::proxy::TrustedProxies>,
}

/// Serves `stream` until it closes or must be handed over.
pub(super) async fn serve<H: Handler>(
    stream: &mut IdleTimeout<TcpStream>,
    handler: &H,
    mut ctx: RequestContext,
    limits: &Limits,
    alt_svc: Option<&HeaderValue>,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
) -> io::Result<Outcome> {
    ctx.sendfile = true;
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // Read one request head, within the header timeout once its first byte is awaited.
        // The whole head must arrive within the header timeout, counted from when we start
        // waiting for it (bytes trickling in do not extend it: no slowloris).
        let deadline = tokio::time::Instant::now() + limits.header_read_timeout;
        let parsed = loop {
            if !buf.is_empty() {
                match parse(&buf, limits.max_uri_bytes) {
                    Head::Request(r, n) => break Some((r, n)),
                    Head::Partial if buf.len() < limits.max_header_bytes => {}
                    // Malformed, too many headers, or too long: hyper answers it properly.
                    Head::Partial | Head::HandOver => return Ok(Outcome::HandOver(buf.freeze())),
                }
            }
            if *stopping.borrow() && buf.is_empty() {
                return Ok(Outcome::Done);
            }
            let read = tokio::select! {
                r = tokio::time::timeout_at(deadline, read_more(stream, &mut buf)) => r,
                _ = stopping.changed(), if buf.is_empty() => return Ok(Outcome::Done),
            };
            match read {
                Ok(Ok(0)) => return Ok(Outcome::Done),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(Outcome::Done), // header timeout: close, as hyper does
            }
        };
        let Some((req, consumed)) = parsed else { return Ok(Outcome::Done) };
        buf.advance(consumed);
        let keep_alive = wants_keep_alive(&req);
        let head_only = req.method() == Method::HEAD;
        let version = req.version();
        let mut ctx = ctx;
        if let Some(t) = &limits.forwarded {
            ctx.remote = super::proxy::forwarded_remote(t, ctx.remote, req.headers());
        }
        let resp = handler.call(req, ctx).await;
        // Shutting down: this is the last answer on the connection, and it says so.
        let keep_alive = keep_alive && !*stopping.borrow();
        write_response(stream, resp, head_only, version, keep_alive, alt_svc, limits.idle_timeout).await?;
        if !keep_alive || *stopping.borrow() {
            return Ok(Outcome::Done);
        }
    }
}

async fn read_more(stream: &mut IdleTimeout<TcpStream>, buf: &mut BytesMut) -> io::Result<usize> {
    use tokio::io::AsyncReadExt as _;
    buf.reserve(4096);
    stream.read_buf(buf).await
}

async fn write_response(
    stream: &mut IdleTimeout<TcpStream>,
    resp: Response<ResponseBody>,
    head_only: bool,
    version: Version,
    keep_alive: bool,
    alt_svc: Option<&HeaderValue>,
    idle: Duration,
) -> io::Result<()> {
    let (parts, body) = resp.into_parts();
    let file = parts.extensions.get::<FileBody>().cloned();
    let bytes = if file.is_some() || head_only && parts.headers.contains_key(header::CONTENT_LENGTH) {
        Bytes::new()
    } else {
        body.collect().await.map_err(io::Error::other)?.to_bytes()
    };
    let len = file.as_ref().map_or(bytes.len() as u64, |f| f.len);
    let no_body_status = parts.status.is_informational() || parts.status == 204 || parts.status == 304;
    let head = response_head(&parts, len, head_only, version, keep_alive, alt_svc);
    if head_only || no_body_status {
        return stream.write_all(&head).await;
    }
    match file {
        Some(f) => {
            // The head goes out with MSG_MORE, so the kernel packs it with the file's first
            // bytes instead of sending a small packet of its own (nginx's tcp_nopush).
            send_more(stream.get_ref(), &head, idle).await?;
            let sent = send_file(stream.get_ref(), &f, idle).await;
            // These writes bypassed the wrapper: tell it the connection moved.
            stream.touch();
            sent
        }
        None => {
            // One write for small answers, two vectored buffers otherwise.
            let mut parts = [Bytes::from(head), bytes];
            write_all_vectored(stream, &mut parts).await
        }
    }
}

async fn write_all_vectored(stream: &mut IdleTimeout<TcpStream>, bufs: &mut [Bytes; 2]) -> io::Result<()> {
    while bufs.iter().any(|b| !b.is_empty()) {
        let slices = [io::IoSlice::new(&bufs[0]), io::IoSlice::new(&bufs[1])];
        let mut n = stream.write_vectored(&slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        for b in bufs.iter_mut() {
            let take = n.min(b.len());
            b.advance(take);
            n -= take;
        }
    }
    Ok(())
}

/// Writes all of `buf` to `sock` with `MSG_MORE` (more data follows).
async fn send_more(sock: &TcpStream, mut buf: &[u8], idle: Duration) -> io::Result<()> {
    while !buf.is_empty() {
        let n = write_when_ready(sock, idle, || {
            rustix::net::send(sock, buf, rustix::net::SendFlags::MORE | rustix::net::SendFlags::NOSIGNAL)
                .map_err(io::Error::from)
        })
        .await?;
        buf = &buf[n..];
    }
    Ok(())
}

/// Runs the non-blocking write `op` on `sock`, waiting for the socket to drain whenever it
/// would block; a client that accepts nothing for `idle` is cut off.
async fn write_when_ready(
    sock: &TcpStream,
    idle: Duration,
    mut op: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    loop {
        match sock.try_io(tokio::io::Interest::WRITABLE, &mut op) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(idle, sock.writable())
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client stopped reading"))??;
            }
            other => return other,
        }
    }
}

/// Sends `f` on `sock` with `sendfile`, waiting for the socket to drain in between; a client
/// that accepts nothing for `idle` is cut off.
async fn send_file(sock: &TcpStream, f: &FileBody, idle: Duration) -> io::Result<()> {
    let mut offset = f.offset;
    let end = f.offset + f.len;
    while offset < end {
        let count = usize::try_from(end - offset).unwrap_or(usize::MAX).min(1 << 30);
        let sent = write_when_ready(sock, idle, || {
            rustix::fs::sendfile(sock, &*f.file, Some(&mut offset), count).map_err(io::Error::from)
        })
        .await?;
        if sent == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "file shorter than its length"));
        }
    }
    Ok(())
}

/// A stream that first yields `prefix` (bytes already read), then reads from `inner`.
pub(super) struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub(super) const fn new(prefix: Bytes, inner: S) -> Self {
        Self { prefix, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
