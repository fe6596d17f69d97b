//! Upload limits: whether to answer a chunk request, decided before the chunk is read from
//! the store and again (the byte-rate cap) once its size is known.
//!
//! Plain logic with an explicit clock. A request is refused BUSY when the node is consume-only,
//! when [`crate::PeerConfig::max_uploads`] responses are already being read or written, or when
//! the upload-rate bucket ([`TokenBucket`], one second of burst) lacks the chunk's bytes; UNAUTHORIZED when a
//! token check is configured and the token does not pass it.

use std::time::Instant;

use chorus_core::rate::TokenBucket;

use crate::config::{PeerConfig, TokenCheck};
use crate::wire::Status;

/// The upload limits of one node, and the uploads in progress.
pub(crate) struct Uploads {
    max: usize,
    consume_only: bool,
    token_check: Option<TokenCheck>,
    /// The upload cap: `upload_rate` bytes a second, one second of burst.
    bucket: Option<TokenBucket>,
    /// Requests admitted whose chunk is being read, or whose response is being written.
    busy: usize,
}

impl Uploads {
    pub(crate) fn new(cfg: &PeerConfig, now: Instant) -> Self {
        Self {
            max: cfg.max_uploads,
            consume_only: cfg.consume_only,
            token_check: cfg.token_check.clone(),
            bucket: cfg.upload_rate.map(|r| TokenBucket::full(r as f64, r as f64, now)),
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
        self.bucket.as_mut().is_none_or(|b| b.take(len as f64, now).is_ok())
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
