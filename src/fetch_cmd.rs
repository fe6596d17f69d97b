//! `chorus fetch`: fetch a track the way a player would, verified end to end.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use chorus_client::ClientBuilder;
use chorus_client::abr::Quality;
use chorus_core::units::{Size, Span};
use chorus_core::{TrackId, keys};
use chorus_http::tls::ClientTls;
use clap::{Args, ValueEnum};

#[derive(Clone, Copy, ValueEnum)]
enum QualityArg {
    /// Adapt to the network.
    Auto,
    /// The lowest rendition.
    Low,
    /// The second.
    Normal,
    /// The third.
    High,
    /// The fourth (or the highest there is).
    VeryHigh,
}

#[derive(Args)]
pub(crate) struct FetchArgs {
    /// The track id.
    #[arg(value_name = "TRACK")]
    track: TrackId,
    /// Edge to fetch from: https://HOST:PORT (moves to HTTP/3 when the edge offers it in
    /// Alt-Svc; remembered in --cache-dir), h3://HOST:PORT (HTTP/3 raced against HTTPS on the
    /// same port) or http://; repeat for failover.
    #[arg(long, value_name = "URL", value_delimiter = ',', required = true)]
    edge: Vec<chorus_core::url::BaseUrl>,
    /// The origin's public key (origin.pub): manifests that do not verify are refused.
    #[arg(long, value_name = "FILE")]
    origin_key: PathBuf,
    /// Quality: a fixed rung of the ladder, or auto (adapts per segment to throughput and buffer).
    #[arg(long, value_enum, default_value_t = QualityArg::Auto)]
    quality: QualityArg,
    /// With --quality auto: never above this rung.
    #[arg(long, value_enum, value_name = "QUALITY")]
    max_quality: Option<QualityArg>,
    /// With --play: audio to keep fetched ahead of the playhead.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    buffer_ahead: Span,
    /// Keep verified chunks here and use them before the network.
    #[arg(long, value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Size of the local cache (default: a tenth of its disk's free space, at most 10 GiB);
    /// least recently used chunks go first.
    #[arg(long, value_name = "SIZE")]
    cache_size: Option<Size>,
    /// Access token for the edges.
    #[arg(long, value_name = "T")]
    token: Option<String>,
    /// Write the rendition (init + segments, decodable by ffmpeg) to FILE, or - for stdout.
    #[arg(long, value_name = "FILE|-")]
    out: Option<String>,
    /// Print the summary as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// The track that plays next, if known: the edge warms its first segments.
    #[arg(long, value_name = "TRACK")]
    next: Option<TrackId>,
    /// Fetch paced like a player (30 s ahead) instead of as fast as possible.
    #[arg(long)]
    play: bool,
    /// Swap chunks with other listeners (found through the edges' tracker, Kademlia and mDNS);
    /// with --cache-dir, also serve what is cached.
    #[arg(long)]
    p2p: bool,
    /// With --p2p: Kademlia peers to start from (…/p2p/PEER_ID), used when the trackers know
    /// no peer for the track; repeat.
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    p2p_bootstrap: Vec<chorus_peer::Multiaddr>,
    /// With --p2p: where the peer node listens; repeat (default: TCP and QUIC on every IPv4
    /// interface, ports chosen by the system). A fixed port is one a router can forward.
    #[arg(long, value_name = "MULTIADDR", value_delimiter = ',')]
    p2p_listen: Vec<chorus_peer::Multiaddr>,
    /// With --p2p: do not look for peers on the local network (mDNS).
    #[arg(long)]
    no_mdns: bool,
    /// Extra root certificate (PEM) to trust for the edges.
    #[arg(long, value_name = "FILE", value_delimiter = ',')]
    ca: Vec<PathBuf>,
    /// Skip certificate checks (content stays verified by the manifest signature and hashes).
    #[arg(long)]
    insecure: bool,
}

pub(crate) async fn run(a: FetchArgs) -> Result<()> {
    let key = keys::read_verifying_key(&a.origin_key)?;
    let rung = |q: QualityArg| match q {
        QualityArg::Auto => usize::MAX,
        QualityArg::VeryHigh => 3,
        QualityArg::Low => 0,
        QualityArg::Normal => 1,
        QualityArg::High => 2,
    };
    let quality = match a.quality {
        QualityArg::Auto => Quality::Auto { cap: a.max_quality.map_or(usize::MAX, rung) },
        q => Quality::Fixed(rung(q)),
    };
    let mut builder = ClientBuilder::new(a.edge.iter().map(ToString::to_string).collect(), key)
        .trust(ClientTls { ca_files: a.ca.clone(), insecure: a.insecure })
        .quality(quality)
        .token(a.token.clone())
        .next_track(a.next.clone())
        .play(a.play)
        .p2p(a.p2p)
        .p2p_bootstrap(a.p2p_bootstrap.clone())
        .p2p_listen(a.p2p_listen.clone())
        .p2p_mdns(!a.no_mdns)
        .buffer_ahead(a.buffer_ahead.0);
    if let Some(dir) = &a.cache_dir {
        builder = match a.cache_size {
            Some(size) => builder.cache(dir.clone(), size.0),
            None => builder.cache_default(dir.clone()),
        };
    }
    let client = builder.build()?;
    let mut out: Option<Box<dyn std::io::Write>> = match a.out.as_deref() {
        None => None,
        Some("-") => Some(Box::new(std::io::stdout().lock())),
        Some(p) => Some(Box::new(std::fs::File::create(p).with_context(|| format!("creating {p}"))?)),
    };
    // Progress on stderr (hidden when stderr is not a terminal).
    let bar = indicatif::ProgressBar::new_spinner();
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {msg} {bytes_per_sec}") {
        bar.set_style(style);
    }
    bar.set_message(format!("opening {}", a.track));
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let mut track = client.open_stream(&a.track).await?;
    let segments = track.info().segments;
    while let Some(segment) = track.next().await {
        let segment = segment?;
        if let Some(w) = out.as_mut() {
            if let Some(init) = &segment.init {
                w.write_all(init).context("writing the output")?;
            }
            w.write_all(&segment.data).context("writing the output")?;
        }
        let st = track.stats();
        bar.set_position(st.bytes_total);
        bar.set_message(format!(
            "{} segment {}/{segments} {} | edge {} peer {} cache {} | buffer {:.0} s |",
            a.track,
            segment.index + 1,
            segment.rendition,
            indicatif::HumanBytes(st.bytes_by_source.edge),
            indicatif::HumanBytes(st.bytes_by_source.peer),
            indicatif::HumanBytes(st.bytes_by_source.cache),
            st.buffer_ms as f64 / 1000.0,
        ));
    }
    let summary = track.finish().await;
    bar.finish_and_clear();
    if let Some(mut w) = out {
        w.flush().context("writing the output")?;
    }
    if a.json {
        println!("{}", serde_json::to_string(&summary)?);
    } else {
        eprintln!(
            "{}: {}, {:.1} KiB (edge {:.1}, peer {:.1}, cache {:.1}), startup {} ms, {} stalls, {} chunks verified, {} rejected, over {}",
            summary.track_id,
            summary.segments_by_rendition.iter().map(|(r, n)| format!("{r} ×{n}")).collect::<Vec<_>>().join(", "),
            summary.bytes_total as f64 / 1024.0,
            summary.bytes_by_source.edge as f64 / 1024.0,
            summary.bytes_by_source.peer as f64 / 1024.0,
            summary.bytes_by_source.cache as f64 / 1024.0,
            summary.startup_ms,
            summary.stalls,
            summary.chunks_verified,
            summary.chunks_rejected,
            summary.protocol
        );
    }
    Ok(())
}
