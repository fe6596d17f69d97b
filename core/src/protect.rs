//! Protected tracks: segments that peers and caches carry but only token holders can play.
//!
//! A track ingested as protected has one random content key (AES-128) and each of its media
//! segments is encrypted whole with AES-128-CBC and PKCS#7 padding under that key and a random
//! IV of its own: exactly HLS `METHOD=AES-128` (RFC 8216 §5.2), so ffmpeg, hls.js and Safari
//! play such a track from its playlists. Init chunks (codec setup, no audio) stay clear.
//!
//! Chunk ids stay the BLAKE3 of the bytes served, which for a protected segment is the
//! ciphertext: edges cache it and peers swap and verify it with no secret at all. The manifest
//! names the key by a random [`KeyId`] and gives each segment its [`Iv`]; the key itself is
//! served only by the key route, to a request whose token covers the track (docs/protocol.md
//! §3.7). Re-ingesting a track makes a new key, new IVs and so new chunk ids (rotation).
//!
//! Plain functions, no I/O.

use std::fmt;
use std::str::FromStr;

use aes::Aes128;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockDecryptMut as _, BlockEncryptMut as _, KeyIvInit as _};
use rand_core::{OsRng, RngCore as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The manifest's `protection.method` for [`encrypt`]'s scheme.
pub const METHOD: &str = "aes-128-cbc";

/// Bytes in a content key.
pub const KEY_BYTES: usize = 16;

/// A track's content key. Its `Debug` form does not show the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ContentKey([u8; KEY_BYTES]);

impl ContentKey {
    /// A new random key from the operating system's generator.
    #[must_use]
    pub fn generate() -> Self {
        let mut k = [0u8; KEY_BYTES];
        OsRng.fill_bytes(&mut k);
        Self(k)
    }

    /// The key from exactly [`KEY_BYTES`] bytes (a key route's answer, a key file).
    ///
    /// # Errors
    /// [`ProtectError::KeyLength`] for any other length.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, ProtectError> {
        <[u8; KEY_BYTES]>::try_from(bytes).map(Self).map_err(|_| ProtectError::KeyLength(bytes.len()))
    }

    /// The raw key bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; KEY_BYTES] {
        &self.0
    }
}

impl fmt::Debug for ContentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ContentKey(..)")
    }
}

/// A segment's initialisation vector: 16 bytes, written as 32 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Iv(pub [u8; 16]);

impl Iv {
    /// A new random IV.
    #[must_use]
    pub fn generate() -> Self {
        let mut v = [0u8; 16];
        OsRng.fill_bytes(&mut v);
        Self(v)
    }
}

impl fmt::Display for Iv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Iv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Iv({self})")
    }
}

impl FromStr for Iv {
    type Err = ProtectError;
    fn from_str(s: &str) -> Result<Self, ProtectError> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(ProtectError::Syntax("an IV is 32 lowercase hex characters"));
        }
        let mut v = [0u8; 16];
        hex::decode_to_slice(s, &mut v).map_err(|_| ProtectError::Syntax("an IV is 32 lowercase hex characters"))?;
        Ok(Self(v))
    }
}

impl Serialize for Iv {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Iv {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Names a content key in manifests and key URLs: 16 lowercase hex characters, random (it says
/// nothing about the key).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(String);

impl KeyId {
    /// A new random key id.
    #[must_use]
    pub fn generate() -> Self {
        let mut v = [0u8; 8];
        OsRng.fill_bytes(&mut v);
        Self(hex::encode(v))
    }

    /// Parses a key id.
    ///
    /// # Errors
    /// [`ProtectError::Syntax`] unless `s` is 16 lowercase hex characters.
    pub fn parse(s: &str) -> Result<Self, ProtectError> {
        if s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(Self(s.to_owned()))
        } else {
            Err(ProtectError::Syntax("a key id is 16 lowercase hex characters"))
        }
    }

    /// The id as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.0)
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The manifest's `protection` member: how its segments are encrypted and under which key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Protection {
    /// Always [`METHOD`] in this version.
    pub method: String,
    /// The content key's id; the key route serves the key under it.
    pub key_id: KeyId,
}

impl Protection {
    /// Protection with [`METHOD`] under `key_id`.
    #[must_use]
    pub fn new(key_id: KeyId) -> Self {
        Self { method: METHOD.to_owned(), key_id }
    }
}

/// Why protecting or unprotecting failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtectError {
    /// A key of the wrong length (from a key route or a key file).
    #[error("a content key is {KEY_BYTES} bytes, not {0}")]
    KeyLength(usize),
    /// Text that is not an IV or key id.
    #[error("{0}")]
    Syntax(&'static str),
    /// The ciphertext does not decrypt under this key and IV (a wrong key: the chunk itself
    /// was verified by its hash).
    #[error("the segment does not decrypt with this key (a key of another generation of the track?)")]
    Decrypt,
}

/// Encrypts a whole segment: AES-128-CBC with PKCS#7 padding (HLS `METHOD=AES-128`). The
/// output is 1 to 16 bytes longer than the input, a multiple of 16.
#[must_use]
pub fn encrypt(key: &ContentKey, iv: &Iv, plain: &[u8]) -> Vec<u8> {
    cbc::Encryptor::<Aes128>::new(&key.0.into(), &iv.0.into()).encrypt_padded_vec_mut::<Pkcs7>(plain)
}

/// Decrypts what [`encrypt`] made.
///
/// # Errors
/// [`ProtectError::Decrypt`] when the length or the padding is wrong, which for a verified
/// chunk means the key is not the one it was encrypted with.
pub fn decrypt(key: &ContentKey, iv: &Iv, cipher: &[u8]) -> Result<Vec<u8>, ProtectError> {
    cbc::Decryptor::<Aes128>::new(&key.0.into(), &iv.0.into())
        .decrypt_padded_vec_mut::<Pkcs7>(cipher)
        .map_err(|_| ProtectError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_answer_from_the_aes_cbc_test_vectors() {
        // NIST SP 800-38A F.2.1, CBC-AES128.Encrypt, first block (then one block of padding).
        let key = ContentKey::from_slice(&hex::decode("2b7e151628aed2a6abf7158809cf4f3c").unwrap()).unwrap();
        let iv: Iv = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let plain = hex::decode("6bc1bee22e409f96e93d7e117393172a").unwrap();
        let c = encrypt(&key, &iv, &plain);
        assert_eq!(c.len(), 32);
        assert_eq!(hex::encode(&c[..16]), "7649abac8119b246cee98e9b12e9197d");
        assert_eq!(decrypt(&key, &iv, &c).unwrap(), plain);
    }

    #[test]
    fn a_wrong_key_or_a_torn_ciphertext_is_an_error_not_garbage_of_the_same_length() {
        let (k1, k2, iv) = (ContentKey([1; 16]), ContentKey([2; 16]), Iv([3; 16]));
        let c = encrypt(&k1, &iv, &[9u8; 1000]);
        // A wrong key fails the padding check (1 in 256 chance of passing it by luck: not here).
        assert_eq!(decrypt(&k2, &iv, &c), Err(ProtectError::Decrypt));
        assert_eq!(decrypt(&k1, &iv, &c[..c.len() - 1]), Err(ProtectError::Decrypt));
        assert_eq!(decrypt(&k1, &iv, &[]), Err(ProtectError::Decrypt));
    }

    #[test]
    fn ids_and_ivs_parse_strictly() {
        assert!(KeyId::parse("0123456789abcdef").is_ok());
        for bad in ["", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0", "../../etc/passwd"] {
            assert!(KeyId::parse(bad).is_err(), "{bad}");
        }
        assert!("00".repeat(16).parse::<Iv>().is_ok());
        assert!("0g".repeat(16).parse::<Iv>().is_err());
        assert!("AA".repeat(16).parse::<Iv>().is_err());
        assert_eq!(KeyId::generate().as_str().len(), 16);
        assert_ne!(ContentKey::generate(), ContentKey::generate());
        assert_eq!(format!("{:?}", ContentKey([7; 16])), "ContentKey(..)");
        assert!(matches!(ContentKey::from_slice(&[0; 15]), Err(ProtectError::KeyLength(15))));
        let iv = Iv::generate();
        let json = serde_json::to_string(&iv).unwrap();
        assert_eq!(serde_json::from_str::<Iv>(&json).unwrap(), iv);
    }

    proptest! {
        #[test]
        fn round_trip(plain in proptest::collection::vec(any::<u8>(), 0..2000), k in any::<[u8; 16]>(), v in any::<[u8; 16]>()) {
            let (key, iv) = (ContentKey(k), Iv(v));
            let c = encrypt(&key, &iv, &plain);
            prop_assert_eq!(c.len(), (plain.len() / 16 + 1) * 16);
            prop_assert_eq!(decrypt(&key, &iv, &c).unwrap(), plain);
        }

        #[test]
        fn decrypt_never_panics(c in proptest::collection::vec(any::<u8>(), 0..100)) {
            let _ = decrypt(&ContentKey([5; 16]), &Iv([6; 16]), &c);
        }
    }
}
