//! `chorus simulate`: a deployment of many listeners on a virtual clock (crate `chorus-sim`),
//! for capacity planners (docs/capacity-planning.md, "Simulating a deployment").

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chorus_client::abr::Quality;
use chorus_sim::{Report, Session, SimConfig};
use clap::Args;

#[derive(Args)]
pub(crate) struct SimulateArgs {
    /// Listeners who arrive (uniformly over --arrive-minutes).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    listeners: usize,
    /// Tracks in the catalogue (popularity Zipf, --zipf).
    #[arg(long, value_name = "N", default_value_t = 100_000)]
    tracks: usize,
    /// The popularity law's exponent: rank k is played with probability ∝ 1/k^S.
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    zipf: f64,
    /// Simulated minutes.
    #[arg(long, value_name = "MINUTES", default_value_t = 20.0)]
    minutes: f64,
    /// Listeners arrive over this many minutes.
    #[arg(long, value_name = "MINUTES", default_value_t = 10.0)]
    arrive_minutes: f64,
    /// Mean session length (exponential; listeners leave mid-track too).
    #[arg(long, value_name = "MINUTES", default_value_t = 30.0, conflicts_with = "plays")]
    session_minutes: f64,
    /// Instead: each listener plays exactly N tracks, then leaves.
    #[arg(long, value_name = "N")]
    plays: Option<u32>,
    /// Segments per track, MIN-MAX (6 s each).
    #[arg(long, value_name = "MIN-MAX", default_value = "30-45", value_parser = range)]
    segments: (u64, u64),
    /// The bitrate ladder, kbit/s.
    #[arg(long, value_name = "KBPS", value_delimiter = ',', default_value = "24,96,160,320")]
    ladder_kbps: Vec<u64>,
    /// Listeners' quality: auto (by throughput), or a fixed rung (0 = lowest).
    #[arg(long, value_name = "auto|RUNG", default_value = "auto")]
    quality: String,
    /// Fetch each track as fast as possible instead of playing it in real time (the swarm
    /// benchmark's fast mode).
    #[arg(long)]
    fast: bool,
    /// Listeners use no peers (every byte from the edges).
    #[arg(long)]
    no_p2p: bool,
    /// Listeners do not preload the next track (by default, when 30 s of a track are left,
    /// its successor's first 15 s are fetched from peers, and from the edge only when due, as
    /// `Client::preload`; play mode only).
    #[arg(long)]
    no_preload: bool,
    /// Edges; listener n reaches edge n mod N.
    #[arg(long, value_name = "N", default_value_t = 1)]
    edges: usize,
    /// Each edge's cache.
    #[arg(long, value_name = "SIZE", default_value = "16GiB")]
    edge_cache: chorus_core::units::Size,
    /// One tracker for all edges (shared, as with `chorus edge --tracker redis://…`) or one per
    /// edge.
    #[arg(long, value_name = "shared|per-edge", default_value = "shared")]
    tracker: String,
    /// The tracker's cap per track per source network.
    #[arg(long, value_name = "N", default_value_t = 4)]
    per_network: usize,
    /// Listeners per /24 network.
    #[arg(long, value_name = "N", default_value_t = 8)]
    listeners_per_network: usize,
    /// Each listener's round trip to its edge, MIN-MAX ms (uniform).
    #[arg(long, value_name = "MIN-MAX", default_value = "10-60", value_parser = range)]
    rtt_ms: (u64, u64),
    /// Added between two listeners (the core in between), ms.
    #[arg(long, value_name = "MS", default_value_t = 10)]
    core_rtt_ms: u64,
    /// Downlinks, MIN-MAX kbit/s.
    #[arg(long, value_name = "MIN-MAX", default_value = "10000-100000", value_parser = range)]
    downlink_kbps: (u64, u64),
    /// Uplinks of serving listeners, MIN-MAX kbit/s.
    #[arg(long, value_name = "MIN-MAX", default_value = "1000-20000", value_parser = range)]
    uplink_kbps: (u64, u64),
    /// Fraction of listeners that only consume (mobile): no uplink, never announced.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.3)]
    mobile: f64,
    /// Fraction of listeners behind endpoint-independent NATs (home routers): reached by a hole
    /// punched through the edge's relay.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    behind_cone: f64,
    /// Fraction of listeners behind symmetric NATs: reached by listeners with public addresses
    /// only.
    #[arg(long, value_name = "FRACTION", default_value_t = 0.0)]
    behind_symmetric: f64,
    /// Tracks in each listener's cache when it arrives (whole, drawn from the popularity of
    /// plays): what earlier days left. 0: cold caches.
    #[arg(long, value_name = "N", default_value_t = 0)]
    warm_tracks: usize,
    /// Of --listeners, the first N hold every track from the start, stay online to the end and
    /// never play (listeners who keep their app open: the seeders of tests/netns.rs).
    #[arg(long, value_name = "N", default_value_t = 0)]
    seeders: usize,
    /// Uploads a listener serves at once.
    #[arg(long, value_name = "N", default_value_t = 4)]
    max_uploads: u32,
    /// Seed of every random draw.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Runs one scenario per value of one setting, e.g. edges=1,2,4 or mobile=0,0.3,0.7 (keys:
    /// listeners, tracks, edges, mobile, tracker, p2p, preload, zipf, behind-symmetric, warm-tracks).
    #[arg(long, value_name = "KEY=V1,V2,...")]
    sweep: Option<String>,
    /// Scenarios of a sweep run this many at a time, each on a core of its own and with memory
    /// of its own (default: the machine's cores). Each run is the same whatever this is.
    #[arg(long, value_name = "N")]
    jobs: Option<std::num::NonZeroUsize>,
    /// Threads of each scenario's run (default: the machine's cores shared among the jobs).
    /// A run's results are the same whatever this is.
    #[arg(long, value_name = "N")]
    threads: Option<std::num::NonZeroUsize>,
    /// Also write every scenario's full report (with its timeline) as JSON.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Also write a chart of the edges' share of played bytes over time (SVG).
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
}

fn range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (a, b) =
        (a.trim().parse::<u64>().map_err(|e| e.to_string())?, b.trim().parse::<u64>().map_err(|e| e.to_string())?);
    if a > b {
        return Err(format!("{a} is more than {b}"));
    }
    Ok((a, b))
}

fn minutes(m: f64) -> Duration {
    Duration::from_secs_f64((m * 60.0).max(0.0))
}

impl SimulateArgs {
    fn config(&self) -> Result<SimConfig> {
        if self.ladder_kbps.is_empty() || self.ladder_kbps.contains(&0) {
            bail!("--ladder-kbps needs bitrates above 0");
        }
        if !(0.0..=1.0).contains(&self.behind_cone)
            || !(0.0..=1.0).contains(&self.behind_symmetric)
            || self.behind_cone + self.behind_symmetric > 1.0
        {
            bail!("--behind-cone and --behind-symmetric are fractions from 0 to 1, together at most 1");
        }
        if !(0.0..=1.0).contains(&self.mobile) {
            bail!("--mobile is a fraction from 0 to 1");
        }
        for (flag, v) in [
            ("--minutes", self.minutes),
            ("--arrive-minutes", self.arrive_minutes),
            ("--session-minutes", self.session_minutes),
        ] {
            if !(v.is_finite() && (0.0..=1e6).contains(&v)) {
                bail!("{flag} {v}: a number of minutes from 0 to 1000000");
            }
        }
        if !(1..=254).contains(&self.listeners_per_network) {
            bail!("--listeners-per-network is from 1 to 254 (one /24)");
        }
        if self.seeders >= self.listeners.max(1) {
            bail!("--seeders {}: fewer than --listeners ({}), or no one plays", self.seeders, self.listeners);
        }
        let quality = match self.quality.as_str() {
            "auto" => Quality::Auto { cap: usize::MAX },
            n => Quality::Fixed(
                n.parse::<usize>()
                    .ok()
                    .filter(|r| *r < self.ladder_kbps.len())
                    .with_context(|| format!("--quality {n}: auto, or a rung below {}", self.ladder_kbps.len()))?,
            ),
        };
        let shared = match self.tracker.as_str() {
            "shared" => true,
            "per-edge" => false,
            t => bail!("--tracker {t}: shared or per-edge"),
        };
        Ok(SimConfig {
            listeners: self.listeners,
            arrive_over: minutes(self.arrive_minutes),
            duration: minutes(self.minutes),
            session: self.plays.map_or(Session::Mean(minutes(self.session_minutes)), Session::Plays),
            tracks: self.tracks.max(1),
            zipf: self.zipf,
            segments: (usize::try_from(self.segments.0)?.max(1), usize::try_from(self.segments.1)?.max(1)),
            segment: Duration::from_secs(6),
            ladder_bps: self.ladder_kbps.iter().map(|k| k * 1000).collect(),
            quality,
            play: !self.fast,
            preload: !self.no_preload,
            p2p: !self.no_p2p,
            edges: self.edges.max(1),
            edge_cache_bytes: self.edge_cache.0,
            shared_tracker: shared,
            per_network: self.per_network,
            listeners_per_network: self.listeners_per_network,
            origin_rtt: Duration::from_millis(40),
            origin_bps: 125_000_000,
            rtt: (Duration::from_millis(self.rtt_ms.0), Duration::from_millis(self.rtt_ms.1)),
            core_rtt: Duration::from_millis(self.core_rtt_ms),
            downlink: (self.downlink_kbps.0 * 125, self.downlink_kbps.1 * 125),
            uplink: (self.uplink_kbps.0 * 125, self.uplink_kbps.1 * 125),
            mobile: self.mobile,
            behind_cone: self.behind_cone,
            warm_tracks: self.warm_tracks,
            seeders: self.seeders,
            behind_symmetric: self.behind_symmetric,
            max_uploads: self.max_uploads,
            seed: self.seed,
            sample: Duration::from_secs(60),
        })
    }
}

/// `cfg` with `key` set to `value`.
fn apply(mut cfg: SimConfig, key: &str, value: &str) -> Result<SimConfig> {
    let bad = || format!("--sweep {key}={value}: not a value for {key}");
    match key {
        "listeners" => cfg.listeners = value.parse().with_context(bad)?,
        "tracks" => cfg.tracks = value.parse::<usize>().with_context(bad)?.max(1),
        "edges" => cfg.edges = value.parse::<usize>().with_context(bad)?.max(1),
        "mobile" => {
            cfg.mobile = value.parse::<f64>().ok().filter(|m| (0.0..=1.0).contains(m)).with_context(bad)?;
        }
        "zipf" => cfg.zipf = value.parse::<f64>().ok().filter(|z| z.is_finite() && *z >= 0.0).with_context(bad)?,
        "warm-tracks" => cfg.warm_tracks = value.parse().with_context(bad)?,
        "behind-symmetric" => {
            let f = value.parse::<f64>().ok().filter(|m| (0.0..=1.0 - cfg.behind_cone).contains(m));
            cfg.behind_symmetric = f.with_context(bad)?;
        }
        "tracker" => {
            cfg.shared_tracker = match value {
                "shared" => true,
                "per-edge" => false,
                _ => bail!("--sweep tracker={value}: shared or per-edge"),
            }
        }
        "p2p" | "preload" => {
            let on = match value {
                "on" => true,
                "off" => false,
                _ => bail!("--sweep {key}={value}: on or off"),
            };
            if key == "p2p" {
                cfg.p2p = on;
            } else {
                cfg.preload = on;
            }
        }
        _ => bail!(
            "--sweep {key}: one of listeners, tracks, edges, mobile, tracker, p2p, preload, zipf, behind-symmetric, warm-tracks"
        ),
    }
    Ok(cfg)
}

pub(crate) fn run(a: &SimulateArgs) -> Result<()> {
    let base = a.config()?;
    let scenarios: Vec<(String, SimConfig)> = match &a.sweep {
        None => vec![("run".to_owned(), base)],
        Some(s) => {
            let (key, values) = s.split_once('=').context("--sweep KEY=V1,V2,…")?;
            values
                .split(',')
                .map(|v| Ok((format!("{key}={v}"), apply(base.clone(), key, v.trim())?)))
                .collect::<Result<_>>()?
        }
    };
    let reports =
        run_all(&scenarios, a.jobs.map(std::num::NonZeroUsize::get), a.threads.map(std::num::NonZeroUsize::get));
    print_table(&reports);
    if let Some(path) = &a.json {
        let doc: Vec<serde_json::Value> =
            reports.iter().map(|(n, r)| serde_json::json!({"scenario": n, "report": r})).collect();
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &a.svg {
        #[allow(clippy::cast_precision_loss)]
        let series: Vec<(String, Vec<(f64, f64)>)> = reports
            .iter()
            .map(|(n, r)| {
                (n.clone(), r.timeline.iter().map(|p| (p.t_s as f64 / 60.0, 100.0 * p.bytes.edge_share())).collect())
            })
            .collect();
        let svg = chorus_sim::plot(
            "Edges' share of played bytes",
            "simulated minutes",
            "% of bytes played, per minute",
            &series,
            true,
        );
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Runs every scenario, `jobs` at a time (default: the machine's cores), each on `threads`
/// threads of its own (default: the cores shared among the jobs); the reports in the
/// scenarios' order.
fn run_all(scenarios: &[(String, SimConfig)], jobs: Option<usize>, threads: Option<usize>) -> Vec<(String, Report)> {
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let jobs = jobs.unwrap_or(cores).clamp(1, scenarios.len().max(1));
    let threads = threads.unwrap_or(cores / jobs).max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let done: std::sync::Mutex<Vec<Option<Report>>> = std::sync::Mutex::new(vec![None; scenarios.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some((name, cfg)) = scenarios.get(i) else { return };
                    let started = Instant::now();
                    let total = cfg.duration.as_secs() / 60;
                    let n = scenarios.len();
                    let mut progress = |t: u64| {
                        let secs = started.elapsed().as_secs_f64();
                        eprintln!("[{}/{n}] {name}: {}/{total} simulated minutes ({secs:.0} s)", i + 1, t / 60);
                    };
                    let r = chorus_sim::run(cfg, threads, &mut progress);
                    let secs = started.elapsed().as_secs_f64();
                    eprintln!("[{}/{n}] {name}: done in {secs:.1} s ({} events)", i + 1, r.events);
                    done.lock().unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(r);
                }
            });
        }
    });
    let done = done.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    scenarios.iter().zip(done).filter_map(|((name, _), r)| Some((name.clone(), r?))).collect()
}

#[allow(clippy::cast_precision_loss)]
fn print_table(reports: &[(String, Report)]) {
    println!(
        "{:<18} {:>8} {:>7} {:>7} {:>7} {:>7} {:>9} {:>9} {:>8} {:>8} {:>8} {:>10} {:>8} {:>7}",
        "scenario",
        "plays",
        "edge%",
        "peer%",
        "cache%",
        "peak",
        "start p50",
        "start p95",
        "vs 2RTT",
        "stall/100",
        "dials/pl",
        "tracker/s",
        "names/s",
        "hit%"
    );
    for (n, r) in reports {
        let t = r.bytes.total().max(1) as f64;
        let hit = r.edges.iter().map(|e| e.hits).sum::<u64>() as f64
            / r.edges.iter().map(|e| e.requests).sum::<u64>().max(1) as f64;
        println!(
            "{:<18} {:>8} {:>7.1} {:>7.1} {:>7.1} {:>7} {:>6} ms {:>6} ms {:>8} {:>8.2} {:>8.2} {:>10.0} {:>8.0} {:>7.1}",
            n,
            r.plays,
            100.0 * r.bytes.edge as f64 / t,
            100.0 * r.bytes.peer as f64 / t,
            100.0 * r.bytes.cache as f64 / t,
            r.peak_online,
            r.startup_ms.p50,
            r.startup_ms.p95,
            format!("{:+.0} ms", r.startup_over_2rtt_plus_10ms_p50),
            r.stalls_per_100_plays,
            r.dials_per_play,
            r.tracker_ops_per_sec,
            r.announced_names_per_sec,
            100.0 * hit,
        );
        if r.preloads > 0 {
            let pre = &r.preload_bytes;
            println!(
                "  {} preloads: {:.1}% of the edges' bytes, {:.1}% of the peers'",
                r.preloads,
                100.0 * pre.edge as f64 / r.bytes.edge.max(1) as f64,
                100.0 * pre.peer as f64 / r.bytes.peer.max(1) as f64
            );
        }
        if r.edges.len() > 1 {
            for (i, e) in r.edges.iter().enumerate() {
                println!(
                    "  edge {i}: {} requests, {:.1}% hits, {:.2} GB sent, {:.2} GB from the origin",
                    e.requests,
                    100.0 * e.hit_ratio,
                    e.egress_bytes as f64 / 1e9,
                    e.origin_bytes as f64 / 1e9
                );
            }
        }
    }
}
