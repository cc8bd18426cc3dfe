//! What the document API asks of a loaded document: apply an update as a client's would be
//! (answered once durable), and close everything for a deletion.

use std::sync::Arc;

use actix::prelude::*;
use bytes::Bytes;
use tokio::sync::oneshot;

use super::DocumentActor;
use super::handlers::UpdateRefusal;
use crate::cluster::relay::RelayKind;
use crate::document::{ConnKey, Unregister};
use crate::protocol::Message;

/// The CLOSE reason editors of a deleted document get.
pub const DELETED_REASON: &str = "document deleted";

/// An update from the document API. Answered at once with the refusal, or with a receiver that
/// says whether it became durable (`false`: the store's writer went away, i.e. shutdown).
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<bool>, UpdateRefusal>")]
pub struct ApiUpdate {
    pub update: Bytes,
    /// What history records as its author (`api:<key name>`, `restore:<key name>`).
    pub author: Arc<str>,
}

/// The document is being deleted: every editor gets a CLOSE and the actor stops. Sent by the
/// API on this node, or by the relay when another node's API deleted it.
#[derive(Message)]
#[rtype(result = "()")]
pub struct DeleteDocument {
    /// Tell the other nodes (the API's node does; a relayed deletion does not echo).
    pub relay: bool,
}

/// The document's current content (everything applied here, acknowledged or not), as a Yjs
/// v1 update: what a version made before a restore holds.
#[derive(Message)]
#[rtype(result = "Result<Vec<u8>, UpdateRefusal>")]
pub struct CurrentState;

/// Make the document equal to `state` (an earlier version's) as a new change, answered like
/// [`ApiUpdate`].
#[derive(Message)]
#[rtype(result = "Result<oneshot::Receiver<bool>, UpdateRefusal>")]
pub struct RestoreTo {
    pub state: Vec<u8>,
    pub author: Arc<str>,
}

impl Handler<CurrentState> for DocumentActor {
    type Result = Result<Vec<u8>, UpdateRefusal>;

    fn handle(&mut self, _: CurrentState, ctx: &mut Self::Context) -> Self::Result {
        self.maybe_schedule_unload(ctx);
        self.state
            .full_state()
            .map(|s| s.to_vec())
            .map_err(UpdateRefusal::Invalid)
    }
}

impl Handler<RestoreTo> for DocumentActor {
    type Result = Result<oneshot::Receiver<bool>, UpdateRefusal>;

    fn handle(&mut self, msg: RestoreTo, ctx: &mut Self::Context) -> Self::Result {
        let current = self.state.full_state().map_err(UpdateRefusal::Invalid)?;
        let update = zedi_protocol::document::history::revert_update(
            &current,
            &msg.state,
            self.config.limits,
        )
        .map_err(UpdateRefusal::Invalid)?;
        tracing::info!(document = %self.name, by = %msg.author, bytes = update.len(), "restoring a version");
        self.apply_from_api(Bytes::from(update), msg.author, ctx)
    }
}

impl Handler<ApiUpdate> for DocumentActor {
    type Result = Result<oneshot::Receiver<bool>, UpdateRefusal>;

    fn handle(&mut self, msg: ApiUpdate, ctx: &mut Self::Context) -> Self::Result {
        self.apply_from_api(msg.update, msg.author, ctx)
    }
}

impl DocumentActor {
    /// An update that came through the API: applied as a client's, acknowledged through
    /// `api_acks` once durable.
    fn apply_from_api(
        &mut self,
        update: Bytes,
        author: Arc<str>,
        ctx: &mut Context<Self>,
    ) -> Result<oneshot::Receiver<bool>, UpdateRefusal> {
        self.cancel_unload(ctx);
        self.announce_created(None);
        // Its own key, attached to nothing: what the ack waiter sends it goes to `api_acks`.
        let key = ConnKey {
            session: crate::session::next_session_id(),
            address: Arc::clone(&self.name),
        };
        let session = key.session;
        let result = self.accept_update(key, update, Some(author), ctx);
        match result {
            Ok(()) => {
                let (tx, rx) = oneshot::channel();
                self.api_acks.insert(session, tx);
                Ok(rx)
            }
            Err(UpdateRefusal::Fault) => {
                self.internal_fault(None, ctx);
                Err(UpdateRefusal::Fault)
            }
            Err(refusal) => {
                self.maybe_schedule_unload(ctx);
                Err(refusal)
            }
        }
    }
}

impl Handler<DeleteDocument> for DocumentActor {
    type Result = ();

    fn handle(&mut self, msg: DeleteDocument, ctx: &mut Self::Context) {
        self.flush_updates();
        let keys: Vec<ConnKey> = self.attachments.keys().cloned().collect();
        for key in &keys {
            self.send_to(key, &Message::Close(Some(DELETED_REASON)));
        }
        for key in &keys {
            self.detach(key);
        }
        if msg.relay {
            self.publish(RelayKind::Deleted, Bytes::new());
        }
        tracing::info!(document = %self.name, editors = keys.len(), "document deleted: editors closed, unloading");
        // Gone from the registry now: a later open starts a fresh actor (from the store, which
        // the API empties once what is queued here is written).
        self.registry.do_send(Unregister {
            name: Arc::clone(&self.name),
            id: self.id,
        });
        ctx.stop();
    }
}
