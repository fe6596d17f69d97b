//! systemd integration (`Type=notify`): readiness once every listener is bound, a status line,
//! `STOPPING=1` when a shutdown signal starts the drain, and watchdog pings when the unit sets
//! `WatchdogSec=`. Without `NOTIFY_SOCKET` (not started by systemd) every call does nothing.

use chorus_core::error::Chain;
use std::time::Duration;

use chorus_http::ListenUrl;
use sd_notify::NotifyState;
use tracing::{debug, warn};

/// Tells systemd the node is serving on `urls`, and starts the watchdog pings if asked for.
pub(crate) fn ready(urls: &[ListenUrl]) {
    let status = format!("serving on {}", urls.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "));
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        // Pinged from the runtime itself: a runtime that stops making progress stops pinging,
        // and systemd restarts the service.
        let every = Duration::from_micros(usec) / 2;
        debug!(?every, "systemd watchdog enabled");
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                send(&[NotifyState::Watchdog]);
            }
        });
    }
}

/// Tells systemd what the node is doing while it starts (`systemctl status` shows it).
pub(crate) fn status(what: &str) {
    send(&[NotifyState::Status(what)]);
}

/// Tells systemd the node is stopping (draining in-flight requests).
pub(crate) fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining in-flight requests")]);
}

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        warn!(error = %Chain(&e), "cannot notify systemd (NOTIFY_SOCKET)");
    }
}
