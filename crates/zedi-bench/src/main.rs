//! zedi-bench: a load generator speaking the Hocuspocus protocol with real Yjs updates.
//!
//! Scenario `throughput`: W writers, each on its own WebSocket (and by default its own
//! document), run a closed loop with `--in-flight` updates outstanding; an update counts when
//! its `SyncStatus(1)` arrives, which the daemon sends only once the update is durable.
//!
//! ```sh
//! zedi-bench --url ws://127.0.0.1:1234 --writers 1,10,100 --seconds 10
//! ```
//! stdout: one JSON line per measurement; stderr: the machine header and a human table.
//! Only loopback targets are accepted. `--scenario churn` (memory returned after documents
//! unload) is driven by `scripts/memory-bench.sh`, which starts the daemon for it.

mod aconn;
mod attack;
mod machine;
mod memory;
mod scenarios;
mod writer;

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use serde::Serialize;

use writer::{StartSignal, Window, WriterResult, WriterSpec};

#[derive(Clone, Copy, Debug, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Scenario {
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
}

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Hocuspocus-protocol load generator for zedi-sync (loopback only)"
)]
struct Args {
    /// Daemon WebSocket URL; must resolve to a loopback address.
    #[arg(long, default_value = "ws://127.0.0.1:1234")]
    url: String,
    #[arg(long, value_enum, default_value = "throughput")]
    scenario: Scenario,
    /// Writer counts to measure, one run each.
    #[arg(long, value_delimiter = ',', default_value = "1,10,100")]
    writers: Vec<usize>,
    /// Updates outstanding (sent, not yet acknowledged) per writer.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Measured seconds per writer count.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Unmeasured seconds of load before each measurement.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// All writers on one document instead of one document each.
    #[arg(long)]
    shared_doc: bool,
    /// Store label for the output; default: `store_kind` from the daemon's /health.
    #[arg(long)]
    store: Option<String>,
    /// PID of the daemon, to report its CPU use over the window too (from /proc/PID/stat).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Append the JSON lines (a machine line, then measurements) to this file as well.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Connect + handshake deadline per writer, seconds.
    #[arg(long, default_value_t = 15.0)]
    handshake_timeout: f64,
    /// After the window, how long to wait for outstanding acks, seconds.
    #[arg(long, default_value_t = 5.0)]
    drain_timeout: f64,
    /// Pause between writer counts, seconds (lets the previous documents unload).
    #[arg(long, default_value_t = 1.0)]
    pause: f64,
    /// throughput: passive readers on the (then shared) document, connected before the writers.
    #[arg(long, default_value_t = 0)]
    readers: usize,
    /// ramp: connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// ramp / fanout / churn: documents (ramp spreads connections over them; fanout and churn:
    /// one writer each). Default: 100, churn 150.
    #[arg(long)]
    documents: Option<usize>,
    /// churn: encoded size each writer fills its document to, KiB.
    #[arg(long, default_value_t = 110)]
    doc_kib: usize,
    /// churn: seconds of RSS samples (one a second) after the documents unloaded.
    #[arg(long, default_value_t = 30)]
    settle: u64,
    /// churn: longest wait for /health to report 0 documents after the writers left, seconds.
    #[arg(long, default_value_t = 60.0)]
    unload_timeout: f64,
    /// ramp / fanout: handshakes in progress at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// ramp: seconds to keep every connection open after setup before reading RSS again.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// ramp / fanout: setup (connect + handshake of all) deadline, seconds.
    #[arg(long, default_value_t = 120.0)]
    setup_timeout: f64,
    /// fanout: subscribers per document.
    #[arg(long, default_value_t = 20)]
    subscribers: usize,
    /// fanout: updates per second per document writer.
    #[arg(long, default_value_t = 5.0)]
    rate: f64,
    /// fanout: subscribers connect to these URLs (round-robin) instead of --url (cross-node).
    #[arg(long, value_delimiter = ',')]
    reader_urls: Vec<String>,
    /// Worker threads of the event-driven scenarios (ramp, fanout, readers).
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

#[derive(Debug, Serialize)]
struct Measurement {
    scenario: Scenario,
    store: String,
    writers: usize,
    connected: usize,
    in_flight: usize,
    shared_doc: bool,
    seconds: f64,
    acked: u64,
    acked_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
    unexpected_frames: usize,
    /// CPU time of this generator over the window / wall time; 100 = one core busy.
    client_cpu_pct: f64,
    server_cpu_pct: Option<f64>,
    /// Time for all writers to connect and finish the handshake.
    setup_ms: f64,
    readers: usize,
    readers_connected: usize,
    /// Sync/Update frames the readers received over the whole run (warm-up and drain included).
    reader_deliveries: u64,
}

const MAX_WRITERS: usize = 5000;
const MAX_IN_FLIGHT: usize = 1000;

fn loopback_target(url: &str) -> anyhow::Result<(SocketAddr, String)> {
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

fn percentile_ms(sorted_us: &[u32], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1000.0
}

fn sleep_until(t: Instant) {
    if let Some(d) = t.checked_duration_since(Instant::now()) {
        std::thread::sleep(d);
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn run_throughput(
    args: &Args,
    addr: SocketAddr,
    store: &str,
    run_id: &str,
    writers: usize,
) -> anyhow::Result<(Measurement, Vec<String>)> {
    let handshake_timeout = Duration::from_secs_f64(args.handshake_timeout);
    let signal: StartSignal = Arc::new((Mutex::new(None), Condvar::new()));
    let (ready_tx, ready_rx) = mpsc::channel();
    let setup_started = Instant::now();
    let shared_doc = args.shared_doc || args.readers > 0;
    // Readers first (event-driven, on their own runtime), all in before the writers start.
    let reader_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let reader_end = Instant::now()
        + handshake_timeout
        + Duration::from_secs_f64(args.warmup + args.seconds + args.drain_timeout + 3.0);
    let delivered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut readers_connected = 0usize;
    if args.readers > 0 {
        let (rtx, rrx) = mpsc::channel();
        let t = Arc::new(scenarios::Target {
            addr,
            url: args.url.clone(),
        });
        let _tasks = scenarios::spawn_readers(
            &reader_rt,
            t,
            &format!("bench-{run_id}-w{writers}-shared"),
            args.readers,
            Instant::now() + handshake_timeout,
            reader_end,
            rtx,
            delivered.clone(),
        );
        for _ in 0..args.readers {
            match rrx.recv_timeout(handshake_timeout + Duration::from_secs(1)) {
                Ok(ok) => readers_connected += usize::from(ok),
                Err(_) => break,
            }
        }
    }
    let mut handles = Vec::with_capacity(writers);
    for index in 0..writers {
        let document = if shared_doc {
            format!("bench-{run_id}-w{writers}-shared")
        } else {
            format!("bench-{run_id}-w{writers}-{index}")
        };
        let spec = WriterSpec {
            index,
            addr,
            url: args.url.clone(),
            document,
            in_flight: args.in_flight,
            handshake_timeout,
            drain_timeout: Duration::from_secs_f64(args.drain_timeout),
        };
        let (tx, sig) = (ready_tx.clone(), signal.clone());
        let handle = std::thread::Builder::new()
            .name(format!("writer-{index}"))
            .stack_size(512 * 1024)
            .spawn(move || writer::run(spec, tx, sig))
            .context("spawning a writer thread")?;
        handles.push(handle);
    }
    drop(ready_tx);

    // Wait (bounded) for every writer to be connected and synced.
    let deadline = Instant::now() + handshake_timeout + Duration::from_secs(2);
    let (mut reported, mut connected) = (0usize, 0usize);
    while reported < writers {
        let left = deadline.saturating_duration_since(Instant::now());
        match ready_rx.recv_timeout(left) {
            Ok(ok) => {
                reported += 1;
                connected += usize::from(ok);
            }
            Err(_) => break,
        }
    }
    let setup_ms = setup_started.elapsed().as_secs_f64() * 1000.0;
    let start = Instant::now() + Duration::from_millis(50);
    let measure_start = start + Duration::from_secs_f64(args.warmup);
    let measure_end = measure_start + Duration::from_secs_f64(args.seconds);
    {
        let (lock, cvar) = &*signal;
        *lock.lock().unwrap() = Some(Window {
            start,
            measure_start,
            measure_end,
            go: connected > 0,
        });
        cvar.notify_all();
    }

    let (mut cpu0, mut srv0) = (None, None);
    if connected > 0 {
        sleep_until(measure_start);
        cpu0 = machine::cpu_seconds(None);
        srv0 = args.server_pid.and_then(|p| machine::cpu_seconds(Some(p)));
        sleep_until(measure_end);
    }
    let cpu1 = machine::cpu_seconds(None);
    let srv1 = args.server_pid.and_then(|p| machine::cpu_seconds(Some(p)));
    let pct = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) => Some(round2((b - a) / args.seconds * 100.0)),
        _ => None,
    };
    let client_cpu_pct = pct(cpu0, cpu1).unwrap_or(0.0);
    let server_cpu_pct = pct(srv0, srv1);

    // Writers end on their own deadlines (window + drain + 1 s close); join them all.
    let mut results: Vec<WriterResult> = Vec::with_capacity(writers);
    for h in handles {
        results.push(h.join().unwrap_or_else(|_| WriterResult {
            errors: 1,
            notes: vec!["writer thread panicked".into()],
            ..WriterResult::default()
        }));
    }
    let mut latencies: Vec<u32> = Vec::new();
    let (mut errors, mut notes, mut unexpected) = (0u64, Vec::new(), 0usize);
    for r in &mut results {
        latencies.append(&mut r.latencies_us);
        errors += r.errors;
        notes.append(&mut r.notes);
        for u in &r.unexpected {
            if !notes.iter().any(|n| n.ends_with(u.as_str())) {
                notes.push(format!("unexpected frame: {u}"));
            }
        }
        unexpected += r.unexpected.len();
    }
    // Readers: stop them now (their end is only a bound); count what they received.
    let reader_deliveries = delivered.load(std::sync::atomic::Ordering::Relaxed);
    reader_rt.shutdown_timeout(Duration::from_millis(500));
    // Writers that never reported ready (stuck past the deadline) count as errors too.
    errors += (writers - reported.min(writers)) as u64;
    latencies.sort_unstable();
    let acked = latencies.len() as u64;
    let m = Measurement {
        scenario: args.scenario,
        store: store.to_string(),
        writers,
        connected,
        in_flight: args.in_flight,
        shared_doc,
        seconds: args.seconds,
        acked,
        acked_per_sec: round2(acked as f64 / args.seconds),
        p50_ms: round3(percentile_ms(&latencies, 0.50)),
        p99_ms: round3(percentile_ms(&latencies, 0.99)),
        max_ms: round3(percentile_ms(&latencies, 1.0)),
        errors,
        unexpected_frames: unexpected,
        client_cpu_pct,
        server_cpu_pct,
        setup_ms: round2(setup_ms),
        readers: args.readers,
        readers_connected,
        reader_deliveries,
    };
    Ok((m, notes))
}

fn run_event_driven(
    args: &Args,
    addr: SocketAddr,
    run_id: &str,
) -> anyhow::Result<serde_json::Value> {
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
    if args.subscribers > 10_000 || !(0.01..=10_000.0).contains(&args.rate) {
        bail!("--subscribers must be <= 10000 and --rate in [0.01, 10000]");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let target = Arc::new(scenarios::Target {
        addr,
        url: args.url.clone(),
    });
    let mut readers = Vec::new();
    for u in &args.reader_urls {
        let (a, _) = loopback_target(u)?;
        readers.push(Arc::new(scenarios::Target {
            addr: a,
            url: u.clone(),
        }));
    }
    let v = match args.scenario {
        Scenario::Ramp => rt.block_on(scenarios::ramp(
            target,
            scenarios::RampArgs {
                connections: args.connections,
                documents,
                concurrency: args.concurrency,
                timeout: Duration::from_secs_f64(args.setup_timeout),
                hold: Duration::from_secs_f64(args.hold),
                server_pid: args.server_pid,
            },
            run_id,
        )),
        Scenario::Fanout => rt.block_on(scenarios::fanout(
            target,
            readers,
            scenarios::FanoutArgs {
                documents,
                subscribers: args.subscribers,
                rate: args.rate,
                warmup: Duration::from_secs_f64(args.warmup),
                seconds: Duration::from_secs_f64(args.seconds),
                setup_timeout: Duration::from_secs_f64(args.setup_timeout),
                concurrency: args.concurrency,
                server_pid: args.server_pid,
            },
            run_id,
        )),
        Scenario::Churn => {
            let Some(server_pid) = args.server_pid else {
                bail!("--scenario churn reads the daemon's memory: give --server-pid");
            };
            rt.block_on(memory::churn(
                target,
                memory::ChurnArgs {
                    documents,
                    doc_bytes: args.doc_kib * 1024,
                    concurrency: args.concurrency,
                    setup_timeout: Duration::from_secs_f64(args.setup_timeout),
                    unload_timeout: Duration::from_secs_f64(args.unload_timeout),
                    settle: Duration::from_secs(args.settle),
                    server_pid,
                },
                run_id,
            ))
        }
        Scenario::Attack => {
            let Some(server_pid) = args.server_pid else {
                bail!("--scenario attack reads the daemon's memory: give --server-pid");
            };
            let mut v = attack::attack(
                addr,
                attack::AttackArgs {
                    duration: Duration::from_secs_f64(args.seconds),
                    server_pid,
                    stuck_readers: 20,
                    preauth_sockets: 80,
                    long_id_sockets: 20,
                    partial_frames: 20,
                    awareness_sockets: 10,
                    churn_threads: 4,
                },
            );
            // What is left once the attack is over and the documents unloaded.
            let probe = memory::Probe { pid: server_pid };
            rt.block_on(memory::wait_documents(
                &target,
                0,
                Duration::from_secs_f64(args.unload_timeout),
            ));
            let series = rt.block_on(probe.settle(Duration::from_secs(args.settle)));
            v["after_settle_rss_mib"] =
                serde_json::json!(series.last().map_or(0.0, |kb| *kb as f64 / 1024.0));
            v
        }
        Scenario::Throughput => unreachable!(),
    };
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(v)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
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
    let (addr, host) = loopback_target(&args.url)?;
    let health = machine::health(addr, &host);
    if health.is_none() {
        eprintln!("warning: no answer from http://{host}/health; continuing");
    }
    let m = machine::describe(health.as_ref());
    let store = args.store.clone().unwrap_or_else(|| m.store_kind.clone());

    eprintln!(
        "zedi-bench {} -> {} (store: {store})",
        m.bench_version, args.url
    );
    eprintln!(
        "machine: {} x{} cores, {} MiB RAM, Linux {}",
        m.cpu_model, m.cores, m.mem_total_mib, m.kernel
    );
    eprintln!(
        "rustc: {}; zedi-sync (server): {}",
        m.rustc, m.server_version
    );
    eprintln!(
        "scenario {:?}: in-flight {} per writer, {} document(s), warm-up {}s, measured {}s per writer count",
        args.scenario,
        args.in_flight,
        if args.shared_doc {
            "one shared"
        } else {
            "one per writer"
        },
        args.warmup,
        args.seconds
    );

    let mut out = match &args.out {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("opening {}", path.display()))?,
        ),
        None => None,
    };
    if let Some(f) = out.as_mut() {
        writeln!(f, "{}", serde_json::json!({ "machine": m }))?;
    }

    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    if !matches!(args.scenario, Scenario::Throughput) {
        let mut v = run_event_driven(&args, addr, &run_id)?;
        v["store"] = serde_json::Value::String(store.clone());
        v["server_version"] = serde_json::Value::String(m.server_version.clone());
        let line = serde_json::to_string(&v)?;
        println!("{line}");
        if let Some(f) = out.as_mut() {
            writeln!(f, "{line}")?;
        }
        eprintln!();
        if let Some(obj) = v.as_object() {
            for (k, val) in obj {
                eprintln!("  {k:<28} {val}");
            }
        }
        return Ok(());
    }
    let mut rows = Vec::new();
    for (i, &w) in args.writers.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_secs_f64(args.pause));
        }
        eprintln!("... {w} writer(s)");
        let (meas, notes) = run_throughput(&args, addr, &store, &run_id, w)?;
        for n in notes.iter().take(10) {
            eprintln!("    note: {n}");
        }
        if notes.len() > 10 {
            eprintln!("    ({} more notes)", notes.len() - 10);
        }
        let line = serde_json::to_string(&meas)?;
        println!("{line}");
        if let Some(f) = out.as_mut() {
            writeln!(f, "{line}")?;
        }
        rows.push(meas);
    }

    eprintln!();
    eprintln!(
        "{:<10} {:>8} {:>7} {:>9} {:>11} {:>9} {:>9} {:>9} {:>7} {:>8} {:>8}",
        "store",
        "readers",
        "writers",
        "in-flight",
        "acked/s",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "bench%",
        "server%"
    );
    for r in &rows {
        eprintln!(
            "{:<10} {:>8} {:>7} {:>9} {:>11.1} {:>9.2} {:>9.2} {:>9.2} {:>7} {:>8.1} {:>8}",
            r.store,
            r.readers,
            r.writers,
            r.in_flight,
            r.acked_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.max_ms,
            r.errors,
            r.client_cpu_pct,
            r.server_cpu_pct.map_or("-".into(), |p| format!("{p:.1}"))
        );
    }
    Ok(())
}
