//! One open document: [`DocumentActor`] owns its [`DocumentState`] (the `yrs::Doc` and its
//! awareness), relays between the sessions attached to it, and hands updates to persistence.
//!
//! The actor ([`actor`]) composes parts that each own their data and know nothing of actix
//! beyond a timer handle, so each is tested alone:
//! - `attachments`: who is attached, read-only or not, and each socket's outbound share;
//! - `acks`: updates waiting for the store; the one place that decides `SyncStatus(true)`;
//! - `compaction`: after `compact_after_updates` entries, at most once per interval, by the owner;
//! - `unload`: loading / ready / unloading, and the unload timer;
//! - `memory`: the size estimate the document limit is checked against, and the budget charges;
//! - `rest`: when an idle document keeps only its encoded state;
//! - `session_handle`: what the document holds of a session, and the messages it sends one.

mod acks;
mod actor;
mod attachments;
mod change_hook;
mod compaction;
mod memory;
mod messages;
mod reloads;
mod rest;
mod session_handle;
mod settings;
mod unload;

pub use actor::{
    ApiUpdate, CurrentState, DELETED_REASON, DeleteDocument, DocumentActor, RestoreTo,
    UpdateRefusal,
};
pub use messages::{DocumentConfig, FromSession, Join, JoinError, Leave, SessionInput, SetAccess};
pub use session_handle::{CloseSocket, Outbound, SessionHandle, SessionLink, UpdateRefused};
pub use settings::DocumentSettings;
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
