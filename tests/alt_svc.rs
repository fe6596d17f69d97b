//! End to end: `chorus fetch` given an `https://` edge moves to HTTP/3 through `Alt-Svc`
//! (docs/client.md, "HTTP/3 and the first bitrate"), remembers it for the next run, falls back
//! to TCP without a failed request when UDP does not get through, and honours `Alt-Svc: clear`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use std::net::UdpSocket;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chorus_testkit as support;
use serde_json::Value;
use support::net::Net;
use support::s;

/// The sample "tides" on an origin; each test starts its edges.
fn start() -> Net {
    Net::builder().sample("tides", "chorus-tides").start()
}

/// `chorus fetch tides --edge EDGE --cache-dir CLIENT --json`, its chunks forgotten first
/// (what the client learned of the network, `network.json`, stays), so that every run
/// fetches the whole track from the edge.
fn fetch(net: &Net, edge: &str, ca: &Path, client: &str) -> Value {
    fetch_logged(net, edge, ca, client, "info").0
}

/// [`fetch`] with the log filter `log`, and what it logged.
fn fetch_logged(net: &Net, edge: &str, ca: &Path, client: &str, log: &str) -> (Value, String) {
    let cache = net.dir.path().join(client);
    let _ = std::fs::remove_dir_all(cache.join("chunks"));
    let args = ["--edge", edge, "--ca", s(ca), "--cache-dir", s(&cache), "--json", "--log-level", log];
    let out = net.fetch("tides", &args);
    let logged = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{logged}");
    eprintln!("{client}: {}", String::from_utf8_lossy(&out.stdout));
    let j: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["failures"], 0, "{j}");
    assert_eq!(j["chunks_rejected"], 0, "{j}");
    assert_eq!(j["bytes_by_source"]["edge"], j["bytes_total"], "{j}");
    (j, logged)
}

/// What `client` learned of the network (its `network.json`; null before it is written).
fn network(net: &Net, client: &str) -> Value {
    let doc = std::fs::read(net.dir.path().join(client).join("network.json")).unwrap_or_default();
    serde_json::from_slice(&doc).unwrap_or(Value::Null)
}

fn requests(j: &Value, protocol: &str) -> u64 {
    j["requests_by_protocol"][protocol].as_u64().unwrap_or(0)
}

fn total_requests(j: &Value) -> u64 {
    j["requests_by_protocol"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum()
}

/// Waits until `client`'s network.json satisfies `cond` (it is written in the background).
fn wait_network(net: &Net, client: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n = network(net, client);
        if cond(&n) {
            return n;
        }
        assert!(std::time::Instant::now() < deadline, "network.json never showed {what}: {n}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn an_https_edge_is_spoken_to_over_http3_from_the_second_request_and_the_next_run_on() {
    let net = start();
    let edge = net.start_edge("edge", &["https", "h3"], &[]);
    let https = edge.url("https");
    assert_eq!(edge.addr("https"), edge.addr("h3"), "HTTP/3 shares the HTTPS port");
    let ca = net.cert("edge");

    // A new client: the manifest over HTTP/2 (its answer says Alt-Svc), everything after over
    // HTTP/3.
    let first = fetch(&net, &https, &ca, "client");
    assert_eq!(requests(&first, "h2"), 1, "{first}");
    assert!(requests(&first, "h3") >= 3, "{first}");
    assert_eq!(total_requests(&first), 1 + requests(&first, "h3"), "{first}");
    assert_eq!(first["protocol"], "h3");
    let origin = format!("https://{}", edge.addr("https"));
    let known = wait_network(&net, "client", "the alternative and its handshake time", |n| {
        n["alternatives"][&origin]["handshake_ms"].as_u64().is_some_and(|ms| ms > 0)
    });
    assert_eq!(known["alternatives"][&origin]["via"], edge.addr("h3"));
    assert_eq!(known["alternatives"][&origin]["broken_until"], 0);

    // The next run goes straight to QUIC: every request over HTTP/3.
    let second = fetch(&net, &https, &ca, "client");
    assert_eq!(requests(&second, "h3"), total_requests(&second), "{second}");
    assert_eq!(second["protocol"], "h3");
    assert_eq!(second["bytes_total"], first["bytes_total"]);
}

/// A UDP socket that takes every datagram sent to it and answers none: a firewall that drops
/// UDP, as far as a QUIC client can tell.
struct BlackHole {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<u64>>,
}

impl BlackHole {
    fn at(addr: &str) -> Self {
        let socket = UdpSocket::bind(addr).unwrap();
        socket.set_read_timeout(Some(std::time::Duration::from_millis(50))).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut swallowed = 0;
            while !flag.load(Ordering::Relaxed) {
                if socket.recv(&mut buf).is_ok() {
                    swallowed += 1;
                }
            }
            swallowed
        });
        Self { stop, thread: Some(thread) }
    }

    /// Datagrams swallowed.
    fn close(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn udp_dropped_on_the_way_to_the_edge_costs_no_failed_request() {
    let net = start();
    // The edge's HTTP/3 listener is on another address, so the port its Alt-Svc names is, at
    // the address the client uses, a socket that drops every packet.
    let edge = net.start_edge("edge", &["https", "h3://127.0.0.3:0"], &[]);
    let h3_port = edge.addr("h3").rsplit_once(':').unwrap().1.to_owned();
    let hole = BlackHole::at(&format!("127.0.0.1:{h3_port}"));
    let https = edge.url("https");
    let origin = format!("https://{}", edge.addr("https"));
    let ca = net.cert("edge");

    // A TCP-only client for comparison: a cache directory of its own with no alternative, and
    // the edge's Alt-Svc ignored since it is broken from the start.
    let baseline = {
        let dir = net.dir.path().join("baseline");
        std::fs::create_dir_all(&dir).unwrap();
        let far = support::unix_now() + 86_400;
        let doc = serde_json::json!({"alternatives": {&origin: {
            "via": format!("127.0.0.1:{h3_port}"), "expires": far, "broken_until": far, "failures": 1}}});
        std::fs::write(dir.join("network.json"), doc.to_string()).unwrap();
        fetch(&net, &https, &ca, "baseline")
    };
    assert_eq!(requests(&baseline, "h3"), 0, "{baseline}");

    // A new client learns of HTTP/3, cannot reach it, and every request still succeeds over
    // HTTP/2.
    let first = fetch(&net, &https, &ca, "client");
    assert_eq!(requests(&first, "h3"), 0, "{first}");
    assert_eq!(first["protocol"], "h2");
    assert_eq!(first["bytes_total"], baseline["bytes_total"]);
    let n = wait_network(&net, "client", "the alternative marked broken", |n| {
        n["alternatives"][&origin]["failures"].as_u64() == Some(1)
    });
    assert!(n["alternatives"][&origin]["broken_until"].as_u64().unwrap() > support::unix_now());

    // A client that remembers the alternative as working races QUIC against TCP: TCP joins
    // after 250 ms (100 ms when the last handshake took 20 ms) and wins. What the race costs
    // is that delay, not QUIC's connect timeout: the client says which delay it took (the
    // startup times, printed, are not compared: a loaded machine moves them by seconds).
    let tcp_only = baseline["startup_ms"].as_u64().unwrap();
    for (racer, handshake_ms, delay) in [("racer", None, 250), ("racer-near", Some(20), 100)] {
        let dir = net.dir.path().join(racer);
        std::fs::create_dir_all(&dir).unwrap();
        let far = support::unix_now() + 86_400;
        let mut alt = serde_json::json!({"via": format!("127.0.0.1:{h3_port}"), "expires": far});
        if let Some(ms) = handshake_ms {
            alt["handshake_ms"] = ms.into();
        }
        let doc = serde_json::json!({"alternatives": {&origin: alt}});
        std::fs::write(dir.join("network.json"), doc.to_string()).unwrap();
        let (raced, logged) = fetch_logged(&net, &https, &ca, racer, "info,chorus_client=debug");
        assert_eq!(requests(&raced, "h3"), 0, "{raced}");
        assert_eq!(raced["bytes_total"], baseline["bytes_total"]);
        let race = logged.lines().find(|l| l.contains("racing HTTP/3 against TCP")).unwrap_or_default();
        assert!(race.contains(&format!("tcp_after_ms={delay}")), "{racer}: {logged}");
        let with_race = raced["startup_ms"].as_u64().unwrap();
        eprintln!("{racer}: startup {with_race} ms racing, {tcp_only} ms over TCP only");
    }
    assert!(hole.close() > 0, "QUIC was tried");
}

#[test]
fn alt_svc_clear_is_honoured_over_tcp_and_over_http3() {
    let net = start();
    let edge = net.start_edge("edge", &["https", "h3"], &[]);
    let (https, addr) = (edge.url("https"), edge.addr("https"));
    let origin = format!("https://{addr}");
    let ca = net.cert("edge");
    fetch(&net, &https, &ca, "client");
    wait_network(&net, "client", "the alternative", |n| !n["alternatives"][&origin].is_null());

    // The operator withdraws HTTP/3 (the edge restarted on the same ports with --alt-svc
    // clear, still serving HTTP/3 for the clients already there). The client arrives over
    // QUIC; the first answer says clear; the rest goes over TCP, and the alternative is gone.
    drop(edge);
    let edge = net.start_edge("edge", &[&https, &format!("h3://{addr}")], &["--alt-svc", "clear"]);
    let cleared = fetch(&net, &https, &ca, "client");
    assert!(requests(&cleared, "h3") >= 1, "{cleared}");
    assert!(requests(&cleared, "h2") >= 1, "{cleared}");
    wait_network(&net, "client", "the alternative gone", |n| {
        n["alternatives"].as_object().is_some_and(serde_json::Map::is_empty)
    });

    // The next run starts over TCP and stays there (its answers keep saying clear).
    let after = fetch(&net, &https, &ca, "client");
    assert_eq!(requests(&after, "h2"), total_requests(&after), "{after}");
    drop(edge);
}
