//! `chorus demo`: the whole network on one machine.
//!
//! An origin, two edges and a few seeding peers start on loopback, with their files in a
//! temporary directory; the sample tracks that ship in `samples/` are imported as they are (no
//! ffmpeg); a listener plays a playlist through chorus-client with P2P on, and a live view
//! shows where its bytes come from. The playlist ends with its first track again, which then
//! plays from the listener's cache. `--once` plays the playlist and exits with the summary;
//! otherwise the network stays up for the printed URLs until Ctrl-C. Either way every node
//! stops and the temporary directory is removed.
//!
//! Where the bytes of a play come from is counted where they crossed the network: the next
//! track is preloaded while the current one plays (from peers, from the edge only in time),
//! so its bytes count by the preload's sources, not as cache hits when it then plays.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use chorus_client::BySource;
use chorus_client::{Client, ClientBuilder, Summary};
use chorus_core::TrackId;
use chorus_core::http::client::HttpClient;
use chorus_core::http::tls::{self, ClientTls};
use chorus_core::http::{ListenUrl, Server, ServerConfig};
use chorus_core::keys::{self, VerifyingKey};
use chorus_edge::cache::CacheConfig;
use chorus_edge::metrics::EdgeMetrics;
use chorus_edge::{Edge, EdgeConfig};
use chorus_origin::ingest::{self, IngestRequest, Mode, NoProgress};
use chorus_origin::metrics::OriginMetrics;
use chorus_origin::{ApiConfig, Origin, Store};
use chorus_peer::{DirStore, Multiaddr, Peer, PeerConfig};
use clap::Args;
use indicatif::{HumanBytes, MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

#[derive(Args)]
pub(crate) struct DemoArgs {
    /// Play the playlist once, print the summary and exit (instead of staying up until Ctrl-C).
    #[arg(long)]
    once: bool,
    /// With --once: the summary as one JSON object on stdout.
    #[arg(long, requires = "once")]
    json: bool,
    /// The sample tracks: a directory of HLS/CMAF package directories (each with a
    /// master.m3u8), such as the repository's samples/.
    #[arg(long, value_name = "DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/samples"))]
    samples: PathBuf,
    /// Seeding peers to start; each holds every sample track.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=8))]
    peers: u8,
    /// Keep the network's files in DIR (created if missing) instead of a temporary directory
    /// that is removed on exit.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

/// When this much of a track is left, the next one is preloaded.
const PRELOAD_BEFORE: Duration = Duration::from_secs(30);
/// How much of the next track a preload fetches.
const PRELOAD_AMOUNT: Duration = Duration::from_secs(15);
/// How often the live view is redrawn.
const REDRAW: Duration = Duration::from_millis(200);

/// A sample track found in the samples directory.
#[derive(Debug)]
struct Sample {
    track: TrackId,
    dir: PathBuf,
}

/// The summary `--once --json` prints (SPEC §7), plus a few more counts.
#[derive(Debug, Default, Serialize)]
struct DemoSummary {
    plays: usize,
    bytes_total: u64,
    bytes_by_source: BySource,
    startup_ms_p50: u64,
    stalls: u32,
    stall_ms: u64,
    chunks_verified: u64,
    chunks_rejected: u64,
    /// Bytes preloads fetched over the network (those later played count in
    /// `bytes_by_source` by where they came from).
    preloaded_bytes: u64,
}

/// One play and the preload that fetched the start of its track ahead of it, if any.
struct Played {
    summary: Summary,
    preload: Option<Summary>,
}

impl Played {
    /// The play's bytes by where they crossed the network: what it read from the cache that
    /// its preload had fetched counts by the preload's sources (in their proportion), not as
    /// cache. The shares still add up to the bytes played; preloaded bytes the play did not
    /// use (another rendition) count in no share.
    fn by_source(&self) -> BySource {
        let mut s = self.summary.bytes_by_source;
        if let Some(pre) = &self.preload {
            let fetched = pre.bytes_by_source.edge + pre.bytes_by_source.peer;
            let used = fetched.min(s.cache);
            if used > 0 {
                let from_edge =
                    u64::try_from(u128::from(pre.bytes_by_source.edge) * u128::from(used) / u128::from(fetched))
                        .unwrap_or(used);
                s.edge += from_edge;
                s.peer += used - from_edge;
                s.cache -= used;
            }
        }
        s
    }
}

fn summarize(plays: &[Played]) -> DemoSummary {
    let mut out = DemoSummary { plays: plays.len(), ..DemoSummary::default() };
    for p in plays {
        let s = p.by_source();
        out.bytes_by_source.edge += s.edge;
        out.bytes_by_source.peer += s.peer;
        out.bytes_by_source.cache += s.cache;
        out.bytes_total += p.summary.bytes_total;
        out.stalls += p.summary.stalls;
        out.stall_ms += p.summary.stall_ms;
        out.chunks_verified += p.summary.chunks_verified;
        out.chunks_rejected += p.summary.chunks_rejected;
        out.preloaded_bytes += p.preload.as_ref().map_or(0, |pre| pre.bytes_by_source.edge + pre.bytes_by_source.peer);
    }
    let mut startup: Vec<u64> = plays.iter().map(|p| p.summary.startup_ms).collect();
    startup.sort_unstable();
    out.startup_ms_p50 = startup.get(startup.len().saturating_sub(1) / 2).copied().unwrap_or(0);
    out
}

/// Where the bytes came from, as shares of the total.
fn shares(s: &BySource) -> String {
    let total = (s.edge + s.peer + s.cache).max(1) as f64;
    let pct = |b: u64| 100.0 * b as f64 / total;
    format!(
        "edge {} ({:.0}%) · peer {} ({:.0}%) · cache {} ({:.0}%)",
        HumanBytes(s.edge),
        pct(s.edge),
        HumanBytes(s.peer),
        pct(s.peer),
        HumanBytes(s.cache),
        pct(s.cache)
    )
}

pub(crate) async fn run(a: DemoArgs) -> Result<()> {
    let samples = find_samples(&a.samples)?;
    let (_tmp, root) = match &a.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            (None, d.clone())
        }
        None => {
            let t =
                tempfile::Builder::new().prefix("chorus-demo-").tempdir().context("making a temporary directory")?;
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    // Two stop signals: the origin stops last, so no edge sees its upstream go away.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (origin_stop_tx, origin_stop_rx) = watch::channel(false);
    let mut servers = JoinSet::new();
    let stops = Stops { nodes: Stop(stop_rx), origin: Stop(origin_stop_rx) };
    let view = View::new();
    let result = tokio::select! {
        r = demo(&a, &samples, &root, &stops, &mut servers, &view) => r,
        () = crate::origin_cmd::shutdown_signal() => {
            view.finish();
            eprintln!("stopping");
            Ok(())
        }
    };
    // Every node stops (the peers and the listener went with `demo`); servers drain briefly.
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(3), async { while servers.join_next().await.is_some() {} }).await;
    let _ = origin_stop_tx.send(true);
    if a.dir.is_none() {
        eprintln!("removed {}", root.display());
    }
    result
}

/// Tells the demo's servers to stop.
#[derive(Clone)]
struct Stop(watch::Receiver<bool>);

/// The stop signals of the demo's nodes.
struct Stops {
    /// Edges, peers.
    nodes: Stop,
    /// The origin, after the others.
    origin: Stop,
}

impl Stop {
    async fn wait(mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

async fn demo(
    a: &DemoArgs,
    samples: &[Sample],
    root: &Path,
    stops: &Stops,
    servers: &mut JoinSet<()>,
    view: &View,
) -> Result<()> {
    let stop = &stops.nodes;
    view.say(format!("chorus demo: every node on 127.0.0.1, files in {}", root.display()));

    let (origin_url, origin_key) = start_origin(&root.join("origin"), samples, &stops.origin).await?;
    let key = keys::read_verifying_key(&origin_key)?;
    let edge_a = start_edge(&root.join("edge-a"), &origin_url, key, true, stop, servers).await?;
    let edge_b = start_edge(&root.join("edge-b"), &origin_url, key, false, stop, servers).await?;
    let edges_http = vec![edge_a.http.clone(), edge_b.http.clone()];
    let tracks: Vec<TrackId> = samples.iter().map(|s| s.track.clone()).collect();
    let mut peers = Vec::new();
    for n in 1..=a.peers {
        let dir = root.join(format!("peer-{n}"));
        peers.push(start_peer(&dir, &edge_b.http, &edges_http, key, &tracks, stop, servers).await?);
    }

    view.say(format!("  origin    {origin_url}   metrics {origin_url}/metrics"));
    view.say(format!("  edge a    {}   metrics {}/metrics", edge_a.urls.join("  "), edge_a.http));
    view.say(format!("  edge b    {}   metrics {}/metrics", edge_b.urls.join("  "), edge_b.http));
    for (n, p) in peers.iter().enumerate() {
        view.say(format!("  peer {}    {}   metrics {}", n + 1, p.addr, p.metrics));
    }
    let first = &tracks[0];
    view.say(format!(
        "  listen along: ffplay {}/v1/tracks/{first}/hls/master.m3u8   (or open it in a browser with hls.js)",
        edge_a.http
    ));

    // The listener: HTTP/3 to edge a first, edge b as the fallback; P2P on, no mDNS (nothing
    // leaves loopback).
    let listener = ClientBuilder::new(vec![edge_a.h3.clone(), edge_b.http.clone()], key)
        .trust(ClientTls { ca_files: vec![edge_a.cert.clone()], insecure: false })
        .cache(root.join("listener"), 1 << 30)
        .play(true)
        .p2p(true)
        .p2p_mdns(false)
        .p2p_listen(vec![loopback("tcp")?])
        .build()?;
    let mut playlist = tracks.clone();
    playlist.push(first.clone());
    view.say(format!(
        "  listener  chorus-client, P2P on, playlist: {} (again, from its cache)",
        playlist.iter().map(TrackId::as_str).collect::<Vec<_>>().join(", ")
    ));
    let plays = play(&listener, &playlist, view).await?;
    let summary = summarize(&plays);
    view.finish();
    eprintln!(
        "{} plays, {}: {}; startup p50 {} ms; {} stalls; {} chunks verified, {} rejected",
        summary.plays,
        HumanBytes(summary.bytes_total),
        shares(&summary.bytes_by_source),
        summary.startup_ms_p50,
        summary.stalls,
        summary.chunks_verified,
        summary.chunks_rejected
    );
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    }
    if a.once {
        return Ok(());
    }
    eprintln!("the network stays up for the URLs above; Ctrl-C stops it");
    std::future::pending::<()>().await;
    Ok(())
}

/// The sample tracks in `dir`: subdirectories with a `master.m3u8`, by name.
fn find_samples(dir: &Path) -> Result<Vec<Sample>> {
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

fn listen(url: &str) -> Result<ListenUrl> {
    url.parse::<ListenUrl>().map_err(|e| anyhow::anyhow!("{url}: {e}"))
}

/// A loopback multiaddr on a port the system picks, over `tcp` or `quic-v1`.
fn loopback(transport: &str) -> Result<Multiaddr> {
    let s = if transport == "tcp" { "/ip4/127.0.0.1/tcp/0" } else { "/ip4/127.0.0.1/udp/0/quic-v1" };
    s.parse().context("a loopback multiaddr")
}

/// Imports the samples into a new store and serves it; returns its URL and public key file.
async fn start_origin(dir: &Path, samples: &[Sample], stop: &Stop) -> Result<(String, PathBuf)> {
    let store = Store::open(dir).with_context(|| format!("opening store {}", dir.display()))?;
    let priv_path = store.default_key_path();
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
    let origin = Arc::new(Origin::new(store, key, ApiConfig::default(), OriginMetrics::new()));
    origin.refresh_counts().await;
    // Not one of `servers`: it stops on its own signal, after them.
    tokio::spawn(server.serve(origin, stop.clone().wait()));
    Ok((url, pub_path))
}

/// A running edge.
struct DemoEdge {
    /// Its plain HTTP URL.
    http: String,
    /// Its HTTP/3 URL (the HTTP URL on an edge without TLS).
    h3: String,
    /// Every URL it serves.
    urls: Vec<String>,
    /// Its self-signed certificate, for clients to trust.
    cert: PathBuf,
}

/// An edge in front of `origin` caching in `dir`; with `tls`, it also serves HTTPS and HTTP/3
/// with a self-signed certificate.
async fn start_edge(
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
        origins: vec![origin.to_owned()],
        parents: Vec::new(),
        trust: ClientTls::default(),
        cache: CacheConfig { mem_bytes: 64 << 20, disk_bytes: 1 << 30, dir: Some(dir.to_owned()) },
        upstream: chorus_edge::upstream::UpstreamConfig::default(),
        prefetch: chorus_edge::prefetch::PrefetchConfig::default(),
        tracker: chorus_edge::tracker::TrackerConfig::default(),
        manifests: 4096,
        token_key: None,
        admin_token: None,
        origin_key: Some(origin_key),
    };
    let edge = Edge::new(cfg, EdgeMetrics::new()).await.map_err(anyhow::Error::msg)?;
    let server = Server::bind(&urls, cert.as_ref(), ServerConfig::default()).await?;
    let bound: Vec<String> = server.local_urls().iter().map(ToString::to_string).collect();
    edge.spawn_background();
    servers.spawn(server.serve(Arc::new(edge), stop.clone().wait()));
    let http = bound.iter().find(|u| u.starts_with("http://")).cloned().context("the edge has no HTTP listener")?;
    let h3 = bound.iter().find(|u| u.starts_with("h3://")).cloned().unwrap_or_else(|| http.clone());
    Ok(DemoEdge { http, h3, urls: bound, cert: cert.map(|c| c.cert_path).unwrap_or_default() })
}

/// A running seeding peer.
struct DemoPeer {
    /// Keeps the node running.
    _peer: Arc<Peer>,
    /// Its first listen address, as a full multiaddr.
    addr: String,
    /// Its metrics URL.
    metrics: String,
}

/// A peer that fetches every rendition of `tracks` from `seed_from` into `dir`, then serves
/// them, announcing to every edge's tracker (again before the trackers forget).
async fn start_peer(
    dir: &Path,
    seed_from: &str,
    edges: &[String],
    key: VerifyingKey,
    tracks: &[TrackId],
    stop: &Stop,
    servers: &mut JoinSet<()>,
) -> Result<DemoPeer> {
    let builder = ClientBuilder::new(vec![seed_from.to_owned()], key).cache(dir.to_owned(), 1 << 30);
    crate::peer_cmd::seed(&builder, tracks).await?;
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
    servers.spawn(server.serve(Arc::new(crate::peer_cmd::Metrics(registry)), stop.clone().wait()));
    // Announced before the listener starts, then again before the trackers forget.
    let http = HttpClient::new(&ClientTls::default())?.with_timeout(Duration::from_secs(10));
    let edges = edges.to_vec();
    let announced = crate::peer_cmd::announce(&peer, &store, &edges, &http, None, &[]).await;
    let (node, stopped) = (peer.clone(), stop.clone());
    servers.spawn(async move {
        let mut announced = announced;
        let stopped = stopped.wait();
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => return,
                () = tokio::time::sleep(crate::peer_cmd::REANNOUNCE) => {}
            }
            announced = crate::peer_cmd::announce(&node, &store, &edges, &http, None, &announced).await;
        }
    });
    Ok(DemoPeer { _peer: peer, addr, metrics })
}

/// Plays `playlist` in order, each track to the end of its audio, preloading the next one
/// when [`PRELOAD_BEFORE`] of the current one is left.
async fn play(client: &Client, playlist: &[TrackId], view: &View) -> Result<Vec<Played>> {
    let mut out = Vec::new();
    let mut preloading: Option<tokio::task::JoinHandle<Option<Summary>>> = None;
    for (k, track) in playlist.iter().enumerate() {
        // The preload of this track (started during the previous one) has ended by now, or is
        // cut short: what it fetched is in the cache either way.
        let preload = match preloading.take() {
            Some(h) => tokio::time::timeout(Duration::from_secs(30), h).await.ok().and_then(|j| j.ok().flatten()),
            None => None,
        };
        let began = Instant::now();
        let mut t = client.open(track).await.with_context(|| format!("playing {track}"))?;
        let duration = t.info().duration;
        let bar = view.track(track, duration);
        preloading = playlist.get(k + 1).map(|next| {
            let (client, next) = (client.clone(), next.clone());
            let wait = duration.saturating_sub(PRELOAD_BEFORE);
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let p = client.preload(&next, duration - wait, PRELOAD_AMOUNT).await.ok()?;
                p.finish().await.ok()
            })
        });
        let mut redraw = tokio::time::interval(REDRAW);
        let (mut fetched, mut rendition) = (false, String::new());
        loop {
            tokio::select! {
                s = t.next(), if !fetched => match s {
                    Some(s) => rendition = s.with_context(|| format!("playing {track}"))?.rendition.to_string(),
                    None => fetched = true,
                },
                _ = redraw.tick() => {
                    let st = t.stats();
                    // The playhead: audio plays from the first segment on, paused while stalled.
                    let played = if st.startup_ms == 0 {
                        Duration::ZERO
                    } else {
                        began.elapsed().saturating_sub(Duration::from_millis(st.startup_ms + st.stall_ms)).min(duration)
                    };
                    view.update(&bar, &st, played, duration, &rendition);
                    // The fetch ends up to a buffer before the audio does: the listener hears
                    // the track to its end first.
                    if fetched && played >= duration {
                        break;
                    }
                }
            }
        }
        let summary = t.finish().await;
        let played = Played { summary, preload };
        view.played(&bar, &played);
        out.push(played);
    }
    Ok(out)
}

/// The live view on stderr: a bar per play and a line of totals. Without a terminal it
/// prints one line per finished play instead.
struct View {
    bars: MultiProgress,
    total: ProgressBar,
    plays: std::sync::Mutex<Vec<BySource>>,
}

impl View {
    fn new() -> Self {
        let target =
            if std::io::stderr().is_terminal() { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::hidden() };
        let bars = MultiProgress::with_draw_target(target);
        let total = bars.add(ProgressBar::new_spinner());
        total.set_style(ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
        Self { bars, total, plays: std::sync::Mutex::new(Vec::new()) }
    }

    /// A line above the bars (or on stderr without a terminal).
    fn say(&self, line: String) {
        if self.bars.is_hidden() {
            eprintln!("{line}");
        } else {
            let _ = self.bars.println(line);
        }
    }

    fn track(&self, track: &TrackId, duration: Duration) -> ProgressBar {
        let bar = self.bars.insert_before(&self.total, ProgressBar::new(duration.as_millis() as u64));
        bar.set_style(
            ProgressStyle::with_template("{prefix:>16} {bar:24} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(track.to_string());
        bar
    }

    fn update(&self, bar: &ProgressBar, st: &Summary, played: Duration, duration: Duration, rendition: &str) {
        bar.set_position(played.as_millis() as u64);
        bar.set_message(format!(
            "{}/{} {rendition:>7} buffer {:>4.1} s | edge {} peer {} cache {} | {}",
            clock(played),
            clock(duration),
            st.buffer_ms as f64 / 1000.0,
            HumanBytes(st.bytes_by_source.edge),
            HumanBytes(st.bytes_by_source.peer),
            HumanBytes(st.bytes_by_source.cache),
            st.protocol,
        ));
    }

    fn played(&self, bar: &ProgressBar, p: &Played) {
        let s = &p.summary;
        let by = p.by_source();
        let fetched = |pre: &&Summary| pre.bytes_by_source.edge + pre.bytes_by_source.peer > 0;
        let pre = p.preload.as_ref().filter(fetched).map_or(String::new(), |pre| {
            format!(
                " (its start preloaded: peer {}, edge {})",
                HumanBytes(pre.bytes_by_source.peer),
                HumanBytes(pre.bytes_by_source.edge)
            )
        });
        let line = format!(
            "played {}: {} {}, startup {} ms, {} stalls, {} peers; {}{pre}",
            s.track_id,
            s.rendition,
            HumanBytes(s.bytes_total),
            s.startup_ms,
            s.stalls,
            s.peers,
            shares(&by)
        );
        bar.finish_and_clear();
        self.bars.remove(bar);
        self.say(line);
        let mut plays = self.plays.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        plays.push(by);
        let mut all = BySource::default();
        for b in plays.iter() {
            all.edge += b.edge;
            all.peer += b.peer;
            all.cache += b.cache;
        }
        self.total.set_message(format!("{} plays so far: {}", plays.len(), shares(&all)));
    }

    fn finish(&self) {
        self.total.finish_and_clear();
        let _ = self.bars.clear();
    }
}

/// `m:ss`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{}:{:02}", s / 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(edge: u64, peer: u64, cache: u64, startup_ms: u64) -> Summary {
        Summary {
            bytes_total: edge + peer + cache,
            bytes_by_source: BySource { edge, peer, cache },
            startup_ms,
            ..Summary::default()
        }
    }

    #[test]
    fn preloaded_bytes_count_where_they_crossed_the_network() {
        let plays = vec![
            Played { summary: summary(300, 100, 0, 40), preload: None },
            // 250 bytes came from the cache, of which the preload fetched 200 (150 from peers).
            Played { summary: summary(0, 50, 250, 5), preload: Some(summary(50, 150, 0, 0)) },
            Played { summary: summary(0, 0, 400, 2), preload: Some(summary(0, 0, 400, 0)) },
            // The preload fetched 300 bytes of another rendition; the play read 100 from the
            // cache: only those count as the preload's (a third from the edge).
            Played { summary: summary(0, 200, 100, 3), preload: Some(summary(100, 200, 0, 0)) },
        ];
        let s = summarize(&plays);
        assert_eq!(s.plays, 4);
        assert_eq!(s.bytes_total, 1400);
        assert_eq!((s.bytes_by_source.edge, s.bytes_by_source.peer, s.bytes_by_source.cache), (383, 567, 450));
        assert_eq!(s.bytes_by_source.edge + s.bytes_by_source.peer + s.bytes_by_source.cache, s.bytes_total);
        assert_eq!(s.preloaded_bytes, 500);
        assert_eq!(s.startup_ms_p50, 3);
    }

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
