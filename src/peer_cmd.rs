//! `chorus peer`: a standalone seeding peer (for super-peers in a campus or office).
//!
//! It serves what its cache directory holds (a directory filled by `chorus fetch --cache-dir`
//! is a valid one) after fetching the `--seed` tracks, announces those tracks to the edges'
//! trackers (again before the tracker forgets them) and on Kademlia, and logs each listen
//! address as a full multiaddr ending in `/p2p/<peer id>`.

use std::path::PathBuf;

use chorus_core::url::BaseUrl;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, bail};
use chorus_core::TrackId;
use chorus_core::keys;
use chorus_core::units::Size;
use chorus_http::tls::ClientTls;
use chorus_http::{ListenUrl, Server, ServerConfig};
use chorus_peer::{DirStore, MemoryLimit, Multiaddr, Peer, PeerConfig};
use clap::Args;

use crate::seeding::{MetricsHandler, seed};
use chorus_peer::tracker::{Announced, Report, Round, announce_held};

#[derive(Args)]
pub(crate) struct PeerArgs {
    /// Edge whose tracker this peer announces to (and that --seed tracks come from); repeat.
    #[arg(long, value_name = "URL", value_delimiter = ',', required = true)]
    edge: Vec<BaseUrl>,
    /// Where to listen for peers; repeat (default: TCP and QUIC on every IPv4 interface, ports
    /// chosen by the system).
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    p2p_listen: Vec<Multiaddr>,
    /// The chunk directory to serve (and to fill with --seed tracks); also keeps this peer's
    /// identity (peer.key).
    #[arg(long, value_name = "DIR", default_value = "chorus-peer")]
    cache_dir: PathBuf,
    /// Size of the cache directory for --seed fetches.
    #[arg(long, value_name = "SIZE", default_value = "10GiB")]
    cache_size: Size,
    /// Fetch these tracks (verified) before serving; repeat.
    #[arg(long, value_name = "TRACK", value_delimiter = ',')]
    seed: Vec<TrackId>,
    /// The origin's public key, to verify --seed manifests.
    #[arg(long, value_name = "FILE")]
    origin_key: Option<PathBuf>,
    /// Access token for the edges' trackers (and for fetching the --seed tracks).
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Uploads at once, at most; BUSY beyond.
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_uploads: usize,
    /// Upload bytes per second, at most (e.g. 2MiB); BUSY beyond.
    #[arg(long, value_name = "SIZE")]
    upload_rate: Option<Size>,
    /// Kademlia peers to start from (…/p2p/PEER_ID); repeat.
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    bootstrap: Vec<Multiaddr>,
    /// Do not look for peers on the local network (mDNS).
    #[arg(long)]
    no_mdns: bool,
    /// Relay connections (circuit relay v2) for peers behind NATs; run it on a node with a
    /// public address, e.g. next to an edge.
    #[arg(long)]
    relay_server: bool,
    /// Addresses to announce instead of the listen addresses (a port forward or NAT mapping,
    /// e.g. /ip4/203.0.113.7/tcp/4001); repeat.
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    p2p_announce: Vec<Multiaddr>,
    /// Circuit relays (…/p2p/RELAY_ID) to reserve a slot on when this node cannot be reached
    /// directly (AutoNAT says private, or no public address confirmed within a minute).
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    relay: Vec<Multiaddr>,
    /// Connections to other peers, at most.
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_connections: u32,
    /// Accept and open no new connections while this process uses more memory than this
    /// (e.g. 512MiB; default: 80% of the machine's memory).
    #[arg(long, value_name = "SIZE")]
    max_memory: Option<Size>,
    /// Serve /metrics and /healthz on this URL (e.g. http://127.0.0.1:9300).
    #[arg(long, value_name = "URL")]
    metrics_listen: Option<ListenUrl>,
    /// Extra root certificate (PEM) to trust for the edges.
    #[arg(long, value_name = "FILE", value_delimiter = ',')]
    ca: Vec<PathBuf>,
    /// Skip certificate checks (content stays verified by the manifest signature and hashes).
    #[arg(long)]
    insecure: bool,
}

pub(crate) async fn run(a: PeerArgs) -> Result<()> {
    let trust = ClientTls { ca_files: a.ca.clone(), insecure: a.insecure };
    if !a.seed.is_empty() {
        let Some(key_file) = &a.origin_key else { bail!("--seed needs --origin-key to verify what it fetches") };
        let key = keys::read_verifying_key(key_file)?;
        let builder = chorus_client::ClientBuilder::new(a.edge.iter().map(ToString::to_string).collect(), key)
            .trust(trust.clone())
            .token(a.token.clone())
            .cache(a.cache_dir.clone(), a.cache_size.0);
        seed(&builder, &a.seed).await?;
    }
    // From here on a signal stops the node cleanly (before, it ends the seeding at once).
    let shutdown = crate::signals::shutdown_signal();
    tokio::pin!(shutdown);
    let identity = chorus_peer::load_or_create_identity(&a.cache_dir.join("peer.key"))?;
    let store = Arc::new(DirStore::new(&a.cache_dir));
    let registry = prometheus::Registry::new();
    let mut cfg = PeerConfig {
        max_uploads: a.max_uploads,
        upload_rate: a.upload_rate.map(|s| s.0),
        mdns: !a.no_mdns,
        relay_server: a.relay_server,
        max_connections: a.max_connections,
        relays: a.relay.clone(),
        external: a.p2p_announce.clone(),
        memory_limit: a
            .max_memory
            .map_or_else(MemoryLimit::default, |m| MemoryLimit::Bytes(usize::try_from(m.0).unwrap_or(usize::MAX))),
        bootstrap: a.bootstrap.clone(),
        ..PeerConfig::default()
    };
    if !a.p2p_listen.is_empty() {
        cfg.listen = a.p2p_listen.clone();
    }
    let peer = Peer::start(cfg, store.clone(), Some(identity), &registry)?;
    let listening = peer.listen_addrs().await; // listening before anything is announced
    let mut urls = Vec::new();
    let metrics_server = match &a.metrics_listen {
        Some(url) => {
            let server = Server::bind(std::slice::from_ref(url), None, ServerConfig::default()).await?;
            urls.extend(server.local_urls().iter().map(ToString::to_string));
            Some(tokio::spawn(server.serve(Arc::new(MetricsHandler(registry)), crate::signals::shutdown_signal())))
        }
        None => None,
    };
    crate::ready::add_p2p(listening.iter().map(ToString::to_string));
    let http = chorus_http::client::HttpClient::new(&trust)?.with_timeout(Duration::from_secs(10));
    let (peer_ref, store, edges, token) = (&peer, &store, &a.edge, a.token.as_deref());
    // A signal ends an announce round in progress too (a dead edge holds one for seconds).
    let first = tokio::select! {
        () = &mut shutdown => None,
        now = announce_held(&http, peer_ref, store.clone(), edges, token, Announced::default(), Report::Operator) => Some(now),
    };
    if let Some((announced, taken)) = first {
        crate::ready::write(&urls); // listening, and announced once
        // Refused or unanswered somewhere: again at once, then backing off (see every_reannounce).
        chorus_peer::tracker::every_reannounce(
            taken != Round::Taken,
            &mut shutdown,
            announced,
            |announced: Announced| {
                let http = &http;
                async move {
                    Some(announce_held(http, peer_ref, store.clone(), edges, token, announced, Report::Operator).await)
                }
            },
        )
        .await;
    }
    drop(peer); // stops the swarm task and what works for it
    if let Some(m) = metrics_server {
        let _ = m.await;
    }
    Ok(())
}
