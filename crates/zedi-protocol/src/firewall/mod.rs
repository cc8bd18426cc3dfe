//! The update firewall: every Yjs update and state vector a client sends passes here before
//! yrs sees a byte of it.
//!
//! yrs is treated like a C library: it trusts its input, and crafted input has crashed it
//! (memory corruption, stack overflow, panics inside a transaction) or made it accept content
//! that it then re-encodes differently from the sender, so late joiners could not load the
//! document. This module is safe Rust, allocates only in proportion to the bytes received, and
//! accepts only what an honest Yjs client writes:
//! - every integer in its shortest lib0 form; client ids below 2^53, clocks and lengths that fit
//!   yrs's `u32` without overflowing; every count backed by the bytes that follow it;
//! - item contents exactly as Yjs reads them (JSON strings that parse, the declared number of
//!   them, strings that are UTF-8, no zero-length items, no sub-documents, no type kinds that
//!   yrs and Yjs encode differently, no BigInt that yrs would turn into a number);
//! - no client listed twice, no reference into an item's own future, no trailing bytes, no
//!   item placed inside content that is not a shared type (yrs keeps it but cannot decode the
//!   document's encoding afterwards; Yjs throws);
//! - shared types nested at most `max_nesting_depth` deep, counting what the document already
//!   holds ([`Tree`]), and never hung from a parent that exists nowhere or from a reference
//!   cycle. (A cycle of plain items is left to yrs, which keeps it pending as Yjs does.)
//!
//! Canonical input is what makes "decode → re-encode gives the same bytes" hold without doing
//! it: each field is checked to be in the one form Yjs's encoder writes.

mod content;
mod nesting;
mod overlap;
mod reader;
mod structs;

pub use nesting::{EmptyTree, Placement, Tree};
pub use reader::MAX_SAFE_INTEGER;
pub use structs::Id;

use reader::StrictReader;

/// Why an update or state vector was refused. Positions are byte offsets, for the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("truncated at byte {at}")]
    Truncated { at: usize },
    #[error("integer at byte {at} is above 2^53")]
    IntegerTooLarge { at: usize },
    #[error("client id at byte {at} is 2^53 or more")]
    ClientIdTooLarge { at: usize },
    #[error("clock or length at byte {at} overflows")]
    ClockOverflow { at: usize },
    #[error("count {count} at byte {at} exceeds the {remaining} bytes left")]
    CountTooLarge {
        at: usize,
        count: u64,
        remaining: usize,
    },
    #[error("non-canonical encoding at byte {at}: {what}")]
    NonCanonical { at: usize, what: &'static str },
    #[error("string at byte {at} is not UTF-8")]
    InvalidUtf8 { at: usize },
    #[error("content at byte {at} is not valid JSON")]
    InvalidJson { at: usize },
    #[error("unknown content kind {kind} at byte {at}")]
    UnknownContent { at: usize, kind: u8 },
    #[error("shared type kind {type_ref} at byte {at} is not supported")]
    UnsupportedType { at: usize, type_ref: u64 },
    #[error("sub-documents are not supported (byte {at})")]
    SubdocumentsUnsupported { at: usize },
    #[error("zero-length struct or range at byte {at}")]
    EmptyItem { at: usize },
    #[error("client {client} listed twice (byte {at})")]
    DuplicateClient { at: usize, client: u64 },
    #[error("item at byte {at} refers to itself or to a later item of its own client")]
    SelfReference { at: usize },
    #[error(
        "a nested type is placed in a parent that is neither in the document nor in the update"
    )]
    UnknownParent,
    #[error("an item is placed inside content that is not a shared type")]
    ParentNotAType,
    #[error("id ({client}, {clock}) is held pending with other content")]
    ConflictsWithPending { client: u64, clock: u64 },
    #[error("nesting {depth} deep is over the limit")]
    NestingTooDeep { at: usize, depth: u64 },
    #[error("{count} bytes after the end at byte {at}")]
    TrailingBytes { at: usize, count: usize },
}

/// Bounds that depend on configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// How deep shared types (and lib0 `any` arrays/objects) may nest.
    pub max_nesting_depth: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_nesting_depth: 256,
        }
    }
}

/// What a checked update holds, as far as its caller needs to know.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checked {
    /// Per client of the update: the clock its structs start at.
    pub starts: Vec<Id>,
}

/// Checks a Yjs v1 update that is about to be applied to the document `tree` describes.
pub fn check_update(
    bytes: &[u8],
    limits: &Limits,
    tree: &mut dyn Tree,
) -> Result<Checked, Refusal> {
    check_update_with_pending(bytes, None, limits, tree)
}

/// As [`check_update`], for a document that holds `pending` (its pending structs as one Yjs v1
/// update, as yrs encodes them): references through those are followed too.
pub fn check_update_with_pending(
    bytes: &[u8],
    pending: Option<&[u8]>,
    limits: &Limits,
    tree: &mut dyn Tree,
) -> Result<Checked, Refusal> {
    let parsed = structs::parse_update(bytes, limits.max_nesting_depth)?;
    // yrs wrote the pending bytes from structs that passed here before; if they do not parse,
    // that is not this update's fault, and cycle checks fall back to the update alone.
    let pending = pending.and_then(|p| structs::parse_update(p, limits.max_nesting_depth).ok());
    if let Some(pending) = &pending {
        overlap::check_pending_overlap(&parsed, pending)?;
    }
    nesting::check_nesting(&parsed, pending.as_ref(), tree, limits.max_nesting_depth)?;
    let starts = parsed
        .clients
        .iter()
        .filter_map(|c| c.structs.first().map(|s| s.id))
        .collect();
    Ok(Checked { starts })
}

/// Checks only the encoding of an update (not where its items would go): for what yrs itself
/// produced from an accepted update, which must be readable by a fresh client.
pub fn check_encoding(bytes: &[u8], limits: &Limits) -> Result<(), Refusal> {
    structs::parse_update(bytes, limits.max_nesting_depth).map(|_| ())
}

/// Checks a Yjs v1 state vector (a client's SyncStep1): pairs of (client, clock).
pub fn check_state_vector(bytes: &[u8]) -> Result<(), Refusal> {
    let mut r = StrictReader::new(bytes);
    let count = r.read_count(2)?;
    for _ in 0..count {
        r.read_client()?;
        r.read_u32()?;
    }
    if !r.is_empty() {
        return Err(Refusal::TrailingBytes {
            at: r.position(),
            count: r.remaining(),
        });
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
