//! Fetch one track through chorus edges, verified, into a file: the smallest embedding of
//! chorus-client.
//!
//! ```text
//! cargo run -p chorus-client --example fetch_track -- EDGE_URL ORIGIN_PUB TRACK OUT_FILE
//! # e.g. with the README's origin and edge running:
//! cargo run -p chorus-client --example fetch_track -- http://127.0.0.1:8090 store/origin.pub chorus-sunrise sunrise.mp4
//! ```

use std::io::Write as _;

use chorus_client::ClientBuilder;
use chorus_client::abr::Quality;
use chorus_core::{TrackId, keys};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [edge, key_file, track, out] = args.as_slice() else {
        eprintln!("usage: fetch_track EDGE_URL ORIGIN_PUB TRACK OUT_FILE");
        std::process::exit(2);
    };
    // The origin's public key: manifests signed by anything else are refused.
    let origin_key = keys::read_verifying_key(std::path::Path::new(key_file))?;
    let client =
        ClientBuilder::new(vec![edge.clone()], origin_key).quality(Quality::Auto { cap: usize::MAX }).build()?;

    let mut file = std::fs::File::create(out)?;
    let mut write_error = None;
    // Every chunk handed to the closure has been checked against its BLAKE3 id.
    let summary = client
        .fetch(&TrackId::parse(track)?, |chunk| {
            if let Err(e) = file.write_all(chunk) {
                write_error.get_or_insert(e);
            }
        })
        .await?;
    if let Some(e) = write_error {
        return Err(e.into());
    }
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}
