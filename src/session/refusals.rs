//! A document refused an update from this socket: the document is closed for this socket only,
//! and a socket that keeps sending refused updates is closed altogether.
//!
//! The count lives in the session because it is about the peer, not about one document: an
//! attacker that reopens a document (or opens another) after each refusal still runs out.

use crate::protocol::CloseCode;
use crate::protocol::ErrorKind;
use actix::prelude::*;
use actix_web_actors::ws;

use super::SessionActor;
use crate::document::UpdateRefused;

impl Handler<UpdateRefused> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: UpdateRefused, ctx: &mut ws::WebsocketContext<Self>) {
        if self.closing {
            return;
        }
        self.refused_updates = self.refused_updates.saturating_add(1);
        if self.refused_updates >= self.shared.limits.max_refused_updates {
            return self.protocol_error(
                ctx,
                ErrorKind::RepeatedInvalidUpdates,
                CloseCode::ResetConnection,
                &msg.reason,
            );
        }
        self.close_document(ctx, &msg.address, &msg.reason);
    }
}
