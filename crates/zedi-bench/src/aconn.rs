//! Event-driven connections for the many-socket scenarios (ramp, fan-out, readers): a blocking
//! tungstenite `WebSocket` over a non-blocking tokio `TcpStream` (its `try_read`/`try_write`),
//! woken by tokio's readiness, so tens of thousands of sockets cost a few threads, not one each.

use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpStream;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::WebSocket;
use tungstenite::{Bytes, Message as WsMessage};
use zedi_protocol::protocol::{
    AuthMessage, Message, PONG_FRAME, Packet, SyncMessage, decode, encode,
};

/// The stream as tungstenite sees it: reads/writes that return `WouldBlock` instead of waiting.
pub struct Io(pub Arc<TcpStream>);

impl Read for Io {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.try_read(buf)
    }
}

impl Write for Io {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// tungstenite zero-fills its whole read buffer chunk (128 KiB by default) before every read:
/// measured at over half of the generator's CPU in fan-out. Frames here are small.
pub fn small_read_buffer() -> tungstenite::protocol::WebSocketConfig {
    tungstenite::protocol::WebSocketConfig::default().read_buffer_size(4096)
}

pub struct Conn {
    ws: WebSocket<Io>,
    tcp: Arc<TcpStream>,
    pub doc: String,
}

fn would_block(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(io) if io.kind() == ErrorKind::WouldBlock)
}

/// Every wait below is bounded by this deadline.
async fn until<F: std::future::Future>(deadline: Instant, f: F) -> Result<F::Output, String> {
    tokio::time::timeout_at(deadline.into(), f)
        .await
        .map_err(|_| "timed out".to_string())
}

impl Conn {
    pub async fn connect(
        addr: SocketAddr,
        url: &str,
        doc: String,
        deadline: Instant,
    ) -> Result<Conn, String> {
        let tcp = until(deadline, TcpStream::connect(addr))
            .await?
            .map_err(|e| format!("connect: {e}"))?;
        tcp.set_nodelay(true).ok();
        let tcp = Arc::new(tcp);
        let mut attempt = tungstenite::client::client_with_config(
            url,
            Io(tcp.clone()),
            Some(small_read_buffer()),
        );
        loop {
            match attempt {
                Ok((ws, _)) => return Ok(Conn { ws, tcp, doc }),
                Err(HandshakeError::Interrupted(mid)) => {
                    until(deadline, tcp.readable())
                        .await?
                        .map_err(|e| format!("upgrade: {e}"))?;
                    attempt = mid.handshake();
                }
                Err(HandshakeError::Failure(e)) => return Err(format!("upgrade: {e}")),
            }
        }
    }

    /// Connects and completes the provider handshake, both bounded by `deadline`.
    pub async fn open(
        addr: SocketAddr,
        url: &str,
        doc: String,
        deadline: Instant,
    ) -> Result<Conn, String> {
        let mut conn = Conn::connect(addr, url, doc, deadline).await?;
        conn.handshake(deadline).await?;
        Ok(conn)
    }

    /// Sends one binary frame; waits (bounded) while the socket buffer is full.
    pub async fn send(&mut self, frame: Vec<u8>, deadline: Instant) -> Result<(), String> {
        match self.ws.send(WsMessage::Binary(frame.into())) {
            Ok(()) => return Ok(()),
            Err(e) if would_block(&e) => {}
            Err(e) => return Err(format!("send: {e}")),
        }
        loop {
            until(deadline, self.tcp.writable())
                .await?
                .map_err(|e| format!("send: {e}"))?;
            match self.ws.flush() {
                Ok(()) => return Ok(()),
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(format!("send: {e}")),
            }
        }
    }

    /// The next binary frame already received, `Ok(None)` if none is ready.
    pub fn try_frame(&mut self) -> Result<Option<Bytes>, String> {
        loop {
            match self.ws.read() {
                Ok(WsMessage::Binary(b)) => return Ok(Some(b)),
                Ok(WsMessage::Close(f)) => {
                    return Err(match f {
                        Some(f) => format!("server closed: {} {}", u16::from(f.code), f.reason),
                        None => "server closed the socket".into(),
                    });
                }
                Ok(WsMessage::Text(_)) => return Err("unexpected text frame".into()),
                Ok(_) => continue,
                Err(e) if would_block(&e) => return Ok(None),
                Err(e) => return Err(format!("socket: {e}")),
            }
        }
    }

    /// Next binary frame, waiting at most until `deadline` (`Ok(None)` when it passed).
    pub async fn frame(&mut self, deadline: Instant) -> Result<Option<Bytes>, String> {
        loop {
            if let Some(f) = self.try_frame()? {
                return Ok(Some(f));
            }
            match until(deadline, self.tcp.readable()).await {
                Ok(r) => r.map_err(|e| format!("socket: {e}"))?,
                Err(_) => return Ok(None),
            }
        }
    }

    pub async fn readable(&self) {
        let _ = self.tcp.readable().await;
    }

    /// Auth (any token) + SyncStep1 back to back, as the provider does; then until
    /// Authenticated, the server's SyncStep1 (answered with our empty SyncStep2) and its SyncStep2
    /// have arrived, and our SyncStep2 is acknowledged (`SyncStatus`).
    pub async fn handshake(&mut self, deadline: Instant) -> Result<(), String> {
        self.handshake_keep(deadline).await.map(|_| ())
    }

    /// [`Conn::handshake`], returning the server's SyncStep2 payload and the bytes of every
    /// binary frame received meanwhile (WebSocket payloads).
    pub async fn handshake_keep(&mut self, deadline: Instant) -> Result<(Vec<u8>, usize), String> {
        let doc = self.doc.clone();
        let token = Message::Auth(AuthMessage::Token {
            token: "bench",
            provider_version: Some("4.8.0"),
        });
        self.send(encode(&doc, &token), deadline).await?;
        self.send(
            encode(&doc, &Message::Sync(SyncMessage::Step1(&[0]))),
            deadline,
        )
        .await?;
        let (mut auth, mut step1, mut step2, mut owed) = (false, false, false, 0u32);
        let (mut state, mut received) = (Vec::new(), 0usize);
        while !(auth && step1 && step2 && owed == 0) {
            let Some(frame) = self.frame(deadline).await? else {
                return Err(format!(
                    "handshake timed out (authenticated={auth} step1={step1} step2={step2} acks_owed={owed})"
                ));
            };
            received += frame.len();
            let mut reply = None;
            match decode(&frame) {
                Ok(Packet::Ping) => reply = Some(PONG_FRAME.to_vec()),
                Ok(Packet::Message { message, .. }) => match message {
                    Message::Auth(AuthMessage::Authenticated { .. }) => auth = true,
                    Message::Auth(AuthMessage::PermissionDenied { reason }) => {
                        return Err(format!("permission denied: {reason}"));
                    }
                    Message::Sync(SyncMessage::Step1(_)) => {
                        step1 = true;
                        // An empty document's diff against anything: no structs, no deletes.
                        reply = Some(encode(&doc, &Message::Sync(SyncMessage::Step2(&[0, 0]))));
                        owed += 1;
                    }
                    Message::Sync(SyncMessage::Step2(s)) => {
                        step2 = true;
                        state = s.to_vec();
                    }
                    Message::SyncStatus(ok) => {
                        owed = owed.saturating_sub(1);
                        if !ok {
                            return Err("SyncStep2 refused (SyncStatus 0)".into());
                        }
                    }
                    Message::Close(reason) => return Err(format!("document closed: {reason:?}")),
                    _ => {}
                },
                Ok(Packet::Pong) => {}
                Err(e) => return Err(format!("undecodable frame: {e}")),
            }
            if let Some(r) = reply {
                self.send(r, deadline).await?;
            }
        }
        Ok((state, received))
    }

    /// Idles: answers pings and drops everything else until `stop` changes or `until`; returns
    /// what broke the connection meanwhile.
    pub async fn idle(
        &mut self,
        stop: &mut tokio::sync::watch::Receiver<bool>,
        until: Instant,
    ) -> Option<String> {
        loop {
            tokio::select! {
                _ = stop.changed() => return None,
                _ = tokio::time::sleep_until(until.into()) => return None,
                _ = self.readable() => loop {
                    match self.try_frame() {
                        Ok(Some(f)) => {
                            if matches!(decode(&f), Ok(Packet::Ping))
                                && let Err(e) = self.send(PONG_FRAME.to_vec(), until).await
                            {
                                return Some(e);
                            }
                        }
                        Ok(None) => break,
                        Err(e) => return Some(e),
                    }
                },
            }
        }
    }

    /// Best effort, never waits.
    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}

/// Microseconds on the generator's own clock (one process: sender and receivers share it).
pub fn now_us(epoch: Instant) -> u64 {
    epoch.elapsed().as_micros() as u64
}

/// The send time a fan-out writer put into its update's text: `<` 16 digits `>`.
pub fn stamp(us: u64) -> String {
    format!("<{us:016}>")
}

pub fn find_stamp(update: &[u8]) -> Option<u64> {
    let n = update.len();
    let mut i = 0;
    while i + 18 <= n {
        if update[i] == b'<' && update[i + 17] == b'>' {
            let digits = &update[i + 1..i + 17];
            if digits.iter().all(u8::is_ascii_digit) {
                return std::str::from_utf8(digits).ok()?.parse().ok();
            }
        }
        i += 1;
    }
    None
}

/// What a passive subscriber saw.
#[derive(Default)]
pub struct SubResult {
    pub connected: bool,
    pub handshake_us: u32,
    /// Latencies of stamped updates sent inside the window (µs).
    pub latencies_us: Vec<u32>,
    /// Every Sync/Update received inside the window.
    pub deliveries: u64,
    pub error: Option<String>,
}

/// A reader: connect, handshake, then receive until `end` (answering pings); updates whose send
/// stamp falls in `[measure_start_us, measure_end_us)` count.
// A benchmark worker's whole configuration, set once per run by its one caller.
#[allow(clippy::too_many_arguments)]
pub async fn subscriber(
    addr: SocketAddr,
    url: String,
    doc: String,
    epoch: Instant,
    setup_deadline: Instant,
    window_us: (u64, u64),
    end: Instant,
    ready: Option<std::sync::mpsc::Sender<bool>>,
    counter: Option<Arc<std::sync::atomic::AtomicU64>>,
) -> SubResult {
    let mut r = SubResult::default();
    let t0 = Instant::now();
    let opened = Conn::open(addr, &url, doc, setup_deadline).await;
    if let Some(tx) = ready {
        let _ = tx.send(opened.is_ok());
    }
    let mut conn = match opened {
        Ok(conn) => conn,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    r.connected = true;
    r.handshake_us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
    receive(
        &mut conn,
        &mut r,
        epoch,
        window_us,
        end,
        counter.as_deref(),
        Count::Arrival,
    )
    .await;
    conn.close();
    r
}

/// Which deliveries a subscriber counts.
#[derive(Clone, Copy)]
pub enum Count {
    /// Every update that arrives inside the window (throughput readers).
    Arrival,
    /// Updates whose stamp was written inside the window (fan-out).
    Stamp,
}

/// A subscriber's receive loop until `end`: answers pings, counts deliveries, records the
/// latency of every stamped update sent inside the window.
pub async fn receive(
    conn: &mut Conn,
    r: &mut SubResult,
    epoch: Instant,
    window_us: (u64, u64),
    end: Instant,
    counter: Option<&std::sync::atomic::AtomicU64>,
    count: Count,
) {
    loop {
        let frame = match conn.frame(end).await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                r.error = Some(e);
                break;
            }
        };
        let at = now_us(epoch);
        match decode(&frame) {
            Ok(Packet::Ping) => {
                if let Err(e) = conn.send(PONG_FRAME.to_vec(), end).await {
                    r.error = Some(e);
                    break;
                }
            }
            Ok(Packet::Message {
                message: Message::Sync(SyncMessage::Update(u)),
                ..
            }) => {
                let stamp =
                    find_stamp(u).filter(|sent| *sent >= window_us.0 && *sent < window_us.1);
                let counted = match count {
                    Count::Arrival => at >= window_us.0 && at < window_us.1,
                    Count::Stamp => stamp.is_some(),
                };
                if counted {
                    r.deliveries += 1;
                    if let Some(c) = counter {
                        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
                if let Some(sent) = stamp {
                    r.latencies_us
                        .push(at.saturating_sub(sent).min(u32::MAX as u64) as u32);
                }
            }
            Ok(Packet::Message {
                message: Message::Close(reason),
                ..
            }) => {
                r.error = Some(format!("document closed: {reason:?}"));
                break;
            }
            _ => {}
        }
    }
}
