//! The tracker shared by every edge pointed at one Redis (`chorus edge --tracker redis://…`;
//! docs/architecture.md "The shared tracker", docs/operator.md "A tracker shared by edges").
//!
//! Behind a load balancer a listener announces to one edge and asks another: with a tracker per
//! edge the swarm splits by edge. Here announces are kept in Redis, under the same rules as the
//! in-memory [`Tracker`](super::Tracker) (per track, per source network, one entry per peer,
//! eviction from the most crowded network, replays refused, entries expiring after the TTL),
//! each rule applied atomically by a Lua script in one round trip per announce
//! ([`record.lua`](./record.lua)) and per lookup ([`peers.lua`](./peers.lua)). Times are
//! Redis's own clock, so edges whose clocks differ agree on what is live.
//!
//! What each edge keeps to itself: the announce rate limit per source (a source reaching two
//! edges gets two budgets) and the signature checks. Memory in Redis is bounded by the table
//! bounds (live peers and tracks, kept in two sorted sets by expiry), by the TTL (every key
//! expires) and by the rate limits; `maxmemory` with `volatile-ttl` is the hard bound
//! (docs/operator.md).
//!
//! Redis unreachable, slow or failing: every call ends within [`SharedConfig::timeout`] with a
//! [`SharedError`], and [`Health`] keeps the edge from asking again for a while, so the caller
//! answers from its local view at once (see [`super::Front`]). Chunk routes never touch Redis.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use chorus_core::TrackId;
use chorus_core::api::{MAX_ADDR_LEN, MAX_ADDRS, PeerRecord};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

use super::{TrackerConfig, Verified};

/// How an edge reaches the shared tracker.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// `redis://[USER:PASSWORD@]HOST[:PORT][/DB]` or `rediss://…` (TLS).
    pub url: String,
    /// Prefix of every key (default `chorus:`), so deployments can share one Redis.
    pub prefix: String,
    /// Time limit of one round trip, connecting included (default 250 ms); past it the edge
    /// answers from its local view.
    pub timeout: Duration,
    /// Roots to trust for `rediss://` instead of the system's (PEM files; `chorus edge --ca`).
    pub ca_files: Vec<PathBuf>,
}

impl SharedConfig {
    /// The settings for `url`, with the default prefix and timeout.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), prefix: "chorus:".into(), timeout: Duration::from_millis(250), ca_files: Vec::new() }
    }
}

/// Why the shared tracker did not answer. The edge answers from its local view instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedError {
    /// The URL or TLS settings are unusable (at start; not retryable).
    #[error("the tracker URL or its TLS settings")]
    Config(#[source] redis::RedisError),
    /// A `--ca` file could not be read (at start; not retryable).
    #[error("reading {0}")]
    Ca(PathBuf, #[source] std::io::Error),
    /// Redis answered with an error, or the connection failed.
    #[error("redis")]
    Redis(#[source] redis::RedisError),
    /// No answer within the time limit.
    #[error("no answer from redis within {0:?}")]
    Timeout(Duration),
    /// Redis failed recently; it is not asked again before the next probe.
    #[error("redis failed recently; next try in {0:?}")]
    Resting(Duration),
    /// The answer was not what the script returns.
    #[error("unexpected answer from redis: {0}")]
    BadAnswer(&'static str),
}

impl SharedError {
    /// Whether asking again later can help (everything but a bad configuration).
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        !matches!(self, Self::Config(_) | Self::Ca(..))
    }
}

/// Whether the shared tracker is asked, with an explicit clock: after a failure it rests for
/// [`Health::REST`], then one call probes it (the others keep resting until that one ends).
#[derive(Debug)]
pub struct Health {
    /// Set while failing: no call before this.
    resting_until: Option<Instant>,
    /// How long a failed tracker rests: [`Health::REST`], or the call's time limit when
    /// longer, so that probes never overlap.
    rest: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Self::with_rest(Self::REST)
    }
}

/// What a call's outcome changed, for a log line at the change only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing.
    Same,
    /// It failed after working (or at its first call).
    Down,
    /// It works again.
    Up,
}

impl Health {
    /// How long a failed tracker rests before the next probe, at least.
    pub const REST: Duration = Duration::from_secs(1);

    /// Health whose rests last `rest` (at least [`Health::REST`]).
    #[must_use]
    pub fn with_rest(rest: Duration) -> Self {
        Self { resting_until: None, rest: rest.max(Self::REST) }
    }

    /// Whether a call may go to Redis at `now`; `Err` with the time left to rest. While
    /// failing, the one call let through at the end of a rest is the probe: the next rest
    /// starts with it, so concurrent calls do not all wait on a dead server.
    ///
    /// # Errors
    /// The time left to rest.
    pub fn may_call(&mut self, now: Instant) -> Result<(), Duration> {
        match self.resting_until {
            Some(until) if now < until => Err(until - now),
            Some(_) => {
                self.resting_until = Some(now + self.rest);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Records a call's outcome at `now`.
    pub fn outcome(&mut self, ok: bool, now: Instant) -> Change {
        match (ok, self.resting_until.is_some()) {
            (true, true) => {
                self.resting_until = None;
                Change::Up
            }
            (false, false) => {
                self.resting_until = Some(now + self.rest);
                Change::Down
            }
            (false, true) => {
                self.resting_until = Some(now + self.rest);
                Change::Same
            }
            (true, false) => Change::Same,
        }
    }

    /// Whether the last call worked (or none failed yet).
    #[must_use]
    pub const fn is_up(&self) -> bool {
        self.resting_until.is_none()
    }
}

/// What the shared tracker did with an announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded.
    Yes,
    /// A replay: this announce, or a newer one of the peer, is recorded (by any edge).
    Replay,
    /// A new peer while the tracker holds as many live peers as it may.
    Full,
}

/// A track's live peer as Redis lists it: its last announce (ms on Redis's clock) and record.
pub type Listed = (u64, PeerRecord);

/// The connection to the shared tracker and its scripts. Cheap to clone.
#[derive(Clone)]
pub struct SharedTracker {
    /// The connection, replaced after a call that timed out: a connection whose peer went
    /// silent (a host gone, a partition) is not noticed by the client until TCP gives up.
    conn: std::sync::Arc<std::sync::Mutex<ConnectionManager>>,
    client: redis::Client,
    conn_cfg: ConnectionManagerConfig,
    max_peers: usize,
    max_tracks: usize,
    record: std::sync::Arc<redis::Script>,
    peers: std::sync::Arc<redis::Script>,
    prefix: String,
    timeout: Duration,
    ttl_ms: u64,
    per_track: usize,
    per_network: usize,
}

impl std::fmt::Debug for SharedTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTracker").field("prefix", &self.prefix).field("timeout", &self.timeout).finish()
    }
}

/// Checks that `url` is a Redis URL the client takes, without connecting (for `--tracker`).
///
/// # Errors
/// The client's reason.
pub fn check_url(url: &str) -> Result<(), SharedError> {
    redis::Client::open(url).map(drop).map_err(SharedError::Config)
}

impl SharedTracker {
    /// A tracker in the Redis at `shared.url`, with the limits of `limits`. Connects lazily: an
    /// edge starts (and serves chunks) with Redis down.
    ///
    /// # Errors
    /// [`SharedError::Config`] for a URL that is not a Redis URL, [`SharedError::Ca`] for an
    /// unreadable `--ca` file.
    pub fn new(shared: &SharedConfig, limits: &TrackerConfig) -> Result<Self, SharedError> {
        if shared.url.starts_with("rediss://") {
            chorus_http::tls::install_default_provider();
        }
        let client = if shared.url.starts_with("rediss://") && !shared.ca_files.is_empty() {
            let mut pem = Vec::new();
            for f in &shared.ca_files {
                pem.extend(std::fs::read(f).map_err(|e| SharedError::Ca(f.clone(), e))?);
                pem.push(b'\n');
            }
            let certs = redis::TlsCertificates { client_tls: None, root_cert: Some(pem) };
            redis::Client::build_with_tls(shared.url.as_str(), certs)
        } else {
            redis::Client::open(shared.url.as_str())
        }
        .map_err(SharedError::Config)?;
        // One reconnect attempt per failed call: the caller's time limit and `Health` pace them.
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(shared.timeout))
            .set_response_timeout(Some(shared.timeout))
            .set_number_of_retries(0)
            .set_max_delay(Health::REST.max(shared.timeout));
        let conn = client.get_connection_manager_lazy(cfg.clone()).map_err(SharedError::Config)?;
        Ok(Self {
            conn: std::sync::Arc::new(std::sync::Mutex::new(conn)),
            client,
            conn_cfg: cfg,
            max_peers: limits.max_peers,
            max_tracks: limits.max_tracks,
            record: std::sync::Arc::new(redis::Script::new(include_str!("record.lua"))),
            peers: std::sync::Arc::new(redis::Script::new(include_str!("peers.lua"))),
            prefix: shared.prefix.clone(),
            timeout: shared.timeout,
            ttl_ms: u64::try_from(limits.ttl.as_millis()).unwrap_or(u64::MAX),
            per_track: limits.per_track,
            per_network: limits.per_network,
        })
    }

    fn peer_key(&self, peer: &str) -> String {
        format!("{}p:{peer}", self.prefix)
    }

    /// The time limit of one call.
    #[must_use]
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Records `ann`, verified, from `source`.
    ///
    /// # Errors
    /// [`SharedError`] when Redis does not answer in time or fails.
    pub async fn record(&self, source: IpAddr, ann: &Verified) -> Result<Recorded, SharedError> {
        let addrs = serde_json::to_string(ann.addrs()).unwrap_or_else(|_| "[]".into());
        let mut call = self.record.prepare_invoke();
        call.key(self.peer_key(ann.peer_id()))
            .key(format!("{}peers", self.prefix))
            .key(format!("{}tracks", self.prefix));
        for t in ann.tracks() {
            call.key(format!("{}t:{t}", self.prefix)).key(format!("{}n:{t}", self.prefix));
        }
        call.arg(ann.peer_id())
            .arg(addrs)
            .arg(ann.timestamp())
            .arg(format!("{:016x}", ann.content()))
            .arg(super::network(source).to_string())
            .arg(self.ttl_ms)
            .arg(self.per_track)
            .arg(self.per_network)
            .arg(self.max_peers)
            .arg(self.max_tracks);
        for t in ann.tracks() {
            call.arg(t.as_str());
        }
        let mut conn = self.conn();
        match self.within(call.invoke_async(&mut conn)).await? {
            1 => Ok(Recorded::Yes),
            0 => Ok(Recorded::Replay),
            2 => Ok(Recorded::Full),
            _ => Err(SharedError::BadAnswer("not 0, 1 or 2")),
        }
    }

    /// Drops each (peer, track) entry of `gone` (their source went over its budget).
    ///
    /// # Errors
    /// [`SharedError`] when Redis does not answer in time or fails.
    pub async fn forget(&self, gone: &[(String, TrackId)]) -> Result<(), SharedError> {
        if gone.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (peer, track) in gone {
            pipe.cmd("ZREM").arg(format!("{}t:{track}", self.prefix)).arg(peer).ignore();
            pipe.cmd("HDEL").arg(format!("{}n:{track}", self.prefix)).arg(peer).ignore();
        }
        let mut conn = self.conn();
        self.within(pipe.query_async::<()>(&mut conn)).await
    }

    /// The live peers of `track`, newest first.
    ///
    /// # Errors
    /// [`SharedError`] when Redis does not answer in time, fails, or answers out of shape.
    pub async fn peers(&self, track: &TrackId) -> Result<Vec<Listed>, SharedError> {
        let mut call = self.peers.prepare_invoke();
        call.key(format!("{}t:{track}", self.prefix)).arg(self.ttl_ms).arg(format!("{}p:", self.prefix));
        let mut conn = self.conn();
        let flat: Vec<String> = self.within(call.invoke_async(&mut conn)).await?;
        parse_listed(&flat)
    }

    /// Runs `call` within the time limit.
    async fn within<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, SharedError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(SharedError::Redis),
            Err(_) => {
                // The next call gets a new connection (made lazily, bounded by the same limit).
                if let Ok(fresh) = self.client.get_connection_manager_lazy(self.conn_cfg.clone()) {
                    *self.conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
                }
                Err(SharedError::Timeout(self.timeout))
            }
        }
    }
}

/// Reads what `peers.lua` returns (peer id, ms, addresses as JSON, …), keeping the entries
/// whose addresses are within the announce bounds: what the edge reads back from Redis is
/// bounded like what it takes from peers.
fn parse_listed(flat: &[String]) -> Result<Vec<Listed>, SharedError> {
    if !flat.len().is_multiple_of(3) {
        return Err(SharedError::BadAnswer("not triples of peer, time, addresses"));
    }
    Ok(flat
        .chunks_exact(3)
        .filter_map(|e| {
            let seen = e[1].parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0)?;
            let addrs: Vec<String> = serde_json::from_str(&e[2]).ok()?;
            let bounded = addrs.len() <= MAX_ADDRS && addrs.iter().all(|a| a.len() <= MAX_ADDR_LEN);
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // finite, >= 0, ms
            let seen = seen as u64;
            bounded.then(|| (seen, PeerRecord { peer_id: e[0].clone(), addrs }))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chorus_testkit::redis::{Redis, have_redis};

    use super::super::Tracker;
    use super::*;

    fn verified(peer: &str, tracks: &[&TrackId], timestamp: u64) -> Verified {
        let addrs = vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")];
        let tracks: Vec<TrackId> = tracks.iter().map(|t| (*t).clone()).collect();
        let content = super::super::content_digest(&addrs, &tracks, "");
        Verified { peer_id: peer.to_owned(), addrs, tracks, timestamp, content }
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
        // Small lists, so that the per-network cap and a full list's eviction both happen often.
        let cfg = TrackerConfig { per_track: 10, per_network: 3, burst: u32::MAX, ..TrackerConfig::default() };
        let shared = SharedTracker::new(&SharedConfig::new(redis.url()), &cfg).unwrap();
        let mut memory = Tracker::new(cfg.clone());
        let tracks: Vec<TrackId> = ["a", "b", "c"].iter().map(|t| TrackId::parse(t).unwrap()).collect();
        let mut state = 11;
        let mut last: Option<(IpAddr, Verified)> = None;
        let (mut recorded, mut replays) = (0, 0);
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
                    let mut named: Vec<&TrackId> =
                        tracks.iter().filter(|_| lcg(&mut state).is_multiple_of(2)).collect();
                    if named.is_empty() {
                        named.push(&tracks[0]);
                    }
                    (source, verified(&peer, &named, 1_000 + step))
                }
            };
            last = Some((source, ann.clone()));
            let in_memory = memory.record(Instant::now(), source, ann.clone());
            let in_redis = shared.record(source, &ann).await.unwrap() == Recorded::Yes;
            assert_eq!(in_memory.is_ok(), in_redis, "step {step}: {in_memory:?}");
            if in_redis {
                recorded += 1;
            } else {
                replays += 1;
            }
            // After every step both list the same peers per track.
            for t in &tracks {
                let want: BTreeSet<String> = memory.listed(t).into_iter().collect();
                let got: BTreeSet<String> =
                    shared.peers(t).await.unwrap().into_iter().map(|(_, p)| p.peer_id).collect();
                assert_eq!(got, want, "step {step}, track {t}");
            }
            // One announce per millisecond of Redis's clock at most: the stalest entry is then
            // the same one in both.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        assert!(recorded > 300 && replays > 20, "{recorded} recorded, {replays} replays");
        for t in &tracks {
            assert_eq!(memory.listed(t).len(), 10, "track {t} is full");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn edges_sharing_one_redis_see_each_others_peers_and_replays_and_entries_expire() {
        if !have_redis() {
            return;
        }
        let redis = Redis::start();
        let cfg = TrackerConfig { ttl: Duration::from_millis(1_500), ..TrackerConfig::default() };
        let a = SharedTracker::new(&SharedConfig::new(redis.url()), &cfg).unwrap();
        let b = SharedTracker::new(&SharedConfig::new(redis.url()), &cfg).unwrap();
        let track = TrackId::parse("t").unwrap();
        let ann = verified("seeder", &[&track], 5_000);
        let source = IpAddr::from([198, 51, 100, 7]);
        assert_eq!(a.record(source, &ann).await.unwrap(), Recorded::Yes);
        let listed = b.peers(&track).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].1.peer_id, "seeder");
        assert_eq!(listed[0].1.addrs, ann.addrs);
        // The same announce sent to the other edge is a replay there too; a newer one is not.
        assert_eq!(b.record(source, &ann).await.unwrap(), Recorded::Replay);
        assert_eq!(b.record(source, &verified("seeder", &[&track], 4_999)).await.unwrap(), Recorded::Replay);
        assert_eq!(b.record(source, &verified("seeder", &[&track], 5_001)).await.unwrap(), Recorded::Yes);
        // Another prefix is another tracker in the same Redis.
        let other =
            SharedTracker::new(&SharedConfig { prefix: "other:".into(), ..SharedConfig::new(redis.url()) }, &cfg)
                .unwrap();
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
        assert_eq!(s.record(from(1), &verified("a", &[&t], 1)).await.unwrap(), Recorded::Yes);
        assert_eq!(s.record(from(2), &verified("b", &[&t], 1)).await.unwrap(), Recorded::Yes);
        // A third peer while two live ones fill the table; a known one may announce again.
        assert_eq!(s.record(from(3), &verified("c", &[&t], 1)).await.unwrap(), Recorded::Full);
        assert_eq!(s.record(from(1), &verified("a", &[&t, &u], 2)).await.unwrap(), Recorded::Yes);
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
            Recorded::Yes
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
            let started = std::time::Instant::now();
            let e = s.peers(&track).await.unwrap_err();
            assert!(matches!(e, SharedError::Redis(_) | SharedError::Timeout(_)), "{url}: {e:?}");
            assert!(e.is_retryable());
            // Bounded by the time limit: an upper bound only a stuck call would break.
            assert!(started.elapsed() < Duration::from_secs(5), "{url}: {:?}", started.elapsed());
        }
    }

    #[test]
    fn a_failure_rests_then_one_call_probes() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut h = Health::default();
        assert!(h.may_call(t0).is_ok() && h.is_up());
        assert_eq!(h.outcome(false, t0), Change::Down);
        assert_eq!(h.may_call(ms(400)), Err(Duration::from_millis(600)));
        // At the end of the rest one call probes; the others rest on while it runs.
        assert!(h.may_call(ms(1_000)).is_ok());
        assert!(h.may_call(ms(1_010)).is_err());
        assert_eq!(h.outcome(false, ms(1_100)), Change::Same);
        assert!(h.may_call(ms(2_000)).is_err());
        assert!(h.may_call(ms(2_100)).is_ok());
        assert_eq!(h.outcome(true, ms(2_105)), Change::Up);
        assert!(h.is_up() && h.may_call(ms(2_106)).is_ok());
        assert_eq!(h.outcome(true, ms(2_107)), Change::Same);
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
}
