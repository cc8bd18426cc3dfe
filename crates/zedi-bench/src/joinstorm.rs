//! `joinstorm`: many clients opening one large document at once (a meeting starts, a link is
//! shared in a big channel).
//!
//! One document is typed to about `--doc-kib` KiB by `--typists` people ([`crate::typing`]);
//! one subscriber joins (so it stays loaded) and the typists leave. After `--idle` s (long
//! enough, with zedi-sync, for the document to be at rest), `--connections` clients join it,
//! at most `--concurrency` handshaking at once (default: all): each connects and does the
//! provider handshake (Auth + SyncStep1 with the empty state vector) until synced (the
//! server's SyncStep2 received, our SyncStep2 acknowledged). Reported: time until all synced,
//! handshake p50/p99/max (connect to synced), server RSS before and peak during the storm
//! (sampled every 50 ms), server CPU seconds over it (`/proc/PID/stat`), bytes received per
//! joiner. The SyncStep2 of up to `VERIFY` joiners, spread over the storm, is decoded after it
//! (not during: decoding is CPU the server would lose) and its text compared with the typists'.
//! The joiners stay connected until all are synced (or the deadline), then all leave.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::aconn::Conn;
use crate::docmem::documents_at_rest;
use crate::memory::Probe;
use crate::scenarios::{CpuMark, Target, pct};
use crate::typing::{fill, step2_text, typists_content};

/// Joiners whose SyncStep2 is decoded and compared with the typists' text.
const VERIFY: usize = 8;

pub struct JoinstormArgs {
    pub connections: usize,
    pub doc_bytes: usize,
    pub typists: usize,
    pub concurrency: usize,
    pub setup_timeout: Duration,
    pub idle: Duration,
    pub server_pid: Option<u32>,
}

/// What one joiner reports once synced.
struct Joined {
    handshake_us: u32,
    received: usize,
    step2_len: usize,
    /// The SyncStep2 payload, kept for the sampled joiners only.
    step2: Option<Vec<u8>>,
}

async fn joiner(
    t: Arc<Target>,
    doc: String,
    keep: bool,
    gate: Arc<Semaphore>,
    (deadline, stay_until): (Instant, Instant),
    joined: mpsc::UnboundedSender<Result<Joined, String>>,
    mut stop: watch::Receiver<bool>,
) {
    let permit = gate.acquire_owned().await;
    let t0 = Instant::now();
    let opened = async {
        let mut c = Conn::connect(t.addr, &t.url, doc, deadline).await?;
        let (state, received) = c.handshake_keep(deadline).await?;
        Ok::<_, String>((c, state, received))
    }
    .await;
    drop(permit);
    let mut conn = match opened {
        Ok((conn, state, received)) => {
            let _ = joined.send(Ok(Joined {
                handshake_us: t0.elapsed().as_micros().min(u32::MAX as u128) as u32,
                received,
                step2_len: state.len(),
                step2: keep.then_some(state),
            }));
            conn
        }
        Err(e) => {
            let _ = joined.send(Err(e));
            return;
        }
    };
    drop(joined);
    let _ = conn.idle(&mut stop, stay_until).await;
    conn.close();
}

/// Whether the sampled SyncStep2 payloads yield `text`: (matching, notes on the others).
fn verify(samples: &[Vec<u8>], text: &str) -> (usize, Vec<String>) {
    let (mut ok, mut notes) = (0usize, Vec::new());
    for s in samples {
        match step2_text(s) {
            Ok(got) if got == text => ok += 1,
            Ok(got) => notes.push(format!(
                "SyncStep2 text of {} chars, the typists' has {}",
                got.chars().count(),
                text.chars().count()
            )),
            Err(e) => notes.push(e),
        }
    }
    (ok, notes)
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 10_000.0).round() / 10.0
}

// Long: the scenario's phases in their order, then its one report; it reads best whole.
pub async fn joinstorm(t: Arc<Target>, a: JoinstormArgs, run_id: &str) -> Value {
    let doc = format!("joinstorm-{run_id}");
    let (typists, bytes) = (a.typists, a.doc_bytes);
    let content = tokio::task::spawn_blocking(move || typists_content(3, typists, bytes))
        .await
        .expect("generator");
    let mut notes = Vec::new();

    // The document: typed, one subscriber synced, the typists gone.
    let deadline = Instant::now() + a.setup_timeout;
    let (stop_tx, stop_rx) = watch::channel(false);
    let fill_started = Instant::now();
    let subscriber = async {
        let typists = fill(&t, &doc, &content, deadline).await?;
        let sub = Conn::open(t.addr, &t.url, doc.clone(), deadline).await;
        for c in typists {
            c.close();
        }
        sub
    }
    .await;
    let fill_s = fill_started.elapsed().as_secs_f64();
    let sub_task = match subscriber {
        Ok(mut sub) => {
            let mut stop = stop_rx.clone();
            let until = deadline + a.idle + a.setup_timeout + Duration::from_secs(30);
            Some(tokio::spawn(async move {
                let broke = sub.idle(&mut stop, until).await;
                sub.close();
                broke
            }))
        }
        Err(e) => {
            notes.push(format!("fill: {e}"));
            None
        }
    };
    tokio::time::sleep(a.idle).await;
    let at_rest_before = documents_at_rest(&t).await;

    let probe = a.server_pid.map(|pid| Probe { pid });
    let rss_before = probe.and_then(|p| p.sample()).map(|s| s.rss_kb);
    let sampler = probe.map(|p| p.spawn_peak_sampler(Duration::from_millis(50)));
    let cpu0 = CpuMark::now(a.server_pid);
    let started = Instant::now();
    let storm_deadline = started + a.setup_timeout;
    let stay_until = storm_deadline + Duration::from_secs(5);
    let gate = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let every = a.connections.div_ceil(VERIFY).max(1);
    let tasks: Vec<_> = (0..a.connections)
        .map(|i| {
            tokio::spawn(joiner(
                t.clone(),
                doc.clone(),
                i % every == 0,
                gate.clone(),
                (storm_deadline, stay_until),
                tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(tx);
    let (mut hs, mut received, mut step2_lens, mut samples, mut errors) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), 0usize);
    while hs.len() + errors < a.connections {
        match tokio::time::timeout_at(storm_deadline.into(), rx.recv()).await {
            Ok(Some(Ok(j))) => {
                hs.push(j.handshake_us);
                received.push(j.received);
                step2_lens.push(j.step2_len);
                samples.extend(j.step2);
            }
            Ok(Some(Err(e))) => {
                errors += 1;
                if notes.len() < 5 {
                    notes.push(e);
                }
            }
            _ => {
                notes.push("storm timed out".into());
                break;
            }
        }
    }
    let all_synced = started.elapsed();
    let cpu1 = CpuMark::now(a.server_pid);
    let peak = sampler.map(|(stop, peak)| {
        let _ = stop.send(true);
        peak.load(Ordering::Relaxed)
    });
    let rss_synced = probe.and_then(|p| p.sample()).map(|s| s.rss_kb);
    let _ = stop_tx.send(true);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    }
    if let Some(task) = sub_task
        && let Ok(Ok(Some(e))) = tokio::time::timeout(Duration::from_secs(10), task).await
    {
        notes.push(format!("subscriber: {e}"));
    }
    let (text, sampled) = (content.text.clone(), samples.len());
    let (verified, verify_notes) = tokio::task::spawn_blocking(move || verify(&samples, &text))
        .await
        .unwrap_or((0, vec!["verification panicked".into()]));
    notes.extend(verify_notes);

    hs.sort_unstable();
    let synced = hs.len();
    let (bench_cpu, server_cpu) = cpu1.since(&cpu0);
    json!({
        "scenario": "joinstorm",
        "connections": a.connections,
        "concurrency": a.concurrency,
        "typists": a.typists,
        "keystrokes": content.keystrokes,
        "doc_encoded_bytes": content.encoded,
        "doc_update_bytes": content.update_bytes(),
        "text_chars": content.text.chars().count(),
        "fill_s": (fill_s * 10.0).round() / 10.0,
        "idle_s": a.idle.as_secs_f64(),
        "documents_at_rest_before": at_rest_before,
        "synced": synced,
        "errors": a.connections - synced,
        "complete": synced == a.connections,
        "all_synced_ms": ms(all_synced),
        "handshake_p50_ms": pct(&hs, 0.5),
        "handshake_p99_ms": pct(&hs, 0.99),
        "handshake_max_ms": pct(&hs, 1.0),
        "bytes_received_per_joiner": received.iter().sum::<usize>().checked_div(synced),
        "step2_bytes_min": step2_lens.iter().min(),
        "step2_bytes_max": step2_lens.iter().max(),
        "step2_verified": verified,
        "step2_sampled": sampled,
        "server_rss_before_kb": rss_before,
        "server_rss_peak_kb": peak,
        "server_rss_synced_kb": rss_synced,
        "server_cpu_s": cpu1.server_seconds_since(&cpu0),
        "server_cpu_pct": server_cpu,
        "client_cpu_pct": bench_cpu,
        "notes": notes,
    })
}

/// The line a person reads.
pub fn summary(v: &Value) -> String {
    format!(
        "joinstorm {}/{} joiners on {} B: all synced {} ms, handshake p50 {} / p99 {} ms, \
         peak RSS {} KiB (before {}), server CPU {} s, {} B per joiner, SyncStep2 verified {}/{}",
        v["synced"],
        v["connections"],
        v["doc_encoded_bytes"],
        v["all_synced_ms"],
        v["handshake_p50_ms"],
        v["handshake_p99_ms"],
        v["server_rss_peak_kb"],
        v["server_rss_before_kb"],
        v["server_cpu_s"],
        v["bytes_received_per_joiner"],
        v["step2_verified"],
        v["step2_sampled"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{ReadTxn, StateVector, Transact};

    #[test]
    fn a_joiners_step2_is_checked_against_the_typists_text() {
        let c = typists_content(11, 3, 8 * 1024);
        let doc = yrs::Doc::new();
        for (_, u) in &c.updates {
            use yrs::updates::decoder::Decode;
            doc.transact_mut()
                .apply_update(yrs::Update::decode_v1(u).unwrap())
                .unwrap();
        }
        let full = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        // Missing the last update: a shorter (or different) text.
        let partial = yrs::Doc::new();
        for (_, u) in &c.updates[..c.updates.len() - 1] {
            use yrs::updates::decoder::Decode;
            partial
                .transact_mut()
                .apply_update(yrs::Update::decode_v1(u).unwrap())
                .unwrap();
        }
        let short = partial
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let (ok, notes) = verify(&[full.clone(), short, vec![1, 2, 3]], &c.text);
        assert_eq!(ok, 1);
        assert_eq!(notes.len(), 2, "{notes:?}");
    }
}
