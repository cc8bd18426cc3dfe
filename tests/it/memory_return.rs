//! Memory comes back to the OS: after documents unload, the daemon's resident memory returns
//! to near its baseline. With glibc's malloc it stays at its peak (the freed memory is kept in
//! the process), which is why the binary sets its own global allocator (src/main.rs).
//! Figures are benchmarks' business (`scripts/memory-bench.sh`, BENCHMARKS.md); this test
//! asserts only the behaviour, with a bounded wait that does not depend on machine speed.

use crate::common;

use std::time::{Duration, Instant};

use common::{Client, Daemon};
use yrs::{Doc, Text, Transact};
use zedi_sync::protocol::{Message, SyncMessage};

const DOCUMENTS: usize = 60;
const DOC_BYTES: usize = 100 * 1024;

fn rss_kib(pid: u32) -> u64 {
    let bytes = common::rss_bytes(pid);
    assert!(bytes > 0, "VmRSS of {pid} in /proc");
    bytes / 1024
}

/// Typing-like updates making a document of about `target` encoded bytes: transactions of 40
/// edits, each a chunk inserted at a pseudo-random place or a few characters deleted, so the
/// document holds the many small items of real editing (one long insert would be one item).
fn typing_updates(client_id: u64, target: usize) -> Vec<Vec<u8>> {
    let doc = Doc::with_client_id(client_id);
    let text = doc.get_or_insert_text("default");
    let mut seed = client_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u32| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % u64::from(n.max(1))) as u32
    };
    let (mut updates, mut sent) = (Vec::new(), 0usize);
    while sent < target {
        let mut txn = doc.transact_mut();
        for _ in 0..40 {
            let len = text.len(&txn);
            if len > 200 && next(8) == 0 {
                let at = next(len - 8);
                text.remove_range(&mut txn, at, 1 + next(8));
            } else {
                let chunk = format!("word{} and some text {} ", next(100_000), next(1000));
                let at = next(len + 1);
                text.insert(&mut txn, at, &chunk);
            }
        }
        let update = txn.encode_update_v1();
        sent += update.len();
        updates.push(update);
    }
    updates
}

/// Opens `name`, sends its updates and waits for every acknowledgement; returns the client,
/// still connected.
fn fill(daemon: &Daemon, name: &str, client_id: u64, bytes: usize) -> Client {
    let mut client = daemon.ws();
    client.open(name);
    let updates = typing_updates(client_id, bytes);
    for u in &updates {
        client.send(name, Message::Sync(SyncMessage::Update(u)));
    }
    for _ in &updates {
        client.expect_ack(name);
    }
    client
}

fn wait_unloaded(daemon: &Daemon) {
    common::wait_until("every document unloaded", Duration::from_secs(60), || {
        daemon.health()["documents"].as_i64() == Some(0)
    });
}

#[test]
fn rss_returns_near_its_baseline_after_documents_unload() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(
        dir.path(),
        &[
            // Limits this test is not about: loopback is one address, and a test client sends
            // its edits faster than a person types.
            ("ZEDI__LIMITS__MAX_CONNECTIONS_PER_IP", "0"),
            ("ZEDI__LIMITS__MAX_MESSAGES_PER_SEC", "1000000"),
            ("ZEDI__LIMITS__MAX_MESSAGE_BURST", "1000000"),
            ("ZEDI__LIMITS__MAX_BYTES_PER_SEC", "1000000000"),
            ("ZEDI__DOCUMENTS__UNLOAD_GRACE_MS", "200"),
        ],
    );
    let pid = daemon.pid();

    // Warm-up: a first document brings threads, the store's connection and buffers that stay;
    // the baseline is taken after them, once it has unloaded.
    drop(fill(&daemon, "warmup", 7, 4096));
    wait_unloaded(&daemon);
    // No signal says the allocator has given back what the warm-up freed; RSS settles in
    // about this long, and a baseline taken earlier would be too high.
    std::thread::sleep(Duration::from_secs(2));
    let baseline = rss_kib(pid);

    let clients: Vec<Client> = (0..DOCUMENTS)
        .map(|i| fill(&daemon, &format!("doc-{i}"), 1000 + i as u64, DOC_BYTES))
        .collect();
    let loaded = rss_kib(pid);
    drop(clients);
    wait_unloaded(&daemon);

    // Within 20 % of the baseline, plus 8 MiB for what stays after a first load and does not
    // grow with further ones (BENCHMARKS.md, "Memory: RSS after load": ~7 MiB in release, of
    // which ~2.5 MiB jemalloc's per-thread caches and 2 MiB SQLite's page cache). The documents
    // are many times that (`loaded` is checked below), and glibc keeps nearly all of it, so
    // memory kept by the allocator cannot hide in the slack.
    let bound = baseline + baseline / 5 + 8 * 1024;
    assert!(
        loaded > bound + 16 * 1024,
        "the documents did not raise RSS enough for the test to mean anything: \
         baseline {baseline} KiB, loaded {loaded} KiB"
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut series = Vec::new();
    loop {
        let rss = rss_kib(pid);
        series.push(rss);
        if rss <= bound {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "RSS did not come back within 60 s after the documents unloaded: baseline \
             {baseline} KiB, loaded {loaded} KiB, bound {bound} KiB, samples (every 0.5 s) \
             {series:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "RSS: baseline {baseline} KiB, loaded {loaded} KiB, back to {} KiB ({} samples)",
        series.last().copied().unwrap_or_default(),
        series.len()
    );
}
