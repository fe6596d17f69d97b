//! The client's P2P side: starting its peer node, finding peers that hold a track's chunks
//! (the edges' tracker first, then Kademlia, plus mDNS neighbours), and announcing what its
//! cache holds.

use chorus_core::error::Chain;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::url::BaseUrl;
use chorus_core::{ChunkId, TrackId};
use chorus_http::client::HttpClient;
use chorus_peer::tracker::{Announced, Report, announce_held};
use chorus_peer::{Multiaddr, Peer, PeerId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::edges::Edge;
use crate::fetch::Fetcher;

/// How long one peer search may take, per step (tracker, Kademlia, asking each candidate).
const LOOK: Duration = Duration::from_secs(2);

/// At most this many candidates are dialled and asked per search.
const ASK_AT_MOST: usize = 8;

/// What the peer search tells the driver.
pub(crate) enum PeerNews {
    /// A peer holds these chunks of the track (now; asked again every few seconds).
    Holds(PeerId, HashSet<ChunkId>),
    /// The first search is over: edges need no longer hold back.
    Done,
}

/// The client's peer node as it is to start: its settings and the cache directory it serves
/// from (none: it serves nothing).
pub(crate) struct Node {
    pub(crate) cfg: chorus_peer::PeerConfig,
    pub(crate) dir: Option<PathBuf>,
}

/// What announcing needs: the HTTP client, the edges, and the token for their trackers.
pub(crate) struct Announcer {
    pub(crate) http: HttpClient,
    pub(crate) edges: Vec<BaseUrl>,
    pub(crate) token: Option<Arc<str>>,
}

/// Starts the client's peer node. With a cache directory it serves what the directory holds,
/// keeps its identity there (`peer.key`), and re-announces every
/// [`chorus_core::api::REANNOUNCE`] while the node lives; without one it only fetches. `None`
/// when the node could not start.
pub(crate) async fn start(node: Node, announcer: Announcer) -> Option<Arc<Peer>> {
    let store: Arc<dyn chorus_peer::Store> = match &node.dir {
        Some(dir) => Arc::new(chorus_peer::DirStore::new(dir)),
        None => Arc::new(chorus_peer::NoChunks), // no cache directory: it serves nothing
    };
    let key = match &node.dir {
        Some(dir) => {
            let path = dir.join("peer.key");
            tokio::task::spawn_blocking(move || chorus_peer::load_or_create_identity(&path).ok()).await.ok().flatten()
        }
        None => None,
    };
    let p = match Peer::start(node.cfg, store, key, &prometheus::Registry::new()) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            tracing::warn!(error = %Chain(&e), "peer node did not start; fetching from edges only");
            return None;
        }
    };
    // A long-lived client keeps its announcements fresh (and withdraws what was evicted)
    // until it is dropped.
    if let Some(dir) = node.dir {
        let weak = Arc::downgrade(&p);
        let stopped = p.stopped();
        tokio::spawn(async move {
            // The rounds end with the node, mid-announce included.
            let Announcer { http, edges, token } = announcer;
            let store: Arc<dyn chorus_peer::Store> = Arc::new(chorus_peer::DirStore::new(&dir));
            // A cache from earlier days is named at once; an empty one first when it holds
            // something (its first track announces itself as played meanwhile).
            let listing = store.clone();
            let warm = tokio::task::spawn_blocking(move || !listing.tracks().is_empty()).await.unwrap_or(false);
            let (http, store, edges, token, weak) = (&http, &store, &edges, token.as_deref(), &weak);
            chorus_peer::tracker::every_reannounce(warm, stopped, Announced::default(), |announced| async move {
                let peer = weak.upgrade()?;
                Some(announce_held(http, &peer, store.clone(), edges, token, announced, Report::Quiet).await)
            })
            .await;
        });
    }
    Some(p)
}

/// A tracker's answer reordered so that its newest half and its random sample of older peers
/// take turns (docs/protocol.md §3.3 answers the newest first, then the sample): a flood of
/// recent announces then cannot take every dial before a steady seeder from the sample.
fn newest_and_sampled_alternately<T>(answer: Vec<T>) -> Vec<T> {
    let mut sampled = answer;
    let newest: Vec<T> = sampled.drain(..sampled.len().div_ceil(2)).collect();
    let mut sampled = sampled.into_iter();
    let mut out = Vec::with_capacity(newest.len() * 2);
    for c in newest {
        out.push(c);
        out.extend(sampled.next());
    }
    out
}

/// Peers that hold chunks of `track`, sent to `found` with what they hold as each answers:
/// candidates from the edges' tracker (one round trip), else Kademlia providers, plus peers
/// found on the local network; at most [`ASK_AT_MOST`] are dialled and asked, in parallel, for
/// at most [`LOOK`].
pub(crate) async fn peers_holding(
    net: &Fetcher,
    p: &Arc<Peer>,
    track: &TrackId,
    open: crate::dials::Open,
    edges: &[Arc<Edge>],
    found: &mpsc::UnboundedSender<PeerNews>,
) {
    let token = net.token.as_deref();
    let mut cands: Vec<(PeerId, Vec<Multiaddr>)> = Vec::new();
    for e in edges {
        if let Ok(Ok(answer)) =
            tokio::time::timeout(LOOK, chorus_peer::tracker::peers(&net.http, &e.base(), track, token)).await
        {
            p.add_relays(answer.relays);
            // The tracker may already list this node (it announces once its first segment is
            // in): it is no candidate, and must not stand in for a Kademlia search.
            cands = newest_and_sampled_alternately(answer.peers);
            cands.retain(|(id, _)| *id != p.peer_id());
            break;
        }
    }
    if cands.is_empty()
        && let Ok(Ok(found)) = tokio::time::timeout(LOOK, p.find_providers(track.clone())).await
    {
        cands = found;
    }
    tracing::debug!(%track, candidates = cands.len(), "peers from the tracker or Kademlia");
    for id in p.discovered() {
        if !cands.iter().any(|(c, _)| *c == id) {
            cands.push((id, Vec::new()));
        }
    }
    cands.retain(|(id, _)| *id != p.peer_id());
    cands.truncate(ASK_AT_MOST);
    // Listed addresses go through the dial guard: a budget of new peer dials per track, at most
    // two addresses tried per peer, backoff per address, and entries proven false are dropped
    // (crate::dials). Peers already connected cost nothing.
    let connected: std::collections::HashSet<PeerId> = p.connected().await.unwrap_or_default().into_iter().collect();
    let mut asking = JoinSet::new();
    for (id, listed) in cands {
        let addrs: Vec<Multiaddr> = if connected.contains(&id) {
            Vec::new()
        } else {
            net.dials.lock().usable(id, &listed, std::time::Instant::now())
        };
        let (p, track, dials) = (p.clone(), track.clone(), net.dials.clone());
        asking.spawn(async move {
            // The budget is charged as the dial starts, once for the peer.
            if !addrs.is_empty() && !dials.lock().admit(&track, open, id, &addrs, std::time::Instant::now()) {
                tracing::debug!(%track, peer = %id, "no dial: the track's budget of new dials is spent");
                return None;
            }
            let ask = async {
                for a in &addrs {
                    match p.dial(a.clone()).await {
                        Ok(()) => {
                            dials.lock().succeeded(a);
                            break;
                        }
                        Err(chorus_peer::PeerError::WrongPeer { listed, obtained }) => {
                            tracing::debug!(%listed, %obtained, addr = %a, "a listed address is another peer's");
                            dials.lock().wrong_peer(listed, a);
                        }
                        Err(_) => dials.lock().failed(a, std::time::Instant::now()),
                    }
                }
                p.have(id, track).await.ok()
            };
            tokio::time::timeout(LOOK, ask).await.ok().flatten().map(|held| (id, held.into_iter().collect()))
        });
    }
    while let Some(j) = asking.join_next().await {
        if let Ok(Some((id, held))) = j
            && found.send(PeerNews::Holds(id, held)).is_err()
        {
            return; // the track is over
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_newest_and_the_sampled_take_turns() {
        assert_eq!(super::newest_and_sampled_alternately((0..10).collect()), [0, 5, 1, 6, 2, 7, 3, 8, 4, 9]);
        assert_eq!(super::newest_and_sampled_alternately((0..5).collect()), [0, 3, 1, 4, 2]);
        assert!(super::newest_and_sampled_alternately(Vec::<u8>::new()).is_empty());
    }
}
