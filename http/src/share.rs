//! A fair share of the front for every client: open connections counted per source host (an
//! IPv4 address, an IPv6 /64: [`chorus_core::ip::host`]), capped, so one host cannot take all
//! of a node's connections; and QUIC handshakes in progress counted apart from the serving
//! budget, so Initials from spoofed addresses (which never complete) cannot hold serving slots.
//!
//! Plain counting; the accept loops (`server.rs`, `h3.rs`) decide with it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Open connections per source host, each at most `cap`.
#[derive(Debug)]
pub(crate) struct PerSource {
    counts: Mutex<HashMap<IpAddr, usize>>,
    cap: usize,
}

/// One connection counted against its source; dropping it gives the place back.
#[derive(Debug)]
pub(crate) struct SourceSlot {
    owner: Arc<PerSource>,
    key: IpAddr,
}

impl PerSource {
    pub(crate) fn new(cap: usize) -> Arc<Self> {
        Arc::new(Self { counts: Mutex::new(HashMap::new()), cap })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for one more connection from `ip`, or `None` when its host has `cap` open.
    pub(crate) fn try_add(self: &Arc<Self>, ip: IpAddr) -> Option<SourceSlot> {
        let key = chorus_core::ip::host(ip);
        let mut g = self.lock();
        let n = g.entry(key).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(SourceSlot { owner: self.clone(), key })
    }

    /// Whether `ip`'s host already has `cap` connections open (established ones: a spoofed
    /// address cannot make this true for a host it names).
    pub(crate) fn is_full(&self, ip: IpAddr) -> bool {
        let key = chorus_core::ip::host(ip);
        self.lock().get(&key).is_some_and(|n| *n >= self.cap)
    }

    /// Hosts with a connection open.
    #[cfg(test)]
    fn hosts(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut g = self.owner.lock();
        if let Some(n) = g.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.remove(&self.key);
            }
        }
    }
}

/// QUIC handshakes in progress.
#[derive(Debug, Default)]
pub(crate) struct Pending(AtomicUsize);

/// One handshake in progress; dropping it (the handshake done, failed or timed out) ends it.
#[derive(Debug)]
pub(crate) struct PendingSlot(Arc<Pending>);

impl Pending {
    /// How many are in progress.
    pub(crate) fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Counts one more, if fewer than `max` are in progress.
    pub(crate) fn try_start(self: &Arc<Self>, max: usize) -> Option<PendingSlot> {
        self.0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| (n < max).then_some(n + 1))
            .ok()
            .map(|_| PendingSlot(self.clone()))
    }
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.0.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What QUIC does with a new connection attempt, given the handshakes in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QuicAdmit {
    /// Go on with the handshake.
    Accept,
    /// Ask the client to prove its address first (a Retry packet): it costs a spoofer nothing
    /// to send an Initial, but it cannot answer a Retry.
    Retry,
    /// Refuse (CONNECTION_REFUSED): too many handshakes in progress even from validated
    /// addresses.
    Refuse,
}

/// The decision for a connection attempt whose address is `validated` (or not), with
/// `pending` handshakes in progress: Retry unvalidated addresses once `retry_above` are in
/// progress; refuse at `max_pending`.
pub(crate) const fn quic_admit(
    validated: bool,
    may_retry: bool,
    pending: usize,
    retry_above: usize,
    max_pending: usize,
) -> QuicAdmit {
    if !validated && may_retry && pending >= retry_above {
        QuicAdmit::Retry
    } else if pending >= max_pending {
        QuicAdmit::Refuse
    } else {
        QuicAdmit::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_host_gets_its_share_and_gives_it_back() {
        let s = PerSource::new(2);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let (a1, a2) = (s.try_add(a).unwrap(), s.try_add(a).unwrap());
        assert!(s.try_add(a).is_none());
        assert!(s.is_full(a) && !s.is_full("192.0.2.2".parse().unwrap()));
        assert!(s.try_add("::ffff:192.0.2.1".parse().unwrap()).is_none(), "the same host, IPv4-mapped");
        assert!(s.try_add("192.0.2.2".parse().unwrap()).is_some(), "another host");
        // One IPv6 /64 is one host.
        let _v6 =
            (s.try_add("2001:db8::1".parse().unwrap()).unwrap(), s.try_add("2001:db8::2".parse().unwrap()).unwrap());
        assert!(s.try_add("2001:db8::3".parse().unwrap()).is_none());
        drop(a1);
        let again = s.try_add(a);
        assert!(again.is_some());
        drop((a2, again));
        assert_eq!(s.hosts(), 1, "hosts with nothing open are forgotten");
    }

    #[test]
    fn handshakes_are_counted_apart_and_spoofable_ones_retried() {
        let p = Arc::new(Pending::default());
        let slots: Vec<_> = (0..3).filter_map(|_| p.try_start(3)).collect();
        assert_eq!(p.count(), 3);
        assert!(p.try_start(3).is_none());
        drop(slots);
        assert_eq!(p.count(), 0);
        assert_eq!(quic_admit(false, true, 10, 10, 100), QuicAdmit::Retry);
        assert_eq!(quic_admit(true, false, 10, 10, 100), QuicAdmit::Accept, "a validated address is not retried");
        assert_eq!(quic_admit(false, true, 9, 10, 100), QuicAdmit::Accept);
        assert_eq!(quic_admit(true, false, 100, 10, 100), QuicAdmit::Refuse);
    }

    #[test]
    fn retry_starts_by_half_the_handshake_budget_whatever_was_configured() {
        use crate::ServerConfig;
        // The defaults: 2 500 handshakes, Retry past 128.
        assert_eq!(ServerConfig::default().retry_threshold(), 128);
        // A small node (the attack test's edge: 160 connections, so 64 handshakes): Retry past
        // 32, not past 128, which the budget would never reach; spoofed Initials would fill it.
        let small = ServerConfig { max_connections: 160, ..ServerConfig::default() };
        assert_eq!((small.pending_handshakes(), small.retry_threshold()), (64, 32));
        assert_eq!(ServerConfig { retry_above: 0, ..small }.retry_threshold(), 0);
    }
}
