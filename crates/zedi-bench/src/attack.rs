//! Scenario `attack`: every known way for clients to make the server hold memory, all at once, against one daemon, while an
//! honest editor keeps typing. Reports the daemon's peak RSS (sampled from /proc every 250 ms,
//! and VmHWM), the budget's fill as its /metrics said, what was shed, and how the honest editor
//! fared (acknowledged keystrokes, latency, disconnects).
//!
//! The attackers (each reconnects whenever the daemon closes it, until the end):
//! - stuck readers: sockets on a busy document (a writer inserts and deletes 40 KB per update,
//!   so broadcasts are large and the document stays small) that never read;
//! - pre-auth floods: sockets from ten forwarded addresses, each queueing ~7.5 MiB for a
//!   document it never authenticates, then answering pings;
//! - long session ids: Auth with a 4 MiB address;
//! - partial frames: a 30 MiB frame header, 20 MiB of it, then nothing;
//! - big awareness: an 8 MiB awareness state on an authenticated document;
//! - document churn: 110 KB documents opened, filled and left, round-robin over 150 names.
//!
//! Blocking threads with tungstenite: the attack is about what the server holds, not about
//! client efficiency. Loopback only (the caller checked the URL).

mod clients;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::scenarios::status_kb;
use clients::{Counters, HonestResult, Shared};

const MIB: usize = 1024 * 1024;

pub struct AttackArgs {
    pub duration: Duration,
    pub server_pid: u32,
    pub stuck_readers: usize,
    pub preauth_sockets: usize,
    pub long_id_sockets: usize,
    pub partial_frames: usize,
    pub awareness_sockets: usize,
    pub churn_threads: usize,
}

/// Sum of `zedi_memory_budget_used_bytes` over holders, each holder (MiB), and every
/// `zedi_memory_sheds_total`.
fn scrape(addr: SocketAddr) -> Option<(u64, Value, Value)> {
    let body = crate::machine::http_get(addr, "/metrics")?;
    let mut used = 0.0;
    let mut sheds = serde_json::Map::new();
    let mut holders = serde_json::Map::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("zedi_memory_budget_used_bytes{holder=\"") {
            let (holder, value) = rest.split_once("\"} ")?;
            let bytes = value.trim().parse::<f64>().unwrap_or(0.0);
            used += bytes;
            holders.insert(
                holder.to_string(),
                json!((bytes / MIB as f64 * 10.0).round() / 10.0),
            );
        }
        if let Some(rest) = line.strip_prefix("zedi_memory_sheds_total{reason=\"") {
            let (reason, value) = rest.split_once("\"} ")?;
            sheds.insert(
                reason.to_string(),
                json!(value.trim().parse::<f64>().unwrap_or(0.0)),
            );
        }
    }
    Some((used as u64, Value::Object(holders), Value::Object(sheds)))
}

fn pct(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

/// One attacker's loop, given its instance number.
type Attacker = fn(&Shared, usize);

/// The honest editor, the busy writer and every attacker, each on its own thread.
fn spawn_all(
    shared: &Arc<Shared>,
    honest: &Arc<Mutex<HonestResult>>,
    args: &AttackArgs,
) -> Vec<JoinHandle<()>> {
    let mut threads = Vec::new();
    let mut spawn = |f: Box<dyn FnOnce() + Send>| threads.push(std::thread::spawn(f));
    {
        let (s, h) = (Arc::clone(shared), Arc::clone(honest));
        spawn(Box::new(move || clients::honest_editor(&s, &h)));
    }
    let s = Arc::clone(shared);
    spawn(Box::new(move || clients::busy_writer(&s)));
    // Each kind of attacker, how many of it, and its n-th instance.
    let attackers: [(usize, Attacker); 5] = [
        (args.stuck_readers, |s, _| clients::stuck_reader(s)),
        (args.preauth_sockets, clients::preauth_flooder),
        (args.long_id_sockets, |s, _| clients::long_session_id(s)),
        (args.partial_frames, |s, _| clients::partial_frame(s)),
        (args.awareness_sockets, clients::big_awareness),
    ];
    for (count, attacker) in attackers {
        for n in 0..count {
            let s = Arc::clone(shared);
            spawn(Box::new(move || attacker(&s, n)));
        }
    }
    for t in 0..args.churn_threads {
        let (s, n) = (Arc::clone(shared), args.churn_threads);
        spawn(Box::new(move || clients::churn(&s, t, n)));
    }
    threads
}

/// The peaks seen while the attack ran.
struct Peaks {
    rss_kb: u64,
    budget: u64,
    samples: u64,
    holders_at_peak: Value,
}

/// Samples while the attack runs: RSS every 250 ms, the budget every second.
fn sample(addr: SocketAddr, args: &AttackArgs) -> Peaks {
    let started = Instant::now();
    let mut p = Peaks {
        rss_kb: 0,
        budget: 0,
        samples: 0,
        holders_at_peak: Value::Null,
    };
    let mut last_scrape = Instant::now() - Duration::from_secs(1);
    while started.elapsed() < args.duration {
        if let Some(kb) = status_kb(args.server_pid, "VmRSS") {
            p.rss_kb = p.rss_kb.max(kb);
            p.samples += 1;
        } else {
            break; // the daemon is gone: reported below
        }
        if last_scrape.elapsed() >= Duration::from_secs(1) {
            last_scrape = Instant::now();
            if let Some((used, holders, _)) = scrape(addr)
                && used > p.budget
            {
                p.budget = used;
                p.holders_at_peak = holders;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    p
}

pub fn attack(addr: SocketAddr, args: AttackArgs) -> Value {
    let shared = Arc::new(Shared {
        addr,
        stop: AtomicBool::new(false),
        counters: Counters::default(),
    });
    let honest = Arc::new(Mutex::new(HonestResult::default()));
    let baseline_kb = status_kb(args.server_pid, "VmRSS").unwrap_or(0);
    let threads = spawn_all(&shared, &honest, &args);
    let peaks = sample(addr, &args);
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let alive = status_kb(args.server_pid, "VmRSS").is_some();
    let hwm_kb = status_kb(args.server_pid, "VmHWM").unwrap_or(0);
    let sheds = scrape(addr).map_or(Value::Null, |(_, _, s)| s);
    let h = clients::lock(&honest);
    let mut lat = h.latencies_us.clone();
    lat.sort_unstable();
    let c = &shared.counters;
    json!({
        "scenario": "attack",
        "seconds": args.duration.as_secs(),
        "daemon_alive": alive,
        "baseline_rss_mib": baseline_kb as f64 / 1024.0,
        "peak_rss_mib": peaks.rss_kb as f64 / 1024.0,
        "vm_hwm_mib": hwm_kb as f64 / 1024.0,
        "rss_samples": peaks.samples,
        "peak_budget_used_mib": peaks.budget as f64 / MIB as f64,
        "budget_at_peak_mib": peaks.holders_at_peak,
        "sheds": sheds,
        "attackers": {
            "stuck_readers": args.stuck_readers,
            "preauth_sockets": args.preauth_sockets,
            "long_id_sockets": args.long_id_sockets,
            "partial_frames": args.partial_frames,
            "awareness_sockets": args.awareness_sockets,
            "churn_threads": args.churn_threads,
            "connects": c.connects.load(Ordering::Relaxed),
            "refused_at_upgrade": c.refused.load(Ordering::Relaxed),
            "closed_by_server": c.closed_by_server.load(Ordering::Relaxed),
        },
        "honest": {
            "acked": lat.len(),
            "failures": h.failures,
            "reconnects": h.reconnects,
            "ack_p50_ms": pct(&lat, 0.5),
            "ack_p99_ms": pct(&lat, 0.99),
            "ack_max_ms": lat.last().map_or(0.0, |v| *v as f64 / 1000.0),
        },
    })
}
