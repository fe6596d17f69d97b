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
    /// The whole body did not arrive within its deadline, or arrived slower than the minimum
    /// rate (a slow-body attack holds a connection with a byte now and then).
    #[error("request body too slow: {0}")]
    TooSlow(String),
    /// The connection failed while the body was arriving.
    #[error("reading request body")]
    Transport(#[source] chorus_core::error::Cause),
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

/// Reads a whole small body (a JSON request) into memory, at most `max` bytes, all of it
/// within `within` (a deadline for the whole body, not for each piece: a byte every few
/// seconds does not keep it going).
///
/// # Errors
/// [`BodyError`] when it is too large, too slow or fails.
pub async fn read_to_bytes(mut body: Body, max: u64, within: Duration) -> Result<Bytes, BodyError> {
    if body.size_hint().lower() > max {
        return Err(BodyError::TooLarge(max));
    }
    let read = async {
        let mut buf = BytesMut::new();
        let mut seen = 0;
        while let Some(data) = next_data(&mut body, &mut seen, max, within).await? {
            buf.extend_from_slice(&data);
        }
        Ok(buf.freeze())
    };
    match tokio::time::timeout(within, read).await {
        Ok(r) => r,
        Err(_) => Err(BodyError::TooSlow(format!("the whole body must arrive within {within:?}"))),
    }
}

/// A floor under the rate of a long body (an upload): after `grace`, the bytes received must
/// keep up with `bytes_per_sec` on average since the start.
#[derive(Debug, Clone, Copy)]
pub struct MinRate {
    /// Bytes a second, on average since the body began.
    pub bytes_per_sec: u64,
    /// Time before the rate is checked (connection setup, a slow start).
    pub grace: Duration,
}

impl MinRate {
    /// Checks `seen` bytes after `elapsed`.
    ///
    /// # Errors
    /// [`BodyError::TooSlow`] when the body is behind the rate.
    pub fn check(&self, seen: u64, elapsed: Duration) -> Result<(), BodyError> {
        if elapsed <= self.grace {
            return Ok(());
        }
        let due = (elapsed - self.grace).as_secs_f64() * self.bytes_per_sec as f64;
        if (seen as f64) < due {
            return Err(BodyError::TooSlow(format!(
                "{seen} bytes in {:.0} s, under the minimum of {} bytes a second",
                elapsed.as_secs_f64(),
                self.bytes_per_sec
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that sends one byte, then waits `every`, forever.
    fn dripping(every: Duration) -> Body {
        let s = futures_util::stream::unfold((), move |()| async move {
            tokio::time::sleep(every).await;
            Some((Ok::<_, BodyError>(http_body::Frame::data(Bytes::from_static(b"x"))), ()))
        });
        http_body_util::StreamBody::new(s).boxed_unsync()
    }

    #[tokio::test(start_paused = true)]
    async fn a_dripped_body_is_cut_off_at_the_whole_body_deadline() {
        let started = tokio::time::Instant::now();
        let r = read_to_bytes(dripping(Duration::from_secs(8)), 64, Duration::from_secs(10)).await;
        assert!(matches!(r, Err(BodyError::TooSlow(_))), "{r:?}");
        assert_eq!(started.elapsed(), Duration::from_secs(10), "cut at the deadline, on the paused clock");
    }

    #[test]
    fn the_minimum_rate_allows_a_grace_then_holds() {
        let m = MinRate { bytes_per_sec: 1000, grace: Duration::from_secs(10) };
        assert!(m.check(0, Duration::from_secs(10)).is_ok());
        assert!(m.check(5_000, Duration::from_secs(15)).is_ok());
        assert!(m.check(4_999, Duration::from_secs(15)).is_err());
    }
}
