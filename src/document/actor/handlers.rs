//! What a document actor does with each message a session sends it.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use bytes::Bytes;

use super::DocumentActor;
use crate::cluster::relay::RelayKind;
use crate::document::attachments::Attachment;
use crate::document::{
    ConnKey, DocError, FromSession, Join, JoinError, Leave, SessionInput, SetAccess,
};
use crate::protocol::ErrorKind;
use crate::protocol::{Message, SyncMessage};
use crate::store::AppendItem;

/// Why an update from a client (or the document API) was not accepted.
#[derive(Debug)]
pub enum UpdateRefusal {
    /// The write queue is full: nothing was applied.
    StoreFull,
    /// The document would grow past `limits.max_document_bytes`.
    TooLarge,
    /// The firewall (or yrs) refused it.
    Invalid(DocError),
    /// yrs failed on a checked update: the document reloads (see `internal_fault`).
    Fault,
}

impl DocumentActor {
    fn handle_update(&mut self, key: ConnKey, update: Bytes, ctx: &mut Context<Self>) {
        let Some(attachment) = self.attachments.get(&key) else {
            return;
        };
        if attachment.read_only() {
            // Hocuspocus acks what is already known (the handshake) and refuses the rest.
            let known = match self.on_live_state(ctx, |state| state.contains_update(&update)) {
                Ok(known) => known,
                Err(e) => return self.refuse_update(&key, &e),
            };
            self.send_to(&key, &Message::SyncStatus(known));
            return;
        }
        match self.accept_update(key.clone(), update, None, ctx) {
            Ok(()) => {}
            Err(UpdateRefusal::StoreFull) => {
                // Refuse, and close the socket: the provider keeps the edit, reconnects with
                // backoff and sends it again in its SyncStep2 once the store has caught up.
                tracing::warn!(document = %self.name, session = key.session, "store queue full: update refused");
                self.send_to(&key, &Message::SyncStatus(false));
                self.close_socket(&key, "store overloaded; reconnect later");
            }
            Err(UpdateRefusal::TooLarge) => {
                tracing::warn!(document = %self.name, session = key.session, limit = self.memory.max_bytes(), "update refused: document too large");
                self.send_to(&key, &Message::SyncStatus(false));
                self.send_to(&key, &Message::Close(Some("document too large")));
                self.detach(&key);
            }
            Err(UpdateRefusal::Fault) => self.internal_fault(Some(&key), ctx),
            Err(UpdateRefusal::Invalid(e)) => self.refuse_update(&key, &e),
        }
    }

    /// Applies an update from a client (a session's or the document API's): reserves room in
    /// the write queue, checks the size limit, applies it through the firewall, broadcasts what
    /// changed, and queues its acknowledgement for `key` (and its relay) until it is durable.
    pub(super) fn accept_update(
        &mut self,
        key: ConnKey,
        update: Bytes,
        author: Option<Arc<str>>,
        ctx: &mut Context<Self>,
    ) -> Result<(), UpdateRefusal> {
        let author = author.or_else(|| self.attachments.get(&key).map(|a| Arc::clone(a.author())));
        // Reserve room in the write queue *before* applying, so a full queue refuses the
        // update instead of applying something that might not become durable.
        let Ok(reservation) = self.persistence.try_reserve() else {
            self.metrics.writes_refused_total.inc();
            return Err(UpdateRefusal::StoreFull);
        };
        let state = &mut self.state;
        if !self.memory.has_room_for(update.len(), || {
            state.full_state().map_or(usize::MAX / 2, |s| s.len())
        }) {
            self.metrics.protocol_error(ErrorKind::DocumentTooLarge);
            return Err(UpdateRefusal::TooLarge);
        }
        let started = Instant::now();
        let applied = match self.on_live_state(ctx, |state| state.apply_update(&update)) {
            Ok(applied) => applied,
            Err(DocError::Poisoned) => return Err(UpdateRefusal::Fault),
            Err(e) => return Err(UpdateRefusal::Invalid(e)),
        };
        self.metrics
            .update_apply_seconds
            .observe(started.elapsed().as_secs_f64());
        self.memory.grew(update.len());
        if let Some(changes) = applied.broadcast {
            self.queue_update_broadcast(changes, ctx);
        }
        // Relayed to the other nodes once durable (by the ack waiter), not now.
        let relay = applied.store.then(|| update.clone());
        if applied.store {
            let by = self.attachments.get(&key).and_then(|a| a.hook().cloned());
            self.document_changed(by, ctx);
            self.note_activity(ctx);
        }
        let item = applied.store.then(|| {
            self.compaction.appended();
            AppendItem {
                name: Arc::clone(&self.name),
                update,
                author: author.unwrap_or_else(crate::store::anonymous),
            }
        });
        if self.acks.push(key, reservation.submit(item), relay) {
            ctx.spawn(super::outbound::AckWaiter);
        }
        Ok(())
    }
}

impl Handler<Join> for DocumentActor {
    type Result = Result<(), JoinError>;

    fn handle(&mut self, join: Join, ctx: &mut Self::Context) -> Self::Result {
        self.unload.admit()?;
        self.cancel_unload(ctx);
        self.announce_created(join.hook.as_deref());
        let attachment = Attachment::new(join.session, join.read_only, join.meter)
            .with_hook(join.hook)
            .by(join.author);
        self.attachments.attach(join.key.clone(), attachment);
        if join.greet {
            match self.state.encoded_state_vector() {
                Ok(sv) => self.send_to(&join.key, &Message::Sync(SyncMessage::Step1(&sv))),
                Err(error) => {
                    tracing::error!(document = %self.name, %error, "cannot encode the state vector")
                }
            }
        }
        if let Some(states) = self.state.awareness.encode_live() {
            self.send_to(&join.key, &Message::Awareness(&states));
        }
        Ok(())
    }
}

impl Handler<FromSession> for DocumentActor {
    type Result = ();

    fn handle(&mut self, msg: FromSession, ctx: &mut Self::Context) {
        if !self.attachments.contains(&msg.key) {
            return; // detached meanwhile (closed after an error): drop what was in flight
        }
        let key = msg.key;
        match msg.input {
            SessionInput::SyncStep1(sv) => match self.state.sync_step1_reply(&sv) {
                Ok((server_sv, diff)) => {
                    self.send_to(&key, &Message::Sync(SyncMessage::Step1(&server_sv)));
                    self.send_to(&key, &Message::Sync(SyncMessage::Step2(&diff)));
                }
                Err(e) => self.refuse_update(&key, &e),
            },
            SessionInput::Update(update) => self.handle_update(key, update, ctx),
            SessionInput::Awareness(payload) => self.handle_awareness(key, &payload),
            SessionInput::QueryAwareness => {
                let states = self
                    .state
                    .awareness
                    .encode_live()
                    .unwrap_or_else(|| vec![0]);
                self.send_to(&key, &Message::Awareness(&states));
            }
            SessionInput::Stateless(payload) => {
                self.broadcast(&Message::Stateless(&payload), Some(&key));
                self.publish(RelayKind::Stateless, Bytes::from(payload));
            }
        }
        // An error above may have detached the last attachment.
        self.maybe_schedule_unload(ctx);
    }
}

impl Handler<Leave> for DocumentActor {
    type Result = ();

    fn handle(&mut self, msg: Leave, ctx: &mut Self::Context) {
        if msg.acknowledge {
            self.send_to(&msg.key, &Message::Close(Some("provider_initiated")));
        }
        self.detach(&msg.key);
        self.maybe_schedule_unload(ctx);
    }
}

impl Handler<SetAccess> for DocumentActor {
    type Result = ();

    fn handle(&mut self, msg: SetAccess, _: &mut Self::Context) {
        self.attachments.set_read_only(&msg.key, msg.read_only);
    }
}
