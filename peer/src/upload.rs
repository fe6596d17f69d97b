//! Upload limits: whether to answer a chunk request, decided before the chunk is read from
//! the store and again (the byte-rate cap) once its size is known.
//!
//! Plain logic with an explicit clock. A request is refused BUSY when the node is consume-only,
//! when [`crate::PeerConfig::max_uploads`] responses are already being read or written, or when
//! the upload-rate bucket ([`TokenBucket`], one second of burst) lacks the chunk's bytes. No
//! credential is asked for: what peers carry of a protected track is ciphertext, whose key only
//! edges hand out, to token holders (docs/security.md).

use std::time::Instant;

use chorus_core::rate::TokenBucket;

use crate::config::PeerConfig;
use crate::wire::Status;

/// The upload limits of one node, and the uploads in progress.
pub(crate) struct Uploads {
    max: usize,
    consume_only: bool,
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
            bucket: cfg.upload_rate.map(|r| TokenBucket::full(r as f64, r as f64, now)),
            busy: 0,
        }
    }

    /// Admits a request: `Ok` takes an upload slot, to be given back with [`Uploads::done`].
    ///
    /// # Errors
    /// The status to answer with.
    pub(crate) fn admit(&mut self) -> Result<(), Status> {
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
    use std::time::Duration;

    use super::*;

    #[test]
    fn requests_are_admitted_within_the_slots_and_rate() {
        let t0 = Instant::now();
        let cfg = PeerConfig { max_uploads: 2, upload_rate: Some(100), ..PeerConfig::default() };
        let mut u = Uploads::new(&cfg, t0);
        assert_eq!(u.admit(), Ok(()));
        assert_eq!(u.admit(), Ok(()));
        assert_eq!(u.admit(), Err(Status::Busy), "both slots are taken");
        assert!(u.send(100, t0));
        u.done();
        assert!(!u.send(100, t0), "the rate cap holds");
        u.done();
        assert!(u.send(100, t0 + Duration::from_secs(1)), "refilled a second later");
        let metered = PeerConfig { consume_only: true, ..PeerConfig::default() };
        assert_eq!(Uploads::new(&metered, t0).admit(), Err(Status::Busy));
    }
}
