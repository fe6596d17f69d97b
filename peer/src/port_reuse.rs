//! A TCP dial from the listening port that the kernel refuses is made again from a fresh port.
//!
//! libp2p dials TCP from the node's listening port when it can (`PortUse::Reuse`): that is what
//! lets a hole punch through a NAT work and lets the other side learn an address it can dial
//! back. The kernel refuses such a dial when that port cannot be bound again or the connection
//! would repeat one that exists or lingers (`EADDRINUSE` at `bind`, `EADDRNOTAVAIL` at
//! `connect`); libp2p retries only the second. [`ReuseFallback`] retries both from an ephemeral
//! port, so a peer is still reached, only without the port-reuse benefit for that connection.
//! Seen for real: a swarm test's dial failed with `Address already in use` on a loaded CI
//! machine, and the peer was never reached.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use libp2p::Multiaddr;
use libp2p::core::Transport;
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportError, TransportEvent};
use tracing::debug;

/// Whether a dial from the listening port failed for a reason a dial from a fresh port avoids.
pub(crate) fn port_refused(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::AddrInUse | io::ErrorKind::AddrNotAvailable)
}

/// `inner` with the fallback: its port-reusing dials that the kernel refuses are made again
/// by `fresh`, a transport of the same kind that listens on nothing (so every dial it makes
/// is from an ephemeral port).
pub(crate) struct ReuseFallback<T> {
    inner: T,
    fresh: Arc<Mutex<T>>,
}

impl<T> ReuseFallback<T> {
    /// `fresh` must never be asked to listen: it is only dialled with.
    pub(crate) fn new(inner: T, fresh: T) -> Self {
        Self { inner, fresh: Arc::new(Mutex::new(fresh)) }
    }
}

impl<T> Transport for ReuseFallback<T>
where
    T: Transport<Error = io::Error> + Send + Unpin + 'static,
    T::Dial: Send + 'static,
    T::Output: Send,
{
    type Output = T::Output;
    type Error = io::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = BoxFuture<'static, io::Result<T::Output>>;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(&mut self, addr: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<Self::Error>> {
        let first = self.inner.dial(addr.clone(), opts)?;
        if opts.port_use != PortUse::Reuse {
            return Ok(first.boxed());
        }
        let fresh = self.fresh.clone();
        Ok(async move {
            match first.await {
                Err(e) if port_refused(&e) => {
                    debug!(%addr, error = %e, "a dial from the listening port was refused; dialling from a fresh port");
                    let again = fresh
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .dial(addr, DialOpts { port_use: PortUse::New, ..opts })
                        .map_err(|e| match e {
                            TransportError::Other(e) => e,
                            TransportError::MultiaddrNotSupported(a) => {
                                io::Error::new(io::ErrorKind::Unsupported, format!("{a} is not supported"))
                            }
                        })?;
                    again.await
                }
                out => out,
            }
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
    use libp2p::core::Endpoint;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Refuses every port-reusing dial as the kernel did, accepts fresh-port ones; counts both.
    #[derive(Default)]
    struct Kernel {
        reused: Arc<AtomicUsize>,
        fresh: Arc<AtomicUsize>,
        refuse: Option<io::ErrorKind>,
    }

    impl Transport for Kernel {
        type Output = PortUse;
        type Error = io::Error;
        type ListenerUpgrade = futures_util::future::Ready<io::Result<PortUse>>;
        type Dial = futures_util::future::Ready<io::Result<PortUse>>;

        fn listen_on(&mut self, _: ListenerId, a: Multiaddr) -> Result<(), TransportError<io::Error>> {
            Err(TransportError::MultiaddrNotSupported(a))
        }

        fn remove_listener(&mut self, _: ListenerId) -> bool {
            false
        }

        fn dial(&mut self, _: Multiaddr, opts: DialOpts) -> Result<Self::Dial, TransportError<io::Error>> {
            Ok(futures_util::future::ready(match (opts.port_use, self.refuse) {
                (PortUse::Reuse, Some(kind)) => {
                    self.reused.fetch_add(1, Ordering::SeqCst);
                    Err(io::Error::from(kind))
                }
                (PortUse::Reuse, None) => {
                    self.reused.fetch_add(1, Ordering::SeqCst);
                    Ok(PortUse::Reuse)
                }
                (PortUse::New, _) => {
                    self.fresh.fetch_add(1, Ordering::SeqCst);
                    Ok(PortUse::New)
                }
            }))
        }

        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<TransportEvent<Self::ListenerUpgrade, io::Error>> {
            Poll::Pending
        }
    }

    fn opts(port_use: PortUse) -> DialOpts {
        DialOpts { role: Endpoint::Dialer, port_use }
    }

    fn addr() -> Multiaddr {
        "/ip4/127.0.0.1/tcp/4001".parse().unwrap()
    }

    #[tokio::test]
    async fn a_refused_reusing_dial_is_made_again_from_a_fresh_port_once() {
        for kind in [io::ErrorKind::AddrInUse, io::ErrorKind::AddrNotAvailable] {
            let inner = Kernel { refuse: Some(kind), ..Kernel::default() };
            let fresh = Kernel::default();
            let (reused, fresh_dials) = (inner.reused.clone(), fresh.fresh.clone());
            let mut t = ReuseFallback::new(inner, fresh);
            let out = t.dial(addr(), opts(PortUse::Reuse)).unwrap().await.unwrap();
            assert_eq!(out, PortUse::New, "{kind:?}");
            assert_eq!((reused.load(Ordering::SeqCst), fresh_dials.load(Ordering::SeqCst)), (1, 1));
        }
    }

    #[tokio::test]
    async fn other_failures_and_other_dials_are_left_alone() {
        // A refused connection is the peer's answer: no second dial.
        let inner = Kernel { refuse: Some(io::ErrorKind::ConnectionRefused), ..Kernel::default() };
        let fresh = Kernel::default();
        let fresh_dials = fresh.fresh.clone();
        let mut t = ReuseFallback::new(inner, fresh);
        let e = t.dial(addr(), opts(PortUse::Reuse)).unwrap().await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert_eq!(fresh_dials.load(Ordering::SeqCst), 0);
        // A dial that succeeds, or asked for a fresh port, goes once through `inner`.
        let mut t = ReuseFallback::new(Kernel::default(), Kernel::default());
        assert_eq!(t.dial(addr(), opts(PortUse::Reuse)).unwrap().await.unwrap(), PortUse::Reuse);
        assert_eq!(t.dial(addr(), opts(PortUse::New)).unwrap().await.unwrap(), PortUse::New);
        assert_eq!(fresh_dials.load(Ordering::SeqCst), 0);
    }
}
