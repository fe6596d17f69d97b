//! Where a store is: a directory, or a bucket (and a prefix in it) of an S3 object store.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A store's location, as `--store` takes it: `DIR` or `s3://BUCKET[/PREFIX]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A directory on this host's filesystem.
    Dir(PathBuf),
    /// A bucket of an S3-compatible object store. The endpoint, region and credentials come
    /// from the environment and the AWS shared files, never from the URL.
    S3 {
        /// The bucket's name.
        bucket: String,
        /// The key prefix everything is kept under, without leading or trailing `/`; empty for
        /// the bucket's root.
        prefix: String,
    },
}

/// Why a `--store` value is not a store location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("store {given:?}: {reason}")]
pub struct LocationError {
    given: String,
    reason: String,
}

impl FromStr for Location {
    type Err = LocationError;

    fn from_str(s: &str) -> Result<Self, LocationError> {
        let err = |reason: &str| LocationError { given: s.chars().take(200).collect(), reason: reason.to_owned() };
        if s.is_empty() {
            return Err(err("empty: give a directory or s3://BUCKET[/PREFIX]"));
        }
        let Some((scheme, rest)) = s.split_once("://") else {
            return Ok(Self::Dir(PathBuf::from(s)));
        };
        if scheme != "s3" {
            return Err(err(
                "only s3:// URLs or directories are stores (the endpoint of a self-hosted S3 store goes in AWS_ENDPOINT_URL, not here)",
            ));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        check_bucket(bucket).map_err(|r| err(&r))?;
        let prefix = prefix.trim_end_matches('/');
        if prefix.split('/').any(|p| p.is_empty() || p == "." || p == "..") && !prefix.is_empty() {
            return Err(err("the prefix has an empty, `.` or `..` segment"));
        }
        if prefix.len() > 512 || prefix.chars().any(|c| c.is_control() || matches!(c, '?' | '#' | '\\')) {
            return Err(err("the prefix is over 512 bytes or has a control character, `?`, `#` or `\\`"));
        }
        Ok(Self::S3 { bucket: bucket.to_owned(), prefix: prefix.to_owned() })
    }
}

/// S3's bucket naming rules: 3 to 63 characters of lower-case letters, digits, `.` and `-`,
/// starting and ending with a letter or digit.
fn check_bucket(b: &str) -> Result<(), String> {
    if b.is_empty() {
        return Err("no bucket: write s3://BUCKET or s3://BUCKET/PREFIX".into());
    }
    let ok_chars = b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-');
    let ends = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !(3..=63).contains(&b.len()) || !ok_chars || !ends(b.bytes().next()) || !ends(b.bytes().last()) {
        return Err(format!(
            "{b:?} is not a bucket name (3 to 63 of a-z, 0-9, `.` and `-`, starting and ending with a letter or digit)"
        ));
    }
    Ok(())
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dir(p) => write!(f, "{}", p.display()),
            Self::S3 { bucket, prefix } if prefix.is_empty() => write!(f, "s3://{bucket}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_buckets() {
        assert_eq!("store".parse::<Location>(), Ok(Location::Dir("store".into())));
        assert_eq!("/var/lib/chorus".parse::<Location>(), Ok(Location::Dir("/var/lib/chorus".into())));
        let s3 = |b: &str, p: &str| Location::S3 { bucket: b.into(), prefix: p.into() };
        assert_eq!("s3://catalogue".parse::<Location>(), Ok(s3("catalogue", "")));
        assert_eq!("s3://catalogue/".parse::<Location>(), Ok(s3("catalogue", "")));
        assert_eq!("s3://cat.a-1/eu/prod/".parse::<Location>(), Ok(s3("cat.a-1", "eu/prod")));
        for ok in ["s3://catalogue", "s3://catalogue/eu/prod", "dir/x"] {
            assert_eq!(ok.parse::<Location>().unwrap().to_string(), ok);
        }
    }

    #[test]
    fn bad_locations_say_what_is_wrong() {
        for (bad, says) in [
            ("", "empty"),
            ("s3://", "no bucket"),
            ("s3:///prefix", "no bucket"),
            ("s3://Catalogue", "not a bucket name"),
            ("s3://ab", "not a bucket name"),
            ("s3://-cat", "not a bucket name"),
            ("s3://cat_alogue", "not a bucket name"),
            ("s3://cat/a//b", "empty"),
            ("s3://cat/../b", "`..`"),
            ("s3://cat/a?b", "`?`"),
            ("gs://cat", "only s3://"),
            ("http://127.0.0.1:3900/cat", "AWS_ENDPOINT_URL"),
        ] {
            let e = bad.parse::<Location>().expect_err(bad).to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
