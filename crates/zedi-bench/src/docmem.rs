//! `docmem`: what an open document costs the server while nobody types in it.
//!
//! D documents are each typed to about `--doc-kib` KiB of encoded state by `--typists` people
//! ([`crate::typing`]: single-character keystrokes, each typist its own client id; the same
//! content in every document, made once: the server shares nothing between documents). Once a
//! document's updates are all acknowledged, one subscriber joins it (a full sync) and the
//! typists leave: the document stays open with one idle synced connection, like a browser tab
//! left open. Server RSS (`/proc/PID/status`) is read at the baseline (after a small warm-up
//! document came and went), loaded (every document filled), after `--idle` s (the daemon rests
//! documents nobody edits after `documents.rest_after_ms`), and once the subscribers left and the
//! documents unloaded (`/health` at 0 documents; a server whose `/health` has no `documents`,
//! Hocuspocus, gets no such wait) plus `--settle` s. Per document: (RSS − baseline) / D, in KiB
//! and as a multiple of the average encoded size (the generator's own `Doc`). The idle
//! subscriber's socket (a few KiB) is inside each figure.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, watch};

use crate::aconn::Conn;
use crate::machine;
use crate::memory::{Probe, wait_documents};
use crate::scenarios::Target;
use crate::typing::{Content, fill, typists_content};

pub struct DocmemArgs {
    pub documents: usize,
    pub doc_bytes: usize,
    pub typists: usize,
    pub concurrency: usize,
    pub setup_timeout: Duration,
    pub idle: Duration,
    pub unload_timeout: Duration,
    pub settle: Duration,
    pub server_pid: u32,
}

/// `/health` of the target (off the runtime's threads); `None` when it does not answer JSON.
pub async fn health(t: &Target) -> Option<Value> {
    let addr = t.addr;
    tokio::task::spawn_blocking(move || machine::health(addr, &addr.to_string()))
        .await
        .ok()
        .flatten()
}

/// The open documents `/health` reports, `None` when it has no such field.
pub async fn open_documents(t: &Target) -> Option<i64> {
    health(t)
        .await
        .and_then(|h| h.get("documents").and_then(Value::as_i64))
}

/// The sum over label sets of a metric in a Prometheus text exposition; `None` if absent.
pub fn metric_value(body: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in body.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let rest = match rest.chars().next() {
            Some(' ') => rest,
            Some('{') => rest.split_once('}').map_or("", |(_, v)| v),
            _ => continue,
        };
        if let Some(v) = rest
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            found = Some(found.unwrap_or(0.0) + v);
        }
    }
    found
}

/// `zedi_documents_at_rest` from the target's `/metrics`, `None` where it has none.
pub async fn documents_at_rest(t: &Target) -> Option<f64> {
    let addr = t.addr;
    let body = tokio::task::spawn_blocking(move || machine::http_get(addr, "/metrics"))
        .await
        .ok()
        .flatten()?;
    metric_value(&body, "zedi_documents_at_rest")
}

/// One document: typed in (under `gate`), then one subscriber synced, then the typists gone;
/// reports on `filled`, then idles the subscriber until `stop` (or `stay_until`).
async fn open_document(
    t: Arc<Target>,
    doc: String,
    content: Arc<Content>,
    gate: Arc<Semaphore>,
    (deadline, stay_until): (Instant, Instant),
    filled: mpsc::UnboundedSender<Result<(), String>>,
    mut stop: watch::Receiver<bool>,
) -> Option<String> {
    let permit = gate.acquire_owned().await;
    let opened = async {
        let typists = fill(&t, &doc, &content, deadline).await?;
        let subscriber = Conn::open(t.addr, &t.url, doc.clone(), deadline).await;
        for c in typists {
            c.close();
        }
        subscriber
    }
    .await;
    drop(permit);
    let mut sub = match opened {
        Ok(c) => c,
        Err(e) => {
            let _ = filled.send(Err(e));
            return None;
        }
    };
    let _ = filled.send(Ok(()));
    let broke = sub.idle(&mut stop, stay_until).await;
    sub.close();
    broke
}

/// Every document reported or the deadline passed: how many filled, the first errors.
async fn collect(
    rx: &mut mpsc::UnboundedReceiver<Result<(), String>>,
    n: usize,
    deadline: Instant,
) -> (usize, Vec<String>) {
    let (mut ok, mut notes) = (0usize, Vec::new());
    for _ in 0..n {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(Ok(()))) => ok += 1,
            Ok(Some(Err(e))) => {
                if notes.len() < 5 {
                    notes.push(e);
                }
            }
            _ => {
                notes.push("fill timed out".into());
                break;
            }
        }
    }
    (ok, notes)
}

/// Waits for the documents to unload: through `/health` where it counts them, else not at all.
async fn wait_unload(t: &Target, counts: bool, timeout: Duration) -> Result<f64, String> {
    if !counts {
        return Err("no `documents` in /health: no unload wait, --settle only".into());
    }
    match wait_documents(t, 0, timeout).await {
        Some(d) => Ok((d.as_secs_f64() * 10.0).round() / 10.0),
        None => Err("documents did not unload in time".into()),
    }
}

fn per_doc_kb(from: Option<u64>, to: Option<u64>, docs: usize) -> Option<f64> {
    let (a, b) = from.zip(to)?;
    (docs > 0).then(|| ((b as f64 - a as f64) / docs as f64 * 10.0).round() / 10.0)
}

fn multiple(kb: Option<f64>, encoded: usize) -> Option<f64> {
    kb.filter(|_| encoded > 0)
        .map(|kb| (kb * 1024.0 / encoded as f64 * 100.0).round() / 100.0)
}

// Long: the scenario's phases in their order, then its one report; it reads best whole.
pub async fn docmem(t: Arc<Target>, a: DocmemArgs, run_id: &str) -> Value {
    let probe = Probe { pid: a.server_pid };
    let counts = open_documents(&t).await.is_some();
    let gen_started = Instant::now();
    let (typists, bytes) = (a.typists, a.doc_bytes);
    let (content, warm) = tokio::task::spawn_blocking(move || {
        (
            typists_content(1, typists, bytes),
            typists_content(2, typists, 4096),
        )
    })
    .await
    .expect("generator");
    let (content, warm) = (Arc::new(content), Arc::new(warm));
    let gen_s = gen_started.elapsed().as_secs_f64();
    let mut notes = Vec::new();

    // Warm-up: one small document typed, synced and left, so the baseline has what any first
    // document brings (threads, store connection, buffers), not only an idle process.
    let (stop_tx, stop_rx) = watch::channel(false);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let deadline = Instant::now() + a.setup_timeout;
    let warm_task = tokio::spawn(open_document(
        t.clone(),
        format!("docmem-{run_id}-warmup"),
        warm,
        Arc::new(Semaphore::new(1)),
        (deadline, deadline),
        tx,
        stop_rx.clone(),
    ));
    let (_, e) = collect(&mut rx, 1, deadline).await;
    if !e.is_empty() {
        notes.push(format!("warm-up: {}", e.join("; ")));
    }
    let _ = stop_tx.send(true);
    let _ = warm_task.await;
    if counts {
        let _ = wait_documents(&t, 0, a.unload_timeout).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = probe.sample();

    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let deadline = started + a.setup_timeout;
    let stay_until = deadline + a.idle + Duration::from_secs(60);
    let gate = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..a.documents)
        .map(|i| {
            tokio::spawn(open_document(
                t.clone(),
                format!("docmem-{run_id}-{i}"),
                content.clone(),
                gate.clone(),
                (deadline, stay_until),
                tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(tx);
    let (filled, fill_notes) = collect(&mut rx, a.documents, deadline).await;
    notes.extend(fill_notes);
    let fill_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loaded = probe.sample();
    let open_loaded = open_documents(&t).await;

    tokio::time::sleep(a.idle).await;
    let idle = probe.sample();
    let open_idle = open_documents(&t).await;
    let at_rest = documents_at_rest(&t).await;

    let _ = stop_tx.send(true);
    let mut idle_errors = 0usize;
    for task in tasks {
        if let Ok(Ok(Some(e))) = tokio::time::timeout(Duration::from_secs(10), task).await {
            idle_errors += 1;
            if notes.len() < 8 {
                notes.push(format!("while idle: {e}"));
            }
        }
    }
    let unload_s = wait_unload(&t, counts, a.unload_timeout)
        .await
        .map_err(|e| notes.push(e))
        .ok();
    let series = probe.settle(a.settle).await;
    let end = probe.sample();

    let kb = |s: Option<crate::memory::Sample>| s.map(|s| s.rss_kb);
    let (base_kb, loaded_kb, idle_kb) = (kb(baseline), kb(loaded), kb(idle));
    let after_kb = series.last().copied();
    let per_idle = per_doc_kb(base_kb, idle_kb, filled);
    let per_loaded = per_doc_kb(base_kb, loaded_kb, filled);
    let per_after = per_doc_kb(base_kb, after_kb, a.documents);
    json!({
        "scenario": "docmem",
        "documents": a.documents,
        "documents_filled": filled,
        "typists": a.typists,
        "keystrokes_per_doc": content.keystrokes,
        "updates_per_doc": content.updates.len(),
        "doc_encoded_bytes_avg": content.encoded,
        "doc_update_bytes": content.update_bytes(),
        "generate_s": (gen_s * 10.0).round() / 10.0,
        "fill_s": (fill_s * 10.0).round() / 10.0,
        "idle_s": a.idle.as_secs_f64(),
        "settle_s": a.settle.as_secs(),
        "unload_s": unload_s,
        "open_documents_loaded": open_loaded,
        "open_documents_idle": open_idle,
        "documents_at_rest": at_rest,
        "rss_baseline_kb": base_kb,
        "rss_loaded_kb": loaded_kb,
        "rss_idle_kb": idle_kb,
        "rss_after_close_kb": after_kb,
        "rss_peak_kb": end.map(|s| s.hwm_kb),
        "anon_baseline_kb": baseline.map(|s| s.anon_kb),
        "anon_idle_kb": idle.map(|s| s.anon_kb),
        "rss_per_idle_doc_kb": per_idle,
        "idle_doc_over_encoded": multiple(per_idle, content.encoded),
        "rss_per_loaded_doc_kb": per_loaded,
        "loaded_doc_over_encoded": multiple(per_loaded, content.encoded),
        "rss_per_doc_after_close_kb": per_after,
        "idle_errors": idle_errors,
        "notes": notes,
    })
}

/// The line a person reads.
pub fn summary(v: &Value) -> String {
    format!(
        "docmem {} docs x {} B encoded ({} typists): per open document loaded {} KiB ({}x), \
         idle {} s {} KiB ({}x), after close {} KiB; at rest {}",
        v["documents_filled"],
        v["doc_encoded_bytes_avg"],
        v["typists"],
        v["rss_per_loaded_doc_kb"],
        v["loaded_doc_over_encoded"],
        v["idle_s"],
        v["rss_per_idle_doc_kb"],
        v["idle_doc_over_encoded"],
        v["rss_per_doc_after_close_kb"],
        v["documents_at_rest"],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_value_sums_label_sets_and_ignores_longer_names() {
        let body = "# TYPE zedi_documents_at_rest gauge\nzedi_documents_at_rest 7\n\
                    zedi_documents_at_rest_total 99\nzedi_documents_open 9\n";
        assert_eq!(metric_value(body, "zedi_documents_at_rest"), Some(7.0));
        let labelled =
            "zedi_documents_at_rest{store=\"a\"} 2\nzedi_documents_at_rest{store=\"b\"} 3\n";
        assert_eq!(metric_value(labelled, "zedi_documents_at_rest"), Some(5.0));
        assert_eq!(
            metric_value("Welcome to Hocuspocus!", "zedi_documents_at_rest"),
            None
        );
    }

    #[test]
    fn per_document_figures() {
        assert_eq!(per_doc_kb(Some(1000), Some(3000), 10), Some(200.0));
        assert_eq!(per_doc_kb(Some(1000), None, 10), None);
        assert_eq!(per_doc_kb(Some(1000), Some(3000), 0), None);
        assert_eq!(multiple(Some(200.0), 102_400), Some(2.0));
    }
}
