//! What a connection's webhook events carry, and the payloads, field for field as
//! `@hocuspocus/extension-webhook` 4.1 builds them (`documentName`, `requestHeaders`,
//! `requestParameters`, `context`, and for `change` the document).

use std::sync::Arc;

use serde_json::{Map, Value, json};

/// The upgrade request of a connection: its headers (names lower-case, as Node gives them;
/// repeated ones joined with ", ") and its query parameters (percent-decoded, `+` as a space,
/// as `URLSearchParams` reads them; the last of a repeated name wins).
#[derive(Debug, Default)]
pub struct RequestInfo {
    pub headers: Value,
    pub parameters: Value,
}

impl RequestInfo {
    pub fn new<'a>(
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        query: Option<&str>,
    ) -> Self {
        let mut by_name: Map<String, Value> = Map::new();
        // Kept for the life of the connection: a client sending kilobytes of headers must not
        // make every idle socket hold them. Past the bound the rest is left out.
        let mut kept = 0;
        for (name, value) in headers {
            kept += name.len() + value.len();
            if kept > MAX_KEPT_BYTES {
                break;
            }
            let name = name.to_ascii_lowercase();
            let joined = match by_name.get(&name).and_then(Value::as_str) {
                Some(earlier) => format!("{earlier}, {value}"),
                None => value.to_string(),
            };
            by_name.insert(name, Value::String(joined));
        }
        let mut parameters = Map::new();
        let query = query.unwrap_or_default();
        let query = &query[..floor_boundary(query, MAX_KEPT_BYTES)];
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |text: &str| {
                crate::protocol::ywebsocket::percent_decode(&text.replace('+', " "))
                    .unwrap_or_else(|_| text.to_string())
            };
            parameters.insert(decode(key), Value::String(decode(value)));
        }
        RequestInfo {
            headers: Value::Object(by_name),
            parameters: Value::Object(parameters),
        }
    }
}

/// Most bytes of headers (and, apart, of query string) a connection keeps for its webhooks.
const MAX_KEPT_BYTES: usize = 4 * 1024;

fn floor_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// One connection's view of one document: its request and what its token said (the claims;
/// Hocuspocus's `context` is what `onAuthenticate` returned, which is the claims here).
#[derive(Debug)]
pub struct HookContext {
    pub request: Arc<RequestInfo>,
    pub context: Value,
}

fn empty() -> Value {
    Value::Object(Map::new())
}

fn request_of(hook: Option<&HookContext>) -> (Value, Value) {
    hook.map_or_else(
        || (empty(), empty()),
        |h| (h.request.headers.clone(), h.request.parameters.clone()),
    )
}

/// `connect` and `create`: `{documentName, requestHeaders, requestParameters}`.
pub fn connect_payload(document: &str, hook: Option<&HookContext>) -> Value {
    let (headers, parameters) = request_of(hook);
    json!({
        "documentName": document,
        "requestHeaders": headers,
        "requestParameters": parameters,
    })
}

/// `disconnect`: the connect fields and `context`.
pub fn disconnect_payload(document: &str, hook: Option<&HookContext>) -> Value {
    let (headers, parameters) = request_of(hook);
    json!({
        "documentName": document,
        "requestHeaders": headers,
        "requestParameters": parameters,
        "context": hook.map_or_else(empty, |h| h.context.clone()),
    })
}

/// `change`: the document (as `TiptapTransformer.fromYdoc` renders it), with the fields of the
/// connection that made the last change (empty for changes from the API or another node).
pub fn change_payload(document_name: &str, document: Value, hook: Option<&HookContext>) -> Value {
    let (headers, parameters) = request_of(hook);
    json!({
        "document": document,
        "documentName": document_name,
        "context": hook.map_or_else(empty, |h| h.context.clone()),
        "requestHeaders": headers,
        "requestParameters": parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_read_as_node_reads_them() {
        let info = RequestInfo::new(
            [("Origin", "https://app"), ("x-a", "1"), ("X-A", "2")],
            Some("token=a%20b&q=c+d&flag"),
        );
        assert_eq!(
            info.headers,
            json!({"origin": "https://app", "x-a": "1, 2"})
        );
        assert_eq!(
            info.parameters,
            json!({"token": "a b", "q": "c d", "flag": ""})
        );
        let hook = HookContext {
            request: Arc::new(info),
            context: json!({"sub": "u1"}),
        };
        let change = change_payload("notes/a", json!({"default": {}}), Some(&hook));
        assert_eq!(change["documentName"], "notes/a");
        assert_eq!(change["context"]["sub"], "u1");
        assert_eq!(change["requestParameters"]["q"], "c d");
        assert_eq!(
            disconnect_payload("d", None),
            json!({"documentName": "d", "requestHeaders": {}, "requestParameters": {}, "context": {}})
        );
        assert!(connect_payload("d", Some(&hook)).get("context").is_none());
    }

    #[test]
    fn a_connection_keeps_a_bounded_part_of_its_request() {
        let big = "v".repeat(3 * 1024);
        let query = format!("a={}", "q".repeat(10 * 1024));
        let info = RequestInfo::new(
            [("x-one", big.as_str()), ("x-two", big.as_str())],
            Some(&query),
        );
        let headers = info.headers.as_object().unwrap();
        assert!(headers.contains_key("x-one") && !headers.contains_key("x-two"));
        assert!(info.parameters["a"].as_str().unwrap().len() < 4 * 1024);
    }
}
