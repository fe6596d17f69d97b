//! The one path a chunk takes into the client: the local cache when it holds it, else a peer
//! or an edge; what a peer or an edge sends is checked against the chunk's id, then stored in
//! the cache, before anyone uses it. Opening a track (init chunks, the speculative first
//! segment) and the driver (every segment the scheduler asks for) both fetch through here.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chorus_core::{ChunkId, route};
use chorus_http::client::HttpClient;
use chorus_peer::{Peer, PeerError, PeerId};
use tokio::time::Instant;

use crate::cache::Shared;
use crate::edges::{Edge, Tally};

/// What fetching needs of the client, handed to whoever fetches: the HTTP client, the access
/// token (for edges only, never for peers), the local cache and the dial guard. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Fetcher {
    pub(crate) http: HttpClient,
    pub(crate) token: Option<Arc<str>>,
    pub(crate) cache: Option<Shared>,
    pub(crate) dials: crate::dials::Shared,
}

/// Where a chunk may come from, besides the cache.
#[derive(Clone)]
pub(crate) enum ChunkSource {
    /// An edge, over HTTP.
    Edge(Arc<Edge>),
    /// A peer, through our node.
    Peer(Arc<Peer>, PeerId),
}

/// Where a fetched chunk came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Came {
    /// The local cache.
    Cache,
    /// The `i`th source given to [`Fetcher::chunk`].
    Source(usize),
}

/// A verified chunk, how long its request took, where it came from, and how many sources sent
/// wrong bytes for it first.
pub(crate) struct Got {
    pub(crate) bytes: Bytes,
    pub(crate) elapsed: Duration,
    pub(crate) came: Came,
    pub(crate) rejected: u64,
}

/// Why no source delivered a chunk (the last source's reason).
#[derive(Debug)]
pub(crate) enum Rejected {
    /// Transport error or non-200 answer.
    Failed,
    /// Bytes that do not hash to the id (from an edge: avoided for a while; from a peer:
    /// banned).
    WrongBytes,
    /// The local cache could not store the chunk: the track fails.
    Cache(std::io::Error),
    /// The source cannot be used (an edge as configured, see `ClientError::is_retryable`; a
    /// banned peer; our stopped peer node): never asked again for this track.
    Unusable,
}

impl Fetcher {
    /// A `GET path` request to an edge, carrying the client's token.
    pub(crate) fn get(&self, path: &str) -> http::Request<Bytes> {
        crate::edges::get(path, self.token.as_deref())
    }

    /// Chunk `id`: from the local cache when it holds it, else from each of `sources` in turn
    /// until one sends bytes that hash to `id`. Those are stored in the cache when `store`
    /// (before they are returned: a chunk in use is a chunk kept). Edge requests are counted
    /// in `tally`.
    ///
    /// # Errors
    /// [`Rejected`]: the last source's failure, or the cache's.
    pub(crate) async fn chunk(
        &self,
        id: ChunkId,
        sources: &[ChunkSource],
        store: bool,
        tally: &Tally,
    ) -> Result<Got, Rejected> {
        if let Some(bytes) = self.cached(id).await {
            return Ok(Got { bytes, elapsed: Duration::from_millis(1), came: Came::Cache, rejected: 0 });
        }
        let mut rejected = 0;
        let mut last = Rejected::Failed;
        for (i, source) in sources.iter().enumerate() {
            let t = Instant::now();
            match self.ask(id, source, tally).await {
                Ok(bytes) => {
                    let elapsed = t.elapsed();
                    if store {
                        self.keep(id, bytes.clone()).await?;
                    }
                    return Ok(Got { bytes, elapsed, came: Came::Source(i), rejected });
                }
                Err(e) => {
                    rejected += u64::from(matches!(e, Rejected::WrongBytes));
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// The cache's copy of `id`, if it holds one (checked by the cache as it is read).
    pub(crate) async fn cached(&self, id: ChunkId) -> Option<Bytes> {
        match &self.cache {
            Some(c) => c.get(id).await,
            None => None,
        }
    }

    /// Stores verified `bytes` of `id` in the cache, if there is one.
    ///
    /// # Errors
    /// [`Rejected::Cache`] when the cache cannot store it.
    pub(crate) async fn keep(&self, id: ChunkId, bytes: Bytes) -> Result<(), Rejected> {
        match &self.cache {
            Some(c) => c.put(id, bytes).await.map_err(Rejected::Cache),
            None => Ok(()),
        }
    }

    /// One request to one source; only bytes that hash to `id` come back.
    async fn ask(&self, id: ChunkId, source: &ChunkSource, tally: &Tally) -> Result<Bytes, Rejected> {
        match source {
            ChunkSource::Peer(peer, peer_id) => match peer.fetch(*peer_id, id).await {
                Ok(bytes) => Ok(bytes),
                Err(PeerError::WrongChunk(liar)) => {
                    self.dials.lock().wrong_chunk(liar, std::time::Instant::now());
                    Err(Rejected::WrongBytes)
                }
                // A banned peer, or our own node stopped: asking this source again cannot help.
                Err(PeerError::Banned(_)) => Err(Rejected::Unusable),
                Err(e) if !e.is_retryable() => Err(Rejected::Unusable),
                Err(_) => Err(Rejected::Failed),
            },
            ChunkSource::Edge(edge) => match edge.send(&self.http, self.get(&route::chunk(&id, None)), tally).await {
                Ok(r) if r.status() == http::StatusCode::OK => {
                    let body = r.into_body();
                    if id.matches(&body) { Ok(body) } else { Err(Rejected::WrongBytes) }
                }
                // The same notion as the edge's failover: what retrying cannot mend ends this
                // source for the track.
                Err(e) if !e.is_retryable() => Err(Rejected::Unusable),
                _ => Err(Rejected::Failed),
            },
        }
    }
}
