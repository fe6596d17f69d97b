//! End to end: `chorus peer` seeds a track from a real edge, announces it to the edge's
//! tracker, and a libp2p node that knows nothing else fetches every chunk from it, verified.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chorus_core::TrackId;
use chorus_core::http::client::HttpClient;
use chorus_core::http::tls::ClientTls;
use chorus_core::manifest::Manifest;
use chorus_peer::{Peer, PeerConfig, Store};
use support::{Node, chorus, samples};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A store with nothing in it (the fetching side).
struct Empty;
impl Store for Empty {
    fn chunk(&self, _: &chorus_core::ChunkId) -> Option<bytes::Bytes> {
        None
    }
    fn held(&self, _: &TrackId) -> Vec<chorus_core::ChunkId> {
        Vec::new()
    }
    fn tracks(&self) -> Vec<TrackId> {
        Vec::new()
    }
}

fn wait_log(node: &Node, what: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(l) = node.log.lock().unwrap().iter().find(|l| l.contains(what)) {
            return l.clone();
        }
        assert!(Instant::now() < deadline, "no {what:?} in:\n{}", node.log.lock().unwrap().join("\n"));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeding_peer_serves_every_chunk_of_its_tracks_found_through_the_tracker() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    assert!(
        chorus(&["ingest", "--store", s(&store), "--track", "tides", s(&samples().join("chorus-tides"))])
            .status
            .success()
    );
    let origin = Node::start(&["origin", "--store", s(&store), "--listen", "http://127.0.0.1:0"], 1);
    let edge = Node::start(
        &[
            "edge",
            "--upstream",
            &origin.url("http"),
            "--listen",
            "http://127.0.0.1:0",
            "--cache-dir",
            s(&dir.path().join("edge")),
        ],
        1,
    );
    let seed_dir = dir.path().join("seed");
    let seeder = Node::start(
        &[
            "peer",
            "--edge",
            &edge.url("http"),
            "--seed",
            "tides",
            "--origin-key",
            s(&store.join("origin.pub")),
            "--cache-dir",
            s(&seed_dir),
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ],
        0,
    );
    let listening = wait_log(&seeder, "peer listening");
    assert!(listening.contains("/p2p/12D3KooW"), "full multiaddr logged: {listening}");
    wait_log(&seeder, "announced");

    // The tracker lists the seeder for the track, with an address to dial.
    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let track = TrackId::parse("tides").unwrap();
    let found = chorus_peer::tracker::peers(&http, &edge.url("http"), &track, None).await.unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    let (peer_id, addrs) = found[0].clone();
    assert!(addrs.iter().any(|a| a.to_string().starts_with("/ip4/127.0.0.1/tcp/")), "{addrs:?}");

    // A node that knows only that fetches every chunk of every rendition, verified.
    let registry = prometheus::Registry::new();
    let leech = Peer::start(
        PeerConfig { listen: vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()], mdns: false, ..PeerConfig::default() },
        Arc::new(Empty),
        None,
        &registry,
    )
    .unwrap();
    leech.dial(addrs[0].clone()).await.unwrap();
    let doc = std::fs::read(store.join("manifests").join("tides.json")).unwrap();
    let m: Manifest = serde_json::from_slice(&doc).unwrap();
    let all: Vec<_> = m.chunks().map(|c| c.id).collect();
    let mut held = leech.have(peer_id, track).await.unwrap();
    held.sort();
    let mut want = all.clone();
    want.sort();
    assert_eq!(held, want, "the seeder holds every chunk of every rendition");
    for id in &all {
        let bytes = leech.fetch(peer_id, *id, None).await.unwrap();
        assert!(id.matches(&bytes));
    }
    // The identity is kept: the peer id is the same after a restart.
    let first_id = peer_id.to_string();
    drop(seeder);
    let again = Node::start(
        &[
            "peer",
            "--edge",
            &edge.url("http"),
            "--cache-dir",
            s(&seed_dir),
            "--p2p-listen",
            "/ip4/127.0.0.1/tcp/0",
            "--no-mdns",
        ],
        0,
    );
    assert!(wait_log(&again, "peer listening").contains(&first_id));
}
