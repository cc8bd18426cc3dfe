//! Everything a document actor sends: broadcasts (with keystroke bursts merged into one update),
//! direct replies (each attachment's outbound share is kept by `Attachments`),
//! and the acknowledgements of durable updates (decided by `AckQueue`).

use std::pin::Pin;
use std::task::Poll;

use actix::prelude::*;

use super::DocumentActor;
use crate::cluster::relay::RelayKind;
use crate::document::{ConnKey, DocumentState};
use crate::protocol::ErrorKind;
use crate::protocol::{Message, SyncMessage};

/// Sends `SyncStatus` for updates as they become durable, in order. One future per document
/// instead of one per update: actix polls every spawned future on each wake-up, so with
/// hundreds of updates in flight per-update futures cost O(n) per acknowledgement.
pub(super) struct AckWaiter;

impl ActorFuture<DocumentActor> for AckWaiter {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut DocumentActor,
        ctx: &mut Context<DocumentActor>,
        task: &mut std::task::Context<'_>,
    ) -> Poll<()> {
        let mut acked = false;
        // What the queue says is the only source of an update's SyncStatus.
        while let Some(ack) = act.acks.poll_next(task) {
            if let Some(update) = ack.relay {
                act.publish(RelayKind::Update, update);
            }
            match act.api_acks.remove(&ack.key.session) {
                Some(api) => {
                    let _ = api.send(ack.durable);
                }
                None => act.send_to(&ack.key, &Message::SyncStatus(ack.durable)),
            }
            acked = true;
        }
        if acked {
            act.maybe_compact(ctx);
            act.maybe_schedule_unload(ctx);
        }
        if act.acks.waiter_may_stop() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl DocumentActor {
    /// Sends one message to every attachment (optionally but one).
    pub(super) fn broadcast(&mut self, message: &Message<'_>, except: Option<&ConnKey>) {
        self.flush_updates();
        for key in self.attachments.broadcast(message, except) {
            self.drop_slow_reader(&key);
        }
    }

    pub(super) fn send_to(&mut self, key: &ConnKey, message: &Message<'_>) {
        self.flush_updates();
        if !self.attachments.send(key, message) {
            self.drop_slow_reader(key);
        }
    }

    /// Broadcasts `changes` after the messages already waiting in the mailbox have been handled.
    /// A writer with many updates in flight (or several writers) then costs each reader one
    /// actor message and one WebSocket frame per burst rather than per update.
    pub(super) fn queue_update_broadcast(&mut self, changes: Vec<u8>, ctx: &mut Context<Self>) {
        if self.unsent.is_empty() {
            // Spawned items run after the mailbox batch of the same poll.
            ctx.spawn(fut::ready(()).map(|(), act: &mut Self, _| act.flush_updates()));
        }
        self.unsent.push(changes);
    }

    pub(super) fn flush_updates(&mut self) {
        match self.unsent.len() {
            0 => return,
            1 => {
                if let Some(changes) = self.unsent.pop() {
                    self.broadcast(&Message::Sync(SyncMessage::Update(&changes)), None);
                }
                return;
            }
            _ => {}
        }
        let unsent = std::mem::take(&mut self.unsent);
        match DocumentState::merge_broadcasts(&unsent) {
            Some(merged) => self.broadcast(&Message::Sync(SyncMessage::Update(&merged)), None),
            None => {
                for changes in &unsent {
                    self.broadcast(&Message::Sync(SyncMessage::Update(changes)), None);
                }
            }
        }
    }

    /// A socket that does not read what it is sent: closed (the provider reconnects and
    /// resyncs from the document), never waited for.
    fn drop_slow_reader(&mut self, key: &ConnKey) {
        self.metrics.protocol_error(ErrorKind::SlowConsumer);
        tracing::warn!(document = %self.name, session = key.session, "outbound queue full: closing a socket that does not read");
        self.attachments.abort_slow_reader(key);
        self.detach(key);
    }
}
