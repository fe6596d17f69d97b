//! Why a store operation failed, and whether trying again can help.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chorus_core::ChunkId;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Reading or writing the directory store failed.
    #[error("store {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A chunk on disk does not match its id; it has been quarantined.
    #[error("chunk {0} on disk is corrupt (its bytes do not match its hash); it was quarantined")]
    Corrupt(ChunkId),
    /// A chunk object in the bucket does not match its id: not served.
    #[error("chunk {chunk} in {store} does not match its hash (altered or damaged in the store); not served")]
    CorruptObject {
        /// The chunk.
        chunk: ChunkId,
        /// The store.
        store: String,
    },
    /// The object store failed or could not be reached (retried first); a retry later may help.
    #[error("{store} failed to {op} {what}: {detail}")]
    Unavailable {
        /// The store.
        store: String,
        /// The operation (`get`, `put`…).
        op: &'static str,
        /// The object.
        what: String,
        /// What went wrong, at the bottom (the client's error, the store's status and message).
        detail: String,
    },
    /// The object store did not answer within the deadline; a retry later may help.
    #[error("{store} did not answer {op} {what} within {after:?}")]
    TimedOut {
        /// The store.
        store: String,
        /// The operation.
        op: &'static str,
        /// The object.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// The object store refused the credentials (401/403): an operator must fix them.
    #[error(
        "{store} refused to {op} {what} ({detail}): check the credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY or the shared credentials file) and the bucket's permissions"
    )]
    Denied {
        /// The store.
        store: String,
        /// The operation.
        op: &'static str,
        /// The object.
        what: String,
        /// What the store said.
        detail: String,
    },
    /// An object is larger than anything the origin stores under its name.
    #[error("{what} in {store} is {size} bytes, more than such an object can be")]
    TooLarge {
        /// The store.
        store: String,
        /// The object.
        what: String,
        /// Its size.
        size: u64,
    },
    /// The bucket does not exist.
    #[error("{store}: no such bucket")]
    NoBucket {
        /// The store.
        store: String,
    },
    /// The object store's settings are unusable.
    #[error("{store}: {reason}")]
    Config {
        /// The store.
        store: String,
        /// What is wrong.
        reason: String,
    },
    /// A protected track needs a place for its content key, and this store has none.
    #[error(
        "{0} keeps no content keys: give --key-store DIR (or s3://BUCKET/PREFIX) for protected tracks (docs/operator.md, \"The origin on object storage\")"
    )]
    NoKeyStore(String),
    /// An error shared by every request that waited on one read.
    #[error(transparent)]
    Shared(Arc<StoreError>),
}

impl StoreError {
    /// The error itself, looking through one shared by coalesced requests.
    #[must_use]
    pub fn root(&self) -> &Self {
        match self {
            Self::Shared(e) => e.root(),
            e => e,
        }
    }

    /// Whether trying again later can help (the store was slow or failing), as opposed to
    /// an operator's fix (credentials, a missing bucket) or bad data.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self.root(), Self::Unavailable { .. } | Self::TimedOut { .. })
    }

    /// Whether the store served bytes that are not what their name says.
    #[must_use]
    pub fn is_corrupt(&self) -> bool {
        matches!(self.root(), Self::Corrupt(_) | Self::CorruptObject { .. })
    }
}
