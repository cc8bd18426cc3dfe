//! The command line: scenarios, knobs and their bounds, and the loopback-only target.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Closed-loop writers; acknowledged updates per second and ack latency.
    Throughput,
    /// C idle synced connections over D documents: time to all synced, handshake, server RSS.
    Ramp,
    /// K documents x S subscribers, one writer per document at R updates/s: delivery latency.
    /// With --reader-urls the subscribers use those nodes (cross-node).
    Fanout,
    /// Server RSS before, with D documents of --doc-kib loaded, and each second for --settle s
    /// after they unloaded (needs --server-pid).
    Churn,
    /// Every memory attack at once (stuck readers, pre-auth floods, long session ids,
    /// unfinished frames, huge awareness, churn) for --seconds while an honest editor types:
    /// peak RSS, budget fill, sheds, the editor's acks (needs --server-pid).
    Attack,
    /// D documents of --doc-kib typed by --typists people; the typists leave, one idle synced
    /// subscriber per document stays: server RSS per open document when loaded, after --idle s
    /// and after the documents closed (needs --server-pid).
    Docmem,
    /// One document of --doc-kib typed by --typists people (who leave; one subscriber stays);
    /// after --idle s, --connections clients join it at once: time to all synced, handshake
    /// p50/p99, peak server RSS, server CPU (needs --server-pid for the last two).
    Joinstorm,
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Hocuspocus-protocol load generator for zedi-sync (loopback only)",
    args_conflicts_with_subcommands = true
)]
pub struct Args {
    /// Without a subcommand: run `--scenario` against `--url`.
    #[command(subcommand)]
    pub mode: Option<Mode>,
    /// Daemon WebSocket URL; must resolve to a loopback address.
    #[arg(long, default_value = "ws://127.0.0.1:1234")]
    pub url: String,
    #[arg(long, value_enum, default_value = "throughput")]
    pub scenario: Scenario,
    /// Writer counts to measure, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    pub writers: Vec<usize>,
    /// Updates outstanding (sent, not yet acknowledged) per writer.
    #[arg(long, default_value_t = 1)]
    pub in_flight: usize,
    /// Measured seconds per writer count.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Unmeasured seconds of load before each measurement.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// All writers on one document instead of one document each.
    #[arg(long)]
    pub shared_doc: bool,
    /// Store label for the output; default: `store_kind` from the daemon's /health.
    #[arg(long)]
    pub store: Option<String>,
    /// PID of the daemon, to report its CPU use over the window too (from /proc/PID/stat).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Append the JSON lines (a machine line, then measurements) to this file as well.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Connect + handshake deadline per writer, seconds.
    #[arg(long, default_value_t = 15.0)]
    pub handshake_timeout: f64,
    /// After the window, how long to wait for outstanding acks, seconds.
    #[arg(long, default_value_t = 5.0)]
    pub drain_timeout: f64,
    /// Pause between writer counts, seconds (lets the previous documents unload).
    #[arg(long, default_value_t = 1.0)]
    pub pause: f64,
    /// throughput: passive readers on the (then shared) document, connected before the writers.
    #[arg(long, default_value_t = 0)]
    pub readers: usize,
    /// ramp: connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// ramp / fanout / churn: documents (ramp spreads connections over them; fanout and churn:
    /// one writer each). Default: 100, churn 150.
    #[arg(long)]
    pub documents: Option<usize>,
    /// churn / docmem / joinstorm: encoded size each document is filled to, KiB.
    #[arg(long, default_value_t = 110)]
    pub doc_kib: usize,
    /// churn / docmem: seconds of RSS samples (one a second) after the documents unloaded.
    #[arg(long, default_value_t = 30)]
    pub settle: u64,
    /// churn / docmem: longest wait for /health to report 0 documents after the writers left,
    /// seconds (docmem, against a server whose /health has no `documents`: --settle only).
    #[arg(long, default_value_t = 60.0)]
    pub unload_timeout: f64,
    /// ramp / fanout / churn / docmem: handshakes (churn, docmem: documents filling) in
    /// progress at once; default 256. joinstorm: joiners handshaking at once; default all.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// docmem / joinstorm: people typing each document, each with its own yrs client id.
    #[arg(long, default_value_t = 5)]
    pub typists: usize,
    /// docmem / joinstorm: seconds the documents stay open and idle (one subscriber each)
    /// before the idle RSS is read (docmem) or the joiners come (joinstorm).
    #[arg(long, default_value_t = 40.0)]
    pub idle: f64,
    /// ramp: seconds to keep every connection open after setup before reading RSS again.
    #[arg(long, default_value_t = 5.0)]
    pub hold: f64,
    /// ramp / fanout: setup (connect + handshake of all) deadline, seconds.
    #[arg(long, default_value_t = 120.0)]
    pub setup_timeout: f64,
    /// fanout: subscribers per document.
    #[arg(long, default_value_t = 20)]
    pub subscribers: usize,
    /// fanout: updates per second per document writer.
    #[arg(long, default_value_t = 5.0)]
    pub rate: f64,
    /// fanout: subscribers connect to these URLs (round-robin) instead of --url (cross-node).
    #[arg(long, value_delimiter = ',')]
    pub reader_urls: Vec<String>,
    /// Worker threads of the event-driven scenarios (ramp, fanout, readers).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
}

#[derive(Subcommand, Debug)]
pub enum Mode {
    /// Serve as a bare relay (the baseline of ops/bench/compare.sh): frames forwarded to the
    /// other sockets of their document and acknowledged at once; no CRDT, no store, no auth.
    Relay(RelayArgs),
}

#[derive(clap::Args, Debug)]
pub struct RelayArgs {
    #[arg(long)]
    pub port: u16,
    /// Address to listen on; must be loopback.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
}

const MAX_WRITERS: usize = 5000;
const MAX_IN_FLIGHT: usize = 1000;

/// Refuses bounds a run could not meet or a typo would turn into an hours-long run.
pub fn validate(args: &Args) -> anyhow::Result<()> {
    if args.writers.is_empty() || args.writers.iter().any(|&w| w == 0 || w > MAX_WRITERS) {
        bail!("--writers: each count must be 1..={MAX_WRITERS}");
    }
    if args.in_flight == 0 || args.in_flight > MAX_IN_FLIGHT {
        bail!("--in-flight must be 1..={MAX_IN_FLIGHT}");
    }
    if args.seconds == 0.0
        || !(0.0..=3600.0).contains(&args.seconds)
        || !(0.0..=600.0).contains(&args.warmup)
    {
        bail!("--seconds must be in (0, 3600] and --warmup in [0, 600]");
    }
    for (name, v) in [
        ("--handshake-timeout", args.handshake_timeout),
        ("--drain-timeout", args.drain_timeout),
        ("--pause", args.pause),
    ] {
        if !(0.0..=600.0).contains(&v) {
            bail!("{name} must be in [0, 600]");
        }
    }
    Ok(())
}

/// The bounds of the event-driven scenarios' knobs; returns the document count to use.
pub fn event_driven_documents(args: &Args) -> anyhow::Result<usize> {
    let default_documents = if matches!(args.scenario, Scenario::Churn) {
        150
    } else {
        100
    };
    let documents = args.documents.unwrap_or(default_documents);
    if args.connections == 0 || args.connections > 100_000 || !(1..=100_000).contains(&documents) {
        bail!("--connections and --documents must be 1..=100000");
    }
    if !(1..=65_536).contains(&args.doc_kib)
        || args.settle > 3600
        || !(0.0..=3600.0).contains(&args.unload_timeout)
    {
        bail!("--doc-kib must be 1..=65536, --settle and --unload-timeout at most 3600");
    }
    if !(1..=64).contains(&args.typists)
        || !(0.0..=3600.0).contains(&args.idle)
        || args.concurrency == Some(0)
    {
        bail!("--typists must be 1..=64, --idle in [0, 3600], --concurrency at least 1");
    }
    if args.subscribers > 10_000 || !(0.01..=10_000.0).contains(&args.rate) {
        bail!("--subscribers must be <= 10000 and --rate in [0.01, 10000]");
    }
    Ok(documents)
}

pub fn loopback_target(url: &str) -> anyhow::Result<(SocketAddr, String)> {
    let uri: tungstenite::http::Uri = url.parse().with_context(|| format!("bad --url {url}"))?;
    if uri.scheme_str() != Some("ws") {
        bail!("--url must be ws:// (got {url})");
    }
    let host = uri
        .host()
        .context("--url has no host")?
        .trim_matches(['[', ']'])
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        bail!("refusing non-loopback target {url} ({addrs:?})");
    }
    Ok((addrs[0], format!("{host}:{port}")))
}
