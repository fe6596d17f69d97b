//! Fetch one track through chorus edges, verified, into a file: the smallest embedding of
//! chorus-client, with the track handle a player uses.
//!
//! ```text
//! cargo run -p chorus-client --example fetch_track -- EDGE_URL ORIGIN_PUB TRACK OUT_FILE [START_SECONDS]
//! # e.g. with the README's origin and edge running:
//! cargo run -p chorus-client --example fetch_track -- http://127.0.0.1:8090 store/origin.pub chorus-sunrise sunrise.mp4
//! ```

use std::time::Duration;

use chorus_client::ClientBuilder;
use chorus_client::abr::Quality;
use chorus_core::{TrackId, keys};
use tokio::io::AsyncWriteExt as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (edge, key_file, track, out, start) = match args.as_slice() {
        [e, k, t, o] => (e, k, t, o, 0.0),
        [e, k, t, o, s] => (e, k, t, o, s.parse::<f64>()?),
        _ => {
            eprintln!("usage: fetch_track EDGE_URL ORIGIN_PUB TRACK OUT_FILE [START_SECONDS]");
            std::process::exit(2);
        }
    };
    // The origin's public key: manifests signed by anything else are refused.
    let origin_key = keys::read_verifying_key(std::path::Path::new(key_file))?;
    let client =
        ClientBuilder::new(vec![edge.clone()], origin_key).quality(Quality::Auto { cap: usize::MAX }).build()?;

    // One decodable stream: renditions switch only among those one decoder can play.
    let mut track = client.open_stream(&TrackId::parse(track)?).await?;
    println!(
        "{} segments, {:?}, renditions {:?}",
        track.info().segments,
        track.info().duration,
        track.info().renditions
    );
    if start > 0.0 {
        track.seek(Duration::from_secs_f64(start));
    }
    let mut file = tokio::fs::File::create(out).await?;
    // Every segment handed over has been checked against its BLAKE3 id.
    while let Some(segment) = track.next().await {
        let segment = segment?;
        println!("segment {:>3} {} from {:?}", segment.index, segment.rendition, segment.source);
        if let Some(init) = &segment.init {
            file.write_all(init).await?;
        }
        file.write_all(&segment.data).await?;
    }
    file.flush().await?;
    // After the last segment: the QoE beacon goes out and the summary is final.
    let summary = track.finish().await;
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
