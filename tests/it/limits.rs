//! Hardening: every limit closes or refuses only the offender, with the matching code, a metric
//! and one log line; everyone else keeps editing.

use crate::common;

use std::time::{Duration, Instant};

use common::{Client, Daemon, Received, render, text_update};
use zedi_sync::protocol::{Message, SyncMessage, prepend_address};

fn big_update(client: u64, bytes: usize) -> Vec<u8> {
    text_update(client, &"x".repeat(bytes))
}

#[test]
fn a_sender_over_the_message_rate_is_slowed_down_not_closed() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("ZEDI__LIMITS__MAX_MESSAGES_PER_SEC", "20"),
            ("ZEDI__LIMITS__MAX_MESSAGE_BURST", "40"),
        ],
    );
    let mut editor = daemon.ws();
    editor.open("rated");
    let mut importer = daemon.ws();
    importer.open("rated");
    // A script importing content: 100 updates at once, more than twice the burst. The daemon
    // stops reading this socket while its bucket is empty (TCP slows the sender) and takes
    // every update; the sender is never disconnected.
    let frames = (0..100u64)
        .map(|i| {
            zedi_sync::protocol::encode(
                "rated",
                &Message::Sync(SyncMessage::Update(&text_update(100 + i, "imported "))),
            )
        })
        .collect();
    importer.send_batch(frames);
    for _ in 0..100 {
        importer.expect_ack("rated");
    }
    editor.send(
        "rated",
        Message::Sync(SyncMessage::Update(&text_update(1, "fine"))),
    );
    editor.expect_ack("rated");
    let metrics = daemon.metrics();
    assert!(
        metrics.value("zedi_protocol_errors_total", &[("kind", "rate_throttled")]) >= 1.0,
        "reading was never paused"
    );
    assert_eq!(
        metrics.value("zedi_protocol_errors_total", &[("kind", "rate_limited")]),
        0.0
    );
    let mut reader = daemon.ws();
    assert_eq!(
        render(&[&reader.open("rated")]).matches("imported").count(),
        100,
        "every update of the burst was applied"
    );
}

#[test]
fn connection_limits_per_node_and_per_forwarded_address() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("ZEDI__LIMITS__MAX_CONNECTIONS", "5"),
            ("ZEDI__LIMITS__MAX_CONNECTIONS_PER_IP", "2"),
        ],
    );
    let url = format!("ws://127.0.0.1:{}/", daemon.port);
    let connect_as = |ip: &str| {
        let mut request =
            tungstenite::client::IntoClientRequest::into_client_request(url.as_str()).unwrap();
        request
            .headers_mut()
            .insert("x-forwarded-for", ip.parse().unwrap());
        tungstenite::connect(request)
    };
    let status = |r: Result<_, tungstenite::Error>| match r {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
    };
    // 127.0.0.1 is a trusted proxy by default, so X-Forwarded-For names the client.
    let a1 = connect_as("203.0.113.1").unwrap();
    let a2 = connect_as("203.0.113.1").unwrap();
    assert_eq!(
        status(connect_as("203.0.113.1")),
        429,
        "third from one address"
    );
    let b1 = connect_as("203.0.113.2").unwrap();
    let b2 = connect_as("203.0.113.2").unwrap();
    let c1 = connect_as("203.0.113.3").unwrap();
    assert_eq!(
        status(connect_as("203.0.113.4")),
        503,
        "sixth on a node limited to five"
    );
    drop((a1, a2, b1, b2, c1));
    daemon.wait_health("connections released", |h| h["connections"] == 0);
    assert_eq!(
        status(connect_as("203.0.113.1")),
        101,
        "places are given back"
    );
    let metrics = daemon.metrics();
    assert_eq!(
        metrics.value(
            "zedi_connections_refused_total",
            &[("reason", "address_full")]
        ),
        1.0
    );
    assert_eq!(
        metrics.value("zedi_connections_refused_total", &[("reason", "node_full")]),
        1.0
    );
}

#[test]
fn a_document_cannot_grow_past_its_limit() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("ZEDI__LIMITS__MAX_DOCUMENT_BYTES", "3000")]);
    let mut a = daemon.ws();
    a.open("bounded-doc");
    a.send(
        "bounded-doc",
        Message::Sync(SyncMessage::Update(&big_update(1, 1500))),
    );
    a.expect_ack("bounded-doc");
    a.send(
        "bounded-doc",
        Message::Sync(SyncMessage::Update(&big_update(2, 2000))),
    );
    a.expect("refusal", |_, m| matches!(m, Message::SyncStatus(false)));
    a.expect("CLOSE", |d, m| {
        d == "bounded-doc" && matches!(m, Message::Close(Some("document too large")))
    });
    let mut reader = daemon.ws();
    assert_eq!(
        render(&[&reader.open("bounded-doc")]).len(),
        1500,
        "the refused update was not applied"
    );
    assert_eq!(
        daemon.metrics().value(
            "zedi_protocol_errors_total",
            &[("kind", "document_too_large")]
        ),
        1.0
    );
}

fn slow_consumers(daemon: &Daemon) -> f64 {
    daemon
        .metrics()
        .value("zedi_protocol_errors_total", &[("kind", "slow_consumer")])
}

#[test]
fn a_reader_that_stops_reading_is_dropped_and_the_document_never_waits() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("ZEDI__LIMITS__MAX_FRAME_BYTES", "65536"),
            ("ZEDI__LIMITS__MAX_OUTBOUND_BYTES", "65536"),
            ("ZEDI__LIMITS__MAX_BYTES_PER_SEC", "100000000"),
        ],
    );
    let mut stuck = daemon.ws();
    stuck.open("busy");
    let mut writer = daemon.ws();
    writer.open("busy");
    let started = Instant::now();
    // Far more than loopback socket buffers hold, so the stuck reader's queue must fill.
    for i in 0..500u64 {
        writer.send(
            "busy",
            Message::Sync(SyncMessage::Update(&big_update(100 + i, 40_000))),
        );
        writer.expect_ack("busy");
        if slow_consumers(&daemon) == 1.0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the writer was slowed down"
        );
    }
    assert_eq!(slow_consumers(&daemon), 1.0, "slow reader not detected");
    writer.send(
        "busy",
        Message::Sync(SyncMessage::Update(&text_update(9999, "still"))),
    );
    writer.expect_ack("busy");
    // Closed at once, while the client still reads nothing: its socket is gone from the
    // node and what was queued for it is released.
    daemon.wait_health("the slow socket closed", |h| h["connections"] == 1);
    assert_eq!(
        daemon
            .metrics()
            .value("zedi_memory_sheds_total", &[("reason", "slow_reader")]),
        1.0
    );
    // When it reads again it finds the connection closed (queued frames, then a reset or
    // the close; nothing that keeps it open).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match stuck.try_recv(Duration::from_millis(200)) {
            Ok(Received::Closed(_)) | Err(_) => break,
            _ => assert!(Instant::now() < deadline, "the slow socket was not closed"),
        }
    }
}

#[test]
fn connection_storms_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[("ZEDI__DOCUMENTS__UNLOAD_GRACE_MS", "50")]);
    let port = daemon.port;
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..150 {
                    let mut c = Client::connect(port);
                    let doc = format!("storm-{}", (t * 150 + i) % 40);
                    c.open(&doc);
                    if i % 10 == 0 {
                        c.send(
                            &doc,
                            Message::Sync(SyncMessage::Update(&text_update(1 + i as u64, "s"))),
                        );
                        c.expect_ack(&doc);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    daemon.wait_health("every connection and document gone", |h| {
        h["connections"] == 0 && h["documents"] == 0
    });
    let metrics = daemon.metrics();
    assert_eq!(metrics.value("zedi_connections_total", &[]), 600.0);
    assert_eq!(metrics.value("zedi_store_pending_writes", &[]), 0.0);
}

#[test]
fn bad_names_and_garbage_after_a_valid_prefix_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut c = daemon.ws();
    c.auth("bad\u{7}name");
    c.expect_close(4205);
    // A valid SyncStatus followed by junk: the frame as a whole is malformed.
    let mut c = daemon.ws();
    c.send_raw(prepend_address("doc", &[8, 1, 0xde, 0xad]));
    c.expect_close(4401);
}

#[test]
fn pending_updates_are_kept_and_released_when_their_predecessor_arrives() {
    use yrs::{Text, Transact};
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &[]);
    let doc = yrs::Doc::with_client_id(77);
    let t = doc.get_or_insert_text("default");
    let first = {
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 0, "ab");
        txn.encode_update_v1()
    };
    let second = {
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, 2, "cd");
        txn.encode_update_v1()
    };
    let mut c = daemon.ws();
    c.open("pending");
    // The second update references structs the server does not have yet: kept, acknowledged.
    c.send("pending", Message::Sync(SyncMessage::Update(&second)));
    c.expect_ack("pending");
    let mut r = daemon.ws();
    assert_eq!(render(&[&r.open("pending")]), "", "nothing visible yet");
    daemon.restart(); // the pending update must survive a restart too
    let mut c = daemon.ws();
    c.open("pending");
    c.send("pending", Message::Sync(SyncMessage::Update(&first)));
    c.expect_ack("pending");
    let mut r = daemon.ws();
    assert_eq!(render(&[&r.open("pending")]), "abcd");
}
