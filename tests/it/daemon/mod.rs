//! The real daemon binary on a free loopback port, driven over real WebSockets with frames
//! built by our own protocol code (the Node interop suite does the same with the real provider).

mod bad_input;
mod cli;
mod upgrade;

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
