//! Embedding chorus-peer: ask an edge's tracker which peers hold a track, then ask each what it
//! holds and fetch one verified chunk from it.
//!
//! ```sh
//! cargo run -p chorus-peer --example from_peers -- http://127.0.0.1:8081 chorus-sunrise
//! ```
//!
//! docs/peer.md quotes this file; it is compiled with the tests, so the quote stays true.

use std::sync::Arc;

use chorus_core::TrackId;
use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;
use chorus_peer::{DirStore, Peer, PeerConfig};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(edge), Some(track)) = (args.next(), args.next()) else {
        eprintln!("usage: from_peers EDGE_URL TRACK");
        std::process::exit(2);
    };
    let (edge, track): (chorus_core::url::BaseUrl, _) = (edge.parse()?, TrackId::parse(&track)?);
    let dir = std::env::temp_dir().join("chorus-from-peers");
    let registry = prometheus::Registry::new();
    let peer = Peer::start(PeerConfig::default(), Arc::new(DirStore::new(&dir)), None, &registry)?;
    let http = HttpClient::new(&ClientTls::default())?;
    let answer = chorus_peer::tracker::peers(&http, &edge, &track, None).await?;
    for (id, addrs) in answer.peers {
        let Some(addr) = addrs.first() else { continue };
        peer.dial(addr.clone()).await?;
        let held = peer.have(id, track.clone()).await?; // which chunks it has
        let Some(first) = held.first() else { continue };
        let bytes = peer.fetch(id, *first).await?; // verified, or the peer is banned
        println!("{id}: {} chunks of {track}; {first} verified, {} bytes", held.len(), bytes.len());
    }
    Ok(())
}
