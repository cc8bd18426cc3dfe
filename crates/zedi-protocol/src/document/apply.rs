//! The sync rules: answering a SyncStep1, and applying (or, for a read-only connection,
//! recognising) a client's update. The firewall runs first and alone, so nothing reaches yrs
//! before it passed.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, ReadTxn, StateVector, Transact, Update};

use super::tree::StoreTree;
use super::{Applied, DocError, DocumentState, EMPTY_UPDATE};
use crate::firewall;

impl DocumentState {
    /// Answer to a client's SyncStep1: our state vector (their SyncStep1) and what they lack
    /// (their SyncStep2). Pending structs are included, as y-protocols does.
    pub fn sync_step1_reply(
        &self,
        client_state_vector: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), DocError> {
        firewall::check_state_vector(client_state_vector).map_err(DocError::RefusedStateVector)?;
        let sv = catch_unwind(|| StateVector::decode_v1(client_state_vector))
            .map_err(|_| DocError::BadStateVector)?
            .map_err(|_| DocError::BadStateVector)?;
        // Encoding merges pending updates, which yrs can panic on: contained, like applying.
        catch_unwind(AssertUnwindSafe(|| {
            let txn = self.doc.transact();
            (
                txn.state_vector().encode_v1(),
                txn.encode_state_as_update_v1(&sv),
            )
        }))
        .map_err(|_| DocError::Poisoned)
    }

    fn decode(update: &[u8]) -> Result<Update, DocError> {
        catch_unwind(|| Update::decode_v1(update))
            .map_err(|_| DocError::BadUpdate("decoder panicked".into()))?
            .map_err(|e| DocError::BadUpdate(e.to_string()))
    }

    /// The firewall, against this document: nothing reaches yrs before this passed. Returns
    /// whether the update leaves a hole before its structs (see `apply_update`).
    fn check(&self, update: &[u8]) -> Result<bool, DocError> {
        let txn = self.doc.transact();
        let mut tree = StoreTree {
            store: txn.store(),
            // One past the limit, so "deeper than allowed" is still visible after saturating.
            cap: self.limits.firewall.max_nesting_depth.saturating_add(1),
            cache: HashMap::new(),
        };
        // What waits for missing predecessors takes part in reference cycles too. Encoding it
        // costs in proportion to what is pending, which `max_pending_bytes` bounds.
        let pending = txn.store().pending_update().map(|p| p.update.encode_v1());
        let checked = firewall::check_update_with_pending(
            update,
            pending.as_deref(),
            &self.limits.firewall,
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
        let txn = self.doc.transact();
        txn.store().pending_update().is_some() || txn.store().pending_ds().is_some()
    }

    /// Applies a Yjs v1 update. The firewall and decoding happen first and alone, so a refused
    /// or malformed update never touches the document.
    ///
    /// Cost is in proportion to the update (plus what is pending, which is bounded): nothing
    /// here re-encodes the whole document.
    pub fn apply_update(&mut self, update: &[u8]) -> Result<Applied, DocError> {
        // A client's structs that start past what the document has of that client leave a
        // hole. They wait for it (pending, as in Yjs; upstream yrs integrated them behind a
        // Skip without moving the state vector, see vendor/yrs/PATCHES.md #13), and either way
        // they appear in no change set until the hole is filled: the update is logged like a
        // pending one, or an acknowledged update would not be durable.
        let leaves_hole = self.check(update)?;
        let decoded = Self::decode(update)?;
        if self.pending_bytes > 0 && (self.has_pending() || leaves_hole) {
            let waiting = self.pending_bytes.saturating_add(update.len());
            if waiting > self.limits.max_pending_bytes {
                return Err(DocError::TooMuchPending(self.pending_bytes));
            }
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            let mut txn = self.doc.transact_mut();
            txn.apply_update(decoded)
                .map_err(|e| DocError::BadUpdate(e.to_string()))?;
            let pending =
                txn.store().pending_update().is_some() || txn.store().pending_ds().is_some();
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
    pub fn contains_update(&self, update: &[u8]) -> Result<bool, DocError> {
        self.check(update)?;
        let decoded = Self::decode(update)?;
        catch_unwind(AssertUnwindSafe(|| {
            let txn = self.doc.transact();
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
