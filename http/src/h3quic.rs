//! `h3`'s QUIC transport over quinn, ours rather than the `h3-quinn` crate's, so that response
//! bodies reach quinn's send buffer without being copied.
//!
//! h3 0.0.8 hands a transport each frame as an opaque [`WriteBuf<B>`]: its private fields hold the
//! encoded frame head and the payload `B`, and all it offers is [`Buf`] (`chunk`, `advance`,
//! `remaining`; `copy_to_bytes` is the default, which copies). With `B = Bytes` a transport can
//! only borrow slices of the body, so `h3-quinn` gives quinn `&[u8]` and quinn copies it
//! (`SendStream::write` → `to_vec`): one copy of every body byte, a tenth of the edge's CPU under
//! HTTP/3 load (docs/BENCHMARKS.md).
//!
//! `B` is ours to choose, though, and `WriteBuf` passes its `advance` calls on to the payload. So
//! bodies go to h3 as [`SendBuf`], whose `advance`, when this module asks for it, hands over the
//! `Bytes` it consumes; [`SendHalf`] then gives quinn that `Bytes` with `write_chunks`, which
//! takes ownership. The handover goes through a thread-local slot, armed by [`take_payload`] only
//! for the synchronous `advance` calls it makes on a `WriteBuf` it owns, so nothing else can see
//! or fill it. Any other payload (a HEADERS block, a plain `Bytes` body) is copied, as before.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut as _, Bytes, BytesMut};
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};
use quinn::VarInt;
use tokio_util::sync::ReusableBoxFuture;

/// A piece of a body as h3 gets it: `Bytes` that this module's send streams take over without a
/// copy (see the module docs).
#[derive(Debug, Clone, Default)]
pub(super) struct SendBuf(Bytes);

impl From<Bytes> for SendBuf {
    fn from(bytes: Bytes) -> Self {
        Self(bytes)
    }
}

impl Buf for SendBuf {
    fn remaining(&self) -> usize {
        self.0.len()
    }

    fn chunk(&self) -> &[u8] {
        &self.0
    }

    fn advance(&mut self, cnt: usize) {
        // Only `take_payload` sets the slot, around its own `advance` calls; everywhere else it
        // is `Idle` and this is a plain advance.
        let slot = HANDOVER.take();
        match slot {
            Handover::Asking => HANDOVER.set(Handover::Here(self.0.len())),
            Handover::Taking if cnt == self.0.len() => HANDOVER.set(Handover::Taken(std::mem::take(&mut self.0))),
            other => {
                HANDOVER.set(other);
                self.0.advance(cnt);
            }
        }
    }
}

/// The slot through which a [`SendBuf`] inside a `WriteBuf` hands its `Bytes` to
/// [`take_payload`].
#[derive(Default)]
enum Handover {
    /// Nobody is asking: `SendBuf::advance` is a plain advance.
    #[default]
    Idle,
    /// `take_payload` asks whether the payload is a `SendBuf` (with an `advance(0)`).
    Asking,
    /// It is, with this many bytes left.
    Here(usize),
    /// `take_payload` advances over the whole payload: hand it over.
    Taking,
    /// The payload, handed over.
    Taken(Bytes),
}

thread_local! {
    static HANDOVER: Cell<Handover> = const { Cell::new(Handover::Idle) };
}

/// Consumes `frame`: its head (a few bytes, copied into `scratch`) and its payload, as owned
/// `Bytes` when the payload is a [`SendBuf`] with something in it, else copied after the head.
/// Returns (head and any copied payload, the payload taken over); `None` if a `SendBuf` said it
/// was there and then did not hand itself over (h3's `WriteBuf` no longer passes `advance` on as
/// it did): its bytes are gone, and the stream cannot go on.
fn take_payload<B: Buf>(mut frame: WriteBuf<B>, scratch: &mut BytesMut) -> Option<(Bytes, Bytes)> {
    // `WriteBuf::advance(0)` reaches the payload's `advance(0)` (it advances the head first, by
    // nothing); only a `SendBuf` answers.
    HANDOVER.set(Handover::Asking);
    frame.advance(0);
    let payload_len = match HANDOVER.take() {
        Handover::Here(n) if n > 0 => n,
        _ => 0,
    };
    let head_len = frame.remaining() - payload_len;
    scratch.reserve(head_len);
    scratch.put((&mut frame).take(head_len));
    let mut owned = Bytes::new();
    if payload_len > 0 {
        HANDOVER.set(Handover::Taking);
        frame.advance(payload_len);
        match HANDOVER.take() {
            Handover::Taken(bytes) => owned = bytes,
            _ => return None,
        }
        #[cfg(test)]
        tests::HANDED_OVER.fetch_add(owned.len(), std::sync::atomic::Ordering::Relaxed);
    }
    // Nothing is left here unless the payload was not a `SendBuf`: copy it.
    if frame.has_remaining() {
        scratch.reserve(frame.remaining());
        scratch.put(frame);
    }
    Some((scratch.split().freeze(), owned))
}

/// A quinn connection as h3 sees it: accepts the peer's streams and opens ours.
pub(super) struct QuicConn {
    accept_bi: ReusableBoxFuture<'static, Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>>,
    accept_uni: ReusableBoxFuture<'static, Result<quinn::RecvStream, quinn::ConnectionError>>,
    opener: Opener,
}

impl QuicConn {
    /// Wraps an established (or 0-RTT) quinn connection.
    pub(super) fn new(conn: quinn::Connection) -> Self {
        Self {
            accept_bi: ReusableBoxFuture::new(accept_bi(conn.clone())),
            accept_uni: ReusableBoxFuture::new(accept_uni(conn.clone())),
            opener: Opener::new(conn),
        }
    }
}

// The accept and open futures borrow the connection and hold a registration for its wakeups, so
// each lives in a box that owns a handle to the connection, reused from one stream to the next.
async fn accept_bi(conn: quinn::Connection) -> Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError> {
    conn.accept_bi().await
}

async fn accept_uni(conn: quinn::Connection) -> Result<quinn::RecvStream, quinn::ConnectionError> {
    conn.accept_uni().await
}

async fn open_bi(conn: quinn::Connection) -> Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError> {
    conn.open_bi().await
}

async fn open_uni(conn: quinn::Connection) -> Result<quinn::SendStream, quinn::ConnectionError> {
    conn.open_uni().await
}

impl<B: Buf> quic::Connection<B> for QuicConn {
    type RecvStream = RecvHalf;
    type OpenStreams = Opener;

    fn poll_accept_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<RecvHalf, ConnectionErrorIncoming>> {
        let accepted = ready!(self.accept_uni.poll(cx));
        let conn = self.opener.conn.clone();
        self.accept_uni.set(accept_uni(conn));
        let recv = accepted.map_err(connection_error)?;
        Poll::Ready(RecvHalf::new(recv).map_err(|e| e.into_connection_error()))
    }

    fn poll_accept_bidi(&mut self, cx: &mut Context<'_>) -> Poll<Result<BidiStream, ConnectionErrorIncoming>> {
        let accepted = ready!(self.accept_bi.poll(cx));
        let conn = self.opener.conn.clone();
        self.accept_bi.set(accept_bi(conn));
        let (send, recv) = accepted.map_err(connection_error)?;
        Poll::Ready(BidiStream::new(send, recv).map_err(|e| e.into_connection_error()))
    }

    fn opener(&self) -> Opener {
        Opener::new(self.opener.conn.clone())
    }
}

impl<B: Buf> quic::OpenStreams<B> for QuicConn {
    type BidiStream = BidiStream;
    type SendStream = SendHalf;

    fn poll_open_bidi(&mut self, cx: &mut Context<'_>) -> Poll<Result<BidiStream, StreamErrorIncoming>> {
        <Opener as quic::OpenStreams<B>>::poll_open_bidi(&mut self.opener, cx)
    }

    fn poll_open_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<SendHalf, StreamErrorIncoming>> {
        <Opener as quic::OpenStreams<B>>::poll_open_send(&mut self.opener, cx)
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        <Opener as quic::OpenStreams<B>>::close(&mut self.opener, code, reason);
    }
}

/// Opens streams on a connection (h3's control and QPACK streams; a client's requests).
pub(super) struct Opener {
    conn: quinn::Connection,
    // Made on first use: a server opens three streams in a connection's life.
    bidi: Option<ReusableBoxFuture<'static, Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>>>,
    uni: Option<ReusableBoxFuture<'static, Result<quinn::SendStream, quinn::ConnectionError>>>,
}

impl Opener {
    fn new(conn: quinn::Connection) -> Self {
        Self { conn, bidi: None, uni: None }
    }
}

impl Clone for Opener {
    fn clone(&self) -> Self {
        // An open in progress belongs to the handle that started it.
        Self::new(self.conn.clone())
    }
}

impl<B: Buf> quic::OpenStreams<B> for Opener {
    type BidiStream = BidiStream;
    type SendStream = SendHalf;

    fn poll_open_bidi(&mut self, cx: &mut Context<'_>) -> Poll<Result<BidiStream, StreamErrorIncoming>> {
        let conn = &self.conn;
        let opening = self.bidi.get_or_insert_with(|| ReusableBoxFuture::new(open_bi(conn.clone())));
        let opened = ready!(opening.poll(cx));
        opening.set(open_bi(conn.clone()));
        let (send, recv) = opened
            .map_err(|e| StreamErrorIncoming::ConnectionErrorIncoming { connection_error: connection_error(e) })?;
        Poll::Ready(BidiStream::new(send, recv))
    }

    fn poll_open_send(&mut self, cx: &mut Context<'_>) -> Poll<Result<SendHalf, StreamErrorIncoming>> {
        let conn = &self.conn;
        let opening = self.uni.get_or_insert_with(|| ReusableBoxFuture::new(open_uni(conn.clone())));
        let opened = ready!(opening.poll(cx));
        opening.set(open_uni(conn.clone()));
        let send = opened
            .map_err(|e| StreamErrorIncoming::ConnectionErrorIncoming { connection_error: connection_error(e) })?;
        Poll::Ready(SendHalf::new(send))
    }

    fn close(&mut self, code: h3::error::Code, reason: &[u8]) {
        self.conn.close(varint(code.value()), reason);
    }
}

/// A request stream: both halves, which h3 splits.
pub(super) struct BidiStream {
    send: SendHalf,
    recv: RecvHalf,
}

impl BidiStream {
    fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> Result<Self, StreamErrorIncoming> {
        Ok(Self { send: SendHalf::new(send)?, recv: RecvHalf::new(recv)? })
    }
}

impl<B: Buf> quic::BidiStream<B> for BidiStream {
    type SendStream = SendHalf;
    type RecvStream = RecvHalf;

    fn split(self) -> (SendHalf, RecvHalf) {
        (self.send, self.recv)
    }
}

impl<B: Buf> quic::SendStream<B> for BidiStream {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        <SendHalf as quic::SendStream<B>>::poll_ready(&mut self.send, cx)
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.send.queue(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        <SendHalf as quic::SendStream<B>>::poll_finish(&mut self.send, cx)
    }

    fn reset(&mut self, reset_code: u64) {
        <SendHalf as quic::SendStream<B>>::reset(&mut self.send, reset_code);
    }

    fn send_id(&self) -> StreamId {
        self.send.id
    }
}

impl quic::RecvStream for BidiStream {
    type Buf = Bytes;

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        self.recv.poll_data(cx)
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.recv.stop_sending(error_code);
    }

    fn recv_id(&self) -> StreamId {
        self.recv.id
    }
}

/// The sending half of a stream.
pub(super) struct SendHalf {
    stream: quinn::SendStream,
    id: StreamId,
    /// The frame h3 gave last and quinn has not taken all of: its head with any copied payload,
    /// then the payload taken over. Fully written pieces are left empty by `write_chunks`.
    queued: [Bytes; 2],
    /// Where frame heads are copied: one allocation serves many small heads.
    scratch: BytesMut,
}

/// Enough for a response's HEADERS block and the heads of its DATA frames (at most 9 bytes each).
const SCRATCH: usize = 256;

impl SendHalf {
    fn new(stream: quinn::SendStream) -> Result<Self, StreamErrorIncoming> {
        let id = stream_id(stream.id())?;
        Ok(Self { stream, id, queued: [Bytes::new(), Bytes::new()], scratch: BytesMut::new() })
    }

    fn idle(&self) -> bool {
        self.queued.iter().all(Bytes::is_empty)
    }

    /// Takes `data` apart for `poll_ready` to write (h3's `send_data`).
    fn queue<B: Buf, T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        if !self.idle() {
            // h3 waits for `poll_ready` between frames; a second frame here is a bug in it.
            return Err(StreamErrorIncoming::ConnectionErrorIncoming {
                connection_error: ConnectionErrorIncoming::InternalError(
                    "frame sent before the previous one was written".into(),
                ),
            });
        }
        if self.scratch.capacity() < SCRATCH / 8 {
            self.scratch = BytesMut::with_capacity(SCRATCH);
        }
        let (head, payload) = take_payload(data.into(), &mut self.scratch).ok_or_else(|| {
            StreamErrorIncoming::ConnectionErrorIncoming {
                connection_error: ConnectionErrorIncoming::InternalError("body piece not handed over".into()),
            }
        })?;
        self.queued = [head, payload];
        Ok(())
    }
}

impl<B: Buf> quic::SendStream<B> for SendHalf {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        while !self.idle() {
            // `write_chunks` is cancel-safe and finishes within one poll (it registers the waker
            // when quinn is blocked), so a fresh future polled once is a poll of the write.
            ready!(pin!(self.stream.write_chunks(&mut self.queued)).poll(cx)).map_err(write_error)?;
        }
        Poll::Ready(Ok(()))
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.queue(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        // h3 finishes only after `poll_ready`; flush anyway rather than cut a frame short.
        ready!(<Self as quic::SendStream<B>>::poll_ready(self, cx))?;
        Poll::Ready(self.stream.finish().map_err(|e| StreamErrorIncoming::Unknown(Box::new(e))))
    }

    fn reset(&mut self, reset_code: u64) {
        self.queued = [Bytes::new(), Bytes::new()];
        // Already finished or reset: nothing left to do.
        let _ = self.stream.reset(varint(reset_code));
    }

    fn send_id(&self) -> StreamId {
        self.id
    }
}

/// The receiving half of a stream.
pub(super) struct RecvHalf {
    stream: quinn::RecvStream,
    id: StreamId,
}

impl RecvHalf {
    fn new(stream: quinn::RecvStream) -> Result<Self, StreamErrorIncoming> {
        let id = stream_id(stream.id())?;
        Ok(Self { stream, id })
    }
}

impl quic::RecvStream for RecvHalf {
    type Buf = Bytes;

    fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        // Like `write_chunks`: cancel-safe, done within one poll.
        let read = ready!(pin!(self.stream.read_chunk(usize::MAX, true)).poll(cx)).map_err(read_error)?;
        Poll::Ready(Ok(read.map(|chunk| chunk.bytes)))
    }

    fn stop_sending(&mut self, error_code: u64) {
        // Already finished or stopped: nothing left to do.
        let _ = self.stream.stop(varint(error_code));
    }

    fn recv_id(&self) -> StreamId {
        self.id
    }
}

/// h3's error codes are all below 2^62; should one not be, it goes out as H3_INTERNAL_ERROR.
fn varint(code: u64) -> VarInt {
    VarInt::from_u64(code).unwrap_or(VarInt::from_u32(0x102))
}

/// quinn's stream ids are below 2^62, as h3's must be; the error is for form's sake.
fn stream_id(id: quinn::StreamId) -> Result<StreamId, StreamErrorIncoming> {
    StreamId::try_from(u64::from(id)).map_err(|e| StreamErrorIncoming::ConnectionErrorIncoming {
        connection_error: ConnectionErrorIncoming::InternalError(e.to_string()),
    })
}

trait IntoConnectionError {
    fn into_connection_error(self) -> ConnectionErrorIncoming;
}

impl IntoConnectionError for StreamErrorIncoming {
    fn into_connection_error(self) -> ConnectionErrorIncoming {
        match self {
            StreamErrorIncoming::ConnectionErrorIncoming { connection_error } => connection_error,
            other => ConnectionErrorIncoming::InternalError(other.to_string()),
        }
    }
}

fn connection_error(e: quinn::ConnectionError) -> ConnectionErrorIncoming {
    match e {
        quinn::ConnectionError::ApplicationClosed(close) => {
            ConnectionErrorIncoming::ApplicationClose { error_code: close.error_code.into_inner() }
        }
        quinn::ConnectionError::TimedOut => ConnectionErrorIncoming::Timeout,
        other => ConnectionErrorIncoming::Undefined(Arc::new(other)),
    }
}

fn write_error(e: quinn::WriteError) -> StreamErrorIncoming {
    match e {
        quinn::WriteError::Stopped(code) => StreamErrorIncoming::StreamTerminated { error_code: code.into_inner() },
        quinn::WriteError::ConnectionLost(e) => {
            StreamErrorIncoming::ConnectionErrorIncoming { connection_error: connection_error(e) }
        }
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

fn read_error(e: quinn::ReadError) -> StreamErrorIncoming {
    match e {
        quinn::ReadError::Reset(code) => StreamErrorIncoming::StreamTerminated { error_code: code.into_inner() },
        quinn::ReadError::ConnectionLost(e) => {
            StreamErrorIncoming::ConnectionErrorIncoming { connection_error: connection_error(e) }
        }
        other => StreamErrorIncoming::Unknown(Box::new(other)),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http::{Method, Request, Response, StatusCode};
    use http_body::Frame;
    use http_body_util::{BodyExt as _, StreamBody};

    use crate::client::HttpClient;
    use crate::tls::{self, ClientTls};
    use crate::{Body, Handler, ListenUrl, RequestContext, ResponseBody, Server, ServerConfig};

    /// Body bytes that `take_payload` took over without a copy, over every test in this process.
    pub(super) static HANDED_OVER: AtomicUsize = AtomicUsize::new(0);

    /// A body of `n` bytes that differ from piece to piece, so a dropped or repeated piece shows.
    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i % 251) as u8).collect()
    }

    /// GET: a body sent in uneven pieces (the largest beyond quinn's stream window, so writes
    /// are partial); POST: the request body echoed back whole.
    struct Pieces;

    impl Handler for Pieces {
        async fn call(&self, req: Request<Body>, _ctx: RequestContext) -> Response<ResponseBody> {
            if req.method() == Method::POST {
                let got = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                return crate::full(StatusCode::OK, "application/octet-stream", got);
            }
            let all = Bytes::from(pattern(3 << 20));
            let mut pieces = Vec::new();
            let mut at = 0;
            for size in [1, 1000, 64 << 10, 2 << 20].into_iter().cycle() {
                let end = (at + size).min(all.len());
                pieces.push(Ok::<_, std::io::Error>(Frame::data(all.slice(at..end))));
                at = end;
                if at == all.len() {
                    break;
                }
            }
            let body = StreamBody::new(futures_util::stream::iter(pieces));
            Response::new(body.boxed_unsync())
        }
    }

    #[tokio::test]
    async fn bodies_cross_whole_and_are_handed_over_without_a_copy() {
        let dir = tempfile::tempdir().unwrap();
        let key = tls::load_or_generate(None, None, dir.path()).unwrap();
        let url: ListenUrl = "h3://127.0.0.1:0".parse().unwrap();
        let server = Server::bind(&[url], Some(&key), ServerConfig::default()).await.unwrap();
        let addr = server.local_urls()[0].addr;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Infallible>();
        let serving = tokio::spawn(server.serve(Arc::new(Pieces), async move {
            let _ = stop_rx.await;
        }));

        let client = HttpClient::new(&ClientTls { ca_files: Vec::new(), insecure: true }).unwrap();
        let mut conn = client.connect(&format!("h3://{addr}").parse().unwrap(), false).await.unwrap();
        let before = HANDED_OVER.load(Ordering::Relaxed);
        let resp = conn.get("/").await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.body()[..] == pattern(3 << 20)[..], "body differs");
        // Every piece went to quinn as the `Bytes` the handler made (other tests may add more).
        assert!(HANDED_OVER.load(Ordering::Relaxed) - before >= 3 << 20);

        let head = conn.send(Request::head("/").body(Bytes::new()).unwrap()).await.unwrap();
        assert_eq!(head.status(), StatusCode::OK);
        assert!(head.body().is_empty());

        let upload = Bytes::from(pattern(1 << 20));
        let echoed = conn.send(Request::post("/").body(upload.clone()).unwrap()).await.unwrap();
        assert_eq!(echoed.status(), StatusCode::OK);
        assert!(echoed.body() == &upload, "echo differs");

        drop((conn, client));
        drop(stop_tx);
        serving.await.unwrap();
    }

    /// A UDP relay for one client to `server` that passes the server's datagrams on one at a
    /// time, `gap` apart, as they arrive over a real link. (Straight over loopback, a GSO batch
    /// of ten reaches the client at once and one ACK covers it, with or without decimation.)
    /// Its threads end a few seconds after the traffic does.
    fn pacing_relay(server: std::net::SocketAddr, gap: std::time::Duration) -> std::net::SocketAddr {
        use std::net::UdpSocket;
        let front = UdpSocket::bind("127.0.0.1:0").unwrap();
        let back = UdpSocket::bind("127.0.0.1:0").unwrap();
        back.connect(server).unwrap();
        let idle = Some(std::time::Duration::from_secs(5));
        front.set_read_timeout(idle).unwrap();
        back.set_read_timeout(idle).unwrap();
        let addr = front.local_addr().unwrap();
        let (front2, back2) = (front.try_clone().unwrap(), back.try_clone().unwrap());
        let (client_tx, client_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 65_536];
            let mut told = false;
            while let Ok((n, from)) = front.recv_from(&mut buf) {
                if !told {
                    told = client_tx.send(from).is_ok();
                }
                let _ = back.send(&buf[..n]);
            }
        });
        std::thread::spawn(move || {
            let Ok(client) = client_rx.recv() else { return };
            let mut buf = vec![0u8; 65_536];
            while let Ok(n) = back2.recv(&mut buf) {
                let _ = front2.send_to(&buf[..n], client);
                std::thread::sleep(gap);
            }
        });
        addr
    }

    /// The listener asks clients to acknowledge every tenth packet (see `server::ack_decimation`):
    /// a 3 MiB download (over 2 000 packets) arriving one packet at a time takes a fraction of
    /// the ACKs that QUIC's default, an ACK every other packet, would take.
    #[tokio::test]
    async fn a_download_is_acknowledged_about_every_tenth_packet() {
        let dir = tempfile::tempdir().unwrap();
        let key = tls::load_or_generate(None, None, dir.path()).unwrap();
        let url: ListenUrl = "h3://127.0.0.1:0".parse().unwrap();
        let server = Server::bind(&[url], Some(&key), ServerConfig::default()).await.unwrap();
        let relay = pacing_relay(server.local_urls()[0].addr, std::time::Duration::from_micros(200));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Infallible>();
        let serving = tokio::spawn(server.serve(Arc::new(Pieces), async move {
            let _ = stop_rx.await;
        }));

        let client = HttpClient::new(&ClientTls { ca_files: Vec::new(), insecure: true }).unwrap();
        let mut conn = client.connect(&format!("h3://{relay}").parse().unwrap(), false).await.unwrap();
        let before = conn.quic_stats().unwrap();
        let resp = conn.get("/").await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.body()[..] == pattern(3 << 20)[..], "body differs");
        let after = conn.quic_stats().unwrap();
        let packets = after.packets_received - before.packets_received;
        let acks = after.acks_sent - before.acks_sent;
        eprintln!("{acks} ACKs for {packets} packets");
        assert!(packets > 2000, "{packets} packets for 3 MiB");
        // An ACK every other packet would be over 1 000; every tenth about 220, plus those sent
        // at once for packets that arrived out of order or after a pause.
        assert!(acks * 5 < packets, "{acks} ACKs for {packets} packets");

        drop((conn, client));
        drop(stop_tx);
        serving.await.unwrap();
    }
}
