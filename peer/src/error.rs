//! Why talking to a peer failed ([`PeerError`]).

use libp2p::PeerId;

use crate::wire::Status;

/// Why talking to a peer failed, and whether asking elsewhere can help (it always can).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The node could not start (bad listen address, transport set-up).
    #[error("peer node: {0}")]
    Start(String),
    /// The peer sent bytes that are not the chunk asked for; it is now banned.
    #[error("peer {0} sent a wrong chunk; banned")]
    WrongChunk(PeerId),
    /// The peer was banned earlier.
    #[error("peer {0} is banned")]
    Banned(PeerId),
    /// The peer answered with a status other than OK.
    #[error("peer answered {0:?}")]
    Refused(Status),
    /// Dialling, the stream or the request failed (or timed out).
    #[error("peer request failed: {0}")]
    Failed(String),
    /// The node has stopped.
    #[error("peer node stopped")]
    Stopped,
}

impl PeerError {
    /// Whether asking again (this peer later, or another source now) can help: every failure
    /// but a node that could not start or has stopped.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        !matches!(self, Self::Start(_) | Self::Stopped)
    }
}

/// An error with its causes, `outer: inner: …` (libp2p's outer errors say little alone).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !out.contains(&c_text) {
            out.push_str(": ");
            out.push_str(&c_text);
        }
        cause = c.source();
    }
    out
}
