//! History's storage cost and time-travel latency on the embedded store (issue 19):
//! `cargo bench --bench history` appends 100,000 one-character keystrokes (group-committed in
//! batches of 100, compacted every 500 as `store.compact_after_updates` does by default), once
//! without history and once with it, and prints the store's bytes on disk per 10,000
//! keystrokes, then the time to rebuild the document at instants 10 %, 50 % and 100 % of the
//! way (read the history up to the instant, fold it, encode it), median of 5.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use yrs::{Text, Transact};
use zedi_sync::document::{DocumentLimits, DocumentState};
use zedi_sync::store::{AppendItem, HistoryPoint, HistoryPolicy, SqliteStore, Store};

const KEYSTROKES: usize = 100_000;
const BATCH: usize = 100;
const COMPACT_EVERY: usize = 500;

fn keystrokes(count: usize) -> Vec<Vec<u8>> {
    let doc = yrs::Doc::with_client_id(42);
    let text = doc.get_or_insert_text("default");
    (0..count)
        .map(|i| {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, i as u32, if i % 7 == 6 { " " } else { "x" });
            txn.encode_update_v1()
        })
        .collect()
}

fn disk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Appends every update; returns the instants after 10 %, 50 % and 100 % of them and the bytes
/// on disk after each 10,000.
async fn fill(
    store: &SqliteStore,
    dir: &std::path::Path,
    updates: &[Vec<u8>],
) -> (Vec<i64>, Vec<u64>) {
    let mut marks = Vec::new();
    let mut sizes = Vec::new();
    for (i, chunk) in updates.chunks(BATCH).enumerate() {
        let batch: Vec<AppendItem> = chunk
            .iter()
            .map(|u| AppendItem {
                name: Arc::from("bench"),
                update: bytes::Bytes::from(u.clone()),
                author: Arc::from("typist"),
            })
            .collect();
        store.append(&batch).await.expect("append");
        let done = (i + 1) * BATCH;
        if done.is_multiple_of(COMPACT_EVERY) {
            let fence = store.next_fence("bench").await.expect("fence");
            store.compact("bench", fence).await.expect("compact");
        }
        if done.is_multiple_of(10_000) {
            sizes.push(disk_bytes(dir));
        }
        if done == KEYSTROKES / 10 || done == KEYSTROKES / 2 || done == KEYSTROKES {
            tokio::time::sleep(Duration::from_millis(5)).await;
            marks.push(now_ms());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    (marks, sizes)
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "machine: {cpu}, {cores} cores; zedi-sync {}",
        env!("CARGO_PKG_VERSION")
    );
    let updates = keystrokes(KEYSTROKES);
    let update_bytes: usize = updates.iter().map(Vec::len).sum();
    println!(
        "{KEYSTROKES} keystrokes, {update_bytes} bytes of updates ({:.1} per keystroke)",
        update_bytes as f64 / KEYSTROKES as f64
    );
    runtime.block_on(async {
        for (label, policy) in [
            ("history off", HistoryPolicy::default()),
            (
                "history on ",
                HistoryPolicy {
                    retention: Some(Duration::from_secs(30 * 86_400)),
                },
            ),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let store = SqliteStore::open_with(&dir.path().join("bench.db"), policy).expect("open");
            let started = Instant::now();
            let (marks, sizes) = fill(&store, dir.path(), &updates).await;
            let per_10k: Vec<String> = sizes
                .windows(2)
                .map(|w| format!("{}", w[1].saturating_sub(w[0])))
                .collect();
            println!(
                "{label}: wrote in {:.1} s; on disk after 100k: {} KiB; growth per 10k keystrokes (bytes): {}",
                started.elapsed().as_secs_f64(),
                sizes.last().copied().unwrap_or(0) / 1024,
                per_10k.join(" ")
            );
            if policy.retention.is_none() {
                continue;
            }
            for (share, at) in ["10 %", "50 %", "100 %"].iter().zip(&marks) {
                let mut samples = Vec::new();
                let mut rows = 0;
                for _ in 0..5 {
                    let start = Instant::now();
                    let history = store.history("bench", HistoryPoint::At(*at)).await.expect("history");
                    rows = history.rows.len();
                    let (document, _) = DocumentState::restore(history.entries(), DocumentLimits::default());
                    let encoded = document.encode_state().expect("encode");
                    std::hint::black_box(encoded);
                    samples.push(start.elapsed().as_secs_f64() * 1000.0);
                }
                samples.sort_by(f64::total_cmp);
                println!("  time travel to {share:<5} ({rows} updates to replay): {:.0} ms (median of 5)", samples[2]);
            }
        }
    });
}
