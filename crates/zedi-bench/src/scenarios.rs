//! The many-socket scenarios on a tokio runtime share this: the target, CPU and memory readings,
//! the throughput scenario's passive readers, and `ramp` (C idle synced connections over D
//! documents, memory per connection). `fanout` is in its own module.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use zedi_protocol::protocol::{PONG_FRAME, Packet, decode};

use crate::aconn::{self, Conn, SubResult};
use crate::machine;

pub struct Target {
    pub addr: SocketAddr,
    pub url: String,
}

pub fn pct(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    (sorted[rank - 1] as f64 / 10.0).round() / 100.0
}

pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(key) && l[key.len()..].starts_with(':'))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU% of this process and of the server over `[a, b]` (100 = one core).
pub struct CpuMark {
    at: Instant,
    me: Option<f64>,
    srv: Option<f64>,
}

impl CpuMark {
    pub fn now(pid: Option<u32>) -> CpuMark {
        CpuMark {
            at: Instant::now(),
            me: machine::cpu_seconds(None),
            srv: pid.and_then(|p| machine::cpu_seconds(Some(p))),
        }
    }
    pub fn since(&self, earlier: &CpuMark) -> (Option<f64>, Option<f64>) {
        let secs = self.at.duration_since(earlier.at).as_secs_f64().max(1e-6);
        let f = |a: Option<f64>, b: Option<f64>| {
            a.zip(b)
                .map(|(a, b)| ((b - a) / secs * 1000.0).round() / 10.0)
        };
        (f(earlier.me, self.me), f(earlier.srv, self.srv))
    }
    /// The server's CPU seconds over `[earlier, self]`, unrounded (per-delivery costs divide it).
    pub fn server_seconds_since(&self, earlier: &CpuMark) -> Option<f64> {
        earlier
            .srv
            .zip(self.srv)
            .map(|(a, b)| ((b - a) * 1000.0).round() / 1000.0)
    }
}

/// One ramp connection: handshakes (under `gate`), reports its handshake time on `synced`, then
/// idles answering pings until told to stop or `hold_until`. Returns what broke it while idle.
async fn idle_connection(
    t: Arc<Target>,
    doc: String,
    gate: Arc<Semaphore>,
    synced: tokio::sync::mpsc::UnboundedSender<Result<u32, String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    (setup_deadline, hold_until): (Instant, Instant),
) -> Option<String> {
    let permit = gate.acquire_owned().await;
    let t0 = Instant::now();
    let conn = Conn::open(t.addr, &t.url, doc, setup_deadline).await;
    drop(permit);
    let mut conn = match conn {
        Ok(c) => {
            let _ = synced.send(Ok(t0.elapsed().as_micros().min(u32::MAX as u128) as u32));
            c
        }
        Err(e) => {
            let _ = synced.send(Err(e));
            return None;
        }
    };
    drop(synced);
    // Idle: answer pings, drop everything else, until told to stop (bounded).
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep_until(hold_until.into()) => break,
            _ = conn.readable() => {
                loop {
                    match conn.try_frame() {
                        Ok(Some(f)) => {
                            if matches!(decode(&f), Ok(Packet::Ping)) &&
                                conn.send(PONG_FRAME.to_vec(), hold_until).await.is_err() {
                                return Some("pong failed".to_string());
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return Some(e),
                    }
                }
            }
        }
    }
    conn.close();
    None
}

/// Handshake times (µs) until every connection reported or the setup deadline; failures are
/// counted, the first five kept as notes.
async fn collect_handshakes(
    synced_rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<u32, String>>,
    connections: usize,
    setup_deadline: Instant,
) -> (Vec<u32>, usize, Vec<String>) {
    let (mut hs, mut errors, mut notes) = (Vec::with_capacity(connections), 0usize, Vec::new());
    while hs.len() + errors < connections {
        match tokio::time::timeout_at(setup_deadline.into(), synced_rx.recv()).await {
            Ok(Some(Ok(us))) => hs.push(us),
            Ok(Some(Err(e))) => {
                errors += 1;
                if notes.len() < 5 {
                    notes.push(e);
                }
            }
            _ => break,
        }
    }
    (hs, errors, notes)
}

pub struct RampArgs {
    pub connections: usize,
    pub documents: usize,
    pub concurrency: usize,
    pub timeout: Duration,
    pub hold: Duration,
    pub server_pid: Option<u32>,
}

/// Opens C connections (at most `concurrency` handshaking at once), each Auth + sync on one of D
/// documents, keeps them all open and answering pings for `hold`, reads the server's RSS.
pub async fn ramp(t: Arc<Target>, a: RampArgs, run_id: &str) -> Value {
    let rss_before = a.server_pid.and_then(|p| status_kb(p, "VmRSS"));
    let started = Instant::now();
    let setup_deadline = started + a.timeout;
    let hold_until = setup_deadline + a.hold + Duration::from_secs(5);
    let cpu0 = CpuMark::now(a.server_pid);
    let gate = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let (synced_tx, mut synced_rx) = tokio::sync::mpsc::unbounded_channel::<Result<u32, String>>();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::with_capacity(a.connections);
    for i in 0..a.connections {
        let (t, gate, tx, stop) = (t.clone(), gate.clone(), synced_tx.clone(), stop_rx.clone());
        let doc = format!("ramp-{run_id}-{}", i % a.documents.max(1));
        tasks.push(tokio::spawn(idle_connection(
            t,
            doc,
            gate,
            tx,
            stop,
            (setup_deadline, hold_until),
        )));
    }
    drop(synced_tx);
    let (mut hs, errors, mut notes) =
        collect_handshakes(&mut synced_rx, a.connections, setup_deadline).await;
    let all_synced_ms = started.elapsed().as_secs_f64() * 1000.0;
    let cpu1 = CpuMark::now(a.server_pid);
    let rss_synced = a.server_pid.and_then(|p| status_kb(p, "VmRSS"));
    tokio::time::sleep(a.hold).await;
    let rss_after = a.server_pid.and_then(|p| status_kb(p, "VmRSS"));
    let hwm = a.server_pid.and_then(|p| status_kb(p, "VmHWM"));
    let _ = stop_tx.send(true);
    let mut late_errors = 0usize;
    for task in tasks {
        if let Ok(Some(e)) = task.await {
            late_errors += 1;
            if notes.len() < 8 {
                notes.push(format!("while idle: {e}"));
            }
        }
    }
    hs.sort_unstable();
    let synced = hs.len();
    let (bench_cpu, server_cpu) = cpu1.since(&cpu0);
    let per_conn = match (rss_before, rss_after) {
        (Some(b), Some(a)) if synced > 0 => {
            Some(((a as f64 - b as f64) / synced as f64 * 100.0).round() / 100.0)
        }
        _ => None,
    };
    json!({
        "scenario": "ramp",
        "connections": a.connections,
        "documents": a.documents,
        "concurrency": a.concurrency,
        "synced": synced,
        "errors": errors + (a.connections - synced - errors) + late_errors,
        "idle_errors": late_errors,
        "all_synced_ms": (all_synced_ms * 10.0).round() / 10.0,
        "complete": synced == a.connections,
        "handshake_p50_ms": pct(&hs, 0.5),
        "handshake_p99_ms": pct(&hs, 0.99),
        "handshake_max_ms": pct(&hs, 1.0),
        "server_rss_before_kb": rss_before,
        "server_rss_synced_kb": rss_synced,
        "server_rss_after_kb": rss_after,
        "server_rss_peak_kb": hwm,
        "rss_per_connection_kb": per_conn,
        "hold_s": a.hold.as_secs_f64(),
        "client_cpu_pct": bench_cpu,
        "server_cpu_pct": server_cpu,
        "server_cpu_s": cpu1.server_seconds_since(&cpu0),
        "notes": notes,
    })
}

/// Passive readers of one document for the throughput scenario (counted deliveries only).
// A benchmark worker's whole configuration, set once per run by its one caller.
#[allow(clippy::too_many_arguments)]
pub fn spawn_readers(
    rt: &tokio::runtime::Runtime,
    t: Arc<Target>,
    doc: &str,
    n: usize,
    setup_deadline: Instant,
    end: Instant,
    ready: std::sync::mpsc::Sender<bool>,
    counter: Arc<std::sync::atomic::AtomicU64>,
) -> Vec<tokio::task::JoinHandle<SubResult>> {
    let epoch = Instant::now();
    (0..n)
        .map(|_| {
            rt.spawn(aconn::subscriber(
                t.addr,
                t.url.clone(),
                doc.to_string(),
                epoch,
                setup_deadline,
                (0, u64::MAX),
                end,
                Some(ready.clone()),
                Some(counter.clone()),
            ))
        })
        .collect()
}
