//! The document actor's side of the cluster: publishing local changes to the document's stream,
//! applying other nodes' entries, catching up from the store after a Redis outage, and acting
//! on lease changes.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;

use super::{DocumentActor, now_ms};
use crate::awareness::Owner;
use crate::cluster::LeaseChanged;
use crate::cluster::relay::{CatchUp, RelayKind, RemoteEntry};
use crate::document::{DocError, DocumentState};
use crate::protocol::ErrorKind;
use crate::protocol::Message;

impl DocumentActor {
    /// Hands a local change to the relay (a no-op on a single node).
    pub(super) fn publish(&self, kind: RelayKind, payload: Bytes) {
        if let Some(cluster) = &self.cluster {
            cluster.publisher.publish(&self.name, kind, payload);
        }
    }

    /// Applies an update that did not come from a local client: integrated and broadcast to
    /// the local connections, never stored or acknowledged here (its node did that).
    fn apply_foreign_update(&mut self, update: &[u8], ctx: &mut Context<Self>) {
        let started = Instant::now();
        match self.on_live_state(ctx, |state| state.apply_update(update)) {
            Ok(applied) => {
                self.metrics
                    .update_apply_seconds
                    .observe(started.elapsed().as_secs_f64());
                if let Some(changes) = applied.broadcast {
                    self.queue_update_broadcast(changes, ctx);
                    self.document_changed(None, ctx);
                }
            }
            Err(DocError::Poisoned) => self.internal_fault(None, ctx),
            Err(error) => {
                self.metrics.protocol_error(ErrorKind::BadRelayUpdate);
                tracing::warn!(document = %self.name, %error, "ignoring an undecodable relayed update");
            }
        }
    }
}

impl Handler<RemoteEntry> for DocumentActor {
    type Result = ();

    fn handle(&mut self, entry: RemoteEntry, ctx: &mut Self::Context) {
        match entry.kind {
            RelayKind::Update => self.apply_foreign_update(&entry.payload, ctx),
            // The other node applied the same bounds to its own connections; checking again
            // keeps this node's bounds if the two are configured differently.
            RelayKind::Awareness => match crate::awareness::decode_update_with(
                &entry.payload,
                &self.config.limits.awareness,
            ) {
                Ok(entries) => {
                    let now = now_ms();
                    let changes = self.state.awareness.apply(Owner::Remote, &entries, now);
                    self.awareness_changed();
                    // Another node's client claiming an id a local connection owns: that node
                    // did not know (a race, or a provider that moved nodes while its old socket
                    // here is still open). Counted; logged quietly, as no local connection is
                    // to blame and it ends when either side releases the id.
                    for id in &changes.refused {
                        self.metrics.protocol_error(ErrorKind::AwarenessNotOwner);
                        tracing::debug!(document = %self.name, client_id = id, "relayed awareness entry refused: the client id belongs to a local connection");
                    }
                    if !changes.is_empty() {
                        let encoded = self.state.awareness.encode(&changes.all());
                        self.broadcast(&Message::Awareness(&encoded), None);
                    }
                }
                Err(_) => self.metrics.protocol_error(ErrorKind::BadRelayEntry),
            },
            RelayKind::Stateless => match std::str::from_utf8(&entry.payload) {
                Ok(payload) => self.broadcast(&Message::Stateless(payload), None),
                Err(_) => self.metrics.protocol_error(ErrorKind::BadRelayEntry),
            },
            RelayKind::Deleted => {
                ctx.notify(super::DeleteDocument { relay: false });
            }
        }
    }
}

impl Handler<CatchUp> for DocumentActor {
    type Result = ();

    /// Redis was away: what other nodes persisted meanwhile is in the store. Replaying it is
    /// harmless (Yjs updates are idempotent); only what is new goes out to local clients.
    fn handle(&mut self, _: CatchUp, ctx: &mut Self::Context) {
        self.metrics.catch_ups_total.inc();
        let store = Arc::clone(self.persistence.store());
        let name = Arc::clone(&self.name);
        ctx.spawn(async move { store.load(&name).await }.into_actor(self).map(|result, act, ctx| match result {
            Ok(stored) => {
                let (fresh, _) = DocumentState::restore(stored.entries(), act.config.limits);
                match fresh.encode_state() {
                    Ok(everything) => act.apply_foreign_update(&everything, ctx),
                    Err(error) => tracing::error!(document = %act.name, %error, "stored document cannot be encoded; catch-up skipped"),
                }
            }
            Err(error) => {
                tracing::warn!(document = %act.name, %error, "catch-up from the store failed; the stream resumes anyway");
            }
        }));
    }
}

impl Handler<LeaseChanged> for DocumentActor {
    type Result = ();

    fn handle(&mut self, msg: LeaseChanged, ctx: &mut Self::Context) {
        if msg.owner {
            self.compaction.owned_with(msg.fence);
            self.maybe_compact(ctx);
        } else {
            self.compaction.disowned();
        }
    }
}
