//! The task behind a [`crate::Track`]: runs the scheduler, carries out its actions (requests
//! to the local cache, edges and peers), verifies, caches, and hands segments over in order
//! through its [`Playout`].
//!
//! Every chunk is checked against its id before it is used or cached. A wrong chunk is counted
//! as rejected and its source penalised (an edge is avoided for a while, a peer banned) and the
//! chunk is fetched again elsewhere. When the last segment has been handed over, a QoE beacon
//! goes to the edge.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_core::api::QoeBeacon;
use chorus_core::protect::Iv;
use chorus_core::route::Route;
use chorus_core::url::BaseUrl;
use chorus_core::{ChunkId, RenditionId, TrackId};
use chorus_peer::{Peer, PeerId};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::dials::Open;
use crate::edges::{Edge, Tally};
use crate::error::FetchError;
use crate::fetch::{Came, ChunkSource, Fetcher, Got, Rejected};
use crate::p2p::PeerNews;
use crate::playout::Playout;
use crate::refresh::{PeerRefresh, TICK};
use crate::remembered::Memory;
use crate::scheduler::{Action, Scheduler, SourceId, SourceKind};
use crate::summary::{Summary, millis};
use crate::track::{Control, Delivery, DriverEnds, Segment, Source};

/// One rendition as the driver uses it.
pub(crate) struct Rung {
    pub(crate) id: RenditionId,
    pub(crate) init: Option<(ChunkId, Bytes, Source)>,
    pub(crate) segments: Vec<ChunkId>,
    /// Each segment's IV, in a protected track (decrypted as it is handed over).
    pub(crate) ivs: Vec<Option<Iv>>,
}

/// A chunk fetched outside the scheduler (init chunks, the speculative first segment).
pub(crate) struct OneChunk {
    pub(crate) bytes: Bytes,
    pub(crate) source: Source,
    pub(crate) rejected: u64,
}

/// A chunk requested ahead of the scheduler, with the time the request took.
pub(crate) type Early = JoinHandle<(Result<OneChunk, FetchError>, Duration)>;

/// The outcome of one chunk request.
struct Fetched {
    generation: u64,
    segment: usize,
    rung: usize,
    source: SourceId,
    result: Result<Got, Rejected>,
}

/// The driver of one track handle (see the module docs).
pub(crate) struct Driver {
    /// The peer node, and which scheduler sources are which peers.
    pub(crate) peer: Option<Arc<Peer>>,
    pub(crate) peer_of: HashMap<usize, PeerId>,
    pub(crate) found: mpsc::UnboundedReceiver<PeerNews>,
    pub(crate) found_tx: mpsc::UnboundedSender<PeerNews>,
    /// How chunks are fetched (and the token, for the beacon).
    pub(crate) net: Fetcher,
    /// What the client learns of the network (the throughput estimate, kept for the next track).
    pub(crate) memory: Arc<Memory>,
    /// Segments fetched ahead of the reader.
    pub(crate) read_ahead: usize,
    /// The cache directory whose tracks are announced as the track plays (none: no announces).
    pub(crate) announce_from: Option<PathBuf>,
    pub(crate) track: TrackId,
    pub(crate) edges: Vec<Arc<Edge>>,
    pub(crate) rungs: Vec<Rung>,
    pub(crate) sched: Scheduler,
    pub(crate) starts: Vec<Duration>,
    pub(crate) ends: DriverEnds,
    pub(crate) summary: Summary,
    /// Requests to edges by HTTP version, for the summary.
    pub(crate) tally: Arc<Tally>,
    pub(crate) started: Instant,
    pub(crate) playout: Playout<(Bytes, Source)>,
    /// A preload: no QoE beacon (nothing was played).
    pub(crate) preload: bool,
    /// The first segment's chunk, requested while the track was being opened.
    pub(crate) speculative: Option<(chorus_core::ChunkId, Early)>,
    /// A protected track's content key: segments are verified and cached as the ciphertext
    /// they are, and decrypted only as they are handed over.
    pub(crate) key: Option<chorus_core::protect::ContentKey>,
}

impl Driver {
    pub(crate) async fn run(mut self) {
        let n = self.sched.len();
        let read_ahead = self.read_ahead;
        let mut tasks: JoinSet<Fetched> = JoinSet::new();
        let mut handles: HashMap<(usize, usize), AbortHandle> = HashMap::new();
        let mut beacon: Option<JoinHandle<()>> = None;
        let tx = self.ends.tx.clone();
        let mut sid_of: HashMap<PeerId, SourceId> = HashMap::new();
        let mut refresh = tokio::time::interval_at(Instant::now() + TICK, TICK);
        // The first search was started when the track opened.
        let mut searches = PeerRefresh::new();
        searches.should_search(Instant::now().into_std(), 0, 0);
        let mut announced_start = false;
        loop {
            self.sched.set_limit(self.playout.fetch_limit(read_ahead));
            let now = Instant::now().into_std();
            for a in self.sched.poll(now) {
                match a {
                    Action::Fetch { segment, rendition, source, .. } => {
                        let id = self.rungs[rendition].segments[segment];
                        if !self.playout.attempt(segment, !self.peer_of.contains_key(&source.0)) {
                            let _ = tx.send(Delivery::Failed(FetchError::Chunk(id))).await;
                            return;
                        }
                        let handle = self.spawn_fetch(&mut tasks, segment, rendition, source);
                        handles.insert((segment, source.0), handle);
                    }
                    Action::Cancel { segment, source } => {
                        if let Some(h) = handles.remove(&(segment, source.0)) {
                            h.abort();
                        }
                    }
                }
            }
            if self.playout.at_end() {
                self.publish();
                if beacon.is_none() && !self.preload {
                    // Detached, so that dropping the handle right after the end does not lose it.
                    beacon = Some(tokio::spawn(self.beacon()));
                }
                // The announce at the first segment already named this track (and the
                // client's periodic re-announce keeps it listed): another one now would only
                // load the tracker. A track none of which was handed over is announced now.
                if !announced_start {
                    self.announce();
                }
                if tx.send(Delivery::End(self.playout.generation())).await.is_err() {
                    return;
                }
                self.playout.end_sent();
            }
            let deliverable = self.playout.deliverable();
            let wake = self.sched.next_wakeup(now).map(Instant::from_std);
            tokio::select! {
                c = self.ends.control.recv() => match c {
                    None => {
                        // The handle is finished with (or gone): let the beacon land, then stop.
                        if let Some(b) = beacon.take() {
                            let _ = b.await;
                        }
                        return;
                    }
                    Some(Control::Seek { generation, segment }) => {
                        tasks.abort_all();
                        handles.clear();
                        let _ = self.sched.seek(Instant::now().into_std(), segment);
                        self.playout.seek(generation, segment);
                        self.summary.seeks += 1;
                    }
                },
                permit = tx.reserve(), if deliverable => {
                    let Ok(permit) = permit else { return };
                    let Some(out) = self.playout.take() else { continue };
                    let (data, source) = out.payload;
                    let rung = &self.rungs[out.rung];
                    let init = rung.init.as_ref().filter(|_| out.with_init).map(|(_, b, from)| {
                        self.summary.bytes_by_source.add(from, b.len());
                        b.clone()
                    });
                    self.summary.bytes_by_source.add(&source, data.len());
                    if self.summary.startup_ms == 0 && self.summary.segments_by_rendition.is_empty() {
                        self.summary.startup_ms = millis(self.started.elapsed()).max(1);
                    }
                    let rendition = rung.id.clone();
                    *self.summary.segments_by_rendition.entry(rendition.to_string()).or_default() += 1;
                    self.summary.bytes_total += data.len() as u64 + init.as_ref().map_or(0, |b| b.len() as u64);
                    let start = self.starts[out.index];
                    let duration = self.starts.get(out.index + 1).copied().unwrap_or_else(|| self.sched.media_start(n)) - start;
                    let data = match (&self.key, self.rungs[out.rung].ivs.get(out.index).copied().flatten()) {
                        (Some(key), Some(iv)) => match chorus_core::protect::decrypt(key, &iv, &data) {
                            Ok(plain) => Bytes::from(plain),
                            Err(e) => {
                                // The permit holds the channel's one slot: the failure goes through it.
                                permit.send(Delivery::Failed(FetchError::Decrypt(self.track.clone(), e)));
                                return;
                            }
                        },
                        _ => data,
                    };
                    let segment = Segment { index: out.index, start, duration, rendition, init, data, source };
                    permit.send(Delivery::Segment(self.playout.generation(), segment));
                    self.publish();
                    if !announced_start {
                        // Listeners a little behind on this track can ask us from now on.
                        announced_start = true;
                        self.announce();
                    }
                },
                news = self.found.recv() => {
                    let Some(PeerNews::Holds(peer_id, held)) = news else {
                        // The first search is over (every candidate answered or ran out of time).
                        self.sched.set_awaiting_peers(false);
                        continue;
                    };
                    let sid = *sid_of.entry(peer_id).or_insert_with(|| {
                        self.summary.peers += 1;
                        self.sched.add_source(SourceKind::Peer)
                    });
                    for (r, rung) in self.rungs.iter().enumerate() {
                        for (k, id) in rung.segments.iter().enumerate() {
                            if held.contains(id) {
                                self.sched.set_holds(sid, k, r);
                            }
                        }
                    }
                    self.peer_of.insert(sid.0, peer_id);
                    self.publish();
                },
                _ = refresh.tick(), if self.peer.is_some() && self.playout.playing() => {
                    // Who holds what changes as other listeners play: ask again, unless enough
                    // peers work, and less often while searches find no one new.
                    let now = Instant::now().into_std();
                    if !searches.should_search(now, self.sched.working_peers(now), sid_of.len()) {
                        continue;
                    }
                    if let Some(p) = self.peer.clone() {
                        let (net, track, edges, tx) =
                            (self.net.clone(), self.track.clone(), self.edges.clone(), self.found_tx.clone());
                        let open = if self.preload { Open::Preload } else { Open::Play };
                        tokio::spawn(async move { crate::p2p::peers_holding(&net, &p, &track, open, &edges, &tx).await });
                    }
                },
                j = tasks.join_next(), if !tasks.is_empty() => {
                    let Some(Ok(f)) = j else { continue };
                    if !self.playout.wanted(f.generation, f.segment) {
                        continue;
                    }
                    handles.remove(&(f.segment, f.source.0));
                    let now = Instant::now().into_std();
                    match f.result {
                        Ok(got) => {
                            let source = if got.came == Came::Cache {
                                Source::Cache
                            } else {
                                match self.peer_of.get(&f.source.0) {
                                    Some(p) => Source::Peer(p.to_string()),
                                    None => Source::Edge(self.edges.get(f.source.0).map(|e| e.base().to_string()).unwrap_or_default()),
                                }
                            };
                            self.summary.chunks_verified += 1;
                            let len = got.bytes.len() as u64;
                            for a in self.sched.on_complete(now, f.segment, f.source, len, got.elapsed) {
                                if let Action::Cancel { segment, source } = a
                                    && let Some(h) = handles.remove(&(segment, source.0))
                                {
                                    h.abort();
                                }
                            }
                            self.playout.completed(f.segment, f.rung, (got.bytes, source));
                        }
                        Err(Rejected::WrongBytes) => {
                            self.summary.chunks_rejected += 1;
                            if self.peer_of.contains_key(&f.source.0) {
                                self.sched.ban(now, f.source); // the peer node has cut it off too
                            } else {
                                self.sched.on_failed(now, f.segment, f.source);
                            }
                        }
                        Err(Rejected::Failed) => self.sched.on_failed(now, f.segment, f.source),
                        Err(Rejected::Unusable) => {
                            self.sched.on_failed(now, f.segment, f.source);
                            self.sched.ban(now, f.source);
                        }
                        Err(Rejected::Cache(e)) => {
                            let _ = tx.send(Delivery::Failed(e.into())).await;
                            return;
                        }
                    }
                    self.publish();
                },
                () = async { match wake { Some(w) => tokio::time::sleep_until(w).await, None => std::future::pending().await } } => {},
            }
        }
    }

    /// Starts one chunk request: the answer to the speculative first request when it is this
    /// chunk (stored in the cache as it is taken), else [`Fetcher::chunk`] from the peer or edge
    /// `source` is.
    fn spawn_fetch(
        &mut self,
        tasks: &mut JoinSet<Fetched>,
        segment: usize,
        rung: usize,
        source: SourceId,
    ) -> AbortHandle {
        let generation = self.playout.generation();
        let id = self.rungs[rung].segments[segment];
        let early = match self.speculative.take() {
            Some((s, early)) if s == id => Some(early),
            other => {
                self.speculative = other;
                None
            }
        };
        let from = match (&self.peer, self.peer_of.get(&source.0)) {
            (Some(peer), Some(peer_id)) => Some(ChunkSource::Peer(peer.clone(), *peer_id)),
            _ => self.edges.get(source.0).cloned().map(ChunkSource::Edge),
        };
        let (net, tally) = (self.net.clone(), self.tally.clone());
        tasks.spawn(async move {
            let result = match early {
                Some(early) => match early.await {
                    Ok((Ok(one), elapsed)) => {
                        let came = if one.source == Source::Cache { Came::Cache } else { Came::Source(0) };
                        let stored = if came == Came::Cache { Ok(()) } else { net.keep(id, one.bytes.clone()).await };
                        stored.map(|()| Got { bytes: one.bytes, elapsed, came, rejected: 0 })
                    }
                    _ => Err(Rejected::Failed),
                },
                // Offline and not in the cache, there is no edge to ask: the cache alone.
                None => net.chunk(id, from.as_slice(), true, &tally).await,
            };
            Fetched { generation, segment, rung, source, result }
        })
    }

    fn publish(&mut self) {
        let st = self.sched.stats();
        self.summary.stalls = st.stalls;
        self.summary.stall_ms = millis(st.stalled);
        self.summary.hedges = st.hedges;
        self.summary.failures = st.failures;
        self.summary.buffer_ms = millis(self.sched.buffered(Instant::now().into_std()));
        if let Some((r, _)) = self.summary.segments_by_rendition.iter().max_by_key(|(r, n)| (**n, (*r).clone())) {
            self.summary.rendition.clone_from(r);
        }
        if let Some(bps) = self.sched.throughput_bps() {
            let now = crate::remembered::unix_now();
            self.memory.change(|r| r.remember_throughput(bps, now));
        }
        let counts = self.tally.counts();
        self.summary.requests_by_protocol = counts.iter().map(|(p, n)| (p.as_str().to_owned(), *n)).collect();
        // Most requests wins; on a tie the newer version (HTTP/3 over HTTP/2 over HTTP/1.1).
        self.summary.protocol = counts
            .iter()
            .enumerate()
            .max_by_key(|(i, (_, n))| (*n, *i))
            .map_or_else(|| "cache".to_owned(), |(_, (p, _))| p.as_str().to_owned());
        self.ends.summary.send_replace(self.summary.clone());
    }

    /// Tells the trackers at once that this client plays its track, now that it holds some of
    /// it (best effort, detached); the periodic rounds name it, and the rest of the cache, from
    /// then on.
    fn announce(&self) {
        let (Some(peer), Some(_)) = (self.peer.clone(), self.announce_from.as_ref()) else { return };
        let net = self.net.clone();
        let edges: Vec<BaseUrl> = self.edges.iter().map(|e| e.base()).collect();
        let track = self.track.clone();
        tokio::spawn(async move {
            chorus_peer::tracker::announce_playing(&net.http, &peer, &edges, net.token.as_deref(), &track).await;
        });
    }

    /// The QoE beacon (best effort): to the first edge that takes it.
    fn beacon(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let s = &self.summary;
        let beacon = QoeBeacon {
            track_id: self.track.clone(),
            startup_ms: s.startup_ms,
            stalls: s.stalls.into(),
            stall_ms: s.stall_ms,
            bytes: chorus_core::api::QoeBytes {
                edge: s.bytes_by_source.edge,
                peer: s.bytes_by_source.peer,
                cache: s.bytes_by_source.cache,
            },
        };
        let body = Bytes::from(serde_json::to_vec(&beacon).unwrap_or_default());
        let (net, edges) = (self.net.clone(), self.edges.clone());
        // The beacon goes after the summary is final: not counted in it.
        let tally = Tally::default();
        async move {
            for e in &edges {
                let mut req =
                    http::Request::post(Route::Qoe.to_string()).header(http::header::CONTENT_TYPE, "application/json");
                if let Some(t) = &net.token {
                    req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
                }
                let Ok(req) = req.body(body.clone()) else { return };
                if matches!(e.send(&net.http, req, &tally).await, Ok(r) if r.status().is_success()) {
                    return;
                }
            }
        }
    }
}
