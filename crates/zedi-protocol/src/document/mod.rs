//! The content of one document and the sync rules applied to it, free of actors and sockets
//! (the y-sweet shape): the actor decides *when*, this decides *what*.

mod apply;
pub mod export;
pub mod history;
mod rest;
#[cfg(test)]
mod tests;
mod tree;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use yrs::updates::decoder::Decode;
use yrs::{Doc, ReadTxn, StateVector, Transact};

use crate::awareness::{AwarenessLimits, AwarenessTable};
use crate::firewall::{self, Refusal};
use crate::protocol::ErrorKind;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocError {
    /// The firewall refused it: yrs never saw it and the document is untouched.
    #[error("invalid update: {0}")]
    Refused(Refusal),
    #[error("invalid state vector: {0}")]
    RefusedStateVector(Refusal),
    /// Too much is already waiting for missing predecessors; each pending update costs work in
    /// proportion to what is pending, so that is bounded.
    #[error("too many pending updates ({0} bytes waiting for missing predecessors)")]
    TooMuchPending(usize),
    #[error("undecodable state vector")]
    BadStateVector,
    #[error("undecodable Yjs update: {0}")]
    BadUpdate(String),
    /// yrs panicked while integrating: the in-memory document can no longer be trusted and must
    /// be reloaded from the store (which never saw the offending update).
    #[error("Yjs update could not be integrated; document must be reloaded")]
    Poisoned,
}

impl DocError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            DocError::Refused(_) | DocError::RefusedStateVector(_) => ErrorKind::InvalidUpdate,
            DocError::TooMuchPending(_) => ErrorKind::PendingLimit,
            DocError::BadStateVector => ErrorKind::BadStateVector,
            DocError::BadUpdate(_) => ErrorKind::BadUpdate,
            DocError::Poisoned => ErrorKind::PoisonedUpdate,
        }
    }
}

/// What applying a client update did.
#[derive(Debug, PartialEq, Eq)]
pub struct Applied {
    /// The changes newly integrated (including formerly pending updates this one unblocked), to
    /// broadcast; `None` when the update was already known.
    pub broadcast: Option<Vec<u8>>,
    /// Whether the raw update must go to the store's log: it changed the document or is waiting
    /// (pending) for missing predecessors, which must survive a restart too.
    pub store: bool,
}

/// Bytes of an update that changes nothing: no structs, empty delete set.
const EMPTY_UPDATE: [u8; 2] = [0, 0];

/// Limits on what clients can make one document hold.
#[derive(Debug, Clone, Copy)]
pub struct DocumentLimits {
    pub firewall: firewall::Limits,
    /// Bytes of updates that may wait for missing predecessors at once.
    pub max_pending_bytes: usize,
    /// Size, depth and per-connection bounds of the awareness table.
    pub awareness: AwarenessLimits,
}

impl Default for DocumentLimits {
    fn default() -> Self {
        DocumentLimits {
            firewall: firewall::Limits::default(),
            max_pending_bytes: 1 << 20,
            awareness: AwarenessLimits::default(),
        }
    }
}

/// What the document's content is held as.
enum Content {
    /// A live `yrs::Doc`, which updates are integrated into. `full_state` is the whole document
    /// as one v1 update while nothing changed since it was encoded: every joiner with an empty
    /// state vector gets the same bytes, encoded once.
    Live {
        doc: Doc,
        full_state: Option<Arc<[u8]>>,
    },
    /// At rest (see [`DocumentState::rest`]): only the encoded state and its state vector, a
    /// fraction of what the live `Doc` holds in memory. Joiners are answered from them; the
    /// first update that changes anything brings the `Doc` back.
    AtRest {
        full_state: Arc<[u8]>,
        state_vector: Vec<u8>,
    },
}

pub struct DocumentState {
    content: Content,
    pub awareness: AwarenessTable,
    limits: DocumentLimits,
    /// Bytes of the updates left pending since the document last had nothing pending (an
    /// estimate of what yrs holds pending; yrs does not tell without re-encoding it).
    pending_bytes: usize,
}

impl Default for DocumentState {
    fn default() -> Self {
        Self::new()
    }
}

impl DocumentState {
    pub fn new() -> Self {
        Self::with_limits(DocumentLimits::default())
    }

    pub fn with_limits(limits: DocumentLimits) -> Self {
        // skip_gc stays off: the server keeps the document as small as the clients' view.
        DocumentState {
            content: Content::Live {
                doc: Doc::new(),
                full_state: None,
            },
            awareness: AwarenessTable::with_limits(limits.awareness),
            limits,
            pending_bytes: 0,
        }
    }

    /// Rebuilds a document from what the store returned (its snapshot, then its updates). An
    /// entry that cannot be applied is skipped and counted rather than making the whole
    /// document unloadable.
    pub fn restore<'a>(
        entries: impl IntoIterator<Item = &'a [u8]>,
        limits: DocumentLimits,
    ) -> (Self, usize) {
        let mut state = Self::with_limits(limits);
        let mut skipped = 0;
        for bytes in entries {
            if state.apply_update(bytes).is_err() {
                skipped += 1;
            }
        }
        (state, skipped)
    }

    /// The whole document as one Yjs v1 update, freshly copied (see [`Self::full_state`] for
    /// the shared one).
    pub fn encode_state(&self) -> Result<Vec<u8>, DocError> {
        match &self.content {
            Content::Live { doc, .. } => Self::encode_doc(doc),
            Content::AtRest { full_state, .. } => Ok(full_state.to_vec()),
        }
    }

    /// The whole document as one Yjs v1 update, shared: encoded at most once between two
    /// changes, however many joiners ask for it.
    pub fn full_state(&mut self) -> Result<Arc<[u8]>, DocError> {
        match &mut self.content {
            Content::Live { doc, full_state } => {
                if let Some(cached) = full_state {
                    return Ok(Arc::clone(cached));
                }
                let encoded: Arc<[u8]> = Self::encode_doc(doc)?.into();
                *full_state = Some(Arc::clone(&encoded));
                Ok(encoded)
            }
            Content::AtRest { full_state, .. } => Ok(Arc::clone(full_state)),
        }
    }

    fn encode_doc(doc: &Doc) -> Result<Vec<u8>, DocError> {
        #[cfg(test)]
        tests::FULL_ENCODES.with(|n| n.set(n.get() + 1));
        catch_unwind(AssertUnwindSafe(|| {
            doc.transact()
                .encode_state_as_update_v1(&StateVector::default())
        }))
        .map_err(|_| DocError::Poisoned)
    }

    /// Several broadcasts as one Yjs update, so a burst of keystrokes costs each reader one
    /// frame instead of one per keystroke. `None` when yrs cannot merge them (the caller then
    /// sends them one by one); they were produced by this document, so that is not expected.
    pub fn merge_broadcasts(updates: &[Vec<u8>]) -> Option<Vec<u8>> {
        catch_unwind(|| yrs::merge_updates_v1(updates))
            .ok()
            .and_then(Result::ok)
    }

    /// The live `yrs::Doc`; `None` while the document is at rest.
    pub fn live_doc(&self) -> Option<&Doc> {
        match &self.content {
            Content::Live { doc, .. } => Some(doc),
            Content::AtRest { .. } => None,
        }
    }

    /// What the document has integrated, per client.
    pub fn state_vector(&self) -> StateVector {
        match &self.content {
            Content::Live { doc, .. } => doc.transact().state_vector(),
            // Encoded by yrs from this document when it went to rest.
            Content::AtRest { state_vector, .. } => {
                StateVector::decode_v1(state_vector).unwrap_or_default()
            }
        }
    }
}
