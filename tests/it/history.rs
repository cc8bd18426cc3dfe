//! History against the real daemon (embedded store and PostgreSQL, one node and two): versions,
//! time travel by version and by instant, restore while editors are connected, who wrote what,
//! and the retention.

use crate::common;
use crate::document_api::{KEYS, READER, WRITER, get_json, request, text_of};

use std::time::Duration;

use common::pg::PgCluster;
use common::redis::RedisServer;
use common::{Client, Daemon, Received, render, text_update};
use jsonwebtoken::{EncodingKey, Header, encode};
use zedi_sync::protocol::{self, AuthMessage, Message, Packet, SyncMessage};

const SECRET: &str = "history-test-secret";

fn token(sub: &str) -> String {
    encode(
        &Header::default(),
        &serde_json::json!({"sub": sub, "exp": 4_000_000_000u64}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("a token")
}

/// `2026-12-02T15:04:05.123Z` for now, as the API writes instants.
fn now_rfc3339() -> String {
    zedi_sync::api::time::rfc3339_ms(zedi_sync::store::now_ms())
}

/// An editor whose content is tracked: what it loaded, sent and was sent.
struct Editor {
    client: Client,
    doc: String,
    updates: Vec<Vec<u8>>,
}

impl Editor {
    fn open(daemon: &Daemon, doc: &str, user: &str) -> Editor {
        let mut client = daemon.ws();
        client.send(
            doc,
            Message::Auth(AuthMessage::Token {
                token: &token(user),
                provider_version: Some("4.8.0"),
            }),
        );
        client.expect("Authenticated", |a, m| {
            a == doc && matches!(m, Message::Auth(AuthMessage::Authenticated { .. }))
        });
        client.send(doc, Message::Sync(SyncMessage::Step1(&[0])));
        let frame = client.expect("SyncStep2", |a, m| {
            a == doc && matches!(m, Message::Sync(SyncMessage::Step2(_)))
        });
        let mut updates = Vec::new();
        if let Ok(Packet::Message {
            message: Message::Sync(SyncMessage::Step2(u)),
            ..
        }) = protocol::decode(&frame)
        {
            updates.push(u.to_vec());
        }
        Editor {
            client,
            doc: doc.to_string(),
            updates,
        }
    }

    fn write(&mut self, client_id: u64, text: &str) {
        let update = text_update(client_id, text);
        self.client
            .send(&self.doc, Message::Sync(SyncMessage::Update(&update)));
        self.client.expect_ack(&self.doc);
        self.updates.push(update);
    }

    /// Reads what the server sends until the content satisfies `done` (bounded).
    fn wait_text(&mut self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = render(&self.updates.iter().map(Vec::as_slice).collect::<Vec<_>>());
            if done(&text) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {text:?}"
            );
            if let Received::Frame(f) = self.client.recv(Duration::from_millis(200))
                && let Ok(Packet::Message {
                    message: Message::Sync(SyncMessage::Update(u)),
                    ..
                }) = protocol::decode(&f)
            {
                self.updates.push(u.to_vec());
            }
        }
    }
}

fn text_at(port: u16, doc: &str, query: &str) -> (u16, String) {
    let (status, body) = request(
        port,
        "GET",
        &format!("/api/documents/{doc}?format=text&{query}"),
        Some(READER),
        b"",
    );
    (status, String::from_utf8_lossy(&body).to_string())
}

fn create_version(port: u16, doc: &str, name: &str) -> String {
    let body = serde_json::json!({"name": name, "meta": {"reason": "test"}}).to_string();
    let (status, answer) = request(
        port,
        "POST",
        &format!("/api/documents/{doc}/versions"),
        Some(WRITER),
        body.as_bytes(),
    );
    assert_eq!(status, 201, "{}", String::from_utf8_lossy(&answer));
    let made: serde_json::Value = serde_json::from_slice(&answer).expect("JSON");
    assert_eq!(made["name"], name);
    made["id"].as_str().expect("an id").to_string()
}

fn history_env(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("ZEDI__API__KEYS", KEYS.to_string()),
        ("JWT_SECRET", SECRET.to_string()),
        ("ZEDI__HISTORY__RETENTION_SECS", "3600".to_string()),
    ];
    env.extend(extra.iter().cloned());
    env
}

fn start(dir: &std::path::Path, env: &[(&'static str, String)]) -> Daemon {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Daemon::start(dir, &env)
}

/// Edit A, version v1, edit B; read v1, an instant between, and after; restore v1 while both
/// editors are connected; activity of both users.
fn versions_time_travel_restore_and_activity(daemon: &Daemon) {
    let port = daemon.port;
    let doc = "notes";
    let mut alice = Editor::open(daemon, doc, "alice");
    let mut bob = Editor::open(daemon, doc, "bob");
    alice.write(1, "A");
    bob.wait_text("alice's edit", |t| t == "A");
    let v1 = create_version(port, doc, "v1");
    std::thread::sleep(Duration::from_millis(50));
    let between = now_rfc3339();
    std::thread::sleep(Duration::from_millis(50));
    bob.write(2, "B");
    alice.wait_text("bob's edit", |t| t.len() == 2);

    assert_eq!(
        text_at(port, doc, &format!("version={v1}")),
        (200, "A".into())
    );
    assert_eq!(
        text_at(port, doc, &format!("at={between}")),
        (200, "A".into())
    );
    let after = now_rfc3339();
    let (status, both) = text_at(port, doc, &format!("at={after}"));
    assert_eq!(status, 200);
    assert!(both.contains('A') && both.contains('B'), "{both}");
    let (status, yjs) = request(
        port,
        "GET",
        &format!("/api/documents/{doc}?format=yjs&version={v1}"),
        Some(READER),
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(render(&[&yjs]), "A");
    assert_eq!(text_at(port, doc, "version=nope").0, 404);
    assert_eq!(text_at(port, doc, "at=yesterday").0, 400);

    // Restore v1 with both editors connected: both see A, live.
    let (status, answer) = request(
        port,
        "POST",
        &format!("/api/documents/{doc}/versions/{v1}/restore"),
        Some(WRITER),
        b"",
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    alice.wait_text("the restore", |t| t == "A");
    bob.wait_text("the restore", |t| t == "A");
    assert_eq!(text_of(port, doc), (200, "A".into()));
    // History still has B, and the state before the restore is a version.
    let (_, before_restore) = text_at(port, doc, &format!("at={after}"));
    assert!(before_restore.contains('B'), "{before_restore}");
    let versions = get_json(port, &format!("/api/documents/{doc}/versions"), READER);
    let listed = versions["versions"].as_array().expect("a list");
    assert_eq!(listed.len(), 2, "{versions}");
    assert_eq!(listed[1]["id"], v1.as_str(), "newest first");
    assert_eq!(listed[1]["meta"]["reason"], "test");
    assert_eq!(listed[0]["name"], "before restoring v1");
    let pre = listed[0]["id"].as_str().expect("an id");
    let (_, pre_text) = text_at(port, doc, &format!("version={pre}"));
    assert!(
        pre_text.contains('A') && pre_text.contains('B'),
        "{pre_text}"
    );

    // Who wrote what.
    let activity = get_json(port, &format!("/api/documents/{doc}/activity"), READER);
    let entries = activity["activity"].as_array().expect("a list");
    let by = |user: &str| {
        entries
            .iter()
            .filter(|e| e["user"] == user)
            .map(|e| e["inserted"].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(by("alice"), 1, "{activity}");
    assert_eq!(by("bob"), 1, "{activity}");
    assert!(
        entries.iter().any(|e| e["user"] == "restore:importer"),
        "{activity}"
    );
}

#[test]
fn history_on_the_embedded_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(dir.path(), &history_env(&[]));
    versions_time_travel_restore_and_activity(&daemon);
}

#[test]
fn history_on_postgres() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(
        dir.path(),
        &history_env(&[("DATABASE_URL", pg.url.clone())]),
    );
    versions_time_travel_restore_and_activity(&daemon);
}

#[test]
fn retention_removes_what_is_older_and_nothing_newer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(
        dir.path(),
        &history_env(&[
            ("ZEDI__HISTORY__RETENTION_SECS", "1".into()),
            ("ZEDI__STORE__COMPACT_AFTER_UPDATES", "1".into()),
            ("ZEDI__STORE__COMPACT_MIN_INTERVAL_MS", "1".into()),
        ]),
    );
    let port = daemon.port;
    let mut alice = Editor::open(&daemon, "kept", "alice");
    alice.write(1, "old");
    let old_version = create_version(port, "kept", "old");
    let only_old = now_rfc3339();
    assert_eq!(text_at(port, "kept", &format!("at={only_old}")).0, 200);
    std::thread::sleep(Duration::from_millis(1_500));
    let mut bob = Editor::open(&daemon, "kept", "bob");
    bob.write(2, "new");
    let new_version = create_version(port, "kept", "new");
    // The next compaction prunes: wait for the old instant to be gone (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        bob.write(3, ".");
        if text_at(port, "kept", &format!("at={only_old}")).0 == 410 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never pruned");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing newer went, nor any content.
    let (status, now) = text_at(port, "kept", &format!("at={}", now_rfc3339()));
    assert_eq!(status, 200);
    assert!(now.contains("old") && now.contains("new"), "{now}");
    assert_eq!(
        text_at(port, "kept", &format!("version={old_version}")).0,
        404
    );
    assert_eq!(
        text_at(port, "kept", &format!("version={new_version}")).0,
        200
    );
    let activity = get_json(port, "/api/documents/kept/activity", READER);
    let users: Vec<&str> = activity["activity"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|e| e["user"].as_str())
        .collect();
    assert!(
        !users.contains(&"alice"),
        "older than the retention: {users:?}"
    );
    assert!(users.contains(&"bob"), "{users:?}");
}

#[test]
fn a_restore_on_one_node_reaches_editors_on_another() {
    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let node = |id: &'static str| {
        let dir = tempfile::tempdir().expect("tempdir");
        let daemon = start(
            dir.path(),
            &history_env(&[
                ("DATABASE_URL", pg.url.clone()),
                ("REDIS_URL", redis.url()),
                ("ZEDI__SERVER__NODE_ID", id.into()),
                ("ZEDI__CLUSTER__HEARTBEAT_MS", "500".into()),
            ]),
        );
        (daemon, dir)
    };
    let (a, _da) = node("history-a");
    let (b, _db) = node("history-b");
    let mut on_a = Editor::open(&a, "shared", "alice");
    let mut on_b = Editor::open(&b, "shared", "bob");
    std::thread::sleep(Duration::from_millis(300));
    on_a.write(1, "first");
    on_b.wait_text("the first edit", |t| t == "first");
    let v1 = create_version(a.port, "shared", "v1");
    on_b.write(2, "second ");
    on_a.wait_text("the second edit", |t| t.len() == "second first".len());
    let (status, _) = request(
        a.port,
        "POST",
        &format!("/api/documents/shared/versions/{v1}/restore"),
        Some(WRITER),
        b"",
    );
    assert_eq!(status, 200);
    on_b.wait_text("the restore, on the other node", |t| t == "first");
    on_a.wait_text("the restore", |t| t == "first");
}

#[test]
fn automatic_versions_follow_editing_activity() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = start(
        dir.path(),
        &history_env(&[("ZEDI__HISTORY__AUTO_VERSION_MS", "300".into())]),
    );
    let mut alice = Editor::open(&daemon, "typed", "alice");
    let versions = || get_json(daemon.port, "/api/documents/typed/versions", READER);
    alice.write(1, "x");
    // One edit is no activity yet: no version.
    assert_eq!(versions()["versions"].as_array().map(Vec::len), Some(0));
    // Edits 100 ms apart: a version once 300 ms of editing have gathered (bounded).
    let mut edits = 1;
    while versions()["versions"].as_array().is_none_or(Vec::is_empty) {
        assert!(edits < 60, "no automatic version after {edits} edits");
        std::thread::sleep(Duration::from_millis(100));
        edits += 1;
        alice.write(edits, "x");
    }
    let listed = versions();
    let auto = &listed["versions"][0];
    assert_eq!(auto["auto"], true);
    assert_eq!(auto["name"], "auto");
    let id = auto["id"].as_str().expect("an id");
    let (status, text) = text_at(daemon.port, "typed", &format!("version={id}"));
    assert_eq!(status, 200);
    // At least the two edits whose gap was the first activity.
    assert!(text.len() >= 2 && text.chars().all(|c| c == 'x'), "{text}");
}
