//! The front's fair-share defences with real sockets on loopback: a source host's share of
//! connections, HTTP/2 connections that answer PINGs but send no request, QUIC Retry.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use tokio::io::AsyncReadExt as _;

use super::client::HttpClient;
use super::tls::{self, ClientTls};
use super::{Body, Handler, ListenUrl, RequestContext, ResponseBody, Server, ServerConfig, full};

struct Ok200;

impl Handler for Ok200 {
    async fn call(&self, _req: Request<Body>, _ctx: RequestContext) -> Response<ResponseBody> {
        full(StatusCode::OK, "text/plain", "ok")
    }
}

/// Serves [`Ok200`] on `urls` with `config`; the bound URLs, and the sender whose drop stops it.
async fn serve(
    urls: &[&str],
    config: ServerConfig,
) -> (Vec<ListenUrl>, tokio::sync::oneshot::Sender<Infallible>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let key = tls::load_or_generate(None, None, dir.path()).unwrap();
    let urls: Vec<ListenUrl> = urls.iter().map(|u| u.parse().unwrap()).collect();
    let server = Server::bind(&urls, Some(&key), config).await.unwrap();
    let bound = server.local_urls();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<Infallible>();
    tokio::spawn(server.serve(Arc::new(Ok200), async move {
        let _ = stop_rx.await;
    }));
    (bound, stop_tx, dir)
}

fn refused(config: &ServerConfig, reason: &str) -> u64 {
    config.metrics.refused.with_label_values(&[reason]).get()
}

/// A TCP connection to `to` from the loopback address `from`.
async fn connect_from(from: &str, to: SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from.parse().unwrap(), 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Waits (generously) until the server closes `s`: a read returns end of stream or an error.
async fn closed_by_server(s: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 256];
    matches!(tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_gets_its_share_of_connections_and_other_hosts_still_get_in() {
    // Idle connections held for the whole test: no header timeout may close them meanwhile.
    let config = ServerConfig {
        max_connections: 20,
        max_connections_per_source: Some(4),
        header_read_timeout: Duration::from_secs(600),
        idle_timeout: Duration::from_secs(600),
        ..ServerConfig::default()
    };
    let metrics = config.clone();
    let (urls, _stop, _dir) = serve(&["http://127.0.0.1:0", "h3://127.0.0.1:0"], config).await;
    let (http, h3) = (urls[0].addr, urls[1].addr);
    // Four idle connections from 127.0.0.1 take its share (they are served: not closed).
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect_from("127.0.0.1", http).await);
    }
    // A fifth from the same host is closed at once, over TCP, and refused over QUIC.
    let mut fifth = connect_from("127.0.0.1", http).await;
    assert!(closed_by_server(&mut fifth).await, "the fifth connection from one host stays open");
    // Over QUIC the host is refused at once: its share is taken by established connections
    // (which a spoofed Initial cannot be). Before this check, a QUIC connection counted only
    // once its handshake completed could answer a request in the meantime (0.5-RTT).
    let client = HttpClient::new(&ClientTls { ca_files: Vec::new(), insecure: true }).unwrap();
    let served = match client.connect(&format!("h3://{h3}").parse().unwrap(), false).await {
        Ok(mut c) => c.get("/").await.is_ok(),
        Err(_) => false,
    };
    assert!(!served, "QUIC counts in the same share");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while refused(&metrics, "per_source") < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the refusals were not counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another host (127.0.0.2) is served as ever.
    let other = connect_from("127.0.0.2", http).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(other)).await.unwrap();
    tokio::spawn(conn);
    let r = send.send_request(Request::get("/").body(http_body_util::Empty::<Bytes>::new()).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A place given back is a place to take again.
    drop(held.pop());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut again = connect_from("127.0.0.1", http).await;
        let mut buf = [0u8; 1];
        // Served (no close within a moment) once the server has seen the other one go.
        if tokio::time::timeout(Duration::from_millis(300), again.read(&mut buf)).await.is_err() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the freed place was never given back");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_that_answers_pings_but_sends_no_request_is_closed_after_the_idle_timeout() {
    let config = ServerConfig { idle_timeout: Duration::from_secs(1), ..ServerConfig::default() };
    let metrics = config.clone();
    let (urls, _stop, _dir) = serve(&["http://127.0.0.1:0"], config).await;
    let stream = connect_from("127.0.0.1", urls[0].addr).await;
    // A client that PINGs every 100 ms, and so keeps bytes moving both ways.
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
        .timer(hyper_util::rt::TokioTimer::new())
        .keep_alive_interval(Duration::from_millis(100))
        .keep_alive_while_idle(true)
        .handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let r = send.send_request(Request::get("/").body(http_body_util::Empty::<Bytes>::new()).unwrap()).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Then no request: the server closes it (GOAWAY), PINGs or not.
    let ended = tokio::time::timeout(Duration::from_secs(60), conn).await;
    assert!(ended.is_ok(), "the connection with no request stayed open");
    assert!(refused(&metrics, "idle") >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_threshold_quic_asks_for_a_retry_and_real_clients_still_connect() {
    let config = ServerConfig { retry_above: 0, ..ServerConfig::default() };
    let metrics = config.clone();
    let (urls, _stop, _dir) = serve(&["h3://127.0.0.1:0"], config).await;
    let client = HttpClient::new(&ClientTls { ca_files: Vec::new(), insecure: true }).unwrap();
    let mut c = client.connect(&format!("h3://{}", urls[0].addr).parse().unwrap(), false).await.unwrap();
    assert_eq!(c.get("/").await.unwrap().status(), StatusCode::OK);
    assert!(refused(&metrics, "quic_retry") >= 1, "a Retry was sent");
}
