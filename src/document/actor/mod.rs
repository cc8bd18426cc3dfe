//! The document actor. All access to a document goes through its mailbox, which gives every
//! connection's frames a total order without locks.
//!
//! The actor composes the parts that own the document's state (attachments, acknowledgements,
//! compaction and unload schedules, memory) and decides when each acts; its submodules are
//! the message handlers ([`handlers`]), what it sends ([`outbound`]), loading, compaction and
//! unloading ([`lifecycle`]), awareness ([`awareness`]), the cluster side ([`replication`]) and
//! documents at rest ([`resting`]).

mod api;
mod awareness;
mod handlers;
mod lifecycle;
mod outbound;
mod replication;
mod resting;
mod versions;
mod webhooks;

pub use api::{ApiUpdate, CurrentState, DELETED_REASON, DeleteDocument, RestoreTo};
pub use handlers::UpdateRefusal;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use bytes::Bytes;

use super::acks::AckQueue;
use super::attachments::Attachments;
use super::compaction::CompactionSchedule;
use super::memory::DocumentMemory;
use super::rest::RestSchedule;
use super::unload::UnloadSchedule;
use super::{ConnKey, DocError, DocumentConfig, DocumentState, Unregister};
use crate::cluster::relay::RelayKind;
use crate::cluster::{Cluster, DropLease};
use crate::metrics::Metrics;
use crate::persistence::Persistence;
use crate::protocol::{CloseCode, Message};

pub struct DocumentActor {
    name: Arc<str>,
    id: u64,
    state: DocumentState,
    attachments: Attachments,
    unload: UnloadSchedule,
    acks: AckQueue,
    compaction: CompactionSchedule,
    memory: DocumentMemory,
    rest: RestSchedule,
    /// Changes applied but not yet broadcast: sent as one merged update once the mailbox has
    /// been drained (see [`DocumentActor::queue_update_broadcast`]), or before anything else
    /// is sent, so every socket still sees messages in the order they happened.
    unsent: Vec<Vec<u8>>,
    persistence: Persistence,
    /// Told when this actor stops, so the registry forgets it.
    registry: Recipient<Unregister>,
    metrics: Arc<Metrics>,
    config: DocumentConfig,
    cluster: Option<Cluster>,
    /// When the `change` webhook goes out.
    change_hook: super::change_hook::ChangeDebounce,
    /// The `create` webhook went out for this load.
    created_announced: bool,
    /// Editing activity towards the next automatic version.
    activity: versions::Activity,
    /// Updates from the document API waiting to be durable, by their key's session number.
    api_acks: std::collections::HashMap<u64, tokio::sync::oneshot::Sender<bool>>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl DocumentActor {
    pub fn new(
        name: Arc<str>,
        id: u64,
        persistence: Persistence,
        registry: Recipient<Unregister>,
        metrics: Arc<Metrics>,
        config: DocumentConfig,
        cluster: Option<Cluster>,
    ) -> Self {
        let debounce = config
            .webhooks
            .as_ref()
            .map_or((Duration::ZERO, Duration::ZERO), |w| w.debounce());
        DocumentActor {
            name,
            id,
            state: DocumentState::with_limits(config.limits),
            attachments: Attachments::new(config.max_outbound_bytes),
            unload: UnloadSchedule::new(),
            acks: AckQueue::default(),
            compaction: CompactionSchedule::new(
                config.compact_after_updates,
                config.compact_min_interval,
            ),
            memory: DocumentMemory::new(
                &config.budget,
                config.document_memory_factor,
                config.max_document_bytes,
            ),
            rest: RestSchedule::new(config.rest_after, std::time::Instant::now()),
            unsent: Vec::new(),
            persistence,
            registry,
            metrics,
            config,
            cluster,
            api_acks: std::collections::HashMap::new(),
            change_hook: super::change_hook::ChangeDebounce::new(debounce),
            created_announced: false,
            activity: versions::Activity::default(),
        }
    }

    /// An update (or state vector) this document will not take: answered `SyncStatus(0)` on
    /// that connection, which is then detached from this document only (its session closes
    /// the document with a CLOSE frame, or the socket if it keeps doing this). The document,
    /// the store and every other connection never see it.
    fn refuse_update(&mut self, key: &ConnKey, error: &DocError) {
        self.metrics.protocol_error(error.kind());
        tracing::warn!(document = %self.name, session = key.session, %error, "update refused");
        if !matches!(
            error,
            DocError::RefusedStateVector(_) | DocError::BadStateVector
        ) {
            self.send_to(key, &Message::SyncStatus(false));
        }
        if let Some(attachment) = self.attachments.get(key) {
            attachment
                .session()
                .update_refused(&key.address, error.to_string());
        }
        self.detach(key);
    }

    /// Closes the socket of one attachment and detaches it.
    fn close_socket(&mut self, key: &ConnKey, reason: &str) {
        if let Some(attachment) = self.attachments.get(key) {
            attachment
                .session()
                .close_socket(CloseCode::ResetConnection, reason);
        }
        self.detach(key);
    }

    /// yrs failed on input the firewall passed: a bug of ours or of yrs, and the in-memory
    /// document can no longer be trusted. The store never saw the update, so the document is
    /// reloaded from it, which closes every connection (4205; providers reconnect and resync).
    /// A client that found such a bug could repeat it at will, so a document reloads at most
    /// once per `RELOAD_INTERVAL`; within it only the offending connection is closed.
    fn internal_fault(&mut self, key: Option<&ConnKey>, ctx: &mut Context<Self>) {
        self.metrics.protocol_error(DocError::Poisoned.kind());
        if super::reloads::may_reload(&self.name) {
            tracing::error!(document = %self.name, session = key.map(|k| k.session), "yrs failed on a checked update; reloading the document from the store");
            self.close_all("document reloaded after an internal error");
            ctx.stop();
            return;
        }
        tracing::error!(document = %self.name, session = key.map(|k| k.session), "yrs failed on a checked update again; closing only the sender (reload rate-limited)");
        if let Some(key) = key {
            self.close_socket(key, "internal error");
        }
    }

    /// Removes an attachment and the awareness clients it still owns.
    fn detach(&mut self, key: &ConnKey) {
        let Some(attachment) = self.attachments.detach(key) else {
            return;
        };
        let removed = self
            .state
            .awareness
            .remove_owner(attachment.awareness_owner(), now_ms());
        if !removed.is_empty() {
            self.awareness_changed();
            let encoded = self.state.awareness.encode(&removed);
            self.broadcast(&Message::Awareness(&encoded), None);
            self.publish(RelayKind::Awareness, Bytes::from(encoded));
        }
    }

    fn close_all(&mut self, reason: &str) {
        for attachment in self.attachments.detach_all() {
            attachment
                .session()
                .close_socket(CloseCode::ResetConnection, reason);
        }
    }
}

impl Actor for DocumentActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.metrics.documents_open.inc();
        self.metrics.documents_loaded_total.inc();
        self.load(ctx);
    }

    fn stopped(&mut self, ctx: &mut Self::Context) {
        // A change still waiting for its debounce goes out now: nothing here will send it later.
        self.send_change(ctx);
        if let Some(cluster) = &self.cluster {
            cluster.reader.unsubscribe(Arc::clone(&self.name), self.id);
            cluster.actor.do_send(DropLease {
                doc: Arc::clone(&self.name),
                id: self.id,
            });
        }
        // Given back now rather than when the actor value is dropped, whenever that is.
        self.memory.awareness_holds(0);
        if self.state.is_at_rest() {
            self.metrics.documents_at_rest.dec();
        }
        self.metrics.documents_open.dec();
        self.metrics.documents_unloaded_total.inc();
        tracing::debug!(document = %self.name, "document unloaded");
    }
}
