//! Tests of the tracker (`mod.rs`): the list rules, replays, bounds and expiry.

use std::collections::HashSet;

use super::*;
use chorus_core::announce::SignedAnnounce;

const PEER: &str = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";

/// A verified announce, each one later than the last (as a peer's clock moves on).
fn ann(peer: &str, tracks: &[&str]) -> Verified {
    static CLOCK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let addrs = vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")];
    let tracks: Vec<TrackId> = tracks.iter().map(|t| TrackId::parse(t).unwrap()).collect();
    Verified {
        peer_id: peer.to_owned(),
        content: content_digest(&addrs, &tracks, &[], &[], ""),
        addrs,
        tracks,
        held: Vec::new(),
        dropped: Vec::new(),
        timestamp: CLOCK.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
    }
}

/// An announce through both steps, as the API makes it.
fn announce(t: &mut Tracker, now: Instant, source: IpAddr, v: Verified) -> Result<(), TrackerError> {
    t.admit(now, source)?;
    t.record(now, source, v).map(drop)
}

/// A fixed-seed generator: the tests do not depend on which older peers are sampled.
struct Counter(u64);
impl RngCore for Counter {
    fn next_u32(&mut self) -> u32 {
        u32::try_from(self.next_u64() >> 32).unwrap()
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        self.0
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        rand_core::impls::fill_bytes_via_next(self, dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

fn rng() -> Counter {
    Counter(7)
}

fn peer(n: usize) -> String {
    format!("12D3KooW{n:0>10}").replace('0', "z")
}

fn ip(n: u8) -> IpAddr {
    IpAddr::from([10, 0, 0, n])
}

/// A source in network `n` (10.n.0.1/24).
fn net(n: usize) -> IpAddr {
    IpAddr::from([10, u8::try_from(n).unwrap(), 0, 1])
}

fn named(n: usize) -> String {
    format!("{}{}", peer(0), n).replace('0', "z")
}

#[test]
fn remembers_per_track_and_answers_the_newest_half_and_a_sample_of_the_rest() {
    let cfg = TrackerConfig { per_track: 20, ..TrackerConfig::default() };
    let mut t = Tracker::new(cfg);
    let start = Instant::now();
    let track = TrackId::parse("t").unwrap();
    for n in 0..30 {
        announce(&mut t, start + Duration::from_secs(n as u64), net(n), ann(&named(n), &["t"])).unwrap();
    }
    // 20 remembered: peers 10..29 (each newer one replaced the stalest).
    assert_eq!(t.entries(), 20);
    let now = start + Duration::from_secs(30);
    for seed in 0..20 {
        let got: Vec<String> = t.peers(now, &track, &mut Counter(seed)).into_iter().map(|p| p.peer_id).collect();
        assert_eq!(got.len(), 10);
        // The five most recent announces, newest first…
        let newest: Vec<String> = (25..30).rev().map(named).collect();
        assert_eq!(got[..5], newest[..]);
        // …then five others, all live and remembered, no one twice.
        let older: HashSet<&String> = got[5..].iter().collect();
        assert_eq!(older.len(), 5);
        assert!(got[5..].iter().all(|p| (10..25).map(named).any(|n| n == *p)), "{got:?}");
    }
    // The sample varies: over a few draws, more than five of the older ones are shown.
    let shown: HashSet<String> = (0..20)
        .flat_map(|seed| t.peers(now, &track, &mut Counter(seed)).into_iter().skip(5))
        .map(|p| p.peer_id)
        .collect();
    assert!(shown.len() > 5, "{shown:?}");
}

#[test]
fn one_source_network_cannot_fill_a_track() {
    let cfg = TrackerConfig { burst: 100_000, ..TrackerConfig::default() };
    let mut t = Tracker::new(cfg);
    let track = TrackId::parse("t").unwrap();
    let start = Instant::now();
    let seeder = peer(1);
    let real: IpAddr = "198.51.100.7".parse().unwrap();
    announce(&mut t, start, real, ann(&seeder, &["t"])).unwrap();
    // 1000 fake peers from one /24, announced after the seeder (all newer than it).
    for n in 0..1000 {
        let from = IpAddr::from([203, 0, 113, u8::try_from(n % 250).unwrap()]);
        announce(&mut t, start + Duration::from_millis(n as u64 + 1), from, ann(&named(n + 100), &["t"])).unwrap();
    }
    assert_eq!(t.entries(), 5, "the seeder and 4 from the flooding network");
    let answer = t.peers(start + Duration::from_secs(2), &track, &mut rng());
    assert!(answer.iter().any(|p| p.peer_id == seeder), "{answer:?}");
    assert_eq!(answer.len(), 5);
}

#[test]
fn networks_flooding_a_full_track_displace_each_other_not_a_seeder() {
    // 8 networks x 4 fill a list of 32 exactly; a seeder alone in its network announced
    // first, so it is the stalest entry of all while they flood.
    let cfg = TrackerConfig { burst: 100_000, ..TrackerConfig::default() };
    let mut t = Tracker::new(cfg);
    let track = TrackId::parse("t").unwrap();
    let start = Instant::now();
    let seeder = peer(1);
    announce(&mut t, start, "198.51.100.7".parse().unwrap(), ann(&seeder, &["t"])).unwrap();
    for n in 0..2000 {
        let from = IpAddr::from([10, u8::try_from(n % 8).unwrap(), 0, u8::try_from(n % 200).unwrap()]);
        announce(&mut t, start + Duration::from_millis(n as u64 + 1), from, ann(&named(n + 100), &["t"])).unwrap();
    }
    assert_eq!(t.entries(), 32);
    let listed = &t.tracks[&track];
    assert!(listed.iter().any(|e| *e.peer == *seeder), "the seeder was cycled out");
    // Each flooding network holds 4, but for the one that made room for the seeder.
    let mut per: HashMap<IpAddr, usize> = HashMap::new();
    for e in listed {
        *per.entry(e.network).or_default() += 1;
    }
    let mut counts: Vec<usize> = per.values().copied().collect();
    counts.sort_unstable();
    assert_eq!(counts, [1, 3, 4, 4, 4, 4, 4, 4, 4]);
    // A ninth network's newcomer takes a place from a crowded one too, not the seeder's.
    let late = named(9999);
    announce(&mut t, start + Duration::from_secs(3), IpAddr::from([10, 99, 0, 1]), ann(&late, &["t"])).unwrap();
    let listed = &t.tracks[&track];
    assert!(listed.iter().any(|e| *e.peer == *seeder) && listed.iter().any(|e| *e.peer == *late));
    // And while the flood goes on, the seeder is in the sampled half of some answers.
    let now = start + Duration::from_secs(4);
    assert!((0..20).any(|seed| t.peers(now, &track, &mut Counter(seed)).iter().any(|p| p.peer_id == seeder)));
}

#[test]
fn a_held_track_stays_listed_while_its_peer_lives_and_displaces_no_one() {
    let cfg = TrackerConfig { per_track: 3, burst: u32::MAX, ..TrackerConfig::default() };
    let mut t = Tracker::new(cfg);
    let t0 = Instant::now();
    let at = |s: u64| t0 + Duration::from_secs(s);
    let (track, full) = (TrackId::parse("t").unwrap(), TrackId::parse("u").unwrap());
    let held = |peer: &str, held: &[&str], dropped: &[&str]| {
        let ids = |l: &[&str]| l.iter().map(|t| TrackId::parse(t).unwrap()).collect::<Vec<_>>();
        let a = ann(peer, &[]);
        let content = content_digest(&a.addrs, &[], &ids(held), &ids(dropped), "");
        Verified { held: ids(held), dropped: ids(dropped), content, ..a }
    };
    let listed = |t: &Tracker, now, track: &TrackId| -> Vec<String> {
        t.peers(now, track, &mut rng()).into_iter().map(|p| p.peer_id).collect()
    };
    // Three players fill "u"; the cache of peer A names "t" and "u".
    for n in 0..3 {
        t.record(at(0), net(n), ann(&named(n), &["u"])).unwrap();
    }
    let plenty = t.record(at(0), net(9), held(PEER, &["t", "u"], &[])).unwrap();
    assert_eq!(plenty, std::slice::from_ref(&full), "a full list takes no held entry");
    assert_eq!(listed(&t, at(1), &track), [PEER]);
    assert!(!listed(&t, at(1), &full).contains(&PEER.to_owned()));
    // A player displaces the stalest player of a full list, as before.
    t.record(at(2), net(5), ann(&named(5), &["u"])).unwrap();
    assert!(listed(&t, at(2), &full).contains(&named(5)));

    // A names nothing but itself every 4 minutes: "t" stays listed past the 5 minutes a
    // played track lives…
    for s in [240, 480, 720] {
        t.record(at(s), net(9), held(PEER, &[], &[])).unwrap();
    }
    assert_eq!(listed(&t, at(900), &track), [PEER]);
    // …and goes when A falls silent for 5 minutes.
    assert!(listed(&t, at(720 + 300), &track).is_empty());
    t.expire(at(720 + 300));
    assert!(t.listed(&track).is_empty());

    // A held entry ends after its own hour, however often its peer announces.
    let mut t = Tracker::new(TrackerConfig { burst: u32::MAX, ..TrackerConfig::default() });
    t.record(at(0), net(9), held(PEER, &["t"], &[])).unwrap();
    for s in (200..3800).step_by(200) {
        t.record(at(s), net(9), held(PEER, &[], &[])).unwrap();
    }
    assert_eq!(listed(&t, at(3599), &track), [PEER]);
    assert!(listed(&t, at(3600), &track).is_empty());
    // A dropped track goes at once.
    t.record(at(3800), net(9), held(PEER, &["t"], &[])).unwrap();
    assert_eq!(listed(&t, at(3801), &track), [PEER]);
    t.record(at(3802), net(9), held(PEER, &[], &["t"])).unwrap();
    assert!(listed(&t, at(3802), &track).is_empty());
    assert_eq!(t.entries(), 0);
}

#[test]
fn a_held_track_keeps_to_its_networks_share() {
    let cfg = TrackerConfig { per_network: 2, burst: u32::MAX, ..TrackerConfig::default() };
    let mut t = Tracker::new(cfg);
    let now = Instant::now();
    let track = TrackId::parse("t").unwrap();
    let held = |peer: &str| {
        let a = ann(peer, &[]);
        a.with_cache(vec![TrackId::parse("t").unwrap()], Vec::new())
    };
    assert!(t.record(now, net(1), held(&named(1))).unwrap().is_empty());
    assert!(t.record(now, net(1), held(&named(2))).unwrap().is_empty());
    // A third from the same /24 would displace one of its own: held entries displace no one.
    assert_eq!(t.record(now, net(1), held(&named(3))).unwrap(), std::slice::from_ref(&track));
    assert_eq!(t.listed(&track).len(), 2);
}

#[test]
fn an_older_announce_of_a_peer_or_the_same_again_is_a_replay() {
    let mut t = Tracker::new(TrackerConfig::default());
    let now = Instant::now();
    let at = |timestamp, tracks: &[&str]| Verified { timestamp, ..ann(PEER, tracks) };
    announce(&mut t, now, ip(1), at(100, &["t"])).unwrap();
    assert!(matches!(announce(&mut t, now, ip(1), at(99, &["t"])), Err(TrackerError::Superseded)));
    // The same announce again: a replay, which would keep a peer that left listed.
    assert!(matches!(announce(&mut t, now, ip(1), at(100, &["t"])), Err(TrackerError::Superseded)));
    // Another announce in the same second (a track more): taken.
    announce(&mut t, now, ip(1), at(100, &["t", "u"])).unwrap();
    announce(&mut t, now, ip(1), at(160, &["t"])).unwrap();
}

#[test]
fn verify_checks_the_signature_the_edge_and_binds_addresses_to_the_sender() {
    let key = libp2p::identity::Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let relay = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    let cfg =
        TrackerConfig { relays: vec![format!("/ip4/203.0.113.1/tcp/4001/p2p/{relay}")], ..TrackerConfig::default() };
    let check = AnnounceCheck::new(&cfg);
    let sender: IpAddr = "198.51.100.9".parse().unwrap();
    let signed = |addrs: &[String], edge: &str| {
        let a = Announce {
            peer_id: peer.to_base58(),
            addrs: addrs.to_vec(),
            tracks: vec![TrackId::parse("t").unwrap()],
            held: Vec::new(),
            dropped: Vec::new(),
            timestamp: 5_000,
            edge: edge.to_owned(),
        };
        SignedAnnounce::sign(&key, &a).unwrap()
    };
    let circuit = format!("/ip4/203.0.113.1/tcp/4001/p2p/{relay}/p2p-circuit");
    let good =
        signed(&["/ip4/198.51.100.9/tcp/4001".into(), "/ip4/10.1.2.3/tcp/22".into(), circuit.clone()], "edge:443");
    let v = check.verify(&good, sender, Some("edge:443"), 5_010).unwrap();
    assert_eq!(v.addrs, vec![format!("/ip4/198.51.100.9/tcp/4001/p2p/{peer}"), format!("{circuit}/p2p/{peer}")]);

    let injected = signed(&["/ip4/10.1.2.3/tcp/22".into(), "/ip4/169.254.169.254/tcp/80".into()], "edge:443");
    assert!(matches!(check.verify(&injected, sender, Some("edge:443"), 5_010), Err(TrackerError::NoAddress { .. })));
    assert!(matches!(
        check.verify(&good, sender, Some("other:443"), 5_010),
        Err(TrackerError::Refused(AnnounceError::WrongEdge { .. }))
    ));
    assert!(matches!(
        check.verify(&good, sender, Some("edge:443"), 5_500),
        Err(TrackerError::Refused(AnnounceError::OutsideWindow { now: 5_500, .. }))
    ));
}

#[test]
fn entries_expire() {
    let mut t = Tracker::new(TrackerConfig::default());
    let start = Instant::now();
    let track = TrackId::parse("t").unwrap();
    announce(&mut t, start, ip(1), ann(PEER, &["t"])).unwrap();
    assert_eq!(t.peers(start + Duration::from_secs(299), &track, &mut rng()).len(), 1);
    assert!(t.peers(start + Duration::from_secs(300), &track, &mut rng()).is_empty());
    t.expire(start + Duration::from_secs(301));
    assert_eq!(t.entries(), 0);
    assert!(t.tracks.is_empty() && t.peers.is_empty());
}

#[test]
fn rate_limited_per_source() {
    let mut t = Tracker::new(TrackerConfig::default());
    let now = Instant::now();
    for _ in 0..10 {
        announce(&mut t, now, ip(1), ann(PEER, &["t"])).unwrap();
    }
    assert!(matches!(announce(&mut t, now, ip(1), ann(PEER, &["t"])), Err(TrackerError::RateLimited(_))));
    // Another source is not affected; the first gets one more after the refill time.
    announce(&mut t, now, ip(2), ann(PEER, &["t"])).unwrap();
    announce(&mut t, now + Duration::from_secs(3), ip(1), ann(PEER, &["t"])).unwrap();
}

#[test]
fn bounded_tracks_and_sources() {
    let cfg = TrackerConfig { max_tracks: 3, max_sources: 2, ..TrackerConfig::default() };
    let mut t = Tracker::new(cfg);
    let now = Instant::now();
    announce(&mut t, now, ip(1), ann(PEER, &["a", "b", "c", "d", "e"])).unwrap();
    assert_eq!(t.tracks.len(), 3);
    announce(&mut t, now, ip(2), ann(PEER, &["a"])).unwrap();
    assert!(matches!(announce(&mut t, now, ip(3), ann(PEER, &["a"])), Err(TrackerError::RateLimited(_))));
}

#[test]
fn a_full_table_is_swept_at_most_once_a_second() {
    let cfg = TrackerConfig { max_peers: 1, max_sources: 1, ttl: Duration::from_secs(10), ..TrackerConfig::default() };
    let mut t = Tracker::new(cfg);
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    announce(&mut t, at(0), ip(1), ann(&peer(1), &["t"])).unwrap();
    // Full of live entries: the sweep at 9.6 s frees nothing.
    assert!(matches!(announce(&mut t, at(9_600), ip(1), ann(&peer(2), &["t"])), Err(TrackerError::Full)));
    // Peer 1 has expired at 10.1 s, but the last sweep was 0.5 s ago: still full.
    assert!(matches!(announce(&mut t, at(10_100), ip(1), ann(&peer(2), &["t"])), Err(TrackerError::Full)));
    // A second after that sweep, the next one makes room.
    announce(&mut t, at(10_700), ip(1), ann(&peer(2), &["t"])).unwrap();
    assert_eq!(t.peers(at(10_700), &TrackId::parse("t").unwrap(), &mut rng()).len(), 1);

    // The same for the table of sources: source 1 used one of its 10 announces at 0 s and
    // has them all back at 3 s (one every 3 s). A sweep at 2.5 s finds it busy and blocks
    // the next until 3.5 s.
    let mut t = Tracker::new(TrackerConfig { max_sources: 1, ..TrackerConfig::default() });
    announce(&mut t, at(0), ip(1), ann(&peer(1), &["t"])).unwrap();
    assert!(matches!(announce(&mut t, at(2_500), ip(2), ann(&peer(2), &["t"])), Err(TrackerError::RateLimited(_))));
    assert!(matches!(announce(&mut t, at(3_200), ip(2), ann(&peer(2), &["t"])), Err(TrackerError::RateLimited(_))));
    announce(&mut t, at(3_600), ip(2), ann(&peer(2), &["t"])).unwrap();
}

#[test]
fn peers_are_bounded_and_ipv6_is_limited_per_64() {
    let cfg = TrackerConfig { max_peers: 2, burst: 100, ..TrackerConfig::default() };
    let mut t = Tracker::new(cfg);
    let now = Instant::now();
    announce(&mut t, now, ip(1), ann(&peer(1), &["t"])).unwrap();
    announce(&mut t, now, ip(1), ann(&peer(2), &["t"])).unwrap();
    assert!(matches!(announce(&mut t, now, ip(1), ann(&peer(3), &["t"])), Err(TrackerError::Full)));
    // Known peers may still re-announce; after expiry there is room again.
    announce(&mut t, now, ip(1), ann(&peer(2), &["t"])).unwrap();
    announce(&mut t, now + Duration::from_secs(301), ip(1), ann(&peer(3), &["t"])).unwrap();

    let mut t = Tracker::new(TrackerConfig::default());
    let a: IpAddr = "2001:db8::1".parse().unwrap();
    let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
    for _ in 0..10 {
        announce(&mut t, now, a, ann(PEER, &["t"])).unwrap();
    }
    assert!(matches!(announce(&mut t, now, b, ann(PEER, &["t"])), Err(TrackerError::RateLimited(_))), "same /64");
}
