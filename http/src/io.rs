//! A connection wrapper that closes connections on which nothing moves.
//!
//! A connection is idle when neither a read nor a write has made progress for `idle` and no
//! request on it is being handled (an upload being encoded is not the client's fault). That
//! catches clients that stop reading a response (a slow-read attack holds a connection slot
//! otherwise forever) and connections left open with nothing to do, while a slow but moving
//! transfer is left alone. The deadline is checked lazily: progress only stores an `Instant`,
//! and the timer is re-armed only when it fires, so the hot path costs no timer operations.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Counts the requests a connection's handler is working on; while it is above zero the
/// connection is not idle. Also remembers when the last request began or ended, so that a
/// connection on which bytes move but no request comes (HTTP/2 PINGs answered forever) can be
/// closed too ([`Busy::no_request_for`]).
#[derive(Clone)]
pub(crate) struct Busy(Arc<BusyState>);

struct BusyState {
    active: AtomicUsize,
    /// When the connection began.
    base: Instant,
    /// The last request activity, in ms after `base` (an atomic: touched twice per request).
    last_ms: std::sync::atomic::AtomicU64,
}

impl Default for Busy {
    fn default() -> Self {
        Self(Arc::new(BusyState {
            active: AtomicUsize::new(0),
            base: Instant::now(),
            last_ms: std::sync::atomic::AtomicU64::new(0),
        }))
    }
}

impl BusyState {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

impl Busy {
    /// Marks one request as in progress until the guard is dropped.
    pub(crate) fn enter(&self) -> BusyGuard {
        self.0.active.fetch_add(1, Ordering::Relaxed);
        self.0.touch();
        BusyGuard(self.0.clone())
    }

    fn active(&self) -> bool {
        self.0.active.load(Ordering::Relaxed) > 0
    }

    /// Records request activity now (a request served elsewhere, e.g. on the HTTP/1.1 fast
    /// path before the connection was handed over).
    pub(crate) fn touch(&self) {
        self.0.touch();
    }

    /// Completes once no request has been in progress for `idle` (never while one is).
    pub(crate) async fn no_request_for(&self, idle: Duration) {
        loop {
            tokio::time::sleep_until(self.0.last() + idle).await;
            if !self.active() && Instant::now() >= self.0.last() + idle {
                return;
            }
            if self.active() {
                // Checked again one idle period after the request ends at the earliest.
                tokio::time::sleep(idle).await;
            }
        }
    }
}

/// See [`Busy::enter`].
pub(crate) struct BusyGuard(Arc<BusyState>);

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// `S` with an idle timeout.
pub(crate) struct IdleTimeout<S> {
    inner: S,
    idle: Duration,
    last_progress: Instant,
    timer: Pin<Box<Sleep>>,
    busy: Busy,
}

impl<S> IdleTimeout<S> {
    pub(crate) fn new(inner: S, idle: Duration, busy: Busy) -> Self {
        let now = Instant::now();
        Self { inner, idle, last_progress: now, timer: Box::pin(tokio::time::sleep_until(now + idle)), busy }
    }

    /// The wrapped stream.
    pub(crate) const fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Records progress made on the stream without going through this wrapper (`sendfile`).
    pub(crate) fn touch(&mut self) {
        self.last_progress = Instant::now();
    }

    /// Called when an operation is pending: errors once the connection has been idle too long.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let deadline = self.last_progress + self.idle;
            if self.timer.deadline() != deadline {
                self.timer.as_mut().reset(deadline);
            }
            ready!(self.timer.as_mut().poll(cx));
            let now = Instant::now();
            if self.busy.active() {
                // The server is working on a request: waiting for it is not the client's fault.
                self.last_progress = now;
            } else if now >= self.last_progress + self.idle {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle timeout")));
            }
        }
    }
}

use std::future::Future as _;

impl<S: AsyncRead + Unpin> AsyncRead for IdleTimeout<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.last_progress = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.poll_idle(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for IdleTimeout<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.last_progress = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.poll_idle(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(r) => {
                if matches!(r, Ok(n) if n > 0) {
                    self.last_progress = Instant::now();
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.poll_idle(cx) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Pending,
            },
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test(start_paused = true)]
    async fn idle_read_times_out_but_progress_keeps_it_open() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut a = IdleTimeout::new(a, Duration::from_secs(10), Busy::default());
        let writer = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(6)).await;
                b.write_all(b"x").await.unwrap();
            }
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(b);
        });
        let mut buf = [0u8; 1];
        for _ in 0..3 {
            a.read_exact(&mut buf).await.unwrap();
        }
        let err = a.read_exact(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_is_not_idle() {
        let (a, mut b) = tokio::io::duplex(64);
        let busy = Busy::default();
        let mut a = IdleTimeout::new(a, Duration::from_secs(5), busy.clone());
        let guard = busy.enter();
        let writer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(guard);
            b.write_all(b"x").await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(b);
        });
        let mut buf = [0u8; 1];
        a.read_exact(&mut buf).await.unwrap();
        assert_eq!(a.read_exact(&mut buf).await.unwrap_err().kind(), io::ErrorKind::TimedOut);
        writer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_never_reads_times_out_the_writer() {
        let (a, _b) = tokio::io::duplex(8);
        let mut a = IdleTimeout::new(a, Duration::from_secs(5), Busy::default());
        let err = a.write_all(&[0u8; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
