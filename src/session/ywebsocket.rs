//! A session speaking the y-websocket protocol: one document, named by the upgrade's path, and
//! authorised once (the token came with the upgrade request, if any). The session is the
//! protocol's edge: what the client sends becomes the same inputs a Hocuspocus frame gives the
//! document, and the document's (Hocuspocus) frames are translated on the way out, so document
//! actors, the cluster relay, limits and the update firewall see no difference.
//!
//! What y-websocket lacks, and what stands in for it:
//! - no Authenticated: the socket was admitted at the upgrade (HTTP 401/403 otherwise);
//! - no SyncStatus: a refused update of a read-only client is answered with y-protocols'
//!   "permission denied" (once per socket, as the client only logs it);
//! - no token refresh: when the token runs out the socket is closed with 4401, and the client
//!   reconnects with whatever token its `params` hold by then;
//! - no way to retry a refused token on the same socket: a socket refused after the upgrade (it
//!   came without a token while auth is on) is told "permission denied" and then idles until
//!   the auth timeout closes it (4408);
//! - no per-document CLOSE: closing the document closes the socket (1000 with the reason).

use std::sync::Arc;

use actix_web_actors::ws;
use bytes::Bytes;

use super::{SessionActor, Slot};
use crate::auth::Decision;
use crate::metrics::Direction;
use crate::protocol::ywebsocket::{self, Outgoing};
use crate::protocol::{CloseCode, ErrorKind};

/// Most messages one y-websocket frame may carry. Clients send one or two; each beyond the
/// first costs a message token of the rate limit too.
const MAX_MESSAGES_PER_FRAME: usize = 64;

/// Which protocol a socket speaks.
pub enum Wire {
    Hocuspocus,
    /// The path named a document: the first frame says which protocol this is.
    Undecided(Box<PathDocument>),
    YWebsocket(YWebsocketState),
}

/// The document a y-websocket upgrade's path names, and the decision on the token it carried.
pub struct PathDocument {
    /// `Err`: why the path cannot name a document (told to a y-websocket client, which it is
    /// only once its first frame says so).
    pub name: Result<Arc<str>, &'static str>,
    /// `None`: no token came with the upgrade; it is decided as an empty one.
    pub decision: Option<Decision>,
}

pub struct YWebsocketState {
    name: Arc<str>,
    /// Our SyncStep1 went out (the greeting); later ones, answers to the client's SyncStep1 meant
    /// for Hocuspocus providers, are not sent: y-websocket's server answers with SyncStep2 only.
    sent_step1: bool,
    /// The client was told its updates are not applied.
    told_read_only: bool,
}

impl Wire {
    pub fn new(path_document: Option<PathDocument>) -> Self {
        match path_document {
            Some(document) => Wire::Undecided(Box::new(document)),
            None => Wire::Hocuspocus,
        }
    }

    pub fn is_ywebsocket(&self) -> bool {
        matches!(self, Wire::YWebsocket(_))
    }
}

type Ctx = ws::WebsocketContext<SessionActor>;

impl SessionActor {
    /// The first frame of a socket whose path named a document decides its protocol.
    pub(super) fn choose_wire(&mut self, first_frame: &[u8], ctx: &mut Ctx) {
        let Wire::Undecided(_) = &self.wire else {
            return;
        };
        if !ywebsocket::opens_ywebsocket(first_frame) {
            self.wire = Wire::Hocuspocus;
            return;
        }
        let Wire::Undecided(document) = std::mem::replace(&mut self.wire, Wire::Hocuspocus) else {
            return;
        };
        let PathDocument { name, decision } = *document;
        self.shared.metrics.ywebsocket_sessions_total.inc();
        let name = match name {
            Ok(name) => name,
            Err(reason) => {
                return self.protocol_error(
                    ctx,
                    ErrorKind::InvalidDocumentName,
                    CloseCode::ResetConnection,
                    reason,
                );
            }
        };
        self.wire = Wire::YWebsocket(YWebsocketState {
            name: Arc::clone(&name),
            sent_step1: false,
            told_read_only: false,
        });
        match decision {
            Some(decision) => {
                self.docs.insert(
                    Arc::clone(&name),
                    Slot::AwaitingAuth {
                        queue: Vec::new(),
                        deciding: true,
                    },
                );
                self.decided(name, decision, ctx);
            }
            // Without a token: allowed when auth is off, refused (4401) otherwise.
            None => self.authenticate(name, "", None, ctx),
        }
    }

    /// One binary frame from a y-websocket client: every message in it, in order.
    pub(super) fn on_ywebsocket_frame(&mut self, frame: Bytes, ctx: &mut Ctx) {
        let Wire::YWebsocket(state) = &self.wire else {
            return;
        };
        let name = Arc::clone(&state.name);
        let messages = match ywebsocket::decode_frame(&frame, MAX_MESSAGES_PER_FRAME) {
            Ok(messages) => messages,
            Err(e) => {
                return self.protocol_error(
                    ctx,
                    e.kind(),
                    CloseCode::ResetConnection,
                    &e.to_string(),
                );
            }
        };
        if messages.len() > 1 && !self.take_rate_tokens(messages.len() - 1, 0, ctx) {
            return;
        }
        let mut offset = 0;
        for (message, len) in messages {
            // Each message is its own frame from here on: queued and charged by its own size.
            let part = frame.slice(offset..offset + len);
            offset += len;
            let Some(message) = message.as_message() else {
                // y-protocols' auth goes from server to client only.
                self.shared
                    .metrics
                    .protocol_error(ErrorKind::UnexpectedMessage);
                continue;
            };
            self.shared
                .metrics
                .message(Direction::In, message.message_type());
            self.dispatch(Arc::clone(&name), message, &part, ctx);
            if self.closing {
                return;
            }
        }
    }

    /// A frame for this socket in the document's (Hocuspocus) form, translated for y-websocket.
    /// `false` when this socket speaks Hocuspocus and the frame is to be sent as it is.
    pub(super) fn deliver_translated(&mut self, frame: &Bytes, ctx: &mut Ctx) -> bool {
        let Wire::YWebsocket(state) = &mut self.wire else {
            return false;
        };
        // We encoded the frame ourselves; a frame that does not decode is dropped.
        let Ok(outgoing) = ywebsocket::translate(frame) else {
            return true;
        };
        match outgoing {
            Outgoing::Forward { from, step1 } => {
                if step1 && std::mem::replace(&mut state.sent_step1, true) {
                    return true;
                }
                ctx.binary(frame.slice(from..));
            }
            Outgoing::Refused => {
                let read_only = matches!(
                    self.docs.get(&state.name),
                    Some(Slot::Open { grant, .. }) if grant.read_only
                );
                if read_only && !std::mem::replace(&mut state.told_read_only, true) {
                    ctx.binary(ywebsocket::permission_denied(
                        "permission-denied: read-only access, updates are not applied",
                    ));
                }
            }
            // The socket stays open, with no document, until the auth timeout closes it:
            // y-websocket reconnects at once (its backoff starts again after every socket that
            // opened), so closing now would bring the same refused client back ten times a
            // second. A refusal at the upgrade (a bad token) backs off by itself.
            Outgoing::Denied(reason) => {
                ctx.binary(ywebsocket::permission_denied(reason));
            }
            Outgoing::TokenRequested => {
                self.close_socket(ctx, CloseCode::Unauthorized, "token expired");
            }
            Outgoing::Close(reason) => {
                let reason = reason.to_string();
                self.close_socket(ctx, CloseCode::Normal, &reason);
            }
            Outgoing::Nothing => {}
        }
        true
    }
}
