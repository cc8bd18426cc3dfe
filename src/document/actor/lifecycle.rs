//! Loading, compaction and unloading of a document actor.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::{DocumentActor, now_ms};
use crate::backoff::{Backoff, BackoffPolicy};
use crate::cluster::relay::stream_tip;
use crate::cluster::{Cluster, WantLease};
use crate::document::compaction::CompactionStep;
use crate::document::unload::UnloadStep;
use crate::document::{DocumentState, Unregister};
use crate::metrics::Metrics;
use crate::protocol::Message;
use crate::store::{Store, StoreError, StoredDocument};

/// The document's stream position in a cluster (empty on a single node), read before the load.
async fn stream_position(cluster: Option<&Cluster>, name: &str) -> String {
    let Some(c) = cluster else {
        return String::new();
    };
    stream_tip(&c.pool, &c.keys, name).await.unwrap_or_else(|error| {
        tracing::warn!(document = %name, %error, "cannot read the stream position; reading it from the start");
        "0-0".to_string()
    })
}

/// Reads the document and (single node) its fencing token, retrying a failing backend until
/// `load_timeout` has passed: a store that is restarting gets a few seconds before the open
/// fails.
async fn read_with_retry(
    store: Arc<dyn Store>,
    name: &str,
    metrics: &Metrics,
    in_cluster: bool,
    load_timeout: Duration,
    retry: BackoffPolicy,
) -> Result<(StoredDocument, u64), StoreError> {
    let deadline = Instant::now() + load_timeout;
    let mut backoff = Backoff::new(retry);
    loop {
        let started = Instant::now();
        let stored = store.load(name).await;
        metrics
            .store_seconds
            .with_label_values(&["load"])
            .observe(started.elapsed().as_secs_f64());
        // A single node takes its own fencing token from the store; a cluster node gets one
        // with the Redis lease.
        let result = match stored {
            Ok(stored) if !in_cluster => store.next_fence(name).await.map(|fence| (stored, fence)),
            Ok(stored) => Ok((stored, 0)),
            Err(e) => Err(e),
        };
        match result {
            // Only a backend failure can heal by waiting; corrupt data will not.
            Err(error @ StoreError::Backend(_)) if Instant::now() + backoff.delay() < deadline => {
                metrics
                    .store_errors_total
                    .with_label_values(&["load", error.kind()])
                    .inc();
                tracing::warn!(document = %name, %error, "load failed; retrying");
                backoff.wait().await;
            }
            other => return other,
        }
    }
}

impl DocumentActor {
    /// Loads the document from the store. `wait` holds the mailbox until it is loaded, so no
    /// Join or update is seen by a half-built document. In a cluster, the stream position is
    /// taken *before* the load, so nothing another node publishes meanwhile is missed (Yjs
    /// updates are idempotent: the overlap is harmless).
    pub(super) fn load(&mut self, ctx: &mut Context<Self>) {
        let store = Arc::clone(self.persistence.store());
        let name = Arc::clone(&self.name);
        let metrics = Arc::clone(&self.metrics);
        let cluster = self.cluster.clone();
        let load_timeout = self.config.load_timeout;
        let load_retry = self.config.load_retry;
        ctx.wait(
            async move {
                let tip = stream_position(cluster.as_ref(), &name).await;
                let result = read_with_retry(
                    store,
                    &name,
                    &metrics,
                    cluster.is_some(),
                    load_timeout,
                    load_retry,
                )
                .await;
                (result, tip)
            }
            .into_actor(self)
            .map(|(result, tip), act, ctx| match result {
                Ok((stored, fence)) => act.loaded(&stored, fence, tip, ctx),
                Err(error) => act.load_failed(&error, ctx),
            }),
        );
    }

    fn loaded(
        &mut self,
        stored: &StoredDocument,
        fence: u64,
        tip: String,
        ctx: &mut Context<Self>,
    ) {
        let (state, skipped) = DocumentState::restore(stored.entries(), self.config.limits);
        if skipped > 0 {
            self.metrics
                .store_errors_total
                .with_label_values(&["load", "corrupt"])
                .inc_by(skipped as u64);
            tracing::error!(document = %self.name, skipped, "stored updates that could not be applied were skipped");
        }
        self.state = state;
        self.memory
            .measured(self.state.full_state().map_or(0, |s| s.len()));
        self.rest_schedule_updated(ctx);
        self.compaction.loaded(stored.updates.len() as u64);
        self.unload.loaded();
        match self.cluster.clone() {
            None => self.compaction.owned_with(fence),
            Some(cluster) => {
                let me = ctx.address();
                cluster.reader.subscribe(
                    Arc::clone(&self.name),
                    self.id,
                    tip,
                    me.clone().recipient(),
                    me.clone().recipient(),
                );
                cluster.actor.do_send(WantLease {
                    doc: Arc::clone(&self.name),
                    id: self.id,
                    floor: stored.fence,
                    notify: me.recipient(),
                });
            }
        }
        self.start_awareness_expiry(ctx);
    }

    fn load_failed(&mut self, error: &StoreError, ctx: &mut Context<Self>) {
        self.metrics
            .store_errors_total
            .with_label_values(&["load", error.kind()])
            .inc();
        tracing::error!(document = %self.name, %error, "cannot load document");
        self.unload.load_failed();
        self.registry.do_send(Unregister {
            name: Arc::clone(&self.name),
            id: self.id,
        });
        ctx.stop();
    }

    /// Removes awareness states nobody renewed (their client is gone without saying so).
    fn start_awareness_expiry(&mut self, ctx: &mut Context<Self>) {
        let timeout = self.config.awareness_timeout.as_millis() as u64;
        ctx.run_interval(
            Duration::from_millis((timeout / 10).max(100)),
            move |act, _| {
                let now = now_ms();
                let expired = act.state.awareness.expire(now, timeout);
                if !expired.is_empty() {
                    let encoded = act.state.awareness.encode(&expired);
                    act.broadcast(&Message::Awareness(&encoded), None);
                }
                act.state.awareness.prune_removed(now, timeout * 2);
                act.awareness_changed();
            },
        );
    }

    pub(super) fn maybe_compact(&mut self, ctx: &mut Context<Self>) {
        let fence = match self
            .compaction
            .next_step(Instant::now(), self.acks.in_flight())
        {
            CompactionStep::Nothing => return,
            CompactionStep::RetryIn(wait) => {
                let timer = ctx.run_later(wait, |act, ctx| {
                    act.compaction.retry_fired();
                    act.maybe_compact(ctx);
                });
                self.compaction.retry_armed(timer);
                return;
            }
            CompactionStep::Compact { fence } => fence,
        };
        let store = Arc::clone(self.persistence.store());
        let name = Arc::clone(&self.name);
        let metrics = Arc::clone(&self.metrics);
        ctx.spawn(
            async move {
                let started = Instant::now();
                let result = store.compact(&name, fence).await;
                metrics
                    .store_seconds
                    .with_label_values(&["compact"])
                    .observe(started.elapsed().as_secs_f64());
                result
            }
            .into_actor(self)
            .map(|result, act, _| match result {
                Ok(outcome) => {
                    act.compaction
                        .finished(Instant::now(), Some(outcome.folded_updates));
                    tracing::debug!(document = %act.name, folded = outcome.folded_updates, bytes = outcome.snapshot_bytes, "compacted");
                }
                Err(error) => {
                    act.compaction.finished(Instant::now(), None);
                    act.metrics
                        .store_errors_total
                        .with_label_values(&["compact", error.kind()])
                        .inc();
                    tracing::warn!(document = %act.name, %error, "compaction failed; the log is kept");
                }
            }),
        );
    }

    pub(super) fn maybe_schedule_unload(&mut self, ctx: &mut Context<Self>) {
        if self.unload.should_arm(!self.attachments.is_empty()) {
            self.arm_unload(self.config.unload_grace, ctx);
        }
    }

    fn arm_unload(&mut self, after: Duration, ctx: &mut Context<Self>) {
        let timer = ctx.run_later(after, |act, ctx| act.try_unload(ctx));
        self.unload.armed(timer);
    }

    pub(super) fn cancel_unload(&mut self, ctx: &mut Context<Self>) {
        if let Some(timer) = self.unload.take_timer() {
            ctx.cancel_future(timer);
        }
    }

    /// Unloads once nobody is attached and every accepted update is durable.
    fn try_unload(&mut self, ctx: &mut Context<Self>) {
        let busy = self.acks.in_flight() > 0 || self.compaction.is_running();
        match self.unload.fired(!self.attachments.is_empty(), busy) {
            UnloadStep::Stay => {}
            UnloadStep::RetrySoon => self.arm_unload(Duration::from_millis(50), ctx),
            UnloadStep::Unload => {
                self.registry.do_send(Unregister {
                    name: Arc::clone(&self.name),
                    id: self.id,
                });
                ctx.stop();
            }
        }
    }
}
