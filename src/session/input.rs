//! What arrives on a socket: WebSocket messages (with the inbound memory they held released),
//! reassembly of fragmented messages, rate limiting by back-pressure, and the decoding and
//! routing of each protocol frame.

use std::sync::Arc;
use std::time::Instant;

use actix::prelude::*;
use actix_web_actors::ws;
use bytes::Bytes;

use super::{MAX_RATE_DEBT_BURSTS, Queued, SessionActor};
use crate::budget::Holder;
use crate::document::SessionInput;
use crate::limits::Limits;
use crate::metrics::Direction;
use crate::protocol::CloseCode;
use crate::protocol::ErrorKind;
use crate::protocol::{
    self, AuthMessage, FrameError, Message, MessageType, PONG_FRAME, Packet, SyncMessage,
    document_name,
};

impl SessionActor {
    /// One whole binary WebSocket message: rate, decode, address checks, then routing.
    fn on_frame(&mut self, frame: Bytes, ctx: &mut ws::WebsocketContext<Self>) {
        if !self.take_rate_tokens(1, frame.len(), ctx) {
            return;
        }
        self.shared.metrics.bytes(Direction::In, frame.len());
        self.choose_wire(&frame, ctx);
        if self.wire.is_ywebsocket() {
            return self.on_ywebsocket_frame(frame, ctx);
        }
        let packet = match protocol::decode(&frame) {
            Ok(packet) => packet,
            Err(e) => {
                let code = match e {
                    FrameError::UnknownType(_) | FrameError::AddressedPing => {
                        CloseCode::ResetConnection
                    }
                    _ => CloseCode::Unauthorized,
                };
                return self.protocol_error(ctx, e.kind(), code, &e.to_string());
            }
        };
        let (address, message) = match packet {
            Packet::Ping => {
                self.shared
                    .metrics
                    .message(Direction::In, MessageType::Ping);
                ctx.binary(Bytes::from_static(&PONG_FRAME));
                return;
            }
            Packet::Pong => {
                self.shared
                    .metrics
                    .message(Direction::In, MessageType::Pong);
                return;
            }
            Packet::Message { address, message } => (address, message),
        };
        self.shared
            .metrics
            .message(Direction::In, message.message_type());
        if let Some((kind, reason)) = address_problem(address, &self.shared.limits) {
            return self.protocol_error(ctx, kind, CloseCode::ResetConnection, reason);
        }
        let address: Arc<str> = match self.docs.get_key_value(address) {
            Some((known, _)) => Arc::clone(known),
            None => Arc::from(address),
        };
        self.dispatch(address, message, &frame, ctx);
    }

    /// Takes the rate tokens of `messages` messages of `size` bytes. Over the rate, they are
    /// still taken, but reading pauses until the buckets are out of debt: TCP then slows the
    /// sender (a paste or an import goes through, slower). `false` when the debt limit closed
    /// the socket.
    pub(super) fn take_rate_tokens(
        &mut self,
        messages: usize,
        size: usize,
        ctx: &mut ws::WebsocketContext<Self>,
    ) -> bool {
        let now = Instant::now();
        let limits = &self.shared.limits;
        let message_debt = MAX_RATE_DEBT_BURSTS * f64::from(limits.max_message_burst);
        let byte_debt = MAX_RATE_DEBT_BURSTS * (limits.max_bytes_per_sec as f64);
        let waits = self
            .messages_rate
            .take_with_debt(messages as f64, now, message_debt)
            .and_then(|a| {
                let b = self
                    .bytes_rate
                    .take_with_debt(size as f64, now, byte_debt)?;
                Ok(a.max(b))
            });
        match waits {
            Err(_) => {
                self.protocol_error(
                    ctx,
                    ErrorKind::RateLimited,
                    CloseCode::ResetConnection,
                    "rate limit exceeded",
                );
                return false;
            }
            Ok(wait) if !wait.is_zero() => {
                self.shared.metrics.protocol_error(ErrorKind::RateThrottled);
                self.throttle.pause_until(now + wait);
            }
            Ok(_) => {}
        }
        true
    }

    /// Hands a decoded message for `address` to the session's state machine or, as input, to
    /// the document (queued while the document is not open yet).
    pub(super) fn dispatch(
        &mut self,
        address: Arc<str>,
        message: Message<'_>,
        frame: &Bytes,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let size = frame.len();
        let input = match message {
            Message::Auth(AuthMessage::Token {
                token,
                provider_version,
            }) => {
                return self.authenticate(address, token, provider_version, ctx);
            }
            Message::Close(_) => return self.client_close(address, size, ctx),
            Message::BroadcastStateless(_) | Message::SyncReply(_) => {
                self.shared
                    .metrics
                    .protocol_error(ErrorKind::ServerOnlyMessage);
                tracing::warn!(
                    session = self.id,
                    ty = message.message_type().as_str(),
                    "client sent a server-only message; closing that document"
                );
                return self.close_document(ctx, &address, "message type not allowed from clients");
            }
            Message::Auth(_) | Message::SyncStatus(_) => {
                // Server-to-client messages: meaningless from a client, harmless to drop.
                self.shared
                    .metrics
                    .protocol_error(ErrorKind::UnexpectedMessage);
                return;
            }
            Message::Sync(SyncMessage::Step1(sv)) => SessionInput::SyncStep1(frame.slice_ref(sv)),
            Message::Sync(SyncMessage::Step2(u) | SyncMessage::Update(u)) => {
                SessionInput::Update(frame.slice_ref(u))
            }
            Message::Awareness(a) => SessionInput::Awareness(frame.slice_ref(a)),
            Message::QueryAwareness => SessionInput::QueryAwareness,
            Message::Stateless(s) => SessionInput::Stateless(s.to_string()),
        };
        self.route(address, Queued::Input(input), size, ctx);
    }
}

/// What is wrong with a frame's address, as the metric kind and the close reason; `None` when
/// it may name a document.
fn address_problem(address: &str, limits: &Limits) -> Option<(ErrorKind, &'static str)> {
    if address.len() > limits.max_address_bytes {
        // Every frame for the document repeats the address, and the server keeps it per
        // attachment: a long session id part would multiply memory and broadcast bytes.
        return Some((ErrorKind::InvalidAddress, "address too long"));
    }
    name_problem(document_name(address), limits)
        .map(|reason| (ErrorKind::InvalidDocumentName, reason))
}

/// What is wrong with a document name (the close reason); `None` when it may name a document.
/// A y-websocket name (from the URL path) may not hold a NUL either: that is where a Hocuspocus
/// address ends its document part.
pub fn name_problem(name: &str, limits: &Limits) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty document name");
    }
    if name.chars().any(char::is_control) {
        return Some("control characters in document name");
    }
    if name.len() > limits.max_document_name_bytes || name.len() > limits.max_address_bytes {
        return Some("document name too long");
    }
    None
}

/// Bytes a client frame carrying `message` took on the wire: payload plus the header of a
/// masked client frame with a minimal length. A client using a longer length encoding than
/// needed is under-credited, so its inbound charge only errs upwards.
fn wire_size(message: &ws::Message) -> usize {
    let payload = match message {
        ws::Message::Binary(b) | ws::Message::Ping(b) | ws::Message::Pong(b) => b.len(),
        ws::Message::Text(t) => t.len(),
        ws::Message::Close(reason) => reason
            .as_ref()
            .map_or(0, |r| 2 + r.description.as_ref().map_or(0, String::len)),
        ws::Message::Continuation(item) => match item {
            actix_http::ws::Item::FirstText(b)
            | actix_http::ws::Item::FirstBinary(b)
            | actix_http::ws::Item::Continue(b)
            | actix_http::ws::Item::Last(b) => b.len(),
        },
        ws::Message::Nop => return 0,
    };
    let length_field = match payload {
        0..=125 => 0,
        126..=65535 => 2,
        _ => 8,
    };
    2 + length_field + 4 + payload
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for SessionActor {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        if let Ok(message) = &item {
            self.meter.sub(Holder::Inbound, wire_size(message));
        }
        if self.closing {
            return;
        }
        self.last_seen = Instant::now();
        let message = match item {
            Ok(message) => message,
            Err(ws::ProtocolError::Overflow) => {
                return self.protocol_error(
                    ctx,
                    ErrorKind::FrameTooLarge,
                    CloseCode::MessageTooBig,
                    "message too big",
                );
            }
            Err(ws::ProtocolError::Io(e)) => {
                // The peer went away without a close handshake (tab closed, network lost).
                tracing::debug!(session = self.id, error = %e, "connection dropped");
                self.closing = true;
                ctx.stop();
                return;
            }
            Err(e) => {
                return self.protocol_error(
                    ctx,
                    ErrorKind::WebsocketProtocol,
                    CloseCode::ProtocolError,
                    &e.to_string(),
                );
            }
        };
        match message {
            ws::Message::Binary(frame) => self.on_frame(frame, ctx),
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Text(_) => self.protocol_error(
                ctx,
                ErrorKind::TextFrame,
                CloseCode::Unauthorized,
                "text frames are not part of the protocol",
            ),
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
            ws::Message::Continuation(item) => self.on_continuation(item, ctx),
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl SessionActor {
    /// Reassembles a fragmented message; the size limit applies to the whole message.
    fn on_continuation(
        &mut self,
        item: actix_http::ws::Item,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let limit = self.shared.limits.max_frame_bytes;
        let (chunk, last) = match item {
            actix_http::ws::Item::FirstBinary(b) => {
                self.fragments = Some(Vec::new());
                (b, false)
            }
            actix_http::ws::Item::FirstText(_) => {
                return self.protocol_error(
                    ctx,
                    ErrorKind::TextFrame,
                    CloseCode::Unauthorized,
                    "text frames are not part of the protocol",
                );
            }
            actix_http::ws::Item::Continue(b) => (b, false),
            actix_http::ws::Item::Last(b) => (b, true),
        };
        let Some(buffer) = self.fragments.as_mut() else {
            return self.protocol_error(
                ctx,
                ErrorKind::WebsocketProtocol,
                CloseCode::ProtocolError,
                "continuation without a first frame",
            );
        };
        if buffer.len() + chunk.len() > limit {
            return self.protocol_error(
                ctx,
                ErrorKind::FrameTooLarge,
                CloseCode::MessageTooBig,
                "message too big",
            );
        }
        buffer.extend_from_slice(&chunk);
        if last && let Some(whole) = self.fragments.take() {
            self.on_frame(Bytes::from(whole), ctx);
        }
    }
}
