//! Every dial a node makes, charged to one guard (docs/security.md, "Peers").
//!
//! Kademlia dials the peers other nodes name in their answers, mDNS the addresses any host on
//! the LAN multicasts, relays, DCUtR and AutoNAT dial too: a hostile routing table could make
//! the node dial many third parties (`10.1.2.3:22`, a cloud metadata service). The guard sits
//! in the transport ([`Guarded`]), under every behaviour, so no dial escapes it:
//!
//! - an address that is not a direct one (`/ip4|ip6/IP/tcp/PORT`, `…/udp/PORT/quic-v1`, port
//!   not 0), or whose IP is unspecified, multicast, broadcast or link-local (`169.254.0.0/16`,
//!   `fe80::/10`: where cloud metadata services answer) is never dialled; relay circuits pass
//!   to the relay transport, whose dial of the relay comes back through here;
//! - at most [`NEW_DIALS`] dials start within [`PERIOD`] (a sliding window);
//! - an address whose dial failed is not dialled again for [`BACKOFF_FIRST`], doubling with
//!   each further failure up to [`BACKOFF_MAX`]; a success clears it.
//!
//! Dials the embedding application asks for ([`crate::Peer::dial`]) are its own decisions (the
//! client bounds them with its own guard, `client-lib/src/dials.rs`): they are counted in the
//! window but neither refused for the budget nor for a backoff. Plain logic on an explicit
//! clock ([`DialGuard`]), with every table bounded; the transport wrapper is thin.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use libp2p::core::Transport;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use tracing::debug;

use crate::metrics::PeerMetrics;

/// Dials started within [`PERIOD`], at most (the node's own and the application's together;
/// only the node's own are refused beyond it).
pub const NEW_DIALS: usize = 64;
/// The window [`NEW_DIALS`] is counted over.
pub const PERIOD: Duration = Duration::from_secs(60);
/// Backoff after an address's first failed dial; it doubles with each further one.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(10);
/// The longest backoff.
pub const BACKOFF_MAX: Duration = Duration::from_secs(600);
/// Entries kept in the backoff table and in the table of application dials.
const TABLE: usize = 4096;
/// How long an application's dial stays marked as its own (the swarm dials at once).
const ALLOW_FOR: Duration = Duration::from_secs(30);

/// Why a dial was refused (the `reason` label of `chorus_peer_dials_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a direct address, or an unspecified, multicast, broadcast or link-local one.
    Address,
    /// [`NEW_DIALS`] dials were already started within [`PERIOD`].
    Budget,
    /// The address failed recently and is backing off.
    Backoff,
}

impl Refused {
    /// The metric label.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Address => "address",
            Self::Budget => "budget",
            Self::Backoff => "backoff",
        }
    }
}

/// A dial refused by the guard (the transport error the swarm reports).
#[derive(Debug, thiserror::Error)]
#[error("dial of {addr} refused by the dial guard ({})", reason.as_str())]
pub struct DialRefused {
    addr: Multiaddr,
    reason: Refused,
}

#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: Instant,
    failures: u32,
}

/// The dial state of one node (see the module docs).
#[derive(Debug, Default)]
pub struct DialGuard {
    /// When the dials of the current window started.
    recent: VecDeque<Instant>,
    backoff: HashMap<Multiaddr, Backoff>,
    /// Addresses the application asked to dial, until when the mark holds.
    allowed: HashMap<Multiaddr, Instant>,
    /// Peers connected through a relay circuit now: a dial of one of them is a hole punch
    /// (DCUtR), coordinated with the peer and retried by it, so neither the budget nor a
    /// backoff holds it back (the address rules still do).
    relayed: std::collections::HashSet<PeerId>,
}

/// `a` without a trailing `/p2p/<peer>`: the key dials are counted by.
#[must_use]
pub fn key(a: &Multiaddr) -> Multiaddr {
    let mut a = a.clone();
    if matches!(a.iter().last(), Some(Protocol::P2p(_))) {
        a.pop();
    }
    a
}

/// Whether `a` (a [`key`]) is an address the node may dial at all.
fn dialable(a: &Multiaddr) -> bool {
    crate::learned::dialable_ip(a).is_some_and(|ip| !link_local(ip))
}

fn link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    }
}

impl DialGuard {
    /// The application asks to dial `addr` (it may be a peer's full address): its dial is not
    /// refused for the budget or a backoff.
    pub fn allow(&mut self, addr: &Multiaddr, now: Instant) {
        if self.allowed.len() >= TABLE {
            self.allowed.retain(|_, until| *until > now);
        }
        if self.allowed.len() < TABLE {
            self.allowed.insert(key(addr), now + ALLOW_FOR);
        }
    }

    /// Marks `peer` as connected through a relay circuit now (or no longer).
    pub fn relayed(&mut self, peer: PeerId, now_relayed: bool) {
        if now_relayed {
            if self.relayed.len() < TABLE {
                self.relayed.insert(peer);
            }
        } else {
            self.relayed.remove(&peer);
        }
    }

    /// Whether `peer` is connected through a relay circuit now.
    #[must_use]
    pub fn is_relayed(&self, peer: &PeerId) -> bool {
        self.relayed.contains(peer)
    }

    /// Whether a dial of `addr` (a [`key`]) may start at `now`; if so it is counted.
    ///
    /// # Errors
    /// Why it may not.
    pub fn admit(&mut self, addr: &Multiaddr, now: Instant) -> Result<(), Refused> {
        if !dialable(addr) {
            return Err(Refused::Address);
        }
        while self.recent.front().is_some_and(|t| now.saturating_duration_since(*t) >= PERIOD) {
            self.recent.pop_front();
        }
        let own = self.allowed.remove(addr).is_none_or(|until| now > until);
        if own {
            if self.backoff.get(addr).is_some_and(|b| now < b.until) {
                return Err(Refused::Backoff);
            }
            if self.recent.len() >= NEW_DIALS {
                return Err(Refused::Budget);
            }
        }
        // Application dials beyond the budget are not kept: the window stays bounded.
        if self.recent.len() < NEW_DIALS {
            self.recent.push_back(now);
        }
        Ok(())
    }

    /// A dial of `addr` connected.
    pub fn succeeded(&mut self, addr: &Multiaddr) {
        self.backoff.remove(addr);
    }

    /// A dial of `addr` failed (refused, timed out, no handshake): back off, doubling.
    pub fn failed(&mut self, addr: &Multiaddr, now: Instant) {
        let failures = self.backoff.get(addr).map_or(0, |b| b.failures).saturating_add(1);
        let wait = BACKOFF_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(16)).min(BACKOFF_MAX);
        if self.backoff.len() >= TABLE && !self.backoff.contains_key(addr) {
            self.backoff.retain(|_, b| b.until > now);
            if self.backoff.len() >= TABLE {
                return; // the budget still bounds what it would have held back
            }
        }
        self.backoff.insert(addr.clone(), Backoff { until: now + wait, failures });
    }
}

/// A [`DialGuard`] shared by the transport and the task that owns the swarm; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<DialGuard>>);

impl Shared {
    /// The state, locked for a table update (no I/O under it).
    pub fn lock(&self) -> MutexGuard<'_, DialGuard> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The node's direct transports (TCP and QUIC) behind the guard.
pub(crate) struct Guarded {
    inner: Boxed<(PeerId, StreamMuxerBox)>,
    guard: Shared,
    metrics: PeerMetrics,
}

impl Guarded {
    pub(crate) const fn new(inner: Boxed<(PeerId, StreamMuxerBox)>, guard: Shared, metrics: PeerMetrics) -> Self {
        Self { inner, guard, metrics }
    }
}

impl Transport for Guarded {
    type Output = (PeerId, StreamMuxerBox);
    type Error = std::io::Error;
    type ListenerUpgrade = <Boxed<(PeerId, StreamMuxerBox)> as Transport>::ListenerUpgrade;
    type Dial = BoxFuture<'static, std::io::Result<Self::Output>>;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<Self::Error>> {
        if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
            // The relay transport's; its dial of the relay itself comes back here.
            return Err(TransportError::MultiaddrNotSupported(addr));
        }
        let k = key(&addr);
        let mut guard = self.guard.lock();
        let now = std::time::Instant::now();
        // A dial of a peer reached through a relay is a hole punch (see `DialGuard::relayed`).
        if let Some(Protocol::P2p(peer)) = addr.iter().last()
            && guard.is_relayed(&peer)
        {
            guard.allow(&k, now);
        }
        let admitted = guard.admit(&k, now);
        drop(guard);
        if let Err(reason) = admitted {
            self.metrics.dials_refused.with_label_values(&[reason.as_str()]).inc();
            debug!(%addr, reason = reason.as_str(), "dial refused by the dial guard");
            return Err(TransportError::Other(std::io::Error::other(DialRefused { addr, reason })));
        }
        let dial = self.inner.dial(addr, opts)?;
        self.metrics.dials.inc();
        let guard = self.guard.clone();
        Ok(async move {
            let out = dial.await;
            match &out {
                Ok(_) => guard.lock().succeeded(&k),
                Err(_) => guard.lock().failed(&k, std::time::Instant::now()),
            }
            out
        }
        .boxed())
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(n: u16) -> Multiaddr {
        format!("/ip4/198.51.100.7/tcp/{n}").parse().unwrap()
    }

    #[test]
    fn no_third_party_shapes_are_dialled() {
        let mut g = DialGuard::default();
        let t0 = Instant::now();
        for bad in [
            "/ip4/169.254.169.254/tcp/80",
            "/ip6/fe80::1/tcp/80",
            "/ip4/0.0.0.0/tcp/4001",
            "/ip4/224.0.0.1/tcp/4001",
            "/ip4/255.255.255.255/tcp/4001",
            "/ip4/198.51.100.7/tcp/0",
            "/dns4/example.com/tcp/4001",
            "/ip4/198.51.100.7/tcp/4001/ws",
        ] {
            let a: Multiaddr = bad.parse().unwrap();
            g.allow(&a, t0);
            assert_eq!(g.admit(&a, t0), Err(Refused::Address), "{bad}, even when the application asks");
        }
        assert_eq!(g.admit(&"/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap(), t0), Ok(()));
    }

    #[test]
    fn the_node_starts_a_bounded_number_of_dials_per_period() {
        let mut g = DialGuard::default();
        let t0 = Instant::now();
        let admitted = (0..1000).filter(|n| g.admit(&addr(1000 + n), t0).is_ok()).count();
        assert_eq!(admitted, NEW_DIALS);
        assert_eq!(g.admit(&addr(1), t0 + PERIOD - Duration::from_millis(1)), Err(Refused::Budget));
        // The application's own dials still go (its client has a guard of its own)…
        g.allow(&addr(2), t0);
        assert_eq!(g.admit(&addr(2), t0), Ok(()));
        // …and the window slides.
        assert_eq!(g.admit(&addr(3), t0 + PERIOD), Ok(()));
    }

    #[test]
    fn a_failing_address_backs_off_doubling_and_recovers() {
        let mut g = DialGuard::default();
        let t0 = Instant::now();
        let a = addr(1);
        g.failed(&a, t0);
        assert_eq!(g.admit(&a, t0 + BACKOFF_FIRST - Duration::from_millis(1)), Err(Refused::Backoff));
        assert_eq!(g.admit(&a, t0 + BACKOFF_FIRST), Ok(()));
        g.failed(&a, t0 + BACKOFF_FIRST);
        let t1 = t0 + BACKOFF_FIRST * 3;
        assert_eq!(g.admit(&a, t1 - Duration::from_millis(1)), Err(Refused::Backoff), "20 s after the second");
        for n in 0..30 {
            g.failed(&a, t0 + Duration::from_secs(n));
        }
        let last = t0 + Duration::from_secs(29);
        assert_eq!(g.admit(&a, last + BACKOFF_MAX - Duration::from_millis(1)), Err(Refused::Backoff));
        assert_eq!(g.admit(&a, last + BACKOFF_MAX), Ok(()), "capped");
        g.failed(&a, last + BACKOFF_MAX);
        g.succeeded(&a);
        assert_eq!(g.admit(&a, last + BACKOFF_MAX), Ok(()), "a success clears it");
        // The application may retry an address at once; only its own dials back off.
        g.failed(&a, t1);
        g.allow(&a, t1);
        assert_eq!(g.admit(&a, t1), Ok(()));
        // A peer reached through a relay is marked; the transport then lets its hole punch
        // retries through (as an allowed dial), until the circuit is gone.
        let p = PeerId::random();
        g.relayed(p, true);
        assert!(g.is_relayed(&p));
        g.relayed(p, false);
        assert!(!g.is_relayed(&p));
        assert_eq!(g.admit(&a, t1), Err(Refused::Backoff), "the mark is used once");
    }

    #[test]
    fn addresses_are_counted_without_their_peer_id_and_tables_stay_bounded() {
        let peer = PeerId::random();
        let full = addr(1).with(Protocol::P2p(peer));
        assert_eq!(key(&full), addr(1));
        let mut g = DialGuard::default();
        let t0 = Instant::now();
        for n in 0..(TABLE as u32 + 100) {
            let a: Multiaddr = format!("/ip4/10.{}.{}.{}/tcp/1", n >> 16, (n >> 8) & 255, n & 255).parse().unwrap();
            g.failed(&a, t0);
            g.allow(&a, t0);
        }
        assert!(g.backoff.len() <= TABLE && g.allowed.len() <= TABLE);
        // Once those expire, room is made.
        g.failed(&addr(5), t0 + BACKOFF_MAX);
        assert!(g.backoff.contains_key(&addr(5)));
    }
}
