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
use std::sync::{Arc, Mutex, PoisonError};

use self::conn::{Conn, Target};
use self::keys::{Bucket, Keys};
use super::{TrackerConfig, Verified};

mod conn;
mod health;
pub mod keys;

pub use self::health::{Change, Health};

/// How an edge reaches the shared tracker.
#[derive(Debug, Clone)]
pub struct SharedConfig {
    /// `redis://[USER:PASSWORD@]HOST[:PORT][/DB]` or `rediss://…` (TLS): one Redis;
    /// `redis+cluster://[USER:PASSWORD@]HOST:PORT[,HOST:PORT…]` or `rediss+cluster://…`: a
    /// Redis Cluster, from any of its nodes.
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
    /// A key prefix with `{` or `}`, which a cluster would take for a hash tag (at start;
    /// not retryable).
    #[error("the key prefix {0:?} has a brace, which a Redis Cluster takes for a hash tag")]
    Prefix(String),
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
        !matches!(self, Self::Config(_) | Self::Ca(..) | Self::Prefix(_))
    }
}

/// What the shared tracker did with an announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Recorded, but for these held tracks (`plenty`): their lists are full.
    Yes(Vec<TrackId>),
    /// A replay: this announce, or a newer one of the peer, is recorded (by any edge).
    Replay,
    /// A new peer while the tracker holds as many live peers as it may.
    Full,
}

/// A track's live peer as Redis lists it: when an announce last named it (ms on Redis's clock)
/// and its record.
pub type Listed = (u64, PeerRecord);

/// The connection to the shared tracker and its scripts. Cheap to clone.
#[derive(Clone)]
pub struct SharedTracker {
    /// The connection, replaced after a call that timed out: a connection whose peer went
    /// silent (a host gone, a partition) is not noticed by the client until TCP gives up.
    conn: Arc<Mutex<Conn>>,
    target: Target,
    keys: Keys,
    max_peers: usize,
    max_tracks: usize,
    record: Arc<redis::Script>,
    peers: Arc<redis::Script>,
    timeout: Duration,
    ttl_ms: u64,
    held_ttl_ms: u64,
    per_track: usize,
    per_network: usize,
}

impl std::fmt::Debug for SharedTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedTracker").field("keys", &self.keys).field("timeout", &self.timeout).finish()
    }
}

/// Checks that `url` is a Redis or Redis Cluster URL the client takes, without connecting
/// (for `--tracker`).
///
/// # Errors
/// The client's reason.
pub fn check_url(url: &str) -> Result<(), SharedError> {
    match conn::cluster_nodes(url) {
        Some(Ok(nodes)) => nodes.iter().try_for_each(|n| redis::Client::open(n.as_str()).map(drop)),
        Some(Err(why)) => Err(redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, why))),
        None => redis::Client::open(url).map(drop),
    }
    .map_err(SharedError::Config)
}

impl SharedTracker {
    /// A tracker in the Redis (or Redis Cluster) at `shared.url`, with the limits of `limits`.
    /// Connects lazily: an edge starts (and serves chunks) with Redis down.
    ///
    /// # Errors
    /// [`SharedError::Config`] for a URL that is not a Redis URL, [`SharedError::Ca`] for an
    /// unreadable `--ca` file, [`SharedError::Prefix`] for a prefix a cluster cannot take.
    pub fn new(shared: &SharedConfig, limits: &TrackerConfig) -> Result<Self, SharedError> {
        let tls = shared.url.starts_with("rediss");
        if tls {
            chorus_http::tls::install_default_provider();
        }
        let roots = if tls && !shared.ca_files.is_empty() {
            let mut pem = Vec::new();
            for f in &shared.ca_files {
                pem.extend(std::fs::read(f).map_err(|e| SharedError::Ca(f.clone(), e))?);
                pem.push(b'\n');
            }
            Some(pem)
        } else {
            None
        };
        let target = Target::new(&shared.url, roots, shared.timeout).map_err(SharedError::Config)?;
        if target.is_cluster() && shared.prefix.contains(['{', '}']) {
            // Its braces would be taken for the hash tag that keeps a script's keys together.
            return Err(SharedError::Prefix(shared.prefix.clone()));
        }
        let conn = target.connect().map_err(SharedError::Config)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            keys: Keys::new(shared.prefix.clone(), target.is_cluster()),
            target,
            max_peers: limits.max_peers,
            max_tracks: limits.max_tracks,
            record: Arc::new(redis::Script::new(include_str!("record.lua"))),
            peers: Arc::new(redis::Script::new(include_str!("peers.lua"))),
            timeout: shared.timeout,
            ttl_ms: u64::try_from(limits.ttl.as_millis()).unwrap_or(u64::MAX),
            held_ttl_ms: u64::try_from(limits.held_ttl.as_millis()).unwrap_or(u64::MAX),
            per_track: limits.per_track,
            per_network: limits.per_network,
        })
    }

    /// The time limit of one call.
    #[must_use]
    pub const fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the tracker is a Redis Cluster.
    #[must_use]
    pub const fn is_cluster(&self) -> bool {
        self.target.is_cluster()
    }

    fn conn(&self) -> Conn {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Records `ann`, verified, from `source`: in one call on one Redis; on a cluster one call
    /// on the peer's bucket and then, when it recorded, one per bucket of the announce's tracks,
    /// at once (keys.rs), each keeping the peer's addresses beside the tracks.
    ///
    /// # Errors
    /// [`SharedError`] when Redis does not answer in time or fails.
    pub async fn record(&self, source: IpAddr, ann: &Verified) -> Result<Recorded, SharedError> {
        let addrs = serde_json::to_string(ann.addrs()).unwrap_or_else(|_| "[]".into());
        let net = super::network(source).to_string();
        let content = format!("{:016x}", ann.content());
        let (max_peers, max_tracks) = (self.keys.per_bucket(self.max_peers), self.keys.per_bucket(self.max_tracks));
        // How each track is named: played, held or dropped (record.lua).
        let kinds: std::collections::HashMap<&TrackId, char> = ann
            .tracks()
            .iter()
            .map(|t| (t, 'p'))
            .chain(ann.held().iter().map(|t| (t, 'h')))
            .chain(ann.dropped().iter().map(|t| (t, 'd')))
            .rev()
            .collect();
        let call = |mode: &str, tracks: &[&TrackId]| {
            let mut call = self.record.prepare_invoke();
            if mode.contains('p') {
                call.key(self.keys.peer(ann.peer_id())).key(self.keys.peers(self.keys.bucket(ann.peer_id())));
            }
            if let Some(first) = tracks.first() {
                call.key(self.keys.tracks(self.keys.bucket(first.as_str())));
            }
            for t in tracks {
                call.key(self.keys.track(t)).key(self.keys.networks(t));
                if mode.contains('a') {
                    call.key(self.keys.addresses(t));
                }
            }
            call.arg(mode)
                .arg(ann.peer_id())
                .arg(&addrs)
                .arg(ann.timestamp())
                .arg(&content)
                .arg(&net)
                .arg(self.ttl_ms)
                .arg(self.held_ttl_ms)
                .arg(self.per_track)
                .arg(self.per_network)
                .arg(max_peers)
                .arg(max_tracks);
            for t in tracks {
                call.arg(format!("{}{t}", kinds.get(t).copied().unwrap_or('p')));
            }
            call
        };
        // Each track once (a track both played and held is recorded as played, which keeps
        // the later end of the two).
        let mut named: Vec<TrackId> = Vec::new();
        for t in ann.tracks().iter().chain(ann.held()).chain(ann.dropped()) {
            if !named.contains(t) {
                named.push(t.clone());
            }
        }
        let groups = self.keys.by_bucket(&named);
        let mut conn = self.conn();
        let first = if self.keys.cluster() {
            call("p", &[])
        } else {
            let all: Vec<&TrackId> = groups.iter().flat_map(|(_, ts)| ts.iter().copied()).collect();
            call(if all.is_empty() { "p" } else { "pt" }, &all)
        };
        let answer: Vec<redis::Value> = self.within(first.invoke_async(&mut conn)).await?;
        let mut plenty = match parse_recorded(&answer)? {
            (1, plenty) => plenty,
            (0, _) => return Ok(Recorded::Replay),
            (2, _) => return Ok(Recorded::Full),
            _ => return Err(SharedError::BadAnswer("not 0, 1 or 2")),
        };
        if self.keys.cluster() && !groups.is_empty() {
            let calls: Vec<_> = groups.iter().map(|(_, tracks)| call("ta", tracks)).collect();
            let runs = calls.iter().map(|c| {
                let mut conn = conn.clone();
                async move { c.invoke_async::<Vec<redis::Value>>(&mut conn).await }
            });
            for answer in self.within(async { futures_util::future::try_join_all(runs).await }).await? {
                plenty.extend(parse_recorded(&answer)?.1);
            }
        }
        Ok(Recorded::Yes(plenty))
    }

    /// Drops each (peer, track) entry of `gone` (their source went over its budget).
    ///
    /// # Errors
    /// [`SharedError`] when Redis does not answer in time or fails.
    pub async fn forget(&self, gone: &[(String, TrackId)]) -> Result<(), SharedError> {
        // One pipeline per bucket: a cluster takes a pipeline on one slot only.
        let mut pipes: std::collections::BTreeMap<Bucket, redis::Pipeline> = std::collections::BTreeMap::new();
        for (peer, track) in gone {
            let pipe = pipes.entry(self.keys.bucket(track.as_str())).or_insert_with(redis::pipe);
            pipe.cmd("ZREM").arg(self.keys.track(track)).arg(peer).ignore();
            pipe.cmd("HDEL").arg(self.keys.networks(track)).arg(peer).ignore();
            if self.keys.cluster() {
                pipe.cmd("HDEL").arg(self.keys.addresses(track)).arg(peer).ignore();
            }
        }
        let conn = self.conn();
        let runs = pipes.values().map(|p| {
            let mut conn = conn.clone();
            async move { p.query_async::<()>(&mut conn).await }
        });
        self.within(async { futures_util::future::try_join_all(runs).await }).await.map(drop)
    }

    /// The live peers of `track`, newest first, in one call (on one slot, on a cluster).
    ///
    /// # Errors
    /// [`SharedError`] when Redis does not answer in time, fails, or answers out of shape.
    pub async fn peers(&self, track: &TrackId) -> Result<Vec<Listed>, SharedError> {
        let mut call = self.peers.prepare_invoke();
        call.key(self.keys.track(track)).key(self.keys.networks(track)).arg(self.ttl_ms).arg(self.held_ttl_ms);
        if self.keys.cluster() {
            call.key(self.keys.addresses(track)).arg("");
        } else {
            call.arg(self.keys.peer_prefix(self.keys.bucket("")));
        }
        let mut conn = self.conn();
        let flat: Vec<String> = self.within(call.invoke_async(&mut conn)).await?;
        parse_listed(&flat)
    }

    /// Runs `call` within the time limit.
    async fn within<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, SharedError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => r.map_err(SharedError::Redis),
            Err(_) => {
                // The next call gets a new connection (made in the background).
                if let Ok(fresh) = self.target.connect() {
                    *self.conn.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
                }
                Err(SharedError::Timeout(self.timeout))
            }
        }
    }
}

/// Reads what `record.lua` returns: its status, then the held tracks it did not list.
fn parse_recorded(answer: &[redis::Value]) -> Result<(i64, Vec<TrackId>), SharedError> {
    let bad = || SharedError::BadAnswer("not a status and track ids");
    let (first, rest) = answer.split_first().ok_or_else(bad)?;
    let status: i64 = redis::from_redis_value(first.clone()).map_err(|_| bad())?;
    let plenty = rest
        .iter()
        .map(|v| {
            redis::from_redis_value::<String>(v.clone()).ok().and_then(|t| TrackId::parse(&t).ok()).ok_or_else(bad)
        })
        .collect::<Result<_, _>>()?;
    Ok((status, plenty))
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
mod tests;
