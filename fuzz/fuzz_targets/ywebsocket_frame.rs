//! Arbitrary bytes as one y-websocket frame (several messages back to back), and as a frame the
//! y-websocket session translates on its way out.
//!
//! Properties: `decode_frame` never panics; the lengths of the messages it accepts add up to
//! the frame; each message re-encodes to bytes that decode to the same message, and that
//! re-encoding is a fixed point. `translate` never panics and a forwarded offset stays inside the
//! frame. The URL helpers (path → document name, query → token) never panic on any text.

#![no_main]

use libfuzzer_sys::fuzz_target;
use zedi_protocol::protocol::ywebsocket::{
    Outgoing, decode_frame, document_from_path, encode, query_param, translate,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(messages) = decode_frame(data, 64) {
        let total: usize = messages.iter().map(|(_, len)| len).sum();
        assert_eq!(total, data.len(), "every byte belongs to a message");
        for (message, _) in &messages {
            let bytes = encode(message);
            let again = decode_frame(&bytes, 1).expect("a re-encoded message decodes");
            assert_eq!(again.len(), 1);
            assert_eq!(&again[0].0, message, "round trip changed the message");
            assert_eq!(encode(&again[0].0), bytes, "encode ∘ decode is a fixed point");
        }
    }
    if let Ok(Outgoing::Forward { from, .. }) = translate(data) {
        assert!(from <= data.len(), "forwarded offset inside the frame");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = document_from_path(text, "/");
        let _ = query_param(text, "token");
    }
});
