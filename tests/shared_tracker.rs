//! End to end: two edges sharing one real `redis-server` as their tracker (`--tracker`). A
//! seeder announced on edge A is found, and played from, by a listener of edge B; Redis killed
//! mid-run leaves both edges serving chunks, each answering peer queries from its own
//! announces, and Redis started again is used again. Two edges on a real Redis Cluster find
//! each other's listeners, and ride out the failover of the primary that holds a track.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use chorus_testkit as support;

use std::time::Duration;

use chorus_core::announce::SignedAnnounce;
use chorus_peer::identity::Keypair;
use http::{Request, StatusCode};
use support::redis::{Redis, RedisCluster, have_redis};
use support::{Node, conn, ingest_sample, metric, s, start_origin, unix_now as now};

/// A signed announce of `key`'s peer at a loopback port, holding "tides", for the edge `name`.
fn announce(key: &Keypair, port: u16, name: &str, timestamp: u64) -> Request<bytes::Bytes> {
    let a = chorus_core::api::Announce {
        peer_id: key.public().to_peer_id().to_base58(),
        addrs: vec![format!("/ip4/127.0.0.1/tcp/{port}")],
        tracks: vec![chorus_core::TrackId::parse("tides").unwrap()],
        held: Vec::new(),
        dropped: Vec::new(),
        timestamp,
        edge: name.to_owned(),
    };
    let body = serde_json::to_vec(&SignedAnnounce::sign(key, &a).unwrap()).unwrap();
    Request::post("/v1/peers/announce").body(bytes::Bytes::from(body)).unwrap()
}

/// The peer ids `edge` lists for "tides".
async fn listed(edge: &Node) -> Vec<String> {
    let r = conn(&edge.url("http")).await.get("/v1/tracks/tides/peers").await.unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{}", String::from_utf8_lossy(r.body()));
    let v: serde_json::Value = serde_json::from_slice(r.body()).unwrap();
    v["peers"].as_array().unwrap().iter().map(|p| p["peer_id"].as_str().unwrap().to_owned()).collect()
}

async fn metrics(edge: &Node) -> String {
    let r = conn(&edge.url("http")).await.get("/metrics").await.unwrap();
    String::from_utf8_lossy(r.body()).into_owned()
}

fn id(key: &Keypair) -> String {
    key.public().to_peer_id().to_base58()
}

/// Two edges in front of `origin` sharing the tracker at `tracker` (caches in `dir`), and the
/// name announces are signed for (edge A's). Behind one balancer every edge answers to the
/// balancer's name; here clients reach each edge by its own address, so both edges take
/// announces signed for either.
fn two_edges(origin: &Node, dir: &std::path::Path, tracker: &str) -> (Node, Node, String) {
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (pa, pb) = (free(), free());
    let names = format!("{pa},{pb}");
    let edge = |addr: std::net::SocketAddr, cache: &str| {
        let (up, listen, cache) = (origin.url("http"), format!("http://{addr}"), dir.join(cache));
        let args = ["edge", "--upstream", &up, "--listen", &listen, "--cache-dir", s(&cache)];
        Node::start(&[&args[..], &["--tracker", tracker, "--tracker-name", &names]].concat(), 1)
    };
    (edge(pa, "edge-a"), edge(pb, "edge-b"), pa.to_string())
}

/// Waits until `cond` holds, trying every 300 ms, or fails after 60 s.
async fn eventually<F: AsyncFnMut() -> bool>(what: &str, cond: F) {
    support::eventually(what, Duration::from_secs(60), Duration::from_millis(300), cond).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeder_announced_on_one_edge_is_played_from_by_a_listener_of_another() {
    if !have_redis() {
        return;
    }
    let mut redis = Redis::start();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ingest_sample(&store, "tides", "chorus-tides");
    let origin = start_origin(&store);
    let (a, b, name) = two_edges(&origin, dir.path(), &redis.url());

    // An announce on A is listed by B; the same announce sent to B is a replay there.
    let (seen, late) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
    let ts = now();
    let r = conn(&a.url("http")).await.send(announce(&seen, 4001, &name, ts)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(listed(&b).await, vec![id(&seen)]);
    let r = conn(&b.url("http")).await.send(announce(&seen, 4001, &name, ts)).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "{}", String::from_utf8_lossy(r.body()));

    // A real seeder announcing to A (signed for the name, as every client of the balancer
    // does), and a listener of B that has never talked to A: it finds the seeder through B and
    // takes bytes from it, every chunk verified.
    let key = store.join("origin.pub");
    let seeder = support::start_seeder(&a, &key, &dir.path().join("seed"), &[], 0);
    let (b_url, key2, cache) = (b.url("http"), key.clone(), dir.path().join("listener"));
    let j = tokio::task::spawn_blocking(move || support::fetch_p2p(&b_url, &key2, &cache, &["--quality", "normal"]))
        .await
        .unwrap();
    assert!(j["bytes_by_source"]["peer"].as_u64().unwrap() > 0, "{j}");
    assert_eq!(j["chunks_rejected"], 0, "{j}");
    let tb = metrics(&b).await;
    assert_eq!(metric(&tb, "chorus_tracker_shared_up"), 1.0);
    assert!(metric(&tb, "chorus_tracker_answers_total{view=\"shared\"}") >= 2.0, "{tb}");
    assert_eq!(metric(&tb, "chorus_tracker_answers_total{view=\"local\"}"), 0.0);
    drop(seeder);

    // Redis dies. Chunks are still served; announces are taken (into each edge's own view);
    // peer queries answer at once from that view, never an error.
    redis.kill();
    let r = conn(&a.url("http")).await.send(announce(&late, 4002, &name, now())).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let on_a = listed(&a).await;
    assert!(on_a.contains(&id(&late)) && on_a.contains(&id(&seen)), "{on_a:?}");
    assert!(!listed(&b).await.contains(&id(&late)), "B knows only its own announces now");
    // Answered from each edge's own view (a Redis call gives up after 250 ms), not an error.
    for edge in [&a, &b] {
        let t = metrics(edge).await;
        assert!(metric(&t, "chorus_tracker_answers_total{view=\"local\"}") >= 1.0, "{t}");
    }
    let m = serde_json::from_slice::<chorus_core::manifest::Manifest>(
        conn(&b.url("http")).await.get("/v1/tracks/tides/manifest").await.unwrap().body(),
    )
    .unwrap();
    let mut c = conn(&b.url("http")).await;
    for chunk in m.renditions[0].chunks() {
        let r = c.get(&format!("/v1/chunks/{}", chunk.id)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(chorus_core::ChunkId::of(r.body()), chunk.id);
    }
    let ta = metrics(&a).await;
    assert_eq!(metric(&ta, "chorus_tracker_shared_up"), 0.0);
    assert!(metric(&ta, "chorus_tracker_shared_errors_total{op=\"announce\"}") >= 1.0, "{ta}");
    assert!(metric(&ta, "chorus_tracker_answers_total{view=\"local\"}") >= 1.0, "{ta}");
    assert!(support::wait_log(&a, "the shared tracker failed").contains("WARN"));

    // Redis is back (empty, as after a restart without persistence): the next announce after
    // the edge's rest goes to it, and B lists it again.
    redis.resume();
    let back = Keypair::generate_ed25519();
    eventually("an announce on A listed by B after Redis came back", async || {
        let r = conn(&a.url("http")).await.send(announce(&back, 4003, &name, now())).await.unwrap();
        assert!(matches!(r.status(), StatusCode::OK | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS));
        listed(&b).await.contains(&id(&back))
    })
    .await;
    assert_eq!(metric(&metrics(&b).await, "chorus_tracker_shared_up"), 1.0);
    support::wait_log(&a, "the shared tracker answers again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edges_on_a_redis_cluster_find_each_others_listeners_through_a_failover() {
    if !have_redis() {
        return;
    }
    let mut cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    ingest_sample(&store, "tides", "chorus-tides");
    let origin = start_origin(&store);
    let (a, b, name) = two_edges(&origin, dir.path(), &cluster.url());

    // An announce on A is listed by B; the same announce sent to B is a replay there.
    let seen = Keypair::generate_ed25519();
    let ts = now();
    let r = conn(&a.url("http")).await.send(announce(&seen, 4001, &name, ts)).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    eventually("B lists the peer announced on A", async || listed(&b).await == vec![id(&seen)]).await;
    let r = conn(&b.url("http")).await.send(announce(&seen, 4001, &name, ts)).await.unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT, "{}", String::from_utf8_lossy(r.body()));
    assert_eq!(metric(&metrics(&b).await, "chorus_tracker_answers_total{view=\"local\"}"), 0.0);

    // The primary that holds the track's list dies. While its replica takes over, both edges
    // keep serving chunks and answering peer queries, every one a 200.
    let key = chorus_edge::tracker::shared::keys::Keys::new("chorus:", true)
        .track(&chorus_core::TrackId::parse("tides").unwrap());
    let primary = cluster.primary_of(&key).expect("a primary serves the track's slot");
    let m = serde_json::from_slice::<chorus_core::manifest::Manifest>(
        conn(&b.url("http")).await.get("/v1/tracks/tides/manifest").await.unwrap().body(),
    )
    .unwrap();
    let chunks: Vec<chorus_core::ChunkId> = m.renditions[0].chunks().map(|c| c.id).collect();
    cluster.kill(primary);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (done, urls) = (done.clone(), [a.url("http"), b.url("http")]);
        tokio::spawn(async move {
            let mut served = 0u32;
            while !done.load(std::sync::atomic::Ordering::SeqCst) || served < 20 {
                for u in &urls {
                    let mut c = conn(u).await;
                    // A peer query a second per edge: within the edge's budget per source
                    // (2 a second), which the other checks of this test share.
                    if served % 20 < 2 {
                        let r = c.get("/v1/tracks/tides/peers").await.unwrap();
                        assert_eq!(r.status(), StatusCode::OK, "{}", String::from_utf8_lossy(r.body()));
                    }
                    for id in &chunks {
                        let r = c.get(&format!("/v1/chunks/{id}")).await.unwrap();
                        assert_eq!(r.status(), StatusCode::OK);
                        assert_eq!(chorus_core::ChunkId::of(r.body()), *id);
                    }
                    served += 1;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            served
        })
    };
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_ok();
        cluster
    })
    .await
    .unwrap();
    assert!(!cluster.primaries().contains(&primary), "a replica took over");
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    let served = load.await.unwrap();
    assert!(served >= 20, "{served}");

    // After the failover the shared view is back: a new announce on A is listed by B.
    // (Tried every 600 ms: B's peer queries stay within its budget per source, 2 a second.)
    let late = Keypair::generate_ed25519();
    let what = "an announce on A listed by B after the failover";
    support::eventually(what, Duration::from_secs(60), Duration::from_millis(600), async || {
        let r = conn(&a.url("http")).await.send(announce(&late, 4002, &name, now())).await.unwrap();
        assert!(matches!(r.status(), StatusCode::OK | StatusCode::CONFLICT | StatusCode::TOO_MANY_REQUESTS));
        listed(&b).await.contains(&id(&late))
    })
    .await;
    eventually("B's shared tracker is up", async || metric(&metrics(&b).await, "chorus_tracker_shared_up") == 1.0)
        .await;
}

#[test]
fn a_bad_tracker_url_is_refused_at_start() {
    let out = support::chorus(&["edge", "--upstream", "http://127.0.0.1:1", "--tracker", "http://redis:6379"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--tracker") && err.contains("redis://"), "{err}");
}
