//! The document's sync rules, against real yrs documents.

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{Doc, GetString, ReadTxn, StateVector, Text, Transact, Update};

use super::*;
use crate::firewall::Refusal;

thread_local! {
    /// Whole-document encodings on this thread (tests run one per thread).
    pub static FULL_ENCODES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

pub(super) fn edit(client: u64, base: Option<&[u8]>, text: &str, at: u32) -> (Doc, Vec<u8>) {
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

/// The document's text, read from its encoded state (so it works at rest too).
pub(super) fn text(state: &DocumentState) -> String {
    let doc = Doc::new();
    let update = Update::decode_v1(&state.encode_state().unwrap()).unwrap();
    doc.transact_mut().apply_update(update).unwrap();
    let t = doc.get_or_insert_text("default");
    t.get_string(&doc.transact())
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
    assert_eq!(&diff[..], &EMPTY_UPDATE[..]);
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
        let sv = |s: &DocumentState| s.state_vector();
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
    let closing = "0103000004010764656661756c7401628467000568656c6c6f04010764656661756c74016100";
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
