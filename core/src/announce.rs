//! Signed announces (docs/protocol.md §3.3): what a peer tells an edge's tracker, signed with
//! the libp2p identity key its peer id is derived from, and the checks a tracker makes before
//! it lists anything.
//!
//! The format is libp2p's signed envelope (libp2p RFC 0002, `libp2p_core::SignedEnvelope`):
//! domain [`DOMAIN`], payload type [`PAYLOAD_TYPE`], payload the JSON of an
//! [`Announce`], carried base64 in a JSON body ([`SignedAnnounce`]). The signature covers the
//! peer id, its addresses, its tracks, a timestamp and the edge it is meant for, so an announce
//! can be neither forged for someone else's peer id, nor replayed to another edge, nor replayed
//! later than [`WINDOW`].
//!
//! Then [`bound_addrs`] keeps only the addresses a listener may be sent to dial: those on the
//! IP the announce came from, and circuits through the edge's own relays. An announce cannot
//! point listeners at hosts that never joined (a reflection attack on `10.1.2.3:22` or a
//! cloud metadata address).
//!
//! Pure functions, no I/O; the caller passes the clock.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use libp2p_core::Multiaddr;
use libp2p_core::multiaddr::Protocol;
use libp2p_identity::Keypair;
use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::api::{Announce, Invalid};
use crate::error::{Cause, cause};
use crate::ip::canonical;

/// The envelope's domain-separation string: a signature made for anything else does not verify.
pub const DOMAIN: &str = "chorus-announce";
/// The envelope's payload type.
pub const PAYLOAD_TYPE: &[u8] = b"/chorus/announce/1";
/// Largest envelope accepted, decoded (an announce at every limit of [`crate::api`] is about
/// 20 KiB).
pub const MAX_ENVELOPE_BYTES: usize = 32 * 1024;
/// How far an announce's timestamp may be from the edge's clock, either way.
pub const WINDOW: Duration = Duration::from_secs(120);

/// The body of `POST /v1/peers/announce`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedAnnounce {
    /// The signed envelope, protobuf-encoded (libp2p RFC 0002), in standard base64.
    pub envelope: String,
}

/// Why an announce is refused, before any of it is stored.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AnnounceError {
    /// Not a signed envelope of an announce (bad base64, protobuf, payload type or JSON).
    #[error("not a signed chorus announce")]
    Malformed(#[source] Cause),
    /// The signature does not verify.
    #[error("the announce's signature does not verify")]
    BadSignature,
    /// The envelope is signed by another key than the one `peer_id` is derived from.
    #[error("the announce names peer {claimed} but is signed by {signer}")]
    NotTheSigner {
        /// The peer id in the announce.
        claimed: String,
        /// The peer id of the signing key.
        signer: PeerId,
    },
    /// The announce breaks a bound or a format rule.
    #[error("invalid announce")]
    Invalid(#[from] Invalid),
    /// Its timestamp is further than [`WINDOW`] from the edge's clock.
    #[error("the announce is signed for time {timestamp}, more than {} s from this edge's clock ({now})", WINDOW.as_secs())]
    OutsideWindow {
        /// The announce's timestamp.
        timestamp: u64,
        /// The edge's clock.
        now: u64,
    },
    /// It is signed for another edge.
    #[error("the announce is signed for edge {signed_for:?}, not for this one")]
    WrongEdge {
        /// The edge it names.
        signed_for: String,
    },
}

impl AnnounceError {
    /// Whether the edge answers 401 (the signature, the signer, the time or the edge is wrong),
    /// rather than 400 (the body is malformed).
    #[must_use]
    pub const fn is_unauthorized(&self) -> bool {
        !matches!(self, Self::Malformed(_) | Self::Invalid(_))
    }
}

impl SignedAnnounce {
    /// `announce` signed with `key`.
    ///
    /// # Errors
    /// [`AnnounceError::Malformed`] when `key` cannot sign (an RSA key without its private
    /// part; ed25519 keys always can).
    pub fn sign(key: &Keypair, announce: &Announce) -> Result<Self, AnnounceError> {
        // A struct of strings and numbers: serialising cannot fail.
        let payload = serde_json::to_vec(announce).unwrap_or_default();
        let envelope = libp2p_core::SignedEnvelope::new(key, DOMAIN.to_owned(), PAYLOAD_TYPE.to_vec(), payload)
            .map_err(|e| AnnounceError::Malformed(cause(e)))?;
        Ok(Self { envelope: BASE64.encode(envelope.into_protobuf_encoding()) })
    }

    /// The announce inside, once its signature verifies, it is signed by the key its
    /// `peer_id` is derived from, and it keeps every bound of [`Announce::validate`].
    ///
    /// # Errors
    /// [`AnnounceError`] saying which check failed.
    pub fn open(&self) -> Result<(Announce, PeerId), AnnounceError> {
        let malformed = |e: Cause| AnnounceError::Malformed(e);
        if self.envelope.len() > MAX_ENVELOPE_BYTES.div_ceil(3) * 4 {
            return Err(malformed(crate::error::message(format!("envelope larger than {MAX_ENVELOPE_BYTES} bytes"))));
        }
        let bytes = BASE64.decode(&self.envelope).map_err(|e| malformed(cause(e)))?;
        let envelope = libp2p_core::SignedEnvelope::from_protobuf_encoding(&bytes).map_err(|e| malformed(cause(e)))?;
        let (payload, key) =
            envelope.payload_and_signing_key(DOMAIN.to_owned(), PAYLOAD_TYPE).map_err(|e| match e {
                libp2p_core::signed_envelope::ReadPayloadError::InvalidSignature => AnnounceError::BadSignature,
                other => malformed(cause(other)),
            })?;
        let announce: Announce = serde_json::from_slice(payload).map_err(|e| malformed(cause(e)))?;
        announce.validate()?;
        let signer = key.to_peer_id();
        if announce.peer_id != signer.to_base58() {
            return Err(AnnounceError::NotTheSigner { claimed: announce.peer_id, signer });
        }
        Ok((announce, signer))
    }
}

/// Checks that `announce` was made within [`WINDOW`] of `now` (seconds since the Unix epoch).
///
/// # Errors
/// [`AnnounceError::OutsideWindow`], which carries `now` for the peer to sign again by.
pub const fn check_time(announce: &Announce, now: u64) -> Result<(), AnnounceError> {
    if announce.timestamp.abs_diff(now) > WINDOW.as_secs() {
        return Err(AnnounceError::OutsideWindow { timestamp: announce.timestamp, now });
    }
    Ok(())
}

/// Checks that `announce` is meant for this edge: for one of `names` when the operator set
/// them (`--tracker-name`), else for the `authority` (host and port) the request was sent to.
///
/// # Errors
/// [`AnnounceError::WrongEdge`].
pub fn check_edge(announce: &Announce, names: &[String], authority: Option<&str>) -> Result<(), AnnounceError> {
    let signed_for = announce.edge.as_str();
    let ok = if names.is_empty() {
        authority.is_some_and(|a| a.eq_ignore_ascii_case(signed_for))
    } else {
        names.iter().any(|n| n.eq_ignore_ascii_case(signed_for))
    };
    if ok { Ok(()) } else { Err(AnnounceError::WrongEdge { signed_for: signed_for.to_owned() }) }
}

/// The name an announce to the edge at `base` (`http://HOST:PORT`, `https://…`, `h3://…`) is
/// signed for: its `host:port`, lower case.
#[must_use]
pub fn edge_name(base: &crate::url::BaseUrl) -> String {
    base.authority()
}

/// The addresses of `announce` (signed by `peer`) that listeners may be told to dial, as
/// multiaddrs ending in `/p2p/<peer>`:
///
/// - a direct address (`/ip4|ip6/IP/tcp/PORT` or `…/udp/PORT/quic-v1`) only when `IP` is
///   `sender`, the address the announce came from: private, loopback and link-local addresses
///   are thus listed only for a peer that speaks from that very address (the loopback demo, a
///   LAN), and never for anyone else;
/// - a relay circuit (`…/p2p/RELAY/p2p-circuit`) only through one of `relays`, the edge's own
///   (full multiaddrs ending in `/p2p/RELAY`), and rebuilt from them: the announced prefix
///   before `/p2p/RELAY` is dropped, so a circuit cannot smuggle in a host to dial
///   (`/ip4/169.254.169.254/tcp/80/p2p/RELAY/p2p-circuit` lists as each configured address of
///   `RELAY` with `/p2p-circuit/p2p/<peer>`);
/// - nothing else: DNS names (which could resolve anywhere), unspecified and multicast
///   addresses, port 0, other transports, or an address naming another peer.
///
/// Each address is listed once, in the announce's order.
#[must_use]
pub fn bound_addrs(announce: &Announce, peer: PeerId, sender: IpAddr, relays: &[Multiaddr]) -> Vec<String> {
    let sender = canonical(sender);
    let mut listed: Vec<String> = Vec::new();
    for a in announce.addrs.iter().filter_map(|a| a.parse::<Multiaddr>().ok()) {
        let Some(a) = strip_peer(a, peer) else { continue };
        let through: Vec<Multiaddr> = if let Some(relay) = circuit_relay(&a) {
            relays
                .iter()
                .filter(|r| r.iter().last() == Some(Protocol::P2p(relay)))
                .map(|r| r.clone().with(Protocol::P2pCircuit).with(Protocol::P2p(peer)))
                .collect()
        } else {
            match direct_ip(&a) {
                Some(ip) if canonical(ip) == sender && !ip.is_unspecified() && !ip.is_multicast() => {
                    vec![a.with(Protocol::P2p(peer))]
                }
                _ => Vec::new(),
            }
        };
        for b in through.iter().map(ToString::to_string) {
            if !listed.contains(&b) {
                listed.push(b);
            }
        }
    }
    listed
}

/// `a` without a trailing `/p2p/<peer>`; `None` when it names another peer at its end.
fn strip_peer(mut a: Multiaddr, peer: PeerId) -> Option<Multiaddr> {
    match a.iter().last() {
        Some(Protocol::P2p(p)) if p == peer => {
            a.pop();
            Some(a)
        }
        Some(Protocol::P2p(_)) => None,
        _ => Some(a),
    }
}

/// The relay of a circuit address `…/p2p/RELAY/p2p-circuit`, when that is what `a` is.
#[must_use]
pub fn circuit_relay(a: &Multiaddr) -> Option<PeerId> {
    let parts: Vec<Protocol<'_>> = a.iter().collect();
    match parts.as_slice() {
        [.., Protocol::P2p(relay), Protocol::P2pCircuit] => Some(*relay),
        _ => None,
    }
}

/// The IP of a direct address our peers speak: `/ip4|ip6/IP/tcp/PORT` or
/// `/ip4|ip6/IP/udp/PORT/quic-v1`, with a port other than 0 (and nothing after it: strip a
/// trailing `/p2p/<peer>` first). The peer layer's address filters use it too
/// (`chorus-peer`'s `learned` and `dial_guard`).
#[must_use]
pub fn direct_ip(a: &Multiaddr) -> Option<IpAddr> {
    let parts: Vec<Protocol<'_>> = a.iter().collect();
    let (ip, rest) = match parts.split_first()? {
        (Protocol::Ip4(ip), rest) => (IpAddr::V4(*ip), rest),
        (Protocol::Ip6(ip), rest) => (IpAddr::V6(*ip), rest),
        _ => return None,
    };
    match rest {
        [Protocol::Tcp(port)] | [Protocol::Udp(port), Protocol::QuicV1] if *port != 0 => Some(ip),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TrackId;

    fn announce(key: &Keypair, addrs: &[&str]) -> Announce {
        Announce {
            peer_id: key.public().to_peer_id().to_base58(),
            addrs: addrs.iter().map(|a| (*a).to_owned()).collect(),
            tracks: vec![TrackId::parse("tides").unwrap()],
            held: Vec::new(),
            dropped: Vec::new(),
            timestamp: 1_000_000,
            edge: "edge.example:8443".into(),
        }
    }

    #[test]
    fn a_signed_announce_opens_to_what_was_signed() {
        let key = Keypair::generate_ed25519();
        let a = announce(&key, &["/ip4/192.0.2.7/tcp/4001"]);
        let signed = SignedAnnounce::sign(&key, &a).unwrap();
        let (opened, peer) = signed.open().unwrap();
        assert_eq!(opened, a);
        assert_eq!(peer, key.public().to_peer_id());
    }

    #[test]
    fn a_forged_or_altered_announce_is_refused() {
        let (victim, attacker) = (Keypair::generate_ed25519(), Keypair::generate_ed25519());
        // The attacker signs an announce that names the victim's peer id (squatting).
        let squat = SignedAnnounce::sign(&attacker, &announce(&victim, &["/ip4/192.0.2.7/tcp/4001"])).unwrap();
        assert!(
            matches!(squat.open(), Err(AnnounceError::NotTheSigner { signer, .. }) if signer == attacker.public().to_peer_id())
        );

        // One byte of the payload changed after signing.
        let good = SignedAnnounce::sign(&victim, &announce(&victim, &["/ip4/192.0.2.7/tcp/4001"])).unwrap();
        let mut bytes = BASE64.decode(&good.envelope).unwrap();
        let at = bytes.windows(4).position(|w| w == b"4001").unwrap();
        bytes[at] = b'5';
        let altered = SignedAnnounce { envelope: BASE64.encode(bytes) };
        assert!(matches!(altered.open(), Err(AnnounceError::BadSignature)));

        // Signed for another purpose (another domain): does not verify as an announce.
        let payload = serde_json::to_vec(&announce(&victim, &[])).unwrap();
        let other =
            libp2p_core::SignedEnvelope::new(&victim, "libp2p-routing-state".into(), PAYLOAD_TYPE.to_vec(), payload)
                .unwrap();
        let other = SignedAnnounce { envelope: BASE64.encode(other.into_protobuf_encoding()) };
        assert!(matches!(other.open(), Err(AnnounceError::BadSignature)));

        for junk in ["", "!!", "AAAA", &"A".repeat(MAX_ENVELOPE_BYTES * 2)] {
            let e = SignedAnnounce { envelope: junk.to_owned() }.open().unwrap_err();
            assert!(matches!(e, AnnounceError::Malformed(_)), "{junk:.8}: {e:?}");
            assert!(!e.is_unauthorized());
        }
    }

    #[test]
    fn time_and_edge_are_checked() {
        let key = Keypair::generate_ed25519();
        let a = announce(&key, &[]);
        assert!(check_time(&a, 1_000_000 + 120).is_ok());
        assert!(check_time(&a, 1_000_000 - 120).is_ok());
        assert!(matches!(check_time(&a, 1_000_121), Err(AnnounceError::OutsideWindow { now: 1_000_121, .. })));
        assert!(check_time(&a, 999_879).is_err());

        assert!(check_edge(&a, &[], Some("Edge.Example:8443")).is_ok());
        assert!(check_edge(&a, &[], Some("other.example:8443")).is_err());
        assert!(check_edge(&a, &[], None).is_err());
        // With names set, the request's authority does not matter.
        assert!(check_edge(&a, &["edge.example:8443".into()], Some("10.0.0.5:8443")).is_ok());
        assert!(check_edge(&a, &["cdn.example:443".into()], Some("edge.example:8443")).is_err());
        assert_eq!(edge_name(&"https://Edge.Example:8443/".parse().unwrap()), "edge.example:8443");
        assert_eq!(edge_name(&"h3://[::1]:8443".parse().unwrap()), "[::1]:8443");
    }

    #[test]
    fn only_addresses_of_the_sender_and_circuits_of_our_relays_are_listed() {
        let key = Keypair::generate_ed25519();
        let peer = key.public().to_peer_id();
        let (relay, stranger) = (Keypair::generate_ed25519().public().to_peer_id(), PeerId::random());
        let sender: IpAddr = "198.51.100.9".parse().unwrap();
        let a = announce(
            &key,
            &[
                "/ip4/198.51.100.9/tcp/4001",
                &format!("/ip4/198.51.100.9/udp/4001/quic-v1/p2p/{peer}"),
                "/ip4/10.1.2.3/tcp/22",
                "/ip4/169.254.169.254/tcp/80",
                "/dns4/internal.example/tcp/6379",
                "/ip4/127.0.0.1/tcp/4001",
                "/ip4/0.0.0.0/tcp/4001",
                "/ip4/198.51.100.9/tcp/0",
                "/ip4/198.51.100.9/tcp/4001/ws",
                &format!("/ip4/198.51.100.9/tcp/4001/p2p/{stranger}"),
                &format!("/ip4/203.0.113.1/tcp/4001/p2p/{relay}/p2p-circuit"),
                &format!("/ip4/203.0.113.2/tcp/4001/p2p/{stranger}/p2p-circuit"),
                // A circuit through our relay but with a prefix of the announcer's choosing:
                // rebuilt from the relay's configured address, so 169.254.169.254 is never dialled.
                &format!("/ip4/169.254.169.254/tcp/80/p2p/{relay}/p2p-circuit"),
                &format!("/dns4/internal.example/tcp/6379/p2p/{relay}/p2p-circuit"),
            ],
        );
        let relays: Vec<Multiaddr> = vec![format!("/ip4/203.0.113.1/tcp/4001/p2p/{relay}").parse().unwrap()];
        let listed = bound_addrs(&a, peer, sender, &relays);
        assert_eq!(
            listed,
            vec![
                format!("/ip4/198.51.100.9/tcp/4001/p2p/{peer}"),
                format!("/ip4/198.51.100.9/udp/4001/quic-v1/p2p/{peer}"),
                format!("/ip4/203.0.113.1/tcp/4001/p2p/{relay}/p2p-circuit/p2p/{peer}"),
            ]
        );
        // The loopback demo: a peer on 127.0.0.1 lists its 127.0.0.1 address, also when its
        // request arrives on a dual-stack socket as ::ffff:127.0.0.1.
        let local = announce(&key, &["/ip4/127.0.0.1/tcp/4001", "/ip4/10.1.2.3/tcp/22"]);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(bound_addrs(&local, peer, mapped, &[]), vec![format!("/ip4/127.0.0.1/tcp/4001/p2p/{peer}")]);
    }
}
