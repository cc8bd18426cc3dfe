//! Bounded memory against the real daemon: what clients can make a node hold is charged to its
//! memory budget, every holder has a share, and the node sheds (refuses, then closes the
//! biggest) instead of growing. Each test keeps an honest co-editor working throughout.

use crate::common;

use std::time::{Duration, Instant};

use common::{Client, Daemon, Metrics, Received, text_update};
use zedi_sync::protocol::{Message, SyncMessage};

const MIB: usize = 1024 * 1024;

fn big_update(client: u64, bytes: usize) -> Vec<u8> {
    text_update(client, &"x".repeat(bytes))
}

/// A series of /metrics: its name and exact labels.
type Series = (&'static str, &'static [(&'static str, &'static str)]);

fn metric(metrics: &Metrics, (name, labels): Series) -> f64 {
    metrics.value(name, labels)
}

/// Waits (bounded) until `series` satisfies `cond`; returns that scrape.
fn wait_metric(daemon: &Daemon, what: &str, series: Series, cond: impl Fn(f64) -> bool) -> Metrics {
    daemon.wait_metrics(what, |m| cond(metric(m, series)))
}

/// The honest co-editor still edits and is acknowledged.
fn still_edits(editor: &mut Client, doc: &str, client: u64) {
    editor.send(
        doc,
        Message::Sync(SyncMessage::Update(&text_update(client, "still here"))),
    );
    editor.expect_ack(doc);
}

/// Whether the daemon has closed this client's socket (a close frame, EOF or a reset); a
/// socket that is still open just times out.
fn is_closed(client: &mut Client) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match client.try_recv(Duration::from_millis(200)) {
            Ok(Received::Closed(_)) | Err(_) => return true,
            Ok(Received::Frame(_)) => {}
            Ok(Received::TimedOut) => return false,
        }
    }
    false
}

#[test]
fn stuck_readers_are_closed_at_the_write_deadline_and_release_what_they_held() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("ZEDI__TIMEOUTS__WRITE_STALL_MS", "500"),
            ("ZEDI__LIMITS__MAX_BYTES_PER_SEC", "100000000"),
        ],
    );
    const STUCK: usize = 5;
    let mut stuck: Vec<Client> = (0..STUCK).map(|_| daemon.ws()).collect();
    for s in &mut stuck {
        s.open("busy");
    }
    let mut writer = daemon.ws();
    writer.open("busy");
    let sheds: Series = ("zedi_memory_sheds_total", &[("reason", "write_stall")]);
    // The stuck readers never read again: once their socket buffers are full, output waits,
    // and after the deadline the daemon must drop them whatever they do.
    for i in 0..600u64 {
        writer.send(
            "busy",
            Message::Sync(SyncMessage::Update(&big_update(100 + i, 40_000))),
        );
        writer.expect_ack("busy");
        if metric(&daemon.metrics(), sheds) >= STUCK as f64 {
            break;
        }
    }
    wait_metric(&daemon, "every stuck reader closed", sheds, |v| {
        v == STUCK as f64
    });
    // Closed and released while they still read nothing: only the writer's socket is left.
    daemon.wait_health("stuck sockets gone", |h| h["connections"] == 1);
    wait_metric(
        &daemon,
        "their queues released",
        ("zedi_memory_budget_used_bytes", &[("holder", "outbound")]),
        |v| v < 64.0 * 1024.0,
    );
    still_edits(&mut writer, "busy", 9999);
    for s in &mut stuck {
        assert!(is_closed(s), "a stuck reader's socket is still open");
    }
}

#[test]
fn preauth_floods_from_many_sockets_of_one_address_stay_inside_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("ZEDI__LIMITS__MAX_PREAUTH_BYTES", "1048576"),
            ("ZEDI__LIMITS__MAX_PREAUTH_BYTES_PER_ADDRESS", "4194304"),
            ("ZEDI__LIMITS__MAX_BYTES_PER_SEC", "100000000"),
        ],
    );
    let mut editor = daemon.ws();
    editor.open("shared");
    let update = big_update(7, 900_000);
    // Ten sockets of one address each queue 900 KB for a document they never authenticate:
    // within each socket's 1 MiB, but the address may hold only 4 MiB together.
    let mut flood: Vec<Client> = (0..10)
        .map(|_| Client::connect_as(daemon.port, "203.0.113.9"))
        .collect();
    for f in &mut flood {
        f.send("shared", Message::Sync(SyncMessage::Update(&update)));
    }
    wait_metric(
        &daemon,
        "the address's share enforced",
        ("zedi_protocol_errors_total", &[("kind", "preauth_limit")]),
        |v| v == 6.0,
    );
    let metrics = daemon.metrics();
    let held = metric(
        &metrics,
        ("zedi_memory_budget_used_bytes", &[("holder", "preauth")]),
    );
    assert!(
        held <= 4.0 * MIB as f64 && held >= 3.0 * MIB as f64,
        "pre-auth bytes held: {held}"
    );
    let closed = flood.iter_mut().map(is_closed).filter(|c| *c).count();
    assert_eq!(closed, 6, "four sockets fit in the address's share");
    // Another address has a share of its own.
    let mut other = Client::connect_as(daemon.port, "203.0.113.10");
    other.send("shared", Message::Sync(SyncMessage::Update(&update)));
    assert!(!is_closed(&mut other), "another address was refused");
    still_edits(&mut editor, "shared", 8);
    drop(flood);
    drop(other);
    wait_metric(
        &daemon,
        "pre-auth bytes released",
        ("zedi_memory_budget_used_bytes", &[("holder", "preauth")]),
        |v| v == 0.0,
    );
}

#[test]
fn a_long_session_id_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), &[]);
    let mut editor = daemon.ws();
    editor.open("notes");
    let mut attacker = daemon.ws();
    let address = format!("notes\0{}", "s".repeat(4 * MIB));
    attacker.auth(&address);
    let reason = attacker.expect_close(4205);
    assert!(reason.contains("address too long"), "{reason}");
    still_edits(&mut editor, "notes", 3);
    assert_eq!(
        metric(
            &daemon.metrics(),
            ("zedi_protocol_errors_total", &[("kind", "invalid_address")])
        ),
        1.0
    );
    // A v4 provider's real address (name, NUL, a UUID) is fine.
    let mut provider = daemon.ws();
    provider.open("notes\u{0}0b9c5a8e-4d0f-4b7e-9a51-4f0c2b7d9e11");
}

#[test]
fn a_socket_without_an_authenticated_document_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("ZEDI__TIMEOUTS__AUTH_MS", "1000"),
            ("ZEDI__TIMEOUTS__PING_INTERVAL_MS", "200"),
        ],
    );
    let mut editor = daemon.ws();
    editor.open("doc");
    // Reading answers the daemon's pings, so this socket is never idle; it just never
    // authenticates anything.
    let mut lurker = daemon.ws();
    let reason = lurker.expect_close(4408);
    assert!(reason.contains("authentication"), "{reason}");
    // The editor was connected as long, but has a document open.
    still_edits(&mut editor, "doc", 4);
    assert_eq!(
        metric(
            &daemon.metrics(),
            ("zedi_protocol_errors_total", &[("kind", "auth_timeout")])
        ),
        1.0
    );
}

/// Limits that fit a 16 MiB budget (each per-socket share at most half of it, a document at its
/// largest too, with a factor up to 12). The budget counts charges only: a debug daemon's own
/// resident size is near 16 MiB, and these tests are about what clients make it hold.
const SMALL_NODE: &[(&str, &str)] = &[
    ("ZEDI__LIMITS__MEMORY_BUDGET_BYTES", "16777216"),
    ("ZEDI__LIMITS__MEMORY_BUDGET_MEASURES_RSS", "false"),
    ("ZEDI__LIMITS__MAX_DOCUMENT_BYTES", "699050"),
    ("ZEDI__LIMITS__MAX_FRAME_BYTES", "4194304"),
    ("ZEDI__LIMITS__MAX_OUTBOUND_BYTES", "8388608"),
    ("ZEDI__LIMITS__MAX_PREAUTH_BYTES", "4194304"),
    ("ZEDI__LIMITS__MAX_PREAUTH_BYTES_PER_ADDRESS", "8388608"),
    ("ZEDI__LIMITS__MAX_BYTES_PER_SEC", "100000000"),
    ("ZEDI__DOCUMENTS__UNLOAD_GRACE_MS", "100"),
];

fn upgrade_status(port: u16) -> u16 {
    match tungstenite::connect(format!("ws://127.0.0.1:{port}/")) {
        Ok(_) => 101,
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_nearly_full_budget_refuses_connections_then_documents_and_health_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = SMALL_NODE.to_vec();
    env.push(("ZEDI__LIMITS__DOCUMENT_MEMORY_FACTOR", "12"));
    let daemon = Daemon::start(dir.path(), &env);
    let mut writer = daemon.ws();
    writer.open("big");
    writer.open("big2");
    // Two documents of 650 KB (each at most 699050 bytes, half the budget at factor 12), so
    // 1.3 MB × 12 is 93 % of the budget: past both refusal levels, short of shedding. In small
    // steps, because an update in flight is charged too (received, queued for the store,
    // broadcast): one big step would pass the budget, and the writer would be the socket shed.
    for client in 1..=10 {
        let doc = if client % 2 == 0 { "big" } else { "big2" };
        writer.send(
            doc,
            Message::Sync(SyncMessage::Update(&big_update(client, 130_000))),
        );
        writer.expect_ack(doc);
    }
    assert_eq!(upgrade_status(daemon.port), 503, "new sockets are refused");
    let (status, _) = common::http_get(daemon.port, "/health").unwrap();
    assert_eq!(status, 200, "the task must not look unhealthy");
    writer.auth("other");
    writer.expect("CLOSE for a document not loaded", |a, m| {
        a == "other" && matches!(m, Message::Close(Some(r)) if r.contains("server busy"))
    });
    still_edits(&mut writer, "big", 11);
    let metrics = daemon.metrics();
    assert!(
        metric(
            &metrics,
            (
                "zedi_memory_sheds_total",
                &[("reason", "connection_refused")]
            )
        ) >= 1.0
    );
    assert!(
        metric(
            &metrics,
            ("zedi_memory_sheds_total", &[("reason", "document_refused")])
        ) >= 1.0
    );
    // Once the document unloads its charge goes, and the node takes connections again.
    drop(writer);
    wait_metric(
        &daemon,
        "the document's charge released",
        ("zedi_memory_budget_used_bytes", &[("holder", "documents")]),
        |v| v == 0.0,
    );
    assert_eq!(upgrade_status(daemon.port), 101);
}

#[test]
fn over_the_budget_the_socket_holding_the_most_is_closed_first() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = SMALL_NODE.to_vec();
    env.push(("ZEDI__LIMITS__DOCUMENT_MEMORY_FACTOR", "2"));
    env.push(("ZEDI__LIMITS__MAX_DOCUMENT_BYTES", "4194304"));
    // Long enough that only the budget can close the stuck reader here.
    env.push(("ZEDI__TIMEOUTS__WRITE_STALL_MS", "120000"));
    let daemon = Daemon::start(dir.path(), &env);
    // Two documents, each of at most 699050 bytes (SMALL_NODE): the stuck reader has both
    // open, so it is sent all that is written, and holds the most.
    let docs = ["growing", "growing2"];
    let mut stuck = daemon.ws();
    let mut writer = daemon.ws();
    for doc in docs {
        stuck.open(doc);
        writer.open(doc);
    }
    let shed: Series = ("zedi_memory_sheds_total", &[("reason", "socket_closed")]);
    for i in 0..400u64 {
        let doc = docs[i as usize % 2];
        writer.send(
            doc,
            Message::Sync(SyncMessage::Update(&big_update(100 + i, 40_000))),
        );
        writer.expect_ack(doc);
        if metric(&daemon.metrics(), shed) >= 1.0 {
            break;
        }
    }
    let metrics = wait_metric(&daemon, "the stuck reader shed", shed, |v| v >= 1.0);
    assert_eq!(
        metric(
            &metrics,
            ("zedi_memory_sheds_total", &[("reason", "slow_reader")])
        ),
        0.0,
        "the budget, not the per-socket share, closed it"
    );
    daemon.wait_health("the stuck reader gone", |h| h["connections"] == 1);
    still_edits(&mut writer, "growing", 9999);
    assert!(is_closed(&mut stuck));
}

#[test]
fn resident_memory_nothing_charges_still_fills_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = SMALL_NODE.to_vec();
    env.push(("ZEDI__LIMITS__MEMORY_BUDGET_MEASURES_RSS", "true"));
    let daemon = Daemon::start(dir.path(), &env);
    // Nothing is charged yet, but a daemon is resident past 80 % of 16 MiB (a release build
    // starts at ~17 MiB): once the sampler has seen it (every 100 ms), new sockets are refused
    // as for a full budget.
    let metrics = wait_metric(
        &daemon,
        "the resident size sampled",
        ("zedi_memory_resident_bytes", &[]),
        |v| v >= 0.8 * 16.0 * MIB as f64,
    );
    assert_eq!(
        metric(
            &metrics,
            ("zedi_memory_budget_used_bytes", &[("holder", "documents")])
        ),
        0.0
    );
    assert!(
        metric(&metrics, ("zedi_memory_budget_fill_bytes", &[])) >= 0.8 * 16.0 * MIB as f64,
        "the fill is at least the resident size"
    );
    assert_eq!(upgrade_status(daemon.port), 503, "new sockets are refused");
    let (status, _) = common::http_get(daemon.port, "/health").unwrap();
    assert_eq!(status, 200, "the task must not look unhealthy");
    assert!(
        metric(
            &daemon.metrics(),
            (
                "zedi_memory_sheds_total",
                &[("reason", "connection_refused")]
            )
        ) >= 1.0
    );
    drop(daemon);

    // The same node counting charges alone takes the socket: the refusal above was the
    // resident floor's.
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(dir.path(), SMALL_NODE);
    wait_metric(
        &daemon,
        "the resident size sampled",
        ("zedi_memory_resident_bytes", &[]),
        |v| v >= 0.8 * 16.0 * MIB as f64,
    );
    assert_eq!(upgrade_status(daemon.port), 101);
    let mut editor = daemon.ws();
    editor.open("doc");
    still_edits(&mut editor, "doc", 1);
}

#[test]
fn preauth_queues_of_many_addresses_together_stop_at_a_quarter_of_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = SMALL_NODE.to_vec();
    // A paused socket's close is noticed when the next ping cannot be written.
    env.push(("ZEDI__TIMEOUTS__PING_INTERVAL_MS", "1000"));
    let daemon = Daemon::start(dir.path(), &env);
    let mut editor = daemon.ws();
    editor.open("shared");
    // Three addresses, each within its own shares (4 MiB per socket, 8 MiB per address), try
    // to queue 3.6 MB each before Auth: 10.8 MB, well past a quarter of the 16 MiB budget.
    let update = big_update(7, 900_000);
    let mut flood: Vec<Client> = ["203.0.113.1", "203.0.113.2", "203.0.113.3"]
        .iter()
        .map(|ip| Client::connect_as(daemon.port, ip))
        .collect();
    for f in &mut flood {
        let frame =
            zedi_sync::protocol::encode("shared", &Message::Sync(SyncMessage::Update(&update)));
        f.send_batch(vec![frame; 4]);
    }
    let series: Series = ("zedi_memory_budget_used_bytes", &[("holder", "preauth")]);
    wait_metric(&daemon, "the pre-auth share filled", series, |v| {
        v >= 4.0 * MIB as f64
    });
    // Past the quarter, sockets holding pre-auth frames read no further: at most the frame
    // each was decoding when the share filled gets in.
    let bound = 4.0 * MIB as f64 + 3.0 * 900_000.0 + 3.0 * 64.0 * 1024.0;
    for _ in 0..10 {
        let held = metric(&daemon.metrics(), series);
        assert!(held <= bound, "pre-auth bytes held: {held} > {bound}");
        // The bound must hold over time, not at one instant: sample it for a second.
        std::thread::sleep(Duration::from_millis(100));
    }
    still_edits(&mut editor, "shared", 8);
    // Paused, not refused: nothing was closed for it.
    assert_eq!(
        metric(
            &daemon.metrics(),
            ("zedi_protocol_errors_total", &[("kind", "preauth_limit")])
        ),
        0.0
    );
    drop(flood);
    wait_metric(&daemon, "the queues released", series, |v| v == 0.0);
}

#[test]
fn unfinished_frames_of_many_sockets_together_stop_at_a_quarter_of_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = SMALL_NODE.to_vec();
    env.push(("ZEDI__TIMEOUTS__PING_INTERVAL_MS", "1000"));
    let daemon = Daemon::start(dir.path(), &env);
    let mut editor = daemon.ws();
    editor.open("doc");
    // Three sockets each start a 3.9 MB frame (under the 4 MiB frame limit) and send 3 MB of
    // it: 9 MB of partial frames, more than twice the quarter (4 MiB) of the 16 MiB budget.
    let mut senders: Vec<Client> = (0..3).map(|_| daemon.ws()).collect();
    for s in &mut senders {
        s.send_partial_frame(3_900_000, 3_000_000);
    }
    let series: Series = ("zedi_memory_budget_used_bytes", &[("holder", "inbound")]);
    wait_metric(&daemon, "the inbound share filled", series, |v| {
        v >= 4.0 * MIB as f64
    });
    // Past the quarter, a socket in the middle of a large frame reads no further (one read
    // buffer each may still land).
    let bound = 4.0 * MIB as f64 + 3.0 * 256.0 * 1024.0;
    for _ in 0..10 {
        let held = metric(&daemon.metrics(), series);
        assert!(held <= bound, "partial frame bytes held: {held} > {bound}");
        // The bound must hold over time, not at one instant: sample it for a second.
        std::thread::sleep(Duration::from_millis(100));
    }
    still_edits(&mut editor, "doc", 8);
    drop(senders);
    wait_metric(&daemon, "the partial frames released", series, |v| v == 0.0);
}
