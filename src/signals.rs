//! Stopping on a signal: every long-running command ends on Ctrl-C or SIGTERM.

use tracing::warn;

/// Resolves on Ctrl-C or SIGTERM (and tells systemd the node is stopping).
pub(crate) async fn shutdown_signal() {
    signal().await;
    crate::systemd::stopping();
}

async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
