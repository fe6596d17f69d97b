//! A TCP relay for tests: forwards every connection to a target, each read delayed, and can be
//! cut at once (every connection closed, no new ones) — a peer vanishing mid-transfer.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpProxy {
    pub addr: SocketAddr,
    cut: watch::Sender<bool>,
}

impl TcpProxy {
    /// Closes every connection and accepts no more.
    pub fn cut(&self) {
        let _ = self.cut.send(true);
    }
}

async fn pipe(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, delay: Duration) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        tokio::time::sleep(delay).await;
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

pub async fn start(target: SocketAddr, delay: Duration) -> TcpProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (cut, rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let mut stop = rx.clone();
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|c| *c) => return,
            };
            let Ok((client, _)) = accepted else { continue };
            let Ok(server) = TcpStream::connect(target).await else { continue };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            let mut stop = rx.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = pipe(cr, sw, delay) => {},
                    () = pipe(sr, cw, delay) => {},
                    _ = stop.wait_for(|c| *c) => {},
                }
            });
        }
    });
    TcpProxy { addr, cut }
}
