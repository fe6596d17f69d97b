//! Whether the shared tracker is asked at all: after a failure it rests, then one call probes
//! it. Plain logic on an explicit clock.

use std::time::Duration;

use tokio::time::Instant;

/// Whether the shared tracker is asked, with an explicit clock: after a failure it rests for
/// [`Health::REST`], then one call probes it (the others keep resting until that one ends).
#[derive(Debug)]
pub struct Health {
    /// Set while failing: no call before this.
    resting_until: Option<Instant>,
    /// How long a failed tracker rests: [`Health::REST`], or the call's time limit when
    /// longer, so that probes never overlap.
    rest: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self::with_rest(Self::REST)
    }
}

/// What a call's outcome changed, for a log line at the change only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    Same,
    /// It failed after working (or at its first call).
    Down,
    /// It works again.
    Up,
}

impl Health {
    /// How long a failed tracker rests before the next probe, at least.
    pub const REST: Duration = Duration::from_secs(1);

    /// Health whose rests last `rest` (at least [`Health::REST`]).
    #[must_use]
    pub fn with_rest(rest: Duration) -> Self {
        Self { resting_until: None, rest: rest.max(Self::REST) }
    }

    /// Whether a call may go to Redis at `now`; `Err` with the time left to rest. While
    /// failing, the one call let through at the end of a rest is the probe: the next rest
    /// starts with it, so concurrent calls do not all wait on a dead server.
    ///
    /// # Errors
    /// The time left to rest.
    pub fn may_call(&mut self, now: Instant) -> Result<(), Duration> {
        match self.resting_until {
            Some(until) if now < until => Err(until - now),
            Some(_) => {
                self.resting_until = Some(now + self.rest);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records a call's outcome at `now`.
    pub fn outcome(&mut self, ok: bool, now: Instant) -> Change {
        match (ok, self.resting_until.is_some()) {
            (true, true) => {
                self.resting_until = None;
                Change::Up
            }
            (false, false) => {
                self.resting_until = Some(now + self.rest);
                Change::Down
            }
            (false, true) => {
                self.resting_until = Some(now + self.rest);
                Change::Same
            }
            (true, false) => Change::Same,
        }
    }

    /// Whether the last call worked (or none failed yet).
    #[must_use]
    pub const fn is_up(&self) -> bool {
        self.resting_until.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_rests_then_one_call_probes() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut h = Health::default();
        assert!(h.may_call(t0).is_ok() && h.is_up());
        assert_eq!(h.outcome(false, t0), Change::Down);
        assert_eq!(h.may_call(ms(400)), Err(Duration::from_millis(600)));
        // At the end of the rest one call probes; the others rest on while it runs.
        assert!(h.may_call(ms(1_000)).is_ok());
        assert!(h.may_call(ms(1_010)).is_err());
        assert_eq!(h.outcome(false, ms(1_100)), Change::Same);
        assert!(h.may_call(ms(2_000)).is_err());
        assert!(h.may_call(ms(2_100)).is_ok());
        assert_eq!(h.outcome(true, ms(2_105)), Change::Up);
        assert!(h.is_up() && h.may_call(ms(2_106)).is_ok());
        assert_eq!(h.outcome(true, ms(2_107)), Change::Same);
    }
}
