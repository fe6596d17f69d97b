//! `--ready-file FILE`: once a node serves, it writes where to JSON in FILE, atomically:
//! `{"pid": N, "urls": ["http://127.0.0.1:40123", …], "p2p": ["/ip4/…/p2p/12D3…", …]}`.
//!
//! For supervisors and tests that start a node on port 0 and need its ports, without reading
//! its logs. "Serves" means: an origin or edge has bound every listener (the moment systemd
//! hears READY=1); a peer listens and has announced to the trackers once. `p2p` lists a peer's
//! listen addresses, or an edge's relay addresses; `urls` every HTTP listener.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock, PoisonError};

use tracing::warn;

static FILE: OnceLock<PathBuf> = OnceLock::new();
static P2P: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Where to write, from the global flag (nothing is written without one).
pub(crate) fn set_file(path: Option<PathBuf>) {
    if let Some(p) = path {
        let _ = FILE.set(p);
    }
}

/// libp2p addresses to list with the next [`write`].
pub(crate) fn add_p2p(addrs: impl IntoIterator<Item = String>) {
    P2P.lock().unwrap_or_else(PoisonError::into_inner).extend(addrs);
}

/// Writes the ready file listing `urls` (and the addresses given to [`add_p2p`]). A failure is
/// logged, not fatal: the node serves either way.
pub(crate) fn write(urls: &[String]) {
    let Some(path) = FILE.get() else { return };
    let p2p = P2P.lock().unwrap_or_else(PoisonError::into_inner).clone();
    let doc = serde_json::json!({ "pid": std::process::id(), "urls": urls, "p2p": p2p });
    let written = serde_json::to_vec(&doc)
        .map_err(std::io::Error::other)
        .and_then(|bytes| chorus_core::fsutil::write_atomic(path, &bytes, 0o644));
    if let Err(error) = written {
        warn!(path = %path.display(), %error, "cannot write the ready file");
    }
}
