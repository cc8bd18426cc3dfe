//! What a document actor is configured with, and the messages a session sends it.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytes::Bytes;

use super::{ConnKey, DocumentLimits, SessionHandle};
use crate::budget::SocketMeter;

/// Document-actor tunables, from `[documents]` and `[store]`.
#[derive(Debug, Clone)]
pub struct DocumentConfig {
    /// The node's memory budget: the loaded document and its awareness are charged to it.
    pub budget: Arc<crate::budget::MemoryBudget>,
    /// Charge per encoded byte of the document (`limits.document_memory_factor`).
    pub document_memory_factor: f64,
    /// Per-socket bound of unread outbound bytes (see [`Join::outbound`]).
    pub max_outbound_bytes: usize,
    /// Largest encoded document; growth past it is refused.
    pub max_document_bytes: usize,
    /// Nesting and pending bounds applied to every update (see [`DocumentLimits`]).
    pub limits: DocumentLimits,
    pub unload_grace: Duration,
    /// How long a load keeps retrying a failing store before the document is declared
    /// unavailable (sessions then get a CLOSE for it).
    pub load_timeout: Duration,
    /// Waits between the attempts of a failing load (`documents.load_retry_*`).
    pub load_retry: crate::backoff::BackoffPolicy,
    pub awareness_timeout: Duration,
    /// Idle time after which the document keeps only its encoded state; `None`: never.
    pub rest_after: Option<Duration>,
    pub compact_after_updates: u64,
    pub compact_min_interval: Duration,
    /// A version after this much editing activity (`history.auto_version_ms`; `None`: never).
    pub auto_version: Option<Duration>,
    /// Where `change` and `create` events go (`None`: webhooks off).
    pub webhooks: Option<crate::webhooks::Webhooks>,
}

/// A session attaches to this document. Answered `Err` when the actor is unloading: the
/// session then asks the registry again, which by then starts a fresh actor.
#[derive(Message)]
#[rtype(result = "Result<(), JoinError>")]
pub struct Join {
    pub key: ConnKey,
    /// Where this document's frames, refusals and closes for the session go.
    pub session: SessionHandle,
    pub read_only: bool,
    /// What the socket holds, shared with its session and write task: bounds what a slow
    /// reader can pile up, and closes it at once when it does.
    pub meter: Arc<SocketMeter>,
    /// Send our SyncStep1 at once, before anything else: a y-websocket server opens with it.
    pub greet: bool,
    /// What this connection's changes carry into the `change` webhook (`None`: webhooks off).
    pub hook: Option<Arc<crate::webhooks::HookContext>>,
    /// Who this connection's updates are recorded as (the token's `sub`, or `anonymous`).
    pub author: Arc<str>,
}

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("document is unloading")]
    Unloading,
    #[error("document could not be loaded")]
    Unavailable,
    #[error("the node's memory budget is nearly full: no more documents are loaded")]
    ServerBusy,
}

/// What a session forwards for one attachment, in the order it received it.
#[derive(Debug)]
pub enum SessionInput {
    SyncStep1(Bytes),
    /// A SyncStep2 or an Update: both are Yjs updates to apply and acknowledge.
    Update(Bytes),
    Awareness(Bytes),
    QueryAwareness,
    Stateless(String),
}

#[derive(Message)]
#[rtype(result = "()")]
pub struct FromSession {
    pub key: ConnKey,
    pub input: SessionInput,
}

/// The attachment ends (CLOSE from the provider, or the socket went away).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Leave {
    pub key: ConnKey,
    /// Answer with CLOSE `provider_initiated` (the provider asked to detach), as Hocuspocus does.
    pub acknowledge: bool,
}

/// The connection's token was refreshed and now grants a different scope.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SetAccess {
    pub key: ConnKey,
    pub read_only: bool,
}
