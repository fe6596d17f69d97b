//! Flags every serving node (`origin`, `edge`) shares: TLS material and connection limits.

use chorus_core::error::Chain;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use chorus_core::units::Span;
use chorus_http::tls::{self, CertSlot, CertifiedKey};
use chorus_http::{Body, Handler, ListenUrl, RequestContext, ResponseBody, Scheme, Server, ServerConfig, json_error};
use clap::Args;
use tracing::{info, warn};

/// What a node that checks tokens (`--token-key`) also asks of them: the `aud` and `iss` it
/// takes (the edge and the origin alike).
#[derive(Args)]
pub(crate) struct TokenExpectArgs {
    /// With --token-key: take only tokens whose `aud` names this audience.
    #[arg(long, value_name = "AUD", requires = "token_key")]
    token_audience: Option<String>,
    /// With --token-key: take only tokens whose `iss` is this issuer.
    #[arg(long, value_name = "ISS", requires = "token_key")]
    token_issuer: Option<String>,
}

impl TokenExpectArgs {
    /// The claims' expectations these flags set.
    pub(crate) fn expect(&self) -> chorus_core::token::Expect {
        chorus_core::token::Expect { audience: self.token_audience.clone(), issuer: self.token_issuer.clone() }
    }
}

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
    /// Open connections at most from one source host (an IPv4 address, an IPv6 /64), TCP and
    /// QUIC together; beyond it new ones are refused, so one host cannot take them all.
    /// Default: a sixteenth of --max-connections, at least 8. --trusted-proxy balancers are
    /// not counted.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_connections_per_source: Option<u64>,
    /// QUIC handshakes in progress at most (they hold no serving slot until they complete).
    /// Default: a quarter of --max-connections, at least 64.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_pending_handshakes: Option<u64>,
    /// With more QUIC handshakes than this in progress, a client must first prove its address
    /// (a Retry: one more round trip; a spoofed source cannot). 0: always. At most half of
    /// --max-pending-handshakes is used, so that the other half is kept for proven clients.
    #[arg(long, value_name = "N", default_value_t = 128)]
    quic_retry_above: usize,
    /// Time a client has to send a request's headers (against slow-header attacks).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    header_read_timeout: Span,
    /// Close connections on which nothing moves for this long (also cuts off clients that stop
    /// reading, and uploads that stop sending).
    #[arg(long, value_name = "DURATION", default_value = "60s")]
    pub(crate) idle_timeout: Span,
    /// How often --tls-cert and --tls-key are checked for a change (a renewal); a changed pair
    /// is loaded without a restart, as on SIGHUP.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    tls_check_interval: Span,
    /// Serve /metrics on this http:// address (with /healthz and /readyz) and not on the
    /// --listen addresses: metrics stay off the public listeners (e.g. http://10.0.0.5:9100).
    #[arg(long, value_name = "URL", value_parser = metrics_url)]
    metrics_listen: Option<ListenUrl>,
    /// Load balancers (CIDRs or addresses, e.g. 10.0.0.0/8) whose connections may say who the
    /// client is: a PROXY protocol header (v1 or v2) first on the connection, or else
    /// X-Forwarded-For. From any other address both are ignored. The tracker binds announced
    /// addresses to this client address.
    #[arg(long, value_name = "CIDR", value_delimiter = ',')]
    trusted_proxy: Vec<chorus_http::proxy::TrustedProxies>,
    /// How the --trusted-proxy balancers say who the client is: proxy-protocol (a PROXY
    /// header first on each TCP connection; X-Forwarded-For ignored; HTTP/3 keeps the QUIC
    /// connection's address) or x-forwarded-for (that header on every request, HTTP/3
    /// included; no PROXY header read). Never both: a balancer of one kind passes the other
    /// header from its clients through untouched.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = ProxyModeArg::ProxyProtocol, requires = "trusted_proxy")]
    trusted_proxy_mode: ProxyModeArg,
    /// What TCP answers say in Alt-Svc: auto (h3=":PORT" when an h3:// listener exists, so
    /// browsers and chorus clients given https:// move to HTTP/3), clear (clients forget
    /// HTTP/3 here: send it for a day before taking UDP away), or off.
    #[arg(long, value_name = "MODE", value_enum, default_value_t = AltSvcArg::Auto)]
    alt_svc: AltSvcArg,
    /// Web origins whose pages may read the /v1/ API from a browser (CORS), e.g.
    /// https://player.example (repeat, or separate with commas, for more). `*`, the default,
    /// lets any page read, as a public audio CDN does (no cookies are involved; access tokens
    /// are still checked on every request); `off` sends no CORS headers.
    #[arg(long, value_name = "ORIGIN", value_delimiter = ',', value_parser = cors_origin)]
    cors_origin: Vec<String>,
}

/// Checks one `--cors-origin` value (how they combine is checked at start).
fn cors_origin(s: &str) -> Result<String, String> {
    chorus_http::cors::AllowOrigins::parse(&[s]).map(|_| s.to_owned()).map_err(|e| e.to_string())
}

/// `--alt-svc`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum AltSvcArg {
    Auto,
    Clear,
    Off,
}

/// `--trusted-proxy-mode`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum ProxyModeArg {
    ProxyProtocol,
    XForwardedFor,
}

/// Parses `--metrics-listen`: plaintext HTTP only (a scrape port is internal).
fn metrics_url(s: &str) -> Result<ListenUrl, String> {
    let u: ListenUrl = s.parse().map_err(|e: chorus_http::listen::ListenUrlError| e.to_string())?;
    if u.scheme != Scheme::Http {
        return Err(format!("{s}: --metrics-listen takes an http:// address"));
    }
    Ok(u)
}

/// A node's handler seen from one side of `--metrics-listen`: the metrics side answers only
/// /metrics, /healthz and /readyz; the public side everything but /metrics.
struct Side<H> {
    inner: Arc<H>,
    metrics: bool,
}

impl<H: Handler> Handler for Side<H> {
    async fn call(&self, req: http::Request<Body>, ctx: RequestContext) -> http::Response<ResponseBody> {
        let path = req.uri().path();
        let allowed =
            if self.metrics { matches!(path, "/metrics" | "/healthz" | "/readyz") } else { path != "/metrics" };
        if !allowed {
            let why = if self.metrics {
                "only /metrics, /healthz and /readyz here"
            } else {
                "metrics are on --metrics-listen"
            };
            return json_error(http::StatusCode::NOT_FOUND, why);
        }
        self.inner.call(req, ctx).await
    }
}

fn urls_of(urls: &[ListenUrl]) -> Vec<String> {
    urls.iter().map(ToString::to_string).collect()
}

impl ServeArgs {
    /// Serves `handler` on `server` until SIGTERM or Ctrl-C, and with `--metrics-listen` its
    /// /metrics (plus /healthz and /readyz) on a listener of its own instead of `server`'s.
    pub(crate) async fn serve<H: Handler>(&self, server: Server, handler: Arc<H>) -> Result<()> {
        let Some(url) = &self.metrics_listen else {
            crate::systemd::ready(&server.local_urls());
            crate::ready::write(&urls_of(&server.local_urls()));
            server.serve(handler, crate::signals::shutdown_signal()).await;
            return Ok(());
        };
        let side = Server::bind(std::slice::from_ref(url), None, ServerConfig::default()).await?;
        let all = [server.local_urls(), side.local_urls()].concat();
        crate::systemd::ready(&all);
        crate::ready::write(&urls_of(&all));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let scrape = Side { inner: handler.clone(), metrics: true };
        let metrics = tokio::spawn(side.serve(Arc::new(scrape), async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        }));
        let public = Side { inner: handler, metrics: false };
        server
            .serve(Arc::new(public), async move {
                crate::signals::shutdown_signal().await;
                let _ = stop.send(true);
            })
            .await;
        let _ = metrics.await;
        Ok(())
    }

    /// The front's limits.
    ///
    /// # Errors
    /// `--cors-origin` values that do not go together (`*` or `off` with others).
    pub(crate) fn server_config(&self) -> Result<ServerConfig> {
        Ok(ServerConfig {
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source.and_then(|n| usize::try_from(n).ok()),
            max_pending_handshakes: self.max_pending_handshakes.and_then(|n| usize::try_from(n).ok()),
            retry_above: self.quic_retry_above,
            header_read_timeout: self.header_read_timeout.0,
            idle_timeout: self.idle_timeout.0,
            trusted_proxies: self
                .trusted_proxy
                .iter()
                .fold(chorus_http::proxy::TrustedProxies::default(), |mut all, t| {
                    all.extend(t);
                    all
                })
                .with_mode(match self.trusted_proxy_mode {
                    ProxyModeArg::ProxyProtocol => chorus_http::proxy::ProxyMode::ProxyProtocol,
                    ProxyModeArg::XForwardedFor => chorus_http::proxy::ProxyMode::XForwardedFor,
                }),
            alt_svc: match self.alt_svc {
                AltSvcArg::Auto => chorus_http::AltSvcMode::Auto,
                AltSvcArg::Clear => chorus_http::AltSvcMode::Clear,
                AltSvcArg::Off => chorus_http::AltSvcMode::Off,
            },
            cors: chorus_http::cors::AllowOrigins::parse(&self.cors_origin)?,
            ..ServerConfig::default()
        })
    }

    /// The certificate for TLS listeners, if any listener needs one: the given files, or a
    /// self-signed certificate kept in `dir` (logged, since clients must be told to trust it).
    /// Reloads the certificate and key (the `--tls-cert`/`--tls-key` files, or the self-signed
    /// pair in `dir`) on SIGHUP, and by itself when the `--tls-cert`/`--tls-key` files change
    /// (checked every `--tls-check-interval`: a certbot renewal, a Kubernetes Secret update), and
    /// presents them from the next handshake: a renewed certificate needs no restart. A pair
    /// that does not load is logged, and the old one stays. Without TLS, SIGHUP is logged and
    /// ignored (it never stops the server).
    pub(crate) fn reload_certificate(&self, slot: Option<Arc<CertSlot>>, dir: &Path) {
        let (cert, key, dir) = (self.tls_cert.clone(), self.tls_key.clone(), dir.to_owned());
        let every = self.tls_check_interval.0;
        // What identifies a version of the two files: modification time and length of each.
        let stamp = |cert: &Option<PathBuf>, key: &Option<PathBuf>| -> Option<Vec<(std::time::SystemTime, u64)>> {
            [cert.as_ref()?, key.as_ref()?]
                .iter()
                .map(|p| std::fs::metadata(p).ok().and_then(|m| Some((m.modified().ok()?, m.len()))))
                .collect()
        };
        tokio::spawn(async move {
            let mut hup = sighup();
            let mut poll = tokio::time::interval(every.max(std::time::Duration::from_millis(100)));
            poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut seen = stamp(&cert, &key);
            loop {
                let why = tokio::select! {
                    () = next_signal(&mut hup) => "SIGHUP",
                    _ = poll.tick() => {
                        let now = stamp(&cert, &key);
                        if now == seen {
                            continue;
                        }
                        seen = now;
                        "certificate files changed"
                    }
                };
                let Some(slot) = &slot else {
                    info!("{why}: no TLS listener, nothing to reload");
                    continue;
                };
                match tls::load_or_generate(cert.as_deref(), key.as_deref(), &dir)
                    .map(|ck| slot.replace(&ck).map(|()| ck))
                {
                    Ok(Ok(ck)) => {
                        info!(cert = %ck.cert_path.display(), "{why}: TLS certificate reloaded; new connections get it");
                    }
                    Ok(Err(e)) | Err(e) => {
                        warn!(error = %Chain(&e), "{why}: the TLS certificate did not load; still serving the old one");
                    }
                }
            }
        });
    }

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

/// The shortest admin token a node accepts: 32 bytes (`openssl rand -hex 16` gives 32
/// characters), so that guessing it is out of reach even at the slowed rate of failed attempts.
pub(crate) const MIN_ADMIN_SECRET: usize = 32;

/// Parses a node's own admin token (`chorus origin|edge --admin-token`): non-empty, and at
/// least [`MIN_ADMIN_SECRET`] bytes.
pub(crate) fn admin_secret(s: &str) -> Result<String, String> {
    let token = admin_token(s)?;
    if token.trim().len() < MIN_ADMIN_SECRET {
        return Err(format!(
            "the admin token is {} bytes; a node's admin token must be at least {MIN_ADMIN_SECRET} (e.g. `openssl rand -hex 32`)",
            token.trim().len()
        ));
    }
    Ok(token)
}

/// [`admin_token_file`], then the rules of [`admin_secret`].
pub(crate) fn admin_secret_file(path: &str) -> Result<String, String> {
    admin_secret(&admin_token_file(path)?).map_err(|e| format!("{path}: {e}"))
}

/// The most bytes an admin token file may hold.
const MAX_TOKEN_FILE: u64 = 4096;

/// Reads an admin token from a file (`--admin-token-file`: a systemd credential, a mounted
/// Kubernetes Secret): the file's one line, without surrounding whitespace. Refused: an
/// unreadable, empty or oversized file, and one with more than one line (a key or a
/// certificate picked by mistake).
pub(crate) fn admin_token_file(path: &str) -> Result<String, String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_TOKEN_FILE + 1).read_to_string(&mut text))
        .map_err(|e| format!("cannot read the admin token from {path}: {e}"))?;
    if text.len() as u64 > MAX_TOKEN_FILE {
        return Err(format!("{path} is larger than {MAX_TOKEN_FILE} bytes; an admin token file holds one line"));
    }
    let token = text.trim();
    if token.lines().count() > 1 {
        return Err(format!("{path} has more than one line; an admin token file holds the token alone"));
    }
    admin_token(token).map_err(|_| format!("{path} is empty; it must hold the admin token"))
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

fn sighup() -> Hangup {
    #[cfg(unix)]
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(error = %Chain(&e), "cannot listen for SIGHUP; certificates reload when their files change");
            None
        }
    }
    #[cfg(not(unix))]
    None
}

/// The next SIGHUP (never, where there is none).
async fn next_signal(hup: &mut Hangup) {
    #[cfg(unix)]
    if let Some(h) = hup
        && h.recv().await.is_some()
    {
        return;
    }
    #[cfg(not(unix))]
    let _ = hup;
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn the_front_gets_the_limits_the_flags_set() {
        let cli = Cli::try_parse_from([
            "chorus",
            "--header-read-timeout",
            "1s",
            "--idle-timeout",
            "5s",
            "--max-connections",
            "160",
            "--quic-retry-above",
            "100",
        ])
        .unwrap();
        let c = cli.serve.server_config().unwrap();
        assert_eq!(c.header_read_timeout, std::time::Duration::from_secs(1));
        assert_eq!(c.idle_timeout, std::time::Duration::from_secs(5));
        assert_eq!((c.max_connections, c.per_source_cap(), c.pending_handshakes()), (160, 10, 64));
        assert_eq!(c.retry_threshold(), 32, "at most half the handshake budget");
        let defaults = Cli::try_parse_from(["chorus"]).unwrap().serve.server_config().unwrap();
        assert_eq!(defaults.header_read_timeout, std::time::Duration::from_secs(10));
    }
}
