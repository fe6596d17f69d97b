//! A home router's NAT, in user space, for the links of [`crate::netns`] (the kernel here has
//! no netfilter to do it): plain logic on an explicit clock, fed whole IPv4 packets.
//!
//! The host behind it has a private address; every packet it sends out gets the NAT's public
//! address and a public port from a mapping, and a packet from outside passes in only through
//! a live mapping and its filter (the behaviours of RFC 4787):
//!
//! - **mapping**: endpoint-independent (one public port per inside port, whatever the
//!   destination, the inside port kept when free: what hole punching needs), or
//!   address-and-port-dependent (a new public port per destination: a "symmetric" NAT, which
//!   defeats hole punching);
//! - **filtering**: endpoint-independent (anyone may send to a mapped port: "full cone") or
//!   address-and-port-dependent (only a host and port the inside has sent to through it:
//!   "port-restricted cone");
//! - a mapping lives for [`NatConfig::timeout`] after the inside last sent through it.
//!
//! TCP and UDP are translated (checksums adjusted, RFC 1624); anything else, and fragments, is
//! dropped. No hairpinning: a packet from inside to the NAT's own public address is dropped.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::time::Instant;

/// How the NAT picks a public port for an inside one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// One public port per inside port and protocol, whatever the destination.
    EndpointIndependent,
    /// A public port per inside port and destination (address and port).
    AddressAndPortDependent,
}

/// What the NAT lets in through a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filtering {
    /// Anything sent to the mapped port.
    EndpointIndependent,
    /// Only from an address and port the inside has sent to through the mapping.
    AddressAndPortDependent,
}

/// A NAT's behaviour.
#[derive(Debug, Clone, Copy)]
pub struct NatConfig {
    pub mapping: Mapping,
    pub filtering: Filtering,
    /// A mapping is forgotten this long after the inside last sent through it.
    pub timeout: Duration,
}

impl NatConfig {
    /// Endpoint-independent mapping and filtering ("full cone"), mappings kept `timeout`.
    #[must_use]
    pub const fn full_cone(timeout: Duration) -> Self {
        Self { mapping: Mapping::EndpointIndependent, filtering: Filtering::EndpointIndependent, timeout }
    }

    /// Endpoint-independent mapping, address-and-port-dependent filtering ("port-restricted
    /// cone": the common home router, and what hole punching gets through).
    #[must_use]
    pub const fn port_restricted(timeout: Duration) -> Self {
        Self { mapping: Mapping::EndpointIndependent, filtering: Filtering::AddressAndPortDependent, timeout }
    }

    /// Address-and-port-dependent mapping and filtering ("symmetric": hole punching fails).
    #[must_use]
    pub const fn symmetric(timeout: Duration) -> Self {
        Self { mapping: Mapping::AddressAndPortDependent, filtering: Filtering::AddressAndPortDependent, timeout }
    }
}

const TCP: u8 = 6;
const UDP: u8 = 17;

/// An endpoint: address and port.
type End = (Ipv4Addr, u16);

/// What a mapping is found by from inside: protocol, inside port, and the destination when
/// the mapping depends on it.
type OutKey = (u8, u16, Option<End>);

#[derive(Debug)]
struct Binding {
    key: OutKey,
    /// Destinations the inside has sent to through it (for address-and-port filtering).
    sent_to: HashSet<End>,
    last_out: Instant,
}

/// One NAT: its tables and counters.
#[derive(Debug)]
pub struct Nat {
    cfg: NatConfig,
    inside: Ipv4Addr,
    public: Ipv4Addr,
    out: HashMap<OutKey, u16>,
    /// (protocol, public port) → its binding.
    bindings: HashMap<(u8, u16), Binding>,
    next_port: u16,
    /// Packets let through either way, and dropped (no mapping, filtered, not TCP or UDP).
    pub passed: u64,
    pub dropped: u64,
}

/// Where a packet goes through the NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// From the inside host out.
    Out,
    /// From outside in.
    In,
}

impl Nat {
    /// A NAT for the host at `inside`, its public address `public`.
    #[must_use]
    pub fn new(cfg: NatConfig, inside: Ipv4Addr, public: Ipv4Addr) -> Self {
        Self {
            cfg,
            inside,
            public,
            out: HashMap::new(),
            bindings: HashMap::new(),
            next_port: 20_000,
            passed: 0,
            dropped: 0,
        }
    }

    /// Translates `packet` (a whole IPv4 packet) going `way` at `now`, in place; false when it
    /// is dropped.
    pub fn translate(&mut self, way: Way, packet: &mut [u8], now: Instant) -> bool {
        let ok = match way {
            Way::Out => self.outbound(packet, now),
            Way::In => self.inbound(packet, now),
        };
        if ok {
            self.passed += 1;
        } else {
            self.dropped += 1;
        }
        ok
    }

    /// The public port the inside's `proto` port `port` is mapped to towards `to`, if live.
    #[must_use]
    pub fn mapped(&self, proto: u8, port: u16, to: End, now: Instant) -> Option<u16> {
        let key = self.key(proto, port, to);
        let public = *self.out.get(&key)?;
        let live =
            self.bindings.get(&(proto, public)).is_some_and(|b| now.duration_since(b.last_out) < self.cfg.timeout);
        live.then_some(public)
    }

    fn key(&self, proto: u8, port: u16, to: End) -> OutKey {
        match self.cfg.mapping {
            Mapping::EndpointIndependent => (proto, port, None),
            Mapping::AddressAndPortDependent => (proto, port, Some(to)),
        }
    }

    fn outbound(&mut self, p: &mut [u8], now: Instant) -> bool {
        let Some(h) = Header::parse(p) else { return false };
        if h.src != self.inside || h.dst == self.public {
            return false;
        }
        let to = (h.dst, h.dst_port);
        let key = self.key(h.proto, h.src_port, to);
        let public = match self.mapped(h.proto, h.src_port, to, now) {
            Some(port) => port,
            None => {
                self.forget(&key);
                let Some(port) = self.free_port(h.proto, h.src_port) else { return false };
                self.out.insert(key, port);
                self.bindings.insert((h.proto, port), Binding { key, sent_to: HashSet::new(), last_out: now });
                port
            }
        };
        if let Some(b) = self.bindings.get_mut(&(h.proto, public)) {
            b.last_out = now;
            if b.sent_to.len() < 4_096 {
                b.sent_to.insert(to);
            }
        }
        h.rewrite(p, true, self.public, public);
        true
    }

    fn inbound(&mut self, p: &mut [u8], now: Instant) -> bool {
        let Some(h) = Header::parse(p) else { return false };
        if h.dst != self.public {
            return false;
        }
        let Some(b) = self.bindings.get(&(h.proto, h.dst_port)) else { return false };
        if now.duration_since(b.last_out) >= self.cfg.timeout {
            let key = b.key;
            self.forget(&key);
            return false;
        }
        let from = (h.src, h.src_port);
        let allowed = match self.cfg.filtering {
            Filtering::EndpointIndependent => true,
            Filtering::AddressAndPortDependent => b.sent_to.contains(&from),
        };
        if !allowed {
            return false;
        }
        let inside_port = b.key.1;
        h.rewrite(p, false, self.inside, inside_port);
        true
    }

    /// Drops the mapping of `key`, if any.
    fn forget(&mut self, key: &OutKey) {
        if let Some(port) = self.out.remove(key) {
            self.bindings.remove(&(key.0, port));
        }
    }

    /// A public port for a new mapping: the inside port when free (and the mapping is
    /// endpoint-independent, as home routers do), else the next free one from 20 000 up.
    fn free_port(&mut self, proto: u8, inside: u16) -> Option<u16> {
        if self.cfg.mapping == Mapping::EndpointIndependent && !self.bindings.contains_key(&(proto, inside)) {
            return Some(inside);
        }
        for _ in 0..45_000 {
            let port = self.next_port;
            self.next_port = if self.next_port >= 64_999 { 20_000 } else { self.next_port + 1 };
            if !self.bindings.contains_key(&(proto, port)) {
                return Some(port);
            }
        }
        None
    }
}

/// The fields of a TCP or UDP over IPv4 packet that the NAT reads.
#[derive(Debug, Clone, Copy)]
struct Header {
    ihl: usize,
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
}

impl Header {
    /// The header of `p`, if it is an unfragmented IPv4 TCP or UDP packet long enough for its
    /// ports and checksum.
    fn parse(p: &[u8]) -> Option<Self> {
        if p.len() < 20 || p[0] >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(p[0] & 0x0f) * 4;
        let proto = p[9];
        let fragment = u16::from_be_bytes([p[6], p[7]]) & 0x3fff; // MF and the offset
        let need = ihl + if proto == TCP { 20 } else { 8 };
        if ihl < 20 || fragment != 0 || (proto != TCP && proto != UDP) || p.len() < need {
            return None;
        }
        let ip = |at: usize| Ipv4Addr::new(p[at], p[at + 1], p[at + 2], p[at + 3]);
        let port = |at: usize| u16::from_be_bytes([p[ihl + at], p[ihl + at + 1]]);
        Some(Self { ihl, proto, src: ip(12), dst: ip(16), src_port: port(0), dst_port: port(2) })
    }

    /// Sets the source (`source`) or destination address and port, adjusting both checksums.
    fn rewrite(&self, p: &mut [u8], source: bool, addr: Ipv4Addr, port: u16) {
        let (ip_at, port_at) = if source { (12, self.ihl) } else { (16, self.ihl + 2) };
        let mut old = [0u8; 6];
        old[..4].copy_from_slice(&p[ip_at..ip_at + 4]);
        old[4..].copy_from_slice(&p[port_at..port_at + 2]);
        let mut new = [0u8; 6];
        new[..4].copy_from_slice(&addr.octets());
        new[4..].copy_from_slice(&port.to_be_bytes());
        p[ip_at..ip_at + 4].copy_from_slice(&new[..4]);
        p[port_at..port_at + 2].copy_from_slice(&new[4..]);
        // The IP header's checksum covers the address only; the transport's covers both (the
        // address through its pseudo-header). A UDP checksum of 0 means none, and stays so.
        let ip_sum = u16::from_be_bytes([p[10], p[11]]);
        p[10..12].copy_from_slice(&adjust(ip_sum, &old[..4], &new[..4]).to_be_bytes());
        let at = self.ihl + if self.proto == TCP { 16 } else { 6 };
        let sum = u16::from_be_bytes([p[at], p[at + 1]]);
        if self.proto == UDP && sum == 0 {
            return;
        }
        let mut sum = adjust(sum, &old, &new);
        if self.proto == UDP && sum == 0 {
            sum = 0xffff;
        }
        p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
    }
}

/// A ones'-complement checksum `sum` updated for 16-bit words `old` replaced by `new`
/// (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')).
fn adjust(sum: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut acc = u32::from(!sum);
    for w in old.chunks(2) {
        acc += u32::from(!u16::from_be_bytes([w[0], w[1]]));
    }
    for w in new.chunks(2) {
        acc += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    #[allow(clippy::cast_possible_truncation)] // folded to 16 bits above
    let folded = acc as u16;
    !folded
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ones'-complement sum of `data` (padded), folded: computed from scratch, to check
    /// the incremental updates against.
    fn checksum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for w in data.chunks(2) {
            acc += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// A valid UDP (or TCP) packet from `src` to `dst` with `payload`, checksums computed.
    fn packet(proto: u8, src: End, dst: End, payload: &[u8]) -> Vec<u8> {
        let tl = if proto == TCP { 20 } else { 8 };
        let len = 20 + tl + payload.len();
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[6] = 0x40; // don't fragment
        p[8] = 64;
        p[9] = proto;
        p[12..16].copy_from_slice(&src.0.octets());
        p[16..20].copy_from_slice(&dst.0.octets());
        let ip_sum = checksum(&p[..20]);
        p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        p[20..22].copy_from_slice(&src.1.to_be_bytes());
        p[22..24].copy_from_slice(&dst.1.to_be_bytes());
        if proto == UDP {
            p[24..26].copy_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        } else {
            p[32] = 0x50; // data offset 5
        }
        p[20 + tl..].copy_from_slice(payload);
        let sum = transport_checksum(&p);
        let at = 20 + if proto == TCP { 16 } else { 6 };
        p[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        p
    }

    /// The transport checksum of `p` as it stands (its own checksum field counted as 0).
    fn transport_checksum(p: &[u8]) -> u16 {
        let proto = p[9];
        let at = 20 + if proto == TCP { 16 } else { 6 };
        let mut seg = p[20..].to_vec();
        seg[at - 20] = 0;
        seg[at - 20 + 1] = 0;
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&p[12..20]);
        pseudo.extend_from_slice(&[0, proto]);
        pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(&seg);
        checksum(&pseudo)
    }

    fn valid(p: &[u8]) -> bool {
        let at = 20 + if p[9] == TCP { 16 } else { 6 };
        checksum(&p[..20]) == 0 && u16::from_be_bytes([p[at], p[at + 1]]) == transport_checksum(p)
    }

    const INSIDE: Ipv4Addr = Ipv4Addr::new(192, 168, 5, 2);
    const PUBLIC: Ipv4Addr = Ipv4Addr::new(10, 77, 5, 2);
    const A: End = (Ipv4Addr::new(10, 77, 3, 2), 4001);
    const B: End = (Ipv4Addr::new(10, 77, 12, 2), 4001);

    fn src(p: &[u8]) -> End {
        let h = Header::parse(p).unwrap();
        (h.src, h.src_port)
    }

    fn dst(p: &[u8]) -> End {
        let h = Header::parse(p).unwrap();
        (h.dst, h.dst_port)
    }

    #[test]
    fn translated_packets_carry_valid_checksums() {
        let t0 = Instant::now();
        let mut nat = Nat::new(NatConfig::full_cone(Duration::from_secs(30)), INSIDE, PUBLIC);
        for proto in [TCP, UDP] {
            for payload in [&b""[..], b"x", b"hello, peer", &[0xff; 1001]] {
                let mut p = packet(proto, (INSIDE, 4001), A, payload);
                assert!(nat.translate(Way::Out, &mut p, t0));
                assert_eq!(src(&p), (PUBLIC, 4001), "an endpoint-independent NAT keeps a free port");
                assert!(valid(&p), "proto {proto}, {} bytes", payload.len());
                let mut back = packet(proto, A, (PUBLIC, 4001), payload);
                assert!(nat.translate(Way::In, &mut back, t0));
                assert_eq!(dst(&back), (INSIDE, 4001));
                assert!(valid(&back));
            }
        }
    }

    #[test]
    fn a_port_restricted_nat_lets_in_only_whom_the_inside_sent_to() {
        let t0 = Instant::now();
        let mut nat = Nat::new(NatConfig::port_restricted(Duration::from_secs(30)), INSIDE, PUBLIC);
        // Nothing comes in before the inside sends.
        assert!(!nat.translate(Way::In, &mut packet(UDP, B, (PUBLIC, 4001), b"hi"), t0));
        assert!(nat.translate(Way::Out, &mut packet(UDP, (INSIDE, 4001), A, b"hi"), t0));
        // A may answer; B (who A told about this mapping) may not, until the inside sends to
        // B: then through the same public port (what hole punching relies on).
        assert!(nat.translate(Way::In, &mut packet(UDP, A, (PUBLIC, 4001), b"re"), t0));
        assert!(!nat.translate(Way::In, &mut packet(UDP, B, (PUBLIC, 4001), b"hi"), t0));
        assert!(!nat.translate(Way::In, &mut packet(UDP, (A.0, 4002), (PUBLIC, 4001), b"hi"), t0));
        let mut out = packet(UDP, (INSIDE, 4001), B, b"punch");
        assert!(nat.translate(Way::Out, &mut out, t0));
        assert_eq!(src(&out), (PUBLIC, 4001));
        assert!(nat.translate(Way::In, &mut packet(UDP, B, (PUBLIC, 4001), b"hi"), t0));
        // A full-cone NAT lets B in at once.
        let mut cone = Nat::new(NatConfig::full_cone(Duration::from_secs(30)), INSIDE, PUBLIC);
        assert!(cone.translate(Way::Out, &mut packet(UDP, (INSIDE, 4001), A, b"hi"), t0));
        assert!(cone.translate(Way::In, &mut packet(UDP, B, (PUBLIC, 4001), b"hi"), t0));
    }

    #[test]
    fn a_symmetric_nat_maps_each_destination_to_its_own_port() {
        let t0 = Instant::now();
        let mut nat = Nat::new(NatConfig::symmetric(Duration::from_secs(30)), INSIDE, PUBLIC);
        let mut to_a = packet(TCP, (INSIDE, 4001), A, b"");
        let mut to_b = packet(TCP, (INSIDE, 4001), B, b"");
        assert!(nat.translate(Way::Out, &mut to_a, t0) && nat.translate(Way::Out, &mut to_b, t0));
        let (pa, pb) = (src(&to_a).1, src(&to_b).1);
        assert_ne!(pa, pb, "a port per destination");
        assert_ne!(pa, 4001, "the port B learns from A is not the one B would reach");
        // The port A saw does not let B in; each answers only on its own.
        assert!(!nat.translate(Way::In, &mut packet(TCP, B, (PUBLIC, pa), b""), t0));
        assert!(nat.translate(Way::In, &mut packet(TCP, A, (PUBLIC, pa), b""), t0));
        assert!(nat.translate(Way::In, &mut packet(TCP, B, (PUBLIC, pb), b""), t0));
        // The same destination again keeps its port.
        let mut again = packet(TCP, (INSIDE, 4001), A, b"");
        assert!(nat.translate(Way::Out, &mut again, t0));
        assert_eq!(src(&again).1, pa);
    }

    #[test]
    fn a_mapping_expires_when_the_inside_stops_sending() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut nat = Nat::new(NatConfig::full_cone(s(30)), INSIDE, PUBLIC);
        assert!(nat.translate(Way::Out, &mut packet(UDP, (INSIDE, 4001), A, b""), t0));
        // Inbound traffic does not keep it alive; outbound does.
        assert!(nat.translate(Way::In, &mut packet(UDP, A, (PUBLIC, 4001), b""), t0 + s(29)));
        assert!(!nat.translate(Way::In, &mut packet(UDP, A, (PUBLIC, 4001), b""), t0 + s(30)));
        assert!(nat.translate(Way::Out, &mut packet(UDP, (INSIDE, 4001), A, b""), t0 + s(31)));
        assert!(nat.translate(Way::In, &mut packet(UDP, A, (PUBLIC, 4001), b""), t0 + s(60)));
        assert_eq!(nat.mapped(UDP, 4001, A, t0 + s(61)), None);
    }

    #[test]
    fn what_is_not_tcp_or_udp_from_the_inside_is_dropped() {
        let t0 = Instant::now();
        let mut nat = Nat::new(NatConfig::full_cone(Duration::from_secs(30)), INSIDE, PUBLIC);
        let mut icmp = packet(UDP, (INSIDE, 1), A, b"");
        icmp[9] = 1;
        assert!(!nat.translate(Way::Out, &mut icmp, t0));
        let mut spoofed = packet(UDP, (Ipv4Addr::new(192, 168, 5, 9), 4001), A, b"");
        assert!(!nat.translate(Way::Out, &mut spoofed, t0));
        let mut fragment = packet(UDP, (INSIDE, 4001), A, b"");
        fragment[6] = 0x20; // more fragments
        assert!(!nat.translate(Way::Out, &mut fragment, t0));
        assert!(!nat.translate(Way::Out, &mut [0x45, 0, 0], t0));
        assert_eq!((nat.passed, nat.dropped), (0, 4));
    }
}
