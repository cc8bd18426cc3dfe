//! What a document holds of each attached session, and the messages it sends one. They are
//! defined here, on the document's side, so the document knows nothing of the session actor:
//! the session hands its address over as a [`SessionHandle`] when it joins.

use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::prelude::*;
use bytes::Bytes;

use crate::budget::OutboundCharge;
use crate::protocol::{CloseCode, MessageType};

/// A frame for the client, already encoded (the document actor encodes a broadcast once).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Outbound {
    pub frame: Bytes,
    pub ty: MessageType,
    /// The frame's bytes on the socket's meter, until the socket's context has them.
    pub charge: OutboundCharge,
}

/// Close the whole socket (a protocol error found by a document actor, or shutdown).
#[derive(Message, Clone)]
#[rtype(result = "()")]
pub struct CloseSocket {
    pub code: CloseCode,
    pub reason: String,
}

/// Sent by a document actor after it refused an update (answered `SyncStatus(0)`) or an
/// awareness state over its size or depth bound.
#[derive(Message)]
#[rtype(result = "()")]
pub struct UpdateRefused {
    pub address: Arc<str>,
    pub reason: String,
}

/// Where a document's messages for one session go. Implemented for the address of any actor
/// that handles all three messages, so a session passes `ctx.address()`; unit tests record
/// the messages instead.
pub trait SessionLink: Send + 'static {
    fn outbound(&self, message: Outbound);
    fn close_socket(&self, message: CloseSocket);
    fn update_refused(&self, message: UpdateRefused);
}

impl<A> SessionLink for Addr<A>
where
    A: Actor + Handler<Outbound> + Handler<CloseSocket> + Handler<UpdateRefused>,
    A::Context: ToEnvelope<A, Outbound> + ToEnvelope<A, CloseSocket> + ToEnvelope<A, UpdateRefused>,
{
    fn outbound(&self, message: Outbound) {
        self.do_send(message);
    }

    fn close_socket(&self, message: CloseSocket) {
        self.do_send(message);
    }

    fn update_refused(&self, message: UpdateRefused) {
        self.do_send(message);
    }
}

/// One session as a document sees it. One boxed address rather than three `Recipient`s: each
/// `Recipient` is a box around its own clone of the address, and a node holds tens of
/// thousands of attachments.
pub struct SessionHandle(Box<dyn SessionLink>);

impl SessionHandle {
    pub fn new(link: impl SessionLink) -> Self {
        SessionHandle(Box::new(link))
    }

    pub fn send(&self, message: Outbound) {
        self.0.outbound(message);
    }

    pub fn close_socket(&self, code: CloseCode, reason: impl Into<String>) {
        self.0.close_socket(CloseSocket {
            code,
            reason: reason.into(),
        });
    }

    pub fn update_refused(&self, address: &Arc<str>, reason: impl Into<String>) {
        self.0.update_refused(UpdateRefused {
            address: Arc::clone(address),
            reason: reason.into(),
        });
    }
}
