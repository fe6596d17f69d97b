//! Base URLs of edges and origins: `http://HOST:PORT`, `https://HOST:PORT`, `h3://HOST:PORT`
//! (docs/protocol.md §1). Parsed once where they enter (a flag, a builder, a config), with an
//! error that says what is wrong; carried as [`BaseUrl`] from there on.

use std::fmt;
use std::str::FromStr;

/// How a server speaks, as its URL says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Plaintext TCP: HTTP/1.1 and h2c (prior knowledge).
    Http,
    /// TLS over TCP: ALPN h2 and http/1.1.
    Https,
    /// QUIC over UDP: HTTP/3.
    H3,
}

impl Scheme {
    /// The URL scheme.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
            Self::H3 => "h3",
        }
    }

    /// Whether the scheme needs a certificate.
    #[must_use]
    pub const fn needs_tls(self) -> bool {
        matches!(self, Self::Https | Self::H3)
    }

    /// The scheme named `s`, if it is one of ours.
    #[must_use]
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "http" => Some(Self::Http),
            "https" => Some(Self::Https),
            "h3" => Some(Self::H3),
            _ => None,
        }
    }
}

/// Longest base URL accepted (a DNS name is at most 253 bytes).
const MAX_LEN: usize = 300;

/// Where a server is: a scheme, a host (a DNS name, an IPv4 address, or an IPv6 address in
/// brackets) and a port, with no path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BaseUrl {
    scheme: Scheme,
    /// As written, IPv6 brackets kept, lower case.
    host: String,
    port: u16,
}

/// A base URL that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid URL {url:?}: {reason} (expected http://HOST:PORT, https://HOST:PORT or h3://HOST:PORT)")]
pub struct UrlError {
    url: String,
    reason: &'static str,
}

impl BaseUrl {
    /// The server at `addr`, speaking `scheme` (a bound listener's address: unlike a parsed
    /// URL, its port is not checked, so port 0 names a listener not yet bound).
    #[must_use]
    pub fn at(scheme: Scheme, addr: std::net::SocketAddr) -> Self {
        let host = match addr.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        };
        Self { scheme, host, port: addr.port() }
    }

    /// How the server speaks.
    #[must_use]
    pub const fn scheme(&self) -> Scheme {
        self.scheme
    }

    /// The host without IPv6 brackets: the TLS server name.
    #[must_use]
    pub fn host(&self) -> &str {
        self.host.trim_start_matches('[').trim_end_matches(']')
    }

    /// The port.
    #[must_use]
    pub const fn port(&self) -> u16 {
        self.port
    }

    /// `HOST:PORT` (IPv6 in brackets): the request authority, and what a resolver takes.
    #[must_use]
    pub fn authority(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The same server under another scheme (`h3://H:P` for `https://H:P`).
    #[must_use]
    pub fn with_scheme(&self, scheme: Scheme) -> Self {
        Self { scheme, ..self.clone() }
    }

    /// A full URL `url` split into its base and its path (with any query); the path is `/` when
    /// the URL has none.
    ///
    /// # Errors
    /// [`UrlError`] when the part before the path is not a base URL.
    pub fn split(url: &str) -> Result<(Self, &str), UrlError> {
        let after = url.find("://").map_or(0, |i| i + 3);
        let (base, path) = match url[after..].find(['/', '?']) {
            Some(i) => url.split_at(after + i),
            None => (url, "/"),
        };
        if path.starts_with('?') {
            return Err(err(url, "a query needs a path"));
        }
        Ok((base.parse()?, path))
    }
}

fn err(url: &str, reason: &'static str) -> UrlError {
    UrlError { url: url.chars().take(100).collect(), reason }
}

impl FromStr for BaseUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_LEN {
            return Err(err(s, "too long"));
        }
        let (scheme, rest) = s.split_once("://").ok_or_else(|| err(s, "missing scheme"))?;
        let scheme = Scheme::parse(scheme).ok_or_else(|| err(s, "unknown scheme"))?;
        let hostport = rest.strip_suffix('/').unwrap_or(rest);
        if hostport.contains(['/', '?', '#']) {
            return Err(err(s, "a base URL has no path"));
        }
        if hostport.contains('@') {
            return Err(err(s, "a base URL has no user or password"));
        }
        let (host, port) = if hostport.starts_with('[') {
            let end = hostport.find(']').ok_or_else(|| err(s, "unclosed IPv6 bracket"))?;
            let (h, p) = hostport.split_at(end + 1);
            if h[1..end].parse::<std::net::Ipv6Addr>().is_err() {
                return Err(err(s, "not an IPv6 address in brackets"));
            }
            (h, p.strip_prefix(':').ok_or_else(|| err(s, "missing port"))?)
        } else {
            hostport.rsplit_once(':').ok_or_else(|| err(s, "missing port"))?
        };
        let host_ok = host.starts_with('[')
            || (!host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')));
        if !host_ok {
            return Err(err(s, "bad host"));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 && !port.starts_with('+') => p,
            _ => return Err(err(s, "bad port (1-65535)")),
        };
        Ok(Self { scheme, host: host.to_ascii_lowercase(), port })
    }
}

impl fmt::Display for BaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

impl serde::Serialize for BaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BaseUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme_and_prints_back() {
        for ok in ["http://127.0.0.1:8081", "https://edge-1.example:443", "h3://[::1]:4433"] {
            let u: BaseUrl = ok.parse().unwrap();
            assert_eq!(u.to_string(), ok);
            assert_eq!(format!("{ok}/").parse::<BaseUrl>().unwrap(), u, "a trailing slash is no path");
        }
        let u: BaseUrl = "h3://[::1]:4433".parse().unwrap();
        assert_eq!((u.scheme(), u.host(), u.port(), u.authority()), (Scheme::H3, "::1", 4433, "[::1]:4433".into()));
        assert_eq!(u.with_scheme(Scheme::Https).to_string(), "https://[::1]:4433");
        assert_eq!(
            "HTTP://Edge.Example:80".parse::<BaseUrl>().map(|u| u.to_string()).ok(),
            None,
            "schemes are lower case"
        );
        assert_eq!("http://Edge.Example:80".parse::<BaseUrl>().unwrap().to_string(), "http://edge.example:80");
    }

    #[test]
    fn says_what_is_wrong() {
        for (bad, reason) in [
            ("127.0.0.1:80", "missing scheme"),
            ("ftp://x:1", "unknown scheme"),
            ("http://127.0.0.1", "missing port"),
            ("http://[::1]", "missing port"),
            ("http://[::1:80", "unclosed IPv6 bracket"),
            ("http://[zz]:80", "not an IPv6 address in brackets"),
            ("http://127.0.0.1:80/x", "a base URL has no path"),
            ("http://u:p@host:80", "a base URL has no user or password"),
            ("https://:99", "bad host"),
            ("https://h:99999", "bad port (1-65535)"),
            ("https://h:0", "bad port (1-65535)"),
            ("https://h:+1", "bad port (1-65535)"),
            ("https://h o:1", "bad host"),
        ] {
            let e = bad.parse::<BaseUrl>().unwrap_err();
            assert_eq!(e.reason, reason, "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert_eq!(format!("http://{}:1", "a".repeat(400)).parse::<BaseUrl>().unwrap_err().reason, "too long");
    }

    #[test]
    fn splits_a_full_url() {
        let (b, p) = BaseUrl::split("h3://127.0.0.1:9/v1/chunks/ab?token=t").unwrap();
        assert_eq!((b.to_string().as_str(), p), ("h3://127.0.0.1:9", "/v1/chunks/ab?token=t"));
        let (b, p) = BaseUrl::split("http://[::1]:80").unwrap();
        assert_eq!((b.to_string().as_str(), p), ("http://[::1]:80", "/"));
        assert!(BaseUrl::split("http://h:1?x").is_err());
        assert!(BaseUrl::split("nohost/path").is_err());
    }
}
