//! One actor per WebSocket. It decodes frames, keeps per-document connection state (waiting for
//! auth, joining, open), queues what arrives before a document is ready, answers pings, and
//! relays to and from document actors. It never touches a document itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws;
use bytes::Bytes;

use crate::auth::{Access, Authorizer};
use crate::config::Limits;
use crate::document::{ConnKey, DocumentActor, FromSession, Join, JoinError, Leave, SessionInput};
use crate::metrics::Metrics;
use crate::protocol::{
    self, AuthMessage, FrameError, Message, MessageType, PING_FRAME, PONG_FRAME, Packet,
    SCOPE_READ_ONLY, SCOPE_READ_WRITE, SyncMessage, document_name,
};
use crate::registry::{Open, Registry};

/// How often a join that raced with an unloading document is retried before giving up.
const MAX_JOIN_ATTEMPTS: u32 = 5;
/// WebSocket close reasons are limited to 123 bytes by RFC 6455.
const MAX_CLOSE_REASON: usize = 123;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// A frame for the client, already encoded (the document actor encodes a broadcast once).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Outbound {
    pub frame: Bytes,
    pub ty: MessageType,
}

/// Close the whole socket (a protocol error found by a document actor, or shutdown).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CloseSocket {
    pub code: u16,
    pub reason: String,
}

/// Everything a session needs, shared by all sessions of the node.
pub struct SessionContext {
    pub registry: Addr<Registry>,
    pub metrics: Arc<Metrics>,
    pub authorizer: Authorizer,
    pub limits: Limits,
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
}

enum Queued {
    Input(SessionInput),
    Close,
}

enum Slot {
    /// Frames arrived before the Auth message.
    AwaitingAuth { queue: Vec<(Queued, usize)> },
    /// Authorised; the document actor is being found or loaded.
    Joining { queue: Vec<(Queued, usize)> },
    Open {
        doc: Addr<DocumentActor>,
        key: ConnKey,
    },
}

pub struct SessionActor {
    id: u64,
    shared: Arc<SessionContext>,
    docs: HashMap<Arc<str>, Slot>,
    queued_messages: usize,
    queued_bytes: usize,
    last_seen: Instant,
    /// The provider announced version 4+ in its Auth: it understands the one-byte Ping.
    speaks_v4_ping: bool,
    fragments: Option<Vec<u8>>,
    closing: bool,
}

fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

impl SessionActor {
    pub fn new(shared: Arc<SessionContext>) -> Self {
        SessionActor {
            id: NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed),
            shared,
            docs: HashMap::new(),
            queued_messages: 0,
            queued_bytes: 0,
            last_seen: Instant::now(),
            speaks_v4_ping: false,
            fragments: None,
            closing: false,
        }
    }

    fn send(&self, ctx: &mut ws::WebsocketContext<Self>, address: &str, message: &Message<'_>) {
        let frame = protocol::encode(address, message);
        self.shared
            .metrics
            .message("out", message.message_type().as_str());
        self.shared
            .metrics
            .bytes_total
            .with_label_values(&["out"])
            .inc_by(frame.len() as u64);
        ctx.binary(frame);
    }

    fn close_socket(&mut self, ctx: &mut ws::WebsocketContext<Self>, code: u16, reason: &str) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.shared
            .metrics
            .closes_total
            .with_label_values(&[close_label(code)])
            .inc();
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::from(code),
            description: Some(truncate_reason(reason)),
        }));
        // Without stop() the actor lingers and server shutdown waits for it.
        ctx.stop();
    }

    /// Bad input at socket level: count it, log it once, close with the matching code.
    fn protocol_error(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        kind: &'static str,
        code: u16,
        reason: &str,
    ) {
        self.shared.metrics.protocol_error(kind);
        tracing::warn!(
            session = self.id,
            kind,
            code,
            reason,
            "closing connection after bad input"
        );
        self.close_socket(ctx, code, reason);
    }

    /// Detaches one document and tells the client why, keeping the socket open.
    fn close_document(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        address: &str,
        reason: &str,
    ) {
        self.remove_slot(address);
        self.shared
            .metrics
            .closes_total
            .with_label_values(&["document"])
            .inc();
        self.send(ctx, address, &Message::Close(Some(reason)));
    }

    fn remove_slot(&mut self, address: &str) {
        match self.docs.remove(address) {
            Some(Slot::Open { doc, key }) => doc.do_send(Leave {
                key,
                acknowledge: false,
            }),
            Some(Slot::AwaitingAuth { queue } | Slot::Joining { queue }) => self.release(&queue),
            None => {}
        }
    }

    fn release(&mut self, queue: &[(Queued, usize)]) {
        self.queued_messages -= queue.len();
        self.queued_bytes -= queue.iter().map(|(_, n)| n).sum::<usize>();
    }

    fn on_frame(&mut self, frame: Bytes, ctx: &mut ws::WebsocketContext<Self>) {
        self.shared
            .metrics
            .bytes_total
            .with_label_values(&["in"])
            .inc_by(frame.len() as u64);
        let packet = match protocol::decode(&frame) {
            Ok(packet) => packet,
            Err(e) => {
                let code = match e {
                    FrameError::UnknownType(_) | FrameError::AddressedPing => 4205,
                    _ => 4401,
                };
                return self.protocol_error(ctx, e.kind(), code, &e.to_string());
            }
        };
        let (address, message) = match packet {
            Packet::Ping => {
                self.shared.metrics.message("in", "ping");
                ctx.binary(Bytes::from_static(&PONG_FRAME));
                return;
            }
            Packet::Pong => {
                self.shared.metrics.message("in", "pong");
                return;
            }
            Packet::Message { address, message } => (address, message),
        };
        self.shared
            .metrics
            .message("in", message.message_type().as_str());
        let name = document_name(address);
        if name.is_empty() {
            return self.protocol_error(ctx, "invalid_document_name", 4205, "empty document name");
        }
        if name.len() > self.shared.limits.max_document_name_bytes {
            return self.protocol_error(
                ctx,
                "invalid_document_name",
                4205,
                "document name too long",
            );
        }
        let address: Arc<str> = match self.docs.get_key_value(address) {
            Some((known, _)) => Arc::clone(known),
            None => Arc::from(address),
        };
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
                self.shared.metrics.protocol_error("server_only_message");
                tracing::warn!(
                    session = self.id,
                    ty = message.message_type().as_str(),
                    "client sent a server-only message; closing that document"
                );
                return self.close_document(ctx, &address, "message type not allowed from clients");
            }
            Message::Auth(_) | Message::SyncStatus(_) => {
                // Server-to-client messages: meaningless from a client, harmless to drop.
                self.shared.metrics.protocol_error("unexpected_message");
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

    fn route(
        &mut self,
        address: Arc<str>,
        item: Queued,
        size: usize,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let pending_docs = self
            .docs
            .values()
            .filter(|s| !matches!(s, Slot::Open { .. }))
            .count();
        let slot = match self.docs.get_mut(&address) {
            Some(Slot::Open { doc, key }) => {
                if let Queued::Input(input) = item {
                    doc.do_send(FromSession {
                        key: key.clone(),
                        input,
                    });
                }
                return;
            }
            Some(slot) => slot,
            None => {
                if pending_docs >= self.shared.limits.max_documents_per_connection {
                    return self.protocol_error(
                        ctx,
                        "preauth_limit",
                        4205,
                        "too many documents waiting for authentication",
                    );
                }
                self.docs
                    .entry(Arc::clone(&address))
                    .or_insert(Slot::AwaitingAuth { queue: Vec::new() })
            }
        };
        if let Slot::AwaitingAuth { queue } | Slot::Joining { queue } = slot {
            queue.push((item, size));
        }
        self.queued_messages += 1;
        self.queued_bytes += size;
        if self.queued_messages > self.shared.limits.max_preauth_messages
            || self.queued_bytes > self.shared.limits.max_preauth_bytes
        {
            self.protocol_error(
                ctx,
                "preauth_limit",
                4205,
                "too much data before authentication",
            );
        }
    }

    fn authenticate(
        &mut self,
        address: Arc<str>,
        token: &str,
        provider_version: Option<&str>,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        if let Some(major) = provider_version.and_then(|v| v.split('.').next()?.parse::<u32>().ok())
        {
            self.speaks_v4_ping |= major >= 4;
        }
        let name = document_name(&address).to_string();
        let access = self.shared.authorizer.decide(token, &name);
        let read_only = match access {
            Access::Denied { reason } => {
                self.remove_slot(&address);
                self.send(
                    ctx,
                    &address,
                    &Message::Auth(AuthMessage::PermissionDenied { reason: &reason }),
                );
                return;
            }
            Access::ReadOnly => true,
            Access::ReadWrite => false,
        };
        let scope = if read_only {
            SCOPE_READ_ONLY
        } else {
            SCOPE_READ_WRITE
        };
        let queue = match self.docs.remove(&address) {
            Some(slot @ (Slot::Open { .. } | Slot::Joining { .. })) => {
                // A repeated Auth (token refresh) on an attached document: confirm, keep going.
                self.docs.insert(Arc::clone(&address), slot);
                self.send(
                    ctx,
                    &address,
                    &Message::Auth(AuthMessage::Authenticated { scope }),
                );
                return;
            }
            Some(Slot::AwaitingAuth { queue }) => queue,
            None => Vec::new(),
        };
        let attached = self
            .docs
            .values()
            .filter(|s| !matches!(s, Slot::AwaitingAuth { .. }))
            .count();
        if attached >= self.shared.limits.max_documents_per_connection {
            self.release(&queue);
            self.shared.metrics.protocol_error("too_many_documents");
            self.send(
                ctx,
                &address,
                &Message::Auth(AuthMessage::PermissionDenied {
                    reason: "too many documents on this connection",
                }),
            );
            return;
        }
        // Authenticated goes out at once: the provider counts its first reply as "connected".
        self.send(
            ctx,
            &address,
            &Message::Auth(AuthMessage::Authenticated { scope }),
        );
        self.docs
            .insert(Arc::clone(&address), Slot::Joining { queue });
        self.join(address, read_only, 1, ctx);
    }

    fn join(
        &mut self,
        address: Arc<str>,
        read_only: bool,
        attempt: u32,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let registry = self.shared.registry.clone();
        let key = ConnKey {
            session: self.id,
            address: Arc::clone(&address),
        };
        let me = ctx.address();
        let join = Join {
            key: key.clone(),
            outbox: me.clone().recipient(),
            control: me.recipient(),
            read_only,
        };
        let name: Arc<str> = Arc::from(document_name(&address));
        let attempt_join = async move {
            let doc = registry
                .send(Open { name })
                .await
                .map_err(|_| JoinError::Unavailable)?;
            match doc.send(join).await {
                Ok(Ok(())) => Ok(doc),
                Ok(Err(e)) => Err(e),
                // The actor stopped with our Join in its mailbox: it was unloading.
                Err(_) => Err(JoinError::Unloading),
            }
        };
        ctx.spawn(
            attempt_join
                .into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(doc) => act.joined(address, doc, key),
                    Err(JoinError::Unloading) if attempt < MAX_JOIN_ATTEMPTS => {
                        act.join(address, read_only, attempt + 1, ctx);
                    }
                    Err(error) => {
                        tracing::warn!(session = act.id, %error, "cannot open document");
                        if act.docs.contains_key(&address) {
                            act.close_document(ctx, &address, "document unavailable");
                        }
                    }
                }),
        );
    }

    fn joined(&mut self, address: Arc<str>, doc: Addr<DocumentActor>, key: ConnKey) {
        let queue = match self.docs.remove(&address) {
            Some(Slot::Joining { queue }) => queue,
            // The socket detached the document while it was loading.
            _ => {
                doc.do_send(Leave {
                    key,
                    acknowledge: false,
                });
                return;
            }
        };
        self.release(&queue);
        for (item, _) in queue {
            match item {
                Queued::Input(input) => doc.do_send(FromSession {
                    key: key.clone(),
                    input,
                }),
                Queued::Close => {
                    doc.do_send(Leave {
                        key,
                        acknowledge: true,
                    });
                    return;
                }
            }
        }
        self.docs.insert(address, Slot::Open { doc, key });
    }

    fn client_close(
        &mut self,
        address: Arc<str>,
        size: usize,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        match self.docs.get(&address) {
            Some(Slot::Open { .. }) => {
                // The document actor answers CLOSE after everything it still owes this
                // attachment (e.g. the echo of the provider's last awareness), keeping order.
                if let Some(Slot::Open { doc, key }) = self.docs.remove(&address) {
                    doc.do_send(Leave {
                        key,
                        acknowledge: true,
                    });
                }
            }
            Some(Slot::Joining { .. }) => self.route(address, Queued::Close, size, ctx),
            Some(Slot::AwaitingAuth { .. }) => self.remove_slot(&address),
            None => {}
        }
    }

    fn heartbeat(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.last_seen.elapsed() >= self.shared.idle_timeout {
            tracing::info!(session = self.id, "closing idle connection");
            return self.close_socket(ctx, 4408, "connection timeout");
        }
        ctx.ping(b"");
        if self.speaks_v4_ping {
            self.shared.metrics.message("out", "ping");
            ctx.binary(Bytes::from_static(&PING_FRAME));
        }
    }
}

fn close_label(code: u16) -> &'static str {
    match code {
        1000 => "normal",
        1009 => "message_too_big",
        4205 => "reset_connection",
        4401 => "unauthorized",
        4403 => "forbidden",
        4408 => "timeout",
        _ => "other",
    }
}

impl Actor for SessionActor {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.shared.metrics.connections_open.inc();
        self.shared.metrics.connections_total.inc();
        ctx.run_interval(self.shared.ping_interval, |act, ctx| act.heartbeat(ctx));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.shared.metrics.connections_open.dec();
        for (_, slot) in self.docs.drain() {
            if let Slot::Open { doc, key } = slot {
                doc.do_send(Leave {
                    key,
                    acknowledge: false,
                });
            }
        }
    }
}

impl Handler<Outbound> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        self.shared.metrics.message("out", msg.ty.as_str());
        self.shared
            .metrics
            .bytes_total
            .with_label_values(&["out"])
            .inc_by(msg.frame.len() as u64);
        ctx.binary(msg.frame);
    }
}

impl Handler<CloseSocket> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: CloseSocket, ctx: &mut Self::Context) {
        self.close_socket(ctx, msg.code, &msg.reason);
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for SessionActor {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        self.last_seen = Instant::now();
        let message = match item {
            Ok(message) => message,
            Err(ws::ProtocolError::Overflow) => {
                return self.protocol_error(ctx, "frame_too_large", 1009, "message too big");
            }
            Err(ws::ProtocolError::Io(e)) => {
                // The peer went away without a close handshake (tab closed, network lost).
                tracing::debug!(session = self.id, error = %e, "connection dropped");
                self.closing = true;
                ctx.stop();
                return;
            }
            Err(e) => {
                return self.protocol_error(ctx, "websocket_protocol", 1002, &e.to_string());
            }
        };
        match message {
            ws::Message::Binary(frame) => self.on_frame(frame, ctx),
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Text(_) => self.protocol_error(
                ctx,
                "text_frame",
                4401,
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
                    "text_frame",
                    4401,
                    "text frames are not part of the protocol",
                );
            }
            actix_http::ws::Item::Continue(b) => (b, false),
            actix_http::ws::Item::Last(b) => (b, true),
        };
        let Some(buffer) = self.fragments.as_mut() else {
            return self.protocol_error(
                ctx,
                "websocket_protocol",
                1002,
                "continuation without a first frame",
            );
        };
        if buffer.len() + chunk.len() > limit {
            return self.protocol_error(ctx, "frame_too_large", 1009, "message too big");
        }
        buffer.extend_from_slice(&chunk);
        if last && let Some(whole) = self.fragments.take() {
            self.on_frame(Bytes::from(whole), ctx);
        }
    }
}
