//! One actor per WebSocket. It decodes frames, keeps per-document connection state (waiting for
//! auth, joining, open), queues what arrives before a document is ready, answers pings, and
//! relays to and from document actors. It never touches a document itself.
//!
//! The per-document state machine (auth, join, token refresh, detach) is in [`documents`].

mod documents;
mod hooks;
mod settings;
pub use settings::Timeouts;
mod input;
pub use input::name_problem;
mod refusals;
mod slots;
mod ticker;
mod ywebsocket;
pub use ywebsocket::PathDocument;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_web_actors::ws;
use bytes::Bytes;

use crate::auth::Authorizer;
use crate::budget::{Holder, SocketMeter};
use crate::protocol::ErrorKind;
// The messages a document sends a session are defined on the document's side.
pub use crate::document::{CloseSocket, Outbound, UpdateRefused};
use crate::document::{ConnKey, DocumentActor, Leave, SessionInput};
use crate::limits::Limits;
use crate::limits::{ConnectionSlot, TokenBucket};
use crate::metrics::Direction;
use crate::metrics::Metrics;
use crate::protocol::CloseCode;
use crate::protocol::{self, Message, MessageType, PING_FRAME};
use crate::registry::Registry;
/// WebSocket close reasons are limited to 123 bytes by RFC 6455.
const MAX_CLOSE_REASON: usize = 123;

static NEXT_SESSION_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh session id (also the id of the socket's meter).
pub fn next_session_id() -> u64 {
    NEXT_SESSION_ID.fetch_add(1, Ordering::Relaxed)
}

/// A sender may run this many bursts into debt (reading paused meanwhile) before it is closed.
/// With reading paused a client cannot get there by sending fast, only by packing thousands of
/// tiny frames into what the server had already read; it is a safety net, not the limit.
const MAX_RATE_DEBT_BURSTS: f64 = 10.0;

/// Everything a session needs, shared by all sessions of the node.
pub struct SessionContext {
    pub registry: Addr<Registry>,
    pub metrics: Arc<Metrics>,
    pub authorizer: Authorizer,
    pub limits: Limits,
    pub idle_timeout: Duration,
    pub ping_interval: Duration,
    /// Time a provider gets to answer a token refresh request before the document is closed.
    pub refresh_grace: Duration,
    /// Becomes `true` when the node drains: every session then closes with 4205.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The node's memory budget, which this socket's queues are charged to.
    pub budget: Arc<crate::budget::MemoryBudget>,
    /// A socket that takes none of its pending output for this long is closed.
    pub write_stall: Duration,
    /// A socket with no open (authenticated) document for this long is closed.
    pub auth_timeout: Duration,
    /// Where connect/disconnect events go, when webhooks are configured.
    pub webhooks: Option<crate::webhooks::Webhooks>,
}

enum Queued {
    Input(SessionInput),
    Close,
}

/// Per-document state of this socket.
enum Slot {
    /// Frames arrived before the Auth message, or while its token is being checked
    /// (`deciding`). Nothing of the document has been sent yet.
    AwaitingAuth {
        queue: Vec<(Queued, usize)>,
        deciding: bool,
    },
    /// Authorised; the document actor is being found or loaded.
    Joining {
        queue: Vec<(Queued, usize)>,
        grant: Grant,
    },
    Open {
        doc: Addr<DocumentActor>,
        key: ConnKey,
        grant: Grant,
    },
}

/// What the last accepted token granted on one document.
#[derive(Debug, Clone, Copy)]
struct Grant {
    read_only: bool,
    expires_at: Option<std::time::SystemTime>,
    /// Tells a stale expiry timer from the current one after a refresh.
    generation: u64,
}

pub struct SessionActor {
    id: u64,
    shared: Arc<SessionContext>,
    docs: slots::Slots,
    queued_messages: usize,
    queued_bytes: usize,
    last_seen: Instant,
    /// The provider announced version 4+ in its Auth: it understands the one-byte Ping.
    speaks_v4_ping: bool,
    fragments: Option<Vec<u8>>,
    closing: bool,
    next_generation: u64,
    /// This connection's place in the node and per-address counts, given back on drop.
    connection: ConnectionSlot,
    /// Place on this thread's heartbeat ticker, while started.
    ticker_slot: Option<usize>,
    messages_rate: TokenBucket,
    bytes_rate: TokenBucket,
    /// What this socket holds (outbound, inbound, pre-auth), charged to the node's budget;
    /// shared with the document actors and the socket's write task.
    meter: Arc<SocketMeter>,
    /// Pauses reading this socket while the sender is over its rate.
    throttle: std::rc::Rc<crate::websocket::Throttle>,
    /// Last time this socket had an open (authenticated) document, or when it connected.
    last_authenticated: Instant,
    /// Updates of this socket that document actors refused (see `refusals`).
    refused_updates: u32,
    /// Hocuspocus or y-websocket (see `ywebsocket`).
    wire: ywebsocket::Wire,
    /// Webhook bookkeeping (`None` unless webhooks are configured).
    hooks: Option<Box<hooks::SessionHooks>>,
}

fn truncate_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

impl SessionActor {
    pub fn new(
        shared: Arc<SessionContext>,
        slot: ConnectionSlot,
        meter: Arc<SocketMeter>,
        throttle: std::rc::Rc<crate::websocket::Throttle>,
        path_document: Option<PathDocument>,
        request: Option<Arc<crate::webhooks::RequestInfo>>,
    ) -> Self {
        let now = Instant::now();
        let l = &shared.limits;
        let messages_rate = TokenBucket::new(
            f64::from(l.max_messages_per_sec),
            f64::from(l.max_message_burst),
            now,
        );
        // A single frame up to the size limit is always allowed as a burst.
        let byte_burst = (l.max_bytes_per_sec as f64).max(l.max_frame_bytes as f64);
        let bytes_rate = TokenBucket::new(l.max_bytes_per_sec as f64, byte_burst, now);
        SessionActor {
            connection: slot,
            ticker_slot: None,
            messages_rate,
            bytes_rate,
            id: meter.id(),
            meter,
            throttle,
            last_authenticated: now,
            refused_updates: 0,
            wire: ywebsocket::Wire::new(path_document),
            hooks: shared
                .webhooks
                .clone()
                .zip(request)
                .map(|(webhooks, request)| hooks::SessionHooks::new(webhooks, request)),
            shared,
            docs: slots::Slots::default(),
            queued_messages: 0,
            queued_bytes: 0,
            last_seen: Instant::now(),
            speaks_v4_ping: false,
            fragments: None,
            closing: false,
            next_generation: 1,
        }
    }

    pub(super) fn send(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        address: &str,
        message: &Message<'_>,
    ) {
        let frame = Bytes::from(protocol::encode(address, message));
        self.shared
            .metrics
            .frame(Direction::Out, message.message_type(), frame.len());
        if !self.deliver_translated(&frame, ctx) {
            ctx.binary(frame);
        }
    }

    pub(super) fn close_socket(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        code: CloseCode,
        reason: &str,
    ) {
        if self.closing {
            return;
        }
        self.closing = true;
        self.shared
            .metrics
            .closes_total
            .with_label_values(&[code.label()])
            .inc();
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::from(code.code()),
            description: Some(truncate_reason(reason)),
        }));
        // Without stop() the actor lingers and server shutdown waits for it.
        ctx.stop();
    }

    /// Bad input at socket level: count it, log it once, close with the matching code.
    pub(super) fn protocol_error(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        kind: ErrorKind,
        code: CloseCode,
        reason: &str,
    ) {
        self.shared.metrics.protocol_error(kind);
        tracing::warn!(
            session = self.id,
            kind = kind.label(),
            code = code.code(),
            reason,
            "closing connection after bad input"
        );
        self.close_socket(ctx, code, reason);
    }

    /// Detaches one document and tells the client why, keeping the socket open.
    pub(super) fn close_document(
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

    fn heartbeat(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        if self.last_seen.elapsed() >= self.shared.idle_timeout {
            tracing::info!(session = self.id, "closing idle connection");
            return self.close_socket(ctx, CloseCode::ConnectionTimeout, "connection timeout");
        }
        // Pongs keep a socket alive, not a document: one that authenticates nothing would
        // otherwise hold its place (and what it queued) for ever.
        let now = Instant::now();
        if self.docs.values().any(|s| matches!(s, Slot::Open { .. })) {
            self.last_authenticated = now;
        } else if now.duration_since(self.last_authenticated) >= self.shared.auth_timeout {
            self.shared.metrics.protocol_error(ErrorKind::AuthTimeout);
            tracing::info!(
                session = self.id,
                "closing a connection without an authenticated document"
            );
            return self.close_socket(ctx, CloseCode::ConnectionTimeout, "authentication timeout");
        }
        ctx.ping(b"");
        if self.speaks_v4_ping {
            self.shared
                .metrics
                .message(Direction::Out, MessageType::Ping);
            ctx.binary(Bytes::from_static(&PING_FRAME));
        }
    }
}

impl Actor for SessionActor {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.shared.metrics.connections_open.inc();
        self.shared.metrics.connections_total.inc();
        // Pings, the idle check and the shutdown signal come from this thread's ticker.
        self.ticker_slot = Some(ticker::register(
            ctx.address(),
            self.shared.ping_interval,
            &self.shared.shutdown,
        ));
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(slot) = self.ticker_slot.take() {
            ticker::unregister(slot);
        }
        self.shared.metrics.connections_open.dec();
        // The meter may outlive the session (document actors hold it until they see Leave).
        self.meter.sub(Holder::Preauth, self.queued_bytes);
        let slots: Vec<(Arc<str>, Slot)> = self.docs.drain().collect();
        for (address, slot) in slots {
            let was_open = matches!(slot, Slot::Open { .. });
            if let Slot::Open { doc, key, .. } = slot {
                doc.do_send(Leave {
                    key,
                    acknowledge: false,
                });
            }
            self.hook_left(&address, was_open);
        }
    }
}

impl Handler<Outbound> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: Outbound, ctx: &mut Self::Context) {
        if self.closing {
            return;
        }
        self.shared
            .metrics
            .frame(Direction::Out, msg.ty, msg.frame.len());
        if !self.deliver_translated(&msg.frame, ctx) {
            ctx.binary(msg.frame);
        }
        // The context holds the bytes now; the write task charges them until written.
        drop(msg.charge);
    }
}

impl Handler<ticker::Heartbeat> for SessionActor {
    type Result = ();

    fn handle(&mut self, _: ticker::Heartbeat, ctx: &mut Self::Context) {
        if !self.closing {
            self.heartbeat(ctx);
        }
    }
}

impl Handler<CloseSocket> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: CloseSocket, ctx: &mut Self::Context) {
        self.close_socket(ctx, msg.code, &msg.reason);
    }
}
