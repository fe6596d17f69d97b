//! Flags every serving node (`origin`, `edge`) shares: TLS material and connection limits.

use std::path::{Path, PathBuf};

use anyhow::Result;
use chorus_core::http::tls::{self, CertifiedKey};
use chorus_core::http::{ListenUrl, ServerConfig};
use chorus_core::units::Span;
use clap::Args;
use tracing::warn;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// TLS certificate chain (PEM) for https:// and h3:// listeners (default: a self-signed one,
    /// generated once into the node's data directory: STORE/tls/ or CACHE_DIR/tls/).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Open connections at most, over all listeners; beyond it new ones are closed at once.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,
    /// Time a client has to send a request's headers (against slow-header attacks).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    header_read_timeout: Span,
    /// Close connections on which nothing moves for this long (also cuts off clients that stop
    /// reading, and uploads that stop sending).
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub(crate) idle_timeout: Span,
}

impl ServeArgs {
    /// The front's limits.
    pub(crate) fn server_config(&self) -> ServerConfig {
        ServerConfig {
            max_connections: self.max_connections,
            header_read_timeout: self.header_read_timeout.0,
            idle_timeout: self.idle_timeout.0,
            ..ServerConfig::default()
        }
    }

    /// The certificate for TLS listeners, if any listener needs one: the given files, or a
    /// self-signed certificate kept in `dir` (logged, since clients must be told to trust it).
    pub(crate) fn certificate(&self, listen: &[ListenUrl], dir: &Path) -> Result<Option<CertifiedKey>> {
        if !listen.iter().any(|u| u.scheme.needs_tls()) {
            return Ok(None);
        }
        let ck = tls::load_or_generate(self.tls_cert.as_deref(), self.tls_key.as_deref(), dir)?;
        if self.tls_cert.is_none() {
            warn!(cert = %ck.cert_path.display(), "using a self-signed certificate; clients need --ca with this file (or --insecure)");
        }
        Ok(Some(ck))
    }
}

/// Parses an admin token: a shared secret, so never empty (an empty one would let anyone in
/// who sends an empty bearer token).
pub(crate) fn admin_token(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("the admin token is empty; leave --admin-token out to disable the admin API".into());
    }
    Ok(s.to_owned())
}
