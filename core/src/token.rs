//! Access tokens: JWTs signed with EdDSA (RFC 8037), docs/protocol.md §2.
//!
//! Claims: `exp` (required, seconds since the Unix epoch), `sub` (optional), `tracks` (optional
//! list of track ids; absent means every track), `aud` and `iss` (optional; checked only by a
//! verifier configured with them, [`TokenVerifier::expect`]). Checking is split in two, so a caller can tell
//! 401 from 403: [`TokenVerifier::verify`] proves the token is genuine and unexpired (else 401),
//! [`Claims::allows`] says whether it covers a track (else 403). Time is passed in explicitly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ed25519_dalek::{SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::{Cause, cause, message};
use crate::id::TrackId;
use crate::keys;

/// Longest token accepted, in bytes; anything larger is refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Most track ids one token may name.
pub const MAX_TOKEN_TRACKS: usize = 256;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Who the token is for (free text: a user or device id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The tracks it covers; `None` means all tracks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracks: Option<Vec<TrackId>>,
    /// Who the token is meant for (RFC 7519 `aud`: one string or several).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<Audience>,
    /// Who issued it (RFC 7519 `iss`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

/// A token's `aud`: one audience or several, as RFC 7519 allows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// `"aud": "chorus"`.
    One(String),
    /// `"aud": ["chorus", "other"]`.
    Many(Vec<String>),
}

impl Claims {
    /// Claims expiring at `exp`, with nothing else.
    #[must_use]
    pub const fn expiring(exp: u64) -> Self {
        Self { exp, iat: None, sub: None, tracks: None, aud: None, iss: None }
    }
}

impl Claims {
    /// Whether these claims cover `track`.
    #[must_use]
    pub fn allows(&self, track: &TrackId) -> bool {
        self.tracks.as_ref().is_none_or(|t| t.contains(track))
    }
}

/// Why a token was refused. All of these mean "401: get a new token".
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// No token was presented.
    #[error("an access token is required")]
    Missing,
    /// Longer than [`MAX_TOKEN_BYTES`].
    #[error("access token is longer than {MAX_TOKEN_BYTES} bytes")]
    TooLong,
    /// Not a well-formed EdDSA JWT signed by the configured key.
    #[error("access token is invalid")]
    Invalid(#[source] Cause),
    /// Past its `exp`.
    #[error("access token expired {0} s ago")]
    Expired(u64),
}

/// Signs tokens (`chorus token issue`).
pub struct TokenIssuer {
    key: EncodingKey,
}

impl TokenIssuer {
    /// An issuer with the token private key.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] if the key cannot be used (cannot happen for a valid key).
    pub fn new(key: &SigningKey) -> Result<Self, TokenError> {
        let pem = keys::signing_key_pem(key);
        let key = EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| TokenError::Invalid(cause(e)))?;
        Ok(Self { key })
    }

    /// Signs `claims`.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] if encoding fails.
    pub fn issue(&self, claims: &Claims) -> Result<String, TokenError> {
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), claims, &self.key)
            .map_err(|e| TokenError::Invalid(cause(e)))
    }
}

/// Checks tokens against the token public key.
pub struct TokenVerifier {
    key: DecodingKey,
    validation: Validation,
    /// Clock skew tolerated on `exp`.
    leeway: Duration,
}

/// What a verifier requires of `aud` and `iss`, when configured (`--token-audience`,
/// `--token-issuer`): a token must then name that audience (among others) and that issuer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expect {
    /// The audience this node is (`None`: `aud` not checked).
    pub audience: Option<String>,
    /// The issuer it trusts (`None`: `iss` not checked).
    pub issuer: Option<String>,
}

impl TokenVerifier {
    /// A verifier for tokens signed by the private half of `key`, tolerating `leeway` of clock
    /// skew on expiry.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] if the key cannot be used.
    pub fn new(key: &VerifyingKey, leeway: Duration) -> Result<Self, TokenError> {
        let pem = keys::verifying_key_pem(key);
        let key = DecodingKey::from_ed_pem(pem.as_bytes()).map_err(|e| TokenError::Invalid(cause(e)))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        // Expiry is checked below against an explicit clock; `exp` must still be present.
        validation.validate_exp = false;
        // `aud` and `iss` are checked only when the node is configured with them (`expect`).
        validation.validate_aud = false;
        validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        Ok(Self { key, validation, leeway })
    }

    /// Requires `aud` and `iss` as `expect` says: a token without the audience, or from
    /// another issuer, is then invalid (401).
    #[must_use]
    pub fn expect(mut self, expect: &Expect) -> Self {
        let mut required = vec!["exp".to_owned()];
        if let Some(aud) = &expect.audience {
            self.validation.set_audience(&[aud]);
            self.validation.validate_aud = true;
            required.push("aud".to_owned());
        }
        if let Some(iss) = &expect.issuer {
            self.validation.set_issuer(&[iss]);
            required.push("iss".to_owned());
        }
        self.validation.required_spec_claims = required.into_iter().collect();
        self
    }

    /// Verifies `token` at time `now`: signature, algorithm, presence of `exp`, expiry.
    ///
    /// # Errors
    /// A [`TokenError`]; every variant means the request is unauthenticated (401).
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Claims, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::TooLong);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| TokenError::Invalid(cause(e)))?;
        let claims = data.claims;
        if claims.tracks.as_ref().is_some_and(|t| t.len() > MAX_TOKEN_TRACKS) {
            return Err(TokenError::Invalid(message(format!("names more than {MAX_TOKEN_TRACKS} tracks"))));
        }
        let now = unix_secs(now);
        let deadline = claims.exp.saturating_add(self.leeway.as_secs());
        if now >= deadline {
            return Err(TokenError::Expired(now - claims.exp));
        }
        Ok(claims)
    }
}

/// Seconds since the Unix epoch (0 for times before it).
#[must_use]
pub fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (TokenIssuer, TokenVerifier) {
        let sk = SigningKey::from_bytes(&[3; 32]);
        (TokenIssuer::new(&sk).unwrap(), TokenVerifier::new(&sk.verifying_key(), Duration::ZERO).unwrap())
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn expiry_is_checked_against_the_given_clock() {
        let (iss, ver) = pair();
        let t = iss.issue(&Claims { iat: Some(900), sub: Some("u1".into()), ..Claims::expiring(1000) }).unwrap();
        let c = ver.verify(&t, at(999)).unwrap();
        assert_eq!(c.sub.as_deref(), Some("u1"));
        assert!(matches!(ver.verify(&t, at(1000)), Err(TokenError::Expired(0))));
        assert!(matches!(ver.verify(&t, at(1060)), Err(TokenError::Expired(60))));
        let lenient =
            TokenVerifier::new(&SigningKey::from_bytes(&[3; 32]).verifying_key(), Duration::from_secs(30)).unwrap();
        assert!(lenient.verify(&t, at(1029)).is_ok());
        assert!(lenient.verify(&t, at(1030)).is_err());
    }

    #[test]
    fn track_scope() {
        let (iss, ver) = pair();
        let a = TrackId::parse("a").unwrap();
        let b = TrackId::parse("b").unwrap();
        let t = iss.issue(&Claims { tracks: Some(vec![a.clone()]), ..Claims::expiring(10) }).unwrap();
        let c = ver.verify(&t, at(1)).unwrap();
        assert!(c.allows(&a));
        assert!(!c.allows(&b));
        let all = iss.issue(&Claims::expiring(10)).unwrap();
        assert!(ver.verify(&all, at(1)).unwrap().allows(&b));
    }

    #[test]
    fn forged_and_malformed_tokens_are_invalid() {
        let (_, ver) = pair();
        let other = TokenIssuer::new(&SigningKey::from_bytes(&[4; 32])).unwrap();
        let t = other.issue(&Claims::expiring(10)).unwrap();
        assert!(matches!(ver.verify(&t, at(1)), Err(TokenError::Invalid(_))));
        assert!(matches!(ver.verify("a.b.c", at(1)), Err(TokenError::Invalid(_))));
        assert!(matches!(ver.verify("", at(1)), Err(TokenError::Missing)));
        assert!(matches!(ver.verify(&"x".repeat(5000), at(1)), Err(TokenError::TooLong)));
        // An HS256 token (alg confusion) is refused.
        let hs = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJleHAiOjEwfQ.3p9mYJ6Ql6xfbOe7sJ3p8b6J2q9mXy3bNcYwWm0mTz4";
        assert!(matches!(ver.verify(hs, at(1)), Err(TokenError::Invalid(_))));
    }

    #[test]
    fn audience_and_issuer_are_checked_only_when_configured() {
        let (iss, plain) = pair();
        let key = SigningKey::from_bytes(&[3; 32]).verifying_key();
        let strict = TokenVerifier::new(&key, Duration::ZERO)
            .unwrap()
            .expect(&Expect { audience: Some("chorus".into()), issuer: Some("https://id.example".into()) });
        let with = |aud: Option<Audience>, issuer: Option<&str>| {
            iss.issue(&Claims { aud, iss: issuer.map(str::to_owned), ..Claims::expiring(10) }).unwrap()
        };
        let good = with(Some(Audience::One("chorus".into())), Some("https://id.example"));
        let many = with(Some(Audience::Many(vec!["other".into(), "chorus".into()])), Some("https://id.example"));
        assert!(strict.verify(&good, at(1)).is_ok());
        assert!(strict.verify(&many, at(1)).is_ok());
        for bad in [
            with(None, Some("https://id.example")),
            with(Some(Audience::One("other".into())), Some("https://id.example")),
            with(Some(Audience::One("chorus".into())), None),
            with(Some(Audience::One("chorus".into())), Some("https://evil.example")),
        ] {
            assert!(matches!(strict.verify(&bad, at(1)), Err(TokenError::Invalid(_))));
        }
        // A node not configured with them takes tokens with or without.
        assert!(plain.verify(&good, at(1)).is_ok());
        assert!(plain.verify(&with(None, None), at(1)).is_ok());
    }

    #[test]
    fn exp_is_required() {
        let (iss, ver) = pair();
        // A token whose claims lack `exp`, signed correctly.
        #[derive(Serialize)]
        struct NoExp {
            sub: String,
        }
        let key =
            EncodingKey::from_ed_pem(keys::signing_key_pem(&SigningKey::from_bytes(&[3; 32])).as_bytes()).unwrap();
        let t = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &NoExp { sub: "x".into() }, &key).unwrap();
        assert!(matches!(ver.verify(&t, at(1)), Err(TokenError::Invalid(_))));
        drop(iss);
    }
}
