//! The two chorus protocols exactly as docs/protocol.md §5 frames them, as libp2p request-response codecs.
//!
//! One request per stream; the requester writes its request and closes its write side
//! (libp2p-request-response does both). "varint" is unsigned LEB128 (multiformats
//! unsigned-varint). Every length is checked against its bound before anything is allocated.
//!
//! `/chorus/chunk/2.0.0`: request `varint 32` + the 32 raw id bytes; response one status byte,
//! and after OK `varint N` + N bytes of chunk, N ≤ 8 MiB. Version 1 also carried the listener's
//! access token; no credential ever crosses the peer wire now (peers carry protected tracks as
//! ciphertext, docs/security.md), so a request longer than an id is malformed.
//!
//! `/chorus/have/1.0.0`: request `varint L` + the UTF-8 track id; response a status byte, and
//! after OK `varint C` + C × 32 raw chunk ids.

use std::io;

use bytes::Bytes;
use chorus_core::{ChunkId, TrackId};
use futures_util::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::StreamProtocol;
/// The trait the codecs implement (libp2p request-response).
pub use libp2p::request_response::Codec;

/// `/chorus/chunk/2.0.0`.
pub const CHUNK_PROTOCOL: StreamProtocol = StreamProtocol::new("/chorus/chunk/2.0.0");
/// `/chorus/have/1.0.0`.
pub const HAVE_PROTOCOL: StreamProtocol = StreamProtocol::new("/chorus/have/1.0.0");
/// The only chunk request length: one raw id.
pub const CHUNK_REQUEST_LEN: usize = 32;
/// Largest chunk.
pub const MAX_CHUNK: usize = 8 << 20;
/// Largest track id in a have request (track ids are at most 64 characters).
pub const MAX_HAVE_REQUEST: usize = 64;
/// Most chunk ids in a have response (8 MiB of ids would be absurd; a track has hundreds).
pub const MAX_HAVE_IDS: usize = 65_536;

/// A response status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// The payload follows.
    Ok = 0,
    /// Not held.
    NotFound = 1,
    /// Upload limit reached (or this peer only consumes); ask elsewhere.
    Busy = 2,
    /// Version 1's "token refused"; never sent now (a peer needs no credential to serve).
    Unauthorized = 3,
    /// The request was malformed.
    BadRequest = 4,
}

impl Status {
    fn from_byte(b: u8) -> io::Result<Self> {
        Ok(match b {
            0 => Self::Ok,
            1 => Self::NotFound,
            2 => Self::Busy,
            3 => Self::Unauthorized,
            4 => Self::BadRequest,
            _ => return Err(invalid(format!("unknown status {b}"))),
        })
    }
}

/// A chunk request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkRequest {
    /// A well-formed request.
    Get {
        /// The chunk.
        id: ChunkId,
    },
    /// Bytes that do not form a request (answered BAD_REQUEST).
    Malformed,
}

/// A chunk response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkResponse {
    /// The chunk's bytes (not yet verified: the receiver checks them against the id).
    Ok(Bytes),
    /// Anything but OK.
    Refused(Status),
}

/// A have request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaveRequest {
    /// Which chunks of this track are held?
    Track(TrackId),
    /// Not a valid track id (answered BAD_REQUEST).
    Malformed,
}

/// A have response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaveResponse {
    /// The ids held.
    Ok(Vec<ChunkId>),
    /// Anything but OK.
    Refused(Status),
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

async fn read_varint<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<usize> {
    let n = unsigned_varint::aio::read_usize(&mut *io).await.map_err(|e| match e {
        unsigned_varint::io::ReadError::Io(e) => e,
        other => invalid(other.to_string()),
    })?;
    if n > max {
        return Err(invalid(format!("length {n} over the limit of {max}")));
    }
    Ok(n)
}

async fn write_varint<T: AsyncWrite + Unpin + Send>(io: &mut T, n: usize) -> io::Result<()> {
    let mut buf = unsigned_varint::encode::usize_buffer();
    io.write_all(unsigned_varint::encode::usize(n, &mut buf)).await
}

async fn read_exact_vec<T: AsyncRead + Unpin + Send>(io: &mut T, n: usize) -> io::Result<Vec<u8>> {
    let mut v = vec![0u8; n];
    io.read_exact(&mut v).await?;
    Ok(v)
}

async fn read_status<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Status> {
    let mut b = [0u8; 1];
    io.read_exact(&mut b).await?;
    Status::from_byte(b[0])
}

/// Parses the body of a chunk request.
#[must_use]
pub fn parse_chunk_request(body: &[u8]) -> ChunkRequest {
    match <[u8; CHUNK_REQUEST_LEN]>::try_from(body) {
        Ok(id) => ChunkRequest::Get { id: ChunkId::from_bytes(id) },
        Err(_) => ChunkRequest::Malformed,
    }
}

/// The codec of `/chorus/chunk/2.0.0`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkCodec;

impl Codec for ChunkCodec {
    type Protocol = StreamProtocol;
    type Request = ChunkRequest;
    type Response = ChunkResponse;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<ChunkRequest> {
        let n = read_varint(io, CHUNK_REQUEST_LEN).await?;
        Ok(parse_chunk_request(&read_exact_vec(io, n).await?))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<ChunkResponse> {
        match read_status(io).await? {
            Status::Ok => {
                let n = read_varint(io, MAX_CHUNK).await?;
                Ok(ChunkResponse::Ok(Bytes::from(read_exact_vec(io, n).await?)))
            }
            s => Ok(ChunkResponse::Refused(s)),
        }
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: ChunkRequest,
    ) -> io::Result<()> {
        let ChunkRequest::Get { id } = req else { return Err(invalid("cannot send a malformed request")) };
        write_varint(io, CHUNK_REQUEST_LEN).await?;
        io.write_all(id.as_bytes()).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: ChunkResponse,
    ) -> io::Result<()> {
        match res {
            ChunkResponse::Ok(bytes) => {
                if bytes.len() > MAX_CHUNK {
                    return io.write_all(&[Status::BadRequest as u8]).await;
                }
                io.write_all(&[Status::Ok as u8]).await?;
                write_varint(io, bytes.len()).await?;
                io.write_all(&bytes).await
            }
            ChunkResponse::Refused(s) => io.write_all(&[s as u8]).await,
        }
    }
}

/// The codec of `/chorus/have/1.0.0`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HaveCodec;

impl Codec for HaveCodec {
    type Protocol = StreamProtocol;
    type Request = HaveRequest;
    type Response = HaveResponse;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<HaveRequest> {
        let n = read_varint(io, MAX_HAVE_REQUEST).await?;
        let body = read_exact_vec(io, n).await?;
        Ok(std::str::from_utf8(&body)
            .ok()
            .and_then(|t| TrackId::parse(t).ok())
            .map_or(HaveRequest::Malformed, HaveRequest::Track))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<HaveResponse> {
        match read_status(io).await? {
            Status::Ok => {
                let c = read_varint(io, MAX_HAVE_IDS).await?;
                let raw = read_exact_vec(io, c * 32).await?;
                let ids = raw.chunks_exact(32).filter_map(|b| b.try_into().ok().map(ChunkId::from_bytes)).collect();
                Ok(HaveResponse::Ok(ids))
            }
            s => Ok(HaveResponse::Refused(s)),
        }
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: HaveRequest,
    ) -> io::Result<()> {
        let HaveRequest::Track(t) = req else { return Err(invalid("cannot send a malformed request")) };
        write_varint(io, t.as_str().len()).await?;
        io.write_all(t.as_str().as_bytes()).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: HaveResponse,
    ) -> io::Result<()> {
        match res {
            HaveResponse::Ok(ids) => {
                let ids = &ids[..ids.len().min(MAX_HAVE_IDS)];
                io.write_all(&[Status::Ok as u8]).await?;
                write_varint(io, ids.len()).await?;
                for id in ids {
                    io.write_all(id.as_bytes()).await?;
                }
                Ok(())
            }
            HaveResponse::Refused(s) => io.write_all(&[s as u8]).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::io::Cursor;

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
    }

    #[test]
    fn chunk_request_bytes_are_exactly_the_spec() {
        let id = ChunkId::of(b"hello");
        let mut out = Cursor::new(Vec::new());
        block(ChunkCodec.write_request(&CHUNK_PROTOCOL, &mut out, ChunkRequest::Get { id })).unwrap();
        let bytes = out.into_inner();
        // Exactly the id: nothing else (no credential) is ever written.
        assert_eq!(bytes.len(), 33);
        assert_eq!(bytes[0], 32);
        assert_eq!(&bytes[1..33], id.as_bytes());
        let back = block(ChunkCodec.read_request(&CHUNK_PROTOCOL, &mut Cursor::new(bytes))).unwrap();
        assert_eq!(back, ChunkRequest::Get { id });
    }

    #[test]
    fn chunk_response_round_trips_and_is_bounded() {
        let body = Bytes::from(vec![7u8; 300]);
        let mut out = Cursor::new(Vec::new());
        block(ChunkCodec.write_response(&CHUNK_PROTOCOL, &mut out, ChunkResponse::Ok(body.clone()))).unwrap();
        let bytes = out.into_inner();
        assert_eq!(&bytes[..3], &[0, 0xac, 0x02]); // OK, varint 300
        let back = block(ChunkCodec.read_response(&CHUNK_PROTOCOL, &mut Cursor::new(bytes))).unwrap();
        assert_eq!(back, ChunkResponse::Ok(body));
        // A length over 8 MiB is refused before anything is allocated.
        let mut huge = vec![0u8];
        let mut buf = unsigned_varint::encode::usize_buffer();
        huge.extend_from_slice(unsigned_varint::encode::usize(MAX_CHUNK + 1, &mut buf));
        assert!(block(ChunkCodec.read_response(&CHUNK_PROTOCOL, &mut Cursor::new(huge))).is_err());
        // Statuses other than OK carry nothing; unknown ones are errors.
        let busy = block(ChunkCodec.read_response(&CHUNK_PROTOCOL, &mut Cursor::new(vec![2u8]))).unwrap();
        assert_eq!(busy, ChunkResponse::Refused(Status::Busy));
        assert!(block(ChunkCodec.read_response(&CHUNK_PROTOCOL, &mut Cursor::new(vec![9u8]))).is_err());
    }

    #[test]
    fn bad_requests_are_malformed_not_errors() {
        let mut short = vec![5u8];
        short.extend_from_slice(b"short");
        let got = block(ChunkCodec.read_request(&CHUNK_PROTOCOL, &mut Cursor::new(short))).unwrap();
        assert_eq!(got, ChunkRequest::Malformed);
        // Version 1's id + token is longer than an id: refused before anything is read.
        let mut v1 = vec![35u8];
        v1.extend_from_slice(&[0xffu8; 35]);
        assert!(block(ChunkCodec.read_request(&CHUNK_PROTOCOL, &mut Cursor::new(v1))).is_err());
        let mut bad_track = vec![3u8];
        bad_track.extend_from_slice(b"a/b");
        assert_eq!(
            block(HaveCodec.read_request(&HAVE_PROTOCOL, &mut Cursor::new(bad_track))).unwrap(),
            HaveRequest::Malformed
        );
    }

    #[test]
    fn have_round_trips() {
        let ids: Vec<ChunkId> = (0..3u8).map(|i| ChunkId::of(&[i])).collect();
        let mut out = Cursor::new(Vec::new());
        block(HaveCodec.write_response(&HAVE_PROTOCOL, &mut out, HaveResponse::Ok(ids.clone()))).unwrap();
        let bytes = out.into_inner();
        assert_eq!(bytes.len(), 1 + 1 + 96);
        assert_eq!(
            block(HaveCodec.read_response(&HAVE_PROTOCOL, &mut Cursor::new(bytes))).unwrap(),
            HaveResponse::Ok(ids)
        );
        let t = TrackId::parse("tides").unwrap();
        let mut out = Cursor::new(Vec::new());
        block(HaveCodec.write_request(&HAVE_PROTOCOL, &mut out, HaveRequest::Track(t.clone()))).unwrap();
        assert_eq!(out.get_ref(), b"\x05tides");
        assert_eq!(
            block(HaveCodec.read_request(&HAVE_PROTOCOL, &mut Cursor::new(out.into_inner()))).unwrap(),
            HaveRequest::Track(t)
        );
    }
}
