//! A swarm of listeners in one process: N chorus clients with `--p2p`, each with its own cache
//! directory and peer node, playing tracks picked from a Zipf(1.0) catalogue (so popular
//! tracks repeat, within a client and across clients), joining at staggered times and leaving
//! when done. Run by `bench/swarm.sh`, which starts the origin and the edge.
//!
//! ```text
//! swarm EDGE_URL ORIGIN_PUB WORK_DIR TRACKS CLIENTS PLAYS_PER_CLIENT JOIN_SPREAD_SECS SEED [play]
//! ```
//! With `play`, every client plays at real-time speed (`--play`), so listeners overlap as
//! they would and stalls mean something; without, each track is fetched as fast as it comes.
//! Prints one JSON object: plays, bytes by source and their shares, startup p50/p95, stalls.

use std::sync::Arc;
use std::time::Duration;

use chorus_client::{ClientBuilder, Summary};
use chorus_core::{TrackId, keys};

#[path = "zipf.rs"]
mod zipf;
use zipf::{Rng, Zipf};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let play = a.get(8).is_some_and(|m| m == "play");
    // Uplink per client in bytes/s (0 = no cap), from the environment.
    let uplink = std::env::var("UPLINK").ok().and_then(|u| u.parse::<u64>().ok()).filter(|u| *u > 0);
    let [edge, key, work, tracks, clients, plays, spread, seed, ..] = a.as_slice() else {
        eprintln!("usage: swarm EDGE_URL ORIGIN_PUB WORK_DIR TRACKS CLIENTS PLAYS_PER_CLIENT JOIN_SPREAD_SECS SEED");
        std::process::exit(2);
    };
    let (tracks, clients, plays): (usize, usize, usize) = (tracks.parse()?, clients.parse()?, plays.parse()?);
    let spread: f64 = spread.parse()?;
    let key = keys::read_verifying_key(std::path::Path::new(key))?;
    let popularity = Arc::new(Zipf::new(tracks));
    let mut rng = Rng(seed.parse()?);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let join_at = Duration::from_secs_f64(rng.unit() * spread);
        let client_seed = rng.next();
        let (edge, key, popularity) = (edge.clone(), key, popularity.clone());
        let dir = std::path::Path::new(work).join(format!("client{c}"));
        tasks.spawn(async move {
            tokio::time::sleep(join_at).await;
            let client = ClientBuilder::new(vec![edge], key)
                .p2p(true)
                .p2p_mdns(false)
                .p2p_upload_rate(uplink)
                .cache(dir, 1 << 30)
                .quality(chorus_client::abr::Quality::Fixed(0))
                .play(play)
                .build()?;
            let mut rng = Rng(client_seed);
            let mut out: Vec<Summary> = Vec::new();
            for _ in 0..plays {
                let track = TrackId::parse(&format!("t{:03}", popularity.sample(&mut rng)))?;
                let s = client.fetch(&track, |_| {}).await?;
                out.push(s);
            }
            // Leave: the client (and its peer node) goes away with this task.
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
        });
    }
    let mut all: Vec<Summary> = Vec::new();
    let mut errors = 0;
    while let Some(j) = tasks.join_next().await {
        match j {
            Ok(Ok(v)) => all.extend(v),
            Ok(Err(e)) => {
                eprintln!("client failed: {e}");
                errors += 1;
            }
            Err(e) => {
                eprintln!("client panicked: {e}");
                errors += 1;
            }
        }
    }
    let (edge_b, peer_b, cache_b) = all.iter().fold((0u64, 0u64, 0u64), |(e, p, c), s| {
        (e + s.bytes_by_source.edge, p + s.bytes_by_source.peer, c + s.bytes_by_source.cache)
    });
    let total = (edge_b + peer_b + cache_b).max(1) as f64;
    let mut startup: Vec<u64> = all.iter().map(|s| s.startup_ms).collect();
    startup.sort_unstable();
    let stalls: u64 = all.iter().map(|s| u64::from(s.stalls)).sum();
    let rejected: u64 = all.iter().map(|s| s.chunks_rejected).sum();
    println!(
        "{}",
        serde_json::json!({
            "plays": all.len(), "client_errors": errors, "mode": if play { "play" } else { "fast" }, "uplink_bytes_per_s": uplink,
            "bytes": {"edge": edge_b, "peer": peer_b, "cache": cache_b},
            "share": {"edge": edge_b as f64 / total, "peer": peer_b as f64 / total, "cache": cache_b as f64 / total},
            "startup_ms": {"p50": percentile(&startup, 0.5), "p95": percentile(&startup, 0.95)},
            "stalls_per_100_plays": stalls as f64 * 100.0 / all.len().max(1) as f64,
            "chunks_rejected": rejected,
        })
    );
    Ok(())
}
