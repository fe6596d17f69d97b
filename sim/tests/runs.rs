//! Small deployments, run to their end: what the model must get right whatever its figures.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chorus_sim::{Session, SimConfig, run};

/// 300 listeners over 4 minutes on a catalogue of 200 tracks: small enough for a debug build.
fn small() -> SimConfig {
    SimConfig {
        listeners: 300,
        arrive_over: Duration::from_secs(120),
        duration: Duration::from_secs(240),
        session: Session::Mean(Duration::from_secs(600)),
        tracks: 200,
        segments: (8, 12),
        ..SimConfig::default()
    }
}

#[test]
fn the_same_seed_gives_the_same_run_on_any_threads_and_every_byte_is_counted_once() {
    let a = run(&small(), 1, &mut |_| {});
    // On three threads (six partitions of listeners beside the hub): the same run.
    let b = run(&small(), 3, &mut |_| {});
    assert_eq!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
    assert!(a.plays > 300 && a.plays_completed > 0, "{a:?}");
    // The timeline adds up to the totals (the last interval may be cut by the end).
    let timeline: u64 = a.timeline.iter().map(|p| p.bytes.total()).sum();
    assert!(timeline <= a.bytes.total());
    assert!(a.bytes.peer > 0 && a.bytes.edge > 0);
    let c = run(&SimConfig { seed: 2, ..small() }, 1, &mut |_| {});
    assert_ne!(a.bytes.total(), c.bytes.total(), "another seed, another run");
}

#[test]
fn without_peers_or_with_consumers_only_the_edges_carry_everything_but_the_cache() {
    for cfg in [SimConfig { p2p: false, ..small() }, SimConfig { mobile: 1.0, ..small() }] {
        let r = run(&cfg, 1, &mut |_| {});
        assert_eq!(r.bytes.peer, 0, "{cfg:?}");
        assert_eq!(r.announces, 0);
        assert!(r.bytes.edge > 0);
    }
}

#[test]
fn listeners_behind_nats_meet_through_the_relay_or_not_at_all() {
    // Behind home routers every pair punches through: peers still carry bytes, every new
    // connection punched.
    let cone = run(&SimConfig { behind_cone: 1.0, ..small() }, 1, &mut |_| {});
    assert!(cone.bytes.peer > 0 && cone.dials_punched > 0 && cone.peers_unreachable == 0, "{cone:?}");
    assert!((cone.dials_per_play * cone.plays as f64 - cone.dials_punched as f64).abs() < 0.5);
    // Behind symmetric NATs no two listeners ever connect: only the edges and the caches carry.
    let sym = run(&SimConfig { behind_symmetric: 1.0, ..small() }, 1, &mut |_| {});
    assert_eq!(sym.bytes.peer, 0, "{sym:?}");
    assert!(sym.peers_unreachable > 0 && sym.dials_punched == 0);
    // Without NATs nothing is punched, and nothing unreachable.
    let open = run(&small(), 1, &mut |_| {});
    assert_eq!((open.dials_punched, open.peers_unreachable), (0, 0));
    assert!(open.edge_share < cone.edge_share + 0.05 && cone.edge_share < sym.edge_share);
}

#[test]
fn seeders_stay_serve_and_never_play() {
    // tests/netns.rs's swarm: two listeners who keep their app open with the one track, ten
    // who play it once, at once.
    let cfg = SimConfig {
        listeners: 12,
        seeders: 2,
        arrive_over: Duration::from_secs(3),
        duration: Duration::from_secs(120),
        session: Session::Plays(1),
        tracks: 1,
        segments: (4, 4),
        ..SimConfig::default()
    };
    let r = run(&cfg, 1, &mut |_| {});
    assert_eq!((r.plays, r.plays_completed, r.plays_without_peers), (10, 10, 0), "{r:?}");
    assert!(r.bytes.peer > 0, "{r:?}");
    // Both seeders are online at the end (the players have left), and each announced.
    assert_eq!(r.timeline.last().map(|p| p.online), Some(2), "{r:?}");
    assert!(r.announces >= 2);
    // Without them, the first players find no peer.
    let alone = run(&SimConfig { seeders: 0, listeners: 10, ..cfg }, 1, &mut |_| {});
    assert!(alone.plays_without_peers > 0, "{alone:?}");
}

#[test]
fn a_preloaded_next_track_starts_from_the_cache() {
    let on = run(&small(), 1, &mut |_| {});
    let off = run(&SimConfig { preload: false, ..small() }, 1, &mut |_| {});
    assert!(on.preloads > 0 && off.preloads == 0, "{} preloads", on.preloads);
    // Most plays after a listener's first start from what the preload fetched: at once,
    // instead of a round trip to the edge and the first segment's transfer.
    assert!(on.startup_ms.p50 < off.startup_ms.p50, "p50 {} ms vs {} ms", on.startup_ms.p50, off.startup_ms.p50);
    assert!(on.bytes.peer > 0 && on.stalls_per_100_plays <= off.stalls_per_100_plays + 1.0, "{on:?}");
    // Fetched as fast as possible, there is nothing to preload for.
    let fast = run(&SimConfig { play: false, ..small() }, 1, &mut |_| {});
    assert_eq!(fast.preloads, 0);
}

#[test]
fn edges_sharing_one_tracker_carry_less_than_edges_with_a_tracker_each() {
    let shared = run(&SimConfig { edges: 4, shared_tracker: true, ..small() }, 1, &mut |_| {});
    let split = run(&SimConfig { edges: 4, shared_tracker: false, ..small() }, 1, &mut |_| {});
    assert_eq!(shared.edges.len(), 4);
    assert!(
        shared.edge_share < split.edge_share,
        "shared {:.3} vs per edge {:.3}",
        shared.edge_share,
        split.edge_share
    );
    // Every edge served some of it.
    assert!(shared.edges.iter().all(|e| e.requests > 0 && e.egress_bytes > 0));
}

#[test]
fn the_chart_is_an_svg_with_one_line_per_series() {
    let svg = chorus_sim::plot(
        "t",
        "x",
        "y",
        &[("a".into(), vec![(0.0, 10.0), (1.0, 20.0)]), ("b".into(), vec![(0.0, 5.0), (1.0, 50.0)])],
        true,
    );
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
    assert_eq!(svg.matches("<polyline").count(), 2);
}
