//! End to end inside the crate: an origin built from the library, holding the repository's
//! `chorus-sunrise` sample, served on a real socket and read back over HTTP/1.1 and h2c with
//! the core client: the manifest verifies against the store's key, every chunk hashes to its
//! id, ranges and conditional requests answer as docs/protocol.md §3 says.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chorus_core::ChunkId;
use chorus_core::manifest::Manifest;
use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;

fn get(path: String, header: (&str, &str)) -> http::Request<bytes::Bytes> {
    http::Request::get(path).header(header.0, header.1).body(bytes::Bytes::new()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_serves_a_verified_manifest_and_every_chunk() {
    let origin = chorus_testkit::inproc::origin("sunrise", "chorus-sunrise").await;
    let client = HttpClient::new(&ClientTls::default()).unwrap();
    for h2c in [false, true] {
        let mut c = client.connect(&origin.base, h2c).await.unwrap();
        let r = c.get("/v1/tracks/sunrise/manifest").await.unwrap();
        assert_eq!(r.status(), 200);
        let m = Manifest::verify(r.body(), &origin.key).expect("signed by the store's key");
        let etag = r.headers()["etag"].to_str().unwrap().to_owned();
        let again = c.send(get("/v1/tracks/sunrise/manifest".into(), ("if-none-match", &etag))).await.unwrap();
        assert_eq!(again.status(), 304);
        let chunks: Vec<ChunkId> = m.chunks().map(|c| c.id).collect();
        assert!(chunks.len() > 3, "{} chunks", chunks.len());
        for id in &chunks {
            let r = c.get(&format!("/v1/chunks/{id}")).await.unwrap();
            assert_eq!(r.status(), 200);
            assert!(id.matches(r.body()), "chunk {id} (h2c: {h2c})");
            assert_eq!(r.headers()["cache-control"], "public, max-age=31536000, immutable");
        }
        let r = c.send(get(format!("/v1/chunks/{}", chunks[1]), ("range", "bytes=0-9"))).await.unwrap();
        assert_eq!((r.status().as_u16(), r.body().len()), (206, 10));
        assert_eq!(c.get("/v1/chunks/not-an-id").await.unwrap().status(), 400);
        let unknown = ChunkId::of(b"never stored");
        assert_eq!(c.get(&format!("/v1/chunks/{unknown}")).await.unwrap().status(), 404);
    }
}
