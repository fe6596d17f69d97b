//! A real `redis-server` for the shared tracker's tests: on a free loopback port, with no
//! persistence, killed when dropped; stopped and started again on the same port to test an
//! edge riding out a Redis outage.

use std::ffi::OsStr;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `redis-server` is installed. On CI it must be (`.ci/run` installs it): a missing one
/// there fails the test instead of skipping it.
pub fn have_redis() -> bool {
    let ok = Command::new("redis-server").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        assert!(std::env::var_os("CI").is_none(), "redis-server missing on CI: .ci/run must install it");
        eprintln!("note: redis-server not installed (Debian: apt-get install redis-server); skipping this test");
    }
    ok
}

/// A `redis-server` on loopback (or in a network namespace).
pub struct Redis {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate and key (PEM) when it speaks TLS only.
    tls: Option<(PathBuf, PathBuf)>,
    /// The network namespace it runs in, if not this process's.
    ns: Option<String>,
}

impl Redis {
    /// Starts one on a free port and waits until it answers `PING`.
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut r = Self { child: None, addr: SocketAddr::from(([127, 0, 0, 1], port)), tls: None, ns: None };
        r.resume();
        r
    }

    /// Starts one in the network namespace `ns`, on `ip`:6379 (see [`crate::netns`]).
    pub fn start_in(ns: &str, ip: std::net::Ipv4Addr) -> Self {
        let addr = SocketAddr::from((ip, 6379));
        let mut r = Self { child: None, addr, tls: None, ns: Some(ns.to_owned()) };
        r.resume();
        r
    }

    /// Starts one that speaks TLS only, with a self-signed certificate for 127.0.0.1 made in
    /// `dir` (`dir/tls/cert.pem`, to trust), and waits until it takes connections.
    pub fn start_tls(dir: &Path) -> Self {
        let ck = chorus_http::tls::load_or_generate(None, None, dir).expect("a self-signed certificate");
        let key = ck.cert_path.with_file_name("key.pem");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut r = Self { child: None, addr, tls: Some((ck.cert_path, key)), ns: None };
        r.resume();
        r
    }

    /// `redis://127.0.0.1:PORT`, or `rediss://…` for one started with [`Redis::start_tls`].
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://{}", self.addr)
    }

    /// The certificate to trust, for one started with [`Redis::start_tls`].
    pub fn cert(&self) -> Option<&Path> {
        self.tls.as_ref().map(|(c, _)| c.as_path())
    }

    /// Kills it (its data is gone: no persistence).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port (empty), after [`Redis::kill`].
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "already running");
        let (port, bind) = (self.addr.port().to_string(), self.addr.ip().to_string());
        let mut cmd = match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "redis-server"]);
                c
            }
            None => Command::new("redis-server"),
        };
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some((cert, key)) => cmd.args(["--port", "0", "--tls-port", &port, "--tls-auth-clients", "no"]).args([
                OsStr::new("--tls-cert-file"),
                cert.as_os_str(),
                OsStr::new("--tls-key-file"),
                key.as_os_str(),
                OsStr::new("--tls-ca-cert-file"),
                cert.as_os_str(),
            ]),
        };
        let child = cmd
            .args(["--bind", &bind, "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.pings() {
            assert!(Instant::now() < deadline, "redis-server did not answer on {}", self.addr);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it answers `PING` (one speaking TLS: whether it takes a connection).
    fn pings(&self) -> bool {
        if let Some(ns) = &self.ns {
            let (host, port) = (self.addr.ip().to_string(), self.addr.port().to_string());
            return Command::new("ip")
                .args(["netns", "exec", ns, "redis-cli", "-h", &host, "-p", &port, "ping"])
                .output()
                .is_ok_and(|o| o.stdout.starts_with(b"PONG"));
        }
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) else {
            return false;
        };
        if self.tls.is_some() {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real Redis Cluster on loopback: three primaries and three replicas (`redis-cli --cluster
/// create … --cluster-replicas 1`), a node timeout of 1 s so that a killed primary's replica
/// takes over within seconds, no persistence; every node killed when dropped.
pub struct RedisCluster {
    nodes: Vec<(SocketAddr, Option<Child>)>,
    _dir: tempfile::TempDir,
    /// Its certificate and key (PEM) when it speaks TLS only.
    tls: Option<(PathBuf, PathBuf)>,
    /// Where they are kept.
    certs: Option<tempfile::TempDir>,
}

impl RedisCluster {
    /// Starts the six nodes, joins them into a cluster and waits until every node says the
    /// cluster is `ok`.
    pub fn start() -> Self {
        Self::start_with(None)
    }

    /// One that speaks TLS only, to clients and between its nodes, with a self-signed
    /// certificate for 127.0.0.1 (see [`RedisCluster::cert`], to trust).
    pub fn start_tls() -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ck = chorus_http::tls::load_or_generate(None, None, dir.path()).expect("a self-signed certificate");
        let key = ck.cert_path.with_file_name("key.pem");
        let mut c = Self::start_with(Some((ck.cert_path, key)));
        c.certs = Some(dir);
        c
    }

    /// The certificate to trust, for one started with [`RedisCluster::start_tls`].
    pub fn cert(&self) -> Option<PathBuf> {
        self.tls.as_ref().map(|(c, _)| c.clone())
    }

    fn start_with(tls: Option<(PathBuf, PathBuf)>) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut nodes = Vec::new();
        for _ in 0..6 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port_with_bus()));
            let port = addr.port().to_string();
            let mut cmd = Command::new("redis-server");
            match &tls {
                None => cmd.args(["--port", &port]),
                Some((cert, key)) => cmd
                    .args(["--port", "0", "--tls-port", &port, "--tls-cluster", "yes", "--tls-replication", "yes"])
                    .args(["--tls-auth-clients", "no"])
                    .args([
                        OsStr::new("--tls-cert-file"),
                        cert.as_os_str(),
                        OsStr::new("--tls-key-file"),
                        key.as_os_str(),
                    ])
                    .args([OsStr::new("--tls-ca-cert-file"), cert.as_os_str()]),
            };
            let child = cmd
                .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--protected-mode", "no", "--loglevel", "warning", "--cluster-enabled", "yes"])
                .args(["--cluster-node-timeout", "1000", "--cluster-replica-validity-factor", "0"])
                .arg("--cluster-config-file")
                .arg(dir.path().join(format!("nodes-{port}.conf")))
                .arg("--dir")
                .arg(dir.path())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("redis-server starts");
            nodes.push((addr, Some(child)));
        }
        let c = Self { nodes, _dir: dir, tls, certs: None };
        for (addr, _) in &c.nodes {
            c.wait_until(&format!("{addr} answers"), || c.cli(*addr, &["ping"]).is_some_and(|o| o.starts_with("PONG")));
        }
        let out = Command::new("redis-cli")
            .args(c.tls_args())
            .arg("--cluster")
            .arg("create")
            .args(c.nodes.iter().map(|(a, _)| a.to_string()))
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        c.wait_ok();
        c
    }

    /// `redis+cluster://` (`rediss+cluster://` with TLS) and every node.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|(a, _)| a.to_string()).collect();
        let scheme = if self.tls.is_some() { "rediss" } else { "redis" };
        format!("{scheme}+cluster://{}", nodes.join(","))
    }

    /// `redis-cli`'s TLS arguments, if it speaks TLS.
    fn tls_args(&self) -> Vec<std::ffi::OsString> {
        self.tls
            .iter()
            .flat_map(|(cert, _)| ["--tls".into(), "--cacert".into(), cert.clone().into_os_string()])
            .collect()
    }

    /// `redis-cli -h ADDR -p PORT ARGS…`'s output, if it ran.
    fn cli(&self, addr: SocketAddr, args: &[&str]) -> Option<String> {
        let out = Command::new("redis-cli")
            .args(self.tls_args())
            .args(["-h", &addr.ip().to_string(), "-p", &addr.port().to_string()])
            .args(args)
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The primaries that hold slots, as the live nodes see them.
    pub fn primaries(&self) -> Vec<SocketAddr> {
        let Some(out) = self.live().find_map(|a| self.cli(a, &["cluster", "nodes"])) else {
            return Vec::new();
        };
        let mut p: Vec<SocketAddr> = out
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                // id addr:port@bus flags primary ping pong epoch link slot…
                let live = f.get(2)?.contains("master") && !f[2].contains("fail") && f.len() > 8;
                live.then(|| f[1].split('@').next()?.parse().ok())?
            })
            .collect();
        p.sort();
        p
    }

    /// The primary that serves `key`'s hash slot, as the live nodes see it.
    pub fn primary_of(&self, key: &str) -> Option<SocketAddr> {
        let node = self.live().next()?;
        let slot: u16 = self.cli(node, &["cluster", "keyslot", key])?.trim().parse().ok()?;
        let nodes = self.cli(node, &["cluster", "nodes"])?;
        nodes.lines().find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if !f.get(2)?.contains("master") || f[2].contains("fail") {
                return None;
            }
            let serves = f.iter().skip(8).any(|r| {
                let (lo, hi) = r.split_once('-').unwrap_or((r, r));
                matches!((lo.parse::<u16>(), hi.parse::<u16>()), (Ok(lo), Ok(hi)) if (lo..=hi).contains(&slot))
            });
            serves.then(|| f[1].split('@').next()?.parse().ok())?
        })
    }

    /// Kills the node at `addr` (its data is gone: no persistence).
    pub fn kill(&mut self, addr: SocketAddr) {
        for (a, child) in &mut self.nodes {
            if *a == addr
                && let Some(mut c) = child.take()
            {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }

    /// Waits until every live node says the cluster is `ok` and the primaries serving its
    /// slots are all alive (after a kill: a replica has taken over).
    pub fn wait_ok(&self) {
        let alive: Vec<SocketAddr> = self.live().collect();
        self.wait_until("the cluster is ok", || {
            alive.iter().all(|a| self.cli(*a, &["cluster", "info"]).is_some_and(|o| o.contains("cluster_state:ok")))
                && !self.primaries().is_empty()
                && self.primaries().iter().all(|p| alive.contains(p))
                && self.primaries().len() == 3
        });
    }

    fn live(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.nodes.iter().filter(|(_, c)| c.is_some()).map(|(a, _)| *a)
    }

    fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.nodes {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A free loopback port whose cluster bus port (port + 10 000) is free too.
fn free_port_with_bus() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
        let port = l.local_addr().expect("its address").port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}
