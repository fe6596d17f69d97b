//! The `Alt-Svc` response header (RFC 7838): how a server over TCP says that HTTP/3 is offered
//! too, and how it takes that back.
//!
//! `Alt-Svc: h3=":443"; ma=86400, h3-29=":443"` lists alternatives, each a protocol (an ALPN
//! id), an authority (`[host]:port`; an empty host is the origin's own), and parameters: `ma`,
//! how many seconds the alternative may be remembered (default 24 h), and `persist`.
//! `Alt-Svc: clear` withdraws every alternative of the origin.
//!
//! [`parse`] is strict where it matters and lenient where the RFC asks: the value is bounded
//! ([`MAX_VALUE`] bytes, [`MAX_ALTERNATIVES`] entries), an alternative that does not parse is
//! skipped (RFC 7838 §3: "ignore"), unknown parameters are ignored, and a value with nothing
//! usable yields an empty list rather than an error. Connecting to an alternative still checks
//! the origin's certificate (RFC 7838 §2.1), so a hostile header can send a client elsewhere
//! only to a server that can prove it is the origin.

use std::time::Duration;

/// Longest header value looked at; anything longer is ignored whole.
pub const MAX_VALUE: usize = 4096;
/// Alternatives kept from one header value.
pub const MAX_ALTERNATIVES: usize = 8;
/// `ma` when the header does not say (RFC 7838 §3.1).
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(86_400);
/// Longest `ma` honoured (30 days): a header cannot pin an alternative for years.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

/// What an `Alt-Svc` header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AltSvc {
    /// `clear`: forget every alternative of this origin.
    Clear,
    /// These alternatives, in the server's order of preference (possibly none usable).
    Alternatives(Vec<Alternative>),
}

/// One alternative service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alternative {
    /// The ALPN protocol id, percent-decoded (`h3`).
    pub protocol: String,
    /// The host, when another than the origin's.
    pub host: Option<String>,
    /// The port.
    pub port: u16,
    /// How long it may be remembered (`ma`, capped at [`MAX_MAX_AGE`]).
    pub max_age: Duration,
}

impl AltSvc {
    /// The first alternative speaking `protocol` (e.g. `"h3"`), if any.
    #[must_use]
    pub fn find(&self, protocol: &str) -> Option<&Alternative> {
        match self {
            Self::Clear => None,
            Self::Alternatives(v) => v.iter().find(|a| a.protocol == protocol),
        }
    }
}

/// Parses an `Alt-Svc` header value; `None` when it is too long or not text.
#[must_use]
pub fn parse(value: &[u8]) -> Option<AltSvc> {
    if value.len() > MAX_VALUE {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?.trim();
    if text == "clear" {
        return Some(AltSvc::Clear);
    }
    let mut out = Vec::new();
    for item in split_outside_quotes(text, ',') {
        if out.len() == MAX_ALTERNATIVES {
            break;
        }
        if let Some(a) = alternative(item) {
            out.push(a);
        }
    }
    Some(AltSvc::Alternatives(out))
}

/// `protocol-id="authority" *( ";" parameter )`, or `None` when it does not parse.
fn alternative(item: &str) -> Option<Alternative> {
    let mut parts = split_outside_quotes(item, ';');
    let (protocol, authority) = parts.next()?.split_once('=')?;
    let protocol = percent_encoding::percent_decode_str(protocol.trim()).decode_utf8().ok()?;
    if protocol.is_empty() || !protocol.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let authority = unquote(authority.trim())?;
    let (host, port) = authority.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if !host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b)) {
        return None;
    }
    let mut max_age = DEFAULT_MAX_AGE;
    for param in parts {
        let Some((name, value)) = param.split_once('=') else { continue };
        if name.trim().eq_ignore_ascii_case("ma") {
            // RFC 7838 §3.1: delta-seconds; a malformed ma makes the alternative unusable.
            let secs: u64 = unquote(value.trim())?.parse().ok()?;
            max_age = Duration::from_secs(secs).min(MAX_MAX_AGE);
        }
    }
    Some(Alternative {
        protocol: protocol.into_owned(),
        host: (!host.is_empty()).then(|| host.to_ascii_lowercase()),
        port,
        max_age,
    })
}

/// `"text"` → `text` (no escapes are valid in an authority or a number), or a bare token as is.
fn unquote(s: &str) -> Option<&str> {
    match s.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"').filter(|inner| !inner.contains(['"', '\\'])),
        None => Some(s).filter(|t| !t.is_empty() && !t.contains(['"', '\\'])),
    }
}

/// `s` split at `sep` where it is not inside a quoted string, each part trimmed, empty parts
/// dropped.
fn split_outside_quotes(s: &str, sep: char) -> impl Iterator<Item = &str> {
    let mut quoted = false;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            c if c == sep && !quoted => {
                parts.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().map(str::trim).filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alt(protocol: &str, host: Option<&str>, port: u16, secs: u64) -> Alternative {
        Alternative { protocol: protocol.into(), host: host.map(Into::into), port, max_age: Duration::from_secs(secs) }
    }

    #[test]
    fn what_our_servers_and_others_send() {
        assert_eq!(parse(br#"h3=":8443"; ma=86400"#), Some(AltSvc::Alternatives(vec![alt("h3", None, 8443, 86_400)])));
        // Several, with another host, the default ma, unknown parameters and quoted ma.
        let v = parse(br#"h3-29=":443"; persist=1, h3="edge2.example:4433"; ma="60";x=y , h2=":443""#).unwrap();
        assert_eq!(
            v,
            AltSvc::Alternatives(vec![
                alt("h3-29", None, 443, 86_400),
                alt("h3", Some("edge2.example"), 4433, 60),
                alt("h2", None, 443, 86_400),
            ])
        );
        assert_eq!(v.find("h3"), Some(&alt("h3", Some("edge2.example"), 4433, 60)));
        assert_eq!(parse(b"  clear "), Some(AltSvc::Clear));
        assert_eq!(parse(b"clear").unwrap().find("h3"), None);
        // IPv6 literal, upper-case host, percent-encoded protocol id.
        assert_eq!(parse(br#"h%33="[::1]:9000""#).unwrap().find("h3"), Some(&alt("h3", Some("::1"), 9000, 86_400)));
        assert_eq!(parse(br#"h3="EDGE.example:1""#).unwrap().find("h3").unwrap().host.as_deref(), Some("edge.example"));
    }

    #[test]
    fn bad_alternatives_are_skipped_and_bounds_hold() {
        for bad in [
            r#"h3=":0""#,
            r#"h3=":99999""#,
            r#"h3="host""#,
            r#"h3=":443"; ma=soon"#,
            r#"h3=":443"; ma=-1"#,
            r#"h3=":4"43""#,
            r#"h3="/etc/passwd:443""#,
            r#"h3="a b:443""#,
            "=\":443\"",
            "h3",
            r#"h3=":443"#,
        ] {
            assert_eq!(parse(bad.as_bytes()), Some(AltSvc::Alternatives(vec![])), "{bad}");
        }
        // A good one after a bad one still counts; a comma inside quotes does not split.
        assert_eq!(parse(br#"h3="x,y:1", h3=":2""#).unwrap().find("h3").map(|a| a.port), Some(2));
        assert_eq!(parse(br#"h3=":443"; ma=999999999999"#).unwrap().find("h3").unwrap().max_age, MAX_MAX_AGE);
        let many = vec![r#"h3=":1""#; 100].join(",");
        assert!(matches!(parse(many.as_bytes()), Some(AltSvc::Alternatives(v)) if v.len() == MAX_ALTERNATIVES));
        assert_eq!(parse(&vec![b' '; MAX_VALUE + 1]), None);
        assert_eq!(parse(&[0xff, 0xfe]), None);
        assert_eq!(parse(b"clearly"), Some(AltSvc::Alternatives(vec![])));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_stays_bounded(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            if let Some(AltSvc::Alternatives(v)) = parse(&bytes) {
                proptest::prop_assert!(v.len() <= MAX_ALTERNATIVES);
                for a in v {
                    proptest::prop_assert!(a.port != 0 && a.max_age <= MAX_MAX_AGE);
                }
            }
        }
    }
}
