//! What history needs from Yjs: how much one update inserted and deleted (attribution), and the
//! update that makes a document equal to an earlier state (restore).
//!
//! A restore cannot undo in place: Yjs never resurrects a deleted item. So, as Tiptap's and
//! y-prosemirror's restores do, it is a new change: every root field is emptied and the earlier
//! content is inserted again as new items (nested types cloned deeply), in one transaction on a
//! scratch copy whose encoded update is then applied like any client's, through the firewall.

use std::panic::{AssertUnwindSafe, catch_unwind};

use yrs::types::text::Diff;
use yrs::types::xml::{XmlFragment, XmlIn, XmlOut};
use yrs::types::{AsPrelim, Attrs};
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayRef, Doc, Map, MapRef, Out, ReadTxn, Text, TextRef, Transact, Update,
    XmlFragmentRef,
};

use super::export::{FieldKind, classify};
use super::{DocError, DocumentLimits, DocumentState};

/// Units (characters, as Yjs counts them, or items) an update inserts and deletes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UpdateCounts {
    pub inserted: u64,
    pub deleted: u64,
}

/// What `update` (a stored, so already validated, v1 update) inserts and deletes; `None` when
/// it does not decode.
pub fn update_counts(update: &[u8]) -> Option<UpdateCounts> {
    let decoded = catch_unwind(|| Update::decode_v1(update)).ok()?.ok()?;
    let count = |set: &yrs::IdSet| -> u64 {
        set.iter()
            .map(|(_, ranges)| {
                ranges
                    .iter()
                    .map(|r| u64::from(r.end.saturating_sub(r.start)))
                    .sum::<u64>()
            })
            .sum()
    };
    Some(UpdateCounts {
        inserted: count(&decoded.insertions(false)),
        deleted: count(decoded.delete_set()),
    })
}

/// The update that turns `current` (a document's encoded state) into a document whose
/// content equals `target` (an earlier encoded state), as a new change: later edits merge on
/// top of it as Yjs merges any concurrent change. Both pass the firewall on the way in.
pub fn revert_update(
    current: &[u8],
    target: &[u8],
    limits: DocumentLimits,
) -> Result<Vec<u8>, DocError> {
    let (scratch, _) = DocumentState::restore([current], limits);
    let (earlier, skipped) = DocumentState::restore([target], limits);
    if skipped > 0 {
        return Err(DocError::Poisoned);
    }
    let (Some(scratch), Some(earlier)) = (scratch.live_doc(), earlier.live_doc()) else {
        return Err(DocError::Poisoned);
    };
    catch_unwind(AssertUnwindSafe(|| revert(scratch, earlier))).map_err(|_| DocError::Poisoned)
}

/// One root field, with the kind its restored content has.
struct Field {
    name: String,
    kind: FieldKind,
}

fn fields(doc: &Doc) -> Vec<Field> {
    let txn = doc.transact();
    txn.root_refs()
        .filter_map(|(name, out)| {
            let branch = match out {
                Out::UndefinedRef(b) => b,
                _ => return None,
            };
            Some(Field {
                name: name.to_string(),
                kind: classify(branch, &txn),
            })
        })
        .collect()
}

fn revert(scratch: &Doc, earlier: &Doc) -> Vec<u8> {
    let now = fields(scratch);
    let then = fields(earlier);
    // The kind each field is handled as: the earlier content's, else (emptied since) today's.
    let mut plan: Vec<(String, FieldKind)> =
        then.iter().map(|f| (f.name.clone(), f.kind)).collect();
    for field in &now {
        match plan.iter_mut().find(|(name, _)| *name == field.name) {
            Some((_, kind)) if *kind == FieldKind::Empty => *kind = field.kind,
            Some(_) => {}
            None => plan.push((field.name.clone(), field.kind)),
        }
    }
    // Typed handles first: `get_or_insert_*` opens a transaction of its own.
    enum Handle {
        Text(TextRef, Option<TextRef>),
        Map(MapRef, Option<MapRef>),
        Array(ArrayRef, Option<ArrayRef>),
        Fragment(XmlFragmentRef, Option<XmlFragmentRef>),
    }
    let had = |name: &str| {
        then.iter()
            .any(|f| f.name == name && f.kind != FieldKind::Empty)
    };
    let handles: Vec<Handle> = plan
        .iter()
        .filter_map(|(name, kind)| {
            let source = had(name);
            Some(match kind {
                FieldKind::Text => Handle::Text(
                    scratch.get_or_insert_text(name.as_str()),
                    source.then(|| earlier.get_or_insert_text(name.as_str())),
                ),
                FieldKind::Map => Handle::Map(
                    scratch.get_or_insert_map(name.as_str()),
                    source.then(|| earlier.get_or_insert_map(name.as_str())),
                ),
                FieldKind::Array => Handle::Array(
                    scratch.get_or_insert_array(name.as_str()),
                    source.then(|| earlier.get_or_insert_array(name.as_str())),
                ),
                FieldKind::XmlFragment => Handle::Fragment(
                    scratch.get_or_insert_xml_fragment(name.as_str()),
                    source.then(|| earlier.get_or_insert_xml_fragment(name.as_str())),
                ),
                FieldKind::Empty => return None,
            })
        })
        .collect();
    let read = earlier.transact();
    let mut txn = scratch.transact_mut();
    for handle in handles {
        match handle {
            Handle::Text(now, then) => {
                let len = now.len(&txn);
                now.remove_range(&mut txn, 0, len);
                let Some(then) = then else { continue };
                let runs: Vec<Diff<()>> = then.diff(&read, |_| ());
                let mut at = 0;
                for run in runs {
                    match run.insert {
                        Out::Any(Any::String(s)) => {
                            // In the document's own offset unit, whatever it is.
                            let before = now.len(&txn);
                            match run.attributes {
                                Some(attrs) => now.insert_with_attributes(&mut txn, at, &s, *attrs),
                                None => now.insert(&mut txn, at, &s),
                            }
                            at += now.len(&txn) - before;
                        }
                        Out::Any(embed) => {
                            now.insert_embed_with_attributes(
                                &mut txn,
                                at,
                                embed,
                                run.attributes.map_or_else(Attrs::new, |a| *a),
                            );
                            at += 1;
                        }
                        _ => {}
                    }
                }
            }
            Handle::Map(now, then) => {
                let keys: Vec<String> = now.keys(&txn).map(str::to_string).collect();
                let earlier_entries: Vec<(String, Out)> = then.map_or_else(Vec::new, |t| {
                    t.iter(&read).map(|(k, v)| (k.to_string(), v)).collect()
                });
                for key in keys {
                    if !earlier_entries.iter().any(|(k, _)| *k == key) {
                        now.remove(&mut txn, &key);
                    }
                }
                for (key, value) in earlier_entries {
                    now.insert(&mut txn, key, value.as_prelim(&read));
                }
            }
            Handle::Array(now, then) => {
                let len = now.len(&txn);
                now.remove_range(&mut txn, 0, len);
                if let Some(then) = then {
                    let items: Vec<Out> = then.iter(&read).collect();
                    for item in items {
                        now.push_back(&mut txn, item.as_prelim(&read));
                    }
                }
            }
            Handle::Fragment(now, then) => {
                let len = now.len(&txn);
                now.remove_range(&mut txn, 0, len);
                if let Some(then) = then {
                    let children: Vec<XmlOut> = then.children(&read).collect();
                    for child in children {
                        let node: XmlIn = match child {
                            XmlOut::Element(e) => e.as_prelim(&read).into(),
                            XmlOut::Text(t) => t.as_prelim(&read).into(),
                            XmlOut::Fragment(f) => f.as_prelim(&read).into(),
                        };
                        now.push_back(&mut txn, node);
                    }
                }
            }
        }
    }
    txn.encode_update_v1()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::document::export::{JsonStyle, document_json};
    use serde_json::json;
    use yrs::StateVector;
    use yrs::types::xml::{XmlElementPrelim, XmlTextPrelim};

    fn state(doc: &Doc) -> Vec<u8> {
        doc.transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    fn apply(doc: &Doc, update: &[u8]) {
        doc.transact_mut()
            .apply_update(Update::decode_v1(update).unwrap())
            .unwrap();
    }

    fn json_of(update: &[u8]) -> serde_json::Value {
        let (doc, _) = DocumentState::restore([update], DocumentLimits::default());
        document_json(doc.live_doc().unwrap(), JsonStyle::Typed)
    }

    #[test]
    fn a_restore_brings_back_every_kind_of_field_as_a_new_change() {
        let doc = Doc::with_client_id(1);
        let (text, map, list, fragment) = (
            doc.get_or_insert_text("title"),
            doc.get_or_insert_map("meta"),
            doc.get_or_insert_array("tags"),
            doc.get_or_insert_xml_fragment("default"),
        );
        {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "Version A");
            map.insert(&mut txn, "owner", "ana");
            list.push_back(&mut txn, "a");
            let p = fragment.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            p.push_back(&mut txn, XmlTextPrelim::new("first"));
        }
        let version_a = state(&doc);
        {
            let mut txn = doc.transact_mut();
            text.remove_range(&mut txn, 0, 9);
            text.insert(&mut txn, 0, "B!");
            map.insert(&mut txn, "owner", "bo");
            map.insert(&mut txn, "extra", 1);
            list.push_back(&mut txn, "b");
            fragment.remove_range(&mut txn, 0, 1);
            let h = fragment.push_back(&mut txn, XmlElementPrelim::empty("heading"));
            h.push_back(&mut txn, XmlTextPrelim::new("second"));
        }
        let current = state(&doc);
        assert_ne!(json_of(&current), json_of(&version_a));

        let revert = revert_update(&current, &version_a, DocumentLimits::default()).unwrap();
        // Applied to the real document (another client of it), the content is A again.
        apply(&doc, &revert);
        assert_eq!(json_of(&state(&doc)), json_of(&version_a));
        // And an edit made meanwhile elsewhere merges on top.
        let other = Doc::with_client_id(7);
        apply(&other, &current);
        {
            let t = other.get_or_insert_text("title");
            let mut txn = other.transact_mut();
            t.insert(&mut txn, 0, ">");
        }
        let known = doc.transact().state_vector();
        let edit = other.transact().encode_state_as_update_v1(&known);
        apply(&doc, &edit);
        let merged = json_of(&state(&doc));
        assert_eq!(merged["title"], json!(">Version A"));
    }

    #[test]
    fn counts_say_what_an_update_inserted_and_deleted() {
        let doc = Doc::with_client_id(3);
        let text = doc.get_or_insert_text("t");
        let first = {
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "hello");
            txn.encode_update_v1()
        };
        let second = {
            let mut txn = doc.transact_mut();
            text.remove_range(&mut txn, 0, 2);
            txn.encode_update_v1()
        };
        assert_eq!(
            update_counts(&first),
            Some(UpdateCounts {
                inserted: 5,
                deleted: 0
            })
        );
        assert_eq!(
            update_counts(&second),
            Some(UpdateCounts {
                inserted: 0,
                deleted: 2
            })
        );
        assert_eq!(update_counts(&[0xff, 0xff]), None);
    }
}
