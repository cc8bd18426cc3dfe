//! Webhooks: document events POSTed to one receiver exactly as `@hocuspocus/extension-webhook`
//! 4.1 sends them, so a receiver written for Hocuspocus keeps working.
//!
//! The request: `POST {url}`, body `{"event": ..., "payload": ...}` (`event` first, as
//! `JSON.stringify({ event, payload })` writes it), `Content-Type: application/json` and
//! `X-Hocuspocus-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>` over exactly the bytes
//! sent. A non-2xx answer is a failure.
//!
//! Unlike the extension, a failed or timed-out delivery is retried with backoff (at least once,
//! up to `max_attempts`), and the caller never waits: [`Webhooks::send`] only queues (see
//! `delivery`). What goes into a payload, and the debouncing of `change`, are the callers'.

mod delivery;
mod hook;
pub mod settings;
#[cfg(test)]
mod tests;

pub use hook::{HookContext, RequestInfo, change_payload, connect_payload, disconnect_payload};
pub use settings::WebhookSettings;

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use crate::metrics::Metrics;
use delivery::Deliverer;

/// The header that carries the body's signature, as the extension names it.
pub const SIGNATURE_HEADER: &str = "X-Hocuspocus-Signature-256";

/// The extension's events; [`WebhookEvent::as_str`] is the `event` field and the config name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WebhookEvent {
    Connect = 0,
    Create = 1,
    Change = 2,
    Disconnect = 3,
}

impl WebhookEvent {
    pub const ALL: [WebhookEvent; 4] = [
        WebhookEvent::Connect,
        WebhookEvent::Create,
        WebhookEvent::Change,
        WebhookEvent::Disconnect,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEvent::Connect => "connect",
            WebhookEvent::Create => "create",
            WebhookEvent::Change => "change",
            WebhookEvent::Disconnect => "disconnect",
        }
    }

    /// Position in [`Self::ALL`], for the per-event counters resolved at start.
    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for WebhookEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for WebhookEvent {
    type Err = &'static str;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        WebhookEvent::ALL
            .into_iter()
            .find(|event| event.as_str() == text)
            .ok_or("is not one of connect, create, change, disconnect")
    }
}

/// `sha256=` and the lowercase hex HMAC-SHA256 of `body` under `secret`: Node's
/// `createHmac("sha256", secret).update(body).digest("hex")` with the extension's prefix.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes a key of any length (longer ones are hashed first): this cannot fail.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC accepts any key length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity("sha256=".len() + 2 * digest.len());
    out.push_str("sha256=");
    for byte in digest {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0x0f)]));
    }
    out
}

/// The body's shape. A struct rather than a `json!` map so that `event` is written before
/// `payload` whatever serde_json's map order is (the extension's key order).
#[derive(Serialize)]
struct Body<'a> {
    event: &'a str,
    payload: &'a serde_json::Value,
}

/// The bytes POSTed for one event (and signed).
pub fn encode_body(
    event: WebhookEvent,
    payload: &serde_json::Value,
) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&Body {
        event: event.as_str(),
        payload,
    })
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("wanted", &self.wanted)
            .field("debounce", &self.debounce)
            .finish_non_exhaustive()
    }
}

/// Handle to the delivery of webhooks: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Webhooks {
    /// Indexed by [`WebhookEvent::index`].
    wanted: [bool; WebhookEvent::ALL.len()],
    debounce: (Duration, Duration),
    deliverer: Arc<Deliverer>,
}

impl Webhooks {
    /// `None` when `webhooks.url` is empty (or when the HTTP client cannot be built, which is
    /// logged). Call it inside the actix System: deliveries run on that runtime's thread,
    /// whichever thread calls [`Self::send`].
    pub fn start(settings: &WebhookSettings, metrics: Arc<Metrics>) -> Option<Webhooks> {
        let url = settings.url.as_ref()?;
        let deliverer = match Deliverer::new(settings, url, &metrics) {
            Ok(deliverer) => deliverer,
            Err(error) => {
                tracing::error!(%error, "webhooks are off");
                return None;
            }
        };
        let mut wanted = [false; WebhookEvent::ALL.len()];
        for event in &settings.events {
            wanted[event.index()] = true;
        }
        let events: Vec<&str> = settings.events.iter().map(|e| e.as_str()).collect();
        tracing::info!(
            url = %deliverer.shown_url(),
            events = %events.join(","),
            max_attempts = settings.max_attempts,
            "webhooks on"
        );
        if settings
            .secret
            .as_ref()
            .is_none_or(|s| s.expose().is_empty())
        {
            tracing::warn!(
                "webhooks.secret is empty: receivers cannot tell our requests from forged ones"
            );
        }
        Some(Webhooks {
            wanted,
            debounce: (settings.debounce, settings.max_debounce),
            deliverer: Arc::new(deliverer),
        })
    }

    /// Whether `event` is configured (`webhooks.events`): callers check before building a
    /// payload.
    pub fn wants(&self, event: WebhookEvent) -> bool {
        self.wanted[event.index()]
    }

    /// `(debounce_ms, max_debounce_ms)` for the caller that debounces `change`.
    pub fn debounce(&self) -> (Duration, Duration) {
        self.debounce
    }

    /// Queues one delivery and returns at once; an event not in `webhooks.events` is ignored.
    /// Never blocks and never fails: a full queue drops the delivery (counted and logged).
    pub fn send(&self, event: WebhookEvent, payload: serde_json::Value) {
        if self.wants(event) {
            self.deliverer.enqueue(event, payload);
        }
    }
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn the_signature_matches_nodes_hmac() {
        // node -e "console.log('sha256='+require('crypto').createHmac('sha256','s3cret')
        //   .update('{\"event\":\"change\",\"payload\":{}}').digest('hex'))"
        assert_eq!(
            signature("s3cret", br#"{"event":"change","payload":{}}"#),
            "sha256=0d815f5707cb3cfe396e9af7cf8263687086ec611b612cbe8a32a6b0bac29fa2"
        );
        // The empty key (no secret configured) and a non-ASCII body, same command.
        assert_eq!(
            signature(
                "",
                r#"{"event":"connect","payload":{"documentName":"é/x"}}"#.as_bytes()
            ),
            "sha256=a8502ff84d07e8f2e1dae09d132560c5629d2810b5ebfa3df4c8105c99c06915"
        );
    }

    #[test]
    fn the_body_is_event_then_payload_as_json_stringify_writes_it() {
        let body = encode_body(WebhookEvent::Change, &serde_json::json!({})).unwrap();
        assert_eq!(body, br#"{"event":"change","payload":{}}"#);
        // Node: JSON.stringify({event:'connect',payload:{documentName:'é/x'}})
        let body = encode_body(
            WebhookEvent::Connect,
            &serde_json::json!({"documentName": "é/x"}),
        )
        .unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"event":"connect","payload":{"documentName":"é/x"}}"#
        );
    }

    #[test]
    fn event_names_are_the_extensions() {
        let names: Vec<&str> = WebhookEvent::ALL.iter().map(|e| e.as_str()).collect();
        assert_eq!(names, ["connect", "create", "change", "disconnect"]);
        for (i, event) in WebhookEvent::ALL.into_iter().enumerate() {
            assert_eq!(event.index(), i);
            assert_eq!(event.as_str().parse::<WebhookEvent>(), Ok(event));
        }
        assert!("onChange".parse::<WebhookEvent>().is_err());
    }
}
