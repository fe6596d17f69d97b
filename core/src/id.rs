//! Identifiers, parsed and validated once at the edge of the system.
//!
//! - [`TrackId`]: what an operator names a track, `[A-Za-z0-9_-]{1,64}`.
//! - [`ChunkId`]: the BLAKE3 hash of a chunk's bytes, written as 64 lowercase hex characters.
//! - [`RenditionId`]: a rendition's name inside a manifest, `[a-z0-9_-]{1,32}` (lowercase so that
//!   it is safe as a file name and a URL path segment on every platform).
//!
//! Once a value of one of these types exists it is valid, so code further in can use it as a
//! path segment or a map key without checking again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// A track id must be 1 to 64 characters of `A-Z a-z 0-9 _ -`.
    #[error("invalid track id {0:?}: expected 1 to 64 characters of A-Z, a-z, 0-9, '_' or '-'")]
    Track(String),
    /// A chunk id must be 64 lowercase hex characters.
    #[error("invalid chunk id {0:?}: expected 64 lowercase hex characters (a BLAKE3 hash)")]
    Chunk(String),
    /// A rendition id must be 1 to 32 characters of `a-z 0-9 _ -`.
    #[error("invalid rendition id {0:?}: expected 1 to 32 characters of a-z, 0-9, '_' or '-'")]
    Rendition(String),
}

/// Shortens what we echo back in an error, so a hostile 1 MB "id" does not become a 1 MB log line.
fn excerpt(s: &str) -> String {
    if s.len() <= 80 {
        s.to_owned()
    } else {
        let mut end = 80;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &s[..end])
    }
}

/// A track's id: `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrackId(String);

impl TrackId {
    /// The longest track id accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses and validates a track id.
    ///
    /// # Errors
    /// [`IdError::Track`] when `s` is empty, too long or has a character outside the set.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok { Ok(Self(s.to_owned())) } else { Err(IdError::Track(excerpt(s))) }
    }

    /// The id as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A rendition's id inside a manifest: `[a-z0-9_-]{1,32}`, e.g. `aac-160`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RenditionId(String);

impl RenditionId {
    /// The longest rendition id accepted.
    pub const MAX_LEN: usize = 32;

    /// Parses and validates a rendition id.
    ///
    /// # Errors
    /// [`IdError::Rendition`] when `s` is empty, too long or has a character outside the set.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= Self::MAX_LEN
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if ok { Ok(Self(s.to_owned())) } else { Err(IdError::Rendition(excerpt(s))) }
    }

    /// The id as a string slice.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A chunk's id: the BLAKE3 hash of its bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChunkId([u8; 32]);

impl ChunkId {
    /// The id of `bytes`: their BLAKE3 hash.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }

    /// The id from raw hash bytes (as the peer wire protocol carries it).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Parses 64 lowercase hex characters. Uppercase is refused so that every chunk has exactly
    /// one spelling (one cache key, one file name, one URL).
    ///
    /// # Errors
    /// [`IdError::Chunk`] for anything else.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(IdError::Chunk(excerpt(s)));
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            match (hex_val(pair[0]), hex_val(pair[1])) {
                (Some(hi), Some(lo)) => out[i] = (hi << 4) | lo,
                _ => return Err(IdError::Chunk(excerpt(s))),
            }
        }
        Ok(Self(out))
    }

    /// The raw 32 hash bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Whether `bytes` are the chunk this id names.
    #[must_use]
    pub fn matches(&self, bytes: &[u8]) -> bool {
        // blake3::Hash compares in constant time; not needed here, but free.
        blake3::Hash::from_bytes(self.0) == blake3::hash(bytes)
    }

    /// The 64-character lowercase hex form.
    #[must_use]
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

const fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl ChunkId {
    /// The 64 lowercase hex characters, without allocating (ids are formatted on every request:
    /// `ETag`s, file names, URLs).
    #[must_use]
    pub fn hex_bytes(&self) -> [u8; 64] {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0u8; 64];
        for (i, b) in self.0.iter().enumerate() {
            out[2 * i] = DIGITS[usize::from(b >> 4)];
            out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
        }
        out
    }
}

impl fmt::Display for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = self.hex_bytes();
        // Hex digits are ASCII, so this never fails.
        f.write_str(std::str::from_utf8(&hex).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ChunkId({self})")
    }
}

macro_rules! string_id_impls {
    ($ty:ident) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl AsRef<str> for $ty {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}
string_id_impls!(TrackId);
string_id_impls!(RenditionId);

macro_rules! id_serde_impls {
    ($ty:ident) => {
        impl FromStr for $ty {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
id_serde_impls!(TrackId);
id_serde_impls!(RenditionId);
id_serde_impls!(ChunkId);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn track_ids() {
        for ok in ["a", "demo-1", "A_b-9", &"x".repeat(64)] {
            assert_eq!(TrackId::parse(ok).map(|t| t.to_string()), Ok(ok.to_owned()));
        }
        for bad in ["", "../etc", "a/b", "a b", "é", "a.b", "%2e%2e", &"x".repeat(65), "a\0"] {
            assert!(TrackId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn chunk_ids() {
        let id = ChunkId::of(b"hello");
        let hex = id.to_hex();
        assert_eq!(hex, blake3::hash(b"hello").to_hex().as_str());
        assert_eq!(ChunkId::parse(&hex), Ok(id));
        assert!(id.matches(b"hello"));
        assert!(!id.matches(b"hellO"));
        assert!(ChunkId::parse(&hex.to_uppercase()).is_err());
        assert!(ChunkId::parse(&hex[..63]).is_err());
        assert!(ChunkId::parse(&format!("{hex}0")).is_err());
        assert!(ChunkId::parse(&format!("../{}", &hex[3..])).is_err());
    }

    #[test]
    fn error_echo_is_bounded() {
        let long = "é".repeat(10_000);
        let msg = TrackId::parse(&long).unwrap_err().to_string();
        assert!(msg.len() < 300, "{}", msg.len());
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<TrackId>("\"../x\"").is_err());
        let t: TrackId = serde_json::from_str("\"ok-1\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"ok-1\"");
    }

    proptest! {
        #[test]
        fn chunk_id_roundtrip(bytes in any::<[u8; 32]>()) {
            let id = ChunkId::from_bytes(bytes);
            prop_assert_eq!(ChunkId::parse(&id.to_hex()), Ok(id));
        }

        #[test]
        fn chunk_id_parse_never_panics(s in ".{0,80}") {
            let _ = ChunkId::parse(&s);
        }

        #[test]
        fn track_id_accepts_exactly_the_set(s in "[A-Za-z0-9_-]{1,64}") {
            prop_assert!(TrackId::parse(&s).is_ok());
        }

        #[test]
        fn track_id_refuses_any_other_char(prefix in "[a-z]{0,5}", c in any::<char>(), suffix in "[a-z]{0,5}") {
            prop_assume!(!(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            let s = format!("{prefix}{c}{suffix}");
            prop_assert!(TrackId::parse(&s).is_err());
        }
    }
}
