//! A real [Garage](https://garagehq.deuxfleurs.fr/) cluster, the S3-compatible object store,
//! for the tests of chorus against S3: `nodes` `garage server` processes on loopback (free
//! ports for RPC, the S3 API and the admin API each), joined into one cluster whose layout puts
//! every node in a zone of its own (`dc1`…`dcN`) and keeps a copy of everything on each
//! (`replication_factor = nodes`, `consistency_mode = "consistent"`), with one access key and
//! a bucket `chorus` it may read, write and own. Metadata, data, configs and logs live in one
//! temporary directory, removed with the [`Garage`]; nodes can be killed and restarted with
//! their data to test chorus riding out a store that fails.
//!
//! The binary is the `garage` crate's (v2): `CHORUS_GARAGE`, else `garage` on `PATH`, else
//! `/var/tmp/garage-install/bin/garage` or `~/.cargo/bin/garage`. A test calls [`available`]
//! first and skips when it says no (on CI it fails instead).

use std::fs::File;
use std::io::Read as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::{ClientOptions, ObjectStoreExt as _, PutPayload, RetryConfig};

/// The bucket the key may use.
const BUCKET: &str = "chorus";
/// `s3_region` in every node's config: what clients must sign with.
const REGION: &str = "garage";
/// How long forming the cluster, or a node coming back, may take on a busy machine.
const DEADLINE: Duration = Duration::from_secs(60);

/// The `garage` binary: `CHORUS_GARAGE`, else the first of `garage` on `PATH`,
/// `/var/tmp/garage-install/bin/garage` and `~/.cargo/bin/garage` that exists.
fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CHORUS_GARAGE") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let on_path = std::env::split_paths(&path).map(|d| d.join("garage")).collect::<Vec<_>>();
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo/bin/garage"));
    on_path.into_iter().chain([PathBuf::from("/var/tmp/garage-install/bin/garage")]).chain(home).find(|p| p.is_file())
}

/// Whether the `garage` binary is installed (and runs). On CI it must be (`.ci/run` installs
/// it): a missing one there fails the test instead of skipping it.
pub fn available() -> bool {
    let ok = binary().is_some_and(|b| Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "garage missing on CI: .ci/run must install it");
        eprintln!("note: garage not installed (cargo install garage, or set CHORUS_GARAGE); skipping this test");
    }
    ok
}

/// `bytes` random bytes as lowercase hex.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)).expect("random bytes from /dev/urandom");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// The last lines of a log file.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// One `garage server` of the cluster.
struct Node {
    /// Its `garage.toml`.
    config: PathBuf,
    /// Its stdout and stderr, across restarts.
    log: PathBuf,
    rpc_port: u16,
    s3_port: u16,
    /// Its full node ID (hex public key), once known.
    id: String,
    /// The running process; `None` once killed.
    child: Option<Child>,
}

/// A running Garage cluster on loopback with a key and a bucket `chorus`; every node is killed
/// and the directory holding their data removed when it is dropped.
pub struct Garage {
    bin: PathBuf,
    nodes: Vec<Node>,
    key_id: String,
    secret: String,
    /// Holds every node's config, metadata, data and log.
    dir: tempfile::TempDir,
}

impl Garage {
    /// Starts `nodes` Garage nodes on loopback, connects them, gives each a zone of its own
    /// (`dc1`…) with 1 GB of capacity and `replication_factor = nodes`, applies that layout,
    /// imports an access key and creates the bucket `chorus` it may read, write and own; returns
    /// once a PUT then GET of a small object through node 0 works. Panics (with the nodes' logs)
    /// if that takes over a minute, or if `garage` is missing: check [`available`] first.
    pub async fn cluster(nodes: usize) -> Garage {
        assert!(nodes >= 1, "a cluster needs a node");
        let bin = binary().expect("garage is not installed: check garage::available() first");
        let dir = tempfile::tempdir().expect("a directory for the Garage cluster");
        let rpc_secret = random_hex(32);
        let admin_token = random_hex(32);
        // Every port at once (each listener held until all are picked), so no two are equal.
        let listeners: Vec<TcpListener> =
            (0..nodes * 3).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port")).collect();
        let ports: Vec<u16> = listeners.iter().map(|l| l.local_addr().expect("a bound port").port()).collect();
        drop(listeners);
        let nodes = ports
            .chunks(3)
            .enumerate()
            .map(|(i, p)| {
                let home = dir.path().join(format!("node{i}"));
                std::fs::create_dir_all(&home).expect("a node directory");
                let (config, log) = (home.join("garage.toml"), home.join("garage.log"));
                let (meta, data) = (home.join("meta"), home.join("data"));
                let (meta, data, rpc, s3, admin) = (meta.display(), data.display(), p[0], p[1], p[2]);
                let toml = format!(
                    "metadata_dir = \"{meta}\"\n\
                     data_dir = \"{data}\"\n\
                     db_engine = \"sqlite\"\n\
                     replication_factor = {nodes}\n\
                     consistency_mode = \"consistent\"\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_public_addr = \"127.0.0.1:{rpc}\"\n\
                     rpc_secret = \"{rpc_secret}\"\n\n\
                     [s3_api]\n\
                     s3_region = \"{REGION}\"\n\
                     api_bind_addr = \"127.0.0.1:{s3}\"\n\
                     root_domain = \".s3.garage.localhost\"\n\n\
                     [admin]\n\
                     api_bind_addr = \"127.0.0.1:{admin}\"\n\
                     admin_token = \"{admin_token}\"\n"
                );
                std::fs::write(&config, toml).expect("a node's garage.toml");
                Node { config, log, rpc_port: rpc, s3_port: s3, id: String::new(), child: None }
            })
            .collect();
        // A key of our own making (GK + 24 hex digits, 64 hex digits of secret): nothing to parse.
        let mut g = Garage { bin, nodes, key_id: format!("GK{}", random_hex(12)), secret: random_hex(32), dir };
        for i in 0..g.nodes.len() {
            g.spawn(i);
        }
        let deadline = Instant::now() + DEADLINE;
        for i in 0..g.nodes.len() {
            // `node id` reads the key the server writes when it starts.
            let out = g.until_ok(i, &["node", "id", "-q"], deadline).await;
            g.nodes[i].id = out.trim().split('@').next().unwrap_or_default().to_owned();
        }
        for i in 1..g.nodes.len() {
            let peer = g.peer(i);
            g.until_ok(0, &["node", "connect", &peer], deadline).await;
        }
        for i in 0..g.nodes.len() {
            let (zone, id) = (format!("dc{}", i + 1), g.nodes[i].id.clone());
            g.until_ok(0, &["layout", "assign", "-z", &zone, "-c", "1G", &id], deadline).await;
        }
        g.until_ok(0, &["layout", "apply", "--version", "1"], deadline).await;
        let (key_id, secret) = (g.key_id.clone(), g.secret.clone());
        g.until_ok(0, &["key", "import", "--yes", "-n", "chorus-test", &key_id, &secret], deadline).await;
        g.until_ok(0, &["bucket", "create", BUCKET], deadline).await;
        g.until_ok(0, &["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", &key_id], deadline).await;
        g.until_probe(0, deadline).await;
        g
    }

    /// The S3 API of node `node`: `http://127.0.0.1:PORT`.
    pub fn s3_endpoint(&self, node: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[node].s3_port)
    }

    /// The region requests must be signed for (`s3_region` in the config): `garage`.
    pub fn region(&self) -> &str {
        REGION
    }

    /// The access key's ID (`GK…`).
    pub fn access_key_id(&self) -> &str {
        &self.key_id
    }

    /// The access key's secret.
    pub fn secret_access_key(&self) -> &str {
        &self.secret
    }

    /// The bucket the key may read, write and own: `chorus`.
    pub fn bucket(&self) -> &str {
        BUCKET
    }

    /// The environment a chorus process needs to reach the store through node `node`:
    /// `AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and
    /// `AWS_ALLOW_HTTP=true`.
    pub fn env(&self, node: usize) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.s3_endpoint(node)),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// A client of the bucket through node `node`, to put, get or alter objects behind
    /// chorus's back. It retries a failed request only briefly (twice, within 10 s), so a
    /// stopped store shows as an error soon.
    pub fn client(&self, node: usize) -> AmazonS3 {
        let retry = RetryConfig { max_retries: 2, retry_timeout: Duration::from_secs(10), ..RetryConfig::default() };
        self.builder(node, ClientOptions::new()).with_retry(retry).build().expect("an S3 client of the Garage cluster")
    }

    /// Kills node `node` (SIGKILL) and waits for it to exit; nothing if it is not running.
    pub fn kill(&mut self, node: usize) {
        if let Some(mut child) = self.nodes[node].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Restarts a killed node with the same config and data, connects it to every running
    /// node and returns once its S3 API answers, and, when a majority of the nodes run (a
    /// quorum), once a PUT then GET through it works.
    pub async fn restart(&mut self, node: usize) {
        assert!(self.nodes[node].child.is_none(), "garage node {node} is running");
        self.spawn(node);
        let deadline = Instant::now() + DEADLINE;
        // Its saved peer list may be empty: it need not find the others by itself.
        for i in 0..self.nodes.len() {
            if i != node && self.nodes[i].child.is_some() {
                let peer = self.peer(i);
                self.until_ok(node, &["node", "connect", &peer], deadline).await;
            }
        }
        let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
        if running * 2 > self.nodes.len() {
            self.until_probe(node, deadline).await;
        } else {
            let addr = SocketAddr::from(([127, 0, 0, 1], self.nodes[node].s3_port));
            while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
                self.check(node, deadline, "its S3 API does not answer");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    /// Kills every node ("the store stopped").
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }

    /// Runs `garage args…` against node 0 (which must be running) and returns its stdout;
    /// panics with its stderr if it fails.
    pub fn cli(&self, args: &[&str]) -> String {
        self.run(0, args).unwrap_or_else(|e| panic!("garage {}: {e}", args.join(" ")))
    }

    /// Starts node `i`'s server, its output appended to its log.
    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = File::options().create(true).append(true).open(&node.log).expect("a garage log file");
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a garage log file"))
            .stderr(log)
            .spawn()
            .expect("garage server starts");
        node.child = Some(child);
    }

    /// `ID@127.0.0.1:PORT` of node `i`, as `garage node connect` takes it.
    fn peer(&self, i: usize) -> String {
        format!("{}@127.0.0.1:{}", self.nodes[i].id, self.nodes[i].rpc_port)
    }

    /// Runs `garage -c <node's config> args…`: its stdout, or what it said on failure.
    fn run(&self, node: usize, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.nodes[node].config)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("garage does not run: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{}: {}{stdout}", out.status, String::from_utf8_lossy(&out.stderr)))
        }
    }

    /// [`Garage::run`] again until it succeeds (what races the cluster forming), or panics. A
    /// key or bucket that "already exists" counts as made: an earlier try may have made it and
    /// yet failed.
    async fn until_ok(&mut self, node: usize, args: &[&str], deadline: Instant) -> String {
        loop {
            match self.run(node, args) {
                Ok(out) => return out,
                Err(e) if e.contains("AlreadyExists (409)") => return e,
                Err(e) => self.check(node, deadline, &format!("garage {} failed: {e}", args.join(" "))),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until a PUT, GET and DELETE of a small object through node `node` work, or panics.
    async fn until_probe(&mut self, node: usize, deadline: Instant) {
        loop {
            match self.probe(node).await {
                Ok(()) => return,
                Err(e) => self.check(node, deadline, &format!("S3 through node {node} does not work yet: {e}")),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// PUT, GET (the same bytes) and DELETE of an object through node `node`, each tried once.
    async fn probe(&self, node: usize) -> Result<(), String> {
        let options = ClientOptions::new().with_timeout(Duration::from_secs(5));
        let retry = RetryConfig { max_retries: 0, ..RetryConfig::default() };
        let s3 = self.builder(node, options).with_retry(retry).build().map_err(|e| e.to_string())?;
        let key = object_store::path::Path::from(".chorus-testkit-probe");
        s3.put(&key, PutPayload::from_static(b"ready")).await.map_err(|e| e.to_string())?;
        let got = s3.get(&key).await.map_err(|e| e.to_string())?.bytes().await.map_err(|e| e.to_string())?;
        if &got[..] != b"ready" {
            return Err(format!("read back {got:?}"));
        }
        s3.delete(&key).await.map_err(|e| e.to_string())
    }

    /// Panics with `what` about node `node` and every node's log if a node that should run
    /// exited, or `deadline` passed.
    fn check(&mut self, node: usize, deadline: Instant, what: &str) {
        let exited = (self.nodes.iter_mut().enumerate())
            .find_map(|(i, n)| n.child.as_mut().and_then(|c| c.try_wait().ok().flatten()).map(|s| (i, s)));
        if exited.is_some() || Instant::now() >= deadline {
            let logs: String = (self.nodes.iter().enumerate())
                .map(|(i, n)| format!("\n--- node {i} ({}):\n{}", n.log.display(), tail(&n.log)))
                .collect();
            let dir = self.dir.path().display();
            panic!("garage node {node}: {what} (a node exited: {exited:?}); logs in {dir}:{logs}");
        }
    }

    /// An S3 client builder of the bucket through node `node`, with the key and `options`
    /// (plain HTTP allowed: set after them, as they would reset it).
    fn builder(&self, node: usize, options: ClientOptions) -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_client_options(options)
            .with_endpoint(self.s3_endpoint(node))
            .with_region(REGION)
            .with_access_key_id(&self.key_id)
            .with_secret_access_key(&self.secret)
            .with_bucket_name(BUCKET)
            .with_allow_http(true)
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::path::Path as Key;

    async fn get(g: &Garage, node: usize, key: &Key) -> Vec<u8> {
        let got = g.client(node).get(key).await.unwrap_or_else(|e| panic!("GET {key} via node {node}: {e}"));
        got.bytes().await.expect("the object's body").to_vec()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn three_nodes_serve_with_one_down_and_take_it_back() {
        if !available() {
            return;
        }
        let started = Instant::now();
        let mut g = Garage::cluster(3).await;
        eprintln!("3-node Garage cluster up in {:?}", started.elapsed());
        assert!(g.cli(&["bucket", "list"]).contains("chorus"));
        let (a, b) = (Key::from("tracks/a/seg-0001"), Key::from("tracks/b/seg-0001"));
        let body: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        g.client(0).put(&a, PutPayload::from(body.clone())).await.expect("PUT via node 0");
        assert_eq!(get(&g, 1, &a).await, body, "read back via node 1");

        g.kill(2);
        assert_eq!(get(&g, 0, &a).await, body, "read via node 0 with node 2 down");
        g.client(0).put(&b, PutPayload::from_static(b"second")).await.expect("PUT via node 0 with node 2 down");

        g.restart(2).await;
        assert_eq!(get(&g, 2, &b).await, b"second", "read via the restarted node 2");
        assert_eq!(get(&g, 2, &a).await, body, "read via the restarted node 2");
    }
}
