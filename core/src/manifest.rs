//! The signed track manifest (docs/protocol.md §4).
//!
//! A manifest lists a track's renditions and, for each, the ordered chunk ids, sizes and
//! durations. The origin signs it with ed25519 over the RFC 8785 (JCS) canonical JSON of the
//! manifest without its `signature` member; clients verify against the origin's pinned public
//! key, so edges and peers are untrusted carriers.
//!
//! Verification works on the JSON as received ([`Manifest::verify`]): the signed bytes are the
//! canonical form of *exactly* what arrived, so a member this version does not know about is
//! still covered by the signature. Only after the signature holds are the contents parsed and
//! checked ([`Manifest::validate`]).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature as Ed25519Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::error::{Cause, cause, message};
use crate::id::{ChunkId, RenditionId, TrackId};
use crate::keys::key_id;
use crate::protect::{self, Iv, Protection};

/// The only `format` this version reads and writes.
pub const FORMAT: &str = "chorus-manifest/1";

/// Bounds on what a manifest may hold, so a hostile one cannot exhaust memory.
pub mod limits {
    /// Largest manifest document, in bytes.
    pub const MAX_BYTES: usize = 4 * 1024 * 1024;
    /// Most renditions in one manifest.
    pub const MAX_RENDITIONS: usize = 16;
    /// Most segments in one rendition (about 28 hours of 2-second segments).
    pub const MAX_SEGMENTS: usize = 50_000;
    /// Largest chunk (init or segment), in bytes; the peer protocol carries at most this much.
    pub const MAX_CHUNK_BYTES: u64 = 8 * 1024 * 1024;
    /// Longest title, in bytes.
    pub const MAX_TITLE: usize = 512;
    /// Longest codec string, in bytes.
    pub const MAX_CODEC: usize = 64;
    /// How far the same boundary may differ between two CMAF renditions, in ms: about two AAC
    /// frames at 44.1 kHz, because encoders round segment ends to whole frames.
    pub const ALIGN_TOLERANCE_MS: u64 = 50;
}

/// A track's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// The track this manifest describes.
    pub track_id: TrackId,
    /// A human title; may be empty.
    #[serde(default)]
    pub title: String,
    /// The track's duration in milliseconds.
    pub duration_ms: u64,
    /// The renditions, lowest bitrate first.
    pub renditions: Vec<Rendition>,
    /// Present when the track is protected: its media segments are encrypted under the content
    /// key this names (docs/protocol.md §3.7), and each segment carries its IV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protection: Option<Protection>,
    /// The origin's signature; `None` only while the manifest is being built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// How a rendition's chunks are packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    /// fMP4: an init chunk plus media segments, playable as HLS.
    Cmaf,
    /// A pre-encoded file cut into byte chunks: concatenated, the chunks are the file.
    Raw,
}

impl Container {
    /// The name used in the manifest.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cmaf => "cmaf",
            Self::Raw => "raw",
        }
    }
}

/// One bitrate of one codec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendition {
    /// Its id, e.g. `aac-160`.
    pub id: RenditionId,
    /// RFC 6381 codec string (`mp4a.40.2`) or, for raw files, the format (`mp3`, `flac`…).
    pub codec: String,
    /// Nominal bitrate in bits per second (0 when unknown, for raw files without a probe).
    pub bitrate_bps: u64,
    /// How the chunks are packaged.
    pub container: Container,
    /// The init chunk (CMAF only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<ChunkRef>,
    /// The media chunks in play order.
    pub segments: Vec<Segment>,
}

/// A chunk referenced by id and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the bytes.
    pub id: ChunkId,
    /// Length in bytes.
    pub size: u64,
}

/// A media chunk: a chunk plus how much audio it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// BLAKE3 of the bytes.
    pub id: ChunkId,
    /// Length in bytes.
    pub size: u64,
    /// Audio duration in milliseconds (an estimate for raw chunks; 0 when unknown).
    pub duration_ms: u64,
    /// The IV the segment was encrypted with, in a protected track only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iv: Option<Iv>,
}

/// The signature member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// Always `ed25519`.
    pub alg: String,
    /// First 16 hex characters of BLAKE3(public key bytes).
    pub key_id: String,
    /// The 64-byte signature, standard base64.
    pub value: String,
}

/// Every way a manifest can be wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Larger than [`limits::MAX_BYTES`].
    #[error("manifest is {0} bytes, larger than the {max} byte limit", max = limits::MAX_BYTES)]
    TooLarge(usize),
    /// Not JSON, or JSON of the wrong shape.
    #[error("malformed manifest")]
    Malformed(#[source] Cause),
    /// A `format` other than [`FORMAT`].
    #[error("unsupported manifest format {0:?} (this version reads {FORMAT:?})")]
    UnsupportedFormat(String),
    /// No `signature` member.
    #[error("manifest is not signed")]
    Unsigned,
    /// A signature algorithm other than ed25519.
    #[error("unsupported signature algorithm {0:?} (expected \"ed25519\")")]
    UnsupportedAlgorithm(String),
    /// Signed by a key other than the pinned one.
    #[error("manifest is signed by key {found}, not by the pinned origin key {expected}")]
    WrongKey {
        /// The pinned key's id.
        expected: String,
        /// The manifest's key id.
        found: String,
    },
    /// The signature does not verify: the manifest was changed after signing.
    #[error("manifest signature is invalid: the manifest was altered or corrupted after signing")]
    BadSignature,
    /// Parsed and signed, but its contents break a rule.
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

impl ManifestError {
    /// Whether fetching the manifest again, from elsewhere, could help. A malformed or tampered
    /// manifest could be a carrier's fault; a wrong key or format is the origin's configuration.
    #[must_use]
    pub const fn is_retryable_elsewhere(&self) -> bool {
        matches!(self, Self::Malformed(_) | Self::BadSignature | Self::Unsigned | Self::TooLarge(_))
    }
}

impl Manifest {
    /// A new unsigned manifest for `track_id`.
    #[must_use]
    pub fn new(track_id: TrackId, title: String, duration_ms: u64, renditions: Vec<Rendition>) -> Self {
        Self { format: FORMAT.to_owned(), track_id, title, duration_ms, renditions, protection: None, signature: None }
    }

    /// The RFC 8785 canonical bytes that the signature covers: the manifest without `signature`.
    ///
    /// # Errors
    /// [`ManifestError::Malformed`] if serialisation fails (it cannot for a well-formed value).
    pub fn signing_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        let mut unsigned = self.clone();
        unsigned.signature = None;
        serde_jcs::to_vec(&unsigned).map_err(|e| ManifestError::Malformed(cause(e)))
    }

    /// Checks the contents, then signs with `key`, replacing any previous signature.
    ///
    /// # Errors
    /// [`ManifestError::Invalid`] when the contents break a rule of [`Manifest::validate`].
    pub fn sign(&mut self, key: &SigningKey) -> Result<(), ManifestError> {
        self.validate()?;
        let sig = key.sign(&self.signing_bytes()?);
        self.signature = Some(Signature {
            alg: "ed25519".to_owned(),
            key_id: key_id(&key.verifying_key()),
            value: BASE64.encode(sig.to_bytes()),
        });
        Ok(())
    }

    /// The document to publish: canonical JSON of the signed manifest (stable bytes, so the
    /// same track ingested twice is byte-identical and its `ETag` does not change).
    ///
    /// # Errors
    /// [`ManifestError::Malformed`] if serialisation fails.
    pub fn to_json(&self) -> Result<Vec<u8>, ManifestError> {
        serde_jcs::to_vec(self).map_err(|e| ManifestError::Malformed(cause(e)))
    }

    /// Verifies `bytes` against the pinned origin `key`, then parses and validates them.
    ///
    /// # Errors
    /// A [`ManifestError`] naming the first thing wrong, checked in this order: size, JSON,
    /// format, signature presence, algorithm, key, signature, contents.
    pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<Self, ManifestError> {
        if bytes.len() > limits::MAX_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let mut value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Malformed(cause(e)))?;
        let obj = value.as_object_mut().ok_or_else(|| ManifestError::Malformed(message("not a JSON object")))?;
        match obj.get("format").and_then(|f| f.as_str()) {
            Some(FORMAT) => {}
            Some(other) => return Err(ManifestError::UnsupportedFormat(other.to_owned())),
            None => return Err(ManifestError::Malformed(message("missing \"format\""))),
        }
        let sig_value = obj.remove("signature").ok_or(ManifestError::Unsigned)?;
        let sig: Signature = serde_json::from_value(sig_value)
            .map_err(|e| ManifestError::Malformed(message(format!("signature: {e}"))))?;
        if sig.alg != "ed25519" {
            return Err(ManifestError::UnsupportedAlgorithm(sig.alg));
        }
        let expected = key_id(key);
        if sig.key_id != expected {
            return Err(ManifestError::WrongKey { expected, found: sig.key_id });
        }
        let raw: [u8; 64] = BASE64
            .decode(sig.value.as_bytes())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or(ManifestError::BadSignature)?;
        let signed = serde_jcs::to_vec(&value).map_err(|e| ManifestError::Malformed(cause(e)))?;
        key.verify(&signed, &Ed25519Signature::from_bytes(&raw)).map_err(|_| ManifestError::BadSignature)?;
        let mut manifest: Self = serde_json::from_value(value).map_err(|e| ManifestError::Malformed(cause(e)))?;
        manifest.signature = Some(sig);
        manifest.validate()?;
        Ok(manifest)
    }

    /// Checks the rules a manifest's contents must follow (bounds, containers, alignment).
    ///
    /// # Errors
    /// [`ManifestError::Invalid`] or [`ManifestError::UnsupportedFormat`] with what is wrong.
    pub fn validate(&self) -> Result<(), ManifestError> {
        let invalid = |m: String| Err(ManifestError::Invalid(m));
        if self.format != FORMAT {
            return Err(ManifestError::UnsupportedFormat(self.format.clone()));
        }
        if self.title.len() > limits::MAX_TITLE {
            return invalid(format!("title longer than {} bytes", limits::MAX_TITLE));
        }
        if self.renditions.is_empty() || self.renditions.len() > limits::MAX_RENDITIONS {
            return invalid(format!("{} renditions (expected 1 to {})", self.renditions.len(), limits::MAX_RENDITIONS));
        }
        if let Some(p) = &self.protection
            && p.method != protect::METHOD
        {
            return invalid(format!(
                "unsupported protection method {:?} (this version knows {:?})",
                p.method,
                protect::METHOD
            ));
        }
        let mut seen = std::collections::HashSet::new();
        let mut cmaf_reference: Option<&Rendition> = None;
        for r in &self.renditions {
            // A protected track's segments each have an IV and a whole number of AES blocks; a
            // clear track's have none (an IV there would make players ask for a key).
            for (i, s) in r.segments.iter().enumerate() {
                match (&self.protection, s.iv) {
                    (Some(_), None) => {
                        return invalid(format!("rendition {}: segment {i} of a protected track has no iv", r.id));
                    }
                    (None, Some(_)) => {
                        return invalid(format!(
                            "rendition {}: segment {i} has an iv but the track is not protected",
                            r.id
                        ));
                    }
                    (Some(_), Some(_)) if s.size % 16 != 0 => {
                        return invalid(format!(
                            "rendition {}: encrypted segment {i} is not a whole number of AES blocks",
                            r.id
                        ));
                    }
                    _ => {}
                }
            }
            if !seen.insert(&r.id) {
                return invalid(format!("rendition {} appears twice", r.id));
            }
            if r.codec.is_empty() || r.codec.len() > limits::MAX_CODEC || !r.codec.bytes().all(|b| b.is_ascii_graphic())
            {
                return invalid(format!("rendition {}: bad codec string", r.id));
            }
            if r.segments.is_empty() || r.segments.len() > limits::MAX_SEGMENTS {
                return invalid(format!(
                    "rendition {}: {} segments (expected 1 to {})",
                    r.id,
                    r.segments.len(),
                    limits::MAX_SEGMENTS
                ));
            }
            let sizes = r.init.iter().map(|c| c.size).chain(r.segments.iter().map(|s| s.size));
            for size in sizes {
                if size == 0 || size > limits::MAX_CHUNK_BYTES {
                    return invalid(format!(
                        "rendition {}: chunk of {size} bytes (expected 1 to {})",
                        r.id,
                        limits::MAX_CHUNK_BYTES
                    ));
                }
            }
            match (r.container, &r.init) {
                (Container::Cmaf, None) => {
                    return invalid(format!("rendition {}: cmaf needs an init chunk", r.id));
                }
                (Container::Raw, Some(_)) => {
                    return invalid(format!("rendition {}: raw has no init chunk", r.id));
                }
                (Container::Cmaf, Some(_)) => {
                    if let Some(first) = cmaf_reference {
                        check_aligned(first, r)?;
                    } else {
                        cmaf_reference = Some(r);
                    }
                }
                (Container::Raw, None) => {}
            }
        }
        Ok(())
    }

    /// The rendition with id `id`.
    #[must_use]
    pub fn rendition(&self, id: &str) -> Option<&Rendition> {
        self.renditions.iter().find(|r| r.id.as_str() == id)
    }

    /// Every chunk the manifest names (init chunks first per rendition), duplicates included.
    pub fn chunks(&self) -> impl Iterator<Item = ChunkRef> + '_ {
        self.renditions.iter().flat_map(Rendition::chunks)
    }
}

impl Rendition {
    /// The rendition's chunks in play order: the init chunk (if any), then the segments.
    pub fn chunks(&self) -> impl Iterator<Item = ChunkRef> + '_ {
        self.init.iter().copied().chain(self.segments.iter().map(|s| ChunkRef { id: s.id, size: s.size }))
    }

    /// Total bytes of all chunks.
    #[must_use]
    pub fn total_bytes(&self) -> u64 {
        self.chunks().map(|c| c.size).sum()
    }

    /// Sum of the segment durations, in ms.
    #[must_use]
    pub fn duration_ms(&self) -> u64 {
        self.segments.iter().map(|s| s.duration_ms).sum()
    }
}

/// Two CMAF renditions must cut at the same instants: same segment count, each boundary within
/// [`limits::ALIGN_TOLERANCE_MS`].
fn check_aligned(a: &Rendition, b: &Rendition) -> Result<(), ManifestError> {
    if a.segments.len() != b.segments.len() {
        return Err(ManifestError::Invalid(format!(
            "renditions {} and {} are not time-aligned: {} vs {} segments",
            a.id,
            b.id,
            a.segments.len(),
            b.segments.len()
        )));
    }
    let (mut ta, mut tb) = (0u64, 0u64);
    for (i, (sa, sb)) in a.segments.iter().zip(&b.segments).enumerate() {
        ta += sa.duration_ms;
        tb += sb.duration_ms;
        if ta.abs_diff(tb) > limits::ALIGN_TOLERANCE_MS {
            return Err(ManifestError::Invalid(format!(
                "renditions {} and {} are not time-aligned: segment {i} ends at {ta} ms vs {tb} ms",
                a.id, b.id
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seg(n: u8, dur: u64) -> Segment {
        Segment { id: ChunkId::of(&[n]), size: 1000 + u64::from(n), duration_ms: dur, iv: None }
    }

    pub(crate) fn sample() -> Manifest {
        let r = |id: &str, bps: u64| Rendition {
            id: RenditionId::parse(id).unwrap(),
            codec: "mp4a.40.2".to_owned(),
            bitrate_bps: bps,
            container: Container::Cmaf,
            init: Some(ChunkRef { id: ChunkId::of(id.as_bytes()), size: 812 }),
            segments: vec![seg(1, 6000), seg(2, 6000), seg(3, 2017)],
        };
        Manifest::new(
            TrackId::parse("demo-1").unwrap(),
            "Démo \"1\"".to_owned(),
            14017,
            vec![r("aac-24", 24000), r("aac-96", 96000)],
        )
    }

    fn signed() -> (Manifest, SigningKey, Vec<u8>) {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut m = sample();
        m.sign(&key).unwrap();
        let json = m.to_json().unwrap();
        (m, key, json)
    }

    #[test]
    fn sign_verify_roundtrip() {
        let (m, key, json) = signed();
        let back = Manifest::verify(&json, &key.verifying_key()).unwrap();
        assert_eq!(back, m);
        // Canonical and stable: signing again gives the same bytes.
        let mut again = sample();
        again.sign(&key).unwrap();
        assert_eq!(again.to_json().unwrap(), json);
        // Pretty-printed JSON still verifies: the signature is over the canonical form.
        let pretty = serde_json::to_vec_pretty(&serde_json::from_slice::<serde_json::Value>(&json).unwrap()).unwrap();
        assert!(Manifest::verify(&pretty, &key.verifying_key()).is_ok());
    }

    #[test]
    fn wrong_key_is_named() {
        let (_, _, json) = signed();
        let other = SigningKey::from_bytes(&[8; 32]);
        assert!(matches!(Manifest::verify(&json, &other.verifying_key()), Err(ManifestError::WrongKey { .. })));
    }

    #[test]
    fn each_failure_has_its_error() {
        let (_, key, json) = signed();
        let vk = key.verifying_key();
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert!(matches!(Manifest::verify(b"{not json", &vk), Err(ManifestError::Malformed(_))));
        assert!(matches!(Manifest::verify(b"[]", &vk), Err(ManifestError::Malformed(_))));
        assert!(matches!(Manifest::verify(&vec![b' '; limits::MAX_BYTES + 1], &vk), Err(ManifestError::TooLarge(_))));

        let mut f = v.clone();
        f["format"] = "chorus-manifest/2".into();
        assert!(matches!(
            Manifest::verify(&serde_json::to_vec(&f).unwrap(), &vk),
            Err(ManifestError::UnsupportedFormat(_))
        ));

        let mut u = v.clone();
        u.as_object_mut().unwrap().remove("signature");
        assert!(matches!(Manifest::verify(&serde_json::to_vec(&u).unwrap(), &vk), Err(ManifestError::Unsigned)));

        let mut a = v.clone();
        a["signature"]["alg"] = "rsa".into();
        assert!(matches!(
            Manifest::verify(&serde_json::to_vec(&a).unwrap(), &vk),
            Err(ManifestError::UnsupportedAlgorithm(_))
        ));

        v["signature"]["value"] = "AAAA".into();
        assert!(matches!(Manifest::verify(&serde_json::to_vec(&v).unwrap(), &vk), Err(ManifestError::BadSignature)));
    }

    #[test]
    fn added_member_breaks_the_signature() {
        let (_, key, json) = signed();
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v["extra"] = serde_json::json!({"x": 1});
        assert!(matches!(
            Manifest::verify(&serde_json::to_vec(&v).unwrap(), &key.verifying_key()),
            Err(ManifestError::BadSignature)
        ));
    }

    #[test]
    fn protection_needs_an_iv_on_every_segment_and_only_then() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut m = sample();
        m.protection = Some(Protection::new(protect::KeyId::parse("00112233445566aa").unwrap()));
        assert!(m.validate().unwrap_err().to_string().contains("has no iv"));
        for r in &mut m.renditions {
            for s in &mut r.segments {
                s.iv = Some(Iv([1; 16]));
                s.size = 1008;
            }
        }
        m.sign(&key).unwrap();
        let json = m.to_json().unwrap();
        let back = Manifest::verify(&json, &key.verifying_key()).unwrap();
        assert_eq!(back.protection, m.protection);
        assert_eq!(back.renditions[0].segments[0].iv, Some(Iv([1; 16])));
        // Dropping the protection member breaks the signature: a carrier cannot unprotect it.
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        v.as_object_mut().unwrap().remove("protection");
        assert!(matches!(
            Manifest::verify(&serde_json::to_vec(&v).unwrap(), &key.verifying_key()),
            Err(ManifestError::BadSignature)
        ));
        let mut odd = m.clone();
        odd.renditions[0].segments[0].size = 1001;
        assert!(odd.validate().unwrap_err().to_string().contains("AES blocks"));
        let mut method = m.clone();
        method.protection.as_mut().unwrap().method = "rot13".into();
        assert!(method.validate().unwrap_err().to_string().contains("unsupported protection method"));
        let mut clear = m;
        clear.protection = None;
        assert!(clear.validate().unwrap_err().to_string().contains("not protected"));
    }

    #[test]
    fn validation_rules() {
        let mut m = sample();
        m.renditions[1].segments.pop();
        assert!(m.validate().unwrap_err().to_string().contains("not time-aligned"));
        let mut m = sample();
        m.renditions[1].segments[0].duration_ms = 6100;
        assert!(m.validate().is_err());
        let mut m = sample();
        m.renditions[0].init = None;
        assert!(m.validate().is_err());
        let mut m = sample();
        m.renditions[0].segments[0].size = 0;
        assert!(m.validate().is_err());
        let mut m = sample();
        m.renditions[1].id = m.renditions[0].id.clone();
        assert!(m.validate().is_err());
        let mut m = sample();
        m.renditions.clear();
        assert!(m.sign(&SigningKey::from_bytes(&[1; 32])).is_err());
    }

    /// Replaces the leaf at `index` (in document order) of a JSON value with a different value.
    fn tamper(v: &mut serde_json::Value, index: &mut usize) -> bool {
        use serde_json::Value;
        match v {
            Value::Object(map) => {
                map.iter_mut().filter(|(k, _)| k.as_str() != "signature").any(|(_, x)| tamper(x, index))
            }
            Value::Array(items) => items.iter_mut().any(|x| tamper(x, index)),
            leaf => {
                if *index == 0 {
                    let new = match &*leaf {
                        Value::Number(n) => Value::from(n.as_u64().unwrap_or(0) + 1),
                        Value::String(s) => {
                            // Flip the last character to another valid one of the same class.
                            let mut c: Vec<char> = s.chars().collect();
                            let last = c.last_mut().unwrap();
                            *last = if *last == '0' {
                                '1'
                            } else if last.is_ascii_digit() {
                                '0'
                            } else if *last == 'a' {
                                'b'
                            } else {
                                'a'
                            };
                            Value::String(c.into_iter().collect())
                        }
                        other => (*other).clone(),
                    };
                    *leaf = new;
                    true
                } else {
                    *index -= 1;
                    false
                }
            }
        }
    }

    proptest! {
        /// Changing any single field of a signed manifest is detected.
        #[test]
        fn tampering_any_field_is_detected(which in 0usize..64) {
            let (_, key, json) = signed();
            let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            let mut i = which;
            prop_assume!(tamper(&mut v, &mut i));
            let r = Manifest::verify(&serde_json::to_vec(&v).unwrap(), &key.verifying_key());
            prop_assert!(matches!(r, Err(ManifestError::BadSignature | ManifestError::UnsupportedFormat(_))), "{:?}", r);
        }

        /// Arbitrary bytes never panic the verifier.
        #[test]
        fn verify_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let key = SigningKey::from_bytes(&[7; 32]);
            let _ = Manifest::verify(&bytes, &key.verifying_key());
        }
    }
}
