//! One open document: [`DocumentActor`] owns its [`DocumentState`] (the `yrs::Doc` and its
//! awareness), relays between the sessions attached to it, and hands updates to persistence.

#[cfg(feature = "server")]
mod actor;
#[cfg(feature = "server")]
mod awareness;
#[cfg(feature = "server")]
mod lifecycle;
#[cfg(feature = "server")]
mod outbound;
#[cfg(feature = "server")]
mod reloads;
#[cfg(feature = "server")]
mod replication;
mod state;

#[cfg(feature = "server")]
pub use actor::{
    DocumentActor, DocumentConfig, FromSession, Join, JoinError, Leave, SessionInput, SetAccess,
};
pub use state::{Applied, DocError, DocumentLimits, DocumentState};

use std::sync::Arc;

/// One attachment of a socket to a document. A socket may attach to the same document twice
/// under different addresses (the v4 provider's `sessionAwareness`), so the address is part of
/// the key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub session: u64,
    pub address: Arc<str>,
}
