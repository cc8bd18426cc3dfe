//! One open document: [`DocumentActor`] owns its [`DocumentState`] (the `yrs::Doc` and its
//! awareness), relays between the sessions attached to it, and hands updates to persistence.

mod actor;
mod awareness;
mod lifecycle;
mod outbound;
mod reloads;
mod replication;
mod session_handle;

pub use actor::{
    DocumentActor, DocumentConfig, FromSession, Join, JoinError, Leave, SessionInput, SetAccess,
};
pub use session_handle::{CloseSocket, Outbound, SessionHandle, SessionLink, UpdateRefused};
pub use zedi_protocol::document::{Applied, DocError, DocumentLimits, DocumentState};

use std::sync::Arc;

/// One attachment of a socket to a document. A socket may attach to the same document twice
/// under different addresses (the v4 provider's `sessionAwareness`), so the address is part of
/// the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub session: u64,
    pub address: Arc<str>,
}

/// Sent by a document actor as it stops; the registry ignores it if the name has a newer actor
/// already.
#[derive(actix::Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub name: Arc<str>,
    pub id: u64,
}
