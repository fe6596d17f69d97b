//! Nodes inside the test process, for the crates' own end-to-end tests (`cargo test -p
//! chorus-edge` serves real requests without the `chorus` binary).

use std::path::Path;
use std::sync::Arc;

use chorus_core::TrackId;
use chorus_core::keys::VerifyingKey;
use chorus_http::{ListenUrl, Server, ServerConfig};
use chorus_origin::ingest::{self, IngestRequest, Mode, NoProgress};
use chorus_origin::metrics::OriginMetrics;
use chorus_origin::{ApiConfig, Origin, Store};
use tokio::sync::oneshot;

/// An origin served by this process over plaintext HTTP/1.1 and h2c on a port of its own;
/// stopped when dropped.
pub struct InProcOrigin {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub base: chorus_core::url::BaseUrl,
    /// The key its manifests verify against.
    pub key: VerifyingKey,
    /// Where the store is.
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for InProcOrigin {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// An origin holding the repository's sample package `sample` (a directory of `samples/`) as
/// `track`, imported as it is (no ffmpeg).
pub async fn origin(track: &str, sample: &str) -> InProcOrigin {
    let dir = tempfile::tempdir().unwrap();
    let metrics = OriginMetrics::new();
    let store = Store::open_dir(&dir.path().join("store"), metrics.store.clone()).unwrap();
    let key = chorus_core::keys::generate();
    let input = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples").join(sample);
    let req = IngestRequest {
        track: TrackId::parse(track).unwrap(),
        title: None,
        ladder_kbps: Vec::new(),
        mode: Mode::Hls,
        input,
        protect: false,
    };
    ingest::ingest(&store, &key, &req, &NoProgress).unwrap();
    let url: ListenUrl = "http://127.0.0.1:0".parse().unwrap();
    let server = Server::bind(&[url], None, ServerConfig::default()).await.unwrap();
    let base = server.local_urls()[0].base();
    let origin = Arc::new(Origin::new(store, Some(key.clone()), ApiConfig::default(), metrics));
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(origin, async move {
        let _ = stopped.await;
    }));
    InProcOrigin { base, key: key.verifying_key(), dir, stop: Some(stop) }
}
