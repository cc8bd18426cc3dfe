//! Documents at rest: an idle document keeps its encoded state instead of a live `yrs::Doc`.
//!
//! A live `Doc` holds every item as a struct with its links, ids and content: about nine
//! times the document's encoded size. In a notes app most open documents are idle tabs, so
//! those, not sockets, decide how many users a node holds. At rest the document is its v1
//! encoding (what every joiner with an empty state vector is sent anyway, so it doubles as
//! the shared SyncStep2) and its state vector. v1 rather than the often smaller v2: a joiner
//! is always sent v1, and serving it from v2 would convert per join.

use std::sync::Arc;

use yrs::Doc;

use super::{Content, DocError, DocumentState};

impl DocumentState {
    /// Whether only the encoded state is held.
    pub fn is_at_rest(&self) -> bool {
        matches!(self.content, Content::AtRest { .. })
    }

    /// Puts the document to rest: drops the live `Doc` and keeps its encoded state and state
    /// vector, and returns their size in bytes. `Ok(None)` when it is at rest already or cannot
    /// go: something is pending (waiting inside yrs for missing predecessors, which the
    /// encoding would not keep apart).
    pub fn rest(&mut self) -> Result<Option<usize>, DocError> {
        if self.is_at_rest() || self.has_pending() {
            return Ok(None);
        }
        let full_state = self.full_state()?;
        let state_vector = self.encoded_state_vector()?;
        let kept = full_state.len() + state_vector.len();
        self.content = Content::AtRest {
            full_state,
            state_vector,
        };
        Ok(Some(kept))
    }

    /// Brings a document at rest back to a live `Doc` (a no-op when it is live). Its encoded
    /// state goes through the firewall like any update: it was made by yrs from checked
    /// updates, but a load from the store is treated the same way. On failure the document
    /// stays at rest, untouched, and the caller reloads it from the store.
    pub(super) fn revive(&mut self) -> Result<(), DocError> {
        let Content::AtRest { full_state, .. } = &self.content else {
            return Ok(());
        };
        let encoded = Arc::clone(full_state);
        let at_rest = std::mem::replace(
            &mut self.content,
            Content::Live {
                doc: Doc::new(),
                full_state: None,
            },
        );
        match self.apply_live(&encoded) {
            Ok(_) if !self.has_pending() => {
                // Same content as the encoding: it stays the shared full state.
                if let Content::Live { full_state, .. } = &mut self.content {
                    *full_state = Some(encoded);
                }
                self.pending_bytes = 0;
                Ok(())
            }
            _ => {
                self.content = at_rest;
                Err(DocError::Poisoned)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use yrs::updates::encoder::Encode;
    use yrs::{ReadTxn, Transact};

    use super::super::tests::{FULL_ENCODES, edit, text};
    use super::super::{DocError, DocumentState, EMPTY_UPDATE};

    fn typed(words: usize) -> (DocumentState, yrs::Doc) {
        let mut state = DocumentState::new();
        let (mut writer, first) = edit(1, None, "start ", 0);
        state.apply_update(&first).unwrap();
        for i in 0..words {
            let base = writer
                .transact()
                .encode_state_as_update_v1(&Default::default());
            let (next, update) = edit(1, Some(&base), &format!("w{i} "), 0);
            state.apply_update(&update).unwrap();
            writer = next;
        }
        (state, writer)
    }

    #[test]
    fn a_document_at_rest_answers_joiners_like_the_live_one() {
        let (mut state, writer) = typed(50);
        let live_full = state.sync_step1_reply(&[0]).unwrap();
        let partial_sv = {
            let (early, _) = edit(1, None, "start ", 0);
            early.transact().state_vector().encode_v1()
        };
        let live_partial = state.sync_step1_reply(&partial_sv).unwrap();
        let kept = state.rest().unwrap().expect("went to rest");
        assert!(state.is_at_rest() && state.live_doc().is_none());
        assert_eq!(kept, live_full.1.len() + live_full.0.len());
        assert_eq!(state.rest().unwrap(), None, "already at rest");

        let rest_full = state.sync_step1_reply(&[0]).unwrap();
        assert_eq!(rest_full, live_full, "a first join gets the same bytes");
        let rest_partial = state.sync_step1_reply(&partial_sv).unwrap();
        assert_eq!(rest_partial.0, live_partial.0);
        // The cut may order things differently from yrs's own diff; what the joiner ends up
        // with must be the same.
        let mut joiner = DocumentState::new();
        let (base, _) = edit(1, None, "start ", 0);
        let base = base
            .transact()
            .encode_state_as_update_v1(&Default::default());
        joiner.apply_update(&base).unwrap();
        joiner.apply_update(&rest_partial.1).unwrap();
        assert_eq!(text(&joiner), text(&state));
        assert_eq!(joiner.state_vector(), writer.transact().state_vector());
        assert!(state.is_at_rest(), "answering joiners does not wake it");
    }

    #[test]
    fn the_full_state_is_encoded_once_for_every_joiner() {
        let (mut state, _) = typed(20);
        let before = FULL_ENCODES.with(|n| n.get());
        let first = state.sync_step1_reply(&[0]).unwrap().1;
        for _ in 0..10 {
            let again = state.sync_step1_reply(&[0]).unwrap().1;
            assert!(std::sync::Arc::ptr_eq(&first, &again), "shared, not copied");
        }
        assert_eq!(FULL_ENCODES.with(|n| n.get()), before + 1);
        // A change makes it stale.
        let (_, update) = edit(9, None, "x", 0);
        state.apply_update(&update).unwrap();
        let after = state.sync_step1_reply(&[0]).unwrap().1;
        assert_ne!(after, first);
        assert_eq!(FULL_ENCODES.with(|n| n.get()), before + 2);
    }

    #[test]
    fn the_first_change_brings_the_document_back() {
        let (mut state, _) = typed(10);
        let before = text(&state);
        state.rest().unwrap().unwrap();
        // The handshake's empty SyncStep2 changes nothing and leaves it at rest.
        let nothing = state.apply_update(&EMPTY_UPDATE).unwrap();
        assert!(nothing.broadcast.is_none() && !nothing.store);
        assert!(state.contains_update(&EMPTY_UPDATE).unwrap());
        assert!(state.is_at_rest());
        // A garbage update is refused by the firewall after the revival; content is kept.
        assert!(matches!(
            state.apply_update(&[0xff, 0xff]),
            Err(DocError::Refused(_))
        ));
        assert_eq!(text(&state), before);
        state.rest().unwrap().unwrap();
        let (_, update) = edit(2, None, "new ", 0);
        let applied = state.apply_update(&update).unwrap();
        assert!(applied.store && applied.broadcast.is_some());
        assert!(!state.is_at_rest());
        // Concurrent with everything before it: Yjs orders it by client id.
        let after = text(&state);
        assert_eq!(after.len(), before.len() + 4);
        assert_eq!(after.replacen("new ", "", 1), before);
        // Known again after the revival: nothing to store.
        let again = state.apply_update(&update).unwrap();
        assert!(again.broadcast.is_none() && !again.store);
    }

    #[test]
    fn a_document_with_pending_updates_stays_live() {
        let mut state = DocumentState::new();
        let (_, first) = edit(1, None, "ab", 0);
        let (_, second) = edit(1, Some(&first), "cd", 2);
        state.apply_update(&second).unwrap();
        assert_eq!(state.rest().unwrap(), None);
        assert!(!state.is_at_rest());
        state.apply_update(&first).unwrap();
        assert!(state.rest().unwrap().is_some());
        assert_eq!(text(&state), "abcd");
    }
}
