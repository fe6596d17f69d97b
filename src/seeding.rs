//! What a seeding peer does, for `chorus peer` and the demo's seeders alike: fetch tracks into
//! its cache, announce what it holds, and serve its metrics.

use anyhow::{Context as _, Result};
use chorus_client::abr::Quality;
use chorus_core::TrackId;
use chorus_http::{Body, Handler, RequestContext, ResponseBody, full, json_error};
use tracing::info;

/// Serves a peer node's metrics (and health checks) over HTTP.
pub(crate) struct MetricsHandler(pub(crate) prometheus::Registry);

impl Handler for MetricsHandler {
    async fn call(&self, req: http::Request<Body>, _ctx: RequestContext) -> http::Response<ResponseBody> {
        match req.uri().path() {
            "/metrics" => chorus_http::metrics::response(&self.0),
            "/healthz" | "/readyz" => full(http::StatusCode::OK, "text/plain", "ok\n"),
            _ => json_error(http::StatusCode::NOT_FOUND, "no such path"),
        }
    }
}

/// Fetches every rendition of `tracks` into the cache of `builder` (which must have one), one
/// after the other: peers may want any of them.
///
/// # Errors
/// A track that cannot be fetched (unknown, no edge reachable, a chunk nobody delivers).
pub(crate) async fn seed(builder: &chorus_client::ClientBuilder, tracks: &[TrackId]) -> Result<()> {
    for track in tracks {
        let mut rung = 0;
        loop {
            // A seeder carries protected tracks as ciphertext: it needs (and asks for) no key.
            let client = builder.clone().quality(Quality::Fixed(rung)).carry_only(true).build()?;
            let mut t = client.open(track).await.with_context(|| format!("seeding {track}"))?;
            let rungs = t.info().renditions.len();
            while let Some(s) = t.next().await {
                s.with_context(|| format!("seeding {track}"))?;
            }
            let s = t.finish().await;
            info!(%track, rendition = %s.rendition, bytes = s.bytes_total, "seeded");
            rung += 1;
            if rung >= rungs {
                break;
            }
        }
    }
    Ok(())
}
