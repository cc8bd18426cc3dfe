//! The attack's clients: blocking tungstenite sockets, the honest editor, the busy writer and
//! one loop per kind of attacker (each reconnects whenever the daemon closes it, until `stop`).

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tungstenite::{Message as WsMessage, WebSocket};
use yrs::{Doc, Text, Transact};
use zedi_protocol::protocol::{AuthMessage, Message, Packet, SyncMessage, decode, encode};

use super::MIB;

/// What the attackers did, counted across threads.
#[derive(Default)]
pub(super) struct Counters {
    pub connects: AtomicU64,
    pub refused: AtomicU64,
    pub closed_by_server: AtomicU64,
}

pub(super) struct Shared {
    pub addr: SocketAddr,
    pub stop: AtomicBool,
    pub counters: Counters,
}

pub(super) type Socket = WebSocket<TcpStream>;

pub(super) fn connect(shared: &Shared, forwarded_for: Option<&str>) -> Option<Socket> {
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

pub(super) fn send(ws: &mut Socket, address: &str, message: &Message<'_>) -> bool {
    ws.send(WsMessage::Binary(encode(address, message).into()))
        .is_ok()
}

pub(super) fn auth(ws: &mut Socket, address: &str) -> bool {
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
pub(super) fn wait_for(
    ws: &mut Socket,
    timeout: Duration,
    pred: impl Fn(&str, &Message<'_>) -> bool,
) -> bool {
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
pub(super) fn open(ws: &mut Socket, doc: &str) -> bool {
    auth(ws, doc)
        && wait_for(ws, Duration::from_secs(10), |a, m| {
            a == doc && matches!(m, Message::Auth(AuthMessage::Authenticated { .. }))
        })
        && send(ws, doc, &Message::Sync(SyncMessage::Step1(&[0])))
        && wait_for(ws, Duration::from_secs(10), |a, m| {
            a == doc && matches!(m, Message::Sync(SyncMessage::Step2(_)))
        })
}

pub(super) fn acked(ws: &mut Socket, doc: &str, timeout: Duration) -> bool {
    wait_for(ws, timeout, |a, m| {
        a == doc && matches!(m, Message::SyncStatus(true))
    })
}

/// Holds a socket open (answering pings by reading) until the daemon closes it or the end.
pub(super) fn hold_reading(shared: &Shared, ws: &mut Socket) {
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
pub(super) fn hold_not_reading(shared: &Shared, ws: &mut Socket) {
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
pub(super) struct Typist {
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
pub(super) struct HonestResult {
    pub latencies_us: Vec<u64>,
    pub failures: u64,
    pub reconnects: u64,
}

/// Types one character every 100 ms and waits for each acknowledgement (5 s at most).
pub(super) fn honest_editor(shared: &Shared, result: &Mutex<HonestResult>) {
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

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Keeps the busy document busy: 40 KB updates as fast as they are acknowledged.
pub(super) fn busy_writer(shared: &Shared) {
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

pub(super) fn stuck_reader(shared: &Shared) {
    while !shared.stop.load(Ordering::Relaxed) {
        let Some(mut ws) = connect(shared, None) else {
            continue;
        };
        if open(&mut ws, "busy") {
            hold_not_reading(shared, &mut ws);
        }
    }
}

pub(super) fn preauth_flooder(shared: &Shared, n: usize) {
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

pub(super) fn long_session_id(shared: &Shared) {
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

pub(super) fn partial_frame(shared: &Shared) {
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

pub(super) fn big_awareness(shared: &Shared, n: usize) {
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

pub(super) fn churn(shared: &Shared, thread: usize, threads: usize) {
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
