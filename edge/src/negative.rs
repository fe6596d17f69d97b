//! What upstreams said does not exist, remembered for [`NEGATIVE_TTL`]: a chunk id or track
//! asked for again (a client retrying, or an attacker asking for the same made-up id over and
//! over) is answered 404 by the edge itself instead of going upstream each time.
//!
//! Bounded (least recently used entries leave first) and short: chunks are written before the
//! manifest that names them and a new track shows up within this time, as a re-ingested one
//! does within the manifests' own `max-age`. A purge forgets the ids it names.

use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

/// How long an upstream 404 is taken as the answer.
pub(crate) const NEGATIVE_TTL: Duration = Duration::from_secs(10);

/// Negative answers kept at most, per kind.
const NEGATIVE_KEPT: usize = 65_536;

/// Recent upstream 404s for keys of type `K`.
pub(crate) struct Negative<K: Hash + Eq> {
    seen: Mutex<LruCache<K, Instant>>,
}

impl<K: Hash + Eq> Default for Negative<K> {
    fn default() -> Self {
        let cap = std::num::NonZeroUsize::new(NEGATIVE_KEPT).unwrap_or(std::num::NonZeroUsize::MIN);
        Self { seen: Mutex::new(LruCache::new(cap)) }
    }
}

impl<K: Hash + Eq> Negative<K> {
    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<K, Instant>> {
        self.seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether an upstream said `key` does not exist less than [`NEGATIVE_TTL`] before `now`.
    pub(crate) fn known_missing(&self, key: &K, now: Instant) -> bool {
        let mut g = self.lock();
        match g.get(key) {
            Some(at) if now.saturating_duration_since(*at) < NEGATIVE_TTL => true,
            Some(_) => {
                g.pop(key);
                false
            }
            None => false,
        }
    }

    /// An upstream said `key` does not exist, at `now`.
    pub(crate) fn missing(&self, key: K, now: Instant) {
        self.lock().put(key, now);
    }

    /// Forgets `key` (a purge).
    pub(crate) fn forget(&self, key: &K) {
        self.lock().pop(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_404_is_remembered_for_its_time_and_forgotten_on_purge() {
        let n: Negative<u32> = Negative::default();
        let t0 = Instant::now();
        assert!(!n.known_missing(&1, t0));
        n.missing(1, t0);
        assert!(n.known_missing(&1, t0 + NEGATIVE_TTL - Duration::from_millis(1)));
        assert!(!n.known_missing(&1, t0 + NEGATIVE_TTL));
        n.missing(2, t0);
        n.forget(&2);
        assert!(!n.known_missing(&2, t0));
    }
}
