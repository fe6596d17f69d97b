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
