//! The document API against the real daemon: every call, its keys, and what connected editors
//! see (on one node, and across two sharing PostgreSQL and Redis).

use crate::common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::pg::PgCluster;
use common::redis::RedisServer;
use common::{Daemon, render, text_update};
use zedi_sync::protocol::{Message, SyncMessage};

pub(crate) const WRITER: &str = "writer-secret-0123456789";
pub(crate) const READER: &str = "reader-secret-0123456789";
pub(crate) const KEYS: &str =
    "importer:read-write:writer-secret-0123456789,indexer:read-only:reader-secret-0123456789";

/// One HTTP/1.1 request on loopback: (status, body bytes).
pub(crate) fn request(
    port: u16,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .expect("write head");
    stream.write_all(body).expect("write body");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read response");
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let mut body = response[split + 4..].to_vec();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body = dechunk(&body);
    }
    (status, body)
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = usize::from_str_radix(std::str::from_utf8(&data[..line_end]).unwrap_or("0"), 16)
            .unwrap_or(0);
        if size == 0 {
            break;
        }
        out.extend_from_slice(&data[line_end + 2..line_end + 2 + size]);
        data = &data[line_end + 2 + size + 2..];
    }
    out
}

pub(crate) fn get_json(port: u16, path: &str, key: &str) -> serde_json::Value {
    let (status, body) = request(port, "GET", path, Some(key), b"");
    assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("JSON")
}

pub(crate) fn text_of(port: u16, name: &str) -> (u16, String) {
    let (status, body) = request(
        port,
        "GET",
        &format!("/api/documents/{name}?format=text&field=default"),
        Some(READER),
        b"",
    );
    (status, String::from_utf8_lossy(&body).to_string())
}

#[test]
fn every_call_with_its_keys_and_what_editors_see() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &[("ZEDI__API__KEYS", KEYS)]);
    let port = daemon.port;
    let mut editor = daemon.ws();
    editor.open("notes/a");
    editor.send(
        "notes/a",
        Message::Sync(SyncMessage::Update(&text_update(1, "hello"))),
    );
    editor.expect_ack("notes/a");

    // Keys: none, unknown, read-only where writing is asked.
    let doc = "/api/documents/notes%2Fa";
    assert_eq!(request(port, "GET", doc, None, b"").0, 401);
    assert_eq!(
        request(port, "GET", doc, Some("not-a-key-0123456789"), b"").0,
        401
    );
    let update = text_update(2, "api ");
    assert_eq!(
        request(
            port,
            "POST",
            &format!("{doc}/updates"),
            Some(READER),
            &update
        )
        .0,
        403
    );
    assert_eq!(request(port, "DELETE", doc, Some(READER), b"").0, 403);

    // Reads in every format (the name is one encoded path segment).
    assert_eq!(text_of(port, "notes%2Fa"), (200, "hello".to_string()));
    assert_eq!(
        get_json(port, doc, READER),
        serde_json::json!({"default": "hello"})
    );
    let (status, yjs) = request(port, "GET", &format!("{doc}?format=yjs"), Some(READER), b"");
    assert_eq!(status, 200);
    assert_eq!(render(&[&yjs]), "hello");
    assert_eq!(text_of(port, "never-written").0, 404);

    // A POSTed update is durable when answered and reaches the connected editor.
    let (status, body) = request(
        port,
        "POST",
        &format!("{doc}/updates"),
        Some(WRITER),
        &update,
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    editor.expect_text("notes/a", "the API's update", |t| t.contains("api"));
    assert_eq!(text_of(port, "notes%2Fa").1.len(), "api hello".len());
    // Hostile bodies are refused like a client's, and change nothing.
    for bad in [&b"\xde\xad\xbe\xef"[..], &[0x01, 0x02]] {
        let (status, _) = request(port, "POST", &format!("{doc}/updates"), Some(WRITER), bad);
        assert_eq!(status, 400);
    }
    assert_eq!(
        request(port, "POST", &format!("{doc}/updates"), Some(WRITER), b"").0,
        400
    );
    assert_eq!(text_of(port, "notes%2Fa").1.len(), "api hello".len());

    // An update to a document nobody has open: loaded, applied, stored.
    let (status, _) = request(
        port,
        "POST",
        "/api/documents/notes%2Fb/updates",
        Some(WRITER),
        &text_update(3, "bee"),
    );
    assert_eq!(status, 200);
    assert_eq!(text_of(port, "notes%2Fb"), (200, "bee".to_string()));

    // Listing: by prefix, paged.
    let page = get_json(port, "/api/documents?prefix=notes/&limit=1", READER);
    assert_eq!(page["documents"][0]["name"], "notes/a");
    assert!(page["documents"][0]["bytes"].as_u64().unwrap_or(0) > 0);
    assert!(
        page["documents"][0]["updated_at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.contains('T'))
    );
    assert_eq!(page["next"], "notes/a");
    let next = get_json(
        port,
        "/api/documents?prefix=notes/&limit=1&after=notes/a",
        READER,
    );
    assert_eq!(next["documents"][0]["name"], "notes/b");

    // Delete: the editor gets a CLOSE, the document is gone, a new editor finds it empty.
    assert_eq!(request(port, "DELETE", doc, Some(WRITER), b"").0, 200);
    editor.expect("CLOSE document deleted", |a, m| {
        a == "notes/a" && matches!(m, Message::Close(Some("document deleted")))
    });
    assert_eq!(text_of(port, "notes%2Fa").0, 404);
    assert_eq!(request(port, "DELETE", doc, Some(WRITER), b"").0, 404);
    let mut fresh = daemon.ws();
    assert_eq!(render(&[&fresh.open("notes/a")]), "");
    let listed = get_json(port, "/api/documents?prefix=notes/", READER);
    assert_eq!(listed["documents"].as_array().map(Vec::len), Some(1));

    let metrics = daemon.metrics();
    for (op, status) in [
        ("read", "200"),
        ("read", "401"),
        ("read", "404"),
        ("update", "200"),
        ("update", "400"),
        ("update", "403"),
        ("delete", "200"),
        ("list", "200"),
    ] {
        assert!(
            metrics.value("zedi_api_requests_total", &[("op", op), ("status", status)]) >= 1.0,
            "{op} {status} not counted"
        );
    }
}

#[test]
fn without_keys_there_is_no_api() {
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = Daemon::start(dir.path(), &[]);
    assert_eq!(
        request(daemon.port, "GET", "/api/documents", Some(WRITER), b"").0,
        404
    );
}

fn node(pg: &PgCluster, redis: &str, id: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let env = [
        ("DATABASE_URL", pg.url.as_str()),
        ("REDIS_URL", redis),
        ("ZEDI__SERVER__NODE_ID", id),
        ("ZEDI__CLUSTER__LEASE_TTL_MS", "3000"),
        ("ZEDI__CLUSTER__LEASE_RENEW_MS", "500"),
        ("ZEDI__CLUSTER__HEARTBEAT_MS", "500"),
        ("ZEDI__API__KEYS", KEYS),
    ];
    (Daemon::start(dir.path(), &env), dir)
}

#[test]
fn across_two_nodes_reads_see_every_acknowledged_edit_and_writes_reach_every_editor() {
    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let (a, _da) = node(&pg, &redis.url(), "api-a");
    let (b, _db) = node(&pg, &redis.url(), "api-b");
    let mut on_a = a.ws();
    on_a.open("shared");
    let mut on_b = b.ws();
    on_b.open("shared");
    std::thread::sleep(Duration::from_millis(300));
    on_a.send(
        "shared",
        Message::Sync(SyncMessage::Update(&text_update(1, "A"))),
    );
    on_a.expect_ack("shared");
    on_b.send(
        "shared",
        Message::Sync(SyncMessage::Update(&text_update(2, "B"))),
    );
    on_b.expect_ack("shared");
    // Acknowledged on both nodes: the API on either node sees both edits at once.
    for daemon in [&a, &b] {
        let (status, text) = text_of(daemon.port, "shared");
        assert_eq!(status, 200);
        assert!(text.contains('A') && text.contains('B'), "{text}");
    }
    // A POST on A reaches the editor on B.
    let (status, body) = request(
        a.port,
        "POST",
        "/api/documents/shared/updates",
        Some(WRITER),
        &text_update(3, "posted "),
    );
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    on_b.expect_text("shared", "the update POSTed on the other node", |t| {
        t.contains("posted")
    });
    // A delete on B closes the editor on A.
    assert_eq!(
        request(b.port, "DELETE", "/api/documents/shared", Some(WRITER), b"").0,
        200
    );
    on_a.expect("CLOSE document deleted on the other node", |addr, m| {
        addr == "shared" && matches!(m, Message::Close(Some("document deleted")))
    });
    assert_eq!(text_of(a.port, "shared").0, 404);
}
