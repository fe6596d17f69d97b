//! Listen URLs: `http://HOST:PORT`, `https://HOST:PORT`, `h3://HOST:PORT` (docs/protocol.md §1).

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use chorus_core::url::BaseUrl;
pub use chorus_core::url::Scheme;

/// A parsed listen URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenUrl {
    /// How it speaks.
    pub scheme: Scheme,
    /// Where it binds.
    pub addr: SocketAddr,
}

/// A listen URL that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid listen URL {url:?}: {reason} (expected http://HOST:PORT, https://HOST:PORT or h3://HOST:PORT)")]
pub struct ListenUrlError {
    url: String,
    reason: &'static str,
}

impl FromStr for ListenUrl {
    type Err = ListenUrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ListenUrlError { url: s.chars().take(200).collect(), reason };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| err("missing scheme"))?;
        let scheme = Scheme::parse(scheme).ok_or_else(|| err("unknown scheme"))?;
        let hostport = rest.strip_suffix('/').unwrap_or(rest);
        if hostport.contains('/') || hostport.contains('?') {
            return Err(err("a listen URL has no path"));
        }
        let addr = hostport
            .to_socket_addrs()
            .map_err(|_| err("host:port does not resolve"))?
            .next()
            .ok_or_else(|| err("host:port does not resolve"))?;
        Ok(Self { scheme, addr })
    }
}

impl ListenUrl {
    /// The base URL clients reach this listener at.
    #[must_use]
    pub fn base(&self) -> BaseUrl {
        BaseUrl::at(self.scheme, self.addr)
    }
}

impl fmt::Display for ListenUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        let u: ListenUrl = "h3://127.0.0.1:4433".parse().unwrap();
        assert_eq!(u.scheme, Scheme::H3);
        assert_eq!(u.addr.port(), 4433);
        assert_eq!(u.to_string(), "h3://127.0.0.1:4433");
        let u: ListenUrl = "http://[::1]:0/".parse().unwrap();
        assert_eq!(u.addr, "[::1]:0".parse().unwrap());
        for bad in ["127.0.0.1:80", "ftp://x:1", "http://127.0.0.1", "http://127.0.0.1:80/x", "https://:99999"] {
            assert!(bad.parse::<ListenUrl>().is_err(), "{bad}");
        }
    }
}
