//! The many-socket scenarios on a tokio runtime: `ramp` (C idle synced connections over D
//! documents, memory per connection) and `fanout` (K documents × S subscribers, one writer per
//! document at R updates/s, send → receive latency from a stamp inside the update's text).
//! With `--reader-urls`, subscribers connect to those nodes and the writers to `--url`
//! (cross-node).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use yrs::{Doc, Text, TextRef, Transact};
use zedi_protocol::protocol::{Message, PONG_FRAME, Packet, SyncMessage, decode, encode};

use crate::aconn::{self, Conn, SubResult};
use crate::machine;

pub struct Target {
    pub addr: SocketAddr,
    pub url: String,
}

fn pct(sorted: &[u32], q: f64) -> f64 {
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
        let (t, gate, tx, mut stop) = (t.clone(), gate.clone(), synced_tx.clone(), stop_rx.clone());
        let doc = format!("ramp-{run_id}-{}", i % a.documents.max(1));
        tasks.push(tokio::spawn(async move {
            let permit = gate.acquire_owned().await;
            let t0 = Instant::now();
            let conn = Conn::open(t.addr, &t.url, doc, setup_deadline).await;
            drop(permit);
            let mut conn = match conn {
                Ok(c) => {
                    let _ = tx.send(Ok(t0.elapsed().as_micros().min(u32::MAX as u128) as u32));
                    c
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return None;
                }
            };
            drop(tx);
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
        }));
    }
    drop(synced_tx);
    let (mut hs, mut errors, mut notes) = (Vec::with_capacity(a.connections), 0usize, Vec::new());
    while hs.len() + errors < a.connections {
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
        "notes": notes,
    })
}

pub struct FanoutArgs {
    pub documents: usize,
    pub subscribers: usize,
    pub rate: f64,
    pub warmup: Duration,
    pub seconds: Duration,
    pub setup_timeout: Duration,
    pub concurrency: usize,
    pub server_pid: Option<u32>,
}

struct WriterOut {
    sent: u64,
    acked: u64,
    ack_us: Vec<u32>,
    error: Option<String>,
}

/// One writer per document: connects to `t`, handshakes, then sends one stamped update every
/// 1/rate s from `start` to `end` (open loop: it does not wait for acks), reading acks meanwhile.
#[allow(clippy::too_many_arguments)]
async fn fan_writer(
    t: Arc<Target>,
    doc: String,
    client_id: u64,
    rate: f64,
    phase: f64,
    epoch: Instant,
    setup_deadline: Instant,
    start: Instant,
    end: Instant,
    window_us: (u64, u64),
) -> WriterOut {
    let mut out = WriterOut {
        sent: 0,
        acked: 0,
        ack_us: Vec::new(),
        error: None,
    };
    let mut conn = match Conn::connect(t.addr, &t.url, doc.clone(), setup_deadline).await {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    if let Err(e) = conn.handshake(setup_deadline).await {
        out.error = Some(e);
        return out;
    }
    let ydoc = Doc::with_client_id(client_id);
    let text: TextRef = ydoc.get_or_insert_text("default");
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    // Writers' phases spread evenly over the period (`phase` is this writer's fraction), so
    // the load is steady instead of one burst per period.
    let phase = Duration::from_secs_f64(period.as_secs_f64() * phase);
    let mut next = start + phase;
    let drain_end = end + Duration::from_secs(3);
    let mut sent_at: std::collections::VecDeque<u64> = Default::default();
    loop {
        let now = Instant::now();
        if now >= drain_end || (now >= end && sent_at.is_empty()) {
            break;
        }
        let wake = if now < end {
            next.min(drain_end)
        } else {
            drain_end
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {
                if Instant::now() < end && Instant::now() >= next {
                    let us = aconn::now_us(epoch);
                    let update = {
                        let mut txn = ydoc.transact_mut();
                        let len = text.len(&txn);
                        text.insert(&mut txn, len, &aconn::stamp(us));
                        txn.encode_update_v1()
                    };
                    let frame = encode(&doc, &Message::Sync(SyncMessage::Update(&update)));
                    if let Err(e) = conn.send(frame, drain_end).await {
                        out.error = Some(e);
                        break;
                    }
                    out.sent += 1;
                    sent_at.push_back(us);
                    next += period;
                    if next < Instant::now() { next = Instant::now(); } // fell behind: no burst
                }
            }
            _ = conn.readable() => {
                loop {
                    match conn.try_frame() {
                        Ok(Some(f)) => match decode(&f) {
                            Ok(Packet::Ping) => { let _ = conn.send(PONG_FRAME.to_vec(), drain_end).await; }
                            Ok(Packet::Message { message: Message::SyncStatus(ok), .. }) => {
                                let at = aconn::now_us(epoch);
                                if let Some(s) = sent_at.pop_front() && ok {
                                    out.acked += 1;
                                    if s >= window_us.0 && s < window_us.1 {
                                        out.ack_us.push(at.saturating_sub(s).min(u32::MAX as u64) as u32);
                                    }
                                }
                            }
                            _ => {}
                        },
                        Ok(None) => break,
                        Err(e) => { out.error = Some(e); break; }
                    }
                }
                if out.error.is_some() { break; }
            }
        }
    }
    conn.close();
    out
}

/// K documents × S subscribers + one writer per document (writers on `t`, subscribers on
/// `readers` round-robin, or on `t` too when empty).
pub async fn fanout(
    t: Arc<Target>,
    readers: Vec<Arc<Target>>,
    a: FanoutArgs,
    run_id: &str,
) -> Value {
    let epoch = Instant::now();
    let setup_deadline = epoch + a.setup_timeout;
    // Subscribers first; writers start once every subscriber is in (or setup timed out).
    let gate = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let nsubs = a.documents * a.subscribers;
    // The window is fixed after setup; subscribers learn it through a watch channel.
    let (win_tx, win_rx) =
        tokio::sync::watch::channel::<Option<(Instant, (u64, u64), Instant)>>(None);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let mut subs = Vec::with_capacity(nsubs);
    for i in 0..nsubs {
        let target = if readers.is_empty() {
            t.clone()
        } else {
            readers[i % readers.len()].clone()
        };
        let doc = format!("fan-{run_id}-{}", i % a.documents);
        let (gate, ready, mut win) = (gate.clone(), ready_tx.clone(), win_rx.clone());
        subs.push(tokio::spawn(async move {
            // Hand-rolled subscriber: handshake under the gate, then receive in the window.
            let permit = gate.acquire_owned().await;
            let t0 = Instant::now();
            let c = Conn::open(target.addr, &target.url, doc, setup_deadline).await;
            drop(permit);
            let _ = ready.send(c.is_ok());
            let mut r = SubResult::default();
            let mut conn = match c {
                Ok(c) => c,
                Err(e) => {
                    r.error = Some(e);
                    return r;
                }
            };
            r.connected = true;
            r.handshake_us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
            let _ = tokio::time::timeout_at(
                (setup_deadline + Duration::from_secs(5)).into(),
                win.wait_for(|w| w.is_some()),
            )
            .await;
            let Some((_, window_us, end)) = *win.borrow() else {
                conn.close();
                return r;
            };
            aconn::receive(
                &mut conn,
                &mut r,
                epoch,
                window_us,
                end,
                None,
                aconn::Count::Stamp,
            )
            .await;
            conn.close();
            r
        }));
    }
    drop(ready_tx);
    let mut ready = 0usize;
    while ready < nsubs {
        match tokio::time::timeout_at(setup_deadline.into(), ready_rx.recv()).await {
            Ok(Some(_)) => ready += 1,
            _ => break,
        }
    }
    let setup_ms = epoch.elapsed().as_secs_f64() * 1000.0;
    // Writers: connect now, start sending 0.5 s later.
    let start = Instant::now() + Duration::from_millis(500);
    let measure_start = start + a.warmup;
    let end = measure_start + a.seconds;
    let window_us = (
        measure_start.duration_since(epoch).as_micros() as u64,
        end.duration_since(epoch).as_micros() as u64,
    );
    // Subscribers listen 2 s past the window for late deliveries.
    let _ = win_tx.send(Some((start, window_us, end + Duration::from_secs(2))));
    let wdeadline = Instant::now() + Duration::from_secs(10).min(a.setup_timeout);
    let writers: Vec<_> = (0..a.documents)
        .map(|d| {
            tokio::spawn(fan_writer(
                t.clone(),
                format!("fan-{run_id}-{d}"),
                0x5AEE_0000 + d as u64,
                a.rate,
                d as f64 / a.documents as f64,
                epoch,
                wdeadline,
                start,
                end,
                window_us,
            ))
        })
        .collect();
    tokio::time::sleep_until(measure_start.into()).await;
    let c0 = CpuMark::now(a.server_pid);
    tokio::time::sleep_until(end.into()).await;
    let c1 = CpuMark::now(a.server_pid);
    let (bench_cpu, server_cpu) = c1.since(&c0);
    let (mut sent, mut acked, mut ack_us, mut werr, mut notes) =
        (0u64, 0u64, Vec::new(), 0usize, Vec::<String>::new());
    for w in writers {
        if let Ok(mut o) = w.await {
            sent += o.sent;
            acked += o.acked;
            ack_us.append(&mut o.ack_us);
            if let Some(e) = o.error {
                werr += 1;
                if notes.len() < 5 {
                    notes.push(format!("writer: {e}"));
                }
            }
        }
    }
    let (mut lat, mut deliveries, mut connected, mut serr, mut hs) =
        (Vec::new(), 0u64, 0usize, 0usize, Vec::new());
    for s in subs {
        if let Ok(mut r) = s.await {
            connected += usize::from(r.connected);
            if r.connected {
                hs.push(r.handshake_us);
            }
            deliveries += r.deliveries;
            lat.append(&mut r.latencies_us);
            if let Some(e) = r.error {
                serr += 1;
                if notes.len() < 10 {
                    notes.push(format!("subscriber: {e}"));
                }
            }
        }
    }
    lat.sort_unstable();
    ack_us.sort_unstable();
    hs.sort_unstable();
    let secs = a.seconds.as_secs_f64();
    // Expected deliveries: every update sent in the window × the subscribers of its document.
    let expected = (a.rate * secs) * (a.documents * a.subscribers) as f64;
    json!({
        "scenario": if readers.is_empty() { "fanout" } else { "cross-node" },
        "documents": a.documents,
        "subscribers_per_doc": a.subscribers,
        "rate_per_doc": a.rate,
        "subscribers_connected": connected,
        "setup_ms": (setup_ms * 10.0).round() / 10.0,
        "handshake_p50_ms": pct(&hs, 0.5),
        "handshake_p99_ms": pct(&hs, 0.99),
        "seconds": secs,
        "updates_sent": sent,
        "updates_acked": acked,
        "deliveries": deliveries,
        "deliveries_expected_approx": expected.round(),
        "deliveries_per_sec": (deliveries as f64 / secs * 10.0).round() / 10.0,
        "p50_ms": pct(&lat, 0.5),
        "p99_ms": pct(&lat, 0.99),
        "max_ms": pct(&lat, 1.0),
        "ack_p50_ms": pct(&ack_us, 0.5),
        "ack_p99_ms": pct(&ack_us, 0.99),
        "errors": werr + serr + (nsubs - connected).saturating_sub(serr),
        "client_cpu_pct": bench_cpu,
        "server_cpu_pct": server_cpu,
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
