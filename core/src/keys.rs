//! ed25519 keys in PEM: PKCS#8 private keys and SPKI public keys, as
//! `openssl genpkey -algorithm ed25519` writes them.
//!
//! The same key type signs manifests (the origin's key, pinned by clients) and access tokens
//! (the token key, whose public half edges check tokens with).

use std::io;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
pub use ed25519_dalek::{SigningKey, VerifyingKey};

use crate::fsutil;

/// The largest key file read; a PEM ed25519 key is about 120 bytes.
const MAX_KEY_FILE: u64 = 16 * 1024;

/// Why a key could not be read, written or made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("key file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file is too large to be a key.
    #[error("key file {path}: {bytes} bytes, too large for a key")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// The file is not an ed25519 key in the expected PEM form.
    #[error(
        "key file {path}: not an ed25519 {expected} key in PEM; make one with `chorus keys generate` or `openssl genpkey -algorithm ed25519`"
    )]
    Format {
        /// The file.
        path: PathBuf,
        /// "private (PKCS#8)" or "public (SPKI)".
        expected: &'static str,
        /// What the decoder said.
        source: crate::error::Cause,
    },
}

/// The manifest signature's `key_id`: the first 16 hex characters of BLAKE3(public key bytes).
#[must_use]
pub fn key_id(key: &VerifyingKey) -> String {
    blake3::hash(key.as_bytes()).to_hex()[..16].to_owned()
}

/// Makes a new random key from the operating system's generator.
#[must_use]
pub fn generate() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

fn read_small(path: &Path) -> Result<String, KeyError> {
    let io_err = |source| KeyError::Io { path: path.to_owned(), source };
    let meta = std::fs::metadata(path).map_err(io_err)?;
    if meta.len() > MAX_KEY_FILE {
        return Err(KeyError::TooLarge { path: path.to_owned(), bytes: meta.len() });
    }
    std::fs::read_to_string(path).map_err(io_err)
}

/// Reads a PKCS#8 PEM private key.
///
/// # Errors
/// [`KeyError`] when the file is unreadable or not an ed25519 private key.
pub fn read_signing_key(path: &Path) -> Result<SigningKey, KeyError> {
    let pem = read_small(path)?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| KeyError::Format {
        path: path.to_owned(),
        expected: "private (PKCS#8)",
        source: crate::error::cause(e),
    })
}

/// Reads an SPKI PEM public key. A private key file is accepted too (its public half is used),
/// which saves operators a step on single-host setups.
///
/// # Errors
/// [`KeyError`] when the file is unreadable or holds no ed25519 key.
pub fn read_verifying_key(path: &Path) -> Result<VerifyingKey, KeyError> {
    let pem = read_small(path)?;
    if let Ok(k) = VerifyingKey::from_public_key_pem(&pem) {
        return Ok(k);
    }
    match SigningKey::from_pkcs8_pem(&pem) {
        Ok(sk) => Ok(sk.verifying_key()),
        Err(e) => {
            Err(KeyError::Format { path: path.to_owned(), expected: "public (SPKI)", source: crate::error::cause(e) })
        }
    }
}

/// The PKCS#8 PEM text of a private key.
#[must_use]
pub fn signing_key_pem(key: &SigningKey) -> String {
    // Encoding a valid in-memory key cannot fail; an empty string would be caught on read.
    key.to_pkcs8_pem(LineEnding::LF).map(|z| z.to_string()).unwrap_or_default()
}

/// The SPKI PEM text of a public key.
#[must_use]
pub fn verifying_key_pem(key: &VerifyingKey) -> String {
    key.to_public_key_pem(LineEnding::LF).unwrap_or_default()
}

/// Writes a key pair: `priv_path` with mode 0600, `pub_path` with 0644, each atomically.
///
/// # Errors
/// [`KeyError::Io`] from the writes.
pub fn write_pair(key: &SigningKey, priv_path: &Path, pub_path: &Path) -> Result<(), KeyError> {
    fsutil::write_atomic(priv_path, signing_key_pem(key).as_bytes(), 0o600)
        .map_err(|source| KeyError::Io { path: priv_path.to_owned(), source })?;
    fsutil::write_atomic(pub_path, verifying_key_pem(&key.verifying_key()).as_bytes(), 0o644)
        .map_err(|source| KeyError::Io { path: pub_path.to_owned(), source })
}

/// Reads the private key at `priv_path`, or makes one (and its public half at `pub_path`) if
/// the file does not exist yet. Returns the key and whether it was created.
///
/// # Errors
/// [`KeyError`] when an existing file is not a key, or the new one cannot be written.
pub fn load_or_create(priv_path: &Path, pub_path: &Path) -> Result<(SigningKey, bool), KeyError> {
    match read_signing_key(priv_path) {
        Ok(k) => Ok((k, false)),
        Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            // Two processes may start on a fresh store at once: the key is published with a
            // hard link, which fails if the other one won, and then its key is used.
            let key = generate();
            let dir = priv_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            let tmp = dir.join(format!("{}key-{}", fsutil::TMP_PREFIX, std::process::id()));
            let io_err = |source| KeyError::Io { path: priv_path.to_owned(), source };
            fsutil::write_atomic(&tmp, signing_key_pem(&key).as_bytes(), 0o600).map_err(io_err)?;
            let linked = std::fs::hard_link(&tmp, priv_path);
            let _ = std::fs::remove_file(&tmp);
            match linked {
                Ok(()) => {
                    fsutil::sync_dir(dir).map_err(io_err)?;
                    fsutil::write_atomic(pub_path, verifying_key_pem(&key.verifying_key()).as_bytes(), 0o644)
                        .map_err(|source| KeyError::Io { path: pub_path.to_owned(), source })?;
                    Ok((key, true))
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok((read_signing_key(priv_path)?, false)),
                Err(e) => Err(io_err(e)),
            }
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_roundtrip_and_key_id() {
        let dir = tempfile::tempdir().unwrap();
        let (k, created) = load_or_create(&dir.path().join("a.key"), &dir.path().join("a.pub")).unwrap();
        assert!(created);
        let (k2, created) = load_or_create(&dir.path().join("a.key"), &dir.path().join("a.pub")).unwrap();
        assert!(!created);
        assert_eq!(k.to_bytes(), k2.to_bytes());
        let pubk = read_verifying_key(&dir.path().join("a.pub")).unwrap();
        assert_eq!(pubk, k.verifying_key());
        assert_eq!(read_verifying_key(&dir.path().join("a.key")).unwrap(), pubk);
        assert_eq!(key_id(&pubk).len(), 16);
        let pem = std::fs::read_to_string(dir.path().join("a.key")).unwrap();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("a.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn openssl_format_is_accepted() {
        // Made with `openssl genpkey -algorithm ed25519` and `openssl pkey -pubout`.
        let priv_pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIFtZXyVXrtpJ0Gz2bEeNzWQlEUI3NiC/PkOE+akA9y1r\n-----END PRIVATE KEY-----\n";
        let sk = SigningKey::from_pkcs8_pem(priv_pem).unwrap();
        let pub_pem = verifying_key_pem(&sk.verifying_key());
        assert!(pub_pem.starts_with("-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA"));
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad");
        std::fs::write(&p, "not a key").unwrap();
        let e = read_verifying_key(&p).unwrap_err().to_string();
        assert!(e.contains("not an ed25519"), "{e}");
        assert!(matches!(read_signing_key(&dir.path().join("missing")), Err(KeyError::Io { .. })));
    }
}
