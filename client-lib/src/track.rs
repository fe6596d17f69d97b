//! The track handle a player holds: verified segments in play order ([`Track`]), the same as
//! bytes ([`TrackReader`]), and a preload in progress ([`Preload`]).
//!
//! The handle only receives: a [`crate::driver`] task fetches ahead of it and hands segments
//! over through a channel of one, so a track that is not read does not fill memory. A seek
//! bumps the handle's generation; what the driver sent before the seek is dropped unread.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use chorus_core::{RenditionId, TrackId};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::error::FetchError;
pub use crate::summary::Source;
use crate::summary::Summary;

/// A verified segment, handed over in play order.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Index in the rendition's segment list (the same in every rendition).
    pub index: usize,
    /// Media time it starts at.
    pub start: Duration,
    /// Media time it lasts.
    pub duration: Duration,
    /// The rendition it is in.
    pub rendition: RenditionId,
    /// The rendition's init chunk, present on the first segment, after a seek, and (for a
    /// track from [`crate::Client::open`]) after every rendition switch; always `None` for raw
    /// files.
    pub init: Option<Bytes>,
    /// The segment's bytes, checked against its id; for a protected track, then decrypted with
    /// the track's key (the ciphertext as verified, with [`crate::ClientBuilder::carry_only`]).
    pub data: Bytes,
    /// Where it came from.
    pub source: Source,
}

/// What the track holds, known once it is open.
#[derive(Debug, Clone)]
pub struct TrackInfo {
    /// The track.
    pub track_id: TrackId,
    /// Total media time.
    pub duration: Duration,
    /// Number of segments.
    pub segments: usize,
    /// The renditions this handle may switch among, lowest bitrate first.
    pub renditions: Vec<RenditionId>,
}

/// From the handle to its driver.
pub(crate) enum Control {
    Seek { generation: u64, segment: usize },
}

/// From the driver to the handle.
pub(crate) enum Delivery {
    Segment(u64, Segment),
    End(u64),
    Failed(FetchError),
}

/// The driver's side of a handle's channels.
pub(crate) struct DriverEnds {
    pub(crate) tx: mpsc::Sender<Delivery>,
    pub(crate) control: mpsc::UnboundedReceiver<Control>,
    pub(crate) summary: watch::Sender<Summary>,
}

/// An open track: verified segments in play order, with seek, stats and cancellation.
///
/// Dropping the handle (or [`Track::cancel`]) stops every request in flight at once.
pub struct Track {
    info: TrackInfo,
    rx: mpsc::Receiver<Delivery>,
    control: Option<mpsc::UnboundedSender<Control>>,
    summary: watch::Receiver<Summary>,
    generation: u64,
    driver: Option<JoinHandle<()>>,
    ended: bool,
    /// Media start of each segment.
    starts: Vec<Duration>,
}

impl Track {
    /// A handle for a track described by `info` with segments starting at `starts`, and the
    /// ends its driver holds; [`Track::attach`] gives it the driver task.
    pub(crate) fn new(info: TrackInfo, starts: Vec<Duration>, summary: Summary) -> (Self, DriverEnds) {
        let (tx, rx) = mpsc::channel(1);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let (summary_tx, summary_rx) = watch::channel(summary);
        let track = Self {
            info,
            rx,
            control: Some(control_tx),
            summary: summary_rx,
            generation: 0,
            driver: None,
            ended: false,
            starts,
        };
        (track, DriverEnds { tx, control: control_rx, summary: summary_tx })
    }

    /// Ties the driver task's life to the handle's.
    pub(crate) fn attach(&mut self, driver: JoinHandle<()>) {
        self.driver = Some(driver);
    }

    /// What the track holds.
    #[must_use]
    pub const fn info(&self) -> &TrackInfo {
        &self.info
    }

    /// The next verified segment in play order; `None` after the last one.
    ///
    /// # Errors
    /// [`FetchError::Chunk`] when a chunk could not be had from any source (the track then
    /// ends), or a local cache error.
    pub async fn next(&mut self) -> Option<Result<Segment, FetchError>> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polling form of [`Track::next`].
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Segment, FetchError>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                Some(Delivery::Segment(g, s)) if g == self.generation => return Poll::Ready(Some(Ok(s))),
                Some(Delivery::End(g)) if g == self.generation => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Some(Delivery::Failed(e)) => {
                    self.ended = true;
                    return Poll::Ready(Some(Err(e)));
                }
                Some(_) => {} // from before a seek
                None => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
            }
        }
    }

    /// Continues from the segment holding media time `to` (the last segment for times past
    /// the end): what was fetched ahead is dropped, requests in flight are cancelled, and the
    /// next segment handed over is that one, with its rendition's init chunk. Returns its index.
    pub fn seek(&mut self, to: Duration) -> usize {
        let segment = crate::scheduler::segment_at(&self.starts, to);
        self.generation += 1;
        self.ended = false;
        if let Some(c) = &self.control {
            let _ = c.send(Control::Seek { generation: self.generation, segment });
        }
        segment
    }

    /// What happened so far.
    #[must_use]
    pub fn stats(&self) -> Summary {
        self.summary.borrow().clone()
    }

    /// Stops fetching now: requests in flight are dropped, nothing more is handed over.
    pub fn cancel(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.control = None;
        if let Some(d) = self.driver.take() {
            d.abort();
        }
    }

    /// Stops the track after the last segment (the QoE beacon has then been sent) and returns
    /// the final summary.
    pub async fn finish(mut self) -> Summary {
        self.control = None; // the driver exits once it has nothing left to do
        if let Some(d) = self.driver.take() {
            let _ = d.await;
        }
        self.summary.borrow().clone()
    }

    /// The track as bytes: each segment's init chunk (when present) then its data, in play
    /// order. Open with [`crate::Client::open_stream`] for bytes a decoder plays end to end.
    #[must_use]
    pub fn reader(self) -> TrackReader {
        TrackReader { track: self, pending: Vec::new() }
    }
}

impl Drop for Track {
    fn drop(&mut self) {
        self.stop();
    }
}

/// [`tokio::io::AsyncRead`] over a track's verified bytes (see [`Track::reader`]).
pub struct TrackReader {
    track: Track,
    /// Chunks still to be read, in reverse order (the next at the end).
    pending: Vec<Bytes>,
}

impl TrackReader {
    /// The track, for stats.
    #[must_use]
    pub const fn track(&self) -> &Track {
        &self.track
    }
}

impl tokio::io::AsyncRead for TrackReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if let Some(chunk) = self.pending.last_mut() {
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk.split_to(n));
                if chunk.is_empty() {
                    self.pending.pop();
                }
                return Poll::Ready(Ok(()));
            }
            match std::task::ready!(self.track.poll_next(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(std::io::Error::other(e))),
                Some(Ok(s)) => {
                    self.pending.push(s.data);
                    self.pending.extend(s.init);
                    self.pending.retain(|b| !b.is_empty());
                }
            }
        }
    }
}

/// A preload in progress ([`crate::Client::preload`]); dropping it stops the preload.
pub struct Preload {
    task: JoinHandle<Result<Summary, FetchError>>,
}

impl Preload {
    /// Reads `track` to its planned end in a task of its own.
    pub(crate) fn spawn(mut track: Track) -> Self {
        let task = tokio::spawn(async move {
            while let Some(s) = track.next().await {
                s?;
            }
            Ok(track.finish().await)
        });
        Self { task }
    }

    /// Waits for the preload to end; its summary says where the bytes came from.
    ///
    /// # Errors
    /// As [`Track::next`]: a chunk no source could deliver.
    pub async fn finish(mut self) -> Result<Summary, FetchError> {
        match (&mut self.task).await {
            Ok(r) => r,
            Err(e) => Err(FetchError::Preload(e)),
        }
    }
}

impl Drop for Preload {
    fn drop(&mut self) {
        self.task.abort();
    }
}
