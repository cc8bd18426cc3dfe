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

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message as WsMessage, WebSocket};
use yrs::{Doc, Text, Transact};
use zedi_protocol::protocol::{AuthMessage, Message, Packet, SyncMessage, decode, encode};

use crate::scenarios::status_kb;

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

/// What the attackers did, counted across threads.
#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    refused: AtomicU64,
    closed_by_server: AtomicU64,
}

struct Shared {
    addr: SocketAddr,
    stop: AtomicBool,
    counters: Counters,
}

type Socket = WebSocket<TcpStream>;

fn connect(shared: &Shared, forwarded_for: Option<&str>) -> Option<Socket> {
    let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
        "ws://{}/",
        shared.addr
    ))
    .ok()?;
    if let Some(ip) = forwarded_for {
        request
            .headers_mut()
            .insert("x-forwarded-for", ip.parse().ok()?);
    }
    let stream = TcpStream::connect_timeout(&shared.addr, Duration::from_secs(5)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    shared.counters.connects.fetch_add(1, Ordering::Relaxed);
    match tungstenite::client(request, stream) {
        Ok((ws, _)) => {
            // Short reads from here on, so every loop checks the clock often.
            ws.get_ref()
                .set_read_timeout(Some(Duration::from_millis(200)))
                .ok()?;
            Some(ws)
        }
        Err(_) => {
            // HTTP 503/429 at the upgrade (the budget refuses connections), or a reset.
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(200));
            None
        }
    }
}

fn send(ws: &mut Socket, address: &str, message: &Message<'_>) -> bool {
    ws.send(WsMessage::Binary(encode(address, message).into()))
        .is_ok()
}

fn auth(ws: &mut Socket, address: &str) -> bool {
    send(
        ws,
        address,
        &Message::Auth(AuthMessage::Token {
            token: "attack",
            provider_version: Some("4.8.0"),
        }),
    )
}

/// Reads frames until `pred` matches one, the socket closes (false) or `timeout` passes.
fn wait_for(ws: &mut Socket, timeout: Duration, pred: impl Fn(&str, &Message<'_>) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(WsMessage::Binary(b)) => {
                if let Ok(Packet::Message { address, message }) = decode(&b)
                    && pred(address, &message)
                {
                    return true;
                }
            }
            Ok(WsMessage::Close(_)) => return false,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Authenticates `doc` and syncs from an empty state.
fn open(ws: &mut Socket, doc: &str) -> bool {
    auth(ws, doc)
        && wait_for(ws, Duration::from_secs(10), |a, m| {
            a == doc && matches!(m, Message::Auth(AuthMessage::Authenticated { .. }))
        })
        && send(ws, doc, &Message::Sync(SyncMessage::Step1(&[0])))
        && wait_for(ws, Duration::from_secs(10), |a, m| {
            a == doc && matches!(m, Message::Sync(SyncMessage::Step2(_)))
        })
}

fn acked(ws: &mut Socket, doc: &str, timeout: Duration) -> bool {
    wait_for(ws, timeout, |a, m| {
        a == doc && matches!(m, Message::SyncStatus(true))
    })
}

/// Holds a socket open (answering pings by reading) until the daemon closes it or the end.
fn hold_reading(shared: &Shared, ws: &mut Socket) {
    while !shared.stop.load(Ordering::Relaxed) {
        match ws.read() {
            Ok(WsMessage::Close(_)) => break,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    if !shared.stop.load(Ordering::Relaxed) {
        shared
            .counters
            .closed_by_server
            .fetch_add(1, Ordering::Relaxed);
    }
}

/// Holds a socket without reading; a failing write (every second) shows the daemon dropped it.
fn hold_not_reading(shared: &Shared, ws: &mut Socket) {
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_secs(1));
        if ws.send(WsMessage::Pong(Vec::new().into())).is_err() {
            shared
                .counters
                .closed_by_server
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
    }
}

/// A writer typing into one document: one small insert per update.
struct Typist {
    doc: Doc,
}

impl Typist {
    fn new(client_id: u64) -> Self {
        Typist {
            doc: Doc::with_client_id(client_id),
        }
    }

    /// Alternately inserts `text` and deletes everything past the first 1000 chars, each in
    /// its own update: the inserts carry the text, the deletes keep the document small.
    fn churn(&self, text: &str) -> Vec<u8> {
        let t = self.doc.get_or_insert_text("default");
        let mut txn = self.doc.transact_mut();
        let len = t.len(&txn);
        if len > 1000 {
            t.remove_range(&mut txn, 1000, len - 1000);
        } else {
            t.insert(&mut txn, len, text);
        }
        txn.encode_update_v1()
    }

    fn update(&self, text: &str) -> Vec<u8> {
        let t = self.doc.get_or_insert_text("default");
        let mut txn = self.doc.transact_mut();
        let len = t.len(&txn);
        t.insert(&mut txn, len, text);
        txn.encode_update_v1()
    }
}

#[derive(Default)]
struct HonestResult {
    latencies_us: Vec<u64>,
    failures: u64,
    reconnects: u64,
}

/// Types one character every 100 ms and waits for each acknowledgement (5 s at most).
fn honest_editor(shared: &Shared, result: &Mutex<HonestResult>) {
    let typist = Typist::new(7_000_001);
    let doc = "honest";
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(mut ws) = connect(shared, None) else {
            continue;
        };
        if !open(&mut ws, doc) {
            lock(result).reconnects += 1;
            continue;
        }
        while !shared.stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let ok = send(
                &mut ws,
                doc,
                &Message::Sync(SyncMessage::Update(&typist.update("k"))),
            ) && acked(&mut ws, doc, Duration::from_secs(5));
            let mut r = lock(result);
            if ok {
                r.latencies_us.push(started.elapsed().as_micros() as u64);
            } else {
                r.failures += 1;
                r.reconnects += 1;
                break;
            }
            drop(r);
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps the busy document busy: 40 KB updates as fast as they are acknowledged.
fn busy_writer(shared: &Shared) {
    let typist = Typist::new(7_000_002);
    let chunk = "x".repeat(40_000);
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(mut ws) = connect(shared, None) else {
            continue;
        };
        if !open(&mut ws, "busy") {
            continue;
        }
        while !shared.stop.load(Ordering::Relaxed) {
            // Insert 40 KB, then delete it: every broadcast is large (the stuck readers' queues
            // grow) while the document itself stays small (deleted text is only a length).
            let update = typist.churn(&chunk);
            if !send(
                &mut ws,
                "busy",
                &Message::Sync(SyncMessage::Update(&update)),
            ) || !acked(&mut ws, "busy", Duration::from_secs(10))
            {
                break;
            }
        }
    }
}

fn stuck_reader(shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(mut ws) = connect(shared, None) else {
            continue;
        };
        if open(&mut ws, "busy") {
            hold_not_reading(shared, &mut ws);
        }
    }
}

fn preauth_flooder(shared: &Shared, n: usize) {
    let ip = format!("198.51.100.{}", n % 10);
    let typist = Typist::new(8_000_000 + n as u64);
    let update = typist.update(&"p".repeat(7 * MIB + MIB / 2));
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(mut ws) = connect(shared, Some(&ip)) else {
            continue;
        };
        let doc = format!("flood-{n}");
        if send(&mut ws, &doc, &Message::Sync(SyncMessage::Update(&update))) {
            hold_reading(shared, &mut ws);
        }
    }
}

fn long_session_id(shared: &Shared) {
    let address = format!("victim\0{}", "s".repeat(4 * MIB));
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(mut ws) = connect(shared, None) else {
            continue;
        };
        if auth(&mut ws, &address) {
            hold_reading(shared, &mut ws);
        }
    }
}

fn partial_frame(shared: &Shared) {
    const DECLARED: u64 = 30 * MIB as u64;
    let chunk = vec![0u8; MIB];
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(mut ws) = connect(shared, None) else {
            continue;
        };
        // A masked binary frame header with a zero mask (payload bytes go as they are).
        let mut header = vec![0x82, 0x80 | 127];
        header.extend_from_slice(&DECLARED.to_be_bytes());
        header.extend_from_slice(&[0, 0, 0, 0]);
        let stream = ws.get_mut();
        let mut ok = stream.write_all(&header).is_ok();
        for _ in 0..20 {
            if !ok || shared.stop.load(Ordering::Relaxed) {
                break;
            }
            ok = stream.write_all(&chunk).is_ok();
            std::thread::sleep(Duration::from_millis(200));
        }
        // Then nothing more: the frame never completes.
        hold_not_reading(shared, &mut ws);
    }
}

fn big_awareness(shared: &Shared, n: usize) {
    let state = format!("{{\"junk\":\"{}\"}}", "a".repeat(8 * MIB));
    let payload = zedi_protocol::awareness::encode_update(&[(9_000_000 + n as u64, 1, &state)]);
    let doc = format!("presence-{n}");
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(mut ws) = connect(shared, None) else {
            continue;
        };
        // Again and again on the same socket, until the daemon closes it (refusals count).
        // Each round waits for the daemon's CLOSE, so this is not a busy loop.
        let mut rounds = 0u32;
        while rounds < 1000
            && !shared.stop.load(Ordering::Relaxed)
            && open(&mut ws, &doc)
            && send(&mut ws, &doc, &Message::Awareness(&payload))
            && wait_for(&mut ws, Duration::from_secs(5), |a, m| {
                a == doc && matches!(m, Message::Close(_))
            })
        {
            rounds += 1;
        }
        shared
            .counters
            .closed_by_server
            .fetch_add(1, Ordering::Relaxed);
    }
}

fn churn(shared: &Shared, thread: usize, threads: usize) {
    let filler = "c".repeat(110 * 1024);
    let mut k = thread;
    while !shared.stop.load(Ordering::Relaxed) {
        let doc = format!("churn-{}", k % 150);
        k += threads;
        let Some(mut ws) = connect(shared, None) else {
            continue;
        };
        let typist = Typist::new(6_000_000 + k as u64);
        if open(&mut ws, &doc) {
            let update = typist.update(&filler);
            let _ = send(&mut ws, &doc, &Message::Sync(SyncMessage::Update(&update)))
                && acked(&mut ws, &doc, Duration::from_secs(10));
        }
        let _ = ws.close(None);
    }
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

pub fn attack(addr: SocketAddr, args: AttackArgs) -> Value {
    let shared = Arc::new(Shared {
        addr,
        stop: AtomicBool::new(false),
        counters: Counters::default(),
    });
    let honest = Arc::new(Mutex::new(HonestResult::default()));
    let baseline_kb = status_kb(args.server_pid, "VmRSS").unwrap_or(0);
    let mut threads = Vec::new();
    let mut spawn = |f: Box<dyn FnOnce() + Send>| threads.push(std::thread::spawn(f));
    {
        let (s, h) = (Arc::clone(&shared), Arc::clone(&honest));
        spawn(Box::new(move || honest_editor(&s, &h)));
    }
    let s = Arc::clone(&shared);
    spawn(Box::new(move || busy_writer(&s)));
    // Each kind of attacker, how many of it, and its n-th instance.
    let attackers: [(usize, Attacker); 5] = [
        (args.stuck_readers, |s, _| stuck_reader(s)),
        (args.preauth_sockets, preauth_flooder),
        (args.long_id_sockets, |s, _| long_session_id(s)),
        (args.partial_frames, |s, _| partial_frame(s)),
        (args.awareness_sockets, big_awareness),
    ];
    for (count, attacker) in attackers {
        for n in 0..count {
            let s = Arc::clone(&shared);
            spawn(Box::new(move || attacker(&s, n)));
        }
    }
    for t in 0..args.churn_threads {
        let (s, n) = (Arc::clone(&shared), args.churn_threads);
        spawn(Box::new(move || churn(&s, t, n)));
    }
    // Sample while the attack runs: RSS every 250 ms, the budget every second.
    let started = Instant::now();
    let (mut peak_rss_kb, mut peak_budget, mut samples) = (0u64, 0u64, 0u64);
    let mut at_peak = Value::Null;
    let mut last_scrape = Instant::now() - Duration::from_secs(1);
    while started.elapsed() < args.duration {
        if let Some(kb) = status_kb(args.server_pid, "VmRSS") {
            peak_rss_kb = peak_rss_kb.max(kb);
            samples += 1;
        } else {
            break; // the daemon is gone: reported below
        }
        if last_scrape.elapsed() >= Duration::from_secs(1) {
            last_scrape = Instant::now();
            if let Some((used, holders, _)) = scrape(addr)
                && used > peak_budget
            {
                peak_budget = used;
                at_peak = holders;
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    shared.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    let alive = status_kb(args.server_pid, "VmRSS").is_some();
    let hwm_kb = status_kb(args.server_pid, "VmHWM").unwrap_or(0);
    let sheds = scrape(addr).map_or(Value::Null, |(_, _, s)| s);
    let h = lock(&honest);
    let mut lat = h.latencies_us.clone();
    lat.sort_unstable();
    let c = &shared.counters;
    json!({
        "scenario": "attack",
        "seconds": args.duration.as_secs(),
        "daemon_alive": alive,
        "baseline_rss_mib": baseline_kb as f64 / 1024.0,
        "peak_rss_mib": peak_rss_kb as f64 / 1024.0,
        "vm_hwm_mib": hwm_kb as f64 / 1024.0,
        "rss_samples": samples,
        "peak_budget_used_mib": peak_budget as f64 / MIB as f64,
        "budget_at_peak_mib": at_peak,
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
