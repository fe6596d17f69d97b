//! End to end: `chorus demo --once --json` runs the whole network (origin, two edges, seeding
//! peers, a listener with P2P on) in one process and reports where the played bytes came from.

use chorus_testkit as support;

use std::process::Command;

#[test]
fn the_demo_plays_its_playlist_with_bytes_from_peers_and_cleans_up() {
    // The demo's temporary directory goes under this one, which must be empty afterwards.
    let tmp = tempfile::tempdir().unwrap();
    let out =
        Command::new(support::bin()).args(["demo", "--once", "--json"]).env("TMPDIR", tmp.path()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    // Three sample tracks, then the first again.
    assert_eq!(j["plays"], 4, "{j}");
    let by = &j["bytes_by_source"];
    let (edge, peer, cache) =
        (by["edge"].as_u64().unwrap(), by["peer"].as_u64().unwrap(), by["cache"].as_u64().unwrap());
    assert_eq!(edge + peer + cache, j["bytes_total"].as_u64().unwrap(), "{j}");
    // The start of the first track comes from the edge, the rest of the playlist mostly from
    // the seeding peers, and the replay from the listener's cache.
    assert!(edge > 0 && peer > 0 && cache > 0, "{j}\n{stderr}");
    assert!(peer > edge, "peers should carry more than the edge: {j}\n{stderr}");
    assert_eq!(j["chunks_rejected"], 0);
    assert!(j["startup_ms_p50"].as_u64().is_some());
    // Edge a is given by its https:// URL: the listener moves to HTTP/3 through Alt-Svc. The
    // first play starts low (a new client, no throughput estimate) and moves to the default
    // quality; the plays after it start from the estimate, at the top of the two-rung ladder
    // (one of them at least: on a loaded machine a throughput measured low may start one at the
    // bottom, as it should).
    let (renditions, protocols) = (j["renditions"].as_array().unwrap(), j["protocols"].as_array().unwrap());
    assert_eq!((renditions.len(), protocols.len()), (4, 4), "{j}");
    assert!(renditions[1..].iter().any(|r| r == "aac-96"), "{j}\n{stderr}");
    assert!(protocols[1..].iter().all(|p| p == "h3"), "{j}\n{stderr}");
    assert!(stderr.contains("over h3"), "{stderr}");
    // The live view's stand-in without a terminal: a line per play, and every URL to open.
    assert_eq!(stderr.matches("played chorus-").count(), 4, "{stderr}");
    // The first play starts with an empty cache: nothing of it may count as a cache hit (the
    // first segment, fetched alongside the init chunks, once did when the startup race's
    // second request found it stored there).
    let first = stderr.lines().find(|l| l.starts_with("played chorus-")).unwrap_or_default();
    assert!(first.contains("cache 0 B (0%)"), "{first}");
    assert!(stderr.contains("/hls/master.m3u8") && stderr.contains("/metrics"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "the demo left files behind: {left:?}");
}
