//! The demo's live network view in a browser (docs/demo.md, "The network view"): a page of our
//! own (`src/demo/web/`, SVG drawn by its script) fed by `GET /state.json` and by the
//! server-sent events of `GET /events`, one snapshot a second.
//!
//! What a snapshot holds: the nodes; what each has sent (from its own `/metrics`, scraped
//! every second); the links that carried the listener's bytes (origin → edge: the edge's
//! misses; edge → listener: the listener's bytes from edges, drawn from edge a, its first
//! edge; peer → listener: what the peer sent, since the listener is the only one fetching from
//! peers); the listener's bytes by source over time with its buffer and bitrate; and each
//! edge's hit ratio and miss-ratio curve (`chorus_edge_mrc_hit_ratio`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use bytes::Bytes;
use chorus_client::{BySource, Summary};
use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;
use chorus_http::{
    Body, Handler, ListenUrl, RequestContext, ResponseBody, Server, ServerConfig, full, json, json_error,
};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use serde::Serialize;

const PAGE: &str = include_str!("web/index.html");
const SCRIPT: &str = include_str!("web/view.js");
/// Points of history kept (a second each).
const HISTORY: usize = 600;
const TICK: Duration = Duration::from_secs(1);

/// A node as the page draws it.
#[derive(Debug, Clone, Serialize)]
pub(super) struct NodeInfo {
    /// `origin`, `edge-a`, `peer-1`, `listener`…
    pub(super) id: String,
    /// `origin`, `edge`, `peer` or `listener`.
    pub(super) kind: &'static str,
    /// Where it listens.
    pub(super) label: String,
    /// Its metrics URL, scraped every second (none for the listener).
    #[serde(skip)]
    pub(super) metrics: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Bytes3 {
    edge: u64,
    peer: u64,
    cache: u64,
}

impl Bytes3 {
    fn add(self, b: &BySource) -> Self {
        Self { edge: self.edge + b.edge, peer: self.peer + b.peer, cache: self.cache + b.cache }
    }
}

#[derive(Debug, Clone, Default, Serialize)]
struct Listener {
    track: String,
    rendition: String,
    bitrate_kbps: f64,
    buffer_s: f64,
    played_s: f64,
    duration_s: f64,
    protocol: String,
    plays: u32,
    /// Over every play so far, the one under way included.
    bytes: Bytes3,
}

#[derive(Debug, Clone, Serialize)]
struct Point {
    t: f64,
    bytes: Bytes3,
    buffer_s: f64,
    bitrate_kbps: f64,
}

#[derive(Debug, Clone, Serialize)]
struct Link {
    from: String,
    to: String,
    /// `upstream`, `edge`, `peer` or `seed` (what a seeding peer fetched; not measured: 0).
    kind: &'static str,
    bytes: f64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct EdgeView {
    id: String,
    /// Requests answered from memory or disk, and those that went upstream.
    hits: f64,
    misses: f64,
    /// `(cache bytes, miss ratio)`, smallest cache first.
    mrc: Vec<(f64, f64)>,
}

/// What the page gets each second.
#[derive(Debug, Clone, Default, Serialize)]
struct Snapshot {
    t: f64,
    nodes: Vec<NodeInfo>,
    /// Bytes each node has sent (chunks, from its metrics).
    sent: BTreeMap<String, f64>,
    links: Vec<Link>,
    listener: Listener,
    history: Vec<Point>,
    edges: Vec<EdgeView>,
}

/// The shared state: the play loop writes the listener's part, the scraper the nodes'.
pub(super) struct Live {
    state: Mutex<Snapshot>,
    /// Bytes of the plays already over.
    done: Mutex<Bytes3>,
    began: Instant,
}

impl Live {
    pub(super) fn new(nodes: Vec<NodeInfo>) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(Snapshot { nodes, ..Snapshot::default() }),
            done: Mutex::new(Bytes3::default()),
            began: Instant::now(),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Snapshot> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The play under way, as the terminal view shows it.
    pub(super) fn listening(&self, st: &Summary, played: Duration, duration: Duration, rendition: &str) {
        let done = *self.done.lock().unwrap_or_else(PoisonError::into_inner);
        let mut s = self.state();
        let plays = s.listener.plays;
        s.listener = Listener {
            track: st.track_id.to_string(),
            rendition: rendition.to_owned(),
            bitrate_kbps: rendition.rsplit('-').next().and_then(|k| k.parse().ok()).unwrap_or(0.0),
            buffer_s: st.buffer_ms as f64 / 1000.0,
            played_s: played.as_secs_f64(),
            duration_s: duration.as_secs_f64(),
            protocol: st.protocol.clone(),
            plays,
            bytes: done.add(&st.bytes_by_source),
        };
    }

    /// A play ended with `by` bytes by source.
    pub(super) fn played(&self, by: &BySource) {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        *done = done.add(by);
        let mut s = self.state();
        s.listener.plays += 1;
        s.listener.bytes = *done;
    }

    fn snapshot(&self) -> Snapshot {
        self.state().clone()
    }

    /// Every second: scrapes each node's metrics and adds a point of history.
    async fn scrape(self: Arc<Self>) {
        let Ok(http) = HttpClient::new(&ClientTls::default()) else { return };
        let http = http.with_timeout(Duration::from_secs(2));
        let nodes = self.snapshot().nodes;
        let mut tick = tokio::time::interval(TICK);
        loop {
            tick.tick().await;
            let mut texts = BTreeMap::new();
            for n in &nodes {
                let Some(url) = &n.metrics else { continue };
                let Ok((base, path)) = chorus_core::url::BaseUrl::split(url) else { continue };
                let Ok(mut c) = http.connect(&base, false).await else { continue };
                if let Ok(r) = c.get(path).await {
                    texts.insert(n.id.clone(), String::from_utf8_lossy(r.body()).into_owned());
                }
            }
            self.update(&nodes, &texts);
        }
    }

    fn update(&self, nodes: &[NodeInfo], texts: &BTreeMap<String, String>) {
        let t = self.began.elapsed().as_secs_f64();
        let mut s = self.state();
        let listener = s.listener.clone();
        let mut links = Vec::new();
        let mut edges = Vec::new();
        let first_edge = nodes.iter().find(|n| n.kind == "edge").map(|n| n.id.clone());
        for n in nodes {
            let Some(text) = texts.get(&n.id) else { continue };
            let sent = match n.kind {
                "origin" => sum(text, "chorus_origin_served_bytes_total", &[]),
                "edge" => sum(text, "chorus_edge_served_bytes_total", &[]),
                "peer" => sum(text, "chorus_peer_sent_bytes_total", &[]),
                _ => 0.0,
            };
            s.sent.insert(n.id.clone(), sent);
            match n.kind {
                "edge" => {
                    let upstream = sum(text, "chorus_edge_served_bytes_total", &["source=\"upstream\""]);
                    links.push(Link { from: "origin".into(), to: n.id.clone(), kind: "upstream", bytes: upstream });
                    let edge_bytes = if Some(&n.id) == first_edge.as_ref() { listener.bytes.edge as f64 } else { 0.0 };
                    links.push(Link { from: n.id.clone(), to: "listener".into(), kind: "edge", bytes: edge_bytes });
                    edges.push(EdgeView {
                        id: n.id.clone(),
                        hits: sum(text, "chorus_edge_cache_requests_total", &["result=\"hit\""]),
                        misses: sum(text, "chorus_edge_cache_requests_total", &["result=\"miss\""]),
                        mrc: curve(text),
                    });
                }
                "peer" => {
                    links.push(Link { from: n.id.clone(), to: "listener".into(), kind: "peer", bytes: sent });
                    // Seeding peers fetch from the last edge (edge b).
                    if let Some(b) = nodes.iter().rfind(|e| e.kind == "edge") {
                        links.push(Link { from: b.id.clone(), to: n.id.clone(), kind: "seed", bytes: 0.0 });
                    }
                }
                _ => {}
            }
        }
        s.links = links;
        s.edges = edges;
        s.t = t;
        s.history.push(Point {
            t,
            bytes: listener.bytes,
            buffer_s: listener.buffer_s,
            bitrate_kbps: listener.bitrate_kbps,
        });
        if s.history.len() > HISTORY {
            s.history.remove(0);
        }
    }
}

/// The sum of the samples of `name` whose labels contain every one of `labels`.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with(['{', ' '])))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The miss-ratio curve from `chorus_edge_mrc_hit_ratio{cache_bytes="…"}`.
fn curve(text: &str) -> Vec<(f64, f64)> {
    let mut points: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("chorus_edge_mrc_hit_ratio{")?;
            let size = rest.split("cache_bytes=\"").nth(1)?.split('"').next()?.parse::<f64>().ok()?;
            let hit = l.rsplit(' ').next()?.parse::<f64>().ok()?;
            Some((size, 1.0 - hit))
        })
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    points
}

struct Pages(Arc<Live>);

impl Handler for Pages {
    async fn call(&self, req: Request<Body>, _ctx: RequestContext) -> Response<ResponseBody> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return chorus_http::serve::method_not_allowed("GET, HEAD");
        }
        let mut r = match req.uri().path() {
            "/" => full(StatusCode::OK, "text/html; charset=utf-8", PAGE),
            "/view.js" => full(StatusCode::OK, "text/javascript; charset=utf-8", SCRIPT),
            "/state.json" => json(StatusCode::OK, &self.0.snapshot()),
            "/events" => events(self.0.clone()),
            "/favicon.ico" => chorus_http::empty(StatusCode::NO_CONTENT),
            _ => json_error(StatusCode::NOT_FOUND, "no such page"),
        };
        r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        r
    }
}

/// Server-sent events: the snapshot every second, for as long as the page is open.
fn events(live: Arc<Live>) -> Response<ResponseBody> {
    let stream = futures_util::stream::unfold((live, true), |(live, first)| async move {
        if !first {
            tokio::time::sleep(TICK).await;
        }
        let data = serde_json::to_string(&live.snapshot()).unwrap_or_default();
        let frame = http_body::Frame::data(Bytes::from(format!("data: {data}\n\n")));
        Some((Ok::<_, Infallible>(frame), (live, false)))
    });
    let body = http_body_util::StreamBody::new(stream).map_err(|never| match never {}).boxed_unsync();
    let mut r = Response::new(body);
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    r
}

/// Starts the scraper and the page's server on 127.0.0.1 (a port of the system's choosing);
/// returns the page's URL. Both stop with the process.
pub(super) async fn start(live: Arc<Live>) -> Result<String> {
    tokio::spawn(live.clone().scrape());
    let url: ListenUrl = "http://127.0.0.1:0".parse().context("the view's listen URL")?;
    // Not the HTTP/1.1 fast path: it sends a body once it is whole, and /events never is.
    let config =
        ServerConfig { cors: chorus_http::cors::AllowOrigins::Off, h1_fast_path: false, ..ServerConfig::default() };
    let server = Server::bind(&[url], None, config).await.context("starting the network view")?;
    let bound = server.local_urls().first().map(ToString::to_string).context("the view has no listener")?;
    tokio::spawn(server.serve(Arc::new(Pages(live)), std::future::pending()));
    Ok(format!("{bound}/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_are_read_as_the_page_needs_them() {
        let text = "# HELP x\nchorus_edge_served_bytes_total{source=\"memory\"} 10\n\
                    chorus_edge_served_bytes_total{source=\"upstream\"} 5\n\
                    chorus_edge_served_bytes_total_other 99\n\
                    chorus_edge_mrc_hit_ratio{cache_bytes=\"2048\"} 0.75\n\
                    chorus_edge_mrc_hit_ratio{cache_bytes=\"1024\"} 0.5\n";
        assert_eq!(sum(text, "chorus_edge_served_bytes_total", &[]), 15.0);
        assert_eq!(sum(text, "chorus_edge_served_bytes_total", &["source=\"upstream\""]), 5.0);
        assert_eq!(curve(text), vec![(1024.0, 0.5), (2048.0, 0.25)]);
    }
}
