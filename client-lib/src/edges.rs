//! The edges a client fetches from: reaching one over the best protocol it offers, and sending
//! requests over its pooled connections.
//!
//! An `https://` edge that offers HTTP/3 says so in `Alt-Svc` (RFC 7838). The client
//! remembers that ([`crate::remembered`]) and:
//! - **learns it mid-session**: the first answer over TCP carries `Alt-Svc: h3=…`; a QUIC
//!   connection starts at once, and the next request waits for it a moment (four times what
//!   TCP + TLS took to connect, within 100–250 ms: [`UPGRADE_WAIT`]) rather than go out over
//!   TCP, so requests after the first go over HTTP/3; one that connects later is still used;
//! - **races on a cold start** (Happy Eyeballs style): with an alternative known, QUIC starts
//!   first and TCP + TLS twice the last handshake's time later (100–250 ms, [`race_delay`];
//!   at once if QUIC fails sooner); the first to
//!   connect is used at once, and a QUIC connection that loses the race is taken over only if
//!   it completes within [`RACE_GRACE`] of TCP's;
//! - **falls back without a failed request**: a QUIC connection that cannot be made, or a
//!   request that fails on one, marks the alternative broken (not tried again for a while,
//!   [`crate::remembered`]) and the request goes over TCP;
//! - honours `Alt-Svc: clear`. An `h3://` URL names the alternative itself: it is always
//!   known, and HTTPS on the same host and port is the fallback.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chorus_core::url::{BaseUrl, Scheme};
use chorus_http::Protocol;
use chorus_http::altsvc::{self, AltSvc};
use chorus_http::client::{ClientError, Connection, HttpClient};
use chorus_http::pool::Pool;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::debug;

use crate::remembered::{Memory, unix_now};
use crate::sync::lock;

/// Idle HTTP/1.1 connections kept per edge (HTTP/2 and HTTP/3 share one).
const POOL_MAX: usize = 8;
/// On a cold start with a known HTTP/3 alternative, TCP starts this long after QUIC when the
/// last QUIC handshake's time is not known (the Happy Eyeballs v2 connection attempt delay,
/// RFC 8305 §5), and at most this long when it is: see [`race_delay`].
pub(crate) const RACE_DELAY: Duration = Duration::from_millis(250);
/// ... and at least this long (RFC 8305's recommended minimum).
pub(crate) const RACE_DELAY_MIN: Duration = Duration::from_millis(100);
/// A QUIC connection completing this long after TCP's is still taken.
pub(crate) const RACE_GRACE: Duration = Duration::from_millis(50);
/// How long a request waits at most for a QUIC connection started after an `Alt-Svc` before
/// going out over TCP (less when TCP + TLS connected faster: see [`Edge::upgrade_wait`]).
pub(crate) const UPGRADE_WAIT: Duration = Duration::from_millis(250);
/// ... and at least.
const UPGRADE_WAIT_MIN: Duration = Duration::from_millis(100);
/// After QUIC lost a race (it worked, but slower than TCP), no new HTTP/3 attempt to the edge
/// before this long.
const AFTER_LOST_RACE: Duration = Duration::from_secs(300);

/// Requests a track sent to edges, by HTTP version (what `chorus fetch --json` reports).
#[derive(Debug, Default)]
pub(crate) struct Tally([AtomicU64; 3]);

impl Tally {
    fn count(&self, p: Protocol) {
        let i = match p {
            Protocol::Http1 => 0,
            Protocol::Http2 => 1,
            Protocol::Http3 => 2,
        };
        self.0[i].fetch_add(1, Ordering::Relaxed);
    }

    /// `(protocol, requests)` for each version that carried any.
    pub(crate) fn counts(&self) -> Vec<(Protocol, u64)> {
        [Protocol::Http1, Protocol::Http2, Protocol::Http3]
            .into_iter()
            .zip(&self.0)
            .map(|(p, n)| (p, n.load(Ordering::Relaxed)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// Where an edge's HTTP/3 stands.
enum H3 {
    /// Not in use; no new attempt before `not_before`, if set.
    Idle { not_before: Option<Instant> },
    /// A connection attempt (number `attempt`) is under way; `done` turns true when it ends.
    /// Requests wait for it while `wait`; it is used if it connects by `keep_until` (always,
    /// without one).
    Connecting { attempt: u64, done: watch::Receiver<bool>, wait: bool, keep_until: Option<Instant> },
    /// Requests go here.
    Ready(Arc<Pool>),
}

/// One edge as a source: its TCP side and, when it offers one, its HTTP/3 alternative.
pub(crate) struct Edge {
    /// The `https://` (or `http://`) side.
    tcp: Pool,
    /// For TLS edges: `https://HOST:PORT` (the key alternatives are remembered under) and
    /// `h3://HOST:PORT` (the origin HTTP/3 connections speak for).
    origin: Option<(String, BaseUrl)>,
    /// The alternative given by an `h3://` URL (the edge's own host and port), never expiring.
    configured: Option<String>,
    h3: Arc<Mutex<H3>>,
    attempts: AtomicU64,
    /// How long TCP + TLS took to connect (about two round trips), once known.
    tcp_connect_time: Mutex<Option<Duration>>,
    memory: Arc<Memory>,
    http: HttpClient,
}

impl Edge {
    /// Reaches the edge at `base` (`http://`, `https://` or `h3://`), racing QUIC against
    /// TCP when an HTTP/3 alternative is known. `None` when nothing connects.
    pub(crate) async fn reach(http: &HttpClient, base: &BaseUrl, memory: Arc<Memory>) -> Option<Self> {
        let https = base.with_scheme(Scheme::Https);
        let h3 = base.with_scheme(Scheme::H3);
        let (tcp_base, origin, configured) = match base.scheme() {
            Scheme::H3 => (https.clone(), Some((https.to_string(), h3)), Some(base.authority())),
            Scheme::Https => (https.clone(), Some((https.to_string(), h3)), None),
            Scheme::Http => (base.clone(), None, None),
        };
        let edge = Self {
            tcp: Pool::new(tcp_base, POOL_MAX),
            origin,
            configured,
            h3: Arc::new(Mutex::new(H3::Idle { not_before: None })),
            attempts: AtomicU64::new(0),
            tcp_connect_time: Mutex::new(None),
            memory,
            http: http.clone(),
        };
        match edge.alternative() {
            Some(via) => edge.race(&via).await,
            None => edge.tcp_connect().await,
        }
        .then_some(edge)
    }

    /// The HTTP/3 alternative to try now: the configured one, or a remembered one that is
    /// neither expired nor broken.
    fn alternative(&self) -> Option<String> {
        let (key, _) = self.origin.as_ref()?;
        let now = unix_now();
        if self.memory.with(|r| r.is_broken(key, now)) {
            return None;
        }
        self.configured.clone().or_else(|| self.memory.with(|r| r.usable(key, now).map(|a| a.via.clone())))
    }

    /// How long a request waits for HTTP/3 being set up after an `Alt-Svc`: a QUIC handshake
    /// takes one round trip where TCP + TLS took two, so four times TCP's connect time leaves a
    /// wide margin; between [`UPGRADE_WAIT_MIN`] and [`UPGRADE_WAIT`].
    fn upgrade_wait(&self) -> Duration {
        lock(&self.tcp_connect_time).map_or(UPGRADE_WAIT, |t| (t * 4).clamp(UPGRADE_WAIT_MIN, UPGRADE_WAIT))
    }

    async fn tcp_connect(&self) -> bool {
        let began = Instant::now();
        match self.http.connect(self.tcp.base(), false).await {
            Ok(c) => {
                *lock(&self.tcp_connect_time) = Some(began.elapsed());
                self.tcp.put(c);
                true
            }
            Err(e) => {
                debug!(edge = %self.tcp.base(), error = %chorus_core::error::Chain(&e), "cannot connect");
                false
            }
        }
    }

    /// The cold-start race: QUIC now, TCP after [`race_delay`]; returns whether either
    /// connected.
    async fn race(&self, via: &str) -> bool {
        let last = self.origin.as_ref().and_then(|(key, _)| self.memory.with(|r| r.handshake_time(key)));
        let delay = race_delay(last);
        let Some(mut done) = self.start_h3(via) else { return self.tcp_connect().await };
        debug!(edge = %self.tcp.base(), %via, tcp_after_ms = delay.as_millis(), "racing HTTP/3 against TCP");
        let quic_ended = async |done: &mut watch::Receiver<bool>| {
            let _ = done.wait_for(|d| *d).await;
        };
        if tokio::time::timeout(delay, quic_ended(&mut done)).await.is_ok() && self.h3_ready() {
            return true;
        }
        // QUIC failed or is slow: TCP joins (at once if QUIC already failed).
        let tcp = self.http.connect(self.tcp.base(), false);
        tokio::pin!(tcp);
        let tcp_result: Result<Connection, ClientError> = tokio::select! {
            biased;
            () = quic_ended(&mut done), if !*done.borrow() => {
                if self.h3_ready() {
                    return true; // QUIC won; the TCP attempt is dropped
                }
                (&mut tcp).await
            }
            r = &mut tcp => r,
        };
        match tcp_result {
            Ok(c) => {
                self.tcp.put(c);
                let mut state = lock(&self.h3);
                if let H3::Connecting { wait, keep_until, .. } = &mut *state {
                    // TCP won: requests go over it at once. QUIC is still taken if it connects
                    // within the grace; until it connects it counts as broken (a process that
                    // ends first remembers that), and one that connects is forgiven.
                    *wait = false;
                    *keep_until = Some(Instant::now() + RACE_GRACE);
                    drop(state);
                    self.mark_broken();
                }
                true
            }
            Err(e) => {
                debug!(edge = %self.tcp.base(), error = %chorus_core::error::Chain(&e), "cannot connect over TCP");
                let _ = quic_ended(&mut done).await;
                self.h3_ready()
            }
        }
    }

    fn h3_ready(&self) -> bool {
        matches!(*lock(&self.h3), H3::Ready(_))
    }

    /// Starts a QUIC connection to `via` in the background, unless one is under way or in use
    /// or the last try was too recent. Returns the watch that turns true when it ends.
    fn start_h3(&self, via: &str) -> Option<watch::Receiver<bool>> {
        let (key, h3_base) = self.origin.clone()?;
        let mut state = lock(&self.h3);
        match &*state {
            H3::Idle { not_before: Some(t) } if Instant::now() < *t => return None,
            H3::Idle { .. } => {}
            H3::Connecting { .. } | H3::Ready(_) => return None,
        }
        let attempt = self.attempts.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = watch::channel(false);
        *state = H3::Connecting { attempt, done: rx.clone(), wait: true, keep_until: None };
        drop(state);
        let (http, h3, memory, via) = (self.http.clone(), self.h3.clone(), self.memory.clone(), via.to_owned());
        tokio::spawn(async move {
            let began = Instant::now();
            let result = http.connect_via(&h3_base, &via).await;
            // A handshake's time, when it was a whole one: a 0-RTT connection returns before
            // its handshake completes, and its time says nothing of the round trip.
            let took = result
                .as_ref()
                .is_ok_and(|c| matches!(c.early_data(), chorus_http::client::EarlyData::NotTried))
                .then(|| began.elapsed());
            let mut state = lock(&h3);
            let (current, in_time) = match &*state {
                H3::Connecting { attempt: a, keep_until, .. } if *a == attempt => {
                    (true, keep_until.is_none_or(|t| Instant::now() <= t))
                }
                _ => (false, false),
            };
            match result {
                Ok(_) if current && !in_time => {
                    memory.change(|r| r.worked(&key) | took.is_some_and(|t| r.handshake(&key, t)));
                    debug!(edge = %key, %via, "HTTP/3 connected after TCP had won; not used this time");
                    *state = H3::Idle { not_before: Some(Instant::now() + AFTER_LOST_RACE) };
                }
                Ok(conn) => {
                    memory.change(|r| r.worked(&key) | took.is_some_and(|t| r.handshake(&key, t)));
                    if current {
                        debug!(edge = %key, %via, "HTTP/3 connected");
                        let pool = Pool::via(h3_base, via);
                        pool.put(conn);
                        *state = H3::Ready(Arc::new(pool));
                    }
                }
                Err(e) => {
                    debug!(edge = %key, %via, error = %chorus_core::error::Chain(&e), "HTTP/3 unavailable; staying on TCP");
                    // Not counted twice when a request that gave up waiting marked it already.
                    memory.change(|r| {
                        let now = unix_now();
                        let fresh = !r.is_broken(&key, now);
                        if fresh {
                            r.broken(&key, now);
                        }
                        fresh
                    });
                    if current {
                        *state = H3::Idle { not_before: None };
                    }
                }
            }
            drop(state);
            let _ = tx.send(true);
        });
        Some(rx)
    }

    /// The HTTP/3 pool to send on: the ready one, or one about to be (waiting up to
    /// [`Edge::upgrade_wait`] for a connection under way).
    async fn h3_pool(&self) -> Option<Arc<Pool>> {
        let mut done = match &*lock(&self.h3) {
            H3::Ready(p) => return Some(p.clone()),
            H3::Idle { .. } | H3::Connecting { wait: false, .. } => return None,
            H3::Connecting { done, .. } => done.clone(),
        };
        if tokio::time::timeout(self.upgrade_wait(), done.wait_for(|d| *d)).await.is_err() {
            // Not connected in time: broken until it connects (see `race`). Later requests do
            // not wait for it again; it is used if it connects.
            let mut state = lock(&self.h3);
            // The first request to give up marks it; the others find it marked.
            if let H3::Connecting { wait: wait @ true, .. } = &mut *state {
                *wait = false;
                drop(state);
                self.mark_broken();
            }
        }
        match &*lock(&self.h3) {
            H3::Ready(p) => Some(p.clone()),
            _ => None,
        }
    }

    /// Marks the alternative broken in the client's memory (forgiven when it works again).
    fn mark_broken(&self) {
        if let Some((key, _)) = &self.origin {
            self.memory.change(|r| {
                r.broken(key, unix_now());
                true
            });
        }
    }

    /// What an answer's `Alt-Svc` says, acted on: a new alternative is remembered and
    /// connected to; `clear` (over TCP, or over HTTP/3 itself) drops HTTP/3.
    fn observe(&self, resp: &http::Response<Bytes>) {
        let (Some((key, h3)), None) = (&self.origin, &self.configured) else { return };
        let Some(alt) = resp.headers().get(http::header::ALT_SVC).and_then(|v| altsvc::parse(v.as_bytes())) else {
            return;
        };
        let now = unix_now();
        match alt {
            AltSvc::Clear => {
                self.memory.change(|r| r.clear(key));
                let mut state = lock(&self.h3);
                if !matches!(*state, H3::Idle { .. }) {
                    debug!(edge = %key, "Alt-Svc: clear; back to TCP");
                }
                *state = H3::Idle { not_before: None };
            }
            alternatives => {
                let Some(a) = alternatives.find("h3") else { return };
                let host = a.host.clone().unwrap_or_else(|| h3.host().to_owned());
                let via =
                    if host.contains(':') { format!("[{host}]:{}", a.port) } else { format!("{host}:{}", a.port) };
                self.memory.change(|r| r.learn(key, &via, a.max_age, now));
                if !self.memory.with(|r| r.is_broken(key, now)) {
                    let _ = self.start_h3(&via);
                }
            }
        }
    }

    /// The base URL in use: `h3://…` while HTTP/3 carries the requests, else the TCP one.
    pub(crate) fn base(&self) -> BaseUrl {
        match (&*lock(&self.h3), &self.origin) {
            (H3::Ready(_), Some((_, h3))) => h3.clone(),
            _ => self.tcp.base().clone(),
        }
    }

    /// Sends `req` over HTTP/3 when the edge offers it, else over TCP (see the module docs);
    /// counted in `tally` by the version that carried it. Every request sent is safe to send
    /// twice (chunk, manifest, beacon), so one that fails over HTTP/3 is sent again over TCP.
    pub(crate) async fn send(
        &self,
        http: &HttpClient,
        req: http::Request<Bytes>,
        tally: &Tally,
    ) -> Result<http::Response<Bytes>, ClientError> {
        if let Some(pool) = self.h3_pool().await {
            match pool.send(http, chorus_http::pool::clone_request(&req)).await {
                Ok(r) => {
                    tally.count(Protocol::Http3);
                    self.observe(&r);
                    return Ok(r);
                }
                Err(e @ ClientError::Timeout(_)) => return Err(e),
                Err(e) => {
                    debug!(edge = %self.tcp.base(), error = %chorus_core::error::Chain(&e), "HTTP/3 request failed; over TCP instead");
                    self.mark_broken();
                    let mut state = lock(&self.h3);
                    if matches!(&*state, H3::Ready(p) if Arc::ptr_eq(p, &pool)) {
                        *state = H3::Idle { not_before: None };
                    }
                }
            }
        }
        let r = self.tcp.send(http, req).await?;
        tally.count(if r.version() == http::Version::HTTP_2 { Protocol::Http2 } else { Protocol::Http1 });
        self.observe(&r);
        Ok(r)
    }

    /// Whether a pooled connection may still be open.
    pub(crate) fn reachable(&self) -> bool {
        self.tcp.is_open() || self.h3_ready()
    }
}

/// How long QUIC has alone in a race before TCP + TLS starts: twice the last handshake's
/// time (a handshake slower than that has most likely lost its first flight, and a lost
/// Initial is only sent again after about a second), within [`RACE_DELAY_MIN`]–[`RACE_DELAY`];
/// [`RACE_DELAY`] when there is no last handshake.
fn race_delay(last_handshake: Option<Duration>) -> Duration {
    last_handshake.map_or(RACE_DELAY, |t| (t * 2).clamp(RACE_DELAY_MIN, RACE_DELAY))
}

/// A `GET path` request, with the access token as a bearer token when there is one.
pub(crate) fn get(path: &str, token: Option<&str>) -> http::Request<Bytes> {
    let mut b = http::Request::get(path);
    if let Some(t) = token {
        b = b.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    b.body(Bytes::new()).unwrap_or_else(|_| http::Request::new(Bytes::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_race_gives_quic_twice_its_last_handshake() {
        use std::time::Duration as D;
        assert_eq!(race_delay(None), RACE_DELAY);
        assert_eq!(race_delay(Some(D::from_millis(5))), RACE_DELAY_MIN, "loopback");
        assert_eq!(race_delay(Some(D::from_millis(80))), D::from_millis(160), "across a continent");
        assert_eq!(race_delay(Some(D::from_millis(400))), RACE_DELAY, "a satellite link");
    }
}
