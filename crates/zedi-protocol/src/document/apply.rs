//! The sync rules: answering a SyncStep1, and applying (or, for a read-only connection,
//! recognising) a client's update. The firewall runs first and alone, so nothing reaches yrs
//! before it passed.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ReadTxn, StateVector, Transact, Update};

use super::tree::StoreTree;
use super::{Applied, Content, DocError, DocumentLimits, DocumentState, EMPTY_UPDATE};
use crate::firewall;

impl DocumentState {
    /// Answer to a client's SyncStep1: our state vector (their SyncStep1) and what they lack
    /// (their SyncStep2). Pending structs are included, as y-protocols does. A client with an
    /// empty state vector (a first join) gets the shared full state; at rest, a reconnecting
    /// client's part is cut from the encoded state without bringing the `Doc` back.
    pub fn sync_step1_reply(
        &mut self,
        client_state_vector: &[u8],
    ) -> Result<(Vec<u8>, Arc<[u8]>), DocError> {
        firewall::check_state_vector(client_state_vector).map_err(DocError::RefusedStateVector)?;
        let sv = catch_unwind(|| StateVector::decode_v1(client_state_vector))
            .map_err(|_| DocError::BadStateVector)?
            .map_err(|_| DocError::BadStateVector)?;
        if sv.is_empty() {
            let full = self.full_state()?;
            return Ok((self.encoded_state_vector()?, full));
        }
        match &self.content {
            // Encoding merges pending updates, which yrs can panic on: contained, like applying.
            Content::Live { doc, .. } => catch_unwind(AssertUnwindSafe(|| {
                let txn = doc.transact();
                (
                    txn.state_vector().encode_v1(),
                    txn.encode_state_as_update_v1(&sv).into(),
                )
            }))
            .map_err(|_| DocError::Poisoned),
            Content::AtRest {
                full_state,
                state_vector,
            } => catch_unwind(|| yrs::diff_updates_v1(full_state, client_state_vector))
                .map_err(|_| DocError::Poisoned)?
                .map(|diff| (state_vector.clone(), diff.into()))
                .map_err(|_| DocError::Poisoned),
        }
    }

    /// The document's state vector, v1-encoded (what a SyncStep1 from us carries).
    pub fn encoded_state_vector(&self) -> Result<Vec<u8>, DocError> {
        match &self.content {
            Content::Live { doc, .. } => catch_unwind(AssertUnwindSafe(|| {
                doc.transact().state_vector().encode_v1()
            }))
            .map_err(|_| DocError::Poisoned),
            Content::AtRest { state_vector, .. } => Ok(state_vector.clone()),
        }
    }

    fn decode(update: &[u8]) -> Result<Update, DocError> {
        catch_unwind(|| Update::decode_v1(update))
            .map_err(|_| DocError::BadUpdate("decoder panicked".into()))?
            .map_err(|e| DocError::BadUpdate(e.to_string()))
    }

    /// The firewall, against this document: nothing reaches yrs before this passed. Returns
    /// whether the update leaves a hole before its structs (see `apply_update`).
    fn check(doc: &Doc, limits: &DocumentLimits, update: &[u8]) -> Result<bool, DocError> {
        let txn = doc.transact();
        let mut tree = StoreTree {
            store: txn.store(),
            // One past the limit, so "deeper than allowed" is still visible after saturating.
            cap: limits.firewall.max_nesting_depth.saturating_add(1),
            cache: HashMap::new(),
        };
        // What waits for missing predecessors takes part in reference cycles too. Encoding it
        // costs in proportion to what is pending, which `max_pending_bytes` bounds.
        let pending = txn.store().pending_update().map(|p| p.update.encode_v1());
        let checked = firewall::check_update_with_pending(
            update,
            pending.as_deref(),
            &limits.firewall,
            &mut tree,
        )
        .map_err(DocError::Refused)?;
        let known = txn.state_vector();
        Ok(checked
            .starts
            .iter()
            .any(|start| start.clock > known.get(&ClientID::new(start.client))))
    }

    /// Whether structs or deletions wait for missing predecessors.
    pub fn has_pending(&self) -> bool {
        let Content::Live { doc, .. } = &self.content else {
            return false; // a document with anything pending does not go to rest
        };
        pending_in(&doc.transact())
    }

    /// Applies a Yjs v1 update. The firewall and decoding happen first and alone, so a refused
    /// or malformed update never touches the document.
    ///
    /// Cost is in proportion to the update (plus what is pending, which is bounded): nothing
    /// here re-encodes the whole document.
    ///
    /// At rest, an update that changes nothing (the handshake SyncStep2 of a client that has
    /// nothing new) is answered without the `Doc`; anything else brings it back first.
    pub fn apply_update(&mut self, update: &[u8]) -> Result<Applied, DocError> {
        if self.is_at_rest() && update == EMPTY_UPDATE {
            return Ok(Applied {
                broadcast: None,
                store: false,
            });
        }
        self.revive()?;
        self.apply_live(update)
    }

    /// [`Self::apply_update`] on the live `Doc` (a no-op check if it is at rest: the caller
    /// revived it).
    pub(super) fn apply_live(&mut self, update: &[u8]) -> Result<Applied, DocError> {
        let Content::Live { doc, full_state } = &mut self.content else {
            return Err(DocError::Poisoned);
        };
        // A client's structs that start past what the document has of that client leave a
        // hole. They wait for it (pending, as in Yjs; upstream yrs integrated them behind a
        // Skip without moving the state vector, see vendor/yrs/PATCHES.md #13), and either way
        // they appear in no change set until the hole is filled: the update is logged like a
        // pending one, or an acknowledged update would not be durable.
        let leaves_hole = Self::check(doc, &self.limits, update)?;
        let decoded = Self::decode(update)?;
        let has_pending = pending_in(&doc.transact());
        if self.pending_bytes > 0 && (has_pending || leaves_hole) {
            let waiting = self.pending_bytes.saturating_add(update.len());
            if waiting > self.limits.max_pending_bytes {
                return Err(DocError::TooMuchPending(self.pending_bytes));
            }
        }
        // From here on the document may change: the shared full state is stale.
        *full_state = None;
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = doc.transact_mut();
            txn.apply_update(decoded)
                .map_err(|e| DocError::BadUpdate(e.to_string()))?;
            let pending = pending_in(&txn);
            let changes = txn.encode_update_v1();
            Ok::<_, DocError>((changes, pending))
        }))
        .map_err(|_| DocError::Poisoned)??;
        let (changes, pending) = outcome;
        let pending = pending || leaves_hole;
        self.pending_bytes = if pending {
            self.pending_bytes.saturating_add(update.len())
        } else {
            0
        };
        let changed = changes != EMPTY_UPDATE;
        // What yrs made of an accepted update is what late joiners and other clients will
        // read: it must pass the same encoding checks. It always should (the input was
        // canonical); if it does not, yrs has a bug, the in-memory document is suspect, and the
        // update is neither acknowledged, stored nor broadcast.
        if changed && firewall::check_encoding(&changes, &self.limits.firewall).is_err() {
            return Err(DocError::Poisoned);
        }
        Ok(Applied {
            broadcast: changed.then_some(changes),
            store: changed || pending,
        })
    }

    /// For a read-only connection: true when the update holds nothing the document lacks (the
    /// provider's handshake SyncStep2 usually), which is acknowledged rather than refused.
    pub fn contains_update(&mut self, update: &[u8]) -> Result<bool, DocError> {
        if self.is_at_rest() && update == EMPTY_UPDATE {
            return Ok(true);
        }
        self.revive()?;
        let Content::Live { doc, .. } = &self.content else {
            return Err(DocError::Poisoned);
        };
        Self::check(doc, &self.limits, update)?;
        let decoded = Self::decode(update)?;
        catch_unwind(AssertUnwindSafe(|| {
            let txn = doc.transact();
            let known_structs = !decoded.extends(&txn.state_vector());
            let known_deletes = decoded
                .delete_set()
                .diff(&txn.snapshot().delete_set)
                .is_empty();
            known_structs && known_deletes
        }))
        .map_err(|_| DocError::Poisoned)
    }
}

/// Whether structs or deletions in `txn`'s document wait for missing predecessors.
fn pending_in<T: ReadTxn>(txn: &T) -> bool {
    txn.store().pending_update().is_some() || txn.store().pending_ds().is_some()
}
