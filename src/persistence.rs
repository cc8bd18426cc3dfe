//! Group commit: every document actor hands its updates to one writer task, which writes
//! whatever has queued up in a single store transaction. Under load, many keystrokes share one
//! fsync; when idle, an update is written alone with no added delay.
//!
//! Acknowledged means durable: the caller gets its completion only after the transaction that
//! holds its update committed. A failed write is retried with backoff, never dropped; the
//! number of updates waiting is bounded, and a caller that finds the bound reached is refused
//! *before* it applies anything, so the client hears "rejected" rather than losing an update.
//!
//! The bytes of queued updates are charged to the memory budget ([`Holder::StoreQueue`]) from
//! submission until they are durable: a slow or failing store makes every document's accepted
//! edits pile up here, and the count bound alone says nothing about their size.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use prometheus::Histogram;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};

use crate::backoff::{Backoff, BackoffPolicy};
use crate::budget::{Charge, Holder, MemoryBudget};
use crate::metrics::Metrics;
use crate::store::{AppendItem, Store, StoreError};

/// Tunables, from `[store]` in the configuration.
#[derive(Debug, Clone)]
pub struct PersistenceConfig {
    pub max_batch: usize,
    pub max_pending_writes: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
}

struct Request {
    /// `None` is a barrier: nothing to write, but the completion waits for every write queued
    /// before it (used to acknowledge an update that changed nothing).
    item: Option<AppendItem>,
    done: oneshot::Sender<()>,
    /// The update's bytes in the budget; released when the request is completed (or dropped
    /// with the writer at shutdown).
    charge: Charge,
    permit: OwnedSemaphorePermit,
}

impl Request {
    /// Releases the update's place and charge, then tells the caller. In that order, so that
    /// whoever hears "durable" sees the queue and the budget without it.
    fn complete(self) {
        let Request {
            done,
            charge,
            permit,
            ..
        } = self;
        drop(charge);
        drop(permit);
        let _ = done.send(());
    }
}

/// Handle to the writer task; cheap to clone.
#[derive(Clone)]
pub struct Persistence {
    tx: mpsc::UnboundedSender<Request>,
    permits: Arc<Semaphore>,
    degraded: Arc<AtomicBool>,
    store: Arc<dyn Store>,
    budget: Arc<MemoryBudget>,
}

/// The queue of not-yet-durable updates is full.
#[derive(Debug, thiserror::Error)]
#[error("store write queue is full")]
pub struct QueueFull;

/// A reserved place in the write queue: taking it before applying an update is what lets the
/// caller refuse cleanly instead of dropping an update it already applied.
pub struct Reservation {
    permit: OwnedSemaphorePermit,
    tx: mpsc::UnboundedSender<Request>,
    budget: Arc<MemoryBudget>,
}

impl Reservation {
    /// Queues the update (or a barrier, for `None`); the receiver completes once durable.
    pub fn submit(self, item: Option<AppendItem>) -> oneshot::Receiver<()> {
        let (done, rx) = oneshot::channel();
        let mut charge = Charge::new(&self.budget, Holder::StoreQueue);
        charge.set(item.as_ref().map_or(0, queued_bytes));
        // The writer only stops after every sender is gone, so this send cannot fail while a
        // reservation exists; if it did, the dropped `done` makes the caller see an error.
        let _ = self.tx.send(Request {
            item,
            done,
            charge,
            permit: self.permit,
        });
        rx
    }
}

impl Persistence {
    /// Starts the writer on the current runtime; queued updates are charged to `budget`.
    pub fn start(
        store: Arc<dyn Store>,
        config: PersistenceConfig,
        metrics: Arc<Metrics>,
        budget: Arc<MemoryBudget>,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let degraded = Arc::new(AtomicBool::new(false));
        let permits = Arc::new(Semaphore::new(config.max_pending_writes));
        let writer = Writer {
            store: Arc::clone(&store),
            config,
            append_seconds: metrics.store_seconds.with_label_values(&["append"]),
            metrics,
            degraded: Arc::clone(&degraded),
            permits: Arc::clone(&permits),
        };
        tokio::spawn(writer.run(rx));
        Persistence {
            tx,
            permits,
            degraded,
            store,
            budget,
        }
    }

    pub fn try_reserve(&self) -> Result<Reservation, QueueFull> {
        let permit = Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| QueueFull)?;
        Ok(Reservation {
            permit,
            tx: self.tx.clone(),
            budget: Arc::clone(&self.budget),
        })
    }

    /// Completes once every update queued before the call is durable (used at shutdown).
    pub async fn flush(&self) {
        let permit = Arc::clone(&self.permits).acquire_owned().await;
        if let Ok(permit) = permit {
            let rx = Reservation {
                permit,
                tx: self.tx.clone(),
                budget: Arc::clone(&self.budget),
            }
            .submit(None);
            let _ = rx.await;
        }
    }

    /// True while writes are failing and being retried.
    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }
}

/// What one queued update holds: its bytes and its document's name (the queue's own bookkeeping
/// is a few words per update, left out).
fn queued_bytes(item: &AppendItem) -> usize {
    item.update.len() + item.name.len()
}

struct Writer {
    store: Arc<dyn Store>,
    config: PersistenceConfig,
    metrics: Arc<Metrics>,
    /// `store_seconds{op="append"}`, looked up once: it is observed on every group commit.
    append_seconds: Histogram,
    degraded: Arc<AtomicBool>,
    permits: Arc<Semaphore>,
}

impl Writer {
    async fn run(self, mut rx: mpsc::UnboundedReceiver<Request>) {
        let mut batch: Vec<Request> = Vec::with_capacity(self.config.max_batch);
        while let Some(first) = rx.recv().await {
            batch.push(first);
            while batch.len() < self.config.max_batch {
                match rx.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.metrics
                .store_pending_writes
                .set((self.config.max_pending_writes - self.permits.available_permits()) as i64);
            let items: Vec<AppendItem> = batch.iter().filter_map(|r| r.item.clone()).collect();
            if !items.is_empty() {
                self.write_until_durable(&items).await;
            }
            for request in batch.drain(..) {
                request.complete();
            }
            // Permits return as the requests complete above, so this is the depth still waiting.
            self.metrics
                .store_pending_writes
                .set((self.config.max_pending_writes - self.permits.available_permits()) as i64);
        }
        tracing::debug!("group committer stopped: every sender is gone");
    }

    /// Retries with exponential backoff until the batch is committed. Giving up would lose
    /// updates that were already applied and broadcast, so it never does while the process lives.
    async fn write_until_durable(&self, items: &[AppendItem]) {
        let mut backoff = Backoff::new(BackoffPolicy::new(
            self.config.retry_initial,
            self.config.retry_max,
        ));
        loop {
            let started = Instant::now();
            match self.store.append(items).await {
                Ok(()) => {
                    self.append_seconds.observe(started.elapsed().as_secs_f64());
                    self.metrics.store_batch_size.observe(items.len() as f64);
                    if self.degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!(store = self.store.kind(), "store writes recovered");
                        self.metrics.store_degraded.set(0);
                    }
                    return;
                }
                Err(error) => {
                    self.record_failure(&error);
                    tracing::warn!(
                        store = self.store.kind(),
                        %error,
                        updates = items.len(),
                        retry_in_ms = backoff.delay().as_millis() as u64,
                        "store append failed; retrying"
                    );
                    backoff.wait().await;
                }
            }
        }
    }

    fn record_failure(&self, error: &StoreError) {
        self.metrics
            .store_errors_total
            .with_label_values(&["append", error.kind()])
            .inc();
        self.degraded.store(true, Ordering::Relaxed);
        self.metrics.store_degraded.set(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use crate::store::contract::{render, text_update};

    fn config(max_pending: usize) -> PersistenceConfig {
        PersistenceConfig {
            max_batch: 64,
            max_pending_writes: max_pending,
            retry_initial: Duration::from_millis(5),
            retry_max: Duration::from_millis(20),
        }
    }

    fn budget() -> Arc<MemoryBudget> {
        MemoryBudget::unmetered(1 << 30)
    }

    fn item(text: &str, client: u64) -> Option<AppendItem> {
        Some(AppendItem {
            name: Arc::from("doc"),
            update: text_update(client, text),
            author: Arc::from("anonymous"),
        })
    }

    #[tokio::test]
    async fn completion_means_the_update_is_in_the_store() {
        let store = Arc::new(MemoryStore::new());
        let p = Persistence::start(store.clone(), config(100), Metrics::new(), budget());
        let mut waits = Vec::new();
        for i in 0..50u64 {
            waits.push(p.try_reserve().unwrap().submit(item("a", i + 1)));
        }
        for w in waits {
            w.await.unwrap();
        }
        assert_eq!(store.log_len("doc").await.unwrap(), 50);
    }

    #[tokio::test]
    async fn failures_are_retried_and_nothing_is_acknowledged_early() {
        let store = Arc::new(MemoryStore::new());
        store.set_failing(true);
        let p = Persistence::start(store.clone(), config(100), Metrics::new(), budget());
        let mut done = p.try_reserve().unwrap().submit(item("kept", 7));
        // While the store fails: not acknowledged, degraded.
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(
            done.try_recv().is_err(),
            "must not complete while the store is down"
        );
        assert!(p.is_degraded());
        store.set_failing(false);
        tokio::time::timeout(Duration::from_secs(5), done)
            .await
            .unwrap()
            .unwrap();
        assert!(!p.is_degraded());
        assert_eq!(render(&store.load("doc").await.unwrap()), "kept");
    }

    #[tokio::test]
    async fn the_queue_bound_refuses_new_writes_but_keeps_accepted_ones() {
        let store = Arc::new(MemoryStore::new());
        store.set_failing(true);
        let p = Persistence::start(store.clone(), config(3), Metrics::new(), budget());
        let accepted: Vec<_> = (0..3)
            .map(|i| p.try_reserve().unwrap().submit(item("x", 10 + i)))
            .collect();
        assert!(p.try_reserve().is_err(), "fourth write must be refused");
        store.set_failing(false);
        for a in accepted {
            tokio::time::timeout(Duration::from_secs(5), a)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(store.log_len("doc").await.unwrap(), 3);
        assert!(p.try_reserve().is_ok(), "room again once durable");
    }

    #[tokio::test]
    async fn a_barrier_completes_after_earlier_writes() {
        let store = Arc::new(MemoryStore::new());
        let p = Persistence::start(store.clone(), config(10), Metrics::new(), budget());
        let _write = p.try_reserve().unwrap().submit(item("b", 3));
        p.try_reserve().unwrap().submit(None).await.unwrap();
        assert_eq!(store.log_len("doc").await.unwrap(), 1);
    }

    #[tokio::test]
    async fn queued_updates_are_charged_to_the_budget_until_durable() {
        let store = Arc::new(MemoryStore::new());
        store.set_failing(true);
        let budget = budget();
        let p = Persistence::start(store.clone(), config(10), Metrics::new(), budget.clone());
        let items: Vec<_> = (0..3u64)
            .map(|i| item(&"y".repeat(100 * (i as usize + 1)), 20 + i))
            .collect();
        let expected: usize = items.iter().flatten().map(queued_bytes).sum();
        let mut waits = Vec::new();
        for (i, it) in items.into_iter().enumerate() {
            waits.push(p.try_reserve().unwrap().submit(it));
            let so_far = budget.used_by(Holder::StoreQueue);
            assert!(so_far > 0, "write {i} queued but nothing charged");
        }
        assert!(expected > 600, "the updates hold their text");
        // The store fails, so they all wait, charged, while the writer retries.
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(budget.used_by(Holder::StoreQueue), expected);
        assert_eq!(budget.used(), expected);
        store.set_failing(false);
        for w in waits {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(budget.used_by(Holder::StoreQueue), 0, "durable: released");
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn updates_dropped_at_shutdown_give_their_charge_back() {
        let budget = budget();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = Arc::new(MemoryStore::new());
        store.set_failing(true);
        let p = runtime.block_on(async {
            let p = Persistence::start(store.clone(), config(10), Metrics::new(), budget.clone());
            let _never_durable = p.try_reserve().unwrap().submit(item("lost", 30));
            // Let the writer take it and start retrying.
            tokio::time::sleep(Duration::from_millis(20)).await;
            p
        });
        assert!(budget.used_by(Holder::StoreQueue) > 0);
        // The runtime going away drops the writer and the updates it held.
        drop(runtime);
        assert_eq!(budget.used_by(Holder::StoreQueue), 0);
        drop(p);
    }
}
