//! Settings of a peer node ([`PeerConfig`]), every default documented on its field.

use std::time::Duration;

use libp2p::Multiaddr;

/// Settings of a [`Peer`].
#[derive(Clone)]
pub struct PeerConfig {
    /// Addresses to listen on (default: TCP and QUIC on every IPv4 interface, ports chosen by
    /// the system).
    pub listen: Vec<Multiaddr>,
    /// Responses being written at once, at most (default 4, as Spotify's clients did).
    pub max_uploads: usize,
    /// Upload bytes per second, at most (default: no cap). Requests beyond it get `BUSY`.
    pub upload_rate: Option<u64>,
    /// Serve nothing (metered networks): every request gets `BUSY`.
    pub consume_only: bool,
    /// Find peers on the local network with mDNS (default on).
    pub mdns: bool,
    /// Kademlia peers to start from (`…/p2p/PEER_ID` addresses).
    pub bootstrap: Vec<Multiaddr>,
    /// Time a request may take (default 10 s).
    pub request_timeout: Duration,
    /// Established connections, at most (default 256), inbound and outbound together.
    pub max_connections: u32,
    /// Established inbound connections, at most (default `None`: three quarters of
    /// `max_connections`, 192 of 256; never more than `max_connections`). The rest stays for
    /// the node's own dials, so strangers that connect cannot stop it from reaching the peers
    /// it chooses. When inbound is full, a newcomer evicts the inbound connection that has
    /// gone longest (at least 30 s) without a chunk exchanged, else it is refused
    /// (docs/security.md, "Peers").
    pub max_inbound: Option<u32>,
    /// Act as a circuit relay (v2) for peers behind NATs (for nodes with a public address).
    pub relay_server: bool,
    /// No new connections (in or out) while the process uses more memory than this.
    pub memory_limit: MemoryLimit,
    /// Circuit relays (`…/p2p/RELAY_ID`) this node may reserve a slot on when it cannot be
    /// reached directly; more come from edge trackers ([`Peer::add_relays`]).
    pub relays: Vec<Multiaddr>,
    /// Reserve a relay slot when AutoNAT says this node is private, or when it has not
    /// confirmed a public address this long after starting (default 60 s: AutoNAT cannot
    /// decide on private networks whose peers it may not use as probes).
    pub relay_after: Duration,
    /// Addresses to give others instead of the listen addresses (a port forward, a load
    /// balancer, a NAT mapping set up by hand): announced to trackers and the only ones
    /// identify shows. Empty: the listen addresses.
    pub external: Vec<Multiaddr>,
}

/// The process memory beyond which a node accepts and opens no new connections (the
/// connections it has keep working). Each connection's own buffers are bounded too: at most
/// 128 yamux streams, 64 concurrent requests per protocol, the message sizes of docs/protocol.md §5.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryLimit {
    /// An absolute resident-set size in bytes.
    Bytes(usize),
    /// A fraction of the machine's physical memory (default 0.8).
    FractionOfRam(f64),
}

impl Default for MemoryLimit {
    fn default() -> Self {
        Self::FractionOfRam(0.8)
    }
}

impl Default for PeerConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().unwrap_or_else(|_| Multiaddr::empty()),
                "/ip4/0.0.0.0/udp/0/quic-v1".parse().unwrap_or_else(|_| Multiaddr::empty()),
            ],
            max_uploads: 4,
            upload_rate: None,
            consume_only: false,
            mdns: true,
            bootstrap: Vec::new(),
            request_timeout: Duration::from_secs(10),
            max_connections: 256,
            max_inbound: None,
            relay_server: false,
            memory_limit: MemoryLimit::default(),
            relays: Vec::new(),
            relay_after: Duration::from_secs(60),
            external: Vec::new(),
        }
    }
}

impl PeerConfig {
    /// Established inbound connections the node takes: [`PeerConfig::max_inbound`], or three
    /// quarters of [`PeerConfig::max_connections`], at most `max_connections` and at least 1.
    #[must_use]
    pub fn inbound_limit(&self) -> u32 {
        let share = u32::try_from(u64::from(self.max_connections) * 3 / 4).unwrap_or(u32::MAX);
        self.max_inbound.unwrap_or(share).min(self.max_connections).max(1)
    }
}

impl std::fmt::Debug for PeerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerConfig")
            .field("listen", &self.listen)
            .field("max_uploads", &self.max_uploads)
            .field("upload_rate", &self.upload_rate)
            .field("consume_only", &self.consume_only)
            .field("mdns", &self.mdns)
            .field("bootstrap", &self.bootstrap)
            .field("max_connections", &self.max_connections)
            .field("max_inbound", &self.max_inbound)
            .field("relay_server", &self.relay_server)
            .field("memory_limit", &self.memory_limit)
            .field("relays", &self.relays)
            .field("external", &self.external)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inbound_keeps_a_quarter_for_dials_by_default() {
        assert_eq!(PeerConfig::default().inbound_limit(), 192);
        let small = PeerConfig { max_connections: 8, ..PeerConfig::default() };
        assert_eq!(small.inbound_limit(), 6);
        let set = PeerConfig { max_connections: 8, max_inbound: Some(100), ..PeerConfig::default() };
        assert_eq!(set.inbound_limit(), 8, "never above the total");
        let one = PeerConfig { max_connections: 1, ..PeerConfig::default() };
        assert_eq!(one.inbound_limit(), 1);
    }
}
