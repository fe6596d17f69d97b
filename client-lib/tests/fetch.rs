//! End to end inside the crate: a client built from the library fetches a track from an origin
//! in the same process (origins and edges serve the same read API) over a real socket: every
//! segment verified and in order, the bytes the origin holds; then again from its local cache
//! alone, with the only edge unreachable. An edge that answers with another track's manifest,
//! validly signed, is not believed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use chorus_client::abr::Quality;
use chorus_client::{ClientBuilder, Source};
use chorus_core::TrackId;
use chorus_core::manifest::Manifest;
use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_track_comes_verified_in_order_then_from_the_cache_with_no_edge() {
    let origin = chorus_testkit::inproc::origin("sunrise", "chorus-sunrise").await;
    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let doc = http.connect(&origin.base, false).await.unwrap().get("/v1/tracks/sunrise/manifest").await.unwrap();
    let manifest = Manifest::verify(doc.body(), &origin.key).unwrap();
    let cache = tempfile::tempdir().unwrap();
    let track = TrackId::parse("sunrise").unwrap();
    let play = |edges: Vec<String>| {
        let client = ClientBuilder::new(edges, origin.key)
            .quality(Quality::Fixed(0))
            .cache(cache.path().to_owned(), 1 << 30)
            .build()
            .unwrap();
        let track = track.clone();
        async move {
            let mut t = client.open(&track).await.unwrap();
            let mut got = Vec::new();
            while let Some(s) = t.next().await {
                got.push(s.unwrap());
            }
            (got, t.finish().await)
        }
    };
    let lowest = manifest.renditions.iter().min_by_key(|r| r.bitrate_bps).unwrap();
    let (got, summary) = play(vec![origin.base.to_string()]).await;
    assert_eq!(got.len(), lowest.segments.len());
    for (k, s) in got.iter().enumerate() {
        assert_eq!(s.index, k, "in order");
        assert!(lowest.segments[k].id.matches(&s.data), "segment {k} verified");
        assert_eq!(s.source, Source::Edge(origin.base.to_string()));
    }
    assert!(got[0].init.as_ref().is_some_and(|i| lowest.init.unwrap().id.matches(i)), "init with the first");
    assert_eq!(summary.bytes_by_source.edge, summary.bytes_total);
    assert_eq!(summary.chunks_rejected, 0);

    // The only edge is gone: manifest and chunks come from the local cache, still verified.
    let gone = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    );
    let (again, summary) = play(vec![gone]).await;
    assert_eq!(
        again.iter().map(|s| s.data.clone()).collect::<Vec<_>>(),
        got.iter().map(|s| s.data.clone()).collect::<Vec<_>>()
    );
    assert!(again.iter().all(|s| s.source == Source::Cache));
    assert_eq!((summary.bytes_by_source.cache, summary.protocol.as_str()), (summary.bytes_total, "cache"));
}

/// Answers every manifest request with `doc`: another track's manifest, validly signed.
struct Substitutes(bytes::Bytes);

impl chorus_http::Handler for Substitutes {
    async fn call(
        &self,
        _req: http::Request<chorus_http::Body>,
        _ctx: chorus_http::RequestContext,
    ) -> http::Response<chorus_http::ResponseBody> {
        chorus_http::full(http::StatusCode::OK, "application/json", self.0.clone())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_manifest_of_another_track_is_refused() {
    let origin = chorus_testkit::inproc::origin("sunrise", "chorus-sunrise").await;
    let http = HttpClient::new(&ClientTls::default()).unwrap();
    let doc = http.connect(&origin.base, false).await.unwrap().get("/v1/tracks/sunrise/manifest").await.unwrap();
    let url: chorus_http::ListenUrl = "http://127.0.0.1:0".parse().unwrap();
    let server = chorus_http::Server::bind(&[url], None, chorus_http::ServerConfig::default()).await.unwrap();
    let liar = server.local_urls()[0].to_string();
    tokio::spawn(server.serve(std::sync::Arc::new(Substitutes(doc.into_body())), std::future::pending()));
    let client = ClientBuilder::new(vec![liar], origin.key).build().unwrap();
    let Err(e) = client.open(&TrackId::parse("tides").unwrap()).await else { panic!("played another track") };
    let chain = chorus_core::error::Chain(&e).to_string();
    assert!(chain.contains("sent the manifest of track sunrise, not of the track asked for"), "{chain}");
}
