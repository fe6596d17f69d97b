//! The front's settings ([`ServerConfig`], every default suited to a public edge) and why it
//! could not start ([`ServerError`]). Both listener kinds (`server.rs` for TCP, `h3.rs` for
//! QUIC) read them from here.

use std::time::Duration;

use super::tls::TlsError;

/// Limits and timeouts of the front. Every field has a default suited to a public edge.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Open connections at most, over all listeners (default 10 000).
    pub max_connections: usize,
    /// Open connections at most from one source host (an IPv4 address, an IPv6 /64), TCP and
    /// QUIC together; `None`: a sixteenth of `max_connections`, at least 8. Connections from
    /// `trusted_proxies` are not counted (they carry many clients).
    pub max_connections_per_source: Option<usize>,
    /// QUIC handshakes in progress at most (default: a quarter of `max_connections`, at least
    /// 64); they hold no serving slot until they complete.
    pub max_pending_handshakes: Option<usize>,
    /// Beyond this many QUIC handshakes in progress, a client whose address is not validated
    /// gets a Retry first (default 128; 0: always). Never more than half the handshake budget
    /// ([`Self::retry_threshold`]): unvalidated Initials must not fill the budget that clients
    /// coming back from a Retry need.
    pub retry_above: usize,
    /// Time a client has to send a complete request head (default 10 s).
    pub header_read_timeout: Duration,
    /// A connection on which nothing moves for this long is closed (default 60 s).
    pub idle_timeout: Duration,
    /// Time a client has to complete a TLS handshake (default 10 s).
    pub handshake_timeout: Duration,
    /// Largest request head (request line and headers), in bytes (default 16 KiB).
    pub max_header_bytes: usize,
    /// Longest request target (path and query), in bytes (default 4 KiB).
    pub max_uri_bytes: usize,
    /// Concurrent streams per HTTP/2 or HTTP/3 connection (default 128).
    pub max_concurrent_streams: u32,
    /// How long shutdown waits for in-flight requests (default 10 s).
    pub grace_period: Duration,
    /// Serve plaintext HTTP/1.1 `GET`/`HEAD` on the fast path, which can send files with
    /// `sendfile` (default on, on Linux). Everything else still goes to hyper.
    pub h1_fast_path: bool,
    /// Load balancers whose connections may say who the client is, with a PROXY protocol
    /// header (v1 or v2) first on the connection or with `X-Forwarded-For` (default: none;
    /// `--trusted-proxy CIDR`). See [`super::proxy`].
    pub trusted_proxies: super::proxy::TrustedProxies,
    /// What TCP responses say in `Alt-Svc` (default [`AltSvcMode::Auto`]).
    pub alt_svc: AltSvcMode,
    /// Which web origins may read the `/v1/` API from a browser (default: any;
    /// `--cors-origin`). See [`super::cors`].
    pub cors: super::cors::AllowOrigins,
    /// What the front refused on its own, before any handler; a node registers it with its
    /// metrics ([`FrontMetrics::register`]).
    pub metrics: FrontMetrics,
}

/// The front's own defences, counted: `chorus_http_refused_total{reason}`.
#[derive(Clone)]
pub struct FrontMetrics {
    /// `chorus_http_refused_total{reason}`.
    pub refused: prometheus::IntCounterVec,
}

/// Every `reason` of `chorus_http_refused_total`.
pub(crate) const REFUSED_REASONS: [&str; 5] = ["path", "per_source", "handshakes", "quic_retry", "idle"];

impl Default for FrontMetrics {
    fn default() -> Self {
        let refused = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "chorus_http_refused_total",
                "Requests and connections the HTTP front refused before any handler saw them, by reason: path (a path with more than one spelling: //, dot segments, encoded slashes); per_source (a connection beyond its source host's share, TCP or QUIC); handshakes (a QUIC attempt beyond the handshakes-in-progress budget); quic_retry (a QUIC attempt asked to validate its address first: many handshakes in progress); idle (a connection closed after the idle timeout with no request, whatever keep-alive traffic it sent).",
            ),
            &["reason"],
        )
        .unwrap_or_else(|_| unreachable!("a valid metric definition"));
        for r in REFUSED_REASONS {
            refused.with_label_values(&[r]);
        }
        Self { refused }
    }
}

impl FrontMetrics {
    /// Adds these counters to `registry` (a node's `/metrics`).
    pub fn register(&self, registry: &prometheus::Registry) {
        crate::metrics::register(registry, &self.refused);
    }
}

impl std::fmt::Debug for FrontMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrontMetrics")
    }
}

/// What the front's TCP responses say in `Alt-Svc` (RFC 7838; docs/protocol.md, "Alt-Svc").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AltSvcMode {
    /// `h3=":PORT"; ma=86400` when an HTTP/3 listener exists, nothing otherwise.
    #[default]
    Auto,
    /// `clear`: clients forget HTTP/3 for this origin (before taking UDP away, or when the
    /// UDP port clients would reach is not the listener's).
    Clear,
    /// No `Alt-Svc` header: clients learn of HTTP/3 only from `h3://` URLs.
    Off,
}

impl ServerConfig {
    /// The per-source connection cap in effect.
    #[must_use]
    pub fn per_source_cap(&self) -> usize {
        self.max_connections_per_source.unwrap_or((self.max_connections / 16).max(8))
    }

    /// The budget of QUIC handshakes in progress in effect.
    #[must_use]
    pub fn pending_handshakes(&self) -> usize {
        self.max_pending_handshakes.unwrap_or((self.max_connections / 4).max(64))
    }

    /// The handshakes in progress past which unvalidated addresses get a Retry: `retry_above`,
    /// at most half of [`Self::pending_handshakes`]. Spoofed Initials (which never answer a
    /// Retry) then hold at most half the budget, and the other half is always there for
    /// clients that proved their address.
    #[must_use]
    pub fn retry_threshold(&self) -> usize {
        self.retry_above.min(self.pending_handshakes() / 2)
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_connections_per_source: None,
            max_pending_handshakes: None,
            retry_above: 128,
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_uri_bytes: 4 * 1024,
            max_concurrent_streams: 128,
            grace_period: Duration::from_secs(10),
            h1_fast_path: cfg!(target_os = "linux"),
            trusted_proxies: super::proxy::TrustedProxies::default(),
            alt_svc: AltSvcMode::Auto,
            cors: super::cors::AllowOrigins::Any,
            metrics: FrontMetrics::default(),
        }
    }
}

/// Why the front could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// A listen address could not be bound.
    #[error("cannot listen on {url}")]
    Bind {
        /// The listen URL.
        url: String,
        /// The socket error.
        source: std::io::Error,
    },
    /// TLS material is missing or unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// An `https://` or `h3://` listener was requested without TLS material.
    #[error("{0} needs a TLS certificate")]
    NoCertificate(String),
    /// No listen URL was given.
    #[error("no listen URL given; pass --listen http://127.0.0.1:8080 (or https://, h3://)")]
    NoListener,
}
