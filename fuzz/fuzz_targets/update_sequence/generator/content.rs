//! The content of an item struct, by content ref, and the lib0 Any values inside it.

use super::super::input::Src;
use super::super::lib0::W;
use super::small_len;

const KEYS: [&str; 5] = ["k", "a", "title", "", "🔑"];
const TEXT_PIECES: [&str; 9] = [
    "a", "b", "hello", "é", "😀", "\u{2028}", "ab\u{0}", "\r\n", "中文",
];
const JSON_TEXTS: [&str; 9] = [
    "1",
    "\"x\"",
    "null",
    "{}",
    "[1,2]",
    "true",
    "{\"a\":[]}",
    "x",
    "",
];

pub(crate) fn key(src: &mut Src, w: &mut W) {
    w.bytes(KEYS[src.below(KEYS.len())].as_bytes());
}

fn json_text(src: &mut Src, w: &mut W) {
    w.bytes(JSON_TEXTS[src.below(JSON_TEXTS.len())].as_bytes());
}

/// Writes the content of a struct with ref `content_ref` (low 4 bits, as yrs reads it); returns
/// its length as yrs would count it and whether it is a Type.
pub(crate) fn content_body(src: &mut Src, w: &mut W, content_ref: u8) -> (u32, bool) {
    match content_ref {
        // Deleted
        1 => {
            let len = small_len(src);
            w.uint(u64::from(len));
            (len, false)
        }
        2 => (json_content(src, w), false),
        // Binary
        3 => {
            let n = src.below(5);
            w.bytes(src.bytes(n));
            (1, false)
        }
        4 => (string_content(src, w), false),
        // Embed
        5 => {
            json_text(src, w);
            (1, false)
        }
        // Format
        6 => {
            key(src, w);
            json_text(src, w);
            (1, false)
        }
        7 => {
            type_content(src, w);
            (1, true)
        }
        8 => (any_content(src, w), false),
        9 => {
            doc_content(src, w);
            (1, false)
        }
        // 0 (GC ref with flags), 10 (Skip ref with flags) and 11..=15: refused by yrs; a few
        // bytes follow so the rest of the update is not simply truncated.
        _ => {
            let n = src.below(3);
            w.0.extend_from_slice(src.bytes(n));
            (1, false)
        }
    }
}

/// JSON content; returns its length. yrs 0.28.1 reads count + 1 strings, Yjs reads count.
fn json_content(src: &mut Src, w: &mut W) -> u32 {
    let n = src.pick(&[40, 80, 40, 20]);
    let count = match src.pick(&[3, 3, 1]) {
        0 => n.saturating_sub(1) as u64,
        1 => n as u64,
        _ => src.below(5) as u64,
    };
    w.uint(count);
    for _ in 0..n {
        json_text(src, w);
    }
    n as u32
}

/// String content; returns its length in UTF-16 units (bytes if it is not UTF-8).
fn string_content(src: &mut Src, w: &mut W) -> u32 {
    let mut s = Vec::new();
    if src.rare(12) {
        // Invalid UTF-8, a lone surrogate as CESU-8, or a truncated sequence.
        s.extend_from_slice([&b"\xff"[..], b"\xed\xa0\x80", b"\xf0\x9f", b"a\x80"][src.below(4)]);
    } else {
        for _ in 0..[1, 2, 3, 0][src.pick(&[100, 80, 30, 10])] {
            s.extend_from_slice(TEXT_PIECES[src.below(TEXT_PIECES.len())].as_bytes());
        }
    }
    w.bytes(&s);
    match std::str::from_utf8(&s) {
        Ok(s) => s.encode_utf16().count() as u32,
        Err(_) => s.len() as u32,
    }
}

/// Type content: a type ref (text, array, map, XML, subdoc, undefined or unknown) and what
/// follows it.
fn type_content(src: &mut Src, w: &mut W) {
    let type_ref = match src.pick(&[40, 30, 30, 20, 10, 10, 5, 5, 5, 3, 3]) {
        0 => 2,
        1 => 0,
        2 => 1,
        3 => 3,
        4 => 4,
        5 => 6,
        6 => 5,
        7 => 9,
        8 => 15,
        9 => 7,
        _ => src.u8(),
    };
    w.u8(type_ref);
    if type_ref == 3 {
        w.bytes(["paragraph", "p", ""][src.below(3)].as_bytes());
    } else if type_ref == 7 {
        // A weak link (not compiled into this yrs): flags and a quote start.
        w.u8(src.u8());
        w.id((u64::from(src.u8() % 8), u32::from(src.u8())));
    }
}

/// Any content: a count that mostly matches, and that many values; returns its length.
fn any_content(src: &mut Src, w: &mut W) -> u32 {
    let n = src.pick(&[80, 40, 20, 10]);
    let count = match src.pick(&[20, 1, 1]) {
        0 => n as u64,
        1 => n as u64 + 1,
        _ => (n as u64).saturating_sub(1),
    };
    w.uint(count);
    for _ in 0..n {
        any(src, w, 2);
    }
    n as u32
}

/// Doc content: guid, then options as an Any (normally a map).
fn doc_content(src: &mut Src, w: &mut W) {
    w.bytes(["guid-1", "", "guid-2"][src.below(3)].as_bytes());
    if src.rare(30) {
        any(src, w, 1);
        return;
    }
    let opts = src.below(4);
    w.u8(118);
    w.uint(opts as u64);
    for _ in 0..opts {
        match src.below(4) {
            0 => {
                w.bytes(b"gc");
                w.u8(if src.rare(128) { 120 } else { 121 });
            }
            1 => {
                w.bytes(b"autoLoad");
                w.u8(if src.rare(128) { 120 } else { 121 });
            }
            2 => {
                w.bytes(b"encoding");
                w.u8(125);
                w.int(i64::from(src.u8() % 3));
            }
            _ => {
                w.bytes(b"collectionId");
                any(src, w, 0);
            }
        }
    }
}

/// A lib0 Any value, nested at most `depth` levels.
fn any(src: &mut Src, w: &mut W, depth: u32) {
    let kinds: &[u32] = if depth == 0 {
        &[30, 30, 10, 10, 5, 5, 5, 5, 0, 0, 5, 2]
    } else {
        &[30, 30, 10, 10, 5, 5, 5, 5, 15, 15, 5, 2]
    };
    match src.pick(kinds) {
        0 => {
            w.u8(119);
            w.bytes(TEXT_PIECES[src.below(TEXT_PIECES.len())].as_bytes());
        }
        1 => {
            w.u8(125);
            let v = match src.pick(&[10, 3, 2, 1]) {
                0 => i64::from(src.u8() as i8),
                1 => i64::from(src.u32() as i32),
                2 => (1 << 53) + 1,
                _ => i64::MIN,
            };
            w.int(v);
        }
        2 => w.u8(if src.rare(128) { 120 } else { 121 }),
        3 => w.u8(126),
        4 => w.u8(127),
        5 => {
            w.u8(124);
            w.0.extend_from_slice(
                &[1.5f32, f32::NAN, -0.0, f32::INFINITY][src.below(4)].to_be_bytes(),
            );
        }
        6 => {
            w.u8(123);
            w.0.extend_from_slice(&[0.1f64, f64::NAN, 1e300, -1.0][src.below(4)].to_be_bytes());
        }
        7 => {
            w.u8(122);
            w.0.extend_from_slice(&[0i64, -1, i64::MAX][src.below(3)].to_be_bytes());
        }
        8 => {
            let n = src.below(3);
            w.u8(118);
            w.uint(n as u64);
            for _ in 0..n {
                key(src, w);
                any(src, w, depth.saturating_sub(1));
            }
        }
        9 => {
            let n = src.below(3);
            w.u8(117);
            w.uint(n as u64);
            for _ in 0..n {
                any(src, w, depth.saturating_sub(1));
            }
        }
        10 => {
            w.u8(116);
            let n = src.below(4);
            w.bytes(src.bytes(n));
        }
        _ => w.u8(src.u8()),
    }
}
