//! Three (or two) real daemons on loopback sharing a real PostgreSQL and a real Redis.

use crate::common;

use std::time::{Duration, Instant};

use common::pg::PgCluster;
use common::redis::RedisServer;
use common::{Client, Daemon, Received, render, text_update, wait_until};
use zedi_sync::protocol::{self, Message, Packet, SyncMessage};

fn node(
    pg: &PgCluster,
    redis_url: &str,
    id: &str,
    extra: &[(&str, &str)],
) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut env = vec![
        ("DATABASE_URL", pg.url.as_str()),
        ("REDIS_URL", redis_url),
        ("ZEDI__SERVER__NODE_ID", id),
        ("ZEDI__CLUSTER__LEASE_TTL_MS", "3000"),
        ("ZEDI__CLUSTER__LEASE_RENEW_MS", "500"),
        ("ZEDI__CLUSTER__HEARTBEAT_MS", "500"),
        ("ZEDI__CLUSTER__REDIS_TIMEOUT_MS", "1000"),
        ("ZEDI__STORE__RETRY_MAX_MS", "300"),
        ("ZEDI__STORE__COMPACT_AFTER_UPDATES", "10"),
    ];
    env.extend_from_slice(extra);
    (Daemon::start(dir.path(), &env), dir)
}

/// Sync updates received by `client` within `window`, as payloads.
fn collect_updates(client: &mut Client, window: Duration) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + window;
    let mut updates = Vec::new();
    while Instant::now() < deadline {
        match client.recv(Duration::from_millis(100)) {
            Received::Frame(f) => {
                if let Ok(Packet::Message {
                    message: Message::Sync(SyncMessage::Update(u)),
                    ..
                }) = protocol::decode(&f)
                {
                    updates.push(u.to_vec());
                }
            }
            Received::Closed(c) => panic!("closed: {c:?}"),
            Received::TimedOut => {}
        }
    }
    updates
}

/// A node subscribes to a document's relay stream within `relay_block_ms` of opening it, and
/// nothing outside the node shows when it has: the tests give it that long before the first
/// edit another node must relay.
fn let_relay_subscriptions_start() {
    std::thread::sleep(Duration::from_millis(300));
}

/// Opens `doc` on `daemon` with fresh clients until its content satisfies `ok` (bounded).
fn wait_content(daemon: &Daemon, doc: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    while Instant::now() < deadline {
        let mut c = daemon.ws();
        last = render(&[&c.open(doc)]);
        if ok(&last) {
            return last;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!(
        "timed out waiting for {what} on port {}: {last:?}",
        daemon.port
    );
}

fn send_acked(c: &mut Client, doc: &str, client_id: u64, text: &str) {
    c.send(
        doc,
        Message::Sync(SyncMessage::Update(&text_update(client_id, text))),
    );
    c.expect_ack(doc);
}

#[test]
fn editors_on_three_nodes_converge_with_awareness_and_stateless() {
    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let (a, _da) = node(&pg, &redis.url(), "node-a", &[]);
    let (b, _db) = node(&pg, &redis.url(), "node-b", &[]);
    let (c, _dc) = node(&pg, &redis.url(), "node-c", &[]);
    for n in [&a, &b, &c] {
        n.wait_health("three nodes seen", |h| {
            h["cluster"]["nodes"] == 3 && h["cluster"]["redis"] == "ok"
        });
    }
    let (mut ca, mut cb, mut cc) = (a.ws(), b.ws(), c.ws());
    for cl in [&mut ca, &mut cb, &mut cc] {
        cl.open("conv");
    }
    let_relay_subscriptions_start();
    send_acked(&mut ca, "conv", 1, "A");
    let on_b = cb.expect("A's update on B", |_, m| {
        matches!(m, Message::Sync(SyncMessage::Update(_)))
    });
    let on_c = cc.expect("A's update on C", |_, m| {
        matches!(m, Message::Sync(SyncMessage::Update(_)))
    });
    for f in [on_b, on_c] {
        if let Ok(Packet::Message {
            message: Message::Sync(SyncMessage::Update(u)),
            ..
        }) = protocol::decode(&f)
        {
            assert_eq!(render(&[u]), "A");
        }
    }
    send_acked(&mut cb, "conv", 2, "B");
    send_acked(&mut cc, "conv", 3, "C");
    for n in [&a, &b, &c] {
        wait_content(n, "conv", "all three edits", |t| {
            t.len() == 3 && t.contains('A') && t.contains('B') && t.contains('C')
        });
    }
    // Awareness and stateless cross nodes.
    let state = [1u8, 0x07, 1, 2, b'{', b'}'];
    ca.send("conv", Message::Awareness(&state));
    cb.expect(
        "A's awareness on B",
        |_, m| matches!(m, Message::Awareness(p) if *p == state),
    );
    cc.send("conv", Message::Stateless("hello from C"));
    ca.expect("C's stateless on A", |_, m| {
        matches!(m, Message::Stateless("hello from C"))
    });
    cb.expect("C's stateless on B", |_, m| {
        matches!(m, Message::Stateless("hello from C"))
    });
    // A's client leaves: its awareness is removed on B too.
    drop(ca);
    let removal = [1u8, 0x07, 2, 4, b'n', b'u', b'l', b'l'];
    cb.expect(
        "A's awareness removal on B",
        |_, m| matches!(m, Message::Awareness(p) if *p == removal),
    );
    // Relay lag is measured on the receiving side.
    assert!(
        b.metrics().value("zedi_relay_lag_seconds_count", &[]) > 0.0,
        "no relay lag observed on B"
    );
    // Exactly one node owns the document.
    let owned: i64 = [&a, &b, &c]
        .iter()
        .map(|n| n.health()["cluster"]["leases_owned"].as_i64().unwrap_or(0))
        .sum();
    assert_eq!(owned, 1, "one lease owner");
}

#[test]
fn owner_kill_9_is_taken_over_and_no_acknowledged_update_is_lost() {
    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let (mut a, _da) = node(&pg, &redis.url(), "node-a", &[]);
    let (b, _db) = node(&pg, &redis.url(), "node-b", &[]);
    let mut ca = a.ws();
    ca.open("failover");
    a.wait_health("A owns the document", |h| h["cluster"]["leases_owned"] == 1);
    let mut cb = b.ws();
    cb.open("failover");
    let mut acked = 0;
    for i in 0..30u64 {
        send_acked(&mut ca, "failover", 1000 + i, "a");
        send_acked(&mut cb, "failover", 2000 + i, "b");
        acked += 2;
    }
    assert_eq!(b.health()["cluster"]["leases_owned"], 0);
    a.kill(); // SIGKILL the owner
    let killed = Instant::now();
    b.wait_health("B takes the lease", |h| h["cluster"]["leases_owned"] == 1);
    assert!(
        killed.elapsed() < Duration::from_secs(3 + 4),
        "takeover within TTL + a few seconds: {:?}",
        killed.elapsed()
    );
    // B keeps accepting edits and, as owner now, compacts with its newer fencing token.
    for i in 0..15u64 {
        send_acked(&mut cb, "failover", 3000 + i, "c");
        acked += 1;
    }
    // A client of the dead node reconnects elsewhere: everything acknowledged is there.
    let (late, _dl) = node(&pg, &redis.url(), "node-late", &[]);
    let content = wait_content(&late, "failover", "every acknowledged update", |t| {
        t.len() == acked
    });
    assert_eq!(content.len(), acked);
    assert_eq!(b.metrics().value("zedi_lease_acquisitions_total", &[]), 1.0);
}

#[test]
fn redis_restart_and_pause_keep_local_editing_and_catch_up_across_nodes() {
    let pg = PgCluster::start();
    let mut redis = RedisServer::start();
    let (a, _da) = node(&pg, &redis.url(), "node-a", &[]);
    let (b, _db) = node(&pg, &redis.url(), "node-b", &[]);
    let (mut ca, mut ca2, mut cb) = (a.ws(), a.ws(), b.ws());
    ca.open("blip");
    ca2.open("blip");
    cb.open("blip");
    let_relay_subscriptions_start();
    send_acked(&mut ca, "blip", 1, "1");
    wait_content(&b, "blip", "first edit on B", |t| t == "1");

    // Redis restarted (and empty: no persistence) while A's editors keep working.
    redis.stop();
    send_acked(&mut ca, "blip", 2, "2");
    let local = collect_updates(&mut ca2, Duration::from_millis(500));
    assert!(
        !local.is_empty(),
        "editors on the same node still see each other"
    );
    a.wait_health("A sees Redis down", |h| h["cluster"]["redis"] == "degraded");
    redis.restart();
    wait_content(&b, "blip", "the edit made while Redis was down", |t| {
        t.len() == 2
    });
    for n in [&a, &b] {
        n.wait_health("Redis ok again", |h| h["cluster"]["redis"] == "ok");
    }
    // Leases are re-established safely: exactly one owner again.
    wait_until(
        "a single lease owner after the restart",
        Duration::from_secs(10),
        || {
            [&a, &b]
                .iter()
                .map(|n| n.health()["cluster"]["leases_owned"].as_i64().unwrap_or(0))
                .sum::<i64>()
                == 1
        },
    );

    // Redis paused for a few seconds (SIGSTOP): same story.
    redis.pause();
    send_acked(&mut cb, "blip", 3, "3");
    // The outage itself: Redis stays stopped this long while B keeps editing.
    std::thread::sleep(Duration::from_secs(3));
    redis.resume();
    wait_content(&a, "blip", "the edit made while Redis was paused", |t| {
        t.len() == 3
    });
    send_acked(&mut ca, "blip", 4, "4");
    let live = collect_updates(&mut cb, Duration::from_secs(3));
    assert!(!live.is_empty(), "live relay resumes after the pause");
}

#[test]
fn a_node_that_joins_late_loads_and_then_follows_live() {
    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let (a, _da) = node(&pg, &redis.url(), "node-a", &[]);
    let mut ca = a.ws();
    ca.open("late");
    for i in 0..5u64 {
        send_acked(&mut ca, "late", 10 + i, "x");
    }
    let (c, _dc) = node(&pg, &redis.url(), "node-c", &[]);
    let mut cc = c.ws();
    assert_eq!(render(&[&cc.open("late")]).len(), 5);
    let_relay_subscriptions_start();
    send_acked(&mut ca, "late", 99, "y");
    let live = cc.expect("a live update on the late node", |_, m| {
        matches!(m, Message::Sync(SyncMessage::Update(_)))
    });
    if let Ok(Packet::Message {
        message: Message::Sync(SyncMessage::Update(u)),
        ..
    }) = protocol::decode(&live)
    {
        assert_eq!(render(&[u]), "y");
    }
}

#[test]
fn elasticache_style_tls_with_auth_token_and_key_prefixes() {
    let pg = PgCluster::start();
    let redis = RedisServer::start_tls("s3cret-token");
    let (a, _da) = node(
        &pg,
        &redis.url(),
        "node-a",
        &[("ZEDI__CLUSTER__KEY_PREFIX", "env1:")],
    );
    let (b, _db) = node(
        &pg,
        &redis.url(),
        "node-b",
        &[("ZEDI__CLUSTER__KEY_PREFIX", "env1:")],
    );
    let (other, _do) = node(
        &pg,
        &redis.url(),
        "node-x",
        &[("ZEDI__CLUSTER__KEY_PREFIX", "env2:")],
    );
    a.wait_health("TLS Redis ok", |h| {
        h["cluster"]["redis"] == "ok" && h["cluster"]["nodes"] == 2
    });
    let (mut ca, mut cb, mut cx) = (a.ws(), b.ws(), other.ws());
    for cl in [&mut ca, &mut cb, &mut cx] {
        cl.open("shared-name");
    }
    let_relay_subscriptions_start();
    send_acked(&mut ca, "shared-name", 1, "tls");
    cb.expect("relay over TLS", |_, m| {
        matches!(m, Message::Sync(SyncMessage::Update(_)))
    });
    assert!(
        collect_updates(&mut cx, Duration::from_millis(800)).is_empty(),
        "another prefix is another environment"
    );

    // A wrong token is refused at start, with a message naming Redis.
    let dir = tempfile::tempdir().unwrap();
    let bad = redis.url().replace("s3cret-token", "wrong");
    let out = std::process::Command::new(common::bin())
        .env("DATABASE_URL", &pg.url)
        .env("REDIS_URL", bad)
        .env("PORT", common::free_port().to_string())
        .env("ZEDI__SERVER__HOST", "127.0.0.1")
        .env("ZEDI__STORE__PATH", dir.path().join("x.db"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Redis"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A paused or partitioned ex-owner comes back with its old token: the store refuses it.
// One scenario read top to bottom: lease taken, owner paused past its TTL, fenced write refused.
#[tokio::test]
async fn a_stale_owner_is_fenced_off_by_the_store() {
    use zedi_sync::cluster::keys::Keys;
    use zedi_sync::cluster::lease::{Acquired, acquire};
    use zedi_sync::store::{AppendItem, PgOptions, PgStore, Store, StoreError};

    let pg = PgCluster::start();
    let redis = RedisServer::start();
    let client = ::redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = Keys::new("t:");
    let store = PgStore::connect(&PgOptions {
        url: pg.url.clone(),
        password: None,
        sslmode: None,
        ssl_root_cert: None,
        pool_size: 2,
        connect_timeout: Duration::from_secs(5),
        legacy_table: None,
        history: Default::default(),
    })
    .await
    .unwrap();
    let doc = "fenced-doc";
    let Acquired::New(old) = acquire(
        &mut conn,
        &keys.lease(doc),
        &keys.fence(doc),
        "node-a",
        200,
        0,
    )
    .await
    .unwrap() else {
        panic!("first acquisition")
    };
    assert_eq!(
        acquire(
            &mut conn,
            &keys.lease(doc),
            &keys.fence(doc),
            "node-b",
            200,
            0
        )
        .await
        .unwrap(),
        Acquired::Taken
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // node-a "paused" past its TTL
    let Acquired::New(new) = acquire(
        &mut conn,
        &keys.lease(doc),
        &keys.fence(doc),
        "node-b",
        5000,
        0,
    )
    .await
    .unwrap() else {
        panic!("takeover")
    };
    assert!(new > old);
    store
        .append(&[AppendItem {
            name: doc.into(),
            update: text_update(1, "x").into(),
            author: "anonymous".into(),
        }])
        .await
        .unwrap();
    store.compact(doc, new).await.unwrap();
    match store.compact(doc, old).await {
        Err(StoreError::Fenced { offered, stored }) => assert_eq!((offered, stored), (old, new)),
        other => panic!("the stale owner must be refused: {other:?}"),
    }
    // A Redis that lost its counter never issues a token below what the store holds.
    let _: () = ::redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let Acquired::New(after_loss) = acquire(
        &mut conn,
        &keys.lease(doc),
        &keys.fence(doc),
        "node-c",
        5000,
        new,
    )
    .await
    .unwrap() else {
        panic!("acquire after data loss")
    };
    assert!(after_loss > new);
}
