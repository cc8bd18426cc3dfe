//! Arbitrary bytes as one Hocuspocus WebSocket frame.
//!
//! Properties: `decode` never panics; whatever it accepts re-encodes to a frame that decodes to
//! the same value, and that re-encoding is a fixed point (`encode ∘ decode` is idempotent). The
//! original bytes may differ from the re-encoding: lib0 readers accept over-long varUints,
//! SyncStatus maps every value other than 1 to "rejected", and Auth ignores trailing bytes.
//! Awareness payloads are also run through `decode_update`, and accepted ones must re-encode to
//! entries that decode the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zedi_protocol::awareness::decode_update;
use zedi_protocol::protocol::lib0::Writer;
use zedi_protocol::protocol::{
    AuthMessage, Message, PING_FRAME, PONG_FRAME, Packet, decode, document_name, encode,
};

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = decode(data) else { return };
    let (address, message) = match packet {
        Packet::Ping => {
            assert_eq!(data, PING_FRAME);
            return;
        }
        Packet::Pong => {
            assert_eq!(data, PONG_FRAME);
            return;
        }
        Packet::Message { address, message } => (address, message),
    };
    let document = document_name(address);
    assert!(address.starts_with(document));

    let bytes = encode(address, &message);
    let again = decode(&bytes).expect("a re-encoded frame decodes");
    match message {
        // Auth is the one message whose decoder ignores trailing bytes (the v4 provider version
        // and whatever future providers append), and a provider version that is not a valid
        // varString is dropped to `None`: so only the decoded *fields* survive a round trip, never
        // the input bytes. Compare the fields explicitly.
        Message::Auth(auth) => {
            let Packet::Message {
                address: a2,
                message: Message::Auth(auth2),
            } = again
            else {
                panic!("Auth re-decoded as {again:?}");
            };
            assert_eq!(a2, address);
            match (auth, auth2) {
                (
                    AuthMessage::Token { token, provider_version },
                    AuthMessage::Token { token: t2, provider_version: v2 },
                ) => {
                    assert_eq!(token, t2);
                    assert_eq!(provider_version, v2);
                }
                (a, b) => assert_eq!(a, b),
            }
        }
        // Close(None) (no body, client detach) and Close(Some("")) (a varString of length 0)
        // are distinct frames and must stay distinct.
        _ => assert_eq!(
            again,
            Packet::Message { address, message },
            "round trip changed the message"
        ),
    }
    assert_eq!(encode(address, &message), bytes, "encoding is deterministic");
    if let Packet::Message { address: a2, message: m2 } = again {
        assert_eq!(encode(a2, &m2), bytes, "encode ∘ decode is a fixed point");
    }

    if let Message::Awareness(payload) = message {
        if let Ok(entries) = decode_update(payload) {
            let mut w = Writer::new();
            w.write_var_uint(entries.len() as u64);
            for e in &entries {
                w.write_var_uint(e.client_id).write_var_uint(e.clock).write_var_string(e.state);
            }
            let reencoded = w.into_vec();
            let entries2 = decode_update(&reencoded).expect("re-encoded awareness decodes");
            assert_eq!(entries, entries2);
        }
    }
});
