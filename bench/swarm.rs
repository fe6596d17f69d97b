//! A swarm of listeners in one process: N chorus clients with `--p2p`, each with its own cache
//! directory and peer node, playing tracks picked from a Zipf(1.0) catalogue (so popular
//! tracks repeat, within a client and across clients), joining at staggered times and leaving
//! when done. Run by `bench/swarm.sh`, which starts the origin and the edge.
//!
//! ```text
//! swarm EDGE_URL[,EDGE_URL…] ORIGIN_PUB WORK_DIR TRACKS CLIENTS PLAYS_PER_CLIENT JOIN_SPREAD_SECS SEED [play]
//! ```
//! With several edges, client c reaches edge c mod N (as a load balancer spreads them).
//! With `play`, every client plays at real-time speed (`--play`), so listeners overlap as
//! they would and stalls mean something; without, each track is fetched as fast as it comes.
//! Prints one JSON object: plays, bytes by source and their shares, startup p50/p95, stalls,
//! and where the edge's bytes went (`edge_share_by_phase`: clients' first tracks, later
//! tracks, preloads, and, across those, the play that opened each track in the swarm).
//!
//! The network is emulated in user space (`bench/netem.rs`): each client has an access link of
//! one-way latency drawn from RTT_MIN..RTT_MAX / 2 (environment, ms; default 20..80 ms round
//! trip). Its edge traffic goes through a relay with that latency both ways; its peer node
//! listens behind a relay with the same latency and announces the relay's address (so other
//! peers reach it only through its access link), whose outgoing direction is capped at UPLINK
//! bytes/s (0: no cap). A connection between two peers thus has the listener's access latency.
//! Each client is a host of its own on the loopback network (client c is 127.1.c/250.c%250+1):
//! the edge sees its requests and announces come from that address, and its peer node is
//! reached there, so the edge's per-address limits (announces, peer queries, tracker budget)
//! apply per listener as on the internet, not to the whole swarm as one address.
//! In play mode, when 30 s of a track remain the client preloads the next track's first 15 s
//! (`Client::preload`: from peers, from the edge only in time); PRELOAD=0 turns that off.
//!
//! Bytes are counted where they crossed the network: a preload's bytes by their source, and
//! the same bytes read back from the local cache when the track plays are not counted again as
//! cache bytes.

use std::sync::Arc;
use std::time::Duration;

use chorus_client::{ClientBuilder, Summary};
use chorus_core::{TrackId, keys};

#[path = "netem.rs"]
mod netem;
use chorus_draw::{Rng, Zipf};

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// A free TCP port on 127.0.0.1 (bound, then released for the peer node to take).
fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One play: its summary, and what its preload (if any) fetched.
struct Play {
    summary: Summary,
    preload: Option<Summary>,
    rtt_ms: u64,
    /// The client's first track (its session's start: nothing preloaded, no peers yet).
    first: bool,
    track: TrackId,
    began: tokio::time::Instant,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let play = a.get(8).is_some_and(|m| m == "play");
    let uplink = Some(env_u64("UPLINK", 0)).filter(|u| *u > 0);
    let (rtt_min, rtt_max) = (env_u64("RTT_MIN", 20), env_u64("RTT_MAX", 80).max(env_u64("RTT_MIN", 20)));
    let preload = play && env_u64("PRELOAD", 1) == 1;
    let track_secs = env_u64("SEGMENTS", 30) * 6;
    let [edge, key, work, tracks, clients, plays, spread, seed, ..] = a.as_slice() else {
        eprintln!(
            "usage: swarm EDGE_URL ORIGIN_PUB WORK_DIR TRACKS CLIENTS PLAYS_PER_CLIENT JOIN_SPREAD_SECS SEED [play]"
        );
        std::process::exit(2);
    };
    // One or more edges (comma-separated): client c reaches edge c mod N, as a balancer would
    // spread them.
    let edge_addrs: Vec<std::net::SocketAddr> =
        edge.split(',').map(|e| e.trim_start_matches("http://").parse()).collect::<Result<_, _>>()?;
    let (tracks, clients, plays): (usize, usize, usize) = (tracks.parse()?, clients.parse()?, plays.parse()?);
    let spread: f64 = spread.parse()?;
    let key = keys::read_verifying_key(std::path::Path::new(key))?;
    let popularity = Arc::new(Zipf::new(tracks, 1.0));
    let mut rng = Rng(seed.parse()?);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..clients {
        let join_at = Duration::from_secs_f64(rng.unit() * spread);
        let client_seed = rng.next();
        let rtt_ms = rtt_min + (rng.unit() * (rtt_max - rtt_min) as f64) as u64;
        let one_way = Duration::from_micros(rtt_ms * 500);
        let (key, popularity) = (key, popularity.clone());
        let dir = std::path::Path::new(work).join(format!("client{c}"));
        // The client's access link: to the edge, and in front of its peer node.
        let host = std::net::IpAddr::from(host_of(c)?);
        let local = std::net::IpAddr::from([127, 0, 0, 1]);
        let down = netem::Link { delay: one_way, rate: None };
        let edge_via = netem::relay(local, host, edge_addrs[c % edge_addrs.len()], down, down).await?;
        let port = free_port()?;
        let up = netem::Link { delay: one_way, rate: uplink };
        let peer_via = netem::relay(host, local, ([127, 0, 0, 1], port).into(), down, up).await?;
        tasks.spawn(async move {
            tokio::time::sleep(join_at).await;
            let client = ClientBuilder::new(vec![format!("http://{edge_via}")], key)
                .p2p(true)
                .p2p_mdns(false)
                .p2p_listen(vec![format!("/ip4/127.0.0.1/tcp/{port}").parse()?])
                .p2p_external(vec![format!("/ip4/{host}/tcp/{}", peer_via.port()).parse()?])
                .cache(dir, 1 << 30)
                .quality(chorus_client::abr::Quality::Fixed(0))
                .play(play)
                .build()?;
            let mut rng = Rng(client_seed);
            let list: Vec<TrackId> = (0..plays)
                .map(|_| TrackId::parse(&format!("t{:03}", popularity.sample(&mut rng))))
                .collect::<Result<_, _>>()?;
            let mut out: Vec<Play> = Vec::new();
            let mut preloaded: Option<tokio::task::JoinHandle<Option<Summary>>> = None;
            for (k, track) in list.iter().enumerate() {
                // The preload of this track (started during the previous one) has ended by now
                // or is cut short: what it fetched is in the cache either way.
                let pre = match preloaded.take() {
                    Some(h) => {
                        tokio::time::timeout(Duration::from_secs(30), h).await.ok().and_then(|j| j.ok().flatten())
                    }
                    None => None,
                };
                let began = tokio::time::Instant::now();
                let next = list.get(k + 1).filter(|_| preload).cloned();
                let ahead = next.map(|next| {
                    let client = client.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_secs(track_secs.saturating_sub(30))).await;
                        let p = client.preload(&next, Duration::from_secs(30), Duration::from_secs(15)).await.ok()?;
                        p.finish().await.ok()
                    })
                });
                let summary = client.fetch(track, |_| {}).await?;
                if play {
                    // The fetch ends when the last segment is in, up to a buffer before the
                    // audio does: the listener hears the track to its end first.
                    let heard = summary.startup_ms + track_secs * 1000 + summary.stall_ms;
                    tokio::time::sleep_until(began + Duration::from_millis(heard)).await;
                }
                out.push(Play { summary, preload: pre, rtt_ms, first: k == 0, track: track.clone(), began });
                preloaded = ahead;
            }
            // Leave: the client (and its peer node) goes away with this task.
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(out)
        });
    }
    let mut all: Vec<Play> = Vec::new();
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
    let (mut edge_b, mut peer_b, mut cache_b, mut total) = (0u64, 0u64, 0u64, 0u64);
    // Where the edge's bytes went: sessions' first tracks, later tracks' own fetches, preloads.
    let (mut edge_first, mut edge_later, mut edge_preload) = (0u64, 0u64, 0u64);
    // ... and the edge bytes of each track's first play in the swarm (no peer could have it).
    let mut opener: std::collections::HashMap<&TrackId, (tokio::time::Instant, u64)> = std::collections::HashMap::new();
    for p in &all {
        let e = p.summary.bytes_by_source.edge;
        opener
            .entry(&p.track)
            .and_modify(|o| {
                if p.began < o.0 {
                    *o = (p.began, e)
                }
            })
            .or_insert((p.began, e));
    }
    let edge_openers: u64 = opener.values().map(|o| o.1).sum();
    for p in &all {
        let s = &p.summary.bytes_by_source;
        total += p.summary.bytes_total;
        edge_b += s.edge;
        if p.first {
            edge_first += s.edge;
        } else {
            edge_later += s.edge;
        }
        edge_preload += p.preload.as_ref().map_or(0, |pre| pre.bytes_by_source.edge);
        peer_b += s.peer;
        cache_b += s.cache;
        if let Some(pre) = &p.preload {
            // Fetched over the network by the preload, then read back from the cache.
            let fetched = pre.bytes_by_source.edge + pre.bytes_by_source.peer;
            edge_b += pre.bytes_by_source.edge;
            peer_b += pre.bytes_by_source.peer;
            cache_b = cache_b.saturating_sub(fetched);
        }
    }
    let t = total.max(1) as f64;
    let mut startup: Vec<u64> = all.iter().map(|p| p.summary.startup_ms).collect();
    startup.sort_unstable();
    let mut rtts: Vec<u64> = all.iter().map(|p| p.rtt_ms).collect();
    rtts.sort_unstable();
    // Startup against each play's own round trip: the target is 2 RTT + 10 ms.
    let mut over: Vec<i64> = all.iter().map(|p| p.summary.startup_ms as i64 - (2 * p.rtt_ms + 10) as i64).collect();
    over.sort_unstable();
    let stalls: u64 = all.iter().map(|p| u64::from(p.summary.stalls)).sum();
    let rejected: u64 = all.iter().map(|p| p.summary.chunks_rejected).sum();
    let preloads = all.iter().filter(|p| p.preload.is_some()).count();
    // Plays that met no peer holding any of the track (the simulator's plays_without_peers),
    // and failed or BUSY requests (its peer_failures, and edge failures).
    let lonely = all.iter().filter(|p| p.summary.peers == 0).count();
    let failures: u64 = all.iter().map(|p| u64::from(p.summary.failures)).sum();
    println!(
        "{}",
        serde_json::json!({
            "plays": all.len(), "client_errors": errors, "mode": if play { "play" } else { "fast" },
            "uplink_bytes_per_s": uplink, "rtt_ms": {"min": rtt_min, "max": rtt_max, "p50": percentile(&rtts, 0.5)},
            "preloads": preloads,
            "bytes": {"played": total, "edge": edge_b, "peer": peer_b, "cache": cache_b},
            "share": {"edge": edge_b as f64 / t, "peer": peer_b as f64 / t, "cache": cache_b as f64 / t},
            "edge_share_by_phase": {
                "first_tracks": edge_first as f64 / t, "later_tracks": edge_later as f64 / t,
                "preloads": edge_preload as f64 / t, "tracks_first_plays": edge_openers as f64 / t,
            },
            "startup_ms": {"p50": percentile(&startup, 0.5), "p95": percentile(&startup, 0.95)},
            "startup_minus_2rtt_plus_10ms": {"p50": over.get(over.len() / 2).copied().unwrap_or(0)},
            "stalls_per_100_plays": stalls as f64 * 100.0 / all.len().max(1) as f64,
            "chunks_rejected": rejected,
            "plays_without_peers": lonely, "request_failures": failures,
        })
    );
    Ok(())
}

/// Client `c`'s host on the loopback network: 127.1.(c / 250).(c % 250 + 1), 250 to a /24 (the
/// tracker's per-network cap is lifted by bench/swarm.sh), up to 64 000 clients.
fn host_of(c: usize) -> Result<std::net::Ipv4Addr, Box<dyn std::error::Error>> {
    let (net, host) = (u8::try_from(c / 250).map_err(|_| "at most 64 000 clients")?, (c % 250) as u8 + 1);
    Ok(std::net::Ipv4Addr::new(127, 1, net, host))
}
