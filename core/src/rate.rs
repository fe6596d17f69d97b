//! One token bucket, on an explicit clock, for every rate limit in chorus: the edge tracker's
//! announces per source and a peer's upload bytes per second; and [`PerSource`], a bounded
//! table of buckets by source host (QoE beacons, peer queries, failed admin attempts).
//!
//! Plain logic: the caller passes `now`, so limits are tested on a virtual clock. A clock that
//! steps back neither refills nor drains the bucket.

use std::collections::HashMap;
use std::net::IpAddr;
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

    /// Whether `n` tokens could be taken at `now`, taking none.
    ///
    /// # Errors
    /// How long until they could.
    pub fn check(&mut self, n: f64, now: Instant) -> Result<(), Duration> {
        self.refill(now);
        if self.tokens >= n {
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

/// A rate limit per source host (an IPv4 address, an IPv6 /64: [`crate::ip::host`]),
/// in a table of at most `max_sources` buckets. When the table is full, the buckets that have
/// refilled (idle sources) are forgotten, at most once a second; a new source that still finds
/// no room is refused, as a flood of sources should be. Plain logic, explicit clock.
#[derive(Debug)]
pub struct PerSource {
    buckets: HashMap<IpAddr, TokenBucket>,
    burst: f64,
    per_sec: f64,
    max_sources: usize,
    swept_at: Option<Instant>,
}

impl PerSource {
    /// `burst` at once per source, then `per_sec`, for at most `max_sources` sources.
    #[must_use]
    pub fn new(burst: u32, per_sec: f64, max_sources: usize) -> Self {
        Self { buckets: HashMap::new(), burst: f64::from(burst), per_sec, max_sources, swept_at: None }
    }

    /// Takes one from `source`'s budget at `now`.
    ///
    /// # Errors
    /// How long until it would succeed (at most an hour).
    pub fn take(&mut self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let host = crate::ip::host(source);
        if !self.buckets.contains_key(&host) && self.buckets.len() >= self.max_sources {
            if self.swept_at.is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(1)) {
                self.swept_at = Some(now);
                self.buckets.retain(|_, b| !b.is_full(now));
            }
            if self.buckets.len() >= self.max_sources {
                return Err(Duration::from_secs(1));
            }
        }
        let (burst, per_sec) = (self.burst, self.per_sec);
        let b = self.buckets.entry(host).or_insert_with(|| TokenBucket::full(burst, per_sec, now));
        b.take(1.0, now).map_err(|wait| wait.min(Duration::from_secs(3600)))
    }

    /// Whether `source` has budget left at `now`, taking none (a source never seen has).
    ///
    /// # Errors
    /// How long until it has (at most an hour).
    pub fn check(&mut self, source: IpAddr, now: Instant) -> Result<(), Duration> {
        let host = crate::ip::host(source);
        let full = self.buckets.len() >= self.max_sources;
        match self.buckets.get_mut(&host) {
            Some(b) => b.check(1.0, now).map_err(|wait| wait.min(Duration::from_secs(3600))),
            // A new source while the table is full of active ones would get no bucket to
            // spend: it waits like the others instead of going unlimited.
            None if full => Err(Duration::from_secs(1)),
            None => Ok(()),
        }
    }

    /// Sources in the table.
    #[must_use]
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether the table is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_budgets_are_per_host_and_bounded() {
        let t0 = Instant::now();
        let mut p = PerSource::new(2, 1.0, 2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a6: IpAddr = "2001:db8::1".parse().unwrap();
        let a6_same_host: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert!(p.take(a, t0).is_ok());
        assert!(p.take(a, t0).is_ok());
        assert_eq!(p.take(a, t0), Err(Duration::from_secs(1)));
        // An IPv4-mapped address is the same host as the IPv4 one.
        assert!(p.take("::ffff:192.0.2.1".parse().unwrap(), t0).is_err());
        assert!(p.take(a6, t0).is_ok());
        assert!(p.take(a6_same_host, t0).is_ok());
        assert!(p.take(a6_same_host, t0).is_err(), "one /64 is one host");
        // Full of active sources: a third is refused; once the others are idle, it gets in.
        let c: IpAddr = "198.51.100.7".parse().unwrap();
        assert!(p.take(c, t0).is_err());
        assert!(p.take(c, t0 + Duration::from_secs(3)).is_ok());
        assert_eq!(p.len(), 1);
        // Checking takes nothing.
        assert!(p.check(c, t0 + Duration::from_secs(3)).is_ok());
        assert!(p.take(c, t0 + Duration::from_secs(3)).is_ok());
        assert!(p.check(c, t0 + Duration::from_secs(3)).is_err());
        assert!(p.check(a, t0).is_ok(), "forgotten");
    }

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
