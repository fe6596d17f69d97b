//! Content keys of protected tracks (docs/protocol.md §3.7): the edge hands a track's key to a
//! request whose token covers the track, and gets it from its upstreams with its own credential
//! (`--upstream-token-file`), never with the listener's token.
//!
//! Keys are kept in memory only, for [`KEY_TTL`], never in the chunk cache or on disk, and are
//! answered `Cache-Control: private, no-store` so no shared cache keeps them either.

use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chorus_core::TrackId;
use chorus_core::error::message;
use chorus_core::protect::{ContentKey, KEY_BYTES, KeyId};
use chorus_core::token::MAX_TOKEN_BYTES;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use lru::LruCache;

use crate::upstream::{FetchError, Upstreams};

/// How long a fetched key is kept: a re-ingest's rotation or a purge reaches the edge within it.
pub const KEY_TTL: Duration = Duration::from_secs(60);

/// Keys kept at most.
const KEYS_KEPT: usize = 4096;

/// Why an edge could not hand out a key, as the listener is told.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The edge has no credential of its own to ask its upstreams with.
    #[error("this edge has no --upstream-token-file to fetch content keys with")]
    NoCredential,
    /// The credential file could not be read.
    #[error("reading the edge's upstream token {path}")]
    Credential {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The upstream refused the edge's credential (a configuration mismatch).
    #[error(
        "the upstream refused this edge's key request ({0}): check the origin's --token-key and this edge's --upstream-token-file"
    )]
    Refused(StatusCode),
    /// Fetching failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
}

impl KeyError {
    /// The status to answer the listener with.
    #[must_use]
    pub const fn status(&self) -> StatusCode {
        match self {
            Self::Fetch(e) => e.status(),
            Self::NoCredential | Self::Credential { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Refused(_) => StatusCode::BAD_GATEWAY,
        }
    }
}

/// The keys this edge has fetched, by track and key id.
pub(crate) struct Keys {
    kept: Mutex<LruCache<(TrackId, KeyId), (ContentKey, Instant)>>,
    /// Keys an upstream said do not exist: made-up key ids cost it one request each.
    missing: crate::negative::Negative<(TrackId, KeyId)>,
}

impl Default for Keys {
    fn default() -> Self {
        let cap = std::num::NonZeroUsize::new(KEYS_KEPT).unwrap_or(std::num::NonZeroUsize::MIN);
        Self { kept: Mutex::new(LruCache::new(cap)), missing: crate::negative::Negative::default() }
    }
}

impl Keys {
    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<(TrackId, KeyId), (ContentKey, Instant)>> {
        self.kept.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets the keys of `track` (a purge).
    pub(crate) fn forget(&self, track: &TrackId) {
        let mut kept = self.lock();
        let stale: Vec<_> = kept.iter().filter(|((t, _), _)| t == track).map(|(k, _)| k.clone()).collect();
        for k in stale {
            kept.pop(&k);
        }
    }

    /// Key `id` of `track`: kept, or fetched from the upstreams with the edge's own token, read
    /// from `credential` on every fetch (so a rotated file needs no restart).
    pub(crate) async fn get(
        &self,
        upstreams: &Upstreams,
        credential: Option<&Path>,
        track: &TrackId,
        id: &KeyId,
    ) -> Result<ContentKey, KeyError> {
        let slot = (track.clone(), id.clone());
        if let Some((key, at)) = self.lock().get(&slot)
            && at.elapsed() < KEY_TTL
        {
            return Ok(key.clone());
        }
        if self.missing.known_missing(&slot, std::time::Instant::now()) {
            return Err(KeyError::Fetch(FetchError::NotFound));
        }
        let path = credential.ok_or(KeyError::NoCredential)?;
        let token = read_credential(path).await?;
        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|e| KeyError::Credential { path: path.to_owned(), source: std::io::Error::other(e) })?;
        auth.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, auth);
        // A refusal is an answer, not a failing upstream: it must not mark the origin down for
        // the chunks it serves well.
        let check = |r: &Response<Bytes>| match r.status() {
            StatusCode::OK if r.body().len() == KEY_BYTES => Ok(()),
            StatusCode::OK => Err(message(format!("a key of {} bytes", r.body().len()))),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Ok(()),
            s => Err(message(format!("unexpected status {s}"))),
        };
        let r = match upstreams.get(&chorus_core::route::key(track, id), headers, None, &check).await {
            Err(FetchError::NotFound) => {
                self.missing.missing(slot, std::time::Instant::now());
                return Err(KeyError::Fetch(FetchError::NotFound));
            }
            r => r?,
        };
        if r.status() != StatusCode::OK {
            return Err(KeyError::Refused(r.status()));
        }
        let key = ContentKey::from_slice(r.body()).map_err(|e| FetchError::Mismatch {
            what: format!("the content key of {track}"),
            source: Some(chorus_core::error::cause(e)),
        })?;
        self.lock().put(slot.clone(), (key.clone(), Instant::now()));
        Ok(key)
    }
}

/// The token in `path`: its first line, trimmed, at most [`MAX_TOKEN_BYTES`].
async fn read_credential(path: &Path) -> Result<String, KeyError> {
    let err = |source| KeyError::Credential { path: path.to_owned(), source };
    let meta = tokio::fs::metadata(path).await.map_err(err)?;
    if meta.len() > 2 * MAX_TOKEN_BYTES as u64 {
        return Err(err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the file is too large for a token")));
    }
    let text = tokio::fs::read_to_string(path).await.map_err(err)?;
    let token = text.lines().next().unwrap_or("").trim();
    if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file must hold one access token of 1 to {MAX_TOKEN_BYTES} bytes"),
        )));
    }
    Ok(token.to_owned())
}
