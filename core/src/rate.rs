//! One token bucket, on an explicit clock, for every rate limit in chorus: the edge tracker's
//! announces per source and a peer's upload bytes per second.
//!
//! Plain logic: the caller passes `now`, so limits are tested on a virtual clock. A clock that
//! steps back neither refills nor drains the bucket.

use std::time::{Duration, Instant};

/// A bucket of `capacity` tokens refilled at `per_sec` tokens a second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    capacity: f64,
    per_sec: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. A `per_sec` of zero or less never refills.
    #[must_use]
    pub fn full(capacity: f64, per_sec: f64, now: Instant) -> Self {
        Self { tokens: capacity, capacity, per_sec: per_sec.max(0.0), at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_sec).min(self.capacity);
        self.at = self.at.max(now);
    }

    /// Takes `n` tokens at `now` if the bucket holds them.
    ///
    /// # Errors
    /// How long until it would (`Duration::MAX` for more than the capacity, or no refill).
    pub fn take(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= n {
            self.tokens -= n;
            return Ok(());
        }
        if n > self.capacity || self.per_sec <= 0.0 {
            return Err(Duration::MAX);
        }
        Err(Duration::from_secs_f64((n - self.tokens) / self.per_sec))
    }

    /// Whether the bucket has refilled by `now`: its owner has been idle long enough to be
    /// forgotten (a bounded table of buckets drops these first).
    #[must_use]
    pub fn is_full(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * self.per_sec >= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_refills_at_the_rate_and_says_how_long_to_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(10.0, 2.0, t0);
        assert!(b.take(10.0, t0).is_ok());
        assert_eq!(b.take(1.0, t0), Err(Duration::from_millis(500)));
        assert!(!b.is_full(t0 + Duration::from_secs(4)));
        assert!(b.is_full(t0 + Duration::from_secs(5)));
        assert!(b.take(3.0, t0 + Duration::from_millis(1500)).is_ok());
        // Idle for long: one bucket's worth, no more.
        assert!(b.take(11.0, t0 + Duration::from_secs(3600)).is_err());
        assert!(b.take(10.0, t0 + Duration::from_secs(3600)).is_ok());
        // A clock that steps back gives nothing.
        assert!(b.take(1.0, t0).is_err());
        assert_eq!(TokenBucket::full(1.0, 0.0, t0).take(2.0, t0), Err(Duration::MAX));
    }
}
