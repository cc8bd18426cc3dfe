//! The kinds of bad input, one enum: the `kind` label of `zedi_protocol_errors_total`, the
//! series registered at start, and the list in docs/metrics.md all come from here, so a new
//! kind cannot be counted without being registered and documented.

/// Why input was refused (a closed set: never a document name or a client's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A frame that does not decode (truncated varint, bad string, trailing bytes).
    MalformedFrame,
    UnknownMessageType,
    UnknownSyncType,
    UnknownAuthType,
    InvalidDocumentName,
    FrameTooLarge,
    /// Hocuspocus speaks binary frames only.
    TextFrame,
    /// A WebSocket-level violation (bad opcode, continuation, masking).
    WebsocketProtocol,
    /// Too many messages or bytes queued before Auth.
    PreauthLimit,
    TooManyDocuments,
    /// A message only a server sends (e.g. SyncStatus).
    ServerOnlyMessage,
    UnexpectedMessage,
    /// An update the firewall refused before yrs saw it.
    InvalidUpdate,
    /// More bytes waiting for missing predecessors than a document may hold.
    PendingLimit,
    /// So many refused updates that the socket is closed.
    RepeatedInvalidUpdates,
    BadUpdate,
    BadStateVector,
    /// yrs panicked integrating it: the document is reloaded from the store.
    PoisonedUpdate,
    BadAwareness,
    /// An awareness entry for a client id another connection introduced.
    AwarenessNotOwner,
    AwarenessStateTooLarge,
    AwarenessTooDeep,
    AwarenessTooManyClients,
    /// An update from another node (through Redis) that does not apply.
    BadRelayUpdate,
    BadRelayEntry,
    /// Far over the rate even with reading paused: closed.
    RateLimited,
    /// Over the rate: reading paused.
    RateThrottled,
    /// A socket that does not read its output.
    SlowConsumer,
    DocumentTooLarge,
    /// An address over limits.max_address_bytes.
    InvalidAddress,
    /// No authenticated document within timeouts.auth_ms.
    AuthTimeout,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 31] = [
        ErrorKind::MalformedFrame,
        ErrorKind::UnknownMessageType,
        ErrorKind::UnknownSyncType,
        ErrorKind::UnknownAuthType,
        ErrorKind::InvalidDocumentName,
        ErrorKind::FrameTooLarge,
        ErrorKind::TextFrame,
        ErrorKind::WebsocketProtocol,
        ErrorKind::PreauthLimit,
        ErrorKind::TooManyDocuments,
        ErrorKind::ServerOnlyMessage,
        ErrorKind::UnexpectedMessage,
        ErrorKind::InvalidUpdate,
        ErrorKind::PendingLimit,
        ErrorKind::RepeatedInvalidUpdates,
        ErrorKind::BadUpdate,
        ErrorKind::BadStateVector,
        ErrorKind::PoisonedUpdate,
        ErrorKind::BadAwareness,
        ErrorKind::AwarenessNotOwner,
        ErrorKind::AwarenessStateTooLarge,
        ErrorKind::AwarenessTooDeep,
        ErrorKind::AwarenessTooManyClients,
        ErrorKind::BadRelayUpdate,
        ErrorKind::BadRelayEntry,
        ErrorKind::RateLimited,
        ErrorKind::RateThrottled,
        ErrorKind::SlowConsumer,
        ErrorKind::DocumentTooLarge,
        ErrorKind::InvalidAddress,
        ErrorKind::AuthTimeout,
    ];

    /// The metric label.
    pub const fn label(self) -> &'static str {
        match self {
            ErrorKind::MalformedFrame => "malformed_frame",
            ErrorKind::UnknownMessageType => "unknown_message_type",
            ErrorKind::UnknownSyncType => "unknown_sync_type",
            ErrorKind::UnknownAuthType => "unknown_auth_type",
            ErrorKind::InvalidDocumentName => "invalid_document_name",
            ErrorKind::FrameTooLarge => "frame_too_large",
            ErrorKind::TextFrame => "text_frame",
            ErrorKind::WebsocketProtocol => "websocket_protocol",
            ErrorKind::PreauthLimit => "preauth_limit",
            ErrorKind::TooManyDocuments => "too_many_documents",
            ErrorKind::ServerOnlyMessage => "server_only_message",
            ErrorKind::UnexpectedMessage => "unexpected_message",
            ErrorKind::InvalidUpdate => "invalid_update",
            ErrorKind::PendingLimit => "pending_limit",
            ErrorKind::RepeatedInvalidUpdates => "repeated_invalid_updates",
            ErrorKind::BadUpdate => "bad_update",
            ErrorKind::BadStateVector => "bad_state_vector",
            ErrorKind::PoisonedUpdate => "poisoned_update",
            ErrorKind::BadAwareness => "bad_awareness",
            ErrorKind::AwarenessNotOwner => "awareness_not_owner",
            ErrorKind::AwarenessStateTooLarge => "awareness_state_too_large",
            ErrorKind::AwarenessTooDeep => "awareness_too_deep",
            ErrorKind::AwarenessTooManyClients => "awareness_too_many_clients",
            ErrorKind::BadRelayUpdate => "bad_relay_update",
            ErrorKind::BadRelayEntry => "bad_relay_entry",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::RateThrottled => "rate_throttled",
            ErrorKind::SlowConsumer => "slow_consumer",
            ErrorKind::DocumentTooLarge => "document_too_large",
            ErrorKind::InvalidAddress => "invalid_address",
            ErrorKind::AuthTimeout => "auth_timeout",
        }
    }

    /// Position in [`ErrorKind::ALL`], for counters resolved once per kind.
    pub const fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_listed_once_in_order_with_its_own_label() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), i, "{kind:?} out of order in ALL");
        }
        let mut labels: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(
            labels.len(),
            ErrorKind::ALL.len(),
            "two kinds share a label"
        );
    }
}
