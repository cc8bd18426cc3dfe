//! The y-websocket endpoint at the protocol level, with a raw client: the greeting, several
//! messages in one frame, the translation of what the document sends (no Hocuspocus-only
//! messages reach a y-websocket client), hostile frames, and tokens decided at the upgrade.
//! The real `y-websocket` clients are in tests/interop/ywebsocket.test.mjs.

use crate::common;

use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{Client, Daemon, render, text_update};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message as WsMessage, WebSocket, stream::MaybeTlsStream};
use zedi_sync::protocol::SyncMessage;
use zedi_sync::protocol::ywebsocket::{self, YMessage};

const SECRET: &str = "ywebsocket-test-secret";

/// A y-websocket client of our own: frames of `varUint(type) payload` messages.
struct YClient {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

enum YReceived {
    Messages(Vec<u8>),
    Closed(Option<(u16, String)>),
    TimedOut,
}

impl YClient {
    fn connect(port: u16, path: &str) -> Result<YClient, tungstenite::Error> {
        Self::connect_with(port, path, None)
    }

    fn connect_with(
        port: u16,
        path: &str,
        protocol: Option<&str>,
    ) -> Result<YClient, tungstenite::Error> {
        let mut request = format!("ws://127.0.0.1:{port}{path}")
            .into_client_request()
            .expect("request");
        if let Some(protocol) = protocol {
            request.headers_mut().insert(
                "sec-websocket-protocol",
                protocol.parse().expect("header value"),
            );
        }
        let (ws, response) = tungstenite::connect(request)?;
        if let Some(protocol) = protocol {
            assert_eq!(
                response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok()),
                Some(protocol),
                "the protocol the token came in is named back"
            );
        }
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(200)))
                .expect("timeout");
        }
        Ok(YClient { ws })
    }

    fn send(&mut self, messages: &[YMessage<'_>]) {
        let frame: Vec<u8> = messages.iter().flat_map(ywebsocket::encode).collect();
        self.send_raw(frame);
    }

    fn send_raw(&mut self, frame: Vec<u8>) {
        self.ws.send(WsMessage::Binary(frame.into())).expect("send");
    }

    fn recv(&mut self, timeout: Duration) -> YReceived {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(WsMessage::Binary(b)) => return YReceived::Messages(b.to_vec()),
                Ok(WsMessage::Close(frame)) => {
                    return YReceived::Closed(
                        frame.map(|f| (u16::from(f.code), f.reason.to_string())),
                    );
                }
                Ok(_) => continue,
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return YReceived::Closed(None),
            }
        }
        YReceived::TimedOut
    }

    /// Every message received within `window` (or until the socket closes).
    fn collect(&mut self, window: Duration) -> (Vec<Vec<u8>>, Option<(u16, String)>) {
        let deadline = Instant::now() + window;
        let mut frames = Vec::new();
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(200)) {
                YReceived::Messages(frame) => frames.push(frame),
                YReceived::Closed(close) => return (frames, close),
                YReceived::TimedOut => {}
            }
        }
        (frames, None)
    }

    /// Reads until a message matches (bounded); returns it re-encoded alone.
    fn expect(&mut self, what: &str, pred: impl Fn(&YMessage<'_>) -> bool) -> Vec<u8> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.recv(Duration::from_millis(500)) {
                YReceived::Messages(frame) => {
                    let messages = ywebsocket::decode_frame(&frame, 64).expect("y-websocket");
                    if let Some((m, _)) = messages.iter().find(|(m, _)| pred(m)) {
                        return ywebsocket::encode(m);
                    }
                }
                YReceived::Closed(close) => panic!("closed while waiting for {what}: {close:?}"),
                YReceived::TimedOut => {}
            }
        }
        panic!("timed out waiting for {what}");
    }

    fn expect_close(&mut self, code: u16) -> String {
        let (_, close) = self.collect(Duration::from_secs(10));
        match close {
            Some((c, reason)) => {
                assert_eq!(c, code, "close code (reason {reason:?})");
                reason
            }
            None => panic!("not closed with {code}"),
        }
    }
}

/// The update carried by a single sync message (Step2 or Update).
fn update_of(message: &[u8]) -> Vec<u8> {
    match ywebsocket::decode_frame(message, 1)
        .expect("one message")
        .as_slice()
    {
        [(YMessage::Sync(SyncMessage::Step2(u) | SyncMessage::Update(u)), _)] => u.to_vec(),
        other => panic!("not an update: {other:?}"),
    }
}

fn is_step2(m: &YMessage<'_>) -> bool {
    matches!(m, YMessage::Sync(SyncMessage::Step2(_)))
}

#[test]
fn a_ywebsocket_client_is_greeted_and_edits_with_hocuspocus_clients() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &[]);
    let mut hp = Client::connect(daemon.port);
    hp.open("notes/one");
    hp.send(
        "notes/one",
        zedi_sync::protocol::Message::Sync(SyncMessage::Update(&text_update(1, "hp "))),
    );
    hp.expect_ack("notes/one");

    // The name is percent-decoded; SyncStep1 and an update arrive in one frame.
    let mut y = YClient::connect(daemon.port, "/notes%2Fone").expect("upgrade");
    let from_y = text_update(2, "from y ");
    y.send(&[
        YMessage::Sync(SyncMessage::Step1(&[0])),
        YMessage::Sync(SyncMessage::Update(&from_y)),
    ]);
    let (frames, close) = y.collect(Duration::from_secs(2));
    assert_eq!(close, None);
    let messages: Vec<Vec<u8>> = frames
        .iter()
        .flat_map(|f| {
            ywebsocket::decode_frame(f, 64)
                .expect("only y-websocket messages reach the client")
                .into_iter()
                .map(|(m, _)| ywebsocket::encode(&m))
                .collect::<Vec<_>>()
        })
        .collect();
    let kinds: Vec<(u8, u8)> = messages.iter().map(|m| (m[0], m[1])).collect();
    assert_eq!(
        kinds.first(),
        Some(&(0, 0)),
        "the server opens with its SyncStep1: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == (0, 0)).count(),
        1,
        "one SyncStep1, as y-websocket's server sends: {kinds:?}"
    );
    let step2 = messages
        .iter()
        .find(|m| m[..2] == [0, 1])
        .expect("a SyncStep2 answers the client's SyncStep1");
    assert_eq!(render(&[&update_of(step2)]), "hp ");
    // The Hocuspocus client gets the y-websocket client's edit.
    hp.expect_text("notes/one", "the y-websocket edit", |t| {
        t.contains("from y")
    });
}

#[test]
fn hostile_ywebsocket_frames_close_only_that_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &[]);
    let too_many: Vec<u8> = vec![3; 65];
    let cases: [(&str, Vec<u8>); 4] = [
        ("truncated", vec![0, 2, 9, 1]),
        ("unknown type", vec![0, 0, 1, 0, 7]),
        ("unknown sync type", vec![0, 9, 0]),
        ("65 messages in one frame", {
            let mut frame = vec![0, 0, 1, 0];
            frame.extend(&too_many);
            frame
        }),
    ];
    for (what, frame) in cases {
        let mut y = YClient::connect(daemon.port, "/victim").expect("upgrade");
        y.send_raw(frame);
        let reason = y.expect_close(4205);
        assert!(!reason.is_empty(), "{what}: a reason is given");
    }
    let errors = daemon.metrics().sum("zedi_protocol_errors_total", &[]);
    assert!(errors >= 4.0, "each bad frame is counted: {errors}");
    // A path that cannot name a document is told to the y-websocket client.
    let mut bad = YClient::connect(daemon.port, "/a%zz").expect("upgrade");
    bad.send(&[YMessage::Sync(SyncMessage::Step1(&[0]))]);
    assert!(bad.expect_close(4205).contains("percent"));
    // The node and the document are fine.
    let mut y = YClient::connect(daemon.port, "/victim").expect("upgrade");
    y.send(&[YMessage::Sync(SyncMessage::Step1(&[0]))]);
    y.expect("SyncStep2", is_step2);
    assert_eq!(
        daemon
            .metrics()
            .value("zedi_ywebsocket_sessions_total", &[]),
        6.0
    );
}

fn token(claims: serde_json::Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode a token")
}

fn http_status(error: tungstenite::Error) -> u16 {
    match error {
        tungstenite::Error::Http(response) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[test]
fn tokens_are_decided_at_the_upgrade() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("JWT_SECRET", SECRET),
            ("ZEDI__AUTH__DOCUMENTS_CLAIM", "docs"),
            ("ZEDI__AUTH__READONLY_CLAIM", "ro"),
            ("ZEDI__TIMEOUTS__AUTH_MS", "1000"),
            ("ZEDI__TIMEOUTS__PING_INTERVAL_MS", "250"),
        ],
    );
    let exp = 4_000_000_000u64;
    let writer = token(json!({"sub": "w", "exp": exp, "docs": ["team/*"]}));
    let reader = token(json!({"sub": "r", "exp": exp, "docs": ["team/*"], "ro": true}));
    let other_team = token(json!({"sub": "o", "exp": exp, "docs": ["other/*"]}));

    let bad = YClient::connect(daemon.port, "/team/a?token=not-a-jwt").err();
    assert_eq!(
        bad.map(http_status),
        Some(401),
        "a bad token gets no socket"
    );
    let denied = YClient::connect(daemon.port, &format!("/team/a?token={other_team}")).err();
    assert_eq!(denied.map(http_status), Some(403), "the policy says no");

    // The writer (token in Sec-WebSocket-Protocol, as a browser can send it) edits.
    let mut w = YClient::connect_with(daemon.port, "/team/a", Some(&writer)).expect("upgrade");
    w.send(&[YMessage::Sync(SyncMessage::Step1(&[0]))]);
    w.expect("SyncStep2", is_step2);
    w.send(&[YMessage::Sync(SyncMessage::Update(&text_update(1, "ok ")))]);

    // The reader syncs, and its edit is refused and never reaches the writer.
    let mut r =
        YClient::connect(daemon.port, &format!("/team/a?x=1&token={reader}")).expect("upgrade");
    r.send(&[YMessage::Sync(SyncMessage::Step1(&[0]))]);
    let step2 = r.expect("SyncStep2", is_step2);
    assert_eq!(render(&[&update_of(&step2)]), "ok ");
    r.send(&[YMessage::Sync(SyncMessage::Update(&text_update(2, "no ")))]);
    r.expect(
        "permission denied",
        |m| matches!(m, YMessage::Auth { denied_reason } if denied_reason.contains("read-only")),
    );
    let (frames, _) = w.collect(Duration::from_millis(800));
    for frame in &frames {
        for (m, _) in ywebsocket::decode_frame(frame, 64).expect("decodes") {
            if let YMessage::Sync(SyncMessage::Update(u)) = m {
                assert!(!render(&[u]).contains("no"), "the read-only edit leaked");
            }
        }
    }

    // No token while auth is on: upgraded (it might have been a Hocuspocus provider), then
    // told, and left open (no document) until the auth timeout closes it: closing at once
    // would make y-websocket reconnect in a tight loop.
    let mut anonymous = YClient::connect(daemon.port, "/team/a").expect("upgrade");
    anonymous.send(&[YMessage::Sync(SyncMessage::Step1(&[0]))]);
    let (frames, close) = anonymous.collect(Duration::from_secs(5));
    assert_eq!(
        close.map(|(code, _)| code),
        Some(4408),
        "closed by the auth timeout"
    );
    let got: Vec<YMessage<'_>> = frames
        .iter()
        .flat_map(|f| ywebsocket::decode_frame(f, 64).expect("decodes"))
        .map(|(m, _)| m)
        .collect();
    assert!(
        !got.is_empty() && got.iter().all(|m| matches!(m, YMessage::Auth { .. })),
        "nothing of the document, only permission denied: {got:?}"
    );
}
