//! Sizes and durations as people write them: `512MiB`, `10GiB`, `4096`; `30s`, `1h`, `500ms`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A size in bytes, parsed from `512MiB`, `10GiB`, `64KB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| Self(b.as_u64()))
            .map_err(|_| format!("invalid size {s:?}: write e.g. 512MiB, 10GiB or a number of bytes"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", bytesize::ByteSize(self.0).display().iec())
    }
}

/// A duration parsed from `30s`, `1h`, `500ms`, `2m 30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(Self)
            .map_err(|_| format!("invalid duration {s:?}: write e.g. 30s, 15m, 1h or 500ms"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_spans() {
        assert_eq!("512MiB".parse::<Size>(), Ok(Size(512 << 20)));
        assert_eq!("10GiB".parse::<Size>(), Ok(Size(10 << 30)));
        assert_eq!("4096".parse::<Size>(), Ok(Size(4096)));
        assert!("lots".parse::<Size>().is_err());
        assert_eq!("30s".parse::<Span>(), Ok(Span(Duration::from_secs(30))));
        assert_eq!("1h".parse::<Span>(), Ok(Span(Duration::from_secs(3600))));
        assert!("soon".parse::<Span>().is_err());
    }
}
