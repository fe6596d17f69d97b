//! Starting the demo's network on loopback: the sample tracks, the origin, the edges and the
//! seeding peers, and the signals that stop them.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use chorus_client::ClientBuilder;
use chorus_core::TrackId;
use chorus_core::keys::{self, VerifyingKey};
use chorus_edge::cache::CacheConfig;
use chorus_edge::metrics::EdgeMetrics;
use chorus_edge::{Edge, EdgeConfig};
use chorus_http::client::HttpClient;
use chorus_http::tls::{self, ClientTls};
use chorus_http::{ListenUrl, Server, ServerConfig};
use chorus_origin::ingest::{self, IngestRequest, Mode, NoProgress};
use chorus_origin::metrics::OriginMetrics;
use chorus_origin::{ApiConfig, Origin, Store};
use chorus_peer::{DirStore, Multiaddr, Peer, PeerConfig};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::seeding::{MetricsHandler, seed};
use chorus_peer::tracker::{Announced, Report, Round, announce_held};

/// A sample track found in the samples directory.
#[derive(Debug)]
pub(super) struct Sample {
    pub(super) track: TrackId,
    pub(super) dir: PathBuf,
}

/// Tells the demo's servers to stop.
#[derive(Clone)]
pub(super) struct Stop(pub(super) watch::Receiver<bool>);

/// The stop signals of the demo's nodes.
pub(super) struct Stops {
    /// Edges, peers.
    pub(super) nodes: Stop,
    /// The origin, after the others.
    pub(super) origin: Stop,
}

impl Stop {
    pub(super) async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

/// The sample tracks in `dir`: subdirectories with a `master.m3u8`, by name.
pub(super) fn find_samples(dir: &Path) -> Result<Vec<Sample>> {
    let entries = std::fs::read_dir(dir).with_context(|| {
        format!("reading the sample tracks in {} (pass --samples DIR: the repository's samples/)", dir.display())
    })?;
    let mut samples = Vec::new();
    for e in entries {
        let path = e?.path();
        if !path.join("master.m3u8").is_file() {
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
        let track = TrackId::parse(name).with_context(|| format!("{}: not a usable track id", path.display()))?;
        samples.push(Sample { track, dir: path });
    }
    samples.sort_by(|a, b| a.track.as_str().cmp(b.track.as_str()));
    if samples.is_empty() {
        bail!("no sample tracks (directories with a master.m3u8) in {}", dir.display());
    }
    Ok(samples)
}

pub(super) fn listen(url: &str) -> Result<ListenUrl> {
    url.parse::<ListenUrl>().map_err(|e| anyhow::anyhow!("{url}: {e}"))
}

/// A loopback multiaddr on a port the system picks, over `tcp` or `quic-v1`.
pub(super) fn loopback(transport: &str) -> Result<Multiaddr> {
    let s = if transport == "tcp" { "/ip4/127.0.0.1/tcp/0" } else { "/ip4/127.0.0.1/udp/0/quic-v1" };
    s.parse().context("a loopback multiaddr")
}

/// Imports the samples into a new store and serves it; returns its URL and public key file.
pub(super) async fn start_origin(dir: &Path, samples: &[Sample], stop: &Stop) -> Result<(String, PathBuf)> {
    let metrics = OriginMetrics::new();
    let store =
        Store::open_dir(dir, metrics.store.clone()).with_context(|| format!("opening store {}", dir.display()))?;
    let priv_path = dir.join("origin.key");
    let pub_path = priv_path.with_extension("pub");
    let (key, _) = keys::load_or_create(&priv_path, &pub_path)?;
    let requests: Vec<IngestRequest> = samples
        .iter()
        .map(|s| IngestRequest {
            track: s.track.clone(),
            title: None,
            ladder_kbps: Vec::new(),
            mode: Mode::Hls,
            input: s.dir.clone(),
            protect: false,
        })
        .collect();
    let (store, key) = tokio::task::spawn_blocking(move || {
        for req in &requests {
            ingest::ingest(&store, &key, req, &NoProgress)
                .with_context(|| format!("importing {}", req.input.display()))?;
        }
        Ok::<_, anyhow::Error>((store, key))
    })
    .await??;
    let server = Server::bind(&[listen("http://127.0.0.1:0")?], None, ServerConfig::default()).await?;
    let url = server.local_urls()[0].to_string();
    let origin = Arc::new(Origin::new(store, Some(key), ApiConfig::default(), metrics));
    origin.refresh_counts().await;
    // Not one of `servers`: it stops on its own signal, after them.
    tokio::spawn(server.serve(origin, stop.clone().wait()));
    Ok((url, pub_path))
}

/// A running edge.
pub(super) struct DemoEdge {
    /// Its plain HTTP URL.
    pub(super) http: String,
    /// Its HTTPS URL (the HTTP URL on an edge without TLS): its answers offer HTTP/3 in
    /// `Alt-Svc`.
    pub(super) https: String,
    /// Every URL it serves.
    pub(super) urls: Vec<String>,
    /// Its self-signed certificate, for clients to trust.
    pub(super) cert: PathBuf,
}

/// An edge in front of `origin` caching in `dir`; with `tls`, it also serves HTTPS and HTTP/3
/// with a self-signed certificate.
pub(super) async fn start_edge(
    dir: &Path,
    origin: &str,
    origin_key: VerifyingKey,
    tls: bool,
    stop: &Stop,
    servers: &mut JoinSet<()>,
) -> Result<DemoEdge> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut urls = vec![listen("http://127.0.0.1:0")?];
    let cert = if tls {
        urls.push(listen("https://127.0.0.1:0")?);
        urls.push(listen("h3://127.0.0.1:0")?);
        Some(tls::load_or_generate(None, None, dir)?)
    } else {
        None
    };
    let cfg = EdgeConfig {
        origins: vec![origin.parse()?],
        parents: Vec::new(),
        trust: ClientTls::default(),
        cache: CacheConfig { mem_bytes: 64 << 20, disk_bytes: 1 << 30, dir: Some(dir.to_owned()), prefetch: true },
        upstream: chorus_edge::upstream::UpstreamConfig::default(),
        prefetch: chorus_edge::prefetch::PrefetchConfig::default(),
        // Every listener of the demo speaks from 127.0.0.1: one source network that stands for
        // many, so the per-network cap would hide most of them.
        tracker: chorus_edge::tracker::TrackerConfig { per_network: usize::MAX, ..Default::default() },
        shared_tracker: None,
        manifests: 4096,
        token_key: None,
        token_expect: chorus_core::token::Expect::default(),
        admin_token: None,
        origin_key: Some(origin_key),
        player: true,
        upstream_token_file: None,
    };
    let edge = Edge::new(cfg, EdgeMetrics::new()).await?;
    let server = Server::bind(&urls, cert.as_ref(), ServerConfig::default()).await?;
    let bound: Vec<String> = server.local_urls().iter().map(ToString::to_string).collect();
    edge.spawn_background();
    servers.spawn(server.serve(Arc::new(edge), stop.clone().wait()));
    let http = bound.iter().find(|u| u.starts_with("http://")).cloned().context("the edge has no HTTP listener")?;
    let https = bound.iter().find(|u| u.starts_with("https://")).cloned().unwrap_or_else(|| http.clone());
    Ok(DemoEdge { http, https, urls: bound, cert: cert.map(|c| c.cert_path).unwrap_or_default() })
}

/// A running seeding peer.
pub(super) struct DemoPeer {
    /// Keeps the node running.
    pub(super) _peer: Arc<Peer>,
    /// Its first listen address, as a full multiaddr.
    pub(super) addr: String,
    /// Its metrics URL.
    pub(super) metrics: String,
}

/// A peer that fetches every rendition of `tracks` from `seed_from` into `dir`, then serves
/// them, announcing to every edge's tracker (again before the trackers forget).
pub(super) async fn start_peer(
    dir: &Path,
    seed_from: &str,
    edges: &[String],
    key: VerifyingKey,
    tracks: &[TrackId],
    stop: &Stop,
    servers: &mut JoinSet<()>,
) -> Result<DemoPeer> {
    let builder = ClientBuilder::new(vec![seed_from.to_owned()], key).cache(dir.to_owned(), 1 << 30);
    seed(&builder, tracks).await?;
    let registry = prometheus::Registry::new();
    let cfg = PeerConfig { listen: vec![loopback("tcp")?, loopback("quic")?], mdns: false, ..PeerConfig::default() };
    let identity = chorus_peer::load_or_create_identity(&dir.join("peer.key"))?;
    let store = Arc::new(DirStore::new(dir));
    let peer = Arc::new(Peer::start(cfg, store.clone(), Some(identity), &registry)?);
    let addrs = tokio::time::timeout(Duration::from_secs(5), peer.listen_addrs())
        .await
        .context("the peer did not start listening within 5 s")?;
    let addr = chorus_peer::tracker::announceable(peer.peer_id(), &addrs)
        .first()
        .map(ToString::to_string)
        .context("the peer has no listen address")?;
    let server = Server::bind(&[listen("http://127.0.0.1:0")?], None, ServerConfig::default()).await?;
    let metrics = format!("{}/metrics", server.local_urls()[0]);
    servers.spawn(server.serve(Arc::new(MetricsHandler(registry)), stop.clone().wait()));
    // Announced before the listener starts, then again before the trackers forget.
    let http = HttpClient::new(&ClientTls::default())?.with_timeout(Duration::from_secs(10));
    let edges = edges.iter().map(|e| e.parse()).collect::<Result<Vec<chorus_core::url::BaseUrl>, _>>()?;
    let (announced, taken) =
        announce_held(&http, &peer, store.clone(), &edges, None, Announced::default(), Report::Operator).await;
    let (node, stopped) = (peer.clone(), stop.clone());
    servers.spawn(async move {
        let (node, store, edges, http) = (&node, &store, &edges, &http);
        chorus_peer::tracker::every_reannounce(
            taken != Round::Taken,
            stopped.wait(),
            announced,
            |announced: Announced| async move {
                Some(announce_held(http, node, store.clone(), edges, None, announced, Report::Operator).await)
            },
        )
        .await;
    });
    Ok(DemoPeer { _peer: peer, addr, metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_package_directories_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["b-track", "a-track"] {
            std::fs::create_dir_all(dir.path().join(name)).unwrap();
            std::fs::write(dir.path().join(name).join("master.m3u8"), "#EXTM3U\n").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("not-a-package")).unwrap();
        std::fs::write(dir.path().join("README.md"), "").unwrap();
        let found: Vec<String> = find_samples(dir.path()).unwrap().iter().map(|s| s.track.to_string()).collect();
        assert_eq!(found, ["a-track", "b-track"]);
        let empty = tempfile::tempdir().unwrap();
        assert!(find_samples(empty.path()).unwrap_err().to_string().contains("no sample tracks"));
        assert!(find_samples(&empty.path().join("missing")).unwrap_err().to_string().contains("--samples"));
    }
}
