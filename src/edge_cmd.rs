//! `chorus edge`: run an edge cache node.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use chorus_core::keys;
use chorus_core::p2p::Multiaddr;
use chorus_core::p2p::multiaddr::Protocol;
use chorus_core::units::{Size, Span};
use chorus_core::url::BaseUrl;
use chorus_edge::cache::CacheConfig;
use chorus_edge::metrics::EdgeMetrics;
use chorus_edge::prefetch::PrefetchConfig;
use chorus_edge::tracker::TrackerConfig;
use chorus_edge::tracker::shared::SharedConfig;
use chorus_edge::upstream::UpstreamConfig;
use chorus_edge::{Edge, EdgeConfig};
use chorus_http::tls::ClientTls;
use chorus_http::{ListenUrl, Server};
use clap::Args;
use tracing::{info, warn};

#[derive(Args)]
pub(crate) struct EdgeArgs {
    /// Origin to fetch misses from (http://, https:// or h3://HOST:PORT); repeat for several,
    /// tried in order.
    #[arg(long, value_name = "URL", value_delimiter = ',', required = true)]
    upstream: Vec<BaseUrl>,
    /// Parent edge, chosen per chunk by consistent hashing and tried before the origins.
    #[arg(long, value_name = "URL", value_delimiter = ',')]
    parent: Vec<BaseUrl>,
    /// Where to listen: http://, https://, h3://HOST:PORT. Repeat for several.
    #[arg(long, value_name = "URL", value_delimiter = ',', default_value = "http://127.0.0.1:8081")]
    listen: Vec<ListenUrl>,
    /// Directory of the disk cache (kept across restarts); without it the edge is memory-only.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Size of the disk cache.
    #[arg(long, value_name = "SIZE", default_value = "10GiB")]
    cache_disk_size: Size,
    /// Size of the memory cache.
    #[arg(long, value_name = "SIZE", default_value = "512MiB")]
    cache_mem_size: Size,
    /// Token public key (token.pub): when given, every /v1/ request needs a valid access token,
    /// and the edge hands protected tracks' content keys to tokens that cover them. Without
    /// it, no content key is handed out.
    #[arg(long, value_name = "FILE")]
    token_key: Option<PathBuf>,
    #[command(flatten)]
    token_expect: crate::serve_args::TokenExpectArgs,
    /// A file holding this edge's own access token (one line; e.g. `chorus token issue --ttl
    /// 365d --sub edge-a`), sent to upstreams, and only to them, when fetching a protected
    /// track's content key. Read again at every fetch, so it can be replaced in place.
    #[arg(long, value_name = "FILE")]
    upstream_token_file: Option<PathBuf>,
    /// Shared secret for /admin/purge and /admin/prewarm, at least 32 bytes; without it they are
    /// disabled. Wrong tokens are slowed: 5, then one every 10 s per address.
    #[arg(long, value_name = "T", value_parser = crate::serve_args::admin_secret)]
    admin_token: Option<String>,
    /// Read the admin token from FILE instead (its one line), e.g. a systemd credential or a
    /// mounted Kubernetes Secret.
    #[arg(long, value_name = "FILE", value_parser = crate::serve_args::admin_secret_file, conflicts_with = "admin_token")]
    admin_token_file: Option<String>,
    /// The origin's public key (origin.pub): when given, manifests that do not verify are
    /// refused, and the web player checks manifests against it.
    #[arg(long, value_name = "FILE")]
    origin_key: Option<PathBuf>,
    /// Do not serve the web player (/player/, and / redirecting to it); both are then 404.
    #[arg(long)]
    no_player: bool,
    /// Extra root certificate (PEM) to trust for https:// and h3:// upstreams.
    #[arg(long, value_name = "FILE", value_delimiter = ',')]
    ca: Vec<PathBuf>,
    /// Skip certificate checks of upstreams (chunks are still verified by their hashes).
    #[arg(long)]
    insecure: bool,
    /// Segments prefetched after each segment request (0: off).
    #[arg(long, value_name = "N", default_value_t = 3)]
    prefetch_segments: usize,
    /// Prefetch fetches at once, at most.
    #[arg(long, value_name = "N", default_value_t = 8)]
    prefetch_concurrency: usize,
    /// Time limit of one attempt at one upstream.
    #[arg(long, value_name = "DURATION", default_value = "5s")]
    upstream_timeout: Span,
    /// Time limit of connecting to an upstream; one that cannot be reached is marked down
    /// until its health check passes.
    #[arg(long, value_name = "DURATION", default_value = "1s")]
    upstream_connect_timeout: Span,
    /// Also run a libp2p circuit relay (v2) for listeners behind NATs, listening on these
    /// multiaddrs (e.g. /ip4/0.0.0.0/tcp/4001, /ip4/0.0.0.0/udp/4001/quic-v1); its addresses
    /// are offered to clients in every tracker answer. Run it only where these addresses are
    /// reachable from the clients (a public address). Its identity is kept in
    /// CACHE_DIR/relay.key.
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    p2p_relay: Vec<chorus_peer::Multiaddr>,
    /// Names (HOST:PORT, as clients write them in --edge URLs) that peers' announces must be
    /// signed for. Default: the HOST:PORT each announce request was sent to. Set it behind a
    /// load balancer, or when the edge is reached by several names, so that an announce signed
    /// for another edge is refused.
    #[arg(long, value_name = "HOST:PORT", value_delimiter = ',')]
    tracker_name: Vec<String>,
    /// Peers the tracker lists per track from one source network (an IPv4 /24, an IPv6 /48), so
    /// that one source cannot fill a track's list. Raise it only where many honest listeners
    /// share one network (a test swarm on one machine).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    tracker_per_network: u16,
    /// Keep the tracker in this Redis, shared by every edge pointed at it, so that listeners
    /// behind one load balancer find each other whichever edge they reach:
    /// redis://[USER:PASSWORD@]HOST[:PORT][/DB], or rediss://… for TLS (trusting --ca when
    /// given, else the system's roots); a Redis Cluster as
    /// redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…] (any of its nodes), or
    /// rediss+cluster://… While it fails, this edge answers from its own announces. Default:
    /// this edge's own.
    #[arg(long, value_name = "URL", env = "CHORUS_TRACKER", hide_env_values = true, value_parser = redis_url)]
    tracker: Option<String>,
    /// Prefix of the shared tracker's Redis keys, so that several deployments can share one
    /// Redis.
    #[arg(long, value_name = "PREFIX", default_value = "chorus:", requires = "tracker")]
    tracker_prefix: String,
    /// Time limit of one round trip to the shared tracker; past it this edge answers from its
    /// own announces and asks Redis again after a second.
    #[arg(long, value_name = "DURATION", default_value = "250ms", requires = "tracker")]
    tracker_timeout: Span,
    /// How often upstreams' /healthz is checked.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    health_interval: Span,
    #[command(flatten)]
    serve: crate::serve_args::ServeArgs,
}

pub(crate) async fn run(a: EdgeArgs) -> Result<()> {
    // Settings that do not go together fail before anything starts.
    let server_config = a.serve.server_config()?;
    let token_key = a.token_key.as_deref().map(keys::read_verifying_key).transpose()?;
    let origin_key = a.origin_key.as_deref().map(keys::read_verifying_key).transpose()?;
    if let Some(dir) = &a.cache_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating cache directory {}", dir.display()))?;
    } else {
        info!("no --cache-dir: memory-only cache");
    }
    // Self-signed TLS material lives in the cache directory, or a temporary one.
    let mut _tls_tmp = None;
    let cert_dir = match &a.cache_dir {
        Some(d) => d.clone(),
        None => {
            let t = tempfile::tempdir().context("making a directory for the self-signed certificate")?;
            let p = t.path().to_owned();
            _tls_tmp = Some(t);
            p
        }
    };
    let cert = a.serve.certificate(&a.listen, &cert_dir)?;
    let metrics = EdgeMetrics::new();
    server_config.metrics.register(&metrics.registry);
    let (relay, relays) = if a.p2p_relay.is_empty() {
        (None, Vec::new())
    } else {
        let (relay, addrs) = start_relay(&a, &metrics.registry).await?;
        (Some(relay), addrs)
    };
    let cfg = EdgeConfig {
        origins: a.upstream.clone(),
        parents: a.parent.clone(),
        trust: ClientTls { ca_files: a.ca.clone(), insecure: a.insecure },
        cache: CacheConfig {
            mem_bytes: a.cache_mem_size.0,
            disk_bytes: a.cache_disk_size.0,
            dir: a.cache_dir.clone(),
            prefetch: true,
        },
        upstream: UpstreamConfig {
            timeout: a.upstream_timeout.0,
            connect_timeout: a.upstream_connect_timeout.0,
            health_interval: a.health_interval.0,
            ..UpstreamConfig::default()
        },
        prefetch: PrefetchConfig {
            segments_ahead: a.prefetch_segments,
            concurrency: a.prefetch_concurrency,
            ..PrefetchConfig::default()
        },
        tracker: TrackerConfig {
            relays,
            names: a.tracker_name.iter().map(|n| n.to_ascii_lowercase()).collect(),
            per_network: usize::from(a.tracker_per_network),
            ..TrackerConfig::default()
        },
        shared_tracker: a.tracker.as_ref().map(|url| SharedConfig {
            url: url.clone(),
            prefix: a.tracker_prefix.clone(),
            timeout: a.tracker_timeout.0,
            ca_files: a.ca.clone(),
        }),
        manifests: 4096,
        token_key,
        token_expect: a.token_expect.expect(),
        admin_token: a.admin_token.clone().or_else(|| a.admin_token_file.clone()),
        origin_key,
        player: !a.no_player,
        upstream_token_file: a.upstream_token_file.clone(),
    };
    if cfg.token_key.is_some() {
        info!("access tokens required on /v1/");
    }
    if let Some(t) = &cfg.shared_tracker {
        info!(tracker = %redacted(&t.url), prefix = %t.prefix, "tracker shared through redis");
    }
    if a.tracker_name.is_empty() && a.listen.iter().any(|l| !l.addr.ip().is_loopback()) {
        warn!(
            "no --tracker-name: an announce is accepted when signed for the host:port its request names, \
             so one signed for another edge and replayed here within 120 s is too; set --tracker-name to \
             the HOST:PORT clients reach this edge by"
        );
    }
    crate::systemd::status("rebuilding the disk cache index");
    let edge = Edge::new(cfg, metrics).await?;
    let server = Server::bind(&a.listen, cert.as_ref(), server_config).await?;
    a.serve.reload_certificate(server.certificate(), &cert_dir);
    info!(upstreams = ?a.upstream, parents = ?a.parent, "edge starting");
    edge.spawn_background();
    a.serve.serve(server, Arc::new(edge.clone())).await?;
    edge.shutdown().await;
    drop(relay);
    Ok(())
}

/// Starts the relay node of `--p2p-relay`: serves no chunks, keeps its identity in the cache
/// directory, and reports its peer metrics on the edge's /metrics. Returns the node and the
/// addresses to offer (full multiaddrs, unspecified ones left out).
async fn start_relay(a: &EdgeArgs, registry: &prometheus::Registry) -> Result<(chorus_peer::Peer, Vec<String>)> {
    let identity = match &a.cache_dir {
        Some(d) => Some(chorus_peer::load_or_create_identity(&d.join("relay.key"))?),
        None => None,
    };
    // Every other limit is the peer layer's default (docs/security.md, "Peers"): inbound at
    // most three quarters of the connections (a newcomer evicts the longest idle), every dial
    // charged to the dial guard, reported addresses filtered into Kademlia, 2 requests per peer.
    let cfg = chorus_peer::PeerConfig {
        listen: a.p2p_relay.clone(),
        relay_server: true,
        consume_only: true,
        mdns: false,
        ..chorus_peer::PeerConfig::default()
    };
    let store: Arc<dyn chorus_peer::Store> = Arc::new(chorus_peer::NoChunks);
    let relay = chorus_peer::Peer::start(cfg, store, identity, registry)?;
    let mut addrs = tokio::time::timeout(std::time::Duration::from_secs(5), relay.listen_addrs())
        .await
        .context("the relay did not start listening within 5 s")?;
    // An unspecified listen address reports each interface's in turn, loopback often first:
    // wait (a moment at most) for one others can reach, so that the offer is not loopback only.
    let loopback = |a: &Multiaddr| {
        a.iter().any(|p| {
            matches!(p, Protocol::Ip4(ip) if ip.is_loopback()) || matches!(p, Protocol::Ip6(ip) if ip.is_loopback())
        })
    };
    let reachable_wanted = !a.p2p_relay.iter().all(loopback);
    let waited = std::time::Instant::now();
    while reachable_wanted && addrs.iter().all(loopback) && waited.elapsed() < std::time::Duration::from_secs(2) {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        addrs = relay.listen_addrs().await;
    }
    let offered: Vec<String> =
        chorus_peer::tracker::relay_offer(relay.peer_id(), &addrs).iter().map(ToString::to_string).collect();
    info!(peer_id = %relay.peer_id(), addrs = ?offered, "relay running; offered to clients by the tracker");
    crate::ready::add_p2p(offered.iter().cloned());
    Ok((relay, offered))
}

/// `--tracker`: a `redis://`, `rediss://`, `redis+cluster://` or `rediss+cluster://` URL
/// (checked by the Redis client's own parser).
fn redis_url(s: &str) -> Result<String, String> {
    if !["redis://", "rediss://", "redis+cluster://", "rediss+cluster://"].iter().any(|p| s.starts_with(p)) {
        return Err(
            "expected redis://HOST[:PORT][/DB], rediss://…, or a cluster: redis+cluster://HOST:PORT[,HOST:PORT…]"
                .into(),
        );
    }
    chorus_edge::tracker::shared::check_url(s).map_err(|e| e.to_string())?;
    Ok(s.to_owned())
}

/// `url` with its password, if any, replaced, for logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://***@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}
