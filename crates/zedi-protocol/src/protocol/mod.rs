//! The wire format, as pure functions: no actors, no sockets, no clocks. Everything here is
//! unit-tested alone and fuzzed (`fuzz/`), so the networking layers only move bytes.

mod close;
mod error_kind;
pub mod lib0;
pub mod message;
pub mod ywebsocket;

pub use close::CloseCode;
pub use error_kind::ErrorKind;
pub use message::{
    AuthMessage, FrameError, Message, MessageType, PING_FRAME, PONG_FRAME, Packet, SCOPE_READ_ONLY,
    SCOPE_READ_WRITE, SyncMessage, decode, document_name, encode, encode_body, prepend_address,
};
