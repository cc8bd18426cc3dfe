//! The PostgreSQL store against a real PostgreSQL 15 (a throwaway cluster per test), both
//! directly and under the real daemon.

use crate::common;

use std::time::Duration;

use common::pg::PgCluster;
use common::{Daemon, Received, render, text_update};
use zedi_sync::protocol::{Message, SyncMessage};
use zedi_sync::store::{PgOptions, PgStore, Store, StoreError, contract};

fn options(url: &str) -> PgOptions {
    PgOptions {
        url: url.to_string(),
        password: None,
        sslmode: None,
        ssl_root_cert: None,
        pool_size: 4,
        connect_timeout: Duration::from_secs(5),
        legacy_table: Some("documents".into()),
        history: Default::default(),
    }
}

fn pg_daemon(pg: &PgCluster, dir: &std::path::Path, extra: &[(&str, &str)]) -> Daemon {
    let mut env = vec![
        ("DATABASE_URL", pg.url.as_str()),
        ("ZEDI__STORE__RETRY_MAX_MS", "300"),
    ];
    env.extend_from_slice(extra);
    Daemon::start(dir, &env)
}

#[tokio::test]
async fn history_contract_holds_on_postgres() {
    let pg = PgCluster::start();
    let retention = std::time::Duration::from_millis(400);
    let store = PgStore::connect(&PgOptions {
        history: zedi_sync::store::HistoryPolicy {
            retention: Some(retention),
        },
        ..options(&pg.url)
    })
    .await
    .unwrap();
    contract::run(&store).await;
    contract::run_history(&store, retention).await;
}

#[tokio::test]
async fn store_contract_holds_on_postgres() {
    let pg = PgCluster::start();
    let store = PgStore::connect(&options(&pg.url)).await.unwrap();
    contract::run(&store).await;
    // The log really is a table: compaction deleted exactly what it folded.
    let client = pg.client().await;
    let left: i64 = client
        .query_one("SELECT count(*) FROM zedi_updates WHERE name = 'a'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);
}

#[tokio::test]
async fn stale_fencing_token_is_refused() {
    let pg = PgCluster::start();
    let store = PgStore::connect(&options(&pg.url)).await.unwrap();
    let old_owner = store.next_fence("fenced").await.unwrap();
    let new_owner = store.next_fence("fenced").await.unwrap();
    assert!(new_owner > old_owner);
    store
        .append(&[zedi_sync::store::AppendItem {
            name: "fenced".into(),
            update: contract::text_update(1, "new"),
            author: "anonymous".into(),
        }])
        .await
        .unwrap();
    store.compact("fenced", new_owner).await.unwrap();
    store
        .append(&[zedi_sync::store::AppendItem {
            name: "fenced".into(),
            update: contract::text_update(2, "later"),
            author: "anonymous".into(),
        }])
        .await
        .unwrap();
    match store.compact("fenced", old_owner).await {
        Err(StoreError::Fenced { offered, stored }) => {
            assert_eq!((offered, stored), (old_owner, new_owner))
        }
        other => panic!("stale owner must be fenced off, got {other:?}"),
    }
    // Nothing was folded or deleted by the refused write.
    let stored = store.load("fenced").await.unwrap();
    assert_eq!(stored.updates.len(), 1);
    assert_eq!(stored.fence, new_owner);
    assert_eq!(contract::render(&stored).len(), "newlater".len());
}

#[tokio::test]
async fn nodes_migrating_at_once_apply_each_migration_once() {
    let pg = PgCluster::start();
    let opts = options(&pg.url);
    let results = futures_util::future::join_all((0..6).map(|_| PgStore::connect(&opts))).await;
    for r in results {
        assert!(r.is_ok(), "a concurrent start failed: {:?}", r.err());
    }
    let client = pg.client().await;
    let rows: Vec<i32> = client
        .query(
            "SELECT version FROM zedi_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    // Each schema version (1: documents, 2: history) exactly once.
    assert_eq!(rows, vec![1, 2]);

    // Two real daemons starting together on a fresh database both come up healthy.
    let fresh = PgCluster::start();
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let url = fresh.url.clone();
    let url2 = url.clone();
    let p1 = d1.path().to_path_buf();
    let p2 = d2.path().to_path_buf();
    let a = std::thread::spawn(move || Daemon::start(&p1, &[("DATABASE_URL", &url)]));
    let b = std::thread::spawn(move || Daemon::start(&p2, &[("DATABASE_URL", &url2)]));
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(a.health()["store_kind"], "postgres");
    assert_eq!(b.health()["store_kind"], "postgres");
}

// Every sslmode, then the URL form and the separate password, against one server: reads best whole.
#[tokio::test]
async fn tls_modes_and_separate_password() {
    let pg = PgCluster::start();
    let ca = pg.ca_file();
    let with = |mode: &str, ca: Option<&std::path::Path>| PgOptions {
        sslmode: Some(mode.parse().expect("an sslmode name")),
        ssl_root_cert: ca.map(|p| p.to_path_buf()),
        ..options(&pg.url)
    };
    PgStore::connect(&with("disable", None))
        .await
        .expect("plain TCP");
    PgStore::connect(&with("require", None))
        .await
        .expect("TLS, certificate not checked");
    PgStore::connect(&with("verify-ca", Some(&ca)))
        .await
        .expect("TLS, chain checked");
    PgStore::connect(&with("verify-full", Some(&ca)))
        .await
        .expect("TLS, chain and host name checked");
    // verify-full against public roots must refuse the test CA's certificate.
    let err = PgStore::connect(&with("verify-full", None))
        .await
        .err()
        .expect("untrusted certificate refused");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // The URL form carries sslmode and sslrootcert too.
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        pg.url,
        ca.display()
    );
    PgStore::connect(&options(&url))
        .await
        .expect("sslmode in the URL");

    // Password given separately (as Secrets Manager injects it) overrides the URL's.
    let mut separate = options(&pg.url_without_password());
    separate.password = Some("postgres".into());
    PgStore::connect(&separate)
        .await
        .expect("separate password");
    separate.password = Some("wrong".into());
    let err = PgStore::connect(&separate)
        .await
        .err()
        .expect("wrong password refused");
    assert!(err.to_string().contains("password"), "{err}");

    // The daemon takes the same settings from the environment.
    let dir = tempfile::tempdir().unwrap();
    let ca_str = ca.display().to_string();
    let daemon = Daemon::start(
        dir.path(),
        &[
            ("DATABASE_URL", &pg.url_without_password()),
            ("DATABASE_PASSWORD", "postgres"),
            ("ZEDI__STORE__SSLMODE", "verify-full"),
            ("ZEDI__STORE__SSL_ROOT_CERT", &ca_str),
        ],
    );
    assert_eq!(daemon.health()["store_kind"], "postgres");
    let mut c = daemon.ws();
    c.open("tls-doc");
    c.send(
        "tls-doc",
        Message::Sync(SyncMessage::Update(&text_update(1, "over tls"))),
    );
    c.expect_ack("tls-doc");
    let client = pg.client().await;
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM zedi_updates WHERE name = 'tls-doc'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test]
async fn legacy_documents_are_imported_on_first_load() {
    let pg = PgCluster::start();
    let client = pg.client().await;
    // The table the Node server (Hocuspocus database extension) left behind.
    client
        .batch_execute(
            "CREATE TABLE documents (name VARCHAR(255) PRIMARY KEY, content BYTEA, updated_at TIMESTAMPTZ DEFAULT now())",
        )
        .await
        .unwrap();
    let legacy = text_update(500, "from the node server");
    client
        .execute("INSERT INTO documents (name, content) VALUES ('old-note', $1), ('broken', '\\xdeadbeef')", &[&legacy])
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut daemon = pg_daemon(&pg, dir.path(), &[]);
    let mut c = daemon.ws();
    assert_eq!(render(&[&c.open("old-note")]), "from the node server");
    c.send(
        "old-note",
        Message::Sync(SyncMessage::Update(&text_update(501, "edited: "))),
    );
    c.expect_ack("old-note");
    drop(c);
    // A corrupt legacy row does not become a snapshot, and the document still opens empty.
    let mut c2 = daemon.ws();
    assert_eq!(render(&[&c2.open("broken")]), "");
    drop(c2);

    daemon.restart();
    let mut c = daemon.ws();
    let content = render(&[&c.open("old-note")]);
    assert!(
        content.contains("from the node server") && content.contains("edited: "),
        "{content}"
    );
    // Imported once: the legacy row is untouched and our snapshot exists.
    let snapshots: i64 = client
        .query_one(
            "SELECT count(*) FROM zedi_snapshots WHERE name = 'old-note'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(snapshots, 1);
    let broken: i64 = client
        .query_one(
            "SELECT count(*) FROM zedi_snapshots WHERE name = 'broken'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(broken, 0);
    let still: Vec<u8> = client
        .query_one("SELECT content FROM documents WHERE name = 'old-note'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(still, legacy);
}

#[test]
fn acknowledged_updates_survive_kill_9_on_postgres() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = pg_daemon(&pg, dir.path(), &[]);
    assert_eq!(daemon.health()["store_kind"], "postgres");
    let mut writers: Vec<_> = (0..4).map(|_| daemon.ws()).collect();
    for w in writers.iter_mut() {
        w.open("pg-durable");
    }
    for round in 0..25u64 {
        for (i, w) in writers.iter_mut().enumerate() {
            w.send(
                "pg-durable",
                Message::Sync(SyncMessage::Update(&text_update(
                    1000 + round * 10 + i as u64,
                    "k",
                ))),
            );
        }
    }
    for w in writers.iter_mut() {
        for _ in 0..25 {
            w.expect_ack("pg-durable");
        }
    }
    daemon.restart(); // SIGKILL
    let mut c = daemon.ws();
    assert_eq!(
        render(&[&c.open("pg-durable")]).len(),
        100,
        "all 100 acknowledged updates are back"
    );
}

#[test]
fn postgres_outage_keeps_editing_live_and_loses_nothing_acknowledged() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = pg_daemon(
        &pg,
        dir.path(),
        &[("ZEDI__STORE__CONNECT_TIMEOUT_MS", "1000")],
    );
    let mut a = daemon.ws();
    let mut b = daemon.ws();
    a.open("outage");
    b.open("outage");
    a.send(
        "outage",
        Message::Sync(SyncMessage::Update(&text_update(1, "before "))),
    );
    a.expect_ack("outage");

    pg.stop();
    // Edits keep flowing between editors from memory; no acknowledgement while not durable.
    for i in 0..5u64 {
        a.send(
            "outage",
            Message::Sync(SyncMessage::Update(&text_update(10 + i, "during "))),
        );
    }
    b.expect_text("outage", "the edits made during the outage", |t| {
        t.matches("during ").count() == 5
    });
    daemon.wait_health("store degraded", |h| h["store"] == "degraded");
    assert_eq!(daemon.metrics().value("zedi_store_degraded", &[]), 1.0);
    match a.recv(Duration::from_millis(500)) {
        Received::Frame(f) => assert!(
            !matches!(
                zedi_sync::protocol::decode(&f),
                Ok(zedi_sync::protocol::Packet::Message {
                    message: Message::SyncStatus(true),
                    ..
                })
            ),
            "acknowledged while the database is down"
        ),
        Received::Closed(c) => panic!("closed: {c:?}"),
        Received::TimedOut => {}
    }

    pg.restart();
    for _ in 0..5 {
        a.expect_ack("outage");
    }
    daemon.wait_health("store recovered", |h| h["store"] == "ok");
    drop((a, b));
    daemon.restart(); // SIGKILL: only what is in PostgreSQL counts now
    let mut c = daemon.ws();
    assert_eq!(
        render(&[&c.open("outage")]).len(),
        "before ".len() + 5 * "during ".len()
    );
}

#[test]
fn a_full_write_queue_refuses_new_updates_and_keeps_accepted_ones() {
    let pg = PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = pg_daemon(
        &pg,
        dir.path(),
        &[
            ("ZEDI__STORE__MAX_BATCH", "1"),
            ("ZEDI__STORE__MAX_PENDING_WRITES", "2"),
            ("ZEDI__STORE__CONNECT_TIMEOUT_MS", "1000"),
        ],
    );
    let mut a = daemon.ws();
    let mut watcher = daemon.ws();
    a.open("bounded");
    watcher.open("bounded");
    pg.stop();
    a.send(
        "bounded",
        Message::Sync(SyncMessage::Update(&text_update(1, "one "))),
    );
    a.send(
        "bounded",
        Message::Sync(SyncMessage::Update(&text_update(2, "two "))),
    );
    watcher.expect_text("bounded", "both accepted updates", |t| {
        t.contains("one ") && t.contains("two ")
    });
    a.send(
        "bounded",
        Message::Sync(SyncMessage::Update(&text_update(3, "refused "))),
    );
    a.expect("SyncStatus(0)", |_, m| {
        matches!(m, Message::SyncStatus(false))
    });
    let reason = a.expect_close(4205);
    assert!(reason.contains("store"), "{reason}");
    assert_eq!(
        daemon.metrics().value("zedi_writes_refused_total", &[]),
        1.0
    );

    pg.restart();
    daemon.wait_health("store recovered", |h| h["store"] == "ok");
    // "ok" comes with the first write that succeeds; the second may still be in flight, and
    // the restart below is a SIGKILL, which keeps only what is durable.
    daemon.wait_metrics("the write queue to drain", |m| {
        m.value("zedi_store_pending_writes", &[]) == 0.0
    });
    drop(watcher);
    daemon.restart();
    let mut c = daemon.ws();
    let content = render(&[&c.open("bounded")]);
    assert!(
        content.contains("one ") && content.contains("two "),
        "{content}"
    );
    assert!(
        !content.contains("refused"),
        "a refused update was applied: {content}"
    );
}
