//! A misbehaving upstream for tests: an HTTP server that forwards to a real origin and either
//! corrupts chunk bodies (one bit flipped) or answers late.

use chorus_core::error::Chain;
use chorus_core::route::Route;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;
use chorus_http::{Body, Handler, ListenUrl, RequestContext, ResponseBody, Server, ServerConfig, full, json_error};
use http::{Request, Response, StatusCode};

/// What the proxy does wrong.
#[derive(Clone, Copy)]
pub enum Mode {
    /// Flip one bit in every chunk body.
    Corrupt,
    /// Wait this long before answering anything.
    Delay(Duration),
}

/// The proxy's handler.
pub struct Proxy {
    target: chorus_core::url::BaseUrl,
    mode: Mode,
    client: HttpClient,
    /// Chunk requests seen.
    pub chunk_requests: AtomicUsize,
    /// Manifest requests seen.
    pub manifest_requests: AtomicUsize,
}

impl Handler for Proxy {
    async fn call(&self, req: Request<Body>, _ctx: RequestContext) -> Response<ResponseBody> {
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str()).to_owned();
        let is_chunk = matches!(Route::parse(req.uri().path()), Some(Route::Chunk { .. }));
        if is_chunk {
            self.chunk_requests.fetch_add(1, Ordering::SeqCst);
        }
        if matches!(Route::parse(req.uri().path()), Some(Route::Manifest { .. })) {
            self.manifest_requests.fetch_add(1, Ordering::SeqCst);
        }
        if let Mode::Delay(d) = self.mode
            && path != "/healthz"
        {
            tokio::time::sleep(d).await;
        }
        let upstream = async {
            let mut conn = self.client.connect(&self.target, false).await?;
            conn.get(&path).await
        };
        match upstream.await {
            Ok(resp) => {
                let status = resp.status();
                let mut body = resp.into_body().to_vec();
                if is_chunk && matches!(self.mode, Mode::Corrupt) && !body.is_empty() {
                    let mid = body.len() / 2;
                    body[mid] ^= 0x10;
                }
                full(status, "application/octet-stream", body)
            }
            Err(e) => json_error(StatusCode::BAD_GATEWAY, Chain(&e)),
        }
    }
}

/// Starts a proxy to `target` on 127.0.0.1 (port 0); returns its URL and handler. It runs until
/// the test's runtime ends.
pub async fn start(target: &str, mode: Mode) -> (String, Arc<Proxy>) {
    let proxy = Arc::new(Proxy {
        target: target.parse().unwrap(),
        mode,
        client: HttpClient::new(&ClientTls::default()).unwrap(),
        chunk_requests: AtomicUsize::new(0),
        manifest_requests: AtomicUsize::new(0),
    });
    let url: ListenUrl = "http://127.0.0.1:0".parse().unwrap();
    let server = Server::bind(&[url], None, ServerConfig::default()).await.unwrap();
    let bound = server.local_urls()[0].to_string();
    let handler = proxy.clone();
    tokio::spawn(server.serve(handler, std::future::pending()));
    (bound, proxy)
}
