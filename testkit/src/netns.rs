//! Several hosts on one machine: each a network namespace of its own, joined to one router
//! namespace by an access link that this process carries in user space (the kernel here has
//! no `tc netem`), with a one-way delay, a loss rate and an optional rate cap each way.
//!
//! A link is a pair of TUN devices, created here and moved into the two namespaces: every IP
//! packet the host sends (TCP, UDP, QUIC, libp2p alike) is read from its device, held for the
//! link's delay (or dropped at its loss rate, or when its queue is full), and written to the
//! router's device, which forwards it on; the way back likewise. Host `n` is `10.77.n.2`, its
//! router side `10.77.n.1`, so every host is in a /24 of its own (as the tracker sees
//! networks). Processes run in a host with `ip netns exec` ([`Lab::command`]).
//!
//! A home behind a NAT ([`Lab::host_behind_nat`]) has the private address `192.168.n.2`; its
//! link translates every packet through a [`Nat`] (crate::nat), whose public address is
//! `10.77.n.2`.
//!
//! Needs root, `ip` (iproute2) and `/dev/net/tun`; [`Lab::unavailable`] says why not. Only
//! addresses inside the namespaces made here are used: nothing leaves the machine.

use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::nat::{Nat, NatConfig};

/// One direction of an access link.
#[derive(Debug, Clone, Copy)]
pub struct Way {
    /// One-way latency.
    pub delay: Duration,
    /// Fraction of packets dropped, 0 to 1.
    pub loss: f64,
    /// Bytes per second at most (`None`: no cap).
    pub rate: Option<u64>,
}

impl Way {
    /// A way with `delay_ms` of latency, no loss, no cap.
    #[must_use]
    pub const fn delay_ms(delay_ms: u64) -> Self {
        Self { delay: Duration::from_millis(delay_ms), loss: 0.0, rate: None }
    }
}

/// A host: its namespace and address.
#[derive(Debug, Clone)]
pub struct Host {
    /// The namespace's name (`ip netns exec NAME …`).
    pub ns: String,
    /// Its address (a private one behind a NAT).
    pub ip: Ipv4Addr,
    /// The address the rest of the lab sees it from: its own, or its NAT's.
    pub public: Ipv4Addr,
}

/// Packets counted on the links: carried and dropped (lost, or over a full queue).
#[derive(Debug, Default)]
pub struct Counters {
    pub carried: AtomicU64,
    pub dropped: AtomicU64,
    /// Of the dropped, those a NAT refused (no live mapping, or filtered).
    pub refused_by_nat: AtomicU64,
}

/// The hosts, their router, and the task carrying their links.
pub struct Lab {
    prefix: String,
    router: String,
    namespaces: Vec<String>,
    rt: Option<tokio::runtime::Runtime>,
    /// Every link's packets.
    pub counters: Arc<Counters>,
    devices: usize,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Lab {
    /// Why hosts cannot be made here (`None`: they can): not root, no `ip`, no TUN device, or
    /// namespaces refused.
    pub fn unavailable() -> Option<String> {
        if !rustix::process::geteuid().is_root() {
            return Some("not root".into());
        }
        if !std::path::Path::new("/dev/net/tun").exists() {
            return Some("no /dev/net/tun".into());
        }
        let probe = format!("chorus-probe-{}", std::process::id());
        if let Err(e) = ip(&["netns", "add", &probe]) {
            return Some(format!("network namespaces: {e}"));
        }
        let _ = ip(&["netns", "del", &probe]);
        None
    }

    /// An empty lab: the router namespace, forwarding on. `tag` names its namespaces
    /// (`chorus-TAG-PID-…`).
    pub fn new(tag: &str) -> Result<Self, String> {
        let prefix = format!("chorus-{tag}-{}", std::process::id());
        let router = format!("{prefix}-router");
        ip(&["netns", "add", &router])?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("netns-links")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let lab = Self {
            prefix,
            router: router.clone(),
            namespaces: vec![router.clone()],
            rt: Some(rt),
            counters: Arc::default(),
            devices: 0,
        };
        ip(&["-n", &router, "link", "set", "lo", "up"])?;
        let out = Command::new("ip")
            // (/proc/sys/net is the namespace's own; no dependence on procps' sysctl.)
            .args(["netns", "exec", &router, "sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!("forwarding in {router}: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(lab)
    }

    /// Adds host `name` as `10.77.NET.2`, its access link `up` (host to router) and `down`.
    pub fn host(&mut self, name: &str, net: u8, up: Way, down: Way) -> Result<Host, String> {
        self.add_host(name, net, up, down, None)
    }

    /// Adds host `name` behind a NAT that behaves as `nat` says: the host is `192.168.NET.2`,
    /// the NAT's public address `10.77.NET.2`; its access link `up` and `down`.
    pub fn host_behind_nat(&mut self, name: &str, net: u8, up: Way, down: Way, nat: NatConfig) -> Result<Host, String> {
        self.add_host(name, net, up, down, Some(nat))
    }

    fn add_host(&mut self, name: &str, net: u8, up: Way, down: Way, nat: Option<NatConfig>) -> Result<Host, String> {
        let ns = format!("{}-{name}", self.prefix);
        ip(&["netns", "add", &ns])?;
        self.namespaces.push(ns.clone());
        ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        // Device names are at most 15 bytes; they are made here, then moved.
        // Unique in the process (several labs) and, with the pid, among processes.
        static DEVICES: AtomicU64 = AtomicU64::new(0);
        let n = DEVICES.fetch_add(1, Ordering::Relaxed);
        self.devices += 1;
        let pid = std::process::id() % 10_000;
        let (h, r) = (format!("cl{pid}h{n}"), format!("cl{pid}r{n}"));
        let rt = self.rt.as_ref().ok_or("stopped")?;
        let (hdev, rdev) = rt.block_on(async {
            let open = |n: &str| {
                tun_rs::DeviceBuilder::new()
                    .name(n)
                    .packet_information(false)
                    .mtu(1500)
                    .build_async()
                    .map_err(|e| format!("TUN device {n}: {e}"))
            };
            Ok::<_, String>((open(&h)?, open(&r)?))
        })?;
        let (public, router_ip) = (Ipv4Addr::new(10, 77, net, 2), Ipv4Addr::new(10, 77, net, 1));
        let (host_ip, gateway) = match nat {
            Some(_) => (Ipv4Addr::new(192, 168, net, 2), Ipv4Addr::new(192, 168, net, 1)),
            None => (public, router_ip),
        };
        ip(&["link", "set", &h, "netns", &ns])?;
        ip(&["link", "set", &r, "netns", &self.router])?;
        // A /24 on each end, not a point-to-point pair: libp2p lists an interface's address
        // attribute, which for a peer pair is the far end's.
        let (hip, rip) = (format!("{host_ip}/24"), format!("{router_ip}/24"));
        ip(&["-n", &ns, "addr", "add", &hip, "dev", &h])?;
        ip(&["-n", &ns, "link", "set", &h, "up"])?;
        ip(&["-n", &ns, "route", "add", "default", "via", &gateway.to_string(), "dev", &h])?;
        ip(&["-n", &self.router, "addr", "add", &rip, "dev", &r])?;
        ip(&["-n", &self.router, "link", "set", &r, "up"])?;
        let (hdev, rdev) = (Arc::new(hdev), Arc::new(rdev));
        let seed = u64::from(net).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let nat = nat.map(|cfg| Arc::new(std::sync::Mutex::new(Nat::new(cfg, host_ip, public))));
        let out = nat.clone().map(|n| (n, crate::nat::Way::Out));
        rt.spawn(carry(hdev.clone(), rdev.clone(), up, seed, out, self.counters.clone()));
        // Another sequence for the other way, so the two lose different packets.
        let back = nat.map(|n| (n, crate::nat::Way::In));
        let seed = seed.rotate_left(32) ^ 0x5DEE_CE66_D1CE_4E5B;
        rt.spawn(carry(rdev, hdev, down, seed, back, self.counters.clone()));
        Ok(Host { ns, ip: host_ip, public })
    }

    /// `ip netns exec HOST program` (arguments to add).
    #[must_use]
    pub fn command(host: &Host, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.ns]).arg(program);
        c
    }
}

/// `chorus ARGS` in `host`, started as a [`crate::Node`] (waits for its ready file).
pub fn node(host: &Host, args: &[&str], listeners: usize) -> crate::Node {
    let mut c = Lab::command(host, crate::bin());
    c.args(args);
    crate::Node::start_command(c, listeners)
}

/// One play in `host`: `chorus fetch TRACK --p2p --no-mdns --json --quality normal` through
/// `edge`, verifying with `key`, its cache and output in `dir`, with `extra` flags; the JSON
/// summary (its `out` set to the file written), or what the command printed when it failed.
/// With `CHORUS_TEST_STDERR` set, the play's log is printed too (with the test's
/// `--nocapture`).
///
/// # Errors
/// The command's standard error when it failed.
pub fn play(
    host: &Host,
    track: &str,
    edge: &str,
    key: &std::path::Path,
    dir: &std::path::Path,
    extra: &[&str],
) -> Result<serde_json::Value, String> {
    let out_file = dir.join("out.mp4");
    let cache = dir.join("cache");
    let out = Lab::command(host, crate::bin())
        .args(["fetch", track, "--edge", edge, "--origin-key", crate::s(key), "--cache-dir", crate::s(&cache)])
        .args(["--p2p", "--no-mdns", "--json", "--quality", "normal", "--out", crate::s(&out_file)])
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("chorus fetch in {}: {e}", host.ns))?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    if std::env::var_os("CHORUS_TEST_STDERR").is_some() {
        eprintln!("LISTENER STDERR {}:\n{}", host.ns, String::from_utf8_lossy(&out.stderr));
    }
    let mut j: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("the summary of the play in {}: {e}", host.ns))?;
    j["out"] = serde_json::Value::String(out_file.display().to_string());
    Ok(j)
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        for ns in self.namespaces.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// A NAT on a link, and which way through it the link's packets go.
type OnLink = Option<(Arc<std::sync::Mutex<Nat>>, crate::nat::Way)>;

/// Carries packets from `from` to `to` as `way` says, through `nat` if any, until either
/// device fails.
async fn carry(
    from: Arc<tun_rs::AsyncDevice>,
    to: Arc<tun_rs::AsyncDevice>,
    way: Way,
    seed: u64,
    nat: OnLink,
    n: Arc<Counters>,
) {
    // A queue of 1024 packets (a home router's buffer); beyond it packets are dropped.
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(1024);
    let counters = n.clone();
    let reader = async move {
        let mut rng = seed | 1;
        let mut buf = vec![0u8; 65_536];
        loop {
            let Ok(len) = from.recv(&mut buf).await else { return };
            // The home router translates first; the link after it may lose the packet.
            if let Some((nat, through)) = &nat {
                let passed = nat.lock().unwrap_or_else(std::sync::PoisonError::into_inner).translate(
                    *through,
                    &mut buf[..len],
                    Instant::now(),
                );
                if !passed {
                    counters.dropped.fetch_add(1, Ordering::Relaxed);
                    counters.refused_by_nat.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            // xorshift64: a fixed sequence per link.
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            #[allow(clippy::cast_precision_loss)] // a uniform draw in [0, 1)
            let lost = way.loss > 0.0 && ((rng >> 11) as f64 / (1u64 << 53) as f64) < way.loss;
            if lost || tx.try_send((Instant::now() + way.delay, buf[..len].to_vec())).is_err() {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let writer = async move {
        let mut free_at = Instant::now();
        while let Some((at, packet)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if let Some(rate) = way.rate.filter(|r| *r > 0) {
                #[allow(clippy::cast_precision_loss)]
                let busy = Duration::from_secs_f64(packet.len() as f64 / rate as f64);
                free_at = free_at.max(Instant::now()) + busy;
                tokio::time::sleep_until(free_at).await;
            }
            // A write that fails (the namespace going away) drops that packet, not the link.
            if to.send(&packet).await.is_ok() {
                n.carried.fetch_add(1, Ordering::Relaxed);
            } else {
                n.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    tokio::join!(reader, writer);
}
