//! A sequence of client frames through the document rules, as the document actor applies them:
//! SyncStep1 answered, updates and SyncStep2 applied (and checked the read-only way), awareness
//! applied. Input: frames, each prefixed by a little-endian u16 length.
//!
//! Property: nothing panics (or aborts) on any input: decoding, applying, answering SyncStep1,
//! the read-only check, and encoding the resulting document and applying it to a fresh one.
//! (That the re-application *succeeds* is not asserted: crafted updates can leave yrs in a
//! state whose encoding it refuses to apply again — recorded in the closing notes; the daemon
//! then keeps the log un-compacted and reports the document as corrupt, without crashing.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use zedi_protocol::awareness::{Owner, decode_update};
use zedi_protocol::document::{DocError, DocumentState};
use zedi_protocol::protocol::{Message, Packet, SyncMessage, decode};

static QUIET_PANICS: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    // yrs asserts on some malformed input (e.g. a client id above 2^53); `DocumentState` contains
    // those panics with catch_unwind, as in the daemon. libfuzzer-sys installs a hook that aborts
    // on *any* panic, which would report contained ones too, so use a silent hook: a panic that
    // escapes `DocumentState` still reaches libfuzzer-sys's own catch_unwind and is a crash.
    if std::env::var_os("ZEDI_FUZZ_LOUD").is_none() {
        QUIET_PANICS.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    }
    let mut state = DocumentState::new();
    let mut rest = data;
    for step in 0..64u64 {
        if rest.len() < 2 {
            break;
        }
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
        let (frame, tail) = rest.split_at(len.min(rest.len()));
        rest = tail;
        let Ok(Packet::Message { message, .. }) = decode(frame) else { continue };
        match message {
            Message::Sync(SyncMessage::Step1(sv)) => {
                let _ = state.sync_step1_reply(sv);
            }
            Message::Sync(SyncMessage::Step2(update) | SyncMessage::Update(update)) => {
                let _ = state.contains_update(update);
                if let Err(DocError::Poisoned) = state.apply_update(update) {
                    // The actor drops such a document and reloads it from the store.
                    return;
                }
            }
            Message::Awareness(payload) => {
                if let Ok(entries) = decode_update(payload) {
                    state.awareness.apply(Owner::Connection(1), &entries, step);
                }
            }
            _ => {}
        }
    }
    // A document yrs cannot encode is detected (Poisoned) and dropped by the actor.
    let Ok(encoded) = state.encode_state() else { return };
    let mut copy = DocumentState::new();
    let _ = copy.apply_update(&encoded);
});
