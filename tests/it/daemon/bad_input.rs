//! Bad input and keepalive: what closes a socket, what only closes a document, what queues.

use super::*;
use crate::common::Client;

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

    refusals_that_close_the_socket(&daemon);
    refusals_that_close_only_the_document(&daemon);

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

fn authed(daemon: &Daemon, address: &str) -> Client {
    let mut c = daemon.ws();
    c.open(address);
    c
}

fn expect_document_closed(c: &mut Client, address: &str) {
    c.expect("CLOSE", |a, m| {
        a == address && matches!(m, Message::Close(Some(_)))
    });
}

/// Input that is not the protocol at all, or names no valid document: the socket goes.
fn refusals_that_close_the_socket(daemon: &Daemon) {
    // Malformed frame (truncated string) → 4401.
    let mut c = daemon.ws();
    c.send_raw(vec![0x0a, b'v']);
    c.expect_close(4401);
    // Unknown message type → 4205.
    let mut c = daemon.ws();
    c.send_raw(prepend_address("victim", &[42]));
    c.expect_close(4205);
    // Awareness that is not JSON → 4205.
    let mut c = authed(daemon, "victim");
    c.send(
        "victim",
        Message::Awareness(&[1, 5, 1, 3, b'{', b'x', b'!']),
    );
    c.expect_close(4205);
    // Empty and over-long document names → 4205. An empty address starts the frame with a zero
    // byte, which on a document path is how a y-websocket client opens: on the bare route it can
    // only be Hocuspocus.
    let mut c = Client::connect_path(daemon.port, "/");
    c.auth("");
    c.expect_close(4205);
    let mut c = daemon.ws();
    c.auth(&"n".repeat(10_000));
    c.expect_close(4205);
    // A frame over the limit → 1009.
    let mut c = daemon.ws();
    c.send("victim", Message::Stateless(&"z".repeat(70_000)));
    c.expect_close(1009);
    // Text frames are not the protocol → 4401.
    let mut c = daemon.ws();
    c.send_text("hello");
    c.expect_close(4401);
}

/// Well-formed frames with bad content for one document: that document is closed for the
/// sender, the socket stays, until repeated refusals close it.
fn refusals_that_close_only_the_document(daemon: &Daemon) {
    // Undecodable Yjs update → refused by the firewall: SyncStatus(0), then a CLOSE for that
    // document; the socket stays open, nothing applied.
    let mut c = authed(daemon, "victim");
    c.send(
        "victim",
        Message::Sync(SyncMessage::Update(&[0xde, 0xad, 0xbe, 0xef, 0xff])),
    );
    c.expect("SyncStatus(0)", |a, m| {
        a == "victim" && matches!(m, Message::SyncStatus(false))
    });
    expect_document_closed(&mut c, "victim");
    // Undecodable state vector → CLOSE for that document.
    c.open("victim");
    c.send("victim", Message::Sync(SyncMessage::Step1(&[0xff])));
    expect_document_closed(&mut c, "victim");
    // A third refusal on the same socket (limits.max_refused_updates = 3) closes the socket.
    c.open("victim");
    c.send("victim", Message::Sync(SyncMessage::Update(&[0x01, 0x02])));
    c.expect_close(4205);
    // Server-only message type from a client → CLOSE for that document, socket stays.
    let mut c = authed(daemon, "victim");
    c.send("victim", Message::BroadcastStateless("x"));
    expect_document_closed(&mut c, "victim");
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
