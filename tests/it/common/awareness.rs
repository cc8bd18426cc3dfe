//! Reading awareness frames as a client sees them, shared by the awareness suites.

use std::time::{Duration, Instant};

use zedi_sync::awareness::{AwarenessLimits, decode_update_with};
use zedi_sync::protocol::{self, Message, Packet};

use super::{Client, Received};

/// The `(client, clock, state)` entries of an awareness frame on `doc`, if it is one. Decoded
/// without the daemon's bounds, so that an oversized state relayed by mistake is seen as such.
pub fn entries_of(frame: &[u8], doc: &str) -> Option<Vec<(u64, u64, String)>> {
    let unbounded = AwarenessLimits {
        max_state_bytes: usize::MAX,
        max_depth: u32::MAX,
        max_clients_per_connection: usize::MAX,
    };
    match protocol::decode(frame) {
        Ok(Packet::Message {
            address,
            message: Message::Awareness(payload),
        }) if address == doc => Some(
            decode_update_with(payload, &unbounded)
                .expect("the daemon's awareness decodes")
                .into_iter()
                .map(|e| (e.client_id, e.clock, e.state.to_string()))
                .collect(),
        ),
        _ => None,
    }
}

/// Reads frames until an awareness frame on `doc` matches `pred` (bounded); returns every
/// awareness frame seen on the way, so the caller can check what else was broadcast.
pub fn await_awareness(
    client: &mut Client,
    doc: &str,
    what: &str,
    pred: impl Fn(&[(u64, u64, String)]) -> bool,
) -> Vec<Vec<(u64, u64, String)>> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        match client.recv(Duration::from_millis(200)) {
            Received::Frame(f) => {
                if let Some(entries) = entries_of(&f, doc) {
                    let done = pred(&entries);
                    seen.push(entries);
                    if done {
                        return seen;
                    }
                }
            }
            Received::Closed(c) => panic!("closed while waiting for {what}: {c:?}"),
            Received::TimedOut => {}
        }
    }
    panic!("timed out waiting for {what}; saw {seen:?}");
}
