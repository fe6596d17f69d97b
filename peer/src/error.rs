//! Why talking to a peer failed ([`PeerError`]).

use chorus_core::error::Cause;
use libp2p::PeerId;

use crate::wire::Status;

/// Why talking to a peer failed, and whether asking elsewhere can help.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The node could not start (identity file, transport set-up, listen address).
    #[error("starting the peer node: {what}")]
    Start {
        /// What was being set up.
        what: String,
        /// What failed.
        #[source]
        source: Cause,
    },
    /// A listen address was refused.
    #[error("listening on {addr}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// A connection to a peer could not be made.
    #[error("dialling {to}")]
    Dial {
        /// The address or peer id dialled.
        to: String,
        /// Why.
        #[source]
        source: Cause,
    },
    /// The node at a listed address proved to be another peer than the one listed there (its
    /// handshake showed another key): the listing is false.
    #[error("the peer at this address is {obtained}, not {listed}")]
    WrongPeer {
        /// The peer id the address was listed with.
        listed: PeerId,
        /// The peer that answered (boxed: it keeps the error small).
        obtained: Box<PeerId>,
    },
    /// The peer sent bytes that are not the chunk asked for; it is now banned.
    #[error("peer {0} sent a wrong chunk; banned")]
    WrongChunk(PeerId),
    /// The peer was banned earlier.
    #[error("peer {0} is banned")]
    Banned(PeerId),
    /// The peer answered with a status other than OK.
    #[error("peer answered {0:?}")]
    Refused(Status),
    /// The stream or the request failed (or timed out) on a connection.
    #[error("peer request failed")]
    Request(#[source] Cause),
    /// The peer is reachable only through a relay circuit, and no direct connection to it
    /// could be punched in time: chunks do not travel over circuits (crate::direct).
    #[error("peer {0} is reachable only through a relay")]
    RelayedOnly(PeerId),
    /// The node has stopped.
    #[error("peer node stopped")]
    Stopped,
}

impl PeerError {
    /// Whether asking again (this peer later, or another source now) can help: every failure
    /// of one peer can; a node that could not start, refused an address or has stopped cannot.
    #[must_use]
    pub const fn is_retryable(&self) -> bool {
        !matches!(self, Self::Start { .. } | Self::Listen { .. } | Self::Stopped)
    }
}

/// Makes a [`PeerError::Start`] for `what` out of the error that stopped it.
pub(crate) fn start<E: std::error::Error + Send + Sync + 'static>(
    what: impl Into<String>,
) -> impl FnOnce(E) -> PeerError {
    let what = what.into();
    move |e| PeerError::Start { what, source: chorus_core::error::cause(e) }
}
