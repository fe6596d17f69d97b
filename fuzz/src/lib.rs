//! What each fuzz target does with its input, in one place (the targets in `fuzz_targets/`
//! are one line each). Every function must return for any input without panicking; where a
//! decoder accepts, the result must keep the decoder's bounds and survive a round trip.

use std::sync::LazyLock;
use std::time::{Duration, UNIX_EPOCH};

use chorus_core::keys::{SigningKey, VerifyingKey};

#[cfg(feature = "net")]
use std::{
    future::Future,
    pin::pin,
    task::{Context, Poll, Waker},
};

#[cfg(feature = "net")]
use chorus_peer::wire::{
    ChunkCodec, ChunkRequest, ChunkResponse, Codec as _, HaveCodec, HaveRequest, HaveResponse, MAX_CHUNK,
    MAX_HAVE_IDS,
};
#[cfg(feature = "net")]
use futures_util::io::Cursor;

/// Runs `f`, which reads from memory and so never waits, to completion.
#[cfg(feature = "net")]
fn ready<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(out) => out,
        Poll::Pending => unreachable!("reading from memory does not wait"),
    }
}

/// The chunk protocol's decoders; what a request decodes to encodes back to the same.
#[cfg(feature = "net")]
pub fn wire_chunk(data: &[u8]) {
    let p = chorus_peer::wire::CHUNK_PROTOCOL;
    if let Ok(req @ ChunkRequest::Get { .. }) = ready(ChunkCodec.read_request(&p, &mut Cursor::new(data))) {
        let mut out = Cursor::new(Vec::new());
        ready(ChunkCodec.write_request(&p, &mut out, req.clone())).expect("a decoded request encodes");
        let again = ready(ChunkCodec.read_request(&p, &mut Cursor::new(out.into_inner()))).expect("and decodes");
        assert_eq!(again, req);
    }
    if let Ok(ChunkResponse::Ok(bytes)) = ready(ChunkCodec.read_response(&p, &mut Cursor::new(data))) {
        assert!(bytes.len() <= MAX_CHUNK);
    }
}

/// The have protocol's decoders.
#[cfg(feature = "net")]
pub fn wire_have(data: &[u8]) {
    let p = chorus_peer::wire::HAVE_PROTOCOL;
    if let Ok(req @ HaveRequest::Track(_)) = ready(HaveCodec.read_request(&p, &mut Cursor::new(data))) {
        let mut out = Cursor::new(Vec::new());
        ready(HaveCodec.write_request(&p, &mut out, req.clone())).expect("a decoded request encodes");
        let again = ready(HaveCodec.read_request(&p, &mut Cursor::new(out.into_inner()))).expect("and decodes");
        assert_eq!(again, req);
    }
    if let Ok(HaveResponse::Ok(ids)) = ready(HaveCodec.read_response(&p, &mut Cursor::new(data))) {
        assert!(ids.len() <= MAX_HAVE_IDS);
    }
}

static KEY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[7; 32]));
static PUBLIC: LazyLock<VerifyingKey> = LazyLock::new(|| KEY.verifying_key());

/// The manifest verifier: a manifest it accepts keeps every rule.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = chorus_core::Manifest::verify(data, &PUBLIC) {
        m.validate().expect("a verified manifest is valid");
    }
}

/// The access-token verifier.
pub fn token(data: &[u8]) {
    static VERIFIER: LazyLock<chorus_core::token::TokenVerifier> = LazyLock::new(|| {
        chorus_core::token::TokenVerifier::new(&PUBLIC, Duration::from_secs(30)).expect("a verifier")
    });
    let now = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let _ = VERIFIER.verify(&String::from_utf8_lossy(data), now);
}

/// The announce decoder: the JSON body, then the signed envelope inside.
pub fn announce(data: &[u8]) {
    use chorus_core::announce::SignedAnnounce;
    if let Ok(body) = serde_json::from_slice::<SignedAnnounce>(data) {
        let _ = body.open();
    }
    if let Ok((a, peer)) = (SignedAnnounce { envelope: String::from_utf8_lossy(data).into_owned() }).open() {
        assert_eq!(a.peer_id, peer.to_base58());
        a.validate().expect("an opened announce is valid");
    }
}

/// The HLS importer's playlist parser.
#[cfg(feature = "net")]
pub fn hls_playlist(data: &[u8]) {
    let _ = chorus_origin::ingest::fuzz_hls_playlist(data);
}

/// The HTTP/1.1 fast path's head parser.
#[cfg(feature = "net")]
pub fn h1_head(data: &[u8]) {
    let _ = chorus_http::fuzz_h1_head(data);
}

/// Protected tracks' decoders: IVs and key ids as manifests and key URLs carry them, and the
/// decryption of segment bytes a peer or an edge sent (any bytes, one fixed key). What parses
/// prints back the same; what decrypts encrypts back to the same bytes.
pub fn protect(data: &[u8]) {
    use chorus_core::protect::{self, ContentKey, Iv, KeyId};
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(iv) = text.parse::<Iv>() {
            assert_eq!(iv.to_string(), text);
        }
        if let Ok(id) = KeyId::parse(text) {
            assert_eq!(id.as_str(), text);
        }
    }
    let key = ContentKey::from_slice(&[9; 16]).expect("16 bytes");
    let iv = Iv([3; 16]);
    if let Ok(plain) = protect::decrypt(&key, &iv, data) {
        assert_eq!(protect::encrypt(&key, &iv, &plain), data);
    }
    if let Ok(key) = ContentKey::from_slice(data) {
        assert_eq!(key.as_bytes().as_slice(), data);
    }
}
