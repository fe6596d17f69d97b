//! Tests of the shared tracker against real Redis servers and clusters (`chorus-testkit`).

use std::collections::BTreeSet;

use chorus_testkit::redis::{Redis, RedisCluster, have_redis};
use tokio::time::Instant;

use super::super::Tracker;
use super::*;

fn verified(peer: &str, tracks: &[&TrackId], timestamp: u64) -> Verified {
    let addrs = vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")];
    let tracks: Vec<TrackId> = tracks.iter().map(|t| (*t).clone()).collect();
    let content = super::super::verify::content_digest(&addrs, &tracks, &[], &[], "");
    Verified { peer_id: peer.to_owned(), addrs, tracks, held: Vec::new(), dropped: Vec::new(), timestamp, content }
}

/// A fixed pseudo-random sequence (the test does not depend on the machine's entropy).
fn lcg(state: &mut u64) -> u64 {
    *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    *state >> 33
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keeps_the_lists_the_memory_tracker_keeps() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    keeps_the_lists_the_memory_tracker_keeps(redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_the_lists_the_memory_tracker_keeps() {
    if !have_redis() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    keeps_the_lists_the_memory_tracker_keeps(cluster.url()).await;
}

/// Random announces (replays among them) from crowded and quiet networks, each recorded
/// in memory and in the tracker at `url`: after every one both list the same peers.
async fn keeps_the_lists_the_memory_tracker_keeps(url: String) {
    // Small lists, so that the per-network cap and a full list's eviction both happen often.
    let cfg = TrackerConfig { per_track: 10, per_network: 3, burst: u32::MAX, ..TrackerConfig::default() };
    let shared =
        SharedTracker::new(&SharedConfig { timeout: Duration::from_secs(5), ..SharedConfig::new(url) }, &cfg).unwrap();
    let mut memory = Tracker::new(cfg.clone());
    let tracks: Vec<TrackId> = ["a", "b", "c"].iter().map(|t| TrackId::parse(t).unwrap()).collect();
    let mut state = 11;
    let mut last: Option<(IpAddr, Verified)> = None;
    let (mut recorded, mut replays, mut plenty, mut fullest) = (0, 0, 0, 0);
    for step in 0..400u64 {
        let (source, ann) = match &last {
            // Now and then the last announce again, or an older one of its peer: a replay.
            Some((source, l)) if lcg(&mut state).is_multiple_of(8) => {
                let older = lcg(&mut state).is_multiple_of(2);
                let ts = if older { l.timestamp - 1 } else { l.timestamp };
                (*source, Verified { timestamp: ts, ..l.clone() })
            }
            _ => {
                let peer = format!("peer{}", lcg(&mut state) % 40);
                // Half from one crowded network, the rest from 7 others.
                let net = if lcg(&mut state).is_multiple_of(2) { 0 } else { lcg(&mut state) % 8 };
                let source = IpAddr::from([10, u8::try_from(net).unwrap(), 0, 1]);
                // Each track played, held, dropped or not named.
                let (mut played, mut held, mut dropped) = (Vec::new(), Vec::new(), Vec::new());
                for t in &tracks {
                    match lcg(&mut state) % 6 {
                        0 | 1 => played.push(t),
                        2 | 3 => held.push(t.clone()),
                        4 => dropped.push(t.clone()),
                        _ => {}
                    }
                }
                if played.is_empty() && held.is_empty() {
                    played.push(&tracks[0]);
                    dropped.retain(|t| *t != tracks[0]);
                }
                (source, verified(&peer, &played, 1_000 + step).with_cache(held, dropped))
            }
        };
        last = Some((source, ann.clone()));
        let in_memory = memory.record(Instant::now(), source, ann.clone());
        let in_redis = shared.record(source, &ann).await.unwrap();
        match (&in_memory, &in_redis) {
            (Ok(want), Recorded::Yes(got)) => {
                let (mut want, mut got) = (want.clone(), got.clone());
                want.sort();
                got.sort();
                assert_eq!(got, want, "step {step}: the held tracks not listed");
                recorded += 1;
                plenty += want.len();
            }
            (Err(crate::tracker::TrackerError::Superseded), Recorded::Replay) => replays += 1,
            other => panic!("step {step}: {other:?}"),
        }
        // After every step both list the same peers per track.
        for t in &tracks {
            let want: BTreeSet<String> = memory.listed(t).into_iter().collect();
            let got: BTreeSet<String> = shared.peers(t).await.unwrap().into_iter().map(|(_, p)| p.peer_id).collect();
            assert_eq!(got, want, "step {step}, track {t}");
            fullest = fullest.max(want.len());
        }
        // One announce per millisecond of Redis's clock at most: the stalest entry is then
        // the same one in both.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(recorded > 300 && replays > 20, "{recorded} recorded, {replays} replays");
    assert_eq!(fullest, 10, "lists filled up");
    assert!(plenty > 20, "held tracks met full lists {plenty} times");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_sharing_one_redis_see_each_others_peers_and_replays_and_entries_expire() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    edges_sharing_see_each_others_peers_and_replays_and_entries_expire(redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edges_sharing_one_redis_cluster_see_each_others_peers_and_replays_and_entries_expire() {
    if !have_redis() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    edges_sharing_see_each_others_peers_and_replays_and_entries_expire(cluster.url()).await;
}

async fn edges_sharing_see_each_others_peers_and_replays_and_entries_expire(url: String) {
    let cfg = TrackerConfig { ttl: Duration::from_millis(1_500), ..TrackerConfig::default() };
    let shared = SharedConfig { timeout: Duration::from_secs(5), ..SharedConfig::new(url.clone()) };
    let a = SharedTracker::new(&shared, &cfg).unwrap();
    let b = SharedTracker::new(&shared, &cfg).unwrap();
    let track = TrackId::parse("t").unwrap();
    let ann = verified("seeder", &[&track], 5_000);
    let source = IpAddr::from([198, 51, 100, 7]);
    assert_eq!(a.record(source, &ann).await.unwrap(), Recorded::Yes(Vec::new()));
    let listed = b.peers(&track).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].1.peer_id, "seeder");
    assert_eq!(listed[0].1.addrs, ann.addrs);
    // The same announce sent to the other edge is a replay there too; a newer one is not.
    assert_eq!(b.record(source, &ann).await.unwrap(), Recorded::Replay);
    assert_eq!(b.record(source, &verified("seeder", &[&track], 4_999)).await.unwrap(), Recorded::Replay);
    assert_eq!(b.record(source, &verified("seeder", &[&track], 5_001)).await.unwrap(), Recorded::Yes(Vec::new()));
    // Another prefix is another tracker in the same Redis.
    let other = SharedTracker::new(&SharedConfig { prefix: "other:".into(), ..shared.clone() }, &cfg).unwrap();
    assert!(other.peers(&track).await.unwrap().is_empty());
    // After the TTL (on Redis's clock) the entry is gone, and so are its keys.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    assert!(a.peers(&track).await.unwrap().is_empty());
    let mut conn = a.conn();
    let keys: Vec<String> = redis::cmd("KEYS").arg("chorus:*").query_async(&mut conn).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_bounds_hold_in_redis_too() {
    if !have_redis() {
        return;
    }
    let redis = Redis::start();
    let cfg = TrackerConfig { max_peers: 2, max_tracks: 1, ..TrackerConfig::default() };
    let s = SharedTracker::new(&SharedConfig::new(redis.url()), &cfg).unwrap();
    let (t, u) = (TrackId::parse("t").unwrap(), TrackId::parse("u").unwrap());
    let from = |n: u8| IpAddr::from([198, 51, n, 7]);
    assert_eq!(s.record(from(1), &verified("a", &[&t], 1)).await.unwrap(), Recorded::Yes(Vec::new()));
    assert_eq!(s.record(from(2), &verified("b", &[&t], 1)).await.unwrap(), Recorded::Yes(Vec::new()));
    // A third peer while two live ones fill the table; a known one may announce again.
    assert_eq!(s.record(from(3), &verified("c", &[&t], 1)).await.unwrap(), Recorded::Full);
    assert_eq!(s.record(from(1), &verified("a", &[&t, &u], 2)).await.unwrap(), Recorded::Yes(Vec::new()));
    // One track at most: the second is taken but not remembered.
    assert!(s.peers(&u).await.unwrap().is_empty());
    assert_eq!(s.peers(&t).await.unwrap().len(), 2);
    // An entry whose source went over its budget is dropped, and only it.
    s.forget(&[("a".to_owned(), t.clone())]).await.unwrap();
    let left = s.peers(&t).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1.peer_id, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_the_table_bounds_per_bucket() {
    if !have_redis() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(RedisCluster::start).await.unwrap();
    // Two peers and one track per bucket.
    let n = keys::BUCKETS as usize;
    let cfg = TrackerConfig { max_peers: 2 * n, max_tracks: n, ..TrackerConfig::default() };
    let shared = SharedConfig { timeout: Duration::from_secs(5), ..SharedConfig::new(cluster.url()) };
    let s = SharedTracker::new(&shared, &cfg).unwrap();
    let k = Keys::new("chorus:", true);
    // Ids that share a bucket, and one in another bucket.
    let same =
        |name: &str, of: &str| (0..).map(|i| format!("{name}{i}")).find(|x| k.bucket(x) == k.bucket(of)).unwrap();
    let other = |of: &str| (0..).map(|i| format!("x{i}")).find(|x| k.bucket(x) != k.bucket(of)).unwrap();
    let (a, b, c, d) = ("a".to_owned(), same("b", "a"), same("c", "a"), other("a"));
    let t = TrackId::parse("t").unwrap();
    let u = TrackId::parse(&same("u", "t")).unwrap();
    let v = TrackId::parse(&other("t")).unwrap();
    let from = |n: u8| IpAddr::from([198, 51, n, 7]);
    assert_eq!(s.record(from(1), &verified(&a, &[&t], 1)).await.unwrap(), Recorded::Yes(Vec::new()));
    assert_eq!(s.record(from(2), &verified(&b, &[&t], 1)).await.unwrap(), Recorded::Yes(Vec::new()));
    // A third peer of a full bucket is refused; one of another bucket is not.
    assert_eq!(s.record(from(3), &verified(&c, &[&t], 1)).await.unwrap(), Recorded::Full);
    assert_eq!(s.record(from(4), &verified(&d, &[&t], 1)).await.unwrap(), Recorded::Yes(Vec::new()));
    // One track per bucket: a second of t's bucket is taken but not remembered; one of
    // another bucket is, in the same announce.
    assert_eq!(s.record(from(1), &verified(&a, &[&t, &u, &v], 2)).await.unwrap(), Recorded::Yes(Vec::new()));
    assert!(s.peers(&u).await.unwrap().is_empty());
    assert_eq!(s.peers(&v).await.unwrap().len(), 1);
    let listed: BTreeSet<String> = s.peers(&t).await.unwrap().into_iter().map(|(_, p)| p.peer_id).collect();
    assert_eq!(listed, BTreeSet::from([a.clone(), b.clone(), d]));
    // An entry whose source went over its budget is dropped, and only it.
    s.forget(&[(a.clone(), t.clone()), (a, v.clone())]).await.unwrap();
    assert_eq!(s.peers(&t).await.unwrap().len(), 2);
    assert!(s.peers(&v).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_trusts_the_given_roots_only() {
    if !have_redis() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start_tls(dir.path());
    let cfg = TrackerConfig::default();
    let track = TrackId::parse("t").unwrap();
    let trusted = SharedConfig {
        ca_files: vec![redis.cert().unwrap().to_owned()],
        timeout: Duration::from_secs(5),
        ..SharedConfig::new(redis.url())
    };
    let s = SharedTracker::new(&trusted, &cfg).unwrap();
    assert_eq!(
        s.record(IpAddr::from([198, 51, 100, 7]), &verified("p", &[&track], 1)).await.unwrap(),
        Recorded::Yes(Vec::new())
    );
    assert_eq!(s.peers(&track).await.unwrap().len(), 1);
    // Without the root its certificate is not trusted.
    let untrusted = SharedConfig { timeout: Duration::from_secs(5), ..SharedConfig::new(redis.url()) };
    let e = SharedTracker::new(&untrusted, &cfg).unwrap().peers(&track).await.unwrap_err();
    assert!(matches!(e, SharedError::Redis(_)), "{e:?}");
    // An unreadable root is refused at start.
    let missing = SharedConfig { ca_files: vec![dir.path().join("none.pem")], ..SharedConfig::new(redis.url()) };
    assert!(matches!(SharedTracker::new(&missing, &cfg), Err(SharedError::Ca(..))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_is_reached_with_the_given_roots_only() {
    if !have_redis() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(RedisCluster::start_tls).await.unwrap();
    let cfg = TrackerConfig::default();
    let track = TrackId::parse("t").unwrap();
    let trusted = SharedConfig {
        ca_files: vec![cluster.cert().unwrap()],
        timeout: Duration::from_secs(5),
        ..SharedConfig::new(cluster.url())
    };
    assert!(cluster.url().starts_with("rediss+cluster://"));
    let s = SharedTracker::new(&trusted, &cfg).unwrap();
    assert_eq!(
        s.record(IpAddr::from([198, 51, 100, 7]), &verified("p", &[&track], 1)).await.unwrap(),
        Recorded::Yes(Vec::new())
    );
    assert_eq!(s.peers(&track).await.unwrap().len(), 1);
    let untrusted = SharedConfig { timeout: Duration::from_secs(5), ..SharedConfig::new(cluster.url()) };
    let e = SharedTracker::new(&untrusted, &cfg).unwrap().peers(&track).await.unwrap_err();
    assert!(matches!(e, SharedError::Redis(_)), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_fails_within_the_time_limit() {
    // A port nothing listens on, and a listener that takes the connection and never
    // answers (the kernel accepts it; no one reads).
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let cfg = TrackerConfig::default();
    let track = TrackId::parse("t").unwrap();
    for url in [format!("redis://{free}"), format!("redis://{}", silent.local_addr().unwrap())] {
        let s = SharedTracker::new(
            &SharedConfig { timeout: Duration::from_millis(200), ..SharedConfig::new(url.clone()) },
            &cfg,
        )
        .unwrap();
        // The call ends by itself (within its 200 ms limit; a generous minute here, so that
        // only a stuck call, not a busy machine, fails the test).
        let e = tokio::time::timeout(Duration::from_secs(60), s.peers(&track))
            .await
            .unwrap_or_else(|_| panic!("{url}: the call did not end"))
            .unwrap_err();
        assert!(matches!(e, SharedError::Redis(_) | SharedError::Timeout(_)), "{url}: {e:?}");
        assert!(e.is_retryable());
    }
}

#[test]
fn listed_entries_out_of_bounds_are_dropped() {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    let long = format!("[\"{}\"]", "a".repeat(MAX_ADDR_LEN + 1));
    let got = parse_listed(&s(&[
        "p1",
        "1700000000123",
        "[\"/ip4/198.51.100.7/tcp/4001\"]",
        "p2",
        "1700000000000",
        &long,
        "p3",
        "x",
        "[]",
        "p4",
        "5",
        "not json",
    ]))
    .unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 1_700_000_000_123);
    assert_eq!(got[0].1.peer_id, "p1");
    assert!(matches!(parse_listed(&s(&["p1", "1"])), Err(SharedError::BadAnswer(_))));
}
