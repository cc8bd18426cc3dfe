//! The firewall against what honest Yjs writes (must pass) and what attackers sent (must not).

use yrs::types::ToJson;
use yrs::updates::encoder::Encode;
use yrs::{
    Any, Array, ArrayPrelim, Doc, GetString, Map, MapPrelim, ReadTxn, StateVector, Text, Transact,
    WriteTxn, XmlElementPrelim, XmlFragment, XmlTextPrelim,
};

use super::*;

pub(crate) fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn check_alone(bytes: &[u8]) -> Result<(), Refusal> {
    check_update(bytes, &Limits::default(), &mut EmptyTree).map(|_| ())
}

fn full_state(doc: &Doc) -> Vec<u8> {
    doc.transact()
        .encode_state_as_update_v1(&StateVector::default())
}

/// lib0 helpers for hand-made updates.
fn var(out: &mut Vec<u8>, mut v: u64) {
    while v > 127 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn string(out: &mut Vec<u8>, s: &str) {
    var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// `depth` maps nested in each other under root map "root", all by `client` from `clock` on;
/// the first one's parent is `first_parent` (an item id) or the root.
pub(crate) fn nested_maps(
    client: u64,
    clock: u64,
    depth: u64,
    first_parent: Option<(u64, u64)>,
) -> Vec<u8> {
    let mut out = Vec::new();
    var(&mut out, 1);
    var(&mut out, depth);
    var(&mut out, client);
    var(&mut out, clock);
    for i in 0..depth {
        out.push(0x27); // ContentType | parentSub
        match (i, first_parent) {
            (0, None) => {
                var(&mut out, 1);
                string(&mut out, "root");
            }
            (0, Some((c, k))) => {
                var(&mut out, 0);
                var(&mut out, c);
                var(&mut out, k);
            }
            _ => {
                var(&mut out, 0);
                var(&mut out, client);
                var(&mut out, clock + i - 1);
            }
        }
        string(&mut out, "k");
        var(&mut out, 1); // YMap
    }
    out.push(0); // empty delete set
    out
}

#[test]
fn honest_edits_of_every_kind_pass() {
    let doc = Doc::with_client_id(7);
    let text = doc.get_or_insert_text("text");
    let map = doc.get_or_insert_map("map");
    let array = doc.get_or_insert_array("array");
    let xml = doc.get_or_insert_xml_fragment("prosemirror");
    let mut updates = Vec::new();
    {
        let mut txn = doc.transact_mut();
        text.insert(&mut txn, 0, "héllo wörld 😀");
        text.format(&mut txn, 0, 5, [("bold".into(), Any::Bool(true))].into());
        text.insert_embed(
            &mut txn,
            3,
            Any::from(
                vec![("src".to_string(), Any::from("x.png"))]
                    .into_iter()
                    .collect::<std::collections::HashMap<_, _>>(),
            ),
        );
        updates.push(txn.encode_update_v1());
    }
    {
        let mut txn = doc.transact_mut();
        text.remove_range(&mut txn, 1, 4);
        map.insert(&mut txn, "n", 1.5);
        map.insert(&mut txn, "i", -42i64);
        map.insert(&mut txn, "s", "str");
        map.insert(&mut txn, "b", vec![1u8, 2, 3]);
        map.insert(
            &mut txn,
            "nested",
            MapPrelim::from([("a".to_string(), Any::Null)]),
        );
        array.push_back(
            &mut txn,
            ArrayPrelim::from([Any::Bool(false), Any::Undefined]),
        );
        let p = xml.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
        p.push_back(&mut txn, XmlTextPrelim::new("in a paragraph"));
        updates.push(txn.encode_update_v1());
    }
    {
        let mut txn = doc.transact_mut();
        map.remove(&mut txn, "s");
        array.remove(&mut txn, 0);
        updates.push(txn.encode_update_v1());
    }
    for (i, update) in updates.iter().enumerate() {
        assert_eq!(check_alone(update).map_err(|e| (i, e)), Ok(()));
    }
    assert_eq!(check_alone(&full_state(&doc)), Ok(()));
    // A second client's concurrent edit, merged with the first: still honest.
    let other = Doc::with_client_id(8);
    other
        .get_or_insert_text("text")
        .insert(&mut other.transact_mut(), 0, "x");
    let merged = yrs::merge_updates_v1([full_state(&doc), full_state(&other)]).unwrap();
    assert_eq!(check_alone(&merged), Ok(()));
    // Sanity: the content is what we think it is.
    assert!(text.get_string(&doc.transact()).starts_with('h'));
    assert!(map.to_json(&doc.transact()).to_string().contains("nested"));
    let _ = doc.transact_mut().get_or_insert_map("unused");
}

#[test]
fn empty_update_and_state_vectors() {
    assert_eq!(check_alone(&[0, 0]), Ok(()));
    assert_eq!(check_state_vector(&[0]), Ok(()));
    let doc = Doc::with_client_id(123456789);
    doc.get_or_insert_text("t")
        .insert(&mut doc.transact_mut(), 0, "abc");
    assert_eq!(
        check_state_vector(&doc.transact().state_vector().encode_v1()),
        Ok(())
    );
    assert!(check_state_vector(&[0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
    assert!(check_state_vector(&[1, 1, 1, 0]).is_err(), "trailing byte");
    let mut big_client = vec![1];
    var(&mut big_client, 1 << 53);
    big_client.push(0);
    assert!(matches!(
        check_state_vector(&big_client),
        Err(Refusal::ClientIdTooLarge { .. })
    ));
}

#[test]
fn the_updates_that_broke_yrs_are_refused() {
    // Finding 3: an item whose right origin is itself (panicked inside a transaction).
    assert!(matches!(
        check_alone(&hex("01020000420000000100010000000000")),
        Err(Refusal::SelfReference { .. })
    ));
    // Finding 4: ContentJSON whose declared count disagrees with its strings.
    assert!(check_alone(&hex("0101a1c439000201086a736f6e726f6f7400017800")).is_err());
    // Finding 7: an ordinary insert by a client id of 2^53 + 1.
    let mut big = Vec::new();
    var(&mut big, 1);
    var(&mut big, 1);
    var(&mut big, (1 << 53) + 1);
    var(&mut big, 0);
    big.push(0x04);
    var(&mut big, 1);
    string(&mut big, "t");
    string(&mut big, "x");
    big.push(0);
    assert!(matches!(
        check_alone(&big),
        Err(Refusal::ClientIdTooLarge { .. })
    ));
}

#[test]
fn nesting_is_bounded_within_one_update() {
    assert_eq!(check_alone(&nested_maps(5, 0, 256, None)), Ok(()));
    assert!(matches!(
        check_alone(&nested_maps(5, 0, 257, None)),
        Err(Refusal::NestingTooDeep { depth: 257, .. })
    ));
    // Finding 2's size: 10,000 levels, refused without recursion.
    assert!(matches!(
        check_alone(&nested_maps(5, 0, 10_000, None)),
        Err(Refusal::NestingTooDeep { .. })
    ));
}

#[test]
fn a_nested_type_needs_a_known_parent() {
    // Hung from (9, 0), which is neither in the update nor in the (empty) document.
    assert_eq!(
        check_alone(&nested_maps(5, 0, 3, Some((9, 0)))),
        Err(Refusal::UnknownParent)
    );
}

#[test]
fn reference_cycles_leave_plain_items_pending_and_refuse_types() {
    // Client 2's item sits beside client 1's, and client 1's beside client 2's.
    let cycle = |kind: u8, content: &[u8]| {
        let mut out = Vec::new();
        var(&mut out, 2);
        for (client, other) in [(2u64, 1u64), (1, 2)] {
            var(&mut out, 1);
            var(&mut out, client);
            var(&mut out, 0);
            out.push(0x80 | kind); // origin
            var(&mut out, other);
            var(&mut out, 0);
            out.extend_from_slice(content);
        }
        out.push(0);
        out
    };
    let strings = cycle(0x04, b"\x01x");
    assert_eq!(check_alone(&strings), Ok(()));
    // yrs keeps them pending (and does not loop or crash); a late joiner loads the state.
    let mut state = crate::document::DocumentState::new();
    let applied = state.apply_update(&strings).unwrap();
    assert!(applied.store && applied.broadcast.is_none());
    let full = state.encode_state().unwrap();
    crate::document::DocumentState::new()
        .apply_update(&full)
        .unwrap();
    // A nested type on such a chain has no place at all.
    assert_eq!(check_alone(&cycle(0x07, &[1])), Err(Refusal::UnknownParent));
}

#[test]
fn malformed_structure_is_refused() {
    let ok = {
        let doc = Doc::with_client_id(3);
        doc.get_or_insert_text("t")
            .insert(&mut doc.transact_mut(), 0, "hi");
        full_state(&doc)
    };
    assert_eq!(check_alone(&ok), Ok(()));
    let mut trailing = ok.clone();
    trailing.push(0);
    assert!(matches!(
        check_alone(&trailing),
        Err(Refusal::TrailingBytes { .. })
    ));
    for cut in 1..ok.len() {
        assert!(check_alone(&ok[..cut]).is_err(), "prefix of {cut} bytes");
    }
    // The same client twice.
    let mut twice = vec![2];
    for _ in 0..2 {
        twice.extend_from_slice(&ok[1..ok.len() - 1]);
    }
    twice.push(0);
    assert!(matches!(
        check_alone(&twice),
        Err(Refusal::DuplicateClient { .. })
    ));
    // Counts that the bytes cannot back.
    assert!(matches!(
        check_alone(&[0xff, 0xff, 0x03, 0]),
        Err(Refusal::CountTooLarge { .. })
    ));
}

#[test]
fn items_inside_plain_content_are_refused() {
    // Found by the update_sequence fuzzer: a string item whose explicit parent is another
    // string item. yrs kept it, then refused to decode the document's own encoding ("block
    // parent must be deleted or shared ref type"), so no late joiner or restore could load it.
    let mut state = crate::document::DocumentState::new();
    state
        .apply_update(&hex("01018f848080801e0004010764656661756c74016100"))
        .unwrap();
    let parent_is_text = "01028f848080801e000400b96000020d0a24008f848080801e01016b03e280a800";
    assert_eq!(
        state.apply_update(&hex(parent_is_text)),
        Err(crate::document::DocError::Refused(Refusal::ParentNotAType))
    );
    // Inside a string of the document itself: refused too.
    let mut inside_doc = Vec::new();
    var(&mut inside_doc, 1);
    var(&mut inside_doc, 1);
    var(&mut inside_doc, 77);
    var(&mut inside_doc, 0);
    inside_doc.push(0x04);
    var(&mut inside_doc, 0);
    var(&mut inside_doc, (30 << 35) | (4 << 7) | 15);
    var(&mut inside_doc, 0);
    string(&mut inside_doc, "x");
    inside_doc.push(0);
    assert!(state.apply_update(&inside_doc).is_err());
    let full = state.encode_state().unwrap();
    crate::document::DocumentState::new()
        .apply_update(&full)
        .unwrap();
}

#[test]
fn structs_after_a_hole_are_logged_and_types_cannot_hang_from_the_hole() {
    // Found by the update_sequence fuzzer: a string of client 0 starting at clock 1 (clock 0
    // never sent). yrs integrates it after a Skip without moving the state vector, so it must
    // still be logged; and a nested type placed next to the hole (0, 0) must be refused, or
    // the document's full state would hold a type no fresh document can place.
    let mut state = crate::document::DocumentState::new();
    let after_hole = state
        .apply_update(&hex("010100010401086a736f6e726f6f740361620000"))
        .unwrap();
    assert!(after_hole.store, "an update after a hole is logged");
    assert!(matches!(
        state.apply_update(&hex("01010004c7000000000600")),
        Err(crate::document::DocError::Refused(Refusal::UnknownParent))
    ));
    let full = state.encode_state().unwrap();
    crate::document::DocumentState::new()
        .apply_update(&full)
        .unwrap();
}

#[test]
fn updates_that_reuse_pending_ids_with_other_structure_are_refused() {
    // Found by the update_sequence fuzzer: "a" at (c, 16) waits pending (clocks 0..16 never
    // came); a second update re-uses (c, 16) as a deleted range and hangs an item inside it.
    // yrs's pending merge kept "a", so the document's full state held an item inside plain
    // content, which no fresh document can load.
    let a_pending = hex("0101d1a31b1004010764656661756c74016102d1a31b010004d1a31b0201030102");
    let reuse = hex("0102d1a31b1081d1a31b0d030400d1a31b1003e280a801d1a31b020b040b04");
    let mut state = crate::document::DocumentState::new();
    state.apply_update(&a_pending).unwrap();
    assert!(state.has_pending());
    assert_eq!(
        state.apply_update(&reuse),
        Err(crate::document::DocError::Refused(
            Refusal::ConflictsWithPending {
                client: 446929,
                clock: 16
            }
        ))
    );
    // The same structs again (a reconnecting provider re-sends what is pending): accepted.
    state.apply_update(&a_pending).unwrap();
    let full = state.encode_state().unwrap();
    crate::document::DocumentState::new()
        .apply_update(&full)
        .unwrap();
}
