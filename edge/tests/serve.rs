//! End to end inside the crate: an edge built from the library in front of an origin in the
//! same process, both on real sockets. A chunk is fetched from the origin once, however many
//! clients ask at once, then answered from memory; the segment after it is prefetched; the
//! manifest is passed through verified; its background loops stop on shutdown.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use chorus_core::manifest::Manifest;
use chorus_edge::cache::CacheConfig;
use chorus_edge::metrics::EdgeMetrics;
use chorus_edge::{Edge, EdgeConfig};
use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;
use chorus_http::{ListenUrl, Server, ServerConfig};

fn counter(edge: &Edge, series: &str) -> f64 {
    let text = prometheus::TextEncoder::new().encode_to_string(&edge.metrics().registry.gather()).unwrap();
    // Every series starting with `series`, summed (a prefix ending in `{` takes all labels).
    text.lines().filter(|l| l.starts_with(series)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_fetches_each_chunk_once_serves_it_from_memory_and_prefetches_the_next() {
    let origin = chorus_testkit::inproc::origin("sunrise", "chorus-sunrise").await;
    let cfg = EdgeConfig {
        origins: vec![origin.base.clone()],
        parents: Vec::new(),
        trust: ClientTls::default(),
        cache: CacheConfig { mem_bytes: 64 << 20, disk_bytes: 0, dir: None, prefetch: true },
        upstream: chorus_edge::upstream::UpstreamConfig::default(),
        // One segment ahead, and no trending warm-up: the upstream fetches are then exact.
        prefetch: chorus_edge::prefetch::PrefetchConfig {
            segments_ahead: 1,
            trending_min: 1 << 20,
            ..chorus_edge::prefetch::PrefetchConfig::default()
        },
        tracker: chorus_edge::tracker::TrackerConfig::default(),
        shared_tracker: None,
        manifests: 16,
        token_key: None,
        token_expect: chorus_core::token::Expect::default(),
        admin_token: None,
        origin_key: Some(origin.key),
        player: true,
        upstream_token_file: None,
    };
    let edge = Edge::new(cfg, EdgeMetrics::new()).await.unwrap();
    let url: ListenUrl = "http://127.0.0.1:0".parse().unwrap();
    let server = Server::bind(&[url], None, ServerConfig::default()).await.unwrap();
    let base = server.local_urls()[0].base();
    tokio::spawn(server.serve(Arc::new(edge.clone()), std::future::pending()));
    edge.spawn_background(); // health checks and tracker sweeps, stopped at the end

    let client = HttpClient::new(&ClientTls::default()).unwrap();
    let mut c = client.connect(&base, true).await.unwrap();
    let r = c.get("/v1/tracks/sunrise/manifest").await.unwrap();
    let m = Manifest::verify(r.body(), &origin.key).expect("the origin's signature, passed through");
    // The last two segments: serving the last one prefetches nothing more.
    let segments = &m.renditions[0].segments;
    let (first, second) = (segments[segments.len() - 2], segments[segments.len() - 1]);
    let both = first.size + second.size;
    let (first, second) = (first.id, second.id);
    // Eight clients at once on a cold edge: one upstream fetch, the rest wait for it.
    let asks: Vec<_> = (0..8)
        .map(|_| {
            let mut c = c.share().unwrap();
            tokio::spawn(async move { c.get(&format!("/v1/chunks/{first}")).await.unwrap() })
        })
        .collect();
    for a in asks {
        let r = a.await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(first.matches(r.body()));
    }
    // However the eight overlapped: one upstream fetch, each other request joined it or hit.
    let result = |r: &str| counter(&edge, &format!("chorus_edge_cache_requests_total{{result=\"{r}\""));
    assert_eq!(result("miss"), 1.0);
    assert_eq!(result("coalesced") + result("hit"), 7.0);
    let hits = result("hit");
    assert!(first.matches(c.get(&format!("/v1/chunks/{first}")).await.unwrap().body()));
    assert_eq!(result("hit"), hits + 1.0, "the ninth request is a hit");
    // The next segment was prefetched when the first was served: asked for now, it costs no
    // upstream fetch of its own (generous wait: the prefetch is a background fetch).
    let upstream = "chorus_edge_upstream_requests_total{";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while counter(&edge, "chorus_edge_cache_bytes{tier=\"memory\"}") < both as f64 {
        assert!(tokio::time::Instant::now() < deadline, "the next segment was not prefetched");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(second.matches(c.get(&format!("/v1/chunks/{second}")).await.unwrap().body()));
    assert_eq!(counter(&edge, upstream), 3.0, "manifest, first segment, prefetched second: nothing more");
    assert_eq!(counter(&edge, "chorus_edge_prefetch_total{result=\"used\"}"), 1.0);
    tokio::time::timeout(Duration::from_secs(30), edge.shutdown()).await.expect("the background loops stop");
}
