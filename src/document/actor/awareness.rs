//! Awareness frames of the document's connections: decoded within the bounds of
//! `[limits]`, applied to the table (see [`crate::awareness`]), broadcast and relayed; and the
//! table's memory charged to the node's budget.

use bytes::Bytes;

use super::{DocumentActor, now_ms};
use crate::awareness::AwarenessError;
use crate::cluster::relay::RelayKind;
use crate::document::ConnKey;
use crate::document::attachments::RefusalLog;
use crate::protocol::CloseCode;
use crate::protocol::ErrorKind;
use crate::protocol::Message;

impl DocumentActor {
    /// Sets the awareness charge to what the table now holds; called after every change to it.
    pub(super) fn awareness_changed(&mut self) {
        self.memory
            .awareness_holds(self.state.awareness.memory_bytes());
    }

    /// An awareness update the document will not take. A state over the size or depth bound
    /// closes the document for this connection only, as a refused update does (the session
    /// sends CLOSE with the reason and counts it towards `limits.max_refused_updates`); a
    /// malformed update, which no provider sends, closes the socket.
    fn refuse_awareness(&mut self, key: &ConnKey, error: &AwarenessError) {
        self.metrics.protocol_error(error.kind());
        let Some(attachment) = self.attachments.get(key) else {
            return;
        };
        if error.is_limit() {
            tracing::warn!(document = %self.name, session = key.session, %error, "awareness refused: closing the document for this connection");
            attachment
                .session()
                .update_refused(&key.address, error.to_string());
        } else {
            tracing::warn!(document = %self.name, session = key.session, %error, "closing connection after bad awareness");
            attachment
                .session()
                .close_socket(CloseCode::ResetConnection, error.to_string());
        }
        self.detach(key);
    }

    pub(super) fn handle_awareness(&mut self, key: ConnKey, payload: &[u8]) {
        let entries =
            match crate::awareness::decode_update_with(payload, &self.config.limits.awareness) {
                Ok(entries) => entries,
                Err(e) => return self.refuse_awareness(&key, &e),
            };
        let Some(attachment) = self.attachments.get_mut(&key) else {
            return;
        };
        let changes = self
            .state
            .awareness
            .apply(attachment.awareness_owner(), &entries, now_ms());
        // Entries for another connection's client (here or on another node) are dropped; the
        // rest of the frame stands. Not a reason to close: a provider that reconnected while
        // its old socket is still attached sends such entries until that one goes away.
        for id in &changes.refused {
            self.metrics.protocol_error(ErrorKind::AwarenessNotOwner);
            match attachment.refused_client(*id) {
                RefusalLog::Quiet => {}
                RefusalLog::Log => {
                    tracing::warn!(document = %self.name, session = key.session, client_id = id, "awareness entry refused: the client id belongs to another connection");
                }
                RefusalLog::LogLast => {
                    tracing::warn!(document = %self.name, session = key.session, "more awareness entries for other connections' clients refused; no longer logged for this connection");
                }
            }
        }
        // Entries that would give this connection one client id too many: dropped the same
        // way. A provider has one id per document, so this is a client minting ids.
        if !changes.over_limit.is_empty() {
            self.metrics.protocol_errors(
                ErrorKind::AwarenessTooManyClients,
                changes.over_limit.len() as u64,
            );
        }
        if let Some(first) = changes.over_limit.first()
            && attachment.first_over_limit()
        {
            tracing::warn!(document = %self.name, session = key.session, client_id = first, limit = self.config.limits.awareness.max_clients_per_connection, "awareness entry refused: the connection owns as many client ids as it may; further ones are only counted");
        }
        // Even with nothing to broadcast the table may have changed (a removal of an unknown
        // client is remembered).
        self.awareness_changed();
        if changes.is_empty() {
            return;
        }
        let encoded = self.state.awareness.encode(&changes.all());
        // Including the sender: the echo is what keeps the provider's 30 s watchdog quiet.
        self.broadcast(&Message::Awareness(&encoded), None);
        self.publish(RelayKind::Awareness, Bytes::from(encoded));
    }
}
