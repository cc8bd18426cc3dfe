//! The real daemon binary on a free loopback port, driven over real WebSockets with frames
//! built by our own protocol code (the Node interop suite does the same with the real provider).

use crate::common;

use std::process::Command;
use std::time::Duration;

use common::{Daemon, Received, bin, render, text_update};
use zedi_sync::protocol::{self, AuthMessage, Message, Packet, SyncMessage, prepend_address};

fn update_payload(frame: &[u8]) -> Vec<u8> {
    match protocol::decode(frame) {
        Ok(Packet::Message {
            message: Message::Sync(SyncMessage::Update(u) | SyncMessage::Step2(u)),
            ..
        }) => u.to_vec(),
        other => panic!("not a sync update: {other:?}"),
    }
}

fn is_update(m: &Message<'_>) -> bool {
    matches!(m, Message::Sync(SyncMessage::Update(_)))
}

#[test]
fn health_and_metrics_describe_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("ZEDI__SERVER__NODE_ID", "node-a")]);
    let health = daemon.health();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["node_id"], "node-a");
    assert_eq!(health["connections"], 0);
    assert_eq!(health["documents"], 0);
    assert_eq!(health["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(health["store"], "ok");

    let mut c = daemon.ws();
    c.open("metrics-doc");
    c.send(
        "metrics-doc",
        Message::Sync(SyncMessage::Update(&text_update(1, "x"))),
    );
    c.expect_ack("metrics-doc");
    daemon.wait_health("one connection, one document", |h| {
        h["connections"] == 1 && h["documents"] == 1
    });

    let metrics = daemon.metrics();
    assert_eq!(metrics.value("zedi_connections_open", &[]), 1.0);
    assert_eq!(metrics.value("zedi_documents_open", &[]), 1.0);
    for (name, labels) in [
        (
            "zedi_messages_total",
            &[("direction", "in"), ("type", "sync")][..],
        ),
        (
            "zedi_messages_total",
            &[("direction", "out"), ("type", "sync_status")],
        ),
        ("zedi_bytes_total", &[("direction", "in")]),
        ("zedi_bytes_total", &[("direction", "out")]),
        ("zedi_update_apply_seconds_count", &[]),
        ("zedi_store_seconds_count", &[("op", "append")]),
        ("zedi_store_seconds_count", &[("op", "load")]),
    ] {
        assert!(
            metrics.value(name, labels) >= 1.0,
            "{name}{labels:?} counted nothing:\n{metrics}"
        );
    }
    // Protocol errors are labelled by kind once one happens.
    let mut bad = daemon.ws();
    bad.send_raw(vec![0xff]);
    bad.expect_close(4401);
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.value("zedi_protocol_errors_total", &[("kind", "malformed_frame")]),
        1.0
    );
}

#[test]
fn updates_are_acknowledged_and_broadcast_to_other_editors() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut a = daemon.ws();
    let mut b = daemon.ws();
    a.open("shared");
    b.open("shared");
    let update = text_update(11, "hello");
    a.send("shared", Message::Sync(SyncMessage::Update(&update)));
    a.expect_ack("shared");
    let relayed = b.expect("update on B", |addr, m| addr == "shared" && is_update(m));
    assert_eq!(render(&[&update_payload(&relayed)]), "hello");

    // A late joiner gets everything in its SyncStep2.
    let mut late = daemon.ws();
    let step2 = late.open("shared");
    assert_eq!(render(&[&step2]), "hello");
}

#[test]
fn awareness_is_relayed_and_removed_when_a_socket_closes() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut a = daemon.ws();
    let mut b = daemon.ws();
    a.open("aw");
    b.open("aw");
    // A's state, clock 1: echoed to A and relayed to B.
    let state = [
        1u8, 0x2a, 1, 13, b'{', b'"', b'n', b'"', b':', b'"', b'a', b'l', b'i', b'c', b'e', b'"',
        b'}',
    ];
    a.send("aw", Message::Awareness(&state));
    a.expect(
        "awareness echo",
        |_, m| matches!(m, Message::Awareness(p) if *p == state),
    );
    b.expect(
        "awareness relay",
        |_, m| matches!(m, Message::Awareness(p) if *p == state),
    );

    // QueryAwareness returns every live state.
    b.send("aw", Message::QueryAwareness);
    b.expect(
        "query answer",
        |_, m| matches!(m, Message::Awareness(p) if *p == state),
    );

    // A's socket goes away: B learns that client 42 is gone (clock 2, null state).
    drop(a);
    let removal = [1u8, 0x2a, 2, 4, b'n', b'u', b'l', b'l'];
    b.expect(
        "awareness removal",
        |_, m| matches!(m, Message::Awareness(p) if *p == removal),
    );
}

#[test]
fn stateless_goes_to_the_other_connections_of_that_document_only() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut a = daemon.ws();
    let mut b = daemon.ws();
    let mut other = daemon.ws();
    a.open("chat");
    b.open("chat");
    other.open("elsewhere");
    a.send("chat", Message::Stateless("{\"op\":\"ping\"}"));
    b.expect("stateless", |addr, m| {
        addr == "chat" && matches!(m, Message::Stateless("{\"op\":\"ping\"}"))
    });
    // Neither the sender nor another document hears it.
    for client in [&mut a, &mut other] {
        match client.recv(Duration::from_millis(400)) {
            Received::Frame(f) => {
                assert!(!matches!(
                    protocol::decode(&f),
                    Ok(Packet::Message {
                        message: Message::Stateless(_),
                        ..
                    })
                ))
            }
            Received::Closed(c) => panic!("closed: {c:?}"),
            Received::TimedOut => {}
        }
    }
}

#[test]
fn documents_multiplexed_on_one_socket_stay_isolated_and_close_separately() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut mux = daemon.ws();
    mux.open("doc-a");
    mux.open("doc-b");
    mux.send(
        "doc-a",
        Message::Sync(SyncMessage::Update(&text_update(1, "only-a"))),
    );
    mux.expect_ack("doc-a");
    mux.send(
        "doc-b",
        Message::Sync(SyncMessage::Update(&text_update(2, "only-b"))),
    );
    mux.expect_ack("doc-b");

    let mut reader = daemon.ws();
    assert_eq!(render(&[&reader.open("doc-a")]), "only-a");
    assert_eq!(render(&[&reader.open("doc-b")]), "only-b");

    // CLOSE detaches doc-a only; the server answers CLOSE and doc-b keeps syncing.
    mux.send("doc-a", Message::Close(None));
    mux.expect("CLOSE reply", |a, m| {
        a == "doc-a" && matches!(m, Message::Close(Some("provider_initiated")))
    });
    reader.send(
        "doc-a",
        Message::Sync(SyncMessage::Update(&text_update(3, "later-a"))),
    );
    reader.expect_ack("doc-a");
    reader.send(
        "doc-b",
        Message::Sync(SyncMessage::Update(&text_update(4, "later-b"))),
    );
    let got = mux.expect("doc-b update", |a, m| a == "doc-b" && is_update(m));
    assert_eq!(render(&[&update_payload(&got)]), "later-b");
    // Nothing of doc-a reaches the socket any more.
    loop {
        match mux.recv(Duration::from_millis(400)) {
            Received::Frame(f) => {
                if let Ok(Packet::Message { address, .. }) = protocol::decode(&f) {
                    assert_ne!(address, "doc-a", "frame for a closed document");
                }
            }
            Received::TimedOut => break,
            Received::Closed(c) => panic!("closed: {c:?}"),
        }
    }
}

#[test]
fn session_awareness_addresses_are_answered_with_the_full_address() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut c = daemon.ws();
    let address = "notes\0session-1";
    c.open(address);
    c.send(
        address,
        Message::Sync(SyncMessage::Update(&text_update(5, "via-session"))),
    );
    c.expect_ack(address);
    let mut plain = daemon.ws();
    assert_eq!(render(&[&plain.open("notes")]), "via-session");
}

#[test]
fn acknowledged_updates_survive_kill_9_and_unload() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[("ZEDI__DOCUMENTS__UNLOAD_GRACE_MS", "50")]);
    let mut updates = Vec::new();
    {
        let mut c = daemon.ws();
        c.open("durable");
        for i in 0..20u64 {
            let u = text_update(100 + i, "x");
            c.send("durable", Message::Sync(SyncMessage::Update(&u)));
            updates.push(u);
        }
        for _ in 0..20 {
            c.expect_ack("durable");
        }
    }
    // SIGKILL right after the acks: no chance to flush anything more.
    daemon.restart();
    let mut c = daemon.ws();
    let step2 = c.open("durable");
    assert_eq!(
        render(&[&step2]).len(),
        20,
        "every acknowledged update is back"
    );
    drop(c);

    // The document unloads when its last connection leaves, and loads again intact.
    daemon.wait_health("document unloaded", |h| h["documents"] == 0);
    let mut c = daemon.ws();
    assert_eq!(render(&[&c.open("durable")]).len(), 20);
}

#[test]
fn compaction_keeps_content_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[("ZEDI__STORE__COMPACT_AFTER_UPDATES", "5")]);
    let mut c = daemon.ws();
    c.open("compact");
    for i in 0..23u64 {
        c.send(
            "compact",
            Message::Sync(SyncMessage::Update(&text_update(200 + i, "y"))),
        );
        c.expect_ack("compact");
    }
    drop(c);
    daemon.wait_metrics("a compaction", |m| {
        m.value("zedi_store_seconds_count", &[("op", "compact")]) >= 1.0
    });
    daemon.restart();
    let mut c = daemon.ws();
    assert_eq!(render(&[&c.open("compact")]).len(), 23);
}

#[test]
fn sigterm_exits_cleanly_and_keeps_documents() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    let mut c = daemon.ws();
    c.open("term");
    c.send(
        "term",
        Message::Sync(SyncMessage::Update(&text_update(9, "kept"))),
    );
    c.expect_ack("term");
    assert_eq!(daemon.terminate(), Some(0), "clean exit on SIGTERM");
    let daemon = Daemon::start(dir.path(), &[]);
    let mut c = daemon.ws();
    assert_eq!(render(&[&c.open("term")]), "kept");
}

/// Every kind of bad input closes the offending socket with the right code, counts a metric,
/// and leaves the document and the other editors untouched.
#[test]
fn bad_input_closes_only_the_offender() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("ZEDI__LIMITS__MAX_FRAME_BYTES", "65536")]);
    let mut editor = daemon.ws();
    editor.open("victim");
    let good = text_update(77, "intact");
    editor.send("victim", Message::Sync(SyncMessage::Update(&good)));
    editor.expect_ack("victim");

    let authed = |address: &str| {
        let mut c = daemon.ws();
        c.open(address);
        c
    };
    // Malformed frame (truncated string) → 4401.
    let mut c = daemon.ws();
    c.send_raw(vec![0x0a, b'v']);
    c.expect_close(4401);
    // Unknown message type → 4205.
    let mut c = daemon.ws();
    c.send_raw(prepend_address("victim", &[42]));
    c.expect_close(4205);
    // Undecodable Yjs update → refused by the firewall: SyncStatus(0), then a CLOSE for that
    // document; the socket stays open, nothing applied.
    let mut c = authed("victim");
    c.send(
        "victim",
        Message::Sync(SyncMessage::Update(&[0xde, 0xad, 0xbe, 0xef, 0xff])),
    );
    c.expect("SyncStatus(0)", |a, m| {
        a == "victim" && matches!(m, Message::SyncStatus(false))
    });
    c.expect("CLOSE", |a, m| {
        a == "victim" && matches!(m, Message::Close(Some(_)))
    });
    // Undecodable state vector → CLOSE for that document.
    c.open("victim");
    c.send("victim", Message::Sync(SyncMessage::Step1(&[0xff])));
    c.expect("CLOSE", |a, m| {
        a == "victim" && matches!(m, Message::Close(Some(_)))
    });
    // A third refusal on the same socket (limits.max_refused_updates = 3) closes the socket.
    c.open("victim");
    c.send("victim", Message::Sync(SyncMessage::Update(&[0x01, 0x02])));
    c.expect_close(4205);
    // Awareness that is not JSON → 4205.
    let mut c = authed("victim");
    c.send(
        "victim",
        Message::Awareness(&[1, 5, 1, 3, b'{', b'x', b'!']),
    );
    c.expect_close(4205);
    // Empty and over-long document names → 4205.
    let mut c = daemon.ws();
    c.auth("");
    c.expect_close(4205);
    let mut c = daemon.ws();
    c.auth(&"n".repeat(10_000));
    c.expect_close(4205);
    // A frame over the limit → 1009.
    let mut c = daemon.ws();
    c.send("victim", Message::Stateless(&"z".repeat(70_000)));
    c.expect_close(1009);
    // Server-only message type from a client → CLOSE for that document, socket stays.
    let mut c = authed("victim");
    c.send("victim", Message::BroadcastStateless("x"));
    c.expect("CLOSE", |a, m| {
        a == "victim" && matches!(m, Message::Close(Some(_)))
    });
    // Text frames are not the protocol → 4401.
    let mut c = daemon.ws();
    c.send_text("hello");
    c.expect_close(4401);

    // The document and the original editor are fine.
    let after = text_update(78, "still-");
    editor.send("victim", Message::Sync(SyncMessage::Update(&after)));
    editor.expect_ack("victim");
    let mut check = daemon.ws();
    let content = render(&[&check.open("victim")]);
    // Two concurrent inserts at position 0: Yjs orders them by client id, both must be there.
    assert_eq!(content.len(), "still-intact".len(), "{content}");
    assert!(
        content.contains("intact") && content.contains("still-"),
        "{content}"
    );
    let metrics = daemon.metrics();
    for kind in [
        "malformed_frame",
        "unknown_message_type",
        "invalid_update",
        "repeated_invalid_updates",
        "bad_awareness",
        "invalid_document_name",
        "frame_too_large",
        "server_only_message",
        "text_frame",
    ] {
        assert!(
            metrics.value("zedi_protocol_errors_total", &[("kind", kind)]) >= 1.0,
            "{kind} not counted:\n{metrics}"
        );
    }
}

#[test]
fn frames_before_auth_are_queued_then_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("ZEDI__LIMITS__MAX_PREAUTH_MESSAGES", "4")]);
    // The provider's order: SyncStep1 and awareness may come before Auth is processed.
    let mut c = daemon.ws();
    c.send("queued", Message::Sync(SyncMessage::Step1(&[0])));
    c.send(
        "queued",
        Message::Sync(SyncMessage::Update(&text_update(3, "early"))),
    );
    c.auth("queued");
    c.expect("Authenticated", |_, m| {
        matches!(m, Message::Auth(AuthMessage::Authenticated { .. }))
    });
    c.expect("SyncStep2", |_, m| {
        matches!(m, Message::Sync(SyncMessage::Step2(_)))
    });
    c.expect_ack("queued");
    let mut reader = daemon.ws();
    assert_eq!(render(&[&reader.open("queued")]), "early");
    // Over the bound without ever authenticating → 4205.
    let mut flood = daemon.ws();
    for _ in 0..6 {
        flood.send("never-authed", Message::Stateless("x"));
    }
    flood.expect_close(4205);
}

#[test]
fn v4_providers_get_one_byte_pings_and_idle_sockets_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("ZEDI__TIMEOUTS__PING_INTERVAL_MS", "200"),
            ("ZEDI__TIMEOUTS__IDLE_MS", "1500"),
        ],
    );
    let mut c = daemon.ws();
    c.open("pinged");
    let mut saw_ping = false;
    for _ in 0..20 {
        match c.recv_raw(Duration::from_millis(100)) {
            Some(b) if b == protocol::PING_FRAME => {
                saw_ping = true;
                c.send_raw(protocol::PONG_FRAME.to_vec());
                break;
            }
            _ => {}
        }
    }
    assert!(saw_ping, "v4 provider gets the one-byte Ping");
    // Keep answering: still open after longer than the idle timeout.
    for _ in 0..10 {
        c.send_raw(protocol::PONG_FRAME.to_vec());
        // Pacing: the pongs must span more than the idle timeout for the check to mean anything.
        std::thread::sleep(Duration::from_millis(200));
    }
    c.send(
        "pinged",
        Message::Sync(SyncMessage::Update(&text_update(1, "alive"))),
    );
    c.expect_ack("pinged");
    // A socket that sends nothing, not even a pong to WebSocket pings (the client does not read,
    // so tungstenite cannot auto-answer), is closed with 4408. The client cannot always read the
    // close frame (its pending pong write fails first), so the server's count is what we check.
    drop(c);
    let timeouts = |m: &common::Metrics| m.value("zedi_closes_total", &[("reason", "timeout")]);
    assert_eq!(timeouts(&daemon.metrics()), 0.0, "nobody timed out yet");
    let _silent = daemon.ws();
    daemon.wait_metrics("the silent socket closed with 4408", |m| timeouts(m) > 0.0);
}

#[test]
fn check_config_prints_redacted_settings_and_rejects_bad_ones() {
    let out = Command::new(bin())
        .arg("check-config")
        .env("JWT_SECRET", "super-secret-value")
        .env("PORT", "4321")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("port = 4321"), "{text}");
    assert!(
        !text.contains("super-secret-value"),
        "secret leaked: {text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "[limits]\nmax_frame_bytes = 10\n").unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&file)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("limits.max_frame_bytes"), "{err}");

    let out = Command::new(bin())
        .arg("check-config")
        .env("ZEDI__SERVER__PORT", "99999")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.port"));
}

#[test]
fn healthcheck_subcommand_reports_the_local_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let port = daemon.port.to_string();
    let ok = Command::new(bin())
        .arg("healthcheck")
        .env("PORT", &port)
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    drop(daemon);
    let down = Command::new(bin())
        .arg("healthcheck")
        .env("PORT", &port)
        .output()
        .unwrap();
    assert_eq!(down.status.code(), Some(1));
}

/// Sends raw bytes to the daemon and reads the HTTP response head (up to the blank line),
/// byte by byte so nothing after it is consumed.
fn raw_request(port: u16, bytes: &[u8]) -> (std::net::TcpStream, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(bytes).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
        if s.read(&mut byte).unwrap() == 0 {
            break;
        }
        head.push(byte[0]);
    }
    (s, String::from_utf8_lossy(&head).into_owned())
}

fn upgrade_request(extra_headers: &str) -> String {
    format!(
        "GET /any/path HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n{extra_headers}\r\n"
    )
}

/// A client-to-server WebSocket frame: binary, final, masked (RFC 6455 5.3).
fn masked_binary(payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126, "short frames only");
    let key = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x82, 0x80 | payload.len() as u8];
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

#[test]
fn frames_sent_together_with_the_upgrade_request_are_not_lost() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let auth = protocol::encode(
        "early",
        &Message::Auth(AuthMessage::Token {
            token: "any",
            provider_version: Some("4.8.0"),
        }),
    );
    // Request and first frame in one write: the frame arrives in the same read as the
    // request, before the server has answered the handshake.
    let mut bytes = upgrade_request(
        "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    )
    .into_bytes();
    bytes.extend(masked_binary(&auth));
    let (stream, head) = raw_request(daemon.port, &bytes);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    let mut ws =
        tungstenite::WebSocket::from_raw_socket(stream, tungstenite::protocol::Role::Client, None);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        assert!(std::time::Instant::now() < deadline, "no Authenticated");
        if let tungstenite::Message::Binary(frame) = ws.read().unwrap()
            && let Ok(Packet::Message { address, message }) = protocol::decode(&frame)
        {
            assert_eq!(address, "early");
            assert!(matches!(
                message,
                Message::Auth(AuthMessage::Authenticated { .. })
            ));
            break;
        }
    }
}

#[test]
fn upgrades_that_are_not_websockets_get_plain_http_answers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    // Another protocol: not ours, as on any other path.
    let (_, head) = raw_request(daemon.port, upgrade_request("Upgrade: h2c\r\n").as_bytes());
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    // A WebSocket upgrade without its key: a bad handshake, refused, and the node carries on.
    let (_, head) = raw_request(
        daemon.port,
        upgrade_request("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n").as_bytes(),
    );
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    assert_eq!(daemon.health()["connections"], 0);
    let mut c = daemon.ws();
    c.open("still-serving");
}
