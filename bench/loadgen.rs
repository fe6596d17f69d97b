//! A closed-loop HTTP load generator speaking HTTP/1.1, HTTP/2 (TLS, ALPN) and HTTP/3, on
//! chorus-core's client (hyper and quinn + h3), so HTTP/2 and HTTP/3 are measured by the same
//! code. Each connection keeps one request outstanding and cycles through the paths; every
//! response must be 200.
//!
//! ```text
//! cargo run --release --example loadgen -- BASE_URL PATHS_FILE [CONNECTIONS] [SECONDS] [--ca FILE]
//! ```
//! Prints one JSON object: requests, errors, seconds, rps, mbytes_per_s, p50_ms, p99_ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut positional = Vec::new();
    let mut ca = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--ca" {
            ca.extend(it.next().map(std::path::PathBuf::from));
        } else {
            positional.push(a.clone());
        }
    }
    let (Some(base), Some(paths_file)) = (positional.first().cloned(), positional.get(1)) else {
        eprintln!("usage: loadgen BASE_URL PATHS_FILE [CONNECTIONS] [SECONDS] [--ca FILE]");
        std::process::exit(2);
    };
    let base: chorus_core::url::BaseUrl = match base.parse() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(2);
        }
    };
    let connections: usize = positional.get(2).and_then(|c| c.parse().ok()).unwrap_or(64);
    let seconds: u64 = positional.get(3).and_then(|c| c.parse().ok()).unwrap_or(10);
    let paths: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(paths_file)
            .expect("paths file")
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    rt.block_on(async move {
        // One client per connection: each is its own QUIC endpoint (UDP socket), as separate
        // listeners are; one HttpClient would carry every connection on one socket.
        let trust = ClientTls { ca_files: ca, insecure: false };
        let requests = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for n in 0..connections {
            let client = HttpClient::new(&trust).expect("client").with_timeout(Duration::from_secs(10));
            let (base, paths) = (base.clone(), paths.clone());
            let (requests, errors, bytes) = (requests.clone(), errors.clone(), bytes.clone());
            tasks.push(tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut conn = match client.connect(&base, false).await {
                    Ok(c) => c,
                    Err(e) => {
                        eprintln!("connect: {e}");
                        errors.fetch_add(1, Ordering::Relaxed);
                        return latencies;
                    }
                };
                let mut i = n * 7919;
                while Instant::now() < deadline {
                    let path = &paths[i % paths.len()];
                    i += 1;
                    let t = Instant::now();
                    match conn.get(path).await {
                        Ok(r) if r.status() == http::StatusCode::OK => {
                            latencies.push(t.elapsed());
                            requests.fetch_add(1, Ordering::Relaxed);
                            bytes.fetch_add(r.body().len() as u64, Ordering::Relaxed);
                        }
                        _ => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            match client.connect(&base, false).await {
                                Ok(c) => conn = c,
                                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                            }
                        }
                    }
                }
                latencies
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap_or_default());
        }
        let secs = started.elapsed().as_secs_f64();
        all.sort();
        let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
        let n = requests.load(Ordering::Relaxed);
        println!(
            "{{\"requests\":{n},\"errors\":{},\"seconds\":{secs:.2},\"rps\":{:.0},\"mbytes_per_s\":{:.1},\"p50_ms\":{:.2},\"p99_ms\":{:.2}}}",
            errors.load(Ordering::Relaxed),
            n as f64 / secs,
            bytes.load(Ordering::Relaxed) as f64 / secs / 1e6,
            pct(0.5),
            pct(0.99)
        );
    });
}
