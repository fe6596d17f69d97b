//! Request coalescing: N concurrent misses for one key make exactly one fetch.
//!
//! The first request starts the fetch as a task of its own (so it completes even if that
//! client goes away: others may be waiting on it); later ones wait on a `watch` channel and are
//! woken the moment the result is in, with no polling interval (nginx's cache lock polls every
//! 500 ms). A failure reaches every waiter at once, and the key is released before the result
//! is published, so the next request after a failure tries again.
//!
//! Waiters get the whole verified chunk, not bytes as they stream in: a chunk is only usable
//! once its hash has been checked, and chunks are small (a 6 s segment is 18–240 KB).

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

type Slot<V, E> = watch::Receiver<Option<Result<V, E>>>;

/// In-flight fetches by key.
pub struct Inflight<K, V, E> {
    map: Arc<Mutex<HashMap<K, Slot<V, E>>>>,
}

impl<K, V, E> Default for Inflight<K, V, E> {
    fn default() -> Self {
        Self { map: Arc::new(Mutex::new(HashMap::new())) }
    }
}

/// How a request was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// This request started the fetch.
    Leader,
    /// This request joined a fetch already under way.
    Follower,
}

impl<K, V, E> Inflight<K, V, E>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Clone + Send + Sync + 'static,
    E: Clone + Send + Sync + 'static,
{
    /// Whether a fetch for `key` is under way.
    #[must_use]
    pub fn contains(&self, key: &K) -> bool {
        self.lock().contains_key(key)
    }

    /// Fetches under way.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is being fetched.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Slot<V, E>>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Returns the result of the one fetch for `key`, starting it with `fetch` if none is under
    /// way. `lost` is the error given to waiters if the fetch task dies without answering.
    pub async fn get<F, Fut>(&self, key: K, fetch: F, lost: E) -> (Result<V, E>, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>> + Send + 'static,
    {
        let (mut rx, role) = {
            let mut map = self.lock();
            if let Some(rx) = map.get(&key) {
                (rx.clone(), Role::Follower)
            } else {
                let (tx, rx) = watch::channel(None);
                map.insert(key.clone(), rx.clone());
                let fut = fetch();
                let map = self.map.clone();
                tokio::spawn(async move {
                    // Released on every exit, a panic in the fetch included: otherwise the key
                    // would stay taken and every later request would wait on a dead fetch.
                    let release = Release { map, key: Some(key) };
                    let result = fut.await;
                    drop(release);
                    let _ = tx.send(Some(result));
                });
                (rx, Role::Leader)
            }
        };
        let result = match rx.wait_for(Option::is_some).await {
            Ok(v) => v.clone().unwrap_or(Err(lost)),
            Err(_) => Err(lost),
        };
        (result, role)
    }
}

/// Removes a key from the in-flight map when dropped.
struct Release<K: Hash + Eq, V, E> {
    map: Arc<Mutex<HashMap<K, Slot<V, E>>>>,
    key: Option<K>,
}

impl<K: Hash + Eq, V, E> Drop for Release<K, V, E> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take() {
            self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn many_waiters_one_fetch_all_answered_at_once() {
        let inflight: Arc<Inflight<u32, u64, String>> = Arc::default();
        let calls = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let (inflight, calls) = (inflight.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                let started = tokio::time::Instant::now();
                let (r, role) = inflight
                    .get(
                        7,
                        || async move {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            Ok(42)
                        },
                        "lost".to_owned(),
                    )
                    .await;
                (r, role, started.elapsed())
            }));
        }
        let mut leaders = 0;
        for t in tasks {
            let (r, role, waited) = t.await.unwrap();
            assert_eq!(r, Ok(42));
            leaders += usize::from(role == Role::Leader);
            assert!(waited <= Duration::from_millis(101), "answered late: {waited:?}");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert!(inflight.is_empty());
    }

    #[tokio::test]
    async fn a_failure_reaches_everyone_and_the_next_request_retries() {
        let inflight: Inflight<u32, u64, String> = Inflight::default();
        let (r, _) = inflight.get(1, || async { Err("upstream down".to_owned()) }, "lost".into()).await;
        assert_eq!(r, Err("upstream down".to_owned()));
        let (r, role) = inflight.get(1, || async { Ok(5) }, "lost".into()).await;
        assert_eq!((r, role), (Ok(5), Role::Leader));
    }
}
