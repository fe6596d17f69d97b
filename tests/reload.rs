//! End to end: a running origin (the edge shares the code) swaps in a renewed TLS
//! certificate without a restart, on SIGHUP and when its certificate files change.
//! (A test binary of its own: these tests signal and rewrite a live node's certificate.)
#![allow(clippy::unwrap_used, clippy::expect_used)] // helpers outside #[test] fns

use chorus_testkit as support;

use chorus_http::client::HttpClient;
use chorus_http::tls::ClientTls;
use http::StatusCode;
use support::{Node, origin_args, s};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_in_a_renewed_certificate_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let node = Node::start(&origin_args(s(&store), &[]), 3);
    let old_cert = store.join("tls").join("cert.pem");
    let old_pem = std::fs::read(&old_cert).unwrap();
    let trusting = |cert: &std::path::Path, name: &str| {
        let pem = dir.path().join(format!("trust-{name}.pem"));
        std::fs::copy(cert, &pem).unwrap();
        HttpClient::new(&ClientTls { ca_files: vec![pem], insecure: false }).unwrap()
    };
    let old_client = trusting(&old_cert, "old");
    let mut held = old_client.connect(&node.base("https"), false).await.unwrap();
    // A renewed pair replaces the files (here: another self-signed one), then SIGHUP.
    let renewed = chorus_http::tls::load_or_generate(None, None, &dir.path().join("renewed")).unwrap();
    let new_client = trusting(&renewed.cert_path, "new");
    assert_ne!(std::fs::read(&renewed.cert_path).unwrap(), old_pem);
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(dir.path().join("renewed").join("tls").join(f), store.join("tls").join(f)).unwrap();
    }
    let pid = rustix::process::Pid::from_child(&node.child);
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    support::wait_log(&node, "TLS certificate reloaded");
    // (A fresh client for the old certificate: one that resumes a session skips the check.)
    let only_old = trusting(&dir.path().join("trust-old.pem"), "old-again");
    for scheme in ["https", "h3"] {
        let mut c = new_client.connect(&node.base(scheme), false).await.unwrap();
        assert_eq!(c.get("/healthz").await.unwrap().status(), StatusCode::OK, "{scheme}");
        let refused = match only_old.connect(&node.base(scheme), false).await {
            Err(_) => true,
            Ok(mut c) => c.get("/healthz").await.is_err(),
        };
        assert!(refused, "{scheme}: the old certificate is still served");
    }
    // A connection opened before keeps working, and the process never stopped.
    assert_eq!(held.get("/healthz").await.unwrap().status(), StatusCode::OK);
    // A pair that does not load leaves the current one in place.
    std::fs::write(store.join("tls").join("cert.pem"), "not a certificate").unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::HUP).unwrap();
    support::wait_log(&node, "did not load");
    let mut c = new_client.connect(&node.base("https"), false).await.unwrap();
    assert_eq!(c.get("/healthz").await.unwrap().status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_files_are_picked_up_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let first = chorus_http::tls::load_or_generate(None, None, &a).unwrap();
    let renewed = chorus_http::tls::load_or_generate(None, None, &b).unwrap();
    let live = dir.path().join("live");
    std::fs::create_dir_all(&live).unwrap();
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(a.join("tls").join(f), live.join(f)).unwrap();
    }
    let store = dir.path().join("store");
    let (cert, key) = (live.join("cert.pem"), live.join("key.pem"));
    let extra = ["--tls-cert", s(&cert), "--tls-key", s(&key), "--tls-check-interval", "200ms"];
    let node = Node::start(&origin_args(s(&store), &extra), 3);
    let client = |pem: &std::path::Path| {
        HttpClient::new(&ClientTls { ca_files: vec![pem.to_owned()], insecure: false }).unwrap()
    };
    let mut c = client(&first.cert_path).connect(&node.base("https"), false).await.unwrap();
    assert_eq!(c.get("/healthz").await.unwrap().status(), StatusCode::OK);
    // A renewal rewrites the files (as certbot or a Kubernetes Secret update would).
    for f in ["key.pem", "cert.pem"] {
        std::fs::copy(b.join("tls").join(f), live.join(f)).unwrap();
    }
    support::wait_log(&node, "certificate files changed: TLS certificate reloaded");
    for scheme in ["https", "h3"] {
        let mut c = client(&renewed.cert_path).connect(&node.base(scheme), false).await.unwrap();
        assert_eq!(c.get("/healthz").await.unwrap().status(), StatusCode::OK, "{scheme}");
    }
}
