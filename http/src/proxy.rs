//! The client's address behind a load balancer the operator trusts (`--trusted-proxy CIDR`):
//! from a PROXY protocol header (v1 or v2, HAProxy's) at the start of the connection, or from
//! `X-Forwarded-For`, as the operator says the balancer speaks (`--trusted-proxy-mode`), and
//! only when the connection itself comes from a trusted address. From anyone else both are
//! ignored: a client cannot claim another address. One mode, never both: a balancer that
//! sends PROXY headers passes its clients' `X-Forwarded-For` through untouched, so believing
//! that header too would let any client behind it claim any address.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use http::HeaderMap;
use ipnet::IpNet;
use ppp::{HeaderResult, PartialResult as _};
use tokio::net::TcpStream;

/// Largest PROXY header read (a v1 header is at most 107 bytes; a v2 one with its TLVs may be
/// longer, and is refused beyond this).
pub const MAX_HEADER_BYTES: usize = 1024;

/// The v2 header's first 12 bytes.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// How trusted proxies say who the client is (`--trusted-proxy-mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProxyMode {
    /// A PROXY protocol header (v1 or v2) first on each TCP connection (an L4 balancer:
    /// HAProxy, AWS NLB, a Kubernetes service with the PROXY protocol on). A connection
    /// without one (a health check) keeps its own address. `X-Forwarded-For` is ignored, and
    /// HTTP/3 keeps the address the QUIC connection comes from (no PROXY protocol for it).
    #[default]
    ProxyProtocol,
    /// `X-Forwarded-For` on each request, HTTP/1.1, HTTP/2 and HTTP/3 (an L7 balancer that
    /// sets it: nginx, Envoy, a cloud HTTP balancer). A PROXY header is not read.
    XForwardedFor,
}

/// The networks whose connections may say who the client is, and how they say it. Cheap to
/// clone (one per connection that needs it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    nets: std::sync::Arc<Vec<IpNet>>,
    mode: ProxyMode,
}

/// A `--trusted-proxy` value that is not a CIDR or an address.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0:?} is not a CIDR (10.0.0.0/8, fd00::/8) or an address")]
pub struct BadCidr(String);

impl FromStr for TrustedProxies {
    type Err = BadCidr;

    /// One CIDR or address, or several separated by commas.
    fn from_str(s: &str) -> Result<Self, BadCidr> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                p.parse::<IpNet>().or_else(|_| p.parse::<IpAddr>().map(IpNet::from)).map_err(|_| BadCidr(p.into()))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self::new)
    }
}

impl TrustedProxies {
    /// Trusts `nets`, in the default mode ([`ProxyMode::ProxyProtocol`]).
    #[must_use]
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self { nets: std::sync::Arc::new(nets), mode: ProxyMode::default() }
    }

    /// The same networks, speaking `mode`.
    #[must_use]
    pub fn with_mode(self, mode: ProxyMode) -> Self {
        Self { mode, ..self }
    }

    /// How they say who the client is.
    #[must_use]
    pub const fn mode(&self) -> ProxyMode {
        self.mode
    }

    /// Adds the networks of `other`.
    pub fn extend(&mut self, other: &Self) {
        std::sync::Arc::make_mut(&mut self.nets).extend(other.nets.iter().copied());
    }

    /// Whether no proxy is trusted (the default).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether connections from `ip` may say who the client is.
    #[must_use]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = chorus_core::ip::canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// Whether requests on a connection from `remote` name their client in
    /// `X-Forwarded-For`: `remote` is trusted and the mode is [`ProxyMode::XForwardedFor`].
    #[must_use]
    pub fn forwards_for(&self, remote: IpAddr) -> bool {
        self.mode == ProxyMode::XForwardedFor && self.contains(remote)
    }

    /// Whether a connection from `remote` starts with a PROXY header to read: `remote` is
    /// trusted and the mode is [`ProxyMode::ProxyProtocol`].
    #[must_use]
    pub fn sends_proxy_header(&self, remote: IpAddr) -> bool {
        self.mode == ProxyMode::ProxyProtocol && self.contains(remote)
    }

    /// The client behind `remote`: when `remote` is trusted, the rightmost address of
    /// `X-Forwarded-For` that is not itself a trusted proxy (each proxy appends the address
    /// it saw; entries further left were written by whoever sent them and prove nothing),
    /// else `remote`.
    #[must_use]
    pub fn client_ip(&self, remote: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(remote) {
            return remote;
        }
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            // An entry that does not parse ends the walk: what is left of it is not trustworthy.
            let Some(ip) = parse_hop(hop) else { return remote };
            if !self.contains(ip) {
                return ip;
            }
        }
        remote
    }
}

/// `remote`, or the client a trusted proxy at `remote` names in `X-Forwarded-For` (its port
/// unknown: 0).
pub(crate) fn forwarded_remote(trusted: &TrustedProxies, remote: SocketAddr, headers: &HeaderMap) -> SocketAddr {
    let ip = trusted.client_ip(remote.ip(), headers);
    if ip == remote.ip() { remote } else { SocketAddr::new(ip, 0) }
}

/// One `X-Forwarded-For` entry: an address, or `[v6]:port` / `v4:port` as some proxies write.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>().ok().or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
}

/// Why a PROXY header was refused (the connection is closed).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// The header is malformed or larger than [`MAX_HEADER_BYTES`].
    #[error("malformed PROXY protocol header")]
    Malformed,
    /// It did not arrive within the header timeout.
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// Reading failed.
    #[error("reading the PROXY protocol header")]
    Io(#[from] std::io::Error),
}

/// What a complete header says, and how many bytes it took.
fn parse(buf: &[u8]) -> Option<Result<(Option<SocketAddr>, usize), ProxyError>> {
    let result = HeaderResult::parse(buf);
    if result.is_incomplete() {
        // A v1 header is one line of at most 107 bytes: a whole line that is still
        // "incomplete" is malformed.
        let v1_line_done = buf.starts_with(b"PROXY ") && (buf.windows(2).any(|w| w == b"\r\n") || buf.len() >= 107);
        return v1_line_done.then_some(Err(ProxyError::Malformed));
    }
    Some(match result {
        HeaderResult::V1(Ok(h)) => {
            let client = match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
                ppp::v1::Addresses::Unknown => None,
            };
            Ok((client, h.header.len()))
        }
        HeaderResult::V2(Ok(h)) => {
            // LOCAL (the proxy's own health check) and unspecified families keep the connection's
            // address.
            let client = match (h.command, h.addresses) {
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv4(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                (ppp::v2::Command::Proxy, ppp::v2::Addresses::IPv6(a)) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                _ => None,
            };
            Ok((client, h.len()))
        }
        HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => Err(ProxyError::Malformed),
    })
}

/// Whether `start` (the first bytes of a connection) can be the start of a PROXY header.
fn may_be_header(start: &[u8]) -> bool {
    let n = start.len().min(V2_SIGNATURE.len());
    start[..n] == V2_SIGNATURE[..n] || b"PROXY "[..n.min(6)] == start[..n.min(6)]
}

/// Reads a PROXY header from the start of `stream`, a connection from a trusted proxy, within
/// `timeout`, and consumes exactly its bytes. `Ok(None)` when the connection does not start
/// with one (the proxy sends none: HTTP follows at once) or the header names no address.
///
/// # Errors
/// [`ProxyError`]: a malformed or oversized header, or none complete in time.
pub async fn read_header(stream: &mut TcpStream, timeout: Duration) -> Result<Option<SocketAddr>, ProxyError> {
    const MAX_PAUSE: Duration = Duration::from_millis(100);
    let work = async {
        let mut buf = vec![0u8; MAX_HEADER_BYTES];
        let mut pause = Duration::from_millis(1);
        loop {
            // Peek, so that a connection without a header loses no bytes.
            let n = stream.peek(&mut buf).await?;
            if n == 0 || !may_be_header(&buf[..n]) {
                return Ok(None);
            }
            if let Some(parsed) = parse(&buf[..n]) {
                let (client, len) = parsed?;
                let mut header = vec![0u8; len];
                tokio::io::AsyncReadExt::read_exact(stream, &mut header).await?;
                return Ok(client);
            }
            if n == buf.len() {
                return Err(ProxyError::Malformed);
            }
            // Incomplete: wait for more bytes before peeking again. A peeked socket stays
            // readable, so wait a little, longer each time: a header that trickles in costs a
            // few dozen wake-ups until the timeout, not one a millisecond.
            stream.readable().await?;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_PAUSE);
        }
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| ProxyError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(s: &str) -> TrustedProxies {
        s.parse().unwrap()
    }

    #[test]
    fn forwarded_for_counts_only_from_a_trusted_proxy_and_from_the_right() {
        let lb: IpAddr = "10.0.0.2".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 198.51.100.9".parse().unwrap());
        let t = trusted("10.0.0.0/8");
        // From the load balancer: its entry (the rightmost) is the client; the client's own
        // claim (6.6.6.6) is not believed.
        assert_eq!(t.client_ip(lb, &h), "198.51.100.9".parse::<IpAddr>().unwrap());
        // From anyone else the header is ignored.
        let stranger: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(t.client_ip(stranger, &h), stranger);
        assert_eq!(TrustedProxies::default().client_ip(lb, &h), lb);
        // Two trusted hops: the first untrusted address from the right.
        h.insert("x-forwarded-for", "198.51.100.9, 10.0.0.7".parse().unwrap());
        assert_eq!(t.client_ip(lb, &h), "198.51.100.9".parse::<IpAddr>().unwrap());
        // Garbage ends the walk at the proxy.
        h.insert("x-forwarded-for", "198.51.100.9, nonsense".parse().unwrap());
        assert_eq!(t.client_ip(lb, &h), lb);
        // An IPv4 proxy seen on a dual-stack socket.
        h.insert("x-forwarded-for", "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(t.client_ip("::ffff:10.0.0.2".parse().unwrap(), &h), "2001:db8::1".parse::<IpAddr>().unwrap());
        assert!(trusted("10.0.0.1, fd00::/8").contains("fd00::5".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn proxy_headers_v1_and_v2_are_parsed_and_bounded() {
        let v1 = b"PROXY TCP4 198.51.100.9 10.0.0.1 51000 8080\r\nGET / HTTP/1.1\r\n";
        let (client, len) = parse(v1).unwrap().unwrap();
        assert_eq!(client, Some("198.51.100.9:51000".parse().unwrap()));
        assert_eq!(&v1[len..len + 3], b"GET");
        assert!(parse(b"PROXY TCP4 198.51.100.9").is_none(), "incomplete");
        assert!(matches!(parse(b"PROXY TCP4 nonsense here\r\n"), Some(Err(ProxyError::Malformed))));
        assert!(matches!(parse(b"PROXY TCP4 nonsense\r\n"), Some(Err(ProxyError::Malformed))));
        assert!(matches!(parse(&[b"PROXY ".as_slice(), &[b'1'; 120]].concat()), Some(Err(ProxyError::Malformed))));
        let (unknown, _) = parse(b"PROXY UNKNOWN\r\n").unwrap().unwrap();
        assert_eq!(unknown, None);

        let mut v2 = V2_SIGNATURE.to_vec();
        v2.extend([0x21, 0x11, 0, 12]); // v2 PROXY, TCP over IPv4, 12 address bytes
        v2.extend([198, 51, 100, 9, 10, 0, 0, 1]);
        v2.extend(51000u16.to_be_bytes());
        v2.extend(8080u16.to_be_bytes());
        v2.extend(b"\x16\x03\x01"); // a TLS ClientHello follows
        let (client, len) = parse(&v2).unwrap().unwrap();
        assert_eq!(client, Some("198.51.100.9:51000".parse().unwrap()));
        assert_eq!(&v2[len..], b"\x16\x03\x01");
        // LOCAL: the proxy speaking for itself.
        let mut local = V2_SIGNATURE.to_vec();
        local.extend([0x20, 0x00, 0, 0]);
        assert_eq!(parse(&local).unwrap().unwrap().0, None);

        assert!(!may_be_header(b"GET / HTTP/1.1\r\n"));
        assert!(!may_be_header(b"\x16\x03\x01\x02\x00"));
        assert!(may_be_header(b"PRO"));
        assert!(may_be_header(b"\r\n\r\n\0"));
    }
}
