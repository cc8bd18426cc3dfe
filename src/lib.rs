//! zedi-sync: a Hocuspocus-compatible Yjs sync daemon built from actix actors.

pub mod awareness;
pub mod protocol;
