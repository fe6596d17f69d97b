//! One network for the end-to-end tests: a temporary directory holding a store with the tracks a
//! test needs, an origin serving it (plain HTTP, port 0) and edges in front of it, each edge's
//! cache (and TLS certificate) in a directory of its own.
//!
//! ```no_run
//! use chorus_testkit::net::Net;
//! // The sample "tides", and two edges listening on HTTPS, HTTP/3 and plain HTTP.
//! let net = Net::builder().sample("tides", "chorus-tides").edges(2, &["https", "h3", "http"], &[]).start();
//! let manifest = net.manifest("tides");
//! let stereo = net.bytes_of(&manifest.renditions[1]);
//! ```
//!
//! The builder ingests as it is told (so a test may prepare keys or packages in
//! [`NetBuilder::dir`] first, and compute paths there for the nodes' flags); [`NetBuilder::start`]
//! starts the nodes.

use std::path::{Path, PathBuf};
use std::process::Output;

use chorus_core::ChunkId;
use chorus_core::keys::VerifyingKey;
use chorus_core::manifest::{Manifest, Rendition};

use crate::{Node, chorus, ingest_sample, s};

/// A store, its origin and edges (see the module docs); every node is killed when dropped.
pub struct Net {
    /// Holds the store (`store/`), the edges' caches (`edge0/`, `edge1/`…, and the names given
    /// to [`Net::start_edge`]) and whatever else a test puts there.
    pub dir: tempfile::TempDir,
    /// The origin's store.
    pub store: PathBuf,
    /// The origin (one plain HTTP listener).
    pub origin: Node,
    /// The edges the builder was asked for, in order; cache of edge `i` in `edge{i}/`.
    pub edges: Vec<Node>,
    /// The public key the store's manifests are signed with.
    key: PathBuf,
}

/// Sets up a [`Net`]: from [`Net::builder`].
pub struct NetBuilder {
    dir: tempfile::TempDir,
    key: Option<PathBuf>,
    origin_args: Vec<String>,
    /// Listen URLs and extra flags of each edge.
    edges: Vec<(Vec<String>, Vec<String>)>,
}

impl Net {
    /// A builder with an empty temporary directory.
    pub fn builder() -> NetBuilder {
        NetBuilder {
            dir: tempfile::tempdir().expect("a temporary directory"),
            key: None,
            origin_args: Vec::new(),
            edges: Vec::new(),
        }
    }

    /// The origin public key (`origin.pub`) the store's manifests verify against.
    pub fn key(&self) -> PathBuf {
        self.key.clone()
    }

    /// [`Net::key`], read.
    pub fn verifying_key(&self) -> VerifyingKey {
        chorus_core::keys::read_verifying_key(&self.key).expect("the origin public key")
    }

    /// The TLS certificate of the edge whose cache is in `name` (`edge0`, …).
    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.path().join(name).join("tls").join("cert.pem")
    }

    /// The certificates of [`Net::edges`], in order.
    pub fn certs(&self) -> Vec<PathBuf> {
        (0..self.edges.len()).map(|i| self.cert(&format!("edge{i}"))).collect()
    }

    /// [`Net::certs`] as `--ca` takes them, comma-separated.
    pub fn ca(&self) -> String {
        self.certs().iter().map(|p| s(p)).collect::<Vec<_>>().join(",")
    }

    /// The store's manifest of `track`, verified with [`Net::key`].
    pub fn manifest(&self, track: &str) -> Manifest {
        let doc = std::fs::read(self.store.join("manifests").join(format!("{track}.json"))).unwrap();
        Manifest::verify(&doc, &self.verifying_key()).unwrap()
    }

    /// The origin's bytes of chunk `id`.
    pub fn chunk(&self, id: &ChunkId) -> Vec<u8> {
        std::fs::read(chorus_core::chunkdir::chunk_path(&self.store, id)).unwrap()
    }

    /// The origin's bytes of a whole rendition, init chunk first: what a player writes out.
    pub fn bytes_of(&self, rendition: &Rendition) -> Vec<u8> {
        rendition.chunks().flat_map(|c| self.chunk(&c.id)).collect()
    }

    /// Another edge in front of the origin (not one of [`Net::edges`]), with its cache in
    /// `name`, listening on `listen` (see [`NetBuilder::edges`]), then `extra` flags.
    pub fn start_edge(&self, name: &str, listen: &[&str], extra: &[&str]) -> Node {
        let listen: Vec<String> = listen.iter().map(|l| listen_url(l)).collect();
        start_edge(&self.origin, &self.dir.path().join(name), &listen, extra)
    }

    /// Runs `chorus fetch TRACK --origin-key KEY args…` to completion.
    pub fn fetch(&self, track: &str, args: &[&str]) -> Output {
        let key = self.key();
        let mut all = vec!["fetch", track, "--origin-key", s(&key)];
        all.extend_from_slice(args);
        chorus(&all)
    }
}

impl NetBuilder {
    /// The temporary directory the network lives in (the store is `store/` in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The origin's store.
    pub fn store(&self) -> PathBuf {
        self.dir().join("store")
    }

    /// Ingests the shipped sample `sample` (e.g. `chorus-tides`) as `track`, now.
    #[must_use]
    pub fn sample(self, track: &str, sample: &str) -> Self {
        ingest_sample(&self.store(), track, sample);
        self
    }

    /// Runs `step` with the directory and the store, now: an ingest of a test's own.
    #[must_use]
    pub fn ingest(self, step: impl FnOnce(&Path, &Path)) -> Self {
        step(self.dir(), &self.store());
        self
    }

    /// Where the origin public key is when the store was ingested with a signing key of its
    /// own (default: the store's, `store/origin.pub`).
    #[must_use]
    pub fn origin_key(mut self, public: PathBuf) -> Self {
        self.key = Some(public);
        self
    }

    /// Extra flags for `chorus origin`.
    #[must_use]
    pub fn origin_args(mut self, extra: &[&str]) -> Self {
        self.origin_args.extend(extra.iter().map(|a| (*a).to_owned()));
        self
    }

    /// `n` more edges listening on `listen`, each a scheme (`http`, `https`, `h3`: loopback,
    /// port 0) or a whole listen URL, then `extra` flags.
    #[must_use]
    pub fn edges(mut self, n: usize, listen: &[&str], extra: &[&str]) -> Self {
        let listen: Vec<String> = listen.iter().map(|l| listen_url(l)).collect();
        let extra: Vec<String> = extra.iter().map(|a| (*a).to_owned()).collect();
        self.edges.extend(std::iter::repeat_n((listen, extra), n));
        self
    }

    /// Starts the origin, then the edges, each once it serves.
    pub fn start(self) -> Net {
        let store = self.store();
        let mut args = vec!["origin", "--store", s(&store), "--listen", "http://127.0.0.1:0"];
        args.extend(self.origin_args.iter().map(String::as_str));
        let origin = Node::start(&args, 1);
        let edges = self
            .edges
            .iter()
            .enumerate()
            .map(|(i, (listen, extra))| {
                let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
                start_edge(&origin, &self.dir().join(format!("edge{i}")), listen, &extra)
            })
            .collect();
        let key = self.key.unwrap_or_else(|| store.join("origin.pub"));
        Net { dir: self.dir, store, origin, edges, key }
    }
}

/// A scheme as a loopback listen URL on port 0; a URL as it is.
fn listen_url(l: &str) -> String {
    if l.contains("://") { l.to_owned() } else { format!("{l}://127.0.0.1:0") }
}

/// `chorus edge` in front of `origin` with its cache in `cache`, listening on `listen`.
fn start_edge(origin: &Node, cache: &Path, listen: &[String], extra: &[&str]) -> Node {
    let upstream = origin.url("http");
    let mut args = vec!["edge", "--upstream", &upstream, "--cache-dir", s(cache)];
    for l in listen {
        args.extend(["--listen", l]);
    }
    args.extend_from_slice(extra);
    Node::start(&args, listen.len())
}
