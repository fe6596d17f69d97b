//! Listeners behind real (user-space) NATs: homes behind port-restricted, full-cone and symmetric
//! NATs (`chorus_testkit::nat`), every host a network namespace (`chorus_testkit::netns`), one
//! edge that also runs a circuit relay (`--p2p-relay`). Real `chorus` processes over real TCP
//! and QUIC.
//!
//! A seeder behind a port-restricted NAT cannot be dialled; it reserves a circuit on the edge's
//! relay and announces it. A listener behind another port-restricted NAT reaches it through the
//! relay, and DCUtR punches a direct connection through both NATs; so does a listener behind a
//! full-cone NAT, with both ends on QUIC only (a punch over QUIC). Behind symmetric NATs the
//! punch fails; the edge carries the play instead. Every play completes
//! byte-identical to the origin's rendition with no stall, and the share of peer bytes that
//! went direct and relayed is printed.
//!
//! Runs as root (CI does); elsewhere it says why it is skipped.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use chorus_testkit as support;

use std::path::Path;
use std::time::Duration;

use support::nat::NatConfig;
use support::netns::{self, Host, Lab, Way, node};
use support::{Node, ingest_sample, rendition_bytes, s, wait_log_within};

/// One play of tides in `host` through `edge`, paced as a player that keeps 8 s ahead of its
/// playhead (the 24 s track plays for about 20 s), as a listener does: the start comes from
/// the edge while the hole is punched.
fn play(host: &Host, edge: &str, key: &Path, dir: &Path, listen: Option<&str>) -> serde_json::Value {
    let level = std::env::var("CHORUS_TEST_LOG").unwrap_or_else(|_| "info".into());
    let mut extra = vec!["--play", "--buffer-ahead", "8s", "--log-level", &level];
    if let Some(l) = listen {
        extra.extend(["--p2p-listen", l]);
    }
    netns::play(host, "tides", edge, key, dir, &extra).unwrap_or_else(|e| panic!("the play in {}: {e}", host.ns))
}

/// What one play took from where, for the report.
fn sources(j: &serde_json::Value) -> (u64, u64, u64) {
    let b = |k: &str| j["bytes_by_source"][k].as_u64().unwrap();
    (b("peer"), b("edge"), j["bytes_total"].as_u64().unwrap())
}

/// Where a seeder listens by default: TCP and QUIC.
const BOTH: &str = "/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1";

/// A seeder of tides in `host` (a listener who played it and keeps the app open), listening
/// on `listen` and announcing to `edge`; returns once it has reserved a relay circuit and
/// announced it.
fn seeder(host: &Host, edge: &str, key: &Path, dir: &Path, listen: &str) -> Node {
    let seeder = node(
        host,
        &["peer", "--edge", edge, "--seed", "tides", "--origin-key", s(key), "--cache-dir", s(dir), "--no-mdns"]
            .into_iter()
            .chain(["--p2p-listen", listen])
            .collect::<Vec<_>>(),
        0,
    );
    // Unreachable, it reserves a circuit on the edge's relay (within a minute or two:
    // AutoNAT, or a minute without a confirmed public address) and announces it.
    wait_log_within(&seeder, "p2p-circuit", Duration::from_secs(240));
    wait_log_within(&seeder, "\"announced\"", Duration::from_secs(120));
    seeder
}

#[test]
fn listeners_behind_nats_punch_through_or_fall_back() {
    if let Some(why) = Lab::unavailable() {
        assert!(std::env::var_os("CI").is_none(), "CI must run the NAT test: {why}");
        eprintln!("note: skipping the NAT test: {why} (run as root)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ingest_sample(&store, "tides", "chorus-tides");
    let key = store.join("origin.pub");

    let mut lab = Lab::new("nat").unwrap();
    let home = Way::delay_ms(10);
    let timeout = Duration::from_secs(120);
    let origin_host = lab.host("origin", 1, Way::delay_ms(2), Way::delay_ms(2)).unwrap();
    let edge_host = lab.host("edge", 3, Way::delay_ms(2), Way::delay_ms(2)).unwrap();
    let mut behind = |name: &str, net: u8, nat: NatConfig| lab.host_behind_nat(name, net, home, home, nat).unwrap();
    let cone = [
        behind("cone1", 11, NatConfig::port_restricted(timeout)),
        behind("cone2", 12, NatConfig::port_restricted(timeout)),
    ];
    let (quic_seeder, full_cone) =
        (behind("cone3", 15, NatConfig::port_restricted(timeout)), behind("full", 16, NatConfig::full_cone(timeout)));
    let symmetric =
        [behind("sym1", 13, NatConfig::symmetric(timeout)), behind("sym2", 14, NatConfig::symmetric(timeout))];
    let origin_url = format!("http://{}:8080", origin_host.ip);
    let _origin = node(&origin_host, &["origin", "--store", s(&store), "--listen", &origin_url], 1);
    let edge_url = format!("http://{}:80", edge_host.ip);
    let relay = "/ip4/0.0.0.0/tcp/4001,/ip4/0.0.0.0/udp/4001/quic-v1";
    let cache = dir.path().join("edge");
    let _edge = node(
        &edge_host,
        &["edge", "--upstream", &origin_url, "--listen", &edge_url, "--cache-dir", s(&cache), "--p2p-relay", relay],
        1,
    );
    let expected = rendition_bytes(&store, "tides", 1);
    let check = |j: &serde_json::Value| {
        assert_eq!(std::fs::read(j["out"].as_str().unwrap()).unwrap(), expected, "{j}");
        assert_eq!(j["chunks_rejected"], 0, "{j}");
        assert_eq!(j["stalls"], 0, "{j}");
    };

    // Two homes behind port-restricted NATs: the listener reaches the seeder through the
    // edge's relay, DCUtR punches a direct connection through both NATs, and the seeder's
    // chunks come over it.
    let first = seeder(&cone[0], &edge_url, &key, &dir.path().join("seeder-cone"), BOTH);
    let coned = play(&cone[1], &edge_url, &key, &dir.path().join("listener-cone"), None);
    check(&coned);
    let (peer, _, total) = sources(&coned);
    if peer == 0 {
        eprintln!("--- seeder log:\n{}", first.log.lock().unwrap().join("\n"));
    }
    assert!(peer > 0, "no bytes through the punched connection: {coned}");
    drop(first);

    // A home behind a full-cone NAT and one behind a port-restricted NAT, both on QUIC only:
    // the hole is punched over QUIC.
    let quic = "/ip4/0.0.0.0/udp/4001/quic-v1";
    let third = seeder(&quic_seeder, &edge_url, &key, &dir.path().join("seeder-quic"), quic);
    let full = play(&full_cone, &edge_url, &key, &dir.path().join("listener-full"), Some(quic));
    check(&full);
    let (quic_peer, _, quic_total) = sources(&full);
    if quic_peer == 0 {
        eprintln!("--- seeder log:\n{}", third.log.lock().unwrap().join("\n"));
    }
    assert!(quic_peer > 0, "no bytes through the connection punched over QUIC: {full}");
    drop(third);

    // Two homes behind symmetric NATs: the punch cannot succeed (each destination gets its own
    // port), no chunk crosses the relay, and the edge carries the play.
    let _second = seeder(&symmetric[0], &edge_url, &key, &dir.path().join("seeder-sym"), BOTH);
    let sym = play(&symmetric[1], &edge_url, &key, &dir.path().join("listener-sym"), None);
    check(&sym);
    let (sym_peer, sym_edge, sym_total) = sources(&sym);
    assert_eq!(sym_peer, 0, "{sym}");
    assert_eq!(sym_edge, sym_total, "{sym}");
    let (refused, carried) = (
        lab.counters.refused_by_nat.load(std::sync::atomic::Ordering::Relaxed),
        lab.counters.carried.load(std::sync::atomic::Ordering::Relaxed),
    );
    eprintln!(
        "port-restricted NATs: {peer} of {total} bytes from the peer over the punched connection ({:.1}%), 0 relayed; \
         full-cone and port-restricted over QUIC: {quic_peer} of {quic_total} ({:.1}%); \
         symmetric NATs: 0 from peers, {sym_edge} of {sym_total} from the edge; the NATs refused {refused} packets, the links carried {carried}",
        100.0 * peer as f64 / total as f64,
        100.0 * quic_peer as f64 / quic_total as f64
    );
    assert!(refused > 0, "the NATs refused nothing: were they in the path?");
}
