//! A WebSocket client of the daemon under test, speaking the Hocuspocus protocol with our own
//! encoder; every read is bounded.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::{Message as WsMessage, WebSocket, stream::MaybeTlsStream};
use zedi_sync::protocol::{self, AuthMessage, Message, Packet, SyncMessage};

use super::render;

/// What the server sent, decoded.
#[derive(Debug)]
pub enum Received {
    Frame(Vec<u8>),
    Closed(Option<(u16, String)>),
    TimedOut,
}

pub struct Client {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects on a path that could name a y-websocket document: a Hocuspocus provider may be
    /// given any URL, and its first frame tells the server which protocol it speaks.
    pub fn connect(port: u16) -> Client {
        Self::connect_path(port, "/any/path?x=1")
    }

    pub fn connect_path(port: u16, path: &str) -> Client {
        let (ws, _) =
            tungstenite::connect(format!("ws://127.0.0.1:{port}{path}")).expect("ws connect");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
        }
        Client { ws }
    }

    pub fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(WsMessage::Binary(bytes.into())).expect("send");
    }

    pub fn send(&mut self, address: &str, message: Message<'_>) {
        self.send_raw(protocol::encode(address, &message));
    }

    /// Auth with a token as the v4 provider does (token, then its version).
    pub fn auth(&mut self, address: &str) {
        self.send(
            address,
            Message::Auth(AuthMessage::Token {
                token: "any",
                provider_version: Some("4.8.0"),
            }),
        );
    }

    /// Next binary frame or close, skipping pings, within `timeout`; a broken connection
    /// fails the test.
    pub fn recv(&mut self, timeout: Duration) -> Received {
        self.try_recv(timeout)
            .unwrap_or_else(|e| panic!("websocket error: {e}"))
    }

    /// Reads frames until one matches `pred` (bounded); returns the frame.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&str, &Message<'_>) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(500)) {
                Received::Frame(f) => {
                    if let Ok(Packet::Message { address, message }) = protocol::decode(&f)
                        && pred(address, &message)
                    {
                        return f;
                    }
                }
                Received::Closed(c) => panic!("closed while waiting for {what}: {c:?}"),
                Received::TimedOut => {}
            }
        }
        panic!("timed out waiting for {what}");
    }

    /// Expects the socket to be closed with `code` (bounded).
    pub fn expect_close(&mut self, code: u16) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(500)) {
                Received::Closed(Some((c, reason))) => {
                    assert_eq!(c, code, "close code (reason {reason:?})");
                    return reason;
                }
                Received::Closed(None) => panic!("closed without a code, expected {code}"),
                _ => {}
            }
        }
        panic!("socket was not closed with {code}");
    }

    /// Auth + SyncStep1 (empty state vector); waits for Authenticated and the server's Step2.
    /// Returns the Step2 payload (the document content as an update).
    pub fn open(&mut self, address: &str) -> Vec<u8> {
        self.auth(address);
        self.expect("Authenticated", |a, m| {
            a == address
                && matches!(
                    m,
                    Message::Auth(AuthMessage::Authenticated {
                        scope: "read-write"
                    })
                )
        });
        self.send(address, Message::Sync(SyncMessage::Step1(&[0])));
        let frame = self.expect("SyncStep2", |a, m| {
            a == address && matches!(m, Message::Sync(SyncMessage::Step2(_)))
        });
        match protocol::decode(&frame) {
            Ok(Packet::Message {
                message: Message::Sync(SyncMessage::Step2(p)),
                ..
            }) => p.to_vec(),
            _ => unreachable!("matched above"),
        }
    }

    /// Collects the updates broadcast on `address` until the text they make satisfies `done`
    /// (bounded). The server may merge updates that arrive together into one, so tests look
    /// for content, not for a number of frames. Returns the text.
    pub fn expect_text(
        &mut self,
        address: &str,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> String {
        let mut updates: Vec<Vec<u8>> = Vec::new();
        loop {
            let frame = self.expect(what, |a, m| {
                a == address && matches!(m, Message::Sync(SyncMessage::Update(_)))
            });
            if let Ok(Packet::Message {
                message: Message::Sync(SyncMessage::Update(u)),
                ..
            }) = protocol::decode(&frame)
            {
                updates.push(u.to_vec());
            }
            let refs: Vec<&[u8]> = updates.iter().map(Vec::as_slice).collect();
            let text = render(&refs);
            if done(&text) {
                return text;
            }
        }
    }

    pub fn expect_ack(&mut self, address: &str) {
        self.expect("SyncStatus(1)", |a, m| {
            a == address && matches!(m, Message::SyncStatus(true))
        });
    }
}

impl Client {
    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(WsMessage::Text(text.to_string().into()))
            .expect("send text");
    }

    /// Next binary frame as is (pings included), or None on timeout.
    pub fn recv_raw(&mut self, timeout: Duration) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(WsMessage::Binary(b)) => return Some(b.to_vec()),
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(e) => panic!("websocket error: {e}"),
            }
        }
        None
    }
}

impl Client {
    /// Like `recv`, but a connection that breaks (the daemon died) is an `Err` rather than a
    /// panic, so the caller can find out and say why.
    pub fn try_recv(&mut self, timeout: Duration) -> Result<Received, String> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(WsMessage::Binary(b)) if b.as_ref() == protocol::PING_FRAME => continue,
                Ok(WsMessage::Binary(b)) => return Ok(Received::Frame(b.to_vec())),
                Ok(WsMessage::Close(frame)) => {
                    return Ok(Received::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    ));
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return Ok(Received::Closed(None));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(Received::TimedOut)
    }

    /// Sends a frame, reporting a broken connection instead of panicking.
    pub fn try_send(&mut self, address: &str, message: Message<'_>) -> Result<(), String> {
        self.ws
            .send(WsMessage::Binary(
                protocol::encode(address, &message).into(),
            ))
            .map_err(|e| e.to_string())
    }
}

impl Client {
    /// Connects as if through the ALB for client address `ip` (127.0.0.1 is a trusted proxy
    /// by default, so the daemon believes X-Forwarded-For).
    pub fn connect_as(port: u16, ip: &str) -> Client {
        let mut request = tungstenite::client::IntoClientRequest::into_client_request(format!(
            "ws://127.0.0.1:{port}/"
        ))
        .expect("request");
        request
            .headers_mut()
            .insert("x-forwarded-for", ip.parse().expect("header value"));
        let (ws, _) = tungstenite::connect(request).expect("ws connect");
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
        }
        Client { ws }
    }

    /// Starts a masked binary frame that declares `declared` payload bytes and sends only
    /// `sent` of them (zeros, under an all-zero mask), as a client that never finishes a frame.
    pub fn send_partial_frame(&mut self, declared: u64, sent: usize) {
        use std::io::Write;
        let MaybeTlsStream::Plain(stream) = self.ws.get_mut() else {
            panic!("a plain socket");
        };
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&declared.to_be_bytes());
        head.extend_from_slice(&[0, 0, 0, 0]);
        stream.write_all(&head).expect("write");
        stream.write_all(&vec![0u8; sent]).expect("write");
        stream.flush().expect("flush");
    }

    /// Sends many binary frames in as few TCP writes as possible (buffered, one flush), as a
    /// client that floods would.
    pub fn send_batch(&mut self, frames: Vec<Vec<u8>>) {
        for frame in frames {
            self.ws
                .write(WsMessage::Binary(frame.into()))
                .expect("write");
        }
        self.ws.flush().expect("flush");
    }
}
