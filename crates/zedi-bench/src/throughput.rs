//! Scenario `throughput`: W writer threads in a closed loop (`writer`), optionally with passive
//! readers on the shared document; one [`Measurement`] per writer count.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::args::{Args, Scenario};
use crate::writer::{self, StartSignal, Window, WriterResult, WriterSpec};
use crate::{machine, scenarios};

#[derive(Debug, Serialize)]
pub struct Measurement {
    scenario: Scenario,
    pub store: String,
    pub writers: usize,
    connected: usize,
    pub in_flight: usize,
    shared_doc: bool,
    seconds: f64,
    acked: u64,
    pub acked_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    unexpected_frames: usize,
    /// CPU time of this generator over the window / wall time; 100 = one core busy.
    pub client_cpu_pct: f64,
    pub server_cpu_pct: Option<f64>,
    /// The server's CPU seconds over the window, unrounded (per-delivery costs divide it).
    server_cpu_s: Option<f64>,
    /// Time for all writers to connect and finish the handshake.
    setup_ms: f64,
    pub readers: usize,
    readers_connected: usize,
    /// Sync/Update frames the readers received over the whole run (warm-up and drain included).
    reader_deliveries: u64,
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

/// The passive readers of one run: their runtime (kept alive until the run ends), how many
/// connected, and the deliveries they count.
struct Readers {
    runtime: tokio::runtime::Runtime,
    connected: usize,
    delivered: Arc<AtomicU64>,
}

/// Readers first (event-driven, on their own runtime), all in before the writers start.
fn start_readers(args: &Args, addr: SocketAddr, document: &str) -> anyhow::Result<Readers> {
    let handshake_timeout = Duration::from_secs_f64(args.handshake_timeout);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let reader_end = Instant::now()
        + handshake_timeout
        + Duration::from_secs_f64(args.warmup + args.seconds + args.drain_timeout + 3.0);
    let delivered = Arc::new(AtomicU64::new(0));
    let mut connected = 0usize;
    if args.readers > 0 {
        let (rtx, rrx) = mpsc::channel();
        let t = Arc::new(scenarios::Target {
            addr,
            url: args.url.clone(),
        });
        let _tasks = scenarios::spawn_readers(
            &runtime,
            t,
            document,
            args.readers,
            Instant::now() + handshake_timeout,
            reader_end,
            rtx,
            delivered.clone(),
        );
        for _ in 0..args.readers {
            match rrx.recv_timeout(handshake_timeout + Duration::from_secs(1)) {
                Ok(ok) => connected += usize::from(ok),
                Err(_) => break,
            }
        }
    }
    Ok(Readers {
        runtime,
        connected,
        delivered,
    })
}

/// One thread per writer, each on its own document unless `shared_doc`.
fn spawn_writers(
    args: &Args,
    addr: SocketAddr,
    documents: (&str, bool),
    writers: usize,
    ready_tx: &mpsc::Sender<bool>,
    signal: &StartSignal,
) -> anyhow::Result<Vec<JoinHandle<WriterResult>>> {
    let (prefix, shared_doc) = documents;
    let mut handles = Vec::with_capacity(writers);
    for index in 0..writers {
        let document = if shared_doc {
            format!("{prefix}-shared")
        } else {
            format!("{prefix}-{index}")
        };
        let spec = WriterSpec {
            index,
            addr,
            url: args.url.clone(),
            document,
            in_flight: args.in_flight,
            handshake_timeout: Duration::from_secs_f64(args.handshake_timeout),
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
    Ok(handles)
}

/// Waits (bounded) for every writer to be connected and synced: (reported, connected).
fn wait_ready(
    ready_rx: &mpsc::Receiver<bool>,
    writers: usize,
    deadline: Instant,
) -> (usize, usize) {
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
    (reported, connected)
}

/// CPU use over the measurement window.
struct WindowCpu {
    client_pct: f64,
    server_pct: Option<f64>,
    server_s: Option<f64>,
}

/// Tells every writer the window (or not to start), then sleeps through it reading the CPU
/// time of this process and the server.
fn run_window(args: &Args, signal: &StartSignal, connected: usize) -> WindowCpu {
    let start = Instant::now() + Duration::from_millis(50);
    let measure_start = start + Duration::from_secs_f64(args.warmup);
    let measure_end = measure_start + Duration::from_secs_f64(args.seconds);
    {
        let (lock, cvar) = &**signal;
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
    WindowCpu {
        client_pct: pct(cpu0, cpu1).unwrap_or(0.0),
        server_pct: pct(srv0, srv1),
        server_s: srv0.zip(srv1).map(|(a, b)| round3(b - a)),
    }
}

/// What the writers measured together.
struct Joined {
    latencies: Vec<u32>,
    errors: u64,
    notes: Vec<String>,
    unexpected: usize,
}

/// Writers end on their own deadlines (window + drain + 1 s close); joins them all.
fn join_writers(handles: Vec<JoinHandle<WriterResult>>) -> Joined {
    let mut joined = Joined {
        latencies: Vec::new(),
        errors: 0,
        notes: Vec::new(),
        unexpected: 0,
    };
    for h in handles {
        let mut r = h.join().unwrap_or_else(|_| WriterResult {
            errors: 1,
            notes: vec!["writer thread panicked".into()],
            ..WriterResult::default()
        });
        joined.latencies.append(&mut r.latencies_us);
        joined.errors += r.errors;
        joined.notes.append(&mut r.notes);
        for u in &r.unexpected {
            if !joined.notes.iter().any(|n| n.ends_with(u.as_str())) {
                joined.notes.push(format!("unexpected frame: {u}"));
            }
        }
        joined.unexpected += r.unexpected.len();
    }
    joined.latencies.sort_unstable();
    joined
}

/// One measurement with `writers` writers, and the notes the writers left.
pub fn run_throughput(
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
    let prefix = format!("bench-{run_id}-w{writers}");
    let readers = start_readers(args, addr, &format!("{prefix}-shared"))?;
    let handles = spawn_writers(
        args,
        addr,
        (&prefix, shared_doc),
        writers,
        &ready_tx,
        &signal,
    )?;
    drop(ready_tx);
    let deadline = Instant::now() + handshake_timeout + Duration::from_secs(2);
    let (reported, connected) = wait_ready(&ready_rx, writers, deadline);
    let setup_ms = setup_started.elapsed().as_secs_f64() * 1000.0;
    let cpu = run_window(args, &signal, connected);
    let joined = join_writers(handles);
    // Readers: stop them now (their end is only a bound); count what they received.
    let reader_deliveries = readers.delivered.load(Ordering::Relaxed);
    readers.runtime.shutdown_timeout(Duration::from_millis(500));
    // Writers that never reported ready (stuck past the deadline) count as errors too.
    let errors = joined.errors + (writers - reported.min(writers)) as u64;
    let latencies = &joined.latencies;
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
        p50_ms: round3(percentile_ms(latencies, 0.50)),
        p99_ms: round3(percentile_ms(latencies, 0.99)),
        max_ms: round3(percentile_ms(latencies, 1.0)),
        errors,
        unexpected_frames: joined.unexpected,
        client_cpu_pct: cpu.client_pct,
        server_cpu_pct: cpu.server_pct,
        server_cpu_s: cpu.server_s,
        setup_ms: round2(setup_ms),
        readers: args.readers,
        readers_connected: readers.connected,
        reader_deliveries,
    };
    Ok((m, joined.notes))
}

/// The human table on stderr, one row per measurement.
pub fn print_table(rows: &[Measurement]) {
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
    for r in rows {
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
}
