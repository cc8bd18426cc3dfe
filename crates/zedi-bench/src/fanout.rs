//! Scenario `fanout`: K documents × S subscribers, one writer per document at R updates/s,
//! send → receive latency from a stamp inside the update's text. With `--reader-urls`,
//! subscribers connect to those nodes and the writers to `--url` (cross-node).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use yrs::{Doc, Text, TextRef, Transact};
use zedi_protocol::protocol::{Message, PONG_FRAME, Packet, SyncMessage, decode, encode};

use crate::aconn::{self, Conn, SubResult};
use crate::scenarios::{CpuMark, Target, pct};

pub struct FanoutArgs {
    pub documents: usize,
    pub subscribers: usize,
    pub rate: f64,
    pub warmup: Duration,
    pub seconds: Duration,
    pub setup_timeout: Duration,
    pub concurrency: usize,
    pub server_pid: Option<u32>,
}

#[derive(Default)]
struct WriterOut {
    sent: u64,
    acked: u64,
    ack_us: Vec<u32>,
    error: Option<String>,
}

/// When a fan-out writer sends: from `start` to `end`, measuring acks sent in `window_us`
/// (microseconds since `epoch`).
#[derive(Clone, Copy)]
struct Schedule {
    epoch: Instant,
    start: Instant,
    end: Instant,
    window_us: (u64, u64),
}

/// One document's writer and the text it types into.
struct Typing {
    conn: Conn,
    doc: String,
    ydoc: Doc,
    text: TextRef,
    /// Send times (µs since the epoch) of the updates not acknowledged yet, oldest first.
    sent_at: VecDeque<u64>,
}

impl Typing {
    /// One update stamped with its send time.
    async fn send_stamped(&mut self, epoch: Instant, deadline: Instant) -> Result<(), String> {
        let us = aconn::now_us(epoch);
        let update = {
            let mut txn = self.ydoc.transact_mut();
            let len = self.text.len(&txn);
            self.text.insert(&mut txn, len, &aconn::stamp(us));
            txn.encode_update_v1()
        };
        let frame = encode(&self.doc, &Message::Sync(SyncMessage::Update(&update)));
        self.conn.send(frame, deadline).await?;
        self.sent_at.push_back(us);
        Ok(())
    }

    /// Every frame there is: pings answered, acknowledgements counted into `out`.
    async fn read_acks(
        &mut self,
        s: &Schedule,
        deadline: Instant,
        out: &mut WriterOut,
    ) -> Result<(), String> {
        while let Some(f) = self.conn.try_frame()? {
            match decode(&f) {
                Ok(Packet::Ping) => {
                    let _ = self.conn.send(PONG_FRAME.to_vec(), deadline).await;
                }
                Ok(Packet::Message {
                    message: Message::SyncStatus(ok),
                    ..
                }) => {
                    let at = aconn::now_us(s.epoch);
                    if let Some(sent) = self.sent_at.pop_front()
                        && ok
                    {
                        out.acked += 1;
                        if sent >= s.window_us.0 && sent < s.window_us.1 {
                            out.ack_us
                                .push(at.saturating_sub(sent).min(u32::MAX as u64) as u32);
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// One writer per document: connects to `t`, handshakes, then sends one stamped update every
/// 1/rate s from `start` to `end` (open loop: it does not wait for acks), reading acks meanwhile.
/// `phase` is this writer's fraction of the period: the writers spread evenly over it, so the
/// load is steady instead of one burst per period.
async fn fan_writer(
    t: Arc<Target>,
    doc: String,
    client_id: u64,
    (rate, phase): (f64, f64),
    setup_deadline: Instant,
    s: Schedule,
) -> WriterOut {
    let mut out = WriterOut::default();
    let conn = match Conn::connect(t.addr, &t.url, doc.clone(), setup_deadline).await {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(e);
            return out;
        }
    };
    let ydoc = Doc::with_client_id(client_id);
    let text = ydoc.get_or_insert_text("default");
    let mut w = Typing {
        conn,
        doc,
        ydoc,
        text,
        sent_at: VecDeque::new(),
    };
    if let Err(e) = w.conn.handshake(setup_deadline).await {
        out.error = Some(e);
        return out;
    }
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let mut next = s.start + Duration::from_secs_f64(period.as_secs_f64() * phase);
    let drain_end = s.end + Duration::from_secs(3);
    loop {
        let now = Instant::now();
        if now >= drain_end || (now >= s.end && w.sent_at.is_empty()) {
            break;
        }
        let wake = if now < s.end {
            next.min(drain_end)
        } else {
            drain_end
        };
        let step = tokio::select! {
            _ = tokio::time::sleep_until(wake.into()) => {
                if Instant::now() < s.end && Instant::now() >= next {
                    let sent = w.send_stamped(s.epoch, drain_end).await;
                    out.sent += u64::from(sent.is_ok());
                    next += period;
                    next = next.max(Instant::now()); // fell behind: no burst
                    sent
                } else {
                    Ok(())
                }
            }
            _ = w.conn.readable() => w.read_acks(&s, drain_end, &mut out).await,
        };
        if let Err(e) = step {
            out.error = Some(e);
            break;
        }
    }
    w.conn.close();
    out
}

/// Hand-rolled subscriber: handshake under the gate, then receive in the window it learns
/// through `win` once setup is over.
async fn subscriber(
    target: Arc<Target>,
    doc: String,
    gate: Arc<Semaphore>,
    ready: tokio::sync::mpsc::UnboundedSender<bool>,
    mut win: WindowReceiver,
    (epoch, setup_deadline): (Instant, Instant),
) -> SubResult {
    let permit = gate.acquire_owned().await;
    let t0 = Instant::now();
    let c = Conn::open(target.addr, &target.url, doc, setup_deadline).await;
    drop(permit);
    let _ = ready.send(c.is_ok());
    let mut r = SubResult::default();
    let mut conn = match c {
        Ok(c) => c,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    r.connected = true;
    r.handshake_us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
    let _ = tokio::time::timeout_at(
        (setup_deadline + Duration::from_secs(5)).into(),
        win.wait_for(|w| w.is_some()),
    )
    .await;
    let Some((_, window_us, end)) = *win.borrow() else {
        conn.close();
        return r;
    };
    aconn::receive(
        &mut conn,
        &mut r,
        epoch,
        window_us,
        end,
        None,
        aconn::Count::Stamp,
    )
    .await;
    conn.close();
    r
}

/// Where subscribers learn the window once setup is over: (start, window in µs since the
/// epoch, end of listening).
type WindowReceiver = watch::Receiver<Option<(Instant, (u64, u64), Instant)>>;

/// What the writers and subscribers reported, summed.
#[derive(Default)]
struct Totals {
    sent: u64,
    acked: u64,
    ack_us: Vec<u32>,
    writer_errors: usize,
    latencies: Vec<u32>,
    deliveries: u64,
    connected: usize,
    subscriber_errors: usize,
    handshakes: Vec<u32>,
    notes: Vec<String>,
}

impl Totals {
    async fn collect(
        writers: Vec<JoinHandle<WriterOut>>,
        subs: Vec<JoinHandle<SubResult>>,
    ) -> Totals {
        let mut t = Totals::default();
        for w in writers {
            if let Ok(mut o) = w.await {
                t.sent += o.sent;
                t.acked += o.acked;
                t.ack_us.append(&mut o.ack_us);
                if let Some(e) = o.error {
                    t.writer_errors += 1;
                    if t.notes.len() < 5 {
                        t.notes.push(format!("writer: {e}"));
                    }
                }
            }
        }
        for s in subs {
            if let Ok(mut r) = s.await {
                t.connected += usize::from(r.connected);
                if r.connected {
                    t.handshakes.push(r.handshake_us);
                }
                t.deliveries += r.deliveries;
                t.latencies.append(&mut r.latencies_us);
                if let Some(e) = r.error {
                    t.subscriber_errors += 1;
                    if t.notes.len() < 10 {
                        t.notes.push(format!("subscriber: {e}"));
                    }
                }
            }
        }
        t.latencies.sort_unstable();
        t.ack_us.sort_unstable();
        t.handshakes.sort_unstable();
        t
    }
}

/// Subscribers first: every one connected (or setup timed out) before the writers start.
async fn start_subscribers(
    t: &Arc<Target>,
    readers: &[Arc<Target>],
    a: &FanoutArgs,
    run_id: &str,
    win_rx: WindowReceiver,
    (epoch, setup_deadline): (Instant, Instant),
) -> Vec<JoinHandle<SubResult>> {
    let gate = Arc::new(Semaphore::new(a.concurrency.max(1)));
    let nsubs = a.documents * a.subscribers;
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let subs: Vec<_> = (0..nsubs)
        .map(|i| {
            let target = if readers.is_empty() {
                t.clone()
            } else {
                readers[i % readers.len()].clone()
            };
            let doc = format!("fan-{run_id}-{}", i % a.documents);
            let (gate, ready, win) = (gate.clone(), ready_tx.clone(), win_rx.clone());
            tokio::spawn(subscriber(
                target,
                doc,
                gate,
                ready,
                win,
                (epoch, setup_deadline),
            ))
        })
        .collect();
    drop(ready_tx);
    let mut ready = 0usize;
    while ready < nsubs {
        match tokio::time::timeout_at(setup_deadline.into(), ready_rx.recv()).await {
            Ok(Some(_)) => ready += 1,
            _ => break,
        }
    }
    subs
}

/// K documents × S subscribers + one writer per document (writers on `t`, subscribers on
/// `readers` round-robin, or on `t` too when empty).
pub async fn fanout(
    t: Arc<Target>,
    readers: Vec<Arc<Target>>,
    a: FanoutArgs,
    run_id: &str,
) -> Value {
    let epoch = Instant::now();
    let setup_deadline = epoch + a.setup_timeout;
    let nsubs = a.documents * a.subscribers;
    // The window is fixed after setup; subscribers learn it through a watch channel.
    let (win_tx, win_rx) = watch::channel::<Option<(Instant, (u64, u64), Instant)>>(None);
    let subs = start_subscribers(&t, &readers, &a, run_id, win_rx, (epoch, setup_deadline)).await;
    let setup_ms = epoch.elapsed().as_secs_f64() * 1000.0;
    // Writers: connect now, start sending 0.5 s later.
    let start = Instant::now() + Duration::from_millis(500);
    let measure_start = start + a.warmup;
    let end = measure_start + a.seconds;
    let window_us = (
        measure_start.duration_since(epoch).as_micros() as u64,
        end.duration_since(epoch).as_micros() as u64,
    );
    // Subscribers listen 2 s past the window for late deliveries.
    let _ = win_tx.send(Some((start, window_us, end + Duration::from_secs(2))));
    let wdeadline = Instant::now() + Duration::from_secs(10).min(a.setup_timeout);
    let schedule = Schedule {
        epoch,
        start,
        end,
        window_us,
    };
    let writers: Vec<_> = (0..a.documents)
        .map(|d| {
            let (doc, phase) = (format!("fan-{run_id}-{d}"), d as f64 / a.documents as f64);
            tokio::spawn(fan_writer(
                t.clone(),
                doc,
                0x5AEE_0000 + d as u64,
                (a.rate, phase),
                wdeadline,
                schedule,
            ))
        })
        .collect();
    tokio::time::sleep_until(measure_start.into()).await;
    let c0 = CpuMark::now(a.server_pid);
    tokio::time::sleep_until(end.into()).await;
    let c1 = CpuMark::now(a.server_pid);
    let (bench_cpu, server_cpu) = c1.since(&c0);
    let r = Totals::collect(writers, subs).await;
    let secs = a.seconds.as_secs_f64();
    // Expected deliveries: every update sent in the window × the subscribers of its document.
    let expected = (a.rate * secs) * (a.documents * a.subscribers) as f64;
    json!({
        "scenario": if readers.is_empty() { "fanout" } else { "cross-node" },
        "documents": a.documents,
        "subscribers_per_doc": a.subscribers,
        "rate_per_doc": a.rate,
        "subscribers_connected": r.connected,
        "setup_ms": (setup_ms * 10.0).round() / 10.0,
        "handshake_p50_ms": pct(&r.handshakes, 0.5),
        "handshake_p99_ms": pct(&r.handshakes, 0.99),
        "seconds": secs,
        "updates_sent": r.sent,
        "updates_acked": r.acked,
        "deliveries": r.deliveries,
        "deliveries_expected_approx": expected.round(),
        "deliveries_per_sec": (r.deliveries as f64 / secs * 10.0).round() / 10.0,
        "p50_ms": pct(&r.latencies, 0.5),
        "p99_ms": pct(&r.latencies, 0.99),
        "max_ms": pct(&r.latencies, 1.0),
        "ack_p50_ms": pct(&r.ack_us, 0.5),
        "ack_p99_ms": pct(&r.ack_us, 0.99),
        "errors": r.writer_errors + r.subscriber_errors + (nsubs - r.connected).saturating_sub(r.subscriber_errors),
        "client_cpu_pct": bench_cpu,
        "server_cpu_pct": server_cpu,
        "server_cpu_s": c1.server_seconds_since(&c0),
        "notes": r.notes,
    })
}
