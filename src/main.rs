//! `chorus`: one binary for every role in the network. See `chorus --help` and docs/protocol.md §1.
//!
//! Exit status: 0 on success, 2 on bad usage (clap's errors, a bad config file), 1 on failure,
//! with a one-line `error:` that says what to do.

/// The allocator: mimalloc, for the many short-lived allocations of per-packet QUIC work and
/// per-request headers (glibc's malloc was about 5% of the edge's samples under HTTP/3 load).
/// Built with `--features system-allocator`, the system's malloc instead, which heap profilers
/// such as heaptrack can see (docs/BENCHMARKS.md, "Where the simulator's memory goes").
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod config;
mod demo;
mod edge_cmd;
mod fetch_cmd;
mod get_cmd;
mod ingest_cmd;
mod origin_cmd;
mod peer_cmd;
mod ready;
mod seeding;
mod serve_args;
mod signals;
mod simulate_cmd;
mod systemd;

use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use chorus_core::TrackId;
use chorus_core::keys;
use chorus_core::token::{Claims, TokenIssuer, unix_secs};
use chorus_core::units::Span;
use clap::{Args, CommandFactory as _, FromArgMatches as _, Parser, Subcommand, ValueEnum};

/// chorus: an edge CDN and hybrid peer-to-peer delivery network for audio.
#[derive(Parser)]
#[command(name = "chorus", version, propagate_version = true, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct Global {
    /// TOML file with settings: keys are the long flags with _ for - (flags and CHORUS_* env win).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log filter, e.g. `info`, `debug`, or `info,chorus_core=debug` (RUST_LOG syntax).
    #[arg(long, global = true, default_value = "info", value_name = "FILTER")]
    log_level: String,
    /// Once the node serves, write its listen URLs and libp2p addresses to FILE as JSON
    /// (origin, edge, peer; for supervisors and scripts that start nodes on port 0).
    #[arg(long, global = true, value_name = "FILE")]
    ready_file: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole network on this machine: an origin, two edges and seeding peers on
    /// loopback, and a listener playing the sample tracks with P2P on, shown live.
    ///
    /// The nodes log only warnings unless --log-level is given: the live view is the output.
    Demo(demo::DemoArgs),
    /// Serve a chunk store: manifests, chunks and HLS over HTTP/1.1, HTTP/2 and HTTP/3.
    Origin(Box<origin_cmd::OriginArgs>),
    /// Run an edge cache node in front of origins (and parent edges).
    Edge(Box<edge_cmd::EdgeArgs>),
    /// Fetch a track from edges the way a player would, verifying every byte.
    Fetch(fetch_cmd::FetchArgs),
    /// Run a standalone seeding peer: serve and announce what a cache directory holds.
    Peer(peer_cmd::PeerArgs),
    /// Encode or import audio into a store (or upload it to a running origin).
    Ingest(ingest_cmd::IngestArgs),
    /// Fetch one URL over HTTP/1.1, HTTP/2 or HTTP/3 (h3://), verifying chunk hashes.
    Get(get_cmd::GetArgs),
    /// Simulate a deployment of many listeners on a virtual clock, with the real scheduler,
    /// tracker and edge cache policy: the edges' share of bytes, startup, stalls, tracker load.
    Simulate(Box<simulate_cmd::SimulateArgs>),
    /// Manage ed25519 keys.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Manage access tokens.
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Write origin.key/origin.pub (manifest signing) and token.key/token.pub (access tokens).
    Generate {
        /// Directory to write the four files into (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Replace existing key files.
        #[arg(long)]
        force: bool,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// Print an access token (an EdDSA JWT) signed with the token private key.
    Issue {
        /// The token private key (token.key from `chorus keys generate`).
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
        /// Who the token is for.
        #[arg(long, value_name = "S")]
        sub: Option<String>,
        /// Limit the token to these tracks (repeat; default: all tracks).
        #[arg(long = "track", value_name = "ID", value_delimiter = ',')]
        tracks: Vec<TrackId>,
        /// How long the token is valid, e.g. 1h, 30m, 7d.
        #[arg(long, value_name = "DURATION")]
        ttl: Span,
        /// The audience (`aud`): nodes started with --token-audience take only tokens naming
        /// theirs.
        #[arg(long, value_name = "AUD")]
        aud: Option<String>,
        /// The issuer (`iss`): nodes started with --token-issuer take only tokens from it.
        #[arg(long, value_name = "ISS")]
        iss: Option<String>,
    },
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cmd = config::with_env(Cli::command());
    // A lenient first pass finds --config even when required flags are left to the file.
    let args = match cmd.clone().ignore_errors(true).try_get_matches_from(&args) {
        Ok(lenient) => match config::merge(&cmd, &lenient, &args) {
            Ok(merged) => merged.unwrap_or(args),
            Err(msg) => {
                eprintln!("error: {msg}");
                return ExitCode::from(2);
            }
        },
        Err(_) => args,
    };
    let matches = match cmd.try_get_matches_from(&args) {
        Ok(m) => m,
        Err(e) => e.exit(),
    };
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    // The demo's live view is the output; its nodes log only warnings unless asked otherwise.
    if matches!(cli.command, Cmd::Demo(_))
        && matches.value_source("log_level") == Some(clap::parser::ValueSource::DefaultValue)
    {
        "warn".clone_into(&mut cli.global.log_level);
    }
    init_logging(&cli.global);
    ready::set_file(cli.global.ready_file.take());
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the error and its causes.
            let msg = e.chain().map(ToString::to_string).collect::<Vec<_>>().join(": ");
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(g: &Global) {
    let filter = tracing_subscriber::EnvFilter::try_new(&g.log_level).unwrap_or_else(|e| {
        eprintln!("warning: bad --log-level {:?} ({e}); using info", g.log_level);
        tracing_subscriber::EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match g.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
}

fn run(cmd: Cmd) -> Result<()> {
    match cmd {
        Cmd::Origin(a) => {
            let rt = runtime()?;
            let result = rt.block_on(origin_cmd::run(*a));
            // Do not wait for a blocking task (an upload being encoded) after the drain.
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        }
        Cmd::Edge(a) => {
            let rt = runtime()?;
            let result = rt.block_on(edge_cmd::run(*a));
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        }
        Cmd::Demo(a) => {
            let rt = runtime()?;
            let result = rt.block_on(demo::run(a));
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
            result
        }
        Cmd::Fetch(a) => runtime()?.block_on(fetch_cmd::run(a)),
        Cmd::Peer(a) => runtime()?.block_on(peer_cmd::run(a)),
        Cmd::Ingest(a) => ingest_cmd::run(a),
        Cmd::Get(a) => get_cmd::run(a),
        Cmd::Simulate(a) => simulate_cmd::run(&a),
        Cmd::Keys(KeysCmd::Generate { out, force }) => keys_generate(&out, force),
        Cmd::Token(TokenCmd::Issue { key, sub, tracks, ttl, aud, iss }) => {
            let key = keys::read_signing_key(&key)?;
            let now = unix_secs(std::time::SystemTime::now());
            let claims = Claims {
                exp: now.saturating_add(ttl.0.as_secs()),
                iat: Some(now),
                sub,
                tracks: (!tracks.is_empty()).then_some(tracks),
                aud: aud.map(chorus_core::token::Audience::One),
                iss,
            };
            println!("{}", TokenIssuer::new(&key)?.issue(&claims)?);
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

fn keys_generate(out: &std::path::Path, force: bool) -> Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let names = ["origin.key", "origin.pub", "token.key", "token.pub"];
    if !force && let Some(existing) = names.iter().map(|n| out.join(n)).find(|p| p.exists()) {
        {
            anyhow::bail!(
                "{} exists; pass --force to replace the keys (clients pinning the old origin.pub will refuse new manifests)",
                existing.display()
            );
        }
    }
    for pair in ["origin", "token"] {
        let key = keys::generate();
        keys::write_pair(&key, &out.join(format!("{pair}.key")), &out.join(format!("{pair}.pub")))?;
        println!("{}: key id {}", out.join(format!("{pair}.pub")).display(), keys::key_id(&key.verifying_key()));
    }
    Ok(())
}
