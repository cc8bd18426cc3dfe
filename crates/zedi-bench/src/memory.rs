//! Memory scenarios: what the daemon's resident memory does under a load and after it.
//!
//! `churn`: baseline RSS; N writers each fill a document of ~S KiB (typing-like edits: chunks
//! inserted at random places, some deleted), all stay until every document is filled (the
//! loaded RSS), then all leave; once `/health` says 0 documents, RSS is sampled every second for
//! `settle`. Prints baseline, loaded, peak (VmHWM), the series and after/baseline, and the RSS a
//! loaded document costs per encoded byte (what `limits.document_memory_factor` should be).
//!
//! Another scenario (an attack mix, say) reads the server's memory through [`Probe`] the same
//! way: a `Probe` for the pid, [`Probe::spawn_peak_sampler`] while the load runs, then
//! [`wait_documents`] and [`Probe::settle`] after it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use yrs::{Doc, ReadTxn, StateVector, Text, Transact};
use zedi_protocol::protocol::{Message, PONG_FRAME, Packet, SyncMessage, decode, encode};

use crate::aconn::Conn;
use crate::machine;
use crate::scenarios::{Target, status_kb};
use crate::typing::Rng;

/// One process's memory as the kernel reports it (`/proc/PID/status`), in KiB.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub rss_kb: u64,
    pub hwm_kb: u64,
    /// The anonymous part of RSS (the heap, whatever the allocator holds); the rest is mapped
    /// files (the binary's pages as code runs, SQLite's shared memory index) and shmem.
    pub anon_kb: u64,
}

/// Reads a process's memory figures; `None` once the process is gone.
#[derive(Clone, Copy)]
pub struct Probe {
    pub pid: u32,
}

impl Probe {
    pub fn sample(&self) -> Option<Sample> {
        Some(Sample {
            rss_kb: status_kb(self.pid, "VmRSS")?,
            hwm_kb: status_kb(self.pid, "VmHWM")?,
            anon_kb: status_kb(self.pid, "RssAnon").unwrap_or(0),
        })
    }

    /// Samples RSS every `every` until the returned sender is dropped or set, keeping the
    /// largest value seen (VmHWM covers the whole life of the process; this covers one phase).
    pub fn spawn_peak_sampler(&self, every: Duration) -> (watch::Sender<bool>, Arc<AtomicU64>) {
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let peak = Arc::new(AtomicU64::new(0));
        let (probe, seen) = (*self, peak.clone());
        tokio::spawn(async move {
            loop {
                if let Some(s) = probe.sample() {
                    seen.fetch_max(s.rss_kb, Ordering::Relaxed);
                }
                tokio::select! {
                    _ = stop_rx.changed() => break,
                    _ = tokio::time::sleep(every) => {}
                }
            }
        });
        (stop_tx, peak)
    }

    /// RSS once a second for `settle` (the first sample at once): the series, in KiB.
    pub async fn settle(&self, settle: Duration) -> Vec<u64> {
        let start = Instant::now();
        let mut series = Vec::new();
        let mut next = start;
        while next <= start + settle {
            tokio::time::sleep_until(next.into()).await;
            if let Some(s) = self.sample() {
                series.push(s.rss_kb);
            }
            next += Duration::from_secs(1);
        }
        series
    }
}

/// Polls `/health` (every 100 ms, bounded by `timeout`) until it reports `documents` loaded
/// documents or fewer; returns how long that took, `None` on timeout.
pub async fn wait_documents(t: &Target, documents: i64, timeout: Duration) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < timeout {
        let addr = t.addr;
        let health = tokio::task::spawn_blocking(move || machine::health(addr, &addr.to_string()))
            .await
            .ok()
            .flatten();
        if let Some(n) = health.and_then(|h| h.get("documents").and_then(Value::as_i64))
            && n <= documents
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

const WORDS: &[&str] = &[
    "the", "sync", "daemon", "keeps", "every", "document", "in", "memory", "while", "editors",
    "type", "notes", "and", "cursors", "move", "across", "a", "shared", "page", "of", "text",
];

/// The updates a typing-like writer sends to make a document of about `target` encoded bytes:
/// transactions of 40 edits, each a chunk of words inserted at a random place or (one in eight)
/// a few characters deleted, so the document has the many items and tombstones of real editing
/// rather than one long string. Returns the updates and the document's encoded size (at least
/// `target`).
pub fn typing_updates(client_id: u64, target: usize) -> (Vec<Vec<u8>>, usize) {
    let doc = Doc::with_client_id(client_id);
    let text = doc.get_or_insert_text("default");
    let mut rng = Rng(client_id.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let state_len = |doc: &Doc| {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
            .len()
    };
    let (mut updates, mut sent, mut encoded) = (Vec::new(), 0usize, 0usize);
    // Bounded: every transaction adds at least a few hundred bytes, and the count is capped.
    while encoded < target && updates.len() < 100_000 {
        let update = {
            let mut txn = doc.transact_mut();
            for _ in 0..40 {
                let len = text.len(&txn);
                if len > 200 && rng.below(8) == 0 {
                    let at = rng.below(u64::from(len - 8)) as u32;
                    text.remove_range(&mut txn, at, 1 + rng.below(8) as u32);
                } else {
                    let (mut chunk, want) = (String::new(), 8 + rng.below(56) as usize);
                    while chunk.len() < want {
                        chunk.push_str(WORDS[rng.below(WORDS.len() as u64) as usize]);
                        chunk.push(' ');
                    }
                    let at = rng.below(u64::from(len) + 1) as u32;
                    text.insert(&mut txn, at, &chunk);
                }
            }
            txn.encode_update_v1()
        };
        sent += update.len();
        updates.push(update);
        // The merged state differs from the sum of the updates (an insert inside an older
        // chunk splits it in two; deleted text is kept as a length only): measure it, every
        // eighth transaction while far from the target, every one near it.
        if sent * 2 >= target || updates.len() % 8 == 0 {
            encoded = state_len(&doc);
        }
    }
    (updates, encoded)
}

pub struct ChurnArgs {
    pub documents: usize,
    pub doc_bytes: usize,
    pub concurrency: usize,
    pub setup_timeout: Duration,
    pub unload_timeout: Duration,
    pub settle: Duration,
    pub server_pid: u32,
}

/// One writer of `churn`: open, send every update, wait for all acknowledgements, report the
/// document's encoded size on `filled`, then stay (answering pings) until told to leave.
#[allow(clippy::too_many_arguments)] // one writer's whole configuration, from its one caller
async fn churn_writer(
    t: Arc<Target>,
    doc: String,
    client_id: u64,
    doc_bytes: usize,
    gate: Arc<Semaphore>,
    deadline: Instant,
    filled: tokio::sync::mpsc::UnboundedSender<Result<usize, String>>,
    leave: watch::Receiver<bool>,
) {
    let result = fill_and_stay(t, doc, client_id, doc_bytes, gate, deadline, &filled, leave).await;
    if let Err(e) = result {
        let _ = filled.send(Err(e));
    }
}

#[allow(clippy::too_many_arguments)]
async fn fill_and_stay(
    t: Arc<Target>,
    doc: String,
    client_id: u64,
    doc_bytes: usize,
    gate: Arc<Semaphore>,
    deadline: Instant,
    filled: &tokio::sync::mpsc::UnboundedSender<Result<usize, String>>,
    mut leave: watch::Receiver<bool>,
) -> Result<(), String> {
    // Building the edits is CPU work of the generator: off the runtime's worker threads.
    let (updates, encoded) =
        tokio::task::spawn_blocking(move || typing_updates(client_id, doc_bytes))
            .await
            .map_err(|e| format!("generator: {e}"))?;
    let permit = gate.acquire_owned().await;
    let mut conn = Conn::open(t.addr, &t.url, doc.clone(), deadline).await?;
    for u in &updates {
        let frame = encode(&doc, &Message::Sync(SyncMessage::Update(u)));
        conn.send(frame, deadline).await?;
    }
    let mut acked = 0usize;
    while acked < updates.len() {
        let Some(f) = conn.frame(deadline).await? else {
            return Err(format!("{acked} of {} updates acknowledged", updates.len()));
        };
        match decode(&f) {
            Ok(Packet::Ping) => conn.send(PONG_FRAME.to_vec(), deadline).await?,
            Ok(Packet::Message {
                message: Message::SyncStatus(ok),
                ..
            }) => {
                if !ok {
                    return Err("update refused (SyncStatus 0)".into());
                }
                acked += 1;
            }
            Ok(Packet::Message {
                message: Message::Close(reason),
                ..
            }) => return Err(format!("document closed: {reason:?}")),
            _ => {}
        }
    }
    drop(permit);
    let _ = filled.send(Ok(encoded));
    // Stay until every document is filled and the loaded RSS is read (bounded).
    let stay_until = deadline + Duration::from_secs(30);
    loop {
        tokio::select! {
            _ = leave.changed() => break,
            _ = tokio::time::sleep_until(stay_until.into()) => break,
            _ = conn.readable() => {
                // Reported already: a broken socket now only ends the stay early (the loaded
                // RSS then lacks this connection, not this document: it unloads later).
                loop {
                    match conn.try_frame() {
                        Ok(Some(f)) => {
                            if matches!(decode(&f), Ok(Packet::Ping))
                                && conn.send(PONG_FRAME.to_vec(), stay_until).await.is_err()
                            {
                                return Ok(());
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return Ok(()),
                    }
                }
            }
        }
    }
    conn.close();
    Ok(())
}

fn mib(kb: u64) -> f64 {
    (kb as f64 / 1024.0 * 10.0).round() / 10.0
}

/// Warm-up: one small document opened, filled and left, so the baseline has the threads,
/// store connection and buffers any first document brings, not only an idle process.
async fn warm_up(t: &Arc<Target>, a: &ChurnArgs, run_id: &str) -> Option<String> {
    let (filled_tx, mut filled_rx) = tokio::sync::mpsc::unbounded_channel();
    let (_leave_tx, leave_rx) = watch::channel(false);
    let deadline = Instant::now() + a.setup_timeout;
    tokio::spawn(churn_writer(
        t.clone(),
        format!("churn-{run_id}-warmup"),
        0xC0FF_EE00,
        4096,
        Arc::new(Semaphore::new(1)),
        deadline,
        filled_tx,
        leave_rx,
    ));
    // Leaving: `_leave_tx` is dropped when this returns, which ends the writer's stay.
    match tokio::time::timeout_at(deadline.into(), filled_rx.recv()).await {
        Ok(Some(Ok(_))) => None,
        Ok(Some(Err(e))) => Some(e),
        _ => Some("timed out".to_string()),
    }
}

/// What filling every document gave: the encoded bytes, how many filled, and notes.
struct Filled {
    encoded: usize,
    filled: usize,
    notes: Vec<String>,
}

/// Every writer reports once its updates are acknowledged and then stays: with all reports
/// in, every document is loaded and filled at once.
async fn collect_filled(
    filled_rx: &mut tokio::sync::mpsc::UnboundedReceiver<Result<usize, String>>,
    documents: usize,
    deadline: Instant,
) -> Filled {
    let mut f = Filled {
        encoded: 0,
        filled: 0,
        notes: Vec::new(),
    };
    for _ in 0..documents {
        match tokio::time::timeout_at(deadline.into(), filled_rx.recv()).await {
            Ok(Some(Ok(bytes))) => {
                f.encoded += bytes;
                f.filled += 1;
            }
            Ok(Some(Err(e))) => {
                if f.notes.len() < 5 {
                    f.notes.push(e);
                }
            }
            _ => {
                f.notes.push("fill timed out".into());
                break;
            }
        }
    }
    f
}

// Long: the scenario's phases in their order, then its one report; it reads best whole.
pub async fn churn(t: Arc<Target>, a: ChurnArgs, run_id: &str) -> Value {
    let probe = Probe { pid: a.server_pid };
    let warm_error = warm_up(&t, &a, run_id).await;
    let _ = wait_documents(&t, 0, a.unload_timeout).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = probe.sample();

    let started = Instant::now();
    let deadline = started + a.setup_timeout;
    let (peak_stop, fill_peak) = probe.spawn_peak_sampler(Duration::from_millis(200));
    let gate = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let (leave_tx, leave_rx) = watch::channel(false);
    let (filled_tx, mut filled_rx) = tokio::sync::mpsc::unbounded_channel();
    let writers: Vec<_> = (0..a.documents)
        .map(|i| {
            tokio::spawn(churn_writer(
                t.clone(),
                format!("churn-{run_id}-{i}"),
                0xC4_0000 + i as u64,
                a.doc_bytes,
                gate.clone(),
                deadline,
                filled_tx.clone(),
                leave_rx.clone(),
            ))
        })
        .collect();
    drop(filled_tx);
    // Read the loaded RSS once every document is filled, then all leave.
    let Filled {
        encoded,
        filled,
        mut notes,
    } = collect_filled(&mut filled_rx, a.documents, deadline).await;
    let fill_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = probe.sample();
    let _ = leave_tx.send(true);
    for w in writers {
        let _ = w.await;
    }
    if let Some(e) = warm_error {
        notes.push(format!("warm-up: {e}"));
    }
    let unload = wait_documents(&t, 0, a.unload_timeout).await;
    let _ = peak_stop.send(true);
    let series = if unload.is_some() {
        probe.settle(a.settle).await
    } else {
        notes.push("documents did not unload in time".into());
        Vec::new()
    };
    let end = probe.sample();
    let base_kb = baseline.map(|s| s.rss_kb);
    let loaded_kb = loaded.map(|s| s.rss_kb);
    let after_kb = series.last().copied();
    let per_doc_encoded = encoded.checked_div(filled).unwrap_or(0);
    // RSS a loaded document costs per byte of its encoding. The writers' idle sockets are in
    // the delta too (a few KiB each against ~100 KiB documents: BENCHMARKS.md, ramp).
    let factor = match (base_kb, loaded_kb) {
        (Some(b), Some(l)) if encoded > 0 => {
            Some(((l as f64 - b as f64) * 1024.0 / encoded as f64 * 100.0).round() / 100.0)
        }
        _ => None,
    };
    let ratio = base_kb
        .zip(after_kb)
        .filter(|(b, _)| *b > 0)
        .map(|(b, a)| (a as f64 / b as f64 * 100.0).round() / 100.0);
    json!({
        "scenario": "churn",
        "documents": a.documents,
        "documents_filled": filled,
        "doc_encoded_bytes_avg": per_doc_encoded,
        "fill_s": (fill_s * 10.0).round() / 10.0,
        "unload_s": unload.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
        "settle_s": a.settle.as_secs(),
        "rss_baseline_kb": base_kb,
        "rss_loaded_kb": loaded_kb,
        "rss_fill_peak_kb": fill_peak.load(Ordering::Relaxed),
        "rss_peak_kb": end.map(|s| s.hwm_kb),
        "rss_after_settle_kb": after_kb,
        "anon_baseline_kb": baseline.map(|s| s.anon_kb),
        "anon_loaded_kb": loaded.map(|s| s.anon_kb),
        "anon_after_settle_kb": end.map(|s| s.anon_kb),
        "rss_min_settle_kb": series.iter().min(),
        "rss_series_kb": series,
        "after_over_baseline": ratio,
        "rss_per_encoded_byte": factor,
        "summary_mib": format!(
            "baseline {} / loaded {} / peak {} / after {} s {}",
            base_kb.map_or(0.0, mib),
            loaded_kb.map_or(0.0, mib),
            end.map_or(0.0, |s| mib(s.hwm_kb)),
            a.settle.as_secs(),
            after_kb.map_or(0.0, mib)
        ),
        "notes": notes,
    })
}
