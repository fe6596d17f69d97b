//! Stopping on a signal: every long-running command ends on Ctrl-C or SIGTERM.

use std::future::Future;

use chorus_core::error::Chain;
use tracing::warn;

/// Resolves on Ctrl-C or SIGTERM (and tells systemd the node is stopping). The handlers are
/// installed by this call, not at the first poll, so a signal that arrives before the future
/// is awaited still stops the command cleanly instead of killing it. Call it inside the runtime.
pub(crate) fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    let signal = signal();
    async move {
        signal.await;
        crate::systemd::stopping();
    }
}

#[cfg(unix)]
fn signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let streams = signal(SignalKind::interrupt()).and_then(|i| Ok((i, signal(SignalKind::terminate())?)));
    async move {
        match streams {
            Ok((mut int, mut term)) => {
                tokio::select! {
                    _ = int.recv() => {},
                    _ = term.recv() => {},
                }
            }
            Err(e) => {
                warn!(error = %Chain(&e), "cannot listen for signals; only Ctrl-C stops the node");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
}

#[cfg(not(unix))]
fn signal() -> impl Future<Output = ()> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
