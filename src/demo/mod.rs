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
//!
//! The rooms: [`cluster`] starts the nodes, [`summary`] adds up the plays, [`view`] draws the
//! live view; this file holds the arguments, the run and the playlist.

mod cluster;
mod summary;
mod view;
mod web;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, Result};
use chorus_client::{Client, ClientBuilder, Summary};
use chorus_core::TrackId;
use chorus_core::keys;
use chorus_http::tls::ClientTls;
use clap::Args;
use indicatif::HumanBytes;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use cluster::{Sample, Stop, Stops, find_samples, loopback, start_edge, start_origin, start_peer};
use summary::{Played, shares, summarize};
use view::{REDRAW, View};

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
        () = crate::signals::shutdown_signal() => {
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
    let mut nodes = vec![web::NodeInfo {
        id: "origin".into(),
        kind: "origin",
        label: origin_url.clone(),
        metrics: Some(format!("{origin_url}/metrics")),
    }];
    for (id, e) in [("edge-a", &edge_a), ("edge-b", &edge_b)] {
        let metrics = Some(format!("{}/metrics", e.http));
        nodes.push(web::NodeInfo { id: id.into(), kind: "edge", label: e.urls.join(" "), metrics });
    }
    for (n, p) in peers.iter().enumerate() {
        let id = format!("peer-{}", n + 1);
        nodes.push(web::NodeInfo { id, kind: "peer", label: p.addr.clone(), metrics: Some(p.metrics.clone()) });
    }
    nodes.push(web::NodeInfo { id: "listener".into(), kind: "listener", label: "chorus-client".into(), metrics: None });
    let live = web::Live::new(nodes);
    view.say(format!("  network view: {}   (live, in a browser)", web::start(live.clone()).await?));
    let first = &tracks[0];
    let all: Vec<&str> = tracks.iter().map(TrackId::as_str).collect();
    view.say(format!("  listen in a browser: {}/player/?tracks={}", edge_a.http, all.join(",")));
    view.say(format!("  or with ffplay: ffplay {}/v1/tracks/{first}/hls/master.m3u8", edge_a.http));

    // The listener: edge a by its https:// URL first (its answers offer HTTP/3 in Alt-Svc, which
    // the listener takes from its second request on), edge b as the fallback; P2P on, no mDNS
    // (nothing leaves loopback).
    let listener = ClientBuilder::new(vec![edge_a.https.clone(), edge_b.http.clone()], key)
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
    let plays = play(&listener, &playlist, view, &live).await?;
    let summary = summarize(&plays);
    view.finish();
    eprintln!(
        "{} plays, {}: {}; startup p50 {} ms; {} stalls; {} chunks verified, {} rejected; renditions {}",
        summary.plays,
        HumanBytes(summary.bytes_total),
        shares(&summary.bytes_by_source),
        summary.startup_ms_p50,
        summary.stalls,
        summary.chunks_verified,
        summary.chunks_rejected,
        summary.renditions.join(", ")
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

/// Plays `playlist` in order, each track to the end of its audio, preloading the next one
/// when [`PRELOAD_BEFORE`] of the current one is left.
async fn play(client: &Client, playlist: &[TrackId], view: &View, live: &web::Live) -> Result<Vec<Played>> {
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
                    live.listening(&st, played, duration, &rendition);
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
        live.played(&played.by_source());
        out.push(played);
    }
    Ok(out)
}
