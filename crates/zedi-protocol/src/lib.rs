//! zedi-protocol: the part of zedi-sync that is pure functions and plain data (the y-sweet
//! shape). Nothing here does I/O or knows about actors, so each piece is tested and fuzzed alone.
//!
//! - [`protocol`]: Hocuspocus frames, encode/decode, and lib0 integers;
//! - [`awareness`]: the y-protocols awareness table and its bounds;
//! - [`firewall`]: the validator every Yjs update and state vector passes before yrs sees it;
//! - [`document`]: one document's content and sync rules ([`document::DocumentState`]).

pub mod awareness;
pub mod document;
pub mod firewall;
pub mod protocol;
