//! A document's content as JSON or plain text, for readers that do not speak Yjs (the document
//! API, webhooks).
//!
//! A Yjs update does not say which type a root field is: that is decided by whoever first calls
//! `getText`/`getMap`/`getXmlFragment` on it. So the type is inferred from the content, as yrs
//! does for an undefined root (map entries → Y.Map, text chunks → Y.Text, a list → Y.Array), with
//! one refinement: a list of XML elements and XML text is a Y.XmlFragment (what Tiptap keeps),
//! rendered as the ProseMirror JSON that y-prosemirror's `yXmlFragmentToProsemirrorJSON` (and so
//! Tiptap's `TiptapTransformer.fromYdoc`) gives.

use std::sync::Arc;

use serde_json::{Map, Value, json};
use yrs::branch::{Branch, BranchPtr};
use yrs::types::AsPrelim;
use yrs::types::ToJson;
use yrs::types::text::Diff;
use yrs::types::xml::{Xml, XmlFragment, XmlOut};
use yrs::{
    Any, Array, ArrayRef, Doc, GetString, In, MapRef, Out, ReadTxn, Text, TextRef, Transact,
    XmlElementRef, XmlFragmentRef, XmlTextRef,
};

/// What a root field holds, as inferred from its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    Text,
    Map,
    Array,
    XmlFragment,
    /// Nothing left in it (or never anything): its type cannot be told.
    Empty,
}

/// How a document's JSON renders fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonStyle {
    /// Each field by its inferred type (Y.Text → string, Y.Map → object, Y.Array → array,
    /// Y.XmlFragment → ProseMirror JSON); an empty field is `null`.
    Typed,
    /// As `TiptapTransformer.fromYdoc` does for webhooks: fragments and empty fields as
    /// ProseMirror JSON (`{"type":"doc","content":[]}` when empty), other types as in `Typed`.
    Tiptap,
}

/// Every root field of `doc`, by name.
pub fn document_json(doc: &Doc, style: JsonStyle) -> Value {
    let txn = doc.transact();
    let mut fields = Map::new();
    let mut roots: Vec<(Arc<str>, BranchPtr)> = txn
        .root_refs()
        .filter_map(|(name, out)| Some((Arc::from(name), branch_of(&out)?)))
        .collect();
    roots.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, branch) in roots {
        let value = match (classify(branch, &txn), style) {
            (FieldKind::Empty, JsonStyle::Typed) => Value::Null,
            (FieldKind::Empty, JsonStyle::Tiptap) => json!({"type": "doc", "content": []}),
            (kind, _) => render(branch, kind, &txn),
        };
        fields.insert(name.to_string(), value);
    }
    Value::Object(fields)
}

/// The plain text of one field: a Y.Text as it is; a Y.XmlFragment's text with one line per
/// top-level block. `None` when the field does not exist or holds no text (a map or an array).
pub fn field_text(doc: &Doc, field: &str) -> Option<String> {
    let txn = doc.transact();
    let branch = txn
        .root_refs()
        .find(|(name, _)| *name == field)
        .and_then(|(_, out)| branch_of(&out))?;
    match classify(branch, &txn) {
        FieldKind::Text => Some(TextRef::from(branch).get_string(&txn)),
        FieldKind::XmlFragment => {
            let fragment = XmlFragmentRef::from(branch);
            let lines: Vec<String> = fragment
                .children(&txn)
                .map(|node| node_text(&node, &txn))
                .collect();
            Some(lines.join("\n"))
        }
        FieldKind::Empty => Some(String::new()),
        FieldKind::Map | FieldKind::Array => None,
    }
}

fn branch_of(out: &Out) -> Option<BranchPtr> {
    Some(match out {
        Out::YText(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YArray(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YMap(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YXmlFragment(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YXmlElement(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::YXmlText(r) => BranchPtr::from(AsRef::<Branch>::as_ref(r)),
        Out::UndefinedRef(b) => *b,
        _ => return None,
    })
}

/// The type of a root field, from what it holds (see the module comment).
pub fn classify<T: ReadTxn>(branch: BranchPtr, txn: &T) -> FieldKind {
    match Out::UndefinedRef(branch).as_prelim(txn) {
        In::Text(_) | In::XmlText(_) => FieldKind::Text,
        In::Map(prelim) if prelim.is_empty() => FieldKind::Empty,
        In::Map(_) => FieldKind::Map,
        In::Array(_) | In::XmlElement(_) | In::XmlFragment(_) => {
            let array = ArrayRef::from(branch);
            let mut items = array.iter(txn);
            match items.next() {
                None => FieldKind::Empty,
                Some(Out::YXmlElement(_) | Out::YXmlText(_) | Out::YXmlFragment(_)) => {
                    FieldKind::XmlFragment
                }
                Some(_) => FieldKind::Array,
            }
        }
        _ => FieldKind::Map,
    }
}

fn render<T: ReadTxn>(branch: BranchPtr, kind: FieldKind, txn: &T) -> Value {
    match kind {
        FieldKind::Text => Value::String(TextRef::from(branch).get_string(txn)),
        FieldKind::Map => any_json(&MapRef::from(branch).to_json(txn)),
        FieldKind::Array => any_json(&ArrayRef::from(branch).to_json(txn)),
        FieldKind::XmlFragment => prosemirror_doc(&XmlFragmentRef::from(branch), txn),
        FieldKind::Empty => Value::Null,
    }
}

/// `{"type":"doc","content":[…]}`, node by node as y-prosemirror serialises them.
fn prosemirror_doc<T: ReadTxn>(fragment: &XmlFragmentRef, txn: &T) -> Value {
    let content: Vec<Value> = fragment
        .children(txn)
        .flat_map(|node| prosemirror_nodes(&node, txn))
        .collect();
    json!({"type": "doc", "content": content})
}

/// One child as ProseMirror JSON: an element is one node, a text is one node per formatted run.
fn prosemirror_nodes<T: ReadTxn>(node: &XmlOut, txn: &T) -> Vec<Value> {
    match node {
        XmlOut::Element(element) => vec![prosemirror_element(element, txn)],
        XmlOut::Text(text) => prosemirror_text(text, txn),
        XmlOut::Fragment(fragment) => fragment
            .children(txn)
            .flat_map(|child| prosemirror_nodes(&child, txn))
            .collect(),
    }
}

fn prosemirror_element<T: ReadTxn>(element: &XmlElementRef, txn: &T) -> Value {
    let mut node = Map::new();
    node.insert("type".into(), Value::String(element.tag().to_string()));
    let mut attributes: Vec<(String, Value)> = element
        .attributes(txn)
        .map(|(key, value)| (key.to_string(), out_json(&value, txn)))
        .collect();
    if !attributes.is_empty() {
        attributes.sort_by(|a, b| a.0.cmp(&b.0));
        node.insert(
            "attrs".into(),
            Value::Object(attributes.into_iter().collect()),
        );
    }
    let content: Vec<Value> = element
        .children(txn)
        .flat_map(|child| prosemirror_nodes(&child, txn))
        .collect();
    if !content.is_empty() {
        node.insert("content".into(), Value::Array(content));
    }
    Value::Object(node)
}

/// y-prosemirror: each delta run is `{type:"text", text, marks?}`, a mark per formatting
/// attribute with the attribute's value as its `attrs` (always present, as y-prosemirror does).
fn prosemirror_text<T: ReadTxn>(text: &XmlTextRef, txn: &T) -> Vec<Value> {
    let runs: Vec<Diff<()>> = text.diff(txn, |_| ());
    runs.into_iter()
        .map(|run| {
            let mut node = Map::new();
            node.insert("type".into(), Value::String("text".into()));
            node.insert("text".into(), Value::String(out_string(&run.insert, txn)));
            if let Some(attributes) = run.attributes {
                let mut marks: Vec<(String, Value)> = attributes
                    .iter()
                    .map(|(name, value)| (name.to_string(), any_json(value)))
                    .collect();
                marks.sort_by(|a, b| a.0.cmp(&b.0));
                let marks: Vec<Value> = marks
                    .into_iter()
                    .map(|(name, attrs)| json!({"type": name, "attrs": attrs}))
                    .collect();
                node.insert("marks".into(), Value::Array(marks));
            }
            Value::Object(node)
        })
        .collect()
}

/// The text of one top-level block (its text runs and those of its descendants).
fn node_text<T: ReadTxn>(node: &XmlOut, txn: &T) -> String {
    match node {
        // `get_string` would wrap formatted runs in tags: only the characters are wanted.
        XmlOut::Text(text) => text
            .diff(txn, |_| ())
            .iter()
            .map(|run: &Diff<()>| out_string(&run.insert, txn))
            .collect(),
        XmlOut::Element(element) => element
            .children(txn)
            .map(|child| node_text(&child, txn))
            .collect(),
        XmlOut::Fragment(fragment) => fragment
            .children(txn)
            .map(|child| node_text(&child, txn))
            .collect(),
    }
}

fn out_string<T: ReadTxn>(out: &Out, txn: &T) -> String {
    match out {
        Out::Any(Any::String(s)) => s.to_string(),
        other => Out::to_string(other.clone(), txn),
    }
}

fn out_json<T: ReadTxn>(out: &Out, txn: &T) -> Value {
    match out {
        Out::Any(any) => any_json(any),
        Out::YText(t) => Value::String(t.get_string(txn)),
        Out::YMap(m) => any_json(&m.to_json(txn)),
        Out::YArray(a) => any_json(&a.to_json(txn)),
        other => Value::String(Out::to_string(other.clone(), txn)),
    }
}

/// A Yjs value as JSON (a binary buffer as an array of byte values; undefined as null).
pub fn any_json(any: &Any) -> Value {
    match any {
        Any::Null | Any::Undefined => Value::Null,
        Any::Bool(b) => Value::Bool(*b),
        Any::Number(yrs::any::Number::Int(i)) => Value::from(*i),
        Any::Number(yrs::any::Number::Float(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Any::String(s) => Value::String(s.to_string()),
        Any::Buffer(bytes) => Value::Array(bytes.iter().map(|b| Value::from(*b)).collect()),
        Any::Array(items) => Value::Array(items.iter().map(any_json).collect()),
        Any::Map(entries) => {
            let mut sorted: Vec<(&String, &Any)> = entries.iter().collect();
            sorted.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                sorted
                    .into_iter()
                    .map(|(k, v)| (k.clone(), any_json(v)))
                    .collect(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yrs::types::xml::XmlElementPrelim;
    use yrs::updates::decoder::Decode;
    use yrs::{Map as _, StateVector, Update, XmlTextPrelim};

    /// A document as a reader gets it: decoded from its encoded state, roots untyped.
    fn reloaded(doc: &Doc) -> Doc {
        let update = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let fresh = Doc::new();
        fresh
            .transact_mut()
            .apply_update(Update::decode_v1(&update).unwrap())
            .unwrap();
        fresh
    }

    #[test]
    fn typed_fields_are_inferred_from_their_content() {
        let doc = Doc::new();
        {
            let text = doc.get_or_insert_text("title");
            let map = doc.get_or_insert_map("meta");
            let list = doc.get_or_insert_array("tags");
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "Hello");
            map.insert(&mut txn, "n", 2);
            map.insert(&mut txn, "owner", "ana");
            list.push_back(&mut txn, "a");
            list.push_back(&mut txn, true);
        }
        let doc = reloaded(&doc);
        assert_eq!(
            document_json(&doc, JsonStyle::Typed),
            json!({"meta": {"n": 2, "owner": "ana"}, "tags": ["a", true], "title": "Hello"})
        );
        assert_eq!(field_text(&doc, "title").as_deref(), Some("Hello"));
        assert_eq!(field_text(&doc, "meta"), None);
        assert_eq!(field_text(&doc, "missing"), None);
    }

    #[test]
    fn a_tiptap_fragment_is_prosemirror_json() {
        let doc = Doc::new();
        {
            let fragment = doc.get_or_insert_xml_fragment("default");
            let mut txn = doc.transact_mut();
            let heading = fragment.push_back(&mut txn, XmlElementPrelim::empty("heading"));
            heading.insert_attribute(&mut txn, "level", 1);
            heading.push_back(&mut txn, XmlTextPrelim::new("Notes"));
            let paragraph = fragment.push_back(&mut txn, XmlElementPrelim::empty("paragraph"));
            let body = paragraph.push_back(&mut txn, XmlTextPrelim::new("plain bold"));
            let bold: yrs::types::Attrs =
                std::iter::once((Arc::from("bold"), Any::Map(Arc::new(Default::default()))))
                    .collect();
            body.format(&mut txn, 6, 4, bold);
        }
        let doc = reloaded(&doc);
        assert_eq!(
            document_json(&doc, JsonStyle::Typed),
            json!({"default": {"type": "doc", "content": [
                {"type": "heading", "attrs": {"level": 1},
                 "content": [{"type": "text", "text": "Notes"}]},
                {"type": "paragraph", "content": [
                    {"type": "text", "text": "plain "},
                    {"type": "text", "text": "bold", "marks": [{"type": "bold", "attrs": {}}]}
                ]}
            ]}})
        );
        assert_eq!(
            field_text(&doc, "default").as_deref(),
            Some("Notes\nplain bold")
        );
    }

    #[test]
    fn empty_fields_depend_on_the_style() {
        let doc = Doc::new();
        {
            let text = doc.get_or_insert_text("gone");
            let mut txn = doc.transact_mut();
            text.insert(&mut txn, 0, "x");
            text.remove_range(&mut txn, 0, 1);
        }
        let doc = reloaded(&doc);
        assert_eq!(document_json(&doc, JsonStyle::Typed), json!({"gone": null}));
        assert_eq!(
            document_json(&doc, JsonStyle::Tiptap),
            json!({"gone": {"type": "doc", "content": []}})
        );
    }
}
