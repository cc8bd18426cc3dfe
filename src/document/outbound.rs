//! Everything a document actor sends: broadcasts (with keystroke bursts merged into one update),
//! direct replies, the outbound budget that keeps a slow reader from piling up memory, and the
//! acknowledgements of durable updates.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use actix::prelude::*;
use bytes::Bytes;

use super::Outbound;
use super::actor::{Conn, DocumentActor};
use super::{ConnKey, DocumentState};
use crate::protocol::{Message, SyncMessage, encode_body, prepend_address};

/// Hands a frame to a socket unless that would exceed its outbound share. The frame carries
/// its charge: if the session is gone, dropping the undelivered message releases it.
fn deliver(conn: &Conn, frame: Bytes, ty: crate::protocol::MessageType, limit: usize) -> bool {
    let Some(charge) = conn.meter.try_queue_outbound(frame.len(), limit) else {
        return false;
    };
    conn.session.send(Outbound { frame, ty, charge });
    true
}

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
        while let Some((_, durable)) = act.acks.front_mut() {
            let result = match Pin::new(durable).poll(task) {
                Poll::Ready(result) => result,
                Poll::Pending => break,
            };
            let Some((key, _)) = act.acks.pop_front() else {
                break;
            };
            act.inflight -= 1;
            // The writer never gives up, so an error here means it is gone (shutdown): the
            // update is not known durable, and the client is told so.
            act.send_to(&key, &Message::SyncStatus(result.is_ok()));
            acked = true;
        }
        if acked {
            act.maybe_compact(ctx);
            act.maybe_schedule_unload(ctx);
        }
        if act.acks.is_empty() {
            act.ack_waiter_running = false;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl DocumentActor {
    /// Sends one message to every attachment (optionally but one). The body is encoded once;
    /// only the address differs between attachments, and nearly all share the plain name.
    pub(super) fn broadcast(&mut self, message: &Message<'_>, except: Option<&ConnKey>) {
        self.flush_updates();
        let body = encode_body(message);
        let ty = message.message_type();
        let limit = self.config.max_outbound_bytes;
        let mut framed: HashMap<&str, Bytes> = HashMap::new();
        let mut too_slow = Vec::new();
        for (key, conn) in &self.conns {
            if except == Some(key) {
                continue;
            }
            let frame = framed
                .entry(&key.address)
                .or_insert_with(|| Bytes::from(prepend_address(&key.address, &body)))
                .clone();
            if !deliver(conn, frame, ty, limit) {
                too_slow.push(key.clone());
            }
        }
        for key in too_slow {
            self.drop_slow_reader(&key);
        }
    }

    pub(super) fn send_to(&mut self, key: &ConnKey, message: &Message<'_>) {
        self.flush_updates();
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let frame = Bytes::from(prepend_address(&key.address, &encode_body(message)));
        if !deliver(
            conn,
            frame,
            message.message_type(),
            self.config.max_outbound_bytes,
        ) {
            let key = key.clone();
            self.drop_slow_reader(&key);
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

    fn flush_updates(&mut self) {
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
        self.metrics.protocol_error("slow_consumer");
        tracing::warn!(document = %self.name, session = key.session, "outbound queue full: closing a socket that does not read");
        // Not a message to the session: a socket that does not read is not polled, so the
        // session would not see it until the client reads again. The socket's write task
        // drops it (and what it holds) at once.
        if let Some(conn) = self.conns.get(key) {
            conn.meter.abort(crate::budget::AbortReason::SlowReader);
        }
        self.detach(key);
    }
}
