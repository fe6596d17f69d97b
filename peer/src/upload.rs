//! Upload limits: whether to answer a chunk request, decided before the chunk is read from
//! the store and again (the byte-rate cap) once its size is known.
//!
//! Plain logic with an explicit clock. A request is refused BUSY when the node is consume-only,
//! when [`crate::PeerConfig::max_uploads`] responses are already being read or written, or when
//! the upload-rate bucket (one second of burst) lacks the chunk's bytes; UNAUTHORIZED when a
//! token check is configured and the token does not pass it.

use std::time::Instant;

use crate::config::{PeerConfig, TokenCheck};
use crate::wire::Status;

/// A token bucket for the upload cap: `rate` bytes a second, one second of burst.
#[derive(Debug, Clone)]
pub(crate) struct Bucket {
    tokens: f64,
    rate: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub(crate) fn new(rate: u64, now: Instant) -> Self {
        Self { tokens: rate as f64, rate: rate as f64, at: now }
    }

    /// Takes `n` bytes' worth at `now`, if the bucket holds them.
    pub(crate) fn take(&mut self, n: usize, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.rate);
        self.at = self.at.max(now);
        if self.tokens >= n as f64 {
            self.tokens -= n as f64;
            true
        } else {
            false
        }
    }
}

/// The upload limits of one node, and the uploads in progress.
pub(crate) struct Uploads {
    max: usize,
    consume_only: bool,
    token_check: Option<TokenCheck>,
    bucket: Option<Bucket>,
    /// Requests admitted whose chunk is being read, or whose response is being written.
    busy: usize,
}

impl Uploads {
    pub(crate) fn new(cfg: &PeerConfig, now: Instant) -> Self {
        Self {
            max: cfg.max_uploads,
            consume_only: cfg.consume_only,
            token_check: cfg.token_check.clone(),
            bucket: cfg.upload_rate.map(|r| Bucket::new(r, now)),
            busy: 0,
        }
    }

    /// Admits a request carrying `token`: `Ok` takes an upload slot, to be given back with
    /// [`Uploads::done`].
    ///
    /// # Errors
    /// The status to answer with.
    pub(crate) fn admit(&mut self, token: Option<&str>) -> Result<(), Status> {
        if let Some(check) = &self.token_check
            && !token.is_some_and(|t| check(t))
        {
            return Err(Status::Unauthorized);
        }
        if self.consume_only || self.busy >= self.max {
            return Err(Status::Busy);
        }
        self.busy += 1;
        Ok(())
    }

    /// Whether `len` bytes may go out at `now` under the rate cap (an admitted request whose
    /// chunk was read). On `false` the request is answered BUSY and its slot given back.
    pub(crate) fn send(&mut self, len: usize, now: Instant) -> bool {
        self.bucket.as_mut().is_none_or(|b| b.take(len, now))
    }

    /// An admitted request is over (answered, refused after reading, or failed).
    pub(crate) fn done(&mut self) {
        self.busy = self.busy.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_bucket_refills_at_its_rate_with_one_second_of_burst() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1000, t0);
        assert!(b.take(1000, t0));
        assert!(!b.take(1, t0), "empty");
        assert!(!b.take(600, t0 + Duration::from_millis(500)));
        assert!(b.take(500, t0 + Duration::from_millis(500)));
        // Ten idle seconds refill one second's worth, no more.
        let later = t0 + Duration::from_secs(10);
        assert!(!b.take(1001, later));
        assert!(b.take(1000, later));
        // A clock that steps back costs nothing and gives nothing.
        assert!(!b.take(1, t0));
    }

    #[test]
    fn requests_are_admitted_within_the_slots_tokens_and_rate() {
        let t0 = Instant::now();
        let check: TokenCheck = Arc::new(|t: &str| t == "good");
        let cfg =
            PeerConfig { max_uploads: 2, upload_rate: Some(100), token_check: Some(check), ..PeerConfig::default() };
        let mut u = Uploads::new(&cfg, t0);
        assert_eq!(u.admit(None), Err(Status::Unauthorized));
        assert_eq!(u.admit(Some("bad")), Err(Status::Unauthorized));
        assert_eq!(u.admit(Some("good")), Ok(()));
        assert_eq!(u.admit(Some("good")), Ok(()));
        assert_eq!(u.admit(Some("good")), Err(Status::Busy), "both slots are taken");
        assert!(u.send(100, t0));
        u.done();
        assert!(!u.send(100, t0), "the rate cap holds");
        u.done();
        assert!(u.send(100, t0 + Duration::from_secs(1)), "refilled a second later");
        let metered = PeerConfig { consume_only: true, ..PeerConfig::default() };
        assert_eq!(Uploads::new(&metered, t0).admit(None), Err(Status::Busy));
    }
}
