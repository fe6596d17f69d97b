//! Opening a track: reach the edges, get the verified manifest, fetch every rendition's init
//! chunk (and, alongside, the first segment playback most likely starts with), plan the ladder,
//! and start the track's driver.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_core::manifest::{Manifest, ManifestError};
use chorus_core::protect::{ContentKey, KEY_BYTES};
use chorus_core::route;
use chorus_core::{ChunkId, TrackId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{Client, Plan};
use crate::driver::{Driver, Early, OneChunk, Rung};
use crate::edges::{Edge, Tally};
use crate::error::{EdgeFailure, FetchError};
use crate::fetch::{Came, ChunkSource, Rejected};
use crate::ladder::{self, Switching};
use crate::p2p::PeerNews;
use crate::playout::Playout;
use crate::remembered::unix_now;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::summary::Summary;
use crate::sync::lock;
use crate::track::{Source, Track, TrackInfo};

impl Client {
    /// Reaches every configured edge at once, or reuses the connections of the previous track;
    /// the configured order is kept (the first is the preferred).
    async fn reach_edges(&self) -> Vec<Arc<Edge>> {
        let inner = &self.inner;
        let mut reached: BTreeMap<usize, Arc<Edge>> = BTreeMap::new();
        let mut connecting = JoinSet::new();
        let known = lock(&inner.edges).clone();
        for (i, base) in inner.bases.iter().enumerate() {
            if let Some(e) = known.get(&i).filter(|e| e.reachable()) {
                reached.insert(i, e.clone());
                continue;
            }
            let (inner, base) = (self.inner.clone(), base.clone());
            connecting.spawn(async move { (i, Edge::reach(&inner.net.http, &base, inner.memory.clone()).await) });
        }
        while let Some(j) = connecting.join_next().await {
            if let Ok((i, Some(e))) = j {
                let e = Arc::new(e);
                lock(&inner.edges).insert(i, e.clone());
                reached.insert(i, e);
            }
        }
        reached.into_values().collect()
    }

    pub(crate) async fn open_with(
        &self,
        track: &TrackId,
        switching: Switching,
        plan: Option<Plan>,
    ) -> Result<Track, FetchError> {
        let inner = &self.inner;
        let started = Instant::now();
        let edges = self.reach_edges().await;
        let tally = Arc::new(Tally::default());
        // Where the bitrate starts: the estimate of the last track, or of the last run.
        let estimate = inner.memory.with(|r| r.throughput(unix_now()));
        let manifest = self.manifest(track, &edges, &tally).await?;
        // A protected track's key, before anything else is fetched: without a token that covers
        // the track there is nothing to play, and the listener is told so at once. A preload or
        // a carrier (seeding) only fills the cache with ciphertext: it needs no key.
        let key = match &manifest.protection {
            Some(_) if plan.is_none() && !inner.cfg.carry_only => {
                Some(self.content_key(&manifest, &edges, &tally).await?)
            }
            _ => None,
        };
        let mut summary = Summary { track_id: track.to_string(), ..Summary::default() };

        // The ladder, lowest first, with every init chunk (small; needed to switch).
        let ladder = ladder::sorted(&manifest.renditions);
        if ladder.is_empty() {
            return Err(FetchError::NotFound(track.clone())); // a verified manifest always has one
        }
        let firsts: Vec<ChunkId> = ladder.iter().filter_map(|r| r.segments.first()).map(|s| s.id).collect();
        let cached_start = match &inner.net.cache {
            Some(c) => c.holding(&firsts).into_iter().any(|held| held),
            None => false,
        };
        // The first segment of the rendition playback will most likely start with is fetched
        // alongside the init chunks (not after them): a round trip less to the first sound.
        // Not when the start is planned (a preload), nor when the cache holds the first segment
        // in some rendition (the scheduler takes that one, at no cost).
        let speculative = if plan.is_some() || cached_start {
            None
        } else {
            ladder
                .get(ladder::first_guess(inner.cfg.quality, &ladder, estimate))
                .and_then(|r| r.segments.first())
                .map(|s| s.id)
        };
        let speculative = speculative.map(|id| {
            let (this, edges, tally) = (self.clone(), edges.clone(), tally.clone());
            let early: Early = tokio::spawn(async move {
                let t = Instant::now();
                // Not stored in the cache here: the segment's own fetch stores it when it takes
                // this answer. Stored now, a startup race's other request would find it there
                // and count the edge's bytes as a cache hit.
                let r = this.chunk(&edges, id, false, &tally).await;
                (r, t.elapsed())
            });
            (id, early)
        });
        let mut inits = JoinSet::new();
        for (i, id) in ladder.iter().enumerate().filter_map(|(i, r)| r.init.map(|c| (i, c.id))) {
            let (this, edges, tally) = (self.clone(), edges.clone(), tally.clone());
            inits.spawn(async move { (i, id, this.chunk(&edges, id, true, &tally).await) });
        }
        let mut init_of = BTreeMap::new();
        while let Some(j) = inits.join_next().await {
            let Ok((i, id, fetched)) = j else { continue };
            let got = fetched?;
            summary.chunks_verified += 1;
            summary.chunks_rejected += got.rejected;
            init_of.insert(i, (id, got.bytes, got.source));
        }
        let mut rungs = Vec::with_capacity(ladder.len());
        for (i, r) in ladder.iter().enumerate() {
            if let Some(c) = r.init
                && !init_of.contains_key(&i)
            {
                return Err(FetchError::Chunk(c.id));
            }
            let init = init_of.remove(&i);
            rungs.push(Rung {
                id: r.id.clone(),
                init,
                segments: r.segments.iter().map(|s| s.id).collect(),
                ivs: if key.is_some() { r.segments.iter().map(|s| s.iv).collect() } else { Vec::new() },
            });
        }
        let preferred = ladder::preferred(inner.cfg.quality, rungs.len());
        let configs: Vec<_> =
            rungs.iter().map(|r| r.init.as_ref().and_then(|(_, b, _)| chorus_core::cmaf::audio_config(b))).collect();
        let allowed = ladder::switching_set(switching, &ladder, &configs, preferred);
        let quality = ladder::remap(inner.cfg.quality, &allowed, preferred);
        let ladder_bps: Vec<u64> = allowed.iter().map(|&i| ladder[i].bitrate_bps).collect();
        let segments = ladder::segment_infos(&ladder, &allowed);
        let mut cfg = SchedulerConfig { quality, buffer_ahead: inner.cfg.buffer_ahead, ..SchedulerConfig::default() };
        cfg.abr.start_bps = inner.cfg.start_bps;
        if !inner.cfg.play {
            cfg.buffer_ahead = Duration::from_secs(86_400 * 365);
            cfg.max_inflight = 4;
        }
        let mut sched = Scheduler::new(cfg, ladder_bps, segments, edges.len().max(1), started.into_std());
        sched.set_estimate(estimate);
        if let Some(c) = &inner.net.cache {
            let mut at = Vec::new();
            let mut ids = Vec::new();
            for (j, &i) in allowed.iter().enumerate() {
                for (k, seg) in ladder[i].segments.iter().enumerate() {
                    at.push((k, j));
                    ids.push(seg.id);
                }
            }
            for ((k, j), held) in at.into_iter().zip(c.holding(&ids)) {
                if held {
                    sched.set_cached(k, j);
                }
            }
        }
        // A preload stops after the segments covering `amount`.
        let mut upto = sched.len();
        if let Some(p) = &plan {
            sched.plan_start(p.at.into_std());
            upto = (sched.segment_at(p.amount.saturating_sub(Duration::from_millis(1))) + 1).min(sched.len());
        }
        // Peers are looked for while the start comes from the edge: each one that answers
        // joins the scheduler as it does, so finding them never delays playback.
        let peer = inner.peer().await;
        let (found_tx, found_rx) = mpsc::unbounded_channel();
        if let Some(p) = &peer {
            sched.set_awaiting_peers(true);
            let open = if plan.is_some() { crate::dials::Open::Preload } else { crate::dials::Open::Play };
            let (net, p, track, edges, tx) =
                (inner.net.clone(), p.clone(), track.clone(), edges.clone(), found_tx.clone());
            tokio::spawn(async move {
                crate::p2p::peers_holding(&net, &p, &track, open, &edges, &tx).await;
                let _ = tx.send(PeerNews::Done);
            });
        }
        let starts: Vec<Duration> = (0..sched.len()).map(|i| sched.media_start(i)).collect();
        let info = TrackInfo {
            track_id: track.clone(),
            duration: sched.media_start(sched.len()),
            segments: upto,
            renditions: allowed.iter().map(|&i| rungs[i].id.clone()).collect(),
        };
        let allowed_rungs: Vec<Rung> = {
            let mut by_index: Vec<Option<Rung>> = rungs.into_iter().map(Some).collect();
            allowed.iter().filter_map(|&i| by_index[i].take()).collect()
        };
        let max_attempts = 8 * u32::try_from(edges.len().max(1)).unwrap_or(u32::MAX);
        let (mut handle, ends) = Track::new(info, starts.clone(), summary.clone());
        let driver = Driver {
            peer,
            peer_of: HashMap::new(),
            found: found_rx,
            found_tx,
            net: inner.net.clone(),
            memory: inner.memory.clone(),
            read_ahead: inner.cfg.read_ahead,
            announce_from: inner.cfg.cache.as_ref().map(|(dir, _)| dir.clone()),
            track: track.clone(),
            edges,
            rungs: allowed_rungs,
            sched,
            starts,
            ends,
            summary,
            tally,
            started,
            playout: Playout::new(upto, max_attempts, switching == Switching::Anywhere),
            preload: plan.is_some(),
            speculative,
            key,
        };
        handle.attach(tokio::spawn(driver.run()));
        Ok(handle)
    }

    /// The verified manifest: from the first edge that delivers one that verifies, or with no
    /// edge reachable, the last verified copy in the local cache (checked again).
    async fn manifest(&self, track: &TrackId, edges: &[Arc<Edge>], tally: &Tally) -> Result<Manifest, FetchError> {
        let inner = &self.inner;
        let cached = inner.cfg.cache.as_ref().map(|(dir, _)| dir.join("manifests").join(format!("{track}.json")));
        if edges.is_empty() {
            let offline = match cached {
                Some(p) => tokio::fs::read(p).await.ok(),
                None => None,
            };
            let Some(doc) = offline else {
                return Err(FetchError::Unreachable { tried: inner.cfg.edges.clone() });
            };
            return Ok(Manifest::verify(&doc, &inner.cfg.origin_key)?);
        }
        let mut last = None;
        for e in edges {
            let mut req = inner.net.get(&route::manifest(track));
            if let Some(next) = inner.cfg.next_track.as_ref().and_then(|n| http::HeaderValue::from_str(n.as_str()).ok())
            {
                req.headers_mut().insert("chorus-next-track", next);
            }
            match e.send(&inner.net.http, req, tally).await {
                Ok(r) if r.status() == http::StatusCode::OK => {
                    match Manifest::verify(r.body(), &inner.cfg.origin_key) {
                        // Signed, but another track's: a substitution below the edge.
                        Ok(m) if m.track_id != *track => {
                            last = Some(EdgeFailure::OtherTrack { edge: e.base().to_string(), got: m.track_id });
                        }
                        Ok(m) => {
                            // The bytes as signed, not a re-serialisation: members this version
                            // does not know must still verify offline.
                            if let Some(path) = cached {
                                keep_manifest(path, r.into_body()).await?;
                            }
                            return Ok(m);
                        }
                        Err(e @ (ManifestError::WrongKey { .. } | ManifestError::UnsupportedFormat(_))) => {
                            return Err(e.into());
                        }
                        Err(cause) => last = Some(EdgeFailure::Manifest { edge: e.base().to_string(), cause }),
                    }
                }
                Ok(r) if r.status() == http::StatusCode::NOT_FOUND => return Err(FetchError::NotFound(track.clone())),
                Ok(r) => last = Some(EdgeFailure::Status { edge: e.base().to_string(), status: r.status() }),
                Err(cause) => last = Some(EdgeFailure::Request { edge: e.base().to_string(), cause }),
            }
        }
        Err(last.map_or_else(|| FetchError::Unreachable { tried: inner.cfg.edges.clone() }, FetchError::NoManifest))
    }

    /// The content key of protected track `m`, from the first edge that hands it out. The
    /// client's token goes to edges only, never to peers.
    async fn content_key(&self, m: &Manifest, edges: &[Arc<Edge>], tally: &Tally) -> Result<ContentKey, FetchError> {
        let inner = &self.inner;
        let Some(path) = chorus_core::hls::key_path(m) else {
            return Err(FetchError::NotFound(m.track_id.clone())); // not protected: never called
        };
        let mut refused = None;
        let mut last = None;
        for e in edges {
            match e.send(&inner.net.http, inner.net.get(&path), tally).await {
                Ok(r) if r.status() == http::StatusCode::OK && r.body().len() == KEY_BYTES => {
                    if let Ok(k) = ContentKey::from_slice(r.body()) {
                        return Ok(k);
                    }
                }
                Ok(r) if matches!(r.status(), http::StatusCode::UNAUTHORIZED | http::StatusCode::FORBIDDEN) => {
                    refused = Some(r.status());
                }
                Ok(r) => last = Some(EdgeFailure::Status { edge: e.base().to_string(), status: r.status() }),
                Err(cause) => last = Some(EdgeFailure::Request { edge: e.base().to_string(), cause }),
            }
        }
        if let Some(status) = refused {
            return Err(FetchError::KeyRefused { track: m.track_id.clone(), status });
        }
        Err(match last {
            Some(f) => FetchError::NoKey(m.track_id.clone(), f),
            None => FetchError::Unreachable { tried: inner.cfg.edges.clone() },
        })
    }

    /// One chunk outside the scheduler (init chunks, the speculative first segment): cache,
    /// then each edge in turn; what an edge sends is stored in the cache if `store`.
    pub(crate) async fn chunk(
        &self,
        edges: &[Arc<Edge>],
        id: ChunkId,
        store: bool,
        tally: &Tally,
    ) -> Result<OneChunk, FetchError> {
        let sources: Vec<ChunkSource> = edges.iter().cloned().map(ChunkSource::Edge).collect();
        match self.inner.net.chunk(id, &sources, store, tally).await {
            Ok(got) => {
                let source = match got.came {
                    Came::Cache => Source::Cache,
                    Came::Source(i) => Source::Edge(edges[i].base().to_string()),
                };
                Ok(OneChunk { bytes: got.bytes, source, rejected: got.rejected })
            }
            Err(Rejected::Cache(e)) => Err(FetchError::Cache(e)),
            Err(_) => Err(FetchError::Chunk(id)),
        }
    }
}

/// Keeps a verified manifest beside the cache (written atomically, on the blocking pool), for
/// opening the track when no edge is reachable.
async fn keep_manifest(path: std::path::PathBuf, doc: Bytes) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        chorus_core::fsutil::write_atomic(&path, &doc, 0o644)
    })
    .await
    .map_err(std::io::Error::other)?
}
