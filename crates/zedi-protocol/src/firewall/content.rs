//! Item contents: what each content kind may hold, checked the way Yjs itself would read it.
//!
//! Each check returns the item's length in clock units, which is how far the item advances its
//! client's clock; yrs and Yjs must agree on it, so it is computed from what is actually there
//! (never from a declared count the bytes do not back up).

use super::Refusal;
use super::reader::StrictReader;

/// Content kinds of Yjs items (the low five bits of a struct's info byte).
pub const CONTENT_DELETED: u8 = 1;
pub const CONTENT_JSON: u8 = 2;
pub const CONTENT_BINARY: u8 = 3;
pub const CONTENT_STRING: u8 = 4;
pub const CONTENT_EMBED: u8 = 5;
pub const CONTENT_FORMAT: u8 = 6;
pub const CONTENT_TYPE: u8 = 7;
pub const CONTENT_ANY: u8 = 8;
pub const CONTENT_DOC: u8 = 9;

/// Shared type kinds that yrs and Yjs encode identically. XmlHook is left out on purpose: Yjs
/// writes a hook name after it and yrs does not read one, so the two would split the rest of the
/// update differently. Weak links (yrs only), sub-documents and "undefined" are server-side
/// surprises no Hocuspocus client sends.
const TYPE_ARRAY: u64 = 0;
const TYPE_MAP: u64 = 1;
const TYPE_TEXT: u64 = 2;
const TYPE_XML_ELEMENT: u64 = 3;
const TYPE_XML_FRAGMENT: u64 = 4;
const TYPE_XML_TEXT: u64 = 6;

/// JSON nesting allowed inside embeds, formats and legacy JSON content. serde_json's own
/// recursion limit (128) is the stack-safety backstop; this keeps yrs's JSON reader, which
/// recurses per level, far from it.
const MAX_JSON_DEPTH: usize = 64;

/// Reads one item's content of kind `kind` and returns its length in clock units.
pub fn read_content(r: &mut StrictReader<'_>, kind: u8, max_depth: u32) -> Result<u32, Refusal> {
    let at = r.position();
    let len = match kind {
        CONTENT_DELETED => r.read_u32()?,
        CONTENT_JSON => {
            // Exactly the declared number of strings, as Yjs reads them.
            let count = r.read_count(1)?;
            for _ in 0..count {
                let value = r.read_string()?;
                if value != "undefined" {
                    check_json(value, at)?;
                }
            }
            u32::try_from(count).map_err(|_| Refusal::ClockOverflow { at })?
        }
        CONTENT_BINARY => {
            r.read_var_bytes()?;
            1
        }
        CONTENT_STRING => {
            let text = r.read_string()?;
            // Yjs counts strings in UTF-16 code units; so does yrs (OffsetKind::Utf16).
            let units = text.encode_utf16().count();
            u32::try_from(units).map_err(|_| Refusal::ClockOverflow { at })?
        }
        CONTENT_EMBED => {
            check_json(r.read_string()?, at)?;
            1
        }
        CONTENT_FORMAT => {
            r.read_string()?;
            check_json(r.read_string()?, at)?;
            1
        }
        CONTENT_TYPE => {
            match r.read_var_uint()? {
                TYPE_ARRAY | TYPE_MAP | TYPE_TEXT | TYPE_XML_FRAGMENT | TYPE_XML_TEXT => {}
                TYPE_XML_ELEMENT => {
                    r.read_string()?;
                }
                other => {
                    return Err(Refusal::UnsupportedType {
                        at,
                        type_ref: other,
                    });
                }
            }
            1
        }
        CONTENT_ANY => {
            let count = r.read_count(1)?;
            for _ in 0..count {
                read_any(r, max_depth)?;
            }
            u32::try_from(count).map_err(|_| Refusal::ClockOverflow { at })?
        }
        CONTENT_DOC => return Err(Refusal::SubdocumentsUnsupported { at }),
        other => return Err(Refusal::UnknownContent { at, kind: other }),
    };
    if len == 0 {
        // A zero-length item does not advance its clock: two structs would share one id.
        return Err(Refusal::EmptyItem { at });
    }
    Ok(len)
}

/// Strict JSON (what `JSON.parse` accepts), nested at most `MAX_JSON_DEPTH` deep.
fn check_json(text: &str, at: usize) -> Result<(), Refusal> {
    // Depth first, without recursion, so the parser below never sees deep input.
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(Refusal::NestingTooDeep {
                        at,
                        depth: depth as u64,
                    });
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(|_| ())
        .map_err(|_| Refusal::InvalidJson { at })
}

/// One lib0 `any` value, iteratively: arrays and objects push how many values they still owe
/// onto a stack that may not grow beyond `max_depth`.
fn read_any(r: &mut StrictReader<'_>, max_depth: u32) -> Result<(), Refusal> {
    // Each entry: values still to read at that level, and whether they are object entries
    // (which start with a key).
    let mut open: Vec<(usize, bool)> = Vec::new();
    let mut pending_values = 1usize;
    let mut keyed = false;
    loop {
        if pending_values == 0 {
            match open.pop() {
                Some((values, is_object)) => {
                    pending_values = values;
                    keyed = is_object;
                    continue;
                }
                None => return Ok(()),
            }
        }
        pending_values -= 1;
        if keyed {
            r.read_string()?;
        }
        let at = r.position();
        match r.read_u8()? {
            // undefined, null, false, true
            127 | 126 | 121 | 120 => {}
            125 => {
                r.read_var_int()?;
            }
            124 => {
                r.read_f32()?;
            }
            123 => {
                r.read_f64()?;
            }
            // BigInt: yrs turns it into a plain number when it re-encodes, so other clients
            // would read a different type than the sender wrote.
            122 => {
                return Err(Refusal::NonCanonical {
                    at,
                    what: "BigInt value",
                });
            }
            119 => {
                r.read_string()?;
            }
            116 => {
                r.read_var_bytes()?;
            }
            tag @ (117 | 118) => {
                let is_object = tag == 118;
                // An array element takes at least one byte, an object entry two (key, value).
                let count = r.read_count(if is_object { 2 } else { 1 })?;
                if open.len() as u64 + 1 > u64::from(max_depth) {
                    return Err(Refusal::NestingTooDeep {
                        at,
                        depth: open.len() as u64 + 1,
                    });
                }
                open.push((pending_values, keyed));
                pending_values = count;
                keyed = is_object;
            }
            other => return Err(Refusal::UnknownContent { at, kind: other }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(kind: u8, bytes: &[u8]) -> Result<u32, Refusal> {
        let mut r = StrictReader::new(bytes);
        let len = read_content(&mut r, kind, 16)?;
        assert!(r.is_empty(), "content left {} bytes", r.remaining());
        Ok(len)
    }

    #[test]
    fn strings_count_utf16_units() {
        assert_eq!(content(CONTENT_STRING, b"\x02hi"), Ok(2));
        // U+1F600 is 4 bytes of UTF-8 and 2 UTF-16 units.
        assert_eq!(content(CONTENT_STRING, "\u{4}\u{1f600}".as_bytes()), Ok(2));
        assert!(matches!(
            content(CONTENT_STRING, b"\x00"),
            Err(Refusal::EmptyItem { .. })
        ));
    }

    #[test]
    fn json_content_reads_exactly_the_declared_strings() {
        assert_eq!(content(CONTENT_JSON, b"\x02\x011\x09undefined"), Ok(2));
        // The finding: count 1 but the strings are not JSON.
        assert!(matches!(
            content(CONTENT_JSON, b"\x01\x08jsonroot"),
            Err(Refusal::InvalidJson { .. })
        ));
        assert!(matches!(
            content(CONTENT_JSON, b"\x00"),
            Err(Refusal::EmptyItem { .. })
        ));
        let deep = format!("\x7f{}", "[".repeat(127));
        assert!(content(CONTENT_JSON, &[b"\x01", deep.as_bytes()].concat()).is_err());
    }

    #[test]
    fn any_values_are_bounded_in_depth_and_refuse_bigint() {
        // [1, "a", {"k": null}]
        let ok = [1, 117, 3, 125, 1, 119, 1, b'a', 118, 1, 1, b'k', 126];
        assert_eq!(content(CONTENT_ANY, &ok), Ok(1));
        let mut deep = vec![1u8];
        deep.extend(std::iter::repeat_n([117u8, 1], 17).flatten());
        deep.push(126);
        assert!(matches!(
            content(CONTENT_ANY, &deep),
            Err(Refusal::NestingTooDeep { .. })
        ));
        let bigint = [1, 122, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(matches!(
            content(CONTENT_ANY, &bigint),
            Err(Refusal::NonCanonical { .. })
        ));
        // An array claiming more elements than bytes is refused before anything is read.
        assert!(matches!(
            content(CONTENT_ANY, &[1, 117, 0xff, 0x7f]),
            Err(Refusal::CountTooLarge { .. })
        ));
    }

    #[test]
    fn types_and_subdocuments() {
        assert_eq!(content(CONTENT_TYPE, &[1]), Ok(1));
        assert_eq!(content(CONTENT_TYPE, b"\x03\x01p"), Ok(1));
        assert!(matches!(
            content(CONTENT_TYPE, &[5]),
            Err(Refusal::UnsupportedType { .. })
        ));
        assert!(matches!(
            content(CONTENT_DOC, &[0]),
            Err(Refusal::SubdocumentsUnsupported { .. })
        ));
        assert!(matches!(
            content(17, &[0]),
            Err(Refusal::UnknownContent { .. })
        ));
    }
}
