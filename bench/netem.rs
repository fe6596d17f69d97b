//! A user-space network emulator for the benchmarks (the kernel here has no `tc netem`): a TCP
//! relay whose two directions are delay lines — every byte arrives a fixed one-way latency
//! after it was sent, while bytes keep flowing (a 64 KiB response on a 40 ms link takes 40 ms
//! plus its transmission time, not 40 ms per read) — each with an optional rate cap (an
//! access link's uplink or downlink).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One direction of a link.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Link {
    /// One-way latency.
    pub(crate) delay: Duration,
    /// Bytes per second at most (`None`: as fast as loopback goes).
    pub(crate) rate: Option<u64>,
}

/// Reads from `from` and writes to `to`, each piece `link.delay` after it was read, paced to
/// `link.rate`. At most 256 pieces (4 MiB) are in flight, so a slow link pushes back on the
/// sender as TCP would.
async fn line(mut from: tokio::net::tcp::OwnedReadHalf, mut to: tokio::net::tcp::OwnedWriteHalf, link: Link) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(256);
    let reader = async move {
        loop {
            let mut buf = vec![0u8; 16 * 1024];
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.send((Instant::now() + link.delay, buf)).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let writer = async move {
        let mut free_at = Instant::now();
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if let Some(rate) = link.rate.filter(|r| *r > 0) {
                // The link is busy until the previous piece has gone; this one then takes
                // len / rate to go out.
                free_at = free_at.max(Instant::now()) + Duration::from_secs_f64(bytes.len() as f64 / rate as f64);
                tokio::time::sleep_until(free_at).await;
            }
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

/// Starts a relay on `listen` (port chosen by the system) to `target`, whose connections to
/// the target come from `from` (a host of the loopback network: the one address the target
/// sees for this host, as a real one sees a listener's public address): bytes towards the
/// target travel over `to_target`, bytes back over `from_target`. Returns its address; it runs
/// until the process ends.
pub(crate) async fn relay(
    listen: IpAddr,
    from: IpAddr,
    target: SocketAddr,
    to_target: Link,
    from_target: Link,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind((listen, 0)).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let connect = async {
                    let socket = if from.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
                    socket.bind((from, 0).into())?;
                    socket.connect(target).await
                };
                let Ok(server) = connect.await else { return };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::join!(line(cr, sw, to_target), line(sr, cw, from_target));
            });
        }
    });
    Ok(addr)
}
