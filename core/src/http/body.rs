//! Request and response bodies, and bounded, time-limited reading of request bodies.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;

/// A request body as handlers see it, whatever the protocol.
pub type Body = UnsyncBoxBody<Bytes, BodyError>;

/// A response body.
pub type ResponseBody = UnsyncBoxBody<Bytes, std::io::Error>;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BodyError {
    /// The client sent more than the endpoint accepts.
    #[error("request body is larger than {0} bytes")]
    TooLarge(u64),
    /// The client stopped sending for longer than the idle timeout.
    #[error("request body stalled: nothing received for {0:?}")]
    Stalled(Duration),
    /// The connection failed while the body was arriving.
    #[error("reading request body")]
    Transport(#[source] crate::error::Cause),
}

/// An empty request body (for tests and internal requests).
#[must_use]
pub fn empty_body() -> Body {
    http_body_util::Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// Reads the next piece of `body`, failing if nothing arrives within `idle` or the running total
/// `seen` would pass `max`. Returns `None` at the end of the body.
///
/// # Errors
/// [`BodyError`] as above, or the transport's error.
pub async fn next_data(body: &mut Body, seen: &mut u64, max: u64, idle: Duration) -> Result<Option<Bytes>, BodyError> {
    loop {
        let frame = match tokio::time::timeout(idle, body.frame()).await {
            Err(_) => return Err(BodyError::Stalled(idle)),
            Ok(None) => return Ok(None),
            Ok(Some(frame)) => frame?,
        };
        if let Ok(data) = frame.into_data() {
            *seen += data.len() as u64;
            if *seen > max {
                return Err(BodyError::TooLarge(max));
            }
            return Ok(Some(data));
        }
        // Trailers are ignored.
    }
}

/// Reads a whole small body (a JSON request) into memory, at most `max` bytes.
///
/// # Errors
/// [`BodyError`] when it is too large, stalls or fails.
pub async fn read_to_bytes(mut body: Body, max: u64, idle: Duration) -> Result<Bytes, BodyError> {
    if body.size_hint().lower() > max {
        return Err(BodyError::TooLarge(max));
    }
    let mut buf = BytesMut::new();
    let mut seen = 0;
    while let Some(data) = next_data(&mut body, &mut seen, max, idle).await? {
        buf.extend_from_slice(&data);
    }
    Ok(buf.freeze())
}
