//! Upstream health: passive (failures in a row mark an upstream down; a connect failure at
//! once) and active (`GET /healthz` every `health_interval`, which also brings it back).
//!
//! [`Health`] is the state of one upstream; [`Failure`] says what went wrong, in place of the
//! strings the request path used to pass around, and decides whether it marks the upstream down
//! at once.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use tokio::sync::watch;
use tracing::warn;

use super::Upstreams;

/// What went wrong on one attempt at an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection could be made: the upstream is down now, so the next misses fail at once
    /// instead of each waiting for a connect timeout.
    Connect,
    /// No complete answer in time.
    Timeout,
    /// A 5xx answer.
    ServerError,
    /// An answer that failed its check (wrong bytes, unexpected status).
    BadAnswer,
    /// The request failed on an established connection.
    Request,
    /// The upstream cannot be used as configured (a bad URL, unusable TLS settings: see
    /// `ClientError::is_retryable`); down at once.
    Unusable,
}

impl Failure {
    /// Whether this failure alone marks the upstream down.
    pub(crate) const fn down_at_once(self) -> bool {
        matches!(self, Self::Connect | Self::Unusable)
    }

    /// The reason as logs give it.
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::ServerError => "5xx",
            Self::BadAnswer => "bad answer",
            Self::Request => "error",
            Self::Unusable => "unusable",
        }
    }
}

/// What a failure did to the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Still up (fewer failures in a row than the threshold).
    StillUp,
    /// To be marked down, after this many failures in a row.
    Down { failures: u32 },
}

/// The health of one upstream: up or down, failures in a row, and a counter bumped at each
/// mark-down that requests waiting on the upstream watch (they give up at once).
#[derive(Debug)]
pub(crate) struct Health {
    up: AtomicBool,
    failures: AtomicU32,
    downs: watch::Sender<u64>,
}

impl Default for Health {
    fn default() -> Self {
        Self { up: AtomicBool::new(true), failures: AtomicU32::new(0), downs: watch::Sender::new(0) }
    }
}

impl Health {
    pub(crate) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Counts `why`; the upstream goes down at `threshold` failures in a row, or at once for a
    /// failure that [`Failure::down_at_once`].
    pub(crate) fn failed(&self, why: Failure, threshold: u32) -> Verdict {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if why.down_at_once() || failures >= threshold { Verdict::Down { failures } } else { Verdict::StillUp }
    }

    /// An attempt went well: failures start from zero. Returns whether it was down.
    pub(crate) fn succeeded(&self) -> bool {
        self.failures.store(0, Ordering::Relaxed);
        !self.up.swap(true, Ordering::Relaxed)
    }

    /// Marks it down; returns whether it was up. Wakes whoever watches [`Health::downs`].
    pub(crate) fn mark_down(&self) -> bool {
        let was_up = self.up.swap(false, Ordering::Relaxed);
        self.downs.send_modify(|n| *n += 1);
        was_up
    }

    /// Changes each time the upstream is marked down.
    pub(crate) fn downs(&self) -> watch::Receiver<u64> {
        self.downs.subscribe()
    }
}

impl Upstreams {
    /// Checks every upstream's `/healthz` now.
    pub async fn check_health(&self) {
        // A fresh connection each time: a pooled one may be dead without knowing it yet.
        let probes = self.list.iter().map(|u| async move {
            let probe = async {
                let mut c = self.client.connect(&u.url, false).await.ok()?;
                c.get("/healthz").await.ok()
            };
            let ok =
                matches!(tokio::time::timeout(self.cfg.timeout, probe).await, Ok(Some(r)) if r.status().is_success());
            if ok {
                self.succeeded(u);
            } else if u.mark_down() {
                warn!(upstream = %u.url, "upstream failed its health check; marked down");
                self.metrics.healthy.with_label_values(&[u.name.as_str()]).set(0);
            }
        });
        futures_util::future::join_all(probes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_mark_down_and_a_connect_failure_at_once() {
        let h = Health::default();
        let downs = h.downs();
        assert_eq!(h.failed(Failure::Timeout, 3), Verdict::StillUp);
        assert_eq!(h.failed(Failure::ServerError, 3), Verdict::StillUp);
        assert!(!h.succeeded(), "it was up");
        assert_eq!(h.failed(Failure::BadAnswer, 3), Verdict::StillUp, "the count started again");
        assert_eq!(h.failed(Failure::Request, 3), Verdict::StillUp);
        assert_eq!(h.failed(Failure::Timeout, 3), Verdict::Down { failures: 3 });
        assert!(h.mark_down() && !h.is_up());
        assert!(downs.has_changed().unwrap(), "waiters are woken");
        assert!(!h.mark_down(), "already down");
        assert!(h.succeeded(), "back up");
        assert_eq!(h.failed(Failure::Connect, 3), Verdict::Down { failures: 1 });
    }
}
