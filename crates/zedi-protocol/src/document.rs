//! The content of one document and the sync rules applied to it, free of actors and sockets
//! (the y-sweet shape): the actor decides *when*, this decides *what*.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{ClientID, Doc, ID, NestingLookup, ReadTxn, StateVector, Store, Transact, Update};

use crate::awareness::{AwarenessLimits, AwarenessTable};
use crate::firewall::{self, Placement, Refusal, Tree};

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
    pub fn kind(&self) -> &'static str {
        match self {
            DocError::Refused(_) | DocError::RefusedStateVector(_) => "invalid_update",
            DocError::TooMuchPending(_) => "pending_limit",
            DocError::BadStateVector => "bad_state_vector",
            DocError::BadUpdate(_) => "bad_update",
            DocError::Poisoned => "poisoned_update",
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

pub struct DocumentState {
    doc: Doc,
    pub awareness: AwarenessTable,
    limits: DocumentLimits,
    /// Bytes of the updates left pending since the document last had nothing pending (an
    /// estimate of what yrs holds pending; yrs does not tell without re-encoding it).
    pending_bytes: usize,
}

/// The document as the firewall sees it: where ids an update refers to already sit.
struct StoreTree<'a> {
    store: &'a Store,
    cap: u32,
    cache: HashMap<usize, u32>,
}

impl Tree for StoreTree<'_> {
    fn placement(&mut self, id: firewall::Id) -> Placement {
        // The firewall only passes ids below 2^53, which `ClientID::new` represents exactly.
        let id = ID::new(ClientID::new(id.client), id.clock);
        match self.store.nesting_of(&id, self.cap, &mut self.cache) {
            NestingLookup::Missing => Placement::Missing,
            NestingLookup::Collected => Placement::Collected,
            NestingLookup::Item {
                parent_depth,
                is_type,
                is_deleted,
            } => Placement::Item {
                parent_depth,
                is_type,
                is_deleted,
            },
        }
    }
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
            doc: Doc::new(),
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

    /// The whole document as one Yjs v1 update.
    pub fn encode_state(&self) -> Result<Vec<u8>, DocError> {
        #[cfg(test)]
        tests::FULL_ENCODES.with(|n| n.set(n.get() + 1));
        catch_unwind(AssertUnwindSafe(|| {
            self.doc
                .transact()
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

    pub fn doc(&self) -> &Doc {
        &self.doc
    }

    /// What the document has integrated, per client.
    pub fn state_vector(&self) -> StateVector {
        self.doc.transact().state_vector()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::{GetString, Text};

    thread_local! {
        /// Whole-document encodings on this thread (tests run one per thread).
        pub static FULL_ENCODES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn edit(client: u64, base: Option<&[u8]>, text: &str, at: u32) -> (Doc, Vec<u8>) {
        let doc = Doc::with_client_id(client);
        let t = doc.get_or_insert_text("default");
        if let Some(base) = base {
            doc.transact_mut()
                .apply_update(Update::decode_v1(base).unwrap())
                .unwrap();
        }
        let mut txn = doc.transact_mut();
        t.insert(&mut txn, at, text);
        let update = txn.encode_update_v1();
        drop(txn);
        (doc, update)
    }

    fn text(state: &DocumentState) -> String {
        let t = state.doc.get_or_insert_text("default");
        t.get_string(&state.doc.transact())
    }

    #[test]
    fn merged_broadcasts_carry_every_change_in_one_update() {
        let mut state = DocumentState::new();
        let (writer, first) = edit(1, None, "ab", 0);
        let mut broadcasts = vec![state.apply_update(&first).unwrap().broadcast.unwrap()];
        // A second client edits on top of the first, a third concurrently.
        let (_, second) = edit(2, Some(&first), "XY", 1);
        broadcasts.push(state.apply_update(&second).unwrap().broadcast.unwrap());
        let (_, third) = edit(3, None, "z", 0);
        broadcasts.push(state.apply_update(&third).unwrap().broadcast.unwrap());
        drop(writer);
        let merged = DocumentState::merge_broadcasts(&broadcasts).unwrap();
        let mut reader = DocumentState::new();
        let applied = reader.apply_update(&merged).unwrap();
        assert!(applied.broadcast.is_some());
        assert_eq!(text(&reader), text(&state));
        assert_eq!(text(&reader).len(), 5);
        assert!(DocumentState::merge_broadcasts(&[vec![0xff, 0xff]]).is_none());
    }

    #[test]
    fn apply_broadcasts_new_content_and_not_duplicates() {
        let mut state = DocumentState::new();
        let (_, update) = edit(1, None, "hello", 0);
        let first = state.apply_update(&update).unwrap();
        assert!(first.broadcast.is_some() && first.store);
        assert_eq!(text(&state), "hello");
        let again = state.apply_update(&update).unwrap();
        assert_eq!(
            again,
            Applied {
                broadcast: None,
                store: false
            }
        );
    }

    #[test]
    fn pending_updates_are_stored_and_released_later() {
        let mut state = DocumentState::new();
        let (_, first) = edit(1, None, "ab", 0);
        let (_, second) = edit(1, Some(&first), "cd", 2);
        let out = state.apply_update(&second).unwrap();
        assert!(out.broadcast.is_none(), "nothing integrated yet");
        assert!(out.store, "a pending update must still be logged");
        let out = state.apply_update(&first).unwrap();
        assert!(out.broadcast.is_some());
        assert_eq!(text(&state), "abcd");
        // The broadcast carries the unblocked update too.
        let mut other = DocumentState::new();
        other.apply_update(&out.broadcast.unwrap()).unwrap();
        assert_eq!(text(&other), "abcd");
    }

    #[test]
    fn malformed_updates_are_refused_without_touching_the_document() {
        let mut state = DocumentState::new();
        let (_, update) = edit(1, None, "keep", 0);
        state.apply_update(&update).unwrap();
        for garbage in [
            &[0xff, 0xff, 0xff][..],
            &[1, 1, 0x80],
            &update[..update.len() - 3],
        ] {
            assert!(
                matches!(state.apply_update(garbage), Err(DocError::Refused(_))),
                "{garbage:?}"
            );
        }
        assert_eq!(text(&state), "keep");
        assert_eq!(
            state.sync_step1_reply(&[0xff]),
            Err(DocError::RefusedStateVector(Refusal::Truncated { at: 1 }))
        );
    }

    #[test]
    fn sync_step1_reply_gives_the_missing_part() {
        let mut state = DocumentState::new();
        let (client, update) = edit(7, None, "abc", 0);
        state.apply_update(&update).unwrap();
        let (server_sv, diff) = state.sync_step1_reply(&[0]).unwrap();
        assert!(!server_sv.is_empty());
        let mut fresh = DocumentState::new();
        fresh.apply_update(&diff).unwrap();
        assert_eq!(text(&fresh), "abc");
        // A client that has everything gets an empty diff.
        let sv = client.transact().state_vector().encode_v1();
        let (_, diff) = state.sync_step1_reply(&sv).unwrap();
        assert_eq!(diff, EMPTY_UPDATE);
    }

    #[test]
    fn contains_update_tells_known_from_new() {
        let mut state = DocumentState::new();
        let (client, update) = edit(3, None, "abc", 0);
        state.apply_update(&update).unwrap();
        assert!(state.contains_update(&update).unwrap());
        assert!(state.contains_update(&EMPTY_UPDATE).unwrap());
        let (_, newer) = edit(
            4,
            Some(
                &client
                    .transact()
                    .encode_state_as_update_v1(&StateVector::default()),
            ),
            "x",
            0,
        );
        assert!(!state.contains_update(&newer).unwrap());
    }

    #[test]
    fn nesting_counts_what_the_document_already_holds() {
        use crate::firewall::tests::nested_maps;
        let mut state = DocumentState::new();
        state.apply_update(&nested_maps(5, 0, 200, None)).unwrap();
        // 56 more levels under the innermost map reach the limit exactly...
        state
            .apply_update(&nested_maps(6, 0, 56, Some((5, 199))))
            .unwrap();
        // ...one more under it is refused, and so is a long chain in small steps.
        let err = state
            .apply_update(&nested_maps(7, 0, 1, Some((6, 55))))
            .unwrap_err();
        assert!(
            matches!(
                err,
                DocError::Refused(Refusal::NestingTooDeep { depth: 257, .. })
            ),
            "{err:?}"
        );
        // Siblings at a shallow level are still fine.
        state
            .apply_update(&nested_maps(8, 0, 3, Some((5, 10))))
            .unwrap();
        // Deleting the outermost map (a recursive delete in yrs) stays within the stack.
        let mut delete = vec![0, 1, 5, 1, 0, 1];
        delete.truncate(6);
        state.apply_update(&delete).unwrap();
        let fresh_bytes = state.encode_state().unwrap();
        DocumentState::new().apply_update(&fresh_bytes).unwrap();
    }

    #[test]
    fn pending_updates_cost_their_own_size_and_are_bounded() {
        let mut state = DocumentState::with_limits(DocumentLimits {
            max_pending_bytes: 64,
            ..DocumentLimits::default()
        });
        let big = "x".repeat(1 << 20);
        let (_, update) = edit(1, None, &big, 0);
        state.apply_update(&update).unwrap();
        let before = FULL_ENCODES.with(|n| n.get());
        // Deletes of a client the document has never seen wait (pending) for it.
        let mut refused = 0;
        for clock in 0..40u8 {
            let pending = [0, 1, 0xa8, 0xb6, 0x2f, 1, clock * 2, 1];
            match state.apply_update(&pending) {
                Ok(applied) => assert!(applied.store && applied.broadcast.is_none()),
                Err(DocError::TooMuchPending(_)) => refused += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!(
            FULL_ENCODES.with(|n| n.get()),
            before,
            "a pending update must not re-encode the whole document"
        );
        assert!(refused > 0, "pending bytes are bounded");
        assert_eq!(text(&state).len(), 1 << 20);
    }

    /// Found by the update_sequence fuzzer: a client re-using ids with different content, once
    /// pending (behind a missing dependency) and once integrated. The late joiner must load
    /// exactly what the document holds (yrs merged the stale pending copy in first).
    #[test]
    fn ids_reused_with_other_content_do_not_split_late_joiners_from_the_document() {
        use crate::firewall::tests::hex;
        let sequences: [&[&str]; 2] = [
            &[
                "0102650004010474657874016144b9600004c3a9626200",
                "01010200c465006501016200",
                "0101020004010009e4b8ade69687e280a800",
            ],
            &[
                "0101000081b96000040100010301",
                "0102000004010764656661756c74020d0a04010764656661756c74016200",
            ],
        ];
        for sequence in sequences {
            let mut state = DocumentState::new();
            for update in sequence {
                // As the fuzzer (and a read-only connection, and a handshake) would interleave.
                let _ = state.contains_update(&hex(update));
                let _ = state.apply_update(&hex(update));
                let _ = state.sync_step1_reply(&[0]);
            }
            let mut joiner = DocumentState::new();
            joiner.apply_update(&state.encode_state().unwrap()).unwrap();
            let sv = |s: &DocumentState| s.doc.transact().state_vector();
            assert_eq!(sv(&joiner), sv(&state), "{sequence:?}");
        }
    }

    /// Found by the update_sequence fuzzer: two structs that stay pending because each one's
    /// origin is inside the other (sent in different updates). Both stay pending, and the
    /// document's full state (which carries pending structs) still loads through the firewall,
    /// as a restore from a snapshot must.
    #[test]
    fn a_reference_cycle_through_pending_structs_stays_pending_and_reloads() {
        use crate::firewall::tests::hex;
        let mut state = DocumentState::new();
        // (103, 0) "a" after (0, 5): pending, client 0 is unknown.
        state.apply_update(&hex("01016700840005016100")).unwrap();
        // Client 0 from clock 0: "b", then "hello" (clocks 1..=5) after (103, 0): a cycle.
        let closing =
            "0103000004010764656661756c7401628467000568656c6c6f04010764656661756c74016100";
        let applied = state.apply_update(&hex(closing)).unwrap();
        assert!(applied.store, "kept (pending) and logged");
        let full = state.encode_state().unwrap();
        DocumentState::new().apply_update(&full).unwrap();
    }

    #[test]
    fn restore_rebuilds_and_skips_corrupt_entries() {
        let (_, a) = edit(1, None, "one", 0);
        let corrupt = vec![0xde, 0xad];
        let entries = [a.as_slice(), corrupt.as_slice()];
        let (state, skipped) = DocumentState::restore(entries, DocumentLimits::default());
        assert_eq!(skipped, 1);
        assert_eq!(text(&state), "one");
    }
}
