//! How deeply a JSON text nests arrays and objects, found by one pass over its bytes.
//!
//! Why not ask serde_json: its `IgnoredAny` path (what [`super::decode_update`] uses to check
//! the text is JSON) skips values iteratively and has no depth limit, so it happily accepts
//! 100,000 nested brackets; its recursion limit (128) applies only when building values. A
//! relayed state that deep would then reach every provider, whose `JSON.parse` and whatever
//! walks the state afterwards may recurse. Counting brackets outside strings is enough: the
//! scanner runs before serde_json, so on invalid JSON its answer does not matter (serde_json
//! refuses it anyway), and it stops at the first level past the limit, so its cost is at most
//! one look at each byte and never depends on how deep the input goes.

/// Whether `json` nests arrays/objects at most `max_depth` deep (`[]` is depth 1, `[[]]` 2, a
/// scalar 0). Brackets inside strings do not count; `\"` and `\\` inside strings are handled
/// (multi-byte UTF-8 never contains the ASCII bytes looked at, so scanning bytes is exact).
pub fn within_depth(json: &str, max_depth: u32) -> bool {
    let mut depth: u32 = 0;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in json.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return false;
                }
            }
            // Unbalanced closers are invalid JSON, which serde_json refuses right after.
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::within_depth;

    #[test]
    fn counts_arrays_and_objects() {
        assert!(within_depth("1", 0));
        assert!(within_depth("\"x\"", 0));
        assert!(!within_depth("[]", 0));
        assert!(within_depth("[]", 1));
        assert!(within_depth(r#"{"a":[1,{"b":2}],"c":{}}"#, 3));
        assert!(!within_depth(r#"{"a":[1,{"b":2}],"c":{}}"#, 2));
        // Siblings do not add up: depth, not count.
        assert!(within_depth("[],".repeat(1000).trim_end_matches(','), 1));
    }

    #[test]
    fn brackets_inside_strings_and_escapes_do_not_count() {
        let deep_looking = format!("{{\"s\":\"{}\"}}", "[{".repeat(500));
        assert!(within_depth(&deep_looking, 1));
        // An escaped quote does not end the string, so the brackets after it are still text.
        assert!(within_depth(r#"{"s":"a\"[[[[{{{{"}"#, 1));
        // An escaped backslash does end it: the quote after it closes the string.
        assert!(!within_depth(r#"{"s":"a\\"[[[["#, 1));
        assert!(within_depth(r#"["\\\\\"]]]]", "\u005b\u007b"]"#, 1));
        // Multi-byte UTF-8 inside and outside strings.
        assert!(within_depth(r#"{"名前":"「[」","ü":["€"]}"#, 2));
    }

    #[test]
    fn a_hundred_thousand_deep_input_is_refused_without_recursion() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(!within_depth(&deep, 32));
        assert!(within_depth(&deep, 100_000));
        let objects = "{\"a\":".repeat(100_000) + "1" + &"}".repeat(100_000);
        assert!(!within_depth(&objects, 32));
        assert!(within_depth(&objects, 100_000));
    }
}
