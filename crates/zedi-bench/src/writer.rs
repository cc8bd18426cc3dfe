//! One writer: its own WebSocket, the Hocuspocus handshake, then a closed loop of real Yjs
//! updates with a bounded number outstanding. Acks (`SyncStatus`) carry no id; the server
//! processes a connection's frames strictly in order, so they are matched to sends FIFO.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocket;
use tungstenite::{Bytes, Message as WsMessage};
use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Text, TextRef, Transact};
use zedi_protocol::protocol::{
    AuthMessage, Message, PONG_FRAME, Packet, SyncMessage, decode, encode,
};

/// How long one blocking read may wait; every loop re-checks its deadline at least this often.
const READ_SLICE: Duration = Duration::from_millis(50);
/// Characters each update inserts.
const CHUNK: &str = "abc";
/// Client ids start here (well inside JavaScript's safe integer range).
const CLIENT_ID_BASE: u64 = 0x5AED_0000;

pub struct WriterSpec {
    pub index: usize,
    pub addr: SocketAddr,
    pub url: String,
    pub document: String,
    pub in_flight: usize,
    pub handshake_timeout: Duration,
    pub drain_timeout: Duration,
}

/// The shared start signal: `None` until the coordinator has seen every writer ready (or gave
/// up), then the instants of the measurement window.
pub type StartSignal = Arc<(Mutex<Option<Window>>, Condvar)>;

#[derive(Clone, Copy)]
pub struct Window {
    /// Writers start sending here (warm-up begins).
    pub start: Instant,
    /// Acks received in `[measure_start, measure_end)` are counted.
    pub measure_start: Instant,
    pub measure_end: Instant,
    /// `false`: the run is aborted, writers close and leave.
    pub go: bool,
}

#[derive(Default)]
pub struct WriterResult {
    /// Ack latencies of the updates acknowledged inside the window, in microseconds.
    pub latencies_us: Vec<u32>,
    /// Updates acknowledged at any time (warm-up and drain included).
    pub acked_total: u64,
    pub errors: u64,
    /// Short descriptions of what went wrong (first few only).
    pub notes: Vec<String>,
    /// Frames a writer did not expect, by kind (e.g. "sync_step1 after handshake").
    pub unexpected: Vec<String>,
}

impl WriterResult {
    fn error(&mut self, note: String) {
        self.errors += 1;
        if self.notes.len() < 4 {
            self.notes.push(note);
        }
    }

    fn unexpected(&mut self, what: String) {
        if self.unexpected.len() < 8 {
            self.unexpected.push(what);
        }
    }
}

/// Produces successive updates of one writer: each builds on the writer's own previous state
/// (inserted at the end of its own text), so the server never sees them as pending.
struct UpdateSource {
    doc: Doc,
    text: TextRef,
}

impl UpdateSource {
    fn new(client_id: u64) -> Self {
        let doc = Doc::with_client_id(client_id);
        let text = doc.get_or_insert_text("default");
        UpdateSource { doc, text }
    }

    fn next(&mut self) -> Vec<u8> {
        let mut txn = self.doc.transact_mut();
        let len = self.text.len(&txn);
        self.text.insert(&mut txn, len, CHUNK);
        txn.encode_update_v1()
    }

    /// SyncStep2 answering the server's SyncStep1: what we have that it lacks.
    fn diff(&self, server_sv: &[u8]) -> Vec<u8> {
        let sv = StateVector::decode_v1(server_sv).unwrap_or_default();
        self.doc.transact().encode_state_as_update_v1(&sv)
    }
}

enum Read {
    Frame(Bytes),
    Nothing,
    Closed(String),
}

fn read_frame(ws: &mut WebSocket<TcpStream>) -> Read {
    match ws.read() {
        Ok(WsMessage::Binary(b)) => Read::Frame(b),
        Ok(WsMessage::Close(frame)) => Read::Closed(match frame {
            Some(f) => format!(
                "server closed the socket: {} {}",
                u16::from(f.code),
                f.reason
            ),
            None => "server closed the socket".into(),
        }),
        Ok(WsMessage::Text(t)) => Read::Closed(format!("unexpected text frame: {t:.60}")),
        Ok(_) => Read::Nothing, // WebSocket ping/pong: tungstenite answers pings itself
        Err(tungstenite::Error::Io(e))
            if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
        {
            Read::Nothing
        }
        Err(e) => Read::Closed(format!("socket error: {e}")),
    }
}

fn send(ws: &mut WebSocket<TcpStream>, frame: Vec<u8>) -> Result<(), String> {
    ws.send(WsMessage::Binary(frame.into()))
        .map_err(|e| format!("send failed: {e}"))
}

fn connect(spec: &WriterSpec, deadline: Instant) -> Result<WebSocket<TcpStream>, String> {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let stream =
        TcpStream::connect_timeout(&spec.addr, left).map_err(|e| format!("connect: {e}"))?;
    stream.set_nodelay(true).ok();
    stream.set_read_timeout(Some(READ_SLICE)).ok();
    stream.set_write_timeout(Some(Duration::from_secs(5))).ok();
    let mut attempt = tungstenite::client::client_with_config(
        spec.url.as_str(),
        stream,
        Some(crate::aconn::small_read_buffer()),
    );
    loop {
        match attempt {
            Ok((ws, _)) => return Ok(ws),
            Err(HandshakeError::Interrupted(mid)) if Instant::now() < deadline => {
                attempt = mid.handshake();
            }
            Err(HandshakeError::Interrupted(_)) => return Err("upgrade timed out".into()),
            Err(HandshakeError::Failure(e)) => return Err(format!("upgrade: {e}")),
        }
    }
}

/// Auth + SyncStep1, then until Authenticated, the server's SyncStep1 (answered with our
/// SyncStep2, as the provider does) and SyncStep2 have arrived and our SyncStep2 is acked.
fn handshake(
    spec: &WriterSpec,
    ws: &mut WebSocket<TcpStream>,
    source: &UpdateSource,
    result: &mut WriterResult,
) -> Result<(), String> {
    let doc = spec.document.as_str();
    let token = Message::Auth(AuthMessage::Token {
        token: "bench",
        provider_version: Some("4.8.0"),
    });
    send(ws, encode(doc, &token))?;
    send(ws, encode(doc, &Message::Sync(SyncMessage::Step1(&[0]))))?;
    let deadline = Instant::now() + spec.handshake_timeout;
    let (mut authenticated, mut step1, mut step2, mut acks_owed) = (false, false, false, 0u32);
    while !(authenticated && step1 && step2 && acks_owed == 0) {
        if Instant::now() >= deadline {
            return Err(format!(
                "handshake timed out (authenticated={authenticated} step1={step1} step2={step2} acks_owed={acks_owed})"
            ));
        }
        let frame = match read_frame(ws) {
            Read::Frame(f) => f,
            Read::Nothing => continue,
            Read::Closed(why) => return Err(why),
        };
        match decode(&frame) {
            Ok(Packet::Ping) => send(ws, PONG_FRAME.to_vec())?,
            Ok(Packet::Message { message, .. }) => match message {
                Message::Auth(AuthMessage::Authenticated { .. }) => authenticated = true,
                Message::Auth(AuthMessage::PermissionDenied { reason }) => {
                    return Err(format!("permission denied: {reason}"));
                }
                Message::Sync(SyncMessage::Step1(sv)) => {
                    step1 = true;
                    let diff = source.diff(sv);
                    send(ws, encode(doc, &Message::Sync(SyncMessage::Step2(&diff))))?;
                    acks_owed += 1;
                }
                Message::Sync(SyncMessage::Step2(_)) => step2 = true,
                Message::SyncStatus(applied) => {
                    if acks_owed == 0 {
                        result.unexpected("SyncStatus during handshake with nothing owed".into());
                    } else {
                        acks_owed -= 1;
                    }
                    if !applied {
                        return Err("handshake SyncStep2 rejected (SyncStatus 0)".into());
                    }
                }
                Message::Sync(SyncMessage::Update(_)) | Message::Awareness(_) => {}
                Message::Close(reason) => return Err(format!("document closed: {reason:?}")),
                other => result.unexpected(format!("{:?} during handshake", other.message_type())),
            },
            Ok(Packet::Pong) => result.unexpected("Pong from server".into()),
            Err(e) => return Err(format!("undecodable frame from server: {e}")),
        }
    }
    Ok(())
}

/// Waits for the coordinator (bounded: it always answers within the handshake timeout + 1 s);
/// `None` when there is nothing to run.
fn wait_for_window(spec: &WriterSpec, signal: &StartSignal) -> Option<Window> {
    let (lock, cvar) = &**signal;
    let guard = lock.lock().unwrap();
    let (guard, _) = cvar
        .wait_timeout_while(
            guard,
            spec.handshake_timeout + Duration::from_secs(5),
            |w| w.is_none(),
        )
        .unwrap();
    guard.filter(|w| w.go)
}

/// One frame of the steady state: acknowledgements timed into `result`, pings answered.
/// `Err` says why the connection is over.
fn on_frame(
    frame: &[u8],
    ws: &mut WebSocket<TcpStream>,
    outstanding: &mut VecDeque<Instant>,
    window: &Window,
    spec: &WriterSpec,
    result: &mut WriterResult,
) -> Result<(), String> {
    match decode(frame) {
        Ok(Packet::Ping) => send(ws, PONG_FRAME.to_vec())?,
        Ok(Packet::Message {
            message: Message::SyncStatus(applied),
            ..
        }) => {
            let at = Instant::now();
            let Some(sent) = outstanding.pop_front() else {
                result.unexpected("SyncStatus with nothing outstanding".into());
                return Ok(());
            };
            if !applied {
                result.error(format!(
                    "writer {}: update rejected (SyncStatus 0)",
                    spec.index
                ));
                return Ok(());
            }
            result.acked_total += 1;
            if at >= window.measure_start && at < window.measure_end {
                let us = at.duration_since(sent).as_micros().min(u32::MAX as u128) as u32;
                result.latencies_us.push(us);
            }
        }
        // Other writers' updates (shared document) and awareness: expected, ignored.
        Ok(Packet::Message {
            message: Message::Sync(SyncMessage::Update(_)),
            ..
        })
        | Ok(Packet::Message {
            message: Message::Awareness(_),
            ..
        }) => {}
        Ok(Packet::Message {
            message: Message::Close(reason),
            ..
        }) => return Err(format!("document closed by server: {reason:?}")),
        Ok(Packet::Message { message, .. }) => {
            result.unexpected(format!("{:?} in steady state", message.message_type()))
        }
        Ok(Packet::Pong) => result.unexpected("Pong from server".into()),
        Err(e) => return Err(format!("undecodable frame from server: {e}")),
    }
    Ok(())
}

/// Phase 1: closed loop until the window ends. Phase 2: drain outstanding acks. Returns why
/// the connection ended early, if it did.
fn closed_loop(
    ws: &mut WebSocket<TcpStream>,
    spec: &WriterSpec,
    window: &Window,
    source: &mut UpdateSource,
    outstanding: &mut VecDeque<Instant>,
    result: &mut WriterResult,
) -> Option<String> {
    let doc = spec.document.clone();
    let drain_deadline = window.measure_end + spec.drain_timeout;
    loop {
        let now = Instant::now();
        let sending = now < window.measure_end;
        if !sending && (outstanding.is_empty() || now >= drain_deadline) {
            return None;
        }
        if sending {
            while outstanding.len() < spec.in_flight {
                let update = source.next();
                let frame = encode(&doc, &Message::Sync(SyncMessage::Update(&update)));
                outstanding.push_back(Instant::now());
                if let Err(e) = send(ws, frame) {
                    return Some(e);
                }
            }
        }
        let frame = match read_frame(ws) {
            Read::Frame(f) => f,
            Read::Nothing => continue,
            Read::Closed(why) => return Some(why),
        };
        if let Err(why) = on_frame(&frame, ws, outstanding, window, spec, result) {
            return Some(why);
        }
    }
}

/// Connects, handshakes, reports readiness, waits for the start signal, runs the closed loop
/// and drains. Every loop is bounded by a deadline.
pub fn run(
    spec: WriterSpec,
    ready: std::sync::mpsc::Sender<bool>,
    signal: StartSignal,
) -> WriterResult {
    let mut result = WriterResult::default();
    let mut source = UpdateSource::new(CLIENT_ID_BASE + spec.index as u64);
    let setup = connect(&spec, Instant::now() + spec.handshake_timeout)
        .and_then(|mut ws| handshake(&spec, &mut ws, &source, &mut result).map(|()| ws));
    let _ = ready.send(setup.is_ok());
    let mut ws = match setup {
        Ok(ws) => ws,
        Err(e) => {
            result.error(format!("writer {}: {e}", spec.index));
            return result;
        }
    };
    let Some(window) = wait_for_window(&spec, &signal) else {
        let _ = ws.close(None);
        return result;
    };
    if let Some(wait) = window.start.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let mut outstanding: VecDeque<Instant> = VecDeque::with_capacity(spec.in_flight);
    let closed = closed_loop(
        &mut ws,
        &spec,
        &window,
        &mut source,
        &mut outstanding,
        &mut result,
    );
    if let Some(why) = closed {
        result.error(format!("writer {}: {why}", spec.index));
    }
    if !outstanding.is_empty() {
        // Each update never acknowledged is an error of its own.
        let n = outstanding.len() as u64;
        result.error(format!(
            "writer {}: {n} update(s) never acknowledged",
            spec.index
        ));
        result.errors += n - 1;
    }
    // Polite close, bounded.
    let _ = ws.close(None);
    let until = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        match ws.read() {
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
            Ok(_) => {}
        }
    }
    result
}
