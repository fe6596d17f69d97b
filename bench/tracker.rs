//! The shared tracker's cost, side by side with the in-memory one on the same inputs: the
//! edge's own tracker code (`chorus_edge::tracker`) against a real Redis. Run by
//! `bench/tracker.sh`, which starts a `redis-server`.
//!
//! ```text
//! tracker REDIS_URL PEERS TRACKS TRACKS_PER_PEER LOOKUPS CONCURRENCY
//! ```
//! Signs PEERS announces (each peer on its own address, 4 peers per /24, naming TRACKS_PER_PEER
//! tracks drawn by Zipf(1.0) from TRACKS), verifies them as the edge does, then records them
//! all, CONCURRENCY at a time, and answers LOOKUPS peer queries for Zipf-drawn tracks. Prints
//! one JSON object: per op and tracker, ops/s and latency p50/p99 (µs), and Redis's memory per
//! peer (`INFO memory`, before and after; summed over the primaries of a cluster). REDIS_URL
//! may name a Redis Cluster (`redis+cluster://HOST:PORT,…`), as `chorus edge --tracker` takes.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chorus_core::TrackId;
use chorus_core::announce::SignedAnnounce;
use chorus_core::api::Announce;
use chorus_edge::tracker::shared::{Recorded, SharedConfig, SharedTracker};
use chorus_edge::tracker::{AnnounceCheck, Tracker, TrackerConfig, Verified};
use futures_util::StreamExt as _;

use chorus_draw::{Rng, Zipf};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// ops/s and latency percentiles of one phase.
fn report(n: usize, elapsed: Duration, mut lat_us: Vec<u64>) -> serde_json::Value {
    lat_us.sort_unstable();
    serde_json::json!({
        "ops": n,
        "ops_per_sec": (n as f64 / elapsed.as_secs_f64()).round(),
        "p50_us": percentile(&lat_us, 0.5),
        "p99_us": percentile(&lat_us, 0.99),
    })
}

/// Redis's `used_memory`, summed over the primaries when `url` names a cluster
/// (`redis+cluster://HOST:PORT,…`): what the tracker's keys cost, once.
async fn used_memory(url: &str) -> Result<u64, Box<dyn std::error::Error>> {
    let nodes: Vec<String> = match url.split_once("+cluster://") {
        Some((scheme, hosts)) => hosts.split(',').map(|h| format!("{scheme}://{h}")).collect(),
        None => vec![url.to_owned()],
    };
    let mut sum = 0;
    for n in nodes {
        let mut c = redis::Client::open(n)?.get_multiplexed_async_connection().await?;
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut c).await?;
        let role: String = redis::cmd("INFO").arg("replication").query_async(&mut c).await?;
        if role.contains("role:master") {
            sum += info
                .lines()
                .find_map(|l| l.strip_prefix("used_memory:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(sum)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [url, peers, tracks, per_peer, lookups, concurrency] = a.as_slice() else {
        eprintln!("usage: tracker REDIS_URL PEERS TRACKS TRACKS_PER_PEER LOOKUPS CONCURRENCY");
        std::process::exit(2);
    };
    let (peers, tracks, per_peer): (usize, usize, usize) = (peers.parse()?, tracks.parse()?, per_peer.parse()?);
    let (lookups, concurrency): (usize, usize) = (lookups.parse()?, concurrency.parse()?);
    let cfg = TrackerConfig {
        burst: u32::MAX,
        max_sources: usize::MAX,
        max_peers: usize::MAX,
        max_tracks: usize::MAX,
        names: vec!["bench:443".into()],
        ..TrackerConfig::default()
    };
    let check = AnnounceCheck::new(&cfg);
    let ids: Vec<TrackId> = (0..tracks).map(|t| TrackId::parse(&format!("track-{t:06}"))).collect::<Result<_, _>>()?;
    let zipf = Zipf::new(tracks, 1.0);
    let mut rng = Rng(7);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();

    eprintln!("signing {peers} announces...");
    let mut anns: Vec<(IpAddr, Verified)> = Vec::with_capacity(peers);
    for n in 0..peers {
        let key = chorus_peer::identity::Keypair::generate_ed25519();
        // 4 peers per /24, from 10.0.0.0/8 upwards.
        let ip = IpAddr::from((0x0a00_0000u32 + ((n / 4) as u32) * 256 + (n % 4) as u32 + 1).to_be_bytes());
        let mut named: Vec<TrackId> = Vec::new();
        while named.len() < per_peer.min(tracks) {
            let t = ids[zipf.sample(&mut rng)].clone();
            if !named.contains(&t) {
                named.push(t);
            }
        }
        let ann = Announce {
            peer_id: key.public().to_peer_id().to_base58(),
            addrs: vec![format!("/ip4/{ip}/tcp/4001"), format!("/ip4/{ip}/udp/4001/quic-v1")],
            tracks: named,
            held: Vec::new(),
            dropped: Vec::new(),
            timestamp: now,
            edge: "bench:443".into(),
        };
        let signed = SignedAnnounce::sign(&key, &ann)?;
        anns.push((ip, check.verify(&signed, ip, None, now)?));
    }
    let queries: Vec<TrackId> = (0..lookups).map(|_| ids[zipf.sample(&mut rng)].clone()).collect();

    // The in-memory tracker, one thread, as the edge holds it under its lock.
    let mut memory = Tracker::new(cfg.clone());
    let mut lat = Vec::with_capacity(peers);
    let start = Instant::now();
    for (ip, v) in &anns {
        let t = Instant::now();
        memory.record(tokio::time::Instant::now(), *ip, v.clone())?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    let memory_announce = report(peers, start.elapsed(), lat);
    let mut lat = Vec::with_capacity(lookups);
    let mut os = rand_core::OsRng;
    let start = Instant::now();
    let mut listed = 0usize;
    for q in &queries {
        let t = Instant::now();
        listed += memory.peers(tokio::time::Instant::now(), q, &mut os).len();
        lat.push(t.elapsed().as_micros() as u64);
    }
    let memory_peers = report(lookups, start.elapsed(), lat);
    let memory_listed = listed as f64 / lookups.max(1) as f64;

    // The shared tracker: the same inputs, CONCURRENCY calls in flight on one connection.
    let before = used_memory(url).await?;
    let shared =
        SharedTracker::new(&SharedConfig { timeout: Duration::from_secs(10), ..SharedConfig::new(url.clone()) }, &cfg)?;
    let lat = Arc::new(Mutex::new(Vec::with_capacity(peers)));
    let start = Instant::now();
    let results: Vec<bool> = futures_util::stream::iter(anns.iter())
        .map(|(ip, v)| {
            let (shared, lat) = (shared.clone(), lat.clone());
            async move {
                let t = Instant::now();
                let r = shared.record(*ip, v).await;
                lat.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(t.elapsed().as_micros() as u64);
                r.is_ok_and(|x| matches!(x, Recorded::Yes(_)))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let recorded = results.iter().filter(|r| **r).count();
    let shared_announce =
        report(peers, elapsed, std::mem::take(&mut *lat.lock().unwrap_or_else(std::sync::PoisonError::into_inner)));
    let after = used_memory(url).await?;
    let start = Instant::now();
    let counts: Vec<usize> = futures_util::stream::iter(queries.iter())
        .map(|q| {
            let (shared, lat) = (shared.clone(), lat.clone());
            async move {
                let t = Instant::now();
                let n = shared.peers(q).await.map(|l| l.len().min(cfg_returned())).unwrap_or(0);
                lat.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(t.elapsed().as_micros() as u64);
                n
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let shared_peers = report(
        lookups,
        start.elapsed(),
        std::mem::take(&mut *lat.lock().unwrap_or_else(std::sync::PoisonError::into_inner)),
    );
    let shared_listed = counts.iter().sum::<usize>() as f64 / lookups.max(1) as f64;

    let out = serde_json::json!({
        "peers": peers, "tracks": tracks, "tracks_per_peer": per_peer, "lookups": lookups, "concurrency": concurrency,
        "memory": {"announce": memory_announce, "peers": memory_peers, "listed_per_answer": memory_listed},
        "redis": {
            "announce": shared_announce, "peers": shared_peers, "listed_per_answer": shared_listed,
            "recorded": recorded,
            "used_memory_bytes": after.saturating_sub(before),
            "bytes_per_peer": (after.saturating_sub(before) as f64 / peers.max(1) as f64).round(),
        },
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

/// Peers an answer lists at most (`TrackerConfig::returned`).
fn cfg_returned() -> usize {
    TrackerConfig::default().returned
}
